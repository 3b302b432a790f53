"""The RequestRunner's lifecycle rules, in process with fake upstreams (no sockets).

One test per on_finish case (every way a request can end), then the rules of route plans,
attempts, read-only plugins and the streaming contract v2. End-to-end versions of the cases
that involve real sockets (disconnects, SIGTERM, reload) are in test_lifecycle_e2e.py.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from fakes import (
    BASE_CONFIG,
    FakeHttp,
    FakePool,
    FakeResponse,
    completion,
    error_reply,
    gateway_for,
    plugin,
    run,
    run_until_the_client_leaves,
    sse_chunk,
    stream,
)
from llmgw.runner import ANTHROPIC_MESSAGES, EMBEDDINGS, MODELS, RequestRunner

MSG = [{"role": "user", "content": "hello there"}]


def with_plugins(*targets: str, config: str = BASE_CONFIG) -> str:
    return config + "plugins:\n" + "".join(f"  - {t}\n" for t in targets)


def chat(model: str = "m", **extra) -> dict:
    return {"model": model, "messages": MSG, **extra}


def only_finish(gw) -> tuple:
    records = plugin(gw).records
    assert len(records) == 1, f"on_finish ran {len(records)} times"
    return records[0]


# --- on_finish: exactly once, for every way a request ends ---------------------------------------

async def test_finish_on_success_has_status_usage_and_the_attempt():
    gw = gateway_for(with_plugins("plugin_samples:FinishRecorder"))
    http = await run(gw, FakeHttp(chat()))
    ctx, out = only_finish(gw)
    assert http.status == 200 and out.status == 200 and out.result == "ok"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (5, 2) and not out.usage_estimated
    [attempt] = out.attempts
    assert attempt.target == "up" and attempt.sent and attempt.status == 200 and attempt.ok
    assert out.served_by == "up" and out.ttfb is not None and out.duration >= out.overhead_s >= 0


async def test_finish_on_upstream_error_keeps_its_classification():
    gw = gateway_for(with_plugins("plugin_samples:FinishRecorder"),
                     up=FakePool(error_reply(503, headers=[(b"retry-after", b"7")])))
    http = await run(gw, FakeHttp(chat()))
    _, out = only_finish(gw)
    assert http.status == 503 and out.status == 503 and out.result == "error"
    [attempt] = out.attempts
    assert attempt.error_class == "retryable" and attempt.sent and attempt.status == 503
    assert attempt.error.reason == "server_error" and attempt.error.retry_after == 7
    assert out.usage is None and out.served_by is None


async def test_finish_on_unreachable_upstream_says_nothing_was_sent():
    gw = gateway_for(with_plugins("plugin_samples:FinishRecorder"), up=FakePool("refuse"))
    http = await run(gw, FakeHttp(chat()))
    _, out = only_finish(gw)
    assert http.status == 502 and "unreachable" in http.json()["error"]["message"]
    [attempt] = out.attempts
    assert not attempt.sent and attempt.error.reason == "connection" and attempt.error.fallback


async def test_finish_on_short_circuit():
    gw = gateway_for(with_plugins("plugin_samples:FinishRecorder",
                                  "{target: 'plugin_samples:Tracer', options: {tag: s, short_circuit: true}}"))
    http = await run(gw, FakeHttp(chat()))
    _, out = only_finish(gw)
    assert http.status == 200 and out.short_circuit and out.attempts == [] and out.result == "ok"
    assert out.usage.completion_tokens == 3  # the plugin's answer carried usage


@pytest.mark.parametrize("hook", ["on_headers", "pre", "post"])
async def test_finish_on_plugin_crash_in_each_hook(hook):
    crasher = {"on_headers": "plugin_samples:HeadersCrasher", "post": "plugin_samples:PostCrasher",
               "pre": "{target: 'plugin_samples:Tracer', options: {tag: x, fail: pre}}"}[hook]
    gw = gateway_for(with_plugins("plugin_samples:FinishRecorder", crasher))
    http = await run(gw, FakeHttp(chat()))
    _, out = only_finish(gw)
    assert http.status == 500 and http.json()["error"]["code"] == "plugin_error"
    assert out.status == 500 and out.result == "error" and out.error.code == "plugin_error"


async def test_finish_when_the_client_leaves_before_the_answer():
    gw = gateway_for(with_plugins("plugin_samples:FinishRecorder"), up=FakePool("hang"))
    await run_until_the_client_leaves(gw, FakeHttp(chat()), _chat())
    _, out = only_finish(gw)
    assert out.status == 499 and out.result == "client_gone"
    [attempt] = out.attempts
    assert attempt.sent and attempt.total_s is not None
    assert out.usage_estimated and out.usage.prompt_tokens > 0 and out.usage.completion_tokens == 0


async def test_finish_when_the_client_leaves_mid_stream_counts_what_was_streamed():
    gw = gateway_for(with_plugins("plugin_samples:FinishRecorder"),
                     up=FakePool(lambda: stream(["a", " b", " c", " d", " e"], then="hang")))
    http = FakeHttp(chat(stream=True), gone_after_sends=3)
    await run(gw, http)
    _, out = only_finish(gw)
    assert http.status == 200 and out.status == 200 and out.result == "client_gone" and out.streamed
    assert out.usage_estimated and out.usage.completion_tokens >= 2
    assert gw.targets["up"].pool.responses[-1].closed, "the upstream stream was not closed"


async def test_async_finish_completes_even_when_the_request_is_cancelled():
    gw = gateway_for(with_plugins("plugin_samples:AsyncFinishRecorder"), up=FakePool("hang"))
    await gw.start()
    task = asyncio.ensure_future(RequestRunner(gw, FakeHttp(chat()), _chat()).run())
    await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()  # cancelled again while on_finish runs (a server shutting down)
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    _, out = only_finish(gw)
    assert out.status == 499


async def test_finish_on_stream_cut_is_a_stream_error_with_estimated_usage():
    gw = gateway_for(with_plugins("plugin_samples:FinishRecorder"),
                     up=FakePool(lambda: stream(["one", " two", " three"], then="cut")))
    http = await run(gw, FakeHttp(chat(stream=True)))
    _, out = only_finish(gw)
    assert http.status == 200 and http.stream.ended, "the response must end after the error event"
    assert http.events()[-1]["error"]["code"] == "upstream_protocol_error"
    assert http.text() == "one two three"
    assert out.result == "stream_error" and out.usage_estimated and out.usage.completion_tokens >= 2


@pytest.mark.parametrize("body, headers, status", [
    (b"{not json", {}, 400),
    (b'{"model": "m", "messages": []}', {}, 400),
    (b"x" * 5_000_000, {}, 413),
    (b'{"model": "m"}', {"content-type": "text/plain"}, 415),
])
async def test_finish_on_early_4xx(body, headers, status):
    gw = gateway_for(with_plugins("plugin_samples:FinishRecorder"))
    http = await run(gw, FakeHttp(body, headers=headers))
    _, out = only_finish(gw)
    assert http.status == status and out.status == status and out.result == "error" and out.attempts == []


async def test_finish_on_refusal_in_on_headers():
    cfg = with_plugins("plugin_samples:FinishRecorder") + "auth:\n  keys: [{name: a, key: key-aaaaaaaaaaaaaaaa}]\n"
    gw = gateway_for(cfg)
    http = await run(gw, FakeHttp(b"{never parsed"))
    recorder = next(p.instance for p in gw.chain.plugins if p.name == "FinishRecorder")
    assert http.status == 401 and len(recorder.records) == 1 and recorder.records[0][1].status == 401


async def test_finish_runs_for_embeddings_and_models_kinds():
    gw = gateway_for(with_plugins("plugin_samples:FinishRecorder"),
                     up=FakePool(FakeResponse(200, [b'{"object":"list","data":[{"embedding":[0.5],"index":0}],'
                                                     b'"usage":{"prompt_tokens":2,"total_tokens":2}}'])))
    await run(gw, FakeHttp({"model": "m", "input": "hi"}, path="/v1/embeddings"), EMBEDDINGS)
    await RequestRunner(gw, FakeHttp(None, method="GET", path="/v1/models"), MODELS).run()
    kinds = [(ctx.kind, out.status) for ctx, out in plugin(gw).records]
    assert kinds == [("embeddings", 200), ("models", 200)]


async def test_a_failing_finish_hook_does_not_stop_the_others():
    gw = gateway_for(with_plugins("plugin_samples:FinishRecorder", "plugin_samples:FinishCrasher"))
    http = await run(gw, FakeHttp(chat()))
    assert http.status == 200 and len(plugin(gw).records) == 1


# --- plans, attempts, the context ------------------------------------------------------------------

async def test_pre_request_sees_the_plan_and_a_changed_model_is_planned_again():
    gw = gateway_for(with_plugins("{target: 'plugin_samples:PlanPeeker', options: {switch_to: alias}}",
                                  "plugin_samples:FinishRecorder"))
    http = FakeHttp(chat("m"))
    await run(gw, http)
    plan, route, started = plugin(gw).seen[0]
    assert plan.model == "m" and route.target == "up" and route.model == "m"
    assert started == http.received_at, "ctx.started is when the request's first byte was read"
    ctx, out = plugin(gw, 1).records[0]
    assert ctx.plan.model == "alias" and out.attempts[0].model == "up-model"
    assert orjson.loads(gw.targets["up"].pool.requests[0]["body"])["model"] == "up-model"


async def test_unknown_model_is_a_404_after_the_pre_hooks():
    gw = gateway_for(with_plugins("plugin_samples:PlanPeeker"))
    http = await run(gw, FakeHttp(chat("nope")))
    assert http.status == 404 and plugin(gw).seen[0][0] is None


async def test_read_only_plugins_keep_the_request_bytes_untouched():
    raw = b'{"messages": [{"role": "user", "content": "hi"}],   "model": "m"}'
    gw = gateway_for(with_plugins("plugin_samples:ReadOnlyObserver", "plugin_samples:FinishRecorder"))
    await run(gw, FakeHttp(raw))
    assert gw.targets["up"].pool.requests[0]["body"] == raw
    assert plugin(gw).prompt == "hi"


async def test_a_plugin_that_may_change_the_body_makes_it_serialized_again():
    raw = b'{"messages": [{"role": "user", "content": "hi"}],   "model": "m"}'
    gw = gateway_for(with_plugins("plugin_samples:NoOpPre"))
    await run(gw, FakeHttp(raw))
    sent = gw.targets["up"].pool.requests[0]["body"]
    assert sent != raw and orjson.loads(sent) == orjson.loads(raw)


async def test_upstream_text_never_carries_the_gateway_key():
    pool = FakePool(error_reply(400, "bad request from key sk-upstream-secret-123456 (org sk-proj-abcdef1234)"))
    gw = gateway_for(BASE_CONFIG, up=pool)
    http = await run(gw, FakeHttp(chat()))
    assert http.status == 400
    assert b"sk-upstream-secret" not in http.body and b"sk-proj-abcdef" not in http.body
    assert b"[redacted]" in http.body


# --- streaming contract v2 -------------------------------------------------------------------------

async def test_read_only_chunk_observers_keep_the_byte_passthrough():
    reply = stream(["a", "b"])
    gw = gateway_for(with_plugins("plugin_samples:ReadOnlyObserver"), up=FakePool(reply))
    http = await run(gw, FakeHttp(chat(stream=True)))
    assert http.streamed == b"".join(reply.pieces), "the stream was not forwarded byte for byte"
    assert plugin(gw).chunks == 3  # two content chunks and the finish chunk


async def test_on_chunk_may_return_several_chunks():
    gw = gateway_for(with_plugins("plugin_samples:Splitter"), up=FakePool(lambda: stream(["abc"])))
    http = await run(gw, FakeHttp(chat(stream=True)))
    contents = [c["choices"][0]["delta"].get("content") for c in http.events() if isinstance(c, dict) and c["choices"]]
    assert contents[:3] == ["a", "b", "c"] and http.events()[-1] == "[DONE]"


async def test_held_chunks_are_released_at_stream_end_through_later_plugins():
    gw = gateway_for(with_plugins("plugin_samples:HoldAll", "plugin_samples:Upper",
                                  "{target: 'plugin_samples:TextCollector', options: {path: /dev/null}}"),
                     up=FakePool(lambda: stream(["split ", "acro", "ss chunks"])))
    http = await run(gw, FakeHttp(chat(stream=True)))
    assert http.text() == "SPLIT ACROSS CHUNKS"
    events = http.events()
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["delta"]["content"] == "SPLIT ACROSS CHUNKS"


async def test_collected_text_is_what_the_client_received():
    gw = gateway_for(with_plugins("plugin_samples:Upper", "plugin_samples:FinishRecorder",
                                  "plugin_samples:TextGrabber"),
                     up=FakePool(lambda: stream(["quiet ", "words"])))
    await run(gw, FakeHttp(chat(stream=True)))
    assert plugin(gw, 2).texts == ["QUIET WORDS"]


@pytest.mark.parametrize("endpoint, marker", [("openai", b'"code":"plugin_error"'), ("anthropic", b"event: error")])
async def test_a_chunk_hook_crash_mid_stream_ends_it_with_an_error_event_in_the_clients_format(endpoint, marker):
    gw = gateway_for(with_plugins("{target: 'plugin_samples:ChunkCrasher', options: {after: 2}}",
                                  "plugin_samples:FinishRecorder"),
                     up=FakePool(lambda: stream(["a", "b", "c", "d"])))
    if endpoint == "openai":
        http = await run(gw, FakeHttp(chat(stream=True)))
    else:
        http = await run(gw, FakeHttp({"model": "m", "max_tokens": 10, "stream": True, "messages": MSG},
                                      path="/v1/messages"), ANTHROPIC_MESSAGES)
    assert http.status == 200 and http.stream.ended and marker in http.streamed
    _, out = plugin(gw, 1).records[0]
    assert out.result == "stream_error" and out.error.code == "plugin_error"


async def test_a_chunk_hook_crash_before_anything_was_sent_is_a_500():
    gw = gateway_for(with_plugins("plugin_samples:ChunkCrasher"), up=FakePool(lambda: stream(["a"])))
    http = await run(gw, FakeHttp(chat(stream=True)))
    assert http.status == 500 and http.json()["error"]["code"] == "plugin_error"
    assert gw.targets["up"].pool.responses[0].closed


async def test_a_stream_end_crash_ends_the_stream_with_an_error_event():
    gw = gateway_for(with_plugins("plugin_samples:EndCrasher"), up=FakePool(lambda: stream(["a", "b"])))
    http = await run(gw, FakeHttp(chat(stream=True)))
    assert http.status == 200 and http.events()[-1]["error"]["code"] == "plugin_error" and http.stream.ended


async def test_an_upstream_error_event_before_any_content_is_a_failed_attempt_not_a_committed_stream():
    gw = gateway_for(with_plugins("plugin_samples:FinishRecorder"), up=FakePool(lambda: stream(["a"], error_at=0)))
    http = await run(gw, FakeHttp(chat(stream=True)))
    assert http.stream is None and http.status == 502, "the response was committed on an upstream error event"
    assert "overloaded upstream" in http.json()["error"]["message"]
    _, out = plugin(gw).records[0]
    assert out.attempts[0].error.reason == "stream_error" and out.attempts[0].error.fallback


async def test_an_upstream_error_event_after_content_forwards_the_content_then_an_error():
    gw = gateway_for(BASE_CONFIG, up=FakePool(lambda: stream(["a", "b", "c"], error_at=2)))
    http = await run(gw, FakeHttp(chat(stream=True)))
    assert http.text() == "ab"
    assert "overloaded upstream" in http.events()[-1]["error"]["message"]


async def test_the_event_size_limit_holds_on_the_translated_path_too():
    endless = FakeResponse(200, [b"data: " + b"x" * 65536] * 80, "end")
    gw = gateway_for(with_plugins("plugin_samples:Upper"), up=FakePool(endless))
    http = await run(gw, FakeHttp(chat(stream=True)))
    assert http.status == 502 and "stream event over" in http.json()["error"]["message"]


async def test_a_response_carrying_chunks_replays_as_a_real_stream():
    # Upper comes first: on_chunk runs only for plugins whose pre_request stage was reached.
    gw = gateway_for(with_plugins("plugin_samples:Upper", "plugin_samples:ChunkReplay"))
    http = await run(gw, FakeHttp(chat(stream=True, stream_options={"include_usage": True})))
    assert http.text() == "HELLO" and len(http.sent) >= 4, "replayed in one write"
    assert http.events()[-2]["usage"]["total_tokens"] == 5 and http.events()[-1] == "[DONE]"


async def test_a_response_carrying_chunks_answers_a_non_streaming_request_assembled():
    gw = gateway_for(with_plugins("plugin_samples:ChunkReplay"))
    http = await run(gw, FakeHttp(chat()))
    body = http.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "Hello"
    assert body["usage"]["total_tokens"] == 5


async def test_a_complete_answer_streams_with_tool_call_indexes_and_usage_last():
    gw = gateway_for(with_plugins("plugin_samples:ToolAnswer"))
    http = await run(gw, FakeHttp(chat(stream=True, stream_options={"include_usage": True})))
    events = [e for e in http.events() if isinstance(e, dict)]
    calls = events[0]["choices"][0]["delta"]["tool_calls"]
    assert [c["index"] for c in calls] == [0, 1] and calls[1]["id"] == "call_2"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] == 10


async def test_a_translated_stream_reaches_an_anthropic_client_with_events_and_usage():
    gw = gateway_for(BASE_CONFIG, up=FakePool(lambda: stream(["Hi", " there"], usage=(3, 2))))
    http = await run(gw, FakeHttp({"model": "m", "max_tokens": 10, "stream": True, "messages": MSG},
                                  path="/v1/messages"), ANTHROPIC_MESSAGES)
    assert b"event: message_start" in http.streamed and b"event: message_stop" in http.streamed
    assert b'"text":"Hi"' in http.streamed.replace(b" ", b"")


async def test_anthropic_client_gets_anthropic_shaped_errors_with_a_request_id():
    gw = gateway_for(BASE_CONFIG, up=FakePool(lambda: stream(["a"], error_at=0)))
    http = await run(gw, FakeHttp({"model": "m", "max_tokens": 10, "stream": True, "messages": MSG},
                                  path="/v1/messages"), ANTHROPIC_MESSAGES)
    assert http.status == 502 and http.json()["type"] == "error" and http.json()["error"]["type"] == "api_error"
    assert http.response_headers.get("x-request-id")


def _chat():
    from llmgw.runner import CHAT

    return CHAT


CRASHERS = ["{target: 'plugin_samples:Tracer', options: {tag: x, fail: pre}, on_error: open}",
            "{target: 'plugin_samples:PostCrasher', on_error: open}",
            "{target: 'plugin_samples:HeadersCrasher', on_error: open}",
            "{target: 'plugin_samples:ChunkCrasher', options: {after: 1}, on_error: open}",
            "{target: 'plugin_samples:EndCrasher', on_error: open}"]


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_fail_open_plugin_that_crashes_in_every_hook_is_counted_and_the_request_goes_on(streamed):
    from llmgw.plugins.chain import PLUGIN_ERRORS

    PLUGIN_ERRORS.clear()
    gw = gateway_for(with_plugins(*CRASHERS, "plugin_samples:FinishRecorder"),
                     up=FakePool(lambda: stream(["a", "b", "c"]) if streamed else completion("fine")))
    http = await run(gw, FakeHttp(chat(stream=streamed)))
    assert http.status == 200
    if streamed:  # every chunk passed unchanged, the crashing one included
        assert http.stream.ended and b'"content":"c"' in http.streamed and b"plugin_error" not in http.streamed
    else:
        assert http.json()["choices"][0]["message"]["content"] == "fine"
    _, out = plugin(gw, 5).records[0]
    assert out.status == 200 and out.error is None
    hooks = {hook for (_, hook, policy) in PLUGIN_ERRORS if policy == "open"}
    assert hooks == ({"pre_request", "post_response", "on_headers"} | ({"on_chunk", "on_stream_end"} if streamed else set()))
    # Fail closed (the default) is still a 500 naming the plugin.
    gw = gateway_for(with_plugins(CRASHERS[0].replace(", on_error: open", "")), up=FakePool(completion("fine")))
    http = await run(gw, FakeHttp(chat()))
    assert http.status == 500 and http.json()["error"]["code"] == "plugin_error"
    assert PLUGIN_ERRORS[("Tracer", "pre_request", "closed")] == 1


async def test_a_read_only_plugin_that_changes_the_model_never_sends_the_old_name_upstream():
    pool = FakePool(completion("fine"))
    gw = gateway_for(with_plugins("plugin_samples:ReadOnlyRouter"), up=pool)
    http = await run(gw, FakeHttp(chat(model="alias")))
    assert http.status == 200
    assert orjson.loads(pool.requests[0]["body"])["model"] == "m"


async def test_a_request_refused_before_the_pre_request_stage_runs_no_post_response():
    config = with_plugins("plugin_samples:ReadOnlyRouter") + """
auth:
  keys: [{name: a, key: key-a-0123456789abcdef, models: [alias]}]
"""
    gw = gateway_for(config, up=FakePool(completion("fine")))
    http = await run(gw, FakeHttp(chat(model="m"), headers={"authorization": "Bearer key-a-0123456789abcdef"}))
    assert http.status == 403
    assert plugin(gw, 1).posts == 0  # (plugin 0 is the auth plugin)
