"""Benchmark: ICE connect time on loopback, ours vs aioice, in the same run.

Run: ``.venv/bin/python -m bench.ice_connect [--runs 20] [--case loopback ...]`` (``--case``:
only those cases - ``loopback`` (1 host each), ``black-holes``, ``relay``, ``gathering`` -
measured the same way; repeat it for several).

The clock starts when both agents hold each other's parameters and candidates (gathering is
done and not timed).  Three times per run: ``connect()`` - until our
``IceConnection.connect()`` / aioice's ``Connection.connect()`` returned on both sides;
``nominated`` - until both agents themselves had a nominated pair (ours: the ``Completed``
event, i.e. the controlling side's USE-CANDIDATE check answered and the controlled side's
USE-CANDIDATE request arrived on a valid pair; aioice: its check list complete; aioice's
``connect()`` polls every 20 ms, so there the two differ by up to 20 ms); ``usable`` - until
both of our connections could carry data on a valid pair (``IceConnection.usable()``,
RFC 8445 §12.1: data may flow on a valid pair before one is selected; with an agent that
lacks it, its first successful check), when media can start.  In the lab, ``usable`` shows
when the nodes report ``valid_time``.  One datagram each way then checks that the pair
really carries data (not timed).  Median, min and max of ``connect()``, medians of the
others, over ``--runs`` runs per case.

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

Gathering (after the connection cases): from opening the sockets to gathering complete, with
the coturn on 127.0.0.1 serving STUN and TURN (the relayed candidate needs the 401 round trip),
for one component (rtcp-mux) and two, and the time to take a ready set from an
:class:`ice.pool.CandidatePool` instead (what a call pays with a pool).

``--lab`` runs eim/eim and sym/sym through the real NAT routers of ``tests/lab`` (network
namespaces, root, coturn): each node reports its own connect time (ours: agent start to
``Completed``; aioice: around ``connect()``, in whole ms), the slower side counts; then
each case's gathering time (STUN + TURN through the NAT, one component) as the nodes report it.

``--virtual`` runs our sans-I/O agents instead through the simulated network of
``tests/unit/test_ice_sim.py`` (NATs, relays, delay, loss) on a virtual clock: connect times
there are in virtual milliseconds (deterministic per seed), and the CPU time per connection
is measured for real.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # allow ``python bench/ice_connect.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ice.agent import AgentEvent, Completed, PairChecked
from ice.aio import IceConnection
from ice.candidate import Candidate, CandidateType
from ice.gather import AsyncGatherer, GatherConfig, TurnServer
from ice.pool import CandidatePool
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
    """When each agent itself had its nominated pair (before its ``connect()`` returns to
    the caller): our ``Completed`` event, aioice's check list completing (every component has
    a nominated pair; aioice's ``connect()`` only notices it at its next 20 ms poll).  And
    ``valid``: when each of our connections became usable on a valid pair
    (``IceConnection.usable()``, RFC 8445 §12.1: data may flow on a valid pair before one is
    selected; where the agent lacks it: its first successful check, ``PairChecked``)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.valid: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def watch(self, conn: Any, side: str) -> None:
        if isinstance(conn, IceConnection):
            self._watch_ours(conn, side)
        else:
            self._watch_aioice(conn, side)

    def started(self, conn: Any, side: str) -> None:
        """The checks are about to start (``usable()`` needs the connection gathered)."""
        usable = getattr(conn, "usable", None) if isinstance(conn, IceConnection) else None
        if usable is None:
            return

        async def wait() -> None:
            with contextlib.suppress(Exception):
                await usable(TIMEOUT)
                self.valid.setdefault(side, time.perf_counter())

        self._tasks.append(asyncio.ensure_future(wait()))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    def _watch_ours(self, conn: IceConnection, side: str) -> None:
        handler = conn._on_agent_event
        has_usable = hasattr(conn, "usable")

        def on_event(event: AgentEvent) -> None:
            if isinstance(event, Completed):
                self.at.setdefault(side, time.perf_counter())
            elif isinstance(event, PairChecked) and event.succeeded and not has_usable:
                self.valid.setdefault(side, time.perf_counter())
            handler(event)

        conn._on_agent_event = on_event  # type: ignore[method-assign]

    def _watch_aioice(self, conn: Any, side: str) -> None:
        maybe_complete = conn._check_list_maybe_complete

        def wrapped() -> bool:
            done = bool(maybe_complete())
            if done:
                self.at.setdefault(side, time.perf_counter())
            return done

        conn._check_list_maybe_complete = wrapped

    def since(self, t0: float) -> tuple[float, float]:
        """(usable, valid) seconds after ``t0``; nan unless both sides reported."""
        usable = max(self.at.values()) - t0 if len(self.at) == 2 else float("nan")
        valid = max(self.valid.values()) - t0 if len(self.valid) == 2 else float("nan")
        return usable, valid


