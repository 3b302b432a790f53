"""`llmgw diagram`: the architecture model of a config, its Mermaid and SVG renderings, the command."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from llmgw.cli import _stages, main
from llmgw.config import load_config
from llmgw.diagram import Diagram, diagram_model, to_mermaid, to_svg
from llmgw.providers import registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SVG = "{http://www.w3.org/2000/svg}"

ENV = {"OPENAI_API_KEY": "sk-dummy-openai", "LLMGW_ALICE_KEY": "alice-key-0123456789abcdef",
       "LLMGW_BENCH_UPSTREAM": "http://127.0.0.1:9000/v1", "LLMGW_PRIMARY_UPSTREAM": "http://127.0.0.1:9001/v1",
       "LLMGW_FALLBACK_UPSTREAM": "http://127.0.0.1:9002/v1", "LLMGW_MASTER_KEY": "master-key-0123456789abcdef",
       "LLMGW_DB_PATH": "/tmp/llmgw-diagram-test.db"}
UNSET = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED", "VLLM_URL",
         "LLMGW_GUARDRAILS_AUDIT", "LLMGW_BENCH_MODEL")
OBS = ["exporter:metrics", "exporter:access_log"]  # metrics and the access log are on unless turned off

# example: (stages in request order, stores/exporters, groups, deployments, upstreams)
EXPECTED = {
    "quickstart": (["stage:observability", "stage:auth", "plugin:1"], OBS,
                   ["gpt-4o-mini", "fast"], ["gpt-4o-mini", "fast"], ["openai", "local-vllm"]),
    "fallback": (["stage:observability"], OBS, ["chain", "secondary"], ["primary", "secondary"],
                 ["primary", "secondary"]),
    "governance": (["stage:observability", "stage:governance"], [*OBS, "store:keys", "store:counters"],
                   ["bench"], ["bench"], ["bench"]),
    "guardrails": (["stage:observability", "stage:guardrails"], [*OBS, "exporter:guardrails_audit"],
                   ["bench"], ["bench"], ["bench"]),
    "cache": (["stage:observability", "stage:cache"], [*OBS, "store:cache", "store:embedder"],
              ["bench"], ["bench"], ["bench"]),
    "observability": (["stage:observability"], OBS, ["bench"], ["bench"], ["bench"]),
}

CANARIES = ["CANARY-USERINFO-PW", "CANARY-QUERY", "CANARY-API-KEY", "CANARY-HEADER-VALUE", "CANARY-ANTHROPIC-KEY",
            "CANARY-RULE-HEADER", "CANARY-CLIENT-KEY", "CANARY-PLUGIN-OPTION", "CANARY-MASTER-KEY",
            "CANARY-PG-PASSWORD", "CANARY-PG-QUERY", "CANARY-REDIS-PW", "CANARY-TEAM-KEY", "CANARY-BLOCKED-TERM",
            "CANARY-PII-ALLOW", "CANARY-CACHE-REDIS-PW", "CANARY-OTLP-PW", "CANARY-OTLP-QUERY",
            "CANARY-OTLP-HEADER", "CANARY-LF-PUBLIC", "CANARY-LF-SECRET", "canaryuser"]

FULL = """
server: {host: 127.0.0.1, port: 9090, workers: 3}
upstreams:
  openai:
    provider: openai
    base_url: https://canaryuser:CANARY-USERINFO-PW@api.example.com:8443/v1?api-key=CANARY-QUERY
    api_key: CANARY-API-KEY-0001
    headers: {x-org: CANARY-HEADER-VALUE}
  local:
    provider: openai
    base_url: http://10.0.0.5:8000/v1
    transport: aiohttp
  spare:
    provider: anthropic
    base_url: https://api.anthropic.com
    api_key: CANARY-ANTHROPIC-KEY
