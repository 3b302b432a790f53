"""Built-in client authentication: API keys from config (values from environment variables)."""

from __future__ import annotations

import hashlib
from typing import Any

from llmgw.config import AuthKey
from llmgw.errors import GatewayError
from llmgw.exchange import ChatRequest, RequestContext
from llmgw.plugins.api import Plugin

__all__ = ["ApiKeyAuth", "presented_key"]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class ApiKeyAuth(Plugin):
    """Admits requests bearing a configured key (`Authorization: Bearer` or `x-api-key`).

    The key is checked in `on_headers`, before a byte of the body is read, so an unauthenticated
    caller can neither make the gateway read a large body nor learn anything about the request
    schema or the models. Keys are held only as SHA-256 digests and looked up by digest, so the
    comparison time does not depend on how much of a guessed key is right, and no key text sits
    in memory dumps of the table. Sets `ctx.key_name`/`key_id` and `ctx.allowed_models`; a key
    restricted to some models gets 403 for the others. Read-only: the request bytes still go
    upstream untouched.
    """

    name = "auth"
    kinds = frozenset({"chat", "embeddings", "models"})
    read_only = True

    def __init__(self, keys: tuple[AuthKey, ...] = (), **options: Any) -> None:
        super().__init__(**options)
        self.keys = keys
        self._keys = {_digest(k.key): k for k in keys}

    def lookup(self, presented: str) -> AuthKey | None:
        return self._keys.get(_digest(presented))

    def on_headers(self, ctx: RequestContext, headers: dict[str, str]) -> None:
        presented = presented_key(headers)
        if presented is None:
            raise GatewayError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                               code="missing_api_key")
        entry = self.lookup(presented)
        if entry is None:
            raise GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")
        ctx.key_name = ctx.key_id = entry.name
        ctx.allowed_models = frozenset(entry.models) if entry.models is not None else None

    def pre_request(self, ctx: RequestContext, request: ChatRequest) -> None:
        allowed = ctx.allowed_models
        if allowed is not None and request.kind != "models" and request.model not in allowed:
            raise GatewayError(403, f"This API key may not use model {request.model!r}.",
                               type="permission_error", code="model_not_allowed", param="model")


def presented_key(headers: dict[str, str]) -> str | None:
    """The key a client presented; a header that is there but holds no key reads as none."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key")
    return key.strip() or None if key else None