Times = tuple[float, float, float]
"""(connect() returned on both sides, both agents nominated, both usable on a valid pair) s."""

_FAILED: Times = (float("nan"), float("nan"), float("nan"))


# -- one connection between two agents, ours or aioice on either side ------------------------


def _aioice_candidates(candidates: list[Candidate]) -> list[Any]:
    assert aioice is not None
    return [aioice.Candidate.from_sdp(format_candidate(c)) for c in candidates]


def _aioice_hosts(addresses: list[str]) -> None:
    assert aioice is not None
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(addresses)


async def _gather(conn: Any) -> None:
    if isinstance(conn, IceConnection):
        await conn.gather()
    else:
        await conn.gather_candidates()


async def _give(x: Any, y: Any, decoys: list[Candidate]) -> None:
    """Hand ``y``'s parameters and candidates (and the ``decoys``) to ``x``."""
    if isinstance(y, IceConnection):
        ufrag, pwd, candidates = y.local_ufrag, y.local_pwd, y.local_candidates
    else:
        ufrag, pwd = y.local_username, y.local_password
        candidates = [parse_candidate(c.to_sdp()) for c in y.local_candidates]
    if isinstance(x, IceConnection):
        x.set_remote(ufrag, pwd, candidates + decoys)
        return
    x.remote_username, x.remote_password = ufrag, pwd
    for c in _aioice_candidates(candidates + decoys):
        await x.add_remote_candidate(c)
    await x.add_remote_candidate(None)


async def _send(conn: Any, data: bytes) -> None:
    if isinstance(conn, IceConnection):
        assert conn.transport().send(data)
    else:
        await conn.send(data)


async def _recv(conn: Any) -> bytes:
    if isinstance(conn, IceConnection):
        return await asyncio.wait_for(conn.transport().recv(), 2)
    return bytes(await asyncio.wait_for(conn.recv(), 2))


async def _connect_pair(
    a: Any, b: Any, decoys: Sequence[Candidate] = (), relayed: bool = False
) -> Times:
    """Gather both, swap candidates, time the connection, check one datagram each way (and,
    with ``relayed``, that our agents' pairs go through the relay); closes both."""
    usable = _Usable()
    usable.watch(a, "a")
    usable.watch(b, "b")
    try:
        await asyncio.gather(_gather(a), _gather(b))
        await _give(a, b, list(decoys))
        await _give(b, a, list(decoys))
        usable.started(a, "a")
        usable.started(b, "b")
        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), TIMEOUT)
        elapsed = time.perf_counter() - t0
        if relayed:
            for conn in (a, b):
                assert not isinstance(conn, IceConnection) or conn.transport().relayed
        await _send(a, b"\x80ping")
        await _send(b, b"\x80pong")
        assert await _recv(b) == b"\x80ping"
        assert await _recv(a) == b"\x80pong"
        return (elapsed, *usable.since(t0))
    finally:
        usable.stop()
        await a.close()
        await b.close()


