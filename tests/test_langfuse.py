"""Langfuse export: the events one request becomes (events_of), and the exporter against a fake
Langfuse that validates them as the real ingestion API does (tests/fake_langfuse.py)."""

from __future__ import annotations

import base64
import logging

import orjson
import pytest

from fake_langfuse import FakeLangfuse, parse_time, validate_event
from llmgw.observability.export import ExportRetry
from llmgw.observability.langfuse import LangfuseExporter, encode_batches, events_of
from llmgw.observability.record import AttemptRecord, FinishRecord, StageRecord

PK, SK = "pk-lf-1234", "sk-lf-secret-5678"
T0 = 1_764_595_200_000_000_000  # 2025-12-01T13:20:00Z in ns
MS = 1_000_000
TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN = bytes.fromhex("00f067aa0ba902b7")
ATTEMPT_SPAN = bytes.fromhex("b7ad6b7169203331")


def attempt(**over) -> AttemptRecord:
    fields = dict(deployment="openai-main", upstream="openai", provider="openai", model="gpt-4o",
                  start_ns=T0 + 2 * MS, end_ns=T0 + 800 * MS, status=200, ttfb_s=0.25,
                  span_id=ATTEMPT_SPAN, server_address="api.openai.com")
    fields.update(over)
    return AttemptRecord(**fields)


def chat(**over) -> FinishRecord:
    fields = dict(request_id="req-1", start_ns=T0, end_ns=T0 + 805 * MS, duration_s=0.805, ttfb_s=0.26,
                  upstream_s=0.798, overhead_s=0.007, kind="chat", dialect="openai", method="POST",
                  path="/v1/chat/completions", status=200, result="ok", model="gpt-4o", group="gpt-4o",
                  deployment="openai-main", provider="openai", response_model="gpt-4o-2024-08-06",
                  key_id="key_abc", key_name="ci", user="alice", team="search",
                  prompt_tokens=120, completion_tokens=30, cached_tokens=100, cost_usd=0.000425,
                  cache="miss", finish_reason="stop", attempts=[attempt()],
                  stages=[StageRecord("guardrails pre_request", T0 + MS, T0 + 2 * MS, {"verdict": "pass"})],
                  params={"temperature": 0.2, "max_tokens": 256, "stop": ["\n\n"], "stream": False,
                          "response_format": {"type": "json_object"}, "seed": None},
                  trace_id=TRACE, span_id=SPAN, sampled=True,
                  input=[{"role": "user", "content": "hi"}], output="hello")
    fields.update(over)
    return FinishRecord(**fields)


def by_type(events: list[dict], kind: str) -> list[dict]:
    return [e["body"] for e in events if e["type"] == kind]


def assert_valid(events: list[dict]) -> None:
    """Every event passes the fake Langfuse's checks, in order, as one batch."""
    traces: set[str] = set()
    observations: set[str] = set()
    for event in events:
        assert validate_event(event, traces, observations) == [], event
        if event["type"] == "trace-create":
            traces.add(event["body"]["id"])
        else:
            observations.add(event["body"]["id"])


# -- events_of


