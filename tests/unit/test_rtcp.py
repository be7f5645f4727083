import struct
from datetime import UTC, datetime

import pytest

from media.rtcp import (
    ApplicationDefined,
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SdesChunk,
    SdesItemType,
    SenderReport,
    SourceDescription,
    UnknownRtcpPacket,
    delay_to_dlsr,
    is_rtcp,
    ntp_from_unix,
    ntp_middle32,
    parse_rtcp,
    round_trip_time,
    serialize_rtcp,
    unix_from_ntp,
)
from media.rtp import RtpPacket

BLOCK = ReportBlock(
    ssrc=0x11111111,
    fraction_lost=64,
    cumulative_lost=-3,
    highest_seq=0x0001FFFF,
    jitter=123,
    lsr=0xB7052000,
    dlsr=0x00054000,
)


def hand_sr() -> bytes:
    """An SR with one report block, assembled field by field from RFC 3550 §6.4.1."""
    header = struct.pack("!BBH", 0x81, 200, 12)  # V=2, RC=1, length 13 words - 1
    info = struct.pack("!IIIIII", 0xAABBCCDD, 0xB44DB705, 0x20000000, 48000, 50, 8000)
    block = struct.pack(
        "!IIIIII",
        0x11111111,
        (64 << 24) | 0xFFFFFD,  # fraction 64/256, cumulative lost -3 (24-bit two's complement)
        0x0001FFFF,
        123,
        0xB7052000,
        0x00054000,
    )
    return header + info + block


