"""ice.netmonitor: rtnetlink notifications as the kernel sends them (built with struct per
rtnetlink(7): nlmsghdr, ifaddrmsg / ifinfomsg, rtattr), the strict parser (fuzzed: only
NetlinkParseError escapes), and the address table's debouncing and usability rules on a
virtual clock."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ice import interfaces
from ice.netmonitor import (
    IFA_F_DADFAILED,
    IFA_F_DEPRECATED,
    IFA_F_OPTIMISTIC,
    IFA_F_TENTATIVE,
    AddressChange,
    AddressMonitor,
    AddressTracker,
    LinkChange,
    NetlinkParseError,
    parse_address_changes,
    parse_notifications,
)

RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE = 16, 17, 20, 21, 24
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_CACHEINFO, IFA_FLAGS = 1, 2, 3, 6, 8
IFA_F_PERMANENT = 0x80
IFLA_IFNAME, IFLA_MTU = 3, 4


def attr(kind: int, value: bytes) -> bytes:
    """struct rtattr: length (header included, padding excluded), type, value, 4-byte pad."""
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def nlmsg(kind: int, body: bytes, flags: int = 0, seq: int = 0) -> bytes:
    """struct nlmsghdr; notifications have sequence 0 and port id 0 (from the kernel)."""
    raw = struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def addr_msg(
    ip: str,
    index: int = 2,
    *,
    kind: int = RTM_NEWADDR,
    prefix: int | None = None,
    flags: int = IFA_F_PERMANENT,
    label: str | None = "eth0",
    local: str | None = None,
    scope: int = 0,
    extended: bool = True,
) -> bytes:
    """An RTM_NEWADDR / RTM_DELADDR as the kernel builds it (inet_fill_ifaddr /
    inet6_fill_ifaddr): ifaddrmsg, IFA_ADDRESS, IFA_LOCAL (IPv4), IFA_LABEL (IPv4), IFA_FLAGS,
    IFA_CACHEINFO."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    if prefix is None:
        prefix = 64 if family == socket.AF_INET6 else 24
    body = struct.pack("=BBBBI", family, prefix, flags & 0xFF, scope, index)
    body += attr(IFA_ADDRESS, socket.inet_pton(family, ip))
    if local is not None:
        body += attr(IFA_LOCAL, socket.inet_pton(family, local))
    elif family == socket.AF_INET:
        body += attr(IFA_LOCAL, socket.inet_pton(family, ip))
    if label is not None and family == socket.AF_INET:
        body += attr(IFA_LABEL, label.encode() + b"\0")
    if extended:
        body += attr(IFA_FLAGS, struct.pack("=I", flags))
    body += attr(IFA_CACHEINFO, struct.pack("=IIII", 0xFFFFFFFF, 0xFFFFFFFF, 100, 100))
    return nlmsg(kind, body)


def link_msg(index: int, name: str, up: bool = True, kind: int = RTM_NEWLINK) -> bytes:
    flags = (IFF_UP | IFF_LOWER_UP) if up else 0
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, index, flags, 0xFFFFFFFF)
    body += attr(IFLA_IFNAME, name.encode() + b"\0") + attr(IFLA_MTU, struct.pack("=I", 1500))
    return nlmsg(kind, body)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# -- the parser ---------------------------------------------------------------------------------


def test_new_ipv4_address_with_label_and_flags() -> None:
    [change] = parse_notifications(addr_msg("198.51.100.7", 3, prefix=24, label="wlan0"))
    assert change == AddressChange(
        added=True,
        address=ip("198.51.100.7"),
        prefixlen=24,
        index=3,
        interface="wlan0",
        flags=IFA_F_PERMANENT,
    )
    assert change.family == socket.AF_INET and change.host == "198.51.100.7" and change.usable


def test_deleted_ipv6_address_named_by_the_link_table() -> None:
    data = addr_msg("2001:db8::7", 4, kind=RTM_DELADDR, flags=0)
    [change] = parse_address_changes(data, {4: "enp3s0"})
    assert not change.added and change.address == ip("2001:db8::7")
    assert change.interface == "enp3s0" and change.prefixlen == 64
    assert change.family == socket.AF_INET6
    assert parse_address_changes(data)[0].interface == ""  # IPv6 has no IFA_LABEL


