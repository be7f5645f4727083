"""Our asyncio user agent against sipp scenarios (tests/peers/sipp/) on 127.0.0.1.

sipp's UAC calls our auto-answering UAS 200 times at 20 calls/s with no failed call; sipp's UAS
answers our UAC; a sipp UAC that retransmits its INVITE and one that CANCELs; our UAC cancels a
ringing sipp UAS.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from sip.aio import AsyncCall, AsyncUserAgent
from sip.ua import UAConfig
from tests.helpers_net import wait_until

pytestmark = pytest.mark.integration

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
ANSWER = OFFER.replace(b"30000", b"40000")


@asynccontextmanager
async def running_ua(
    user: str = "service", transport: str = "udp"
) -> AsyncIterator[AsyncUserAgent]:
    ua = AsyncUserAgent(
        UAConfig(
            user=user, domain="127.0.0.1", local_host="127.0.0.1", local_port=0, transport=transport
        )
    )
    await ua.start()
    try:
        yield ua
    finally:
        await ua.close()


def sipp_calling(sipp_factory: Any, ua: AsyncUserAgent, scenario: str, **kw: Any) -> Any:
    """A sipp client running ``scenario`` against our UA's "service" user (not started)."""
    return sipp_factory(
        scenario, remote=f"127.0.0.1:{ua.config.local_port}", service="service", **kw
    )


def auto_answer(ua: AsyncUserAgent) -> list[AsyncCall]:
    calls: list[AsyncCall] = []

    async def on_incoming(call: AsyncCall) -> None:
        calls.append(call)
        call.ring()
        await call.answer(ANSWER)

    ua.on_incoming = on_incoming
    return calls


def _run_blocking(sipp: Any, timeout: float) -> Any:
    if sipp.transport == "tcp" and sipp.remote:
        # Sipp.start() waits for a UDP socket that a TCP client never binds: run it directly.
        sipp.workdir.mkdir(parents=True, exist_ok=True)
        with open(sipp.log_path, "w") as log:
            proc = subprocess.run(
                sipp.argv(), stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
        result = sipp.result()
        result.returncode = proc.returncode
        return result
    return sipp.run(timeout)


async def run_sipp(sipp: Any, timeout: float) -> Any:
    """Run a (blocking) sipp to completion in a thread while our event loop keeps serving."""
    return await asyncio.to_thread(_run_blocking, sipp, timeout)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_uac_200_calls_at_20cps(sipp_factory, transport):
    async with running_ua(transport=transport) as ua:
        calls = auto_answer(ua)
        sipp = sipp_calling(
            sipp_factory, ua, "uac_sdp", transport=transport, calls=200, rate=20, limit=50,
            call_duration_ms=200, trace_msg=False,
        )  # fmt: skip
        result = await run_sipp(sipp, 90)
        assert result.successful == 200, result.describe()
        assert result.failed == 0, result.describe()
        assert result.ok, result.describe()
        assert len(calls) == 200
        await wait_until(lambda: all(c.ended.done() for c in calls))  # the last BYEs' 200s
        ended = [c for c in calls if c.ended.done()]
        assert len(ended) == 200
        assert all(c.ended.result() == "remote-bye" for c in ended)


async def test_sipp_uac_retransmitting_invite(sipp_factory):
    async with running_ua() as ua:
        calls = auto_answer(ua)
        sipp = sipp_calling(
            sipp_factory, ua, "uac_invite_retrans", calls=3, rate=5, call_duration_ms=100
        )
        result = await run_sipp(sipp, 60)
        assert result.ok and result.successful == 3, result.describe()
        # one call per INVITE, retransmission absorbed by the transaction layer
        assert len(calls) == 3
        # our 2xx was retransmitted while sipp withheld its ACK (RFC 3261 §13.3.1.4)
        received_200 = [
            m for m in sipp.traced("received") if m.first_line.startswith("SIP/2.0 200")
        ]
        assert len(received_200) > 3


async def test_sipp_uac_cancels(sipp_factory):
    rung: list[AsyncCall] = []

    def on_incoming(call: AsyncCall) -> None:
        rung.append(call)
        call.ring()

    async with running_ua() as ua:
        ua.on_incoming = on_incoming
        sipp = sipp_calling(sipp_factory, ua, "uac_cancel", calls=3, rate=5)
        result = await run_sipp(sipp, 60)
        assert result.ok and result.successful == 3, result.describe()
        assert len(rung) == 3
        for call in rung:
            assert await call.wait_ended(5) == "remote-cancel"
            assert call.call.final_status == 487


@asynccontextmanager
async def calling_sipp_uas(
    sipp_factory: Any, scenario: str, calls: int
) -> AsyncIterator[tuple[AsyncUserAgent, Any]]:
    """Our UA ("caller") and a started sipp UAS running ``scenario`` for ``calls`` calls."""
    sipp = sipp_factory(scenario, calls=calls)
    sipp.start()
    try:
        async with running_ua("caller") as ua:
            yield ua, sipp
    finally:
        if sipp.running():
            sipp.stop(grace=1)


async def test_our_uac_against_sipp_uas(sipp_factory):
    async with calling_sipp_uas(sipp_factory, "uas_sdp", 3) as (ua, sipp):
        for _ in range(3):
            call = await ua.invite(f"sip:service@{sipp.uri_host}", OFFER, timeout=10)
            assert call.remote_sdp is not None and b"m=audio" in call.remote_sdp
            assert call.call.final_status == 200
            assert await call.bye(10) == "local-bye"
        result = await asyncio.to_thread(sipp.wait, 30)
        assert result.ok and result.successful == 3, result.describe()


async def test_our_uac_cancels_ringing_sipp_uas(sipp_factory):
    async with calling_sipp_uas(sipp_factory, "uas_ring_wait", 1) as (ua, sipp):
        call = ua.start_call(f"sip:service@{sipp.uri_host}", OFFER)
        await asyncio.wait_for(call.ringing.wait(), 10)
        await call.cancel(10)
        assert call.call.final_status == 487
        result = await asyncio.to_thread(sipp.wait, 30)
        assert result.ok and result.successful == 1, result.describe()
