"""A re-INVITE without SDP during a call (RFC 3261 §14.2, RFC 3264 §8): our callee puts its
current description in the 2xx as an offer (same o= session id, version raised only if
something changed) and applies the answer in the ACK (here a hold); an ACK without the answer
ends the call with our BYE (§13.3.1.4). Two of our softphone calls on loopback, and sipp
(tests/data/sipp/uac_reinvite_no_sdp_*.xml) as the peer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sip.aio import AsyncCall, AsyncUserAgent
from sip.message import Request, Response
from sip.ua import UAConfig
from softphone.call import Call, MediaOptions
from softphone.config import Account, HostPort
from softphone.sdp_glue import audio_codecs
from tests.unit.test_call_features import Wire, _until

LOOPBACK = HostPort("127.0.0.1", 0)
SCENARIOS = Path(__file__).parent.parent / "data" / "sipp"


def _origin(body: bytes) -> list[str]:
    """The o= line's fields."""
    line = next(x for x in body.decode().splitlines() if x.startswith("o="))
    return line[2:].split()


def _reinvite_oks(wire: Wire) -> list[Response]:
    return [m for m in wire.responses(200) if m.cseq.method == "INVITE"]


async def _uas(port: int = 0, user: str = "bob") -> AsyncUserAgent:
    agent = AsyncUserAgent(UAConfig(user=user, domain="127.0.0.1", local_port=port))
    await agent.start("127.0.0.1", 0, transports=("UDP",))
    return agent


@pytest.fixture
async def ua() -> Any:
    agent = await _uas()
    yield agent
    await agent.close(timeout=1.0)


@pytest.fixture
async def alice() -> Any:
    agent = await _uas(user="alice")
    yield agent
    await agent.close(timeout=1.0)


def _options() -> MediaOptions:
    return MediaOptions(play="tone:440", record="none", ice_timeout=5.0, answer_timeout=5.0)


class Bob:
    """Our callee: answers the next call on ``ua`` with a softphone :class:`Call`."""

    def __init__(self, ua: AsyncUserAgent, ice: bool) -> None:
        self.lines: list[str] = []
        self.calls: list[Call] = []
        self.accepted = asyncio.Event()
        self._ua, self._ice = ua, ice
        ua.on_incoming = self._incoming

    async def _incoming(self, incoming: AsyncCall) -> None:
        account = Account(bind=LOOPBACK, ice=self._ice)
        call = Call(self._ua, account, _options(), progress=self.lines.append)
        self.calls.append(call)
        await call.accept(incoming)
        self.accepted.set()

    async def dialled_by(self, caller: Call) -> Call:
        await caller.dial(f"sip:bob@127.0.0.1:{self._ua.config.local_port}")
        await asyncio.wait_for(self.accepted.wait(), 5)
        return self.calls[0]

    async def hang_up_all(self, caller: Call) -> None:
        for call in (caller, *self.calls):
            if not call.end_reason:
                await call.hangup()


@pytest.mark.parametrize("ice", [False, True])
async def test_two_softphones_offerless_reinvite_holds_and_resumes(
    ua: AsyncUserAgent, alice: AsyncUserAgent, ice: bool
) -> None:
    """Alice re-INVITEs without SDP; Bob offers his current description in the 200, and
    Alice's answer in the ACK (sendonly: she holds him) is applied to Bob's media."""
    bob_wire = Wire(ua)
    callee = Bob(ua, ice)
    lines = callee.lines
    caller = Call(alice, Account(bind=LOOPBACK, ice=ice), _options())
    try:
        bob = await callee.dialled_by(caller)
        assert caller.sip is not None and caller.oa is not None and bob.stream is not None
        first = bob_wire.responses(200)[0].body
        # hold: alice's answer (in the ACK) says sendonly
        caller.oa.on_hold = True
        offer = await caller.sip.reinvite(None, timeout=5)
        assert offer is not None and b"a=sendrecv" in offer
        oks = _reinvite_oks(bob_wire)
        assert len(oks) == 2 and oks[1].body == offer
        o1, o2 = _origin(first), _origin(offer)
        assert o2[1] == o1[1]  # same session id (RFC 3264 §8)
        # our offer may differ from our answer (a=rtcp beside a=rtcp-mux): one version up
        assert int(o2[2]) in (int(o1[2]), int(o1[2]) + 1)
        await _until(lambda: bob.on_hold)
        assert "on hold by the peer" in lines
        gate = bob._gate
        assert gate is not None and gate.paused
        before = gate.held_back
        await _until(lambda: gate.held_back > before)  # bob's frames are held back
        # resume, the same way
        caller.oa.on_hold = False
        again = await caller.sip.reinvite(None, timeout=5)
        assert again is not None and _origin(again)[1] == o1[1]
        if not ice:
            # the same offer again: nothing changed, same version (RFC 3264 §8)
            assert _origin(again)[2] == o2[2] and again == offer
        await _until(lambda: not bob.on_hold)
        assert "resumed by the peer" in lines and not gate.paused
        assert bob.sip is not None and bob.sip.state.value == "connected"
        await caller.hangup()
        assert await asyncio.wait_for(bob.run(), 5) == "remote-bye"
    finally:
        await callee.hang_up_all(caller)


