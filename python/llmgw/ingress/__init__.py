"""What clients speak: one module per client dialect (request validation and answer encoding).

A dialect turns a client's request into the canonical ChatRequest (OpenAI's format) and writes
canonical answers, chunks and errors back in the client's own format (`ClientFormat`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from llmgw.errors import GatewayError
    from llmgw.exchange import ChatRequest, ChatResponse

__all__ = ["ClientFormat", "StreamEncoder"]


class StreamEncoder(Protocol):
    """Writes one response's canonical chunks in the client's stream format."""

    def chunk(self, chunk: dict[str, Any]) -> bytes: ...

    def end(self) -> bytes: ...

    def error(self, error: GatewayError) -> bytes: ...


class ClientFormat(Protocol):
    """The API dialect the client speaks (OpenAI's or Anthropic's): how to encode answers for it."""

    #: True when the dialect is OpenAI chat completions, so upstream OpenAI bytes pass untouched.
    openai: bool

    def encode_response(self, response: ChatResponse, request: ChatRequest, keep_raw: bool = False) -> bytes: ...

    def stream_encoder(self, request: ChatRequest) -> StreamEncoder: ...

    def error_body(self, error: GatewayError) -> bytes: ...
