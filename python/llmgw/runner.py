"""The RequestRunner: owns one request from its first byte to its last.

    on_headers hooks ─▶ body read within limits, parsed, validated ─▶ route plan
    ─▶ pre_request hooks ─▶ attempts along the plan (adapter → pooled upstream)
    ─▶ answer or stream (on_chunk hooks) ─▶ post_response hooks ─▶ on_finish (always, once)

Every endpoint (chat completions, Anthropic messages, embeddings, the model list) runs here, as
its request kind. The rules of the hot path (DESIGN.md §3): the client's request bytes go
upstream untouched unless a plugin that is not read-only ran; a stream is forwarded event by
event, and the response is committed only when the first event is ready to send, so an upstream
that fails before that is a failed attempt (another deployment may serve it, or the client gets
a proper HTTP error); after the commit a failure ends the stream with an error event in the
client's format. Whatever happens — an error, a crash, a cancellation because the client left —
`_finish` runs exactly once and hands every on_finish hook the Outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import orjson

from llmgw.errors import GatewayError, UpstreamFailure
from llmgw.exchange import (
    Attempt,
    ChatRequest,
    ChatResponse,
    Outcome,
    RequestContext,
    RouteStep,
    Usage,
    request_id_from,
)
from llmgw.http.body import JSON_HEADERS, read_json, respond_error
from llmgw.http.server import ClientGone, HttpRequest
from llmgw.ingress.anthropic import ANTHROPIC_FORMAT, parse_messages_request
from llmgw.ingress.embeddings import as_base64, parse_embeddings_request
from llmgw.ingress.openai import OPENAI_FORMAT, parse_chat_request
from llmgw.plugins.chain import PluginCrash
from llmgw.providers.base import optional_part
from llmgw.routing import route_headers
from llmgw.routing.dispatch import MAX_CLIENT_TIMEOUT, clip_timeouts
from llmgw.services import RouteRequest
from llmgw.streaming import ChunkPump, PassthroughPump, chunks_as_response, response_as_chunks
from llmgw.tokens import count_chat_tokens
from llmgw.tracecontext import TraceContext
from llmgw.transport import UpstreamError
from llmgw.upstream import Target, exchange, open_response, transport_failure

if TYPE_CHECKING:
    from llmgw.gateway import Gateway
    from llmgw.ingress import ClientFormat
    from llmgw.plugins.loader import LoadedPlugin

__all__ = ["ANTHROPIC_MESSAGES", "CHAT", "EMBEDDINGS", "Endpoint", "MODELS", "RequestRunner"]

log = logging.getLogger("llmgw")

_SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One API endpoint: its request kind, the client's dialect, and how its request is read."""

    kind: str
    dialect: str
    fmt: ClientFormat
    read: Callable[[RequestRunner], Awaitable[ChatRequest]]


async def _read_chat(run: RequestRunner) -> ChatRequest:
    data, raw = await read_json(run.http, run.gw.body_limits)
    return parse_chat_request(data, raw, run.http.headers)


async def _read_messages(run: RequestRunner) -> ChatRequest:
    data, _ = await read_json(run.http, run.gw.body_limits)
    return parse_messages_request(data, run.http.headers, keep_extensions=run.gw.routes_to_provider(data, "anthropic"))


async def _read_embeddings(run: RequestRunner) -> ChatRequest:
    data, raw = await read_json(run.http, run.gw.body_limits)
    model, body = parse_embeddings_request(data)
    return ChatRequest(body=body, model=model, stream=False, raw=raw, headers=run.http.headers, kind="embeddings")


async def _read_nothing(run: RequestRunner) -> ChatRequest:
    return ChatRequest(body={}, model="", stream=False, raw=None, headers=run.http.headers, kind="models")


CHAT = Endpoint("chat", "openai", OPENAI_FORMAT, _read_chat)
ROUTE = Endpoint("route", "openai", OPENAI_FORMAT, _read_nothing)
ANTHROPIC_MESSAGES = Endpoint("chat", "anthropic", ANTHROPIC_FORMAT, _read_messages)
EMBEDDINGS = Endpoint("embeddings", "openai", OPENAI_FORMAT, _read_embeddings)
MODELS = Endpoint("models", "openai", OPENAI_FORMAT, _read_nothing)


