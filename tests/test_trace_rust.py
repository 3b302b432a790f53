"""Telemetry.trace_request (Rust) against the Python path it replaces on the request path: for real
requests run in process, the span entries it returns, framed by frame_otlp_traces, must be byte
for byte `OtlpExporter.encode(spans_of(Observability.record(ctx, outcome)))` (the clock pinned to
NOW on both sides), and its span count the number of spans."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from fakes import (FakeHttp, FakePool, FakeResponse, completion, error_reply, gateway_for, run,
                   run_until_the_client_leaves, stream)
from llmgw._core import Telemetry, __version__, encode_otlp_spans, frame_otlp_traces
from llmgw.observability import plugin as obs_plugin
from llmgw.observability.metrics import LATENCY_BUCKETS, OVERHEAD_BUCKETS
from llmgw.observability.otlp import SCOPE_NAME, OtlpExporter, spans_of
from llmgw.runner import EMBEDDINGS, RequestRunner
from llmgw.runner import MODELS as MODELS_ENDPOINT
from test_telemetry import MODELS, NOW, chat, finishes, priced_completion

TRACED = MODELS + """
observability:
  access_log: false
  tracing: {endpoint: "http://127.0.0.1:9/v1/traces", interval: 3600}
"""
# a: openai at a.invalid (no port), b: openai at [::1]:8443, c: vllm at c.invalid:8080
TRACED = (TRACED.replace('a: {provider: openai, base_url: "http://a.invalid/v1"',
                         'a: {provider: openai, base_url: "http://user:pw@a.invalid/v1"')
                .replace('b: {provider: openai, base_url: "http://b.invalid/v1"',
                         'b: {provider: openai, base_url: "http://[::1]:8443/v1"')
                .replace('c: {provider: openai, base_url: "http://c.invalid/v1"',
                         'c: {provider: vllm, base_url: "http://c.invalid:8080/v1"'))


def gateway(*plugins: str, **pools: Any) -> Any:
    config = TRACED + "plugins:\n" + "".join(f"  - {t}\n" for t in ("plugin_samples:FinishRecorder", *plugins))
    return gateway_for(config, **pools)


def observability(gw: Any) -> Any:
    return next(p.instance for p in gw.chain.plugins if p.name == "observability")


def exporter() -> OtlpExporter:
    return OtlpExporter("http://127.0.0.1:9/v1/traces", instance_id="i-1", host_name="h")


def reference(obs: Any, ctx: Any, outcome: Any) -> list[tuple[Any, ...]]:
    """spans_of(Observability.record(...)) at NOW: the Python path."""
    clock = obs_plugin.time
    obs_plugin.time = SimpleNamespace(time_ns=lambda: NOW[0], perf_counter=lambda: NOW[1])  # type: ignore[assignment]
    try:
        return spans_of(obs.record(ctx, outcome))
    finally:
        obs_plugin.time = clock


def fresh(obs: Any) -> Telemetry:
    """A Telemetry configured as the plugin configures its own."""
    t = Telemetry(json_log=False, latency_bounds=list(LATENCY_BUCKETS), overhead_bounds=list(OVERHEAD_BUCKETS),
                  per_key=False)
    t.configure(prices=obs.prices.per_token(), providers={n: p for n, (p, _) in obs.upstreams.items()},
                addresses={n: a for n, (_, a) in obs.upstreams.items()})
    return t


def assert_same(gw: Any, expect: int = 1) -> list[ExportTraceServiceRequest]:
    """For each recorded request: the plugin's Telemetry (with the outcome's usage) and a fresh one
    (reading usage itself) give the Python path's spans, byte for byte; the decoded requests."""
    recorded = finishes(gw)
    assert len(recorded) == expect
    obs = observability(gw)
    exp = exporter()
    other = fresh(obs)
    out = []
    for ctx, outcome in recorded:
        spans = reference(obs, ctx, outcome)
        want = exp.encode(spans)
        for t, usage in ((obs.telemetry, outcome._usage), (other, None)):
            got = t.trace_request(ctx, outcome._run, outcome.ended, usage, now=NOW)
            assert got is not None
            n, body = got
            assert n == len(spans)
            framed = frame_otlp_traces(exp.resource, SCOPE_NAME, __version__, [body])
            if framed != want:  # the decoded difference, for the failure message
                assert ExportTraceServiceRequest.FromString(framed) == ExportTraceServiceRequest.FromString(want)
            assert framed == want
            assert body == encode_otlp_spans(spans)
        out.append(ExportTraceServiceRequest.FromString(want))
    return out


