"""`governance:` — virtual keys, rate limits, budgets, the cost ledger and where they are kept.

    governance:
      master_key: ${LLMGW_MASTER_KEY}        # authorises the admin API (/admin/...)
      store: sqlite                          # keys, ledger, audit log: sqlite (embedded) | postgres
      sqlite_path: ${LLMGW_DB_PATH}
      postgres_dsn: ${LLMGW_PG_DSN}          # with store: postgres
      counters: local                        # limits and budgets: local (shared memory, one machine) | redis
      redis_url: ${LLMGW_REDIS_URL}          # with counters: redis
      on_counter_failure: closed             # redis unreachable: closed (503) | open (admit, logged and counted)
      timezone: UTC                          # budget periods (day, week, month) follow this calendar
      default_max_tokens: 4096               # the output a request without max_tokens is assumed to ask for
      wait: 0                                # seconds a rate-limited request may wait for its turn (0: 429 at once)
      soft_limit: 0.8                        # share of a budget past which requests step down (routing's budget_exhausted)
      prices: {my-model: {input: 0.15, output: 0.60}}   # USD per 1M tokens, over the shipped table
      limits:                                # limits for users, teams and models; keys carry their own
        teams: {research: {rpm: 600, tpm: 1000000, budget: {usd: 500, period: month}}}
        users: {}
        models: {gpt-4o: {rpm: 1000}}
      teams:                                 # a team's own provider key, per upstream, for separate billing
        research: {upstream_keys: {openai: ${RESEARCH_OPENAI_KEY}}}
      ledger: {batch: 200, interval: 1.0, max_queue: 100000}   # rows per write, seconds between writes, queue bound
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmgw.config.models import Price, parse_price
from llmgw.config.reader import Doc, get, positive, take

__all__ = ["Budget", "GovernanceConfig", "LedgerSettings", "Limits", "parse_governance", "PERIODS"]

PERIODS = ("day", "week", "month", "total")


@dataclass(frozen=True, slots=True)
class Budget:
    usd: float
    period: str = "month"


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    budget: Budget | None = None


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    batch: int = 200  # rows per transaction: a SQLite batch is written on the event loop (~1 ms)
    interval: float = 1.0
    max_queue: int = 100_000


@dataclass(frozen=True, slots=True)
class GovernanceConfig:
    master_key: str | None = field(default=None, repr=False)
    store: str = "sqlite"
    sqlite_path: str = "llmgw.db"
    postgres_dsn: str | None = field(default=None, repr=False)
    counters: str = "local"
    redis_url: str | None = field(default=None, repr=False)
    on_counter_failure: str = "closed"
    timezone: str = "UTC"
    default_max_tokens: int = 4096
    wait: float = 0.0
    soft_limit: float = 0.8
    prices: dict[str, Price] = field(default_factory=dict)
    users: dict[str, Limits] = field(default_factory=dict)
    teams: dict[str, Limits] = field(default_factory=dict)
    models: dict[str, Limits] = field(default_factory=dict)
    team_keys: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)  # team -> upstream -> key
    ledger: LedgerSettings = field(default_factory=LedgerSettings)


def _budget(doc: Doc, data: Any, path: str) -> Budget | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        doc.error(path, "expected a mapping", "Write budget: {usd: 100, period: month}")
        return None
    take(doc, data, path, {"usd": "", "period": ""})
    usd = get(doc, data, path, "usd", float, None, lambda v: None if v >= 0 else "must be >= 0")
    if usd is None:
        doc.error(f"{path}.usd", "missing", "Give the budget in US dollars")
        return None
    period = get(doc, data, path, "period", str, "month",
                 lambda v: None if v in PERIODS else f"must be one of {', '.join(PERIODS)}")
    return Budget(usd, period)


def parse_limits(doc: Doc, data: Any, path: str) -> Limits:
    if not isinstance(data, dict):
        doc.error(path, "expected a mapping", "Write {rpm: 60, tpm: 100000, budget: {usd: 10, period: day}}")
        return Limits()
    take(doc, data, path, {"rpm": "", "tpm": "", "budget": ""})
    return Limits(get(doc, data, path, "rpm", int, None, positive), get(doc, data, path, "tpm", int, None, positive),
                  _budget(doc, data.get("budget"), f"{path}.budget"))


def parse_governance(doc: Doc, data: Any) -> GovernanceConfig | None:
    if data is None:
        return None
    path = "governance"
    if not isinstance(data, dict):
        doc.error(path, "expected a mapping", "See the README's governance section")
        return None
    keys = ("master_key", "store", "sqlite_path", "postgres_dsn", "counters", "redis_url", "on_counter_failure",
            "timezone", "default_max_tokens", "wait", "soft_limit", "prices", "limits", "teams", "ledger")
    take(doc, data, path, {k: "" for k in keys})
    d = GovernanceConfig()
    store = get(doc, data, path, "store", str, d.store,
                lambda v: None if v in ("sqlite", "postgres") else "must be sqlite or postgres")
    counters = get(doc, data, path, "counters", str, d.counters,
                   lambda v: None if v in ("local", "redis") else "must be local or redis")
    master = get(doc, data, path, "master_key", str, None) or None
    if master is not None and len(master) < 16:
        doc.error(f"{path}.master_key", "shorter than 16 characters", "Use a long random key from an env var")
    dsn = get(doc, data, path, "postgres_dsn", str, None) or None
    if store == "postgres" and not dsn:
        doc.error(f"{path}.postgres_dsn", "missing", "Give the PostgreSQL DSN (store: postgres), e.g. ${LLMGW_PG_DSN}")
    redis_url = get(doc, data, path, "redis_url", str, None) or None
    if counters == "redis" and not redis_url:
        doc.error(f"{path}.redis_url", "missing", "Give the Redis URL (counters: redis), e.g. redis://127.0.0.1:6379/0")
    tz = get(doc, data, path, "timezone", str, d.timezone)
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(tz)
    except Exception:
        doc.error(f"{path}.timezone", f"unknown time zone {tz!r}", "Use an IANA name such as UTC or Europe/Paris")
    prices: dict[str, Price] = {}
    raw_prices = get(doc, data, path, "prices", dict, {})
    for model, p in raw_prices.items():
        price = parse_price(doc, p, f"{path}.prices.{model}")
        if price is not None:
            prices[str(model)] = price
    limits = get(doc, data, path, "limits", dict, {})
    take(doc, limits, f"{path}.limits", {"users": "", "teams": "", "models": ""})
    scoped: dict[str, dict[str, Limits]] = {}
    for scope in ("users", "teams", "models"):
        raw = get(doc, limits, f"{path}.limits", scope, dict, {})
        scoped[scope] = {str(n): parse_limits(doc, v, f"{path}.limits.{scope}.{n}") for n, v in raw.items()}
    team_keys: dict[str, dict[str, str]] = {}
    for team, item in get(doc, data, path, "teams", dict, {}).items():
        tpath = f"{path}.teams.{team}"
        if not isinstance(item, dict):
            doc.error(tpath, "expected a mapping", "Write {upstream_keys: {UPSTREAM: ${TEAM_KEY}}}")
            continue
        take(doc, item, tpath, {"upstream_keys": ""})
        team_keys[str(team)] = {str(u): str(k) for u, k in get(doc, item, tpath, "upstream_keys", dict, {}).items()}
    led = get(doc, data, path, "ledger", dict, {})
    take(doc, led, f"{path}.ledger", {"batch": "", "interval": "", "max_queue": ""})
    dl = LedgerSettings()
    return GovernanceConfig(
        master_key=master, store=store,
        sqlite_path=get(doc, data, path, "sqlite_path", str, d.sqlite_path), postgres_dsn=dsn, counters=counters,
        redis_url=redis_url,
        on_counter_failure=get(doc, data, path, "on_counter_failure", str, d.on_counter_failure,
                               lambda v: None if v in ("open", "closed") else "must be open or closed"),
        timezone=tz, default_max_tokens=get(doc, data, path, "default_max_tokens", int, d.default_max_tokens, positive),
        wait=get(doc, data, path, "wait", float, d.wait, lambda v: None if 0 <= v <= 60 else "must be 0-60 seconds"),
        soft_limit=get(doc, data, path, "soft_limit", float, d.soft_limit,
                       lambda v: None if 0 < v <= 1 else "must be in (0, 1]"),
        prices=prices, users=scoped["users"], teams=scoped["teams"], models=scoped["models"], team_keys=team_keys,
        ledger=LedgerSettings(get(doc, led, f"{path}.ledger", "batch", int, dl.batch, positive),
                              get(doc, led, f"{path}.ledger", "interval", float, dl.interval, positive),
                              get(doc, led, f"{path}.ledger", "max_queue", int, dl.max_queue, positive)),
    )
