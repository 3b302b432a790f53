"""Exporting finish records to Langfuse through its public ingestion API.

`POST {host}/api/public/ingestion` with HTTP basic auth (public key : secret key) and a body
`{"batch": [event, ...]}`; Langfuse answers 207 with `successes` and `errors` per event (an
invalid event is an entry in `errors`, not a 4xx). Each gateway request becomes:

- one `trace-create`: the request as the client saw it (name, user, tags, metadata, bodies);
- one `generation-create`: the upstream attempt whose answer (or failure) the client got, or the
  request itself when no upstream answered (cache hit, refused before routing); it carries the
  model, parameters, usage, cost, timings, and level/statusMessage when it failed;
- one `span-create` per other attempt (failed, cancelled hedge) and per recorded gateway stage.

Ids are derived from the request (the W3C trace id and span ids when traced, else hashes of the
request id), never random: when a split batch is sent again after a retry, Langfuse upserts the
same trace and observations instead of counting the request twice.

The schema followed is the one in langfuse/langfuse (`fern/apis/server/definition/ingestion.yml`
and the server's zod validation, `packages/shared/src/server/ingestion/types.ts`, Aug 2026):
usageDetails is a map of non-negative integers (`input` excludes cached input tokens, which go
in `input_cached_tokens`, as Langfuse's own OpenAI mapping does), costDetails a map of
non-negative numbers, times ISO 8601 with at least milliseconds.

Batches: Langfuse documents 3.5 MB per batch and its server refuses bodies over 4.5 MB with 413,
a 4xx that would drop the batch for good; `MAX_BATCH_BYTES` keeps a margin under 3.5 MB.

Note: the ingestion endpoint is marked deprecated upstream in favour of OTLP
(`/api/public/otel/v1/traces`): Langfuse Cloud announced its removal for 2026-11-16 and
self-hosted Langfuse v4 drops it; self-hosted v3 keeps it.
"""

from __future__ import annotations

import base64
import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import orjson

from llmgw.observability.export import HttpExporter, safe_url
from llmgw.observability.record import AttemptRecord, FinishRecord, StageRecord

__all__ = ["LangfuseExporter", "MAX_BATCH_BYTES", "check_settings", "encode_batches", "events_of"]

log = logging.getLogger("llmgw")

# Langfuse documents 3.5 MB per batch (fern ingestion.yml); its server's body limit is 4.5 MB.
MAX_BATCH_BYTES = 3_000_000
INGESTION_PATH = "/api/public/ingestion"

# A fixed namespace so that ids derived from a request id are the same in every process.
_ID_NAMESPACE = uuid.UUID("6f1c2a53-9d1e-4c67-9b8a-4c2f1d0e7a11")
# What Langfuse keeps as an environment; anything else it silently turns into "default".
_ENVIRONMENT = re.compile(r"[a-z0-9_-]{1,40}")


def _iso(ns: int) -> str:
    """Unix epoch nanoseconds as ISO 8601 UTC with microseconds (Langfuse wants ms at least)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest // 1000:06d}Z"


def _derived(trace_id: str, role: str) -> uuid.UUID:
    return uuid.uuid5(_ID_NAMESPACE, f"{trace_id}/{role}")


def _trace_id(record: FinishRecord) -> str:
    """The W3C trace id when the request was traced (so Langfuse and OTLP traces share ids)."""
    if record.trace_id:
        return record.trace_id.hex()
    return uuid.uuid5(_ID_NAMESPACE, f"request/{record.request_id}").hex


def _model_parameter(value: Any) -> str | int | float | bool | list[str] | None:
    """A value Langfuse's modelParameters takes (string, number, boolean, list of strings);
    anything else (a stop list of mixed types, response_format, tools) as compact JSON text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return orjson.dumps(value, default=str).decode()


def _model_parameters(params: dict[str, Any]) -> dict[str, Any]:
    return {str(k): _model_parameter(v) for k, v in params.items() if v is not None}


def _usage_details(record: FinishRecord) -> dict[str, int]:
    """Token counts keyed as Langfuse prices them: cached input apart from the rest of the input."""
    prompt = max(int(record.prompt_tokens), 0)
    completion = max(int(record.completion_tokens), 0)
    cached = min(max(int(record.cached_tokens), 0), prompt)
    usage = {"input": prompt - cached, "output": completion, "total": prompt + completion}
    if cached:
        usage["input_cached_tokens"] = cached
    return usage


