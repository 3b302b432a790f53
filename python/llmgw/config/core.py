"""The gateway's configuration: one YAML file validated into typed, frozen objects at start.

Errors name the file, the line, the key path and the fix (`ConfigError`). Secrets come only from
environment variables written as `${NAME}` (or `${NAME:-default}`) in the file, never from requests.

What providers exist is not known here: the caller hands in the catalog (`providers=`, the
registry of `llmgw.providers`), so this lower layer never imports the adapters above it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import yaml

from llmgw.config.cache import CacheConfig, parse_cache
from llmgw.config.guardrails import GuardrailsConfig, parse_guardrails
from llmgw.config.governance import GovernanceConfig, parse_governance
from llmgw.config.models import ModelGroup, parse_models
from llmgw.config.observability import ObservabilityConfig, parse_observability
from llmgw.config.reader import ConfigError, Doc, get, positive, take, url
from llmgw.transport import Timeouts

__all__ = [
    "AuthKey",
    "Config",
    "ConfigError",
    "PluginSpec",
    "ServerConfig",
    "UpstreamConfig",
    "ProviderCatalog",
    "load_config",
    "parse_config",
]


class ProviderCatalog(Protocol):
    """What config validation needs to know of the provider adapters: their names, and for each
    the adapter class (read for `default_base_url` and `check_options`)."""

    def names(self) -> list[str]: ...

    def get(self, name: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    provider: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    max_connections: int = 256
    timeouts: Timeouts = Timeouts()
    tls_verify: bool = True
    ca_file: str | None = None
    transport: str = "fast"  # "fast" (llmgw.transport) or "aiohttp"
    options: dict[str, Any] = field(default_factory=dict)  # provider-specific (api_version, ...)


@dataclass(frozen=True, slots=True)
class PluginSpec:
    target: str  # "module:Class"
    options: dict[str, Any] = field(default_factory=dict)
    on_error: str = "closed"  # a hook that crashes: closed = the request fails (500); open = logged, counted, ignored


@dataclass(frozen=True, slots=True)
class AuthKey:
    name: str
    key: str = field(repr=False)
    models: tuple[str, ...] | None = None  # None: every model


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """`server:`. Timeouts in seconds; limits per worker process."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 4 * 1024 * 1024
    max_json_depth: int = 64  # nesting of arrays/objects in a request body
    max_connections: int = 4096  # open client connections; beyond: the oldest idle one closes, else 503
    max_inflight: int = 1024  # requests being answered at once; beyond: 503 at once (health checks exempt)
    header_timeout: float = 10.0  # a request head must arrive within this
    body_timeout: float = 30.0  # the whole request body must arrive within this
    keepalive_timeout: float = 60.0  # an idle keep-alive connection is closed after this
    write_timeout: float = 30.0  # a client that reads nothing of a stream for this long is dropped
    shutdown_timeout: float = 30.0  # on SIGTERM: how long requests in flight may take to finish


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    upstreams: dict[str, UpstreamConfig]
    models: dict[str, ModelGroup]
    plugins: tuple[PluginSpec, ...] = ()
    auth_keys: tuple[AuthKey, ...] = ()
    path: str | None = None
    governance: GovernanceConfig | None = None
    guardrails: GuardrailsConfig | None = None
    observability: ObservabilityConfig = ObservabilityConfig()
    cache: CacheConfig | None = None


def _timeouts(doc: Doc, data: Any, path: str) -> Timeouts:
    if data is None:
        return Timeouts()
    if not isinstance(data, dict):
        doc.error(path, "expected a mapping of connect/first_byte/idle/total/pool seconds", "See examples/quickstart.yaml")
        return Timeouts()
    keys = {"connect": "", "first_byte": "", "idle": "", "total": "", "pool": ""}
    take(doc, data, path, keys)
    d = Timeouts()
    return Timeouts(**{k: get(doc, data, path, k, float, getattr(d, k), positive) for k in keys})


