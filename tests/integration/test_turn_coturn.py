"""Our TURN client (ice.turn + ice.turn_aio) against coturn on 127.0.0.1, over UDP, TCP and TLS.

A plain UDP socket on 127.0.0.1 plays the peer: it must receive what we relay (Send indication,
then ChannelData after ChannelBind) from the relayed address, and what it sends back must reach
us (Data indication, then ChannelData).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from ice import stun
from ice.channeldata import StreamFramer
from ice.credentials import long_term_key
from ice.stun import StunClass, StunMessage, StunMethod, parse_message
from ice.turn import (
    Allocated,
    AllocationExpired,
    AllocationRefreshed,
    DataReceived,
    PermissionFailed,
    TurnEvent,
)
from ice.turn_aio import TurnAllocation, TurnError, allocate_turn
from tests.helpers_net import needs_ipv6, wait_until
from tests.peers.coturn import Coturn, turnserver_binary

TRANSPORTS = ["udp", "tcp", "tls"]
USER = "alice"

needs_turnserver = pytest.mark.skipif(
    turnserver_binary() is None, reason="turnserver not installed (Debian package coturn)"
)


@contextmanager
def udp_peer(host: str = "127.0.0.1") -> Iterator[socket.socket]:
    """A plain UDP socket playing the TURN peer."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(5.0)
        yield sock


@asynccontextmanager
async def allocated(
    server: Coturn,
    transport: str = "udp",
    expect_closed: bool = False,
    address: tuple[str, int] | None = None,
    password: str | None = None,
    **kw: Any,
) -> AsyncIterator[TurnAllocation]:
    """An allocation for USER on ``server`` (TLS verified against its CA; asked at ``address``
    if given), released on exit; with ``expect_closed`` the release must be confirmed."""
    alloc = await allocate_turn(
        address or server.turn_address(transport),
        USER,
        server.users[USER] if password is None else password,
        transport=transport,  # type: ignore[arg-type]
        ssl_context=server.ssl_context() if transport == "tls" else None,
        **kw,
    )
    try:
        yield alloc
    finally:
        closed = await alloc.close()
        if expect_closed:
            assert closed is True


@asynccontextmanager
async def serving(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[str, int]]:
    """A stream server on 127.0.0.1 playing a misbehaving TURN server; its address."""
    listener = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield listener.sockets[0].getsockname()[:2]
    finally:
        listener.close()
        await listener.wait_closed()


def _running(server: Coturn) -> Iterator[Coturn]:
    if turnserver_binary() is None:
        pytest.skip("turnserver not installed (Debian package coturn)")
    with server:
        yield server


@pytest.fixture(scope="module")
def turn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    """One coturn for the module (users test/test and alice/alice-turn-1, UDP+TCP+TLS)."""
    yield from _running(Coturn(Path(tmp_path_factory.mktemp("coturn")), alt_host=None))


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    with udp_peer() as sock:
        yield sock


class Recorder:
    def __init__(self) -> None:
        self.events: list[TurnEvent] = []
        self.data: asyncio.Queue[DataReceived] = asyncio.Queue()

    def __call__(self, event: TurnEvent) -> None:
        self.events.append(event)
        if isinstance(event, DataReceived):
            self.data.put_nowait(event)


@pytest.fixture(params=TRANSPORTS)
async def allocation(
    request: pytest.FixtureRequest, turn_server: Coturn
) -> AsyncIterator[tuple[TurnAllocation, Recorder, str]]:
    transport = request.param
    recorder = Recorder()
    async with allocated(
        turn_server, transport, local_addr=("127.0.0.1", 0), on_event=recorder, timeout=10.0
    ) as alloc:
        yield alloc, recorder, transport


