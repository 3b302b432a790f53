"""Where keys, the ledger and the audit log are kept: SQLite (embedded) or PostgreSQL (shared).

Both stores have the same interface (`Store`) and the same tables:

- `keys`: one row per virtual key, its SHA-256 digest (never the key), owner, limits, budget;
- `ledger`: append-only, one row per finished request (tokens, cost, latency, status, ...);
- `spend_buckets`: the ledger's cost summed per key, user and team and per 15 minutes, written in
  the same transaction as the rows it sums. A budget counter starts from it (one small range
  read instead of a scan of the period's rows), and the ledger needs no per-key index, which
  made inserts dearer the bigger the table (benches/bench_ledger.py: 1.2x by the median batch,
  1.6x by the mean, on a fresh file; 1.8x per row at 100,000 rows). Every time zone's
  midnight is a multiple of 15 minutes, so any budget period is a whole number of buckets;
- `overview_buckets`: the dashboard overview's figures per (minute, model), written in the same
  transaction as the rows they sum (model listings and shadow copies left out): requests, errors
  (status >= 400), tokens, cost, the least and greatest latency, and latency and time-to-first-token
  histograms (`HIST_BINS` log-spaced bins, `HIST_RATIO` wide). The overview reads these (at most
  1,440 rows a model for a day) instead of the ledger's rows;
- `audit`: append-only, one row per policy decision or admin action (who, what, when; no secrets).

SQLite is in WAL mode, so the workers of one machine and the `llmgw spend` command read while a
worker writes. Queries and key changes run on one thread of the store's own (they may wait up
to 5 s for the file lock; the event loop must not); ledger batches are written on the event loop
without ever waiting for the lock (see `SqliteStore.write_ledger`). PostgreSQL goes through an
asyncpg pool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import time
from array import array
from bisect import bisect_right
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Protocol, Sequence, TypeVar

from llmgw.governance.keys import KeyRecord
from llmgw.services import RetryLater

__all__ = ["GROUP_BY", "HIST_BINS", "HIST_LO_MS", "HIST_RATIO", "LEDGER_COLUMNS", "OVERVIEW_SKIP_KINDS",
           "PostgresStore", "SqliteStore", "Store", "hist_bin", "open_store", "overview_buckets"]

T = TypeVar("T")

log = logging.getLogger("llmgw")

LEDGER_COLUMNS = ("request_id", "ts", "kind", "key_id", "user_id", "team", "model", "deployment", "prompt_tokens",
                  "completion_tokens", "cached_tokens", "cost_usd", "unpriced", "latency_ms", "ttft_ms", "cache",
                  "cost_saved_usd", "status", "result", "error", "attempts", "usage_estimated")
_KEY_COLUMNS = ("id", "name", "hash", "last4", "team", "user_id", "models", "metadata", "rpm", "tpm", "budget_usd",
                "budget_period", "created_at", "expires_at", "revoked_at", "rotated_from")
GROUP_BY = {"key": "key_id", "user": "user_id", "team": "team", "model": "model", "day": None}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, hash {blob} NOT NULL UNIQUE, last4 TEXT, team TEXT, user_id TEXT,
  models TEXT, metadata TEXT, rpm INTEGER, tpm INTEGER, budget_usd {real}, budget_period TEXT,
  created_at {real} NOT NULL, expires_at {real}, revoked_at {real}, rotated_from TEXT);
CREATE TABLE IF NOT EXISTS ledger (
  request_id TEXT NOT NULL, ts {real} NOT NULL, kind TEXT, key_id TEXT, user_id TEXT, team TEXT, model TEXT,
  deployment TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, cached_tokens INTEGER, cost_usd {real},
  unpriced INTEGER, latency_ms {real}, ttft_ms {real}, cache TEXT, cost_saved_usd {real}, status INTEGER,
  result TEXT, error TEXT, attempts INTEGER, usage_estimated INTEGER);
CREATE INDEX IF NOT EXISTS ledger_ts ON ledger (ts);
CREATE TABLE IF NOT EXISTS spend_buckets (
  scope TEXT NOT NULL, name TEXT NOT NULL, bucket BIGINT NOT NULL, cost_usd {real} NOT NULL,
  PRIMARY KEY (scope, name, bucket));
CREATE TABLE IF NOT EXISTS audit (
  id {serial}, ts {real} NOT NULL, actor TEXT, action TEXT NOT NULL, subject TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
"""
# Apart from _SCHEMA (its own placeholders; _SCHEMA's are used by benches/bench_ledger.py as they are).
_OVERVIEW_SCHEMA = """
CREATE TABLE IF NOT EXISTS overview_buckets (
  bucket BIGINT NOT NULL, model TEXT NOT NULL, requests BIGINT NOT NULL, errors BIGINT NOT NULL,
  tokens_in BIGINT NOT NULL, tokens_out BIGINT NOT NULL, cost_usd {real} NOT NULL, lat_min {real}, lat_max {real},
  lat_hist {hist} NOT NULL, ttft_hist {hist} NOT NULL, PRIMARY KEY (bucket, model));
"""


