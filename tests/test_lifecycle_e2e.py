"""The request lifecycle through a real gateway process: finish records for disconnects and stream
cuts, plugin crashes in each hook, plugin routes, state across reloads, failed reloads, and
SIGTERM flushing what plugins queued."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path

import httpx
import openai
import pytest

from support import openai_config
from test_disconnect import SlowUpstream

MSG = [{"role": "user", "content": "hello lifecycle"}]


def _plugins(*items: str) -> str:
    return "plugins:\n" + "".join(f"  - {item}\n" for item in items)


def _records(path: Path, n: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) >= n:
                return [json.loads(line) for line in lines]
        time.sleep(0.05)
    raise AssertionError(f"expected {n} finish records in {path}, got {path.read_text() if path.exists() else 'none'}")


def _recorder(path: Path) -> str:
    return f"{{target: 'plugin_samples:FinishRecorder', options: {{path: '{path}'}}}}"


async def test_finish_records_a_disconnect_before_the_answer(start_gateway, tmp_path):
    records = tmp_path / "finish.jsonl"
    async with SlowUpstream("hang") as up:
        gw = start_gateway(f"""
upstreams:
  slow: {{provider: openai, base_url: "{up.url}", timeouts: {{first_byte: 30}}}}
models:
  m: {{upstream: slow}}
{_plugins(_recorder(records))}""")
        async with httpx.AsyncClient(timeout=0.5) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG})
        await asyncio.wait_for(up.closed.wait(), 5)
    [rec] = _records(records, 1)
    assert rec["status"] == 499 and rec["result"] == "client_gone" and rec["attempts"][0]["sent"]


async def test_finish_records_a_disconnect_mid_stream(start_gateway, tmp_path):
    records = tmp_path / "finish.jsonl"
    async with SlowUpstream("stream") as up:
        gw = start_gateway(f"""
upstreams:
  slow: {{provider: openai, base_url: "{up.url}"}}
models:
  m: {{upstream: slow}}
{_plugins(_recorder(records))}""")
        async with httpx.AsyncClient(timeout=10) as client:
            body = {"model": "m", "stream": True, "messages": MSG}
            async with client.stream("POST", f"{gw.base_url}/chat/completions", json=body) as resp:
                seen = 0
                async for line in resp.aiter_lines():
                    seen += "tick" in line
                    if seen >= 3:
                        break
        await asyncio.wait_for(up.closed.wait(), 5)
    [rec] = _records(records, 1)
    assert rec["status"] == 200 and rec["result"] == "client_gone" and rec["streamed"]
    assert rec["estimated"] and rec["usage"][1] >= 2


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": "cut", "stream": True, "messages": MSG}),
    ("/v1/messages", {"model": "cut", "stream": True, "max_tokens": 50, "messages": MSG}),
])
def test_a_stream_cut_upstream_ends_the_response_after_the_error_event(mock_upstream, start_gateway, tmp_path, path,
                                                                        body):
    records = tmp_path / "finish.jsonl"
    gw = start_gateway(openai_config(mock_upstream.url, extra_upstreams=f"""
  cutting:
    provider: openai
    base_url: {mock_upstream.url}/v1
    api_key: k-123
    headers: {{x-mock-cut-after-chunks: '2'}}
