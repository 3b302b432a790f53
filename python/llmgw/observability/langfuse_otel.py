"""Exporting finish records to Langfuse through its OpenTelemetry endpoint (`protocol: otel`).

Langfuse v4 takes traces as OTLP/HTTP at `POST {host}/api/public/otel/v1/traces` (basic auth:
public key : secret key, header `x-langfuse-ingestion-version: 4`); Langfuse Cloud retired the
batch ingestion API (`protocol: ingestion`, langfuse.py) on 2026-11-16 and self-hosted v4
refuses its trace and observation events. Same content as the ingestion events, as spans:

- the request: a root span (`langfuse.observation.type` span) named like the trace, carrying the
  trace's name, tags, user, metadata (`langfuse.trace.metadata.*`) and the prompt and answer
  (on the root observation, as Langfuse v4 asks, not `langfuse.trace.input`);
- the generation: the attempt whose answer (or failure) the client got, or the request itself
  when no upstream answered: model, parameters, usage and cost details (JSON, the same maps as
  the ingestion events), completion start, level and status message, prompt and answer;
- a span per other attempt and per recorded gateway stage.

Trace-level attributes (user, tags, environment, release, trace name) are on every span: v4 is
observation-first and reads them per span. Ids are the ingestion exporter's (the W3C trace id
when traced; ids derived from the request otherwise), so a batch sent again upserts.
"""

from __future__ import annotations

from typing import Any

import orjson

from llmgw._core import __version__, encode_otlp_traces
from llmgw.observability.export import HttpExporter
from llmgw.observability.langfuse import (
    MAX_BATCH_BYTES,
    GenerationSource,
    _answering_attempt,
    _attempt_summary,
    _Ids,
    _level,
    _model_parameters,
    _tags,
    _trace_metadata,
    _trace_name,
    _usage_details,
    check_settings,
)
from llmgw.observability.otlp import (
    _FLAGS_LOCAL_PARENT,
    CLIENT,
    CONTENT_TYPE,
    ERROR,
    INTERNAL,
    SERVER,
    UNSET,
    resource_of,
)
from llmgw.observability.record import FinishRecord

__all__ = ["OTEL_PATH", "LangfuseOtelExporter", "langfuse_spans"]

OTEL_PATH = "/api/public/otel/v1/traces"


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _flat(prefix: str, meta: dict[str, Any]) -> list[Any]:
    """`prefix.key` attributes: scalars as they are, anything else as JSON text."""
    out: list[Any] = []
    for key, value in meta.items():
        if value is None:
            continue
        if not isinstance(value, (str, bool, int, float)) or (isinstance(value, int) and abs(value) >= 1 << 63):
            value = _json(value)
        out += (f"{prefix}.{key}", value)
    return out