def _attempt_summary(attempt: AttemptRecord) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "deployment": attempt.deployment,
        "provider": attempt.provider,
        "model": attempt.model,
        "status": attempt.status,
        "via": attempt.via,
        "duration_s": round((attempt.end_ns - attempt.start_ns) / 1e9, 6),
    }
    if attempt.error_code:
        summary["error_code"] = attempt.error_code
        summary["error_class"] = attempt.error_class
    for flag in ("retry", "hedge", "cancelled"):
        if getattr(attempt, flag):
            summary[flag] = True
    return summary


def _answering_attempt(record: FinishRecord) -> int | None:
    """The index of the attempt whose answer (or failure) the client got; None when no upstream
    answered (a cache hit, a request refused before routing)."""
    indexed = list(enumerate(record.attempts))
    if record.result == "ok":
        served = [(i, a) for i, a in indexed if a.error_code is None and not a.cancelled]
        same = [i for i, a in served if a.deployment == record.deployment]
        return (same or [i for i, _ in served] or [None])[-1]
    same = [i for i, a in indexed if record.deployment and a.deployment == record.deployment]
    live = [i for i, a in indexed if not a.cancelled]
    return (same or live or [i for i, _ in indexed] or [None])[-1]


def _level(record: FinishRecord) -> tuple[str, str | None]:
    """Langfuse's observation level and status message for how the request ended."""
    if record.result == "ok":
        return "DEFAULT", None
    if record.result == "client_gone":
        return "WARNING", record.error_message or "client disconnected"
    reason = ": ".join(filter(None, (record.error_code, record.error_message))) or record.result
    return "ERROR", f"{reason} (HTTP {record.status})"


def _route(record: FinishRecord) -> str:
    """The path without its query string (a client may have put a key there)."""
    return record.path.split("?", 1)[0]


def _trace_name(record: FinishRecord) -> str:
    if record.kind in ("chat", "embeddings") and record.model:
        return f"{record.kind} {record.model}"[:1000]
    return f"{record.method} {_route(record)}"[:1000]


def _tags(record: FinishRecord) -> list[str]:
    tags = ["llmgw", f"kind:{record.kind}", f"dialect:{record.dialect}"]
    if record.team:
        tags.append(f"team:{record.team}")
    if record.group:
        tags.append(f"group:{record.group}")
    if record.cache in ("hit", "semantic-hit"):
        tags.append(f"cache:{record.cache}")
    if record.fallbacks:
        tags.append("fallback")
    if record.stream:
        tags.append("stream")
    if record.result != "ok":
        tags.append(record.result.replace("_", "-"))
    return tags


def _trace_metadata(record: FinishRecord) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "request_id": record.request_id,
        "key_id": record.key_id,
        "team": record.team,
        "group": record.group,
        "deployment": record.deployment,
        "provider": record.provider,
        "status": record.status,
        "result": record.result,
        "cache": record.cache,
        "stream": record.stream,
        "path": _route(record),
        "duration_s": record.duration_s,
        "upstream_s": record.upstream_s,
        "overhead_s": record.overhead_s,
        "ttfb_s": record.ttfb_s,
        "fallbacks": record.fallbacks,
        "retries": record.retries,
        "attempts": [_attempt_summary(a) for a in record.attempts],
    }
    if record.error_code:
        meta["error_code"] = record.error_code
        meta["error_type"] = record.error_type
    if record.finish_reason:
        meta["finish_reason"] = record.finish_reason
    if record.usage_estimated:
        meta["usage_estimated"] = True
    if record.cost_usd is None:
        meta["unpriced"] = True
    return {k: v for k, v in meta.items() if v is not None}


class _Ids:
    """The ids of one request's events: the trace's, and one per observation role."""

    def __init__(self, record: FinishRecord) -> None:
        self.trace = _trace_id(record)

    def event(self, role: str) -> str:
        return str(_derived(self.trace, f"event/{role}"))

    def observation(self, role: str, span_id: bytes = b"") -> str:
        return span_id.hex() if span_id else _derived(self.trace, role).hex[:16]


