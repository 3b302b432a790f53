import asyncio
import time

import pytest

from llmgw.bench.client import BenchClient, ChatRequestSpec, RequestResult
from llmgw.bench.report import build_report
from llmgw.bench.schedulers import Tally, run_closed_loop, run_open_loop, scheduled_count

from .conftest import MockOpenAI


class FakeSender:
    """Records each call; answers after `delay` seconds without any network."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[float | None, bool]] = []

    async def __call__(self, origin: float | None = None, *, waited_for_slot: bool = False) -> RequestResult:
        sent = time.perf_counter()
        self.calls.append((origin, waited_for_slot))
        await asyncio.sleep(self.delay)
        return RequestResult(origin=sent if origin is None else origin, sent=sent,
                             finished=time.perf_counter(), waited_for_slot=waited_for_slot)


@pytest.mark.parametrize(("rate", "requests", "duration", "expected"), [
    (10.0, None, 1.0, 10),
    (3.0, None, 1.0, 3),
    (10.0, 4, 1.0, 4),
    (10.0, 25, None, 25),
    (0.5, None, 1.0, 1),
    (200.0, None, 0.25, 50),
])
def test_open_loop_schedules_rate_times_duration_requests(rate: float, requests: int | None,
                                                          duration: float | None, expected: int) -> None:
    assert scheduled_count(rate, requests, duration) == expected


async def test_closed_loop_returns_exactly_the_requested_count_and_caps_concurrency(server: MockOpenAI) -> None:
    client = BenchClient(ChatRequestSpec(base_url=server.url("slow20"), model="m", prompt="p"), max_connections=4)
    try:
        _, results = await run_closed_loop(client.send, concurrency=4, requests=13, duration=None)
    finally:
        await client.aclose()
    assert len(results) == 13 and all(r.ok for r in results)
    assert server.hits["slow20"] == 13
    assert 2 <= server.max_in_flight <= 4


async def test_closed_loop_measures_latency_from_the_actual_send() -> None:
    sender = FakeSender()
    _, results = await run_closed_loop(sender, concurrency=2, requests=5, duration=None)
    assert len(results) == 5
    assert all(origin is None for origin, _ in sender.calls)
    assert all(r.origin == r.sent for r in results)


async def test_open_loop_origins_are_the_fixed_schedule_not_the_send_times() -> None:
    sender = FakeSender()
    t0, results = await run_open_loop(sender, rate=200.0, max_in_flight=8, requests=7, duration=None,
                                        max_send_lag=5.0)
    assert [r.origin for r in results] == [t0 + i / 200.0 for i in range(7)]
    assert [origin for origin, _ in sender.calls] == [t0 + i / 200.0 for i in range(7)]
    assert not any(waited for _, waited in sender.calls)


async def test_open_loop_keeps_schedule_while_answers_are_slower_than_the_interval() -> None:
    # Answers take 50 ms, requests are due every 5 ms: an open loop keeps sending on schedule
    # (several in flight at once), where a closed loop of one would wait for each answer.
    sender = FakeSender(delay=0.05)
    t0, results = await run_open_loop(sender, rate=200.0, max_in_flight=64, requests=6, duration=None,
                                        max_send_lag=5.0)
    assert len(results) == 6 and len(sender.calls) == 6
    assert not any(r.waited_for_slot for r in results)
    # all six were sent before the first answer could have arrived
    assert max(r.sent for r in results if r.sent is not None) < min(r.finished for r in results)


async def test_open_loop_counts_waits_for_the_in_flight_cap_in_latency() -> None:
    sender = FakeSender(delay=0.05)
    _, results = await run_open_loop(sender, rate=100.0, max_in_flight=1, requests=3, duration=None,
                                        max_send_lag=5.0)
    # only one in flight: request 1 (due at +10 ms) could leave only after request 0's 50 ms answer
    assert [r.waited_for_slot for r in results] == [False, True, True]
    assert all(r.error is None for r in results)
    for r in results[1:]:
        assert r.send_lag is not None and r.send_lag > 0.03
        assert r.latency >= r.send_lag  # the wait is part of the latency the report shows


async def test_requests_that_cannot_get_a_slot_in_time_are_counted_not_sent() -> None:
    # One slot held for 300 ms; each later request may wait 50 ms past its scheduled time.
    sender = FakeSender(delay=0.3)
    t0, results = await run_open_loop(sender, rate=100.0, max_in_flight=1, requests=5, duration=None,
                                      max_send_lag=0.05)
    assert len(results) == 5
    assert results[0].ok and len(sender.calls) == 1
    assert [r.error for r in results[1:]] == ["not_sent"] * 4
    assert [r.origin for r in results] == [t0 + i / 100.0 for i in range(5)]
    report = build_report({"mode": "rate", "stream": False}, t0, results)
    assert report["schedule"]["not_sent"] == 4
    assert report["schedule"]["sent"] == 1
    assert report["errors"] == {"not_sent": 4}
    assert report["requests"] == {"total": 5, "ok": 1, "failed": 4}


async def test_open_loop_against_a_server_returns_one_result_per_scheduled_request(server: MockOpenAI) -> None:
    client = BenchClient(ChatRequestSpec(base_url=server.url("every3rd500"), model="m", prompt="p"),
                         max_connections=16)
    try:
        _, results = await run_open_loop(client.send, rate=400.0, max_in_flight=16, requests=None, duration=0.05,
                                           max_send_lag=5.0)
    finally:
        await client.aclose()
    assert len(results) == 20 == server.hits["every3rd500"]
    assert sorted(r.error or "ok" for r in results).count("http_500") == 6


def test_schedulers_refuse_unbounded_runs() -> None:
    with pytest.raises(ValueError):
        scheduled_count(10.0, None, None)
    with pytest.raises(ValueError):
        asyncio.run(run_closed_loop(FakeSender(), concurrency=1, requests=None, duration=None))


async def test_the_tally_counts_each_result_as_it_ends_not_sent_included() -> None:
    closed = Tally()
    t0, results = await run_closed_loop(FakeSender(), concurrency=3, requests=7, duration=None, tally=closed)
    assert results is closed.results and closed.done == closed.started == 7 and closed.t0 == t0
    assert closed.failed == 0 and closed.in_flight == 0
    held = Tally()
    _, results = await run_open_loop(FakeSender(delay=0.3), rate=100.0, max_in_flight=1, requests=5, duration=None,
                                     max_send_lag=0.05, tally=held)
    assert sorted(map(id, held.results)) == sorted(map(id, results))
    assert held.errors == {"not_sent": 4} and held.failed == 4 and held.in_flight == 0


@pytest.mark.parametrize("loop", ["closed", "open"])
async def test_a_cancelled_run_leaves_the_finished_results_in_the_tally(loop: str) -> None:
    # Answers take 50 ms; cancelled (Ctrl-C) at 130 ms, so some have finished and some are in flight.
    sender = FakeSender(delay=0.05)
    tally = Tally()
    if loop == "closed":
        run = run_closed_loop(sender, concurrency=4, requests=None, duration=10.0, tally=tally)
    else:
        run = run_open_loop(sender, rate=100.0, max_in_flight=64, requests=None, duration=10.0, max_send_lag=5.0,
                            tally=tally)
    task = asyncio.create_task(run)
    await asyncio.sleep(0.13)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tally.done > 0 and tally.in_flight > 0
    assert tally.done + tally.in_flight == len(sender.calls)
    # Nothing the run started outlives it (the client's pool closes right after).
    assert asyncio.all_tasks() == {asyncio.current_task()}
