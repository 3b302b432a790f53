"""Routing and fallback (issue: routing), in process: fake upstreams and an injected clock.

Every trigger, retries and backoff, the retry budget under a failing upstream, the circuit
breaker through its states, hedging, shadow traffic, context windows, rules, the complexity
router, strategies, and streams that fail before and after their first content.
"""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from fakes import (
    FakeClock,
    FakeHttp,
    FakePool,
    FakeResponse,
    completion,
    error_reply,
    gateway_for,
    run,
    sse_chunk,
    stream,
)
from llmgw.runner import CHAT, RequestRunner

MSG = [{"role": "user", "content": "hello routing"}]

TWO = """
upstreams:
  a: {provider: openai, base_url: "http://a.invalid/v1", api_key: sk-a-123456789}
  b: {provider: openai, base_url: "http://b.invalid/v1", api_key: sk-b-123456789}
  c: {provider: openai, base_url: "http://c.invalid/v1", api_key: sk-c-123456789}
models:
"""


def chat(model: str = "chain", **extra) -> dict:
    return {"model": model, "messages": MSG, **extra}


def chain_config(on: str = "[rate_limited, server_error, timeout, connection, context_window, content_policy, auth]",
                 extra: str = "") -> str:
    return TWO + f"""
  chain:
    deployments: [{{name: primary, upstream: a, model: m-a}}]
{extra}
    fallbacks: [{{to: backup, on: {on}}}]
  backup:
    deployments: [{{name: secondary, upstream: b, model: m-b}}]
"""


async def answer(gw, body: dict | bytes, **http) -> FakeHttp:
    return await run(gw, FakeHttp(body, **http))


# --- triggers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, trigger", [
    (error_reply(429), "rate_limited"),
    (error_reply(500), "server_error"),
    (error_reply(503), "server_error"),
    ("first-byte-timeout", "timeout"),
    ("connect-timeout", "timeout"),
    ("refuse", "connection"),
    (error_reply(400, "This model's maximum context length is 8192 tokens", code="context_length_exceeded"),
     "context_window"),
    (error_reply(400, "flagged", code="content_policy_violation"), "content_policy"),
    (error_reply(401, "bad key"), "auth"),
])
async def test_each_trigger_falls_back(reply, trigger):
    a, b = FakePool(reply), FakePool(completion("from backup"))
    gw = gateway_for(chain_config(), a=a, b=b, clock=FakeClock())
    http = await answer(gw, chat())
    assert http.status == 200 and http.json()["choices"][0]["message"]["content"] == "from backup"
    assert http.response_headers["x-llmgw-deployment"] == "secondary"
    assert http.response_headers["x-llmgw-fallbacks"] == f"primary ({trigger}) > secondary"
    assert len(a.requests) == 1 and len(b.requests) == 1


@pytest.mark.parametrize("reply", [error_reply(500), error_reply(429)])
async def test_a_fallback_only_takes_the_triggers_it_names(reply):
    a, b = FakePool(reply), FakePool(completion("from backup"))
    gw = gateway_for(chain_config(on="[context_window]"), a=a, b=b, clock=FakeClock())
    http = await answer(gw, chat())
    assert http.status in (429, 502) and len(b.requests) == 0


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_the_clients_own_errors_are_not_retried(status):
    a, b = FakePool(error_reply(status, "bad field")), FakePool(completion())
    gw = gateway_for(chain_config(extra="    retries: {attempts: 3}"), a=a, b=b, clock=FakeClock())
    http = await answer(gw, chat())
    assert http.status == status and len(a.requests) == 1 and len(b.requests) == 0


