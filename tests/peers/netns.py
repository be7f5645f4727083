"""Network namespaces for the lab tests: veth links, a bridge "internet", NAT routers, loss.

Everything a :class:`Lab` creates carries a unique prefix (``spt<pid>x<hex>-``), so labs of
concurrent test runs never collide, and :meth:`Lab.cleanup` (also run by the context manager
and the fixture, even when the test fails) deletes exactly what this lab made. Labs left
behind by a killed run (their creator PID is gone) are removed by the next :class:`Lab`.

Addresses: only the documentation ranges 203.0.113.0/24 ("public") and 198.51.100.0/24
("private" LANs behind the routers) are used, and only inside these namespaces.

NAT types (iptables in the router namespace, RFC 4787 terms):
- ``MASQUERADE``: endpoint-independent mapping (the source port is kept when possible).
- ``MASQUERADE --random-fully``: a new random port per 5-tuple: address/port-dependent
  mapping ("symmetric NAT").
The kernel has no netem: loss is an iptables ``statistic`` rule; delay is not available.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.process import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
ETC_NETNS = Path("/etc/netns")
_PREFIX_RE = re.compile(r"^spt(\d+)x[0-9a-f]{4}-")
LOSS_CHAIN = "SPT_LOSS"


class NetnsError(RuntimeError):
    pass


def netns_available() -> str | None:
    """None when namespaces can be built here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (Debian packages iproute2, iptables)"
    return None


def _run(argv: Sequence[str], check: bool = True, timeout: float = 30.0) -> str:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


