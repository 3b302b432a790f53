#!/usr/bin/env python3
"""Soak: a few minutes of steady mixed load at about half the gateway's peak, watching memory
and file descriptors.

    python benches/load/soak.py [--minutes 3] [--rate 4000]

The gateway (benches/load/configs/soak.yaml: model `bench` on nginx's fixed JSON, `bench-sse` on
its fixed SSE stream) is pinned to core 1; two `llmgw bench` open-loop generators on core 0 send
half the rate each, one non-streaming, one streaming. Every 10 s the gateway's RSS and open file
descriptors are sampled. Reported: RSS after warm-up and at the end, growth per 100k requests
(a least-squares slope over the samples, so one late spike does not decide it), file
descriptors before, right after and a keep-alive period after the load (pooled upstream
connections stay open while in use), and the generators' error counts and latency (measured
from each request's scheduled time, so the Python generators' own lag is in it). Bounded: it
stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from procs import tree_usage  # noqa: E402
from run import GATEWAY_CORE, LOADGEN_CORE, REQUEST_BODY, free_port, pinned, start_upstream, stop_process  # noqa: E402

CONFIG = HERE / "configs" / "soak.yaml"


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def generator(url: str, model: str, rate: float, seconds: float, stream: bool) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "llmgw.bench", "--url", url, "--model", model, "--rate", str(rate),
            "--duration", str(seconds), "--max-in-flight", "512", "--json"] + (["--stream"] if stream else [])
    return subprocess.Popen(pinned(LOADGEN_CORE, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def slope_per_100k(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of RSS (bytes) against requests served, per 100k requests."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return (sum((x - mx) * (y - my) for x, y in points) / var * 100_000) if var else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=4000.0, help="total requests/s (about half the peak)")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    upstream = start_upstream("nginx")
    port = free_port()
    env = {**os.environ, "LLMGW_BENCH_UPSTREAM": upstream.json_url, "LLMGW_BENCH_SSE_UPSTREAM": upstream.sse_url}
    log = open("/tmp/llmgw-soak-gateway.log", "wb")
    gw = subprocess.Popen(pinned(GATEWAY_CORE, [sys.executable, "-m", "llmgw.cli", "serve", "--config", str(CONFIG),
                                                "--port", str(port)]), env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        from procs import wait_first_answer

        wait_first_answer("127.0.0.1", port, "/v1/chat/completions", REQUEST_BODY, started=time.monotonic())
        warm = [generator(url, "bench", args.rate / 2, 10, False), generator(url, "bench-sse", args.rate / 2, 10, True)]
        for p in warm:
            p.communicate()
        fd_before, rss_start = fds(gw.pid), tree_usage(gw.pid).rss
        gens = [generator(url, "bench", args.rate / 2, seconds, False),
                generator(url, "bench-sse", args.rate / 2, seconds, True)]
        samples: list[tuple[float, int]] = []
        started = time.monotonic()
        done = threading.Event()

        def sample() -> None:
            while not done.wait(10):
                samples.append((time.monotonic() - started, tree_usage(gw.pid).rss))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        reports = [json.loads(g.communicate()[0]) for g in gens]
        done.set()
        sampler.join()
        time.sleep(1)
        fd_after, rss_end = fds(gw.pid), tree_usage(gw.pid).rss
        time.sleep(61)  # upstream keep-alive: the pool's idle connections close by themselves
        fd_idle = fds(gw.pid)
    finally:
        stop_process(gw)
        upstream.stop()
    total = sum(r["requests"]["total"] for r in reports)
    errors = sum(r["requests"].get("failed", 0) for r in reports)
    rate = total / seconds
    points = [(int(t * rate), rss) for t, rss in samples]
    mib = 1 << 20
    print(f"\nsoak: {args.minutes:g} min at {args.rate:,.0f} req/s offered (half streaming), {total:,} requests, "
          f"{errors} failed")
    print("| measure | value |\n|---|---|")
    print(f"| RSS after warm-up / at the end | {rss_start / mib:.1f} / {rss_end / mib:.1f} MiB |")
    print(f"| RSS growth per 100k requests (slope over {len(points)} samples) | {slope_per_100k(points) / mib:+.2f} MiB |")
    print(f"| open file descriptors before / right after / 61 s later | {fd_before} / {fd_after} / {fd_idle} |")
    for r, kind in zip(reports, ("non-streaming", "streaming")):
        lat = r.get("latency_ms") or {}
        print(f"| {kind}: served / failed, p50 / p99 latency | {r['requests']['total']:,} / "
              f"{r['requests'].get('failed', 0)}, {lat.get('p50', 0):.2f} / {lat.get('p99', 0):.2f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
