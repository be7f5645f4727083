"""Integration tests: real sockets on 127.0.0.1 with real peers (fixtures in tests/conftest.py).

Every test here is marked ``integration``; one that uses a network-namespace fixture
(``netns_lab``, ``nat_lab``, ``lab_services``) is also marked ``lab`` (it needs root).
"""

import pytest

LAB_FIXTURES = {"netns_lab", "nat_lab", "lab_services"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" not in str(item.path).replace("\\", "/"):
            continue
        item.add_marker(pytest.mark.integration)
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)
