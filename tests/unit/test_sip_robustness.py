"""Registration robustness and target selection rules (no sockets)."""

from __future__ import annotations

from sip.aio import BINDING_LOST_STATUSES, NAT_UDP_REGISTER_EXPIRES, udp_expires


def test_udp_expires_caps_the_requested_lifetime():
    assert udp_expires(3600, NAT_UDP_REGISTER_EXPIRES) == 600
    assert udp_expires(300, 600) == 300
    assert udp_expires(3600, None) == 3600
    assert udp_expires(3600, 0) == 3600


def test_binding_lost_statuses():
    assert {404, 480, 408} <= BINDING_LOST_STATUSES
    assert 200 not in BINDING_LOST_STATUSES and 486 not in BINDING_LOST_STATUSES
