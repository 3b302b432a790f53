"""Shared fixtures: the mock upstream, and real gateway processes on loopback (see support.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from llmgw.mock import MockUpstream
from support import GatewayProcess

@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[MockUpstream]:
    with MockUpstream() as mock:
        yield mock


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator:
    """start_gateway(yaml_text, workers=1, env=None) -> GatewayProcess, stopped after the test."""
    started: list[GatewayProcess] = []

    def start(config_text: str, *, workers: int = 1, env: dict[str, str] | None = None,
              name: str = "gateway") -> GatewayProcess:
        path = tmp_path / f"{name}{len(started)}.yaml"
        path.write_text(config_text)
        gw = GatewayProcess(path, workers=workers, env=env)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on 127.0.0.1 (tests/servers.py)."""
    from servers import RedisServer

    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL cluster on 127.0.0.1; `.new_database()` gives a fresh DSN."""
    from servers import PostgresServer

    server = PostgresServer()
    yield server
    server.close()
