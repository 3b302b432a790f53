"""In-process doubles for runner tests (no sockets): a client request and upstream pools.

`FakeHttp` has the HttpRequest interface the runner uses (read_body, respond, start_stream) and
records what the client would receive. `FakePool` has the Transport interface and answers from a
script: a status and body, a stream of byte pieces that may end, break, hang or carry an error.
`gateway_for(config_text)` builds a real Gateway whose upstreams are FakePools.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from llmgw.config import parse_config
from llmgw.gateway import Gateway
from llmgw.http.server import BodyTooLarge, ClientGone
from llmgw.providers import registry
from llmgw.runner import CHAT, RequestRunner
from llmgw.services import Services
from llmgw.transport import ConnectError, UpstreamProtocolError, UpstreamTimeout


class FakeStream:
    def __init__(self, http: FakeHttp) -> None:
        self.http = http
        self.ended = False

    async def send(self, data: bytes) -> None:
        http = self.http
        if http.gone_after_sends is not None and len(http.sent) >= http.gone_after_sends:
            raise ClientGone()
        http.sent.append(data)
        await asyncio.sleep(0)

    def end(self) -> None:
        self.ended = True


class FakeHttp:
    """A client request as the runner sees it; what was answered lands in status/headers/body."""

    def __init__(self, body: Any = None, *, method: str = "POST", path: str = "/v1/chat/completions",
                 headers: dict[str, str] | None = None, gone_after_sends: int | None = None) -> None:
        self.method = method
        self.path = path
        self.query = ""
        self.raw_body = body if isinstance(body, bytes) else orjson.dumps(body) if body is not None else b""
        self.headers = {"content-type": "application/json", **(headers or {})}
        self.client = "127.0.0.1:5555"
        self.received_at = time.perf_counter()
        self.keep_alive = True
        self.http11 = True
        self.responded = False
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self.body = b""
        self.stream: FakeStream | None = None
        self.sent: list[bytes] = []
        self.gone_after_sends = gone_after_sends

    async def read_body(self, max_bytes: int) -> bytes:
        if len(self.raw_body) > max_bytes:
            raise BodyTooLarge()
        return self.raw_body

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        assert not self.responded
        self.responded = True
        self.status, self.response_headers, self.body = status, dict(headers), body

    def start_stream(self, status: int, headers: list[tuple[str, str]]) -> FakeStream:
        assert not self.responded
        self.responded = True
        self.status, self.response_headers = status, dict(headers)
        self.stream = FakeStream(self)
        return self.stream

    # what the client got --------------------------------------------------------------------------
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def streamed(self) -> bytes:
        return b"".join(self.sent)

    def events(self) -> list[Any]:
        """The data of each SSE event streamed (parsed JSON, or the text of [DONE])."""
        out = []
        for block in self.streamed.split(b"\n\n"):
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    data = line[6:]
                    out.append(data.decode() if data == b"[DONE]" else orjson.loads(data))
        return out

    def text(self) -> str:
        return "".join((c.get("choices") or [{}])[0].get("delta", {}).get("content") or ""
                       for c in self.events() if isinstance(c, dict) and c.get("choices"))


class FakeResponse:
    """An upstream response: `pieces` are the body's byte pieces; `then` what happens after them:
    "end", "cut" (the connection breaks), "hang" (nothing more, ever)."""

    def __init__(self, status: int, pieces: list[bytes], then: str = "end",
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.headers = headers or []
        self.pieces = pieces
        self.then = then
        self.closed = False
        self.released = False

    async def read(self) -> bytes:
        if self.then == "hang":
            try:
                await asyncio.Event().wait()
            finally:
                self.closed = True
        self.released = True
        return b"".join(self.pieces)

    async def __aiter__(self):
        for piece in self.pieces:
            await asyncio.sleep(0)
            yield piece
        if self.then == "cut":
            raise UpstreamProtocolError("upstream closed the connection before the response ended")
        if self.then == "hang":
            await asyncio.Event().wait()
        self.released = True

    def close(self) -> None:
        self.closed = True


class FakePool:
    """Answers each request with the next scripted reply (the last one repeats)."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.responses: list[FakeResponse] = []
        self.hanging = 0  # requests waiting on a "hang" reply right now

    def script(self, *replies: Any) -> None:
        self.replies = list(replies)

    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"", *,
                      timeout: Any = None, timing: Any = None, extra: Any = None) -> FakeResponse:
        self.requests.append({"method": method, "path": path, "headers": dict(headers + (extra or [])), "body": body})
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply == "refuse":
            raise ConnectError("cannot connect to upstream http://x: Connection refused", reason="connection refused")
        if reply == "connect-timeout":
            raise UpstreamTimeout("connecting timed out", phase="connect", sent=False)
        if timing is not None:
            timing.sent = True
            timing.ttfb_s = 0.0
        if reply == "first-byte-timeout":
            raise UpstreamTimeout("no response headers in time", phase="first_byte")
        if reply == "hang":
            self.hanging += 1
            try:
                await asyncio.Event().wait()
            finally:
                self.hanging -= 1
        resp = reply() if callable(reply) else reply
        self.responses.append(resp)
        return resp

    async def aclose(self) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {}


