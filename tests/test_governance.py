"""Governance in process: prices, budget periods, config errors, and the plugin's limits and
budgets on a fake clock with fake upstreams (no sockets). End to end: test_governance_e2e.py."""

from __future__ import annotations

import math
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fakes import FakeClock, FakeHttp, FakePool, completion, error_reply, gateway_for, plugin, run, stream
from llmgw.config import ConfigError, Price, parse_config
from llmgw.exchange import Usage
from llmgw.governance.keys import KeyRecord, digest, new_key
from llmgw.governance.periods import period_end, period_id, period_start
from llmgw.governance.pricing import PriceBook, shipped_prices
from llmgw.providers import registry

MSG = [{"role": "user", "content": "hello there"}]


def config(db: Path, governance: str = "", models: str = "") -> str:
    return f"""
upstreams:
  up: {{provider: openai, base_url: "http://upstream.invalid/v1", api_key: sk-upstream-secret-123456}}
models:
  m: {{upstream: up, model: m, price: {{input: 100, output: 200}}}}
{models}
governance:
  master_key: master-key-0123456789abcdef
  sqlite_path: {db}
  ledger: {{interval: 0.01}}
{governance}
"""


async def started(text: str, clock: FakeClock | None = None, **pools):
    gw = gateway_for(text, clock=clock, **pools)
    await gw.start()
    return gw


async def add_key(gw, **fields) -> str:
    key = new_key()
    gov = plugin(gw)
    await gov.store.add_key(KeyRecord(f"key_{len(key)}{key[-6:]}", "k", digest(key), key[-4:], **fields))
    return key


def call(key: str, **extra) -> FakeHttp:
    return FakeHttp({"model": "m", "messages": MSG, "max_tokens": 10, **extra},
                    headers={"authorization": f"Bearer {key}"})


async def budget_state(gw, key_id: str, period: str = "total") -> tuple[int, int]:
    gov = plugin(gw)
    pid = gov.periods.current(period, gov.clock.wall())[0]
    return gov.local.budget(f"budget:key:{key_id}:{pid}")


# --- prices -----------------------------------------------------------------------------------------

def test_shipped_prices_are_dated_and_cover_every_provider():
    read_on, table = shipped_prices()
    assert datetime.strptime(read_on, "%Y-%m-%d")
    for model in ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash"):
        assert any(name == model or name.startswith(model) for name in table), model
    assert all(p.input >= 0 and p.output >= 0 for p in table.values())


def test_price_precedence_and_dated_model_names(tmp_path):
    cfg = parse_config(config(tmp_path / "db", governance="  prices: {b: {input: 7, output: 8}, gpt-4o: {input: 1, output: 2}}",
                              models="""  b: {upstream: up, model: gpt-4o-mini}
  c: {upstream: up, model: gpt-4o}
  d: {upstream: up, model: gpt-4o-mini-2024-07-18}
  e: {upstream: up, model: my-finetune}"""), providers=registry)
    book = PriceBook(cfg)
    _, shipped = shipped_prices()
    assert book.for_deployment("m") == Price(100, 200)           # the deployment's own price
    assert book.for_deployment("b") == Price(7, 8)               # governance.prices by group
    assert book.for_deployment("c") == Price(1, 2)               # ... by upstream model
    assert book.for_deployment("d") == shipped["gpt-4o-mini"]    # shipped, by the dated name's prefix
    assert book.unpriced() == ["e"]


def test_cost_is_in_micro_dollars_with_cached_tokens_at_their_price():
    price = Price(2.5, 10.0, cached_input=1.25)
    usage = Usage(prompt_tokens=1000, completion_tokens=100, total_tokens=1100, cached_tokens=400)
    assert PriceBook.cost(price, usage) == pytest.approx(600 * 2.5 + 400 * 1.25 + 100 * 10.0)
    assert PriceBook.worst_case(price, 1000, 100) == math.ceil(1000 * 2.5 + 100 * 10.0)


# --- periods ------------------------------------------------------------------------------------------

