"""The admin API: keys, spend, the audit log and recent requests, authorised by the master key.

    POST   /admin/keys                 {name, team, user, models, rpm, tpm, budget: {usd, period},
                                        metadata, expires_in (s)}  -> the key (shown once) and its id
    GET    /admin/keys                 every key (no secrets), with its budget use this period
    GET    /admin/keys/{id}
    PATCH  /admin/keys/{id}            change name, team, user, models, rpm, tpm, budget, metadata
    POST   /admin/keys/{id}/rotate     a new key with the same settings; the old one is revoked
    DELETE /admin/keys/{id}            revoke
    GET    /admin/spend?group_by=key|user|team|model|day&from=&to=   (from/to: ISO dates or Unix s)
    GET    /admin/audit?limit=
    GET    /admin/requests?limit=&key=&model=&status=&team=&user=     (ledger rows, newest first)

The dashboard (llmgw.dashboard) adds GET /admin/overview, /admin/routing, /admin/diagram and
/admin/requests/{id}, checked the same way (`master_key_check`).

`Authorization: Bearer <master key>` (from the config's `governance.master_key`, an environment
variable); anything else gets 401, and no caller's key ever reaches these routes (they are not
checked by the key plugin at all). Changes bump the key table's generation, which every worker
and replica checks per request: a revocation holds from the next request on. Errors are
OpenAI-shaped as everywhere else; every change is written to the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from llmgw.config.governance import PERIODS
from llmgw.errors import GatewayError
from llmgw.governance.keys import KeyRecord, digest, new_key, new_key_id
from llmgw.governance.stores import GROUP_BY
from llmgw.services import RouteResponse

if TYPE_CHECKING:
    from llmgw.exchange import RequestContext
    from llmgw.governance.plugin import Governance
    from llmgw.services import RouteRequest, Services

__all__ = ["master_key_check", "parse_when", "register_admin_routes"]

_EDITABLE = ("name", "team", "user", "models", "rpm", "tpm", "budget", "metadata", "expires_in")


def _bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code="invalid_value")


def parse_when(value: str | None, default: float) -> float:
    """A time given as Unix seconds or an ISO date (UTC unless it says otherwise)."""
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise _bad(f"{value!r} is not a date (YYYY-MM-DD or ISO 8601) or Unix seconds", "from/to") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def _apply(rec: KeyRecord, body: dict[str, Any]) -> None:
    """Validate and apply the editable fields of `body` to `rec`."""
    for field in body:
        if field not in _EDITABLE:
            raise _bad(f"unknown field {field!r}; known: {', '.join(_EDITABLE)}", field)
    for field in ("name", "team", "user"):
        if field in body:
            v = body[field]
            if v is not None and (not isinstance(v, str) or not v.strip() or len(v) > 200):
                raise _bad(f"{field} must be a non-empty string", field)
            setattr(rec, field, v)
    if "models" in body:
        m = body["models"]
        if m is not None and (not isinstance(m, list) or not all(isinstance(x, str) for x in m)):
            raise _bad("models must be a list of model names (or null for every model)", "models")
        rec.models = m
    for field in ("rpm", "tpm"):
        if field in body:
            v = body[field]
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise _bad(f"{field} must be a positive integer (or null for none)", field)
            setattr(rec, field, v)
    if "budget" in body:
        b = body["budget"]
        if b is None:
            rec.budget_usd = None
        else:
            if not isinstance(b, dict) or not isinstance(b.get("usd"), (int, float)) or isinstance(b.get("usd"), bool) \
                    or b["usd"] < 0:
                raise _bad("budget must be {usd: non-negative number, period: day|week|month|total}", "budget")
            period = b.get("period", "month")
            if period not in PERIODS:
                raise _bad(f"budget.period must be one of {', '.join(PERIODS)}", "budget.period")
            rec.budget_usd, rec.budget_period = float(b["usd"]), period
    if "metadata" in body:
        if not isinstance(body["metadata"], dict):
            raise _bad("metadata must be an object", "metadata")
        rec.metadata = body["metadata"]
    if "expires_in" in body:
        e = body["expires_in"]
        if e is not None and (not isinstance(e, (int, float)) or isinstance(e, bool) or e < 0):
            raise _bad("expires_in must be a number of seconds >= 0 (0: now; null: never)", "expires_in")
        rec.expires_at = time.time() + e if e is not None else None


def master_key_check(master: str | None, denied: Callable[[], None] | None = None,
                     off: str = "The admin API is off: set governance.master_key.") -> Callable[[RouteRequest], None]:
    """`authorise(request)` for an admin route: returns if the request carries `Authorization:
    Bearer <master>`, else raises 401 (`denied()` is called first), or 403 (message `off`) when
    no master key is set. Every /admin route checks with it (governance's here, the dashboard's,
    the cache's)."""
    master_digest = hashlib.sha256(master.encode()).digest() if master else None

    def authorise(request: RouteRequest) -> None:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if master_digest is None:
            raise GatewayError(403, off, type="permission_error", code="admin_disabled")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest(), master_digest):
            if denied is not None:
                denied()
            raise GatewayError(401, "The admin API needs the master key: Authorization: Bearer <master key>.",
                               code="invalid_master_key")

    return authorise


