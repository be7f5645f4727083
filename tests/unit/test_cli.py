import subprocess
import sys

import pytest

from softphone.cli import build_parser


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "softphone", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("register", "call", "answer", "nat-check", "devices", "demo", "tui"):
        assert command in out


def test_account_overrides_parse() -> None:
    args = build_parser().parse_args(
        [
            "--server",
            "127.0.0.1:5060",
            "--user",
            "alice@example.org",
            "--transport",
            "tcp",
            "call",
            "bob",
            "--play",
            "tone:440",
            "--duration",
            "2",
        ]
    )
    assert args.server == "127.0.0.1:5060"
    assert args.transport == "tcp"
    assert args.uri == "bob"
    assert args.duration == 2.0


def test_unknown_transport_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--transport", "sctp", "register"])
    assert exc.value.code == 2
