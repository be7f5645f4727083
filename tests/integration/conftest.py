"""Integration tests: real sockets on 127.0.0.1 with real peers (fixtures in tests/conftest.py).

Every test here is marked ``integration``; one that uses a network-namespace fixture
(``netns_lab``, ``nat_lab``, ``lab_services``) is also marked ``lab`` (it needs root).
"""

from collections.abc import AsyncIterator

import pytest

from sip.aio import AsyncUserAgent
from tests.helpers_call import Pair, started_pair, started_ua

LAB_FIXTURES = {"netns_lab", "nat_lab", "lab_services"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" not in str(item.path).replace("\\", "/"):
            continue
        item.add_marker(pytest.mark.integration)
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    """alice's and bob's user agents on 127.0.0.1 (UDP)."""
    async with started_pair() as agents:
        yield agents


@pytest.fixture
async def bob_ua() -> AsyncIterator[AsyncUserAgent]:
    """bob's user agent on 127.0.0.1 (UDP)."""
    async with started_ua("bob") as ua:
        yield ua
