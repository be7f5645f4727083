"""ice.pool.CandidatePool on loopback, host-only and with coturn: sets ready ahead of time,
handed out at once and refilled, too-old sets gathered again, components dropped for an
rtcp-mux call, TURN allocations released on close, and a pooled set carrying a real ICE
connection through the relay."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable
from typing import Any

import pytest

from ice.aio import IceConnection
from ice.candidate import CandidateType
from ice.gather import (
    AsyncGatherer,
    CandidateGathered,
    GatherConfig,
    GatherEvent,
    GatheringComplete,
    RelayLost,
    TurnServer,
)
from ice.pool import CandidatePool
from ice.turn import TurnState
from tests.helpers_call import until
from tests.peers.coturn import Coturn

LOOPBACK = ["127.0.0.1"]


@pytest.fixture
def turn(coturn_factory: Callable[..., Coturn]) -> Coturn:
    return coturn_factory(tls=False)


def turn_config(server: Coturn, **options: object) -> GatherConfig:
    user = "alice"
    cfg = GatherConfig(
        stun_servers=[server.stun_address],
        turn_servers=[TurnServer(server.turn_address(), user, server.users[user])],
    )
    return dataclasses.replace(cfg, **options)  # type: ignore[arg-type]


def turn_states(g: AsyncGatherer) -> dict[int, TurnState]:
    return {t.sock.component: t.client.state for t in g.core._turns}


async def adopt(conn: IceConnection, gatherer: AsyncGatherer) -> None:
    """What ``IceConnection(..., gatherer=gatherer)`` is to do (ice/aio.py belongs to another
    change): take the pooled gatherer instead of its own, and have its candidates replayed."""
    loop = asyncio.get_running_loop()
    conn.gatherer = gatherer
    conn._gathering_started = True
    conn._loop = loop
    conn._connected = loop.create_future()
    gatherer.attach(
        on_event=conn._on_gather_event,
        on_datagram=conn._on_socket_datagram,
        on_relayed=conn._on_relayed_datagram,
    )


async def test_host_only_pool_hands_out_ready_sets_and_refills() -> None:
    pool = CandidatePool(GatherConfig(components=2), size=2, refill_delay=0, addresses=LOOPBACK)
    assert pool.take() is None  # not started: nothing
    await pool.start()
    try:
        await pool.wait_ready(timeout=5)
        assert pool.ready == 2
        first = pool.take()
        second = pool.take(components=1)
        assert pool.ready == 0 and pool.stats().gathering == 2  # refilling now
        assert first is not None and second is not None and first is not second
        assert first.complete and not first.closed
        assert sorted(c.candidate.component for c in first.core.signalled_candidates) == [1, 2]
        assert [c.candidate.component for c in second.core.signalled_candidates] == [1]
        await until(lambda: len(second.local_addresses) == 1)  # component 2's socket closed
        await pool.wait_ready(timeout=5)
        stats = pool.stats()
        assert stats.taken == 2 and stats.gathered >= 4
        assert pool.take(components=3) is None  # more than it gathers: gather as usual
        assert pool.stats().misses == 1 and pool.ready == 2
        await first.close()
        await second.close()
    finally:
        await pool.close()
    assert pool.ready == 0 and pool.take() is None


async def test_a_set_is_only_handed_to_a_call_that_would_gather_the_same(turn: Coturn) -> None:
    cfg = turn_config(turn, components=2)
    pool = CandidatePool(cfg, addresses=LOOPBACK)
    assert pool.serves(cfg) and pool.serves(dataclasses.replace(cfg, components=1))
    assert pool.serves(dataclasses.replace(cfg, stun_timeout=1.0, ta=0.02))
    other_turn = TurnServer(turn.turn_address(), "test", turn.users["test"])
    different = [
        dataclasses.replace(cfg, components=3),
        dataclasses.replace(cfg, relay_only=True),
        dataclasses.replace(cfg, stun_servers=[]),
        dataclasses.replace(cfg, turn_servers=[other_turn]),
    ]
    assert not any(pool.serves(c) for c in different)
    await pool.start()
    try:
        await pool.wait_ready(timeout=10)
        for c in different:
            assert pool.take(c.components, config=c) is None
        assert pool.ready == 1 and pool.stats().misses == len(different)
        g = pool.take(1, config=dataclasses.replace(cfg, components=1))
        assert g is not None
        await g.close()
    finally:
        await pool.close()


async def test_attach_replays_the_candidates_to_the_new_owner() -> None:
    pool = CandidatePool(GatherConfig(), addresses=LOOPBACK)
    await pool.start()
    try:
        await pool.wait_ready(timeout=5)
        g = pool.take()
        assert g is not None
        seen: list[GatherEvent] = []
        g.attach(on_event=seen.append, on_datagram=None, on_relayed=None)
        assert [type(e) for e in seen] == [CandidateGathered, GatheringComplete]
        first = seen[0]
        assert isinstance(first, CandidateGathered)
        assert first.local.candidate.type is CandidateType.HOST
        assert await g.wait_complete(1) == g.core.signalled_candidates
        await g.close()
    finally:
        await pool.close()


async def test_too_old_sets_are_gathered_again() -> None:
    pool = CandidatePool(GatherConfig(), max_age=0.2, addresses=LOOPBACK)
    await pool.start()
    try:
        await pool.wait_ready(timeout=5)
        old = pool._ready[0].gatherer
        await until(lambda: pool.stats().expired >= 1 and pool.ready == 1)
        assert pool._ready[0].gatherer is not old
        await until(lambda: old.closed)
    finally:
        await pool.close()


async def test_a_set_that_lost_its_allocation_is_replaced() -> None:
    pool = CandidatePool(GatherConfig(), addresses=LOOPBACK)
    await pool.start()
    try:
        await pool.wait_ready(timeout=5)
        entry = pool._ready[0]
        handler = entry.gatherer.on_event
        assert handler is not None
        handler(RelayLost(("192.0.2.1", 1), "test"))  # as the gatherer reports a lost one
        assert pool.ready == 0
        await pool.wait_ready(timeout=5)
        assert pool._ready[0] is not entry
    finally:
        await pool.close()


async def test_pool_with_coturn_keeps_allocations_and_releases_them(turn: Coturn) -> None:
    pool = CandidatePool(turn_config(turn, components=2), size=2, addresses=LOOPBACK)
    await pool.start()
    try:
        await pool.wait_ready(timeout=10)
        sets = [e.gatherer for e in pool._ready]
        for g in sets:
            types = sorted(c.candidate.type.value for c in g.core.signalled_candidates)
            assert types == ["host", "host", "relay", "relay"]  # srflx = host on loopback
            assert turn_states(g) == {1: TurnState.ALLOCATED, 2: TurnState.ALLOCATED}
            assert g.config.keepalive is not None
        taken = pool.take(components=1)
        assert taken is sets[0]
        # component 2's allocation is released at once, component 1's kept
        await until(lambda: turn_states(taken)[2] is TurnState.CLOSED)
        assert turn_states(taken) == {1: TurnState.ALLOCATED, 2: TurnState.CLOSED}
        await taken.close()
        assert turn_states(taken)[1] is TurnState.CLOSED
    finally:
        await pool.close()
    # closing the pool released the set still in it (Refresh with LIFETIME 0 answered)
    assert turn_states(sets[1]) == {1: TurnState.CLOSED, 2: TurnState.CLOSED}
    assert sets[1].closed


async def test_a_pooled_relay_set_carries_an_ice_connection(turn: Coturn) -> None:
    pool = CandidatePool(turn_config(turn, relay_only=True), addresses=LOOPBACK)
    await pool.start()
    a = IceConnection(True, bind="127.0.0.1", gather=turn_config(turn, relay_only=True))
    b = IceConnection(False, bind="127.0.0.1")
    try:
        await pool.wait_ready(timeout=10)
        pooled = pool.take(components=1)
        assert pooled is not None
        await adopt(a, pooled)
        assert [c.type for c in a.local_candidates] == [CandidateType.RELAYED]
        await b.gather(timeout=5)
        a.set_remote(b.local_ufrag, b.local_pwd, b.local_candidates)
        b.set_remote(a.local_ufrag, a.local_pwd, a.local_candidates)
        await asyncio.gather(a.connect(10), b.connect(10))
        assert a.transport(1).relayed and b.transport(1).relayed
        got: asyncio.Queue[bytes] = asyncio.Queue()
        b.transport(1).on_receive = got.put_nowait
        assert a.transport(1).send(b"through a pooled relay")
        assert await asyncio.wait_for(got.get(), 5) == b"through a pooled relay"
    finally:
        await a.close()
        await b.close()
        await pool.close()
    assert pooled.closed  # the connection closed the set it took


async def test_turn_over_tcp_sets_release_the_dropped_component(turn: Coturn) -> None:
    user = "alice"
    tcp = TurnServer(turn.turn_address("tcp"), user, turn.users[user], "tcp")
    cfg = GatherConfig(turn_servers=[tcp], components=2, relay_only=True)
    pool = CandidatePool(cfg, addresses=LOOPBACK)
    await pool.start()
    try:
        await pool.wait_ready(timeout=10)
        g = pool.take(components=1)
        assert g is not None
        relays = [c for c in g.core.signalled_candidates if c.relay is not None]
        assert [c.candidate.component for c in relays] == [1]
        assert list(g._stream_components.values()) == [1]
        assert len(g._stream_allocs) == 1
        await g.close()
    finally:
        await pool.close()


async def test_keepalives_leave_the_allocation_working(turn: Coturn) -> None:
    # Binding indications every 50 ms to coturn (STUN and TURN on one address): the
    # allocation keeps relaying, the server reports nothing wrong
    pool = CandidatePool(turn_config(turn, keepalive=0.05), addresses=LOOPBACK)
    await pool.start()
    try:
        await pool.wait_ready(timeout=10)
        g = pool._ready[0].gatherer
        sent: list[tuple[bytes, tuple[str, int]]] = []
        transport = g._transports[g.local_addresses[0]]
        original = transport.sendto

        def spy(data: bytes, addr: Any = None) -> None:
            sent.append((bytes(data), addr))
            original(data, addr)

        transport.sendto = spy  # type: ignore[method-assign,assignment]
        await asyncio.sleep(0.3)
        indications = [d for d, _ in sent if d[:2] == b"\x00\x11"]  # Binding indication
        assert len(indications) >= 3
        taken = pool.take()
        assert taken is g
        relayed = next(c.candidate.transport_address for c in g.core.candidates if c.relay)
        got: asyncio.Queue[bytes] = asyncio.Queue()
        g.attach(on_event=None, on_datagram=None, on_relayed=lambda d, r, p: got.put_nowait(d))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            g.permit(relayed, ["127.0.0.1"])
            client = g.core.turn_client(relayed)
            assert client is not None
            await until(lambda: client.has_permission("127.0.0.1"))
            peer.sendto(b"still relaying", relayed)
            assert await asyncio.wait_for(got.get(), 5) == b"still relaying"
        await g.close()
    finally:
        await pool.close()


async def test_invalidate_gathers_every_ready_set_again() -> None:
    pool = CandidatePool(GatherConfig(), size=2, addresses=LOOPBACK)
    await pool.start()
    try:
        await pool.wait_ready(timeout=5)
        old = [e.gatherer for e in pool._ready]
        pool.invalidate()
        assert pool.ready == 0
        await pool.wait_ready(timeout=5)
        assert not {id(e.gatherer) for e in pool._ready} & {id(g) for g in old}
        await until(lambda: all(g.closed for g in old))
    finally:
        await pool.close()


async def test_close_while_a_set_is_still_gathering_releases_it() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        dead = silent.getsockname()
        cfg = GatherConfig(stun_servers=[dead], stun_timeout=30.0)
        pool = CandidatePool(cfg, addresses=LOOPBACK)
        await pool.start()
        await until(lambda: pool.stats().gathering == 1)
        await asyncio.sleep(0.05)  # its socket is open, the Binding request is out
        await pool.close()
        assert pool.stats().gathering == 0 and pool.ready == 0
        assert pool.take() is None


async def test_a_set_missing_a_server_is_used_but_gathered_again_sooner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ice.pool

    monkeypatch.setattr(ice.pool, "DEGRADED_MAX_AGE", 0.3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        cfg = GatherConfig(stun_servers=[silent.getsockname()], stun_timeout=0.1)
        pool = CandidatePool(cfg, max_age=60.0, addresses=LOOPBACK)
        await pool.start()
        try:
            await pool.wait_ready(timeout=5)
            entry = pool._ready[0]
            assert entry.degraded  # the STUN server never answered; host candidates only
            await until(lambda: pool.stats().expired >= 1, timeout=5)  # not after 60 s
            await until(lambda: pool.ready == 1 and pool._ready[0] is not entry)
        finally:
            await pool.close()
