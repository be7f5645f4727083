"""Property tests and fuzzing of the media parsers: only the package's own errors may escape."""

import contextlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media.g711 import alaw_decode, ulaw_decode
from media.opus import OpusCodecError, OpusDecoder, OpusParams, packet_samples, parse_fmtp
from media.rtcp import (
    ApplicationDefined,
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SdesChunk,
    SenderReport,
    SourceDescription,
    UnknownRtcpPacket,
    parse_rtcp,
    serialize_rtcp,
)
from media.rtp import RtpHeaderExtension, RtpPacket, RtpParseError, SequenceExtender
from media.telephone_event import TelephoneEvent, TelephoneEventError, TelephoneEventReceiver

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def words(max_words: int = 6) -> st.SearchStrategy[bytes]:
    return st.integers(0, max_words).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n))


extensions = st.one_of(
    st.builds(RtpHeaderExtension, u16, words()),
    st.dictionaries(st.integers(1, 14), st.binary(min_size=1, max_size=16), max_size=5).map(
        RtpHeaderExtension.from_elements
    ),
    st.dictionaries(st.integers(1, 255), st.binary(max_size=40), max_size=4).map(
        RtpHeaderExtension.from_elements
    ),
)

rtp_packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=u16,
    timestamp=u32,
    ssrc=u32,
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrcs=st.lists(u32, max_size=15).map(tuple),
    extension=st.none() | extensions,
    padding=st.integers(0, 255),
)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with a few bytes overwritten, and maybe truncated or extended."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(u8)
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=8))


# --- RTP --------------------------------------------------------------------------------------


@given(rtp_packets)
@FUZZ
def test_rtp_round_trip(packet: RtpPacket) -> None:
    assert RtpPacket.parse(packet.serialize()) == packet


def _check_rtp(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    if packet.padding == 0:
        assert packet.serialize() == data
    if packet.extension is not None:
        with contextlib.suppress(RtpParseError):
            packet.extension.elements()


@given(st.binary(max_size=80))
@FUZZ
def test_rtp_parse_random_bytes(data: bytes) -> None:
    _check_rtp(data)


@given(mutated(rtp_packets.map(RtpPacket.serialize)))
@FUZZ
def test_rtp_parse_mutated_packets(data: bytes) -> None:
    _check_rtp(data)


@given(u16, st.integers(1, 5000), st.lists(st.integers(1, 200), min_size=1, max_size=200))
@FUZZ
def test_sequence_extender_tracks_true_count(start: int, offset: int, steps: list[int]) -> None:
    ext = SequenceExtender()
    true = start
    assert ext.extend(true & 0xFFFF) == start
    for step in steps:
        true += step
        assert ext.extend(true & 0xFFFF) == true
    # a late packet a little behind gets its own (possibly previous-cycle) number
    late = true - min(offset, 99, true - start) if true > start else true
    assert ext.extend(late & 0xFFFF) == late


@given(u16, st.lists(st.tuples(st.integers(1, 50), st.booleans()), min_size=2, max_size=300))
@FUZZ
def test_sequence_extender_with_adjacent_reordering(
    start: int, steps: list[tuple[int, bool]]
) -> None:
    true = [start]
    for step, _ in steps:
        true.append(true[-1] + step)
    arrival = list(true)
    i = 1  # the first packet defines the start; swap disjoint neighbour pairs after it
    while i + 1 < len(arrival):
        if steps[i][1]:
            arrival[i], arrival[i + 1] = arrival[i + 1], arrival[i]
            i += 2
        else:
            i += 1
    ext = SequenceExtender()
    assert [ext.extend(s & 0xFFFF) for s in arrival] == arrival
    assert ext.highest == true[-1]


# --- RTCP -------------------------------------------------------------------------------------

report_blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=u8,
    cumulative_lost=st.integers(-(1 << 23), (1 << 23) - 1),
    highest_seq=u32,
    jitter=u32,
    lsr=u32,
    dlsr=u32,
)
sdes_items = st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=30)), max_size=4)
rtcp_packets: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(
        SenderReport,
        ssrc=u32,
        ntp_timestamp=st.integers(0, (1 << 64) - 1),
        rtp_timestamp=u32,
        packet_count=u32,
        octet_count=u32,
        reports=st.lists(report_blocks, max_size=3),
        extension=words(2),
    ),
    st.builds(ReceiverReport, u32, st.lists(report_blocks, max_size=3), words(2)),
    st.builds(
        SourceDescription,
        st.lists(st.builds(SdesChunk, u32, sdes_items), max_size=3),
    ),
    st.builds(Goodbye, st.lists(u32, max_size=4), st.none() | st.text(max_size=40)),
    st.builds(
        ApplicationDefined, st.integers(0, 31), u32, st.binary(min_size=4, max_size=4), words()
    ),
    st.builds(
        UnknownRtcpPacket,
        st.sampled_from([192, 193, 195, 205, 206, 207, 210]),
        st.integers(0, 31),
        words(),
    ),
)


