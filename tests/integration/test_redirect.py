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
