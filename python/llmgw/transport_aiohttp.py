"""The same upstream interface as `llmgw.transport.UpstreamPool`, on aiohttp.

Not the default: measured on these machines it costs ~4x the lean transport per request
(DESIGN.md §6: ~2,900 vs ~16,000 req/s per core). It is here as an escape hatch for what the
lean client does not do (HTTP proxies from the environment, unusual servers), selected per
upstream with `transport: aiohttp`, and as the baseline the load benchmark compares against.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, AsyncIterator

import aiohttp

from llmgw.transport import ConnectError, Timed, Timeouts, UpstreamProtocolError, UpstreamTimeout

__all__ = ["AiohttpPool"]


class AiohttpResponse:
    __slots__ = ("status", "headers", "_resp", "_idle")

    def __init__(self, resp: aiohttp.ClientResponse, idle: float | None) -> None:
        self._resp = resp
        self._idle = idle
        self.status = resp.status
        self.headers = [(k.lower(), v) for k, v in resp.raw_headers]

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except asyncio.TimeoutError:
            raise UpstreamTimeout("upstream body timed out", phase="idle") from None
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"upstream broke the response: {exc}") from None
        finally:
            self._resp.release()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._resp.content.iter_any():
                yield data
        except asyncio.TimeoutError:
            raise UpstreamTimeout("upstream sent nothing for too long (idle timeout)", phase="idle") from None
        except aiohttp.ClientPayloadError:
            raise UpstreamProtocolError("upstream closed the connection before the response ended") from None
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"upstream broke the stream: {exc}") from None
        finally:
            self._resp.release()

    def close(self) -> None:
        self._resp.close()


class AiohttpPool:
    """An aiohttp session per upstream origin, with the UpstreamPool interface."""

    def __init__(self, base_url: str, *, max_connections: int = 256, connect_timeout: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None, idle_keepalive: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.ssl_context = ssl_context
        self.idle_keepalive = idle_keepalive
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=self.idle_keepalive,
                                             ssl=self.ssl_context if self.ssl_context is not None else True)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=True)
        return self._session

    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"", *,
                      timeout: Timeouts | None = None, timing: Timed | None = None,
                      extra: list[tuple[str, str]] | None = None) -> Any:
        t = timeout or Timeouts()
        started = time.perf_counter()
        if timing is not None:
            timing.sent = True  # aiohttp does not say when the bytes left; assume they may have
        ct = aiohttp.ClientTimeout(total=t.total, connect=t.connect or self.connect_timeout,
                                   sock_read=t.first_byte)
        if extra:
            headers = headers + extra
        try:
            resp = await self._get_session().request(method, self.base_url + path, headers=headers, data=body,
                                                     timeout=ct)
        except asyncio.TimeoutError:
            raise UpstreamTimeout("upstream sent no response headers in time", phase="first_byte") from None
        except aiohttp.ClientSSLError as exc:
            raise ConnectError(f"TLS with upstream failed: {exc}", reason="TLS handshake failed") from None
        except aiohttp.ClientConnectorError as exc:
            raise ConnectError(f"cannot connect to upstream: {exc}",
                               reason=(exc.strerror or "connection failed").lower()) from None
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"upstream broke the exchange: {exc}") from None
        if timing is not None:
            timing.ttfb_s = time.perf_counter() - started
        return AiohttpResponse(resp, t.idle)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def stats(self) -> dict[str, int]:
        return {}
