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
  a key was known (they have no ledger row). Counts, errors, tokens and cost are exact: the store
  sums them per (minute, model) (`ledger_overview`: a GROUP BY over the ts index, in the
  database), and each worker keeps those sums for the last 24 hours. Percentiles (nearest rank)
  come from a sample of rows: every k-th row, about `SAMPLE_PER_MIN` a minute of ledger time
  (all rows when there are fewer), at most `ROW_CAP` held; an overview ranks at most
  `SAMPLE_WINDOW` of them. Reads are incremental: a refresh reads only the rows after the last
  one it settled plus the last few seconds again (rows still arriving from other workers'
  queues); every `REBUILD_S` the last REBUILD_S are read again (rows that came very late are then
  counted), and after `IDLE_S` without a reader the memory is given back. `"sampled": true` when
  the percentiles come from a sample rather than every row of the window; `complete_since`: the
  oldest time from which the sample is drawn (older sampled rows dropped beyond ROW_CAP).
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

if TYPE_CHECKING:
    import numpy as np

    from llmgw.config import Config
    from llmgw.exchange import Attempt, RoutePlan
    from llmgw.services import Services

__all__ = ["IDLE_S", "LedgerTail", "OVERVIEW_STEPS", "RECENT", "REBUILD_S", "ROW_CAP", "RecentRequests",
           "SAMPLE_PER_MIN", "SAMPLE_WINDOW", "diagram_live", "request_detail", "routing_view"]

OVERVIEW_STEPS = {3600: 60, 86400: 900}  # window -> bucket width, seconds
ROW_CAP = 450_000  # sampled ledger rows a worker holds for the overview's percentiles
SAMPLE_PER_MIN = 300  # of them per minute of ledger time (every k-th row; all when there are fewer)
SAMPLE_WINDOW = 20_000  # at most this many of them per overview (every k-th of the window's)
REBUILD_S = 300.0
IDLE_S = 600.0
RECENT = 2000  # requests whose attempts and timings a worker keeps
LIVE_S = 60.0  # the diagram's rates and p50s: over the last minute
_DAY = 86400.0
_SUMS = ("requests", "errors", "tokens_in", "tokens_out", "cost_usd")
_SAMPLE = ("ts", "model", "latency_ms", "ttft_ms")
_SKIP_KINDS = ("shadow", "models")


def _num(x: float | None, digits: int = 3) -> float | None:
    return None if x is None or x != x else round(float(x), digits)


def bad_request(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, param=param, code="invalid_value")


# ------------------------------------------------------------------------------------------ overview


