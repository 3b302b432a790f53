"""`observability:` — Prometheus metrics, OpenTelemetry traces, Langfuse export, the access log.

    observability:
      metrics:                      # GET /metrics in the Prometheus text format: on unless enabled: false
        path: /metrics
        port: 9464                  # serve it on this port instead of the gateway's (host: server.host)
        per_key_labels: false       # add key and team labels (one series per key: only with few keys)
      tracing:                      # OTLP/HTTP spans; on when an endpoint is known
        endpoint: http://127.0.0.1:4318/v1/traces   # default $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or
                                    # $OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces
        headers: {authorization: "Bearer ${OTEL_TOKEN}"}   # default $OTEL_EXPORTER_OTLP_(TRACES_)HEADERS
        service_name: llmgw         # default $OTEL_SERVICE_NAME
        resource_attributes: {deployment.environment: prod}   # added to $OTEL_RESOURCE_ATTRIBUTES
        compression: gzip           # default $OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION, else none
        sample_ratio: 1.0           # share of new traces kept; a client's traceparent decides for its own
        batch: 256                  # spans' requests per export, seconds between exports, queue bound
        interval: 1.0
        max_queue: 20000
      langfuse:                     # a trace with a generation per request (keys default to the
        host: https://cloud.langfuse.com   # standard $LANGFUSE_HOST, $LANGFUSE_PUBLIC_KEY, $LANGFUSE_SECRET_KEY)
        public_key: ${LANGFUSE_PUBLIC_KEY}
        secret_key: ${LANGFUSE_SECRET_KEY}
        bodies: redacted            # prompts and answers: redacted (PII and secrets replaced) | full | none
        sample_ratio: 1.0
        protocol: ingestion         # the batch ingestion API; otel: its OTLP endpoint (Langfuse v4, Cloud)
      access_log:                   # one line per request
        format: auto                # auto (readable on a terminal, JSON otherwise) | json | text | off
        destination: stdout         # stdout | stderr | a file path (appended)
        bodies: none                # none | redacted | full

Tracing also turns on without a `tracing:` section when the standard OTEL_EXPORTER_OTLP_* variables
name an endpoint (and OTEL_SDK_DISABLED is not true). Also read: OTEL_EXPORTER_OTLP_(TRACES_)HEADERS,
_TIMEOUT (ms) and _COMPRESSION, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER
(always_on/off, traceidratio and their parentbased_ forms: the client's flag decides for its own
trace either way) with OTEL_TRACES_SAMPLER_ARG. Langfuse is only on with a `langfuse:`
section: prompts leave for a third party only when the file says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from llmgw.config.reader import Doc, get, positive, take, url

__all__ = ["AccessLogConfig", "LangfuseConfig", "MetricsConfig", "ObservabilityConfig", "TracingConfig",
           "parse_observability"]

BODIES = ("none", "redacted", "full")
PROTOCOLS = ("ingestion", "otel")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = True
    path: str = "/metrics"
    port: int | None = None
    host: str | None = None
    per_key_labels: bool = False


@dataclass(frozen=True, slots=True)
class TracingConfig:
    endpoint: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    service_name: str = "llmgw"
    sample_ratio: float = 1.0
    timeout: float = 10.0
    batch: int = 256  # traced requests per export: one Rust encode of 256 holds the event loop ~0.7 ms
    interval: float = 1.0
    max_queue: int = 20_000
    compression: str | None = None  # gzip | None
    resource_attributes: dict[str, str] = field(default_factory=dict)  # added to service.name & co
    from_env: bool = False  # configured by OTEL_* variables, not by the file


@dataclass(frozen=True, slots=True)
class LangfuseConfig:
    host: str
    public_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    bodies: str = "redacted"
    sample_ratio: float = 1.0
    protocol: str = "ingestion"  # ingestion (POST /api/public/ingestion) | otel (/api/public/otel/v1/traces)
    environment: str | None = None
    release: str | None = None
    timeout: float = 10.0
    batch: int = 100
    interval: float = 1.0
    max_queue: int = 10_000


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    format: str = "auto"  # auto | json | text | off
    destination: str = "stdout"
    bodies: str = "none"


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig | None = None
    langfuse: LangfuseConfig | None = None
    access_log: AccessLogConfig = AccessLogConfig()

    @property
    def bodies(self) -> str:
        """The most a sink wants of prompts and answers: what the gateway must collect."""
        wanted = {self.access_log.bodies if self.access_log.format != "off" else "none",
                  self.langfuse.bodies if self.langfuse is not None else "none"}
        return "full" if "full" in wanted else "redacted" if "redacted" in wanted else "none"


def _ratio(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else f"must be between 0 and 1, got {v}"


def _headers_env(text: str, lower: bool = True) -> dict[str, str]:
    """OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES: `key=value,key2=value2` (values
    URL-encoded); header names lower-cased."""
    from urllib.parse import unquote

    out: dict[str, str] = {}
    for item in text.split(","):
        k, sep, v = item.partition("=")
        if sep and k.strip():
            out[k.strip().lower() if lower else k.strip()] = unquote(v.strip())
    return out


def _otel_env(env: dict[str, str], name: str) -> str:
    """OTEL_EXPORTER_OTLP_TRACES_<name>, else OTEL_EXPORTER_OTLP_<name> (the spec's precedence)."""
    return env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}") or ""


