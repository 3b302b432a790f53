"""Whatever JSON a client sends, the mock answers in the provider's shape; its readers never crash."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llmgw.mock.app import UNREADABLE, MockApp
from llmgw.mock.options import MockOptions
from llmgw.mock.replies import FullReply, Request

USER = {"role": "user", "content": "hello"}
ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("/v1/chat/completions", "", {"model": "m", "messages": [USER]}),
    ("/v1/embeddings", "", {"model": "m", "input": "x"}),
    ("/v1/messages", "", {"model": "m", "max_tokens": 9, "messages": [USER]}),
    ("/openai/deployments/d/chat/completions", "api-version=2024-10-21", {"messages": [USER]}),
    ("/openai/deployments/d/embeddings", "api-version=2024-10-21", {"input": "x"}),
    ("/v1beta/models/g:generateContent", "", {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}),
    ("/v1beta/models/g:streamGenerateContent", "alt=sse", {"contents": [{"parts": [{"text": "x"}]}]}),
]
KEYS = ["model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options", "tools",
        "tool_choice", "response_format", "input", "dimensions", "encoding_format", "system", "contents",
        "generationConfig", "toolConfig", "systemInstruction", "role", "content", "parts", "text", "type",
        "json_schema", "schema", "function", "name", "parameters", "input_schema", "functionDeclarations",
        "functionCallingConfig", "responseMimeType", "responseSchema", "properties", "items", "cache_control",
        "functionResponse", "tool_use_id", "include_usage", "maxOutputTokens", "allowedFunctionNames"]
scalars = (st.none() | st.booleans() | st.integers(-3, 5)
           | st.sampled_from(["", "user", "tool", "model", "x y", "json_object", "json_schema", "object",
                              "string", "tool_result", "text", "application/json", "NONE", "base64"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5), max_leaves=30)
APP = MockApp(MockOptions(require_auth=False))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=st.sampled_from(ROUTES), changes=st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4),
       message=st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4))
def test_mutated_requests_get_an_answer_or_a_400_in_shape(route: tuple[str, str, dict[str, Any]],
                                                          changes: dict[str, Any], message: dict[str, Any]) -> None:
    path, query, base = route
    body = {**base, **changes}
    for key in ("messages", "contents"):  # mutate a message too, keeping the request mostly valid
        if isinstance(body.get(key), list) and body[key] and isinstance(body[key][0], dict):
            body[key] = [body[key][0], {**body[key][0], **message}]
    request = Request("POST", path, query, dict(q.split("=") for q in query.split("&") if q),
                      {"anthropic-version": "2023-06-01"}, orjson.dumps(body))
    reply, _ = APP.handle(request)
    assert reply.status in (200, 400)
    if isinstance(reply, FullReply):
        payload = orjson.loads(reply.body)
        assert UNREADABLE not in str(payload), payload


def test_a_reader_bug_still_gets_the_providers_400_shape(monkeypatch: Any) -> None:
    from llmgw.mock.anthropic_wire import AnthropicWire

    def broken(self: AnthropicWire, call: Any) -> Any:
        raise TypeError("unexpected shape")

    monkeypatch.setattr(AnthropicWire, "messages", broken)
    app = MockApp(MockOptions(require_auth=False))
    reply, _ = app.handle(Request("POST", "/v1/messages", "", {}, {"anthropic-version": "1"}, b"{}"))
    assert reply.status == 400
    assert isinstance(reply, FullReply)
    payload = orjson.loads(reply.body)
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert "TypeError: unexpected shape" in payload["error"]["message"]
