"""Virtual API keys: how they are made, stored and shown.

A key is `llmgw-` followed by 40 random URL-safe characters (238 bits). Only its SHA-256 digest
is stored (and the last four characters, to tell keys apart in a list); the plaintext is shown
once, when the key is created or rotated. Lookups go by digest, so comparing takes the same
time however much of a guessed key is right.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["KeyRecord", "digest", "new_key", "new_key_id"]

PREFIX = "llmgw-"


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(30)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


@dataclass(slots=True)
class KeyRecord:
    """A virtual key as stored (never its plaintext)."""

    id: str
    name: str
    hash: bytes = field(repr=False)
    last4: str = ""
    team: str | None = None
    user: str | None = None
    models: list[str] | None = None  # None: every model
    metadata: dict[str, Any] = field(default_factory=dict)
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str = "month"
    created_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    revoked_at: float | None = None
    rotated_from: str | None = None

    def active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def public(self) -> dict[str, Any]:
        """What the admin API shows: everything but the digest."""
        out = asdict(self)
        del out["hash"]
        out["budget"] = {"usd": self.budget_usd, "period": self.budget_period} if self.budget_usd is not None else None
        del out["budget_usd"], out["budget_period"]
        out["status"] = "revoked" if self.revoked_at else ("expired" if self.expires_at and time.time() >= self.expires_at
                                                          else "active")
        return out