def test_a_chat_request_is_a_trace_with_one_generation_from_the_serving_attempt():
    events = events_of(chat(), environment="production", release="2026.12")
    assert_valid(events)
    assert [e["type"] for e in events] == ["trace-create", "generation-create", "span-create"]
    assert len({e["id"] for e in events}) == len(events)

    trace = by_type(events, "trace-create")[0]
    assert trace["id"] == TRACE.hex()  # the W3C trace id: Langfuse and OTLP traces line up
    assert trace["name"] == "chat gpt-4o" and trace["userId"] == "alice"
    assert trace["environment"] == "production" and trace["release"] == "2026.12"
    assert trace["timestamp"] == "2025-12-01T13:20:00.000000Z"
    assert {"team:search", "dialect:openai", "kind:chat"} <= set(trace["tags"])
    meta = trace["metadata"]
    assert meta["request_id"] == "req-1" and meta["key_id"] == "key_abc" and meta["team"] == "search"
    assert meta["group"] == "gpt-4o" and meta["deployment"] == "openai-main" and meta["status"] == 200
    assert meta["cache"] == "miss" and meta["attempts"][0]["deployment"] == "openai-main"
    text = orjson.dumps(events).decode()
    assert "key_name" not in text and '"ci"' not in text  # the key's name stays in the gateway
    assert trace["input"] == [{"role": "user", "content": "hi"}] and trace["output"] == "hello"

    gen = by_type(events, "generation-create")[0]
    assert gen["id"] == ATTEMPT_SPAN.hex() and gen["traceId"] == TRACE.hex()
    assert gen["model"] == "gpt-4o-2024-08-06" and gen["metadata"]["upstream_model"] == "gpt-4o"
    assert gen["startTime"] == "2025-12-01T13:20:00.002000Z" and gen["endTime"] == "2025-12-01T13:20:00.800000Z"
    assert "completionStartTime" not in gen  # not streamed: no time to first token
    assert gen["usageDetails"] == {"input": 20, "input_cached_tokens": 100, "output": 30, "total": 150}
    assert gen["costDetails"] == {"total": 0.000425}
    assert gen["modelParameters"] == {"temperature": 0.2, "max_tokens": 256, "stop": ["\n\n"], "stream": False,
                                      "response_format": '{"type":"json_object"}'}
    assert gen["level"] == "DEFAULT" and "statusMessage" not in gen
    assert gen["input"] == trace["input"] and gen["output"] == "hello"
    assert gen["environment"] == "production"

    stage = by_type(events, "span-create")[0]
    assert stage["name"] == "guardrails pre_request" and stage["metadata"] == {"verdict": "pass"}
    assert stage["traceId"] == TRACE.hex()


def test_the_same_record_gives_the_same_ids_so_a_resent_batch_upserts():
    first, again = events_of(chat()), events_of(chat())
    assert [e["id"] for e in first] == [e["id"] for e in again]
    assert [e["body"]["id"] for e in first] == [e["body"]["id"] for e in again]
    other = events_of(chat(request_id="req-2", trace_id=b""))
    assert not {e["id"] for e in first} & {e["id"] for e in other}


def test_a_streamed_request_has_its_completion_start_time():
    record = chat(stream=True, params={"stream": True, "temperature": 1})
    gen = by_type(events_of(record), "generation-create")[0]
    assert gen["completionStartTime"] == "2025-12-01T13:20:00.252000Z"  # attempt start + 250 ms
    assert parse_time(gen["startTime"]) < parse_time(gen["completionStartTime"]) < parse_time(gen["endTime"])
    assert "stream" in by_type(events_of(record), "trace-create")[0]["tags"]
    assert_valid(events_of(record))


def test_after_a_503_and_a_fallback_the_generation_is_the_attempt_that_answered():
    failed = attempt(deployment="azure-east", upstream="azure", provider="azure", model="gpt-4o-east",
                     start_ns=T0 + 2 * MS, end_ns=T0 + 300 * MS, status=503, error_code="upstream_unavailable",
                     error_class="fallback", span_id=bytes.fromhex("1111111111111111"), ttfb_s=None)
    served = attempt(via="fallback", start_ns=T0 + 301 * MS, end_ns=T0 + 800 * MS)
    record = chat(attempts=[failed, served], stages=[])
    events = events_of(record)
    assert_valid(events)
    gens = by_type(events, "generation-create")
    assert len(gens) == 1 and gens[0]["id"] == ATTEMPT_SPAN.hex() and gens[0]["metadata"]["via"] == "fallback"
    assert gens[0]["level"] == "DEFAULT"
    span = by_type(events, "span-create")[0]
    assert span["id"] == "1111111111111111" and span["level"] == "WARNING"
    assert span["statusMessage"] == "upstream_unavailable (HTTP 503)"
    trace = by_type(events, "trace-create")[0]
    summary = trace["metadata"]["attempts"]
    assert [a["deployment"] for a in summary] == ["azure-east", "openai-main"]
    assert summary[0]["status"] == 503 and summary[0]["error_code"] == "upstream_unavailable"
    assert summary[1]["via"] == "fallback" and "error_code" not in summary[1]
    assert trace["metadata"]["fallbacks"] == 1 and "fallback" in trace["tags"]