def _refused(ctx: RequestContext, req: ChatRequest) -> GatewayError | None:
    """403 when the caller's identity (set in on_headers) may not use the model it asked for (or
    the group its `x-llmgw-model` header chose); checked before any pre_request hook, so no
    plugin (a cache, say) answers for such a model."""
    allowed = ctx.allowed_models
    if allowed is None or req.kind == "models":
        return None
    for model in (req.model, ctx.plan.group if ctx.plan is not None else None):
        if model and model not in allowed:
            return GatewayError(403, f"This API key may not use model {model!r}.", type="permission_error",
                                code="model_not_allowed", param="model")
    return None


def _client_timeout(ctx: RequestContext, req: ChatRequest) -> GatewayError | None:
    """`x-llmgw-timeout: SECONDS`: the caller's own deadline (it can only shorten the group's)."""
    value = req.headers.get("x-llmgw-timeout")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_CLIENT_TIMEOUT:
        return GatewayError(400, f"x-llmgw-timeout must be a number of seconds in (0, {MAX_CLIENT_TIMEOUT:g}], "
                                 f"got {value!r}.", param="x-llmgw-timeout", code="invalid_value")
    ctx.metadata["client_timeout"] = seconds
    return None


class _Prepared:
    """A stream whose first content is ready and nothing sent to the client yet."""

    __slots__ = ("resp", "chunks", "pump", "first", "ended", "target", "attempt")

    def __init__(self, resp: Any, chunks: Any, pump: ChunkPump | PassthroughPump, first: bytes, ended: bool,
                 target: Target, attempt: Attempt) -> None:
        self.resp, self.chunks, self.pump, self.first, self.ended = resp, chunks, pump, first, ended
        self.target, self.attempt = target, attempt

    def discard(self) -> None:
        """Lost a hedged race: close the upstream response (its connection is not reused)."""
        self.resp.close()


# A stream is held back until its first content (a role-only chunk first) up to this many bytes.
_HOLD_MAX = 64 * 1024


def _not_found(model: str) -> GatewayError:
    return GatewayError(404, f"The model '{model}' does not exist or you do not have access to it.",
                        code="model_not_found", param="model")


