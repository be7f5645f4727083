"""softphone.call / softphone.commands plumbing: two in-process calls on 127.0.0.1 (real
sockets, short calls), URI completion, the report shape, teardown and failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ice.aio import IceConnection
from ice.candidate import Candidate, CandidateType
from ice.sdp import IceParameters
from media.aio import open_udp_transport
from media.rtcp import Goodbye, parse_rtcp
from sip.aio import AsyncCall
from softphone.call import Call, CallFailed, MediaOptions, _DefaultCandidatePath
from softphone.commands import complete_uri, peer_account
from softphone.config import Account, ConfigError, HostPort
from softphone.sdp_glue import (
    LocalTransport,
    inspect_offer,
    local_media,
    new_offer_answer,
    read_negotiation,
)
from tests.helpers_call import Callee, Pair, loopback_account, media_options

# --- URIs and accounts -------------------------------------------------------------------


def test_uri_completion_with_the_account_domain() -> None:
    account = Account(user="alice", domain="example.org")
    assert complete_uri("bob", account) == "sip:bob@example.org"
    assert complete_uri("sip:bob", account) == "sip:bob@example.org"
    assert complete_uri("bob@10.0.0.1:5070", account) == "sip:bob@10.0.0.1:5070"
    assert complete_uri("sip:bob@host.example;transport=tcp", account) == (
        "sip:bob@host.example;transport=tcp"
    )
    assert complete_uri("sip:127.0.0.1:5070", account) == "sip:127.0.0.1:5070"
    assert complete_uri("sips:carol", account) == "sips:carol@example.org"
    with pytest.raises(ConfigError):
        complete_uri("bob", Account())
    with pytest.raises(ConfigError):
        complete_uri("  ", account)


def test_server_host_is_the_domain_without_user_domain() -> None:
    account = Account(user="alice", server=HostPort("pbx.example.net", 5060))
    assert complete_uri("bob", account) == "sip:bob@pbx.example.net"


def test_peer_account_fills_user_and_domain_for_peer_to_peer() -> None:
    filled = peer_account(Account(bind=HostPort("127.0.0.1", 5070)))
    assert filled.user and filled.aor_domain == "127.0.0.1"
    assert peer_account(Account()).aor_domain == "localhost"
    given = Account(user="alice", domain="example.org")
    assert peer_account(given) is given


# --- two user agents ---------------------------------------------------------------------


@pytest.mark.parametrize("ice", [True, False])
async def test_call_both_ways_then_local_hangup_tears_everything_down(
    pair: Pair, ice: bool
) -> None:
    callee = Callee(pair.bob, loopback_account(ice=ice))
    lines: list[str] = []
    account = loopback_account(ice=ice, codecs=("pcmu", "opus"))
    caller = Call(pair.alice, account, media_options(), progress=lines.append)
    bob = await callee.dialled_by(caller)
    reason = await caller.run(duration=0.6)
    assert reason == "local-bye"
    bob_reason = await asyncio.wait_for(bob.run(), 5)
    assert bob_reason == "remote-bye"
    for call in (caller, bob):
        assert call.succeeded, call.report()
        report = call.report()
        assert report["call"]["sip_status"] == 200
        assert report["rtp"]["codec"] == "PCMU/8000"  # the caller's first choice
        assert set(report["call"]) == {"sip_status", "setup_ms", "duration_s", "end_reason"}
        if ice:
            assert call.ice is not None
            assert call.ice.agent.components == 1  # the answer accepted rtcp-mux
            assert call.ice.agent.stats().state == "closed"  # closed (TURN released)
            assert report["ice"]["selected"]["local"]["type"] == "host"
        else:
            assert report["ice"] is None and call.ice is None
            assert all(t.sent > 0 for t in call._plain[:1])
    if ice:
        assert caller.report()["ice"]["role"] == "controlling"
        assert bob.report()["ice"]["role"] == "controlled"
        assert any(line.startswith("connected via host/host pair") for line in lines)
    # the media session was closed (its RTCP BYE queued and sent) before the SIP BYE
    assert caller.stream is not None and caller.stream.session.closed


async def test_remote_hangup_ends_the_call(pair: Pair) -> None:
    caller = Call(pair.alice, loopback_account(), media_options())
    bob = await Callee(pair.bob, loopback_account()).dialled_by(caller)
    running = asyncio.ensure_future(caller.run())
    await asyncio.sleep(0.4)
    await bob.hangup()
    assert await asyncio.wait_for(running, 5) == "remote-bye"
    assert caller.report()["call"]["end_reason"] == "remote-bye"
    assert bob.report()["call"]["end_reason"] == "local-bye"


async def test_dtmf_reaches_the_peer(pair: Pair) -> None:
    caller = Call(pair.alice, loopback_account(), media_options())
    bob = await Callee(pair.bob, loopback_account()).dialled_by(caller)
    assert caller.send_dtmf("7*")
    for _ in range(100):
        if len(bob.dtmf_received) >= 2:
            break
        await asyncio.sleep(0.05)
    assert bob.dtmf_received == ["7", "*"]
    await caller.hangup()
    await bob.run()


async def test_rejected_call_fails_with_its_status_and_releases_ice(pair: Pair) -> None:
    pair.bob.on_incoming = lambda incoming: incoming.reject(486)
    call = Call(pair.alice, loopback_account(), media_options())
    with pytest.raises(CallFailed) as info:
        await call.dial(pair.bob_uri)
    assert info.value.status == 486
    report = call.report()
    assert report["call"]["sip_status"] == 486 and report["rtp"] is None
    assert not call.succeeded
    assert call.ice is not None and call.ice.agent.stats().state == "closed"


async def test_offer_without_audio_is_refused_with_488(pair: Pair) -> None:
    callee = Callee(pair.bob, loopback_account())
    offer = (
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=video 40000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"
    )
    outgoing = pair.alice.start_call(pair.bob_uri, offer)
    with pytest.raises(Exception) as info:
        await outgoing.wait_answered(5)
    assert getattr(info.value, "status", None) == 488
    await asyncio.wait_for(callee.accepted.wait(), 5)
    assert callee.error is not None and callee.error.status == 488


async def test_no_common_codec_is_refused_with_488(pair: Pair) -> None:
    callee = Callee(pair.bob, loopback_account(codecs=("pcma",)))
    call = Call(pair.alice, loopback_account(codecs=("opus",)), media_options())
    with pytest.raises(CallFailed) as info:
        await call.dial(pair.bob_uri)
    assert info.value.status == 488
    await asyncio.wait_for(callee.accepted.wait(), 5)
    assert callee.error is not None


# --- plain RTP on the default candidate's socket -----------------------------------------


class _FakeGatherer:
    def __init__(self) -> None:
        self.on_datagram: Any = None
        self.on_relayed: Any = None
        self.sent: list[tuple[tuple[str, int], bytes, tuple[str, int]]] = []
        self.relayed: list[tuple[tuple[str, int], bytes, tuple[str, int]]] = []
        self.channels: list[tuple[tuple[str, int], tuple[str, int]]] = []

    def send(self, local: tuple[str, int], data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((local, data, addr))

    def relay_send(self, relayed: tuple[str, int], data: bytes, peer: tuple[str, int]) -> bool:
        self.relayed.append((relayed, data, peer))
        return True

    def bind_channel(self, relayed: tuple[str, int], peer: tuple[str, int]) -> None:
        self.channels.append((relayed, peer))


class _FakeConnection:
    def __init__(self) -> None:
        self.gatherer = _FakeGatherer()


def test_default_candidate_path_is_symmetric_rtp_on_the_base_socket() -> None:
    conn = _FakeConnection()
    srflx = Candidate.make(
        CandidateType.SERVER_REFLEXIVE,
        "203.0.113.4",
        62000,
        base_address="10.0.0.1",
        related=("10.0.0.1", 4000),
    )
    path = _DefaultCandidatePath(conn, srflx, ("192.0.2.5", 5000))  # type: ignore[arg-type]
    got: list[bytes] = []
    path.on_receive = got.append
    path.send(b"\x80a")
    assert conn.gatherer.sent == [(("10.0.0.1", 4000), b"\x80a", ("192.0.2.5", 5000))]
    deliver = conn.gatherer.on_datagram
    deliver(b"\x00\x01stun", ("10.0.0.1", 4000), ("192.0.2.5", 5000))  # STUN: not media
    deliver(b"\x80x", ("10.0.0.9", 4000), ("192.0.2.5", 5000))  # another socket
    assert got == []
    # the first packet from elsewhere (a NAT) is latched onto once
    deliver(b"\x80b", ("10.0.0.1", 4000), ("198.51.100.7", 6000))
    deliver(b"\x80c", ("10.0.0.1", 4000), ("192.0.2.5", 5000))  # the old address: dropped
    assert got == [b"\x80b"]
    path.send(b"\x80d")
    assert conn.gatherer.sent[-1][2] == ("198.51.100.7", 6000)
    assert conn.gatherer.relayed == []


def test_default_candidate_path_through_the_turn_relay() -> None:
    conn = _FakeConnection()
    relay = Candidate.make(
        CandidateType.RELAYED, "198.51.100.1", 49152, related=("203.0.113.4", 62000)
    )
    path = _DefaultCandidatePath(conn, relay, ("192.0.2.5", 5000))  # type: ignore[arg-type]
    got: list[bytes] = []
    path.on_receive = got.append
    assert conn.gatherer.channels == [(("198.51.100.1", 49152), ("192.0.2.5", 5000))]
    path.send(b"\x80a")
    assert conn.gatherer.relayed == [(("198.51.100.1", 49152), b"\x80a", ("192.0.2.5", 5000))]
    assert conn.gatherer.on_datagram is None
    conn.gatherer.on_relayed(b"\x80b", ("198.51.100.1", 49152), ("192.0.2.5", 5000))
    assert got == [b"\x80b"] and conn.gatherer.sent == []


async def test_callee_answers_an_offer_without_rtcp_mux_with_two_components(pair: Pair) -> None:
    """A pjsua-like caller (ICE, no rtcp-mux): we gather and answer two components, RTP runs
    on component 1 and RTCP (here: the BYE at hang-up) on component 2."""
    callee = Callee(pair.bob, loopback_account())
    conn = IceConnection(True, components=2, bind="127.0.0.1")
    try:
        candidates = await conn.gather(5)
        transport = LocalTransport.from_ice(
            conn.local_ufrag, conn.local_pwd, candidates, components=2
        )
        oa = new_offer_answer(local_media(["pcmu"], transport, rtcp_mux=False), transport)
        outgoing = pair.alice.start_call(pair.bob_uri, oa.create_offer().to_bytes())
        answer = await outgoing.wait_answered(5)
        negotiation = oa.process_answer(answer or b"")
        assert negotiation.audio is not None and not negotiation.audio.rtcp_mux
        remote = read_negotiation(negotiation.audio)
        assert remote.ice is not None
        assert {c.component for c in remote.ice.candidates} == {1, 2}
        params = remote.ice.parameters
        assert params is not None
        conn.set_remote(params.ufrag, params.pwd, remote.ice.candidates)
        await conn.connect(5)
        await asyncio.wait_for(callee.accepted.wait(), 5)
        assert callee.call is not None and callee.call.stream is not None
        rtcp_path = callee.call.stream.rtcp_transport.path  # type: ignore[union-attr]
        assert rtcp_path is callee.call.ice.transport(2)  # type: ignore[union-attr]
        rtp = await asyncio.wait_for(conn.transport(1).recv(), 5)
        assert 128 <= rtp[0] < 192 and rtp[1] & 0x7F == 0  # RTP, PCMU
        await callee.call.hangup()
        while True:  # the RTCP BYE arrives on component 2
            rtcp = parse_rtcp(await asyncio.wait_for(conn.transport(2).recv(), 5))
            if any(isinstance(packet, Goodbye) for packet in rtcp):
                break
        await outgoing.wait_ended(5)
    finally:
        await conn.close()


async def test_reoffers_hold_resume_and_move_the_media(pair: Pair) -> None:
    """re-INVITEs (RFC 3264 §8): hold stops our RTP (RTCP goes on), resume restarts it, and a
    new address in a re-offer moves where we send."""
    callee = Callee(pair.bob, loopback_account(ice=False))
    caller = Call(pair.alice, loopback_account(ice=False), media_options())
    bob = await callee.dialled_by(caller)
    assert bob.stream is not None and caller.oa is not None
    assert caller.sip is not None

    async def reoffer(offer: bytes) -> None:
        assert caller.oa is not None and caller.sip is not None
        answer = await caller.sip.reinvite(offer, timeout=5)
        caller.oa.process_answer(answer or b"")

    await reoffer(caller.oa.hold().to_bytes())  # a=sendonly: bob must stop sending
    assert bob.on_hold and "on hold by the peer" in callee.lines
    assert caller.oa.local_description is not None
    assert bob._gate is not None
    before = bob._gate.held_back
    await asyncio.sleep(0.2)
    assert bob._gate.held_back > before  # frames held back while on hold
    await reoffer(caller.oa.resume().to_bytes())
    assert not bob.on_hold and "resumed by the peer" in callee.lines

    # move the caller's media to a new socket: bob follows the re-offer's c=/m=
    moved = await open_udp_transport(("127.0.0.1", 0))
    try:
        caller.oa.media[0].port = moved.local_address[1]
        await reoffer(caller.oa.create_offer().to_bytes())
        got = asyncio.get_running_loop().create_future()
        moved.on_receive = lambda data: got.done() or got.set_result(data)
        data = await asyncio.wait_for(got, 5)
        assert 128 <= data[0] < 192
        assert any("moved its media" in line for line in callee.lines)
    finally:
        moved.close()
    await caller.hangup()
    await bob.run()
    # the handler for re-offers is gone with the call
    assert pair.bob.config.offer_handler is None and pair.alice.config.offer_handler is None


def _fast_consent() -> MediaOptions:
    options = media_options()
    options.ice_agent_options = {"consent_interval": 0.1, "consent_timeout": 0.8}
    options.consent_restart = 1.0
    return options


async def test_lost_consent_hangs_up(pair: Pair) -> None:
    caller = Call(pair.alice, loopback_account(), _fast_consent())
    bob = await Callee(pair.bob, loopback_account()).dialled_by(caller)
    assert bob.ice is not None
    running = asyncio.ensure_future(caller.run())
    await asyncio.sleep(0.3)
    await bob.ice.close()  # the peer's network is gone: no consent responses
    assert await asyncio.wait_for(running, 10) == "ice-consent-lost"
    assert caller.report()["call"]["end_reason"] == "ice-consent-lost"
    assert await asyncio.wait_for(bob.run(), 5) == "remote-bye"  # our BYE got there


async def test_ice_that_cannot_connect_fails_the_call(pair: Pair) -> None:
    """The offer's only candidate is a port nobody answers on: ICE fails, the callee hangs up."""
    callee_options = media_options("tone:660")
    callee_options.ice_timeout = 1.0
    ua = pair.bob
    result: dict[str, Any] = {}
    done = asyncio.Event()

    async def accept(incoming: AsyncCall) -> None:
        call = Call(ua, loopback_account(), callee_options)
        result["call"] = call
        try:
            await call.accept(incoming)
        except CallFailed as exc:
            result["error"] = exc
        finally:
            done.set()

    ua.on_incoming = accept
    dead = Candidate.make(CandidateType.HOST, "127.0.0.1", 9)
    transport = LocalTransport.from_ice("deadbeef", "0123456789abcdefghijkl", [dead])
    oa = new_offer_answer(local_media(["pcmu"], transport), transport)
    outgoing = pair.alice.start_call(pair.bob_uri, oa.create_offer().to_bytes())
    await outgoing.wait_answered(5)
    assert await outgoing.wait_ended(10) == "remote-bye"
    await asyncio.wait_for(done.wait(), 5)
    error = result.get("error")
    assert isinstance(error, CallFailed) and error.kind == "ice-failed"
    report = result["call"].report()
    assert report["call"]["end_reason"] == "ice-failed"
    # the media started with the checks (RFC 8445 §12.1) but nothing could leave or arrive
    assert report["rtp"] is None or (report["rtp"]["sent"], report["rtp"]["received"]) == (0, 0)


