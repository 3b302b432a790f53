"""Routing, auth, fault decisions and bookkeeping: turns a Request into a Reply.

Timing (latency, hangs, pacing, cuts) is left to the connection; everything decided here is
synchronous so a zero-delay request never touches the event loop's scheduler.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from llmgw.mock.anthropic_wire import AnthropicWire
from llmgw.mock.azure_wire import AzureWire
from llmgw.mock.faults import make_malformed, retry_after_headers, roll_status
from llmgw.mock.gemini_wire import GeminiWire
from llmgw.mock.openai_wire import OpenAIWire
from llmgw.mock.options import MockOptions, OptionError
from llmgw.mock.replies import JSON, Call, StreamReply, ClientError, ContextExceeded, FullReply, Reply, Request, json_reply

Handler = Callable[[Call], Reply]


@dataclass(frozen=True, slots=True)
class Route:
    """One provider endpoint: the method it accepts, its wire format and its handler."""

    method: str
    wire: Any
    handler: Handler


_AZURE = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/(?P<op>chat/completions|embeddings)$")
_GEMINI = re.compile(r"^/v1(?:beta)?/models/(?P<model>[^/:]+):(?P<op>generateContent|streamGenerateContent)$")


class MockApp:
    """The mock's request handling and counters (one per server; not thread-safe by design:
    it only runs on its server's event loop)."""

    def __init__(self, options: MockOptions) -> None:
        self.options = options
        self.openai = OpenAIWire()
        self.azure = AzureWire()
        self.anthropic = AnthropicWire()
        self.gemini = GeminiWire()
        self._static: dict[str, Route] = {
            "/v1/chat/completions": Route("POST", self.openai, self.openai.chat),
            "/v1/embeddings": Route("POST", self.openai, self.openai.embeddings),
            "/v1/models": Route("GET", self.openai, self.openai.models),
            "/v1/messages": Route("POST", self.anthropic, self.anthropic.messages),
        }
        self._dice = random.Random(options.seed)
        self._serial = 0
        self.by_path: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.last: dict[str, Any] | None = None

    # -- bookkeeping ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Request counts: total, per path (query excluded), per answered status."""
        return {"requests": sum(self.by_path.values()), "by_path": dict(self.by_path),
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())}}

    def reset(self) -> None:
        """Forget counters, the last request and the simulated prompt cache."""
        self.by_path.clear()
        self.by_status.clear()
        self.last = None
        self.anthropic.cached_prefixes.clear()
        self._dice = random.Random(self.options.seed)

    def record_status(self, status: int) -> None:
        self.by_status[status] += 1

    def _remember(self, request: Request) -> Any:
        try:
            body: Any = orjson.loads(request.body) if request.body else None
            body_text = None
        except orjson.JSONDecodeError:
            body, body_text = None, request.body.decode("utf-8", "replace")
        self.last = {"method": request.method, "path": request.path,
                     "query_string": request.query_string, "query": dict(request.query),
                     "headers": dict(request.headers), "body": body, "body_text": body_text}
        return body if body_text is None else _INVALID_JSON

    # -- handling ---------------------------------------------------------------------------

    def handle(self, request: Request) -> tuple[Reply, MockOptions]:
        """Answer one request; returns the reply and the options (after header overrides)."""
        if request.path.startswith("/_mock/"):
            return self._control(request), self.options
        self.by_path[request.path] += 1
        body = self._remember(request)
        route, params = self._route(request.path)
        if route is None:
            return self.openai.error(404, f"Invalid URL ({request.method} {request.path})"), self.options
        wire = route.wire
        if request.method != route.method:
            return wire.error(405, f"Method {request.method} not allowed for {request.path}"), self.options
        try:
            options = self.options.with_overrides(request.headers)
        except OptionError as exc:
            return wire.error(400, f"Invalid mock control: {exc}"), self.options
        problem = wire.auth_error(request, options)
        if problem is not None:
            return problem, options
        if body is _INVALID_JSON:
            return wire.error(400, "The request body is not valid JSON."), options
        status = roll_status(options, self._dice)
        if status is not None:
            reply = wire.injected_error(status)
            reply.headers.extend(retry_after_headers(status, options))
            return reply, options
        self._serial += 1
        call = Call(request, body, options, params, self._serial, int(time.time()))
        try:
            reply = route.handler(call)
        except ClientError as exc:
            return wire.error(exc.status, exc.message, exc.code, exc.param), options
        except ContextExceeded as exc:
            return wire.context_error(exc.prompt_tokens, exc.limit), options
        if options.malformed is not None and reply.status == 200:
            reply = make_malformed(reply)
        if options.error_after_chunks is not None and isinstance(reply, StreamReply):
            reply.chunks = reply.chunks[: options.error_after_chunks] + [wire.stream_error_frame()]
            reply.epilogue = [b"]"] if reply.content_type == JSON else []
        return reply, options

    def _route(self, path: str) -> tuple[Route | None, dict[str, str]]:
        route = self._static.get(path)
        if route is not None:
            return route, {}
        match = _AZURE.match(path)
        if match:
            handler = self.azure.chat if match["op"] == "chat/completions" else self.azure.embeddings
            return Route("POST", self.azure, handler), {"deployment": match["deployment"]}
        match = _GEMINI.match(path)
        if match:
            handler = self.gemini.generate if match["op"] == "generateContent" else self.gemini.stream_generate
            return Route("POST", self.gemini, handler), {"model": match["model"]}
        return None, {}

    def _control(self, request: Request) -> FullReply:
        if request.path == "/_mock/stats" and request.method == "GET":
            return json_reply(200, self.stats())
        if request.path == "/_mock/reset" and request.method == "POST":
            self.reset()
            return json_reply(200, {"reset": True})
        if request.path == "/_mock/last-request" and request.method == "GET":
            if self.last is None:
                return json_reply(404, {"error": "no request recorded yet"})
            return json_reply(200, self.last)
        return json_reply(404, {"error": f"unknown control endpoint {request.method} {request.path}"})


_INVALID_JSON = object()
