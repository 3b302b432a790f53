"""The RSGI application granian runs: routing, request validation, and the gateway's state.

One `App` per worker process. Its `Gateway` holds everything derived from the config (routes,
adapters, pools, plugins); a reload builds a new Gateway and swaps it in, while requests already
running finish on the one they started with, which is closed once they are done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any, Awaitable, Callable

import orjson

from llmgw.config import Config, load_config
from llmgw.errors import GatewayError
from llmgw.exchange import ChatRequest, ChatResponse, RequestContext, next_request_id
from llmgw.ingress.openai import OPENAI_FORMAT, parse_chat_request
from llmgw.pipeline import ClientFormat, Pipeline, Target
from llmgw.plugins.auth import ApiKeyAuth, presented_key
from llmgw.plugins.loader import LoadedPlugin, instantiate, load_plugins
from llmgw.providers import registry
from llmgw.transport import Transport, UpstreamPool

__all__ = ["App", "Gateway", "create_app"]

log = logging.getLogger("llmgw")

CONFIG_ENV = "LLMGW_CONFIG"
_JSON = [("content-type", "application/json")]
_SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


class Gateway:
    """Everything built from one configuration; shared by all requests of a worker."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.inflight = 0
        targets = {}
        for name, up in config.upstreams.items():
            ssl_ctx = None
            if up.base_url.startswith("https://"):
                import ssl

                ssl_ctx = ssl.create_default_context(cafile=up.ca_file)
                if not up.tls_verify:
                    ssl_ctx.check_hostname = False
                    ssl_ctx.verify_mode = ssl.CERT_NONE
            targets[name] = Target(
                name=name,
                adapter=registry.get(up.provider)(up),
                pool=_pool_class(up.transport)(up.base_url, max_connections=up.max_connections,
                                               ssl_context=ssl_ctx, connect_timeout=up.timeouts.connect or 5.0),
                timeouts=up.timeouts,
            )
        plugins: list[LoadedPlugin] = []
        self.auth: ApiKeyAuth | None = None
        if config.auth_keys:
            loaded = instantiate(ApiKeyAuth, "auth", {"keys": config.auth_keys})
            self.auth = loaded.instance
            plugins.append(loaded)
        plugins.extend(load_plugins(config.plugins))
        self.pipeline = Pipeline(plugins, targets)
        self.models = config.models
        self.max_body = config.server.max_body_bytes
        self._models_body = orjson.dumps(_models_list(list(config.models)))

    async def startup(self) -> None:
        for p in self.pipeline.plugins:
            out = p.instance.startup(self) if hasattr(p.instance, "startup") else None
            if asyncio.iscoroutine(out):
                await out

    async def shutdown(self) -> None:
        for p in reversed(self.pipeline.plugins):
            try:
                out = p.instance.shutdown() if hasattr(p.instance, "shutdown") else None
                if asyncio.iscoroutine(out):
                    await out
            except Exception:
                log.exception("plugin %s failed in shutdown", p.name)
        for t in self.pipeline.targets.values():
            await t.pool.aclose()

    def models_body(self, headers: Any) -> bytes:
        """GET /v1/models: the models this caller may use."""
        if self.auth is None:
            return self._models_body
        key = presented_key(headers)
        entry = self.auth.lookup(key) if key else None
        if entry is None:
            raise GatewayError(401, "Incorrect or missing API key.", code="invalid_api_key")
        names = [m for m in self.models if entry.models is None or m in entry.models]
        return orjson.dumps(_models_list(names))

    async def chat(self, ctx: RequestContext, req: ChatRequest, proto: Any, fmt: ClientFormat) -> None:
        """Run a chat request end to end and answer it on `proto`."""
        pipeline = self.pipeline
        ran: list[LoadedPlugin] = []
        result: ChatResponse | GatewayError | None = None
        if pipeline.plugins:
            req, result = await pipeline.run_pre(ctx, req, ran)
        plugins_ran = bool(pipeline.pre)
        if result is None:
            route = self.models.get(req.model)
            if route is None:
                result = GatewayError(404, f"The model '{req.model}' does not exist or you do not have access to it.",
                                      code="model_not_found", param="model")
            elif not req.stream:
                ctx.route = route
                try:
                    result = await pipeline.complete(ctx, req, route, plugins_ran)
                except GatewayError as err:
                    result = err
            else:
                ctx.route = route
                try:
                    target, resp = await pipeline.open_stream(ctx, req, route, plugins_ran)
                except GatewayError as err:
                    result = err
                else:
                    headers = _SSE + [("x-request-id", ctx.request_id)] + ctx.response_headers

                    async def start() -> Any:
                        return proto.response_stream(200, headers)

                    summary = await pipeline.stream(ctx, req, target, resp, fmt, ran, start)
                    if pipeline.has_post:
                        await pipeline.run_post(ctx, summary, ran)
                    return
        if pipeline.has_post:
            result = await pipeline.run_post(ctx, result, ran)
        if isinstance(result, GatewayError):
            respond_error(proto, result, fmt, ctx.request_id)
        elif req.stream:  # a plugin answered a streaming request: stream its answer
            sink = proto.response_stream(200, _SSE + [("x-request-id", ctx.request_id)] + ctx.response_headers)
            encoder = fmt.stream_encoder(req)
            body = b"".join(encoder.chunk(c) for c in response_as_chunks(result.data, req.include_usage))
            await sink.send_bytes(body + encoder.end())
        else:
            proto.response_bytes(result.status, _JSON + [("x-request-id", ctx.request_id)] + ctx.response_headers
                                 + result.headers, fmt.encode_response(result, req))


