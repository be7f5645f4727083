"""A call survives the callee's address changing under it (the real kernel, real netlink).

Two namespaces joined by a veth pair: alice (198.51.100.1) runs ``softphone call``, bob
(198.51.100.2) runs ``softphone answer``, whose candidate pool watches the local addresses
(ice.netmonitor) and whose call listens to the same monitor. Mid-call the test gives bob's
interface a new address (198.51.100.3) and removes the old one, as a DHCP renumbering would:
bob's selected pair is gone, so bob restarts ICE with candidates gathered on the new address
(re-INVITE with new ufrag/pwd) and the audio comes back on the new pair; bob then hangs up
(interrupted a few seconds after the restart; his ``--duration`` is only an upper bound).

Needs root and iproute2 (skipped otherwise). Addresses: documentation range, only inside the
namespaces.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from media.analysis import dominant_frequency, rms_dbfs
from media.sources import load_wav
from tests.lab.softphone_lab import Running, SoftphoneProcess
from tests.peers.netns import REPO_ROOT, Lab, Namespace, netns_available

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(netns_available() is not None, reason=str(netns_available())),
]

ALICE, BOB, BOB_NEW = "198.51.100.1", "198.51.100.2", "198.51.100.3"
ALICE_TONE, BOB_TONE = 440.0, 880.0
WAIT = 30.0  # a generous bound for "it happens" (shared machine), never a pass/fail time
# how long bob stays on the call once ICE restarted (alice's recording's last 2 s are checked)
AFTER_RESTART = 3.0
ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT))


@dataclass
class RenumberedCall:
    """A call from alice to bob (``answer`` on a wildcard address) during which bob's address
    changed, both ended, with their exit statuses, JSON reports and alice's recording."""

    alice: SoftphoneProcess
    bob: SoftphoneProcess
    alice_status: int
    bob_status: int
    alice_report: dict[str, Any]
    bob_report: dict[str, Any]
    wav: Path


def renumbered_call(
    a: Namespace, b: Namespace, wav: Path, *, alice: str, bob: str,
    renumber: Callable[[SoftphoneProcess], None], bob_bind: Sequence[str] = (),
) -> RenumberedCall:  # fmt: skip
    """bob answers, alice (bound to ``alice``) calls him at ``bob``; once connected and after
    a second of audio, ``renumber(bob)`` changes his address; once he restarted ICE he stays
    :data:`AFTER_RESTART` s and hangs up."""
    ref = (lambda host: f"[{host}]") if ":" in bob else (lambda host: host)
    with Running() as run:
        bob_p = run.start(
            b, ENV, "--json", *bob_bind, "--user", f"bob@{bob}", "answer", "--auto",
            "--count", "1", "--play", f"tone:{BOB_TONE:g}", "--record", "none", "--duration", "9",
        )  # fmt: skip
        listening = bob_p.search(r"listening on \S+:(\d+)")
        assert listening is not None, bob_p.text
        assert bob_p.wait_for("waiting for calls"), bob_p.text
        alice_p = run.start(
            a, ENV, "--json", "--bind", f"{ref(alice)}:0", "--user", f"alice@{alice}",
            "call", f"sip:bob@{ref(bob)}:{listening.group(1)}",
            "--play", f"tone:{ALICE_TONE:g}", "--record", str(wav), "--duration", "30",
        )  # fmt: skip
        assert bob_p.wait_for("connected via"), (bob_p.text, alice_p.text)
        time.sleep(1.0)  # some audio on the first pair
        renumber(bob_p)
        assert bob_p.wait_for("network changed: restarting ICE"), bob_p.text
        assert bob_p.wait_for("ICE restarted"), bob_p.text
        time.sleep(AFTER_RESTART)  # audio on the new pair, then bob hangs up
        bob_p.interrupt()
        bob_status, bob_report = bob_p.finish()
        alice_status, alice_report = alice_p.finish()
    return RenumberedCall(alice_p, bob_p, alice_status, bob_status, alice_report, bob_report, wav)


def assert_audio_came_back(call: RenumberedCall, bob_new: str, restarts: int) -> None:
    """bob restarted ICE ``restarts`` times, both now use his new address, the call ended
    cleanly, and his tone is in the last two seconds alice recorded."""
    bob, alice = call.bob, call.alice
    assert "the peer restarted ICE" in alice.text
    assert bob.text.count("network changed: restarting ICE") == restarts, bob.text
    assert call.bob_report["ice"]["selected"]["local"]["address"] == bob_new, bob.text
    assert call.alice_report["ice"]["selected"]["remote"]["address"] == bob_new, alice.text
    assert call.bob_report["call"]["end_reason"] == "local-bye"
    assert call.alice_report["call"]["end_reason"] == "remote-bye", alice.text
    assert call.bob_status == 0 and call.alice_status == 0, (bob.text, alice.text)
    samples, rate = load_wav(call.wav)
    tail = samples[-2 * rate : -rate // 5]
    assert abs(dominant_frequency(tail, rate) - BOB_TONE) < 10
    assert rms_dbfs(tail) > -30


@pytest.mark.parametrize("order", ["add-then-del", "del-then-add"])
def test_callee_renumbered_mid_call_restarts_ice_and_audio_comes_back(
    tmp_path: Path, order: str
) -> None:
    """``add-then-del``: the new address comes first (one restart, on it). ``del-then-add``:
    for a moment bob has no address at all (the restart finds nothing to gather on), then
    the new one comes and the next restart succeeds."""
    with Lab(tmp_path) as lab:
        a, b = lab.namespace("alice"), lab.namespace("bob")
        lab.link(a, b, f"{ALICE}/24", f"{BOB}/24", a_if="eth0", b_if="eth0")
        # the new address is a secondary one of the same subnet: it must outlive the primary
        b.sysctl("net.ipv4.conf.eth0.promote_secondaries", "1")
        for ns in (a, b):  # a default route: the UAs' wildcard sockets find their address
            ns.add_route("default", dev="eth0")

        def renumber(bob: SoftphoneProcess) -> None:
            if order == "add-then-del":
                b.ip("addr", "add", f"{BOB_NEW}/24", "dev", "eth0")
                b.ip("addr", "del", f"{BOB}/24", "dev", "eth0")
            else:
                b.ip("addr", "del", f"{BOB}/24", "dev", "eth0")
                assert bob.wait_for("ICE restart failed"), bob.text
                b.ip("addr", "add", f"{BOB_NEW}/24", "dev", "eth0")

        call = renumbered_call(
            a, b, tmp_path / "alice.wav", alice=ALICE, bob=BOB, renumber=renumber
        )
    assert_audio_came_back(call, BOB_NEW, restarts=1 if order == "add-then-del" else 2)
