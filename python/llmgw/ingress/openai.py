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


# The largest output anyone may ask for: above every model's published output limit, below the
# values that would make a worst-case cost estimate (budgets, TPM) meaningless.
MAX_OUTPUT_TOKENS = 1_000_000
_CONTENT_REQUIRED = frozenset({"system", "developer", "user", "tool"})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(data: dict[str, Any], key: str, low: float, high: float) -> None:
    value = data.get(key)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _bad(f"'{key}' must be a number, got {type(value).__name__}.", key, "invalid_type")
    if not low <= value <= high:
        raise _bad(f"'{key}' must be between {low:g} and {high:g}, got {value}.", key)


def _check_content(i: int, m: dict[str, Any]) -> None:
    content = m.get("content")
    if content is None:
        if m.get("role") in _CONTENT_REQUIRED:
            raise _bad(f"messages[{i}].content is required for a {m.get('role')} message.",
                       f"messages[{i}].content", "missing_required_parameter")
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad(f"messages[{i}].content must be a string or an array of content parts, got "
                   f"{type(content).__name__}.", f"messages[{i}].content", "invalid_type")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _bad(f"messages[{i}].content[{j}] must be an object with a string 'type'.",
                       f"messages[{i}].content[{j}]", "invalid_type")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise _bad(f"messages[{i}].content[{j}].text must be a string.", f"messages[{i}].content[{j}].text",
                       "invalid_type")


def parse_chat_request(data: Any, raw: bytes | None, headers: Any) -> ChatRequest:
    """Validate what every backend needs and what the gateway itself relies on (message shapes,
    token limits for estimates and budgets, sampling values for cache rules); other fields pass
    through to the upstream to judge."""
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
        _check_content(i, m)
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean.", "stream", "invalid_type")
    for key in ("max_tokens", "max_completion_tokens"):
        value = data.get(key)
        if value is not None and (not _is_int(value) or not 1 <= value <= MAX_OUTPUT_TOKENS):
            raise _bad(f"'{key}' must be an integer from 1 to {MAX_OUTPUT_TOKENS}, got {value!r}.", key,
                       "invalid_type" if not _is_int(value) else "invalid_value")
    n = data.get("n")
    if n is not None and (not _is_int(n) or not 1 <= n <= 128):
        raise _bad(f"'n' must be an integer from 1 to 128, got {n!r}.", "n")
    _number(data, "temperature", 0, 2)
    _number(data, "top_p", 0, 1)
    opts = data.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise _bad("'stream_options' must be an object.", "stream_options", "invalid_type")
    tools = data.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("'tools' must be an array of tool objects.", "tools", "invalid_type")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
                raise _bad(f"tools[{i}] must be an object with a string 'type'.", f"tools[{i}]", "invalid_type")
            fn = tool.get("function")
            if tool["type"] == "function" and (not isinstance(fn, dict) or not isinstance(fn.get("name"), str)):
                raise _bad(f"tools[{i}].function must be an object with a string 'name'.", f"tools[{i}].function",
                           "invalid_type")
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

    def encode_response(self, response: ChatResponse, request: ChatRequest, keep_raw: bool = False) -> bytes:
        return response.body_bytes(keep_raw)

    def stream_encoder(self, request: ChatRequest) -> OpenAIStreamEncoder:
        return _ENCODER

    def error_body(self, error: GatewayError) -> bytes:
        return error.body()


OPENAI_FORMAT = OpenAIFormat()
