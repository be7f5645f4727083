"""NAT mapping detection (ice.gather) with real sockets and coturn on loopback: no NAT there,
so every socket's mapping is endpoint-independent, found without the RFC 5780 test (the
mapped address is the socket's own); the result reaches AsyncGatherer.mapping,
IceConnection.nat_mapping and CandidatePool.mapping, is cached, and the pool forgets it
on invalidate()."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from ice.aio import IceConnection
from ice.candidate import CandidateType
from ice.gather import AsyncGatherer, GatherConfig, GatherEvent, MappingDetected, TurnServer
from ice.nat import MappingBehavior, MappingCache
from ice.pool import CandidatePool
from tests.peers.coturn import Coturn

pytestmark = pytest.mark.integration

LOOPBACK = ["127.0.0.1"]


@pytest.fixture
def turn(coturn_factory: Callable[..., Coturn]) -> Coturn:
    return coturn_factory(tls=False)


def turn_config(server: Coturn) -> GatherConfig:
    user = "alice"
    return GatherConfig(
        stun_servers=[server.stun_address],
        turn_servers=[TurnServer(server.turn_address(), user, server.users[user])],
    )


async def test_gatherer_reports_and_caches_the_mapping(turn: Coturn) -> None:
    cache = MappingCache()
    events: list[GatherEvent] = []
    g = AsyncGatherer(
        turn_config(turn), addresses=LOOPBACK, mapping_cache=cache, on_event=events.append
    )
    try:
        await g.start()
        found = await g.wait_complete(5.0)
        assert g.mapping is MappingBehavior.ENDPOINT_INDEPENDENT
        detected = [e for e in events if isinstance(e, MappingDetected)]
        assert len(detected) == 1 and not detected[0].endpoint_dependent
        assert detected[0].local == g.local_addresses[0]
        # no NAT: the relayed candidate keeps the recommended preference
        relays = [c.candidate for c in found if c.candidate.type is CandidateType.RELAYED]
        assert relays and all(c.type_preference == 0 for c in relays)
        assert len(cache) >= 1
    finally:
        await g.close()
    # the next gathering from the same address starts with the cached result
    events.clear()
    g2 = AsyncGatherer(
        turn_config(turn), addresses=LOOPBACK, mapping_cache=cache, on_event=events.append
    )
    try:
        await g2.start()
        assert g2.mapping is MappingBehavior.ENDPOINT_INDEPENDENT  # before any answer
        await g2.wait_complete(5.0)
    finally:
        await g2.close()


async def test_ice_connection_exposes_the_mapping(turn: Coturn) -> None:
    conn = IceConnection(True, gather=turn_config(turn), addresses=LOOPBACK)
    try:
        assert conn.nat_mapping is MappingBehavior.UNKNOWN
        await conn.gather(5.0)
        assert conn.nat_mapping is MappingBehavior.ENDPOINT_INDEPENDENT
    finally:
        await conn.close()


async def test_pool_reports_the_mapping_and_forgets_it_on_invalidate(turn: Coturn) -> None:
    cache = MappingCache()
    cfg = dataclasses.replace(turn_config(turn), components=1)
    pool = CandidatePool(cfg, addresses=LOOPBACK, mapping_cache=cache, refill_delay=0.0)
    try:
        assert pool.mapping is MappingBehavior.UNKNOWN
        await pool.start()
        await pool.wait_ready(1, timeout=5.0)
        assert pool.mapping is MappingBehavior.ENDPOINT_INDEPENDENT
        assert len(cache) >= 1
        pool.invalidate()
        assert len(cache) == 0 and pool.mapping is MappingBehavior.UNKNOWN
        await pool.wait_ready(1, timeout=5.0)
        assert pool.mapping is MappingBehavior.ENDPOINT_INDEPENDENT
    finally:
        await pool.close()
