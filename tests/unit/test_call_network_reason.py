"""softphone.call: which local address changes make a call restart ICE, and how often.

The call's ICE connection, its pairs and its SIP side are stand-ins; the decision
(:meth:`Call._network_reason`) and the debouncing of :meth:`Call.network_changed` are the
real ones (restart_ice replaced by a counter).
"""

from __future__ import annotations

import asyncio
import ipaddress
from types import SimpleNamespace
from typing import Any

import pytest

from ice.candidate import Candidate, CandidateType
from ice.netmonitor import AddressChange
from softphone import call as call_module
from softphone.call import Call, MediaOptions
from softphone.config import Account


def change(host: str, added: bool, *, deprecated: bool = False) -> AddressChange:
    return AddressChange(added, ipaddress.ip_address(host), 24, 2, "eth0", deprecated=deprecated)


class FakeAgent:
    def __init__(self, local: Candidate | None, base: tuple[str, int], consent: bool) -> None:
        pair = None
        if local is not None:
            pair = SimpleNamespace(local=SimpleNamespace(candidate=local, base=base))
        self.pair, self.consent = pair, consent

    def data_pair(self, component: int = 1) -> Any:
        return self.pair if self.consent else None

    def selected_pair(self, component: int = 1) -> Any:
        return self.pair

    def has_consent(self, component: int = 1) -> bool:
        return self.pair is not None and self.consent


def _call(
    kind: CandidateType | None,
    address: str = "192.0.2.10",
    *,
    base: str | None = None,
    consent: bool = True,
    sockets: tuple[str, ...] = ("192.0.2.10",),
) -> Call:
    call = Call(SimpleNamespace(), Account(), MediaOptions(network_settle=0.01))  # type: ignore[arg-type]
    local = None if kind is None else Candidate.make(kind, address, 5000)
    agent = FakeAgent(local, (base or address, 5000), consent)
    gatherer = SimpleNamespace(local_addresses=[(ip, 5000) for ip in sockets])
    call.ice = SimpleNamespace(agent=agent, gatherer=gatherer)  # type: ignore[assignment]
    call.remote = SimpleNamespace(ice=object())  # type: ignore[assignment]
    call._answered_at = 1.0
    return call


def test_a_direct_pair_restarts_only_when_its_address_goes_away() -> None:
    call = _call(CandidateType.HOST)
    assert call._network_reason([change("192.0.2.10", False)]) is not None
    assert call._network_reason([change("192.0.2.11", False)]) is None
    assert call._network_reason([change("198.51.100.1", True)]) is None  # it still works
    # a server-reflexive candidate lives on its base (the host address)
    srflx = _call(CandidateType.SERVER_REFLEXIVE, "203.0.113.5", base="192.0.2.10")
    assert srflx._network_reason([change("192.0.2.10", False)]) is not None
    assert srflx._network_reason([change("203.0.113.5", False)]) is None
    # IPv6 written another way is the same address
    v6 = _call(CandidateType.HOST, "2001:db8::1", sockets=("2001:db8::1",))
    assert v6._network_reason([change("2001:0db8:0::1", False)]) is not None


def test_a_relayed_pair_restarts_for_a_new_address_or_a_socket_of_ours_gone() -> None:
    call = _call(CandidateType.RELAYED, "203.0.113.50", sockets=("192.0.2.10", "10.0.0.2"))
    reason = call._network_reason([change("198.51.100.1", True)])
    assert reason is not None and "relayed" in reason
    assert call._network_reason([change("10.0.0.2", False)]) is not None
    assert call._network_reason([change("172.16.0.9", False)]) is None
    # an address that only became deprecated is not a new one
    assert call._network_reason([change("198.51.100.1", True, deprecated=True)]) is None


def test_without_a_working_pair_a_new_address_restarts() -> None:
    dead = _call(CandidateType.HOST, consent=False)
    assert dead._network_reason([change("198.51.100.1", True)]) is not None
    assert dead._network_reason([change("192.0.2.10", False)]) is not None  # gathered on it
    assert dead._network_reason([change("172.16.0.9", False)]) is None
    none = _call(None)
    assert none._network_reason([change("198.51.100.1", True)]) is not None


def test_a_call_without_ice_on_either_side_looks_at_its_c_address() -> None:
    call = Call(SimpleNamespace(), Account(ice=False), MediaOptions())  # type: ignore[arg-type]
    call._answered_at = 1.0
    call._plain = [object()]  # type: ignore[list-item]
    call.oa = SimpleNamespace(media=[SimpleNamespace(address="192.0.2.10")])  # type: ignore[assignment]
    assert call._network_reason([change("192.0.2.10", False)]) is not None
    assert call._network_reason([change("192.0.2.11", False)]) is None


