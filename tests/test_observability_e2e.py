"""Observability through real gateway processes: /metrics scraped and parsed with prometheus-client's
parser after real traffic (fallbacks, streams, limits), one scrape seeing every worker, the
metrics port, the JSON access log with the caller's x-request-id, and canary secrets that must
appear in no metric and no log line. Traces and Langfuse exports are in test_tracing_e2e.py."""

from __future__ import annotations

import time

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmgw.mock import MockUpstream
from support import free_port

MSG = [{"role": "user", "content": "hello metrics"}]
UPSTREAM_KEY = "sk-canary-upstream-7f3a9c1e5b"
CLIENT_KEY = "canary-client-key-5d8e2f4a1b9c"
MASTER_KEY = "canary-master-key-0a1b2c3d4e5f"


def scrape(url: str) -> dict[str, list]:
    r = httpx.get(url, timeout=5)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def total(fams: dict, sample: str, **labels: str) -> float:
    family = sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    return sum(s.value for s in fams.get(family, []) if s.name == sample
               and all(s.labels.get(k) == v for k, v in labels.items()))


def log_lines(gw) -> list[dict]:
    out = []
    for line in gw.log().splitlines():
        if line.startswith("{"):
            out.append(orjson.loads(line))
    return out


@pytest.fixture
def failing():
    with MockUpstream(status=503) as mock:
        yield mock


def chain_config(primary: str, secondary: str, extra: str = "") -> str:
    return f"""
upstreams:
  primary: {{provider: openai, base_url: "{primary}/v1", api_key: {UPSTREAM_KEY}}}
  secondary: {{provider: openai, base_url: "{secondary}/v1", api_key: {UPSTREAM_KEY}}}
models:
  chain:
    deployments: [{{name: first, upstream: primary, model: gpt-4o-mini}}]
    fallbacks: [{{to: second}}]
  second:
    deployments: [{{name: second, upstream: secondary, model: gpt-4o-mini}}]
{extra}"""


def test_metrics_count_what_happened(failing, mock_upstream, start_gateway):
    gw = start_gateway(chain_config(failing.url, mock_upstream.url))
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="chain", messages=MSG)
    stream = client.chat.completions.create(model="second", messages=MSG, stream=True,
                                            stream_options={"include_usage": True})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: hello metrics"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=MSG)
    fams = scrape(f"{gw.url}/metrics")
    route = "/v1/chat/completions"
    assert total(fams, "llmgw_requests_total", route=route, model_group="chain", deployment="second", status="200") == 3
    assert total(fams, "llmgw_requests_total", model_group="second", status="200") == 1
    assert total(fams, "llmgw_requests_total", status="404") == 1
    assert total(fams, "llmgw_fallbacks_total", model_group="chain", trigger="upstream_unavailable") == 3 or \
        total(fams, "llmgw_fallbacks_total", model_group="chain") == 3
    assert total(fams, "llmgw_upstream_failures_total", deployment="first") == 3
    assert total(fams, "llmgw_time_to_first_token_seconds_count", model_group="second") == 1
    assert total(fams, "llmgw_request_duration_seconds_count", route=route) == 5
    assert total(fams, "llmgw_upstream_duration_seconds_count", deployment="first") == 3
    assert total(fams, "llmgw_tokens_total", model_group="chain", type="input") > 0
    assert total(fams, "llmgw_cost_usd_total", model_group="chain") > 0  # gpt-4o-mini has a shipped price
    assert total(fams, "llmgw_errors_total", code="model_not_found") == 1
    assert total(fams, "llmgw_gateway_overhead_seconds_count", route=route) == 5
    assert total(fams, "llmgw_requests_in_flight") >= 1  # the scrape itself
    assert total(fams, "llmgw_queue_depth", queue="access_log") >= 0 and "llmgw_queue_dropped" in fams


def test_rate_limits_budgets_and_per_key_labels(mock_upstream, start_gateway, tmp_path):
    gw = start_gateway(f"""
upstreams:
  up: {{provider: openai, base_url: "{mock_upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
models:
  m: {{upstream: up, model: gpt-4o-mini}}
auth:
  keys: [{{name: alice, key: {CLIENT_KEY}}}]
governance:
  master_key: {MASTER_KEY}
  sqlite_path: {tmp_path / 'gov.db'}
  limits: {{models: {{m: {{rpm: 2}}}}}}
observability:
  metrics: {{per_key_labels: true}}
""")
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    codes = [httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG}, headers=headers,
                        timeout=10).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG},
                      headers={"authorization": "Bearer wrong-key-123456789"}).status_code == 401
    fams = scrape(f"{gw.url}/metrics")
    assert total(fams, "llmgw_rate_limited_total", model_group="m") == 1
    assert total(fams, "llmgw_errors_total", code="rate_limit_exceeded") == 1
    assert total(fams, "llmgw_key_requests_total", key="alice", status="200") == 2
    assert total(fams, "llmgw_key_requests_total", key="alice", status="429") == 1
    text = httpx.get(f"{gw.url}/metrics").text + gw.log()
    for secret in (CLIENT_KEY, MASTER_KEY, UPSTREAM_KEY, "wrong-key-123456789"):
        assert secret not in text