async def peer_recv(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    data, addr = await asyncio.to_thread(sock.recvfrom, 4096)
    return data, (addr[0], addr[1])


async def test_allocate_returns_a_relayed_address(
    allocation: tuple[TurnAllocation, Recorder, str], turn_server: Coturn
) -> None:
    alloc, _, transport = allocation
    host, port = alloc.relayed_address
    assert host == turn_server.relay_ip
    assert turn_server.min_port <= port <= turn_server.max_port
    # the server reflects the address it sees us at: our own socket on loopback
    assert alloc.mapped_address == alloc.local_address
    assert alloc.client.lifetime > 0 and alloc.client.reliable == (transport != "udp")


async def test_send_and_data_indications(
    allocation: tuple[TurnAllocation, Recorder, str], peer: socket.socket
) -> None:
    alloc, recorder, _ = allocation
    peer_addr = peer.getsockname()
    assert alloc.sendto(b"hello through the relay", peer_addr)
    data, source = await peer_recv(peer)
    assert data == b"hello through the relay"
    assert source == alloc.relayed_address
    peer.sendto(b"and back", source)
    event = await asyncio.wait_for(recorder.data.get(), 5.0)
    assert event == DataReceived(peer_addr, b"and back", None)  # a Data indication
    got = await asyncio.wait_for(alloc.recv(), 5.0)
    assert got == (b"and back", peer_addr)


async def test_channel_data_after_channel_bind(
    allocation: tuple[TurnAllocation, Recorder, str], peer: socket.socket
) -> None:
    alloc, recorder, _ = allocation
    peer_addr = peer.getsockname()
    channel = await asyncio.wait_for(alloc.bind_channel(peer_addr), 5.0)
    assert 0x4000 <= channel <= 0x4FFF
    for size in (1, 3, 4, 160, 1200):  # odd sizes exercise the TCP padding
        payload = bytes(range(256)) * 5
        payload = payload[:size]
        assert alloc.sendto(payload, peer_addr)
        data, source = await peer_recv(peer)
        assert (data, source) == (payload, alloc.relayed_address)
        peer.sendto(payload[::-1], source)
        event = await asyncio.wait_for(recorder.data.get(), 5.0)
        assert event == DataReceived(peer_addr, payload[::-1], channel)


async def test_two_peers_mixing_channel_and_indications(
    allocation: tuple[TurnAllocation, Recorder, str], peer: socket.socket
) -> None:
    alloc, recorder, _ = allocation
    with udp_peer() as other:
        channel = await alloc.bind_channel(peer.getsockname())
        alloc.sendto(b"to A", peer.getsockname())
        alloc.sendto(b"to B", other.getsockname())
        assert (await peer_recv(peer))[0] == b"to A"
        assert (await peer_recv(other))[0] == b"to B"
        other.sendto(b"from B", alloc.relayed_address)
        peer.sendto(b"from A", alloc.relayed_address)
        got = {(await asyncio.wait_for(recorder.data.get(), 5.0)) for _ in range(2)}
        assert got == {
            DataReceived(peer.getsockname(), b"from A", channel),
            DataReceived(other.getsockname(), b"from B", None),
        }


async def test_refresh_and_permission(allocation: tuple[TurnAllocation, Recorder, str]) -> None:
    alloc, _, _ = allocation
    # coturn grants between 600 s (its minimum) and 3600 s (its default maximum)
    before = alloc.client.expires_at
    assert await asyncio.wait_for(alloc.refresh(1200), 5.0) == 1200
    assert alloc.client.lifetime == 1200
    assert before is not None and (alloc.client.expires_at or 0) > before
    await asyncio.wait_for(alloc.create_permission("127.0.0.1"), 5.0)
    assert alloc.client.has_permission("127.0.0.1")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_wrong_password_fails_with_401(turn_server: Coturn, transport: str) -> None:
    with pytest.raises(TurnError) as info:
        async with allocated(turn_server, transport, password="not-the-password", timeout=10.0):
            pass
    assert info.value.code == 401
    assert "credentials" in info.value.reason


async def test_unknown_user_fails_with_401(turn_server: Coturn) -> None:
    with pytest.raises(TurnError) as info:
        await allocate_turn(turn_server.turn_address(), "mallory", "x", timeout=10.0)
    assert info.value.code == 401


def _refresh_request(key: bytes, nonce: str, realm: str) -> bytes:
    msg = StunMessage(StunMethod.REFRESH, StunClass.REQUEST)
    msg.add(stun.LIFETIME, 0).add(stun.USERNAME, USER)
    msg.add(stun.REALM, realm).add(stun.NONCE, nonce)
    return msg.encode(key, fingerprint=True)


async def test_deallocation_frees_the_allocation(turn_server: Coturn) -> None:
    alloc = await allocate_turn(
        turn_server.turn_address(), USER, turn_server.users[USER], local_addr=("127.0.0.1", 0)
    )
    local = alloc.local_address
    assert local is not None
    realm = alloc.client.realm
    assert realm is not None
    key = long_term_key(USER, realm, turn_server.users[USER])
    assert await alloc.close() is True
    # the same 5-tuple asks to refresh: the server must no longer know the allocation. coturn
    # releases it asynchronously, once the 5-tuple has been idle for a moment (a Refresh with a
    # lifetime would revive it), so probe now and then with LIFETIME 0 until the answer is 437;
    # 438 hands us a fresh nonce to retry with.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(local)
        sock.settimeout(2.0)
        nonce = "stale"
        codes: list[int | None] = []
        for _ in range(12):
            await asyncio.sleep(1.0)  # quiet: coturn drops the 5-tuple's session when idle
            sock.sendto(_refresh_request(key, nonce, realm), turn_server.turn_address())
            response = parse_message((await asyncio.to_thread(sock.recvfrom, 2048))[0])
            error = response.error_code
            codes.append(None if error is None else error.code)
            if error is not None and error.code == 437:
                assert response.check_integrity(key)
                break
            if error is not None and error.code == 438:
                nonce = response.get(stun.NONCE) or nonce
        assert codes[-1] == 437, codes


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_stream_close_is_confirmed(turn_server: Coturn, transport: str) -> None:
    async with allocated(turn_server, transport, expect_closed=True) as alloc:
        pass
    assert alloc.client.state.value == "closed"


# -- automatic refresh with a short allocation lifetime and nonces that go stale ---------------


@pytest.fixture(scope="module")
def short_lived_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    """coturn granting at most 3 s per allocation, with nonces that expire after 2 s."""
    yield from _running(
        Coturn(
            Path(tmp_path_factory.mktemp("coturn-short")),
            alt_host=None,
            tls=False,
            extra_args=["--max-allocate-lifetime=3", "--stale-nonce=2"],
        )
    )


async def _outlive(server: Coturn, transport: str) -> None:
    recorder = Recorder()

    def refreshes() -> int:
        return sum(isinstance(e, AllocationRefreshed) for e in recorder.events)

    async with allocated(server, transport, expect_closed=True, on_event=recorder) as alloc:
        with udp_peer() as peer:
            assert alloc.client.lifetime == 3
            first_nonce = alloc.client.nonce
            await alloc.bind_channel(peer.getsockname())
            # Two lifetimes and more: only the client's Refreshes keep the allocation alive,
            # and the nonce goes stale on the way (438, retried with the new one). The client
            # refreshes at half the 3 s lifetime, so four refreshes take us past 6 s.
            await wait_until(lambda: refreshes() >= 4, timeout=30, step=0.1)
            assert refreshes() >= 4
            assert not [e for e in recorder.events if isinstance(e, AllocationExpired)]
            assert alloc.client.nonce != first_nonce
            alloc.sendto(b"still here", peer.getsockname())
            data, source = await peer_recv(peer)
            assert (data, source) == (b"still here", alloc.relayed_address)
            peer.sendto(b"me too", source)
            event = await asyncio.wait_for(recorder.data.get(), 5.0)
            assert event.data == b"me too"


async def test_allocation_outlives_its_lifetime_by_refreshing(short_lived_server: Coturn) -> None:
    # UDP and TCP side by side, to keep the suite fast
    await asyncio.gather(_outlive(short_lived_server, "udp"), _outlive(short_lived_server, "tcp"))


# -- IPv6 ------------------------------------------------------------------------------------------


class _Coturn6(Coturn):
    """The peers' Coturn with an IPv6 readiness probe (its own probe speaks IPv4 only)."""

    def _ready(self) -> bool:
        request = StunMessage(StunMethod.BINDING, StunClass.REQUEST).encode()
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            try:
                s.sendto(request, (self.host, self.port))
                parse_message(s.recv(2048))
            except (OSError, ValueError):
                return False
        return True


@needs_turnserver
@needs_ipv6
async def test_ipv6_allocation_relays_both_ways(tmp_path: Path) -> None:
    recorder = Recorder()
    with _Coturn6(tmp_path / "coturn6", host="::1", alt_host=None, tls=False) as server:
        async with allocated(
            server, ipv6_relay=True, local_addr=("::1", 0), on_event=recorder
        ) as alloc:
            assert alloc.relayed_address[0] == "::1"
            with udp_peer("::1") as peer6:
                peer_addr = (peer6.getsockname()[0], peer6.getsockname()[1])
                alloc.sendto(b"over six", peer_addr)
                data, source = await asyncio.to_thread(peer6.recvfrom, 2048)
                assert data == b"over six" and source[:2] == alloc.relayed_address
                await alloc.bind_channel(peer_addr)
                peer6.sendto(b"six back", source[:2])
                event = await asyncio.wait_for(recorder.data.get(), 5.0)
                assert event.peer == peer_addr and event.data == b"six back"


# -- the stream to the server breaks ---------------------------------------------------------------


async def test_stream_closed_by_server_fails_the_allocation() -> None:
    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    async with serving(slam) as address:
        with pytest.raises(TurnError) as info:
            await allocate_turn(address, USER, "x", transport="tcp", timeout=10.0)
        assert info.value.code is None and "lost" in info.value.reason


async def test_garbage_on_the_stream_fails_the_allocation() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"\x16\x03\x01\x00\x05hello")  # a TLS record: not STUN, not ChannelData
        await writer.drain()
        await reader.read(100)

    async with serving(garbage) as address:
        with pytest.raises(TurnError) as info:
            await allocate_turn(address, USER, "x", transport="tcp", timeout=10.0)
        assert "lost" in info.value.reason


