"""Robustness of registration and target selection against a real Kamailio.

- A UDP user agent notices that the registrar restarted and lost its binding (UDP keepalives
  get no pong; the AOR check through the proxy gets 404/480) and registers again, so incoming
  calls reach it again.
- RFC 3263 §4.3 failover: the registrar's first SRV target does not answer (a dead loopback
  port: TCP connect refused, UDP silence) and the request goes to the next target.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sip.aio import AsyncCall, AsyncUserAgent
from sip.locate import NaptrRecord, SrvRecord
from sip.message import Response
from sip.offer_answer import LocalMedia, OfferAnswer
from sip.registration import Registered
from sip.timers import TimerConfig
from sip.ua import UAConfig
from tests.peers.ports import free_port

pytestmark = pytest.mark.integration


def make_ua(kamailio: Any, user: str, **kw: Any) -> AsyncUserAgent:
    host, port = kamailio.address("udp")
    cfg = UAConfig(
        user=user,
        domain=kamailio.domain,
        password=kamailio.users[user],
        outbound_proxy=f"sip:{host}:{port};transport=udp",
        registrar=f"sip:{kamailio.domain}",
        transport="udp",
        local_host="127.0.0.1",
        local_port=0,
    )
    return AsyncUserAgent(cfg, **kw)


def offer(port: int) -> bytes:
    return OfferAnswer([LocalMedia("127.0.0.1", port)]).create_offer().to_bytes()


async def wait_contacts(kamailio: Any, user: str, seconds: float) -> list[str]:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        contacts = await asyncio.to_thread(kamailio.contacts, user)
        if contacts:
            return contacts
        await asyncio.sleep(0.2)
    return []


async def test_udp_ua_registers_again_after_registrar_restart(kamailio):
    """Kamailio restarts (its in-memory bindings are gone); a long registration lifetime
    would leave alice unreachable for half an hour, but the AOR check (OPTIONS to herself
    through the proxy, answered 404 now) makes her register again, and bob's call reaches her."""
    alice = make_ua(kamailio, "alice", binding_check_interval=0.5, keepalive_interval=0.5)
    bob = make_ua(kamailio, "bob")
    await alice.start()
    await bob.start()
    try:
        reg = await alice.register(expires=3600)
        assert reg.expires == 3600  # the refresh alone would come after 30 minutes
        assert kamailio.contacts("alice")
        seen: list[Any] = []
        alice.on_event = seen.append
        await asyncio.to_thread(kamailio.restart)
        assert await asyncio.to_thread(kamailio.contacts, "alice") == []
        assert await wait_contacts(kamailio, "alice", 30.0), "alice never registered again"
        assert any(isinstance(e, Registered) for e in seen)

        async def on_incoming(call: AsyncCall) -> None:
            call.ring()
            await call.answer(offer(40010))

        alice.on_incoming = on_incoming
        await bob.register(expires=300)
        call = await bob.invite(f"sip:alice@{kamailio.domain}", offer(30010), timeout=20)
        assert call.remote_sdp is not None
        incoming = await asyncio.wait_for(alice.incoming.get(), 5)
        assert incoming.call_id == call.call_id
        assert await call.bye(timeout=10) == "local-bye"
    finally:
        await alice.close()
        await bob.close()


async def test_udp_registration_lifetime_is_capped(kamailio):
    """Over UDP the UA asks for the NAT lifetime (default 600 s) instead of 3600 s."""
    ua = make_ua(kamailio, "alice", binding_check_interval=None)
    await ua.start()
    try:
        reg = await ua.register()
        assert reg.expires == 600
    finally:
        await ua.close()
    ua = make_ua(kamailio, "alice", udp_register_expires=None, binding_check_interval=None)
    await ua.start()
    try:
        reg = await ua.register()
        assert reg.expires == 3600
    finally:
        await ua.close()


class TwoTargets:
    """DNS for the Kamailio domain: SRV gives a dead target first, then Kamailio."""

    def __init__(self, domain: str, dead_port: int, live_port: int) -> None:
        self.domain = domain
        self.records = [
            SrvRecord(10, 0, dead_port, "dead.test"),
            SrvRecord(20, 0, live_port, "live.test"),
        ]
        self.questions: list[str] = []

    async def naptr(self, name: str) -> list[NaptrRecord]:
        return []

    async def srv(self, name: str) -> list[SrvRecord]:
        self.questions.append(name)
        return list(self.records) if name.endswith("." + self.domain) else []

    async def addresses(self, host: str) -> list[str]:
        return ["127.0.0.1"] if host in ("dead.test", "live.test") else []


