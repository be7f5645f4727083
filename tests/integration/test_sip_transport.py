"""SIP transport over real sockets on loopback: UDP, TCP, TLS, framing, Via handling, keepalives."""

import asyncio
import logging
import random
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from sip.headers import Via
from sip.locate import Target
from sip.message import (
    Headers,
    Request,
    Response,
    SipParseError,
    make_response,
    new_branch,
    new_call_id,
    parse_message,
)
from sip.transport import (
    Incoming,
    KeepaliveAction,
    KeepaliveHandle,
    KeepaliveSchedule,
    Source,
    TlsConfig,
    TransportLayer,
    _StreamProtocol,
    _UdpProtocol,
    is_keepalive_datagram,
)
from tests.helpers_net import has_ipv6, needs_ipv6, wait_until
from tests.peers.ports import free_port

pytestmark = pytest.mark.integration

WAIT = 5.0  # generous upper bound for "it arrives"; never a pass/fail timing


def request(
    method: str = "OPTIONS", uri: str = "sip:bob@127.0.0.1", via: str | None = None, body=b""
) -> Request:
    headers = Headers()
    headers.add("Via", via or f"SIP/2.0/UDP placeholder.invalid;branch={new_branch()}")
    headers.add("Max-Forwards", "70")
    headers.add("From", "<sip:alice@example.test>;tag=a1")
    headers.add("To", "<sip:bob@example.test>")
    headers.add("Call-ID", new_call_id())
    headers.add("CSeq", f"1 {method}")
    if body:
        headers.add("Content-Type", "application/sdp")
    return Request(method, uri, headers, body)


async def recv(layer: TransportLayer) -> Incoming:
    return await asyncio.wait_for(layer.receive(), WAIT)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[TransportLayer, TransportLayer]]:
    server = TransportLayer()
    client = TransportLayer()
    await server.start("127.0.0.1", 0, ("UDP", "TCP"))
    await client.start("127.0.0.1", 0, ("UDP", "TCP"))
    try:
        yield server, client
    finally:
        await client.close()
        await server.close()


def target(layer: TransportLayer, transport: str) -> Target:
    host, port = layer.local_address(transport)
    return Target(transport, host, host, port)


@asynccontextmanager
async def listening(transport: str = "UDP", **kw) -> AsyncIterator[TransportLayer]:
    """A TransportLayer listening on 127.0.0.1 for one transport, closed on exit."""
    layer = TransportLayer(**kw)
    if transport == "UDP":
        await layer.listen_udp("127.0.0.1", 0)
    else:
        await layer.listen_tcp("127.0.0.1", 0)
    try:
        yield layer
    finally:
        await layer.close()


def raw_udp() -> socket.socket:
    """A plain UDP socket on 127.0.0.1 playing a peer by hand (use it as a context manager)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(WAIT)
    return sock


async def send_by_hand(
    raw: socket.socket, server: TransportLayer, via: str
) -> tuple[Request, Source]:
    """Send a request with a hand-written Via from ``raw``; return what the server delivered."""
    raw.sendto(request(via=via).to_bytes(), server.local_address("UDP"))
    incoming = await recv(server)
    assert isinstance(incoming.message, Request)
    return incoming.message, incoming.source


async def response_at(sock: socket.socket) -> tuple[Request | Response, tuple[str, int]]:
    """The SIP message that arrives at ``sock`` and where it came from."""
    data, addr = await asyncio.to_thread(sock.recvfrom, 65535)
    return parse_message(data), addr


@asynccontextmanager
async def stream_to(
    layer: TransportLayer,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw TCP connection to the layer's TCP listener, closed on exit."""
    reader, writer = await asyncio.open_connection(*layer.local_address("TCP"))
    try:
        yield reader, writer
    finally:
        writer.close()


async def expect_pongs(handle: KeepaliveHandle, count: int) -> None:
    """Wait for ``count`` RFC 5626 pongs on a keepalive; without pongs the wait times out."""
    pongs = asyncio.Queue[float]()
    original = handle.schedule.pong_received

    def count_pong(now: float) -> None:
        pongs.put_nowait(now)
        original(now)

    handle.schedule.pong_received = count_pong  # type: ignore[method-assign]
    for _ in range(count):
        await asyncio.wait_for(pongs.get(), WAIT)


# --- UDP ---------------------------------------------------------------------------------------


async def test_udp_round_trip_with_via_and_rport(pair):
    server, client = pair
    req = request()
    branch = req.top_via.branch
    flow = await client.send(req, target(server, "UDP"))
    assert flow.transport == "UDP" and flow.local == client.local_address("UDP")

    incoming = await recv(server)
    got = incoming.message
    assert isinstance(got, Request) and got.method == "OPTIONS"
    via = got.top_via
    client_host, client_port = client.local_address("UDP")
    # Client side filled sent-by and asked for rport (RFC 3581 §3) ...
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP",
        client_host,
        client_port,
        branch,
    )
    # ... and the server stamped received and rport (RFC 3581 §4), even though they are equal.
    assert via.received == "127.0.0.1" and via.rport == client_port
    assert incoming.source == Source("UDP", (client_host, client_port), server.local_address("UDP"))

    await server.send_response(make_response(got, 200), incoming.source)
    answer = await recv(client)
    assert isinstance(answer.message, Response) and answer.message.status == 200
    assert answer.message.top_via.branch == branch
    assert answer.source.remote == server.local_address("UDP")  # symmetric: from the listener


