"""One upstream attempt: sending a request to a configured upstream and classifying what failed.

Every failure of an attempt becomes an `UpstreamFailure` that keeps what routing decides on
(retryable, fall back, the client's fault, whether the request was sent, the trigger) beside
what the client would be told. Text that came from an upstream passes the `Scrubber` first, so a
provider or proxy that echoes the request cannot leak the gateway's credentials to a client.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from llmgw.errors import UpstreamFailure
from llmgw.tracecontext import new_span_id
from llmgw.transport import (
    ConnectError,
    PoolTimeout,
    Timeouts,
    Transport,
    UpstreamError,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from llmgw.exchange import Attempt, RequestContext
    from llmgw.providers.base import ErrorClass, ProviderAdapter, UpstreamRequest

__all__ = ["Scrubber", "Target", "classified_failure", "exchange", "open_response", "transport_failure"]

log = logging.getLogger("llmgw")

# Shapes of provider credentials, redacted from upstream text even when the gateway does not
# know the value (a fragment such as "sk-ab...wxyz" in an echoed error).
_KEY_SHAPES = re.compile(
    r"(?:\b(?:sk|rk|pk)-[A-Za-z0-9_\-*.]{6,}|\bAIza[0-9A-Za-z_\-]{10,}|\b(?:xai|gsk|hf)[-_][A-Za-z0-9_\-]{10,}"
    r"|\bBearer\s+[A-Za-z0-9_\-.=+/*]{6,}|\bapi[-_]?key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9_\-.*]{6,})",
    re.IGNORECASE,
)


class Scrubber:
    """Removes the secrets the gateway knows (upstream keys and secret header values from the
    config) and anything shaped like a provider key from text before a client sees it."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return _KEY_SHAPES.sub("[redacted]", text)


@dataclass(slots=True)
class Target:
    """One configured upstream: its adapter, its connection pool and its timeouts."""

    name: str
    adapter: ProviderAdapter
    pool: Transport
    timeouts: Timeouts


_CONTENT_POLICY = frozenset({"content_filter", "content_policy_violation", "content_policy"})


def classified_failure(target: Target, status: int, body: bytes, headers: list[tuple[bytes, bytes]],
                       scrub: Scrubber) -> UpstreamFailure:
    """An upstream's error answer, classified by its adapter (the request was sent)."""
    ec: ErrorClass = target.adapter.classify_error(status, body, headers)
    if ec.code == "context_length_exceeded":
        reason = "context_window"
    elif ec.code in _CONTENT_POLICY:
        reason = "content_policy"
    elif status in (401, 403):
        reason = "auth"
    elif status == 429:
        reason = "rate_limited"
    elif status >= 500 or status in (408, 409):
        reason = "server_error"
    else:
        reason = "client_error" if ec.client_fault else "server_error"
    extra = [("retry-after", str(max(int(ec.retry_after + 0.999), 0)))] if ec.retry_after is not None else []
    return UpstreamFailure(ec.status, scrub(ec.message), reason=reason, retryable=ec.retryable, fallback=ec.fallback,
                           client_fault=ec.client_fault and not ec.fallback, sent=True,
                           retry_after=ec.retry_after, type=ec.type, code=ec.code, param=ec.param, headers=extra)


_last_logged: dict[str, tuple[float, int]] = {}


def _log_once_a_minute(key: str, message: str, *args: Any) -> None:
    """A warning that may repeat thousands of times a second (an upstream down): once a minute,
    with how many times it happened since."""
    now = time.monotonic()
    last, count = _last_logged.get(key, (0.0, 0))
    if now - last >= 60.0:
        suffix = f" (and {count} more times in the last minute)" if count else ""
        log.warning(message + suffix, *args)
        _last_logged[key] = (now, 0)
    else:
        _last_logged[key] = (last, count + 1)


def transport_failure(exc: UpstreamError, target: str, scrub: Scrubber) -> UpstreamFailure:
    """A transport failure as an UpstreamFailure (the URL stays in the log, out of the message)."""
    if isinstance(exc, PoolTimeout):
        return UpstreamFailure(503, f"upstream {target!r} has no free connection (pool timeout)", reason="pool_timeout",
                               retryable=True, fallback=True, sent=False, code="upstream_pool_timeout")
    if isinstance(exc, UpstreamTimeout):
        return UpstreamFailure(504, f"upstream {target!r} timed out ({exc.phase})", reason="timeout", retryable=True,
                               fallback=True, sent=exc.sent, code="upstream_timeout")
    if isinstance(exc, ConnectError):
        _log_once_a_minute(f"unreachable:{target}", "upstream %s unreachable: %s", target, exc)
        return UpstreamFailure(502, f"upstream {target!r} is unreachable ({exc.reason})", reason="connection",
                               retryable=True, fallback=True, sent=exc.sent, code="upstream_unreachable")
    mid_stream = "mid-stream" in str(exc)
    return UpstreamFailure(502, scrub(f"upstream {target!r} failed: {exc}"),
                           reason="stream_error" if mid_stream else "protocol", retryable=True, fallback=True,
                           sent=exc.sent, code="upstream_protocol_error")


async def open_response(target: Target, ureq: UpstreamRequest, attempt: Attempt, ctx: RequestContext,
                        scrub: Scrubber, timeouts: Timeouts | None = None) -> Any:
    """Send the request; the response once its head says 2xx (its body not read yet). Raises
    UpstreamFailure otherwise (an error body is read, classified and its connection released)."""
    t0 = time.perf_counter()
    extra = None
    if ctx.trace is not None:  # this attempt becomes the parent of the upstream's own spans
        attempt.span_id = new_span_id()
        extra = ctx.trace.upstream_headers(attempt.span_id)
    try:
        resp = await target.pool.request(ureq.method, ureq.path, ureq.headers, ureq.body,
                                         timeout=timeouts or target.timeouts, timing=attempt, extra=extra)
        attempt.status = resp.status
        if resp.status >= 300:
            body = await resp.read()
            raise classified_failure(target, resp.status, body, resp.headers, scrub)
    except UpstreamError as exc:
        raise transport_failure(exc, target.name, scrub) from None
    finally:
        ctx.upstream_s += time.perf_counter() - t0
    return resp


async def exchange(target: Target, ureq: UpstreamRequest, attempt: Attempt, ctx: RequestContext,
                   scrub: Scrubber, timeouts: Timeouts | None = None) -> bytes:
    """A non-streamed exchange: the 2xx body, or an UpstreamFailure."""
    resp = await open_response(target, ureq, attempt, ctx, scrub, timeouts)
    t0 = time.perf_counter()
    try:
        return await resp.read()
    except UpstreamError as exc:
        raise transport_failure(exc, target.name, scrub) from None
    finally:
        ctx.upstream_s += time.perf_counter() - t0
