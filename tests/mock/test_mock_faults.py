"""Fault injection, as a gateway's retry/fallback/timeout code would meet it."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from llmgw.mock import MockUpstream

MESSAGES = [{"role": "user", "content": "one two three four five"}]
OPENAI_BODY = {"model": "m", "messages": MESSAGES}
ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
GEMINI_PATH = "/v1beta/models/gemini-2.0-flash:generateContent"
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
AZURE_PATH = "/openai/deployments/d/chat/completions?api-version=2024-10-21"


def oai(mock: MockUpstream, timeout: float | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock.url + "/v1", api_key="k", max_retries=0,
                         timeout=timeout if timeout is not None else 10.0)


def ant(mock: MockUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mock.url, api_key="k", max_retries=0)


# -- injected status -------------------------------------------------------------------------

def test_openai_429_with_retry_after(mock: MockUpstream) -> None:
    with oai(mock) as c, pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="m", messages=MESSAGES,  # type: ignore[arg-type]
                                  extra_headers={"x-mock-status": "429", "x-mock-retry-after": "7"})
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.code == "rate_limit_exceeded"


def test_anthropic_529_overloaded_with_retry_after(mock: MockUpstream) -> None:
    with ant(mock) as c, pytest.raises(anthropic.OverloadedError) as info:
        c.messages.create(model="claude-mock", max_tokens=5, messages=MESSAGES,  # type: ignore[arg-type]
                          extra_headers={"x-mock-status": "529", "x-mock-retry-after": "2.5"})
    assert info.value.response.headers["retry-after"] == "2.5"
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


@pytest.mark.parametrize("path, body, headers, expected", [
    (GEMINI_PATH, GEMINI_BODY, {"x-goog-api-key": "g"}, {"code": 503, "status": "UNAVAILABLE"}),
    (AZURE_PATH, OPENAI_BODY, {"api-key": "a"}, {"code": "ServiceUnavailable"}),
])
def test_503_in_provider_shape_with_retry_after(mock: MockUpstream, path: str, body: dict[str, object],
                                                headers: dict[str, str], expected: dict[str, object]) -> None:
    response = httpx.post(mock.url + path, json=body,
                          headers={**headers, "x-mock-status": "503", "x-mock-retry-after": "3"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    error = response.json()["error"]
    assert {k: error[k] for k in expected} == expected


def test_retry_after_only_on_throttling_statuses(mock: MockUpstream) -> None:
    response = httpx.post(mock.url + "/v1/chat/completions", json=OPENAI_BODY,
                          headers={"authorization": "Bearer k", "x-mock-status": "500", "x-mock-retry-after": "3"})
    assert response.status_code == 500
    assert "retry-after" not in response.headers
    assert response.json()["error"]["type"] == "server_error"


def test_fail_rate_is_a_seeded_coin() -> None:
    def outcomes() -> list[int]:
        with MockUpstream(status=500, fail_rate=0.5, seed=7) as failing, httpx.Client() as http:
            return [http.post(failing.url + "/v1/chat/completions", json=OPENAI_BODY,
                              headers={"authorization": "Bearer k"}).status_code for _ in range(40)]

    first, second = outcomes(), outcomes()
    assert first == second  # same seed, same sequence
    assert set(first) == {200, 500}
    assert 8 <= first.count(500) <= 32


# -- hangs, pacing, latency (checked through client timeouts, never timed) ----------------------

def test_hang_before_headers_times_the_client_out(mock: MockUpstream) -> None:
    with oai(mock, timeout=0.3) as c, pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(model="m", messages=MESSAGES,  # type: ignore[arg-type]
                                  extra_headers={"x-mock-hang": "before"})


def test_finite_hang_then_answers(mock: MockUpstream) -> None:
    with oai(mock) as c:
        completion = c.chat.completions.create(model="m", messages=MESSAGES,  # type: ignore[arg-type]
                                               extra_headers={"x-mock-hang": "before", "x-mock-hang-ms": "20"})
    assert completion.choices[0].message.content == "Echo: one two three four five"


def test_latency_longer_than_the_client_timeout_times_out(mock: MockUpstream) -> None:
    with oai(mock, timeout=0.2) as c, pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(model="m", messages=MESSAGES,  # type: ignore[arg-type]
                                  extra_headers={"x-mock-latency-ms": "3000"})


def test_hang_mid_stream_after_k_chunks(mock: MockUpstream) -> None:
    received: list[str] = []
    with httpx.Client(timeout=httpx.Timeout(5.0, read=0.3)) as http:
        with http.stream("POST", mock.url + "/v1/chat/completions",
                         json={**OPENAI_BODY, "stream": True},
                         headers={"authorization": "Bearer k", "x-mock-hang": "mid",
                                  "x-mock-hang-after-chunks": "2"}) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.ReadTimeout):
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        received.append(json.loads(line[6:])["choices"][0]["delta"].get("content", ""))
    assert received == ["", "Echo:", " one"]  # role chunk, then exactly 2 content chunks


def test_paced_stream_slower_than_the_read_timeout(mock: MockUpstream) -> None:
    with httpx.Client(timeout=httpx.Timeout(5.0, read=0.2)) as http:
        with http.stream("POST", mock.url + "/v1/chat/completions", json={**OPENAI_BODY, "stream": True},
                         headers={"authorization": "Bearer k", "x-mock-tokens-per-s": "2"}) as response:
            with pytest.raises(httpx.ReadTimeout):
                for _ in response.iter_lines():
                    pass


def test_paced_stream_delivers_everything(mock: MockUpstream) -> None:
    with oai(mock) as c:
        chunks = list(c.chat.completions.create(model="m", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
                                                extra_headers={"x-mock-tokens-per-s": "500"}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "Echo: one two three four five"


# -- cuts and malformed output ------------------------------------------------------------------

def test_cut_mid_stream_openai_sdk_raises_after_k_chunks(mock: MockUpstream) -> None:
    text: list[str] = []
    with oai(mock) as c, pytest.raises(openai.APIConnectionError):
        stream = c.chat.completions.create(model="m", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
                                           extra_headers={"x-mock-cut-after-chunks": "3"})
        for chunk in stream:
            text.append(chunk.choices[0].delta.content or "")
    assert "".join(text) == "Echo: one two"


def test_cut_mid_stream_anthropic_has_no_message_stop(mock: MockUpstream) -> None:
    seen: list[str] = []
    with ant(mock) as c, pytest.raises(Exception, match="incomplete chunked read"):
        for event in c.messages.create(model="claude-mock", max_tokens=50, messages=MESSAGES,  # type: ignore[arg-type]
                                       stream=True, extra_headers={"x-mock-cut-after-chunks": "1"}):
            seen.append(event.type)
    assert "message_stop" not in seen


def test_cut_with_paced_stream_closes_the_connection(mock: MockUpstream) -> None:
    with httpx.Client() as http:
        with http.stream("POST", mock.url + "/v1/chat/completions", json={**OPENAI_BODY, "stream": True},
                         headers={"authorization": "Bearer k", "x-mock-tokens-per-s": "1000",
                                  "x-mock-cut-after-chunks": "1"}) as response:
            with pytest.raises(httpx.RemoteProtocolError):
                response.read()


def test_cut_non_streaming_body(mock: MockUpstream) -> None:
    with oai(mock) as c, pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="m", messages=MESSAGES,  # type: ignore[arg-type]
                                  extra_headers={"x-mock-cut-after-chunks": "0"})


def test_malformed_json_body_makes_the_sdk_raise(mock: MockUpstream) -> None:
    with oai(mock) as c, pytest.raises(json.JSONDecodeError):
        c.chat.completions.create(model="m", messages=MESSAGES,  # type: ignore[arg-type]
                                  extra_headers={"x-mock-malformed": "body"})


def test_malformed_sse_event_makes_the_sdk_raise(mock: MockUpstream) -> None:
    with ant(mock) as c, pytest.raises(json.JSONDecodeError):
        list(c.messages.create(model="claude-mock", max_tokens=50, messages=MESSAGES,  # type: ignore[arg-type]
                               stream=True, extra_headers={"x-mock-malformed": "sse"}))


def test_in_stream_error_event(mock: MockUpstream) -> None:
    with oai(mock) as c, pytest.raises(openai.APIError, match="server had an error"):
        list(c.chat.completions.create(model="m", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
                                       extra_headers={"x-mock-error-after-chunks": "1"}))
    with ant(mock) as a, pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        list(a.messages.create(model="claude-mock", max_tokens=50, messages=MESSAGES,  # type: ignore[arg-type]
                               stream=True, extra_headers={"x-mock-error-after-chunks": "1"}))


# -- context length --------------------------------------------------------------------------------

def test_context_exceeded_openai_code(mock: MockUpstream) -> None:
    with oai(mock) as c, pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="m", messages=MESSAGES,  # type: ignore[arg-type]
                                  extra_headers={"x-mock-context-exceeded": "1"})
    assert info.value.code == "context_length_exceeded"
    assert "maximum context length is 128000 tokens" in info.value.message


def test_context_exceeded_anthropic_message(mock: MockUpstream) -> None:
    with ant(mock) as c, pytest.raises(anthropic.BadRequestError, match=r"prompt is too long: \d+ tokens > 200000 maximum"):
        c.messages.create(model="claude-mock", max_tokens=5, messages=MESSAGES,  # type: ignore[arg-type]
                          extra_headers={"x-mock-context-exceeded": "true"})


@pytest.mark.parametrize("path, body, headers, check", [
    (GEMINI_PATH, GEMINI_BODY, {"x-goog-api-key": "g"},
     lambda e: e["status"] == "INVALID_ARGUMENT" and "exceeds the maximum number of tokens allowed (1048576)" in e["message"]),
    (AZURE_PATH, OPENAI_BODY, {"api-key": "a"}, lambda e: e["code"] == "context_length_exceeded"),
])
def test_context_exceeded_gemini_and_azure(mock: MockUpstream, path: str, body: dict[str, object],
                                           headers: dict[str, str], check: object) -> None:
    response = httpx.post(mock.url + path, json=body, headers={**headers, "x-mock-context-exceeded": "1"})
    assert response.status_code == 400
    assert check(response.json()["error"])  # type: ignore[operator]


def test_context_window_threshold(mock: MockUpstream) -> None:
    headers = {"authorization": "Bearer k", "x-mock-context-tokens": "5"}
    short = {"model": "m", "messages": [{"role": "user", "content": "tiny"}]}
    long = {"model": "m", "messages": [{"role": "user", "content": "x" * 100}]}
    assert httpx.post(mock.url + "/v1/chat/completions", json=short, headers=headers).status_code == 200
    response = httpx.post(mock.url + "/v1/chat/completions", json=long, headers=headers)
    assert response.status_code == 400
    assert "maximum context length is 5 tokens. However, your messages resulted in 25 tokens" in \
        response.json()["error"]["message"]


# -- defaults vs per-request headers ---------------------------------------------------------------

def test_header_beats_cli_default_both_ways() -> None:
    with MockUpstream(status=503, words=3) as failing, httpx.Client(headers={"authorization": "Bearer k"}) as http:
        url = failing.url + "/v1/chat/completions"
        assert http.post(url, json=OPENAI_BODY).status_code == 503
        healthy = http.post(url, json=OPENAI_BODY, headers={"x-mock-status": "none"})
        assert healthy.status_code == 200
        assert healthy.json()["choices"][0]["message"]["content"] == "Echo: one two"  # words=3
        longer = http.post(url, json=OPENAI_BODY, headers={"x-mock-status": "none", "x-mock-words": "5"})
        assert longer.json()["choices"][0]["message"]["content"] == "Echo: one two three four"


def test_invalid_control_header_is_a_400_naming_it(mock: MockUpstream) -> None:
    response = httpx.post(mock.url + "/v1/chat/completions", json=OPENAI_BODY,
                          headers={"authorization": "Bearer k", "x-mock-hang": "sideways"})
    assert response.status_code == 400
    assert "x-mock-hang" in response.json()["error"]["message"]


def test_set_options_turns_a_running_mock_unhealthy(mock: MockUpstream) -> None:
    with MockUpstream() as upstream, httpx.Client(headers={"authorization": "Bearer k"}) as http:
        assert http.post(upstream.url + "/v1/chat/completions", json=OPENAI_BODY).status_code == 200
        upstream.set_options(status=502)
        assert http.post(upstream.url + "/v1/chat/completions", json=OPENAI_BODY).status_code == 502
