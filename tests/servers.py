"""Real Redis and PostgreSQL servers for tests, started from the system packages on loopback.

`RedisServer` and `PostgresServer` run in a temporary directory on a free port of 127.0.0.1 and
are removed when stopped (conftest.py has session fixtures for both). `make test` and `.ci/run`
install the packages (scripts/system-deps.sh); when they are missing anyway the tests that need
them fail with a message saying so, unless LLMGW_ALLOW_MISSING_SERVERS=1 (then they skip).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from support import free_port

__all__ = ["PostgresServer", "RedisServer", "missing"]


def missing(what: str) -> None:
    message = (f"{what} is not installed: run scripts/system-deps.sh (apt-get install redis-server postgresql) "
               "or set LLMGW_ALLOW_MISSING_SERVERS=1 to skip these tests")
    if os.environ.get("LLMGW_ALLOW_MISSING_SERVERS") == "1":
        pytest.skip(message)
    pytest.fail(message)


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} in {timeout}s")


class RedisServer:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server")
        self.dir = tempfile.mkdtemp(prefix="llmgw-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin() -> str | None:
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return os.path.dirname(found)
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


class PostgresServer:
    """A throw-away cluster (trust auth on 127.0.0.1). As root, it runs as the `postgres` user."""

    def __init__(self) -> None:
        bindir = _pg_bin()
        if bindir is None:
            missing("PostgreSQL")
        self.dir = tempfile.mkdtemp(prefix="llmgw-pg-")
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres", "postgres")
        data = os.path.join(self.dir, "data")
        subprocess.run([*self.as_user, f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync",
                        "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.proc = subprocess.Popen(
            [*self.as_user, f"{bindir}/postgres", "-D", data, "-p", str(self.port), "-h", "127.0.0.1",
             "-k", self.dir, "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "postgres")
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._n = 0

    def new_database(self) -> str:
        """A fresh, empty database; its DSN."""
        import asyncio

        import asyncpg

        self._n += 1
        name = f"llmgw_test_{self._n}"

        async def create() -> None:
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(f"CREATE DATABASE {name}")
            finally:
                await conn.close()

        asyncio.run(create())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
