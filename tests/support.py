"""Helpers for tests that run real gateway processes on loopback (imported by conftest and tests).

A gateway under test is `python -m llmgw.cli serve` in a subprocess (granian workers and all),
configured by a YAML file the test writes, reached over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

TESTS = Path(__file__).resolve().parent

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Poll `url`/health until it answers 200 (True), `timeout` passes or `proc` exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


class GatewayProcess:
    """A running `llmgw serve`; `.url` is its origin, `.base_url` the OpenAI SDK base URL."""

    def __init__(self, config_path: Path, *, workers: int = 1, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        self.log_path = config_path.with_suffix(".log")
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
        full_env.update(env or {})
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmgw.cli", "serve", "--config", str(config_path), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(workers)],
            stdout=self._log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        if not wait_healthy(self.url, timeout, self.proc):
            self.stop()
            if self.proc.returncode is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            raise RuntimeError(f"gateway did not become healthy in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


@contextmanager
def running_gateway(directory: Path, config_text: str, **kwargs) -> Iterator[GatewayProcess]:
    """A gateway for a whole test module: `with running_gateway(tmp_path_factory.mktemp(..), yaml)`."""
    path = directory / "gateway.yaml"
    path.write_text(config_text)
    proc = GatewayProcess(path, **kwargs)
    try:
        yield proc
    finally:
        proc.stop()


def openai_config(mock_url: str, *, extra_upstreams: str = "", extra_models: str = "", tail: str = "",
                  timeouts: str = "") -> str:
    """A config with model `m` → the mock (OpenAI format), plus whatever a test adds."""
    return f"""
upstreams:
  mock:
    provider: openai
    base_url: {mock_url}/v1
    api_key: sk-upstream-secret-123456
{timeouts}
{extra_upstreams}
models:
  m:
    upstream: mock
    model: mock-model
{extra_models}
{tail}
"""
