"""`llmgw` command line: serve, demo, check-config, keys, spend, mock-upstream, bench."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from llmgw.config import Config, ConfigError, load_config
from llmgw.providers import registry
from llmgw.serve import serve

EXAMPLES = Path(__file__).resolve().parent / "examples"


def _load_or_exit(path: str) -> Config:
    try:
        return load_config(path, providers=registry)
    except ConfigError as exc:
        print(f"llmgw: invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _load_or_exit(args.config)
    os.environ["LLMGW_CONFIG"] = str(Path(args.config).resolve())
    host = args.host or cfg.server.host
    port = args.port if args.port is not None else cfg.server.port
    workers = args.workers or cfg.server.workers
    m = cfg.observability.metrics
    metrics_addr = (m.host or host, m.port) if m.enabled and m.port else None
    where = f"; metrics on http://{metrics_addr[0]}:{metrics_addr[1]}{m.path}" if metrics_addr else ""
    print(f"llmgw: serving {len(cfg.models)} model(s) on http://{host}:{port} with {workers} worker(s){where}",
          flush=True)
    return serve(str(Path(args.config).resolve()), host, port, workers, metrics_addr)


def cmd_demo(args: argparse.Namespace) -> int:
    from llmgw.mock import MockUpstream

    with MockUpstream(port=args.mock_port) as mock:
        os.environ["LLMGW_DEMO_UPSTREAM"] = f"{mock.url}/v1"
        config = str(EXAMPLES / "demo.yaml")
        cfg = _load_or_exit(config)
        os.environ["LLMGW_CONFIG"] = config
        url = f"http://{args.host}:{args.port}"
        print(f"""llmgw demo: gateway on {url}, built-in mock upstream on {mock.url} (no API key needed).
Try:
  curl {url}/v1/chat/completions -H 'content-type: application/json' \\
       -d '{{"model": "demo", "messages": [{{"role": "user", "content": "Hello!"}}]}}'
