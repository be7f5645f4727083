"""Our asyncio user agent against a real Kamailio registrar/proxy on 127.0.0.1.

Register (MD5 and SHA-256 digest), refresh, unregister; two of our UAs register and call each
other through the proxy with SDP offer/answer (sip.offer_answer), the BYE following the
Record-Route through Kamailio; over UDP, TCP and TLS.
"""

from __future__ import annotations

import asyncio
import json
import re
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from sip.aio import AsyncCall, AsyncUserAgent, CallError
from sip.invite import Call
from sip.offer_answer import LocalMedia, Negotiation, OfferAnswer
from sip.registration import Registered
from sip.transport import TlsConfig
from sip.ua import UAConfig
from tests.helpers_net import wait_until

pytestmark = pytest.mark.integration

TRANSPORTS = ["udp", "tcp", "tls"]


def make_ua(kamailio: Any, user: str, transport: str = "udp", **kw: Any) -> AsyncUserAgent:
    host, port = kamailio.address(transport)
    cfg = UAConfig(
        user=user,
        domain=kamailio.domain,
        password=kamailio.users.get(user, "wrong-password"),
        outbound_proxy=f"sip:{host}:{port};transport={transport}",
        registrar=f"sip:{kamailio.domain}",
        transport=transport,
        local_host="127.0.0.1",
        local_port=0,
        **kw,
    )
    tls = None
    if transport == "tls":
        pki = kamailio.pki
        if user == "bob":  # bob also listens for TLS; alice is a TLS client only
            tls = TlsConfig(
                cafile=str(pki.ca_file), certfile=str(pki.cert_file), keyfile=str(pki.key_file)
            )
        else:
            tls = TlsConfig(cafile=str(pki.ca_file))
    return AsyncUserAgent(cfg, tls=tls)


def media(port: int) -> OfferAnswer:
    return OfferAnswer([LocalMedia("127.0.0.1", port)])


def offer(port: int) -> bytes:
    return media(port).create_offer().to_bytes()


def answering(ua: AsyncUserAgent, port: int) -> OfferAnswer:
    """Auto-answer incoming calls with RFC 3264 answers (re-offers too)."""
    oa = media(port)

    def on_offer(call: Call, offer: bytes, ctype: str | None) -> bytes:
        answer, _ = oa.process_offer(offer)
        return answer.to_bytes()

    async def on_incoming(call: AsyncCall) -> None:
        call.ring()
        await call.answer(on_offer(call.call, call.offer or b"", None))

    ua.config.offer_handler = on_offer
    ua.on_incoming = on_incoming
    return oa


@asynccontextmanager
async def running(*uas: AsyncUserAgent) -> AsyncIterator[None]:
    """Start the user agents; close them all on the way out."""
    try:
        for ua in uas:
            await ua.start()
        yield
    finally:
        for ua in uas:
            await ua.close()


@asynccontextmanager
async def registered(
    kamailio: Any, *users: str, transport: str = "udp"
) -> AsyncIterator[list[AsyncUserAgent]]:
    """One started UA per user, each registered with the Kamailio; closed on the way out."""
    uas = [make_ua(kamailio, user, transport) for user in users]
    async with running(*uas):
        for ua in uas:
            await ua.register(expires=300)
        yield uas


@dataclass
class Established:
    call: AsyncCall  # the caller's side
    bcall: AsyncCall  # the callee's side
    caller_media: OfferAnswer
    callee_media: OfferAnswer
    negotiated: Negotiation  # the caller's view of the answer


async def establish(
    caller: AsyncUserAgent, callee: AsyncUserAgent, target: str, port: int, timeout: float
) -> Established:
    """``caller`` calls ``target`` (which reaches ``callee``, auto-answering) with RFC 3264 media
    on ``port`` (the callee's on ``port`` + 10000); returns once the callee saw the ACK."""
    callee_media = answering(callee, port + 10000)
    caller_media = media(port)
    call = await caller.invite(target, caller_media.create_offer().to_bytes(), timeout=timeout)
    assert call.remote_sdp is not None
    negotiated = caller_media.process_answer(call.remote_sdp)
    bcall = await asyncio.wait_for(callee.incoming.get(), 5)
    await bcall.wait_confirmed(10)
    return Established(call, bcall, caller_media, callee_media, negotiated)


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_register_refresh_unregister(kamailio_factory, algorithm):
    k = kamailio_factory(algorithm=algorithm)
    ua = make_ua(k, "alice")
    async with running(ua):
        reg = await ua.register(expires=60)
        assert isinstance(reg, Registered)
        assert reg.expires > 0
        contacts = k.contacts("alice")
        assert any(f":{ua.config.local_port}" in c for c in contacts), contacts
        # refresh: same Call-ID, higher CSeq, still registered
        r = ua.ua.registrations[0]
        first_cseq = r.cseq
        reg2 = await ua.register(expires=60)
        assert reg2.expires > 0 and r.cseq > first_cseq
        await ua.unregister()
        assert k.contacts("alice") == []


