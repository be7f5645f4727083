"""A CandidatePool with coturn, told of a network change by its AddressMonitor: the ready sets'
TURN allocations are released (Refresh with LIFETIME 0, RFC 8656 §7) and new ones made."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from ice.gather import AsyncGatherer, GatherConfig, TurnServer
from ice.netmonitor import AddressChange, AddressMonitor
from ice.pool import CandidatePool
from ice.turn import TurnState
from tests.helpers_call import until
from tests.peers.coturn import Coturn


@pytest.fixture
def turn(coturn_factory: Callable[..., Coturn]) -> Coturn:
    return coturn_factory(tls=False)


def turn_states(g: AsyncGatherer) -> list[TurnState]:
    return [t.client.state for t in g.core._turns]


async def test_a_network_change_releases_the_allocations_and_makes_new_ones(turn: Coturn) -> None:
    config = GatherConfig(
        stun_servers=[turn.stun_address],
        turn_servers=[TurnServer(turn.turn_address(), "alice", turn.users["alice"])],
    )
    monitor = AddressMonitor()  # the change is fed by hand (kernel ones: tests/lab)
    pool = CandidatePool(config, size=2, addresses=["127.0.0.1"], monitor=monitor)
    await pool.start()
    try:
        await pool.wait_ready(timeout=10)
        old = [e.gatherer for e in pool._ready]
        assert all(turn_states(g) == [TurnState.ALLOCATED] for g in old)
        gone = AddressChange(False, ipaddress.ip_address("127.0.0.1"), 8, 1, "lo")
        monitor.notify([gone])
        await until(lambda: all(turn_states(g) == [TurnState.CLOSED] for g in old))
        await pool.wait_ready(timeout=10)
        fresh = [e.gatherer for e in pool._ready]
        assert all(turn_states(g) == [TurnState.ALLOCATED] for g in fresh)
        assert not {id(g) for g in fresh} & {id(g) for g in old}
        assert all(any(c.relay for c in g.core.candidates) for g in fresh)
    finally:
        await pool.close()
