"""Langfuse through its OTLP endpoint (`langfuse: {protocol: otel}`): the spans one request
becomes (langfuse_spans, decoded with opentelemetry-proto as a collector would), the exporter
against a fake OTLP receiver on Langfuse's path, and a gateway process exporting to it."""

from __future__ import annotations

import base64
import logging

import openai
import orjson
import pytest

from fake_otlp import FakeOtlpReceiver, attributes
from llmgw._core import __version__, encode_otlp_traces
from llmgw.observability.export import ExportRetry
from llmgw.observability.langfuse import events_of
from llmgw.observability.langfuse_otel import OTEL_PATH, LangfuseOtelExporter, langfuse_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from test_langfuse import MS, PK, SK, T0, attempt, chat

SERVER, CLIENT, INTERNAL = 2, 3, 1


def decoded(record, **kw):
    body = encode_otlp_traces([("service.name", "llmgw")], "llmgw", __version__, langfuse_spans(record, **kw))
    export = ExportTraceServiceRequest.FromString(body)
    return [s for rs in export.resource_spans for ss in rs.scope_spans for s in ss.spans]


def by_type(spans, kind):
    return [s for s in spans if attributes(s).get("langfuse.observation.type") == kind]


def test_a_chat_request_is_a_root_span_and_a_generation_with_langfuses_attributes():
    spans = decoded(chat(), environment="production", release="2026.12")
    [root] = [s for s in spans if not s.parent_span_id]
    [gen] = by_type(spans, "generation")
    assert len(spans) == 3  # the root, the generation, the guardrails stage
    a = attributes(gen)
    assert a["langfuse.observation.model.name"] == "gpt-4o-2024-08-06"
    assert orjson.loads(a["langfuse.observation.usage_details"]) == {"input": 20, "input_cached_tokens": 100,
                                                                     "output": 30, "total": 150}
    assert orjson.loads(a["langfuse.observation.cost_details"]) == {"total": 0.000425}
    assert orjson.loads(a["langfuse.observation.model.parameters"])["temperature"] == 0.2
    assert orjson.loads(a["langfuse.observation.input"]) == [{"role": "user", "content": "hi"}]
    assert orjson.loads(a["langfuse.observation.output"]) == "hello"
    assert a["langfuse.observation.level"] == "DEFAULT" and "langfuse.observation.completion_start_time" not in a
    for span in spans:  # trace-level attributes on every observation (Langfuse v4 reads them per span)
        sa = attributes(span)
        assert sa["user.id"] == "alice" and sa["langfuse.environment"] == "production"
        assert sa["langfuse.release"] == "2026.12" and sa["langfuse.trace.name"] == "chat gpt-4o"
        assert span.trace_id == bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
        assert span is root or span.parent_span_id == root.span_id
    r = attributes(root)
    assert r["langfuse.trace.metadata.request_id"] == "req-1" and "team:search" in r["langfuse.trace.tags"]
    assert orjson.loads(r["langfuse.observation.output"]) == "hello"
    assert root.start_time_unix_nano == T0 and gen.start_time_unix_nano == T0 + 2 * MS


def test_the_ids_are_the_ingestion_exporters_so_both_protocols_name_a_request_alike():
    record = chat(attempts=[attempt(error_code="upstream_timeout", status=None, via="primary"),
                            attempt(span_id=b"", deployment="backup", via="fallback")], deployment="backup")
    events = events_of(record)
    ids = {e["body"]["id"] for e in events if e["type"] != "trace-create"}
    spans = decoded(record)
    assert {s.span_id.hex() for s in spans if s.parent_span_id} == ids
    assert {s.trace_id.hex() for s in spans} == {events[0]["body"]["id"]}
    assert decoded(record) == spans  # a batch sent again carries the same ids: Langfuse upserts


def test_a_failed_request_and_its_failed_attempt_are_marked():
    record = chat(result="error", status=502, error_code="upstream_unreachable", error_message="no route",
                  attempts=[attempt(error_code="upstream_unreachable", status=None)], prompt_tokens=0,
                  completion_tokens=0, cached_tokens=0, output=None)
    spans = decoded(record)
    [gen] = by_type(spans, "generation")
    assert attributes(gen)["langfuse.observation.level"] == "ERROR"
    assert "upstream_unreachable: no route (HTTP 502)" == attributes(gen)["langfuse.observation.status_message"]
    assert gen.status.code == 2


def test_a_cache_hit_is_a_generation_without_an_upstream_and_a_stream_has_its_first_token_time():
    spans = decoded(chat(attempts=[], cache="hit", stream=True, ttfb_s=0.01))
    [gen] = by_type(spans, "generation")
    assert gen.name == "cache hit" and gen.kind == INTERNAL
    assert attributes(gen)["langfuse.observation.completion_start_time"].startswith("2025-12-01T13:20:00.01")


def test_without_bodies_no_prompt_or_answer_leaves():
    spans = decoded(chat(input=[{"role": "user", "content": "secret plan"}]), with_bodies=False)
    assert b"secret plan" not in b"".join(s.SerializeToString() for s in spans)


# -- the exporter against a fake receiver on Langfuse's path


@pytest.fixture
def receiver():
    with FakeOtlpReceiver(path=OTEL_PATH) as fake:
        yield fake


