"""ice.aio.IceConnection before the nomination: data on a valid pair (RFC 8445 §12.1) and
TURN permissions asked for as soon as the peer's candidates are known (RFC 8656 §9)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable

import pytest

from ice.agent import AgentState
from ice.aio import IceConnection, IceError
from ice.candidate import Candidate, CandidateType
from ice.gather import GatherConfig, TurnServer
from tests.peers.coturn import Coturn


async def test_data_flows_on_a_valid_pair_before_completion() -> None:
    """The controlling side checks a silent candidate ranked first (a socket that never
    answers) and, with Ta 3 s (and no cap on that wait), waits that long before nominating
    the working pair.  Both sides are usable long before: data goes both ways while ICE is
    still running, then the same pair is nominated and data keeps flowing."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    patient = {"ta": 3.0, "nomination_delay": 30.0}
    a = IceConnection(True, bind="127.0.0.1", agent_options=patient)
    b = IceConnection(False, bind="127.0.0.1", agent_options={"ta": 0.02})
    try:
        await asyncio.gather(a.gather(), b.gather())
        decoy = Candidate.make(CandidateType.HOST, *silent.getsockname()[:2])
        decoy = dataclasses.replace(decoy, priority=decoy.priority + 1000)
        a.set_remote(b.local_ufrag, b.local_pwd, [decoy, *b.local_candidates])
        b.set_remote(a.local_ufrag, a.local_pwd, a.local_candidates)
        a.start()
        b.start()
        await asyncio.wait_for(asyncio.gather(a.usable(), b.usable()), 2)
        assert a.agent.state is AgentState.RUNNING, "a waits for the silent pair (Ta 3 s)"
        assert a.transport().selected is None
        in_use = a.transport().in_use
        assert in_use is not None and in_use[1].port != silent.getsockname()[1]
        for sender, receiver, tag in ((a, b, b"\x80a->b"), (b, a, b"\x80b->a")):
            assert sender.transport().send(tag)
            assert await asyncio.wait_for(receiver.transport().recv(), 2) == tag
        assert a.agent.state is AgentState.RUNNING, "the data above went before nomination"
        await asyncio.gather(a.connected(10), b.connected(10))
        sel = a.transport().selected
        assert sel is not None and sel[1].port != silent.getsockname()[1]
        for sender, receiver, tag in ((a, b, b"\x80A->B"), (b, a, b"\x80B->A")):
            assert sender.transport().send(tag)
            assert await asyncio.wait_for(receiver.transport().recv(), 2) == tag
    finally:
        silent.close()
        await a.close()
        await b.close()


async def test_usable_raises_when_closed() -> None:
    a = IceConnection(True, bind="127.0.0.1")
    await a.gather()
    waiter = asyncio.ensure_future(a.usable())
    await asyncio.sleep(0)
    await a.close()
    with pytest.raises(IceError):
        await waiter


@pytest.fixture
def turn(coturn_factory: Callable[..., Coturn]) -> Coturn:
    return coturn_factory(tls=False)


@pytest.mark.parametrize("remote_first", [False, True], ids=["gathered-first", "remote-first"])
async def test_turn_permissions_for_the_peer_before_any_check(
    turn: Coturn, remote_first: bool
) -> None:
    """The permission for each remote candidate's IP is asked for as soon as both the
    relayed candidate and the remote candidates are known, whichever comes first, before a
    single check went through the relay (the checks are not even started)."""
    user = "alice"
    config = GatherConfig(
        turn_servers=[TurnServer(turn.turn_address(), user, turn.users[user])],
        relay_only=True,
        turn_timeout=5.0,
    )
    a = IceConnection(True, bind="127.0.0.1", gather=config)
    peer = Candidate.make(CandidateType.HOST, "127.0.0.1", 9)
    try:
        if remote_first:
            a.set_remote("peerufrag", "peerpasswordpeerpassword", [peer])
        await a.gather(10)
        (relayed,) = [c for c in a.local_candidates if c.type is CandidateType.RELAYED]
        client = a.gatherer.core.turn_client(relayed.transport_address)
        assert client is not None
        if not remote_first:
            assert not client.has_permission("127.0.0.1")
            a.set_remote("peerufrag", "peerpasswordpeerpassword", [peer])
        for _ in range(100):
            if client.has_permission("127.0.0.1"):
                break
            await asyncio.sleep(0.02)
        assert client.has_permission("127.0.0.1")
        assert a.stats().checks_sent == 0
    finally:
        await a.close()