async def test_register_wrong_password_fails(kamailio):
    ua = make_ua(kamailio, "alice")
    ua.config.password = "not-the-password"
    ua.ua = type(ua.ua)(ua.config)
    async with running(ua):
        with pytest.raises(Exception) as info:
            await ua.register(expires=60)
        assert getattr(info.value, "status", None) == 401


async def test_register_timer_refresh(kamailio_factory):
    """With a short lifetime the core refreshes on its own before expiry."""
    k = kamailio_factory(min_expires=1)
    ua = make_ua(k, "bob")
    async with running(ua):
        await ua.register(expires=4)
        seen: list[Any] = []
        ua.on_event = seen.append

        def refreshed() -> bool:
            return sum(isinstance(e, Registered) for e in seen) >= 2

        await wait_until(refreshed, timeout=10)
        assert refreshed()
        assert k.contacts("bob")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_two_uas_call_through_kamailio(kamailio, transport):
    async with registered(kamailio, "alice", "bob", transport=transport) as (alice, bob):
        mark = kamailio.log_mark()
        c = await establish(alice, bob, f"sip:bob@{kamailio.domain}", 30000, timeout=20)
        neg = c.negotiated
        assert neg.audio is not None
        assert neg.audio.remote_rtp == ("127.0.0.1", 40000)
        assert c.callee_media.negotiation is not None
        assert c.callee_media.negotiation.audio is not None
        assert c.callee_media.negotiation.audio.remote_rtp == ("127.0.0.1", 30000)
        # Record-Route honoured: route set points at the proxy
        d = c.call.call.dialog
        assert d is not None and d.route_set
        assert all("lr" in r for r in d.route_set)
        reason = await c.call.bye(timeout=10)
        assert reason == "local-bye"
        assert await c.bcall.wait_ended(10) == "remote-bye"
        # the BYE went through the proxy (loose_route logged it)
        kamailio.wait_for_log(r"in-dialog BYE " + re.escape(c.call.call_id), 5, mark)
    assert kamailio.contacts("alice") == []


async def test_callee_hangs_up_and_reinvite_hold(kamailio):
    async with registered(kamailio, "alice", "bob") as (alice, bob):
        c = await establish(alice, bob, f"sip:bob@{kamailio.domain}", 30002, timeout=20)
        answer = await c.call.reinvite(c.caller_media.hold().to_bytes(), timeout=10)
        assert answer is not None
        neg = c.caller_media.process_answer(answer)
        assert neg.audio is not None and not neg.audio.receives  # we hold: sendonly
        assert c.bcall.remote_sdp is not None and b"a=sendonly" in c.bcall.remote_sdp
        assert await c.bcall.bye(10) == "local-bye"
        assert await c.call.wait_ended(10) == "remote-bye"


async def test_call_to_unregistered_user_fails(kamailio):
    async with registered(kamailio, "alice") as (alice,):
        with pytest.raises(CallError) as info:
            await alice.invite(f"sip:carol@{kamailio.domain}", offer(30004), timeout=20)
        assert info.value.status in (404, 480)


async def test_callee_rejects_busy(kamailio):
    async with registered(kamailio, "alice", "bob") as (alice, bob):
        bob.on_incoming = lambda c: c.reject(486)
        with pytest.raises(CallError) as info:
            await alice.invite(f"sip:bob@{kamailio.domain}", offer(30006), timeout=20)
        assert info.value.status == 486


async def test_caller_cancels_while_ringing(kamailio):
    async with registered(kamailio, "alice", "bob") as (alice, bob):
        bob.on_incoming = lambda c: c.ring()
        call = alice.start_call(f"sip:bob@{kamailio.domain}", offer(30008))
        await asyncio.wait_for(call.ringing.wait(), 10)
        bcall = await asyncio.wait_for(bob.incoming.get(), 5)
        reason = await call.cancel(10)
        assert reason in ("local-cancel", "failed")
        assert call.call.final_status == 487
        assert await bcall.wait_ended(10) == "remote-cancel"


# ------------------------------------------------------------------------------- behind NAT

LAPTOP_UA = textwrap.dedent(
    """
    import asyncio, json, sys
    from sip.aio import AsyncUserAgent
    from sip.ua import UAConfig

    role, user, password, proxy, domain, local_ip, callee = sys.argv[1:8]
    OFFER = (b"v=0\\r\\no=- 1 1 IN IP4 " + local_ip.encode() + b"\\r\\ns=-\\r\\nc=IN IP4 "
             + local_ip.encode() + b"\\r\\nt=0 0\\r\\nm=audio 30000 RTP/AVP 0\\r\\n")

    async def main():
        ua = AsyncUserAgent(UAConfig(user=user, domain=domain, password=password,
                                     outbound_proxy=f"sip:{proxy}", registrar=f"sip:{domain}",
                                     local_host=local_ip, local_port=0), keepalive_interval=5)
        await ua.start()
        out = {"private": ua.ua.contact_uri()}
        try:
            reg = await ua.register(expires=120)
            out.update(contact=ua.ua.contact_uri(), contacts=reg.contacts)
            print("REGISTERED " + json.dumps(out), flush=True)
            if role == "callee":
                call = await asyncio.wait_for(ua.incoming.get(), 60)
                await call.answer(OFFER, wait_ack=True)
                out["end"] = await call.wait_ended(60)
            else:
                call = await ua.invite(f"sip:{callee}@{domain}", OFFER, timeout=30)
                out["status"] = call.call.final_status
                out["route_set"] = call.call.dialog.route_set
                out["end"] = await call.bye(30)
        finally:
            await ua.close()
        print("RESULT " + json.dumps(out), flush=True)

    asyncio.run(main())
    """
)


