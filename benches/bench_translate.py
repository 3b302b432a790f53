"""Cost of OpenAI ⇄ Anthropic translation next to forwarding the same JSON untouched, in one run.

    maturin develop --release && pytest benches/bench_translate.py --benchmark-group-by=group

The baseline ("passthrough") is orjson loads + dumps of the same payload (for chunks: of the
OpenAI chunk carrying the same text delta, framed as SSE): the least a gateway that looks at the
JSON at all pays. Each group times one unit of work:

- request: an OpenAI chat request (system, 6 turns, a tool call and its result, 2 tools, ~2.3 KB)
  → the Anthropic request bytes the adapter sends.
- response: an Anthropic message → the chat.completion bytes an OpenAI client gets.
- chunk: one streamed text delta. `anthropic_upstream` is what the gateway does per event for an
  OpenAI client of an Anthropic upstream (SSE parse, JSON, translate, encode); `anthropic_client`
  is the /v1/messages dialect encoding one canonical chunk as Anthropic events; `round_trip`
  is OpenAI → Anthropic → OpenAI, both translators.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from llmgw.ingress.anthropic import AnthropicStreamEncoder
from llmgw.providers.anthropic import AnthropicStreamReader
from llmgw.translate.anthropic import (
    anthropic_to_openai_request,
    anthropic_to_openai_response,
    openai_to_anthropic_request,
)
from llmgw.translate.anthropic_stream import AnthropicToOpenAIStream, OpenAIToAnthropicStream

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def _request() -> dict[str, Any]:
    body = json.loads((FIXTURES / "openai/chat_request_tool_result.json").read_text())
    body["messages"] = [
        {"role": "system", "content": "You are a weather assistant. Answer in one sentence, cite the source."},
        {"role": "user", "content": "Hi! I am planning a trip to the east coast next week."},
        {"role": "assistant", "content": "Happy to help. Which cities are you visiting, and on which days?"},
        *body["messages"],
        {"role": "user", "content": "Great, and should I pack an umbrella for Wednesday as well?"},
    ]
    body["tools"].append({"type": "function", "function": {
        "name": "get_forecast", "description": "Get the daily forecast for the next days",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"},
                                                         "days": {"type": "integer", "minimum": 1}},
                       "required": ["location", "days"]}}})
    body |= {"temperature": 0.2, "max_tokens": 400, "stream": False}
    return body


REQUEST = orjson.dumps(_request())
MESSAGE = (FIXTURES / "anthropic/message_tool_use.json").read_bytes()
TEXT_EVENT = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
              b'"delta":{"type":"text_delta","text":" the weather"}}\n\n')
OPENAI_CHUNK = orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                             "choices": [{"index": 0, "delta": {"content": " the weather"}, "finish_reason": None,
                                          "logprobs": None}]})


def _passthrough(raw: bytes) -> bytes:
    return orjson.dumps(orjson.loads(raw))


@pytest.mark.benchmark(group="request")
def test_request_passthrough(benchmark) -> None:
    assert benchmark(_passthrough, REQUEST)


@pytest.mark.benchmark(group="request")
def test_request_openai_to_anthropic(benchmark) -> None:
    def run() -> bytes:
        return orjson.dumps(openai_to_anthropic_request(orjson.loads(REQUEST), "claude", stream=False))

    assert b'"tool_result"' in benchmark(run)


@pytest.mark.benchmark(group="request")
def test_request_round_trip(benchmark) -> None:
    def run() -> bytes:
        anthropic = openai_to_anthropic_request(orjson.loads(REQUEST), "claude", stream=False)
        return orjson.dumps(anthropic_to_openai_request(anthropic, keep_extensions=True))

    assert b'"tool_calls"' in benchmark(run)


@pytest.mark.benchmark(group="response")
def test_response_passthrough(benchmark) -> None:
    assert benchmark(_passthrough, MESSAGE)


@pytest.mark.benchmark(group="response")
def test_response_anthropic_to_openai(benchmark) -> None:
    def run() -> bytes:
        return orjson.dumps(anthropic_to_openai_response(orjson.loads(MESSAGE), "claude", created=1))

    assert b'"tool_calls"' in benchmark(run)


@pytest.mark.benchmark(group="chunk")
def test_chunk_passthrough(benchmark) -> None:
    def run() -> bytes:
        return b"data: " + orjson.dumps(orjson.loads(OPENAI_CHUNK)) + b"\n\n"

    assert benchmark(run)


def _started_reader() -> AnthropicStreamReader:
    reader = AnthropicStreamReader("up", "m")
    reader.feed(b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","usage":{}}}\n\n'
                b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
                b'"content_block":{"type":"text","text":""}}\n\n')
    return reader


@pytest.mark.benchmark(group="chunk")
def test_chunk_anthropic_upstream(benchmark) -> None:
    reader = _started_reader()

    def run() -> bytes:
        return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in reader.feed(TEXT_EVENT))

    assert b"the weather" in benchmark(run)


@pytest.mark.benchmark(group="chunk")
def test_chunk_anthropic_client(benchmark) -> None:
    encoder = AnthropicStreamEncoder("claude")
    encoder.chunk(orjson.loads(OPENAI_CHUNK))

    def run() -> bytes:
        return encoder.chunk(orjson.loads(OPENAI_CHUNK))

    assert b"text_delta" in benchmark(run)


@pytest.mark.benchmark(group="chunk")
def test_chunk_round_trip(benchmark) -> None:
    to_anthropic = OpenAIToAnthropicStream("claude")
    to_openai = AnthropicToOpenAIStream("m", created=1)
    for name, data in to_anthropic.chunk(orjson.loads(OPENAI_CHUNK)):
        to_openai.event(name, data)

    def run() -> bytes:
        out = []
        for name, data in to_anthropic.chunk(orjson.loads(OPENAI_CHUNK)):
            out.extend(to_openai.event(name, data))
        return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in out)

    assert b"the weather" in benchmark(run)
