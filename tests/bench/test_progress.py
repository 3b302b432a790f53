"""The progress line, as a user sees it: on a terminal (a pseudo-terminal here), in a pipe or a
log, silenced, and at Ctrl-C; plus the line's arithmetic on a fake clock."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import tty
from typing import Iterator

import pytest

from llmgw.bench import add_arguments, run
from llmgw.bench.client import RequestResult
from llmgw.bench.progress import ProgressLine, _fit, final_line
from llmgw.bench.schedulers import Tally

from .conftest import MockOpenAI

REDRAW = b"\r\x1b[K"
# A running line: elapsed | requests | rate | errors | percent | time left (or the in-flight tail).
FRAME = re.compile(r"(?P<elapsed>\d+\.\d) s \| (?P<done>[\d,]+)(?:/[\d,]+)? requests \| (?P<rate>[\d,]+) req/s \| "
                   r"(?P<errors>[\d,]+) errors? \| (?P<pct>\d+)% \| (?:[\d.]+ s left|finishing [\d,]+ in flight)")
FINAL = re.compile(r"llmgw bench: done in \d+\.\d s \| (?P<done>[\d,]+) requests \| (?P<errors>[\d,]+) errors?")
# The bench itself, with Python's default SIGINT handling even when the test runner ignores SIGINT.
BENCH = [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                               "from llmgw.bench import main; sys.exit(main())"]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def _num(text: str) -> int:
    return int(text.replace(",", ""))


def _table_total(stdout: str) -> int:
    match = re.search(r"^requests: (\d+) total", stdout, re.M)
    assert match, stdout
    return int(match.group(1))


@contextlib.contextmanager
def _spawn(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """The bench in the background, stdout and stderr piped; killed if the test fails early."""
    proc = subprocess.Popen(BENCH + argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _run_on_terminal(argv: list[str], *, columns: int = 120,
                     stdout_on_terminal: bool = False) -> tuple[int, bytes, str]:
    """Run the bench with stderr (and optionally stdout) on a pseudo-terminal `columns` wide.

    Returns (exit code, bytes the terminal received, stdout when it was a pipe). The terminal is
    raw, so the bytes are exactly what the bench wrote (no LF -> CRLF translation)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(BENCH + argv, stdin=subprocess.DEVNULL, stderr=slave,
                            stdout=slave if stdout_on_terminal else subprocess.PIPE,
                            env={**os.environ, "TERM": "xterm-256color"})
    os.close(slave)
    seen = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer closed its end
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        stdout = proc.stdout.read().decode() if proc.stdout is not None else ""
        return proc.wait(timeout=30), bytes(seen), stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        if proc.stdout is not None:
            proc.stdout.close()


def test_terminal_gets_one_line_redrawn_in_place(server: MockOpenAI) -> None:
    code, seen, stdout = _run_on_terminal(["--url", server.url("ok"), "--model", "m", "-c", "2", "-d", "1.5"])
    assert code == 0, seen
    assert seen.startswith(REDRAW)
    *frames, last = (f.decode() for f in seen.split(REDRAW)[1:])
    # Redrawn a few times a second, from a timer: not once per request.
    assert 3 <= len(frames) <= 1.5 / 0.25 + 2
    assert not any("\n" in f or "\r" in f for f in frames)
    parsed = [FRAME.fullmatch(f) for f in frames]
    assert all(parsed), frames
    assert all(len(f) < 120 for f in frames)
    values = [(float(m["elapsed"]), _num(m["done"]), int(m["pct"])) for m in parsed if m]
    assert values == sorted(values)  # time, requests and percent only go up
    assert all(_num(m["rate"]) > 0 and m["errors"] == "0" for m in parsed if m)
    assert values[-1][1] > len(frames)
    # stdout is not the terminal: the line is replaced by a final one, whose count is the table's.
    final = FINAL.fullmatch(last.removesuffix("\n"))
    assert last.endswith("\n") and final, last
    assert _num(final["done"]) == _table_total(stdout) >= values[-1][1]
    assert stdout.count("requests:") == 1 and "\r" not in stdout and "\x1b" not in stdout


def test_line_is_erased_when_the_report_follows_on_the_terminal(server: MockOpenAI) -> None:
    code, seen, _ = _run_on_terminal(["--url", server.url("ok"), "--model", "m", "-d", "0.8"],
                                     stdout_on_terminal=True)
    assert code == 0, seen
    frames, _, table = seen.decode().rpartition("\r\x1b[K")
    assert FRAME.search(frames), frames  # it was drawn ...
    assert table.startswith("llmgw bench: http://")  # ... and erased: the table starts at column 0
    assert "\r" not in table and "done in" not in table
    assert table.count("requests:") == 1


