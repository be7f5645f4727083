"""softphone.useragent: a stable RFC 5626 instance-id from the machine id (or a per-user device
id kept in the XDG state dir) and the account's AOR, given to the SIP UA."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from sip.registration import instance_id_for
from softphone import useragent
from softphone.config import Account, HostPort
from softphone.useragent import device_id, instance_id, state_dir, ua_config

URN = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_machine_id_is_the_device_id(tmp_path: Path) -> None:
    machine = tmp_path / "machine-id"
    machine.write_text("0123456789abcdef0123456789abcdef\n")
    state = tmp_path / "state"
    assert device_id([tmp_path / "missing", machine], state) == "0123456789abcdef0123456789abcdef"
    assert not state.exists()  # nothing written when the machine id is readable


def test_without_machine_id_a_device_id_is_created_once(tmp_path: Path) -> None:
    state = tmp_path / "state" / "softphone"
    first = device_id([tmp_path / "missing"], state)
    assert first is not None and uuid.UUID(hex=first)
    assert (state / "device-id").read_text().strip() == first
    assert device_id([tmp_path / "missing"], state) == first  # read back, not made again
    empty = tmp_path / "empty-machine-id"
    empty.write_text("\n")  # an empty machine id (first boot) does not count
    assert device_id([empty], state) == first


def test_unwritable_state_dir_gives_none(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert device_id([tmp_path / "missing"], blocker / "softphone") is None


def test_state_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert state_dir() == tmp_path / "softphone"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir() == tmp_path / "home" / ".local" / "state" / "softphone"


def test_instance_id_is_stable_per_device_and_aor() -> None:
    a = instance_id("sip:alice@example.org", device="m1")
    assert URN.match(a)
    assert a == instance_id("sip:alice@example.org", device="m1")
    assert a == instance_id_for("m1 sip:alice@example.org")
    assert a != instance_id("sip:bob@example.org", device="m1")
    assert a != instance_id("sip:alice@example.org", device="m2")


def test_instance_id_without_device_is_random(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(useragent, "device_id", lambda: None)
    one, two = instance_id("sip:alice@example.org"), instance_id("sip:alice@example.org")
    assert one != two and one.startswith("urn:uuid:")


def test_ua_config_carries_the_instance_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    machine = tmp_path / "machine-id"
    machine.write_text("feedfacefeedfacefeedfacefeedface\n")
    monkeypatch.setattr(useragent, "MACHINE_ID_PATHS", (machine,))
    account = Account(user="alice", domain="example.org", bind=HostPort("127.0.0.1", 0))
    config = ua_config(account)
    assert config.instance_id == instance_id_for(
        "feedfacefeedfacefeedfacefeedface sip:alice@example.org"
    )
    assert config.instance_id == ua_config(account).instance_id  # stable across starts
    other = ua_config(Account(user="bob", domain="example.org"))
    assert other.instance_id != config.instance_id
    v6 = ua_config(Account(user="alice", domain="::1"))
    assert v6.instance_id == instance_id_for("feedfacefeedfacefeedfacefeedface sip:alice@[::1]")
