"""Gemini and Azure OpenAI endpoints, driven with raw httpx (and the openai SDK's AzureOpenAI)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from llmgw.mock import MockUpstream

GEMINI = "/v1beta/models/gemini-2.0-flash"
KEY = {"x-goog-api-key": "g-key"}


def gemini_body(text: str = "tell me about ai", **extra: object) -> dict[str, object]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def test_gemini_generate_content(mock: MockUpstream) -> None:
    response = httpx.post(mock.url + GEMINI + ":generateContent", headers=KEY, json=gemini_body())
    assert response.status_code == 200
    body = response.json()
    candidate = body["candidates"][0]
    assert candidate["content"] == {"parts": [{"text": "Echo: tell me about ai"}], "role": "model"}
    assert candidate["finishReason"] == "STOP"
    usage = body["usageMetadata"]
    assert usage["candidatesTokenCount"] == 5
    assert usage["promptTokenCount"] == 4
    assert usage["totalTokenCount"] == 9
    assert body["modelVersion"] == "gemini-2.0-flash"


def test_gemini_key_in_query_string_and_v1_path(mock: MockUpstream) -> None:
    response = httpx.post(mock.url + "/v1/models/gemini-pro:generateContent?key=abc", json=gemini_body())
    assert response.status_code == 200


def test_gemini_without_key_is_403_permission_denied(mock: MockUpstream) -> None:
    response = httpx.post(mock.url + GEMINI + ":generateContent", json=gemini_body())
    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"
    assert response.json()["error"]["code"] == 403


def test_gemini_sse_stream_uses_crlf_events_and_ends_with_finish_reason(mock: MockUpstream) -> None:
    response = httpx.post(mock.url + GEMINI + ":streamGenerateContent?alt=sse", headers=KEY,
                          json=gemini_body("a b c"))
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.content
    assert raw.endswith(b"\r\n\r\n")
    events = [json.loads(e.removeprefix(b"data: ")) for e in raw.split(b"\r\n\r\n") if e]
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events) == "Echo: a b c"
    assert all("finishReason" not in e["candidates"][0] for e in events[:-1])
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == 4


def test_gemini_stream_without_alt_sse_is_a_json_array(mock: MockUpstream) -> None:
    response = httpx.post(mock.url + GEMINI + ":streamGenerateContent", headers=KEY, json=gemini_body("x y"))
    elements = response.json()
    assert isinstance(elements, list) and len(elements) == 3
    assert elements[-1]["candidates"][0]["finishReason"] == "STOP"


def test_gemini_function_call_then_function_response(mock: MockUpstream) -> None:
    tools = [{"functionDeclarations": [{"name": "get_weather", "parameters": {
        "type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}]
    call = httpx.post(mock.url + GEMINI + ":generateContent", headers=KEY,
                      json=gemini_body("weather in Oslo", tools=tools)).json()
    part = call["candidates"][0]["content"]["parts"][0]
    assert part == {"functionCall": {"name": "get_weather", "args": {"city": "weather in Oslo"}}}
    follow_up = {
        "contents": [
            {"role": "user", "parts": [{"text": "weather in Oslo"}]},
            {"role": "model", "parts": [part]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "grey"}}}]},
        ],
        "tools": tools,
    }
    answer = httpx.post(mock.url + GEMINI + ":generateContent", headers=KEY, json=follow_up).json()
    assert answer["candidates"][0]["content"]["parts"][0]["text"] == 'Tool result: {"sky":"grey"}'


def test_gemini_json_response_schema(mock: MockUpstream) -> None:
    config = {"responseMimeType": "application/json",
              "responseSchema": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}}}
    body = httpx.post(mock.url + GEMINI + ":generateContent", headers=KEY,
                      json=gemini_body("count", generationConfig=config)).json()
    assert json.loads(body["candidates"][0]["content"]["parts"][0]["text"]) == {"n": 2}


def test_gemini_max_output_tokens(mock: MockUpstream) -> None:
    body = httpx.post(mock.url + GEMINI + ":generateContent", headers=KEY,
                      json=gemini_body("a b c d", generationConfig={"maxOutputTokens": 2})).json()
    assert body["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert body["usageMetadata"]["candidatesTokenCount"] == 2


AZURE_CHAT = "/openai/deployments/my-gpt4o/chat/completions"


def test_azure_chat_with_content_filter_annotations(mock: MockUpstream) -> None:
    response = httpx.post(mock.url + AZURE_CHAT + "?api-version=2024-10-21", headers={"api-key": "az"},
                          json={"messages": [{"role": "user", "content": "hi azure"}]})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "my-gpt4o"  # no model in the body: the deployment answers
    assert body["choices"][0]["message"]["content"] == "Echo: hi azure"
    assert body["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False
    assert "content_filter_results" in body["choices"][0]


@pytest.mark.parametrize("query, headers, status, code", [
    ("?api-version=2024-10-21", {}, 401, "401"),
    ("", {"api-key": "az"}, 404, "404"),
    ("?api-version=latest", {"api-key": "az"}, 400, "BadRequest"),
])
def test_azure_envelope_errors(mock: MockUpstream, query: str, headers: dict[str, str], status: int,
                               code: str) -> None:
    response = httpx.post(mock.url + AZURE_CHAT + query, headers=headers,
                          json={"messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_azure_stream_starts_with_prompt_filter_chunk(mock: MockUpstream) -> None:
    response = httpx.post(mock.url + AZURE_CHAT + "?api-version=2024-10-21", headers={"api-key": "az"},
                          json={"stream": True, "messages": [{"role": "user", "content": "hi"}]})
    events = [e.removeprefix("data: ") for e in response.text.split("\n\n") if e]
    first = json.loads(events[0])
    assert first["choices"] == [] and "prompt_filter_results" in first
    assert events[-1] == "[DONE]"


def test_azure_with_the_official_azure_client(mock: MockUpstream) -> None:
    with openai.AzureOpenAI(azure_endpoint=mock.url, api_key="az", api_version="2024-10-21",
                            max_retries=0) as c:
        completion = c.chat.completions.create(model="my-gpt4o",
                                               messages=[{"role": "user", "content": "sdk azure"}])
        stream_text = "".join(
            ch.choices[0].delta.content or ""
            for ch in c.chat.completions.create(model="my-gpt4o", stream=True,
                                                messages=[{"role": "user", "content": "sdk azure"}])
            if ch.choices)
        embedding = c.embeddings.create(model="my-embedder", input="vector")
    assert completion.choices[0].message.content == "Echo: sdk azure"
    assert stream_text == "Echo: sdk azure"
    assert embedding.model == "my-embedder" and len(embedding.data[0].embedding) == 1536
    last = mock.last_request()
    assert last is not None
    assert last["path"] == "/openai/deployments/my-embedder/embeddings"
    assert last["query"]["api-version"] == "2024-10-21"
    assert last["headers"]["api-key"] == "az"
