"""The architecture diagram of a gateway configuration (`llmgw diagram`; later the admin dashboard).

Two layers. `diagram_model(config, live)` reads a `Config` into plain dataclasses without starting
anything: nodes (id, kind, label, detail lines, live-figure lines), edges (source, target, label,
style) and columns in request order — clients, the gateway's stages as `llmgw check-config` lists
them (observability, governance or auth, guardrails, the user's plugins, the cache, the router),
model groups, deployments, upstreams — each column with the stores and exporters its stage uses
beside it. `to_mermaid` and `to_svg` render that model; the dashboard passes `live` (node id ->
short lines such as "12.3 req/s", "breaker open") and renders again, the CLI passes None.

Nothing secret reaches the model: upstreams show their provider and host (never the key, headers,
userinfo, path or query), stores a file path or a host (never a DSN or a Redis password), plugins
the names of their options (not the values); client keys and guardrail terms are only counted.

The SVG layout is hand-made and deterministic (same config, same bytes): monospace text, so a
box's width is known without a font; columns left to right with a gap wide enough for the labels
of the edges crossing it; a column's main nodes stacked around one horizontal line (the request
path is straight), its stores and exporters hung below its stage on a dotted bus; fallbacks
between groups of one column are brackets on its left; anything else runs along a channel at the bottom.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from llmgw.config import Config
from llmgw.config.models import TRIGGERS

__all__ = ["Column", "Diagram", "Edge", "Node", "diagram_model", "render", "to_mermaid", "to_svg"]

KINDS = ("client", "stage", "router", "group", "deployment", "upstream", "store", "exporter")
EDGE_STYLES = ("flow", "fallback", "route", "store", "uses")
SECTIONS = {"clients": "clients", "gateway": "llmgw gateway (request order)", "groups": "model groups",
            "deployments": "deployments", "upstreams": "upstreams"}


@dataclass(frozen=True, slots=True)
class Node:
    id: str  # stable: "stage:cache", "group:<name>", "deployment:<name>", "upstream:<name>", "store:keys", ...
    kind: str  # one of KINDS
    label: str
    detail: tuple[str, ...] = ()
    live: tuple[str, ...] = ()  # figures from a running gateway (the dashboard); empty from a config alone


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    label: str = ""
    style: str = "flow"  # flow (the request path) | fallback | route (rules, complexity, shadow) | store | uses


@dataclass(frozen=True, slots=True)
class Column:
    section: str  # a key of SECTIONS
    nodes: tuple[str, ...]  # on the request path, top to bottom
    side: tuple[str, ...] = ()  # stores and exporters of this column's stage


@dataclass(frozen=True, slots=True)
class Diagram:
    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    columns: tuple[Column, ...]  # left to right, in request order

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)


# ---------------------------------------------------------------------------------------------- model


def host_of(url: str) -> str:
    """`host[:port]` of a URL: no scheme, userinfo, path or query."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "?"
    if ":" in host:
        host = f"[{host}]"
    return (f"{host}:{port}" if port else host) or "?"