def hand_sdes() -> bytes:
    # one chunk, CNAME "ab@c" (4 octets) -> 4 + 2 + 4 = 10, padded to 12 with nulls
    body = struct.pack("!I", 0xAABBCCDD) + bytes([1, 4]) + b"ab@c" + b"\x00\x00"
    return struct.pack("!BBH", 0x81, 202, len(body) // 4) + body


def test_parse_hand_built_sender_report() -> None:
    (sr,) = parse_rtcp(hand_sr())
    assert isinstance(sr, SenderReport)
    assert sr.ssrc == 0xAABBCCDD
    assert sr.ntp_timestamp == 0xB44DB70520000000
    assert (sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (48000, 50, 8000)
    assert sr.reports == [BLOCK]
    assert sr.extension == b""


def test_serialize_matches_hand_built_bytes() -> None:
    packets: list[RtcpPacket] = [
        SenderReport(0xAABBCCDD, 0xB44DB70520000000, 48000, 50, 8000, [BLOCK]),
        SourceDescription.with_cname(0xAABBCCDD, "ab@c"),
    ]
    assert serialize_rtcp(packets) == hand_sr() + hand_sdes()


def test_compound_round_trip_all_types() -> None:
    packets: list[RtcpPacket] = [
        ReceiverReport(1, [BLOCK, ReportBlock(2, cumulative_lost=0x7FFFFF)], extension=b"EXT!"),
        SourceDescription(
            [
                SdesChunk(1, [(SdesItemType.CNAME, b"alice@host"), (SdesItemType.TOOL, b"sp")]),
                SdesChunk(2, [(SdesItemType.CNAME, b"x"), (SdesItemType.PRIV, b"\x01pv")]),
                SdesChunk(3, []),
            ]
        ),
        ApplicationDefined(5, 1, b"TEST", b"12345678"),
        UnknownRtcpPacket(205, 1, b"\x00\x00\x00\x01\x00\x00\x00\x02"),  # RTPFB, kept raw
        Goodbye([1, 2], "hanging up"),
    ]
    data = serialize_rtcp(packets)
    assert len(data) % 4 == 0
    assert parse_rtcp(data, strict=True) == packets


def test_cumulative_lost_sign_extension() -> None:
    for lost in (-(1 << 23), -1, 0, 1, (1 << 23) - 1):
        rr = ReceiverReport(9, [ReportBlock(1, cumulative_lost=lost)])
        (parsed,) = parse_rtcp(serialize_rtcp([rr], compound=False))
        assert isinstance(parsed, ReceiverReport)
        assert parsed.reports[0].cumulative_lost == lost


def test_sdes_cname_and_get() -> None:
    chunk = SdesChunk(7, [(SdesItemType.NAME, b"Alice"), (SdesItemType.CNAME, b"a@b")])
    assert chunk.cname == "a@b"
    assert chunk.get(SdesItemType.NAME) == b"Alice"
    assert chunk.get(SdesItemType.EMAIL) is None
    assert SdesChunk(1).cname is None


def test_sdes_chunk_padding_is_always_present() -> None:
    # item of 2 octets: 4 (ssrc) + 2 + 2 = 8 -> a full word of nulls must follow (§6.5)
    sdes = SourceDescription([SdesChunk(1, [(SdesItemType.CNAME, b"ab")])])
    data = serialize_rtcp([sdes], compound=False)
    assert data[-4:] == b"\x00\x00\x00\x00"
    assert parse_rtcp(data) == [sdes]


def test_bye_without_and_with_reason() -> None:
    for bye in (Goodbye([5]), Goodbye([5, 6, 7], ""), Goodbye([], "bye"), Goodbye([1], "é")):
        assert parse_rtcp(serialize_rtcp([bye], compound=False)) == [bye]


def test_padding_on_last_packet() -> None:
    packets: list[RtcpPacket] = [
        ReceiverReport(1),
        SourceDescription.with_cname(1, "c"),
    ]
    data = serialize_rtcp(packets, padding=8)
    assert data[-1] == 8
    assert parse_rtcp(data, strict=True) == packets


def test_padding_on_first_packet_rejected_only_when_strict() -> None:
    rr = serialize_rtcp([ReceiverReport(1)], compound=False, padding=4)
    sdes = serialize_rtcp([SourceDescription.with_cname(1, "c")], compound=False)
    assert len(parse_rtcp(rr + sdes)) == 2
    with pytest.raises(RtcpParseError):
        parse_rtcp(rr + sdes, strict=True)


def test_strict_requires_sr_or_rr_first() -> None:
    data = serialize_rtcp([Goodbye([1])], compound=False)
    assert parse_rtcp(data) == [Goodbye([1])]
    with pytest.raises(RtcpParseError):
        parse_rtcp(data, strict=True)


def test_unknown_packet_kept_raw() -> None:
    raw = struct.pack("!BBH", 0x80 | 3, 207, 1) + b"abcd"  # XR
    rr = serialize_rtcp([ReceiverReport(1)], compound=False)
    packets = parse_rtcp(rr + raw)
    assert packets[1] == UnknownRtcpPacket(207, 3, b"abcd")
    assert serialize_rtcp(packets, compound=False) == rr + raw


def test_sr_profile_extension_kept() -> None:
    sr = SenderReport(1, 2, 3, 4, 5, [], extension=b"\x01\x02\x03\x04")
    assert parse_rtcp(serialize_rtcp([sr], compound=False)) == [sr]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\xc8\x00",
        struct.pack("!BBH", 0x40, 201, 1) + b"\x00" * 4,  # version 1
        struct.pack("!BBH", 0x80, 201, 5) + b"\x00" * 4,  # length past the datagram
        struct.pack("!BBH", 0x81, 201, 1) + b"\x00" * 4,  # RC=1, no block
        struct.pack("!BBH", 0x81, 200, 6) + b"\x00" * 24,  # SR RC=1, no block
        struct.pack("!BBH", 0x80, 200, 1) + b"\x00" * 4,  # SR without sender info
        struct.pack("!BBH", 0x80, 201, 1) + b"\x00" * 4 + b"\x80",  # trailing byte
        struct.pack("!BBH", 0xA0, 201, 1) + b"\x00" * 4,  # padding count 0
        struct.pack("!BBH", 0xA0, 201, 1) + b"\x00\x00\x00\x09",  # padding count too big
        struct.pack("!BBH", 0x81, 202, 1) + b"\x00" * 4,  # SDES chunk without null item
        struct.pack("!BBH", 0x81, 202, 2) + b"\x00" * 4 + b"\x01\x09ab" + b"\x00" * 4,
        struct.pack("!BBH", 0x82, 203, 1) + b"\x00" * 4,  # BYE SC=2, one SSRC
        struct.pack("!BBH", 0x81, 203, 2) + b"\x00" * 4 + b"\x09abc",  # reason too long
        struct.pack("!BBH", 0x80, 204, 1) + b"\x00" * 4,  # APP without name
    ],
)
def test_malformed_raise_parse_error(data: bytes) -> None:
    with pytest.raises(RtcpParseError):
        parse_rtcp(data)