class LedgerTail:
    """The overview's figures of the last 24 h, kept up to date incrementally (see the module
    docstring): per (minute, model) the exact counts and sums, as the ledger store aggregates
    them, and a sample of rows for the percentiles (at most `cap`). `settle`: seconds after which
    a row is assumed to be in the ledger (the ledger's interval, twice, plus 2 s); rows newer
    than that are read again on every refresh."""

    def __init__(self, store: Any, settle: float, cap: int = ROW_CAP) -> None:
        self.store = store
        self.settle = settle
        self.cap = cap
        self.lock = asyncio.Lock()
        self.names: list[str | None] = []  # group code -> the ledger's model column
        self.codes: dict[str | None, int] = {}
        self.clear()

    def clear(self) -> None:
        """Give the memory back (no reader for IDLE_S); the next read starts afresh."""
        # Sums of rows with ts <= horizon (never read again) and of the rows after it (read again
        # on every refresh): {"minute", "model", "sums" (n x 5: _SUMS)}; samples: {_SAMPLE: column}.
        self.settled: dict[str, Any] | None = None
        self.fresh: dict[str, Any] | None = None
        self.sample: dict[str, Any] | None = None
        self.fresh_sample: dict[str, Any] | None = None
        self.horizon = 0.0
        self._sums_at = 0
        self.complete_since = math.inf  # the sample holds rows from all of the ledger after this
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

    def _ingest(self, sums: Sequence[tuple[Any, ...]], rows: Sequence[tuple[Any, ...]], cut: float) -> None:
        """A read's sums and sampled rows, split at `cut` into settled (kept) and fresh (replaced)."""
        import numpy as np

        if sums:
            cols = list(zip(*sums))
            got = {"minute": np.array(cols[0], dtype=np.int64), "model": self._code(cols[1]),
                   "sums": np.array([[float(v) for v in c] for c in cols[3:]], dtype=np.float64).T.copy()}
            new = np.array(cols[2], dtype=bool)
        else:
            got, new = _no_sums(), np.empty(0, bool)
        self.fresh = {c: v[new] for c, v in got.items()}
        settled = self.settled or _no_sums()
        got = {c: np.concatenate((settled[c], v[~new])) for c, v in got.items()}
        if len(got["minute"]) > 4 * max(self._sums_at, 1024):  # merge repeats of (minute, model)
            got = _merge(got)
            self._sums_at = len(got["minute"])
        self.settled = got
        if rows:
            cols = list(zip(*rows))
            got = {"ts": np.array(cols[0], dtype=np.float64), "model": self._code(cols[1]),
                   "latency_ms": np.array(cols[2], dtype=np.float64), "ttft_ms": np.array(cols[3], dtype=np.float64)}
        else:
            got = _no_sample()
        new = got["ts"] > cut
        self.fresh_sample = {c: v[new] for c, v in got.items()}
        sample = self.sample or _no_sample()
        self.sample = {c: np.concatenate((sample[c], v[~new])) for c, v in got.items()}

    def _forget(self, before: float) -> None:
        """Drop what is older than `before` (and sampled rows beyond the cap)."""
        import numpy as np

        assert self.settled is not None and self.sample is not None
        keep = self.settled["minute"] * 60 >= math.floor(before / 60) * 60
        if not keep.all():
            self.settled = {c: v[keep] for c, v in self.settled.items()}
        ts = self.sample["ts"]
        drop = int(np.count_nonzero(ts < before))
        drop = max(drop, len(ts) + len(self.fresh_sample["ts"]) - self.cap)  # type: ignore[index]
        if drop > 0:
            order = np.argsort(ts, kind="stable")
            keep = np.ones(len(ts), bool)
            keep[order[:drop]] = False
            self.sample = {c: v[keep] for c, v in self.sample.items()}
            if drop > int(np.count_nonzero(ts < before)) and len(self.sample["ts"]):
                self.complete_since = max(self.complete_since, float(self.sample["ts"].min()))

    async def refresh(self, now: float) -> None:
        import numpy as np

        oldest = now - _DAY - 900.0
        if self.settled is None:
            self.clear()
            since = self.complete_since = oldest
            self.built_at = now
        else:
            since = self.horizon
            if now - self.built_at >= REBUILD_S:  # read the last REBUILD_S again: rows that came late
                minute = math.floor(max(oldest, min(since, now - REBUILD_S - 60.0)) / 60)
                keep = self.settled["minute"] < minute
                self.settled = {c: v[keep] for c, v in self.settled.items()}
                assert self.sample is not None
                keep = self.sample["ts"] < minute * 60
                self.sample = {c: v[keep] for c, v in self.sample.items()}
                since = float(np.nextafter(minute * 60.0, -math.inf))
                self.built_at = now
        cut = max(now - self.settle, since)
        want = int(SAMPLE_PER_MIN * max(now - since, 60.0) / 60.0)
        sums, rows = await self.store.ledger_overview(since=since, cut=cut, step=60, skip_kinds=_SKIP_KINDS,
                                                      sample=min(want, self.cap))
        await asyncio.to_thread(self._ingest, sums, rows, cut)
        self.horizon = cut
        self._forget(oldest)
        self.refreshed_at = now

    def compute(self, window: int, now: float, groups: Sequence[str]) -> dict[str, Any]:
        """The overview of the last `window` seconds (see the module docstring): counts and sums
        from the per-minute sums, percentiles from the sampled rows of the window (at most
        SAMPLE_WINDOW of them: four sorts, whatever the number of groups)."""
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
        nk = (ng + 1) * nb
        parts = [p for p in (self.settled, self.fresh) if p is not None and len(p["minute"])]
        agg = {c: np.concatenate([p[c] for p in parts]) for c in ("minute", "model", "sums")} if parts else _no_sums()
        inside = agg["minute"] * 60 >= start  # start is a whole minute
        agg = {c: v[inside] for c, v in agg.items()}
        bucket = np.clip(agg["minute"] * 60 // step - first, 0, nb - 1)
        group = local[agg["model"]]
        key = group * nb + bucket  # (group, bucket); ng * nb + bucket for rows of no configured group

        def sums(k: np.ndarray, size: int) -> dict[str, np.ndarray]:
            return {name: np.bincount(k, weights=agg["sums"][:, j], minlength=size) for j, name in enumerate(_SUMS)}

        by_bucket, by_all, by_group = sums(key, nk), sums(bucket, nb), sums(group, ng + 1)
        n = int(by_all["requests"].sum())
        parts = [p for p in (self.sample, self.fresh_sample) if p is not None and len(p["ts"])]
        cols = {c: np.concatenate([p[c] for p in parts]) for c in _SAMPLE} if parts else _no_sample()
        inside = cols["ts"] >= start
        cols = {c: v[inside] for c, v in cols.items()}
        held = len(cols["ts"])
        if held > SAMPLE_WINDOW:  # every k-th (in the order read: spread over the window)
            cols = {c: v[::-(-held // SAMPLE_WINDOW)] for c, v in cols.items()}
        sbucket = np.clip(np.floor(cols["ts"] / step).astype(np.int64) - first, 0, nb - 1)
        sgroup = local[cols["model"]]
        skey = sgroup * nb + sbucket
        for metric, qs, names in (("latency_ms", (0.5, 0.99), ("p50_ms", "p99_ms")),
                                  ("ttft_ms", (0.5,), ("ttft_p50_ms",))):
            # Sorted per (group, bucket): the groups' buckets, and each group's rows in one slice
            # (its totals, by partition); sorted per bucket: the "*" series.
            ranked = _Ranked(skey, cols[metric], nk)
            by_bucket.update(zip(names, ranked.quantiles(qs)))
            by_group.update(zip(names, ranked.slice_quantiles(qs, nb, ng + 1)))
            by_all.update(zip(names, _Ranked(sbucket, cols[metric], nb).quantiles(qs)))
        series = {name: _buckets(by_bucket, i * nb, nb, first, step) for i, name in enumerate(groups)}
        series["*"] = _buckets(by_all, 0, nb, first, step)
        elapsed = max(now - start, 1.0)
        group_totals = {name: _totals(by_group, i, elapsed) for i, name in enumerate(groups)}
        everything = {name: np.array([v.sum()]) for name, v in by_group.items() if not name.endswith("_ms")}
        for name, v in zip(("p50_ms", "p99_ms", "ttft_p50_ms"),
                           (*_quantiles(cols["latency_ms"], (0.5, 0.99)), *_quantiles(cols["ttft_ms"], (0.5,)))):
            everything[name] = np.array([np.nan if v is None else v])
        return {"window": window, "step": step, "now": round(now, 3), "from": start, "groups": list(groups),
                "series": series, "totals": _totals(everything, 0, elapsed), "group_totals": group_totals,
                "sampled": held < n, "complete_since": None if math.isinf(self.complete_since) else
                round(self.complete_since, 3), "rows": n}


def _no_sums() -> dict[str, Any]:
    import numpy as np

    return {"minute": np.empty(0, np.int64), "model": np.empty(0, np.int64), "sums": np.empty((0, len(_SUMS)))}


def _no_sample() -> dict[str, Any]:
    import numpy as np

    return {c: np.empty(0, np.int64 if c == "model" else np.float64) for c in _SAMPLE}


def _merge(agg: dict[str, Any]) -> dict[str, Any]:
    """One entry per (minute, model)."""
    import numpy as np

    key = agg["minute"] * (1 << 20) + agg["model"]
    uniq, inverse = np.unique(key, return_inverse=True)
    merged = np.zeros((len(uniq), len(_SUMS)))
    np.add.at(merged, inverse, agg["sums"])
    return {"minute": uniq >> 20, "model": uniq & ((1 << 20) - 1), "sums": merged}


class _Ranked:
    """`values` (NaNs left out) sorted within each key in [0, nk): one sort of key * span +
    value (exact to ~1e-7 of a millisecond: the sum stays far below 2^53), not a lexsort: 8 ms
    against 32 ms for 200,000 rows."""

    def __init__(self, key: np.ndarray, values: np.ndarray, nk: int) -> None:
        import numpy as np

        nan = np.isnan(values)
        if nan.any():
            key, values = key[~nan], values[~nan]
        self.counts = counts = np.bincount(key, minlength=nk)
        self.starts = np.cumsum(counts) - counts
        if not len(values):
            self.values = values
            return
        low = float(values.min())
        span = float(values.max()) - low + 1.0
        ranked = np.sort(key * span + (values - low))
        self.values = ranked - np.repeat(np.arange(nk) * span - low, counts)

    def quantiles(self, qs: Sequence[float]) -> list[np.ndarray]:
        """Per key, the nearest-rank quantiles `qs` (NaN for a key without values)."""
        import numpy as np

        counts, values = self.counts, self.values
        if not len(values):
            return [np.full(len(counts), np.nan) for _ in qs]
        out = []
        for q in qs:
            at = np.minimum(self.starts + np.maximum(np.ceil(q * counts).astype(np.int64) - 1, 0), len(values) - 1)
            out.append(np.where(counts > 0, values[at], np.nan))
        return out

    def slice_quantiles(self, qs: Sequence[float], width: int, n: int) -> list[np.ndarray]:
        """The quantiles of each run of `width` consecutive keys (n runs): a group's buckets."""
        import numpy as np

        out = np.full((len(qs), n), np.nan)
        for i in range(n):
            lo = int(self.starts[i * width])
            hi = lo + int(self.counts[i * width:(i + 1) * width].sum())
            for j, v in enumerate(_quantiles(self.values[lo:hi], qs)):
                out[j, i] = np.nan if v is None else v
        return list(out)


def _quantiles(values: np.ndarray, qs: Sequence[float]) -> list[float | None]:
    import numpy as np

    v = values[~np.isnan(values)]
    if not len(v):
        return [None for _ in qs]
    ks = [max(math.ceil(q * len(v)) - 1, 0) for q in qs]
    part = np.partition(v, sorted(set(ks)))
    return [float(part[k]) for k in ks]


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
