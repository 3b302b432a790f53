"""Anthropic stream events ⇄ OpenAI chunks, on the recorded fixtures, and the adapter's stream reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event

from llmgw._core import SseParser
from llmgw.providers.anthropic import AnthropicStreamReader
from llmgw.translate.anthropic import JSON_TOOL_NAME
from llmgw.translate.anthropic_stream import AnthropicStreamError, AnthropicToOpenAIStream, OpenAIToAnthropicStream
from llmgw.transport import UpstreamProtocolError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def sse_events(name: str) -> list[tuple[str, dict[str, Any]]]:
    parser = SseParser()
    events = parser.feed((FIXTURES / name).read_bytes())
    return [(e.event or "", json.loads(e.data)) for e in events if e.data != "[DONE]"]


def translate(events: list[tuple[str, dict[str, Any]]], **kw: Any) -> list[dict[str, Any]]:
    t = AnthropicToOpenAIStream("client-model", **kw)
    chunks = [c for kind, data in events for c in t.event(kind, data)]
    return chunks + t.finish()


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """What an OpenAI client builds from the chunks."""
    text, calls, finish, usage = "", {}, None, None
    for c in chunks:
        usage = c.get("usage") or usage
        for ch in c["choices"]:
            d = ch["delta"]
            text += d.get("content") or ""
            for tc in d.get("tool_calls") or ():
                call = calls.setdefault(tc["index"], {"id": None, "name": None, "arguments": ""})
                call["id"] = tc.get("id") or call["id"]
                call["name"] = (tc.get("function") or {}).get("name") or call["name"]
                call["arguments"] += (tc.get("function") or {}).get("arguments") or ""
            finish = ch["finish_reason"] or finish
    return {"text": text, "calls": [calls[k] for k in sorted(calls)], "finish": finish, "usage": usage}


def test_text_stream() -> None:
    events = sse_events("anthropic/message_stream.sse")
    chunks = translate(events)
    expected = "".join(d["delta"]["text"] for k, d in events if k == "content_block_delta")
    got = assemble(chunks)
    assert got["text"] == expected and got["finish"] == "stop"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["model"] == "client-model" and c["object"] == "chat.completion.chunk" for c in chunks)
    final_output = [d["usage"]["output_tokens"] for k, d in events if k == "message_delta"][-1]
    assert got["usage"]["completion_tokens"] == final_output
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"  # usage rides on the finish chunk


def test_include_usage_sends_a_final_chunk_without_choices() -> None:
    chunks = translate(sse_events("anthropic/message_stream.sse"), include_usage=True)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert "usage" not in chunks[-2] and chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_tool_use_stream_gives_incremental_tool_call_arguments() -> None:
    chunks = translate(sse_events("anthropic/message_stream_tool_use.sse"))
    got = assemble(chunks)
    assert got["text"] == "Okay, let's check the weather for San Francisco, CA:"
    assert got["calls"] == [{"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
                             "arguments": '{"location": "San Francisco, CA"}'}]
    assert got["finish"] == "tool_calls"
    argument_chunks = [c for c in chunks if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]
    assert len(argument_chunks) == 3  # the start, then one per non-empty input_json_delta


def test_json_mode_tool_streams_as_content() -> None:
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 3}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "t", "name": JSON_TOOL_NAME, "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"a"'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": ": 1}"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    got = assemble(translate(events))
    assert got["text"] == '{"a": 1}' and got["calls"] == [] and got["finish"] == "stop"


def test_in_stream_error_event_raises() -> None:
    with pytest.raises(AnthropicStreamError) as exc:
        translate(sse_events("anthropic/stream_error.sse"))
    assert exc.value.error_type == "overloaded_error"


def test_stream_ending_before_message_stop_raises() -> None:
    events = [e for e in sse_events("anthropic/message_stream.sse") if e[0] != "message_stop"]
    with pytest.raises(AnthropicStreamError):
        translate(events)


def test_reader_handles_bytes_split_anywhere() -> None:
    raw = (FIXTURES / "anthropic/message_stream_tool_use.sse").read_bytes()
    whole = AnthropicStreamReader("up", "m")
    expected = whole.feed(raw) + whole.finish()
    reader = AnthropicStreamReader("up", "m")
    got = [c for i in range(0, len(raw), 7) for c in reader.feed(raw[i:i + 7])] + reader.finish()
    for a, b in zip(got, expected, strict=True):
        assert a["choices"] == b["choices"]


def test_reader_turns_breakage_into_upstream_protocol_errors() -> None:
    reader = AnthropicStreamReader("up", "m")
    # the text before the error event is delivered first; the error comes on the next call
    chunks = reader.feed((FIXTURES / "anthropic/stream_error.sse").read_bytes())
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "Hello"]
    with pytest.raises(UpstreamProtocolError, match="overloaded_error"):
        reader.finish()
    with pytest.raises(UpstreamProtocolError, match="overloaded_error"):
        AnthropicStreamReader("up", "m").feed(
            b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}\n\n')
    with pytest.raises(UpstreamProtocolError, match="malformed"):
        AnthropicStreamReader("up", "m").feed(b'event: message_start\ndata: {"type": "mess\n\n')
    cut = AnthropicStreamReader("up", "m")
    cut.feed((FIXTURES / "anthropic/message_stream.sse").read_bytes().split(b"event: message_delta")[0])
    with pytest.raises(UpstreamProtocolError, match="before message_stop"):
        cut.finish()


# -- OpenAI chunks → Anthropic events (the /v1/messages dialect) ---------------------------------

def openai_chunks(name: str) -> list[dict[str, Any]]:
    return [data for _, data in sse_events(name)]


def anthropic_message(events: list[tuple[str, dict[str, Any]]]) -> Any:
    """What the anthropic SDK's stream accumulator builds from the events."""
    snapshot, bufs = None, {}
    for _, data in events:
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
    return snapshot