def test_a_failed_request_marks_its_generation_as_an_error():
    failed = attempt(status=503, error_code="upstream_unavailable", error_class="fallback")
    record = chat(status=502, result="error", error_code="upstream_unavailable", error_type="api_error",
                  error_message="all deployments failed", completion_tokens=0, cost_usd=None, output=None,
                  attempts=[failed], response_model=None)
    events = events_of(record)
    assert_valid(events)
    gen = by_type(events, "generation-create")[0]
    assert gen["level"] == "ERROR"
    assert gen["statusMessage"] == "upstream_unavailable: all deployments failed (HTTP 502)"
    assert gen["model"] == "gpt-4o" and "costDetails" not in gen and "output" not in gen
    trace = by_type(events, "trace-create")[0]
    assert trace["metadata"]["unpriced"] is True and "error" in trace["tags"]


def test_a_cache_hit_or_a_refusal_is_a_generation_without_an_upstream():
    hit = chat(cache="hit", attempts=[], cost_usd=0.0, upstream_s=0.0)
    events = events_of(hit)
    assert_valid(events)
    gen = by_type(events, "generation-create")[0]
    assert gen["name"] == "cache hit" and gen["id"] == SPAN.hex() and gen["level"] == "DEFAULT"
    assert gen["startTime"] == "2025-12-01T13:20:00.000000Z" and gen["costDetails"] == {"total": 0.0}
    refused = chat(status=429, result="error", error_code="rate_limit_exceeded", error_message="slow down",
                   attempts=[], deployment=None, cost_usd=None, output=None, trace_id=b"", span_id=b"")
    gen = by_type(events_of(refused), "generation-create")[0]
    assert gen["name"] == "gateway" and gen["level"] == "ERROR" and "429" in gen["statusMessage"]
    assert_valid(events_of(refused))


def test_a_client_that_left_is_a_warning():
    record = chat(status=499, result="client_gone", output=None)
    gen = by_type(events_of(record), "generation-create")[0]
    assert gen["level"] == "WARNING" and gen["statusMessage"] == "client disconnected"


def test_an_embeddings_request():
    record = chat(kind="embeddings", path="/v1/embeddings", model="text-embedding-3-small", group="embed",
                  response_model=None, prompt_tokens=8, completion_tokens=0, cached_tokens=0,
                  cost_usd=0.00000016, finish_reason=None, input=None, output=None, stages=[],
                  params={"encoding_format": "float", "dimensions": 256},
                  attempts=[attempt(model="text-embedding-3-small", deployment="embed-main", ttfb_s=None)],
                  deployment="embed-main")
    events = events_of(record)
    assert_valid(events)
    trace = by_type(events, "trace-create")[0]
    assert trace["name"] == "embeddings text-embedding-3-small" and "input" not in trace
    gen = by_type(events, "generation-create")[0]
    assert gen["model"] == "text-embedding-3-small" and gen["name"] == "embed-main"
    assert gen["usageDetails"] == {"input": 8, "output": 0, "total": 8}
    assert gen["modelParameters"] == {"encoding_format": "float", "dimensions": 256}
    assert "input" not in gen and "output" not in gen


def test_without_trace_ids_the_ids_come_from_the_request_id():
    record = chat(trace_id=b"", span_id=b"", attempts=[attempt(span_id=b"")])
    events = events_of(record)
    assert_valid(events)
    trace = by_type(events, "trace-create")[0]
    assert len(trace["id"]) == 32 and int(trace["id"], 16) >= 0
    assert trace["id"] == by_type(events_of(chat(trace_id=b"", span_id=b"")), "trace-create")[0]["id"]
    gen = by_type(events, "generation-create")[0]
    assert gen["traceId"] == trace["id"] and len(gen["id"]) == 16
    assert len({e["body"]["id"] for e in events}) == len(events)


