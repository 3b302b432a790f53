"""Cache entries shared between workers (a SQLite file) and replicas (Redis): llmgw/cache/shared.py.

Each "worker" here is what the cache plugin is to a replicator: a real LocalStore that entries
from the others are applied to, publishing what it stores itself. Real SQLite files in tmp_path,
the suite's real redis-server, and one test with two OS processes on one file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from llmgw.cache.shared import RedisReplicator, Replicator, SharingUnavailable, SqliteReplicator
from llmgw.cache.store import Entry, LocalStore
from support import free_port

DIM = 384
_rng = np.random.default_rng(7)


def entry(namespace: str = "a", *, key: bytes | None = None, text: str = "what is the capital of France?",
          expires: float | None = None, created: float | None = None, vector: bool = True) -> Entry:
    return Entry(key=key or os.urandom(32), namespace=namespace, group="gpt-4o", scope="scope-1", text=text,
                 vector=_rng.standard_normal(DIM).astype(np.float32) if vector else None,
                 response=b'{"id":"chatcmpl-1","object":"chat.completion","choices":[]}', prompt_tokens=12,
                 completion_tokens=7, cost_usd=0.00042, created=created if created is not None else time.time(),
                 expires=expires)


class Worker:
    """One worker's cache: a LocalStore, its replicator, and what was applied to it."""

    def __init__(self, replicator: Replicator, wall: Callable[[], float] = time.time) -> None:
        self.replicator = replicator
        self.store = LocalStore(max_entries=10_000, max_bytes=256 << 20, wall=wall)
        self.applied: list[tuple[str, object]] = []

    def apply(self, kind: str, payload: object) -> None:
        self.applied.append((kind, payload))
        if kind == "put":
            assert isinstance(payload, Entry)
            self.store.put(payload)
        else:
            self.store.flush(payload)  # type: ignore[arg-type]

    @property
    def puts(self) -> list[Entry]:
        return [p for k, p in self.applied if k == "put"]  # type: ignore[misc]

    async def start(self) -> Worker:
        await self.replicator.start(self.apply)
        return self

    def answer(self, e: Entry) -> Entry:
        """What the plugin does after an upstream answer: store locally, publish."""
        self.store.put(e)
        self.replicator.publish(e)
        return e

    async def flush(self, namespace: str | None) -> int:
        self.store.flush(namespace)
        return await self.replicator.flush(namespace)

    def has(self, e: Entry) -> bool:
        return self.store.get(e.key, e.namespace) is not None