async def test_udp_received_and_rport_toward_a_natted_client():
    """A client behind a NAT: its Via names an address we cannot reach; answer to the source."""
    async with listening() as server:
        with raw_udp() as raw:
            via = f"SIP/2.0/UDP 192.0.2.1:5060;branch={new_branch()};rport"
            got, source = await send_by_hand(raw, server, via)
            top = got.top_via
            assert top.host == "192.0.2.1" and top.port == 5060
            assert top.received == "127.0.0.1" and top.rport == raw.getsockname()[1]
            await server.send_response(make_response(got, 180), source)
            response, addr = await response_at(raw)
            assert addr == server.local_address("UDP")
            assert isinstance(response, Response) and response.status == 180
            assert response.top_via.rport == raw.getsockname()[1]


async def test_udp_response_without_rport_goes_to_received_and_sent_by_port():
    """RFC 3261 §18.2.2: no rport -> received address, port of the sent-by."""
    async with listening() as server:
        with raw_udp() as sender, raw_udp() as listener:
            port = listener.getsockname()[1]
            via = f"SIP/2.0/UDP 192.0.2.1:{port};branch={new_branch()}"
            got, source = await send_by_hand(sender, server, via)
            top = got.top_via
            assert top.received == "127.0.0.1" and "rport" not in top.params
            await server.send_response(make_response(got, 200), source)
            response, _ = await response_at(listener)
            assert response.top_via.received == "127.0.0.1"


async def test_udp_no_received_when_sent_by_matches_source():
    async with listening() as server:
        with raw_udp() as raw:
            via = f"SIP/2.0/UDP 127.0.0.1:{raw.getsockname()[1]};branch={new_branch()}"
            got, source = await send_by_hand(raw, server, via)
            assert "received" not in got.top_via.params


async def test_junk_keepalives_are_ignored_and_garbage_does_not_kill_the_listener():
    errors: list[tuple[bytes, Source, SipParseError]] = []
    async with listening(on_parse_error=lambda d, s, e: errors.append((d, s, e))) as server:
        with raw_udp() as raw:
            dest = server.local_address("UDP")
            for junk in (b"\x00\x00\x00\x00", b"\r\n\r\n", b"\r\n", b"jaK", b" \r\n\x00 "):
                raw.sendto(junk, dest)
            garbage = [
                b"this is not SIP at all, not even close\r\n\r\n",
                b"INVITE sip:bob@example.test SIP/2.0\r\nContent-Length: 900\r\n\r\nshort",
                bytes(random.Random(7).getrandbits(8) for _ in range(300)),
                b"SIP/2.0 200 OK\r\nVia: \x00\xff\r\n\r\n",
            ]
            for data in garbage:
                raw.sendto(data, dest)
            raw.sendto(request(method="MESSAGE").to_bytes(), dest)
            incoming = await recv(server)
            assert isinstance(incoming.message, Request) and incoming.message.method == "MESSAGE"
            assert server._queue.empty()
            # Every garbage datagram was reported (the UA may answer 400), no junk keepalive was.
            assert sorted(d for d, _, _ in errors) == sorted(garbage)
            assert all(s.remote == raw.getsockname() for _, s, _ in errors)


async def test_request_with_broken_via_is_reported_not_delivered():
    errors: list[bytes] = []
    async with listening(on_parse_error=lambda d, s, e: errors.append(d)) as server:
        with raw_udp() as raw:
            raw.sendto(request(via="garbage").to_bytes(), server.local_address("UDP"))
            raw.sendto(request(method="INFO").to_bytes(), server.local_address("UDP"))
            incoming = await recv(server)
            assert incoming.message.method == "INFO"  # type: ignore[union-attr]
            assert len(errors) == 1


async def test_large_udp_message_is_sent_with_a_note(pair, caplog):
    server, client = pair
    body = b"v=0\r\n" + b"a=x-padding:" + b"p" * 3000 + b"\r\n"
    with caplog.at_level(logging.INFO, logger="sip.transport"):
        await client.send(request(method="INVITE", body=body), target(server, "UDP"))
        incoming = await recv(server)
    assert incoming.message.body == body
    assert any("fragment" in r.getMessage() for r in caplog.records)


async def test_trace_logging_shows_the_wire(pair, caplog):
    server, client = pair
    with caplog.at_level(logging.DEBUG, logger="sip.trace"):
        await client.send(request(method="SUBSCRIBE"), target(server, "UDP"))
        await recv(server)
    traces = [r.getMessage() for r in caplog.records if r.name == "sip.trace"]
    assert any(t.startswith("send UDP") and "SUBSCRIBE sip:" in t for t in traces)
    assert any(t.startswith("recv UDP") and "SUBSCRIBE sip:" in t for t in traces)


