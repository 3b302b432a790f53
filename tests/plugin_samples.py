"""Plugins used by tests/test_plugins.py; loaded by the gateway subprocess as `plugin_samples:...`.

Each Tracer records the hooks that ran into a response header / the response body so that the
test, on the client side, can see the order in which hooks ran.
"""

from __future__ import annotations

from typing import Any

from llmgw.errors import GatewayError
from llmgw.exchange import ChatResponse
from llmgw.plugins import Plugin


class Tracer(Plugin):
    """pre: appends `pre:<tag>` to ctx.metadata['trace']; post: appends `post:<tag>` and writes
    the trace into the response body (`llmgw_trace`) or, for errors, into the error message."""

    def __init__(self, tag: str, short_circuit: bool = False, fail: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.tag = tag
        self.short_circuit = short_circuit
        self.fail = fail

    async def pre_request(self, ctx, request):
        ctx.metadata.setdefault("trace", []).append(f"pre:{self.tag}")
        if self.fail == "pre":
            raise RuntimeError("boom")
        if self.fail == "deny":
            raise GatewayError(403, f"denied by {self.tag}", type="permission_error", code="denied")
        if self.short_circuit:
            return ChatResponse({
                "id": "chatcmpl-short", "object": "chat.completion", "created": 0, "model": request.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"short-circuit by {self.tag}"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
            })
        return None

    def post_response(self, ctx, result):
        trace = ctx.metadata.setdefault("trace", [])
        trace.append(f"post:{self.tag}")
        if isinstance(result, GatewayError):
            result.message = f"{result.message} | trace={','.join(trace)}"
            return result
        if not result.streamed:
            result.data["llmgw_trace"] = list(trace)
        return None


class BodyRewriter(Plugin):
    """Changes the request in place: sets temperature and prefixes the last user message."""

    def pre_request(self, ctx, request):
        request.body["temperature"] = 0.25
        request.body["messages"][-1]["content"] = "rewritten: " + request.body["messages"][-1]["content"]


class Shouter(Plugin):
    """on_chunk: upper-cases content; drops chunks whose content is exactly ' world' (lower)."""

    def pre_request(self, ctx, request):
        return None

    def on_chunk(self, ctx, chunk):
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content == " dropme":
                return None
            if content:
                choice["delta"]["content"] = content.upper()
        return chunk


class TextCollector(Plugin):
    """Asks for the streamed text and reports it, with usage, in a side file the test reads."""

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(**options)
        self.path = path

    def pre_request(self, ctx, request):
        ctx.collect_text = True

    def post_response(self, ctx, result):
        if isinstance(result, ChatResponse) and result.streamed:
            usage = result.usage.completion_tokens if result.usage else None
            with open(self.path, "a") as f:
                f.write(f"{result.text}|{result.finish_reason}|{usage}\n")


class ErrorRescuer(Plugin):
    """post_response: turns any upstream error into a canned answer."""

    def post_response(self, ctx, result):
        if isinstance(result, GatewayError):
            return ChatResponse({
                "id": "chatcmpl-rescued", "object": "chat.completion", "created": 0, "model": "rescued",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"rescued from {result.status}"},
                             "finish_reason": "stop"}],
            })
        return None


class EntryPointPlugin(Plugin):
    """Registered under the `llmgw.plugins` entry-point group by the test's fake distribution."""

    name = "entry-point-sample"

    def pre_request(self, ctx, request):
        ctx.response_headers.append(("x-entry-point-plugin", "ran"))
