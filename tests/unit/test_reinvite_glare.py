"""A re-INVITE from the peer while our UPDATE with an offer awaits its answer (RFC 3311 §5.2,
RFC 6337 §3.1, RFC 3261 §14.1/§14.2): 491, our UPDATE completes normally, and the peer's retry
is then served like any re-INVITE. Two of our sans-I/O user agents on the simulated network
(virtual clock)."""

from __future__ import annotations

import random
from typing import Any

from sip import invite as inv
from sip.message import Request, Response
from tests.unit.test_ua import SDP_A, SDP_B, _connected, pair

NEW_A = SDP_A.replace(b"o=a 1 1", b"o=a 1 2").replace(b"4000", b"4002")  # alice's UPDATE offer
BOB_ANSWER = SDP_B.replace(b"o=b 1 1", b"o=b 1 2").replace(b"5000", b"5004")


class _LateRetry(random.Random):
    """Every §14.1 glare delay at its longest, so the retry comes after our UPDATE settled."""

    def randint(self, a: int, b: int) -> int:
        return b


def _is_update_200(msg: Request | Response) -> bool:
    return isinstance(msg, Response) and msg.status == 200 and msg.cseq.method == "UPDATE"


def _glare_setup(net: Any, a: Any, b: Any) -> tuple[inv.Call, inv.Call, list[bytes]]:
    """A call alice -> bob; bob answers offers with BOB_ANSWER; alice records the answers
    she takes from ACKs."""
    taken: list[bytes] = []
    a.config.answer_handler = lambda call, sdp, ctype: taken.append(sdp)
    b.config.offer_handler = lambda call, offer, ctype: BOB_ANSWER
    call, bcall = _connected(net, a, b)
    bcall.rng = _LateRetry()
    return call, bcall, taken


def _update_pending_at_alice(
    net: Any, a: Any, b: Any, call: inv.Call, offer: bytes = NEW_A
) -> None:
    """alice sends an UPDATE with ``offer`` (none: a body-less UPDATE); bob's first 200 is
    lost, so it stays outstanding until alice's retransmission (T1) gets the 200 again."""
    dropped: list[Response] = []

    def drop(msg: Request | Response, src: Any, dst: Any) -> bool:
        if _is_update_200(msg) and not dropped:
            assert isinstance(msg, Response)
            dropped.append(msg)
            return True
        return False

    net.drop = drop
    call.update(offer, net.now)
    net.run(lambda: bool(dropped))
    assert not net.of(a, inv.CallUpdated)  # alice's UPDATE is still unanswered


def test_offerless_reinvite_during_our_update_gets_491_then_retry_succeeds():
    net, a, b = pair()
    call, bcall, taken = _glare_setup(net, a, b)
    _update_pending_at_alice(net, a, b, call)
    bcall.reinvite(None, net.now)  # bob asks alice for an offer while hers is outstanding
    net.run(lambda: bool(net.sent_lines("SIP/2.0 491")))
    glare = net.sent_lines("SIP/2.0 491")
    assert len(glare) == 1 and glare[0][1] == "10.0.0.1:5060"  # alice refused bob's INVITE
    assert not [w for w in net.wire if w[3].startswith("SIP/2.0 200") and w[1] == "10.0.0.1:5060"]
    # alice's UPDATE then completes normally: bob's answer applied
    net.run(lambda: bool(net.of(a, inv.CallUpdated)))
    upd = net.of(a, inv.CallUpdated)
    assert [(u.method, u.local, u.sdp) for u in upd] == [("UPDATE", True, BOB_ANSWER)]
    assert call.local_sdp == NEW_A and call.remote_sdp == BOB_ANSWER
    assert len([w for w in net.wire if w[3].startswith("INVITE ")]) == 2  # no retry yet
    # bob's retry (still offer-less, §14.1) comes after: alice offers her CURRENT SDP in the
    # 2xx and applies the answer from the ACK
    net.run(lambda: any(u.method == "ACK" for u in net.of(a, inv.CallUpdated)))
    assert len([w for w in net.wire if w[3].startswith("INVITE ")]) == 3
    assert len(net.sent_lines("SIP/2.0 491")) == 1
    b_upd = [u for u in net.of(b, inv.CallUpdated) if u.method == "INVITE" and u.local]
    assert [u.sdp for u in b_upd] == [NEW_A]  # the offer bob got in alice's 2xx
    assert taken == [BOB_ANSWER]
    assert [(u.method, u.local, u.sdp) for u in net.of(a, inv.CallUpdated)][1:] == [
        ("ACK", True, BOB_ANSWER)
    ]
    assert call.remote_sdp == BOB_ANSWER and bcall.remote_sdp == NEW_A
    assert call.state is inv.CallState.CONNECTED and bcall.state is inv.CallState.CONNECTED
    call.hangup(net.now)
    net.run()
    assert a.idle and b.idle