async def test_udp_keepalive_is_sent_from_the_listening_port():
    async with listening() as client:
        with raw_udp() as proxy:
            port = proxy.getsockname()[1]
            handle = await client.start_keepalive(
                Target("UDP", "proxy", "127.0.0.1", port), interval=0.05
            )
            for _ in range(2):
                data, addr = await asyncio.to_thread(proxy.recvfrom, 100)
                assert data == b"\r\n\r\n"
                assert addr == client.local_address("UDP")
            handle.cancel()
            assert not handle.failed.is_set()


# --- TCP ---------------------------------------------------------------------------------------


async def test_tcp_round_trip_and_connection_reuse(pair):
    server, client = pair
    dest = target(server, "TCP")
    flows = []
    for method in ("OPTIONS", "INFO"):
        flows.append(await client.send(request(method=method), dest))
    assert flows[0] == flows[1] and flows[0].connection_id is not None
    first, second = await recv(server), await recv(server)
    assert [first.message.method, second.message.method] == ["OPTIONS", "INFO"]  # type: ignore[union-attr]
    assert first.source == second.source
    assert client.connection_count() == 1 and server.connection_count() == 1

    via = first.message.top_via
    assert via.transport == "TCP"
    assert via.port == client.local_address("TCP")[1]  # sent-by names our TCP listener
    assert via.received == "127.0.0.1" and via.rport == first.source.remote[1]

    assert isinstance(first.message, Request)
    await server.send_response(make_response(first.message, 200), first.source)
    answer = await recv(client)
    assert answer.message.status == 200  # type: ignore[union-attr]
    assert answer.source == flows[0]  # over the same connection

    # A request from the server to the client reuses the connection the client opened.
    back = Target("TCP", "client", *first.source.remote)
    await server.send(request(method="NOTIFY"), back)
    notify = await recv(client)
    assert notify.message.method == "NOTIFY"  # type: ignore[union-attr]
    assert notify.source == flows[0]
    assert client.connection_count() == 1 and server.connection_count() == 1
    assert server.find_connection("TCP", *first.source.remote) == first.source


async def test_concurrent_sends_open_one_connection(pair):
    server, client = pair
    dest = target(server, "TCP")
    flows = await asyncio.gather(*(client.send(request(), dest) for _ in range(5)))
    assert len({f.connection_id for f in flows}) == 1
    for _ in range(5):
        await recv(server)
    assert client.connection_count() == 1


async def test_tcp_response_reopens_connection_to_sent_by_when_closed(pair):
    server, client = pair
    await client.send(request(), target(server, "TCP"))
    incoming = await recv(server)
    assert isinstance(incoming.message, Request)
    for conn in list(client._connections.values()):
        conn.close()
        await conn.closed
    await wait_until(lambda: server.connection_count() == 0)  # the server notices the close
    assert server.connection_count() == 0
    flow = await server.send_response(make_response(incoming.message, 200), incoming.source)
    assert flow.remote == client.local_address("TCP")  # Via received + sent-by port
    answer = await recv(client)
    assert answer.message.status == 200  # type: ignore[union-attr]


