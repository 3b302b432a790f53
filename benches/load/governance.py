#!/usr/bin/env python3
"""Governance on versus off, in one run: what keys, limits, budgets and the ledger cost.

    python benches/load/governance.py [--rounds 3] [--seconds 5]

Like variants.py (interleaved rounds, the gateway pinned to core 1, wrk and the nginx upstream
on core 0; medians and ratios to passthrough measured in the same round), with these variants:

- passthrough: examples/bench.yaml, nothing on;
- keys + ledger: a virtual key (looked up by digest, cached per worker, revocation checked per
  request) and a ledger row per request written in batches;
- + key RPM/TPM: the key has RPM and TPM limits (never reached): TPM admission on the counted
  prompt + max_tokens, corrected in the finish hook; x-ratelimit-* headers;
- + budget: the key also has a monthly budget (never reached): worst-case reservation, then the
  settle to the real cost;
- everything: all of it plus an RPM limit on the model group (every limit checked in one call).

Each gateway gets a fresh SQLite file; the key is made through the admin API after start.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import GATEWAY_CORE, REQUEST_BODY, free_port, pinned, start_upstream, stop_process  # noqa: E402
from variants import _wait_health, measure, print_rounds  # noqa: E402

MASTER = "bench-master-key-0123456789abcdef"
BIG = 10**9

VARIANTS: list[tuple[str, dict[str, Any] | None, str]] = [
    ("passthrough", None, "../../../examples/bench.yaml"),
    ("keys + ledger", {}, "governance.yaml"),
    ("+ key RPM/TPM", {"rpm": BIG, "tpm": BIG}, "governance.yaml"),
    ("+ budget", {"rpm": BIG, "tpm": BIG, "budget": {"usd": BIG, "period": "month"}}, "governance.yaml"),
    ("everything (+ model RPM)", {"rpm": BIG, "tpm": BIG, "budget": {"usd": BIG, "period": "month"}},
     "governance-model-limit.yaml"),
]


def _admin_key(port: int, fields: dict[str, Any]) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/admin/keys", json.dumps({"name": "bench", **fields}),
                 {"authorization": f"Bearer {MASTER}", "content-type": "application/json"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    if resp.status != 201:
        raise RuntimeError(f"creating the key failed: {body}")
    return str(body["key"])


def start(label: str, fields: dict[str, Any] | None, config_name: str, upstream_url: str,
          work: Path) -> tuple[subprocess.Popen[bytes], str, str | None]:
    port = free_port()
    slug = label.replace(" ", "_").replace("/", "")
    config = (HERE / "configs" / config_name).resolve()
    db = work / f"{slug}-{time.time_ns()}.db"
    env = {**os.environ, "LLMGW_BENCH_UPSTREAM": upstream_url, "LLMGW_MASTER_KEY": MASTER, "LLMGW_DB_PATH": str(db)}
    argv = pinned(GATEWAY_CORE, [sys.executable, "-m", "llmgw.cli", "serve", "--config", str(config),
                                 "--port", str(port)])
    proc = subprocess.Popen(argv, env=env, stdout=(work / f"{slug}.log").open("wb"), stderr=subprocess.STDOUT)
    _wait_health(port)
    key = _admin_key(port, fields) if fields is not None else None
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions", key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk phase")
    args = parser.parse_args(argv)
    upstream = start_upstream("nginx")
    work = Path(tempfile.mkdtemp(prefix="llmgw-governance-bench-"))
    body_file = work / "body.json"
    body_file.write_bytes(REQUEST_BODY)
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in VARIANTS}
    try:
        for r in range(args.rounds):
            for label, fields, config_name in VARIANTS:
                print(f"round {r + 1}/{args.rounds}: {label} ...", flush=True)
                proc, url, key = start(label, fields, config_name, upstream.json_url, work)
                try:
                    results[label].append(measure(url, args.seconds, body_file, key, proc.pid))
                finally:
                    stop_process(proc)
    finally:
        upstream.stop()

    print_rounds(results, args.rounds, args.seconds, work, "passthrough")
    return 0


if __name__ == "__main__":
    sys.exit(main())
