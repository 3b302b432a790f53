"""Running the plugins' hooks: one `KindChain` per request kind, with each hook's plugins listed
once when the configuration loads, so a request pays only for the hooks that exist.

The rules are the contract in plugins/api.py; this module is where they are carried out: order
(pre hooks in configured order, post and finish hooks in reverse), which post and chunk hooks
run (those of plugins whose pre_request stage was reached), short-circuits, and what a crash
becomes: with the plugin's `on_error: closed` (the default) a `PluginCrash`, a 500 naming the
plugin; with `on_error: open` a log line and a count in `PLUGIN_ERRORS`, and the request goes on
as if the hook had returned None (an on_chunk hook's chunk passes unchanged).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Awaitable

from llmgw.errors import GatewayError
from llmgw.exchange import ChatRequest, ChatResponse, Outcome, RequestContext

if TYPE_CHECKING:
    from llmgw.plugins.loader import LoadedPlugin
    from llmgw.services import Services

__all__ = ["ChunkHooks", "KindChain", "PLUGIN_ERRORS", "PluginChain", "PluginCrash", "plugin_crash"]

log = logging.getLogger("llmgw")

Chunk = dict[str, Any]


class PluginCrash(GatewayError):
    """A plugin hook raised something other than GatewayError (a 500 naming the plugin)."""


#: Crashes per (plugin name, hook, "open" | "closed") in this worker, for metrics and tests.
PLUGIN_ERRORS: Counter[tuple[str, str, str]] = Counter()

_SKIP = object()  # a fail-open plugin's crash: the caller goes on as if the hook returned None


def plugin_crash(p: LoadedPlugin, hook: str, exc: BaseException) -> PluginCrash:
    PLUGIN_ERRORS[(p.name, hook, "closed")] += 1
    log.error("plugin %s failed in %s", p.name, hook, exc_info=exc)
    return PluginCrash(500, f"plugin {p.name!r} failed in {hook}: {type(exc).__name__}", type="server_error",
                       code="plugin_error")


def crashed(p: LoadedPlugin, hook: str, exc: BaseException) -> object:
    """A hook crashed: `_SKIP` for a fail-open plugin (logged and counted), else raise its PluginCrash."""
    if p.fail_open:
        PLUGIN_ERRORS[(p.name, hook, "open")] += 1
        log.warning("plugin %s failed in %s (on_error: open, going on without it): %s: %s", p.name, hook,
                    type(exc).__name__, exc)
        return _SKIP
    raise plugin_crash(p, hook, exc) from None


def guarded(p: LoadedPlugin, hook: str, fn: Any, *args: Any) -> Any:
    """Call a hook: GatewayError passes (the plugin's own answer), anything else is its crash
    (`_SKIP` when the plugin fails open)."""
    try:
        return fn(*args)
    except GatewayError:
        raise
    except Exception as exc:
        return crashed(p, hook, exc)


def _chunk_list(p: LoadedPlugin, hook: str, returned: Any, passed: list[Chunk]) -> list[Chunk]:
    """What on_chunk / on_stream_end returned, as a list of chunks (a wrong type is a crash;
    a fail-open plugin's crash passes `passed` on unchanged)."""
    if returned is None:
        return []
    if isinstance(returned, dict):
        return [returned]
    if isinstance(returned, list) and all(isinstance(x, dict) for x in returned):
        return returned
    if returned is _SKIP or crashed(p, hook, TypeError(f"returned {type(returned).__name__}")) is _SKIP:
        return passed
    return []  # not reached: crashed() raised


class KindChain:
    """The plugins that handle one request kind, and which of them have each hook."""

    __slots__ = ("plugins", "headers", "has_pre", "has_post", "chunky", "finish", "modifies_request",
                 "modifies_chunks")

    def __init__(self, plugins: list[LoadedPlugin]) -> None:
        self.plugins = plugins
        self.headers = [p for p in plugins if p.headers is not None]
        self.has_pre = any(p.pre is not None for p in plugins)
        self.has_post = any(p.post is not None for p in plugins)
        self.chunky = [p for p in plugins if p.chunk is not None or p.stream_end is not None]
        self.finish = [p for p in reversed(plugins) if p.finish is not None]
        self.modifies_request = any(p.pre is not None and not p.read_only for p in plugins)
        self.modifies_chunks = any(not p.read_only for p in self.chunky)

    def run_headers(self, ctx: RequestContext, headers: dict[str, str]) -> Awaitable[None] | None:
        """The on_headers hooks in order; raises GatewayError to refuse. Plain hooks run now (no
        coroutine on the common path); from the first async hook on, the rest runs in the
        awaitable returned."""
        for i, p in enumerate(self.headers):
            if p.headers_async:
                return self._headers_from(i, ctx, headers)
            guarded(p, "on_headers", p.headers, ctx, headers)
        return None

    async def _headers_from(self, start: int, ctx: RequestContext, headers: dict[str, str]) -> None:
        for p in self.headers[start:]:
            out = guarded(p, "on_headers", p.headers, ctx, headers)
            if p.headers_async and out is not _SKIP:
                try:
                    await out
                except GatewayError:
                    raise
                except Exception as exc:
                    crashed(p, "on_headers", exc)

    async def run_pre(self, ctx: RequestContext, req: ChatRequest,
                      ran: list[LoadedPlugin]) -> tuple[ChatRequest, ChatResponse | GatewayError | None, bool]:
        """(request, short-circuit result or None, whether the body may have changed)."""
        changed = False
        for p in self.plugins:
            ran.append(p)
            if p.pre is None:
                continue
            changed = changed or not p.read_only
            stages = ctx.stages  # a traced request: each hook's time becomes a span
            t0 = time.perf_counter() if stages is not None else 0.0
            try:
                out = p.pre(ctx, req)
                if p.pre_async:
                    out = await out
            except GatewayError as err:
                out = err
            except Exception as exc:
                if p.fail_open:
                    crashed(p, "pre_request", exc)
                    out = None
                else:
                    out = plugin_crash(p, "pre_request", exc)
            if stages is not None:
                stages.append((p.name, "pre_request", t0, time.perf_counter()))
            if isinstance(out, GatewayError):  # refused, or crashed (closed): the short-circuit
                return req, out, changed
            if out is None:
                continue
            if isinstance(out, ChatRequest) and not p.read_only:
                req = out
            elif isinstance(out, ChatResponse):
                return req, out, changed
            else:
                what = "a read-only plugin returned a ChatRequest" if isinstance(out, ChatRequest) else \
                    f"returned {type(out).__name__}"
                if p.fail_open:
                    crashed(p, "pre_request", TypeError(what))
                    continue
                return req, plugin_crash(p, "pre_request", TypeError(what)), changed
        return req, None, changed

    async def run_post(self, ctx: RequestContext, result: ChatResponse | GatewayError,
                       ran: list[LoadedPlugin]) -> tuple[ChatResponse | GatewayError, bool]:
        """(final result, whether a ChatResponse's original bytes may still be sent as they are)."""
        keep_raw = True
        for p in reversed(ran):
            if p.post is None:
                continue
            keep_raw = keep_raw and p.read_only
            stages = ctx.stages
            t0 = time.perf_counter() if stages is not None else 0.0
            try:
                out = p.post(ctx, result)
                if p.post_async:
                    out = await out
            except GatewayError as err:
                out = err
            except Exception as exc:
                out = None if p.fail_open and crashed(p, "post_response", exc) else \
                    plugin_crash(p, "post_response", exc)
            if stages is not None:
                stages.append((p.name, "post_response", t0, time.perf_counter()))
            if out is not None:
                if not isinstance(out, (ChatResponse, GatewayError)):
                    what = TypeError(f"returned {type(out).__name__}")
                    if p.fail_open and crashed(p, "post_response", what):
                        continue
                    out = plugin_crash(p, "post_response", what)
                result = out
        return result, keep_raw

    def chunk_hooks(self, ctx: RequestContext, ran: list[LoadedPlugin]) -> ChunkHooks | None:
        plugins = [p for p in self.chunky if p in ran]
        return ChunkHooks(plugins, ctx) if plugins else None

    def run_finish(self, ctx: RequestContext, outcome: Outcome, services: Services | None) -> list[asyncio.Task[Any]] | None:
        """Call every on_finish hook, each isolated (a failure is logged; the others still run).
        Plain hooks run now; async ones are started as tasks, in order, and returned for the
        runner to await shielded: cancelling the request cannot stop them."""
        pending = None
        for p in self.finish:
            try:
                out = p.finish(ctx, outcome)  # type: ignore[misc]
            except Exception as exc:
                log.error("plugin %s failed in on_finish", p.name, exc_info=exc)
                continue
            if p.finish_async:
                task = asyncio.ensure_future(out)
                task.add_done_callback(lambda t, name=p.name: _log_failure(t, name))
                if services is not None:
                    services.track_finish(task)
                pending = [task] if pending is None else pending + [task]
        return pending


def _log_failure(task: asyncio.Task[Any], plugin: str) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("plugin %s failed in on_finish", plugin, exc_info=task.exception())


class PluginChain:
    """All loaded plugins of a configuration, with a KindChain per request kind."""

    def __init__(self, plugins: list[LoadedPlugin]) -> None:
        self.plugins = plugins
        self._by_kind: dict[str, KindChain] = {}

    def for_kind(self, kind: str) -> KindChain:
        chain = self._by_kind.get(kind)
        if chain is None:
            chain = self._by_kind[kind] = KindChain([p for p in self.plugins if kind in p.kinds])
        return chain


class ChunkHooks:
    """The on_chunk / on_stream_end hooks of one request's plugins, in configured order."""

    __slots__ = ("plugins", "ctx")

    def __init__(self, plugins: list[LoadedPlugin], ctx: RequestContext) -> None:
        self.plugins = plugins
        self.ctx = ctx

    def run(self, chunk: Chunk, start: int = 0) -> list[Chunk]:
        """`chunk` through the on_chunk hooks of plugins[start:]: the chunks that come out."""
        out = [chunk]
        ctx = self.ctx
        for p in self.plugins[start:] if start else self.plugins:
            hook = p.chunk
            if hook is None:
                continue
            nxt: list[Chunk] = []
            for c in out:
                nxt.extend(_chunk_list(p, "on_chunk", guarded(p, "on_chunk", hook, ctx, c), [c]))
            out = nxt
            if not out:
                break
        return out

    def observe(self, chunk: Chunk) -> None:
        """Read-only observers: call each on_chunk, ignore what it returns."""
        ctx = self.ctx
        for p in self.plugins:
            if p.chunk is not None:
                guarded(p, "on_chunk", p.chunk, ctx, chunk)

    def flush(self) -> list[Chunk]:
        """on_stream_end of each plugin in order; what one releases passes the later on_chunk hooks."""
        released: list[Chunk] = []
        ctx = self.ctx
        for i, p in enumerate(self.plugins):
            if p.stream_end is None:
                continue
            for c in _chunk_list(p, "on_stream_end", guarded(p, "on_stream_end", p.stream_end, ctx), []):
                released.extend(self.run(c, i + 1))
        return released


