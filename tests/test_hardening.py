"""What hostile clients and broken upstreams do to a real gateway process (issue: hardening).

Each test is one finding: idle and half-sent connections, chunked uploads past the limit or
without a key, slow readers of large streams, malformed framing, deep JSON, leaks of upstream
text, and the smaller request checks.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from support import openai_config

MSG = [{"role": "user", "content": "hi"}]
KEY = "client-key-0123456789abcdef"
AUTH = f"auth:\n  keys: [{{name: alice, key: {KEY}}}]\n"
BODY = json.dumps({"model": "m", "messages": MSG}).encode()


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _post_head(length: int | None = None, *, key: bool = True, chunked: bool = False, path: str = "/v1/chat/completions",
               extra: bytes = b"") -> bytes:
    head = b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" % path.encode()
    if key:
        head += b"authorization: Bearer %s\r\n" % KEY.encode()
    if chunked:
        head += b"transfer-encoding: chunked\r\n"
    if length is not None:
        head += b"content-length: %d\r\n" % length
    return head + extra + b"\r\n"


def _exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes; read until the server closes or a whole response with a body arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                piece = s.recv(65536)
            except (ConnectionResetError, TimeoutError, socket.timeout):
                break
            if not piece:
                break
            out += piece
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    return out


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def _chat(gw, **kw) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG},
                      headers={"authorization": f"Bearer {KEY}"}, timeout=kw.get("timeout", 5))


# --- 1. idle and half-sent connections ---------------------------------------------------------------

def test_2100_half_sent_bodies_do_not_stop_normal_requests(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(mock_upstream.url, tail=AUTH))
    held = []
    try:
        for _ in range(2100):  # complete heads and 1 byte of a 1,000-byte body, then silence
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            s.sendall(_post_head(1000) + b"{")
            held.append(s)
        started = time.monotonic()
        for _ in range(3):
            assert _chat(gw).status_code == 200
        assert time.monotonic() - started < 3
    finally:
        for s in held:
            s.close()
    assert _chat(gw).status_code == 200


def test_connections_past_the_limit_are_shed_at_once_and_service_recovers(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(mock_upstream.url, tail="server: {max_connections: 100}\n" + AUTH))
    held = []
    try:
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            s.sendall(_post_head(1000) + b"{")
            held.append(s)
        time.sleep(0.2)
        started = time.monotonic()
        r = _exchange(gw.port, _post_head(len(BODY)) + BODY)
        assert _status(r) == 503 and b"connection limit" in r and time.monotonic() - started < 1
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert _chat(gw).status_code == 200


def test_slow_heads_and_bodies_time_out_with_one_log_line_per_kind(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(mock_upstream.url,
                                     tail="server: {header_timeout: 1, body_timeout: 1}\n" + AUTH))
    socks = []
    for i in range(60):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n" if i % 2 else _post_head(1000) + b"{")
        socks.append(s)
    time.sleep(2.5)
    answers = []
    for s in socks:
        answers.append(_status(s.recv(65536)))
        s.close()
    assert answers.count(408) == 60
    log = gw.log()
    assert "Traceback" not in log
    assert log.count("server.header_timeout") == 1 and log.count("server.body_timeout") == 1


async def test_requests_past_max_inflight_get_a_fast_503_and_health_still_answers(start_gateway):
    from test_disconnect import SlowUpstream

    async with SlowUpstream("hang") as up:
        gw = start_gateway(f"""
server: {{max_inflight: 4}}
upstreams:
  slow: {{provider: openai, base_url: "{up.url}", timeouts: {{first_byte: 1}}}}
models:
  m: {{upstream: slow}}
""")
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
            async def call() -> tuple[int, float, str | None]:
                t0 = time.monotonic()
                r = await c.post("/v1/chat/completions", json={"model": "m", "messages": MSG})
                return r.status_code, time.monotonic() - t0, r.headers.get("retry-after")

            calls = [asyncio.ensure_future(call()) for _ in range(12)]
            await asyncio.sleep(0.3)
            health = await c.get("/health")
            results = await asyncio.gather(*calls)
        assert health.status_code == 200
        shed = [r for r in results if r[0] == 503]
        assert len(shed) == 8 and all(t < 0.5 and ra == "1" for _, t, ra in shed)
        assert sorted(r[0] for r in results if r[0] != 503) == [504] * 4  # admitted: the upstream timed out
        r = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG}, timeout=5)
        assert r.status_code == 504, "not admitted again after the load"


# --- 2. bodies: read no further than needed --------------------------------------------------------

def test_a_huge_chunked_upload_without_a_key_is_refused_before_its_body(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(mock_upstream.url, tail="server: {max_body_bytes: 4000000}\n" + AUTH))
    before = _rss_kb(gw.proc.pid)
    piece = b"x" * 1_000_000
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(_post_head(key=False, chunked=True))
        try:
            for _ in range(150):  # up to 150 MB; the gateway answers and closes long before
                s.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = s.recv(65536)
    assert _status(answer) == 401
    assert _rss_kb(gw.proc.pid) - before < 20_000


def test_a_chunked_upload_stops_being_read_at_the_size_limit(mock_upstream, start_gateway):
    gw = start_gateway(openai_config(mock_upstream.url, tail="server: {max_body_bytes: 1000000}\n" + AUTH))
    before = _rss_kb(gw.proc.pid)
    piece = b"x" * 500_000
    sent = 0
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(_post_head(chunked=True))
        try:
            for _ in range(300):
                s.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = s.recv(65536)
    assert _status(answer) == 413 and b"request_too_large" in answer
    assert sent < 150_000_000, "the gateway kept reading"
    assert _rss_kb(gw.proc.pid) - before < 20_000


# --- 3. a slow reader of a large stream ------------------------------------------------------------

async def test_a_client_that_reads_nothing_makes_the_gateway_stop_reading_the_upstream(start_gateway):
    sent = 0
    closed = asyncio.Event()
    event = b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "x" * 60000}}]}).encode() + b"\n\n"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(850):  # ~50 MB, as fast as the gateway takes it
                writer.write(b"%x\r\n%b\r\n" % (len(event), event))
                await writer.drain()
                sent += len(event)
        except ConnectionError:
            pass
        finally:
            closed.set()
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = start_gateway(f"""
server: {{write_timeout: 3}}
upstreams:
  big: {{provider: openai, base_url: "http://127.0.0.1:{port}/v1"}}
