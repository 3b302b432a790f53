"""The gateway's HTTP/1.1 server: an asyncio Protocol on httptools (llhttp), one per worker.

Why our own server instead of granian (measured side by side on one core, wrk c=32, a fixed
body answered from memory): this Protocol 101,660 req/s and p50 71 µs at c=1, granian RSGI
38,939 req/s and p50 112 µs. More decisive than speed, the things a gateway must control are
not reachable through RSGI: its response stream is an unbounded channel (a client that reads
nothing of a 50 MB stream made the worker buffer all 50 MB in 38 ms), its per-worker connection
semaphore stalls `accept` instead of shedding, and a request body has no read timeout.

What this server does, and the limits it enforces (`ServerLimits`, configured under `server:`):
- keep-alive and pipelining (requests on one connection are answered in order), HTTP/1.0;
- `header_timeout` from a connection's first byte (or a keep-alive request's) to the end of
  its head, `keepalive_timeout` for an idle connection, `max_header_bytes` for the head (431);
- request bodies are read by the handler when it asks (`read_body`), so it can refuse a request
  on its headers alone (auth, size) without reading a byte of the body; the whole body must
  arrive within `body_timeout`; reading stops at the handler's size limit, and a connection
  whose body was not read to the end is closed after the response;
- `max_connections` per worker: the oldest idle keep-alive connection is closed to make room,
  and when none is idle the new connection gets an immediate 503 and is closed (shed, not
  queued); `max_inflight` requests at work per worker: the excess gets an immediate 503 with
  Retry-After (health checks exempt);
- streamed responses honour back-pressure: `ResponseStream.send` waits while the client's
  socket buffer is full, up to `write_timeout`, so a slow reader slows the upstream read
  instead of growing memory;
- a client that goes away cancels its request's handler task (which cancels the upstream call);
- connection-level events (timeouts, resets, bad requests, sheds) are counted and logged once
  per class and minute, never as a traceback per connection.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import logging
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Awaitable, Callable

import httptools

__all__ = [
    "BodyMalformed",
    "Overloaded",
    "BodyTimeout",
    "BodyTooLarge",
    "ClientGone",
    "HttpRequest",
    "HttpServer",
    "ResponseStream",
    "ServerLimits",
    "WriteTimeout",
]

log = logging.getLogger("llmgw.http")

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
# Read no more than this much of one request's body ahead of its handler: a body is buffered
# only as far as the handler asks for it (stop reading the socket, let TCP push back).
_BODY_HIGH_WATER = 256 * 1024
# Client socket send buffer above which ResponseStream.send waits for it to drain.
_WRITE_HIGH_WATER = 64 * 1024
_MAX_PIPELINED = 16
_LOG_EVERY = 60.0  # seconds between summary lines of one event class


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Connection limits of one worker (seconds and bytes); see the module docstring."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 60.0
    write_timeout: float = 30.0
    max_connections: int = 4096
    max_inflight: int = 1024
    max_header_bytes: int = 32 * 1024
    shutdown_timeout: float = 30.0
    unshed_paths: frozenset[str] = frozenset()  # answered even past max_inflight (health checks)


class ClientGone(Exception):
    """The client disconnected (or was disconnected) before the exchange finished."""


class WriteTimeout(ClientGone):
    """The client read nothing of a streamed response for `write_timeout` seconds."""


class BodyTimeout(Exception):
    """The request body did not all arrive within `body_timeout` seconds."""


class BodyTooLarge(Exception):
    """The request body passed the handler's limit (reading stopped there)."""


class BodyMalformed(Exception):
    """The request body's framing is broken (e.g. a bad chunk size); the text says how."""


class Overloaded(Exception):
    """The worker already has `max_inflight` requests at work: answer 503, do no work."""


