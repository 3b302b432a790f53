"""Google Gemini API (`provider: gemini`): generateContent, streamGenerateContent?alt=sse and
batchEmbedContents, with the API key in the `x-goog-api-key` header (never in the URL, so it can
not leak into logs of URLs).

The translation itself lives in llmgw.translate.gemini (pure functions, tested on fixtures); this
module adds the HTTP side and the error classification.

Upstream options:
    drop_params: true         drop OpenAI parameters Gemini cannot express instead of answering 400
    native_json_schema: true  send response_format's JSON Schema as `responseJsonSchema` untouched
                              (newer Gemini models) instead of converting it to `responseSchema`
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import orjson

from llmgw.providers.base import (
    ErrorClass,
    UpstreamRequest,
    classify_openai_style_error,
    registry,
    retry_after_seconds,
)
from llmgw.transport import UpstreamProtocolError
from llmgw.translate.gemini import (
    gemini_embeddings_to_openai,
    gemini_to_openai_response,
    openai_to_gemini_embeddings,
    openai_to_gemini_request,
)
from llmgw.translate.gemini_stream import GeminiStreamTranslator

if TYPE_CHECKING:
    from llmgw.config import UpstreamConfig

__all__ = ["GeminiAdapter", "classify_gemini_error"]

# What Gemini says when the prompt is over the model's input limit (INVALID_ARGUMENT, HTTP 400):
# "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
_CONTEXT_HINTS = ("exceeds the maximum number of tokens", "input token count", "context window",
                  "too many tokens", "maximum context length")
_CREDENTIAL_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED",
                                 "API_KEY_IP_ADDRESS_BLOCKED", "ACCESS_TOKEN_EXPIRED", "SERVICE_DISABLED"})
_RETRY_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


def _options_flag(options: dict[str, Any], key: str) -> bool:
    return options.get(key) is True


@registry.register
class GeminiAdapter:
    name: ClassVar[str] = "gemini"
    passthrough: ClassVar[bool] = False
    default_base_url: ClassVar[str] = "https://generativelanguage.googleapis.com/v1beta"

    def __init__(self, upstream: UpstreamConfig) -> None:
        self.upstream = upstream
        headers = [("content-type", "application/json")]
        if upstream.api_key:
            headers.append(("x-goog-api-key", upstream.api_key))
        headers.extend(upstream.headers)
        self._headers = headers
        self._drop_params = _options_flag(upstream.options, "drop_params")
        self._native_json_schema = _options_flag(upstream.options, "native_json_schema")

    @staticmethod
    def check_options(options: dict[str, Any]) -> list[tuple[str, str, str]]:
        """Config-time validation of `options`: (key, problem, fix) for each problem."""
        return [(k, f"must be true or false, got {options[k]!r}", "Write true or false")
                for k in ("drop_params", "native_json_schema") if k in options and not isinstance(options[k], bool)]

    def _model_path(self, model: str, method: str) -> str:
        name = model.removeprefix("models/")
        return f"/models/{quote(name, safe='-._~@')}:{method}"

    def chat_request(self, body: dict[str, Any], model: str, stream: bool, raw: bytes | None) -> UpstreamRequest:
        payload = openai_to_gemini_request(body, provider=f"gemini (upstream {self.upstream.name!r})",
                                           drop_params=self._drop_params,
                                           native_json_schema=self._native_json_schema)
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return UpstreamRequest("POST", self._model_path(model, method), self._headers, orjson.dumps(payload))

    def _json(self, body: bytes) -> dict[str, Any]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(f"upstream {self.upstream.name!r} sent invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise UpstreamProtocolError(f"upstream {self.upstream.name!r} sent JSON that is not an object")
        return data

    def chat_response(self, body: bytes, model: str) -> dict[str, Any]:
        data = self._json(body)
        if not isinstance(data.get("candidates"), list) and not (data.get("promptFeedback") or {}).get("blockReason"):
            raise UpstreamProtocolError(f"upstream {self.upstream.name!r} sent a response without candidates")
        return gemini_to_openai_response(data, model)

    def stream_translator(self, model: str, *, include_usage: bool = False) -> GeminiStreamTranslator:
        # Gemini repeats usage in every event; it rides on the finish chunk either way.
        return GeminiStreamTranslator(self.upstream.name, model)

    def classify_error(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> ErrorClass:
        return classify_gemini_error(self.upstream.name, status, body, headers)

    # -- embeddings -----------------------------------------------------------------------------
    def embeddings_request(self, body: dict[str, Any], model: str) -> UpstreamRequest:
        payload = openai_to_gemini_embeddings(body, model.removeprefix("models/"))
        return UpstreamRequest("POST", self._model_path(model, "batchEmbedContents"), self._headers,
                               orjson.dumps(payload))

    def embeddings_response(self, body: bytes, model: str) -> dict[str, Any]:
        try:
            return gemini_embeddings_to_openai(self._json(body), model)
        except ValueError as exc:
            raise UpstreamProtocolError(f"upstream {self.upstream.name!r} sent an invalid embeddings response: {exc}") from None


def classify_gemini_error(upstream: str, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> ErrorClass:
    """Gemini's `{"error": {"code", "message", "status", "details"}}` as an ErrorClass.

    RESOURCE_EXHAUSTED 429 → retryable 429 (Retry-After, or the RetryInfo detail's retryDelay);
    UNAVAILABLE 503 / INTERNAL 500 / DEADLINE_EXCEEDED 504 → retryable upstream errors;
    INVALID_ARGUMENT 400 over the token limit → context_length_exceeded; other 400s → the client's;
    an invalid or unauthorised key (400 API_KEY_INVALID, 401, 403) → 502 naming no key;
    NOT_FOUND (the configured model) and FAILED_PRECONDITION (e.g. region not supported) → 502,
    the gateway's configuration and not the client's fault, so another target may be tried.
    """
    message: str | None = None
    status_name = ""
    details: list[Any] = []
    try:
        data: Any = orjson.loads(body)
        if isinstance(data, list) and data:  # the JSON-array stream form wraps errors in a list
            data = data[0]
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            message = err.get("message") if isinstance(err.get("message"), str) else None
            status_name = str(err.get("status") or "")
            details = err.get("details") if isinstance(err.get("details"), list) else []
    except orjson.JSONDecodeError:
        pass
    reasons = {d.get("reason") for d in details if isinstance(d, dict)}
    retry_after = retry_after_seconds(headers)
    if retry_after is None:
        for d in details:
            m = _RETRY_DELAY.match(str(d.get("retryDelay", ""))) if isinstance(d, dict) else None
            if m:
                retry_after = float(m.group(1))
    text = (message or "").lower()
    if reasons & _CREDENTIAL_REASONS or "api key not valid" in text or status_name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        status = 401 if status < 500 else status
    if status == 404 or status_name == "FAILED_PRECONDITION":
        return ErrorClass(False, True, False, 502,
                          f"upstream {upstream!r} cannot serve the configured model (HTTP {status} {status_name})"
                          + (f": {message}" if message else ""), "upstream_error", "upstream_model_unavailable")
    context = status in (400, 413) and any(h in text for h in _CONTEXT_HINTS)
    code = status_name.lower() if 400 <= status < 500 and status != 429 and status_name else None
    return classify_openai_style_error(upstream, status, message, None, code, None, retry_after,
                                       context_exceeded=context)