async def test_budget_exhausted_steps_down_to_the_budget_fallback():
    cfg = chain_config(on="[budget_exhausted]") + "plugins:\n  - plugin_samples:BudgetSignal\n"
    a, b = FakePool(completion("expensive")), FakePool(completion("cheap"))
    gw = gateway_for(cfg, a=a, b=b, clock=FakeClock())
    http = await answer(gw, chat())
    assert http.json()["choices"][0]["message"]["content"] == "cheap" and len(a.requests) == 0
    assert "budget exhausted" in http.response_headers["x-llmgw-route-reason"]


# --- retries, backoff, budgets ------------------------------------------------------------------------

def single(extra: str) -> str:
    return TWO + f"""
  solo:
    deployments: [{{name: only, upstream: a, model: m-a}}]
{extra}
"""


async def test_backoff_grows_with_full_jitter_and_honours_retry_after():
    random.seed(7)
    clock = FakeClock()
    a = FakePool(error_reply(503), error_reply(503), error_reply(503, headers=[(b"retry-after", b"2")]),
                 completion("finally"))
    gw = gateway_for(single("    retries: {attempts: 3, backoff: 0.5, max_backoff: 4, budget: 10}"), a=a, clock=clock)
    for _ in range(5):  # fill the deployment's retry budget
        gw.router.state["only"].budget.deposit()
    http = await answer(gw, chat("solo"))
    assert http.status == 200 and len(a.requests) == 4
    first, second, third = clock.sleeps
    assert 0 <= first <= 0.5 and 0 <= second <= 1.0, "exponential with full jitter: [0, base*2^(n-1)]"
    assert third >= 2.0, "Retry-After is honoured"


async def test_a_retry_after_longer_than_the_group_waits_is_not_slept_through():
    clock = FakeClock()
    a = FakePool(error_reply(429, headers=[(b"retry-after", b"30")]), completion())
    gw = gateway_for(single("    retries: {attempts: 3, max_backoff: 5, budget: 10}"), a=a, clock=clock)
    gw.router.state["only"].budget.tokens = 5
    http = await answer(gw, chat("solo"))
    assert http.status == 429 and http.response_headers["retry-after"] == "30" and clock.sleeps == []


async def test_a_request_the_upstream_may_have_processed_is_not_sent_twice():
    a = FakePool(error_reply(500), completion())
    gw = gateway_for(single("    retries: {attempts: 3, budget: 10}"), a=a, clock=FakeClock())
    gw.router.state["only"].budget.tokens = 5
    http = await answer(gw, chat("solo"))
    assert http.status == 502 and len(a.requests) == 1


async def test_the_retry_budget_caps_extra_load_on_a_failing_upstream():
    clock = FakeClock()
    a = FakePool(error_reply(503))
    gw = gateway_for(single("    retries: {attempts: 3, backoff: 0.01, budget: 0.2}"), a=a, clock=clock)
    await gw.start()
    requests = 0
    start = clock.now()
    while clock.now() - start < 60:  # a minute of simulated time, 10 requests a second
        await RequestRunner(gw, FakeHttp(chat("solo")), CHAT).run()
        requests += 1
        clock.advance(0.1)
    assert requests >= 500
    assert len(a.requests) <= 1.2 * requests, f"{len(a.requests)} upstream attempts for {requests} requests"
    assert len(a.requests) > requests, "the budget allowed no retry at all"


# --- circuit breaker ------------------------------------------------------------------------------------

async def test_the_breaker_opens_skips_probes_and_closes():
    clock = FakeClock()
    a, b = FakePool(error_reply(500)), FakePool(completion("backup"))
    gw = gateway_for(chain_config(extra="    breaker: {failures: 3, cooldown: 10}"), a=a, b=b, clock=clock)
    for _ in range(3):
        await answer(gw, chat())
    assert gw.router.state["primary"].breaker.state == "open" and len(a.requests) == 3
    http = await answer(gw, chat())  # open: skipped without a call
    assert len(a.requests) == 3 and http.json()["choices"][0]["message"]["content"] == "backup"
    clock.advance(10)
    a.script(completion("primary again"))
    http = await answer(gw, chat())  # half-open: one probe goes through and succeeds
    assert http.json()["choices"][0]["message"]["content"] == "primary again"
    assert gw.router.state["primary"].breaker.state == "closed"


