"""The live progress line `llmgw bench` writes to stderr while it runs.

Fields, most important first: elapsed time, requests finished, the current rate (over the last
second, not the run's average, so a target that slows down shows at once), errors so far, with a
target the percent done and the time left, then the error kinds seen. In a log:

    llmgw bench: 3.2 s | 12,345 requests | 3,812 req/s | 17 errors | 32% | 6.8 s left | http_500=17

stderr only, so stdout carries the report and nothing else (`--json` stays parseable).

On a terminal: one line redrawn in place (carriage return + clear to end of line) 4 times a
second, without the "llmgw bench:" prefix and cut to the terminal's width by dropping whole
fields from the end (a line that wraps cannot be redrawn). At the end it is erased when the report
follows on a terminal, or replaced by the final line (the report's own counts) when stdout goes
elsewhere.

Anywhere else (a file, a pipe, CI, TERM=dumb): a plain line every `interval` seconds (5 by
default), no control characters, each rate covering the time since the previous line, then the
final line.

Cost: nothing per request. The schedulers keep a `Tally` (one append per request); a loop timer
here reads it and formats one line per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from typing import Any, Callable, Iterator, TextIO

from llmgw.bench.schedulers import Tally

__all__ = ["ProgressLine", "is_terminal", "final_line", "TERMINAL_INTERVAL", "LOG_INTERVAL"]

#: Seconds between redraws on a terminal: fast enough to look live, rare enough to cost nothing.
TERMINAL_INTERVAL = 0.25
#: Seconds between lines in a log (12 lines a minute).
LOG_INTERVAL = 5.0
#: The current rate covers at least this many seconds: shorter windows jitter with the timer.
RATE_WINDOW = 1.0
PREFIX = "llmgw bench: "
_REDRAW = "\r\x1b[K"  # back to column 0, clear to end of line
_FALLBACK_COLUMNS = 80  # a pty nobody sized reports 0 columns


def is_terminal(stream: TextIO) -> bool:
    """True when `stream` can take a line redrawn in place (a TTY whose TERM is not "dumb")."""
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _duration(seconds: float) -> str:
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _errors(errors: dict[str, int]) -> tuple[str, str | None]:
    failed = sum(errors.values())
    kinds = " ".join(f"{kind}={count}" for kind, count in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{failed:,} error{'' if failed == 1 else 's'}", kinds or None


def final_line(report: dict[str, Any]) -> str:
    """The last progress line: the report's own counts, so it agrees with the table."""
    req = report["requests"]
    errors, kinds = _errors(report["errors"])
    run = report["run"]
    if run.get("interrupted"):
        parts = [f"interrupted at {_duration(report['elapsed_s'])}", f"{req['total']:,} requests", errors,
                 f"{run['cancelled_in_flight']:,} in flight cancelled"]
    else:
        parts = [f"done in {_duration(report['elapsed_s'])}", f"{req['total']:,} requests", errors]
    if kinds:
        parts.append(kinds)
    return PREFIX + " | ".join(parts)


def _fit(fields: list[str], width: int) -> str:
    """Join `fields` into at most `width` characters, dropping whole fields from the end: a line
    that wraps cannot be redrawn in place, and a field cut in half misleads ("1.0 s l")."""
    line = fields[0][:width]
    for field in fields[1:]:
        if len(line) + 3 + len(field) > width:
            break
        line += " | " + field
    return line


