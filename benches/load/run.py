#!/usr/bin/env python3
"""The load benchmark behind the README's figures: the same load sent straight to a fast upstream
and through the gateway, side by side in one run, so the difference is what the gateway adds.

    python benches/load/run.py [--quick]

Upstream: nginx returning a fixed OpenAI body (../shared/bench/nginx-mock.sh from the repository
root: :18080 JSON, :18081 SSE), else the project's own mock (`python -m llmgw.mock`, zero delay).
Gateway: `llmgw serve --config examples/bench.yaml` pinned to core 1 (`taskset -c 1`); load
generators (wrk with post.lua, and `llmgw bench`) pinned to core 0, the core nginx's worker is on.

Measured: added latency p50/p99 at concurrency 1 (non-streaming) and added stream TTFT; throughput
at concurrency 32 (wrk, with `llmgw bench` beside it); RSS/PSS of the gateway process tree idle and
after >= 100k requests; time from process start to the first answered request; gateway CPU time
per request (from /proc). Writes bench-results/load-<time>.json and .md (git-ignored). The full run
takes about 2 minutes, --quick about 40 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from procs import tree_usage, wait_first_answer  # noqa: E402

REPO = HERE.parents[1]
RESULTS_DIR = REPO / "bench-results"
NGINX_MOCK = REPO / ".." / "shared" / "bench" / "nginx-mock.sh"
GATEWAY_CONFIG = REPO / "examples" / "bench.yaml"
NGINX_JSON_URL = "http://127.0.0.1:18080/v1"
NGINX_SSE_URL = "http://127.0.0.1:18081/v1"
MODEL = "bench"
PROMPT = "Write one sentence about load testing."
REQUEST_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": PROMPT}],
                           "max_tokens": 64}).encode()
STREAM_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": PROMPT}],
                          "max_tokens": 64, "stream": True}).encode()
GATEWAY_CORE, LOADGEN_CORE = "1", "0"


@dataclass(frozen=True)
class Plan:
    """How long each phase runs; everything is bounded so a full run stays under ~5 minutes."""

    latency_s: float  # each c=1 phase (direct, gateway; non-streaming and streaming)
    throughput_s: float  # each c=32 phase (wrk and llmgw bench, direct and gateway)
    warmup_s: float
    rss_after_requests: int  # gateway requests before the "RSS after load" reading
    concurrency: int = 32


FULL = Plan(latency_s=10.0, throughput_s=10.0, warmup_s=1.0, rss_after_requests=100_000)
QUICK = Plan(latency_s=3.0, throughput_s=3.0, warmup_s=0.5, rss_after_requests=20_000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(core: str, argv: list[str]) -> list[str]:
    """`argv` pinned to `core` with taskset when the machine has two cores and taskset exists."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", core, *argv]
    return argv


# --- the upstream ---------------------------------------------------------------------------------

@dataclass
class Upstream:
    kind: str
    json_url: str
    sse_url: str
    process: subprocess.Popen[bytes] | None = None  # only when we started it (the mock)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def start_upstream(choice: str) -> Upstream:
    """nginx via ../shared/bench/nginx-mock.sh (left running: it is shared and idempotent), else
    the project's mock upstream. Raises RuntimeError when neither can be started."""
    problems: list[str] = []
    if choice in ("auto", "nginx"):
        if NGINX_MOCK.is_file():
            proc = subprocess.run(["bash", str(NGINX_MOCK)], capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                return Upstream("nginx fixed body (../shared/bench/nginx-mock.sh)", NGINX_JSON_URL, NGINX_SSE_URL)
            problems.append(f"nginx-mock.sh failed: {proc.stderr.strip()[-300:]}")
        else:
            problems.append(f"{NGINX_MOCK} not found")
    if choice in ("auto", "mock"):
        try:
            import llmgw.mock  # noqa: F401
        except ImportError:
            problems.append("llmgw.mock is not installed")
        else:
            port = free_port()
            proc = subprocess.Popen(pinned(LOADGEN_CORE, [sys.executable, "-m", "llmgw.mock", "--host", "127.0.0.1",
                                                          "--port", str(port), "--no-auth"]),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{port}/v1"
            try:
                wait_first_answer("127.0.0.1", port, "/v1/chat/completions", REQUEST_BODY,
                                  started=time.monotonic(), limit_s=30)
            except TimeoutError as exc:
                stop_process(proc)
                problems.append(f"llmgw.mock did not answer: {exc}")
            else:
                return Upstream("llmgw.mock (Python, zero delay)", url, url, proc)
    raise RuntimeError("no upstream could be started: " + "; ".join(problems))


# --- the gateway ----------------------------------------------------------------------------------

def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the gateway drains and stops its workers), then SIGKILL after 10 s; only the process we started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Gateway:
    """`llmgw serve --config examples/bench.yaml` on a free port, pinned to the gateway core."""

    def __init__(self, upstream_url: str, log: Path, probe_body: bytes = REQUEST_BODY,
                 transport: str = "fast") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        env = {**os.environ, "LLMGW_BENCH_UPSTREAM": upstream_url, "LLMGW_BENCH_TRANSPORT": transport}
        argv = pinned(GATEWAY_CORE, [sys.executable, "-m", "llmgw.cli", "serve", "--config", str(GATEWAY_CONFIG),
                                     "--port", str(self.port)])
        self._log = log.open("wb")
        started = time.monotonic()
        self.process = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self.start_to_first_answer_s = wait_first_answer("127.0.0.1", self.port, "/v1/chat/completions",
                                                             probe_body, started=started, limit_s=60)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"the gateway never answered; its log: {log}") from None
        if self.process.poll() is not None:
            raise RuntimeError(f"the gateway exited; another server answered on port {self.port}? log: {log}")

    def usage(self) -> dict[str, Any]:
        return asdict(tree_usage(self.process.pid))

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()


