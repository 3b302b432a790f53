"""llmgw._core.Telemetry against the Python code it replaces on the request path: for the same
generated requests, the JSON line must load to `accesslog.json_fields(record)` and the metric
tables must equal what `Observability.count` leaves in a `MetricsStore` (same series, same order,
same values and value types), and both must render to the same exposition."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmgw._core import TELEMETRY_ATTEMPT_FIELDS, TELEMETRY_FIELDS, Telemetry
from fakes import (FakeClock, FakeHttp, FakePool, FakeResponse, completion, error_reply, gateway_for, run,
                   run_until_the_client_leaves, stream)
from llmgw.config import parse_config
from llmgw.exchange import Attempt
from llmgw.governance.keys import KeyRecord, digest, new_key
from llmgw.governance.pricing import PriceBook
from llmgw.observability import plugin as obs_plugin
from llmgw.observability.accesslog import json_fields
from llmgw.observability.metrics import LATENCY_BUCKETS, OVERHEAD_BUCKETS, MetricsStore, merge, render
from llmgw.observability.plugin import Observability
from llmgw.observability.record import AttemptRecord, FinishRecord
from llmgw.providers import registry
from llmgw.runner import EMBEDDINGS, RequestRunner
from llmgw.runner import MODELS as MODELS_ENDPOINT

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


# --- finish_request: the same facts, read from the request's own objects ------------------------------
#
# Real requests run in process through the runner with fake upstreams; a FinishRecorder keeps each
# (ctx, outcome). For each, the tuple `Observability.on_finish` builds (its clock pinned to NOW) goes
# to `finish` of one Telemetry, and finish_request(ctx, run, ended) to another: lines and tables
# must be equal, with the outcome's cached usage and without it.

NOW = (1_790_000_000_123_456_789, 98_765.4321)  # (time.time_ns(), time.perf_counter()) on both sides
MSG = [{"role": "user", "content": "hello there"}]
UPSTREAMS = """
upstreams:
  a: {provider: openai, base_url: "http://a.invalid/v1", api_key: sk-a-123456789}
  b: {provider: openai, base_url: "http://b.invalid/v1", api_key: sk-b-123456789}
  c: {provider: openai, base_url: "http://c.invalid/v1", api_key: sk-c-123456789}
"""
MODELS = UPSTREAMS + """
models:
  m: {upstream: a, model: gpt-4o-mini}
  own: {upstream: a, model: own-model, price: {input: 2.5, output: 10, cached_input: 1.25}}
  free: {upstream: c, model: my-finetune}
  chain:
    deployments: [{name: primary, upstream: a, model: m-a, price: {input: 3, output: 4}}]
    fallbacks: [{to: backup, on: [server_error, rate_limited]}]
  backup:
    deployments: [{name: secondary, upstream: b, model: m-b, price: {input: 0.3, output: 0.7}}]
  solo:
    deployments: [{name: only, upstream: a, model: m-a, price: {input: 1, output: 1}}]
    retries: {attempts: 3, backoff: 0.001, budget: 10}
  race:
    deployments:
      - {name: slow, upstream: a, model: m}
      - {name: fast, upstream: b, model: m, price: {input: 1, output: 2}}
    hedge: {after: 0.02}
"""
# upstream -> provider as the reference plugin and finish_request are told ("c" left out: "")
PROVIDERS = {"a": "openai", "b": "azure-east"}


def with_plugins(config: str, *targets: str) -> str:
    return config + "plugins:\n" + "".join(f"  - {t}\n" for t in ("plugin_samples:FinishRecorder", *targets))


def chat(model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MSG, **extra}


def finishes(gw: Any) -> list[tuple[Any, Any]]:
    return next(p.instance for p in gw.chain.plugins if p.name == "FinishRecorder").records


def catalog(config: Any) -> dict[str, Any]:
    """finish_request's tables from what the Python path reads: PriceBook and the upstreams."""
    return {"prices": PriceBook(config).per_token(), "providers": PROVIDERS}