BUCKET_S = 900  # spend_buckets: 15 minutes
_SCOPE_COLUMNS = {"key": "key_id", "user": "user_id", "team": "team"}
_COST, _TS = LEDGER_COLUMNS.index("cost_usd"), LEDGER_COLUMNS.index("ts")
_BY_SCOPE = [(scope, LEDGER_COLUMNS.index(column)) for scope, column in _SCOPE_COLUMNS.items()]


def spend_buckets(rows: list[tuple[Any, ...]]) -> list[tuple[str, str, int, float]]:
    """The cost of `rows` summed per (scope, name, 15-minute bucket)."""
    sums: dict[tuple[str, str, int], float] = {}
    for row in rows:
        cost = row[_COST]
        if not cost:
            continue
        bucket = int(row[_TS] // BUCKET_S)
        for scope, i in _BY_SCOPE:
            name = row[i]
            if name is not None:
                k = (scope, name, bucket)
                sums[k] = sums.get(k, 0.0) + cost
    return [(scope, name, bucket, cost) for (scope, name, bucket), cost in sums.items()]


# overview_buckets: per (minute, model). Latency histograms: bin 0 holds everything below
# HIST_LO_MS * HIST_RATIO, bin i (1 <= i < HIST_BINS - 1) [HIST_LO_MS * HIST_RATIO**i, x HIST_RATIO), the last
# everything from HIST_LO_MS * HIST_RATIO**(HIST_BINS - 1) (~13 min) up. A bin's geometric midpoint is within
# ~10% of any value in it. Stored as HIST_BINS native int32 (SQLite: a 352-byte blob; PostgreSQL: BIGINT[]).
OVERVIEW_STEP = 60
OVERVIEW_SKIP_KINDS = ("shadow", "models")  # model listings and shadow copies are not traffic to show
HIST_LO_MS, HIST_RATIO, HIST_BINS = 0.1, 1.2, 88
_EDGES = [HIST_LO_MS * HIST_RATIO ** i for i in range(1, HIST_BINS)]  # bin i's upper bound, i < HIST_BINS - 1
_KIND, _MODEL, _STATUS = LEDGER_COLUMNS.index("kind"), LEDGER_COLUMNS.index("model"), LEDGER_COLUMNS.index("status")
_TIN, _TOUT = LEDGER_COLUMNS.index("prompt_tokens"), LEDGER_COLUMNS.index("completion_tokens")
_LAT, _TTFT = LEDGER_COLUMNS.index("latency_ms"), LEDGER_COLUMNS.index("ttft_ms")
_OVERVIEW_COLUMNS = ("bucket", "model", "requests", "errors", "tokens_in", "tokens_out", "cost_usd", "lat_min",
                     "lat_max", "lat_hist", "ttft_hist")


def hist_bin(ms: float) -> int:
    """The histogram bin of a latency in milliseconds."""
    return bisect_right(_EDGES, ms)


def overview_buckets(rows: list[tuple[Any, ...]]) -> dict[tuple[int, str], list[Any]]:
    """The overview's figures of ledger `rows` per (minute, model; "" for none), as
    [requests, errors, tokens_in, tokens_out, cost_usd, lat_min, lat_max, lat_hist, ttft_hist]
    (lat_min/max: inf/-inf when no row had a latency; histograms: lists of HIST_BINS counts).
    A dict lookup, a few adds and two bisects a row: write_ledger went from ~4.2 to ~5.0 µs a row
    (500-row batches, SQLite, with the merge into the table's rows)."""
    acc: dict[tuple[int, str], list[Any]] = {}
    skip, edges = OVERVIEW_SKIP_KINDS, _EDGES
    for row in rows:
        if row[_KIND] in skip:
            continue
        key = (int(row[_TS] // OVERVIEW_STEP), row[_MODEL] or "")
        a = acc.get(key)
        if a is None:
            a = acc[key] = [0, 0, 0, 0, 0.0, math.inf, -math.inf, [0] * HIST_BINS, [0] * HIST_BINS]
        a[0] += 1
        status = row[_STATUS]
        if status is not None and status >= 400:
            a[1] += 1
        a[2] += row[_TIN] or 0
        a[3] += row[_TOUT] or 0
        a[4] += row[_COST] or 0.0
        lat = row[_LAT]
        if lat is not None:
            if lat < a[5]:
                a[5] = lat
            if lat > a[6]:
                a[6] = lat
            a[7][bisect_right(edges, lat)] += 1
        ttft = row[_TTFT]
        if ttft is not None:
            a[8][bisect_right(edges, ttft)] += 1
    return acc


def _overview_record(key: tuple[int, str], a: list[Any], hist: Callable[[list[int]], Any]) -> tuple[Any, ...]:
    return (key[0], key[1], a[0], a[1], a[2], a[3], a[4], a[5] if a[5] != math.inf else None,
            a[6] if a[6] != -math.inf else None, hist(a[7]), hist(a[8]))


def _merge_overview_sqlite(db: sqlite3.Connection, acc: dict[tuple[int, str], list[Any]]) -> None:
    """Add `acc` to overview_buckets, in the caller's write transaction (the file's write lock is
    held, so reading the batch's few rows, adding and writing them back races with no one)."""
    if not acc:
        return
    minutes = sorted({k[0] for k in acc})
    old = db.execute(f"SELECT {','.join(_OVERVIEW_COLUMNS)} FROM overview_buckets WHERE bucket IN "
                     f"({','.join('?' * len(minutes))})", minutes).fetchall()
    for bucket, model, n, err, tin, tout, cost, lo, hi, lat, ttft in old:
        a = acc.get((bucket, model))
        if a is None:
            continue
        a[0] += n
        a[1] += err
        a[2] += tin
        a[3] += tout
        a[4] += cost
        if lo is not None:
            a[5], a[6] = min(a[5], lo), max(a[6], hi)
        a[7] = [x + y for x, y in zip(a[7], array("i", lat))]
        a[8] = [x + y for x, y in zip(a[8], array("i", ttft))]
    db.executemany(_UPSERT_OVERVIEW_SQLITE, [_overview_record(k, a, _hist_blob) for k, a in acc.items()])


def _hist_blob(counts: list[int]) -> bytes:
    return array("i", counts).tobytes()


_UPSERT_OVERVIEW_SQLITE = (f"INSERT INTO overview_buckets ({','.join(_OVERVIEW_COLUMNS)}) VALUES "
                           f"({','.join('?' * len(_OVERVIEW_COLUMNS))}) ON CONFLICT (bucket, model) DO UPDATE SET "
                           + ", ".join(f"{c} = excluded.{c}" for c in _OVERVIEW_COLUMNS[2:]))


def _pg_hist_sum(c: str) -> str:
    return (f"{c} = ARRAY(SELECT a + b FROM unnest(overview_buckets.{c}, excluded.{c}) WITH ORDINALITY AS h(a, b, i) "
            f"ORDER BY i)")


# PostgreSQL: merged by the database (replicas write at once); rows in key order, so two
# replicas' batches lock the rows they share in the same order.
_UPSERT_OVERVIEW_PG = (
    f"INSERT INTO overview_buckets ({','.join(_OVERVIEW_COLUMNS)}) VALUES "
    f"({','.join(f'${i}' for i in range(1, len(_OVERVIEW_COLUMNS) + 1))}) ON CONFLICT (bucket, model) DO UPDATE SET "
    + ", ".join(f"{c} = overview_buckets.{c} + excluded.{c}" for c in _OVERVIEW_COLUMNS[2:7])
    + ", lat_min = LEAST(overview_buckets.lat_min, excluded.lat_min), "
      "lat_max = GREATEST(overview_buckets.lat_max, excluded.lat_max), "
    + _pg_hist_sum("lat_hist") + ", " + _pg_hist_sum("ttft_hist"))
_READ_OVERVIEW = f"SELECT {','.join(_OVERVIEW_COLUMNS)} FROM overview_buckets WHERE bucket >= "


_INSERT_LEDGER = f"INSERT INTO ledger ({','.join(LEDGER_COLUMNS)}) VALUES ({','.join('?' * len(LEDGER_COLUMNS))})"
_UPSERT_BUCKETS = ("INSERT INTO spend_buckets (scope, name, bucket, cost_usd) VALUES (?,?,?,?) ON CONFLICT (scope, "
                   "name, bucket) DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd")


def _key_row(r: KeyRecord) -> tuple[Any, ...]:
    return (r.id, r.name, r.hash, r.last4, r.team, r.user, json.dumps(r.models) if r.models is not None else None,
            json.dumps(r.metadata), r.rpm, r.tpm, r.budget_usd, r.budget_period, r.created_at, r.expires_at,
            r.revoked_at, r.rotated_from)


def _key_record(row: Any) -> KeyRecord:
    (kid, name, h, last4, team, user, models, metadata, rpm, tpm, budget, period, created, expires, revoked,
     rotated) = tuple(row)
    return KeyRecord(kid, name, bytes(h), last4, team, user, json.loads(models) if models else None,
                     json.loads(metadata) if metadata else {}, rpm, tpm, budget, period or "month", created, expires,
                     revoked, rotated)


def _day_expr(dialect: str) -> str:
    if dialect == "sqlite":
        return "strftime('%Y-%m-%d', ts, 'unixepoch')"
    return "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def _spend_sql(group_by: str, dialect: str, mark: Callable[[int], str]) -> str:
    col = GROUP_BY[group_by] or _day_expr(dialect)
    return (f"SELECT {col} AS grp, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            f"COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(cost_usd), 0), COALESCE(SUM(cost_saved_usd), 0), "
            f"COALESCE(SUM(unpriced), 0) FROM ledger WHERE ts >= {mark(1)} AND ts < {mark(2)} AND kind != 'shadow' "
            f"GROUP BY grp ORDER BY 6 DESC, 1")


def _spend_rows(rows: Any, group_by: str) -> list[dict[str, Any]]:
    return [{group_by: g, "requests": n, "prompt_tokens": int(p), "completion_tokens": int(c), "cached_tokens": int(k),
             "cost_usd": float(cost), "cost_saved_usd": float(saved), "unpriced_requests": int(u)}
            for g, n, p, c, k, cost, saved, u in rows]


_RECENT_FILTERS = {"key": "key_id", "model": "model", "status": "status", "team": "team", "user": "user_id"}


def _ledger_rows_sql(columns: Sequence[str], since: float | None, request_id: str | None, skip_kinds: Sequence[str],
                     mark: Callable[[int], str]) -> tuple[str, list[Any]]:
    """`ledger_rows`' query and its values, in either dialect (`mark(i)`: the i-th placeholder)."""
    unknown = [c for c in columns if c not in LEDGER_COLUMNS]
    if unknown or not columns:
        raise ValueError(f"not ledger columns: {unknown or columns}")
    conds: list[str] = []
    values: list[Any] = []
    for cond, value in (("ts > {}", since), ("request_id = {}", request_id)):
        if value is not None:
            values.append(value)
            conds.append(cond.format(mark(len(values))))
    for kind in skip_kinds:
        values.append(kind)
        conds.append(f"kind != {mark(len(values))}")
    return (f"SELECT {','.join(columns)} FROM ledger WHERE {' AND '.join(conds) or '1 = 1'} ORDER BY ts DESC "
            f"LIMIT {mark(len(values) + 1)}"), values


class Store(Protocol):
    dialect: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def add_key(self, rec: KeyRecord) -> None: ...
    async def key(self, key_id: str) -> KeyRecord | None: ...
    async def key_by_hash(self, h: bytes) -> KeyRecord | None: ...
    async def keys(self) -> list[KeyRecord]: ...
    async def save_key(self, rec: KeyRecord) -> None: ...
    def write_ledger(self, rows: list[tuple[Any, ...]]) -> Any: ...  # SQLite: plain; PostgreSQL: awaitable
    async def spend(self, group_by: str, since: float, until: float) -> list[dict[str, Any]]: ...
    async def spent_since(self, scope: str, name: str, since: float) -> float: ...
    async def recent(self, limit: int, filters: dict[str, str]) -> list[dict[str, Any]]: ...
    async def ledger_rows(self, columns: Sequence[str], *, since: float | None = None, request_id: str | None = None,
                          skip_kinds: Sequence[str] = (), limit: int = 1000) -> list[tuple[Any, ...]]: ...
    async def read_overview(self, since: int) -> list[tuple[Any, ...]]: ...
    async def audit(self, actor: str, action: str, subject: str | None, detail: dict[str, Any]) -> None: ...
    async def audit_many(self, rows: list[tuple[Any, ...]]) -> None: ...
    async def audit_log(self, limit: int) -> list[dict[str, Any]]: ...


class SqliteStore:
    """The embedded store (see the module docstring)."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmgw-sqlite")
        self._db: sqlite3.Connection | None = None  # the executor thread's
        self._writer: sqlite3.Connection | None = None  # the event loop's, for the ledger only
        self._checkpointed = time.monotonic()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                self._db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            return fn(self._db)

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def open(self) -> None:
        schema = _SCHEMA.format(blob="BLOB", real="REAL", serial="INTEGER PRIMARY KEY") + \
            _OVERVIEW_SCHEMA.format(real="REAL", hist="BLOB")
        await self._run(lambda db: db.executescript(schema))

    async def close(self) -> None:
        def shut(db: sqlite3.Connection) -> None:
            db.close()
            self._db = None

        if self._db is not None:
            await self._run(shut)
        self._pool.shutdown(wait=True)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def add_key(self, rec: KeyRecord) -> None:
        marks = ",".join("?" * len(_KEY_COLUMNS))
        await self._run(lambda db: db.execute(f"INSERT INTO keys ({','.join(_KEY_COLUMNS)}) VALUES ({marks})",
                                              _key_row(rec)))

    async def save_key(self, rec: KeyRecord) -> None:
        sets = ",".join(f"{c} = ?" for c in _KEY_COLUMNS[1:])
        row = _key_row(rec)
        await self._run(lambda db: db.execute(f"UPDATE keys SET {sets} WHERE id = ?", (*row[1:], row[0])))

    async def key(self, key_id: str) -> KeyRecord | None:
        row = await self._run(lambda db: db.execute(f"SELECT {','.join(_KEY_COLUMNS)} FROM keys WHERE id = ?",
                                                    (key_id,)).fetchone())
        return _key_record(row) if row else None

    async def key_by_hash(self, h: bytes) -> KeyRecord | None:
        row = await self._run(lambda db: db.execute(f"SELECT {','.join(_KEY_COLUMNS)} FROM keys WHERE hash = ?",
                                                    (h,)).fetchone())
        return _key_record(row) if row else None

    async def keys(self) -> list[KeyRecord]:
        rows = await self._run(lambda db: db.execute(
            f"SELECT {','.join(_KEY_COLUMNS)} FROM keys ORDER BY created_at").fetchall())
        return [_key_record(r) for r in rows]

    def write_ledger(self, rows: list[tuple[Any, ...]]) -> None:
        """Append `rows` (and their spend and overview buckets) in one transaction, on the calling
        thread: the event loop. A batch takes ~1 ms of SQLite's own time; handing it to a thread instead cost
        more in GIL hand-offs than it saved (benches/load/governance.py). It never waits for the
        file lock: when another worker holds it, `RetryLater` (the queue tries again shortly).
        The WAL is checkpointed by the store's thread, not by a commit here."""
        db = self._writer
        if db is None:
            db = self._writer = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA wal_autocheckpoint=0")
        buckets = spend_buckets(rows)
        overview = overview_buckets(rows)
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise RetryLater("the ledger file is locked by another worker") from None
            raise
        try:
            db.executemany(_INSERT_LEDGER, rows)
            db.executemany(_UPSERT_BUCKETS, buckets)
            _merge_overview_sqlite(db, overview)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        now = time.monotonic()
        if now - self._checkpointed >= 1.0:
            self._checkpointed = now
            self._pool.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._db is None:
                self._db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.warning("checkpointing %s failed: %s", self.path, exc)

    async def spend(self, group_by: str, since: float, until: float) -> list[dict[str, Any]]:
        sql = _spend_sql(group_by, "sqlite", lambda _i: "?")
        return _spend_rows(await self._run(lambda db: db.execute(sql, (since, until)).fetchall()), group_by)

    async def spent_since(self, scope: str, name: str, since: float) -> float:
        """What `scope` (key, user, team) `name` spent since `since` (a 15-minute boundary)."""
        row = await self._run(lambda db: db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM spend_buckets WHERE scope = ? AND name = ? AND bucket >= ?",
            (scope, name, int(since // BUCKET_S))).fetchone())
        return float(row[0])

    async def recent(self, limit: int, filters: dict[str, str]) -> list[dict[str, Any]]:
        where = " AND ".join(f"{_RECENT_FILTERS[k]} = ?" for k in filters) or "1 = 1"
        sql = f"SELECT {','.join(LEDGER_COLUMNS)} FROM ledger WHERE {where} ORDER BY ts DESC LIMIT ?"
        rows = await self._run(lambda db: db.execute(sql, (*filters.values(), limit)).fetchall())
        return [dict(zip(LEDGER_COLUMNS, r)) for r in rows]

    async def ledger_rows(self, columns: Sequence[str], *, since: float | None = None, request_id: str | None = None,
                          skip_kinds: Sequence[str] = (), limit: int = 1000) -> list[tuple[Any, ...]]:
        """`columns` of the ledger rows with ts > `since` (of one request id; not of `skip_kinds`),
        newest first, at most `limit` (the dashboard's reads). The ts index is walked from the
        newest row, so recent rows cost what they return; a request id that is not there costs
        a scan of the rows after `since`."""
        sql, values = _ledger_rows_sql(columns, since, request_id, skip_kinds, lambda _i: "?")
        return await self._run(lambda db: db.execute(sql, (*values, limit)).fetchall())

    async def read_overview(self, since: int) -> list[tuple[Any, ...]]:
        """overview_buckets from minute `since` on: (bucket, model (None for none), requests,
        errors, tokens_in, tokens_out, cost_usd, lat_min, lat_max, lat_hist, ttft_hist), the
        histograms as HIST_BINS native int32 (bytes)."""
        rows = await self._run(lambda db: db.execute(_READ_OVERVIEW + "?", (int(since),)).fetchall())
        return [(*r[:1], r[1] or None, *r[2:]) for r in rows]

    async def audit(self, actor: str, action: str, subject: str | None, detail: dict[str, Any]) -> None:
        await self.audit_many([(time.time(), actor, action, subject, json.dumps(detail))])

    async def audit_many(self, rows: list[tuple[Any, ...]]) -> None:
        await self._run(lambda db: db.executemany(
            "INSERT INTO audit (ts, actor, action, subject, detail) VALUES (?,?,?,?,?)", rows))

    async def audit_log(self, limit: int) -> list[dict[str, Any]]:
        rows = await self._run(lambda db: db.execute(
            "SELECT ts, actor, action, subject, detail FROM audit ORDER BY ts DESC LIMIT ?", (limit,)).fetchall())
        return [{"ts": ts, "actor": a, "action": act, "subject": s, "detail": json.loads(d) if d else {}}
                for ts, a, act, s, d in rows]


class PostgresStore:
    """The shared store: PostgreSQL through an asyncpg pool (for several gateway replicas)."""

    dialect = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: Any = None

    async def open(self) -> None:
        import asyncpg

        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        schema = _SCHEMA.format(blob="BYTEA", real="DOUBLE PRECISION", serial="BIGSERIAL PRIMARY KEY") + \
            _OVERVIEW_SCHEMA.format(real="DOUBLE PRECISION", hist="BIGINT[]")
        async with self._pool.acquire() as conn:
            # Several replicas may start at once: one creates the tables, the others wait for it.
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(7716801)")
                await conn.execute(schema)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    @staticmethod
    def _marks(n: int) -> str:
        return ",".join(f"${i}" for i in range(1, n + 1))

    async def add_key(self, rec: KeyRecord) -> None:
        await self._pool.execute(f"INSERT INTO keys ({','.join(_KEY_COLUMNS)}) VALUES ({self._marks(len(_KEY_COLUMNS))})",
                                 *_key_row(rec))

    async def save_key(self, rec: KeyRecord) -> None:
        sets = ",".join(f"{c} = ${i}" for i, c in enumerate(_KEY_COLUMNS[1:], start=2))
        await self._pool.execute(f"UPDATE keys SET {sets} WHERE id = $1", *_key_row(rec))

    async def key(self, key_id: str) -> KeyRecord | None:
        row = await self._pool.fetchrow(f"SELECT {','.join(_KEY_COLUMNS)} FROM keys WHERE id = $1", key_id)
        return _key_record(row) if row else None

    async def key_by_hash(self, h: bytes) -> KeyRecord | None:
        row = await self._pool.fetchrow(f"SELECT {','.join(_KEY_COLUMNS)} FROM keys WHERE hash = $1", h)
        return _key_record(row) if row else None

    async def keys(self) -> list[KeyRecord]:
        rows = await self._pool.fetch(f"SELECT {','.join(_KEY_COLUMNS)} FROM keys ORDER BY created_at")
        return [_key_record(r) for r in rows]

    async def write_ledger(self, rows: list[tuple[Any, ...]]) -> None:
        overview = overview_buckets(rows)
        records = [_overview_record(k, overview[k], list) for k in sorted(overview)]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table("ledger", records=rows, columns=list(LEDGER_COLUMNS))
            await conn.executemany(
                "INSERT INTO spend_buckets (scope, name, bucket, cost_usd) VALUES ($1,$2,$3,$4) "
                "ON CONFLICT (scope, name, bucket) DO UPDATE SET cost_usd = spend_buckets.cost_usd + excluded.cost_usd",
                spend_buckets(rows))
            if records:
                await conn.executemany(_UPSERT_OVERVIEW_PG, records)

    async def spend(self, group_by: str, since: float, until: float) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(_spend_sql(group_by, "postgres", lambda i: f"${i}"), since, until)
        return _spend_rows(rows, group_by)

    async def spent_since(self, scope: str, name: str, since: float) -> float:
        return float(await self._pool.fetchval(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM spend_buckets WHERE scope = $1 AND name = $2 AND bucket >= $3",
            scope, name, int(since // BUCKET_S)))

    async def recent(self, limit: int, filters: dict[str, str]) -> list[dict[str, Any]]:
        conds = [f"{_RECENT_FILTERS[k]} = ${i}" for i, k in enumerate(filters, start=1)]
        values: list[Any] = [int(v) if k == "status" else v for k, v in filters.items()]
        sql = (f"SELECT {','.join(LEDGER_COLUMNS)} FROM ledger WHERE {' AND '.join(conds) or 'TRUE'} "
               f"ORDER BY ts DESC LIMIT ${len(values) + 1}")
        return [dict(r) for r in await self._pool.fetch(sql, *values, limit)]

    async def ledger_rows(self, columns: Sequence[str], *, since: float | None = None, request_id: str | None = None,
                          skip_kinds: Sequence[str] = (), limit: int = 1000) -> list[tuple[Any, ...]]:
        """See SqliteStore.ledger_rows."""
        sql, values = _ledger_rows_sql(columns, since, request_id, skip_kinds, lambda i: f"${i}")
        return [tuple(r) for r in await self._pool.fetch(sql, *values, limit)]

    async def read_overview(self, since: int) -> list[tuple[Any, ...]]:
        """See SqliteStore.read_overview."""
        rows = await self._pool.fetch(_READ_OVERVIEW + "$1", int(since))
        return [(*r[:1], r[1] or None, *r[2:9], array("i", r[9]).tobytes(), array("i", r[10]).tobytes())
                for r in rows]

    async def audit(self, actor: str, action: str, subject: str | None, detail: dict[str, Any]) -> None:
        await self.audit_many([(time.time(), actor, action, subject, json.dumps(detail))])

    async def audit_many(self, rows: list[tuple[Any, ...]]) -> None:
        await self._pool.executemany("INSERT INTO audit (ts, actor, action, subject, detail) VALUES ($1,$2,$3,$4,$5)",
                                     rows)

    async def audit_log(self, limit: int) -> list[dict[str, Any]]:
        rows = await self._pool.fetch("SELECT ts, actor, action, subject, detail FROM audit ORDER BY ts DESC LIMIT $1",
                                      limit)
        return [{"ts": r[0], "actor": r[1], "action": r[2], "subject": r[3], "detail": json.loads(r[4]) if r[4] else {}}
                for r in rows]


def open_store(kind: str, sqlite_path: str, postgres_dsn: str | None) -> Store:
    if kind == "postgres":
        assert postgres_dsn
        return PostgresStore(postgres_dsn)
    return SqliteStore(sqlite_path)
