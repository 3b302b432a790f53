"""The command line: the one-command demo, several workers, auth, and the example plugin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai

from support import free_port, openai_config, wait_healthy

ROOT = Path(__file__).resolve().parents[1]


def test_demo_answers_the_openai_sdk_with_no_api_key():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmgw.cli", "demo", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc=proc)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        resp = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Hello!"}])
        assert resp.choices[0].message.content == "Echo: Hello!"
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "Hi again"}], stream=True) if c.choices)
        assert streamed == "Echo: Hi again"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert b"curl" in out  # it told the newcomer how to call it


def test_client_auth_keys_and_model_permissions(mock_upstream, start_gateway):
    key = "alice-key-0123456789abcdef"
    gw = start_gateway(openai_config(mock_upstream.url, extra_models="  other: {upstream: mock}", tail="""
auth:
  keys:
    - {name: alice, key: "${ALICE}", models: [m]}
"""), env={"ALICE": key})
    msg = [{"role": "user", "content": "hi"}]
    ok = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
    assert ok.chat.completions.create(model="m", messages=msg).choices[0].message.content == "Echo: hi"
    assert [m.id for m in ok.models.list()] == ["m"]
    try:
        ok.chat.completions.create(model="other", messages=msg)
        raise AssertionError("a key restricted to m used another model")
    except openai.PermissionDeniedError as exc:
        assert exc.body["code"] == "model_not_allowed"
    bad = openai.OpenAI(base_url=gw.base_url, api_key="wrong-key-0123456789", max_retries=0)
    for call in (lambda: bad.chat.completions.create(model="m", messages=msg), bad.models.list):
        try:
            call()
            raise AssertionError("a wrong key was accepted")
        except openai.AuthenticationError as exc:
            assert exc.status_code == 401 and "wrong-key" not in str(exc.body)
    r = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": msg})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


def test_example_plugin_masks_emails_before_the_upstream(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(mock_upstream.url, tail="""
plugins:
  - {target: 'plugins.redact_emails:RedactEmails', options: {mask: '<hidden>'}}
"""), env={"PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), str(ROOT / "tests")])})
    r = httpx.post(f"{gw.base_url}/chat/completions",
                   json={"model": "m", "messages": [{"role": "user", "content": "mail bob@example.com now"}]})
    assert r.json()["choices"][0]["message"]["content"] == "Echo: mail <hidden> now"
    assert r.headers["x-llmgw-emails-masked"] == "1"
    assert "bob@example.com" not in str(mock_upstream.last_request())
