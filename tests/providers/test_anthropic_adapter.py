"""The `anthropic` upstream adapter: the HTTP request it builds and how it reads Anthropic's errors."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from llmgw.config import UpstreamConfig
from llmgw.errors import GatewayError
from llmgw.providers import registry
from llmgw.providers.anthropic import AnthropicAdapter
from llmgw.transport import UpstreamProtocolError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"
SECRET = "sk-ant-secret-value-123"


def adapter(**options: object) -> AnthropicAdapter:
    return AnthropicAdapter(UpstreamConfig(name="claude", provider="anthropic", base_url="https://a.example/v1",
                                           api_key=SECRET, headers=(("anthropic-beta", "x"),), options=dict(options)))


def test_registered_by_name() -> None:
    assert registry.get("anthropic") is AnthropicAdapter


def test_request_path_headers_and_body() -> None:
    req = adapter().chat_request({"model": "alias", "messages": [{"role": "user", "content": "hi"}]}, "claude-x",
                                 True, b"ignored raw bytes")
    assert (req.method, req.path) == ("POST", "/messages")
    headers = dict(req.headers)
    assert headers["x-api-key"] == SECRET and headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "x" and "authorization" not in headers
    assert orjson.loads(req.body) == {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}],
                                      "max_tokens": 4096, "stream": True}


def test_options_version_max_tokens_and_drop_params() -> None:
    a = adapter(anthropic_version="2099-01-01", default_max_tokens=77, drop_params=True)
    req = a.chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 3}, "c", False, None)
    assert dict(req.headers)["anthropic-version"] == "2099-01-01"
    assert orjson.loads(req.body) == {"model": "c", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 77}


def test_unsupported_parameter_is_a_client_400() -> None:
    with pytest.raises(GatewayError) as exc:
        adapter().chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3}, "c", False, None)
    assert exc.value.status == 400 and exc.value.param == "n" and "'n'" in exc.value.message


def test_invalid_response_body_is_an_upstream_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        adapter().chat_response(b'{"type": "message", "content"', "m")
    assert adapter().chat_response((FIXTURES / "message.json").read_bytes(), "m")["object"] == "chat.completion"


def classify(status: int, name: str, headers: list[tuple[bytes, bytes]] | None = None):
    return adapter().classify_error(status, (FIXTURES / name).read_bytes(), headers or [])


def test_rate_limit_stays_429_with_retry_after() -> None:
    ec = classify(429, "error_rate_limit.json", [(b"retry-after", b"12")])
    assert (ec.status, ec.retryable, ec.fallback, ec.client_fault) == (429, True, True, False)
    assert ec.retry_after == 12.0 and ec.type == "rate_limit_error" and "rate limit" in ec.message


def test_overloaded_is_a_retryable_503() -> None:
    ec = classify(529, "error_overloaded.json", [(b"retry-after", b"3")])
    assert (ec.status, ec.retryable, ec.fallback, ec.code, ec.retry_after) == (503, True, True, "upstream_overloaded", 3.0)


def test_api_error_is_a_retryable_5xx() -> None:
    body = orjson.dumps({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}})
    ec = adapter().classify_error(500, body, [])
    assert ec.retryable and ec.status == 502 and not ec.client_fault


def test_prompt_too_long_is_context_length_exceeded() -> None:
    ec = classify(400, "error_prompt_too_long.json")
    assert (ec.status, ec.code, ec.client_fault, ec.fallback, ec.retryable) == (400, "context_length_exceeded", True,
                                                                             True, False)
    assert "prompt is too long" in ec.message


def test_invalid_request_is_the_clients_400_with_anthropics_message() -> None:
    ec = classify(400, "error_invalid_request.json")
    assert (ec.status, ec.client_fault, ec.retryable, ec.fallback) == (400, True, False, False)
    assert ec.message == "max_tokens: Field required" and ec.type == "invalid_request_error"


@pytest.mark.parametrize(("status", "kind"), [(401, "authentication_error"), (403, "permission_error")])
def test_credential_problems_are_the_gateways_502_without_upstream_text(status: int, kind: str) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": kind, "message": f"invalid x-api-key {SECRET[:12]}"}})
    ec = adapter().classify_error(status, body, [])
    assert ec.status == 502 and not ec.client_fault and SECRET[:12] not in ec.message
    assert ec.code == "upstream_auth_failed"


def test_non_json_error_body_still_classifies_by_status() -> None:
    assert adapter().classify_error(503, b"<html>bad gateway</html>", []).retryable
    assert adapter().classify_error(404, b"", []).client_fault