async def test_tcp_framing_split_and_coalesced():
    async with listening("TCP") as server, stream_to(server) as (reader, writer):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
        one = request(method="INVITE", body=body).to_bytes()
        # Split: in small pieces, header/body boundary and Content-Length straddled.
        for i in range(0, len(one), 7):
            writer.write(one[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0.001)
        got = await recv(server)
        assert got.message.method == "INVITE" and got.message.body == body  # type: ignore[union-attr]
        # Coalesced: two messages, a ping and a third message in one segment.
        two = request(method="INFO").to_bytes() + request(method="UPDATE").to_bytes()
        writer.write(two + b"\r\n\r\n" + request(method="BYE").to_bytes())
        await writer.drain()
        methods = [(await recv(server)).message.method for _ in range(3)]  # type: ignore[union-attr]
        assert methods == ["INFO", "UPDATE", "BYE"]
        assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"  # pong


@pytest.mark.parametrize(
    "bad",
    [
        b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 99999999\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nContent-Length: nope\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nX-Filler: " + b"x" * 70000,
    ],
    ids=["oversized", "bad-length", "endless-header"],
)
async def test_bad_framing_closes_the_connection_but_not_the_listener(bad):
    async with listening("TCP") as server:
        async with stream_to(server) as (reader, writer):
            writer.write(bad)
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed by the server
        async with stream_to(server) as (reader, writer):  # the listener still works
            writer.write(request(method="OPTIONS").to_bytes())
            await writer.drain()
            assert (await recv(server)).message.method == "OPTIONS"  # type: ignore[union-attr]


async def test_unparsable_but_framed_message_keeps_the_connection():
    errors: list[bytes] = []
    async with (
        listening("TCP", on_parse_error=lambda d, s, e: errors.append(d)) as server,
        stream_to(server) as (_, writer),
    ):
        writer.write(b"NOT A START LINE\r\nContent-Length: 0\r\n\r\n")
        writer.write(request(method="OPTIONS").to_bytes())
        await writer.drain()
        assert (await recv(server)).message.method == "OPTIONS"  # type: ignore[union-attr]
        assert errors == [b"NOT A START LINE\r\nContent-Length: 0\r\n\r\n"]


async def test_stream_ping_is_answered_with_pong():
    async with listening("TCP") as server, stream_to(server) as (reader, writer):
        for _ in range(2):
            writer.write(b"\r\n\r\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"


async def test_stream_keepalive_with_pongs_stays_up(pair):
    server, client = pair
    client.pong_timeout = 2.0  # generous: load must not fail the flow
    handle = await client.start_keepalive(target(server, "TCP"), interval=0.05)
    await expect_pongs(handle, 4)  # several ping/pong rounds
    assert not handle.failed.is_set()
    assert client.connection_count() == 1
    handle.cancel()


async def test_stream_keepalive_missing_pong_fails_the_flow():
    pings = 0

    async def mute_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal pings
        try:
            while await reader.readexactly(4) == b"\r\n\r\n":
                pings += 1  # never answer
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    proxy = await asyncio.start_server(mute_proxy, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    failed: list[Source] = []
    client = TransportLayer(on_flow_failed=failed.append, pong_timeout=0.2)
    try:
        handle = await client.start_keepalive(Target("TCP", "p", "127.0.0.1", port), interval=0.05)
        await asyncio.wait_for(handle.failed.wait(), WAIT)
        assert pings >= 1
        assert len(failed) == 1 and failed[0].remote == ("127.0.0.1", port)
        await wait_until(lambda: client.connection_count() == 0)
        assert client.connection_count() == 0  # the failed flow was closed
    finally:
        await client.close()
        proxy.close()
        await proxy.wait_closed()


# --- TLS ---------------------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (d / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\n"
    )
    (d / "leaf.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=DNS:sip.example.test,DNS:localhost,IP:127.0.0.1,IP:::1\n"
        "authorityKeyIdentifier=keyid\n"
    )
    for name in ("ca", "rogue"):
        openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                "-subj", f"/CN=Test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    for leaf, ca in (("server", "ca"), ("imposter", "rogue")):
        openssl("req", "-new", *ec, "-keyout", f"{leaf}.key", "-out", f"{leaf}.csr",
                "-subj", "/CN=sip.example.test", cwd=d)  # fmt: skip
        openssl("x509", "-req", "-in", f"{leaf}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{leaf}.pem", "-days", "2", "-extfile", "leaf.ext",
                cwd=d)  # fmt: skip
    return {name: str(d / name) for name in ("ca", "server", "imposter")}


CLIENT_TLS = {
    "our-ca": lambda certs: TlsConfig(cafile=certs["ca"] + ".pem"),
    "system-cas": lambda certs: None,  # the default trust store only
    "no-verify": lambda certs: TlsConfig(verify=False),
}


@asynccontextmanager
async def tls_pair(
    certs, leaf: str = "server", trust: str = "our-ca", **client_kw
) -> AsyncIterator[tuple[TransportLayer, TransportLayer, str, int]]:
    """A TLS server presenting ``leaf``'s certificate and a client trusting ``trust``."""
    server = TransportLayer(
        tls=TlsConfig(certfile=certs[leaf] + ".pem", keyfile=certs[leaf] + ".key")
    )
    await server.listen_tls("127.0.0.1", 0)
    client = TransportLayer(tls=CLIENT_TLS[trust](certs), **client_kw)
    try:
        host, port = server.local_address("TLS")
        yield server, client, host, port
    finally:
        await client.close()
        await server.close()


def by_name(host: str, port: int) -> Target:
    """The server reached as sip.example.test (the name its certificate carries)."""
    return Target("TLS", "sip.example.test", host, port, "sip.example.test")


async def test_tls_round_trip_with_verification(certs):
    async with tls_pair(certs) as (server, client, host, port):
        dest = by_name(host, port)
        flow = await client.send(request(uri="sips:bob@sip.example.test"), dest)
        assert flow.transport == "TLS"
        incoming = await recv(server)
        assert incoming.message.top_via.transport == "TLS"
        assert incoming.source.transport == "TLS"
        assert isinstance(incoming.message, Request)
        await server.send_response(make_response(incoming.message, 200), incoming.source)
        answer = await recv(client)
        assert answer.message.status == 200  # type: ignore[union-attr]
        await client.send(request(uri="sips:bob@sip.example.test"), dest)
        await recv(server)
        assert client.connection_count() == 1  # reused


@pytest.mark.parametrize(
    ("leaf", "trust", "dest"),
    [
        ("server", "our-ca", lambda host, port: Target("TLS", host, host, port)),
        ("imposter", "no-verify", lambda host, port: Target("TLS", "whatever", host, port)),
    ],
    ids=["numeric-target-checks-ip-san", "verification-off-only-when-asked"],
)
async def test_tls_connection_is_accepted(certs, leaf, trust, dest):
    async with tls_pair(certs, leaf, trust) as (server, client, host, port):
        await client.send(request(), dest(host, port))
        assert (await recv(server)).source.transport == "TLS"


@pytest.mark.parametrize(
    ("leaf", "trust", "dest"),
    [
        ("imposter", "our-ca", by_name),
        ("server", "system-cas", lambda host, port: Target("TLS", "localhost", host, port)),
        ("server", "our-ca", lambda h, p: Target("TLS", "x", h, p, "other.example.test")),
    ],
    ids=["untrusted-certificate", "default-trust-store-private-ca", "wrong-name"],
)
async def test_tls_connection_is_refused(certs, leaf, trust, dest):
    async with tls_pair(certs, leaf, trust) as (server, client, host, port):
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.send(request(), dest(host, port))
        assert client.connection_count() == 0
        assert server._queue.empty()


def test_tls_config_defaults_verify():
    ctx = TlsConfig().client_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with pytest.raises(ValueError):
        TlsConfig().server_context()


# --- IPv6 --------------------------------------------------------------------------------------


@needs_ipv6
@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_ipv6_round_trip(transport):
    server, client = TransportLayer(), TransportLayer()
    await server.start("::1", 0, ("UDP", "TCP"))
    await client.start("::1", 0, ("UDP", "TCP"))
    try:
        await client.send(request(uri="sip:bob@[::1]"), target(server, transport))
        incoming = await recv(server)
        via = incoming.message.top_via
        assert via.host == "::1" and via.port == client.local_address(transport)[1]
        assert "[::1]" in incoming.message.headers.get("Via", "")  # type: ignore[operator]
        assert isinstance(incoming.message, Request)
        await server.send_response(make_response(incoming.message, 200), incoming.source)
        answer = await recv(client)
        assert answer.message.status == 200  # type: ignore[union-attr]
        assert answer.source.remote[0] == "::1"
    finally:
        await client.close()
        await server.close()


async def test_dual_stack_listeners_pick_the_family(pair):
    if not has_ipv6():
        pytest.skip("no IPv6 loopback")
    server, client = pair
    await client.listen_udp("::1", 0)
    await server.listen_udp("::1", 0)
    v6 = server.local_address("UDP", socket.AF_INET6)
    flow = await client.send(request(), Target("UDP", "::1", v6[0], v6[1]))
    assert flow.local == client.local_address("UDP", socket.AF_INET6)
    assert (await recv(server)).source.local == v6


# --- misc --------------------------------------------------------------------------------------


async def test_start_shares_udp_and_tcp_port_and_wildcard_address():
    layer = TransportLayer()
    await layer.start("0.0.0.0", 0, ("UDP", "TCP"))
    try:
        udp, tcp = layer.local_address("UDP"), layer.local_address("TCP")
        assert udp[1] == tcp[1] and udp[0] == "0.0.0.0"
        peer = Target("UDP", "p", "127.0.0.1", 5060)
        assert layer.local_address_for(peer) == ("127.0.0.1", udp[1])
        with pytest.raises(LookupError):
            layer.local_address("TLS")
    finally:
        await layer.close()


async def test_send_adds_via_when_missing_and_callback_delivery():
    got: list[Incoming] = []
    server = TransportLayer(on_message=lambda m, s: got.append(Incoming(m, s)))
    client = TransportLayer()
    await server.listen_udp("127.0.0.1", 0)
    await client.listen_udp("127.0.0.1", 0)
    try:
        req = request()
        req.headers.remove("Via")
        await client.send(req, target(server, "UDP"))
        await wait_until(lambda: got)
        assert len(got) == 1
        via = got[0].message.top_via
        assert via.branch is not None and via.branch.startswith("z9hG4bK")
        assert via.port == client.local_address("UDP")[1]
    finally:
        await client.close()
        await server.close()


async def test_send_after_close_fails(pair):
    server, client = pair
    await client.close()
    with pytest.raises(ConnectionError):
        await client.send(request(), target(server, "UDP"))


async def test_tcp_connect_refused_raises_oserror():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: refused
        client = TransportLayer()
        try:
            with pytest.raises(OSError):
                await client.send(request(), Target("TCP", "x", "127.0.0.1", port))
        finally:
            await client.close()


# --- pure helpers (no sockets) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00\x00\x00\x00", True),
        (b"\r\n\r\n", True),
        (b"\r\n", True),
        (b"", True),
        (b"jaK", True),
        (b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\x00" * 12, True),  # STUN binding request
        (b"OPTIONS sip:a@b SIP/2.0\r\n\r\n", False),
        (b"not sip but long enough", False),
    ],
)
def test_is_keepalive_datagram(data, expected):
    assert is_keepalive_datagram(data) is expected


def test_keepalive_schedule_on_virtual_clock():
    rng = random.Random(5)
    ka = KeepaliveSchedule(10.0, now=0.0, pong_timeout=2.0, rng=rng)
    first = ka.get_timer()
    assert first is not None and 8.0 <= first <= 10.0  # RFC 5626 §4.4.1: 80%..100%
    assert ka.handle_timer(first - 0.5) is None
    assert ka.handle_timer(first) is KeepaliveAction.SEND_PING
    assert ka.get_timer() == pytest.approx(first + 2.0)  # the pong deadline comes first
    ka.pong_received(first + 0.1)
    nxt = ka.get_timer()
    assert nxt is not None and first + 8.0 <= nxt <= first + 10.0
    assert ka.handle_timer(nxt) is KeepaliveAction.SEND_PING
    assert ka.handle_timer(nxt + 1.9) is None
    assert ka.handle_timer(nxt + 2.0) is KeepaliveAction.FLOW_FAILED
    assert ka.failed and ka.get_timer() is None and ka.handle_timer(nxt + 100) is None


def test_keepalive_schedule_without_pong_never_fails():
    ka = KeepaliveSchedule(25.0, now=100.0, rng=random.Random(1))
    now = 100.0
    pings = 0
    for _ in range(10):
        deadline = ka.get_timer()
        assert deadline is not None and deadline > now
        now = deadline
        if ka.handle_timer(now) is KeepaliveAction.SEND_PING:
            pings += 1
    assert pings == 10 and not ka.failed
    with pytest.raises(ValueError):
        KeepaliveSchedule(0, now=0.0)


def test_via_parse_round_trip_used_by_transport():
    via = Via.parse("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;rport")
    assert via.rport is None and "rport" in via.params


# --- flows and aliases ---------------------------------------------------------------------------


async def test_send_on_existing_flows(pair):
    server, client = pair
    tcp_flow = await client.send(request(method="REGISTER"), target(server, "TCP"))
    incoming = await recv(server)
    # The server sends a request back on the very flow the REGISTER came in on (RFC 5626 style).
    used = await server.send_on(request(method="OPTIONS"), incoming.source)
    assert used == incoming.source
    got = await recv(client)
    assert got.message.method == "OPTIONS" and got.source == tcp_flow  # type: ignore[union-attr]
    assert got.message.top_via.transport == "TCP"
    # UDP flow: from the socket the request arrived on, to its source.
    await client.send(request(method="REGISTER"), target(server, "UDP"))
    incoming = await recv(server)
    await server.send_on(request(method="NOTIFY"), incoming.source)
    got = await recv(client)
    assert got.message.method == "NOTIFY"  # type: ignore[union-attr]
    assert got.source.remote == server.local_address("UDP")
    # A closed stream flow is reported, not silently reopened.
    for conn in list(client._connections.values()):
        conn.close()
        await conn.closed
    with pytest.raises(ConnectionError):
        await client.send_on(request(), tcp_flow)


async def test_via_alias_lets_the_server_reuse_the_connection():
    """RFC 5923: ``;alias`` on the Via maps the sent-by port onto the incoming connection."""
    async with listening("TCP") as server, stream_to(server) as (reader, writer):
        via = f"SIP/2.0/TCP 127.0.0.1:5999;branch={new_branch()};alias"
        writer.write(request(via=via).to_bytes())
        await writer.drain()
        await recv(server)
        assert server.connection_count() == 1
        await server.send(request(method="BYE"), Target("TCP", "peer", "127.0.0.1", 5999))
        assert server.connection_count() == 1
        data = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert data.startswith(b"BYE sip:")


async def test_outgoing_connections_originate_from_the_bound_address():
    server = TransportLayer()
    client = TransportLayer()
    await server.listen_tcp("127.0.0.1", 0)
    await client.listen_udp("127.0.0.2", 0)  # e.g. --bind 127.0.0.2, no TCP listener
    try:
        flow = await client.send(request(), target(server, "TCP"))
        assert flow.local[0] == "127.0.0.2"
        incoming = await recv(server)
        assert incoming.source.remote[0] == "127.0.0.2"
        assert incoming.message.top_via.host == "127.0.0.2"
    finally:
        await client.close()
        await server.close()


# --- fuzzing the receive paths (no sockets) ------------------------------------------------------


class FakeDatagramTransport:
    def __init__(self, sockname):
        self.sockname = sockname
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def get_extra_info(self, name, default=None):
        if name == "socket":
            return SimpleNamespace(family=socket.AF_INET)
        if name == "sockname":
            return self.sockname
        return default

    def is_closing(self):
        return False

    def sendto(self, data, addr):
        self.sent.append((data, addr))


class FakeStreamTransport:
    def __init__(self):
        self.written = bytearray()
        self.closing = False

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 4000), "sockname": ("127.0.0.1", 5060)}.get(name, default)

    def is_closing(self):
        return self.closing

    def write(self, data):
        self.written += data

    def close(self):
        self.closing = True


