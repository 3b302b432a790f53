"""The bench's HTTP client, behind one seam so the implementation is a one-line switch.

Target: `llmgw.transport.UpstreamPool` (the gateway's own lean asyncio/httptools keep-alive pool).
Until that module is on this branch, `_HttpxPool` below implements the same interface on httpx —
correct, but ~4x the CPU per request, so figures taken with it understate fast targets.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Protocol

import httpx

__all__ = ["CLIENT_NAME", "UpstreamPool", "open_pool", "upstream_timeouts"]

CLIENT_NAME = "httpx (fallback until llmgw.transport lands)"


class UpstreamResponse(Protocol):
    status: int
    headers: list[tuple[bytes, bytes]]

    def header(self, name: bytes) -> bytes | None: ...
    async def read(self) -> bytes: ...
    def __aiter__(self) -> AsyncIterator[bytes]: ...
    def close(self) -> None: ...


class UpstreamPool(Protocol):
    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes, *,
                      timeout: object = None) -> UpstreamResponse: ...
    async def aclose(self) -> None: ...


def upstream_timeouts(total: float) -> object:
    """The per-request timeout object the pool takes (the bench also bounds each exchange itself)."""
    return None


def open_pool(base_url: str, *, max_connections: int) -> UpstreamPool:
    """A keep-alive pool to `base_url`; request paths are appended to its path."""
    return _HttpxPool(base_url, max_connections=max_connections)


class _HttpxResponse:
    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status = resp.status_code
        self.headers = [(k.lower(), v) for k, v in resp.headers.raw]

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    async def read(self) -> bytes:
        try:
            return await self._resp.aread()
        finally:
            await self._resp.aclose()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_raw():
                yield chunk
        finally:
            await self._resp.aclose()

    def close(self) -> None:
        if not self._resp.is_closed:
            asyncio.get_running_loop().create_task(self._resp.aclose())


class _HttpxPool:
    def __init__(self, base_url: str, *, max_connections: int) -> None:
        self._base = base_url.rstrip("/")
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(None, connect=5.0))

    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes, *,
                      timeout: object = None) -> _HttpxResponse:
        req = self._client.build_request(method, self._base + path, headers=headers, content=body)
        try:
            resp = await self._client.send(req, stream=True)
        except httpx.TimeoutException as exc:
            raise TimeoutError(str(exc)) from exc
        except httpx.TransportError as exc:
            raise ConnectionError(str(exc)) from exc
        return _HttpxResponse(resp)

    async def aclose(self) -> None:
        await self._client.aclose()
