"""A tiny OpenAI-compatible HTTP/1.1 server on 127.0.0.1 for the bench tests.

It runs on its own event loop in a background thread, so both async tests (on pytest's loop) and
the synchronous `llmgw.bench.run` (which makes its own loop) can talk to it. What it does is chosen
by the first path segment of the base URL: `<server.url("stream")>/chat/completions`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from typing import Iterator

import pytest

COMPLETION = {
    "id": "chatcmpl-test", "object": "chat.completion", "created": 1700000000, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}
STREAM_PIECES = ["Hel", "lo", " world"]  # three content deltas -> two inter-chunk gaps


def _chunk(delta: dict[str, object], **extra: object) -> str:
    doc = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": None}], **extra}
    return "data: " + json.dumps(doc) + "\n\n"


def stream_events(*, done: bool = True) -> list[str]:
    events = [_chunk({"role": "assistant", "content": STREAM_PIECES[0]})]
    events += [_chunk({"content": p}) for p in STREAM_PIECES[1:]]
    events.append("data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [],
                                         "usage": {"prompt_tokens": 5, "completion_tokens": 3}}) + "\n\n")
    if done:
        events.append("data: [DONE]\n\n")
    return events


class MockOpenAI:
    """Behaviours (first path segment): ok, nousage, slow<ms>, status<code>, every3rd500, notjson,
    nochoices, close, hang, stream, streamcrlf, streamtruncated, streambadjson, streamerror."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.hits: Counter[str] = Counter()
        self.bodies: list[dict[str, object]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.port}/{behaviour}/v1"

    def reset(self) -> None:
        self.hits.clear()
        self.bodies.clear()
        self.headers.clear()
        self.max_in_flight = 0

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        server.close()
        for task in asyncio.all_tasks(self.loop):  # handlers still sleeping (hang) or reading
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0.01))
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                behaviour = path.split("/")[1]
                self.hits[behaviour] += 1
                self.bodies.append(json.loads(body) if body else {})
                self.headers.append(headers)
                if not await self._respond(behaviour, writer):
                    return
        finally:
            writer.close()

    async def _respond(self, behaviour: str, writer: asyncio.StreamWriter) -> bool:
        """Write one response; False closes the connection."""
        if behaviour.startswith("slow"):
            # Counted in flight only until the answer is written: the client cannot have sent its
            # next request before that, so max_in_flight is the client's true concurrency.
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            await asyncio.sleep(int(behaviour[4:]) / 1000)
            self.in_flight -= 1
            behaviour = "ok"
        if behaviour == "every3rd500":
            behaviour = "status500" if self.hits["every3rd500"] % 3 == 0 else "ok"
        if behaviour == "close":
            return False
        if behaviour == "hang":
            await asyncio.sleep(30)
            return False
        if behaviour.startswith("status"):
            self._fixed(writer, int(behaviour[6:]), b'{"error":{"message":"nope","type":"test"}}')
        elif behaviour == "ok":
            self._fixed(writer, 200, json.dumps(COMPLETION).encode())
        elif behaviour == "nousage":
            self._fixed(writer, 200, json.dumps({k: v for k, v in COMPLETION.items() if k != "usage"}).encode())
        elif behaviour == "notjson":
            self._fixed(writer, 200, b"<html>gateway error</html>")
        elif behaviour == "nochoices":
            self._fixed(writer, 200, b'{"object":"chat.completion","choices":[]}')
        elif behaviour.startswith("stream"):
            events = {
                "stream": stream_events(),
                "streamcrlf": [e.replace("\n", "\r\n") for e in stream_events()],
                "streamtruncated": stream_events(done=False),
                "streambadjson": stream_events()[:1] + ["data: {not json\n\n"],
                "streamerror": stream_events()[:1] + ['data: {"error":{"message":"upstream died"}}\n\n'],
            }[behaviour]
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for event in events:  # one HTTP chunk per event, flushed separately
                data = event.encode()
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
                await asyncio.sleep(0.001)
            writer.write(b"0\r\n\r\n")
        else:
            self._fixed(writer, 404, b'{"error":"unknown behaviour"}')
        await writer.drain()
        return True

    @staticmethod
    def _fixed(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (status, len(body), body))


@pytest.fixture(scope="session")
def _server() -> Iterator[MockOpenAI]:
    server = MockOpenAI()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(_server: MockOpenAI) -> MockOpenAI:
    _server.reset()
    return _server
