"""Local IP addresses to gather host candidates on (RFC 8445 §5.1.1.1), Linux first.

:func:`local_addresses` lists the usable unicast addresses of the machine without any external
package.  Sources, most complete first:

1. rtnetlink (Linux): the link and address dumps ``ip addr`` itself asks the kernel for, read
   from a netlink socket in a fraction of a millisecond - no program is run on the call path;
   both families, interface up/down, the IPv6 ``tentative`` / ``dadfailed`` /
   ``deprecated`` flags;
2. ``ip -j addr show`` (iproute2's JSON output), the same through a program;
3. ``/proc/net/if_inet6`` for IPv6 and the ``SIOCGIFCONF`` ioctl for IPv4;
4. the "UDP connect" trick: ``connect()`` on a UDP socket picks the source address of the
   default route without sending a packet (documentation addresses are used as targets).

What is left out, and how to change it:

* loopback (127.0.0.0/8, ::1) unless ``loopback=True``; link-local (169.254/16, fe80::/10)
  unless ``link_local=True`` - RFC 8445 §5.1.1.1 says link-local IPv6 addresses SHOULD NOT
  be included, and both kinds are useless towards a remote peer;
* interfaces that are down, and IPv6 addresses that are tentative or failed DAD;
* interfaces whose name matches one of ``exclude`` (shell globs, :data:`DEFAULT_EXCLUDE`:
  container bridges and veths, hypervisor bridges, VPN tunnels).  ``exclude=()`` keeps every
  interface; ``include`` (globs) keeps only the interfaces it names (and wins over
  ``exclude`` for them).

The system is asked at most every :data:`CACHE_SECONDS` seconds (:func:`forget_cached_addresses`
after a network change; :mod:`ice.netmonitor` reports them).

``bind`` pins gathering to one address, as ``--bind`` does (DESIGN.md: a UA bound to
127.0.0.1 works on loopback): an explicit address is returned as the only entry, whatever
the filters say; the wildcards ``0.0.0.0`` and ``::`` select every usable address of that
family.
"""

from __future__ import annotations

import array
import fnmatch
import ipaddress
import json
import logging
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_EXCLUDE",
    "LocalAddress",
    "filter_addresses",
    "forget_cached_addresses",
    "local_addresses",
    "netlink_tables",
    "parse_if_inet6",
    "parse_ip_json",
    "parse_netlink_addresses",
    "parse_netlink_links",
]

logger = logging.getLogger("ice.interfaces")

DEFAULT_EXCLUDE: tuple[str, ...] = (
    "docker*",
    "br-*",
    "veth*",
    "virbr*",
    "vnet*",
    "vboxnet*",
    "vmnet*",
    "lxcbr*",
    "lxdbr*",
    "podman*",
    "cni*",
    "flannel*",
    "cali*",
    "weave*",
    "tun*",
    "tap*",
    "wg*",
    "utun*",
    "tailscale*",
    "zt*",
)
"""Interface names skipped by default: container and VM bridges and veths, VPN tunnels.

Their addresses are either unreachable from a remote peer or (VPN) a detour; a user on a VPN
who wants it used passes ``exclude=()`` or an ``include`` pattern."""


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """One unicast address of a local interface."""

    address: str
    interface: str = ""
    prefixlen: int = 0
    deprecated: bool = False

    @property
    def family(self) -> int:
        """``socket.AF_INET`` or ``socket.AF_INET6``."""
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.address

    @property
    def is_loopback(self) -> bool:
        return _ip(self.address).is_loopback

    @property
    def is_link_local(self) -> bool:
        return _ip(self.address).is_link_local


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text.split("%", 1)[0])


# -- parsers (pure, unit-tested) ----------------------------------------------------------------


