"""softphone.useragent.AddressFollower: the user agent follows an address monitor's batches
(re-registers from a new address) ahead of the calls, one move at a time, with a progress
line; and sip.aio.AsyncUserAgent.address_changed on real sockets (loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from typing import Any

import pytest

from ice.netmonitor import AddressChange
from sip.aio import AsyncUserAgent
from sip.ua import UAConfig
from softphone.useragent import REREGISTERED, AddressFollower, follow_address_changes


class FakeMonitor:
    def __init__(self) -> None:
        self.listeners: list[Callable[[Sequence[AddressChange]], None]] = []
        self.usable: list[AddressChange] = []

    def addresses(self) -> list[AddressChange]:
        return list(self.usable)

    def add_listener(self, cb: Callable[[Sequence[AddressChange]], None]) -> Callable[[], None]:
        self.listeners.append(cb)
        return lambda: self.listeners.remove(cb)

    def emit(self, *changes: AddressChange) -> None:
        for cb in list(self.listeners):
            cb(changes)


class FakeCore:
    def __init__(self, registrations: int, recovering: bool = False) -> None:
        self.registrations = [object()] * registrations
        self.recovering = recovering


class FakeUA:
    """What the follower uses of sip.aio.AsyncUserAgent."""

    def __init__(self, results: list[bool], *, registrations: int = 1) -> None:
        self.results = results
        self.calls = 0
        self.ua = FakeCore(registrations)
        self.registered: object | None = object() if registrations else None
        self.contact = "sip:bob@198.51.100.21:5060"
        self.config = UAConfig(user="bob")
        self.gate: asyncio.Event | None = None

    async def address_changed(self) -> bool:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return self.results.pop(0) if self.results else False


def change(host: str, added: bool) -> AddressChange:
    return AddressChange(added, IPv4Address(host), 24, 2, "eth0")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_move_is_reported_with_the_new_contact() -> None:
    monitor, ua = FakeMonitor(), FakeUA([True])
    lines: list[str] = []
    follower = AddressFollower(ua, monitor, lines.append)  # type: ignore[arg-type]
    monitor.emit(change("198.51.100.21", True), change("198.51.100.20", False))
    await settle()
    assert ua.calls == 1 and follower.moves == 1
    assert lines == [f"{REREGISTERED} sip:bob@198.51.100.21:5060"]
    follower.close()
    monitor.emit(change("198.51.100.22", True))
    await settle()
    assert ua.calls == 1 and not monitor.listeners


async def test_no_move_no_line_and_other_wordings() -> None:
    monitor, ua = FakeMonitor(), FakeUA([False])
    lines: list[str] = []
    follower = AddressFollower(ua, monitor, lines.append)  # type: ignore[arg-type]
    monitor.emit(change("198.51.100.30", True))
    await settle()
    assert ua.calls == 1 and lines == [] and follower.moves == 0
    # peer to peer (no registration)
    p2p = FakeUA([True], registrations=0)
    AddressFollower(p2p, monitor, lines.append)  # type: ignore[arg-type]
    # registering, no answer yet
    waiting = FakeUA([True])
    waiting.ua.recovering = True
    AddressFollower(waiting, monitor, lines.append)  # type: ignore[arg-type]
    monitor.emit(change("198.51.100.31", True))
    await settle()
    assert lines == [
        "network changed: SIP now at sip:bob@198.51.100.21:5060",
        "network changed: registering as sip:bob@198.51.100.21:5060 (no answer yet)",
    ]


async def test_batches_during_a_move_lead_to_one_more_check() -> None:
    monitor, ua = FakeMonitor(), FakeUA([True, True])
    lines: list[str] = []
    ua.gate = asyncio.Event()
    follower = AddressFollower(ua, monitor, lines.append)  # type: ignore[arg-type]
    monitor.emit(change("198.51.100.21", True))
    await settle()
    for host in ("198.51.100.22", "198.51.100.23"):
        monitor.emit(change(host, True))
    await settle()
    assert ua.calls == 1  # still in the first
    ua.gate.set()
    await settle()
    assert ua.calls == 2 and follower.moves == 2  # the two later batches: one more check
    assert len(lines) == 2


async def test_subscribed_before_later_listeners() -> None:
    """The calls' listeners come later: the monitor calls the user agent's first, so it has
    the new address before any call restarts ICE."""
    monitor, ua = FakeMonitor(), FakeUA([True])
    follower = follow_address_changes(ua, monitor)  # type: ignore[arg-type]
    assert follower is not None
    monitor.add_listener(lambda changes: None)  # a call
    assert monitor.listeners[0] == follower._changed
    assert follow_address_changes(ua, None) is None  # type: ignore[arg-type]


async def test_a_failing_move_does_not_end_the_follower() -> None:
    monitor = FakeMonitor()
    lines: list[str] = []

    class Broken(FakeUA):
        async def address_changed(self) -> bool:
            self.calls += 1
            if self.calls == 1:
                raise OSError("boom")
            return True

    ua = Broken([])
    AddressFollower(ua, monitor, lines.append)  # type: ignore[arg-type]
    monitor.emit(change("198.51.100.21", True))
    await settle()
    monitor.emit(change("198.51.100.22", True))
    await settle()
    assert ua.calls == 2 and len(lines) == 1


async def test_stranded_without_a_route_looks_again() -> None:
    """Our address went away and nothing routes toward the proxy yet (the route comes a
    moment after the new address): look again after the retry waits until it moves."""
    monitor = FakeMonitor()
    ua = FakeUA([False, False, True])
    ua.config.local_host = "198.51.100.20"
    lines: list[str] = []
    follower = AddressFollower(ua, monitor, lines.append, retry_waits=(0.01, 0.01, 0.01))  # type: ignore[arg-type]
    monitor.emit(change("198.51.100.20", False))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if follower.moves:
            break
    assert ua.calls == 3 and follower.moves == 1
    assert lines == [f"{REREGISTERED} sip:bob@198.51.100.21:5060"]
    # gives up after the last wait
    ua.results = [False] * 10
    monitor.emit(change("198.51.100.21", False))
    await asyncio.sleep(0.2)
    assert ua.calls == 3 + 4


async def test_not_stranded_no_retry_and_a_batch_wakes_a_waiting_retry() -> None:
    monitor = FakeMonitor()
    ua = FakeUA([False, False])
    ua.config.local_host = "198.51.100.20"
    monitor.usable = [change("198.51.100.20", True)]  # still ours: nothing to retry
    AddressFollower(ua, monitor, retry_waits=(30.0,))  # type: ignore[arg-type]
    monitor.emit(change("198.51.100.21", True))
    await asyncio.sleep(0.05)
    assert ua.calls == 1
    monitor.usable = []  # gone: a retry waits 30 s, the next batch ends the wait
    monitor.emit(change("198.51.100.20", False))
    await asyncio.sleep(0.05)
    assert ua.calls == 2
    ua.results = [True]
    monitor.emit(change("198.51.100.22", True))
    await asyncio.sleep(0.05)
    assert ua.calls == 3


# ------------------------------------------------------------------ the asyncio shell


async def test_address_changed_on_loopback_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wildcard-bound UA without a proxy moves when the route source changes; a UA bound to
    a specific address never moves."""
    ua = AsyncUserAgent(UAConfig(user="bob", local_host="0.0.0.0", local_port=0))
    fixed = AsyncUserAgent(UAConfig(user="carol", local_host="127.0.0.1", local_port=0))
    await ua.start(transports=("UDP",))
    await fixed.start(transports=("UDP",))
    try:
        sources: dict[str, Any] = {"now": "127.0.0.2"}

        async def current(self: AsyncUserAgent) -> str | None:
            return sources["now"]

        monkeypatch.setattr(AsyncUserAgent, "_current_local_host", current)
        assert await ua.address_changed()
        assert ua.config.local_host == "127.0.0.2"
        assert ua.contact.startswith("sip:bob@127.0.0.2:")
        assert not await ua.address_changed()  # same again
        sources["now"] = None  # no route at all: stay
        assert not await ua.address_changed()
        assert ua.config.local_host == "127.0.0.2"
        sources["now"] = "127.0.0.3"
        assert not await fixed.address_changed()
        assert fixed.config.local_host == "127.0.0.1"
    finally:
        await ua.close(timeout=0.5)
        await fixed.close(timeout=0.5)