def gateway_available() -> str | None:
    """None when the gateway can run here, else why not."""
    try:
        import llmgw.cli  # noqa: F401
    except ImportError as exc:
        return f"llmgw.cli is not importable ({exc})"
    if not GATEWAY_CONFIG.is_file():
        return f"{GATEWAY_CONFIG.relative_to(REPO)} is missing"
    return None


# --- load generators ------------------------------------------------------------------------------

def llmgw_bench(url: str, *args: str) -> dict[str, Any]:
    """`llmgw bench --json` on the load-generator core; returns its report."""
    argv = pinned(LOADGEN_CORE, [sys.executable, "-m", "llmgw.bench", "--url", url, "--model", MODEL,
                                 "--prompt", PROMPT, "--json", *args])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if proc.returncode not in (0, 1):  # 1: some requests failed, still a report
        raise RuntimeError(f"llmgw bench failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def parse_wrk(stdout: str) -> dict[str, Any]:
    """The summary post.lua prints (`WRK_JSON {...}`), plus requests per second."""
    for line in stdout.splitlines():
        if line.startswith("WRK_JSON "):
            data: dict[str, Any] = json.loads(line[len("WRK_JSON "):])
            data["requests_per_s"] = data["requests"] / (data["duration_us"] / 1e6)
            data["error_count"] = sum(data["errors"].values())
            return data
    raise ValueError("wrk printed no WRK_JSON line (was post.lua loaded?):\n" + stdout[-500:])


def wrk(url: str, *, duration: float, connections: int, body_file: Path) -> dict[str, Any] | None:
    """One wrk thread with `connections` keep-alive connections POSTing the body; None without wrk."""
    if shutil.which("wrk") is None:
        return None
    argv = pinned(LOADGEN_CORE, ["wrk", "-t1", f"-c{connections}", f"-d{max(int(duration), 1)}s",
                                 "-s", str(HERE / "post.lua"), f"{url}/chat/completions", "--", str(body_file)])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stderr.strip()[-500:]}")
    return parse_wrk(proc.stdout)


# --- the run --------------------------------------------------------------------------------------