def reference_tuple(config: Any, ctx: Any, outcome: Any) -> tuple[Any, ...]:
    """The tuple of the Python path (`Observability._fields`, no log bodies), at NOW."""
    obs = Observability(config)
    obs.upstreams = {name: (provider, "") for name, provider in PROVIDERS.items()}
    clock = obs_plugin.time
    obs_plugin.time = SimpleNamespace(time_ns=lambda: NOW[0], perf_counter=lambda: NOW[1])  # type: ignore[assignment]
    try:
        return obs._fields(ctx, outcome)
    finally:
        obs_plugin.time = clock


def assert_same(gw: Any, expect: int = 1) -> list[dict[str, Any]]:
    """finish vs finish_request (with the outcome's usage, and reading it itself) for every
    recorded request of `gw`; the lines, parsed."""
    recorded = finishes(gw)
    assert len(recorded) == expect
    by_tuple, direct, reading = (telemetry(True, **catalog(gw.config)) for _ in range(3))
    for ctx, outcome in recorded:
        by_tuple.finish(reference_tuple(gw.config, ctx, outcome))
        direct.finish_request(ctx, outcome._run, outcome.ended, outcome._usage, now=NOW)
        reading.finish_request(ctx, outcome._run, outcome.ended, now=NOW)
    want = by_tuple.take_log()
    assert direct.take_log() == want
    assert reading.take_log() == want
    assert direct.snapshot() == by_tuple.snapshot() == reading.snapshot()
    return [orjson.loads(line) for line in want.splitlines()]


