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

Everything a key's requests need that does not change per request (its limits as counter keys,
its budgets for the current period, its header names) is built once into a `_Profile`, cached
per Authorization header until the key table changes or a budget period ends: the hooks then
do little more than the counter calls (benches/load/governance.py measures each part).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
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
    from llmgw.config import Config, Price
    from llmgw.exchange import ChatRequest, Outcome, RequestContext
    from llmgw.services import Services

__all__ = ["Governance"]

log = logging.getLogger("llmgw")

_MICRO = 1_000_000  # micro-dollars per dollar: counters and reservations are integers

Limit = tuple[str, float, float, bool]  # (counter key, rate per second, burst, is TPM)


def _max_output(body: dict[str, Any], default: int) -> int:
    """The output tokens a chat request may produce: its max_completion_tokens/max_tokens, or
    `default` when it names none (or a value that is not a count; the upstream will refuse it)."""
    for name in ("max_completion_tokens", "max_tokens"):
        v = body.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return default


def _duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: 20ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    if seconds < 59.95:  # 59.99 would print as "60s"
        return f"{seconds:.3g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"


def _limit_checks(scope: str, name: str, rpm: int | None, tpm: int | None) -> list[Limit]:
    out = []
    if rpm:
        out.append((f"rpm:{scope}:{name}", rpm / 60.0, float(rpm), False))
    if tpm:
        out.append((f"tpm:{scope}:{name}", tpm / 60.0, float(tpm), True))
    return out


@dataclass(slots=True)
class _Budget:
    key: str  # the counter: budget:<scope>:<name>:<period id>
    limit: int  # micro-dollars
    soft: int  # micro-dollars past which requests step down (routing's budget_exhausted)
    what: str  # for messages: "team 'research' month budget"
    end: float  # when the period ends (inf: never)


