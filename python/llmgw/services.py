"""App-scoped services: one object per worker, built once, alive until the worker stops.

A configuration reload swaps what comes from the config (routes to models, plugin instances
whose config entry changed, upstreams that changed) and keeps what lives here: state a plugin
asked to keep (`keep`), the rate limiter, background queues and tasks, routes plugins added.
Plugins receive a view of this object scoped to themselves (`startup(services)`); what a
plugin started — routes, tasks, queues — is stopped with it when it is unloaded.

Background queues (`queue`) are how slow work leaves the request path: a bounded in-memory
queue, flushed in batches by a task; a full queue counts and reports what it drops, never
silently; shutting down flushes what is left before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, TypeVar

import orjson

from llmgw._core import RateLimiter
from llmgw.clock import Clock

if TYPE_CHECKING:
    from llmgw.config import Config
    from llmgw.exchange import RequestContext
    from llmgw.http.server import HttpRequest

__all__ = ["BackgroundQueue", "RetryLater", "RouteRequest", "RouteResponse", "Services"]

log = logging.getLogger("llmgw")
T = TypeVar("T")


@dataclass(slots=True)
class RouteRequest:
    """A request to a route a plugin registered: `params` holds the `{name}` parts of its path."""

    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]
    http: HttpRequest
    max_body: int = 1 << 20

    async def body(self) -> bytes:
        from llmgw.http.server import BodyTooLarge

        try:
            return await self.http.read_body(self.max_body)
        except BodyTooLarge:
            from llmgw.errors import GatewayError

            raise GatewayError(413, f"Request body is larger than {self.max_body} bytes.", code="request_too_large") \
                from None

    async def json(self) -> Any:
        """The body as JSON (an empty body reads as {}); a GatewayError 400 if it is not JSON."""
        from llmgw.errors import GatewayError

        raw = await self.body()
        if not raw.strip():
            return {}
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(400, f"The request body is not valid JSON: {exc}.", code="invalid_json") from None


@dataclass(slots=True)
class RouteResponse:
    """What a route handler answers: `body` is JSON-encoded unless it is bytes or str."""

    body: Any = None
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return orjson.dumps(self.body)


RouteHandler = Callable[["RequestContext", RouteRequest], Awaitable[RouteResponse]]


@dataclass(slots=True)
class _Route:
    method: str
    pattern: str
    regex: re.Pattern[str] | None
    handler: RouteHandler
    owner: str | None
    prefix: str = ""  # the literal text before the first {name}: most paths are ruled out by it
    listener: str = "main"  # "main": the gateway's port; "metrics": observability.metrics.port


class RetryLater(Exception):
    """Raised by a queue's flush when it cannot take the batch right now (a lock held elsewhere):
    the batch is kept and tried again shortly, without an error in the log."""


class BackgroundQueue:
    """A bounded queue of items flushed in batches off the request path (see the module docstring).

    `flush(batch)` (plain or async) is called with up to `batch` items at least every `interval`
    seconds while items wait; if it raises, the batch is kept and retried after a pause (items
    beyond `max_items` are then dropped and counted). `put` never blocks: False means dropped.
    """

    def __init__(self, name: str, flush: Callable[[list[Any]], Any], *, max_items: int = 100_000, batch: int = 500,
                 interval: float = 1.0) -> None:
        self.name = name
        self._flush = flush
        self.max_items = max_items
        self.batch = batch
        self.interval = interval
        self._items: list[Any] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.flushed = 0
        self.failures = 0
        self.busy = 0  # flushes put off by RetryLater
        self._last_failed = False
        self._last_drop_log = 0.0

    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"queue:{self.name}")

    def put(self, item: Any) -> bool:
        if len(self._items) >= self.max_items:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log >= 60:
                self._last_drop_log = now
                log.error("queue %s is full (%d items): dropped %d so far", self.name, self.max_items, self.dropped)
            return False
        self._items.append(item)
        if self._wake is not None and len(self._items) >= self.batch:
            self._wake.set()
        return True

    @property
    def depth(self) -> int:
        return len(self._items)

    async def _flush_batch(self) -> bool:
        batch = self._items[: self.batch]
        try:
            out = self._flush(batch)
            if asyncio.iscoroutine(out):
                await out
        except RetryLater:
            self.busy += 1
            self._last_failed = False
            return False
        except Exception as exc:
            self._last_failed = True
            self.failures += 1
            if not getattr(exc, "already_logged", False):  # an exporter that logs its own failures (once a minute)
                log.exception("queue %s: flushing %d items failed; will retry", self.name, len(batch))
            return False
        del self._items[: len(batch)]
        self.flushed += len(batch)
        return True

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            while self._items:
                if not await self._flush_batch():
                    await asyncio.sleep(min(self.interval * 2, 5.0) if self._last_failed else 0.01)
                    break

    async def drain(self, timeout: float = 30.0) -> None:
        """Stop the flusher and flush everything left (tried until `timeout`)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        deadline = time.monotonic() + timeout
        while self._items and time.monotonic() < deadline:
            if not await self._flush_batch():
                await asyncio.sleep(0.2 if self._last_failed else 0.01)
        if self._items:
            log.error("queue %s: %d items could not be flushed before shutdown", self.name, len(self._items))

    def stats(self) -> dict[str, int]:
        return {"depth": len(self._items), "dropped": self.dropped, "flushed": self.flushed, "failures": self.failures,
                "busy": self.busy}