def _pool_class(name: str) -> type[Transport]:
    if name == "aiohttp":
        from llmgw.transport_aiohttp import AiohttpPool

        return AiohttpPool
    return UpstreamPool


def _models_list(names: list[str]) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "llmgw"} for n in names]}


def response_as_chunks(data: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """A complete chat.completion as the chunks of an equivalent stream."""
    base = {"id": data.get("id", "chatcmpl-llmgw"), "object": "chat.completion.chunk",
            "created": data.get("created", int(time.time())), "model": data.get("model", "")}
    chunks = []
    for choice in data.get("choices") or ():
        msg = choice.get("message") or {}
        delta = {k: v for k, v in msg.items() if v is not None}
        idx = choice.get("index", 0)
        chunks.append({**base, "choices": [{"index": idx, "delta": delta, "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": idx, "delta": {}, "finish_reason": choice.get("finish_reason")}]})
    if include_usage and data.get("usage"):
        chunks.append({**base, "choices": [], "usage": data["usage"]})
    return chunks


def respond_error(proto: Any, err: GatewayError, fmt: ClientFormat | None, request_id: str | None = None) -> None:
    headers = _JSON + err.headers
    if request_id:
        headers = headers + [("x-request-id", request_id)]
    proto.response_bytes(err.status, headers, fmt.error_body(err) if fmt is not None else err.body())


Handler = Callable[[Gateway, Any, Any], Awaitable[None]]


class App:
    """The RSGI application (granian calls `__rsgi__`; `__rsgi_init__` runs once per worker)."""

    def __init__(self, config_path: str | None = None, config: Config | None = None) -> None:
        self.config_path = config_path or os.environ.get(CONFIG_ENV)
        self.gateway: Gateway | None = Gateway(config) if config is not None else None
        self._mtime = 0.0
        self._watch: asyncio.Task[None] | None = None
        self._reloading = False
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): _chat_completions,
            ("GET", "/v1/models"): _models,
            ("GET", "/health"): _health,
            ("GET", "/ready"): _ready,
        }
        from llmgw import ingress

        for (method, path), handler in ingress.extra_routes().items():
            self.routes[(method, path)] = handler

    # -- lifecycle -----------------------------------------------------------------------------
    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.gateway is None:
            if not self.config_path:
                raise RuntimeError(f"no configuration: pass --config or set {CONFIG_ENV}")
            self._mtime = _mtime(self.config_path)
            self.gateway = Gateway(load_config(self.config_path))
        loop.run_until_complete(self.gateway.startup())
        if self.config_path:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("SIGHUP")))
            self._watch = loop.create_task(self._watch_config())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.gateway is not None:
            loop.run_until_complete(self.gateway.shutdown())

    async def _watch_config(self) -> None:
        # One stat() a second: negligible, and catches edits where SIGHUP is not sent.
        assert self.config_path
        while True:
            await asyncio.sleep(1.0)
            m = _mtime(self.config_path)
            if m and m != self._mtime:
                await self.reload("file change")

    async def reload(self, why: str) -> bool:
        """Load the config again; on error keep serving the old one. True if swapped."""
        if self._reloading or not self.config_path:
            return False
        self._reloading = True
        try:
            self._mtime = _mtime(self.config_path)
            try:
                new = Gateway(load_config(self.config_path))
                await new.startup()
            except Exception as exc:
                log.error("config reload (%s) failed; still serving the previous config:\n%s", why, exc)
                return False
            old, self.gateway = self.gateway, new
            log.info("config reloaded (%s) from %s", why, self.config_path)
            o, n = (old.config.server if old else None), new.config.server
            if o is not None and (o.host, o.port, o.workers) != (n.host, n.port, n.workers):
                log.warning("server.host/port/workers changed; they take effect on restart")
            if old is not None:
                asyncio.get_running_loop().create_task(_retire(old))
            return True
        finally:
            self._reloading = False

    # -- requests ------------------------------------------------------------------------------
    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        handler = self.routes.get((scope.method, scope.path))
        gw = self.gateway
        if handler is None or gw is None:
            await _not_found(self, scope, proto)
            return
        gw.inflight += 1
        try:
            await handler(gw, scope, proto)
        except GatewayError as err:
            respond_error(proto, err, None)
        finally:
            gw.inflight -= 1

    async def __call__(self, scope: Any, proto: Any) -> None:  # granian calls the target itself
        await self.__rsgi__(scope, proto)


