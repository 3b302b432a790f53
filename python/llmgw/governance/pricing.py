"""What a request costs: the shipped price table, overridden by the config.

Prices are USD per 1M tokens, which is exactly micro-dollars per token: costs are computed and
kept as micro-dollars (`int`, rounded up where money is reserved) so budgets add up without
floating-point drift. Where a price comes from, first match wins: the deployment's own `price`
(routing config), `governance.prices` by model group or upstream model name, then the shipped
table (python/llmgw/data/prices.json, read from the providers' published prices; its `read_on`
date says when) by the upstream model name, exactly or by its longest prefix (dated variants such
as gpt-4o-mini-2024-07-18). A model without a price is never costed as 0: it is flagged.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import TYPE_CHECKING

from llmgw.config import Price

if TYPE_CHECKING:
    from llmgw.config import Config
    from llmgw.exchange import Attempt, Usage

__all__ = ["PriceBook", "shipped_prices"]


def shipped_prices() -> tuple[str, dict[str, Price]]:
    """(the date the table was read, model -> Price) from the package's prices.json."""
    data = json.loads(resources.files("llmgw").joinpath("data/prices.json").read_text(encoding="utf-8"))
    table = {m: Price(p["input"], p["output"], p.get("cached_input"), p.get("cache_write"))
             for m, p in data["models"].items()}
    table.update({m: Price(p["input"], 0.0) for m, p in data.get("embeddings", {}).items()})
    return data["read_on"], table


class PriceBook:
    def __init__(self, config: Config) -> None:
        self.read_on, self._shipped = shipped_prices()
        overrides = config.governance.prices if config.governance is not None else {}
        self._by_deployment: dict[str, Price | None] = {}
        for group in config.models.values():
            for d in group.deployments:
                self._by_deployment[d.name] = (d.price or overrides.get(group.name) or overrides.get(d.model)
                                               or self._lookup(d.model))

    def _lookup(self, model: str) -> Price | None:
        price = self._shipped.get(model)
        if price is not None:
            return price
        best = ""
        for name in self._shipped:
            if model.startswith(name + "-") and len(name) > len(best):
                best = name
        return self._shipped[best] if best else None

    def for_deployment(self, deployment: str) -> Price | None:
        return self._by_deployment.get(deployment)

    def request_cost(self, attempts: list[Attempt], usage: Usage | None) -> tuple[int | None, str | None]:
        """(whole micro-dollars, deployment) of the answer a request got: the last attempt an
        upstream worked on (a cut stream's included) at its price. Cost 0 when nothing was
        produced or no upstream was called (a plugin's own answer: a cache hit); None when the
        deployment has no price (flagged, never costed as 0)."""
        served = None
        for a in reversed(attempts):
            if a.sent and not a.cancelled:
                served = a.deployment
                break
        if usage is None or served is None:
            return 0, served
        price = self._by_deployment.get(served)
        if price is None:
            return None, served
        return math.ceil(self.cost(price, usage)), served

    def per_token(self) -> dict[str, tuple[float, float, float | None]]:
        """deployment -> (input, output, cached input) micro-USD per token, for the priced ones
        (what the Rust telemetry costs requests with, the same rule as `request_cost`)."""
        return {d: (p.input, p.output, p.cached_input) for d, p in self._by_deployment.items() if p is not None}

    def unpriced(self) -> list[str]:
        """Deployments no price is known for (check-config warns about them)."""
        return sorted(d for d, p in self._by_deployment.items() if p is None)

    @staticmethod
    def cost(price: Price, usage: Usage) -> float:
        """Micro-dollars for `usage` at `price` (cached prompt tokens at the cached-input price)."""
        cached = usage.cached_tokens or 0
        fresh = max(usage.prompt_tokens - cached, 0)
        cached_price = price.cached_input if price.cached_input is not None else price.input
        return fresh * price.input + cached * cached_price + usage.completion_tokens * price.output

    @staticmethod
    def worst_case(price: Price, prompt_tokens: int, max_output: int) -> int:
        """Micro-dollars to reserve: every prompt token at the input price, the whole output."""
        return math.ceil(prompt_tokens * price.input + max_output * price.output)
