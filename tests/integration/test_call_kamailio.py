"""alice calls bob through Kamailio: both register (digest auth), the INVITE is challenged
(407) and routed to bob's binding, ICE connects on loopback, audio flows both ways."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_call import Answerer, Process, run_command, softphone
from tests.helpers_media import dominant_tone
from tests.peers.kamailio import DEFAULT_USERS, Kamailio
from tests.peers.lab_services import LabServices, start_lab_services
from tests.peers.netns import Lab, build_nat_lab


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_alice_calls_bob_through_kamailio_with_ice(
    kamailio: Kamailio, tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALICE_PW", DEFAULT_USERS["alice"])
    monkeypatch.setenv("BOB_PW", DEFAULT_USERS["bob"])
    server = ["--server", kamailio.server(transport), "--transport", transport]
    bob_wav, alice_wav = tmp_path / "bob.wav", tmp_path / "alice.wav"
    bob = Answerer(
        "--json", *server, "--user", "bob@example.org", "--password-env", "BOB_PW",
        "--bind", "127.0.0.1:0",
        "answer", "--auto", "--count", "1", "--play", "tone:880", "--record", str(bob_wav),
    )  # fmt: skip
    try:
        bob.wait_listening()
        assert kamailio.contacts("bob"), "bob is not registered"
        alice = run_command(
            softphone(
                "--json", *server, "--user", "alice@example.org", "--password-env", "ALICE_PW",
                "--bind", "127.0.0.1:0",
                "call", "bob", "--play", "tone:440", "--record", str(alice_wav),
                "--duration", "3",
            )
        )  # fmt: skip
        bob_status, bob_report, bob_err = bob.finish()
    finally:
        bob.stop()
    assert alice.returncode == 0, alice.stderr
    assert bob_status == 0, bob_err
    report = json.loads(alice.stdout)
    assert report["call"]["sip_status"] == 200
    assert report["call"]["end_reason"] == "local-bye"
    assert report["ice"]["role"] == "controlling"
    assert report["ice"]["selected"]["remote"]["address"] == "127.0.0.1"
    assert bob_report["ice"]["role"] == "controlled"
    assert bob_report["call"]["end_reason"] == "remote-bye"
    assert report["rtp"]["received"] > 0 and bob_report["rtp"]["received"] > 0
    assert "calling sip:bob@example.org" in alice.stderr  # completed with the account's domain
    assert "incoming call from sip:alice@example.org" in bob_err
    assert abs(dominant_tone(bob_wav) - 440) < 5
    assert abs(dominant_tone(alice_wav) - 880) < 5
    # both unregistered on the way out
    assert kamailio.contacts("bob") == []
    for secret in (DEFAULT_USERS["alice"], DEFAULT_USERS["bob"]):
        assert secret not in alice.stderr + alice.stdout + bob_err


# --- across NATs (network namespaces, root) -------------------------------------------------


def _laptop_softphone(laptop: Any, *args: str) -> list[str]:
    return list(laptop.exec_argv(softphone(*args)))


@pytest.fixture(params=["cone", "symmetric"])
def nat_services(request: pytest.FixtureRequest, netns_lab: Lab, peer_dir: Path) -> Iterator[Any]:
    """The lab (Kamailio, coturn, DNS on the public net) with two laptops behind
    endpoint-independent ("cone") or symmetric NATs (MASQUERADE --random-fully)."""
    for binary in ("kamailio", "turnserver", "dnsmasq"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} not installed")
    symmetric = request.param == "symmetric"
    lab = build_nat_lab(netns_lab, symmetric=(symmetric, symmetric))
    services = start_lab_services(lab, peer_dir / "lab-services")
    try:
        yield services
    finally:
        services.stop()


def test_call_between_two_natted_laptops(
    nat_services: LabServices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice and bob, each behind a NAT, register with Kamailio on the "public" net and call
    with STUN and TURN from coturn: ICE connects across the NATs (through the relay when both
    NATs are symmetric: no reflexive address works for another peer, RFC 8445 §2.2)."""
    lab_services = nat_services
    lab = lab_services.lab
    alice_site, bob_site = lab.sites
    monkeypatch.setenv("ALICE_PW", DEFAULT_USERS["alice"])
    monkeypatch.setenv("BOB_PW", DEFAULT_USERS["bob"])
    monkeypatch.setenv("TURN_PW", lab_services.coturn.users["alice"])
    common = [
        "--json", "--server", lab_services.sip_server,
        "--stun", lab_services.stun_server, "--turn", lab_services.turn_server,
        "--turn-user", "alice", "--turn-password-env", "TURN_PW",
    ]  # fmt: skip
    bob_wav, alice_wav = tmp_path / "bob.wav", tmp_path / "alice.wav"
    bob = Process(
        _laptop_softphone(
            bob_site.laptop, *common, "--user", "bob@example.org", "--password-env", "BOB_PW",
            "answer", "--auto", "--count", "1", "--play", "tone:880", "--record", str(bob_wav),
        )
    )  # fmt: skip
    try:
        assert bob.wait_for("waiting for calls", 30), "".join(bob.lines)
        alice = run_command(
            _laptop_softphone(
                alice_site.laptop, *common,
                "--user", "alice@example.org", "--password-env", "ALICE_PW",
                "call", "bob", "--play", "tone:440", "--record", str(alice_wav),
                "--duration", "3",
            ),
            timeout=90,
        )  # fmt: skip
        bob_status, bob_report, bob_err = bob.finish(30)
    finally:
        bob.stop()
    assert alice.returncode == 0, alice.stderr + bob_err
    assert bob_status == 0, bob_err
    report = json.loads(alice.stdout)
    selected = report["ice"]["selected"]
    # alice reaches bob at his NAT's public address, learnt by STUN or by the checks
    types = {selected["local"]["type"], selected["remote"]["type"]}
    if bob_site.symmetric:
        assert "relay" in types
    else:
        assert selected["remote"]["type"] in ("srflx", "prflx", "relay")
        if selected["remote"]["type"] != "relay":
            assert selected["remote"]["address"] == bob_site.router_wan_ip
    assert selected["remote"]["type"] != "host"  # bob's private address is out of reach
    assert report["rtp"]["received"] > 0 and bob_report["rtp"]["received"] > 0
    assert "candidates (host, relay, srflx)" in alice.stderr
    assert abs(dominant_tone(bob_wav) - 440) < 5
    assert abs(dominant_tone(alice_wav) - 880) < 5


def test_call_with_a_wrong_password_fails_at_registration(
    kamailio: Kamailio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALICE_PW", "not-the-password")
    result = run_command(
        softphone(
            "--json", "--server", kamailio.server(), "--user", "alice@example.org",
            "--password-env", "ALICE_PW", "--bind", "127.0.0.1:0",
            "call", "bob", "--play", "tone:440", "--record", "none",
        )
    )  # fmt: skip
    assert result.returncode == 1
    report = json.loads(result.stdout)["call"]
    assert report["end_reason"] == "not-registered" and report["sip_status"] in (401, 403)
    assert "registration failed" in result.stderr and "Traceback" not in result.stderr