@given(st.lists(rtcp_packets, min_size=1, max_size=5), st.sampled_from([0, 4, 8, 252]))
@FUZZ
def test_rtcp_round_trip(packets: list[RtcpPacket], padding: int) -> None:
    data = serialize_rtcp(packets, compound=False, padding=padding)
    assert parse_rtcp(data) == packets


def _check_rtcp(data: bytes) -> None:
    for strict in (False, True):
        try:
            packets = parse_rtcp(data, strict=strict)
        except RtcpParseError:
            continue
        assert packets
        for p in packets:
            if isinstance(p, SourceDescription):
                for chunk in p.chunks:
                    _ = chunk.cname


@given(st.binary(max_size=120))
@FUZZ
def test_rtcp_parse_random_bytes(data: bytes) -> None:
    _check_rtcp(data)


@given(
    mutated(
        st.lists(rtcp_packets, min_size=1, max_size=4).map(
            lambda ps: serialize_rtcp(ps, compound=False)
        )
    )
)
@FUZZ
def test_rtcp_parse_mutated_packets(data: bytes) -> None:
    _check_rtcp(data)


# --- telephone-event --------------------------------------------------------------------------


@given(st.binary(max_size=12))
@FUZZ
def test_telephone_event_parse_random(data: bytes) -> None:
    try:
        ev = TelephoneEvent.parse(data)
    except TelephoneEventError:
        assert len(data) < 4
        return
    assert ev.serialize() == bytes([data[0], data[1] & 0xBF]) + data[2:4]


@given(st.lists(st.tuples(st.binary(max_size=8), u32, st.booleans()), max_size=60))
@FUZZ
def test_telephone_event_receiver_never_raises(feed: list[tuple[bytes, int, bool]]) -> None:
    receiver = TelephoneEventReceiver()
    seen: list[int] = []
    for payload, timestamp, marker in feed:
        for ev in receiver.receive(payload, timestamp, marker):
            seen.append(ev.timestamp)
    assert len(seen) <= len(feed)


# --- codecs -----------------------------------------------------------------------------------


@given(st.binary(max_size=400))
@FUZZ
def test_g711_decodes_anything(data: bytes) -> None:
    assert ulaw_decode(data).shape == alaw_decode(data).shape == (len(data),)


@given(st.binary(min_size=1, max_size=200))
@settings(max_examples=300, deadline=None)
def test_opus_decoder_survives_garbage(data: bytes) -> None:
    decoder = OpusDecoder(1)
    try:
        samples = packet_samples(data)
    except OpusCodecError:
        samples = None
    try:
        frame = decoder.decode(data)
    except OpusCodecError:
        return
    assert frame.dtype == np.int16 and frame.ndim == 1
    assert len(frame) == samples  # a packet that decodes has a readable duration
    assert decoder.conceal().shape == (decoder.last_frame_samples,)


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=12), max_size=8))
@FUZZ
def test_opus_params_from_arbitrary_fmtp(params: dict[str, str]) -> None:
    parsed = OpusParams.from_fmtp(params)
    assert OpusParams.from_fmtp(parsed.to_fmtp()) == parsed


@given(st.text(max_size=80))
@FUZZ
def test_fmtp_string_parsing_never_raises(text: str) -> None:
    OpusParams.from_fmtp(parse_fmtp(text))
