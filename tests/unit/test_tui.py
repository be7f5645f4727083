"""The full-screen phone (softphone.tui.PhoneApp) driven headless by textual's pilot, with a
fake engine standing in for SIP/ICE/media: keys and buttons reach the engine, and the screen
shows what the engine reports. The active-call screen is saved to docs/tui.png (SVG from
textual, converted with rsvg-convert when it is installed)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from textual.widgets import Input, Static

from softphone.config import load_config
from softphone.tui import (
    AccountView,
    CallState,
    CallView,
    LevelBar,
    PhoneApp,
    SoftphoneEngine,
    _other_accounts,
    format_level,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"


class FakeEngine:
    """Records the UI's commands; the test moves the call through its states."""

    def __init__(self) -> None:
        self.on_change: Callable[[], None] | None = None
        self.on_log: Callable[[str], None] | None = None
        self.view = CallView()
        self.registration = "registering"
        self.commands: list[str] = []
        self.dtmf = ""
        self.started = self.closed = False

    # the test's controls
    def push(self, **changes: object) -> None:
        self.view = replace(self.view, **changes)  # type: ignore[arg-type]
        if self.on_change is not None:
            self.on_change()

    def ring_in(self, remote: str) -> None:
        self.view = CallView(state=CallState.INCOMING, remote=remote, outgoing=False)
        if self.on_log is not None:
            self.on_log(f"incoming call from {remote}")
        self.push()

    # PhoneEngine
    def accounts(self) -> list[AccountView]:
        return [AccountView("office", "sip:alice@example.org", self.registration, "3600 s")]

    def call_view(self) -> CallView:
        return self.view

    def next_account(self) -> None:
        self.commands.append("next account")

    async def start(self) -> None:
        self.started = True
        self.registration = "registered"
        self.push()

    async def close(self) -> None:
        self.closed = True

    async def dial(self, uri: str) -> None:
        self.commands.append(f"dial {uri}")
        self.push(state=CallState.CALLING, remote=uri, outgoing=True)

    async def answer(self) -> None:
        self.commands.append("answer")
        self.push(state=CallState.ACTIVE, connected_at=time.monotonic())

    async def reject(self) -> None:
        self.commands.append("reject")
        self.push(state=CallState.ENDED, end_reason="rejected")

    async def hangup(self) -> None:
        self.commands.append("hangup")
        self.push(state=CallState.ENDED, end_reason="local-bye", ended_at=time.monotonic())

    async def set_hold(self, on: bool) -> None:
        self.commands.append(f"hold {on}")
        self.push(held=on)

    def set_mute(self, on: bool) -> None:
        self.commands.append(f"mute {on}")
        self.push(muted=on)

    def send_dtmf(self, digits: str) -> None:
        self.dtmf += digits
        self.push(dtmf_sent=self.dtmf)


