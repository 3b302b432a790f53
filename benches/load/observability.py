#!/usr/bin/env python3
"""Observability on versus off, in one run: what metrics, the access log and tracing cost.

    python benches/load/observability.py [--rounds 3] [--seconds 5]

Like variants.py (interleaved rounds, the gateway pinned to core 1, wrk and the nginx upstream
on core 0; medians, and ratios to "off" measured in the same round). Variants:

- off: no metrics, no access log, no tracing;
- metrics: Prometheus counting on every request (scraped once per phase, as Prometheus would);
- metrics + JSON log: the defaults, the access log written to a file;
- everything, 10% traced: + OTLP spans for one request in ten;
- everything, 100% traced: + OTLP spans for every request (3 per request: the gateway's, the
  plugin stage's, the upstream attempt's), exported in batches to a collector stand-in (nginx
  answering 200 on loopback, on the load generator's core).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import GATEWAY_CORE, REQUEST_BODY, free_port, pinned, start_upstream, stop_process  # noqa: E402
from variants import _wait_health, measure, print_rounds  # noqa: E402

VARIANTS = [
    ("off", "observability-off.yaml"),
    ("metrics", "observability-metrics.yaml"),
    ("metrics + JSON log", "observability-logs.yaml"),
    ("everything, 10% traced", "observability-all-10.yaml"),
    ("everything, 100% traced", "observability-all.yaml"),
]


def start(label: str, config_name: str, upstream_url: str, otlp_url: str,
          work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    slug = label.replace(" ", "_").replace("%", "").replace(",", "").replace("+", "")
    env = {**os.environ, "LLMGW_BENCH_UPSTREAM": upstream_url, "LLMGW_BENCH_OTLP": otlp_url,
           "LLMGW_BENCH_ACCESS_LOG": str(work / f"{slug}-{time.time_ns()}.access.log")}
    argv = pinned(GATEWAY_CORE, [sys.executable, "-m", "llmgw.cli", "serve", "--config",
                                 str(HERE / "configs" / config_name), "--port", str(port)])
    proc = subprocess.Popen(argv, env=env, stdout=(work / f"{slug}.log").open("wb"), stderr=subprocess.STDOUT)
    _wait_health(port)
    return proc, port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk phase")
    args = parser.parse_args(argv)
    upstream = start_upstream("nginx")
    otlp = upstream.json_url.rstrip("/") + "/traces"  # nginx answers any path with 200
    work = Path(tempfile.mkdtemp(prefix="llmgw-observability-bench-"))
    body_file = work / "body.json"
    body_file.write_bytes(REQUEST_BODY)
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in VARIANTS}
    try:
        for r in range(args.rounds):
            for label, config_name in VARIANTS:
                print(f"round {r + 1}/{args.rounds}: {label} ...", flush=True)
                proc, port = start(label, config_name, upstream.json_url, otlp, work)
                try:
                    row = measure(f"http://127.0.0.1:{port}/v1/chat/completions", args.seconds, body_file, None,
                                  proc.pid)
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
                    except OSError:
                        pass  # metrics off
                    results[label].append(row)
                finally:
                    stop_process(proc)
    finally:
        upstream.stop()

    print_rounds(results, args.rounds, args.seconds, work, "off")
    return 0


if __name__ == "__main__":
    sys.exit(main())
