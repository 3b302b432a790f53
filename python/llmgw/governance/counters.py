"""Rate-limit buckets and budget counters: one set for every worker (and every replica).

`LocalCounters` (the embedded default, plain calls: no I/O) is `llmgw._core.SharedCounters`: GCRA buckets and budget
counters in a shared-memory file that all workers of the machine map, updated by atomic
compare-and-swap. It was chosen over the alternatives by correctness first (one limit across
workers, which a per-process limiter cannot give), then speed: benches/bench_shared_counters.py
measures it against an in-process limiter and a SQLite `BEGIN IMMEDIATE` transaction per
reservation (the figures are in the README). The file is created by `llmgw serve` before the
workers start (`LLMGW_COUNTERS` names it); a gateway started another way gets a private one.

`RedisCounters` (the same operations, awaited) keeps the same state in Redis for several replicas: each operation is one Lua
script, so a multi-bucket admission or a budget reservation is atomic across replicas; time is
Redis's own clock (`TIME`), the same for every replica. When Redis cannot be reached the
gateway answers 503 (`on_counter_failure: closed`) or admits and counts the failure (`open`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any, Callable, Protocol

__all__ = ["CounterFailure", "Counters", "LocalCounters", "RedisCounters", "local_counters_path"]

log = logging.getLogger("llmgw")

ENV = "LLMGW_COUNTERS"

Check = tuple[str, float, float, float]  # (key, rate per second, burst, cost)


class CounterFailure(Exception):
    """The shared counters could not be reached (Redis down)."""


class Counters(Protocol):
    """The operations of both (LocalCounters returns values, RedisCounters awaitables)."""

    async def acquire(self, checks: list[Check]) -> float: ...
    async def adjust(self, key: str, rate: float, burst: float, delta: float) -> None: ...
    async def limit_state(self, key: str, rate: float, burst: float) -> tuple[float, float]: ...
    async def reserve(self, key: str, amount: int, limit: int) -> bool: ...
    async def settle(self, key: str, reserved: int, actual: int) -> None: ...
    async def release(self, key: str, reserved: int) -> None: ...
    async def seed(self, key: str, spent: int) -> bool: ...
    async def budget(self, key: str) -> tuple[int, int]: ...
    async def generation(self) -> int: ...
    async def bump_generation(self) -> int: ...
    async def aclose(self) -> None: ...


def local_counters_path() -> str:
    """A fresh file for a gateway's counters: in /dev/shm (memory) when the machine has it."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    return os.path.join(base, f"llmgw-counters-{os.getpid()}-{time.time_ns():x}")


def _none() -> None:
    return None


class LocalCounters:
    """One machine's workers (see the module docstring)."""

    _GEN = "keys:generation"

    def __init__(self, path: str | None = None, now: Callable[[], float] | None = None) -> None:
        """`now`: a clock for the buckets (tests pass a fake one); by default the table reads the
        machine's monotonic clock itself, the same for every worker."""
        from llmgw._core import SharedCounters

        self._now = now or _none

        path = path or os.environ.get(ENV)
        self.private = path is None
        if path is None:  # not started by `llmgw serve`: a table of our own
            path = local_counters_path()
            self.table = SharedCounters(path, create=True)
        else:
            self.table = SharedCounters(path)
        self.path = path

    def acquire(self, checks: list[Check]) -> float:
        return self.table.acquire(checks, self._now())

    def adjust(self, key: str, rate: float, burst: float, delta: float) -> None:
        """The real token count differed from the estimate: charge (delta > 0) or give back."""
        if delta > 0:
            self.table.charge(key, rate, burst, delta, self._now())
        elif delta < 0:
            self.table.refund(key, rate, burst, -delta, self._now())

    def limit_state(self, key: str, rate: float, burst: float) -> tuple[float, float]:
        """(cells available now, seconds until the bucket is full again)."""
        now = self._now()
        return self.table.remaining(key, rate, burst, now), self.table.reset_after(key, rate, burst, now)

    def reset_after(self, key: str, rate: float, burst: float) -> float:
        """Seconds until the bucket is full again (what it holds now: burst - this x rate)."""
        return self.table.reset_after(key, rate, burst, self._now())

    def reserve(self, key: str, amount: int, limit: int) -> bool:
        return self.table.reserve(key, amount, limit)

    def settle(self, key: str, reserved: int, actual: int) -> None:
        self.table.settle(key, reserved, actual)

    def release(self, key: str, reserved: int) -> None:
        self.table.release(key, reserved)

    def seed(self, key: str, spent: int) -> bool:
        return self.table.seed(key, spent)

    def budget(self, key: str) -> tuple[int, int]:
        return self.table.budget(key)

    def generation(self) -> int:
        return self.table.get(self._GEN)

    def bump_generation(self) -> int:
        return self.table.add(self._GEN, 1)

    async def aclose(self) -> None:
        if self.private:
            try:
                os.unlink(self.path)
            except OSError:
                pass


