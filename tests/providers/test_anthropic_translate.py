"""OpenAI ⇄ Anthropic request and response translation, on the recorded wire fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmgw.translate.anthropic import (
    JSON_OBJECT_INSTRUCTION,
    JSON_TOOL_NAME,
    TranslationError,
    anthropic_to_openai_request,
    anthropic_to_openai_response,
    openai_to_anthropic_request,
    openai_to_anthropic_response,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def to_anthropic(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return openai_to_anthropic_request(body, "claude-x", stream=kw.pop("stream", False), **kw)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# -- OpenAI request → Anthropic request -------------------------------------------------------------

def test_system_and_developer_messages_become_the_system_field_in_order() -> None:
    out = to_anthropic({"model": "m", "messages": [
        {"role": "system", "content": "Be terse."}, user("hi"), {"role": "assistant", "content": "hello"},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]}, user("again")]})
    assert out["system"] == [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Answer in French."}]
    assert out["messages"] == [user("hi"), {"role": "assistant", "content": "hello"}, user("again")]
    assert out["model"] == "claude-x" and out["max_tokens"] == 4096 and "stream" not in out


def test_consecutive_user_messages_merge_into_one_turn() -> None:
    out = to_anthropic({"model": "m", "messages": [user("one"), user("two")]})
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "one"},
                                                            {"type": "text", "text": "two"}]}]


def test_images_from_https_and_data_urls() -> None:
    out = to_anthropic({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}]}]})
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}}]


@pytest.mark.parametrize("url", ["ftp://x/y.png", "data:image/png,notbase64"])
def test_unusable_image_urls_are_a_400_naming_the_part(url: str) -> None:
    with pytest.raises(TranslationError) as exc:
        to_anthropic({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}]}]})
    assert exc.value.param == "messages[0].content[0].image_url"


def test_tool_definitions_and_the_tool_round_trip() -> None:
    body = fixture("openai/chat_request_tool_result.json")
    out = to_anthropic(body)
    fn = body["tools"][0]["function"]
    assert out["tools"] == [{"name": fn["name"], "description": fn["description"], "input_schema": fn["parameters"]}]
    assert out["tool_choice"] == {"type": "auto"}
    assert out["messages"] == [
        user("What's the weather like in Boston today?"),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
                                           "input": {"location": "Boston, MA"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_abc123",
                                      "content": body["messages"][2]["content"]}]}]


def test_parallel_tool_results_and_a_following_user_message_share_one_turn() -> None:
    calls = [{"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in (1, 2)]
    out = to_anthropic({"model": "m", "tools": [{"type": "function", "function": {"name": "f"}}], "messages": [
        user("go"), {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "a"}, {"role": "tool", "tool_call_id": "c2", "content": "b"},
        user("and now?")]})
    assert [b["type"] for b in out["messages"][1]["content"]] == ["tool_use", "tool_use"]
    assert out["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "c1", "content": "a"},
        {"type": "tool_result", "tool_use_id": "c2", "content": "b"}, {"type": "text", "text": "and now?"}]}


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("auto", None, {"type": "auto"}),
    ("required", None, {"type": "any"}),
    ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
    ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
])
def test_tool_choice_mapping(choice: Any, parallel: Any, expected: dict[str, Any]) -> None:
    body = {"model": "m", "messages": [user("x")], "tools": TOOLS, "tool_choice": choice}
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert to_anthropic(body)["tool_choice"] == expected


def test_tool_choice_none_omits_tools_unless_the_history_has_tool_calls() -> None:
    out = to_anthropic({"model": "m", "messages": [user("x")], "tools": TOOLS, "tool_choice": "none"})
    assert "tools" not in out and "tool_choice" not in out
    history = fixture("openai/chat_request_tool_result.json") | {"tool_choice": "none"}
    out = to_anthropic(history)
    assert out["tool_choice"] == {"type": "none"} and len(out["tools"]) == 1


def test_json_schema_becomes_a_forced_tool() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    out = to_anthropic({"model": "m", "messages": [user("x")], "response_format": {
        "type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}}})
    assert out["tools"][0]["name"] == JSON_TOOL_NAME and out["tools"][0]["input_schema"] == schema
    assert "place" in out["tools"][0]["description"]
    assert out["tool_choice"] == {"type": "tool", "name": JSON_TOOL_NAME}


def test_json_schema_with_tools_is_refused() -> None:
    with pytest.raises(TranslationError) as exc:
        to_anthropic({"model": "m", "messages": [user("x")], "tools": TOOLS, "response_format": {
            "type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}})
    assert exc.value.param == "response_format"


def test_json_object_adds_a_system_instruction() -> None:
    out = to_anthropic({"model": "m", "messages": [{"role": "system", "content": "S"}, user("x")],
                        "response_format": {"type": "json_object"}})
    assert out["system"] == [{"type": "text", "text": "S"}, {"type": "text", "text": JSON_OBJECT_INSTRUCTION}]


def test_sampling_stop_and_token_limits() -> None:
    out = to_anthropic({"model": "m", "messages": [user("x")], "temperature": 0.2, "top_p": 0.9, "top_k": 5,
                        "stop": "END", "max_tokens": 50, "max_completion_tokens": 70, "user": "u-1"}, stream=True)
    assert (out["temperature"], out["top_p"], out["top_k"]) == (0.2, 0.9, 5)
    assert out["stop_sequences"] == ["END"] and out["max_tokens"] == 70 and out["stream"] is True
    assert out["metadata"] == {"user_id": "u-1"}
    assert to_anthropic({"model": "m", "messages": [user("x")], "stop": ["a", "b"], "max_tokens": 9}) \
        | {} == {"model": "claude-x", "messages": [user("x")], "max_tokens": 9, "stop_sequences": ["a", "b"]}
    assert to_anthropic({"model": "m", "messages": [user("x")]}, default_max_tokens=123)["max_tokens"] == 123


@pytest.mark.parametrize(("param", "value"), [("n", 2), ("logprobs", True), ("presence_penalty", 0.5),
                                              ("frequency_penalty", 1), ("seed", 7), ("logit_bias", {"1": 2}),
                                              ("no_such_param", 1)])
def test_unsupported_parameters_are_a_400_or_dropped(param: str, value: Any) -> None:
    body = {"model": "m", "messages": [user("x")], param: value}
    with pytest.raises(TranslationError) as exc:
        to_anthropic(body)
    assert exc.value.param == param and param in exc.value.message and exc.value.code == "unsupported_parameter"
    assert param not in to_anthropic(body, drop_params=True)


def test_neutral_values_and_ignored_parameters_pass_silently() -> None:
    out = to_anthropic({"model": "m", "messages": [user("x")], "n": 1, "logprobs": False, "presence_penalty": 0,
                        "store": True, "metadata": {"a": "b"}, "stream_options": {"include_usage": True}, "seed": None})
    assert set(out) == {"model", "messages", "max_tokens"}


def test_cache_control_passes_through_on_parts_messages_and_tools() -> None:
    eph = {"type": "ephemeral"}
    out = to_anthropic({"model": "m", "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": eph}],
                        "messages": [
                            {"role": "system", "content": [{"type": "text", "text": "big", "cache_control": eph}]},
                            {"role": "user", "content": "question", "cache_control": eph}]})
    assert out["system"] == [{"type": "text", "text": "big", "cache_control": eph}]
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "question", "cache_control": eph}]}]
    assert out["tools"][0]["cache_control"] == eph


def test_audio_and_file_parts_are_a_400_naming_the_part() -> None:
    with pytest.raises(TranslationError) as exc:
        to_anthropic({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "listen"}, {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]})
    assert exc.value.param == "messages[0].content[1].type" and "input_audio" in exc.value.message


def test_invalid_tool_call_arguments_in_history_are_a_400() -> None:
    with pytest.raises(TranslationError) as exc:
        to_anthropic({"model": "m", "messages": [user("x"), {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]})
    assert exc.value.param == "messages[1].tool_calls[0].function.arguments"


# -- Anthropic response → OpenAI response --------------------------------------------------------

def test_text_message_to_chat_completion() -> None:
    msg = fixture("anthropic/message.json")
    out = anthropic_to_openai_response(msg, "client-model", created=1)
    text = "".join(b["text"] for b in msg["content"] if b["type"] == "text")
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": text},
                               "finish_reason": "stop", "logprobs": None}]
    assert out["model"] == "client-model" and out["object"] == "chat.completion" and out["id"] == msg["id"]


def test_tool_use_message_to_tool_calls() -> None:
    msg = fixture("anthropic/message_tool_use.json")
    out = anthropic_to_openai_response(msg, "m")
    choice = out["choices"][0]
    block = next(b for b in msg["content"] if b["type"] == "tool_use")
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [{"id": block["id"], "type": "function", "function": {
        "name": block["name"], "arguments": json.dumps(block["input"], separators=(",", ":"))}}]


def test_usage_counts_cached_tokens_inside_prompt_tokens() -> None:
    msg = fixture("anthropic/message.json") | {"usage": {"input_tokens": 10, "cache_read_input_tokens": 100,
                                                         "cache_creation_input_tokens": 20, "output_tokens": 7}}
    assert anthropic_to_openai_response(msg, "m")["usage"] == {
        "prompt_tokens": 130, "completion_tokens": 7, "total_tokens": 137,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_creation_tokens": 20}}


@pytest.mark.parametrize(("stop", "finish"), [("end_turn", "stop"), ("max_tokens", "length"),
                                              ("stop_sequence", "stop"), ("tool_use", "tool_calls"),
                                              ("refusal", "content_filter")])
def test_finish_reasons(stop: str, finish: str) -> None:
    msg = fixture("anthropic/message.json") | {"stop_reason": stop, "stop_sequence": "END" if stop == "stop_sequence" else None}
    choice = anthropic_to_openai_response(msg, "m")["choices"][0]
    assert choice["finish_reason"] == finish
    assert choice.get("stop_reason") == ("END" if stop == "stop_sequence" else None)


def test_the_json_mode_tool_comes_back_as_text() -> None:
    msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": "c", "stop_reason": "tool_use",
           "content": [{"type": "tool_use", "id": "t", "name": JSON_TOOL_NAME, "input": {"city": "Paris"}}],
           "usage": {"input_tokens": 1, "output_tokens": 2}}
    choice = anthropic_to_openai_response(msg, "m")["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": '{"city":"Paris"}'}
    assert choice["finish_reason"] == "stop"


def test_not_a_message_is_rejected() -> None:
    with pytest.raises(ValueError):
        anthropic_to_openai_response({"type": "error"}, "m")


# -- Anthropic request → OpenAI request → Anthropic request (the /v1/messages dialect) ---------

@pytest.mark.parametrize("name", ["anthropic/request_tools.json", "anthropic/request_cache_control.json"])
def test_anthropic_requests_survive_the_round_trip(name: str) -> None:
    original = fixture(name)
    canonical = anthropic_to_openai_request(original, keep_extensions=True)
    back = openai_to_anthropic_request(canonical, original["model"], stream=False)
    if isinstance(original.get("system"), str):
        original = original | {"system": [{"type": "text", "text": original["system"]}]}
    if original.get("tools"):  # Anthropic's default, spelled out
        original = {"tool_choice": {"type": "auto"}} | original
    assert back == original


def test_a_full_conversation_survives_the_round_trip() -> None:
    eph = {"type": "ephemeral"}
    original = {
        "model": "claude-x", "max_tokens": 100, "temperature": 0.5, "top_k": 3, "stop_sequences": ["###"],
        "system": [{"type": "text", "text": "You are helpful.", "cache_control": eph}],
        "metadata": {"user_id": "u"},
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": "iVBORw0KGgo="}}]},
            {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                                              {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "boom",
                                          "is_error": True},
                                         {"type": "text", "text": "so?"}]},
        ],
    }
    canonical = anthropic_to_openai_request(original, keep_extensions=True)
    assert openai_to_anthropic_request(canonical, "claude-x", stream=False) == original


def test_without_extensions_the_canonical_request_is_plain_openai() -> None:
    canonical = anthropic_to_openai_request(fixture("anthropic/request_cache_control.json") | {"top_k": 3})
    assert "cache_control" not in json.dumps(canonical) and "top_k" not in canonical
    assert canonical["messages"][0] == {"role": "system", "content": [
        {"type": "text", "text": "You are an AI assistant tasked with analyzing literary works."},
        {"type": "text", "text": "<the entire contents of Pride and Prejudice>"}]}


def test_anthropic_tool_choice_and_images_to_openai() -> None:
    out = anthropic_to_openai_request({"model": "c", "max_tokens": 5, "stream": True,
                                       "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                                       "tool_choice": {"type": "tool", "name": "f"},
                                       "messages": [{"role": "user", "content": [
                                           {"type": "image", "source": {"type": "url", "url": "https://x/i.png"}}]}]})
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert out["messages"][0]["content"] == [{"type": "image_url", "image_url": {"url": "https://x/i.png"}}]
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}


def test_thinking_and_server_tools_are_refused() -> None:
    base = {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(TranslationError) as exc:
        anthropic_to_openai_request(base | {"thinking": {"type": "enabled", "budget_tokens": 1024}})
    assert exc.value.param == "thinking"
    with pytest.raises(TranslationError) as exc:
        anthropic_to_openai_request(base | {"tools": [{"type": "web_search_20250305", "name": "web_search"}]})
    assert exc.value.param == "tools[0]"


# -- OpenAI response → Anthropic response ------------------------------------------------------

def test_chat_completion_to_message() -> None:
    resp = fixture("openai/chat_completion.json")
    out = openai_to_anthropic_response(resp, "claude-client")
    usage = resp["usage"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    assert out["content"] == [{"type": "text", "text": resp["choices"][0]["message"]["content"]}]
    assert out["type"] == "message" and out["model"] == "claude-client" and out["id"].startswith("msg_")
    assert out["stop_reason"] == "end_turn" and out["stop_sequence"] is None
    assert out["usage"] == {"input_tokens": usage["prompt_tokens"] - cached, "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": cached, "output_tokens": usage["completion_tokens"]}


def test_tool_calls_to_tool_use_blocks() -> None:
    resp = fixture("openai/chat_completion_tool_calls.json")
    out = openai_to_anthropic_response(resp, "c")
    call = resp["choices"][0]["message"]["tool_calls"][0]
    assert out["stop_reason"] == "tool_use"
    assert out["content"][-1] == {"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
                                  "input": json.loads(call["function"]["arguments"])}


def test_anthropic_message_survives_the_round_trip() -> None:
    for name in ("anthropic/message.json", "anthropic/message_tool_use.json"):
        msg = fixture(name)
        back = openai_to_anthropic_response(anthropic_to_openai_response(msg, msg["model"]), msg["model"])
        usage = {k: msg["usage"].get(k, 0) for k in ("input_tokens", "cache_creation_input_tokens",
                                                     "cache_read_input_tokens", "output_tokens")}
        assert back == {k: msg[k] for k in ("id", "type", "role", "model", "content", "stop_reason",
                                            "stop_sequence")} | {"usage": usage}
