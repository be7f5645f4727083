"""Local address changes, as the Linux kernel announces them over rtnetlink (rtnetlink(7)).

A laptop moving from Wi-Fi to Ethernet, a VPN coming up, a DHCP lease renewed to another
address: host candidates gathered before (RFC 8445 §5.1.1.1) name addresses that may be gone,
and the server-reflexive and relayed ones were obtained through them.  RFC 8445 §9 lets an
agent restart ICE when its addresses change; this module says when.

Two layers, as the rest of the package:

* sans-I/O: :func:`parse_notifications` turns the datagrams of a ``NETLINK_ROUTE`` socket
  (RTM_NEWADDR / RTM_DELADDR, RTM_NEWLINK / RTM_DELLINK) into :class:`AddressChange` and
  :class:`LinkChange` values, raising only :class:`NetlinkParseError`; :class:`AddressTracker`
  keeps the table of addresses, decides which notifications are changes that matter (an IPv6
  address is usable once its duplicate address detection is over, RFC 4862 §5.4; an address on
  an interface that is down is not usable; the kernel repeats RTM_NEWADDR for every lifetime
  update of an SLAAC address, which changes nothing) and debounces bursts on the caller's clock
  (``get_timer()`` / ``handle_timer(now)``);
* asyncio: :class:`AddressMonitor` owns the netlink socket subscribed to
  ``RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_LINK``, reads it with ``loop.add_reader``
  and calls its listeners with each debounced batch.

A batch is the difference between the usable addresses before the burst and after it: an
address that came and went within one burst is not reported at all.  Loopback and link-local
addresses are left out unless asked for (``loopback=True`` / ``link_local=True``), as
:func:`ice.interfaces.local_addresses` leaves them out.  Use::

    async with AddressMonitor(debounce=0.4) as monitor:
        remove = monitor.add_listener(lambda changes: ...)   # Sequence[AddressChange]
        ...
        remove()
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack

from ice.interfaces import forget_cached_addresses, netlink_tables

__all__ = [
    "AddressChange",
    "AddressListener",
    "AddressMonitor",
    "AddressTracker",
    "LinkChange",
    "NetlinkParseError",
    "parse_address_changes",
    "parse_notifications",
]

logger = logging.getLogger("ice.netmonitor")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# rtnetlink(7), netlink(7), <linux/if_addr.h>, <linux/if.h>
_NLMSG_HDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTA = struct.Struct("=HH")  # length, type
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR = 16, 17, 20, 21
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_FLAGS = 1, 2, 3, 8
IFA_F_OPTIMISTIC, IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x04, 0x08, 0x20, 0x40
IFF_UP = 0x1
_NETLINK_ROUTE = 0
_SO_RCVBUFFORCE = 33
_RECEIVE_BUFFER = 1 << 20

DEFAULT_DEBOUNCE = 0.4
"""Seconds of quiet before a burst of notifications is reported (a DHCP renewal or an
interface coming up is a handful of messages within a few milliseconds; NetworkManager
switching networks, a few bursts within a few hundred)."""


class NetlinkParseError(ValueError):
    """A malformed rtnetlink message (the only exception the parsers raise)."""


@dataclass(frozen=True, slots=True)
class AddressChange:
    """An address of a local interface appeared (``added``) or went away.

    ``flags`` are the kernel's IFA_F_* bits (IFA_FLAGS when present, else the 8 bits of the
    ifaddrmsg); ``tentative`` / ``deprecated`` / ``dadfailed`` are IPv6 states (RFC 4862 §5.5.4,
    §5.4.5).  ``interface`` is "" when the name is not known.
    """

    added: bool
    address: IPAddress
    prefixlen: int
    index: int
    interface: str = ""
    tentative: bool = False
    deprecated: bool = False
    dadfailed: bool = False
    flags: int = 0

    @property
    def family(self) -> int:
        """``socket.AF_INET`` or ``socket.AF_INET6``."""
        return socket.AF_INET6 if self.address.version == 6 else socket.AF_INET

    @property
    def host(self) -> str:
        """The address as text, as candidates carry it."""
        return str(self.address)

    @property
    def usable(self) -> bool:
        """Can a socket bound to it send now (an IPv6 address that is tentative cannot,
        unless optimistic, RFC 4429)?"""
        if self.dadfailed:
            return False
        return not self.tentative or bool(self.flags & IFA_F_OPTIMISTIC)


@dataclass(frozen=True, slots=True)
class LinkChange:
    """An interface appeared, changed (name, up/down) or went away (``removed``)."""

    index: int
    interface: str
    up: bool
    removed: bool = False


# -- parsing (sans-I/O) -----------------------------------------------------------------------


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    """The route attributes (struct rtattr, 4-byte aligned) in ``data[offset:end]``; the first
    of each type wins.  Raises :class:`NetlinkParseError` on a truncated attribute."""
    out: dict[int, bytes] = {}
    while offset < end:
        if offset + _RTA.size > end:
            raise NetlinkParseError(f"truncated attribute header at {offset}")
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size or offset + length > end:
            raise NetlinkParseError(f"attribute of length {length} at {offset} overruns")
        out.setdefault(kind & 0x3FFF, data[offset + _RTA.size : offset + length])  # NLA_F_* off
        offset += (length + 3) & ~3
    return out


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _address_message(
    kind: int, data: bytes, start: int, end: int, links: dict[int, str] | None
) -> AddressChange | None:
    if start + _IFADDRMSG.size > end:
        raise NetlinkParseError("address message shorter than struct ifaddrmsg")
    family, prefixlen, flags, _, index = _IFADDRMSG.unpack_from(data, start)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None  # other address families (DECnet, MCTP ...) are not ours
    attrs = _attributes(data, start + _IFADDRMSG.size, end)
    if IFA_FLAGS in attrs:
        if len(attrs[IFA_FLAGS]) != 4:
            raise NetlinkParseError("IFA_FLAGS is not 32 bits")
        flags = struct.unpack("=I", attrs[IFA_FLAGS])[0]
    # IFA_LOCAL is the local end of a point-to-point link; IFA_ADDRESS otherwise
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None:
        raise NetlinkParseError("address message without an address")
    size = 4 if family == socket.AF_INET else 16
    if len(raw) != size:
        raise NetlinkParseError(f"{len(raw)}-byte address in a family {family} message")
    if prefixlen > size * 8:
        raise NetlinkParseError(f"prefix length {prefixlen} for a {size * 8}-bit address")
    address: IPAddress = (
        ipaddress.IPv4Address(raw) if family == socket.AF_INET else ipaddress.IPv6Address(raw)
    )
    name = (links or {}).get(index) or _text(attrs.get(IFA_LABEL, b"")).split(":", 1)[0]
    return AddressChange(
        added=kind == RTM_NEWADDR,
        address=address,
        prefixlen=prefixlen,
        index=index,
        interface=name,
        tentative=bool(flags & IFA_F_TENTATIVE),
        deprecated=bool(flags & IFA_F_DEPRECATED),
        dadfailed=bool(flags & IFA_F_DADFAILED),
        flags=flags,
    )


def _link_message(kind: int, data: bytes, start: int, end: int) -> LinkChange:
    if start + _IFINFOMSG.size > end:
        raise NetlinkParseError("link message shorter than struct ifinfomsg")
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(data, start)
    attrs = _attributes(data, start + _IFINFOMSG.size, end)
    name = _text(attrs.get(IFLA_IFNAME, b""))
    return LinkChange(index, name, bool(flags & IFF_UP), removed=kind == RTM_DELLINK)


def parse_notifications(
    data: bytes, links: dict[int, str] | None = None
) -> list[AddressChange | LinkChange]:
    """The address and link messages of one rtnetlink datagram (or of dump replies,
    concatenated), in order; other message types are skipped.

    ``links`` (``{index: name}``) names the interfaces of address messages (else the
    IFA_LABEL, else "").  Raises :class:`NetlinkParseError`, and nothing else, on malformed
    input (a truncated or overrunning header or attribute, an address of the wrong size).
    """
    out: list[AddressChange | LinkChange] = []
    offset = 0
    data = bytes(data)
    while offset < len(data):
        if offset + _NLMSG_HDR.size > len(data):
            raise NetlinkParseError(f"{len(data) - offset} stray bytes after the messages")
        length, kind, _, _, _ = _NLMSG_HDR.unpack_from(data, offset)
        if length < _NLMSG_HDR.size or offset + length > len(data):
            raise NetlinkParseError(f"message of length {length} at {offset} overruns")
        start, end = offset + _NLMSG_HDR.size, offset + length
        if kind in (RTM_NEWADDR, RTM_DELADDR):
            change = _address_message(kind, data, start, end, links)
            if change is not None:
                out.append(change)
        elif kind in (RTM_NEWLINK, RTM_DELLINK):
            out.append(_link_message(kind, data, start, end))
        elif kind == NLMSG_ERROR:
            # a notification socket receives none; an error here is an overrun report
            raise NetlinkParseError("netlink error message in a notification stream")
        offset += (length + 3) & ~3
    return out


def parse_address_changes(data: bytes, links: dict[int, str] | None = None) -> list[AddressChange]:
    """Only the :class:`AddressChange` values of :func:`parse_notifications` (RTM_NEWADDR:
    ``added``, RTM_DELADDR: not), flags as they came (tentative ones included)."""
    return [c for c in parse_notifications(data, links) if isinstance(c, AddressChange)]


# -- the table of addresses and the debouncing (sans-I/O) --------------------------------------


_Key = tuple[int, IPAddress]


class AddressTracker:
    """The local addresses as the notifications leave them, and which changes to report.

    Feed it with :meth:`receive` (one datagram, the current time); it keeps a table of
    addresses and links and, after ``debounce`` seconds without a notification (at most
    ``max_delay`` seconds after the first of a burst: a chattering interface still gets its
    changes reported), :meth:`handle_timer` returns the batch: for every address touched in
    the burst whose usability changed, one :class:`AddressChange` (``added`` when it became
    usable, else with the last flags it had).  Usable: present, not tentative (unless
    optimistic), DAD not failed, on an interface that is up.  :meth:`load` seeds the table from
    a dump without reporting anything; :meth:`resync` replaces it from a new dump (after the
    socket overran) and reports the differences.
    """

    def __init__(
        self,
        *,
        debounce: float = DEFAULT_DEBOUNCE,
        max_delay: float | None = None,
        loopback: bool = False,
        link_local: bool = False,
    ) -> None:
        if debounce < 0:
            raise ValueError("debounce must not be negative")
        self.debounce = debounce
        self.max_delay = max(debounce, 5 * debounce if max_delay is None else max_delay)
        self.loopback = loopback
        self.link_local = link_local
        self._links: dict[int, LinkChange] = {}
        self._addresses: dict[_Key, AddressChange] = {}
        # the usable state of each touched address when it was last reported
        self._before: dict[_Key, AddressChange | None] = {}
        self._first: float | None = None
        self._last: float | None = None

    # -- queries ---------------------------------------------------------------------------------

    def addresses(self) -> list[AddressChange]:
        """The usable addresses now (as ``added`` changes), filtered as the reports are."""
        out = []
        for key in self._addresses:
            now = self._usable(key)
            if now is not None and self._wanted(now):
                out.append(now)
        return out

    @property
    def pending(self) -> bool:
        """Are notifications waiting for the debounce timer?"""
        return bool(self._before)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should run next (None: nothing pending)."""
        if self._first is None or self._last is None:
            return None
        return min(self._last + self.debounce, self._first + self.max_delay)

    # -- input -----------------------------------------------------------------------------------

    def load(self, links: bytes, addresses: bytes) -> None:
        """Seed the table from dump replies (:func:`ice.interfaces.netlink_tables`), reporting
        nothing.  Raises :class:`NetlinkParseError` (the table is left as it was)."""
        parsed_links = parse_notifications(links)
        names = {c.index: c.interface for c in parsed_links if isinstance(c, LinkChange)}
        parsed = parse_notifications(addresses, names)
        self._links = {c.index: c for c in parsed_links if isinstance(c, LinkChange)}
        self._addresses = {
            (c.index, c.address): c for c in parsed if isinstance(c, AddressChange) and c.added
        }
        self._before.clear()
        self._first = self._last = None

    def resync(self, links: bytes, addresses: bytes, now: float) -> None:
        """Replace the table by a new dump and report what differs (after missed
        notifications: the socket's buffer overran, ENOBUFS)."""
        old = {key: self._usable(key) for key in self._addresses}
        self.load(links, addresses)
        for key in set(old) | set(self._addresses):
            self._before.setdefault(key, old.get(key))
        self._touched(now)

    def receive(self, data: bytes, now: float) -> None:
        """One datagram of the notification socket.  Raises :class:`NetlinkParseError` (and
        applies nothing of the datagram) when it is malformed."""
        names = {index: link.interface for index, link in self._links.items()}
        changes = parse_notifications(data, names)
        for change in changes:
            if isinstance(change, LinkChange):
                self._apply_link(change)
            else:
                self._apply_address(change)
        if changes:
            self._touched(now)

    def handle_timer(self, now: float) -> list[AddressChange]:
        """The batch of changes, once the timer is due (else an empty list)."""
        when = self.get_timer()
        if when is None or now < when:
            return []
        before, self._before = self._before, {}
        self._first = self._last = None
        out: list[AddressChange] = []
        for key, was in before.items():
            is_ = self._usable(key)
            if (was is None) == (is_ is None):
                continue
            if is_ is not None:
                change = is_
            else:
                assert was is not None
                change = dataclasses.replace(was, added=False)
            if self._wanted(change):
                out.append(change)
        return out

    # -- internals -------------------------------------------------------------------------------

    def _touched(self, now: float) -> None:
        if not self._before:
            return
        if self._first is None:
            self._first = now
        self._last = now

    def _remember(self, key: _Key) -> None:
        if key not in self._before:
            self._before[key] = self._usable(key)

    def _usable(self, key: _Key) -> AddressChange | None:
        """The address as an ``added`` change when usable now, else None."""
        entry = self._addresses.get(key)
        if entry is None or not entry.usable:
            return None
        link = self._links.get(key[0])
        if link is not None and not link.up:
            return None
        if link is not None and link.interface and link.interface != entry.interface:
            entry = dataclasses.replace(entry, interface=link.interface)
        return entry

    def _wanted(self, change: AddressChange) -> bool:
        if change.address.is_loopback and not self.loopback:
            return False
        return not (change.address.is_link_local and not self.link_local)

    def _apply_address(self, change: AddressChange) -> None:
        key = (change.index, change.address)
        self._remember(key)
        if change.added:
            self._addresses[key] = change
        else:
            self._addresses.pop(key, None)

    def _apply_link(self, change: LinkChange) -> None:
        old = self._links.get(change.index)
        if old is not None and old.up == change.up and not change.removed:
            self._links[change.index] = change  # a rename or another flag: usability unchanged
            return
        for key in [k for k in self._addresses if k[0] == change.index]:
            self._remember(key)
        if change.removed:
            self._links.pop(change.index, None)
            for key in [k for k in self._addresses if k[0] == change.index]:
                del self._addresses[key]
        else:
            self._links[change.index] = change


