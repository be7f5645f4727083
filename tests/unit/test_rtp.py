import struct

import pytest

from media.rtp import (
    RtpHeaderExtension,
    RtpPacket,
    RtpParseError,
    SequenceExtender,
    seq_add,
    seq_diff,
    seq_gt,
    seq_lt,
    timestamp_diff,
)

# A hand-assembled packet: V=2, M=1, PT=111, seq=0x1234, ts=0xDEADBEEF, SSRC=0x01020304.
SIMPLE = bytes.fromhex("80ef1234deadbeef01020304") + b"opus"


def test_parse_simple_known_bytes() -> None:
    p = RtpPacket.parse(SIMPLE)
    assert p.payload_type == 111
    assert p.marker is True
    assert p.sequence_number == 0x1234
    assert p.timestamp == 0xDEADBEEF
    assert p.ssrc == 0x01020304
    assert p.payload == b"opus"
    assert p.csrcs == ()
    assert p.extension is None
    assert p.padding == 0
    assert p.serialize() == SIMPLE


def test_serialize_minimal_header_bytes() -> None:
    p = RtpPacket(payload_type=0, sequence_number=1, timestamp=160, ssrc=7, payload=b"\xff" * 4)
    assert p.serialize() == bytes.fromhex("80000001000000a000000007ffffffff")


def test_parse_accepts_memoryview_and_bytearray() -> None:
    assert RtpPacket.parse(memoryview(SIMPLE)).payload == b"opus"
    assert RtpPacket.parse(bytearray(SIMPLE)).ssrc == 0x01020304


def test_csrc_round_trip() -> None:
    p = RtpPacket(8, 65535, 2**32 - 1, 1, b"x", csrcs=(1, 2, 0xFFFFFFFF))
    data = p.serialize()
    assert data[0] == 0x83
    assert RtpPacket.parse(data) == p


def test_padding_round_trip_and_layout() -> None:
    p = RtpPacket(0, 5, 6, 7, b"abc", padding=5)
    data = p.serialize()
    assert data[0] & 0x20
    assert data[-5:] == b"\x00\x00\x00\x00\x05"
    q = RtpPacket.parse(data)
    assert q.payload == b"abc"
    assert q.padding == 5


def test_padding_only_packet() -> None:
    data = bytes.fromhex("a0000001000000020000000300000004")  # P=1, 4 bytes of padding
    p = RtpPacket.parse(data)
    assert p.payload == b""
    assert p.padding == 4


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "short"),
        (bytes.fromhex("80000001000000020000"), "short"),
        (bytes.fromhex("40000001000000020000000300"), "version"),
        (bytes.fromhex("000000010000000200000003"), "version"),
        (bytes.fromhex("82000001000000020000000300000001"), "CSRC"),  # CC=2, one present
        (bytes.fromhex("90000001000000020000000300"), "extension header"),
        (bytes.fromhex("900000010000000200000003bede0002aabbccdd"), "extension"),
        (bytes.fromhex("a000000100000002000000030100"), "padding count 0"),
        (bytes.fromhex("a000000100000002000000030120"), "padding too large"),
    ],
)
def test_malformed_packets_raise_parse_error(data: bytes, reason: str) -> None:
    with pytest.raises(RtpParseError):
        RtpPacket.parse(data)


def test_parse_error_is_value_error() -> None:
    assert issubclass(RtpParseError, ValueError)


def test_raw_extension_round_trip() -> None:
    ext = RtpHeaderExtension(0x1234, b"\x01\x02\x03\x04\x05\x06\x07\x08")
    p = RtpPacket(96, 1, 2, 3, b"pl", extension=ext, csrcs=(9,), padding=3)
    q = RtpPacket.parse(p.serialize())
    assert q == p
    assert q.extension is not None and not q.extension.is_one_byte
    with pytest.raises(RtpParseError):
        q.extension.elements()


def test_empty_extension() -> None:
    p = RtpPacket(96, 1, 2, 3, b"pl", extension=RtpHeaderExtension(0xBEDE, b""))
    q = RtpPacket.parse(p.serialize())
    assert q.extension == RtpHeaderExtension(0xBEDE, b"")
    assert q.extension.elements() == {}


def test_one_byte_extension_known_bytes() -> None:
    # RFC 8285 §4.2: 0xBEDE, 2 words; ID 1 len 1 (0x20), ID 3 len 2 (aa bb), two padding
    # octets, then an ID 15 header at which parsing stops
    ext_bytes = bytes.fromhex("bede0002102031aabb0000f0")
    data = bytes.fromhex("9000000100000002000000ff") + ext_bytes + b"pay"
    p = RtpPacket.parse(data)
    assert p.payload == b"pay"
    assert p.extension is not None and p.extension.is_one_byte
    assert p.extension.elements() == {1: b"\x20", 3: b"\xaa\xbb"}


def test_one_byte_from_elements_round_trip() -> None:
    elements = {1: b"\x20", 14: b"0123456789abcdef", 5: b"ab"}
    ext = RtpHeaderExtension.from_elements(elements)
    assert ext.profile == 0xBEDE
    assert len(ext.data) % 4 == 0
    p = RtpPacket.parse(RtpPacket(96, 1, 2, 3, b"", extension=ext).serialize())
    assert p.extension is not None
    assert p.extension.elements() == elements


def test_two_byte_form_chosen_when_needed() -> None:
    elements = {1: b"", 20: b"x" * 40, 255: b"y"}
    ext = RtpHeaderExtension.from_elements(elements)
    assert ext.is_two_byte
    assert ext.profile & 0xFFF0 == 0x1000
    assert ext.elements() == elements


