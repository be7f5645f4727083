"""sip.message: parsing, Headers, serialization, responses, stream framing (RFC 3261 §7, §18.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.headers import CSeq, Via
from sip.message import (
    MAX_MESSAGE_SIZE,
    Headers,
    Keepalive,
    Request,
    Response,
    SipParseError,
    StreamFramer,
    _parse_header_lines,
    _parse_header_section,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice A." <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_parse_request_basic_fields():
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.uri == "sip:bob@biloxi.example.com"
    assert msg.request_uri.user == "bob"
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.cseq == CSeq(314159, "INVITE")
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert msg.top_via.transport == "UDP"
    assert msg.from_addr.tag == "1928301774"
    assert msg.from_addr.display_name == "Alice A."
    assert msg.to_addr.tag is None
    assert msg.to_addr.display_name == "Bob"
    assert [str(c.uri) for c in msg.contacts] == ["sip:alice@pc33.atlanta.example.com"]
    assert msg.body == b"v=0\n"


def test_round_trip_preserves_values_and_order():
    msg = parse_message(INVITE)
    again = parse_message(msg.to_bytes())
    assert again == msg
    assert again.headers.items() == msg.headers.items()


def test_compact_and_case_insensitive_names():
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKx\r\ni: abc\r\n"
        b"f: <sip:x@y>;tag=1\r\nt: sip:a@b\r\nCSEQ: 1 OPTIONS\r\nl: 0\r\n\r\n"
    )
    msg = parse_message(data)
    assert msg.headers.get("call-id") == "abc"
    assert msg.headers.get("I") == "abc"
    assert "Call-ID" in msg.headers
    names = [n for n, _ in msg.headers.items()]
    assert names == ["Via", "Call-ID", "From", "To", "CSeq", "Content-Length"]
    assert b"\r\nCall-ID: abc\r\n" in msg.to_bytes()


def test_folded_lines_and_comma_lists():
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP h1;branch=z9hG4bK1,\r\n SIP/2.0/TCP h2:5061;branch=z9hG4bK2\r\n"
        b"Via: SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK3;rport\r\n"
        b'Contact: "A, B" <sip:a@h;x=1,2>, <sip:c@h>;q=0.5\r\n'
        b"Subject:\r\n\tfolded\r\n  twice\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(data)
    assert msg.headers.get("Subject") == "folded twice"
    vias = msg.vias
    assert [v.host for v in vias] == ["h1", "h2", "2001:db8::1"]
    assert vias[1].port == 5061 and vias[1].transport == "TCP"
    assert vias[2].rport is None and "rport" in vias[2].params
    assert msg.headers.get("Via") == "SIP/2.0/UDP h1;branch=z9hG4bK1"
    contacts = msg.contacts
    assert contacts[0].display_name == "A, B"
    assert contacts[1].params == {"q": "0.5"}
    assert len(msg.headers.get_all("Contact")) == 2


def test_response_parse_and_serialize():
    data = b"SIP/2.0 180 Ringing\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    msg = parse_message(data)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert msg.to_bytes() == data


def test_content_length_datagram_semantics():
    base = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nabcdef"
    assert parse_message(base).body == b"abc"
    with pytest.raises(SipParseError):
        parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 9\r\n\r\nabc")
    no_cl = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\nrest")
    assert no_cl.body == b"rest"


def test_to_bytes_sets_content_length():
    req = Request("MESSAGE", "sip:a@b", Headers([("Content-Length", "99")]), b"hello")
    out = req.to_bytes()
    assert out.endswith(b"Content-Length: 5\r\n\r\nhello")
    assert out.count(b"Content-Length") == 1


def test_leading_crlf_skipped():
    msg = parse_message(b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n")
    assert isinstance(msg, Request) and msg.method == "OPTIONS"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n",
        b"garbage\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nno colon here\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\n folded-first\r\n\r\n",
    ],
)
def test_malformed_raises(data):
    with pytest.raises(SipParseError):
        parse_message(data)


def test_headers_multimap():
    h = Headers()
    h.add("Route", "<sip:p1;lr>")
    h.add("route", "<sip:p2;lr>, <sip:p3;lr>")
    h.add("X-Custom", "1")
    assert h.get_all("ROUTE") == ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]
    assert h.get("x-custom") == "1"
    assert h.get("missing") is None and h.get("missing", "d") == "d"
    h.set("Route", "<sip:only;lr>")
    assert h.items() == [("Route", "<sip:only;lr>"), ("X-Custom", "1")]
    c = h.copy()
    c.remove("route")
    assert "Route" in h and "Route" not in c
    assert c.items() == [("X-Custom", "1")]


def test_make_response():
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    resp = make_response(req, 180, to_tag="abc")
    assert resp.reason == "Ringing"
    assert resp.to_addr.tag == "abc"
    assert resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert "Contact" not in resp.headers
    # a To that already has a tag keeps it
    again = make_response(Request("BYE", "sip:a@b", resp.headers.copy()), 200, to_tag="zzz")
    assert again.to_addr.tag == "abc"
    parsed = parse_message(resp.to_bytes())
    assert isinstance(parsed, Response) and parsed.status == 180


def test_identifiers_are_unique():
    assert new_branch().startswith("z9hG4bK")
    assert len({new_branch() for _ in range(100)}) == 100
    assert new_tag() != new_tag() and new_call_id() != new_call_id()


def test_via_and_cseq():
    v = Via.parse("SIP / 2.0 / tls [2001:db8::9]:5061 ; branch = z9hG4bKa ;received=[2001:db8::1]")
    assert (v.transport, v.host, v.port, v.branch) == ("TLS", "2001:db8::9", 5061, "z9hG4bKa")
    assert v.received == "2001:db8::1"
    assert str(v) == "SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bKa;received=[2001:db8::1]"
    assert Via.parse("SIP/2.0/UDP h;rport=5060").rport == 5060
    assert CSeq.parse(" 0009  INVITE ") == CSeq(9, "INVITE")
    for bad in ["", "1", "x INVITE", "99999999999 INVITE", "1 INV ITE"]:
        with pytest.raises(SipParseError):
            CSeq.parse(bad)


def test_stream_framer():
    f = StreamFramer()
    msg = parse_message(INVITE).to_bytes()
    stream = b"\r\n\r\n" + msg + msg + b"\r\n"
    out: list = []
    for i in range(0, len(stream), 7):  # arbitrary segmentation
        out.extend(f.feed(stream[i : i + 7]))
    assert out == [Keepalive.PING, msg, msg, Keepalive.PONG]


def test_stream_framer_limits():
    f = StreamFramer()
    with pytest.raises(SipParseError):
        f.feed(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999\r\n\r\n")
    g = StreamFramer()
    with pytest.raises(SipParseError):
        g.feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * MAX_MESSAGE_SIZE)


# --- the header-section fast path agrees with the line-by-line parser --------------------------

H_NAMES = [
    "Via",
    "via",
    "v",
    "Via ",
    "X-Foo",
    "x-foo",
    "x foo",
    " cont",
    "\tcont",
    "l",
    "CSeq",
    "I",
    "",
    "Content-Length",
    "L",
]
H_SEPS = [": ", ":", ":  ", " : ", "\t:\t", ""]
H_VALUES = ["a", "a ", "", " b", "a\tb", "x, y", "a\t", "ü"]
H_ENDS = ["\r\n", "\r\n", "\n", "\r\r\n"]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(H_NAMES),
            st.sampled_from(H_SEPS),
            st.sampled_from(H_VALUES),
            st.sampled_from(H_ENDS),
        ),
        max_size=6,
    )
)
def test_header_fast_path_matches_general(lines):
    head = "OPTIONS sip:a@b SIP/2.0"
    for name, sep, value, end in lines:
        head += end + name + sep + value
    fast: object
    try:
        fast = _parse_header_section(head)
    except SipParseError:
        fast = "error"
    if fast is None:
        return  # the general parser's business alone
    if isinstance(fast, tuple):
        start_line, keys, names, values, cl_values, _as_sent = fast
        items = list(zip(keys, names, values, strict=True))
        assert cl_values == [value for key, _, value in items if key == "content-length"]
        fast = (start_line, items)
    split = head.split("\n")
    first = split[0][:-1] if split[0].endswith("\r") else split[0]
    general: object
    try:
        general = (first, _parse_header_lines(split[1:]))
    except SipParseError:
        general = "error"
    assert fast == general


def test_stream_framer_stray_line_ends():
    f = StreamFramer()
    # stray CRs and LFs between messages are skipped in bulk; a CR that may start a CRLF waits
    assert f.feed(b"\n" * 5000 + b"\r" * 5000) == []
    assert f.feed(b"\n\r\n") == [Keepalive.PING]
    msg = b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n"
    assert f.feed(b"\r\r\r\n" + msg) == [Keepalive.PONG, msg]
    assert f.feed(b"\r\n\r") == []  # maybe a PING split across segments: wait
    assert f.feed(b"\n\r\n") == [Keepalive.PING, Keepalive.PONG]


def test_stream_framer_unusable_after_error():
    f = StreamFramer()
    with pytest.raises(SipParseError):
        f.feed(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab")
    with pytest.raises(SipParseError):
        f.feed(b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n")


# --- tolerant parsing as a property: spelling, LWS and folding never change the values ---------

KNOWN = {
    "Call-ID": "i", "Contact": "m", "From": "f", "To": "t", "Via": "v", "Subject": "s",
    "Supported": "k", "CSeq": None, "Max-Forwards": None, "User-Agent": None, "Route": None,
}  # fmt: skip
words = st.lists(st.text(alphabet="abcXYZ019<>@;=,.:/\"'", min_size=1, max_size=6), max_size=4)


@st.composite
def spelled_header(draw: st.DrawFn) -> tuple[str, str, str]:
    """(wire text of one header, expected canonical name, expected value)."""
    canonical = draw(st.sampled_from([*KNOWN, "X-Unknown-Header"]))
    spellings = [canonical]
    if canonical != "X-Unknown-Header":
        spellings += [canonical.lower(), canonical.upper()]
        compact = KNOWN[canonical]
        if compact is not None:
            spellings += [compact, compact.upper()]
    name = draw(st.sampled_from(spellings))
    value_words = draw(words)
    lws = st.sampled_from(["", " ", "\t", "  ", " \t"])
    text = name + draw(lws) + ":" + draw(lws)
    for i, word in enumerate(value_words):
        if i:
            text += draw(st.sampled_from([" ", "\r\n ", "\r\n\t", "\r\n   "]))  # SP or a fold
        text += word
    text += draw(lws)
    return text, canonical, " ".join(value_words)


@settings(max_examples=300, deadline=None)
@given(st.lists(spelled_header(), max_size=8), st.sampled_from(["", "\r\n", "\r\n\r\n"]))
def test_spelling_lws_and_folding_are_transparent(headers, leading):
    data = leading + "OPTIONS sip:a@b SIP/2.0\r\n"
    data += "".join(text + "\r\n" for text, _, _ in headers) + "\r\n"
    msg = parse_message(data.encode())
    assert msg.headers.items() == [(name, value) for _, name, value in headers]


# --- messages as common stacks format them ------------------------------------------------------

KAMAILIO_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5062;rport=5062;received=127.0.0.1;branch=z9hG4bK-1\r\n"
    b"Record-Route: <sip:127.0.0.1:5060;lr;ftag=a1b2;did=8c1.ab1>\r\n"
    b"From: <sip:alice@example.test>;tag=a1b2\r\n"
    b"To: <sip:bob@example.test>;tag=as7d8f6\r\n"
    b"Call-ID: 42-1@127.0.0.1\r\n"
    b"CSeq: 2 INVITE\r\n"
    b"Contact: <sip:bob@127.0.0.1:5064;transport=udp>;expires=3600\r\n"
    b"Server: kamailio (5.6.3 (x86_64/linux))\r\n"
    b"Allow: INVITE,ACK,BYE,CANCEL,OPTIONS\r\n"
    b"Supported: replaces,timer\r\n"
    b"Content-Length: 0\r\n\r\n"
)
SIPP_INVITE = (
    b"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5061>;tag=4242SIPpTag001\r\n"
    b"To: service <sip:service@127.0.0.1:5060>\r\n"
    b"Call-ID: 1-4242@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: sip:sipp@127.0.0.1:5061\r\n"
    b"Max-Forwards: 70\r\n"
    b"Subject: Performance Test\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length:   129\r\n\r\n"
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def test_stack_formatted_messages():
    ok = parse_message(KAMAILIO_200)
    assert isinstance(ok, Response) and ok.status == 200
    assert ok.to_bytes() == KAMAILIO_200  # canonical input comes back byte for byte
    assert ok.top_via.rport == 5062 and ok.top_via.received == "127.0.0.1"
    assert ok.headers.get_all("Allow") == ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"]
    assert ok.contacts[0].params == {"expires": "3600"}
    assert ok.contacts[0].uri.transport == "udp"
    assert ok.to_addr.tag == "as7d8f6"
    invite = parse_message(SIPP_INVITE)
    assert isinstance(invite, Request)
    assert len(invite.body) == 129 and invite.body.endswith(b"PCMU/8000\r\n")
    assert invite.from_addr.display_name == "sipp"
    assert invite.contacts[0].uri.port == 5061
    assert invite.request_uri.hostport == "127.0.0.1:5060"
    again = invite.to_bytes()
    assert b"\r\nContent-Length: 129\r\n\r\n" in again
    assert parse_message(again) == invite