def test_builder_is_strict() -> None:
    cname = SourceDescription.with_cname(1, "c")
    with pytest.raises(ValueError):
        serialize_rtcp([])
    with pytest.raises(ValueError):
        serialize_rtcp([cname, ReceiverReport(1)])  # SDES first
    with pytest.raises(ValueError):
        serialize_rtcp([ReceiverReport(1)])  # no CNAME
    bad: list[RtcpPacket] = [
        ReceiverReport(1, [ReportBlock(1, fraction_lost=256)]),
        ReceiverReport(1, [ReportBlock(1, cumulative_lost=1 << 23)]),
        ReceiverReport(1, [ReportBlock(1)] * 32),
        ReceiverReport(1 << 32),
        SenderReport(1, 1 << 64, 0, 0, 0),
        ApplicationDefined(32, 1, b"NAME"),
        ApplicationDefined(1, 1, b"NAM"),
        ApplicationDefined(1, 1, b"NAME", b"abc"),
        Goodbye([1], "x" * 256),
        SourceDescription([SdesChunk(1, [(SdesItemType.CNAME, b"x" * 256)])]),
        SourceDescription([SdesChunk(1, [(0, b"x")])]),
        UnknownRtcpPacket(205, 1, b"abc"),
    ]
    for packet in bad:
        with pytest.raises(ValueError):
            serialize_rtcp([packet], compound=False)
    with pytest.raises(ValueError):
        serialize_rtcp([ReceiverReport(1), cname], padding=3)


# --- demux ------------------------------------------------------------------------------------


def test_is_rtcp_rfc5761() -> None:
    rr = serialize_rtcp([ReceiverReport(1)], compound=False)
    assert is_rtcp(rr)
    assert is_rtcp(serialize_rtcp([Goodbye([1])], compound=False))
    for pt in (0, 8, 96, 111, 127):
        for marker in (False, True):
            assert not is_rtcp(RtpPacket(pt, 1, 2, 3, b"x", marker=marker).serialize())
    assert not is_rtcp(b"\x80")
    assert not is_rtcp(b"\x00\xc9\x00\x01")  # STUN-ish first byte, wrong version
    assert is_rtcp(bytes([0x80, 192])) and is_rtcp(bytes([0x80, 223]))
    assert not is_rtcp(bytes([0x80, 191])) and not is_rtcp(bytes([0x80, 224]))


# --- NTP and RTT ------------------------------------------------------------------------------


def test_rfc3550_figure2_rtt_example() -> None:
    # RFC 3550 §6.4.1 Figure 2: A = 0xb710:8000, LSR = 0xb705:2000, DLSR = 0x0005:4000
    arrival = (0xB44DB710 << 32) | 0x80000000
    assert ntp_middle32(arrival) == 0xB7108000
    assert round_trip_time(arrival, 0xB7052000, 0x00054000) == pytest.approx(6.125)


def test_rtt_edge_cases() -> None:
    assert round_trip_time(ntp_from_unix(100.0), 0, 0) is None
    now = ntp_from_unix(1000.0)
    lsr = ntp_middle32(ntp_from_unix(999.9))
    assert round_trip_time(now, lsr, delay_to_dlsr(0.2)) == 0.0  # negative -> 0
    assert round_trip_time(now, lsr, delay_to_dlsr(0.05)) == pytest.approx(0.05, abs=1e-4)