class RequestRunner:
    """Runs one request (see the module docstring). Create one per request and `await run()`."""

    __slots__ = ("gw", "http", "ep", "chain", "ctx", "fmt", "req", "ran", "status", "result", "error",
                 "streamed", "short_circuit", "pump", "client_s", "route", "gone")

    def __init__(self, gw: Gateway, http: HttpRequest, ep: Endpoint,
                 route: tuple[Any, dict[str, str]] | None = None) -> None:
        self.gw = gw
        self.route = route  # (a plugin's route, its path params) for kind "route"
        self.http = http
        self.ep = ep
        self.fmt = ep.fmt
        self.chain = gw.chain.for_kind(ep.kind)
        self.ctx = RequestContext(request_id_from(http.headers), http.received_at, kind=ep.kind, dialect=ep.dialect,
                                  client=http.client, path=http.path, services=gw.services)
        if gw.tracer is not None:  # tracing on: join the client's trace or start one (sampled by ratio)
            trace = self.ctx.trace = gw.tracer.start(http.headers)
            if trace.sampled:
                self.ctx.stages = []  # the plugin chain times each hook: child spans
        elif "traceparent" in http.headers:  # tracing off: the upstream still joins the client's trace
            self.ctx.trace = TraceContext.from_headers(http.headers, 0.0)
        http.context = self.ctx  # a disconnect cancels this request unless ctx.keep_upstream is set
        self.req: ChatRequest | None = None
        self.ran: list[LoadedPlugin] = []
        self.status = 0
        self.result = "ok"
        self.error: GatewayError | None = None
        self.streamed = False
        self.short_circuit = False
        self.pump: ChunkPump | PassthroughPump | None = None
        self.client_s = 0.0  # time blocked on a slow client (neither upstream nor gateway time)
        self.gone = False  # the client left while the upstream work went on (ctx.keep_upstream)

    @classmethod
    def for_route(cls, gw: Gateway, http: HttpRequest, route: Any, params: dict[str, str]) -> RequestRunner:
        """A runner for a route a plugin registered (request kind "route")."""
        return cls(gw, http, ROUTE, (route, params))

    async def run(self) -> None:
        try:
            await self._serve()
        except ClientGone:  # the client left (or read too slowly) while we wrote to it
            self.result = "client_gone"
        except asyncio.CancelledError:  # the client left while we waited: the server cancelled us
            self.result = "client_gone"
            raise
        except Exception:  # a bug: answer 500 if we still can, keep serving
            log.exception("request %s failed", self.ctx.request_id)
            self.result = "error"
            self.error = GatewayError(500, "The gateway failed to answer this request.", type="server_error",
                                      code="internal_error")
            if not self.http.responded:
                self._answer_error(self.error)
        finally:
            await self._finish()

    # -- the request, step by step ------------------------------------------------------------------
    async def _serve(self) -> None:
        ctx, chain, http = self.ctx, self.chain, self.http
        if chain.headers:
            try:
                pending = chain.run_headers(ctx, http.headers)
                if pending is not None:
                    await pending
            except GatewayError as err:
                return self._answer_error(err)
        if self.route is not None:
            return await self._serve_route()
        try:
            req = await self.ep.read(self)
        except GatewayError as err:
            return self._answer_error(err)
        self.req = req
        router = self.gw.router
        ctx.model = req.model
        ctx.plan = router.plan(ctx, req) if req.kind != "models" else None
        body_changed = False
        result: ChatResponse | GatewayError | None = _refused(ctx, req) or _client_timeout(ctx, req)
        if result is None and chain.has_pre:
            plan = ctx.plan
            req, result, body_changed = await chain.run_pre(ctx, req, self.ran)
            self.req = req
            if req.model != ctx.model:  # a plugin routed the request elsewhere: plan it again
                ctx.model = req.model
                ctx.plan = router.plan(ctx, req)
                body_changed = True  # the client's bytes name the old model
            if ctx.plan is not plan:  # (or set ctx.plan itself)
                result = result or _refused(ctx, req)
        elif result is None:
            self.ran = chain.plugins  # no pre hook can short-circuit: every plugin's stage is reached
        if result is not None:
            self.short_circuit = isinstance(result, ChatResponse)
        elif req.kind == "chat":
            result = await self._chat(req, body_changed)
            if result is None:  # streamed: answered, post hooks done
                return
            if not req.stream:
                ctx.redo = lambda: self._chat(req, True)  # type: ignore[assignment,return-value]
        elif req.kind == "embeddings":
            result = await self._embeddings(req)
        else:
            result = self._models()
        keep_raw = True
        if chain.has_post:
            result, keep_raw = await chain.run_post(ctx, result, self.ran)
        if isinstance(result, GatewayError):
            self._answer_error(result)
        elif req.stream and req.kind == "chat":
            await self._replay(result)
        else:
            self._answer(result, keep_raw)

    # -- chat completions ---------------------------------------------------------------------------
    async def _dispatch(self, req: ChatRequest, send: Any) -> Any:
        """Carry the plan out (llmgw.routing.dispatch): the answer, a prepared stream, or the
        error to answer with."""
        ctx, gw = self.ctx, self.gw
        plan = ctx.plan
        if plan is None:
            return _not_found(req.model)
        router = gw.router
        if plan.group in router.shadowed:
            gw.shadow.maybe_copy(ctx, req, router, gw.targets, gw.scrub)
        try:
            if plan.group in router.simple and "client_timeout" not in ctx.metadata:
                return await gw.dispatcher.direct(ctx, plan.steps[0], send)
            return await gw.dispatcher.run(ctx, plan, send, stream=req.stream)
        except GatewayError as err:  # UpstreamFailure included: every attempt failed
            return err
        finally:
            ctx.response_headers.extend(route_headers(ctx))

    async def _chat(self, req: ChatRequest, body_changed: bool) -> ChatResponse | GatewayError | None:
        gw = self.gw

        async def send(step: RouteStep, attempt: Attempt, deadline: float | None) -> ChatResponse | _Prepared:
            target = gw.target(step.target, self.ctx.team)
            raw = req.raw if not body_changed and step.model == req.model else None
            # Translating may refuse the request (a parameter this provider lacks): a GatewayError.
            ureq = target.adapter.chat_request(req.body, step.model, req.stream, raw)
            timeouts = target.timeouts if deadline is None else clip_timeouts(target.timeouts, deadline, gw.clock,
                                                                              req.stream)
            if req.stream:
                return await self._open_stream(req, target, ureq, attempt, timeouts)
            body = await exchange(target, ureq, attempt, self.ctx, gw.scrub, timeouts)
            response = self._chat_response(target, body, req)
            attempt.usage = self.ctx.usage
            attempt.total_s = time.perf_counter() - attempt.started
            return response

        result = await self._dispatch(req, send)
        if isinstance(result, _Prepared):
            await self._forward(req, result)
            return None
        return result  # type: ignore[no-any-return]

    def _chat_response(self, target: Target, body: bytes, req: ChatRequest) -> ChatResponse:
        ctx, adapter = self.ctx, target.adapter
        if adapter.passthrough:
            out = ChatResponse(raw=body)
            if body.rfind(b'"usage"') >= 0:  # read usage, but forward the bytes (the parse is not kept)
                try:
                    ctx.usage = Usage.from_openai(orjson.loads(body).get("usage"))
                except (orjson.JSONDecodeError, AttributeError):
                    raise UpstreamFailure(502, f"upstream {target.name!r} sent an invalid JSON response",
                                          reason="protocol", retryable=True, fallback=True,
                                          code="upstream_protocol_error") from None
        else:
            try:
                out = ChatResponse(adapter.chat_response(body, req.model))
            except UpstreamError as exc:
                raise transport_failure(exc, target.name, self.gw.scrub) from None
            ctx.usage = Usage.from_openai(out.data.get("usage"))
        out.usage = ctx.usage
        return out

    async def _open_stream(self, req: ChatRequest, target: Target, ureq: Any, attempt: Attempt,
                           timeouts: Any) -> _Prepared:
        """Open the stream and read it until its first content is ready: nothing has reached the
        client yet, so until then any failure is the attempt's (UpstreamFailure) and routing may
        fall back. A plugin crash here raises PluginCrash."""
        resp = await open_response(target, ureq, attempt, self.ctx, self.gw.scrub, timeouts)
        try:
            pump = self._make_pump(target, req)
            chunks = resp.__aiter__()
            first, ended = await self._first_output(chunks, pump, target)
        except BaseException:
            resp.close()
            attempt.total_s = time.perf_counter() - attempt.started
            raise
        return _Prepared(resp, chunks, pump, first, ended, target, attempt)

    def _make_pump(self, target: Target, req: ChatRequest) -> ChunkPump | PassthroughPump:
        chain, ctx = self.chain, self.ctx
        hooks = chain.chunk_hooks(ctx, self.ran) if chain.chunky else None
        if self.fmt.openai and target.adapter.passthrough and not (hooks is not None and chain.modifies_chunks):
            return PassthroughPump(target.name, hooks, ctx.collect_text)
        reader = target.adapter.stream_translator(req.model, include_usage=req.include_usage)
        return ChunkPump(reader, self.fmt.stream_encoder(req), hooks)

    async def _first_output(self, chunks: Any, pump: ChunkPump | PassthroughPump,
                            target: Target) -> tuple[bytes, bool]:
        """Read until the pump has content for the client — text, a tool call, a finish reason;
        a role-only first chunk is held with it, so falling back never repeats or mixes what a
        client saw — or `_HOLD_MAX` bytes: (bytes, whether the stream ended)."""
        ctx = self.ctx
        t0 = time.perf_counter()
        held: list[bytes] = []
        size = 0
        try:
            async for data in chunks:
                out = pump.feed(data)
                if out:
                    held.append(out)
                    size += len(out)
                    if pump.content_seen or size > _HOLD_MAX:
                        return b"".join(held), False
            held.append(pump.finish())
            return b"".join(held), True
        except UpstreamError as exc:
            raise transport_failure(exc, target.name, self.gw.scrub) from None
        finally:
            ctx.upstream_s += time.perf_counter() - t0

    async def _forward(self, req: ChatRequest, prepared: _Prepared) -> None:
        """Commit the response and forward the rest of the stream (after this, a failure is an
        error event in the client's format, and the response is closed properly)."""
        resp, chunks, pump, first, ended = prepared.resp, prepared.chunks, prepared.pump, prepared.first, prepared.ended
        attempt, target = prepared.attempt, prepared.target
        self.pump = pump
        ctx = self.ctx
        sink = self.http.start_stream(200, _SSE + [("x-request-id", ctx.request_id)] + ctx.response_headers)
        self.status, self.streamed = 200, True
        ctx.first_byte_at = time.perf_counter()
        error: GatewayError | None = None
        try:
            await self._send(sink, first)
            if not ended:
                t0 = time.perf_counter()
                async for data in chunks:
                    ctx.upstream_s += time.perf_counter() - t0
                    out = pump.feed(data)
                    if out:
                        await self._send(sink, out)
                    t0 = time.perf_counter()
                ctx.upstream_s += time.perf_counter() - t0
                await self._send(sink, pump.finish())
        except UpstreamError as exc:
            error = attempt.error = transport_failure(exc, target.name, self.gw.scrub)
        except GatewayError as err:  # a plugin hook failed (PluginCrash) or refused mid-stream
            error = err
        finally:
            resp.close()
            attempt.total_s = time.perf_counter() - attempt.started
            ctx.usage = attempt.usage = pump.usage
        if error is not None:
            self.result, self.error = "stream_error", error
            await self._send(sink, pump.error(error))
        sink.end()
        if self.chain.has_post:
            summary = ChatResponse(streamed=True)
            summary.usage, summary.finish_reason = ctx.usage, "error" if error is not None else pump.finish_reason
            summary.text = pump.text if ctx.collect_text else None
            await self.chain.run_post(ctx, summary, self.ran)

    async def _send(self, sink: Any, data: bytes) -> None:
        if data and not self.gone:
            t0 = time.perf_counter()
            try:
                await sink.send(data)
            except ClientGone:
                if not self.ctx.keep_upstream:
                    raise
                self.gone, self.result = True, "client_gone"  # read the rest for those waiting on it
            self.client_s += time.perf_counter() - t0

    async def _replay(self, response: ChatResponse) -> None:
        """Stream a ChatResponse (a plugin's short-circuit, a cache hit) chunk by chunk through the
        on_chunk hooks, as a real stream."""
        ctx, req = self.ctx, self.req
        assert req is not None
        source = response.chunks if response.chunks is not None else response_as_chunks(response.data, req.include_usage)
        pump = self.pump = ChunkPump(None, self.fmt.stream_encoder(req), self.chain.chunk_hooks(ctx, self.ran))
        sink = self.http.start_stream(response.status, _SSE + [("x-request-id", ctx.request_id)] + ctx.response_headers
                                      + response.headers)
        self.status, self.streamed = response.status, True
        ctx.first_byte_at = time.perf_counter()
        try:
            if hasattr(source, "__aiter__"):
                async for chunk in source:
                    await self._send(sink, pump.encode((chunk,)))
            else:
                for chunk in source:
                    await self._send(sink, pump.encode((chunk,)))
            await self._send(sink, pump.finish())
        except GatewayError as err:
            self.result, self.error = "stream_error", err
            await self._send(sink, pump.error(err))
        sink.end()
        ctx.usage = response.usage or pump.usage

    # -- embeddings and the model list ----------------------------------------------------------------
    async def _embeddings(self, req: ChatRequest) -> ChatResponse | GatewayError:
        async def send(step: RouteStep, attempt: Attempt, deadline: float | None) -> ChatResponse:
            target = self.gw.target(step.target, self.ctx.team)
            build = optional_part(target.adapter, "embeddings_request")
            read = optional_part(target.adapter, "embeddings_response")
            if build is None or read is None:
                raise GatewayError(400, f"Model '{req.model}' does not support embeddings (its upstream "
                                        f"{step.target!r} uses provider {target.adapter.name!r}, which has none).",
                                   param="model", code="embeddings_not_supported")
            timeouts = clip_timeouts(target.timeouts, deadline, self.gw.clock, False)
            body = await exchange(target, build(req.body, step.model), attempt, self.ctx, self.gw.scrub, timeouts)
            try:
                answer = read(body, req.model)
            except UpstreamError as exc:
                raise transport_failure(exc, target.name, self.gw.scrub) from None
            if req.body.get("encoding_format") == "base64":
                as_base64(answer)
            self.ctx.usage = attempt.usage = Usage.from_openai(answer.get("usage"))
            attempt.total_s = time.perf_counter() - attempt.started
            return ChatResponse(answer)

        return await self._dispatch(req, send)  # type: ignore[no-any-return]

    def _models(self) -> ChatResponse:
        allowed = self.ctx.allowed_models
        names = [m for m in self.gw.router.names() if allowed is None or m in allowed]
        return ChatResponse({"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "llmgw"}
                                                         for n in names]})

    async def _serve_route(self) -> None:
        route, params = self.route  # type: ignore[misc]
        http = self.http
        request = RouteRequest(http.method, http.path, params, dict(parse_qsl(http.query)), http.headers, http,
                               self.gw.body_limits.max_bytes)
        try:
            response = await route.handler(self.ctx, request)
        except GatewayError as err:
            return self._answer_error(err)
        http.respond(response.status, [("content-type", response.content_type), ("x-request-id", self.ctx.request_id)]
                     + self.ctx.response_headers + response.headers, response.encoded())
        self.status = response.status
        self.ctx.first_byte_at = time.perf_counter()

    # -- answering ------------------------------------------------------------------------------------
    def _answer(self, response: ChatResponse, keep_raw: bool) -> None:
        ctx, req = self.ctx, self.req
        assert req is not None
        if response.chunks is not None and req.kind == "chat":
            if hasattr(response.chunks, "__aiter__"):
                raise TypeError("an async chunk source can only answer a streaming request")
            response.data = chunks_as_response(response.chunks)
        body = self.fmt.encode_response(response, req, keep_raw)
        if ctx.keep_upstream and self.http.disconnected:
            self.result = "client_gone"
        self.http.respond(response.status, JSON_HEADERS + [("x-request-id", ctx.request_id)] + ctx.response_headers
                          + response.headers, body)
        self.status = response.status
        ctx.first_byte_at = time.perf_counter()
        if ctx.usage is None and req.kind == "chat":
            ctx.usage = response.usage or Usage.from_openai(response.data.get("usage"))

    def _answer_error(self, err: GatewayError) -> None:
        self.status, self.result, self.error = err.status, "error", err
        respond_error(self.http, err, self.fmt, self.ctx.request_id, self.ctx.response_headers)
        self.ctx.first_byte_at = time.perf_counter()

    # -- the end ----------------------------------------------------------------------------------------
    async def _finish(self) -> None:
        """Build the Outcome and run every on_finish hook: exactly once, whatever happened."""
        chain = self.chain
        if not chain.finish:
            return
        ctx = self.ctx
        now = time.perf_counter()
        for attempt in ctx.attempts:  # an attempt cut short by a cancellation still ends now
            if attempt.total_s is None:
                attempt.total_s = now - attempt.started
        pending = chain.run_finish(ctx, Outcome(self, now), self.gw.services)
        for task in pending or ():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                pass  # the hook's task goes on; shutdown waits for it
            except Exception:
                pass  # logged by the task's done callback

    def final_usage(self) -> tuple[Usage | None, bool]:
        """(usage, estimated) to account: reported, else estimated when an upstream did work for
        us (a stream cut or abandoned, an answer without usage): the prompt counted here, the
        completion from what was streamed."""
        ctx, req = self.ctx, self.req
        if ctx.usage is not None:
            return ctx.usage, ctx.usage_estimated
        if req is None or req.kind != "chat" or not ctx.attempts:
            return None, False
        last = ctx.attempts[-1]
        if not last.sent or (last.error is not None and last.error.reason not in ("stream_error", "protocol", "timeout")):
            return None, False
        try:
            prompt = int(count_chat_tokens(req.body.get("messages") or [], last.model, req.body.get("tools")))
        except (TypeError, ValueError):
            prompt = 0
        completion = self.pump.streamed_tokens() if self.pump is not None else 0
        return Usage(prompt, completion, prompt + completion), True