def _compression(v: str) -> str | None:
    return None if v in ("gzip", "none") else "must be gzip or none"


def _tracing(doc: Doc, data: Any) -> TracingConfig | None:
    env = doc.env
    path = "observability.tracing"
    if data is None:
        data = {}
        explicit = False
    elif isinstance(data, dict):
        explicit = True
    else:
        doc.error(path, "expected a mapping", "Write tracing: {endpoint: http://collector:4318/v1/traces}")
        return None
    take(doc, data, path, {k: "" for k in ("enabled", "endpoint", "headers", "service_name", "sample_ratio",
                                           "timeout", "batch", "interval", "max_queue", "compression",
                                           "resource_attributes")})
    if not get(doc, data, path, "enabled", bool, True) or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    endpoint = get(doc, data, path, "endpoint", str, "", url)
    from_env = False
    if not endpoint:
        if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            endpoint = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
        from_env = bool(endpoint)
    if not endpoint:
        if explicit:
            doc.error(f"{path}.endpoint", "missing", "Give the collector's OTLP/HTTP URL, e.g. "
                      "http://127.0.0.1:4318/v1/traces, or set OTEL_EXPORTER_OTLP_ENDPOINT")
        return None
    if url(endpoint):
        doc.error(f"{path}.endpoint", url(endpoint) or "", "Give an http(s):// URL")
        return None
    headers = _headers_env(_otel_env(env, "HEADERS"))
    headers.update({str(k).lower(): str(v) for k, v in get(doc, data, path, "headers", dict, {}).items()})
    resource = _headers_env(env.get("OTEL_RESOURCE_ATTRIBUTES", ""), lower=False)
    resource.update({str(k): str(v) for k, v in get(doc, data, path, "resource_attributes", dict, {}).items()})
    ratio = 1.0
    sampler = env.get("OTEL_TRACES_SAMPLER", "")
    if sampler in ("always_off", "parentbased_always_off"):
        ratio = 0.0
    elif sampler in ("traceidratio", "parentbased_traceidratio"):
        try:
            ratio = min(max(float(env.get("OTEL_TRACES_SAMPLER_ARG", "1.0")), 0.0), 1.0)
        except ValueError:
            doc.error(path, f"OTEL_TRACES_SAMPLER_ARG={env.get('OTEL_TRACES_SAMPLER_ARG')!r} is not a number",
                      "Set it to a ratio between 0 and 1")
    d = TracingConfig(endpoint="")
    timeout = d.timeout
    if _otel_env(env, "TIMEOUT"):  # milliseconds, as the OpenTelemetry spec has it
        try:
            timeout = max(float(_otel_env(env, "TIMEOUT")) / 1000.0, 0.001)
        except ValueError:
            doc.error(path, f"OTEL_EXPORTER_OTLP_TIMEOUT={_otel_env(env, 'TIMEOUT')!r} is not a number",
                      "Set it in milliseconds, e.g. 10000")
    env_compression = _otel_env(env, "COMPRESSION").lower() or "none"
    if _compression(env_compression):
        doc.error(path, f"OTEL_EXPORTER_OTLP_COMPRESSION={env_compression!r} is not supported", "Set gzip or none")
    compression = get(doc, data, path, "compression", str, env_compression, _compression)
    service = env.get("OTEL_SERVICE_NAME") or resource.get("service.name") or d.service_name
    return TracingConfig(
        endpoint=endpoint, headers=headers,
        service_name=get(doc, data, path, "service_name", str, service),
        sample_ratio=get(doc, data, path, "sample_ratio", float, ratio, _ratio),
        timeout=get(doc, data, path, "timeout", float, timeout, positive),
        compression=compression if compression == "gzip" else None,
        resource_attributes={k: v for k, v in resource.items() if k != "service.name"},
        batch=get(doc, data, path, "batch", int, d.batch, positive),
        interval=get(doc, data, path, "interval", float, d.interval, positive),
        max_queue=get(doc, data, path, "max_queue", int, d.max_queue, positive),
        from_env=from_env)


