#!/usr/bin/env python3
"""Overload: offered load ramped to 3x what the gateway can serve; it must shed fast (503), keep
/health answering, and recover at once when the load stops.

    python benches/load/overload.py [--seconds 5] [--max-inflight 256]

The gateway (configs/soak.yaml, model `bench-slow`: nginx answers after 50 ms) is pinned to core 1
with `server.max_inflight` set, so its capacity is max_inflight / 50 ms requests per second. wrk
(closed loop, core 0) ramps its connections from a quarter of max_inflight to 3x it; each step
reports answered requests/s, shed (503) requests/s, the p99 latency of the whole step, and the
worst /health latency a prober saw during the step (10 probes a second). After the ramp the load
stops, and a light run must be answered in full.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import GATEWAY_CORE, LOADGEN_CORE, free_port, parse_wrk, pinned, start_upstream, stop_process  # noqa: E402

BODY = b'{"model":"bench-slow","messages":[{"role":"user","content":"Write one sentence about load testing."}]}'


def wrk(url: str, seconds: int, connections: int, body_file: Path) -> dict:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(HERE / "post.lua"),
            url, "--", str(body_file)]
    proc = subprocess.run(pinned(LOADGEN_CORE, argv), capture_output=True, text=True, timeout=seconds + 60)
    return parse_wrk(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="per step")
    parser.add_argument("--max-inflight", type=int, default=256)
    args = parser.parse_args(argv)
    upstream = start_upstream("nginx")
    work = Path(tempfile.mkdtemp(prefix="llmgw-overload-"))
    config = work / "overload.yaml"
    config.write_text((HERE / "configs" / "soak.yaml").read_text().replace(
        "  port: 8080\n", f"  port: 8080\n  max_inflight: {args.max_inflight}\n"))
    body_file = work / "body.json"
    body_file.write_bytes(BODY)
    port = free_port()
    gw = subprocess.Popen(pinned(GATEWAY_CORE, [sys.executable, "-m", "llmgw.cli", "serve", "--config", str(config),
                                                "--port", str(port)]),
                          env={**os.environ}, stdout=(work / "gateway.log").open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    health: list[tuple[float, float]] = []  # (when, seconds)
    stop = threading.Event()

    def probe() -> None:
        while not stop.wait(0.1):
            t0 = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                ok = conn.getresponse().status == 200
                conn.close()
            except OSError:
                ok = False
            health.append((t0, time.monotonic() - t0 if ok else float("inf")))

    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/health")
                break
            except OSError:
                time.sleep(0.1)
        capacity = args.max_inflight / 0.05
        print(f"capacity ~{capacity:,.0f} req/s (max_inflight {args.max_inflight} / 50 ms upstream)\n")
        print("| wrk connections | offered vs capacity | answered req/s | shed 503/s | p99 latency | worst /health |")
        print("|---|---|---|---|---|---|")
        threading.Thread(target=probe, daemon=True).start()
        for factor in (0.25, 0.5, 1.0, 2.0, 3.0):
            conns = int(args.max_inflight * factor)
            t0 = time.monotonic()
            r = wrk(url, args.seconds, conns, body_file)
            worst = max((s for t, s in health if t >= t0), default=float("nan"))
            shed = r["errors"]["status"]
            answered = r["requests"] - shed
            secs = r["duration_us"] / 1e6
            print(f"| {conns} | {factor:g}x | {answered / secs:,.0f} | {shed / secs:,.0f} | "
                  f"{r['latency_us']['p99'] / 1000:.1f} ms | {worst * 1000:.1f} ms |")
        time.sleep(1)
        after = wrk(url, args.seconds, max(args.max_inflight // 4, 1), body_file)
        print(f"\nafter the load stopped: {after['requests']:,} requests, {after['error_count']} errors "
              f"(p99 {after['latency_us']['p99'] / 1000:.1f} ms)")
    finally:
        stop.set()
        stop_process(gw)
        upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