SIP_SEED = (
    b"INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;rport\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:b@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
    b"Content-Length: 4\r\n\r\nbody"
)


def mutated_sip():
    from hypothesis import strategies as st

    def mutate(args):
        pos, junk, cut = args
        data = SIP_SEED[:pos] + junk + SIP_SEED[pos + cut :]
        return data

    return st.one_of(
        st.binary(max_size=300),
        st.tuples(st.integers(0, len(SIP_SEED)), st.binary(max_size=20), st.integers(0, 10)).map(
            mutate
        ),
    )


def test_fuzz_udp_receive_never_raises():
    from hypothesis import given, settings

    @settings(max_examples=300, deadline=None)
    @given(mutated_sip())
    def check(data):
        delivered: list[object] = []
        errors: list[SipParseError] = []

        async def go():
            layer = TransportLayer(
                on_message=lambda m, s: delivered.append(m),
                on_parse_error=lambda d, s, e: errors.append(e),
            )
            proto = _make_udp(layer)
            proto.datagram_received(data, ("127.0.0.1", 4000))

        asyncio.run(go())
        assert len(delivered) + len(errors) <= 1
        for message in delivered:
            assert isinstance(message, Request | Response)
            message.top_via  # noqa: B018  (validated before delivery)

    check()


def test_fuzz_stream_receive_never_raises():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=200, deadline=None)
    @given(st.lists(mutated_sip(), max_size=4), st.integers(1, 64))
    def check(chunks, step):
        async def go():
            layer = TransportLayer(on_message=lambda m, s: None)
            proto = _StreamProtocol(layer, "TCP", outgoing=False)
            fake = FakeStreamTransport()
            proto.connection_made(fake)  # type: ignore[arg-type]
            stream = b"".join(chunks)
            for i in range(0, len(stream), step):
                if fake.closing:
                    break
                proto.data_received(stream[i : i + step])
            proto.connection_lost(None)
            assert layer.connection_count() == 0

        asyncio.run(go())

    check()


