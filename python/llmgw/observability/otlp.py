"""OpenTelemetry trace export over OTLP/HTTP: each traced request becomes its spans, encoded to the
official protobuf (`ExportTraceServiceRequest`) in Rust.

Why not the OpenTelemetry SDK: on this machine it costs ~58 µs to create a request's 3 spans and
~144 µs to encode them, while the gateway's whole per-request CPU budget is ~59 µs.

Two paths give the same bytes. The gateway's: `Observability.on_finish` calls
`Telemetry.trace_request` (Rust), which reads the request's own objects and returns its spans
already encoded; `OtlpExporter.export`, the background queue's flush, only frames a batch of them
into one POST (`frame_otlp_traces`). The reference, and the fallback when the Rust read raises:
a `FinishRecord`, turned into span tuples by `spans_of` below and encoded by the Rust encoder.
Measured side by side (benches/bench_otlp.py, one real traced request of 4 spans, batches of 500,
best rounds on a shared 2-core VM): the Python path ~25 µs per request (record ~9-12, spans_of ~7,
the encoder ~4-5) against ~3-4 µs for trace_request, and ~0.1 µs to frame it into the batch. Over
the whole gateway (callgrind, benches/load/instructions.py) every request traced costs 386.1k
instructions per request (519.4k with the Python path and the previous trace context), the same
without tracing 336.5k. The SDK making and encoding the same spans: ~260 µs.

Spans of one request (OpenTelemetry GenAI and HTTP semantic conventions):

    SERVER   "chat gpt-4o"            the gateway's request; id record.span_id, parent the client's
    │                                 span from its traceparent (none: a root)
    ├─ INTERNAL "guardrails pre_request"   one per record.stages entry
    ├─ CLIENT   "chat gpt-4o-2024-08-06"   one per upstream attempt; its id is the span id the
    └─ CLIENT   "chat claude-sonnet-4"     gateway sent upstream in traceparent, so the provider's
                                           own spans hang under it

- The root is named "{gen_ai.operation.name} {requested model}" for chat and embeddings, else
  "{METHOD} {path}". Its status is ERROR for a 5xx or a stream cut after the first byte; a 4xx
  is the client's (HTTP server convention: status left unset) but still carries error.type.
- An attempt is named "{operation} {model sent upstream}"; ERROR when it failed (error.type =
  the gateway's error code, else the HTTP status); a hedge that lost the race is cancelled, not
  failed.
- Usage (gen_ai.usage.*) is on the one span that did the inference the client got: the attempt
  that served, or the root when none did (a cache hit). Backends that sum gen_ai.usage across
  spans (Langfuse, LLM-observability tools) count each request once.
- Gateway specifics are under `llmgw.*` (request id, group, deployment, attempt via/retry/hedge,
  cache result, cost, key id and name, team). The record holds no key or secret, so no span does.
- Ids that the record does not carry (stages, untraced attempts) are derived from the request's
  span id, not drawn at random: a batch sent again after a timeout has the same spans.

Records with `sampled=False` or no trace id give no spans.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from llmgw._core import __version__, encode_otlp_spans, encode_otlp_traces, frame_otlp_traces
from llmgw.observability.export import HttpExporter
from llmgw.observability.record import AttemptRecord, FinishRecord

__all__ = ["OtlpExporter", "resource_of", "spans_of"]

SCOPE_NAME = "llmgw"
CONTENT_TYPE = "application/x-protobuf"

# Span.SpanKind, Status.StatusCode (opentelemetry/proto/trace/v1/trace.proto)
INTERNAL, SERVER, CLIENT = 1, 2, 3
UNSET, ERROR = 0, 2
# Span.flags: W3C sampled bit, plus bit 8 "is_remote known" and bit 9 "parent is remote"
_FLAGS_REMOTE_PARENT = 0x01 | 0x100 | 0x200
_FLAGS_LOCAL_PARENT = 0x01 | 0x100

_OPERATIONS = {"chat": "chat", "embeddings": "embeddings"}
# adapter name -> gen_ai.provider.name well-known value (others are sent as they are: vllm, tgi, ...)
_PROVIDER_NAMES = {"gemini": "gcp.gemini", "azure": "azure.ai.openai"}
# request parameter -> (attribute, type it must have); max_completion_tokens is OpenAI's newer max_tokens
_PARAMS: dict[str, tuple[str, type]] = {
    "max_tokens": ("gen_ai.request.max_tokens", int),
    "max_completion_tokens": ("gen_ai.request.max_tokens", int),
    "temperature": ("gen_ai.request.temperature", float),
    "top_p": ("gen_ai.request.top_p", float),
    "top_k": ("gen_ai.request.top_k", float),
    "frequency_penalty": ("gen_ai.request.frequency_penalty", float),
    "presence_penalty": ("gen_ai.request.presence_penalty", float),
    "seed": ("gen_ai.request.seed", int),
}
_INT64 = 1 << 63
# The paths of these kinds are fixed routes, so they are also http.route (low cardinality).
_FIXED_ROUTES = frozenset({"chat", "embeddings", "models"})
_MASK64 = (1 << 64) - 1


def _id_base(span_id: bytes) -> int:
    """The seed of the extra span ids of a request whose own span id is `span_id`: the id times an
    odd constant (a bijection of 64-bit values, so distinct requests get distinct seeds)."""
    return (int.from_bytes(span_id, "big") * 0x9E3779B97F4A7C15) & _MASK64


def _derived_id(base: int, n: int) -> bytes:
    """The n-th (n >= 1) extra span id from `_id_base`: the same on every call (a batch sent again
    has the same spans), distinct for each n. One add: ~4x cheaper than a hash of the id."""
    return (((base + n) & _MASK64) or 1).to_bytes(8, "big")


def _params(params: dict[str, Any]) -> list[Any]:
    """gen_ai.request.* from the request's parameters (flat key, value list), skipping values of
    the wrong type (the client's request is not trusted to be well typed)."""
    out: list[Any] = []
    for key, value in params.items():
        spec = _PARAMS.get(key)
        if spec is not None:
            attr, kind = spec
            if value is None or value is True or value is False:
                continue
            if kind is int:
                if type(value) is int and -_INT64 <= value < _INT64:
                    out += (attr, value)
            elif isinstance(value, (int, float)):
                out += (attr, float(value))
        elif key == "stop" or key == "stop_sequences":
            if isinstance(value, str):
                out += ("gen_ai.request.stop_sequences", [value])
            elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                out += ("gen_ai.request.stop_sequences", value)
        elif key == "n":
            if type(value) is int and value != 1 and 0 <= value < _INT64:
                out += ("gen_ai.request.choice.count", value)
    return out


def _usage(r: FinishRecord) -> list[Any]:
    return [
        "gen_ai.usage.input_tokens", r.prompt_tokens,
        "gen_ai.usage.output_tokens", r.completion_tokens,
        "gen_ai.usage.cache_read.input_tokens", r.cached_tokens or None,
        "llmgw.usage_estimated", True if r.usage_estimated else None,
    ]


def _provider_name(provider: str | None) -> str | None:
    if not provider:
        return None
    return _PROVIDER_NAMES.get(provider, provider)


_ADDRESSES: dict[str, tuple[str | None, int | None]] = {}


def _server_address(address: str) -> tuple[str | None, int | None]:
    """(server.address, server.port) of "host:port", "[::1]:8000", "host" or "" (None, None);
    remembered, since a gateway has a handful of upstreams."""
    got = _ADDRESSES.get(address)
    if got is not None:
        return got
    if not address:
        got = (None, None)
    else:
        host, sep, port = address.rpartition(":")
        if sep and port.isdigit() and not host.endswith(":"):  # not the tail of a bare IPv6 address
            got = (host.strip("[]"), int(port))
        else:
            got = (address, None)
    if len(_ADDRESSES) < 4096:
        _ADDRESSES[address] = got
    return got


def _served(r: FinishRecord) -> AttemptRecord | None:
    """The attempt whose answer the client got (the last successful one that was not cancelled)."""
    for a in reversed(r.attempts):
        if a.error_code is None and not a.cancelled and a.status is not None and a.status < 300:
            return a
    return None


# Attribute lists are flat [key, value, key, value, ...] list literals, with None for what does
# not apply (the encoder skips it): no tuple per attribute and no branch per optional one. Against
# appending (key, value) tuples one by one this took spans_of from ~8.4 to ~4 µs per request
# (bench_otlp), most of it the tuples' allocation and garbage collection.

def _attempt_span(r: FinishRecord, a: AttemptRecord, span_id: bytes, operation: str, served: bool,
                  params: list[Any]) -> tuple[Any, ...]:
    provider = _provider_name(a.provider)
    address, port = _server_address(a.server_address)
    status = a.status
    error = a.error_code or (str(status) if status is not None and status >= 400 else None)
    stream = r.stream
    attrs: list[Any] = [
        "gen_ai.operation.name", operation,
        "gen_ai.provider.name", provider,
        "gen_ai.system", provider,  # the attribute's name before semconv 1.37
        "gen_ai.request.model", a.model,
        "gen_ai.request.stream", True if stream else None,
        "gen_ai.response.time_to_first_chunk", a.ttfb_s if stream else None,
        "server.address", address,
        "server.port", port,
        "http.response.status_code", status,
        "error.type", error,
        "llmgw.error_class", a.error_class if error is not None else None,
        "llmgw.deployment", a.deployment,
        "llmgw.upstream", a.upstream,
        "llmgw.attempt.via", a.via,
        "llmgw.attempt.retry", True if a.retry else None,
        "llmgw.attempt.hedge", True if a.hedge else None,
        "llmgw.attempt.cancelled", True if a.cancelled else None,
    ]
    if params:
        attrs += params
    if served:
        attrs += [
            "gen_ai.response.model", r.response_model,
            "gen_ai.response.finish_reasons", [r.finish_reason] if r.finish_reason else None,
        ]
        attrs += _usage(r)
    name = f"{operation} {a.model}" if a.model else operation
    return (r.trace_id, span_id, r.span_id, name, CLIENT, a.start_ns, a.end_ns, UNSET if error is None else ERROR,
            error or "", attrs, _FLAGS_LOCAL_PARENT)


def _stage_attributes(items: dict[str, Any]) -> list[Any]:
    """A stage's attributes as given (flat), minus values OTLP cannot carry (dicts, objects...)."""
    out: list[Any] = []
    for key, value in items.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, (str, bool, float)) or (isinstance(value, int) and -_INT64 <= value < _INT64):
            out += (key, value)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, bool, int, float)) for v in value):
            out += (key, list(value))
    return out


