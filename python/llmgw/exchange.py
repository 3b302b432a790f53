"""What flows through a request: the request, the response, the per-request context, each
upstream attempt, and the outcome handed to `on_finish`.

The canonical format is OpenAI chat completions. `raw` fields hold the bytes as they arrived so
the gateway can forward them untouched when nothing changed them (see `ChatResponse.data`).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

import orjson

if TYPE_CHECKING:
    from llmgw.errors import GatewayError, UpstreamFailure
    from llmgw.services import Services

__all__ = [
    "Attempt",
    "ChatRequest",
    "ChatResponse",
    "Outcome",
    "RequestContext",
    "RoutePlan",
    "RouteStep",
    "Usage",
    "next_request_id",
    "request_id_from",
]

_ids = itertools.count(1)
_id_prefix = f"{os.getpid():x}-{int(time.time()):x}-"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def next_request_id() -> str:
    # A counter, not uuid4: unique per process and ~10x cheaper on the hot path.
    return f"req-{_id_prefix}{next(_ids):x}"


def request_id_from(headers: dict[str, str]) -> str:
    """The client's `x-request-id` when it is a sane token (letters, digits, `._:-`, ≤ 128),
    else a new one: a correlation id may come from the caller, never arbitrary bytes."""
    given = headers.get("x-request-id")
    if given is not None and _CLIENT_ID.fullmatch(given):
        return given
    return next_request_id()


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int | None = None

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        try:
            p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            return cls(p, c, int(usage.get("total_tokens") or p + c), cached)
        except (TypeError, ValueError):
            return None


@dataclass(slots=True)
class ChatRequest:
    """A request in OpenAI's format, as plugins see it.

    `kind` says which endpoint: "chat" (chat completions, and Anthropic's /v1/messages after
    translation), "embeddings", or "models" (GET /v1/models, with an empty body). A plugin that
    is not read-only may change `body` in place or return a new ChatRequest; the gateway then
    serializes `body` again instead of forwarding `raw`.
    """

    body: dict[str, Any]
    model: str
    stream: bool
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)  # client headers, lower-case names
    kind: str = "chat"

    @property
    def include_usage(self) -> bool:
        opts = self.body.get("stream_options")
        return bool(isinstance(opts, dict) and opts.get("include_usage"))


class ChatResponse:
    """A chat completion in OpenAI's format (`chat.completion`), or a stream of chunks.

    `data` parses `raw` on first access; once a plugin that is not read-only has looked at
    `data` the gateway serializes `data` (with any change made to it) instead of forwarding `raw`.

    `chunks`: a response may carry `chat.completion.chunk` dicts instead (an iterable, or an
    async iterable): a cache replaying a stored answer, say. Answering a streaming request it is
    streamed chunk by chunk through the `on_chunk` hooks; answering a non-streaming request it is
    assembled into one `chat.completion`. A complete `data` answering a streaming request is cut
    into chunks the same way (`llmgw.streaming.response_as_chunks`).

    For a streamed answer the post_response hooks receive a summary: `streamed` is True,
    `usage`, `finish_reason`, and `text` (what the client received, after every on_chunk hook)
    when a plugin asked for it with `RequestContext.collect_text`.
    """

    __slots__ = ("raw", "_data", "status", "headers", "streamed", "usage", "finish_reason", "text", "chunks")

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        *,
        raw: bytes | None = None,
        status: int = 200,
        headers: list[tuple[str, str]] | None = None,
        streamed: bool = False,
        chunks: Iterable[dict[str, Any]] | Any | None = None,
    ) -> None:
        self.raw = raw
        self._data = data
        self.status = status
        self.headers = headers or []
        self.streamed = streamed
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.text: str | None = None
        self.chunks = chunks

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = orjson.loads(self.raw) if self.raw else {}
        return self._data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        self._data = value

    def body_bytes(self, keep_raw: bool = False) -> bytes:
        """The body to send: `raw` when nothing may have changed it, else `data` serialized."""
        if self.raw is not None and (keep_raw or self._data is None):
            return self.raw
        return orjson.dumps(self._data or {})

    def __repr__(self) -> str:
        return f"ChatResponse(status={self.status}, streamed={self.streamed}, usage={self.usage})"


@dataclass(frozen=True, slots=True)
class RouteStep:
    """One deployment a request may be sent to: the upstream (`target`), the model name it knows
    the model by, the deployment's name and group, and how the plan reaches it: "primary" (one of
    the group's own deployments, tried in the strategy's order) or "fallback" (entered only after
    a failure whose trigger is in `on`)."""

    target: str
    model: str
    deployment: str = ""
    group: str = ""
    via: str = "primary"
    on: frozenset[str] = frozenset()


class RoutePlan:
    """Where a request will go, in order: the group's deployments (strategy order), then its
    fallbacks. `reason` says why (a rule, a complexity score, the caller's header, the strategy);
    `skipped` lists deployments left out without a call, and why (breaker open, context window
    too small). Plans are built once per distinct route and shared by requests (treat them as
    read-only); `primaries` and `fallbacks` split `steps` once, for the dispatcher."""

    __slots__ = ("model", "steps", "group", "reason", "skipped", "primaries", "fallbacks", "served_headers")

    def __init__(self, model: str, steps: tuple[RouteStep, ...], group: str = "", reason: str = "",
                 skipped: tuple[tuple[str, str], ...] = ()) -> None:
        self.model = model
        self.steps = steps
        self.group = group
        self.reason = reason
        self.skipped = skipped
        self.primaries = tuple(s for s in steps if s.via == "primary")
        self.fallbacks = tuple(s for s in steps if s.via != "primary")
        # The x-llmgw-* headers when the first step answers at once (most requests), built once.
        first = steps[0] if steps else None
        self.served_headers: list[tuple[str, str]] = [
            ("x-llmgw-attempts", "1"), ("x-llmgw-deployment", first.deployment or first.target)] if first else []
        if first and reason:
            self.served_headers.append(("x-llmgw-route-reason", reason))

    def __repr__(self) -> str:
        return f"RoutePlan({self.model!r} -> {self.group!r}: {[s.deployment for s in self.steps]}, {self.reason!r})"


@dataclass(slots=True)
class Attempt:
    """One try of one upstream: filled in as it goes, complete once it ended.

    Timings are seconds: `queue_s` waiting for a pooled connection, `connect_s` opening one
    (0 on a reused connection), `ttfb_s` from writing the request to the response head, `total_s`
    from the start of the attempt to its last byte (or its failure). `retry` marks a second try
    of the same deployment; `hedge` an attempt raced against a slower one; `cancelled` an attempt
    stopped because another one won the race.
    """

    target: str
    model: str
    started: float  # time.perf_counter()
    deployment: str = ""
    sent: bool = False
    status: int | None = None  # the upstream's HTTP status; None when no response head came
    error: UpstreamFailure | None = None
    usage: Usage | None = None
    queue_s: float = 0.0
    connect_s: float = 0.0
    ttfb_s: float | None = None
    total_s: float | None = None
    retry: bool = False
    hedge: bool = False
    cancelled: bool = False
    span_id: bytes = b""  # this attempt's span, sent upstream in `traceparent` (when the request has a trace)

    @property
    def ok(self) -> bool:
        return self.error is None and self.total_s is not None

    @property
    def error_class(self) -> str | None:
        """"client_fault", "retryable", "fallback" (not retryable here, another may serve) or
        "fatal"; None when the attempt did not fail."""
        err = self.error
        if err is None:
            return None
        if err.client_fault:
            return "client_fault"
        if err.retryable:
            return "retryable"
        return "fallback" if err.fallback else "fatal"


class Outcome:
    """How a request ended, handed to every `on_finish` hook exactly once.

    status: the HTTP status the client got; 499 when it went away before any response.
    result: "ok", "error" (answered with an error status), "stream_error" (a stream failed after
        its 200: the client got an error event), "client_gone" (disconnected or too slow before
        the end).
    error: what failed, when something did (for "stream_error" too).
    usage: what the upstream reported; for a cut or cancelled stream, or when the upstream
        reported nothing, an estimate (`usage_estimated` True) counted from the prompt and from
        what was streamed.
    Timings (seconds): `duration` from the request's first byte (`started`) to the end
    (`ended`); `ttfb` to the first byte of the response sent to the client (for a stream: its
    first event); `upstream_s` spent waiting on upstreams; `overhead_s` the rest, less time
    blocked on a slow client: the gateway's own time.
    """

    # Built for every request that has an on_finish hook, so it holds only the runner that ran the
    # request and the end time; each fact is read from the runner when a hook asks for it
    # (callgrind: a no-op on_finish went from ~2,100 to ~900 instructions per request).
    __slots__ = ("_run", "ended", "_usage")

    def __init__(self, source: Any, ended: float) -> None:
        self._run = source  # the RequestRunner (read by attribute; this module does not import it)
        self.ended = ended
        self._usage: tuple[Usage | None, bool] | None = None

    @property
    def status(self) -> int:
        run = self._run
        return run.status if run.http.responded else 499

    @property
    def result(self) -> str:
        return self._run.result  # type: ignore[no-any-return]

    @property
    def error(self) -> GatewayError | None:
        return self._run.error  # type: ignore[no-any-return]

    @property
    def usage(self) -> Usage | None:
        if self._usage is None:
            self._usage = self._run.final_usage()
        return self._usage[0]

    @property
    def usage_estimated(self) -> bool:
        if self._usage is None:
            self._usage = self._run.final_usage()
        return self._usage[1]

    @property
    def attempts(self) -> list[Attempt]:
        return self._run.ctx.attempts  # type: ignore[no-any-return]

    @property
    def streamed(self) -> bool:
        return self._run.streamed  # type: ignore[no-any-return]

    @property
    def short_circuit(self) -> bool:
        return self._run.short_circuit  # type: ignore[no-any-return]

    @property
    def started(self) -> float:
        return self._run.ctx.started  # type: ignore[no-any-return]

    @property
    def upstream_s(self) -> float:
        return self._run.ctx.upstream_s  # type: ignore[no-any-return]

    @property
    def duration(self) -> float:
        return self.ended - self._run.ctx.started  # type: ignore[no-any-return]

    @property
    def ttfb(self) -> float | None:
        ctx = self._run.ctx
        return ctx.first_byte_at - ctx.started if ctx.first_byte_at is not None else None

    @property
    def overhead_s(self) -> float:
        run = self._run
        return max(self.ended - run.ctx.started - run.ctx.upstream_s - run.client_s, 0.0)  # type: ignore[no-any-return]

    def facts(self) -> tuple[int, str, GatewayError | None, Usage | None, bool, bool, float | None, float, str, str]:
        """(status, result, error, usage, usage_estimated, streamed, ttfb, overhead_s, method,
        route) in one call: for a hook that reads them all on every request (observability),
        ten property calls cost it ~2k instructions more."""
        run = self._run
        ctx = run.ctx
        if self._usage is None:
            self._usage = run.final_usage()
        usage, estimated = self._usage
        first = ctx.first_byte_at
        return (run.status if run.http.responded else 499, run.result, run.error, usage, estimated, run.streamed,
                first - ctx.started if first is not None else None,
                max(self.ended - ctx.started - ctx.upstream_s - run.client_s, 0.0), run.http.method,
                run.route[0].pattern if run.route is not None else ctx.path)

    @property
    def route(self) -> str:
        """The API route: the endpoint's path, or the pattern of a plugin's route (`/admin/keys/{id}`)."""
        run = self._run
        return run.route[0].pattern if run.route is not None else run.ctx.path  # type: ignore[no-any-return]

    @property
    def method(self) -> str:
        return self._run.http.method  # type: ignore[no-any-return]

    @property
    def served_by(self) -> str | None:
        """The upstream whose answer the client got (None for a short-circuit or a failure)."""
        for attempt in reversed(self.attempts):
            if attempt.error is None and attempt.status is not None and attempt.status < 300:
                return attempt.target
        return None

    def __repr__(self) -> str:
        return (f"Outcome(status={self.status}, result={self.result!r}, usage={self.usage}, "
                f"attempts={len(self.attempts)}, duration={self.duration:.6f})")


@dataclass(slots=True)
class RequestContext:
    """Per-request state shared by the runner and plugins (`metadata` is free for plugins).

    Set as the request goes: `key_name`/`key_id`/`user`/`team` by authentication; `plan` before
    the pre_request hooks run (None for an unknown model; re-planned if a hook changes the
    model); `attempts` as upstreams are tried; `usage` when known. `started` is when the
    request's first byte was read.
    """

    request_id: str
    started: float
    kind: str = "chat"
    dialect: str = "openai"  # the client's API: "openai" or "anthropic"
    client: str = ""
    path: str = ""
    services: Services | None = None
    key_name: str | None = None
    key_id: str | None = None
    user: str | None = None
    team: str | None = None
    allowed_models: frozenset[str] | None = None  # None: every model
    model: str | None = None
    plan: RoutePlan | None = None
    attempts: list[Attempt] = field(default_factory=list)
    budget_exhausted: bool = False  # set by a budget policy: the plan starts at its budget fallback
    usage: Usage | None = None
    usage_estimated: bool = False
    collect_text: bool = False  # a plugin wants the streamed text in its post_response
    upstream_s: float = 0.0  # time spent waiting on upstreams
    first_byte_at: float | None = None  # when the response's first byte went to the client
    metadata: dict[str, Any] = field(default_factory=dict)
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    # In post_response of a non-streamed chat answer: ask the upstreams again (the same request,
    # the same plan), e.g. once when an answer fails validation. Its attempts join ctx.attempts.
    redo: Callable[[], Awaitable[ChatResponse | GatewayError]] | None = None
    # The request's W3C trace context (llmgw.tracecontext.TraceContext), set by the
    # observability plugin when tracing is on or the client sent a traceparent; sent upstream.
    trace: Any = None
    # When the request is traced: (plugin name, hook, start, end) perf-counter times of each plugin
    # hook, filled by the plugin chain, exported as child spans.
    stages: list[tuple[str, str, float, float]] | None = None
    # Set by a plugin in pre_request when other requests wait on this one's answer (the cache's
    # coalescing): if the client leaves, the upstream call still runs to its end (its hooks too),
    # only the writing to the client stops.
    keep_upstream: bool = False

    @property
    def route(self) -> RouteStep | None:
        """The first step of the plan (where the request goes unless it falls back)."""
        return self.plan.steps[0] if self.plan is not None and self.plan.steps else None
