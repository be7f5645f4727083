"""DTMF to baresip under the RFC 4733 clock policy (softphone.sdp_glue.RemoteMedia.dtmf_in_band):
Opus answered with telephone-event/8000 only (what baresip does) or with none: no RFC 4733
events with a wrong clock, the digits go by SIP INFO (dtmf-relay) and baresip logs each one
("call: received DTMF"). (baresip 1.0 logs nothing for RFC 4733 events it receives, so the
in-band case is checked between two softphones, tests/unit/test_call_plumbing.py.)"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from sip.aio import AsyncUserAgent
from sip.message import Request
from sip.ua import UAConfig
from softphone.call import Call, MediaOptions
from softphone.config import Account, HostPort
from tests.helpers_call import Wire


@pytest.mark.integration
@pytest.mark.parametrize(
    ("codecs", "event_rate", "in_band"),
    [(("opus", "pcmu"), 8000, False), (("opus",), None, False)],
)
async def test_dtmf_reaches_baresip(
    baresip_factory: Any,
    tmp_path: Path,
    codecs: tuple[str, ...],
    event_rate: int | None,
    in_band: bool,
) -> None:
    baresip = baresip_factory(user="carol", domain="127.0.0.1")
    ua = AsyncUserAgent(UAConfig(user="alice", domain="127.0.0.1", local_port=0))
    await ua.start("127.0.0.1", 0, transports=("UDP",))
    wire = Wire(ua)
    call = Call(
        ua,
        Account(bind=HostPort("127.0.0.1", 0), codecs=codecs),
        MediaOptions(play="tone:440", record="none", answer_timeout=10.0),
    )
    try:
        await asyncio.wait_for(call.dial(baresip.contact_uri), 15)
        remote = call.remote
        assert remote is not None
        event = remote.telephone_event
        assert (event.clock_rate if event is not None else None) == event_rate
        assert remote.dtmf_in_band == in_band
        await asyncio.sleep(0.3)
        assert call.send_dtmf("58")
        for digit in "58":
            log = await asyncio.to_thread(baresip.wait_for_log, rf"received DTMF: '{digit}'", 10.0)
            assert re.search(r"received DTMF", log)
        infos = [m for m in wire.requests("INFO") if isinstance(m, Request)]
        assert [m.body for m in infos] == [
            b"Signal=5\r\nDuration=160\r\n",
            b"Signal=8\r\nDuration=160\r\n",
        ]
    finally:
        await call.hangup()
        await ua.close(timeout=1.0)
