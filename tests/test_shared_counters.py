"""SharedCounters (rust/src/shm/): one rate limit and one budget per key across processes.

The Rust tests (`cargo test shm`) cover the table, the GCRA cases of ratelimit.rs and thread
hammering; these check the Python surface and what only real processes can show: several
interpreters mapping one file see one limit.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import time
from pathlib import Path

import pytest

from llmgw._core import RateLimiter, SharedCounters

PROCESSES = 4


@pytest.fixture
def table_path(tmp_path: Path) -> str:
    return str(tmp_path / "counters.shm")


@pytest.fixture
def table(table_path: str) -> SharedCounters:
    return SharedCounters(table_path, slots=1024, create=True)


# --- the table ---------------------------------------------------------------------------------


def test_create_open_and_properties(table_path: str) -> None:
    created = SharedCounters(table_path, slots=1000, create=True)
    assert created.path == table_path
    assert created.capacity == 1024
    assert len(created) == 0
    assert Path(table_path).stat().st_size == 64 + 1024 * 64
    created.add("hits", 3)
    opened = SharedCounters(table_path)  # slots is ignored when opening
    assert opened.capacity == 1024 and len(opened) == 1
    assert "capacity=1024" in repr(opened) and repr(table_path) in repr(opened)
    assert SharedCounters(Path(table_path)).get("hits") == 3  # os.PathLike is accepted too


def test_a_key_survives_close_and_reopen(table_path: str) -> None:
    first = SharedCounters(table_path, create=True)
    first.add("requests", 41)
    assert first.reserve("budget:team:a", 500, 1000)
    assert first.acquire([("rpm:key:a", 1.0, 10.0, 10.0)], now=5.0) == 0.0
    del first
    again = SharedCounters(table_path)
    assert again.add("requests", 1) == 42
    assert again.budget("budget:team:a") == (500, 0)
    assert again.acquire([("rpm:key:a", 1.0, 10.0, 1.0)], now=5.0) == 1.0


def test_create_truncates(table_path: str) -> None:
    old = SharedCounters(table_path, slots=64, create=True)
    old.add("k", 5)
    fresh = SharedCounters(table_path, slots=128, create=True)
    assert (fresh.get("k"), len(fresh), fresh.capacity) == (0, 0, 128)
    assert SharedCounters(table_path).get("k") == 0
    assert old.add("k", 1) == 6, "a mapping of the replaced file keeps working (no SIGBUS)"


def test_opening_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.shm"):
        SharedCounters(str(tmp_path / "absent.shm"))


@pytest.mark.parametrize("content", [b"", b"not a table", b"\x00" * 4096, b"LLMGWSHM" + b"\xff" * 200])
def test_opening_a_non_table_file_raises_value_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "other.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a shared counters table"):
        SharedCounters(str(path))


def test_opening_a_table_of_another_version_raises_value_error(table_path: str) -> None:
    SharedCounters(table_path, slots=16, create=True)
    data = bytearray(Path(table_path).read_bytes())
    data[8] = 2  # the version field
    Path(table_path).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="version 2"):
        SharedCounters(table_path)


@pytest.mark.parametrize("slots", [0, -1, 2**26 + 1])
def test_invalid_slot_counts(table_path: str, slots: int) -> None:
    with pytest.raises(ValueError, match="slots must be between"):
        SharedCounters(table_path, slots=slots, create=True)


def test_a_full_table_raises_overflow_error_naming_path_and_capacity(table_path: str) -> None:
    full = SharedCounters(table_path, slots=8, create=True)
    for i in range(8):
        full.add(f"k{i}", i)
    with pytest.raises(OverflowError, match=rf"{table_path}.*8 of 8 slots"):
        full.add("one-more", 1)
    with pytest.raises(OverflowError):
        full.reserve("budget", 1, 10)
    with pytest.raises(OverflowError):
        full.acquire([("rpm", 1.0, 1.0, 1.0)], now=0.0)
    assert [full.get(f"k{i}") for i in range(8)] == list(range(8)), "nothing was overwritten"
    assert full.get("absent") == 0 and full.budget("absent") == (0, 0)


# --- rate limits ---------------------------------------------------------------------------------


def test_gcra_matches_the_in_process_rate_limiter(table: SharedCounters) -> None:
    # times and cost/rate exact in binary and in ns: elsewhere the f64 limiter is off by ulps
    # (with now = step * 0.05 it denies one call by 3.6e-15 s that the ns clock admits)
    limiter = RateLimiter()
    outcomes = set()
    for step in range(4000):
        checks = [(f"k{step % 7}", 2.0, 10.0, float(step % 4)), ("team", 4.0, 30.0, 1.0)]
        now = step / 16
        wait = table.acquire(checks, now=now)
        assert wait == limiter.acquire(checks, now=now), step
        outcomes.add(wait > 0)
    assert outcomes == {False, True}


def test_acquire_refund_charge_remaining_reset_after(table: SharedCounters) -> None:
    assert table.acquire([("tpm", 10.0, 1000.0, 800.0)], now=0.0) == 0.0
    assert table.remaining("tpm", 10.0, 1000.0, now=0.0) == 200.0
    assert table.reset_after("tpm", 10.0, 1000.0, now=0.0) == 80.0
    assert table.refund("tpm", 10.0, 1000.0, 500.0, now=0.0) == 500.0
    assert table.remaining("tpm", 10.0, 1000.0, now=0.0) == 700.0
    table.charge("tpm", 10.0, 1000.0, 2000.0, now=0.0)
    assert table.remaining("tpm", 10.0, 1000.0, now=0.0) == 0.0
    assert table.acquire([("tpm", 10.0, 1000.0, 1.0)], now=0.0) == pytest.approx(130.1)
    assert table.acquire([("tpm", 10.0, 1000.0, 1001.0)], now=0.0) == math.inf
    assert table.remaining("unknown", 10.0, 1000.0) == 1000.0
    assert table.reset_after("unknown", 10.0, 1000.0) == 0.0
    assert table.refund("unknown", 10.0, 1000.0, 5.0) == 0.0


def test_retry_after_is_enough(table: SharedCounters) -> None:
    checks = [("k", 3.0, 7.0, 1.0)]
    for _ in range(7):
        assert table.acquire(checks, now=123.456) == 0.0
    wait = table.acquire(checks, now=123.456)
    assert wait == pytest.approx(1 / 3)
    assert table.acquire(checks, now=123.456 + wait * 0.999) > 0.0
    assert table.acquire(checks, now=123.456 + wait) == 0.0


def test_the_default_clock_is_time_monotonic(table: SharedCounters) -> None:
    before = time.monotonic()
    assert table.acquire([("k", 1.0, 10.0, 10.0)]) == 0.0
    after = time.monotonic()
    assert 10.0 - 1e-6 <= table.reset_after("k", 1.0, 10.0, now=before) <= 10.0 + (after - before) + 1e-6
    assert 0.0 < table.acquire([("k", 1.0, 10.0, 1.0)]) <= 1.0


@pytest.mark.parametrize(
    "checks, error",
    [
        ([("k", 0.0, 1.0, 1.0)], ValueError),
        ([("k", 1.0, -1.0, 1.0)], ValueError),
        ([("k", 1.0, 1.0, -1.0)], ValueError),
        ([("k", 1.0, 1.0, math.nan)], ValueError),
        ([("k", 1.0, 1.0, 1.0)] * 17, ValueError),
        ([("k", 1.0, 1.0)], TypeError),
        ([(1, 1.0, 1.0, 1.0)], TypeError),
        ("k", TypeError),
    ],
)
def test_acquire_argument_checks_match_rate_limiter(table: SharedCounters, checks, error) -> None:
    with pytest.raises(error):
        RateLimiter().acquire(checks, now=0.0)
    with pytest.raises(error):
        table.acquire(checks, now=0.0)
    assert len(table) == 0


def test_rate_argument_checks(table: SharedCounters) -> None:
    with pytest.raises(ValueError):
        table.acquire([("k", 1.0, 1.0, 1.0)], now=math.inf)
    with pytest.raises(ValueError, match="within"):
        table.acquire([("k", 1.0, 1.0, 1.0)], now=1e10)
    with pytest.raises(ValueError):
        table.refund("k", 1.0, 1.0, -1.0)
    with pytest.raises(ValueError):
        table.charge("k", 1.0, 1.0, math.nan)
    with pytest.raises(ValueError):
        table.remaining("k", -1.0, 1.0)
    with pytest.raises(ValueError):
        table.reset_after("k", 1.0, math.inf)
    assert table.acquire([], now=0.0) == 0.0


# --- budgets and counters ----------------------------------------------------------------------


def test_budget_reserve_settle_release(table: SharedCounters) -> None:
    assert table.reserve("team", 600, 1000)
    assert table.reserve("team", 400, 1000), "exactly the limit is allowed"
    assert not table.reserve("team", 1, 1000)
    table.release("team", 400)
    assert table.budget("team") == (600, 0)
    table.settle("team", 600, 900)  # costlier than reserved: committed passes nothing yet
    assert table.budget("team") == (900, 900)
    assert table.reserve("team", 100, 1000)
    table.settle("team", 100, 250)  # overshoot: the money is spent
    assert table.budget("team") == (1150, 1150)
    assert not table.reserve("team", 0, 1000)
    assert table.budget("unknown") == (0, 0)


def test_seed_sets_only_an_untouched_key(table: SharedCounters) -> None:
    assert table.seed("2026-05:team:a", 700)
    assert not table.seed("2026-05:team:a", 1)
    assert table.budget("2026-05:team:a") == (700, 700)
    assert table.reserve("2026-05:team:a", 300, 1000)
    assert not table.reserve("2026-05:team:a", 1, 1000)
    assert table.reserve("2026-05:team:b", 5, 1000)
    assert not table.seed("2026-05:team:b", 500)


def test_budget_argument_checks(table: SharedCounters) -> None:
    with pytest.raises(ValueError, match="amount must be >= 0"):
        table.reserve("k", -1, 10)
    with pytest.raises(ValueError):
        table.settle("k", 1, -1)
    with pytest.raises(ValueError):
        table.release("k", -5)
    with pytest.raises(ValueError):
        table.seed("k", -5)
    with pytest.raises(OverflowError):
        table.reserve("k", 2**63, 10)
    assert len(table) == 0


def test_counters(table: SharedCounters) -> None:
    assert table.get("n") == 0
    assert table.add("n", 10) == 10
    assert table.add("n", -3) == 7
    assert table.get("n") == 7
    table.reserve("n", 1, 10)
    table.acquire([("n", 1.0, 5.0, 1.0)], now=0.0)
    assert table.get("n") == 7 and len(table) == 3, "one string, three independent keys"


# --- across processes --------------------------------------------------------------------------


def _acquire_worker(path: str, attempts: int, start, results) -> None:
    table = SharedCounters(path)
    start.wait()
    admitted = 0
    for i in range(attempts):
        # half the calls check a second, roomy bucket first: its charge must be rolled back when
        # the shared bucket denies, or the final remaining() would show a leak
        checks = [("rpm:team:shared", 1e-3, 1000.0, 1.0)]
        if i % 2:
            checks.insert(0, ("rpm:roomy", 1e-3, 1e6, 1.0))
        if table.acquire(checks, now=500.0) == 0.0:
            admitted += 1
    results.put(admitted)


def _reserve_worker(path: str, attempts: int, start, results) -> None:
    table = SharedCounters(path)
    start.wait()
    reserved = 0
    for i in range(attempts):
        amount = 1 + i % 7
        if table.reserve("budget:team:shared", amount, 10_000):
            reserved += amount
            committed, _ = table.budget("budget:team:shared")
            assert committed <= 10_000
    results.put(reserved)


def _run(worker, path: str, attempts: int) -> list[int]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    processes = [ctx.Process(target=worker, args=(path, attempts, start, results)) for _ in range(PROCESSES)]
    for p in processes:
        p.start()
    counts: list[int] = []
    deadline = time.monotonic() + 60
    while len(counts) < PROCESSES:
        try:
            counts.append(results.get(timeout=0.5))
        except queue.Empty:
            # a worker that died (import error, failed assert) fails the test now, not at timeout
            failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            assert not failed and time.monotonic() < deadline, f"workers exited with {failed}"
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    return counts


def test_one_rate_limit_across_processes(table_path: str) -> None:
    table = SharedCounters(table_path, slots=64, create=True)
    counts = _run(_acquire_worker, table_path, 1000)
    assert sum(counts) == 1000, counts
    assert table.remaining("rpm:team:shared", 1e-3, 1000.0, now=500.0) == 0.0
    # every roomy charge that was kept belongs to an admitted call: the rest were rolled back
    roomy_used = 1e6 - table.remaining("rpm:roomy", 1e-3, 1e6, now=500.0)
    assert roomy_used <= sum(counts) and roomy_used == pytest.approx(round(roomy_used))


def test_one_budget_across_processes(table_path: str) -> None:
    table = SharedCounters(table_path, slots=64, create=True)
    counts = _run(_reserve_worker, table_path, 2000)
    committed, spent = table.budget("budget:team:shared")
    assert committed == sum(counts) and spent == 0
    assert 10_000 - 7 < committed <= 10_000, counts