models:
  chat:
    deployments:
      - {name: chat-a, upstream: openai, model: gpt-4o-mini, weight: 3, rpm: 600, price: {input: 0.15, output: 0.6}}
      - {name: chat-b, upstream: local, model: llama, weight: 1, tags: [eu]}
    strategy: weighted
    breaker: {failures: 3, cooldown: 15}
    fallbacks:
      - {to: small, on: [rate_limited, server_error]}
      - {to: chat-c, on: [context_window]}
    rules:
      - {when: {headers: {x-tier: CANARY-RULE-HEADER}}, use: small}
    shadow: {to: small, sample: 0.05}
  small:
    deployments:
      - {name: chat-c, upstream: local, model: llama-small}
    complexity: {easy: small, hard: chat}
  embed: {upstream: openai, model: text-embedding-3-small}
  judge: {upstream: openai, model: gpt-4o-mini}
auth:
  keys:
    - {name: alice, key: CANARY-CLIENT-KEY-00000001}
plugins:
  - {target: "mymod:Thing", options: {token: CANARY-PLUGIN-OPTION}, on_error: open}
governance:
  master_key: CANARY-MASTER-KEY-000001
  store: postgres
  postgres_dsn: postgresql://canaryuser:CANARY-PG-PASSWORD@db.example:5432/llmgw?sslmode=require&password=CANARY-PG-QUERY
  counters: redis
  redis_url: redis://:CANARY-REDIS-PW@redis.example:6379/0
  limits:
    teams: {research: {rpm: 10, budget: {usd: 5, period: day}}}
  teams:
    research: {upstream_keys: {openai: CANARY-TEAM-KEY}}
guardrails:
  pii: {mode: redact, allow: [CANARY-PII-ALLOW]}
  injection: {mode: block, threshold: 0.7}
  content: {block: [CANARY-BLOCKED-TERM]}
  audit_file: /var/log/llmgw/audit.jsonl
cache:
  semantic:
    embedder: {model: embed}
    verifier: {model: judge}
  shared: /var/lib/llmgw/cache.db
  redis: {url: "rediss://canaryuser:CANARY-CACHE-REDIS-PW@cache.example:6380/1"}
  models: {judge: {enabled: false}}
observability:
  tracing:
    endpoint: https://canaryuser:CANARY-OTLP-PW@otel.example:4318/v1/traces?token=CANARY-OTLP-QUERY
    headers: {authorization: "Bearer CANARY-OTLP-HEADER"}
    sample_ratio: 0.1
  langfuse:
    host: https://lf.example
    public_key: CANARY-LF-PUBLIC
    secret_key: CANARY-LF-SECRET
