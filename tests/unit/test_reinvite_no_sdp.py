"""A re-INVITE without an offer (RFC 3261 §14.1/§14.2, RFC 3264 §8): the UAS offers in its
2xx, the answer comes in the ACK; two of our sans-I/O user agents on the simulated network."""

from __future__ import annotations

from typing import Any

from sip import invite as inv
from sip.message import Request
from tests.unit.test_ua import SDP_A, SDP_B, _connected, pair

HOLD_ANSWER = SDP_A + b"a=sendonly\r\n"


def _offerless(net: Any, a: Any, b: Any, answer: bytes = HOLD_ANSWER):
    """alice re-INVITEs bob without SDP; her answer to bob's 2xx offer is ``answer``."""
    offers: list[bytes] = []

    def answer_offer(call: inv.Call, offer: bytes, ctype: str | None) -> bytes:
        offers.append(offer)
        return answer

    a.config.offer_handler = answer_offer
    call, bcall = _connected(net, a, b)
    return call, bcall, offers


def test_offerless_reinvite_gets_offer_in_2xx_and_answer_from_ack():
    net, a, b = pair()
    made: list[inv.Call] = []
    taken: list[tuple[bytes, str | None]] = []
    new_offer = SDP_B.replace(b"o=b 1 1", b"o=b 1 2").replace(b"5000", b"5002")

    def reoffer(call: inv.Call) -> bytes:
        made.append(call)
        return new_offer

    b.config.reoffer_handler = reoffer
    b.config.answer_handler = lambda call, sdp, ctype: taken.append((sdp, ctype))
    call, bcall, offers = _offerless(net, a, b)
    call.reinvite(None, net.now)
    net.run(lambda: bool(net.of(b, inv.CallUpdated)))
    reinvites = [w for w in net.wire if w[3].startswith("INVITE ")]
    assert len(reinvites) == 2
    # alice got bob's offer in the 2xx and answered it in the ACK
    assert offers == [new_offer]
    upd_a = net.of(a, inv.CallUpdated)
    assert [(u.method, u.local, u.sdp) for u in upd_a] == [("INVITE", True, new_offer)]
    assert call.local_sdp == HOLD_ANSWER and call.remote_sdp == new_offer
    # bob made the offer once and took the ACK's answer
    assert made == [bcall]
    assert taken == [(HOLD_ANSWER, "application/sdp")]
    upd_b = net.of(b, inv.CallUpdated)
    assert [(u.method, u.local, u.sdp) for u in upd_b] == [("ACK", True, HOLD_ANSWER)]
    assert bcall.local_sdp == new_offer and bcall.remote_sdp == HOLD_ANSWER
    assert call.state is inv.CallState.CONNECTED and bcall.state is inv.CallState.CONNECTED
    # the dialog is free for the next exchange
    bcall.reinvite(SDP_B, net.now)
    net.run(lambda: len(net.of(b, inv.CallUpdated)) == 2)
    assert net.of(b, inv.CallUpdated)[1].method == "INVITE"
    call.hangup(net.now)
    net.run()
    assert a.idle and b.idle


def test_default_offer_is_the_unchanged_local_description():
    """Without a reoffer_handler the 2xx repeats our description as it was (same o= version,
    RFC 3264 §8: nothing changed)."""
    net, a, b = pair()
    call, bcall, offers = _offerless(net, a, b, answer=SDP_A)
    call.reinvite(None, net.now)
    net.run(lambda: bool(net.of(b, inv.CallUpdated)))
    assert offers == [SDP_B]
    assert net.of(b, inv.CallUpdated)[0].sdp == SDP_A