async def test_route_source_fallback_skips_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """No route anywhere but one probe range: that source, not 127.0.0.1; nothing at all:
    an address the host name resolves to that is ours; else 127.0.0.1."""
    import sip.aio as aio

    ua = AsyncUserAgent(UAConfig(user="bob"))
    routes = {"10.255.255.254": "10.1.2.3"}
    monkeypatch.setattr(aio, "source_address_toward", lambda ip: routes.get(ip))

    async def host_addresses() -> list[str]:
        return ["192.0.2.77"]

    interfaces = ["127.0.0.1", "169.254.9.9"]
    monkeypatch.setattr(aio, "_host_addresses", host_addresses)
    monkeypatch.setattr(aio, "interface_addresses", lambda: interfaces)
    assert await ua._route_source() == "10.1.2.3"
    routes.clear()
    assert await ua._route_source() == "192.0.2.77"
    interfaces.append("10.9.8.7")  # an interface's address comes before the host name's
    assert await ua._route_source() == "10.9.8.7"
    interfaces.pop()

    async def none() -> list[str]:
        return []

    monkeypatch.setattr(aio, "_host_addresses", none)
    assert await ua._route_source() == "127.0.0.1"
    assert aio._is_local("127.0.0.1") and not aio._is_local("192.0.2.77")


def test_interface_addresses_include_loopback() -> None:
    import socket

    import sip.aio as aio

    names = [name for _i, name in socket.if_nameindex()]
    if "lo" not in names:
        pytest.skip("no Linux loopback interface here")
    assert "127.0.0.1" in aio.interface_addresses()
