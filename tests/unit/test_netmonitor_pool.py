"""ice.pool.CandidatePool following an AddressMonitor (host-only sets on loopback; the changes
are fed with ``monitor.notify``, as the monitor does after a burst of rtnetlink messages; the
real kernel notifications are in tests/lab/test_netmonitor_lab.py): which changes matter, ready
sets and sets being gathered are replaced, the softphone's pool says so and closes its monitor."""

from __future__ import annotations

import ipaddress
import itertools
import threading
from collections.abc import Sequence

import pytest

from ice.gather import AsyncGatherer, GatherConfig
from ice.interfaces import LocalAddress
from ice.netmonitor import AddressChange, AddressMonitor
from ice.pool import CandidatePool
from softphone.config import Account, HostPort
from softphone.useragent import NETWORK_CHANGED, start_candidate_pool
from tests.helpers_call import until

LOOPBACK = ["127.0.0.1"]


def change(
    host: str, added: bool = False, interface: str = "eth0", index: int = 2
) -> AddressChange:
    address = ipaddress.ip_address(host)
    return AddressChange(added, address, 24 if address.version == 4 else 64, index, interface)


def hosts(gatherer: AsyncGatherer) -> set[str]:
    return {c.candidate.address for c in gatherer.core.candidates}


# -- which changes matter -----------------------------------------------------------------------


def test_which_changes_matter_to_a_pool() -> None:
    config = GatherConfig()
    default = CandidatePool(config)
    assert default.matters(change("198.51.100.7"))
    assert default.matters(change("2001:db8::7", added=True))
    assert not default.matters(change("172.17.0.1", interface="docker0"))  # DEFAULT_EXCLUDE
    assert not default.matters(change("10.8.0.2", interface="tun0"))
    assert not default.matters(change("fe80::1"))
    assert not default.matters(change("127.0.0.2", interface="lo"))

    wifi = CandidatePool(config, include=["wl*"])
    assert wifi.matters(change("198.51.100.7", interface="wlan0"))
    assert not wifi.matters(change("198.51.100.8", interface="eth0"))
    vpn = CandidatePool(config, exclude=())
    assert vpn.matters(change("10.8.0.2", interface="tun0"))

    v4 = CandidatePool(config, bind="0.0.0.0")
    assert v4.matters(change("198.51.100.7")) and not v4.matters(change("2001:db8::7"))
    v6 = CandidatePool(config, bind="[::]")
    assert v6.matters(change("2001:db8::7")) and not v6.matters(change("198.51.100.7"))
    pinned = CandidatePool(config, bind="198.51.100.7")
    assert pinned.matters(change("198.51.100.7"))
    assert not pinned.matters(change("198.51.100.8"))
    pinned6 = CandidatePool(config, bind="[2001:db8::7]")
    assert pinned6.matters(change("2001:db8::7")) and not pinned6.matters(change("2001:db8::8"))

    # with servers, an address anywhere may change the way to them (a VPN): srflx / relay
    servers = GatherConfig(stun_servers=[("192.0.2.1", 3478)])
    assert CandidatePool(servers).matters(change("10.8.0.2", interface="tun0"))
    assert not CandidatePool(servers).matters(change("fe80::1", interface="tun0"))
    assert not CandidatePool(servers).matters(change("127.0.0.2", interface="lo"))
    wg0, tun0 = change("2001:db8::7", interface="wg0"), change("10.8.0.2", interface="tun0")
    assert CandidatePool(servers).matters(wg0)
    assert not CandidatePool(servers, bind="0.0.0.0").matters(wg0)  # another family
    assert not CandidatePool(servers, bind="198.51.100.7").matters(tun0)

    fixed = CandidatePool(config, addresses=[LocalAddress("198.51.100.7", "eth0"), "[::1]"])
    assert fixed.matters(change("198.51.100.7")) and fixed.matters(change("::1"))
    assert not fixed.matters(change("198.51.100.8"))


# -- re-gathering -------------------------------------------------------------------------------


async def test_a_change_that_matters_gathers_every_ready_set_again() -> None:
    monitor = AddressMonitor()  # not started: the changes are fed by hand
    pool = CandidatePool(GatherConfig(), size=2, addresses=LOOPBACK, monitor=monitor)
    regathered: list[Sequence[AddressChange]] = []
    pool.on_regathered = regathered.append
    assert pool.monitor is monitor
    await pool.start()
    try:
        await pool.wait_ready(timeout=5)
        old = [e.gatherer for e in pool._ready]
        monitor.notify([change("198.51.100.9", added=True)])  # not an address of this pool
        assert pool.ready == 2 and pool.network_changes == 0 and not regathered

        gone = change("127.0.0.1", interface="lo", index=1)
        monitor.notify([gone])
        assert pool.ready == 0 and pool.network_changes == 1
        await pool.wait_ready(timeout=5)
        fresh = [e.gatherer for e in pool._ready]
        assert not {id(g) for g in fresh} & {id(g) for g in old}
        await until(lambda: all(g.closed for g in old))  # retired: sockets released
        assert regathered == [[gone]]  # once, when the first fresh set was ready
        taken = pool.take()
        assert taken is not None and taken in fresh
        await taken.close()
    finally:
        await pool.close()


async def test_a_change_before_the_pool_starts_is_nothing_to_gather_again() -> None:
    monitor = AddressMonitor()
    pool = CandidatePool(GatherConfig(), addresses=LOOPBACK, monitor=monitor)
    regathered: list[Sequence[AddressChange]] = []
    pool.on_regathered = regathered.append
    monitor.notify([change("127.0.0.1", interface="lo", index=1)])
    await pool.start()
    try:
        await pool.wait_ready(timeout=5)
        assert pool.network_changes == 0 and not regathered
    finally:
        await pool.close()


