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
from typing import Any

import pytest

from sip.aio import AsyncCall, AsyncUserAgent, CallError
from sip.invite import Call
from sip.offer_answer import LocalMedia, OfferAnswer
from sip.registration import Registered
from sip.transport import TlsConfig
from sip.ua import UAConfig

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


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_register_refresh_unregister(kamailio_factory, algorithm):
    k = kamailio_factory(algorithm=algorithm)
    ua = make_ua(k, "alice")
    await ua.start()
    try:
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
    finally:
        await ua.close()


async def test_register_wrong_password_fails(kamailio):
    ua = make_ua(kamailio, "alice")
    ua.config.password = "not-the-password"
    ua.ua = type(ua.ua)(ua.config)
    await ua.start()
    try:
        with pytest.raises(Exception) as info:
            await ua.register(expires=60)
        assert getattr(info.value, "status", None) == 401
    finally:
        await ua.close()


async def test_register_timer_refresh(kamailio_factory):
    """With a short lifetime the core refreshes on its own before expiry."""
    k = kamailio_factory(min_expires=1)
    ua = make_ua(k, "bob")
    await ua.start()
    try:
        await ua.register(expires=4)
        seen: list[Any] = []
        ua.on_event = seen.append
        for _ in range(100):
            if sum(isinstance(e, Registered) for e in seen) >= 2:
                break
            await asyncio.sleep(0.1)
        assert sum(isinstance(e, Registered) for e in seen) >= 2
        assert k.contacts("bob")
    finally:
        await ua.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_two_uas_call_through_kamailio(kamailio, transport):
    alice = make_ua(kamailio, "alice", transport)
    bob = make_ua(kamailio, "bob", transport)
    await alice.start()
    await bob.start()
    try:
        await alice.register(expires=300)
        await bob.register(expires=300)
        bob_media = answering(bob, 40000)
        alice_media = media(30000)
        mark = kamailio.log_mark()
        offer = alice_media.create_offer().to_bytes()
        call = await alice.invite(f"sip:bob@{kamailio.domain}", offer, timeout=20)
        assert call.remote_sdp is not None
        neg = alice_media.process_answer(call.remote_sdp)
        assert neg.audio is not None and neg.audio.remote_rtp == ("127.0.0.1", 40000)
        bcall = await asyncio.wait_for(bob.incoming.get(), 5)
        await bcall.wait_confirmed(10)
        assert bob_media.negotiation is not None and bob_media.negotiation.audio is not None
        assert bob_media.negotiation.audio.remote_rtp == ("127.0.0.1", 30000)
        # Record-Route honoured: route set points at the proxy
        d = call.call.dialog
        assert d is not None and d.route_set
        assert all("lr" in r for r in d.route_set)
        reason = await call.bye(timeout=10)
        assert reason == "local-bye"
        assert await bcall.wait_ended(10) == "remote-bye"
        # the BYE went through the proxy (loose_route logged it)
        kamailio.wait_for_log(r"in-dialog BYE " + re.escape(call.call_id), 5, mark)
    finally:
        await alice.close()
        await bob.close()
    assert kamailio.contacts("alice") == []


async def test_callee_hangs_up_and_reinvite_hold(kamailio):
    alice = make_ua(kamailio, "alice")
    bob = make_ua(kamailio, "bob")
    await alice.start()
    await bob.start()
    try:
        await alice.register(expires=300)
        await bob.register(expires=300)
        answering(bob, 40002)
        alice_media = media(30002)
        offer = alice_media.create_offer().to_bytes()
        call = await alice.invite(f"sip:bob@{kamailio.domain}", offer, timeout=20)
        assert call.remote_sdp is not None
        alice_media.process_answer(call.remote_sdp)
        bcall = await asyncio.wait_for(bob.incoming.get(), 5)
        await bcall.wait_confirmed(10)
        answer = await call.reinvite(alice_media.hold().to_bytes(), timeout=10)
        assert answer is not None
        neg = alice_media.process_answer(answer)
        assert neg.audio is not None and not neg.audio.receives  # we hold: sendonly
        assert bcall.remote_sdp is not None and b"a=sendonly" in bcall.remote_sdp
        assert await bcall.bye(10) == "local-bye"
        assert await call.wait_ended(10) == "remote-bye"
    finally:
        await alice.close()
        await bob.close()