def test_two_byte_with_appbits_and_padding() -> None:
    ext = RtpHeaderExtension(0x100F, bytes([0, 0, 7, 2, 0xAA, 0xBB, 0, 0]))
    assert ext.elements() == {7: b"\xaa\xbb"}


@pytest.mark.parametrize(
    "ext",
    [
        RtpHeaderExtension(0xBEDE, bytes([0x13, 0xAA])),  # needs 4 value bytes
        RtpHeaderExtension(0x1000, bytes([7])),  # length octet missing
        RtpHeaderExtension(0x1000, bytes([7, 9, 1])),
    ],
)
def test_malformed_elements(ext: RtpHeaderExtension) -> None:
    with pytest.raises(RtpParseError):
        ext.elements()


def test_from_elements_rejects_bad_ids() -> None:
    with pytest.raises(ValueError):
        RtpHeaderExtension.from_elements({0: b"a"})
    with pytest.raises(ValueError):
        RtpHeaderExtension.from_elements({1: b"a" * 256})


@pytest.mark.parametrize(
    "packet",
    [
        RtpPacket(128, 1, 2, 3),
        RtpPacket(-1, 1, 2, 3),
        RtpPacket(0, 65536, 2, 3),
        RtpPacket(0, 1, 2**32, 3),
        RtpPacket(0, 1, 2, -1),
        RtpPacket(0, 1, 2, 3, csrcs=tuple(range(16))),
        RtpPacket(0, 1, 2, 3, padding=256),
        RtpPacket(0, 1, 2, 3, extension=RtpHeaderExtension(1, b"abc")),
    ],
)
def test_serialize_rejects_invalid_fields(packet: RtpPacket) -> None:
    with pytest.raises(ValueError):
        packet.serialize()


def test_marker_and_payload_type_bits_are_independent() -> None:
    for pt in (0, 8, 96, 127):
        for marker in (False, True):
            p = RtpPacket.parse(RtpPacket(pt, 0, 0, 0, marker=marker).serialize())
            assert (p.payload_type, p.marker) == (pt, marker)


def test_header_struct_layout_matches_rfc3550() -> None:
    data = RtpPacket(96, 0xABCD, 0x11223344, 0x55667788, b"", marker=True).serialize()
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data)
    assert b0 >> 6 == 2 and b1 == 0x80 | 96
    assert (seq, ts, ssrc) == (0xABCD, 0x11223344, 0x55667788)


# --- sequence numbers -------------------------------------------------------------------------


def test_seq_arithmetic_wraps() -> None:
    assert seq_add(65535, 1) == 0
    assert seq_add(0, -1) == 65535
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(100, 50) == 50
    assert seq_diff(0x8000, 0) == -32768
    assert seq_lt(65535, 0) and seq_gt(0, 65535)
    assert not seq_lt(5, 5) and not seq_gt(5, 5)
    assert seq_lt(1, 2) and not seq_lt(2, 1)


def test_timestamp_diff_wraps() -> None:
    assert timestamp_diff(0, 0xFFFFFF60) == 160
    assert timestamp_diff(0xFFFFFF60, 0) == -160
    assert timestamp_diff(960, 0) == 960


def test_extender_counts_cycles_across_wrap() -> None:
    ext = SequenceExtender()
    seqs = [65533, 65534, 65535, 0, 1, 2]
    out = [ext.extend(s) for s in seqs]
    assert out == [65533, 65534, 65535, 65536, 65537, 65538]
    assert ext.highest == 65538
    assert ext.cycles == 65536


def test_extender_late_packet_from_previous_cycle() -> None:
    ext = SequenceExtender()
    for s in (65534, 65535, 0, 1):
        ext.extend(s)
    assert ext.extend(65533) == 65533  # reordered across the wrap: previous cycle
    assert ext.extend(0) == 65536  # duplicate
    assert ext.highest == 65537


def test_extender_many_wraps() -> None:
    ext = SequenceExtender()
    seq = 60000
    expected = seq
    for _ in range(300000):
        assert ext.extend(seq) == expected
        seq = (seq + 1) & 0xFFFF
        expected += 1
    assert ext.cycles == (expected - 1) >> 16 << 16


def test_extender_ignores_a_lone_jump_but_resyncs_on_two() -> None:
    ext = SequenceExtender()
    for s in range(100, 110):
        ext.extend(s)
    ext.extend(40000)  # stray packet
    assert ext.highest == 109
    assert ext.extend(110) == 110
    ext.extend(50000)
    ext.extend(50001)  # two in a row: the source restarted its numbering
    assert ext.highest is not None and ext.highest & 0xFFFF == 50001
    assert ext.extend(50002) == ext.highest


def test_extender_reset() -> None:
    ext = SequenceExtender()
    ext.extend(5)
    ext.reset()
    assert ext.highest is None
    assert ext.extend(9) == 9


def test_rfc8285_figure_layout() -> None:
    # the RFC 8285 §4.2 example shape: length 3 words; elements with L=0, L=1, two padding
    # octets, then an element with L=3
    data = bytes.fromhex("bede000310aa21bbcc000033ddeeff11")
    packet = bytes.fromhex("90000001000000020000000e") + data
    p = RtpPacket.parse(packet)
    assert p.payload == b""
    assert p.extension is not None
    assert p.extension.elements() == {1: b"\xaa", 2: b"\xbb\xcc", 3: b"\xdd\xee\xff\x11"}
    assert p.serialize() == packet


def test_one_byte_id0_with_length_bits_is_padding() -> None:
    ext = RtpHeaderExtension(0xBEDE, bytes([0x05, 0x10, 0x42, 0x00]))
    assert ext.elements() == {1: b"\x42"}
