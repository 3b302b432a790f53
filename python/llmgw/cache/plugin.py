"""The response cache: a built-in plugin on the public plugin API (`cache:` in the config).

    pre_request    Cache-Control → cacheable? → namespace and keys → exact lookup (this worker,
                   then Redis) → semantic lookup (embed, nearest neighbours in the tenant's scope,
                   near-miss guards, optional verifier) → a hit answers (a stream is replayed as
                   SSE chunks) → a miss joins an identical request in flight, or leads one
    on_chunk       a leader's stream is recorded (and shared with its followers)
    post_response  a complete, successful answer is stored, locally and for the other workers
    on_finish      a leader that failed releases its followers

It is last in the chain (after authentication, governance, guardrails and user plugins), next to
the upstream: what it stores is the upstream's answer, and every plugin before it still runs on a
hit (rate limits, budgets, guardrails on the answer). Hits and saved cost go to
`ctx.metadata["cache"]` / `["cache_saved_usd"]`, which the ledger and the metrics read; a hit's
usage is zero, so nothing is billed as upstream cost.

Responses carry `x-llmgw-cache: hit | semantic-hit | miss | bypass`, and on hits
`x-llmgw-cache-similarity`, `x-llmgw-cache-saved-usd` and `x-llmgw-cache-age` (seconds).

Request headers: `Cache-Control: no-store` bypasses the cache (no lookup, nothing stored);
`no-cache` asks the upstream and stores the fresh answer (a refresh); `max-age=N` accepts only
entries younger than N seconds.

Rules for answers that may differ run to run: `n` > 1 and `temperature` above
`cache.max_temperature` are not cached; `seed` and every sampling parameter are part of the key
(a different seed never shares an entry). Answers with tool calls are stored only with
`tool_calls: true`; answers cut by a content filter, errors and streams that did not end
normally never are.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import re
from collections import OrderedDict
from typing import Any

import numpy as np
import orjson

from llmgw.cache.defaults import LEXICAL_THRESHOLD, MINILM_THRESHOLD
from llmgw.cache.flight import Flight
from llmgw.cache.key import RequestKey, cacheability, request_key
from llmgw.cache.nearmiss import SOFT_REASONS, NearMissGuard, analyse
from llmgw.cache.store import Entry, LocalStore
from llmgw.config import Config
from llmgw.errors import GatewayError
from llmgw.exchange import ChatRequest, ChatResponse, Outcome, RequestContext, Usage
from llmgw.governance.pricing import PriceBook
from llmgw.observability.metrics import DIR_ENV
from llmgw.plugins.api import Plugin
from llmgw.services import RouteRequest, RouteResponse, Services
from llmgw.streaming import chunks_as_response

__all__ = ["Cache"]

log = logging.getLogger("llmgw.cache")

_TEAM_HEADER = "x-llmgw-team"
_SANE = re.compile(r"^[\w.@:+\-]{1,128}$")
_DIRECTIVE = re.compile(r"\s*([a-z\-]+)\s*(?:=\s*\"?(\d+)\"?)?\s*", re.I)


def _cache_control(value: str | None) -> dict[str, int | None]:
    if not value:
        return {}
    out: dict[str, int | None] = {}
    for part in value.split(","):
        m = _DIRECTIVE.fullmatch(part)
        if m:
            out[m.group(1).lower()] = int(m.group(2)) if m.group(2) else None
    return out


class _Request:
    """What the plugin keeps about one request (ctx.metadata["cache.req"])."""

    __slots__ = ("key", "group", "ttl", "vector", "shape", "flight", "stream_chunks")

    def __init__(self, key: RequestKey, group: str, ttl: float | None) -> None:
        self.key, self.group, self.ttl = key, group, ttl
        self.vector: np.ndarray | None = None
        self.shape: Any = None  # the guards' analysis of key.text, kept for the entry
        self.flight: Flight | None = None  # set when this request leads a flight
        self.stream_chunks: list[dict[str, Any]] | None = None


class CacheState:
    """What outlives a reload (kept in services): the entries, the flights, the sharing and the counts."""

    def __init__(self, fingerprint: tuple[Any, ...], store: LocalStore) -> None:
        self.fingerprint = fingerprint
        self.store = store
        self.flights: dict[bytes, Flight] = {}
        self.replicator: Any = None
        self.embedder: Any = None
        self.counts: dict[str, float] = {"hit": 0, "semantic-hit": 0, "miss": 0, "bypass": 0, "coalesced": 0,
                                         "stored": 0, "saved_usd": 0.0, "verifier_calls": 0, "guard_rejects": 0}

    async def close(self) -> None:
        if self.replicator is not None:
            await self.replicator.close()
            self.replicator = None
        if self.embedder is not None and hasattr(self.embedder, "close"):
            self.embedder.close()
            self.embedder = None


class ProviderEmbedder:
    """Embeddings from a configured model group (OpenAI, Azure, Gemini, or an OpenAI-compatible
    /v1/embeddings: Ollama, TEI, vLLM), called through the gateway's own routing and pools."""

    name = "provider"

    def __init__(self, services: Services, model: str) -> None:
        self.services, self.model = services, model

    async def aembed(self, texts: list[str]) -> np.ndarray:
        answer = await self.services.call_model(self.model, {"input": texts}, kind="embeddings")
        rows = sorted(answer.get("data") or [], key=lambda d: d.get("index", 0))
        vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise GatewayError(502, f"embeddings model {self.model!r} answered {len(vectors)} vectors for "
                                    f"{len(texts)} texts", code="upstream_protocol_error")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1, norms)

    def close(self) -> None:
        pass