async def _ours_pair(
    addresses: list[str], decoys: list[Candidate], ta: float, floor: float | None = None
) -> Times:
    opts: dict[str, Any] = {"ta": ta}
    if floor is not None:
        opts["min_check_interval"] = floor
    a = IceConnection(True, addresses=addresses, agent_options=opts)
    b = IceConnection(False, addresses=addresses, agent_options=opts)
    return await _connect_pair(a, b, decoys)


async def _aioice_pair(addresses: list[str], decoys: list[Candidate]) -> Times:
    assert aioice is not None
    _aioice_hosts(addresses)
    a = aioice.Connection(ice_controlling=True, use_ipv6=False)
    b = aioice.Connection(ice_controlling=False, use_ipv6=False)
    return await _connect_pair(a, b, decoys)


async def _mixed_pair(addresses: list[str], decoys: list[Candidate]) -> Times:
    assert aioice is not None
    _aioice_hosts(addresses)
    a = IceConnection(True, addresses=addresses, agent_options={"ta": 0.02})
    b = aioice.Connection(ice_controlling=False, use_ipv6=False)
    return await _connect_pair(a, b, decoys)


async def _ours_relay_pair(turn: TurnServer, ta: float = 0.02) -> Times:
    cfg = GatherConfig(turn_servers=[turn], relay_only=True)
    opts = {"ta": ta}
    a = IceConnection(True, bind="127.0.0.1", gather=cfg, agent_options=opts)
    b = IceConnection(False, bind="127.0.0.1", gather=cfg, agent_options=opts)
    return await _connect_pair(a, b, relayed=True)


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
    return await _connect_pair(a, b, relayed=True)


async def _row(case: str, name: str, run: Callable[[], Awaitable[Times]], runs: int) -> None:
    """Run one case ``runs`` times and print its row (a failed run counts as such)."""
    times: list[Times] = []
    for _ in range(runs):
        try:
            times.append(await run())
        except (TimeoutError, AssertionError, OSError, ConnectionError) as exc:
            logging.getLogger("bench").warning("run failed: %r", exc)
            times.append(_FAILED)
    print(f"{case:26} {name:30} {_fmt(times)}", flush=True)


@contextlib.contextmanager
def _coturn() -> Iterator[Any]:
    """A coturn on 127.0.0.1 for the duration (None if ``turnserver`` is not installed)."""
    from tests.peers.coturn import Coturn, turnserver_binary

    if turnserver_binary() is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = Coturn(Path(tmp), alt_host=None, tls=False)
        server.start()
        try:
            yield server
        finally:
            server.stop()


async def _relay_rows(server: Any, runs: int) -> None:
    """Relayed candidates only, both sides, through the coturn on 127.0.0.1."""
    if server is None:
        print(f"{'relay only (coturn)':26} skipped: turnserver not installed")
        return
    turn = TurnServer(server.turn_address(), "alice", server.users["alice"])
    rows: list[tuple[str, Callable[[], Awaitable[Times]]]] = [
        ("ours (Ta 50 ms)", lambda: _ours_relay_pair(turn, 0.05)),
        ("ours (Ta 20 ms)", lambda: _ours_relay_pair(turn, 0.02)),
    ]
    if aioice is not None:
        rows.append(("aioice-aioice", lambda: _aioice_relay_pair(turn)))
    for name, run in rows:
        await _row("relay only (coturn)", name, run, runs)


# -- gathering ------------------------------------------------------------------------------


async def _gather_once(config: GatherConfig, addresses: list[str]) -> float:
    """Seconds from opening the sockets to gathering complete (the set is then released)."""
    g = AsyncGatherer(config, addresses=addresses)
    t0 = time.perf_counter()
    await g.start()
    await g.wait_complete(TIMEOUT)
    elapsed = time.perf_counter() - t0
    await g.close()
    return elapsed