class HttpRequest:
    """One request: its head, its body (read on demand) and the way to answer it.

    `path` is the raw request path (percent-escapes kept, so `/v1/chat%2Fcompletions` is not
    `/v1/chat/completions`); `headers` maps lower-case names to values decoded as latin-1 (bytes
    kept one to one; repeated headers joined with ", "); `received_at` is `time.perf_counter()`
    when the request's first byte was parsed.
    """

    __slots__ = (
        "method", "path", "query", "headers", "client", "received_at", "keep_alive", "http11",
        "responded", "task", "_conn", "_chunks", "_buffered", "_received", "_complete",
        "_waiter", "_continue", "_stream", "_malformed", "_admitted", "context",
    )

    def __init__(self, conn: HttpConnection, method: str, target: bytes, headers: dict[str, str],
                 received_at: float, keep_alive: bool, http11: bool) -> None:
        if target[:1] != b"/":  # absolute-form ("http://host/path") or "*": keep the path part
            scheme_end = target.find(b"://")
            slash = target.find(b"/", scheme_end + 3) if scheme_end >= 0 else -1
            target = target[slash:] if slash >= 0 else b"/"
        path, _, query = target.partition(b"?")
        self.method = method
        self.path = path.decode("latin-1")
        self.query = query.decode("latin-1")
        self.headers = headers
        self.client = conn.client
        self.received_at = received_at
        self.keep_alive = keep_alive
        self.http11 = http11
        self.responded = False
        self.task: asyncio.Task[None] | None = None
        self.context: Any = None  # the handler's RequestContext: its keep_upstream says a disconnect must not cancel it
        self._conn = conn
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._received = 0
        self._complete = False
        self._waiter: asyncio.Future[None] | None = None
        self._continue = http11 and headers.get("expect", "").lower() == "100-continue"
        self._stream: ResponseStream | None = None
        self._malformed: str | None = None
        self._admitted: bool | None = None  # None until its body is complete, then admitted or shed

    # -- body -----------------------------------------------------------------------------------
    @property
    def body_complete(self) -> bool:
        return self._complete

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self._received += len(data)
        if self._buffered > _BODY_HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def _end(self) -> None:
        self._complete = True
        if self.task is not None:
            self._conn.server.admit(self)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read_body(self, max_bytes: int) -> bytes:
        """The whole body. Raises BodyTooLarge as soon as more than `max_bytes` arrived (without
        reading further), BodyTimeout when it has not all arrived `body_timeout` seconds after
        this call, BodyMalformed when its framing breaks, ClientGone when the client disconnects."""
        conn = self._conn
        server = conn.server
        deadline = server.loop.time() + server.limits.body_timeout
        while not self._complete:
            if self._received > max_bytes:
                raise BodyTooLarge()
            if self._malformed is not None:
                raise BodyMalformed(self._malformed)
            if conn.closed:
                raise ClientGone()
            if self._continue:
                self._continue = False
                conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._buffered = 0
            conn.resume_reading()
            self._waiter = server.loop.create_future()
            server.reading += 1
            try:
                async with asyncio.timeout_at(deadline):
                    await self._waiter
            except TimeoutError:
                server.note("body_timeout", "request bodies not received within server.body_timeout")
                raise BodyTimeout() from None
            finally:
                server.reading -= 1
                self._waiter = None
        if self._received > max_bytes:
            raise BodyTooLarge()
        if self._admitted is False:
            raise Overloaded()
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- response -------------------------------------------------------------------------------
    @property
    def disconnected(self) -> bool:
        """The client's connection is closed."""
        return self._conn.closed

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Send a complete response (one write)."""
        if self.responded:
            raise RuntimeError("this request was already answered")
        self.responded = True
        conn = self._conn
        keep = self.keep_alive and self._complete and not conn.server.draining
        head = _head(status, headers, keep, b"content-length: %d\r\n" % len(body))
        conn.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            conn.write(body)
        conn.response_done(self, keep)

    def start_stream(self, status: int, headers: list[tuple[str, str]]) -> ResponseStream:
        """Commit the response head; the body follows through the returned stream."""
        if self.responded:
            raise RuntimeError("this request was already answered")
        self.responded = True
        # A request whose body is not fully read cannot keep its connection (the rest of the
        # body would be parsed as the next request); HTTP/1.0 has no chunked encoding.
        keep = self.keep_alive and self._complete and self.http11 and not self._conn.server.draining
        framing = b"transfer-encoding: chunked\r\n" if self.http11 else b""
        self._conn.write(_head(status, headers, keep, framing))
        self._stream = ResponseStream(self, keep)
        return self._stream


class ResponseStream:
    """The body of a streamed response: `await send(data)` for each piece, then `end()`."""

    __slots__ = ("_req", "_keep", "_chunked", "ended")

    def __init__(self, req: HttpRequest, keep: bool) -> None:
        self._req = req
        self._keep = keep
        self._chunked = req.http11
        self.ended = False

    async def send(self, data: bytes) -> None:
        """Write `data`; waits while the client's buffer is full (WriteTimeout after
        `write_timeout`); raises ClientGone if the client has disconnected."""
        conn = self._req._conn
        if conn.closed:
            raise ClientGone()
        if not data:
            return
        conn.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        if conn.write_paused:
            await conn.drained()

    def end(self) -> None:
        """Finish the response (the last chunk); the connection then serves its next request."""
        if self.ended:
            return
        self.ended = True
        conn = self._req._conn
        if self._chunked:
            conn.write(b"0\r\n\r\n")
        conn.response_done(self._req, self._keep)


_date_header = b""


def _update_date() -> None:
    global _date_header
    _date_header = b"date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n"


_update_date()


# Header lines seen before, encoded: most response headers repeat (content type, the route's
# x-llmgw-* headers), so a dict lookup replaces formatting and encoding them (callgrind: ~600
# instructions a header). Per-request values (x-request-id) are encoded each time, not kept.
_LINES: dict[tuple[str, str], bytes] = {}
_UNIQUE = frozenset({"x-request-id", "x-llmgw-cost", "retry-after"})


def _line(name: str, value: str) -> bytes:
    if "\n" in value or "\r" in value:  # never let a value end the head early
        value = value.replace("\r", " ").replace("\n", " ")
    return f"{name}: {value}\r\n".encode("latin-1", "replace")


def _head(status: int, headers: list[tuple[str, str]], keep: bool, framing: bytes) -> bytes:
    parts = [b"HTTP/1.1 %d %b\r\n" % (status, _REASONS.get(status, b"Unknown")), framing, _date_header]
    lines = _LINES
    for header in headers:
        line = lines.get(header)
        if line is None:
            line = _line(*header)
            if header[0] not in _UNIQUE and len(lines) < 1024:
                lines[header] = line
        parts.append(line)
    if not keep:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


_OVERLOADED_BODY = (b'{"error":{"message":"The gateway is at its limit of requests in flight; retry shortly.",'
                    b'"type":"server_error","param":null,"code":"overloaded"}}')
_OVERLOADED_HEADERS = [("content-type", "application/json"), ("retry-after", "1")]


def _error_response(status: int, message: str, code: str) -> bytes:
    body = (b'{"error":{"message":"%b","type":"invalid_request_error","param":null,"code":"%b"}}'
            % (message.encode(), code.encode()))
    return (b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%bconnection: close\r\n\r\n%b"
            % (status, _REASONS.get(status, b"Error"), len(body), _date_header, body))


class HttpConnection(asyncio.Protocol):
    """One client connection (see the module docstring for what it enforces)."""

    __slots__ = (
        "server", "transport", "client", "parser", "closed", "current", "pending", "parsing",
        "deadline", "write_paused", "_drain", "_read_paused", "_url", "_headers", "_t0",
        "_in_head", "_head_bytes", "_has_bytes", "_head_size",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.current: HttpRequest | None = None  # the request being answered
        self.pending: collections.deque[HttpRequest] = collections.deque()  # pipelined, in order
        self.parsing: HttpRequest | None = None  # the request whose body is arriving
        self.deadline = 0.0  # header / keep-alive deadline (loop time); 0 while a handler runs
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._read_paused = False
        self._url = b""
        self._headers: dict[str, str] = {}
        self._t0 = 0.0
        self._in_head = True
        self._head_bytes = 0
        self._has_bytes = False  # some bytes of a request head arrived (a timeout answers 408)
        self._head_size = 0  # bytes of the request line and headers parsed so far

    # -- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        peer = transport.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
        if len(server.connections) >= server.limits.max_connections and not server.evict_idle():
            server.note("shed", "connections shed at server.max_connections")
            transport.write(_error_response(503, "The gateway is at its connection limit; retry shortly.",
                                            "overloaded"))
            transport.close()
            self.closed = True
            return
        server.connections.add(self)
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)  # type: ignore[attr-defined]
        self.deadline = server.loop.time() + server.limits.header_timeout
        server.idle[self] = None

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # an Upgrade we do not offer: answer the request as plain HTTP/1.1
        except httptools.HttpParserError as exc:
            reason = _parser_reason(exc)
            req = self.parsing
            if req is not None and req is self.current and not req.responded:
                # The body's framing broke while its handler waits for it: the handler answers 400.
                req._malformed = f"Malformed request body: {reason}."
                req._wake()
                self.server.note("bad_request", _EVENT_TEXT["bad_request"])
                self.pause_reading()
                return
            self._reject(400, f"Malformed HTTP request: {reason}.", "bad_request", "bad_request")
            return
        if self._in_head and self._head_bytes > self.server.limits.max_header_bytes:
            self._reject(431, "Request header fields too large.", "header_too_large", "bad_request")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        server = self.server
        server.connections.discard(self)
        server.idle.pop(self, None)
        for req in (self.current, self.parsing, *self.pending):
            if req is not None:
                req._wake()
        current = self.current
        if current is not None and current.task is not None and not current.task.done():
            stream = current._stream
            if not current.responded or (stream is not None and not stream.ended):
                if exc is not None:
                    server.note("reset", "connections reset by clients mid-request")
                if current.context is None or not current.context.keep_upstream:
                    current.task.cancel()  # the client is gone: stop its work (and its upstream call)
        self.pending.clear()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._t0 = time.perf_counter()
        self._url = b""
        self._headers = {}
        self._head_size = 0
        self._has_bytes = True
        if self.current is None:
            self.server.idle.pop(self, None)
            self.deadline = self.server.loop.time() + self.server.limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        if self.closed:
            return
        if self._head_size > self.server.limits.max_header_bytes:
            self._reject(431, "Request header fields too large.", "header_too_large", "bad_request")
            return
        parser = self.parser
        req = HttpRequest(self, parser.get_method().decode("latin-1"), self._url, self._headers, self._t0,
                          parser.should_keep_alive(), parser.get_http_version() == "1.1")
        self._in_head = False
        self._head_bytes = 0
        self.parsing = req
        if self.current is None:
            self._start(req)
        elif len(self.pending) >= _MAX_PIPELINED:
            self._reject(503, "Too many pipelined requests on one connection.", "too_many_pipelined", "bad_request")
        else:
            self.pending.append(req)

    def on_body(self, body: bytes) -> None:
        if self.closed:
            return
        req = self.parsing
        if req is not None:
            req._feed(body)

    def on_message_complete(self) -> None:
        req = self.parsing
        self.parsing = None
        self._in_head = True
        self._has_bytes = False
        if req is not None:
            req._end()

    # -- serving --------------------------------------------------------------------------------
    def _start(self, req: HttpRequest) -> None:
        self.current = req
        self.deadline = 0.0
        server = self.server
        # While the worker is at max_inflight, a new request is refused here, before a task
        # exists: under a retry storm of ~25,000 refusals a second this is what keeps the
        # admitted requests moving (benches/load/overload.py). Otherwise its handler starts, and
        # the request is admitted (or shed) once its body is complete (HttpServer.admit).
        if server.working >= server.limits.max_inflight and req.path not in server.limits.unshed_paths:
            server.note("overloaded", "requests shed at server.max_inflight")
            req.respond(503, _OVERLOADED_HEADERS, _OVERLOADED_BODY)
            return
        server.active += 1
        req.task = server.loop.create_task(server.run(req))
        if req._complete:  # a pipelined request, parsed whole while the one before it ran
            server.admit(req)

    def response_done(self, req: HttpRequest, keep: bool) -> None:
        """The response to `req` is fully written (to the socket buffer)."""
        if self.closed:
            return
        if not keep:
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]  # flushes what was written first
            return
        self.current = None
        if self.pending:
            self._start(self.pending.popleft())
            return
        limits = self.server.limits
        # Part of the next request's head may be here already: then its header timeout runs.
        self.deadline = self.server.loop.time() + (limits.header_timeout if self._has_bytes else limits.keepalive_timeout)
        if not self._has_bytes:
            self.server.idle[self] = None
        self.resume_reading()

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    async def drained(self) -> None:
        """Wait until the client took enough of what was written (write_timeout bounds it)."""
        while self.write_paused and not self.closed:
            self._drain = self.server.loop.create_future()
            try:
                async with asyncio.timeout(self.server.limits.write_timeout):
                    await self._drain
            except TimeoutError:
                self.server.note("write_timeout", "streams ended: the client read nothing for server.write_timeout")
                self.abort()
                raise WriteTimeout() from None
            finally:
                self._drain = None
        if self.closed:
            raise ClientGone()

    def pause_reading(self) -> None:
        if not self._read_paused and not self.closed:
            self._read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        if self._read_paused and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def expire(self) -> None:
        """The header or keep-alive deadline passed."""
        if self._has_bytes and self.current is None:
            self._reject(408, "Timed out reading the request head.", "header_timeout", "header_timeout")
        else:
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]

    def _reject(self, status: int, message: str, code: str, event: str) -> None:
        """Answer a protocol-level problem and close (only when no response is under way)."""
        self.server.note(event, _EVENT_TEXT.get(event, event))
        if self.current is None and not self.closed:
            self.transport.write(_error_response(status, message, code))  # type: ignore[union-attr]
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]
        else:
            self.abort()


_EVENT_TEXT = {
    "bad_request": "malformed HTTP requests rejected",
    "header_timeout": "connections closed: request head not received within server.header_timeout",
}


def _parser_reason(exc: Exception) -> str:
    text = str(exc).strip().rstrip(".")
    return text[:120] if text else "invalid syntax"


Handler = Callable[[HttpRequest], Awaitable[None]]


class HttpServer:
    """The connections of one worker and the handler that answers their requests."""

    def __init__(self, handler: Handler, limits: ServerLimits | None = None) -> None:
        self.handler = handler
        self.limits = limits or ServerLimits()
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpConnection] = set()
        self.idle: dict[HttpConnection, None] = {}  # keep-alive connections between requests, oldest first
        self.draining = False
        self.active = 0  # requests whose handler task exists
        self.working = 0  # of those, admitted with their body complete (what max_inflight bounds)
        self.reading = 0  # handlers waiting for a request body to arrive
        self.counts: collections.Counter[str] = collections.Counter()
        self._logged: dict[str, tuple[float, int]] = {}
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, sock: Any) -> None:
        self._server = await self.loop.create_server(lambda: HttpConnection(self), sock=sock, backlog=2048)
        self._sweeper = self.loop.create_task(self._sweep())

    async def run(self, req: HttpRequest) -> None:
        """Run the handler for one request (counted in `active` by its connection); make sure the
        client gets an answer."""
        try:
            await self.handler(req)
        except asyncio.CancelledError:
            pass  # the client went away (connection_lost cancelled us) or the server is stopping
        except ClientGone:
            pass
        except Exception:
            log.exception("request handler failed for %s %s", req.method, req.path)
        finally:
            self.active -= 1
            if req._admitted:
                self.working -= 1
            conn = req._conn
            if not conn.closed:
                if not req.responded:
                    req.respond(500, [("content-type", "application/json")],
                                b'{"error":{"message":"The gateway failed to answer this request.",'
                                b'"type":"server_error","param":null,"code":"internal_error"}}')
                elif req._stream is not None and not req._stream.ended:
                    conn.abort()  # a stream left open by a failed handler: end the connection

    def admit(self, req: HttpRequest) -> None:
        """A request's body is complete: admit it (count it as at work) or mark it shed, when
        `max_inflight` are at work already. Requests still waiting for their body are not
        counted: their number is bounded by max_connections and body_timeout, and they cost no
        upstream work (2,100 half-sent bodies must not lock normal requests out)."""
        if self.working >= self.limits.max_inflight and req.path not in self.limits.unshed_paths:
            self.note("overloaded", "requests shed at server.max_inflight")
            req._admitted = False
        else:
            self.working += 1
            req._admitted = True

    def evict_idle(self) -> bool:
        """Close the oldest idle keep-alive connection to make room; False if none is idle."""
        for conn in self.idle:
            del self.idle[conn]
            conn.closed = True
            conn.transport.close()  # type: ignore[union-attr]
            return True
        return False

    def note(self, event: str, text: str) -> None:
        """Count a connection-level event; log its class at most once a minute."""
        self.counts[event] += 1
        now = time.monotonic()
        last, seen = self._logged.get(event, (0.0, 0))
        if now - last >= _LOG_EVERY:
            if last:
                log.warning("%s: %d in the last minute", text, self.counts[event] - seen)
            else:
                log.warning("%s (the first; more are summed up once a minute)", text)
            self._logged[event] = (now, self.counts[event])

    async def _sweep(self) -> None:
        """Once a second: refresh the Date header and close connections past their deadline."""
        while True:
            await asyncio.sleep(1.0)
            _update_date()
            now = self.loop.time()
            for conn in [c for c in self.connections if c.deadline and c.deadline < now]:
                conn.expire()

    def stats(self) -> dict[str, int]:
        return {"connections": len(self.connections), "idle": len(self.idle), "active": self.active,
                "working": self.working, "reading": self.reading, **self.counts}

    async def shutdown(self) -> None:
        """Stop accepting; let requests in flight finish (up to `shutdown_timeout`), then cancel
        what is left. Idle connections are closed at once; busy ones after their response."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.idle):
            conn.closed = True
            conn.transport.close()  # type: ignore[union-attr]
        self.idle.clear()
        deadline = self.loop.time() + self.limits.shutdown_timeout
        while self.active and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        tasks = [c.current.task for c in self.connections if c.current is not None and c.current.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
