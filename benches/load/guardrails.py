#!/usr/bin/env python3
"""Guardrails on versus off, in one run: their cost per request (2 KB prompt) and per streamed chunk.

    python benches/load/guardrails.py [--rounds 3] [--seconds 5]

Like variants.py (interleaved rounds, the gateway pinned to core 1, wrk and the nginx upstream
on core 0, medians), four variants: examples/bench.yaml and configs/guardrails.yaml (every
guardrail on), each answering a 2 KB prompt (no PII in it: the common case) from the nginx JSON
upstream and, streamed, from its SSE upstream (18 content chunks). The cost per request is the
CPU per request with guardrails minus without (JSON answers); the cost per chunk is the same
difference for streams, less the per-request part, over the chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import GATEWAY_CORE, MODEL, free_port, pinned, start_upstream, stop_process  # noqa: E402
from variants import _wait_health, measure  # noqa: E402

CHUNKS = 18  # content chunks in the nginx mock's stream
PROSE = ("Our quarterly planning review covers the migration of the billing service to the new "
         "cluster, the capacity forecast for the holiday season, and the on-call rotation changes. "
         "Please summarise the open risks, list the owners of each workstream, and suggest which "
         "milestones could move if the load tests in week three show regressions. ")
PROMPT = (PROSE * 8)[:2048]
VARIANTS = [("off", "json"), ("on", "json"), ("off", "sse"), ("on", "sse")]


def body(stream: bool) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                                    {"role": "user", "content": PROMPT}],
                       "max_tokens": 256, "stream": stream}).encode()


def start(guard: str, upstream_url: str, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = HERE / "configs" / "guardrails.yaml" if guard == "on" else HERE.parent.parent / "examples" / "bench.yaml"
    port = free_port()
    env = {**os.environ, "LLMGW_BENCH_UPSTREAM": upstream_url}
    argv = pinned(GATEWAY_CORE, [sys.executable, "-m", "llmgw.cli", "serve", "--config", str(config),
                                 "--port", str(port)])
    proc = subprocess.Popen(argv, env=env, stdout=(work / f"{guard}-{time.time_ns()}.log").open("wb"),
                            stderr=subprocess.STDOUT)
    _wait_health(port)
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk phase")
    args = parser.parse_args(argv)
    upstream = start_upstream("nginx")
    work = Path(tempfile.mkdtemp(prefix="llmgw-guardrails-bench-"))
    files = {"json": work / "body.json", "sse": work / "stream.json"}
    files["json"].write_bytes(body(False))
    files["sse"].write_bytes(body(True))
    results: dict[tuple[str, str], list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    try:
        for r in range(args.rounds):
            for guard, kind in VARIANTS:
                print(f"round {r + 1}/{args.rounds}: guardrails {guard}, {kind} ...", flush=True)
                url = upstream.json_url if kind == "json" else upstream.sse_url
                proc, gw_url = start(guard, url, work)
                try:
                    results[(guard, kind)].append(measure(gw_url, args.seconds, files[kind], None, proc.pid))
                finally:
                    stop_process(proc)
    finally:
        upstream.stop()

    med = {v: {k: statistics.median(x[k] for x in rows) for k in ("rps", "cpu_us", "p50_us", "p99_us")}
           for v, rows in results.items()}
    print(f"\n{args.rounds} interleaved rounds of {args.seconds:g} s per phase; medians; 2 KB prompt.\n")
    print("| answer | guardrails | req/s, c=32, one core | CPU per request | p50 / p99, c=1 |")
    print("|---|---|---|---|---|")
    for guard, kind in VARIANTS:
        m = med[(guard, kind)]
        print(f"| {kind} | {guard} | {m['rps']:,.0f} | {m['cpu_us']:.0f} µs | {m['p50_us']:.0f} / {m['p99_us']:.0f} µs |")
    per_request = med[("on", "json")]["cpu_us"] - med[("off", "json")]["cpu_us"]
    stream_extra = med[("on", "sse")]["cpu_us"] - med[("off", "sse")]["cpu_us"]
    ratio = statistics.median(a["rps"] / b["rps"] for a, b in zip(results[("on", "json")], results[("off", "json")]))
    print(f"\nper request (2 KB prompt): +{per_request:.1f} µs CPU, throughput {ratio:.1%} of off")
    print(f"per streamed chunk: +{(stream_extra - per_request) / CHUNKS:.2f} µs CPU")
    (work / "results.json").write_text(json.dumps({f"{g}-{k}": v for (g, k), v in results.items()}, indent=2))
    print(f"raw results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
