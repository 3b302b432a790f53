"""Traces and Langfuse through real gateway processes: the client's traceparent is joined and
passed upstream with the attempt's span id; a fake OTLP receiver gets the gateway's span with its
stages and attempts as children (GenAI attributes, statuses); sampling; a collector that is down
costs nothing but its queue; a fake Langfuse ingestion endpoint gets a trace and a generation per
request with redacted bodies; canary secrets appear in no span and no export."""

from __future__ import annotations

import time

import httpx
import openai
import orjson
import pytest

from fake_langfuse import FakeLangfuse
from fake_otlp import FakeOtlpReceiver, attributes
from llmgw.mock import MockUpstream

MSG = [{"role": "user", "content": "hello traces"}]
UPSTREAM_KEY = "sk-canary-upstream-11aa22bb33cc"
CLIENT_KEY = "canary-client-key-44dd55ee66ff"
OTLP_TOKEN = "canary-otlp-token-77gg88hh"
LF_SECRET = "sk-lf-canary-99ii00jj"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"

SERVER, CLIENT, INTERNAL = 2, 3, 1


@pytest.fixture
def otlp():
    with FakeOtlpReceiver() as receiver:
        yield receiver


def traced(upstream: str, otlp_url: str, extra: str = "", sample: float = 1.0, second: str | None = None) -> str:
    fallback = ""
    if second:
        fallback = f"""
  flaky:
    deployments: [{{name: first, upstream: up, model: gpt-4o-mini}}]
    fallbacks: [{{to: backup}}]
  backup:
    deployments: [{{name: backup, upstream: spare, model: gpt-4o-mini}}]"""
    spare = f"\n  spare: {{provider: openai, base_url: \"{second}/v1\", api_key: {UPSTREAM_KEY}}}" if second else ""
    return f"""
upstreams:
  up: {{provider: openai, base_url: "{upstream}/v1", api_key: {UPSTREAM_KEY}}}{spare}
models:
  m: {{upstream: up, model: gpt-4o-mini}}{fallback}
auth:
  keys: [{{name: alice, key: {CLIENT_KEY}}}]
guardrails:
  pii: {{mode: redact}}
observability:
  tracing:
    endpoint: {otlp_url}
    headers: {{authorization: "Bearer {OTLP_TOKEN}"}}
    sample_ratio: {sample}
    interval: 0.2
{extra}"""


def by_name(spans, name):
    found = [s for s in spans if s.name == name]
    assert found, f"no span {name!r} in {[s.name for s in spans]}"
    return found


def test_a_request_becomes_a_span_tree_joined_to_the_clients_trace(mock_upstream, otlp, start_gateway):
    gw = start_gateway(traced(mock_upstream.url, otlp.url))
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
               "tracestate": "vendor=abc"}
    r = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG, "temperature": 0.2,
                                                            "max_tokens": 50}, headers=headers, timeout=10)
    assert r.status_code == 200
    # the upstream saw the same trace, with the attempt's span as its parent
    upstream_tp = mock_upstream.last_request()["headers"]["traceparent"]
    version, trace_id, parent, flags = upstream_tp.split("-")
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "01") and parent != CLIENT_SPAN
    assert mock_upstream.last_request()["headers"]["tracestate"] == "vendor=abc"

    spans = otlp.wait_for_spans(3)
    [root] = [s for s in spans if s.kind == SERVER]
    assert root.trace_id.hex() == CLIENT_TRACE and root.parent_span_id.hex() == CLIENT_SPAN
    assert root.name == "chat m"
    attrs = attributes(root)
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "m"
    assert attrs["http.response.status_code"] == 200 and attrs["llmgw.request_id"] == r.headers["x-request-id"]
    [attempt] = [s for s in spans if s.kind == CLIENT]
    assert attempt.parent_span_id == root.span_id and attempt.span_id.hex() == parent  # what the upstream got
    a = attributes(attempt)
    assert a["gen_ai.request.model"] == "gpt-4o-mini" and a["gen_ai.usage.input_tokens"] > 0
    assert a["gen_ai.request.temperature"] == 0.2 and a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.provider.name"] == "openai" and a["server.address"].startswith("127.0.0.1")
    stages = [s for s in spans if s.kind == INTERNAL]
    assert {s.name for s in stages} >= {"guardrails pre_request"} and all(s.parent_span_id == root.span_id for s in stages)
    assert all(root.start_time_unix_nano <= s.start_time_unix_nano <= s.end_time_unix_nano <= root.end_time_unix_nano
               for s in spans if s is not root)
    [export] = [e for e in otlp.requests if e.kept][:1]
    assert export.headers["authorization"] == f"Bearer {OTLP_TOKEN}"
    assert export.headers["content-type"] == "application/x-protobuf"