def _envelope(kind: str, event_id: str, timestamp: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"id": event_id, "timestamp": timestamp, "type": kind, "body": body}


@dataclass(slots=True)
class GenerationSource:
    """Where a request's generation comes from: the attempt whose answer (or failure) the client
    got, or the request itself when no upstream answered (both Langfuse protocols use this)."""

    start_ns: int
    end_ns: int
    ttfb_s: float | None
    model: str | None
    name: str
    obs_id: str
    metadata: dict[str, Any]

    @classmethod
    def of(cls, record: FinishRecord, index: int | None, ids: _Ids) -> GenerationSource:
        if index is not None:
            a = record.attempts[index]
            meta = {"provider": a.provider, "upstream": a.upstream, "upstream_model": a.model,
                    "upstream_status": a.status, "via": a.via, "server_address": a.server_address or None}
            return cls(a.start_ns, a.end_ns, a.ttfb_s, record.response_model or a.model, a.deployment,
                       ids.observation(f"attempt/{index}", a.span_id), {k: v for k, v in meta.items() if v is not None})
        name = f"cache {record.cache}" if record.cache in ("hit", "semantic-hit") else "gateway"
        return cls(record.start_ns, record.end_ns, record.ttfb_s, record.response_model or record.model, name,
                   ids.observation("request", record.span_id), {"cache": record.cache} if record.cache else {})

    def completion_start(self, record: FinishRecord) -> str | None:
        """When a stream's first token came (ISO), or None."""
        if not record.stream or self.ttfb_s is None:
            return None
        return _iso(min(self.start_ns + int(self.ttfb_s * 1e9), self.end_ns))


def _generation(record: FinishRecord, index: int | None, ids: _Ids,
                environment: str | None, with_bodies: bool) -> dict[str, Any]:
    level, status_message = _level(record)
    src = GenerationSource.of(record, index, ids)
    body: dict[str, Any] = {
        "id": src.obs_id,
        "traceId": ids.trace,
        "name": src.name,
        "startTime": _iso(src.start_ns),
        "endTime": _iso(src.end_ns),
        "usageDetails": _usage_details(record),
        "level": level,
        "metadata": src.metadata,
    }
    if src.model:
        body["model"] = src.model
    if record.params:
        body["modelParameters"] = _model_parameters(record.params)
    completion_start = src.completion_start(record)
    if completion_start is not None:
        body["completionStartTime"] = completion_start
    if record.cost_usd is not None:
        body["costDetails"] = {"total": float(record.cost_usd)}
    if status_message:
        body["statusMessage"] = status_message
    if with_bodies and record.input is not None:
        body["input"] = record.input
    if with_bodies and record.output is not None:
        body["output"] = record.output
    if environment:
        body["environment"] = environment
    return _envelope("generation-create", ids.event("generation"), _iso(record.end_ns), body)


def _attempt_span(record: FinishRecord, index: int, attempt: AttemptRecord, ids: _Ids,
                  environment: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ids.observation(f"attempt/{index}", attempt.span_id),
        "traceId": ids.trace,
        "name": f"attempt {attempt.deployment}",
        "startTime": _iso(attempt.start_ns),
        "endTime": _iso(attempt.end_ns),
        "metadata": _attempt_summary(attempt),
        "level": "DEFAULT",
    }
    if attempt.error_code:
        body["level"] = "WARNING"
        status = f" (HTTP {attempt.status})" if attempt.status else ""
        body["statusMessage"] = f"{attempt.error_code}{status}"
    elif attempt.cancelled:
        body["statusMessage"] = "cancelled"
    if environment:
        body["environment"] = environment
    return _envelope("span-create", ids.event(f"attempt/{index}"), _iso(record.end_ns), body)


def _stage_span(record: FinishRecord, index: int, stage: StageRecord, ids: _Ids,
                environment: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ids.observation(f"stage/{index}"),
        "traceId": ids.trace,
        "name": stage.name,
        "startTime": _iso(stage.start_ns),
        "endTime": _iso(stage.end_ns),
    }
    if stage.attributes:
        body["metadata"] = stage.attributes
    if environment:
        body["environment"] = environment
    return _envelope("span-create", ids.event(f"stage/{index}"), _iso(record.end_ns), body)


