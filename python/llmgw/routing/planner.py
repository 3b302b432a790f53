"""Planning a request's route: which model group serves it, and its deployments in order.

`Router.plan(ctx, request)` runs before the pre_request hooks (so they can see it) and again if a
hook changes the model. In order:

1. the group: the `x-llmgw-model` header's choice if the caller sent one (the caller's access is
   checked by the runner), else the model in the request;
2. the group's rules, first match wins (headers, key/team/user, prompt tokens, tools, images,
   streaming), then its complexity router (a score of the prompt picks the easy or hard group);
3. the group's deployments in its strategy's order, narrowed to those carrying every tag the
   caller asked for (`x-llmgw-tags`), then its fallbacks (a fallback to a group expands into that
   group's deployments);
4. deployments whose context window cannot hold the prompt plus `max_tokens` are left out
   without a call (recorded in `plan.skipped`); so is everything before the budget fallback when
   a budget policy set `ctx.budget_exhausted`.

A group with one deployment and no rules, router or fallbacks gets one plan built at load time:
no work per request.
"""

from __future__ import annotations

import importlib
import random
from typing import TYPE_CHECKING, Any, Callable

from llmgw.exchange import RoutePlan, RouteStep
from llmgw.routing.complexity import score as complexity_score
from llmgw.tokens import context_window, count_chat_tokens

if TYPE_CHECKING:
    from llmgw.clock import Clock
    from llmgw.config import Config, Deployment, ModelGroup, Rule
    from llmgw.exchange import ChatRequest, RequestContext
    from llmgw.routing.state import DeploymentState, DeploymentStates

__all__ = ["IN_GROUP", "Router"]

# Failures that move a request on to the next deployment of its group (and allow retries there).
IN_GROUP = frozenset({"rate_limited", "server_error", "timeout", "connection"})


