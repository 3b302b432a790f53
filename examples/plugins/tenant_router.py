"""An example llmgw plugin: a tenant-aware router. Each tenant's requests go to its own model
group: research to the big model, support to the small one, everyone else where they asked.
Hook: pre_request (plain, no I/O: a few dict lookups per request).

    plugins:
      - target: plugins.tenant_router:TenantRouter
        options:
          teams: {research: big, support: small}   # tenant -> model group (a name under `models:`)
          keys: {batch-jobs: small}                # API key name -> group; wins over the team
          header: x-tenant                         # the tenant of callers that have no team
          default: null                            # group for other callers; null: leave them be
          models: [auto]                           # route only requests for these names; null: all

The tenant is the caller's team (`ctx.team`, set from its virtual key by governance), or, for a
caller without one, the value of `header` — a header any client can set, so use it only behind a
proxy that sets it, or where the choice of group is not a privilege. A request that names no
tenant in `teams` goes to `default` (if set) or stays as it is.

Routing means setting `request.model` to the group: the gateway then plans the request again
(the group's rules, strategy and fallbacks apply) and checks the new group against the models
the caller's key may use — a key that may not use the tenant's group gets 403
`model_not_allowed` from the gateway itself, and a group that is not configured a 404. With
`models: [auto]` clients ask for `model: "auto"`, which need not be a configured group (it must be
among a restricted key's models, which are checked before this hook runs). A caller that chose a
group itself with the `x-llmgw-model` header is left alone (the planner reads that header first).

For a fixed rule inside one group, the config's routing rules (`rules: [{when: {team: research},
use: big}]`) do the same without code; a plugin is for mappings across every model, from
headers, or computed from something the config cannot express.
"""

from __future__ import annotations

from typing import Any

from llmgw.plugins import Plugin


class TenantRouter(Plugin):
    name = "tenant-router"
    # Not read_only: a new model name is a change to the request (its body goes upstream rewritten
    # with the chosen deployment's model name).

    def __init__(self, teams: dict[str, str] | None = None, keys: dict[str, str] | None = None,
                 header: str | None = None, default: str | None = None, models: list[str] | None = None,
                 **options: Any) -> None:
        super().__init__(**options)
        for what, mapping in (("teams", teams), ("keys", keys)):
            if mapping is not None and not (isinstance(mapping, dict)
                                            and all(isinstance(v, str) for v in mapping.values())):
                raise TypeError(f"{what} must map names to model groups")
        self.teams = {str(k): v for k, v in (teams or {}).items()}
        self.keys = {str(k): v for k, v in (keys or {}).items()}
        self.header = header.lower() if header else None  # request headers arrive with lower-case names
        self.default = default
        self.models = frozenset(models) if models is not None else None

    def pre_request(self, ctx, request):
        if self.models is not None and request.model not in self.models:
            return None
        if "x-llmgw-model" in request.headers:
            return None
        group = self.keys.get(ctx.key_name) if ctx.key_name is not None else None
        if group is None:
            tenant = ctx.team
            if tenant is None and self.header is not None:
                tenant = request.headers.get(self.header)
            group = self.teams.get(tenant, self.default) if tenant is not None else self.default
        if group is not None and group != request.model:
            request.model = group  # the gateway re-plans, and re-checks the key's models
        return None