models:
  m: {{upstream: big}}
""")
        before = _rss_kb(gw.proc.pid)
        body = json.dumps({"model": "m", "stream": True, "messages": MSG}).encode()
        with socket.create_connection(("127.0.0.1", gw.port)) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            client.sendall(_post_head(len(body), key=False) + body)
            await asyncio.sleep(1.5)  # read nothing: socket buffers fill, then the gateway must stop reading
            plateau = sent
            await asyncio.sleep(1.0)
            assert sent == plateau, f"the gateway kept reading the upstream ({plateau} -> {sent} bytes)"
            assert plateau < 25_000_000  # of ~50 MB: what kernel socket buffers hold, not the whole stream
            assert _rss_kb(gw.proc.pid) - before < 20_000
            await asyncio.wait_for(closed.wait(), 5)  # write_timeout ended the request and its upstream call
            assert sent == plateau
    finally:
        server.close()
    assert httpx.get(f"{gw.url}/health").status_code == 200


# --- 5. malformed framing and deep JSON are 4xx, never a 500 --------------------------------------

@pytest.mark.parametrize("raw, status", [
    (_post_head(5, chunked=True) + b"0\r\n\r\n", 400),  # Content-Length and chunked together
    (_post_head(chunked=True) + b"zz\r\nabc\r\n", 400),  # a malformed chunk size
    (b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 40_000 + b"\r\n\r\n", 431),
])
def test_malformed_framing_is_a_4xx_with_an_error_body(mock_upstream, start_gateway, raw, status):
    gw = start_gateway(openai_config(mock_upstream.url, tail=AUTH))
    answer = _exchange(gw.port, raw)
    assert _status(answer) == status
    assert b'"error"' in answer
    assert "Traceback" not in gw.log()


@pytest.mark.parametrize("model, auth", [("alias", False), ("m", True)])
def test_deeply_nested_json_is_a_400(mock_upstream, start_gateway, model, auth):
    gw = start_gateway(openai_config(mock_upstream.url, extra_models="  alias: {upstream: mock, model: other}",
                                     tail=AUTH if auth else ""))
    for depth in (251, 600, 1020):
        body = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "x": %s%s}' % (
            model.encode(), b"[" * depth, b"]" * depth)
        r = httpx.post(f"{gw.base_url}/chat/completions", content=body, timeout=5,
                       headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"})
        assert r.status_code == 400 and "deeper than" in r.json()["error"]["message"]


# --- 6. the smaller findings ----------------------------------------------------------------------------

async def test_upstream_error_text_never_carries_the_upstream_key(start_gateway):
    secret = "sk-canary-upstream-key-9f8e7d6c5b4a"

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        body = json.dumps({"error": {"message": f"bad request; you sent: {head}", "type": "invalid_request_error"}})
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                     % (len(body), body.encode()))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = start_gateway(f"""
upstreams:
  echo: {{provider: openai, base_url: "http://127.0.0.1:{port}/v1", api_key: {secret}}}
models:
  m: {{upstream: echo}}
""")
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG})
            s = await c.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG, "stream": True})
    finally:
        server.close()
    assert r.status_code == 400 and "you sent" in r.text
    for text in (r.text, s.text, gw.log()):
        assert secret not in text and "canary-upstream" not in text


@pytest.mark.parametrize("raw, status, code", [
    (b"POST /v1/chat%2Fcompletions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: Bearer "
     + KEY.encode() + b"\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY, 404, b"not_found"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: Application/JSON; charset=UTF-8\r\n"
     b"authorization: Bearer " + KEY.encode() + b"\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY, 200, b""),
    (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
     b"authorization: Bearer \xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY,
     401, b"invalid_api_key"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n"
     b"{no json}", 401, b"missing_api_key"),  # authenticate before judging the body
])
def test_paths_media_types_and_keys(mock_upstream, start_gateway, raw, status, code):
    gw = start_gateway(openai_config(mock_upstream.url, tail=AUTH))
    answer = _exchange(gw.port, raw)
    assert _status(answer) == status and code in answer


@pytest.mark.parametrize("extra, param", [
    ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"max_tokens": -5}, "max_tokens"),
    ({"max_tokens": 10**12}, "max_tokens"),
    ({"max_completion_tokens": "many"}, "max_completion_tokens"),
    ({"n": 0}, "n"),
    ({"temperature": "hot"}, "temperature"),
    ({"stream_options": "yes"}, "stream_options"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
])
def test_fields_the_gateway_relies_on_are_validated_and_named(mock_upstream, start_gateway, extra, param):
    gw = start_gateway(openai_config(mock_upstream.url))
    before = mock_upstream.stats()["requests"]
    r = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "m", "messages": MSG, **extra}, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert mock_upstream.stats()["requests"] == before, "an invalid request reached the upstream"
