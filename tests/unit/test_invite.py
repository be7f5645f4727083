"""INVITE sessions through a scripted record-routing, authenticating proxy (RFC 3261 §12-§16,
§22) on the simulated network of test_ua."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from sip import invite as inv
from sip.auth import make_challenge, parse_authorization, verify_authorization
from sip.message import Headers, Request, Response, make_response, new_tag
from sip.ua import Peer, UserAgent
from sip.uri import NameAddr
from tests.unit.test_ua import SDP_A, SDP_B, FakePeer, SimNet, auto_answer, make_ua

PROXY = "10.0.0.5"
# Two entries, one per proxy interface (double record-routing), with parameters that must be
# echoed verbatim in every Route set.
RR_CALLEE_SIDE = f"<sip:{PROXY}:5070;lr;r2=on;ftag=x>"
RR_CALLER_SIDE = f"<sip:{PROXY};lr;r2=on;nat=yes;ftag=x>"


class FakeProxy:
    """A stateless loose-routing proxy (RFC 3261 §16.11) listening on two ports."""

    def __init__(
        self,
        *,
        challenge: tuple[str, ...] = (),
        password: str = "secret",
        realm: str = "example.org",
        record_route: bool = True,
    ) -> None:
        self.challenge = set(challenge)
        self.password = password
        self.realm = realm
        self.record_route = record_route
        self.seen: list[tuple[int, Request]] = []
        self.challenged: set[str] = set()
        self.nonces: list[str] = []
        self._n = itertools.count(1)

    def install(self, net: SimNet) -> None:
        for port in (5060, 5070):
            net.add_peer(
                FakePeer(PROXY, port, lambda m, s, n, port=port: self.handle(m, s, n, port))
            )

    def handle(self, msg: Any, src: Peer, net: SimNet, port: int) -> list[tuple[Any, Peer]]:
        if isinstance(msg, Response):
            return self._response(msg)
        assert isinstance(msg, Request)
        self.seen.append((port, msg))
        branch = msg.top_via.branch or ""
        if msg.method == "ACK" and branch in self.challenged:
            return []  # the ACK for our own 407 (hop by hop)
        if msg.method in self.challenge and msg.method != "ACK":
            auth = msg.headers.get("Proxy-Authorization")
            good = auth is not None and parse_authorization(auth).nonce in self.nonces
            if not good or not verify_authorization(
                auth or "", method=msg.method, password=self.password
            ):
                nonce = f"n{next(self._n)}"
                self.nonces.append(nonce)
                resp = make_response(msg, 407, to_tag=new_tag())
                resp.headers.add("Proxy-Authenticate", make_challenge(self.realm, nonce))
                self.challenged.add(branch)
                return [(resp, src)]
        return self._forward(msg)

    def _forward(self, req: Request) -> list[tuple[Any, Peer]]:
        routes = req.headers.get_all("Route")
        while routes and NameAddr.parse(routes[0]).uri.host == PROXY:
            routes.pop(0)
        branch = "z9hG4bKp" + hashlib.sha1((req.top_via.branch or "").encode()).hexdigest()[:12]
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP {PROXY}:5060;branch={branch}")
        for name, value in req.headers.items():
            if name in ("Route", "Max-Forwards"):
                continue
            h.add(name, value)
        for r in routes:
            h.add("Route", r)
        h.add("Max-Forwards", str(int(req.headers.get("Max-Forwards") or "70") - 1))
        if self.record_route and req.method == "INVITE" and req.to_addr.tag is None:
            h.add("Record-Route", RR_CALLEE_SIDE)
            h.add("Record-Route", RR_CALLER_SIDE)
        fwd = Request(req.method, req.uri, h, req.body)
        target = NameAddr.parse(routes[0]).uri if routes else req.request_uri
        return [(fwd, Peer("udp", target.host, target.port or 5060))]

    def _response(self, resp: Response) -> list[tuple[Any, Peer]]:
        vias = resp.headers.get_all("Via")
        h = Headers()
        for name, value in resp.headers.items():
            if name != "Via":
                h.add(name, value)
        rebuilt = Headers()
        for v in vias[1:]:
            rebuilt.add("Via", v)
        for name, value in h.items():
            rebuilt.add(name, value)
        out = Response(resp.status, resp.reason, rebuilt, resp.body)
        nxt = out.top_via
        host = nxt.received or nxt.host
        port = nxt.rport or nxt.port or 5060
        return [(out, Peer("udp", host, port))]

    def methods_seen(self) -> list[str]:
        return [r.method for _, r in self.seen]


def topology(**proxy_kw: Any) -> tuple[SimNet, UserAgent, UserAgent, FakeProxy]:
    net = SimNet()
    proxy = FakeProxy(**proxy_kw)
    proxy.install(net)
    a = make_ua("10.0.0.1", "alice", password="secret", outbound_proxy=f"sip:{PROXY}")
    b = make_ua("10.0.0.2", "bob", password="secret", outbound_proxy=f"sip:{PROXY}")
    net.add(a)
    net.add(b, auto_answer(net, b))
    return net, a, b, proxy


def connect(net: SimNet, a: UserAgent, b: UserAgent) -> tuple[inv.Call, inv.Call]:
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(lambda: bool(net.of(b, inv.CallConfirmed) or net.of(a, inv.CallFailed)))
    assert net.of(b, inv.CallConfirmed), net.kinds(a)
    return call, net.of(b, inv.IncomingCall)[0].call


def bob_does(net: SimNet, b: UserAgent, action: Callable[[inv.Call], object]) -> None:
    """Instead of auto-answering, bob applies ``action`` to each incoming call."""

    def handler(event: Any) -> None:
        if isinstance(event, inv.IncomingCall):
            action(event.call)

    net.handlers[id(b)] = handler


def invite_until_ringing(net: SimNet, a: UserAgent) -> inv.Call:
    """Alice calls bob@10.0.0.2; returns once she heard it ring."""
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(lambda: bool(net.of(a, inv.CallRinging)))
    return call


def ringing_call(net: SimNet, a: UserAgent, b: UserAgent, **ringing: Any) -> inv.Call:
    """Alice calls bob, who only rings (with ``ringing`` arguments); once alice heard it."""
    bob_does(net, b, lambda call: call.ringing(net.now, **ringing))
    return invite_until_ringing(net, a)


def test_outbound_proxy_preloaded_route():
    net, a, b, proxy = topology(record_route=False)
    call, bcall = connect(net, a, b)
    port, first = proxy.seen[0]
    assert first.method == "INVITE" and first.uri == "sip:bob@10.0.0.2"
    assert first.headers.get_all("Route") == [f"<sip:{PROXY};lr>"]
    assert first.headers.get("Max-Forwards") == "70"
    assert first.headers.get("User-Agent")
    assert "INVITE" in ",".join(first.headers.get_all("Allow"))
    # without Record-Route the BYE goes straight to the remote target
    assert call.dialog is not None and call.dialog.route_set == []
    n = len(proxy.seen)
    call.hangup(net.now)
    net.run()
    assert "BYE" not in [r.method for _, r in proxy.seen[n:]]
    assert net.of(b, inv.CallEnded)[0].reason == "remote-bye"


def test_double_record_route_is_honoured_both_ways():
    net, a, b, proxy = topology()
    call, bcall = connect(net, a, b)
    assert call.dialog is not None and bcall.dialog is not None
    assert call.dialog.route_set == [RR_CALLER_SIDE, RR_CALLEE_SIDE]
    assert bcall.dialog.route_set == [RR_CALLEE_SIDE, RR_CALLER_SIDE]
    # the ACK for the 2xx and the BYE both go through the proxy, Route values verbatim
    acks = [(p, r) for p, r in proxy.seen if r.method == "ACK"]
    assert acks and acks[0][0] == 5060
    assert acks[0][1].headers.get_all("Route") == [RR_CALLER_SIDE, RR_CALLEE_SIDE]
    bcall.hangup(net.now)
    net.run()
    byes = [(p, r) for p, r in proxy.seen if r.method == "BYE"]
    assert len(byes) == 1
    port, bye = byes[0]
    assert port == 5070  # callee side interface
    assert bye.headers.get_all("Route") == [RR_CALLEE_SIDE, RR_CALLER_SIDE]
    assert bye.uri == "sip:alice@10.0.0.1:5060"
    assert [e.reason for e in net.of(a, inv.CallEnded)] == ["remote-bye"]


def test_invite_407_is_answered_with_credentials_once():
    net, a, b, proxy = topology(challenge=("INVITE",))
    call, bcall = connect(net, a, b)
    invites = [r for _, r in proxy.seen if r.method == "INVITE"]
    assert len(invites) == 2
    first, second = invites
    assert "Proxy-Authorization" not in first.headers
    assert "Proxy-Authorization" in second.headers
    assert second.cseq.seq == first.cseq.seq + 1
    assert second.call_id == first.call_id
    assert second.from_addr.tag == first.from_addr.tag
    assert second.top_via.branch != first.top_via.branch
    # the 407 was ACKed by the INVITE transaction on the same branch
    acks = [r for _, r in proxy.seen if r.method == "ACK"]
    assert acks[0].top_via.branch == first.top_via.branch
    assert call.state is inv.CallState.CONNECTED
    assert call.dialog is not None and call.dialog.local_seq == second.cseq.seq


def test_invite_with_wrong_password_fails_after_one_retry():
    net, a, b, proxy = topology(challenge=("INVITE",), password="other")
    a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(lambda: bool(net.of(a, inv.CallFailed)), max_time=40)
    assert [f.status for f in net.of(a, inv.CallFailed)] == [407]
    assert proxy.methods_seen().count("INVITE") == 2


def test_in_dialog_requests_authenticate():
    net, a, b, proxy = topology()
    call, bcall = connect(net, a, b)
    proxy.challenge = {"INVITE", "BYE"}
    call.reinvite(SDP_A + b"a=sendonly\r\n", net.now)
    net.run(lambda: bool(net.of(a, inv.CallUpdated) or net.of(a, inv.CallUpdateFailed)))
    assert net.of(a, inv.CallUpdated), net.kinds(a)
    reinvites = [r for _, r in proxy.seen if r.method == "INVITE" and r.to_addr.tag]
    assert len(reinvites) == 2 and "Proxy-Authorization" in reinvites[1].headers
    assert reinvites[1].cseq.seq == reinvites[0].cseq.seq + 1
    call.hangup(net.now)
    net.run()
    byes = [r for _, r in proxy.seen if r.method == "BYE"]
    assert len(byes) == 2 and "Proxy-Authorization" in byes[1].headers
    assert [e.reason for e in net.of(b, inv.CallEnded)] == ["remote-bye"]


def test_target_refresh_by_reinvite_changes_bye_request_uri():
    net, a, b, proxy = topology(record_route=False)
    call, bcall = connect(net, a, b)
    # bob moves: his re-INVITE carries a new Contact
    b.public_host, b.public_port = "10.0.0.2", 5062
    bcall.reinvite(SDP_B, net.now)
    net.run(lambda: bool(net.of(b, inv.CallUpdated)))
    assert call.dialog is not None
    assert call.dialog.remote_target == "sip:bob@10.0.0.2:5062"
    bye = call.dialog.create_request("BYE")
    assert bye.uri == "sip:bob@10.0.0.2:5062"


def test_cancel_through_proxy_carries_same_branch_and_route():
    net, a, b, proxy = topology()
    call = ringing_call(net, a, b)
    call.cancel(net.now)
    net.run()
    invite = next(r for _, r in proxy.seen if r.method == "INVITE")
    cancel = next(r for _, r in proxy.seen if r.method == "CANCEL")
    assert cancel.top_via.branch == invite.top_via.branch
    assert cancel.uri == invite.uri
    assert cancel.cseq.seq == invite.cseq.seq and cancel.cseq.method == "CANCEL"
    assert cancel.headers.get_all("Route") == invite.headers.get_all("Route")
    assert cancel.to_addr.tag is None
    assert call.final_status == 487
    assert [e.reason for e in net.of(b, inv.CallEnded)] == ["remote-cancel"]


def test_uas_sends_100_then_ringing_with_contact_and_record_route():
    net, a, b, proxy = topology()
    connect(net, a, b)
    lines = [w[3] for w in net.wire if w[1].startswith("10.0.0.2")]
    statuses = [ln.split()[1] for ln in lines if ln.startswith("SIP/2.0")]
    assert statuses[:3] == ["100", "180", "200"]


@pytest.mark.parametrize("status", [486, 603, 480])
def test_failure_statuses_are_reported(status):
    net, a, b, proxy = topology()
    bob_does(net, b, lambda call: call.reject(net.now, status))
    a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run()
    failed = net.of(a, inv.CallFailed)
    assert [f.status for f in failed] == [status]
    assert failed[0].call.state is inv.CallState.TERMINATED


def test_hangup_of_unanswered_incoming_call_declines():
    net, a, b, proxy = topology()
    bob_does(net, b, lambda call: call.hangup(net.now))
    a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run()
    assert [f.status for f in net.of(a, inv.CallFailed)] == [603]


def test_bye_during_early_dialog_from_callee_side_is_answered():
    """A BYE for an INVITE that is still ringing ends it (the INVITE gets 487)."""
    net, a, b, proxy = topology()
    call = ringing_call(net, a, b)
    assert call.dialog is not None
    bye = call.dialog.create_request("BYE")
    a.send_request(bye, lambda r, t: None, net.now, call.dialog.next_hop())
    net.run()
    assert [e.reason for e in net.of(b, inv.CallEnded)] == ["remote-bye"]
    assert [f.status for f in net.of(a, inv.CallFailed)] == [487]


def test_offerless_invite_gets_offer_in_2xx_and_answers_in_ack():
    net, a, b, proxy = topology(record_route=False)
    a.config.offer_handler = lambda call, offer, ctype: SDP_A
    call = a.invite("sip:bob@10.0.0.2", b"", net.now)
    net.run(lambda: bool(net.of(b, inv.CallConfirmed)))
    assert net.of(a, inv.CallAnswered)[0].sdp == SDP_B  # the offer
    assert net.of(b, inv.CallConfirmed)[0].sdp == SDP_A  # our answer, in the ACK
    assert call.local_sdp == SDP_A


def test_merged_request_is_answered_482():
    """§8.2.2.2: the same INVITE arriving over two paths (other branch) gets 482."""
    net = SimNet()
    b = make_ua("10.0.0.2", "bob")
    net.add(b, lambda ev: ev.call.ringing(net.now) if isinstance(ev, inv.IncomingCall) else None)
    got: list[Response] = []

    def collect(msg: Any, src: Peer, n: SimNet) -> list[Any]:
        got.append(msg)
        return []

    net.add_peer(FakePeer("10.0.0.9", 5060, collect))

    def invite(branch: str) -> bytes:
        return (
            "INVITE sip:bob@10.0.0.2 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK{branch}\r\n"
            "From: <sip:x@10.0.0.9>;tag=f1\r\nTo: <sip:bob@10.0.0.2>\r\n"
            "Call-ID: merged-1\r\nCSeq: 5 INVITE\r\nMax-Forwards: 70\r\n"
            "Contact: <sip:x@10.0.0.9>\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    b.receive(invite("one"), Peer("udp", "10.0.0.9", 5060), net.now)
    b.receive(invite("two"), Peer("udp", "10.0.0.9", 5060), net.now)
    net.run(max_time=1)
    by_branch = {(r.top_via.branch, r.status) for r in got}
    assert ("z9hG4bKtwo", 482) in by_branch
    assert ("z9hG4bKone", 180) in by_branch
    assert len(net.of(b, inv.IncomingCall)) == 1


def test_update_in_early_dialog():
    """RFC 3311: the caller may UPDATE the session while the call is still ringing."""
    net, a, b, proxy = topology()
    call = ringing_call(net, a, b, sdp=SDP_B)
    assert call.state is inv.CallState.EARLY
    call.update(SDP_A + b"a=inactive\r\n", net.now)
    net.run(lambda: bool(net.of(a, inv.CallUpdated) or net.of(a, inv.CallUpdateFailed)))
    assert net.of(a, inv.CallUpdated), net.kinds(a)
    assert net.of(b, inv.CallUpdated)[0].sdp == SDP_A + b"a=inactive\r\n"
    update = next(r for _, r in proxy.seen if r.method == "UPDATE")
    assert update.headers.get_all("Route") == [RR_CALLER_SIDE, RR_CALLEE_SIDE]


def test_overlapping_incoming_reinvite_gets_500_with_retry_after():
    """§14.2: a re-INVITE while we still wait for the ACK of the previous one."""
    net, a, b, proxy = topology(record_route=False)
    call, bcall = connect(net, a, b)
    net.drop = lambda msg, src, dst: isinstance(msg, Request) and msg.method == "ACK"
    call.reinvite(SDP_A + b"a=sendonly\r\n", net.now)
    net.run(lambda: bool(net.of(a, inv.CallUpdated)))
    # the ACK was lost: bob still retransmits his 2xx, so a second offer overlaps
    assert bcall.dialog is not None
    second = call.dialog.create_request("INVITE", SDP_A, "application/sdp") if call.dialog else None
    assert second is not None
    got: list[Response] = []
    a.send_request(second, lambda r, t: got.append(r) if r else None, net.now)
    net.run(lambda: any(r.status >= 200 for r in got), max_time=5)
    final = [r for r in got if r.status >= 200][0]
    assert final.status == 500 and final.headers.get("Retry-After") is not None


def test_reinvite_2xx_is_retransmitted_until_acked():
    net, a, b, proxy = topology(record_route=False)
    call, bcall = connect(net, a, b)
    dropped: list[Request] = []

    def drop_first_reinvite_ack(msg: Any, src: Peer, dst: Peer) -> bool:
        if isinstance(msg, Request) and msg.method == "ACK" and msg.cseq.seq > 1 and not dropped:
            dropped.append(msg)
            return True
        return False

    net.drop = drop_first_reinvite_ack
    start = len(net.wire)
    call.reinvite(SDP_A + b"a=sendonly\r\n", net.now)
    net.run(lambda: bool(net.of(b, inv.CallUpdated)))
    net.run(max_time=10)
    oks = [
        w
        for w in net.wire[start:]
        if w[3].startswith("SIP/2.0 200") and w[1].startswith("10.0.0.2")
    ]
    acks = [w for w in net.wire[start:] if w[3].startswith("ACK")]
    assert dropped and len(oks) >= 2 and len(acks) == 2
    assert not net.of(b, inv.CallEnded)  # no BYE: the re-sent ACK arrived


def test_2xx_after_cancel_is_acked_and_byed():
    """§9.1: the CANCEL loses the race; the call that came up is hung up at once."""
    net = SimNet()
    a = net.add(make_ua("10.0.0.1", "alice"))
    seen: list[Request] = []
    invite_box: list[Request] = []

    def late_answerer(msg: Any, src: Peer, n: SimNet) -> list[Any]:
        if not isinstance(msg, Request):
            return []
        seen.append(msg)
        if msg.method == "INVITE":
            invite_box.append(msg)
            return [(make_response(msg, 180, to_tag="t1"), src)]
        if msg.method == "CANCEL":
            ok = make_response(invite_box[0], 200, to_tag="t1")
            ok.headers.add("Contact", "<sip:bob@10.0.0.2>")
            return [(make_response(msg, 200), src), (ok, src)]
        if msg.method == "BYE":
            return [(make_response(msg, 200), src)]
        return []

    net.add_peer(FakePeer("10.0.0.2", 5060, late_answerer))
    call = invite_until_ringing(net, a)
    call.cancel(net.now)
    net.run()
    assert [r.method for r in seen] == ["INVITE", "CANCEL", "ACK", "BYE"]
    assert call.state is inv.CallState.TERMINATED
    assert not net.of(a, inv.CallAnswered)
    assert [e.reason for e in net.of(a, inv.CallEnded)] == ["local-cancel"]


def test_cancelled_invite_without_final_response_is_given_up():
    """§9.1: a UAS that answers the CANCEL but never the INVITE: the call ends 64*T1 later."""
    net = SimNet()
    a = net.add(make_ua("10.0.0.1", "alice"))

    def rude(msg: Any, src: Peer, n: SimNet) -> list[Any]:
        if isinstance(msg, Request) and msg.method == "INVITE":
            return [(make_response(msg, 180, to_tag="t"), src)]
        if isinstance(msg, Request) and msg.method == "CANCEL":
            return [(make_response(msg, 200), src)]
        return []

    net.add_peer(FakePeer("10.0.0.2", 5060, rude))
    call = invite_until_ringing(net, a)
    call.cancel(net.now)
    net.run(lambda: call.state is inv.CallState.TERMINATED, max_time=100)
    assert call.state is inv.CallState.TERMINATED
    assert [e.reason for e in net.of(a, inv.CallEnded)] == ["local-cancel"]


@pytest.mark.parametrize("method", ["INVITE", "UPDATE"])
def test_unacceptable_reoffer_gets_488_and_session_stays(method):
    net, a, b, proxy = topology(record_route=False)
    call, bcall = connect(net, a, b)

    def refuse(c: inv.Call, offer: bytes, ctype: str | None) -> bytes:
        raise ValueError("no common codec")

    b.config.offer_handler = refuse
    if method == "INVITE":
        call.reinvite(SDP_A + b"a=sendonly\r\n", net.now)
    else:
        call.update(SDP_A + b"a=sendonly\r\n", net.now)
    net.run(lambda: bool(net.of(a, inv.CallUpdateFailed)))
    assert [(f.status, f.method) for f in net.of(a, inv.CallUpdateFailed)] == [(488, method)]
    assert call.state is inv.CallState.CONNECTED and bcall.state is inv.CallState.CONNECTED
    assert bcall.remote_sdp == SDP_A  # unchanged