async def test_hanging_up_while_ringing_cancels(pair: Pair) -> None:
    rang = asyncio.Event()
    incoming: list[AsyncCall] = []

    def ring(call: AsyncCall) -> None:
        incoming.append(call)
        call.ring()
        rang.set()

    pair.bob.on_incoming = ring
    lines: list[str] = []
    call = Call(pair.alice, loopback_account(), media_options(), progress=lines.append)
    dialing = asyncio.ensure_future(call.dial(pair.bob_uri))
    await asyncio.wait_for(rang.wait(), 5)
    for _ in range(100):
        if any(line.startswith("ringing (180)") for line in lines):
            break
        await asyncio.sleep(0.02)
    dialing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dialing
    report = call.report()
    assert report["call"]["end_reason"] == "interrupted"
    assert report["call"]["sip_status"] == 487  # Request Terminated by our CANCEL
    assert await incoming[0].wait_ended(5) in ("remote-cancel", "local-cancel")


async def test_caller_offers_rtcp_candidates_and_uses_them_without_mux(pair: Pair) -> None:
    """Our offer carries component 2 (RFC 5761 §5.1.3): a callee without rtcp-mux gets RTCP
    (here the BYE at hang-up) on component 2; RTP on component 1."""
    conn = IceConnection(False, components=2, bind="127.0.0.1")
    answered = asyncio.Event()
    offers: list[bytes] = []

    async def answer(incoming: AsyncCall) -> None:
        offers.append(incoming.offer or b"")
        info = inspect_offer(incoming.offer or b"")
        assert info.ice is not None
        assert {c.component for c in info.ice.candidates} == {1, 2}
        candidates = await conn.gather(5)
        transport = LocalTransport.from_ice(
            conn.local_ufrag, conn.local_pwd, candidates, components=2
        )
        oa = new_offer_answer(local_media(["pcmu"], transport, rtcp_mux=False), transport)
        sdp, _ = oa.process_offer(incoming.offer or b"")
        conn.set_remote(info.ice.ufrag or "", info.ice.pwd or "", info.ice.candidates)
        await incoming.answer(sdp.to_bytes())
        await conn.connect(5)
        answered.set()

    pair.bob.on_incoming = answer
    try:
        caller = Call(pair.alice, loopback_account(), media_options())
        await caller.dial(pair.bob_uri)
        await asyncio.wait_for(answered.wait(), 5)
        assert b"a=rtcp-mux" in offers[0] and b"a=rtcp:" in offers[0]
        assert caller.ice is not None and caller.ice.agent.components == 2
        assert caller.stream is not None
        assert caller.stream.rtcp_transport.path is caller.ice.transport(2)  # type: ignore[union-attr]
        rtp = await asyncio.wait_for(conn.transport(1).recv(), 5)
        assert 128 <= rtp[0] < 192
        await caller.hangup()
        while True:
            rtcp = parse_rtcp(await asyncio.wait_for(conn.transport(2).recv(), 5))
            if any(isinstance(packet, Goodbye) for packet in rtcp):
                break
    finally:
        await conn.close()