async def test_a_failed_probe_opens_the_breaker_again_and_only_one_probe_runs():
    clock = FakeClock()
    a, b = FakePool(error_reply(500)), FakePool(completion("backup"))
    gw = gateway_for(chain_config(extra="    breaker: {failures: 2, cooldown: 5}"), a=a, b=b, clock=clock)
    for _ in range(2):
        await answer(gw, chat())
    clock.advance(5)
    a.script("hang")
    probe = asyncio.ensure_future(answer(gw, chat()))
    await asyncio.sleep(0.01)
    other = await answer(gw, chat())  # while the probe runs, the deployment is skipped
    assert other.json()["choices"][0]["message"]["content"] == "backup" and a.hanging == 1
    probe.cancel()
    await asyncio.gather(probe, return_exceptions=True)
    a.script(error_reply(500))
    clock.advance(5)
    await answer(gw, chat())
    assert gw.router.state["primary"].breaker.state == "open"


async def test_an_error_ratio_opens_the_breaker():
    clock = FakeClock()
    a = FakePool(completion(), error_reply(500), completion(), error_reply(500))
    gw = gateway_for(single("    breaker: {failures: 100, error_ratio: 0.5, window: 30, min_requests: 4}"), a=a,
                     clock=clock)
    for _ in range(4):
        await answer(gw, chat("solo"))
    assert gw.router.state["only"].breaker.state == "open"
    http = await answer(gw, chat("solo"))
    assert http.status == 503 and http.json()["error"]["code"] == "circuit_open"


# --- context windows, rules, complexity, strategies ---------------------------------------------------------

CONTEXT = TWO + """
  long:
    deployments:
      - {name: small, upstream: a, model: m-small, context_window: 50}
      - {name: large, upstream: b, model: m-large, context_window: 100000}
"""


async def test_a_prompt_too_long_for_a_deployment_skips_it_without_a_call():
    a, b = FakePool(completion("small")), FakePool(completion("large"))
    gw = gateway_for(CONTEXT, a=a, b=b, clock=FakeClock())
    http = await answer(gw, {"model": "long", "messages": [{"role": "user", "content": "word " * 400}]})
    assert http.json()["choices"][0]["message"]["content"] == "large" and len(a.requests) == 0
    short = await answer(gw, {"model": "long", "messages": [{"role": "user", "content": "hi"}]})
    assert short.json()["choices"][0]["message"]["content"] == "small"


async def test_a_prompt_too_long_for_every_deployment_is_a_400_without_any_call():
    a, b = FakePool(completion()), FakePool(completion())
    gw = gateway_for(CONTEXT, a=a, b=b, clock=FakeClock())
    http = await answer(gw, {"model": "long", "messages": [{"role": "user", "content": "word " * 200_000}]})
    assert http.status == 400 and http.json()["error"]["code"] == "context_length_exceeded"
    assert len(a.requests) == len(b.requests) == 0


RULES = TWO + """
  front:
    deployments: [{name: d-front, upstream: a, model: m-front}]
    rules:
      - {when: {headers: {x-tier: gold}}, use: gold}
      - {when: {tools: true}, use: tooly}
      - {when: {metadata: {tier: gold}}, use: gold}
  gold: {upstream: b, model: m-gold}
  tooly: {upstream: c, model: m-tools}
  auto:
    deployments: [{name: d-auto, upstream: a, model: m-auto}]
    complexity: {easy: cheap, hard: strong, threshold: 0.3}
  cheap: {upstream: b, model: m-cheap}
  strong: {upstream: c, model: m-strong}
"""


