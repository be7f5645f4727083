"""Benchmark: ICE connect time on loopback, ours vs aioice, in the same run.

Run: ``.venv/bin/python -m bench.ice_connect [--runs 20]``.

The clock starts when both agents hold each other's parameters and candidates (gathering is
done and not timed).  Two times per run: ``connect()`` - until our
``IceConnection.connect()`` / aioice's ``Connection.connect()`` returned on both sides - and
``usable`` - until both agents themselves had a nominated pair they can send on (ours: the
``Completed`` event, i.e. the controlling side's USE-CANDIDATE check answered and the
controlled side's USE-CANDIDATE request arrived on a valid pair; aioice: its check list
complete).  aioice's ``connect()`` polls every 20 ms, so there the two differ by up to 20 ms.
One datagram each way then checks that the pair really carries data (not timed).  Median, min
and max of ``connect()``, median of ``usable``, over ``--runs`` runs per case.

Cases:

* ``1 host each``: one host candidate per side on 127.0.0.1 - the floor: one check each way
  plus nomination.
* ``4 hosts + 4 black holes``: each side gathers on 127.0.0.1-4 (16 real pairs) and is also
  given four remote candidates with a higher priority than any real one that lead to UDP
  sockets that never answer (a firewalled path: no ICMP either).  The best pairs are checked
  first and go nowhere, so the pair that gets nominated is not the first one checked.

* ``relay only (coturn)``: both sides offer only a relayed candidate from a coturn on
  127.0.0.1 (started by the benchmark when ``turnserver`` is installed): permissions and
  Send/Data indications through the relay; ours forced with ``relay_only``, aioice with
  ``TransportPolicy.RELAY``.

Agents: ours with its default Ta (50 ms, RFC 8445 §14.2) and with Ta = 20 ms (aioice's
pacing); ours without the 5 ms floor between checks (``min_check_interval=0``: not RFC 8445
compliant, a reference that shows what the floor costs); aioice with its defaults; and ours
against aioice (ours controlling).

``--lab`` runs eim/eim and sym/sym through the real NAT routers of ``tests/lab`` (network
namespaces, root, coturn): each node reports its own connect time (ours: agent start to
``Completed``; aioice: around ``connect()``, in whole ms), the slower side counts.

``--virtual`` runs our sans-I/O agents instead through the simulated network of
``tests/unit/test_ice_sim.py`` (NATs, relays, delay, loss) on a virtual clock: connect times
there are in virtual milliseconds (deterministic per seed), and the CPU time per connection
is measured for real.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

if __package__ in (None, ""):  # allow ``python bench/ice_connect.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ice.agent import AgentEvent, Completed
from ice.aio import IceConnection
from ice.candidate import Candidate, CandidateType
from ice.gather import GatherConfig, TurnServer
from ice.sdp import format_candidate, parse_candidate

try:
    import aioice
    import aioice.ice
except ImportError:  # pragma: no cover - aioice is a dev-only peer
    aioice = None  # type: ignore[assignment]

TIMEOUT = 20.0
Run = Callable[[list[str], list[Candidate]], Awaitable["Times"]]


def _decoys(sockets: list[socket.socket]) -> list[Candidate]:
    """Remote candidates ranked above every real one, leading to silent sockets."""
    out = []
    for i, s in enumerate(sockets):
        host, port = s.getsockname()
        out.append(
            Candidate(
                foundation=f"decoy{i}",
                component=1,
                transport="udp",
                priority=0x7FFFFFFF - i,
                address=host,
                port=port,
                type=CandidateType.HOST,
            )
        )
    return out


class _Usable:
    """When each agent itself reported the nominated pair usable (before its ``connect()``
    returns to the caller): our ``Completed`` event, aioice's check list completing (every
    component has a nominated pair; aioice's ``connect()`` only notices it at its next
    20 ms poll)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    def mark(self, side: str) -> None:
        self.at.setdefault(side, time.perf_counter())

    def watch_ours(self, conn: IceConnection, side: str) -> None:
        handler = conn._on_agent_event

        def on_event(event: AgentEvent) -> None:
            if isinstance(event, Completed):
                self.mark(side)
            handler(event)

        conn._on_agent_event = on_event  # type: ignore[method-assign]

    def watch_aioice(self, conn: Any, side: str) -> None:
        maybe_complete = conn._check_list_maybe_complete

        def wrapped() -> bool:
            done = bool(maybe_complete())
            if done:
                self.mark(side)
            return done

        conn._check_list_maybe_complete = wrapped

    def since(self, t0: float) -> float:
        if len(self.at) < 2:
            return float("nan")
        return max(self.at.values()) - t0


