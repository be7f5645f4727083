"""Fast paths give exactly what the general parsers give (sip.sdp, sip.uri, sip.headers, messages).

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
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sip.message
from sip.headers import Via
from sip.message import Request, Response, parse_message
from sip.sdp import (
    Attribute,
    Codec,
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


# --- SDP: what the fast path checks before it takes a text ---------------------------------------

USUAL_SDP = (
    "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "a=ice-ufrag:x\r\na=ice-pwd:y\r\nm=audio 4000 RTP/AVP 111 0 101\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)


@pytest.mark.parametrize(
    "old, new",
    [
        ("a=sendrecv\r\n", "a=sendrecv"),  # no final line end
        ("a=sendrecv\r\n", "a=sendrecv\r\n\r\n"),  # a blank line at the end
        ("a=sendrecv\r\n", "a=sendrecv\r\n \r\n"),  # a whitespace line at the end
        ("a=sendrecv\r\n", "a=sendrecv\n"),  # a bare LF at the end
        ("a=sendrecv\r\n", "a=sendrecv\r"),  # a lone CR at the end
        ("a=ice-pwd:y", "a=ice-pwd:y\rb"),  # a lone CR inside a session a= line
        ("a=ice-pwd:y", "a=ice-pwd:y\nb=AS:1"),  # a bare LF inside a session a= line
        ("a=fmtp:111 minptime=10", "a=fmtp:111 min\rptime=10"),  # in a media a= line
        ("a=fmtp:111 minptime=10", "a=fmtp:111 min\nptime=10"),
        ("a=sendrecv", "a=sendrecv\r\nc=IN IP4 h"),  # a c= line after the a= lines
        ("a=ice-pwd:y", "a=ice-pwd:y\r\nb=AS:64"),  # a session b= after its a= lines
        ("a=ice-pwd:y", "a=ice-pwd:y\r\n\r\na=z"),  # a blank line among the a= lines
        ("s=-", "s=-\rx"),  # a lone CR in the session head
        ("s=-", "s=-\nx"),  # a bare LF in the session head
        ("s=-\r\n", "s=-\r\ni=info\r\n"),  # a session head the regex does not take ...
        ("s=-\r\n", "s=-\r\ni=in\rfo\r\n"),  # ... with a lone CR in it
        ("s=-\r\n", "s=-\r\ni=in\nfo\r\n"),  # ... with a bare LF in it
        ("RTP/AVP 111 0 101", "RTP/AVP 111 0\r101"),  # a lone CR in the m= line
        ("RTP/AVP 111 0 101\r\n", "RTP/AVP 111 0 101\r\ni=x\r\n"),  # media head, no regex
        ("RTP/AVP 111 0 101\r\n", "RTP/AVP 111 0 101\r\ni=x\ry\r\n"),
        ("RTP/AVP 111 0 101\r\n", "RTP/AVP 111 0 101\r\ni=x\ny\r\n"),
        ("a=sendrecv\r\n", "a=sendrecv\r\nm=video 0 RTP/AVP 96\r\n"),  # a second section
        ("a=sendrecv\r\n", "a=sendrecv\r\nm=video 0 RTP/AVP 96\r\na=inactive\r\n"),
        ("a=sendrecv\r\n", "a=sendrecv\r\nm=video 0 RTP/AVP 96\r\nm=text 0 RTP/AVP 9\r\n"),
    ],
)
def test_sdp_fast_path_checks_every_line_end(old: str, new: str) -> None:
    """Each edit puts a line end, a blank line or a misplaced line where the fast path's splits
    would hide it; the result must be the general parser's, value for value (or its error)."""
    assert old in USUAL_SDP
    _assert_same(USUAL_SDP.replace(old, new, 1))


