"""The mock's output has the same keys and value types as the recorded provider fixtures.

Translators are tested against the mock; this ties the mock to the documented wire shapes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from llmgw.mock import MockUpstream

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OPAQUE = {"input", "args", "metadata"}  # user-defined objects: any keys
OPENAI = {"authorization": "Bearer k"}
ANTHROPIC = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
GEMINI = {"x-goog-api-key": "k"}
AZURE = {"api-key": "k"}
AZURE_CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
GEMINI_MODEL = "/v1beta/models/gemini-2.0-flash"


def fixture(path: str) -> Any:
    return json.loads((FIXTURES / path).read_text())


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def assert_same_shape(got: Any, want: Any, where: str = "$") -> None:
    """Same keys at every level and same JSON types (list items against the fixture's first)."""
    assert kind(got) == kind(want), f"{where}: {kind(got)} != {kind(want)}"
    if isinstance(want, dict):
        assert set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for key, value in want.items():
            if key not in OPAQUE:
                assert_same_shape(got[key], value, f"{where}.{key}")
    elif isinstance(want, list) and want and got:
        for index, item in enumerate(got):
            assert_same_shape(item, want[0], f"{where}[{index}]")


def parse_sse(raw: bytes) -> list[tuple[str | None, Any]]:
    events = []
    for block in re.split(rb"\r?\n\r?\n", raw):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.decode().splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        text = "\n".join(data)
        events.append((name, text if text == "[DONE]" else json.loads(text)))
    return events


def openai_kind(event: tuple[str | None, Any]) -> str:
    _, data = event
    if data == "[DONE]":
        return "done"
    if not data["choices"]:
        return "azure_filter" if "prompt_filter_results" in data else "usage"
    choice = data["choices"][0]
    delta = choice["delta"]
    if "role" in delta:
        return "role"
    if delta.get("tool_calls"):
        return "tool_args"
    if delta.get("content") is not None:
        return "content"
    return "finish" if choice["finish_reason"] else "other"


def anthropic_kind(event: tuple[str | None, Any]) -> str:
    name, data = event
    sub = (data.get("delta") or {}).get("type") or (data.get("content_block") or {}).get("type") or ""
    return f"{name}:{sub}"


def gemini_kind(event: tuple[str | None, Any]) -> str:
    return "final" if "finishReason" in event[1]["candidates"][0] else "partial"


def assert_same_stream(got_raw: bytes, want_raw: bytes, classify: Callable[[Any], str]) -> None:
    got, want = parse_sse(got_raw), parse_sse(want_raw)

    def collapsed(events: list[Any]) -> list[str]:
        kinds = [classify(e) for e in events]
        return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]

    assert collapsed(got) == collapsed(want)
    first_of_kind = {}
    for event in want:
        first_of_kind.setdefault(classify(event), event)
    for event in got:
        expected = first_of_kind[classify(event)]
        assert event[0] == expected[0]
        if event[1] != "[DONE]":
            assert_same_shape(event[1], expected[1], classify(event))


@pytest.fixture
def http(mock: MockUpstream) -> httpx.Client:
    with httpx.Client(base_url=mock.url) as client:
        yield client  # type: ignore[misc]


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]}
MESSAGE = {"model": "claude-mock", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hello, Claude"}]}
CONTENTS = {"contents": [{"role": "user", "parts": [{"text": "Explain how AI works in a few words"}]}]}


# -- OpenAI ------------------------------------------------------------------------------------

def test_openai_chat_completion(http: httpx.Client) -> None:
    got = http.post("/v1/chat/completions", json=CHAT, headers=OPENAI).json()
    assert_same_shape(got, fixture("openai/chat_completion.json"))


def test_openai_tool_calls(http: httpx.Client) -> None:
    got = http.post("/v1/chat/completions", json=fixture("openai/chat_request_tools.json"), headers=OPENAI).json()
    assert_same_shape(got, fixture("openai/chat_completion_tool_calls.json"))


def test_openai_answer_after_tool_result(http: httpx.Client) -> None:
    got = http.post("/v1/chat/completions", json=fixture("openai/chat_request_tool_result.json"),
                    headers=OPENAI).json()
    assert_same_shape(got, fixture("openai/chat_completion.json"))


def test_openai_stream_with_usage(http: httpx.Client) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    got = http.post("/v1/chat/completions", json=body, headers=OPENAI).content
    assert_same_stream(got, (FIXTURES / "openai/chat_completion_stream.sse").read_bytes(), openai_kind)


def test_openai_stream_tool_calls(http: httpx.Client) -> None:
    body = {**fixture("openai/chat_request_tools.json"), "stream": True}
    got = http.post("/v1/chat/completions", json=body, headers=OPENAI).content
    assert_same_stream(got, (FIXTURES / "openai/chat_completion_stream_tool_calls.sse").read_bytes(), openai_kind)


def test_openai_embeddings_and_models(http: httpx.Client) -> None:
    got = http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "The food was delicious"},
                    headers=OPENAI).json()
    assert_same_shape(got, fixture("openai/embeddings.json"))
    assert_same_shape(http.get("/v1/models", headers=OPENAI).json(), fixture("openai/models.json"))


