"""Streamed answers: turning upstream bytes into what the client receives, chunk hooks included.

Two pumps share one interface (`feed(data) -> bytes`, `finish() -> bytes`, `error(err) -> bytes`
and the facts read on the way: usage, finish reason, text, how much was streamed):

- `PassthroughPump`: an OpenAI upstream to an OpenAI client with no plugin that changes chunks.
  Events are forwarded byte for byte, cut at event boundaries by the Rust `StreamTap`, which
  reads usage and finish reason as they pass. Read-only chunk observers see parsed chunks.
- `ChunkPump`: everything else. The provider's translator turns bytes into canonical chunks,
  each chunk runs through the `on_chunk` hooks (which may hold, split, merge or drop), and the
  client's encoder writes what comes out (OpenAI SSE, or Anthropic events). It also replays a
  ChatResponse's chunks (a short-circuit or a cache hit) as a real stream.

Both bound the bytes held for an unfinished event (`MAX_EVENT_BYTES`), and both report an
upstream's in-stream error as an UpstreamProtocolError *after* returning the chunks that came
before it, so those still reach the client (or, before anything was sent, the attempt fails and
routing may try elsewhere). A hook that raises surfaces as a `PluginCrash` (plugins.chain).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Iterable

import orjson

from llmgw._core import SseParser, StreamTap
from llmgw.errors import GatewayError
from llmgw.exchange import Usage
from llmgw.transport import UpstreamProtocolError

if TYPE_CHECKING:
    from llmgw.plugins.chain import ChunkHooks
    from llmgw.providers.base import StreamTranslator

__all__ = ["ChunkPump", "MAX_EVENT_BYTES", "PassthroughPump", "chunks_as_response", "response_as_chunks"]

# An upstream that never ends an event must not grow the gateway's memory without bound; real
# chunks are a few hundred bytes, a large tool-call argument delta a few kilobytes.
MAX_EVENT_BYTES = 4 << 20

Chunk = dict[str, Any]


# Bytes of an OpenAI chunk that carry content: non-empty text, refusal, tool name or arguments, or
# a finish reason (a role-only first chunk has "content":"" and matches none of them).
_CONTENT = re.compile(rb'"(?:content|refusal|name|arguments)":"(?!")|"finish_reason":"')


class PassthroughPump:
    """OpenAI SSE bytes forwarded verbatim, event-aligned (see the module docstring)."""

    __slots__ = ("tap", "upstream", "observers", "_parser", "_held", "_failure", "sent_events", "content_seen")

    def __init__(self, upstream: str, observers: ChunkHooks | None, collect_text: bool) -> None:
        self.tap = StreamTap(collect_text)
        self.upstream = upstream
        self.observers = observers
        self._parser = SseParser() if observers is not None else None
        self._held = 0  # bytes of the unfinished event the tap holds back
        self._failure: UpstreamProtocolError | None = None
        self.sent_events = 0
        self.content_seen = False  # an event with text, a tool call or a finish reason went by

    def feed(self, data: bytes) -> bytes:
        if self._failure is not None:
            raise self._failure
        tap = self.tap
        out = tap.feed(data)
        self._held += len(data) - len(out)
        if self._held > MAX_EVENT_BYTES:
            raise UpstreamProtocolError(f"upstream {self.upstream!r} sent a stream event over {MAX_EVENT_BYTES} bytes")
        if tap.error is not None:
            out = self._cut_at_error(out)
        if out and not self.content_seen and _CONTENT.search(out) is not None:
            self.content_seen = True
        if out and self._parser is not None:
            for event in self._parser.feed(out):
                if event.data != "[DONE]":
                    try:
                        chunk = orjson.loads(event.data)
                    except orjson.JSONDecodeError:
                        continue  # forwarded as the upstream sent it; nothing for observers to read
                    if isinstance(chunk, dict):
                        self.observers.observe(chunk)  # type: ignore[union-attr]
        return out

    def _cut_at_error(self, out: bytes) -> bytes:
        """The bytes before the upstream's in-stream error event; the error is raised next call."""
        kept = []
        for event in re.split(rb"(?<=\n\n)|(?<=\r\n\r\n)|(?<=\r\r)", out):
            data = b"".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))
            try:
                parsed = orjson.loads(data) if data else None
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict) and "error" in parsed and "choices" not in parsed:
                err = parsed["error"]
                detail = err.get("message") if isinstance(err, dict) else err
                self._failure = UpstreamProtocolError(f"upstream {self.upstream!r} failed mid-stream: {detail}")
                break
            kept.append(event)
        if self._failure is None:  # the error event came in an earlier piece: it ends the stream now
            self._failure = UpstreamProtocolError(f"upstream {self.upstream!r} failed mid-stream")
        prefix = b"".join(kept)
        if not prefix:
            raise self._failure
        return prefix

    def finish(self) -> bytes:
        if self._failure is not None:
            raise self._failure
        if not self.tap.done:
            raise UpstreamProtocolError(f"upstream {self.upstream!r} ended the stream before [DONE]")
        return b""

    @staticmethod
    def error(err: GatewayError) -> bytes:
        return b"data: " + err.body() + b"\n\n"

    @property
    def usage(self) -> Usage | None:
        u = self.tap.usage
        return Usage(u[0], u[1], u[2], u[3]) if u is not None else None

    @property
    def finish_reason(self) -> str | None:
        return self.tap.finish_reason

    @property
    def text(self) -> str:
        return self.tap.text

    def streamed_tokens(self) -> int:
        """An estimate of completion tokens forwarded: one per content event (how OpenAI streams)."""
        return max(self.tap.events - 1, 0)