def test_sdp_fast_path_takes_the_edited_usual_forms() -> None:
    """The fast path still handles (does not hand over) the clean forms above."""
    assert _parse_plain(USUAL_SDP) == _parse_lines(_split_lines(USUAL_SDP))
    for text in (
        USUAL_SDP[:-2],
        USUAL_SDP.replace("s=-\r\n", "s=-\r\ni=info\r\n"),
        USUAL_SDP + "m=video 0 RTP/AVP 96\r\nm=text 0 RTP/AVP 9\r\n",
    ):
        fast = _parse_plain(text)
        assert fast is not None
        assert fast == _parse_lines(_split_lines(text))
    assert _parse_plain(USUAL_SDP.replace("a=ice-pwd:y", "a=ice-pwd:y\rb")) is None


# --- codecs(): computed from the attributes as they are when it is called ---------------------


def _codecs_per_payload_type(media: MediaDescription) -> dict[int, Codec]:
    expected: dict[int, Codec] = {}
    for pt in media.payload_types:
        found = media.codec(pt)
        if found is not None and pt not in expected:
            expected[pt] = found
    return expected


def test_codecs_follow_every_edit_of_the_model() -> None:
    """codecs() reads media.attributes and media.formats on each call: an edit to an Attribute
    object, to the attribute list or to the formats shows in the next call."""
    media = parse_sdp(USUAL_SDP).media[0]
    first = media.codecs()
    assert [str(c) for c in first.values()] == ["opus/48000/2", "PCMU/8000", "telephone-event/8000"]
    assert first[111].fmtp == "minptime=10"
    edits = [
        lambda m: setattr(m.attributes[0], "value", "111 OPUS/16000"),  # the Attribute object
        lambda m: setattr(m.attributes[1], "value", "111 useinbandfec=1"),
        lambda m: setattr(m.attributes[2], "name", "x-rtpmap"),  # PCMU: back to the static one
        lambda m: setattr(m.attributes[2], "name", " RTPMAP"),  # odd spelling, still rtpmap
        lambda m: m.attributes.insert(0, Attribute("rtpmap", "101 red/8000")),  # first one wins
        lambda m: m.attributes.append(Attribute("rtpmap", "96 VP8/90000")),  # not in m=
        lambda m: m.formats.append("96"),
        lambda m: m.formats.remove("111"),
        lambda m: m.attributes.remove(m.attributes[0]),
        lambda m: m.attributes.__setitem__(slice(None), [Attribute("rtpmap", "0 G711/8000")]),
        lambda m: setattr(m, "attributes", [Attribute("fmtp", "101 0-15")]),
        lambda m: m.remove_format("101"),
        lambda m: m.add_codec(8, Codec("PCMA", 8000)),
    ]
    for edit in edits:
        edit(media)
        assert media.codecs() == _codecs_per_payload_type(media)
    assert media.formats == ["0", "96", "8"]  # 96 lost its rtpmap with the list replaced
    assert media.codecs() == {0: Codec("PCMU", 8000), 8: Codec("PCMA", 8000)}
    assert first[111] == Codec("opus", 48000, 2, "minptime=10")  # an earlier result is its own


# --- SIP messages: header section and Request-Line fast paths ---------------------------------

MESSAGE_NAMES = ["Via", "via", "v", "Call-ID", "i", "X-Foo2", "X_Y.z", "x foo", "Via ", " cont"]
MESSAGE_SEPS = [": ", ":", ":  ", ":\t", " : "]
MESSAGE_VALUES = ["a", "a ", "", "a\t", "x, y", "a\rb", "\u00fc", "b: c"]
MESSAGE_ENDS = ["\r\n", "\r\n", "\r\n", "\n", " \r\n"]
START_LINES = [
    "INVITE sip:bob@198.51.100.20:5060;transport=udp SIP/2.0",
    "invite sip:bob@h SIP/2.0",
    "X-Y sip:h SIP/2.0",  # a token method that is not alphabetic
    "INVITE sip:b\u00f6b@h SIP/2.0",  # a non-ASCII Request-URI
    "INVITE  sip:h SIP/2.0",
    "INVITE\tsip:h SIP/2.0",
    "INVITE sip:h sip/2.0",
    "INVITE sip:h SIP/2.1",
    "INVITE sip:h SIP/2.0 ",
    "INVITE sip:h",
    "SIP/2.0 200 OK",
    "SIP/2.0 180 Ringing Now",
    "sip/2.0 200 OK",
    "SIP/2.0 099 Bad",
    "SIP/2.0 200",
]


