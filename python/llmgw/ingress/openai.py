"""The OpenAI chat-completions dialect: request validation and answer encoding."""

from __future__ import annotations

from typing import Any

import orjson

from llmgw.errors import GatewayError
from llmgw.exchange import ChatRequest, ChatResponse

__all__ = ["OPENAI_FORMAT", "OpenAIFormat", "bad_request", "parse_chat_request", "require_model"]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def bad_request(message: str, param: str, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


_bad = bad_request


def require_model(data: Any) -> str:
    """The body must be a JSON object with a non-empty string `model` (every OpenAI endpoint)."""
    if not isinstance(data, dict):
        raise _bad("The request body must be a JSON object.", "body", "invalid_type")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("You must provide a model parameter (a non-empty string).", "model",
                   "missing_required_parameter" if model is None else "invalid_type")
    return model


def parse_chat_request(data: Any, raw: bytes | None, headers: Any) -> ChatRequest:
    """Validate what every backend needs; other fields pass through to the upstream to judge."""
    model = require_model(data)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array of message objects.", "messages",
                   "missing_required_parameter" if messages is None else "invalid_type")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _bad(f"messages[{i}] must be an object.", f"messages[{i}]", "invalid_type")
        if m.get("role") not in _ROLES:
            raise _bad(f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))}; got {m.get('role')!r}.",
                       f"messages[{i}].role")
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean.", "stream", "invalid_type")
    return ChatRequest(body=data, model=model, stream=stream, raw=raw, headers=headers)


class OpenAIStreamEncoder:
    __slots__ = ()

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def end(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, error: GatewayError) -> bytes:
        # The openai SDK raises APIError on a data event carrying an "error" object.
        return b"data: " + error.body() + b"\n\n"


_ENCODER = OpenAIStreamEncoder()


class OpenAIFormat:
    openai = True

    def encode_response(self, response: ChatResponse, request: ChatRequest) -> bytes:
        return response.body_bytes()

    def stream_encoder(self, request: ChatRequest) -> OpenAIStreamEncoder:
        return _ENCODER

    def error_body(self, error: GatewayError) -> bytes:
        return error.body()


OPENAI_FORMAT = OpenAIFormat()
