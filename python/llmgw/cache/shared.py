"""Cache entries shared between workers (one SQLite file) and between replicas (Redis).

Every worker keeps its entries in its own `LocalStore` (the semantic index is in-process). A
`Replicator` carries what one worker stores to the others: the cache plugin calls `publish(entry)`
after storing an answer locally, and the replicator calls `apply("put", entry)` on every other
worker (and `apply("flush", namespace)` after a flush). Each event carries an origin id (pid and a
random token), so nothing a worker published is applied back to it; expired entries are never
applied. The caller flushes its own `LocalStore` itself: `flush` tells the others.

`SqliteReplicator` — the workers of one `llmgw serve --workers N`, no Redis. One SQLite file (WAL,
synchronous=NORMAL, busy timeout) holds a table of events. `publish` only serialises and queues;
a thread per worker owns the connection and, every `poll_interval`, writes what was queued (one
transaction per ≤ 512 entries) and reads the rows after the last one it saw, which a task on the
event loop decodes and applies: the loop never waits on SQLite and is not woken while nothing
happens. A worker that starts later first applies every live row (the snapshot); a file that
outlives the server keeps the cache across restarts. Any worker deletes expired rows now and
then; the oldest puts beyond `max_rows` go after each write, so the file stays bounded.

Measured (benches/bench_cache_shared.py; a shared 2-core VM, uvloop, tmpfs, 384-d vectors and
~1 KB answers; ranges over 3-4 runs while other work shared the machine):
  publish → applied on another worker (p50 / p99; a put waits for the writer's poll, then the
  reader's, so the worst case is two intervals):
      poll 0.05 s: 39-41 / 91-94 ms    0.1 s: 85-104 / 159-193 ms    0.25 s: 216-253 / 441-493 ms
  an idle poll: 0 µs on the event loop; 170-235 µs of CPU on the thread, mostly the wake-up
      itself on this VM (a bare Event.wait wake-up costs 76-94 µs; the SELECT, warm, 6 µs)
  publish() on the loop: 5-14 µs; writes: 27,000-60,000 entries/s (26,000 on an ext4 disk),
      4.1 KB per entry in the file; start() on 100k entries: 20-25 µs of loop CPU per entry
  `poll_interval` = 0.1 s: visible on every worker within ~0.2 s (5x inside the 1 s required)
      for ~2 ms of CPU per second per worker (0.2% of a core). 0.25 s meets 1 s with only 2x
      margin for a slow disk, a lock held by another worker, or a busy loop; 0.05 s doubles the
      cost for nothing a user would notice.

`RedisReplicator` — replicas on several machines. Redis is the shared exact cache: an entry is
`SET prefix e:<16 hex of sha256(namespace)>:<key hex>` with PX = its time to live, so `get` is
one GET and a namespace flush is SCAN + UNLINK on its prefix. Every new entry and every flush
also goes on the stream `prefix events` (XADD MAXLEN ~ stream_maxlen), which each replica tails
(XREAD BLOCK) to feed its local store and semantic index; a replica that starts later first
applies every live entry (SCAN, oldest first) from the stream id it noted before scanning.
Writes are fire-and-forget through a bounded queue (pipelined SET + XADD); `get` has a short
timeout and answers a miss when Redis is slow or down (then skips Redis for a second). The
reader reconnects with backoff; after an outage it takes a new snapshot if the stream no longer
holds events it missed (trimmed, or Redis lost its data). Failures are counted in `stats()` and
logged at most once a minute; a URL's password is never logged (host:port only).
  Measured (loopback redis-server, same runs): publish → applied on another replica p50
  1.1-1.3 ms, p99 5-10 ms; get() of a hit p50 111-170 µs, p99 242-336 µs (one run 4.1 ms), a
  bare redis-py GET beside it 97-141 / 212-306 µs (3.7 ms); 2,900-5,100 entries/s, 170-200 µs
  of CPU per entry across the publisher (~80-100) and each reader (~45: redis-py's pure-Python
  reply parser); the stream holds 3.3 KB per event (319 MiB at stream_maxlen 100,000).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

from llmgw.cache.store import Entry

__all__ = ["Apply", "RedisReplicator", "Replicator", "SharingUnavailable", "SqliteReplicator"]

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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    kind TEXT NOT NULL,             -- 'put' or 'flush'
    namespace TEXT,                 -- a flush of everything: NULL
    expires REAL,                   -- wall seconds; NULL: never
    at REAL NOT NULL,               -- when it was written (wall seconds): the lag figure
    data BLOB                       -- Entry.dumps() for a put
);
CREATE INDEX IF NOT EXISTS events_expires ON events (expires) WHERE expires IS NOT NULL;
"""
_VERSION = 1
_INSERT = "INSERT INTO events (origin, kind, namespace, expires, at, data) VALUES (?, ?, ?, ?, ?, ?)"
# Another worker's rows with their data; ours without (we only step over them). Expired puts are
# left out (they are checked again when applied: time passes between the read and the apply).
_SELECT = ("SELECT seq, origin, kind, namespace, at, CASE WHEN origin = ? THEN NULL ELSE data END "
           "FROM events WHERE seq > ? AND (kind = 'flush' OR expires IS NULL OR expires > ?) ORDER BY seq LIMIT ?")


