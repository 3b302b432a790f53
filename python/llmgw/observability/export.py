"""Posting batches of finish records to an HTTP collector (OTLP/HTTP, Langfuse ingestion).

Exporters run in a background queue's flush (`Services.queue`), never on the request path.
What a response means for the batch:
- 2xx: delivered (a Langfuse 207 may still report per-event errors: the exporter logs them).
- 408, 429, 5xx, a connection failure or a timeout: the collector may take it later; `post`
  raises `ExportRetry` and the queue keeps the batch and tries again (items beyond the queue's
  bound are dropped and counted, never blocking requests).
- any other 4xx: the payload or the credentials are wrong and will stay wrong; the batch is
  dropped, counted in `rejected` and logged at most once a minute.
Error messages name the exporter and the status, never the URL's credentials or the headers.

Batches go through the gateway's own pooled HTTP/1.1 client (`llmgw.transport.UpstreamPool`),
not httpx: under load (one core, 10% of ~4,700 req/s traced) posting the span batches through
httpx took ~8% of the gateway's samples (py-spy), most of the whole cost of tracing.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from llmgw.transport import Timeouts, UpstreamError, UpstreamPool

__all__ = ["Delivered", "ExportRetry", "HttpExporter", "safe_url"]

log = logging.getLogger("llmgw")


class ExportRetry(Exception):
    """The collector could not take the batch now; keep it and try again later. The exporter
    has logged it (at most once a minute): the queue does not log it again."""

    already_logged = True


def safe_url(url: str) -> str:
    """`url` without user:password (for logs and check-config)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


@dataclass(frozen=True, slots=True)
class Delivered:
    """A collector's 2xx answer."""

    status_code: int
    content: bytes

    def json(self) -> Any:
        return orjson.loads(self.content) if self.content else {}


class HttpExporter:
    """POSTs bodies to one URL with fixed headers; counts what happened (`stats()`)."""

    name = "exporter"

    def __init__(self, url: str, headers: dict[str, str] | None = None, *, timeout: float = 10.0) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self._pool: UpstreamPool | None = None
        self._timeouts = Timeouts(connect=timeout, first_byte=timeout, idle=timeout, total=timeout, pool=timeout)
        self.sent = 0  # items delivered
        self.rejected = 0  # items dropped because the collector refused them (4xx)
        self.retries = 0  # batches kept for another try
        self.last_refusal = 0  # the status of the last batch refused for good (0: none yet)
        self._last_log = 0.0

    def _log(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_log >= 60.0:
            self._last_log = now
            log.error(message, *args)

    async def post(self, body: bytes, content_type: str, items: int) -> Delivered | None:
        """POST one batch of `items` items; the answer when it was taken (2xx), None when it was
        refused for good (4xx, counted); raises ExportRetry when it is worth trying again."""
        if self._pool is None:
            ctx = ssl.create_default_context() if self.url.startswith("https://") else None
            self._pool = UpstreamPool(self.url, max_connections=2, connect_timeout=self.timeout, ssl_context=ctx)
        headers = [*self.headers.items(), ("content-type", content_type)]
        try:
            resp = await self._pool.request("POST", "", headers, body, timeout=self._timeouts)
            content = await resp.read()
        except (UpstreamError, OSError) as exc:
            self.retries += 1
            self._log("%s: cannot reach %s (%s); keeping %d items to retry", self.name, safe_url(self.url),
                      type(exc).__name__, items)
            raise ExportRetry(type(exc).__name__) from None
        status = resp.status
        if status < 300:
            self.sent += items
            return Delivered(status, content)
        if status in (408, 429) or status >= 500:
            self.retries += 1
            self._log("%s: %s answered %d; keeping %d items to retry", self.name, safe_url(self.url), status, items)
            raise ExportRetry(str(status))
        self.rejected += items
        self.last_refusal = status
        self._log("%s: %s refused a batch of %d items with %d: %s", self.name, safe_url(self.url), items, status,
                  content[:200].decode("utf-8", "replace"))
        return None

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "rejected": self.rejected, "retries": self.retries}

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
