"""Load benchmark of the mock upstream against aiohttp.web serving the same answers.

Each server is pinned to CPU 0 and wrk to CPU 1; every run is bounded (DURATION seconds).
Run from the worktree with the venv active:

    python benches/mock/mock_load.py            # prints a markdown table with ratios

If the shared nginx fixed-body mock (../shared/bench/nginx-mock.sh) is already running on
127.0.0.1:18080, it is measured too as the C ceiling.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DURATION = int(os.environ.get("MOCK_BENCH_SECONDS", "5"))
HERE = Path(__file__).resolve().parent
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello! Please say something short."}]}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def wrk(url: str, body: dict[str, object] | None, connections: int, headers: dict[str, str]) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        if body is not None:
            script.write(f"wrk.method = 'POST'\nwrk.body = {json.dumps(json.dumps(body))}\n")
        for name, value in {"content-type": "application/json", **headers}.items():
            script.write(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n")
    try:
        out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{DURATION}s",
                              "--latency", "-s", script.name, url],
                             capture_output=True, text=True, timeout=DURATION + 30, check=True).stdout
    finally:
        os.unlink(script.name)
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")

    def micros(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", out)
        assert match, out
        return float(match[1]) * {"us": 1, "ms": 1000, "s": 1_000_000}[match[2]]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    return {"rps": rps, "p50_us": micros("50"), "p99_us": micros("99")}


def start(cmd: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_listening(port)
    return process


def main() -> None:
    rows: list[tuple[str, str, dict[str, float]]] = []
    mock_port, aio_port = free_port(), free_port()
    servers = {
        "llmgw mock (Protocol + httptools, uvloop)": (
            [sys.executable, "-m", "llmgw.mock", "--port", str(mock_port), "--no-auth"], mock_port),
        "aiohttp.web baseline (same answers)": (
            [sys.executable, str(HERE / "aiohttp_baseline.py"), "--port", str(aio_port)], aio_port),
    }
    scenarios = [("chat, c=32", CHAT, 32, {}), ("chat, c=1", CHAT, 1, {}),
                 ("stream 20 words, c=32", STREAM, 32, {"x-mock-words": "20"})]
    for name, (cmd, port) in servers.items():
        process = start(cmd, port)
        try:
            for label, body, connections, headers in scenarios:
                rows.append((name, label, wrk(f"http://127.0.0.1:{port}/v1/chat/completions", body, connections, headers)))
        finally:
            process.terminate()
            process.wait(timeout=10)
            assert process.stderr is not None
            process.stderr.close()
    try:
        socket.create_connection(("127.0.0.1", 18080), timeout=0.2).close()
        rows.append(("nginx fixed body (C ceiling)", "chat, c=32", wrk("http://127.0.0.1:18080/", None, 32, {})))
    except OSError:
        pass
    print("| server | scenario | req/s | p50 µs | p99 µs |\n|---|---|---|---|---|")
    for name, label, result in rows:
        print(f"| {name} | {label} | {result['rps']:,.0f} | {result['p50_us']:,.0f} | {result['p99_us']:,.0f} |")
    print()
    by_key = {(name.split(" ")[0], label): result for name, label, result in rows}
    for label, *_ in scenarios:
        mock, aio = by_key[("llmgw", label)], by_key[("aiohttp.web", label)]
        print(f"{label}: mock/aiohttp throughput ratio {mock['rps'] / aio['rps']:.2f}x, "
              f"p50 ratio {aio['p50_us'] / mock['p50_us']:.2f}x faster")


if __name__ == "__main__":
    main()