async def test_one_restart_per_burst_and_one_more_for_changes_during_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    call = _call(CandidateType.HOST)
    restarts: list[bool] = []
    gate = asyncio.Event()

    async def restart_ice(**kwargs: Any) -> bool:
        restarts.append(kwargs.get("regather", False))
        if len(restarts) == 1:
            # changes while the first restart runs
            call.network_changed([change("192.0.2.10", False)])
            call.network_changed([change("192.0.2.10", False)])
            await gate.wait()
        return True

    monkeypatch.setattr(call, "restart_ice", restart_ice)
    lines: list[str] = []
    call.progress = lines.append
    for _ in range(3):  # one burst
        call.network_changed([change("192.0.2.10", False)])
    call.network_changed([change("192.0.2.99", False)])  # not ours
    task = call._network_task
    assert task is not None
    await asyncio.sleep(0.1)
    assert restarts == [True]  # one restart, candidates gathered anew
    gate.set()
    await asyncio.wait_for(task, 2)
    assert restarts == [True, True] and call.network_restarts == 2
    assert lines == ["network changed: restarting ICE"] * 2
    call.network_changed([change("192.0.2.10", False)])  # a later burst: a new restart
    later = call._network_task
    assert later is not None and later is not task
    call._unwatch_network()  # the hang-up stops it
    await asyncio.sleep(0)
    assert later.cancelled() and restarts == [True, True]


def test_not_answered_or_ended_calls_ignore_changes() -> None:
    call = _call(CandidateType.HOST)
    call._answered_at = None
    call.network_changed([change("192.0.2.10", False)])
    assert call._network_task is None
    call._answered_at, call._closed = 1.0, True
    call.network_changed([change("192.0.2.10", False)])
    assert call._network_task is None


def test_the_pools_monitor_is_used_when_none_is_given() -> None:
    listeners: list[Any] = []

    def add_listener(listener: Any) -> Any:
        listeners.append(listener)
        return lambda: listeners.remove(listener)

    monitor = SimpleNamespace(add_listener=add_listener)
    pool: Any = SimpleNamespace(monitor=monitor)
    call = Call(SimpleNamespace(), Account(), MediaOptions(), pool=pool)  # type: ignore[arg-type]
    call._watch_network()
    call._watch_network()  # once
    assert listeners == [call.network_changed]
    call._unwatch_network()
    assert listeners == []
    # an explicit monitor wins; no monitor at all: nothing to do
    other: list[Any] = []

    def add_other(listener: Any) -> Any:
        other.append(listener)
        return lambda: None

    mine = SimpleNamespace(add_listener=add_other)
    call = Call(SimpleNamespace(), Account(), pool=pool, monitor=mine)  # type: ignore[arg-type]
    call._watch_network()
    assert other == [call.network_changed] and listeners == []
    lone = Call(SimpleNamespace(), Account())  # type: ignore[arg-type]
    lone._watch_network()
    assert lone._unwatch is None


def test_a_peer_without_ice_looks_at_our_default_candidate() -> None:
    call = _call(CandidateType.HOST, sockets=("192.0.2.10", "10.0.0.2"))
    path = object.__new__(call_module._DefaultCandidatePath)
    path.local, path.relayed = ("192.0.2.10", 5000), False
    call._paths = (path, None)
    call.remote = SimpleNamespace(ice=None)  # type: ignore[assignment]
    assert call._network_reason([change("192.0.2.10", False)]) is not None
    assert call._network_reason([change("10.0.0.2", False)]) is None
    assert call._network_reason([change("198.51.100.1", True)]) is None
    path.local, path.relayed = ("203.0.113.50", 6000), True  # through our TURN allocation
    assert call._network_reason([change("10.0.0.2", False)]) is not None


async def test_an_address_gone_in_an_earlier_batch_still_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pair's address went away and the restart found nothing to gather on; when a new
    address comes later, the call tries again. An address that came back is not gone."""
    call = _call(CandidateType.HOST)
    restarts: list[bool] = []

    async def restart_ice(**kwargs: Any) -> bool:
        restarts.append(kwargs.get("regather", False))
        return False  # no address to gather on

    monkeypatch.setattr(call, "restart_ice", restart_ice)
    call.network_changed([change("192.0.2.10", False)])
    assert call._network_task is not None
    await asyncio.wait_for(call._network_task, 2)
    call.network_changed([change("198.51.100.1", True)])  # the next change: again
    assert call._network_task is not None
    await asyncio.wait_for(call._network_task, 2)
    assert restarts == [True, True]
    call.network_changed([change("192.0.2.10", True)])  # back again: nothing to do
    assert call._network_task.done()
    assert call._network_reason([change("198.51.100.2", True)]) is None