def parse_ip_json(text: str) -> list[LocalAddress]:
    """Addresses from ``ip -j addr show`` output; interfaces that are not UP are skipped, as
    are tentative / DAD-failed IPv6 addresses.  Malformed input gives an empty list."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    out: list[LocalAddress] = []
    if not isinstance(data, list):
        return out
    for link in data:
        if not isinstance(link, dict):
            continue
        name = str(link.get("ifname", ""))
        flags = link.get("flags") or []
        if not isinstance(flags, list) or "UP" not in flags:
            continue
        infos = link.get("addr_info")
        if not isinstance(infos, list):
            continue
        for info in infos:
            if not isinstance(info, dict) or info.get("family") not in ("inet", "inet6"):
                continue
            if info.get("tentative") or info.get("dadfailed"):
                continue
            local = info.get("local")
            if not isinstance(local, str):
                continue
            try:
                address = str(_ip(local))
            except ValueError:
                continue
            prefix = info.get("prefixlen", 0)
            out.append(
                LocalAddress(
                    address,
                    name,
                    prefix if isinstance(prefix, int) else 0,
                    bool(info.get("deprecated")),
                )
            )
    return out


_IFA_F_DADFAILED = 0x08
_IFA_F_DEPRECATED = 0x20
_IFA_F_TENTATIVE = 0x40


def parse_if_inet6(text: str) -> list[LocalAddress]:
    """IPv6 addresses from ``/proc/net/if_inet6`` (address, ifindex, prefix length, scope,
    flags, name - hexadecimal fields); tentative and DAD-failed addresses are skipped."""
    out: list[LocalAddress] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 6 or len(fields[0]) != 32:
            continue
        try:
            packed = bytes.fromhex(fields[0])
            prefix = int(fields[2], 16)
            flags = int(fields[4], 16)
        except ValueError:
            continue
        if flags & (_IFA_F_DADFAILED | _IFA_F_TENTATIVE):
            continue
        address = str(ipaddress.IPv6Address(packed))
        out.append(LocalAddress(address, fields[5], prefix, bool(flags & _IFA_F_DEPRECATED)))
    return out


# netlink (rtnetlink(7)): what ``ip addr`` asks the kernel, without running a program
_NLMSG_HDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_NLMSG_DONE, _NLMSG_ERROR = 3, 2
_RTM_NEWLINK, _RTM_GETLINK, _RTM_NEWADDR, _RTM_GETADDR = 16, 18, 20, 22
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTA = struct.Struct("=HH")  # length, type
_IFLA_IFNAME = 3
_IFA_ADDRESS, _IFA_LOCAL, _IFA_LABEL, _IFA_FLAGS = 1, 2, 3, 8
_IFF_UP = 0x1


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    """The route attributes (struct rtattr, 4-byte aligned) in ``data[offset:end]``."""
    out: dict[int, bytes] = {}
    while offset + _RTA.size <= end:
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size or offset + length > end:
            break
        out.setdefault(kind, data[offset + _RTA.size : offset + length])
        offset += (length + 3) & ~3
    return out


def _netlink_messages(data: bytes) -> Iterable[tuple[int, int, int]]:
    """(type, payload start, end) of each netlink message in ``data``."""
    offset = 0
    while offset + _NLMSG_HDR.size <= len(data):
        length, kind, _, _, _ = _NLMSG_HDR.unpack_from(data, offset)
        if length < _NLMSG_HDR.size or offset + length > len(data):
            return
        yield kind, offset + _NLMSG_HDR.size, offset + length
        offset += (length + 3) & ~3


def parse_netlink_links(data: bytes) -> dict[int, tuple[str, bool]]:
    """``{index: (name, up)}`` from RTM_NEWLINK messages (a dump's replies, concatenated).
    Malformed input gives what could be read, never an exception."""
    out: dict[int, tuple[str, bool]] = {}
    for kind, start, end in _netlink_messages(data):
        if kind != _RTM_NEWLINK or start + _IFINFOMSG.size > end:
            continue
        _, _, index, flags, _ = _IFINFOMSG.unpack_from(data, start)
        name = _attributes(data, start + _IFINFOMSG.size, end).get(_IFLA_IFNAME, b"")
        out[index] = (name.split(b"\0", 1)[0].decode(errors="replace"), bool(flags & _IFF_UP))
    return out


def parse_netlink_addresses(
    data: bytes, links: dict[int, tuple[str, bool]] | None = None
) -> list[LocalAddress]:
    """Addresses from RTM_NEWADDR messages; given ``links`` (:func:`parse_netlink_links`),
    those of interfaces that are not up are skipped, and IPv6 addresses that are tentative
    or failed DAD always are (as :func:`parse_ip_json`).  Never raises."""
    out: list[LocalAddress] = []
    for kind, start, end in _netlink_messages(data):
        if kind != _RTM_NEWADDR or start + _IFADDRMSG.size > end:
            continue
        family, prefix, flags, _, index = _IFADDRMSG.unpack_from(data, start)
        attrs = _attributes(data, start + _IFADDRMSG.size, end)
        if len(attrs.get(_IFA_FLAGS, b"")) == 4:
            flags = struct.unpack("=I", attrs[_IFA_FLAGS])[0]
        if flags & (_IFA_F_DADFAILED | _IFA_F_TENTATIVE):
            continue
        # IFA_LOCAL is the local end of a point-to-point link; IFA_ADDRESS otherwise
        raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS, b"")
        if family == socket.AF_INET and len(raw) == 4:
            address = str(ipaddress.IPv4Address(raw))
        elif family == socket.AF_INET6 and len(raw) == 16:
            address = str(ipaddress.IPv6Address(raw))
        else:
            continue
        name, up = (links or {}).get(index, ("", True))
        if not up:
            continue
        label = attrs.get(_IFA_LABEL, b"").split(b"\0", 1)[0].decode(errors="replace")
        out.append(
            LocalAddress(
                address, name or label.split(":", 1)[0], prefix, bool(flags & _IFA_F_DEPRECATED)
            )
        )
    return out


def _netlink_dump(sock: socket.socket, kind: int, header: bytes, sequence: int) -> bytes:
    """Send a dump request of ``kind`` and return every reply message, concatenated."""
    length = _NLMSG_HDR.size + len(header)
    request = _NLMSG_HDR.pack(length, kind, _NLM_F_REQUEST | _NLM_F_DUMP, sequence, 0)
    sock.send(request + header)
    chunks: list[bytes] = []
    while True:
        data = sock.recv(65536)
        if not data:
            raise OSError("netlink socket closed")
        for reply, start, end in _netlink_messages(data):
            if reply == _NLMSG_ERROR:
                error = struct.unpack_from("=i", data, start)[0] if end - start >= 4 else -1
                raise OSError(-error, "netlink dump refused")
            if reply == _NLMSG_DONE:
                chunks.append(data[: start - _NLMSG_HDR.size])
                return b"".join(chunks)
        chunks.append(data)


def netlink_tables() -> tuple[bytes, bytes]:
    """The kernel's link and address tables as rtnetlink dump replies (RTM_NEWLINK and
    RTM_NEWADDR messages, concatenated): what ``ip link`` and ``ip addr`` ask for.  Raises
    ``OSError`` where there is no rtnetlink (not Linux) or the dump fails."""
    family = getattr(socket, "AF_NETLINK", None)
    if family is None:
        raise OSError("no netlink sockets on this system")
    try:
        with socket.socket(family, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0) as sock:
            sock.settimeout(1.0)  # NETLINK_ROUTE (protocol 0)
            sock.bind((0, 0))
            links = _netlink_dump(sock, _RTM_GETLINK, _IFINFOMSG.pack(0, 0, 0, 0, 0), 1)
            addresses = _netlink_dump(sock, _RTM_GETADDR, _IFADDRMSG.pack(0, 0, 0, 0, 0), 2)
    except struct.error as exc:
        raise OSError(f"malformed netlink reply: {exc}") from exc
    return links, addresses


def _from_netlink() -> list[LocalAddress] | None:
    """Ask the kernel directly (Linux): a fraction of a millisecond, no program to run."""
    try:
        links, addresses = netlink_tables()
    except OSError as exc:
        logger.debug("netlink address dump failed: %s", exc)
        return None
    return parse_netlink_addresses(addresses, parse_netlink_links(links)) or None


# -- system sources --------------------------------------------------------------------------


def _from_iproute2() -> list[LocalAddress] | None:
    ip = shutil.which("ip")
    if ip is None:
        return None
    try:
        proc = subprocess.run(
            [ip, "-j", "addr", "show"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("ip -j addr failed: %s", exc)
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    result = parse_ip_json(proc.stdout)
    return result or None


_SIOCGIFCONF = 0x8912
_IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux


def _ipv4_from_ioctl() -> list[LocalAddress]:
    try:
        import fcntl
    except ImportError:  # not Unix
        return []
    buf = array.array("B", bytes(_IFREQ_SIZE * 128))
    address, _ = buf.buffer_info()
    ifconf = struct.pack("iL", len(buf), address)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            result = fcntl.ioctl(sock.fileno(), _SIOCGIFCONF, ifconf)
    except OSError as exc:
        logger.debug("SIOCGIFCONF failed: %s", exc)
        return []
    length = struct.unpack("iL", result)[0]
    raw = buf.tobytes()[:length]
    out: list[LocalAddress] = []
    for pos in range(0, length - _IFREQ_SIZE + 1, _IFREQ_SIZE):
        name = raw[pos : pos + 16].split(b"\x00", 1)[0].decode(errors="replace")
        ip = socket.inet_ntoa(raw[pos + 20 : pos + 24])
        out.append(LocalAddress(ip, name.split(":", 1)[0]))
    return out


def _from_proc_and_ioctl() -> list[LocalAddress]:
    out = _ipv4_from_ioctl()
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            out += parse_if_inet6(f.read())
    except OSError:
        pass
    return out


def _default_route_addresses() -> list[LocalAddress]:
    """The source address the kernel picks towards a public destination (nothing is sent)."""
    out: list[LocalAddress] = []
    for family, target in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((target, 9))
                out.append(LocalAddress(str(_ip(sock.getsockname()[0]))))
        except OSError:
            continue
    return out


CACHE_SECONDS = 5.0
"""How long one look at the system's addresses is reused (``ip`` takes a few ms to run, when
netlink is not there)."""
_cache: tuple[float, list[LocalAddress]] | None = None


def forget_cached_addresses() -> None:
    """Make the next :func:`local_addresses` ask the system again (after a network change,
    e.g. reported by :class:`ice.netmonitor.AddressMonitor`)."""
    global _cache
    _cache = None


def _system_addresses() -> list[LocalAddress]:
    global _cache
    now = time.monotonic()
    if _cache is not None and now - _cache[0] < CACHE_SECONDS:
        return list(_cache[1])
    found = _from_netlink()
    if found is None:
        found = _from_iproute2()
    if found is None:
        found = _from_proc_and_ioctl()
    if not [a for a in found if not a.is_loopback]:
        found = found + _default_route_addresses()
    _cache = (now, found)
    return list(found)


# -- filtering -------------------------------------------------------------------------------


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def filter_addresses(
    addresses: Iterable[LocalAddress],
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    loopback: bool = False,
    link_local: bool = False,
    ipv4: bool = True,
    ipv6: bool = True,
) -> list[LocalAddress]:
    """Apply the family, scope and interface-name rules of :func:`local_addresses`.

    The result has no duplicate addresses and lists non-deprecated before deprecated IPv6.
    """
    seen: set[str] = set()
    out: list[LocalAddress] = []
    for a in addresses:
        if a.address in seen:
            continue
        if (a.is_ipv6 and not ipv6) or (not a.is_ipv6 and not ipv4):
            continue
        if a.is_loopback and not loopback:
            continue
        if a.is_link_local and not link_local:
            continue
        if _ip(a.address).is_multicast or _ip(a.address).is_unspecified:
            continue
        if a.interface:
            if include is not None:
                if not _matches(a.interface, include):
                    continue
            elif _matches(a.interface, exclude):
                continue
        elif include is not None:
            continue
        seen.add(a.address)
        out.append(a)
    out.sort(key=lambda a: a.deprecated)
    return out


def local_addresses(
    *,
    bind: str | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    loopback: bool = False,
    link_local: bool = False,
    ipv4: bool = True,
    ipv6: bool = True,
) -> list[LocalAddress]:
    """The local addresses to gather host candidates on (see the module docstring).

    ``bind``: an explicit address is returned alone (bracketed IPv6 accepted); ``0.0.0.0`` /
    ``::`` keep only that family.  Raises ``ValueError`` if ``bind`` is not an IP address.
    """
    if bind is not None:
        text = bind.strip("[]")
        ip = _ip(text)
        if not ip.is_unspecified:
            known = {a.address: a for a in _system_addresses()}
            return [known.get(str(ip), LocalAddress(str(ip)))]
        ipv4 = ipv4 and ip.version == 4
        ipv6 = ipv6 and ip.version == 6
    return filter_addresses(
        _system_addresses(),
        include=include,
        exclude=exclude,
        loopback=loopback,
        link_local=link_local,
        ipv4=ipv4,
        ipv6=ipv6,
    )
