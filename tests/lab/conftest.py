"""The ICE lab: real NAT routers in network namespaces, coturn on the "public" net, and
laptops that each run one of our agents (:mod:`tests.lab.ice_node`).

Topology (built once for tests/lab by :func:`ice_lab`; documentation addresses only, and only
inside the namespaces)::

                   public: bridge 203.0.113.0/24, coturn on .1:3478 and .2:3479
                   (STUN + TURN, RFC 5780), dead-end default route (see below)
        ┌─────────────┬──────────┴──┬──────────────┬─────────────┐
     eim1 .101     eim2 .102     sym1 .103      sym2 .104     pub .50 (no NAT)
   MASQUERADE    MASQUERADE   --random-fully  --random-fully
   LAN bridge    .64/26        .128/26         .192/26
   .0/26: lan1a .10 + lan1b .11 (same LAN)
                 eim2 laptop  sym1 laptop     sym2 laptop

Every router is a NAT "home router": MASQUERADE (endpoint-independent mapping) or
MASQUERADE --random-fully (a new port per destination: symmetric); conntrack lets in only
replies from the exact address and port a flow went to (address-and-port-dependent
filtering); unsolicited packets to the router itself are dropped (accepted, they leave a
conntrack entry that makes MASQUERADE change the port of the laptop's later flow to the same
peer, and hole punching fails), and its default route is a blackhole, as an ISP drops packets
to private addresses.  The public net's default route goes into a dead-end link: coturn ends
a whole allocation when relaying to an unroutable (private) address fails with ENETUNREACH.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from tests.peers.coturn import Coturn
from tests.peers.netns import REPO_ROOT, Lab, Namespace, netns_available

SERVER_IP, SERVER_IP2 = "203.0.113.1", "203.0.113.2"
PUBLIC_LAPTOP_IP = "203.0.113.50"
TURN_USER = "alice"


@dataclass
class Laptop:
    """Where one agent runs: its namespace, its address and what the internet sees of it."""

    name: str
    ns: Namespace
    ip: str
    public_ip: str  # the router's WAN address (the laptop's own on the public net)
    router: Namespace | None
    nat: str  # "eim", "sym" or "none"


@dataclass
class IceLab:
    lab: Lab
    public: Namespace
    coturn: Coturn
    laptops: dict[str, Laptop]
    routers: dict[str, Namespace]
    times: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __getitem__(self, name: str) -> Laptop:
        return self.laptops[name]


# ---- building -------------------------------------------------------------------------------


def _router(
    lab: Lab,
    public: Namespace,
    name: str,
    wan_ip: str,
    lan_prefix: str,
    symmetric: bool,
    laptops: Sequence[tuple[str, int]],
) -> list[Laptop]:
    """A NAT router on the public bridge with a LAN bridge and ``laptops`` (name, host
    number in the /26) on it."""
    router = lab.namespace(name)
    wan = lab.link(router, public, f"{wan_ip}/24", None, "wan0", f"w{name}"[:15])
    lab.attach_to_bridge(public, wan.b_if, "br0")
    lan_cidr = f"{lan_prefix}/26"
    gateway = _host(lan_prefix, 1)
    lab.bridge(router, "lan0", [f"{gateway}/26"])
    result = []
    for laptop_name, host in laptops:
        ns = lab.namespace(laptop_name)
        ip = _host(lan_prefix, host)
        link = lab.link(ns, router, f"{ip}/26", None, "eth0", f"p{laptop_name}"[:15])
        lab.attach_to_bridge(router, link.b_if, "lan0")
        ns.add_route("default", via=gateway)
        result.append(Laptop(laptop_name, ns, ip, wan_ip, router, "sym" if symmetric else "eim"))
    lab.nat_router(router, "wan0", symmetric=symmetric, lan_cidr=lan_cidr)
    router.iptables(
        "-A", "INPUT", "-i", "wan0", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"
    )
    router.ip("route", "add", "blackhole", "default")
    return result


def _host(prefix: str, n: int) -> str:
    a, b, c, d = (int(x) for x in prefix.split("."))
    return f"{a}.{b}.{c}.{d + n}"


def build_ice_lab(lab: Lab, workdir: Path) -> IceLab:
    public = lab.namespace("public")
    lab.bridge(public, "br0", [f"{SERVER_IP}/24", f"{SERVER_IP2}/24"])
    lab.dead_end_default_route(public)
    laptops: dict[str, Laptop] = {}
    routers: dict[str, Namespace] = {}
    plan = [
        ("eim1", "203.0.113.101", "198.51.100.0", False, [("lan1a", 10), ("lan1b", 11)]),
        ("eim2", "203.0.113.102", "198.51.100.64", False, [("eim2l", 10)]),
        ("sym1", "203.0.113.103", "198.51.100.128", True, [("sym1l", 10)]),
        ("sym2", "203.0.113.104", "198.51.100.192", True, [("sym2l", 10)]),
    ]
    for name, wan_ip, prefix, symmetric, hosts in plan:
        for laptop in _router(lab, public, name, wan_ip, prefix, symmetric, hosts):
            laptops[laptop.name] = laptop
        routers[name] = lab[name]
    pub = lab.namespace("pub")
    link = lab.link(pub, public, f"{PUBLIC_LAPTOP_IP}/24", None, "eth0", "wpub")
    lab.attach_to_bridge(public, link.b_if, "br0")
    laptops["pub"] = Laptop("pub", pub, PUBLIC_LAPTOP_IP, PUBLIC_LAPTOP_IP, None, "none")
    for laptop in laptops.values():
        laptop.ns.set_hosts({})
        laptop.ns.set_resolv([SERVER_IP])
    coturn = Coturn(
        workdir / "coturn",
        host=SERVER_IP,
        alt_host=SERVER_IP2,
        netns=public.name,
        tls=False,
        allow_loopback_peers=False,
    )
    coturn.start()
    return IceLab(lab, public, coturn, laptops, routers)


@pytest.fixture(scope="package")
def ice_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IceLab]:
    """The whole lab (root, iproute2, iptables, coturn), shared by the tests of tests/lab;
    deleted after the last of them,
    failures included: processes by PID, namespaces and /etc/netns by the names it made."""
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    if shutil.which("turnserver") is None:
        pytest.skip("turnserver not installed (Debian package coturn)")
    workdir = tmp_path_factory.mktemp("ice-lab")
    lab = Lab(workdir / "lab")
    try:
        built = build_ice_lab(lab, workdir)
        try:
            yield built
        finally:
            built.coturn.stop()
    finally:
        lab.cleanup()


_ALL_TIMES: list[tuple[str, dict[str, Any]]] = []
"""(case, times) of every pair run in this session, for the terminal summary."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ALL_TIMES:
        return
    terminalreporter.section("ICE lab connect times")
    for case, t in _ALL_TIMES:
        terminalreporter.write_line(
            f"{case:32} gather {t['gather']:.2f}s/{t['gather_b']:.2f}s  "
            f"connect (agent) {_fmt(t['connect'])}/{_fmt(t['connect_b'])}  "
            f"wall {t['wall']:.2f}s  pair {t['pair']}"
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


# ---- the nodes ------------------------------------------------------------------------------


class NodeError(AssertionError):
    pass


class IceNode:
    """A :mod:`tests.lab.ice_node` process in a laptop's namespace, steered in JSON lines."""

    def __init__(self, laptop: Laptop, role: str, args: Sequence[str], log: Path) -> None:
        self.laptop = laptop
        self.role = role
        self.log_path = log
        argv = laptop.ns.exec_argv(
            ["env", f"PYTHONPATH={REPO_ROOT}", sys.executable, "-u", "-m", "tests.lab.ice_node"]
        )
        argv += ["--role", role, *args]
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            try:
                self._lines.put(json.loads(raw))
            except ValueError:
                self._lines.put({"event": "garbage", "line": raw.decode(errors="replace")})
        self._lines.put(None)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(command) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise NodeError(f"{self.laptop.name} exited\n{self.log_tail()}") from None

    def expect(self, *events: str, timeout: float = 20.0) -> dict[str, Any]:
        """The next report, which must be one of ``events``."""
        try:
            msg = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise NodeError(
                f"{self.laptop.name}: no {'/'.join(events)} within {timeout:.0f}s\n"
                f"{self.log_tail()}"
            ) from None
        if msg is None:
            raise NodeError(
                f"{self.laptop.name} exited ({self.proc.poll()}) waiting for "
                f"{'/'.join(events)}\n{self.log_tail()}"
            )
        if msg.get("event") not in events:
            raise NodeError(f"{self.laptop.name}: expected {events}, got {msg}\n{self.log_tail()}")
        return msg

    def stop(self) -> None:
        """Close politely (TURN allocations released), else kill our process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.send(cmd="close")
                self.expect("closed", timeout=5)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(3)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()


@dataclass
class PairResult:
    a: dict[str, Any]  # "connected" report of the controlling side
    b: dict[str, Any]
    received_a: list[str]  # what a received from b
    received_b: list[str]
    candidates_a: list[str]
    candidates_b: list[str]
    ufrags: tuple[str, str] = ("", "")
    stopped: tuple[dict[str, Any], dict[str, Any]] = ({}, {})  # incl. the final pair

    def pair(self, side: str = "a") -> tuple[str, str]:
        r = self.a if side == "a" else self.b
        return r["local"]["type"], r["remote"]["type"]


def node_args(ice_lab: IceLab, relay_only: bool = False, turn: bool = True) -> list[str]:
    server = ice_lab.coturn.server()
    args = ["--stun", server]
    if turn:
        args += ["--turn", server]
        args += ["--user", TURN_USER, "--password", ice_lab.coturn.users[TURN_USER]]
    if relay_only:
        args.append("--relay-only")
    return args


@dataclass
class Session:
    """Two connected nodes (``a`` controlling) and what they reported so far."""

    a: IceNode
    b: IceNode
    result: PairResult


def run_pair(
    ice_lab: IceLab, case: str, a: str, b: str, want: int = 10, **options: Any
) -> PairResult:
    """Laptop ``a`` (controlling) and ``b`` (controlled) gather, swap candidates out of band,
    connect, then send tagged packets both ways until each got ``want`` distinct ones; the
    nodes are closed before it returns. ``options``: those of :func:`pair_session`."""
    with pair_session(ice_lab, case, a, b, want, **options) as session:
        return session.result


@contextlib.contextmanager
def pair_session(
    ice_lab: IceLab,
    case: str,
    a: str,
    b: str,
    want: int = 10,
    timeout: float = 30.0,
    relay_only: bool = False,
    extra_args: Sequence[str] = (),
    extra_args_b: Sequence[str] | None = None,
    turn: bool = True,
    expect_failure: bool = False,
) -> Iterator[Session]:
    """:func:`run_pair`, keeping the two nodes running (connected, data exchanged) for the
    ``with`` block; they are closed (and killed if need be) when it ends.

    ``extra_args`` go to both nodes, or to ``a`` only when ``extra_args_b`` is given.
    ``turn=False``: STUN only. ``relay_only``: relayed candidates only. ``expect_failure``: ICE
    must fail on both sides (the result then holds the two ``failed`` reports and no data)."""
    logdir = ice_lab.lab.workdir / "nodes"
    base = node_args(ice_lab, relay_only, turn)
    args = [*base, *extra_args]
    args_b = args if extra_args_b is None else [*base, *extra_args_b]
    started = time.monotonic()
    stem = "".join(ch if ch.isalnum() else "_" for ch in case)
    na = IceNode(ice_lab[a], "controlling", args, logdir / f"{stem}-{a}.log")
    nb: IceNode | None = None
    try:
        nb = IceNode(ice_lab[b], "controlled", args_b, logdir / f"{stem}-{b}.log")
        ca = na.expect("candidates", timeout=timeout)
        cb = nb.expect("candidates", timeout=timeout)
        signalled = time.monotonic()
        na.send(cmd="remote", ufrag=cb["ufrag"], pwd=cb["pwd"], candidates=cb["candidates"])
        nb.send(cmd="remote", ufrag=ca["ufrag"], pwd=ca["pwd"], candidates=ca["candidates"])
        ra = na.expect("connected", "failed", timeout=timeout)
        rb = nb.expect("connected", "failed", timeout=timeout)
        wall = time.monotonic() - signalled
        if expect_failure:
            for node, r in ((na, ra), (nb, rb)):
                if r["event"] != "failed":
                    raise NodeError(f"{node.laptop.name} ({case}): connected, expected failure {r}")
            print(f"[ice-lab] {case}: failed as expected after {wall:.2f}s: {ra['reason']}")
            yield Session(
                na,
                nb,
                PairResult(
                    ra, rb, [], [], ca["candidates"], cb["candidates"], (ca["ufrag"], cb["ufrag"])
                ),
            )
            return
        for node, r in ((na, ra), (nb, rb)):
            if r["event"] == "failed":
                raise NodeError(
                    f"{node.laptop.name} ({case}): ICE failed: {r['reason']}\n"
                    f"candidates a={ca['candidates']}\nb={cb['candidates']}\n"
                    f"events: {r.get('events')}\n{node.log_tail()}"
                )
        na.send(cmd="exchange", tag="from-a", want=want)
        nb.send(cmd="exchange", tag="from-b", want=want)
        got_a = na.expect("received", timeout=timeout)["messages"]
        got_b = nb.expect("received", timeout=timeout)["messages"]
        na.send(cmd="stop")
        nb.send(cmd="stop")
        stopped = (na.expect("stopped"), nb.expect("stopped"))
        ufrags = (ca["ufrag"], cb["ufrag"])
        result = PairResult(
            ra, rb, got_a, got_b, ca["candidates"], cb["candidates"], ufrags, stopped
        )
        times = {
            "gather": ca["gather_time"],
            "gather_b": cb["gather_time"],
            "connect": ra.get("connect_time"),
            "connect_b": rb.get("connect_time"),
            "wall": wall,
            "total": time.monotonic() - started,
            "pair": f"{'/'.join(result.pair('a'))} | {'/'.join(result.pair('b'))}",
        }
        ice_lab.times.append((case, times))
        _ALL_TIMES.append((case, times))
        print(f"[ice-lab] {case}: {times}")
        yield Session(na, nb, result)
    finally:
        na.stop()
        if nb is not None:
            nb.stop()
