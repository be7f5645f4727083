"""IceConnection(gatherer=...): a pre-gathered set from ice.pool.CandidatePool instead of
gathering (sockets, candidates and TURN allocations adopted, closed with the connection)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ice.aio import IceConnection, connect
from ice.candidate import CandidateType
from ice.gather import AsyncGatherer, GatherConfig, TurnServer
from ice.pool import CandidatePool
from tests.peers.coturn import Coturn

LOOPBACK = ["127.0.0.1"]


async def _data_both_ways(a: IceConnection, b: IceConnection) -> None:
    for sender, receiver, tag in ((a, b, b"\x80a->b"), (b, a, b"\x80b->a")):
        assert sender.transport().send(tag)
        assert await asyncio.wait_for(receiver.transport().recv(), 2) == tag


async def test_pooled_set_carries_a_connection_and_is_closed_with_it() -> None:
    """A two-component set given to a one-component connection (rtcp-mux): component 2 is
    dropped, gather() returns the set's candidates at once (and on_candidate sees them), the
    connection works, and closing it closes the set."""
    pool = CandidatePool(GatherConfig(components=2), size=1, refill_delay=0, addresses=LOOPBACK)
    await pool.start()
    try:
        await pool.wait_ready(timeout=5)
        pooled = pool.take()
        assert pooled is not None and pooled.complete
        seen: list[object] = []
        a = IceConnection(
            True, gatherer=pooled, agent_options={"ta": 0.02}, on_candidate=seen.append
        )
        b = IceConnection(False, bind="127.0.0.1", agent_options={"ta": 0.02})
        try:
            await connect(a, b, timeout=5)
            assert [c.component for c in a.local_candidates] == [1]
            assert seen == a.local_candidates
            host = a.local_candidates[0]
            assert host.transport_address in pooled.local_addresses
            sel = a.transport().selected
            assert sel is not None and sel[0].transport_address == host.transport_address
            await _data_both_ways(a, b)
        finally:
            await a.close()
            await b.close()
        assert pooled.closed
    finally:
        await pool.close()


async def test_a_gatherer_must_be_started_and_serve_the_components() -> None:
    fresh = AsyncGatherer(GatherConfig(components=1), addresses=LOOPBACK)
    with pytest.raises(ValueError):
        IceConnection(True, gatherer=fresh)
    await fresh.start()
    try:
        with pytest.raises(ValueError):
            IceConnection(True, components=2, gatherer=fresh)
    finally:
        await fresh.close()


@pytest.fixture
def turn(coturn_factory: Callable[..., Coturn]) -> Coturn:
    return coturn_factory(tls=False)


async def test_pooled_relay_gets_permissions_and_carries_the_connection(turn: Coturn) -> None:
    """A relay-only pooled set: the adopted allocation gets the permission for the peer as
    soon as its candidates arrive, and the connection goes through it."""
    user = "alice"
    config = GatherConfig(
        turn_servers=[TurnServer(turn.turn_address(), user, turn.users[user])],
        relay_only=True,
        turn_timeout=5.0,
    )
    pool = CandidatePool(config, size=1, refill_delay=0, addresses=LOOPBACK)
    await pool.start()
    try:
        await pool.wait_ready(timeout=10)
        pooled = pool.take()
        assert pooled is not None
        a = IceConnection(True, gatherer=pooled, agent_options={"ta": 0.02})
        b = IceConnection(False, bind="127.0.0.1", agent_options={"ta": 0.02})
        try:
            await connect(a, b, timeout=10)
            (relayed,) = a.local_candidates
            assert relayed.type is CandidateType.RELAYED
            client = pooled.core.turn_client(relayed.transport_address)
            assert client is not None and client.has_permission("127.0.0.1")
            assert a.transport().relayed
            await _data_both_ways(a, b)
        finally:
            await a.close()
            await b.close()
    finally:
        await pool.close()
