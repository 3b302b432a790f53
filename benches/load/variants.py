#!/usr/bin/env python3
"""Gateway configurations side by side in one run: what each part of the request path costs.

    python benches/load/variants.py [--rounds 3] [--seconds 5] [--baseline PYTHON_DIR]

Each variant is one `llmgw serve --config ...` pinned to core 1 (wrk and the upstream on core 0),
measured in rounds that interleave the variants (A B C, A B C, ...) so drift on a noisy machine
falls on all of them alike; the table reports each variant's median over the rounds, and its
ratio to the first variant. Measured: requests/s at c=32 (wrk, keep-alive) and latency p50/p99
at c=1 (wrk), with the upstream's own c=1 latency beside them ("added" = gateway minus direct).

Variants: passthrough (examples/bench.yaml: no plugins, no auth); auth (built-in API keys);
auth + a no-op on_finish plugin (configs/auth-finish.yaml); a model group of three weighted
deployments with a circuit breaker (configs/three.yaml). `--baseline DIR` adds the same
passthrough and auth configs run from another checkout's python/ directory (for example main
before a change, with its built extension), so a change is measured against what it replaces in
the same minute. Upstream: nginx from ../shared/bench/nginx-mock.sh (a fixed OpenAI body).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from procs import tree_usage, wait_first_answer  # noqa: E402
from run import GATEWAY_CORE, LOADGEN_CORE, REQUEST_BODY, free_port, parse_wrk, pinned, start_upstream, stop_process  # noqa: E402

REPO = HERE.parents[1]
KEY = "bench-key-0123456789abcdef"


@dataclass
class Variant:
    label: str
    config: Path
    key: str | None = None
    pythonpath: str | None = None  # another checkout's python/ dir (a baseline)
    results: list[dict[str, Any]] = field(default_factory=list)


def start_gateway(v: Variant, upstream_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    paths = [str(HERE)] + ([v.pythonpath] if v.pythonpath else []) + [os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "LLMGW_BENCH_UPSTREAM": upstream_url, "LLMGW_BENCH_KEY": KEY,
           "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    argv = pinned(GATEWAY_CORE, [sys.executable, "-m", "llmgw.cli", "serve", "--config", str(v.config),
                                 "--port", str(port)])
    proc = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    if v.key:
        _wait_health(port)
    else:
        wait_first_answer("127.0.0.1", port, "/v1/chat/completions", REQUEST_BODY, started=time.monotonic(), limit_s=60)
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


def _wait_health(port: int) -> None:
    import http.client

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("gateway did not start")


def wrk(url: str, seconds: float, connections: int, body_file: Path, key: str | None, latency: bool = False) -> dict:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(int(seconds), 1)}s", "-s", str(HERE / "post.lua")]
    if key:
        argv += ["-H", f"authorization: Bearer {key}"]
    proc = subprocess.run(pinned(LOADGEN_CORE, argv + [url, "--", str(body_file)]), capture_output=True, text=True,
                          timeout=seconds + 60)
    out = parse_wrk(proc.stdout)
    if out["error_count"]:
        raise RuntimeError(f"wrk saw errors against {url}: {out['errors']}")
    return out


def measure(url: str, seconds: float, body_file: Path, key: str | None, pid: int | None) -> dict[str, Any]:
    wrk(url, 1, 32, body_file, key)  # warm-up
    before = tree_usage(pid).cpu_s if pid else 0.0
    load = wrk(url, seconds, 32, body_file, key)
    cpu = (tree_usage(pid).cpu_s - before) * 1e6 / max(load["requests"], 1) if pid else None
    c1 = wrk(url, seconds, 1, body_file, key)
    return {"rps": load["requests_per_s"], "p50_us": c1["latency_us"]["p50"], "p99_us": c1["latency_us"]["p99"],
            "cpu_us": cpu}


def print_rounds(results: dict[str, list[dict[str, Any]]], rounds: int, seconds: float, work: Path,
                 base_name: str = "passthrough") -> None:
    """The table of interleaved rounds (medians; the ratio is the median of per-round ratios to
    the first variant), and the raw results saved beside the logs."""
    labels = list(results)
    base = results[labels[0]]
    print(f"\n{rounds} interleaved rounds of {seconds:g} s per phase; medians; 'vs {base_name}' is the "
          "median of per-round ratios.\n")
    print(f"| variant | req/s, c=32, one core | vs {base_name} | CPU per request | p50 / p99, c=1 |")
    print("|---|---|---|---|---|")
    for label in labels:
        rows = results[label]
        rps = statistics.median(x["rps"] for x in rows)
        ratio = statistics.median(x["rps"] / b["rps"] for x, b in zip(rows, base))
        cpu = statistics.median(x["cpu_us"] for x in rows)
        print(f"| {label} | {rps:,.0f} | {ratio:.1%} | {cpu:.0f} µs | {statistics.median(x['p50_us'] for x in rows):.0f}"
              f" / {statistics.median(x['p99_us'] for x in rows):.0f} µs |")
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nraw results: {work / 'results.json'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk phase")
    parser.add_argument("--baseline", help="python/ directory of another checkout to run beside this one")
    parser.add_argument("--only", nargs="*", help="labels of the variants to run")
    args = parser.parse_args(argv)

    variants = [
        Variant("passthrough", REPO / "examples" / "bench.yaml"),
        Variant("auth", HERE / "configs" / "auth.yaml", KEY),
        Variant("auth + no-op on_finish", HERE / "configs" / "auth-finish.yaml", KEY),
        Variant("three deployments (weighted, breaker)", HERE / "configs" / "three.yaml"),
    ]
    if args.baseline:
        variants += [Variant("baseline: passthrough", REPO / "examples" / "bench.yaml", pythonpath=args.baseline),
                     Variant("baseline: auth", HERE / "configs" / "auth.yaml", KEY, pythonpath=args.baseline)]
    if args.only:
        variants = [v for v in variants if v.label in args.only]
    upstream = start_upstream("nginx")
    work = Path(tempfile.mkdtemp(prefix="llmgw-variants-"))
    body_file = work / "body.json"
    body_file.write_bytes(REQUEST_BODY)
    direct: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            direct.append(measure(upstream.json_url + "/chat/completions", args.seconds, body_file, None, None))
            for v in variants:
                print(f"round {r + 1}/{args.rounds}: {v.label} ...", flush=True)
                proc, url = start_gateway(v, upstream.json_url, work / f"{v.label.replace(' ', '_')}.log")
                try:
                    v.results.append(measure(url, args.seconds, body_file, v.key, proc.pid))
                finally:
                    stop_process(proc)
    finally:
        upstream.stop()

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows if r[key] is not None)

    d50, d99 = med(direct, "p50_us"), med(direct, "p99_us")
    print(f"\n{args.rounds} interleaved rounds of {args.seconds:g} s per phase; medians. Direct upstream c=1: "
          f"p50 {d50:.0f} µs, p99 {d99:.0f} µs. 'vs first': the median over rounds of the ratio to the first "
          "variant measured in the same round (pairs cancel the machine's drift).\n")
    print("| variant | req/s, c=32, one core | vs first | CPU per request | added p50 / p99, c=1 |")
    print("|---|---|---|---|---|")
    base = variants[0].results
    for v in variants:
        rps = med(v.results, "rps")
        ratio = statistics.median(r["rps"] / b["rps"] for r, b in zip(v.results, base))
        print(f"| {v.label} | {rps:,.0f} | {ratio:.1%} | {med(v.results, 'cpu_us'):.0f} µs | "
              f"+{med(v.results, 'p50_us') - d50:.0f} / +{med(v.results, 'p99_us') - d99:.0f} µs |")
    (work / "results.json").write_text(json.dumps({v.label: v.results for v in variants} | {"direct": direct}, indent=2))
    print(f"\nraw results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
