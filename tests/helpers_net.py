"""Helpers shared by the socket-level tests: loopback capabilities, waiting on a condition."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest


def has_ipv6() -> bool:
    """True when the IPv6 loopback ``::1`` can be bound."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")


async def wait_until(
    predicate: Callable[[], object], timeout: float = 5.0, step: float = 0.01
) -> None:
    """Poll ``predicate`` until it is true or ``timeout`` passes; the caller asserts afterwards.

    The timeout is a generous bound for "it happens", never a pass/fail timing: returning without
    raising lets the caller's own assertion say what did not happen.
    """
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(step)
