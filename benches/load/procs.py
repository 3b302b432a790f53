"""Process measurements for the load benchmark, read from /proc (Linux only).

A gateway with several workers is a process tree (a supervisor plus worker processes), so memory and CPU are
summed over the tree. RSS double-counts pages shared between the processes; PSS splits them, so
the PSS sum is the tree's real footprint. Both are reported.
"""

from __future__ import annotations

import http.client
import os
import time
from dataclasses import dataclass

__all__ = ["TreeUsage", "descendants", "tree_usage", "wait_first_answer"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # exited while we looked
            continue
        # fields after the parenthesised command (which may contain spaces): state ppid ...
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """Memory (bytes) and CPU time (seconds, user + system) summed over a process tree."""

    processes: int
    rss: int
    pss: int | None  # None where smaps_rollup is unreadable
    cpu_s: float


def _kib_field(path: str, name: bytes) -> int | None:
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def tree_usage(pid: int) -> TreeUsage:
    """RSS, PSS and CPU time of `pid` and its descendants, now."""
    rss, pss, cpu, n = 0, 0, 0.0, 0
    pss_ok = True
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        cpu += (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (stat fields 14, 15)
        rss += _kib_field(f"/proc/{p}/status", b"VmRSS:") or 0
        p_pss = _kib_field(f"/proc/{p}/smaps_rollup", b"Pss:")
        if p_pss is None:
            pss_ok = False
        else:
            pss += p_pss
        n += 1
    return TreeUsage(processes=n, rss=rss, pss=pss if pss_ok else None, cpu_s=cpu)


def wait_first_answer(host: str, port: int, path: str, body: bytes, *, started: float,
                      limit_s: float = 60.0) -> float:
    """Poll with POST `path` until a 200 arrives; seconds from `started` (a time.monotonic() taken
    just before the process was spawned) to that answer. Raises TimeoutError after `limit_s`."""
    while True:
        conn = http.client.HTTPConnection(host, port, timeout=2.0)
        try:
            conn.request("POST", path, body=body, headers={"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                return time.monotonic() - started
        except OSError:
            pass  # not listening yet
        finally:
            conn.close()
        if time.monotonic() - started > limit_s:
            raise TimeoutError(f"no 200 answer from {host}:{port}{path} within {limit_s:g} s")
        time.sleep(0.005)