"""


@pytest.fixture
def env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    for k in UNSET:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


@pytest.fixture
def full(env, tmp_path):
    path = tmp_path / "full.yaml"
    path.write_text(FULL)
    return load_config(path, providers=registry)


def example(name: str):
    return load_config(EXAMPLES / f"{name}.yaml", providers=registry)


def main_path(d: Diagram) -> list[str]:
    return [n for col in d.columns for n in col.nodes if d.node(n).kind in ("client", "stage", "router")]


# ------------------------------------------------------------------------------- structural checkers

ID = r"[A-Za-z][A-Za-z0-9_]*"
Q = r'"[^"]*"'
NODE_LINE = re.compile(rf"^\s*({ID})(\(\[{Q}\]\)|\[\({Q}\)\]|\[\[{Q}\]\]|\{{\{{{Q}\}}\}}|\({Q}\)|\[{Q}\]|>{Q}\])$")
EDGE_LINE = re.compile(rf"^\s*({ID}) (-->|-\.->|-\.-)(?:\|({Q})\|)? ({ID})$")


def unescape_mermaid(text: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), text)


def check_mermaid(text: str) -> tuple[dict[str, list[str]], list[tuple[str, str, str, str]]]:
    """Parse what to_mermaid writes, strictly: returns {id: label lines} and [(from, arrow, label, to)]."""
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert text.endswith("\n")
    nodes: dict[str, list[str]] = {}
    edges = []
    depth = 0
    n_links = 0
    for line in lines[1:]:
        assert line.count('"') % 2 == 0, line
        for quoted in re.findall(Q, line):
            inner = quoted[1:-1].replace("<br/>", "\n")
            assert not re.search(r"[<>`|]", inner), line
            assert not re.search(r"#(?!\d+;)", inner), f"stray '#' (an entity start) in {line!r}"
        if line.strip().startswith("%%"):
            continue
        if m := re.fullmatch(rf"\s*subgraph ({ID})\[({Q})\]", line):
            depth += 1
            continue
        if line.strip() == "end":
            depth -= 1
            assert depth >= 0
            continue
        if m := NODE_LINE.fullmatch(line):
            assert m.group(1) not in nodes, f"node {m.group(1)} declared twice"
            label = re.search(Q, m.group(2)).group(0)[1:-1]
            nodes[m.group(1)] = [unescape_mermaid(x) for x in label.split("<br/>")]
            continue
        if m := EDGE_LINE.fullmatch(line):
            edges.append((m.group(1), m.group(2), unescape_mermaid((m.group(3) or '""')[1:-1]), m.group(4)))
            n_links += 1
            continue
        if m := re.fullmatch(rf"\s*classDef ({ID}) [\w:#,.-]+", line):
            continue
        if m := re.fullmatch(rf"\s*class ({ID}(?:,{ID})*) ({ID})", line):
            assert all(i in nodes for i in m.group(1).split(",")), line
            continue
        if m := re.fullmatch(r"\s*linkStyle (\d+(?:,\d+)*) [\w:#,.-]+", line):
            assert all(int(i) < n_links for i in m.group(1).split(",")), line
            continue
        raise AssertionError(f"not a flowchart statement: {line!r}")
    assert depth == 0, "unbalanced subgraph/end"
    for a, _, _, z in edges:
        assert a in nodes and z in nodes, (a, z)
    return nodes, edges


def check_svg(text: str, d: Diagram) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg"
    assert not list(root.iter(f"{SVG}script")) and not list(root.iter(f"{SVG}image"))
    assert "href" not in text and "@import" not in text and "url(http" not in text and "<foreignObject" not in text
    groups = {g.get("data-node"): g for g in root.iter(f"{SVG}g") if g.get("data-node")}
    assert set(groups) == {n.id for n in d.nodes}
    for n in d.nodes:
        texts = list(groups[n.id].iter(f"{SVG}text"))
        assert texts[0].get("class") == "label" and texts[0].text == n.label
        body = " ".join(t.text or "" for t in texts[1:] if t.get("class") == "detail")
        for line in n.detail:
            assert " ".join(line.split()) in " ".join(body.split()), (n.id, line)
    return root


# --------------------------------------------------------------------------------------------- model


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_nodes_of_each_example_match_its_config(env, name):
    cfg = example(name)
    stages, side, groups, deployments, upstreams = EXPECTED[name]
    d = diagram_model(cfg)
    assert main_path(d) == ["client", *stages, "router"]
    assert [f"group:{g}" for g in cfg.models] == [f"group:{g}" for g in groups]
    assert {d.node(f"upstream:{u}").label for u in cfg.upstreams} == set(upstreams)
    expected = {"client", *stages, "router", *side, *(f"group:{g}" for g in groups),
                *(f"deployment:{x}" for x in deployments), *(f"upstream:{u}" for u in upstreams)}
    assert [n.id for n in d.nodes if n.id not in expected] == []  # nothing unconfigured
    assert {n.id for n in d.nodes} == expected
    # columns left to right: clients, the stages, router, groups, deployments, upstreams
    sections = [c.section for c in d.columns]
    assert sections == ["clients", *["gateway"] * (len(stages) + 1), "groups", "deployments", "upstreams"]
    assert sorted(n for c in d.columns for n in c.side) == sorted(side)
    # the request path edges, router -> groups -> deployments -> upstreams
    flow = {(e.source, e.target) for e in d.edges if e.style == "flow"}
    path = main_path(d)
    assert set(zip(path, path[1:])) <= flow
    for g_name, group in cfg.models.items():
        assert ("router", f"group:{g_name}") in flow
        for dep in group.deployments:
            assert (f"group:{g_name}", f"deployment:{dep.name}") in flow
            assert (f"deployment:{dep.name}", f"upstream:{dep.upstream}") in flow
    for s in side:
        assert any(e.target == s and e.style == "store" for e in d.edges)


@pytest.mark.parametrize("name", [*sorted(EXPECTED), "bench"])
def test_stage_order_is_check_configs_request_path(env, name):
    cfg = example(name)
    names = {"client": "client", "stage:observability": "observability", "stage:auth": "auth",
             "stage:governance": "governance (keys, limits, budgets)", "stage:guardrails": "guardrails",
             "stage:cache": "cache", "router": "router"}
    d = diagram_model(cfg)
    ours = [names.get(n, d.node(n).label) for n in main_path(d)]
    assert ours + ["upstreams"] == _stages(cfg)


def test_nothing_unconfigured_appears(env):
    d = diagram_model(example("bench"))  # metrics and access log off, no auth, plugins, cache, governance
    assert [n.id for n in d.nodes] == ["client", "router", "group:bench", "deployment:bench", "upstream:bench"]
    assert all(not c.side for c in d.columns)


def test_tracing_from_the_standard_variables_is_an_exporter_node(env):
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.example:4318")
    d = diagram_model(example("observability"))
    otlp = d.node("exporter:otlp")
    assert otlp.detail[0] == "collector.example:4318" and "from OTEL_* variables" in otlp.detail
    assert "exporter:otlp" in d.columns[1].side


def test_fallback_edges_carry_their_triggers(env):
    d = diagram_model(example("fallback"))
    fb = [e for e in d.edges if e.style == "fallback"]
    assert [(e.source, e.target, e.label) for e in fb] == [
        ("group:chain", "group:secondary", "fallback on rate_limited, server_error, timeout, connection")]
    assert "breaker: 3 failures, 15 s" in d.node("group:chain").detail
    _, edges = check_mermaid(to_mermaid(d))
    assert ("group_chain", "-.->", "fallback on rate_limited, server_error, timeout, connection",
            "group_secondary") in edges


def test_everything_configured_in_one_file(full):
    d = diagram_model(full)
    assert main_path(d) == ["client", "stage:observability", "stage:governance", "stage:guardrails", "plugin:1",
                            "stage:cache", "router"]
    side = {n for c in d.columns for n in c.side}
    assert side == {"exporter:metrics", "exporter:access_log", "exporter:otlp", "exporter:langfuse", "store:keys",
                    "store:counters", "exporter:guardrails_audit", "store:cache", "store:embedder"}
    assert d.node("store:keys").detail[0] == "PostgreSQL db.example:5432/llmgw"
    assert "Redis redis.example:6379" in d.node("store:counters").detail
    assert d.node("store:cache").detail[:2] == ("SQLite /var/lib/llmgw/cache.db", "Redis cache.example:6380")
    assert d.node("exporter:otlp").detail[:2] == ("otel.example:4318", "sampled 10%")
    assert d.node("exporter:langfuse").detail[0] == "lf.example"
    assert d.node("upstream:openai").detail == ("openai at api.example.com:8443",)
    assert d.node("upstream:spare").detail == ("anthropic at api.anthropic.com",)  # unused, still configured
    assert [n for n in d.columns[-1].nodes] == ["upstream:openai", "upstream:local", "upstream:spare"]
    edges = {(e.source, e.target, e.label, e.style) for e in d.edges}
    assert {("group:chat", "deployment:chat-a", "weight 3", "flow"),
            ("group:chat", "deployment:chat-b", "weight 1", "flow"),
            ("group:chat", "group:small", "fallback on rate_limited, server_error", "fallback"),
            ("group:chat", "deployment:chat-c", "fallback on context_window", "fallback"),
            ("group:chat", "group:small", "rule 1: headers", "route"),
            ("group:chat", "group:small", "shadow 5%", "route"),
            ("group:small", "group:small", "easy (< 0.5)", "route"),
            ("group:small", "group:chat", "hard", "route"),
            ("store:embedder", "group:embed", "embeddings", "uses"),
            ("store:embedder", "group:judge", "verifier", "uses")} <= edges
    check_mermaid(to_mermaid(d))
    check_svg(to_svg(d), d)


def test_postgres_dsn_in_key_value_form_shows_host_and_database_only(env, tmp_path):
    path = tmp_path / "pg.yaml"
    path.write_text("""
