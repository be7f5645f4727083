"""RFC 3261 §8.1.3.4 over real UDP sockets: a redirect server answers alice's INVITE with 302
and bob's address as Contact; alice sends the INVITE there and bob answers."""

from __future__ import annotations

import asyncio

import pytest

from sip.aio import AsyncUserAgent, CallError
from sip.message import Request, Response, make_response, new_tag
from sip.transport import Source, TransportLayer
from sip.ua import CallRedirected, UAConfig
from tests.integration.test_outbound import auto_answer
from tests.integration.test_sip_robustness import offer

pytestmark = pytest.mark.integration


class RedirectServer:
    """Answers every INVITE with ``status`` and the given Contacts; keeps what it received."""

    def __init__(self, status: int, *contacts: str) -> None:
        self.status = status
        self.contacts = contacts
        self.received: list[Request] = []
        self.layer = TransportLayer(on_message=self._on_message)

    async def start(self) -> int:
        await self.layer.listen_udp("127.0.0.1", 0)
        return self.layer.local_address("UDP")[1]

    def _on_message(self, message: Request | Response, source: Source) -> None:
        if not isinstance(message, Request):
            return
        self.received.append(message)
        if message.method == "INVITE":
            resp = make_response(message, self.status, to_tag=new_tag())
            for contact in self.contacts:
                resp.headers.add("Contact", contact)
            asyncio.get_running_loop().create_task(self.layer.send_response(resp, source))


def user_agent(user: str) -> AsyncUserAgent:
    cfg = UAConfig(user=user, domain="example.org", local_host="127.0.0.1", local_port=0)
    return AsyncUserAgent(cfg, binding_check_interval=None)


async def test_call_follows_302_to_the_contact():
    alice, bob = user_agent("alice"), user_agent("bob")
    answered = auto_answer(bob, 40050)
    await alice.start()
    await bob.start()
    server = RedirectServer(302, f"<sip:bob@127.0.0.1:{bob.config.local_port}>")
    port = await server.start()
    try:
        call = await alice.invite(f"sip:bob@127.0.0.1:{port}", offer(30050), timeout=10)
        assert call.remote_sdp is not None
        redirected = [e for e in call.events if isinstance(e, CallRedirected)]
        assert [r.target for r in redirected] == [f"sip:bob@127.0.0.1:{bob.config.local_port}"]
        assert [r.method for r in server.received] == ["INVITE", "ACK"]
        assert len(answered) == 1 and answered[0].call_id == call.call_id
        assert await call.bye(timeout=5) == "local-bye"
        assert await answered[0].wait_ended(5) == "remote-bye"
        assert [r.method for r in server.received] == ["INVITE", "ACK"]  # not in the dialog
    finally:
        await alice.close()
        await bob.close()
        await server.layer.close()


async def test_redirect_to_itself_is_not_followed():
    alice = user_agent("alice")
    await alice.start()
    server = RedirectServer(301, "<sip:bob@127.0.0.1:1>")
    port = await server.start()
    server.contacts = (f"<sip:bob@127.0.0.1:{port}>",)  # a loop back to itself
    try:
        with pytest.raises(CallError) as failed:
            await alice.invite(f"sip:bob@127.0.0.1:{port}", offer(30052), timeout=10)
        assert failed.value.status == 301
        assert [r.method for r in server.received] == ["INVITE", "ACK"]
    finally:
        await alice.close()
        await server.layer.close()


REDIRECT_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!-- UAS: 100 then 302 with the Contact given as -key target; expects the ACK. -->
<scenario name="uas redirect">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[

      SIP/2.0 100 Trying
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[

      SIP/2.0 302 Moved Temporarily
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <[target]>
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
</scenario>
"""


async def test_call_redirected_by_sipp_reaches_a_sipp_uas(sipp_factory, tmp_path):
    """Interop: sipp answers 302 (after a 100); we ACK it and send the INVITE to the Contact,
    another sipp that answers with SDP; both sipp runs count their call as successful."""
    scenario = tmp_path / "uas_redirect.xml"
    scenario.write_text(REDIRECT_SCENARIO)
    callee = sipp_factory("uas_sdp", calls=1)
    callee.start()
    redirector = sipp_factory(scenario, calls=1, keys={"target": f"sip:service@{callee.uri_host}"})
    redirector.start()
    alice = user_agent("alice")
    await alice.start()
    try:
        call = await alice.invite(f"sip:service@{redirector.uri_host}", offer(30054), timeout=15)
        assert call.remote_sdp is not None and b"m=audio" in call.remote_sdp
        redirected = [e for e in call.events if isinstance(e, CallRedirected)]
        assert [(r.status, r.target) for r in redirected] == [
            (302, f"sip:service@{callee.uri_host}")
        ]
        assert await call.bye(10) == "local-bye"
        for sipp in (redirector, callee):
            result = await asyncio.to_thread(sipp.wait, 30)
            assert result.ok and result.successful == 1, result.describe()
    finally:
        await alice.close()
        for sipp in (redirector, callee):
            if sipp.running():
                sipp.stop(grace=1)
