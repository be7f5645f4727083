"""Hypothesis fuzzing of the SIP parsers: nothing but SipParseError may escape, round trips hold.

Three sources of input: random bytes, mutated RFC 4475/5118 torture messages, and generated
well-formed messages / URIs / name-addrs / Vias (which must round-trip exactly).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.headers import CSeq, Via
from sip.message import (
    Headers,
    Keepalive,
    Request,
    Response,
    SipParseError,
    StreamFramer,
    parse_message,
)
from sip.uri import NameAddr, SipURI
from sip.validate import check_request, parse_strict, response_for_unparseable

DATA = Path(__file__).resolve().parents[1] / "data" / "sip-torture"
CORPUS = sorted(p.read_bytes() for p in DATA.glob("*/*.dat"))
# SIP_FUZZ_EXAMPLES=20000 (with --timeout=0) for a deep run; the default keeps the suite fast.
FUZZ = settings(
    max_examples=int(os.environ.get("SIP_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12)
lower_tokens = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~", min_size=1, max_size=10
)
SPECIAL = [
    b"\r\n", b"\n", b" ", b"\t", b":", b";", b",", b'"', b"\\", b"<", b">", b"[", b"]", b"%", b"@",
    b"=", b"?", b"&", b"\x00", b"\xff", b"\r\n ", b"\r\n\r\n", b"0", b"99999999999", b"-1",
    b"SIP/2.0", b"sip:", b"Via: ", b"Content-Length: ", b"l: ", b"tag=", b";branch=",
]  # fmt: skip


def expected_items(msg: Request | Response) -> list[tuple[str, str]]:
    """Header lines after to_bytes(): one Content-Length (the first's place, else last)."""
    out: list[tuple[str, str]] = []
    seen = False
    for name, value in msg.headers.items():
        if name == "Content-Length":
            if not seen:
                out.append((name, str(len(msg.body))))
            seen = True
        else:
            out.append((name, value))
    if not seen:
        out.append(("Content-Length", str(len(msg.body))))
    return out


def exercise(data: bytes) -> None:
    """Run every parser entry point on ``data``; only SipParseError may escape each."""
    try:
        msg = parse_message(data)
    except SipParseError:
        msg = None
    if msg is not None:
        for attr in ("call_id", "cseq", "vias", "top_via", "from_addr", "to_addr", "contacts"):
            try:
                getattr(msg, attr)
            except SipParseError:
                pass
        if isinstance(msg, Request):
            try:
                _ = msg.request_uri
            except SipParseError:
                pass
            check_request(msg)  # never raises
        again = parse_message(msg.to_bytes())  # what we emit, we parse back identically
        assert again.headers.items() == expected_items(msg)
        assert again.body == msg.body
    try:
        parse_strict(data)
    except SipParseError:
        pass
    out = response_for_unparseable(data)
    if out is not None:
        resp = parse_message(out)
        assert isinstance(resp, Response) and resp.status == 400
    framer = StreamFramer()
    try:
        framer.feed(data)
    except SipParseError:
        pass


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data):
    exercise(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_after_a_start_line(data):
    exercise(b"INVITE sip:a@b SIP/2.0\r\n" + data)
    exercise(b"SIP/2.0 200 OK\r\n" + data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.integers(0, 4))
        if op == 0:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.sampled_from(SPECIAL))
        elif op == 2:
            end = draw(st.integers(pos, min(len(data), pos + 40)))
            del data[pos:end]
        elif op == 3:
            end = draw(st.integers(pos, min(len(data), pos + 40)))
            data[pos:pos] = data[pos:end]
        else:
            del data[pos:]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_torture_messages(data):
    exercise(data)


text_values = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=30
)


def parse_values(text: str) -> None:
    for parser in (SipURI.parse, NameAddr.parse, Via.parse, CSeq.parse):
        try:
            value = parser(text)
        except SipParseError:
            continue
        str(value)


@FUZZ
@given(text_values)
def test_value_parsers_raise_only_sip_parse_error(text):
    parse_values(text)


@FUZZ
@given(st.text(alphabet='sipSIP/2.0UDP:@;=?&%[]<>"\\ ,1a:bZ\t', max_size=40))
def test_value_parsers_on_grammar_characters(text):
    parse_values(text)