def test_fallback_attempts_are_sibling_spans_with_the_failure_marked(otlp, mock_upstream, start_gateway):
    with MockUpstream(status=503) as failing:
        gw = start_gateway(traced(failing.url, otlp.url, second=mock_upstream.url))
        client = openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0)
        stream = client.chat.completions.create(model="flaky", messages=MSG, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: hello traces"
        spans = otlp.wait_for_spans(4)
    [root] = [s for s in spans if s.kind == SERVER]
    attempts = sorted((s for s in spans if s.kind == CLIENT), key=lambda s: s.start_time_unix_nano)
    assert len(attempts) == 2 and all(s.parent_span_id == root.span_id for s in attempts)
    failed, served = attempts
    assert failed.status.code == 2 and attributes(failed)["error.type"]
    assert served.status.code != 2 and attributes(served)["llmgw.attempt.via"] == "fallback"
    assert attributes(root)["llmgw.deployment"] == "backup"


def test_sampling_and_the_clients_flag(mock_upstream, otlp, start_gateway):
    gw = start_gateway(traced(mock_upstream.url, otlp.url, sample=0.0))
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    for _ in range(5):
        assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG},
                          headers=headers).status_code == 200
    # not sampled: no spans, but the upstream still joins a trace (flags 00)
    assert mock_upstream.last_request()["headers"]["traceparent"].endswith("-00")
    sampled = {**headers, "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG},
                      headers=sampled).status_code == 200
    spans = otlp.wait_for_spans(2)
    time.sleep(0.5)
    assert {s.trace_id.hex() for s in otlp.spans()} == {CLIENT_TRACE}  # only the request the client sampled


def test_a_collector_that_is_down_does_not_slow_or_fail_requests(mock_upstream, otlp, start_gateway):
    otlp.fail_next(1000, 503)
    gw = start_gateway(traced(mock_upstream.url, otlp.url))
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    for _ in range(20):
        assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG},
                          headers=headers).status_code == 200
    time.sleep(0.6)
    assert len(otlp.requests) >= 1 and not otlp.spans()
    otlp.fail_next(0)
    otlp.clear()
    spans = otlp.wait_for_spans(20 * 3, timeout=15)  # the kept batch arrives once the collector is back
    assert len({s.trace_id for s in spans if s.kind == SERVER}) == 20
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'llmgw_queue_depth{queue="traces"}' in metrics
    assert OTLP_TOKEN not in gw.log() and UPSTREAM_KEY not in gw.log()


def test_langfuse_gets_a_trace_and_a_generation_with_redacted_bodies(mock_upstream, start_gateway):
    with FakeLangfuse(public_key="pk-lf-canary", secret_key=LF_SECRET) as lf:
        gw = start_gateway(traced(mock_upstream.url, "http://127.0.0.1:9/v1/traces", extra=f"""
  langfuse:
    host: {lf.url}
    public_key: pk-lf-canary
    secret_key: {LF_SECRET}
    interval: 0.2
  access_log: {{format: json}}
""").replace("sample_ratio: 1.0", "sample_ratio: 0.0"))
        client = openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0)
        prompt = [{"role": "user", "content": "mail me at jane.doe@example.com please"}]
        client.chat.completions.create(model="m", messages=prompt, temperature=0.5)
        stream = client.chat.completions.create(model="m", messages=MSG, stream=True,
                                                stream_options={"include_usage": True})
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        generations = lf.wait_for(2, "generation-create")
        traces = lf.bodies("trace-create")
    assert len(traces) == 2 and not lf.errors
    first, second = sorted((g["body"] for g in generations), key=lambda b: b["startTime"])
    assert first["model"] == "gpt-4o-mini" and first["usageDetails"]["output"] > 0
    assert first["modelParameters"]["temperature"] == 0.5 and "costDetails" in first
    dumped = orjson.dumps(first).decode()
    assert "jane.doe" not in dumped and "[EMAIL]" in dumped  # the guardrail redacted it upstream; the export too
    assert second["output"] and streamed.endswith(str(second["output"])[-5:]) and "completionStartTime" in second
    everything = orjson.dumps(lf.batches).decode() + gw.log()
    for secret in (LF_SECRET, CLIENT_KEY, UPSTREAM_KEY, OTLP_TOKEN):
        assert secret not in everything


def test_the_example_config_with_the_standard_otel_variables(mock_upstream, otlp, start_gateway):
    from pathlib import Path

    example = (Path(__file__).resolve().parents[1] / "examples" / "observability.yaml").read_text()
    gw = start_gateway(example, workers=2, env={"LLMGW_BENCH_UPSTREAM": f"{mock_upstream.url}/v1",
                                                "LLMGW_BENCH_MODEL": "gpt-4o-mini",
                                                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
                                                "OTEL_SERVICE_NAME": "edge-gateway",
                                                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci,team=ml%20ops",
                                                "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"})
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    assert client.chat.completions.create(model="bench", messages=MSG).choices[0].message.content == "Echo: hello traces"
    spans = otlp.wait_for_spans(2)
    assert any(s.kind == SERVER and s.name == "chat bench" for s in spans)
    resource = attributes(otlp.exports()[0].resource_spans[0].resource)
    assert resource["service.name"] == "edge-gateway" and resource["deployment.environment"] == "ci"
    assert resource["team"] == "ml ops" and otlp.requests[0].headers.get("content-encoding") == "gzip"
    assert "llmgw_requests_total" in httpx.get(f"{gw.url}/metrics").text
