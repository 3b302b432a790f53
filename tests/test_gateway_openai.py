"""The official openai SDK against a real gateway process in front of the mock upstream."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from support import openai_config


@pytest.fixture(scope="module")
def gw(mock_upstream, tmp_path_factory):
    from support import GatewayProcess

    path = tmp_path_factory.mktemp("gw") / "gateway.yaml"
    slow = "{x-mock-tokens-per-s: '20', x-mock-words: '10'}"
    path.write_text(openai_config(
        mock_upstream.url,
        timeouts="    timeouts: {first_byte: 1.5, idle: 1.5, total: 20}",
        extra_upstreams=f"""
  slow:
    provider: openai
    base_url: {mock_upstream.url}/v1
    api_key: sk-upstream-secret-123456
    headers: {slow}
  ratelimited:
    provider: openai
    base_url: {mock_upstream.url}/v1
    api_key: sk-upstream-secret-123456
    headers: {{x-mock-status: '429', x-mock-retry-after: '7'}}
  broken:
    provider: openai
    base_url: {mock_upstream.url}/v1
    api_key: sk-upstream-secret-123456
    headers: {{x-mock-status: '500'}}
  context:
    provider: openai
    base_url: {mock_upstream.url}/v1
    api_key: sk-upstream-secret-123456
    headers: {{x-mock-context-exceeded: 'true'}}
  hanging:
    provider: openai
    base_url: {mock_upstream.url}/v1
    api_key: sk-upstream-secret-123456
    headers: {{x-mock-hang: before}}
    timeouts: {{first_byte: 0.5}}
  cut:
    provider: openai
    base_url: {mock_upstream.url}/v1
    api_key: sk-upstream-secret-123456
    headers: {{x-mock-cut-after-chunks: '2'}}
  garbage:
    provider: openai
    base_url: {mock_upstream.url}/v1
    api_key: sk-upstream-secret-123456
    headers: {{x-mock-malformed: body}}
  badkey:
    provider: openai
    base_url: {mock_upstream.url}/v1
    api_key: sk-wrong-upstream-secret-999
    headers: {{x-mock-status: '401'}}
  down:
    provider: openai
    base_url: http://127.0.0.1:9/v1
""",
        extra_models="""
  slow-model: {upstream: slow}
  limited: {upstream: ratelimited}
  broken: {upstream: broken}
  tiny-context: {upstream: context}
  hangs: {upstream: hanging}
  cuts: {upstream: cut}
  garbage: {upstream: garbage}
  badkey: {upstream: badkey}
  down: {upstream: down}