def text(app: PhoneApp, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


def incoming_shown(app: PhoneApp) -> bool:
    return not app.query_one("#incoming").has_class("hidden")


async def test_dial_shows_calling_then_hang_up() -> None:
    engine = FakeEngine()
    app = PhoneApp(engine)
    async with app.run_test(size=(110, 34)) as pilot:
        await pilot.pause()
        assert engine.started
        assert "registered" in text(app, "#accounts")
        assert "sip:alice@example.org" in text(app, "#accounts")
        await pilot.click("#uri")
        await pilot.press(*"bob@example.org")
        await pilot.press("enter")
        await pilot.pause()
        assert engine.commands == ["dial bob@example.org"]
        assert "calling" in text(app, "#call-state")
        assert "to bob@example.org" in text(app, "#call-state")
        engine.push(state=CallState.RINGING)
        await pilot.pause()
        assert "ringing" in text(app, "#call-state")
        # keys now reach the app, not the URI field
        await pilot.press("h")
        await pilot.pause()
        assert engine.commands[-1] == "hangup"
        assert "call ended" in text(app, "#call-state")
        assert "local-bye" in text(app, "#call-state")
        assert app.query_one("#uri", Input).value == "bob@example.org"


async def test_call_button_and_empty_uri() -> None:
    engine = FakeEngine()
    app = PhoneApp(engine)
    async with app.run_test(size=(110, 34)) as pilot:
        await pilot.click("#call-button")
        await pilot.pause()
        assert engine.commands == []  # nothing to dial
        app.query_one("#uri", Input).value = "sip:carol@127.0.0.1:5062"
        await pilot.pause(0.3)  # a button ignores a press while it still shows the last one
        await pilot.click("#call-button")
        await settle(pilot, lambda: bool(engine.commands))
        assert engine.commands == ["dial sip:carol@127.0.0.1:5062"]
        await pilot.click("#hangup-button")
        await settle(pilot, lambda: engine.commands[-1] == "hangup")
        assert engine.commands[-1] == "hangup"


async def settle(pilot: Any, done: Callable[[], bool], rounds: int = 50) -> None:
    """Let the app process what a click started (a task of its own) on a loaded machine."""
    for _ in range(rounds):
        if done():
            return
        await pilot.pause(0.02)


async def test_incoming_call_answer_with_key() -> None:
    engine = FakeEngine()
    app = PhoneApp(engine)
    async with app.run_test(size=(110, 34)) as pilot:
        await pilot.pause()
        assert not incoming_shown(app)
        engine.ring_in("sip:bob@example.org")
        await pilot.pause()
        assert incoming_shown(app)
        assert "sip:bob@example.org" in text(app, "#incoming-text")
        await pilot.press("a")
        await pilot.pause()
        assert engine.commands == ["answer"]
        assert not incoming_shown(app)
        assert "in call" in text(app, "#call-state")
        assert "from sip:bob@example.org" in text(app, "#call-state")
        assert "00:0" in text(app, "#call-state")  # the call timer


async def test_incoming_call_reject_with_button_and_key() -> None:
    engine = FakeEngine()
    app = PhoneApp(engine)
    async with app.run_test(size=(110, 34)) as pilot:
        engine.ring_in("sip:spam@example.org")
        await pilot.pause()
        await pilot.click("#reject-button")
        await pilot.pause()
        assert engine.commands == ["reject"]
        assert not incoming_shown(app)
        assert "rejected" in text(app, "#call-state")
        engine.ring_in("sip:spam@example.org")
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        assert engine.commands == ["reject", "reject"]
        # answer/reject keys do nothing without an incoming call
        await pilot.press("a")
        await pilot.pause()
        assert engine.commands == ["reject", "reject"]


async def test_mute_hold_and_dtmf_during_a_call() -> None:
    engine = FakeEngine()
    app = PhoneApp(engine)
    async with app.run_test(size=(110, 34)) as pilot:
        # not in a call: mute, hold and digits are ignored
        await pilot.press("m", "o", "5")
        await pilot.pause()
        assert engine.commands == [] and engine.dtmf == ""
        engine.ring_in("sip:bob@example.org")
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("m")
        await pilot.pause()
        assert engine.commands[-1] == "mute True"
        assert "MUTED" in text(app, "#call-state")
        await pilot.press("m")
        await pilot.pause()
        assert engine.commands[-1] == "mute False"
        assert "MUTED" not in text(app, "#call-state")
        await pilot.press("o")
        await pilot.pause()
        assert engine.commands[-1] == "hold True"
        assert "ON HOLD" in text(app, "#call-state")
        await pilot.press("o")
        await pilot.pause()
        assert engine.commands[-1] == "hold False"
        assert "ON HOLD" not in text(app, "#call-state")
        engine.push(held_by_peer=True)
        await pilot.pause()
        assert "HELD BY PEER" in text(app, "#call-state")
        await pilot.press("1", "2", "asterisk", "9", "number_sign")
        await pilot.pause()
        assert engine.dtmf == "12*9#"
        assert "DTMF sent 12*9#" in text(app, "#quality")


def test_format_level() -> None:
    assert format_level(-60.0, width=10).startswith("░" * 10)
    assert "silent" in format_level(-80.0, width=10)
    assert format_level(0.0, width=10).startswith("█" * 10)
    half = format_level(-30.0, width=10)
    assert half.startswith("█" * 5 + "░" * 5) and "-30.0 dBFS" in half


async def test_active_call_screen_shows_media_and_is_saved() -> None:
    engine = FakeEngine()
    app = PhoneApp(engine, refresh_interval=0.05, clock=False)
    app.timestamp = lambda: "10:42:07"  # the same picture every run
    app.now = lambda: 1000.0 + 83.4
    async with app.run_test(size=(110, 34)) as pilot:
        await pilot.pause()
        app.query_one("#uri", Input).value = "sip:bob@example.org"
        await pilot.click("#call-button")
        engine.push(
            state=CallState.ACTIVE,
            connected_at=1000.0,
            codec="opus/48000/2",
            ice_pair="srflx/relay",
            local_address="203.0.113.101:40112",
            remote_address="198.51.100.7:50020",
            send_dbfs=-18.5,
            receive_dbfs=-24.0,
            loss_percent=0.4,
            jitter_ms=2.1,
            rtt_ms=38.0,
            mos=4.31,
            dtmf_sent="42",
        )
        await pilot.pause(0.2)
        assert "01:23" in text(app, "#call-state")
        assert "opus/48000/2" in text(app, "#media")
        assert "ICE srflx/relay 203.0.113.101:40112 <-> 198.51.100.7:50020" in text(app, "#media")
        quality = text(app, "#quality")
        assert "loss 0.4%" in quality and "jitter 2.1 ms" in quality
        assert "RTT 38 ms" in quality and "MOS 4.31" in quality
        send = app.query_one("#send-meter", LevelBar)
        assert send.level == -18.5 and "-18.5 dBFS" in text(app, "#send-meter")
        assert "-24.0 dBFS" in text(app, "#receive-meter")
        app.log_line("connected via srflx/relay pair in 61 ms")
        await pilot.pause()
        DOCS.mkdir(exist_ok=True)
        svg = Path(app.save_screenshot("tui.svg", str(DOCS)))
        assert svg.exists() and "opus/48000/2" in svg.read_text()
    converter = shutil.which("rsvg-convert")
    if converter is not None:
        png = DOCS / "tui.png"
        subprocess.run([converter, "-o", str(png), str(svg)], check=True, timeout=60)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg.unlink()


async def test_next_account_key_only_between_calls() -> None:
    engine = FakeEngine()
    app = PhoneApp(engine)
    async with app.run_test(size=(110, 34)) as pilot:
        await pilot.press("n")
        await pilot.pause()
        assert engine.commands == ["next account"]
        engine.ring_in("sip:bob@example.org")
        await pilot.pause()
        await pilot.press("a", "n")
        await pilot.pause()
        assert engine.commands == ["next account", "answer"]


def test_other_config_accounts_with_a_registrar(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'default_account = "office"\n'
        '[accounts.office]\nserver = "pbx.example.org"\nuser = "alice@example.org"\n'
        '[accounts.home]\nserver = "sip.example.net"\nuser = "alice@example.net"\n'
        '[accounts.p2p]\nuser = "alice"\n'
    )
    args = argparse.Namespace(config=str(config))
    selected = load_config(config).account("office")
    others = _other_accounts(selected, args)
    assert [a.name for a in others] == ["home"]  # not the selected one, not peer-to-peer
    engine = SoftphoneEngine(selected, more_accounts=others)
    views = engine.accounts()
    assert [(v.name, v.active, v.state) for v in views] == [
        ("office", True, "registering"),
        ("home", False, "registering"),
    ]
    assert views[1].aor == "sip:alice@example.net"
    engine.next_account()
    assert engine.account.name == "home" and engine.accounts()[1].active
