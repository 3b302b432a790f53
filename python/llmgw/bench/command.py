"""`llmgw bench`: command-line options and the run that ties client, scheduler and report together."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from llmgw.bench.client import CLIENT_NAME, BenchClient, ChatRequestSpec, RequestResult
from llmgw.bench.report import build_report, render_text
from llmgw.bench.schedulers import run_closed_loop, run_open_loop

__all__ = ["add_arguments", "run", "run_async", "DEFAULT_DURATION", "API_KEY_ENV"]

#: A run with neither --requests nor --duration lasts this long: a load tester is always bounded.
DEFAULT_DURATION = 10.0
#: Environment variable read when --api-key is not given. Deliberately not OPENAI_API_KEY, so a
#: real provider key is never sent to an arbitrary --url by accident.
API_KEY_ENV = "LLMGW_BENCH_API_KEY"
DEFAULT_PROMPT = "Write one sentence about load testing."


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


def _validate(args: argparse.Namespace) -> None:
    for name in ("requests", "concurrency", "max_in_flight"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("duration", "rate", "timeout"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name} must be positive, got {value}")
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


async def _phase(client: BenchClient, args: argparse.Namespace, *, requests: int | None,
                 duration: float | None) -> tuple[float, list[RequestResult]]:
    if args.rate is not None:
        return await run_open_loop(client.send, rate=args.rate, max_in_flight=args.max_in_flight,
                                   requests=requests, duration=duration, max_send_lag=args.timeout)
    return await run_closed_loop(client.send, concurrency=args.concurrency or 1, requests=requests,
                                 duration=duration)


async def run_async(args: argparse.Namespace) -> dict[str, Any]:
    """Run the bench described by parsed `args` on the current event loop; returns the report dict.

    Raises ValueError for invalid options.
    """
    _validate(args)
    spec = _spec(args)
    duration = args.duration if args.duration is not None or args.requests is not None else DEFAULT_DURATION
    pool_size = args.max_in_flight if args.rate is not None else (args.concurrency or 1)
    client = BenchClient(spec, max_connections=pool_size)
    try:
        if args.warmup > 0:
            await _phase(client, args, requests=None, duration=args.warmup)
        t0, results = await _phase(client, args, requests=args.requests, duration=duration)
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
    }
    return build_report(run_info, t0, results)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # e.g. Windows: the stdlib loop works, only slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(args: argparse.Namespace) -> int:
    """Run `llmgw bench` with parsed `args`; prints the report. Exit code: 0 when every request
    succeeded, 1 when any failed or was not sent, 2 for invalid options."""
    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            report = runner.run(run_async(args))
    except ValueError as exc:
        print(f"llmgw bench: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
    else:
        print(render_text(report))
    return 0 if report["requests"]["failed"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m llmgw.bench`."""
    parser = argparse.ArgumentParser(prog="llmgw bench",
                                     description="Load-test an OpenAI-compatible endpoint (a gateway or a provider).")
    add_arguments(parser)
    return run(parser.parse_args(argv))