def test_narrow_terminal_gets_whole_fields_only(server: MockOpenAI) -> None:
    code, seen, _ = _run_on_terminal(["--url", server.url("ok"), "--model", "m", "-d", "0.8"], columns=40)
    assert code == 0
    *frames, _ = (f.decode() for f in seen.split(REDRAW)[1:])
    assert frames
    for frame in frames:
        assert len(frame) <= 39  # never wraps, so the redraw stays on one line
        assert re.fullmatch(r"\d+\.\d s \| [\d,]+ requests( \| [\d,]+ req/s)?( \| \d+ errors?)?", frame), frame


def test_quiet_is_silent_on_a_terminal(server: MockOpenAI) -> None:
    code, seen, stdout = _run_on_terminal(["--url", server.url("ok"), "--model", "m", "-d", "0.6", "--quiet"])
    assert code == 0
    assert seen == b""
    assert _table_total(stdout) > 0


def test_pipe_gets_plain_lines_and_json_stays_clean(server: MockOpenAI) -> None:
    proc = subprocess.run(BENCH + ["--url", server.url("ok"), "--model", "m", "-c", "2", "-d", "1.1",
                                   "--progress-interval", "0.25", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # nothing but the report on stdout
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr
    *lines, last = proc.stderr.splitlines()
    assert 3 <= len(lines) <= 1.1 / 0.25 + 1
    assert all(line.startswith("llmgw bench: ") and FRAME.fullmatch(line.removeprefix("llmgw bench: "))
               for line in lines), lines
    final = FINAL.fullmatch(last)
    assert final, last
    assert _num(final["done"]) == report["requests"]["total"]


def test_log_lines_come_every_few_seconds_by_default(server: MockOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    # A run shorter than the 5 s interval leaves one line in a log: the final one.
    assert run(_args("--url", server.url("ok"), "--model", "m", "-n", "20")) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(r"llmgw bench: done in \d+\.\d s \| 20 requests \| 0 errors\n", err), err
    assert _table_total(out) == 20


@pytest.mark.parametrize("flag", ["--quiet", "-q", "--no-progress"])
def test_quiet_flags_leave_stderr_empty(server: MockOpenAI, capsys: pytest.CaptureFixture[str], flag: str) -> None:
    assert run(_args("--url", server.url("ok"), "--model", "m", "-n", "5", "--progress-interval", "0.01",
                     flag)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert _table_total(out) == 5


def test_errors_and_their_kinds_agree_with_the_report(server: MockOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(_args("--url", server.url("every3rd500"), "--model", "m", "-d", "0.6", "--progress-interval", "0.2",
                     "--json"))
    assert code == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    *lines, last = err.splitlines()
    assert lines and all(re.search(r"\| [\d,]+ errors? \|.*\| http_500=\d+$", line) for line in lines), lines
    failed = report["requests"]["failed"]
    assert last.endswith(f"| {report['requests']['total']:,} requests | {failed:,} errors | http_500={failed}")


@pytest.mark.parametrize("load", [["-c", "4"], ["--rate", "200"]], ids=["closed-loop", "open-loop"])
@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
def test_ctrl_c_prints_the_partial_report(server: MockOpenAI, load: list[str], json_out: bool) -> None:
    argv = ["--url", server.url("slow20"), "--model", "m", "-d", "30", "--progress-interval", "0.2", *load]
    with _spawn(argv + (["--json"] if json_out else [])) as proc:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the first progress line: requests are flowing
        assert FRAME.fullmatch(first.removeprefix("llmgw bench: ").rstrip("\n")), first
        proc.send_signal(signal.SIGINT)
        stdout, rest = proc.communicate(timeout=30)
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest and "Task" not in rest
    last = rest.splitlines()[-1]
    match = re.fullmatch(r"llmgw bench: interrupted at \d+\.\d s \| ([\d,]+) requests \| 0 errors \| "
                         r"(\d+) in flight cancelled", last)
    assert match, rest
    if json_out:
        report = json.loads(stdout)
        assert report["run"]["interrupted"] is True
        total, cancelled = report["requests"]["total"], report["run"]["cancelled_in_flight"]
    else:
        assert "interrupted (Ctrl-C): partial results" in stdout
        total = _table_total(stdout)
        cancelled = int(re.search(r"(\d+) requests in flight were cancelled", stdout).group(1))  # type: ignore[union-attr]
    assert _num(match.group(1)) == total > 0
    assert int(match.group(2)) == cancelled <= (4 if load[0] == "-c" else 256)


def test_ctrl_c_during_the_warm_up_says_nothing_was_measured(server: MockOpenAI) -> None:
    with _spawn(["--url", server.url("slow20"), "--model", "m", "-n", "5", "--warmup", "30",
                 "--progress-interval", "0.2"]) as proc:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("llmgw bench: warm-up ")
        proc.send_signal(signal.SIGINT)
        stdout, rest = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert stdout == ""
    assert rest.splitlines()[-1] == "llmgw bench: interrupted during the warm-up, nothing was measured"


# -- the line's arithmetic, on a fake clock ------------------------------------------------------

def _tally(done: int, *, t0: float = 0.0, started: int | None = None, errors: dict[str, int] | None = None) -> Tally:
    tally = Tally()
    tally.t0 = t0
    tally.results = [RequestResult(origin=0.0)] * done
    tally.started = done if started is None else started
    tally.errors = dict(errors or {})
    return tally


def test_rate_is_the_last_second_not_the_run_average() -> None:
    line = ProgressLine(io.StringIO(), terminal=True)
    tally = _tally(0)
    line.start_phase(tally, duration=10.0)
    tally.results += [RequestResult(origin=0.0)] * 3000  # 3,000 in the first second ...
    assert "3,000 req/s" in line.render(1.0)
    for step in range(1, 9):  # ... then nothing for two seconds
        line.render(1.0 + step * 0.25)
    assert "| 0 req/s |" in line.render(3.25)  # the average would say ~920 req/s
    tally.results += [RequestResult(origin=0.0)] * 500
    assert "| 500 req/s |" in line.render(4.25)


def test_log_rate_covers_the_time_since_the_previous_line() -> None:
    line = ProgressLine(io.StringIO(), terminal=False)
    assert line.interval == 5.0
    tally = _tally(0)
    line.start_phase(tally, duration=60.0)
    tally.results += [RequestResult(origin=0.0)] * 5000
    line.render(5.0)
    tally.results += [RequestResult(origin=0.0)] * 1000
    assert "| 6,000 requests | 200 req/s |" in line.render(10.0)


def test_percent_and_time_left_follow_the_targets() -> None:
    line = ProgressLine(io.StringIO(), terminal=True)
    line.start_phase(_tally(250), duration=10.0)
    assert line.render(2.5).endswith("| 25% | 7.5 s left")
    line.start_phase(_tally(250), requests=1000)  # a count target: time left from the current rate
    assert line.render(2.5) == "llmgw bench: 2.5 s | 250/1,000 requests | 100 req/s | 0 errors | 25% | 7.5 s left"
    line.start_phase(_tally(0, started=0), duration=120.0, label="warm-up")
    assert line.render(30.0) == "llmgw bench: warm-up 30.0 s | 0 requests | 0 req/s | 0 errors | 25% | 1m30s left"
    line.start_phase(_tally(1000, started=1032), duration=10.0)  # past the deadline, answers pending
    assert line.render(10.2).endswith("| 100% | finishing 32 in flight")
    line.start_phase(_tally(7, errors={"timeout": 1, "http_500": 2}), duration=10.0)
    assert line.render(1.0).endswith("| 3 errors | 10% | 9.0 s left | http_500=2 timeout=1")


def test_fit_drops_whole_fields_from_the_end() -> None:
    fields = ["3.2 s", "12,345 requests", "3,812 req/s", "0 errors", "32%", "6.8 s left"]
    assert _fit(fields, 200) == " | ".join(fields)
    assert _fit(fields, 50) == "3.2 s | 12,345 requests | 3,812 req/s | 0 errors"
    assert _fit(fields, 10) == "3.2 s"
    assert _fit(fields, 3) == "3.2"


def test_terminal_output_is_redraws_then_the_final_line() -> None:
    stream = io.StringIO()
    line = ProgressLine(stream, terminal=True)
    line.start_phase(_tally(5), duration=1.0)
    line.draw()
    line.draw()
    report = {"requests": {"total": 9, "ok": 8, "failed": 1}, "errors": {"timeout": 1}, "elapsed_s": 1.02,
              "run": {"interrupted": False}}
    line.finish(final_line(report), erase=False)
    frames = stream.getvalue().split("\r\x1b[K")
    assert frames[0] == "" and len(frames) == 4
    assert frames[3] == "llmgw bench: done in 1.0 s | 9 requests | 1 error | timeout=1\n"


def test_a_closed_stream_silences_the_line_instead_of_failing() -> None:
    stream = io.StringIO()
    line = ProgressLine(stream, terminal=False)
    line.start_phase(_tally(1), duration=1.0)
    stream.close()
    line.draw()  # e.g. stderr piped into a `head` that has exited
    line.finish("done", erase=False)


async def test_the_timer_draws_while_the_phase_runs_and_stops_after() -> None:
    stream = io.StringIO()
    line = ProgressLine(stream, terminal=False, interval=0.05)
    with line.watching(_tally(0, t0=time.perf_counter()), duration=1.0):
        await asyncio.sleep(0.28)
    drawn = stream.getvalue().count("\n")
    assert 4 <= drawn <= 6
    await asyncio.sleep(0.15)
    assert stream.getvalue().count("\n") == drawn
