"""SharedCounters (shared-memory table, rust/src/shm/) against what it was chosen over.

    maturin develop --release && pytest benches/bench_shared_counters.py --benchmark-only --benchmark-group-by=group

Rate limits: a 4-bucket acquire on the shared table vs the same call on the in-process
RateLimiter (one limit per worker, which is what the shared table replaces) and vs one
state-owning process that every worker would ask over a Unix socket (the round trip is the cost). Budgets: a
reserve + settle pair on the shared table vs the same reserve as a SQLite transaction (WAL,
synchronous=NORMAL, BEGIN IMMEDIATE), the obvious cross-process alternative. Every call reads
the real clock (no `now`), as in the gateway.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from llmgw._core import RateLimiter, SharedCounters

# 1e6 cells/s and a 1e12 burst: every charge moves a TAT by >= 1 µs (no charge rounds to 0 ns),
# yet a benchmark run cannot come near the 1e6 s of slack, so every call takes the admit path.
FOUR_BUCKETS = [
    ("rpm:key:sk-live-7f3a", 1e6, 1e12, 1.0),
    ("rpm:team:platform", 1e6, 1e12, 1.0),
    ("tpm:key:sk-live-7f3a", 1e6, 1e12, 850.0),
    ("tpm:model:gpt-4o", 1e6, 1e12, 850.0),
]
KEY = "budget:2026-05:team:platform"
LIMIT = 2**62  # never reached: every reserve succeeds, as most do in production
RESERVE, ACTUAL = 2_000, 1_650  # micro-dollars


class SqliteBudgets:
    """Budgets in a SQLite file shared by the workers: one write transaction per reserve."""

    def __init__(self, path: Path) -> None:
        # autocommit mode (isolation_level=None): the transaction is the explicit BEGIN IMMEDIATE
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE budgets (key TEXT PRIMARY KEY, committed INTEGER NOT NULL, spent INTEGER NOT NULL)")
        self.db.execute("INSERT INTO budgets VALUES (?, 0, 0)", (KEY,))

    def reserve(self, key: str, amount: int, limit: int) -> bool:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        cur = db.execute("UPDATE budgets SET committed = committed + ? WHERE key = ? AND committed + ? <= ?", (amount, key, amount, limit))
        db.execute("COMMIT")
        return cur.rowcount == 1

    def settle(self, key: str, reserved: int, actual: int) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE budgets SET committed = committed + ?, spent = spent + ? WHERE key = ?", (actual - reserved, actual, key))
        db.execute("COMMIT")

    def budget(self, key: str) -> tuple[int, int]:
        return self.db.execute("SELECT committed, spent FROM budgets WHERE key = ?", (key,)).fetchone()


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[SharedCounters]:
    # tmpfs, as in production: on a disk filesystem the first write to each page of the table
    # costs ~1-2 ms, which also skews pytest-benchmark's calibration (it sized runs to ~400 rounds)
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path) as d:
        table = SharedCounters(str(Path(d) / "counters.shm"), create=True)
        table.acquire(FOUR_BUCKETS)  # first touch of the slots' pages, outside the timing
        table.reserve(KEY, 0, LIMIT)
        yield table


@pytest.fixture
def sqlite_budgets(tmp_path: Path) -> Iterator[SqliteBudgets]:
    budgets = SqliteBudgets(tmp_path / "budgets.sqlite3")
    yield budgets
    budgets.db.close()


@pytest.mark.benchmark(group="shared counters: 4-bucket acquire, admitted")
@pytest.mark.parametrize("impl", ["shared", "in-process"])
def test_acquire_four_buckets(benchmark, impl: str, shared: SharedCounters) -> None:
    acquire: Callable[..., float] = shared.acquire if impl == "shared" else RateLimiter().acquire
    assert benchmark(acquire, FOUR_BUCKETS) == 0.0


@pytest.mark.benchmark(group="shared counters: budget reserve")
def test_reserve_settle_shared(benchmark, shared: SharedCounters) -> None:
    reserve, settle = shared.reserve, shared.settle

    def reserve_and_settle() -> bool:
        ok = reserve(KEY, RESERVE, LIMIT)
        settle(KEY, RESERVE, ACTUAL)
        return ok

    assert benchmark(reserve_and_settle)
    committed, spent = shared.budget(KEY)
    assert committed == spent > 0 and committed % ACTUAL == 0


@pytest.mark.benchmark(group="shared counters: budget reserve")
def test_reserve_sqlite_transaction(benchmark, sqlite_budgets: SqliteBudgets) -> None:
    assert benchmark(sqlite_budgets.reserve, KEY, RESERVE, LIMIT)
    assert sqlite_budgets.budget(KEY)[0] % RESERVE == 0


@pytest.mark.benchmark(group="shared counters: budget reserve")
def test_reserve_settle_sqlite_transactions(benchmark, sqlite_budgets: SqliteBudgets) -> None:
    """Like for like with the shared pair: the settle is a second transaction."""

    def reserve_and_settle() -> bool:
        ok = sqlite_budgets.reserve(KEY, RESERVE, LIMIT)
        sqlite_budgets.settle(KEY, RESERVE, ACTUAL)
        return ok

    assert benchmark(reserve_and_settle)
    committed, spent = sqlite_budgets.budget(KEY)
    assert committed == spent > 0


# The owner: reads one request line, answers with the acquire's result (its own RateLimiter).
_OWNER = """
import socket, sys
from llmgw._core import RateLimiter
checks = [(k, r, b, c) for k, r, b, c in %r]
limiter, sock = RateLimiter(), socket.socket(fileno=int(sys.argv[1]))
f = sock.makefile("rwb", buffering=0)
while f.readline():
    sock.sendall(b"%%r\\n" %% limiter.acquire(checks))
"""


@pytest.fixture
def owner_process() -> Iterator[socket.socket]:
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-c", _OWNER % (FOUR_BUCKETS,), str(theirs.fileno())],
                            pass_fds=(theirs.fileno(),))
    theirs.close()
    yield ours
    ours.close()
    proc.wait(timeout=10)


@pytest.mark.benchmark(group="shared counters: 4-bucket acquire, admitted")
def test_acquire_four_buckets_owner_process(benchmark, owner_process: socket.socket) -> None:
    sock = owner_process

    def ask() -> float:
        sock.sendall(b"acquire\n")
        return float(sock.recv(64))

    assert benchmark(ask) == 0.0
