"""The governance plugin: virtual keys, rate limits, budgets, costs and the ledger.

Loaded by the gateway when the config has a `governance:` section (it then also takes over the
`auth.keys` of the config, as keys without limits). On the plugin API like any other:

- `on_headers`: the key (cached per Authorization header and checked against the key table's
  generation on every request, so a revocation is seen by the next request on every worker and
  replica); the caller's user and team; the soft-budget signal for routing (`ctx.budget_exhausted`).
- `pre_request`: RPM/TPM of the key, user, team and model group in one call to the counters
  (TPM admits on an estimate: the prompt counted in Rust plus `max_tokens`, or
  `default_max_tokens`); then an atomic reservation of the request's worst-case cost on each
  budget (prompt x input price + max output x output price, at the priciest deployment of the
  plan). Refusals are 429 `rate_limit_exceeded` (with Retry-After) or `budget_exceeded` (naming
  the budget and when it resets), each written to the audit log.
- `post_response`: `x-llmgw-cost` on a non-streamed answer (USD, or `unpriced`).
- `on_finish`: the reservation settles to the real cost (usage the upstream reported, or the
  estimate of a cut stream; released when nothing was produced); the TPM estimate is corrected to
  the real token count; one ledger row goes to a background queue written in batches.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson

from llmgw.clock import Clock
from llmgw.errors import GatewayError
from llmgw.exchange import ChatResponse
from llmgw.governance.counters import CounterFailure, LocalCounters, RedisCounters
from llmgw.governance.keys import KeyRecord, digest
from llmgw.governance.periods import period_end, period_id, period_start
from llmgw.governance.pricing import PriceBook
from llmgw.governance.stores import open_store
from llmgw.plugins.api import Plugin
from llmgw.plugins.auth import presented_key
from llmgw.tokens import count_chat_tokens, count_tokens

if TYPE_CHECKING:
    from llmgw.config import Config, Limits, Price
    from llmgw.exchange import ChatRequest, Outcome, RequestContext
    from llmgw.services import Services

__all__ = ["Governance"]

log = logging.getLogger("llmgw")

_MICRO = 1_000_000  # micro-dollars per dollar: counters and reservations are integers


def _max_output(body: dict[str, Any], default: int) -> int:
    """The output tokens a chat request may produce: its max_completion_tokens/max_tokens, or
    `default` when it names none (or a value that is not a count; the upstream will refuse it)."""
    for name in ("max_completion_tokens", "max_tokens"):
        v = body.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return default


class _Periods:
    """Budget period ids, recomputed only when a period may have changed (a datetime conversion
    per request and budget would cost more than the rest of the budget check)."""

    def __init__(self, tz: str) -> None:
        self.tz = tz
        self._cache: dict[str, tuple[str, float, float]] = {}  # period -> (id, start ts, end ts)

    def current(self, period: str, now: float) -> tuple[str, float, float]:
        hit = self._cache.get(period)
        if hit is not None and now < hit[2] and now >= hit[1]:
            return hit
        end = period_end(period, now, self.tz)
        entry = (period_id(period, now, self.tz), period_start(period, now, self.tz).timestamp(),
                 end.timestamp() if end is not None else math.inf)
        self._cache[period] = entry
        return entry


class Governance(Plugin):
    name = "governance"
    kinds = frozenset({"chat", "embeddings", "models"})
    read_only = True

    def __init__(self, config: Config, **options: Any) -> None:
        super().__init__(**options)
        assert config.governance is not None
        self.config = config
        self.gov = config.governance
        self.prices = PriceBook(config)
        self.periods = _Periods(self.gov.timezone)
        self.static: dict[bytes, KeyRecord] = {}
        for k in config.auth_keys:  # keys from the config file: no limits, never revoked here
            self.static[digest(k.key)] = KeyRecord(f"config:{k.name}", k.name, digest(k.key), k.key[-4:],
                                                   models=list(k.models) if k.models is not None else None)
        self.store: Any = None
        self.counters: Any = None
        self.queue: Any = None
        self.audit_queue: Any = None
        self.services: Services | None = None
        self.clock: Clock = Clock()
        self._cache: dict[str, tuple[KeyRecord, int]] = {}
        self._seeded: set[str] = set()
        self.stats_counts: Counter[str] = Counter()
        self._logged: dict[str, float] = {}

    def same_config(self, config: Config) -> bool:
        return (config.governance == self.gov and config.auth_keys == self.config.auth_keys
                and config.models == self.config.models)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def startup(self, services: Services) -> None:
        from llmgw.governance.admin import register_admin_routes

        self.services = services
        self.clock = services.clock
        gov = self.gov
        self.store = open_store(gov.store, gov.sqlite_path, gov.postgres_dsn)
        await self.store.open()
        # The counters outlive this instance: a reload that changes a limit keeps every bucket.
        if gov.counters == "redis":
            self.counters = services.keep(f"governance.counters:{gov.redis_url}", lambda: RedisCounters(gov.redis_url))
        else:
            fake = type(services.clock) is not Clock  # a test's clock drives the buckets too
            self.counters = services.keep("governance.counters:local",
                                          lambda: LocalCounters(now=services.clock.now if fake else None))
        self.queue = services.queue("ledger", self._write_ledger, max_items=gov.ledger.max_queue,
                                    batch=gov.ledger.batch, interval=gov.ledger.interval)
        self.audit_queue = services.queue("audit", self.store.audit_many, max_items=gov.ledger.max_queue,
                                          batch=gov.ledger.batch, interval=gov.ledger.interval)
        register_admin_routes(self, services)
        services.add_stats("governance", self.stats)

    async def shutdown(self) -> None:
        for q in (self.queue, self.audit_queue):
            if q is not None:
                await q.drain()  # the last rows go out before the store closes
        if self.store is not None:
            await self.store.close()

    async def _write_ledger(self, rows: list[tuple[Any, ...]]) -> None:
        await self.store.write_ledger(rows)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.stats_counts)
        if self.queue is not None:
            out["ledger_queue"] = self.queue.stats()
        return out

    def _note(self, what: str, message: str, *args: Any) -> None:
        self.stats_counts[what] += 1
        now = time.monotonic()
        if now - self._logged.get(what, 0.0) >= 60.0:
            self._logged[what] = now
            log.warning(message, *args)

    # -- keys -----------------------------------------------------------------------------------------
    async def _counters(self, op: str, *args: Any) -> Any:
        """Call the counters; if Redis is down, fail closed (503) or open (None), as configured."""
        try:
            return await getattr(self.counters, op)(*args)
        except CounterFailure as exc:
            if self.gov.on_counter_failure == "open":
                self._note("counters_failed_open", "governance counters unavailable, admitting (fail open): %s", exc)
                return None
            self._note("counters_failed_closed", "governance counters unavailable, refusing (fail closed): %s", exc)
            raise GatewayError(503, "Rate limits and budgets cannot be checked right now; retry shortly.",
                               type="server_error", code="limits_unavailable", headers=[("retry-after", "1")]) from None

    async def key_for(self, headers: dict[str, str]) -> KeyRecord:
        sent = headers.get("authorization") or headers.get("x-api-key") or ""
        generation = await self._counters("generation") or 0
        cached = self._cache.get(sent)
        if cached is not None and cached[1] == generation:
            return cached[0]
        presented = presented_key(headers)
        if presented is None:
            raise GatewayError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                               code="missing_api_key")
        h = digest(presented)
        rec = self.static.get(h) or await self.store.key_by_hash(h)
        if rec is None:
            self.stats_counts["invalid_key"] += 1
            raise GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[sent] = (rec, generation)
        return rec

    async def on_headers(self, ctx: RequestContext, headers: dict[str, str]) -> None:
        rec = await self.key_for(headers)
        now = self.clock.wall()
        if not rec.active(now):
            what = "revoked" if rec.revoked_at is not None else "expired"
            raise GatewayError(401, f"This API key was {what}.", code="invalid_api_key")
        ctx.key_id, ctx.key_name, ctx.user, ctx.team = rec.id, rec.name, rec.user, rec.team
        ctx.allowed_models = frozenset(rec.models) if rec.models is not None else None
        ctx.metadata["gov.key"] = rec
        budgets = self._budgets(ctx, rec, now)
        if budgets:
            ctx.metadata["gov.budgets"] = budgets
            for bkey, limit, _, _, _ in budgets:
                await self._seed(bkey, now)
                state = await self._counters("budget", bkey)
                if state is not None and state[0] >= self.gov.soft_limit * limit:
                    ctx.budget_exhausted = True
                    self._note(f"soft:{bkey}", "budget %s is past its soft limit (%.0f%%)", bkey,
                               100 * self.gov.soft_limit)

    def _budgets(self, ctx: RequestContext, rec: KeyRecord, now: float) -> list[tuple[str, int, str, str, float]]:
        """(counter key, limit in micro-dollars, what it is, period, reset time) per budget."""
        out = []
        scopes: list[tuple[str, str | None, float | None, str]] = [("key", rec.id, rec.budget_usd, rec.budget_period)]
        for scope, name, table in (("user", ctx.user, self.gov.users), ("team", ctx.team, self.gov.teams)):
            lim = table.get(name) if name else None
            if lim is not None and lim.budget is not None:
                scopes.append((scope, name, lim.budget.usd, lim.budget.period))
        for scope, name, usd, period in scopes:
            if name is None or usd is None:
                continue
            pid, _, end = self.periods.current(period, now)
            out.append((f"budget:{scope}:{name}:{pid}", int(usd * _MICRO), f"{scope} {name!r} {period} budget",
                        period, end))
        return out

    async def _seed(self, bkey: str, now: float) -> None:
        """A budget counter starts from what the ledger says was spent this period."""
        if bkey in self._seeded:
            return
        self._seeded.add(bkey)
        _, scope, name, pid = bkey.split(":", 3)
        period = "total" if pid == "total" else ("day" if len(pid) == 10 else "week" if "W" in pid else "month")
        _, start, _ = self.periods.current(period, now)
        column = {"key": "key_id", "user": "user_id", "team": "team"}[scope]
        spent = await self.store.spent_since(column, name, start)
        await self._counters("seed", bkey, math.ceil(spent * _MICRO))

    # -- limits and budgets -----------------------------------------------------------------------------
    def _limits(self, ctx: RequestContext, rec: KeyRecord, group: str | None) -> list[tuple[str, str, Limits | KeyRecord]]:
        out: list[tuple[str, str, Any]] = [("key", rec.id, rec)]
        gov = self.gov
        for scope, name, table in (("user", ctx.user, gov.users), ("team", ctx.team, gov.teams),
                                   ("model", group, gov.models)):
            lim = table.get(name) if name else None
            if lim is not None:
                out.append((scope, name, lim))
        return out

    @staticmethod
    def _prompt_tokens(req: ChatRequest) -> int:
        body = req.body
        try:
            if req.kind == "embeddings":
                inputs = body.get("input")
                texts = [inputs] if isinstance(inputs, str) else [t for t in inputs or () if isinstance(t, str)]
                return sum(count_tokens(t) for t in texts) or len(inputs or ())
            return int(count_chat_tokens(body.get("messages") or [], req.model if req.model else "gpt-4o",
                                         body.get("tools")))
        except (TypeError, ValueError):
            return 0

    async def pre_request(self, ctx: RequestContext, request: ChatRequest) -> None:
        rec: KeyRecord | None = ctx.metadata.get("gov.key")
        if rec is None or request.kind == "models":
            return
        body = request.body
        prompt = self._prompt_tokens(request)
        max_out = 0 if request.kind == "embeddings" else _max_output(body, self.gov.default_max_tokens)
        estimate = prompt + max_out
        ctx.metadata["gov.estimate"] = (prompt, max_out)
        group = ctx.plan.group if ctx.plan is not None else request.model
        checks: list[tuple[str, float, float, float]] = []
        for scope, name, lim in self._limits(ctx, rec, group):
            if lim.rpm:
                checks.append((f"rpm:{scope}:{name}", lim.rpm / 60.0, float(lim.rpm), 1.0))
            if lim.tpm:
                checks.append((f"tpm:{scope}:{name}", lim.tpm / 60.0, float(lim.tpm), float(estimate)))
        if checks:
            await self._admit(ctx, rec, checks, estimate)
            ctx.metadata["gov.tpm"] = [c for c in checks if c[0].startswith("tpm:")]
            await self._ratelimit_headers(ctx, rec)
        budgets = ctx.metadata.get("gov.budgets")
        if budgets:
            await self._reserve(ctx, rec, budgets, prompt, max_out)

    async def _admit(self, ctx: RequestContext, rec: KeyRecord, checks: list[tuple[str, float, float, float]],
                     estimate: int) -> None:
        wait = await self._counters("acquire", checks)
        if wait and self.gov.wait:  # wait for a turn, up to `governance.wait` seconds, instead of a 429
            deadline = self.clock.now() + self.gov.wait
            while wait and self.clock.now() + wait <= deadline:
                await self.clock.sleep(wait)
                wait = await self._counters("acquire", checks)
        if not wait:
            return
        self.stats_counts["rate_limited"] += 1
        await self._ratelimit_headers(ctx, rec)  # a refusal carries them too
        await self._audit(rec.id, "limit.refused", rec.id, {"estimate_tokens": estimate, "wait_s": wait})
        if math.isinf(wait):
            raise GatewayError(429, f"This request's estimated {estimate} tokens exceed a tokens-per-minute limit "
                                    "that applies to it; send fewer tokens or a smaller max_tokens.",
                               type="rate_limit_error", code="rate_limit_exceeded")
        raise GatewayError(429, f"Rate limit reached; retry in {wait:.1f}s.", type="rate_limit_error",
                           code="rate_limit_exceeded", headers=[("retry-after", str(max(math.ceil(wait), 1)))])

    async def _ratelimit_headers(self, ctx: RequestContext, rec: KeyRecord) -> None:
        """OpenAI's x-ratelimit-* headers for the key's own limits."""
        headers = ctx.response_headers
        for kind, limit in (("requests", rec.rpm), ("tokens", rec.tpm)):
            if not limit:
                continue
            state = await self._counters("limit_state", f"{'rpm' if kind == 'requests' else 'tpm'}:key:{rec.id}",
                                         limit / 60.0, float(limit))
            if state is None:
                continue
            remaining, reset = state
            headers.append((f"x-ratelimit-limit-{kind}", str(limit)))
            headers.append((f"x-ratelimit-remaining-{kind}", str(int(remaining))))
            headers.append((f"x-ratelimit-reset-{kind}", f"{reset:.3f}s"))

    def _max_price(self, ctx: RequestContext) -> Price | None:
        """The priciest known price of the plan (a fallback may serve), None if none is known."""
        best = None
        for step in ctx.plan.steps if ctx.plan is not None else ():
            price = self.prices.for_deployment(step.deployment)
            if price is not None and (best is None or price.input + price.output > best.input + best.output):
                best = price
        return best

    async def _reserve(self, ctx: RequestContext, rec: KeyRecord, budgets: list[tuple[str, int, str, str, float]],
                       prompt: int, max_out: int) -> None:
        price = self._max_price(ctx)
        worst = PriceBook.worst_case(price, prompt, max_out) if price is not None else 0
        held: list[tuple[str, int]] = []
        for bkey, limit, what, period, end in budgets:
            ok = await self._counters("reserve", bkey, worst, limit)
            if ok is None:  # counters down, failing open
                continue
            if not ok:
                for k, amount in held:
                    await self._counters("release", k, amount)
                self.stats_counts["budget_refused"] += 1
                await self._audit(rec.id, "budget.refused", rec.id, {"budget": what, "reserve_usd": worst / _MICRO})
                resets = ("never: it is a total budget" if math.isinf(end) else
                          time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)))
                raise GatewayError(429, f"The {what} of ${limit / _MICRO:,.2f} is used up (this request could cost up "
                                        f"to ${worst / _MICRO:,.4f}); it resets {resets}.",
                                   type="rate_limit_error", code="budget_exceeded")
            held.append((bkey, worst))
        ctx.metadata["gov.reserved"] = held

    # -- answers and finish ---------------------------------------------------------------------------------
    def _cost(self, ctx: RequestContext, outcome: Outcome | None, usage: Any) -> tuple[int | None, str | None]:
        """(micro-dollars, deployment) for the answer the client got; cost None when unpriced."""
        served = None  # the last attempt an upstream worked on (a cut stream's included)
        for a in reversed(ctx.attempts):
            if a.sent and not a.cancelled:
                served = a.deployment
                break
        if usage is None:
            return 0, served
        if served is None:  # a plugin's own answer (a cache hit): no upstream cost
            return 0, None
        price = self.prices.for_deployment(served)
        if price is None:
            return None, served
        return math.ceil(PriceBook.cost(price, usage)), served  # whole micro-dollars, as the counters keep them

    def post_response(self, ctx: RequestContext, result: ChatResponse | GatewayError) -> None:
        if isinstance(result, ChatResponse) and not result.streamed and ctx.kind == "chat":
            usage = result.usage or ctx.usage
            cost, served = self._cost(ctx, None, usage)
            if cost is None:
                self._unpriced(served)
            ctx.response_headers.append(("x-llmgw-cost", "unpriced" if cost is None else f"{cost / _MICRO:.6f}"))

    def _unpriced(self, deployment: str | None) -> None:
        self._note(f"unpriced:{deployment}", "no price is known for deployment %s: its requests are not costed "
                                              "(add governance.prices or a deployment price)", deployment)
        self.stats_counts["unpriced_requests"] += 1

    async def on_finish(self, ctx: RequestContext, outcome: Outcome) -> None:
        rec: KeyRecord | None = ctx.metadata.get("gov.key")
        if rec is None:
            return  # refused before we knew who it was: metrics count it, the ledger does not
        usage = outcome.usage
        cost, served = self._cost(ctx, outcome, usage)
        if cost is None and ctx.kind == "chat" and outcome.streamed:
            self._unpriced(served)
        produced = usage is not None and (usage.completion_tokens or usage.prompt_tokens)
        for bkey, reserved in ctx.metadata.get("gov.reserved", ()):
            if produced and cost is not None:
                await self._counters("settle", bkey, reserved, math.ceil(cost))
            else:
                await self._counters("release", bkey, reserved)
        estimate = ctx.metadata.get("gov.estimate")
        if estimate is not None:
            real = usage.total_tokens if usage is not None else 0
            for key, rate, burst, est in ctx.metadata.get("gov.tpm", ()):
                if real != est:
                    await self._counters("adjust", key, rate, burst, real - est)
        self.queue.put(self._row(ctx, outcome, usage, cost, served))

    def _row(self, ctx: RequestContext, outcome: Outcome, usage: Any, cost: float | None,
             served: str | None) -> tuple[Any, ...]:
        cache = ctx.metadata.get("cache")
        saved = ctx.metadata.get("cache_saved_usd")
        ttft = outcome.ttfb
        error = outcome.error.code if outcome.error is not None else None
        return (ctx.request_id, self.clock.wall(), ctx.kind, ctx.key_id, ctx.user, ctx.team,
                ctx.plan.group if ctx.plan is not None else ctx.model, served,
                usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
                (usage.cached_tokens or 0) if usage else 0, cost / _MICRO if cost is not None else None,
                int(cost is None), round(outcome.duration * 1000, 3), round(ttft * 1000, 3) if ttft is not None else None,
                cache, saved, outcome.status, outcome.result, error, len(outcome.attempts),
                int(outcome.usage_estimated))

    async def _audit(self, actor: str, action: str, subject: str | None, detail: dict[str, Any]) -> None:
        """A refusal, queued for the audit log (a storm of refusals must not wait on the store)."""
        self.audit_queue.put((self.clock.wall(), actor, action, subject, orjson.dumps(detail).decode()))
