"""Late offer (RFC 3261 §13.2.1, §13.3.1): an INVITE without SDP, the offer in the 2xx and the
answer in the ACK, between two softphone calls on 127.0.0.1 (real sockets): our caller sends
the offer-less INVITE, our callee offers (as the controlling ICE agent, RFC 8445 §6.1.1)."""

from __future__ import annotations

import asyncio

import pytest

from softphone import call as call_module
from softphone.call import Call, CallFailed
from softphone.config import Account
from tests.helpers_call import LOOPBACK, Pair, Wire, media_options, until


@pytest.mark.parametrize("ice", [True, False])
@pytest.mark.parametrize("mux", [True, False])
async def test_late_offer_between_two_softphones(
    pair: Pair,
    monkeypatch: pytest.MonkeyPatch,
    ice: bool,
    mux: bool,
) -> None:
    alice_wire, bob_wire = Wire(pair.alice), Wire(pair.bob)
    account = Account(bind=LOOPBACK, ice=ice)
    alice = Call(pair.alice, account, media_options("tone:440", late_offer=True))
    bob = Call(pair.bob, account, media_options("tone:880", offer_components=1 if mux else 2))
    if not mux:  # bob's offer without a=rtcp-mux: two components, RTCP on its own port
        real = call_module.local_media
        monkeypatch.setattr(
            call_module, "local_media", lambda c, t, **kw: real(c, t, rtcp_mux=False)
        )
    dialing, incoming = await pair.ringing(alice)
    assert not incoming.offer  # the INVITE carried no SDP
    await asyncio.wait_for(bob.accept(incoming), 5)
    await asyncio.wait_for(dialing, 5)
    monkeypatch.undo()
    try:
        invite = alice_wire.requests("INVITE")[0]
        assert not invite.body and invite.headers.get("Content-Type") is None
        ok = bob_wire.responses(200)[0]
        assert b"m=audio" in ok.body and (b"a=ice-ufrag" in ok.body) == ice
        ack = alice_wire.requests("ACK")[0]
        assert b"m=audio" in ack.body and (b"a=ice-ufrag" in ack.body) == ice
        assert (b"a=rtcp-mux" in ack.body) == mux
        assert alice.late_offer and bob.late_offer
        if ice:
            assert alice.ice is not None and bob.ice is not None
            assert bob.ice.controlling and not alice.ice.controlling
            assert alice.ice.agent.components == (1 if mux else 2)
        await until(
            lambda: all(c.stats is not None and c.stats.packets_received > 5 for c in (alice, bob))
        )
        assert alice.remote is not None and bob.remote is not None
        assert alice.remote.rtcp_mux == mux and bob.remote.rtcp_mux == mux
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)
    assert alice.succeeded and bob.succeeded


async def test_late_offer_caller_rejects_an_unusable_offer_in_the_2xx(
    pair: Pair,
) -> None:
    """No common codec in the 2xx's offer: the ACK goes without a body and the caller hangs
    up (BYE); the callee sees an ACK without an answer and fails too."""
    alice = Call(
        pair.alice,
        Account(bind=LOOPBACK, codecs=("pcma",)),
        media_options("tone:440", late_offer=True),
    )
    bob = Call(pair.bob, Account(bind=LOOPBACK, codecs=("opus",)), media_options("tone:880"))
    dialing, incoming = await pair.ringing(alice)
    accepting = asyncio.ensure_future(bob.accept(incoming))
    with pytest.raises(CallFailed) as failed:
        await asyncio.wait_for(dialing, 5)
    assert failed.value.kind == "bad-answer" and "no common codec" in failed.value.reason
    with pytest.raises(CallFailed) as bob_failed:
        await asyncio.wait_for(accepting, 5)
    assert bob_failed.value.kind == "bad-answer"
    assert alice.end_reason == "bad-answer" and bob.end_reason == "bad-answer"
    assert alice.ice is not None and alice.ice._closed


async def test_early_media_is_skipped_for_an_offerless_invite(
    pair: Pair,
) -> None:
    """No offer to answer in a 183: the callee rings without SDP, the offer goes in the 2xx."""
    bob_wire = Wire(pair.bob)
    alice = Call(pair.alice, Account(bind=LOOPBACK), media_options("tone:440", late_offer=True))
    bob = Call(pair.bob, Account(bind=LOOPBACK), media_options("tone:880"))
    dialing, incoming = await pair.ringing(alice)
    await bob.early_media(incoming)
    await until(lambda: bool(bob_wire.responses(180)))
    assert not bob_wire.responses(183) and bob.stream is None
    await bob.accept(incoming)
    await asyncio.wait_for(dialing, 5)
    try:
        await until(
            lambda: all(c.stats is not None and c.stats.packets_received > 5 for c in (alice, bob))
        )
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)
    assert alice.succeeded and bob.succeeded