""",
        tail="server: {max_body_bytes: 20000}",
    ))
    proc = GatewayProcess(path)
    yield proc
    proc.stop()


MSG = [{"role": "user", "content": "hello gateway world"}]


def client(gw, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, **kw)


def test_sync_completion_reaches_upstream_with_the_configured_model_and_key(gw, mock_upstream):
    resp = client(gw).chat.completions.create(model="m", messages=MSG)
    assert resp.choices[0].message.content == "Echo: hello gateway world"
    assert resp.usage is not None and resp.usage.completion_tokens == 4
    seen = mock_upstream.last_request()
    assert seen["body"]["model"] == "mock-model"  # the route's upstream name, not the alias
    assert seen["headers"]["authorization"] == "Bearer sk-upstream-secret-123456"


def test_client_credentials_are_not_forwarded_upstream(gw, mock_upstream):
    openai.OpenAI(base_url=gw.base_url, api_key="sk-client-own-key", max_retries=0).chat.completions.create(
        model="m", messages=MSG)
    assert "sk-client-own-key" not in str(mock_upstream.last_request()["headers"])


async def test_async_completion_and_concurrency(gw):
    async with openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0) as c:
        results = await asyncio.gather(*[
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"number {i}"}])
            for i in range(20)
        ])
    assert sorted(r.choices[0].message.content for r in results) == sorted(f"Echo: number {i}" for i in range(20))


def test_sync_stream_with_usage(gw):
    stream = client(gw).chat.completions.create(model="m", messages=MSG, stream=True,
                                                stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello gateway world"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


async def test_async_stream(gw):
    async with openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0) as c:
        stream = await c.chat.completions.create(model="m", messages=MSG, stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == "Echo: hello gateway world"


def test_stream_arrives_chunk_by_chunk(gw):
    # The slow upstream sends 10 words at 20 words/s (~0.5 s). If the gateway buffered, every
    # chunk would arrive at once at the end.
    arrivals = []
    with client(gw).chat.completions.create(model="slow-model", messages=MSG, stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic())
    assert len(arrivals) >= 10
    assert arrivals[-1] - arrivals[0] > 0.25, "chunks were delivered together: the stream was buffered"


def test_models_lists_configured_models(gw):
    ids = {m.id for m in client(gw).models.list()}
    assert {"m", "slow-model", "limited"} <= ids


def test_health_and_ready(gw):
    assert httpx.get(f"{gw.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{gw.url}/ready").json()["status"] == "ready"


# -- client errors ------------------------------------------------------------------------------

def _post(gw, body: bytes | str, content_type: str = "application/json") -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", content=body, headers={"content-type": content_type})


@pytest.mark.parametrize(
    "body, status, code, param",
    [
        (b"{not json", 400, "invalid_json", None),
        (b"[1, 2]", 400, "invalid_type", "body"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "missing_required_parameter", "model"),
        (b'{"model": "m"}', 400, "missing_required_parameter", "messages"),
        (b'{"model": "m", "messages": []}', 400, "invalid_type", "messages"),
        (b'{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}', 400, "invalid_value", "messages[0].role"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', 400, "invalid_type", "stream"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "model_not_found", "model"),
    ],
)
def test_bad_requests_get_openai_style_errors(gw, body, status, code, param):
    r = _post(gw, body)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == code and err["param"] == param and err["message"]


def test_wrong_content_type_is_415(gw):
    r = _post(gw, b'{"model": "m"}', "text/plain")
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


def test_body_too_large_is_413(gw):
    big = '{"model": "m", "messages": [{"role": "user", "content": "' + "x" * 30000 + '"}]}'
    r = _post(gw, big)
    assert r.status_code == 413 and "20000" in r.json()["error"]["message"]


def test_unknown_path_and_wrong_method(gw):
    assert httpx.get(f"{gw.url}/v1/nothing").status_code == 404
    r = httpx.get(f"{gw.base_url}/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_sdk_sees_not_found_for_unknown_model(gw):
    with pytest.raises(openai.NotFoundError):
        client(gw).chat.completions.create(model="no-such-model", messages=MSG)


# -- upstream failures --------------------------------------------------------------------------

def test_upstream_429_stays_429_with_retry_after(gw):
    with pytest.raises(openai.RateLimitError) as exc:
        client(gw).chat.completions.create(model="limited", messages=MSG)
    assert exc.value.response.headers["retry-after"] == "7"


def test_upstream_500_becomes_502(gw):
    with pytest.raises(openai.APIStatusError) as exc:
        client(gw).chat.completions.create(model="broken", messages=MSG)
    assert exc.value.status_code == 502
    assert exc.value.body["code"] == "upstream_http_500"


def test_context_length_error_keeps_its_meaning(gw):
    with pytest.raises(openai.BadRequestError) as exc:
        client(gw).chat.completions.create(model="tiny-context", messages=MSG)
    assert exc.value.body["code"] == "context_length_exceeded"


def test_upstream_hanging_before_headers_times_out_as_504(gw):
    with pytest.raises(openai.APIStatusError) as exc:
        client(gw).chat.completions.create(model="hangs", messages=MSG)
    assert exc.value.status_code == 504 and exc.value.body["code"] == "upstream_timeout"


def test_upstream_unreachable_is_502(gw):
    with pytest.raises(openai.APIStatusError) as exc:
        client(gw).chat.completions.create(model="down", messages=MSG)
    assert exc.value.status_code == 502 and exc.value.body["code"] == "upstream_unreachable"


def test_malformed_upstream_json_is_502(gw):
    with pytest.raises(openai.APIStatusError) as exc:
        client(gw).chat.completions.create(model="garbage", messages=MSG)
    assert exc.value.status_code == 502


def test_upstream_rejecting_gateway_key_is_502_and_leaks_no_key(gw):
    r = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "badkey", "messages": MSG})
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_auth_failed"
    assert "sk-wrong" not in r.text and "secret" not in r.text
    assert "sk-wrong" not in gw.log() and "sk-upstream-secret" not in gw.log()


def test_stream_cut_mid_way_ends_with_an_explicit_error(gw):
    got = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in client(gw).chat.completions.create(model="cuts", messages=MSG, stream=True):
            if chunk.choices:
                got.append(chunk.choices[0].delta.content or "")
    assert got, "the chunks before the cut are delivered"
    assert "before [DONE]" in str(exc.value) or "closed" in str(exc.value)


def test_stream_error_before_first_byte_is_a_plain_http_error(gw):
    with pytest.raises(openai.RateLimitError):
        client(gw).chat.completions.create(model="limited", messages=MSG, stream=True)


def test_gateway_keeps_serving_after_errors(gw):
    assert client(gw).chat.completions.create(model="m", messages=MSG).choices[0].message.content
