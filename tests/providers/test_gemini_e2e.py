"""The official openai SDK → a real gateway process → the mock upstream speaking Gemini's wire format."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

KEY = "gm-upstream-secret-98765"


def gemini_upstream(name: str, mock_url: str, headers: str = "{}", key: str = KEY, options: str = "{}") -> str:
    return f"""
  {name}:
    provider: gemini
    base_url: {mock_url}/v1beta
    api_key: {key}
    headers: {headers}
    options: {options}
"""


@pytest.fixture(scope="module")
def gw(mock_upstream, tmp_path_factory):
    from support import running_gateway

    url = mock_upstream.url
    ups = "".join([
        gemini_upstream("gem", url),
        gemini_upstream("gem_lenient", url, options="{drop_params: true}"),
        gemini_upstream("gem_429", url, "{x-mock-status: '429', x-mock-retry-after: '7'}"),
        gemini_upstream("gem_503", url, "{x-mock-status: '503'}"),
        gemini_upstream("gem_500", url, "{x-mock-status: '500'}"),
        gemini_upstream("gem_context", url, "{x-mock-context-exceeded: 'true'}"),
        gemini_upstream("gem_cut", url, "{x-mock-cut-after-chunks: '2', x-mock-words: '8'}"),
        gemini_upstream("gem_midstream", url, "{x-mock-error-after-chunks: '2', x-mock-words: '8'}"),
        gemini_upstream("gem_400", url, "{x-mock-status: '400'}"),
    ])
    models = "".join(f"  {m}: {{upstream: {u}, model: gemini-2.0-flash}}\n" for m, u in [
        ("gemini", "gem"), ("lenient", "gem_lenient"), ("throttled", "gem_429"), ("unavailable", "gem_503"),
        ("broken", "gem_500"), ("toolong", "gem_context"), ("cut", "gem_cut"), ("midstream", "gem_midstream"),
        ("rejects", "gem_400")])
    config = f"upstreams:{ups}\nmodels:\n{models}"
    with running_gateway(tmp_path_factory.mktemp("gemini"), config) as proc:
        yield proc


@pytest.fixture
def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="client-key", max_retries=0)


def last_request(mock_upstream) -> dict:
    return httpx.get(f"{mock_upstream.url}/_mock/last-request").json()


def test_plain_completion(client, mock_upstream) -> None:
    out = client.chat.completions.create(model="gemini", messages=[
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello there"}], max_tokens=50)
    assert out.choices[0].message.content == "Echo: hello there"
    assert out.choices[0].finish_reason == "stop"
    assert out.model == "gemini"
    assert out.usage.completion_tokens == 3 and out.usage.prompt_tokens > 0
    sent = last_request(mock_upstream)
    assert sent["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == KEY and "key" not in sent["query"]
    assert sent["body"]["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert sent["body"]["generationConfig"] == {"maxOutputTokens": 50}


def test_streaming(client, mock_upstream) -> None:
    stream = client.chat.completions.create(model="gemini", stream=True,
                                            messages=[{"role": "user", "content": "one two three"}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: one two three"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    sent = last_request(mock_upstream)
    assert sent["path"].endswith(":streamGenerateContent") and sent["query"] == {"alt": "sse"}


def test_max_tokens_truncation_is_length(client) -> None:
    out = client.chat.completions.create(model="gemini", max_completion_tokens=2,
                                         messages=[{"role": "user", "content": "a b c d e"}])
    assert out.choices[0].finish_reason == "length"


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}


def test_tools_round_trip(client, mock_upstream) -> None:
    messages = [{"role": "user", "content": "weather in Paris"}]
    first = client.chat.completions.create(model="gemini", messages=messages, tools=[WEATHER], tool_choice="required")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "weather in Paris"}
    assert call.id.startswith("call_")
    sent = last_request(mock_upstream)["body"]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert "additionalProperties" not in json.dumps(sent["tools"])

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"forecast": "sunny and warm"}'}]
    second = client.chat.completions.create(model="gemini", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == 'Tool result: {"forecast":"sunny and warm"}'
    contents = last_request(mock_upstream)["body"]["contents"]
    assert contents[1]["role"] == "model" and contents[1]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert contents[2]["parts"][0]["functionResponse"] == {"name": "get_weather",
                                                           "response": {"forecast": "sunny and warm"}}


def test_streaming_tool_calls(client) -> None:
    stream = client.chat.completions.create(model="gemini", stream=True, tools=[WEATHER],
                                            messages=[{"role": "user", "content": "Rome"}])
    chunks = [c for c in stream if c.choices]
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id.startswith("call_")
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments) == {"city": "Rome"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_images_are_sent_as_inline_and_file_data(client, mock_upstream) -> None:
    out = client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a/photo.webp"}}]}])
    assert out.choices[0].message.content == "Echo: describe"
    parts = last_request(mock_upstream)["body"]["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    assert parts[2] == {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a/photo.webp"}}


def test_image_url_of_unknown_type_is_a_400(client) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/img?id=1"}}]}])
    assert "data: URL" in exc.value.message


def test_json_schema_response_format(client, mock_upstream) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    out = client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": "Ann is 30"}],
                                         response_format={"type": "json_schema",
                                                          "json_schema": {"name": "p", "schema": schema, "strict": True}})
    data = json.loads(out.choices[0].message.content)
    assert set(data) == {"name", "age"} and isinstance(data["age"], int)
    config = last_request(mock_upstream)["body"]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"]["properties"]["age"] == {"type": "INTEGER"}


def test_unsupported_parameter_400_and_drop_params(client) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": "x"}],
                                       logit_bias={"50256": -100})
    assert exc.value.body["param"] == "logit_bias"
    out = client.chat.completions.create(model="lenient", messages=[{"role": "user", "content": "x"}],
                                         logit_bias={"50256": -100})
    assert out.choices[0].message.content == "Echo: x"


def test_rate_limited_429_with_retry_after(client) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="throttled", messages=[{"role": "user", "content": "x"}])
    assert exc.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize(("model", "status"), [("unavailable", 503), ("broken", 502)])
def test_upstream_5xx(client, model: str, status: int) -> None:
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == status


def test_context_too_long(client) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="toolong", messages=[{"role": "user", "content": "x"}])
    assert exc.value.code == "context_length_exceeded"


def test_bad_request_passes_the_upstream_message(client) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="rejects", messages=[{"role": "user", "content": "x"}])
    assert exc.value.code == "invalid_argument" and "injected by the mock" in exc.value.message


def test_request_gemini_cannot_take_is_refused_before_going_out(client) -> None:
    with pytest.raises(openai.BadRequestError) as exc:  # Gemini needs a user turn besides system text
        client.chat.completions.create(model="gemini", messages=[{"role": "system", "content": "only this"}])
    assert exc.value.body["param"] == "messages"


def test_bad_upstream_credentials_are_a_502_that_leaks_no_key(mock_upstream, start_gateway) -> None:
    config = "upstreams:" + gemini_upstream("gem", mock_upstream.url, key="wrong-key-AIza-0000") + \
        "models:\n  gemini: {upstream: gem, model: gemini-2.0-flash}\n"
    from llmgw.mock import MockUpstream

    with MockUpstream(api_key=KEY) as strict:
        gw = start_gateway(config.replace(mock_upstream.url, strict.url))
        client = openai.OpenAI(base_url=gw.base_url, api_key="client-key", max_retries=0)
        with pytest.raises(openai.APIStatusError) as exc:
            client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 502
    assert exc.value.code == "upstream_auth_failed"
    assert "wrong-key" not in exc.value.response.text and "API key not valid" not in exc.value.response.text


def test_stream_cut_mid_answer_ends_with_an_error_event(client) -> None:
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="cut", stream=True,
                                                messages=[{"role": "user", "content": "x"}]):
            pass


def test_in_stream_error_event_reaches_the_client(client) -> None:
    with pytest.raises(openai.APIError) as exc:
        for _ in client.chat.completions.create(model="midstream", stream=True,
                                                messages=[{"role": "user", "content": "x"}]):
            pass
    assert "overloaded" in str(exc.value)