async def test_a_set_being_gathered_during_a_change_is_never_handed_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first set looks its addresses up before the change (127.0.0.1) and finishes after
    it: it is released, and the set handed out is gathered on the new address (127.0.0.2)."""
    gate = threading.Event()
    calls = itertools.count()

    def local_addresses(**_: object) -> list[LocalAddress]:
        if next(calls) == 0:
            gate.wait(5)
            return [LocalAddress("127.0.0.1", "eth0")]
        return [LocalAddress("127.0.0.2", "eth0")]

    monkeypatch.setattr("ice.pool.local_addresses", local_addresses)
    monitor = AddressMonitor()
    pool = CandidatePool(GatherConfig(), monitor=monitor, refill_delay=0)
    regathered: list[Sequence[AddressChange]] = []
    pool.on_regathered = regathered.append
    await pool.start()
    try:
        await until(lambda: pool.stats().gathering == 1)
        stale = next(iter(pool._filling))
        monitor.notify([change("198.51.100.7"), change("198.51.100.8", added=True)])
        assert pool.stats().gathering == 2  # the replacement starts at once
        gate.set()
        await pool.wait_ready(timeout=5)
        await until(lambda: stale.done())
        taken = pool.take()
        assert taken is not None
        assert hosts(taken) == {"127.0.0.2"}
        assert [[c.host for c in batch] for batch in regathered] == [
            ["198.51.100.7", "198.51.100.8"]
        ]
        await taken.close()
        await pool.wait_ready(timeout=5)  # the refill after take() is not stale
        again = pool.take()
        assert again is not None and hosts(again) == {"127.0.0.2"}
        await again.close()
    finally:
        gate.set()
        await pool.close()


async def test_closing_the_pool_stops_watching_and_closes_an_owned_monitor() -> None:
    shared = AddressMonitor()
    pool = CandidatePool(GatherConfig(), addresses=LOOPBACK)
    pool.watch(shared)
    await pool.start()
    await pool.wait_ready(timeout=5)
    await pool.close()
    shared.notify([change("127.0.0.1")])  # no longer the pool's business
    assert pool.network_changes == 0
    assert shared._listeners == []  # its listener is gone; the monitor is not the pool's

    try:
        owned = AddressMonitor()
        owned.start()
    except OSError as exc:
        pytest.skip(f"no rtnetlink here: {exc}")
    pool = CandidatePool(GatherConfig(), addresses=LOOPBACK, monitor=owned, close_monitor=True)
    await pool.start()
    await pool.close()
    assert not owned.running


async def test_the_accounts_pool_has_a_monitor_and_says_when_it_gathered_again() -> None:
    lines: list[str] = []
    account = Account(bind=HostPort("127.0.0.1", 0))
    pool = await start_candidate_pool(account, lines.append)
    assert pool is not None
    monitor = pool.monitor
    try:
        if monitor is None:
            pytest.skip("no rtnetlink here: the pool has no monitor")
        assert monitor.running
        await pool.wait_ready(1, timeout=5)
        seen: list[Sequence[AddressChange]] = []
        monitor.add_listener(seen.append)  # what a call does to follow the changes
        monitor.notify([change("198.51.100.7", added=True)])  # not on 127.0.0.1: ignored
        assert pool.ready == 1 and not lines
        monitor.notify([change("127.0.0.1", interface="lo", index=1)])
        await until(lambda: bool(lines))
        assert lines == [f"{NETWORK_CHANGED} (-127.0.0.1)"]
        assert [[c.host for c in batch] for batch in seen] == [["198.51.100.7"], ["127.0.0.1"]]
    finally:
        await pool.close()
    assert monitor is not None and not monitor.running


async def test_the_tui_logs_the_network_change_and_closes_the_monitor() -> None:
    from softphone.tui import SoftphoneEngine

    account = Account(name="frank", user="frank", domain="127.0.0.1", bind=HostPort("127.0.0.1", 0))
    engine = SoftphoneEngine(account, play="tone:440", record="none")
    logged: list[str] = []
    engine.on_log = logged.append
    await engine.start()
    try:
        await until(lambda: engine.lines[0].pool is not None, timeout=15)
        pool = engine.lines[0].pool
        assert pool is not None
        monitor = pool.monitor
        if monitor is None:
            pytest.skip("no rtnetlink here: the pool has no monitor")
        await pool.wait_ready(1, timeout=15)
        monitor.notify([change("127.0.0.1", interface="lo", index=1)])
        await until(lambda: any(NETWORK_CHANGED in line for line in logged), timeout=15)
        assert f"frank: {NETWORK_CHANGED} (-127.0.0.1)" in logged
    finally:
        await engine.close()
    assert not monitor.running


async def test_tui_calls_without_a_pool_get_the_engines_monitor() -> None:
    from softphone.tui import SoftphoneEngine

    account = Account(name="gina", user="gina", domain="127.0.0.1", ice=False)
    engine = SoftphoneEngine(account, play="tone:440", record="none")
    pooled = CandidatePool(GatherConfig(), addresses=LOOPBACK, monitor=AddressMonitor())
    try:
        monitor = engine._call_monitor(None)
        if monitor is None:
            pytest.skip("no rtnetlink here")
        assert monitor.running and engine._call_monitor(None) is monitor  # one, on first need
        assert engine._call_monitor(pooled) is None  # the call takes the pool's
    finally:
        await engine.close()
    assert not monitor.running