@dataclass
class Namespace:
    """One network namespace of a lab."""

    name: str  # full name, with the lab prefix
    short: str
    lab: Lab
    processes: list[ManagedProcess] = field(default_factory=list)

    # ---- running things inside ----------------------------------------------------------
    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        res = subprocess.run(self.exec_argv(argv), capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise NetnsError(
                f"[{self.short}] {' '.join(argv)} failed ({res.returncode}): "
                f"{res.stderr.strip()}{res.stdout.strip()}"
            )
        return res

    def python(
        self, code: str, *args: str, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -c code args...`` inside (the repo root is on PYTHONPATH)."""
        argv = self.exec_argv(["env", f"PYTHONPATH={REPO_ROOT}", sys.executable, "-c", code])
        res = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise NetnsError(f"[{self.short}] python failed: {res.stderr.strip()}")
        return res

    def popen(
        self, argv: Sequence[str], name: str | None = None, env: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        """Start a long-running process inside; it is stopped by :meth:`Lab.cleanup`."""
        label = name or Path(argv[0]).name
        log = self.lab.workdir / f"{self.short}-{label}-{len(self.processes)}.log"
        full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **(env or {}))
        proc = ManagedProcess(f"{label}@{self.short}", self.exec_argv(argv), log, env=full_env)
        proc.start()
        self.processes.append(proc)
        return proc

    def popen_python(self, code: str, *args: str, name: str = "python") -> ManagedProcess:
        return self.popen([sys.executable, "-u", "-c", code, *args], name=name)

    # ---- configuration ------------------------------------------------------------------
    def ip(self, *args: str) -> str:
        return self.run(["ip", *args]).stdout

    def sysctl(self, key: str, value: str) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def iptables(self, *args: str, table: str = "filter") -> str:
        return self.run(["iptables", "-w", "-t", table, *args]).stdout

    def add_address(self, interface: str, cidr: str) -> None:
        self.ip("addr", "add", cidr, "dev", interface)

    def add_route(self, destination: str, via: str | None = None, dev: str | None = None) -> None:
        args = ["route", "replace", destination]
        if via:
            args += ["via", via]
        if dev:
            args += ["dev", dev]
        self.ip(*args)

    def write_etc(self, filename: str, text: str) -> Path:
        """A file that ``ip netns exec`` bind-mounts over /etc/FILENAME (hosts, resolv.conf)."""
        d = ETC_NETNS / self.name
        d.mkdir(parents=True, exist_ok=True)
        path = d / filename
        path.write_text(text)
        return path

    def set_hosts(self, entries: Mapping[str, str]) -> Path:
        """/etc/hosts inside this namespace: {name: address}."""
        lines = ["127.0.0.1 localhost"] + [f"{addr} {name}" for name, addr in entries.items()]
        return self.write_etc("hosts", "\n".join(lines) + "\n")

    def set_resolv(self, nameservers: Sequence[str]) -> Path:
        return self.write_etc("resolv.conf", "".join(f"nameserver {n}\n" for n in nameservers))

    # ---- packet loss (no netem here: iptables statistic) -------------------------------
    def set_loss(
        self, probability: float, protocol: str | None = "udp", interface: str | None = None
    ) -> None:
        """Drop a random ``probability`` of packets entering, leaving or crossing this
        namespace (INPUT, OUTPUT and FORWARD); 0 removes the loss, 1 drops everything."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be in [0, 1]")
        self._ensure_loss_chain()
        self.iptables("-F", LOSS_CHAIN)
        if probability == 0:
            return
        rule: list[str] = []
        if protocol:
            rule += ["-p", protocol]
        if interface:
            rule += ["-i", interface]
        if probability < 1:
            rule += ["-m", "statistic", "--mode", "random", "--probability", f"{probability:.6f}"]
        self.iptables("-A", LOSS_CHAIN, *rule, "-j", "DROP")

    def _ensure_loss_chain(self) -> None:
        if self.run(["iptables", "-w", "-L", LOSS_CHAIN, "-n"], check=False).returncode == 0:
            return
        self.iptables("-N", LOSS_CHAIN)
        for chain in ("INPUT", "OUTPUT", "FORWARD"):
            self.iptables("-I", chain, "1", "-j", LOSS_CHAIN)

    def dropped_packets(self) -> int:
        """Packets dropped so far by the loss rule."""
        out = self.iptables("-L", LOSS_CHAIN, "-n", "-v", "-x")
        total = 0
        for line in out.splitlines()[2:]:
            fields = line.split()
            if fields and fields[0].isdigit():
                total += int(fields[0])
        return total

    def stop_processes(self) -> None:
        for proc in self.processes:
            proc.stop(timeout=3.0)


@dataclass(frozen=True)
class Link:
    """A veth pair between two namespaces."""

    a: Namespace
    a_if: str
    b: Namespace | None
    b_if: str


class Lab:
    """A set of namespaces built by one test; delete everything with :meth:`cleanup`."""

    def __init__(self, workdir: Path) -> None:
        reason = netns_available()
        if reason:
            raise NetnsError(reason)
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = f"spt{os.getpid()}x{secrets.token_hex(2)}-"
        self.namespaces: dict[str, Namespace] = {}
        self._veth_count = 0
        remove_stale_labs()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __getitem__(self, short: str) -> Namespace:
        return self.namespaces[short]

    def namespace(self, short: str, ipv6: bool = False) -> Namespace:
        """Create namespace ``short`` with loopback up; IPv6 stays off unless ``ipv6`` (so
        only the IPv4 paths the test builds exist)."""
        if short in self.namespaces:
            raise NetnsError(f"namespace {short} exists")
        name = self.prefix + short
        _run(["ip", "netns", "add", name])
        ns = Namespace(name, short, self)
        self.namespaces[short] = ns
        ns.ip("link", "set", "lo", "up")
        if not ipv6:
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
        return ns

    def link(
        self,
        a: Namespace,
        b: Namespace,
        a_cidr: str | None = None,
        b_cidr: str | None = None,
        a_if: str | None = None,
        b_if: str | None = None,
    ) -> Link:
        """A veth pair from ``a`` to ``b``, both ends up, with optional addresses."""
        self._veth_count += 1
        a_if = a_if or f"v{self._veth_count}{b.short[:8]}"
        b_if = b_if or f"v{self._veth_count}{a.short[:8]}"
        # created directly inside the two namespaces: nothing appears in the host's
        _run(["ip", "link", "add", a_if, "netns", a.name, "type", "veth",
              "peer", "name", b_if, "netns", b.name])  # fmt: skip
        for ns, ifname, cidr in ((a, a_if, a_cidr), (b, b_if, b_cidr)):
            if cidr:
                ns.add_address(ifname, cidr)
            ns.ip("link", "set", ifname, "up")
        return Link(a, a_if, b, b_if)

    def bridge(self, ns: Namespace, name: str = "br0", cidrs: Sequence[str] = ()) -> str:
        """A Linux bridge inside ``ns`` (an L2 segment for several links), with addresses."""
        ns.ip("link", "add", name, "type", "bridge")
        ns.ip("link", "set", name, "up")
        for cidr in cidrs:
            ns.add_address(name, cidr)
        return name

    def attach_to_bridge(self, ns: Namespace, interface: str, bridge: str = "br0") -> None:
        ns.ip("link", "set", interface, "master", bridge)

    def dead_end_default_route(
        self, ns: Namespace, cidr: str = "203.0.113.253/30", gateway: str = "203.0.113.254"
    ) -> Namespace:
        """Route everything ``ns`` has no route for into a sink namespace that drops it.

        Without it, sending to an unroutable address fails at once with ENETUNREACH
        (coturn, for one, then ends the whole allocation, not just that permission). The
        sink owns ``gateway`` (answers ARP), does not forward, so packets silently vanish.
        (This kernel has no dummy interfaces, hence a namespace.)"""
        sink = self.namespace(f"{ns.short}-sink")
        prefix = cidr.split("/")[1]
        self.link(ns, sink, cidr, f"{gateway}/{prefix}", "deadend0", "sink0")
        ns.add_route("default", via=gateway)
        return sink

    def nat_router(
        self, router: Namespace, wan_if: str, symmetric: bool = False, lan_cidr: str | None = None
    ) -> None:
        """Forwarding + source NAT out of ``wan_if`` (MASQUERADE, ``--random-fully`` when
        ``symmetric``). Only new flows from the LAN side get out; replies come back in."""
        router.sysctl("net.ipv4.ip_forward", "1")
        rule = ["-A", "POSTROUTING", "-o", wan_if]
        if lan_cidr:
            rule += ["-s", lan_cidr]
        rule += ["-j", "MASQUERADE"]
        if symmetric:
            rule.append("--random-fully")
        router.iptables(*rule, table="nat")
        # like a home router: nothing unsolicited from the WAN side reaches the LAN
        router.iptables("-A", "FORWARD", "-i", wan_if, "-m", "conntrack", "--ctstate",
                        "ESTABLISHED,RELATED", "-j", "ACCEPT")  # fmt: skip
        router.iptables("-A", "FORWARD", "-i", wan_if, "-j", "DROP")
        # ... nor the router itself: an early check that the router accepted would leave a
        # conntrack entry behind, and MASQUERADE would then give the LAN's flow another port
        router.iptables("-A", "INPUT", "-i", wan_if, "-m", "conntrack", "--ctstate", "NEW",
                        "-j", "DROP")  # fmt: skip

    def cleanup(self) -> None:
        """Stop processes started in the namespaces, delete the namespaces and /etc/netns."""
        for ns in self.namespaces.values():
            with contextlib.suppress(Exception):
                ns.stop_processes()
        for ns in list(self.namespaces.values()):
            _delete_namespace(ns.name)
        self.namespaces.clear()


def _delete_namespace(name: str) -> None:
    # anything still running inside one of our namespaces was started by this lab
    pids = _run(["ip", "netns", "pids", name], check=False).split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)
    _run(["ip", "netns", "del", name], check=False)
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)