def spans(req: ExportTraceServiceRequest) -> list[Any]:
    return list(req.resource_spans[0].scope_spans[0].spans)


def attrs(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = [getattr(x, x.WhichOneof("value")) for x in v.array_value.values] if kind == "array_value" \
            else getattr(v, kind)
    return out


@pytest.mark.parametrize(("model", "reply"), [
    ("m", priced_completion(1000, 200, None)),
    ("own", priced_completion(1000, 200, 400)),
    ("free", priced_completion(5, 2, None)),
])
async def test_success(model: str, reply: FakeResponse) -> None:
    gw = gateway(a=FakePool(reply), c=FakePool(reply))
    assert (await run(gw, FakeHttp(chat(model)))).status == 200
    [req] = assert_same(gw)
    root, *rest = spans(req)
    attempt = rest[-1]
    assert attrs(root)["llmgw.result"] == "ok" and attrs(attempt)["gen_ai.usage.input_tokens"] in (1000, 5)
    if model == "free":
        assert (attrs(attempt)["server.address"], attrs(attempt)["server.port"]) == ("c.invalid", 8080)
        assert attrs(attempt)["gen_ai.provider.name"] == "vllm"
    else:
        assert attrs(attempt)["server.address"] == "a.invalid" and "server.port" not in attrs(attempt)


async def test_fallback_after_a_5xx() -> None:
    gw = gateway(a=FakePool(error_reply(503)), b=FakePool(completion("backup")))
    assert (await run(gw, FakeHttp(chat("chain")))).status == 200
    obs = observability(gw)  # b said to be gemini (its fake answers are OpenAI's): a well-known name
    obs.upstreams["b"] = ("gemini", obs.upstreams["b"][1])
    obs.telemetry.configure(providers={n: p for n, (p, _) in obs.upstreams.items()})
    [req] = assert_same(gw)
    *_, first, second = spans(req)
    assert attrs(first)["error.type"] and attrs(second)["llmgw.attempt.via"] == "fallback"
    assert (attrs(second)["server.address"], attrs(second)["server.port"]) == ("::1", 8443)
    assert attrs(spans(req)[0])["gen_ai.provider.name"] == "gcp.gemini"


async def test_every_deployment_failing() -> None:
    gw = gateway(a=FakePool(error_reply(429)), b=FakePool(error_reply(500)))
    assert (await run(gw, FakeHttp(chat("chain")))).status >= 500
    [req] = assert_same(gw)
    assert spans(req)[0].status.code == 2


async def test_retries() -> None:
    gw = gateway(a=FakePool(error_reply(503), error_reply(503), completion()))
    for _ in range(5):
        gw.router.state["only"].budget.deposit()
    assert (await run(gw, FakeHttp(chat("solo")))).status == 200
    [req] = assert_same(gw)
    assert attrs(spans(req)[0])["llmgw.retries"] == 2


async def test_a_hedged_race_with_a_cancelled_loser() -> None:
    gw = gateway(a=FakePool("hang"), b=FakePool(completion("fast")))
    assert (await run(gw, FakeHttp(chat("race")))).status == 200
    [req] = assert_same(gw)
    assert any(attrs(s).get("llmgw.attempt.cancelled") for s in spans(req))


@pytest.mark.parametrize("usage", [(3, 2), None])
async def test_a_stream(usage: tuple[int, int] | None) -> None:
    gw = gateway(a=FakePool(lambda: stream(["a", " b", " c"], usage=usage)))
    http = await run(gw, FakeHttp(chat("own", stream=True, stream_options={"include_usage": True})))
    assert http.status == 200
    [req] = assert_same(gw)
    assert attrs(spans(req)[0])["gen_ai.request.stream"] is True


async def test_a_cut_stream() -> None:
    gw = gateway(a=FakePool(lambda: stream(["one", " two"], then="cut")))
    await run(gw, FakeHttp(chat("own", stream=True)))
    [req] = assert_same(gw)
    assert attrs(spans(req)[0])["llmgw.result"] == "stream_error" and spans(req)[0].status.code == 2


async def test_the_client_leaving() -> None:
    gw = gateway(a=FakePool("hang"))
    await run_until_the_client_leaves(gw, FakeHttp(chat("own")))
    [req] = assert_same(gw)
    assert attrs(spans(req)[0])["http.response.status_code"] == 499


async def test_an_unknown_model_a_short_circuit_and_a_crash() -> None:
    gw = gateway()
    assert (await run(gw, FakeHttp(chat("nope")))).status == 404
    gw2 = gateway("{target: 'plugin_samples:Tracer', options: {tag: s, short_circuit: true}}")
    assert (await run(gw2, FakeHttp(chat()))).status == 200
    gw3 = gateway("plugin_samples:PostCrasher")
    assert (await run(gw3, FakeHttp(chat()))).status == 500
    assert attrs(spans(assert_same(gw)[0])[0])["error.type"] == "model_not_found"
    assert_same(gw2)
    assert attrs(spans(assert_same(gw3)[0])[0])["error.type"] == "plugin_error"


async def test_embeddings_models_and_a_plugin_route() -> None:
    emb = FakeResponse(200, [b'{"object":"list","data":[{"embedding":[0.5],"index":0}],'
                             b'"usage":{"prompt_tokens":2,"total_tokens":2}}'])
    gw = gateway("plugin_samples:Counter", a=FakePool(emb))
    await run(gw, FakeHttp({"model": "own", "input": "hi"}, path="/v1/embeddings"), EMBEDDINGS)
    await RequestRunner(gw, FakeHttp(None, method="GET", path="/v1/models"), MODELS_ENDPOINT).run()
    route, params, _ = gw.services.find_route("GET", "/_counter")
    await RequestRunner.for_route(gw, FakeHttp(None, method="GET", path="/_counter"), route, params).run()
    reqs = assert_same(gw, expect=3)
    assert [spans(r)[0].name for r in reqs] == ["embeddings own", "GET /v1/models", "GET /_counter"]


async def test_a_cache_hit_keys_and_a_team() -> None:
    gw = gateway(a=FakePool(completion()))
    await run(gw, FakeHttp(chat()))
    [(ctx, _)] = finishes(gw)
    ctx.metadata["cache"] = "hit"
    ctx.key_id, ctx.key_name, ctx.user, ctx.team = "key_1", "ci-bot", "ann", "platform"
    ctx.attempts.clear()  # answered from the cache: the root span carries the usage
    [req] = assert_same(gw)
    a = attrs(spans(req)[0])
    assert (a["llmgw.cache"], a["llmgw.key_name"], a["llmgw.team"]) == ("hit", "ci-bot", "platform")
    assert "gen_ai.usage.input_tokens" in a


@pytest.mark.parametrize("params", [
    {"temperature": 0.5, "max_tokens": 10, "stop": "x", "n": 2, "seed": 7, "top_p": 1},
    {"temperature": 1, "max_completion_tokens": 5, "stop": ["a", "b"], "n": 1, "frequency_penalty": -0.5,
     "presence_penalty": 0.0},
    {"temperature": "hot", "max_tokens": 1.5, "stop": [], "n": -1, "seed": True, "top_p": None},
    {"temperature": False, "max_tokens": 2**63, "stop": ["a", 1], "n": 2**63, "seed": -(2**63)},
])
async def test_sampling_parameters(params: dict[str, Any]) -> None:
    gw = gateway(a=FakePool(completion()))
    http = await run(gw, FakeHttp(chat(**params)))
    assert http.status in (200, 400)
    for ctx, outcome in finishes(gw):  # the parameters as the client sent them, whatever the gateway said
        if outcome._run.req is not None:
            outcome._run.req.body.update(params)
    assert_same(gw)


async def test_a_remote_parent_a_root_and_stages() -> None:
    gw = gateway("{target: 'plugin_samples:Tracer', options: {tag: s}}", a=FakePool(completion(), completion()))
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await run(gw, FakeHttp(chat(), headers={"traceparent": traceparent}))
    await run(gw, FakeHttp(chat()))
    remote, root = assert_same(gw, expect=2)
    assert spans(remote)[0].parent_span_id == bytes.fromhex("00f067aa0ba902b7")
    assert spans(remote)[0].flags == 0x301 and spans(root)[0].flags == 0x101 and not spans(root)[0].parent_span_id
    stages = [s for s in spans(root) if s.kind == 1]
    assert stages and all(attrs(s)["llmgw.plugin"] != "observability" for s in stages)


async def test_not_sampled_or_untraced_gives_none() -> None:
    gw = gateway(a=FakePool(completion()))
    await run(gw, FakeHttp(chat(), headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}))
    [(ctx, outcome)] = finishes(gw)
    t = observability(gw).telemetry
    assert t.trace_request(ctx, outcome._run, outcome.ended, now=NOW) is None
    ctx.trace = None
    assert t.trace_request(ctx, outcome._run, outcome.ended, now=NOW) is None


