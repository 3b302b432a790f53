"""Anthropic's Messages API as an upstream (`provider: anthropic`).

Config (`upstreams.<name>`): `base_url` such as https://api.anthropic.com/v1, `api_key` (sent as
x-api-key), and `options`:
  anthropic_version   the anthropic-version header (default "2023-06-01")
  default_max_tokens  max_tokens when the client sets none; Anthropic requires one (default 4096)
  drop_params         true: drop parameters Anthropic cannot honour instead of answering 400
Extra headers such as anthropic-beta go in the upstream's `headers:`.
Translation rules are in llmgw.translate.anthropic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from llmgw.errors import GatewayError
from llmgw.providers.base import (
    ErrorClass,
    UpstreamRequest,
    classify_openai_style_error,
    registry,
    retry_after_seconds,
)
from llmgw.translate.anthropic import TranslationError, anthropic_to_openai_response, openai_to_anthropic_request
from llmgw.translate.anthropic_stream import AnthropicStreamError, AnthropicToOpenAIStream
from llmgw.streams import SseStreamReader
from llmgw.transport import UpstreamProtocolError

if TYPE_CHECKING:
    from llmgw.config import UpstreamConfig

__all__ = ["AnthropicAdapter", "AnthropicStreamReader"]

DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
# Anthropic says "prompt is too long: N tokens > M maximum"; the others cover its max_tokens form.
_CONTEXT_HINTS = ("prompt is too long", "exceed context limit", "context window", "too many tokens")


@registry.register
class AnthropicAdapter:
    name: ClassVar[str] = "anthropic"
    passthrough: ClassVar[bool] = False

    def __init__(self, upstream: UpstreamConfig) -> None:
        self.upstream = upstream
        opts = upstream.options
        self.default_max_tokens = int(opts.get("default_max_tokens", DEFAULT_MAX_TOKENS))
        self.drop_params = bool(opts.get("drop_params", False))
        headers = [("content-type", "application/json"),
                   ("anthropic-version", str(opts.get("anthropic_version", DEFAULT_VERSION)))]
        if upstream.api_key:
            headers.append(("x-api-key", upstream.api_key))
        headers.extend(upstream.headers)
        self._headers = headers

    def chat_request(self, body: dict[str, Any], model: str, stream: bool, raw: bytes | None) -> UpstreamRequest:
        try:
            out = openai_to_anthropic_request(body, model, stream=stream, default_max_tokens=self.default_max_tokens,
                                              drop_params=self.drop_params)
        except TranslationError as exc:
            raise GatewayError(400, exc.message, param=exc.param, code=exc.code) from None
        return UpstreamRequest("POST", "/messages", self._headers, orjson.dumps(out))

    def chat_response(self, body: bytes, model: str) -> dict[str, Any]:
        try:
            return anthropic_to_openai_response(orjson.loads(body), model)
        except (orjson.JSONDecodeError, ValueError, AttributeError, TypeError) as exc:
            raise UpstreamProtocolError(f"upstream {self.upstream.name!r} sent an invalid message: {exc}") from None

    def stream_translator(self, model: str, *, include_usage: bool = False) -> AnthropicStreamReader:
        return AnthropicStreamReader(self.upstream.name, model, include_usage)

    def classify_error(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> ErrorClass:
        type_ = message = None
        try:
            err = orjson.loads(body).get("error")
            if isinstance(err, dict):
                type_, message = err.get("type"), err.get("message")
        except (orjson.JSONDecodeError, AttributeError):
            pass
        type_ = type_ if isinstance(type_, str) else None
        message = message if isinstance(message, str) else None
        retry_after = retry_after_seconds(headers)
        if status == 529 or type_ == "overloaded_error":
            # Anthropic's "overloaded" is a temporary capacity problem: retryable, a 503 to clients.
            return ErrorClass(True, True, False, 503, f"upstream {self.upstream.name!r} is overloaded",
                              "upstream_error", "upstream_overloaded", None, retry_after)
        if type_ in ("authentication_error", "permission_error"):
            status = 401 if type_ == "authentication_error" else 403
        code = "rate_limit_exceeded" if type_ == "rate_limit_error" else None
        if status == 413 or type_ == "request_too_large":
            code = "request_too_large"
        context = status in (400, 413) and any(h in (message or "").lower() for h in _CONTEXT_HINTS)
        return classify_openai_style_error(self.upstream.name, status, message, _openai_type(type_), code, None,
                                           retry_after, context_exceeded=context)


def _openai_type(anthropic_type: str | None) -> str | None:
    if anthropic_type in ("invalid_request_error", "rate_limit_error", "not_found_error", "request_too_large"):
        return "rate_limit_error" if anthropic_type == "rate_limit_error" else "invalid_request_error"
    return anthropic_type


class AnthropicStreamReader(SseStreamReader):
    """Anthropic SSE bytes → OpenAI chunk dicts (the adapter's StreamTranslator)."""

    __slots__ = ("_translator",)

    def __init__(self, upstream: str, model: str, include_usage: bool = False) -> None:
        super().__init__(upstream)
        self._translator = AnthropicToOpenAIStream(model, include_usage=include_usage)

    @property
    def done(self) -> bool:
        return self._translator.done

    def on_event(self, event: Any, out: list[dict[str, Any]]) -> None:
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise self.broken("sent a malformed stream event") from None
        if not isinstance(payload, dict):
            raise self.broken("sent a malformed stream event")
        try:
            out.extend(self._translator.event(event.event or payload.get("type", ""), payload))
        except AnthropicStreamError as exc:
            raise self.broken(f"failed mid-stream: {exc}") from None

    def on_end(self) -> list[dict[str, Any]]:
        try:
            return self._translator.finish()
        except AnthropicStreamError as exc:
            raise self.broken(str(exc)) from None
