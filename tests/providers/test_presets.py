"""Self-hosted presets (vllm, tgi, ollama, llamacpp): default base URLs, no auth without a key,
each server's context-length error, and the openai SDK through one of them end to end."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from llmgw.providers import registry
from llmgw.config import ConfigError, UpstreamConfig, parse_config
from llmgw.providers import registry

DEFAULTS = {
    "vllm": "http://127.0.0.1:8000/v1",
    "tgi": "http://127.0.0.1:3000/v1",
    "ollama": "http://127.0.0.1:11434/v1",
    "llamacpp": "http://127.0.0.1:8080/v1",
}


@pytest.mark.parametrize(("provider", "url"), sorted(DEFAULTS.items()))
def test_base_url_defaults_per_preset(provider: str, url: str) -> None:
    cfg = parse_config(f"upstreams:\n  local: {{provider: {provider}}}\nmodels:\n  m: {{upstream: local}}\n", providers=registry)
    assert cfg.upstreams["local"].base_url == url
    explicit = parse_config(f"upstreams:\n  local: {{provider: {provider}, base_url: 'http://gpu:9000/v1'}}\n"
                            "models:\n  m: {upstream: local}\n", providers=registry)
    assert explicit.upstreams["local"].base_url == "http://gpu:9000/v1"


def test_missing_base_url_error_lists_the_providers_that_have_defaults() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config("upstreams:\n  x: {provider: openai}\nmodels:\n  m: {upstream: x}\n", source="c.yaml", providers=registry)
    msg = str(exc.value)
    assert msg.startswith("c.yaml:2: upstreams.x.base_url: missing")
    assert "gemini, llamacpp, ollama, tgi, vllm" in msg


def make(provider: str, key: str | None = None):
    return registry.get(provider)(UpstreamConfig(name="local", provider=provider, base_url=DEFAULTS[provider],
                                                 api_key=key))


@pytest.mark.parametrize("provider", sorted(DEFAULTS))
def test_no_authorization_header_without_a_key(provider: str) -> None:
    req = make(provider).chat_request({"model": "m", "messages": []}, "m", False, None)
    assert [k for k, _ in req.headers] == ["content-type"] and req.path == "/chat/completions"
    keyed = make(provider, "local-key").chat_request({"model": "m", "messages": []}, "m", False, None)
    assert ("authorization", "Bearer local-key") in keyed.headers


# Each server's own words for "prompt too long" (from their sources and docs).
CONTEXT_ERRORS = {
    "vllm": (400, {"object": "error", "message": "This model's maximum context length is 4096 tokens. However, "
                   "you requested 5000 tokens (4000 in the messages, 1000 in the completion).",
                   "type": "BadRequestError", "param": None, "code": 400}),
    "tgi": (422, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: "
                  "4000 `inputs` tokens and 1000 `max_new_tokens`", "error_type": "validation"}),
    "llamacpp": (400, {"error": {"code": 400, "message": "the request exceeds the available context size, try "
                                 "increasing it", "type": "exceed_context_size_error",
                                 "n_prompt_tokens": 5000, "n_ctx": 4096}}),
}


@pytest.mark.parametrize("provider", sorted(CONTEXT_ERRORS))
def test_context_errors_are_recognised(provider: str) -> None:
    status, body = CONTEXT_ERRORS[provider]
    ec = make(provider).classify_error(status, json.dumps(body).encode(), [])
    assert (ec.code, ec.fallback, ec.status) == ("context_length_exceeded", True, 400)


def test_tgi_validation_error_that_is_not_about_length_stays_a_client_error() -> None:
    ec = make("tgi").classify_error(422, b'{"error": "Input validation error: `temperature` must be strictly '
                                         b'positive", "error_type": "validation"}', [])
    assert (ec.status, ec.client_fault, ec.code) == (422, True, None)


def test_tgi_has_no_embeddings() -> None:
    assert make("tgi").embeddings_request is None
    assert make("vllm").embeddings_request({"input": "x"}, "m").path == "/embeddings"


def test_sdk_through_a_keyless_preset(start_gateway) -> None:
    from llmgw.mock import MockUpstream

    with MockUpstream(require_auth=False) as mock:
        gw = start_gateway(f"upstreams:\n  local:\n    provider: vllm\n    base_url: {mock.url}/v1\n"
                           "models:\n  llama: {upstream: local, model: meta-llama/Llama-3.1-8B-Instruct}\n")
        client = openai.OpenAI(base_url=gw.base_url, api_key="client-key", max_retries=0)
        out = client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "hi vllm"}])
        assert out.choices[0].message.content == "Echo: hi vllm"
        sent = httpx.get(f"{mock.url}/_mock/last-request").json()
    assert "authorization" not in sent["headers"]
    assert sent["body"]["model"] == "meta-llama/Llama-3.1-8B-Instruct"