def spans_of(record: FinishRecord, service_name: str = "llmgw") -> list[tuple[Any, ...]]:
    """The request's spans as `encode_otlp_traces` tuples (see the module docstring); [] when the
    request was not sampled or carries no trace id. `service_name` names the gateway's service;
    it belongs to the resource (OtlpExporter puts it there), so no span attribute repeats it."""
    r = record
    if not r.sampled or not r.trace_id:
        return []
    operation = _OPERATIONS.get(r.kind)
    params = _params(r.params) if r.params else []
    attempts = r.attempts
    served = _served(r) if attempts else None
    status = r.status
    failed = r.result != "ok"
    if operation is not None:
        model = r.model
        name = f"{operation} {model}" if model else operation
        provider = _provider_name(r.provider)
        attrs: list[Any] = [
            "gen_ai.operation.name", operation,
            "gen_ai.request.model", model or None,
            "gen_ai.provider.name", provider,
            "gen_ai.system", provider,
            "gen_ai.response.model", r.response_model or None,
            "gen_ai.response.finish_reasons", [r.finish_reason] if r.finish_reason else None,
            "gen_ai.request.stream", True if r.stream else None,
        ]
        if params:
            attrs += params
        if served is None and not failed:
            attrs += _usage(r)  # nothing upstream answered (a cache hit): the gateway did the inference
    else:
        name = f"{r.method} {r.path}"
        attrs = []
    error = None
    if failed:
        error = r.error_code or (str(status) if status >= 400 else r.result)
    fallbacks = retries = 0
    for a in attempts:
        fallbacks += a.via == "fallback"
        retries += a.retry
    attrs += [
        "http.request.method", r.method,
        "url.path", r.path,
        "http.route", r.path if r.kind in _FIXED_ROUTES else None,
        "http.response.status_code", status,
        "error.type", error,
        "llmgw.error_type", r.error_type if failed else None,
        "llmgw.request_id", r.request_id,
        "llmgw.dialect", r.dialect,
        "llmgw.result", r.result,
        "llmgw.group", r.group or None,
        "llmgw.deployment", r.deployment or None,
        "llmgw.cache", r.cache or None,
        "llmgw.cost_usd", r.cost_usd,
        "llmgw.key_id", r.key_id or None,
        "llmgw.key_name", r.key_name or None,
        "llmgw.team", r.team or None,
        "llmgw.attempts", len(attempts) or None,
        "llmgw.fallbacks", fallbacks or None,
        "llmgw.retries", retries or None,
        "llmgw.ttfb_s", r.ttfb_s,
        "llmgw.overhead_s", r.overhead_s,
        "llmgw.upstream_s", r.upstream_s,
    ]
    span_status, message = UNSET, ""
    if failed and (status >= 500 or r.result == "stream_error"):  # a 4xx is the client's: left unset
        span_status, message = ERROR, r.error_message or error or r.result
    trace_id, root_id = r.trace_id, r.span_id
    spans: list[tuple[Any, ...]] = [
        (trace_id, root_id, r.parent_span_id, name, SERVER, r.start_ns, r.end_ns, span_status, message, attrs,
         _FLAGS_REMOTE_PARENT if r.parent_span_id else _FLAGS_LOCAL_PARENT)
    ]
    base = _id_base(root_id)
    for i, s in enumerate(r.stages, 1):
        sattrs = _stage_attributes(s.attributes) if s.attributes else []
        err = s.attributes.get("error.type") if s.attributes else None
        spans.append((trace_id, _derived_id(base, i), root_id, s.name, INTERNAL, s.start_ns, s.end_ns,
                      ERROR if err else UNSET, str(err) if err else "", sattrs, _FLAGS_LOCAL_PARENT))
    op = operation or r.kind
    for i, a in enumerate(attempts):
        span_id = a.span_id if len(a.span_id) == 8 else _derived_id(base, 1000 + i)
        spans.append(_attempt_span(r, a, span_id, op, a is served, params))
    return spans