def register_admin_routes(gov: Governance, services: Services) -> None:
    def denied() -> None:
        gov.stats_counts["admin_denied"] += 1

    authorise = master_key_check(gov.gov.master_key, denied)

    def actor(ctx: RequestContext) -> str:
        return f"admin@{ctx.client.rsplit(':', 1)[0]}"

    async def changed(ctx: RequestContext, action: str, rec: KeyRecord, detail: dict[str, Any]) -> None:
        await gov.store.save_key(rec) if action != "key.created" else await gov.store.add_key(rec)
        await gov._counters("bump_generation")
        await gov.store.audit(actor(ctx), action, rec.id, detail)

    async def with_usage(rec: KeyRecord) -> dict[str, Any]:
        out = rec.public()
        if rec.budget_usd is not None:
            now = gov.clock.wall()
            pid, _, end = gov.periods.current(rec.budget_period, now)
            bkey = f"budget:key:{rec.id}:{pid}"
            await gov._seed(bkey, now)
            state = await gov._counters("budget", bkey) or (0, 0)
            out["budget"].update(committed_usd=state[0] / 1e6, spent_usd=state[1] / 1e6, period_id=pid,
                                 resets_at=None if end == float("inf") else end)
        return out

    async def load(request: RouteRequest) -> KeyRecord:
        rec = await gov.store.key(request.params["id"])
        if rec is None:
            raise GatewayError(404, f"No key with id {request.params['id']!r}.", code="not_found")
        return rec

    async def create(ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        authorise(request)
        body = await request.json()
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object")
        if not isinstance(body.get("name"), str) or not body["name"].strip():
            raise _bad("name is required (a non-empty string)", "name")
        key = new_key()
        rec = KeyRecord(new_key_id(), body["name"], digest(key), key[-4:])
        _apply(rec, body)
        await changed(ctx, "key.created", rec, {"name": rec.name, "team": rec.team, "user": rec.user})
        return RouteResponse({**await with_usage(rec), "key": key}, status=201)

    async def listing(ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        authorise(request)
        return RouteResponse({"object": "list", "data": [await with_usage(r) for r in await gov.store.keys()]})

    async def show(ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        authorise(request)
        return RouteResponse(await with_usage(await load(request)))

    async def update(ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        authorise(request)
        rec = await load(request)
        body = await request.json()
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object")
        _apply(rec, body)
        await changed(ctx, "key.updated", rec, {"fields": sorted(body)})
        return RouteResponse(await with_usage(rec))

    async def rotate(ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        authorise(request)
        old = await load(request)
        if old.revoked_at is not None:
            raise GatewayError(409, f"Key {old.id} is revoked; create a new one.", code="key_revoked")
        key = new_key()
        new = KeyRecord(new_key_id(), old.name, digest(key), key[-4:], old.team, old.user, old.models, old.metadata,
                        old.rpm, old.tpm, old.budget_usd, old.budget_period, expires_at=old.expires_at,
                        rotated_from=old.id)
        old.revoked_at = time.time()
        await gov.store.add_key(new)
        await changed(ctx, "key.rotated", old, {"new_id": new.id})
        return RouteResponse({**await with_usage(new), "key": key}, status=201)

    async def revoke(ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        authorise(request)
        rec = await load(request)
        if rec.revoked_at is None:
            rec.revoked_at = time.time()
            await changed(ctx, "key.revoked", rec, {})
        return RouteResponse(rec.public())

    async def spend(ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        authorise(request)
        q = request.query
        group_by = q.get("group_by", "key")
        if group_by not in GROUP_BY:
            raise _bad(f"group_by must be one of {', '.join(GROUP_BY)}", "group_by")
        since, until = parse_when(q.get("from"), 0.0), parse_when(q.get("to"), time.time() + 86400)
        rows = await gov.store.spend(group_by, since, until)
        total = sum(r["cost_usd"] for r in rows)
        return RouteResponse({"object": "list", "group_by": group_by, "from": since, "to": until, "total_usd": total,
                              "data": rows})

    async def audit(ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        authorise(request)
        limit = min(int(request.query.get("limit", "100") or 100), 1000)
        return RouteResponse({"object": "list", "data": await gov.store.audit_log(limit)})

    async def recent(ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        authorise(request)
        q = dict(request.query)
        limit = min(int(q.pop("limit", "100") or 100), 1000)
        filters = {k: v for k, v in q.items() if k in ("key", "model", "status", "team", "user") and v}
        return RouteResponse({"object": "list", "data": await gov.store.recent(limit, filters)})

    for method, path, handler in (
        ("POST", "/admin/keys", create), ("GET", "/admin/keys", listing), ("GET", "/admin/keys/{id}", show),
        ("PATCH", "/admin/keys/{id}", update), ("POST", "/admin/keys/{id}/rotate", rotate),
        ("DELETE", "/admin/keys/{id}", revoke), ("GET", "/admin/spend", spend), ("GET", "/admin/audit", audit),
        ("GET", "/admin/requests", recent),
    ):
        services.add_route(method, path, handler)
