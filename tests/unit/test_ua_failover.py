"""RFC 3263 §4.3 failover of requests other than REGISTER, in the UA core on a virtual clock.

The I/O shell tells the core how many located targets a next hop has (``ua.target_count``)
and sends each attempt to the first target that has not failed; here the simulated network
plays "the first target" by dropping every transmission of the first attempt's branch.
"""

from __future__ import annotations

from typing import Any

import pytest

from sip import invite as inv
from sip.message import Request, Response, make_response
from sip.registration import RegistrationFailed
from sip.ua import MAX_TARGET_FAILOVERS, OptionsResult, Peer, UserAgent
from tests.unit.test_ua import SDP_A, FakePeer, SimNet, auto_answer, make_ua


def requests_to(net: SimNet, method: str) -> list[tuple[float, str, str, str, bool]]:
    return net.sent_lines(f"{method} sip:")


def drop_attempts(net: SimNet, count: int) -> list[str]:
    """Drop every transmission of the first ``count`` branches of INVITE/OPTIONS requests
    (and their CANCELs); returns the branches seen, in order."""
    branches: list[str] = []

    def drop(msg: Request | Response, src: Peer, dst: Peer) -> bool:
        if not isinstance(msg, Request) or msg.method not in ("INVITE", "OPTIONS", "CANCEL"):
            return False
        branch = msg.top_via.branch or ""
        if msg.method != "CANCEL" and branch not in branches:
            branches.append(branch)
        return branch in branches[:count]

    net.drop = drop
    return branches


def caller_and_callee(targets: int, *, answer: bool = True) -> tuple[SimNet, UserAgent, UserAgent]:
    net = SimNet()
    alice = make_ua("10.0.0.1", "alice")
    bob = make_ua("10.0.0.2", "bob")
    alice.target_count = lambda peer: targets
    net.add(alice)
    if answer:
        net.add(bob, auto_answer(net, bob))
    else:

        def ring_only(ev: Any) -> None:
            if isinstance(ev, inv.IncomingCall):
                ev.call.ringing(net.now)

        net.add(bob, ring_only)
    return net, alice, bob


def test_timed_out_invite_is_sent_to_the_next_target_as_a_new_transaction():
    net, alice, bob = caller_and_callee(targets=2)
    branches = drop_attempts(net, 1)
    call = alice.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    assert net.run(lambda: bool(net.of(alice, inv.CallAnswered)), max_time=120)
    assert not net.of(alice, inv.CallFailed)
    assert len(branches) == 2 and branches[0] != branches[1]
    # the callee got exactly the second attempt: same Call-ID and CSeq, new branch
    incoming = net.of(bob, inv.IncomingCall)
    assert len(incoming) == 1
    invite = incoming[0].call.invite
    assert invite is not None
    assert invite.call_id == call.call_id
    assert invite.cseq.seq == 1 and invite.cseq.method == "INVITE"
    assert invite.top_via.branch == branches[1]
    # the retry came after Timer B of the first attempt (64*T1), not before
    first_two = [w[0] for w in requests_to(net, "INVITE") if not w[4]]
    assert first_two[0] >= 64 * alice.timers.t1
    # the call works: the ACK and BYE go through
    call.hangup(net.now)
    assert net.run(lambda: bool(net.of(bob, inv.CallEnded)), max_time=60)


@pytest.mark.parametrize(
    ("targets", "attempts"),
    [(1, 1), (3, 3), (20, MAX_TARGET_FAILOVERS + 1)],
    ids=["no-other-target", "each-target-once", "capped"],
)
def test_when_no_target_answers_the_call_fails_with_408(targets, attempts):
    net, alice, _bob = caller_and_callee(targets=targets)
    branches = drop_attempts(net, 100)
    alice.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    assert net.run(lambda: bool(net.of(alice, inv.CallFailed)), max_time=1000)
    assert [f.status for f in net.of(alice, inv.CallFailed)] == [408]
    assert len(branches) == attempts


def test_cancel_after_failover_matches_the_new_branch():
    net, alice, bob = caller_and_callee(targets=2, answer=False)
    branches = drop_attempts(net, 1)
    call = alice.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    assert net.run(lambda: bool(net.of(alice, inv.CallRinging)), max_time=120)
    call.cancel(net.now)
    assert net.run(lambda: bool(net.of(alice, inv.CallEnded)), max_time=60)
    assert call.final_status == 487  # the callee matched the CANCEL to the INVITE it had
    assert net.of(bob, inv.CallEnded)
    cancels = requests_to(net, "CANCEL")
    assert cancels and not any(lost for *_, lost in cancels)  # not sent on the old branch
    assert len(branches) == 2


