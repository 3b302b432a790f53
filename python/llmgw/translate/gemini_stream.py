"""Gemini `streamGenerateContent?alt=sse` events → OpenAI `chat.completion.chunk` dicts.

Each Gemini event is a whole GenerateContentResponse carrying the next slice of each candidate:
text parts become `delta.content`, and a functionCall part (Gemini sends each call whole, never
split across events) becomes one tool-call delta with its id, name and complete arguments, numbered
per choice. The event that carries a candidate's `finishReason` yields that choice's final chunk.

Usage: every Gemini event repeats `usageMetadata`; the last one counts. It is attached to the
final finish chunk when the last candidate finishes in an event that carries it (the usual case:
one candidate, usage in the last event), so clients that index `choices[0]` never see a chunk
without choices; otherwise `finish()` emits it in a separate `choices: []` chunk, as OpenAI's
`stream_options.include_usage` does.

Gemini has no end-of-stream event: a stream that ends before every started candidate has a
finishReason was cut, and `finish()` raises UpstreamProtocolError. An `{"error": ...}` event
(Google sends one when generation fails mid-stream) raises it too.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from llmgw.streams import SseStreamReader
from llmgw.translate.gemini import finish_reason, text_from_parts, tool_calls_from_parts, usage_from_gemini

__all__ = ["GeminiStreamTranslator"]


class GeminiStreamTranslator(SseStreamReader):
    """State of one Gemini SSE stream being turned into OpenAI chunks (see the module docstring)."""

    __slots__ = ("_model", "_id", "_created", "_started", "_tool_counts", "_finished",
                 "_usage", "_usage_sent", "_events")

    def __init__(self, upstream: str, model: str) -> None:
        super().__init__(upstream)
        self._model = model
        self._id = "chatcmpl-" + os.urandom(12).hex()
        self._created = int(time.time())
        self._started: set[int] = set()  # choices whose role delta was sent
        self._tool_counts: dict[int, int] = {}  # choice index → tool calls emitted so far
        self._finished: set[int] = set()
        self._usage: dict[str, Any] | None = None
        self._usage_sent = False
        self._events = 0

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                "choices": choices}

    def on_event(self, event: Any, out: list[dict[str, Any]]) -> None:
        if not event.data:
            return
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise self.broken("sent a malformed stream event") from None
        if not isinstance(payload, dict):
            raise self.broken("sent a stream event that is not an object")
        if "error" in payload:
            err = payload["error"]
            raise self.broken(f"failed mid-stream: {err.get('message') if isinstance(err, dict) else err}")
        self._events += 1
        out.extend(self._translate(payload))

    def _translate(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        if payload.get("usageMetadata") is not None:
            self._usage = usage_from_gemini(payload["usageMetadata"])
        candidates = payload.get("candidates") or []
        if not candidates and (payload.get("promptFeedback") or {}).get("blockReason"):
            # The prompt was blocked: no candidate will come. Answer as a filtered empty choice.
            candidates = [{"index": 0, "finishReason": "PROHIBITED_CONTENT", "content": {"parts": []}}]
        out: list[dict[str, Any]] = []
        finishing: list[dict[str, Any]] = []
        for pos, cand in enumerate(candidates):
            index = cand.get("index", pos)
            parts = ((cand.get("content") or {}).get("parts")) or []
            delta: dict[str, Any] = {}
            if index not in self._started:
                self._started.add(index)
                delta["role"] = "assistant"
            text = text_from_parts(parts)
            if text:
                delta["content"] = text
            calls = tool_calls_from_parts(parts, self._tool_counts.get(index, 0))
            if calls:
                self._tool_counts[index] = self._tool_counts.get(index, 0) + len(calls)
                delta["tool_calls"] = calls
            if delta:
                if "content" not in delta and "tool_calls" not in delta:
                    delta["content"] = ""
                out.append(self._chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}]))
            reason = cand.get("finishReason")
            if reason is not None and index not in self._finished:
                self._finished.add(index)
                finishing.append(self._chunk([{
                    "index": index, "delta": {}, "logprobs": None,
                    "finish_reason": finish_reason(reason, self._tool_counts.get(index, 0) > 0)}]))
        if finishing and self._finished >= self._started and self._usage is not None \
                and payload.get("usageMetadata") is not None:
            finishing[-1]["usage"] = self._usage
            self._usage_sent = True
        return out + finishing

    def on_end(self) -> list[dict[str, Any]]:
        if self._events == 0 or not self._started or not self._finished >= self._started:
            raise self.broken("ended the stream before the answer finished")
        if self._usage is not None and not self._usage_sent:
            self._usage_sent = True
            return [{**self._chunk([]), "usage": self._usage}]
        return []
