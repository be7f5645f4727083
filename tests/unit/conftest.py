"""Fixtures of the unit tests that run real sockets on 127.0.0.1."""

from collections.abc import AsyncIterator

import pytest

from tests.helpers_call import Pair, started_pair


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    """alice's and bob's user agents on 127.0.0.1 (UDP)."""
    async with started_pair() as agents:
        yield agents
