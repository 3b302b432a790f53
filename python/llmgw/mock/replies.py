"""What a handler returns: a whole body, or a stream of pre-rendered frames.

Streams are split into prelude / content chunks / epilogue so faults can count *content* chunks
("cut after K chunks") the same way in every wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

JSON = "application/json"
EVENT_STREAM = "text/event-stream"


@dataclass(slots=True)
class Request:
    """One parsed HTTP request."""

    method: str
    path: str
    query_string: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    keep_alive: bool = True


@dataclass(slots=True)
class FullReply:
    """A response with a Content-Length body."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class StreamReply:
    """A chunked response: prelude frames, then one frame per content chunk, then epilogue."""

    status: int
    prelude: list[bytes]
    chunks: list[bytes]
    epilogue: list[bytes]
    content_type: str = EVENT_STREAM
    headers: list[tuple[str, str]] = field(default_factory=list)


Reply = FullReply | StreamReply


class ClientError(Exception):
    """The request is invalid; the wire format renders it as its own 4xx error body."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def json_reply(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> FullReply:
    """Serialise ``payload`` with orjson into a JSON reply."""
    return FullReply(status, orjson.dumps(payload), JSON, headers or [])


def sse_data(payload: Any) -> bytes:
    """One unnamed SSE event (OpenAI style)."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_event(name: str, payload: Any) -> bytes:
    """One named SSE event whose data repeats the name in ``type`` (Anthropic style)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class ContextExceeded(Exception):
    """The prompt is over the (configured or forced) context window."""

    def __init__(self, prompt_tokens: int, limit: int) -> None:
        super().__init__(f"{prompt_tokens} tokens > {limit}")
        self.prompt_tokens = prompt_tokens
        self.limit = limit


@dataclass(slots=True)
class Call:
    """Everything a wire-format handler needs for one request."""

    request: Request
    body: Any
    options: Any  # MockOptions (kept untyped here to avoid an import cycle)
    params: dict[str, str]
    serial: int
    now: int

    def check_context(self, prompt_tokens: int, default_limit: int) -> None:
        """Raise ContextExceeded when forced, or when over ``options.context_tokens``."""
        limit = self.options.context_tokens
        if self.options.context_exceeded:
            limit = limit or default_limit
            raise ContextExceeded(max(prompt_tokens, limit + prompt_tokens), limit)
        if limit and prompt_tokens > limit:
            raise ContextExceeded(prompt_tokens, limit)


HeaderMap = Mapping[str, str]