async def _retire(old: Gateway) -> None:
    deadline = time.monotonic() + 600
    while old.inflight and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await old.shutdown()


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


async def read_json_body(gw: Gateway, scope: Any, proto: Any) -> tuple[Any, bytes]:
    """The request body parsed as JSON, with the errors a client needs to fix its request."""
    headers = scope.headers
    ctype = headers.get("content-type") or ""
    if not ctype.startswith("application/json"):
        raise GatewayError(415, f"Content-Type must be application/json, got {ctype or 'none'!r}.",
                           code="unsupported_media_type")
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > gw.max_body:
        raise GatewayError(413, f"Request body is larger than the {gw.max_body} bytes this gateway accepts.",
                           code="request_too_large")
    body = await proto()
    if len(body) > gw.max_body:
        raise GatewayError(413, f"Request body is larger than the {gw.max_body} bytes this gateway accepts.",
                           code="request_too_large")
    try:
        return orjson.loads(body), body
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"The request body is not valid JSON: {exc}.", code="invalid_json") from None


async def _chat_completions(gw: Gateway, scope: Any, proto: Any) -> None:
    data, raw = await read_json_body(gw, scope, proto)
    req = parse_chat_request(data, raw, scope.headers)
    ctx = RequestContext(next_request_id(), time.perf_counter(), client=scope.client)
    await run_watched(proto, gw.chat(ctx, req, proto, OPENAI_FORMAT))


async def run_watched(proto: Any, work: Awaitable[None]) -> None:
    """Run `work`, cancelling it (and so the upstream request) if the client disconnects."""
    task = asyncio.current_task()
    assert task is not None
    # granian's client_disconnect() is already a future: a callback on it costs far less than
    # wrapping it in a Task (ensure_future), which profiling showed at ~10% of a request's Python time.
    watcher = proto.client_disconnect()
    gone = False

    def on_disconnect(_: Any) -> None:
        nonlocal gone
        gone = True
        task.cancel()

    watcher.add_done_callback(on_disconnect)
    try:
        await work
    except asyncio.CancelledError:
        if not gone:
            raise
        log.debug("client disconnected; upstream request cancelled")
    finally:
        watcher.remove_done_callback(on_disconnect)
        watcher.cancel()


async def _models(gw: Gateway, scope: Any, proto: Any) -> None:
    proto.response_bytes(200, _JSON, gw.models_body(scope.headers))


async def _health(gw: Gateway, scope: Any, proto: Any) -> None:
    proto.response_bytes(200, _JSON, b'{"status":"ok"}')


async def _ready(gw: Gateway, scope: Any, proto: Any) -> None:
    proto.response_bytes(200, _JSON, orjson.dumps({"status": "ready", "models": len(gw.models)}))


async def _not_found(app: App, scope: Any, proto: Any) -> None:
    methods = sorted(m for (m, p) in app.routes if p == scope.path)
    if methods:
        err = GatewayError(405, f"Method {scope.method} is not allowed on {scope.path}; use {', '.join(methods)}.",
                           code="method_not_allowed", headers=[("allow", ", ".join(methods))])
    else:
        err = GatewayError(404, f"Unknown path {scope.path}.", code="not_found")
    respond_error(proto, err, None)


def create_app() -> App:
    """Granian's factory target: one App per worker, configured from $LLMGW_CONFIG."""
    return App()