def _upstream(doc: Doc, name: str, data: Any, path: str, providers: ProviderCatalog) -> UpstreamConfig | None:
    if not isinstance(data, dict):
        doc.error(path, "expected a mapping", "Give provider and base_url")
        return None
    take(doc, data, path, {"provider": "", "base_url": "", "api_key": "", "headers": "", "max_connections": "",
                            "timeouts": "", "tls_verify": "", "ca_file": "", "options": "",
                            "transport": ""})
    provider = get(doc, data, path, "provider", str, "openai")
    known = providers.names()
    adapter = providers.get(provider) if provider in known else None
    if adapter is None:
        doc.error(f"{path}.provider", f"unknown provider {provider!r}", f"Use one of: {', '.join(sorted(known))}")
    base_url = get(doc, data, path, "base_url", str, "", url)
    if "base_url" not in data:
        default = getattr(adapter, "default_base_url", None)
        if isinstance(default, str):
            base_url = default  # a preset (vllm, ollama, gemini, ...) knows where its server listens
        else:
            doc.error(f"{path}.base_url", "missing",
                      f"Add base_url: http(s)://host:port/v1 (provider {provider!r} has no default; "
                      f"providers with one: {', '.join(_providers_with_default(providers)) or 'none'})")
    headers = get(doc, data, path, "headers", dict, {})
    options = get(doc, data, path, "options", dict, {})
    check = getattr(adapter, "check_options", None)
    if check is not None:
        for key, problem, fix in check(options):
            doc.error(f"{path}.options.{key}", problem, fix)
    return UpstreamConfig(
        name=name,
        provider=provider,
        base_url=base_url.rstrip("/"),
        api_key=get(doc, data, path, "api_key", str, None) or None,
        headers=tuple((str(k).lower(), str(v)) for k, v in headers.items()),
        max_connections=get(doc, data, path, "max_connections", int, 256, positive),
        timeouts=_timeouts(doc, data.get("timeouts"), f"{path}.timeouts"),
        tls_verify=get(doc, data, path, "tls_verify", bool, True),
        ca_file=get(doc, data, path, "ca_file", str, None,
                     lambda v: None if os.path.isfile(v) else f"CA file {v!r} does not exist"),
        transport=get(doc, data, path, "transport", str, "fast",
                       lambda v: None if v in ("fast", "aiohttp") else f"must be 'fast' or 'aiohttp', got {v!r}"),
        options=options,
    )


def _providers_with_default(providers: ProviderCatalog) -> list[str]:
    return [n for n in providers.names() if isinstance(getattr(providers.get(n), "default_base_url", None), str)]


