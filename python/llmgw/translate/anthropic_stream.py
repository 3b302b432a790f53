"""Anthropic stream events ⇄ OpenAI `chat.completion.chunk`s: one stateful translator per stream.

Both classes take and return parsed events (dicts); SSE framing is the caller's. Text and tool
arguments are forwarded the moment they arrive: an `input_json_delta` becomes a tool-call
`arguments` delta and back, so a client sees a tool call being written as the model writes it.
"""

from __future__ import annotations

import time
from typing import Any

from llmgw.translate.anthropic import (
    JSON_TOOL_NAME,
    anthropic_message_id,
    anthropic_usage_from_openai,
    finish_reason_from_stop_reason,
    openai_usage_from_anthropic,
    stop_reason_from_finish_reason,
)

__all__ = ["AnthropicStreamError", "AnthropicToOpenAIStream", "OpenAIToAnthropicStream"]

_TEXT, _TOOL, _JSON, _SKIP = 0, 1, 2, 3


class AnthropicStreamError(ValueError):
    """The upstream stream broke: an `error` event, a malformed event, or an early end."""

    def __init__(self, message: str, error_type: str = "api_error") -> None:
        super().__init__(message)
        self.error_type = error_type


class AnthropicToOpenAIStream:
    """Anthropic Messages stream events → OpenAI chunks.

    include_usage: the client asked for `stream_options.include_usage`: usage then comes as a final
    chunk with no choices, as OpenAI sends it. Otherwise usage rides on the chunk carrying the
    finish_reason (so the gateway can account it) and no extra chunk is sent, since clients that
    did not ask may read `choices[0]` of every chunk.
    """

    __slots__ = ("model", "include_usage", "created", "done", "_id", "_blocks", "_tools", "_usage",
                 "_stop_reason", "_stop_sequence", "_json_only")

    def __init__(self, model: str, *, include_usage: bool = False, created: int | None = None) -> None:
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.done = False
        self._id = "msg_llmgw"
        self._blocks: dict[int, tuple[int, int]] = {}  # Anthropic block index → (kind, tool-call index)
        self._tools = 0
        self._usage: dict[str, Any] = {}
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        self._json_only = True  # every tool_use so far was the JSON-mode tool

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    def event(self, kind: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks for one upstream event (`kind` is the SSE event name or data.type)."""
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "message_start":
            message = data.get("message") or {}
            self._id = message.get("id") or self._id
            self._usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "message_delta":
            delta = data.get("delta") or {}
            self._stop_reason = delta.get("stop_reason") or self._stop_reason
            self._stop_sequence = delta.get("stop_sequence") or self._stop_sequence
            # message_delta usage is cumulative: it overwrites what message_start said
            self._usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            return []
        if kind == "message_stop":
            return self._stop()
        if kind == "error":
            err = data.get("error") or {}
            raise AnthropicStreamError(f"{err.get('type', 'error')}: {err.get('message', 'stream error')}",
                                       str(err.get("type") or "api_error"))
        return []  # ping, content_block_stop, and event types added later

    def _block_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        block = data.get("content_block") or {}
        index = data.get("index", 0)
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = (_TEXT, 0)
            text = block.get("text")
            return [self._chunk({"content": text})] if text else []
        if kind == "tool_use" and block.get("name") == JSON_TOOL_NAME:
            self._blocks[index] = (_JSON, 0)
            return []
        if kind == "tool_use":
            self._json_only = False
            k = self._tools
            self._tools += 1
            self._blocks[index] = (_TOOL, k)
            return [self._chunk({"tool_calls": [{"index": k, "id": block.get("id"), "type": "function",
                                                 "function": {"name": block.get("name"), "arguments": ""}}]})]
        self._blocks[index] = (_SKIP, 0)  # thinking and server-tool blocks: no chat-completions form
        return []

    def _delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind, k = self._blocks.get(data.get("index", 0), (_SKIP, 0))
        delta = data.get("delta") or {}
        if kind == _TEXT and delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            if kind == _TOOL:
                return [self._chunk({"tool_calls": [{"index": k, "function": {"arguments": delta["partial_json"]}}]})]
            if kind == _JSON:
                return [self._chunk({"content": delta["partial_json"]})]
        return []

    def _stop(self) -> list[dict[str, Any]]:
        self.done = True
        finish = finish_reason_from_stop_reason(self._stop_reason) or "stop"
        if finish == "tool_calls" and self._json_only:
            finish = "stop"
        last = self._chunk({}, finish)
        if self._stop_reason == "stop_sequence" and self._stop_sequence:
            last["choices"][0]["stop_reason"] = self._stop_sequence
        usage = openai_usage_from_anthropic(self._usage)
        if not self.include_usage:
            last["usage"] = usage
            return [last]
        tail = {"id": self._id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": usage}
        return [last, tail]

    def finish(self) -> list[dict[str, Any]]:
        """The upstream ended; raises AnthropicStreamError if it ended before message_stop."""
        if not self.done:
            raise AnthropicStreamError("the stream ended before message_stop")
        return []


class OpenAIToAnthropicStream:
    """OpenAI chunks → Anthropic Messages stream events, as (event name, data) pairs.

    Only choice 0 is read (Anthropic has no `n`). A text block closes when a tool-use block starts;
    tool-use blocks stay open until the end, because OpenAI may interleave the argument deltas of
    parallel calls while Anthropic's content_block_stop promises a block is complete. Usage
    (which OpenAI sends last) is reported in message_delta, so message_start says 0 input tokens
    unless the first chunk already carried usage.
    """

    __slots__ = ("model", "_started", "_id", "_next_index", "_text_index", "_tool_index", "_finish",
                 "_stop_sequence", "_usage")

    def __init__(self, model: str) -> None:
        self.model = model
        self._started = False
        self._id = "msg_llmgw"
        self._next_index = 0
        self._text_index: int | None = None  # the open text block, if any
        self._tool_index: dict[int, int] = {}  # OpenAI tool-call index → Anthropic block index
        self._finish: str | None = None
        self._stop_sequence: str | None = None
        self._usage: dict[str, Any] | None = None

    def _start(self, chunk: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
        self._started = True
        if chunk is not None and chunk.get("id"):
            self._id = anthropic_message_id(chunk["id"])
        usage = anthropic_usage_from_openai(self._usage) if self._usage else \
            {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}
        return [("message_start", {"type": "message_start", "message": {
            "id": self._id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage}})]

    def _close_text(self, out: list[tuple[str, dict[str, Any]]]) -> None:
        if self._text_index is not None:
            out.append(("content_block_stop", {"type": "content_block_stop", "index": self._text_index}))
            self._text_index = None

    def chunk(self, chunk: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The events for one canonical chunk."""
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        out = [] if self._started else self._start(chunk)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._text_index is None:
                    self._text_index = self._next_index
                    self._next_index += 1
                    out.append(("content_block_start", {"type": "content_block_start", "index": self._text_index,
                                                        "content_block": {"type": "text", "text": ""}}))
                out.append(("content_block_delta", {"type": "content_block_delta", "index": self._text_index,
                                                    "delta": {"type": "text_delta", "text": text}}))
            for call in delta.get("tool_calls") or ():
                self._tool_delta(call, out)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                if isinstance(choice.get("stop_reason"), str):
                    self._stop_sequence = choice["stop_reason"]
        return out

    def _tool_delta(self, call: dict[str, Any], out: list[tuple[str, dict[str, Any]]]) -> None:
        k = call.get("index", 0)
        fn = call.get("function") or {}
        block = self._tool_index.get(k)
        if block is None:
            self._close_text(out)
            block = self._tool_index[k] = self._next_index
            self._next_index += 1
            out.append(("content_block_start", {"type": "content_block_start", "index": block, "content_block": {
                "type": "tool_use", "id": call.get("id") or f"toolu_{self._id}_{k}", "name": fn.get("name") or "",
                "input": {}}}))
        args = fn.get("arguments")
        if args:
            out.append(("content_block_delta", {"type": "content_block_delta", "index": block,
                                                "delta": {"type": "input_json_delta", "partial_json": args}}))

    def end(self) -> list[tuple[str, dict[str, Any]]]:
        """The closing events: open blocks stopped, message_delta (stop reason, usage), message_stop."""
        out = [] if self._started else self._start(None)
        self._close_text(out)
        for block in sorted(self._tool_index.values()):
            out.append(("content_block_stop", {"type": "content_block_stop", "index": block}))
        self._tool_index = {}
        stop_reason = stop_reason_from_finish_reason(self._finish or "stop", self._stop_sequence)
        out.append(("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": stop_reason, "stop_sequence": self._stop_sequence if stop_reason == "stop_sequence" else None},
            "usage": anthropic_usage_from_openai(self._usage)}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out