@pytest.mark.parametrize("headers, name", [
    ({**OPENAI, "x-mock-context-exceeded": "1"}, "error_context_length_exceeded"),
    ({**OPENAI, "x-mock-status": "429"}, "error_rate_limit"),
    ({**OPENAI, "x-mock-status": "401"}, "error_invalid_api_key"),
])
def test_openai_errors(http: httpx.Client, headers: dict[str, str], name: str) -> None:
    got = http.post("/v1/chat/completions", json=CHAT, headers=headers).json()
    want = fixture(f"openai/{name}.json")
    assert_same_shape(got, want)
    assert got["error"]["code"] == want["error"]["code"]
    assert got["error"]["type"] == want["error"]["type"]


# -- Azure -------------------------------------------------------------------------------------

def test_azure_chat_completion_and_stream(http: httpx.Client) -> None:
    got = http.post(AZURE_CHAT, json=CHAT, headers=AZURE).json()
    assert_same_shape(got, fixture("azure/chat_completion.json"))
    stream = http.post(AZURE_CHAT, json={**CHAT, "stream": True}, headers=AZURE).content
    assert_same_stream(stream, (FIXTURES / "azure/chat_completion_stream.sse").read_bytes(), openai_kind)


@pytest.mark.parametrize("path, headers, name", [
    (AZURE_CHAT, {}, "error_unauthorized"),
    ("/openai/deployments/gpt-4o/chat/completions", AZURE, "error_resource_not_found"),
    (AZURE_CHAT, {**AZURE, "x-mock-status": "404"}, "error_deployment_not_found"),
    (AZURE_CHAT, {**AZURE, "x-mock-status": "429"}, "error_rate_limit"),
])
def test_azure_errors(http: httpx.Client, path: str, headers: dict[str, str], name: str) -> None:
    got = http.post(path, json=CHAT, headers=headers).json()
    want = fixture(f"azure/{name}.json")
    assert_same_shape(got, want)
    assert got["error"]["code"] == want["error"]["code"]


# -- Anthropic ---------------------------------------------------------------------------------

def test_anthropic_message(http: httpx.Client) -> None:
    got = http.post("/v1/messages", json=MESSAGE, headers=ANTHROPIC).json()
    assert_same_shape(got, fixture("anthropic/message.json"))
    cached = http.post("/v1/messages", json=fixture("anthropic/request_cache_control.json"), headers=ANTHROPIC).json()
    assert_same_shape(cached, fixture("anthropic/message.json"))


def test_anthropic_tool_use(http: httpx.Client) -> None:
    got = http.post("/v1/messages", json=fixture("anthropic/request_tools.json"), headers=ANTHROPIC).json()
    want = fixture("anthropic/message_tool_use.json")
    assert_same_shape({**got, "content": []}, {**want, "content": []})
    assert [b["type"] for b in got["content"]] == [b["type"] for b in want["content"]]
    for got_block, want_block in zip(got["content"], want["content"]):
        assert_same_shape(got_block, want_block)


