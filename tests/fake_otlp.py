"""A fake OTLP/HTTP trace receiver on 127.0.0.1, for tests that export spans.

    with FakeOtlpReceiver() as otlp:          # listening on a free port, in its own thread
        ... point the gateway at otlp.url ...  # http://127.0.0.1:<port>/v1/traces
        spans = otlp.wait_for_spans(3)        # or: await otlp.wait_for_spans_async(3)
        assert spans[0].name == "chat gpt-4o"

It decodes every POST body with opentelemetry-proto's ExportTraceServiceRequest (gzip bodies
too) and answers like a collector: 200 with an empty ExportTraceServiceResponse; 400 for a body
that does not decode; 415 for a content type other than application/x-protobuf; 404 for another
path. `fail_next(n, status)` makes the next n POSTs answer `status` (503, 429, 400, ...) without
keeping their spans; `partial_next(n, rejected, message)` answers 200 with partial_success.

Served by a ThreadingHTTPServer (HTTP/1.1 keep-alive), so it works whether the code under test
runs in the test's event loop, another thread or another process.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["FakeOtlpReceiver", "Received", "attributes", "value_of"]

CONTENT_TYPE = "application/x-protobuf"


@dataclass
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes  # as sent (still gzip-compressed if it was)
    status: int  # what the receiver answered
    export: ExportTraceServiceRequest | None = None  # the decoded body (None if it did not decode)
    error: str = ""  # why it was refused, for assertion messages
    kept: bool = False  # its spans count as received (a 2xx the receiver was not told to drop)

    @property
    def accepted(self) -> bool:
        return self.kept

    def spans(self) -> list[Span]:
        if self.export is None:
            return []
        return [s for rs in self.export.resource_spans for ss in rs.scope_spans for s in ss.spans]


def value_of(value: AnyValue) -> Any:
    """A decoded AnyValue as a Python value (arrays as lists, kvlists as dicts)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def attributes(item: Any) -> dict[str, Any]:
    """A span's (or resource's, scope's) attributes as a dict."""
    return {kv.key: value_of(kv.value) for kv in item.attributes}


@dataclass
class _Plan:
    status: int
    body: bytes = b""
    keep: bool = False  # keep the spans (a partial success was still a delivery)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector and httpx use it
    server: _Server
    timeout = 30  # an idle keep-alive connection is closed after this

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # keep pytest's output clean

    def do_POST(self) -> None:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            body = self._read_chunked()
        else:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
        self.server.receiver._handle(self, body)

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def do_GET(self) -> None:
        self._answer(405, b"", "text/plain")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: FakeOtlpReceiver


