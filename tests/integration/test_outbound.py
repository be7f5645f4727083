"""RFC 5626 (SIP outbound) user agent behaviour against a real Kamailio and a scripted registrar.

Debian's Kamailio has no ``outbound`` module, so the proxy keeps no flow tokens: the tests
check the user agent's side -- the REGISTER's ``+sip.instance``/``reg-id``/``Supported:
outbound`` that Kamailio's registrar stores, a TCP callee that notices its connection died
when the proxy restarts and registers again at once over a new one (so calls reach it
again, even in a dialog that began before the restart), and a flow whose keepalive pong
stops coming (a scripted registrar) being replaced by a new flow.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from sip.aio import AsyncCall, AsyncUserAgent, RegistrationError
from sip.locate import Target
from sip.message import Keepalive, Request, StreamFramer, make_response, parse_message
from sip.offer_answer import LocalMedia, OfferAnswer
from sip.registration import Registered, instance_id_for
from sip.transport import TlsConfig, TransportLayer
from sip.ua import UAConfig
from tests.integration.test_sip_robustness import offer, wait_contacts
from tests.unit.test_stun_keepalive import response as stun_response

pytestmark = pytest.mark.integration


def make_ua(kamailio: Any, user: str, transport: str = "tcp", **kw: Any) -> AsyncUserAgent:
    host, port = kamailio.address(transport)
    cfg = UAConfig(
        user=user,
        domain=kamailio.domain,
        password=kamailio.users[user],
        outbound_proxy=f"sip:{host}:{port};transport={transport}",
        registrar=f"sip:{kamailio.domain}",
        transport=transport,
        local_host="127.0.0.1",
        local_port=0,
        instance_id=instance_id_for(f"test-outbound-{user}"),
    )
    kw.setdefault("binding_check_interval", None)
    if transport == "tls":  # a TLS client only: the proxy reaches us over our connection
        kw.setdefault("tls", TlsConfig(cafile=str(kamailio.pki.ca_file)))
    return AsyncUserAgent(cfg, **kw)


def auto_answer(ua: AsyncUserAgent, port: int) -> list[AsyncCall]:
    """Answer every incoming call; returns the list the calls are appended to."""
    calls: list[AsyncCall] = []

    async def on_incoming(call: AsyncCall) -> None:
        calls.append(call)
        oa = OfferAnswer([LocalMedia("127.0.0.1", port)])
        answer, _ = oa.process_offer(call.offer or b"")
        await call.answer(answer.to_bytes())

    ua.on_incoming = on_incoming
    return calls


async def callee_and_caller(
    kamailio: Any, transport: str = "tcp"
) -> tuple[AsyncUserAgent, AsyncUserAgent, list[AsyncCall]]:
    """bob on TCP (or TLS), registered for an hour and answering every call; alice on UDP."""
    bob = make_ua(kamailio, "bob", transport, keepalive_interval=5.0)
    alice = make_ua(kamailio, "alice", "udp")
    answered = auto_answer(bob, 40020)
    await bob.start()
    await alice.start()
    await bob.register(expires=3600)
    return bob, alice, answered


async def test_register_carries_instance_and_reg_id(kamailio):
    """RFC 5626 §4.2: Contact with +sip.instance and reg-id, Supported: outbound; Kamailio's
    registrar stores both with the binding (it answers without Require: outbound: it has no
    outbound module, so the UA reports the binding as not using outbound)."""
    ua = make_ua(kamailio, "alice")
    await ua.start()
    try:
        reg = await ua.register(expires=120)
        assert reg.outbound is False
        dump = await asyncio.to_thread(kamailio.rpc, "ul.lookup", "location", "alice")
        assert ua.ua.instance_id in dump, dump
        assert "Reg-Id: 1" in dump, dump
        # registering again (a refresh) keeps one binding for the instance
        await ua.register(expires=120)
        assert len(await asyncio.to_thread(kamailio.contacts, "alice")) == 1
    finally:
        await ua.close()


async def test_tcp_callee_registers_again_at_once_after_proxy_restart(kamailio):
    """bob (TCP, a one-hour binding) waits for calls; Kamailio restarts and forgets him. The
    closed connection fails bob's flow, he registers again over a new one within seconds
    (backing off while the proxy is still down), and alice's call reaches him."""
    bob, alice, answered = await callee_and_caller(kamailio)
    try:
        events: list[Any] = []
        bob.on_event = events.append
        await asyncio.to_thread(kamailio.restart)
        assert await wait_contacts(kamailio, "bob", 30.0), "bob never registered again"
        assert any(isinstance(e, Registered) for e in events)
        await alice.register(expires=120)
        call = await alice.invite(f"sip:bob@{kamailio.domain}", offer(30020), timeout=15)
        assert call.remote_sdp is not None
        assert [c.call_id for c in answered] == [call.call_id]
        assert await call.bye(timeout=10) == "local-bye"
        assert await answered[0].wait_ended(5) == "remote-bye"
    finally:
        await alice.close()
        await bob.close()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_callee_stays_reachable_in_a_call_across_proxy_restart(kamailio, transport):
    """The issue-5 case: Kamailio restarts mid-call while bob (TCP) is the callee. bob's flow
    fails, he reconnects -- from the same local port, which Kamailio's ;alias in his dialog
    Contact and the received address of his binding point at -- and registers again; alice's
    BYE through the restarted proxy then reaches him (he is not left in a dead call), and the
    next call reaches him too."""
    bob, alice, answered = await callee_and_caller(kamailio, transport)
    try:
        await alice.register(expires=120)
        call = await alice.invite(f"sip:bob@{kamailio.domain}", offer(30030), timeout=15)
        await call.wait_confirmed(5)
        await asyncio.to_thread(kamailio.restart)
        assert await wait_contacts(kamailio, "bob", 30.0), "bob never registered again"
        assert await call.bye(timeout=10) == "local-bye"
        assert await answered[0].wait_ended(10) == "remote-bye", "the BYE did not reach bob"
        again = await alice.invite(f"sip:bob@{kamailio.domain}", offer(30032), timeout=15)
        assert len(answered) == 2 and answered[1].call_id == again.call_id
        # and bob can hang up himself: his BYE goes out over the new flow
        assert await answered[1].bye(timeout=10) == "local-bye"
        assert await again.wait_ended(10) == "remote-bye"
    finally:
        await alice.close()
        await bob.close()


