"""Turns a run's results into a summary dict (the `--json` output) and a human-readable text."""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from llmgw.bench.client import ErrorKind, RequestResult
from llmgw.bench.stats import METHOD, summarize

__all__ = ["LATE_THRESHOLD", "build_report", "render_text"]

#: An open-loop request that left more than this after its scheduled time counts as sent late.
#: 2 ms: uvloop timers have 1 ms resolution, so smaller lags are timer noise, not a busy tester.
LATE_THRESHOLD = 0.002

_MS = 1000.0


def build_report(run: dict[str, Any], t0: float, results: Sequence[RequestResult]) -> dict[str, Any]:
    """The summary of one measured run (warm-up excluded). Times in the output are milliseconds.

    Latency, TTFT and inter-chunk distributions cover successful requests only; failures are
    counted by kind in `errors`. Throughput is successes (and their output tokens) divided by the
    time from the first scheduled send to the last completion.
    """
    ok = [r for r in results if r.ok]
    errors = Counter(r.error for r in results if r.error is not None)
    examples: dict[str, str] = {}
    for r in results:
        if r.error is not None and r.error not in examples and r.error_detail:
            examples[r.error] = r.error_detail
    end = max((r.finished for r in results), default=t0)
    elapsed = max(end - t0, 1e-9)
    with_usage = [r.output_tokens for r in ok if r.output_tokens is not None]
    open_loop = run.get("mode") == "rate"

    def dist(values: list[float]) -> dict[str, float | int] | None:
        d = summarize(values)
        return None if d is None else d.to_dict(_MS)

    report: dict[str, Any] = {
        "run": run,
        "percentile_method": METHOD,
        "requests": {
            "total": len(results),
            "ok": len(ok),
            "failed": len(results) - len(ok),
        },
        "errors": dict(sorted(errors.items())),
        "error_examples": examples,
        "elapsed_s": elapsed,
        "throughput": {
            "requests_per_s": len(ok) / elapsed,
            # None rather than 0 when the target never reported usage: 0 would be a false figure.
            "output_tokens_per_s": (sum(with_usage) / elapsed) if with_usage else None,
            "output_tokens": sum(with_usage),
            "ok_without_usage": len(ok) - len(with_usage),
        },
        "latency_ms": dist([r.latency for r in ok]),
        "ttft_ms": dist([r.ttft for r in ok if r.ttft is not None]) if run.get("stream") else None,
        "inter_chunk_ms": dist([g for r in ok for g in r.chunk_gaps]) if run.get("stream") else None,
    }
    if open_loop:
        lags = [r.send_lag for r in results if r.send_lag is not None]
        report["schedule"] = {
            "latency_origin": "scheduled send time",
            "scheduled": len(results),
            "sent": len(lags),
            "sent_late": sum(1 for lag in lags if lag > LATE_THRESHOLD),
            "late_threshold_ms": LATE_THRESHOLD * _MS,
            "waited_for_in_flight_cap": sum(1 for r in results if r.waited_for_slot and r.sent is not None),
            "not_sent": errors.get(ErrorKind.NOT_SENT, 0),
            "send_lag_ms": dist(lags),
        }
    return report


def _fmt_dist(name: str, d: dict[str, float | int] | None) -> str:
    if d is None:
        return f"  {name:<13} (no samples)"
    return (f"  {name:<13} p50 {d['p50']:9.3f}  p90 {d['p90']:9.3f}  p99 {d['p99']:9.3f}  "
            f"p99.9 {d['p99.9']:9.3f}  max {d['max']:9.3f}  (n={d['count']})")


def render_text(report: dict[str, Any]) -> str:
    """A compact human-readable rendering of `build_report`'s output."""
    run = report["run"]
    load = f"concurrency {run['concurrency']}" if run["mode"] == "concurrency" else (
        f"rate {run['rate']:g} req/s (in-flight cap {run['max_in_flight']})")
    req = report["requests"]
    tp = report["throughput"]
    lines = [
        f"llmgw bench: {run['url']}  model={run['model']}  stream={run['stream']}  {load}",
        f"client: {run['client']}   percentiles: {report['percentile_method']}",
    ]
    if run.get("interrupted"):
        lines.append(f"interrupted (Ctrl-C): partial results; {run['cancelled_in_flight']} requests in flight "
                     "were cancelled and are not counted")
    lines += [
        f"requests: {req['total']} total, {req['ok']} ok, {req['failed']} failed in {report['elapsed_s']:.2f} s",
        f"throughput: {tp['requests_per_s']:.1f} req/s, " + (
            f"{tp['output_tokens_per_s']:.1f} output tokens/s" if tp["output_tokens_per_s"] is not None
            else "output tokens/s n/a (no usage in responses)"),
        "latency (ms" + (", from scheduled send time" if run["mode"] == "rate" else "") + "):",
        _fmt_dist("total", report["latency_ms"]),
    ]
    if run["stream"]:
        lines.append(_fmt_dist("ttft", report["ttft_ms"]))
        lines.append(_fmt_dist("inter-chunk", report["inter_chunk_ms"]))
    sched = report.get("schedule")
    if sched is not None:
        lines.append(f"schedule: {sched['scheduled']} scheduled, {sched['sent']} sent, "
                     f"{sched['sent_late']} sent > {sched['late_threshold_ms']:g} ms late, "
                     f"{sched['waited_for_in_flight_cap']} waited for the in-flight cap, "
                     f"{sched['not_sent']} not sent")
        lines.append(_fmt_dist("send lag", sched["send_lag_ms"]))
    if report["errors"]:
        lines.append("errors:")
        for kind, count in report["errors"].items():
            example = report["error_examples"].get(kind, "")
            lines.append(f"  {kind:<20} {count:8d}  e.g. {example[:120]}")
    return "\n".join(lines)
