"""Sends one chat completion and records what a user of the target would have seen.

The HTTP client is the gateway's own lean transport (`llmgw.transport.UpstreamPool`: asyncio
Protocol + httptools, keep-alive pool): a general-purpose client costs ~4x more CPU per request,
and a load tester that burns its core before the target does measures itself, not the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from llmgw.transport import Timeouts, UpstreamError, UpstreamPool, UpstreamResponse, UpstreamTimeout

__all__ = ["ChatRequestSpec", "RequestResult", "BenchClient", "CLIENT_NAME", "ErrorKind"]

#: Named in every report, so figures can be told apart from ones taken with another client.
CLIENT_NAME = "llmgw.transport (asyncio Protocol + httptools, keep-alive pool)"


class ErrorKind:
    """The error kinds a result can carry (`http_<status>` is formed per status code)."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    MALFORMED_RESPONSE = "malformed_response"
    MALFORMED_STREAM = "malformed_stream"
    STREAM_ERROR = "stream_error"  # the server sent an error event inside a 200 stream
    NOT_SENT = "not_sent"  # open loop: no in-flight slot freed up within the request timeout
    OTHER = "other"  # an exception none of the above covers (its type is in the detail)

    @staticmethod
    def http(status: int) -> str:
        return f"http_{status}"


@dataclass(frozen=True, slots=True)
class ChatRequestSpec:
    """What to send: one OpenAI chat.completions request, serialised once and reused."""

    base_url: str
    model: str
    prompt: str
    max_tokens: int | None = None
    stream: bool = False
    #: Ask for `usage` in the last stream chunk (OpenAI's `stream_options.include_usage`).
    stream_usage: bool = True
    api_key: str | None = None
    #: Seconds for the whole exchange (headers, body, every chunk).
    timeout: float = 30.0

    def body(self) -> bytes:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": self.prompt}],
        }
        if self.max_tokens is not None:
            payload["max_tokens"] = self.max_tokens
        if self.stream:
            payload["stream"] = True
            if self.stream_usage:
                payload["stream_options"] = {"include_usage": True}
        return orjson.dumps(payload)

    def headers(self) -> list[tuple[str, str]]:
        headers = [("content-type", "application/json")]
        if self.stream:
            headers.append(("accept", "text/event-stream"))
        if self.api_key:
            headers.append(("authorization", f"Bearer {self.api_key}"))
        return headers


@dataclass(slots=True)
class RequestResult:
    """One request's fate. Times are seconds on the run's monotonic clock (`time.perf_counter`).

    `origin` is when the request *should* have left: its scheduled time in open-loop mode (so time
    spent queued behind a slow target counts, instead of being hidden by coordinated omission), or
    its actual send time in closed-loop mode. Latency and TTFT are measured from it.
    """

    origin: float
    sent: float | None = None  # None: never sent
    finished: float = 0.0
    error: str | None = None
    error_detail: str | None = None
    status: int | None = None
    ttft: float | None = None  # origin -> first content delta (streams only)
    chunk_gaps: list[float] = field(default_factory=list)  # between consecutive content deltas
    output_tokens: int | None = None  # from the response's `usage`; None when it had none
    waited_for_slot: bool = False  # open loop: the in-flight cap delayed the send

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def latency(self) -> float:
        return self.finished - self.origin

    @property
    def send_lag(self) -> float | None:
        """How late the request left relative to its origin (0 in closed-loop mode)."""
        return None if self.sent is None else self.sent - self.origin


def _classify_exception(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, UpstreamTimeout)):
        return ErrorKind.TIMEOUT
    if isinstance(exc, (UpstreamError, OSError)):
        # ConnectError, UpstreamProtocolError (closed before the response ended, or not HTTP), resets
        return ErrorKind.CONNECTION
    return ErrorKind.OTHER


