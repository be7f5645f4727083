"""Structured SDP attribute values: a=candidate (RFC 8839 §5.1) and the one-pass codecs().

a=candidate values parse the same whatever whitespace separates their fields; ``codecs()`` must
give, for every payload type, what the per-type accessor ``codec()`` gives;
``Codec.parse_encoding`` must follow its grammar.  Hypothesis builds texts around the edges.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.sdp import (
    Attribute,
    CandidateAttribute,
    Codec,
    MediaDescription,
    SdpParseError,
    _new_codec,
    parse_sdp,
)

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOST = "1 1 UDP 2130706431 192.0.2.10 8998 typ host"
SRFLX = "3 1 UDP 1694498815 203.0.113.50 45664 typ srflx raddr 192.0.2.10 rport 8998"
TCP = "5 1 TCP 1518280447 192.0.2.10 9 typ host tcptype active"


def test_candidate_fields() -> None:
    host = CandidateAttribute.parse(HOST)
    assert host == CandidateAttribute("1", 1, "UDP", 2130706431, "192.0.2.10", 8998, "host")
    srflx = CandidateAttribute.parse(SRFLX)
    assert (srflx.type, srflx.related_address, srflx.related_port) == ("srflx", "192.0.2.10", 8998)
    assert srflx.extensions == []
    tcp = CandidateAttribute.parse(TCP)
    assert (tcp.transport, tcp.port, tcp.extensions) == ("TCP", 9, [("tcptype", "active")])
    for text in (HOST, SRFLX, TCP):
        assert str(CandidateAttribute.parse(text)) == text


def test_candidate_extensions_and_host_names() -> None:
    text = "Ab+/9 2 udp 1 host-1.local 1 typ prflx raddr 0.0.0.0 rport 0 generation 0 ufrag x"
    cand = CandidateAttribute.parse(text)
    assert (cand.foundation, cand.component, cand.transport, cand.address) == (
        "Ab+/9",
        2,
        "udp",
        "host-1.local",
    )
    assert (cand.related_address, cand.related_port) == ("0.0.0.0", 0)
    assert cand.extensions == [("generation", "0"), ("ufrag", "x")]
    assert str(cand) == text
    # rport without raddr, raddr after rport is an extension (the grammar's order)
    odd = CandidateAttribute.parse("1 1 UDP 1 h 1 typ host rport 7 raddr x")
    assert (odd.related_address, odd.related_port, odd.extensions) == (None, 7, [("raddr", "x")])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1 1 UDP 2130706431 192.0.2.10 8998 host",  # no typ
        "1 1 UDP 2130706431 192.0.2.10 8998 typ",  # no type
        "1 1 UDP 2130706431 192.0.2.10 8998 typ host raddr",  # dangling name
        "1 0 UDP 1 h 1 typ host",  # component 0
        "1 257 UDP 1 h 1 typ host",  # component > 256
        "1 1 UDP 0 h 1 typ host",  # priority 0
        "1 1 UDP 2147483648 h 1 typ host",  # priority > 2**31 - 1
        "1 1 UDP 1 h 65536 typ host",  # port
        "1 1 UDP 1 h x typ host",
        "1 1 UDP 1 h 1 typ srflx raddr a rport 70000",
        "1 1 UDP 1 h 1 typ srflx raddr a rport x",  # never re-read as an extension pair
        "1 1 UDP 1 h 1 typ srflx raddr a rport 123456",
        "a" * 33 + " 1 UDP 1 h 1 typ host",  # foundation too long
        "f-1 1 UDP 1 h 1 typ host",  # '-' is no ice-char
        "1 \N{SUPERSCRIPT ONE} UDP 1 h 1 typ host",  # a non-ASCII digit
    ],
)
def test_malformed_candidates_raise(text: str) -> None:
    with pytest.raises(SdpParseError):
        CandidateAttribute.parse(text)
    with pytest.raises(SdpParseError):
        CandidateAttribute.parse(text.replace(" ", " \t "))


FIELDS = st.sampled_from(
    ["1", "0", "9", "256", "257", "65535", "65536", "2147483647", "2147483648", "0012", "x",
     "UDP", "tcp", "typ", "host", "srflx", "raddr", "rport", "a.b", "2001:db8::1", "+/",
     "\N{SUPERSCRIPT ONE}", "generation", "\u00e9", "a" * 33]
)  # fmt: skip
SEPARATORS = st.sampled_from([" ", " ", " ", " ", "  ", "\t"])


@st.composite
def candidate_texts(draw: st.DrawFn) -> str:
    fields = [
        draw(st.sampled_from(["1", "a+/", "x" * 32, "f-1"])),
        draw(st.sampled_from(["1", "2", "0", "256", "1000"])),
        draw(st.sampled_from(["UDP", "tcp"])),
        draw(st.sampled_from(["1", "2130706431", "2147483648", "0"])),
        draw(st.sampled_from(["192.0.2.1", "2001:db8::1", "h.local"])),
        draw(st.sampled_from(["1", "65535", "65536", "0"])),
        draw(st.sampled_from(["typ", "typ", "TYP"])),
        draw(st.sampled_from(["host", "srflx", "relay"])),
    ]
    fields += draw(st.lists(FIELDS, max_size=8))
    out = fields[0]
    for value in fields[1:]:
        out += draw(SEPARATORS) + value
    return out + draw(st.sampled_from(["", "", " "]))


def _outcome(parse: object, text: str) -> object:
    try:
        return parse(text)  # type: ignore[operator]
    except SdpParseError:
        return "error"


@PROPERTY
@given(candidate_texts())
def test_candidate_spacing_does_not_matter(text: str) -> None:
    """Single spaces and any other whitespace between the fields give the same candidate."""
    got = _outcome(CandidateAttribute.parse, text)
    normalized = " ".join(text.split())
    assert got == _outcome(CandidateAttribute.parse, normalized)
    if isinstance(got, CandidateAttribute):
        fields = normalized.split(" ")
        # the text back, but rport as a number (RFC 8839 rel-port = 1*5DIGIT: "0012" is 12)
        written = list(fields)
        at = 10 if fields[8:9] == ["raddr"] else 8
        if fields[at : at + 1] == ["rport"]:
            written[at + 1] = str(int(fields[at + 1]))
        assert str(got) == " ".join(written)
        assert (got.foundation, got.transport, got.address, got.type) == (
            fields[0],
            fields[2],
            fields[4],
            fields[7],
        )
        assert (got.component, got.priority, got.port) == tuple(map(int, fields[1:6:2]))


def test_candidates_of_a_media_section() -> None:
    media = MediaDescription(
        attributes=[
            Attribute("candidate", HOST),
            Attribute("rtpmap", "0 PCMU/8000"),
            Attribute("candidate", "broken"),
            Attribute(" Candidate ", SRFLX),  # names compare case-insensitively
            Attribute("candidate"),  # no value: malformed, skipped
            Attribute("end-of-candidates"),
        ]
    )
    assert [c.foundation for c in media.candidates()] == ["1", "3"]
    assert len(media.attributes) == 6  # the attributes themselves are untouched


# --- codecs() and Codec.parse_encoding -------------------------------------------------------

ATTR_NAMES = st.sampled_from(["rtpmap", "fmtp", "RTPMAP", " fmtp", "ptime", "candidate", "x"])
ATTR_VALUES = st.sampled_from(
    [None, "", "0 PCMU/8000", "8 PCMA/8000", "111 opus/48000/2", "111 OPUS/48000", "101 0-16",
     "0 x", " 8  PCMA/8000 ", "96 H264/90000", "96 bad", "9 G722/8000/1", "0\tPCMU/8000",
     "111 minptime=10;useinbandfec=1", "18 annexb=no", "3 a/b/c/d", "101 telephone-event/8000"]
)  # fmt: skip
FORMATS = st.lists(
    st.sampled_from(["0", "8", "9", "18", "96", "101", "111", "127", "128", "00", "x", "0127"]),
    max_size=6,
)


@PROPERTY
@given(st.lists(st.tuples(ATTR_NAMES, ATTR_VALUES), max_size=10), FORMATS)
def test_codecs_matches_codec_per_payload_type(
    attributes: list[tuple[str, str | None]], formats: list[str]
) -> None:
    media = MediaDescription(formats=formats, attributes=[Attribute(n, v) for n, v in attributes])
    expected: dict[int, Codec] = {}
    for pt in media.payload_types:
        found = media.codec(pt)
        if found is not None and pt not in expected:
            expected[pt] = found
    assert media.codecs() == expected
    assert list(media.codecs()) == list(expected)  # in m= order


ENCODING_PARTS = st.sampled_from(["opus", "PCMU", "48000", "2", "8000", "", " ", "x y", "\u0661"])


@PROPERTY
@given(st.lists(ENCODING_PARTS, min_size=1, max_size=4), st.sampled_from(["", " ", "\t"]))
def test_parse_encoding_follows_the_grammar(parts: list[str], pad: str) -> None:
    text = pad + "/".join(parts) + pad
    got = Codec.parse_encoding(text, "x")
    split = text.strip().split("/")
    ok = (
        len(split) in (2, 3)
        and split[0] != ""
        and all(p.isdigit() and p.isascii() and len(p) <= 30 for p in split[1:])
    )
    if not ok:
        assert got is None
    else:
        channels = int(split[2]) if len(split) == 3 else 1
        assert got == Codec(split[0], int(split[1]), channels, "x")


def test_fast_codec_is_a_codec() -> None:
    fast = _new_codec("opus", 48000, 2, "useinbandfec=1")
    slow = Codec("opus", 48000, 2, "useinbandfec=1")
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert dataclasses.asdict(fast) == dataclasses.asdict(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.name = "x"  # type: ignore[misc]
    assert Codec("PCMU", 8000).with_fmtp("a=b") == Codec("PCMU", 8000, 1, "a=b")


def test_bench_offer_fully_parsed() -> None:
    from bench.sip_parse import SDP

    media = parse_sdp(SDP).media[0]
    assert [str(c) for c in media.codecs().values()] == [
        "opus/48000/2",
        "PCMU/8000",
        "PCMA/8000",
        "telephone-event/8000",
    ]
    cands = media.candidates()
    assert len(cands) == 6 and [str(c) for c in cands] == media.get_all("candidate")


@PROPERTY
@given(st.text(max_size=120), st.lists(st.tuples(st.text(max_size=12), st.text(max_size=40))))
def test_structured_accessors_raise_nothing_else(text: str, attributes: list[tuple[str, str]]):
    """Fuzz: a=candidate parsing raises only SdpParseError; codecs()/candidates() never raise."""
    try:
        CandidateAttribute.parse(text)
    except SdpParseError:
        pass
    media = MediaDescription(
        formats=[n for n, _ in attributes][:5],
        attributes=[Attribute(n, v) for n, v in attributes] + [Attribute("candidate", text)],
    )
    media.codecs()
    media.candidates()
