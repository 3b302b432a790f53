"""The observability plugin: metrics, access log, traces and Langfuse.

Built in and first in the chain (so its on_finish runs last: it sees what every other plugin
recorded — governance's cost, the cache's result). On the request path it does one thing per
request: `on_finish` hands the context and the runner to `Telemetry.finish_request` (Rust), which
counts the metrics and formats the JSON access-log line. A traced (sampled) request's spans are
read and encoded the same way, by `Telemetry.trace_request`, and queued as bytes for the OTLP
exporter (should that call raise, the request gets a `FinishRecord` and the Python `spans_of`
path instead). Only Langfuse's sampled requests and a terminal's readable lines get a full
`FinishRecord`, queued for background export.
The trace context itself is started by the runner (`Gateway.tracer`). Prompts and answers are
collected (pre_request / post_response) only when a sink asks for bodies.

No sink sees a key, an upstream URL or a header.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from llmgw._core import Telemetry
from llmgw.exchange import ChatResponse, Outcome, RequestContext
from llmgw.governance.pricing import PriceBook
from llmgw.observability.accesslog import AccessLog
from llmgw.observability.metrics import DIR_ENV, LATENCY_BUCKETS, OVERHEAD_BUCKETS, MetricsStore
from llmgw.observability.record import AttemptRecord, FinishRecord, StageRecord
from llmgw.plugins.api import Plugin
from llmgw.plugins.chain import PLUGIN_ERRORS
from llmgw.services import RouteRequest, RouteResponse

if TYPE_CHECKING:
    from llmgw.config import Config
    from llmgw.errors import GatewayError
    from llmgw.exchange import ChatRequest
    from llmgw.services import Services

__all__ = ["Observability", "redact_value"]

log = logging.getLogger("llmgw")

_MICRO = 1_000_000
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
_PARAMS = ("temperature", "max_tokens", "max_completion_tokens", "top_p", "frequency_penalty", "presence_penalty",
           "seed", "stop", "n")
_PRICED = frozenset({"chat", "embeddings"})
_NOWHERE = ("", "")
_detector: Any = None


def redact_value(value: Any) -> Any:
    """A copy of `value` (text, or messages) with PII and secrets replaced by `[TYPE]` markers,
    found by the guardrails' detectors."""
    global _detector
    if _detector is None:
        from llmgw.guardrails.detect import PiiDetector

        _detector = PiiDetector()
    if isinstance(value, str):
        matches = _detector.find(value)
        if not matches:
            return value
        out, last = [], 0
        for kind, start, end in matches:
            out.append(value[last:start])
            out.append(f"[{kind.upper()}]")
            last = end
        out.append(value[last:])
        return "".join(out)
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_value(v) if k in ("content", "text", "arguments", "input", "output") else v
                for k, v in value.items()}
    return value


def _json(value: Any) -> bytes | None:
    return None if value is None else orjson.dumps(value)


def _params(run: Any) -> dict[str, Any]:
    """The sampling parameters the client sent (temperature, max_tokens, ...), for spans."""
    req = run.req
    body = req.body if req is not None else None
    return {k: body[k] for k in _PARAMS if k in body} if isinstance(body, dict) else {}


def _finish_reason(run: Any) -> str | None:
    """A streamed answer's finish reason, as the stream pump read it."""
    pump = run.pump
    return getattr(pump, "finish_reason", None) if pump is not None else None


def _answer_text(data: dict[str, Any]) -> str | None:
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


