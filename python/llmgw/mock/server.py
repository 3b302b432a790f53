"""The HTTP/1.1 server: an asyncio Protocol with httptools' parser.

A hand-written Protocol rather than a framework because the faults live on the wire: hanging
before the status line, stopping mid-body, closing without the chunked terminator. It also keeps
the zero-delay path short: a request that needs no waiting is answered synchronously inside
``data_received`` with one ``transport.write`` (no task, no scheduling).
"""

from __future__ import annotations

import asyncio
from collections import deque
from http import HTTPStatus
from urllib.parse import parse_qsl

import httptools

from llmgw.mock.app import MockApp
from llmgw.mock.options import MockOptions
from llmgw.mock.replies import FullReply, Reply, Request, StreamReply

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_REASONS[529] = "Site is overloaded"
_CHUNK_END = b"0\r\n\r\n"


def _head(status: int, content_type: str, extra: list[tuple[str, str]], length: int | None,
          keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", f"content-type: {content_type}",
             "server: llmgw-mock"]
    if length is None:
        lines.append("transfer-encoding: chunked")
        if content_type.startswith("text/event-stream"):
            lines.append("cache-control: no-cache")
    else:
        lines.append(f"content-length: {length}")
    if not keep_alive:
        lines.append("connection: close")
    lines.extend(f"{name}: {value}" for name, value in extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(frame: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(frame), frame)


def _needs_waiting(reply: Reply, options: MockOptions) -> bool:
    if options.latency_ms > 0 or options.hang is not None:
        return True
    return isinstance(reply, StreamReply) and options.tokens_per_s > 0


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, answers them in order (keep-alive, pipelining)."""

    def __init__(self, app: MockApp, connections: set[HttpConnection]) -> None:
        self.app = app
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._can_write = asyncio.Event()
        self._can_write.set()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not a subclass
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.connections.discard(self)
        if self.task is not None:
            self.task.cancel()
        self._can_write.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._write_and_close(400, f"bad request: {exc}".encode())
        except httptools.HttpParserUpgrade:
            self._write_and_close(400, b"upgrades are not supported")

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        parsed = httptools.parse_url(self._url)
        query_string = (parsed.query or b"").decode("latin-1")
        request = Request(
            method=self.parser.get_method().decode("latin-1"),
            path=parsed.path.decode("latin-1"),
            query_string=query_string,
            query=dict(parse_qsl(query_string, keep_blank_values=True)),
            headers=self._headers,
            body=b"".join(self._body),
            keep_alive=self.parser.should_keep_alive(),
        )
        self.pending.append(request)
        if self.task is None:
            self._serve_pending()

    # -- answering --------------------------------------------------------------------------

    def _serve_pending(self) -> None:
        """Answer queued requests in order; hand over to a task at the first that must wait."""
        while self.pending and not self.closing:
            request = self.pending.popleft()
            reply, options = self.app.handle(request)
            if _needs_waiting(reply, options):
                self.task = asyncio.get_running_loop().create_task(self._deliver_later(request, reply, options))
                self.task.add_done_callback(self._delivery_done)
                return
            self._deliver_now(request, reply, options)

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self.task = None
        if not task.cancelled() and task.exception() is not None and self.transport is not None:
            self.transport.abort()
            return
        self._serve_pending()

    def _deliver_now(self, request: Request, reply: Reply, options: MockOptions) -> None:
        assert self.transport is not None
        self.app.record_status(reply.status)
        keep_alive = request.keep_alive
        if isinstance(reply, FullReply):
            head = _head(reply.status, reply.content_type, reply.headers, len(reply.body), keep_alive)
            if options.cut_after_chunks is not None:
                self.transport.write(head + reply.body[: len(reply.body) // 2])
                self._close()
                return
            self.transport.write(head + reply.body)
        else:
            frames = reply.prelude + reply.chunks + reply.epilogue
            cut = options.cut_after_chunks
            if cut is not None:
                frames = reply.prelude + reply.chunks[:cut]
            head = _head(reply.status, reply.content_type, reply.headers, None, keep_alive)
            body = b"".join(_chunk(f) for f in frames)
            if cut is not None:
                self.transport.write(head + body)
                self._close()
                return
            self.transport.write(head + body + _CHUNK_END)
        if not keep_alive:
            self._close()

    async def _deliver_later(self, request: Request, reply: Reply, options: MockOptions) -> None:
        assert self.transport is not None
        if options.latency_ms > 0:
            await asyncio.sleep(options.latency_ms / 1000)
        if options.hang == "before":
            await self._hang(options)
        self.app.record_status(reply.status)
        keep_alive = request.keep_alive
        if isinstance(reply, FullReply):
            head = _head(reply.status, reply.content_type, reply.headers, len(reply.body), keep_alive)
            half = len(reply.body) // 2
            if options.hang == "mid":
                self.transport.write(head + reply.body[:half])
                await self._hang(options)
                self.transport.write(reply.body[half:])
            elif options.cut_after_chunks is not None:
                self.transport.write(head + reply.body[:half])
                self._close()
                return
            else:
                self.transport.write(head + reply.body)
        else:
            await self._stream(reply, options, keep_alive)
            if options.cut_after_chunks is not None:
                return
        if not keep_alive:
            self._close()

    async def _stream(self, reply: StreamReply, options: MockOptions, keep_alive: bool) -> None:
        assert self.transport is not None
        write = self.transport.write
        write(_head(reply.status, reply.content_type, reply.headers, None, keep_alive)
              + b"".join(_chunk(f) for f in reply.prelude))
        interval = options.chunk_words / options.tokens_per_s if options.tokens_per_s > 0 else 0.0
        cut = options.cut_after_chunks
        for index, frame in enumerate(reply.chunks):
            if options.hang == "mid" and index == options.hang_after_chunks:
                await self._hang(options)
            if cut is not None and index == cut:
                self._close()
                return
            if interval:
                await asyncio.sleep(interval)
            await self._can_write.wait()
            write(_chunk(frame))
        if options.hang == "mid" and options.hang_after_chunks >= len(reply.chunks):
            await self._hang(options)
        if cut is not None:
            self._close()
            return
        write(b"".join(_chunk(f) for f in reply.epilogue) + _CHUNK_END)

    async def _hang(self, options: MockOptions) -> None:
        if options.hang_ms > 0:
            await asyncio.sleep(options.hang_ms / 1000)
        else:
            await asyncio.Future()  # until the client disconnects (connection_lost cancels us)

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _write_and_close(self, status: int, message: bytes) -> None:
        if self.transport is None or self.closing:
            return
        self.transport.write(_head(status, "text/plain", [], len(message), False) + message)
        self._close()


class MockServer:
    """Owns the listening socket, the app and the open connections of one mock instance."""

    def __init__(self, options: MockOptions) -> None:
        self.app = MockApp(options)
        self.connections: set[HttpConnection] = set()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Start listening; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: HttpConnection(self.app, self.connections), host, port, reuse_address=True,
            backlog=1024,
        )
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, drop open connections, wait for their tasks to finish."""
        if self.server is not None:
            self.server.close()
        tasks = []
        for connection in list(self.connections):
            if connection.task is not None:
                connection.task.cancel()
                tasks.append(connection.task)
            if connection.transport is not None:
                connection.transport.abort()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
        await asyncio.sleep(0)  # let connection_lost callbacks run before the loop closes
