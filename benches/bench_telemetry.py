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

`Telemetry.finish_request(ctx, run, ended)` against what the gateway does per request before it
(`Observability.on_finish` building the finish tuple from the Outcome, then `finish`), on one
real request run in process through the runner with a fake upstream (streamed chat, one
attempt, priced, traced, a key and a team, a cache miss; `run.http` a __slots__ object as the
server's HttpRequest is). Printed as µs per request beside the tuple path's parts; `python
benches/bench_telemetry.py --instructions` counts the same calls with callgrind (instructions
per request: a count that repeats run to run, where this 2-core VM's timings move 10-20%).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from llmgw._core import Telemetry
from llmgw.config import parse_config
from llmgw.observability.accesslog import json_fields
from llmgw.observability.metrics import LATENCY_BUCKETS, OVERHEAD_BUCKETS, MetricsStore
from llmgw.observability.plugin import Observability
from llmgw.governance.pricing import PriceBook
from llmgw.observability.record import AttemptRecord, FinishRecord
from llmgw.providers import registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

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
             f"  {'':<46}{'median':>8}{'best':>8}"]
    labels = {
        "py record": "python: build FinishRecord",
        "py count": "python: Observability.count",
        "py json": "python: json_fields + orjson (batch)",
        "py total": "python total",
        "rs tuple": "rust: build the tuple",
        "rs finish": "rust: Telemetry.finish (+ take_log)",
        "rs finish nolog": "rust: Telemetry.finish, log off",
        "rs total": "rust total",
        "fr tuple": "on_finish: build the tuple (facts, clocks)",
        "fr finish": "finish(tuple)",
        "fr on_finish": "on_finish: tuple build + finish",
        "fr request": "finish_request(ctx, run, ended)",
        "fr on_finish nolog": "on_finish, log off",
        "fr request nolog": "finish_request, log off",
    }
    for key, label in labels.items():
        if key == "fr tuple" and any(k.startswith("fr ") for k in per):
            lines.append(f"finish_request against on_finish's tuple (one real request, batches of {BATCH})")
        if key in per:
            lines.append(f"  {label:<46}{per[key][0]:>8.2f}{per[key][1]:>8.2f}")
        if key == "rs total" and "py total" in per and "rs total" in per:
            py, rs = per["py total"], per["rs total"]
            lines.append(f"  {'python / rust':<46}{py[0] / rs[0]:>7.1f}x{py[1] / rs[1]:>7.1f}x")
    if "fr on_finish" in per and "fr request" in per:
        old, new = per["fr on_finish"], per["fr request"]
        lines.append(f"  {'on_finish / finish_request':<46}{old[0] / new[0]:>7.1f}x{old[1] / new[1]:>7.1f}x")
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


# --- finish_request: the request's objects read in Rust ------------------------------------------------

REQUEST_CONFIG = """
upstreams:
  up: {provider: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-up-0123456789}
models:
  smart: {upstream: up, model: gpt-4o}
observability: {access_log: false}
plugins:
  - plugin_samples:FinishRecorder
"""


class _Http:
    """What finish_request reads of the server's HttpRequest (a __slots__ class there too)."""

    __slots__ = ("responded", "method")

    def __init__(self, responded: bool, method: str) -> None:
        self.responded, self.method = responded, method


def one_request() -> tuple[Any, Any, Any]:
    """(config, ctx, outcome) of one streamed chat request run through the runner."""
    from fakes import FakeHttp, FakePool, gateway_for, run, stream

    async def go() -> tuple[Any, Any, Any]:
        gw = gateway_for(REQUEST_CONFIG, up=FakePool(lambda: stream(["Hello", " there"], usage=(850, 120))))
        headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
        body = {"model": "smart", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        await run(gw, FakeHttp(body, headers=headers))
        [(ctx, outcome)] = next(p.instance for p in gw.chain.plugins if p.name == "FinishRecorder").records
        return gw.config, ctx, outcome

    config, ctx, outcome = asyncio.run(go())
    ctx.key_id, ctx.key_name, ctx.team = "key_01HX", "ci-bot", "platform"
    ctx.metadata["cache"] = "miss"
    http = outcome._run.http
    outcome._run.http = _Http(http.responded, http.method)
    return config, ctx, outcome


def request_telemetry(config: Any, json_log: bool = True) -> Telemetry:
    return Telemetry(json_log=json_log, latency_bounds=list(LATENCY_BUCKETS), overhead_bounds=list(OVERHEAD_BUCKETS),
                     per_key=False, prices=PriceBook(config).per_token(),
                     providers={n: u.provider for n, u in config.upstreams.items()})


def tuple_side(config: Any, tel: Any) -> Observability:
    """The observability plugin as the gateway runs it per request, with `tel` as its Telemetry."""
    p = Observability(config)
    p.telemetry = tel
    return p


def on_finish_batch(plugin: Observability, tel: Any, ctx: Any, outcome: Any) -> bytes:
    on_finish = plugin.on_finish
    for _ in range(BATCH):
        outcome._usage = None  # as for a new request: its Outcome asks the runner for the usage
        on_finish(ctx, outcome)
    return tel.take_log() if isinstance(tel, Telemetry) else b""


def finish_request_batch(tel: Telemetry, ctx: Any, outcome: Any) -> bytes:
    finish_request, run, ended = tel.finish_request, outcome._run, outcome.ended
    for _ in range(BATCH):
        finish_request(ctx, run, ended)
    return tel.take_log()


def test_finish_request_writes_what_on_finish_writes() -> None:
    config, ctx, outcome = one_request()
    old, new = request_telemetry(config), request_telemetry(config)
    now = (1_790_000_000_000_000_000, 12_345.0)
    import llmgw.observability.plugin as module

    clock = module.time
    module.time = SimpleNamespace(time_ns=lambda: now[0], perf_counter=lambda: now[1])  # type: ignore[assignment]
    try:
        tuple_side(config, old).on_finish(ctx, outcome)
    finally:
        module.time = clock
    new.finish_request(ctx, outcome._run, outcome.ended, now=now)
    assert new.take_log() == old.take_log() and new.snapshot() == old.snapshot()
    assert new.slot_reads_known >= 40  # every object of the request read at its slots


@pytest.mark.benchmark(group="finish_request: 500 requests")
@pytest.mark.parametrize("json_log", [True, False])
def test_on_finish_tuple_and_finish(benchmark: Any, json_log: bool) -> None:
    config, ctx, outcome = one_request()
    tel = request_telemetry(config, json_log)
    plugin = tuple_side(config, tel)
    benchmark(on_finish_batch, plugin, tel, ctx, outcome)
    _keep(benchmark, "fr on_finish" if json_log else "fr on_finish nolog")


@pytest.mark.benchmark(group="finish_request: 500 requests")
@pytest.mark.parametrize("json_log", [True, False])
def test_finish_request(benchmark: Any, json_log: bool) -> None:
    config, ctx, outcome = one_request()
    tel = request_telemetry(config, json_log)
    benchmark(finish_request_batch, tel, ctx, outcome)
    _keep(benchmark, "fr request" if json_log else "fr request nolog")


@pytest.mark.benchmark(group="finish_request parts")
def test_on_finish_tuple_only(benchmark: Any) -> None:
    config, ctx, outcome = one_request()
    plugin = tuple_side(config, SimpleNamespace(finish=len))  # the tuple built, then dropped
    benchmark(on_finish_batch, plugin, plugin.telemetry, ctx, outcome)
    _keep(benchmark, "fr tuple")


@pytest.mark.benchmark(group="finish_request parts")
def test_finish_of_the_tuple(benchmark: Any) -> None:
    config, ctx, outcome = one_request()
    keep = SimpleNamespace(rec=None)
    tuple_side(config, SimpleNamespace(finish=lambda rec: setattr(keep, "rec", rec))).on_finish(ctx, outcome)
    tel = request_telemetry(config)

    def run() -> bytes:
        finish, rec = tel.finish, keep.rec
        for _ in range(BATCH):
            finish(rec)
        return tel.take_log()

    benchmark(run)
    _keep(benchmark, "fr finish")


# --- instructions per request (callgrind) ---------------------------------------------------------------

VARIANTS = {
    "tuple": "on_finish: build the tuple (facts, clocks)",
    "on_finish": "on_finish: tuple build + finish",
    "request": "finish_request(ctx, run, ended)",
    "on_finish_nolog": "on_finish, log off",
    "request_nolog": "finish_request, log off",
}


def _count(variant: str, batches: int) -> None:
    """Run `batches` batches of one variant (in a process under callgrind)."""
    config, ctx, outcome = one_request()
    nolog = variant.endswith("_nolog")
    tel = request_telemetry(config, json_log=not nolog)
    if variant == "tuple":
        plugin = tuple_side(config, SimpleNamespace(finish=len))
        for _ in range(batches):
            on_finish_batch(plugin, plugin.telemetry, ctx, outcome)
    elif variant.startswith("on_finish"):
        plugin = tuple_side(config, tel)
        for _ in range(batches):
            on_finish_batch(plugin, tel, ctx, outcome)
    else:
        for _ in range(batches):
            finish_request_batch(tel, ctx, outcome)


def _instructions(variant: str, batches: int) -> int:
    out = tempfile.mkdtemp(prefix="llmgw-cg-")
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.out", sys.executable,
                    __file__, "--count", variant, str(batches)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONMALLOC": "malloc"})
    for line in open(f"{out}/cg.out", encoding="utf-8", errors="replace"):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError("no totals in the callgrind output")


def main() -> None:
    if sys.argv[1:2] == ["--count"]:
        _count(sys.argv[2], int(sys.argv[3]))
        return
    print(f"instructions per request (callgrind; {BATCH * 8} requests minus {BATCH * 2}, set-up excluded)")
    for variant, label in VARIANTS.items():
        per = (_instructions(variant, 8) - _instructions(variant, 2)) / (BATCH * 6)
        print(f"  {label:<44}{per:>9,.0f}")


if __name__ == "__main__":
    if sys.argv[1:2] not in (["--count"], ["--instructions"]):
        sys.exit("usage: python benches/bench_telemetry.py --instructions")
    main()
