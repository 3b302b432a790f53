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

from llmgw.transport import Timeouts

__all__ = [
    "AuthKey",
    "Config",
    "ConfigError",
    "ModelRoute",
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


class ConfigError(ValueError):
    """A configuration problem, located: `file:line: key: problem. fix`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
class ModelRoute:
    name: str  # what clients ask for
    upstream: str  # key into Config.upstreams
    model: str  # the name the upstream knows it by


@dataclass(frozen=True, slots=True)
class PluginSpec:
    target: str  # "module:Class"
    options: dict[str, Any] = field(default_factory=dict)


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
    models: dict[str, ModelRoute]
    plugins: tuple[PluginSpec, ...] = ()
    auth_keys: tuple[AuthKey, ...] = ()
    path: str | None = None


# ------------------------------------------------------------------------------------------------
# YAML with line numbers: compose the node tree, then convert, remembering each path's line.

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Doc:
    def __init__(self, source: str, env: dict[str, str]) -> None:
        self.source = source
        self.env = env
        self.lines: dict[str, int] = {}
        self.problems: list[str] = []

    def where(self, path: str) -> str:
        line = self.lines.get(path)
        while line is None and "." in path:
            path = path.rsplit(".", 1)[0]
            line = self.lines.get(path)
        return f"{self.source}:{line}" if line else self.source

    def error(self, path: str, problem: str, fix: str) -> None:
        self.problems.append(f"{self.where(path)}: {path or '(top level)'}: {problem}. {fix}")

    def to_python(self, node: yaml.Node, path: str) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in node.value:
                key = str(k.value)
                sub = f"{path}.{key}" if path else key
                if key in out:
                    self.lines[sub] = k.start_mark.line + 1
                    self.error(sub, "duplicate key", "Keep one of them")
                out[key] = self.to_python(v, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.to_python(v, f"{path}[{i}]") for i, v in enumerate(node.value)]
        value = yaml.SafeLoader(" ").construct_object(node) if node.tag != "tag:yaml.org,2002:str" else node.value
        if isinstance(value, str) and "${" in value:
            value = self.expand(value, path)
        return value

    def expand(self, value: str, path: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            self.error(path, f"environment variable {name} is not set",
                       f"Export {name} before starting, or write ${{{name}:-default}}")
            return ""

        return _ENV.sub(sub, value)


# ------------------------------------------------------------------------------------------------
# Typed field readers: each records a located problem instead of raising, so that one run reports
# every mistake in the file.

def _take(doc: _Doc, data: dict[str, Any], path: str, allowed: dict[str, str]) -> None:
    for key in data:
        if key not in allowed:
            sub = f"{path}.{key}" if path else key
            near = [k for k in allowed if k.startswith(key[:3])]
            hint = f"Did you mean {near[0]!r}?" if near else f"Known keys: {', '.join(sorted(allowed))}"
            doc.error(sub, "unknown key", hint)


def _get(doc: _Doc, data: dict[str, Any], path: str, key: str, kind: type | tuple[type, ...],
         default: Any, check: Callable[[Any], str | None] | None = None) -> Any:
    sub = f"{path}.{key}" if path else key
    if key not in data or data[key] is None:
        return default
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        doc.error(sub, f"expected {names}, got {type(value).__name__} {value!r}", f"Write a {names} here")
        return default
    if check is not None and (problem := check(value)):
        doc.error(sub, problem, "Fix the value")
        return default
    return value


def _positive(v: Any) -> str | None:
    return None if v > 0 else f"must be > 0, got {v}"


def _url(v: str) -> str | None:
    return None if re.match(r"^https?://[^/\s]+", v) else f"must be an http(s):// URL, got {v!r}"


def _timeouts(doc: _Doc, data: Any, path: str) -> Timeouts:
    if data is None:
        return Timeouts()
    if not isinstance(data, dict):
        doc.error(path, "expected a mapping of connect/first_byte/idle/total/pool seconds", "See examples/quickstart.yaml")
        return Timeouts()
    keys = {"connect": "", "first_byte": "", "idle": "", "total": "", "pool": ""}
    _take(doc, data, path, keys)
    d = Timeouts()
    return Timeouts(**{k: _get(doc, data, path, k, float, getattr(d, k), _positive) for k in keys})


def _upstream(doc: _Doc, name: str, data: Any, path: str, providers: ProviderCatalog) -> UpstreamConfig | None:
    if not isinstance(data, dict):
        doc.error(path, "expected a mapping", "Give provider and base_url")
        return None
    _take(doc, data, path, {"provider": "", "base_url": "", "api_key": "", "headers": "", "max_connections": "",
                            "timeouts": "", "tls_verify": "", "ca_file": "", "options": "",
                            "transport": ""})
    provider = _get(doc, data, path, "provider", str, "openai")
    known = providers.names()
    adapter = providers.get(provider) if provider in known else None
    if adapter is None:
        doc.error(f"{path}.provider", f"unknown provider {provider!r}", f"Use one of: {', '.join(sorted(known))}")
    base_url = _get(doc, data, path, "base_url", str, "", _url)
    if "base_url" not in data:
        default = getattr(adapter, "default_base_url", None)
        if isinstance(default, str):
            base_url = default  # a preset (vllm, ollama, gemini, ...) knows where its server listens
        else:
            doc.error(f"{path}.base_url", "missing",
                      f"Add base_url: http(s)://host:port/v1 (provider {provider!r} has no default; "
                      f"providers with one: {', '.join(_providers_with_default(providers)) or 'none'})")
    headers = _get(doc, data, path, "headers", dict, {})
    options = _get(doc, data, path, "options", dict, {})
    check = getattr(adapter, "check_options", None)
    if check is not None:
        for key, problem, fix in check(options):
            doc.error(f"{path}.options.{key}", problem, fix)
    return UpstreamConfig(
        name=name,
        provider=provider,
        base_url=base_url.rstrip("/"),
        api_key=_get(doc, data, path, "api_key", str, None) or None,
        headers=tuple((str(k).lower(), str(v)) for k, v in headers.items()),
        max_connections=_get(doc, data, path, "max_connections", int, 256, _positive),
        timeouts=_timeouts(doc, data.get("timeouts"), f"{path}.timeouts"),
        tls_verify=_get(doc, data, path, "tls_verify", bool, True),
        ca_file=_get(doc, data, path, "ca_file", str, None,
                     lambda v: None if os.path.isfile(v) else f"CA file {v!r} does not exist"),
        transport=_get(doc, data, path, "transport", str, "fast",
                       lambda v: None if v in ("fast", "aiohttp") else f"must be 'fast' or 'aiohttp', got {v!r}"),
        options=options,
    )


def _providers_with_default(providers: ProviderCatalog) -> list[str]:
    return [n for n in providers.names() if isinstance(getattr(providers.get(n), "default_base_url", None), str)]


def parse_config(text: str, *, providers: ProviderCatalog, source: str = "<config>",
                 env: dict[str, str] | None = None) -> Config:
    """Validate YAML text into a Config, or raise ConfigError listing every problem found.
    `providers` is the catalog of provider adapters (`llmgw.providers.registry`)."""
    doc = _Doc(source, dict(os.environ) if env is None else env)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}. Check indentation and quoting"]) from None
    data = doc.to_python(node, "") if node is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the file must be a mapping with upstreams: and models:"])
    _take(doc, data, "", {"server": "", "upstreams": "", "models": "", "plugins": "", "auth": ""})

    srv = data.get("server") or {}
    if not isinstance(srv, dict):
        doc.error("server", "expected a mapping", "Write server: {host: ..., port: ...}")
        srv = {}
    d = ServerConfig()
    _take(doc, srv, "server", {f: "" for f in ServerConfig.__dataclass_fields__})
    ints = {"workers", "max_body_bytes", "max_json_depth", "max_connections", "max_inflight"}
    floats = {"header_timeout", "body_timeout", "keepalive_timeout", "write_timeout", "shutdown_timeout"}
    server = ServerConfig(
        host=_get(doc, srv, "server", "host", str, d.host),
        port=_get(doc, srv, "server", "port", int, d.port, lambda v: None if 0 <= v < 65536 else "must be 0-65535"),
        max_json_depth=_get(doc, srv, "server", "max_json_depth", int, d.max_json_depth,
                            lambda v: None if 1 <= v <= 250 else f"must be 1-250, got {v}"),
        **{k: _get(doc, srv, "server", k, int, getattr(d, k), _positive) for k in ints - {"max_json_depth"}},
        **{k: _get(doc, srv, "server", k, float, getattr(d, k), _positive) for k in floats},
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

    models: dict[str, ModelRoute] = {}
    raw_models = data.get("models")
    if not isinstance(raw_models, dict) or not raw_models:
        doc.error("models", "missing or empty", "Add at least one model: models: {name: {upstream: NAME}}")
        raw_models = {}
    for name, item in raw_models.items():
        path = f"models.{name}"
        if not isinstance(item, dict):
            doc.error(path, "expected a mapping", "Write {upstream: NAME, model: UPSTREAM_MODEL}")
            continue
        _take(doc, item, path, {"upstream": "", "model": ""})
        up_name = _get(doc, item, path, "upstream", str, "")
        if up_name not in upstreams and up_name not in raw_up:
            doc.error(f"{path}.upstream", f"unknown upstream {up_name!r}" if up_name else "missing",
                      f"Use one of the upstreams: {', '.join(sorted(raw_up)) or '(none defined)'}")
        models[name] = ModelRoute(name=name, upstream=up_name, model=_get(doc, item, path, "model", str, name))

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
        _take(doc, item, path, {"target": "", "options": ""})
        target = _get(doc, item, path, "target", str, "")
        if not re.fullmatch(r"[\w.]+:[\w.]+|[\w-]+", target):
            doc.error(f"{path}.target", f"{target!r} is not 'module:Class' or an entry-point name",
                      "Write the import path as package.module:ClassName")
        plugins.append(PluginSpec(target=target, options=_get(doc, item, path, "options", dict, {})))

    keys: list[AuthKey] = []
    auth = data.get("auth") or {}
    if not isinstance(auth, dict):
        doc.error("auth", "expected a mapping", "Write auth: {keys: [{name, key}]}")
        auth = {}
    _take(doc, auth, "auth", {"keys": ""})
    raw_keys = auth.get("keys") or []
    if not isinstance(raw_keys, list):
        doc.error("auth.keys", "expected a list", "Write keys: [{name: alice, key: ${ALICE_KEY}}]")
        raw_keys = []
    for i, item in enumerate(raw_keys):
        path = f"auth.keys[{i}]"
        if not isinstance(item, dict):
            doc.error(path, "expected a mapping", "Write {name: alice, key: ${ALICE_KEY}}")
            continue
        _take(doc, item, path, {"name": "", "key": "", "models": ""})
        key = _get(doc, item, path, "key", str, "")
        if len(key) < 16:
            doc.error(f"{path}.key", "missing or shorter than 16 characters", "Use a long random key from an env var")
        allowed = _get(doc, item, path, "models", list, None)
        keys.append(AuthKey(name=_get(doc, item, path, "name", str, f"key{i}"), key=key,
                            models=tuple(map(str, allowed)) if allowed is not None else None))

    if doc.problems:
        raise ConfigError(doc.problems)
    return Config(server=server, upstreams=upstreams, models=models, plugins=tuple(plugins),
                  auth_keys=tuple(keys), path=source)


def load_config(path: str | os.PathLike[str], *, providers: ProviderCatalog,
                env: dict[str, str] | None = None) -> Config:
    """Read and validate the YAML file at `path` (see `parse_config`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the config file: {exc.strerror}. Check the path"]) from None
    return parse_config(text, source=str(p), env=env, providers=providers)
