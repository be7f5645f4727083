"""After a new flow to the proxy, ongoing calls get a target refresh (an UPDATE without a body,
RFC 3311 §5.1 / RFC 3261 §12.2.1.2), on a virtual clock."""

from __future__ import annotations

from typing import Any

from sip import invite as inv
from sip.message import Request
from sip.registration import Registered
from sip.ua import TARGET_REFRESH_TRIES, Peer
from tests.helpers_sip import in_a_call
from tests.unit.test_ua import SimNet


def updates(net: SimNet) -> list[tuple[float, str, str, str, bool]]:
    return net.sent_lines("UPDATE sip:")


def test_registered_again_after_a_flow_failure_refreshes_the_call_target():
    net, alice, bob, _registrar = in_a_call(transport="tcp")
    registered = len(net.of(bob, Registered))
    bob.flow_failed(net.now)
    assert net.run(lambda: len(net.of(bob, Registered)) > registered)
    assert net.run(lambda: bool(updates(net)), max_time=5)
    net.run(max_time=5)
    (update,) = [w for w in updates(net) if w[1] == "10.0.0.2:5060"]
    assert not update[4]
    (acall,) = alice.calls
    (bcall,) = bob.calls
    assert acall.dialog is not None and bcall.dialog is not None
    # alice took bob's Contact of the UPDATE as remote target; neither app saw an update
    assert str(acall.dialog.remote_target) == bcall.dialog.local_contact.strip("<>")
    assert not net.of(alice, inv.CallUpdated) and not net.of(bob, inv.CallUpdated)
    assert acall.state is inv.CallState.CONNECTED and bcall.state is inv.CallState.CONNECTED


def test_a_failed_refresh_is_tried_again_later():
    net, _alice, bob, _registrar = in_a_call(transport="tcp")
    dropped: list[str] = []

    def drop_first_updates(msg: Any, src: Peer, dst: Peer) -> bool:
        if isinstance(msg, Request) and msg.method == "UPDATE":
            branch = msg.top_via.branch or ""
            if branch in dropped or len(dropped) < 2:
                if branch not in dropped:
                    dropped.append(branch)
                return True
        return False

    net.drop = drop_first_updates
    bob.flow_failed(net.now)
    assert net.run(lambda: len({w[0] for w in updates(net) if not w[4]}) >= 1, max_time=300)
    net.run(max_time=5)
    assert len(dropped) == 2  # two tries lost (each a Timer F), the third got through
    assert not bob._refresh_failures


def test_refresh_gives_up_after_its_tries():
    net, _alice, bob, _registrar = in_a_call(transport="tcp")
    branches: set[str] = set()

    def drop_updates(msg: Any, src: Peer, dst: Peer) -> bool:
        if isinstance(msg, Request) and msg.method == "UPDATE":
            branches.add(msg.top_via.branch or "")
            return True
        return False

    net.drop = drop_updates
    bob.flow_failed(net.now)
    net.run(max_time=600)
    assert len(branches) == TARGET_REFRESH_TRIES
    assert bob.calls[0].state is inv.CallState.CONNECTED  # the call itself is left alone


def test_no_refresh_over_udp_or_when_the_peer_does_not_allow_update():
    net, _alice, bob, _registrar = in_a_call(transport="udp")
    bob.flow_failed(net.now)
    net.run(max_time=30)
    assert not updates(net)
    net, _alice, bob, _registrar = in_a_call(transport="tcp")
    bob.calls[0].remote_allow = frozenset({"INVITE", "ACK", "BYE"})
    assert bob.refresh_dialog_targets(net.now) == 0