class Router:
    """The routes of one configuration; deployment states come from the services (kept across
    reloads for unchanged deployments)."""

    def __init__(self, config: Config, states: DeploymentStates, clock: Clock) -> None:
        self.groups = config.models
        self.clock = clock
        self.deployments: dict[str, tuple[Deployment, ModelGroup]] = {}
        self.state: dict[str, DeploymentState] = {}
        self.windows: dict[str, int | None] = {}
        for group in self.groups.values():
            for d in group.deployments:
                self.deployments[d.name] = (d, group)
                self.state[d.name] = states.get(d, group.breaker, group.retries.budget)
                self.windows[d.name] = d.context_window or context_window(d.model)
        states.keep_only(set(self.state.values()))
        self.shadowed = frozenset(name for name, g in self.groups.items() if g.shadow is not None)
        # Groups whose requests need no routing decision at all: one deployment, no policy.
        self.simple = frozenset(
            name for name, g in self.groups.items()
            if len(g.deployments) == 1 and not (g.fallbacks or g.rules or g.complexity or g.breaker or g.hedge
                                                or g.timeout or g.retries.attempts))
        self._scorers: dict[str, Callable[[dict[str, Any]], float]] = {}
        for group in self.groups.values():
            if group.complexity is not None:
                self._scorers[group.name] = _load_scorer(group.complexity.scorer)
        self._static: dict[str, RoutePlan] = {
            name: RoutePlan(name, self._steps(g, [d for d in g.deployments]), group=name, reason="")
            for name, g in self.groups.items()
            if len(g.deployments) == 1 and not g.rules and g.complexity is None and not g.fallbacks
        }
        # Weighted groups: the order for each first pick (the rest by weight), built once.
        self._by_weight: dict[str, tuple[float, list[tuple[float, tuple[Deployment, ...]]]]] = {}
        for name, g in self.groups.items():
            if g.strategy == "weighted" and len(g.deployments) > 1:
                rest = sorted(g.deployments, key=lambda d: -d.weight)
                acc, table = 0.0, []
                for d in g.deployments:
                    acc += d.weight
                    table.append((acc, (d, *[x for x in rest if x is not d])))
                self._by_weight[name] = (acc, table)
        # Plans for each (model asked, group, order) seen, shared by requests: building them is
        # most of the cost of planning (callgrind), and there are few distinct ones.
        self._plans: dict[tuple[str, str, str | tuple[str, ...]], RoutePlan] = {}
        self._smallest_window = {name: min((w for w in (self.windows.get(s.deployment)
                                                          for s in self._steps(g, list(g.deployments))) if w),
                                           default=None) for name, g in self.groups.items()}

    def names(self) -> list[str]:
        return list(self.groups)

    def group(self, name: str) -> ModelGroup | None:
        return self.groups.get(name)

    # -- planning -----------------------------------------------------------------------------------
    def plan(self, ctx: RequestContext, req: ChatRequest) -> RoutePlan | None:
        """The plan for `req`, or None when it names no configured model (see the module docstring)."""
        headers = req.headers
        wanted = headers.get("x-llmgw-model") or req.model
        group = self.groups.get(wanted)
        if group is None:
            return None
        reasons = [f"header x-llmgw-model: {wanted}"] if wanted != req.model else []
        static = self._static.get(group.name)
        if static is not None and not reasons and "x-llmgw-tags" not in headers:
            # One deployment, no alternative: its own context error answers a too-long prompt.
            return static
        tokens = _LazyTokens(req)
        for i, rule in enumerate(group.rules):
            if _matches(rule, ctx, req, tokens):
                reasons.append(f"rule {i + 1} of {group.name}: {rule.use}")
                group = self.groups[rule.use] if rule.use in self.groups else group
                break
        if group.complexity is not None:
            c = group.complexity
            score = self._scorers[group.name](req.body)
            chosen = c.easy if score < c.threshold else c.hard
            reasons.append(f"complexity {score:.2f} {'<' if score < c.threshold else '>='} {c.threshold:g}: {chosen}")
            group = self.groups.get(chosen, group)
        primaries = self._order(group, req)
        tags = headers.get("x-llmgw-tags")
        if tags:
            wanted_tags = [t.strip() for t in tags.split(",") if t.strip()]
            tagged = tuple(d for d in primaries if all(t in d.tags for t in wanted_tags))
            if tagged:
                primaries = tagged
                reasons.append(f"tags {','.join(wanted_tags)}")
        skipped: list[tuple[str, str]] = []
        if not reasons and not ctx.budget_exhausted:
            # Keyed by names, not Deployment objects: hashing a frozen dataclass hashes every field.
            key = (req.model, group.name, primaries[0].name if len(primaries) == len(group.deployments)
                   and group.strategy == "weighted" else tuple(d.name for d in primaries))
            plan = self._plans.get(key)
            if plan is None:
                if len(self._plans) >= 4096:
                    self._plans.clear()
                reason = f"{group.strategy}: {primaries[0].name}" if group.strategy != "ordered" and primaries else ""
                plan = self._plans[key] = RoutePlan(req.model, self._steps(group, list(primaries)), group.name, reason)
            smallest = self._smallest_window[group.name]
            if smallest is None or (req.raw is not None and len(req.raw) < smallest):
                return plan  # the common case: a plan built before, no prompt to count
            steps = self._fits(plan.steps, req, tokens, skipped)
            return plan if not skipped else RoutePlan(req.model, tuple(steps), group.name, plan.reason, tuple(skipped))
        if group.strategy != "ordered" and len(primaries) > 1:
            reasons.append(f"{group.strategy}: {primaries[0].name}")
        steps = self._steps(group, list(primaries))
        if ctx.budget_exhausted:
            first = next((i for i, s in enumerate(steps) if "budget_exhausted" in s.on), None)
            if first is not None:
                skipped += [(s.deployment, "budget exhausted") for s in steps[:first]]
                steps = steps[first:]
                reasons.append(f"budget exhausted: {steps[0].deployment}")
        steps = self._fits(steps, req, tokens, skipped)
        return RoutePlan(req.model, tuple(steps), group=group.name, reason="; ".join(reasons), skipped=tuple(skipped))

    def _order(self, group: ModelGroup, req: ChatRequest) -> tuple[Deployment, ...]:
        ds = group.deployments
        strategy = group.strategy
        if strategy == "ordered" or len(ds) < 2:
            return ds
        if strategy == "weighted":
            total, table = self._by_weight[group.name]
            pick = random.random() * total
            for acc, order in table:
                if pick < acc:
                    return order
            return table[-1][1]
        state = self.state
        if strategy == "least_inflight":
            return tuple(sorted(ds, key=lambda d: state[d.name].inflight))
        if strategy == "lowest_latency":
            stream = req.stream
            return tuple(sorted(ds, key=lambda d: (state[d.name].ttft if stream else state[d.name].latency) or 0.0))
        if strategy == "lowest_cost":
            return tuple(sorted(ds, key=lambda d: d.price.input + d.price.output if d.price is not None else 1e18))
        now = self.clock.now()  # headroom
        return tuple(sorted(ds, key=lambda d: -state[d.name].headroom(now)))

    def _steps(self, group: ModelGroup, primaries: list[Deployment]) -> tuple[RouteStep, ...]:
        steps = [RouteStep(d.upstream, d.model, d.name, group.name, "primary", IN_GROUP) for d in primaries]
        seen = {d.name for d in primaries}
        for fb in group.fallbacks:
            if fb.to in self.groups:
                targets = [(d, self.groups[fb.to]) for d in self.groups[fb.to].deployments]
            else:
                targets = [self.deployments[fb.to]] if fb.to in self.deployments else []
            for d, g in targets:
                if d.name not in seen:
                    seen.add(d.name)
                    steps.append(RouteStep(d.upstream, d.model, d.name, g.name, "fallback", fb.on))
        return tuple(steps)

    def _fits(self, steps: tuple[RouteStep, ...] | list[RouteStep], req: ChatRequest, tokens: _LazyTokens,
              skipped: list[tuple[str, str]]) -> list[RouteStep]:
        """Leave out deployments whose context window cannot hold the prompt plus max_tokens. The
        prompt is counted only when the body is larger than the smallest window (a prompt has no
        more tokens than bytes), so short requests cost nothing here."""
        windows = [self.windows.get(s.deployment) for s in steps]
        smallest = min((w for w in windows if w), default=None)
        if smallest is None or len(req.raw or b"") < smallest and req.raw is not None:
            return list(steps)
        body = req.body
        need = tokens.get() + int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)
        kept = []
        for step, window in zip(steps, windows):
            if window and need > window:
                skipped.append((step.deployment, f"context window {window} < {need} tokens"))
            else:
                kept.append(step)
        return kept

    def explain(self, name: str) -> list[str]:
        """The group's routing in words, for `llmgw check-config`."""
        g = self.groups[name]
        lines = []
        ds = ", ".join(f"{d.name} (upstream {d.upstream}, model {d.model}"
                       f"{f', weight {d.weight:g}' if g.strategy == 'weighted' else ''})" for d in g.deployments)
        lines.append(f"model {name}: {g.strategy.replace('_', ' ')} choice among {ds}" if len(g.deployments) > 1
                     else f"model {name}: deployment {ds}")
        for i, r in enumerate(g.rules):
            lines.append(f"  rule {i + 1}: requests with {_describe(r)} go to {r.use}")
        if g.complexity is not None:
            c = g.complexity
            lines.append(f"  complexity score < {c.threshold:g} goes to {c.easy}, otherwise to {c.hard}")
        retries = g.retries
        tries = retries.attempts if retries.attempts is not None else max(len(g.deployments) - 1, 0)
        if tries:
            lines.append(f"  on 429, 5xx, timeouts and connection errors: up to {tries} more tries in the group "
                         f"(backoff from {retries.backoff:g}s, at most {retries.budget:.0%} extra load per deployment)")
        prev = " / ".join(d.name for d in g.deployments)
        for fb in g.fallbacks:
            why = ", ".join(_WORDS.get(t, t) for t in sorted(fb.on, key=list(_WORDS).index))
            lines.append(f"  on {why} from {prev}: falls back to {fb.to}")
            prev = fb.to
        if g.breaker is not None:
            b = g.breaker
            lines.append(f"  circuit breaker: a deployment is skipped for {b.cooldown:g}s after {b.failures} failures "
                         f"in a row or {b.error_ratio:.0%} of {b.min_requests}+ requests in {b.window:g}s failing")
        if g.hedge is not None:
            lines.append(f"  hedging: a second deployment is raced after {g.hedge.after:g}s without an answer")
        if g.shadow is not None:
            lines.append(f"  shadow: {g.shadow.sample:.0%} of requests are copied to {g.shadow.to} (answers recorded only)")
        if g.timeout is not None:
            lines.append(f"  deadline: {g.timeout:g}s (a client may ask for less with x-llmgw-timeout)")
        return lines


