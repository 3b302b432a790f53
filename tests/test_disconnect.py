"""A client that goes away cancels the upstream request (the gateway closes its upstream connection)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

CHUNK = b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"content":"tick "},"finish_reason":null}]}\n\n'


class SlowUpstream:
    """An OpenAI-ish upstream that never finishes: it hangs before headers, or streams forever.
    `closed` is set when the gateway closes the connection."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.closed = asyncio.Event()
        self.requests = 0

    async def __aenter__(self) -> SlowUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            if self.mode == "stream":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            while True:  # bounded by the test's own timeout; ends when the gateway hangs up
                if self.mode == "stream":
                    writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                    await writer.drain()
                if await _eof_within(reader, 0.1):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            writer.close()


async def _eof_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), seconds) == b""
    except asyncio.TimeoutError:
        return False


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_cancels_upstream(start_gateway, stream):
    mode = "stream" if stream else "hang"
    async with SlowUpstream(mode) as up:
        gw = start_gateway(f"""
upstreams:
  slow: {{provider: openai, base_url: "{up.url}", timeouts: {{first_byte: 30, idle: 30, total: 60}}}}
models:
  m: {{upstream: slow}}
""")
        body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(timeout=10) as client:
            if stream:
                async with client.stream("POST", f"{gw.base_url}/chat/completions", json=body) as resp:
                    async for line in resp.aiter_lines():
                        if "tick" in line:
                            break  # got a chunk: now walk away mid-stream
            else:
                with pytest.raises(httpx.ReadTimeout):
                    await client.post(f"{gw.base_url}/chat/completions", json=body, timeout=0.5)
        await asyncio.wait_for(up.closed.wait(), 5)
        assert up.requests == 1
        assert httpx.get(f"{gw.url}/health").status_code == 200
