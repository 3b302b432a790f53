"""In-flight coalescing: identical concurrent requests share one upstream call.

The first request with a key (the leader) goes upstream; a `Flight` records what it gets. Later
requests with the same key (followers) wait on the flight instead of calling the upstream:

- a follower that streams replays the leader's chunks from the first one and then follows them
  live (`chunks()`), whether it joined before the leader's first chunk or halfway through;
- a follower that does not stream waits for the complete answer (`wait()`).

The leader sets `ctx.keep_upstream`, so its client leaving does not cancel the call the others
wait on. If the leader fails before any chunk was shared, its followers go upstream themselves
(`wait()` / `started()` return None); if it fails after, a streaming follower's stream ends with
the same kind of error event the leader's client saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from llmgw.errors import GatewayError

__all__ = ["Flight"]


class Flight:
    __slots__ = ("leader", "chunks", "response", "failed", "done", "followers", "_event")

    def __init__(self, leader: Any) -> None:
        self.leader = leader  # the leading request's RequestContext
        self.chunks: list[dict[str, Any]] = []  # the leader's stream so far
        self.response: bytes | None = None  # the complete chat.completion, once it succeeded
        self.failed = False
        self.done = False
        self.followers = 0
        self._event = asyncio.Event()

    def _wake(self) -> None:
        # Wakes every waiter now (each Event.wait has its own future: one follower being
        # cancelled never cancels the others' wait).
        self._event.set()
        self._event.clear()

    def add_chunk(self, chunk: dict[str, Any]) -> None:
        self.chunks.append(chunk)
        if self.followers:
            self._wake()

    def finish(self, response: bytes) -> None:
        if not self.done:
            self.response, self.done = response, True
            self._wake()

    def fail(self) -> None:
        if not self.done:
            self.failed = self.done = True
            self._wake()

    async def wait(self) -> bytes | None:
        """The complete answer, or None if the leader failed."""
        while not self.done:
            await self._event.wait()
        return self.response

    async def started(self) -> bool:
        """Until the leader has something to share: True (chunks or the answer), False if it failed first."""
        while not self.done and not self.chunks:
            await self._event.wait()
        return bool(self.chunks) or self.response is not None

    async def chunks_from_start(self) -> AsyncIterator[dict[str, Any]]:
        """The leader's stream from its first chunk, live; raises GatewayError if it failed."""
        i = 0
        while True:
            while i < len(self.chunks):
                yield self.chunks[i]
                i += 1
            if self.done:
                if self.failed:
                    raise GatewayError(502, "The upstream stream this request shared was cut.", type="upstream_error",
                                       code="upstream_protocol_error")
                return
            await self._event.wait()
