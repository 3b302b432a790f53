"""The upstream HTTP/1.1 client: a keep-alive connection pool per upstream on a lean asyncio Protocol.

Why not aiohttp/httpx here: the upstream client is the largest cost on the request path. Measured
on a 2-core machine (gateway pinned to one core, 40 µs upstream, when the gateway still ran on
granian): with aiohttp it peaked near 2,900 req/s, with this kind of client (asyncio Protocol,
httptools' C parser, pooled keep-alive connections, one write per request) near 16,000 req/s,
what granian answered from memory. On the gateway's own server today: 3,206 vs 19,627 req/s
(benches/load/run.py). aiohttp/httpx stay for paths where speed does not matter.

What it does: content-length and chunked response bodies (httptools decodes chunking), keep-alive
reuse, connections found closed while idle are discarded before a request is written to them
(a request already written is never retried: POSTs are not idempotent), TLS with certificate
verification, a connection limit per upstream with a bounded wait for a free connection
(`PoolTimeout`), five timeouts (pool wait, connect, first byte, idle between body chunks, total),
and back-pressure: reading pauses while a slow consumer has more than `_HIGH_WATER` bytes unread.

A connection is never lost to cancellation: a request cancelled while it waits for a slot,
connects, waits for the head, or reads the body (`read()`, iteration) closes its connection and
frees its slot. `request(..., timing=)` fills in where the time went (`Timed`).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from dataclasses import dataclass
from typing import Any, AsyncIterator, Protocol
from urllib.parse import urlsplit

import httptools

__all__ = [
    "Transport",
    "Timeouts",
    "UpstreamPool",
    "UpstreamResponse",
    "UpstreamError",
    "ConnectError",
    "UpstreamTimeout",
    "UpstreamProtocolError",
    "PoolTimeout",
    "Timed",
]

_HIGH_WATER = 256 * 1024  # pause reading the upstream when a consumer lags by this much


class UpstreamError(Exception):
    """The upstream could not be reached or broke the exchange; `sent` says if the request left."""

    kind = "upstream_error"

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class ConnectError(UpstreamError):
    """The connection could not be made; `reason` is short and safe to show a client (no URL)."""

    kind = "connect_error"

    def __init__(self, message: str, *, sent: bool = False, reason: str = "connection failed") -> None:
        super().__init__(message, sent=sent)
        self.reason = reason


class UpstreamTimeout(UpstreamError):
    kind = "timeout"

    def __init__(self, message: str, *, phase: str, sent: bool = True) -> None:
        super().__init__(message, sent=sent)
        self.phase = phase  # "connect" | "first_byte" | "idle" | "total"


class UpstreamProtocolError(UpstreamError):
    kind = "protocol_error"


class PoolTimeout(UpstreamError):
    """No connection to the upstream became free within the pool timeout (nothing was sent)."""

    kind = "pool_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, sent=False)


class Timed(Protocol):
    """Where `request()` records where the time went (the gateway passes its Attempt)."""

    queue_s: float  # waiting for a free connection slot
    connect_s: float  # opening a connection (0 when one was reused)
    ttfb_s: float | None  # request written -> response head
    sent: bool  # the request bytes were written to a connection


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; None disables one. `idle` bounds the gap between body chunks (streams); `pool`
    the wait for a free connection when all `max_connections` are busy."""

    connect: float | None = 5.0
    first_byte: float | None = 60.0
    idle: float | None = 60.0
    total: float | None = 600.0
    pool: float | None = 10.0


_DEFAULT_TIMEOUTS = Timeouts()


class Transport(Protocol):
    """What the pipeline needs from an upstream client; `UpstreamPool` is the default, the aiohttp
    one (transport_aiohttp.AiohttpPool) the alternative. A response has `status`, `headers`
    (lower-case bytes pairs), `header(name)`, `await read()`, `async for chunk in resp`, and
    `close()` to abandon it."""

    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"", *,
                      timeout: Timeouts | None = None, timing: Timed | None = None,
                      extra: list[tuple[str, str]] | None = None) -> Any: ...

    async def aclose(self) -> None: ...

    def stats(self) -> dict[str, int]: ...


