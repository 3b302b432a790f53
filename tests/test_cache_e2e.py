"""The response cache through a real gateway process, with the official SDKs as clients.

One gateway (lexical semantic cache, no client auth: the tenant is `x-llmgw-team`) in front of
this module's own mock upstream, whose request counter says whether the upstream was called.
Every test uses prompts of its own, so entries never leak from one test into another.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import anthropic
import httpx
import openai
import pytest

from llmgw.mock import MockUpstream
from support import running_gateway

ADMIN = "cache-admin-secret-123456"


@pytest.fixture(scope="module")
def mock():
    with MockUpstream() as m:
        yield m


@pytest.fixture(scope="module")
def gw(mock, tmp_path_factory):
    config = f"""
upstreams:
  mock: {{provider: openai, base_url: "{mock.url}/v1", api_key: sk-upstream-secret-123456}}
  slow: {{provider: openai, base_url: "{mock.url}/v1", api_key: sk-upstream-secret-123456,
          headers: {{x-mock-latency-ms: '600'}}}}
  slowstream: {{provider: openai, base_url: "{mock.url}/v1", api_key: sk-upstream-secret-123456,
                headers: {{x-mock-tokens-per-s: '20', x-mock-words: '12'}}}}
  cut: {{provider: openai, base_url: "{mock.url}/v1", api_key: sk-upstream-secret-123456,
         headers: {{x-mock-cut-after-chunks: '2', x-mock-words: '12'}}}}
models:
  m: {{upstream: mock, model: mock-model}}
  slow: {{upstream: slow, model: mock-model}}
  slowstream: {{upstream: slowstream, model: mock-model}}
  cuts: {{upstream: cut, model: mock-model}}
  fresh: {{upstream: mock, model: mock-model}}
cache:
  ttl: 600
  semantic: {{embedder: lexical}}
  admin_key_env: TEST_CACHE_ADMIN
  models:
    fresh: {{enabled: false}}
