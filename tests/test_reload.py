"""Config reload (SIGHUP and file change) while requests are in flight, with one and two workers."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import openai

from support import openai_config

MSG = [{"role": "user", "content": "reload me"}]


def _config(mock_url: str, *, with_m2: bool) -> str:
    slow = f"""
  slow:
    provider: openai
    base_url: {mock_url}/v1
    api_key: k-1234
    headers: {{x-mock-tokens-per-s: '10', x-mock-words: '10'}}
"""
    models = "  slowm: {upstream: slow}\n" + ("  m2: {upstream: mock}\n" if with_m2 else "")
    return openai_config(mock_url, extra_upstreams=slow, extra_models=models)


def _rewrite_keeping_mtime(path, text: str) -> None:
    """Change the file but keep its mtime, so only SIGHUP (not the file watcher) can notice."""
    st = os.stat(path)
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


async def _load(gw, seconds: float, model: str = "m") -> list[int]:
    """Bounded closed-loop load: 4 concurrent callers for `seconds`; returns every status."""
    statuses: list[int] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as c:
        async def caller() -> None:
            while time.monotonic() < deadline:
                r = await c.post("/chat/completions", json={"model": model, "messages": MSG})
                statuses.append(r.status_code)

        await asyncio.gather(*[caller() for _ in range(4)])
    return statuses


async def _slow_stream_text(gw) -> str:
    async with openai.AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0) as c:
        stream = await c.chat.completions.create(model="slowm", messages=MSG, stream=True)
        return "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])


async def test_sighup_reload_under_load_drops_nothing(mock_upstream, start_gateway):
    gw = start_gateway(_config(mock_upstream.url, with_m2=False))
    assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m2", "messages": MSG}).status_code == 404

    async def reload_midway() -> None:
        await asyncio.sleep(0.5)
        _rewrite_keeping_mtime(gw.config_path, _config(mock_upstream.url, with_m2=True))
        gw.reload()

    statuses, streamed, _ = await asyncio.gather(_load(gw, 2.0), _slow_stream_text(gw), reload_midway())
    assert len(statuses) > 20 and set(statuses) == {200}, "requests failed during reload"
    assert streamed == "Echo: reload me reload me reload me reload me reload", "a stream in flight was cut by the reload"
    assert set(await _load(gw, 0.3, model="m2")) == {200}


async def test_bad_config_on_reload_keeps_serving_the_old_one(mock_upstream, start_gateway):
    gw = start_gateway(_config(mock_upstream.url, with_m2=True))
    _rewrite_keeping_mtime(gw.config_path, "upstreams: {broken: yes")
    gw.reload()
    await asyncio.sleep(0.5)
    assert set(await _load(gw, 0.3, model="m2")) == {200}
    assert "still serving the previous config" in gw.log()


async def test_file_change_is_picked_up_without_a_signal(mock_upstream, start_gateway):
    gw = start_gateway(_config(mock_upstream.url, with_m2=False))
    time.sleep(0.05)
    gw.config_path.write_text(_config(mock_upstream.url, with_m2=True))
    deadline = time.monotonic() + 5
    status = 0
    while time.monotonic() < deadline and status != 200:
        await asyncio.sleep(0.2)
        status = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m2", "messages": MSG}).status_code
    assert status == 200


async def test_two_workers_serve_and_both_reload(mock_upstream, start_gateway):
    gw = start_gateway(_config(mock_upstream.url, with_m2=False), workers=2)
    assert set(await _load(gw, 0.5)) == {200}
    _rewrite_keeping_mtime(gw.config_path, _config(mock_upstream.url, with_m2=True))
    gw.reload()
    await asyncio.sleep(1.0)
    # Many fresh connections spread over both workers; a worker that missed the reload would 404.
    async def fresh() -> int:
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.post(f"{gw.base_url}/chat/completions", json={"model": "m2", "messages": MSG})
            return r.status_code

    assert set(await asyncio.gather(*[fresh() for _ in range(30)])) == {200}