class ScriptedRegistrar:
    """A TCP registrar answering REGISTER 200 (Contact echoed with its expires). Pings on the
    first ``mute_connections`` connections get no pong; later ones are answered. The first
    ``reset_registers`` REGISTERs get no answer: their connection is reset."""

    def __init__(
        self, mute_connections: int = 1, reset_registers: int = 0, flow_timer: int | None = None
    ) -> None:
        self.mute_connections = mute_connections
        self.flow_timer = flow_timer  # sent as Flow-Timer with Require: outbound
        self.reset_registers = reset_registers  # the first N REGISTERs: reset the connection
        self.registers: list[tuple[int, Request]] = []  # (connection number, request)
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def user_agent(self, **kw: Any) -> AsyncUserAgent:
        """bob, registering here over TCP."""
        cfg = UAConfig(
            user="bob",
            domain="example.org",
            outbound_proxy=f"sip:127.0.0.1:{self.port};transport=tcp",
            registrar="sip:example.org",
            transport="tcp",
            local_host="127.0.0.1",
            local_port=0,
        )
        return AsyncUserAgent(cfg, binding_check_interval=None, **kw)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        framer = StreamFramer()
        try:
            while data := await reader.read(65536):
                for item in framer.feed(data):
                    if item is Keepalive.PING:
                        if number > self.mute_connections:
                            writer.write(b"\r\n")
                        continue
                    if not isinstance(item, bytes):
                        continue
                    msg = parse_message(item)
                    if isinstance(msg, Request) and msg.method == "REGISTER":
                        self.registers.append((number, msg))
                        if len(self.registers) <= self.reset_registers:
                            writer.transport.abort()
                            return
                        resp = make_response(msg, 200, to_tag="reg1")
                        for contact in msg.headers.get_all("Contact"):
                            resp.headers.add("Contact", contact)
                        if self.flow_timer is not None:
                            resp.headers.add("Require", "outbound")
                            resp.headers.add("Flow-Timer", str(self.flow_timer))
                        writer.write(resp.to_bytes())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