async def test_audio_that_cannot_start_ends_the_call(pair: Pair) -> None:
    callee = Callee(pair.bob, loopback_account())
    options = media_options()
    options.play = "/nonexistent/hello.wav"
    call = Call(pair.alice, loopback_account(), options)
    with pytest.raises(CallFailed) as info:
        await call.dial(pair.bob_uri)
    assert info.value.kind == "audio-failed"
    assert call.report()["call"]["end_reason"] == "audio-failed"
    await asyncio.wait_for(callee.accepted.wait(), 5)
    assert callee.call is not None
    assert await asyncio.wait_for(callee.call.run(), 5) == "remote-bye"  # we said BYE


async def test_offer_whose_default_is_no_candidate_gets_ice_mismatch_and_plain_rtp(
    pair: Pair,
) -> None:
    """RFC 8839 §5.1: c=/m= matches none of the candidates (an ALG rewrote it): answer with
    a=ice-mismatch, no ICE, and send to c=/m=."""
    callee = Callee(pair.bob, loopback_account())
    plain = await open_udp_transport(("127.0.0.1", 0))
    try:
        elsewhere = Candidate.make(CandidateType.HOST, "127.0.0.1", 9)
        transport = LocalTransport(
            "127.0.0.1",
            plain.local_address[1],
            ice=IceParameters("abcd", "0123456789abcdefghijkl"),
            candidates=[elsewhere],
        )
        oa = new_offer_answer(local_media(["pcmu"], transport), transport)
        outgoing = pair.alice.start_call(pair.bob_uri, oa.create_offer().to_bytes())
        answer = await outgoing.wait_answered(5) or b""
        assert b"a=ice-mismatch" in answer and b"a=ice-ufrag" not in answer
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def first(data: bytes) -> None:
            if not got.done():
                got.set_result(data)

        plain.on_receive = first
        assert 128 <= (await asyncio.wait_for(got, 5))[0] < 192
        await asyncio.wait_for(callee.accepted.wait(), 5)
        assert callee.call is not None and callee.call.ice is None
        await outgoing.bye(5)
    finally:
        plain.close()