""", extra_models="  cut: {upstream: cutting}", tail=_plugins(_recorder(records))))
    # A raw client that reads until the server ends the response: it must not hang.
    payload = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\n"
                  b"content-length: %d\r\n\r\n%s" % (path.encode(), len(payload), payload))
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            piece = s.recv(65536)  # socket timeout (5 s) fails the test if the response never ends
            assert piece, "connection closed without the last chunk"
            data += piece
    assert b"HTTP/1.1 200" in data and (b'"error"' in data)
    [rec] = _records(records, 1)
    assert rec["result"] == "stream_error" and rec["estimated"]


@pytest.mark.parametrize("plugin, status", [
    ("plugin_samples:HeadersCrasher", 500),
    ("{target: 'plugin_samples:Tracer', options: {tag: x, fail: pre}}", 500),
    ("plugin_samples:PostCrasher", 500),
    ("plugin_samples:FinishCrasher", 200),
])
def test_a_crash_in_each_hook_answers_and_the_gateway_keeps_serving(mock_upstream, start_gateway, plugin, status):
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins(plugin)))
    for _ in range(2):
        r = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG}, timeout=10)
        assert r.status_code == status
        if status == 500:
            assert r.json()["error"]["code"] == "plugin_error" and "boom" not in r.text
    assert httpx.get(f"{gw.url}/health").status_code == 200


@pytest.mark.parametrize("plugin", ["{target: 'plugin_samples:ChunkCrasher', options: {after: 1}}",
                                    "plugin_samples:EndCrasher"])
def test_a_crash_in_a_stream_hook_raises_in_the_sdk(mock_upstream, start_gateway, plugin):
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins(plugin)))
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.APIError, match="plugin"):
        for _ in client.chat.completions.create(model="m", messages=MSG, stream=True):
            pass
    assert httpx.get(f"{gw.url}/health").status_code == 200


def _count(gw) -> dict:
    return httpx.get(f"{gw.url}/_counter", timeout=5).json()


async def test_plugin_state_and_routes_survive_a_reload(mock_upstream, start_gateway):
    counter = "{target: 'plugin_samples:Counter', options: {label: one}}"
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins(counter)))
    for _ in range(3):
        assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG}).status_code == 200
    assert _count(gw) == {"instance": 3, "kept": 3, "label": "one"}
    # Unchanged entry (another model added): the same instance, its count goes on.
    gw.config_path.write_text(openai_config(mock_upstream.url, extra_models="  m2: {upstream: mock}",
                                            tail=_plugins(counter)))
    gw.reload()
    await _until(lambda: httpx.post(f"{gw.base_url}/chat/completions",
                                    json={"model": "m2", "messages": MSG}).status_code == 200)
    assert _count(gw)["instance"] == 4
    # Changed entry: a new instance (its own count starts again) but the kept state carries on.
    gw.config_path.write_text(openai_config(mock_upstream.url, extra_models="  m2: {upstream: mock}",
                                            tail=_plugins(counter.replace("one", "two"))))
    gw.reload()
    await _until(lambda: _count(gw)["label"] == "two")
    httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG})
    assert _count(gw) == {"instance": 1, "kept": 5, "label": "two"}
    # Dropped: its route goes with it.
    gw.config_path.write_text(openai_config(mock_upstream.url))
    gw.reload()
    await _until(lambda: httpx.get(f"{gw.url}/_counter").status_code == 404)


async def test_a_plugin_failing_to_start_on_reload_keeps_the_old_config(mock_upstream, start_gateway, tmp_path):
    notes = tmp_path / "lifecycle.txt"
    first = f"{{target: 'plugin_samples:Lifecycle', options: {{path: '{notes}', tag: a}}}}"
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins(first)))
    second = f"{{target: 'plugin_samples:Lifecycle', options: {{path: '{notes}', tag: b}}}}"
    broken = f"{{target: 'plugin_samples:Lifecycle', options: {{path: '{notes}', tag: c, fail_startup: true}}}}"
    gw.config_path.write_text(openai_config(mock_upstream.url, extra_models="  m2: {upstream: mock}",
                                            tail=_plugins(first, second, broken)))
    gw.reload()
    await _until(lambda: "still serving the previous config" in gw.log())
    assert notes.read_text().splitlines() == ["startup:a", "startup:b", "startup:c", "shutdown:b"]
    assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m2", "messages": MSG}).status_code == 404
    assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG}).status_code == 200


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_flushes_what_plugins_queued(mock_upstream, start_gateway, tmp_path, workers):
    ledger = tmp_path / "ledger.txt"
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins(
        f"{{target: 'plugin_samples:QueuedLedger', options: {{path: '{ledger}'}}}}")), workers=workers)
    ids = []
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as c:
        async def one() -> None:
            r = await c.post("/chat/completions", json={"model": "m", "messages": MSG})
            assert r.status_code == 200
            ids.append(r.headers["x-request-id"])

        await asyncio.gather(*[one() for _ in range(60)])
    assert not ledger.exists(), "the queue flushed before shutdown (the test would prove nothing)"
    gw.proc.send_signal(signal.SIGTERM)
    gw.proc.wait(timeout=30)
    assert sorted(ledger.read_text().split()) == sorted(ids)


async def _until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_a_worker_that_dies_is_replaced_and_the_rest_keep_serving(mock_upstream, start_gateway):
    import os

    gw = start_gateway(openai_config(mock_upstream.url), workers=2)
    children = _children(gw.proc.pid)
    assert len(children) == 2
    os.kill(children[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    replaced: list[int] = []
    while time.monotonic() < deadline:
        now = _children(gw.proc.pid)
        replaced = [p for p in now if p not in children]
        if len(now) == 2 and replaced:
            break
        time.sleep(0.1)
    assert replaced, "the dead worker was not replaced"
    assert "exited with" in gw.log()
    time.sleep(1.0)  # the new worker loads its config
    statuses = [httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG},
                           timeout=10).status_code for _ in range(20)]
    assert set(statuses) == {200}


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]
