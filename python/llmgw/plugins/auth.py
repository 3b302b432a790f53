"""Built-in client authentication: API keys from config (values from environment variables)."""

from __future__ import annotations

import hashlib
from typing import Any

from llmgw.config import AuthKey
from llmgw.errors import GatewayError
from llmgw.exchange import ChatRequest, RequestContext
from llmgw.plugins.api import Plugin

__all__ = ["ApiKeyAuth"]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeyAuth(Plugin):
    """Admits requests bearing a configured key (`Authorization: Bearer` or `x-api-key`).

    Keys are held only as SHA-256 digests and looked up by digest, so the comparison time does not
    depend on how much of a guessed key is right, and no key text sits in memory dumps of the
    table. Sets `ctx.key_name`; a key restricted to some models gets 403 for the others.
    """

    name = "auth"

    def __init__(self, keys: tuple[AuthKey, ...] = (), **options: Any) -> None:
        super().__init__(**options)
        self._keys = {_digest(k.key): k for k in keys}

    def lookup(self, presented: str) -> AuthKey | None:
        return self._keys.get(_digest(presented))

    def pre_request(self, ctx: RequestContext, request: ChatRequest) -> None:
        presented = presented_key(request.headers)
        if presented is None:
            raise GatewayError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                               code="missing_api_key")
        entry = self.lookup(presented)
        if entry is None:
            raise GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")
        if entry.models is not None and request.model not in entry.models:
            raise GatewayError(403, f"This API key may not use model {request.model!r}.",
                               type="permission_error", code="model_not_allowed", param="model")
        ctx.key_name = entry.name
        return None


def presented_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key else None
