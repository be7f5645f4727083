"""A re-INVITE without SDP during a call (RFC 3261 §14.2, RFC 3264 §8): our callee puts its
current description in the 2xx as an offer (same o= session id, version raised only if
something changed) and applies the answer in the ACK (here a hold); an ACK without the answer
ends the call with our BYE (§13.3.1.4). Two of our softphone calls on loopback, and sipp
(tests/data/sipp/uac_reinvite_no_sdp_*.xml) as the peer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sip.aio import AsyncCall, AsyncUserAgent
from sip.message import Request, Response
from softphone.call import Call
from softphone.sdp_glue import audio_codecs
from tests.helpers_call import (
    Callee,
    Pair,
    Wire,
    hung_up,
    loopback_account,
    media_options,
    sipp_calling,
    sipp_succeeded,
    until,
)
from tests.helpers_sip import sipp_scenario


def _origin(body: bytes) -> list[str]:
    """The o= line's fields."""
    line = next(x for x in body.decode().splitlines() if x.startswith("o="))
    return line[2:].split()


def _reinvite_oks(wire: Wire) -> list[Response]:
    return [m for m in wire.responses(200) if m.cseq.method == "INVITE"]


@pytest.mark.parametrize("ice", [False, True])
async def test_two_softphones_offerless_reinvite_holds_and_resumes(pair: Pair, ice: bool) -> None:
    """Alice re-INVITEs without SDP; Bob offers his current description in the 200, and
    Alice's answer in the ACK (sendonly: she holds him) is applied to Bob's media."""
    bob_wire = Wire(pair.bob)
    callee = Callee(pair.bob, loopback_account(ice=ice), media_options())
    lines = callee.lines
    caller = Call(pair.alice, loopback_account(ice=ice), media_options())
    async with hung_up(caller, callee):
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
        await until(lambda: bob.on_hold)
        assert "on hold by the peer" in lines
        gate = bob._gate
        assert gate is not None and gate.paused
        before = gate.held_back
        await until(lambda: gate.held_back > before)  # bob's frames are held back
        # resume, the same way
        caller.oa.on_hold = False
        again = await caller.sip.reinvite(None, timeout=5)
        assert again is not None and _origin(again)[1] == o1[1]
        if not ice:
            # the same offer again: nothing changed, same version (RFC 3264 §8)
            assert _origin(again)[2] == o2[2] and again == offer
        await until(lambda: not bob.on_hold)
        assert "resumed by the peer" in lines and not gate.paused
        assert bob.sip is not None and bob.sip.state.value == "connected"
        await caller.hangup()
        assert await asyncio.wait_for(bob.run(), 5) == "remote-bye"


async def _sipp_call(
    sipp_factory: Any, ua: AsyncUserAgent, scenario: str, ice: bool
) -> tuple[Any, Call, Wire, list[str]]:
    wire = Wire(ua)
    sipp = sipp_calling(sipp_factory, ua, sipp_scenario(scenario))
    lines: list[str] = []
    call = Call(ua, loopback_account(ice=ice), media_options(), progress=lines.append)
    incoming: AsyncCall = await asyncio.wait_for(ua.incoming.get(), 10)
    await asyncio.wait_for(call.accept(incoming), 10)
    return sipp, call, wire, lines


@pytest.mark.integration
@pytest.mark.parametrize("ice", [False, True])
async def test_sipp_offerless_reinvite_then_hold_in_the_ack(
    sipp_factory: Any, bob_ua: AsyncUserAgent, ice: bool
) -> None:
    sipp, call, wire, lines = await _sipp_call(
        sipp_factory, bob_ua, "uac_reinvite_no_sdp_hold", ice
    )
    async with hung_up(call):
        assert call.remote is not None and call.remote.rtp == ("127.0.0.1", sipp.media_port)
        await until(lambda: len(_reinvite_oks(wire)) == 2)
        first, second = (m.body for m in _reinvite_oks(wire))
        assert b"m=audio" in second  # our offer, in the 200 to the body-less re-INVITE
        assert _origin(second)[1] == _origin(first)[1]
        assert int(_origin(second)[2]) in (int(_origin(first)[2]), int(_origin(first)[2]) + 1)
        await until(lambda: call.on_hold)  # sipp's ACK answered a=sendonly
        gate = call._gate
        assert gate is not None and gate.paused
        assert "on hold by the peer" in lines
        assert await asyncio.wait_for(call.run(), 15) == "remote-bye"
        await sipp_succeeded(sipp)
        # sipp saw the offer (its ereg check_it would fail the call otherwise)
        got = [m for m in sipp.traced("received") if m.first_line == "SIP/2.0 200 OK"]
        assert len(got) >= 3  # INVITE, re-INVITE, BYE


@pytest.mark.integration
async def test_sipp_ack_without_answer_gets_our_bye(
    sipp_factory: Any, bob_ua: AsyncUserAgent
) -> None:
    sipp, call, wire, lines = await _sipp_call(
        sipp_factory, bob_ua, "uac_reinvite_no_sdp_bare_ack", False
    )
    async with hung_up(call):
        assert await asyncio.wait_for(call.run(), 15) == "no-answer"
        assert any("offer/answer failed (no-answer)" in line for line in lines)
        assert call.stream is None or call.stream.session.closed
        byes = [m for m in wire.sent if isinstance(m, Request) and m.method == "BYE"]
        assert len(byes) == 1
        await sipp_succeeded(sipp)


async def test_two_softphones_codec_change_in_the_ack_answer(pair: Pair) -> None:
    """The ACK's answer picks another codec (RFC 3264 §8.3.2): our media session switches to
    it without ending the call."""
    callee = Callee(pair.bob, loopback_account(ice=False), media_options())
    lines = callee.lines
    caller = Call(pair.alice, loopback_account(ice=False, codecs=("pcmu", "pcma")), media_options())
    async with hung_up(caller, callee):
        bob = await callee.dialled_by(caller)
        assert bob.remote is not None and bob.remote.codec_name == "PCMU/8000"
        assert caller.sip is not None and caller.oa is not None
        caller.oa.media[0].codecs = audio_codecs(["pcma"])  # alice now answers PCMA only
        await caller.sip.reinvite(None, timeout=5)
        await until(lambda: bob.remote is not None and bob.remote.codec_name == "PCMA/8000")
        await bob.media_settled()
        await until(lambda: any("codec changed" in line for line in lines))
        assert bob.stream is not None and "PCMA" in str(bob.stream.session.codec)
        assert bob.sip is not None and bob.sip.state.value == "connected"
        await caller.hangup()
        assert await asyncio.wait_for(bob.run(), 5) == "remote-bye"
