"""ice.aio.IceConnection after ``limit_components``: an answer that accepts ``a=rtcp-mux``
(RFC 5761 §5.1.3) after we offered RTP and RTCP candidates leaves one component, and every
wait (``usable``, ``connected``) must count only that one."""

from __future__ import annotations

import asyncio
import socket

import pytest

from ice.agent import AgentState
from ice.aio import IceConnection, IceError
from ice.candidate import Candidate, CandidateType


async def _data_flows(a: IceConnection, b: IceConnection) -> None:
    for sender, receiver, tag in ((a, b, b"\x80a->b"), (b, a, b"\x80b->a")):
        assert sender.transport(1).send(tag)
        assert await asyncio.wait_for(receiver.transport(1).recv(), 5) == tag


async def test_usable_after_the_answer_accepts_rtcp_mux() -> None:
    """We offered two components, the answerer took one (rtcp-mux) and only our RTP
    candidates: the agent is limited before the checks (as softphone.call does it, on the
    agent itself); ``usable()`` and ``connected()`` then wait for component 1 only."""
    a = IceConnection(True, components=2, bind="127.0.0.1")
    b = IceConnection(False, components=1, bind="127.0.0.1")
    try:
        await asyncio.gather(a.gather(), b.gather())
        assert {c.component for c in a.local_candidates} == {1, 2}
        a.agent.limit_components(1)
        b.set_remote(
            a.local_ufrag, a.local_pwd, [c for c in a.local_candidates if c.component == 1]
        )
        a.set_remote(b.local_ufrag, b.local_pwd, b.local_candidates)
        a.start()
        b.start()
        await asyncio.gather(a.usable(10), b.usable(10))  # IceError if not usable in time
        assert a.components == 1 and a.transport(1).in_use is not None
        await _data_flows(a, b)
        await asyncio.gather(a.connected(10), b.connected(10))
        assert a.agent.state is AgentState.COMPLETED
        assert a.transport(1).selected is not None and a.transport(2).selected is None
        assert not a.transport(2).send(b"\x80rtcp"), "component 2 is gone"
        assert set(a.stats().selected) == {1}
        await _data_flows(a, b)
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("on", ["connection", "agent"])
async def test_limit_components_while_waiting_completes_the_waits(on: str) -> None:
    """Two components on both sides, but each side's component-2 candidate for the other is
    a socket that never answers: component 2 cannot work, so ``usable()`` and
    ``connected()`` wait (its checks retransmit).  Dropping it
    (``IceConnection.limit_components``) while they wait lets both resolve, and the
    gatherer keeps only component 1's sockets; a wait for component 2 alone fails.
    ``on="agent"``: limited on the agent itself, behind the connection's back (the waits
    still count only component 1)."""
    silent = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in silent:
        s.bind(("127.0.0.1", 0))
    a = IceConnection(True, components=2, bind="127.0.0.1")
    b = IceConnection(False, components=2, bind="127.0.0.1")
    waits: list[asyncio.Future[None]] = []
    try:
        await asyncio.gather(a.gather(), b.gather())
        for (us, peer), hole in zip(((a, b), (b, a)), silent, strict=True):
            rtp = [c for c in peer.local_candidates if c.component == 1]
            rtcp = Candidate.make(CandidateType.HOST, *hole.getsockname()[:2], component=2)
            us.set_remote(peer.local_ufrag, peer.local_pwd, [*rtp, rtcp])
        a.start()
        b.start()
        for conn in (a, b):
            waits.append(asyncio.ensure_future(conn.usable(10)))
            waits.append(asyncio.ensure_future(conn.connected(10)))
        rtcp_usable = asyncio.ensure_future(a.usable(10, component=2))
        waits.append(rtcp_usable)
        # the RTP component alone is usable (media may start without the RTCP one)
        await asyncio.gather(a.usable(10, component=1), b.usable(10, component=1))
        with pytest.raises(ValueError):
            await a.usable(component=3)
        assert a.agent.send_target(1) is not None and b.agent.send_target(1) is not None
        await asyncio.sleep(0.05)  # the RTCP checks go on, unanswered
        assert a.agent.state is AgentState.RUNNING
        assert not any(w.done() for w in waits), "component 2 has no valid pair: still waiting"
        for conn in (a, b):
            if on == "connection":
                conn.limit_components(1)
            else:
                conn.agent.limit_components(1)
        with pytest.raises(IceError, match="component 2 was dropped"):
            await rtcp_usable
        waits.remove(rtcp_usable)
        await asyncio.gather(*waits)  # IceError if they did not resolve in time
        assert a.components == b.components == 1
        if on == "connection":
            assert a.gatherer.config.components == 1, "component 2's sockets are released"
        assert {c.component for c in a.local_candidates} == {1}
        await _data_flows(a, b)
    finally:
        for w in waits:
            w.cancel()
        for s in silent:
            s.close()
        await a.close()
        await b.close()