upstreams: {u: {provider: openai, base_url: "http://127.0.0.1:1/v1"}}
models: {m: {upstream: u}}
governance:
  store: postgres
  postgres_dsn: "host=pg.internal port=5433 dbname=ledger user=gw password=CANARY-KV-PASSWORD"
""")
    d = diagram_model(load_config(path, providers=registry))
    assert d.node("store:keys").detail[0] == "PostgreSQL pg.internal:5433/ledger"
    assert "CANARY" not in to_mermaid(d) + to_svg(d)
    text = path.read_text(encoding="utf-8").replace(
        "host=pg.internal port=5433 dbname=ledger user=gw password=CANARY-KV-PASSWORD",
        "postgresql://gw:CANARY-URL-PASSWORD@pg1:5432,pg2:5433/ledger?password=CANARY-Q")
    path.write_text(text, encoding="utf-8")
    d = diagram_model(load_config(path, providers=registry))
    assert d.node("store:keys").detail[0] == "PostgreSQL pg1:5432,pg2:5433/ledger"
    assert "CANARY" not in to_mermaid(d) + to_svg(d)


# ------------------------------------------------------------------------------------------ renderers


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_mermaid_is_a_well_formed_flowchart(env, name):
    d = diagram_model(example(name))
    nodes, edges = check_mermaid(to_mermaid(d))
    assert len(nodes) == len(d.nodes) and len(edges) == len(d.edges)
    labels = sorted(lines[0] for lines in nodes.values())
    assert labels == sorted(n.label for n in d.nodes)
    for n in d.nodes:
        assert [n.label, *n.detail] in nodes.values()


def test_mermaid_ids_are_sanitised_and_labels_escaped(env, tmp_path):
    path = tmp_path / "odd.yaml"
    path.write_text("""
