"""Time as the gateway reads it: one object, so tests can replace it (`FakeClock` in tests/fakes.py).

Routing reads it for backoff, breaker windows, retry budgets and latency averages; the services
hand the same one to every plugin (`services.clock`).
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["Clock"]


class Clock:
    """Monotonic seconds (`now`), wall-clock seconds (`wall`), and `sleep`."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
