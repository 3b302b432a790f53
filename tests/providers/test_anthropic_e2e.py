"""The official openai SDK → a real gateway process → the mock speaking Anthropic's Messages API."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from support import GatewayProcess

FAULTS = {
    "limited": "{x-mock-status: '429', x-mock-retry-after: '7'}",
    "overloaded": "{x-mock-status: '529', x-mock-retry-after: '2'}",
    "broken": "{x-mock-status: '500'}",
    "tiny-context": "{x-mock-context-exceeded: 'true'}",
    "rejects": "{x-mock-status: '400'}",
    "badkey": "{x-mock-status: '401'}",
    "dies-mid-stream": "{x-mock-error-after-chunks: '2'}",
    "cuts": "{x-mock-cut-after-chunks: '2'}",
}


@pytest.fixture(scope="module")
def gw(mock_upstream, tmp_path_factory):
    upstreams = "".join(f"""
  {name}:
    provider: anthropic
    base_url: {mock_upstream.url}/v1
    api_key: sk-ant-upstream-secret-42
    headers: {headers}
""" for name, headers in FAULTS.items())
    path = tmp_path_factory.mktemp("gw") / "anthropic.yaml"
    path.write_text(f"""
upstreams:
  claude:
    provider: anthropic
    base_url: {mock_upstream.url}/v1
    api_key: sk-ant-upstream-secret-42
    options: {{default_max_tokens: 333}}
  lenient:
    provider: anthropic
    base_url: {mock_upstream.url}/v1
    api_key: sk-ant-upstream-secret-42
    options: {{drop_params: true}}
{upstreams}
models:
  claude: {{upstream: claude, model: claude-sonnet-4-5}}
  lenient: {{upstream: lenient, model: claude-sonnet-4-5}}
