#!/usr/bin/env python3
"""Instructions per request of a gateway configuration, counted by callgrind (not seconds: the
count repeats run to run whatever else the machine does, where wall-clock ratios on a shared
2-core VM move 10-20%).

    python benches/load/instructions.py CONFIG [CONFIG ...] [--requests 2000]

Each config is served by one gateway process under `valgrind --tool=callgrind` in front of the
project's mock upstream, twice: with `--requests` and with a quarter of them; the difference of
the two totals divided by the difference of the counts is the cost of one request, start-up
excluded. Requests are sent one at a time on one keep-alive connection (POST, model `bench`).
`--vary` makes every request's prompt different (for a cache: the miss path, not the hit path).
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import REQUEST_BODY, free_port  # noqa: E402


def _total(out_dir: str) -> int:
    total = 0
    for path in glob.glob(os.path.join(out_dir, "callgrind.out.*")):
        for line in open(path, encoding="utf-8", errors="replace"):
            if line.startswith("summary:") or line.startswith("totals:"):
                total = max(total, int(line.split()[1]))
    return total


def _body(i: int, vary: bool) -> bytes:
    if not vary:
        return REQUEST_BODY
    body = json.loads(REQUEST_BODY)
    body["messages"][-1]["content"] += f" (request {i})"
    return json.dumps(body).encode()


def run_once(config: Path, upstream: str, requests: int, vary: bool = False) -> int:
    port = free_port()
    out_dir = tempfile.mkdtemp(prefix="llmgw-cg-")
    env = {**os.environ, "LLMGW_BENCH_UPSTREAM": upstream, "LLMGW_BENCH_ACCESS_LOG": os.devnull,
           "LLMGW_BENCH_OTLP": upstream.rstrip("/") + "/traces", "PYTHONMALLOC": "malloc"}
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/callgrind.out.%p",
                             sys.executable, "-m", "llmgw.cli", "serve", "--config", str(config), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{config} did not start under valgrind") from None
            time.sleep(0.5)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(requests):
        conn.request("POST", "/v1/chat/completions", _body(i, vary), {"content-type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{config}: status {resp.status}")
    conn.close()
    proc.send_signal(2)
    proc.wait(timeout=120)
    return _total(out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--vary", action="store_true", help="a different prompt in every request")
    parser.add_argument("--upstream", default="http://127.0.0.1:18080/v1", help="OpenAI-compatible upstream (nginx mock)")
    args = parser.parse_args(argv)
    few = args.requests // 4
    rows = {}
    for config in args.configs:
        many_total = run_once(config, args.upstream, args.requests, args.vary)
        few_total = run_once(config, args.upstream, few, args.vary)
        rows[config.name] = (many_total - few_total) / (args.requests - few)
        print(f"{config.name}: {rows[config.name]:,.0f} instructions per request", flush=True)
    base = next(iter(rows.values()))
    print("\n| config | instructions per request | vs the first |\n|---|---|---|")
    for name, n in rows.items():
        print(f"| {name} | {n / 1000:,.1f}k | {base / n:.1%} |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
