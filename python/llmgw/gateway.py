"""The Gateway: everything built from one configuration, shared by a worker's requests.

A reload builds a new Gateway from the new config and the one serving now, keeping what did not
change: the connection pool of an upstream whose config is equal, the plugin instance (with its
state) of a config entry that is equal. Requests in flight finish on the Gateway they started
with; `retire` then stops what the new one does not use. App-scoped state lives in `Services`
and is never rebuilt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time
from typing import Any

from llmgw.config import Config, PluginSpec, UpstreamConfig
from llmgw.http.body import BodyLimits
from llmgw.plugins.auth import ApiKeyAuth
from llmgw.plugins.chain import PluginChain
from llmgw.plugins.loader import LoadedPlugin, instantiate, load_plugin
from llmgw.providers import registry
from llmgw.routing import DeploymentStates, Dispatcher, Router
from llmgw.routing.shadow import ShadowTraffic
from llmgw.services import Services
from llmgw.tracecontext import Sampler
from llmgw.transport import Transport, UpstreamPool
from llmgw.upstream import Scrubber, Target

__all__ = ["Gateway"]

log = logging.getLogger("llmgw")


def _pool(up: UpstreamConfig) -> Transport:
    ssl_ctx = None
    if up.base_url.startswith("https://"):
        ssl_ctx = ssl.create_default_context(cafile=up.ca_file)
        if not up.tls_verify:
            ssl_ctx.check_hostname = False
            ssl_ctx.verify_mode = ssl.CERT_NONE
    cls: Any = UpstreamPool
    if up.transport == "aiohttp":
        from llmgw.transport_aiohttp import AiohttpPool

        cls = AiohttpPool
    return cls(up.base_url, max_connections=up.max_connections, ssl_context=ssl_ctx,
               connect_timeout=up.timeouts.connect or 5.0)


class Gateway:
    """Routes, upstreams, plugins and limits of one configuration (see the module docstring)."""

    def __init__(self, config: Config, services: Services, previous: Gateway | None = None) -> None:
        self.config = config
        self.services = services
        self.inflight = 0
        old_pools = previous.pools if previous is not None else {}
        self.pools: dict[str, tuple[UpstreamConfig, Transport]] = {}
        self.targets: dict[str, Target] = {}
        self._new_pools: list[Transport] = []
        for name, up in config.upstreams.items():
            kept = old_pools.get(name)
            if kept is not None and kept[0] == up:
                pool = kept[1]
            else:
                pool = _pool(up)
                self._new_pools.append(pool)
            self.pools[name] = (up, pool)
            self.targets[name] = Target(name, registry.get(up.provider)(up), pool, up.timeouts)
        # A team's own provider key (governance.teams): the same pool, an adapter with that key.
        self.team_targets: dict[tuple[str, str], Target] = {}
        team_keys = config.governance.team_keys if config.governance is not None else {}
        for team, per_upstream in team_keys.items():
            for name, key in per_upstream.items():
                up, pool = self.pools[name]
                self.team_targets[(team, name)] = Target(
                    name, registry.get(up.provider)(dataclasses.replace(up, api_key=key)), pool, up.timeouts)
        plugins, self.fresh = self._plugins(config, previous)
        self.chain = PluginChain(plugins)
        clock = self.clock = services.clock
        self.router = Router(config, services.keep("routing.states", lambda: DeploymentStates(clock)), clock)
        self.dispatcher = Dispatcher(self.router, clock)
        self.shadow = services.keep("routing.shadow", ShadowTraffic)
        secrets = [up.api_key or "" for up in config.upstreams.values()]
        secrets += [v for up in config.upstreams.values() for _, v in up.headers if len(v) >= 8]
        secrets += [k.key for k in config.auth_keys]
        if config.governance is not None:
            secrets += [config.governance.master_key or ""]
            secrets += [k for per_upstream in team_keys.values() for k in per_upstream.values()]
        self.scrub = Scrubber(secrets)
        self.body_limits = BodyLimits(config.server.max_body_bytes, config.server.max_json_depth)
        tracing = config.observability.tracing
        self.tracer = Sampler(tracing.sample_ratio) if tracing is not None else None
        services.set_model_caller(self.call_model)

    async def call_model(self, model: str, body: dict[str, Any], kind: str = "chat",
                         timeout: float = 10.0) -> dict[str, Any]:
        """One non-streamed call to a model group for a plugin (an LLM judge, embeddings): the
        group's routing, retries and fallbacks and the upstreams' pools, without the plugin
        chain (no auth, limits or ledger: the plugin's caller is the gateway). Raises
        GatewayError (UpstreamFailure included) when no deployment answers."""
        from llmgw.errors import GatewayError
        from llmgw.exchange import ChatRequest, RequestContext, Usage
        from llmgw.routing.dispatch import clip_timeouts
        from llmgw.providers.base import optional_part
        from llmgw.transport import UpstreamError
        from llmgw.upstream import exchange, transport_failure

        ctx = RequestContext(f"internal-{id(body):x}", time.perf_counter(), kind=kind, services=self.services)
        ctx.metadata["client_timeout"] = timeout
        req = ChatRequest(body={**body, "model": model}, model=model, stream=False, kind=kind)
        plan = self.router.plan(ctx, req)
        if plan is None:
            raise GatewayError(404, f"The model '{model}' does not exist.", code="model_not_found", param="model")

        async def send(step: Any, attempt: Any, deadline: float | None) -> dict[str, Any]:
            target = self.target(step.target, None)
            if kind == "chat":
                ureq = target.adapter.chat_request(req.body, step.model, False, None)
                read = target.adapter.chat_response
            else:
                build, read = optional_part(target.adapter, "embeddings_request"), \
                    optional_part(target.adapter, "embeddings_response")
                if build is None or read is None:
                    raise GatewayError(400, f"Model '{model}' does not support embeddings.", code="embeddings_not_supported")
                ureq = build(req.body, step.model)
            raw = await exchange(target, ureq, attempt, ctx, self.scrub,
                                 clip_timeouts(target.timeouts, deadline, self.clock, False))
            try:
                answer = read(raw, model)
            except UpstreamError as exc:
                raise transport_failure(exc, target.name, self.scrub) from None
            attempt.usage = Usage.from_openai(answer.get("usage"))
            return answer  # type: ignore[no-any-return]

        return await self.dispatcher.run(ctx, plan, send, stream=False)  # type: ignore[no-any-return]

    @staticmethod
    def _plugins(config: Config, previous: Gateway | None) -> tuple[list[LoadedPlugin], list[LoadedPlugin]]:
        """The plugins of `config`, reusing the previous instance of every unchanged entry; and
        the ones that are new (they need startup)."""
        reusable = list(previous.chain.plugins) if previous is not None else []
        plugins: list[LoadedPlugin] = []
        fresh: list[LoadedPlugin] = []

        def take(match: Any, make: Any) -> None:
            for i, old in enumerate(reusable):
                if match(old):
                    plugins.append(reusable.pop(i))
                    return
            new = make()
            plugins.append(new)
            fresh.append(new)

        obs = config.observability
        if obs.metrics.enabled or obs.access_log.format != "off" or obs.tracing or obs.langfuse:
            # First: its on_headers reads the trace context before anything else runs, and its
            # on_finish (reverse order) runs last, seeing what every other plugin recorded.
            from llmgw.observability.plugin import Observability

            take(lambda p: isinstance(p.instance, Observability) and p.instance.same_config(config),
                 lambda: instantiate(Observability, "observability", {"config": config}))
        if config.governance is not None:  # keys, limits, budgets, ledger (it also checks auth.keys)
            from llmgw.governance import Governance

            take(lambda p: isinstance(p.instance, Governance) and p.instance.same_config(config),
                 lambda: instantiate(Governance, "governance", {"config": config}))
            # The admin dashboard (/ui and the admin endpoints it reads): only an on_finish hook
            # on the request path, a tuple appended to a ring (llmgw/dashboard/plugin.py).
            from llmgw.dashboard.plugin import Dashboard

            take(lambda p: isinstance(p.instance, Dashboard) and p.instance.same_config(config),
                 lambda: instantiate(Dashboard, "dashboard", {"config": config}))
        elif config.auth_keys:
            take(lambda p: p.spec is None and isinstance(p.instance, ApiKeyAuth) and p.instance.keys == config.auth_keys,
                 lambda: instantiate(ApiKeyAuth, "auth", {"keys": config.auth_keys}))
        if config.guardrails is not None:  # after authentication, before the user's plugins
            from llmgw.guardrails.plugin import Guardrails

            guard = config.guardrails
            take(lambda p: isinstance(p.instance, Guardrails) and p.instance.same_config(guard),
                 lambda: instantiate(Guardrails, "guardrails", {"config": guard},
                                     PluginSpec("llmgw.guardrails:Guardrails", on_error=guard.on_error)))
        for spec in config.plugins:
            take(lambda p, spec=spec: p.spec == spec, lambda spec=spec: load_plugin(spec))
        if config.cache is not None:  # last: next to the upstream, after every check and rewrite
            from llmgw.cache.plugin import Cache

            # on_error open: a cache that fails is a miss, never a failed request.
            take(lambda p: isinstance(p.instance, Cache) and p.instance.same_config(config),
                 lambda: instantiate(Cache, "cache", {"config": config}, PluginSpec("llmgw.cache:Cache", on_error="open")))
        return plugins, fresh

    def target(self, name: str, team: str | None) -> Target:
        """The upstream `name`, with the team's own provider key when it has one."""
        if team is not None and self.team_targets:
            return self.team_targets.get((team, name)) or self.targets[name]
        return self.targets[name]

    def routes_to_provider(self, data: Any, provider: str) -> bool:
        """Whether the model named in a request body goes first to an upstream of `provider`."""
        model = data.get("model") if isinstance(data, dict) else None
        group = self.router.group(model) if isinstance(model, str) else None
        target = self.targets.get(group.deployments[0].upstream) if group is not None and group.deployments else None
        return target is not None and target.adapter.name == provider

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the new plugins in order. If one fails, the ones started here are stopped again
        (in reverse) and the error propagates: the previous configuration keeps serving."""
        started: list[LoadedPlugin] = []
        try:
            for p in self.fresh:
                out = p.instance.startup(self.services.scoped(p.owner)) if hasattr(p.instance, "startup") else None
                if asyncio.iscoroutine(out):
                    await out
                started.append(p)
            self.fresh = []
        except BaseException:
            for p in reversed(started):
                await self._stop_plugin(p)
            for pool in self._new_pools:
                await pool.aclose()
            raise

    async def _stop_plugin(self, p: LoadedPlugin) -> None:
        try:
            out = p.instance.shutdown() if hasattr(p.instance, "shutdown") else None
            if asyncio.iscoroutine(out):
                await out
        except Exception:
            log.exception("plugin %s failed in shutdown", p.name)
        await self.services.release(p.owner)

    async def retire(self, successor: Gateway | None, grace: float = 600.0) -> None:
        """After the requests that started here are done (or `grace` passed), stop the plugins and
        close the pools that `successor` does not use; everything, when there is none."""
        deadline = time.monotonic() + grace
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        kept_plugins = {id(p) for p in successor.chain.plugins} if successor is not None else set()
        for p in reversed(self.chain.plugins):
            if id(p) not in kept_plugins:
                await self._stop_plugin(p)
        kept_pools = {id(pool) for _, pool in successor.pools.values()} if successor is not None else set()
        for _, pool in self.pools.values():
            if id(pool) not in kept_pools:
                await pool.aclose()
