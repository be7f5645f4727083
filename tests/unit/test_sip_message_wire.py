"""to_bytes() of a parsed, unchanged message returns the octets it was parsed from.

That is only allowed when those octets are exactly what the serializer writes (canonical header
names, ``: `` separators, one correct Content-Length, a canonical start line) and only while the
message is unchanged: every change - a header added, set or removed, a field assigned - must give
the serializer's output again.  Each test compares with the serializer run on a fresh copy (a
message built by the constructor, which never reuses octets).
"""

from __future__ import annotations

import copy
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from sip.message import Headers, Request, Response, parse_message

SDP = b"v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: c1@192.0.2.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"X-Custom: kept as written\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SDP)
) + SDP
RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"To: <sip:bob@example.com>;tag=2\r\n"
    b"Call-ID: c1@192.0.2.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _serialized(message: Request | Response) -> bytes:
    """What the serializer writes for the message's current state (no octets reused)."""
    headers = Headers(message.headers.items())
    if isinstance(message, Request):
        return Request(
            message.method, message.uri, headers, message.body, message.version
        ).to_bytes()
    return Response(
        message.status, message.reason, headers, message.body, message.version
    ).to_bytes()


def test_canonical_messages_serialize_to_their_own_octets() -> None:
    for raw in (INVITE, RESPONSE):
        message = parse_message(raw)
        assert message.to_bytes() == raw == _serialized(message)
        assert message.headers._as_sent
    # leading CRLFs (RFC 3261 §7.5) and octets after the body are not part of the message
    message = parse_message(b"\r\n\r\n" + INVITE + b"trailing junk")
    assert message.to_bytes() == INVITE == _serialized(message)


def test_every_change_gives_the_serializer_output() -> None:
    changes = [
        lambda m: m.headers.add("Subject", "hi"),
        lambda m: m.headers.set("Max-Forwards", "69"),
        lambda m: m.headers.set("Max-Forwards", "70"),  # the same value again: still generic
        lambda m: m.headers.remove("X-Custom"),
        lambda m: m.headers.remove("Not-There"),
        lambda m: setattr(m, "method", "OPTIONS"),
        lambda m: setattr(m, "uri", "sip:carol@example.com"),
        lambda m: setattr(m, "version", "SIP/3.0"),
        lambda m: setattr(m, "body", b""),
        lambda m: setattr(m, "body", SDP + b"a=sendonly\r\n"),
        lambda m: setattr(m, "headers", m.headers.copy()),
        lambda m: setattr(m, "headers", Headers([("Call-ID", "x")])),
    ]
    for change in changes:
        message = parse_message(INVITE)
        change(message)
        assert message.to_bytes() == _serialized(message)
    message = parse_message(INVITE)
    message.headers.set("Max-Forwards", "10")
    assert b"\r\nMax-Forwards: 10\r\n" in message.to_bytes()
    message = parse_message(INVITE)
    message.body = b"x"
    assert message.to_bytes().endswith(b"Content-Length: 1\r\n\r\nx")


def test_response_changes_give_the_serializer_output() -> None:
    for change in [
        lambda m: setattr(m, "status", 180),
        lambda m: setattr(m, "reason", "Fine"),
        lambda m: m.headers.add("Contact", "<sip:b@h>"),
    ]:
        message = parse_message(RESPONSE)
        assert isinstance(message, Response)
        change(message)
        assert message.to_bytes() == _serialized(message) != RESPONSE


def test_copies_and_shared_headers() -> None:
    message = parse_message(INVITE)
    shallow = copy.copy(message)  # shares the Headers object: a change shows in both
    shallow.headers.add("Subject", "both")
    assert message.to_bytes() == _serialized(message) != INVITE
    assert shallow.to_bytes() == _serialized(shallow)
    deep = copy.deepcopy(parse_message(INVITE))
    assert deep.to_bytes() == INVITE
    deep.headers.add("Subject", "deep")
    assert deep.to_bytes() == _serialized(deep)
    unpickled = pickle.loads(pickle.dumps(parse_message(INVITE)))
    assert unpickled.to_bytes() == INVITE
    unpickled.uri = "sip:x@y"
    assert unpickled.to_bytes() == _serialized(unpickled)
    # another message built around a parsed message's headers serializes itself
    other = Request("BYE", "sip:bob@example.com", parse_message(INVITE).headers)
    assert other.to_bytes() == _serialized(other)


NAMES = ["Via", "via", "v", "V", "VIA", "Call-ID", "call-id", "i", "X-Custom", "x-custom", "Foo"]
SEPARATORS = [": ", ":", ":  ", ":\t", " : ", " :"]
VALUES = ["a", "SIP/2.0/UDP h;branch=z9hG4bK1", "x: y", "a  b", "é", "", "\udcff"]
START_LINES = [
    "INVITE sip:b@h SIP/2.0",
    "INVITE sip:b@h sip/2.0",
    "INVITE  sip:b@h SIP/2.0",
    "INVITE\tsip:b@h SIP/2.0",
    "SIP/2.0 200 OK",
    "SIP/2.0 200 ",
    "SIP/2.0 200",
    "sip/2.0 404 Not Found",
    "SIP/2.0 404 Not  Found",
]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(START_LINES),
    st.lists(
        st.tuples(st.sampled_from(NAMES), st.sampled_from(SEPARATORS), st.sampled_from(VALUES)),
        max_size=5,
    ),
    st.sampled_from([None, "0", "00", "5", "05", "dup"]),
    st.sampled_from([b"", b"hello", b"hello world"]),
    st.sampled_from([b"", b"\r\n", b"extra"]),
)
def test_any_parsed_message_serializes_as_the_serializer_would(
    start_line, lines, content_length, body, trailing
):
    head = start_line + "".join(f"\r\n{name}{sep}{value}" for name, sep, value in lines)
    if content_length == "dup":
        head += f"\r\nContent-Length: {len(body)}\r\nl: {len(body)}"
    elif content_length is not None:
        head += f"\r\nContent-Length: {content_length}"
    raw = head.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body + trailing
    try:
        message = parse_message(raw)
    except ValueError:
        return
    assert message.to_bytes() == _serialized(message)
    reparsed = parse_message(message.to_bytes())
    assert reparsed.to_bytes() == message.to_bytes()


def test_the_parser_only_reuses_octets_of_canonical_messages() -> None:
    assert parse_message(INVITE).headers._as_sent
    for raw in [
        INVITE.replace(b"Call-ID: ", b"i: "),  # compact form
        INVITE.replace(b"Call-ID: ", b"call-id: "),
        INVITE.replace(b"Call-ID: ", b"Call-ID:"),
        INVITE.replace(b"X-Custom: ", b"X-Custom:  "),
        INVITE.replace(b"SIP/2.0\r\n", b"sip/2.0\r\n", 1),
        INVITE.replace(b"Content-Length: ", b"Content-Length: 0"),
        INVITE.replace(b"Content-Length: %d\r\n" % len(SDP), b""),
    ]:
        message = parse_message(raw)
        assert not message.headers._as_sent
        assert message.to_bytes() == _serialized(message) != raw