def _langfuse(doc: Doc, data: Any) -> LangfuseConfig | None:
    if data is None or data is False:
        return None
    path = "observability.langfuse"
    if data is True:
        data = {}
    if not isinstance(data, dict):
        doc.error(path, "expected a mapping", "Write langfuse: {public_key: ${LANGFUSE_PUBLIC_KEY}, ...}")
        return None
    take(doc, data, path, {k: "" for k in ("enabled", "host", "public_key", "secret_key", "bodies", "sample_ratio",
                                           "protocol", "environment", "release", "timeout", "batch", "interval",
                                           "max_queue")})
    if not get(doc, data, path, "enabled", bool, True):
        return None
    env = doc.env
    host = get(doc, data, path, "host", str, "", url) or env.get("LANGFUSE_HOST") or env.get("LANGFUSE_BASE_URL") \
        or "https://cloud.langfuse.com"
    public = get(doc, data, path, "public_key", str, "") or env.get("LANGFUSE_PUBLIC_KEY", "")
    secret = get(doc, data, path, "secret_key", str, "") or env.get("LANGFUSE_SECRET_KEY", "")
    for name, value, var in (("public_key", public, "LANGFUSE_PUBLIC_KEY"), ("secret_key", secret, "LANGFUSE_SECRET_KEY")):
        if not value:
            doc.error(f"{path}.{name}", "missing", f"Set {var} or write {name}: ${{{var}}}")
    d = LangfuseConfig(host="", public_key="", secret_key="")
    return LangfuseConfig(
        host=host.rstrip("/"), public_key=public, secret_key=secret,
        bodies=get(doc, data, path, "bodies", str, d.bodies,
                   lambda v: None if v in BODIES else f"must be one of {', '.join(BODIES)}"),
        sample_ratio=get(doc, data, path, "sample_ratio", float, d.sample_ratio, _ratio),
        protocol=get(doc, data, path, "protocol", str, d.protocol,
                     lambda v: None if v in PROTOCOLS else f"must be one of {', '.join(PROTOCOLS)}"),
        environment=get(doc, data, path, "environment", str, None,
                        lambda v: None if re.fullmatch(r"[a-z0-9_-]{1,40}", v) and not v.startswith("langfuse")
                        else "must be 1-40 characters of a-z, 0-9, - and _, not starting with 'langfuse'"),
        release=get(doc, data, path, "release", str, None),
        timeout=get(doc, data, path, "timeout", float, d.timeout, positive),
        batch=get(doc, data, path, "batch", int, d.batch, positive),
        interval=get(doc, data, path, "interval", float, d.interval, positive),
        max_queue=get(doc, data, path, "max_queue", int, d.max_queue, positive))


def parse_observability(doc: Doc, data: Any) -> ObservabilityConfig:
    path = "observability"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        doc.error(path, "expected a mapping", "See the README's observability section")
        data = {}
    take(doc, data, path, {"metrics": "", "tracing": "", "langfuse": "", "access_log": ""})

    m = data.get("metrics")
    if m is False:
        m = {"enabled": False}
    m = m if isinstance(m, dict) else {}
    mp = f"{path}.metrics"
    take(doc, m, mp, {"enabled": "", "path": "", "port": "", "host": "", "per_key_labels": ""})
    metrics = MetricsConfig(
        enabled=get(doc, m, mp, "enabled", bool, True),
        path=get(doc, m, mp, "path", str, "/metrics",
                 lambda v: None if v.startswith("/") and not v.startswith("/v1/") else "must start with / (not /v1/)"),
        port=get(doc, m, mp, "port", int, None, lambda v: None if 0 < v < 65536 else "must be 1-65535"),
        host=get(doc, m, mp, "host", str, None),
        per_key_labels=get(doc, m, mp, "per_key_labels", bool, False))

    a = data.get("access_log")
    if a is False:
        a = {"format": "off"}
    a = a if isinstance(a, dict) else {}
    ap = f"{path}.access_log"
    take(doc, a, ap, {"format": "", "destination": "", "bodies": ""})
    access = AccessLogConfig(
        format=get(doc, a, ap, "format", str, "auto",
                   lambda v: None if v in ("auto", "json", "text", "off") else "must be auto, json, text or off"),
        destination=get(doc, a, ap, "destination", str, "stdout"),
        bodies=get(doc, a, ap, "bodies", str, "none",
                   lambda v: None if v in BODIES else f"must be one of {', '.join(BODIES)}"))
    return ObservabilityConfig(metrics=metrics, tracing=_tracing(doc, data.get("tracing")),
                               langfuse=_langfuse(doc, data.get("langfuse")), access_log=access)
