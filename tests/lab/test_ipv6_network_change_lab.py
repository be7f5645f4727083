"""IPv6 renumbering against the real kernel (the other network-change lab tests renumber IPv4
only): a namespace with IPv6 on and no IPv4 address at all, whose global IPv6 address changes
the way a new router advertisement prefix would change it (the new address comes, the old one
goes).

- ice.netmonitor and ice.pool: a python process in the namespace (the child of
  tests/lab/test_netmonitor_lab.py) reports the changes its AddressMonitor saw and the host
  candidates its CandidatePool hands out after gathering again.
- ``softphone answer`` / ``softphone call`` over IPv6 between two namespaces on one link: the
  callee is renumbered mid-call, restarts ICE on the new address and the audio comes back.

Needs root, iproute2 and IPv6 in namespaces (skipped otherwise). Addresses: the documentation
prefix 2001:db8::/32 only, only inside the namespaces; ``nodad`` so no address is tentative
(the test needs no timing for duplicate address detection).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.lab.softphone_lab import SoftphoneProcess
from tests.lab.test_call_network_change_lab import assert_audio_came_back, renumbered_call
from tests.lab.test_netmonitor_lab import Child
from tests.peers.netns import REPO_ROOT, Lab, Namespace, NetnsError, netns_available


def _skip_reason() -> str | None:
    reason = netns_available()
    if reason is not None:
        return reason
    if not Path("/proc/sys/net/ipv6").is_dir():
        return "IPv6 is disabled in this kernel (no /proc/sys/net/ipv6)"
    return None


pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
]

OLD, NEW, PEER = "2001:db8::5", "2001:db8:1::5", "2001:db8::9"
ALICE, BOB, BOB_NEW = "2001:db8::1", "2001:db8::2", "2001:db8::3"
ALICE_TONE, BOB_TONE = 440.0, 880.0
AFTER_RESTART = 3.0  # how long bob stays on the call once ICE restarted
ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT))


def ipv6_namespace(lab: Lab, short: str) -> Namespace:
    """A namespace with IPv6 on (skips the test when the kernel will not have it there)."""
    ns = lab.namespace(short, ipv6=True)
    try:
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "0")
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "0")
    except NetnsError as exc:
        pytest.skip(f"IPv6 cannot be enabled in a network namespace: {exc}")
    return ns


def add6(ns: Namespace, interface: str, cidr: str) -> None:
    ns.ip("-6", "addr", "add", cidr, "dev", interface, "nodad")


def ipv6_pair(lab: Lab, a: tuple[str, str], b: tuple[str, str]) -> tuple[Namespace, Namespace]:
    """Two IPv6 namespaces ``(short name, address)`` linked by their eth0, each with its
    address in a /64."""
    ns_a, ns_b = ipv6_namespace(lab, a[0]), ipv6_namespace(lab, b[0])
    lab.link(ns_a, ns_b, a_if="eth0", b_if="eth0")
    add6(ns_a, "eth0", f"{a[1]}/64")
    add6(ns_b, "eth0", f"{b[1]}/64")
    return ns_a, ns_b


def test_ipv6_renumbering_is_reported_and_the_pool_gathers_on_the_new_address(
    tmp_path: Path,
) -> None:
    with Lab(tmp_path) as lab:
        ns, peer = ipv6_pair(lab, ("mon6", OLD), ("peer6", PEER))
        child = Child(ns.name)
        try:
            ready = child.expect("ready")
            assert OLD in ready["addresses"], ready
            # link-local (fe80::/10) and loopback are never candidates
            assert not [a for a in ready["addresses"] if a.startswith(("127.", "::1", "fe80"))]
            assert set(child.take() or ()) == {OLD}

            # a new prefix: the new address comes, the old one goes
            add6(ns, "eth0", f"{NEW}/64")
            ns.ip("-6", "addr", "del", f"{OLD}/64", "dev", "eth0")
            seen = child.changes_until(lambda s: {(True, NEW), (False, OLD)} <= s)
            assert {(c["added"], c["address"], c["interface"], c["tentative"]) for c in seen} == {
                (True, NEW, "eth0", False),
                (False, OLD, "eth0", False),
            }
            regathered = child.expect("regathered")
            assert set(regathered["addresses"]) <= {NEW, OLD}
            after = child.take_event()
            assert set(after["hosts"] or ()) == {NEW}
            assert after["network_changes"] >= 1

            # a second prefix on the same link: both addresses are candidates
            add6(ns, "eth0", f"{OLD}/64")
            seen = child.changes_until(lambda s: (True, OLD) in s)
            assert [(c["added"], c["address"]) for c in seen] == [(True, OLD)]
            child.expect("regathered")
            assert set(child.take() or ()) == {NEW, OLD}

            # the interface goes down: every global IPv6 address is flushed and reported gone
            ns.ip("link", "set", "eth0", "down")
            gone = {(False, NEW), (False, OLD)}
            seen = child.changes_until(lambda s: gone <= s)
            assert {(c["added"], c["address"]) for c in seen} == gone
            assert not child.take(wait=1.0)

            child.send("quit")
            assert child.expect("closed") == {"event": "closed", "monitor_running": True}
        finally:
            child.stop()


def test_a_ua_listening_on_the_ipv6_wildcard_advertises_its_ipv6_address(
    tmp_path: Path,
) -> None:
    with Lab(tmp_path) as lab:
        a, b = ipv6_pair(lab, ("alice6", ALICE), ("bob6", BOB))
        b.ip("-6", "route", "add", "default", "dev", "eth0")
        bob = SoftphoneProcess(
            b, ENV, "--json", "--bind", "[::]:0", "--user", f"bob@{BOB}", "answer", "--auto",
        )  # fmt: skip
        try:
            listening = bob.search(r"listening on (\S+):\d+$")
            assert listening is not None, bob.text
        finally:
            bob.stop()
    assert listening.group(1) in (BOB, f"[{BOB}]"), bob.text


def test_callee_renumbered_mid_ipv6_call_restarts_ice_and_audio_comes_back(
    tmp_path: Path,
) -> None:
    """alice and bob on one link, IPv6 only: bob (``answer``, wildcard ``[::]``) gets a new
    address mid-call and loses the old one; his selected pair is gone, so he restarts ICE on
    the new address (re-INVITE with new credentials) and alice hears him again."""
    with Lab(tmp_path) as lab:
        a, b = ipv6_pair(lab, ("alice6", ALICE), ("bob6", BOB))
        for ns in (a, b):  # a default route: the UAs' wildcard sockets find their address
            ns.ip("-6", "route", "add", "default", "dev", "eth0")

        def renumber(bob: SoftphoneProcess) -> None:
            add6(b, "eth0", f"{BOB_NEW}/64")
            b.ip("-6", "addr", "del", f"{BOB}/64", "dev", "eth0")

        call = renumbered_call(
            a, b, tmp_path / "alice.wav", alice=ALICE, bob=BOB, renumber=renumber,
            bob_bind=("--bind", "[::]:0"),
        )  # fmt: skip
    assert_audio_came_back(call, BOB_NEW, restarts=1)


def test_ipv6_address_removed_before_its_successor_comes_after_dad(tmp_path: Path) -> None:
    """The old address goes first (for a moment no global address: nothing to gather on),
    then the new one comes with duplicate address detection (no ``nodad``): it is reported
    once, when it is no longer tentative, and the pool gathers on it."""
    with Lab(tmp_path) as lab:
        ns, peer = ipv6_pair(lab, ("mon6", OLD), ("peer6", PEER))
        child = Child(ns.name)
        try:
            assert OLD in child.expect("ready")["addresses"]
            assert set(child.take() or ()) == {OLD}

            ns.ip("-6", "addr", "del", f"{OLD}/64", "dev", "eth0")
            seen = child.changes_until(lambda s: (False, OLD) in s)
            assert [(c["added"], c["address"]) for c in seen] == [(False, OLD)]
            assert not child.take(wait=1.0)

            ns.ip("-6", "addr", "add", f"{NEW}/64", "dev", "eth0")  # with DAD
            seen = child.changes_until(lambda s: (True, NEW) in s)
            assert [(c["added"], c["address"], c["tentative"]) for c in seen] == [
                (True, NEW, False)
            ]
            child.expect("regathered")
            assert set(child.take() or ()) == {NEW}
        finally:
            child.stop()
