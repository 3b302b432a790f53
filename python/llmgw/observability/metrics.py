"""Prometheus metrics: the families, one worker's store, aggregation over workers, the exposition.

Why not count with prometheus-client itself: measured per request on this machine (one counter
with 4 labels, 4 histograms, 3 token counters and a cost counter), its `labels(...).inc()` /
`observe()` cost 15.7 µs in-process and 20.7 µs in its multiprocess mode, against 0.75 µs for
the same updates as plain dict and list arithmetic — a quarter of the gateway's whole per-request
CPU. So requests are counted outside it — by `llmgw._core.Telemetry` in Rust (1.6 µs with the
log line; `MetricsStore.inc`/`observe` are the Python reference it is tested against) — and
`MetricsStore` adds what is read at snapshot time (queues, breakers, exporters); prometheus-client
renders the text exposition at scrape time (`render`): the official wire format, and none of its
cost on the request path.

Several workers (`--workers N`): every second each worker writes its snapshot to
`$LLMGW_METRICS_DIR/worker-<id>.json` (the supervisor creates the directory); the worker that
answers a scrape adds the other workers' latest snapshots to its own live counts. A worker that
replaces a dead one starts from the dead one's counters, so sums never go backwards.
"""

from __future__ import annotations

import bisect
import logging
import os
from typing import Any, Callable, Iterable

import orjson

__all__ = ["FAMILIES", "LATENCY_BUCKETS", "MetricsStore", "merge", "render"]

log = logging.getLogger("llmgw")

DIR_ENV = "LLMGW_METRICS_DIR"

# Seconds: from a cache hit (~100 µs) to a long generation (minutes).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# name -> (type, help, label names). Counters end in _total; over workers every series is summed
# (a gauge too: in-flight requests add up, and breaker state counts the workers in each state).
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "llmgw_requests_total": ("counter", "Requests answered, by API route, model group, serving deployment and status",
                             ("route", "model_group", "deployment", "status")),
    "llmgw_request_duration_seconds": ("histogram", "Total request latency, first request byte to last response byte",
                                       ("route", "model_group")),
    "llmgw_time_to_first_token_seconds": ("histogram", "Streamed requests: time to the first event sent to the client",
                                          ("model_group",)),
    "llmgw_upstream_duration_seconds": ("histogram", "Upstream attempts: from sending to the last byte (or failure)",
                                        ("model_group", "deployment")),
    "llmgw_gateway_overhead_seconds": ("histogram", "The gateway's own time per request (not upstream, not a slow client)",
                                       ("route",)),
    "llmgw_tokens_total": ("counter", "Tokens by direction: input, output, cached (input served from the provider's cache)",
                           ("model_group", "deployment", "type")),
    "llmgw_cost_usd_total": ("counter", "Upstream cost in USD (priced requests only)", ("model_group", "deployment")),
    "llmgw_unpriced_requests_total": ("counter", "Answered requests whose model has no known price",
                                      ("model_group", "deployment")),
    "llmgw_cache_requests_total": ("counter", "Cache lookups by result: hit, semantic-hit, miss", ("model_group", "result")),
    "llmgw_fallbacks_total": ("counter", "Attempts on a fallback deployment, by the trigger that caused them",
                              ("model_group", "trigger")),
    "llmgw_retries_total": ("counter", "Second tries of the same deployment, by the trigger that caused them",
                            ("model_group", "deployment", "trigger")),
    "llmgw_upstream_failures_total": ("counter", "Failed upstream attempts by deployment and reason",
                                      ("model_group", "deployment", "reason")),
    "llmgw_errors_total": ("counter", "Requests answered with an error, by error code", ("route", "code")),
    "llmgw_rate_limited_total": ("counter", "Requests refused by a rate limit (429 rate_limit_exceeded)",
                                 ("model_group",)),
    "llmgw_budget_blocked_total": ("counter", "Requests refused by a budget (429 budget_exceeded)", ("model_group",)),
    "llmgw_key_requests_total": ("counter", "Requests per key (observability.metrics.per_key_labels)",
                                 ("key", "team", "status")),
    "llmgw_key_tokens_total": ("counter", "Tokens per key (observability.metrics.per_key_labels)", ("key", "team", "type")),
    "llmgw_key_cost_usd_total": ("counter", "Cost per key in USD (observability.metrics.per_key_labels)", ("key", "team")),
    # Collected when a snapshot is taken:
    "llmgw_requests_in_flight": ("gauge", "Requests being answered now", ()),
    "llmgw_connections": ("gauge", "Open client connections", ()),
    "llmgw_requests_shed_total": ("counter", "Requests refused at once by server limits (503 overloaded, ...)", ("reason",)),
    "llmgw_queue_depth": ("gauge", "Items waiting in a background queue (ledger, traces, logs, ...)", ("queue",)),
    "llmgw_queue_dropped_total": ("counter", "Items a full background queue had to drop", ("queue",)),
    "llmgw_queue_flushed_total": ("counter", "Items written by a background queue", ("queue",)),
    "llmgw_queue_failures_total": ("counter", "Failed flushes of a background queue (retried)", ("queue",)),
    "llmgw_circuit_breaker_state": ("gauge", "Workers whose breaker for the deployment is in this state",
                                    ("model_group", "deployment", "state")),
    "llmgw_deployment_in_flight": ("gauge", "Attempts running on a deployment", ("model_group", "deployment")),
    "llmgw_guardrail_actions_total": ("counter", "Guardrail decisions by check and action", ("check", "action")),
    "llmgw_plugin_errors_total": ("counter", "Plugin hooks that raised, by plugin, hook and on_error mode",
                                  ("plugin", "hook", "mode")),
    "llmgw_export_items_total": ("counter", "Items handed to an exporter, by exporter and outcome",
                                 ("exporter", "outcome")),
    "llmgw_governance_events_total": ("counter", "Governance events (soft limits, unpriced models, store failures, ...)",
                                      ("event",)),
    "llmgw_cache_entries": ("gauge", "Cached answers held in memory (each worker holds the shared ones too)", ()),
    "llmgw_cache_bytes": ("gauge", "Memory the cached answers, prompts and vectors take", ()),
    "llmgw_cache_saved_usd_total": ("counter", "Upstream cost the cache's hits did not spend, in USD", ()),
    "llmgw_cache_coalesced_total": ("counter", "Requests that shared an identical request's upstream call", ()),
    "llmgw_cache_evictions_total": ("counter", "Entries removed before use: evicted (size bounds) or expired (TTL)",
                                    ("reason",)),
    "llmgw_workers": ("gauge", "Worker processes whose counts this scrape includes", ()),
}
_HISTOGRAM_BOUNDS = {"llmgw_gateway_overhead_seconds": OVERHEAD_BUCKETS}

