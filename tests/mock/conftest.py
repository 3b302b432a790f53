from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmgw.mock import MockUpstream


@pytest.fixture(scope="module")
def shared_mock() -> Iterator[MockUpstream]:
    with MockUpstream() as upstream:
        yield upstream


@pytest.fixture
def mock(shared_mock: MockUpstream) -> MockUpstream:
    """A running mock with default options and fresh counters."""
    shared_mock.reset()
    return shared_mock