# -- 300 Try Alternate -----------------------------------------------------------------------------


def _redirect(request: bytes, alternate: tuple[str, int]) -> bytes:
    msg = parse_message(request)
    return msg.error_response(300).add(stun.ALTERNATE_SERVER, alternate).encode()


async def test_udp_redirect_to_the_alternate_server(turn_server: Coturn) -> None:
    class Redirector(asyncio.DatagramProtocol):
        transport: asyncio.DatagramTransport

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.DatagramTransport, transport)

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(_redirect(data, turn_server.turn_address()), addr)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Redirector, local_addr=("127.0.0.1", 0))
    try:
        first = transport.get_extra_info("sockname")[:2]
        async with allocated(turn_server, address=first, expect_closed=True, timeout=10.0) as alloc:
            assert alloc.client.server == turn_server.turn_address()
            assert alloc.relayed_address[0] == turn_server.relay_ip
    finally:
        transport.close()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_stream_redirect_reconnects_to_the_alternate(
    turn_server: Coturn, peer: socket.socket, transport: str
) -> None:
    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = StreamFramer()
        while data := await reader.read(4096):
            for frame in framer.feed(data):
                writer.write(_redirect(frame, turn_server.turn_address(transport)))
        writer.close()

    server_ssl = None
    if transport == "tls":
        assert turn_server.pki is not None
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(turn_server.pki.cert_file, turn_server.pki.key_file)
    async with (
        serving(redirect, server_ssl) as first,
        allocated(turn_server, transport, True, address=first, timeout=10.0) as alloc,
    ):
        assert alloc.client.server == turn_server.turn_address(transport)
        alloc.sendto(b"after the move", peer.getsockname())
        data, source = await peer_recv(peer)
        assert (data, source) == (b"after the move", alloc.relayed_address)


