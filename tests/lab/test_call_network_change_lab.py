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
from pathlib import Path

import pytest

from media.analysis import dominant_frequency, rms_dbfs
from media.sources import load_wav
from tests.lab.softphone_lab import SoftphoneProcess
from tests.peers.netns import REPO_ROOT, Lab, netns_available

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


@pytest.mark.parametrize("order", ["add-then-del", "del-then-add"])
def test_callee_renumbered_mid_call_restarts_ice_and_audio_comes_back(
    tmp_path: Path, order: str
) -> None:
    """``add-then-del``: the new address comes first (one restart, on it). ``del-then-add``:
    for a moment bob has no address at all (the restart finds nothing to gather on), then
    the new one comes and the next restart succeeds."""
    wav = tmp_path / "alice.wav"
    with Lab(tmp_path) as lab:
        a, b = lab.namespace("alice"), lab.namespace("bob")
        lab.link(a, b, f"{ALICE}/24", f"{BOB}/24", a_if="eth0", b_if="eth0")
        # the new address is a secondary one of the same subnet: it must outlive the primary
        b.sysctl("net.ipv4.conf.eth0.promote_secondaries", "1")
        for ns in (a, b):  # a default route: the UAs' wildcard sockets find their address
            ns.add_route("default", dev="eth0")
        bob = SoftphoneProcess(
            b, ENV, "--json", "--user", f"bob@{BOB}", "answer", "--auto", "--count", "1",
            "--play", f"tone:{BOB_TONE:g}", "--record", "none", "--duration", "9",
        )  # fmt: skip
        alice: SoftphoneProcess | None = None
        try:
            listening = bob.search(r"listening on \S+:(\d+)")
            assert listening is not None, bob.text
            assert bob.wait_for("waiting for calls"), bob.text
            alice = SoftphoneProcess(
                a, ENV, "--json", "--bind", f"{ALICE}:0", "--user", f"alice@{ALICE}",
                "call", f"sip:bob@{BOB}:{listening.group(1)}",
                "--play", f"tone:{ALICE_TONE:g}", "--record", str(wav), "--duration", "30",
            )  # fmt: skip
            assert bob.wait_for("connected via"), bob.text
            time.sleep(1.0)  # some audio on the first pair
            if order == "add-then-del":
                b.ip("addr", "add", f"{BOB_NEW}/24", "dev", "eth0")
                b.ip("addr", "del", f"{BOB}/24", "dev", "eth0")
            else:
                b.ip("addr", "del", f"{BOB}/24", "dev", "eth0")
                assert bob.wait_for("ICE restart failed"), bob.text
                b.ip("addr", "add", f"{BOB_NEW}/24", "dev", "eth0")
            assert bob.wait_for("network changed: restarting ICE"), bob.text
            assert bob.wait_for("ICE restarted"), bob.text
            time.sleep(AFTER_RESTART)  # audio on the new pair, then bob hangs up
            bob.interrupt()
            bob_status, bob_report = bob.finish()
            alice_status, alice_report = alice.finish()
        finally:
            bob.stop()
            if alice is not None:
                alice.stop()
    assert "the peer restarted ICE" in alice.text
    restarts = 1 if order == "add-then-del" else 2
    assert bob.text.count("network changed: restarting ICE") == restarts, bob.text
    assert bob_report["ice"]["selected"]["local"]["address"] == BOB_NEW, bob.text
    assert alice_report["ice"]["selected"]["remote"]["address"] == BOB_NEW, alice.text
    assert bob_report["call"]["end_reason"] == "local-bye"
    assert alice_report["call"]["end_reason"] == "remote-bye", alice.text
    assert bob_status == 0 and alice_status == 0, (bob.text, alice.text)
    # bob's tone is in the last two seconds alice recorded: the audio came back
    samples, rate = load_wav(wav)
    tail = samples[-2 * rate : -rate // 5]
    assert abs(dominant_frequency(tail, rate) - BOB_TONE) < 10
    assert rms_dbfs(tail) > -30