def test_model_parameters_that_langfuse_does_not_take_become_json_text():
    params = {"logit_bias": {"50256": -100}, "stop": ["a", 1], "temperature": float("nan"), "n": 2, "x": True}
    gen = by_type(events_of(chat(params=params)), "generation-create")[0]
    assert gen["modelParameters"] == {"logit_bias": '{"50256":-100}', "stop": '["a",1]', "temperature": "nan",
                                      "n": 2, "x": True}


def test_the_fake_refuses_what_langfuse_would_lose():
    events = events_of(chat())
    gen = next(e for e in events if e["type"] == "generation-create")
    gen["body"]["usageDetails"] = {"input": 1.5}
    gen["body"]["startTime"] = "2025-12-01T13:20:00Z"
    gen["body"]["usage_details"] = {}
    problems = validate_event(gen, {gen["body"]["traceId"]}, set())
    assert any("usageDetails" in p for p in problems) and any("startTime" in p for p in problems)
    assert any("usage_details" in p for p in problems)
    assert validate_event(events[0] | {"type": "trace-update"}, set(), set())
    assert "names no trace" in validate_event(events[2], set(), set())[0]


# -- encode_batches


def test_batches_are_split_by_size_and_keep_a_request_together():
    records = [chat(request_id=f"req-{i}", trace_id=b"", input="x" * 2_000) for i in range(40)]
    one = len(next(encode_batches(records[:1]))[0])
    bodies = list(encode_batches(records, max_bytes=one * 5 + 10))
    assert len(bodies) == 8
    for body, count in bodies:
        assert len(body) <= one * 5 + 10
        batch = orjson.loads(body)["batch"]
        assert len(batch) == count == 15  # 5 requests of 3 events
        assert_valid(batch)  # each batch holds its traces: nothing points into another batch
    assert sum(c for _, c in encode_batches(records)) == 120


def test_a_request_too_large_for_a_batch_goes_without_its_prompt_and_answer():
    counts: dict[str, int] = {}
    big = chat(input="y" * 50_000, output="z" * 50_000)
    [(body, count)] = list(encode_batches([big], max_bytes=20_000, counts=counts))
    batch = orjson.loads(body)["batch"]
    assert len(body) <= 20_000 and count == 3 and counts == {"bodies_dropped": 1}
    assert "input" not in batch[0]["body"] and "output" not in batch[1]["body"]
    assert "do not fit" in batch[1]["body"]["metadata"]["bodies_dropped"]
    huge_params = chat(params={"tools": "t" * 30_000})
    assert list(encode_batches([huge_params], max_bytes=20_000, counts=counts)) == []
    assert counts["too_large"] == 1


# -- LangfuseExporter against the fake


@pytest.fixture
def langfuse():
    with FakeLangfuse(public_key=PK, secret_key=SK) as fake:
        yield fake


@pytest.fixture
async def exporter(langfuse):
    exp = LangfuseExporter(langfuse.url, PK, SK, timeout=5.0, environment="test")
    yield exp
    await exp.aclose()


async def test_one_post_per_batch_with_basic_auth(langfuse, exporter):
    await exporter.export([chat(), chat(request_id="req-2", trace_id=b"", span_id=b"")])
    assert len(langfuse.requests) == 1
    request = langfuse.requests[0]
    assert request["status"] == 207 and request["path"] == "/api/public/ingestion"
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["x-langfuse-sdk-name"] == "llmgw"
    assert langfuse.errors == [] and len(langfuse.events()) == 6
    assert len(langfuse.events("generation-create")) == 2
    assert {b["environment"] for b in langfuse.bodies("trace-create")} == {"test"}
    assert exporter.stats() == {"sent": 6, "rejected": 0, "retries": 0, "event_errors": 0, "records": 2,
                                "bodies_dropped": 0, "too_large": 0}
    expected = "Basic " + base64.b64encode(f"{PK}:{SK}".encode()).decode()
    assert exporter._http.headers["authorization"] == expected


async def test_a_500_keeps_the_batch_for_a_retry_then_it_is_delivered(langfuse, exporter):
    langfuse.fail_next(1, 500)
    with pytest.raises(ExportRetry):
        await exporter.export([chat()])
    assert langfuse.events() == []
    await exporter.export([chat()])
    assert len(langfuse.events()) == 3
    assert exporter.stats()["retries"] == 1 and exporter.stats()["sent"] == 3