@dataclass(slots=True)
class _Profile:
    """What applies to one key's requests (see the module docstring)."""

    rec: KeyRecord
    models: frozenset[str] | None  # what the key may call (None: everything)
    limits: tuple[Limit, ...]  # the key's own first, then its user's and team's
    # per limit of the key itself: (counter key, limit header, its value, remaining header, rate, burst, reset header)
    headers: tuple[tuple[str, str, str, str, float, float, str], ...]
    budgets: tuple[_Budget, ...]
    valid_until: float  # the first budget period end, or the key's expiry
    has_tpm: bool


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
        self.local: LocalCounters | None = None  # one machine: plain calls
        self.remote: RedisCounters | None = None  # replicas: awaited calls
        self.queue: Any = None
        self.audit_queue: Any = None
        self.remote_finish: Any = None  # Redis: the finish hook's settles, sent in the background
        self.services: Services | None = None
        self.clock: Clock = Clock()
        self._wall = time.time
        self._cache: dict[str, tuple[_Profile | None, int]] = {}  # Authorization -> (profile or None, generation)
        self._seeded: set[str] = set()
        self._group_checks: dict[str | None, tuple[Limit, ...]] = {}
        self.stats_counts: Counter[str] = Counter()
        self._logged: dict[str, float] = {}

    def same_config(self, config: Config) -> bool:
        return (config.governance == self.gov and config.auth_keys == self.config.auth_keys
                and config.models == self.config.models)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def startup(self, services: Services) -> None:
        from llmgw.governance.admin import register_admin_routes

        self.services = services
        self.clock = clock = services.clock
        fake = type(clock) is not Clock  # a test's clock drives the buckets and periods too
        self._wall = clock.wall if fake else time.time
        gov = self.gov
        self.store = open_store(gov.store, gov.sqlite_path, gov.postgres_dsn)
        await self.store.open()
        # The counters outlive this instance: a reload that changes a limit keeps every bucket.
        if gov.counters == "redis":
            url = gov.redis_url
            self.remote = services.keep(f"governance.counters:{url}", lambda: RedisCounters(url))  # type: ignore[arg-type]
            self.remote_finish = services.queue("governance.counters", self._run_remote, batch=256, interval=0.02)
        else:
            self.local = services.keep("governance.counters:local",
                                       lambda: LocalCounters(now=clock.now if fake else None))
        self.queue = services.queue("ledger", self.store.write_ledger, max_items=gov.ledger.max_queue,
                                    batch=gov.ledger.batch, interval=gov.ledger.interval)
        self.audit_queue = services.queue("audit", self.store.audit_many, max_items=gov.ledger.max_queue,
                                          batch=gov.ledger.batch, interval=gov.ledger.interval)
        register_admin_routes(self, services)
        services.add_stats("governance", self.stats)
        services.set_audit_sink(self._audit)  # other plugins' decisions (guardrails) go to the same log

    async def shutdown(self) -> None:
        if self.services is not None:
            self.services.clear_audit_sink(self._audit)
        for q in (self.remote_finish, self.queue, self.audit_queue):
            if q is not None:
                await q.drain()  # the last rows go out before the store closes
        if self.store is not None:
            await self.store.close()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.stats_counts)
        if self.queue is not None:
            out["ledger_queue"] = self.queue.stats()
        return out

    def _note(self, what: str, message: str, *args: Any) -> None:
        """Count `what`; log `message` at most once a minute per `what`."""
        self.stats_counts[what] += 1
        now = time.monotonic()
        if now - self._logged.get(what, 0.0) >= 60.0:
            self._logged[what] = now
            log.warning(message, *args)

    @property
    def counters(self) -> LocalCounters | RedisCounters:
        return self.local if self.local is not None else self.remote  # type: ignore[return-value]

    async def _counters(self, op: str, *args: Any) -> Any:
        """Call the counters; if Redis is down, fail closed (503) or open (None), as configured."""
        if self.local is not None:
            return getattr(self.local, op)(*args)
        try:
            return await getattr(self.remote, op)(*args)
        except CounterFailure as exc:
            if self.gov.on_counter_failure == "open":
                self._note("counters_failed_open", "governance counters unavailable, admitting (fail open): %s", exc)
                return None
            self._note("counters_failed_closed", "governance counters unavailable, refusing (fail closed): %s", exc)
            raise GatewayError(503, "Rate limits and budgets cannot be checked right now; retry shortly.",
                               type="server_error", code="limits_unavailable", headers=[("retry-after", "1")]) from None

    # -- keys -----------------------------------------------------------------------------------------
    async def on_headers(self, ctx: RequestContext, headers: dict[str, str]) -> None:
        local = self.local
        generation = local.generation() if local is not None else (await self._counters("generation") or 0)
        sent = headers.get("authorization") or headers.get("x-api-key") or ""
        now = self._wall()
        hit = self._cache.get(sent)
        if hit is not None and hit[1] == generation and (hit[0] is None or now < hit[0].valid_until):
            profile = hit[0]
        else:
            profile = await self._lookup(headers, sent, generation, now)
        if profile is None:
            self.stats_counts["invalid_key"] += 1
            raise GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")
        rec = profile.rec
        if rec.revoked_at is not None or (rec.expires_at is not None and now >= rec.expires_at):
            what = "revoked" if rec.revoked_at is not None else "expired"
            raise GatewayError(401, f"This API key was {what}.", code="invalid_api_key")
        ctx.key_id, ctx.key_name, ctx.user, ctx.team = rec.id, rec.name, rec.user, rec.team
        ctx.allowed_models = profile.models
        ctx.metadata["gov"] = profile
        for b in profile.budgets:
            if b.key not in self._seeded:
                await self._seed(b.key, now)
            state = local.budget(b.key) if local is not None else await self._counters("budget", b.key)
            if state is not None and state[0] >= b.soft:
                ctx.budget_exhausted = True
                self._note(f"soft:{b.key}", "budget %s is past its soft limit (%.0f%%)", b.key,
                           100 * self.gov.soft_limit)

    async def _lookup(self, headers: dict[str, str], sent: str, generation: int, now: float) -> _Profile | None:
        """The profile of the key in `headers` (None: no such key), from the store; cached."""
        presented = presented_key(headers)
        if presented is None:
            raise GatewayError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                               code="missing_api_key")
        h = digest(presented)
        rec = self.static.get(h) or await self.store.key_by_hash(h)
        profile = self._profile(rec, now) if rec is not None else None
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[sent] = (profile, generation)  # an unknown key too: guessing costs no store lookup
        return profile

    def _profile(self, rec: KeyRecord, now: float) -> _Profile:
        gov = self.gov
        scopes: list[tuple[str, str | None, Any]] = [
            ("key", rec.id, rec), ("user", rec.user, gov.users.get(rec.user) if rec.user else None),
            ("team", rec.team, gov.teams.get(rec.team) if rec.team else None)]
        limits: list[Limit] = []
        budgets: list[_Budget] = []
        for scope, name, lim in scopes:
            if name is None or lim is None:
                continue
            limits += _limit_checks(scope, name, lim.rpm, lim.tpm)
            usd, period = ((rec.budget_usd, rec.budget_period) if scope == "key" else
                           (lim.budget.usd, lim.budget.period) if lim.budget is not None else (None, ""))
            if usd is not None:
                pid, _, end = self.periods.current(period, now)
                budgets.append(_Budget(f"budget:{scope}:{name}:{pid}", int(usd * _MICRO),
                                       int(usd * _MICRO * gov.soft_limit), f"{scope} {name!r} {period} budget", end))
        headers = []
        own = iter(limits)
        for kind, limit in (("requests", rec.rpm), ("tokens", rec.tpm)):
            if limit:
                key, rate, burst, _ = next(own)
                headers.append((key, f"x-ratelimit-limit-{kind}", str(limit), f"x-ratelimit-remaining-{kind}",
                                rate, burst, f"x-ratelimit-reset-{kind}"))
        until = min([b.end for b in budgets] + [rec.expires_at or math.inf])
        return _Profile(rec, frozenset(rec.models) if rec.models is not None else None, tuple(limits),
                        tuple(headers), tuple(budgets), until, any(t for _, _, _, t in limits))  # type: ignore[arg-type]

    async def _seed(self, bkey: str, now: float) -> None:
        """A budget counter starts from what the ledger says was spent this period."""
        if bkey in self._seeded:
            return
        if len(self._seeded) >= 100_000:
            self._seeded.clear()  # seeding again is harmless: it only sets a counter that is absent
        self._seeded.add(bkey)
        _, scope, name, pid = bkey.split(":", 3)
        period = "total" if pid == "total" else ("day" if len(pid) == 10 else "week" if "W" in pid else "month")
        _, start, _ = self.periods.current(period, now)
        spent = await self.store.spent_since(scope, name, start)
        await self._counters("seed", bkey, round(spent * _MICRO))  # the ledger holds whole micro-dollars

    # -- limits and budgets -----------------------------------------------------------------------------
    def _model_checks(self, group: str | None) -> tuple[Limit, ...]:
        checks = self._group_checks.get(group)
        if checks is None:
            lim = self.gov.models.get(group) if group else None
            checks = tuple(_limit_checks("model", group, lim.rpm, lim.tpm)) if lim is not None else ()
            self._group_checks[group] = checks
        return checks

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
        profile: _Profile | None = ctx.metadata.get("gov")
        if profile is None or request.kind == "models":
            return
        limits = profile.limits
        has_tpm = profile.has_tpm
        if self.gov.models:
            model_checks = self._model_checks(ctx.plan.group if ctx.plan is not None else request.model)
            if model_checks:
                limits = limits + model_checks
                has_tpm = has_tpm or any(t for _, _, _, t in model_checks)
        budgets = profile.budgets
        if not limits and not budgets:
            return  # nothing to count: no token counting either
        prompt = max_out = estimate = 0
        if budgets or has_tpm:
            prompt = self._prompt_tokens(request)
            max_out = 0 if request.kind == "embeddings" else _max_output(request.body, self.gov.default_max_tokens)
            estimate = prompt + max_out
            ctx.metadata["gov.estimate"] = estimate
        local = self.local
        if limits:
            cost = float(estimate)
            checks = [(key, rate, burst, cost if tpm else 1.0) for key, rate, burst, tpm in limits]
            # One machine: plain calls, no coroutine; a wait or a refusal takes the slow path.
            wait = local.acquire(checks) if local is not None else await self._counters("acquire", checks)
            if wait and self.gov.wait:
                wait = await self._wait_turn(checks, wait)
            if profile.headers:  # a refusal carries them too
                if local is not None:
                    self._ratelimit_headers(ctx, profile, None)
                else:
                    self._ratelimit_headers(ctx, profile, await self._remote_states(profile))
            if wait:
                self._refuse_limited(profile, estimate, wait, await self._blocking(checks))
            if has_tpm:  # charged the estimate: on_finish corrects it to the real count
                ctx.metadata["gov.tpm"] = [c for c, limit in zip(checks, limits) if limit[3]]
        if budgets:
            price = self._max_price(ctx)
            worst = PriceBook.worst_case(price, prompt, max_out) if price is not None else 0
            if local is not None:
                held = []
                for b in budgets:
                    if not local.reserve(b.key, worst, b.limit):
                        for k, amount in held:
                            local.release(k, amount)
                        self._refuse_budget(profile, b, worst)
                    held.append((b.key, worst))
                ctx.metadata["gov.reserved"] = held
            else:
                await self._reserve_remote(ctx, profile, worst)

    async def _wait_turn(self, checks: list[tuple[str, float, float, float]], wait: float) -> float:
        """Wait for a turn, up to `governance.wait` seconds, instead of a 429; what is left to wait."""
        deadline = self.clock.now() + self.gov.wait
        while wait and self.clock.now() + wait <= deadline:
            await self.clock.sleep(wait)
            wait = await self._counters("acquire", checks)
        return wait  # type: ignore[no-any-return]

    async def _blocking(self, checks: list[tuple[str, float, float, float]]) -> str:
        """Which limit refused the request, in words ("requests-per-minute limit of key 3f..."):
        asked only on the refusal path."""
        for key, rate, burst, cost in checks:
            available, _ = await self._counters("limit_state", key, rate, burst) or (burst, 0.0)
            if available < cost or cost > burst:
                kind, scope, name = key.split(":", 2)
                what = "requests" if kind == "rpm" else "tokens"
                return f"the {what}-per-minute limit of {scope} {name!r} ({round(burst)}/min)"
        return "a rate limit"  # refilled between the two calls

    def _refuse_limited(self, profile: _Profile, estimate: int, wait: float, which: str) -> None:
        rec = profile.rec
        self.stats_counts["rate_limited"] += 1
        self._audit(rec.id, "limit.refused", rec.id, {"estimate_tokens": estimate, "wait_s": wait, "limit": which})
        if math.isinf(wait):
            raise GatewayError(429, f"This request's estimated {estimate} tokens exceed {which}; "
                                    "send fewer tokens or a smaller max_tokens.",
                               type="rate_limit_error", code="rate_limit_exceeded")
        raise GatewayError(429, f"Rate limit reached: {which}; retry in {wait:.1f}s.", type="rate_limit_error",
                           code="rate_limit_exceeded", headers=[("retry-after", str(max(math.ceil(wait), 1)))])

    async def _remote_states(self, profile: _Profile) -> dict[str, float]:
        """Redis: seconds until each of the key's own buckets is full again (one call each)."""
        out = {}
        for key, _, _, _, rate, burst, _ in profile.headers:
            state = await self._counters("limit_state", key, rate, burst)
            if state is not None:
                out[key] = state[1]
        return out

    def _ratelimit_headers(self, ctx: RequestContext, profile: _Profile, remote: dict[str, float] | None) -> None:
        """OpenAI's x-ratelimit-* headers for the key's own limits: the limit, what is left now,
        and when the bucket is full again."""
        out = ctx.response_headers
        local = self.local
        for key, limit_name, limit, remaining_name, rate, burst, reset_name in profile.headers:
            if local is not None:
                reset = local.reset_after(key, rate, burst)
            else:
                found = (remote or {}).get(key)
                if found is None:
                    continue
                reset = found
            remaining = burst - reset * rate  # GCRA: what the bucket still holds
            out.append((limit_name, limit))
            out.append((remaining_name, str(int(remaining)) if remaining > 0 else "0"))
            out.append((reset_name, _duration(reset)))

    def _max_price(self, ctx: RequestContext) -> Price | None:
        """The priciest known price of the plan (a fallback may serve), None if none is known."""
        best = None
        for step in ctx.plan.steps if ctx.plan is not None else ():
            price = self.prices.for_deployment(step.deployment)
            if price is not None and (best is None or price.input + price.output > best.input + best.output):
                best = price
        return best

    async def _reserve_remote(self, ctx: RequestContext, profile: _Profile, worst: int) -> None:
        held: list[tuple[str, int]] = []
        for b in profile.budgets:
            ok = await self._counters("reserve", b.key, worst, b.limit)
            if ok is None:  # counters down, failing open
                continue
            if not ok:
                for k, amount in held:
                    await self._counters("release", k, amount)
                self._refuse_budget(profile, b, worst)
            held.append((b.key, worst))
        ctx.metadata["gov.reserved"] = held

    def _refuse_budget(self, profile: _Profile, b: _Budget, worst: int) -> None:
        self.stats_counts["budget_refused"] += 1
        rec = profile.rec
        self._audit(rec.id, "budget.refused", rec.id, {"budget": b.what, "reserve_usd": worst / _MICRO})
        resets = ("never: it is a total budget" if math.isinf(b.end) else
                  time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(b.end)))
        raise GatewayError(429, f"The {b.what} of ${b.limit / _MICRO:,.2f} is used up (this request could "
                                f"cost up to ${worst / _MICRO:,.4f}); it resets {resets}.",
                           type="rate_limit_error", code="budget_exceeded")

    # -- answers and finish ---------------------------------------------------------------------------------
    def _cost(self, ctx: RequestContext, usage: Any) -> tuple[int | None, str | None]:
        """(micro-dollars, deployment) for the answer the client got; cost None when unpriced."""
        return self.prices.request_cost(ctx.attempts, usage)

    def post_response(self, ctx: RequestContext, result: ChatResponse | GatewayError) -> None:
        if isinstance(result, ChatResponse) and not result.streamed and ctx.kind == "chat":
            usage = result.usage or ctx.usage
            cost, served = self._cost(ctx, usage)
            ctx.metadata["gov.cost"] = (usage, cost, served)  # on_finish reuses it for the same usage
            ctx.response_headers.append(("x-llmgw-cost", "unpriced" if cost is None else f"{cost / _MICRO:.6f}"))

    def _unpriced(self, deployment: str | None) -> None:
        self._note(f"unpriced:{deployment}", "no price is known for deployment %s: its requests are not costed "
                                              "(add governance.prices or a deployment price)", deployment)
        self.stats_counts["unpriced_requests"] += 1

    def on_finish(self, ctx: RequestContext, outcome: Outcome) -> None:
        """Plain, not async: on one machine the counters are plain calls; with Redis, the settles
        go to a background queue (a reservation held a few ms longer errs on the safe side)."""
        meta = ctx.metadata
        if "gov" not in meta:
            return  # refused before we knew who it was: metrics count it, the ledger does not
        usage = outcome.usage
        known = meta.get("gov.cost")
        if known is not None and known[0] is usage:
            _, cost, served = known
        else:
            cost, served = self._cost(ctx, usage)
            meta["gov.cost"] = (usage, cost, served)  # the observability plugin's on_finish runs after this one
        if cost is None:
            self._unpriced(served)
        ops: list[tuple[Any, ...]] = []
        reservations = meta.get("gov.reserved")
        if reservations:
            produced = usage is not None and (usage.completion_tokens or usage.prompt_tokens)
            for bkey, reserved in reservations:
                if produced and cost is not None:
                    ops.append(("settle", bkey, reserved, cost))
                else:
                    ops.append(("release", bkey, reserved))
        estimate = meta.get("gov.estimate")
        if estimate is not None:
            real = usage.total_tokens if usage is not None else 0
            if real != estimate:
                for key, rate, burst, _ in meta.get("gov.tpm", ()):
                    ops.append(("adjust", key, rate, burst, real - estimate))
        if ops:
            if self.local is not None:
                for op, *args in ops:
                    getattr(self.local, op)(*args)
            else:
                for op in ops:
                    self.remote_finish.put(op)
        ttft = outcome.ttfb
        error = outcome.error
        self.queue.put((
            ctx.request_id, self._wall(), ctx.kind, ctx.key_id, ctx.user, ctx.team,
            ctx.plan.group if ctx.plan is not None else ctx.model, served,
            usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
            (usage.cached_tokens or 0) if usage else 0, cost / _MICRO if cost is not None else None, int(cost is None),
            outcome.duration * 1000.0, ttft * 1000.0 if ttft is not None else None,
            meta.get("cache"), meta.get("cache_saved_usd"), outcome.status, outcome.result,
            error.code if error is not None else None, len(ctx.attempts), int(outcome.usage_estimated)))

    async def _run_remote(self, ops: list[tuple[Any, ...]]) -> None:
        """Send queued settles, releases and TPM corrections to Redis; a failure is counted and
        logged (the reservation stays held until its period ends: the safe side)."""
        for op, *args in ops:
            try:
                await getattr(self.remote, op)(*args)
            except CounterFailure as exc:
                self._note("counters_finish_failed", "governance could not settle with the counters: %s", exc)

    def _audit(self, actor: str, action: str, subject: str | None, detail: dict[str, Any]) -> None:
        """A refusal, queued for the audit log (a storm of refusals must not wait on the store)."""
        self.audit_queue.put((self._wall(), actor, action, subject, orjson.dumps(detail).decode()))