class FakeOtlpReceiver:
    """See the module docstring. Thread-safe; `requests` lists every request in arrival order."""

    def __init__(self, path: str = "/v1/traces", host: str = "127.0.0.1", port: int = 0) -> None:
        self.path = path
        self._host, self._port = host, port
        self.requests: list[Received] = []
        self._plans: list[_Plan] = []
        self._delay = 0.0
        self._lock = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeOtlpReceiver:
        if self._server is None:
            server = _Server((self._host, self._port), _Handler)
            server.receiver = self
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="fake-otlp", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the receiver first"
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """The base URL (what OTEL_EXPORTER_OTLP_ENDPOINT holds: /v1/traces is appended to it)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The traces URL (what OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and tracing.endpoint hold)."""
        return f"{self.endpoint}{self.path}"

    # -- behaviour ----------------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 503, body: bytes = b"") -> None:
        """Answer the next `n` POSTs with `status` (spans not kept)."""
        with self._lock:
            self._plans += [_Plan(status, body) for _ in range(n)]

    def partial_next(self, n: int = 1, rejected: int = 1, message: str = "rejected by the fake") -> None:
        """Answer the next `n` POSTs 200 with partial_success{rejected_spans, error_message}
        (the spans are kept, as a collector keeps the ones it did not reject)."""
        resp = ExportTraceServiceResponse(
            partial_success=ExportTracePartialSuccess(rejected_spans=rejected, error_message=message))
        with self._lock:
            self._plans += [_Plan(200, resp.SerializeToString(), keep=True) for _ in range(n)]

    def set_delay(self, seconds: float) -> None:
        """Wait this long before answering each request (to exercise client timeouts)."""
        self._delay = seconds

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self._plans.clear()

    # -- what arrived -------------------------------------------------------------------------
    def exports(self) -> list[ExportTraceServiceRequest]:
        """The decoded bodies of the accepted requests, in arrival order."""
        with self._lock:
            return [r.export for r in self.requests if r.accepted and r.export is not None]

    def spans(self) -> list[Span]:
        """Every span of every accepted request, in arrival order."""
        with self._lock:
            return [s for r in self.requests if r.accepted for s in r.spans()]

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[Span]:
        """Block until at least `n` spans were accepted; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                spans = [s for r in self.requests if r.accepted for s in r.spans()]
                if len(spans) >= n:
                    return spans
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fake OTLP receiver: {len(spans)} spans after {timeout}s, wanted {n}; "
                                         f"requests: {[(r.status, r.error) for r in self.requests]}")
                self._lock.wait(left)

    async def wait_for_spans_async(self, n: int, timeout: float = 10.0) -> list[Span]:
        """`wait_for_spans` without blocking the event loop (for a gateway in the same loop)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if len(spans) >= n:
                return spans
            if time.monotonic() >= deadline:
                raise AssertionError(f"fake OTLP receiver: {len(spans)} spans after {timeout}s, wanted {n}; "
                                     f"requests: {[(r.status, r.error) for r in self.requests]}")
            await asyncio.sleep(0.02)

    def spans_by_name(self) -> dict[str, list[Span]]:
        out: dict[str, list[Span]] = {}
        for s in self.spans():
            out.setdefault(s.name, []).append(s)
        return out

    def resource_attributes(self) -> list[dict[str, Any]]:
        """The resource attributes of each accepted request's resource spans."""
        return [attributes(rs.resource) for export in self.exports() for rs in export.resource_spans]

    # -- the handler --------------------------------------------------------------------------
    def _handle(self, handler: _Handler, raw: bytes) -> None:
        if self._delay:
            time.sleep(self._delay)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        path = handler.path.split("?", 1)[0]
        received = Received("POST", path, headers, raw, 0)
        export, error, status = self._decode(path, headers, raw)
        received.export, received.error = export, error
        reply, reply_type = ExportTraceServiceResponse().SerializeToString(), CONTENT_TYPE
        with self._lock:
            kept = status == 200
            if status == 200 and self._plans:
                plan = self._plans.pop(0)
                status, kept = plan.status, plan.keep
                if 200 <= status < 300:
                    reply = plan.body or reply
                else:
                    reply_type, reply = "text/plain", plan.body or f"fake OTLP receiver answers {status}".encode()
                if not kept:
                    received.error = f"told to answer {status}"
            elif status != 200:
                reply_type, reply = "text/plain", error.encode()
            received.status, received.kept = status, kept
            self.requests.append(received)
            self._lock.notify_all()
        handler._answer(status, reply, reply_type)

    def _decode(self, path: str, headers: dict[str, str],
                raw: bytes) -> tuple[ExportTraceServiceRequest | None, str, int]:
        if path != self.path:
            return None, f"no route {path}", 404
        content_type = headers.get("content-type", "").split(";", 1)[0].strip()
        if content_type != CONTENT_TYPE:
            return None, f"content-type {content_type!r} (this fake only reads {CONTENT_TYPE})", 415
        body = raw
        if headers.get("content-encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(raw)
            except (OSError, EOFError) as exc:
                return None, f"bad gzip body: {exc}", 400
        try:
            export = ExportTraceServiceRequest.FromString(body)
        except DecodeError as exc:
            return None, f"body is not an ExportTraceServiceRequest: {exc}", 400
        return export, "", 200
