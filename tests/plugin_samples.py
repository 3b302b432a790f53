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


# --- lifecycle v2 samples (tests/test_runner.py and the end-to-end lifecycle tests) -----------------

import asyncio  # noqa: E402
import json  # noqa: E402

ALL_KINDS = frozenset({"chat", "embeddings", "models", "route"})


class FinishRecorder(Plugin):
    """Records every on_finish call: in memory (`records`) and, with `path`, as JSON lines."""

    kinds = ALL_KINDS
    read_only = True

    def __init__(self, path: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self.records: list[tuple[Any, Any]] = []

    def on_finish(self, ctx, outcome):
        self.records.append((ctx, outcome))
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(finish_record(ctx, outcome)) + "\n")


def finish_record(ctx, outcome) -> dict[str, Any]:
    u = outcome.usage
    return {"request_id": ctx.request_id, "kind": ctx.kind, "status": outcome.status, "result": outcome.result,
            "error": outcome.error.code if outcome.error is not None else None,
            "usage": [u.prompt_tokens, u.completion_tokens] if u is not None else None,
            "estimated": outcome.usage_estimated, "streamed": outcome.streamed,
            "short_circuit": outcome.short_circuit, "served_by": outcome.served_by,
            "attempts": [{"target": a.target, "sent": a.sent, "status": a.status, "class": a.error_class}
                         for a in outcome.attempts], "overhead_s": outcome.overhead_s, "duration": outcome.duration}


class AsyncFinishRecorder(FinishRecorder):
    """An async on_finish that takes a while: it must still complete when the request is cancelled."""

    async def on_finish(self, ctx, outcome):
        await asyncio.sleep(0.05)
        self.records.append((ctx, outcome))


class FinishCrasher(Plugin):
    kinds = ALL_KINDS

    def on_finish(self, ctx, outcome):
        raise RuntimeError("finish boom")