async def test_missing_pong_fails_the_flow_and_registers_over_a_new_one():
    """RFC 5626 §4.4.1: the registrar stops answering CRLF pings on bob's connection; after
    the pong timeout bob closes that flow and registers again (same Call-ID, instance and
    reg-id, a higher CSeq) over a new connection."""
    registrar = ScriptedRegistrar(mute_connections=1)
    await registrar.start()
    ua = registrar.user_agent(keepalive_interval=0.3)
    await ua.start()
    assert ua.transport is not None
    ua.transport.pong_timeout = 0.5
    try:
        await ua.register(expires=3600)
        for _ in range(200):
            if registrar.connections >= 2 and len(registrar.registers) >= 2:
                break
            await asyncio.sleep(0.1)
        (conn1, first), (conn2, second) = registrar.registers[:2]
        assert (conn1, conn2) == (1, 2)
        assert second.call_id == first.call_id
        assert second.cseq.seq > first.cseq.seq
        for req in (first, second):
            params = req.contacts[0].params
            assert params.get("+sip.instance") == f'"<{ua.ua.instance_id}>"'
            assert params.get("reg-id") == "1"
            assert "outbound" in req.headers.get_all("Supported")
        # the new flow is kept alive: pongs come now, so no third connection
        await asyncio.sleep(1.5)
        assert registrar.connections == 2
        assert ua.registered is not None
    finally:
        await ua.close()
        await registrar.close()


async def test_register_on_a_connection_reset_before_the_answer_fails_at_once_and_is_retried():
    """RFC 3261 §18.4: the connection carrying our REGISTER is reset before any response (a
    proxy going down): the transaction fails as a transport error now, not at Timer F
    (32 s), and the §4.5 backoff sends the REGISTER again over a new connection."""
    registrar = ScriptedRegistrar(mute_connections=0, reset_registers=1)
    await registrar.start()
    ua = registrar.user_agent()
    await ua.start()
    try:
        with pytest.raises(RegistrationError) as failed:
            await ua.register(expires=3600, timeout=20)  # well under Timer F
        assert failed.value.status == 408
        for _ in range(200):
            if ua.registered is not None:
                break
            await asyncio.sleep(0.1)
        assert ua.registered is not None
        (conn1, first), (conn2, second) = registrar.registers
        assert conn1 != conn2 and second.call_id == first.call_id
    finally:
        await ua.close()
        await registrar.close()


async def test_stun_keepalive_over_udp_detects_a_proxy_outage_and_registers_again(
    kamailio_factory,
):
    """RFC 5626 §4.4.2 over UDP against Kamailio answering STUN (stun.so): the Binding
    responses are the pongs and show the address Kamailio sees us at. Kamailio goes down:
    no response within the pong timeout fails the flow, alice registers again (backing off
    while it is down) and is registered once it is back -- no OPTIONS check needed."""
    kamailio = await asyncio.to_thread(kamailio_factory, stun=True, tls=False)
    alice = make_ua(kamailio, "alice", "udp", udp_keepalive="stun", keepalive_interval=0.3)
    await alice.start()
    assert alice.transport is not None
    alice.transport.pong_timeout = 1.5
    try:
        await alice.register(expires=3600)
        handle = alice.keepalive
        assert handle is not None
        for _ in range(100):
            if handle.pongs >= 2:
                break
            await asyncio.sleep(0.1)
        assert handle.pongs >= 2
        assert handle.mapped == ("127.0.0.1", alice.config.local_port)
        await asyncio.to_thread(kamailio.stop)
        for _ in range(100):
            if handle.failed.is_set():
                break
            await asyncio.sleep(0.1)
        assert handle.failed.is_set() and alice.ua.recovering
        await asyncio.to_thread(kamailio.start)
        assert await wait_contacts(kamailio, "alice", 30.0), "alice never registered again"
        for _ in range(100):  # a new keepalive runs on the recovered flow
            if alice.keepalive is not handle and alice.keepalive is not None:
                break
            await asyncio.sleep(0.1)
        assert alice.keepalive is not handle and alice.keepalive is not None
    finally:
        await alice.close()