async def _pool_take_once(pool: CandidatePool, components: int) -> float:
    """Seconds for a call to get a complete set from a ready pool (what replaces gathering)."""
    await pool.wait_ready(timeout=TIMEOUT)
    t0 = time.perf_counter()
    g = pool.take(components)
    assert g is not None and g.complete
    g.attach(on_event=lambda event: None, on_datagram=None, on_relayed=None)
    elapsed = time.perf_counter() - t0
    await g.close()
    return elapsed


GATHER_HEADER = f"{'gathering (STUN + TURN)':36} {'median ms':>10} {'min':>7} {'max':>7}"


def _gather_row(name: str, seconds: list[float]) -> None:
    ms = [t * 1000 for t in seconds if t == t]
    if not ms:
        print(f"{name:36} {'failed':>10}", flush=True)
        return
    print(f"{name:36} {statistics.median(ms):10.2f} {min(ms):7.2f} {max(ms):7.2f}", flush=True)


async def _gather_rows(server: Any, runs: int) -> None:
    """Gathering on 127.0.0.1 from the coturn (STUN and TURN on one address): complete sets
    for one component (rtcp-mux) and for two, and taking a set from a CandidatePool."""
    if server is None:
        print("gathering: skipped (turnserver not installed)")
        return
    user = "alice"
    cfg = GatherConfig(
        stun_servers=[server.stun_address],
        turn_servers=[TurnServer(server.turn_address(), user, server.users[user])],
    )
    loopback = ["127.0.0.1"]
    print(GATHER_HEADER)
    print("-" * len(GATHER_HEADER))
    for components in (1, 2):
        c = dataclasses.replace(cfg, components=components)
        times = []
        for _ in range(runs):
            # calls some time apart: the process-wide pacer (RFC 8445 §14.2) would hold
            # each gathering back behind the previous one's last transaction
            await asyncio.sleep(0.02)
            times.append(await _gather_once(c, loopback))
        _gather_row(f"loopback, {components} component(s)", times)
    pool = CandidatePool(dataclasses.replace(cfg, components=2), addresses=loopback)
    await pool.start()
    try:
        times = [await _pool_take_once(pool, 1) for _ in range(runs)]
    finally:
        await pool.close()
    _gather_row("loopback, CandidatePool.take()", times)


HEADER = (
    f"{'case':26} {'agents':30} {'connect() median':>16} {'min':>7} {'max':>7}"
    f" {'nominated med.':>14} {'usable median':>13} {'fail':>5}"
)


def _median_ms(values: list[float], width: int) -> str:
    ms = [v * 1000 for v in values if v == v]
    return f"{statistics.median(ms):{width}.1f}" if ms else f"{'-':>{width}}"


def _fmt(times: list[Times]) -> str:
    """connect() returned on both sides: median, min, max; both agents had their nominated
    pair: median; both connections usable on a valid pair: median (ms)."""
    ok = [t for t in times if t[0] == t[0]]
    if not ok:
        return f"{'failed':>16} {'':>7} {'':>7} {'':>14} {'':>13} {len(times):>5}"
    failed = len(times) - len(ok)
    connect = [t[0] * 1000 for t in ok]
    return (
        f"{statistics.median(connect):16.2f} {min(connect):7.2f} {max(connect):7.2f}"
        f" {_median_ms([t[1] for t in ok], 14)} {_median_ms([t[2] for t in ok], 13)}"
        f" {failed:>5}"
    )


CASES = ("loopback", "black-holes", "relay", "gathering")
"""``--case`` names: the connection cases, then gathering (all by default)."""


async def main_async(runs: int, only: Sequence[str] = CASES) -> None:
    cases: list[tuple[str, list[str], int]] = []
    if "loopback" in only:
        cases.append(("1 host each", ["127.0.0.1"], 0))
    if "black-holes" in only:
        cases.append(("4 hosts + 4 black holes", [f"127.0.0.{i}" for i in range(1, 5)], 4))
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
                await _row(case, name, lambda: run(addresses, decoys), runs)  # noqa: B023
        finally:
            for s in silent:
                s.close()
    if "relay" not in only and "gathering" not in only:
        print("* not RFC 8445 compliant (no 5 ms floor between transactions); reference only")
        return
    with _coturn() as server:
        if "relay" in only:
            await _relay_rows(server, runs)
        print("* not RFC 8445 compliant (no 5 ms floor between transactions); reference only")
        if "gathering" in only:
            print()
            await _gather_rows(server, runs)


