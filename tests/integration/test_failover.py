"""RFC 3263 §4.3 failover of INVITE and OPTIONS over UDP with SRV records from a real dnsmasq.

``_sip._udp.failover.test`` has two targets: the first (priority 10) is a UDP socket that
swallows everything, the second (priority 20) is bob's user agent. alice calls
``sip:bob@failover.test`` without an outbound proxy: her INVITE times out at the first target
(Timer B; T1 is 50 ms here so it takes 3.2 s) and the same request -- new branch, same Call-ID
and CSeq -- goes to the second target, where bob answers. The target that did not answer is
then tried last (§4.3), so the next request goes straight to bob.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from sip.aio import AsyncCall, AsyncUserAgent
from sip.locate import SystemLookup
from sip.message import Request, make_response, new_tag, parse_message
from sip.timers import TimerConfig
from sip.ua import UAConfig
from tests.integration.test_outbound import auto_answer
from tests.integration.test_sip_robustness import offer
from tests.peers.dnsmasq import Dnsmasq, DnsRecords, Srv

pytestmark = pytest.mark.integration

DOMAIN = "failover.test"


class Swallow(asyncio.DatagramProtocol):
    """The failing first target: keeps every request; answers nothing, or (``unavailable``)
    503 Service Unavailable to each request but ACK."""

    def __init__(self, unavailable: bool = False) -> None:
        self.requests: list[Request] = []
        self.unavailable = unavailable
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        msg = parse_message(data)
        if not isinstance(msg, Request):
            return
        self.requests.append(msg)
        if self.unavailable and msg.method != "ACK" and self.transport is not None:
            self.transport.sendto(make_response(msg, 503, to_tag=new_tag()).to_bytes(), addr)


@dataclass
class Setup:
    alice: AsyncUserAgent
    bob: AsyncUserAgent
    dead: Swallow
    answered: list[AsyncCall]


@pytest.fixture
async def setup(
    dns_factory: Callable[..., Dnsmasq], request: pytest.FixtureRequest
) -> AsyncIterator[Setup]:
    """``request.param`` (indirect parametrization) "503": the first target answers 503."""
    loop = asyncio.get_running_loop()
    unavailable = getattr(request, "param", "silent") == "503"
    transport, dead = await loop.create_datagram_endpoint(
        lambda: Swallow(unavailable), local_addr=("127.0.0.1", 0)
    )
    dead_port = transport.get_extra_info("sockname")[1]
    bob = AsyncUserAgent(
        UAConfig(user="bob", domain=DOMAIN, local_host="127.0.0.1", local_port=0),
        binding_check_interval=None,
    )
    answered = auto_answer(bob, 40040)
    await bob.start()
    records = DnsRecords(
        hosts={f"dead.{DOMAIN}": ["127.0.0.1"], f"bob.{DOMAIN}": ["127.0.0.1"]},
        srv=[
            Srv(f"_sip._udp.{DOMAIN}", f"dead.{DOMAIN}", dead_port, priority=10),
            Srv(f"_sip._udp.{DOMAIN}", f"bob.{DOMAIN}", bob.config.local_port, priority=20),
        ],
    )
    dns = await asyncio.to_thread(dns_factory, records)
    lookup = SystemLookup(nameservers=[dns.host], port=dns.port, timeout=2.0)
    alice = AsyncUserAgent(
        UAConfig(
            user="alice",
            domain=DOMAIN,
            local_host="127.0.0.1",
            local_port=0,
            timers=TimerConfig(t1=0.05),  # Timer B/F 3.2 s
        ),
        lookup=lookup,
        binding_check_interval=None,
    )
    await alice.start()
    try:
        yield Setup(alice, bob, dead, answered)
    finally:
        await alice.close()
        await bob.close()
        transport.close()


async def test_invite_timing_out_at_the_first_srv_target_is_answered_at_the_next(setup):
    alice, dead, answered = setup.alice, setup.dead, setup.answered
    call = await alice.invite(f"sip:bob@{DOMAIN}", offer(30040), timeout=30)
    assert call.remote_sdp is not None
    # the dead target got the first attempt (and its retransmissions), one branch
    invites = [r for r in dead.requests if r.method == "INVITE"]
    assert invites and len({r.top_via.branch for r in invites}) == 1
    # bob got the same request as a new transaction: same Call-ID and CSeq, new branch
    assert len(answered) == 1
    got = answered[0].call.invite
    assert got is not None
    assert got.call_id == invites[0].call_id == call.call_id
    assert got.cseq == invites[0].cseq
    assert got.top_via.branch != invites[0].top_via.branch
    # in-dialog requests go to bob's Contact; a new out-of-dialog request goes straight to
    # the target that answered (the dead one is tried last for a while, §4.3)
    before = len(dead.requests)
    result = await alice.options(f"sip:bob@{DOMAIN}", timeout=10)
    assert result.status == 200
    assert len(dead.requests) == before
    assert await call.bye(timeout=10) == "local-bye"
    assert await answered[0].wait_ended(5) == "remote-bye"


async def test_options_fails_over_to_the_next_srv_target(setup):
    alice, dead = setup.alice, setup.dead
    result = await alice.options(f"sip:bob@{DOMAIN}", timeout=30)
    assert result.status == 200
    assert {r.method for r in dead.requests} == {"OPTIONS"}
    assert result.response is not None
    assert result.response.call_id == dead.requests[0].call_id


@pytest.mark.parametrize("setup", ["503"], indirect=True)
async def test_invite_answered_503_by_the_first_srv_target_goes_to_the_next(setup):
    """§4.3: 503 Service Unavailable from the first target: the INVITE (ACKed there) goes
    to the next target at once, and that target is preferred afterwards."""
    alice, dead, answered = setup.alice, setup.dead, setup.answered
    call = await alice.invite(f"sip:bob@{DOMAIN}", offer(30044), timeout=10)
    assert [r.method for r in dead.requests] == ["INVITE", "ACK"]
    assert len(answered) == 1
    got = answered[0].call.invite
    assert got is not None and got.cseq == dead.requests[0].cseq
    result = await alice.options(f"sip:bob@{DOMAIN}", timeout=10)
    assert result.status == 200 and len(dead.requests) == 2
    assert await call.bye(timeout=10) == "local-bye"
