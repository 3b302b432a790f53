"""Routing: which deployments serve a request, in what order, and what happens when one fails.

`planner.Router` turns a request into a RoutePlan (model groups, rules, complexity router,
strategies, tags, context windows, the budget signal); `dispatch.Dispatcher` carries the plan out
(retries with backoff and budgets, fallbacks by trigger, circuit breakers, hedging, deadlines);
`state` keeps what is known of each deployment; `shadow` copies sampled traffic to a candidate.
`route_headers` says on every response what happened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmgw.routing.dispatch import Dispatcher, trigger_of
from llmgw.routing.planner import Router
from llmgw.routing.state import DeploymentStates

if TYPE_CHECKING:
    from llmgw.exchange import RequestContext

__all__ = ["DeploymentStates", "Dispatcher", "Router", "route_headers", "trigger_of"]


def route_headers(ctx: RequestContext) -> list[tuple[str, str]]:
    """`x-llmgw-*` headers: the deployment that served, the attempts, fallbacks taken and why,
    and why the request was routed as it was."""
    attempts = ctx.attempts
    if not attempts:
        return []
    first, plan = attempts[0], ctx.plan
    if len(attempts) == 1 and first.error is None and plan is not None and plan.steps \
            and first.deployment == plan.steps[0].deployment:
        return plan.served_headers  # the common case: the plan's first step answered
    headers = [("x-llmgw-attempts", str(len(attempts)))]
    served = next((a for a in reversed(attempts) if a.error is None and not a.cancelled and a.status is not None
                   and a.status < 300), None)
    if served is not None:
        headers.append(("x-llmgw-deployment", served.deployment or served.target))
    failed = [a for a in attempts if a.error is not None]
    if failed:
        hops = [f"{a.deployment or a.target} ({trigger_of(a.error) or a.error.reason})" for a in failed]  # type: ignore[arg-type]
        headers.append(("x-llmgw-fallbacks", " > ".join(hops) + (f" > {served.deployment}" if served else "")))
    plan = ctx.plan
    if plan is not None and plan.reason:
        headers.append(("x-llmgw-route-reason", plan.reason))
    return headers
