"""softphone.call features: early media (183 with SDP), ICE-completion updated offers,
session timers, mute and hold. Two in-process user agents on 127.0.0.1 (real sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sip.invite import CallRinging
from sip.message import Request, Response
from softphone.call import Call, CallFailed
from tests.helpers_call import Pair, Wire, until

# --- 1. early media ----------------------------------------------------------------------


@pytest.mark.parametrize("ice", [True, False])
async def test_early_media_from_a_183_continues_after_the_200(pair: Pair, ice: bool) -> None:
    """RFC 3261 §13.2.1 / RFC 3960: bob sends 183 with his answer and media before he answers;
    alice plays it at once, and the 200 (same SDP) changes nothing: same stream, same ICE."""
    alice_wire, bob_wire = Wire(pair.alice), Wire(pair.bob)
    alice, bob = pair.calls(ice=ice)
    dialing, call = await pair.ringing(alice)
    await bob.early_media(call)
    # bob's 183 carries the answer; no 200 yet
    progress = bob_wire.responses(183)
    assert len(progress) == 1 and b"m=audio" in progress[0].body
    assert progress[0].headers.get("Content-Type") == "application/sdp"
    assert not bob_wire.responses(200)
    # alice hears bob's early media while the call is not answered
    await until(lambda: alice.stream is not None and alice.stream.stats().packets_received > 5)
    assert not alice.answered and not dialing.done()
    assert bob.stream is not None and bob.stream.stats().packets_received > 0
    early_stream, early_ice = alice.stream, alice.ice
    received = early_stream.stats().packets_received if early_stream else 0
    await bob.accept(call)
    await asyncio.wait_for(dialing, 5)
    ok = bob_wire.responses(200)
    assert ok and ok[0].body == progress[0].body  # the 200 repeats the early answer
    assert alice.answered and alice.sip_status == 200
    assert alice.stream is early_stream and alice.ice is early_ice  # no restart
    if ice:
        assert alice.ice is not None and alice.ice.agent.stats().restarts == 0
    assert [e.status for e in alice.sip.events if isinstance(e, CallRinging)] == [183]
    assert len(alice_wire.requests("INVITE")) == 1
    await asyncio.sleep(0.2)
    assert alice.stats is not None and alice.stats.packets_received > received
    assert await alice.run(duration=0.3) == "local-bye"
    assert await asyncio.wait_for(bob.run(), 5) == "remote-bye"
    assert alice.succeeded and bob.succeeded


async def test_early_media_then_rejected_tears_the_media_down(pair: Pair) -> None:
    alice, bob = pair.calls()
    dialing, call = await pair.ringing(alice)
    await bob.early_media(call)
    await until(lambda: alice.stream is not None and alice.stream.stats().packets_received > 0)
    call.reject(486)
    with pytest.raises(CallFailed) as info:
        await asyncio.wait_for(dialing, 5)
    assert info.value.status == 486
    assert alice.stream is not None and alice.stream.session.closed
    assert alice.ice is not None and alice.ice.agent.stats().state == "closed"
    await bob.hangup()


# --- 2. the selected candidates after ICE (RFC 8839 §4.4.1.2) ----------------------------


def _sdp_line(body: bytes, prefix: str) -> list[str]:
    return [line for line in body.decode().splitlines() if line.startswith(prefix)]


def _with_unreachable_default(call: Call, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Alice signals an extra server-reflexive candidate nobody answers on: it becomes her
    default (srflx > host) while the checks select the host pair, like a pjsua/Asterisk peer
    behind a NAT that would send media to the default."""
    from ice.candidate import Candidate, CandidateType
    from softphone.sdp_glue import LocalTransport

    original = call._local_transport
    fakes: list[Any] = []

    async def local_transport(**kw: Any) -> LocalTransport:
        transport = await original(**kw)
        host = transport.candidates[0]
        fake = Candidate(
            "srflx1",
            1,
            "udp",
            1,
            "127.0.0.1",
            9,
            CandidateType.SERVER_REFLEXIVE,
            related_address=host.address,
            related_port=host.port,
        )
        fakes.append(fake)
        candidates = [*transport.candidates, fake]
        assert transport.ice is not None
        rebuilt = LocalTransport.from_ice(
            transport.ice.ufrag, transport.ice.pwd, candidates, kw["components"]
        )
        assert (rebuilt.address, rebuilt.port) == ("127.0.0.1", 9)
        return rebuilt

    monkeypatch.setattr(call, "_local_transport", local_transport)
    return fakes


