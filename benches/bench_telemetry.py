"""The always-on part of observability per request: Prometheus counts and the JSON access-log line,
the Python path the gateway had against one Rust call, side by side in one run.

    maturin develop --release && pytest benches/bench_telemetry.py -s --benchmark-only -p no:randomly

Both sides start from the same per-request values (what `Observability.record` reads from the
context and the outcome) and do what the request path and the log queue do for them:

- Python: build the `FinishRecord` (and its `AttemptRecord`), `Observability.count(record)` into
  a `MetricsStore`, and `orjson.dumps(json_fields(record))` joined into one batch of lines, as
  `AccessLog.format_batch` does on the event loop;
- Rust: build the finish tuple (the layout in `_core.pyi`), `Telemetry.finish(tuple)`, and one
  `take_log()` per batch.

A batch is 500 requests (a typical chat request: one attempt, streamed, priced, a cache miss,
traced). Printed: µs per request of each part and in total (median and best round), the ratio
Python / Rust. The PyO3 share (the call and reading the tuple) is `finish` here minus the same
work in pure Rust, which `cargo test --profile dev-opt --lib telemetry_cost -- --ignored
--nocapture` prints for the same record.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from llmgw._core import Telemetry
from llmgw.config import parse_config
from llmgw.observability.accesslog import json_fields
from llmgw.observability.metrics import LATENCY_BUCKETS, OVERHEAD_BUCKETS, MetricsStore
from llmgw.observability.plugin import Observability
from llmgw.observability.record import AttemptRecord, FinishRecord
from llmgw.providers import registry

BATCH = 500
T0 = 1_760_000_000_000_000_000
CONFIG = """
upstreams:
  up: {provider: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  smart: {upstream: up}
observability: {access_log: false}
"""


def raw(i: int) -> tuple[Any, ...]:
    """What the plugin reads per request (from ctx, outcome, usage, the attempt), as plain values."""
    start = T0 + i * 10_000_000
    return (f"req-{i:08x}", start, 0.8 + i * 1e-6, 0.21, 0.79, 0.0004 + i * 1e-9, "chat", "POST",
            "/v1/chat/completions", 200, "ok", "gpt-4o", "smart", "gpt4o-east", "openai", "key_01HX", "ci-bot",
            "platform", 850, 120, 0.0033, "miss", True, (i * 104729 + 1).to_bytes(16, "big"),
            ("gpt4o-east", "openai-east", "gpt-4o-2024-08-06", start + 2_000_000, start + 795_000_000, 200))


RAWS = [raw(i) for i in range(BATCH)]


def python_records(raws: list[tuple[Any, ...]]) -> list[FinishRecord]:
    out = []
    for (rid, start, dur, ttfb, up, over, kind, method, route, status, result, model, group, dep, provider, key_id,
         key_name, team, pt, ct, cost, cache, stream, trace, (adep, target, amodel, a0, a1, astatus)) in raws:
        rec = FinishRecord(
            rid, start, start + int(dur * 1e9), dur, ttfb, up, over, kind, "openai", method, route, status, result,
            model=model, group=group, deployment=dep, provider=provider, response_model=amodel, key_id=key_id,
            key_name=key_name, team=team, prompt_tokens=pt, completion_tokens=ct, cost_usd=cost, cache=cache,
            stream=stream, attempts=[AttemptRecord(adep, target, provider, amodel, a0, a1, astatus)])
        rec.trace_id = trace
        out.append(rec)
    return out


def rust_tuples(raws: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    out = []
    for (rid, start, dur, ttfb, up, over, kind, method, route, status, result, model, group, dep, provider, key_id,
         key_name, team, pt, ct, cost, cache, stream, trace, (adep, _target, _amodel, a0, a1, astatus)) in raws:
        out.append((rid, start, dur, ttfb, up, over, kind, method, route, status, result, model, group, dep, provider,
                    None, key_id, key_name, None, team, pt, ct, 0, False, cost, cache, stream, trace,
                    [(adep, astatus, None, (a1 - a0) / 1e9, "primary", False, False, False)], None, None))
    return out


def observability() -> Observability:
    p = Observability(parse_config(CONFIG, providers=registry, env={}))
    p.store = MetricsStore()
    return p


def telemetry(json_log: bool = True) -> Telemetry:
    return Telemetry(json_log=json_log, latency_bounds=list(LATENCY_BUCKETS), overhead_bounds=list(OVERHEAD_BUCKETS),
                     per_key=False)


def python_path(plugin: Observability, raws: list[tuple[Any, ...]]) -> bytes:
    records = python_records(raws)
    count = plugin.count
    for r in records:
        count(r)
    dumps = orjson.dumps
    return b"".join(dumps(json_fields(r)) + b"\n" for r in records)


def rust_path(tel: Telemetry, raws: list[tuple[Any, ...]]) -> bytes:
    finish = tel.finish
    for t in rust_tuples(raws):
        finish(t)
    return tel.take_log()


def test_both_sides_write_the_same_lines_and_counts() -> None:
    plugin, tel = observability(), telemetry()
    ours = rust_path(tel, RAWS[:50])
    theirs = python_path(plugin, RAWS[:50])
    assert ours == theirs
    assert plugin.store is not None
    snap = plugin.store.snapshot()
    assert tel.snapshot()["counters"] == snap["counters"] and tel.snapshot()["histograms"] == snap["histograms"]


RESULTS: dict[str, tuple[float, float]] = {}  # key -> (median, min) seconds per batch


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """µs per request from the median round and the best round (this shared 2-core machine's
    median carries other processes' load), and the ratio Python / Rust of each."""
    yield
    if not RESULTS:
        return
    per = {k: (med / BATCH * 1e6, best / BATCH * 1e6) for k, (med, best) in RESULTS.items()}
    lines = [f"\nmetrics + JSON access-log line, batches of {BATCH}: µs per request",
             f"  {'':<40}{'median':>8}{'best':>8}"]
    labels = {
        "py record": "python: build FinishRecord",
        "py count": "python: Observability.count",
        "py json": "python: json_fields + orjson (batch)",
        "py total": "python total",
        "rs tuple": "rust: build the tuple",
        "rs finish": "rust: Telemetry.finish (+ take_log)",
        "rs finish nolog": "rust: Telemetry.finish, log off",
        "rs total": "rust total",
    }
    for key, label in labels.items():
        if key in per:
            lines.append(f"  {label:<40}{per[key][0]:>8.2f}{per[key][1]:>8.2f}")
    if "py total" in per and "rs total" in per:
        py, rs = per["py total"], per["rs total"]
        lines.append(f"  {'python / rust':<40}{py[0] / rs[0]:>7.1f}x{py[1] / rs[1]:>7.1f}x")
    print("\n".join(lines))


def _keep(benchmark: Any, key: str) -> None:
    if benchmark.stats is not None:
        RESULTS[key] = (benchmark.stats.stats.median, benchmark.stats.stats.min)


@pytest.mark.benchmark(group="telemetry: 500 requests")
def test_python_total(benchmark: Any) -> None:
    plugin = observability()
    data = benchmark(python_path, plugin, RAWS)
    assert data.count(b"\n") == BATCH
    _keep(benchmark, "py total")


@pytest.mark.benchmark(group="telemetry: 500 requests")
def test_rust_total(benchmark: Any) -> None:
    tel = telemetry()
    data = benchmark(rust_path, tel, RAWS)
    assert data.count(b"\n") == BATCH and tel.log_dropped == 0
    _keep(benchmark, "rs total")


@pytest.mark.benchmark(group="telemetry parts")
def test_python_record(benchmark: Any) -> None:
    benchmark(python_records, RAWS)
    _keep(benchmark, "py record")


@pytest.mark.benchmark(group="telemetry parts")
def test_python_count(benchmark: Any) -> None:
    plugin = observability()
    records = python_records(RAWS)

    def run() -> None:
        for r in records:
            plugin.count(r)

    benchmark(run)
    _keep(benchmark, "py count")


@pytest.mark.benchmark(group="telemetry parts")
def test_python_json(benchmark: Any) -> None:
    records = python_records(RAWS)
    dumps = orjson.dumps
    benchmark(lambda: b"".join(dumps(json_fields(r)) + b"\n" for r in records))
    _keep(benchmark, "py json")


@pytest.mark.benchmark(group="telemetry parts")
def test_rust_tuple(benchmark: Any) -> None:
    benchmark(rust_tuples, RAWS)
    _keep(benchmark, "rs tuple")


@pytest.mark.benchmark(group="telemetry parts")
def test_rust_finish(benchmark: Any) -> None:
    tel = telemetry()
    tuples = rust_tuples(RAWS)

    def run() -> bytes:
        for t in tuples:
            tel.finish(t)
        return tel.take_log()

    benchmark(run)
    _keep(benchmark, "rs finish")


@pytest.mark.benchmark(group="telemetry parts")
def test_rust_finish_log_off(benchmark: Any) -> None:
    tel = telemetry(json_log=False)
    tuples = rust_tuples(RAWS)

    def run() -> None:
        for t in tuples:
            tel.finish(t)

    benchmark(run)
    _keep(benchmark, "rs finish nolog")
