"""The provider adapter contract and the registry of adapters by name.

The gateway's canonical format is OpenAI's chat-completions JSON (as dicts). An adapter turns a
canonical request into its provider's HTTP request, the provider's responses and stream events
back into canonical ones, and classifies the provider's errors. Adapters hold no per-request
state; a stream translator holds the state of one stream.

Adding a provider: write `providers/<name>.py` with a class implementing `ProviderAdapter`,
decorate it with `@registry.register`, import the module in `providers/__init__.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from llmgw.config import UpstreamConfig

__all__ = [
    "ErrorClass",
    "ProviderAdapter",
    "StreamTranslator",
    "UpstreamRequest",
    "registry",
    "classify_openai_style_error",
    "optional_part",
    "retry_after_seconds",
]


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    path: str  # appended to the upstream's base URL path; may carry a query string
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class ErrorClass:
    """What an upstream error means, and what the client is told.

    retryable: the same target may succeed if asked again (429, 5xx, timeouts).
    fallback: another target may succeed (everything retryable, plus a context-length error, which a
        larger-context model can serve).
    client_fault: the request itself is wrong; the client's status and message are passed through.
    """

    retryable: bool
    fallback: bool
    client_fault: bool
    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None


class StreamTranslator(Protocol):
    """State of one upstream stream being turned into OpenAI `chat.completion.chunk` dicts."""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Chunks completed by these upstream bytes (which may split events anywhere)."""
        ...

    def finish(self) -> list[dict[str, Any]]:
        """The upstream stream ended; raises UpstreamProtocolError if it ended mid-answer."""
        ...


class ProviderAdapter(Protocol):
    name: ClassVar[str]
    # True when the provider speaks OpenAI chat completions natively: the gateway may then forward
    # request and response bytes untouched (the fast path).
    passthrough: ClassVar[bool]

    def __init__(self, upstream: UpstreamConfig) -> None: ...

    def chat_request(self, body: dict[str, Any], model: str, stream: bool, raw: bytes | None) -> UpstreamRequest:
        """The upstream request for a canonical chat request. `raw` is the client's body bytes when
        they may be forwarded as they are (nothing changed them and the model name is the same)."""
        ...

    def chat_response(self, body: bytes, model: str) -> dict[str, Any]:
        """A successful upstream response body as a canonical `chat.completion` dict."""
        ...

    def stream_translator(self, model: str, *, include_usage: bool = False) -> StreamTranslator:
        """A translator for one streamed response (not used when `passthrough`). `include_usage` is
        the client's `stream_options.include_usage`: send usage as OpenAI does (a last chunk with
        empty choices) when True; usage may still ride on the finish chunk when False."""
        ...

    def classify_error(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> ErrorClass:
        """What an upstream error status + body means (see ErrorClass)."""
        ...

    # Optional parts: an adapter may leave them out (or set them to None); `optional_part` reads them.
    #
    # default_base_url: ClassVar[str]
    #     The base URL used when the upstream's config has no base_url (e.g. a self-hosted server's
    #     default port, or a public API's endpoint). Without it, base_url is required.
    #
    # @staticmethod
    # def check_options(options: dict[str, Any]) -> list[tuple[str, str, str]]:
    #     Config-time validation of the upstream's `options`: (key, problem, fix) per problem, so
    #     `llmgw check-config` and start-up report them with the file and line.
    #
    # def embeddings_request(self, body: dict[str, Any], model: str) -> UpstreamRequest:
    #     The upstream request for an OpenAI embeddings body (`model` is the upstream's name).
    #
    # def embeddings_response(self, body: bytes, model: str) -> dict[str, Any]:
    #     A successful upstream embeddings body as an OpenAI embeddings list (float vectors or
    #     base64 strings), answered under `model` (the client's name). Raises
    #     UpstreamProtocolError on a malformed body.
    #     An adapter without embeddings has neither method; POST /v1/embeddings then answers 400.


def optional_part(adapter: Any, name: str) -> Any:
    """An optional adapter attribute (see the end of ProviderAdapter), or None when absent."""
    return getattr(adapter, name, None)


class _Registry:
    def __init__(self) -> None:
        self._adapters: dict[str, type[ProviderAdapter]] = {}

    def register(self, cls: type[ProviderAdapter]) -> type[ProviderAdapter]:
        if cls.name in self._adapters and self._adapters[cls.name] is not cls:
            raise ValueError(f"provider {cls.name!r} is already registered by {self._adapters[cls.name]!r}")
        self._adapters[cls.name] = cls
        return cls

    def get(self, name: str) -> type[ProviderAdapter]:
        try:
            return self._adapters[name]
        except KeyError:
            raise KeyError(f"unknown provider {name!r}; known: {', '.join(sorted(self._adapters))}") from None

    def names(self) -> list[str]:
        return sorted(self._adapters)


registry = _Registry()


def retry_after_seconds(headers: list[tuple[bytes, bytes]]) -> float | None:
    """Retry-After (delta-seconds form) or OpenAI's retry-after-ms, in seconds."""
    for k, v in headers:
        if k == b"retry-after-ms":
            try:
                return max(float(v) / 1000.0, 0.0)
            except ValueError:
                pass
    for k, v in headers:
        if k == b"retry-after":
            try:
                return max(float(v), 0.0)
            except ValueError:
                return None  # an HTTP-date; rare from LLM APIs, not worth parsing here
    return None


def classify_openai_style_error(
    upstream: str, status: int, message: str | None, type_: str | None, code: str | None,
    param: str | None, retry_after: float | None, *, context_exceeded: bool = False,
) -> ErrorClass:
    """The shared classification for providers whose errors carry status + message + code.

    Credentials problems upstream (401/403) are the gateway's, not the client's: they become 502
    without the upstream's message (which may echo part of the key).
    """
    if context_exceeded:
        return ErrorClass(False, True, True, 400, message or "the request exceeds the model's context window",
                          "invalid_request_error", "context_length_exceeded", param or "messages")
    if status in (401, 403):
        return ErrorClass(False, True, False, 502, f"upstream {upstream!r} rejected the gateway's credentials",
                          "upstream_error", "upstream_auth_failed")
    if status == 429:
        return ErrorClass(True, True, False, 429, message or f"upstream {upstream!r} is rate limiting",
                          type_ or "rate_limit_error", code or "rate_limit_exceeded", None, retry_after)
    if status in (408, 409) or status >= 500:
        out = 503 if status == 503 else (504 if status in (408, 504) else 502)
        return ErrorClass(True, True, False, out,
                          f"upstream {upstream!r} failed with HTTP {status}" + (f": {message}" if message else ""),
                          "upstream_error", code or f"upstream_http_{status}", None, retry_after)
    if 400 <= status < 500:
        return ErrorClass(False, False, True, status, message or f"upstream {upstream!r} rejected the request",
                          type_ or "invalid_request_error", code, param)
    return ErrorClass(False, True, False, 502, f"upstream {upstream!r} answered HTTP {status}", "upstream_error",
                      f"upstream_http_{status}")
