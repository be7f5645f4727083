"""``softphone tui`` with its real engine (softphone.tui.SoftphoneEngine: sip.aio + Call) on
127.0.0.1: the app, driven by textual's pilot, calls a second engine peer to peer with ICE;
meters, mute, DTMF, hold and hang-up take effect on the far end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input, Static

from softphone.config import Account, HostPort
from softphone.tui import CallState, PhoneApp, SoftphoneEngine
from tests.peers.kamailio import DEFAULT_USERS, Kamailio


def account(user: str) -> Account:
    return Account(name=user, user=user, domain="127.0.0.1", bind=HostPort("127.0.0.1", 0))


async def until(pilot: Pilot[int], check: Callable[[], bool], what: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


async def test_tui_calls_a_real_peer(tmp_path: Path) -> None:
    bob = SoftphoneEngine(account("bob"), play="tone:660", record=str(tmp_path / "bob.wav"))
    await bob.start()
    alice = SoftphoneEngine(account("alice"), play="tone:440", record="none")
    app = PhoneApp(alice, refresh_interval=0.05)
    try:
        async with app.run_test(size=(110, 34)) as pilot:
            await until(pilot, lambda: alice.ua is not None, "alice's user agent")
            assert "peer-to-peer" in str(app.query_one("#accounts", Static).render())
            app.query_one("#uri", Input).value = f"sip:bob@127.0.0.1:{bob.ua.config.local_port}"
            await pilot.click("#call-button")
            await until(pilot, lambda: bob.call_view().state is CallState.INCOMING, "bob rings")
            await until(pilot, lambda: app.view.state is CallState.RINGING, "alice hears ringing")
            await bob.answer()
            await until(pilot, lambda: app.view.state is CallState.ACTIVE, "the call")
            await until(pilot, lambda: app.view.receive_dbfs > -30, "bob's tone at alice")
            view = app.view
            assert view.codec.lower().startswith("opus")
            assert view.ice_pair == "host/host"
            assert view.local_address.startswith("127.0.0.1:")
            assert "ICE host/host" in str(app.query_one("#media", Static).render())
            assert bob.call is not None and bob.call.stream is not None
            played = bob.call.stream.played_level
            await until(pilot, lambda: played.last > -30, "alice's tone at bob")

            await pilot.press("m")
            await until(pilot, lambda: played.last < -50, "silence at bob while muted")
            assert app.view.muted
            # the keys themselves are covered with a fake engine (tests/unit/test_tui.py); here
            # the actions they run (a key press waits for an idle loop, which media never is)
            await app.run_action("mute")
            await until(pilot, lambda: played.last > -30, "alice's tone back at bob")

            for digit in "12#":
                await app.run_action(f"dtmf('{digit}')")
            await until(pilot, lambda: bob.call.dtmf_received == ["1", "2", "#"], "DTMF at bob")

            await app.run_action("hold")
            await until(pilot, lambda: bob.call.on_hold, "bob sees the hold")
            assert app.view.held
            await app.run_action("hold")
            await until(pilot, lambda: not bob.call.on_hold, "bob sees the resume")

            # bob holds alice: her screen says so
            assert bob.ua is not None
            await bob.set_hold(True)
            await until(pilot, lambda: app.view.held_by_peer, "alice sees bob's hold")
            await bob.set_hold(False)
            await until(pilot, lambda: not app.view.held_by_peer, "alice sees bob's resume")

            await app.run_action("hangup")
            await until(pilot, lambda: app.view.state is CallState.ENDED, "alice's hang-up")
            await until(pilot, lambda: bob.call_view().state is CallState.ENDED, "bob's end")
            assert bob.call_view().end_reason == "remote-bye"
            assert "call ended" in str(app.query_one("#call-state", Static).render())
    finally:
        await bob.close()
    assert alice.ua is None  # the app closed its engine on exit
    assert (tmp_path / "bob.wav").stat().st_size > 10_000


async def test_incoming_call_rejected_from_the_app(tmp_path: Path) -> None:
    alice = SoftphoneEngine(account("alice"), play="tone:440", record="none")
    carol = SoftphoneEngine(account("carol"), play="tone:440", record="none")
    await carol.start()
    app = PhoneApp(alice, refresh_interval=0.05)
    try:
        async with app.run_test(size=(110, 34)) as pilot:
            await until(pilot, lambda: alice.ua is not None, "alice's user agent")
            port = alice.ua.config.local_port
            dial = asyncio.create_task(carol.dial(f"sip:alice@127.0.0.1:{port}"))
            await until(pilot, lambda: app.view.state is CallState.INCOMING, "the incoming call")
            assert "sip:carol@" in str(app.query_one("#incoming-text", Static).render())
            await pilot.press("r")
            await until(pilot, lambda: carol.call_view().state is CallState.ENDED, "carol's end")
            assert carol.call_view().end_reason == "rejected"
            await dial
            assert app.view.state is CallState.ENDED
    finally:
        await carol.close()


async def test_tui_registers_and_calls_through_kamailio(kamailio: Kamailio) -> None:
    """With a server the account registers (shown on screen) and a call to a bare user name
    goes through the registrar to the callee's registered contact; a wrong password shows
    the registration as failed."""

    def registered(user: str, password: str) -> Account:
        return Account(
            name="office",
            user=user,
            domain="example.org",
            server=HostPort.parse(kamailio.server("udp")),
            password=password,
            bind=HostPort("127.0.0.1", 0),
        )

    bob = SoftphoneEngine(registered("bob", DEFAULT_USERS["bob"]), play="tone:660", record="none")
    await bob.start()
    assert bob.accounts()[0].state == "registered"
    alice = SoftphoneEngine(
        registered("alice", DEFAULT_USERS["alice"]), play="tone:440", record="none"
    )
    app = PhoneApp(alice, refresh_interval=0.05)
    try:
        async with app.run_test(size=(110, 34)) as pilot:
            accounts = app.query_one("#accounts", Static)
            await until(pilot, lambda: "  registered (" in str(accounts.render()), "registration")
            assert "office: sip:alice@example.org" in str(accounts.render())
            app.query_one("#uri", Input).value = "bob"
            await app.run_action("dial")
            await until(pilot, lambda: bob.call_view().state is CallState.INCOMING, "bob rings")
            assert app.view.remote == "sip:bob@example.org"
            await bob.answer()
            await until(pilot, lambda: app.view.state is CallState.ACTIVE, "the call")
            await until(pilot, lambda: app.view.receive_dbfs > -30, "bob's tone at alice")
            await app.run_action("hangup")
            await until(pilot, lambda: bob.call_view().state is CallState.ENDED, "bob's end")
    finally:
        await bob.close()
    wrong = SoftphoneEngine(registered("carol", "not-her-password"), record="none")
    try:
        await wrong.start()
        view = wrong.accounts()[0]
        assert view.state == "failed" and "401" in view.detail
    finally:
        await wrong.close()


async def test_a_call_whose_microphone_cannot_open_ends_cleanly() -> None:
    bob = SoftphoneEngine(account("bob"), play="tone:660", record="none")
    await bob.start()
    broken = replace(account("alice"), input_device="no such microphone")
    alice = SoftphoneEngine(broken, play="mic", record="none")
    logs: list[str] = []
    alice.on_log = logs.append
    await alice.start()
    try:
        dial = asyncio.create_task(alice.dial(f"sip:bob@127.0.0.1:{bob.ua.config.local_port}"))
        for _ in range(200):
            if bob.call_view().state is CallState.INCOMING:
                break
            await asyncio.sleep(0.05)
        await bob.answer()
        await asyncio.wait_for(dial, 20)
        assert alice.call_view().state is CallState.ENDED
        assert any("call failed" in line and "no such microphone" in line for line in logs), logs
        for _ in range(200):
            if bob.call_view().state is CallState.ENDED:
                break
            await asyncio.sleep(0.05)
        assert bob.call_view().state is CallState.ENDED  # alice said BYE
    finally:
        await alice.close()
        await bob.close()


async def test_two_accounts_register_and_the_selected_one_calls(kamailio: Kamailio) -> None:
    def office(user: str) -> Account:
        return Account(
            name=user,
            user=user,
            domain="example.org",
            server=HostPort.parse(kamailio.server("udp")),
            password=DEFAULT_USERS[user],
            bind=HostPort("127.0.0.1", 0),
        )

    bob = SoftphoneEngine(office("bob"), play="tone:660", record="none")
    await bob.start()
    phone = SoftphoneEngine(
        office("alice"), more_accounts=(office("carol"),), play="tone:440", record="none"
    )
    app = PhoneApp(phone, refresh_interval=0.05)
    try:
        async with app.run_test(size=(110, 34)) as pilot:
            await until(
                pilot,
                lambda: [a.state for a in phone.accounts()] == ["registered", "registered"],
                "both registrations",
            )
            shown = str(app.query_one("#accounts", Static).render())
            assert "▶ alice: sip:alice@example.org" in shown
            assert "carol: sip:carol@example.org" in shown
            await app.run_action("next_account")
            shown = str(app.query_one("#accounts", Static).render())
            assert "▶ carol: sip:carol@example.org" in shown
            app.query_one("#uri", Input).value = "bob"
            await app.run_action("dial")
            await until(pilot, lambda: bob.call_view().state is CallState.INCOMING, "bob rings")
            assert bob.call_view().remote.startswith("sip:carol@example.org")
            await bob.reject()
            await until(pilot, lambda: app.view.state is CallState.ENDED, "the rejection")
            assert app.view.end_reason == "rejected"
            # a call to the first account reaches the phone too
            dial = asyncio.create_task(bob.dial("alice"))
            await until(pilot, lambda: app.view.state is CallState.INCOMING, "alice rings")
            assert app.view.remote.startswith("sip:bob@example.org")
            await app.run_action("reject")
            await dial
            assert bob.call_view().end_reason == "rejected"
    finally:
        await bob.close()