class _Connection(asyncio.Protocol):
    """One upstream TCP/TLS connection; carries one request/response at a time."""

    __slots__ = (
        "pool", "transport", "parser", "closed", "response", "_headers", "_status_waiter",
        "reusable", "last_used",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.response: UpstreamResponse | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._status_waiter: asyncio.Future[UpstreamResponse | None] | None = None
        self.reusable = False
        self.last_used = 0.0

    # asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"invalid HTTP response from upstream: {exc}"))
            self.abort()

    def eof_received(self) -> bool | None:
        # A body delimited by connection close ends here; anything else mid-message is a cut.
        if self.response is not None and not self.response._complete and self.response._until_eof:
            self.on_message_complete()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._fail(UpstreamProtocolError("upstream closed the connection before the response ended"))
        self.pool._forget(self)

    # httptools callbacks ----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        resp = UpstreamResponse(self, self.parser.get_status_code(), self._headers)
        self._headers = []
        resp._until_eof = resp.header(b"content-length") is None and resp.header(b"transfer-encoding") is None
        self.response = resp
        waiter = self._status_waiter
        self._status_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(resp)

    def on_body(self, body: bytes) -> None:
        resp = self.response
        if resp is not None:
            resp._push(body)

    def on_message_complete(self) -> None:
        resp = self.response
        self.reusable = self.parser.should_keep_alive() and not (resp is not None and resp._until_eof)
        if resp is not None:
            resp._finish()

    # helpers ----------------------------------------------------------------------------------
    def _fail(self, exc: UpstreamError) -> None:
        waiter = self._status_waiter
        self._status_waiter = None
        if waiter is not None and not waiter.done():
            exc.sent = True
            waiter.set_exception(exc)
        resp = self.response
        if resp is not None and not resp._complete:
            resp._error(exc)

    def abort(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


class UpstreamResponse:
    """Status and headers of an upstream response; the body is read with `read()` or iterated."""

    __slots__ = (
        "status", "headers", "_conn", "_chunks", "_buffered", "_complete", "_exc", "_waiter",
        "_until_eof", "_released", "_idle", "_deadline",
    )

    def __init__(self, conn: _Connection, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers = headers
        self._conn = conn
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._complete = False
        self._exc: UpstreamError | None = None
        self._waiter: asyncio.Future[bool | None] | None = None
        self._until_eof = False
        self._released = False
        self._idle: float | None = None
        self._deadline: float | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of header `name` (lower-case bytes), or None."""
        for k, v in self.headers:
            if k == name:
                return v
        return None

    # producer side (the connection) -------------------------------------------------------------
    def _push(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and self._conn.transport is not None:
            self._conn.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _error(self, exc: UpstreamError) -> None:
        self._exc = exc
        self._complete = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(True)

    # consumer side ------------------------------------------------------------------------------
    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool | None] = loop.create_future()
        self._waiter = waiter
        timeout = self._idle
        if self._deadline is not None:
            left = self._deadline - loop.time()
            if timeout is None or left < timeout:
                timeout = left
        if timeout is None:
            await waiter
            return
        handle = loop.call_later(max(timeout, 0.0), _expire, waiter)
        try:
            woken = await waiter
        finally:
            handle.cancel()
        if woken is None:  # the timer fired
            self._waiter = None
            self.close()
            phase = "total" if self._deadline is not None and loop.time() >= self._deadline else "idle"
            raise UpstreamTimeout(f"upstream sent nothing for too long ({phase} timeout)", phase=phase)

    def _take(self) -> bytes | None:
        if self._chunks:
            data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
            self._chunks.clear()
            self._buffered = 0
            transport = self._conn.transport
            if transport is not None and not self._conn.closed:
                transport.resume_reading()
            return data
        return None

    async def read(self) -> bytes:
        """The whole body. The connection goes back to the pool when the body ended cleanly, and
        is closed (its slot freed) when it did not: an error, a timeout, or a cancellation."""
        parts: list[bytes] = []
        try:
            while True:
                data = self._take()
                if data is not None:
                    parts.append(data)
                elif self._complete:
                    break
                else:
                    await self._wait()
            if self._exc is not None:
                raise self._exc
        finally:
            if not self._complete or self._exc is not None:
                self.close()
        self._release()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive (each `idle` timeout applies between chunks)."""
        try:
            while True:
                data = self._take()
                if data is not None:
                    yield data
                elif self._complete:
                    break
                else:
                    await self._wait()
            if self._exc is not None:
                raise self._exc
            self._release()
        finally:
            if not self._released:
                self.close()

    def close(self) -> None:
        """Abandon the response: the connection is closed, never reused."""
        if not self._released:
            self._released = True
            self._conn.abort()
            self._conn.pool._done(self._conn, reuse=False)

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._conn.pool._done(self._conn, reuse=self._conn.reusable and not self._conn.closed)


def _expire(fut: asyncio.Future) -> None:  # type: ignore[type-arg]
    # A timer resolves the waiter with None (never cancels it), so a timeout is never confused
    # with the caller's own cancellation.
    if not fut.done():
        fut.set_result(None)


class UpstreamPool:
    """Pooled keep-alive HTTP/1.1 connections to one upstream origin (scheme://host:port)."""

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 256,
        connect_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        idle_keepalive: float = 60.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream URL must be http(s)://host[:port][/path], got {base_url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        default_port = (parts.scheme == "https" and self.port == 443) or (parts.scheme == "http" and self.port == 80)
        host_header = self.host if ":" not in self.host else f"[{self.host}]"
        self._host_header = (host_header if default_port else f"{host_header}:{self.port}").encode("idna")
        self.ssl_context = ssl_context if ssl_context is not None else (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.idle_keepalive = idle_keepalive
        self._idle: list[_Connection] = []
        self._active = 0  # connections open or being opened, idle ones included
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._trimmer: asyncio.TimerHandle | None = None
        self._heads: dict[tuple[str, str, int], tuple[list[tuple[str, str]], bytes]] = {}

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self._host_header.decode()}"

    # connection management ----------------------------------------------------------------------
    async def _acquire(self, timeouts: Timeouts, timing: Timed | None) -> _Connection:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            if self._closed:
                raise ConnectError("upstream pool is closed", reason="gateway is reloading")
            now = loop.time()
            while self._idle:
                conn = self._idle.pop()
                stale = conn.closed or conn.transport is None or conn.transport.is_closing()
                if stale or now - conn.last_used > self.idle_keepalive:
                    # Closed by the server while idle, or idle too long: nothing was written to it,
                    # so taking another connection is safe.
                    conn.abort()
                    self._active -= 1
                    continue
                if timing is not None:
                    timing.queue_s = now - started
                    timing.connect_s = 0.0
                return conn
            if self._active < self.max_connections:
                self._active += 1
                if timing is not None:
                    timing.queue_s = loop.time() - started
                connect_started = loop.time()
                try:
                    return await self._connect(timeouts)
                except BaseException:
                    self._active -= 1
                    self._wake_one()
                    raise
                finally:
                    if timing is not None:
                        timing.connect_s = loop.time() - connect_started
            waiter = loop.create_future()
            self._waiters.append(waiter)
            left = None if timeouts.pool is None else timeouts.pool - (loop.time() - started)
            handle = loop.call_later(max(left, 0.0), _expire, waiter) if left is not None else None
            try:
                if await waiter is None:  # the timer, not a freed connection, woke us
                    raise PoolTimeout(f"no free connection to upstream {self.origin} within {timeouts.pool:g}s "
                                      f"(all {self.max_connections} busy)")
            except BaseException:
                if not waiter.cancelled() and waiter.done() and waiter.result() is True:
                    self._wake_one()  # a connection was freed for us: pass the wake-up on
                raise
            finally:
                if handle is not None:
                    handle.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self, timeouts: Timeouts) -> _Connection:
        loop = asyncio.get_running_loop()
        timeout = timeouts.connect if timeouts.connect is not None else self.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port, ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context is not None else None,
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"connecting to upstream {self.origin} timed out after {timeout}s", phase="connect", sent=False
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise ConnectError(f"TLS handshake with upstream {self.origin} failed: {exc.verify_message or exc}",
                               reason="TLS certificate verification failed") from None
        except ssl.SSLError as exc:
            raise ConnectError(f"TLS handshake with upstream {self.origin} failed: {exc.reason or exc}",
                               reason="TLS handshake failed") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to upstream {self.origin}: {exc.strerror or exc}",
                               reason=(exc.strerror or "connection failed").lower()) from None
        return conn

    def _done(self, conn: _Connection, *, reuse: bool) -> None:
        conn.response = None
        if reuse and not self._closed:
            loop = asyncio.get_running_loop()
            conn.last_used = loop.time()
            self._idle.append(conn)
            if self._trimmer is None:
                self._trimmer = loop.call_later(self.idle_keepalive, self._trim)
        else:
            conn.abort()
            self._active -= 1
        self._wake_one()

    def _trim(self) -> None:
        """Close connections idle for longer than the keep-alive. Idle connections are taken
        newest first, so after a burst the oldest would otherwise sit open for ever (the soak
        benchmark saw ~900 of them, ~10 MB); runs once per keep-alive period while any are idle."""
        self._trimmer = None
        idle = self._idle
        loop = asyncio.get_running_loop()
        expired = loop.time() - self.idle_keepalive
        while idle and idle[0].last_used <= expired:
            idle.pop(0).abort()
            self._active -= 1
        if idle and not self._closed:
            self._trimmer = loop.call_later(max(idle[0].last_used + self.idle_keepalive - loop.time(), 0.01), self._trim)

    def _forget(self, conn: _Connection) -> None:
        """A connection closed under us: if it was idle, drop it (others are counted in _done)."""
        if conn in self._idle:
            self._idle.remove(conn)
            self._active -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(True)
                return

    # requests -----------------------------------------------------------------------------------
    def _head(self, method: str, path: str, headers: list[tuple[str, str]], body_len: int,
              extra: list[tuple[str, str]] | None = None) -> bytes:
        # The request line and headers are the same for every request of a route (adapters pass the
        # same header list object each time): encode them once, add only content-length per request.
        # Per-request headers (a trace's traceparent) come as `extra`, encoded after the cached part:
        # adding them to `headers` would miss this cache and re-encode every header (~30k
        # instructions per request, callgrind).
        key = (method, path, id(headers))
        cached = self._heads.get(key)
        if cached is None or cached[0] is not headers:
            lines = [f"{method} {self.base_path}{path} HTTP/1.1\r\n".encode("latin-1"), b"host: ", self._host_header,
                     b"\r\n"]
            for k, v in headers:
                lines.append(f"{k}: {v}\r\n".encode("latin-1"))
            if len(self._heads) >= 256:  # headers built per request would never hit: stay bounded
                self._heads.clear()
            cached = self._heads[key] = (headers, b"".join(lines))
        if extra:
            more = "".join(f"{k}: {v}\r\n" for k, v in extra).encode("latin-1")
            return b"%s%scontent-length: %d\r\n\r\n" % (cached[1], more, body_len)
        return b"%scontent-length: %d\r\n\r\n" % (cached[1], body_len)

    async def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        *,
        timeout: Timeouts | None = None,
        timing: Timed | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> UpstreamResponse:
        """Send one request (`path` is appended to the base URL's path); returns at the headers."""
        t = timeout or _DEFAULT_TIMEOUTS
        loop = asyncio.get_running_loop()
        deadline = loop.time() + t.total if t.total is not None else None
        head = self._head(method, path, headers, len(body), extra)
        conn = await self._acquire(t, timing)
        waiter: asyncio.Future[UpstreamResponse | None] = loop.create_future()
        conn._status_waiter = waiter
        conn.response = None
        assert conn.transport is not None
        conn.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            conn.transport.write(body)
        written = loop.time()
        if timing is not None:
            timing.sent = True
        first_byte = t.first_byte
        if deadline is not None:
            left = deadline - loop.time()
            first_byte = left if first_byte is None else min(first_byte, left)
        handle = loop.call_later(max(first_byte, 0.0), _expire, waiter) if first_byte is not None else None
        try:
            resp = await waiter
        except BaseException:  # UpstreamError from the connection, or the caller cancelled us
            conn._status_waiter = None
            self._done(conn, reuse=False)
            raise
        finally:
            if handle is not None:
                handle.cancel()
        if resp is None:  # the timer fired
            conn._status_waiter = None
            self._done(conn, reuse=False)
            raise UpstreamTimeout(
                f"upstream {self.origin} sent no response headers within {first_byte:.3g}s", phase="first_byte"
            )
        if timing is not None:
            timing.ttfb_s = loop.time() - written
        resp._idle = t.idle
        resp._deadline = deadline
        if resp._complete and resp._exc is None and not resp._chunks:
            resp._release()  # empty body already complete (e.g. 204)
        return resp

    async def aclose(self) -> None:
        """Close idle connections and refuse new requests; responses in flight finish."""
        self._closed = True
        if self._trimmer is not None:
            self._trimmer.cancel()
            self._trimmer = None
        for conn in self._idle:
            conn.abort()
        self._idle.clear()
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(True)

    def stats(self) -> dict[str, int]:
        return {"open": self._active, "idle": len(self._idle), "waiting": len(self._waiters)}