# -- permissions are per peer IP -------------------------------------------------------------------


async def test_peer_without_permission_is_filtered(
    allocation: tuple[TurnAllocation, Recorder, str], peer: socket.socket
) -> None:
    alloc, recorder, _ = allocation
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        try:
            stranger.bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("127.0.0.2 is not usable here")
        await alloc.create_permission("127.0.0.1")
        # the stranger's datagram is sent first; on loopback it would arrive first if relayed
        stranger.sendto(b"blocked", alloc.relayed_address)
        peer.sendto(b"allowed", alloc.relayed_address)
        first = await asyncio.wait_for(recorder.data.get(), 5.0)
        assert first == DataReceived(peer.getsockname(), b"allowed", None)
        # once permitted, the stranger gets through
        await alloc.create_permission("127.0.0.2")
        stranger.sendto(b"welcome", alloc.relayed_address)
        second = await asyncio.wait_for(recorder.data.get(), 5.0)
        assert second == DataReceived(stranger.getsockname(), b"welcome", None)


# -- a server given by name ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_server_given_by_host_name(turn_server: Coturn, transport: str) -> None:
    port = turn_server.turn_address(transport)[1]
    async with allocated(
        turn_server,
        transport,
        address=("localhost", port),
        local_addr=("127.0.0.1", 0),  # localhost may also be ::1; coturn listens on IPv4
        timeout=10.0,
    ) as alloc:
        assert alloc.client.server == ("127.0.0.1", port)
        assert alloc.relayed_address[0] == turn_server.relay_ip


def test_core_wants_an_ip_address() -> None:
    from ice.turn import TurnClient

    with pytest.raises(ValueError):
        TurnClient(("turn.example.org", 3478), USER, "x")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_failing_data_handler_does_not_stop_the_allocation(
    turn_server: Coturn, peer: socket.socket, transport: str
) -> None:
    # (over TCP an escaping exception would end the task reading the stream)
    got: asyncio.Queue[bytes] = asyncio.Queue()

    def on_data(data: bytes, source: tuple[str, int]) -> None:
        if data == b"boom":
            raise RuntimeError("handler bug")
        got.put_nowait(data)

    async with allocated(turn_server, transport, expect_closed=True, on_data=on_data) as alloc:
        await alloc.bind_channel(peer.getsockname())
        peer.sendto(b"boom", alloc.relayed_address)
        peer.sendto(b"fine", alloc.relayed_address)
        assert await asyncio.wait_for(got.get(), 5.0) == b"fine"


