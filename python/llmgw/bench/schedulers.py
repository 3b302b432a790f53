"""When requests are sent: closed loop (fixed concurrency) or open loop (constant rate).

Closed loop: N workers each send, wait for the answer, send again. Simple, but when the target
stalls the workers stall with it, so the stall is sampled once instead of once per request that
would have arrived meanwhile (coordinated omission).

Open loop: request i is scheduled at t0 + i/rate whatever happens to earlier ones, and its latency
is measured from that scheduled time, so queueing in the target (or in front of it) shows up in
the percentiles. In-flight requests are capped (a dead target must not make the tester open
unbounded sockets); a request that finds the cap full waits for a slot (its wait counts in its
latency and is flagged), and one that cannot get a slot within the request timeout of its
scheduled time is recorded as `not_sent` rather than silently dropped.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Awaitable, Protocol

from llmgw.bench.client import ErrorKind, RequestResult

__all__ = ["Sender", "run_closed_loop", "run_open_loop", "scheduled_count"]


class Sender(Protocol):
    """Sends one request; `origin` is the time latency is measured from (None: now)."""

    def __call__(self, origin: float | None = None, *, waited_for_slot: bool = False) -> Awaitable[RequestResult]: ...


async def run_closed_loop(send: Sender, *, concurrency: int, requests: int | None,
                          duration: float | None) -> tuple[float, list[RequestResult]]:
    """`concurrency` workers send back to back until `requests` were started or `duration` elapsed.

    Returns (start time, results). Exactly `requests` results when the count bounds the run; with a
    duration, requests in flight at the deadline still complete and are counted.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if requests is None and duration is None:
        raise ValueError("a run needs a request count or a duration")
    results: list[RequestResult] = []
    started = 0
    t0 = time.perf_counter()
    deadline = None if duration is None else t0 + duration

    async def worker() -> None:
        nonlocal started
        while (requests is None or started < requests) and (deadline is None or time.perf_counter() < deadline):
            started += 1
            results.append(await send())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return t0, results


def scheduled_count(rate: float, requests: int | None, duration: float | None) -> int:
    """How many requests an open-loop run schedules: offsets i/rate for i < n, all below `duration`."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    if requests is None and duration is None:
        raise ValueError("a run needs a request count or a duration")
    by_duration = math.inf if duration is None else math.ceil(duration * rate - 1e-9)
    return int(min(requests if requests is not None else math.inf, by_duration))


async def run_open_loop(send: Sender, *, rate: float, max_in_flight: int, requests: int | None,
                        duration: float | None, max_send_lag: float) -> tuple[float, list[RequestResult]]:
    """Send request i at t0 + i/rate (i < `scheduled_count`), at most `max_in_flight` at once.

    Returns (t0, results in schedule order), exactly one per scheduled request. A request that
    finds the cap full waits for a slot until `max_send_lag` after its scheduled time (the bench
    passes the request timeout: by then it would have timed out anyway); if none frees up it is
    recorded as `not_sent`, with its scheduled time as origin, and the schedule moves on.
    """
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    n = scheduled_count(rate, requests, duration)
    interval = 1.0 / rate
    slots = asyncio.Semaphore(max_in_flight)
    results: list[RequestResult | None] = [None] * n
    tasks: list[asyncio.Task[None]] = []
    t0 = time.perf_counter()

    async def one(i: int, origin: float, waited: bool) -> None:
        try:
            results[i] = await send(origin, waited_for_slot=waited)
        finally:
            slots.release()

    for i in range(n):
        origin = t0 + i * interval
        now = time.perf_counter()
        if origin > now:
            await asyncio.sleep(origin - now)
        waited = slots.locked()
        if waited:
            try:
                async with asyncio.timeout(max(origin + max_send_lag - time.perf_counter(), 0.0)):
                    await slots.acquire()
            except TimeoutError:
                results[i] = RequestResult(
                    origin=origin, finished=time.perf_counter(), error=ErrorKind.NOT_SENT, waited_for_slot=True,
                    error_detail=f"in-flight cap of {max_in_flight} stayed full for {max_send_lag:g} s")
                continue
        else:
            await slots.acquire()
        tasks.append(asyncio.create_task(one(i, origin, waited)))
    if tasks:
        await asyncio.gather(*tasks)
    return t0, [r for r in results if r is not None]