Times = tuple[float, float]  # (connect() returned on both sides, both agents usable)


async def _ours_pair(
    addresses: list[str], decoys: list[Candidate], ta: float, floor: float | None = None
) -> Times:
    opts: dict[str, Any] = {"ta": ta}
    if floor is not None:
        opts["min_check_interval"] = floor
    a = IceConnection(True, addresses=addresses, agent_options=opts)
    b = IceConnection(False, addresses=addresses, agent_options=opts)
    usable = _Usable()
    usable.watch_ours(a, "a")
    usable.watch_ours(b, "b")
    try:
        await asyncio.gather(a.gather(), b.gather())
        a.set_remote(b.local_ufrag, b.local_pwd, b.local_candidates + decoys)
        b.set_remote(a.local_ufrag, a.local_pwd, a.local_candidates + decoys)
        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), TIMEOUT)
        elapsed = time.perf_counter() - t0
        assert a.transport().send(b"\x80ping") and b.transport().send(b"\x80pong")
        assert await asyncio.wait_for(b.transport().recv(), 2) == b"\x80ping"
        assert await asyncio.wait_for(a.transport().recv(), 2) == b"\x80pong"
        return elapsed, usable.since(t0)
    finally:
        await a.close()
        await b.close()


def _aioice_candidates(candidates: list[Candidate]) -> list[Any]:
    assert aioice is not None
    return [aioice.Candidate.from_sdp(format_candidate(c)) for c in candidates]


async def _aioice_pair(addresses: list[str], decoys: list[Candidate]) -> Times:
    assert aioice is not None
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(addresses)
    a = aioice.Connection(ice_controlling=True, use_ipv6=False)
    b = aioice.Connection(ice_controlling=False, use_ipv6=False)
    usable = _Usable()
    usable.watch_aioice(a, "a")
    usable.watch_aioice(b, "b")
    try:
        await asyncio.gather(a.gather_candidates(), b.gather_candidates())
        for x, y in ((a, b), (b, a)):
            x.remote_username, x.remote_password = y.local_username, y.local_password
            remote = [parse_candidate(c.to_sdp()) for c in y.local_candidates] + decoys
            for c in _aioice_candidates(remote):
                await x.add_remote_candidate(c)
            await x.add_remote_candidate(None)
        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), TIMEOUT)
        elapsed = time.perf_counter() - t0
        await a.send(b"\x80ping")
        await b.send(b"\x80pong")
        assert await asyncio.wait_for(b.recv(), 2) == b"\x80ping"
        assert await asyncio.wait_for(a.recv(), 2) == b"\x80pong"
        return elapsed, usable.since(t0)
    finally:
        await a.close()
        await b.close()


async def _mixed_pair(addresses: list[str], decoys: list[Candidate]) -> Times:
    assert aioice is not None
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(addresses)
    a = IceConnection(True, addresses=addresses, agent_options={"ta": 0.02})
    b = aioice.Connection(ice_controlling=False, use_ipv6=False)
    usable = _Usable()
    usable.watch_ours(a, "a")
    usable.watch_aioice(b, "b")
    try:
        await asyncio.gather(a.gather(), b.gather_candidates())
        remote = [parse_candidate(c.to_sdp()) for c in b.local_candidates]
        a.set_remote(b.local_username, b.local_password, remote + decoys)
        b.remote_username, b.remote_password = a.local_ufrag, a.local_pwd
        for c in _aioice_candidates(a.local_candidates + decoys):
            await b.add_remote_candidate(c)
        await b.add_remote_candidate(None)
        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), TIMEOUT)
        elapsed = time.perf_counter() - t0
        assert a.transport().send(b"\x80ping")
        await b.send(b"\x80pong")
        assert await asyncio.wait_for(b.recv(), 2) == b"\x80ping"
        assert await asyncio.wait_for(a.transport().recv(), 2) == b"\x80pong"
        return elapsed, usable.since(t0)
    finally:
        await a.close()
        await b.close()


