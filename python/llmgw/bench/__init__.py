"""`llmgw bench`: a load tester for any OpenAI-compatible endpoint.

Closed loop (`--concurrency N`) or open loop (`--rate R`, latency from the scheduled send time),
reporting exact p50/p90/p99/p99.9 latency, TTFT and inter-chunk time for streams, throughput,
and errors by kind. `add_arguments` and `run` let the `llmgw` CLI host it as a subcommand.
"""

from llmgw.bench.command import add_arguments, main, run, run_async

__all__ = ["add_arguments", "run", "run_async", "main"]
