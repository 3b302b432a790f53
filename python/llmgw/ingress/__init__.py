"""What clients call: one module per client dialect (request parsing and answer encoding)."""

from __future__ import annotations

from typing import Any


def extra_routes() -> dict[tuple[str, str], Any]:
    """Routes contributed by dialects beyond OpenAI chat completions (method, path) → handler."""
    routes: dict[tuple[str, str], Any] = {}
    from llmgw.ingress.anthropic import messages_endpoint

    routes[("POST", "/v1/messages")] = messages_endpoint
    return routes
