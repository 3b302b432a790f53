"""llmgw._core.Telemetry against the Python code it replaces on the request path: for the same
generated requests, the JSON line must load to `accesslog.json_fields(record)` and the metric
tables must equal what `Observability.count` leaves in a `MetricsStore` (same series, same order,
same values and value types), and both must render to the same exposition."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmgw._core import TELEMETRY_ATTEMPT_FIELDS, TELEMETRY_FIELDS, Telemetry
from llmgw.config import parse_config
from llmgw.observability.accesslog import json_fields
from llmgw.observability.metrics import LATENCY_BUCKETS, OVERHEAD_BUCKETS, MetricsStore, merge, render
from llmgw.observability.plugin import Observability
from llmgw.observability.record import AttemptRecord, FinishRecord
from llmgw.providers import registry

BASE = """
upstreams:
  up: {provider: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  m: {upstream: up}
observability: {access_log: false, metrics: {per_key_labels: %s}}
"""


def plugin(per_key: bool) -> Observability:
    p = Observability(parse_config(BASE % ("true" if per_key else "false"), providers=registry, env={}))
    p.store = MetricsStore()
    return p


def telemetry(per_key: bool, **kw: Any) -> Telemetry:
    return Telemetry(json_log=True, latency_bounds=list(LATENCY_BUCKETS), overhead_bounds=list(OVERHEAD_BUCKETS),
                     per_key=per_key, **kw)


def as_tuple(r: FinishRecord, *, hex_trace: bool = True, input_as_str: bool = False) -> tuple[Any, ...]:
    """The finish tuple of a record (the layout in _core.pyi, names in TELEMETRY_FIELDS)."""
    attempts = [(a.deployment, a.status, a.error_code, (a.end_ns - a.start_ns) / 1e9, a.via, a.retry, a.hedge,
                 a.cancelled) for a in r.attempts]
    trace = (r.trace_id.hex() if hex_trace else r.trace_id) if r.trace_id else None
    body = None if r.input is None else orjson.dumps(r.input)
    if body is not None and input_as_str:
        body = body.decode()
    return (r.request_id, r.start_ns, r.duration_s, r.ttfb_s, r.upstream_s, r.overhead_s, r.kind, r.method, r.path,
            r.status, r.result, r.model, r.group, r.deployment, r.provider, r.error_code, r.key_id, r.key_name,
            r.user, r.team, r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.usage_estimated, r.cost_usd,
            r.cache, r.stream, trace, attempts, body, r.output)


def tables(snap: dict[str, Any]) -> dict[str, Any]:
    return {"counters": snap["counters"], "histograms": snap["histograms"]}


# --- generated requests ------------------------------------------------------------------------------

# text orjson can write (no lone surrogates), with quotes, backslashes, controls and non-ASCII
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
# few distinct names so series repeat and retries/fallbacks line up
NAME = st.one_of(st.none(), st.sampled_from(["", "smart", "fast", "gpt-4o", "é\"\\\n"]), TEXT)
DEPLOYMENT = st.sampled_from(["east", "west", "", "d\x01"])
CODE = st.one_of(st.none(), st.sampled_from(["upstream_timeout", "upstream_error", "rate_limit_exceeded",
                                             "budget_exceeded", ""]))
SECONDS = st.one_of(st.floats(0, 400, allow_nan=False), st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False),
                    st.sampled_from([0.0, 0.0005, 0.0000625, 0.0001875, 2.5, 300.0, 0.00005]))
NS = st.integers(-(2**63), 2**63 - 1)
TOKENS = st.one_of(st.just(0), st.integers(0, 200_000), st.integers(-(2**40), 2**40))


@st.composite
def attempts(draw: st.DrawFn) -> AttemptRecord:
    start = draw(st.integers(0, 2**62))
    return AttemptRecord(
        draw(DEPLOYMENT), "up", "openai", "m", start, start + draw(st.integers(0, 10**12)),
        draw(st.one_of(st.none(), st.sampled_from([200, 429, 500, 503]))), draw(CODE), None,
        draw(st.sampled_from(["primary", "fallback"])), draw(st.booleans()), draw(st.booleans()), draw(st.booleans()))


@st.composite
def records(draw: st.DrawFn) -> FinishRecord:
    stream = draw(st.booleans())
    return FinishRecord(
        draw(TEXT), draw(NS), 0, draw(SECONDS), draw(st.one_of(st.none(), SECONDS)), draw(SECONDS), draw(SECONDS),
        draw(st.sampled_from(["chat", "embeddings", "models", "route"])), "openai",
        draw(st.sampled_from(["POST", "GET"])),
        draw(st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "/x\"\\"])),
        draw(st.sampled_from([200, 400, 429, 499, 500, 503])), draw(st.sampled_from(["ok", "error", "client_gone"])),
        model=draw(NAME), group=draw(NAME), deployment=draw(st.one_of(st.none(), DEPLOYMENT)), provider=draw(NAME),
        error_code=draw(CODE), key_id=draw(st.one_of(st.none(), st.sampled_from(["", "k1", "k2"]))),
        key_name=draw(st.one_of(st.none(), st.sampled_from(["", "bot"]))), user=draw(NAME),
        team=draw(st.one_of(st.none(), st.sampled_from(["", "platform"]))),
        prompt_tokens=draw(TOKENS), completion_tokens=draw(TOKENS), cached_tokens=draw(TOKENS),
        usage_estimated=draw(st.booleans()),
        cost_usd=draw(st.one_of(st.none(), st.just(0.0), st.floats(0, 10, allow_nan=False))),
        cache=draw(st.one_of(st.none(), st.sampled_from(["hit", "semantic-hit", "miss", ""]))), stream=stream,
        attempts=draw(st.lists(attempts(), max_size=5)),
        trace_id=draw(st.one_of(st.just(b""), st.binary(min_size=16, max_size=16))),
        input=draw(st.one_of(st.none(), st.lists(st.fixed_dictionaries({"role": TEXT, "content": TEXT}), max_size=3),
                             TEXT, st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False))),
        output=draw(st.one_of(st.none(), TEXT)),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=12), st.booleans(), st.booleans())
def test_same_line_and_same_metrics_as_the_python_path(recs: list[FinishRecord], per_key: bool,
                                                       hex_trace: bool) -> None:
    py, rust = plugin(per_key), telemetry(per_key)
    for r in recs:
        py.count(r)
        rust.finish(as_tuple(r, hex_trace=hex_trace, input_as_str=hex_trace))
    lines = rust.take_log().split(b"\n")
    assert lines.pop() == b"" and len(lines) == len(recs)
    for r, line in zip(recs, lines):
        assert orjson.loads(line) == json_fields(r)
        assert line == orjson.dumps(json_fields(r))  # byte for byte, float spellings included
    assert py.store is not None
    want = tables(py.store.snapshot())
    got = tables(rust.snapshot())
    assert got == want  # same series in the same order, floats summed in the same order
    for part in ("counters", "histograms"):
        for name, series in want[part].items():
            for (_, w), (_, g) in zip(series, got[part][name]):
                ws, gs = (w, g) if part == "histograms" else ([w], [g])
                assert [type(x) for x in gs] == [type(x) for x in ws], name  # ints stay ints
    gauges_free = {**py.store.snapshot(), "gauges": {}}
    assert render(rust.snapshot()) == render(gauges_free)
    assert render(merge([rust.snapshot(), rust.snapshot()])) == render(merge([gauges_free, gauges_free]))


# --- the shell ----------------------------------------------------------------------------------------

def sample(**changes: Any) -> FinishRecord:
    r = FinishRecord("req-1", 1_760_000_000_123_456_789, 0, 0.8, 0.2, 0.79, 0.0004, "chat", "openai", "POST",
                     "/v1/chat/completions", 200, "ok", model="gpt-4o", group="smart", deployment="east",
                     provider="openai", key_id="k1", team="platform", prompt_tokens=850, completion_tokens=120,
                     cost_usd=0.0033, cache="miss", stream=True,
                     attempts=[AttemptRecord("east", "up", "openai", "m", 0, 500_000_000, 200)])
    for k, v in changes.items():
        setattr(r, k, v)
    return r


def test_layout_names_are_exported() -> None:
    assert len(TELEMETRY_FIELDS) == 31 and TELEMETRY_FIELDS[0] == "request_id" and TELEMETRY_FIELDS[30] == "output"
    assert TELEMETRY_FIELDS[28] == "attempts" and len(TELEMETRY_ATTEMPT_FIELDS) == 8


def test_take_log_returns_the_lines_once_and_counts_what_it_drops() -> None:
    line = orjson.dumps(json_fields(sample())) + b"\n"
    t = telemetry(False, max_log_bytes=2 * len(line) + 5)
    assert t.max_log_bytes == 2 * len(line) + 5
    for _ in range(3):
        t.finish(as_tuple(sample()))
    assert (t.log_lines, t.log_dropped, t.log_pending) == (2, 1, 2 * len(line))
    assert t.take_log() == line * 2
    assert t.take_log() == b"" and t.log_pending == 0
    t.json_log = False
    t.finish(as_tuple(sample()))
    assert t.take_log() == b"" and t.log_lines == 2
    assert t.snapshot()["counters"]["llmgw_requests_total"][0][1] == 4


def test_per_key_can_change_on_a_reload() -> None:
    t = telemetry(False)
    t.finish(as_tuple(sample()))
    assert "llmgw_key_requests_total" not in t.snapshot()["counters"]
    t.per_key = True
    t.finish(as_tuple(sample()))
    assert t.snapshot()["counters"]["llmgw_key_requests_total"] == [[["k1", "platform", "200"], 1]]
    assert t.series_count == 13 and "13 series" in repr(t)


def test_an_empty_snapshot_renders_nothing() -> None:
    snap = telemetry(True).snapshot()
    assert snap == {"counters": {}, "histograms": {}, "gauges": {}}
    assert render(snap) == b""


def test_attempts_may_be_a_tuple_and_bools_are_truthiness() -> None:
    t = telemetry(False)
    rec = list(as_tuple(sample(attempts=[])))
    rec[28] = (("east", 503, "upstream_error", 0.1, "primary", 0, 0, 0),
               ("west", None, None, 0.2, "fallback", 0, 1, None))
    rec[26] = 1  # stream
    t.finish(tuple(rec))
    line = orjson.loads(t.take_log())
    assert line["attempt_list"][1] == {"deployment": "west", "status": None, "error": None, "ms": 200.0,
                                       "via": "fallback", "hedge": True}
    assert line["stream"] is True
    assert t.snapshot()["counters"]["llmgw_fallbacks_total"] == [[["smart", "upstream_error"], 1]]


def test_lone_surrogates_become_replacement_characters() -> None:
    t = telemetry(False)
    r = sample(model="gpt\ud800", output="a\udfffb", attempts=[
        AttemptRecord("e\ud801", "up", "openai", "m", 0, 1, 500, "upstream_error")])
    t.finish(as_tuple(r))
    line = orjson.loads(t.take_log())
    assert line["model"] == "gpt\ufffd" and line["output"] == "a\ufffdb"
    assert t.snapshot()["histograms"]["llmgw_upstream_duration_seconds"][0][0] == ["smart", "e\ufffd"]


@pytest.mark.parametrize(("index", "value", "error", "message"), [
    (8, 5, TypeError, "item 8 (path) must be a str, not int"),
    (1, 2**70, TypeError, "item 1 (start_ns) must be an int in the int64 range"),
    (2, "0.8", TypeError, "item 2 (duration_s) must be a float, not str"),
    (11, b"gpt", TypeError, "item 11 (model) must be a str or None, not bytes"),
    (27, 5, TypeError, "item 27 (trace_id) must be a str (hex), bytes or None"),
    (28, None, TypeError, "item 28 (attempts) must be a list or tuple"),
    (28, [("east", 200)], TypeError, "item 28 (attempts) [0] must be a tuple of 8 items"),
    (28, [("east", "200", None, 0.1, "primary", False, False, False)], TypeError,
     "item 28 (attempts) [0] item 1 (status) must be an int"),
    (29, b"", ValueError, "item 29 (input_json) is empty"),
    (29, 5, TypeError, "item 29 (input_json) must be bytes"),
])
def test_a_wrong_item_is_named_and_nothing_is_counted(index: int, value: Any, error: type, message: str) -> None:
    t = telemetry(True)
    rec = list(as_tuple(sample()))
    rec[index] = value
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        t.finish(tuple(rec))
    assert t.series_count == 0 and t.log_pending == 0
    with pytest.raises(TypeError, match="tuple of 31 items"):
        t.finish(rec)


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="latency_bounds"):
        Telemetry(json_log=True, latency_bounds=[1.0, 0.5], overhead_bounds=[1.0], per_key=False)
    with pytest.raises(TypeError):
        Telemetry(True, [1.0], [1.0], False)  # type: ignore[misc] - keyword-only