class ChunkPump:
    """Canonical chunks through the on_chunk hooks into the client's encoding (module docstring)."""

    __slots__ = ("reader", "encoder", "hooks", "usage", "finish_reason", "texts", "events", "content_seen")

    def __init__(self, reader: StreamTranslator | None, encoder: Any, hooks: ChunkHooks | None) -> None:
        self.reader = reader
        self.encoder = encoder
        self.hooks = hooks
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.texts: list[str] = []  # content of choice 0 as the client received it
        self.events = 0
        self.content_seen = False

    def feed(self, data: bytes) -> bytes:
        reader = self.reader
        assert reader is not None
        chunks = reader.feed(data)
        if getattr(reader, "pending_bytes", 0) > MAX_EVENT_BYTES:
            raise UpstreamProtocolError(f"upstream sent a stream event over {MAX_EVENT_BYTES} bytes")
        return self.encode(chunks) if chunks else b""

    def encode(self, chunks: Iterable[Chunk]) -> bytes:
        parts = []
        hooks, encoder, texts = self.hooks, self.encoder, self.texts
        for chunk in chunks:
            usage = chunk.get("usage")
            if usage:
                self.usage = Usage.from_openai(usage)
            for choice in chunk.get("choices") or ():
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
            for out in hooks.run(chunk) if hooks is not None else (chunk,):
                for choice in out.get("choices") or ():
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if content and choice.get("index", 0) == 0:
                        texts.append(content)
                    if content or delta.get("tool_calls") or delta.get("refusal") or choice.get("finish_reason"):
                        self.content_seen = True
                self.events += 1
                parts.append(encoder.chunk(out))
        return b"".join(parts)

    def finish(self) -> bytes:
        """The end of the stream: the translator's last chunks, what plugins held, the terminator."""
        tail = self.encode(self.reader.finish()) if self.reader is not None else b""
        if self.hooks is not None:
            held = self.hooks.flush()
            if held:
                tail += self._encode_released(held)
        return tail + self.encoder.end()

    def _encode_released(self, chunks: list[Chunk]) -> bytes:
        # Released chunks already went through the later plugins' on_chunk (ChunkHooks.flush).
        hooks, self.hooks = self.hooks, None
        try:
            return self.encode(chunks)
        finally:
            self.hooks = hooks

    def error(self, err: GatewayError) -> bytes:
        return self.encoder.error(err)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def streamed_tokens(self) -> int:
        from llmgw.tokens import count_tokens

        return count_tokens(self.text) if self.texts else 0


def response_as_chunks(data: dict[str, Any], include_usage: bool) -> list[Chunk]:
    """A complete chat.completion as the chunks of an equivalent stream (tool calls carry their
    `index`, as streamed tool-call deltas do; usage comes last, in its own chunk, when asked for)."""
    base = {"id": data.get("id", "chatcmpl-llmgw"), "object": "chat.completion.chunk",
            "created": data.get("created", int(time.time())), "model": data.get("model", "")}
    chunks = []
    for choice in data.get("choices") or ():
        msg = choice.get("message") or {}
        delta = {k: v for k, v in msg.items() if v is not None}
        if isinstance(delta.get("tool_calls"), list):
            delta["tool_calls"] = [{"index": i, **tc} if isinstance(tc, dict) else tc
                                   for i, tc in enumerate(delta["tool_calls"])]
        idx = choice.get("index", 0)
        chunks.append({**base, "choices": [{"index": idx, "delta": delta, "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": idx, "delta": {}, "finish_reason": choice.get("finish_reason")}]})
    if include_usage and data.get("usage"):
        chunks.append({**base, "choices": [], "usage": data["usage"]})
    return chunks


def chunks_as_response(chunks: Iterable[Chunk]) -> dict[str, Any]:
    """Stream chunks assembled into the chat.completion they add up to (content joined, tool
    calls merged by index with their argument fragments joined, the last finish reason and usage)."""
    head: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        if not head:
            head = {"id": chunk.get("id", "chatcmpl-llmgw"), "created": chunk.get("created", int(time.time())),
                    "model": chunk.get("model", "")}
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            idx = choice.get("index", 0)
            slot = choices.setdefault(idx, {"index": idx, "message": {"role": "assistant", "content": None},
                                            "finish_reason": None})
            msg = slot["message"]
            delta = choice.get("delta") or {}
            if delta.get("role"):
                msg["role"] = delta["role"]
            if delta.get("content"):
                msg["content"] = (msg["content"] or "") + delta["content"]
            if delta.get("refusal"):
                msg["refusal"] = msg.get("refusal", "") + delta["refusal"]
            for tc in delta.get("tool_calls") or ():
                calls = msg.setdefault("tool_calls", [])
                i = tc.get("index", len(calls))
                while len(calls) <= i:
                    calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                call = calls[i]
                if tc.get("id"):
                    call["id"] = tc["id"]
                fn = tc.get("function") or {}
                call["function"]["name"] += fn.get("name") or ""
                call["function"]["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                slot["finish_reason"] = choice["finish_reason"]
    out = {**head, "object": "chat.completion", "choices": [choices[i] for i in sorted(choices)]}
    if usage is not None:
        out["usage"] = usage
    return out
