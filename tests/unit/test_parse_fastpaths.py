"""Fast paths give exactly what the general parsers give (sip.sdp, sip.uri, sip.headers).

Each fast path handles only the plain form real stacks send and hands everything else to the general
code; these property tests build texts around the edges of what a fast path accepts (line ends,
blank and whitespace lines, misplaced lines, multicast addresses, odd spacing, non-ASCII) and check
that the outcome - the parsed model, or a parse error - is the same both ways.  They also pin down
that the SDP attribute lists the fast path builds behave like plain lists of Attribute.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.headers import Via
from sip.sdp import (
    Attribute,
    Connection,
    MediaDescription,
    Origin,
    SdpParseError,
    SessionDescription,
    Timing,
    _new_media,
    _new_session,
    _parse_lines,
    _parse_plain,
    _split_lines,
    parse_sdp,
)
from sip.uri import NameAddr, SipParseError, SipURI
from tests.unit.test_sdp import SAMPLES

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- SDP ------------------------------------------------------------------------------------------


def _general(text: str) -> SessionDescription | str:
    try:
        return _parse_lines(_split_lines(text))
    except SdpParseError:
        return "error"


def _public(text: str) -> SessionDescription | str:
    try:
        return parse_sdp(text)
    except SdpParseError:
        return "error"


def _assert_same(text: str) -> None:
    fast = _public(text)
    general = _general(text)
    assert fast == general
    if isinstance(fast, SessionDescription):
        assert isinstance(general, SessionDescription)
        assert fast.to_str() == general.to_str()
        assert repr(fast) == repr(general)


SESSION_LINES = [
    "o=- 1 2 IN IP4 10.0.0.1",
    "o=alice 2890844526 2890844527 IN IP4 192.0.2.10",
    "o=a b 1 2 IN IP4 h",  # a username with a space
    "o=- 1 x IN IP4 h",  # bad version
    "o=- 1 2 IN IP4",  # too few fields
    "o=-  1 2 IN IP4 h",  # two spaces
    "o=- 1 2 IN IP4 h\u00e9",  # non-ASCII
    "s=-",
    "s=",
    "s= spaced name ",
    "c=IN IP4 203.0.113.50",
    "c=IN IP6 2001:db8::1",
    "c=IN IP4 224.2.1.1/127/3",
    "c=IN IP6 ff15::1/3",
    "c=IN IP4 224.2.1.1/x",
    "c=IN IP4",
    "c=in ip4 h",
    "t=0 0",
    "t=3034423619 3042462419",
    "t=0",
    "t=0 ٣",  # a non-ASCII digit
    "t=0  0",
    "r=7d 1h 0 25h",
    "b=AS:64",
    "i=info",
    "u=http://x",
    "e=a@b",
    "p=+1",
    "z=0 -1h",
    "k=clear:x",
    "x=unknown",
    "a=ice-ufrag:8hhY",
    "a=ice-pwd:asd88fgpdd777uzjYhagZg",
    "a=sendrecv",
    "a=",
    "a=:",
    "a= odd : value ",
    "",
    " ",
    "\t",
    "=x",
    "junk",
]
MEDIA_LINES = [
    "m=audio 45664 RTP/AVP 111 0 8 101",
    "m=audio 0 RTP/AVP 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF",
    "m=video 5004/2 RTP/AVP 96",
    "m=audio 70000 RTP/AVP 0",
    "m=audio 123456 RTP/AVP 0",
    "m=audio x RTP/AVP 0",
    "m=audio 1 RTP/AVP  0",
    "m=audio 1 RTP/AVP 0 ",
    "m=audio",
    "m=",
    "c=IN IP4 198.51.100.1",
    "c=IN IP4 224.2.1.1/127",
    "b=AS:64",
    "i=media info",
    "k=prompt",
    "y=unknown",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=candidate:1 1 UDP 2130706431 192.0.2.10 8998 typ host",
    "a=rtcp-mux",
    "a=sendonly",
    "a=end-of-candidates",
    "",
    " ",
]
LINE_ENDS = ["\r\n", "\r\n", "\r\n", "\n", "\r"]


@st.composite
def sdp_texts(draw: st.DrawFn) -> str:
    """Mostly well-formed SDPs in the usual order, with now and then an odd line or line end."""
    lines = ["v=" + draw(st.sampled_from(["0", "0", "1", "x", ""]))]
    usual = draw(st.booleans())
    if usual:
        lines += [
            draw(st.sampled_from(SESSION_LINES[:3])),
            draw(st.sampled_from(["s=-", "s=", "s=x y"])),
        ]
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(SESSION_LINES[10:14])))
        lines.append(draw(st.sampled_from(["t=0 0", "t=1 2", "t=0  0"])))
    lines += draw(st.lists(st.sampled_from(SESSION_LINES), max_size=4))
    for _ in range(draw(st.integers(0, 2))):
        lines.append(draw(st.sampled_from(MEDIA_LINES[:10])))
        lines += draw(st.lists(st.sampled_from(MEDIA_LINES), max_size=5))
    ends = [draw(st.sampled_from(LINE_ENDS)) for _ in lines]
    if draw(st.integers(0, 3)) > 0:
        ends = ["\r\n"] * len(lines)  # mostly CRLF throughout, as on the wire
    text = "".join(line + end for line, end in zip(lines, ends, strict=True))
    if draw(st.booleans()):
        text = text[: -len(ends[-1])]  # no final line end
    return text


@PROPERTY
@given(sdp_texts())
def test_sdp_fast_path_matches_general_parser(text: str) -> None:
    _assert_same(text)


@PROPERTY
@given(st.sampled_from(sorted(SAMPLES)), st.integers(0, 60), st.text(max_size=4))
def test_edited_samples_fast_path_matches_general_parser(name: str, pos: int, insert: str) -> None:
    text = SAMPLES[name].replace("\n", "\r\n")
    _assert_same(text)
    _assert_same(text[:pos] + insert + text[pos:])


def test_fast_path_takes_the_usual_form() -> None:
    """The samples and the bench's INVITE body are in the form the fast path handles itself."""
    usual = (
        "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "a=ice-ufrag:x\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
    parsed = _parse_plain(usual)
    assert parsed is not None
    assert parsed == _parse_lines(_split_lines(usual))
    assert parsed.to_str() == usual
    assert _parse_plain(usual.replace("\r\n", "\n")) is None  # LF only: the general parser
    assert _parse_plain(usual.replace("a=sendrecv", "a=sendrecv\r\nc=IN IP4 h")) is None


def test_fast_path_attributes_behave_like_a_list_of_attributes() -> None:
    text = SAMPLES[sorted(SAMPLES)[0]].replace("\n", "\r\n")
    general = _parse_lines(_split_lines(text))
    parsed = parse_sdp(text)
    assert repr(parsed) == repr(general)  # repr, ==, copies and pickles see the attributes
    assert parsed == general
    assert copy.deepcopy(parse_sdp(text)) == general
    assert pickle.loads(pickle.dumps(parse_sdp(text))) == general
    assert dataclasses.replace(parse_sdp(text), session_name="x").attributes == general.attributes
    # the list is built once and then is the list: edits stick
    attrs = parsed.media[0].attributes
    assert attrs is parsed.media[0].attributes
    assert all(type(a) is Attribute for a in attrs)
    attrs.append(Attribute("x-new", "1"))
    assert parsed.media[0].get("x-new") == "1"
    assert "a=x-new:1\r\n" in parsed.to_str()
    # assigning a list replaces the parsed one
    fresh = parse_sdp(text)
    fresh.attributes = [Attribute("only")]
    assert fresh.attributes == [Attribute("only")]
    # the dataclass constructors still take attributes as before
    media = MediaDescription(attributes=[Attribute("sendonly")])
    assert media.attributes == [Attribute("sendonly")] and media.has("sendonly")
    assert SessionDescription().attributes == []


def test_fast_path_values_are_typed_like_the_general_ones() -> None:
    parsed = parse_sdp(
        "v=0\r\no=u 12 34 IN IP4 h\r\ns=n\r\nc=IN IP6 ::1\r\nt=5 6\r\nm=audio 9 RTP/AVP 0\r\n"
    )
    assert parsed.origin == Origin("u", "12", 34, "IN", "IP4", "h")
    assert parsed.connection == Connection("::1", "IP6", "IN")
    assert parsed.timing == [Timing(5, 6)]
    assert parsed.media[0].formats == ["0"] and parsed.media[0].attributes == []


# --- URIs, name-addrs, Via ----------------------------------------------------------------------


def _outcome(parse, text):
    try:
        return parse(text)
    except SipParseError:
        return "error"


TAG_VALUES = ["9fxced76sl", "", "a=b", "A%41", "x y", 'q"', "x;y", "\u00e9", "1\t"]
URIS = [
    "sip:alice@example.com",
    "sip:203.0.113.1;lr;ftag=9fxced76sl",
    "sip:alice@203.0.113.50:45664;transport=udp;ob",
    "sips:[2001:db8::1]:5061",
    "sip:h:99999",
    "sip:a:b@h",
    "tel:+1",
]
DISPLAYS = ["", '"Alice Liddell" ', "Bob ", '"" ', '"a\\"b" ']


@PROPERTY
@given(
    st.sampled_from(DISPLAYS),
    st.sampled_from(URIS),
    st.sampled_from(TAG_VALUES),
    st.sampled_from(["", ";x", ";tag=2", " ", ";q=0.5"]),
    st.sampled_from([";tag=", ";TAG=", "; tag=", ";tag ="]),
)
def test_name_addr_tag_fast_path_matches_general(display, uri, tag, after, spelling):
    text = f"{display}<{uri}>{spelling}{tag}{after}"
    assert _outcome(NameAddr.parse, text) == _outcome(NameAddr._parse_general, text)


@PROPERTY
@given(st.text(alphabet="sip:@<>;=\"'. 0123456789abtgAB[]%\\,/+-_", max_size=40))
def test_name_addr_and_uri_noise_matches_general(text):
    assert _outcome(NameAddr.parse, text) == _outcome(NameAddr._parse_general, text)
    assert _outcome(SipURI.parse, text) == _outcome(SipURI._parse_general, text)


@PROPERTY
@given(st.text(alphabet='SIP/2.0UDPtcp []:;=branchrport0123456789."\t\r\n,%', max_size=50))
def test_via_noise_matches_general(text):
    assert _outcome(Via.parse, text) == _outcome(Via._parse_general, text)
    text = "SIP/2.0/UDP 192.0.2.1:5060" + text  # a plain sent-by, then anything
    assert _outcome(Via.parse, text) == _outcome(Via._parse_general, text)


def test_bench_values_take_the_fast_paths_and_agree() -> None:
    for text in [
        '"Alice Liddell" <sip:alice@example.com>;tag=9fxced76sl',
        '"Bob" <sip:bob@example.com>',
        "<sip:203.0.113.1;lr;ftag=9fxced76sl>",
        "<sip:alice@203.0.113.50:45664;transport=udp;ob>;"
        '+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"',
    ]:
        assert NameAddr.parse(text) == NameAddr._parse_general(text)
    via = "SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK2d4790.1;rport=5060;received=203.0.113.1"
    assert Via.parse(via) == Via._parse_general(via)
    uri = "sip:bob@198.51.100.20:5060;transport=udp"
    assert SipURI.parse(uri) == SipURI._parse_general(uri)


def test_fast_constructors_set_exactly_the_dataclass_fields() -> None:
    media = _new_media("audio", 9, "RTP/AVP", ["0"], [Attribute("sendrecv")])
    assert media == MediaDescription(
        "audio", 9, "RTP/AVP", ["0"], attributes=[Attribute("sendrecv")]
    )
    origin = Origin("u", "1", 2, "IN", "IP4", "h")
    session = _new_session(origin, "n", 0, None, [Timing()], [])
    assert session == SessionDescription(origin, "n", 0, timing=[Timing()])
    for made, cls in ((media, MediaDescription), (session, SessionDescription)):
        names = [f.name for f in dataclasses.fields(cls)]
        assert list(cls.__slots__) == names  # every field a slot, and every slot set:
        assert all(hasattr(made, name) for name in names)
        # fresh mutable fields, never shared between two parsed descriptions
        other = (
            _new_media("audio", 9, "RTP/AVP", [], [])
            if cls is MediaDescription
            else (_new_session(origin, "n", 0, None, [], []))
        )
        for name in names:
            value = getattr(made, name)
            if isinstance(value, list) and not value:
                assert value is not getattr(other, name)
