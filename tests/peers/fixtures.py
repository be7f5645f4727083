"""pytest fixtures for the peers; imported by tests/conftest.py so every test layer sees them.

Every fixture skips (with the reason) when its Debian binary is missing or root is needed
and absent; every peer it started is stopped at teardown, even when the test fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.peers.baresip import Baresip
from tests.peers.coturn import Coturn
from tests.peers.dnsmasq import Dnsmasq
from tests.peers.kamailio import Kamailio
from tests.peers.lab_services import LabServices, start_lab_services
from tests.peers.netns import Lab, NatLab, build_nat_lab, netns_available
from tests.peers.process import ProcessPeer
from tests.peers.pulse import PulseAudio
from tests.peers.sipp import Sipp


def require_binary(name: str, package: str | None = None) -> str:
    """Path of ``name`` on PATH, else skip the test saying which Debian package provides it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package {package or name})")
    return path


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root")


P = TypeVar("P", bound=ProcessPeer)


def _started_peers(
    peer_dir: Path, cls: Callable[..., P], prefix: str
) -> Iterator[Callable[..., P]]:
    """The body of a ``*_factory`` fixture: ``make(*args, **options)`` creates
    ``cls(peer_dir / f"{prefix}{n}", *args, **options)`` and starts it; every peer made is
    stopped at teardown (also one whose start failed)."""
    started: list[P] = []

    def make(*args: Any, **options: Any) -> P:
        peer = cls(peer_dir / f"{prefix}{len(started)}", *args, **options)
        started.append(peer)
        peer.start()
        return peer

    yield make
    for peer in started:
        peer.stop()


@pytest.fixture
def peer_dir(tmp_path: Path) -> Path:
    """Directory for peer configs and logs of this test (kept by pytest for inspection)."""
    d = tmp_path / "peers"
    d.mkdir(exist_ok=True)
    return d


# ---- Kamailio ------------------------------------------------------------------------------


@pytest.fixture
def kamailio_factory(peer_dir: Path) -> Iterator[Callable[..., Kamailio]]:
    """``kamailio_factory(**options)`` starts a :class:`Kamailio` (see its arguments)."""
    require_binary("kamailio")
    yield from _started_peers(peer_dir, Kamailio, "kamailio")


@pytest.fixture
def kamailio(kamailio_factory: Callable[..., Kamailio]) -> Kamailio:
    """A running Kamailio: domain example.org, users alice/bob/carol, UDP+TCP+TLS, MD5."""
    return kamailio_factory()


# ---- sipp ----------------------------------------------------------------------------------


@pytest.fixture
def sipp_factory(peer_dir: Path) -> Iterator[Callable[..., Sipp]]:
    """``sipp_factory(scenario, remote=None, **options)``: a new, not yet started :class:`Sipp`."""
    require_binary("sipp", "sip-tester")
    made: list[Sipp] = []

    def make(scenario: str | Path, remote: str | None = None, **options: Any) -> Sipp:
        s = Sipp(peer_dir, scenario, remote, **options)
        made.append(s)
        return s

    yield make
    for s in made:
        if s.running():
            s.stop(grace=1.0)


# ---- coturn --------------------------------------------------------------------------------


@pytest.fixture
def coturn_factory(peer_dir: Path) -> Iterator[Callable[..., Coturn]]:
    """``coturn_factory(**options)`` starts a :class:`Coturn` (see its arguments)."""
    require_binary("turnserver", "coturn")
    yield from _started_peers(peer_dir, Coturn, "coturn")


@pytest.fixture
def coturn(coturn_factory: Callable[..., Coturn]) -> Coturn:
    """A running coturn on 127.0.0.1 (RFC 5780 alternate 127.0.0.2), users test/test and
    alice/alice-turn-1, realm example.org, UDP+TCP+TLS, relay ports on 127.0.0.1."""
    return coturn_factory()


# ---- network namespaces ---------------------------------------------------------------------


@pytest.fixture
def netns_lab(peer_dir: Path) -> Iterator[Lab]:
    """An empty :class:`Lab` (root only); everything in it is deleted at teardown."""
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    lab = Lab(peer_dir / "lab")
    try:
        yield lab
    finally:
        lab.cleanup()


@pytest.fixture
def nat_lab(netns_lab: Lab) -> NatLab:
    """The standard lab: a public net (203.0.113.1 and .2 for servers) and two laptops, each
    behind its own endpoint-independent NAT (MASQUERADE). For other NAT types build your own
    with ``build_nat_lab(netns_lab, symmetric=(...))``."""
    return build_nat_lab(netns_lab)


@pytest.fixture
def lab_services(nat_lab: NatLab, peer_dir: Path) -> Iterator[LabServices]:
    """:func:`nat_lab` plus, in its public namespace, Kamailio (sip.example.org =
    203.0.113.1, UDP/TCP 5060, TLS 5061), coturn (3478, RFC 5780 alternate 203.0.113.2:3479,
    TLS 5349) and dnsmasq (NAPTR/SRV/A for example.org, stun/turn.example.org), which
    every laptop uses as its resolver."""
    for binary, package in (("kamailio", None), ("turnserver", "coturn"), ("dnsmasq", None)):
        require_binary(binary, package)
    services = start_lab_services(nat_lab, peer_dir / "lab-services")
    try:
        yield services
    finally:
        services.stop()


# ---- PulseAudio ------------------------------------------------------------------------------


@pytest.fixture
def pulse(peer_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseAudio]:
    """A private PulseAudio with default sink ``nullsink`` and source ``nullsink.monitor``.

    Its client environment (PULSE_SERVER, XDG_RUNTIME_DIR, ...) is also set in this
    process's environment for the test, so subprocesses and PortAudio find it."""
    require_binary("pulseaudio")
    require_binary("pactl", "pulseaudio-utils")
    pa = PulseAudio(peer_dir / "pulse")
    pa.start()
    for key, value in pa.client_env().items():
        monkeypatch.setenv(key, value)
    try:
        yield pa
    finally:
        pa.stop()


# ---- dnsmasq -------------------------------------------------------------------------------


@pytest.fixture
def dns_factory(peer_dir: Path) -> Iterator[Callable[..., Dnsmasq]]:
    """``dns_factory(records, **options)`` starts a :class:`Dnsmasq` serving ``records``
    (a :class:`DnsRecords`; ``records.add_sip_domain(...)`` builds the RFC 3263 chain)."""
    require_binary("dnsmasq")
    yield from _started_peers(peer_dir, Dnsmasq, "dnsmasq")


# ---- baresip -------------------------------------------------------------------------------


@pytest.fixture
def baresip_factory(peer_dir: Path) -> Iterator[Callable[..., Baresip]]:
    """``baresip_factory(**options)`` starts a :class:`Baresip` user agent (auto-answer; it
    registers first when given ``registrar="HOST:PORT"`` and ``password``)."""
    require_binary("baresip")
    yield from _started_peers(peer_dir, Baresip, "baresip")