async def test_a_lone_surrogate_becomes_a_replacement_character() -> None:
    gw = gateway(a=FakePool(completion()))
    await run(gw, FakeHttp(chat()))
    [(ctx, outcome)] = finishes(gw)
    ctx.model = "\ud800x"
    ctx.attempts[0].model = "up\udfffstream"
    [req] = assert_same(gw)
    assert spans(req)[0].name == "chat \ufffdx" and spans(req)[1].name == "chat up\ufffdstream"


async def test_a_wrong_type_raises_and_on_finish_falls_back_to_the_python_path() -> None:
    gw = gateway(a=FakePool(completion(), completion()))
    await run(gw, FakeHttp(chat()))
    [(ctx, outcome)] = finishes(gw)
    obs = observability(gw)
    ctx.attempts[0].model = 5
    with pytest.raises(TypeError):
        obs.telemetry.trace_request(ctx, outcome._run, outcome.ended, outcome._usage, now=NOW)
    queued = []
    obs.trace_queue = SimpleNamespace(put=queued.append)
    obs.on_finish(ctx, outcome)
    [record] = queued
    assert obs.trace_fallbacks == 1 and record.request_id == ctx.request_id  # a FinishRecord: spans_of's input
    assert ("llmgw_export_items_total", ("otlp", "built_in_python"), 1) in obs._exporter_stats()  # seen in /metrics


async def test_the_exporter_frames_rust_items_and_records_together() -> None:
    gw = gateway(a=FakePool(completion(), completion()))
    await run(gw, FakeHttp(chat()))
    await run(gw, FakeHttp(chat()))
    obs = observability(gw)
    (c1, o1), (c2, o2) = finishes(gw)
    item = obs.telemetry.trace_request(c1, o1._run, o1.ended, o1._usage, now=NOW)
    record = obs.record(c2, o2)
    exp = exporter()
    posted: list[tuple[bytes, int]] = []

    async def post(body: bytes, content_type: str, n: int) -> None:
        posted.append((body, n))

    exp.post = post  # type: ignore[method-assign]
    await exp.export([item, record])
    [(body, n)] = posted
    assert n == item[0] + len(spans_of(record))
    ids = {s.trace_id for s in spans(ExportTraceServiceRequest.FromString(body))}
    assert ids == {c1.trace.trace_id, c2.trace.trace_id}
    await exp.aclose()
