"""Our TURN client (ice.turn + ice.turn_aio) against coturn on 127.0.0.1, over UDP, TCP and TLS.

A plain UDP socket on 127.0.0.1 plays the peer: it must receive what we relay (Send indication,
then ChannelData after ChannelBind) from the relayed address, and what it sends back must reach
us (Data indication, then ChannelData).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ice import stun
from ice.credentials import long_term_key
from ice.stun import StunClass, StunMessage, StunMethod, parse_message
from ice.turn import DataReceived, TurnEvent
from ice.turn_aio import TurnAllocation, TurnError, allocate_turn
from tests.peers.coturn import Coturn, turnserver_binary

TRANSPORTS = ["udp", "tcp", "tls"]
USER = "alice"


@pytest.fixture(scope="module")
def turn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    """One coturn for the module (users test/test and alice/alice-turn-1, UDP+TCP+TLS)."""
    if turnserver_binary() is None:
        pytest.skip("turnserver not installed (Debian package coturn)")
    server = Coturn(Path(tmp_path_factory.mktemp("coturn")), alt_host=None)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5.0)
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
    alloc = await allocate_turn(
        turn_server.turn_address(transport),
        USER,
        turn_server.users[USER],
        transport=transport,
        ssl_context=turn_server.ssl_context() if transport == "tls" else None,
        local_addr=("127.0.0.1", 0),
        on_event=recorder,
        timeout=10.0,
    )
    try:
        yield alloc, recorder, transport
    finally:
        await alloc.close()


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
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        other.settimeout(5.0)
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
        await allocate_turn(
            turn_server.turn_address(transport),
            USER,
            "not-the-password",
            transport=transport,  # type: ignore[arg-type]
            ssl_context=turn_server.ssl_context() if transport == "tls" else None,
            timeout=10.0,
        )
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
    alloc = await allocate_turn(
        turn_server.turn_address(transport),
        USER,
        turn_server.users[USER],
        transport=transport,  # type: ignore[arg-type]
        ssl_context=turn_server.ssl_context() if transport == "tls" else None,
    )
    assert await alloc.close() is True
    assert alloc.client.state.value == "closed"
