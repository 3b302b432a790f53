"""The dashboard plugin: the browser UI at /ui and the admin endpoints it reads (`api`).

Built in, loaded whenever `governance` is configured (the admin API, and its master key, exist
only then). It serves:

- `GET /ui`, `/ui/` (index.html) and `/ui/<file>` (up to three path segments): the files of
  `static/`, or of the folder named by `LLMGW_DASHBOARD_DIR` (to work on the UI). Only files
  that exist there with a known type (.html .js .css .svg .png .ico) are served, looked up by
  the raw path as a key of the folder's listing: nothing in a request path is ever joined to a
  file path, so `..`, `%2e%2e` or an absolute path cannot leave the folder (404). No
  authentication (the files hold no data; the UI asks for the master key and sends it to the
  admin API); `cache-control: no-cache`, a strict content security policy (no inline script,
  nothing from elsewhere), `x-frame-options: DENY`, `x-content-type-options: nosniff`.
- the admin endpoints in `llmgw.dashboard.api`, with the master key.

On the request path it does one thing: `on_finish` appends one tuple of references (the
request id, its perf-counter times, status, plan, attempts list, error) to a ring of the last
`api.RECENT` requests, for the request detail's attempts and the diagram's live figures —
~0.2 µs a request (see `on_finish`). Nothing else runs per request, and nothing at all for
the overview until someone opens it (the ledger store is opened on first use).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import llmgw.dashboard.api as api
from llmgw.errors import GatewayError
from llmgw.plugins.api import Plugin
from llmgw.services import RouteResponse

if TYPE_CHECKING:
    from llmgw.config import Config
    from llmgw.exchange import Outcome, RequestContext
    from llmgw.services import RouteRequest, Services

__all__ = ["DIR_ENV", "Dashboard", "STATIC"]

log = logging.getLogger("llmgw")

STATIC = Path(__file__).resolve().parent / "static"
DIR_ENV = "LLMGW_DASHBOARD_DIR"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                 ".ico": "image/x-icon"}
STATIC_HEADERS = [
    ("cache-control", "no-cache"),
    ("content-security-policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
]
_DIAGRAM_TYPES = {"svg": "image/svg+xml", "mermaid": "text/plain; charset=utf-8"}


def static_files(root: Path) -> dict[str, Path]:
    """The servable files under `root`: relative POSIX path -> file (regular files of a known
    type, no dot-files, nothing that resolves outside `root`)."""
    out: dict[str, Path] = {}
    try:
        base = root.resolve(strict=True)
    except OSError:
        return out
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath, name)
            if name.startswith(".") or path.suffix.lower() not in CONTENT_TYPES:
                continue
            try:
                real = path.resolve(strict=True)
            except OSError:
                continue
            if real.is_file() and real.is_relative_to(base):
                out[path.relative_to(base).as_posix()] = real
    return out


class Dashboard(Plugin):
    """See the module docstring. Options: `config` (the gateway's Config)."""

    name = "dashboard"
    kinds = frozenset({"chat", "embeddings"})
    read_only = True

    def __init__(self, config: Config, **options: Any) -> None:
        super().__init__(**options)
        assert config.governance is not None
        self.gov = config.governance
        self.services: Services | None = None
        self.recent = api.RecentRequests()
        self.store: Any = None
        self.tail: api.LedgerTail | None = None
        self._store_lock = asyncio.Lock()
        self.root = Path(os.environ.get(DIR_ENV) or STATIC)
        self.authorise: Any = None

    def same_config(self, config: Config) -> bool:
        return config.governance == self.gov

    # -- lifecycle ----------------------------------------------------------------------------------
    def startup(self, services: Services) -> None:
        from llmgw.governance.admin import master_key_check

        self.services = services
        # The ring outlives a reload that re-creates this plugin (a request's detail stays readable).
        self.recent = services.keep("dashboard.recent", api.RecentRequests)
        self._append = self.recent.ring.append
        self.authorise = master_key_check(self.gov.master_key)
        for path in ("/ui", "/ui/", "/ui/{a}", "/ui/{a}/{b}", "/ui/{a}/{b}/{c}"):
            services.add_route("GET", path, self._static)
        for path, handler in (("/admin/overview", self._overview), ("/admin/routing", self._routing),
                              ("/admin/diagram", self._diagram), ("/admin/requests/{request_id}", self._request)):
            services.add_route("GET", path, handler)
        services.start_task(self._forget_when_idle(), name="dashboard:idle")

    async def shutdown(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def _ledger(self) -> Any:
        """The ledger store, opened on first use: a dashboard nobody opens costs no connection."""
        if self.store is None:
            async with self._store_lock:
                if self.store is None:
                    from llmgw.governance.stores import open_store

                    gov = self.gov
                    store = open_store(gov.store, gov.sqlite_path, gov.postgres_dsn)
                    await store.open()
                    self.tail = api.LedgerTail(store, settle=2.0 + 2.0 * gov.ledger.interval)
                    self.store = store
        return self.store

    async def _forget_when_idle(self) -> None:
        while True:  # real time, not services.clock: a test's fake clock must not spin this loop
            await asyncio.sleep(60.0)
            tail = self.tail
            if tail is not None and tail.settled is not None and time.monotonic() - tail.used_at >= api.IDLE_S:
                async with tail.lock:
                    tail.clear()

    # -- the request path -------------------------------------------------------------------------
    def on_finish(self, ctx: RequestContext, outcome: Outcome) -> None:
        """One tuple of references into the ring; the formatting happens when someone asks. It
        reads the runner's fields itself, as observability does: timeit, 0.18 µs a call, against
        0.52 µs through Outcome's status, overhead_s and error properties."""
        run = outcome._run
        self._append((ctx.request_id, ctx.started, outcome.ended, ctx.first_byte_at, ctx.upstream_s, run.client_s,
                      run.status if run.http.responded else 499, ctx.plan, ctx.attempts, ctx.model, run.error))

    # -- the UI's files -----------------------------------------------------------------------------
    async def _static(self, ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        params = request.params
        rel = "/".join(params[k] for k in ("a", "b", "c") if k in params) or "index.html"
        files = static_files(self.root)
        path = files.get(rel)
        if path is None:
            if rel == "index.html":
                raise GatewayError(404, "The dashboard's files are not installed here (no index.html in its static "
                                   "folder); the admin API under /admin works without them.", code="not_found")
            raise GatewayError(404, f"No dashboard file {rel!r}.", code="not_found")
        body = await asyncio.to_thread(path.read_bytes)
        return RouteResponse(body, content_type=CONTENT_TYPES[path.suffix.lower()], headers=list(STATIC_HEADERS))

    # -- the admin endpoints ------------------------------------------------------------------------
    async def _overview(self, ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        self.authorise(request)
        raw = request.query.get("window", "3600")
        try:
            window = int(raw)
        except ValueError:
            window = -1
        if window not in api.OVERVIEW_STEPS:
            raise api.bad_request(f"window must be one of {', '.join(map(str, api.OVERVIEW_STEPS))} (seconds)",
                                  "window")
        await self._ledger()
        tail = self.tail
        assert tail is not None and self.services is not None
        groups = list(self.services.config.models)
        async with tail.lock:  # several tabs at once: one read of the ledger, one computation a second
            now = time.time()
            tail.used_at = time.monotonic()
            known = tail.results.get(window)
            if known is not None and now - known[0] < 1.0 and known[1]["groups"] == groups:
                return RouteResponse(known[1])
            if now - tail.refreshed_at >= 1.0:
                await tail.refresh(now)
            out = await asyncio.to_thread(tail.compute, window, now, groups)
            tail.results[window] = (now, out)
        return RouteResponse(out)

    async def _routing(self, ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        self.authorise(request)
        assert self.services is not None
        return RouteResponse(api.routing_view(self.services))

    async def _diagram(self, ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        self.authorise(request)
        services = self.services
        assert services is not None
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "svg", "mermaid"):
            raise api.bad_request("format must be json, svg or mermaid", "format")
        live = api.diagram_live(services, self.recent)
        if fmt == "json":
            return RouteResponse({**api.diagram_json(services.config, live), "worker": services.worker_id})
        from llmgw.diagram import diagram_model, to_mermaid, to_svg

        d = diagram_model(services.config, live)
        text = to_svg(d) if fmt == "svg" else to_mermaid(d)
        return RouteResponse(text, content_type=_DIAGRAM_TYPES[fmt],
                             headers=[("x-content-type-options", "nosniff"), ("cache-control", "no-store")])

    async def _request(self, ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        self.authorise(request)
        assert self.services is not None
        raw = request.query.get("since")
        since = None
        if raw:
            from llmgw.governance.admin import parse_when

            since = parse_when(raw, 0.0)
        store = await self._ledger()
        return RouteResponse(await api.request_detail(store, self.recent, self.services, request.params["request_id"],
                                                      since))
