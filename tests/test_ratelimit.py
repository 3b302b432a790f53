"""llmgw._core.RateLimiter: GCRA semantics seen from Python, with `now` as a fake clock."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmgw._core import RATE_LIMIT_MAX_CHECKS, RateLimiter


def test_burst_is_admitted_then_the_next_call_waits_one_interval() -> None:
    limiter = RateLimiter()
    rpm = ("rpm:key:abc", 120 / 60, 5.0, 1.0)  # 120 requests per minute, burst 5
    assert [limiter.acquire([rpm], now=10.0) for _ in range(5)] == [0.0] * 5
    assert limiter.acquire([rpm], now=10.0) == 0.5
    assert limiter.acquire([rpm], now=10.5) == 0.0


def test_cost_above_burst_returns_inf_and_charges_nothing() -> None:
    limiter = RateLimiter()
    checks = [("rpm:user:u", 1.0, 10.0, 1.0), ("tpm:user:u", 100.0, 6000.0, 6001.0)]
    assert limiter.acquire(checks, now=0.0) == math.inf
    assert len(limiter) == 0
    assert limiter.acquire([("tpm:user:u", 100.0, 6000.0, 6000.0)], now=0.0) == 0.0


def test_a_denial_in_one_bucket_charges_none_of_the_others() -> None:
    limiter = RateLimiter()
    assert limiter.acquire([("rpm:team:t", 1.0, 2.0, 2.0)], now=0.0) == 0.0
    for _ in range(20):
        assert limiter.acquire([("rpm:key:k", 1.0, 2.0, 1.0), ("rpm:team:t", 1.0, 2.0, 1.0)], now=0.0) == 1.0
    # the key bucket is untouched: its full burst still goes through
    assert limiter.acquire([("rpm:key:k", 1.0, 2.0, 2.0)], now=0.0) == 0.0


def test_retry_after_is_the_longest_wait_among_denying_buckets() -> None:
    limiter = RateLimiter()
    limiter.acquire([("rpm", 1.0, 1.0, 1.0), ("tpm", 10.0, 100.0, 100.0)], now=0.0)
    checks = [("rpm", 1.0, 1.0, 1.0), ("tpm", 10.0, 100.0, 30.0)]
    assert limiter.acquire(checks, now=0.0) == 3.0
    assert limiter.acquire(checks, now=2.9) == pytest.approx(0.1)
    assert limiter.acquire(checks, now=3.0) == 0.0


def test_estimate_then_refund_the_unused_tokens() -> None:
    limiter = RateLimiter()
    tpm = ("tpm:key:k", 1000 / 60, 1000.0)
    assert limiter.acquire([(*tpm, 900.0)], now=0.0) == 0.0  # estimated 900 tokens
    assert limiter.refund(*tpm, 700.0, now=0.0) == 700.0  # used 200
    assert limiter.acquire([(*tpm, 800.0)], now=0.0) == 0.0
    assert limiter.acquire([(*tpm, 1.0)], now=0.0) > 0.0


def test_refund_never_fills_a_bucket_past_full() -> None:
    limiter = RateLimiter()
    limiter.acquire([("k", 1.0, 10.0, 4.0)], now=0.0)
    assert limiter.refund("k", 1.0, 10.0, 100.0, now=0.0) == 4.0
    assert limiter.refund("k", 1.0, 10.0, 100.0, now=0.0) == 0.0
    assert limiter.refund("never-seen", 1.0, 10.0, 5.0, now=0.0) == 0.0
    assert limiter.acquire([("k", 1.0, 10.0, 10.0)], now=0.0) == 0.0
    assert limiter.acquire([("k", 1.0, 10.0, 1.0)], now=0.0) == 1.0


def test_charging_usage_beyond_the_estimate_delays_later_calls() -> None:
    limiter = RateLimiter()
    limiter.acquire([("tpm", 1.0, 10.0, 10.0)], now=0.0)
    limiter.charge("tpm", 1.0, 10.0, 15.0, now=0.0)
    # 25 owed at 1/s, 1 more conforms once 16 have refilled
    assert limiter.acquire([("tpm", 1.0, 10.0, 1.0)], now=0.0) == 16.0


def test_idle_buckets_are_evicted() -> None:
    limiter = RateLimiter()
    for i in range(10):
        limiter.acquire([(f"rpm:user:{i}", 1.0, 10.0, float(i + 1))], now=0.0)
    assert len(limiter) == 10
    assert limiter.evict_idle(now=5.0) == 5
    assert len(limiter) == 5
    assert limiter.evict_idle(now=100.0) == 5
    assert len(limiter) == 0


def test_max_keys_caps_the_number_of_buckets() -> None:
    limiter = RateLimiter(max_keys=32)
    assert limiter.max_keys == 32
    for i in range(1000):
        assert limiter.acquire([(f"user:{i}", 1.0, 1e6, float(i + 1))], now=0.0) == 0.0
        assert len(limiter) <= 32
    # the most indebted bucket is still remembered
    assert limiter.acquire([("user:999", 1.0, 1e6, 1e6 - 999)], now=0.0) == 1.0


def test_checks_may_be_a_tuple_and_numbers_may_be_ints() -> None:
    limiter = RateLimiter()
    assert limiter.acquire((("k", 1, 2, 1), ("j", 1, 2, 2)), now=0) == 0.0
    assert limiter.acquire([], now=0.0) == 0.0


@pytest.mark.parametrize(
    ("checks", "error"),
    [
        ([("k", 0.0, 1.0, 1.0)], ValueError),
        ([("k", 1.0, -1.0, 1.0)], ValueError),
        ([("k", 1.0, 1.0, -1.0)], ValueError),
        ([("k", 1.0, 1.0, math.nan)], ValueError),
        ([("k", 1.0, 1.0)], TypeError),
        ([(1, 1.0, 1.0, 1.0)], TypeError),
        ([["k", 1.0, 1.0, 1.0]], TypeError),
        ("k", TypeError),
        ([("k", 1.0, 100.0, 1.0)] * (RATE_LIMIT_MAX_CHECKS + 1), ValueError),
    ],
)
def test_malformed_checks_raise_clear_errors(checks: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        RateLimiter().acquire(checks, now=0.0)  # type: ignore[arg-type]


def test_invalid_constructor_and_clock_arguments() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        RateLimiter(max_keys=1)
    with pytest.raises(ValueError, match="now"):
        RateLimiter().acquire([("k", 1.0, 1.0, 1.0)], now=math.inf)


def test_default_clock_is_monotonic_seconds_since_creation() -> None:
    limiter = RateLimiter()
    first = limiter.now()
    assert 0.0 <= first <= limiter.now()
    assert limiter.acquire([("k", 1.0, 1.0, 1.0)]) == 0.0
    assert 0.0 < limiter.acquire([("k", 1.0, 1.0, 1.0)]) <= 1.0


def test_threads_sharing_a_bucket_never_overdraw_it() -> None:
    limiter = RateLimiter()
    admitted = [0] * 4

    def worker(index: int) -> None:
        for i in range(3000):
            checks = [("rpm:team:t", 1.0, 1000.0, 1.0), (f"rpm:user:{index}:{i % 10}", 1.0, 1e6, 1.0)]
            if limiter.acquire(checks, now=0.0) == 0.0:
                admitted[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 1000


calls = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=5.0),  # time step
        st.floats(min_value=0.01, max_value=1.0),  # cost as a fraction of the burst
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.05, max_value=100.0),
    burst=st.floats(min_value=1.0, max_value=500.0),
    start=st.floats(min_value=0.0, max_value=1e7),
    steps=calls,
)
def test_admitted_never_exceeds_burst_plus_refill_over_any_window(
    rate: float, burst: float, start: float, steps: list[tuple[float, float]]
) -> None:
    limiter = RateLimiter()
    now = start
    admitted: list[tuple[float, float]] = []
    for dt, fraction in steps:
        now += dt / rate
        cost = fraction * burst
        if limiter.acquire([("k", rate, burst, cost)], now=now) == 0.0:
            admitted.append((now, cost))
    for i, (t0, _) in enumerate(admitted):
        total = 0.0
        for t1, cost in admitted[i:]:
            total += cost
            assert total <= (burst + rate * (t1 - t0)) * (1 + 1e-9) + 1e-9


bucket_states = st.lists(
    st.tuples(
        st.floats(min_value=0.01, max_value=1000.0),  # rate
        st.floats(min_value=1.0, max_value=1000.0),  # burst
        st.floats(min_value=0.0, max_value=1.0),  # fraction spent beforehand
        st.floats(min_value=0.0, max_value=1.0),  # fraction requested now
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(now=st.floats(min_value=0.0, max_value=1e8), buckets=bucket_states)
def test_a_denied_call_is_admitted_exactly_at_its_retry_after_and_not_before(
    now: float, buckets: list[tuple[float, float, float, float]]
) -> None:
    limiter = RateLimiter()
    for i, (rate, burst, spent, _) in enumerate(buckets):
        limiter.acquire([(f"b{i}", rate, burst, spent * burst)], now=now)
    checks = [(f"b{i}", rate, burst, want * burst) for i, (rate, burst, _, want) in enumerate(buckets)]
    wait = limiter.acquire(checks, now=now)
    if wait == 0.0:
        return
    assert 0.0 < wait < math.inf
    early = now + wait - max(wait * 1e-9, 1e-6)
    if early > now:
        assert limiter.acquire(checks, now=early) > 0.0
    assert limiter.acquire(checks, now=now + wait) == 0.0


@settings(max_examples=100, deadline=None)
@given(
    rounds=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3),  # seconds passing
            st.lists(st.tuples(st.sampled_from("abcd"), st.integers(min_value=0, max_value=8)), max_size=4, unique_by=lambda c: c[0]),
        ),
        max_size=60,
    )
)
def test_calls_are_all_or_nothing_against_a_model(rounds: list[tuple[int, list[tuple[str, int]]]]) -> None:
    limiter = RateLimiter()
    level = dict.fromkeys("abcd", 20.0)  # rate 1/s, burst 20
    now = 0.0
    for dt, picks in rounds:
        now += dt
        level = {k: min(20.0, v + dt) for k, v in level.items()}
        fits = all(cost <= level[key] for key, cost in picks)
        result = limiter.acquire([(key, 1.0, 20.0, float(cost)) for key, cost in picks], now=now)
        assert (result == 0.0) == fits
        if fits:
            for key, cost in picks:
                level[key] -= cost


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.slow
def test_one_million_keys_stay_under_128_bytes_each() -> None:
    limiter = RateLimiter(max_keys=1_000_000)
    before = _rss_bytes()
    acquire = limiter.acquire
    for i in range(1_000_000):
        acquire([(f"rpm:key:{i:07d}", 1.0, 60.0, 1.0)], 0.0)
    held = len(limiter)
    assert 900_000 < held <= 1_000_000
    per_key_rss = (_rss_bytes() - before) / held
    assert per_key_rss <= 128, f"{per_key_rss:.1f} bytes of RSS per key"
    assert limiter.memory_bytes() / held <= 80