async def test_a_401_drops_the_batch_and_counts_it_without_the_secret_in_logs(langfuse, caplog):
    caplog.set_level(logging.DEBUG)
    exp = LangfuseExporter(langfuse.url, PK, "sk-lf-wrong-secret-0000", timeout=5.0)
    try:
        await exp.export([chat()])
        langfuse.fail_next(1, 401)
        await exp.export([chat(request_id="req-2", trace_id=b"")])
    finally:
        await exp.aclose()
    assert [r["status"] for r in langfuse.requests] == [401, 401]
    assert exp.stats()["rejected"] == 6 and exp.stats()["sent"] == 0
    assert "refused a batch of 3 items with 401" in caplog.text
    encoded = base64.b64encode(f"{PK}:sk-lf-wrong-secret-0000".encode()).decode()
    for text in (caplog.text, repr(exp), str(exp.stats())):
        assert "sk-lf-wrong-secret-0000" not in text and encoded not in text


async def test_an_unreachable_langfuse_is_a_retry_without_the_secret(caplog):
    caplog.set_level(logging.DEBUG)
    with FakeLangfuse() as gone:
        url = gone.url
    exp = LangfuseExporter(url, PK, SK, timeout=2.0)
    try:
        with pytest.raises(ExportRetry) as info:
            await exp.export([chat()])
    finally:
        await exp.aclose()
    assert SK not in str(info.value) and SK not in caplog.text and "cannot reach" in caplog.text


async def test_a_207_with_event_errors_is_counted_and_logged(langfuse, exporter, caplog):
    record = chat(attempts=[attempt(span_id=b"")])
    bad = LangfuseExporter(langfuse.url, PK, SK, timeout=5.0)
    bad.release = 7  # not a string: Langfuse refuses the trace, the observations then point nowhere
    try:
        await bad.export([record])
    finally:
        await bad.aclose()
    assert langfuse.requests[0]["status"] == 207 and len(langfuse.errors) == 3
    assert bad.stats()["event_errors"] == 3 and bad.stats()["sent"] == 3
    assert "refused 3 of 3 events (first: 400" in caplog.text and "release" in caplog.text


async def test_a_large_export_is_split_into_several_posts(langfuse):
    exp = LangfuseExporter(langfuse.url, PK, SK, max_batch_bytes=30_000)
    records = [chat(request_id=f"r{i}", trace_id=b"", span_id=b"", input="q" * 5_000) for i in range(10)]
    try:
        await exp.export(records)
    finally:
        await exp.aclose()
    assert len(langfuse.requests) > 2 and all(r["bytes"] <= 30_000 for r in langfuse.requests)
    assert langfuse.errors == [] and len(langfuse.bodies("trace-create")) == 10


@pytest.mark.parametrize("kwargs, message", [
    ({"host": "cloud.langfuse.com"}, "must be an http"),
    ({"host": "https://pk:sk@cloud.langfuse.com"}, "must not carry credentials"),
    ({"secret_key": ""}, "needs both"),
    ({"environment": "Production"}, "a-z"),
    ({"environment": "langfuse-prod"}, "not start with 'langfuse'"),
])
def test_a_wrong_setting_is_refused_with_the_fix(kwargs, message):
    args = {"host": "https://cloud.langfuse.com", "public_key": PK, "secret_key": SK, **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        LangfuseExporter(args.pop("host"), args.pop("public_key"), args.pop("secret_key"), **args)
    assert SK not in str(info.value) and ":sk@" not in str(info.value)


async def test_the_fake_can_be_waited_on_by_tests_of_a_running_gateway(langfuse, exporter):
    with pytest.raises(TimeoutError, match="0 of 1"):
        langfuse.wait_for(1, timeout=0.05)
    await exporter.export([chat()])
    assert [e["type"] for e in langfuse.wait_for(1, "generation-create", timeout=1)] == ["generation-create"]