def _make_udp(layer: TransportLayer):
    proto = _UdpProtocol(layer)
    proto.connection_made(FakeDatagramTransport(("127.0.0.1", 5060)))  # type: ignore[arg-type]
    return proto


async def test_send_fills_via_in_place_keeping_header_order(pair):
    server, client = pair
    req = request(via=f"SIP/2.0/UDP old.invalid;branch={new_branch()}")
    req.headers.add("Via", "SIP/2.0/UDP proxy.example.test;branch=z9hG4bKproxy")
    held = req.headers  # e.g. kept by a transaction to build CANCEL/ACK later
    names_before = [n for n, _ in req.headers.items()]
    await client.send(req, target(server, "UDP"))
    assert req.headers is held
    top = Via.parse(held.get_all("Via")[0])
    assert (top.host, top.port) == client.local_address("UDP")
    assert "rport" in top.params
    assert held.get_all("Via")[1] == "SIP/2.0/UDP proxy.example.test;branch=z9hG4bKproxy"
    # Vias stay together where the first one was; the other headers keep their order.
    names_after = [n for n, _ in req.headers.items()]
    assert [n for n in names_after if n != "Via"] == [n for n in names_before if n != "Via"]
    assert names_after[:2] == ["Via", "Via"]
    got = (await recv(server)).message
    assert [v.host for v in got.vias] == [client.local_address("UDP")[0], "proxy.example.test"]