async def test_no_updated_offer_when_the_default_is_the_selected_pair(pair: Pair) -> None:
    alice_wire = Wire(pair.alice)
    alice, bob = pair.calls()
    await pair.answered(alice, bob)
    assert alice.selected_offer is not None
    assert await asyncio.wait_for(alice.selected_offer, 5) is None
    assert not alice_wire.requests("UPDATE") and len(alice_wire.requests("INVITE")) == 1
    assert not any("remote-candidates" in a.name for a in alice.oa.media[0].attributes)  # type: ignore[union-attr]
    await alice.hangup()
    await asyncio.wait_for(bob.run(), 5)


@pytest.mark.parametrize("allow_update", [True, False])
async def test_controlling_agent_signals_the_selected_pair_without_restart(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, allow_update: bool
) -> None:
    """The default (c=/m=) is not the selected pair: alice (controlling) sends the updated offer
    with the same ufrag/pwd, the selected candidate in c=/m= and a=remote-candidates; by
    UPDATE when bob's Allow lists it, else by re-INVITE. Bob answers without an ICE restart
    (RFC 8445 §9), with his selected candidate as default, and media goes on."""
    if not allow_update:
        monkeypatch.setattr("sip.ua.ALLOW", ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"))
    alice_wire, bob_wire = Wire(pair.alice), Wire(pair.bob)
    alice, bob = pair.calls()
    bob_lines: list[str] = []
    bob.progress = bob_lines.append
    _with_unreachable_default(alice, monkeypatch)
    await pair.answered(alice, bob)
    first_offer = alice_wire.requests("INVITE")[0].body
    assert _sdp_line(first_offer, "m=audio 9 ")
    assert alice.selected_offer is not None
    method = await asyncio.wait_for(alice.selected_offer, 10)
    assert method == ("UPDATE" if allow_update else "INVITE")
    assert alice.ice is not None and bob.ice is not None
    selected = alice.ice.transport(1).selected
    assert selected is not None
    local, remote = selected
    # on the wire: the updated offer
    sent = alice_wire.requests(method)
    if method == "INVITE":
        assert len(sent) == 2
    updated = sent[-1].body
    assert _sdp_line(updated, "m=audio ")[0].startswith(f"m=audio {local.port} ")
    assert _sdp_line(updated, "c=") == [f"c=IN IP4 {local.address}"]
    assert _sdp_line(updated, "a=ice-ufrag:") == _sdp_line(first_offer, "a=ice-ufrag:")
    assert _sdp_line(updated, "a=ice-pwd:") == _sdp_line(first_offer, "a=ice-pwd:")
    assert _sdp_line(updated, "a=remote-candidates:") == [
        f"a=remote-candidates:1 {remote.address} {remote.port}"
    ]
    # bob's answer: same credentials, his selected candidate as default, no restart
    bob_answer = bob_wire.responses(200)[-1]
    assert bob_answer.cseq.method == method
    first_answer = bob_wire.responses(200)[0].body
    assert _sdp_line(bob_answer.body, "a=ice-ufrag:") == _sdp_line(first_answer, "a=ice-ufrag:")
    bob_selected = bob.ice.transport(1).selected
    assert bob_selected is not None
    assert _sdp_line(bob_answer.body, "m=audio ")[0].startswith(f"m=audio {bob_selected[0].port} ")
    assert bob.ice.agent.stats().restarts == 0 and alice.ice.agent.stats().restarts == 0
    assert "the peer restarted ICE" not in bob_lines
    assert not _sdp_line(bob_answer.body, "a=remote-candidates")
    # media keeps flowing on the same streams
    assert alice.stats is not None and bob.stats is not None
    before = (alice.stats.packets_received, bob.stats.packets_received)
    await asyncio.sleep(0.3)
    assert alice.stats.packets_received > before[0] and bob.stats.packets_received > before[1]
    assert await alice.run(duration=0.1) == "local-bye"
    assert await asyncio.wait_for(bob.run(), 5) == "remote-bye"
    assert alice.succeeded and bob.succeeded


# --- 3. session timers (RFC 4028), sans-I/O on a virtual clock ----------------------------


class TimerNet:
    """Two user agents supporting "timer" on a simulated network, every message recorded."""

    def __init__(self, *, drop: Any = None) -> None:
        from tests.unit.test_ua import SimNet, auto_answer, make_ua

        self.net = SimNet()
        self.messages: list[tuple[float, str, Request | Response]] = []
        self.a = make_ua("10.0.0.1", "alice", supported=("timer",))
        self.b = make_ua("10.0.0.2", "bob", supported=("timer",))
        self.net.add(self.a)
        self.net.add(self.b, auto_answer(self.net, self.b))
        self._drop = drop

        def record(msg: Request | Response, src: Any, dst: Any) -> bool:
            who = "alice" if src.host == "10.0.0.1" else "bob"
            self.messages.append((self.net.now, who, msg))
            return bool(self._drop and self._drop(msg, who))

        self.net.drop = record

    def call(self, *headers: tuple[str, str]) -> Any:
        from tests.unit.test_ua import SDP_A

        call = self.a.invite("sip:bob@10.0.0.2", SDP_A, self.net.now, headers=list(headers))
        assert self.net.run(lambda: call.state.value == "connected", max_time=10)
        return call

    def sent(self, who: str, kind: str) -> list[tuple[float, Any]]:
        out: list[tuple[float, Any]] = []
        for t, sender, msg in self.messages:
            if sender != who:
                continue
            if isinstance(msg, Request) and msg.method == kind:
                out.append((t, msg))
            elif isinstance(msg, Response) and f"{msg.status} {msg.cseq.method}" == kind:
                out.append((t, msg))
        return out

    def bob_call(self) -> Any:
        from sip import invite as inv

        return self.net.of(self.b, inv.IncomingCall)[0].call


def test_session_timer_the_caller_asks_for_and_refreshes() -> None:
    """The far end (alice) asks for a 120 s interval, refresher uac: bob's 200 confirms it with
    Require: timer, alice refreshes by UPDATE (bob allows it) at half the interval, each
    refresh answered with Session-Expires, and the call outlives many intervals."""
    from sip import invite as inv

    tn = TimerNet()
    call = tn.call(("Session-Expires", "120;refresher=uac"))
    ok = tn.sent("bob", "200 INVITE")[0][1]
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    invite = tn.sent("alice", "INVITE")[0][1]
    assert "timer" in (invite.headers.get("Supported") or "")
    assert call.session_expires == 120 and call.we_refresh
    bob = tn.bob_call()
    assert bob.session_expires == 120 and not bob.we_refresh
    tn.net.run(lambda: tn.net.now > 400, max_time=500)
    assert call.state is inv.CallState.CONNECTED and bob.state is inv.CallState.CONNECTED
    updates = tn.sent("alice", "UPDATE")
    assert len(updates) >= 6
    first_at = updates[0][0] - tn.sent("alice", "ACK")[0][0]
    assert 59 <= first_at <= 61  # half the interval after the session started
    for _, update in updates:
        assert update.headers.get("Session-Expires") == "120;refresher=uac"
        assert not update.body  # a refresh by UPDATE carries no offer (RFC 4028 §9)
    for _, resp in tn.sent("bob", "200 UPDATE"):
        assert resp.headers.get("Session-Expires") == "120;refresher=uac"
    assert not tn.sent("alice", "BYE") and not tn.sent("bob", "BYE")
    # refreshes change nothing for the application
    assert not tn.net.of(tn.a, inv.CallUpdated)
    call.hangup(tn.net.now)
    tn.net.run()


def test_session_timer_refresher_uas_refreshes_by_reinvite_without_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """refresher=uas: bob refreshes; alice's Allow has no UPDATE, so bob re-INVITEs with his
    session description unchanged."""
    from sip import invite as inv

    monkeypatch.setattr("sip.ua.ALLOW", ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"))
    tn = TimerNet()
    call = tn.call(("Session-Expires", "100;refresher=uas"))
    ok = tn.sent("bob", "200 INVITE")[0][1]
    assert ok.headers.get("Session-Expires") == "100;refresher=uas"
    assert ok.headers.get("Require") is None
    assert not call.we_refresh and tn.bob_call().we_refresh
    tn.net.run(lambda: tn.net.now > 260, max_time=300)
    reinvites = tn.sent("bob", "INVITE")
    assert len(reinvites) >= 4
    bob_sdp = tn.sent("bob", "200 INVITE")[0][1].body
    assert all(r.body == bob_sdp for _, r in reinvites)
    assert all(
        r.headers.get("Session-Expires") == "100;refresher=uac" for _, r in reinvites
    )  # bob is the UAC of his refresh
    assert not tn.sent("bob", "UPDATE")
    assert call.state is inv.CallState.CONNECTED
    call.hangup(tn.net.now)
    tn.net.run()


def test_session_expires_without_refresh_ends_the_call_with_bye() -> None:
    """Alice is the refresher but her refreshes are lost: bob sends BYE min(32, SE/3) s
    before the session expires (RFC 4028 §10)."""
    from sip import invite as inv

    tn = TimerNet(drop=lambda msg, who: isinstance(msg, Request) and msg.method == "UPDATE")
    call = tn.call(("Session-Expires", "120;refresher=uac"))
    started = tn.net.now
    assert tn.net.run(lambda: call.state is inv.CallState.TERMINATED, max_time=300)
    byes = tn.sent("bob", "BYE")
    assert byes, [m for _, _, m in tn.messages]
    assert 120 - 32 - 1 <= byes[0][0] - started <= 120 - 32 + 1
    tn.net.run()
    assert [e.reason for e in tn.net.of(tn.b, inv.CallEnded)] == ["session-expired"]


def test_422_session_interval_too_small_and_the_retry() -> None:
    """Alice asks for 60 s; bob (Min-SE 90) answers 422 with Min-SE: 90; alice retries the
    INVITE (CSeq + 1) with Session-Expires and Min-SE 90 and the call is set up with it."""
    tn = TimerNet()
    call = tn.call(("Session-Expires", "60"))
    too_small = tn.sent("bob", "422 INVITE")
    assert len(too_small) == 1 and too_small[0][1].headers.get("Min-SE") == "90"
    invites = tn.sent("alice", "INVITE")
    assert len(invites) == 2
    retry = invites[1][1]
    assert retry.cseq.seq == invites[0][1].cseq.seq + 1
    assert retry.headers.get("Session-Expires") == "90"
    assert retry.headers.get("Min-SE") == "90"
    ok = tn.sent("bob", "200 INVITE")[0][1]
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"  # alice supports timer
    assert call.session_expires == 90 and call.we_refresh
    call.hangup(tn.net.now)
    tn.net.run()


def test_no_session_timer_unless_the_far_end_asks() -> None:
    tn = TimerNet()
    call = tn.call()
    ok = tn.sent("bob", "200 INVITE")[0][1]
    assert ok.headers.get("Session-Expires") is None
    assert call.session_expires is None and tn.bob_call().session_expires is None
    tn.net.run(lambda: tn.net.now > 3000, max_time=4000)
    assert call.state.value == "connected"
    assert not tn.sent("alice", "UPDATE") and not tn.sent("bob", "UPDATE")
    call.hangup(tn.net.now)
    tn.net.run()


# --- 4. mute, hold and resume ------------------------------------------------------------


async def test_mute_sends_silence_without_stopping_rtp(pair: Pair) -> None:
    alice, bob = pair.calls()
    await pair.answered(alice, bob)
    assert alice.stream is not None
    await until(lambda: alice.stream is not None and alice.stream.sent_level.last > -30)
    alice.mute()
    sent = alice.stream.stats().packets_sent
    active = alice.stream.sent_level.active_frames
    await until(lambda: alice._mute is not None and alice._mute.muted_frames > 10)
    assert alice.stream.stats().packets_sent > sent + 5  # RTP goes on
    assert alice.stream.sent_level.last == alice.stream.sent_level.floor  # silence
    assert alice.stream.sent_level.active_frames == active
    await until(lambda: bob.stats is not None and bob.stats.packets_received > sent + 5)
    alice.mute(False)
    await until(lambda: alice.stream is not None and alice.stream.sent_level.last > -30)
    assert alice.stream.sent_level.active_frames > active
    await alice.hangup()
    await asyncio.wait_for(bob.run(), 5)


async def test_hold_and_resume_by_reinvite(pair: Pair) -> None:
    """Our hold: a re-INVITE with a=sendonly; bob stops sending (on hold by the peer), we send
    silence; resume: a=sendrecv and audio both ways again."""
    alice_wire = Wire(pair.alice)
    alice, bob = pair.calls(ice=False)
    bob_lines: list[str] = []
    bob.progress = bob_lines.append
    await pair.answered(alice, bob)
    await until(lambda: bob.sip is not None and bob.sip.confirmed.done())
    assert await alice.hold()
    reinvite = alice_wire.requests("INVITE")[-1]
    assert len(alice_wire.requests("INVITE")) == 2 and b"a=sendonly" in reinvite.body
    assert alice.held and bob.on_hold and "on hold by the peer" in bob_lines
    assert bob._gate is not None and alice._mute is not None and alice._mute.muted
    held_back = bob._gate.held_back
    received = alice.stats.packets_received if alice.stats else 0
    await until(lambda: bob._gate is not None and bob._gate.held_back > held_back + 10)
    assert alice.stats is not None and alice.stats.packets_received <= received + 2
    assert await alice.resume()
    resume = alice_wire.requests("INVITE")[-1]
    assert len(alice_wire.requests("INVITE")) == 3 and b"a=sendrecv" in resume.body
    assert not alice.held and not bob.on_hold and not alice._mute.muted
    received = alice.stats.packets_received
    await until(lambda: alice.stats is not None and alice.stats.packets_received > received + 10)
    assert await alice.run(duration=0.1) == "local-bye"
    assert await asyncio.wait_for(bob.run(), 5) == "remote-bye"


async def test_selected_candidates_signalled_during_early_media(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ICE completes on the early dialog with a default that is not the selected pair: the
    updated offer goes out (UPDATE works in an early dialog, RFC 3311 §5.1) and the call is
    then answered with the media untouched."""
    alice_wire = Wire(pair.alice)
    alice, bob = pair.calls()
    _with_unreachable_default(alice, monkeypatch)
    dialing, call = await pair.ringing(alice)
    await bob.early_media(call)
    await until(lambda: alice.selected_offer is not None)
    assert alice.selected_offer is not None
    assert await asyncio.wait_for(alice.selected_offer, 10) == "UPDATE"
    assert not alice.answered and len(alice_wire.requests("UPDATE")) == 1
    stream = alice.stream
    await bob.accept(call)
    await asyncio.wait_for(dialing, 5)
    assert alice.stream is stream and alice.answered
    assert bob.ice is not None and bob.ice.agent.stats().restarts == 0
    assert await alice.run(duration=0.3) == "local-bye"
    assert await asyncio.wait_for(bob.run(), 5) == "remote-bye"
    assert alice.succeeded and bob.succeeded
