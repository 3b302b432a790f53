"""The dashboard's admin API: what the browser UI reads, behind the master key like every /admin route.

    GET /admin/overview?window=3600|86400      traffic of the last hour (60 s buckets) or day (900 s):
                                               requests, errors, p50/p99 latency, p50 time to first
                                               token, tokens, cost; per model group and in total
    GET /admin/routing                         each model group's strategy, fallbacks and deployments,
                                               with this worker's live state of each deployment
    GET /admin/diagram?format=json|svg|mermaid the serving config's architecture, with live figures
    GET /admin/requests/{request_id}           the request's ledger row; its attempts and timings
                                               while this worker still holds them

What each answer covers:

- overview: the ledger, so every worker and replica, each row once it is written (the ledger's
  batch interval). Model listings and shadow copies are left out; so are requests refused before
  a key was known (they have no ledger row). It reads no ledger rows: the ledger store keeps the
  `overview_buckets` table per (minute, model), written with the rows it sums (governance/stores.py),
  and the overview merges those rows (at most 60, or 1,440 for the day, a model). Counts, errors,
  tokens and cost are exact. Percentiles (nearest rank) come from the merged latency histograms:
  the bin's geometric midpoint, clamped to the least and greatest latency of the bucket, so within
  one bin (~±10%) of the exact value. Reads are incremental: each worker keeps the minutes that are
  complete (older than the ledger's interval, twice, plus 2 s) for the last 24 hours and reads the
  rest again on each refresh; every `REBUILD_S` the last REBUILD_S are read again (rows that came
  very late are then counted), and after `IDLE_S` without a reader the memory is given back.
  `"sampled"` is always false and `complete_since` null (kept in the answer for the UI).
  Requests written before the table existed (a ledger from an older version) are not in it.
- routing, diagram, request attempts: this worker's memory (in flight, latency averages and
  breakers from the router's deployment states; rates and p50s over the last minute from the
  ring of recent requests). With `--workers N` each answer is one worker's view; `"worker"`
  says which.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from llmgw.config.models import TRIGGERS
from llmgw.errors import GatewayError
from llmgw.governance.stores import HIST_BINS, HIST_LO_MS, HIST_RATIO

if TYPE_CHECKING:
    import numpy as np

    from llmgw.config import Config
    from llmgw.exchange import Attempt, RoutePlan
    from llmgw.services import Services

__all__ = ["IDLE_S", "LedgerTail", "OVERVIEW_STEPS", "RECENT", "REBUILD_S", "RecentRequests", "diagram_live",
           "hist_quantiles", "request_detail", "routing_view"]

OVERVIEW_STEPS = {3600: 60, 86400: 900}  # window -> bucket width, seconds
REBUILD_S = 300.0
IDLE_S = 600.0
RECENT = 2000  # requests whose attempts and timings a worker keeps
LIVE_S = 60.0  # the diagram's rates and p50s: over the last minute
_DAY = 86400.0
_SUMS = ("requests", "errors", "tokens_in", "tokens_out", "cost_usd")
_PARTS = ("minute", "model", "sums", "lo", "hi", "lat", "ttft")  # LedgerTail's columns


def _num(x: float | None, digits: int = 3) -> float | None:
    return None if x is None or x != x else round(float(x), digits)


def bad_request(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, param=param, code="invalid_value")


# ------------------------------------------------------------------------------------------ overview


class LedgerTail:
    """The overview's figures of the last 24 h, kept up to date incrementally (see the module
    docstring): the store's overview_buckets rows, per (minute, model). `settle`: seconds after
    which a row is assumed to be in the ledger (the ledger's interval, twice, plus 2 s); minutes
    not complete by then are read again on every refresh."""

    def __init__(self, store: Any, settle: float) -> None:
        self.store = store
        self.settle = settle
        self.lock = asyncio.Lock()
        self.names: list[str | None] = []  # model code -> the ledger's model column
        self.codes: dict[str | None, int] = {}
        self.clear()

    def clear(self) -> None:
        """Give the memory back (no reader for IDLE_S); the next read starts afresh."""
        # Minutes before `horizon` (complete: never read again) and from it on (read again on every
        # refresh): {_PARTS: column}; sums n x 5 (_SUMS), lat/ttft n x HIST_BINS.
        self.settled: dict[str, Any] | None = None
        self.fresh: dict[str, Any] | None = None
        self.horizon = 0  # a minute
        self.built_at = -math.inf
        self.refreshed_at = -math.inf
        self.used_at = time.monotonic()
        self.results: dict[int, tuple[float, dict[str, Any]]] = {}
        self.names.clear()
        self.codes.clear()

    def _code(self, models: Iterable[str | None]) -> Any:
        import numpy as np

        codes, names = self.codes, self.names
        out = []
        for m in models:
            code = codes.get(m)
            if code is None:
                code = codes[m] = len(names)
                names.append(m)
            out.append(code)
        return np.array(out, dtype=np.int64)

    def _columns(self, rows: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
        import numpy as np

        if not rows:
            return _no_rows()
        cols = list(zip(*rows))

        def bound(values: Iterable[float | None], missing: float) -> Any:
            return np.array([missing if v is None else float(v) for v in values], dtype=np.float64)

        def hists(blobs: Sequence[bytes]) -> Any:
            return np.frombuffer(b"".join(blobs), dtype=np.int32).reshape(len(blobs), HIST_BINS)

        return {"minute": np.array(cols[0], dtype=np.int64), "model": self._code(cols[1]),
                "sums": np.array([[float(v) for v in c] for c in cols[2:7]], dtype=np.float64).T.copy(),
                "lo": bound(cols[7], math.inf), "hi": bound(cols[8], -math.inf),
                "lat": hists(cols[9]), "ttft": hists(cols[10])}

    async def refresh(self, now: float) -> None:
        import numpy as np

        oldest = math.floor((now - _DAY - 900.0) / 60)
        cut = math.floor((now - self.settle) / 60)  # minutes before this one are complete
        if self.settled is None:
            self.clear()
            since = oldest
            self.built_at = now
        else:
            since = self.horizon
            if now - self.built_at >= REBUILD_S:  # read the last REBUILD_S again: rows that came late
                since = max(oldest, min(since, math.floor((now - REBUILD_S) / 60) - 1))
                self.built_at = now
        rows = await self.store.read_overview(since)
        got = self._columns(rows)
        new = got["minute"] >= cut
        self.fresh = {c: v[new] for c, v in got.items()}
        settled = self.settled or _no_rows()
        keep = (settled["minute"] >= oldest) & (settled["minute"] < since)
        self.settled = {c: np.concatenate((settled[c][keep], v[~new])) for c, v in got.items()}
        self.horizon = max(cut, since)
        self.refreshed_at = now

    def compute(self, window: int, now: float, groups: Sequence[str]) -> dict[str, Any]:
        """The overview of the last `window` seconds (see the module docstring): counts and sums
        exact, percentiles from the merged histograms (within one bin, ~±10%, of the exact nearest
        rank; clamped to the least and greatest latency seen)."""
        import numpy as np

        step = OVERVIEW_STEPS[window]
        nb = window // step
        first = int(now // step) - nb + 1
        start = first * step
        ng = len(groups)
        # The ledger's model column -> the index of its configured group (ng: none, "*" only).
        local = np.full(len(self.names) + 1, ng, dtype=np.int64)
        for i, name in enumerate(groups):
            code = self.codes.get(name)
            if code is not None:
                local[code] = i
        parts = []
        for p in (self.settled, self.fresh):
            if p is not None and len(p["minute"]):
                inside = p["minute"] * 60 >= start  # start is a whole minute
                parts.append({c: v[inside] for c, v in p.items()} if not inside.all() else p)
        agg = {c: np.concatenate([p[c] for p in parts]) for c in _PARTS} if parts else _no_rows()
        bucket = np.clip(agg["minute"] * 60 // step - first, 0, nb - 1)
        key = local[agg["model"]] * nb + bucket  # (group, bucket); ng * nb + bucket for no configured group
        nk = (ng + 1) * nb
        # Per (group, bucket), then "*" per bucket (the sum over groups), per group, in total.
        per_key: dict[str, Any] = {name: np.bincount(key, weights=agg["sums"][:, j], minlength=nk)
                                   for j, name in enumerate(_SUMS)}
        lo, hi = np.full(nk, math.inf), np.full(nk, -math.inf)
        np.minimum.at(lo, key, agg["lo"])
        np.maximum.at(hi, key, agg["hi"])
        hist = {}
        cells = (key[:, None] * HIST_BINS + np.arange(HIST_BINS)).ravel()  # (key, bin): one bincount, not add.at
        for metric in ("lat", "ttft"):
            h = np.bincount(cells, weights=agg[metric].ravel(), minlength=nk * HIST_BINS)
            hist[metric] = h.reshape(ng + 1, nb, HIST_BINS)
        lo3, hi3 = lo.reshape(ng + 1, nb), hi.reshape(ng + 1, nb)
        views = {  # figures per entry: (sums, lat hists, ttft hists, least, greatest latency)
            "bucket": (per_key, hist["lat"].reshape(nk, -1), hist["ttft"].reshape(nk, -1), lo, hi),
            "all": ({k: v.reshape(ng + 1, nb).sum(0) for k, v in per_key.items()}, hist["lat"].sum(0),
                    hist["ttft"].sum(0), lo3.min(0), hi3.max(0)),
            "group": ({k: v.reshape(ng + 1, nb).sum(1) for k, v in per_key.items()}, hist["lat"].sum(1),
                      hist["ttft"].sum(1), lo3.min(1), hi3.max(1)),
            "total": ({k: np.array([v.sum()]) for k, v in per_key.items()}, hist["lat"].sum((0, 1))[None],
                      hist["ttft"].sum((0, 1))[None], np.array([lo.min(initial=math.inf)]),
                      np.array([hi.max(initial=-math.inf)])),
        }
        figures = {}
        for view, (sums, lat, ttft, least, greatest) in views.items():
            p50, p99 = hist_quantiles(lat, (0.5, 0.99), least, greatest)
            (ttft50,) = hist_quantiles(ttft, (0.5,))
            figures[view] = {**sums, "p50_ms": p50, "p99_ms": p99, "ttft_p50_ms": ttft50}
        series = {name: _buckets(figures["bucket"], i * nb, nb, first, step) for i, name in enumerate(groups)}
        series["*"] = _buckets(figures["all"], 0, nb, first, step)
        elapsed = max(now - start, 1.0)
        group_totals = {name: _totals(figures["group"], i, elapsed) for i, name in enumerate(groups)}
        n = int(figures["total"]["requests"][0])
        return {"window": window, "step": step, "now": round(now, 3), "from": start, "groups": list(groups),
                "series": series, "totals": _totals(figures["total"], 0, elapsed), "group_totals": group_totals,
                "sampled": False, "complete_since": None, "rows": n}


def _no_rows() -> dict[str, Any]:
    import numpy as np

    return {"minute": np.empty(0, np.int64), "model": np.empty(0, np.int64), "sums": np.empty((0, len(_SUMS))),
            "lo": np.empty(0), "hi": np.empty(0), "lat": np.empty((0, HIST_BINS), np.int32),
            "ttft": np.empty((0, HIST_BINS), np.int32)}


def hist_quantiles(hist: np.ndarray, qs: Sequence[float], least: np.ndarray | None = None,
                   greatest: np.ndarray | None = None) -> list[np.ndarray]:
    """Per row of `hist` (m x HIST_BINS counts), the nearest-rank quantiles `qs`: the geometric
    midpoint of the bin holding the value of that rank, so within one bin (~±10%) of the exact
    figure; clamped to [least, greatest] when given. NaN for a row without counts."""
    import numpy as np

    counts = hist.sum(1)
    cum = np.cumsum(hist, axis=1)
    out = []
    for q in qs:
        rank = np.maximum(np.ceil(q * counts), 1)
        at = np.minimum((cum < rank[:, None]).sum(1), HIST_BINS - 1)
        v = HIST_LO_MS * HIST_RATIO ** (at + 0.5)
        if least is not None and greatest is not None:
            v = np.minimum(np.maximum(v, least), greatest)
        out.append(np.where(counts > 0, v, np.nan))
    return out


def _buckets(figures: dict[str, np.ndarray], at: int, nb: int, first: int, step: int) -> list[dict[str, Any]]:
    f = {name: v[at:at + nb].tolist() for name, v in figures.items()}
    return [{"t": (first + i) * step, "requests": int(f["requests"][i]), "errors": int(f["errors"][i]),
             "p50_ms": _num(f["p50_ms"][i]), "p99_ms": _num(f["p99_ms"][i]), "ttft_p50_ms": _num(f["ttft_p50_ms"][i]),
             "tokens_in": int(f["tokens_in"][i]), "tokens_out": int(f["tokens_out"][i]),
             "cost_usd": round(f["cost_usd"][i], 8)} for i in range(nb)]


def _totals(figures: dict[str, np.ndarray], at: int, elapsed: float) -> dict[str, Any]:
    f = {name: v[at].item() for name, v in figures.items()}
    n, errors = int(f["requests"]), int(f["errors"])
    return {"requests": n, "rps": round(n / elapsed, 6), "errors": errors,
            "error_rate": round(errors / n, 4) if n else 0.0, "p50_ms": _num(f["p50_ms"]),
            "p99_ms": _num(f["p99_ms"]), "ttft_p50_ms": _num(f["ttft_p50_ms"]), "tokens_in": int(f["tokens_in"]),
            "tokens_out": int(f["tokens_out"]), "cost_usd": round(f["cost_usd"], 8)}


# ------------------------------------------------------------------------------ recent requests (ring)

# One entry per finished chat or embeddings request (Dashboard.on_finish):
# (request_id, started, ended, first_byte_at, upstream_s, client_s, status, plan, attempts, model, error);
# client_s: time blocked on a slow client (the overhead is what is left of the duration after it
# and the upstreams' time).
_ID, _STARTED, _ENDED, _FIRST, _UPSTREAM, _CLIENT, _STATUS, _PLAN, _ATTEMPTS, _MODEL, _ERROR = range(11)


class RecentRequests:
    """The last `size` requests this worker finished, as the tuples on_finish appended (the
    attempts list and the plan by reference: nothing is copied or formatted on the request path)."""

    def __init__(self, size: int = RECENT) -> None:
        self.ring: deque[tuple[Any, ...]] = deque(maxlen=size)

    def find(self, request_id: str) -> tuple[Any, ...] | None:
        for entry in reversed(self.ring):
            if entry[_ID] == request_id:
                return entry
        return None

    def since(self, t: float) -> list[tuple[Any, ...]]:
        """Entries that ended after perf-counter time `t`, oldest first."""
        out = []
        for entry in reversed(self.ring):
            if entry[_ENDED] < t:
                break
            out.append(entry)
        out.reverse()
        return out


def _via(plan: RoutePlan | None, a: Attempt) -> bool:
    """Whether `a` went to a deployment the plan reaches only as a fallback."""
    if plan is None or not plan.fallbacks:
        return False
    return any(s.deployment == a.deployment for s in plan.fallbacks) and \
        not any(s.deployment == a.deployment for s in plan.primaries)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def attempt_rows(entry: tuple[Any, ...]) -> list[dict[str, Any]]:
    started, plan = entry[_STARTED], entry[_PLAN]
    out = []
    for a in entry[_ATTEMPTS]:
        err = a.error
        out.append({"deployment": a.deployment or None, "upstream": a.target, "model": a.model, "status": a.status,
                    "error": err.code if err is not None else None, "error_class": a.error_class,
                    "start_ms": _ms(a.started - started), "duration_ms": _ms(a.total_s), "ttfb_ms": _ms(a.ttfb_s),
                    "retry": a.retry, "hedge": a.hedge, "fallback": _via(plan, a), "cancelled": a.cancelled})
    return out


def _served(entry: tuple[Any, ...]) -> Attempt | None:
    for a in reversed(entry[_ATTEMPTS]):
        if a.error is None and not a.cancelled and a.status is not None and a.status < 300:
            return a  # type: ignore[no-any-return]
    return None


async def request_detail(store: Any, recent: RecentRequests, services: Services, request_id: str,
                         since: float | None) -> dict[str, Any]:
    """The ledger row and, from this worker's ring, the attempts and timings (404 if neither)."""
    from llmgw.governance.stores import LEDGER_COLUMNS

    entry = recent.find(request_id)
    wall_now, perf_now = time.time(), time.perf_counter()
    if since is None:  # the ring says when it ended; else look through the last day
        since = wall_now - (perf_now - entry[_ENDED]) - 120.0 if entry is not None else wall_now - _DAY
    rows = await store.ledger_rows(LEDGER_COLUMNS, since=since, request_id=request_id, limit=1)
    if not rows and entry is None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(since))
        raise GatewayError(404, f"No request {request_id!r}: not in the ledger since {when} UTC (pass ?since=<ISO "
                           f"date or Unix s> to look further back), and not among the last {recent.ring.maxlen} "
                           f"requests this worker (worker {services.worker_id}) served.",
                           code="not_found", param="request_id")
    out: dict[str, Any] = {"object": "request", "request_id": request_id, "worker": services.worker_id,
                           "ledger": dict(zip(LEDGER_COLUMNS, rows[0])) if rows else None,
                           "in_memory": entry is not None, "attempts": None, "timings": None}
    if entry is not None:
        started = entry[_STARTED]
        first, plan, err = entry[_FIRST], entry[_PLAN], entry[_ERROR]
        served = _served(entry)
        out.update(
            started_at=round(wall_now - (perf_now - started), 6), model=entry[_MODEL],
            group=plan.group if plan is not None else None, status=entry[_STATUS],
            error=err.code if err is not None else None,
            deployment=served.deployment if served is not None else None,
            route_reason=plan.reason if plan is not None and plan.reason else None,
            attempts=attempt_rows(entry),
            timings={"duration_ms": _ms(entry[_ENDED] - started),
                     "ttft_ms": _ms(first - started) if first is not None else None,
                     "upstream_ms": _ms(entry[_UPSTREAM]), "client_ms": _ms(entry[_CLIENT]),
                     "overhead_ms": _ms(max(entry[_ENDED] - started - entry[_UPSTREAM] - entry[_CLIENT], 0.0))})
    return out


