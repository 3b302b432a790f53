"""Sharing cache entries (llmgw/cache/shared.py): how fast, and what it costs while idle.

    python benches/bench_cache_shared.py [--polls 0.05,0.1,0.25] [--n 150] [--dir /dev/shm]
           [--only throughput|redis] [--no-redis | --redis-url URL] [--asyncio]

SQLite (two replicators on one file, as two workers; one process, so one clock):
  - publish → applied on the other, p50/p99, for each poll interval: 5 pairs started at random
    offsets (two workers' polls keep their phase), each publish after a random pause, so that
    publishes land at every phase of the writer's and the reader's polls;
  - an idle poll: event-loop CPU time per poll (main thread CPU with the replicator polling every
    10 ms, minus the same loop without it) and CPU time on the SQLite thread, on an empty file and
    on one holding 100k entries; start() on that file (the snapshot into a real LocalStore);
  - publish() on the loop (serialise + queue), and write throughput: 20k entries published at
    once, time until all are in the file (and the loop's CPU time meanwhile).
Redis (two replicators on a redis-server: --redis-url, or one started here from the system package):
  publish → applied p50/p99, get() p50/p99 (the request path) beside a bare redis-py GET, write
  throughput and CPU per entry.
The event loop is uvloop, as in `llmgw serve` (--asyncio: the stock loop).

Entries are what the cache stores: a 384-d float32 vector, a ~1 KB chat.completion body, a
short prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from llmgw.cache.shared import RedisReplicator, Replicator, SqliteReplicator
from llmgw.cache.store import Entry, LocalStore

DIM = 384
_rng = np.random.default_rng(0)
_BODY = (b'{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":'
         b'{"role":"assistant","content":"' + b"Paris is the capital of France. " * 28 + b'"}}]}')


def make_entry(i: int, namespace: str = "bench") -> Entry:
    return Entry(os.urandom(32), namespace, "gpt-4o", "scope", f"question number {i}: what is the capital?",
                 _rng.standard_normal(DIM).astype(np.float32), _BODY, 40, 250, 0.0026, time.time(), time.time() + 3600)


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs), p))


class Timed:
    """An apply that records when each entry arrived."""

    def __init__(self) -> None:
        self.arrived: dict[bytes, float] = {}

    def __call__(self, kind: str, payload: object) -> None:
        if kind == "put":
            self.arrived[payload.key] = time.perf_counter()  # type: ignore[union-attr]


async def latency(a: Replicator, sink: Timed, n: int, spread: float) -> list[float]:
    """ms from a.publish to the other's apply; each publish after a random pause in [5 ms, spread]
    so publishes land at every phase of the writer's and the reader's polls."""
    out = []
    for i in range(n):
        await asyncio.sleep(random.uniform(0.005, spread))
        e = make_entry(i)
        t0 = time.perf_counter()
        a.publish(e)
        while e.key not in sink.arrived:
            await asyncio.sleep(0.0005)
        out.append((sink.arrived[e.key] - t0) * 1000)
    return out


async def sqlite_latency(base: Path, polls: list[float], n: int, pairs: int = 5) -> None:
    """Two workers' polls keep a fixed phase to each other: `pairs` pairs, started at random
    offsets, sample the phases a deployment may have."""
    print(f"SQLite: publish -> applied on another worker (ms; {pairs} worker pairs x {n // pairs} entries)")
    print(f"  {'poll s':>7} {'p50':>7} {'p99':>7} {'max':>7}")
    for poll in polls:
        ms: list[float] = []
        for pair in range(pairs):
            path = str(base / f"lat-{poll}-{pair}.db")
            a, b = SqliteReplicator(path, poll_interval=poll), SqliteReplicator(path, poll_interval=poll)
            sink = Timed()
            await a.start(lambda k, p: None)
            await asyncio.sleep(random.uniform(0, poll))
            await b.start(sink)
            ms += await latency(a, sink, n // pairs, poll)
            await a.close()
            await b.close()
        print(f"  {poll:>7.2f} {pct(ms, 50):>7.1f} {pct(ms, 99):>7.1f} {max(ms):>7.1f}")


async def _idle_loop_cpu(seconds: float) -> float:
    t0 = time.thread_time()
    await asyncio.sleep(seconds)
    return time.thread_time() - t0


def _thread_cpu(thread: threading.Thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))  # type: ignore[arg-type]


async def idle_poll(base: Path, rows: int, seconds: float = 3.0, rounds: int = 3) -> None:
    path = str(base / f"idle-{rows}.db")
    if rows:
        w = SqliteReplicator(path, queue_max=rows + 1)
        await w.start(lambda k, p: None)
        for i in range(rows):
            w.publish(make_entry(i))
        await w.close()
    interval = 0.01
    loop_us, thread_us = [], []
    for _ in range(rounds):
        base_cpu = await _idle_loop_cpu(seconds)
        r = SqliteReplicator(path, poll_interval=interval)
        await r.start(lambda k, p: None)
        reads = [0]
        read = r._read

        def counted() -> None:  # the thread's poll, counted
            reads[0] += 1
            read()

        r._read = counted  # type: ignore[method-assign]
        assert r._thread is not None
        th0 = _thread_cpu(r._thread)
        cpu = await _idle_loop_cpu(seconds)
        th1 = _thread_cpu(r._thread)
        polls = reads[0]
        await r.close()
        loop_us.append((cpu - base_cpu) / polls * 1e6)
        thread_us.append((th1 - th0) / polls * 1e6)
    print(f"  idle poll, file of {rows:>6} entries: loop {min(loop_us):5.1f} µs, "
          f"SQLite thread {min(thread_us):5.1f} µs per poll (best of {rounds} × {seconds:.0f} s at "
          f"{interval * 1000:.0f} ms; the idle loop alone {base_cpu / seconds * 1e6:.0f} µs/s)")


async def snapshot(base: Path, rows: int) -> None:
    """A worker starting on a file of `rows` entries: start() until every entry is in its LocalStore."""
    path = str(base / f"idle-{rows}.db")
    store = LocalStore(max_entries=rows, max_bytes=8 << 30, wall=time.time)

    def apply(kind: str, payload: object) -> None:
        if kind == "put":
            store.put(payload)  # type: ignore[arg-type]

    r = SqliteReplicator(path)
    t0, cpu0 = time.perf_counter(), time.thread_time()
    await r.start(apply)
    took, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
    await r.close()
    print(f"  start() on a file of {len(store):,} entries (applied to a LocalStore): {took:.2f} s, loop CPU "
          f"{cpu / max(len(store), 1) * 1e6:.0f} µs per entry")


async def write_throughput(base: Path, n: int = 20_000) -> None:
    path = str(base / "tput.db")
    r = SqliteReplicator(path, queue_max=n + 1)
    await r.start(lambda k, p: None)
    entries = [make_entry(i) for i in range(n)]
    t0 = time.perf_counter()
    cpu0 = time.thread_time()
    for e in entries[:2000]:
        r.publish(e)
    publish_us = (time.perf_counter() - t0) / 2000 * 1e6
    for e in entries[2000:]:
        r.publish(e)
    while r.stats()["written"] < n:
        await asyncio.sleep(0.001)
    took = time.perf_counter() - t0
    loop_cpu = time.thread_time() - cpu0
    await r.close()
    size = os.path.getsize(path) + (os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0)
    print(f"  publish() on the loop: {publish_us:.1f} µs; {n} entries written in {took:.2f} s = {n / took:,.0f} "
          f"entries/s (loop CPU {loop_cpu / n * 1e6:.1f} µs per entry incl. publish; file {size / n:.0f} B per entry)")


async def redis_bench(url: str, n: int) -> None:
    prefix = f"bench-{os.getpid()}:"
    a, b = RedisReplicator(url, prefix=prefix), RedisReplicator(url, prefix=prefix)
    sink = Timed()
    await a.start(lambda k, p: None)
    await b.start(sink)
    ms = await latency(a, sink, n, 0.02)
    print("Redis: publish -> applied on another replica (ms)")
    print(f"  p50 {pct(ms, 50):.2f}  p99 {pct(ms, 99):.2f}  max {max(ms):.2f}")
    keys = list(sink.arrived)
    raw = b._lookups  # the same client get() uses, without get()'s timeout, decode and checks
    get_us, raw_us = [], []
    for k in keys * 5:  # interleaved: the same minute, the same loop
        t0 = time.perf_counter()
        got = await b.get(k, "bench")
        t1 = time.perf_counter()
        await raw.get(b.entry_key("bench", k))
        t2 = time.perf_counter()
        get_us.append((t1 - t0) * 1e6)
        raw_us.append((t2 - t1) * 1e6)
        assert got is not None
    print(f"  get() hit: p50 {pct(get_us, 50):.0f} µs  p99 {pct(get_us, 99):.0f} µs   (a bare redis-py GET of the "
          f"same key: p50 {pct(raw_us, 50):.0f} µs  p99 {pct(raw_us, 99):.0f} µs)")
    m = 20_000
    a.queue_max = m + 1
    entries = [make_entry(i) for i in range(m)]
    before, applied = a.stats()["written"], b.stats()["applied"]
    t0, cpu0 = time.perf_counter(), time.thread_time()
    for e in entries:
        a.publish(e)
    while a.stats()["written"] - before < m:
        await asyncio.sleep(0.001)
    took = time.perf_counter() - t0
    while b.stats()["applied"] - applied < m:
        await asyncio.sleep(0.001)
    cpu = time.thread_time() - cpu0
    print(f"  {m} entries written (SET + XADD, pipelined) in {took:.2f} s = {m / took:,.0f} entries/s; CPU "
          f"{cpu / m * 1e6:.0f} µs per entry for publishing + both replicas reading the stream + applying on one")
    length = await a._client.xlen(a.stream)
    stream_bytes = await a._client.memory_usage(a.stream, samples=0)
    full = stream_bytes / length * a.stream_maxlen / 2**20
    print(f"  Redis memory: the stream {stream_bytes / length:,.0f} B per event ({length:,} events; at stream_maxlen "
          f"{a.stream_maxlen:,}: {full:,.0f} MiB), beside the entries' own keys")
    await a.flush(None)
    await a._client.delete(a.stream)
    await a.close()
    await b.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--polls", default="0.05,0.1,0.25")
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--only", choices=["throughput", "redis"], default=None)
    ap.add_argument("--dir", default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    ap.add_argument("--redis-url", default=None)
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--asyncio", action="store_true", help="the stock event loop instead of uvloop (the gateway's)")
    args = ap.parse_args()
    if args.only != "redis":
        base = Path(tempfile.mkdtemp(prefix="llmgw-bench-share-", dir=args.dir))
        print(f"files in {base}")
        try:
            if args.only is None:
                await sqlite_latency(base, [float(p) for p in args.polls.split(",")], args.n)
                print("SQLite: costs")
                await idle_poll(base, 0)
                await idle_poll(base, 100_000)
                await snapshot(base, 100_000)
            await write_throughput(base)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    if args.no_redis or args.only == "throughput":
        return
    server = None
    url = args.redis_url
    if url is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from servers import RedisServer

        server = RedisServer()
        url = server.url
    try:
        await redis_bench(url, args.n)
    finally:
        if server is not None:
            server.close()

if __name__ == "__main__":
    if "--asyncio" in sys.argv:
        asyncio.run(main())
    else:
        import uvloop

        uvloop.run(main())
