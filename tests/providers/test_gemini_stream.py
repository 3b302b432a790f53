"""Gemini SSE → OpenAI chunks, and Gemini error classification, on fixtures and documented shapes."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from llmgw.providers.gemini import classify_gemini_error
from llmgw.translate.gemini_stream import GeminiStreamTranslator
from llmgw.transport import UpstreamProtocolError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gemini"


def sse(*events: dict) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events)


def run(data: bytes, split: int | None = None) -> list[dict]:
    t = GeminiStreamTranslator("g", "my-gemini")
    chunks = []
    step = split or max(len(data), 1)
    for i in range(0, len(data), step):
        chunks.extend(t.feed(data[i:i + step]))
    return chunks + t.finish()


@pytest.mark.parametrize("split", [None, 1, 7])
def test_fixture_stream_to_chunks_any_split(split: int | None) -> None:
    chunks = run((FIXTURES / "stream_generate_content.sse").read_bytes(), split)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "AI"}, {"content": " learns patterns from data to make predictions."}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 8, "completion_tokens": 9, "total_tokens": 17}
    assert {c["model"] for c in chunks} == {"my-gemini"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["object"] == "chat.completion.chunk"


def test_function_calls_are_one_delta_each_with_ids_and_whole_arguments() -> None:
    calls = [{"functionCall": {"name": "f", "args": {"a": 1}}}, {"functionCall": {"name": "g", "args": {}}}]
    data = sse({"candidates": [{"content": {"parts": calls[:1], "role": "model"}, "index": 0}]},
               {"candidates": [{"content": {"parts": calls[1:], "role": "model"}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}})
    chunks = run(data)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    first, second = deltas[0]["tool_calls"][0], deltas[1]["tool_calls"][0]
    assert (first["index"], first["function"]) == (0, {"name": "f", "arguments": '{"a":1}'})
    assert (second["index"], second["function"]) == (1, {"name": "g", "arguments": "{}"})
    assert first["id"] != second["id"] and first["id"].startswith("call_")
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_cut_stream_without_finish_reason_raises() -> None:
    t = GeminiStreamTranslator("g", "m")
    t.feed(sse({"candidates": [{"content": {"parts": [{"text": "partial"}]}, "index": 0}]}))
    with pytest.raises(UpstreamProtocolError, match="ended the stream"):
        t.finish()


def test_empty_stream_raises() -> None:
    with pytest.raises(UpstreamProtocolError):
        run(b"")


def test_in_stream_error_event_raises_with_its_message() -> None:
    t = GeminiStreamTranslator("g", "m")
    with pytest.raises(UpstreamProtocolError, match="overloaded"):
        t.feed(sse({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}))


def test_malformed_event_raises() -> None:
    with pytest.raises(UpstreamProtocolError, match="malformed"):
        GeminiStreamTranslator("g", "m").feed(b'data: {"candidates": [\r\n\r\n')


def test_usage_arriving_after_the_finish_gets_its_own_empty_choices_chunk() -> None:
    data = sse({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "MAX_TOKENS", "index": 0}]},
               {"usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2}})
    chunks = run(data)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 2


# -- errors --------------------------------------------------------------------------------------

def classify(status: int, body: dict | bytes, headers: list | None = None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return classify_gemini_error("g", status, raw, headers or [])


def test_resource_exhausted_is_a_retryable_429_with_retry_delay() -> None:
    body = json.loads((FIXTURES / "error_resource_exhausted.json").read_text())
    body["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]
    ec = classify(429, body)
    assert (ec.status, ec.retryable, ec.fallback, ec.client_fault, ec.retry_after) == (429, True, True, False, 37.0)
    assert classify(429, body, [(b"retry-after", b"5")]).retry_after == 5.0


def test_token_limit_is_context_length_exceeded() -> None:
    ec = classify(400, (FIXTURES / "error_invalid_argument.json").read_bytes())
    assert (ec.status, ec.code, ec.fallback, ec.client_fault) == (400, "context_length_exceeded", True, True)


def test_invalid_api_key_is_a_502_without_the_upstream_message() -> None:
    ec = classify(400, (FIXTURES / "error_api_key_invalid.json").read_bytes())
    assert (ec.status, ec.code, ec.client_fault, ec.fallback) == (502, "upstream_auth_failed", False, True)
    assert "API key" not in ec.message
    assert classify(403, {"error": {"code": 403, "message": "k", "status": "PERMISSION_DENIED"}}).status == 502


@pytest.mark.parametrize(("status", "name", "out"), [(503, "UNAVAILABLE", 503), (500, "INTERNAL", 502),
                                                     (504, "DEADLINE_EXCEEDED", 504)])
def test_server_errors_are_retryable(status: int, name: str, out: int) -> None:
    ec = classify(status, {"error": {"code": status, "message": "m", "status": name}})
    assert (ec.status, ec.retryable, ec.client_fault) == (out, True, False)


def test_other_invalid_argument_is_the_clients_with_its_message() -> None:
    ec = classify(400, {"error": {"code": 400, "message": "Invalid value at 'generation_config.temperature'",
                                  "status": "INVALID_ARGUMENT"}})
    assert (ec.status, ec.client_fault, ec.retryable, ec.code) == (400, True, False, "invalid_argument")
    assert "temperature" in ec.message


def test_unknown_model_and_region_are_gateway_config_errors() -> None:
    for status, name in ((404, "NOT_FOUND"), (400, "FAILED_PRECONDITION")):
        ec = classify(status, {"error": {"code": status, "message": "m", "status": name}})
        assert (ec.status, ec.client_fault, ec.fallback) == (502, False, True)


def test_non_json_error_body_still_classifies_by_status() -> None:
    assert classify(503, b"<html>busy</html>").status == 503
