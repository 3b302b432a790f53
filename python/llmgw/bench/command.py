"""`llmgw bench`: command-line options and the run that ties client, scheduler and report together."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from llmgw.bench.client import CLIENT_NAME, BenchClient, ChatRequestSpec
from llmgw.bench.progress import ProgressLine, final_line, is_terminal
from llmgw.bench.report import build_report, render_text
from llmgw.bench.schedulers import Tally, run_closed_loop, run_open_loop, scheduled_count

__all__ = ["add_arguments", "run", "run_async", "DEFAULT_DURATION", "API_KEY_ENV"]

#: A run with neither --requests nor --duration lasts this long: a load tester is always bounded.
DEFAULT_DURATION = 10.0
#: Environment variable read when --api-key is not given. Deliberately not OPENAI_API_KEY, so a
#: real provider key is never sent to an arbitrary --url by accident.
API_KEY_ENV = "LLMGW_BENCH_API_KEY"
DEFAULT_PROMPT = "Write one sentence about load testing."
#: Exit status after Ctrl-C (128 + SIGINT, what a shell reports for an interrupted command).
EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `llmgw bench`'s options to `parser` (the `llmgw` CLI calls this for its subcommand)."""
    target = parser.add_argument_group("target")
    target.add_argument("--url", required=True,
                        help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1 (POSTs to <url>/chat/completions)")
    target.add_argument("--model", required=True, help="model name sent in each request")
    target.add_argument("--api-key", default=None,
                        help=f"bearer token (default: ${API_KEY_ENV}; none sent when unset)")
    prompt = target.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default=None, help=f"user message (default: {DEFAULT_PROMPT!r})")
    prompt.add_argument("--prompt-file", type=Path, default=None, help="read the user message from this file")
    target.add_argument("--max-tokens", type=int, default=64, help="max_tokens per request (default 64; 0 omits it)")
    target.add_argument("--stream", action="store_true", help="request SSE streams; reports TTFT and inter-chunk time")
    target.add_argument("--no-stream-usage", action="store_true",
                        help="do not send stream_options.include_usage (for servers that reject it)")
    target.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per request (default 30)")

    load = parser.add_argument_group("load (closed loop by default)")
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", "-c", type=int, default=None,
                      help="closed loop: this many requests in flight, each sent when one finishes (default 1)")
    mode.add_argument("--rate", "-r", type=float, default=None,
                      help="open loop: send this many requests per second on a fixed schedule; "
                           "latency is measured from each request's scheduled time")
    load.add_argument("--max-in-flight", type=int, default=256,
                      help="open loop: cap on requests in flight (default 256); late sends are counted")
    load.add_argument("--requests", "-n", type=int, default=None, help="stop after this many requests")
    load.add_argument("--duration", "-d", type=float, default=None,
                      help=f"stop after this many seconds (default {DEFAULT_DURATION:g} when --requests is not given)")
    load.add_argument("--warmup", type=float, default=0.0,
                      help="seconds of the same load sent first and left out of the results (default 0)")

    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    out.add_argument("--no-progress", "--quiet", "-q", dest="progress", action="store_false",
                     help="no progress line on stderr (by default a terminal gets one line redrawn in place, "
                          "anything else a plain line every --progress-interval seconds)")
    out.add_argument("--progress-interval", type=float, default=None, metavar="SECONDS",
                     help="seconds between progress lines when stderr is not a terminal (default 5)")