class Observability(Plugin):
    """See the module docstring. Options: `config` (the gateway's Config)."""

    name = "observability"
    kinds = frozenset({"chat", "embeddings", "models", "route"})
    read_only = True

    def __init__(self, config: Config) -> None:
        super().__init__()
        obs = config.observability
        self.config = config
        self.obs = obs
        self.prices = PriceBook(config)
        # upstream name -> (provider, host[:port]): what spans may say about where an attempt went
        self.upstreams = {name: (up.provider, urlsplit(up.base_url).netloc.rpartition("@")[2])
                          for name, up in config.upstreams.items()}
        self.bodies = obs.bodies  # what must be collected: the most any sink wants (none | redacted | full)
        self.log_bodies = obs.access_log.bodies if obs.access_log.format != "off" else "none"
        self.lf_bodies = obs.langfuse.bodies if obs.langfuse is not None else "none"
        self.lf_ratio = obs.langfuse.sample_ratio if obs.langfuse is not None else 0.0
        self.per_key = obs.metrics.per_key_labels
        self.store: MetricsStore | None = None
        self.services: Services | None = None
        self.log_queue: Any = None  # text lines (a terminal): FinishRecords formatted in Python
        self.telemetry: Any = None  # llmgw._core.Telemetry: counts, and the JSON lines
        self.trace_queue: Any = None
        self.langfuse_queue: Any = None
        self.exporters: list[Any] = []
        self.trace_fallbacks = 0  # traced requests whose spans were built in Python (trace_request raised)
        self._log: AccessLog | None = None
        # Trace contexts are started by the runner (gateway.tracer); the hooks below only collect
        # bodies, and are left out when no sink wants them.
        if self.bodies == "none":
            self.pre_request = None  # type: ignore[assignment]
            self.post_response = None  # type: ignore[assignment]

    def same_config(self, config: Config) -> bool:
        c = self.config
        return (config.observability == c.observability and config.models == c.models
                and config.governance == c.governance)

    # -- start and stop ----------------------------------------------------------------------------------
    def startup(self, services: Services) -> None:
        self.services = services
        obs = self.obs
        self.store = store = services.keep("observability.metrics", self._new_store)
        store.collectors["exporters"] = self._exporter_stats
        self.telemetry = tel = store.telemetry
        tel.per_key = obs.metrics.per_key_labels
        tel.configure(prices=self.prices.per_token(), providers={n: p for n, (p, _) in self.upstreams.items()},
                      addresses={n: a for n, (_, a) in self.upstreams.items()})
        tel.json_log = False
        if obs.metrics.enabled:
            import prometheus_client  # noqa: F401 - imported now, not by the first scrape (~25 ms)

            listener = "metrics" if obs.metrics.port else "main"
            services.add_route("GET", obs.metrics.path, self._scrape, listener=listener)
            directory = os.environ.get(DIR_ENV)
            if directory and services.workers > 1:
                services.start_task(self._publish(directory), name="observability:publish")
        if obs.access_log.format != "off":
            self._log = log_ = AccessLog(obs.access_log.format, obs.access_log.destination)
            if log_.format == "json":  # formatted per request in Rust, written from a thread every 0.2 s
                tel.json_log = True
                services.start_task(self._write_log(log_), name="observability:access-log")
            else:  # readable lines for a person at a terminal
                self.log_queue = services.queue("access_log", log_.flush, batch=500, interval=0.2, max_items=100_000)
        if obs.tracing is not None:
            from llmgw.observability.otlp import OtlpExporter

            t = obs.tracing
            exporter = OtlpExporter(t.endpoint, t.headers, service_name=t.service_name, timeout=t.timeout,
                                    compression=t.compression, resource_attributes=t.resource_attributes)
            self.exporters.append(exporter)
            self.trace_queue = services.queue("traces", exporter.export, batch=t.batch, interval=t.interval,
                                              max_items=t.max_queue)
        if obs.langfuse is not None:
            from llmgw.observability.langfuse import LangfuseExporter
            from llmgw.observability.langfuse_otel import LangfuseOtelExporter

            lf = obs.langfuse
            kind = LangfuseOtelExporter if lf.protocol == "otel" else LangfuseExporter
            lexp = kind(lf.host, lf.public_key, lf.secret_key, timeout=lf.timeout, environment=lf.environment,
                        release=lf.release)
            self.exporters.append(lexp)
            self.langfuse_queue = services.queue("langfuse", lexp.export, batch=lf.batch, interval=lf.interval,
                                                 max_items=lf.max_queue)

    def _new_store(self) -> MetricsStore:
        """The worker's store (kept across reloads), with the collectors that read live state."""
        store = MetricsStore()
        store.telemetry = Telemetry(json_log=False, latency_bounds=list(LATENCY_BUCKETS),
                                    overhead_bounds=list(OVERHEAD_BUCKETS), per_key=False)
        services = self.services
        assert services is not None
        directory = os.environ.get(DIR_ENV)
        if directory and services.workers > 1:
            store.adopt(directory, services.worker_id)
        store.collectors["services"] = lambda: _collect_services(services)
        return store

    async def _write_log(self, log_: AccessLog) -> None:
        tel = self.telemetry
        try:
            while True:
                await asyncio.sleep(0.2)
                await log_.write(tel.take_log())
        finally:  # stopped (reload, shutdown): what is buffered goes out now
            if tel.json_log:
                log_.write_now(tel.take_log())

    async def shutdown(self) -> None:
        if self.store is not None:
            self.store.collectors.pop("exporters", None)
        if self.telemetry is not None and self._log is not None and self._log.format == "json":
            self._log.write_now(self.telemetry.take_log())
        for q in (self.log_queue, self.trace_queue, self.langfuse_queue):  # deliver what is queued, then close
            if q is not None:
                await q.drain()
        for exporter in self.exporters:
            await exporter.aclose()
        if self._log is not None:
            await self._log.aclose()

    async def _publish(self, directory: str) -> None:
        store, services = self.store, self.services
        assert store is not None and services is not None
        while True:
            try:
                store.publish(directory, services.worker_id)
            except OSError as exc:
                log.warning("metrics: cannot write this worker's snapshot to %s: %s", directory, exc)
            await services.clock.sleep(1.0)

    async def _scrape(self, ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        store, services = self.store, self.services
        assert store is not None and services is not None
        directory = os.environ.get(DIR_ENV) if services.workers > 1 else None
        return RouteResponse(store.scrape(directory, services.worker_id), content_type=_PROMETHEUS)

    def _exporter_stats(self) -> list[tuple[str, tuple[str, ...], float]]:
        out = []
        for exporter in self.exporters:
            name = getattr(exporter, "name", type(exporter).__name__)
            for outcome, n in exporter.stats().items():
                out.append(("llmgw_export_items_total", (name, outcome), n))
        if self.trace_queue is not None:  # spans built by the Python path (Telemetry.trace_request refused)
            out.append(("llmgw_export_items_total", ("otlp", "built_in_python"), self.trace_fallbacks))
        if self._log is not None:
            out.append(("llmgw_export_items_total", ("access_log", "sent"), self._log.lines))
            if self._log.format == "json":
                tel = self.telemetry
                out.append(("llmgw_queue_depth", ("access_log",), tel.log_pending))
                out.append(("llmgw_queue_dropped_total", ("access_log",), tel.log_dropped))
        return out

    # -- the request path ----------------------------------------------------------------------------
    def pre_request(self, ctx: RequestContext, request: ChatRequest) -> None:
        body = request.body
        ctx.metadata["obs.input"] = body.get("messages") if request.kind == "chat" else body.get("input")
        if request.stream:
            ctx.collect_text = True

    def post_response(self, ctx: RequestContext, result: ChatResponse | GatewayError) -> None:
        if not isinstance(result, ChatResponse):
            return
        if result.streamed:
            ctx.metadata["obs.output"] = result.text
        elif ctx.kind == "chat":
            ctx.metadata["obs.output"] = _answer_text(result.data)

    def on_finish(self, ctx: RequestContext, outcome: Outcome) -> None:
        """Count the request and log it in one Rust call that reads the context and the runner
        itself (callgrind: 15.7k instructions with the JSON line, against 38.6k when Python built
        the 31 fields for it). A traced request's spans come from a second one
        (`Telemetry.trace_request`, ~29k instructions for 4 spans, against ~200k in-process for
        record + spans_of + encoding; the gateway with every request traced went from 519.4k to
        386.1k instructions per request). The full record is built only for Langfuse's sampled
        requests, a terminal's readable line, or a trace the Rust call could not read."""
        if self.log_bodies == "none":
            self.telemetry.finish_request(ctx, outcome._run, outcome.ended, outcome._usage)
        else:
            self.telemetry.finish(self._fields(ctx, outcome))
        if self.log_queue is not None:
            self.log_queue.put(self.record(ctx, outcome, self.log_bodies))
        trace = ctx.trace
        rec = None
        if self.trace_queue is not None and trace is not None and trace.sampled:
            # the spans read and encoded in Rust: (span count, span entries) for OtlpExporter.export
            try:
                item = self.telemetry.trace_request(ctx, outcome._run, outcome.ended, outcome._usage)
            except Exception as exc:  # never the request's failure, never its spans lost: the Python path
                item = rec = self.record(ctx, outcome, self.lf_bodies)
                self.trace_fallbacks += 1
                if self.trace_fallbacks == 1 or self.trace_fallbacks % 1000 == 0:
                    log.warning("observability: spans built in Python for a request Telemetry.trace_request "
                                "cannot read (%d so far): %s: %s", self.trace_fallbacks, type(exc).__name__, exc)
            if item is not None:
                self.trace_queue.put(item)
        if self.langfuse_queue is not None and (self.lf_ratio >= 1.0 or random.random() < self.lf_ratio):
            self.langfuse_queue.put(rec if rec is not None else self.record(ctx, outcome, self.lf_bodies))

    def _fields(self, ctx: RequestContext, outcome: Outcome) -> tuple[Any, ...]:
        """The 31 fields of `Telemetry.finish` (llmgw._core.TELEMETRY_FIELDS), with the log's
        bodies: the Python path `finish_request` is tested against."""
        status, result, err, usage, estimated, streamed, ttfb, overhead, method, route = outcome.facts()
        now_ns, now = time.time_ns(), time.perf_counter()
        plan, trace, meta, attempts = ctx.plan, ctx.trace, ctx.metadata, ctx.attempts
        served, deployment, micro = self._served(ctx, usage) if attempts else (None, None, 0)
        rows = [(a.deployment, a.status, a.error.code if a.error is not None else None, a.total_s or 0.0,
                 self._via(plan, a), a.retry, a.hedge, a.cancelled) for a in attempts]
        kind = ctx.kind
        body_in, body_out = self._bodies(ctx, self.log_bodies)
        return (
            ctx.request_id, now_ns - int((now - ctx.started) * 1e9), outcome.ended - ctx.started, ttfb,
            ctx.upstream_s, overhead, kind, method, route, status, result, ctx.model,
            plan.group if plan is not None else None, deployment,
            self.upstreams.get(served.target, _NOWHERE)[0] if served is not None else None,
            err.code if err is not None else None, ctx.key_id, ctx.key_name, ctx.user, ctx.team,
            usage.prompt_tokens if usage is not None else 0, usage.completion_tokens if usage is not None else 0,
            (usage.cached_tokens or 0) if usage is not None else 0, estimated,
            micro / _MICRO if micro is not None and kind in _PRICED else None, meta.get("cache"), streamed,
            trace.trace_id if trace is not None else None, rows, _json(body_in), body_out)

    # -- the record -------------------------------------------------------------------------------------
    def _served(self, ctx: RequestContext, usage: Any) -> tuple[Any, str | None, int | None]:
        """(the attempt whose answer the client got, the deployment to bill and label, micro-USD)."""
        served = None
        for a in ctx.attempts:
            if a.error is None and a.status is not None and a.status < 300 and not a.cancelled:
                served = a
        known = ctx.metadata.get("gov.cost")  # governance priced it already (its on_finish ran before this one)
        if known is not None and known[0] is usage:
            micro, deployment = known[1], known[2]
        else:
            micro, deployment = self.prices.request_cost(ctx.attempts, usage)
        return served, served.deployment if served is not None else deployment, micro

    @staticmethod
    def _via(plan: Any, a: Any) -> str:
        """"fallback" for an attempt on a deployment the plan reaches only as a fallback."""
        if plan is None or not plan.fallbacks:
            return "primary"
        primaries = plan.primaries
        for step in plan.fallbacks:
            if step.deployment == a.deployment and not any(p.deployment == a.deployment for p in primaries):
                return "fallback"
        return "primary"

    def _bodies(self, ctx: RequestContext, mode: str) -> tuple[Any, str | None]:
        meta = ctx.metadata
        value, out = meta.get("obs.input"), meta.get("obs.output")
        if mode == "redacted":
            value, out = redact_value(value), redact_value(out)
        return value, out

    def record(self, ctx: RequestContext, outcome: Outcome, bodies: str = "none") -> FinishRecord:
        """The full FinishRecord (spans, Langfuse, a terminal's line), with `bodies` as asked."""
        now_ns, now = time.time_ns(), time.perf_counter()

        def wall(t: float) -> int:
            return now_ns - int((now - t) * 1e9)

        ended = outcome.ended
        usage = outcome.usage
        meta = ctx.metadata
        plan = ctx.plan
        err = outcome.error
        served, deployment, micro = self._served(ctx, usage)
        attempts = []
        for a in ctx.attempts:
            e = a.error
            provider, address = self.upstreams.get(a.target, _NOWHERE)
            attempts.append(AttemptRecord(
                a.deployment, a.target, provider, a.model, wall(a.started),
                wall(a.started + (a.total_s or 0.0)), a.status, e.code if e is not None else None, a.error_class,
                self._via(plan, a), a.retry, a.hedge, a.cancelled, a.ttfb_s, a.span_id, address))
        trace = ctx.trace
        rec = FinishRecord(
            ctx.request_id, wall(ctx.started), wall(ended), ended - ctx.started, outcome.ttfb, ctx.upstream_s,
            outcome.overhead_s, ctx.kind, ctx.dialect, outcome.method, outcome.route, outcome.status, outcome.result,
            model=ctx.model, group=plan.group if plan is not None else None, deployment=deployment,
            provider=self.upstreams.get(served.target, _NOWHERE)[0] if served is not None else None,
            response_model=served.model if served is not None else None,
            error_code=err.code if err is not None else None, error_type=err.type if err is not None else None,
            error_message=err.message if err is not None else None,
            key_id=ctx.key_id, key_name=ctx.key_name, user=ctx.user, team=ctx.team,
            prompt_tokens=usage.prompt_tokens if usage is not None else 0,
            completion_tokens=usage.completion_tokens if usage is not None else 0,
            cached_tokens=(usage.cached_tokens or 0) if usage is not None else 0,
            usage_estimated=outcome.usage_estimated,
            cost_usd=micro / _MICRO if micro is not None and ctx.kind in _PRICED else None,
            cache=meta.get("cache"), stream=outcome.streamed, finish_reason=_finish_reason(outcome._run),
            attempts=attempts, params=_params(outcome._run))
        if trace is not None:
            rec.trace_id, rec.span_id, rec.parent_span_id, rec.sampled = (
                trace.trace_id, trace.span_id, trace.parent_span_id, trace.sampled and self.obs.tracing is not None)
            if ctx.stages:
                rec.stages = [StageRecord(f"{name} {hook}", wall(t0), wall(t1), {"llmgw.plugin": name})
                              for name, hook, t0, t1 in ctx.stages if name != self.name]
        if bodies != "none":
            rec.input, rec.output = self._bodies(ctx, bodies)
        return rec

    # -- metrics -----------------------------------------------------------------------------------------
    def count(self, r: FinishRecord) -> None:
        """The metrics of one request in Python: the reference `Telemetry.finish` (which the
        gateway calls: 1.6 µs against 11.3 µs for this path with the JSON line) is tested
        against, series for series (tests/test_telemetry.py)."""
        store = self.store
        assert store is not None
        group = r.group or ""
        deployment = r.deployment or ""
        inc, observe = store.inc, store.observe
        inc("llmgw_requests_total", (r.path, group, deployment, str(r.status)))
        observe("llmgw_request_duration_seconds", (r.path, group), r.duration_s)
        observe("llmgw_gateway_overhead_seconds", (r.path,), r.overhead_s)
        if r.stream and r.ttfb_s is not None:
            observe("llmgw_time_to_first_token_seconds", (group,), r.ttfb_s)
        if r.prompt_tokens or r.completion_tokens:
            inc("llmgw_tokens_total", (group, deployment, "input"), r.prompt_tokens)
            inc("llmgw_tokens_total", (group, deployment, "output"), r.completion_tokens)
            if r.cached_tokens:
                inc("llmgw_tokens_total", (group, deployment, "cached"), r.cached_tokens)
            if r.cost_usd is not None:
                inc("llmgw_cost_usd_total", (group, deployment), r.cost_usd)
            else:
                inc("llmgw_unpriced_requests_total", (group, deployment))
        if r.cache is not None:
            inc("llmgw_cache_requests_total", (group, r.cache))
        previous = None
        for a in r.attempts:
            seconds = (a.end_ns - a.start_ns) / 1e9
            observe("llmgw_upstream_duration_seconds", (group, a.deployment), seconds)
            if a.error_code is not None and not a.cancelled:
                inc("llmgw_upstream_failures_total", (group, a.deployment, a.error_code))
            if previous is not None and previous.error_code is not None:
                if a.retry:
                    inc("llmgw_retries_total", (group, a.deployment, previous.error_code))
                elif a.via == "fallback":
                    inc("llmgw_fallbacks_total", (group, previous.error_code))
            previous = a
        code = r.error_code
        if code is not None:
            inc("llmgw_errors_total", (r.path, code))
            if code == "rate_limit_exceeded":
                inc("llmgw_rate_limited_total", (group,))
            elif code == "budget_exceeded":
                inc("llmgw_budget_blocked_total", (group,))
        if self.per_key and (r.key_id or r.key_name):
            key, team = r.key_name or r.key_id or "", r.team or ""
            inc("llmgw_key_requests_total", (key, team, str(r.status)))
            if r.prompt_tokens or r.completion_tokens:
                inc("llmgw_key_tokens_total", (key, team, "input"), r.prompt_tokens)
                inc("llmgw_key_tokens_total", (key, team, "output"), r.completion_tokens)
            if r.cost_usd:
                inc("llmgw_key_cost_usd_total", (key, team), r.cost_usd)


def _collect_services(services: Services) -> list[tuple[str, tuple[str, ...], float]]:
    """What the worker knows outside the finish records: in flight, queues, breakers, guardrails,
    plugin crashes, governance events."""
    out: list[tuple[str, tuple[str, ...], float]] = []
    stats = services.stats()
    server = stats.get("server")
    if server:
        out.append(("llmgw_requests_in_flight", (), server.get("working", 0)))
        out.append(("llmgw_connections", (), server.get("connections", 0)))
        for reason in ("overloaded", "too_many_connections", "header_timeout", "body_timeout", "slow_reader"):
            if server.get(reason):
                out.append(("llmgw_requests_shed_total", (reason,), server[reason]))
    for q in services.queues():
        out.append(("llmgw_queue_depth", (q.name,), q.depth))
        out.append(("llmgw_queue_dropped_total", (q.name,), q.dropped))
        out.append(("llmgw_queue_flushed_total", (q.name,), q.flushed))
        out.append(("llmgw_queue_failures_total", (q.name,), q.failures))
    for name, n in (stats.get("guardrails") or {}).items():
        check, _, action = name.partition(".")
        out.append(("llmgw_guardrail_actions_total", (check, action or "count"), n))
    for (plugin, hook, mode), n in PLUGIN_ERRORS.items():
        out.append(("llmgw_plugin_errors_total", (plugin, hook, mode), n))
    gov = stats.get("governance") or {}
    for event, n in gov.items():
        if isinstance(n, (int, float)) and not isinstance(n, bool):
            out.append(("llmgw_governance_events_total", (event,), n))
    cache = stats.get("cache")
    if cache:
        out += [("llmgw_cache_entries", (), cache["entries"]), ("llmgw_cache_bytes", (), cache["bytes"]),
                ("llmgw_cache_saved_usd_total", (), cache["saved_usd"]),
                ("llmgw_cache_coalesced_total", (), cache["coalesced"]),
                ("llmgw_cache_evictions_total", ("evicted",), cache["evicted"]),
                ("llmgw_cache_evictions_total", ("expired",), cache["expired"])]
    states = services.peek("routing.states")
    if states is not None:
        group_of = {d.name: g.name for g in services.config.models.values() for d in g.deployments}
        for state in states.all():
            name = state.deployment.name
            group = group_of.get(name, "")
            out.append(("llmgw_deployment_in_flight", (group, name), state.inflight))
            if state.breaker is not None:
                for s in ("closed", "half_open", "open"):
                    out.append(("llmgw_circuit_breaker_state", (group, name, s), 1 if state.breaker.state == s else 0))
    return out