async def test_rules_send_matching_requests_to_other_groups():
    pools = {"a": FakePool(completion("a")), "b": FakePool(completion("b")), "c": FakePool(completion("c"))}
    gw = gateway_for(RULES, clock=FakeClock(), **pools)
    gold = await answer(gw, chat("front"), headers={"x-tier": "gold"})
    tools = await answer(gw, chat("front", tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]))
    plain = await answer(gw, chat("front"))
    meta = await answer(gw, chat("front", metadata={"tier": "gold"}))
    assert [h.json()["choices"][0]["message"]["content"] for h in (gold, tools, plain, meta)] == ["b", "c", "a", "b"]
    assert gold.response_headers["x-llmgw-route-reason"] == "rule 1 of front: gold"


async def test_the_complexity_router_sends_easy_prompts_to_the_cheap_group():
    pools = {"a": FakePool(completion("a")), "b": FakePool(completion("cheap")), "c": FakePool(completion("strong"))}
    gw = gateway_for(RULES, clock=FakeClock(), **pools)
    easy = await answer(gw, {"model": "auto", "messages": [{"role": "user", "content": "What is the capital of France?"}]})
    hard_text = ("Prove step by step why this algorithm's complexity is O(n log n), analyze the trade-offs and "
                 "refactor it:\n```python\ndef merge(a, b):\n    return sorted(a + b)\n```\n" * 20)
    hard = await answer(gw, {"model": "auto", "messages": [{"role": "user", "content": hard_text}]})
    assert easy.json()["choices"][0]["message"]["content"] == "cheap"
    assert hard.json()["choices"][0]["message"]["content"] == "strong"
    assert easy.response_headers["x-llmgw-route-reason"].startswith("complexity 0.")


async def test_the_callers_model_header_and_tags_choose_within_what_it_may_use():
    cfg = TWO + """
  tagged:
    strategy: ordered
    deployments:
      - {name: us, upstream: a, model: m, tags: [us]}
      - {name: eu, upstream: b, model: m, tags: [eu]}
  other: {upstream: c, model: m-other}
auth:
  keys: [{name: k, key: key-aaaaaaaaaaaaaaaa, models: [tagged]}]
"""
    pools = {"a": FakePool(completion("us")), "b": FakePool(completion("eu")), "c": FakePool(completion("other"))}
    gw = gateway_for(cfg, clock=FakeClock(), **pools)
    key = {"authorization": "Bearer key-aaaaaaaaaaaaaaaa"}
    eu = await answer(gw, chat("tagged"), headers={**key, "x-llmgw-tags": "eu"})
    assert eu.json()["choices"][0]["message"]["content"] == "eu"
    denied = await answer(gw, chat("tagged"), headers={**key, "x-llmgw-model": "other"})
    assert denied.status == 403 and "other" in denied.json()["error"]["message"]


@pytest.mark.parametrize("strategy", ["lowest_cost", "least_inflight", "headroom"])
async def test_strategies_order_the_deployments(strategy):
    cfg = TWO + f"""
  g:
    strategy: {strategy}
    deployments:
      - {{name: busy, upstream: a, model: m, rpm: 100, price: {{input: 5, output: 15}}}}
      - {{name: idle, upstream: b, model: m, rpm: 100, price: {{input: 0.1, output: 0.4}}}}
"""
    clock = FakeClock()
    pools = {"a": FakePool(completion("busy")), "b": FakePool(completion("other"))}
    gw = gateway_for(cfg, clock=clock, **pools)
    busy = gw.router.state["busy"]
    busy.inflight = 5  # for least_inflight
    busy.requests.add(clock.now(), 90)  # for headroom: 90 of its 100 RPM used
    http = await answer(gw, chat("g"))  # and for lowest_cost: "idle" is the cheaper one
    assert http.response_headers["x-llmgw-deployment"] == "idle"


