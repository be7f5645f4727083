"""Locating SIP servers: RFC 3263 (NAPTR -> SRV -> A/AAAA) with RFC 2782 weighted selection.

:func:`locate` turns a SIP URI into an ordered list of :class:`Target` s (transport, host, ip,
port). The caller tries them in order and moves on to the next one when a target fails (a
transport error, a transaction timeout or a 503), which is what :func:`try_targets` does
(RFC 3263 §4.3).

DNS is reached through a :class:`DnsLookup`. The default :class:`SystemLookup` asks the system's
name servers for NAPTR and SRV records with dnspython's asyncio resolver, and resolves plain names
with ``loop.getaddrinfo`` so that ``/etc/hosts`` is honoured. Name servers can be injected (tests
run a local dnsmasq); then A/AAAA queries go to them too. Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from sip.uri import SipURI

__all__ = [
    "DEFAULT_PORTS",
    "AllTargetsFailed",
    "DnsLookup",
    "LocateError",
    "NaptrRecord",
    "SrvRecord",
    "SystemLookup",
    "Target",
    "TargetFailed",
    "is_ip_address",
    "locate",
    "order_srv",
    "try_targets",
]

logger = logging.getLogger("sip.locate")

TRANSPORTS: tuple[str, ...] = ("UDP", "TCP", "TLS")
DEFAULT_PORTS: dict[str, int] = {"UDP": 5060, "TCP": 5060, "TLS": 5061}

# RFC 3263 §4.1: NAPTR service fields for SIP, and the SRV prefix of each transport.
_NAPTR_SERVICES: dict[str, str] = {"SIP+D2U": "UDP", "SIP+D2T": "TCP", "SIPS+D2T": "TLS"}
_SRV_PREFIX: dict[str, str] = {"UDP": "_sip._udp.", "TCP": "_sip._tcp.", "TLS": "_sips._tcp."}

T = TypeVar("T")


class LocateError(ValueError):
    """The URI cannot be located (unsupported transport, no usable address ...)."""


@dataclass(frozen=True)
class Target:
    """One place to send a request to.

    ``host`` is the name that resolved to ``ip`` (an SRV target or the URI host); ``domain`` is
    the host part of the URI that was located, the identity a TLS certificate must match
    (RFC 5922 §4.1).
    """

    transport: str
    host: str
    ip: str
    port: int
    domain: str | None = None

    @property
    def tls_name(self) -> str:
        """Name for SNI and certificate verification."""
        return self.domain or self.host


@dataclass(frozen=True)
class NaptrRecord:
    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


@dataclass(frozen=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


class DnsLookup(Protocol):
    """The DNS questions RFC 3263 asks. Empty lists mean "no such records" (or a failed query)."""

    async def naptr(self, name: str) -> list[NaptrRecord]: ...

    async def srv(self, name: str) -> list[SrvRecord]: ...

    async def addresses(self, host: str) -> list[str]: ...


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _read_hosts_names(path: str) -> set[str]:
    names: set[str] = set()
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split("#", 1)[0].split()
                names.update(name.lower().rstrip(".") for name in fields[1:])
    except OSError:
        pass
    return names


class SystemLookup:
    """dnspython (asyncio) for NAPTR/SRV, ``getaddrinfo`` for A/AAAA so ``/etc/hosts`` works.

    With ``nameservers`` given, every query (A/AAAA included) goes to those servers on ``port``.
    Without, names listed in ``hosts_file`` are not looked up in DNS for NAPTR/SRV: the hosts file
    is this machine's authority for them, and skipping saves a DNS timeout when offline.
    After a query times out, DNS is not asked again for ``backoff`` seconds (an offline laptop
    should not wait for NAPTR and three SRV timeouts in a row before trying A records).
    """

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        port: int = 53,
        *,
        timeout: float = 2.0,
        lifetime: float = 4.0,
        hosts_file: str = "/etc/hosts",
        backoff: float = 30.0,
    ) -> None:
        import dns.asyncresolver
        import dns.resolver

        self._explicit = nameservers is not None
        self._lifetime = lifetime
        self._hosts_file = hosts_file
        self.backoff = backoff
        self._unreachable_until = float("-inf")
        self._resolver: dns.asyncresolver.Resolver | None
        if nameservers is not None:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = list(nameservers)
            self._resolver.port = port
        else:
            try:
                self._resolver = dns.asyncresolver.Resolver()
            except (dns.resolver.NoResolverConfiguration, OSError) as exc:
                logger.warning("no DNS resolver configuration (%s): NAPTR/SRV disabled", exc)
                self._resolver = None
        if self._resolver is not None:
            self._resolver.timeout = timeout
            self._resolver.lifetime = lifetime

    def _in_hosts_file(self, name: str) -> bool:
        if self._explicit:
            return False
        return name.lower().rstrip(".") in _read_hosts_names(self._hosts_file)

    async def _query(self, name: str, rdtype: str) -> list[object]:
        import dns.exception
        import dns.resolver

        if self._resolver is None:
            return []
        now = asyncio.get_running_loop().time()
        if now < self._unreachable_until:
            return []  # the name servers just timed out: do not wait for them again
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except dns.exception.Timeout:
            logger.info("DNS %s %s timed out; skipping DNS for %.0f s", rdtype, name, self.backoff)
            self._unreachable_until = asyncio.get_running_loop().time() + self.backoff
            return []
        except (
            dns.resolver.NXDOMAIN,
            dns.resolver.NoAnswer,
            dns.resolver.NoNameservers,
            dns.resolver.YXDOMAIN,
        ) as exc:
            logger.debug("DNS %s %s: %s", rdtype, name, type(exc).__name__)
            return []
        except dns.exception.DNSException as exc:
            logger.info("DNS %s %s failed: %s", rdtype, name, exc)
            return []
        return list(answer)

    async def naptr(self, name: str) -> list[NaptrRecord]:
        if self._in_hosts_file(name):
            return []
        records = []
        for rr in await self._query(name, "NAPTR"):
            records.append(
                NaptrRecord(
                    order=int(rr.order),  # type: ignore[attr-defined]
                    preference=int(rr.preference),  # type: ignore[attr-defined]
                    flags=_text(rr.flags),  # type: ignore[attr-defined]
                    service=_text(rr.service),  # type: ignore[attr-defined]
                    regexp=_text(rr.regexp),  # type: ignore[attr-defined]
                    replacement=rr.replacement.to_text(omit_final_dot=True),  # type: ignore[attr-defined]
                )
            )
        return records

    async def srv(self, name: str) -> list[SrvRecord]:
        labels = name.split(".")
        while labels and labels[0].startswith("_"):
            labels.pop(0)
        if self._in_hosts_file(".".join(labels)):
            return []
        records = []
        for rr in await self._query(name, "SRV"):
            target = rr.target.to_text(omit_final_dot=True)  # type: ignore[attr-defined]
            records.append(
                SrvRecord(
                    priority=int(rr.priority),  # type: ignore[attr-defined]
                    weight=int(rr.weight),  # type: ignore[attr-defined]
                    port=int(rr.port),  # type: ignore[attr-defined]
                    target=target if target else ".",
                )
            )
        return records

    async def addresses(self, host: str) -> list[str]:
        if is_ip_address(host):
            return [host.strip("[]")]
        if self._explicit:
            found: list[str] = []
            for rdtype in ("A", "AAAA"):
                found.extend(rr.to_text() for rr in await self._query(host, rdtype))  # type: ignore[attr-defined]
            return found
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            logger.debug("getaddrinfo %s: %s", host, exc)
            return []
        result: list[str] = []
        for family, _type, _proto, _name, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = str(sockaddr[0]).split("%", 1)[0]
            if ip not in result:
                result.append(ip)
        return result


def _text(value: bytes | str) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def order_srv(records: Iterable[SrvRecord], rng: random.Random | None = None) -> list[SrvRecord]:
    """Order SRV records: ascending priority, weighted random within a priority (RFC 2782).

    Within one priority, records of weight 0 go first in the running list; a number is drawn
    uniformly in [0, total weight] and the first record whose running sum reaches it is taken;
    repeat with the rest.
    """
    rng = rng or random.Random()
    by_priority: dict[int, list[SrvRecord]] = {}
    for rec in records:
        by_priority.setdefault(rec.priority, []).append(rec)
    ordered: list[SrvRecord] = []
    for priority in sorted(by_priority):
        group = sorted(by_priority[priority], key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for index, rec in enumerate(group):
                running += rec.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered


def _transport_from_param(uri: SipURI, secure: bool) -> str | None:
    param = uri.params.get("transport")
    if param is None:
        return None
    param = param.lower()
    if param == "udp":
        if secure:
            raise LocateError("sips URI with transport=udp")
        return "UDP"
    if param == "tcp":
        return "TLS" if secure else "TCP"
    if param == "tls":  # RFC 2543-era spelling, still seen
        return "TLS"
    raise LocateError(f"unsupported transport {param!r}")


def _default_transport(secure: bool, transports: Sequence[str]) -> str:
    """RFC 3263 §4.1: UDP for sip, TLS (TCP) for sips, unless the UA does not support it."""
    if secure:
        return "TLS"
    for candidate in ("UDP", "TCP", "TLS"):
        if candidate in transports:
            return candidate
    raise LocateError("no supported transport")


@dataclass
class _Collector:
    domain: str
    targets: list[Target] = field(default_factory=list)

    def add(self, transport: str, host: str, ips: Iterable[str], port: int) -> None:
        for ip in ips:
            target = Target(transport, host, ip, port, self.domain)
            key = (target.transport, target.ip, target.port)
            if all((t.transport, t.ip, t.port) != key for t in self.targets):
                self.targets.append(target)


async def locate(
    uri: SipURI | str,
    *,
    transports: Sequence[str] = TRANSPORTS,
    lookup: DnsLookup | None = None,
    rng: random.Random | None = None,
) -> list[Target]:
    """Ordered targets for a request to ``uri`` (RFC 3263 §4).

    ``transports`` lists what the UA supports, in preference order ("UDP", "TCP", "TLS").
    Raises :class:`LocateError` when nothing usable is found.
    """
    if isinstance(uri, str):
        uri = SipURI.parse(uri)
    supported = [t.upper() for t in transports]
    lookup = lookup or SystemLookup()
    secure = uri.scheme == "sips"
    if secure and "TLS" not in supported:
        raise LocateError("sips URI but TLS is not supported")
    maddr = uri.params.get("maddr")
    host = (maddr or uri.host or "").strip("[]")
    if not host:
        raise LocateError(f"no host to locate in {uri}")
    collector = _Collector(domain=host)
    explicit = _transport_from_param(uri, secure)
    if explicit is not None and explicit not in supported:
        raise LocateError(f"transport {explicit} not supported")

    # §4.1/§4.2: a numeric IP needs no DNS at all.
    if is_ip_address(host):
        transport = explicit or _default_transport(secure, supported)
        collector.add(transport, host, [host], uri.port or DEFAULT_PORTS[transport])
        return collector.targets

    # §4.2: a port given explicitly means plain A/AAAA.
    if uri.port is not None:
        transport = explicit or _default_transport(secure, supported)
        collector.add(transport, host, await lookup.addresses(host), uri.port)
        return _finish(collector, uri)

    if explicit is not None:
        # §4.1: transport known: skip NAPTR, query the SRV of that transport.
        await _add_srv(collector, lookup, explicit, _SRV_PREFIX[explicit] + host, rng)
    else:
        # §4.1: NAPTR, keeping the SIP services we support, by order then preference.
        naptrs = [
            rec
            for rec in await lookup.naptr(host)
            if rec.flags.lower() == "s"
            and _NAPTR_SERVICES.get(rec.service.upper()) in supported
            and (not secure or rec.service.upper() == "SIPS+D2T")
        ]
        naptrs.sort(key=lambda r: (r.order, r.preference))
        for rec in naptrs:
            transport = _NAPTR_SERVICES[rec.service.upper()]
            await _add_srv(collector, lookup, transport, rec.replacement, rng)
        if not collector.targets:
            # No (usable) NAPTR: SRV for each supported transport in the UA's preference.
            wanted = ["TLS"] if secure else supported
            for transport in wanted:
                await _add_srv(collector, lookup, transport, _SRV_PREFIX[transport] + host, rng)

    if not collector.targets:
        # §4.2: no SRV records: A/AAAA of the host at the transport's default port.
        transport = explicit or _default_transport(secure, supported)
        collector.add(transport, host, await lookup.addresses(host), DEFAULT_PORTS[transport])
    return _finish(collector, uri)


def _finish(collector: _Collector, uri: SipURI) -> list[Target]:
    if not collector.targets:
        raise LocateError(f"cannot locate {uri}: no address")
    logger.debug(
        "located %s: %s",
        uri,
        ", ".join(f"{t.transport} {t.host}={t.ip}:{t.port}" for t in collector.targets),
    )
    return collector.targets


async def _add_srv(
    collector: _Collector,
    lookup: DnsLookup,
    transport: str,
    name: str,
    rng: random.Random | None,
) -> None:
    records = await lookup.srv(name)
    for rec in order_srv(records, rng):
        if rec.target in (".", ""):  # RFC 2782: service decidedly not available
            continue
        collector.add(transport, rec.target, await lookup.addresses(rec.target), rec.port)


class TargetFailed(Exception):
    """Raised by a :func:`try_targets` attempt to move on (for example on a 503, RFC 3263 §4.3)."""


class AllTargetsFailed(ConnectionError):
    """Every target failed; ``errors`` holds (target, exception) pairs."""

    def __init__(self, errors: list[tuple[Target, BaseException]]) -> None:
        self.errors = errors
        detail = "; ".join(f"{t.transport} {t.ip}:{t.port}: {e!r}" for t, e in errors)
        super().__init__(f"all targets failed: {detail or 'no targets'}")


async def try_targets(
    targets: Iterable[Target],
    attempt: Callable[[Target], Awaitable[T]],
    *,
    timeout: float | None = None,
    on_failure: Callable[[Target], None] | None = None,
) -> T:
    """Run ``attempt`` on each target in order until one succeeds (RFC 3263 §4.3).

    A target fails when ``attempt`` raises :class:`OSError` (refused, unreachable, TLS failure),
    :class:`TimeoutError` (also when ``timeout`` seconds pass), or :class:`TargetFailed`.
    Other exceptions propagate. Raises :class:`AllTargetsFailed` when none succeeds.
    ``on_failure`` is called with each target that failed.
    """
    errors: list[tuple[Target, BaseException]] = []
    for target in targets:
        try:
            if timeout is None:
                return await attempt(target)
            return await asyncio.wait_for(attempt(target), timeout)
        except (OSError, TimeoutError, TargetFailed) as exc:
            logger.info("target %s %s:%s failed: %r", target.transport, target.ip, target.port, exc)
            errors.append((target, exc))
            if on_failure is not None:
                on_failure(target)
    raise AllTargetsFailed(errors)