def _partial_success(body: bytes) -> tuple[int, str]:
    """(rejected_spans, error_message) of an ExportTraceServiceResponse's partial_success
    (field 1: {1: int64 rejected_spans, 2: string error_message}); (0, "") if absent or unreadable."""

    def fields(buf: bytes) -> Iterable[tuple[int, int | bytes]]:
        pos = 0
        while pos < len(buf):
            key, pos = varint(buf, pos)
            wire = key & 7
            if wire == 0:
                value, pos = varint(buf, pos)
                yield key >> 3, value
            elif wire == 2:
                n, pos = varint(buf, pos)
                if pos + n > len(buf):
                    raise ValueError("truncated")
                yield key >> 3, buf[pos:pos + n]
                pos += n
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                raise ValueError(f"wire type {wire}")

    def varint(buf: bytes, pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value, pos
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    rejected, message = 0, ""
    try:
        for number, value in fields(body):
            if number == 1 and isinstance(value, bytes):
                for n2, v2 in fields(value):
                    if n2 == 1 and isinstance(v2, int):
                        rejected = v2 - (1 << 64) if v2 >= _INT64 else v2
                    elif n2 == 2 and isinstance(v2, bytes):
                        message = v2.decode("utf-8", "replace")
    except (ValueError, IndexError):
        return 0, ""
    return max(rejected, 0), message


def resource_of(service_name: str, extra: dict[str, str | bool | int | float] | None = None,
                instance_id: str | None = None, host_name: str | None = None) -> list[tuple[str, Any]]:
    """The gateway's OTLP resource attributes (service, instance, host, SDK), `extra` added."""
    resource: dict[str, str | bool | int | float] = {
        "service.name": service_name,
        "service.version": __version__,
        "service.instance.id": instance_id or str(uuid.uuid4()),
        "host.name": host_name if host_name is not None else socket.gethostname(),
        "telemetry.sdk.name": "llmgw",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": __version__,
    }
    resource.update(extra or {})
    return [(k, v) for k, v in resource.items() if v != ""]


class OtlpExporter(HttpExporter):
    """Posts traced requests' spans to an OTLP/HTTP traces endpoint; `export` is the background
    queue's flush (its items: `Telemetry.trace_request`'s, or FinishRecords).

    One POST per batch (content-type application/x-protobuf). What the collector answers is
    HttpExporter's rule: 2xx delivered, 408/429/5xx or no connection raise ExportRetry (the queue
    keeps the batch), any other 4xx drops it. Counted in spans: `sent`, `rejected` (a 4xx, or
    the spans a 2xx lists in partial_success), `retries` (batches), `invalid` (records dropped
    before sending because a span could not be encoded, e.g. a malformed id).
    """

    name = "otlp"
    # FinishRecords (the Python path) turned into spans between two yields to the event loop:
    # spans_of costs ~4-5 µs per request here, so 64 records hold in-flight requests up ~0.3 ms at
    # a time. Items of trace_request are only copied into the body (framing 500 of them is a ~1 MB
    # copy, ~0.1 µs per request: bench_otlp), so they need no yield.
    YIELD_EVERY = 64

    def __init__(self, endpoint: str, headers: dict[str, str] | None = None, *, service_name: str = "llmgw",
                 resource_attributes: dict[str, str | bool | int | float] | None = None,
                 instance_id: str | None = None, host_name: str | None = None, timeout: float = 10.0,
                 compression: str | None = None) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("OTLP endpoint must be an http(s) URL, such as http://127.0.0.1:4318/v1/traces")
        if compression not in (None, "none", "gzip"):
            raise ValueError(f"OTLP compression must be 'gzip' or 'none', not {compression!r}")
        super().__init__(endpoint, headers, timeout=timeout)
        self.gzip = compression == "gzip"
        if self.gzip:
            self.headers["content-encoding"] = "gzip"
        self.service_name = service_name
        self.resource = resource_of(service_name, resource_attributes, instance_id, host_name)
        self.invalid = 0  # records dropped because their spans could not be encoded

    def __repr__(self) -> str:
        return f"OtlpExporter({urlsplit(self.url).netloc.rpartition('@')[2]!r}, service_name={self.service_name!r})"

    def encode(self, spans: list[tuple[Any, ...]]) -> bytes:
        """The ExportTraceServiceRequest body for `spans` (raises ValueError/TypeError on a bad span)."""
        return encode_otlp_traces(self.resource, SCOPE_NAME, __version__, spans)

    async def export(self, items: list[tuple[int, bytes] | FinishRecord]) -> None:
        """POST every span of `items` in one request; raises ExportRetry when the collector could
        not take it now (the queue keeps the items and calls again).

        An item is what `Observability.on_finish` queued: `(span count, span entries)` from
        `Telemetry.trace_request` (already encoded: only framed here), or a FinishRecord (the
        Python path: turned into spans with `spans_of` and encoded)."""
        chunks: list[bytes] = []
        total = 0
        spans: list[tuple[Any, ...]] = []
        counts: list[int] = []
        service = self.service_name
        records = 0
        for item in items:
            if type(item) is tuple:
                n, chunk = item
                if n:
                    chunks.append(chunk)
                    total += n
                continue
            if records and records % self.YIELD_EVERY == 0:
                await asyncio.sleep(0)
            records += 1
            try:
                got = spans_of(item, service)  # type: ignore[arg-type]
            except Exception as exc:  # a malformed record must not block the queue on every retry
                self.invalid += 1
                self._log("%s: dropped a request whose spans cannot be built (%d so far): %s: %s", self.name,
                          self.invalid, type(exc).__name__, exc)
                continue
            spans += got
            counts.append(len(got))
        if spans:
            try:
                chunk = encode_otlp_spans(spans)
            except (ValueError, TypeError, OverflowError):
                spans, chunk = self._without_invalid(spans, counts)
            if spans:
                chunks.append(chunk)
                total += len(spans)
        if not total:
            return
        body = frame_otlp_traces(self.resource, SCOPE_NAME, __version__, chunks)
        if self.gzip:  # zlib lets go of the GIL: a ~1 MB batch compresses beside the event loop
            body = await asyncio.to_thread(gzip.compress, body, 1)
        resp = await self.post(body, CONTENT_TYPE, total)
        if resp is not None and resp.content:
            rejected, message = _partial_success(resp.content)
            if rejected:
                rejected = min(rejected, total)
                self.sent -= rejected
                self.rejected += rejected
                self._log("%s: the collector rejected %d of %d spans: %s", self.name, rejected, total,
                          message[:200])

    def _without_invalid(self, spans: list[tuple[Any, ...]], counts: list[int]) -> tuple[list[tuple[Any, ...]], bytes]:
        """Keep the records whose spans encode (and their span entries); count and log the others
        (sending the batch as it is would fail the same way on every retry)."""
        kept: list[tuple[Any, ...]] = []
        start = 0
        first_error = ""
        for n in counts:
            group = spans[start:start + n]
            start += n
            if not group:
                continue
            try:
                encode_otlp_spans(group)
            except (ValueError, TypeError, OverflowError) as exc:
                self.invalid += 1
                first_error = first_error or str(exc)
                continue
            kept += group
        self._log("%s: dropped requests whose spans cannot be encoded (%d so far): %s", self.name,
                  self.invalid, first_error)
        return kept, encode_otlp_spans(kept) if kept else b""

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "invalid": self.invalid}