def test_options_fails_over_too():
    net, alice, _bob = caller_and_callee(targets=2)
    drop_attempts(net, 1)
    alice.options("sip:bob@10.0.0.2", net.now)
    assert net.run(lambda: bool(net.of(alice, OptionsResult)), max_time=120)
    assert [r.status for r in net.of(alice, OptionsResult)] == [200]


def test_a_target_that_answered_is_not_failed_over():
    """A provisional response shows the target is alive: a later timeout is final (§4.3
    fails over only when no response came)."""
    net = SimNet()
    alice = make_ua("10.0.0.1", "alice")
    alice.target_count = lambda peer: 3
    net.add(alice)

    def trying_only(msg: Any, src: Peer, n: SimNet) -> list[tuple[Response, Peer]]:
        if isinstance(msg, Request) and msg.method == "OPTIONS":
            return [(make_response(msg, 100), src)]
        return []

    peer = net.add_peer(FakePeer("10.0.0.9", 5060, trying_only))
    alice.options("sip:carol@10.0.0.9", net.now)
    assert net.run(lambda: bool(net.of(alice, OptionsResult)), max_time=120)
    assert [r.status for r in net.of(alice, OptionsResult)] == [408]
    assert len({m.top_via.branch for m in peer.received if isinstance(m, Request)}) == 1


def test_transport_error_fails_over_at_once():
    net, alice, _bob = caller_and_callee(targets=2)
    alice.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    alice.messages_to_send()  # the first attempt "could not be sent"
    (tx,) = alice.transactions.client_transactions()
    first_branch = tx.request.top_via.branch
    alice.transport_error(tx, net.now)
    retries = alice.messages_to_send()
    assert len(retries) == 1 and isinstance(retries[0].message, Request)
    assert retries[0].message.method == "INVITE"
    assert retries[0].message.top_via.branch != first_branch
    for out in retries:
        net.send(out.message, ("10.0.0.1", 5060), out.peer)
    assert net.run(lambda: bool(net.of(alice, inv.CallAnswered)), max_time=30)
    assert net.now < 1.0  # no timer was waited for


def test_register_is_not_failed_over_by_the_core():
    """The I/O shell fails REGISTER over itself (sip.aio.AsyncUserAgent.register)."""
    net = SimNet()
    alice = make_ua("10.0.0.1", "alice", outbound_proxy="sip:10.0.0.5")
    alice.target_count = lambda peer: 3
    net.add(alice)
    silent = net.add_peer(FakePeer("10.0.0.5", 5060, lambda *a: []))
    alice.register(net.now)
    assert net.run(lambda: bool(net.of(alice, RegistrationFailed)), max_time=60)
    assert [f.status for f in net.of(alice, RegistrationFailed)] == [408]
    assert len({m.top_via.branch for m in silent.received if isinstance(m, Request)}) == 1


@pytest.mark.parametrize(("targets", "expected"), [(2, 200), (1, 503)])
def test_503_sends_the_request_to_the_next_target(targets, expected):
    """§4.3: a 503 Service Unavailable means the element failed: the next one is tried (with
    a new branch); with no other target the 503 is the outcome."""
    net = SimNet()
    alice = make_ua("10.0.0.1", "alice")
    alice.target_count = lambda peer: targets
    net.add(alice)
    branches: list[str] = []

    def unavailable_once(msg: Any, src: Peer, n: SimNet) -> list[tuple[Response, Peer]]:
        if not isinstance(msg, Request) or msg.method != "OPTIONS":
            return []
        branch = msg.top_via.branch or ""
        if branch not in branches:
            branches.append(branch)
        return [(make_response(msg, 503 if branch == branches[0] else 200), src)]

    net.add_peer(FakePeer("10.0.0.9", 5060, unavailable_once))
    alice.options("sip:carol@10.0.0.9", net.now)
    assert net.run(lambda: bool(net.of(alice, OptionsResult)), max_time=60)
    assert [r.status for r in net.of(alice, OptionsResult)] == [expected]
    assert len(branches) == targets
