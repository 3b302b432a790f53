"""HTTPS upstreams: the gateway verifies the upstream's certificate against the configured CA."""

from __future__ import annotations

import asyncio
import ssl

import httpx
import trustme

ANSWER = (b'{"id":"chatcmpl-tls","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,'
          b'"message":{"role":"assistant","content":"over TLS"},"finish_reason":"stop"}],'
          b'"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}')


async def _tls_upstream(ca: trustme.CA):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(ctx)
    seen = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                seen.append(await reader.readexactly(length))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(ANSWER), ANSWER))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1], seen


async def test_https_upstream_verified_with_configured_ca(start_gateway, tmp_path):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server, port, seen = await _tls_upstream(ca)
    try:
        gw = start_gateway(f"""
upstreams:
  trusted: {{provider: openai, base_url: "https://localhost:{port}/v1", ca_file: "{ca_file}"}}
  untrusted: {{provider: openai, base_url: "https://localhost:{port}/v1"}}
models:
  ok: {{upstream: trusted}}
  bad: {{upstream: untrusted}}
""")
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as c:
            msg = [{"role": "user", "content": "hi"}]
            r = await c.post("/chat/completions", json={"model": "ok", "messages": msg})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "over TLS"
            r = await c.post("/chat/completions", json={"model": "bad", "messages": msg})
            assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
            assert "TLS certificate verification failed" in r.json()["error"]["message"]
        assert len(seen) == 1, "the untrusted upstream must not receive the request"
    finally:
        server.close()
