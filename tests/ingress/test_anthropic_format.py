"""AnthropicFormat, the /v1/messages client dialect, without a server: encodings and validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event

from llmgw._core import SseParser
from llmgw.errors import GatewayError
from llmgw.exchange import ChatResponse
from llmgw.ingress.anthropic import ANTHROPIC_FORMAT, parse_messages_request
from llmgw.streaming import response_as_chunks

COMPLETION = {"id": "chatcmpl-7", "object": "chat.completion", "created": 1, "model": "up",
              "choices": [{"index": 0, "finish_reason": "stop", "stop_reason": "###",
                           "message": {"role": "assistant", "content": "Paris."}}],
              "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}}


def request(**body: Any):
    return parse_messages_request({"model": "claude", "max_tokens": 10,
                                   "messages": [{"role": "user", "content": "hi"}]} | body, {})


def test_complete_answer_as_an_anthropic_message() -> None:
    out = json.loads(ANTHROPIC_FORMAT.encode_response(ChatResponse(COMPLETION), request()))
    assert out == {"id": "msg_chatcmpl-7", "type": "message", "role": "assistant", "model": "claude",
                   "content": [{"type": "text", "text": "Paris."}], "stop_reason": "stop_sequence",
                   "stop_sequence": "###", "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0,
                                                     "cache_read_input_tokens": 0, "output_tokens": 2}}


def test_a_plugin_answer_streamed_as_anthropic_events() -> None:
    """What Gateway.chat sends when a plugin answers a streaming request (response_as_chunks)."""
    req = request(stream=True)
    encoder = ANTHROPIC_FORMAT.stream_encoder(req)
    raw = b"".join(encoder.chunk(c) for c in response_as_chunks(COMPLETION, req.include_usage)) + encoder.end()
    snapshot, bufs = None, {}
    for event in SseParser().feed(raw):
        data = json.loads(event.data)
        assert event.event == data["type"]
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
    # response_as_chunks carries finish_reason but not the matched stop string
    assert snapshot.content[0].text == "Paris." and snapshot.stop_reason == "end_turn"
    assert (snapshot.usage.input_tokens, snapshot.usage.output_tokens) == (12, 2)


def test_empty_stream_is_still_a_complete_message() -> None:
    encoder = ANTHROPIC_FORMAT.stream_encoder(request(stream=True))
    names = [e.event for e in SseParser().feed(encoder.end())]
    assert names == ["message_start", "message_delta", "message_stop"]


@pytest.mark.parametrize(("status", "kind"), [(400, "invalid_request_error"), (401, "authentication_error"),
                                              (403, "permission_error"), (404, "not_found_error"),
                                              (413, "request_too_large"), (429, "rate_limit_error"),
                                              (502, "api_error"), (503, "overloaded_error")])
def test_errors_in_anthropics_shape(status: int, kind: str) -> None:
    err = GatewayError(status, "what went wrong")
    assert json.loads(ANTHROPIC_FORMAT.error_body(err)) == {"type": "error",
                                                            "error": {"type": kind, "message": "what went wrong"}}
    [event] = SseParser().feed(ANTHROPIC_FORMAT.stream_encoder(request()).error(err))
    assert event.event == "error" and json.loads(event.data)["error"]["type"] == kind


def test_the_canonical_request() -> None:
    req = request(stream=True, system="S", metadata={"user_id": "u"}, stop_sequences=["x"])
    assert req.model == "claude" and req.stream and req.raw is None and req.include_usage
    assert req.body == {"model": "claude", "max_tokens": 10, "stream": True, "stream_options": {"include_usage": True},
                        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
                        "stop": ["x"], "user": "u"}


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages.0.content.0.type"),
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ({"stream": "yes"}, "stream"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"output_config": {"effort": "high"}}, "output_config.effort"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "messages[0].content[0].source"),
])
def test_validation_names_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as exc:
        request(**body)
    assert exc.value.status == 400 and exc.value.param == param
