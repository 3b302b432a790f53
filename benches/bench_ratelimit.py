"""RateLimiter.acquire (Rust) vs a pure-Python GCRA dict, side by side in one run.

    maturin develop --release && pytest benches/bench_ratelimit.py --benchmark-group-by=group

A request checks 4 buckets (key and team requests per minute, key and model tokens per minute);
the checks list is built once per request, so the benchmark times the call with it prebuilt.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

import pytest

from llmgw._core import RateLimiter

Check = tuple[str, float, float, float]


class PythonGcraLimiter:
    """The best plain-Python equivalent: one dict of TATs behind one lock, all-or-nothing."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, checks: list[Check], now: float | None = None) -> float:
        if now is None:
            now = time.monotonic()
        tat = self._tat
        pending: dict[str, float] = {}
        wait = 0.0
        with self._lock:
            for key, rate, burst, cost in checks:
                if cost > burst:
                    return math.inf
                base = max(pending.get(key, tat.get(key, -math.inf)), now)
                new_tat = base + cost / rate
                allow_at = min(new_tat - burst / rate, base)
                if allow_at > now:
                    wait = max(wait, allow_at - now)
                pending[key] = new_tat
            if wait > 0.0:
                return wait
            tat.update(pending)
        return 0.0


FOUR_BUCKETS: list[Check] = [
    ("rpm:key:sk-live-7f3a", 600 / 60, 600.0, 1.0),
    ("rpm:team:platform", 6000 / 60, 6000.0, 1.0),
    ("tpm:key:sk-live-7f3a", 1e12, 1e12, 850.0),
    ("tpm:model:gpt-4o", 1e12, 1e12, 850.0),
]


def _implementations() -> dict[str, Callable[..., float]]:
    return {"rust": RateLimiter().acquire, "python": PythonGcraLimiter().acquire}


def test_python_baseline_agrees_with_rust() -> None:
    rust, python = RateLimiter(), PythonGcraLimiter()
    for step in range(2000):
        checks = [(f"k{step % 7}", 2.0, 10.0, float(step % 4)), ("team", 5.0, 30.0, 1.0)]
        assert rust.acquire(checks, now=step * 0.05) == pytest.approx(python.acquire(checks, now=step * 0.05))


@pytest.mark.benchmark(group="ratelimit: 4 buckets, admitted, monotonic clock")
@pytest.mark.parametrize("impl", ["rust", "python"])
def test_acquire_four_buckets_admitted(benchmark, impl: str) -> None:
    acquire = _implementations()[impl]
    # 1e12 rates keep every call admitted for the whole run: this times the full charge path
    checks = [(key, 1e12, 1e12, cost) for key, _, _, cost in FOUR_BUCKETS]
    assert benchmark(acquire, checks) == 0.0


@pytest.mark.benchmark(group="ratelimit: 4 buckets, denied (retry-after)")
@pytest.mark.parametrize("impl", ["rust", "python"])
def test_acquire_four_buckets_denied(benchmark, impl: str) -> None:
    acquire = _implementations()[impl]
    assert acquire([("rpm:key:sk-live-7f3a", 10.0, 600.0, 600.0)], 0.0) == 0.0  # drain the key's bucket
    assert benchmark(acquire, FOUR_BUCKETS, 0.0) > 0.0


@pytest.mark.benchmark(group="ratelimit: 4 buckets, fresh key per call (10k keys)")
@pytest.mark.parametrize("impl", ["rust", "python"])
def test_acquire_with_many_distinct_keys(benchmark, impl: str) -> None:
    acquire = _implementations()[impl]
    requests = [
        [(f"rpm:key:{i}", 10.0, 600.0, 1.0), (f"rpm:user:{i % 97}", 10.0, 600.0, 1.0),
         ("rpm:team:platform", 1e12, 1e12, 1.0), ("tpm:model:gpt-4o", 1e12, 1e12, 850.0)]
        for i in range(10_000)
    ]
    cursor = iter(range(10**9))

    def one_request() -> float:
        return acquire(requests[next(cursor) % 10_000], 0.0)

    benchmark(one_request)