async def _ours_relay_pair(turn: TurnServer, ta: float = 0.02) -> Times:
    cfg = GatherConfig(turn_servers=[turn], relay_only=True)
    opts = {"ta": ta}
    a = IceConnection(True, bind="127.0.0.1", gather=cfg, agent_options=opts)
    b = IceConnection(False, bind="127.0.0.1", gather=cfg, agent_options=opts)
    usable = _Usable()
    usable.watch_ours(a, "a")
    usable.watch_ours(b, "b")
    try:
        await asyncio.gather(a.gather(), b.gather())
        a.set_remote(b.local_ufrag, b.local_pwd, b.local_candidates)
        b.set_remote(a.local_ufrag, a.local_pwd, a.local_candidates)
        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), TIMEOUT)
        elapsed = time.perf_counter() - t0
        assert a.transport().relayed and b.transport().relayed
        assert a.transport().send(b"\x80ping") and b.transport().send(b"\x80pong")
        assert await asyncio.wait_for(b.transport().recv(), 2) == b"\x80ping"
        assert await asyncio.wait_for(a.transport().recv(), 2) == b"\x80pong"
        return elapsed, usable.since(t0)
    finally:
        await a.close()
        await b.close()


async def _aioice_relay_pair(turn: TurnServer) -> Times:
    assert aioice is not None
    kwargs: dict[str, Any] = {
        "turn_server": turn.address,
        "turn_username": turn.username,
        "turn_password": turn.password,
        "transport_policy": aioice.TransportPolicy.RELAY,
        "use_ipv6": False,
    }
    a = aioice.Connection(ice_controlling=True, **kwargs)
    b = aioice.Connection(ice_controlling=False, **kwargs)
    usable = _Usable()
    usable.watch_aioice(a, "a")
    usable.watch_aioice(b, "b")
    try:
        await asyncio.gather(a.gather_candidates(), b.gather_candidates())
        for x, y in ((a, b), (b, a)):
            x.remote_username, x.remote_password = y.local_username, y.local_password
            for c in y.local_candidates:
                await x.add_remote_candidate(c)
            await x.add_remote_candidate(None)
        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), TIMEOUT)
        elapsed = time.perf_counter() - t0
        await a.send(b"\x80ping")
        await b.send(b"\x80pong")
        assert await asyncio.wait_for(b.recv(), 2) == b"\x80ping"
        assert await asyncio.wait_for(a.recv(), 2) == b"\x80pong"
        return elapsed, usable.since(t0)
    finally:
        await a.close()
        await b.close()