def located_ua(kamailio: Any, user: str, transport: str, lookup: TwoTargets) -> AsyncUserAgent:
    cfg = UAConfig(
        user=user,
        domain=kamailio.domain,
        password=kamailio.users[user],
        registrar=f"sip:{kamailio.domain}",  # no outbound proxy: the registrar's SRV targets
        transport=transport,
        local_host="127.0.0.1",
        local_port=0,
        timers=TimerConfig(t1=0.05),  # Timer F 3.2 s: the dead UDP target times out quickly
    )
    return AsyncUserAgent(cfg, lookup=lookup, binding_check_interval=None)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_register_fails_over_to_the_next_srv_target(kamailio, transport):
    dead = free_port("127.0.0.1", udp=True, tcp=True)
    lookup = TwoTargets(kamailio.domain, dead, kamailio.port)
    ua = located_ua(kamailio, "alice", transport, lookup)
    await ua.start()
    try:
        reg = await ua.register(expires=60, timeout=30)
        assert reg.expires == 60
        assert kamailio.contacts("alice")
        assert f"_sip._{transport}.{kamailio.domain}" in lookup.questions
        # later requests go straight to the target that answered
        status = await ua._check_binding(timeout=10)
        assert status == 200
    finally:
        await ua.close()


async def test_register_refresh_sends_credentials_preemptively(kamailio):
    """After the first challenge, refreshes carry the realm's credentials (next nc): no 401."""
    ua = make_ua(kamailio, "alice", binding_check_interval=None)
    challenges: list[int] = []
    registers_ok: list[int] = []
    deliver = ua._on_message

    def counting(message: Any, source: Any) -> None:
        if isinstance(message, Response) and message.cseq.method == "REGISTER":
            if message.status == 401:
                challenges.append(message.cseq.seq)
            elif message.status == 200:
                registers_ok.append(message.cseq.seq)
        deliver(message, source)

    ua._on_message = counting  # type: ignore[method-assign]
    await ua.start()
    try:
        await ua.register(expires=2)  # refreshed every second
        for _ in range(100):
            if len(registers_ok) >= 4:
                break
            await asyncio.sleep(0.1)
        assert len(registers_ok) >= 4
        assert len(challenges) == 1, challenges  # only the very first REGISTER
        assert kamailio.contacts("alice")
    finally:
        await ua.close()


async def test_aor_check_answered_by_another_device_still_registers_again(kamailio):
    """Alice's binding is gone but another contact of her AOR (here: bob's UA, which answers
    OPTIONS) is registered: the check's 200 does not come from alice herself, so she still
    registers again."""
    alice = make_ua(kamailio, "alice", binding_check_interval=0.5)
    bob = make_ua(kamailio, "bob", binding_check_interval=None)
    await alice.start()
    await bob.start()
    try:
        await alice.register(expires=3600)
        await bob.register(expires=300)
        mine = kamailio.contacts("alice")
        assert len(mine) == 1
        kamailio.rpc("ul.rm", "location", "alice")
        kamailio.add_contact("alice", bob.ua.contact_uri(), expires=300)
        assert kamailio.contacts("alice") == [bob.ua.contact_uri()]
        loop = asyncio.get_running_loop()
        end = loop.time() + 20.0
        while loop.time() < end:
            contacts = await asyncio.to_thread(kamailio.contacts, "alice")
            if len(contacts) == 2:
                break
            await asyncio.sleep(0.2)
        assert len(contacts) == 2 and bob.ua.contact_uri() in contacts
    finally:
        await alice.close()
        await bob.close()


async def test_options_to_own_aor_answered_404_registers_again(kamailio):
    """The application's own OPTIONS to its AOR gets 404 (binding lost): register again."""
    ua = make_ua(kamailio, "alice", binding_check_interval=None)
    await ua.start()
    try:
        await ua.register(expires=3600)
        kamailio.rpc("ul.rm", "location", "alice")
        assert kamailio.contacts("alice") == []
        result = await ua.options(f"sip:alice@{kamailio.domain}", timeout=10)
        assert result.status == 404
        assert await wait_contacts(kamailio, "alice", 10.0)
    finally:
        await ua.close()
