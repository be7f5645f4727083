"""Registration and a whole call (INVITE/407/INVITE/180/200/ACK/BYE) survive 30 % packet loss.

Two layers:
- two sans-I/O UA cores and a digest registrar on the simulated network of
  tests/unit/test_ua.py (random loss on every datagram, delay and jitter; many seeds,
  deterministic);
- real sockets: Kamailio and two asyncio user agents inside a network namespace whose loopback
  drops packets with an iptables ``statistic`` rule (root only; skipped otherwise).
"""

from __future__ import annotations

import json
import shutil
import textwrap
from typing import Any

import pytest

from sip import invite as inv
from sip.registration import Registered, RegistrationFailed
from tests.unit.test_registration import FakeRegistrar
from tests.unit.test_ua import SDP_A, FakePeer, SimNet, auto_answer, make_ua

pytestmark = pytest.mark.integration

LOSS = 0.3
REGISTRAR_HOST = "10.0.0.6"
PROXY_PORT = 5060  # inside the test's own network namespace


def _settled(net: SimNet, ua: Any, kinds: tuple[type, ...]) -> bool:
    return any(net.of(ua, k) for k in kinds)


@pytest.mark.parametrize("seed", range(12))
def test_register_and_call_survive_30_percent_loss_simulated(seed):
    net = SimNet(loss=LOSS, delay=0.02, jitter=0.03, seed=seed)
    registrar = FakeRegistrar()
    net.add_peer(FakePeer(REGISTRAR_HOST, 5060, registrar.handle))
    a = make_ua("10.0.0.1", "alice", password="secret")
    b = make_ua("10.0.0.2", "bob", password="secret")
    net.add(a)
    net.add(b, auto_answer(net, b))
    for ua in (a, b):
        ua.register(net.now, expires=600, registrar=f"sip:{REGISTRAR_HOST}")
    net.run(lambda: all(_settled(net, u, (Registered, RegistrationFailed)) for u in (a, b)))
    assert net.of(a, Registered) and net.of(b, Registered), (net.kinds(a), net.kinds(b))
    assert len(registrar.bindings) == 2
    call = a.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    net.run(lambda: _settled(net, a, (inv.CallAnswered, inv.CallFailed)), max_time=60)
    assert net.of(a, inv.CallAnswered), net.kinds(a)
    net.run(lambda: _settled(net, b, (inv.CallConfirmed, inv.CallEnded)), max_time=60)
    call.hangup(net.now)
    net.run(lambda: call.state is inv.CallState.TERMINATED, max_time=60)
    net.run(max_time=60)
    assert [e.reason for e in net.of(a, inv.CallEnded)] == ["local-bye"]
    assert [e.reason for e in net.of(b, inv.CallEnded)] == ["remote-bye"]
    lost = sum(1 for w in net.wire if w[4])
    assert lost > 0  # the loss really happened
    # retransmissions did the work
    assert len(net.wire) > 14


SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from tests.peers.kamailio import Kamailio
    from sip.aio import AsyncUserAgent
    from sip.timers import TimerConfig
    from sip.ua import UAConfig

    async def main(k):
        import time
        t0 = time.monotonic()
        def ua(user):
            return AsyncUserAgent(UAConfig(
                user=user, domain=k.domain, password=k.users[user],
                outbound_proxy=f"sip:127.0.0.1:{k.port}", registrar=f"sip:{k.domain}",
                local_host="127.0.0.1", local_port=0,
                # T1 as the loopback's RTT allows, T2 = 8 T1 as the defaults (0.5 / 4 s): the
                # same number of retransmissions in each transaction, a fifth of the time
                timers=TimerConfig(t1=0.1, t2=0.8)))
        alice, bob = ua("alice"), ua("bob")
        await alice.start(); await bob.start()
        out = {}
        try:
            out["alice_reg"] = (await alice.register(expires=300)).expires
            out["bob_reg"] = (await bob.register(expires=300)).expires
            async def on_incoming(call):
                call.ring()
                await call.answer(call.offer or b"")
            bob.on_incoming = on_incoming
            offer = (b"v=0\\r\\no=- 1 1 IN IP4 127.0.0.1\\r\\ns=-\\r\\nc=IN IP4 127.0.0.1\\r\\n"
                     b"t=0 0\\r\\nm=audio 30000 RTP/AVP 0\\r\\n")
            call = await alice.invite(f"sip:bob@{k.domain}", offer, timeout=60)
            out["answered"] = call.call.final_status
            bcall = await asyncio.wait_for(bob.incoming.get(), 30)
            await bcall.wait_confirmed(40)
            out["bye"] = await call.bye(60)
            out["bob_end"] = await bcall.wait_ended(60)
            out["call_seconds"] = round(time.monotonic() - t0, 1)
        finally:
            await asyncio.gather(alice.close(), bob.close())
        out["seconds"] = round(time.monotonic() - t0, 1)
        print(json.dumps(out))

    k = Kamailio(Path(sys.argv[1]), tls=False, port=int(sys.argv[2]))
    k.start(timeout=30)
    try:
        asyncio.run(main(k))
    finally:
        k.stop()
    """
)


def test_register_and_call_survive_iptables_loss(netns_lab):
    if shutil.which("kamailio") is None:
        pytest.skip("kamailio not installed (Debian package kamailio)")
    ns = netns_lab.namespace("sipl")
    # Every UA<->UA message crosses two hops (UA -> Kamailio -> UA), and the proxy does not
    # retransmit what is end to end (a 2xx and its ACK). Drop LOSS of the datagrams going to
    # Kamailio: each message between the UAs is lost with probability LOSS, as on a lossy
    # access link. The drop is on INPUT: a drop in OUTPUT makes sendto() fail with EPERM,
    # which the sender sees (Kamailio then answers 500), unlike real loss.
    ns.iptables(
        "-A", "INPUT", "-p", "udp", "--dport", str(PROXY_PORT),
        "-m", "statistic", "--mode", "random", "--probability", f"{LOSS}", "-j", "DROP",
    )  # fmt: skip
    workdir = str(netns_lab.workdir / "kamailio")
    res = ns.python(SCRIPT, workdir, str(PROXY_PORT), timeout=240, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(out)
    assert out["alice_reg"] > 0 and out["bob_reg"] > 0
    assert out["answered"] == 200
    assert out["bye"] == "local-bye" and out["bob_end"] == "remote-bye"
    counters = ns.iptables("-L", "INPUT", "-n", "-v", "-x").splitlines()
    dropped = sum(int(line.split()[0]) for line in counters if "DROP" in line)
    assert dropped > 0