class ProgressLine:
    """Draws the progress of the phase being watched; see the module docstring for the rules."""

    def __init__(self, stream: TextIO, *, terminal: bool, interval: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.stream = stream
        self.terminal = terminal
        self.interval = interval if interval is not None else (TERMINAL_INTERVAL if terminal else LOG_INTERVAL)
        self._window = max(RATE_WINDOW, self.interval)
        self._clock = clock
        self._tally: Tally | None = None
        self._label = ""
        self._requests: int | None = None
        self._duration: float | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._drawn = False  # a redrawable line is on the terminal
        self._broken = False  # a write failed (e.g. stderr piped into a closed `head`): stay silent

    def start_phase(self, tally: Tally, *, label: str = "", requests: int | None = None,
                    duration: float | None = None) -> None:
        """Report on `tally` from now on. `requests` and `duration` are the phase's targets (either
        ends it), used for the percent done and time left; `label` prefixes the elapsed time."""
        self._tally = tally
        self._label = f"{label} " if label else ""
        self._requests = requests
        self._duration = duration
        self._samples.clear()

    def render(self, now: float | None = None) -> str:
        """The log line as of `now`; also records the sample the next line's rate is measured from."""
        return PREFIX + " | ".join(self.fields(now))

    def fields(self, now: float | None = None) -> list[str]:
        """The line's fields as of `now`, most important first; records a rate sample."""
        tally = self._tally
        if tally is None:
            raise RuntimeError("render() before start_phase()")
        now = self._clock() if now is None else now
        elapsed = max(now - tally.t0, 0.0)
        done = tally.done
        rate = self._rate(tally, now, done)
        errors, kinds = _errors(tally.errors)
        counted = f"{done:,}/{self._requests:,}" if self._requests is not None else f"{done:,}"
        parts = [f"{self._label}{_duration(elapsed)}", f"{counted} requests", f"{rate:,.0f} req/s", errors]
        fractions: list[float] = []
        lefts: list[float] = []
        if self._duration is not None:
            fractions.append(elapsed / self._duration)
            lefts.append(self._duration - elapsed)
        if self._requests is not None:
            fractions.append(done / self._requests)
            if rate > 0:
                lefts.append((self._requests - done) / rate)
        if fractions:
            parts.append(f"{min(max(fractions), 1.0):.0%}")
        sending_over = ((self._duration is not None and elapsed >= self._duration)
                        or (self._requests is not None and tally.started >= self._requests))
        if sending_over and tally.in_flight > 0:
            parts.append(f"finishing {tally.in_flight:,} in flight")
        elif lefts:
            parts.append(f"{_duration(max(min(lefts), 0.0))} left")
        if kinds:
            parts.append(kinds)
        return parts

    def _rate(self, tally: Tally, now: float, done: int) -> float:
        samples = self._samples
        if not samples:
            samples.append((tally.t0, 0))
        samples.append((now, done))
        # Keep the newest sample that is at least a window old as the base.
        while len(samples) > 2 and now - samples[1][0] >= self._window:
            samples.popleft()
        then, done_then = samples[0]
        return (done - done_then) / (now - then) if now > then else 0.0

    @contextlib.contextmanager
    def watching(self, tally: Tally, *, label: str = "", requests: int | None = None,
                 duration: float | None = None) -> Iterator[None]:
        """Draw on a loop timer while the body runs (call from a coroutine on that loop)."""
        self.start_phase(tally, label=label, requests=requests, duration=duration)
        loop = asyncio.get_running_loop()
        start = loop.time()

        def tick(n: int) -> None:  # the n-th tick, due at start + n * interval
            self.draw()
            # On a fixed grid from the start, so log lines land at 5.0, 10.0, ... s however long a draw took.
            due = start + (n + 1) * self.interval
            self._timer = None if self._broken else loop.call_at(max(due, loop.time()), tick, n + 1)

        self._timer = loop.call_at(start + self.interval, tick, 1)
        try:
            yield
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def draw(self) -> None:
        """Write the current line: redrawn in place on a terminal, a new line otherwise."""
        if self.terminal:
            self._write(_REDRAW + _fit(self.fields(), self._columns() - 1))
            self._drawn = True
        else:
            self._write(self.render() + "\n")

    def finish(self, final: str | None, *, erase: bool) -> None:
        """End the output before the report is printed: on a terminal the line is erased (`erase`,
        the report follows on a terminal) or replaced by `final`; in a log `final` is appended."""
        if self.terminal:
            if erase or final is None:
                if self._drawn:
                    self._write(_REDRAW)
            else:
                self._write(_REDRAW + final + "\n")  # it stays: wrapping is harmless now
            self._drawn = False
        elif final is not None:
            self._write(final + "\n")

    def _columns(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            return _FALLBACK_COLUMNS
        return columns or _FALLBACK_COLUMNS

    def _write(self, text: str) -> None:
        if self._broken:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self._broken = True