def measure(plan: Plan, upstream: Upstream, body_file: Path, log_dir: Path, with_gateway: bool) -> dict[str, Any]:
    c1 = ["-c", "1", "--duration", str(plan.latency_s), "--warmup", str(plan.warmup_s)]
    c32 = ["-c", str(plan.concurrency), "--duration", str(plan.throughput_s), "--warmup", str(plan.warmup_s)]
    out: dict[str, Any] = {}

    def side_by_side(name: str, run: Any, direct_url: str, gateway_url: str | None) -> None:
        print(f"  {name}: direct ...", flush=True)
        pair = {"direct": run(direct_url), "gateway": None}
        if gateway_url is not None:
            print(f"  {name}: gateway ...", flush=True)
            pair["gateway"] = run(gateway_url)
        out[name] = pair

    gw = Gateway(upstream.json_url, log_dir / "gateway.log") if with_gateway else None
    try:
        if gw is not None:
            time.sleep(0.5)  # let start-up work settle before the idle reading
            out["gateway_idle"] = gw.usage()
            out["start_to_first_answer_s"] = gw.start_to_first_answer_s
        gw_url = gw.url if gw is not None else None
        side_by_side("latency_c1", lambda u: llmgw_bench(u, *c1), upstream.json_url, gw_url)
        before = gw.usage() if gw is not None else None
        side_by_side("throughput_wrk", lambda u: wrk(u, duration=plan.throughput_s, connections=plan.concurrency,
                                                     body_file=body_file), upstream.json_url, gw_url)
        if gw is not None and before is not None and out["throughput_wrk"]["gateway"] is not None:
            after = gw.usage()
            out["cpu_per_request_us_wrk"] = ((after["cpu_s"] - before["cpu_s"]) * 1e6
                                             / max(out["throughput_wrk"]["gateway"]["requests"], 1))
        side_by_side("throughput_llmgw_bench", lambda u: llmgw_bench(u, *c32), upstream.json_url, gw_url)
        if gw is not None:
            served = _gateway_requests(out)
            if served < plan.rss_after_requests:
                print(f"  topping the gateway up to {plan.rss_after_requests} requests ...", flush=True)
                top_up = llmgw_bench(gw.url, "-c", str(plan.concurrency), "--requests",
                                     str(plan.rss_after_requests - served), "--duration", "120")
                served += top_up["requests"]["total"]
            out["gateway_requests_served"] = served
            out["gateway_after_load"] = gw.usage()
    finally:
        if gw is not None:
            gw.stop()
    # The same gateway on the aiohttp transport, the baseline that decided the default (DESIGN.md §6).
    gw_aio = Gateway(upstream.json_url, log_dir / "gateway-aiohttp.log", transport="aiohttp") if with_gateway else None
    if gw_aio is not None:
        try:
            print("  aiohttp transport: gateway ...", flush=True)
            out["aiohttp_latency_c1"] = llmgw_bench(gw_aio.url, *c1)
            out["aiohttp_throughput_wrk"] = wrk(gw_aio.url, duration=plan.throughput_s,
                                                connections=plan.concurrency, body_file=body_file)
        finally:
            gw_aio.stop()
    # Streams need the SSE upstream behind the gateway: a second gateway, started only now.
    gw_sse = Gateway(upstream.sse_url, log_dir / "gateway-sse.log", STREAM_BODY) if with_gateway else None
    try:
        side_by_side("stream_c1", lambda u: llmgw_bench(u, "--stream", *c1), upstream.sse_url,
                     gw_sse.url if gw_sse is not None else None)
    finally:
        if gw_sse is not None:
            gw_sse.stop()
    return out


def _gateway_requests(out: dict[str, Any]) -> int:
    """Requests the gateway answered in the measured phases (warm-ups and probes add a few more)."""
    n = out["latency_c1"]["gateway"]["requests"]["total"] + out["throughput_llmgw_bench"]["gateway"]["requests"]["total"]
    if out["throughput_wrk"]["gateway"] is not None:
        n += out["throughput_wrk"]["gateway"]["requests"]
    return int(n)


def _us(ms: float) -> str:
    return f"{ms * 1000:,.0f} µs"


def _row(label: str, direct: str, gateway: str, diff: str) -> str:
    return f"| {label} | {direct} | {gateway} | {diff} |"


