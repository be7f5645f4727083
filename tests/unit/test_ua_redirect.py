"""RFC 3261 §8.1.3.4: an INVITE redirected by a 3xx is sent to the Contact, on a virtual clock."""

from __future__ import annotations

from typing import Any

import pytest

from sip import invite as inv
from sip.message import Request, Response, make_response, new_tag
from sip.ua import MAX_REDIRECTS, CallRedirected, Peer
from tests.unit.test_ua import SDP_A, FakePeer, SimNet, auto_answer, make_ua


def redirector(host: str, *contacts: str, status: int = 302) -> FakePeer:
    """A redirect server at ``host``:5060 answering every INVITE with ``status`` and
    ``contacts`` (it ignores the ACK)."""

    def handle(msg: Any, src: Peer, net: SimNet) -> list[tuple[Response, Peer]]:
        if not isinstance(msg, Request) or msg.method != "INVITE":
            return []
        resp = make_response(msg, status, to_tag=new_tag())
        for contact in contacts:
            resp.headers.add("Contact", contact)
        return [(resp, src)]

    return FakePeer(host, 5060, handle)


def network(*redirectors: FakePeer) -> tuple[SimNet, Any, Any]:
    net = SimNet()
    alice = make_ua("10.0.0.1", "alice")
    bob = make_ua("10.0.0.3", "bob")
    net.add(alice)
    net.add(bob, auto_answer(net, bob))
    for peer in redirectors:
        net.add_peer(peer)
    return net, alice, bob


def test_302_is_followed_to_the_contact_with_the_next_cseq():
    moved = redirector("10.0.0.2", "<sip:bob@10.0.0.3>")
    net, alice, bob = network(moved)
    call = alice.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    assert net.run(lambda: bool(net.of(alice, inv.CallAnswered)), max_time=30)
    assert not net.of(alice, inv.CallFailed)
    (redirected,) = net.of(alice, CallRedirected)
    assert (redirected.status, redirected.target) == (302, "sip:bob@10.0.0.3")
    first = moved.received[0]
    assert isinstance(first, Request)
    (incoming,) = net.of(bob, inv.IncomingCall)
    second = incoming.call.invite
    assert second is not None and second.uri == "sip:bob@10.0.0.3"
    assert second.call_id == first.call_id == call.call_id
    assert second.from_addr.tag == first.from_addr.tag
    assert str(second.to_addr.uri) == str(first.to_addr.uri) and second.to_addr.tag is None
    assert second.cseq.seq == first.cseq.seq + 1
    assert second.body == first.body
    assert second.top_via.branch != first.top_via.branch
    # the 3xx was ACKed to the redirect server (the transaction layer does it)
    assert [m.method for m in moved.received if isinstance(m, Request)] == ["INVITE", "ACK"]
    # the dialog is with bob: the BYE goes to him
    call.hangup(net.now)
    assert net.run(lambda: bool(net.of(bob, inv.CallEnded)), max_time=30)


def test_highest_q_contact_is_tried_first():
    peer = redirector(
        "10.0.0.2", "<sip:bob@10.0.0.9>;q=0.2", "<sip:bob@10.0.0.3>;q=0.9", "<tel:+15550100>"
    )
    net, alice, _bob = network(peer)
    alice.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    assert net.run(lambda: bool(net.of(alice, inv.CallAnswered)), max_time=30)
    assert [r.target for r in net.of(alice, CallRedirected)] == ["sip:bob@10.0.0.3"]


def test_redirect_loop_ends_the_call_with_the_3xx():
    """Two redirect servers sending the call to each other: each target is tried once."""
    net, alice, _bob = network(
        redirector("10.0.0.2", "<sip:bob@10.0.0.4>"),
        redirector("10.0.0.4", "<sip:bob@10.0.0.2>"),
    )
    alice.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    assert net.run(lambda: bool(net.of(alice, inv.CallFailed)), max_time=30)
    assert [f.status for f in net.of(alice, inv.CallFailed)] == [302]
    assert [r.target for r in net.of(alice, CallRedirected)] == ["sip:bob@10.0.0.4"]


def test_redirect_chain_is_limited():
    hosts = [f"10.0.1.{n}" for n in range(1, MAX_REDIRECTS + 3)]
    peers = [redirector(h, f"<sip:bob@{nxt}>") for h, nxt in zip(hosts, hosts[1:], strict=False)]
    net, alice, _bob = network(*peers)
    alice.invite(f"sip:bob@{hosts[0]}", SDP_A, net.now)
    assert net.run(lambda: bool(net.of(alice, inv.CallFailed)), max_time=60)
    assert [f.status for f in net.of(alice, inv.CallFailed)] == [302]
    assert len(net.of(alice, CallRedirected)) == MAX_REDIRECTS


@pytest.mark.parametrize(
    ("status", "contacts"),
    [(302, ()), (305, ("<sip:proxy@10.0.0.3>",)), (380, ("<sip:bob@10.0.0.3>",))],
    ids=["302-without-contact", "305-use-proxy", "380-alternative-service"],
)
def test_3xx_not_followed_fails_the_call(status, contacts):
    net, alice, bob = network(redirector("10.0.0.2", *contacts, status=status))
    alice.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    assert net.run(lambda: bool(net.of(alice, inv.CallFailed)), max_time=30)
    assert [f.status for f in net.of(alice, inv.CallFailed)] == [status]
    assert not net.of(alice, CallRedirected) and not net.of(bob, inv.IncomingCall)


def test_cancelled_call_does_not_follow_a_redirect():
    net, alice, bob = network(redirector("10.0.0.2", "<sip:bob@10.0.0.3>"))
    net.delay = 0.5  # the 302 is still on its way when the caller hangs up
    call = alice.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(lambda: net.now >= 0.5, max_time=1)
    assert net.queue  # the 302 is on its way
    call.cancel(net.now)
    net.run(max_time=40)
    assert not net.of(alice, CallRedirected)
    assert not net.of(bob, inv.IncomingCall)
    assert not net.of(alice, inv.CallAnswered)