async def test_a_new_mapped_address_fails_the_flow():
    """§4.4.2: the proxy sees us at another address (the NAT rebound us): the flow failed,
    so the UA registers again with its new address. A local STUN responder first reports
    one mapped port, then another."""
    ports = iter([40000, 40000, 40001])

    class Responder(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            tid = data[8:20]
            port = next(ports)
            key = bytes.fromhex("2112a442") + tid
            ip = bytes(a ^ b for a, b in zip(bytes([203, 0, 113, 5]), key, strict=False))
            value = struct.pack("!BBH", 0, 1, port ^ 0x2112) + ip
            self.transport.sendto(stun_response((0x0020, value), tid=tid), addr)

    loop = asyncio.get_running_loop()
    server, _ = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
    port = server.get_extra_info("sockname")[1]
    layer = TransportLayer(pong_timeout=5.0)
    await layer.listen_udp("127.0.0.1", 0)
    try:
        handle = await layer.start_keepalive(
            Target("UDP", "127.0.0.1", "127.0.0.1", port), 0.1, stun=True
        )
        await asyncio.wait_for(handle.failed.wait(), 5)
        assert handle.pongs == 3
        assert handle.mapped == ("203.0.113.5", 40000)
    finally:
        await layer.close()
        server.close()


async def test_flow_timer_from_the_registrar_sets_the_keepalive_interval():
    """RFC 5626 §4.4: a registrar using outbound says how often it wants keepalives
    (Flow-Timer); the UA pings at least that often (here 1 s instead of its 90 s default)."""
    registrar = ScriptedRegistrar(mute_connections=0, flow_timer=1)
    await registrar.start()
    ua = registrar.user_agent()
    await ua.start()
    assert ua.transport is not None
    ua.transport.pong_timeout = 1.0
    try:
        reg = await ua.register(expires=3600)
        assert reg.outbound and reg.flow_timer == 1
        assert ua.keepalive is not None and ua.keepalive.schedule.interval == 1.0
        for _ in range(30):  # pings go out every ~1 s and are answered: the flow stays up
            if ua.keepalive.schedule.failed or registrar.connections > 1:
                break
            await asyncio.sleep(0.1)
        assert registrar.connections == 1 and not ua.keepalive.failed.is_set()
    finally:
        await ua.close()
        await registrar.close()


def hold_acks(ua: AsyncUserAgent) -> list[Any]:
    """Lose every ACK ``ua`` sends until the returned list gets an item (the ACK is lost on
    its way, as when the proxy restarts just as it arrives). Returns the gate."""
    gate: list[Any] = []
    take = ua.ua.messages_to_send

    def messages_to_send() -> list[Any]:
        out = take()
        if gate:
            return out
        return [o for o in out if getattr(o.message, "method", None) != "ACK"]

    ua.ua.messages_to_send = messages_to_send  # type: ignore[method-assign]
    return gate


@pytest.mark.parametrize("ack_lost", [False, True], ids=["ack-arrived", "ack-lost"])
async def test_target_refresh_reaches_a_callee_whose_new_flow_has_another_address(
    kamailio, ack_lost
):
    """A NAT that maps the new connection to another port (symmetric NAT), simulated by bob
    reconnecting from any port: Kamailio's old ;alias is dead, so after registering again
    bob sends an UPDATE without body in the call (a target refresh, RFC 3311); Kamailio
    puts the new flow's alias in its Contact, alice takes it as remote target, and her BYE
    reaches bob over the new connection.

    ``ack-lost``: alice's ACK is lost while Kamailio restarts (bob waits for it, RFC 3261
    §13.3.1.4). bob sends the UPDATE although the ACK has not come (the dialog is confirmed
    once the 2xx is sent, §12.1.1); alice's ACK, sent again on bob's next 2xx retransmission,
    follows the refreshed target and reaches bob over his new connection: the call survives."""
    bob, alice, answered = await callee_and_caller(kamailio)
    assert bob.transport is not None
    bob.transport.reuse_local_port = False
    gate = hold_acks(alice) if ack_lost else [True]
    try:
        await alice.register(expires=120)
        call = await alice.invite(f"sip:bob@{kamailio.domain}", offer(30036), timeout=15)
        await call.wait_confirmed(5)
        dialog = call.call.dialog
        assert dialog is not None
        old_target = str(dialog.remote_target)
        await asyncio.to_thread(kamailio.restart)
        if ack_lost:
            assert not answered[0].confirmed.done(), "bob got an ACK that should have been lost"
        assert await wait_contacts(kamailio, "bob", 30.0), "bob never registered again"
        gate.append(True)  # alice's ACKs go out from now on
        for _ in range(200):  # bob's UPDATE gives alice a target with the new flow's alias
            if str(dialog.remote_target) != old_target:
                break
            await asyncio.sleep(0.1)
        assert str(dialog.remote_target) != old_target, "no target refresh reached alice"
        await answered[0].wait_confirmed(10)  # the ACK came (over bob's new connection)
        assert await call.bye(timeout=10) == "local-bye"
        assert await answered[0].wait_ended(10) == "remote-bye", "the BYE did not reach bob"
    finally:
        await alice.close()
        await bob.close()
