"""Reading an upstream's SSE stream into OpenAI chunks: the part every provider's reader shares."""

from __future__ import annotations

from typing import Any

from llmgw._core import SseParser
from llmgw.transport import UpstreamProtocolError

__all__ = ["SseStreamReader"]


class SseStreamReader:
    """Base of the stream translators for SSE upstreams: parses events, hands each to `on_event`,
    and reports a failure (a malformed or error event) on the call AFTER the one that returns the
    chunks read before it, so content that arrived ahead of a failure still reaches the client.

    Subclasses implement `on_event(event, out)` (append chunks to `out`; raise
    UpstreamProtocolError for a broken stream) and `on_end()` (the chunks due at the end; raise
    UpstreamProtocolError if the stream ended before the answer did).
    """

    __slots__ = ("_parser", "_upstream", "_failure")

    def __init__(self, upstream: str) -> None:
        self._parser = SseParser()
        self._upstream = upstream
        self._failure: Exception | None = None

    def on_event(self, event: Any, out: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def on_end(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    @property
    def pending_bytes(self) -> int:
        """Bytes held for the event not yet complete (the gateway bounds it)."""
        return self._parser.pending_bytes

    def broken(self, what: str) -> Exception:
        return UpstreamProtocolError(f"upstream {self._upstream!r} {what}")

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        if self._failure is not None:
            raise self._failure
        out: list[dict[str, Any]] = []
        try:
            for event in self._parser.feed(data):
                self.on_event(event, out)
        except UpstreamProtocolError as exc:
            self._failure = exc
            if not out:
                raise
        return out

    def finish(self) -> list[dict[str, Any]]:
        if self._failure is not None:
            raise self._failure
        self._parser.finish()
        return self.on_end()
