"""Interop: our ICE (ice.aio.IceConnection) against aioice (a dev-only peer) on 127.0.0.1,
in both roles, data both ways; candidates cross as SDP ``a=candidate`` values (ice.sdp)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ice.aio import IceConnection
from ice.candidate import CandidateType
from ice.gather import GatherConfig, TurnServer
from ice.sdp import format_candidate, parse_candidate
from tests.peers.coturn import Coturn

aioice = pytest.importorskip("aioice")
aioice_ice = pytest.importorskip("aioice.ice")


@pytest.fixture(autouse=True)
def aioice_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice gathers on every interface except loopback; tests may only use 127.0.0.0/8."""
    monkeypatch.setattr(aioice_ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
async def ours_and_theirs(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[IceConnection, Any]]:
    we_control: bool = request.param
    ours = IceConnection(we_control, bind="127.0.0.1", agent_options={"ta": 0.02})
    theirs = aioice.Connection(ice_controlling=not we_control, components=1, use_ipv6=False)
    try:
        yield ours, theirs
    finally:
        await ours.close()
        await theirs.close()


async def signal(ours: IceConnection, theirs: Any) -> None:
    """Gather both and exchange ufrag/pwd/candidates through their SDP text forms."""
    await asyncio.gather(ours.gather(timeout=10), theirs.gather_candidates())
    ours.set_remote(
        theirs.local_username,
        theirs.local_password,
        [parse_candidate(c.to_sdp()) for c in theirs.local_candidates],
    )
    theirs.remote_username = ours.local_ufrag
    theirs.remote_password = ours.local_pwd
    for c in ours.local_candidates:
        await theirs.add_remote_candidate(aioice.Candidate.from_sdp(format_candidate(c)))
    await theirs.add_remote_candidate(None)


async def data_both_ways(ours: IceConnection, theirs: Any, n: int = 10) -> None:
    transport = ours.transport()
    for i in range(n):
        assert transport.send(b"\x80ours %d" % i)
    got = {await asyncio.wait_for(theirs.recv(), 5) for _ in range(n)}
    assert got == {b"\x80ours %d" % i for i in range(n)}
    for i in range(n):
        await theirs.send(b"\x80theirs %d" % i)
    got = {await asyncio.wait_for(transport.recv(), 5) for _ in range(n)}
    assert got == {b"\x80theirs %d" % i for i in range(n)}


@pytest.mark.parametrize(
    "ours_and_theirs", [True, False], ids=["we-control", "aioice-controls"], indirect=True
)
async def test_connect_with_aioice(ours_and_theirs: tuple[IceConnection, Any]) -> None:
    ours, theirs = ours_and_theirs
    await signal(ours, theirs)
    await asyncio.wait_for(asyncio.gather(ours.connect(), theirs.connect()), 15)
    assert ours.controlling is (not theirs.ice_controlling)
    selected = ours.transport().selected
    assert selected is not None
    assert selected[0].type is CandidateType.HOST and selected[1].type is CandidateType.HOST
    remote_ports = {c.port for c in theirs.local_candidates}
    assert selected[1].port in remote_ports
    await data_both_ways(ours, theirs)


@pytest.fixture
def turn(coturn_factory: Callable[..., Coturn]) -> Coturn:
    return coturn_factory(tls=False)


async def test_aioice_reaches_our_relayed_candidate(turn: Coturn) -> None:
    user = "alice"
    ours = IceConnection(
        True,
        bind="127.0.0.1",
        gather=GatherConfig(
            turn_servers=[TurnServer(turn.turn_address(), user, turn.users[user])],
            relay_only=True,
        ),
        agent_options={"ta": 0.02},
    )
    theirs = aioice.Connection(ice_controlling=False, use_ipv6=False)
    try:
        await signal(ours, theirs)
        assert [c.type for c in ours.local_candidates] == [CandidateType.RELAYED]
        await asyncio.wait_for(asyncio.gather(ours.connect(), theirs.connect()), 15)
        selected = ours.transport().selected
        assert selected is not None and selected[0].type is CandidateType.RELAYED
        await data_both_ways(ours, theirs)
    finally:
        await ours.close()
        await theirs.close()


async def test_two_components_with_aioice() -> None:
    ours = IceConnection(True, bind="127.0.0.1", components=2, agent_options={"ta": 0.02})
    theirs = aioice.Connection(ice_controlling=False, components=2, use_ipv6=False)
    try:
        await signal(ours, theirs)
        assert sorted(c.component for c in ours.local_candidates) == [1, 2]
        await asyncio.wait_for(asyncio.gather(ours.connect(), theirs.connect()), 15)
        for component in (1, 2):
            assert ours.transport(component).send(b"\x80to %d" % component)
        got = {await asyncio.wait_for(theirs.recvfrom(), 5) for _ in range(2)}
        assert got == {(b"\x80to 1", 1), (b"\x80to 2", 2)}
        for component in (1, 2):
            await theirs.sendto(b"\x80from %d" % component, component)
        for component in (1, 2):
            data = await asyncio.wait_for(ours.transport(component).recv(), 5)
            assert data == b"\x80from %d" % component
    finally:
        await ours.close()
        await theirs.close()