_WORDS = {"rate_limited": "a 429 (rate limit)", "server_error": "a 5xx", "connection": "a connection error",
          "timeout": "a timeout", "context_window": "a context-window error", "content_policy": "a content-policy refusal",
          "auth": "a rejected upstream key", "budget_exhausted": "an exhausted budget"}


class _LazyTokens:
    """The prompt's token count, counted once and only if asked for."""

    __slots__ = ("req", "value")

    def __init__(self, req: ChatRequest) -> None:
        self.req = req
        self.value: int | None = None

    def get(self) -> int:
        if self.value is None:
            body = self.req.body
            try:
                self.value = int(count_chat_tokens(body.get("messages") or [], "gpt-4o", body.get("tools")))
            except (TypeError, ValueError):
                self.value = 0
        return self.value


def _has_images(body: dict[str, Any]) -> bool:
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") in ("image_url", "image")
                                             for p in content):
            return True
    return False


def _matches(rule: Rule, ctx: RequestContext, req: ChatRequest, tokens: _LazyTokens) -> bool:
    if any(req.headers.get(k) != v for k, v in rule.headers):
        return False
    if rule.metadata:
        meta = req.body.get("metadata")
        if not isinstance(meta, dict) or any(str(meta.get(k)) != v for k, v in rule.metadata):
            return False
    if rule.key is not None and ctx.key_name != rule.key:
        return False
    if rule.team is not None and ctx.team != rule.team:
        return False
    if rule.user is not None and ctx.user != rule.user:
        return False
    if rule.stream is not None and req.stream != rule.stream:
        return False
    if rule.tools is not None and bool(req.body.get("tools")) != rule.tools:
        return False
    if rule.images is not None and _has_images(req.body) != rule.images:
        return False
    if rule.min_prompt_tokens is not None and tokens.get() < rule.min_prompt_tokens:
        return False
    return rule.max_prompt_tokens is None or tokens.get() <= rule.max_prompt_tokens


def _describe(rule: Rule) -> str:
    parts = [f"header {k}: {v}" for k, v in rule.headers] + [f"metadata {k}: {v}" for k, v in rule.metadata]
    parts += [f"{k} {v}" for k, v in (("key", rule.key), ("team", rule.team), ("user", rule.user)) if v is not None]
    if rule.min_prompt_tokens is not None:
        parts.append(f"at least {rule.min_prompt_tokens} prompt tokens")
    if rule.max_prompt_tokens is not None:
        parts.append(f"at most {rule.max_prompt_tokens} prompt tokens")
    for name, flag in (("tools", rule.tools), ("images", rule.images), ("streaming", rule.stream)):
        if flag is not None:
            parts.append(name if flag else f"no {name}")
    return ", ".join(parts) or "anything"


def _load_scorer(target: str | None) -> Callable[[dict[str, Any]], float]:
    if target is None:
        return complexity_score
    module, _, attr = target.partition(":")
    fn: Any = importlib.import_module(module)
    for part in attr.split("."):
        fn = getattr(fn, part)
    return fn  # type: ignore[no-any-return]
