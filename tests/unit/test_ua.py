"""UserAgent core driven on a virtual clock through a simulated network (loss, delay, jitter).

``SimNet`` wires any number of sans-I/O :class:`sip.ua.UserAgent` cores (and scripted fake peers)
back to back: every message goes through ``to_bytes()`` and the parser, can be dropped (random
loss or a filter) and is delivered after a delay. Other unit test modules import it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip import invite as inv
from sip.message import Request, Response, make_response, new_tag, parse_message
from sip.timers import TimerConfig
from sip.ua import OptionsResult, Peer, RequestRejected, UAConfig, UserAgent

SDP_A = (
    b"v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)
SDP_B = (
    b"v=0\r\no=b 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
    b"m=audio 5000 RTP/AVP 0\r\n"
)


@dataclass(order=True)
class _Packet:
    at: float
    seq: int
    data: bytes = field(compare=False)
    dst: Peer = field(compare=False)
    src: Peer = field(compare=False)


class FakePeer:
    """A scripted endpoint: ``handler(message, src_peer, net) -> list[(message, dst_peer)]``."""

    def __init__(self, host: str, port: int, handler: Callable[..., Any]) -> None:
        self.host = host
        self.port = port
        self.handler = handler
        self.received: list[Request | Response] = []


class SimNet:
    def __init__(
        self,
        *,
        loss: float = 0.0,
        delay: float = 0.02,
        jitter: float = 0.0,
        seed: int = 1,
    ) -> None:
        self.now = 0.0
        self.loss = loss
        self.delay = delay
        self.jitter = jitter
        self.rng = random.Random(seed)
        self.nodes: dict[tuple[str, int], UserAgent | FakePeer] = {}
        self.queue: list[_Packet] = []
        self.seq = 0
        self.wire: list[tuple[float, str, str, str, bool]] = []  # time, src, dst, first line, lost
        self.events: dict[int, list[Any]] = {}
        self.handlers: dict[int, Callable[[Any], None]] = {}
        self.drop: Callable[[Request | Response, Peer, Peer], bool] | None = None

    # ---- topology
    def add(self, ua: UserAgent, on_event: Callable[[Any], None] | None = None) -> UserAgent:
        self.nodes[(ua.config.local_host, ua.config.local_port)] = ua
        self.events[id(ua)] = []
        if on_event is not None:
            self.handlers[id(ua)] = on_event
        return ua

    def add_peer(self, peer: FakePeer) -> FakePeer:
        self.nodes[(peer.host, peer.port)] = peer
        return peer

    # ---- transmission
    def send(self, message: Request | Response, src: tuple[str, int], dst: Peer) -> None:
        data = message.to_bytes()
        srcp = Peer(dst.transport, src[0], src[1])
        first = data.split(b"\r\n", 1)[0].decode(errors="replace")
        lost = self.rng.random() < self.loss
        if self.drop is not None and self.drop(message, srcp, dst):
            lost = True
        self.wire.append((self.now, f"{src[0]}:{src[1]}", f"{dst.host}:{dst.port}", first, lost))
        if lost:
            return
        self.seq += 1
        at = self.now + self.delay + self.rng.uniform(0, self.jitter)
        heapq.heappush(self.queue, _Packet(at, self.seq, data, dst, srcp))

    def _collect(self) -> None:
        progress = True
        while progress:
            progress = False
            for addr, node in list(self.nodes.items()):
                if isinstance(node, UserAgent):
                    for out in node.messages_to_send():
                        progress = True
                        self.send(out.message, addr, out.peer)
                    while (ev := node.next_event()) is not None:
                        progress = True
                        self.events[id(node)].append(ev)
                        h = self.handlers.get(id(node))
                        if h is not None:
                            h(ev)

    def _deliver(self, pkt: _Packet) -> None:
        node = self.nodes.get((pkt.dst.host, pkt.dst.port))
        if node is None:
            return
        if isinstance(node, UserAgent):
            node.receive(pkt.data, pkt.src, self.now)
        else:
            msg = parse_message(pkt.data)
            node.received.append(msg)
            for reply, dst in node.handler(msg, pkt.src, self) or []:
                self.send(reply, (node.host, node.port), dst)

    def next_time(self) -> float | None:
        times = [self.queue[0].at] if self.queue else []
        for node in self.nodes.values():
            if isinstance(node, UserAgent):
                t = node.get_timer()
                if t is not None:
                    times.append(t)
        return min(times) if times else None

    def step(self) -> bool:
        self._collect()
        t = self.next_time()
        if t is None:
            return False
        self.now = max(self.now, t)
        while self.queue and self.queue[0].at <= self.now:
            self._deliver(heapq.heappop(self.queue))
            self._collect()
        for node in list(self.nodes.values()):
            if isinstance(node, UserAgent):
                nt = node.get_timer()
                if nt is not None and nt <= self.now:
                    node.handle_timer(self.now)
        self._collect()
        return True

    def run(self, until: Callable[[], bool] | None = None, max_time: float = 120.0) -> bool:
        """Advance until ``until()`` holds (True) or nothing is left / max_time passes."""
        self._collect()
        limit = self.now + max_time
        while True:
            if until is not None and until():
                return True
            t = self.next_time()
            if t is None or t > limit:
                return until() if until is not None else True
            self.step()

    def kinds(self, ua: UserAgent) -> list[str]:
        return [type(e).__name__ for e in self.events[id(ua)]]

    def of(self, ua: UserAgent, kind: type) -> list[Any]:
        return [e for e in self.events[id(ua)] if isinstance(e, kind)]

    def sent_lines(self, contains: str) -> list[tuple[float, str, str, str, bool]]:
        return [w for w in self.wire if contains in w[3]]


def make_ua(host: str, user: str, *, port: int = 5060, **kw: Any) -> UserAgent:
    cfg = UAConfig(user=user, domain="example.org", local_host=host, local_port=port, **kw)
    return UserAgent(cfg, rng=random.Random(hash((host, user)) & 0xFFFF))


def auto_answer(net: SimNet, ua: UserAgent, *, ring: bool = True, sdp: bytes = SDP_B):
    def handler(ev: Any) -> None:
        if isinstance(ev, inv.IncomingCall):
            if ring:
                ev.call.ringing(net.now)
            ev.call.answer(sdp, net.now)

    return handler


def pair(**netkw: Any) -> tuple[SimNet, UserAgent, UserAgent]:
    net = SimNet(**netkw)
    a = make_ua("10.0.0.1", "alice")
    b = make_ua("10.0.0.2", "bob")
    net.add(a)
    net.add(b, auto_answer(net, b))
    return net, a, b


# ---------------------------------------------------------------------------------- basic call


def test_call_answer_and_bye_from_caller():
    net, a, b = pair()
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    assert net.run(lambda: call.state is inv.CallState.CONNECTED)
    assert net.run(lambda: bool(net.of(b, inv.CallConfirmed)))
    answered = net.of(a, inv.CallAnswered)
    assert answered and answered[0].sdp == SDP_B
    ringing = net.of(a, inv.CallRinging)
    assert ringing and ringing[0].status == 180
    incoming = net.of(b, inv.IncomingCall)
    assert incoming[0].offer == SDP_A
    bcall = incoming[0].call
    assert bcall.state is inv.CallState.CONNECTED
    # dialog ids mirror each other
    assert call.dialog and bcall.dialog
    assert call.dialog.local_tag == bcall.dialog.remote_tag
    assert call.dialog.remote_tag == bcall.dialog.local_tag
    call.hangup(net.now)
    assert net.run(lambda: call.state is inv.CallState.TERMINATED)
    net.run()
    assert [e.reason for e in net.of(a, inv.CallEnded)] == ["local-bye"]
    assert [e.reason for e in net.of(b, inv.CallEnded)] == ["remote-bye"]
    assert len(net.sent_lines("ACK ")) == 1
    assert a.idle and b.idle


def test_bye_from_callee():
    net, a, b = pair()
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(lambda: bool(net.of(b, inv.CallConfirmed)))
    bcall = net.of(b, inv.IncomingCall)[0].call
    bcall.hangup(net.now)
    net.run()
    assert [e.reason for e in net.of(a, inv.CallEnded)] == ["remote-bye"]
    assert [e.reason for e in net.of(b, inv.CallEnded)] == ["local-bye"]
    assert call.state is inv.CallState.TERMINATED


@pytest.mark.parametrize("status", [486, 603, 404])
def test_reject(status):
    net = SimNet()
    a = net.add(make_ua("10.0.0.1", "alice"))
    b = make_ua("10.0.0.2", "bob")
    net.add(
        b,
        lambda ev: ev.call.reject(net.now, status) if isinstance(ev, inv.IncomingCall) else None,
    )
    a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run()
    failed = net.of(a, inv.CallFailed)
    assert [f.status for f in failed] == [status]
    assert not net.of(a, inv.CallAnswered)
    # the INVITE transaction ACKed the failure (hop-by-hop ACK, same branch)
    assert len(net.sent_lines("ACK ")) >= 1
    assert a.idle and b.idle


def test_cancel_after_ringing():
    net = SimNet()
    a = net.add(make_ua("10.0.0.1", "alice"))
    b = make_ua("10.0.0.2", "bob")
    net.add(b, lambda ev: ev.call.ringing(net.now) if isinstance(ev, inv.IncomingCall) else None)
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(lambda: bool(net.of(a, inv.CallRinging)))
    call.hangup(net.now)
    net.run()
    assert [e.reason for e in net.of(b, inv.CallEnded)] == ["remote-cancel"]
    assert call.state is inv.CallState.TERMINATED
    assert call.final_status == 487
    assert net.sent_lines("CANCEL ")
    assert any("487" in w[3] for w in net.wire)
    assert any(w[3].startswith("SIP/2.0 200") and "CANCEL" not in w[3] for w in net.wire)


def test_cancel_before_provisional_is_deferred():
    net = SimNet(delay=0.05)
    a = net.add(make_ua("10.0.0.1", "alice"))
    b = make_ua("10.0.0.2", "bob")
    net.add(b, lambda ev: None)  # never rings: only the 100 Trying comes back
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    call.cancel(net.now)  # nothing received yet: no CANCEL may be sent
    net._collect()
    assert not net.sent_lines("CANCEL ")
    net.run(lambda: call.state is inv.CallState.TERMINATED, max_time=60)
    assert net.sent_lines("CANCEL ")
    assert [e.reason for e in net.of(b, inv.CallEnded)] == ["remote-cancel"]


def test_2xx_retransmitted_until_ack_and_ack_resent():
    net, a, b = pair()
    dropped: list[Request] = []

    def drop_first_ack(msg, src, dst):
        if isinstance(msg, Request) and msg.method == "ACK" and not dropped:
            dropped.append(msg)
            return True
        return False

    net.drop = drop_first_ack
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(lambda: bool(net.of(b, inv.CallConfirmed)))
    assert dropped
    oks = [w for w in net.wire if w[3].startswith("SIP/2.0 200")]
    assert len(oks) >= 2  # the 2xx was retransmitted by the UAS core
    acks = net.sent_lines("ACK ")
    assert len(acks) == 2  # and the UAC answered the retransmission with the same ACK
    assert len(net.of(a, inv.CallAnswered)) == 1
    assert call.state is inv.CallState.CONNECTED


def test_no_ack_gives_up_with_bye():
    net, a, b = pair()
    net.drop = lambda msg, src, dst: isinstance(msg, Request) and msg.method == "ACK"
    a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run()
    assert [e.reason for e in net.of(b, inv.CallEnded)] == ["no-ack"]
    oks = [w for w in net.wire if w[3].startswith("SIP/2.0 200") and w[1].startswith("10.0.0.2")]
    # T1, 2T1, 4T1 ... capped at T2 within 64*T1: 1 + retransmissions
    assert 7 <= len(oks) <= 12
    assert net.of(a, inv.CallEnded)[0].reason == "remote-bye"


# ---------------------------------------------------------------------------------- UAS rules


def test_options_out_of_dialog():
    net, a, b = pair()
    a.options("sip:bob@10.0.0.2", net.now)
    net.run()
    res = net.of(a, OptionsResult)
    assert res and res[0].status == 200
    resp = res[0].response
    assert resp is not None
    allow = ",".join(resp.headers.get_all("Allow"))
    for m in ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE"):
        assert m in allow
    assert "application/sdp" in (resp.headers.get("Accept") or "")
    assert "Supported" in resp.headers


def _raw(method: str, *, to_tag: str | None = None, extra: str = "", body: bytes = b"") -> bytes:
    to = "<sip:bob@10.0.0.2>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:bob@10.0.0.2 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK{new_tag()}\r\n"
        f"From: <sip:x@10.0.0.9>;tag=abc\r\nTo: {to}\r\nCall-ID: raw-{new_tag()}\r\n"
        f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return text.encode() + body


def _reply_to(net: SimNet, ua: UserAgent, data: bytes) -> list[Response]:
    peer = FakePeer("10.0.0.9", 5060, lambda m, s, n: [])
    net.add_peer(peer)
    ua.receive(data, Peer("udp", "10.0.0.9", 5060), net.now)
    net.run(max_time=1)
    return [m for m in peer.received if isinstance(m, Response)]


@pytest.mark.parametrize(
    ("method", "to_tag", "status"),
    [
        ("FOO", None, 501),
        ("MESSAGE", None, 405),
        ("SUBSCRIBE", None, 405),
        ("BYE", None, 481),
        ("BYE", "nosuch", 481),
        ("INFO", "nosuch", 481),
        ("OPTIONS", None, 200),
    ],
)
def test_uas_answers(method, to_tag, status):
    net = SimNet()
    b = net.add(make_ua("10.0.0.2", "bob"))
    replies = _reply_to(net, b, _raw(method, to_tag=to_tag))
    assert [r.status for r in replies] == [status]
    if status in (405, 501):
        assert "INVITE" in ",".join(replies[0].headers.get_all("Allow"))


def test_invite_with_unsupported_body_gets_415():
    net = SimNet()
    b = net.add(make_ua("10.0.0.2", "bob"))
    replies = _reply_to(
        net, b, _raw("INVITE", extra="Content-Type: application/foo\r\n", body=b"xx")
    )
    assert [r.status for r in replies] == [415]
    assert "application/sdp" in (replies[0].headers.get("Accept") or "")
    assert not net.of(b, inv.IncomingCall)


def test_unparseable_datagram_is_not_fatal():
    net = SimNet()
    b = net.add(make_ua("10.0.0.2", "bob"))
    b.receive(b"\x00\xffgarbage\r\n\r\n", Peer("udp", "10.0.0.9", 5060), 0.0)
    b.receive(b"INVITE sip:x SIP/2.0\r\n\r\n", Peer("udp", "10.0.0.9", 5060), 0.0)
    replies = _reply_to(net, b, _raw("OPTIONS"))
    # the headerless INVITE parses and gets 400 (RFC 3261 §8.1.1); garbage gets silence
    assert [r.status for r in replies] == [400, 200]


def test_out_of_order_in_dialog_request_gets_500():
    net, a, b = pair()
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(lambda: bool(net.of(b, inv.CallConfirmed)))
    assert call.dialog is not None
    req = call.dialog.create_request("INFO", seq=0)
    a.send_request(req, lambda r, t: None, net.now)
    net.run(max_time=2)
    assert any(w[3].startswith("SIP/2.0 500") for w in net.wire)
    assert RequestRejected("INFO", 500) in net.events[id(b)]


# ---------------------------------------------------------------------------------- loss


@pytest.mark.parametrize("seed", range(8))
def test_call_survives_30_percent_loss(seed):
    net, a, b = pair(loss=0.3, delay=0.03, jitter=0.02, seed=seed)
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(lambda: call.state in (inv.CallState.CONNECTED, inv.CallState.TERMINATED), 60)
    if call.state is inv.CallState.TERMINATED:
        # Even 30% loss can beat 7 INVITE retransmissions; then the failure must be a timeout.
        assert net.of(a, inv.CallFailed)[0].status == 408
        return
    net.run(lambda: bool(net.of(b, inv.CallConfirmed) or net.of(b, inv.CallEnded)), 60)
    call.hangup(net.now)
    net.run(lambda: call.state is inv.CallState.TERMINATED, 60)
    net.run(max_time=60)
    assert net.of(a, inv.CallEnded)
    bcall = net.of(b, inv.IncomingCall)[0].call
    assert bcall.state is inv.CallState.TERMINATED


def test_many_calls_with_loss_mostly_complete():
    """30 % loss, 20 calls: retransmissions get (almost) every call through."""
    done = 0
    settled = (inv.CallState.CONNECTED, inv.CallState.TERMINATED)
    for seed in range(20):
        net, a, b = pair(loss=0.3, delay=0.02, seed=100 + seed)
        call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
        net.run(lambda c=call: c.state in settled, 60)  # type: ignore[misc]
        if call.state is inv.CallState.CONNECTED:
            call.hangup(net.now)
            net.run(max_time=60)
            if [e.reason for e in net.of(a, inv.CallEnded)] == ["local-bye"]:
                done += 1
    assert done >= 18


# ---------------------------------------------------------------------------------- in-dialog


def _connected(net, a, b):
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(lambda: bool(net.of(b, inv.CallConfirmed)))
    return call, net.of(b, inv.IncomingCall)[0].call


def test_reinvite_hold_and_resume():
    net, a, b = pair()
    held: list[bytes] = []

    def answer(call, offer, ctype):
        held.append(offer)
        return SDP_B.replace(b"RTP/AVP 0\r\n", b"RTP/AVP 0\r\na=recvonly\r\n")

    b.config.offer_handler = answer
    call, bcall = _connected(net, a, b)
    hold = SDP_A + b"a=sendonly\r\n"
    call.reinvite(hold, net.now)
    net.run(lambda: bool(net.of(a, inv.CallUpdated)))
    upd = net.of(a, inv.CallUpdated)[0]
    assert upd.local and b"a=recvonly" in (upd.sdp or b"")
    net.run(lambda: bool(net.of(b, inv.CallUpdated)))
    assert net.of(b, inv.CallUpdated)[0].sdp == hold
    assert held == [hold]
    assert len(net.sent_lines("ACK ")) == 2
    # resume
    call.reinvite(SDP_A, net.now)
    net.run(lambda: len(net.of(a, inv.CallUpdated)) == 2)
    assert call.state is inv.CallState.CONNECTED and bcall.state is inv.CallState.CONNECTED
    call.hangup(net.now)
    net.run()
    assert a.idle and b.idle


def test_reinvite_glare_retries():
    net, a, b = pair(delay=0.05)
    call, bcall = _connected(net, a, b)
    call.reinvite(SDP_A + b"a=sendonly\r\n", net.now)
    bcall.reinvite(SDP_B + b"a=sendonly\r\n", net.now)
    net.run(
        lambda: len(net.of(a, inv.CallUpdated)) >= 2 and len(net.of(b, inv.CallUpdated)) >= 2,
        max_time=30,
    )
    assert any(w[3].startswith("SIP/2.0 491") for w in net.wire)
    # both offers eventually went through
    assert any(e.local for e in net.of(a, inv.CallUpdated))
    assert any(e.local for e in net.of(b, inv.CallUpdated))
    assert call.state is inv.CallState.CONNECTED


def test_update_in_dialog():
    net, a, b = pair()
    call, bcall = _connected(net, a, b)
    bcall.update(SDP_B + b"a=inactive\r\n", net.now)
    net.run(lambda: bool(net.of(b, inv.CallUpdated)))
    assert net.of(a, inv.CallUpdated)[0].method == "UPDATE"
    assert net.of(a, inv.CallUpdated)[0].sdp == SDP_B + b"a=inactive\r\n"
    assert net.sent_lines("UPDATE ")


def test_info_in_dialog():
    net, a, b = pair()
    call, bcall = _connected(net, a, b)
    call.info(b"Signal=5\r\nDuration=160\r\n", "application/dtmf-relay", net.now)
    net.run(lambda: bool(net.of(b, inv.InfoReceived)))
    info = net.of(b, inv.InfoReceived)[0]
    assert info.body.startswith(b"Signal=5") and info.content_type == "application/dtmf-relay"


def test_in_dialog_options():
    net, a, b = pair()
    call, bcall = _connected(net, a, b)
    assert call.dialog is not None
    req = call.dialog.create_request("OPTIONS")
    got: list[Response] = []
    a.send_request(req, lambda r, t: got.append(r) if r is not None else None, net.now)
    net.run(lambda: bool(got))
    assert got[0].status == 200


def test_forked_second_2xx_is_acked_and_byed():
    """A fake forking proxy answers one INVITE with two 2xx from different To tags."""
    net = SimNet()
    a = net.add(make_ua("10.0.0.1", "alice"))
    sent_bye: list[Request] = []

    def forker(msg, src, n):
        if isinstance(msg, Request) and msg.method == "INVITE":
            out = []
            for tag in ("one", "two"):
                r = make_response(msg, 200, to_tag=tag)
                r.headers.add("Contact", f"<sip:{tag}@10.0.0.2>")
                r.body = SDP_B
                r.headers.add("Content-Type", "application/sdp")
                out.append((r, src))
            return out
        if isinstance(msg, Request) and msg.method == "BYE":
            sent_bye.append(msg)
            return [(make_response(msg, 200), src)]
        return []

    net.add_peer(FakePeer("10.0.0.2", 5060, forker))
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(max_time=40)
    assert call.state is inv.CallState.CONNECTED
    assert call.dialog is not None and call.dialog.remote_tag == "one"
    assert len(net.of(a, inv.CallAnswered)) == 1
    assert len(net.sent_lines("ACK ")) == 2
    assert len(sent_bye) == 1 and sent_bye[0].to_addr.tag == "two"
    assert sent_bye[0].uri == "sip:two@10.0.0.2"


def test_early_media_183():
    net = SimNet()
    a = net.add(make_ua("10.0.0.1", "alice"))
    b = make_ua("10.0.0.2", "bob")
    net.add(
        b,
        lambda ev: (
            ev.call.ringing(net.now, sdp=SDP_B) if isinstance(ev, inv.IncomingCall) else None
        ),
    )
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(lambda: bool(net.of(a, inv.CallRinging)))
    ring = net.of(a, inv.CallRinging)[0]
    assert ring.status == 183 and ring.sdp == SDP_B
    assert call.state is inv.CallState.EARLY
    assert call.dialog is not None and call.dialog.state.value == "early"
    call.hangup(net.now)
    net.run()
    assert call.state is inv.CallState.TERMINATED


def test_timer_config_fast():
    """Smaller T1 shortens the whole INVITE timeout (Timer B = 64*T1)."""
    net = SimNet()
    a = net.add(make_ua("10.0.0.1", "alice", timers=TimerConfig(t1=0.1, t2=0.4)))
    call = a.invite("sip:nobody@10.0.0.99", SDP_A, net.now)
    net.run(max_time=100)
    assert call.state is inv.CallState.TERMINATED
    assert net.of(a, inv.CallFailed)[0].status == 408
    assert net.now <= 6.5 + 1  # 64 * 0.1 s plus a margin of simulated time


# ---------------------------------------------------------------------------------- fuzzing

_FUZZ_SEEDS = [
    _raw("OPTIONS"),
    _raw("INVITE", extra="Content-Type: application/sdp\r\n", body=SDP_A),
    _raw("BYE", to_tag="x"),
    _raw("CANCEL"),
    _raw("ACK", to_tag="x"),
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKq\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:b@c>;tag=2\r\nCall-ID: q\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(_FUZZ_SEEDS),
    cuts=st.lists(st.tuples(st.integers(0, 2000), st.binary(max_size=8)), max_size=4),
)
def test_receive_never_raises_on_mutated_messages(seed, cuts):
    """A malformed or mutated datagram never raises out of the core (and the core still works)."""
    data = bytearray(seed)
    for pos, junk in cuts:
        pos = pos % (len(data) + 1)
        data[pos : pos + len(junk)] = junk
    ua = make_ua("10.0.0.2", "bob")
    ua.receive(bytes(data), Peer("udp", "10.0.0.9", 5060), 0.0)
    ua.handle_timer(100.0)
    for out in ua.messages_to_send():
        out.message.to_bytes()
    ua.receive(_raw("OPTIONS"), Peer("udp", "10.0.0.9", 5060), 200.0)
    assert any(
        isinstance(o.message, Response) and o.message.status == 200 for o in ua.messages_to_send()
    )


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600))
def test_receive_never_raises_on_random_bytes(data):
    ua = make_ua("10.0.0.2", "bob")
    ua.receive(data, Peer("udp", "10.0.0.9", 5060), 0.0)
    ua.handle_timer(50.0)
    ua.messages_to_send()


def test_malformed_response_matching_our_invite_is_dropped():
    """A 200 whose To header is broken matches our INVITE transaction by branch: dropped."""
    net = SimNet()
    a = net.add(make_ua("10.0.0.1", "alice"))
    sent: list[Request] = []

    def peer(msg, src, n):
        if isinstance(msg, Request) and msg.method == "INVITE" and not sent:
            sent.append(msg)
            bad = make_response(msg, 200, to_tag="t")
            bad.headers.set("To", "<sip:broken")
            good = make_response(msg, 486, to_tag="t")
            return [(bad, src), (good, src)]
        return []

    net.add_peer(FakePeer("10.0.0.2", 5060, peer))
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(max_time=60)
    # the broken 2xx put the transaction in "Accepted" (the 486 is ignored there); when it
    # ends without a usable final response the call fails instead of hanging
    assert call.state is inv.CallState.TERMINATED
    assert [f.status for f in net.of(a, inv.CallFailed)] == [408]


def test_call_and_registration_over_reliable_transport():
    """TCP-like transport: no retransmissions, transactions end at once (Timer K/J = 0)."""
    from tests.unit.test_registration import REGISTRAR, FakeRegistrar

    net = SimNet()
    registrar = FakeRegistrar()
    net.add_peer(FakePeer(REGISTRAR[0], REGISTRAR[1], registrar.handle))
    a = make_ua("10.0.0.1", "alice", transport="tcp", password="secret")
    b = make_ua("10.0.0.2", "bob", transport="tcp")
    net.add(a)
    net.add(b, auto_answer(net, b))
    a.register(net.now, expires=600, registrar=f"sip:{REGISTRAR[0]}")
    from sip.registration import Registered

    net.run(lambda: bool(net.of(a, Registered)))
    assert registrar.bindings == {"sip:alice@10.0.0.1:5060;transport=tcp": 600}
    call = a.invite("sip:bob@10.0.0.2;transport=tcp", SDP_A, net.now)
    net.run(lambda: bool(net.of(b, inv.CallConfirmed)))
    assert call.state is inv.CallState.CONNECTED
    call.hangup(net.now)
    net.run()
    assert [e.reason for e in net.of(b, inv.CallEnded)] == ["remote-bye"]
    assert not [w for w in net.wire if w[3].startswith("INVITE") and w[0] > 0.1]  # no retransmit


# ---------------------------------------------------------------------------------- chaos


@pytest.mark.parametrize("seed", range(40))
def test_random_call_scenarios_always_settle(seed):
    """Random actions (answer, reject, ring, cancel, re-INVITE, UPDATE, BYE from either side)
    on a lossy network: every call ends exactly once on both sides, nothing raises, both
    cores end idle."""
    rng = random.Random(seed)
    transport = "tcp" if rng.random() < 0.25 else "udp"  # reliable: no loss, no retransmission
    loss = 0.0 if transport == "tcp" else rng.choice([0.0, 0.1, 0.3])
    net = SimNet(loss=loss, delay=0.02, jitter=0.02, seed=seed)
    a = make_ua("10.0.0.1", "alice", transport=transport)
    b = make_ua("10.0.0.2", "bob", transport=transport)

    def on_b(ev: Any) -> None:
        if isinstance(ev, inv.IncomingCall):
            choice = rng.random()
            if choice < 0.2:
                ev.call.reject(net.now, rng.choice([486, 603, 480]))
            elif choice < 0.4:
                ev.call.ringing(net.now)
            else:
                ev.call.ringing(net.now, sdp=SDP_B if rng.random() < 0.3 else None)
                ev.call.answer(SDP_B, net.now)

    net.add(a)
    net.add(b, on_b)
    calls = [a.invite("sip:bob@10.0.0.2", SDP_A, net.now) for _ in range(rng.randint(1, 3))]
    for _ in range(rng.randint(3, 10)):
        net.run(max_time=rng.uniform(0.05, 3))
        everyone = calls + [e.call for e in net.of(b, inv.IncomingCall)]
        call = rng.choice(everyone)
        action = rng.choice(["hangup", "reinvite", "update", "answer", "info", "none"])
        try:
            if action == "hangup":
                call.hangup(net.now)
            elif action == "answer":
                call.answer(SDP_B, net.now)
            elif action == "info":
                call.info(b"Signal=1\r\n", "application/dtmf-relay", net.now)
            elif action == "reinvite":
                call.reinvite(SDP_A + b"a=sendonly\r\n", net.now)
            elif action == "update":
                call.update(SDP_A + b"a=inactive\r\n", net.now)
        except ValueError:
            pass  # not allowed in this state / offer pending: the API says so
    net.run(max_time=5)
    for call in calls + [e.call for e in net.of(b, inv.IncomingCall)]:
        call.hangup(net.now)
    net.run(max_time=200)
    for ua in (a, b):
        ended: dict[str, int] = {}
        for ev in net.events[id(ua)]:
            if isinstance(ev, (inv.CallEnded, inv.CallFailed)):
                key = f"{ev.call.call_id}/{id(ev.call)}"
                ended[key] = ended.get(key, 0) + 1
        assert all(n == 1 for n in ended.values()), ended
        assert ua.idle, [c for c in ua.calls if c.state is not inv.CallState.TERMINATED]
    for call in calls:
        assert call.state is inv.CallState.TERMINATED
