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

from .test_sip_network_change_lab import BOB, BOB_NEW, SipLan, hosts_of, pytestmark

__all__ = ["pytestmark"]


def test_register_follows_a_renumbered_interface(tmp_path: Path) -> None:
    with Lab(tmp_path) as lab:
        net = SipLan(lab, tmp_path)
        bob = SoftphoneProcess(net.bob, net.env, *net.args("bob"), "register")
        try:
            assert bob.wait_for("staying registered"), bob.text
            before = net.bob_contacts()
            assert hosts_of(before) == [BOB], before
            net.renumber_bob()
            moved = bob.search(r"network changed: re-registered as (\S+)")
            assert moved is not None, bob.text
            assert f"@{BOB_NEW}:" in moved.group(1), bob.text
            after = net.wait_contacts(lambda c: hosts_of(c) == [BOB_NEW])
            assert hosts_of(after) == [BOB_NEW], (after, bob.text)
            bob.stop()  # SIGTERM: unregister and quit
            status, report = bob.finish()
            gone = net.wait_contacts(lambda c: c == [])
        finally:
            bob.stop()
    assert status == 0, bob.text
    assert report["register"]["unregistered"] is True, bob.text
    assert gone == [], gone