def events_of(record: FinishRecord, *, environment: str | None = None, release: str | None = None,
              with_bodies: bool = True) -> list[dict]:
    """The ingestion events for one request: its trace, the generation the client's answer came
    from, and spans for the other attempts and the gateway's stages. `with_bodies=False` leaves
    out the prompt and answer (used when they would not fit in one batch)."""
    ids = _Ids(record)
    answering = _answering_attempt(record)
    trace: dict[str, Any] = {
        "id": ids.trace,
        "timestamp": _iso(record.start_ns),
        "name": _trace_name(record),
        "metadata": _trace_metadata(record),
        "tags": _tags(record),
    }
    if record.user:
        trace["userId"] = record.user
    if with_bodies and record.input is not None:
        trace["input"] = record.input
    if with_bodies and record.output is not None:
        trace["output"] = record.output
    if environment:
        trace["environment"] = environment
    if release:
        trace["release"] = release
    events = [_envelope("trace-create", ids.event("trace"), _iso(record.end_ns), trace),
              _generation(record, answering, ids, environment, with_bodies)]
    events += [_attempt_span(record, i, a, ids, environment)
               for i, a in enumerate(record.attempts) if i != answering]
    events += [_stage_span(record, i, s, ids, environment) for i, s in enumerate(record.stages)]
    return events


def _dumps(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, default=str)


def _encoded(record: FinishRecord, environment: str | None, release: str | None,
             room: int) -> tuple[list[bytes] | None, bool]:
    """A record's events as JSON parts, and whether the prompt and answer had to be left out
    because they alone would overflow a batch; (None, True) when even that does not fit."""
    parts = [_dumps(e) for e in events_of(record, environment=environment, release=release)]
    size = sum(len(p) + 1 for p in parts)
    if size <= room:
        return parts, False
    events = events_of(record, environment=environment, release=release, with_bodies=False)
    for event in events[:2]:  # the trace and the generation say why the prompt is missing
        event["body"]["metadata"]["bodies_dropped"] = f"{size} bytes do not fit one Langfuse batch"
    parts = [_dumps(e) for e in events]
    return (parts if sum(len(p) + 1 for p in parts) <= room else None), True


_HEAD, _TAIL = b'{"batch":[', b"]}"


def encode_batches(records: list[FinishRecord], *, environment: str | None = None,
                   release: str | None = None, max_bytes: int = MAX_BATCH_BYTES,
                   counts: dict[str, int] | None = None) -> Iterator[tuple[bytes, int]]:
    """Request bodies of at most `max_bytes` each, as (body, number of events); a request's events
    stay in one batch, in order. `counts` gains `bodies_dropped` (records sent without prompt and
    answer to fit) and `too_large` (records not sent at all)."""
    counts = counts if counts is not None else {}
    room = max_bytes - len(_HEAD) - len(_TAIL)
    batch: list[bytes] = []
    size = 0
    for record in records:
        parts, dropped = _encoded(record, environment, release, room)
        if dropped:
            key = "too_large" if parts is None else "bodies_dropped"
            counts[key] = counts.get(key, 0) + 1
        if parts is None:
            continue
        added = sum(len(p) + 1 for p in parts)
        if batch and size + added > room:
            yield _HEAD + b",".join(batch) + _TAIL, len(batch)
            batch, size = [], 0
        batch += parts
        size += added
    if batch:
        yield _HEAD + b",".join(batch) + _TAIL, len(batch)


def check_settings(host: str, public_key: str, secret_key: str, environment: str | None) -> tuple[str, str]:
    """(the host without a trailing slash, the Authorization header) after checking what both
    Langfuse exporters are given; ValueError naming what is wrong (never a key's value)."""
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("langfuse host must be an http(s) URL such as https://cloud.langfuse.com "
                         "or http://langfuse.internal:3000")
    if parts.username or parts.password:
        raise ValueError("langfuse host must not carry credentials; set public_key and secret_key")
    if not public_key or not secret_key:
        raise ValueError("langfuse needs both public_key and secret_key (from the project's settings)")
    if environment is not None and (not _ENVIRONMENT.fullmatch(environment)
                                    or environment.startswith("langfuse")):
        raise ValueError(f"langfuse environment {environment!r} must be 1-40 characters of a-z, 0-9, "
                         "'-' or '_' and not start with 'langfuse' (Langfuse would store 'default')")
    token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
    return host.rstrip("/"), f"Basic {token}"