def render_markdown(results: dict[str, Any]) -> str:
    """The README table from a results dict (as written to the JSON file)."""
    meta, m = results["meta"], results["measurements"]
    lines = [
        f"Load benchmark, {meta['date']} ({'quick' if meta['quick'] else 'full'} run): "
        f"upstream {meta['upstream']}; gateway {meta['gateway_pinning']}; load {meta['loadgen_pinning']}; "
        f"{meta['cpu']} × {meta['cpus']}, Python {meta['python']}; client {meta['bench_client']}.",
        "",
        "| measure | direct upstream | through gateway | gateway adds |",
        "|---|---|---|---|",
    ]

    def dist_rows(name: str, key: str, label: str) -> None:
        pair = m[name]
        d = pair["direct"][key]
        g = pair["gateway"][key] if pair["gateway"] is not None else None
        for p in ("p50", "p99"):
            if g is None:
                lines.append(_row(f"{label} {p}, c=1", _us(d[p]), "n/a", "n/a"))
            else:
                lines.append(_row(f"{label} {p}, c=1", _us(d[p]), _us(g[p]), "+" + _us(g[p] - d[p])))

    dist_rows("latency_c1", "latency_ms", "latency")
    dist_rows("stream_c1", "ttft_ms", "stream TTFT")
    w = m["throughput_wrk"]
    if w["direct"] is not None:
        g = w["gateway"]
        lines.append(_row(f"req/s, c={meta['concurrency']}, wrk", f"{w['direct']['requests_per_s']:,.0f}",
                          f"{g['requests_per_s']:,.0f}" if g else "n/a",
                          f"× {g['requests_per_s'] / w['direct']['requests_per_s']:.2f}" if g else "n/a"))
        lines.append(_row(f"latency p99, c={meta['concurrency']}, wrk", _us(w["direct"]["latency_us"]["p99"] / 1000),
                          _us(g["latency_us"]["p99"] / 1000) if g else "n/a",
                          "+" + _us((g["latency_us"]["p99"] - w["direct"]["latency_us"]["p99"]) / 1000) if g else "n/a"))
    if m.get("aiohttp_throughput_wrk") and w["direct"] is not None:
        a, d = m["aiohttp_throughput_wrk"], w["direct"]
        lines.append(_row(f"req/s, c={meta['concurrency']}, wrk — gateway on the aiohttp transport",
                          f"{d['requests_per_s']:,.0f}", f"{a['requests_per_s']:,.0f}",
                          f"× {a['requests_per_s'] / d['requests_per_s']:.2f}"))
    if m.get("aiohttp_latency_c1"):
        d, a = m["latency_c1"]["direct"]["latency_ms"], m["aiohttp_latency_c1"]["latency_ms"]
        lines.append(_row("latency p50, c=1 — gateway on the aiohttp transport", _us(d["p50"]), _us(a["p50"]),
                          "+" + _us(a["p50"] - d["p50"])))
    b = m["throughput_llmgw_bench"]
    bd, bg = b["direct"]["throughput"]["requests_per_s"], (b["gateway"] or {}).get("throughput", {}).get("requests_per_s")
    lines.append(_row(f"req/s, c={meta['concurrency']}, llmgw bench", f"{bd:,.0f}",
                      f"{bg:,.0f}" if bg else "n/a", f"× {bg / bd:.2f}" if bg else "n/a"))
    if "gateway_idle" in m:
        mib = 1 << 20
        idle, after = m["gateway_idle"], m["gateway_after_load"]
        pss = (f" (PSS {idle['pss'] / mib:.0f} / {after['pss'] / mib:.0f})"
               if idle["pss"] is not None and after["pss"] is not None else "")
        lines.append(_row(f"gateway RSS idle / after {m['gateway_requests_served']:,} requests, "
                          f"{idle['processes']} processes", "—",
                          f"{idle['rss'] / mib:.0f} / {after['rss'] / mib:.0f} MiB{pss}", ""))
        lines.append(_row("process start → first answered request", "—",
                          f"{m['start_to_first_answer_s'] * 1000:,.0f} ms", ""))
        if "cpu_per_request_us_wrk" in m:
            lines.append(_row(f"gateway CPU time per request (wrk, c={meta['concurrency']})", "—",
                              f"{m['cpu_per_request_us_wrk']:,.0f} µs", ""))
    else:
        lines.append("")
        lines.append(f"Gateway not measured: {meta['gateway_missing']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter phases (~40 s in all), 20k requests for RSS")
    parser.add_argument("--upstream", choices=("auto", "nginx", "mock"), default="auto",
                        help="auto: nginx, else the project's mock (default)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    from llmgw.bench.client import CLIENT_NAME

    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(exist_ok=True)
    log_dir = RESULTS_DIR / f"load-{stamp}-logs"
    log_dir.mkdir()
    body_file = log_dir / "body.json"
    body_file.write_bytes(REQUEST_BODY)
    missing = gateway_available()
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    upstream = start_upstream(args.upstream)
    print(f"upstream: {upstream.kind}; gateway: {'not available: ' + missing if missing else 'llmgw serve'}",
          flush=True)
    started = time.monotonic()
    try:
        measurements = measure(plan, upstream, body_file, log_dir, with_gateway=missing is None)
    finally:
        upstream.stop()
    results = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "quick": args.quick,
            "plan": asdict(plan),
            "concurrency": plan.concurrency,
            "upstream": upstream.kind,
            "gateway_missing": missing,
            "gateway_pinning": f"taskset -c {GATEWAY_CORE}" if pin else "not pinned",
            "loadgen_pinning": f"taskset -c {LOADGEN_CORE}" if pin else "not pinned",
            "bench_client": CLIENT_NAME,
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
            "run_seconds": time.monotonic() - started,
            "commit": _git_commit(),
        },
        "measurements": measurements,
    }
    json_path = RESULTS_DIR / f"load-{stamp}.json"
    md_path = RESULTS_DIR / f"load-{stamp}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    table = render_markdown(results)
    md_path.write_text(table)
    print()
    print(table)
    print(f"wrote {json_path.relative_to(REPO)} and {md_path.relative_to(REPO)}")
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _git_commit() -> str | None:
    proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