def _parsed(data: bytes) -> object:
    try:
        message = parse_message(data)
    except SipParseError:
        return "error"
    return message, message.to_bytes()


def _parsed_generally(data: bytes, monkeypatch: pytest.MonkeyPatch) -> object:
    """parse_message with its fast paths turned off: the line-by-line header parser and the
    general Request-Line code."""
    with monkeypatch.context() as patch:
        patch.setattr(sip.message, "_parse_header_section", lambda head: None)
        patch.setattr(sip.message, "_REQUEST_LINE_RE", re.compile(r"(?!)"))
        return _parsed(data)


@PROPERTY
@given(
    st.sampled_from(START_LINES),
    st.lists(
        st.tuples(
            st.sampled_from(MESSAGE_NAMES),
            st.sampled_from(MESSAGE_SEPS),
            st.sampled_from(MESSAGE_VALUES),
            st.sampled_from(MESSAGE_ENDS),
        ),
        max_size=5,
    ),
    st.sampled_from(["", "Content-Length: 3\r\n", "l: 003\r\n", "Content-Length: 9\r\n"]),
)
def test_message_fast_paths_match_the_general_parser(start, lines, length):
    """A whole message parses to the same Request/Response - and serializes to the same octets -
    with the fast paths as without them, or fails in both."""
    head = start + "\r\n" + "".join(name + sep + value + end for name, sep, value, end in lines)
    data = (head + length + "\r\n" + "abc").encode("utf-8", "surrogateescape")
    monkeypatch = pytest.MonkeyPatch()
    try:
        assert _parsed(data) == _parsed_generally(data, monkeypatch)
    finally:
        monkeypatch.undo()


def test_message_fast_paths_take_the_usual_form(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.sip_parse import INVITE

    head = INVITE[: INVITE.index(b"\r\n\r\n")].decode()
    assert sip.message._parse_header_section(head) is not None
    assert sip.message._REQUEST_LINE_RE.fullmatch(head.split("\r\n")[0]) is not None
    assert _parsed(INVITE) == _parsed_generally(INVITE, monkeypatch)
    message = parse_message(INVITE)
    assert isinstance(message, Request) and message.to_bytes() is INVITE  # its own octets
    # a line with trailing LWS (start line or header) is the general parser's: values trimmed
    for spot in (b" SIP/2.0\r\n", b"Max-Forwards: 69\r\n"):
        edited = INVITE.replace(spot, spot[:-2] + b" \r\n", 1)
        assert (
            sip.message._parse_header_section(edited[: edited.index(b"\r\n\r\n")].decode()) is None
        )
        assert _parsed(edited) == _parsed_generally(edited, monkeypatch)
        assert parse_message(edited).headers.items() == message.headers.items()


def test_content_length_with_leading_zeros_is_rewritten() -> None:
    data = b"SIP/2.0 200 OK\r\nCall-ID: a\r\nContent-Length: 003\r\n\r\nabcdef"
    message = parse_message(data)
    assert isinstance(message, Response) and message.body == b"abc"
    assert not message.headers._as_sent  # "003" is not what to_bytes() writes
    assert message.to_bytes() == b"SIP/2.0 200 OK\r\nCall-ID: a\r\nContent-Length: 3\r\n\r\nabc"
    assert parse_message(message.to_bytes()).to_bytes() is not None
    zero = parse_message(b"OPTIONS sip:h SIP/2.0\r\nContent-Length: 0\r\n\r\n")
    assert (
        zero.headers._as_sent
        and zero.to_bytes() == b"OPTIONS sip:h SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    )