class LangfuseExporter:
    """Sends finish records to one Langfuse project; `export` runs in the background queue's flush.

    Transport and the retry/refuse rules are HttpExporter's: 408/429/5xx or no connection raise
    ExportRetry (the queue keeps the records), any other 4xx drops the batch and counts it. A 207
    with per-event errors is delivered but counted in `event_errors` and logged at most once a
    minute. The secret key lives only in the Authorization header: never in logs, errors, stats.
    """

    name = "langfuse"

    def __init__(self, host: str, public_key: str, secret_key: str, *, timeout: float = 10.0,
                 environment: str | None = None, release: str | None = None,
                 max_batch_bytes: int = MAX_BATCH_BYTES) -> None:
        self.host, auth = check_settings(host, public_key, secret_key, environment)
        self.public_key = public_key
        self.environment = environment
        self.release = release
        self.max_batch_bytes = max_batch_bytes
        self._http = HttpExporter(self.host + INGESTION_PATH, {
            "authorization": auth,
            "x-langfuse-sdk-name": "llmgw",
            "x-langfuse-public-key": public_key,
        }, timeout=timeout)
        self._http.name = self.name
        self.event_errors = 0  # events Langfuse listed in a 207's `errors`
        self.records = 0  # records whose batches Langfuse answered (delivered or refused for good)
        self._counts: dict[str, int] = {}
        self._last_log = 0.0

    def __repr__(self) -> str:
        return f"LangfuseExporter({self.host!r}, public_key={self.public_key!r})"

    async def export(self, records: list[FinishRecord]) -> None:
        """POST the records' events, one request per batch of at most `max_batch_bytes`.
        Raises ExportRetry when Langfuse could not take a batch now (batches before it were
        delivered; sending them again upserts the same ids)."""
        if not records:
            return
        too_large = self._counts.get("too_large", 0)
        for body, events in encode_batches(records, environment=self.environment, release=self.release,
                                           max_bytes=self.max_batch_bytes, counts=self._counts):
            resp = await self._http.post(body, "application/json", events)
            if resp is not None:
                self._note_errors(resp, events)
            elif self._http.last_refusal in (400, 404, 405, 410):
                self._log_limited("%s: %s refuses the batch ingestion API (HTTP %d): Langfuse Cloud and Langfuse "
                                  "v4 take traces at their OTLP endpoint; set observability.langfuse.protocol: otel",
                                  self.name, self.host, self._http.last_refusal)
        self.records += len(records)
        if self._counts.get("too_large", 0) > too_large:
            self._log_limited("%s: %d requests were too large for one Langfuse batch even without "
                              "prompt and answer; not sent", self.name, self._counts["too_large"] - too_large)

    def _note_errors(self, resp: Any, events: int) -> None:
        try:
            errors = resp.json().get("errors") or []
        except (ValueError, AttributeError):
            return
        if not isinstance(errors, list) or not errors:
            return
        self.event_errors += len(errors)
        first = errors[0] if isinstance(errors[0], dict) else {}
        detail = str(first.get("error") or first.get("message") or "")[:200]
        self._log_limited("%s: %s refused %d of %d events (first: %s %s)", self.name, safe_url(self._http.url),
                          len(errors), events, first.get("status"), detail)

    def _log_limited(self, message: str, *args: Any) -> None:
        """At most one line a minute: a misconfigured project would otherwise log every flush."""
        now = time.monotonic()
        if now - self._last_log >= 60.0:
            self._last_log = now
            log.error(message, *args)

    def stats(self) -> dict[str, int]:
        return {**self._http.stats(), "event_errors": self.event_errors, "records": self.records,
                "bodies_dropped": self._counts.get("bodies_dropped", 0),
                "too_large": self._counts.get("too_large", 0)}

    async def aclose(self) -> None:
        await self._http.aclose()
