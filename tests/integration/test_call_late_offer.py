"""Late offer against sipp (RFC 3261 §13.3.1): sipp's UAC sends an INVITE without SDP, our
softphone callee offers in its 200 (ICE, opus, PCMU ...), sipp answers in the ACK with plain
PCMU at its media port and echoes our RTP; the call runs until sipp's BYE."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from sip.aio import AsyncCall, AsyncUserAgent
from sip.message import Response
from sip.ua import UAConfig
from softphone.call import Call, MediaOptions
from softphone.config import Account, HostPort
from tests.unit.test_call_features import Wire, _until

LOOPBACK = HostPort("127.0.0.1", 0)

UAC_LATE_OFFER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac late offer">
  <send retrans="500"><![CDATA[

      INVITE sip:[service]@[domain] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[user]@[domain]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[domain]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <[contact]>
      Max-Forwards: 70
      Subject: late offer
      Content-Length: 0

    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true" rtd="true"/>
  <send><![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[user]@[domain]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <[contact]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=ptime:20
      a=sendrecv

    ]]></send>
  <pause/>
  <send retrans="500"><![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[user]@[domain]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <[contact]>
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="200" crlf="true"/>
  <timewait milliseconds="600"/>
</scenario>
"""


UAS_OFFER_IN_200 = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas offer in the 200, answer in the ACK">
  <recv request="INVITE" crlf="true"/>
  <send retrans="500"><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 0
      a=rtpmap:8 PCMA/8000
      a=rtpmap:0 PCMU/8000
      a=ptime:20
      a=sendrecv

    ]]></send>
  <recv request="ACK">
    <action>
      <ereg regexp="m=audio [0-9]+ RTP/AVP 8" search_in="body" check_it="true"
            assign_to="answer"/>
      <log message="answer in the ACK: [$answer]"/>
    </action>
  </recv>
  <recv request="BYE"/>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
  <timewait milliseconds="400"/>
</scenario>
"""


@pytest.fixture
async def ua() -> Any:
    agent = AsyncUserAgent(UAConfig(user="bob", domain="127.0.0.1", local_port=0))
    await agent.start("127.0.0.1", 0, transports=("UDP",))
    yield agent
    await agent.close(timeout=1.0)


@pytest.mark.integration
@pytest.mark.parametrize("ice", [True, False])
async def test_sipp_late_offer_answered_in_the_ack(
    sipp_factory: Any, tmp_path: Path, ua: AsyncUserAgent, ice: bool
) -> None:
    scenario = tmp_path / "uac_late_offer.xml"
    scenario.write_text(UAC_LATE_OFFER)
    wire = Wire(ua)
    sipp = sipp_factory(
        scenario,
        f"127.0.0.1:{ua.config.local_port}",
        calls=1,
        service="bob",
        rtp_echo=True,
        call_duration_ms=2500,
    )
    sipp.start()
    call = Call(ua, Account(bind=LOOPBACK, ice=ice), MediaOptions(play="tone:440", record="none"))
    try:
        incoming: AsyncCall = await asyncio.wait_for(ua.incoming.get(), 10)
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
        await _until(lambda: gate.last_received > started)
        assert call.stream is not None and call.stream.frames_sent > 0
        assert await asyncio.wait_for(call.run(), 15) == "remote-bye"
        result = await asyncio.to_thread(sipp.wait, 20)
        assert result.ok and result.successful == 1, result.describe()
    finally:
        if not call.end_reason:
            await call.hangup()
        if sipp.running():
            sipp.stop(grace=1)


@pytest.mark.integration
async def test_our_offerless_invite_answered_by_sipp(
    sipp_factory: Any, tmp_path: Path, ua: AsyncUserAgent
) -> None:
    """Our caller sends the INVITE without SDP (MediaOptions.late_offer); sipp's 200 carries
    the offer (PCMA first, no ICE) and our answer goes in the ACK (sipp checks its m= line);
    RTP flows to sipp's media port, which echoes it."""
    scenario = tmp_path / "uas_offer_in_200.xml"
    scenario.write_text(UAS_OFFER_IN_200)
    sipp = sipp_factory(scenario, calls=1, rtp_echo=True)
    sipp.start()
    wire = Wire(ua)
    call = Call(
        ua,
        Account(bind=LOOPBACK),
        MediaOptions(play="tone:440", record="none", late_offer=True),
    )
    try:
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
        await _until(lambda: gate.last_received > started)  # sipp echoed our RTP
        await call.hangup()
        assert call.end_reason == "local-bye"
        result = await asyncio.to_thread(sipp.wait, 20)
        assert result.ok and result.successful == 1, result.describe()
    finally:
        if not call.end_reason:
            await call.hangup()
        if sipp.running():
            sipp.stop(grace=1)
