"""AsyncGatherer.permit against coturn on loopback: one CreatePermission for several peers, after
which those peers can reach us through the relay before we ever sent them anything (what makes
the peer's first relayed connectivity check succeed), while unpermitted peers stay filtered."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator

import pytest

from ice.gather import AsyncGatherer, GatherConfig, TurnServer
from ice.stun import Address
from ice.turn import TurnClient
from tests.peers.coturn import Coturn


@pytest.fixture
def turn(coturn_factory: Callable[..., Coturn]) -> Coturn:
    return coturn_factory(tls=False)


@pytest.fixture
def peers() -> Iterator[list[socket.socket]]:
    """Three UDP peers on three loopback addresses (permissions are per IP)."""
    socks = []
    for ip in ("127.0.0.1", "127.0.0.3", "127.0.0.4"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, 0))
        socks.append(s)
    yield socks
    for s in socks:
        s.close()


def config(server: Coturn, transport: str) -> GatherConfig:
    user = "alice"
    return GatherConfig(
        turn_servers=[
            TurnServer(server.turn_address(transport), user, server.users[user], transport)
        ],
        relay_only=True,
        turn_timeout=5.0,
    )


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_permit_lets_several_peers_in_at_once(
    turn: Coturn, peers: list[socket.socket], transport: str
) -> None:
    got: list[tuple[bytes, Address, Address]] = []
    g = AsyncGatherer(
        config(turn, transport),
        addresses=["127.0.0.1"],
        on_relayed=lambda data, relayed, peer: got.append((data, relayed, peer)),
    )
    await g.start()
    try:
        (relay,) = await g.wait_complete(10)
        relayed = relay.candidate.transport_address
        permitted, stranger = peers[:2], peers[2]
        ips = [s.getsockname()[0] for s in permitted]
        assert sorted(g.permit(relayed, ips + ips)) == sorted(ips)

        def client() -> TurnClient:
            if transport == "udp":
                c = g.core.turn_client(relayed)
            else:
                c = g._stream_allocs[relayed].client
            assert c is not None
            return c

        await wait_until(lambda: all(client().has_permission(ip) for ip in ips))
        assert g.permit(relayed, ips) == []  # already there: nothing sent
        # the stranger first, then the permitted peers: only theirs comes through
        stranger.sendto(b"stranger", relayed)
        for i, s in enumerate(permitted):
            s.sendto(b"peer %d" % i, relayed)
        await wait_until(lambda: len(got) >= 2)
        await asyncio.sleep(0.05)  # anything else in flight lands too
        assert sorted(d for d, _, _ in got) == [b"peer 0", b"peer 1"]
        assert {p for _, _, p in got} == {s.getsockname() for s in permitted}
        assert {r for _, r, _ in got} == {relayed}
        # permit_all covers every relayed candidate; then the stranger gets in too
        stranger_ip = stranger.getsockname()[0]
        assert g.permit_all([stranger_ip, *ips]) == {relayed: [stranger_ip]}
        await wait_until(lambda: client().has_permission(stranger_ip))
        stranger.sendto(b"welcome now", relayed)
        await wait_until(lambda: any(d == b"welcome now" for d, _, _ in got))
    finally:
        await g.close()
