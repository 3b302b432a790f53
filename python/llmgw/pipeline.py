"""The request path for chat completions: plugins → upstream → plugins, streaming or not.

    pre_request hooks (configured order) ─▶ upstream call via the route's adapter and pool
    ─▶ post_response hooks (reverse order, only plugins whose pre_request ran) ─▶ client

The rules of the hot path (DESIGN.md §3): bytes are forwarded untouched when nothing must change
them; a stream is forwarded event by event as it arrives, and the response is committed only once
the first event is ready to send, so an upstream failing before that still gets a proper HTTP
error; after that, a failure ends the stream with an explicit error event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from llmgw._core import StreamTap
from llmgw.errors import GatewayError
from llmgw.exchange import ChatRequest, ChatResponse, RequestContext, Usage
from llmgw.transport import ConnectError, Timeouts, Transport, UpstreamError, UpstreamProtocolError, UpstreamTimeout

if TYPE_CHECKING:
    from llmgw.config import ModelRoute
    from llmgw.plugins.loader import LoadedPlugin
    from llmgw.providers.base import ProviderAdapter, UpstreamRequest

log = logging.getLogger("llmgw")

# An upstream that never ends an event must not grow the gateway's memory without bound; real
# chunks are a few hundred bytes, a large tool-call argument delta a few kilobytes.
MAX_EVENT_BYTES = 4 << 20

__all__ = ["ClientFormat", "Pipeline", "Target", "StreamSink", "classified_error", "exchange", "upstream_failure"]


@dataclass(slots=True)
class Target:
    """One configured upstream: its adapter, its connection pool and its timeouts."""

    name: str
    adapter: ProviderAdapter
    pool: Transport
    timeouts: Timeouts


class StreamSink(Protocol):
    """Where a stream goes (granian's stream transport, or a test double)."""

    async def send_bytes(self, data: bytes) -> None: ...


class ClientFormat(Protocol):
    """The API dialect the client speaks (OpenAI's or Anthropic's): how to encode answers for it."""

    #: True when the dialect is OpenAI chat completions, so upstream OpenAI bytes pass untouched.
    openai: bool

    def encode_response(self, response: ChatResponse, request: ChatRequest) -> bytes: ...

    def stream_encoder(self, request: ChatRequest) -> StreamEncoder: ...

    def error_body(self, error: GatewayError) -> bytes: ...


class StreamEncoder(Protocol):
    def chunk(self, chunk: dict[str, Any]) -> bytes: ...

    def end(self) -> bytes: ...

    def error(self, error: GatewayError) -> bytes: ...


def upstream_failure(exc: UpstreamError, target: str) -> GatewayError:
    """A transport failure as the client's error (no URL or key in the message)."""
    if isinstance(exc, UpstreamTimeout):
        return GatewayError(504, f"upstream {target!r} timed out ({exc.phase})", type="upstream_error",
                            code="upstream_timeout")
    if isinstance(exc, ConnectError):
        log.warning("upstream %s unreachable: %s", target, exc)  # the detail (URL) stays in the log
        return GatewayError(502, f"upstream {target!r} is unreachable ({exc.reason})", type="upstream_error",
                            code="upstream_unreachable")
    return GatewayError(502, f"upstream {target!r} failed: {exc}", type="upstream_error", code="upstream_protocol_error")


class Pipeline:
    """Runs one chat request through the plugins and the upstream. App-scoped, stateless per call."""

    def __init__(self, plugins: list[LoadedPlugin], targets: dict[str, Target]) -> None:
        self.plugins = plugins
        self.pre = [p for p in plugins if p.pre is not None]
        self.has_post = any(p.post is not None for p in plugins)
        self.chunk_plugins = [p for p in plugins if p.chunk is not None]
        self.targets = targets

    # -- plugins -------------------------------------------------------------------------------
    async def run_pre(self, ctx: RequestContext, req: ChatRequest, ran: list[LoadedPlugin]) -> tuple[ChatRequest, ChatResponse | GatewayError | None]:
        for p in self.plugins:
            ran.append(p)
            if p.pre is None:
                continue
            try:
                out = p.pre(ctx, req)
                if p.pre_async:
                    out = await out
            except GatewayError as err:
                return req, err
            except Exception as exc:
                return req, _plugin_crash(p, "pre_request", exc)
            if out is None:
                continue
            if isinstance(out, ChatRequest):
                req = out
            elif isinstance(out, (ChatResponse, GatewayError)):
                return req, out
            else:
                return req, _plugin_crash(p, "pre_request", TypeError(f"returned {type(out).__name__}"))
        return req, None

    async def run_post(self, ctx: RequestContext, result: ChatResponse | GatewayError, ran: list[LoadedPlugin]) -> ChatResponse | GatewayError:
        for p in reversed(ran):
            if p.post is None:
                continue
            try:
                out = p.post(ctx, result)
                if p.post_async:
                    out = await out
            except GatewayError as err:
                out = err
            except Exception as exc:
                out = _plugin_crash(p, "post_response", exc)
            if out is not None:
                if not isinstance(out, (ChatResponse, GatewayError)):
                    out = _plugin_crash(p, "post_response", TypeError(f"returned {type(out).__name__}"))
                result = out
        return result

    def run_chunk(self, ctx: RequestContext, chunk: dict[str, Any], ran: list[LoadedPlugin]) -> dict[str, Any] | None:
        for p in self.chunk_plugins:
            if p in ran:
                out = p.chunk(ctx, chunk)  # type: ignore[misc]
                if out is None:
                    return None
                chunk = out
        return chunk

    # -- upstream ------------------------------------------------------------------------------
    def _upstream_request(self, ctx: RequestContext, req: ChatRequest, route: ModelRoute, plugins_ran: bool):
        target = self.targets[route.upstream]
        raw = req.raw if (not plugins_ran and route.model == req.model) else None
        return target, target.adapter.chat_request(req.body, route.model, req.stream, raw)

    async def complete(self, ctx: RequestContext, req: ChatRequest, route: ModelRoute, plugins_ran: bool) -> ChatResponse:
        """A non-streamed completion from the route's upstream (raises GatewayError)."""
        target, ureq = self._upstream_request(ctx, req, route, plugins_ran)
        body = await exchange(target, ureq)
        adapter = target.adapter
        if adapter.passthrough:
            out = ChatResponse(raw=body)
            usage_at = body.rfind(b'"usage"')
            if usage_at >= 0:  # read usage without parsing the whole body when we forward it raw
                try:
                    ctx.usage = Usage.from_openai(orjson.loads(body).get("usage"))
                except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                    raise GatewayError(502, f"upstream {target.name!r} sent an invalid JSON response",
                                       type="upstream_error", code="upstream_protocol_error") from None
        else:
            try:
                out = ChatResponse(adapter.chat_response(body, req.model))
            except UpstreamError as exc:
                raise upstream_failure(exc, target.name) from None
            ctx.usage = Usage.from_openai(out.data.get("usage"))
        out.usage = ctx.usage
        return out

    async def open_stream(self, ctx: RequestContext, req: ChatRequest, route: ModelRoute, plugins_ran: bool):
        """Start a streamed completion: (target, upstream response) once the upstream said 200."""
        target, ureq = self._upstream_request(ctx, req, route, plugins_ran)
        try:
            resp = await target.pool.request(ureq.method, ureq.path, ureq.headers, ureq.body, timeout=target.timeouts)
            if resp.status >= 300:
                body = await resp.read()
                raise classified_error(target, resp.status, body, resp.headers)
        except UpstreamError as exc:
            raise upstream_failure(exc, target.name) from None
        return target, resp

    async def stream(
        self,
        ctx: RequestContext,
        req: ChatRequest,
        target: Target,
        resp: Any,
        fmt: ClientFormat,
        ran: list[LoadedPlugin],
        start: Any,
    ) -> ChatResponse:
        """Forward an upstream stream to the client; `start()` commits the response and returns the
        sink. Returns the summary ChatResponse for post_response hooks."""
        summary = ChatResponse(streamed=True)
        if fmt.openai and target.adapter.passthrough and not self.chunk_plugins and not ctx.collect_text:
            await self._stream_passthrough(ctx, target, resp, start, summary)
        else:
            await self._stream_chunks(ctx, req, target, resp, fmt, ran, start, summary)
        summary.usage = ctx.usage
        return summary

    async def _stream_passthrough(self, ctx: RequestContext, target: Target, resp: Any, start: Any,
                                  summary: ChatResponse) -> None:
        tap = StreamTap()
        sink: StreamSink | None = None
        held = 0  # bytes of the unfinished event the tap is holding back
        try:
            async for data in resp:
                out = tap.feed(data)
                held += len(data) - len(out)
                if held > MAX_EVENT_BYTES:
                    raise UpstreamProtocolError(f"upstream sent a stream event over {MAX_EVENT_BYTES} bytes")
                if out:
                    if sink is None:
                        sink = await start()
                    await sink.send_bytes(out)
            if not tap.done:
                raise UpstreamError("upstream ended the stream before [DONE]")
        except UpstreamError as exc:
            err = upstream_failure(exc, target.name)
            if sink is None:
                raise err from None
            await sink.send_bytes(_openai_stream_error(err))
            summary.finish_reason = "error"
            _record_tap(ctx, tap, summary)
            return
        finally:
            resp.close()
        if sink is None:  # [DONE] and nothing else: still a valid (empty) stream
            sink = await start()
        _record_tap(ctx, tap, summary)

    async def _stream_chunks(self, ctx: RequestContext, req: ChatRequest, target: Target, resp: Any,
                             fmt: ClientFormat, ran: list[LoadedPlugin], start: Any, summary: ChatResponse) -> None:
        reader = target.adapter.stream_translator(req.model, include_usage=req.include_usage)
        encoder = fmt.stream_encoder(req)
        sink: StreamSink | None = None
        texts: list[str] = []
        try:
            async for data in resp:
                out = self._encode_chunks(ctx, reader.feed(data), encoder, ran, summary, texts)
                if out:
                    if sink is None:
                        sink = await start()
                    await sink.send_bytes(out)
            tail = self._encode_chunks(ctx, reader.finish(), encoder, ran, summary, texts) + encoder.end()
        except UpstreamError as exc:
            err = upstream_failure(exc, target.name)
            if sink is None:
                raise err from None
            await sink.send_bytes(encoder.error(err))
            summary.finish_reason = "error"
            return
        finally:
            resp.close()
            if texts:
                summary.text = "".join(texts)
        if sink is None:
            sink = await start()
        await sink.send_bytes(tail)

    def _encode_chunks(self, ctx: RequestContext, chunks: list[dict[str, Any]], encoder: StreamEncoder,
                       ran: list[LoadedPlugin], summary: ChatResponse, texts: list[str]) -> bytes:
        parts = []
        for chunk in chunks:
            usage = chunk.get("usage")
            if usage:
                ctx.usage = Usage.from_openai(usage)
            for choice in chunk.get("choices") or ():
                if choice.get("finish_reason"):
                    summary.finish_reason = choice["finish_reason"]
                if ctx.collect_text and choice.get("index", 0) == 0:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        texts.append(content)
            if self.chunk_plugins:
                chunk = self.run_chunk(ctx, chunk, ran)
                if chunk is None:
                    continue
            parts.append(encoder.chunk(chunk))
        return b"".join(parts)


def _record_tap(ctx: RequestContext, tap: Any, summary: ChatResponse) -> None:
    if tap.usage is not None:
        p, c, t, cached = tap.usage
        ctx.usage = Usage(p, c, t, cached)
    summary.finish_reason = summary.finish_reason or tap.finish_reason


async def exchange(target: Target, ureq: UpstreamRequest) -> bytes:
    """Send a non-streamed request to `target`; the 2xx body, or the failure as a GatewayError."""
    try:
        resp = await target.pool.request(ureq.method, ureq.path, ureq.headers, ureq.body, timeout=target.timeouts)
        body = await resp.read()
    except UpstreamError as exc:
        raise upstream_failure(exc, target.name) from None
    if resp.status >= 300:
        raise classified_error(target, resp.status, body, resp.headers)
    return body


def classified_error(target: Target, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> GatewayError:
    ec = target.adapter.classify_error(status, body, headers)
    extra = [("retry-after", str(max(int(ec.retry_after + 0.999), 0)))] if ec.retry_after is not None else []
    return GatewayError(ec.status, ec.message, type=ec.type, code=ec.code, param=ec.param, headers=extra)


def _plugin_crash(p: LoadedPlugin, hook: str, exc: Exception) -> GatewayError:
    log.error("plugin %s failed in %s", p.name, hook, exc_info=exc)
    return GatewayError(500, f"plugin {p.name!r} failed in {hook}: {type(exc).__name__}", type="server_error",
                        code="plugin_error")


def _openai_stream_error(err: GatewayError) -> bytes:
    return b"data: " + err.body() + b"\n\n"