def priced_completion(prompt: int, completion: int, cached: int | None) -> FakeResponse:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    body = {"id": "c", "object": "chat.completion", "created": 1, "model": "x", "usage": usage,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
    return FakeResponse(200, [orjson.dumps(body)])


@pytest.mark.parametrize(("model", "reply", "cost"), [
    ("m", priced_completion(1000, 200, None), (1000 * 0.15 + 200 * 0.6) / 1e6),  # the shipped table
    ("own", priced_completion(1000, 200, 400), math.ceil(600 * 2.5 + 400 * 1.25 + 200 * 10) / 1e6),
    ("own", priced_completion(7, 3, 0), math.ceil(7 * 2.5 + 3 * 10) / 1e6),  # rounded up to a micro-dollar
    ("free", priced_completion(5, 2, None), None),  # unpriced, and an upstream without a provider
])
async def test_finish_request_on_success(model: str, reply: FakeResponse, cost: float | None) -> None:
    gw = gateway_for(with_plugins(MODELS), a=FakePool(reply), c=FakePool(reply))
    http = await run(gw, FakeHttp(chat(model)))
    assert http.status == 200
    [line] = assert_same(gw)
    assert line.get("cost_usd") == (pytest.approx(cost) if cost is not None else None)
    assert line["provider"] == ("" if model == "free" else "openai")


async def test_finish_request_on_a_fallback_after_a_5xx() -> None:
    gw = gateway_for(with_plugins(MODELS), a=FakePool(error_reply(503)), b=FakePool(completion("backup")))
    assert (await run(gw, FakeHttp(chat("chain")))).status == 200
    [line] = assert_same(gw)
    assert [a["via"] for a in line["attempt_list"]] == ["primary", "fallback"]
    assert (line["deployment"], line["provider"]) == ("secondary", "azure-east")


async def test_finish_request_when_every_deployment_fails() -> None:
    gw = gateway_for(with_plugins(MODELS), a=FakePool(error_reply(429)), b=FakePool(error_reply(500)))
    assert (await run(gw, FakeHttp(chat("chain")))).status >= 500
    [line] = assert_same(gw)
    assert "provider" not in line and line["deployment"] == "secondary" and line["error_code"]


async def test_finish_request_on_retries() -> None:
    gw = gateway_for(with_plugins(MODELS), a=FakePool(error_reply(503), error_reply(503), completion()),
                     clock=FakeClock())
    for _ in range(5):  # fill the deployment's retry budget
        gw.router.state["only"].budget.deposit()
    assert (await run(gw, FakeHttp(chat("solo")))).status == 200
    [line] = assert_same(gw)
    assert len(line["attempt_list"]) == 3


async def test_finish_request_on_a_hedged_race_with_a_cancelled_loser() -> None:
    gw = gateway_for(with_plugins(MODELS), a=FakePool("hang"), b=FakePool(completion("fast")))
    assert (await run(gw, FakeHttp(chat("race")))).status == 200
    [line] = assert_same(gw)
    assert line["deployment"] == "fast" and len(line["attempt_list"]) == 2


@pytest.mark.parametrize("usage", [(3, 2), None])
async def test_finish_request_on_a_stream(usage: tuple[int, int] | None) -> None:
    gw = gateway_for(with_plugins(MODELS), a=FakePool(lambda: stream(["a", " b", " c"], usage=usage)))
    http = await run(gw, FakeHttp(chat("own", stream=True, stream_options={"include_usage": True})))
    assert http.status == 200
    [line] = assert_same(gw)
    assert line["stream"] is True and ("usage_estimated" in line) == (usage is None)


async def test_finish_request_on_a_cut_stream() -> None:
    gw = gateway_for(with_plugins(MODELS), a=FakePool(lambda: stream(["one", " two"], then="cut")))
    await run(gw, FakeHttp(chat("own", stream=True)))
    [line] = assert_same(gw)
    assert line["result"] == "stream_error" and line["usage_estimated"] is True


async def test_finish_request_when_the_client_leaves() -> None:
    gw = gateway_for(with_plugins(MODELS), a=FakePool("hang"))
    await run_until_the_client_leaves(gw, FakeHttp(chat("own")))
    [line] = assert_same(gw)
    assert line["status"] == 499 and line["result"] == "client_gone"


async def test_finish_request_on_an_unknown_model_a_short_circuit_and_a_crash() -> None:
    gw = gateway_for(with_plugins(MODELS))
    assert (await run(gw, FakeHttp(chat("nope")))).status == 404
    gw2 = gateway_for(with_plugins(MODELS, "{target: 'plugin_samples:Tracer', options: {tag: s, short_circuit: true}}"))
    assert (await run(gw2, FakeHttp(chat()))).status == 200
    gw3 = gateway_for(with_plugins(MODELS, "plugin_samples:PostCrasher"))
    assert (await run(gw3, FakeHttp(chat()))).status == 500
    assert assert_same(gw)[0]["error_code"] == "model_not_found"
    assert assert_same(gw2)[0]["completion_tokens"] == 3
    assert assert_same(gw3)[0]["error_code"] == "plugin_error"


async def test_finish_request_on_a_refusal_before_the_body() -> None:
    gw = gateway_for(with_plugins(MODELS) + "auth:\n  keys: [{name: a, key: key-aaaaaaaaaaaaaaaa}]\n")
    assert (await run(gw, FakeHttp(b"{never parsed"))).status == 401
    assert assert_same(gw)[0]["status"] == 401


async def test_finish_request_for_embeddings_models_and_a_plugin_route() -> None:
    emb = FakeResponse(200, [b'{"object":"list","data":[{"embedding":[0.5],"index":0}],'
                             b'"usage":{"prompt_tokens":2,"total_tokens":2}}'])
    gw = gateway_for(with_plugins(MODELS, "plugin_samples:Counter"), a=FakePool(emb))
    await run(gw, FakeHttp({"model": "own", "input": "hi"}, path="/v1/embeddings"), EMBEDDINGS)
    await RequestRunner(gw, FakeHttp(None, method="GET", path="/v1/models"), MODELS_ENDPOINT).run()
    route, params, _ = gw.services.find_route("GET", "/_counter")
    await RequestRunner.for_route(gw, FakeHttp(None, method="GET", path="/_counter"), route, params).run()
    lines = assert_same(gw, expect=3)
    assert [(x["kind"], x["path"]) for x in lines] == [
        ("embeddings", "/v1/embeddings"), ("models", "/v1/models"), ("route", "/_counter")]
    assert lines[0]["cost_usd"] == pytest.approx(math.ceil(2 * 2.5) / 1e6) and "cost_usd" not in lines[1]


async def test_finish_request_with_a_trace_a_cache_result_and_key_labels() -> None:
    gw = gateway_for(with_plugins(MODELS), a=FakePool(completion()))
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await run(gw, FakeHttp(chat(), headers={"traceparent": trace}))
    [(ctx, _)] = finishes(gw)
    ctx.metadata["cache"] = "miss"
    ctx.key_id, ctx.key_name, ctx.user, ctx.team = "key_1", "ci-bot", "ann", "platform"
    [line] = assert_same(gw)
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and line["cache"] == "miss"


async def test_finish_request_reuses_governances_cost(tmp_path: Path) -> None:
    config = with_plugins(MODELS) + f"""
governance:
  master_key: master-key-0123456789abcdef
  sqlite_path: {tmp_path / "gov.db"}
  ledger: {{interval: 0.01}}
"""
    gw = gateway_for(config, a=FakePool(priced_completion(1000, 200, 100), lambda: stream(["a", "b"], usage=(9, 2))))
    await gw.start()
    gov = next(p.instance for p in gw.chain.plugins if p.name == "governance")
    key = new_key()
    await gov.store.add_key(KeyRecord("key_gov1", "k", digest(key), key[-4:], team="platform"))
    headers = {"authorization": f"Bearer {key}"}
    for body in (chat("own"), chat("own", stream=True)):
        assert (await run(gw, FakeHttp(body, headers=headers))).status == 200
    recorded = finishes(gw)
    ctx, outcome = recorded[0]
    usage, micro, deployment = ctx.metadata["gov.cost"]
    assert usage is outcome.usage and deployment == "own" and micro > 0
    lines = assert_same(gw, expect=2)
    assert lines[0]["cost_usd"] == micro / 1e6 and lines[0]["key_name"] == "k"
    # what governance priced is what is counted, whatever the prices finish_request was given
    ctx.metadata["gov.cost"] = (usage, 123_456, "elsewhere")
    cheap = telemetry(True, prices={}, providers={})
    cheap.finish_request(ctx, outcome._run, outcome.ended, outcome._usage, now=NOW)
    line = orjson.loads(cheap.take_log())
    assert (line["cost_usd"], line["deployment"]) == (0.123456, "own")  # the served attempt names it


# --- finish_request: the shell ------------------------------------------------------------------------

async def _one(model: str = "own", reply: Any = None) -> tuple[Any, Any, Any]:
    gw = gateway_for(with_plugins(MODELS), a=FakePool(reply or priced_completion(1000, 200, None)))
    await run(gw, FakeHttp(chat(model)))
    [(ctx, outcome)] = finishes(gw)
    return gw, ctx, outcome


async def test_finish_request_reads_both_clocks_itself() -> None:
    _, ctx, outcome = await _one()
    t = telemetry(False)
    before = time.time_ns() - int((time.perf_counter() - ctx.started) * 1e9)
    t.finish_request(ctx, outcome._run, outcome.ended)
    after = time.time_ns() - int((time.perf_counter() - ctx.started) * 1e9)
    ts = datetime.fromisoformat(orjson.loads(t.take_log())["ts"]).timestamp()
    # the line keeps milliseconds (truncated); both clocks moved less than 50 ms around the call
    assert before / 1e9 - 0.001 <= ts <= after / 1e9 + 0.05


async def test_configure_replaces_prices_and_providers_for_the_next_request() -> None:
    gw, ctx, outcome = await _one()
    t = telemetry(False)
    assert (t.prices_count, t.providers_count) == (0, 0)
    t.finish_request(ctx, outcome._run, outcome.ended, now=NOW)
    first = orjson.loads(t.take_log())
    assert "cost_usd" not in first and first["provider"] == ""  # nothing known: unpriced
    t.configure(prices={"own": (2.0, 3.0, None)})
    t.configure(providers={"a": "openai"})
    t.finish_request(ctx, outcome._run, outcome.ended, now=NOW)
    second = orjson.loads(t.take_log())
    assert second["cost_usd"] == (1000 * 2 + 200 * 3) / 1e6 and second["provider"] == "openai"
    t.configure(prices={"own": None})  # known to have no price
    assert (t.prices_count, t.providers_count) == (1, 1)
    counters = t.snapshot()["counters"]
    assert counters["llmgw_unpriced_requests_total"] == [[["own", "own"], 1]]
    with pytest.raises(TypeError, match=r"prices\[own\] must be"):
        t.configure(prices={"own": (1.0, 2.0)}, providers={"b": "x"})
    with pytest.raises(ValueError, match="finite"):
        t.configure(prices={"own": (float("inf"), 2.0, None)})
    with pytest.raises(TypeError, match="providers must map str"):
        t.configure(providers={"a": None})
    assert (t.prices_count, t.providers_count) == (1, 1)  # a refused table changes nothing


async def test_finish_request_names_a_wrong_attribute_and_counts_nothing() -> None:
    _, ctx, outcome = await _one()
    t = telemetry(True)
    ctx.user = 5
    with pytest.raises(TypeError, match=r"finish_request: ctx.user must be a str or None, not int"):
        t.finish_request(ctx, outcome._run, outcome.ended, now=NOW)
    ctx.user = None
    ctx.attempts[0].status = "200"
    with pytest.raises(TypeError, match=r"attempt.status must be an int"):
        t.finish_request(ctx, outcome._run, outcome.ended, now=NOW)
    assert t.series_count == 0 and t.log_pending == 0


async def test_finish_request_writes_lone_surrogates_as_replacement_characters() -> None:
    gw, ctx, outcome = await _one()
    ctx.user, ctx.attempts[0].deployment = "a\ud800", "own\udfff"
    by_tuple, direct = telemetry(True, **catalog(gw.config)), telemetry(True, **catalog(gw.config))
    by_tuple.finish(reference_tuple(gw.config, ctx, outcome))
    direct.finish_request(ctx, outcome._run, outcome.ended, now=NOW)
    line = direct.take_log()
    assert line == by_tuple.take_log() and orjson.loads(line)["user"] == "a\ufffd"
    assert direct.snapshot() == by_tuple.snapshot()


async def test_finish_request_with_more_attempts_than_it_keeps_on_the_stack() -> None:
    gw = gateway_for(with_plugins(MODELS), a=FakePool(error_reply(503)), b=FakePool(completion("backup")))
    await run(gw, FakeHttp(chat("chain")))
    [(ctx, _)] = finishes(gw)
    first, second = ctx.attempts
    ctx.attempts[1:1] = [replace(first, retry=True), replace(first, hedge=True, cancelled=True, total_s=None),
                         replace(second, error=None, status=204, cancelled=True), replace(first, sent=False)]
    lines = assert_same(gw)
    assert len(lines[0]["attempt_list"]) == 6


async def test_finish_request_sees_a_class_changed_after_it_learned_where_its_slots_are() -> None:
    gw, ctx, outcome = await _one()

    class Flagged(Attempt):
        __slots__ = ()

    ctx.attempts[0].__class__ = Flagged
    t, reference = telemetry(True, **catalog(gw.config)), telemetry(True, **catalog(gw.config))
    t.finish_request(ctx, outcome._run, outcome.ended, now=NOW)
    reference.finish(reference_tuple(gw.config, ctx, outcome))
    assert t.slot_reads_known > 30  # the request's objects are read at their slots
    Flagged.cancelled = property(lambda self: True)  # type: ignore[assignment,method-assign]
    t.finish_request(ctx, outcome._run, outcome.ended, now=NOW)
    reference.finish(reference_tuple(gw.config, ctx, outcome))
    first, second = t.take_log().splitlines()
    assert orjson.loads(first)["provider"] == "openai"
    assert "provider" not in orjson.loads(second)  # a cancelled attempt served nothing
    assert reference.take_log() == first + b"\n" + second + b"\n"
    assert t.snapshot() == reference.snapshot()


async def test_finish_request_reads_objects_without_slots_too() -> None:
    gw, ctx, outcome = await _one()
    run_ = outcome._run
    plain_ctx = SimpleNamespace(**{name: getattr(ctx, name) for name in ctx.__slots__})  # type: ignore[attr-defined]
    plain_run = SimpleNamespace(**{name: getattr(run_, name) for name in run_.__slots__},
                                final_usage=run_.final_usage)
    by_objects, plain = telemetry(True, **catalog(gw.config)), telemetry(True, **catalog(gw.config))
    by_objects.finish_request(ctx, run_, outcome.ended, now=NOW)
    plain.finish_request(plain_ctx, plain_run, outcome.ended, now=NOW)
    assert plain.take_log() == by_objects.take_log()
