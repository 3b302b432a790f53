"""W3C Trace Context (`traceparent`, `tracestate`): accepted from the client, sent upstream.

The gateway's request is one span of the client's trace when the client sent a valid
`traceparent` (its sampled flag decides whether this request is recorded), else the root of a
new trace (kept with the configured ratio, decided from the trace id so every participant
agrees). Each upstream attempt gets its own span id, sent upstream as the parent of whatever the
provider records. An invalid header is ignored (a new trace starts), as the spec asks.
"""

from __future__ import annotations

import re
from random import getrandbits

__all__ = ["Sampler", "TraceContext", "new_span_id", "parse_traceparent"]

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?")
_TRACESTATE = re.compile(r"[\x20-\x7e]*")
_ZERO_TRACE = "0" * 32
_ONE_SPAN = b"\x00" * 7 + b"\x01"
_MASK64 = (1 << 64) - 1


def new_span_id() -> bytes:
    """A random, non-zero span id. Python's Mersenne Twister, as the OpenTelemetry Python SDK
    uses: ids must be unique, not secret, and os.urandom is a system call per id (~1 µs)."""
    return getrandbits(64).to_bytes(8, "big") or _ONE_SPAN


_ZERO_SPAN = "0" * 16


def parse_traceparent(value: str | None) -> tuple[bytes, bytes, bool] | None:
    """(trace id, parent span id, sampled) from a `traceparent` header, or None if it is not valid
    (version ff, all-zero ids, wrong lengths or case; a future version's extra fields are allowed)."""
    if not value:
        return None
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace, span, flags = m.groups()
    if version == "ff" or trace == _ZERO_TRACE or span == _ZERO_SPAN or (version == "00" and len(value.strip()) != 55):
        return None
    return bytes.fromhex(trace), bytes.fromhex(span), bool(int(flags, 16) & 1)


class TraceContext:
    """One request's place in a trace (see the module docstring)."""

    __slots__ = ("trace_id", "span_id", "parent_span_id", "sampled", "tracestate", "_flags")

    def __init__(self, trace_id: bytes, parent_span_id: bytes, sampled: bool, tracestate: str | None = None) -> None:
        self.trace_id = trace_id
        self.span_id = new_span_id()  # the gateway's own span
        self.parent_span_id = parent_span_id
        self.sampled = sampled
        self.tracestate = tracestate
        self._flags = "01" if sampled else "00"

    @classmethod
    def from_headers(cls, headers: dict[str, str], ratio: float) -> TraceContext:
        parsed = parse_traceparent(headers.get("traceparent"))
        if parsed is not None:
            return cls._joined(parsed, headers)
        return cls._new(_bound(ratio))

    @classmethod
    def _joined(cls, parsed: tuple[bytes, bytes, bool], headers: dict[str, str]) -> TraceContext:
        trace_id, parent, sampled = parsed
        state = headers.get("tracestate")
        if state and (len(state) > 512 or not _TRACESTATE.fullmatch(state)):
            state = None  # W3C: printable ASCII list members only; anything else is not passed on
        return cls(trace_id, parent, sampled, state or None)

    @classmethod
    def _new(cls, bound: int) -> TraceContext:
        """A new root, kept when the trace id's low 8 bytes are below `bound` (the OTel spec's
        ratio sampler: ratio × 2^64), decided on the random int before it becomes bytes."""
        n = getrandbits(128) or 1
        ctx = cls.__new__(cls)
        ctx.trace_id = n.to_bytes(16, "big")
        ctx.span_id = getrandbits(64).to_bytes(8, "big") or _ONE_SPAN
        ctx.parent_span_id = b""
        ctx.tracestate = None
        if (n & _MASK64) < bound:
            ctx.sampled, ctx._flags = True, "01"
        else:
            ctx.sampled, ctx._flags = False, "00"
        return ctx

    def upstream_headers(self, span_id: bytes) -> list[tuple[str, str]]:
        """The headers that make `span_id` (an attempt's span) the parent of the upstream's work."""
        out = [("traceparent", f"00-{self.trace_id.hex()}-{span_id.hex()}-{self._flags}")]
        if self.tracestate:
            out.append(("tracestate", self.tracestate))
        return out


def _bound(ratio: float) -> int:
    return 1 << 64 if ratio >= 1.0 else int(ratio * (1 << 64))


class Sampler:
    """Tracing is on: every request gets a trace context (the client's, or a new one kept with
    probability `ratio`). The runner calls it as the request starts, no plugin hook needed (a hook
    costs ~9k instructions per request; a new root here ~5k, callgrind)."""

    __slots__ = ("ratio", "_bound")

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self._bound = _bound(ratio)

    def start(self, headers: dict[str, str]) -> TraceContext:
        value = headers.get("traceparent")
        if value is not None:
            parsed = parse_traceparent(value)
            if parsed is not None:
                return TraceContext._joined(parsed, headers)
        return TraceContext._new(self._bound)
