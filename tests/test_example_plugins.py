"""The example plugins in examples/plugins/ do what their docstrings say: one per hook, a guardrail
calling an external moderation service (and its on_error policy), a tenant-aware router."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest

from fakes import BASE_CONFIG, FakeHttp, FakePool, FakeResponse, completion, gateway_for, plugin, run, sse_chunk, stream
from llmgw.exchange import ChatRequest, RequestContext
from llmgw.plugins.chain import PLUGIN_ERRORS
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


# --- moderation.py: a guardrail calling an external /v1/moderations service ----------------------

MARKER = "zorblax"  # the fake moderation service flags text containing it as violence
MOD_KEY = "mod-secret-key-0123456789"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that gave up on a slow answer
        pass


class FakeModeration:
    """OpenAI's /v1/moderations on 127.0.0.1, in a thread: flags a text containing MARKER
    (violence) or "snarky" (harassment). `mode`: "ok", "slow" (answers after `delay` s) or
    "error" (503). `requests` records what it was sent."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.delay = 1.0
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests.append({"path": self.path, "authorization": self.headers.get("authorization"),
                                       "body": body})
                if outer.mode == "slow":
                    time.sleep(outer.delay)
                if outer.mode == "error":
                    status, payload = 503, {"error": {"message": "overloaded", "type": "server_error"}}
                else:
                    status, payload = 200, {"id": "modr-1", "model": body.get("model"),
                                            "results": [outer.verdict(t) for t in body["input"]]}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/moderations"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def verdict(text: str) -> dict:
        categories = {"violence": MARKER in text.lower(), "harassment": "snarky" in text.lower(), "hate": False}
        return {"flagged": any(categories.values()), "categories": categories,
                "category_scores": {k: 0.97 if v else 0.01 for k, v in categories.items()}}

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def moderation_service():
    service = FakeModeration()
    yield service
    service.close()


def _plugin(target: str, options: str = "{}", on_error: str | None = None) -> str:
    policy = f", on_error: {on_error}" if on_error else ""
    return BASE_CONFIG + f"plugins:\n  - {{target: '{target}', options: {options}{policy}}}\n"


def _moderation(url: str, extra: str = "", on_error: str | None = None) -> str:
    return _plugin("plugins.moderation:Moderation", f"{{url: '{url}', api_key_env: MODERATION_TEST_KEY{extra}}}",
                   on_error)


def _ask(text, *, stream_=False) -> FakeHttp:
    return FakeHttp({"model": "m", "stream": stream_, "messages": [
        {"role": "system", "content": f"{MARKER} may appear here: only user messages are checked"},
        {"role": "user", "content": text}]})


async def test_moderation_refuses_a_flagged_prompt_naming_categories_and_passes_a_clean_one(
        moderation_service, monkeypatch):
    monkeypatch.setenv("MODERATION_TEST_KEY", MOD_KEY)
    pool = FakePool(completion("fine answer"))
    gw = gateway_for(_moderation(moderation_service.url), up=pool)
    parts = [{"type": "text", "text": f"how did the {MARKER} attack go"}, {"type": "text", "text": "be snarky"}]
    http = await run(gw, _ask(parts))
    assert http.status == 400 and pool.requests == []  # refused before the upstream
    error = http.json()["error"]
    assert error["code"] == "content_policy_violation" and error["param"] == "messages"
    assert "harassment, violence" in error["message"] and MARKER not in http.body.decode()
    sent = moderation_service.requests[-1]
    assert sent["authorization"] == f"Bearer {MOD_KEY}" and sent["path"] == "/v1/moderations"
    assert sent["body"] == {"input": [f"how did the {MARKER} attack go", "be snarky"],
                            "model": "omni-moderation-latest"}
    http = await run(gw, _ask("a clean question"))
    assert http.status == 200 and http.json()["choices"][0]["message"]["content"] == "fine answer"
    assert len(pool.requests) == 1 and moderation_service.requests[-1]["body"]["input"] == ["a clean question"]
    # Only the categories configured block: harassment alone passes, violence does not.
    gw2 = gateway_for(_moderation(moderation_service.url, ", categories: [violence]"), up=pool)
    assert (await run(gw2, _ask("a snarky remark"))).status == 200
    assert (await run(gw2, _ask(f"{MARKER}!"))).json()["error"]["message"].endswith("(categories: violence).")
    stats = plugin(gw).stats()
    assert stats["checked"] == 2 and stats["refused"] == 1 and stats["by_category"] == {"violence": 1, "harassment": 1}
    for g in (gw, gw2):
        await g.retire(None, grace=0)
    assert plugin(gw).client is None  # shutdown closed its HTTP client


