"""The upstream transport against small real HTTP servers on loopback (plain and TLS)."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme

from llmgw.transport import (
    ConnectError,
    PoolTimeout,
    Timeouts,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamTimeout,
)


class Server:
    """A scriptable HTTP/1.1 server: `handler(method, path, body) -> list of raw byte pieces`
    (None in the list = close the connection; a float = sleep that many seconds)."""

    def __init__(self, handler, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_ctx = ssl_ctx
        self.connections = 0
        self.open_now = 0
        self.max_open = 0
        self.requests = 0
        self.heads: list[str] = []  # each request's head, as received
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        scheme = "https" if self.ssl_ctx else "http"
        self.url = f"{scheme}://{'localhost' if self.ssl_ctx else '127.0.0.1'}:{self.port}/v1"
        return self

    async def __aexit__(self, *exc) -> None:
        for w in self.writers:
            w.close()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head.decode())
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ")
                length = next((int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length")), 0)
                body = await reader.readexactly(length)
                self.requests += 1
                for piece in await self.handler(method, path, body):
                    if piece is None:
                        writer.close()
                        return
                    if isinstance(piece, float):
                        await asyncio.sleep(piece)
                        continue
                    writer.write(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.open_now -= 1
            writer.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_content_length_body_and_keepalive_reuse():
    async def handler(method, path, body):
        return [ok(b'{"path":"%s","len":%d}' % (path.encode(), len(body)))]

    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url)
        for i in range(5):
            resp = await pool.request("POST", "/chat/completions", [("content-type", "application/json")], b"x" * i)
            assert resp.status == 200
            assert await resp.read() == b'{"path":"/v1/chat/completions","len":%d}' % i
        assert srv.connections == 1, "keep-alive connection was not reused"
        await pool.aclose()


async def test_per_request_headers_are_sent_beside_the_routes_cached_ones():
    async def handler(method, path, body):
        return [ok()]

    fixed = [("content-type", "application/json"), ("authorization", "Bearer k")]
    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url)
        for i in range(3):
            resp = await pool.request("POST", "/chat/completions", fixed, b"{}", extra=[("traceparent", f"00-{i}")])
            await resp.read()
        resp = await pool.request("POST", "/chat/completions", fixed, b"{}")
        await resp.read()
        await pool.aclose()
    for i, head in enumerate(srv.heads[:3]):
        lines = head.split("\r\n")
        assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
        assert f"traceparent: 00-{i}" in lines and "authorization: Bearer k" in lines and "content-length: 2" in lines
    assert "traceparent" not in srv.heads[3]
    assert len(pool._heads) == 1, "a per-request header must not make the route's header block a cache miss"


async def test_chunked_body_streams_piece_by_piece():
    async def handler(method, path, body):
        return [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", b"5\r\nhello\r\n", 0.05,
                b"6\r\n world\r\n", b"0\r\n\r\n"]

    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url)
        resp = await pool.request("POST", "/x", [], b"")
        pieces = [p async for p in resp]
        assert b"".join(pieces) == b"hello world" and len(pieces) == 2
        resp2 = await pool.request("POST", "/x", [], b"")
        assert await resp2.read() == b"hello world"
        assert srv.connections == 1
        await pool.aclose()


async def test_connection_closed_by_server_while_idle_is_not_used():
    async def handler(method, path, body):
        return [ok(extra=b"connection: keep-alive\r\n"), 0.01, None]  # answer, then close the idle connection

    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url)
        assert await (await pool.request("GET", "/a", [], b"")).read() == b'{"ok":true}'
        await asyncio.sleep(0.1)  # the server has closed it by now
        assert await (await pool.request("GET", "/b", [], b"")).read() == b'{"ok":true}'
        assert srv.connections == 2 and srv.requests == 2
        assert pool.stats()["open"] <= 1
        await pool.aclose()


async def test_request_already_sent_is_not_retried_when_connection_drops():
    async def handler(method, path, body):
        return [None]  # read the request, then hang up without answering

    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url)
        with pytest.raises(UpstreamProtocolError):
            await pool.request("POST", "/x", [], b"{}")
        assert srv.requests == 1, "a POST that reached the server must not be sent twice"
        await pool.aclose()


async def test_connection_limit_queues_requests():
    async def handler(method, path, body):
        return [0.05, ok()]

    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url, max_connections=2)

        async def one():
            return await (await pool.request("GET", "/", [], b"")).read()

        results = await asyncio.gather(*[one() for _ in range(8)])
        assert results == [b'{"ok":true}'] * 8
        assert srv.max_open <= 2 and srv.connections == 2
        assert pool.stats() == {"open": 2, "idle": 2, "waiting": 0}
        await pool.aclose()


async def test_first_byte_timeout():
    async def handler(method, path, body):
        return [2.0, ok()]

    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url)
        with pytest.raises(UpstreamTimeout) as exc:
            await pool.request("GET", "/", [], b"", timeout=Timeouts(first_byte=0.2))
        assert exc.value.phase == "first_byte"
        assert pool.stats()["open"] == 0, "a timed-out connection must not stay in the pool"
        await pool.aclose()


async def test_idle_timeout_between_chunks():
    async def handler(method, path, body):
        return [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n", 2.0, b"0\r\n\r\n"]

    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url)
        resp = await pool.request("GET", "/", [], b"", timeout=Timeouts(idle=0.2))
        got = []
        with pytest.raises(UpstreamTimeout) as exc:
            async for piece in resp:
                got.append(piece)
        assert got == [b"hello"] and exc.value.phase == "idle"
        await pool.aclose()


async def test_total_timeout_bounds_a_slow_trickle():
    async def handler(method, path, body):
        head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        return [head] + [b"1\r\nx\r\n", 0.1] * 20 + [b"0\r\n\r\n"]

    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url)
        resp = await pool.request("GET", "/", [], b"", timeout=Timeouts(idle=1.0, total=0.5))
        with pytest.raises(UpstreamTimeout) as exc:
            await resp.read()
        assert exc.value.phase == "total"
        await pool.aclose()


async def test_connect_refused_is_a_connect_error_marked_unsent():
    pool = UpstreamPool("http://127.0.0.1:9/v1")
    with pytest.raises(ConnectError) as exc:
        await pool.request("GET", "/", [], b"")
    assert exc.value.sent is False
    assert pool.stats()["open"] == 0


async def test_cancelled_request_frees_its_connection():
    calls = []

    async def handler(method, path, body):
        calls.append(path)
        return [5.0, ok()] if len(calls) == 1 else [ok()]

    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url, max_connections=1)
        task = asyncio.ensure_future(pool.request("GET", "/", [], b""))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.stats()["open"] == 0
        # With one connection allowed, the next request gets a fresh one at once.
        resp = await pool.request("GET", "/next", [], b"", timeout=Timeouts(first_byte=1.0))
        assert await resp.read() == b'{"ok":true}'
        assert srv.connections == 2
        await pool.aclose()


async def test_cancelled_body_read_frees_its_connection_and_slot():
    async def handler(method, path, body):
        if path.endswith("/slow"):  # the head at once, the body never
            return [b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc", 30.0]
        return [ok()]

    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url, max_connections=1)
        resp = await pool.request("GET", "/slow", [], b"")
        task = asyncio.ensure_future(resp.read())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.stats() == {"open": 0, "idle": 0, "waiting": 0}, "the cancelled read kept its connection"
        resp = await pool.request("GET", "/next", [], b"", timeout=Timeouts(first_byte=1.0, pool=1.0))
        assert await resp.read() == b'{"ok":true}'
        await pool.aclose()


async def test_waiting_for_a_free_connection_times_out_with_its_own_error():
    async def handler(method, path, body):
        return [2.0, ok()]

    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url, max_connections=1)
        busy = asyncio.ensure_future(pool.request("GET", "/busy", [], b""))
        await asyncio.sleep(0.05)
        timing = _Timing()
        with pytest.raises(PoolTimeout) as exc:
            await pool.request("GET", "/", [], b"", timeout=Timeouts(pool=0.2), timing=timing)
        assert exc.value.sent is False and "no free connection" in str(exc.value)
        assert timing.sent is False and timing.queue_s == 0.0
        assert pool.stats()["waiting"] == 0
        await (await busy).read()
        await pool.aclose()


class _Timing:
    queue_s = connect_s = 0.0
    ttfb_s = None
    sent = False


async def test_request_timing_records_queue_connect_and_first_byte():
    async def handler(method, path, body):
        return [0.05, ok()]

    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url, max_connections=1)
        first, second = _Timing(), _Timing()

        async def fetch(timing: _Timing) -> bytes:
            return await (await pool.request("GET", "/", [], b"", timing=timing)).read()

        await asyncio.gather(fetch(first), fetch(second))
        assert first.sent and first.connect_s > 0 and first.ttfb_s >= 0.04
        # The second waited for the first's connection and reused it.
        assert second.queue_s >= 0.04 and second.connect_s == 0.0
        await pool.aclose()


async def test_connections_idle_past_the_keepalive_are_closed_after_a_burst():
    async def handler(method, path, body):
        return [0.05, ok()]

    async with Server(handler) as srv:
        pool = UpstreamPool(srv.url, idle_keepalive=0.2)

        async def fetch() -> bytes:
            return await (await pool.request("GET", "/", [], b"")).read()

        await asyncio.gather(*[fetch() for _ in range(6)])  # a burst: 6 connections
        assert pool.stats() == {"open": 6, "idle": 6, "waiting": 0}
        await asyncio.sleep(0.1)
        await fetch()  # steady traffic: one connection stays in use
        await asyncio.sleep(0.15)
        assert pool.stats() == {"open": 1, "idle": 1, "waiting": 0}, "the burst's leftovers stayed open"
        await asyncio.sleep(0.3)
        assert pool.stats() == {"open": 0, "idle": 0, "waiting": 0}, "idle connections outlived the keep-alive"
        await pool.aclose()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(ctx)
    return ctx


async def test_tls_upstream_with_verified_certificate(ca):
    async def handler(method, path, body):
        return [ok(b'{"tls":true}')]

    async with Server(handler, _server_ctx(ca)) as srv:
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        pool = UpstreamPool(srv.url, ssl_context=client_ctx)
        for _ in range(3):
            assert await (await pool.request("POST", "/x", [], b"{}")).read() == b'{"tls":true}'
        assert srv.connections == 1
        await pool.aclose()


async def test_tls_upstream_with_untrusted_certificate_is_refused(ca):
    async def handler(method, path, body):
        return [ok()]

    async with Server(handler, _server_ctx(ca)) as srv:
        pool = UpstreamPool(srv.url)  # system trust store: the test CA is not in it
        with pytest.raises(ConnectError) as exc:
            await pool.request("POST", "/x", [], b"{}")
        assert "TLS" in str(exc.value) and exc.value.sent is False
        assert srv.requests == 0
        await pool.aclose()


def test_bad_base_url_is_rejected():
    with pytest.raises(ValueError):
        UpstreamPool("ftp://example.com")