def encode(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    s = OpenAIToAnthropicStream("claude-client")
    return [e for c in chunks for e in s.chunk(c)] + s.end()


def test_openai_text_stream_to_anthropic_events() -> None:
    chunks = openai_chunks("openai/chat_completion_stream.sse")
    events = encode(chunks)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names[1] == "content_block_start" and names[-3] == "content_block_stop"
    assert all(n == d["type"] for n, d in events)
    msg = anthropic_message(events)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == text
    assert msg.stop_reason == "end_turn" and msg.model == "claude-client"


def test_openai_tool_call_stream_to_tool_use_events() -> None:
    chunks = openai_chunks("openai/chat_completion_stream_tool_calls.sse")
    msg = anthropic_message(encode(chunks))
    assert msg.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in msg.content] == [("tool_use", "get_current_weather",
                                                                 {"location": "Boston, MA"})]


def test_parallel_interleaved_tool_calls_and_usage() -> None:
    def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: Any = None) -> dict[str, Any]:
        c: dict[str, Any] = {"id": "chatcmpl-9", "choices": [] if delta is None else
                             [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage:
            c["usage"] = usage
        return c

    def call(k: int, **fn: str) -> dict[str, Any]:
        return {"tool_calls": [{"index": k, **({"id": f"c{k}"} if "name" in fn else {}), "function": fn}]}

    chunks = [chunk({"role": "assistant", "content": "Both: "}), chunk(call(0, name="a", arguments="")),
              chunk(call(1, name="b", arguments='{"y"')), chunk(call(0, arguments='{"x": 1}')),
              chunk(call(1, arguments=": 2}")), chunk({}, "tool_calls"),
              chunk(usage={"prompt_tokens": 50, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 40}})]
    events = encode(chunks)
    msg = anthropic_message(events)
    assert [(b.type, getattr(b, "input", None)) for b in msg.content] == [
        ("text", None), ("tool_use", {"x": 1}), ("tool_use", {"y": 2})]
    assert msg.id == "msg_chatcmpl-9" and msg.stop_reason == "tool_use"
    delta = events[-2][1]
    assert delta["usage"] == {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 40,
                              "output_tokens": 9}


def test_double_translation_is_lossless_for_the_fixture_streams() -> None:
    for name in ("anthropic/message_stream.sse", "anthropic/message_stream_tool_use.sse"):
        original = sse_events(name)
        back = encode(translate(original))
        a, b = anthropic_message(original), anthropic_message(back)
        assert orjson.dumps([blk.to_dict() for blk in a.content]) == orjson.dumps([blk.to_dict() for blk in b.content])
        assert (a.id, a.stop_reason, a.usage.output_tokens) == (b.id, b.stop_reason, b.usage.output_tokens)
        assert a.usage.input_tokens == b.usage.input_tokens
