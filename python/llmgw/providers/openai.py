"""OpenAI chat completions, and every server that speaks it (vLLM, TGI, Ollama, llama.cpp, ...).

Configured by base URL alone. The request and response bytes are forwarded untouched whenever
nothing had to change (the fast path); usage is read from the bytes as they pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from llmgw._core import SseParser
from llmgw.providers.base import (
    ErrorClass,
    UpstreamRequest,
    classify_openai_style_error,
    registry,
    retry_after_seconds,
)
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

    def chat_response(self, body: bytes, model: str) -> dict[str, Any]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(f"upstream {self.upstream.name!r} sent invalid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise UpstreamProtocolError(f"upstream {self.upstream.name!r} sent a response without choices")
        return data

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
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(f"upstream {self.upstream.name!r} sent invalid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise UpstreamProtocolError(f"upstream {self.upstream.name!r} sent an embeddings response without data")
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


class OpenAIStreamReader:
    """OpenAI SSE bytes → chunk dicts (used when chunks must be seen: plugins, other client formats).

    A broken or error event is reported on the call AFTER the one that returns the chunks that
    came before it in the same read, so no content that arrived before a failure is lost.
    """

    __slots__ = ("_parser", "_upstream", "_failure", "done")

    def __init__(self, upstream: str) -> None:
        self._parser = SseParser()
        self._upstream = upstream
        self._failure: UpstreamProtocolError | None = None
        self.done = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        if self._failure is not None:
            raise self._failure
        out = []
        for event in self._parser.feed(data):
            if event.data == "[DONE]":
                self.done = True
                continue
            try:
                chunk = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                self._failure = UpstreamProtocolError(f"upstream {self._upstream!r} sent a malformed stream event")
                break
            if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
                err = chunk["error"]
                msg = err.get("message") if isinstance(err, dict) else str(err)
                self._failure = UpstreamProtocolError(f"upstream {self._upstream!r} failed mid-stream: {msg}")
                break
            out.append(chunk)
        if self._failure is not None and not out:
            raise self._failure
        return out

    def finish(self) -> list[dict[str, Any]]:
        if self._failure is not None:
            raise self._failure
        self._parser.finish()
        if not self.done:
            raise UpstreamProtocolError(f"upstream {self._upstream!r} ended the stream before [DONE]")
        return []
