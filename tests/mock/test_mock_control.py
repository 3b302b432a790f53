"""Control endpoints, HTTP/1.1 handling, and the ways to run the mock."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading

import httpx
import pytest
from llmgw.mock import MockUpstream, add_arguments
from llmgw.mock.options import MockOptions, options_from_args

AUTH = {"authorization": "Bearer k"}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_stats_count_per_path_and_status_and_reset_clears(mock: MockUpstream) -> None:
    with httpx.Client(base_url=mock.url, headers=AUTH) as http:
        http.post("/v1/chat/completions", json=BODY)
        http.post("/v1/chat/completions", json=BODY, headers={"x-mock-status": "429"})
        http.post("/v1/embeddings", json={"model": "e", "input": "x"})
        http.get("/nowhere")
        stats = http.get("/_mock/stats").json()
        assert stats == {"requests": 4,
                         "by_path": {"/v1/chat/completions": 2, "/v1/embeddings": 1, "/nowhere": 1},
                         "by_status": {"200": 2, "404": 1, "429": 1}}
        assert mock.stats() == stats
        assert http.post("/_mock/reset").json() == {"reset": True}
        assert http.get("/_mock/stats").json() == {"requests": 0, "by_path": {}, "by_status": {}}


def test_last_request_reports_method_path_query_headers_and_body(mock: MockUpstream) -> None:
    with httpx.Client(base_url=mock.url) as http:
        assert http.get("/_mock/last-request").status_code == 404
        http.post("/v1/chat/completions?trace=1&x=y", json=BODY,
                  headers={**AUTH, "x-custom": "abc", "x-mock-words": "2"})
        last = http.get("/_mock/last-request").json()
    assert last["method"] == "POST"
    assert last["path"] == "/v1/chat/completions"
    assert last["query"] == {"trace": "1", "x": "y"}
    assert last["query_string"] == "trace=1&x=y"
    assert last["headers"]["authorization"] == "Bearer k"  # nothing redacted
    assert last["headers"]["x-custom"] == "abc"
    assert last["body"] == BODY
    assert mock.last_request() == last


def test_last_request_keeps_a_non_json_body_as_text(mock: MockUpstream) -> None:
    response = httpx.post(mock.url + "/v1/chat/completions", content=b"not json", headers=AUTH)
    assert response.status_code == 400
    last = mock.last_request()
    assert last is not None and last["body"] is None and last["body_text"] == "not json"


def test_keep_alive_reuses_one_connection(mock: MockUpstream) -> None:
    opened: list[object] = []
    with httpx.Client(base_url=mock.url, headers=AUTH) as http:
        for _ in range(5):
            response = http.post("/v1/chat/completions", json=BODY, extensions={"trace": lambda name, info: opened.append(name) if name == "connection.connect_tcp.complete" else None})
            assert response.status_code == 200
    assert len(opened) == 1


def test_chunked_request_body(mock: MockUpstream) -> None:
    def parts():  # a generator body makes httpx use Transfer-Encoding: chunked
        yield b'{"model": "m", "messages": [{"role": "user", '
        yield b'"content": "chunked body"}]}'

    response = httpx.post(mock.url + "/v1/chat/completions", content=parts(), headers=AUTH)
    assert response.json()["choices"][0]["message"]["content"] == "Echo: chunked body"
    last = mock.last_request()
    assert last is not None and last["headers"]["transfer-encoding"] == "chunked"


def _raw_exchange(port: int, payload: bytes, expect_responses: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while data.count(b"HTTP/1.1 ") < expect_responses or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_pipelined_requests_are_answered_in_order(mock: MockUpstream) -> None:
    def request(text: str) -> bytes:
        body = ('{"model":"m","messages":[{"role":"user","content":"%s"}]}' % text).encode()
        return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n"
                b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))

    data = _raw_exchange(mock.port, request("first") + request("second"), 2)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b"Echo: first") < data.index(b"Echo: second")


def test_garbage_gets_400_and_close(mock: MockUpstream) -> None:
    data = _raw_exchange(mock.port, b"NOT HTTP AT ALL\r\n\r\n", 1)
    assert data.startswith(b"HTTP/1.1 400 Bad Request")
    assert b"connection: close" in data


def test_unknown_route_and_wrong_method(mock: MockUpstream) -> None:
    assert httpx.post(mock.url + "/v2/whatever", headers=AUTH).status_code == 404
    response = httpx.get(mock.url + "/v1/chat/completions", headers=AUTH)
    assert response.status_code == 405


def test_stop_closes_hung_connections_and_the_thread() -> None:
    threads_before = threading.active_count()
    upstream = MockUpstream(hang="before").start()
    client = httpx.Client(timeout=5)
    errors: list[BaseException] = []

    def hung_call() -> None:
        try:
            client.post(upstream.url + "/v1/chat/completions", json=BODY, headers=AUTH)
        except httpx.HTTPError as exc:
            errors.append(exc)

    caller = threading.Thread(target=hung_call)
    caller.start()
    while not upstream.stats()["requests"]:
        threading.Event().wait(0.01)
    upstream.stop()
    caller.join(timeout=5)
    client.close()
    assert not caller.is_alive()
    assert len(errors) == 1  # the server went away: the client saw a transport error, not a hang
    assert threading.active_count() == threads_before
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", upstream.port), timeout=1).close()


def test_start_twice_is_an_error() -> None:
    with MockUpstream() as upstream:
        with pytest.raises(RuntimeError):
            upstream.start()


def test_add_arguments_maps_flags_to_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--port", "0", "--latency-ms", "5", "--status", "429", "--fail-rate", "0.25",
                              "--retry-after", "3", "--hang", "mid", "--cut-after-chunks", "2",
                              "--context-exceeded", "--no-auth", "--words", "7"])
    options = options_from_args(args)
    assert options == MockOptions(latency_ms=5.0, status=429, fail_rate=0.25, retry_after=3.0, hang="mid",
                                  cut_after_chunks=2, context_exceeded=True, require_auth=False, words=7)
    assert args.host == "127.0.0.1"
    with pytest.raises(SystemExit):
        parser.parse_args(["--status", "200"])  # not an error status


def test_python_dash_m_serves_until_terminated() -> None:
    process = subprocess.Popen([sys.executable, "-m", "llmgw.mock", "--port", "0", "--no-auth"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        response = httpx.post(url + "/v1/chat/completions", json=BODY)
        assert response.json()["choices"][0]["message"]["content"] == "Echo: hi"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        if process.stdout is not None:
            process.stdout.close()


def test_expect_100_continue_is_answered(mock: MockUpstream) -> None:
    body = b'{"model":"m","messages":[{"role":"user","content":"expecting"}]}'
    with socket.create_connection(("127.0.0.1", mock.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n"
                     b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(body))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        data = b""
        while not data.endswith(b"}"):
            data += sock.recv(65536)
    assert b"HTTP/1.1 200 OK" in data and b"Echo: expecting" in data


def test_http10_stream_is_close_delimited(mock: MockUpstream) -> None:
    body = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"old client"}]}'
    data = _raw_exchange(mock.port, b"POST /v1/chat/completions HTTP/1.0\r\nauthorization: Bearer k\r\n"
                                    b"content-length: %d\r\n\r\n%b" % (len(body), body), 1)
    head, _, payload = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head and b"connection: close" in head
    assert payload.startswith(b"data: {") and payload.endswith(b"data: [DONE]\n\n")


def test_cli_faults_spare_control_endpoints_and_error_bodies() -> None:
    with MockUpstream(hang="before", hang_ms=0) as hanging:
        assert httpx.get(hanging.url + "/_mock/stats", timeout=5).status_code == 200
    with MockUpstream(cut_after_chunks=0, status=429) as cutting:
        response = httpx.post(cutting.url + "/v1/chat/completions", json=BODY, headers=AUTH)
        assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limit_exceeded"