class PlanPeeker(Plugin):
    """Records what pre_request could see of the route; with `switch_to`, changes the model."""

    def __init__(self, switch_to: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.switch_to = switch_to
        self.seen: list[Any] = []

    def pre_request(self, ctx, request):
        self.seen.append((ctx.plan, ctx.route, ctx.started))
        if self.switch_to:
            request.model = self.switch_to
            request.body["model"] = self.switch_to


class ReadOnlyObserver(Plugin):
    """Reads the body and every chunk; changes nothing."""

    read_only = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.chunks = 0
        self.prompt = None

    def pre_request(self, ctx, request):
        self.prompt = request.body["messages"][-1]["content"]

    def on_chunk(self, ctx, chunk):
        self.chunks += 1
        return None  # ignored: read-only


class NoOpPre(Plugin):
    """A pre_request hook that is not declared read-only (so the body is serialized again)."""

    def pre_request(self, ctx, request):
        return None


class HoldAll(Plugin):
    """Holds every content chunk back and releases the text as one chunk at the end of the stream."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.held: list[str] = []
        self.template: dict[str, Any] | None = None

    def on_chunk(self, ctx, chunk):
        choices = chunk.get("choices") or []
        content = choices[0].get("delta", {}).get("content") if choices else None
        if content:
            self.held.append(content)
            self.template = chunk
            return []
        return chunk

    def on_stream_end(self, ctx):
        if not self.held:
            return None
        out = json.loads(json.dumps(self.template))
        out["choices"][0]["delta"] = {"content": "".join(self.held)}
        self.held = []
        return [out]


class Splitter(Plugin):
    """Splits each content chunk into one chunk per character."""

    def on_chunk(self, ctx, chunk):
        choices = chunk.get("choices") or []
        content = choices[0].get("delta", {}).get("content") if choices else None
        if not content or len(content) < 2:
            return chunk
        out = []
        for ch in content:
            c = json.loads(json.dumps(chunk))
            c["choices"][0]["delta"]["content"] = ch
            out.append(c)
        return out


class Upper(Plugin):
    """Upper-cases content (to show later plugins see what earlier ones released)."""

    def on_chunk(self, ctx, chunk):
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                delta["content"] = delta["content"].upper()
        return chunk


class ChunkCrasher(Plugin):
    """on_chunk raises on the `after`-th chunk (0: the first)."""

    def __init__(self, after: int = 0, **options: Any) -> None:
        super().__init__(**options)
        self.after = after
        self.count = 0

    def on_chunk(self, ctx, chunk):
        self.count += 1
        if self.count > self.after:
            raise RuntimeError("chunk boom")
        return chunk


class EndCrasher(Plugin):
    def on_stream_end(self, ctx):
        raise RuntimeError("end boom")


class PostCrasher(Plugin):
    def post_response(self, ctx, result):
        raise RuntimeError("post boom")


class HeadersCrasher(Plugin):
    def on_headers(self, ctx, headers):
        raise RuntimeError("headers boom")


class ChunkReplay(Plugin):
    """Short-circuits with a ChatResponse carrying stream chunks (as a cache replaying would)."""

    def pre_request(self, ctx, request):
        base = {"id": "chatcmpl-replay", "object": "chat.completion.chunk", "created": 1, "model": request.model}
        chunks = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]},
            {**base, "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]},
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
        ]
        return ChatResponse(chunks=chunks)


class ToolAnswer(Plugin):
    """Short-circuits with a complete answer holding two tool calls."""

    def pre_request(self, ctx, request):
        return ChatResponse({
            "id": "chatcmpl-tools", "object": "chat.completion", "created": 1, "model": request.model,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{\"x\":1}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10},
        })


class TextGrabber(Plugin):
    """Asks for the streamed text and keeps what post_response receives."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.texts: list[str | None] = []

    def pre_request(self, ctx, request):
        ctx.collect_text = True

    def post_response(self, ctx, result):
        if isinstance(result, ChatResponse) and result.streamed:
            self.texts.append(result.text)


class Counter(Plugin):
    """Counts chat requests in its own instance and in state kept by the services (`keep`), and
    serves both at GET /_counter (a route it registers)."""

    def __init__(self, label: str = "", **options: Any) -> None:
        super().__init__(**options)
        self.label = label
        self.count = 0
        self.kept: dict[str, int] = {"n": 0}

    def startup(self, services):
        self.kept = services.keep("counter", lambda: {"n": 0})
        services.add_route("GET", "/_counter", self.show)

    async def show(self, ctx, request):
        from llmgw.services import RouteResponse

        return RouteResponse({"instance": self.count, "kept": self.kept["n"], "label": self.label})

    def pre_request(self, ctx, request):
        self.count += 1
        self.kept["n"] += 1


class QueuedLedger(Plugin):
    """on_finish queues the request id; the queue flushes to `path` only when drained (its interval
    is an hour), so what reaches the file on SIGTERM is what the drain flushed."""

    kinds = ALL_KINDS

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self.queue = None

    def startup(self, services):
        self.queue = services.queue("ledger", self.write, interval=3600, batch=1_000_000)

    def write(self, batch):
        with open(self.path, "a") as f:
            f.writelines(f"{rid}\n" for rid in batch)

    def on_finish(self, ctx, outcome):
        self.queue.put(ctx.request_id)


class Lifecycle(Plugin):
    """Writes `startup:<tag>` / `shutdown:<tag>` lines to `path`; `fail_startup` makes startup raise."""

    def __init__(self, path: str, tag: str, fail_startup: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.path, self.tag, self.fail_startup = path, tag, fail_startup

    def _note(self, what: str) -> None:
        with open(self.path, "a") as f:
            f.write(f"{what}:{self.tag}\n")

    async def startup(self, services):
        self._note("startup")
        if self.fail_startup:
            raise RuntimeError("startup failed on purpose")

    async def shutdown(self):
        self._note("shutdown")


class BudgetSignal(Plugin):
    """Marks every request's budget as exhausted (what a budget policy does at its soft limit)."""

    kinds = ALL_KINDS
    read_only = True

    def on_headers(self, ctx, headers):
        ctx.budget_exhausted = True


class BrokenClassifier:
    """A prompt-injection classifier (guardrails.injection.classifier) whose backend is down."""

    async def score(self, text: str) -> float:
        raise ConnectionError("classifier backend unreachable")


class ReadOnlyRouter(Plugin):
    """A read-only plugin that sends every request to model `m` (and records post_response calls)."""

    read_only = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.posts = 0

    def pre_request(self, ctx, request):
        request.model = "m"

    def post_response(self, ctx, result):
        self.posts += 1