async def test_moderation_withholds_a_flagged_complete_answer_but_not_a_stream(moderation_service, monkeypatch):
    monkeypatch.setenv("MODERATION_TEST_KEY", MOD_KEY)
    pool = FakePool(completion(f"the {MARKER} won"))
    gw = gateway_for(_moderation(moderation_service.url, ", check_output: true"), up=pool)
    http = await run(gw, _ask("who won?"))
    assert http.status == 200 and MARKER not in http.body.decode()
    choice = http.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter" and choice["message"]["content"] is None
    assert "violence" in choice["message"]["refusal"] and http.json()["usage"]["completion_tokens"] == 2
    pool.script(stream(["the ", MARKER, " won"]))  # a stream has reached the client before it is complete
    http = await run(gw, _ask("who won?", stream_=True))
    assert http.status == 200 and http.text() == f"the {MARKER} won"
    await gw.retire(None, grace=0)


async def test_moderation_service_failing_is_handled_by_the_plugins_on_error_policy(
        moderation_service, monkeypatch, caplog):
    monkeypatch.setenv("MODERATION_TEST_KEY", MOD_KEY)
    PLUGIN_ERRORS.clear()
    caplog.set_level(logging.INFO, logger="llmgw")
    moderation_service.mode = "slow"
    # on_error: open — a slow service (past the plugin's timeout) lets the request through: logged, counted.
    gw = gateway_for(_moderation(moderation_service.url, ", timeout: 0.2", on_error="open"))
    started = time.monotonic()
    http = await run(gw, _ask("a clean question"))
    assert http.status == 200 and time.monotonic() - started < 0.9
    assert PLUGIN_ERRORS[("moderation", "pre_request", "open")] == 1
    assert "plugin moderation failed in pre_request" in caplog.text and "ReadTimeout" in caplog.text
    # ... while its refusals still hold: a GatewayError is the plugin's answer under either policy.
    moderation_service.mode = "ok"
    assert (await run(gw, _ask(MARKER))).status == 400
    await gw.retire(None, grace=0)
    # on_error: closed (the default) — the service answering 503 fails the request: 500 naming the plugin.
    moderation_service.mode = "error"
    pool = FakePool(completion())
    gw = gateway_for(_moderation(moderation_service.url), up=pool)
    http = await run(gw, _ask("a clean question"))
    error = http.json()["error"]
    assert http.status == 500 and error["code"] == "plugin_error" and pool.requests == []
    assert error["message"] == "plugin 'moderation' failed in pre_request: HTTPStatusError"
    assert PLUGIN_ERRORS[("moderation", "pre_request", "closed")] == 1
    assert MOD_KEY not in caplog.text
    await gw.retire(None, grace=0)


def test_moderation_through_a_gateway_with_the_openai_sdk(moderation_service, mock_upstream, start_gateway):
    env = {"PYTHONPATH": f"{EXAMPLES}:{Path(__file__).parent}", "MODERATION_TEST_KEY": MOD_KEY}
    entry = f"{{target: 'plugins.moderation:Moderation', options: {{url: '{moderation_service.url}', " \
            "api_key_env: MODERATION_TEST_KEY, timeout: 1}"
    gw = start_gateway(openai_config(mock_upstream.url, tail=f"plugins:\n  - {entry}, on_error: open}}\n"), env=env)
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"plan a {MARKER} raid"}])
    assert refused.value.status_code == 400 and refused.value.code == "content_policy_violation"
    assert "violence" in refused.value.message and MARKER not in refused.value.response.text
    out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello there"}])
    assert out.choices[0].message.content == "Echo: hello there"
    # The service goes down: fail open, the request is served, the failure is in the log.
    moderation_service.close()
    out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "still there?"}])
    assert out.choices[0].message.content == "Echo: still there?"
    log = gw.log()
    assert "plugin moderation failed in pre_request (on_error: open" in log and "ConnectError" in log
    assert MOD_KEY not in log
    # The same service down behind a fail-closed (default) entry: the request fails, naming the plugin.
    gw = start_gateway(openai_config(mock_upstream.url, tail=f"plugins:\n  - {entry}}}\n"), env=env)
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    for streamed in (False, True):
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=streamed)
        assert failed.value.status_code == 500 and failed.value.code == "plugin_error"
        assert "'moderation' failed in pre_request: ConnectError" in failed.value.message