class BenchClient:
    """Sends `spec` repeatedly over one keep-alive pool; each `send` returns a `RequestResult`."""

    def __init__(self, spec: ChatRequestSpec, *, max_connections: int) -> None:
        self.spec = spec
        self._body = spec.body()
        self._headers = spec.headers()
        t = spec.timeout
        self._timeouts = Timeouts(connect=min(t, 5.0), first_byte=t, idle=t, total=t)
        self._pool = UpstreamPool(spec.base_url, max_connections=max_connections, connect_timeout=min(t, 5.0))

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def send(self, origin: float | None = None, *, waited_for_slot: bool = False) -> RequestResult:
        """Send one request now. `origin` defaults to now (closed loop)."""
        sent = time.perf_counter()
        result = RequestResult(origin=sent if origin is None else origin, sent=sent,
                               waited_for_slot=waited_for_slot)
        try:
            async with asyncio.timeout(self.spec.timeout):
                await self._exchange(result)
        except TimeoutError as exc:  # our whole-exchange bound, or the transport's own
            result.error, result.error_detail = ErrorKind.TIMEOUT, str(exc) or "no answer in time"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a classified result
            result.error, result.error_detail = _classify_exception(exc), f"{type(exc).__name__}: {exc}"
        result.finished = time.perf_counter()
        return result

    async def _exchange(self, result: RequestResult) -> None:
        resp = await self._pool.request("POST", "/chat/completions", self._headers, self._body,
                                        timeout=self._timeouts)
        result.status = resp.status
        if resp.status != 200:
            body = await resp.read()
            result.error = ErrorKind.http(resp.status)
            result.error_detail = body[:200].decode("utf-8", "replace")
            return
        if self.spec.stream:
            await self._read_stream(resp, result)
        else:
            self._parse_completion(await resp.read(), result)

    @staticmethod
    def _parse_completion(body: bytes, result: RequestResult) -> None:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            result.error, result.error_detail = ErrorKind.MALFORMED_RESPONSE, f"body is not JSON: {exc}"
            return
        if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list) or not doc["choices"]:
            result.error = ErrorKind.MALFORMED_RESPONSE
            result.error_detail = "JSON body has no non-empty `choices` list: " + body[:200].decode("utf-8", "replace")
            return
        result.output_tokens = _completion_tokens(doc)

    async def _read_stream(self, resp: UpstreamResponse, result: RequestResult) -> None:
        events = SseEventSplitter()
        state = _StreamState()
        try:
            async with contextlib.aclosing(resp.__aiter__()) as chunks:
                async for chunk in chunks:
                    now = time.perf_counter()
                    for data in events.feed(chunk):
                        if not state.take(data, now, result):
                            resp.close()  # malformed or error event: stop reading, drop the connection
                            return
        except BaseException:
            resp.close()
            raise
        for data in events.finish():
            state.take(data, time.perf_counter(), result)
        if not state.done and result.error is None:
            result.error = ErrorKind.MALFORMED_STREAM
            result.error_detail = "stream ended without `data: [DONE]`"


class _StreamState:
    """Per-stream bookkeeping: [DONE] seen, time of the last content delta."""

    __slots__ = ("done", "last_content")

    def __init__(self) -> None:
        self.done = False
        self.last_content: float | None = None

    def take(self, data: bytes, now: float, result: RequestResult) -> bool:
        """Account for one event's data (arrived at `now`); False when the stream is broken."""
        if self.done:
            return True  # anything after [DONE] is ignored, as OpenAI's SDK does
        if data == b"[DONE]":
            self.done = True
            return True
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            result.error = ErrorKind.MALFORMED_STREAM
            result.error_detail = "stream event is not JSON: " + data[:200].decode("utf-8", "replace")
            return False
        if not isinstance(doc, dict):
            result.error, result.error_detail = ErrorKind.MALFORMED_STREAM, "stream event is not a JSON object"
            return False
        if "error" in doc:
            result.error = ErrorKind.STREAM_ERROR
            result.error_detail = orjson.dumps(doc["error"])[:200].decode()
            return False
        if _has_content(doc):
            if self.last_content is None:
                result.ttft = now - result.origin
            else:
                result.chunk_gaps.append(now - self.last_content)
            self.last_content = now
        tokens = _completion_tokens(doc)
        if tokens is not None:
            result.output_tokens = tokens
        return True


def _has_content(doc: dict[str, Any]) -> bool:
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    first = choices[0]
    delta = first.get("delta") if isinstance(first, dict) else None
    return isinstance(delta, dict) and bool(delta.get("content") or delta.get("tool_calls"))


def _completion_tokens(doc: dict[str, Any]) -> int | None:
    usage = doc.get("usage")
    if isinstance(usage, dict):
        tokens = usage.get("completion_tokens")
        if isinstance(tokens, int):
            return tokens
    return None


class SseEventSplitter:
    """Splits a byte stream into SSE events and yields each event's joined `data` payload.

    Deliberately small (the load tester needs `data:` lines only); it accepts LF, CRLF and CR line
    endings as the SSE spec does and tolerates events split across network chunks.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk
        if b"\r" in buf:
            # A trailing CR may be the first half of a CRLF split across chunks: keep it back.
            keep_cr = buf.endswith(b"\r")
            buf = (buf[:-1] if keep_cr else buf).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buf += b"\r"
        events: list[bytes] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            data = _event_data(buf[start:end])
            if data is not None:
                events.append(data)
            start = end + 2
        self._buf = buf[start:]
        return events

    def finish(self) -> list[bytes]:
        """At end of stream: events completed only by a held-back trailing CR (CR line endings)."""
        rest, self._buf = self._buf, b""
        if rest.endswith(b"\r"):
            return self.feed(rest[:-1] + b"\n")
        return []


def _event_data(block: bytes) -> bytes | None:
    parts: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None