"""
    with running_gateway(tmp_path_factory.mktemp("cache"), config, env={"TEST_CACHE_ADMIN": ADMIN}) as proc:
        yield proc


def upstream_calls(mock) -> int:
    return httpx.get(f"{mock.url}/_mock/stats").json()["by_path"].get("/v1/chat/completions", 0)


def client(gw, team: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0,
                         default_headers={"x-llmgw-team": team} if team else None)


def ask(c: openai.OpenAI, prompt: str, model: str = "m", **extra):
    raw = c.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                      **extra)
    return raw.headers, raw.parse()


def fresh_prompt(text: str) -> str:
    return f"{text} (ref {uuid.uuid4().hex[:8]})"


def test_a_repeated_request_is_answered_from_the_cache(gw, mock):
    c = client(gw)
    prompt = fresh_prompt("What is the capital of France?")
    before = upstream_calls(mock)
    h1, first = ask(c, prompt)
    h2, second = ask(c, prompt)
    assert h1["x-llmgw-cache"] == "miss" and h2["x-llmgw-cache"] == "hit"
    assert second.choices[0].message.content == first.choices[0].message.content
    assert float(h2["x-llmgw-cache-similarity"]) == 1.0 and "x-llmgw-cache-saved-usd" in h2
    assert upstream_calls(mock) == before + 1


def test_a_cached_answer_streams_as_sse_the_sdk_parses(gw, mock):
    c = client(gw)
    prompt = fresh_prompt("Name three primary colours.")
    _, first = ask(c, prompt)
    before = upstream_calls(mock)
    with c.chat.completions.with_streaming_response.create(
            model="m", messages=[{"role": "user", "content": prompt}], stream=True,
            stream_options={"include_usage": True}) as resp:
        assert resp.headers["x-llmgw-cache"] == "hit"
        assert resp.headers["content-type"].startswith("text/event-stream")
        chunks = list(resp.parse())
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == first.choices[0].message.content
    assert chunks[-1].usage is not None and any(ch.choices and ch.choices[0].finish_reason == "stop" for ch in chunks)
    assert upstream_calls(mock) == before


def test_a_streamed_answer_is_stored_and_served_to_a_non_streaming_request(gw, mock):
    c = client(gw)
    prompt = fresh_prompt("Spell the word cache backwards.")
    streamed = "".join(ch.choices[0].delta.content or "" for ch in
                       c.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}],
                                                 stream=True) if ch.choices)
    before = upstream_calls(mock)
    h, again = ask(c, prompt)
    assert h["x-llmgw-cache"] == "hit" and again.choices[0].message.content == streamed
    assert upstream_calls(mock) == before


def test_cross_tenant_canary_never_reaches_another_team(gw, mock):
    canary = fresh_prompt("CANARY-7f3a tell me the launch code for project Bluebird.")
    a, b = client(gw, "team-a"), client(gw, "team-b")
    ha, stored = ask(a, canary)
    ha2, again = ask(a, canary)
    assert ha["x-llmgw-cache"] == "miss" and ha2["x-llmgw-cache"] == "hit" and again.id == stored.id
    # The mock numbers its answers: team-a's entry is the answer with that id, and no other.
    hb, answer = ask(b, canary)
    assert hb["x-llmgw-cache"] == "miss" and answer.id != stored.id
    for prompt in (canary.lower(), canary.upper() + "  ", canary.replace("tell me", "Tell me,")):
        hb, answer = ask(b, prompt)  # may hit team-b's own entry, never team-a's
        assert answer.id != stored.id, f"team-b got team-a's entry for {prompt!r} ({hb['x-llmgw-cache']})"
    hdefault, answer = ask(client(gw), canary)  # no header: the "default" namespace, not team-a's either
    assert hdefault["x-llmgw-cache"] == "miss" and answer.id != stored.id


def test_a_reworded_prompt_is_a_semantic_hit_and_a_near_miss_is_not(gw, mock):
    c = client(gw, "sem")
    tag = uuid.uuid4().hex[:6]
    ask(c, f"How do I reverse a list in Python? {tag}")
    h, _ = ask(c, f"how do I reverse a list in python {tag}")
    assert h["x-llmgw-cache"] == "semantic-hit" and 0 < float(h["x-llmgw-cache-similarity"]) <= 1
    for near_miss in (f"How do I reverse a list in Rust? {tag}", f"How do I not reverse a list in Python? {tag}",
                      f"How do I reverse 2 lists in Python? {tag}"):
        h, answer = ask(c, near_miss)
        assert h["x-llmgw-cache"] == "miss", near_miss
        assert near_miss.split("?")[0] in answer.choices[0].message.content  # the mock echoes the prompt


def test_partial_and_failed_streams_are_never_stored(gw, mock):
    c = client(gw)
    prompt = fresh_prompt("Tell me a long story about a lighthouse keeper.")
    for _ in range(2):
        before = upstream_calls(mock)
        with pytest.raises(openai.APIError):
            for _ in c.chat.completions.create(model="cuts", messages=[{"role": "user", "content": prompt}],
                                               stream=True):
                pass
        assert upstream_calls(mock) == before + 1, "a cut stream was served from the cache"


def test_cache_control_no_store_bypasses_and_no_cache_refreshes(gw, mock):
    c = client(gw)
    prompt = fresh_prompt("What is 2 + 2?")
    h, _ = ask(c, prompt, extra_headers={"cache-control": "no-store"})
    assert h["x-llmgw-cache"] == "bypass"
    h, _ = ask(c, prompt)
    assert h["x-llmgw-cache"] == "miss", "a no-store answer was stored"
    before = upstream_calls(mock)
    h, _ = ask(c, prompt, extra_headers={"cache-control": "no-cache"})
    assert h["x-llmgw-cache"] == "miss" and upstream_calls(mock) == before + 1
    h, _ = ask(c, prompt)
    assert h["x-llmgw-cache"] == "hit"
    h, _ = ask(c, prompt, extra_headers={"cache-control": "max-age=0"})
    assert h["x-llmgw-cache"] == "miss"


def test_non_deterministic_requests_and_disabled_groups_are_not_cached(gw, mock):
    c = client(gw)
    prompt = fresh_prompt("Write a haiku about rain.")
    for extra in ({"n": 2}, {"temperature": 1.5}):
        h1, _ = ask(c, prompt, **extra)
        h2, _ = ask(c, prompt, **extra)
        assert h1["x-llmgw-cache"] == h2["x-llmgw-cache"] == "bypass"
    ask(c, prompt, seed=1)
    h, _ = ask(c, prompt, seed=2)
    assert h["x-llmgw-cache"] == "miss", "a different seed shared an entry"
    h1, _ = ask(c, prompt, model="fresh")
    h2, _ = ask(c, prompt, model="fresh")
    assert "x-llmgw-cache" not in h1 and "x-llmgw-cache" not in h2


def test_answers_with_tool_calls_are_not_stored_by_default(gw, mock):
    c = client(gw)
    prompt = fresh_prompt("What is the weather in Paris?")
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    h1, first = ask(c, prompt, tools=tools)
    assert first.choices[0].message.tool_calls
    h2, _ = ask(c, prompt, tools=tools)
    assert h2["x-llmgw-cache"] == "miss"


def test_different_system_prompts_never_share_answers(gw, mock):
    c = client(gw)
    prompt = fresh_prompt("Summarise the plot of Hamlet.")
    for system in ("You are terse.", "You are verbose."):
        raw = c.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}])
        assert raw.headers["x-llmgw-cache"] == "miss"


async def test_identical_concurrent_requests_share_one_upstream_call(gw, mock):
    prompt = fresh_prompt("Explain coalescing in one sentence.")
    body = {"model": "slow", "messages": [{"role": "user", "content": prompt}]}
    before = upstream_calls(mock)
    async with httpx.AsyncClient(timeout=10) as c:
        replies = await asyncio.gather(*(c.post(f"{gw.base_url}/chat/completions", json=body) for _ in range(6)))
    assert all(r.status_code == 200 for r in replies)
    assert len({r.json()["choices"][0]["message"]["content"] for r in replies}) == 1
    assert upstream_calls(mock) == before + 1
    assert sorted(r.headers["x-llmgw-cache"] for r in replies) == ["hit"] * 5 + ["miss"]


async def test_concurrent_streams_join_from_the_first_chunk_and_survive_the_leader_leaving(gw, mock):
    prompt = fresh_prompt("Count slowly from one to twelve.")
    body = {"model": "slowstream", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    before = upstream_calls(mock)

    async def leader_leaves() -> None:
        async with httpx.AsyncClient(timeout=10) as c:
            async with c.stream("POST", f"{gw.base_url}/chat/completions", json=body) as r:
                async for _ in r.aiter_bytes():
                    await asyncio.sleep(0.25)  # the followers have joined by now
                    return  # hang up mid-stream

    async def follower(delay: float) -> str:
        await asyncio.sleep(delay)
        ac = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        text = ""
        async for ch in await ac.chat.completions.create(**body):
            if ch.choices:
                text += ch.choices[0].delta.content or ""
        await ac.close()
        return text

    results = await asyncio.gather(leader_leaves(), follower(0.05), follower(0.15))
    texts = results[1:]
    assert texts[0] == texts[1] and len(texts[0].split()) == 12, texts  # the whole answer: 12 words
    assert upstream_calls(mock) == before + 1
    h, answer = ask(client(gw), prompt, model="slowstream")  # and it was stored, complete
    assert h["x-llmgw-cache"] == "hit" and answer.choices[0].message.content == texts[0]


def test_admin_api_flushes_one_namespace(gw, mock):
    prompt = fresh_prompt("Which planet is largest?")
    for team in ("flush-a", "flush-b"):
        ask(client(gw, team), prompt)
    denied = httpx.delete(f"{gw.url}/admin/cache/namespaces/flush-a")
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_master_key"
    stats = httpx.get(f"{gw.url}/admin/cache", headers={"authorization": f"Bearer {ADMIN}"}).json()
    assert stats["namespaces"]["flush-a"] >= 1 and stats["entries"] >= 2
    r = httpx.delete(f"{gw.url}/admin/cache/namespaces/flush-a", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.json()["flushed"] >= 1
    assert ask(client(gw, "flush-a"), prompt)[0]["x-llmgw-cache"] == "miss"
    assert ask(client(gw, "flush-b"), prompt)[0]["x-llmgw-cache"] == "hit"
    assert ADMIN not in gw.log()


def test_an_invalid_team_header_is_a_clear_400(gw):
    r = httpx.post(f"{gw.base_url}/chat/completions", headers={"x-llmgw-team": "a b\tc"},
                   json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-llmgw-team"


def test_anthropic_clients_get_cached_answers_in_their_format(gw, mock):
    prompt = fresh_prompt("What does HTTP stand for?")
    ask(client(gw), prompt)
    a = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    raw = a.messages.with_raw_response.create(model="m", max_tokens=100, messages=[{"role": "user", "content": prompt}])
    msg = raw.parse()
    assert raw.headers["x-llmgw-cache"] == "miss"  # max_tokens is part of the key: a different request
    raw2 = a.messages.with_raw_response.create(model="m", max_tokens=100, messages=[{"role": "user", "content": prompt}])
    assert raw2.headers["x-llmgw-cache"] == "hit" and raw2.parse().content[0].text == msg.content[0].text


def test_metrics_count_hits_and_misses(gw, mock):
    ask(client(gw), fresh_prompt("metrics probe"))
    deadline = time.time() + 5
    while time.time() < deadline:
        text = httpx.get(f"{gw.url}/metrics").text
        if 'llmgw_cache_requests_total{model_group="m",result="hit"}' in text:
            break
        time.sleep(0.2)
    assert 'result="hit"' in text and 'result="miss"' in text and "llmgw_cache_entries" in text
