"""OTLP trace export: the Rust encoder against opentelemetry-proto, the spans of a finish record,
and OtlpExporter against a fake OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import pytest
from fake_otlp import FakeOtlpReceiver, attributes, value_of
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from llmgw import __version__
from llmgw._core import encode_otlp_spans, encode_otlp_traces, frame_otlp_traces
from llmgw.observability.export import ExportRetry
from llmgw.observability.otlp import OtlpExporter, spans_of
from llmgw.observability.record import AttemptRecord, FinishRecord, StageRecord
from llmgw.services import BackgroundQueue

TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN = bytes.fromhex("00f067aa0ba902b7")
PARENT = bytes.fromhex("b7ad6b7169203331")


def decode(body: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(body)


def spans_in(msg: ExportTraceServiceRequest) -> list[Span]:
    return [s for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans]


# --- the reference: the same request built with opentelemetry-proto --------------------------------

def pb_value(value: Any) -> AnyValue:
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(array_value=ArrayValue(values=[pb_value(v) for v in value if v is not None]))


def pb_attrs(attrs: list[tuple[str, Any]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=pb_value(v)) for k, v in attrs if v is not None]


def reference(resource: list[tuple[str, Any]], scope: tuple[str, str], spans: list[tuple[Any, ...]]) -> bytes:
    pb_spans = []
    for t in spans:
        trace_id, span_id, parent, name, kind, start, end, code, message, attrs = t[:10]
        span = Span(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name, kind=kind,
                    start_time_unix_nano=start, end_time_unix_nano=end, attributes=pb_attrs(attrs),
                    flags=t[10] if len(t) > 10 else 0)
        if code or message:
            span.status.CopyFrom(Status(code=code, message=message))
        pb_spans.append(span)
    msg = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=pb_attrs(resource)),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope[0], version=scope[1]), spans=pb_spans)],
    )])
    return msg.SerializeToString()


WORDS = ["", "a", "chat", "gpt-4o", "ünïcödé", "日本語のテキスト", "🚀 emoji", "tab\there", "x" * 300,
         "\x00nul"]


def random_value(rng: random.Random) -> Any:
    pick = rng.randrange(6)
    if pick == 0:
        return rng.choice(WORDS)
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.choice([0, 1, -1, 127, 128, 2**31, -(2**63), 2**63 - 1, rng.randrange(-(2**40), 2**40)])
    if pick == 3:
        return rng.choice([0.0, -0.0, 0.5, 1e300, -2.5e-300, rng.uniform(-1e6, 1e6)])
    if pick == 4:
        kind = rng.randrange(4)
        return [random_scalar(rng, kind) for _ in range(rng.randrange(4))]
    return None


def random_scalar(rng: random.Random, kind: int) -> Any:
    return [rng.choice(WORDS), rng.random() < 0.5, rng.randrange(-1000, 1000), rng.uniform(-1, 1)][kind]


def random_span(rng: random.Random) -> tuple[Any, ...]:
    attrs = [(rng.choice(WORDS) + str(i), random_value(rng)) for i in range(rng.randrange(25))]
    span = (
        rng.randbytes(15) + b"\x01",
        rng.randbytes(7) + b"\x01",
        rng.choice([b"", rng.randbytes(7) + b"\x02"]),
        rng.choice(WORDS),
        rng.randrange(0, 6),
        rng.randrange(0, 2**64),
        rng.randrange(0, 2**64),
        rng.randrange(0, 3),
        rng.choice(WORDS),
        attrs,
    )
    return span + (rng.randrange(0, 2**32),) if rng.random() < 0.5 else span


# --- the encoder ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_span_entries_framed_are_the_whole_request(seed: int) -> None:
    """encode_otlp_spans of any split of the spans, framed by frame_otlp_traces, is byte for byte
    encode_otlp_traces of them all (what trace_request's items and the exporter rely on)."""
    rng = random.Random(seed)
    spans = [random_span(rng) for _ in range(rng.randrange(0, 12))]
    resource = [("service.name", "llmgw"), ("n", seed)]
    cuts = sorted(rng.sample(range(len(spans) + 1), min(3, len(spans) + 1)))
    items = [encode_otlp_spans(spans[a:b]) for a, b in zip([0, *cuts], [*cuts, len(spans)])]
    want = encode_otlp_traces(resource, "llmgw", __version__, spans)
    assert frame_otlp_traces(resource, "llmgw", __version__, items) == want == reference(
        resource, ("llmgw", __version__), spans)
    assert frame_otlp_traces([], "", "", []) == encode_otlp_traces([], "", "", [])
    with pytest.raises(TypeError):
        frame_otlp_traces(resource, "llmgw", __version__, ["not bytes"])

def test_every_field_of_a_span_round_trips() -> None:
    attrs = [("gen_ai.request.model", "gpt-4o"), ("gen_ai.request.stream", True), ("flag.false", False),
             ("gen_ai.usage.input_tokens", 1234), ("negative", -7), ("gen_ai.request.temperature", 0.7),
             ("gen_ai.response.finish_reasons", ["stop", "length"]), ("ints", [1, 2]), ("empty", "")]
    resource = [("service.name", "llmgw"), ("service.instance.id", "i-1"), ("pid", 42), ("up", 1.5), ("on", True)]
    span = (TRACE, SPAN, PARENT, "chat gpt-4o", 2, 1_700_000_000_123_456_789, 1_700_000_000_987_654_321, 2,
            "upstream timed out", attrs, 0x301)
    body = encode_otlp_traces(resource, "llmgw", "1.2.3", [span])
    msg = decode(body)
    assert len(msg.resource_spans) == 1
    rs = msg.resource_spans[0]
    assert attributes(rs.resource) == dict(resource)
    assert len(rs.scope_spans) == 1
    assert (rs.scope_spans[0].scope.name, rs.scope_spans[0].scope.version) == ("llmgw", "1.2.3")
    [s] = rs.scope_spans[0].spans
    assert s.trace_id == TRACE and s.span_id == SPAN and s.parent_span_id == PARENT
    assert s.trace_state == ""
    assert s.name == "chat gpt-4o"
    assert s.kind == Span.SPAN_KIND_SERVER
    assert s.start_time_unix_nano == 1_700_000_000_123_456_789
    assert s.end_time_unix_nano == 1_700_000_000_987_654_321
    assert s.status.code == Status.STATUS_CODE_ERROR and s.status.message == "upstream timed out"
    assert s.flags == 0x301
    assert attributes(s) == dict(attrs)
    kinds = {kv.key: kv.value.WhichOneof("value") for kv in s.attributes}
    assert kinds == {"gen_ai.request.model": "string_value", "gen_ai.request.stream": "bool_value",
                     "flag.false": "bool_value", "gen_ai.usage.input_tokens": "int_value", "negative": "int_value",
                     "gen_ai.request.temperature": "double_value", "gen_ai.response.finish_reasons": "array_value",
                     "ints": "array_value", "empty": "string_value"}
    # and byte for byte what protobuf writes for the same message
    assert body == reference(resource, ("llmgw", "1.2.3"), [span])


@pytest.mark.parametrize("kind", [1, 2, 3])
@pytest.mark.parametrize("code", [0, 1, 2])
def test_kinds_and_status_codes(kind: int, code: int) -> None:
    span = (TRACE, SPAN, b"", "n", kind, 1, 2, code, "", [])
    [s] = spans_in(decode(encode_otlp_traces([], "s", "v", [span])))
    assert s.kind == kind and s.status.code == code and s.parent_span_id == b"" and s.flags == 0


@pytest.mark.parametrize("seed", range(40))
def test_random_batches_match_protobuf_byte_for_byte(seed: int) -> None:
    rng = random.Random(seed)
    spans = [random_span(rng) for _ in range(rng.randrange(0, 60))]
    resource = [(f"r{i}", v) for i, v in enumerate(random_value(rng) for _ in range(rng.randrange(5)))]
    scope = (rng.choice(WORDS), rng.choice(WORDS))
    # every other span spells its attributes as one flat list
    mixed = [t[:9] + (flat(t[9]),) + t[10:] if i % 2 else t for i, t in enumerate(spans)]
    body = encode_otlp_traces(resource, scope[0], scope[1], mixed)
    assert body == reference(resource, scope, spans)
    decoded = spans_in(decode(body))
    assert [s.span_id for s in decoded] == [t[1] for t in spans]
    for s, t in zip(decoded, spans):
        assert attributes(s) == {k: ([x for x in v if x is not None] if isinstance(v, list) else v)
                                 for k, v in t[9] if v is not None}


def test_many_unicode_spans_in_one_request() -> None:
    rng = random.Random(99)
    names = [f"chat モデル-{i} 🚀" for i in range(5000)]
    spans = [(rng.randbytes(16), rng.randbytes(7) + b"\x01", b"", name, 3, i, i + 1, 0, "",
              [("i", i), ("name", name), ("ü", "ß" * (i % 50))]) for i, name in enumerate(names)]
    decoded = spans_in(decode(encode_otlp_traces([("service.name", "llmgw")], "llmgw", "1", spans)))
    assert [s.name for s in decoded] == names
    assert [attributes(s)["i"] for s in decoded] == list(range(5000))
    assert attributes(decoded[123])["ü"] == "ß" * 23


def test_empty_batch_is_a_request_with_its_resource_and_no_spans() -> None:
    msg = decode(encode_otlp_traces([("service.name", "llmgw")], "llmgw", "1", []))
    assert attributes(msg.resource_spans[0].resource) == {"service.name": "llmgw"}
    assert spans_in(msg) == []


def test_none_values_and_none_array_items_are_skipped() -> None:
    span = (TRACE, SPAN, b"", "n", 1, 1, 2, 0, "", [("a", None), ("b", "kept"), ("c", ["x", None, "y"])])
    [s] = spans_in(decode(encode_otlp_traces([("r", None)], "s", "v", [span])))
    assert attributes(s) == {"b": "kept", "c": ["x", "y"]}


def test_lone_surrogates_become_replacement_characters() -> None:
    span = (TRACE, SPAN, b"", "chat \ud800", 1, 1, 2, 2, "bad \udcff", [("k\ud800", "v\udfff"), ("a", ["\ud801"])])
    [s] = spans_in(decode(encode_otlp_traces([], "s", "v", [span])))
    assert s.name == "chat \ufffd" and s.status.message == "bad \ufffd"
    assert attributes(s) == {"k\ufffd": "v\ufffd", "a": ["\ufffd"]}


def flat(attrs: list[tuple[str, Any]]) -> list[Any]:
    return [x for pair in attrs for x in pair]


def test_a_flat_attribute_list_encodes_like_pairs() -> None:
    attrs = [("s", "v"), ("b", True), ("i", -3), ("d", 0.25), ("a", ["x", None]), ("none", None), ("e", "")]
    pairs = (TRACE, SPAN, PARENT, "n", 3, 1, 2, 1, "", attrs)
    flat_span = pairs[:9] + (flat(attrs),)
    resource = [("service.name", "llmgw"), ("n", None)]
    assert (encode_otlp_traces(flat(resource), "s", "v", [flat_span])
            == encode_otlp_traces(resource, "s", "v", [pairs])
            == reference(resource, ("s", "v"), [pairs]))


def test_tuples_work_as_arrays_and_attribute_lists() -> None:
    span = (TRACE, SPAN, b"", "n", 1, 1, 2, 0, "", (("t", ("a", "b")),))
    [s] = spans_in(decode(encode_otlp_traces((), "s", "v", (span,))))
    assert attributes(s) == {"t": ["a", "b"]}


@pytest.mark.parametrize(("index", "value", "message"), [
    (0, b"\x01" * 15, "trace_id must be 16 bytes, got 15"),
    (0, b"\x00" * 16, "trace_id is all zeros"),
    (1, b"\x01" * 16, "span_id must be 8 bytes, got 16"),
    (1, b"", "span_id must be 8 bytes, got 0"),
    (1, b"\x00" * 8, "span_id is all zeros"),
    (2, b"\x01" * 4, "parent_span_id must be 8 bytes or empty, got 4"),
])
def test_bad_ids_raise_value_error_naming_the_span(index: int, value: bytes, message: str) -> None:
    good = (TRACE, SPAN, b"", "fine", 2, 1, 2, 0, "", [])
    bad = list(good)
    bad[index], bad[3] = value, "chat gpt-4o"
    with pytest.raises(ValueError, match=re.escape(f'span 1 ("chat gpt-4o"): {message}')):
        encode_otlp_traces([], "s", "v", [good, tuple(bad)])


@pytest.mark.parametrize(("span", "error", "match"), [
    ((TRACE, SPAN, b"", "n", 1, 1, 2, 0, "", [("k", {"a": 1})]), TypeError, 'attribute "k" has a value of type dict'),
    ((TRACE, SPAN, b"", "n", 1, 1, 2, 0, "", [("k", [["nested"]])]), TypeError, "array item of type list"),
    ((TRACE, SPAN, b"", "n", 1, 1, 2, 0, "", [("k", 2**63)]), ValueError, "int outside the int64 range"),
    ((TRACE, SPAN, b"", "n", 1, 1, 2, 0, "", [(1, "v")]), TypeError, "attributes must be (key: str, value)"),
    ((TRACE, SPAN, b"", "n", 1, 1, 2, 0, "", [("k", "v", "extra")]), TypeError, "attributes must be (key: str"),
    ((TRACE, SPAN, b"", "n", 1, 1, 2, 0, "", [("k", "v"), "k2", "v2"]), TypeError, "attributes must be (key: str"),
    ((TRACE, SPAN, b"", "n", 1, 1, 2, 0, "", ["k", "v", ("k2", "v2")]), TypeError, "attributes must be (key: str"),
    ((TRACE, SPAN, b"", "n", 1, 1, 2, 0, "", ["k", "v", "k2"]), TypeError, "needs an even number of items"),
    ((TRACE, SPAN, b"", "n", 1, 1, 2, 0, "", [1, "v"]), TypeError, "attributes must be (key: str"),
    ((TRACE, SPAN, b"", "n", 1, 1, 2, 0, "", 5), TypeError, "attributes must be a list"),
    ((TRACE, SPAN, b"", "n", 1, -1, 2, 0, "", []), ValueError, "start_ns must be an int"),
    ((TRACE, SPAN, b"", "n", 1, 1, 2**64, 0, "", []), ValueError, "end_ns must be an int"),
    ((TRACE, SPAN, b"", "n", 7, 1, 2, 0, "", []), ValueError, "kind must be 0..=5"),
    ((TRACE, SPAN, b"", "n", 1, 1, 2, 3, "", []), ValueError, "status code must be 0"),
    ((TRACE, SPAN, b"", "n", 1, 1, 2, 0, "", [], 2**32), ValueError, "flags must be an int"),
    (("x" * 16, SPAN, b"", "n", 1, 1, 2, 0, "", []), TypeError, "must be bytes"),
    ((TRACE, SPAN, b"", 5, 1, 1, 2, 0, "", []), TypeError, "name must be a str"),
    ((TRACE, SPAN, b"", "n", 1, 1, 2, 0), TypeError, "a span must be a tuple"),
])
def test_malformed_spans_raise_with_the_span_named(span: tuple[Any, ...], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=re.escape(match)):
        encode_otlp_traces([], "s", "v", [span])


def test_a_malformed_resource_is_named() -> None:
    with pytest.raises(TypeError, match="resource: attribute"):
        encode_otlp_traces([("k", object())], "s", "v", [])


# --- spans_of ---------------------------------------------------------------------------------------------

T0 = 1_760_000_000_000_000_000
A1, A2, A3 = bytes.fromhex("1111111111111111"), bytes.fromhex("2222222222222222"), bytes.fromhex("3333333333333333")


def chat_record(**changes: Any) -> FinishRecord:
    """A streamed chat request: guardrails and cache stages; a primary attempt that failed with
    503, a hedge that lost, and a fallback that served."""
    rec = FinishRecord(
        "req-7f3a", T0, T0 + 900_000_000, 0.9, 0.25, 0.85, 0.0004, "chat", "openai", "POST",
        "/v1/chat/completions", 200, "ok", model="gpt-4o", group="smart", deployment="claude-fallback",
        provider="anthropic", response_model="claude-sonnet-4-20250514", key_id="key_01HX", key_name="ci-bot",
        user="user@example.com", team="platform", prompt_tokens=120, completion_tokens=45, cached_tokens=20,
        cost_usd=0.00123, cache="miss", stream=True, finish_reason="stop",
        attempts=[
            AttemptRecord("gpt4o-east", "openai-east", "openai", "gpt-4o-2024-08-06", T0 + 1_000_000,
                          T0 + 300_000_000, 503, "upstream_error", "fallback", server_address="api.openai.com:443",
                          span_id=A1),
            AttemptRecord("gpt4o-west", "openai-west", "azure", "gpt-4o", T0 + 200_000_000, T0 + 350_000_000,
                          None, None, None, hedge=True, cancelled=True, span_id=A2),
            AttemptRecord("claude-fallback", "anthropic", "anthropic", "claude-sonnet-4-20250514",
                          T0 + 300_000_000, T0 + 890_000_000, 200, via="fallback", ttfb_s=0.2, span_id=A3,
                          server_address="[::1]:8443"),
        ],
        stages=[StageRecord("guardrails pre_request", T0 + 100, T0 + 50_000, {"llmgw.plugin": "guardrails"}),
                StageRecord("cache lookup", T0 + 60_000, T0 + 90_000, {"llmgw.plugin": "cache", "hits": 0})],
        params={"temperature": 0.2, "max_tokens": 256, "top_p": 1, "stop": ["\n\n"], "n": 1, "seed": 7},
        trace_id=TRACE, span_id=SPAN, parent_span_id=PARENT, sampled=True,
        input=[{"role": "user", "content": "my password is hunter2"}], output="the answer text",
    )
    for k, v in changes.items():
        setattr(rec, k, v)
    return rec


def by_name(spans: list[Span]) -> dict[str, Span]:
    return {s.name: s for s in spans}


def roundtrip(record: FinishRecord) -> list[Span]:
    return spans_in(decode(encode_otlp_traces([], "llmgw", "1", spans_of(record, "llmgw"))))


def test_the_request_is_a_server_span_with_stage_and_attempt_children() -> None:
    spans = roundtrip(chat_record())
    assert [(s.name, s.kind) for s in spans] == [
        ("chat gpt-4o", Span.SPAN_KIND_SERVER),
        ("guardrails pre_request", Span.SPAN_KIND_INTERNAL),
        ("cache lookup", Span.SPAN_KIND_INTERNAL),
        ("chat gpt-4o-2024-08-06", Span.SPAN_KIND_CLIENT),
        ("chat gpt-4o", Span.SPAN_KIND_CLIENT),
        ("chat claude-sonnet-4-20250514", Span.SPAN_KIND_CLIENT),
    ]
    root = spans[0]
    assert (root.trace_id, root.span_id, root.parent_span_id) == (TRACE, SPAN, PARENT)
    assert root.flags == 0x301  # sampled, parent known to be remote
    assert (root.start_time_unix_nano, root.end_time_unix_nano) == (T0, T0 + 900_000_000)
    assert all(s.trace_id == TRACE and s.parent_span_id == SPAN for s in spans[1:])
    assert all(s.flags == 0x101 for s in spans[1:])
    assert [s.span_id for s in spans[3:]] == [A1, A2, A3]  # the ids sent upstream in traceparent
    ids = [s.span_id for s in spans]
    assert len(set(ids)) == len(ids) and all(len(i) == 8 and i != bytes(8) for i in ids)
    assert spans[1].start_time_unix_nano == T0 + 100 and spans[5].end_time_unix_nano == T0 + 890_000_000


def test_root_attributes_follow_the_genai_and_http_conventions() -> None:
    root = attributes(roundtrip(chat_record())[0])
    assert root["gen_ai.operation.name"] == "chat"
    assert root["gen_ai.request.model"] == "gpt-4o"
    assert root["gen_ai.provider.name"] == root["gen_ai.system"] == "anthropic"
    assert root["gen_ai.response.model"] == "claude-sonnet-4-20250514"
    assert root["gen_ai.response.finish_reasons"] == ["stop"]
    assert root["gen_ai.request.temperature"] == 0.2
    assert root["gen_ai.request.max_tokens"] == 256
    assert root["gen_ai.request.top_p"] == 1.0
    assert root["gen_ai.request.seed"] == 7
    assert root["gen_ai.request.stop_sequences"] == ["\n\n"]
    assert "gen_ai.request.choice.count" not in root  # n == 1 is the default
    assert root["gen_ai.request.stream"] is True
    assert root["http.request.method"] == "POST"
    assert root["url.path"] == root["http.route"] == "/v1/chat/completions"
    assert root["http.response.status_code"] == 200
    assert root["llmgw.request_id"] == "req-7f3a"
    assert root["llmgw.group"] == "smart" and root["llmgw.deployment"] == "claude-fallback"
    assert root["llmgw.cache"] == "miss" and root["llmgw.cost_usd"] == 0.00123
    assert root["llmgw.key_id"] == "key_01HX" and root["llmgw.key_name"] == "ci-bot"
    assert root["llmgw.team"] == "platform"
    assert root["llmgw.attempts"] == 3 and root["llmgw.fallbacks"] == 1
    assert "error.type" not in root
    # usage is on the attempt that did the inference, so backends summing usage count it once
    assert not any(k.startswith("gen_ai.usage.") for k in root)
    root_span = roundtrip(chat_record())[0]
    assert root_span.status.code == Status.STATUS_CODE_UNSET


def test_attempt_spans_carry_their_outcome() -> None:
    spans = roundtrip(chat_record())
    failed, hedge, served = spans[3], spans[4], spans[5]
    fa, ha, sa = attributes(failed), attributes(hedge), attributes(served)
    assert failed.status.code == Status.STATUS_CODE_ERROR and failed.status.message == "upstream_error"
    assert fa["error.type"] == "upstream_error" and fa["http.response.status_code"] == 503
    assert fa["gen_ai.provider.name"] == "openai" and fa["gen_ai.request.model"] == "gpt-4o-2024-08-06"
    assert fa["server.address"] == "api.openai.com" and fa["server.port"] == 443
    assert fa["llmgw.attempt.via"] == "primary" and fa["llmgw.error_class"] == "fallback"
    assert fa["llmgw.deployment"] == "gpt4o-east" and fa["llmgw.upstream"] == "openai-east"
    assert not any(k.startswith("gen_ai.usage.") for k in fa)

    assert hedge.status.code == Status.STATUS_CODE_UNSET  # lost the race: cancelled, not failed
    assert ha["llmgw.attempt.hedge"] is True and ha["llmgw.attempt.cancelled"] is True
    assert ha["gen_ai.provider.name"] == "azure.ai.openai"
    assert "error.type" not in ha and "http.response.status_code" not in ha

    assert served.status.code == Status.STATUS_CODE_UNSET
    assert sa["llmgw.attempt.via"] == "fallback"
    assert sa["gen_ai.usage.input_tokens"] == 120 and sa["gen_ai.usage.output_tokens"] == 45
    assert sa["gen_ai.usage.cache_read.input_tokens"] == 20
    assert sa["gen_ai.response.model"] == "claude-sonnet-4-20250514"
    assert sa["gen_ai.response.finish_reasons"] == ["stop"]
    assert sa["gen_ai.response.time_to_first_chunk"] == 0.2
    assert sa["server.address"] == "::1" and sa["server.port"] == 8443
    assert sa["gen_ai.request.temperature"] == 0.2


def test_stage_spans_keep_their_attributes() -> None:
    stages = roundtrip(chat_record())[1:3]
    assert attributes(stages[0]) == {"llmgw.plugin": "guardrails"}
    assert attributes(stages[1]) == {"llmgw.plugin": "cache", "hits": 0}
    rec = chat_record(stages=[StageRecord("guardrails pre_request", T0, T0 + 5, {
        "error.type": "pii_blocked", "obj": object(), "d": {"a": 1}, "n": None, "big": 2**70, "ok": ["a", "b"]})])
    [stage] = roundtrip(rec)[1:2]
    assert stage.status.code == Status.STATUS_CODE_ERROR and stage.status.message == "pii_blocked"
    assert attributes(stage) == {"error.type": "pii_blocked", "ok": ["a", "b"]}


SECRETISH = re.compile(r"sk-[A-Za-z0-9]|Bearer |hunter2|password|answer text|Basic ", re.I)


def test_no_span_carries_a_secret_a_body_or_the_user() -> None:
    rec = chat_record()
    for s in roundtrip(rec):
        for key, value in attributes(s).items():
            assert not re.search(r"secret|authorization|api_key|password|token$", key, re.I), key
            for text in value if isinstance(value, list) else [value]:
                if isinstance(text, str):
                    assert not SECRETISH.search(text), (key, text)
                    assert text != "user@example.com", key


def test_unsampled_or_untraced_records_give_no_spans() -> None:
    assert spans_of(chat_record(sampled=False), "llmgw") == []
    assert spans_of(chat_record(trace_id=b""), "llmgw") == []


def test_a_root_without_a_client_parent() -> None:
    root = roundtrip(chat_record(parent_span_id=b""))[0]
    assert root.parent_span_id == b"" and root.flags == 0x101


@pytest.mark.parametrize(("status", "result", "code", "span_status", "error_type"), [
    (502, "error", "upstream_error", Status.STATUS_CODE_ERROR, "upstream_error"),
    (504, "error", None, Status.STATUS_CODE_ERROR, "504"),
    (200, "stream_error", "upstream_error", Status.STATUS_CODE_ERROR, "upstream_error"),
    (429, "error", "rate_limit_exceeded", Status.STATUS_CODE_UNSET, "rate_limit_exceeded"),
    (401, "error", "invalid_api_key", Status.STATUS_CODE_UNSET, "invalid_api_key"),
    (499, "client_gone", None, Status.STATUS_CODE_UNSET, "499"),
])
def test_root_status_on_failures(status: int, result: str, code: str | None, span_status: int, error_type: str) -> None:
    rec = chat_record(status=status, result=result, error_code=code, error_type="server_error",
                      error_message="All upstreams failed.", attempts=[], cache=None)
    root = roundtrip(rec)[0]
    attrs = attributes(root)
    assert root.status.code == span_status
    assert root.status.message == ("All upstreams failed." if span_status == Status.STATUS_CODE_ERROR else "")
    assert attrs["error.type"] == error_type and attrs["http.response.status_code"] == status
    assert not any(k.startswith("gen_ai.usage.") for k in attrs)  # nothing was answered


def test_a_cache_hit_has_its_usage_on_the_root() -> None:
    rec = chat_record(attempts=[], cache="hit", deployment=None, provider=None, stream=False)
    [root] = roundtrip(rec)[:1]
    attrs = attributes(root)
    assert attrs["llmgw.cache"] == "hit" and attrs["gen_ai.usage.input_tokens"] == 120
    assert "gen_ai.provider.name" not in attrs and "gen_ai.request.stream" not in attrs


def test_routes_other_than_genai_are_named_by_method_and_path() -> None:
    rec = chat_record(kind="models", method="GET", path="/v1/models", model=None, attempts=[], stages=[],
                      params={}, response_model=None, finish_reason=None, provider=None)
    [root] = roundtrip(rec)
    attrs = attributes(root)
    assert root.name == "GET /v1/models"
    assert not any(k.startswith("gen_ai.") for k in attrs)
    assert attrs["http.route"] == "/v1/models"
    custom = roundtrip(chat_record(kind="route", method="POST", path="/admin/keys/k1", attempts=[], stages=[]))[0]
    assert custom.name == "POST /admin/keys/k1" and "http.route" not in attributes(custom)


def test_embeddings_are_named_after_the_operation() -> None:
    rec = chat_record(kind="embeddings", model="text-embedding-3-small", stream=False, finish_reason=None,
                      attempts=[AttemptRecord("emb", "openai", "openai", "text-embedding-3-small", T0, T0 + 5, 200,
                                              span_id=A1)])
    spans = roundtrip(rec)
    assert spans[0].name == "embeddings text-embedding-3-small"
    assert spans[-1].name == "embeddings text-embedding-3-small" and spans[-1].kind == Span.SPAN_KIND_CLIENT
    assert attributes(spans[-1])["gen_ai.operation.name"] == "embeddings"


def test_ids_the_record_lacks_are_derived_the_same_way_every_time() -> None:
    rec = chat_record()
    for a in rec.attempts:
        a.span_id = b""
    first, second = spans_of(rec, "llmgw"), spans_of(rec, "llmgw")
    assert [s[1] for s in first] == [s[1] for s in second]  # a batch sent again has the same spans
    ids = [s[1] for s in first]
    assert len(set(ids)) == len(ids) and all(len(i) == 8 and i != bytes(8) for i in ids)
    other = spans_of(chat_record(span_id=bytes.fromhex("0102030405060708")), "llmgw")
    assert not set(s[1] for s in other[1:3]) & set(ids)


def test_badly_typed_client_parameters_are_left_out() -> None:
    rec = chat_record(params={"temperature": "hot", "max_tokens": True, "top_p": None, "seed": 2**80,
                              "stop": [1, 2], "n": 3, "top_k": 40})
    attrs = attributes(roundtrip(rec)[0])
    assert not any(k in attrs for k in ("gen_ai.request.temperature", "gen_ai.request.max_tokens",
                                        "gen_ai.request.top_p", "gen_ai.request.seed",
                                        "gen_ai.request.stop_sequences"))
    assert attrs["gen_ai.request.choice.count"] == 3 and attrs["gen_ai.request.top_k"] == 40.0


# --- the exporter against a fake collector ------------------------------------------------------------------

@pytest.fixture
def otlp() -> Any:
    with FakeOtlpReceiver() as receiver:
        yield receiver


def exporter(receiver: FakeOtlpReceiver, **kw: Any) -> OtlpExporter:
    kw.setdefault("instance_id", "inst-1")
    kw.setdefault("host_name", "gw-host")
    return OtlpExporter(receiver.url, {"authorization": "Bearer collector-token"}, service_name="llmgw-test",
                        timeout=5.0, **kw)


def three_records() -> list[FinishRecord]:
    return [chat_record(request_id="r1", span_id=bytes.fromhex("0a0a0a0a0a0a0a0a")),
            chat_record(request_id="r2", sampled=False),
            chat_record(request_id="r3", span_id=bytes.fromhex("0b0b0b0b0b0b0b0b"), stages=[])]


async def test_a_batch_is_one_request_with_every_span(otlp: FakeOtlpReceiver) -> None:
    exp = exporter(otlp)
    try:
        await exp.export(three_records())
    finally:
        await exp.aclose()
    [req] = otlp.requests
    assert req.status == 200 and req.headers["content-type"] == "application/x-protobuf"
    assert req.headers["authorization"] == "Bearer collector-token"
    spans = otlp.spans()
    assert len(spans) == 6 + 4  # r1: root + 2 stages + 3 attempts; r2 unsampled; r3: root + 3 attempts
    assert [attributes(s)["llmgw.request_id"] for s in spans if s.kind == Span.SPAN_KIND_SERVER] == ["r1", "r3"]
    [res] = otlp.resource_attributes()
    assert res == {"service.name": "llmgw-test", "service.version": __version__, "service.instance.id": "inst-1",
                   "host.name": "gw-host", "telemetry.sdk.name": "llmgw", "telemetry.sdk.language": "python",
                   "telemetry.sdk.version": __version__}
    scope = otlp.exports()[0].resource_spans[0].scope_spans[0].scope
    assert (scope.name, scope.version) == ("llmgw", __version__)
    assert exp.stats() == {"sent": 10, "rejected": 0, "retries": 0, "invalid": 0}


async def test_503_raises_export_retry_then_the_same_batch_goes_through(otlp: FakeOtlpReceiver) -> None:
    exp = exporter(otlp)
    records = three_records()
    otlp.fail_next(1, 503)
    try:
        with pytest.raises(ExportRetry):
            await exp.export(records)
        assert otlp.spans() == [] and exp.stats()["retries"] == 1
        await exp.export(records)
    finally:
        await exp.aclose()
    assert [r.status for r in otlp.requests] == [503, 200]
    assert otlp.requests[0].body == otlp.requests[1].body  # the retry sends the same spans, same ids
    assert len(otlp.spans()) == 10
    assert exp.stats() == {"sent": 10, "rejected": 0, "retries": 1, "invalid": 0}


async def test_400_drops_the_batch_and_counts_it(otlp: FakeOtlpReceiver) -> None:
    exp = exporter(otlp)
    otlp.fail_next(1, 400, b"bad request")
    try:
        await exp.export(three_records())  # no ExportRetry: sending it again would fail again
        await exp.export([chat_record()])
    finally:
        await exp.aclose()
    assert [r.status for r in otlp.requests] == [400, 200]
    assert exp.stats() == {"sent": 6, "rejected": 10, "retries": 0, "invalid": 0}


async def test_an_unreachable_collector_is_a_retry() -> None:
    with FakeOtlpReceiver() as gone:
        url = gone.url
    exp = OtlpExporter(url, timeout=2.0)
    try:
        with pytest.raises(ExportRetry):
            await exp.export([chat_record()])
    finally:
        await exp.aclose()
    assert exp.stats()["retries"] == 1


async def test_a_record_that_cannot_be_encoded_is_dropped_alone(otlp: FakeOtlpReceiver) -> None:
    exp = exporter(otlp)
    bad = chat_record(request_id="bad", trace_id=b"\x01" * 8)
    try:
        await exp.export([chat_record(request_id="good1"), bad, chat_record(request_id="good2", stages=[])])
    finally:
        await exp.aclose()
    roots = [attributes(s)["llmgw.request_id"] for s in otlp.spans() if s.kind == Span.SPAN_KIND_SERVER]
    assert roots == ["good1", "good2"]
    assert exp.stats() == {"sent": 10, "rejected": 0, "retries": 0, "invalid": 1}


async def test_a_record_spans_of_cannot_read_is_dropped_alone(otlp: FakeOtlpReceiver) -> None:
    exp = exporter(otlp)
    broken = chat_record(request_id="broken", result="error", status=None)  # type: ignore[arg-type]
    try:
        await exp.export([broken, chat_record(request_id="good")])
    finally:
        await exp.aclose()
    assert [attributes(s)["llmgw.request_id"] for s in otlp.spans() if s.kind == Span.SPAN_KIND_SERVER] == ["good"]
    assert exp.stats()["invalid"] == 1


async def test_nothing_sampled_sends_nothing(otlp: FakeOtlpReceiver) -> None:
    exp = exporter(otlp)
    await exp.export([chat_record(sampled=False)])
    await exp.export([])
    await exp.aclose()
    assert otlp.requests == []


async def test_partial_success_counts_the_rejected_spans(otlp: FakeOtlpReceiver) -> None:
    exp = exporter(otlp)
    otlp.partial_next(1, rejected=2, message="span too old")
    try:
        await exp.export([chat_record()])
    finally:
        await exp.aclose()
    assert exp.stats() == {"sent": 4, "rejected": 2, "retries": 0, "invalid": 0}


async def test_gzip_compression(otlp: FakeOtlpReceiver) -> None:
    exp = exporter(otlp, compression="gzip")
    try:
        await exp.export([chat_record()])
    finally:
        await exp.aclose()
    [req] = otlp.requests
    assert req.headers["content-encoding"] == "gzip" and req.body[:2] == b"\x1f\x8b"
    assert len(otlp.spans()) == 6


async def test_the_background_queue_retries_until_the_collector_takes_the_batch(otlp: FakeOtlpReceiver) -> None:
    exp = exporter(otlp)
    otlp.fail_next(2, 503)
    queue = BackgroundQueue("traces", exp.export, batch=100, interval=0.02)
    queue.start()
    try:
        for rec in three_records():
            queue.put(rec)
        spans = await otlp.wait_for_spans_async(10, timeout=10)
    finally:
        await queue.drain(timeout=5)
        await exp.aclose()
    assert len(spans) == 10
    assert [r.status for r in otlp.requests] == [503, 503, 200]


def test_endpoint_and_compression_are_checked() -> None:
    with pytest.raises(ValueError, match="http"):
        OtlpExporter("127.0.0.1:4318/v1/traces")
    with pytest.raises(ValueError, match="compression"):
        OtlpExporter("http://127.0.0.1:4318/v1/traces", compression="zstd")
    assert "secret" not in repr(OtlpExporter("http://user:secret@collector:4318/v1/traces"))


def test_value_of_reads_every_value_kind() -> None:
    assert value_of(AnyValue()) is None
    assert value_of(AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)]))) == [1]


async def test_export_yields_to_the_event_loop_while_it_builds_a_large_batch(otlp: FakeOtlpReceiver) -> None:
    exp = exporter(otlp)
    ticks = 0
    at_post: list[int] = []
    post = exp.post

    async def counting_post(*args: Any) -> Any:
        at_post.append(ticks)
        return await post(*args)

    exp.post = counting_post  # type: ignore[method-assign]

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    try:
        await exp.export([chat_record(request_id=f"r{i}") for i in range(OtlpExporter.YIELD_EVERY * 3)])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await exp.aclose()
    assert at_post[0] - before >= 2  # other tasks ran between chunks, before the POST
    assert len(otlp.spans()) == 6 * OtlpExporter.YIELD_EVERY * 3