def test_rtt_across_ntp_short_wrap() -> None:
    # middle 32 bits wrap every 65536 s; RTT still comes out right
    sent = (0x0000FFFF << 32) | 0xFFFF0000
    arrival = sent + int(0.3 * (1 << 32))
    rtt = round_trip_time(arrival, ntp_middle32(sent), delay_to_dlsr(0.1))
    assert rtt == pytest.approx(0.2, abs=1e-4)


def test_ntp_from_unix_known_instant() -> None:
    # RFC 3550 Figure 2: 10 Nov 1995 11:33:25.125 UTC = ntp_sec 0xb44db705, frac 0x20000000
    unix = datetime(1995, 11, 10, 11, 33, 25, 125000, tzinfo=UTC).timestamp()
    assert ntp_from_unix(unix) == (0xB44DB705 << 32) | 0x20000000
    assert unix_from_ntp((0xB44DB705 << 32) | 0x20000000) == pytest.approx(unix)


def test_ntp_round_trip_precision() -> None:
    for t in (0.0, 1.5, 1_700_000_000.123456, 2_000_000_000.999999):
        assert unix_from_ntp(ntp_from_unix(t)) == pytest.approx(t, abs=1e-6)


def test_delay_to_dlsr() -> None:
    assert delay_to_dlsr(5.25) == 0x00054000
    assert delay_to_dlsr(-1) == 0
    assert delay_to_dlsr(1e9) == 0xFFFFFFFF


# A compound packet captured from a browser (RR, SDES, BYE, PSFB PLI, RTPFB RRR), as published
# in the pion/rtcp test suite: an independent real-world vector.
CAPTURED = bytes.fromhex(
    "81c90007902f9e2ebc5e9a4000000000000046e10000011109f36432"
    "00024a79"
    "81ca000c902f9e2e0126" + b"{9c00eb92-1afb-9d49-a47d-91f64eee69f5}".hex() + "00000000"
    "81cb0001902f9e2e"
    "81ce0002902f9e2e902f9e2e"
    "85cd0002902f9e2e902f9e2e"
)


def test_captured_compound_packet() -> None:
    packets = parse_rtcp(CAPTURED, strict=True)
    assert packets == [
        ReceiverReport(
            0x902F9E2E,
            [ReportBlock(0xBC5E9A40, 0, 0, 0x46E1, 273, 0x09F36432, 150137)],
        ),
        SourceDescription(
            [SdesChunk(0x902F9E2E, [(1, b"{9c00eb92-1afb-9d49-a47d-91f64eee69f5}")])]
        ),
        Goodbye([0x902F9E2E]),
        UnknownRtcpPacket(206, 1, bytes.fromhex("902f9e2e902f9e2e")),
        UnknownRtcpPacket(205, 5, bytes.fromhex("902f9e2e902f9e2e")),
    ]
    assert serialize_rtcp(packets) == CAPTURED


def test_rtt_scenario_over_the_wire() -> None:
    # A sends an SR; B answers 300 ms later with an RR block carrying LSR/DLSR; one-way
    # delays are 50 ms and 70 ms, so A measures an RTT of 120 ms (RFC 3550 §6.4.1)
    t0 = 1_700_000_000.0
    sr = SenderReport(0xA, ntp_from_unix(t0), 0, 10, 1600)
    sr_wire = serialize_rtcp([sr, SourceDescription.with_cname(0xA, "a@x")])
    (received_sr, _) = parse_rtcp(sr_wire)
    assert isinstance(received_sr, SenderReport)
    block = ReportBlock(0xA, lsr=ntp_middle32(received_sr.ntp_timestamp), dlsr=delay_to_dlsr(0.300))
    rr_wire = serialize_rtcp([ReceiverReport(0xB, [block]), SourceDescription.with_cname(0xB, "b")])
    (rr, _) = parse_rtcp(rr_wire, strict=True)
    assert isinstance(rr, ReceiverReport)
    arrival = ntp_from_unix(t0 + 0.050 + 0.300 + 0.070)
    rtt = round_trip_time(arrival, rr.reports[0].lsr, rr.reports[0].dlsr)
    assert rtt == pytest.approx(0.120, abs=2 / 65536)