def remove_stale_labs() -> list[str]:
    """Delete namespaces of labs whose creating process no longer exists."""
    removed = []
    for line in _run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        m = _PREFIX_RE.match(name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _delete_namespace(name)
            removed.append(name)
    return removed


# ---- the standard topology ---------------------------------------------------------------


@dataclass
class Site:
    """A laptop behind its own NAT router."""

    laptop: Namespace
    router: Namespace
    laptop_ip: str  # private, 198.51.100.x
    router_lan_ip: str
    router_wan_ip: str  # public, 203.0.113.x: what the internet sees
    symmetric: bool


@dataclass
class NatLab:
    """``public``: the internet, a bridge 203.0.113.0/24 with the servers' addresses
    (``server_ip``, ``server_ip2`` for RFC 5780) and a dead-end default route (the
    addresses 203.0.113.252/30 belong to it);
    ``sites[i]``: laptop i behind router i."""

    lab: Lab
    public: Namespace
    server_ip: str
    server_ip2: str
    sites: list[Site]


def build_nat_lab(lab: Lab, symmetric: Sequence[bool] = (False, False)) -> NatLab:
    """The lab topology: one public net and one NATed laptop per entry of ``symmetric``."""
    public = lab.namespace("public")
    server_ip, server_ip2 = "203.0.113.1", "203.0.113.2"
    bridge = lab.bridge(public, "br0", [f"{server_ip}/24", f"{server_ip2}/24"])
    lab.dead_end_default_route(public)
    sites = []
    for i, sym in enumerate(symmetric):
        lan = ipaddress.ip_network(f"198.51.100.{i * 64}/26")
        router_lan_ip, laptop_ip = str(lan[1]), str(lan[10])
        router_wan_ip = f"203.0.113.{101 + i}"
        router = lab.namespace(f"router{i + 1}")
        laptop = lab.namespace(f"laptop{i + 1}")
        wan = lab.link(router, public, f"{router_wan_ip}/24", None, "wan0", f"r{i + 1}")
        lab.attach_to_bridge(public, wan.b_if, bridge)
        lab.link(laptop, router, f"{laptop_ip}/26", f"{router_lan_ip}/26", "eth0", "lan0")
        laptop.add_route("default", via=router_lan_ip)
        lab.nat_router(router, "wan0", symmetric=sym, lan_cidr=str(lan))
        sites.append(Site(laptop, router, laptop_ip, router_lan_ip, router_wan_ip, sym))
    return NatLab(lab, public, server_ip, server_ip2, sites)