# -- asyncio ----------------------------------------------------------------------------------


AddressListener = Callable[[Sequence[AddressChange]], None]


class _TrackerOptions(TypedDict, total=False):
    """The keyword options an :class:`AddressMonitor` hands on to its :class:`AddressTracker`
    (defaults and meaning there)."""

    max_delay: float | None
    loopback: bool
    link_local: bool


class AddressMonitor:
    """Reports the local address changes of this network namespace (Linux rtnetlink).

    ``debounce`` seconds of quiet end a burst (``max_delay``, default five times that, bounds
    the wait); listeners added with :meth:`add_listener` are called on the event loop with each
    non-empty batch of :class:`AddressChange` (see :class:`AddressTracker` for what is a
    change; ``loopback`` and ``link_local`` also as there).  :meth:`start` needs a running loop
    and raises ``OSError`` where there is no rtnetlink.  Also an async context manager (start
    on enter, close on exit).
    """

    def __init__(
        self, debounce: float = DEFAULT_DEBOUNCE, **options: Unpack[_TrackerOptions]
    ) -> None:
        self.tracker = AddressTracker(debounce=debounce, **options)
        self._listeners: list[AddressListener] = []
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.batches = 0

    @property
    def debounce(self) -> float:
        return self.tracker.debounce

    @property
    def running(self) -> bool:
        return self._sock is not None

    def addresses(self) -> list[AddressChange]:
        """The usable addresses as the monitor knows them now."""
        return self.tracker.addresses()

    def add_listener(self, listener: AddressListener) -> Callable[[], None]:
        """Call ``listener(changes)`` with each batch; returns the function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def start(self) -> None:
        """Subscribe to the kernel's address and link notifications (idempotent)."""
        if self._sock is not None:
            return
        if self._closed:
            raise RuntimeError("monitor closed")
        loop = asyncio.get_running_loop()
        family = getattr(socket, "AF_NETLINK", None)
        if family is None:
            raise OSError(errno.EAFNOSUPPORT, "no netlink sockets on this system")
        sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_ROUTE)
        try:
            sock.setblocking(False)
            for option in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):  # FORCE needs CAP_NET_ADMIN
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, _RECEIVE_BUFFER)
                    break
                except OSError:
                    continue
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            # subscribed first, then the dump: nothing falls between the two
            try:
                self.tracker.load(*netlink_tables())
            except (OSError, NetlinkParseError) as exc:
                logger.warning("no initial address table (%s); every address seen is new", exc)
            loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self._loop, self._sock = loop, sock
        logger.debug(
            "watching local addresses: %s",
            ", ".join(f"{c.interface or c.index} {c.host}" for c in self.addresses()) or "none",
        )

    def close(self) -> None:
        """Stop watching and drop the listeners (idempotent)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._listeners.clear()

    async def __aenter__(self) -> AddressMonitor:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _readable(self) -> None:
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            return
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped notifications
                    logger.info("netlink notifications lost (%s); reading the tables again", exc)
                    self._resync(loop.time())
                    break  # what is queued after the overrun comes on the next call
                logger.warning("netlink socket failed: %s; address changes no longer seen", exc)
                self.close()
                return
            if not data:
                break
            try:
                self.tracker.receive(data, loop.time())
            except NetlinkParseError as exc:
                logger.warning("malformed netlink notification dropped: %s", exc)
        self._schedule()

    def _resync(self, now: float) -> None:
        try:
            self.tracker.resync(*netlink_tables(), now)
        except (OSError, NetlinkParseError) as exc:
            logger.warning("cannot read the address table again: %s", exc)

    def _schedule(self) -> None:
        if self._loop is None or self._sock is None:
            return
        when = self.tracker.get_timer()
        if self._timer is not None:
            if when is not None and self._timer.when() == when:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._loop is None or self._sock is None:
            return
        # the loop may run a timer a clock tick early
        now = max(self._loop.time(), self.tracker.get_timer() or 0.0)
        changes = self.tracker.handle_timer(now)
        self._schedule()
        if changes:
            self.notify(changes)

    def notify(self, changes: Sequence[AddressChange]) -> None:
        """Log ``changes`` and call every listener with them, as after each burst (also a way
        to feed changes seen elsewhere, and for tests)."""
        self.batches += 1
        forget_cached_addresses()  # local_addresses() must see the new table
        for change in changes:
            logger.info(
                "address %s: %s/%d on %s%s",
                "added" if change.added else "removed",
                change.host,
                change.prefixlen,
                change.interface or f"interface {change.index}",
                " (deprecated)" if change.deprecated else "",
            )
        batch = tuple(changes)
        for listener in list(self._listeners):
            try:
                listener(batch)
            except Exception:
                logger.exception("address change listener %r failed", listener)
