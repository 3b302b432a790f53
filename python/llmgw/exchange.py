"""What flows through the pipeline: the request, the response, and the per-request context.

The canonical format is OpenAI chat completions. `raw` fields hold the bytes as they arrived so
the gateway can forward them untouched when nothing changed them (see `ChatResponse.data`).
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from llmgw.config import ModelRoute

__all__ = ["ChatRequest", "ChatResponse", "RequestContext", "Usage", "next_request_id"]

_ids = itertools.count(1)
_id_prefix = f"{os.getpid():x}-{int(time.time()):x}-"


def next_request_id() -> str:
    # A counter, not uuid4: unique per process and ~10x cheaper on the hot path.
    return f"req-{_id_prefix}{next(_ids):x}"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int | None = None

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        return cls(p, c, int(usage.get("total_tokens") or p + c), cached)


@dataclass(slots=True)
class ChatRequest:
    """A chat-completions request in OpenAI's format.

    Plugins may change `body` in place or return a new ChatRequest; after any pre_request hook has
    run the gateway serializes `body` again instead of forwarding `raw`.
    """

    body: dict[str, Any]
    model: str
    stream: bool
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)  # client headers, lower-case names

    @property
    def include_usage(self) -> bool:
        opts = self.body.get("stream_options")
        return bool(isinstance(opts, dict) and opts.get("include_usage"))


class ChatResponse:
    """A chat completion in OpenAI's format (`chat.completion`).

    `data` parses `raw` on first access; once a plugin has looked at `data` the gateway serializes
    `data` (with any change made to it) instead of forwarding `raw`. For a streamed response the
    post_response hooks receive a summary: `streamed` is True, `data` holds the assembled text when
    a plugin asked for it (`RequestContext.collect_text`), and the stream itself cannot be changed.
    """

    __slots__ = ("raw", "_data", "status", "headers", "streamed", "usage", "finish_reason", "text")

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        *,
        raw: bytes | None = None,
        status: int = 200,
        headers: list[tuple[str, str]] | None = None,
        streamed: bool = False,
    ) -> None:
        self.raw = raw
        self._data = data
        self.status = status
        self.headers = headers or []
        self.streamed = streamed
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.text: str | None = None

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = orjson.loads(self.raw) if self.raw else {}
        return self._data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        self._data = value

    def body_bytes(self) -> bytes:
        if self._data is not None or self.raw is None:
            return orjson.dumps(self._data or {})
        return self.raw

    def __repr__(self) -> str:
        return f"ChatResponse(status={self.status}, streamed={self.streamed}, usage={self.usage})"


@dataclass(slots=True)
class RequestContext:
    """Per-request state shared by the pipeline and plugins (`metadata` is free for plugins)."""

    request_id: str
    started: float
    client: str = ""
    key_name: str | None = None
    route: ModelRoute | None = None
    usage: Usage | None = None
    collect_text: bool = False  # a plugin wants the streamed text in its post_response
    metadata: dict[str, Any] = field(default_factory=dict)
    response_headers: list[tuple[str, str]] = field(default_factory=list)