class LlmJudge:
    """The verifier as an LLM judge: asks a model group whether two prompts deserve the same
    answer. Fails safe: any error or an unclear reply is "no" (a miss). Verdicts are memoised."""

    PROMPT = ("You decide whether a cached answer may be reused. Reply with exactly one word: YES if the two "
              "requests below ask for the same thing and deserve the same answer, NO if any detail differs "
              "that could change the answer (a number, a name, a negation, the direction, the language, the "
              "scope).\n\nRequest A:\n{a}\n\nRequest B:\n{b}")

    def __init__(self, services: Services, model: str, memo: int = 10_000) -> None:
        self.services, self.model, self.memo_size = services, model, memo
        self.memo: OrderedDict[tuple[str, str], bool] = OrderedDict()

    async def verify(self, new: str, cached: str, similarity: float) -> bool:
        pair = (new, cached)
        if pair in self.memo:
            return self.memo[pair]
        try:
            answer = await self.services.call_model(self.model, {
                "messages": [{"role": "user", "content": self.PROMPT.format(a=cached, b=new)}],
                "max_tokens": 3, "temperature": 0}, timeout=5.0)
            text = ((answer.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
        except Exception as exc:  # noqa: BLE001 - a judge that cannot answer says no
            log.warning("cache verifier %r failed: %s", self.model, type(exc).__name__)
            return False
        verdict = text.strip().lower().startswith("yes")
        self.memo[pair] = verdict
        if len(self.memo) > self.memo_size:
            self.memo.popitem(last=False)
        return verdict


class Cache(Plugin):
    name = "cache"
    read_only = True  # answers, sets headers and records; never changes a request or a chunk

    def __init__(self, config: Config) -> None:
        super().__init__()
        assert config.cache is not None
        self.cc = cc = config.cache
        self.config = config
        self.auth_on = config.governance is not None or bool(config.auth_keys)
        self.prices = PriceBook(config)
        sem = cc.semantic
        self.guard = NearMissGuard() if sem is not None and sem.guards else None
        self.default_threshold = (sem.threshold if sem is not None and sem.threshold is not None else
                                  MINILM_THRESHOLD if sem is not None and sem.embedder == "minilm" else LEXICAL_THRESHOLD)
        self.embed_mode = sem.embed if sem is not None else "last_user"
        self.verifier: Any = None
        self.state: CacheState | None = None
        self.services: Services | None = None
        from llmgw.governance.admin import master_key_check

        master = (config.governance.master_key if config.governance is not None else None) or \
            (os.environ.get(cc.admin_key_env) if cc.admin_key_env else None)
        self._authorise = master_key_check(
            master, off="The cache admin API is off: set governance.master_key or cache.admin_key_env.")

    def same_config(self, config: Config) -> bool:
        return config.cache == self.cc and config.models == self.config.models and \
            config.governance == self.config.governance and config.auth_keys == self.config.auth_keys

    # -- lifecycle ------------------------------------------------------------------------------------
    async def startup(self, services: Services) -> None:
        self.services = services
        cc = self.cc
        sem = cc.semantic
        fingerprint = (cc.max_entries, cc.max_bytes, cc.shared, cc.redis_url, cc.redis_prefix,
                       sem.embedder if sem is not None else None)
        holder: dict[str, CacheState] = services.keep("cache", dict)
        state = holder.get("state")
        if state is not None and state.fingerprint != fingerprint:
            await state.close()
            state = None
        if state is None:
            wall = services.clock.wall
            state = CacheState(fingerprint, LocalStore(max_entries=cc.max_entries, max_bytes=cc.max_bytes, wall=wall))
            if sem is not None:
                state.embedder = self._embedder(services, sem.embedder)
                if hasattr(state.embedder, "load"):  # the model now, not on the first request
                    await asyncio.to_thread(state.embedder.load)
            state.replicator = self._replicator(services)
            if state.replicator is not None:
                await state.replicator.start(self._apply_from(state))
            holder["state"] = state
        self.state = state
        if sem is not None and sem.verifier_model is not None:
            self.verifier = LlmJudge(services, sem.verifier_model).verify
        elif sem is not None and sem.verifier_target is not None:
            module, _, cls = sem.verifier_target.partition(":")
            obj = getattr(importlib.import_module(module), cls)()
            self.verifier = obj.verify
        services.add_stats("cache", self.stats)
        for method, path, handler in (("GET", "/admin/cache", self._admin_stats),
                                      ("DELETE", "/admin/cache", self._admin_flush),
                                      ("DELETE", "/admin/cache/namespaces/{namespace}", self._admin_flush)):
            services.add_route(method, path, handler)

    @staticmethod
    def _embedder(services: Services, name: str) -> Any:
        if name.startswith("model:"):
            return ProviderEmbedder(services, name.removeprefix("model:"))
        from llmgw.cache.embedders import make_embedder

        return make_embedder(name)

    def _replicator(self, services: Services) -> Any:
        cc = self.cc
        if cc.redis_url is not None:
            from llmgw.cache.shared import RedisReplicator

            # 10k events of ~3.3 KB on the stream: minutes of new entries; a replica that starts
            # later reads the entries themselves (its snapshot), not the stream.
            return RedisReplicator(cc.redis_url, prefix=cc.redis_prefix, stream_maxlen=10_000)
        path = None
        if cc.shared not in ("auto", "off"):
            path = cc.shared
        elif cc.shared == "auto" and services.workers > 1 and os.environ.get(DIR_ENV):
            # The supervisor's directory for this run, shared by its workers (metrics use it too).
            path = os.path.join(os.environ[DIR_ENV], "cache.sqlite")
        if path is None:
            return None
        from llmgw.cache.shared import SqliteReplicator

        return SqliteReplicator(path, wall=services.clock.wall)

    @staticmethod
    def _apply_from(state: CacheState) -> Any:
        def apply(kind: str, payload: Any) -> None:
            if kind == "put":
                state.store.put(payload)
            elif kind == "flush":
                state.store.flush(payload)
        return apply

    # -- the request path ------------------------------------------------------------------------------
    def namespace(self, ctx: RequestContext, request: ChatRequest, mode: str) -> str | GatewayError:
        """The tenant whose entries this request may see and add to."""
        if mode == "global":
            return "global"
        key = ctx.key_id or ctx.key_name
        if mode == "key":
            return f"key:{key or 'anonymous'}"
        if mode == "user":
            user = ctx.user or (None if self.auth_on else request.body.get("user"))
            return f"user:{user}" if isinstance(user, str) and user else f"key:{key or 'anonymous'}"
        if self.auth_on:  # the key's team decides; the header is ignored
            return ctx.team or (f"key:{key}" if key else "default")
        team = request.headers.get(_TEAM_HEADER)
        if team is None or team == "":
            return "default"
        if not _SANE.match(team):
            return GatewayError(400, f"{_TEAM_HEADER} must be 1-128 letters, digits or . _ @ : + -",
                                param=_TEAM_HEADER, code="invalid_value")
        return team

    async def pre_request(self, ctx: RequestContext, request: ChatRequest) -> ChatResponse | GatewayError | None:
        state, cc = self.state, self.cc
        assert state is not None
        plan = ctx.plan
        if plan is None:
            return None  # an unknown model: its 404 comes later
        group = plan.group or request.model
        policy = cc.for_group(group)
        if not policy.enabled:
            return None
        directives = _cache_control(request.headers.get("cache-control"))
        if "no-store" in directives or cacheability(request.body, cc.max_temperature) is not None:
            return self._mark(ctx, "bypass")
        ns = self.namespace(ctx, request, policy.namespace)
        if isinstance(ns, GatewayError):
            return ns
        key = request_key(ns, group, request.body, self.embed_mode if policy.semantic else None)
        pending = ctx.metadata["cache.req"] = _Request(key, group, policy.ttl)
        if "no-cache" not in directives:
            max_age = directives.get("max-age")
            hit = await self._lookup(ctx, request, pending, policy, max_age)
            if hit is not None:
                return hit
        if cc.coalesce:
            flight = state.flights.get(key.exact)
            if flight is not None:
                joined = await self._follow(ctx, request, flight)
                if joined is not None:
                    return joined
            else:
                pending.flight = state.flights[key.exact] = Flight(ctx)
        self._mark(ctx, "miss")
        return None

    async def _lookup(self, ctx: RequestContext, request: ChatRequest, pending: _Request, policy: Any,
                      max_age: int | None) -> ChatResponse | None:
        state = self.state
        assert state is not None
        key = pending.key
        now = state.store.wall()
        if policy.exact:
            entry = state.store.get(key.exact, key.namespace)
            if entry is None and state.replicator is not None:
                entry = await state.replicator.get(key.exact, key.namespace)
                if entry is not None:
                    state.store.put(entry)
            if entry is not None and (max_age is None or now - entry.created <= max_age):
                return self._hit(ctx, request, entry, "hit", 1.0)
        if not policy.semantic or not key.text or state.embedder is None:
            return None
        pending.vector = await self._embed(key.text)
        if pending.vector is None:
            return None
        threshold = policy.threshold if policy.threshold is not None else self.default_threshold
        sem = self.cc.semantic
        assert sem is not None
        for score, entry in state.store.candidates(key.namespace, key.scope, pending.vector, threshold, sem.candidates):
            if max_age is not None and now - entry.created > max_age:
                continue
            if self.guard is not None:
                if pending.shape is None:
                    pending.shape = analyse(key.text)
                if entry.shape is None:
                    entry.shape = analyse(entry.text)
                reason = self.guard.check_shapes(pending.shape, entry.shape)
                if reason is not None:
                    state.counts["guard_rejects"] += 1
                    if self.verifier is None or reason not in SOFT_REASONS or \
                            not await self._verify(key.text, entry.text, score):
                        continue
            elif self.verifier is not None and not await self._verify(key.text, entry.text, score):
                continue
            return self._hit(ctx, request, entry, "semantic-hit", score)
        return None

    async def _embed(self, text: str) -> np.ndarray | None:
        """The text's vector; None when there is none to compare (no letters or digits: the
        lexical embedder's zero vector) or the embedder failed (a miss, never an error)."""
        assert self.state is not None
        try:
            vector = (await self.state.embedder.aembed([text]))[0]
        except Exception as exc:  # noqa: BLE001
            log.warning("cache embedder failed: %s: %s", type(exc).__name__, exc)
            return None
        return vector if np.isfinite(vector).all() and vector.any() else None

    async def _verify(self, new: str, cached: str, score: float) -> bool:
        assert self.state is not None
        self.state.counts["verifier_calls"] += 1
        verdict = self.verifier(new, cached, score)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return bool(verdict)

    def _mark(self, ctx: RequestContext, result: str) -> None:
        assert self.state is not None
        self.state.counts[result] += 1
        ctx.metadata["cache"] = result
        ctx.response_headers.append(("x-llmgw-cache", result))
        return None

    def _hit(self, ctx: RequestContext, request: ChatRequest, entry: Entry, kind: str, score: float) -> ChatResponse:
        assert self.state is not None
        self._mark(ctx, kind)
        saved = entry.cost_usd or 0.0
        self.state.counts["saved_usd"] += saved
        ctx.metadata["cache_saved_usd"] = saved
        age = max(self.state.store.wall() - entry.created, 0.0)
        ctx.response_headers += [("x-llmgw-cache-similarity", f"{score:.4f}"),
                                 ("x-llmgw-cache-saved-usd", f"{saved:.6f}"), ("x-llmgw-cache-age", str(int(age)))]
        ctx.metadata.pop("cache.req", None)  # nothing to store
        response = ChatResponse(raw=entry.response)
        response.usage = Usage(0, 0, 0)  # no upstream tokens were used (the body keeps the original usage)
        return response

    async def _follow(self, ctx: RequestContext, request: ChatRequest, flight: Flight) -> ChatResponse | None:
        """Join a leader's call: its answer, its stream from the first chunk, or None if it failed first."""
        assert self.state is not None
        flight.followers += 1
        flight.leader.keep_upstream = True  # its client leaving must not cancel what we wait for
        if request.stream:
            if not await flight.started():
                return None
            response = ChatResponse(chunks=flight.chunks_from_start()) if flight.chunks else \
                ChatResponse(raw=flight.response)
        else:
            answer = await flight.wait()
            if answer is None:
                return None
            response = ChatResponse(raw=answer)
        self._mark(ctx, "hit")
        self.state.counts["coalesced"] += 1
        ctx.response_headers.append(("x-llmgw-cache-coalesced", "true"))
        ctx.metadata.pop("cache.req", None)
        response.usage = Usage(0, 0, 0)  # the leader's upstream call is the one billed
        return response

    def on_chunk(self, ctx: RequestContext, chunk: dict[str, Any]) -> dict[str, Any]:
        pending = ctx.metadata.get("cache.req")
        if pending is not None:
            if pending.stream_chunks is None:
                pending.stream_chunks = []
            pending.stream_chunks.append(chunk)
            if pending.flight is not None:
                pending.flight.add_chunk(chunk)
        return chunk

    async def post_response(self, ctx: RequestContext, result: ChatResponse | GatewayError) -> None:
        pending: _Request | None = ctx.metadata.pop("cache.req", None)
        if pending is None:
            return None
        body = self._storable(result, pending)
        if body is None:
            self._land(pending, None)
            return None
        self._land(pending, body)
        await self._store(ctx, pending, body)
        return None

    def _storable(self, result: ChatResponse | GatewayError, pending: _Request) -> bytes | None:
        """The answer's bytes to store, or None: errors, cut streams, tool calls (unless allowed),
        content-filtered answers."""
        if isinstance(result, GatewayError) or result.status != 200:
            return None
        if result.streamed:
            if result.finish_reason in (None, "error") or not pending.stream_chunks:
                return None
            data = chunks_as_response(pending.stream_chunks)
            if "usage" not in data and result.usage is not None:
                u = result.usage
                data["usage"] = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                                 "total_tokens": u.total_tokens}
        else:
            data = result.data
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices, list):
            return None
        for choice in choices:
            if not isinstance(choice, dict):
                return None
            reason = choice.get("finish_reason")
            message = choice.get("message") or {}
            if reason in (None, "content_filter", "error"):
                return None
            if (message.get("tool_calls") or reason == "tool_calls" or message.get("function_call")) and \
                    not self.cc.tool_calls:
                return None
        if result.streamed or result.raw is None:
            return orjson.dumps(data)
        return result.raw

    def _land(self, pending: _Request, body: bytes | None) -> None:
        """The leader is done: hand followers the answer, or let them go upstream themselves."""
        flight = pending.flight
        if flight is None or self.state is None:
            return
        pending.flight = None
        if self.state.flights.get(pending.key.exact) is flight:
            del self.state.flights[pending.key.exact]
        if body is None:
            flight.fail()
        else:
            flight.finish(body)

    async def _store(self, ctx: RequestContext, pending: _Request, body: bytes) -> None:
        state = self.state
        assert state is not None
        key = pending.key
        usage = ctx.usage
        micro, _ = self.prices.request_cost(ctx.attempts, usage)
        vector = pending.vector
        policy = self.cc.for_group(pending.group)
        if vector is None and policy.semantic and key.text and state.embedder is not None:
            vector = await self._embed(key.text)
        now = state.store.wall()
        entry = Entry(key.exact, key.namespace, pending.group, key.scope if vector is not None else "", key.text,
                      vector, body, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
                      micro / 1e6 if micro is not None else None, now,
                      now + pending.ttl if pending.ttl is not None else None)
        entry.shape = pending.shape
        if state.store.put(entry):
            state.counts["stored"] += 1
            if state.replicator is not None:
                state.replicator.publish(entry)

    def on_finish(self, ctx: RequestContext, outcome: Outcome) -> None:
        pending: _Request | None = ctx.metadata.pop("cache.req", None)
        if pending is not None and pending.flight is not None:
            self._land(pending, None)  # the leader failed or left before post_response: release the followers

    # -- stats and the admin API -------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        state = self.state
        if state is None:
            return {}
        store = state.store
        out: dict[str, Any] = dict(state.counts)
        out.update(entries=len(store), bytes=store.bytes, evicted=store.evicted, expired=store.expired,
                   in_flight=len(state.flights))
        if state.replicator is not None:
            out["sharing"] = state.replicator.stats()
        return out

    async def _admin_stats(self, ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        self._authorise(request)
        assert self.state is not None
        return RouteResponse({**self.stats(), "namespaces": self.state.store.namespaces()})

    async def _admin_flush(self, ctx: RequestContext, request: RouteRequest) -> RouteResponse:
        self._authorise(request)
        state = self.state
        assert state is not None
        namespace = request.params.get("namespace")
        if namespace is not None:
            from urllib.parse import unquote

            namespace = unquote(namespace)
        removed = state.store.flush(namespace)
        shared = 0
        if state.replicator is not None:
            from llmgw.cache.shared import SharingUnavailable

            try:
                shared = await state.replicator.flush(namespace)
            except SharingUnavailable as exc:
                raise GatewayError(503, f"Flushed {removed} entries on this worker, but the shared cache could not be "
                                        f"flushed ({exc}): other replicas may still serve them. Retry.",
                                   type="server_error", code="cache_sharing_unavailable") from None
        log.info("cache flushed: %s (%d entries here)", namespace or "every namespace", removed)
        return RouteResponse({"namespace": namespace, "flushed": removed, "flushed_shared": shared})
