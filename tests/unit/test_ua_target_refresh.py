"""After a new flow to the proxy, ongoing calls get a target refresh (an UPDATE without a body,
RFC 3311 §5.1 / RFC 3261 §12.2.1.2), on a virtual clock."""

from __future__ import annotations

from typing import Any

from sip import invite as inv
from sip.message import Request
from sip.registration import Registered
from sip.ua import TARGET_REFRESH_TRIES, Peer
from tests.helpers_sip import in_a_call, register, registering_ua, with_registrar
from tests.unit.test_ua import SDP_A, SimNet, auto_answer, make_ua, pair


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


def acks_lost_until(net: SimNet, gate: list[bool]) -> None:
    """Lose every ACK on ``net`` while ``gate`` is empty."""
    net.drop = lambda msg, src, dst: not gate and isinstance(msg, Request) and msg.method == "ACK"


def test_a_callee_still_waiting_for_its_ack_refreshes_its_target_too():
    """bob answered over TCP, the ACK was lost (RFC 3261 §13.3.1.4: bob waits for it, sending
    his 2xx again), and his flow fails: once registered again he sends the UPDATE although
    the ACK has not come (the dialog is confirmed once the 2xx is sent, §12.1.1; the UPDATE
    has no offer, RFC 3311 §5.1), and the ACK that then comes confirms the call."""
    net = SimNet()
    with_registrar(net)
    alice = net.add(make_ua("10.0.0.1", "alice"))
    bob = registering_ua("10.0.0.2", "bob", transport="tcp")
    net.add(bob, auto_answer(net, bob))
    register(net, bob, 3600)
    gate: list[bool] = []
    acks_lost_until(net, gate)
    alice.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    assert net.run(lambda: bool(net.of(alice, inv.CallAnswered)), max_time=5)
    (bcall,) = bob.calls
    assert bcall.state is inv.CallState.ANSWERED
    bob.flow_failed(net.now)
    assert net.run(lambda: bool(updates(net)), max_time=5)
    assert bcall.state is inv.CallState.ANSWERED  # the UPDATE did not wait for the ACK
    gate.append(True)
    assert net.run(lambda: bool(net.of(bob, inv.CallConfirmed)), max_time=10)
    assert not net.of(bob, inv.CallEnded)


def test_the_2xx_is_sent_again_over_tcp_until_the_ack():
    """§13.3.1.4: the UAS core passes its 2xx to the transport again (T1, doubling to T2)
    over TCP too: the ACK crosses proxies end to end and a hop may lose it. Without that,
    a lost ACK ends a TCP call after 64*T1 ("no-ack")."""
    net = SimNet()
    alice = net.add(make_ua("10.0.0.1", "alice", transport="tcp"))
    bob = make_ua("10.0.0.2", "bob", transport="tcp")
    net.add(bob, auto_answer(net, bob))
    gate: list[bool] = []
    acks_lost_until(net, gate)
    alice.invite("sip:bob@10.0.0.2;transport=tcp", SDP_A, net.now)
    assert net.run(lambda: bool(net.of(alice, inv.CallAnswered)), max_time=5)
    answered_at = net.now
    net.run(max_time=5.0)
    oks = [w[0] - answered_at for w in net.sent_lines("SIP/2.0 200 OK") if w[1] == "10.0.0.2:5060"]
    assert len(oks) >= 4, oks  # the first 200 and again at about 0.5, 1.5, 3.5 s
    gate.append(True)
    assert net.run(lambda: bool(net.of(bob, inv.CallConfirmed)), max_time=10)
    sent = len(net.sent_lines("SIP/2.0 200 OK"))
    net.run(max_time=10)
    assert len(net.sent_lines("SIP/2.0 200 OK")) == sent  # none after the ACK
    assert not net.of(bob, inv.CallEnded)


def test_the_ack_sent_again_goes_to_a_target_the_callee_refreshed_meanwhile():
    """alice's ACK was lost; before bob's 2xx comes again, bob's UPDATE gave alice a new
    target (his old flow is gone). The ACK she sends for the retransmission is built again
    toward the new target (§12.2.1.1), not resent to the old one, which no longer reaches
    bob."""
    net, alice, bob = pair()
    gate: list[bool] = []
    acks_lost_until(net, gate)
    call = alice.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    assert net.run(lambda: bool(net.of(alice, inv.CallAnswered)), max_time=5)
    assert call.dialog is not None
    first_ack = call._ack
    assert first_ack is not None and str(first_ack.uri) == "sip:bob@10.0.0.2:5060"
    call.dialog.remote_target = "sip:bob@10.0.0.2:5060;alias=10.0.0.2~40000~2"
    gate.append(True)
    assert net.run(lambda: bool(net.of(bob, inv.CallConfirmed)), max_time=10)
    acks = [w[3] for w in net.sent_lines("ACK sip:")]
    assert acks[0].startswith("ACK sip:bob@10.0.0.2:5060 "), acks
    assert acks[-1].startswith("ACK sip:bob@10.0.0.2:5060;alias=10.0.0.2~40000~2 "), acks
    again = call._ack
    assert again is not None and again.cseq == first_ack.cseq and again.body == first_ack.body
