"""The finish record: one per request, built once in `on_finish` from the Outcome and the
context, and read by every observability sink (metrics, access log, traces, Langfuse).

It holds only what may leave the process: ids, names, numbers, timings. Never a client key, an
upstream key or a URL with credentials; prompt and answer text only when a sink asked for
bodies (`input` / `output`), already redacted as that setting says.

Times: `start_ns` / `end_ns` are Unix epoch nanoseconds (what OTLP and Langfuse want), derived
from the perf-counter timings of the request; durations are seconds.
Trace ids are raw bytes (16 for a trace, 8 for a span); `.hex()` gives the W3C text form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AttemptRecord", "FinishRecord", "StageRecord"]


@dataclass(slots=True)
class AttemptRecord:
    """One upstream attempt (a child span; a Langfuse generation when it served the answer)."""

    deployment: str  # the deployment's name in the config
    upstream: str  # the upstream's name in the config (never its URL)
    provider: str  # the adapter: "openai", "anthropic", "gemini", "azure", "vllm", ...
    model: str  # the model name sent upstream
    start_ns: int
    end_ns: int
    status: int | None  # upstream HTTP status; None when no response head came
    error_code: str | None = None  # e.g. "upstream_timeout", "rate_limit_exceeded"; None when it succeeded
    error_class: str | None = None  # "client_fault" | "retryable" | "fallback" | "fatal" | None
    via: str = "primary"  # "primary" | "fallback"
    retry: bool = False
    hedge: bool = False
    cancelled: bool = False
    ttfb_s: float | None = None
    span_id: bytes = b""  # the span id sent upstream in `traceparent` (empty when not traced)
    server_address: str = ""  # host[:port] of the upstream (no path, no credentials)


@dataclass(slots=True)
class StageRecord:
    """A gateway stage worth a child span: a plugin's hook (guardrails, cache lookup, auth...)."""

    name: str  # e.g. "guardrails pre_request", "cache lookup"
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class FinishRecord:
    request_id: str
    start_ns: int
    end_ns: int
    duration_s: float
    ttfb_s: float | None  # to the first byte sent to the client (a stream's first event)
    upstream_s: float  # waiting on upstreams
    overhead_s: float  # the gateway's own time
    kind: str  # "chat" | "embeddings" | "models" | "route"
    dialect: str  # "openai" | "anthropic"
    method: str
    path: str
    status: int  # what the client got (499: it left before any response)
    result: str  # "ok" | "error" | "stream_error" | "client_gone"
    model: str | None = None  # as the client asked
    group: str | None = None  # the model group that served (or was asked)
    deployment: str | None = None  # the deployment whose answer the client got
    provider: str | None = None
    response_model: str | None = None  # the upstream's model name of the answer
    error_code: str | None = None
    error_type: str | None = None
    error_message: str | None = None  # the client-facing message (already scrubbed of secrets)
    key_id: str | None = None  # the virtual key's id or the config key's name (never the key)
    key_name: str | None = None
    user: str | None = None
    team: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float | None = None  # None: unpriced or nothing to price
    cache: str | None = None  # "hit" | "semantic-hit" | "miss" | None (no cache configured)
    stream: bool = False
    finish_reason: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, top_p, ... as sent
    # W3C trace context (bytes; empty when tracing is off). `parent_span_id` is the client's span.
    trace_id: bytes = b""
    span_id: bytes = b""
    parent_span_id: bytes = b""
    sampled: bool = False
    input: Any = None  # the request's messages (redacted per settings), only when a sink wants bodies
    output: str | None = None  # the answer's text (redacted per settings), only when a sink wants bodies

    @property
    def fallbacks(self) -> int:
        return sum(1 for a in self.attempts if a.via == "fallback")

    @property
    def retries(self) -> int:
        return sum(1 for a in self.attempts if a.retry)