upstreams: {u: {provider: openai, base_url: "http://127.0.0.1:1/v1"}}
models:
  'a-b': {upstream: u, model: 'say "hi" <b>#1</b> & | `x`'}
  'a_b': {upstream: u}
  'end': {upstream: u}
""")
    d = diagram_model(load_config(path, providers=registry))
    nodes, _ = check_mermaid(to_mermaid(d))
    assert {"group_a_b", "group_a_b_2", "group_end"} <= set(nodes)
    assert ['a-b'] in nodes.values() and ["a-b", 'model say "hi" <b>#1</b> & | `x`'] in nodes.values()
    root = check_svg(to_svg(d), d)
    assert any(t.text == 'model say "hi" <b>#1</b> & | `x`' for t in root.iter(f"{SVG}text"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_svg_is_well_formed_with_a_text_per_node_label(env, name):
    d = diagram_model(example(name))
    root = check_svg(to_svg(d), d)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    for n in d.nodes:
        assert n.label in texts
    for e in d.edges:
        if e.label:
            assert " ".join(e.label.split()) in " ".join(t for t in texts if t)


def test_svg_boxes_do_not_overlap(full):
    d = diagram_model(full)
    root = ET.fromstring(to_svg(d))
    rects = []
    for g in root.iter(f"{SVG}g"):
        if g.get("data-node"):
            r = g.find(f"{SVG}rect")
            rects.append(tuple(float(r.get(k)) for k in ("x", "y", "width", "height")))
    for i, (x, y, w, h) in enumerate(rects):
        for (x2, y2, w2, h2) in rects[i + 1:]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y


def test_secrets_never_appear(full):
    d = diagram_model(full)
    for text in (to_mermaid(d), to_svg(d), repr(d)):
        found = [c for c in CANARIES if c.lower() in text.lower()]
        assert found == []


def test_live_figures_appear_on_the_named_nodes(full):
    live = {"group:chat": ["12.3 req/s", "p50 84 ms"], "deployment:chat-a": "breaker open",
            "stage:cache": ["hit rate 41%"], "no:such-node": ["UNKNOWN-NODE-FIGURE"]}
    d = diagram_model(full, live)
    assert d.node("group:chat").live == ("12.3 req/s", "p50 84 ms")
    assert d.node("deployment:chat-a").live == ("breaker open",)
    assert d.node("router").live == ()
    nodes, _ = check_mermaid(to_mermaid(d))
    assert nodes["group_chat"][-2:] == ["12.3 req/s", "p50 84 ms"]
    assert nodes["stage_cache"][-1] == "hit rate 41%"
    root = check_svg(to_svg(d), d)
    live_of = {g.get("data-node"): [t.text for t in g.iter(f"{SVG}text") if t.get("class") == "live"]
               for g in root.iter(f"{SVG}g") if g.get("data-node")}
    assert live_of["group:chat"] == ["12.3 req/s", "p50 84 ms"]
    assert live_of["deployment:chat-a"] == ["breaker open"]
    assert live_of["router"] == []
    assert "UNKNOWN-NODE-FIGURE" not in to_svg(d) + to_mermaid(d)
    assert diagram_model(full).node("group:chat").live == ()


def test_output_is_deterministic(full, env):
    assert to_svg(diagram_model(full)) == to_svg(diagram_model(full))
    assert to_mermaid(diagram_model(full)) == to_mermaid(diagram_model(full))
    a, b = example("quickstart"), example("quickstart")
    assert to_svg(diagram_model(a)).encode() == to_svg(diagram_model(b)).encode()


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_prints_mermaid_and_writes_files(env, tmp_path, capsys):
    config = str(EXAMPLES / "quickstart.yaml")
    assert main(["diagram", "--config", config]) == 0
    out = capsys.readouterr().out
    nodes, _ = check_mermaid(out)
    assert "plugin_1" in nodes and "sk-dummy" not in out and ENV["LLMGW_ALICE_KEY"] not in out

    svg_path, mmd_path, forced = tmp_path / "q.svg", tmp_path / "q.mmd", tmp_path / "q.txt"
    assert main(["diagram", "-c", config, "-o", str(svg_path)]) == 0
    assert main(["diagram", "-c", config, "-o", str(mmd_path)]) == 0
    assert main(["diagram", "-c", config, "--format", "svg", "-o", str(forced)]) == 0
    d = diagram_model(example("quickstart"))
    check_svg(svg_path.read_text(encoding="utf-8"), d)
    assert svg_path.read_text(encoding="utf-8") == forced.read_text(encoding="utf-8") == to_svg(d)
    assert mmd_path.read_text(encoding="utf-8") == out
    assert str(svg_path) in capsys.readouterr().out
    # same bytes the second time
    first = svg_path.read_bytes()
    assert main(["diagram", "-c", config, "-o", str(svg_path)]) == 0
    assert svg_path.read_bytes() == first


def test_cli_missing_variables_give_check_configs_error(monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("LLMGW_ALICE_KEY", raising=False)
    config = str(EXAMPLES / "quickstart.yaml")
    assert main(["check-config", config]) == 2
    expected = capsys.readouterr().err
    assert main(["diagram", "-c", config]) == 2
    got = capsys.readouterr()
    assert got.err == expected and got.out == ""
    assert "OPENAI_API_KEY is not set" in got.err


def test_docs_diagram_is_the_quickstart_one(env):
    """docs/quickstart-diagram.svg and the README's Mermaid block are what the command makes now
    (regenerate: see the README's "Architecture diagram" section)."""
    d = diagram_model(example("quickstart"))
    assert (ROOT / "docs" / "quickstart-diagram.svg").read_text(encoding="utf-8") == to_svg(d)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](docs/quickstart-diagram.svg)" in readme
    assert "```mermaid\n" + to_mermaid(d) + "```" in readme