async def test_weighted_spreads_by_weight_and_lowest_latency_learns():
    cfg = TWO + """
  w:
    strategy: weighted
    deployments:
      - {name: heavy, upstream: a, model: m, weight: 3}
      - {name: light, upstream: b, model: m, weight: 1}
"""
    random.seed(1)
    gw = gateway_for(cfg, a=FakePool(completion()), b=FakePool(completion()), clock=FakeClock())
    served = [(await answer(gw, chat("w"))).response_headers["x-llmgw-deployment"] for _ in range(400)]
    assert 0.65 < served.count("heavy") / 400 < 0.85
    state = gw.router.state
    state["heavy"].latency, state["light"].latency = 0.5, 0.1
    from dataclasses import replace

    gw.router.groups["w"] = replace(gw.router.groups["w"], strategy="lowest_latency")
    assert (await answer(gw, chat("w"))).response_headers["x-llmgw-deployment"] == "light"


# --- hedging and shadows ------------------------------------------------------------------------------------

async def test_a_hedged_request_is_won_by_the_faster_deployment_and_the_loser_cancelled():
    cfg = TWO + """
  race:
    deployments: [{name: slow, upstream: a, model: m}, {name: fast, upstream: b, model: m}]
    hedge: {after: 0.05}
"""
    a, b = FakePool("hang"), FakePool(completion("fast"))
    gw = gateway_for(cfg, a=a, b=b)
    http = await answer(gw, chat("race"))
    assert http.json()["choices"][0]["message"]["content"] == "fast"
    assert a.hanging == 0, "the losing attempt is still waiting on its upstream"
    attempts = http.response_headers["x-llmgw-attempts"]
    assert attempts == "2" and http.response_headers["x-llmgw-deployment"] == "fast"


async def test_shadow_traffic_never_changes_the_answer_or_waits_for_the_copy():
    cfg = TWO + """
  main:
    deployments: [{name: live, upstream: a, model: m-live}]
    shadow: {to: candidate, sample: 1.0}
  candidate: {upstream: b, model: m-candidate}
"""
    for shadow_reply in (error_reply(500), "hang", completion("from the candidate")):
        a, b = FakePool(completion("from live")), FakePool(shadow_reply)
        gw = gateway_for(cfg, a=a, b=b)
        http = await asyncio.wait_for(answer(gw, chat("main")), 1.0)
        assert http.status == 200 and http.json()["choices"][0]["message"]["content"] == "from live"
        await asyncio.sleep(0.05)
        assert len(b.requests) == 1 and orjson.loads(b.requests[0]["body"])["model"] == "m-candidate"
        assert http.response_headers["x-llmgw-deployment"] == "live"
    stats = gw.shadow.stats()
    assert stats["sent"] == 1 and stats["recent"][-1]["status"] == 200 and stats["recent"][-1]["deployment"] == "candidate"


# --- streams ---------------------------------------------------------------------------------------------

async def test_a_stream_that_fails_before_its_first_content_falls_back_without_mixing():
    role_then_cut = FakeResponse(200, [b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m",'
                                       b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                                       b'"finish_reason":null}]}\n\n'], "cut")
    a, b = FakePool(role_then_cut), FakePool(lambda: stream(["from", " backup"]))
    gw = gateway_for(chain_config(), a=a, b=b, clock=FakeClock())
    http = await answer(gw, chat(stream=True))
    assert http.status == 200 and http.text() == "from backup"
    roles = [e for e in http.events() if isinstance(e, dict) and e["choices"] and "role" in e["choices"][0]["delta"]]
    assert len(roles) == 0, "the failed upstream's role chunk reached the client"
    assert http.response_headers["x-llmgw-deployment"] == "secondary"


async def test_a_stream_cut_after_its_first_content_is_an_exact_prefix_and_an_error_event():
    a, b = FakePool(lambda: stream(["one", " two", " three", " four"], then="cut")), FakePool(completion())
    gw = gateway_for(chain_config(), a=a, b=b, clock=FakeClock())
    http = await answer(gw, chat(stream=True))
    assert http.text() == "one two three four" and len(b.requests) == 0
    assert http.events()[-1]["error"]["code"] == "upstream_protocol_error" and http.stream.ended