# ------------------------------------------------------------------------------------------- routing


def _states_by_deployment(services: Services) -> dict[Any, Any]:
    states = services.peek("routing.states")
    return {s.deployment: s for s in states.all()} if states is not None else {}


def breaker_state(state: Any, now: float) -> str:
    b = state.breaker if state is not None else None
    if b is None:
        return "none"
    if b.state == "open" and now - b.opened_at >= b.policy.cooldown:
        return "half_open"  # the next request is the probe
    return str(b.state)


def routing_view(services: Services) -> dict[str, Any]:
    """The serving config's model groups, with each deployment's live state in this worker."""
    config = services.config
    by_dep = _states_by_deployment(services)
    now = services.clock.now()
    groups = []
    for g in config.models.values():
        deps = []
        for d in g.deployments:
            st = by_dep.get(d)
            ok, failed = (st.successes, st.failures) if st is not None else (0, 0)
            up = config.upstreams.get(d.upstream)
            b = st.breaker if st is not None else None
            deps.append({
                "name": d.name, "upstream": d.upstream, "provider": up.provider if up is not None else None,
                "model": d.model, "weight": d.weight, "rpm": d.rpm, "tpm": d.tpm, "tags": list(d.tags),
                "in_flight": st.inflight if st is not None else 0,
                "latency_ms": _ms(st.latency) if st is not None else None,
                "ttft_ms": _ms(st.ttft) if st is not None else None,
                "requests": ok + failed, "failures": failed,
                "error_rate": round(failed / (ok + failed), 4) if ok + failed else None,
                "breaker": breaker_state(st, now),
                "breaker_reason": b.reason if b is not None and b.state != "closed" else None,
            })
        groups.append({
            "name": g.name, "strategy": g.strategy,
            "fallbacks": [{"to": f.to, "on": [t for t in TRIGGERS if t in f.on]} for f in g.fallbacks],
            "retries": g.retries.attempts, "timeout": g.timeout, "hedge_after": g.hedge.after if g.hedge else None,
            "breaker": asdict(g.breaker) if g.breaker is not None else None,
            "deployments": deps,
        })
    return {"object": "routing", "worker": services.worker_id, "workers": services.workers, "groups": groups}


