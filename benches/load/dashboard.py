#!/usr/bin/env python3
"""The dashboard open versus closed, in one run: what a browser refreshing /ui costs the gateway.

    python benches/load/dashboard.py [--rounds 4] [--seconds 5] [--refresh 5]

One gateway with governance (a virtual key, the ledger) pinned to core 1, wrk and the nginx
upstream on core 0, as in variants.py. The phases alternate on the same process, so start-up
and ledger size do not differ between the variants:

- closed: only the load;
- open: the load, plus what an open dashboard asks every `--refresh` seconds: the Overview page
  (`/admin/overview`, read from the ledger, which the load keeps filling) and the Architecture
  page (`/admin/diagram` as SVG and JSON) — two pages refreshing at once, more than one open tab.
  The tab's first refresh (catching up on the rows the closed phase wrote) is done before the
  measurement starts: a tab that stays open reads each new row once.

Medians over rounds; the ratio is the median of per-round ratios to "closed". The budget: the
open dashboard costs at most 3% of throughput.
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
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from governance import MASTER, _admin_key  # noqa: E402
from run import GATEWAY_CORE, REQUEST_BODY, free_port, pinned, start_upstream, stop_process  # noqa: E402
from variants import _wait_health, measure, print_rounds  # noqa: E402

PAGES = ("/admin/overview?window=3600", "/admin/diagram?format=svg", "/admin/diagram?format=json")


class Dashboard(threading.Thread):
    """A browser tab's refreshes: every `refresh` seconds, each page once, until stopped."""

    def __init__(self, port: int, refresh: float) -> None:
        super().__init__(daemon=True)
        self.port, self.refresh = port, refresh
        self.stop = threading.Event()
        self.caught_up = threading.Event()  # its first refresh is done
        self.fetches = self.failures = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            for page in PAGES:
                try:
                    conn.request("GET", page, headers={"authorization": f"Bearer {MASTER}"})
                    resp = conn.getresponse()
                    resp.read()
                    self.fetches += 1
                    self.failures += resp.status != 200
                except OSError:
                    self.failures += 1
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.caught_up.set()
            self.stop.wait(self.refresh)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk phase")
    parser.add_argument("--refresh", type=float, default=5.0, help="seconds between a page's refreshes")
    args = parser.parse_args(argv)
    upstream = start_upstream("nginx")
    work = Path(tempfile.mkdtemp(prefix="llmgw-dashboard-bench-"))
    body_file = work / "body.json"
    body_file.write_bytes(REQUEST_BODY)
    port = free_port()
    env = {**os.environ, "LLMGW_BENCH_UPSTREAM": upstream.json_url, "LLMGW_MASTER_KEY": MASTER,
           "LLMGW_DB_PATH": str(work / "ledger.db")}
    argv_ = pinned(GATEWAY_CORE, [sys.executable, "-m", "llmgw.cli", "serve", "--config",
                                  str(HERE / "configs" / "governance.yaml"), "--port", str(port)])
    proc = subprocess.Popen(argv_, env=env, stdout=(work / "gateway.log").open("wb"), stderr=subprocess.STDOUT)
    results: dict[str, list[dict[str, Any]]] = {"closed": [], "open": []}
    fetched = failed = 0
    try:
        _wait_health(port)
        key = _admin_key(port, {})
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        for r in range(args.rounds):
            for label in ("closed", "open") if r % 2 == 0 else ("open", "closed"):
                print(f"round {r + 1}/{args.rounds}: dashboard {label} ...", flush=True)
                tab = Dashboard(port, args.refresh) if label == "open" else None
                if tab is not None:
                    # A tab that stays open reads each new ledger row once; its first refresh here
                    # would also read the rows the closed phase wrote: done before measuring.
                    tab.start()
                    tab.caught_up.wait(60)
                try:
                    results[label].append(measure(url, args.seconds, body_file, key, proc.pid))
                finally:
                    if tab is not None:
                        tab.stop.set()
                        tab.join()
                        fetched, failed = fetched + tab.fetches, failed + tab.failures
                        time.sleep(0.2)
    finally:
        stop_process(proc)
        upstream.stop()
    print_rounds(results, args.rounds, args.seconds, work, "closed")
    print(f"\ndashboard fetches: {fetched} ({failed} failed), every {args.refresh:g} s: {', '.join(PAGES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