async def _relay_rows(runs: int) -> None:
    """Relayed candidates only, both sides, through a coturn on 127.0.0.1 (if installed)."""
    import tempfile
    from pathlib import Path

    from tests.peers.coturn import Coturn, turnserver_binary

    if turnserver_binary() is None:
        print(f"{'relay only (coturn)':26} skipped: turnserver not installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = Coturn(Path(tmp), alt_host=None, tls=False)
        server.start()
        try:
            turn = TurnServer(server.turn_address(), "alice", server.users["alice"])
            rows: list[tuple[str, Callable[[TurnServer], Awaitable[Times]]]] = [
                ("ours (Ta 50 ms)", lambda t: _ours_relay_pair(t, 0.05)),
                ("ours (Ta 20 ms)", lambda t: _ours_relay_pair(t, 0.02)),
            ]
            if aioice is not None:
                rows.append(("aioice-aioice", _aioice_relay_pair))
            for name, run in rows:
                times: list[Times] = []
                for _ in range(runs):
                    try:
                        times.append(await run(turn))
                    except (TimeoutError, AssertionError, OSError, ConnectionError) as exc:
                        logging.getLogger("bench").warning("run failed: %r", exc)
                        times.append(_FAILED)
                print(f"{'relay only (coturn)':26} {name:30} {_fmt(times)}", flush=True)
        finally:
            server.stop()


_FAILED: Times = (float("nan"), float("nan"))


async def _measure(run: Run, addresses: list[str], decoys: list[Candidate], n: int) -> list[Times]:
    times = []
    for _ in range(n):
        try:
            times.append(await run(addresses, decoys))
        except (TimeoutError, AssertionError, OSError, ConnectionError) as exc:
            logging.getLogger("bench").warning("run failed: %r", exc)
            times.append(_FAILED)
    return times


HEADER = (
    f"{'case':26} {'agents':30} {'connect() median':>16} {'min':>7} {'max':>7}"
    f" {'usable median':>14} {'fail':>5}"
)


def _fmt(times: list[Times]) -> str:
    """connect() returned on both sides: median, min, max; both agents usable: median (ms)."""
    ok = [t for t in times if t[0] == t[0]]
    if not ok:
        return f"{'failed':>16} {'':>7} {'':>7} {'':>14} {len(times):>5}"
    failed = len(times) - len(ok)
    connect = [t[0] * 1000 for t in ok]
    usable = [t[1] * 1000 for t in ok if t[1] == t[1]]
    u = f"{statistics.median(usable):14.1f}" if usable else f"{'-':>14}"
    return (
        f"{statistics.median(connect):16.1f} {min(connect):7.1f} {max(connect):7.1f}"
        f" {u} {failed:>5}"
    )


async def main_async(runs: int) -> None:
    cases: list[tuple[str, list[str], int]] = [
        ("1 host each", ["127.0.0.1"], 0),
        ("4 hosts + 4 black holes", [f"127.0.0.{i}" for i in range(1, 5)], 4),
    ]
    agents: list[tuple[str, Run]] = [
        ("ours (Ta 50 ms)", lambda ad, de: _ours_pair(ad, de, 0.05)),
        ("ours (Ta 20 ms)", lambda ad, de: _ours_pair(ad, de, 0.02)),
        # for reference only: without the 5 ms floor between checks that RFC 8445 §14.2
        # requires (shows what the floor costs and that the asyncio shell adds nothing)
        ("ours (Ta 50, no 5 ms floor)*", lambda ad, de: _ours_pair(ad, de, 0.05, 0.0)),
    ]
    if aioice is not None:
        agents.append(("aioice-aioice", _aioice_pair))
        agents.append(("ours-aioice (Ta 20 ms)", _mixed_pair))
    print(HEADER)
    print("-" * len(HEADER))
    for case, addresses, n_decoys in cases:
        silent = []
        for i in range(n_decoys):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.0.0.{100 + i}", 0))
            silent.append(s)
        decoys = _decoys(silent)
        try:
            for name, run in agents:
                times = await _measure(run, addresses, decoys, runs)
                print(f"{case:26} {name:30} {_fmt(times)}", flush=True)
        finally:
            for s in silent:
                s.close()
    await _relay_rows(runs)
    print("* not RFC 8445 compliant (no 5 ms floor between transactions); reference only")


def main_lab(runs: int) -> None:
    """eim/eim and sym/sym through the real NAT routers of ``tests/lab`` (network namespaces,
    root, coturn): ours and aioice in nodes on two laptops (``tests.lab.ice_node``).  Times
    are what each node reports from the moment it got the peer's candidates to its pair
    being usable (ours: agent start to ``Completed``; aioice: around ``connect()``, to the
    millisecond); the slower of the two sides counts."""
    import shutil
    import tempfile
    from pathlib import Path

    from tests.lab.conftest import build_ice_lab, run_pair
    from tests.peers.netns import Lab, netns_available

    reason = netns_available()
    if reason or shutil.which("turnserver") is None:
        print(f"lab skipped: {reason or 'turnserver not installed'}")
        return
    agents: list[tuple[str, list[str]]] = [
        ("ours (Ta 50 ms)", ["--ta", "0.05"]),
        ("ours (Ta 20 ms)", ["--ta", "0.02"]),
    ]
    if aioice is not None:
        agents.append(("aioice-aioice", ["--impl", "aioice"]))
    cases = [("lab eim/eim", "lan1a", "eim2l"), ("lab sym/sym (relay)", "sym1l", "sym2l")]
    print(HEADER)
    print("-" * len(HEADER))
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp) / "lab")
        try:
            ice_lab = build_ice_lab(lab, Path(tmp))
            try:
                for case, a, b in cases:
                    for name, args in agents:
                        times: list[Times] = []
                        for i in range(runs):
                            try:
                                r = run_pair(ice_lab, f"bench {case} {name} {i}", a, b, 1,
                                             extra_args=args)  # fmt: skip
                            except AssertionError as exc:
                                logging.getLogger("bench").warning("run failed: %r", exc)
                                times.append(_FAILED)
                                continue
                            both = max(r.a["connect_time"], r.b["connect_time"])
                            times.append((both, float("nan")))
                        print(f"{case:26} {name:30} {_fmt(times)}", flush=True)
            finally:
                ice_lab.coturn.stop()
        finally:
            lab.cleanup()


