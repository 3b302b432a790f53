"""The mock driven by the official openai SDK, as a gateway's upstream would be."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from llmgw.mock import MockUpstream

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city", "days"]},
    },
}


def client(mock: MockUpstream, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock.url + "/v1", api_key="sk-test", max_retries=0, **kwargs)  # type: ignore[arg-type]


def test_chat_echoes_last_user_message_with_consistent_usage(mock: MockUpstream) -> None:
    with client(mock) as c:
        completion = c.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "the quick brown fox"}],
        )
    assert completion.choices[0].message.content == "Echo: the quick brown fox"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5  # words of the answer
    assert completion.usage.prompt_tokens == -(-len("Be brief.the quick brown fox") // 4)
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 5


def test_stream_pieces_join_to_the_answer_and_usage_chunk_comes_last(mock: MockUpstream) -> None:
    with client(mock) as c:
        stream = c.chat.completions.create(
            model="gpt-4o-mini", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "one two three"}],
            extra_headers={"x-mock-words": "9", "x-mock-chunk-words": "2"},
        )
        chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Echo: one two three one two three one two"
    content_chunks = [ch for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(content_chunks) == 5  # 9 words, 2 per chunk
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"


def test_stream_without_include_usage_has_no_usage_chunk(mock: MockUpstream) -> None:
    with client(mock) as c:
        chunks = list(c.chat.completions.create(model="m", stream=True,
                                                messages=[{"role": "user", "content": "hi"}]))
    assert all(ch.choices for ch in chunks)
    assert all(ch.usage is None for ch in chunks)


def test_tools_offered_after_user_message_give_a_tool_call(mock: MockUpstream) -> None:
    with client(mock) as c:
        completion = c.chat.completions.create(
            model="gpt-4o", tools=[WEATHER_TOOL],  # type: ignore[list-item]
            messages=[{"role": "user", "content": "weather in Paris"}],
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "weather in Paris", "days": 3}


def test_streamed_tool_call_arguments_reassemble(mock: MockUpstream) -> None:
    with client(mock) as c:
        chunks = list(c.chat.completions.create(
            model="gpt-4o", stream=True, tools=[WEATHER_TOOL],  # type: ignore[list-item]
            messages=[{"role": "user", "content": "weather in Paris"}],
        ))
    calls = [tc for ch in chunks for tc in (ch.choices[0].delta.tool_calls or [])]
    assert calls[0].id and calls[0].function.name == "get_weather"
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(arguments) == {"city": "weather in Paris", "days": 3}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_result_gets_a_final_text_answer(mock: MockUpstream) -> None:
    with client(mock) as c:
        completion = c.chat.completions.create(
            model="gpt-4o", tools=[WEATHER_TOOL],  # type: ignore[list-item]
            messages=[
                {"role": "user", "content": "weather in Paris"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny 21C"},
            ],
        )
    assert completion.choices[0].message.content == "Tool result: sunny 21C"
    assert completion.choices[0].finish_reason == "stop"


def test_tool_choice_none_answers_with_text(mock: MockUpstream) -> None:
    with client(mock) as c:
        completion = c.chat.completions.create(
            model="gpt-4o", tools=[WEATHER_TOOL], tool_choice="none",  # type: ignore[list-item]
            messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "Echo: hi"


def test_json_object_mode_returns_json(mock: MockUpstream) -> None:
    with client(mock) as c:
        completion = c.chat.completions.create(
            model="gpt-4o", response_format={"type": "json_object"},
            messages=[{"role": "user", "content": "give json"}])
    assert json.loads(completion.choices[0].message.content or "") == {"answer": "Echo: give json"}


def test_json_schema_mode_returns_an_instance_of_the_schema(mock: MockUpstream) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"type": "string", "enum": ["a", "b"]}, "nested": {"$ref": "#/$defs/Inner"},
        },
        "required": ["name", "age", "tags", "kind", "nested"],
        "additionalProperties": False,
        "$defs": {"Inner": {"type": "object", "properties": {"ok": {"type": "boolean"}}}},
    }
    with client(mock) as c:
        completion = c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "describe"}],
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
        )
    value = json.loads(completion.choices[0].message.content or "")
    assert value == {"name": "Echo: describe", "age": 2, "tags": ["Echo: describe"], "kind": "a",
                     "nested": {"ok": True}}


def test_max_tokens_truncates_with_finish_reason_length(mock: MockUpstream) -> None:
    with client(mock) as c:
        completion = c.chat.completions.create(
            model="gpt-4o", max_tokens=2, messages=[{"role": "user", "content": "a b c d e"}])
    assert completion.choices[0].message.content == "Echo: a"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 2


async def test_async_client_plain_and_stream(mock: MockUpstream) -> None:
    async with openai.AsyncOpenAI(base_url=mock.url + "/v1", api_key="k", max_retries=0) as c:
        completion = await c.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "async hello"}])
        stream = await c.chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": "async hello"}])
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream])
    assert completion.choices[0].message.content == "Echo: async hello"
    assert text == "Echo: async hello"


def test_embeddings_are_deterministic_unit_vectors(mock: MockUpstream) -> None:
    with client(mock) as c:
        first = c.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
        again = c.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="float")
        small = c.embeddings.create(model="text-embedding-3-small", input="alpha", dimensions=8)
    assert [d.index for d in first.data] == [0, 1]
    assert len(first.data[0].embedding) == 1536
    assert first.data[0].embedding == pytest.approx(again.data[0].embedding, abs=1e-6)  # base64 f32 vs floats
    assert first.data[0].embedding != first.data[1].embedding
    assert sum(v * v for v in first.data[1].embedding) == pytest.approx(1.0, abs=1e-4)
    assert len(small.data[0].embedding) == 8
    assert first.usage.prompt_tokens == 3  # ceil(5/4) + ceil(4/4)


def test_embeddings_base64_is_little_endian_float32_of_the_same_vector(mock: MockUpstream) -> None:
    import base64
    import struct

    def fetch(fmt: str) -> object:
        response = httpx.post(mock.url + "/v1/embeddings", headers={"authorization": "Bearer k"},
                              json={"model": "e", "input": "alpha", "encoding_format": fmt, "dimensions": 4})
        return response.json()["data"][0]["embedding"]

    encoded = fetch("base64")
    assert isinstance(encoded, str)
    decoded = struct.unpack("<4f", base64.b64decode(encoded))
    assert list(decoded) == pytest.approx(fetch("float"), abs=1e-6)


def test_models_lists_models(mock: MockUpstream) -> None:
    with client(mock) as c:
        ids = [m.id for m in c.models.list()]
    assert "gpt-4o-mini" in ids


def test_missing_bearer_key_is_401_in_openai_shape(mock: MockUpstream) -> None:
    response = httpx.post(mock.url + "/v1/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "Authorization header" in error["message"]


def test_missing_messages_is_400_naming_the_parameter(mock: MockUpstream) -> None:
    with client(mock) as c, pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="m", messages=[])
    assert info.value.code == "missing_required_parameter"
    assert info.value.param == "messages"


def test_no_auth_mode_and_required_key_mode() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    with MockUpstream(require_auth=False) as open_mock:
        assert httpx.post(open_mock.url + "/v1/chat/completions", json=body).status_code == 200
    with MockUpstream(api_key="right") as keyed:
        wrong = httpx.post(keyed.url + "/v1/chat/completions", json=body, headers={"authorization": "Bearer wrong"})
        right = httpx.post(keyed.url + "/v1/chat/completions", json=body, headers={"authorization": "Bearer right"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert right.status_code == 200