def test_register_and_call_behind_nat(nat_lab, kamailio_factory):
    """Two UAs each behind its own NAT learn their public address from the registrar's Via
    (received/rport), re-register with it, and call each other through Kamailio."""
    k = kamailio_factory(host=nat_lab.server_ip, port=5060, tls=False, netns=nat_lab.public.name)
    proxy = f"{nat_lab.server_ip}:5060"
    alice_site, bob_site = nat_lab.sites
    bob = bob_site.laptop.popen_python(
        LAPTOP_UA,
        "callee",
        "bob",
        k.users["bob"],
        proxy,
        k.domain,
        bob_site.laptop_ip,
        "-",
        name="bob",
    )
    bob.wait_for_log(r"REGISTERED", 30)
    res = alice_site.laptop.python(
        LAPTOP_UA,
        "caller",
        "alice",
        k.users["alice"],
        proxy,
        k.domain,
        alice_site.laptop_ip,
        "bob",
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    alice = json.loads(res.stdout.split("RESULT ", 1)[1])
    bob.wait_for_log(r"RESULT", 30)
    bob_out = json.loads(bob.log().split("RESULT ", 1)[1].splitlines()[0])
    # NAT learning: the contact moved from the private to the router's public address
    assert alice_site.laptop_ip in alice["private"]
    assert alice_site.router_wan_ip in alice["contact"]
    assert any(alice_site.router_wan_ip in c for c in alice["contacts"])
    assert bob_site.router_wan_ip in bob_out["contact"]
    assert alice["status"] == 200
    assert alice["route_set"] and nat_lab.server_ip in alice["route_set"][0]
    assert alice["end"] == "local-bye"
    assert bob_out["end"] == "remote-bye"


async def test_wildcard_bind_contact_uses_address_toward_proxy(kamailio):
    ua = make_ua(kamailio, "carol")
    ua.config.local_host = "0.0.0.0"
    async with running(ua):
        assert ua.config.local_host == "127.0.0.1"  # the route toward the proxy
        await ua.register(expires=60)
        assert kamailio.contacts("carol") == [f"sip:carol@127.0.0.1:{ua.config.local_port}"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_peer_to_peer_call_without_proxy(transport):
    """Two of our UAs on loopback, no server: direct INVITE, UPDATE, INFO, BYE."""

    def ua(user: str) -> AsyncUserAgent:
        return AsyncUserAgent(
            UAConfig(user=user, domain="127.0.0.1", local_port=0, transport=transport)
        )

    alice, bob = ua("alice"), ua("bob")
    async with running(alice, bob):
        target = f"sip:bob@127.0.0.1:{bob.config.local_port};transport={transport}"
        c = await establish(alice, bob, target, 30010, timeout=10)
        call, bcall, alice_media = c.call, c.bcall, c.caller_media
        assert call.call.dialog is not None and call.call.dialog.route_set == []
        answer = await call.update(alice_media.hold().to_bytes(), timeout=5)
        assert answer is not None
        assert alice_media.process_answer(answer).audio is not None
        call.info(b"Signal=1\r\nDuration=100\r\n", "application/dtmf-relay")
        info = await asyncio.wait_for(bcall.info_received.get(), 5)
        assert info.body.startswith(b"Signal=1")
        result = await bob.options(f"sip:alice@127.0.0.1:{alice.config.local_port}")
        assert result.status == 200
        assert await bcall.bye(5) == "local-bye"
        assert await call.wait_ended(5) == "remote-bye"


async def test_dead_tcp_flow_triggers_reregistration(kamailio):
    """The registrar restarts (losing its in-memory bindings and our connection): the
    keepalive notices the dead flow and we register again over a new connection."""
    host, port = kamailio.address("tcp")
    ua = make_ua(kamailio, "alice", "tcp")
    ua.keepalive_interval = 0.5
    async with running(ua):
        await ua.register(expires=300)
        assert kamailio.contacts("alice")
        await asyncio.to_thread(kamailio.restart)
        assert kamailio.contacts("alice") == []
        # re-registration backs off 0.5, 1, 2, 4 ... s while it is down
        await wait_until(lambda: kamailio.contacts("alice"), timeout=60, step=0.1)
        assert kamailio.contacts("alice")
