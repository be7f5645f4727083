"""The TUI engine's user agents follow local address changes (softphone.useragent
.AddressFollower): through the account's candidate pool's monitor when it has one, else the
engine's own monitor; the followers go away with the engine."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from softphone.config import Account, HostPort
from softphone.tui import SoftphoneEngine
from softphone.useragent import AddressFollower, start_address_monitor


def account(user: str, **changes: object) -> Account:
    acct = Account(name=user, user=user, domain="127.0.0.1", bind=HostPort("127.0.0.1", 0))
    return replace(acct, **changes)  # type: ignore[arg-type]


async def followers(engine: SoftphoneEngine, count: int) -> list[AddressFollower]:
    deadline = time.monotonic() + 15
    while len(engine._followers) < count:
        assert time.monotonic() < deadline, "the user agents do not follow address changes"
        await asyncio.sleep(0.05)
    return list(engine._followers)


@pytest.fixture
async def netlink() -> None:
    monitor = start_address_monitor()
    if monitor is None:
        pytest.skip("no rtnetlink here: no address monitor")
    monitor.close()


@pytest.mark.usefixtures("netlink")
async def test_lines_follow_the_pool_monitor_else_the_engines() -> None:
    engine = SoftphoneEngine(
        account("bob"), more_accounts=(account("carol", candidate_pool=0),), record="none"
    )
    await engine.start()
    try:
        found = await followers(engine, 2)
        by_ua = {f.ua: f for f in found}
        bob, carol = engine.lines
        assert set(by_ua) == {bob.ua, carol.ua}
        assert bob.pool is not None and bob.pool.monitor is not None
        assert by_ua[bob.ua]._changed in bob.pool.monitor._listeners
        assert carol.pool is None and engine._monitor is not None
        assert by_ua[carol.ua]._changed in engine._monitor._listeners
    finally:
        await engine.close()
    assert engine._followers == []
    assert all(f._remove is None for f in found)
