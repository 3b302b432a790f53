"""An upstream stream that never finishes an event cannot grow the gateway's memory without bound."""

from __future__ import annotations

import asyncio

import httpx


async def test_endless_event_is_cut_with_an_error(start_gateway):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            piece = b"data: " + b"x" * 65536
            for _ in range(100):  # 6.5 MB of one unterminated event, bounded
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = start_gateway(f"""
upstreams:
  endless: {{provider: openai, base_url: "http://127.0.0.1:{port}/v1"}}
models:
  m: {{upstream: endless}}
""")
        async with httpx.AsyncClient(timeout=20) as c:
            r = await c.post(f"{gw.base_url}/chat/completions",
                             json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 502
        assert "stream event over" in r.json()["error"]["message"]
    finally:
        server.close()