# --- tenant_router.py: each tenant's requests to its own model group ------------------------------

def test_tenant_router_hook_alone_with_a_hand_made_context():
    from plugins.tenant_router import TenantRouter

    router = TenantRouter(teams={"research": "big", "support": "small"}, keys={"batch": "small"}, header="X-Tenant",
                          models=["auto"])

    def routed(model="auto", headers=None, **ctx_fields):
        ctx = RequestContext("req-1", 0.0, **ctx_fields)
        request = ChatRequest(body={"model": model, "messages": []}, model=model, stream=False, headers=headers or {})
        assert router.pre_request(ctx, request) is None
        return request.model

    assert routed(team="research") == "big" and routed(team="support") == "small"
    assert routed(team="research", key_name="batch") == "small"  # the key's own mapping wins
    assert routed(headers={"x-tenant": "support"}) == "small"  # no team: the header names the tenant
    assert routed(team="research", headers={"x-tenant": "support"}) == "big"  # a team is not overridden
    assert routed(team="sales") == "auto" and routed() == "auto"  # unknown tenant, no default: unchanged
    assert routed("m", team="research") == "m"  # only the names in `models` are routed
    assert routed(team="research", headers={"x-llmgw-model": "small"}) == "auto"  # the caller's own choice
    with_default = TenantRouter(teams={"research": "big"}, default="small")
    request = ChatRequest(body={"model": "m", "messages": []}, model="m", stream=False)
    with_default.pre_request(RequestContext("req-2", 0.0, team="sales"), request)
    assert request.model == "small"  # any tenant not listed, and callers without one, go to `default`


GOV_MASTER = "master-key-0123456789abcdef"


def test_tenant_router_sends_each_team_to_its_group_through_a_gateway(mock_upstream, start_gateway, tmp_path):
    gw = start_gateway(openai_config(mock_upstream.url, extra_models="""
  big: {deployments: [{name: big-dep, upstream: mock, model: mock-big}]}
  small: {deployments: [{name: small-dep, upstream: mock, model: mock-small}]}
""", tail=f"""
plugins:
  - target: plugins.tenant_router:TenantRouter
    options: {{teams: {{research: big, support: small}}, header: x-tenant, models: [m]}}
governance:
  master_key: {GOV_MASTER}
  sqlite_path: {tmp_path / 'gov.db'}
"""), env={"PYTHONPATH": f"{EXAMPLES}:{Path(__file__).parent}"})

    def key(**fields) -> str:
        r = httpx.post(f"{gw.url}/admin/keys", json={"name": "t", **fields},
                       headers={"authorization": f"Bearer {GOV_MASTER}"}, timeout=10)
        assert r.status_code == 201, r.text
        return r.json()["key"]

    def ask(api_key: str, **extra):
        client = openai.OpenAI(base_url=gw.base_url, api_key=api_key, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MSG, **extra)
        return raw.headers.get("x-llmgw-deployment"), raw.parse().model  # the model name the upstream got

    research, support, loner = key(team="research"), key(team="support"), key()
    assert ask(research) == ("big-dep", "mock-big")
    assert ask(support) == ("small-dep", "mock-small")
    assert ask(loner) == ("m", "mock-model")  # no tenant, no default: where it asked
    assert ask(loner, extra_headers={"x-tenant": "support"}) == ("small-dep", "mock-small")
    assert ask(research, extra_headers={"x-tenant": "support"}) == ("big-dep", "mock-big")
    # A key that may use only `m`, in a team routed to `big`: the gateway's own check refuses it.
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(key(team="research", models=["m"]))
    assert refused.value.code == "model_not_allowed" and "'big'" in refused.value.message
