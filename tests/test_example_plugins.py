"""The example plugins in examples/plugins/ (one per hook) do what their docstrings say."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import httpx

from fakes import BASE_CONFIG, FakeHttp, FakePool, FakeResponse, gateway_for, run, sse_chunk
from support import openai_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))  # so the gateway built in this process imports plugins.*

MSG = [{"role": "user", "content": "mail bob@example.com about it"}]


def _with(target: str, options: str = "{}") -> str:
    return BASE_CONFIG + f"plugins:\n  - {{target: '{target}', options: {options}}}\n"


async def test_redact_emails_masks_the_prompt_and_an_address_split_across_stream_chunks():
    pieces = [sse_chunk(t) for t in ["Write to ali", "ce.smith@exa", "mple.org or ", "to carol@x.io", " today"]]
    reply = FakeResponse(200, pieces + [sse_chunk(None, "stop"), b"data: [DONE]\n\n"])
    gw = gateway_for(_with("plugins.redact_emails:RedactEmails"), up=FakePool(reply))
    http = await run(gw, FakeHttp({"model": "m", "messages": MSG, "stream": True}))
    sent = json.loads(gw.targets["up"].pool.requests[0]["body"])
    assert sent["messages"][0]["content"] == "mail [email] about it"
    assert http.text() == "Write to [email] or to [email] today"
    assert http.response_headers["x-llmgw-emails-masked"] == "1"


async def test_redact_emails_masks_a_complete_answer():
    body = {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "reach me at eve@corp.example"}}]}
    gw = gateway_for(_with("plugins.redact_emails:RedactEmails"), up=FakePool(FakeResponse(200, [json.dumps(body).encode()])))
    http = await run(gw, FakeHttp({"model": "m", "messages": MSG}))
    assert http.json()["choices"][0]["message"]["content"] == "reach me at [email]"


async def test_ip_allowlist_refuses_other_networks_before_the_body():
    gw = gateway_for(_with("plugins.ip_allowlist:IpAllowlist", "{networks: ['10.0.0.0/8']}"))
    http = await run(gw, FakeHttp(b"{never read"))  # the fake client is 127.0.0.1
    assert http.status == 403 and http.json()["error"]["code"] == "network_not_allowed"
    gw = gateway_for(_with("plugins.ip_allowlist:IpAllowlist", "{networks: ['127.0.0.0/8']}"))
    http = await run(gw, FakeHttp({"model": "m", "messages": MSG}))
    assert http.status == 200


async def test_access_log_writes_every_request_and_flushes_on_sigterm(mock_upstream, start_gateway, tmp_path):
    log = tmp_path / "access.jsonl"
    gw = start_gateway(openai_config(mock_upstream.url, tail=f"""plugins:
  - {{target: 'plugins.access_log:AccessLog', options: {{path: '{log}'}}}}
"""), env={"PYTHONPATH": f"{EXAMPLES}:{Path(__file__).parent}"})
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as c:
        statuses = await asyncio.gather(*[c.post("/chat/completions", json={"model": m, "messages": MSG})
                                          for m in ["m"] * 20 + ["nope"] * 5])
        stats = (await c.get(f"{gw.url}/_access_log")).json()
    assert sorted(r.status_code for r in statuses) == [200] * 20 + [404] * 5
    assert stats["queued"] + stats["written"] == 25 and stats["dropped"] == 0
    gw.proc.send_signal(signal.SIGTERM)
    gw.proc.wait(timeout=30)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 25 and {line["status"] for line in lines} == {200, 404}
    assert all(line["overhead_ms"] >= 0 for line in lines)
