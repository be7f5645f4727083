"""``softphone register`` (staying registered) follows a new local address (root, real kernel,
real netlink, real Kamailio): the lab of test_sip_network_change_lab.py; bob runs ``register``,
his interface is renumbered, and Kamailio's location table must then hold exactly his new
contact (the old binding removed, RFC 3261 §10.2.2, not left to expire); when he quits, the
binding goes.
"""

from __future__ import annotations

from pathlib import Path

from tests.lab.softphone_lab import SoftphoneProcess
from tests.peers.netns import Lab

from .test_sip_network_change_lab import SipLan, pytestmark

__all__ = ["pytestmark"]


def test_register_follows_a_renumbered_interface(tmp_path: Path) -> None:
    with Lab(tmp_path) as lab:
        net = SipLan(lab, tmp_path)
        bob = SoftphoneProcess(net.bob, net.env, *net.args("bob"), "register")
        try:
            assert bob.wait_for("staying registered"), bob.text
            net.renumber_registered_bob(bob)
            bob.stop()  # SIGTERM: unregister and quit
            status, report = bob.finish()
            gone = net.wait_contacts(lambda c: c == [])
        finally:
            bob.stop()
    assert status == 0, bob.text
    assert report["register"]["unregistered"] is True, bob.text
    assert gone == [], gone