async def test_caller_giving_up_while_the_callee_gathers(pair: Pair) -> None:
    """A STUN server that never answers keeps gathering busy; the caller cancels meanwhile:
    the callee does not answer a call that is gone."""
    silent = await open_udp_transport(("127.0.0.1", 0))  # a "STUN server" that never answers
    try:
        stun = HostPort("127.0.0.1", silent.local_address[1])
        options = media_options("tone:660")
        options.gather_timeout = 1.0  # then go on with the host candidates
        callee = Callee(pair.bob, loopback_account(stun=stun), options=options)
        host = Candidate.make(CandidateType.HOST, "127.0.0.1", 9)
        transport = LocalTransport.from_ice("abcd", "0123456789abcdefghijkl", [host])
        oa = new_offer_answer(local_media(["pcmu"], transport), transport)
        outgoing = pair.alice.start_call(pair.bob_uri, oa.create_offer().to_bytes())
        await asyncio.sleep(0.5)
        assert not callee.accepted.is_set()  # still gathering
        assert await outgoing.cancel(5) in ("local-cancel", "failed")
        await asyncio.wait_for(callee.accepted.wait(), 10)
        assert callee.error is not None and callee.error.kind == "cancelled"
        assert callee.call is not None and callee.call.report()["call"]["end_reason"] == "cancelled"
    finally:
        silent.close()