def _validate(args: argparse.Namespace) -> None:
    for name in ("requests", "concurrency", "max_in_flight"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("duration", "rate", "timeout", "progress_interval"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if args.max_tokens < 0:
        raise ValueError(f"--max-tokens must be >= 0, got {args.max_tokens}")
    if not args.url.startswith(("http://", "https://")):
        raise ValueError(f"--url must start with http:// or https://, got {args.url!r}")


def _spec(args: argparse.Namespace) -> ChatRequestSpec:
    if args.prompt_file is not None:
        try:
            prompt = args.prompt_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"--prompt-file {args.prompt_file}: {exc.strerror or exc}") from None
    else:
        prompt = args.prompt if args.prompt is not None else DEFAULT_PROMPT
    return ChatRequestSpec(
        base_url=args.url.rstrip("/"),
        model=args.model,
        prompt=prompt,
        max_tokens=args.max_tokens or None,
        stream=args.stream,
        stream_usage=not args.no_stream_usage,
        api_key=args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None,
        timeout=args.timeout,
    )


async def _phase(client: BenchClient, args: argparse.Namespace, tally: Tally, progress: ProgressLine | None, *,
                 label: str, requests: int | None, duration: float | None) -> None:
    """One phase (warm-up or measured); its results end up in `tally`."""
    if args.rate is not None:
        # Progress targets of an open loop: the scheduled count, and the schedule's length.
        scheduled = scheduled_count(args.rate, requests, duration)
        targets: dict[str, Any] = {"requests": scheduled, "duration": scheduled / args.rate}
    else:
        targets = {"requests": requests, "duration": duration}
    with contextlib.nullcontext() if progress is None else progress.watching(tally, label=label, **targets):
        if args.rate is not None:
            await run_open_loop(client.send, rate=args.rate, max_in_flight=args.max_in_flight, requests=requests,
                                duration=duration, max_send_lag=args.timeout, tally=tally)
        else:
            await run_closed_loop(client.send, concurrency=args.concurrency or 1, requests=requests,
                                  duration=duration, tally=tally)


async def run_async(args: argparse.Namespace, *, progress: ProgressLine | None = None) -> dict[str, Any]:
    """Run the bench described by parsed `args` on the current event loop; returns the report dict.

    `progress`, when given, is drawn while the run goes. Cancelling the call cancels the run (no
    report). Raises ValueError for invalid options.
    """
    report = await _bench(args, progress, report_when_cancelled=False)
    assert report is not None  # only a cancelled run has none, and that one raised
    return report


async def _bench(args: argparse.Namespace, progress: ProgressLine | None, *,
                 report_when_cancelled: bool) -> dict[str, Any] | None:
    """The run; with `report_when_cancelled` (`run`, where only Ctrl-C cancels it) a cancelled
    measured phase still gives a report of the requests that had finished, and a cancelled
    warm-up gives None."""
    _validate(args)
    spec = _spec(args)
    duration = args.duration if args.duration is not None or args.requests is not None else DEFAULT_DURATION
    pool_size = args.max_in_flight if args.rate is not None else (args.concurrency or 1)
    client = BenchClient(spec, max_connections=pool_size)
    measured: Tally | None = None
    interrupted = False
    try:
        if args.warmup > 0:
            await _phase(client, args, Tally(), progress, label="warm-up", requests=None, duration=args.warmup)
        measured = Tally()
        await _phase(client, args, measured, progress, label="", requests=args.requests, duration=duration)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not report_when_cancelled or task is None or task.uncancel() > 0:
            raise
        if measured is None:
            return None
        interrupted = True
    finally:
        await client.aclose()
    run_info = {
        "url": spec.base_url,
        "model": spec.model,
        "stream": spec.stream,
        "mode": "rate" if args.rate is not None else "concurrency",
        "concurrency": None if args.rate is not None else (args.concurrency or 1),
        "rate": args.rate,
        "max_in_flight": args.max_in_flight if args.rate is not None else None,
        "requests_limit": args.requests,
        "duration_limit_s": duration,
        "warmup_s": args.warmup,
        "max_tokens": spec.max_tokens,
        "client": CLIENT_NAME,
        # Ctrl-C: the report covers the requests that had finished; those in flight were cancelled.
        "interrupted": interrupted,
        "cancelled_in_flight": measured.in_flight,
    }
    return build_report(run_info, measured.t0, measured.results)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # e.g. Windows: the stdlib loop works, only slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(args: argparse.Namespace) -> int:
    """Run `llmgw bench` with parsed `args`: progress on stderr while it runs (unless
    `--no-progress`), then the report on stdout. Exit code: 0 when every request succeeded, 1
    when any failed or was not sent, 2 for invalid options, 130 after Ctrl-C (the report then
    covers the requests that had finished; a second Ctrl-C quits at once)."""
    progress = None
    if args.progress:
        terminal = is_terminal(sys.stderr)
        progress = ProgressLine(sys.stderr, terminal=terminal, interval=None if terminal else args.progress_interval)
    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            # Only Ctrl-C cancels this task (asyncio.Runner's SIGINT handler), hence a report on cancel.
            report = runner.run(_bench(args, progress, report_when_cancelled=True))
    except ValueError as exc:
        if progress is not None:
            progress.finish(None, erase=True)
        print(f"llmgw bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C: quit now, without a report
        if progress is not None:
            progress.finish(None, erase=True)
        print("llmgw bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException:
        if progress is not None:
            progress.finish(None, erase=True)  # the traceback starts on a clean line
        raise
    if report is None:
        if progress is not None:
            progress.finish(None, erase=True)
        print("llmgw bench: interrupted during the warm-up, nothing was measured", file=sys.stderr)
        return EXIT_INTERRUPTED
    if progress is not None:
        progress.finish(final_line(report), erase=is_terminal(sys.stdout))
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
    else:
        print(render_text(report))
    if report["run"]["interrupted"]:
        return EXIT_INTERRUPTED
    return 0 if report["requests"]["failed"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m llmgw.bench`."""
    parser = argparse.ArgumentParser(prog="llmgw bench",
                                     description="Load-test an OpenAI-compatible endpoint (a gateway or a provider).")
    add_arguments(parser)
    return run(parser.parse_args(argv))