async def eventually(check: Callable[[], bool], timeout: float = 1.0) -> float:
    """Seconds until `check()` holds; fails after `timeout`."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - t0


async def written(r: Replicator, n: int) -> None:
    await eventually(lambda: r.stats()["written"] >= n and r.stats()["queued"] == 0, 2.0)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------------
# One machine: workers on one SQLite file


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[Callable]:
    made: list[Worker] = []

    async def make(path: Path | None = None, **kw: object) -> Worker:
        replicator = SqliteReplicator(str(path or tmp_path / "cache.db"), **kw)  # type: ignore[arg-type]
        w = Worker(replicator, kw.get("wall", time.time))  # type: ignore[arg-type]
        made.append(w)
        return await w.start()

    yield make
    for w in made:
        await w.replicator.close()


async def test_an_answer_one_worker_stores_is_a_hit_on_another_within_a_second(workers) -> None:
    a, b = await workers(), await workers()
    e = a.answer(entry())
    took = await eventually(lambda: b.has(e), 1.0)
    assert took < 1.0
    got = b.store.get(e.key, "a")
    assert got is not None and got.response == e.response and got.cost_usd == e.cost_usd
    # the semantic layer too: the vector reached B's similarity index
    assert [c.key for _, c in b.store.candidates("a", "scope-1", e.vector, 0.99)] == [e.key]

    back = b.answer(entry(text="and of Spain?"))
    await eventually(lambda: a.has(back), 1.0)
    await asyncio.sleep(0.3)  # a few more polls on both sides
    assert [p.key for p in a.puts] == [back.key]  # never its own entry back
    assert [p.key for p in b.puts] == [e.key]
    assert a.replicator.stats()["applied"] == 1 and b.replicator.stats()["lag_ms_last"] < 1000


async def test_a_worker_started_later_gets_the_live_entries_in_order(workers) -> None:
    clock = Clock()
    a = await workers(wall=clock)
    soon = a.answer(entry(text="soon", expires=clock.now + 10))
    later = a.answer(entry(text="later", expires=clock.now + 100))
    never = a.answer(entry(text="never"))
    await written(a.replicator, 3)

    clock.now += 50  # `soon` has expired
    c = await workers(wall=clock)
    assert [p.text for p in c.puts] == ["later", "never"]  # snapshot applied before start() returned
    assert not c.has(soon) and c.has(later) and c.has(never)
    assert c.replicator.stats()["expired_skipped"] == 0  # left out by the query, not decoded


async def test_a_flush_of_one_namespace_removes_it_everywhere_and_nothing_else(workers, tmp_path) -> None:
    a, b = await workers(), await workers()
    a1, a2, b1 = a.answer(entry("a")), a.answer(entry("a")), a.answer(entry("b"))
    await eventually(lambda: b.has(a1) and b.has(a2) and b.has(b1))

    assert await a.flush("a") == 2  # rows removed from the file
    await eventually(lambda: not b.has(a1) and not b.has(a2), 1.0)
    assert b.has(b1) and a.has(b1) and not a.has(a1)
    assert b.applied[-1] == ("flush", "a")

    c = await workers()  # a worker started after the flush never sees a's entries
    assert [p.key for p in c.puts] == [b1.key]

    assert await b.flush(None) == 1
    await eventually(lambda: not a.has(b1) and not c.has(b1), 1.0)


async def test_entries_survive_a_restart_of_every_worker(workers, tmp_path) -> None:
    path = tmp_path / "kept.db"
    a = await workers(path)
    e = a.answer(entry())
    await a.replicator.close()  # the last write goes out on close

    again = await workers(path)  # a new process: another origin
    assert again.has(e) and again.store.get(e.key, "a").text == e.text  # type: ignore[union-attr]


async def test_a_puts_written_before_a_flush_are_flushed_too(workers) -> None:
    a, b = await workers(), await workers()
    e = a.answer(entry("a"))
    assert await a.replicator.flush("a") == 1  # the queued put reached the file first
    await asyncio.sleep(0.3)
    assert not b.has(e)


async def test_the_file_is_bounded_to_max_rows_keeping_the_newest(workers, tmp_path) -> None:
    a = await workers(max_rows=50)
    made = [a.answer(entry(text=f"q{i}", vector=False)) for i in range(120)]
    await written(a.replicator, 120)
    (puts,) = sqlite3.connect(tmp_path / "cache.db").execute(
        "SELECT count(*) FROM events WHERE kind = 'put'").fetchone()
    assert puts <= 50
    late = await workers()
    assert [p.text for p in late.puts] == [e.text for e in made[-puts:]]


async def test_expired_rows_are_deleted_from_the_file(workers, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(SqliteReplicator, "housekeeping_s", 0.0)  # at every poll
    clock = Clock()
    a = await workers(wall=clock, poll_interval=0.02)
    a.answer(entry(expires=clock.now + 5))
    a.answer(entry())
    await written(a.replicator, 2)
    clock.now += 10

    def rows() -> int:
        with sqlite3.connect(tmp_path / "cache.db") as db:
            return db.execute("SELECT count(*) FROM events").fetchone()[0]

    await eventually(lambda: rows() == 1, 1.0)


@pytest.mark.parametrize("damage", ["garbage", "unreachable"])
async def test_a_broken_file_is_logged_and_the_worker_keeps_serving(workers, tmp_path, caplog, damage) -> None:
    caplog.set_level(logging.ERROR, logger="llmgw")
    if damage == "garbage":
        path = tmp_path / "cache.db"
        path.write_bytes(b"this is not a SQLite database, it was overwritten" * 100)
    else:
        path = tmp_path / "no-such-dir" / "cache.db"
    w = await workers(path)
    w.answer(entry())  # no exception; the local store still has it
    assert await w.replicator.flush("a") == 0
    st = w.replicator.stats()
    assert st["disabled"] == 1 and st["failures"] >= 1 and st["queued"] == 0
    assert str(path) in caplog.text and "cache sharing between workers is off" in caplog.text


async def test_a_file_locked_for_too_long_loses_a_batch_not_the_worker(workers, tmp_path, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="llmgw")
    a, b = await workers(busy_timeout=0.05), await workers()
    locker = sqlite3.connect(tmp_path / "cache.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    lost = a.answer(entry(text="lost"))
    await eventually(lambda: a.replicator.stats()["failures"] >= 1, 1.0)
    locker.execute("ROLLBACK")
    locker.close()
    kept = a.answer(entry(text="kept"))
    await eventually(lambda: b.has(kept), 1.0)
    assert not b.has(lost) and a.has(lost)  # the worker still answers from its own store
    assert a.replicator.stats()["dropped"] == 1 and "locked" in caplog.text


_PROCESS = textwrap.dedent("""
    import asyncio, json, os, sys, time
    from llmgw.cache.shared import SqliteReplicator
    from llmgw.cache.store import Entry

    async def main(path, me, other):
        seen = []
        r = SqliteReplicator(path, poll_interval=0.05)
        await r.start(lambda kind, e: seen.append(e.text) if kind == "put" else None)
        r.publish(Entry(os.urandom(32), "a", "g", "s", me, None, b'{"id":"x"}', 1, 1, None, time.time(), None))
        deadline = time.monotonic() + 10
        while other not in seen and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # more polls: our own entry must not come back
        await r.close()
        print(json.dumps(seen))

    asyncio.run(main(*sys.argv[1:]))