async def _sipp_call(
    sipp_factory: Any, ua: AsyncUserAgent, scenario: str, ice: bool
) -> tuple[Any, Call, Wire, list[str]]:
    wire = Wire(ua)
    sipp = sipp_factory(
        SCENARIOS / scenario,
        f"127.0.0.1:{ua.config.local_port}",
        calls=1,
        service="bob",
        rtp_echo=True,
    )
    sipp.start()
    lines: list[str] = []
    call = Call(ua, Account(bind=LOOPBACK, ice=ice), _options(), progress=lines.append)
    incoming: AsyncCall = await asyncio.wait_for(ua.incoming.get(), 10)
    await asyncio.wait_for(call.accept(incoming), 10)
    return sipp, call, wire, lines


@pytest.mark.integration
@pytest.mark.parametrize("ice", [False, True])
async def test_sipp_offerless_reinvite_then_hold_in_the_ack(
    sipp_factory: Any, ua: AsyncUserAgent, ice: bool
) -> None:
    sipp, call, wire, lines = await _sipp_call(
        sipp_factory, ua, "uac_reinvite_no_sdp_hold.xml", ice
    )
    try:
        assert call.remote is not None and call.remote.rtp == ("127.0.0.1", sipp.media_port)
        await _until(lambda: len(_reinvite_oks(wire)) == 2)
        first, second = (m.body for m in _reinvite_oks(wire))
        assert b"m=audio" in second  # our offer, in the 200 to the body-less re-INVITE
        assert _origin(second)[1] == _origin(first)[1]
        assert int(_origin(second)[2]) in (int(_origin(first)[2]), int(_origin(first)[2]) + 1)
        await _until(lambda: call.on_hold)  # sipp's ACK answered a=sendonly
        gate = call._gate
        assert gate is not None and gate.paused
        assert "on hold by the peer" in lines
        assert await asyncio.wait_for(call.run(), 15) == "remote-bye"
        result = await asyncio.to_thread(sipp.wait, 20)
        assert result.ok and result.successful == 1, result.describe()
        # sipp saw the offer (its ereg check_it would fail the call otherwise)
        got = [m for m in sipp.traced("received") if m.first_line == "SIP/2.0 200 OK"]
        assert len(got) >= 3  # INVITE, re-INVITE, BYE
    finally:
        if not call.end_reason:
            await call.hangup()
        if sipp.running():
            sipp.stop(grace=1)


@pytest.mark.integration
async def test_sipp_ack_without_answer_gets_our_bye(sipp_factory: Any, ua: AsyncUserAgent) -> None:
    sipp, call, wire, lines = await _sipp_call(
        sipp_factory, ua, "uac_reinvite_no_sdp_bare_ack.xml", False
    )
    try:
        assert await asyncio.wait_for(call.run(), 15) == "no-answer"
        assert any("offer/answer failed (no-answer)" in line for line in lines)
        assert call.stream is None or call.stream.session.closed
        byes = [m for m in wire.sent if isinstance(m, Request) and m.method == "BYE"]
        assert len(byes) == 1
        result = await asyncio.to_thread(sipp.wait, 20)
        assert result.ok and result.successful == 1, result.describe()
    finally:
        if not call.end_reason:
            await call.hangup()
        if sipp.running():
            sipp.stop(grace=1)


async def test_two_softphones_codec_change_in_the_ack_answer(
    ua: AsyncUserAgent, alice: AsyncUserAgent
) -> None:
    """The ACK's answer picks another codec (RFC 3264 §8.3.2): our media session switches to
    it without ending the call."""
    callee = Bob(ua, ice=False)
    lines = callee.lines
    caller = Call(alice, Account(bind=LOOPBACK, ice=False, codecs=("pcmu", "pcma")), _options())
    try:
        bob = await callee.dialled_by(caller)
        assert bob.remote is not None and bob.remote.codec_name == "PCMU/8000"
        assert caller.sip is not None and caller.oa is not None
        caller.oa.media[0].codecs = audio_codecs(["pcma"])  # alice now answers PCMA only
        await caller.sip.reinvite(None, timeout=5)
        await _until(lambda: bob.remote is not None and bob.remote.codec_name == "PCMA/8000")
        await bob.media_settled()
        await _until(lambda: any("codec changed" in line for line in lines))
        assert bob.stream is not None and "PCMA" in str(bob.stream.session.codec)
        assert bob.sip is not None and bob.sip.state.value == "connected"
        await caller.hangup()
        assert await asyncio.wait_for(bob.run(), 5) == "remote-bye"
    finally:
        await callee.hang_up_all(caller)