async def test_call_to_unregistered_user_fails(kamailio):
    alice = make_ua(kamailio, "alice")
    await alice.start()
    try:
        await alice.register(expires=300)
        with pytest.raises(CallError) as info:
            await alice.invite(f"sip:carol@{kamailio.domain}", offer(30004), timeout=20)
        assert info.value.status in (404, 480)
    finally:
        await alice.close()


async def test_callee_rejects_busy(kamailio):
    alice = make_ua(kamailio, "alice")
    bob = make_ua(kamailio, "bob")
    await alice.start()
    await bob.start()
    try:
        await alice.register(expires=300)
        await bob.register(expires=300)
        bob.on_incoming = lambda c: c.reject(486)
        with pytest.raises(CallError) as info:
            await alice.invite(f"sip:bob@{kamailio.domain}", offer(30006), timeout=20)
        assert info.value.status == 486
    finally:
        await alice.close()
        await bob.close()


async def test_caller_cancels_while_ringing(kamailio):
    alice = make_ua(kamailio, "alice")
    bob = make_ua(kamailio, "bob")
    await alice.start()
    await bob.start()
    try:
        await alice.register(expires=300)
        await bob.register(expires=300)
        bob.on_incoming = lambda c: c.ring()
        call = alice.start_call(f"sip:bob@{kamailio.domain}", offer(30008))
        await asyncio.wait_for(call.ringing.wait(), 10)
        bcall = await asyncio.wait_for(bob.incoming.get(), 5)
        reason = await call.cancel(10)
        assert reason in ("local-cancel", "failed")
        assert call.call.final_status == 487
        assert await bcall.wait_ended(10) == "remote-cancel"
    finally:
        await alice.close()
        await bob.close()


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
    await ua.start()
    try:
        assert ua.config.local_host == "127.0.0.1"  # the route toward the proxy
        await ua.register(expires=60)
        assert kamailio.contacts("carol") == [f"sip:carol@127.0.0.1:{ua.config.local_port}"]
    finally:
        await ua.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_peer_to_peer_call_without_proxy(transport):
    """Two of our UAs on loopback, no server: direct INVITE, UPDATE, INFO, BYE."""

    def ua(user: str) -> AsyncUserAgent:
        return AsyncUserAgent(
            UAConfig(user=user, domain="127.0.0.1", local_port=0, transport=transport)
        )

    alice, bob = ua("alice"), ua("bob")
    await alice.start()
    await bob.start()
    try:
        answering(bob, 40010)
        alice_media = media(30010)
        target = f"sip:bob@127.0.0.1:{bob.config.local_port};transport={transport}"
        call = await alice.invite(target, alice_media.create_offer().to_bytes(), timeout=10)
        assert call.remote_sdp is not None
        alice_media.process_answer(call.remote_sdp)
        bcall = await asyncio.wait_for(bob.incoming.get(), 5)
        await bcall.wait_confirmed(5)
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
    finally:
        await alice.close()
        await bob.close()


async def test_dead_tcp_flow_triggers_reregistration(kamailio):
    """The registrar restarts (losing its in-memory bindings and our connection): the
    keepalive notices the dead flow and we register again over a new connection."""
    host, port = kamailio.address("tcp")
    ua = make_ua(kamailio, "alice", "tcp")
    ua.keepalive_interval = 0.5
    await ua.start()
    try:
        await ua.register(expires=300)
        assert kamailio.contacts("alice")
        await asyncio.to_thread(kamailio.restart)
        assert kamailio.contacts("alice") == []
        for _ in range(300):  # re-registration backs off 0.5, 1, 2, 4 ... s while it is down
            if kamailio.contacts("alice"):
                break
            await asyncio.sleep(0.1)
        assert kamailio.contacts("alice")
    finally:
        await ua.close()