def langfuse_spans(record: FinishRecord, *, environment: str | None = None, release: str | None = None,
                   with_bodies: bool = True) -> list[tuple[Any, ...]]:
    """The request's spans as `encode_otlp_traces` tuples, with Langfuse's attributes."""
    ids = _Ids(record)
    trace_id = bytes.fromhex(ids.trace)
    root_id = bytes.fromhex(ids.observation("root"))
    name = _trace_name(record)
    common = ["langfuse.trace.name", name, "user.id", record.user or None, "langfuse.trace.tags", _tags(record),
              "langfuse.environment", environment, "langfuse.release", release]
    level, status_message = _level(record)
    inp = _json(record.input) if with_bodies and record.input is not None else None
    out = _json(record.output) if with_bodies and record.output is not None else None
    root_attrs = common + ["langfuse.observation.type", "span", "langfuse.observation.input", inp,
                           "langfuse.observation.output", out, "langfuse.observation.level", level,
                           "langfuse.observation.status_message", status_message]
    root_attrs += _flat("langfuse.trace.metadata", _trace_metadata(record))
    failed = level == "ERROR"
    spans: list[tuple[Any, ...]] = [
        (trace_id, root_id, b"", name, SERVER, record.start_ns, record.end_ns, ERROR if failed else UNSET,
         status_message or "", root_attrs, _FLAGS_LOCAL_PARENT)]

    answering = _answering_attempt(record)
    src = GenerationSource.of(record, answering, ids)
    model = src.model
    gen_attrs = common + [
        "langfuse.observation.type", "generation",
        "langfuse.observation.model.name", model or None,
        "langfuse.observation.model.parameters", _json(_model_parameters(record.params)) if record.params else None,
        "langfuse.observation.usage_details", _json(_usage_details(record)),
        "langfuse.observation.cost_details",
        _json({"total": float(record.cost_usd)}) if record.cost_usd is not None else None,
        "langfuse.observation.completion_start_time", src.completion_start(record),
        "langfuse.observation.level", level,
        "langfuse.observation.status_message", status_message,
        "langfuse.observation.input", inp,
        "langfuse.observation.output", out,
        "gen_ai.request.model", model or None,
        "gen_ai.usage.input_tokens", record.prompt_tokens,
        "gen_ai.usage.output_tokens", record.completion_tokens,
    ]
    gen_attrs += _flat("langfuse.observation.metadata", src.metadata)
    kind = CLIENT if answering is not None else INTERNAL
    spans.append((trace_id, bytes.fromhex(src.obs_id), root_id, src.name, kind, src.start_ns, src.end_ns,
                  ERROR if failed else UNSET, status_message or "", gen_attrs, _FLAGS_LOCAL_PARENT))

    for i, a in enumerate(record.attempts):
        if i == answering:
            continue
        a_level, a_message = "DEFAULT", None
        if a.error_code:
            a_level = "WARNING"
            a_message = f"{a.error_code} (HTTP {a.status})" if a.status else a.error_code
        elif a.cancelled:
            a_message = "cancelled"
        attrs = common + ["langfuse.observation.type", "span", "langfuse.observation.level", a_level,
                          "langfuse.observation.status_message", a_message]
        attrs += _flat("langfuse.observation.metadata", _attempt_summary(a))
        spans.append((trace_id, bytes.fromhex(ids.observation(f"attempt/{i}", a.span_id)), root_id,
                      f"attempt {a.deployment}", CLIENT, a.start_ns, a.end_ns, UNSET, "", attrs, _FLAGS_LOCAL_PARENT))
    for i, s in enumerate(record.stages):
        attrs = common + ["langfuse.observation.type", "span"]
        attrs += _flat("langfuse.observation.metadata", s.attributes or {})
        spans.append((trace_id, bytes.fromhex(ids.observation(f"stage/{i}")), root_id, s.name, INTERNAL,
                      s.start_ns, s.end_ns, UNSET, "", attrs, _FLAGS_LOCAL_PARENT))
    return spans


class LangfuseOtelExporter(HttpExporter):
    """Posts finish records to a Langfuse project's OTLP endpoint; `export` is the background
    queue's flush. Retry and refusal rules are HttpExporter's (408/429/5xx or no connection:
    kept for a retry; another 4xx: dropped and counted). Batches stay under MAX_BATCH_BYTES: a
    batch that encodes larger is split in halves, and a request too large alone is sent without
    its prompt and answer."""

    name = "langfuse"

    def __init__(self, host: str, public_key: str, secret_key: str, *, timeout: float = 10.0,
                 environment: str | None = None, release: str | None = None,
                 max_batch_bytes: int = MAX_BATCH_BYTES) -> None:
        host, auth = check_settings(host, public_key, secret_key, environment)
        super().__init__(host + OTEL_PATH, {
            "authorization": auth,
            "x-langfuse-ingestion-version": "4",
            "x-langfuse-sdk-name": "llmgw",
            "x-langfuse-public-key": public_key,
        }, timeout=timeout)
        self.host = host
        self.public_key = public_key
        self.environment = environment
        self.release = release
        self.max_batch_bytes = max_batch_bytes
        self.records = 0
        self.bodies_dropped = 0
        self.resource = resource_of("llmgw")

    def __repr__(self) -> str:
        return f"LangfuseOtelExporter({self.host!r}, public_key={self.public_key!r})"

    def _encode(self, records: list[FinishRecord], with_bodies: bool = True) -> tuple[bytes, int]:
        spans = [s for r in records for s in langfuse_spans(r, environment=self.environment, release=self.release,
                                                             with_bodies=with_bodies)]
        return encode_otlp_traces(self.resource, "llmgw", __version__, spans), len(spans)

    def batches(self, records: list[FinishRecord]) -> list[tuple[bytes, int]]:
        """(body, spans) per POST, each body at most max_batch_bytes when it can be."""
        body, n = self._encode(records)
        if len(body) <= self.max_batch_bytes:
            return [(body, n)]
        if len(records) > 1:
            half = len(records) // 2
            return self.batches(records[:half]) + self.batches(records[half:])
        self.bodies_dropped += 1
        return [self._encode(records, with_bodies=False)]

    async def export(self, records: list[FinishRecord]) -> None:
        """POST the records' spans; raises ExportRetry when Langfuse could not take a batch now
        (sending it again upserts the same ids)."""
        if not records:
            return
        for body, spans in self.batches(records):
            await self.post(body, CONTENT_TYPE, spans)
        self.records += len(records)

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "records": self.records, "bodies_dropped": self.bodies_dropped}
