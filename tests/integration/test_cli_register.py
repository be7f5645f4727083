"""``softphone register`` as a user runs it: a real process against a real Kamailio."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.peers.kamailio import DEFAULT_USERS, Kamailio


def run_cli(
    *args: str, env_password: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if env_password is not None:
        env["TEST_SIP_PASSWORD"] = env_password
    return subprocess.run(
        [sys.executable, "-m", "softphone", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_register_once_then_unregister(kamailio: Kamailio, transport: str) -> None:
    password = DEFAULT_USERS["alice"]
    args = [
        "--json",
        "--server", kamailio.server(transport),
        "--user", "alice@example.org",
        "--password-env", "TEST_SIP_PASSWORD",
        "--transport", transport,
        "--bind", "127.0.0.1:0",
    ]  # fmt: skip
    if transport == "tls":
        args += ["--ca-file", str(kamailio.ca_file)]
    result = run_cli(*args, "register", "--once", env_password=password)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["register"]
    assert report["status"] == 200
    assert report["registered"] is True and report["unregistered"] is True
    assert report["aor"] == "sip:alice@example.org"
    assert any("127.0.0.1" in c for c in report["contacts"])
    assert "registered for" in result.stderr
    assert password not in result.stderr + result.stdout
    # --once unregistered: the registrar holds no binding any more.
    assert kamailio.contacts("alice") == []


def test_wrong_password_fails_with_status(kamailio: Kamailio) -> None:
    result = run_cli(
        "--json", "--server", kamailio.server(), "--user", "alice@example.org",
        "--password-env", "TEST_SIP_PASSWORD", "--bind", "127.0.0.1:0", "register", "--once",
        env_password="not-the-password",
    )  # fmt: skip
    assert result.returncode == 1
    report = json.loads(result.stdout)["register"]
    assert report["registered"] is False
    assert report["status"] in (401, 403)
    assert "registration failed" in result.stderr


def test_register_without_server_is_a_usage_error() -> None:
    result = run_cli("--user", "alice@example.org", "register", "--once")
    assert result.returncode == 2
    assert "needs a registrar" in result.stderr
