"""ice.interfaces reading addresses over rtnetlink: the parsers on canned kernel messages
(fuzzed: never an exception), and the real system read both ways (netlink and ``ip``)."""

from __future__ import annotations

import shutil
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ice import interfaces
from ice.interfaces import LocalAddress, parse_netlink_addresses, parse_netlink_links

RTM_NEWLINK, RTM_NEWADDR, NLMSG_DONE = 16, 20, 3
IFF_UP = 0x1


def attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def message(kind: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body


def link(index: int, name: str, up: bool = True) -> bytes:
    info = struct.pack("=BxHiII", 0, 1, index, IFF_UP if up else 0, 0)
    return message(RTM_NEWLINK, info + attr(3, name.encode() + b"\0"))


def address(
    family: int,
    ip: str,
    index: int,
    prefix: int = 24,
    flags: int = 0,
    label: str | None = None,
    extended_flags: int | None = None,
    local: str | None = None,
) -> bytes:
    packed = socket.inet_pton(family, ip)
    body = struct.pack("=BBBBI", family, prefix, flags & 0xFF, 0, index) + attr(1, packed)
    if local is not None:
        body += attr(2, socket.inet_pton(family, local))
    if label is not None:
        body += attr(3, label.encode() + b"\0")
    if extended_flags is not None:
        body += attr(8, struct.pack("=I", extended_flags))
    return message(RTM_NEWADDR, body)


LINKS = link(1, "lo") + link(2, "eth0") + link(3, "wlan0", up=False)


def test_links_with_names_and_state() -> None:
    assert parse_netlink_links(LINKS + message(NLMSG_DONE, b"\0" * 4)) == {
        1: ("lo", True),
        2: ("eth0", True),
        3: ("wlan0", False),
    }


def test_addresses_of_both_families_with_interface_names() -> None:
    links = parse_netlink_links(LINKS)
    data = (
        address(socket.AF_INET, "127.0.0.1", 1, 8, label="lo")
        + address(socket.AF_INET, "192.0.2.2", 2, 24, label="eth0")
        + address(socket.AF_INET6, "2001:db8::2", 2, 64)
        + address(socket.AF_INET6, "2001:db8::dead", 2, 64, flags=0x20)  # deprecated
        + address(socket.AF_INET, "198.51.100.9", 3)  # interface down
        + address(socket.AF_INET6, "2001:db8::3", 2, 64, flags=0x40)  # tentative
        + address(socket.AF_INET6, "2001:db8::4", 2, 64, extended_flags=0x08)  # DAD failed
    )
    assert parse_netlink_addresses(data, links) == [
        LocalAddress("127.0.0.1", "lo", 8),
        LocalAddress("192.0.2.2", "eth0", 24),
        LocalAddress("2001:db8::2", "eth0", 64),
        LocalAddress("2001:db8::dead", "eth0", 64, deprecated=True),
    ]


def test_point_to_point_local_end_and_label_without_links() -> None:
    data = address(socket.AF_INET, "10.8.0.1", 7, 32, label="ppp0:1", local="10.8.0.6")
    assert parse_netlink_addresses(data) == [LocalAddress("10.8.0.6", "ppp0", 32)]


def test_other_families_and_short_messages_are_skipped() -> None:
    odd = message(RTM_NEWADDR, struct.pack("=BBBBI", 17, 0, 0, 0, 1) + attr(1, b"\1\2"))
    short = message(RTM_NEWADDR, b"\2\0")
    truncated = address(socket.AF_INET, "192.0.2.9", 2)[:-3]
    assert parse_netlink_addresses(odd + short) == []
    assert parse_netlink_addresses(truncated) == []
    assert parse_netlink_links(b"\xff" * 7) == {}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parsers_never_raise(data: bytes) -> None:
    parse_netlink_links(data)
    parse_netlink_addresses(data, {1: ("x", True)})
    # and the same bytes as the body of well-framed messages
    framed = message(RTM_NEWADDR, data) + message(RTM_NEWLINK, data)
    parse_netlink_links(framed)
    parse_netlink_addresses(framed)


@pytest.mark.skipif(not hasattr(socket, "AF_NETLINK"), reason="netlink is Linux only")
def test_the_system_read_over_netlink_matches_iproute2() -> None:
    via_netlink = interfaces._from_netlink()
    assert via_netlink, "the kernel lists at least the loopback address"
    assert any(a.is_loopback and a.interface == "lo" for a in via_netlink)
    if shutil.which("ip") is None:
        pytest.skip("iproute2 not installed: nothing to compare with")
    via_ip = interfaces._from_iproute2()
    assert via_ip is not None
    key = lambda a: (a.address, a.interface, a.prefixlen, a.deprecated)  # noqa: E731
    assert sorted(map(key, via_netlink)) == sorted(map(key, via_ip))


def test_iproute2_is_the_fallback_when_netlink_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    used = []

    def iproute2() -> list[LocalAddress]:
        used.append(1)
        return [LocalAddress("192.0.2.77", "eth9", 24)]

    monkeypatch.setattr(interfaces, "_cache", None)
    monkeypatch.setattr(interfaces, "_from_netlink", lambda: None)
    monkeypatch.setattr(interfaces, "_from_iproute2", iproute2)
    assert [a.address for a in interfaces.local_addresses()] == ["192.0.2.77"]
    assert used == [1]
