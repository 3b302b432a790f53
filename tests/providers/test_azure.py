"""Azure OpenAI: URL, key header and deployment mapping; error shapes (fixtures); the openai SDK end to end."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from llmgw.providers import registry
from llmgw.config import ConfigError, UpstreamConfig, parse_config
from llmgw.providers.azure import AzureOpenAIAdapter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "azure"
KEY = "az-upstream-secret-24680"


def adapter(**options) -> AzureOpenAIAdapter:
    return AzureOpenAIAdapter(UpstreamConfig(name="az", provider="azure", base_url="https://r.openai.azure.com",
                                             api_key=KEY, options={"api_version": "2024-10-21", **options}))


def test_request_url_header_and_deployment_mapping() -> None:
    req = adapter().chat_request({"model": "gpt4o", "messages": []}, "gpt-4o", False, b'{"raw":1}')
    assert req.path == "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    assert ("api-key", KEY) in req.headers and not any(k == "authorization" for k, _ in req.headers)
    assert req.body == b'{"raw":1}'  # OpenAI wire format: the client's bytes pass untouched
    mapped = adapter(deployment={"gpt-4o": "prod-4o"}).chat_request({}, "gpt-4o", False, b"{}")
    assert mapped.path.startswith("/openai/deployments/prod-4o/")
    single = adapter(deployment="one").embeddings_request({"input": "x"}, "text-embedding-3-small")
    assert single.path == "/openai/deployments/one/embeddings?api-version=2024-10-21"


def test_config_requires_a_valid_api_version_naming_the_key() -> None:
    text = "upstreams:\n  az:\n    provider: azure\n    base_url: https://r.openai.azure.com\n" \
           "    options: {api_version: 'latest'}\nmodels:\n  m: {upstream: az}\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text, source="gw.yaml", providers=registry)
    assert "gw.yaml:5: upstreams.az.options.api_version: must look like 2024-10-21" in str(exc.value)


def classify(status: int, name: str | dict, headers: list | None = None):
    body = json.dumps(name).encode() if isinstance(name, dict) else (FIXTURES / name).read_bytes()
    return adapter().classify_error(status, body, headers or [])


def test_error_fixtures() -> None:
    ec = classify(429, "error_rate_limit.json", [(b"retry-after", b"1")])
    assert (ec.status, ec.retryable, ec.retry_after, ec.code) == (429, True, 1.0, "rate_limit_exceeded")
    ec = classify(401, "error_unauthorized.json")
    assert (ec.status, ec.code) == (502, "upstream_auth_failed") and "subscription key" not in ec.message
    for name in ("error_deployment_not_found.json", "error_resource_not_found.json"):
        ec = classify(404, name)
        assert (ec.status, ec.client_fault, ec.fallback, ec.code) == (502, False, True, "upstream_model_unavailable")


def test_content_filter_is_the_clients_400_naming_the_categories() -> None:
    # The documented shape of a prompt refused by Azure's content filter.
    body = {"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                                 "management policy.", "type": None, "param": "prompt", "code": "content_filter",
                      "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                          "hate": {"filtered": False, "severity": "safe"},
                          "violence": {"filtered": True, "severity": "medium"}}}}}
    ec = classify(400, body)
    assert (ec.status, ec.code, ec.client_fault, ec.retryable) == (400, "content_filter", True, False)
    assert "violence" in ec.message and "hate" not in ec.message


def test_context_length_keeps_openai_shape() -> None:
    body = {"error": {"message": "This model's maximum context length is 128000 tokens. However, your messages "
                                 "resulted in 130000 tokens.", "type": "invalid_request_error", "param": "messages",
                      "code": "context_length_exceeded"}}
    assert classify(400, body).code == "context_length_exceeded"


# -- end to end ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gw(mock_upstream, tmp_path_factory):
    from support import running_gateway

    def up(name: str, headers: str = "{}", key: str = KEY) -> str:
        return (f"  {name}:\n    provider: azure\n    base_url: {mock_upstream.url}\n    api_key: {key}\n"
                f"    headers: {headers}\n    options: {{api_version: '2024-10-21', deployment: {{gpt-4o: prod-4o}}}}\n")

    config = "upstreams:\n" + up("az") + up("az_429", "{x-mock-status: '429', x-mock-retry-after: '3'}") + \
        up("az_503", "{x-mock-status: '503'}") + up("az_ctx", "{x-mock-context-exceeded: 'true'}") + \
        "models:\n  azure-4o: {upstream: az, model: gpt-4o}\n  other: {upstream: az, model: mini}\n" \
        "  az-throttled: {upstream: az_429, model: gpt-4o}\n  az-down: {upstream: az_503, model: gpt-4o}\n" \
        "  az-long: {upstream: az_ctx, model: gpt-4o}\n"
    with running_gateway(tmp_path_factory.mktemp("azure"), config) as proc:
        yield proc


@pytest.fixture
def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="client-key", max_retries=0)


def test_e2e_plain_and_stream(client, mock_upstream) -> None:
    out = client.chat.completions.create(model="azure-4o", messages=[{"role": "user", "content": "hi azure"}])
    assert out.choices[0].message.content == "Echo: hi azure"
    sent = httpx.get(f"{mock_upstream.url}/_mock/last-request").json()
    assert sent["path"] == "/openai/deployments/prod-4o/chat/completions"
    assert sent["query"] == {"api-version": "2024-10-21"} and sent["headers"]["api-key"] == KEY
    chunks = list(client.chat.completions.create(model="other", stream=True, stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "a b"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: a b"
    assert chunks[-1].usage is not None
    sent = httpx.get(f"{mock_upstream.url}/_mock/last-request").json()
    assert sent["path"] == "/openai/deployments/mini/chat/completions"


def test_e2e_errors(client) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="az-throttled", messages=[{"role": "user", "content": "x"}])
    assert exc.value.response.headers["retry-after"] == "3"
    with pytest.raises(openai.APIStatusError) as exc2:
        client.chat.completions.create(model="az-down", messages=[{"role": "user", "content": "x"}])
    assert exc2.value.status_code == 503
    with pytest.raises(openai.BadRequestError) as exc3:
        client.chat.completions.create(model="az-long", messages=[{"role": "user", "content": "x"}])
    assert exc3.value.code == "context_length_exceeded"


def test_e2e_bad_key_is_502_without_the_key(start_gateway) -> None:
    from llmgw.mock import MockUpstream

    with MockUpstream(api_key=KEY) as strict:
        gw = start_gateway(f"upstreams:\n  az:\n    provider: azure\n    base_url: {strict.url}\n"
                           "    api_key: az-wrong-key-13579\n    options: {api_version: '2024-10-21'}\n"
                           "models:\n  m: {upstream: az, model: gpt-4o}\n")
        client = openai.OpenAI(base_url=gw.base_url, api_key="client-key", max_retries=0)
        with pytest.raises(openai.APIStatusError) as exc:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 502 and "az-wrong-key" not in exc.value.response.text