class _Registry:
    """What every scoped view of one worker's Services shares."""

    def __init__(self, worker_id: int, workers: int, clock: Clock) -> None:
        self.worker_id = worker_id
        self.workers = workers
        self.clock = clock
        self.limiter = RateLimiter()
        self.kept: dict[str, Any] = {}
        self.routes: list[_Route] = []
        self.tasks: list[tuple[str | None, asyncio.Task[Any]]] = []
        self.queues: list[tuple[str | None, BackgroundQueue]] = []
        self.finishing: set[asyncio.Task[Any]] = set()  # async on_finish hooks still running
        self.config: Config | None = None
        self.stats_sources: dict[str, Callable[[], dict[str, Any]]] = {}
        self.route_paths: frozenset[str] = frozenset()  # exact paths of the routes
        self.route_prefixes: tuple[str, ...] = ()  # literal prefixes of the routes with {params}
        self.audit_sink: Callable[[str, str, str | None, dict[str, Any]], None] | None = None
        self.model_caller: Callable[..., Awaitable[dict[str, Any]]] | None = None

    def index_routes(self) -> None:
        main = [r for r in self.routes if r.listener == "main"]
        self.route_paths = frozenset(r.pattern for r in main if r.regex is None)
        self.route_prefixes = tuple({r.prefix for r in main if r.regex is not None})