def test_reinvite_with_offer_during_our_update_gets_491():
    net, a, b = pair()
    call, bcall, taken = _glare_setup(net, a, b)
    offers: list[bytes] = []

    def answer(c: inv.Call, offer: bytes, ctype: str | None) -> bytes:
        offers.append(offer)
        return NEW_A

    a.config.offer_handler = answer
    _update_pending_at_alice(net, a, b, call)
    held = SDP_B + b"a=sendonly\r\n"
    bcall.reinvite(held, net.now)
    net.run(lambda: bool(net.sent_lines("SIP/2.0 491")))
    assert net.sent_lines("SIP/2.0 491")[0][1] == "10.0.0.1:5060"
    assert offers == []  # alice did not touch bob's offer while hers was outstanding
    net.run(lambda: bool(net.of(a, inv.CallUpdated)))
    assert net.of(a, inv.CallUpdated)[0].sdp == BOB_ANSWER
    # the retry, after alice's UPDATE settled, is answered
    net.run(lambda: len(net.of(a, inv.CallUpdated)) == 2)
    u = net.of(a, inv.CallUpdated)[1]
    assert (u.method, u.local, u.sdp) == ("INVITE", False, held)
    assert offers == [held] and call.remote_sdp == held
    assert len(net.sent_lines("SIP/2.0 491")) == 1
    assert call.state is inv.CallState.CONNECTED and bcall.state is inv.CallState.CONNECTED


def test_update_with_offer_during_our_update_gets_491():
    net, a, b = pair()
    call, bcall, taken = _glare_setup(net, a, b)
    _update_pending_at_alice(net, a, b, call)
    bcall.update(SDP_B + b"a=sendonly\r\n", net.now)
    net.run(lambda: bool(net.sent_lines("SIP/2.0 491")))
    assert net.sent_lines("SIP/2.0 491")[0][1] == "10.0.0.1:5060"
    net.run(lambda: bool(net.of(a, inv.CallUpdated)))
    assert [(u.method, u.sdp) for u in net.of(a, inv.CallUpdated)] == [("UPDATE", BOB_ANSWER)]
    # bob's UPDATE is retried after the §14.1 delay and answered
    net.run(lambda: any(not u.local for u in net.of(a, inv.CallUpdated)))
    assert call.remote_sdp == SDP_B + b"a=sendonly\r\n"
    assert call.state is inv.CallState.CONNECTED and bcall.state is inv.CallState.CONNECTED


def test_reinvite_during_our_bodyless_update_is_answered():
    """A body-less UPDATE (a target/session refresh) carries no offer: no glare with it."""
    net, a, b = pair()
    call, bcall, taken = _glare_setup(net, a, b)
    _update_pending_at_alice(net, a, b, call, offer=b"")
    bcall.reinvite(None, net.now)
    net.run(lambda: any(u.method == "ACK" for u in net.of(a, inv.CallUpdated)))
    assert not net.sent_lines("SIP/2.0 491")
    assert taken == [BOB_ANSWER]
    assert call.state is inv.CallState.CONNECTED and bcall.state is inv.CallState.CONNECTED