# ------------------------------------------------------------------------------------------- diagram


def _rate_line(entries: Iterable[float], span: float) -> list[str]:
    """"r req/s" and "p50 x ms" of the durations (s) seen over `span` seconds."""
    durations = sorted(entries)
    if not durations:
        return []
    p50 = durations[max(math.ceil(0.5 * len(durations)) - 1, 0)]
    return [f"{len(durations) / span:.2f} req/s", f"p50 {p50 * 1000:.0f} ms"]


# Which node a background queue belongs to (others are not drawn).
_QUEUE_NODES = {"ledger": "stage:governance", "audit": "stage:governance", "governance.counters": "stage:governance",
                "access_log": "exporter:access_log", "traces": "exporter:otlp", "langfuse": "exporter:langfuse"}


def diagram_live(services: Services, recent: RecentRequests) -> dict[str, list[str]]:
    """Live lines per node id, from this worker: request rates and p50s over the last minute (the
    ring of recent requests), in flight and breakers (the deployment states), the cache's hit
    rate and entries, background queue depths."""
    config = services.config
    now = time.perf_counter()
    entries = recent.since(now - LIVE_S)
    span = LIVE_S
    if entries and len(recent.ring) == recent.ring.maxlen and entries[0] is recent.ring[0]:
        span = max(now - entries[0][_ENDED], 1.0)  # the ring holds less than a minute: rate over what it holds
    live: dict[str, list[str]] = {}
    per_group: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    per_dep: dict[str, list[float]] = {}
    everything = []
    for e in entries:
        took = e[_ENDED] - e[_STARTED]
        everything.append(took)
        plan = e[_PLAN]
        if plan is not None:
            per_group.setdefault(plan.group, []).append(took)
            if e[_STATUS] >= 400:
                errors[plan.group] = errors.get(plan.group, 0) + 1
        for a in e[_ATTEMPTS]:
            if a.deployment and a.total_s is not None and not a.cancelled:
                per_dep.setdefault(a.deployment, []).append(a.total_s)
    router = _rate_line(everything, span)
    stats = services.stats()
    working = ((stats.get("server") or {}).get("working") or 1) - 1  # not this request
    if working > 0:
        router.append(f"{working} in flight")
    if router:
        live["router"] = router
    for name in config.models:
        lines = _rate_line(per_group.get(name, ()), span)
        if errors.get(name):
            lines.append(f"{errors[name] / len(per_group[name]):.0%} errors")
        if lines:
            live[f"group:{name}"] = lines
    by_dep = _states_by_deployment(services)
    clock_now = services.clock.now()
    upstream_inflight: dict[str, int] = {}
    for g in config.models.values():
        for d in g.deployments:
            lines = _rate_line(per_dep.get(d.name, ()), span)
            st = by_dep.get(d)
            if st is not None:
                if st.inflight:
                    lines.append(f"{st.inflight} in flight")
                    upstream_inflight[d.upstream] = upstream_inflight.get(d.upstream, 0) + st.inflight
                state = breaker_state(st, clock_now)
                if state not in ("none", "closed"):
                    lines.append(f"breaker {state.replace('_', '-')}")
            if lines:
                live[f"deployment:{d.name}"] = lines
    for name, n in upstream_inflight.items():
        live[f"upstream:{name}"] = [f"{n} in flight"]
    cache = stats.get("cache")
    if cache:
        hits = int(cache.get("hit", 0) + cache.get("semantic-hit", 0))
        lookups = hits + int(cache.get("miss", 0))
        if lookups:
            live["stage:cache"] = [f"hit rate {hits / lookups:.0%} ({hits}/{lookups})"]
        live["store:cache"] = [f"{cache.get('entries', 0)} entries"]
    for q in services.queues():
        node = _QUEUE_NODES.get(q.name)
        if node is not None:
            dropped = f", {q.dropped} dropped" if q.dropped else ""
            live.setdefault(node, []).append(f"queue {q.name}: {q.depth}{dropped}")
    return live


def diagram_json(config: Config, live: dict[str, list[str]]) -> dict[str, Any]:
    from llmgw.diagram import SECTIONS, diagram_model

    d = diagram_model(config, live)
    return {"object": "diagram", "title": d.title,
            "nodes": [{"id": n.id, "kind": n.kind, "label": n.label, "detail": list(n.detail), "live": list(n.live)}
                      for n in d.nodes],
            "edges": [{"source": e.source, "target": e.target, "label": e.label, "style": e.style} for e in d.edges],
            "columns": [{"section": c.section, "title": SECTIONS[c.section], "nodes": list(c.nodes),
                         "side": list(c.side)} for c in d.columns]}
