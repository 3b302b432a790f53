"""The plugin contract (plugins/api.py), rule by rule, through a real gateway process."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from support import openai_config

MSG = [{"role": "user", "content": "hello plugin world"}]


def _plugins(*items: str) -> str:
    return "plugins:\n" + "".join(f"  - {item}\n" for item in items)


def _chat(gw, model: str = "m", **body) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", json={"model": model, "messages": MSG, **body}, timeout=10)


def test_pre_hooks_run_in_order_and_post_hooks_in_reverse(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins(
        "{target: 'plugin_samples:Tracer', options: {tag: a}}",
        "{target: 'plugin_samples:Tracer', options: {tag: b}}",
        "{target: 'plugin_samples:Tracer', options: {tag: c}}",
    )))
    r = _chat(gw)
    assert r.status_code == 200
    # Each post hook rewrites the trace; the last one to run (a's) leaves the whole list.
    assert r.json()["llmgw_trace"] == ["pre:a", "pre:b", "pre:c", "post:c", "post:b", "post:a"]


def test_short_circuit_skips_upstream_and_later_plugins(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins(
        "{target: 'plugin_samples:Tracer', options: {tag: a}}",
        "{target: 'plugin_samples:Tracer', options: {tag: b, short_circuit: true}}",
        "{target: 'plugin_samples:Tracer', options: {tag: c}}",
    )))
    before = mock_upstream.stats()["requests"]
    r = _chat(gw)
    assert r.status_code == 200
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "short-circuit by b"
    # c's pre never ran, so c's post must not run; b's and a's post run, in that order.
    assert body["llmgw_trace"] == ["pre:a", "pre:b", "post:b", "post:a"]
    assert mock_upstream.stats()["requests"] == before, "a short-circuit must not call the upstream"


def test_short_circuit_answers_a_streaming_request_as_a_stream(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins(
        "{target: 'plugin_samples:Tracer', options: {tag: s, short_circuit: true}}")))
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    chunks = list(client.chat.completions.create(model="m", messages=MSG, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "short-circuit by s"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_error_raised_in_pre_hook_reaches_client_and_earlier_post_hooks(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins(
        "{target: 'plugin_samples:Tracer', options: {tag: a}}",
        "{target: 'plugin_samples:Tracer', options: {tag: b, fail: deny}}",
        "{target: 'plugin_samples:Tracer', options: {tag: c}}",
    )))
    r = _chat(gw)
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "denied"
    assert err["message"].endswith("trace=pre:a,pre:b,post:b,post:a")


def test_crashing_plugin_gives_500_naming_it_and_the_gateway_keeps_serving(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins(
        "{target: 'plugin_samples:Tracer', options: {tag: x, fail: pre}}")))
    r = _chat(gw)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "plugin_error" and "Tracer" in r.json()["error"]["message"]
    assert "boom" not in r.text  # internals stay in the server log
    assert _chat(gw).status_code == 500  # still answering
    assert httpx.get(f"{gw.url}/health").status_code == 200


def test_pre_hook_changes_reach_the_upstream(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins("plugin_samples:BodyRewriter")))
    r = _chat(gw)
    assert r.json()["choices"][0]["message"]["content"] == "Echo: rewritten: hello plugin world"
    sent = mock_upstream.last_request()["body"]
    assert sent["temperature"] == 0.25 and sent["model"] == "mock-model"


def test_post_hook_can_turn_an_error_into_an_answer(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(
        mock_upstream.url,
        extra_upstreams=f"""
  broken:
    provider: openai
    base_url: {mock_upstream.url}/v1
    api_key: k-123
    headers: {{x-mock-status: '503'}}
""",
        extra_models="  b: {upstream: broken}",
        tail=_plugins("plugin_samples:ErrorRescuer"),
    ))
    r = _chat(gw, model="b")
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "rescued from 503"


def test_on_chunk_changes_and_drops_chunks(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins("plugin_samples:Shouter")))
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    stream = client.chat.completions.create(model="m", stream=True,
                                            messages=[{"role": "user", "content": "keep dropme this"}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "ECHO: KEEP THIS"


def test_streamed_summary_reaches_post_hook_with_text_and_usage(mock_upstream, start_gateway, tmp_path: Path):
    out = tmp_path / "collected.txt"
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins(
        f"{{target: 'plugin_samples:TextCollector', options: {{path: '{out}'}}}}")))
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    list(client.chat.completions.create(model="m", messages=MSG, stream=True, stream_options={"include_usage": True}))
    assert out.read_text().strip() == "Echo: hello plugin world|stop|4"


def test_plugin_from_entry_point_group(mock_upstream, start_gateway, tmp_path: Path):
    site = tmp_path / "site"
    dist = site / "llmgw_sample_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: llmgw-sample-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[llmgw.plugins]\nsample = plugin_samples:EntryPointPlugin\n")
    gw = start_gateway(openai_config(mock_upstream.url, tail=_plugins("sample")), env={"PYTHONPATH": f"{site}:{Path(__file__).parent}"})
    r = _chat(gw)
    assert r.status_code == 200 and r.headers["x-entry-point-plugin"] == "ran"


@pytest.mark.parametrize("target, message", [
    ("plugin_samples:Nope", "has no 'Nope'"),
    ("no_such_module_xyz:Thing", "cannot import module"),
    ("not-installed-plugin", "entry-point group"),
])
def test_bad_plugin_reference_is_a_clear_start_error(mock_upstream, tmp_path: Path, target, message):
    import subprocess
    import sys

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(openai_config(mock_upstream.url, tail=_plugins(target)))
    r = subprocess.run([sys.executable, "-m", "llmgw.cli", "check-config", str(cfg)], capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent)})
    assert r.returncode == 2 and message in r.stderr


def test_chunks_before_a_mid_stream_error_still_reach_the_client(mock_upstream, start_gateway):
    # The mock sends two content chunks and its in-stream error event in quick succession, so the
    # gateway may read them in one piece; the chunks must still come out before the error.
    gw = start_gateway(openai_config(
        mock_upstream.url,
        extra_upstreams=f"""
  failing:
    provider: openai
    base_url: {mock_upstream.url}/v1
    api_key: k-123
    headers: {{x-mock-error-after-chunks: '2'}}
""",
        extra_models="  f: {upstream: failing}",
        tail=_plugins("plugin_samples:Shouter"),  # on_chunk: the gateway parses every chunk
    ))
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    got = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="f", messages=MSG, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert "".join(got) == "ECHO: HELLO"
