#!/usr/bin/env python3
"""How long reaching a fallback takes when the primary refuses connections.

    python benches/load/fallback.py [--seconds 5] [--rounds 3]

Three gateways in one run, each pinned to core 1, wrk at c=1 (core 0) against nginx's fixed body:
- direct: model `bench` on nginx (the reference);
- fallback: model `chain` whose primary points at a closed port (every request is refused, then
  served by the fallback on nginx), no circuit breaker;
- fallback + breaker: the same with a breaker on the primary, which opens after 3 refusals, so
  the primary is skipped without a connection attempt.
The added p50/p99 are each fallback gateway minus the direct one, medians over the rounds.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import REQUEST_BODY, start_upstream, stop_process  # noqa: E402
from variants import Variant, start_gateway, wrk  # noqa: E402

CHAIN = """
server: {{host: 127.0.0.1, port: 8080}}
upstreams:
  dead: {{provider: openai, base_url: "http://127.0.0.1:{dead}/v1", timeouts: {{connect: 1}}}}
  live: {{provider: openai, base_url: "${{LLMGW_BENCH_UPSTREAM}}", max_connections: 64}}
models:
  bench:
    deployments: [{{name: primary, upstream: dead, model: bench}}]
{breaker}
    fallbacks: [{{to: backup, on: [connection]}}]
  backup: {{upstream: live, model: bench}}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="llmgw-fallback-"))
    # A port bound but never listening: connections to it are refused, and no other server (a
    # gateway started later, say) can take it.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    dead = holder.getsockname()[1]
    (work / "chain.yaml").write_text(CHAIN.format(dead=dead, breaker=""))
    (work / "breaker.yaml").write_text(CHAIN.format(dead=dead, breaker="    breaker: {failures: 3, cooldown: 3600}"))
    variants = [Variant("direct", HERE.parents[1] / "examples" / "bench.yaml"),
                Variant("fallback (primary refuses)", work / "chain.yaml"),
                Variant("fallback, breaker open", work / "breaker.yaml")]
    body = work / "body.json"
    body.write_bytes(REQUEST_BODY)
    upstream = start_upstream("nginx")
    try:
        for r in range(args.rounds):
            for v in variants:
                print(f"round {r + 1}/{args.rounds}: {v.label} ...", flush=True)
                proc, url = start_gateway(v, upstream.json_url, work / "gateway.log")
                try:
                    wrk(url, 1, 1, body, None)
                    out = wrk(url, args.seconds, 1, body, None)
                    v.results.append({"p50": out["latency_us"]["p50"], "p99": out["latency_us"]["p99"]})
                finally:
                    stop_process(proc)
    finally:
        upstream.stop()
        holder.close()
    base50 = statistics.median(r["p50"] for r in variants[0].results)
    base99 = statistics.median(r["p99"] for r in variants[0].results)
    print(f"\n| gateway | p50 / p99, c=1 | added to reach the fallback |\n|---|---|---|")
    for v in variants:
        p50 = statistics.median(r["p50"] for r in v.results)
        p99 = statistics.median(r["p99"] for r in v.results)
        added = "" if v is variants[0] else f"+{p50 - base50:.0f} / +{p99 - base99:.0f} µs"
        print(f"| {v.label} | {p50:.0f} / {p99:.0f} µs | {added} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