or with the OpenAI SDK: OpenAI(base_url="{url}/v1", api_key="unused").
Models: {', '.join(cfg.models)}. Ctrl-C stops.""", flush=True)
        serve(config, args.host, args.port, 1)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from llmgw.plugins.loader import PluginLoadError, load_plugins

    try:
        cfg = load_config(args.config, providers=registry)
        load_plugins(cfg.plugins)
    except (ConfigError, PluginLoadError) as exc:
        print(f"{args.config}: INVALID\n{exc}", file=sys.stderr)
        return 2
    print(f"{args.config}: OK")
    s = cfg.server
    print(f"  server: http://{s.host}:{s.port}, {s.workers} worker(s), request bodies up to {s.max_body_bytes} bytes "
          f"nested at most {s.max_json_depth} deep")
    print(f"  limits per worker: {s.max_connections} connections, {s.max_inflight} requests in flight; timeouts: "
          f"head {s.header_timeout:g}s, body {s.body_timeout:g}s, idle keep-alive {s.keepalive_timeout:g}s, "
          f"slow reader {s.write_timeout:g}s")
    for up in cfg.upstreams.values():
        key = "API key set" if up.api_key else "no API key"
        print(f"  upstream {up.name}: {up.provider} at {up.base_url} ({key}; up to {up.max_connections} connections)")
    from llmgw.clock import Clock
    from llmgw.routing import DeploymentStates, Router

    router = Router(cfg, DeploymentStates(Clock()), Clock())
    for name, group in cfg.models.items():
        if len(group.deployments) == 1 and not (group.fallbacks or group.rules or group.complexity or group.shadow
                                                or group.breaker or group.hedge or group.timeout):
            d = group.deployments[0]
            alias = f" (as {d.model!r})" if d.model != name else ""
            print(f"  model {name} -> upstream {d.upstream}{alias}")
        else:
            for line in router.explain(name):
                print(f"  {line}")
    print(f"  request path: {' -> '.join(_stages(cfg))}")
    for p in cfg.plugins:
        print(f"  plugin {p.target} options={sorted(p.options)} (a crash: {'ignored, counted' if p.on_error == 'open' else '500'})")
    _explain_guardrails(cfg)
    _explain_cache(cfg)
    _explain_observability(cfg)
    gov = cfg.governance
    if gov is None:
        print(f"  client auth: {len(cfg.auth_keys)} key(s)" if cfg.auth_keys
              else "  client auth: off (anyone reaching the port may call)")
        return 0
    from llmgw.governance.pricing import PriceBook

    where = gov.sqlite_path if gov.store == "sqlite" else "PostgreSQL"
    print(f"  governance: virtual keys and ledger in {gov.store} ({where}), limits and budgets in "
          f"{'shared memory (this machine)' if gov.counters == 'local' else 'Redis'}; "
          f"admin API and dashboard (/ui) {'on' if gov.master_key else 'off (no master_key)'}; "
          f"{len(cfg.auth_keys)} key(s) from the config")
    book = PriceBook(cfg)
    for d in book.unpriced():
        print(f"  WARNING: no price is known for deployment {d!r}: its requests will be flagged 'unpriced', not "
              "costed (give it a price in governance.prices or the deployment's price)")
    return 0


def cmd_diagram(args: argparse.Namespace) -> int:
    from llmgw.diagram import render

    try:
        cfg = load_config(args.config, providers=registry)
    except ConfigError as exc:
        print(f"{args.config}: INVALID\n{exc}", file=sys.stderr)
        return 2
    fmt = args.format or ("svg" if args.output and args.output.lower().endswith(".svg") else "mermaid")
    text = render(cfg, fmt)
    if not args.output or args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"{args.output}: {fmt} diagram of {args.config}")
    return 0


def _stages(cfg: Config) -> list[str]:
    """The stages a request passes, in order (the plugin chain, then routing)."""
    obs = cfg.observability
    out = ["client"]
    if obs.metrics.enabled or obs.access_log.format != "off" or obs.tracing or obs.langfuse:
        out.append("observability")
    if cfg.governance is not None:
        out.append("governance (keys, limits, budgets)")
    elif cfg.auth_keys:
        out.append("auth")
    if cfg.guardrails is not None:
        out.append("guardrails")
    out += [p.target for p in cfg.plugins]
    if cfg.cache is not None:
        out.append("cache")
    out += ["router", "upstreams"]
    return out


def _explain_guardrails(cfg: Config) -> None:
    g = cfg.guardrails
    if g is None:
        return
    p = g.policy
    parts = []
    if p.pii.mode != "off":
        parts.append(f"PII {p.pii.mode} ({', '.join(p.pii.types)}) on "
                     f"{' and '.join(w for w, on in (('input', p.pii.input), ('output', p.pii.output)) if on)}")
    if p.injection.mode != "off":
        parts.append(f"prompt injection {p.injection.mode} at score >= {p.injection.threshold:g}"
                     + (f" by {p.injection.classifier}" if p.injection.classifier else ""))
    if p.limits.max_prompt_tokens or p.limits.max_messages:
        parts.append(f"prompts up to {p.limits.max_prompt_tokens or 'any'} tokens / {p.limits.max_messages or 'any'} messages")
    if p.content.block:
        parts.append(f"{len(p.content.block)} blocked term(s)")
    if p.json_schema != "off":
        parts.append(f"json_schema answers validated ({p.json_schema})")
    overrides = [f"{len(d)} {k}" for k, d in (("model", g.models), ("team", g.teams), ("key", g.keys)) if d]
    print(f"  guardrails: {'; '.join(parts) or 'nothing enabled'}"
          + (f"; overrides for {', '.join(overrides)}" if overrides else "")
          + f"; a failing check {'lets the request through' if g.on_error == 'open' else 'refuses it'}")


def _explain_cache(cfg: Config) -> None:
    c = cfg.cache
    if c is None:
        return
    from llmgw.cache.defaults import LEXICAL_THRESHOLD, MINILM_THRESHOLD
    from llmgw.observability.export import safe_url

    p, sem = c.policy, c.semantic
    layers = ["exact"] if p.exact else []
    if sem is not None:
        threshold = p.threshold or (MINILM_THRESHOLD if sem.embedder == "minilm" else LEXICAL_THRESHOLD)
        embedder = sem.embedder.replace("model:", "embeddings model group ")
        layers.append(f"semantic ({embedder}, cosine >= {threshold:g}"
                      + (", near-miss guards" if sem.guards else ", NO near-miss guards")
                      + (f", verifier {sem.verifier_model or sem.verifier_target}" if sem.verifier_model or
                         sem.verifier_target else "") + ")")
    tenant = {"team": "the caller's team" + ("" if cfg.governance or cfg.auth_keys else " (header x-llmgw-team)"),
              "key": "the caller's key", "user": "the caller's user", "global": "one for everybody"}[p.namespace]
    if c.redis_url:
        shared = f"shared through Redis {safe_url(c.redis_url)}"
    elif c.shared == "off":
        shared = "not shared between workers"
    elif c.shared == "auto":
        shared = "shared between --workers"
    else:
        shared = f"shared and kept in {c.shared}"
    off = [g for g, pol in c.models.items() if not pol.enabled]
    print(f"  cache: {' then '.join(layers) or 'off'}; namespace = {tenant}; ttl "
          f"{f'{p.ttl:g}s' if p.ttl else 'none'}, up to {c.max_entries} entries / {c.max_bytes // 2**20} MB per worker; "
          f"{shared}; coalescing {'on' if c.coalesce else 'off'}" + (f"; off for {', '.join(off)}" if off else ""))


def _explain_observability(cfg: Config) -> None:
    from llmgw.observability.export import safe_url

    obs = cfg.observability
    m = obs.metrics
    if m.enabled:
        where = f"port {m.port}" if m.port else "the gateway's port"
        print(f"  metrics: Prometheus at GET {m.path} on {where}"
              + ("; per-key labels ON (one series per key)" if m.per_key_labels else "")
              + "; with several workers one scrape sums them all")
    else:
        print("  metrics: off")
    a = obs.access_log
    if a.format == "off":
        print("  access log: off")
    else:
        fmt = "readable lines on a terminal, JSON otherwise" if a.format == "auto" else a.format
        print(f"  access log: one line per request to {a.destination} ({fmt})"
              + (f"; with request and answer bodies ({a.bodies})" if a.bodies != "none" else ""))
    t = obs.tracing
    if t is not None:
        gz = ", gzip" if t.compression == "gzip" else ""
        print(f"  tracing: OTLP/HTTP spans{gz} to {safe_url(t.endpoint)}{' (from OTEL_* variables)' if t.from_env else ''}, "
              f"{t.sample_ratio:.0%} of new traces (a client's traceparent decides for its own), service {t.service_name!r}; "
              "traceparent sent upstream")
    else:
        print("  tracing: off (a client's traceparent is still passed upstream)")
    lf = obs.langfuse
    if lf is not None:
        via = "its OTLP endpoint" if lf.protocol == "otel" else "its ingestion API"
        print(f"  langfuse: a trace per request to {safe_url(lf.host)} ({via}), {lf.sample_ratio:.0%} sampled, "
              f"prompts and answers {'not sent' if lf.bodies == 'none' else lf.bodies}")


def _delegate(module: str) -> tuple[Any, Any]:
    mod = importlib.import_module(module)
    return mod.add_arguments, mod.run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmgw", description="A fast LLM gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", "-c", required=True, help="YAML configuration file")
    p.add_argument("--host", help="bind address (default: server.host from the config)")
    p.add_argument("--port", type=int, help="port (default: server.port from the config)")
    p.add_argument("--workers", type=int, help="worker processes (default: server.workers)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run the gateway in front of the built-in mock upstream (no API keys)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--mock-port", type=int, default=0, help="mock upstream port (default: any free port)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("check-config", help="validate a configuration file and explain it")
    p.add_argument("config")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("diagram", help="draw a configuration's architecture (SVG or Mermaid) without running it")
    p.add_argument("--config", "-c", required=True, help="YAML configuration file")
    p.add_argument("--format", "-f", choices=("svg", "mermaid"),
                   help="default: svg when OUT ends in .svg, else mermaid")
    p.add_argument("-o", "--output", metavar="OUT", help="write to this file (default: standard output)")
    p.set_defaults(func=cmd_diagram)

    from llmgw.governance.cli import add_keys_arguments, add_spend_arguments, run_keys, run_spend

    p = sub.add_parser("keys", help="manage virtual API keys through a running gateway's admin API")
    add_keys_arguments(p)
    p.set_defaults(func=run_keys)
    p = sub.add_parser("spend", help="spend report from the ledger (table, CSV or JSON)")
    add_spend_arguments(p)
    p.set_defaults(func=run_spend)

    for name, module, help_ in (("mock-upstream", "llmgw.mock", "run the fake provider used by tests and benchmarks"),
                                ("bench", "llmgw.bench", "load-test a gateway URL")):
        p = sub.add_parser(name, help=help_)
        try:
            add, run = _delegate(module)
        except (ImportError, AttributeError):
            continue
        add(p)
        p.set_defaults(func=run)

    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.error(f"{args.command} is not available in this installation")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
