"""``softphone tui`` keeps a pool of pre-gathered ICE candidate sets per account (ice.pool,
``candidate_pool`` in the account): the real engine (softphone.tui.SoftphoneEngine) on
127.0.0.1, driven by textual's pilot, answers and places calls with candidates taken from the
pool, and quitting the app closes the pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from textual.pilot import Pilot

from softphone.config import Account, HostPort
from softphone.tui import CallState, PhoneApp, SoftphoneEngine


def account(user: str, **changes: object) -> Account:
    acct = Account(name=user, user=user, domain="127.0.0.1", bind=HostPort("127.0.0.1", 0))
    return replace(acct, **changes)  # type: ignore[arg-type]


async def until(pilot: Pilot[int] | None, check: Callable[[], bool], what: str, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        if pilot is not None:
            await pilot.pause(0.05)
        else:
            await asyncio.sleep(0.05)


async def test_incoming_call_answered_in_the_app_takes_pooled_candidates() -> None:
    bob = SoftphoneEngine(account("bob"), play="tone:660", record="none")
    logs: list[str] = []
    app = PhoneApp(bob, refresh_interval=0.05)
    # the caller gathers per call: only bob's pool is at stake
    carol = SoftphoneEngine(account("carol", candidate_pool=0), play="tone:440", record="none")
    await carol.start()
    try:
        async with app.run_test(size=(110, 34)) as pilot:
            shown = bob.on_log  # the app's log panel (set when mounted)
            assert shown is not None

            def record(text: str) -> None:
                logs.append(text)
                shown(text)

            bob.on_log = record
            await until(pilot, lambda: bob.lines[0].pool is not None, "bob's candidate pool")
            pool = bob.lines[0].pool
            assert pool is not None
            await pool.wait_ready(1, timeout=10)
            assert pool.stats().taken == 0
            assert carol.lines[0].pool is None  # candidate_pool = 0: none
            port = bob.ua.config.local_port
            dial = asyncio.create_task(carol.dial(f"sip:bob@127.0.0.1:{port}"))
            await until(pilot, lambda: app.view.state is CallState.INCOMING, "the incoming call")
            await app.run_action("answer")
            await until(pilot, lambda: app.view.state is CallState.ACTIVE, "the call")
            await asyncio.wait_for(dial, 10)
            assert pool.stats().taken == 1
            assert "candidates from the pool" in logs
            assert "gathering candidates" not in logs
            assert bob.call is not None and bob.call.pool is pool
            await until(pilot, lambda: app.view.receive_dbfs > -30, "carol's tone at bob")
            # the pool gathers a replacement; quitting must release it
            await pool.wait_ready(1, timeout=10)
            await app.run_action("quit_phone")
        assert bob.ua is None and bob.lines[0].pool is None  # closed on exit
        stats = pool.stats()
        assert stats.ready == 0 and stats.gathering == 0
        with pytest.raises(RuntimeError, match="closed"):
            await pool.wait_ready(1, timeout=5)
        assert pool.take(1) is None
    finally:
        await carol.close()


async def test_outgoing_call_from_the_app_takes_pooled_candidates() -> None:
    bob = SoftphoneEngine(account("bob", candidate_pool=0), play="tone:660", record="none")
    await bob.start()
    alice = SoftphoneEngine(account("alice", candidate_pool=2), play="tone:440", record="none")
    app = PhoneApp(alice, refresh_interval=0.05)
    try:
        async with app.run_test(size=(110, 34)) as pilot:
            await until(pilot, lambda: alice.lines[0].pool is not None, "alice's candidate pool")
            pool = alice.lines[0].pool
            assert pool is not None and pool.size == 2
            await pool.wait_ready(1, timeout=10)
            alice_dial = alice.dial(f"sip:bob@127.0.0.1:{bob.ua.config.local_port}")
            dial = asyncio.create_task(alice_dial)
            await until(pilot, lambda: bob.call_view().state is CallState.INCOMING, "bob rings")
            await bob.answer()
            await asyncio.wait_for(dial, 10)
            await until(pilot, lambda: alice.call_view().state is CallState.ACTIVE, "the call")
            assert pool.stats().taken == 1
            assert alice.call is not None and alice.call.pool is pool
            await alice.hangup()
    finally:
        await bob.close()
    assert alice.lines[0].pool is None  # the app closed its engine, pool included
    assert pool.stats().ready == 0


async def test_no_pool_without_ice_and_close_before_it_is_ready() -> None:
    plain = SoftphoneEngine(account("dave", ice=False), play="tone:440", record="none")
    await plain.start()
    try:
        await asyncio.sleep(0.2)  # the background start has run by then
        assert plain.lines[0].pool is None
    finally:
        await plain.close()
    # closing while the pool still fills (and its start still waits for the first set)
    eager = SoftphoneEngine(account("erin"), play="tone:440", record="none")
    await eager.start()
    await until(None, lambda: eager.lines[0].pool is not None, "erin's candidate pool")
    pool = eager.lines[0].pool
    assert pool is not None
    await eager.close()
    assert eager.lines[0].pool is None and not eager._pool_starts
    stats = pool.stats()
    assert stats.ready == 0 and stats.gathering == 0
    assert pool.take(1) is None