def test_ipv6_states_from_ifa_flags_and_from_the_8_bit_field() -> None:
    tentative = parse_address_changes(addr_msg("2001:db8::1", flags=IFA_F_TENTATIVE))[0]
    assert tentative.tentative and not tentative.usable
    optimistic = parse_address_changes(
        addr_msg("2001:db8::1", flags=IFA_F_TENTATIVE | IFA_F_OPTIMISTIC)
    )[0]
    assert optimistic.tentative and optimistic.usable  # RFC 4429
    deprecated = parse_address_changes(addr_msg("2001:db8::1", flags=IFA_F_DEPRECATED))[0]
    assert deprecated.deprecated and deprecated.usable
    failed = parse_address_changes(addr_msg("2001:db8::1", flags=IFA_F_DADFAILED))[0]
    assert failed.dadfailed and not failed.usable
    # without IFA_FLAGS (old kernels) the ifaddrmsg's own 8 bits count
    old = parse_address_changes(addr_msg("2001:db8::1", flags=IFA_F_TENTATIVE, extended=False))
    assert old[0].tentative
    # IFA_FLAGS wins: bits above 8 are only there (0x100 = IFA_F_MANAGETEMPADDR)
    wide = parse_address_changes(addr_msg("2001:db8::1", flags=0x100 | IFA_F_DEPRECATED))[0]
    assert wide.flags == 0x100 | IFA_F_DEPRECATED and wide.deprecated


def test_point_to_point_address_is_the_local_end() -> None:
    [change] = parse_address_changes(addr_msg("10.8.0.1", local="10.8.0.2", label="tun0"))
    assert change.address == ip("10.8.0.2") and change.interface == "tun0"


def test_ipv4_alias_label_gives_the_interface_name() -> None:
    [change] = parse_address_changes(addr_msg("198.51.100.9", label="eth0:1"))
    assert change.interface == "eth0"


def test_several_messages_in_one_datagram_other_types_skipped() -> None:
    route = nlmsg(RTM_NEWROUTE, struct.pack("=BBBBBBBBI", 2, 24, 0, 0, 254, 3, 0, 1, 0))
    data = (
        link_msg(2, "eth0")
        + addr_msg("198.51.100.7")
        + route
        + addr_msg("198.51.100.8", kind=RTM_DELADDR)
        + nlmsg(NLMSG_DONE, b"\0\0\0\0")
    )
    parsed = parse_notifications(data)
    assert parsed[0] == LinkChange(2, "eth0", True)
    assert [(c.added, c.host) for c in parsed[1:] if isinstance(c, AddressChange)] == [
        (True, "198.51.100.7"),
        (False, "198.51.100.8"),
    ]
    assert len(parsed) == 3


def test_link_messages() -> None:
    assert parse_notifications(link_msg(5, "wlan0", up=False)) == [LinkChange(5, "wlan0", False)]
    gone = parse_notifications(link_msg(5, "wlan0", kind=RTM_DELLINK))
    assert gone == [LinkChange(5, "wlan0", True, removed=True)]


def test_other_address_families_are_skipped() -> None:
    body = struct.pack("=BBBBI", 12, 16, 0, 0, 2) + attr(IFA_ADDRESS, b"\x01\x02")  # AF_DECnet
    assert parse_notifications(nlmsg(RTM_NEWADDR, body)) == []
    assert parse_notifications(b"") == []