def test_ack_without_answer_ends_the_call_with_bye():
    """RFC 3261 §13.3.1.4/§14.2: an ACK without the answer to our 2xx offer: BYE."""
    net, a, b = pair()
    taken: list[bytes] = []
    b.config.answer_handler = lambda call, sdp, ctype: taken.append(sdp)
    call, bcall, _ = _offerless(net, a, b)
    assert call.dialog is not None
    dialog = call.dialog
    real = dialog.create_ack

    def bodiless_ack(seq: int, body: bytes = b"", *args: Any, **kw: Any) -> Request:
        return real(seq)

    dialog.create_ack = bodiless_ack
    call.reinvite(None, net.now)
    net.run(lambda: bool(net.of(a, inv.CallEnded)) and bool(net.of(b, inv.CallEnded)))
    assert [e.reason for e in net.of(b, inv.CallEnded)] == ["no-answer"]
    assert [e.reason for e in net.of(a, inv.CallEnded)] == ["remote-bye"]
    assert taken == []
    assert not net.of(b, inv.CallUpdated)
    assert any(w[3].startswith("BYE ") and w[1].startswith("10.0.0.2") for w in net.wire)
    net.run()
    assert a.idle and b.idle


def test_unusable_answer_in_ack_ends_the_call_with_bye():
    net, a, b = pair()

    def refuse(call: inv.Call, sdp: bytes, ctype: str | None) -> None:
        raise ValueError("no common codec")

    b.config.answer_handler = refuse
    call, bcall, _ = _offerless(net, a, b)
    call.reinvite(None, net.now)
    net.run(lambda: bool(net.of(b, inv.CallEnded)))
    assert [e.reason for e in net.of(b, inv.CallEnded)] == ["bad-answer"]
    net.run()
    assert [e.reason for e in net.of(a, inv.CallEnded)] == ["remote-bye"]


def test_unusable_offer_in_2xx_is_acked_then_byed():
    """RFC 3261 §13.2.2.4: the UAC answers in the ACK anyway, then sends BYE."""
    net, a, b = pair()
    call, bcall, _ = _offerless(net, a, b)

    def refuse(call: inv.Call, offer: bytes, ctype: str | None) -> bytes:
        raise ValueError("unusable")

    a.config.offer_handler = refuse
    call.reinvite(None, net.now)
    net.run(lambda: bool(net.of(a, inv.CallEnded)) and bool(net.of(b, inv.CallEnded)))
    assert [e.reason for e in net.of(a, inv.CallEnded)] == ["bad-offer"]
    assert [e.reason for e in net.of(b, inv.CallEnded)] == ["remote-bye"]
    acks = [w for w in net.wire if w[3].startswith("ACK ")]
    assert len(acks) == 2
    # bob got an answer (our previous description) in that ACK before the BYE
    assert [u.sdp for u in net.of(b, inv.CallUpdated)] == [SDP_A]


def test_offerless_reinvite_without_offer_in_2xx_keeps_the_call():
    """A 2xx without the offer we asked for: logged, ACKed without a body, the call stays."""
    net, a, b = pair()
    b.config.reoffer_handler = lambda call: b""
    call, bcall, offers = _offerless(net, a, b)
    call.reinvite(None, net.now)
    net.run(lambda: bool(net.of(a, inv.CallUpdated)))
    net.run(max_time=40)
    assert offers == []
    assert call.state is inv.CallState.CONNECTED and bcall.state is inv.CallState.CONNECTED


def test_offerless_reinvite_retried_after_glare_stays_offerless():
    """§14.1: after a 491 the retry is the same request: still without an offer."""
    net, a, b = pair(delay=0.05)
    made: list[inv.Call] = []

    def reoffer(call: inv.Call) -> bytes:
        made.append(call)
        return SDP_B

    b.config.reoffer_handler = reoffer
    call, bcall, offers = _offerless(net, a, b, answer=SDP_A)
    call.reinvite(None, net.now)
    bcall.reinvite(SDP_B + b"a=sendonly\r\n", net.now)
    net.run(
        lambda: (
            any(u.method == "ACK" for u in net.of(b, inv.CallUpdated))
            and any(u.local and u.method == "INVITE" for u in net.of(b, inv.CallUpdated))
        ),
        max_time=30,
    )
    assert any(w[3].startswith("SIP/2.0 491") for w in net.wire)
    assert made == [bcall]  # bob offered in a 2xx: alice's retry had no offer
    assert [u.sdp for u in net.of(b, inv.CallUpdated) if u.method == "ACK"] == [SDP_A]
    assert call.state is inv.CallState.CONNECTED and bcall.state is inv.CallState.CONNECTED
