"""The ledger stores' `overview_buckets` (what the dashboard's overview reads instead of ledger
rows): the batch aggregated per (minute, model) at write time, merged with what is there, in
SQLite and PostgreSQL; the histograms' bins and the percentiles read from them."""

from __future__ import annotations

import asyncio
import math
from array import array

import numpy as np
import pytest

from llmgw.dashboard.api import hist_quantiles
from llmgw.governance.stores import (HIST_BINS, HIST_LO_MS, HIST_RATIO, LEDGER_COLUMNS, PostgresStore, SqliteStore,
                                     hist_bin)

T0 = 1_800_000_000.0  # a whole minute


def row(ts: float, model: str | None = "m", kind: str = "chat", status: int | None = 200, latency: float | None = 10.0,
        ttft: float | None = 5.0, tokens: tuple[int | None, int | None] = (3, 4), cost: float | None = 0.5) -> tuple:
    r = dict.fromkeys(LEDGER_COLUMNS)
    r.update(request_id=f"r{ts}", ts=ts, kind=kind, model=model, status=status, latency_ms=latency, ttft_ms=ttft,
             prompt_tokens=tokens[0], completion_tokens=tokens[1], cost_usd=cost)
    return tuple(r.values())


def hist(counts: dict[int, int]) -> list[int]:
    out = [0] * HIST_BINS
    for i, n in counts.items():
        out[i] += n
    return out


def test_bins_are_log_spaced_and_cover_everything():
    assert hist_bin(0.0) == hist_bin(0.05) == hist_bin(HIST_LO_MS * HIST_RATIO * 0.999) == 0
    for i in range(1, HIST_BINS - 1):
        lo = HIST_LO_MS * HIST_RATIO ** i
        assert hist_bin(lo * 1.0001) == i == hist_bin(lo * HIST_RATIO * 0.9999)
    assert hist_bin(1e12) == HIST_BINS - 1 and HIST_LO_MS * HIST_RATIO ** (HIST_BINS - 1) > 10 * 60_000
    # The geometric midpoint is within ~10% of anything in its (inner) bin.
    for ms in (0.13, 1.0, 7.3, 250.0, 9_999.0, 500_000.0):
        (got,), = hist_quantiles(np.array([hist({hist_bin(ms): 1})]), (0.5,))
        assert 1 / math.sqrt(HIST_RATIO) - 1e-9 <= got / ms <= math.sqrt(HIST_RATIO) + 1e-9


def test_hist_quantiles_nearest_rank_and_clamped():
    h = np.array([hist({10: 5, 20: 4, 30: 1}), hist({}), hist({40: 1})])
    p50, p99 = hist_quantiles(h, (0.5, 0.99))
    mid = [HIST_LO_MS * HIST_RATIO ** (i + 0.5) for i in range(HIST_BINS)]
    assert p50[0] == pytest.approx(mid[10]) and p99[0] == pytest.approx(mid[30]) and math.isnan(p50[1])
    assert p50[2] == pytest.approx(mid[40])
    # Clamped to the least and greatest value seen (one value: exact).
    p50, = hist_quantiles(h, (0.5,), least=np.array([0.0, 0.0, 12.5]), greatest=np.array([1e9, 1e9, 12.5]))
    assert p50[2] == 12.5 and p50[0] == pytest.approx(mid[10])


def check_merged(got: list[tuple]) -> None:
    """What `batches()` wrote, as read back: one row per (minute, model), kinds skipped."""
    by = {(r[0], r[1]): r for r in got}
    assert set(by) == {(T0 // 60, "m"), (T0 // 60, None), (T0 // 60 + 1, "m")}
    bucket, model, n, errors, tin, tout, cost, lo, hi, lat, ttft = by[(T0 // 60, "m")]
    assert (n, errors, tin, tout) == (4, 2, 3 + 3 + 3, 4 + 4 + 4 + 4) and cost == pytest.approx(1.5)
    assert (lo, hi) == (1.0, 300.0)
    assert list(array("i", lat)) == hist({hist_bin(1.0): 1, hist_bin(10.0): 1, hist_bin(300.0): 1})
    assert list(array("i", ttft)) == hist({hist_bin(5.0): 3, hist_bin(7.0): 1})
    assert by[(T0 // 60, None)][2:6] == (1, 0, 3, 4) and by[(T0 // 60 + 1, "m")][2:4] == (1, 1)
    assert by[(T0 // 60, None)][7:9] == (10.0, 10.0)


def batches() -> list[list[tuple]]:
    return [
        [row(T0 + 1, latency=1.0), row(T0 + 2, status=500, latency=None), row(T0 + 3, kind="shadow"),
         row(T0 + 4, kind="models"), row(T0 + 5, model=None)],
        [row(T0 + 6, status=429, latency=300.0, ttft=7.0, tokens=(None, 4), cost=None),
         row(T0 + 61, status=503), row(T0 + 7, latency=10.0)],
    ]


def test_sqlite_merges_batches_in_the_write_transaction(tmp_path):
    async def run() -> None:
        store = SqliteStore(str(tmp_path / "o.db"))
        await store.open()
        for b in batches():
            store.write_ledger(b)
        check_merged(await store.read_overview(int(T0 // 60)))
        assert await store.read_overview(int(T0 // 60) + 2) == []
        await store.close()
        again = SqliteStore(str(tmp_path / "o.db"))  # an existing file: the schema is created if missing only
        await again.open()
        check_merged(await again.read_overview(0))
        await again.close()

    asyncio.run(run())


def test_postgres_merges_batches_from_two_replicas(postgres_server):
    dsn = postgres_server.new_database()

    async def run() -> None:
        a, b = PostgresStore(dsn), PostgresStore(dsn)
        await a.open()
        await b.open()
        first, second = batches()
        await asyncio.gather(a.write_ledger(first), b.write_ledger(second))
        check_merged(await a.read_overview(int(T0 // 60)))
        await a.close()
        await b.close()

    asyncio.run(run())
