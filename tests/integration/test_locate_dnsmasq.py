"""RFC 3263 location against a real dnsmasq on a loopback port, and failover to a live target."""

import asyncio
import shutil
from collections.abc import Callable

import pytest

from sip.locate import SystemLookup, Target, locate, try_targets
from sip.message import Headers, Request, Response, make_response, new_branch, new_call_id
from sip.transport import Source, TransportLayer
from tests.peers.dnsmasq import Dnsmasq, DnsRecords, Naptr, Srv
from tests.peers.ports import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is not installed"),
]


@pytest.fixture
def ports() -> dict[str, int]:
    return {"udp1": free_port(), "udp2": free_port(), "tcp": free_port()}


@pytest.fixture
def dnsmasq(dns_factory: Callable[..., Dnsmasq], ports: dict[str, int]) -> Dnsmasq:
    udp, tcp = "_sip._udp.example.test", "_sip._tcp.example.test"
    records = DnsRecords(
        hosts={
            "first.example.test": ["127.0.0.2"],
            "second.example.test": ["127.0.0.1", "::1"],
            "tcp.example.test": ["127.0.0.3"],
            # No NAPTR/SRV at all: A record on the default port.
            "plain.example.test": ["127.0.0.4"],
        },
        # SRV: the UDP service has two targets; "first" (priority 10) never answers.
        srv=[
            Srv(udp, "first.example.test", ports["udp1"], priority=10),
            Srv(udp, "second.example.test", ports["udp2"], priority=20),
            Srv(tcp, "tcp.example.test", ports["tcp"], priority=10),
        ],
        # NAPTR: TCP has the lower order, so it comes first although UDP is our preference.
        naptr=[
            Naptr("example.test", 20, 10, "S", "SIP+D2U", udp),
            Naptr("example.test", 10, 10, "S", "SIP+D2T", tcp),
            Naptr("example.test", 5, 10, "S", "SIP+D2S", "_sip._sctp.example.test"),
        ],
    )
    return dns_factory(records)


async def test_naptr_then_srv_then_a_from_dnsmasq(dnsmasq, ports):
    lookup = SystemLookup(nameservers=["127.0.0.1"], port=dnsmasq.port, timeout=1.0)
    assert len(await lookup.naptr("example.test")) == 3
    targets = await locate("sip:alice@example.test", lookup=lookup)
    assert [(t.transport, t.host, t.ip, t.port) for t in targets] == [
        ("TCP", "tcp.example.test", "127.0.0.3", ports["tcp"]),
        ("UDP", "first.example.test", "127.0.0.2", ports["udp1"]),
        ("UDP", "second.example.test", "127.0.0.1", ports["udp2"]),
        ("UDP", "second.example.test", "::1", ports["udp2"]),  # AAAA after A
    ]
    # The UA's transport restriction filters NAPTR services.
    udp_only = await locate("sip:alice@example.test", transports=("UDP",), lookup=lookup)
    assert [t.ip for t in udp_only] == ["127.0.0.2", "127.0.0.1", "::1"]
    # No NAPTR/SRV: the A record at the default port.
    plain = await locate("sip:plain.example.test", lookup=lookup)
    assert [(t.transport, t.ip, t.port) for t in plain] == [("UDP", "127.0.0.4", 5060)]


def options(uri: str) -> Request:
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP placeholder;branch={new_branch()}")
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:alice@example.test>;tag=1")
    headers.add("To", f"<{uri}>")
    headers.add("Call-ID", new_call_id())
    headers.add("CSeq", "1 OPTIONS")
    return Request("OPTIONS", uri, headers)


async def test_srv_failover_to_second_target(dnsmasq, ports):
    # "first" is a UDP socket that swallows everything; "second" is a UA answering 200.
    loop = asyncio.get_running_loop()
    silent, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.2", ports["udp1"])
    )

    server: TransportLayer

    def answer(message: Request | Response, source: Source) -> None:
        if isinstance(message, Request):
            loop.create_task(server.send_response(make_response(message, 200), source))

    server = TransportLayer(on_message=answer)
    await server.listen_udp("127.0.0.1", ports["udp2"])
    client = TransportLayer()
    await client.listen_udp("127.0.0.1", 0)
    try:
        lookup = SystemLookup(nameservers=["127.0.0.1"], port=dnsmasq.port, timeout=1.0)
        targets = await locate("sip:alice@example.test;transport=udp", lookup=lookup)
        assert [t.ip for t in targets] == ["127.0.0.2", "127.0.0.1", "::1"]

        tried: list[Target] = []

        async def attempt(target: Target) -> Response:
            tried.append(target)
            await client.send(options("sip:alice@example.test"), target)
            while True:
                incoming = await client.receive()
                if isinstance(incoming.message, Response):
                    return incoming.message

        response = await try_targets(targets, attempt, timeout=1.5)
        assert response.status == 200
        assert [t.host for t in tried] == ["first.example.test", "second.example.test"]
    finally:
        silent.close()
        await client.close()
        await server.close()


async def test_silent_name_server_is_not_asked_again_during_backoff():
    """After a timeout, further queries skip DNS (and locate still falls back to A records)."""
    loop = asyncio.get_running_loop()
    queries: list[bytes] = []

    class Swallow(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            queries.append(data)

    transport, _ = await loop.create_datagram_endpoint(Swallow, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        lookup = SystemLookup(nameservers=["127.0.0.1"], port=port, timeout=0.2, lifetime=0.3)
        assert await lookup.naptr("example.test") == []
        asked = len(queries)
        assert asked >= 1
        assert await lookup.srv("_sip._udp.example.test") == []
        assert await lookup.addresses("host.example.test") == []
        assert len(queries) == asked  # nothing more was sent
        # Numeric hosts never need DNS.
        targets = await locate("sip:127.0.0.1:5070", lookup=lookup)
        assert [(t.ip, t.port) for t in targets] == [("127.0.0.1", 5070)]
    finally:
        transport.close()