def completion(text: str = "hello there", usage: tuple[int, int] | None = (5, 2), model: str = "up-model") -> FakeResponse:
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": "stop"}]}
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    return FakeResponse(200, [orjson.dumps(body)])


def sse_chunk(content: str | None = None, finish: str | None = None, usage: tuple[int, int] | None = None) -> bytes:
    chunk: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
                             "choices": [{"index": 0, "delta": {} if content is None else {"content": content},
                                          "finish_reason": finish}]}
    if usage is not None:
        chunk["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def stream(words: list[str], then: str = "end", usage: tuple[int, int] | None = None,
           error_at: int | None = None) -> FakeResponse:
    """An OpenAI stream of one content chunk per word; `error_at`: an in-stream error event there."""
    pieces = []
    for i, w in enumerate(words):
        if error_at == i:
            pieces.append(b'data: {"error": {"message": "overloaded upstream", "type": "server_error"}}\n\n')
            return FakeResponse(200, pieces, "end")
        pieces.append(sse_chunk(w))
    if then == "end":
        pieces.append(sse_chunk(None, "stop", usage))
        pieces.append(b"data: [DONE]\n\n")
    return FakeResponse(200, pieces, then)


def error_reply(status: int, message: str = "upstream trouble", headers: list[tuple[bytes, bytes]] | None = None,
                code: str | None = None) -> FakeResponse:
    error = {"message": message, "type": "server_error", "code": code}
    return FakeResponse(status, [orjson.dumps({"error": error})], headers=headers)


BASE_CONFIG = """
upstreams:
  up: {provider: openai, base_url: "http://upstream.invalid/v1", api_key: sk-upstream-secret-123456}
models:
  m: {upstream: up, model: m}
  alias: {upstream: up, model: up-model}
"""


class FakeClock:
    """A clock that sleeps instantly: `sleep(s)` moves time on by s and records s."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_800_000_000.0 + self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


def gateway_for(config_text: str = BASE_CONFIG, *, clock: Any = None, services: Services | None = None,
                **pools: FakePool) -> Gateway:
    """A real Gateway from YAML, every upstream answered by a FakePool (`up=FakePool(...)`)."""
    config = parse_config(config_text, providers=registry)
    gw = Gateway(config, services or Services(clock=clock))
    for name, target in gw.targets.items():
        target.pool = pools.get(name) or FakePool(completion())
    for (_, name), target in gw.team_targets.items():  # a team's own key: the same (fake) pool
        target.pool = gw.targets[name].pool
    return gw


async def run(gw: Gateway, http: FakeHttp, endpoint: Any = CHAT) -> FakeHttp:
    await gw.start()
    await RequestRunner(gw, http, endpoint).run()
    return http


async def run_until_the_client_leaves(gw: Gateway, http: FakeHttp, endpoint: Any = CHAT,
                                      after: float = 0.05) -> None:
    """Start the request, then cancel it `after` seconds in: what the server does when the client's
    connection is lost."""
    await gw.start()
    task = asyncio.ensure_future(RequestRunner(gw, http, endpoint).run())
    await asyncio.sleep(after)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return
    raise AssertionError("the request finished before the client left")


def plugin(gw: Gateway, index: int = 0) -> Any:
    """The instance of the gateway's index-th plugin (not counting the built-in observability one)."""
    return [p for p in gw.chain.plugins if p.name != "observability"][index].instance