# KEYS: the buckets; ARGV: rate, burst, cost per bucket. All-or-nothing within one script.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local new, wait = {}, 0
for i, key in ipairs(KEYS) do
  local rate, burst, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  if cost > burst then return '-1' end
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local after = tat + cost / rate
  local allow_at = after - burst / rate
  if allow_at > now then
    if allow_at - now > wait then wait = allow_at - now end
  else
    new[i] = after
  end
end
if wait > 0 then return tostring(wait) end
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1])
  redis.call('SET', key, tostring(new[i]), 'PX', math.ceil(burst / rate * 1000) + 1000)
end
return '0'
"""
_ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate, burst, delta = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
tat = tat + delta / rate
if tat < now then tat = now end
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(burst / rate * 1000) + 1000)
return 1
"""
_STATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
return {tostring(math.max(burst - (tat - now) * rate, 0)), tostring(tat - now)}
"""
_RESERVE = """
local c = tonumber(redis.call('HGET', KEYS[1], 'c') or '0')
if c + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'c', ARGV[1])
return 1
"""
_SETTLE = """
redis.call('HINCRBY', KEYS[1], 'c', tonumber(ARGV[2]) - tonumber(ARGV[1]))
redis.call('HINCRBY', KEYS[1], 's', ARGV[2])
return 1
"""
_SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'c', ARGV[1], 's', ARGV[1])
return 1
"""


class RedisCounters:
    """Several replicas' counters in one Redis (see the module docstring)."""

    def __init__(self, url: str, prefix: str = "llmgw:") -> None:
        import redis.asyncio as redis

        self.prefix = prefix
        self.client = redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._gcra = self.client.register_script(_GCRA)
        self._adjust = self.client.register_script(_ADJUST)
        self._state = self.client.register_script(_STATE)
        self._reserve = self.client.register_script(_RESERVE)
        self._settle = self.client.register_script(_SETTLE)
        self._seed = self.client.register_script(_SEED)

    async def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await fn(*args, **kw)
        except (RedisError, OSError) as exc:
            raise CounterFailure(f"Redis is unreachable: {type(exc).__name__}") from None

    async def acquire(self, checks: list[Check]) -> float:
        keys = [self.prefix + k for k, _, _, _ in checks]
        args = [str(v) for _, rate, burst, cost in checks for v in (rate, burst, cost)]
        out = float(await self._call(self._gcra, keys=keys, args=args))
        return float("inf") if out < 0 else out

    async def adjust(self, key: str, rate: float, burst: float, delta: float) -> None:
        if delta:
            await self._call(self._adjust, keys=[self.prefix + key], args=[rate, burst, delta])

    async def limit_state(self, key: str, rate: float, burst: float) -> tuple[float, float]:
        remaining, reset = await self._call(self._state, keys=[self.prefix + key], args=[rate, burst])
        return float(remaining), float(reset)

    async def reserve(self, key: str, amount: int, limit: int) -> bool:
        return bool(await self._call(self._reserve, keys=[self.prefix + key], args=[amount, limit]))

    async def settle(self, key: str, reserved: int, actual: int) -> None:
        await self._call(self._settle, keys=[self.prefix + key], args=[reserved, actual])

    async def release(self, key: str, reserved: int) -> None:
        await self._call(self.client.hincrby, self.prefix + key, "c", -reserved)

    async def seed(self, key: str, spent: int) -> bool:
        return bool(await self._call(self._seed, keys=[self.prefix + key], args=[spent]))

    async def budget(self, key: str) -> tuple[int, int]:
        c, s = await self._call(self.client.hmget, self.prefix + key, "c", "s")
        return int(c or 0), int(s or 0)

    async def generation(self) -> int:
        return int(await self._call(self.client.get, self.prefix + "keys:generation") or 0)

    async def bump_generation(self) -> int:
        return int(await self._call(self.client.incr, self.prefix + "keys:generation"))

    async def aclose(self) -> None:
        await self.client.aclose()
