"""What the router knows about each deployment, shared by every request of a worker.

One `DeploymentState` per deployment: requests in flight, average latencies (EWMA of time to
first token and of total time), recent request and token rates (for the headroom strategy), the
circuit breaker, and the retry budget. `DeploymentStates` keeps them across config reloads for
every deployment whose definition did not change (the key is the deployment as configured).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmgw.clock import Clock
    from llmgw.config import Breaker, Deployment

__all__ = ["CircuitBreaker", "DeploymentState", "DeploymentStates", "RetryBudget"]

_EWMA = 0.2  # weight of a new latency sample


class CircuitBreaker:
    """closed → open after `failures` consecutive failures, or an error ratio over `window`
    seconds (with at least `min_requests` in it); open for `cooldown` seconds, then half-open:
    one probe request goes through (others skip the deployment); its success closes the breaker,
    its failure opens it again.

    The window is `_BUCKETS` counters of window/_BUCKETS seconds each, not a list of events:
    memory and time per request stay fixed at any request rate (a per-event list held 450,000
    entries at 15,000 requests/s over a 30 s window)."""

    __slots__ = ("policy", "state", "consecutive", "opened_at", "probing", "reason", "_width", "_epoch", "_total",
                 "_failed")

    def __init__(self, policy: Breaker) -> None:
        self.policy = policy
        self.state = "closed"
        self.consecutive = 0
        self.opened_at = 0.0
        self.probing = False
        self.reason = "server_error"  # what the failures that opened it were (UpstreamFailure.reason)
        self._width = policy.window / _BUCKETS
        self._epoch = 0  # the bucket number `now` falls in, at the last record
        self._total = [0] * _BUCKETS
        self._failed = [0] * _BUCKETS

    def allows(self, now: float) -> bool:
        """May a request go to this deployment now? (Takes the half-open probe slot if so.)"""
        if self.state == "closed":
            return True
        if self.state == "open" and now - self.opened_at >= self.policy.cooldown:
            self.state = "half_open"
            self.probing = False
        if self.state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def record(self, now: float, failed: bool, reason: str | None = None) -> None:
        p = self.policy
        if self.state == "half_open":
            self.probing = False
            if failed:
                self._open(now, reason)
            else:
                self.state, self.consecutive = "closed", 0
                self._reset()
            return
        epoch = int(now / self._width)
        if epoch != self._epoch:
            self._advance(epoch)
        i = epoch % _BUCKETS
        self._total[i] += 1
        if not failed:
            self.consecutive = 0
            return
        self._failed[i] += 1
        self.consecutive += 1
        if self.state == "closed":
            total, fails = sum(self._total), sum(self._failed)
            if self.consecutive >= p.failures or (total >= p.min_requests and fails / total >= p.error_ratio):
                self._open(now, reason)

    def _advance(self, epoch: float) -> None:
        """Zero the buckets that fell out of the window since the last record."""
        for e in range(max(self._epoch + 1, epoch - _BUCKETS + 1), epoch + 1):
            self._total[e % _BUCKETS] = self._failed[e % _BUCKETS] = 0
        self._epoch = epoch

    def _reset(self) -> None:
        self._total = [0] * _BUCKETS
        self._failed = [0] * _BUCKETS

    def _open(self, now: float, reason: str | None) -> None:
        self.state, self.opened_at, self.probing = "open", now, False
        if reason:
            self.reason = reason
        self._reset()


_BUCKETS = 10


class RetryBudget:
    """Retries a deployment may get, as a share (`ratio`) of its first attempts: each first
    attempt deposits `ratio` tokens (up to `cap`), each retry withdraws one. Under a deployment
    that always fails, retries stay at about `ratio` of the traffic instead of multiplying it."""

    __slots__ = ("ratio", "cap", "tokens")

    def __init__(self, ratio: float, cap: float = 10.0) -> None:
        self.ratio = ratio
        self.cap = cap
        self.tokens = 0.0

    def deposit(self) -> None:
        self.tokens = min(self.tokens + self.ratio, self.cap)

    def withdraw(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Rate:
    """Events per minute, estimated from this minute's count and the last one's (sliding window)."""

    __slots__ = ("minute", "current", "previous")

    def __init__(self) -> None:
        self.minute = -1
        self.current = 0.0
        self.previous = 0.0

    def add(self, now: float, amount: float) -> None:
        if now // 60 != self.minute:
            self._roll(now)
        self.current += amount

    def per_minute(self, now: float) -> float:
        self._roll(now)
        elapsed = (now % 60.0) / 60.0
        return self.current + self.previous * (1.0 - elapsed)

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self.minute:
            self.previous = self.current if minute == self.minute + 1 else 0.0
            self.current = 0.0
            self.minute = minute


class DeploymentState:
    __slots__ = ("deployment", "inflight", "ttft", "latency", "requests", "tokens", "breaker", "budget", "successes",
                 "failures", "rates")

    def __init__(self, deployment: Deployment, breaker: Breaker | None, budget_ratio: float) -> None:
        self.deployment = deployment
        # Request and token rates feed the headroom strategy, measured against RPM/TPM limits.
        self.rates = bool(deployment.rpm or deployment.tpm)
        self.inflight = 0
        self.ttft: float | None = None  # EWMA seconds, streams
        self.latency: float | None = None  # EWMA seconds, whole answers
        self.requests = _Rate()
        self.tokens = _Rate()
        self.breaker = CircuitBreaker(breaker) if breaker is not None else None
        self.budget = RetryBudget(budget_ratio)
        self.successes = 0
        self.failures = 0

    def observe(self, now: float, ok: bool, counts_against: bool, streamed: bool, seconds: float | None,
                tokens: int, reason: str | None = None) -> None:
        """An attempt ended. `counts_against`: a failure that says something about the deployment
        (not the request's own fault, a too-long prompt, or a content refusal)."""
        if self.rates:
            self.requests.add(now, 1)
            if tokens:
                self.tokens.add(now, tokens)
        if ok:
            self.successes += 1
            if seconds is not None:
                if streamed:
                    self.ttft = seconds if self.ttft is None else self.ttft + _EWMA * (seconds - self.ttft)
                else:
                    self.latency = seconds if self.latency is None else self.latency + _EWMA * (seconds - self.latency)
        elif counts_against:
            self.failures += 1
        if self.breaker is not None and (ok or counts_against):
            self.breaker.record(now, failed=not ok, reason=reason)

    def headroom(self, now: float) -> float:
        """1 minus the larger share of this deployment's RPM or TPM used in the last minute (1.0
        without limits)."""
        d = self.deployment
        used = 0.0
        if d.rpm:
            used = max(used, self.requests.per_minute(now) / d.rpm)
        if d.tpm:
            used = max(used, self.tokens.per_minute(now) / d.tpm)
        return 1.0 - used

    def snapshot(self, now: float) -> dict[str, object]:
        b = self.breaker
        return {"inflight": self.inflight, "ttft_s": self.ttft, "latency_s": self.latency,
                "requests_per_minute": round(self.requests.per_minute(now), 2) if self.rates else None,
                "successes": self.successes,
                "failures": self.failures, "breaker": b.state if b is not None else "off",
                "retry_tokens": round(self.budget.tokens, 2)}


@dataclass(frozen=True, slots=True)
class _Key:
    deployment: Deployment
    breaker: Breaker | None
    budget: float


class DeploymentStates:
    """The states of a worker's deployments, kept in the services across reloads: a deployment
    whose definition (and breaker and budget settings) did not change keeps its state."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._states: dict[_Key, DeploymentState] = {}

    def get(self, deployment: Deployment, breaker: Breaker | None, budget: float) -> DeploymentState:
        key = _Key(deployment, breaker, budget)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = DeploymentState(deployment, breaker, budget)
        return state

    def all(self) -> list[DeploymentState]:
        """Every deployment's state (metrics and the dashboard read them)."""
        return list(self._states.values())

    def keep_only(self, keys: set[DeploymentState]) -> None:
        """Forget the states no configuration uses any more."""
        self._states = {k: v for k, v in self._states.items() if v in keys}
