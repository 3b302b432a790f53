"""Budget periods on the calendar: which period a moment falls in, and when the next one starts.

A budget's counter is keyed by its period's id (`2026-12-01`, `2026-W49`, `2026-12`, `total`), so
a new period is a new counter and nothing has to be reset at midnight. Periods follow the
configured time zone (UTC by default): a "day" budget in Europe/Paris resets at Paris midnight.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["period_id", "period_start", "period_end"]


def _local(ts: float, tz: str) -> datetime:
    return datetime.fromtimestamp(ts, ZoneInfo(tz))


def period_start(period: str, ts: float, tz: str = "UTC") -> datetime:
    """The start of the period that `ts` (Unix seconds) falls in, in `tz`."""
    t = _local(ts, tz)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":  # ISO weeks start on Monday
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return datetime.fromtimestamp(0, ZoneInfo(tz))  # total


def period_end(period: str, ts: float, tz: str = "UTC") -> datetime | None:
    """When the next period starts (None for "total", which never resets)."""
    start = period_start(period, ts, tz)
    if period == "day":
        nxt = start + timedelta(days=1)
    elif period == "week":
        nxt = start + timedelta(days=7)
    elif period == "month":
        nxt = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    else:
        return None
    # Recompute the wall-clock midnight in the zone (a DST change moves it by an hour).
    return nxt.replace(tzinfo=None).replace(tzinfo=ZoneInfo(tz))


def period_id(period: str, ts: float, tz: str = "UTC") -> str:
    t = _local(ts, tz)
    if period == "day":
        return t.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = t.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return t.strftime("%Y-%m")
    return "total"
