"""OpenAI ⇄ Gemini translation on documented wire fixtures (tests/fixtures/gemini) and examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgw.errors import GatewayError
from llmgw.translate.gemini import (
    gemini_embeddings_to_openai,
    gemini_to_openai_response,
    openai_to_gemini_embeddings,
    openai_to_gemini_request,
    usage_from_gemini,
)
from llmgw.translate.gemini_schema import to_gemini_schema

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gemini"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}},
            "required": ["location"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_tools_request_matches_the_documented_function_declarations_request() -> None:
    body = {"model": "g", "messages": [{"role": "user", "content": "What's the weather like in Boston?"}],
            "tools": [WEATHER_TOOL]}
    assert openai_to_gemini_request(body) == fixture("request_function_declarations.json")


def test_system_messages_become_system_instruction_and_roles_map_to_user_model() -> None:
    body = {"model": "g", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Again"},
        {"role": "user", "content": [{"type": "text", "text": "and again"}]},
    ]}
    out = openai_to_gemini_request(body)
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Answer in English."}]}
    # consecutive user turns are merged: Gemini expects alternating turns
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "Hi"}]},
        {"role": "model", "parts": [{"text": "Hello!"}]},
        {"role": "user", "parts": [{"text": "Again"}, {"text": "and again"}]},
    ]


def test_generation_config_carries_sampling_limits_and_stop() -> None:
    body = {"model": "g", "messages": [{"role": "user", "content": "x"}], "temperature": 0.2, "top_p": 0.9,
            "max_tokens": 50, "max_completion_tokens": 70, "stop": "END", "n": 2, "seed": 7,
            "presence_penalty": 0.5, "frequency_penalty": 0.25, "reasoning_effort": "low"}
    assert openai_to_gemini_request(body)["generationConfig"] == {
        "temperature": 0.2, "topP": 0.9, "maxOutputTokens": 70, "stopSequences": ["END"], "candidateCount": 2,
        "seed": 7, "presencePenalty": 0.5, "frequencyPenalty": 0.25, "thinkingConfig": {"thinkingBudget": 1024}}


def test_images_inline_data_and_https_urls_as_file_data() -> None:
    body = {"model": "g", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.JPG?size=large", "detail": "high"}},
    ]}]}
    parts = openai_to_gemini_request(body)["contents"][0]["parts"]
    assert parts == [
        {"text": "What is in these?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.JPG?size=large"}},
    ]


def test_image_url_without_a_known_extension_is_a_clear_400() -> None:
    body = {"model": "g", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/render?id=4"}}]}]}
    with pytest.raises(GatewayError) as exc:
        openai_to_gemini_request(body)
    assert exc.value.status == 400
    assert exc.value.param == "messages[0].content[0].image_url.url"
    assert "data: URL" in exc.value.message


def test_tool_round_trip_calls_and_results() -> None:
    body = {"model": "g", "messages": [
        {"role": "user", "content": "Weather in Boston and Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_current_weather",
                                                              "arguments": '{"location": "Boston, MA"}'},
             "extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}}},
            {"id": "call_2", "type": "function", "function": {"name": "get_current_weather",
                                                              "arguments": '{"location": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 22, "unit": "celsius"}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "sunny"},
    ], "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "get_current_weather"}}}
    out = openai_to_gemini_request(body)
    assert out["contents"][1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_current_weather", "args": {"location": "Boston, MA"}},
         "thoughtSignature": "c2lnbmF0dXJl"},
        {"functionCall": {"name": "get_current_weather", "args": {"location": "Paris"}}}]}
    assert out["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_current_weather", "response": {"temperature": 22, "unit": "celsius"}}},
        {"functionResponse": {"name": "get_current_weather", "response": {"content": "sunny"}}}]}
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "ANY",
                                                           "allowedFunctionNames": ["get_current_weather"]}}


@pytest.mark.parametrize(("choice", "mode"), [("none", "NONE"), ("auto", "AUTO"), ("required", "ANY")])
def test_tool_choice_modes(choice: str, mode: str) -> None:
    body = {"model": "g", "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL],
            "tool_choice": choice}
    assert openai_to_gemini_request(body)["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


def test_tool_result_for_an_unknown_call_id_is_a_400() -> None:
    body = {"model": "g", "messages": [{"role": "user", "content": "x"},
                                       {"role": "tool", "tool_call_id": "nope", "content": "1"}]}
    with pytest.raises(GatewayError) as exc:
        openai_to_gemini_request(body)
    assert exc.value.param == "messages[1].tool_call_id"


def test_json_object_and_json_schema_response_formats() -> None:
    base = {"model": "g", "messages": [{"role": "user", "content": "x"}]}
    out = openai_to_gemini_request({**base, "response_format": {"type": "json_object"}})
    assert out["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "rank": {"type": ["integer", "null"]}},
              "required": ["city", "rank"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema, "strict": True}}
    out = openai_to_gemini_request({**base, "response_format": fmt})
    assert out["generationConfig"] == {"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT", "properties": {"city": {"type": "STRING"}, "rank": {"type": "INTEGER", "nullable": True}},
        "required": ["city", "rank"]}}
    native = openai_to_gemini_request({**base, "response_format": fmt}, native_json_schema=True)
    assert native["generationConfig"]["responseJsonSchema"] == schema


def test_schema_dialect_refs_inlined_const_enum_anyof_null() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"step": {"type": "object", "properties": {"n": {"type": "number", "format": "double"}}}},
        "properties": {
            "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}, "minItems": 1},
            "kind": {"const": "plan"},
            "level": {"enum": [1, 2, None]},
            "note": {"anyOf": [{"type": "string", "format": "uri"}, {"type": "null"}]},
        },
    }
    assert to_gemini_schema(schema, "p") == {
        "type": "OBJECT",
        "properties": {
            "steps": {"type": "ARRAY", "minItems": 1,
                      "items": {"type": "OBJECT", "properties": {"n": {"type": "NUMBER", "format": "double"}}}},
            "kind": {"enum": ["plan"]},
            "level": {"type": "STRING", "format": "enum", "enum": ["1", "2"], "nullable": True},
            "note": {"type": "STRING", "nullable": True},
        },
    }


def test_recursive_schema_is_refused_naming_where() -> None:
    schema = {"type": "object", "properties": {"child": {"$ref": "#"}}}
    with pytest.raises(GatewayError) as exc:
        to_gemini_schema(schema, "response_format.json_schema.schema")
    assert "recursive" in exc.value.message and "properties.child" in exc.value.message


def test_unsupported_parameter_is_a_400_naming_it_unless_drop_params() -> None:
    body = {"model": "g", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 5}, "user": "u1"}
    with pytest.raises(GatewayError) as exc:
        openai_to_gemini_request(body)
    assert exc.value.status == 400 and exc.value.param == "logit_bias"
    assert "drop_params" in exc.value.message
    assert "logit_bias" not in json.dumps(openai_to_gemini_request(body, drop_params=True))


def test_response_fixture_to_chat_completion() -> None:
    out = gemini_to_openai_response(fixture("generate_content.json"), "my-gemini", created=1)
    assert out == {
        "id": "chatcmpl-dAb8aPbkNNbUz7IPjbPfqQw", "object": "chat.completion", "created": 1, "model": "my-gemini",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "AI learns patterns from data to make predictions or decisions."}}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20},
    }


def test_function_call_fixture_to_tool_calls() -> None:
    out = gemini_to_openai_response(fixture("generate_content_function_call.json"), "m")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and len(call["id"]) == 29
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_current_weather", "arguments": '{"location":"Boston, MA"}'}


@pytest.mark.parametrize(("reason", "expected"), [
    ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("OTHER", "stop")])
def test_finish_reasons(reason: str, expected: str) -> None:
    data = {"candidates": [{"content": {"parts": [{"text": "x"}], "role": "model"}, "finishReason": reason}]}
    assert gemini_to_openai_response(data, "m")["choices"][0]["finish_reason"] == expected


def test_blocked_prompt_is_a_content_filter_choice() -> None:
    out = gemini_to_openai_response({"promptFeedback": {"blockReason": "SAFETY"}}, "m")
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": None}, "logprobs": None,
                               "finish_reason": "content_filter"}]


def test_thought_parts_are_not_content_and_usage_counts_thinking_and_cache() -> None:
    data = {"candidates": [{"content": {"parts": [{"text": "pondering", "thought": True}, {"text": "42"}]},
                            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 2, "thoughtsTokenCount": 30,
                              "cachedContentTokenCount": 64, "totalTokenCount": 132}}
    out = gemini_to_openai_response(data, "m")
    assert out["choices"][0]["message"]["content"] == "42"
    assert out["usage"] == {"prompt_tokens": 100, "completion_tokens": 32, "total_tokens": 132,
                            "prompt_tokens_details": {"cached_tokens": 64},
                            "completion_tokens_details": {"reasoning_tokens": 30}}
    assert usage_from_gemini(None) is None


def test_embeddings_request_and_response() -> None:
    req = openai_to_gemini_embeddings({"model": "e", "input": ["a", "b"], "dimensions": 3}, "text-embedding-004")
    assert req == {"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 3},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 3}]}
    out = gemini_embeddings_to_openai({"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 0.0]}]}, "e")
    assert out == {"object": "list", "model": "e", "usage": {"prompt_tokens": 0, "total_tokens": 0}, "data": [
        {"object": "embedding", "index": 0, "embedding": [0.5, -1.0]},
        {"object": "embedding", "index": 1, "embedding": [0.25, 0.0]}]}
    with pytest.raises(GatewayError) as exc:
        openai_to_gemini_embeddings({"model": "e", "input": [[1, 2]]}, "m")
    assert exc.value.param == "input"
