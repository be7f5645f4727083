"""Registration robustness and target selection rules (no sockets)."""

from __future__ import annotations

import pytest

from sip.aio import BINDING_LOST_STATUSES, NAT_UDP_REGISTER_EXPIRES, order_targets, udp_expires
from sip.locate import AllTargetsFailed, Target, try_targets


def test_udp_expires_caps_the_requested_lifetime():
    assert udp_expires(3600, NAT_UDP_REGISTER_EXPIRES) == 600
    assert udp_expires(300, 600) == 300
    assert udp_expires(3600, None) == 3600
    assert udp_expires(3600, 0) == 3600


def test_binding_lost_statuses():
    assert {404, 480, 408} <= BINDING_LOST_STATUSES
    assert 200 not in BINDING_LOST_STATUSES and 486 not in BINDING_LOST_STATUSES


# ---------------------------------------------------------------- RFC 3263 §4.3 failover

A = Target("UDP", "a.test", "127.0.0.1", 5070)
B = Target("UDP", "b.test", "127.0.0.2", 5070)
C = Target("UDP", "c.test", "127.0.0.3", 5070)


def test_order_targets_puts_recently_failed_targets_last():
    assert order_targets([A, B, C], {}, 10.0) == [A, B, C]
    assert order_targets([A, B, C], {A: 20.0}, 10.0) == [B, C, A]
    assert order_targets([A, B, C], {A: 20.0, B: 30.0}, 10.0) == [C, A, B]
    # a failure that is old enough no longer counts
    assert order_targets([A, B, C], {A: 5.0}, 10.0) == [A, B, C]


async def test_try_targets_reports_each_failed_target():
    failed: list[Target] = []

    async def attempt(t: Target) -> str:
        if t is not C:
            raise ConnectionRefusedError(111, "refused")
        return t.host

    assert await try_targets([A, B, C], attempt, on_failure=failed.append) == "c.test"
    assert failed == [A, B]
    failed.clear()
    with pytest.raises(AllTargetsFailed):
        await try_targets([A, B], attempt, on_failure=failed.append)
    assert failed == [A, B]
