"""The application of one worker: the endpoint table, the Gateway now serving, reloads.

One `App` per worker process. It owns the worker's `Services` (built once, alive until the
worker stops) and the `Gateway` built from the current configuration; a reload builds a new
Gateway beside it (keeping unchanged pools and plugins), swaps it in, and retires the old one
once the requests that started on it are done. A config with errors, or a plugin whose startup
fails, leaves the old configuration serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import orjson

from llmgw.config import Config, load_config
from llmgw.errors import GatewayError
from llmgw.gateway import Gateway
from llmgw.http.body import JSON_HEADERS, respond_error
from llmgw.http.server import HttpRequest, HttpServer, ServerLimits
from llmgw.providers import registry
from llmgw.runner import ANTHROPIC_MESSAGES, CHAT, EMBEDDINGS, MODELS, Endpoint, RequestRunner
from llmgw.services import Services

__all__ = ["App", "ENDPOINTS", "limits_from"]

log = logging.getLogger("llmgw")

CONFIG_ENV = "LLMGW_CONFIG"

ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("POST", "/v1/chat/completions"): CHAT,
    ("POST", "/v1/messages"): ANTHROPIC_MESSAGES,
    ("POST", "/v1/embeddings"): EMBEDDINGS,
    ("GET", "/v1/models"): MODELS,
}
_HEALTH = frozenset({"/health", "/ready"})

def limits_from(config: Config) -> ServerLimits:
    s = config.server
    return ServerLimits(header_timeout=s.header_timeout, body_timeout=s.body_timeout,
                        keepalive_timeout=s.keepalive_timeout, write_timeout=s.write_timeout,
                        max_connections=s.max_connections, max_inflight=s.max_inflight,
                        shutdown_timeout=s.shutdown_timeout, unshed_paths=_HEALTH)


class App:
    """A worker's application (see the module docstring)."""

    def __init__(self, config_path: str | None = None, config: Config | None = None, *, worker_id: int = 0,
                 workers: int = 1) -> None:
        self.config_path = config_path or os.environ.get(CONFIG_ENV)
        self._initial = config
        self.services = Services(worker_id, workers)
        self.gateway: Gateway | None = None
        self.server: HttpServer | None = None
        self.metrics_server: HttpServer | None = None  # observability.metrics.port
        self._mtime = 0.0
        self._watch: asyncio.Task[None] | None = None
        self._reloading = False
        self._retiring: set[asyncio.Task[None]] = set()

    def _load(self) -> Config:
        if self._initial is not None:
            config, self._initial = self._initial, None
            return config
        if not self.config_path:
            raise RuntimeError(f"no configuration: pass --config or set {CONFIG_ENV}")
        self._mtime = _mtime(self.config_path)
        return load_config(self.config_path, providers=registry)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self, sock: Any, metrics_sock: Any = None) -> None:
        """Load the config, start the plugins, then accept connections on `sock` (and on
        `metrics_sock`, the metrics port, when given)."""
        config = self._load()
        self.services._reg.config = config
        gateway = Gateway(config, self.services)
        await gateway.start()
        self.gateway = gateway
        self.server = HttpServer(self.handle, limits_from(config))
        self.services.add_stats("server", self.server.stats)
        await self.server.start(sock)
        if metrics_sock is not None:
            self.metrics_server = HttpServer(self.handle_metrics, limits_from(config))
            await self.metrics_server.start(metrics_sock)
        if self.config_path:
            self._watch = asyncio.get_running_loop().create_task(self._watch_config())

    async def stop(self) -> None:
        """Drain: no new connections, requests in flight finish, then plugins stop in reverse
        order and every background queue is flushed."""
        if self._watch is not None:
            self._watch.cancel()
        if self.server is not None:
            await self.server.shutdown()
        if self.metrics_server is not None:
            await self.metrics_server.shutdown()
        if self._retiring:
            await asyncio.wait(list(self._retiring), timeout=30)
        if self.gateway is not None:
            await self.gateway.retire(None, grace=5.0)
        await self.services.close()

    async def _watch_config(self) -> None:
        # One stat() a second: negligible, and catches edits where SIGHUP is not sent.
        assert self.config_path
        while True:
            await asyncio.sleep(1.0)
            m = _mtime(self.config_path)
            if m and m != self._mtime:
                await self.reload("file change")

    async def reload(self, why: str) -> bool:
        """Load the config again; on any error keep serving the old one. True if swapped."""
        if self._reloading or not self.config_path:
            return False
        self._reloading = True
        try:
            old = self.gateway
            try:
                config = self._load()
                new = Gateway(config, self.services, previous=old)
                await new.start()
            except Exception as exc:
                log.error("config reload (%s) failed; still serving the previous config:\n%s", why, exc)
                return False
            self.gateway = new
            self.services._reg.config = config
            log.info("config reloaded (%s) from %s", why, self.config_path)
            if old is not None:
                o, n = old.config.server, config.server
                if (o.host, o.port, o.workers) != (n.host, n.port, n.workers):
                    log.warning("server.host/port/workers changed; they take effect on restart")
                if self.server is not None:
                    self.server.limits = limits_from(config)
                task = asyncio.get_running_loop().create_task(old.retire(new))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            return True
        finally:
            self._reloading = False

    # -- requests -------------------------------------------------------------------------------------
    async def handle(self, req: HttpRequest) -> None:
        gw = self.gateway
        assert gw is not None
        ep = ENDPOINTS.get((req.method, req.path))
        if ep is None:
            return await self._other(gw, req)
        gw.inflight += 1
        try:
            await RequestRunner(gw, req, ep).run()
        finally:
            gw.inflight -= 1

    async def handle_metrics(self, req: HttpRequest) -> None:
        """The metrics port: the routes registered for it (GET /metrics) and /health."""
        gw = self.gateway
        assert gw is not None
        if req.path == "/health" and req.method == "GET":
            return req.respond(200, JSON_HEADERS, b'{"status":"ok"}')
        route, params, allowed = self.services.find_route(req.method, req.path, listener="metrics")
        if route is not None:
            return await RequestRunner.for_route(gw, req, route, params).run()
        if allowed:
            err = GatewayError(405, f"Method {req.method} is not allowed on {req.path}; use "
                               f"{', '.join(sorted(set(allowed)))}.", code="method_not_allowed")
        else:
            err = GatewayError(404, f"Unknown path {req.path}.", code="not_found")
        respond_error(req, err)

    async def _other(self, gw: Gateway, req: HttpRequest) -> None:
        path, method = req.path, req.method
        if path in _HEALTH and method == "GET":
            body = b'{"status":"ok"}' if path == "/health" else \
                orjson.dumps({"status": "ready", "models": len(gw.config.models)})
            return req.respond(200, JSON_HEADERS, body)
        route, params, allowed = self.services.find_route(method, path)
        if route is not None:
            gw.inflight += 1
            try:
                return await RequestRunner.for_route(gw, req, route, params).run()
            finally:
                gw.inflight -= 1
        allowed += [m for (m, p) in ENDPOINTS if p == path]
        if path in _HEALTH:
            allowed += ["GET"]
        if allowed:
            err = GatewayError(405, f"Method {method} is not allowed on {path}; use {', '.join(sorted(set(allowed)))}.",
                               code="method_not_allowed", headers=[("allow", ", ".join(sorted(set(allowed))))])
        else:
            err = GatewayError(404, f"Unknown path {path}.", code="not_found")
        respond_error(req, err)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def install_signals(app: App, stop: asyncio.Event) -> None:
    """SIGHUP reloads; SIGTERM and SIGINT stop the worker gracefully."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(app.reload("SIGHUP")))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
