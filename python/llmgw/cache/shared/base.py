"""The base every replicator shares: the interface the cache plugin calls, events, counts,
rate-limited logging (see the package docstring)."""


from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from llmgw.cache.store import Entry


__all__ = ["Apply", "Replicator", "SharingUnavailable"]

log = logging.getLogger("llmgw")

Apply = Callable[[str, Entry | str | None], None]
"""apply("put", entry) stores an entry another worker or replica made; apply("flush", namespace)
removes a namespace's entries (None: every entry)."""

_FLUSH_KEEP_S = 3600.0  # a flush event stays this long: a worker that polls later still sees it


class SharingUnavailable(Exception):
    """`flush` could not reach the shared storage (Redis down, the SQLite file locked or broken):
    other workers or replicas may still hold the namespace's entries."""


class _Put:
    __slots__ = ("entry", "data")

    def __init__(self, entry: Entry, data: bytes) -> None:
        self.entry, self.data = entry, data


class _Flush:
    __slots__ = ("namespace", "done")

    def __init__(self, namespace: str | None, done: asyncio.Future[int]) -> None:
        self.namespace, self.done = namespace, done


def _settle(done: asyncio.Future[int], result: int, exc: BaseException | None) -> None:
    if not done.done():
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)


class Replicator:
    """What the cache plugin calls (see the module docstring). The base keeps what both backends
    share: the origin id, the bounded queue of what to write (puts, and flushes after the puts
    queued before them), applying with counting, stats, logging at most once a minute."""

    def __init__(self, *, wall: Callable[[], float] = time.time, queue_max: int = 10_000) -> None:
        self.wall = wall
        self.origin = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.queue_max = queue_max
        self._queue: deque[_Put | _Flush] = deque()
        self._tail: asyncio.Task[None] | None = None
        self._apply: Apply | None = None
        self._closing = False
        self._logged: dict[str, tuple[float, int]] = {}
        self.counts: dict[str, int] = dict.fromkeys(
            ("published", "written", "dropped", "applied", "flushes_applied", "expired_skipped", "apply_errors",
             "failures", "lag_ms_last"), 0)

    # -- the interface ---------------------------------------------------------------------------

    async def start(self, apply: Apply) -> None:
        raise NotImplementedError

    def publish(self, entry: Entry) -> None:
        """Queue `entry` for the others; never blocks, never raises (a full queue drops it, counted)."""
        try:
            if self._closing or not self._enabled():
                return
            if entry.expires is not None and entry.expires <= self.wall():
                self.counts["expired_skipped"] += 1
                return
            if len(self._queue) >= self.queue_max:
                self.counts["dropped"] += 1
                self._note("queue_full", "cache sharing: the publish queue is full (%d); entries are not shared",
                           self.queue_max)
                return
            self._queue.append(_Put(entry, entry.dumps()))
            self.counts["published"] += 1
            self._queued(False)
        except Exception as exc:  # never the request's problem
            self.counts["failures"] += 1
            self._note("publish", "cache sharing: publish failed: %s", _describe(exc))

    async def flush(self, namespace: str | None) -> int:
        """Remove `namespace`'s entries (None: all) from the shared storage and tell every other
        worker or replica; how many shared entries were removed. Puts published before it are
        written first, so they are flushed too. Raises `SharingUnavailable` when the shared
        storage cannot be reached."""
        if not self._enabled():
            return 0
        if self._closing:
            raise SharingUnavailable("the replicator is closed")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Flush(namespace, done))
        self._queued(True)
        return await done

    async def get(self, key: bytes, namespace: str) -> Entry | None:
        return None

    def stats(self) -> dict[str, int]:
        out = dict(self.counts)
        out["queued"] = len(self._queue)
        return out

    async def close(self) -> None:
        raise NotImplementedError

    # -- for the backends ------------------------------------------------------------------------

    def _enabled(self) -> bool:
        return True

    def _queued(self, urgent: bool) -> None:
        """Something was queued (`urgent`: a flush, someone awaits it)."""

    def _drop_queue(self) -> None:
        """Closing: what was not written is dropped (counted); a flush still queued fails."""
        self.counts["dropped"] += sum(isinstance(i, _Put) for i in self._queue)
        for item in self._queue:
            if isinstance(item, _Flush):
                _settle(item.done, 0, SharingUnavailable("closed before the flush was written"))
        self._queue.clear()

    def _apply_put(self, entry: Entry, at: float | None) -> None:
        if entry.expires is not None and entry.expires <= self.wall():
            self.counts["expired_skipped"] += 1
            return
        if self._apply is None:
            return
        try:
            self._apply("put", entry)
        except Exception as exc:
            self.counts["apply_errors"] += 1
            self._note("apply", "cache sharing: applying an entry failed: %s", _describe(exc))
            return
        self.counts["applied"] += 1
        if at is not None:
            self.counts["lag_ms_last"] = max(int((self.wall() - at) * 1000), 0)

    def _apply_flush(self, namespace: str | None) -> None:
        if self._apply is None:
            return
        try:
            self._apply("flush", namespace)
        except Exception as exc:
            self.counts["apply_errors"] += 1
            self._note("apply", "cache sharing: applying a flush failed: %s", _describe(exc))
            return
        self.counts["flushes_applied"] += 1

    def _note(self, what: str, message: str, *args: Any, level: int = logging.WARNING) -> None:
        """Log `message` at most once a minute per `what`, with how often it happened since."""
        now = time.monotonic()
        last, count = self._logged.get(what, (-1e9, 0))
        if now - last >= 60.0:
            suffix = f" (and {count} more times in the last minute)" if count else ""
            log.log(level, message + suffix, *args)
            self._logged[what] = (now, 0)
        else:
            self._logged[what] = (last, count + 1)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait for it to end (without swallowing a cancellation of the caller)."""
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait([task])


# ------------------------------------------------------------------------------------------------
# One machine: a SQLite file
