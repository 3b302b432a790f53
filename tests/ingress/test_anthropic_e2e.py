"""The official anthropic SDK → a real gateway process (`POST /v1/messages`) → the mock, speaking
OpenAI's format (model "gpt") or Anthropic's (model "claude")."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from support import GatewayProcess

BOTH = ["gpt", "claude"]
FAULTS = {
    "limited": "{x-mock-status: '429', x-mock-retry-after: '7'}",
    "overloaded": "{x-mock-status: '529'}",
    "broken": "{x-mock-status: '500'}",
    "tiny-context": "{x-mock-context-exceeded: 'true'}",
    "rejects": "{x-mock-status: '400'}",
    # paced, so the content and the error arrive in separate reads
    "dies-mid-stream": "{x-mock-error-after-chunks: '2', x-mock-tokens-per-s: '100'}",
}


@pytest.fixture(scope="module")
def gw(mock_upstream, tmp_path_factory):
    def upstream(name: str, provider: str, headers: str = "{}") -> str:
        return f"""
  {name}:
    provider: {provider}
    base_url: {mock_upstream.url}/v1
    api_key: sk-upstream-secret-42
    headers: {headers}
"""
    upstreams = upstream("oai", "openai") + upstream("claude", "anthropic")
    models = "  gpt: {upstream: oai, model: gpt-4o-mini}\n  claude: {upstream: claude, model: claude-sonnet-4-5}\n"
    for fault, headers in FAULTS.items():
        for provider, short in (("openai", "gpt"), ("anthropic", "claude")):
            upstreams += upstream(f"{short}-{fault}", provider, headers)
            models += f"  {short}-{fault}: {{upstream: {short}-{fault}}}\n"
    path = tmp_path_factory.mktemp("gw") / "ingress.yaml"
    path.write_text(f"upstreams:{upstreams}\nmodels:\n{models}")
    proc = GatewayProcess(path)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def sdk(gw):
    with anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0) as c:
        yield c


HELLO = [{"role": "user", "content": "hello there"}]
WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.mark.parametrize("model", BOTH)
def test_plain_message(sdk, model):
    msg = sdk.messages.create(model=model, max_tokens=100, system="Be brief.", messages=HELLO)
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "Echo: hello there"
    assert msg.stop_reason == "end_turn" and msg.model == model and msg.role == "assistant"
    assert msg.usage.output_tokens == 3 and msg.usage.input_tokens > 0


def test_request_reaches_an_openai_upstream_in_openai_format(sdk, mock_upstream):
    sdk.messages.create(model="gpt", max_tokens=100, system="Be brief.", messages=HELLO, stop_sequences=["###"],
                        extra_body={"temperature": 0.5, "top_k": 4})
    seen = mock_upstream.last_request()
    assert seen["path"] == "/v1/chat/completions"
    assert seen["body"] == {"model": "gpt-4o-mini", "max_tokens": 100, "temperature": 0.5, "stop": ["###"],
                            "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "hello there"}]}  # top_k: Anthropic-only


def test_request_reaches_an_anthropic_upstream_with_anthropic_fields_intact(sdk, mock_upstream):
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    sdk.messages.create(model="claude", max_tokens=100, system=system, messages=HELLO, extra_body={"top_k": 4})
    body = mock_upstream.last_request()["body"]
    assert body == {"model": "claude-sonnet-4-5", "max_tokens": 100, "top_k": 4, "system": system,
                    "messages": HELLO}


@pytest.mark.parametrize("model", BOTH)
def test_streaming(sdk, model):
    with sdk.messages.stream(model=model, max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: hello there"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 3 and final.usage.input_tokens > 0


@pytest.mark.parametrize("model", BOTH)
def test_tool_round_trip(sdk, model):
    messages = [{"role": "user", "content": "weather in Paris"}]
    first = sdk.messages.create(model=model, max_tokens=200, tools=[WEATHER], messages=messages,
                                tool_choice={"type": "any"})
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "weather in Paris"}
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": "sunny and 21 degrees"}]}]
    second = sdk.messages.create(model=model, max_tokens=200, tools=[WEATHER], messages=messages)
    assert second.content[0].text == "Tool result: sunny and 21 degrees" and second.stop_reason == "end_turn"


@pytest.mark.parametrize("model", BOTH)
def test_streaming_tool_call(sdk, model):
    with sdk.messages.stream(model=model, max_tokens=200, tools=[WEATHER],
                             messages=[{"role": "user", "content": "weather in Rome please"}]) as stream:
        events = list(stream)
        final = stream.get_final_message()
    deltas = [e for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert len(deltas) > 1  # the arguments arrive in pieces
    call = next(b for b in final.content if b.type == "tool_use")
    assert call.input == {"city": "weather in Rome please"} and final.stop_reason == "tool_use"


@pytest.mark.parametrize("model", BOTH)
def test_images(sdk, mock_upstream, model):
    msg = sdk.messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}])
    assert msg.content[0].text == "Echo: what is this"
    sent = mock_upstream.last_request()["body"]["messages"][0]["content"]
    if model == "gpt":
        assert sent[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    else:
        assert sent[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                       "data": "iVBORw0KGgo="}}


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"], "additionalProperties": False}


@pytest.mark.parametrize("model", BOTH)
def test_json_schema_structured_output(sdk, model):
    msg = sdk.messages.create(model=model, max_tokens=200, messages=[{"role": "user", "content": "plan a trip"}],
                              output_config={"format": {"type": "json_schema", "schema": SCHEMA}})
    assert [b.type for b in msg.content] == ["text"] and msg.stop_reason == "end_turn"
    data = json.loads(msg.content[0].text)
    assert set(data) == {"city", "days"} and isinstance(data["days"], int)


# -- errors ---------------------------------------------------------------------------------------

def post(gw, body: dict) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})


@pytest.mark.parametrize(("body", "message"), [
    ({"model": "gpt", "messages": HELLO}, "max_tokens: Field required"),
    ({"model": "gpt", "max_tokens": 10}, "messages: Field required"),
    ({"model": "gpt", "max_tokens": 0, "messages": HELLO}, "max_tokens: Input should be"),
    ({"max_tokens": 10, "messages": HELLO}, "model: Field required"),
    ({"model": "gpt", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"model": "gpt", "max_tokens": 10, "messages": HELLO, "thinking": {"type": "enabled", "budget_tokens": 2000}},
     "thinking"),
])
def test_invalid_requests_get_anthropic_style_400s(gw, body, message):
    r = post(gw, body)
    assert r.status_code == 400
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert message in data["error"]["message"]


def test_unknown_model_is_not_found_error(sdk):
    with pytest.raises(anthropic.NotFoundError) as exc:
        sdk.messages.create(model="nope", max_tokens=10, messages=HELLO)
    assert exc.value.body["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("short", BOTH)
def test_rate_limit_is_429_with_retry_after(sdk, short):
    with pytest.raises(anthropic.RateLimitError) as exc:
        sdk.messages.create(model=f"{short}-limited", max_tokens=10, messages=HELLO)
    assert exc.value.response.headers["retry-after"] == "7"
    assert exc.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("short", BOTH)
def test_upstream_5xx(sdk, short):
    with pytest.raises(anthropic.InternalServerError) as exc:
        sdk.messages.create(model=f"{short}-broken", max_tokens=10, messages=HELLO)
    assert exc.value.status_code == 502 and exc.value.body["error"]["type"] == "api_error"


def test_overloaded_anthropic_upstream_is_an_overloaded_error(sdk):
    with pytest.raises(anthropic.APIStatusError) as exc:
        sdk.messages.create(model="claude-overloaded", max_tokens=10, messages=HELLO)
    assert exc.value.status_code == 503 and exc.value.body["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("short", BOTH)
def test_context_too_long(sdk, short):
    with pytest.raises(anthropic.BadRequestError) as exc:
        sdk.messages.create(model=f"{short}-tiny-context", max_tokens=10, messages=HELLO)
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    assert "context" in exc.value.message or "too long" in exc.value.message


@pytest.mark.parametrize("short", BOTH)
def test_upstream_bad_request(sdk, short):
    with pytest.raises(anthropic.BadRequestError) as exc:
        sdk.messages.create(model=f"{short}-rejects", max_tokens=10, messages=HELLO)
    assert exc.value.status_code == 400


@pytest.mark.parametrize("short", BOTH)
def test_error_before_the_stream_starts_is_a_plain_error_response(sdk, short):
    with pytest.raises(anthropic.RateLimitError):
        with sdk.messages.stream(model=f"{short}-limited", max_tokens=10, messages=HELLO) as stream:
            list(stream)


@pytest.mark.parametrize("short", BOTH)
def test_stream_failing_mid_way_ends_with_an_error_event(sdk, short):
    texts = []
    with pytest.raises(anthropic.APIStatusError) as exc:
        with sdk.messages.stream(model=f"{short}-dies-mid-stream", max_tokens=50, messages=HELLO) as stream:
            for text in stream.text_stream:
                texts.append(text)
    assert "".join(texts).startswith("Echo:")
    assert "upstream" in str(exc.value.body)
