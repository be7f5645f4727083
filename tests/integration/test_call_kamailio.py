"""alice calls bob through Kamailio: both register (digest auth), the INVITE is challenged
(407) and routed to bob's binding, ICE connects on loopback, audio flows both ways."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_cli_call import Answerer, dominant, softphone
from tests.peers.kamailio import DEFAULT_USERS, Kamailio


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
        alice = subprocess.run(
            softphone(
                "--json", *server, "--user", "alice@example.org", "--password-env", "ALICE_PW",
                "--bind", "127.0.0.1:0",
                "call", "bob", "--play", "tone:440", "--record", str(alice_wav),
                "--duration", "3",
            ),
            capture_output=True,
            text=True,
            timeout=60,
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
    assert abs(dominant(bob_wav) - 440) < 5
    assert abs(dominant(alice_wav) - 880) < 5
    # both unregistered on the way out
    assert kamailio.contacts("bob") == []
    for secret in (DEFAULT_USERS["alice"], DEFAULT_USERS["bob"]):
        assert secret not in alice.stderr + alice.stdout + bob_err