# --- interop with SIPp -------------------------------------------------------------------------

# SIPp scenarios: an OPTIONS client expecting a 200, and a server answering OPTIONS with 200.
SIPP_SCENARIOS = Path(__file__).parents[1] / "data" / "sipp"
SIPP_UAC = SIPP_SCENARIOS / "options_uac.xml"
SIPP_UAS = SIPP_SCENARIOS / "options_uas.xml"

needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")


def over_udp_and_tcp(test):
    """Run a SIPp test once per transport (SIPp's -t mode u1 / t1), skipped without SIPp."""
    modes = pytest.mark.parametrize(("transport", "mode"), [("UDP", "u1"), ("TCP", "t1")])
    return needs_sipp(modes(test))


async def run_sipp(scenario: Path, args: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        shutil.which("sipp") or "sipp",
        "-sf",
        str(scenario),
        *args,
        "-nostdin",
        "-timeout",
        "15s",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()  # our own child, by PID
        try:
            await asyncio.wait_for(proc.wait(), WAIT)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@over_udp_and_tcp
async def test_sipp_uac_gets_our_response(transport, mode):
    server: TransportLayer
    loop = asyncio.get_running_loop()
    seen: list[Incoming] = []

    def answer(message, source):
        seen.append(Incoming(message, source))
        if isinstance(message, Request):
            loop.create_task(server.send_response(make_response(message, 200), source))

    server = TransportLayer(on_message=answer)
    await server.start("127.0.0.1", 0, ("UDP", "TCP"))
    host, port = server.local_address(transport)
    proc = await run_sipp(
        SIPP_UAC,
        [f"{host}:{port}", "-i", "127.0.0.1", "-p", "0", "-t", mode, "-m", "1", "-s", "bob"],
    )
    try:
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert seen and seen[0].message.method == "OPTIONS"  # type: ignore[union-attr]
        assert seen[0].source.transport == transport
        via = seen[0].message.top_via
        assert via.received == "127.0.0.1" and via.rport == seen[0].source.remote[1]
    finally:
        await stop(proc)
        await server.close()


@over_udp_and_tcp
async def test_sipp_uas_answers_our_request(transport, mode):
    port = free_port()  # the same number free for UDP and TCP
    proc = await run_sipp(SIPP_UAS, ["-i", "127.0.0.1", "-p", str(port), "-t", mode, "-m", "1"])
    client = TransportLayer()
    await client.start("127.0.0.1", 0, ("UDP", "TCP"))
    try:
        dest = Target(transport, "127.0.0.1", "127.0.0.1", port)
        answer: Incoming | None = None
        for _ in range(50):  # until SIPp listens (a UA would retransmit the same way)
            try:
                await client.send(request(uri=f"sip:sipp@127.0.0.1:{port}"), dest)
                answer = await asyncio.wait_for(client.receive(), 0.3)
                break
            except (OSError, TimeoutError):
                await asyncio.sleep(0.1)
        assert answer is not None
        assert isinstance(answer.message, Response) and answer.message.status == 200
        assert answer.source.remote == ("127.0.0.1", port)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        await stop(proc)
        await client.close()


# --- interop with Kamailio (fixture from tests/peers) ----------------------------------------


async def test_kamailio_over_udp_tcp_tls_and_crlf_keepalive(kamailio):
    """OPTIONS to a real Kamailio on every transport (TLS verified against its test CA), and
    RFC 5626 CRLF ping/pong on its TCP port."""
    client = TransportLayer(tls=TlsConfig(cafile=str(kamailio.ca_file)), pong_timeout=2.0)
    await client.start("127.0.0.1", 0, ("UDP", "TCP"))
    try:
        for transport in ("UDP", "TCP", "TLS"):
            host, port = kamailio.address(transport.lower())
            req = request(uri=f"sip:{host}:{port}")
            req.headers.set("From", "<sip:probe@probe.invalid>;tag=p1")
            flow = await client.send(req, Target(transport, host, host, port))
            answer = await recv(client)
            assert isinstance(answer.message, Response), transport
            assert answer.message.status == 200, transport
            assert answer.source.transport == transport
            assert answer.source.remote == (host, port)
            if transport != "UDP":
                assert answer.source == flow  # over the connection we opened
            # Kamailio stamped our Via per RFC 3581 (it is what came back).
            assert answer.message.top_via.rport == flow.local[1]

        host, port = kamailio.address("tcp")
        handle = await client.start_keepalive(Target("TCP", host, host, port), interval=0.05)
        await expect_pongs(handle, 3)
        assert not handle.failed.is_set()
        handle.cancel()
    finally:
        await client.close()


async def test_lower_case_transport_names_are_accepted(pair):
    server, client = pair
    host, port = server.local_address("TCP")
    flow = await client.send(request(), Target("tcp", host, host, port))
    assert flow.transport == "TCP"
    assert (await recv(server)).message.top_via.transport == "TCP"
    handle = await client.start_keepalive(Target("tcp", host, host, port), interval=60)
    assert client.connection_count() == 1  # the same connection carries the keepalive
    handle.cancel()
    uhost, uport = server.local_address("UDP")
    flow = await client.send(request(), Target("udp", uhost, uhost, uport))
    assert flow.transport == "UDP"


async def test_tls_ping_pong_and_reuse_of_the_peer_connection(certs):
    async with tls_pair(certs, pong_timeout=2.0) as (server, client, host, port):
        dest = by_name(host, port)
        flow = await client.send(request(method="REGISTER"), dest)
        incoming = await recv(server)
        # The server reaches the client over the TLS connection the client opened.
        back = Target("TLS", "client", *incoming.source.remote)
        await server.send(request(method="NOTIFY"), back)
        got = await recv(client)
        assert got.message.method == "NOTIFY" and got.source == flow  # type: ignore[union-attr]
        assert server.connection_count() == 1 and client.connection_count() == 1
        # CRLF keepalive over TLS: pongs come back, the flow stays up.
        handle = await client.start_keepalive(dest, interval=0.05)
        await expect_pongs(handle, 3)
        assert not handle.failed.is_set() and client.connection_count() == 1
        handle.cancel()


async def test_via_with_a_host_name_gets_received_and_name_routing():
    """RFC 3261 §18.2.1: a domain name in sent-by always gets ;received. Without it, the
    response goes to the sent-by name resolved through the system resolver (/etc/hosts)."""
    async with listening() as server:
        with raw_udp() as peer:
            port = peer.getsockname()[1]
            via = f"SIP/2.0/UDP localhost:{port};branch={new_branch()}"
            got, _ = await send_by_hand(peer, server, via)
            assert got.top_via.received == "127.0.0.1"
            response = make_response(got, 200)
            # Drop ;received to exercise routing by the sent-by name (RFC 3263 §5, A records).
            response.headers.set("Via", via)
            await server.send_response(response)
            answer, _ = await response_at(peer)
            assert isinstance(answer, Response) and answer.status == 200