# --- generated well-formed values round-trip ------------------------------------------------------

hostnames = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=20)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a)))
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.none() | st.integers(0, 65535)
free_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12)

# any text that is its own lower-case form (parameter names are lower-cased by the parser)
param_names = free_text.filter(lambda s: s.lower() == s)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipURI:
    scheme = draw(st.sampled_from(["sip", "sips"]))
    user = draw(st.none() | free_text)
    password = draw(st.none() | free_text) if user is not None else None
    params = draw(st.dictionaries(param_names, st.none() | st.text(max_size=8), max_size=3))
    headers = draw(st.dictionaries(free_text, st.text(max_size=8), max_size=2))
    return SipURI(scheme, user, password, draw(hosts), draw(ports), params, headers)


@FUZZ
@given(sip_uris())
def test_sip_uri_round_trip(uri):
    text = str(uri)
    assert SipURI.parse(text) == uri
    assert str(SipURI.parse(text)) == text


param_values = (
    st.none()
    | tokens
    | free_text.map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
)
header_params = st.dictionaries(lower_tokens, param_values, max_size=3)


@FUZZ
@given(sip_uris(), st.none() | free_text, header_params)
def test_name_addr_round_trip(uri, display, params):
    na = NameAddr(uri, display, params)
    assert NameAddr.parse(str(na)) == na


@FUZZ
@given(
    st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "WSS"]),
    hosts,
    ports,
    st.dictionaries(lower_tokens, st.none() | tokens, max_size=4),
)
def test_via_round_trip(transport, host, port, params):
    via = Via(transport, host, port, params)
    assert Via.parse(str(via)) == via


@FUZZ
@given(st.integers(0, 2**32 - 1), tokens)
def test_cseq_round_trip(seq, method):
    assert CSeq.parse(str(CSeq(seq, method))) == CSeq(seq, method)


header_names = st.sampled_from(
    ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m", "Route", "Allow",
     "Supported", "k", "Subject", "s", "X-Custom", "P-Asserted-Identity", "User-Agent"]
) | tokens.filter(lambda n: n.lower() not in ("content-length", "l"))  # fmt: skip
header_values = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=40
).map(lambda s: s.strip(" \t"))


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    headers = Headers(draw(st.lists(st.tuples(header_names, header_values), max_size=12)))
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "OPTIONS"]) | tokens)
        return Request(method, str(draw(sip_uris())), headers, body)
    reason = draw(header_values)
    return Response(draw(st.integers(100, 699)), reason, headers, body)


@FUZZ
@given(messages())
def test_generated_message_round_trip(msg):
    data = msg.to_bytes()
    parsed = parse_message(data)
    assert type(parsed) is type(msg)
    assert parsed.body == msg.body
    assert parsed.headers.items()[:-1] == msg.headers.items()
    assert parsed.headers.items()[-1] == ("Content-Length", str(len(msg.body)))
    if isinstance(msg, Request):
        assert isinstance(parsed, Request)
        assert (parsed.method, parsed.uri) == (msg.method, msg.uri)
    else:
        assert isinstance(parsed, Response)
        assert (parsed.status, parsed.reason) == (msg.status, msg.reason)
    assert parse_message(parsed.to_bytes()) == parsed
    assert parsed.to_bytes() == data  # what we emit is a fixed point: byte-identical again


@FUZZ
@given(st.lists(messages(), min_size=1, max_size=4), st.lists(st.integers(1, 50), min_size=1))
def test_stream_framer_any_segmentation(msgs, cuts):
    wire = [m.to_bytes() for m in msgs]
    stream = b"".join(wire)
    framer = StreamFramer()
    out: list[bytes | Keepalive] = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out.extend(framer.feed(stream[pos : pos + step]))
        pos += step
        i += 1
    assert out == wire


@FUZZ
@given(st.lists(st.binary(max_size=80), max_size=6))
def test_stream_framer_random_chunks(chunks):
    framer = StreamFramer()
    try:
        for chunk in chunks:
            for item in framer.feed(chunk):
                assert isinstance(item, (bytes, Keepalive))
    except SipParseError:
        pass


def test_fuzz_corpus_is_loaded():
    assert len(CORPUS) == 61
