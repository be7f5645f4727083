"""Late offer against sipp (RFC 3261 §13.3.1): sipp's UAC sends an INVITE without SDP, our
softphone callee offers in its 200 (ICE, opus, PCMU ...), sipp answers in the ACK with plain
PCMU at its media port and echoes our RTP; the call runs until sipp's BYE. And the other way:
our INVITE without SDP, sipp's offer in its 200, our answer in the ACK (scenarios in
tests/data/sipp)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sip.aio import AsyncCall, AsyncUserAgent
from sip.message import Response
from softphone.call import Call, MediaOptions
from tests.helpers_call import (
    Wire,
    hung_up,
    loopback_account,
    sipp_calling,
    sipp_succeeded,
    until,
)
from tests.helpers_sip import sipp_scenario


@pytest.mark.integration
@pytest.mark.parametrize("ice", [True, False])
async def test_sipp_late_offer_answered_in_the_ack(
    sipp_factory: Any, bob_ua: AsyncUserAgent, ice: bool
) -> None:
    wire = Wire(bob_ua)
    sipp = sipp_calling(
        sipp_factory, bob_ua, sipp_scenario("uac_late_offer"), call_duration_ms=2500
    )
    call = Call(bob_ua, loopback_account(ice=ice), MediaOptions(play="tone:440", record="none"))
    async with hung_up(call):
        incoming: AsyncCall = await asyncio.wait_for(bob_ua.incoming.get(), 10)
        assert not incoming.offer
        started = time.monotonic()
        await asyncio.wait_for(call.accept(incoming), 10)
        ok = [m for m in wire.sent if isinstance(m, Response) and m.status == 200]
        assert ok and b"m=audio" in ok[0].body  # our offer went in the 200
        assert (b"a=ice-ufrag" in ok[0].body) == ice
        # sipp's answer (in the ACK) was applied: PCMU to its media port
        assert call.late_offer and call.remote is not None
        assert call.remote.codec_name == "PCMU/8000" and call.remote.ice is None
        assert call.remote.rtp == ("127.0.0.1", sipp.media_port)
        # sipp echoes our RTP back to where it came from: it reached sipp from the port we
        # offered (the session then drops it as our own SSRC looping back)
        gate = call._gate
        assert gate is not None
        await until(lambda: gate.last_received > started)
        assert call.stream is not None and call.stream.frames_sent > 0
        assert await asyncio.wait_for(call.run(), 15) == "remote-bye"
        await sipp_succeeded(sipp)


@pytest.mark.integration
async def test_our_offerless_invite_answered_by_sipp(
    sipp_factory: Any, bob_ua: AsyncUserAgent
) -> None:
    """Our caller sends the INVITE without SDP (MediaOptions.late_offer); sipp's 200 carries
    the offer (PCMA first, no ICE) and our answer goes in the ACK (sipp checks its m= line);
    RTP flows to sipp's media port, which echoes it."""
    sipp = sipp_factory(sipp_scenario("uas_offer_in_200"), calls=1, rtp_echo=True)
    sipp.start()
    wire = Wire(bob_ua)
    call = Call(
        bob_ua,
        loopback_account(),
        MediaOptions(play="tone:440", record="none", late_offer=True),
    )
    async with hung_up(call):
        started = time.monotonic()
        await asyncio.wait_for(call.dial(f"sip:service@{sipp.uri_host}"), 10)
        invite = wire.requests("INVITE")[0]
        assert not invite.body
        ack = wire.requests("ACK")[0]
        assert b"m=audio" in ack.body and b"a=ice-ufrag" not in ack.body  # sipp has no ICE
        assert call.remote is not None and call.remote.codec_name == "PCMA/8000"
        assert call.remote.rtp == ("127.0.0.1", sipp.media_port)
        gate = call._gate
        assert gate is not None
        await until(lambda: gate.last_received > started)  # sipp echoed our RTP
        await call.hangup()
        assert call.end_reason == "local-bye"
        await sipp_succeeded(sipp)