def test_budget_periods_follow_the_calendar_and_the_time_zone():
    ts = datetime(2026, 12, 31, 23, 30, tzinfo=timezone.utc).timestamp()
    assert period_id("day", ts) == "2026-12-31" and period_id("month", ts) == "2026-12"
    assert period_id("week", ts) == "2026-W53" and period_id("total", ts) == "total"
    assert period_end("day", ts).timestamp() == datetime(2027, 1, 1, tzinfo=timezone.utc).timestamp()
    assert period_end("month", ts).timestamp() == datetime(2027, 1, 1, tzinfo=timezone.utc).timestamp()
    assert period_start("week", ts).weekday() == 0 and period_end("total", ts) is None
    # 23:30 UTC is already tomorrow in Paris; a Paris day ends at Paris midnight.
    assert period_id("day", ts, "Europe/Paris") == "2027-01-01"
    spring = datetime(2026, 3, 29, 12, tzinfo=timezone.utc).timestamp()  # the day clocks go forward
    start, end = period_start("day", spring, "Europe/Paris"), period_end("day", spring, "Europe/Paris")
    assert end.timestamp() - start.timestamp() == 23 * 3600


# --- config --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("governance", "message"), [
    ("  store: mysql", "must be sqlite or postgres"),
    ("  store: postgres", "postgres_dsn: missing"),
    ("  counters: redis", "redis_url: missing"),
    ("  timezone: Mars/Olympus", "unknown time zone"),
    ("  limits: {teams: {a: {budget: {usd: 5, period: fortnight}}}}", "must be one of day, week, month, total"),
    ("  teams: {a: {upstream_keys: {nope: x}}}", "unknown upstream 'nope'"),
    ("  soft_limit: 2", "must be in (0, 1]"),
])
def test_config_errors_name_the_problem(tmp_path, governance, message):
    with pytest.raises(ConfigError) as err:
        parse_config(config(tmp_path / "db", governance), providers=registry)
    assert message in str(err.value)


