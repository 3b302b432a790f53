"""Where a request goes: the model groups of the configuration and the plan for each.

The one place that maps a public model name to upstreams (`Router.plan`); the runner, the
model list and every endpoint ask it. Today a model maps to one deployment; the routing issue
turns a plan into an ordered list with fallbacks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmgw.exchange import RoutePlan, RouteStep

if TYPE_CHECKING:
    from llmgw.config import ModelRoute

__all__ = ["Router"]


class Router:
    """Plans for every configured model, built once per configuration."""

    def __init__(self, models: dict[str, ModelRoute]) -> None:
        self._plans = {name: RoutePlan(name, (RouteStep(route.upstream, route.model),)) for name, route in models.items()}

    def plan(self, model: str) -> RoutePlan | None:
        """The plan for `model`, or None when no such model is configured."""
        return self._plans.get(model)

    def names(self) -> list[str]:
        return list(self._plans)