""" + "".join(f"  {name}: {{upstream: {name}}}\n" for name in FAULTS))
    proc = GatewayProcess(path)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def sdk(gw):
    with openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0) as c:
        yield c


MSG = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                            "required": ["city"]}}}]


def test_plain_completion_speaks_anthropic_upstream(sdk, mock_upstream):
    resp = sdk.chat.completions.create(model="claude", messages=MSG, temperature=0.3, stop=["###"])
    assert resp.choices[0].message.content == "Echo: hello there"
    assert resp.choices[0].finish_reason == "stop" and resp.model == "claude"
    assert resp.usage.completion_tokens == 3 and resp.usage.prompt_tokens > 0
    seen = mock_upstream.last_request()
    assert seen["path"] == "/v1/messages"
    assert seen["headers"]["x-api-key"] == "sk-ant-upstream-secret-42"
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    assert seen["body"] == {"model": "claude-sonnet-4-5", "max_tokens": 333, "temperature": 0.3,
                            "stop_sequences": ["###"], "system": [{"type": "text", "text": "Be brief."}],
                            "messages": [{"role": "user", "content": "hello there"}]}


def test_streaming_with_and_without_usage(sdk):
    chunks = list(sdk.chat.completions.create(model="claude", messages=MSG, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: hello there"
    assert all(c.choices for c in chunks)  # no choice-less chunk unless include_usage was asked for
    assert chunks[-1].choices[0].finish_reason == "stop"
    chunks = list(sdk.chat.completions.create(model="claude", messages=MSG, stream=True,
                                                     stream_options={"include_usage": True}))
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage and usage[-1].completion_tokens == 3


def test_tool_round_trip(sdk, mock_upstream):
    c = sdk
    messages: list[Any] = [{"role": "user", "content": "weather in Paris"}]
    first = c.chat.completions.create(model="claude", messages=messages, tools=WEATHER, tool_choice="required")
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "weather in Paris"}
    assert mock_upstream.last_request()["body"]["tool_choice"] == {"type": "any"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny and 21 degrees"}]
    second = c.chat.completions.create(model="claude", messages=messages, tools=WEATHER)
    assert second.choices[0].message.content == "Tool result: sunny and 21 degrees"
    assert second.choices[0].finish_reason == "stop"
    sent = mock_upstream.last_request()["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"][-1]["type"] == "tool_use" and sent[2]["content"][0]["tool_use_id"] == call.id


def test_streaming_tool_call_arguments_arrive_in_pieces(sdk):
    chunks = list(sdk.chat.completions.create(model="claude", stream=True, tools=WEATHER,
                                                     messages=[{"role": "user", "content": "weather in Rome please"}]))
    pieces = [tc.function.arguments for c in chunks for tc in (c.choices[0].delta.tool_calls or ())
              if tc.function and tc.function.arguments]
    assert len(pieces) > 1
    assert json.loads("".join(pieces)) == {"city": "weather in Rome please"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_images_are_sent_as_anthropic_image_blocks(sdk, mock_upstream):
    resp = sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}])
    assert resp.choices[0].message.content == "Echo: what is this"
    blocks = mock_upstream.last_request()["body"]["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"], "additionalProperties": False}


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_answers_are_json_text(sdk, stream):
    fmt = {"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA, "strict": True}}
    resp = sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "plan a trip"}],
                                              response_format=fmt, stream=stream)
    if stream:
        chunks = list(resp)
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
        assert not any(c.choices[0].delta.tool_calls for c in chunks)
    else:
        text, finish = resp.choices[0].message.content, resp.choices[0].finish_reason
        assert resp.choices[0].message.tool_calls is None
    assert json.loads(text) == {"city": "plan a trip", "days": 3} and finish == "stop"


def test_prompt_cache_tokens_are_reported_as_cached_tokens(sdk):
    system = [{"type": "text", "text": "long shared instructions " * 40, "cache_control": {"type": "ephemeral"}}]
    c = sdk
    usage = [c.chat.completions.create(model="claude", messages=[{"role": "system", "content": system},
                                                                  {"role": "user", "content": f"question {i}"}]).usage
             for i in range(2)]
    assert usage[0].prompt_tokens_details.cached_tokens == 0
    assert usage[1].prompt_tokens_details.cached_tokens > 0
    assert usage[1].prompt_tokens == usage[0].prompt_tokens  # cached tokens stay counted in prompt_tokens


# -- errors ---------------------------------------------------------------------------------------

def test_unsupported_parameter_is_a_400_naming_it_or_dropped(sdk):
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.chat.completions.create(model="claude", messages=MSG, presence_penalty=0.5)
    assert exc.value.body["param"] == "presence_penalty" and "presence_penalty" in exc.value.message
    resp = sdk.chat.completions.create(model="lenient", messages=MSG, presence_penalty=0.5, seed=1)
    assert resp.choices[0].message.content == "Echo: hello there"


def test_rate_limit_is_429_with_retry_after(sdk):
    with pytest.raises(openai.RateLimitError) as exc:
        sdk.chat.completions.create(model="limited", messages=MSG)
    assert exc.value.status_code == 429 and exc.value.response.headers["retry-after"] == "7"


def test_overloaded_is_503_and_api_error_is_502(sdk):
    with pytest.raises(openai.InternalServerError) as exc:
        sdk.chat.completions.create(model="overloaded", messages=MSG)
    assert exc.value.status_code == 503 and exc.value.response.headers["retry-after"] == "2"
    assert exc.value.body["code"] == "upstream_overloaded"
    with pytest.raises(openai.InternalServerError) as exc:
        sdk.chat.completions.create(model="broken", messages=MSG, stream=True)
    assert exc.value.status_code == 502


def test_context_too_long_is_context_length_exceeded(sdk):
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.chat.completions.create(model="tiny-context", messages=MSG)
    assert exc.value.code == "context_length_exceeded" and "prompt is too long" in exc.value.message


def test_upstream_bad_request_passes_through(sdk):
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.chat.completions.create(model="rejects", messages=MSG)
    assert exc.value.status_code == 400 and "Invalid request" in exc.value.message


def test_upstream_credential_failure_is_502_without_upstream_text(sdk):
    with pytest.raises(openai.InternalServerError) as exc:
        sdk.chat.completions.create(model="badkey", messages=MSG)
    assert exc.value.status_code == 502 and "x-api-key" not in exc.value.message


@pytest.mark.parametrize("model", ["dies-mid-stream", "cuts"])
def test_stream_failing_after_content_ends_with_an_error_event(sdk, model):
    received = []
    with pytest.raises(openai.APIError) as exc, \
            sdk.chat.completions.create(model=model, messages=MSG, stream=True) as stream:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received).startswith("Echo:")
    assert "upstream" in exc.value.message