def test_a_short_master_key_is_refused(tmp_path):
    text = config(tmp_path / "db").replace("master-key-0123456789abcdef", "short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        parse_config(text, providers=registry)


# --- limits on a fake clock ------------------------------------------------------------------------------

async def test_rpm_limit_admits_burst_plus_refill_exactly(tmp_path):
    clock = FakeClock()
    gw = await started(config(tmp_path / "db", "  limits: {models: {m: {rpm: 60}}}"), clock,
                       up=FakePool(lambda: completion()))
    key = await add_key(gw)
    admitted = 0
    for _ in range(480):  # one attempt every 0.25 s for 120 s
        http = await run(gw, call(key))
        assert http.status in (200, 429)
        admitted += http.status == 200
        clock.advance(0.25)
    assert admitted == 60 + 119  # 60 at once, then one per second: the last attempt is at 119.75 s


async def test_tpm_is_charged_the_estimate_then_corrected_to_the_real_usage(tmp_path):
    clock = FakeClock()
    gw = await started(config(tmp_path / "db", "  limits: {users: {ann: {tpm: 1000}}}"), clock,
                       up=FakePool(lambda: completion(usage=(5, 2))))
    key = await add_key(gw, user="ann")
    gov = plugin(gw)
    before = gov.local.limit_state("tpm:user:ann", 1000 / 60, 1000)
    http = await run(gw, call(key, max_tokens=500))
    assert http.status == 200
    after = gov.local.limit_state("tpm:user:ann", 1000 / 60, 1000)
    assert before[0] == 1000 and after[0] == pytest.approx(1000 - 7, abs=0.01)  # 5 + 2 tokens, not ~510


async def test_bounded_wait_instead_of_a_429(tmp_path):
    clock = FakeClock()
    gw = await started(config(tmp_path / "db", "  wait: 2\n  limits: {models: {m: {rpm: 60}}}"), clock,
                       up=FakePool(lambda: completion()))
    key = await add_key(gw)
    for _ in range(60):
        assert (await run(gw, call(key))).status == 200
    assert clock.sleeps == []
    assert (await run(gw, call(key))).status == 200  # waited for its turn
    assert clock.sleeps and clock.sleeps[0] == pytest.approx(1.0, abs=0.01)
    gw2 = await started(config(tmp_path / "db2", "  wait: 0.5\n  limits: {models: {m: {rpm: 6}}}"), FakeClock(),
                        up=FakePool(lambda: completion()))
    key2 = await add_key(gw2)
    for _ in range(6):
        assert (await run(gw2, call(key2))).status == 200
    http = await run(gw2, call(key2))  # the next turn is 10 s away: longer than the wait allows
    assert http.status == 429 and http.response_headers["retry-after"] == "10"


# --- budgets: settle, release, partial streams ------------------------------------------------------------

async def test_a_failed_request_releases_its_reservation(tmp_path):
    gw = await started(config(tmp_path / "db"), FakeClock(), up=FakePool(error_reply(503)))
    key = await add_key(gw, budget_usd=1.0, budget_period="total")
    http = await run(gw, call(key))
    assert http.status == 503
    rec = plugin(gw)
    kid = next(iter(await rec.store.keys())).id
    await gw.services.close()
    assert await budget_state(gw, kid) == (0, 0)


async def test_a_cut_stream_is_billed_for_what_was_produced(tmp_path):
    gw = await started(config(tmp_path / "db"), FakeClock(),
                       up=FakePool(stream(["one ", "two ", "three "], then="cut")))
    key = await add_key(gw, budget_usd=1.0, budget_period="total")
    http = await run(gw, call(key, stream=True))
    assert http.status == 200 and "one two three" in http.text()
    kid = (await plugin(gw).store.keys())[0].id
    await gw.services.close()  # finish hooks done, the ledger flushed
    committed, spent = await budget_state(gw, kid)
    assert committed == spent > 0  # nothing held back, the produced tokens charged
    row = sqlite3.connect(tmp_path / "db").execute(
        "SELECT cost_usd, usage_estimated, completion_tokens FROM ledger").fetchone()
    assert row[0] == pytest.approx(spent / 1e6) and row[1] == 1 and row[2] > 0


async def test_an_unpriced_model_is_flagged_not_costed_as_zero(tmp_path, caplog):
    gw = await started(config(tmp_path / "db", models="  free: {upstream: up, model: no-such-model}"), FakeClock(),
                       up=FakePool(lambda: completion()))
    key = await add_key(gw)
    http = await run(gw, call(key, model="free"))
    assert http.status == 200 and http.response_headers["x-llmgw-cost"] == "unpriced"
    assert "no price is known for deployment free" in caplog.text
    assert plugin(gw).stats()["unpriced_requests"] == 1
    priced = await run(gw, call(key))
    assert float(priced.response_headers["x-llmgw-cost"]) == pytest.approx((5 * 100 + 2 * 200) / 1e6)


async def test_the_budget_counter_starts_from_the_ledger(tmp_path):
    """A restarted gateway (a new counters table) seeds each budget from the spend of its period."""
    db = tmp_path / "db"
    gw = await started(config(db), FakeClock(), up=FakePool(lambda: completion()))
    key = await add_key(gw, budget_usd=1.0, budget_period="total")
    for _ in range(3):
        assert (await run(gw, call(key))).status == 200
    kid = (await plugin(gw).store.keys())[0].id
    await gw.services.close()
    spent_before = (await budget_state(gw, kid))[1]
    assert spent_before == 3 * (5 * 100 + 2 * 200)
    gw2 = await started(config(db), FakeClock(), up=FakePool(lambda: completion()))
    assert (await run(gw2, call(key))).status == 200
    assert (await budget_state(gw2, kid))[1] == spent_before + (5 * 100 + 2 * 200)


def test_reset_times_are_written_as_openai_writes_them():
    from llmgw.governance.plugin import _duration

    assert [_duration(s) for s in (0.02, 1.5, 59.94, 59.99, 60, 359.7)] == \
        ["20ms", "1.5s", "59.9s", "1m0s", "1m0s", "6m0s"]
