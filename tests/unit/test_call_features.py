"""softphone.call features: early media (183 with SDP), ICE-completion updated offers,
session timers, mute and hold. Two in-process user agents on 127.0.0.1 (real sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from sip.aio import AsyncCall, AsyncUserAgent
from sip.invite import CallRinging
from sip.message import Request, Response
from sip.ua import UAConfig
from softphone.call import Call, CallFailed, MediaOptions
from softphone.config import Account, HostPort

LOOPBACK = HostPort("127.0.0.1", 0)


@dataclass
class Pair:
    alice: AsyncUserAgent
    bob: AsyncUserAgent

    @property
    def bob_uri(self) -> str:
        return f"sip:bob@127.0.0.1:{self.bob.config.local_port}"


class Wire:
    """Every SIP message a user agent sends, recorded (what is on the wire)."""

    def __init__(self, ua: AsyncUserAgent) -> None:
        self.sent: list[Request | Response] = []
        core = ua.ua
        original = core.messages_to_send

        def tapped() -> Any:
            out = original()
            self.sent.extend(o.message for o in out)
            return out

        core.messages_to_send = tapped  # type: ignore[method-assign]

    def requests(self, method: str) -> list[Request]:
        return [m for m in self.sent if isinstance(m, Request) and m.method == method]

    def responses(self, status: int) -> list[Response]:
        return [m for m in self.sent if isinstance(m, Response) and m.status == status]


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    uas = []
    for user in ("alice", "bob"):
        ua = AsyncUserAgent(UAConfig(user=user, domain="127.0.0.1", local_port=0))
        await ua.start("127.0.0.1", 0, transports=("UDP",))
        uas.append(ua)
    yield Pair(*uas)
    for ua in uas:
        await ua.close(timeout=1.0)


def _account(**changes: Any) -> Account:
    return Account(bind=LOOPBACK, **changes)


def _options(tone: str, **changes: Any) -> MediaOptions:
    return MediaOptions(play=tone, record="none", ice_timeout=5.0, answer_timeout=5.0, **changes)


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    assert predicate()


# --- 1. early media ----------------------------------------------------------------------


@pytest.mark.parametrize("ice", [True, False])
async def test_early_media_from_a_183_continues_after_the_200(pair: Pair, ice: bool) -> None:
    """RFC 3261 §13.2.1 / RFC 3960: bob sends 183 with his answer and media before he answers;
    alice plays it at once, and the 200 (same SDP) changes nothing: same stream, same ICE."""
    alice_wire, bob_wire = Wire(pair.alice), Wire(pair.bob)
    incoming: asyncio.Queue[AsyncCall] = pair.bob.incoming
    bob = Call(pair.bob, _account(ice=ice), _options("tone:660"))
    alice = Call(pair.alice, _account(ice=ice), _options("tone:440"))
    dialing = asyncio.ensure_future(alice.dial(pair.bob_uri))
    call = await asyncio.wait_for(incoming.get(), 5)
    await bob.early_media(call)
    # bob's 183 carries the answer; no 200 yet
    progress = bob_wire.responses(183)
    assert len(progress) == 1 and b"m=audio" in progress[0].body
    assert progress[0].headers.get("Content-Type") == "application/sdp"
    assert not bob_wire.responses(200)
    # alice hears bob's early media while the call is not answered
    await _until(lambda: alice.stream is not None and alice.stream.stats().packets_received > 5)
    assert not alice.answered and not dialing.done()
    assert bob.stream is not None and bob.stream.stats().packets_received > 0
    early_stream, early_ice = alice.stream, alice.ice
    received = early_stream.stats().packets_received if early_stream else 0
    await bob.accept(call)
    await asyncio.wait_for(dialing, 5)
    ok = bob_wire.responses(200)
    assert ok and ok[0].body == progress[0].body  # the 200 repeats the early answer
    assert alice.answered and alice.sip_status == 200
    assert alice.stream is early_stream and alice.ice is early_ice  # no restart
    if ice:
        assert alice.ice is not None and alice.ice.agent.stats().restarts == 0
    assert [e.status for e in alice.sip.events if isinstance(e, CallRinging)] == [183]
    assert len(alice_wire.requests("INVITE")) == 1
    await asyncio.sleep(0.2)
    assert alice.stats is not None and alice.stats.packets_received > received
    assert await alice.run(duration=0.3) == "local-bye"
    assert await asyncio.wait_for(bob.run(), 5) == "remote-bye"
    assert alice.succeeded and bob.succeeded


async def test_early_media_then_rejected_tears_the_media_down(pair: Pair) -> None:
    incoming: asyncio.Queue[AsyncCall] = pair.bob.incoming
    bob = Call(pair.bob, _account(), _options("tone:660"))
    alice = Call(pair.alice, _account(), _options("tone:440"))
    dialing = asyncio.ensure_future(alice.dial(pair.bob_uri))
    call = await asyncio.wait_for(incoming.get(), 5)
    await bob.early_media(call)
    await _until(lambda: alice.stream is not None and alice.stream.stats().packets_received > 0)
    call.reject(486)
    with pytest.raises(CallFailed) as info:
        await asyncio.wait_for(dialing, 5)
    assert info.value.status == 486
    assert alice.stream is not None and alice.stream.session.closed
    assert alice.ice is not None and alice.ice.agent.stats().state == "closed"
    await bob.hangup()