def test_one_scrape_sees_every_worker(mock_upstream, start_gateway):
    gw = start_gateway(f"""
upstreams:
  up: {{provider: openai, base_url: "{mock_upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
models:
  m: {{upstream: up}}
""", workers=2)
    n = 40
    for _ in range(n):  # a new connection each time: the kernel spreads them over both workers
        with httpx.Client() as c:
            assert c.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG}).status_code == 200
    time.sleep(1.3)  # each worker publishes its counts every second
    workers_seen = set()
    for _ in range(8):
        with httpx.Client() as c:
            fams = {f.name: f.samples for f in text_string_to_metric_families(c.get(f"{gw.url}/metrics").text)}
        assert total(fams, "llmgw_requests_total", model_group="m", status="200") == n
        assert total(fams, "llmgw_workers") == 2
        workers_seen.add(int(total(fams, "llmgw_request_duration_seconds_count", model_group="m")))
    pids = {line["request_id"].split("-")[1] for line in log_lines(gw) if line.get("model") == "m"}
    assert len(pids) == 2, "both workers should have served requests"


def test_metrics_on_their_own_port_or_off(mock_upstream, start_gateway):
    port = free_port()
    gw = start_gateway(f"""
upstreams:
  up: {{provider: openai, base_url: "{mock_upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
models:
  m: {{upstream: up}}
observability:
  metrics: {{port: {port}}}
""")
    assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG}).status_code == 200
    assert httpx.get(f"{gw.url}/metrics").status_code == 404
    fams = scrape(f"http://127.0.0.1:{port}/metrics")
    assert total(fams, "llmgw_requests_total", model_group="m") == 1
    assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 404
    off = start_gateway(f"""
upstreams:
  up: {{provider: openai, base_url: "{mock_upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
models:
  m: {{upstream: up}}
observability: {{metrics: false}}
""")
    r = httpx.get(f"{off.url}/metrics")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_access_log_lines_with_the_callers_request_id(mock_upstream, start_gateway):
    gw = start_gateway(f"""
upstreams:
  up: {{provider: openai, base_url: "{mock_upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
models:
  m: {{upstream: up, model: gpt-4o-mini}}
auth:
  keys: [{{name: alice, key: {CLIENT_KEY}}}]
""")
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "x-request-id": "trace-me-42"}
    r = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG}, headers=headers)
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-me-42"
    bad = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG},
                     headers={"x-request-id": "bad id with spaces"})
    assert bad.status_code == 401 and bad.headers["x-request-id"].startswith("req-")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(log_lines(gw)) < 2:
        time.sleep(0.05)
    lines = {line["request_id"]: line for line in log_lines(gw)}
    line = lines["trace-me-42"]
    assert line["status"] == 200 and line["key_name"] == "alice" and line["model_group"] == "m"
    assert line["deployment"] == "m" and line["prompt_tokens"] > 0 and line["latency_ms"] > 0
    assert line["cost_usd"] > 0 and line["attempts"] == 1 and line["path"] == "/v1/chat/completions"
    refused = lines[bad.headers["x-request-id"]]
    assert refused["status"] == 401 and refused["error_code"] == "missing_api_key"
    assert CLIENT_KEY not in gw.log() and UPSTREAM_KEY not in gw.log()


def test_serve_on_a_terminal_prints_one_readable_line_per_request(mock_upstream, tmp_path):
    import os
    import pty
    import subprocess
    import sys

    from support import free_port, wait_healthy

    config = tmp_path / "tty.yaml"
    config.write_text(f"""
upstreams:
  up: {{provider: openai, base_url: "{mock_upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
models:
  m: {{upstream: up, model: gpt-4o-mini}}
""")
    port = free_port()
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "llmgw.cli", "serve", "--config", str(config), "--port", str(port)],
                            stdout=slave, stderr=subprocess.DEVNULL, start_new_session=True)
    os.close(slave)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc=proc)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "m", "messages": MSG},
                       headers={"x-request-id": "tty-1"})
        assert r.status_code == 200
        out = b""
        deadline = time.monotonic() + 5
        while b"tty-1" not in out and time.monotonic() < deadline:
            out += os.read(master, 65536)
        text = out.decode()
        line = next(x for x in text.splitlines() if "tty-1" in x)
        assert " 200 POST /v1/chat/completions m " in line and " ms" in line and "tok" in line
        assert not line.lstrip().startswith("{")  # a person reads it: not JSON
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.close(master)
