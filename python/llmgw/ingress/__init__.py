"""What clients call: one module per client dialect (request parsing and answer encoding)."""

from __future__ import annotations

from typing import Any


def extra_routes() -> dict[tuple[str, str], Any]:
    """Routes contributed by dialects beyond OpenAI chat completions (method, path) → handler."""
    from llmgw.ingress.anthropic import messages_endpoint
    from llmgw.ingress.embeddings import embeddings

    return {
        ("POST", "/v1/embeddings"): embeddings,
        ("POST", "/v1/messages"): messages_endpoint,
    }
