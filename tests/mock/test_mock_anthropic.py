"""The mock driven by the official anthropic SDK."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from llmgw.mock import MockUpstream

WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def client(mock: MockUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mock.url, api_key="sk-ant-test", max_retries=0)


def test_message_echoes_with_usage(mock: MockUpstream) -> None:
    with client(mock) as c:
        message = c.messages.create(model="claude-mock", max_tokens=100, system="be nice",
                                    messages=[{"role": "user", "content": "hello claude"}])
    assert message.content[0].type == "text"
    assert message.content[0].text == "Echo: hello claude"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 3
    assert message.usage.input_tokens == -(-len("be nicehello claude") // 4)
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0


def test_stream_text_and_final_message(mock: MockUpstream) -> None:
    with client(mock) as c:
        with c.messages.stream(model="claude", max_tokens=100,
                               messages=[{"role": "user", "content": "stream me please"}]) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    assert text == "Echo: stream me please"
    assert final.usage.output_tokens == 4
    assert final.stop_reason == "end_turn"


def test_raw_stream_event_order(mock: MockUpstream) -> None:
    with client(mock) as c:
        events = list(c.messages.create(model="claude", max_tokens=100, stream=True,
                                        messages=[{"role": "user", "content": "a b"}],
                                        extra_headers={"x-mock-chunk-words": "2"}))
    assert [e.type for e in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]


def test_tool_use_block_after_a_text_block(mock: MockUpstream) -> None:
    with client(mock) as c:
        message = c.messages.create(model="claude", max_tokens=200, tools=[WEATHER],  # type: ignore[list-item]
                                    messages=[{"role": "user", "content": "weather in Rome"}])
    assert message.stop_reason == "tool_use"
    text, tool = message.content
    assert text.type == "text" and text.text == "Calling get_weather."
    assert tool.type == "tool_use" and tool.name == "get_weather"
    assert tool.input == {"city": "weather in Rome"}
    assert tool.id.startswith("toolu_")


def test_streamed_tool_use_input_reassembles(mock: MockUpstream) -> None:
    with client(mock) as c:
        with c.messages.stream(model="claude", max_tokens=200, tools=[WEATHER],  # type: ignore[list-item]
                               messages=[{"role": "user", "content": "weather in Rome"}]) as stream:
            final = stream.get_final_message()
    tool = final.content[1]
    assert tool.type == "tool_use" and tool.input == {"city": "weather in Rome"}
    assert final.stop_reason == "tool_use"


def test_tool_result_gets_final_answer(mock: MockUpstream) -> None:
    with client(mock) as c:
        message = c.messages.create(model="claude", max_tokens=200, tools=[WEATHER],  # type: ignore[list-item]
                                    messages=[
                                        {"role": "user", "content": "weather in Rome"},
                                        {"role": "assistant", "content": [
                                            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                             "input": {"city": "Rome"}}]},
                                        {"role": "user", "content": [
                                            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "hot 30C"}]},
                                    ])
    assert message.content[0].text == "Tool result: hot 30C"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"


def test_max_tokens_is_required(mock: MockUpstream) -> None:
    response = httpx.post(mock.url + "/v1/messages",
                          headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
                          json={"model": "claude", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error"
    assert body["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}


def test_max_tokens_cut_gives_stop_reason_max_tokens(mock: MockUpstream) -> None:
    with client(mock) as c:
        message = c.messages.create(model="claude", max_tokens=2,
                                    messages=[{"role": "user", "content": "one two three"}])
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == "Echo: one"  # type: ignore[union-attr]


@pytest.mark.parametrize("headers, status, kind", [
    ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),
    ({"x-api-key": "k"}, 400, "invalid_request_error"),
])
def test_required_headers(mock: MockUpstream, headers: dict[str, str], status: int, kind: str) -> None:
    response = httpx.post(mock.url + "/v1/messages", headers=headers,
                          json={"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == status
    assert response.json()["error"]["type"] == kind


def test_cache_control_creates_then_reads_the_cached_prefix(mock: MockUpstream) -> None:
    system = [{"type": "text", "text": "You analyse books. " * 40, "cache_control": {"type": "ephemeral"}}]
    prefix_tokens = -(-len(system[0]["text"]) // 4)  # type: ignore[arg-type]
    with client(mock) as c:
        first = c.messages.create(model="claude", max_tokens=50, system=system,  # type: ignore[arg-type]
                                  messages=[{"role": "user", "content": "themes?"}])
        second = c.messages.create(model="claude", max_tokens=50, system=system,  # type: ignore[arg-type]
                                   messages=[{"role": "user", "content": "characters?"}])
    assert first.usage.cache_creation_input_tokens == prefix_tokens
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.cache_read_input_tokens == prefix_tokens
    assert second.usage.input_tokens == -(-len(system[0]["text"] + "characters?") // 4) - prefix_tokens  # type: ignore[operator]


async def test_async_client(mock: MockUpstream) -> None:
    async with anthropic.AsyncAnthropic(base_url=mock.url, api_key="k", max_retries=0) as c:
        message = await c.messages.create(model="claude", max_tokens=10,
                                          messages=[{"role": "user", "content": "async"}])
    assert message.content[0].text == "Echo: async"  # type: ignore[union-attr]