Collected = Iterable[tuple[str, tuple[str, ...], float]]  # (family, label values, value)


def _bounds(name: str) -> tuple[float, ...]:
    return _HISTOGRAM_BOUNDS.get(name, LATENCY_BUCKETS)


class MetricsStore:
    """One worker's counts (see the module docstring). `counters[name][labels] = value`,
    `histograms[name][labels] = [bucket counts..., +Inf count, sum]` (not cumulative)."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[tuple[str, ...], float]] = {
            n: {} for n, (kind, _, _) in FAMILIES.items() if kind == "counter"}
        self.histograms: dict[str, dict[tuple[str, ...], list[float]]] = {
            n: {} for n, (kind, _, _) in FAMILIES.items() if kind == "histogram"}
        self.collectors: dict[str, Callable[[], Collected]] = {}  # by name: a reloaded plugin replaces its own
        self.base: dict[str, Any] | None = None  # a replaced worker's last snapshot
        # The per-request counts kept in Rust (llmgw._core.Telemetry: the gateway counts there,
        # `inc`/`observe` here are the reference it is tested against); their snapshot joins ours.
        self.telemetry: Any = None

    # -- counting (the request path) ------------------------------------------------------------------
    def inc(self, name: str, labels: tuple[str, ...], value: float = 1) -> None:
        d = self.counters[name]
        d[labels] = d.get(labels, 0) + value

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        d = self.histograms[name]
        h = d.get(labels)
        bounds = _bounds(name)
        if h is None:
            h = d[labels] = [0] * (len(bounds) + 2)
        h[bisect.bisect_left(bounds, value)] += 1  # bucket i: value <= bounds[i]; the last: +Inf
        h[-1] += value

    # -- snapshots --------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything this worker counts, as plain data (JSON-able): counters, histograms, and what
        the collectors report now (gauges and counters kept elsewhere: queues, breakers, ...)."""
        counters = {n: [[list(k), v] for k, v in d.items()] for n, d in self.counters.items() if d}
        hists = {n: [[list(k), list(h)] for k, h in d.items()] for n, d in self.histograms.items() if d}
        out: dict[str, Any] = {"counters": counters, "histograms": hists, "gauges": {}}
        parts = [out]
        if self.telemetry is not None:
            parts.append(self.telemetry.snapshot())
        if self.base is not None:
            parts.append({"counters": self.base.get("counters", {}), "histograms": self.base.get("histograms", {})})
        if len(parts) > 1:
            out = merge(parts)
        for collect in list(self.collectors.values()):
            try:
                for name, labels, value in collect():
                    kind = FAMILIES[name][0]
                    bucket = out["gauges"] if kind == "gauge" else out["counters"]
                    bucket.setdefault(name, []).append([list(labels), value])
            except Exception:
                log.exception("a metrics collector failed")
        out["gauges"].setdefault("llmgw_workers", []).append([[], 1])
        return out

    def publish(self, directory: str, worker_id: int) -> None:
        """Write this worker's snapshot for the others (atomically: write, then rename)."""
        path = os.path.join(directory, f"worker-{worker_id}.json")
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(self.snapshot()))
        os.replace(tmp, path)

    def adopt(self, directory: str, worker_id: int) -> None:
        """Start from the counts of the worker this one replaces (its last published snapshot)."""
        path = os.path.join(directory, f"worker-{worker_id}.json")
        try:
            with open(path, "rb") as f:
                self.base = orjson.loads(f.read())
        except (OSError, orjson.JSONDecodeError):
            self.base = None

    def scrape(self, directory: str | None, worker_id: int) -> bytes:
        """The text exposition of every worker's counts (this one's live, the others' latest)."""
        snaps = [self.snapshot()]
        if directory:
            snaps += read_others(directory, worker_id)
        return render(merge(snaps))


