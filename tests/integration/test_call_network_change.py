"""softphone.call after a local address change (ice.netmonitor): ICE restart, or a re-INVITE.

When the address the selected pair's local candidate lives on goes away, the call restarts
ICE with candidates gathered anew (RFC 8445 §9): a re-INVITE with new ufrag/pwd, the peer
restarts its side, media moves to the new pair. One restart per burst of changes, and at
most one more for changes during a restart; changes that do not touch the call are ignored.
Without ICE the call re-INVITEs with a new address in ``c=``. The listener is removed at
the hang-up.

Two in-process user agents on 127.0.0.1 (real sockets, ICE, RTP). The monitor is a stand-in
whose listeners the test calls with the changes (the address does not really go away: the
new gathering finds 127.0.0.1 again, with new ports).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from ice.netmonitor import AddressChange
from media.aio import UdpTransport
from softphone.call import Call, MediaOptions
from softphone.config import Account, HostPort
from tests.helpers_call import LOOPBACK, Pair, media_options, packets_received, until

ANY = HostPort("0.0.0.0", 0)

Listener = Callable[[Sequence[AddressChange]], None]


class FakeMonitor:
    """Stands in for ice.netmonitor.AddressMonitor: keeps the listeners for the test to call."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def fire(self, *changes: AddressChange) -> None:
        for listener in list(self.listeners):
            listener(changes)


def change(host: str, added: bool, interface: str = "eth0") -> AddressChange:
    return AddressChange(added, ipaddress.ip_address(host), 24, 2, interface)


async def _connect(
    pair: Pair, accounts: tuple[Account, Account], monitors: tuple[Any, Any]
) -> tuple[Call, Call]:
    """alice's call (her account and address monitor first) to bob's, answered."""
    alice = Call(pair.alice, accounts[0], _media(), monitor=monitors[0])
    return await pair.connected(alice, Call(pair.bob, accounts[1], _media(), monitor=monitors[1]))


def _media() -> MediaOptions:
    return media_options(network_settle=0.2)


async def _flowing(alice: Call, bob: Call, more: int = 10) -> None:
    """Media goes on both ways: ``more`` packets more each side."""
    alice_wants, bob_wants = packets_received(alice) + more, packets_received(bob) + more
    await until(lambda: packets_received(alice) > alice_wants and packets_received(bob) > bob_wants)


async def _hang_up(alice: Call, bob: Call) -> None:
    await alice.hangup()
    await asyncio.wait_for(bob.run(), 5)


@pytest.mark.parametrize("who", ["caller", "callee"])
async def test_the_selected_pairs_address_going_away_restarts_ice_once(
    pair: Pair, who: str
) -> None:
    monitor = FakeMonitor()
    account = Account(bind=LOOPBACK)
    monitors = (monitor, None) if who == "caller" else (None, monitor)
    alice, bob = await _connect(pair, (account, account), monitors)
    moved, other = (alice, bob) if who == "caller" else (bob, alice)
    lines: list[str] = []
    moved.progress = lines.append
    try:
        assert len(monitor.listeners) == 1  # subscribed while the call is up
        await _flowing(alice, bob)
        old_ice, other_ice = moved.ice, other.ice
        assert old_ice is not None and other_ice is not None
        old_ufrag, old_port = old_ice.local_ufrag, old_ice.local_candidates[0].port
        # one burst: the address goes away (reported twice) and another one comes
        monitor.fire(change("127.0.0.1", False, "lo"))
        monitor.fire(change("127.0.0.1", False, "lo"), change("192.0.2.20", True))
        await until(lambda: any(line.startswith("ICE restarted") for line in lines))
        assert lines.count("network changed: restarting ICE") == 1
        assert moved.network_restarts == 1
        new_ice = moved.ice
        assert new_ice is not None and new_ice is not old_ice  # candidates gathered anew
        assert new_ice.local_ufrag != old_ufrag
        assert new_ice.local_candidates[0].port != old_port
        # the peer got the re-INVITE with the new credentials and restarted its side
        assert other.remote is not None and other.remote.ice is not None
        assert other.remote.ice.ufrag == new_ice.local_ufrag
        assert other.ice is other_ice and other_ice.agent.stats().restarts == 1
        assert moved.remote is not None and moved.remote.ice is not None
        assert moved.remote.ice.ufrag == other_ice.local_ufrag
        await _flowing(alice, bob)  # on the new pair
        assert new_ice.transport(1).packets_sent > 0 and new_ice.transport(1).packets_received > 0
        assert moved._retired_ice == []  # the old connection is closed
        assert moved._network_task is not None and moved._network_task.done()
    finally:
        await _hang_up(alice, bob)
    assert monitor.listeners == []  # unsubscribed at the hang-up
    assert alice.succeeded and bob.succeeded


