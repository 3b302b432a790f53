"""The cache with governance (the key's team is the tenant; hits in the ledger with the cost they
saved), across the workers of one `llmgw serve --workers 2`, and across two replicas over Redis."""

from __future__ import annotations

import sqlite3
import time
import uuid

import httpx
import pytest

from llmgw.mock import MockUpstream

MASTER = "master-key-cache-0123456789"
PRICE = "{input: 100, output: 200}"  # micro-dollars per token


@pytest.fixture(scope="module")
def mock():
    with MockUpstream() as m:
        yield m


def upstream_calls(mock) -> int:
    return httpx.get(f"{mock.url}/_mock/stats").json()["by_path"].get("/v1/chat/completions", 0)


def post(gw, prompt: str, *, key: str | None = None, team: str | None = None, client: httpx.Client | None = None,
         **extra) -> httpx.Response:
    headers = {}
    if key:
        headers["authorization"] = f"Bearer {key}"
    if team:
        headers["x-llmgw-team"] = team
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], **extra}
    send = client.post if client is not None else httpx.post
    return send(f"{gw.base_url}/chat/completions", json=body, headers=headers, timeout=10)


def fresh(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def test_with_governance_the_keys_team_is_the_tenant_and_hits_are_in_the_ledger(start_gateway, mock, tmp_path):
    db = tmp_path / "gov.sqlite"
    gw = start_gateway(f"""
upstreams:
  mock: {{provider: openai, base_url: "{mock.url}/v1", api_key: sk-upstream-secret-123456}}
models:
  m: {{upstream: mock, model: mock-model, price: {PRICE}}}
governance:
  master_key: {MASTER}
  sqlite_path: {db}
  ledger: {{batch: 200, interval: 0.05}}
cache: {{ttl: 600}}
""")

    def key(team: str) -> str:
        r = httpx.post(f"{gw.url}/admin/keys", json={"name": f"k-{team}", "team": team},
                       headers={"authorization": f"Bearer {MASTER}"})
        assert r.status_code == 201, r.text
        return r.json()["key"]

    alice, bob, carol = key("red"), key("red"), key("blue")
    prompt = fresh("What is the boiling point of water?")
    miss = post(gw, prompt, key=alice)
    hit = post(gw, prompt, key=bob, team="blue")  # same team as alice: shares; the header is ignored
    other = post(gw, prompt, key=carol, team="red")  # another team, whatever the header says
    assert [r.headers["x-llmgw-cache"] for r in (miss, hit, other)] == ["miss", "hit", "miss"]
    saved = float(hit.headers["x-llmgw-cache-saved-usd"])
    usage = miss.json()["usage"]
    assert saved == pytest.approx((usage["prompt_tokens"] * 100 + usage["completion_tokens"] * 200) / 1e6, abs=1e-6)

    deadline = time.time() + 5
    rows: list = []
    while time.time() < deadline:
        with sqlite3.connect(db) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM ledger ORDER BY ts").fetchall()
        if len(rows) >= 3:
            break
        time.sleep(0.1)
    by_cache = {r["cache"]: r for r in rows}
    assert by_cache["hit"]["cost_usd"] == 0 and by_cache["hit"]["cost_saved_usd"] == pytest.approx(saved)
    assert by_cache["hit"]["team"] == "red" and by_cache["hit"]["prompt_tokens"] == 0
    assert by_cache["miss"]["cost_usd"] > 0
    spend = httpx.get(f"{gw.url}/admin/spend?group_by=team", headers={"authorization": f"Bearer {MASTER}"}).json()
    red = next(r for r in spend["data"] if r["team"] == "red")
    assert red["cost_usd"] == pytest.approx(by_cache["miss"]["cost_usd"])  # the hit billed nothing

    flushed = httpx.delete(f"{gw.url}/admin/cache/namespaces/red", headers={"authorization": f"Bearer {MASTER}"})
    assert flushed.status_code == 200 and flushed.json()["flushed"] == 1
    assert post(gw, prompt, key=bob).headers["x-llmgw-cache"] == "miss"


def test_an_entry_stored_by_one_worker_is_a_hit_on_the_others_within_a_second(start_gateway, mock):
    gw = start_gateway(f"""
upstreams:
  mock: {{provider: openai, base_url: "{mock.url}/v1", api_key: sk-upstream-secret-123456}}
models:
  m: {{upstream: mock, model: mock-model}}
cache:
  semantic: {{embedder: lexical}}
""", workers=2)
    prompt = fresh("Name the longest river in Africa.")
    before = upstream_calls(mock)
    assert post(gw, prompt).headers["x-llmgw-cache"] == "miss"
    time.sleep(1.0)
    for i in range(16):  # new connections: the kernel spreads them over both workers
        with httpx.Client() as c:
            r = post(gw, prompt if i % 2 else prompt.lower(), client=c)
            assert r.headers["x-llmgw-cache"] in ("hit", "semantic-hit"), (i, r.headers["x-llmgw-cache"])
    assert upstream_calls(mock) == before + 1


def test_two_replicas_over_redis_see_each_others_entries(start_gateway, mock, redis_server):
    config = f"""
upstreams:
  mock: {{provider: openai, base_url: "{mock.url}/v1", api_key: sk-upstream-secret-123456}}
models:
  m: {{upstream: mock, model: mock-model}}
cache:
  semantic: {{embedder: lexical}}
  redis: {{url: "{redis_server.url}", prefix: "llmgw:test:{uuid.uuid4().hex[:6]}:"}}
"""
    one = start_gateway(config, name="replica-one")
    two = start_gateway(config, name="replica-two")
    prompt = fresh("What is the speed of light in vacuum?")
    before = upstream_calls(mock)
    assert post(one, prompt, team="t").headers["x-llmgw-cache"] == "miss"
    assert post(two, prompt, team="t").headers["x-llmgw-cache"] == "hit"  # the shared exact cache
    assert post(two, prompt, team="other").headers["x-llmgw-cache"] == "miss"
    time.sleep(1.0)  # the semantic index is replicated through the stream within a second
    assert post(two, prompt.lower(), team="t").headers["x-llmgw-cache"] == "semantic-hit"
    assert upstream_calls(mock) == before + 2
    three = start_gateway(config, name="replica-late")  # starts later: gets the snapshot
    assert post(three, prompt.upper(), team="t").headers["x-llmgw-cache"] == "semantic-hit"