async def test_a_silent_peer_is_hung_up_on(pair: Pair) -> None:
    """Plain RTP has no consent checks: nothing from the peer for media_timeout ends the call."""
    options = media_options("tone:660")
    options.media_timeout = 0.6
    callee = Callee(pair.bob, loopback_account(ice=False), options=options)
    caller = Call(pair.alice, loopback_account(ice=False), media_options())
    bob = await callee.dialled_by(caller)
    assert caller.stream is not None and caller.sip is not None
    running = asyncio.ensure_future(bob.run())
    await asyncio.sleep(0.3)
    assert not running.done()  # media flows: no timeout
    await caller.stream.stop()  # the caller's media dies, its SIP does not say so
    assert await asyncio.wait_for(running, 10) == "media-timeout"
    assert any(line.startswith("nothing received for 0.6 s") for line in callee.lines)
    assert await caller.sip.wait_ended(5) == "remote-bye"
    await caller.hangup()


async def test_callee_follows_an_ice_restart_in_a_reoffer(pair: Pair) -> None:
    """RFC 8445 §9: new credentials in a re-INVITE restart ICE; the answer carries new ones
    of ours, the checks run again and media keeps flowing."""
    callee = Callee(pair.bob, loopback_account())
    conn = IceConnection(True, bind="127.0.0.1")
    try:
        candidates = await conn.gather(5)
        transport = LocalTransport.from_ice(conn.local_ufrag, conn.local_pwd, candidates)
        oa = new_offer_answer(local_media(["pcmu"], transport), transport)
        outgoing = pair.alice.start_call(pair.bob_uri, oa.create_offer().to_bytes())
        first = oa.process_answer(await outgoing.wait_answered(5) or b"")
        assert first.audio is not None
        remote = read_negotiation(first.audio)
        assert remote.ice is not None and remote.ice.parameters is not None
        conn.set_remote(remote.ice.ufrag or "", remote.ice.pwd or "", remote.ice.candidates)
        await conn.connect(5)
        await asyncio.wait_for(conn.transport(1).recv(), 5)  # bob's RTP
        # restart: new credentials of ours in a re-offer
        loop = asyncio.get_running_loop()
        conn.agent.restart(loop.time())
        restarted = LocalTransport.from_ice(conn.local_ufrag, conn.local_pwd, candidates)
        oa.media[0].attributes = local_media(["pcmu"], restarted).attributes
        answer = await outgoing.reinvite(oa.create_offer().to_bytes(), timeout=5)
        second = oa.process_answer(answer or b"")
        assert second.audio is not None
        again = read_negotiation(second.audio)
        assert again.ice is not None and again.ice.ufrag != remote.ice.ufrag  # bob's are new
        conn.set_remote(again.ice.ufrag or "", again.ice.pwd or "", again.ice.candidates)
        for _ in range(100):  # the new generation nominates a pair
            if conn.agent.stats().state == "completed":
                break
            await asyncio.sleep(0.05)
        assert conn.agent.stats().state == "completed"
        assert callee.call is not None and "the peer restarted ICE" in callee.lines
        assert callee.call.ice is not None and callee.call.ice.agent.stats().restarts == 1
        while not conn.transport(1)._queue.empty():
            conn.transport(1)._queue.get_nowait()
        assert 128 <= (await asyncio.wait_for(conn.transport(1).recv(), 5))[0] < 192
        await outgoing.bye(5)
    finally:
        await conn.close()