def parse_config(text: str, *, providers: ProviderCatalog, source: str = "<config>",
                 env: dict[str, str] | None = None) -> Config:
    """Validate YAML text into a Config, or raise ConfigError listing every problem found.
    `providers` is the catalog of provider adapters (`llmgw.providers.registry`)."""
    doc = Doc(source, dict(os.environ) if env is None else env)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}. Check indentation and quoting"]) from None
    data = doc.to_python(node, "") if node is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the file must be a mapping with upstreams: and models:"])
    take(doc, data, "", {"server": "", "upstreams": "", "models": "", "plugins": "", "auth": "", "governance": "",
                          "guardrails": "", "observability": "", "cache": ""})

    srv = data.get("server") or {}
    if not isinstance(srv, dict):
        doc.error("server", "expected a mapping", "Write server: {host: ..., port: ...}")
        srv = {}
    d = ServerConfig()
    take(doc, srv, "server", {f: "" for f in ServerConfig.__dataclass_fields__})
    ints = {"workers", "max_body_bytes", "max_json_depth", "max_connections", "max_inflight"}
    floats = {"header_timeout", "body_timeout", "keepalive_timeout", "write_timeout", "shutdown_timeout"}
    server = ServerConfig(
        host=get(doc, srv, "server", "host", str, d.host),
        port=get(doc, srv, "server", "port", int, d.port, lambda v: None if 0 <= v < 65536 else "must be 0-65535"),
        max_json_depth=get(doc, srv, "server", "max_json_depth", int, d.max_json_depth,
                            lambda v: None if 1 <= v <= 250 else f"must be 1-250, got {v}"),
        **{k: get(doc, srv, "server", k, int, getattr(d, k), positive) for k in ints - {"max_json_depth"}},
        **{k: get(doc, srv, "server", k, float, getattr(d, k), positive) for k in floats},
    )

    upstreams: dict[str, UpstreamConfig] = {}
    raw_up = data.get("upstreams")
    if not isinstance(raw_up, dict) or not raw_up:
        doc.error("upstreams", "missing or empty", "Add at least one upstream: upstreams: {name: {provider, base_url}}")
        raw_up = {}
    for name, item in raw_up.items():
        up = _upstream(doc, name, item, f"upstreams.{name}", providers)
        if up is not None:
            upstreams[name] = up

    models = parse_models(doc, data.get("models"), set(raw_up))

    plugins: list[PluginSpec] = []
    raw_plugins = data.get("plugins") or []
    if not isinstance(raw_plugins, list):
        doc.error("plugins", "expected a list", "Write plugins: [{target: module:Class, options: {}}]")
        raw_plugins = []
    for i, item in enumerate(raw_plugins):
        path = f"plugins[{i}]"
        if isinstance(item, str):
            item = {"target": item}
        if not isinstance(item, dict):
            doc.error(path, "expected 'module:Class' or a mapping", "Write {target: module:Class, options: {}}")
            continue
        take(doc, item, path, {"target": "", "options": "", "on_error": ""})
        target = get(doc, item, path, "target", str, "")
        if not re.fullmatch(r"[\w.]+:[\w.]+|[\w-]+", target):
            doc.error(f"{path}.target", f"{target!r} is not 'module:Class' or an entry-point name",
                      "Write the import path as package.module:ClassName")
        on_error = get(doc, item, path, "on_error", str, "closed",
                       lambda v: None if v in ("closed", "open") else "must be closed or open")
        plugins.append(PluginSpec(target=target, options=get(doc, item, path, "options", dict, {}), on_error=on_error))

    keys: list[AuthKey] = []
    auth = data.get("auth") or {}
    if not isinstance(auth, dict):
        doc.error("auth", "expected a mapping", "Write auth: {keys: [{name, key}]}")
        auth = {}
    take(doc, auth, "auth", {"keys": ""})
    raw_keys = auth.get("keys") or []
    if not isinstance(raw_keys, list):
        doc.error("auth.keys", "expected a list", "Write keys: [{name: alice, key: ${ALICE_KEY}}]")
        raw_keys = []
    for i, item in enumerate(raw_keys):
        path = f"auth.keys[{i}]"
        if not isinstance(item, dict):
            doc.error(path, "expected a mapping", "Write {name: alice, key: ${ALICE_KEY}}")
            continue
        take(doc, item, path, {"name": "", "key": "", "models": ""})
        key = get(doc, item, path, "key", str, "")
        if len(key) < 16:
            doc.error(f"{path}.key", "missing or shorter than 16 characters", "Use a long random key from an env var")
        allowed = get(doc, item, path, "models", list, None)
        keys.append(AuthKey(name=get(doc, item, path, "name", str, f"key{i}"), key=key,
                            models=tuple(map(str, allowed)) if allowed is not None else None))

    governance = parse_governance(doc, data.get("governance"))
    if governance is not None:
        for team, per_upstream in governance.team_keys.items():
            for up in per_upstream:
                if up not in upstreams:
                    doc.error(f"governance.teams.{team}.upstream_keys.{up}", f"unknown upstream {up!r}",
                              f"Use one of the upstreams: {', '.join(sorted(upstreams))}")
    guardrails = parse_guardrails(doc, data.get("guardrails"))
    observability = parse_observability(doc, data.get("observability"))
    cache = parse_cache(doc, data.get("cache"))
    if cache is not None:
        for name in cache.models:
            if name not in models:
                doc.error(f"cache.models.{name}", f"unknown model group {name!r}",
                          f"Use one of: {', '.join(sorted(models))}")
        for ref in (cache.semantic.embedder.removeprefix("model:") if cache.semantic and
                    cache.semantic.embedder.startswith("model:") else None,
                    cache.semantic.verifier_model if cache.semantic else None):
            if ref is not None and ref not in models:
                doc.error("cache.semantic", f"unknown model group {ref!r}", f"Use one of: {', '.join(sorted(models))}")
    if doc.problems:
        raise ConfigError(doc.problems)
    return Config(server=server, upstreams=upstreams, models=models, plugins=tuple(plugins),
                  auth_keys=tuple(keys), path=source, governance=governance, guardrails=guardrails,
                  observability=observability, cache=cache)


def load_config(path: str | os.PathLike[str], *, providers: ProviderCatalog,
                env: dict[str, str] | None = None) -> Config:
    """Read and validate the YAML file at `path` (see `parse_config`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the config file: {exc.strerror}. Check the path"]) from None
    return parse_config(text, source=str(p), env=env, providers=providers)