# -- dual allocation -------------------------------------------------------------------------------


@needs_turnserver
@needs_ipv6
async def test_dual_allocation_relays_to_ipv4_and_ipv6_peers(
    tmp_path: Path, peer: socket.socket
) -> None:
    recorder = Recorder()
    dual = Coturn(tmp_path / "coturn-dual", alt_host=None, tls=False, extra_args=["--relay-ip=::1"])
    with dual as server:
        async with allocated(
            server, expect_closed=True, additional_ipv6=True, on_event=recorder
        ) as alloc:
            relayed6 = alloc.client.additional_relayed_address
            assert relayed6 is not None and relayed6[0] == "::1"
            assert alloc.relayed_address[0] == "127.0.0.1"
            with udp_peer("::1") as peer6:
                peer6_addr = (peer6.getsockname()[0], peer6.getsockname()[1])
                alloc.sendto(b"to six", peer6_addr)
                alloc.sendto(b"to four", peer.getsockname())
                data6, source6 = await asyncio.to_thread(peer6.recvfrom, 2048)
                assert (data6, source6[:2]) == (b"to six", relayed6)
                data4, source4 = await peer_recv(peer)
                assert (data4, source4) == (b"to four", alloc.relayed_address)
                peer6.sendto(b"from six", relayed6)
                event = await asyncio.wait_for(recorder.data.get(), 5.0)
                assert (event.peer, event.data) == (peer6_addr, b"from six")


async def test_dual_allocation_refused_family_still_allocates_ipv4(turn_server: Coturn) -> None:
    # the module's coturn relays on 127.0.0.1 only
    recorder = Recorder()
    async with allocated(turn_server, additional_ipv6=True, on_event=recorder) as alloc:
        assert alloc.relayed_address[0] == "127.0.0.1"
        assert alloc.client.additional_relayed_address is None
        (event,) = [e for e in recorder.events if isinstance(e, Allocated)]
        assert event.additional_error is not None
        assert event.additional_error.startswith("440")


async def test_peer_of_the_wrong_family_is_refused(
    allocation: tuple[TurnAllocation, Recorder, str],
) -> None:
    alloc, recorder, _ = allocation
    assert alloc.sendto(b"nowhere", ("::1", 9))  # queued until the permission is decided
    with pytest.raises(TurnError) as info:
        await asyncio.wait_for(alloc.create_permission("::1"), 5.0)
    assert info.value.code == 443  # Peer Address Family Mismatch (RFC 8656 §10.2)
    failed = [e for e in recorder.events if isinstance(e, PermissionFailed)]
    assert failed and failed[0].peer_ip == "::1" and failed[0].code == 443
    assert not alloc.client.has_permission("::1")


# -- many allocations at once ----------------------------------------------------------------------


async def test_many_allocations_do_not_cross_talk(turn_server: Coturn, peer: socket.socket) -> None:
    count = 20
    allocations = await asyncio.gather(
        *(
            allocate_turn(
                turn_server.turn_address(),
                USER,
                turn_server.users[USER],
                local_addr=("127.0.0.1", 0),
                timeout=10.0,
            )
            for _ in range(count)
        )
    )
    try:
        relayed = {a.relayed_address for a in allocations}
        assert len(relayed) == count
        for i, alloc in enumerate(allocations):
            assert alloc.sendto(f"from {i}".encode(), peer.getsockname())
        seen: dict[tuple[str, int], bytes] = {}
        for _ in range(count):
            data, source = await peer_recv(peer)
            seen[source] = data
            peer.sendto(b"echo " + data, source)
        assert set(seen) == relayed
        for i, alloc in enumerate(allocations):
            assert seen[alloc.relayed_address] == f"from {i}".encode()
            data, source = await asyncio.wait_for(alloc.recv(), 5.0)
            assert (data, source) == (f"echo from {i}".encode(), peer.getsockname())
    finally:
        closed = await asyncio.gather(*(a.close() for a in allocations))
        assert all(closed)


async def test_unanswered_allocate_is_retransmitted_by_the_shell() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.settimeout(10.0)
        task = asyncio.create_task(allocate_turn(blackhole.getsockname(), USER, "x", timeout=60.0))
        try:
            first, source = await asyncio.to_thread(blackhole.recvfrom, 2048)
            for _ in range(2):  # the timer fires again and again: identical retransmissions
                again, again_source = await asyncio.to_thread(blackhole.recvfrom, 2048)
                assert (again, again_source) == (first, source)
            request = parse_message(first)
            assert request.method == StunMethod.ALLOCATE and request.cls == StunClass.REQUEST
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