class Services:
    """The app-scoped services of one worker (see the module docstring). Plugins get a view
    scoped to themselves; `owner` names it (None for the gateway's own)."""

    def __init__(self, worker_id: int = 0, workers: int = 1, *, clock: Clock | None = None,
                 _registry: _Registry | None = None, owner: str | None = None) -> None:
        self._reg = _registry or _Registry(worker_id, workers, clock or Clock())
        self.owner = owner

    def scoped(self, owner: str) -> Services:
        return Services(_registry=self._reg, owner=owner)

    # -- facts ----------------------------------------------------------------------------------
    @property
    def worker_id(self) -> int:
        return self._reg.worker_id

    @property
    def workers(self) -> int:
        return self._reg.workers

    @property
    def clock(self) -> Clock:
        """The worker's clock (tests replace it): monotonic `now()`, `wall()`, `sleep()`."""
        return self._reg.clock

    @property
    def limiter(self) -> RateLimiter:
        """The worker's Rust rate limiter (one, shared by every plugin)."""
        return self._reg.limiter

    @property
    def config(self) -> Config:
        """The configuration now serving (replaced on every successful reload)."""
        assert self._reg.config is not None
        return self._reg.config

    async def call_model(self, model: str, body: dict[str, Any], *, kind: str = "chat",
                         timeout: float = 10.0) -> dict[str, Any]:
        """Call a configured model group (kind "chat" or "embeddings", OpenAI-shaped `body`
        without "model") through the gateway's routing and upstream pools, not through the
        plugin chain; the OpenAI-shaped answer. Raises GatewayError when no deployment answers
        within `timeout` seconds. For plugins that need a model: an LLM judge, embeddings."""
        caller = self._reg.model_caller
        if caller is None:
            raise RuntimeError("no gateway is serving yet")
        return await caller(model, body, kind, timeout)

    def set_model_caller(self, caller: Callable[..., Awaitable[dict[str, Any]]]) -> None:
        """The gateway serving now registers its `call_model` (the newest configuration wins)."""
        self._reg.model_caller = caller

    # -- state that outlives reloads ----------------------------------------------------------------
    def keep(self, name: str, factory: Callable[[], T]) -> T:
        """The object kept under `name`, created by `factory()` the first time: state that should
        survive a plugin being re-created by a reload (counters, caches, buckets). If it has an
        async `aclose()`, that is called when the worker stops."""
        kept = self._reg.kept
        if name not in kept:
            kept[name] = factory()
        return kept[name]  # type: ignore[no-any-return]

    def peek(self, name: str) -> Any:
        """The object kept under `name`, or None (without creating it)."""
        return self._reg.kept.get(name)

    # -- routes -----------------------------------------------------------------------------------
    def add_route(self, method: str, path: str, handler: RouteHandler, *, listener: str = "main") -> None:
        """Serve `method path` with `handler(ctx, RouteRequest) -> RouteResponse` (async). `{name}`
        in the path matches one path segment, given in `request.params`. Removed when the
        plugin that added it is unloaded. `listener="metrics"` serves it on the metrics port
        (observability.metrics.port) instead of the gateway's."""
        regex = None
        if "{" in path:
            regex = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$")
        self._reg.routes.append(_Route(method.upper(), path, regex, handler, self.owner, path.split("{", 1)[0],
                                       listener))
        self._reg.index_routes()

    def find_route(self, method: str, path: str,
                   listener: str = "main") -> tuple[_Route | None, dict[str, str], list[str]]:
        """The route for (method, path) on `listener`, its params, and the methods the path allows."""
        reg = self._reg
        if listener == "main" and path not in reg.route_paths and not path.startswith(reg.route_prefixes):
            return None, {}, []  # every model request: one set lookup and one startswith
        allowed: list[str] = []
        found: tuple[_Route | None, dict[str, str]] = (None, {})
        for route in reg.routes:
            if route.listener != listener:
                continue
            if route.regex is None:
                if route.pattern != path:
                    continue
                params: dict[str, str] = {}
            else:
                m = route.regex.match(path)
                if m is None:
                    continue
                params = m.groupdict()
            allowed.append(route.method)
            if route.method == method and found[0] is None:
                found = (route, params)
        return found[0], found[1], allowed

    # -- background work ----------------------------------------------------------------------------
    def start_task(self, coro: Coroutine[Any, Any, Any], *, name: str = "") -> asyncio.Task[Any]:
        """Run `coro` in the background until it ends or its plugin is unloaded (then cancelled)."""
        task = asyncio.get_running_loop().create_task(coro, name=name or f"{self.owner or 'gateway'}:task")
        self._reg.tasks.append((self.owner, task))
        return task

    def queue(self, name: str, flush: Callable[[list[Any]], Any], *, max_items: int = 100_000, batch: int = 500,
              interval: float = 1.0) -> BackgroundQueue:
        """A started BackgroundQueue; flushed to the last item when its plugin is unloaded or the
        worker stops."""
        q = BackgroundQueue(name, flush, max_items=max_items, batch=batch, interval=interval)
        q.start()
        self._reg.queues.append((self.owner, q))
        return q

    def queues(self) -> list[BackgroundQueue]:
        return [q for _, q in self._reg.queues]

    def add_stats(self, name: str, source: Callable[[], dict[str, Any]]) -> None:
        """Publish a stats source (read by /metrics and the dashboard)."""
        self._reg.stats_sources[name] = source

    def stats(self) -> dict[str, dict[str, Any]]:
        out = {name: source() for name, source in self._reg.stats_sources.items()}
        for _, q in self._reg.queues:
            out[f"queue:{q.name}"] = q.stats()
        return out

    # -- the audit log ------------------------------------------------------------------------------
    def set_audit_sink(self, sink: Callable[[str, str, str | None, dict[str, Any]], None]) -> None:
        """Where `audit` writes (governance registers its audit log)."""
        self._reg.audit_sink = sink

    def clear_audit_sink(self, sink: Callable[..., None]) -> None:
        """Remove `sink`, unless another one (a reloaded plugin's) has replaced it already."""
        if self._reg.audit_sink == sink:
            self._reg.audit_sink = None

    def audit(self, actor: str, action: str, subject: str | None, detail: dict[str, Any]) -> bool:
        """Record a policy decision (who, what, about what; never secrets or raw sensitive text)
        in the audit log; False when no audit log is configured."""
        sink = self._reg.audit_sink
        if sink is None:
            return False
        sink(actor, action, subject, detail)
        return True

    def track_finish(self, task: asyncio.Task[Any]) -> None:
        reg = self._reg
        reg.finishing.add(task)
        task.add_done_callback(reg.finishing.discard)

    async def release(self, owner: str) -> None:
        """Stop what `owner` started: its routes go, its tasks are cancelled, its queues drained."""
        reg = self._reg
        reg.routes = [r for r in reg.routes if r.owner != owner]
        reg.index_routes()
        mine = [t for o, t in reg.tasks if o == owner]
        reg.tasks = [(o, t) for o, t in reg.tasks if o != owner]
        for task in mine:
            task.cancel()
        await asyncio.gather(*mine, return_exceptions=True)
        queues = [q for o, q in reg.queues if o == owner]
        reg.queues = [(o, q) for o, q in reg.queues if o != owner]
        for q in queues:
            await q.drain()

    async def close(self) -> None:
        """The worker is stopping: finish hooks complete, every queue is flushed, tasks end."""
        reg = self._reg
        if reg.finishing:
            await asyncio.wait(list(reg.finishing), timeout=10.0)
        for owner in {o for o, _ in reg.tasks} | {o for o, _ in reg.queues}:
            await self.release(owner)  # type: ignore[arg-type]
        for name, obj in list(reg.kept.items()):  # kept state with an async aclose() is closed last
            aclose = getattr(obj, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    log.exception("closing kept %s failed", name)