@pytest.mark.parametrize(
    "data, why",
    [
        (addr_msg("198.51.100.7")[:10], "stray bytes"),
        (struct.pack("=IHHII", 8, RTM_NEWADDR, 0, 0, 0), "length 8"),
        (struct.pack("=IHHII", 400, RTM_NEWADDR, 0, 0, 0) + bytes(20), "overruns"),
        (nlmsg(RTM_NEWADDR, b"\x02\x18\x00"), "shorter than struct ifaddrmsg"),
        (nlmsg(RTM_NEWLINK, b"\x00" * 8), "shorter than struct ifinfomsg"),
        (
            nlmsg(RTM_NEWADDR, struct.pack("=BBBBI", 2, 24, 0, 0, 2) + b"\x08\x00\x01"),
            "truncated attribute",
        ),
        (
            nlmsg(RTM_NEWADDR, struct.pack("=BBBBI", 2, 24, 0, 0, 2) + b"\x40\x00\x01\x00"),
            "overruns",
        ),
        (
            nlmsg(RTM_NEWADDR, struct.pack("=BBBBI", 2, 24, 0, 0, 2) + b"\x02\x00\x01\x00"),
            "length 2",
        ),
        (
            nlmsg(
                RTM_NEWADDR, struct.pack("=BBBBI", 2, 24, 0, 0, 2) + attr(IFA_ADDRESS, bytes(16))
            ),
            "16-byte address",
        ),
        (
            nlmsg(RTM_NEWADDR, struct.pack("=BBBBI", 10, 64, 0, 0, 2) + attr(IFA_LABEL, b"x\0")),
            "without an address",
        ),
        (addr_msg("198.51.100.7", prefix=33), "prefix length 33"),
        (
            nlmsg(
                RTM_NEWADDR,
                struct.pack("=BBBBI", 2, 24, 0, 0, 2)
                + attr(IFA_ADDRESS, bytes(4))
                + attr(IFA_FLAGS, b"\x01"),
            ),
            "IFA_FLAGS",
        ),
        (nlmsg(NLMSG_ERROR, struct.pack("=i", -105) + bytes(16)), "error"),
    ],
)
def test_malformed_input_raises_the_parse_error(data: bytes, why: str) -> None:
    with pytest.raises(NetlinkParseError, match=why):
        parse_notifications(data)


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_the_parse_error(data: bytes) -> None:
    try:
        parse_notifications(data, {2: "eth0"})
    except NetlinkParseError:
        pass


VALID = (
    link_msg(2, "eth0")
    + addr_msg("198.51.100.7")
    + addr_msg("2001:db8::7", flags=IFA_F_TENTATIVE)
    + addr_msg("198.51.100.8", kind=RTM_DELADDR)
)