class SqliteReplicator(Replicator):
    """The workers of one machine share entries through one SQLite file (see the module docstring).

    One thread per worker owns the connection: every `poll_interval` it writes what was
    published since (batches of `write_rows`, one transaction each) and reads the rows after the
    last one seen, handing them to the event loop, where a task decodes and applies them (the
    thread waits until they are applied: what is in flight stays bounded). A flush wakes it at once."""

    fetch_rows = 512  # rows per hand-off to the loop (a snapshot is applied in such chunks)
    write_rows = 512
    housekeeping_s = 30.0

    def __init__(self, path: str, *, poll_interval: float = 0.1, wall: Callable[[], float] = time.time,
                 max_rows: int = 200_000, queue_max: int = 10_000, busy_timeout: float = 5.0) -> None:
        super().__init__(wall=wall, queue_max=queue_max)
        self.path = str(path)
        self.poll_interval = poll_interval
        self.max_rows = max_rows
        self.busy_timeout = busy_timeout
        self._broken = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[tuple[str, Any]] | None = None  # from the thread, in order
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._consumed = threading.Event()
        self._stop = False
        # the thread's own
        self._db: sqlite3.Connection | None = None
        self._last = 0
        self._housekeep_at: float | None = None
        self._written = self._thread_failures = self._write_dropped = 0

    # -- the interface ---------------------------------------------------------------------------

    async def start(self, apply: Apply) -> None:
        """Open the file and apply every row in it (the snapshot); then the thread polls and a
        task applies what it reads, until `close()`."""
        self._apply = apply
        self._loop = asyncio.get_running_loop()
        self._inbox = asyncio.Queue()
        self._thread = threading.Thread(target=self._thread_main, name="llmgw-cache-sqlite", daemon=True)
        self._thread.start()
        while True:
            kind, payload = await self._inbox.get()
            if kind == "rows":
                await self._apply_rows(payload, snapshot=True)
            elif kind == "broken":
                self._disable(payload)
                return
            else:  # "ready": caught up
                break
        self._tail = self._loop.create_task(self._apply_loop(), name="llmgw-cache-share-apply")

    async def get(self, key: bytes, namespace: str) -> Entry | None:
        """None: entries in the file reach every worker's local store, which is where lookups go."""
        return None

    def stats(self) -> dict[str, int]:
        out = super().stats()
        out["written"] += self._written
        out["failures"] += self._thread_failures
        out["dropped"] += self._write_dropped
        out["disabled"] = int(self._broken)
        out["last_seq"] = self._last
        return out

    async def close(self) -> None:
        """Write what is queued (within the busy timeout) and stop the thread."""
        if self._closing:
            return
        self._closing = True
        await _cancel(self._tail)
        self._stop = True
        self._wake.set()
        deadline = time.monotonic() + self.busy_timeout + 1.0
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        self._drop_queue()

    # -- the loop's side -------------------------------------------------------------------------

    def _enabled(self) -> bool:
        return not self._broken

    def _queued(self, urgent: bool) -> None:
        if urgent:  # a flush; a put waits for the next poll (batched: no wake-up per entry)
            self._wake.set()

    def _disable(self, exc: BaseException) -> None:
        self._broken = True
        self.counts["failures"] += 1
        self._drop_queue()
        log.error("cache sharing between workers is off: the SQLite file %s cannot be used (%s); each worker "
                  "keeps its own cache. Remove or fix the file, or name another, and restart.",
                  self.path, _describe(exc))

    async def _apply_loop(self) -> None:
        assert self._inbox is not None
        while True:
            kind, payload = await self._inbox.get()
            if kind == "rows":
                try:
                    await self._apply_rows(payload, snapshot=False)
                except Exception as exc:  # a bug must not stop the sharing
                    self._consumed.set()
                    self.counts["failures"] += 1
                    self._note("tail", "cache sharing: applying rows from %s failed: %s", self.path,
                               _describe(exc), level=logging.ERROR)

    async def _apply_rows(self, rows: list[tuple[Any, ...]], *, snapshot: bool) -> None:
        """Decode and apply another worker's rows, in order; then let the thread read on."""
        for i, (seq, _origin, kind, namespace, at, data) in enumerate(rows):
            if kind == "flush":
                self._apply_flush(namespace)
                continue
            try:
                entry = Entry.loads(data)
            except Exception as exc:
                self.counts["failures"] += 1
                self._note("decode", "cache sharing: an unreadable entry in %s (seq %d): %s", self.path, seq,
                           _describe(exc))
                continue
            self._apply_put(entry, None if snapshot else at)
            if i % 128 == 127:
                await asyncio.sleep(0)  # a long backlog (a snapshot): requests go through between slices
        self._consumed.set()

    # -- the thread ------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            self._connect()
        except Exception as exc:  # sqlite3.Error: not a database, no such directory, read-only, ...
            self._post("broken", exc)
            return
        self._guarded(self._read)  # the snapshot
        self._post("ready", None)
        due = time.monotonic() + self.poll_interval
        while True:
            wait = due - time.monotonic()
            if wait > 0:
                self._wake.wait(wait)
            self._wake.clear()
            stopping = self._stop
            self._guarded(self._write)
            if stopping:
                break
            if time.monotonic() >= due:
                self._guarded(self._read)
                self._guarded(self._housekeep)
                due = time.monotonic() + self.poll_interval
        if self._db is not None:
            self._db.close()
            self._db = None

    def _guarded(self, step: Callable[[], None]) -> None:
        """The thread keeps going whatever a step raises (SQLite errors are handled inside)."""
        try:
            step()
        except Exception as exc:
            self._thread_failure(step.__name__.strip("_"), exc)

    def _post(self, kind: str, payload: Any) -> bool:
        assert self._loop is not None and self._inbox is not None
        try:
            self._loop.call_soon_threadsafe(self._inbox.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is closed
            self._stop = True
            return False
        return True

    def _read(self) -> None:
        """Hand every row after the last one seen to the loop, in chunks, each applied before the next."""
        while not self._stop:
            try:
                rows = self._connect().execute(_SELECT, (self.origin, self._last, self.wall(),
                                                         self.fetch_rows)).fetchall()
            except sqlite3.Error as exc:
                self._thread_failure("read", exc)
                return
            if not rows:
                return
            self._last = rows[-1][0]
            theirs = [r for r in rows if r[1] != self.origin]
            if theirs:
                self._consumed.clear()
                if not self._post("rows", theirs):
                    return
                while not self._consumed.wait(0.05):
                    if self._stop:
                        return
            if len(rows) < self.fetch_rows:
                return

    def _write(self) -> None:
        """Write the queue: puts in batches, a flush in its place (its result to the awaiting loop)."""
        queue = self._queue
        while queue:
            item = queue[0]
            if isinstance(item, _Flush):
                queue.popleft()
                try:
                    n, exc = self._flush_rows(item.namespace), None
                except sqlite3.Error as e:
                    self._thread_failure("flush", e)
                    n, exc = 0, SharingUnavailable(f"the SQLite file could not be written: {_describe(e)}")
                assert self._loop is not None
                try:
                    self._loop.call_soon_threadsafe(_settle, item.done, n, exc)
                except RuntimeError:
                    pass
                continue
            puts: list[_Put] = []
            while queue and len(puts) < self.write_rows and isinstance(queue[0], _Put):
                puts.append(queue.popleft())  # type: ignore[arg-type]
            try:
                self._insert(puts)
            except sqlite3.Error as exc:
                self._write_dropped += len(puts)
                self._thread_failure("write", exc)
            else:
                self._written += len(puts)

    def _thread_failure(self, what: str, exc: BaseException) -> None:
        self._thread_failures += 1
        self._note("sqlite_" + what, "cache sharing through %s: %s failed: %s", self.path, what, _describe(exc),
                   level=logging.ERROR)

    def _connect(self) -> sqlite3.Connection:
        """The thread's connection, opened (and the schema made) on first use."""
        if self._db is None:
            db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA journal_size_limit=67108864")  # the WAL shrinks back to 64 MB after a burst
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, _VERSION):
                    raise sqlite3.DatabaseError(f"schema version {version}, this gateway knows {_VERSION}")
                db.executescript(_SCHEMA)
                if version == 0:
                    db.execute(f"PRAGMA user_version={_VERSION}")
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def _insert(self, puts: list[_Put]) -> None:
        db = self._connect()
        at = self.wall()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_INSERT, [(self.origin, "put", p.entry.namespace, p.entry.expires, at, p.data)
                                     for p in puts])
            # Bounded: seq is dense, so keeping puts within max_rows of the newest keeps at most max_rows rows.
            db.execute("DELETE FROM events WHERE kind = 'put' AND seq <= (SELECT max(seq) FROM events) - ?",
                       (self.max_rows,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _flush_rows(self, namespace: str | None) -> int:
        db = self._connect()
        now = self.wall()
        db.execute("BEGIN IMMEDIATE")
        try:
            if namespace is None:
                removed = db.execute("DELETE FROM events WHERE kind = 'put'").rowcount
            else:
                removed = db.execute("DELETE FROM events WHERE kind = 'put' AND namespace = ?", (namespace,)).rowcount
            db.execute(_INSERT, (self.origin, "flush", namespace, now + _FLUSH_KEEP_S, now, None))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return removed

    def _housekeep(self) -> None:
        """Now and then, delete expired rows (any worker may; the index on `expires` makes it cheap)."""
        now = time.monotonic()
        if self._housekeep_at is None:  # workers started together spread their housekeeping out
            self._housekeep_at = now + random.uniform(0, self.housekeeping_s)
        if now < self._housekeep_at:
            return
        self._housekeep_at = now + self.housekeeping_s
        try:
            self._connect().execute("DELETE FROM events WHERE expires IS NOT NULL AND expires <= ?", (self.wall(),))
        except sqlite3.Error as exc:
            self._thread_failure("housekeeping", exc)


# ------------------------------------------------------------------------------------------------
# Several machines: Redis


def _stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _stream_events(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XREAD's events for one stream: RESP2 answers [[stream, events]], RESP3 {stream: [events]}."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [e for v in reply.values() for e in (v[0] if v else ())]
    return [e for _, events in reply for e in events]


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def redis_target(url: str) -> str:
    """Where `url` points, without its credentials: host:port (or the socket path)."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path or "?"
        return f"{parts.hostname or '?'}:{parts.port or 6379}"
    except ValueError:  # a malformed port: say nothing more about the URL
        return "?"


class RedisReplicator(Replicator):
    """Replicas share entries through Redis (see the module docstring)."""

    batch = 128

    def __init__(self, url: str, *, prefix: str = "llmgw:cache:", stream_maxlen: int = 100_000,
                 wall: Callable[[], float] = time.time, queue_max: int = 10_000, get_timeout: float = 0.05,
                 start_timeout: float = 3.0, block_ms: int = 2000) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        super().__init__(wall=wall, queue_max=queue_max)
        self.target = redis_target(url)
        self.prefix = prefix
        self.stream = prefix + "events"
        self.stream_maxlen = stream_maxlen
        self.get_timeout = get_timeout
        self.start_timeout = start_timeout
        self.block_ms = block_ms
        no_retry = Retry(NoBackoff(), 0)  # we retry (or not) ourselves: redis-py's default backs off seconds
        # Three pools: lookups on the request path (short timeouts), writes and scans, the blocking reader.
        self._lookups = redis.from_url(url, socket_timeout=max(get_timeout, 0.01), retry=no_retry,
                                       socket_connect_timeout=max(get_timeout, 0.01))
        self._client = redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0, retry=no_retry)
        self._reader = redis.from_url(url, socket_timeout=block_ms / 1000 + 2.0, socket_connect_timeout=1.0,
                                      retry=no_retry)
        self._last: tuple[int, int] | None = None  # the stream id read up to; None: no snapshot yet
        self._lookups_down_until = 0.0
        self._backoff = 0.0
        self._writing = False
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._origin_bytes = self.origin.encode()
        self.counts.update(dict.fromkeys(("get_hits", "get_misses", "get_errors", "get_skipped", "snapshots"), 0))

    def entry_key(self, namespace: str, key: bytes) -> str:
        return f"{self.prefix}e:{hashlib.sha256(namespace.encode()).hexdigest()[:16]}:{key.hex()}"

    def _namespace_match(self, namespace: str | None) -> str:
        if namespace is None:
            return _glob_escape(self.prefix + "e:") + "*"
        return _glob_escape(self.entry_key(namespace, b"")) + "*"

    # -- the interface ---------------------------------------------------------------------------

    async def start(self, apply: Apply) -> None:
        """Apply every live entry (bounded by `start_timeout`), then tail the stream in the
        background. If Redis cannot be reached in time the background task keeps trying and
        takes the snapshot when it gets through."""
        from redis.exceptions import RedisError

        self._apply = apply
        try:
            async with asyncio.timeout(self.start_timeout):
                await self._snapshot()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("start", exc)
        self._tail = asyncio.get_running_loop().create_task(self._tail_loop(), name="llmgw-cache-share-tail")

    async def get(self, key: bytes, namespace: str) -> Entry | None:
        """The shared entry for (`key`, `namespace`), or None: a miss, an expired entry, another
        namespace's entry, or Redis slow (> get_timeout) or down (counted in get_errors; then
        Redis is skipped for a second: get_skipped)."""
        from redis.exceptions import RedisError

        now = time.monotonic()
        if self._closing or now < self._lookups_down_until:
            self.counts["get_skipped"] += 1
            return None
        try:
            async with asyncio.timeout(self.get_timeout):
                data = await self._lookups.get(self.entry_key(namespace, key))
        except (RedisError, OSError, TimeoutError) as exc:
            self._lookups_down_until = time.monotonic() + 1.0
            self.counts["get_errors"] += 1
            self._note("get", "cache: a Redis lookup at %s failed: %s (answered as a miss)", self.target,
                       _describe(exc))
            return None
        if data is None:
            self.counts["get_misses"] += 1
            return None
        try:
            entry = Entry.loads(data)
        except Exception as exc:
            self.counts["failures"] += 1
            self._note("decode", "cache: an unreadable entry in Redis at %s: %s", self.target, _describe(exc))
            return None
        if entry.namespace != namespace or entry.key != key or \
                (entry.expires is not None and entry.expires <= self.wall()):
            self.counts["get_misses"] += 1
            return None
        self.counts["get_hits"] += 1
        return entry

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        await _cancel(self._tail)
        await self._drain(timeout=2.0)
        for client in (self._lookups, self._client, self._reader):
            try:
                await client.aclose()
            except Exception:
                pass

    # -- writing: a task drains the queue in order, puts pipelined -------------------------------

    def _queued(self, urgent: bool) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._writer is None and not self._closing:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="llmgw-cache-share-writer")

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                try:
                    await self._write_next()
                except Exception as exc:  # a bug must not stop sharing for the worker's lifetime
                    self.counts["failures"] += 1
                    self._note("writer", "cache sharing: the writer failed: %s", _describe(exc), level=logging.ERROR)
                    await self._pause_after_failure()

    async def _write_next(self) -> None:
        """Write what is at the head of the queue: one flush, or a batch of puts."""
        item = self._queue[0]
        if isinstance(item, _Flush):
            self._queue.popleft()
            try:
                n = await self._write_flush(item.namespace)
            except SharingUnavailable as exc:
                _settle(item.done, 0, exc)
                await self._pause_after_failure()
                return
            _settle(item.done, n, None)
            return
        puts: list[_Put] = []
        while self._queue and len(puts) < self.batch and isinstance(self._queue[0], _Put):
            puts.append(self._queue.popleft())  # type: ignore[arg-type]
        if not await self._write_puts(puts):
            await self._pause_after_failure()

    async def _drain(self, timeout: float) -> None:
        """Wait (at most `timeout`) for the queue and the batch in flight to be written; then stop
        the writer."""
        deadline = time.monotonic() + timeout
        while (self._queue or self._writing) and self._writer is not None and not self._writer.done() \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await _cancel(self._writer)
        self._writer = None
        self._drop_queue()

    async def _write_puts(self, puts: list[_Put]) -> bool:
        """SET + XADD each entry, in one pipeline; False if Redis failed (the batch is dropped)."""
        from redis.exceptions import RedisError

        pipe = self._client.pipeline(transaction=False)
        now = self.wall()
        n = 0
        for p in puts:
            expires = p.entry.expires
            px = None
            if expires is not None:
                px = int((expires - now) * 1000)
                if px <= 0:
                    self.counts["expired_skipped"] += 1
                    continue
            pipe.set(self.entry_key(p.entry.namespace, p.entry.key), p.data, px=px)
            pipe.xadd(self.stream, {"origin": self.origin, "kind": "put", "at": repr(now), "data": p.data},
                      maxlen=self.stream_maxlen, approximate=True)
            n += 1
        if not n:
            return True
        self._writing = True
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            self.counts["dropped"] += n
            self._failed("write", exc)
            return False
        finally:
            self._writing = False
        self._backoff = 0.0
        self.counts["written"] += n
        return True

    async def _write_flush(self, namespace: str | None) -> int:
        from redis.exceptions import RedisError

        removed = 0
        self._writing = True
        try:
            keys: list[bytes] = []
            async for k in self._client.scan_iter(match=self._namespace_match(namespace), count=1000):
                keys.append(k)
                if len(keys) >= 500:
                    removed += await self._client.unlink(*keys)
                    keys.clear()
            if keys:
                removed += await self._client.unlink(*keys)
            await self._client.xadd(self.stream, {"origin": self.origin, "kind": "flush", "at": repr(self.wall()),
                                                  "data": orjson.dumps({"ns": namespace})},
                                    maxlen=self.stream_maxlen, approximate=True)
        except (RedisError, OSError) as exc:
            self._failed("flush", exc)
            raise SharingUnavailable(f"Redis at {self.target} could not be reached: {_describe(exc)}") from None
        finally:
            self._writing = False
        return removed

    async def _pause_after_failure(self) -> None:
        self._backoff = min(max(self._backoff * 2, 0.1), 5.0)
        await asyncio.sleep(self._backoff * random.uniform(0.5, 1.0))

    def _failed(self, what: str, exc: BaseException) -> None:
        self.counts["failures"] += 1
        self._note(what, "cache sharing: Redis at %s: %s failed: %s", self.target, what, _describe(exc))

    # -- reading ---------------------------------------------------------------------------------

    async def _stream_position(self) -> tuple[tuple[int, int] | None, tuple[int, int]]:
        """(the stream's last id or None if there is no stream, the highest id trimmed away)."""
        from redis.exceptions import ResponseError

        try:
            info = await self._client.xinfo_stream(self.stream)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return None, (0, 0)
            raise
        deleted = info.get("max-deleted-entry-id") or b"0-0"
        return _stream_id(info["last-generated-id"]), _stream_id(deleted)

    async def _snapshot(self) -> None:
        """Note the stream's position, then apply every live entry, oldest first; the stream is
        read from the noted position (an entry stored meanwhile may arrive twice: harmless)."""
        position, _ = await self._stream_position()
        entries: list[Entry] = []
        batch: list[bytes] = []
        now = self.wall()

        async def load(keys: list[bytes]) -> None:
            for data in await self._client.mget(keys):
                if data is None:
                    continue
                try:
                    e = Entry.loads(data)
                except Exception as exc:
                    self.counts["failures"] += 1
                    self._note("decode", "cache: an unreadable entry in Redis at %s: %s", self.target, _describe(exc))
                    continue
                if e.expires is None or e.expires > now:
                    entries.append(e)
                else:
                    self.counts["expired_skipped"] += 1

        async for k in self._client.scan_iter(match=self._namespace_match(None), count=1000):
            batch.append(k)
            if len(batch) >= 500:
                await load(batch)
                batch = []
        if batch:
            await load(batch)
        entries.sort(key=lambda e: e.created)
        for i, e in enumerate(entries):
            self._apply_put(e, None)
            if i % 512 == 511:
                await asyncio.sleep(0)
        self._last = position or (0, 0)
        self.counts["snapshots"] += 1

    async def _resume(self) -> None:
        """After an error: take a new snapshot if events we have not read are gone (trimmed,
        or Redis lost its data), else go on from where we were."""
        if self._last is None:
            await self._snapshot()
            return
        position, deleted = await self._stream_position()
        if (position is None and self._last != (0, 0)) or (position is not None and position < self._last) \
                or deleted > self._last:
            await self._snapshot()

    async def _tail_loop(self) -> None:
        from redis.exceptions import RedisError

        failing = self._last is None
        delay = 0.1
        while True:
            try:
                if failing:
                    await self._resume()
                    failing = False
                    delay = 0.1
                assert self._last is not None
                last = f"{self._last[0]}-{self._last[1]}"
                reply = await self._reader.xread({self.stream: last}, count=self.batch, block=self.block_ms)
            except Exception as exc:  # Redis down, or anything else: never crash the worker; retry
                if not isinstance(exc, (RedisError, OSError, TimeoutError)):
                    self.counts["failures"] += 1
                    self._note("tail", "cache sharing: the Redis reader failed: %s", _describe(exc),
                               level=logging.ERROR)
                else:
                    self._failed("read", exc)
                failing = True
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 5.0)
                continue
            for event_id, fields in _stream_events(reply):
                self._last = _stream_id(event_id)
                self._receive(fields)

    def _receive(self, fields: dict[bytes, bytes]) -> None:
        if fields.get(b"origin") == self._origin_bytes:
            return
        try:
            kind = fields[b"kind"]
            at = float(fields[b"at"])
            if kind == b"flush":
                self._apply_flush(orjson.loads(fields[b"data"])["ns"])
                return
            entry = Entry.loads(fields[b"data"])
        except Exception as exc:
            self.counts["failures"] += 1
            self._note("decode", "cache: an unreadable event on %s at %s: %s", self.stream, self.target,
                       _describe(exc))
            return
        self._apply_put(entry, at)
