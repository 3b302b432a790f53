"""The non-gateway parts of benches/load/run.py: wrk parsing, /proc readings, start-up probing,
the upstream fallback and the markdown table."""

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import MockOpenAI

LOAD_DIR = Path(__file__).resolve().parents[2] / "benches" / "load"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benches_load_{name}", LOAD_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


run_py = _load("run")
procs = _load("procs")

WRK_STDOUT = """Running 3s test @ http://127.0.0.1:18080/v1/chat/completions
  1 threads and 32 connections
WRK_JSON {"requests":120000,"duration_us":3000000,"bytes":1,"errors":{"connect":0,"read":0,"write":0,"status":2,"timeout":1},"latency_us":{"p50":700,"p90":900,"p99":1500,"p99.9":3000,"max":9000,"mean":750.5}}
"""


def test_wrk_summary_line_is_parsed_into_rate_and_errors() -> None:
    data = run_py.parse_wrk(WRK_STDOUT)
    assert data["requests_per_s"] == 40000.0
    assert data["error_count"] == 3
    assert data["latency_us"]["p99"] == 1500
    with pytest.raises(ValueError, match="WRK_JSON"):
        run_py.parse_wrk("Running 3s test\n")


def test_tree_usage_sums_a_parent_and_its_child() -> None:
    code = "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); print(c.pid, flush=True); c.wait()"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        try:
            assert procs.descendants(parent.pid) == [parent.pid, child]
            usage = procs.tree_usage(parent.pid)
            alone = procs.tree_usage(child)
            assert usage.processes == 2 and alone.processes == 1
            assert usage.rss > alone.rss > 1 << 20  # a Python interpreter is well over 1 MiB
            assert usage.cpu_s >= alone.cpu_s >= 0.0
        finally:
            subprocess.run(["kill", str(child)], check=False)
            parent.wait(10)


def test_first_answer_probe_waits_for_a_200(server: MockOpenAI) -> None:
    started = time.monotonic()
    elapsed = procs.wait_first_answer("127.0.0.1", server.port, "/ok/v1/chat/completions", b"{}", started=started)
    assert 0 < elapsed < 60 and server.hits["ok"] == 1
    with pytest.raises(TimeoutError):
        procs.wait_first_answer("127.0.0.1", server.port, "/status502/v1/chat/completions", b"{}",
                                started=time.monotonic(), limit_s=0.05)
    assert server.hits["status502"] >= 1


def test_mock_fallback_upstream_answers_and_stops() -> None:
    pytest.importorskip("llmgw.mock")
    upstream = run_py.start_upstream("mock")
    try:
        assert upstream.kind.startswith("llmgw.mock") and upstream.json_url == upstream.sse_url
        report = run_py.llmgw_bench(upstream.json_url, "-n", "5")
        assert report["requests"] == {"total": 5, "ok": 5, "failed": 0}
    finally:
        upstream.stop()
    assert upstream.process is not None and upstream.process.poll() is not None


def _dist(p50_ms: float, p99_ms: float) -> dict[str, float]:
    return {"p50": p50_ms, "p99": p99_ms}


def _results(with_gateway: bool) -> dict:
    bench = lambda rps: {"throughput": {"requests_per_s": rps}}  # noqa: E731
    wrk = lambda rps, p99: {"requests_per_s": rps, "latency_us": {"p99": p99}}  # noqa: E731
    m: dict = {
        "latency_c1": {"direct": {"latency_ms": _dist(0.040, 0.100)},
                       "gateway": {"latency_ms": _dist(0.300, 0.900)} if with_gateway else None},
        "stream_c1": {"direct": {"ttft_ms": _dist(0.050, 0.200)},
                      "gateway": {"ttft_ms": _dist(0.450, 1.200)} if with_gateway else None},
        "throughput_wrk": {"direct": wrk(40000.0, 1500), "gateway": wrk(10000.0, 5000) if with_gateway else None},
        "throughput_llmgw_bench": {"direct": bench(12000.0), "gateway": bench(6000.0) if with_gateway else None},
    }
    if with_gateway:
        mib = 1 << 20
        m.update(gateway_idle={"processes": 2, "rss": 60 * mib, "pss": 40 * mib, "cpu_s": 1.0},
                 gateway_after_load={"processes": 2, "rss": 70 * mib, "pss": 45 * mib, "cpu_s": 9.0},
                 gateway_requests_served=100_500, start_to_first_answer_s=0.31, cpu_per_request_us_wrk=95.0)
    meta = {"date": "today", "quick": False, "upstream": "nginx", "gateway_pinning": "taskset -c 1",
            "loadgen_pinning": "taskset -c 0", "cpu": "cpu", "cpus": 2, "python": "3.11",
            "bench_client": "llmgw.transport", "concurrency": 32,
            "gateway_missing": None if with_gateway else "examples/bench.yaml is missing"}
    return {"meta": meta, "measurements": m}


def test_markdown_table_shows_what_the_gateway_adds() -> None:
    table = run_py.render_markdown(_results(with_gateway=True))
    assert "| latency p50, c=1 | 40 µs | 300 µs | +260 µs |" in table
    assert "| stream TTFT p99, c=1 | 200 µs | 1,200 µs | +1,000 µs |" in table
    assert "| req/s, c=32, wrk | 40,000 | 10,000 | × 0.25 |" in table
    assert "| req/s, c=32, llmgw bench | 12,000 | 6,000 | × 0.50 |" in table
    assert "after 100,500 requests, 2 processes | — | 60 / 70 MiB (PSS 40 / 45) |" in table
    assert "| 310 ms |" in table and "| 95 µs |" in table


def test_markdown_table_without_a_gateway_says_why() -> None:
    table = run_py.render_markdown(_results(with_gateway=False))
    assert "| latency p50, c=1 | 40 µs | n/a | n/a |" in table
    assert "Gateway not measured: examples/bench.yaml is missing." in table
