"""`models:` — model groups: the public names clients ask for, the deployments behind each, and how
requests are spread over them and fall back when one fails.

Two forms. The short one maps a name to one deployment:

    models:
      gpt-4o-mini: {upstream: openai}                 # model name sent upstream: the same
      fast: {upstream: local, model: llama-3.1-8b}

The full one lists deployments and the policies of the group:

    models:
      chain:
        deployments:
          - {name: primary, upstream: primary, model: gpt-4o-mini, weight: 3, rpm: 600, tpm: 200000,
             context_window: 128000, price: {input: 0.15, output: 0.60}, tags: [eu]}
          - {name: backup, upstream: secondary, model: gpt-4o-mini}
        strategy: ordered        # ordered | weighted | least_inflight | lowest_latency | lowest_cost | headroom
        fallbacks:               # tried in order once the group's own deployments failed
          - {to: small, on: [rate_limited, server_error, timeout, connection, context_window]}
        retries: {attempts: 2, backoff: 0.25, max_backoff: 5, budget: 0.2}
        breaker: {failures: 5, error_ratio: 0.5, window: 30, min_requests: 10, cooldown: 10}
        hedge: {after: 0.5}      # race a second deployment when the first has not answered by then
        shadow: {to: candidate, sample: 0.05}
        timeout: 120             # overall deadline (s); a client may ask for less with x-llmgw-timeout
        rules:                   # first match sends the request to another group
          - {when: {tools: true, min_prompt_tokens: 4000}, use: big}
          - {when: {metadata: {tier: free}}, use: small}   # the request's own `metadata`
        complexity: {easy: small, hard: big, threshold: 0.5}   # score the prompt, pick a group

What each setting does at run time is in `llmgw/routing/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from llmgw.config.reader import Doc, get, positive, take

__all__ = [
    "TRIGGERS",
    "STRATEGIES",
    "Breaker",
    "Complexity",
    "Deployment",
    "Fallback",
    "Hedge",
    "ModelGroup",
    "Price",
    "Retries",
    "Rule",
    "Shadow",
    "parse_models",
    "parse_price",
]

STRATEGIES = ("ordered", "weighted", "least_inflight", "lowest_latency", "lowest_cost", "headroom")
# What may move a request on to a fallback (UpstreamFailure.reason, plus the budget signal).
TRIGGERS = ("rate_limited", "server_error", "timeout", "connection", "context_window", "content_policy", "auth",
            "budget_exhausted")
DEFAULT_TRIGGERS = frozenset({"rate_limited", "server_error", "timeout", "connection"})


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str  # unique in the config
    upstream: str
    model: str  # the name the upstream knows the model by
    weight: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    price: Price | None = None
    context_window: int | None = None
    max_output: int | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Fallback:
    to: str  # a model group, or a deployment of any group
    on: frozenset[str] = DEFAULT_TRIGGERS


@dataclass(frozen=True, slots=True)
class Retries:
    attempts: int | None = None  # tries after the first within the group; None: each deployment once
    backoff: float = 0.25  # seconds before the first retry of a deployment (doubles, full jitter)
    max_backoff: float = 5.0
    budget: float = 0.2  # retries a deployment may get, as a share of its first attempts


@dataclass(frozen=True, slots=True)
class Breaker:
    failures: int = 5  # consecutive failures that open it
    error_ratio: float = 0.5  # or this share of failures over `window` seconds ...
    window: float = 30.0
    min_requests: int = 10  # ... once at least this many requests were seen in it
    cooldown: float = 10.0  # open for this long, then one probe (half-open)


@dataclass(frozen=True, slots=True)
class Hedge:
    after: float  # seconds without an answer before a second deployment is raced


@dataclass(frozen=True, slots=True)
class Shadow:
    to: str  # a deployment or model group that gets a copy; its answer is recorded, never returned
    sample: float = 1.0


@dataclass(frozen=True, slots=True)
class Rule:
    use: str  # the model group the matching requests go to
    headers: tuple[tuple[str, str], ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()  # the request body's `metadata` entries
    key: str | None = None
    team: str | None = None
    user: str | None = None
    min_prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    tools: bool | None = None
    images: bool | None = None
    stream: bool | None = None


@dataclass(frozen=True, slots=True)
class Complexity:
    easy: str  # model group for prompts scoring below the threshold
    hard: str
    threshold: float = 0.5
    scorer: str | None = None  # module:function(request) -> float in [0, 1]; default: the built-in heuristic


@dataclass(frozen=True, slots=True)
class ModelGroup:
    name: str
    deployments: tuple[Deployment, ...]
    strategy: str = "ordered"
    fallbacks: tuple[Fallback, ...] = ()
    retries: Retries = field(default_factory=Retries)
    breaker: Breaker | None = None
    hedge: Hedge | None = None
    shadow: Shadow | None = None
    timeout: float | None = None
    rules: tuple[Rule, ...] = ()
    complexity: Complexity | None = None

    # The short form's one deployment, for code and tests written against it.
    @property
    def upstream(self) -> str:
        return self.deployments[0].upstream if self.deployments else ""

    @property
    def model(self) -> str:
        return self.deployments[0].model if self.deployments else self.name


_GROUP_KEYS = {k: "" for k in ("deployments", "strategy", "fallbacks", "retries", "breaker", "hedge", "shadow",
                               "timeout", "rules", "complexity")}
_DEPLOYMENT_KEYS = {k: "" for k in ("name", "upstream", "model", "weight", "rpm", "tpm", "price", "context_window",
                                    "max_output", "tags")}


def _mapping(doc: Doc, data: Any, path: str, fix: str) -> dict[str, Any] | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        doc.error(path, "expected a mapping", fix)
        return None
    return data


def parse_price(doc: Doc, data: Any, path: str) -> Price | None:
    data = _mapping(doc, data, path, "Write price: {input: USD per 1M tokens, output: USD per 1M tokens}")
    if data is None:
        return None
    take(doc, data, path, {"input": "", "output": "", "cached_input": "", "cache_write": ""})
    non_negative = (lambda v: None if v >= 0 else f"must be >= 0, got {v}")
    inp, out = get(doc, data, path, "input", float, None, non_negative), get(doc, data, path, "output", float, None,
                                                                              non_negative)
    if inp is None or out is None:
        doc.error(path, "needs both input and output", "Give USD per 1M tokens for each")
        return None
    return Price(inp, out, get(doc, data, path, "cached_input", float, None, non_negative),
                 get(doc, data, path, "cache_write", float, None, non_negative))


def _deployment(doc: Doc, data: Any, path: str, default_name: str, upstreams: set[str]) -> Deployment | None:
    if not isinstance(data, dict):
        doc.error(path, "expected a mapping", "Write {upstream: NAME, model: UPSTREAM_MODEL}")
        return None
    take(doc, data, path, _DEPLOYMENT_KEYS)
    up = get(doc, data, path, "upstream", str, "")
    if up not in upstreams:
        doc.error(f"{path}.upstream", f"unknown upstream {up!r}" if up else "missing",
                  f"Use one of the upstreams: {', '.join(sorted(upstreams)) or '(none defined)'}")
    tags = get(doc, data, path, "tags", list, [])
    return Deployment(
        name=get(doc, data, path, "name", str, default_name),
        upstream=up,
        model=get(doc, data, path, "model", str, ""),
        weight=get(doc, data, path, "weight", float, 1.0, lambda v: None if v >= 0 else f"must be >= 0, got {v}"),
        rpm=get(doc, data, path, "rpm", int, None, positive),
        tpm=get(doc, data, path, "tpm", int, None, positive),
        price=parse_price(doc, data.get("price"), f"{path}.price"),
        context_window=get(doc, data, path, "context_window", int, None, positive),
        max_output=get(doc, data, path, "max_output", int, None, positive),
        tags=tuple(str(t) for t in tags),
    )


def _triggers(doc: Doc, data: Any, path: str) -> frozenset[str]:
    if data is None:
        return DEFAULT_TRIGGERS
    if isinstance(data, str):
        data = [data]
    if not isinstance(data, list):
        doc.error(path, "expected a list of triggers", f"Use some of: {', '.join(TRIGGERS)}")
        return DEFAULT_TRIGGERS
    aliases = {"429": "rate_limited", "5xx": "server_error", "connection_error": "connection",
               "context_window_exceeded": "context_window", "content_filter": "content_policy"}
    out = set()
    for i, t in enumerate(data):
        t = aliases.get(str(t), str(t))
        if t not in TRIGGERS:
            doc.error(f"{path}[{i}]", f"unknown trigger {t!r}", f"Use one of: {', '.join(TRIGGERS)}")
        out.add(t)
    return frozenset(out)


def _fallbacks(doc: Doc, data: Any, path: str) -> tuple[Fallback, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        doc.error(path, "expected a list", "Write fallbacks: [{to: GROUP_OR_DEPLOYMENT, on: [server_error, ...]}]")
        return ()
    out = []
    for i, item in enumerate(data):
        sub = f"{path}[{i}]"
        if isinstance(item, str):
            item = {"to": item}
        if not isinstance(item, dict):
            doc.error(sub, "expected a mapping or a name", "Write {to: NAME, on: [triggers]}")
            continue
        take(doc, item, sub, {"to": "", "on": ""})
        to = get(doc, item, sub, "to", str, "")
        if not to:
            doc.error(f"{sub}.to", "missing", "Name a model group or a deployment")
        out.append(Fallback(to, _triggers(doc, item.get("on"), f"{sub}.on")))
    return tuple(out)


def _rules(doc: Doc, data: Any, path: str) -> tuple[Rule, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        doc.error(path, "expected a list", "Write rules: [{when: {...}, use: GROUP}]")
        return ()
    out = []
    for i, item in enumerate(data):
        sub = f"{path}[{i}]"
        if not isinstance(item, dict):
            doc.error(sub, "expected a mapping", "Write {when: {...}, use: GROUP}")
            continue
        take(doc, item, sub, {"when": "", "use": ""})
        when = _mapping(doc, item.get("when"), f"{sub}.when", "Write when: {tools: true, ...}") or {}
        wpath = f"{sub}.when"
        take(doc, when, wpath, {k: "" for k in ("headers", "metadata", "key", "team", "user", "min_prompt_tokens",
                                                "max_prompt_tokens", "tools", "images", "stream")})
        headers = get(doc, when, wpath, "headers", dict, {})
        metadata = get(doc, when, wpath, "metadata", dict, {})
        out.append(Rule(
            use=get(doc, item, sub, "use", str, ""),
            headers=tuple((str(k).lower(), str(v)) for k, v in headers.items()),
            metadata=tuple((str(k), str(v)) for k, v in metadata.items()),
            key=get(doc, when, wpath, "key", str, None),
            team=get(doc, when, wpath, "team", str, None),
            user=get(doc, when, wpath, "user", str, None),
            min_prompt_tokens=get(doc, when, wpath, "min_prompt_tokens", int, None, positive),
            max_prompt_tokens=get(doc, when, wpath, "max_prompt_tokens", int, None, positive),
            tools=get(doc, when, wpath, "tools", bool, None),
            images=get(doc, when, wpath, "images", bool, None),
            stream=get(doc, when, wpath, "stream", bool, None),
        ))
        if not out[-1].use:
            doc.error(f"{sub}.use", "missing", "Name the model group the matching requests go to")
    return tuple(out)


def _group(doc: Doc, name: str, data: dict[str, Any], path: str, upstreams: set[str]) -> ModelGroup:
    if "deployments" not in data:  # the short form: the group is its one deployment
        d = _deployment(doc, data, path, name, upstreams)
        assert d is not None
        return ModelGroup(name, (d if d.model else _with_model(d, name),))
    take(doc, data, path, _GROUP_KEYS)
    raw = data.get("deployments")
    deployments: list[Deployment] = []
    if not isinstance(raw, list) or not raw:
        doc.error(f"{path}.deployments", "expected a non-empty list",
                  "Write deployments: [{upstream: NAME, model: UPSTREAM_MODEL}]")
        raw = []
    for i, item in enumerate(raw):
        d = _deployment(doc, item, f"{path}.deployments[{i}]", f"{name}#{i + 1}", upstreams)
        if d is not None:
            deployments.append(d if d.model else _with_model(d, name))
    strategy = get(doc, data, path, "strategy", str, "ordered",
                   lambda v: None if v in STRATEGIES else f"unknown strategy {v!r}; use one of {', '.join(STRATEGIES)}")
    r = _mapping(doc, data.get("retries"), f"{path}.retries", "Write retries: {attempts: 2, backoff: 0.25}") or {}
    rpath = f"{path}.retries"
    take(doc, r, rpath, {"attempts": "", "backoff": "", "max_backoff": "", "budget": ""})
    d_r = Retries()
    retries = Retries(
        attempts=get(doc, r, rpath, "attempts", int, None, lambda v: None if v >= 0 else f"must be >= 0, got {v}"),
        backoff=get(doc, r, rpath, "backoff", float, d_r.backoff, lambda v: None if v >= 0 else "must be >= 0"),
        max_backoff=get(doc, r, rpath, "max_backoff", float, d_r.max_backoff, positive),
        budget=get(doc, r, rpath, "budget", float, d_r.budget, lambda v: None if 0 <= v <= 10 else "must be 0-10"),
    )
    breaker = None
    b = data.get("breaker")
    if b is not None and b is not False:
        b = _mapping(doc, {} if b is True else b, f"{path}.breaker", "Write breaker: {failures: 5, cooldown: 10}") or {}
        bpath = f"{path}.breaker"
        take(doc, b, bpath, {"failures": "", "error_ratio": "", "window": "", "min_requests": "", "cooldown": ""})
        d_b = Breaker()
        breaker = Breaker(
            failures=get(doc, b, bpath, "failures", int, d_b.failures, positive),
            error_ratio=get(doc, b, bpath, "error_ratio", float, d_b.error_ratio,
                            lambda v: None if 0 < v <= 1 else "must be in (0, 1]"),
            window=get(doc, b, bpath, "window", float, d_b.window, positive),
            min_requests=get(doc, b, bpath, "min_requests", int, d_b.min_requests, positive),
            cooldown=get(doc, b, bpath, "cooldown", float, d_b.cooldown, positive),
        )
    hedge = None
    h = _mapping(doc, data.get("hedge"), f"{path}.hedge", "Write hedge: {after: 0.5}")
    if h is not None:
        take(doc, h, f"{path}.hedge", {"after": ""})
        hedge = Hedge(get(doc, h, f"{path}.hedge", "after", float, 0.5, positive))
    shadow = None
    s = _mapping(doc, data.get("shadow"), f"{path}.shadow", "Write shadow: {to: NAME, sample: 0.1}")
    if s is not None:
        take(doc, s, f"{path}.shadow", {"to": "", "sample": ""})
        shadow = Shadow(get(doc, s, f"{path}.shadow", "to", str, ""),
                        get(doc, s, f"{path}.shadow", "sample", float, 1.0,
                            lambda v: None if 0 <= v <= 1 else "must be a probability 0..1"))
        if not shadow.to:
            doc.error(f"{path}.shadow.to", "missing", "Name a deployment or model group to mirror traffic to")
    complexity = None
    c = _mapping(doc, data.get("complexity"), f"{path}.complexity", "Write complexity: {easy: GROUP, hard: GROUP}")
    if c is not None:
        cpath = f"{path}.complexity"
        take(doc, c, cpath, {"easy": "", "hard": "", "threshold": "", "scorer": ""})
        complexity = Complexity(get(doc, c, cpath, "easy", str, ""), get(doc, c, cpath, "hard", str, ""),
                                get(doc, c, cpath, "threshold", float, 0.5,
                                    lambda v: None if 0 <= v <= 1 else "must be 0..1"),
                                get(doc, c, cpath, "scorer", str, None,
                                    lambda v: None if re.fullmatch(r"[\w.]+:[\w.]+", v) else "must be module:function"))
        if not complexity.easy or not complexity.hard:
            doc.error(cpath, "needs easy and hard", "Name the model group for each")
    return ModelGroup(
        name=name, deployments=tuple(deployments), strategy=strategy,
        fallbacks=_fallbacks(doc, data.get("fallbacks"), f"{path}.fallbacks"), retries=retries, breaker=breaker,
        hedge=hedge, shadow=shadow, timeout=get(doc, data, path, "timeout", float, None, positive),
        rules=_rules(doc, data.get("rules"), f"{path}.rules"), complexity=complexity,
    )


def _with_model(d: Deployment, name: str) -> Deployment:
    from dataclasses import replace

    return replace(d, model=name)


def parse_models(doc: Doc, raw: Any, upstreams: set[str]) -> dict[str, ModelGroup]:
    """The `models:` section; references between groups and deployments are checked at the end."""
    groups: dict[str, ModelGroup] = {}
    if not isinstance(raw, dict) or not raw:
        doc.error("models", "missing or empty", "Add at least one model: models: {name: {upstream: NAME}}")
        return groups
    for name, item in raw.items():
        path = f"models.{name}"
        if not isinstance(item, dict):
            doc.error(path, "expected a mapping", "Write {upstream: NAME, model: UPSTREAM_MODEL}")
            continue
        groups[name] = _group(doc, name, item, path, upstreams)
    deployments: dict[str, str] = {}
    for g in groups.values():
        for i, d in enumerate(g.deployments):
            if d.name in deployments and deployments[d.name] != g.name or d.name in groups and d.name != g.name:
                doc.error(f"models.{g.name}.deployments[{i}].name", f"{d.name!r} is already a name in models",
                          "Give every deployment a name of its own")
            deployments[d.name] = g.name
    known = set(groups) | set(deployments)
    for g in groups.values():
        refs = [(f"models.{g.name}.fallbacks[{i}].to", f.to) for i, f in enumerate(g.fallbacks)]
        refs += [(f"models.{g.name}.rules[{i}].use", r.use) for i, r in enumerate(g.rules) if r.use]
        if g.shadow is not None and g.shadow.to:
            refs.append((f"models.{g.name}.shadow.to", g.shadow.to))
        if g.complexity is not None:
            refs += [(f"models.{g.name}.complexity.easy", g.complexity.easy),
                     (f"models.{g.name}.complexity.hard", g.complexity.hard)]
        for where, ref in refs:
            if ref and ref not in known:
                doc.error(where, f"unknown model group or deployment {ref!r}",
                          f"Use one of: {', '.join(sorted(known))}")
    return groups
