"""Routing through real gateway processes: examples/fallback.yaml with the environment variables
it names, the official SDKs seeing a clean answer from the fallback and a raised error on a
mid-stream cut, the circuit breaker sparing a failing upstream, a client's deadline, and a hedged
race that leaves no connection behind."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from llmgw.mock import MockUpstream
from support import free_port
from test_disconnect import SlowUpstream

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fallback.yaml"
MSG = [{"role": "user", "content": "hello fallback"}]


@pytest.fixture
def failing_primary():
    with MockUpstream(status=503) as mock:
        yield mock


@pytest.fixture
def cutting_primary():
    with MockUpstream(cut_after_chunks=2) as mock:
        yield mock


def _example(start_gateway, primary_url: str, fallback_url: str):
    return start_gateway(EXAMPLE.read_text(), env={"LLMGW_PRIMARY_UPSTREAM": primary_url,
                                                    "LLMGW_FALLBACK_UPSTREAM": fallback_url})


def test_the_example_falls_back_for_both_sdks(failing_primary, mock_upstream, start_gateway):
    gw = _example(start_gateway, f"{failing_primary.url}/v1", f"{mock_upstream.url}/v1")
    raw = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "chain", "messages": MSG}, timeout=10)
    assert raw.status_code == 200 and raw.json()["choices"][0]["message"]["content"] == "Echo: hello fallback"
    assert raw.headers["x-llmgw-deployment"] == "secondary"
    assert raw.headers["x-llmgw-fallbacks"] == "primary (server_error) > secondary"
    oa = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    streamed = "".join(c.choices[0].delta.content or ""
                       for c in oa.chat.completions.create(model="chain", messages=MSG, stream=True) if c.choices)
    assert streamed == "Echo: hello fallback"
    an = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)
    message = an.messages.create(model="chain", max_tokens=50, messages=MSG)
    assert message.content[0].text == "Echo: hello fallback"


def test_the_example_falls_back_when_the_primary_refuses_connections(mock_upstream, start_gateway):
    gw = _example(start_gateway, f"http://127.0.0.1:{free_port()}/v1", f"{mock_upstream.url}/v1")
    r = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "chain", "messages": MSG}, timeout=10)
    assert r.status_code == 200 and r.headers["x-llmgw-fallbacks"] == "primary (connection) > secondary"


def test_the_breaker_spares_a_failing_primary(failing_primary, mock_upstream, start_gateway):
    gw = _example(start_gateway, f"{failing_primary.url}/v1", f"{mock_upstream.url}/v1")
    before = failing_primary.stats()["requests"]
    statuses = [httpx.post(f"{gw.base_url}/chat/completions", json={"model": "chain", "messages": MSG},
                           timeout=10).status_code for _ in range(10)]
    assert statuses == [200] * 10
    assert failing_primary.stats()["requests"] - before == 3, "the open breaker did not skip the primary"


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_a_mid_stream_cut_raises_in_the_sdk_and_never_replays(cutting_primary, mock_upstream, start_gateway, client):
    gw = _example(start_gateway, f"{cutting_primary.url}/v1", f"{mock_upstream.url}/v1")
    before = mock_upstream.stats()["requests"]
    words = "one two three four five six seven eight"
    got = []
    if client == "openai":
        oa = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.APIError):
            for c in oa.chat.completions.create(model="chain", messages=[{"role": "user", "content": words}],
                                                stream=True):
                if c.choices and c.choices[0].delta.content:
                    got.append(c.choices[0].delta.content)
    else:
        an = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)
        with pytest.raises(anthropic.APIError):
            with an.messages.stream(model="chain", max_tokens=100,
                                    messages=[{"role": "user", "content": words}]) as s:
                for text in s.text_stream:
                    got.append(text)
    text = "".join(got)
    assert text and ("Echo: " + words).startswith(text), "what the client got is not a prefix of one answer"
    assert mock_upstream.stats()["requests"] == before, "a committed stream fell back"


async def test_the_clients_deadline_is_kept(start_gateway):
    async with SlowUpstream("hang") as up:
        gw = start_gateway(f"""
upstreams:
  slow: {{provider: openai, base_url: "{up.url}", timeouts: {{first_byte: 30}}}}
models:
  m: {{upstream: slow}}
""")
        async with httpx.AsyncClient(timeout=10) as c:
            t0 = time.monotonic()
            r = await c.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG},
                             headers={"x-llmgw-timeout": "0.5"})
            elapsed = time.monotonic() - t0
            bad = await c.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG},
                               headers={"x-llmgw-timeout": "soon"})
        assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
        assert elapsed < 0.5 + 0.1, f"answered after {elapsed:.3f} s"
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-llmgw-timeout"
        await asyncio.wait_for(up.closed.wait(), 5)  # the abandoned attempt's connection was closed


async def test_a_hedged_race_closes_the_losers_connection(mock_upstream, start_gateway):
    async with SlowUpstream("hang") as up:
        gw = start_gateway(f"""
upstreams:
  slow: {{provider: openai, base_url: "{up.url}"}}
  fast: {{provider: openai, base_url: "{mock_upstream.url}/v1", api_key: k-123456}}
models:
  race:
    deployments: [{{name: slow, upstream: slow, model: m}}, {{name: fast, upstream: fast, model: m}}]
    hedge: {{after: 0.1}}
""")
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.post(f"{gw.base_url}/chat/completions", json={"model": "race", "messages": MSG})
        assert r.status_code == 200 and r.headers["x-llmgw-deployment"] == "fast"
        await asyncio.wait_for(up.closed.wait(), 5)  # the loser's connection is gone, not pooled
        assert up.requests == 1
