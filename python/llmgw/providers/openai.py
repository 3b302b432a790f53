"""OpenAI chat completions, and every server that speaks it (vLLM, TGI, Ollama, llama.cpp, ...).

Configured by base URL alone. The request and response bytes are forwarded untouched whenever
nothing had to change (the fast path); usage is read from the bytes as they pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from llmgw.providers.base import (
    ErrorClass,
    UpstreamRequest,
    classify_openai_style_error,
    registry,
    retry_after_seconds,
)
from llmgw.streams import SseStreamReader
from llmgw.transport import UpstreamProtocolError

if TYPE_CHECKING:
    from llmgw.config import UpstreamConfig

_CONTEXT_HINTS = ("maximum context length", "context_length_exceeded", "context window", "too many tokens")


@registry.register
class OpenAIAdapter:
    name: ClassVar[str] = "openai"
    passthrough: ClassVar[bool] = True

    # Phrases in an error's message/code/type that mean "the prompt is over the context window".
    context_hints: ClassVar[tuple[str, ...]] = _CONTEXT_HINTS

    def __init__(self, upstream: UpstreamConfig) -> None:
        self.upstream = upstream
        headers = [("content-type", "application/json")]
        headers.extend(self.auth_headers(upstream.api_key))
        headers.extend(upstream.headers)
        self._headers = headers

    def auth_headers(self, api_key: str | None) -> list[tuple[str, str]]:
        """How the key travels (subclasses change it); no header at all without a key."""
        return [("authorization", f"Bearer {api_key}")] if api_key else []

    def path_for(self, operation: str, model: str) -> str:
        """The request path of `operation` ("chat/completions", "embeddings") for `model`."""
        return "/" + operation

    def chat_request(self, body: dict[str, Any], model: str, stream: bool, raw: bytes | None) -> UpstreamRequest:
        if raw is None:
            if body.get("model") != model:
                body = {**body, "model": model}
            raw = orjson.dumps(body)
        return UpstreamRequest("POST", self.path_for("chat/completions", model), self._headers, raw)

    def _json_with_list(self, body: bytes, field: str, what: str) -> dict[str, Any]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(f"upstream {self.upstream.name!r} sent invalid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get(field), list):
            raise UpstreamProtocolError(f"upstream {self.upstream.name!r} sent {what} without {field}")
        return data

    def chat_response(self, body: bytes, model: str) -> dict[str, Any]:
        return self._json_with_list(body, "choices", "a response")

    def stream_translator(self, model: str, *, include_usage: bool = False) -> OpenAIStreamReader:
        # The client's stream_options went upstream with the request: usage comes as asked.
        return OpenAIStreamReader(self.upstream.name)

    def embeddings_request(self, body: dict[str, Any], model: str) -> UpstreamRequest:
        """An OpenAI embeddings request, forwarded with the upstream's model name."""
        if body.get("model") != model:
            body = {**body, "model": model}
        return UpstreamRequest("POST", self.path_for("embeddings", model), self._headers, orjson.dumps(body))

    def embeddings_response(self, body: bytes, model: str) -> dict[str, Any]:
        """The upstream's embeddings list, answered under the client's model name."""
        data = self._json_with_list(body, "data", "an embeddings response")
        data["model"] = model
        return data

    def classify_error(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> ErrorClass:
        message = type_ = code = param = None
        try:
            data = orjson.loads(body)
            err = data.get("error")
            if err is None and data.get("object") == "error":  # vLLM's ErrorResponse: the fields at top level
                err = data
            if isinstance(err, dict):
                message, type_, code, param = (err.get("message"), err.get("type"), err.get("code"), err.get("param"))
            elif isinstance(err, str):  # some compatible servers send {"error": "text"}
                message = err
        except (orjson.JSONDecodeError, AttributeError):
            pass
        code = str(code) if code is not None else None
        text = f"{message or ''} {code or ''} {type_ if isinstance(type_, str) else ''}".lower()
        context = status in (400, 413, 422) and any(h in text for h in self.context_hints)
        return classify_openai_style_error(
            self.upstream.name, status, message if isinstance(message, str) else None,
            type_ if isinstance(type_, str) else None, code, param if isinstance(param, str) else None,
            retry_after_seconds(headers), context_exceeded=context,
        )


class OpenAIStreamReader(SseStreamReader):
    """OpenAI SSE bytes → chunk dicts (used when chunks must be seen: plugins, other client formats)."""

    __slots__ = ("done",)

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.done = False

    def on_event(self, event: Any, out: list[dict[str, Any]]) -> None:
        if event.data == "[DONE]":
            self.done = True
            return
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise self.broken("sent a malformed stream event") from None
        if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
            err = chunk["error"]
            raise self.broken(f"failed mid-stream: {err.get('message') if isinstance(err, dict) else err}")
        out.append(chunk)

    def on_end(self) -> list[dict[str, Any]]:
        if not self.done:
            raise self.broken("ended the stream before [DONE]")
        return []
