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
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["ExportRetry", "HttpExporter", "safe_url"]

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


class HttpExporter:
    """POSTs bodies to one URL with fixed headers; counts what happened (`stats()`)."""

    name = "exporter"

    def __init__(self, url: str, headers: dict[str, str] | None = None, *, timeout: float = 10.0) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self.sent = 0  # items delivered
        self.rejected = 0  # items dropped because the collector refused them (4xx)
        self.retries = 0  # batches kept for another try
        self._last_log = 0.0

    def _log(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_log >= 60.0:
            self._last_log = now
            log.error(message, *args)

    async def post(self, body: bytes, content_type: str, items: int) -> httpx.Response | None:
        """POST one batch of `items` items; the response when it was taken (2xx), None when it
        was refused for good (4xx, counted); raises ExportRetry when it is worth trying again."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        try:
            resp = await self._client.post(self.url, content=body,
                                           headers={**self.headers, "content-type": content_type})
        except httpx.HTTPError as exc:
            self.retries += 1
            self._log("%s: cannot reach %s (%s); keeping %d items to retry", self.name, safe_url(self.url),
                      type(exc).__name__, items)
            raise ExportRetry(type(exc).__name__) from None
        if resp.status_code < 300:
            self.sent += items
            return resp
        if resp.status_code in (408, 429) or resp.status_code >= 500:
            self.retries += 1
            self._log("%s: %s answered %d; keeping %d items to retry", self.name, safe_url(self.url),
                      resp.status_code, items)
            raise ExportRetry(str(resp.status_code))
        self.rejected += items
        self._log("%s: %s refused a batch of %d items with %d: %s", self.name, safe_url(self.url), items,
                  resp.status_code, resp.text[:200])
        return None

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "rejected": self.rejected, "retries": self.retries}

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
