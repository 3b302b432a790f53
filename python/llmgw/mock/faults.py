"""Fault decisions and corruptions that do not depend on timing.

Timing faults (latency, hangs, cuts, pacing) are carried out by the connection in server.py;
this module decides *whether* a request fails and *how* a body is corrupted.

Malformed output (``x-mock-malformed``): ``body`` and ``sse`` both mean "emit something that is
not valid JSON where JSON belongs", in the form that fits the response: a non-streaming response
gets a truncated JSON body (200, application/json); a stream gets its first content event with
truncated JSON data, after which the stream continues normally.
"""

from __future__ import annotations

import random

from llmgw.mock.options import MockOptions
from llmgw.mock.replies import FullReply, Reply, StreamReply

RETRY_AFTER_STATUSES = frozenset({429, 503, 529})


def roll_status(options: MockOptions, dice: random.Random) -> int | None:
    """The injected error status for this request, or None to answer normally."""
    if options.status is None:
        return None
    if options.fail_rate >= 1.0 or dice.random() < options.fail_rate:
        return options.status
    return None


def retry_after_headers(status: int, options: MockOptions) -> list[tuple[str, str]]:
    """``Retry-After`` for throttling/unavailable statuses when a value is configured."""
    if options.retry_after is None or status not in RETRY_AFTER_STATUSES:
        return []
    seconds = options.retry_after
    return [("retry-after", str(int(seconds)) if seconds == int(seconds) else str(seconds))]


def truncate_json(data: bytes) -> bytes:
    """Cut a JSON document in half: an unterminated object no parser accepts."""
    return data[: max(1, len(data) // 2)]


def corrupt_event(frame: bytes) -> bytes:
    """Keep an SSE frame's framing but truncate the JSON in its ``data:`` line."""
    marker = frame.find(b"data: ")
    if marker < 0:  # a JSON-array stream element (Gemini without alt=sse)
        return truncate_json(frame) + b"\n"
    start = marker + len(b"data: ")
    end = frame.find(b"\n", start)
    end = len(frame) if end < 0 else end
    payload = frame[start:end]
    return frame[:start] + truncate_json(payload) + frame[end:]


def make_malformed(reply: Reply) -> Reply:
    """Corrupt a successful reply as described in the module docstring."""
    if isinstance(reply, FullReply):
        reply.body = truncate_json(reply.body)
        return reply
    if reply.chunks:
        reply.chunks[0] = corrupt_event(reply.chunks[0])
    elif reply.epilogue:
        reply.epilogue[0] = corrupt_event(reply.epilogue[0])
    return reply


def is_stream(reply: Reply) -> bool:
    return isinstance(reply, StreamReply)
