"""ice.aio's precise timer: a Linux timerfd watched by the asyncio loop (PreciseWake)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

import ice.aio
from ice.aio import IceConnection, PreciseWake, connect

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux")


@pytest.fixture
async def wake() -> AsyncIterator[tuple[PreciseWake, list[float]]]:
    """A PreciseWake and the loop times its callback ran at."""
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    made = PreciseWake.create(loop, lambda: fired.append(loop.time()))
    assert made is not None
    yield made, fired
    made.close()


@linux_only
async def test_precise_wake_fires_once_never_early(
    wake: tuple[PreciseWake, list[float]],
) -> None:
    timer, fired = wake
    when = asyncio.get_running_loop().time() + 0.003
    assert timer.set(when)
    await asyncio.sleep(0.05)
    assert len(fired) == 1 and fired[0] >= when
    assert not timer.armed


@linux_only
async def test_precise_wake_cancel_and_rearm(wake: tuple[PreciseWake, list[float]]) -> None:
    timer, fired = wake
    loop = asyncio.get_running_loop()
    assert timer.set(loop.time() + 0.002)
    timer.cancel()
    await asyncio.sleep(0.03)
    assert fired == []
    first = loop.time() + 0.2
    assert timer.set(first)
    later = loop.time() + 0.004  # re-armed: only the new time counts
    assert timer.set(later)
    await asyncio.sleep(0.25)  # past the first time too: it was replaced, not added
    assert len(fired) == 1 and fired[0] >= later
    assert timer.set(loop.time() - 1.0)  # in the past: at once
    await asyncio.sleep(0.01)
    assert len(fired) == 2


@linux_only
async def test_connection_uses_the_precise_wake_while_checking() -> None:
    """While checking, near timers (here the first retransmission, 50 ms away, whatever
    the machine's load; on loopback also the 5 ms floor before the nomination) are waited
    out with the PreciseWake; it is made with the sockets and closed with them."""
    a = IceConnection(True, bind="127.0.0.1", agent_options={"ta": 0.02, "min_rto": 0.05})
    b = IceConnection(False, bind="127.0.0.1", agent_options={"ta": 0.02})
    try:
        await asyncio.gather(a.gather(), b.gather())
        precise = a._precise
        assert precise is not None
        armed: list[float] = []
        real_set = precise.set

        def recording_set(when: float) -> bool:
            armed.append(when - asyncio.get_running_loop().time())
            return real_set(when)

        precise.set = recording_set  # type: ignore[method-assign]
        a.set_remote(b.local_ufrag, b.local_pwd, b.local_candidates)
        b.set_remote(a.local_ufrag, a.local_pwd, a.local_candidates)
        await asyncio.gather(a.connect(5), b.connect(5))
        assert armed and all(0 < t < ice.aio.PRECISE_HORIZON for t in armed)
        assert a.transport().send(b"\x80x")
        assert await asyncio.wait_for(b.transport().recv(), 2) == b"\x80x"
    finally:
        await a.close()
        await b.close()
    assert a._precise is None  # closed with the connection


async def test_without_precise_timers_call_at_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ice.aio, "PRECISE_TIMERS", False)
    a = IceConnection(True, bind="127.0.0.1", agent_options={"ta": 0.02})
    b = IceConnection(False, bind="127.0.0.1", agent_options={"ta": 0.02})
    try:
        await connect(a, b, timeout=5)
        assert a._precise is None and b._precise is None
    finally:
        await a.close()
        await b.close()


async def test_both_ends_pace_at_the_larger_proposal() -> None:
    """Each side signals its ``pacing_ms`` (a=ice-pacing) and passes the other's to
    ``set_remote``: both use the larger, and still connect."""
    a = IceConnection(True, bind="127.0.0.1", agent_options={"pacing_ms": 20})
    b = IceConnection(False, bind="127.0.0.1", agent_options={"pacing_ms": 35})
    try:
        await asyncio.gather(a.gather(), b.gather())
        a.set_remote(b.local_ufrag, b.local_pwd, b.local_candidates, pacing_ms=b.pacing_ms)
        b.set_remote(a.local_ufrag, a.local_pwd, a.local_candidates, pacing_ms=a.pacing_ms)
        assert a.ta == b.ta == pytest.approx(0.035)
        await asyncio.gather(a.connect(5), b.connect(5))
    finally:
        await a.close()
        await b.close()


@linux_only
async def test_precise_wake_polls_the_last_stretch_and_serves_the_loop() -> None:
    """With a lead the timerfd goes off early and the loop polls for the rest: never early,
    once, and other callbacks (sockets, futures) still run while it polls."""
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    timer = PreciseWake.create(loop, lambda: fired.append(loop.time()), lead=0.004)
    assert timer is not None and timer.lead == 0.004
    try:
        when = loop.time() + 0.005
        assert timer.set(when)
        served: list[float] = []

        def tick() -> None:
            served.append(loop.time())
            if len(served) < 10_000 and not fired:
                loop.call_soon(tick)

        await asyncio.sleep(0.002)  # the timerfd has gone off: the loop polls now
        loop.call_soon(tick)
        await asyncio.sleep(0.02)
        assert len(fired) == 1 and fired[0] >= when
        assert served and served[0] < when, "other callbacks ran during the polling"
        assert not timer.armed
    finally:
        timer.close()


@linux_only
async def test_precise_wake_cancel_or_rearm_while_polling() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    timer = PreciseWake.create(loop, lambda: fired.append(loop.time()), lead=0.01)
    assert timer is not None
    try:
        assert timer.set(loop.time() + 0.005)  # within the lead: polling at once
        await asyncio.sleep(0)
        timer.cancel()
        await asyncio.sleep(0.02)
        assert fired == [] and not timer.armed
        assert timer.set(loop.time() + 0.005)
        await asyncio.sleep(0)
        later = loop.time() + 0.03  # re-armed while polling: only the new time counts
        assert timer.set(later)
        await asyncio.sleep(0.06)
        assert len(fired) == 1 and fired[0] >= later
    finally:
        timer.close()


async def test_connect_starts_the_checks_when_called() -> None:
    """``connect()`` starts the checks at once (not when first awaited) and returns a
    future; each call gets its own, settled together when ICE completes."""
    a = IceConnection(True, bind="127.0.0.1", agent_options={"ta": 0.02})
    b = IceConnection(False, bind="127.0.0.1", agent_options={"ta": 0.02})
    try:
        await asyncio.gather(a.gather(), b.gather())
        a.set_remote(b.local_ufrag, b.local_pwd, b.local_candidates)
        b.set_remote(a.local_ufrag, a.local_pwd, a.local_candidates)
        first = a.connect()
        assert isinstance(first, asyncio.Future) and not first.done()
        assert a.agent.stats().checks_sent == 1, "the first check went out in the call"
        second = a.connect(5)
        assert second is not first
        await asyncio.gather(first, second, b.connect(5))
        assert a.connect().done(), "completed: a new waiter is done at once"
    finally:
        await a.close()
        await b.close()


async def test_connect_timeout_and_close_fail_the_waiters() -> None:
    a = IceConnection(True, bind="127.0.0.1", agent_options={"ta": 0.02})
    try:
        await a.gather()
        a.set_remote("peerufrag", "peerpasswordpeerpassword", [], end_of_candidates=False)
        with pytest.raises(ice.aio.IceError, match="in time"):
            await a.connect(0.01)
        waiting = a.connect()
        other = asyncio.ensure_future(a.connected())
        await asyncio.sleep(0)
    finally:
        await a.close()
    for future in (waiting, other):
        with pytest.raises(ice.aio.IceError, match="closed"):
            await future


@linux_only
async def test_precise_wake_waits_out_the_last_microseconds() -> None:
    """Less than PRECISE_SPIN to go at a poll: the callback runs on time, not a loop turn
    late nor early."""
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    timer = PreciseWake.create(loop, lambda: fired.append(loop.time()), lead=0.002)
    assert timer is not None
    try:
        for _ in range(20):
            when = loop.time() + 0.003
            assert timer.set(when)
            await asyncio.sleep(0.006)
            assert fired and fired[-1] >= when
        assert len(fired) == 20
    finally:
        timer.close()


async def test_a_later_far_timer_keeps_the_loop_timer_already_set() -> None:
    """The agent's next timer moves later (e.g. the consent check after the last
    retransmission time): the loop timer already set is kept, finds nothing due when it
    fires, and the agent's timer still runs at the new time, once."""
    conn = IceConnection(True, bind="127.0.0.1")
    try:
        await conn.gather()
        loop = asyncio.get_running_loop()
        agent = conn.agent
        due: list[float | None] = [loop.time() + 0.15]
        ran: list[float] = []

        def handle_timer(now: float) -> None:
            ran.append(now)
            due[0] = None

        agent.get_timer = lambda: due[0]  # type: ignore[method-assign]
        agent.handle_timer = handle_timer  # type: ignore[method-assign]
        conn._pump()
        first = conn._timer
        assert first is not None
        later = loop.time() + 0.3
        due[0] = later
        conn._pump()
        assert conn._timer is first, "kept, not cancelled and made again"
        await asyncio.sleep(0.2)  # the kept timer went off: nothing was due
        assert ran == [] and conn._timer is not None and conn._timer is not first
        await asyncio.sleep(0.2)
        assert len(ran) == 1 and ran[0] >= later
    finally:
        await conn.close()