""")


def test_two_worker_processes_on_one_file_see_each_others_entries(tmp_path) -> None:
    import json

    script = tmp_path / "worker.py"
    script.write_text(_PROCESS)
    path = str(tmp_path / "shared.db")
    procs = [subprocess.Popen([sys.executable, str(script), path, me, other], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for me, other in (("one", "two"), ("two", "one"))]
    seen = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err.decode()
        seen.append(json.loads(out))
    assert seen == [["two"], ["one"]]


# ------------------------------------------------------------------------------------------------
# Several machines: replicas on one Redis


@pytest.fixture
async def replicas(redis_server) -> AsyncIterator[Callable]:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    made: list[Worker] = []

    async def make(url: str | None = None, **kw: object) -> Worker:
        kw.setdefault("prefix", prefix)
        replicator = RedisReplicator(url or redis_server.url, **kw)  # type: ignore[arg-type]
        w = Worker(replicator, kw.get("wall", time.time))  # type: ignore[arg-type]
        made.append(w)
        return await w.start()

    yield make
    for w in made:
        await w.replicator.close()


async def test_two_replicas_see_each_others_entries_and_never_their_own(replicas) -> None:
    a, b = await replicas(), await replicas()
    e = a.answer(entry())
    await eventually(lambda: b.has(e), 1.0)
    assert [c.key for _, c in b.store.candidates("a", "scope-1", e.vector, 0.99)] == [e.key]
    back = b.answer(entry(text="and of Spain?"))
    await eventually(lambda: a.has(back), 1.0)
    await asyncio.sleep(0.1)
    assert [p.key for p in a.puts] == [back.key] and [p.key for p in b.puts] == [e.key]


async def test_get_finds_an_entry_by_key_and_namespace_only(replicas) -> None:
    a, b = await replicas(), await replicas()
    key = os.urandom(32)
    in_a = a.answer(entry("tenant-a", key=key, text="a's"))
    await written(a.replicator, 1)
    got = await b.replicator.get(key, "tenant-a")
    assert got is not None and got.text == "a's" and got.namespace == "tenant-a"
    assert await b.replicator.get(key, "tenant-b") is None  # same key bytes, another tenant: never
    in_b = a.answer(entry("tenant-b", key=key, text="b's"))
    await written(a.replicator, 2)
    assert (await b.replicator.get(key, "tenant-b")).text == "b's"  # type: ignore[union-attr]
    assert (await b.replicator.get(key, "tenant-a")).text == "a's"  # type: ignore[union-attr]
    assert await b.replicator.get(os.urandom(32), "tenant-a") is None
    assert in_a.key == in_b.key
    st = b.replicator.stats()
    assert st["get_hits"] == 3 and st["get_misses"] == 2 and st["get_errors"] == 0


async def test_a_replica_started_later_gets_the_live_entries(replicas) -> None:
    a = await replicas()
    short = a.answer(entry(text="short", expires=time.time() + 0.25))
    long = a.answer(entry(text="long", expires=time.time() + 100))
    never = a.answer(entry(text="never", created=time.time() + 1))
    await written(a.replicator, 3)
    pttl = await a.replicator._client.pttl(a.replicator.entry_key("a", short.key))
    assert 0 < pttl <= 250  # Redis expires it itself
    assert await a.replicator._client.pttl(a.replicator.entry_key("a", never.key)) == -1

    await asyncio.sleep(0.3)
    late = await replicas()
    assert [p.text for p in late.puts] == ["long", "never"]  # oldest first
    assert late.has(long) and not late.has(short)

    clock = Clock()
    clock.now += 1000  # a replica whose clock says `long` has expired does not apply it
    skewed = await replicas(wall=clock)
    assert [p.text for p in skewed.puts] == ["never"]
    a.answer(entry(text="also expired there", expires=time.time() + 100))
    fresh = a.answer(entry(text="fresh"))
    await eventually(lambda: skewed.has(fresh), 1.0)
    assert [p.text for p in skewed.puts] == ["never", "fresh"]
    assert skewed.replicator.stats()["expired_skipped"] >= 2


async def test_a_namespace_flush_reaches_redis_and_every_replica(replicas) -> None:
    a, b = await replicas(), await replicas()
    a1, b1 = a.answer(entry("a")), a.answer(entry("b"))
    await eventually(lambda: b.has(a1) and b.has(b1))
    assert await a.flush("a") == 1
    await eventually(lambda: not b.has(a1), 1.0)
    assert b.has(b1)
    assert await b.replicator.get(a1.key, "a") is None
    assert await b.replicator.get(b1.key, "b") is not None
    late = await replicas()
    assert [p.key for p in late.puts] == [b1.key]
    assert await b.flush(None) == 1
    await eventually(lambda: not a.has(b1) and not late.has(b1), 1.0)


async def test_redis_down_costs_a_miss_not_an_outage(replicas, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="llmgw")
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    t0 = time.monotonic()
    w = await replicas(url, start_timeout=1.0)
    assert time.monotonic() - t0 < 1.5
    w.answer(entry())  # does not raise
    t0 = time.monotonic()
    assert await w.replicator.get(os.urandom(32), "a") is None
    assert await w.replicator.get(os.urandom(32), "a") is None  # skipped for a second: no new connect
    assert time.monotonic() - t0 < 0.3
    with pytest.raises(SharingUnavailable):
        await asyncio.wait_for(w.replicator.flush("a"), 5.0)
    st = w.replicator.stats()
    assert st["get_errors"] == 1 and st["get_skipped"] == 1 and st["failures"] >= 2 and st["dropped"] == 1
    assert "127.0.0.1" in caplog.text and "hunter2" not in caplog.text


async def test_replicas_resume_after_redis_restarts(tmp_path) -> None:
    from servers import RedisServer

    server = RedisServer()
    started: list[Worker] = []
    try:
        a = await Worker(RedisReplicator(server.url, block_ms=200)).start()
        b = await Worker(RedisReplicator(server.url, block_ms=200)).start()
        started += [a, b]
        first = a.answer(entry(text="before"))
        await eventually(lambda: b.has(first), 1.0)
        server.stop()
        t0 = time.monotonic()
        c = await Worker(RedisReplicator(server.url, block_ms=200, start_timeout=1.0)).start()  # while it is down
        started.append(c)
        assert time.monotonic() - t0 < 1.5 and c.replicator.stats()["snapshots"] == 0
        await asyncio.sleep(0.3)  # the readers notice
        server.start()  # empty: no persistence
        after = a.answer(entry(text="after"))
        await eventually(lambda: b.has(after) and c.has(after), 5.0)
        assert b.replicator.stats()["failures"] >= 1 and c.replicator.stats()["snapshots"] == 1
    finally:
        for w in started:
            await w.replicator.close()
        server.close()