def _lab_valid(r: Any) -> float:
    """Both nodes' first valid pair, if the nodes report it (``valid_time``)."""
    times = [r.a.get("valid_time"), r.b.get("valid_time")]
    return max(times) if None not in times else float("nan")


def _lab_gather(ice_lab: Any) -> float:
    """The slower node's gathering time (STUN + TURN) of the pair just run."""
    _, times = ice_lab.times[-1]
    return float(max(times["gather"], times["gather_b"]))


def _lab_gather_rows(ice_lab: Any, laptop: str, runs: int) -> None:
    """Gathering measured inside ``laptop``'s namespace by one process, ``runs`` times back
    to back (the nodes' own numbers also hold their start-up while the peer node starts)."""
    import json

    from tests.lab.conftest import TURN_USER

    node = ice_lab[laptop]
    server = ice_lab.coturn.server()
    code = "from bench.ice_connect import gather_node; gather_node()"
    args = [node.ip, server, TURN_USER, ice_lab.coturn.users[TURN_USER], str(runs)]
    result = node.ns.python(code, *args, timeout=120 + 5 * runs)
    for components, seconds in json.loads(result.stdout.strip().splitlines()[-1]).items():
        _gather_row(f"lab {laptop} ({node.nat}), {components} comp.", seconds)


def gather_node() -> None:
    """Run inside a lab namespace (:func:`_lab_gather_rows`): ``IP SERVER USER PASSWORD RUNS``
    on the command line; prints ``{components: [seconds, ...]}`` as JSON."""
    import json

    ip, server, user, password, runs = sys.argv[1:6]
    host, _, port = server.rpartition(":")
    address = (host, int(port))
    cfg = GatherConfig(stun_servers=[address], turn_servers=[TurnServer(address, user, password)])

    async def measure() -> dict[int, list[float]]:
        out: dict[int, list[float]] = {}
        for components in (1, 2):
            c = dataclasses.replace(cfg, components=components)
            for _ in range(int(runs)):
                await asyncio.sleep(0.02)  # calls some time apart (the process pacer)
                out.setdefault(components, []).append(await _gather_once(c, [ip]))
        return out

    print(json.dumps(asyncio.run(measure())))


def main_lab(runs: int) -> None:
    """eim/eim and sym/sym through the real NAT routers of ``tests/lab`` (network namespaces,
    root, coturn): ours and aioice in nodes on two laptops (``tests.lab.ice_node``).  Times
    are what each node reports from the moment it got the peer's candidates to its pair
    being usable (ours: agent start to ``Completed``; aioice: around ``connect()``, to the
    millisecond); the slower of the two sides counts."""
    import shutil

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
    gathered: dict[str, list[float]] = {}
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
                            times.append((both, float("nan"), _lab_valid(r)))
                            gathered.setdefault(case, []).append(_lab_gather(ice_lab))
                        print(f"{case:26} {name:30} {_fmt(times)}", flush=True)
                print()
                print(GATHER_HEADER)
                print("-" * len(GATHER_HEADER))
                for case, seconds in gathered.items():
                    _gather_row(f"{case} nodes, 1 comp.", seconds)
                for laptop in ("eim2l", "sym1l"):
                    _lab_gather_rows(ice_lab, laptop, runs)
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
    parser.add_argument(
        "--case",
        action="append",
        choices=CASES,
        help="run only this case (repeatable; default: all of them)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.virtual:
        main_virtual(args.runs)
    elif args.lab:
        main_lab(args.runs)
    else:
        asyncio.run(main_async(args.runs, args.case or CASES))


if __name__ == "__main__":
    main()