def _postgres_where(dsn: str) -> str:
    """host:port/db of a PostgreSQL DSN, URL or key=value form; never the user or password."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        host = parts.netloc.rpartition("@")[2] or "localhost"  # may list several hosts: h1:5432,h2:5432
        db = parts.path.lstrip("/")
    else:
        kv = {k: v.strip("'") for k, v in re.findall(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn)}
        host = kv.get("host", "localhost") + (f":{kv['port']}" if "port" in kv else "")
        db = kv.get("dbname", "")
    return f"{host}/{db}" if db else host


def _n(x: float) -> str:
    return f"{x:g}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.columns: list[Column] = []

    def node(self, node_id: str, kind: str, label: str, *detail: str) -> str:
        self.nodes.append(Node(node_id, kind, label, tuple(d for d in detail if d)))
        return node_id

    def edge(self, source: str, target: str, label: str = "", style: str = "flow") -> None:
        self.edges.append(Edge(source, target, label, style))


def _stage_columns(b: _Builder, cfg: Config) -> list[str]:
    """The stages in request order (as `llmgw check-config`'s "request path"), with their stores."""
    stages: list[str] = []
    obs = cfg.observability
    if obs.metrics.enabled or obs.access_log.format != "off" or obs.tracing or obs.langfuse:
        side = []
        m = obs.metrics
        if m.enabled:
            side.append(b.node("exporter:metrics", "exporter", "Prometheus", f"GET {m.path}",
                               f"port {m.port}" if m.port else "on the gateway's port",
                               "per-key labels" if m.per_key_labels else ""))
        a = obs.access_log
        if a.format != "off":
            side.append(b.node("exporter:access_log", "exporter", "access log", f"to {a.destination}",
                               f"format {a.format}", f"bodies: {a.bodies}" if a.bodies != "none" else ""))
        if obs.tracing is not None:
            t = obs.tracing
            side.append(b.node("exporter:otlp", "exporter", "OTLP traces", host_of(t.endpoint),
                               f"sampled {t.sample_ratio:.0%}", f"service {t.service_name}",
                               "from OTEL_* variables" if t.from_env else ""))
        if obs.langfuse is not None:
            lf = obs.langfuse
            side.append(b.node("exporter:langfuse", "exporter", "Langfuse", host_of(lf.host),
                               f"sampled {lf.sample_ratio:.0%}", f"bodies: {lf.bodies}"))
        names = [n.label for n in b.nodes if n.id in side]
        stages.append(b.node("stage:observability", "stage", "observability", "records " + ", ".join(names)))
        b.columns.append(Column("gateway", (stages[-1],), tuple(side)))
        for s in side:
            b.edge(stages[-1], s, style="store")

    gov = cfg.governance
    if gov is not None:
        scopes = [_plural(len(d), w) for d, w in ((gov.teams, "team"), (gov.users, "user"), (gov.models, "model")) if d]
        budgets = sum(1 for d in (gov.teams, gov.users, gov.models) for lim in d.values() if lim.budget)
        stage = b.node("stage:governance", "stage", "governance", "virtual keys"
                       + (f" (+{len(cfg.auth_keys)} from the config)" if cfg.auth_keys else ""),
                       f"limits: {', '.join(scopes)}" if scopes else "limits: per key",
                       _plural(budgets, "budget") if budgets else "budgets: per key",
                       f"admin API {'on' if gov.master_key else 'off'}")
        where = f"SQLite {gov.sqlite_path}" if gov.store == "sqlite" else \
            f"PostgreSQL {_postgres_where(gov.postgres_dsn or '')}"
        keys = b.node("store:keys", "store", "keys & ledger", where, "keys, spend ledger, audit")
        counters = b.node("store:counters", "store", "counters", "rate limits, budgets",
                          "shared memory (this machine)" if gov.counters == "local"
                          else f"Redis {host_of(gov.redis_url or '')}",
                          f"Redis down: {'503' if gov.on_counter_failure == 'closed' else 'admit'}"
                          if gov.counters == "redis" else "")
        stages.append(stage)
        b.columns.append(Column("gateway", (stage,), (keys, counters)))
        b.edge(stage, keys, style="store")
        b.edge(stage, counters, style="store")
    elif cfg.auth_keys:
        restricted = sum(1 for k in cfg.auth_keys if k.models is not None)
        stages.append(b.node("stage:auth", "stage", "auth", _plural(len(cfg.auth_keys), "client key"),
                             f"{restricted} with a model list" if restricted else ""))
        b.columns.append(Column("gateway", (stages[-1],)))

    g = cfg.guardrails
    if g is not None:
        p = g.policy
        sides = [w for w, on in (("in", p.pii.input), ("out", p.pii.output)) if on]
        overrides = [_plural(len(d), k) for d, k in ((g.models, "model"), (g.teams, "team"), (g.keys, "key")) if d]
        stage = b.node("stage:guardrails", "stage", "guardrails",
                       f"PII {p.pii.mode} ({'+'.join(sides)})" if p.pii.mode != "off" else "",
                       f"injection {p.injection.mode} >= {_n(p.injection.threshold)}"
                       if p.injection.mode != "off" else "",
                       f"classifier {p.injection.classifier}" if p.injection.mode != "off" and p.injection.classifier
                       else "",
                       f"prompts <= {p.limits.max_prompt_tokens} tokens" if p.limits.max_prompt_tokens else "",
                       f"<= {p.limits.max_messages} messages" if p.limits.max_messages else "",
                       _plural(len(p.content.block), "blocked term") if p.content.block else "",
                       f"json_schema {p.json_schema}" if p.json_schema != "off" else "",
                       f"overrides: {', '.join(overrides)}" if overrides else "",
                       f"a failing check {'passes' if g.on_error == 'open' else 'refuses'}")
        side: tuple[str, ...] = ()
        if g.audit_file:
            side = (b.node("exporter:guardrails_audit", "exporter", "guardrails audit", g.audit_file,
                           "decisions, never text"),)
            b.edge(stage, side[0], style="store")
        stages.append(stage)
        b.columns.append(Column("gateway", (stage,), side))

    for i, plugin in enumerate(cfg.plugins, 1):
        stages.append(b.node(f"plugin:{i}", "stage", plugin.target,
                             f"options: {', '.join(sorted(map(str, plugin.options)))}" if plugin.options else "",
                             f"a crash: {'ignored' if plugin.on_error == 'open' else '500'}"))
        b.columns.append(Column("gateway", (stages[-1],)))

    c = cfg.cache
    if c is not None:
        pol, sem = c.policy, c.semantic
        layers = [w for w, on in (("exact", pol.exact), ("semantic", sem is not None)) if on]
        off = [name for name, gp in c.models.items() if not gp.enabled]
        stage = b.node("stage:cache", "stage", "response cache", " + ".join(layers) or "no layer on",
                       f"namespace: {pol.namespace}", f"ttl {_n(pol.ttl)} s" if pol.ttl else "no ttl",
                       "coalescing" if c.coalesce else "",
                       f"off for {', '.join(off)}" if off else "")
        share = []
        if c.shared == "off":
            share.append("per worker, not shared")
        elif c.shared == "auto":
            share.append(f"shared by the {cfg.server.workers} workers (SQLite)" if cfg.server.workers > 1
                         else "in memory; shared with --workers N")
        else:
            share.append(f"SQLite {c.shared}")
        if c.redis_url:
            share.append(f"Redis {host_of(c.redis_url)}")
        side_nodes = [b.node("store:cache", "store", "cache store", *share,
                             f"{c.max_entries} entries / {c.max_bytes // 2**20} MB")]
        b.edge(stage, side_nodes[0], style="store")
        if sem is not None:
            from llmgw.cache.defaults import LEXICAL_THRESHOLD, MINILM_THRESHOLD

            threshold = pol.threshold or (MINILM_THRESHOLD if sem.embedder == "minilm" else LEXICAL_THRESHOLD)
            what = {"minilm": "MiniLM (in-process)", "lexical": "lexical (built in)"}.get(
                sem.embedder, f"model group {sem.embedder.removeprefix('model:')}")
            emb = b.node("store:embedder", "store", "semantic index", f"embedder {what}", f"cosine >= {_n(threshold)}",
                         "near-miss guards" if sem.guards else "no near-miss guards",
                         f"verifier {sem.verifier_model or sem.verifier_target}"
                         if sem.verifier_model or sem.verifier_target else "")
            side_nodes.append(emb)
            b.edge(stage, emb, style="store")
        stages.append(stage)
        b.columns.append(Column("gateway", (stage,), tuple(side_nodes)))
    return stages


def diagram_model(config: Config, live: Mapping[str, str | Sequence[str]] | None = None) -> Diagram:
    """The diagram of `config`; `live` adds short lines (figures of a running gateway) to the nodes
    it names (ids not in the diagram are ignored)."""
    cfg = config
    b = _Builder()
    s = cfg.server
    client = b.node("client", "client", "clients", "OpenAI / Anthropic API", f"to {s.host}:{s.port}",
                    _plural(s.workers, "worker"))
    b.columns.append(Column("clients", (client,)))
    stages = _stage_columns(b, cfg)
    router = b.node("router", "router", "router", _plural(len(cfg.models), "model group"))
    b.columns.append(Column("gateway", (router,)))
    path = [client, *stages, router]
    for a, z in zip(path, path[1:]):
        b.edge(a, z)

    groups: list[str] = []
    deployments: list[str] = []
    used: list[str] = []

    def ref(name: str) -> str:  # a fallback/shadow target: a model group, else a deployment
        return f"group:{name}" if name in cfg.models else f"deployment:{name}"

    for name, grp in cfg.models.items():
        gid = b.node(f"group:{name}", "group", name,
                     f"strategy {grp.strategy}" if len(grp.deployments) > 1 else "",
                     f"retries {grp.retries.attempts}" if grp.retries.attempts is not None else "",
                     f"breaker: {grp.breaker.failures} failures, {_n(grp.breaker.cooldown)} s" if grp.breaker else "",
                     f"hedge after {_n(grp.hedge.after)} s" if grp.hedge else "",
                     f"deadline {_n(grp.timeout)} s" if grp.timeout else "",
                     "not cached" if cfg.cache is not None and not cfg.cache.for_group(name).enabled else "")
        groups.append(gid)
        b.edge(router, gid)
        many = len(grp.deployments) > 1
        for d in grp.deployments:
            price = f"${_n(d.price.input)} / ${_n(d.price.output)} per 1M" if d.price else ""
            limits = " ".join(x for x in (f"rpm {d.rpm}" if d.rpm else "", f"tpm {d.tpm}" if d.tpm else "") if x)
            did = b.node(f"deployment:{d.name}", "deployment", d.name, f"model {d.model}",
                         f"weight {_n(d.weight)}" if many else "", limits, price,
                         f"context {d.context_window}" if d.context_window else "",
                         f"tags {', '.join(d.tags)}" if d.tags else "")
            deployments.append(did)
            b.edge(gid, did, f"weight {_n(d.weight)}" if many else "")
            b.edge(did, f"upstream:{d.upstream}")
            if d.upstream not in used:
                used.append(d.upstream)
    for name, grp in cfg.models.items():
        gid = f"group:{name}"
        for fb in grp.fallbacks:
            b.edge(gid, ref(fb.to), "fallback on " + ", ".join(t for t in TRIGGERS if t in fb.on), "fallback")
        for i, rule in enumerate(grp.rules, 1):
            when = [k for k in ("headers", "metadata", "key", "team", "user", "min_prompt_tokens",
                                "max_prompt_tokens", "tools", "images", "stream") if getattr(rule, k) not in (None, ())]
            b.edge(gid, ref(rule.use), f"rule {i}: {', '.join(when) or 'always'}", "route")
        if grp.complexity is not None:
            b.edge(gid, ref(grp.complexity.easy), f"easy (< {_n(grp.complexity.threshold)})", "route")
            b.edge(gid, ref(grp.complexity.hard), "hard", "route")
        if grp.shadow is not None:
            b.edge(gid, ref(grp.shadow.to), f"shadow {grp.shadow.sample:.0%}", "route")
    b.columns.append(Column("groups", tuple(groups)))
    b.columns.append(Column("deployments", tuple(deployments)))

    ups = []
    for name in [*used, *(u for u in cfg.upstreams if u not in used)]:
        up = cfg.upstreams[name]
        ups.append(b.node(f"upstream:{name}", "upstream", name, f"{up.provider} at {host_of(up.base_url)}",
                          f"up to {up.max_connections} connections" if up.max_connections != 256 else "",
                          "aiohttp transport" if up.transport == "aiohttp" else "",
                          "TLS not verified" if not up.tls_verify else ""))
    b.columns.append(Column("upstreams", tuple(ups)))

    sem = cfg.cache.semantic if cfg.cache is not None else None
    if sem is not None:
        if sem.embedder.startswith("model:"):
            b.edge("store:embedder", f"group:{sem.embedder.removeprefix('model:')}", "embeddings", "uses")
        if sem.verifier_model:
            b.edge("store:embedder", f"group:{sem.verifier_model}", "verifier", "uses")

    nodes = b.nodes
    if live:
        nodes = [Node(n.id, n.kind, n.label, n.detail, _live_lines(live[n.id])) if n.id in live else n for n in nodes]
    title = f"llmgw architecture: {Path(cfg.path).name}" if cfg.path else "llmgw architecture"
    return Diagram(title, tuple(nodes), tuple(b.edges), tuple(b.columns))


def _live_lines(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


def render(config: Config, fmt: str = "mermaid", live: Mapping[str, str | Sequence[str]] | None = None) -> str:
    """`config`'s diagram as "mermaid" or "svg" text."""
    d = diagram_model(config, live)
    if fmt == "svg":
        return to_svg(d)
    if fmt == "mermaid":
        return to_mermaid(d)
    raise ValueError(f"unknown diagram format {fmt!r}: use svg or mermaid")


# -------------------------------------------------------------------------------------------- Mermaid

_MERMAID_SHAPES = {"client": ('(["', '"])'), "stage": ('["', '"]'), "router": ('{{"', '"}}'),
                   "group": ('["', '"]'), "deployment": ('("', '")'), "upstream": ('[["', '"]]'),
                   "store": ('[("', '")]'), "exporter": ('>"', '"]')}
_MERMAID_ARROWS = {"flow": "-->", "fallback": "-.->", "route": "-.->", "store": "-.-", "uses": "-.->"}
# Mermaid's entity codes: a quote ends the label, '#' starts an entity, '<' '>' '&' are HTML in labels.
_MERMAID_ESCAPES = {'"': "#34;", "#": "#35;", "&": "#38;", "<": "#60;", ">": "#62;", "|": "#124;", "`": "#96;"}
_COLOURS = {  # kind: (fill, stroke)
    "client": ("#f1f3f5", "#495057"), "stage": ("#e7f0ff", "#3b6fd8"), "router": ("#fff4e0", "#d9822b"),
    "group": ("#e6f7ee", "#2b8a3e"), "deployment": ("#f3f0ff", "#6741d9"), "upstream": ("#fff0f6", "#c2255c"),
    "store": ("#f8f9fa", "#868e96"), "exporter": ("#fffbe6", "#b08800")}
_EDGE_COLOURS = {"flow": "#495057", "fallback": "#d9480f", "route": "#7048e8", "store": "#868e96", "uses": "#868e96"}


def _clean(text: str) -> str:
    return "".join(ch if ch >= " " and ch != "\x7f" else " " for ch in text)


def _mermaid_text(text: str) -> str:
    return "".join(_MERMAID_ESCAPES.get(ch, ch) for ch in _clean(text))


def _mermaid_ids(d: Diagram) -> dict[str, str]:
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for n in d.nodes:
        base = re.sub(r"[^A-Za-z0-9_]", "_", n.id)
        mid, k = base, 2
        while mid in taken:
            mid, k = f"{base}_{k}", k + 1
        taken.add(mid)
        ids[n.id] = mid
    return ids


def to_mermaid(d: Diagram) -> str:
    """A Mermaid `flowchart LR`: sections as subgraphs, side nodes beside them, styled by kind."""
    ids = _mermaid_ids(d)
    nodes = {n.id: n for n in d.nodes}
    out = ["flowchart LR", f"  %% {_mermaid_text(d.title)} (generated by llmgw diagram)"]

    def node_line(node_id: str, indent: str) -> str:
        n = nodes[node_id]
        left, right = _MERMAID_SHAPES[n.kind]
        text = "<br/>".join(_mermaid_text(x) for x in (n.label, *n.detail, *n.live))
        return f"{indent}{ids[n.id]}{left}{text}{right}"

    section = None
    for col in d.columns:
        if col.section != section:
            if section not in (None, "clients"):
                out.append("  end")
            section = col.section
            if section != "clients":
                out.append(f'  subgraph sec_{section}["{_mermaid_text(SECTIONS[section])}"]')
        out += [node_line(n, "    " if section != "clients" else "  ") for n in col.nodes]
    if section not in (None, "clients"):
        out.append("  end")
    out += [node_line(n, "  ") for col in d.columns for n in col.side]
    styled: dict[str, list[int]] = {}
    for i, e in enumerate(d.edges):
        label = f'|"{_mermaid_text(e.label)}"|' if e.label else ""
        out.append(f"  {ids[e.source]} {_MERMAID_ARROWS[e.style]}{label} {ids[e.target]}")
        styled.setdefault(e.style, []).append(i)
    for kind in KINDS:
        members = [ids[n.id] for n in d.nodes if n.kind == kind]
        if members:
            fill, stroke = _COLOURS[kind]
            out.append(f"  classDef k_{kind} fill:{fill},stroke:{stroke},color:#212529")
            out.append(f"  class {','.join(members)} k_{kind}")
    for style in ("fallback", "route"):
        if style in styled:
            out.append(f"  linkStyle {','.join(map(str, styled[style]))} stroke:{_EDGE_COLOURS[style]}")
    live = [ids[n.id] for n in d.nodes if n.live]
    if live:
        out.append("  classDef k_live stroke-width:3px")
        out.append(f"  class {','.join(live)} k_live")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ SVG

FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"
LABEL_PX, DETAIL_PX = 13, 11  # font sizes; a monospace glyph is ~0.6 em wide
LABEL_W, DETAIL_W = LABEL_PX * 0.62, DETAIL_PX * 0.62
LABEL_H, DETAIL_H, PAD, SIDE_INDENT = 18, 14, 7, 18
V_GAP, GAP_MIN, MARGIN, HEADER = 14, 56, 16, 46
WRAP, EDGE_WRAP = 40, 26


@dataclass(slots=True)
class _Box:
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0
    lines: list[str] = field(default_factory=list)  # detail lines, wrapped
    live: list[str] = field(default_factory=list)

    @property
    def mid(self) -> float:
        return self.y + self.h / 2


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def _f(x: float) -> str:
    return f"{round(x, 1):g}"


def _text_w(lines: Sequence[str], char_w: float) -> float:
    return max((len(s) for s in lines), default=0) * char_w


def to_svg(d: Diagram) -> str:
    """A self-contained SVG of the diagram (no external fonts, CSS or scripts)."""
    nodes = {n.id: n for n in d.nodes}
    col_of: dict[str, int] = {}
    side: set[str] = set()
    for ci, col in enumerate(d.columns):
        col_of.update({n: ci for n in (*col.nodes, *col.side)})
        side.update(col.side)
    boxes = {n.id: _Box(lines=[w for x in n.detail for w in _wrap(_clean(x), WRAP)],
                        live=[w for x in n.live for w in _wrap(_clean(x), WRAP)]) for n in d.nodes}
    for n in d.nodes:
        b = boxes[n.id]
        b.h = 2 * PAD + LABEL_H + DETAIL_H * (len(b.lines) + len(b.live))
    widths = []
    for col in d.columns:
        w = 0.0
        for nid in (*col.nodes, *col.side):
            b = boxes[nid]
            inner = max(len(_clean(nodes[nid].label)) * LABEL_W, _text_w(b.lines + b.live, DETAIL_W)) + 2 * PAD + 4
            w = max(w, inner + (SIDE_INDENT if nid in side else 0))
        widths.append(max(w, 110.0))

    tree, adjacent, arcs, channel = [], [], [], []
    for e in d.edges:
        cs, ct = col_of[e.source], col_of[e.target]
        if e.target in d.columns[cs].side and e.source in d.columns[cs].nodes:
            tree.append(e)
        elif e.source not in side and e.target not in side and ct == cs + 1:
            adjacent.append(e)
        elif e.source not in side and e.target not in side and ct == cs:
            arcs.append(e)
        else:
            channel.append(e)
    labels = {id(e): _wrap(_clean(e.label), EDGE_WRAP) if e.label else [] for e in d.edges}

    def label_size(e: Edge) -> tuple[float, float]:
        ls = labels[id(e)]
        return (_text_w(ls, DETAIL_W) + 8, len(ls) * 13 + 4) if ls else (0.0, 0.0)

    gaps = [float(GAP_MIN)] * max(len(d.columns) - 1, 0)
    for e in adjacent:
        gaps[col_of[e.source]] = max(gaps[col_of[e.source]], label_size(e)[0] + 28)
    # Edges between nodes of one column (fallbacks between groups): a bracket on the column's left,
    # the k-th one 12 px further out; their labels stacked left of all brackets, a leader to each.
    arc_k: dict[int, int] = {}
    per_col: dict[int, list[Edge]] = {}
    for e in arcs:
        per_col.setdefault(col_of[e.source], []).append(e)
        arc_k[id(e)] = len(per_col[col_of[e.source]]) - 1
    for c, es in per_col.items():
        if c > 0:
            gaps[c - 1] = max(gaps[c - 1], 16 + 12 * len(es) + max(label_size(e)[0] for e in es) + 24)

    xs, x = [], float(MARGIN)
    for ci, w in enumerate(widths):
        xs.append(x)
        x += w + (gaps[ci] if ci < len(gaps) else 0)
    width = x + MARGIN

    stack_h = [sum(boxes[n].h for n in col.nodes) + V_GAP * (len(col.nodes) - 1) for col in d.columns]
    axis = MARGIN + HEADER + max(stack_h, default=0) / 2
    bottom = axis
    for ci, col in enumerate(d.columns):
        y = axis - stack_h[ci] / 2
        for nid in col.nodes:
            b = boxes[nid]
            b.x, b.y, b.w = xs[ci], y, widths[ci]
            y += b.h + V_GAP
        y += 28 - V_GAP
        for nid in col.side:
            b = boxes[nid]
            b.x, b.y, b.w = xs[ci] + SIDE_INDENT, y, widths[ci] - SIDE_INDENT
            y += b.h + V_GAP
        bottom = max(bottom, y - V_GAP)

    out_edges: list[str] = []
    out_labels: list[str] = []

    def path(e: Edge, d_attr: str) -> None:
        out_edges.append(f'<path class="e {e.style}" d="{d_attr}" marker-end="url(#a-{e.style})"/>')

    def label_at(e: Edge, cx: float, cy: float) -> None:
        ls = labels[id(e)]
        if not ls:
            return
        w, h = label_size(e)
        out_labels.append(f'<rect class="lb" x="{_f(cx - w / 2)}" y="{_f(cy - h / 2)}" width="{_f(w)}" '
                          f'height="{_f(h)}" rx="3"/>')
        for i, s in enumerate(ls):
            out_labels.append(f'<text class="el {e.style}" x="{_f(cx)}" y="{_f(cy - h / 2 + 12 + 13 * i)}" '
                              f'text-anchor="middle">{escape(s)}</text>')

    for e in tree:  # a dotted bus down the column's left, a branch into each store or exporter
        src, dst = boxes[e.source], boxes[e.target]
        bx = src.x + SIDE_INDENT / 2
        path(e, f"M{_f(bx)} {_f(src.y + src.h)}V{_f(dst.mid)}H{_f(dst.x - 1)}")
    for e in adjacent:
        src, dst = boxes[e.source], boxes[e.target]
        x1, y1, x2, y2 = src.x + src.w, src.mid, dst.x - 1, dst.mid
        dx = (x2 - x1) / 2
        path(e, f"M{_f(x1)} {_f(y1)}C{_f(x1 + dx)} {_f(y1)} {_f(x2 - dx)} {_f(y2)} {_f(x2)} {_f(y2)}")
        label_at(e, (x1 + x2) / 2, (y1 + y2) / 2)
    for c, es in per_col.items():
        x0 = xs[c]
        label_right = x0 - 16 - 12 * len(es) - 4
        placed = -1e9
        for e in sorted(es, key=lambda e: ((boxes[e.source].mid + boxes[e.target].mid) / 2, arc_k[id(e)])):
            k = arc_k[id(e)]
            src, dst = boxes[e.source], boxes[e.target]
            y1, y2 = src.mid + min(6 + 4 * k, src.h / 2 - 3), dst.mid - min(6 + 4 * k, dst.h / 2 - 3)
            xk = x0 - 16 - 12 * k
            path(e, f"M{_f(x0)} {_f(y1)}H{_f(xk)}V{_f(y2)}H{_f(x0 - 1)}")
            w, h = label_size(e)
            if not w:
                continue
            ly = max((y1 + y2) / 2, placed + h / 2 + 3)
            placed = ly + h / 2
            out_edges.append(f'<path class="e {e.style}" d="M{_f(xk)} {_f(min(max(ly, min(y1, y2)), max(y1, y2)))}'
                             f'L{_f(label_right)} {_f(ly)}"/>')
            label_at(e, label_right - w / 2, ly)
    for k, e in enumerate(channel):  # out to the right, down to a channel under everything, across, up
        src, dst = boxes[e.source], boxes[e.target]
        cy = bottom + 26 + 22 * k
        out_x, in_x = src.x + src.w + 10 + 6 * k, dst.x - 10 - 6 * k
        path(e, f"M{_f(src.x + src.w)} {_f(src.mid)}H{_f(out_x)}V{_f(cy)}H{_f(in_x)}V{_f(dst.mid)}H{_f(dst.x - 1)}")
        label_at(e, (out_x + in_x) / 2, cy)
    if channel:
        bottom += 26 + 22 * len(channel)

    legend_y = bottom + 30
    height = legend_y + 16 + MARGIN

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_f(width)}" height="{_f(height)}" '
           f'viewBox="0 0 {_f(width)} {_f(height)}" font-family="{FONT}" role="img" '
           f'aria-label="{escape(_clean(d.title), {chr(34): "&quot;"})}">',
           f"<title>{escape(_clean(d.title))}</title>", _svg_style(), "<defs>"]
    for style in EDGE_STYLES:
        out.append(f'<marker id="a-{style}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
                   f'orient="auto"><path d="M0 0L10 5L0 10z" fill="{_EDGE_COLOURS[style]}"/></marker>')
    out += ["</defs>", f'<rect width="{_f(width)}" height="{_f(height)}" fill="#ffffff"/>',
            f'<text class="title" x="{MARGIN}" y="{MARGIN + 12}">{escape(_clean(d.title))}</text>']
    seen: dict[str, list[int]] = {}
    for ci, col in enumerate(d.columns):
        seen.setdefault(col.section, []).append(ci)
    for section, cols in seen.items():
        x0, x1 = xs[cols[0]], xs[cols[-1]] + widths[cols[-1]]
        if section == "gateway":
            out.append(f'<rect class="band" x="{_f(x0 - 10)}" y="{MARGIN + 22}" width="{_f(x1 - x0 + 20)}" '
                       f'height="{_f(bottom - MARGIN - 22 + 10)}" rx="8"/>')
        out.append(f'<text class="sec" x="{_f(x0)}" y="{MARGIN + 36}">{escape(SECTIONS[section])}</text>')
    out += out_edges
    for n in d.nodes:
        b = boxes[n.id]
        out.append(f'<g class="node {n.kind}" data-node="{escape(_clean(n.id), {chr(34): "&quot;"})}">')
        out.append(f'<rect x="{_f(b.x)}" y="{_f(b.y)}" width="{_f(b.w)}" height="{_f(b.h)}" rx="6"/>')
        ty = b.y + PAD + 13
        out.append(f'<text class="label" x="{_f(b.x + PAD)}" y="{_f(ty)}">{escape(_clean(n.label))}</text>')
        ty += LABEL_H - 2
        for s in b.lines:
            out.append(f'<text class="detail" x="{_f(b.x + PAD)}" y="{_f(ty)}">{escape(s)}</text>')
            ty += DETAIL_H
        for s in b.live:
            out.append(f'<text class="live" x="{_f(b.x + PAD)}" y="{_f(ty)}">{escape(s)}</text>')
            ty += DETAIL_H
        out.append("</g>")
    out += out_labels
    out += _svg_legend(d, legend_y)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _svg_style() -> str:
    rules = [".title{font-size:14px;font-weight:bold;fill:#212529}",
             ".sec{font-size:11px;fill:#868e96;letter-spacing:0.5px}",
             ".band{fill:#f8fafc;stroke:#dee2e6;stroke-dasharray:4 3}",
             f".label{{font-size:{LABEL_PX}px;font-weight:bold;fill:#212529}}",
             f".detail{{font-size:{DETAIL_PX}px;fill:#495057}}",
             f".live{{font-size:{DETAIL_PX}px;font-weight:bold;fill:#0b7285}}",
             ".el{font-size:10px;fill:#343a40}", ".lb{fill:#ffffff;fill-opacity:0.92}",
             ".e{fill:none;stroke-width:1.4}"]
    rules += [f".node.{k} rect{{fill:{fill};stroke:{stroke};stroke-width:1.2}}" for k, (fill, stroke) in
              _COLOURS.items()]
    dash = {"flow": "", "fallback": "6 4", "route": "4 3", "store": "2 3", "uses": "4 3"}
    rules += [f".e.{s}{{stroke:{_EDGE_COLOURS[s]}" + (f";stroke-dasharray:{dash[s]}" if dash[s] else "") + "}"
              for s in EDGE_STYLES]
    rules += [f".el.{s}{{fill:{_EDGE_COLOURS[s]}}}" for s in ("fallback", "route")]
    return "<style>" + "".join(rules) + "</style>"


def _svg_legend(d: Diagram, y: float) -> list[str]:
    names = {"flow": "request path", "fallback": "fallback (on triggers)", "route": "rule / complexity / shadow",
             "store": "store or exporter", "uses": "uses a model group"}
    present = [s for s in EDGE_STYLES if any(e.style == s for e in d.edges)]
    out, x = [], float(MARGIN)
    for s in present:
        out.append(f'<path class="e {s}" d="M{_f(x)} {_f(y - 4)}H{_f(x + 28)}" marker-end="url(#a-{s})"/>')
        out.append(f'<text class="el" x="{_f(x + 34)}" y="{_f(y)}">{escape(names[s])}</text>')
        x += 34 + len(names[s]) * 6.2 + 22
    if any(n.live for n in d.nodes):
        out.append(f'<text class="live" x="{_f(x)}" y="{_f(y)}">live figures</text>')
    return out
