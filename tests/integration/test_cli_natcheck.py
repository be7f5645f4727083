"""``softphone nat-check`` as users run it, against the coturn fixture on loopback (RFC 5780:
OTHER-ADDRESS 127.0.0.2 and an alternate port) and against a port where nothing answers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from tests.peers.coturn import Coturn


def softphone(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softphone", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_nat_check_on_loopback_finds_no_nat(coturn: Coturn) -> None:
    server = f"127.0.0.1:{coturn.port}"
    res = softphone("--json", "nat-check", "--stun", server)
    assert res.returncode == 0, res.stderr
    nat = json.loads(res.stdout)["nat"]
    assert nat["completed"] is True
    assert nat["nat"] is False
    assert nat["rfc5780"] is True
    assert nat["server"] == server
    assert nat["mapped"] == nat["local"]
    assert nat["mapped"].startswith("127.0.0.1:")
    assert nat["mapping"] == "endpoint-independent"
    assert nat["filtering"] == "endpoint-independent"
    assert nat["summary"].startswith("no NAT")
    assert "direct calls work" in nat["advice"]
    # the plain-words report goes to stderr with --json (stdout is the JSON object only)
    assert "mapping:         endpoint-independent" in res.stderr


def test_nat_check_plain_words_on_stdout_and_account_stun(coturn: Coturn) -> None:
    # without the command's --stun, the account's --stun is used
    res = softphone("--stun", f"127.0.0.1:{coturn.port}", "nat-check")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "behind a NAT:    no" in out
    assert "other address:   127.0.0.2:" in out
    assert "filtering:       endpoint-independent" in out
    assert "for calls:       no NAT" in out


def test_nat_check_dead_server_fails_clearly() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # nothing listens there now (the port was only reserved for a moment)
    res = softphone("--json", "nat-check", "--stun", f"127.0.0.1:{port}")
    assert res.returncode == 1
    nat = json.loads(res.stdout)["nat"]
    assert nat["completed"] is False
    assert nat["nat"] is None
    assert nat["error"]
    assert "did not answer" in res.stderr
    assert "blocked" in nat["summary"]


def test_nat_check_without_server_is_a_usage_error() -> None:
    res = softphone("nat-check")
    assert res.returncode == 2
    assert "--stun" in res.stderr