def read_others(directory: str, worker_id: int) -> list[dict[str, Any]]:
    mine = f"worker-{worker_id}.json"
    out = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return out
    for name in names:
        if name == mine or not name.startswith("worker-") or not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name), "rb") as f:
                out.append(orjson.loads(f.read()))
        except (OSError, orjson.JSONDecodeError):
            continue  # being replaced right now: the next scrape has it
    return out


def merge(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum snapshots series by series."""
    out: dict[str, Any] = {"counters": {}, "histograms": {}, "gauges": {}}
    for part in ("counters", "gauges"):
        acc: dict[str, dict[tuple[str, ...], float]] = {}
        for snap in snaps:
            for name, series in snap.get(part, {}).items():
                d = acc.setdefault(name, {})
                for labels, value in series:
                    key = tuple(labels)
                    d[key] = d.get(key, 0) + value
        out[part] = {n: [[list(k), v] for k, v in d.items()] for n, d in acc.items()}
    hacc: dict[str, dict[tuple[str, ...], list[float]]] = {}
    for snap in snaps:
        for name, series in snap.get("histograms", {}).items():
            d = hacc.setdefault(name, {})
            for labels, h in series:
                key = tuple(labels)
                have = d.get(key)
                if have is None or len(have) != len(h):
                    d[key] = list(h)
                else:
                    d[key] = [a + b for a, b in zip(have, h)]
    out["histograms"] = {n: [[list(k), h] for k, h in d.items()] for n, d in hacc.items()}
    return out


def render(snap: dict[str, Any]) -> bytes:
    """Prometheus text format (0.0.4) of a merged snapshot, written by prometheus-client."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    families = []
    for name, (kind, help_, labels) in FAMILIES.items():
        if kind == "histogram":
            series = snap["histograms"].get(name)
            if not series:
                continue
            fam: Any = HistogramMetricFamily(name, help_, labels=labels)
            bounds = _bounds(name)
            for values, h in series:
                cumulative, buckets = 0.0, []
                for le, n in zip([*map(_le, bounds), "+Inf"], h[:-1]):
                    cumulative += n
                    buckets.append((le, cumulative))
                fam.add_metric(values, buckets, h[-1])
        else:
            series = snap["gauges" if kind == "gauge" else "counters"].get(name)
            if not series:
                continue
            fam = (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(name, help_, labels=labels)
            for values, v in series:
                fam.add_metric(values, v)
        families.append(fam)

    class _Families:
        def collect(self) -> Any:
            return iter(families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families())  # type: ignore[arg-type]
    return generate_latest(registry)


def _le(bound: float) -> str:
    return repr(float(bound))
