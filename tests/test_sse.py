"""Tests for llmgw._core's SSE parser and OpenAI stream tap (rust/src/sse.rs via PyO3)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmgw._core import SseEvent, SseParser, StreamTap

# --- fixtures: realistic OpenAI chat.completion.chunk streams, built here --------------------

HEAD = {
    "id": "chatcmpl-AbC123",
    "object": "chat.completion.chunk",
    "created": 1732000000,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_0ba0d124f1",
}


def openai_stream(
    pieces: Sequence[str] = ("Hello", ", ", "world", "!"),
    *,
    eol: str = "\n",
    include_usage: bool = False,
    keep_alive: bool = False,
    tool_call: bool = False,
) -> bytes:
    """An OpenAI-shaped stream: role chunk, content deltas, optional tool-call deltas, finish
    chunk, optional usage chunk (stream_options.include_usage), then [DONE]."""
    out: list[str] = []

    def event(payload: object) -> None:
        if keep_alive:
            out.append(f": keep-alive{eol}{eol}")
        text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        out.append(f"data: {text}{eol}{eol}")

    def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
        body: dict[str, object] = {
            **HEAD,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return body

    event(chunk({"role": "assistant", "content": "", "refusal": None}))
    for piece in pieces:
        event(chunk({"content": piece}))
    if tool_call:
        call = {"index": 0, "id": "call_9x", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
        event(chunk({"tool_calls": [call]}))
        for args in ('{"city":', ' "Paris"}'):
            event(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}))
    event(chunk({}, "tool_calls" if tool_call else "stop"))
    if include_usage:
        usage = {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        event({**HEAD, "choices": [], "usage": usage})
    event("[DONE]")
    return "".join(out).encode()


MIXED = (
    "\ufeff: welcome\r\nretry: 2500\r\n\r\nevent: delta\r\nid: 7\r\ndata: line one\r\n"
    "data: 二行目 🚀\r\n\r\n: keep-alive\r\n\r\ndata\r\n\r\nevent: ping\r\n\r\nid: 8\rdata:{\"x\":1}\r\r"
).encode()

MIXED_EVENTS = [
    SseEvent("line one\n二行目 🚀", event="delta", id="7"),
    SseEvent("", id="7"),
    SseEvent('{"x":1}', id="8"),
]

CJK = ("你好", "，世界", " 🎉👩‍💻", ' «ok»\n"q"')

FIXTURES: dict[str, bytes] = {
    "plain": openai_stream(),
    "usage+keepalive": openai_stream(include_usage=True, keep_alive=True),
    "tool-call+usage": openai_stream(include_usage=True, tool_call=True),
    "cjk-emoji-crlf": openai_stream(CJK, eol="\r\n", include_usage=True),
    "cr-only": openai_stream(("é", "€", "𝄞"), eol="\r"),
    "mixed": MIXED,
}


def parse(chunks: Sequence[bytes]) -> tuple[list[SseEvent], bool]:
    parser = SseParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events, parser.finish()


def cut(data: bytes, offsets: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted(offsets), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def every_single_split(data: bytes) -> Iterator[list[bytes]]:
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]


# --- spec rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_each_line_ending_dispatches(eol: str) -> None:
    events, discarded = parse([f"data: a{eol}{eol}data: b{eol}{eol}".encode()])
    assert [e.data for e in events] == ["a", "b"]
    assert not discarded


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    events, _ = parse([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert events == [SseEvent("a\nb")]


def test_fields_event_id_retry() -> None:
    parser = SseParser()
    events = parser.feed(b"retry: 3000\nevent: delta\nid: 1\ndata: x\n\ndata: y\n\nid: 2\x00\nretry: 9s\ndata: z\n\n")
    assert events == [
        SseEvent("x", event="delta", id="1", retry=3000),
        SseEvent("y", id="1"),  # the last event ID is sticky; event and retry are per event
        SseEvent("z", id="1"),  # an id holding NUL and a non-digit retry are ignored
    ]
    assert parser.last_event_id == "1"
    assert parser.retry == 3000


def test_comments_are_ignored_and_counted() -> None:
    parser = SseParser()
    assert parser.feed(b": keep-alive\ndata: a\n:inside\ndata: b\n\n") == [SseEvent("a\nb")]
    assert parser.comments == 2


def test_one_leading_space_removed_and_colonless_line_is_empty_field() -> None:
    events, _ = parse([b"data:x\n\ndata:  x\n\ndata\n\ndata: a:b\n\n"])
    assert [e.data for e in events] == ["x", " x", "", "a:b"]


def test_event_without_data_is_dropped_and_resets_event_type() -> None:
    events, _ = parse([b"event: ping\n\ndata: x\n\n"])
    assert events == [SseEvent("x")]


def test_leading_bom_skipped_even_when_split() -> None:
    stream = b"\xef\xbb\xbfdata: a\n\n"
    for chunks in every_single_split(stream):
        assert parse(chunks)[0] == [SseEvent("a")]


def test_utf8_character_split_anywhere_is_decoded_whole() -> None:
    stream = "data: é€𝄞🚀\n\n".encode()
    for chunks in every_single_split(stream):
        assert parse(chunks)[0] == [SseEvent("é€𝄞🚀")]


def test_invalid_utf8_becomes_replacement_character() -> None:
    events, _ = parse([b"event: \xffx\ndata: a\xe2\x82b\n\n"])
    assert events == [SseEvent("a\ufffdb", event="\ufffdx")]


def test_finish_reports_discarded_unterminated_event() -> None:
    assert parse([b"data: a\n\n"]) == ([SseEvent("a")], False)
    assert parse([b"data: a\n\ndata: b\n"]) == ([SseEvent("a")], True)
    assert parse([b"data: a\n\ndata: b"]) == ([SseEvent("a")], True)
    assert parse([b"data: a\n\n: bye"])[1] is False


def test_finish_resets_parser_for_a_new_stream() -> None:
    parser = SseParser()
    parser.feed(b"id: 5\ndata: cut")
    assert parser.finish() is True
    assert parser.last_event_id is None
    assert parser.feed(b"data: new\n\n") == [SseEvent("new")]


def test_sse_event_value_semantics() -> None:
    event = SseEvent("d", event="e", id="i", retry=5)
    assert (event.data, event.event, event.id, event.retry) == ("d", "e", "i", 5)
    assert event == SseEvent("d", event="e", id="i", retry=5)
    assert event != SseEvent("d", event="e", id="i")
    assert event != "d"
    assert repr(SseEvent("a")) == "SseEvent(data='a', event=None, id=None, retry=None)"


def test_feed_rejects_text() -> None:
    with pytest.raises(TypeError):
        SseParser().feed("data: a\n\n")  # type: ignore[arg-type]


# --- fixtures, split at every offset and at random multi-split points ------------------------


def test_openai_fixture_events() -> None:
    events, discarded = parse([openai_stream(include_usage=True)])
    assert not discarded
    assert len(events) == 8  # role, 4 content pieces, finish, usage, [DONE]
    assert events[-1] == SseEvent("[DONE]")
    assert json.loads(events[1].data)["choices"][0]["delta"]["content"] == "Hello"
    assert json.loads(events[6].data)["usage"]["total_tokens"] == 29


def test_mixed_fixture_events() -> None:
    parser = SseParser()
    assert parser.feed(MIXED) == MIXED_EVENTS
    assert parser.comments == 2
    assert parser.retry == 2500
    assert parser.finish() is False


@pytest.mark.parametrize("name", FIXTURES)
def test_every_single_split_gives_the_same_events(name: str) -> None:
    stream = FIXTURES[name]
    whole = parse([stream])
    for chunks in every_single_split(stream):
        assert parse(chunks) == whole


@st.composite
def fixture_and_cuts(draw: st.DrawFn) -> tuple[str, list[int]]:
    name = draw(st.sampled_from(sorted(FIXTURES)))
    offsets = draw(st.lists(st.integers(0, len(FIXTURES[name])), max_size=40))
    return name, offsets


HYPOTHESIS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(fixture_and_cuts())
def test_random_multi_split_gives_the_same_events(case: tuple[str, list[int]]) -> None:
    name, offsets = case
    stream = FIXTURES[name]
    assert parse(cut(stream, offsets)) == parse([stream])


# --- StreamTap -------------------------------------------------------------------------------


def tap_all(chunks: Sequence[bytes], collect_text: bool = False) -> tuple[StreamTap, list[bytes]]:
    tap = StreamTap(collect_text=collect_text)
    return tap, [tap.feed(chunk) for chunk in chunks]


def test_tap_reads_usage_finish_model_done() -> None:
    tap, out = tap_all([openai_stream(include_usage=True)])
    assert tap.usage == (19, 10, 29, 3)
    assert tap.finish_reason == "stop"
    assert tap.model == "gpt-4o-mini-2024-07-18"
    assert tap.events == 8
    assert tap.done is True
    assert tap.error is None
    assert tap.text == ""  # only collected when asked
    assert out == [openai_stream(include_usage=True)] and tap.pending() == b""


def test_tap_collects_text_but_not_tool_arguments() -> None:
    tap, _ = tap_all([openai_stream(CJK, eol="\r\n", tool_call=True)], collect_text=True)
    assert tap.text == "".join(CJK)
    assert tap.finish_reason == "tool_calls"
    assert tap.usage is None


def test_tap_usage_without_cached_tokens() -> None:
    stream = b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}\n\n'
    assert tap_all([stream])[0].usage == (4, 2, 6, None)


def test_tap_model_skips_azure_empty_model() -> None:
    azure_first = b'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[]}\n\n'
    tap, _ = tap_all([azure_first, openai_stream()])
    assert tap.model == "gpt-4o-mini-2024-07-18"


def test_tap_reports_in_stream_error_as_raw_json() -> None:
    error = '{"error":{"message":"The server had an error","type":"server_error","code":null}}'
    tap, _ = tap_all([b'data: {"model":"m","choices":[]}\n\n', f"data: {error}\n\n".encode()])
    assert tap.error == error
    assert tap.done is False


def test_tap_returns_whole_events_and_buffers_the_tail() -> None:
    tap = StreamTap()
    assert tap.feed(b'data: {"a":1}\n\ndata: {"b"') == b'data: {"a":1}\n\n'
    assert tap.pending() == b'data: {"b"'
    assert tap.feed(b":2}\n") == b""
    assert tap.feed(b"\n: keep-alive\n") == b'data: {"b":2}\n\n: keep-alive\n'
    assert tap.feed(b": ping\n") == b": ping\n"  # keep-alives between events pass at once
    assert tap.pending() == b""
    assert tap.events == 2


def test_tap_returns_the_same_object_when_chunk_is_event_aligned() -> None:
    tap = StreamTap()
    chunk = b'data: {"x":1}\n\n'
    assert tap.feed(chunk) is chunk


@pytest.mark.parametrize("name", FIXTURES)
def test_tap_every_single_split_keeps_bytes_and_facts(name: str) -> None:
    stream = FIXTURES[name]
    whole, _ = tap_all([stream], collect_text=True)
    for chunks in every_single_split(stream):
        tap, out = tap_all(chunks, collect_text=True)
        assert b"".join(out) + tap.pending() == stream
        assert (tap.usage, tap.text, tap.finish_reason, tap.model, tap.events, tap.done) == (
            whole.usage, whole.text, whole.finish_reason, whole.model, whole.events, whole.done,
        )


@HYPOTHESIS
@given(fixture_and_cuts(), st.booleans())
def test_tap_random_multi_split_forwards_whole_events(case: tuple[str, list[int]], collect_text: bool) -> None:
    name, offsets = case
    stream = FIXTURES[name]
    whole, _ = tap_all([stream], collect_text)
    tap, out = tap_all(cut(stream, offsets), collect_text)
    assert b"".join(out) + tap.pending() == stream
    # What was forwarded is whole events: parsed alone it yields every event the tap has seen,
    # with nothing left half-sent.
    forwarded_events, forwarded_partial = parse([b"".join(out)])
    assert len(forwarded_events) == tap.events
    assert forwarded_partial is False
    assert (tap.usage, tap.text, tap.finish_reason, tap.model) == (whole.usage, whole.text, whole.finish_reason, whole.model)