@pytest.fixture
async def exporter(receiver):
    exp = LangfuseOtelExporter(f"http://127.0.0.1:{receiver.port}/", PK, SK, timeout=5.0, environment="test")
    yield exp
    await exp.aclose()


async def test_one_post_with_basic_auth_and_the_v4_header(receiver, exporter):
    await exporter.export([chat(), chat(request_id="req-2", trace_id=b"", span_id=b"")])
    [request] = receiver.requests
    assert request.path == OTEL_PATH and request.status == 200
    assert request.headers["authorization"] == "Basic " + base64.b64encode(f"{PK}:{SK}".encode()).decode()
    assert request.headers["x-langfuse-ingestion-version"] == "4"
    assert len(receiver.spans()) == 6 and len(by_type(receiver.spans(), "generation")) == 2
    assert exporter.stats() == {"sent": 6, "rejected": 0, "retries": 0, "records": 2, "bodies_dropped": 0}


async def test_a_503_keeps_the_batch_and_a_401_drops_it_without_the_secret_in_logs(receiver, exporter, caplog):
    receiver.fail_next(1, 503)
    with pytest.raises(ExportRetry):
        await exporter.export([chat()])
    await exporter.export([chat()])
    assert len(receiver.spans()) == 3
    receiver.fail_next(1, 401, b'{"message":"Invalid credentials"}')
    with caplog.at_level(logging.ERROR, logger="llmgw"):
        exporter._last_log = 0.0
        await exporter.export([chat()])
    assert exporter.stats()["rejected"] == 3 and "401" in caplog.text and SK not in caplog.text


async def test_a_large_export_is_split_under_the_batch_limit(receiver):
    exp = LangfuseOtelExporter(f"http://127.0.0.1:{receiver.port}", PK, SK, max_batch_bytes=20_000)
    records = [chat(request_id=f"req-{i}", trace_id=b"", span_id=b"", output="x" * 3000) for i in range(12)]
    records.append(chat(request_id="huge", trace_id=b"", span_id=b"", output="y" * 50_000))
    await exp.export(records)
    await exp.aclose()
    assert len(receiver.requests) > 2 and all(len(r.body) <= 20_000 for r in receiver.requests)
    assert len(receiver.spans()) == 13 * 3 and exp.stats()["bodies_dropped"] == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"host": "cloud.langfuse.com"}, "http(s) URL"),
    ({"host": "https://pk:sk@cloud.langfuse.com"}, "must not carry credentials"),
    ({"secret_key": ""}, "both public_key and secret_key"),
])
def test_a_wrong_setting_is_refused_with_the_fix(kwargs, message):
    args = {"host": "https://cloud.langfuse.com", "public_key": PK, "secret_key": SK, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LangfuseOtelExporter(**args)


async def test_an_ingestion_endpoint_that_is_gone_names_the_setting_that_fixes_it(caplog):
    from fake_langfuse import FakeLangfuse
    from llmgw.observability.langfuse import LangfuseExporter

    with FakeLangfuse(public_key=PK, secret_key=SK) as lf:
        lf.fail_next(1, 404)
        exp = LangfuseExporter(lf.url, PK, SK)
        with caplog.at_level(logging.ERROR, logger="llmgw"):
            await exp.export([chat()])
        await exp.aclose()
    assert "protocol: otel" in caplog.text and SK not in caplog.text


# -- a gateway exporting to it

CLIENT_KEY = "canary-client-key-lfotel-1234"
UPSTREAM_KEY = "sk-canary-upstream-lfotel-5678"
LF_SECRET = "sk-lf-canary-otel-9012"


def test_a_gateway_with_protocol_otel_sends_langfuse_spans_with_redacted_bodies(mock_upstream, receiver,
                                                                                start_gateway):
    gw = start_gateway(f"""
server: {{host: 127.0.0.1}}
auth: {{keys: [{{name: app, key: {CLIENT_KEY}}}]}}
upstreams:
  up: {{provider: openai, base_url: "{mock_upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
models:
  m: {{upstream: up, model: gpt-4o-mini, price: {{input: 1, output: 2}}}}
observability:
  langfuse:
    protocol: otel
    host: http://127.0.0.1:{receiver.port}
    public_key: pk-lf-otel
    secret_key: {LF_SECRET}
    interval: 0.2
    environment: staging
""")
    with openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0) as client:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "mail jane.doe@example.com"}],
                                       temperature=0.5, user="bob")
    spans = receiver.wait_for_spans(2)
    [gen] = by_type(spans, "generation")
    a = attributes(gen)
    assert a["langfuse.observation.model.name"] == "gpt-4o-mini" and a["langfuse.environment"] == "staging"
    assert orjson.loads(a["langfuse.observation.usage_details"])["output"] > 0
    assert "total" in orjson.loads(a["langfuse.observation.cost_details"])
    assert "[EMAIL]" in a["langfuse.observation.input"] and "jane.doe" not in a["langfuse.observation.input"]
    sent = b"".join(r.body for r in receiver.requests).decode("latin-1") + gw.log()
    for secret in (LF_SECRET, CLIENT_KEY, UPSTREAM_KEY):
        assert secret not in sent