def test_anthropic_streams(http: httpx.Client) -> None:
    text = http.post("/v1/messages", json={**MESSAGE, "stream": True}, headers=ANTHROPIC).content
    assert_same_stream(text, (FIXTURES / "anthropic/message_stream.sse").read_bytes(), anthropic_kind)
    tools = http.post("/v1/messages", json={**fixture("anthropic/request_tools.json"), "stream": True},
                      headers=ANTHROPIC).content
    assert_same_stream(tools, (FIXTURES / "anthropic/message_stream_tool_use.sse").read_bytes(), anthropic_kind)


def test_anthropic_in_stream_error(http: httpx.Client) -> None:
    got = http.post("/v1/messages", json={**MESSAGE, "stream": True},
                    headers={**ANTHROPIC, "x-mock-error-after-chunks": "1"}).content
    want = (FIXTURES / "anthropic/stream_error.sse").read_bytes()
    without_ping = [e for e in parse_sse(got) if e[0] != "ping"]
    assert [e[0] for e in without_ping] == [e[0] for e in parse_sse(want)]
    assert without_ping[-1][1] == parse_sse(want)[-1][1]


@pytest.mark.parametrize("body, headers, name", [
    ({"model": "claude-mock", "messages": MESSAGE["messages"]}, ANTHROPIC, "error_invalid_request"),
    (MESSAGE, {**ANTHROPIC, "x-mock-context-exceeded": "1"}, "error_prompt_too_long"),
    (MESSAGE, {**ANTHROPIC, "x-mock-status": "529"}, "error_overloaded"),
    (MESSAGE, {**ANTHROPIC, "x-mock-status": "429"}, "error_rate_limit"),
])
def test_anthropic_errors(http: httpx.Client, body: dict[str, Any], headers: dict[str, str], name: str) -> None:
    got = http.post("/v1/messages", json=body, headers=headers).json()
    want = fixture(f"anthropic/{name}.json")
    assert_same_shape(got, want)
    assert got["error"]["type"] == want["error"]["type"]


def test_anthropic_missing_max_tokens_message_is_the_documented_one(http: httpx.Client) -> None:
    got = http.post("/v1/messages", json={"model": "c", "messages": MESSAGE["messages"]}, headers=ANTHROPIC).json()
    assert got["error"] == fixture("anthropic/error_invalid_request.json")["error"]


# -- Gemini ------------------------------------------------------------------------------------

def test_gemini_generate_content(http: httpx.Client) -> None:
    got = http.post(GEMINI_MODEL + ":generateContent", json=CONTENTS, headers=GEMINI).json()
    assert_same_shape(got, fixture("gemini/generate_content.json"))


def test_gemini_function_call(http: httpx.Client) -> None:
    got = http.post(GEMINI_MODEL + ":generateContent", json=fixture("gemini/request_function_declarations.json"),
                    headers=GEMINI).json()
    assert_same_shape(got, fixture("gemini/generate_content_function_call.json"))


def test_gemini_sse_stream_shape_and_framing(http: httpx.Client) -> None:
    got = http.post(GEMINI_MODEL + ":streamGenerateContent?alt=sse", json=CONTENTS, headers=GEMINI).content
    want = (FIXTURES / "gemini/stream_generate_content.sse").read_bytes()
    assert_same_stream(got, want, gemini_kind)
    for raw in (got, want):
        assert raw.endswith(b"\r\n\r\n") and b"}\n\n" not in raw


@pytest.mark.parametrize("headers, name", [
    ({**GEMINI, "x-mock-context-exceeded": "1"}, "error_invalid_argument"),
    ({**GEMINI, "x-mock-status": "429"}, "error_resource_exhausted"),
])
def test_gemini_errors(http: httpx.Client, headers: dict[str, str], name: str) -> None:
    got = http.post(GEMINI_MODEL + ":generateContent", json=CONTENTS, headers=headers).json()
    want = fixture(f"gemini/{name}.json")
    assert_same_shape(got, want)
    assert got["error"]["status"] == want["error"]["status"]


def test_gemini_invalid_key_error() -> None:
    with MockUpstream(api_key="right") as keyed:
        got = httpx.post(keyed.url + GEMINI_MODEL + ":generateContent", json=CONTENTS,
                         headers={"x-goog-api-key": "wrong"}).json()
    assert got == fixture("gemini/error_api_key_invalid.json")