async def test_stream_deadline_covers_the_time_to_the_first_event():
    cfg = chain_config(extra="    timeout: 0.2")
    a, b = FakePool("hang"), FakePool("hang")
    gw = gateway_for(cfg, a=a, b=b)
    http = await asyncio.wait_for(answer(gw, chat(stream=True)), 2.0)
    assert http.status == 504 and http.json()["error"]["code"] == "deadline_exceeded"
    assert a.hanging == b.hanging == 0


async def test_a_role_only_chunk_alone_is_held_not_sent():
    pieces = [sse_chunk(None), sse_chunk("hi"), sse_chunk(None, "stop"), b"data: [DONE]\n\n"]
    gw = gateway_for(chain_config(), a=FakePool(FakeResponse(200, pieces)), b=FakePool(completion()))
    http = await answer(gw, chat(stream=True))
    assert http.text() == "hi" and http.sent[0].count(b"data:") >= 2, "the first write held the role chunk back"


async def test_deployment_state_survives_a_reload_that_keeps_the_deployment():
    from llmgw.config import parse_config
    from llmgw.gateway import Gateway
    from llmgw.providers import registry

    clock = FakeClock()
    a, b = FakePool(error_reply(500)), FakePool(completion("backup"))
    gw = gateway_for(chain_config(extra="    breaker: {failures: 2, cooldown: 60}"), a=a, b=b, clock=clock)
    for _ in range(2):
        await answer(gw, chat())
    assert gw.router.state["primary"].breaker.state == "open"
    same = chain_config(extra="    breaker: {failures: 2, cooldown: 60}") + "  extra: {upstream: c}\n"
    reloaded = Gateway(parse_config(same, providers=registry), gw.services, previous=gw)
    assert reloaded.router.state["primary"].breaker.state == "open", "a reload forgot the open breaker"
    changed = chain_config(extra="    breaker: {failures: 9, cooldown: 60}")
    reloaded = Gateway(parse_config(changed, providers=registry), gw.services, previous=gw)
    assert reloaded.router.state["primary"].breaker.state == "closed", "a changed breaker kept the old state"


async def test_an_open_breaker_hands_over_to_the_fallback_its_failures_named():
    clock = FakeClock()
    a, b = FakePool("refuse"), FakePool(completion("backup"))
    gw = gateway_for(chain_config(on="[connection]", extra="    breaker: {failures: 2, cooldown: 60}"), a=a, b=b,
                     clock=clock)
    for _ in range(4):
        http = await answer(gw, chat())
        assert http.status == 200 and http.json()["choices"][0]["message"]["content"] == "backup"
    assert len(a.requests) == 2, "the open breaker did not spare the refusing primary"


class _TimesOutJustBefore(FakePool):
    """An upstream whose timer, clipped to the deadline, fires 3 ms before the gateway's clock
    reaches it (as uvloop's millisecond timers on a cached loop time do on a busy loop)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(completion())
        self.clock = clock

    async def request(self, *args, timeout=None, **kwargs):
        from llmgw.transport import UpstreamTimeout
        self.requests.append({})
        self.clock.advance(timeout.first_byte - 0.003)
        raise UpstreamTimeout("no response headers in time", phase="first_byte")


async def test_an_attempt_timing_out_a_hair_before_the_deadline_is_the_deadline():
    clock = FakeClock()
    a, b = _TimesOutJustBefore(clock), FakePool(completion("from backup"))
    gw = gateway_for(chain_config(extra="    timeout: 0.5"), a=a, b=b, clock=clock)
    http = await answer(gw, chat())
    assert http.status == 504 and http.json()["error"]["code"] == "deadline_exceeded"
    assert len(b.requests) == 0, "a fallback was started with no time left"
