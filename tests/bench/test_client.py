import socket

import pytest

from llmgw.bench.client import BenchClient, ChatRequestSpec, SseEventSplitter

from .conftest import STREAM_PIECES, MockOpenAI


def _client(url: str, **kw: object) -> BenchClient:
    spec = ChatRequestSpec(base_url=url, model="m", prompt="hello", **kw)  # type: ignore[arg-type]
    return BenchClient(spec, max_connections=4)


async def test_completion_reports_status_and_usage_tokens(server: MockOpenAI) -> None:
    client = _client(server.url("ok"), max_tokens=9, api_key="sk-test")
    try:
        r = await client.send()
    finally:
        await client.aclose()
    assert r.ok and r.status == 200 and r.output_tokens == 7
    assert r.ttft is None and r.latency > 0
    assert server.bodies == [{"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 9}]
    assert server.headers[0]["authorization"] == "Bearer sk-test"


async def test_completion_without_usage_is_ok_but_has_no_token_count(server: MockOpenAI) -> None:
    client = _client(server.url("nousage"))
    try:
        r = await client.send()
    finally:
        await client.aclose()
    assert r.ok and r.output_tokens is None


@pytest.mark.parametrize("behaviour", ["stream", "streamcrlf"])
async def test_stream_measures_ttft_and_gaps_between_content_deltas(server: MockOpenAI, behaviour: str) -> None:
    client = _client(server.url(behaviour), stream=True)
    try:
        r = await client.send()
    finally:
        await client.aclose()
    assert r.ok, r.error_detail
    assert r.ttft is not None and 0 < r.ttft <= r.latency
    assert len(r.chunk_gaps) == len(STREAM_PIECES) - 1
    assert r.output_tokens == 3
    assert server.bodies[0]["stream"] is True
    assert server.bodies[0]["stream_options"] == {"include_usage": True}


async def test_stream_usage_option_can_be_left_out(server: MockOpenAI) -> None:
    client = _client(server.url("stream"), stream=True, stream_usage=False)
    try:
        await client.send()
    finally:
        await client.aclose()
    assert "stream_options" not in server.bodies[0]


@pytest.mark.parametrize(("behaviour", "stream", "kind"), [
    ("status500", False, "http_500"),
    ("status429", True, "http_429"),
    ("notjson", False, "malformed_response"),
    ("nochoices", False, "malformed_response"),
    ("close", False, "connection"),
    ("streamtruncated", True, "malformed_stream"),
    ("streambadjson", True, "malformed_stream"),
    ("streamerror", True, "stream_error"),
])
async def test_failures_are_classified_by_kind(server: MockOpenAI, behaviour: str, stream: bool, kind: str) -> None:
    client = _client(server.url(behaviour), stream=stream)
    try:
        r = await client.send()
    finally:
        await client.aclose()
    assert r.error == kind, r.error_detail
    assert r.error_detail


async def test_no_answer_within_the_timeout_is_a_timeout(server: MockOpenAI) -> None:
    client = _client(server.url("hang"), timeout=0.2)
    try:
        r = await client.send()
    finally:
        await client.aclose()
    assert r.error == "timeout"


async def test_nothing_listening_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}/v1")
    try:
        r = await client.send()
    finally:
        await client.aclose()
    assert r.error == "connection"


def test_sse_splitter_gives_the_same_events_however_the_bytes_are_cut() -> None:
    stream = (b": comment\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata:line2\n\n"
              b"data: [DONE]\r\r")
    expected = [b'{"a":1}', b"line1\nline2", b"[DONE]"]
    for cut in range(len(stream) + 1):
        splitter = SseEventSplitter()
        got = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:]) + splitter.finish()
        assert got == expected, cut
    bytewise = SseEventSplitter()
    got = [e for i in range(len(stream)) for e in bytewise.feed(stream[i:i + 1])] + bytewise.finish()
    assert got == expected


def test_exceptions_map_to_kinds() -> None:
    from llmgw.bench.client import _classify_exception
    from llmgw.transport import ConnectError, UpstreamProtocolError, UpstreamTimeout

    assert _classify_exception(UpstreamTimeout("slow", phase="first_byte")) == "timeout"
    assert _classify_exception(TimeoutError()) == "timeout"
    assert _classify_exception(ConnectError("refused", sent=False)) == "connection"
    assert _classify_exception(UpstreamProtocolError("closed early")) == "connection"
    assert _classify_exception(ConnectionResetError()) == "connection"
    assert _classify_exception(ValueError("a bug")) == "other"
