"""The ledger's write path: rows per second into SQLite as the governance plugin writes them.

    pytest benches/bench_ledger.py --benchmark-only --benchmark-group-by=group

One batch of 500 rows (22 columns, 50 keys) per round, in one BEGIN IMMEDIATE transaction, WAL
and synchronous=NORMAL as in llmgw/governance/stores.py: the shipped schema (a time index, and
the 15-minute spend buckets upserted in the same transaction) against the alternative it
replaced, an index on (key_id, ts) for seeding budgets from the ledger.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from pathlib import Path
from typing import Iterator

import pytest

from llmgw.governance.stores import _SCHEMA, LEDGER_COLUMNS, spend_buckets

_INSERT = f"INSERT INTO ledger ({','.join(LEDGER_COLUMNS)}) VALUES ({','.join('?' * len(LEDGER_COLUMNS))})"
_UPSERT = ("INSERT INTO spend_buckets (scope, name, bucket, cost_usd) VALUES (?,?,?,?) ON CONFLICT (scope, name, "
           "bucket) DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd")
_ids = itertools.count()


def _batch(n: int = 500) -> list[tuple]:
    now = time.time()
    return [(f"req-{next(_ids)}", now, "chat", f"key_{i % 50:016x}", f"user{i % 20}", f"team{i % 5}", "bench",
             "bench", 12, 34, 0, 0.000123, 0, 1.234, 0.5, None, None, 200, "ok", None, 1, 0) for i in range(n)]


def _db(path: Path, key_index: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA.format(blob="BLOB", real="REAL", serial="INTEGER PRIMARY KEY"))
    if key_index:
        db.execute("CREATE INDEX ledger_key ON ledger (key_id, ts)")
    return db


@pytest.fixture
def shipped(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    db = _db(tmp_path / "shipped.db", key_index=False)
    yield db
    db.close()


@pytest.fixture
def key_indexed(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    db = _db(tmp_path / "key_index.db", key_index=True)
    yield db
    db.close()


@pytest.mark.benchmark(group="ledger: 500 rows per transaction")
def test_ledger_batch_shipped_schema(benchmark, shipped: sqlite3.Connection) -> None:
    def write() -> None:
        rows = _batch()
        shipped.execute("BEGIN IMMEDIATE")
        shipped.executemany(_INSERT, rows)
        shipped.executemany(_UPSERT, spend_buckets(rows))
        shipped.execute("COMMIT")

    benchmark.pedantic(write, rounds=100, warmup_rounds=5)
    ledger = shipped.execute("SELECT SUM(cost_usd) FROM ledger").fetchone()[0]
    buckets = shipped.execute("SELECT SUM(cost_usd) FROM spend_buckets WHERE scope = 'key'").fetchone()[0]
    assert buckets == pytest.approx(ledger)


@pytest.mark.benchmark(group="ledger: 500 rows per transaction")
def test_ledger_batch_with_key_index(benchmark, key_indexed: sqlite3.Connection) -> None:
    def write() -> None:
        key_indexed.execute("BEGIN IMMEDIATE")
        key_indexed.executemany(_INSERT, _batch())
        key_indexed.execute("COMMIT")

    benchmark.pedantic(write, rounds=100, warmup_rounds=5)
