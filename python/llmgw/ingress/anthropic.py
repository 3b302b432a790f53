"""The Anthropic Messages dialect: `POST /v1/messages` for Anthropic SDK users, onto any backend.

The request is validated the way Anthropic validates it (its 400s, in its error shape), translated
into the canonical OpenAI request, and run by the RequestRunner like any other; `ANTHROPIC_FORMAT`
encodes the canonical answer as an Anthropic message, the canonical chunk stream as Anthropic
events, and errors as `{"type": "error", "error": {"type", "message"}}` (an `event: error` once a
stream has started). When the backend is itself Anthropic the request is translated twice
(Anthropic → OpenAI → Anthropic); the Anthropic-only fields that survive this are listed in
translate.anthropic.anthropic_to_openai_request. There is no byte passthrough.
"""

from __future__ import annotations

from typing import Any

import orjson

from llmgw.errors import GatewayError
from llmgw.exchange import ChatRequest, ChatResponse
from llmgw.translate.anthropic import TranslationError, anthropic_to_openai_request, openai_to_anthropic_response
from llmgw.translate.anthropic_stream import OpenAIToAnthropicStream

__all__ = ["ANTHROPIC_FORMAT", "AnthropicFormat", "AnthropicStreamEncoder", "anthropic_error_type",
           "parse_messages_request"]

_BLOCK_TYPES = frozenset({"text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking", "document"})


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, param=param, code="invalid_request_error")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_messages_request(data: Any, headers: Any, *, keep_extensions: bool = False) -> ChatRequest:
    """Validate a Messages API request and translate it into the canonical ChatRequest."""
    if not isinstance(data, dict):
        raise _bad("The request body must be a JSON object.", "body")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model: Field required" if model is None else "model: Input should be a valid string", "model")
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        raise _bad("max_tokens: Field required", "max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise _bad("max_tokens: Input should be an integer greater than or equal to 1", "max_tokens")
    messages = data.get("messages")
    if messages is None:
        raise _bad("messages: Field required", "messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: at least one message is required", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _bad(f"messages.{i}: Input should be a valid dictionary", f"messages.{i}")
        if m.get("role") not in ("user", "assistant"):
            raise _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'", f"messages.{i}.role")
        content = m.get("content")
        if isinstance(content, list):
            for j, block in enumerate(content):
                if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
                    raise _bad(f"messages.{i}.content.{j}: Input tag {_tag(block)!r} found using 'type' does not "
                               f"match any of the expected tags: {', '.join(sorted(_BLOCK_TYPES))}",
                               f"messages.{i}.content.{j}.type")
        elif not isinstance(content, str):
            raise _bad(f"messages.{i}.content: Field required" if content is None else
                       f"messages.{i}.content: Input should be a valid string or list", f"messages.{i}.content")
    stream = data.get("stream") or False
    if not isinstance(stream, bool):
        raise _bad("stream: Input should be a valid boolean", "stream")
    for key in ("temperature", "top_p"):
        if data.get(key) is not None and not isinstance(data[key], (int, float)):
            raise _bad(f"{key}: Input should be a valid number", key)
    stops = data.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise _bad("stop_sequences: Input should be a valid list of strings", "stop_sequences")
    try:
        body = anthropic_to_openai_request(data, keep_extensions=keep_extensions)
    except TranslationError as exc:
        raise _bad(f"{exc.param}: {exc.message}" if not exc.message.startswith(exc.param) else exc.message,
                   exc.param) from None
    return ChatRequest(body=body, model=model, stream=stream, raw=None, headers=headers)


def _tag(block: Any) -> str:
    return str(block.get("type")) if isinstance(block, dict) else type(block).__name__


def anthropic_error_type(error: GatewayError) -> str:
    """Anthropic's error type for a gateway error (by status, as Anthropic's SDK reads it)."""
    status = error.status
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 413:
        return "request_too_large"
    if status == 429:
        return "rate_limit_error"
    if status in (503, 529):
        return "overloaded_error"
    if status >= 500:
        return "api_error"
    return "invalid_request_error"


def _error_json(error: GatewayError) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": anthropic_error_type(error), "message": error.message}})


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class AnthropicStreamEncoder:
    """Canonical chunks → Anthropic SSE events for one response."""

    __slots__ = ("_events",)

    def __init__(self, model: str) -> None:
        self._events = OpenAIToAnthropicStream(model)

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        return b"".join(_sse(name, data) for name, data in self._events.chunk(chunk))

    def end(self) -> bytes:
        return b"".join(_sse(name, data) for name, data in self._events.end())

    def error(self, error: GatewayError) -> bytes:
        # The anthropic SDK raises APIStatusError on `event: error` inside a stream.
        return b"event: error\ndata: " + _error_json(error) + b"\n\n"


class AnthropicFormat:
    """The ClientFormat for Anthropic SDK clients."""

    openai = False

    def encode_response(self, response: ChatResponse, request: ChatRequest, keep_raw: bool = False) -> bytes:
        return orjson.dumps(openai_to_anthropic_response(response.data, request.model))

    def stream_encoder(self, request: ChatRequest) -> AnthropicStreamEncoder:
        return AnthropicStreamEncoder(request.model)

    def error_body(self, error: GatewayError) -> bytes:
        return _error_json(error)


ANTHROPIC_FORMAT = AnthropicFormat()