@settings(max_examples=400)
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6),
    st.integers(0, len(VALID)),
)
def test_mutated_kernel_messages_raise_only_the_parse_error(
    edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(VALID)
    for position, value in edits:
        data[position] = value
    tracker = AddressTracker()
    for chunk in (bytes(data), bytes(data[:cut])):
        try:
            parse_notifications(chunk)
        except NetlinkParseError:
            pass
        try:
            tracker.receive(chunk, 0.0)
        except NetlinkParseError:
            pass
        tracker.handle_timer(10.0)
        try:
            tracker.resync(chunk, chunk, 20.0)
        except NetlinkParseError:
            pass
        tracker.handle_timer(30.0)


def test_the_kernel_dump_parses_strictly() -> None:
    """The real tables of this machine (as `ip addr` sees them) go through the strict parser."""
    try:
        links, addresses = interfaces.netlink_tables()
    except OSError as exc:
        pytest.skip(f"no rtnetlink here: {exc}")
    tracker = AddressTracker(loopback=True)
    tracker.load(links, addresses)
    mine = {c.host for c in tracker.addresses()}
    system = {a.address for a in interfaces.local_addresses(loopback=True, exclude=())}
    assert system <= mine


# -- the table and its debouncing -------------------------------------------------------------


def seeded(**options: object) -> AddressTracker:
    tracker = AddressTracker(debounce=0.4, **options)  # type: ignore[arg-type]
    tracker.load(
        link_msg(1, "lo") + link_msg(2, "eth0") + link_msg(3, "wlan0"),
        addr_msg("127.0.0.1", 1, prefix=8, label="lo")
        + addr_msg("198.51.100.5", 2)
        + addr_msg("203.0.113.9", 3, label="wlan0"),
    )
    return tracker


def flush(tracker: AddressTracker) -> list[tuple[bool, str, str]]:
    when = tracker.get_timer()
    assert when is not None, "nothing pending"
    assert tracker.handle_timer(when - 0.001) == []  # not before its time
    out = [(c.added, c.host, c.interface) for c in tracker.handle_timer(when)]
    assert tracker.get_timer() is None
    return out


def test_seed_reports_nothing_and_lists_the_usable_addresses() -> None:
    tracker = seeded()
    assert tracker.get_timer() is None and not tracker.pending
    assert sorted(c.host for c in tracker.addresses()) == ["198.51.100.5", "203.0.113.9"]
    assert "127.0.0.1" in {c.host for c in seeded(loopback=True).addresses()}


def test_a_burst_is_reported_once_after_the_quiet_time() -> None:
    tracker = seeded()
    tracker.receive(addr_msg("198.51.100.6", 2), now=10.0)
    assert tracker.get_timer() == pytest.approx(10.4)
    tracker.receive(addr_msg("198.51.100.5", 2, kind=RTM_DELADDR), now=10.3)
    assert tracker.get_timer() == pytest.approx(10.7)  # each message restarts the wait
    assert tracker.handle_timer(10.5) == []
    assert flush(tracker) == [(True, "198.51.100.6", "eth0"), (False, "198.51.100.5", "eth0")]


def test_a_chattering_interface_is_reported_after_max_delay() -> None:
    tracker = seeded()
    batches: list[list[str]] = []
    for step in range(20):  # one every 0.3 s: never 0.4 s of quiet
        now = 10.0 + step * 0.3
        when = tracker.get_timer()
        if when is not None and when <= now:
            batches.append([c.host for c in tracker.handle_timer(when)])
        tracker.receive(addr_msg(f"198.51.100.{20 + step}", 2), now=now)
        if step == 0:
            assert tracker.get_timer() == pytest.approx(10.4)
        elif step == 6:
            assert tracker.get_timer() == pytest.approx(12.0)  # 5 x debounce after the first
    assert [len(b) for b in batches] == [7, 7]  # at 12.0 and 14.1, then 6 still pending
    assert batches[0][0] == "198.51.100.20" and batches[1][0] == "198.51.100.27"
    assert len(tracker.handle_timer(100.0)) == 6


def test_an_address_that_came_and_went_within_a_burst_is_not_reported() -> None:
    tracker = seeded()
    tracker.receive(addr_msg("198.51.100.8", 2), now=1.0)
    tracker.receive(addr_msg("198.51.100.8", 2, kind=RTM_DELADDR), now=1.1)
    tracker.receive(addr_msg("198.51.100.5", 2, kind=RTM_DELADDR), now=1.1)
    tracker.receive(addr_msg("198.51.100.5", 2), now=1.2)  # a DHCP renewal to the same address
    assert flush(tracker) == []


def test_lifetime_updates_of_a_known_address_are_not_changes() -> None:
    tracker = seeded()
    tracker.receive(addr_msg("198.51.100.5", 2), now=1.0)
    tracker.receive(addr_msg("203.0.113.9", 3, flags=0x80, label="wlan0"), now=1.0)
    assert flush(tracker) == []


def test_ipv6_tentative_address_is_reported_once_dad_is_over() -> None:
    tracker = seeded()
    tracker.receive(addr_msg("2001:db8::7", 2, flags=IFA_F_TENTATIVE), now=1.0)
    assert flush(tracker) == []
    tracker.receive(addr_msg("2001:db8::7", 2, flags=0), now=2.0)  # RFC 4862 §5.4.5
    assert flush(tracker) == [(True, "2001:db8::7", "eth0")]
    tracker.receive(addr_msg("2001:db8::7", 2, flags=IFA_F_DEPRECATED), now=3.0)
    assert flush(tracker) == []  # still usable
    tracker.receive(addr_msg("2001:db8::7", 2, kind=RTM_DELADDR, flags=IFA_F_DEPRECATED), now=4)
    [removed] = tracker.handle_timer(5.0)
    assert not removed.added and removed.deprecated and removed.interface == "eth0"


def test_a_tentative_address_that_fails_dad_or_goes_is_never_reported() -> None:
    tracker = seeded()
    tracker.receive(addr_msg("2001:db8::8", 2, flags=IFA_F_TENTATIVE), now=1.0)
    tracker.handle_timer(2.0)
    tracker.receive(addr_msg("2001:db8::8", 2, flags=IFA_F_TENTATIVE | IFA_F_DADFAILED), 3.0)
    assert flush(tracker) == []
    tracker.receive(addr_msg("2001:db8::8", 2, kind=RTM_DELADDR), now=4.0)
    assert flush(tracker) == []


def test_an_optimistic_address_is_usable_at_once() -> None:
    tracker = seeded()
    tracker.receive(addr_msg("2001:db8::9", 2, flags=IFA_F_TENTATIVE | IFA_F_OPTIMISTIC), 1.0)
    assert flush(tracker) == [(True, "2001:db8::9", "eth0")]


def test_loopback_and_link_local_only_when_asked() -> None:
    changes = (
        addr_msg("127.0.0.2", 1, prefix=8, label="lo")
        + addr_msg("fe80::1", 2, flags=0)
        + addr_msg("169.254.1.1", 2, prefix=16)
        + addr_msg("198.51.100.6", 2)
    )
    default = seeded()
    default.receive(changes, now=1.0)
    assert flush(default) == [(True, "198.51.100.6", "eth0")]
    everything = seeded(loopback=True, link_local=True)
    everything.receive(changes, now=1.0)
    assert [c[1] for c in flush(everything)] == [
        "127.0.0.2",
        "fe80::1",
        "169.254.1.1",
        "198.51.100.6",
    ]


def test_an_interface_going_down_takes_its_addresses_away() -> None:
    tracker = seeded()
    tracker.receive(link_msg(3, "wlan0", up=False), now=1.0)
    assert flush(tracker) == [(False, "203.0.113.9", "wlan0")]
    assert [c.host for c in tracker.addresses()] == ["198.51.100.5"]
    tracker.receive(link_msg(3, "wlan0", up=False), now=2.0)  # no news
    assert tracker.handle_timer(10.0) == []
    tracker.receive(link_msg(3, "wlan0", up=True), now=3.0)
    assert flush(tracker) == [(True, "203.0.113.9", "wlan0")]
    tracker.receive(link_msg(3, "wlan0", kind=RTM_DELLINK), now=4.0)
    assert flush(tracker) == [(False, "203.0.113.9", "wlan0")]
    assert [c.host for c in tracker.addresses()] == ["198.51.100.5"]


def test_a_renamed_interface_keeps_its_addresses() -> None:
    tracker = seeded()
    tracker.receive(link_msg(3, "wlp2s0"), now=1.0)
    assert tracker.get_timer() is None
    assert {c.interface for c in tracker.addresses()} == {"eth0", "wlp2s0"}


def test_a_malformed_datagram_changes_nothing() -> None:
    tracker = seeded()
    bad = addr_msg("198.51.100.6", 2) + addr_msg("198.51.100.5", 2, kind=RTM_DELADDR)[:-3]
    with pytest.raises(NetlinkParseError):
        tracker.receive(bad, now=1.0)
    assert tracker.get_timer() is None
    assert sorted(c.host for c in tracker.addresses()) == ["198.51.100.5", "203.0.113.9"]


def test_resync_after_lost_notifications_reports_the_difference() -> None:
    tracker = seeded()
    tracker.resync(
        link_msg(1, "lo") + link_msg(2, "eth0") + link_msg(4, "eth1"),
        addr_msg("198.51.100.5", 2) + addr_msg("192.0.2.33", 4, label="eth1"),
        now=1.0,
    )
    assert sorted(flush(tracker)) == [(False, "203.0.113.9", "wlan0"), (True, "192.0.2.33", "eth1")]


def test_no_debounce_means_the_next_turn_of_the_loop() -> None:
    tracker = AddressTracker(debounce=0.0)
    tracker.receive(addr_msg("198.51.100.6", 2), now=5.0)
    assert tracker.get_timer() == 5.0
    assert [c.host for c in tracker.handle_timer(5.0)] == ["198.51.100.6"]
    with pytest.raises(ValueError):
        AddressTracker(debounce=-1)


# -- the asyncio monitor on this machine (nothing is changed here: see tests/lab) -------------


async def test_monitor_starts_closes_and_dispatches_to_listeners(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        monitor = AddressMonitor(debounce=0.1)
        monitor.start()
    except OSError as exc:
        pytest.skip(f"no rtnetlink here: {exc}")
    seen: list[list[str]] = []
    try:
        assert monitor.running
        monitor.start()  # idempotent
        system = {a.address for a in interfaces.local_addresses(exclude=())}
        assert {c.host for c in monitor.addresses()} == system - {"127.0.0.1", "::1"}

        def broken(changes: object) -> None:
            raise RuntimeError("listener bug")

        monitor.add_listener(broken)
        remove = monitor.add_listener(lambda changes: seen.append([c.host for c in changes]))
        change = AddressChange(True, ip("198.51.100.77"), 24, 9, "eth9")
        interfaces.local_addresses()  # cached now
        with caplog.at_level("INFO", logger="ice.netmonitor"):
            monitor.notify([change])
        assert seen == [["198.51.100.77"]]  # the broken listener did not stop it
        assert "address added: 198.51.100.77/24 on eth9" in caplog.text
        assert "listener bug" in caplog.text
        assert interfaces._cache is None  # the next local_addresses() asks the system again
        remove()
        remove()
        monitor.notify([change])
        assert seen == [["198.51.100.77"]]
    finally:
        monitor.close()
    assert not monitor.running
    monitor.close()
    with pytest.raises(RuntimeError):
        monitor.start()


async def test_monitor_as_async_context_manager() -> None:
    try:
        async with AddressMonitor() as monitor:
            assert monitor.running and monitor.debounce == 0.4
            await asyncio.sleep(0)
    except OSError as exc:
        pytest.skip(f"no rtnetlink here: {exc}")
    assert not monitor.running


class ScriptedSocket:
    """Stands for the monitor's netlink socket: ``recv`` plays a script of datagrams and
    errors, then would block."""

    def __init__(self, real: socket.socket, script: list[bytes | OSError]) -> None:
        self.real = real
        self.script = script

    def recv(self, size: int) -> bytes:
        if not self.script:
            raise BlockingIOError
        item = self.script.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.real.close()


TABLE = (
    link_msg(2, "eth0") + link_msg(3, "wlan0"),
    addr_msg("198.51.100.5", 2) + addr_msg("203.0.113.9", 3, label="wlan0"),
)


async def scripted_monitor(
    monkeypatch: pytest.MonkeyPatch, tables: list[tuple[bytes, bytes]]
) -> tuple[AddressMonitor, list[list[tuple[bool, str]]]]:
    """A started monitor whose tables come from ``tables`` (one per read) and whose batches
    are collected."""
    monkeypatch.setattr("ice.netmonitor.netlink_tables", lambda: tables.pop(0))
    monitor = AddressMonitor(debounce=0.01)
    try:
        monitor.start()
    except OSError as exc:
        pytest.skip(f"no rtnetlink here: {exc}")
    batches: list[list[tuple[bool, str]]] = []
    monitor.add_listener(lambda changes: batches.append([(c.added, c.host) for c in changes]))
    return monitor, batches


def play(monitor: AddressMonitor, script: list[bytes | OSError]) -> None:
    """Have the monitor read ``script`` as if its socket were readable."""
    assert monitor._sock is not None
    monitor._sock = ScriptedSocket(monitor._sock, script)  # type: ignore[assignment]
    monitor._readable()


async def test_monitor_reports_a_burst_read_from_its_socket(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monitor, batches = await scripted_monitor(monkeypatch, [TABLE])
    try:
        assert sorted(c.host for c in monitor.addresses()) == ["198.51.100.5", "203.0.113.9"]
        with caplog.at_level("WARNING", logger="ice.netmonitor"):
            play(
                monitor,
                [
                    addr_msg("198.51.100.6", 2),
                    b"\x01\x02\x03",  # malformed: dropped, logged, the rest still read
                    addr_msg("198.51.100.5", 2, kind=RTM_DELADDR),
                ],
            )
        assert "malformed netlink notification dropped" in caplog.text
        assert batches == []  # debounced
        await wait_batches(batches, 1)
        assert batches == [[(True, "198.51.100.6"), (False, "198.51.100.5")]]
    finally:
        monitor.close()


async def test_monitor_reads_the_tables_again_after_an_overrun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    after = (TABLE[0], addr_msg("198.51.100.5", 2) + addr_msg("203.0.113.10", 3, label="wlan0"))
    monitor, batches = await scripted_monitor(monkeypatch, [TABLE, after])
    try:
        play(monitor, [OSError(105, "No buffer space available")])  # ENOBUFS
        await wait_batches(batches, 1)
        assert sorted(batches[0]) == [(False, "203.0.113.9"), (True, "203.0.113.10")]
    finally:
        monitor.close()


async def test_a_failing_socket_ends_the_monitor(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monitor, batches = await scripted_monitor(monkeypatch, [TABLE])
    with caplog.at_level("WARNING", logger="ice.netmonitor"):
        play(monitor, [OSError(9, "Bad file descriptor")])
    assert not monitor.running and "address changes no longer seen" in caplog.text


async def wait_batches(batches: list[list[tuple[bool, str]]], count: int) -> None:
    for _ in range(500):
        if len(batches) >= count:
            return
        await asyncio.sleep(0.01)


# -- the reports follow the table (property) ----------------------------------------------------

POOL = ["198.51.100.1", "198.51.100.2", "2001:db8::1", "fe80::1", "127.0.0.2"]
FLAGS = [0, IFA_F_TENTATIVE, IFA_F_DEPRECATED, IFA_F_DADFAILED, IFA_F_TENTATIVE | IFA_F_OPTIMISTIC]
OPS = st.one_of(
    st.tuples(st.just("add"), st.integers(1, 3), st.sampled_from(POOL), st.sampled_from(FLAGS)),
    st.tuples(st.just("del"), st.integers(1, 3), st.sampled_from(POOL), st.just(0)),
    st.tuples(st.just("link"), st.integers(1, 3), st.just(""), st.sampled_from([0, 1])),
    st.tuples(st.just("dellink"), st.integers(1, 3), st.just(""), st.just(0)),
)


@settings(max_examples=300)
@given(st.lists(st.tuples(OPS, st.sampled_from([0.0, 0.1, 0.5, 3.0])), max_size=40))
def test_the_batches_reported_follow_the_usable_addresses(
    steps: list[tuple[tuple[str, int, str, int], float]],
) -> None:
    """Applying every reported batch to the addresses known at the start gives the usable
    addresses at the end (computed by an independent model); no batch adds an address already
    reported or removes one not reported."""
    tracker = AddressTracker(debounce=0.4)
    tracker.load(link_msg(1, "eth1") + link_msg(2, "eth2"), addr_msg("198.51.100.1", 1))
    links: dict[int, bool] = {1: True, 2: True}
    table: dict[tuple[int, str], int] = {(1, "198.51.100.1"): IFA_F_PERMANENT}
    reported = {(c.index, c.host) for c in tracker.addresses()}

    def apply(batch: list[AddressChange]) -> None:
        for c in batch:
            key = (c.index, c.host)
            if c.added:
                assert key not in reported
                reported.add(key)
            else:
                assert key in reported
                reported.discard(key)

    now = 0.0
    for (op, index, host, value), dt in steps:
        now += dt
        when = tracker.get_timer()
        if when is not None and when <= now:
            apply(tracker.handle_timer(when))
        if op == "add":
            tracker.receive(addr_msg(host, index, flags=value, label=None), now)
            table[(index, host)] = value
        elif op == "del":
            tracker.receive(addr_msg(host, index, kind=RTM_DELADDR, label=None), now)
            table.pop((index, host), None)
        elif op == "link":
            tracker.receive(link_msg(index, f"eth{index}", up=bool(value)), now)
            links[index] = bool(value)
        else:
            tracker.receive(link_msg(index, f"eth{index}", kind=RTM_DELLINK), now)
            links.pop(index, None)
            table = {k: v for k, v in table.items() if k[0] != index}
    apply(tracker.handle_timer(now + 100.0))

    def usable(key: tuple[int, str], flags: int) -> bool:
        address = ip(key[1])
        if address.is_loopback or address.is_link_local or flags & IFA_F_DADFAILED:
            return False
        if flags & IFA_F_TENTATIVE and not flags & IFA_F_OPTIMISTIC:
            return False
        return links.get(key[0], True)

    expected = {key for key, flags in table.items() if usable(key, flags)}
    assert reported == expected
    assert {(c.index, c.host) for c in tracker.addresses()} == expected