def main_virtual(runs: int) -> None:
    """Connect times on the simulated network (virtual ms) and CPU time per connection."""
    import random

    from ice.agent import Agent
    from tests.unit.test_ice_sim import Nat, Network, connect, first

    def agent(controlling: bool, seed: int, ta: float) -> Agent:
        return Agent(controlling, ta=ta, rng=random.Random(seed), tie_breaker=seed + 1)

    # name, (nat a, nat b) as (mapping, filtering) or None for a public host, relays, delay
    cases: list[tuple[str, tuple[str, str] | None, tuple[str, str] | None, bool, float, float]] = [
        ("public host/host, RTT 50 ms", None, None, False, 0.025, 0.0),
        ("eim/eim, RTT 40 ms", ("eim", "port"), ("eim", "port"), True, 0.02, 0.0),
        (
            "sym/sym via relay, RTT 40 ms",
            ("symmetric", "port"),
            ("symmetric", "port"),
            True,
            0.02,
            0.0,
        ),
        ("eim/eim, RTT 40 ms, 10% loss", ("eim", "port"), ("eim", "port"), True, 0.02, 0.1),
    ]
    header = f"{'case (virtual clock)':34} {'Ta':>5} {'median ms':>10} {'max ms':>8} {'cpu ms':>7}"
    print(header)
    print("-" * len(header))
    for name, nat_a, nat_b, relay, delay, loss in cases:
        for ta in (0.05, 0.02):
            times, cpu = [], []
            for seed in range(runs):
                net = Network(delay=delay, loss=loss, seed=seed)
                na = None if nat_a is None else Nat("203.0.113.1", nat_a[0], nat_a[1])
                nb = None if nat_b is None else Nat("203.0.113.2", nat_b[0], nat_b[1])
                ip_a = "203.0.113.5" if na is None else "10.0.1.2"
                ip_b = "198.51.100.7" if nb is None else "10.0.2.2"
                a = net.add_host("a", agent(True, seed, ta), ip_a, nat=na, relay=relay)
                b = net.add_host("b", agent(False, seed + 100, ta), ip_b, nat=nb, relay=relay)
                t0 = time.process_time()
                connect(net, a, b)
                cpu.append(time.process_time() - t0)
                done = first(a, Completed)
                assert done is not None
                times.append(done[0])
            print(
                f"{name:34} {ta * 1000:4.0f}  {statistics.median(times) * 1000:9.1f}"
                f"  {max(times) * 1000:7.1f}  {statistics.median(cpu) * 1000:6.2f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--virtual", action="store_true", help="simulated network, virtual clock")
    parser.add_argument("--lab", action="store_true", help="real NATs in namespaces (root)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.virtual:
        main_virtual(args.runs)
    elif args.lab:
        main_lab(args.runs)
    else:
        asyncio.run(main_async(args.runs))


if __name__ == "__main__":
    main()
