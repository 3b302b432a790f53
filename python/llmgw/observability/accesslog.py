"""The access log: one line per request, JSON for machines, a readable line on a terminal.

Lines are formatted and written in batches by a background queue, never on the request path;
the write itself runs in a thread, so a full pipe or a slow disk stalls the log, not the
gateway (the queue then fills, and what it drops is counted in `llmgw_queue_dropped_total`).

A JSON line holds ids, names, numbers and timings (see `json_fields`): the key's id and name,
never the key. Bodies appear only when `access_log.bodies` asks for them (redacted by default).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any

import orjson

from llmgw.observability.record import FinishRecord

__all__ = ["AccessLog", "json_fields", "text_line"]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def json_fields(r: FinishRecord) -> dict[str, Any]:
    """The fields of one JSON access-log line (None values left out)."""
    out: dict[str, Any] = {
        "ts": datetime.fromtimestamp(r.start_ns / 1e9, timezone.utc).isoformat(timespec="milliseconds"),
        "request_id": r.request_id, "method": r.method, "path": r.path, "status": r.status, "result": r.result,
        "kind": r.kind, "model": r.model, "model_group": r.group, "deployment": r.deployment, "provider": r.provider,
        "key_id": r.key_id, "key_name": r.key_name, "user": r.user, "team": r.team,
        "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
        "cached_tokens": r.cached_tokens or None, "usage_estimated": r.usage_estimated or None,
        "cost_usd": r.cost_usd, "latency_ms": _ms(r.duration_s), "ttft_ms": _ms(r.ttfb_s) if r.stream else None,
        "upstream_ms": _ms(r.upstream_s), "overhead_ms": _ms(r.overhead_s), "cache": r.cache, "stream": r.stream,
        "attempts": len(r.attempts), "error_code": r.error_code,
        "trace_id": r.trace_id.hex() if r.trace_id else None,
    }
    if len(r.attempts) > 1:
        out["attempt_list"] = [{"deployment": a.deployment, "status": a.status, "error": a.error_code,
                                "ms": _ms((a.end_ns - a.start_ns) / 1e9), "via": a.via,
                                **({"retry": True} if a.retry else {}), **({"hedge": True} if a.hedge else {})}
                               for a in r.attempts]
    if r.input is not None:
        out["input"] = r.input
    if r.output is not None:
        out["output"] = r.output
    return {k: v for k, v in out.items() if v is not None}


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def text_line(r: FinishRecord) -> str:
    """A line for people: time, status, route, model → deployment, latency, tokens, cost, who.
    Control characters are replaced: a client's model name must not drive the operator's terminal."""
    clock = time.strftime("%H:%M:%S", time.localtime(r.start_ns / 1e9))
    what = _CONTROL.sub("?", r.model) if r.model else r.path
    if r.deployment and r.deployment != r.model:
        what += f" → {r.deployment}"
    parts = [clock, str(r.status), r.method, r.path, what, f"{r.duration_s * 1000:.1f} ms"]
    if r.stream and r.ttfb_s is not None:
        parts.append(f"(ttft {r.ttfb_s * 1000:.1f} ms)")
    if r.prompt_tokens or r.completion_tokens:
        parts.append(f"{r.prompt_tokens}→{r.completion_tokens} tok{'~' if r.usage_estimated else ''}")
    if r.cost_usd is not None:
        parts.append(f"${r.cost_usd:.6f}")
    if r.cache:
        parts.append(f"cache={r.cache}")
    if len(r.attempts) > 1:
        parts.append(f"attempts={len(r.attempts)}")
    if r.key_name or r.key_id:
        parts.append(f"key={r.key_name or r.key_id}")
    if r.team:
        parts.append(f"team={r.team}")
    if r.error_code:
        parts.append(f"error={r.error_code}")
    parts.append(r.request_id)
    return " ".join(parts)


class AccessLog:
    """Formats finish records into lines and writes them to stdout, stderr or a file."""

    def __init__(self, fmt: str = "auto", destination: str = "stdout") -> None:
        self.destination = destination
        self._file = None
        if destination in ("stdout", "stderr"):
            stream = sys.stdout if destination == "stdout" else sys.stderr
            try:
                self.fd = stream.fileno()
            except (AttributeError, OSError, ValueError):  # replaced by a capture without a descriptor
                self.fd = 1 if destination == "stdout" else 2
        else:
            self._file = open(destination, "ab")  # noqa: SIM115 - open for the worker's life, closed in aclose
            self.fd = self._file.fileno()
        if fmt == "auto":
            fmt = "text" if os.isatty(self.fd) else "json"
        self.format = fmt
        self.lines = 0

    def format_batch(self, records: list[FinishRecord]) -> bytes:
        if self.format == "json":
            dumps = orjson.dumps
            return b"".join(dumps(json_fields(r)) + b"\n" for r in records)
        return "".join(text_line(r) + "\n" for r in records).encode()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    async def write(self, data: bytes) -> None:
        """Write formatted lines (the JSON lines Telemetry formats) from a thread."""
        if data:
            await asyncio.get_running_loop().run_in_executor(None, self._write, data)
            self.lines += data.count(b"\n")

    def write_now(self, data: bytes) -> None:
        """The last lines at shutdown, written before the process goes."""
        if data:
            self._write(data)
            self.lines += data.count(b"\n")

    async def flush(self, records: list[FinishRecord]) -> None:
        data = self.format_batch(records)
        await asyncio.get_running_loop().run_in_executor(None, self._write, data)
        self.lines += len(records)

    async def aclose(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
