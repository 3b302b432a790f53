#!/usr/bin/env python3
"""What one scrape over several workers costs: llmgw's snapshot files against prometheus-client's
multiprocess mode, for the same series, side by side in one run.

    python benches/bench_metrics_workers.py [--series-scale 1] [--rounds 7]

llmgw (`--workers N`): each worker writes its snapshot (`MetricsStore.publish`, JSON) once a
second; the worker that answers a scrape renders its live counts plus the others' latest files
(`MetricsStore.scrape`). prometheus-client's multiprocess mode instead writes every update to a
per-process mmap file on the request path and reads all files at scrape time
(`MultiProcessCollector`). Printed, median of the rounds:

- publish: µs per snapshot written (once a second per worker: the share of one core it costs);
- scrape: ms per scrape with 1, 2, 4 and 8 workers, both ways;
- request path: µs per request of counting (the gateway's Rust `Telemetry.finish` against
  prometheus-client's multiprocess `labels().inc()/observe()` for the same updates).

The series are a busy gateway's: 6 model groups x 3 deployments x 4 statuses, with their
latency, upstream and overhead histograms, tokens and cost (x `--series-scale`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from llmgw.observability.metrics import LATENCY_BUCKETS, OVERHEAD_BUCKETS, MetricsStore  # noqa: E402

ROUTE = "/v1/chat/completions"


def labels(scale: int):
    """(group, deployment, status) of every series a busy gateway has."""
    for g in range(6 * scale):
        for d in range(3):
            for status in ("200", "429", "500", "502"):
                yield f"group-{g}", f"deploy-{g}-{d}", status


def fill(store: MetricsStore, scale: int) -> int:
    n = 0
    for i, (group, deployment, status) in enumerate(labels(scale)):
        for k in range(5):  # a few values per series, so histograms have several buckets in use
            seconds = 0.05 * (1 + (i + k) % 40)
            store.inc("llmgw_requests_total", (ROUTE, group, deployment, status))
            store.observe("llmgw_request_duration_seconds", (ROUTE, group), seconds)
            store.observe("llmgw_upstream_duration_seconds", (group, deployment), seconds * 0.9)
            store.observe("llmgw_gateway_overhead_seconds", (ROUTE,), 0.0001 * (1 + k))
            store.inc("llmgw_tokens_total", (group, deployment, "input"), 100)
            store.inc("llmgw_tokens_total", (group, deployment, "output"), 20)
            store.inc("llmgw_cost_usd_total", (group, deployment), 0.0001)
            n += 1
    return n


def timed(fn, rounds: int, inner: int = 1) -> float:
    """Median seconds per call."""
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def prometheus_multiprocess(directory: str, workers: int, scale: int, rounds: int) -> tuple[float, float]:
    """(scrape seconds with `workers` processes' files, µs per request of counting), measured in
    a child process: prometheus-client reads PROMETHEUS_MULTIPROC_DIR when it is imported."""
    import subprocess

    code = f"""
import os, statistics, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from bench_metrics_workers import labels, ROUTE
from llmgw.observability.metrics import LATENCY_BUCKETS, OVERHEAD_BUCKETS
def count(i, group, deployment, status, k):
    seconds = 0.05 * (1 + (i + k) % 40)
    req.labels(ROUTE, group, deployment, status).inc()
    dur.labels(ROUTE, group).observe(seconds)
    up.labels(group, deployment).observe(seconds * 0.9)
    ov.labels(ROUTE).observe(0.0001 * (1 + k))
    tok.labels(group, deployment, "input").inc(100)
    tok.labels(group, deployment, "output").inc(20)
    cost.labels(group, deployment).inc(0.0001)
series = list(labels({scale}))
for w in range({workers}):  # each worker's file: the value class keys files by pid
    values.ValueClass = values.MultiProcessValue(lambda w=w: 100000 + w)
    reg2 = CollectorRegistry()
    req = Counter("llmgw_requests", "", ("route", "model_group", "deployment", "status"), registry=reg2)
    dur = Histogram("llmgw_request_duration_seconds", "", ("route", "model_group"), buckets=LATENCY_BUCKETS, registry=reg2)
    up = Histogram("llmgw_upstream_duration_seconds", "", ("model_group", "deployment"), buckets=LATENCY_BUCKETS, registry=reg2)
    ov = Histogram("llmgw_gateway_overhead_seconds", "", ("route",), buckets=OVERHEAD_BUCKETS, registry=reg2)
    tok = Counter("llmgw_tokens", "", ("model_group", "deployment", "type"), registry=reg2)
    cost = Counter("llmgw_cost_usd", "", ("model_group", "deployment"), registry=reg2)
    t0 = time.perf_counter(); n = 0
    for i, (group, deployment, status) in enumerate(series):
        for k in range(5):
            count(i, group, deployment, status, k); n += 1
    per_request = (time.perf_counter() - t0) / n
scrape_reg = CollectorRegistry()
MultiProcessCollector(scrape_reg)
samples = []
for _ in range({rounds}):
    t0 = time.perf_counter(); text = generate_latest(scrape_reg); samples.append(time.perf_counter() - t0)
print(statistics.median(samples), per_request * 1e6, len(text))
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "python")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    scrape_s, per_request_us, _ = out.split()
    return float(scrape_s), float(per_request_us)


def telemetry_per_request(rounds: int) -> float:
    """µs per request of the gateway's own counting (Rust Telemetry.finish on a finish tuple)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_telemetry import raw, rust_tuples  # the request path's benchmark builds its tuples

    from llmgw._core import Telemetry

    tel = Telemetry(json_log=False, latency_bounds=list(LATENCY_BUCKETS), overhead_bounds=list(OVERHEAD_BUCKETS),
                    per_key=False)
    tuples = rust_tuples([raw(i) for i in range(500)])

    def run() -> None:
        for t in tuples:
            tel.finish(t)

    return timed(run, rounds) / len(tuples) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series-scale", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    scale, rounds = args.series_scale, args.rounds

    print(f"series: {len(list(labels(scale)))} requests_total series, "
          f"{6 * scale * 3} deployments; median of {rounds} rounds\n")
    print("| workers | llmgw scrape | prometheus-client multiprocess scrape | ratio |")
    print("|---|---|---|---|")
    publish_us = None
    for workers in (1, 2, 4, 8):
        directory = tempfile.mkdtemp(prefix="llmgw-metrics-")
        prom_dir = tempfile.mkdtemp(prefix="llmgw-prom-")
        try:
            stores = []
            for w in range(workers):
                store = MetricsStore()
                fill(store, scale)
                store.publish(directory, w)
                stores.append(store)
            if publish_us is None:
                publish_us = timed(lambda: stores[0].publish(directory, 0), rounds, 20) * 1e6
            ours = timed(lambda: stores[0].scrape(directory if workers > 1 else None, 0), rounds)
            theirs, prom_request_us = prometheus_multiprocess(prom_dir, workers, scale, rounds)
            print(f"| {workers} | {ours * 1e3:.2f} ms | {theirs * 1e3:.2f} ms | {theirs / ours:.1f}x |")
        finally:
            shutil.rmtree(directory, ignore_errors=True)
            shutil.rmtree(prom_dir, ignore_errors=True)
    ours_request_us = telemetry_per_request(rounds)
    print(f"\npublish (llmgw, once a second per worker): {publish_us:.0f} µs per snapshot "
          f"= {publish_us / 1e6:.3%} of a core")
    print(f"request path, counting per request: llmgw Telemetry.finish {ours_request_us:.2f} µs, "
          f"prometheus-client multiprocess {prom_request_us:.2f} µs ({prom_request_us / ours_request_us:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
