"""Call features on real sockets (127.0.0.1): session timers (RFC 4028) between a softphone
:class:`~softphone.call.Call` and a bare SIP user agent that asks for them, and early media
(183 with SDP) between two softphone calls. Intervals are shortened below the RFC's Min-SE of
90 s (by lowering ``sip.invite.MIN_SE`` for the test) so the timers fire within seconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sip.aio import AsyncCall, AsyncUserAgent
from sip.message import Request, Response
from sip.ua import UAConfig
from softphone.call import Call, MediaOptions
from softphone.config import Account, HostPort
from softphone.sdp_glue import LocalTransport, local_media, new_offer_answer

LOOPBACK = HostPort("127.0.0.1", 0)


@pytest.fixture
async def uas(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[AsyncUserAgent, ...]]:
    monkeypatch.setattr("sip.invite.MIN_SE", 2)
    out = []
    for user in ("alice", "bob"):
        ua = AsyncUserAgent(
            # alice: a bare caller that asks for a session timer but never refreshes itself
            UAConfig(
                user=user,
                domain="127.0.0.1",
                local_port=0,
                supported=("timer",) if user == "bob" else (),
            )
        )
        await ua.start("127.0.0.1", 0, transports=("UDP",))
        out.append(ua)
    yield tuple(out)
    for ua in out:
        await ua.close(timeout=1.0)


def _record(ua: AsyncUserAgent) -> list[Request | Response]:
    sent: list[Request | Response] = []
    original = ua.ua.messages_to_send

    def tapped() -> Any:
        out = original()
        sent.extend(o.message for o in out)
        return out

    ua.ua.messages_to_send = tapped  # type: ignore[method-assign]
    return sent


async def _plain_offer() -> tuple[bytes, Any]:
    from media.aio import open_udp_transport

    sock = await open_udp_transport(("127.0.0.1", 0))
    transport = LocalTransport("127.0.0.1", sock.local_address[1])
    oa = new_offer_answer(local_media(["pcmu"], transport), transport)
    return oa.create_offer().to_bytes(), sock


@pytest.mark.parametrize("refresher", ["uas", "uac"])
async def test_softphone_callee_honours_session_expires(
    uas: tuple[AsyncUserAgent, AsyncUserAgent], refresher: str
) -> None:
    """A caller asks for Session-Expires 4 s. refresher=uas: the softphone refreshes (UPDATE,
    the caller allows it) every 2 s and the call lives on. refresher=uac: the caller never
    refreshes, so the softphone hangs up (BYE) before the session expires."""
    alice, bob_ua = uas
    bob_sent = _record(bob_ua)
    bob = Call(
        bob_ua,
        Account(bind=LOOPBACK, ice=False),
        MediaOptions(play="tone:660", record="none", media_timeout=None),
    )
    bob_ua.on_incoming = bob.accept
    offer, sock = await _plain_offer()
    try:
        target = f"sip:bob@127.0.0.1:{bob_ua.config.local_port}"
        call = await alice.invite(
            target, offer, timeout=5, headers=[("Session-Expires", f"4;refresher={refresher}")]
        )
        assert isinstance(call, AsyncCall)
        ok = [m for m in bob_sent if isinstance(m, Response) and m.cseq.method == "INVITE"]
        assert ok[-1].status == 200
        assert ok[-1].headers.get("Session-Expires") == f"4;refresher={refresher}"
        running = asyncio.ensure_future(bob.run())
        if refresher == "uas":
            updates: list[Request] = []
            for _ in range(400):  # refreshes every 2 s; wait for three of them
                updates = [m for m in bob_sent if isinstance(m, Request) and m.method == "UPDATE"]
                if len(updates) >= 3:
                    break
                await asyncio.sleep(0.05)
            assert len(updates) >= 3
            assert all(u.headers.get("Session-Expires") == "4;refresher=uac" for u in updates)
            assert not running.done() and not call.ended.done()
            await call.bye(5)
            assert await asyncio.wait_for(running, 5) == "remote-bye"
        else:
            # the BYE comes min(32, 4/3) s before the 4 s expire: no refresh from alice
            assert await asyncio.wait_for(running, 10) == "session-expired"
            assert [m for m in bob_sent if isinstance(m, Request) and m.method == "BYE"]
            assert await call.wait_ended(5) == "remote-bye"
            assert bob.report()["call"]["end_reason"] == "session-expired"
    finally:
        sock.close()


async def test_early_media_then_answer_on_real_sockets_without_ice(
    uas: tuple[AsyncUserAgent, AsyncUserAgent],
) -> None:
    """Plain RTP (no ICE): bob's 183 starts alice's media at once; after the 200 the same
    stream carries on."""
    alice_ua, bob_ua = uas
    account = Account(bind=LOOPBACK, ice=False)
    bob = Call(bob_ua, account, MediaOptions(play="tone:660", record="none"))
    alice = Call(alice_ua, account, MediaOptions(play="tone:440", record="none"))
    dialing = asyncio.ensure_future(alice.dial(f"sip:bob@127.0.0.1:{bob_ua.config.local_port}"))
    incoming = await asyncio.wait_for(bob_ua.incoming.get(), 5)
    await bob.early_media(incoming)
    for _ in range(250):
        if alice.stream is not None and alice.stream.stats().packets_received > 10:
            break
        await asyncio.sleep(0.02)
    assert alice.stream is not None and alice.stream.stats().packets_received > 10
    assert not dialing.done()
    stream = alice.stream
    await bob.accept(incoming)
    await asyncio.wait_for(dialing, 5)
    assert alice.stream is stream
    assert await alice.run(duration=0.3) == "local-bye"
    assert await asyncio.wait_for(bob.run(), 5) == "remote-bye"
    assert alice.succeeded and bob.succeeded