async def test_changes_during_a_restart_lead_to_one_more(
    pair: Pair,
) -> None:
    monitor = FakeMonitor()
    account = Account(bind=LOOPBACK)
    alice, bob = await _connect(pair, (account, account), (monitor, None))
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if line.startswith("restarting ICE (") and lines.count(line) == 1:
            # while the first restart runs (its re-INVITE is going out): two more bursts
            monitor.fire(change("127.0.0.1", False, "lo"))
            monitor.fire(change("127.0.0.1", False, "lo"))

    alice.progress = progress
    try:
        await _flowing(alice, bob)
        monitor.fire(change("127.0.0.1", False, "lo"))
        await until(lambda: sum(line.startswith("ICE restarted") for line in lines) == 2)
        await until(lambda: alice._network_task is not None and alice._network_task.done())
        assert lines.count("network changed: restarting ICE") == 2
        assert alice.network_restarts == 2
        assert bob.ice is not None and bob.ice.agent.stats().restarts == 2
        await _flowing(alice, bob)
    finally:
        await _hang_up(alice, bob)


async def test_changes_that_do_not_touch_the_call_are_ignored(
    pair: Pair,
) -> None:
    """Another interface's address goes away, a new one comes while the pair is direct and
    alive: nothing to do."""
    monitor = FakeMonitor()
    account = Account(bind=LOOPBACK)
    alice, bob = await _connect(pair, (account, account), (monitor, None))
    try:
        await _flowing(alice, bob, 3)
        ice = alice.ice
        monitor.fire(change("192.0.2.7", False), change("2001:db8::7", False, "wlan0"))
        monitor.fire(change("198.51.100.9", True))
        assert alice._network_task is None and alice.network_restarts == 0
        assert alice.ice is ice
    finally:
        await _hang_up(alice, bob)
    assert monitor.listeners == []


async def test_without_ice_a_reinvite_moves_our_media_address(
    pair: Pair,
) -> None:
    """No ICE: our c= address goes away and another appears; a re-INVITE puts the new one in
    c=, the peer sends there (our RTP sockets are bound to the wildcard address)."""
    monitor = FakeMonitor()
    alice, bob = await _connect(
        pair, (Account(bind=ANY, ice=False), Account(bind=LOOPBACK, ice=False)), (monitor, None)
    )
    lines: list[str] = []
    alice.progress = lines.append
    try:
        assert bob.remote is not None and bob.remote.rtp[0] == "127.0.0.1"
        await _flowing(alice, bob)
        monitor.fire(change("127.0.0.1", False, "lo"), change("127.0.0.2", True, "lo"))
        await until(lambda: bob.remote is not None and bob.remote.rtp[0] == "127.0.0.2")
        assert "network changed: re-INVITE with c=127.0.0.2" in lines
        assert alice.oa is not None and alice.oa.media[0].address == "127.0.0.2"
        # bob's RTP reaches alice at 127.0.0.2. (Alice's own RTP still leaves from 127.0.0.1,
        # which has not really gone: bob, latched on the signalled address, drops it now.)
        rtp = bob._paths[0]
        assert isinstance(rtp, UdpTransport) and rtp.remote is not None
        assert rtp.remote[0] == "127.0.0.2"
        before = packets_received(alice)
        await until(lambda: packets_received(alice) > before + 10)
        assert alice.network_restarts == 1
    finally:
        await _hang_up(alice, bob)
    assert alice.succeeded and bob.succeeded


async def test_our_ice_with_a_peer_without_moves_the_default_candidate(
    pair: Pair,
) -> None:
    """We offered ICE, the peer answered without: media runs on our default candidate. Its
    address goes away: candidates are gathered anew and a re-INVITE puts the new default
    candidate in c=/m=; the peer follows and the media goes on."""
    monitor = FakeMonitor()
    alice, bob = await _connect(
        pair, (Account(bind=LOOPBACK), Account(bind=LOOPBACK, ice=False)), (monitor, None)
    )
    lines: list[str] = []
    alice.progress = lines.append
    try:
        assert alice.remote is not None and alice.remote.ice is None
        assert bob.remote is not None
        old_port, old_ice = bob.remote.rtp[1], alice.ice
        await _flowing(alice, bob)
        monitor.fire(change("127.0.0.1", False, "lo"))
        await until(lambda: any(line.startswith("plain RTP 127.0.0.1:") for line in lines))
        assert "network changed: new candidates for the peer without ICE" in lines
        assert alice.ice is not old_ice and alice.ice is not None
        assert bob.remote is not None and bob.remote.rtp[1] != old_port
        assert alice.oa is not None and alice.oa.media[0].port == bob.remote.rtp[1]
        await _flowing(alice, bob)
        assert alice.network_restarts == 1
    finally:
        await _hang_up(alice, bob)
    assert alice.succeeded and bob.succeeded
