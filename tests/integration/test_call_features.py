"""Call features on real sockets (127.0.0.1): session timers (RFC 4028) between a softphone
:class:`~softphone.call.Call` and a bare SIP user agent that asks for them, and early media
(183 with SDP) between two softphone calls. Intervals are shortened below the RFC's Min-SE of
90 s (by lowering ``sip.invite.MIN_SE`` for the test) so the timers fire within seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sip.aio import AsyncCall
from sip.message import Request, Response
from softphone.call import Call, MediaOptions
from softphone.sdp_glue import LocalTransport, local_media, new_offer_answer
from tests.helpers_call import Pair, Wire, loopback_account, started_pair
from tests.helpers_sip import sipp_scenario


@pytest.fixture
async def pair(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Pair]:
    """alice: a bare caller that asks for a session timer but never refreshes itself; bob
    supports timers. Min-SE lowered to 2 s."""
    monkeypatch.setattr("sip.invite.MIN_SE", 2)
    async with started_pair(supported=("timer",)) as agents:
        yield agents


async def _plain_offer() -> tuple[bytes, Any]:
    from media.aio import open_udp_transport

    sock = await open_udp_transport(("127.0.0.1", 0))
    transport = LocalTransport("127.0.0.1", sock.local_address[1])
    oa = new_offer_answer(local_media(["pcmu"], transport), transport)
    return oa.create_offer().to_bytes(), sock


@pytest.mark.parametrize("refresher", ["uas", "uac"])
async def test_softphone_callee_honours_session_expires(pair: Pair, refresher: str) -> None:
    """A caller asks for Session-Expires 4 s. refresher=uas: the softphone refreshes (UPDATE,
    the caller allows it) every 2 s and the call lives on. refresher=uac: the caller never
    refreshes, so the softphone hangs up (BYE) before the session expires."""
    bob_sent = Wire(pair.bob).sent
    bob = Call(
        pair.bob,
        loopback_account(ice=False),
        MediaOptions(play="tone:660", record="none", media_timeout=None),
    )
    pair.bob.on_incoming = bob.accept
    offer, sock = await _plain_offer()
    try:
        call = await pair.alice.invite(
            pair.bob_uri,
            offer,
            timeout=5,
            headers=[("Session-Expires", f"4;refresher={refresher}")],
        )
        assert isinstance(call, AsyncCall)
        ok = [m for m in bob_sent if isinstance(m, Response) and m.cseq.method == "INVITE"]
        assert ok[-1].status == 200
        assert ok[-1].headers.get("Session-Expires") == f"4;refresher={refresher}"
        running = asyncio.ensure_future(bob.run())
        if refresher == "uas":
            updates: list[Request] = []
            for _ in range(400):  # refreshes every 2 s; wait for three of them
                updates = [m for m in bob_sent if isinstance(m, Request) and m.method == "UPDATE"]
                if len(updates) >= 3:
                    break
                await asyncio.sleep(0.05)
            assert len(updates) >= 3
            assert all(u.headers.get("Session-Expires") == "4;refresher=uac" for u in updates)
            assert not running.done() and not call.ended.done()
            await call.bye(5)
            assert await asyncio.wait_for(running, 5) == "remote-bye"
        else:
            # the BYE comes min(32, 4/3) s before the 4 s expire: no refresh from alice
            assert await asyncio.wait_for(running, 10) == "session-expired"
            assert [m for m in bob_sent if isinstance(m, Request) and m.method == "BYE"]
            assert await call.wait_ended(5) == "remote-bye"
            assert bob.report()["call"]["end_reason"] == "session-expired"
    finally:
        sock.close()


async def test_early_media_then_answer_on_real_sockets_without_ice(pair: Pair) -> None:
    """Plain RTP (no ICE): bob's 183 starts alice's media at once; after the 200 the same
    stream carries on."""
    account = loopback_account(ice=False)
    bob = Call(pair.bob, account, MediaOptions(play="tone:660", record="none"))
    alice = Call(pair.alice, account, MediaOptions(play="tone:440", record="none"))
    dialing, incoming = await pair.ringing(alice)
    await bob.early_media(incoming)
    for _ in range(250):
        if alice.stream is not None and alice.stream.stats().packets_received > 10:
            break
        await asyncio.sleep(0.02)
    assert alice.stream is not None and alice.stream.stats().packets_received > 10
    assert not dialing.done()
    stream = alice.stream
    await bob.accept(incoming)
    await asyncio.wait_for(dialing, 5)
    assert alice.stream is stream
    assert await alice.run(duration=0.3) == "local-bye"
    assert await asyncio.wait_for(bob.run(), 5) == "remote-bye"
    assert alice.succeeded and bob.succeeded


# --- against sipp: early media and a session timer from a real peer ----------------------


@pytest.mark.integration
async def test_sipp_early_media_and_session_refresh(sipp_factory: Any, pair: Pair) -> None:
    """sipp answers 183 with SDP and echoes our RTP: we hear it before the 200; its 200 asks
    for Session-Expires 4 s with us (uac) as refresher: we refresh by UPDATE (it allows it)."""
    sipp = sipp_factory(sipp_scenario("uas_early_media_session_timer"), calls=1, rtp_echo=True)
    sipp.start()
    ua = pair.bob  # supports "timer"
    sent = Wire(ua).sent
    call = Call(ua, loopback_account(ice=False), MediaOptions(play="tone:440", record="none"))
    dialing = asyncio.ensure_future(call.dial(f"sip:service@{sipp.uri_host}"))
    try:
        # sipp echoes our RTP on the early dialog (the session drops it as our own SSRC
        # looping back, after it reached the call's media path)
        started = time.monotonic()
        for _ in range(300):
            if call._gate is not None and call._gate.last_received > started:
                break
            await asyncio.sleep(0.02)
        assert call._gate is not None and call._gate.last_received > started
        assert call.stream is not None and call.stream.frames_sent > 0
        assert not dialing.done() and not call.answered
        stream = call.stream
        await asyncio.wait_for(dialing, 10)
        assert call.stream is stream
        assert call.sip is not None and call.sip.call.session_expires == 4
        assert call.sip.call.we_refresh
        for _ in range(200):
            if any(isinstance(m, Request) and m.method == "UPDATE" for m in sent):
                break
            await asyncio.sleep(0.05)
        updates = [m for m in sent if isinstance(m, Request) and m.method == "UPDATE"]
        assert updates and updates[0].headers.get("Session-Expires") == "4;refresher=uac"
        await asyncio.sleep(0.3)
        await call.hangup()
        assert call.end_reason == "local-bye" and call.answered
        result = await asyncio.to_thread(sipp.wait, 20)
        assert result.ok and result.successful == 1, result.describe()
    finally:
        if not dialing.done():
            dialing.cancel()
        if sipp.running():
            sipp.stop(grace=1)
