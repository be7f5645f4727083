"""RFC 5626 §4.4.2 STUN keepalives in ``sip.transport``: the minimal Binding codec (RFC 5389)
and the keepalive schedule with retransmissions, on a virtual clock."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip.transport import (
    STUN_RTO,
    KeepaliveAction,
    KeepaliveSchedule,
    is_keepalive_datagram,
    parse_stun_binding_response,
    stun_binding_request,
)

TID = bytes.fromhex("65cb316c36ab9e2f0039beec")
#: Kamailio 5.6 stun.so's answer to a Binding request from 127.0.0.1:45464 (captured)
KAMAILIO_RESPONSE = bytes.fromhex(
    "010100382112a44265cb316c36ab9e2f0039beec002000080001908a5e12a443802200275365727665723a"
    "206b616d61696c696f2028352e362e3320287838365f36342f6c696e7578292900"
)


def response(*attributes: tuple[int, bytes], tid: bytes = TID) -> bytes:
    body = b""
    for attr, value in attributes:
        body += struct.pack("!HH", attr, len(value)) + value + b"\0" * (-len(value) % 4)
    return struct.pack("!HHI", 0x0101, len(body), 0x2112A442) + tid + body


def test_binding_request_is_a_bare_rfc5389_header():
    data = stun_binding_request(TID)
    assert data == bytes.fromhex("000100002112a442") + TID
    assert is_keepalive_datagram(data)  # never taken for SIP on our own socket
    with pytest.raises(ValueError):
        stun_binding_request(b"short")


def test_kamailio_response_gives_the_mapped_address():
    assert parse_stun_binding_response(KAMAILIO_RESPONSE) == (TID, ("127.0.0.1", 45464))


def test_xor_mapped_ipv6_and_plain_mapped_address():
    ip6 = bytes.fromhex("20010db8000000000000000000000001")
    key = bytes.fromhex("2112a442") + TID
    xored = bytes(a ^ b for a, b in zip(ip6, key, strict=True))
    value = struct.pack("!BBH", 0, 2, 5060 ^ 0x2112) + xored
    assert parse_stun_binding_response(response((0x0020, value))) == (TID, ("2001:db8::1", 5060))
    plain = struct.pack("!BBH", 0, 1, 5070) + bytes([192, 0, 2, 1])
    assert parse_stun_binding_response(response((0x0001, plain))) == (TID, ("192.0.2.1", 5070))
    # XOR-MAPPED-ADDRESS wins over MAPPED-ADDRESS whatever the order
    xor4 = struct.pack("!BBH", 0, 1, 5080 ^ 0x2112) + bytes(
        a ^ b for a, b in zip(bytes([198, 51, 100, 7]), key, strict=False)
    )
    both = response((0x0020, xor4), (0x0001, plain))
    assert parse_stun_binding_response(both) == (TID, ("198.51.100.7", 5080))
    assert parse_stun_binding_response(response()) == (TID, None)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        stun_binding_request(TID),  # a request, not a response
        KAMAILIO_RESPONSE[:19],
        KAMAILIO_RESPONSE[:4] + b"\0\0\0\0" + KAMAILIO_RESPONSE[8:],  # no magic cookie
        KAMAILIO_RESPONSE[:-4],  # shorter than its length says
        response((0x0020, b"\0\x03\0\0\0\0\0\0")),  # unknown family: no address
    ],
    ids=["empty", "crlf", "request", "short", "cookie", "truncated", "family"],
)
def test_other_datagrams_are_not_binding_responses(data):
    parsed = parse_stun_binding_response(data)
    assert parsed is None or parsed[1] is None


@given(st.binary(max_size=120))
def test_parser_never_raises(data):
    parse_stun_binding_response(data)
    parse_stun_binding_response(KAMAILIO_RESPONSE[:20] + data)


def test_schedule_retransmits_the_ping_then_fails_at_the_pong_timeout():
    """RFC 5389 §7.2.1 retransmissions (0.5 s, doubling) within the 10 s pong timeout."""
    s = KeepaliveSchedule(25.0, 0.0, pong_timeout=10.0, retransmit=STUN_RTO)
    first = s.get_timer()
    assert first is not None and 20.0 <= first <= 25.0
    actions = []
    now = first
    while (t := s.get_timer()) is not None and t <= first + 10.0:
        now = t
        actions.append((round(now - first, 6), s.handle_timer(now)))
    assert actions == [
        (0.0, KeepaliveAction.SEND_PING),
        (0.5, KeepaliveAction.RESEND_PING),
        (1.5, KeepaliveAction.RESEND_PING),
        (3.5, KeepaliveAction.RESEND_PING),
        (7.5, KeepaliveAction.RESEND_PING),
        (10.0, KeepaliveAction.FLOW_FAILED),
    ]
    assert s.failed and s.get_timer() is None


def test_schedule_pong_stops_retransmissions_and_the_next_ping_is_new():
    s = KeepaliveSchedule(25.0, 0.0, pong_timeout=10.0, retransmit=STUN_RTO)
    first = s.get_timer()
    assert first is not None
    assert s.handle_timer(first) is KeepaliveAction.SEND_PING
    assert s.handle_timer(first + 0.5) is KeepaliveAction.RESEND_PING
    s.pong_received(first + 0.7)
    nxt = s.get_timer()
    assert nxt is not None and first + 20.0 <= nxt <= first + 25.0  # no resend, no failure
    assert s.handle_timer(nxt) is KeepaliveAction.SEND_PING
    assert not s.failed


def test_schedule_without_retransmit_keeps_the_stream_behaviour():
    s = KeepaliveSchedule(25.0, 0.0, pong_timeout=10.0)
    first = s.get_timer()
    assert first is not None
    assert s.handle_timer(first) is KeepaliveAction.SEND_PING
    assert s.get_timer() == first + 10.0
    assert s.handle_timer(first + 10.0) is KeepaliveAction.FLOW_FAILED
