"""dnsmasq as a tiny authoritative DNS server for RFC 3263 tests (NAPTR, SRV, A records).

Runs ``dnsmasq --keep-in-foreground`` with no config file, no upstream servers, no
/etc/hosts, on a chosen address and port (on loopback any free port; inside a network
namespace port 53, so that the namespace's /etc/resolv.conf can point at it).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.peers.ports import free_port
from tests.peers.probe import probe_in_netns
from tests.peers.process import PeerError, ProcessPeer, in_netns


def dnsmasq_binary() -> str | None:
    return shutil.which("dnsmasq")


@dataclass(frozen=True)
class Srv:
    name: str  # e.g. _sip._udp.example.org
    target: str
    port: int
    priority: int = 0
    weight: int = 0


@dataclass(frozen=True)
class Naptr:
    name: str  # e.g. example.org
    order: int
    preference: int
    flags: str  # "s"
    service: str  # "SIP+D2U", "SIP+D2T", "SIPS+D2T"
    replacement: str  # e.g. _sip._udp.example.org
    regexp: str = ""


@dataclass
class DnsRecords:
    hosts: dict[str, list[str]] = field(default_factory=dict)  # name -> IPv4 addresses
    srv: list[Srv] = field(default_factory=list)
    naptr: list[Naptr] = field(default_factory=list)

    def add_sip_domain(
        self,
        domain: str,
        address: str,
        udp_port: int = 5060,
        tcp_port: int | None = None,
        tls_port: int | None = 5061,
        server: str | None = None,
        naptr: bool = True,
    ) -> None:
        """NAPTR (SIP+D2U, SIP+D2T, SIPS+D2T) -> SRV -> A records for a SIP domain, the
        RFC 3263 chain; ``tcp_port`` defaults to ``udp_port``; None leaves a transport out."""
        server = server or f"sip.{domain}"
        self.hosts.setdefault(server, []).append(address)
        tcp_port = udp_port if tcp_port is None else tcp_port
        entries = [("SIP+D2U", "_sip._udp", udp_port), ("SIP+D2T", "_sip._tcp", tcp_port)]
        if tls_port is not None:
            entries.append(("SIPS+D2T", "_sips._tcp", tls_port))
        for order, (service, prefix, port) in enumerate(entries):
            self.srv.append(Srv(f"{prefix}.{domain}", server, port))
            if naptr:
                self.naptr.append(Naptr(domain, 10 + order * 10, 10, "s", service,
                                        f"{prefix}.{domain}"))  # fmt: skip


class Dnsmasq(ProcessPeer):
    label = "dnsmasq"

    def __init__(
        self,
        workdir: Path,
        records: DnsRecords | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        netns: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.records = records or DnsRecords()
        self.host = host
        self.netns = netns
        self.port = port or (53 if netns else free_port(host, udp=True, tcp=True))
        self.extra_args = list(extra_args)
        self.log_path = workdir / "dnsmasq.log"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def argv(self) -> list[str]:
        binary = dnsmasq_binary()
        if binary is None:
            raise PeerError("dnsmasq not installed")
        argv = [binary, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv"]
        argv += ["--no-hosts", "--no-poll", "--pid-file=", "--user=root", "--group=root"]
        argv += [f"--listen-address={self.host}", "--bind-interfaces", f"--port={self.port}"]
        argv += ["--log-queries", "--log-facility=-", "--cache-size=0", "--no-negcache"]
        names = set(self.records.hosts) | {s.name for s in self.records.srv}
        names |= {n.name for n in self.records.naptr}
        for zone in sorted({_zone(n) for n in names}):
            argv.append(f"--local=/{zone}/")  # answer from here, never forward
        for name, addresses in self.records.hosts.items():
            argv.append(f"--host-record={name},{','.join(addresses)}")
        for s in self.records.srv:
            argv.append(f"--srv-host={s.name},{s.target},{s.port},{s.priority},{s.weight}")
        for n in self.records.naptr:
            argv.append(
                f"--naptr-record={n.name},{n.order},{n.preference},{n.flags},{n.service},"
                f"{n.regexp},{n.replacement}"
            )
        argv += self.extra_args
        return in_netns(self.netns, argv)

    def start(self, timeout: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        probe_name = next(iter(self.records.hosts), "probe.invalid")
        self._launch(
            "dnsmasq",
            self.argv(),
            lambda: probe_in_netns(self.netns, "dns", self.host, self.port, probe_name),
            timeout,
            "DNS query answered",
        )

    def resolver(self) -> Any:
        """A dnspython Resolver that asks only this server (not for one in a namespace:
        the host must never send to the lab's addresses)."""
        import dns.resolver

        if self.netns:
            raise PeerError("query a namespaced dnsmasq from inside the namespace")

        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [self.host]
        r.port = self.port
        r.lifetime = 3.0
        return r


def _zone(name: str) -> str:
    """The zone a record lives in: the last two labels (example.org for _sip._udp.example.org)."""
    labels = name.rstrip(".").split(".")
    return ".".join(labels[-2:])


def records_from_mapping(hosts: Mapping[str, str]) -> DnsRecords:
    return DnsRecords(hosts={k: [v] for k, v in hosts.items()})
