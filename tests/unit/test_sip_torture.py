"""RFC 4475 and RFC 5118 torture messages against sip.message and sip.validate.

Every message of tests/data/sip-torture/*/MANIFEST.json: valid ones parse strictly and liberally,
invalid ones raise SipParseError from ``parse_strict``; the response a UAS built on
``check_request`` / ``response_for_unparseable`` would send is one the manifest accepts; key fields
of each message come out right.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from sip.message import Request, Response, SipParseError, parse_message
from sip.validate import (
    check_request,
    is_acceptable_ack,
    parse_request_strict,
    parse_strict,
    response_for_unparseable,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "sip-torture"


def _load() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for corpus in ("rfc4475", "rfc5118"):
        manifest = json.loads((DATA / corpus / "MANIFEST.json").read_text())
        out.extend((corpus, entry) for entry in manifest["messages"])
    return out


ENTRIES = _load()
BY_NAME = {entry["name"]: (corpus, entry) for corpus, entry in ENTRIES}


def _rfc5118_wire(raw: bytes) -> bytes:
    """As the RFC 5118 manifest's wire schema says: CRLF lines, closing blank line, right length."""
    text = raw.replace(b"\r\n", b"\n")
    head, _, body = text.partition(b"\n\n")
    body = body.replace(b"\n", b"\r\n")
    lines = [
        re.sub(rb"^Content-Length:.*", b"Content-Length: %d" % len(body), line)
        for line in head.rstrip(b"\n").split(b"\n")
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def wire(name: str) -> bytes:
    corpus, entry = BY_NAME[name]
    raw = (DATA / corpus / entry["file"]).read_bytes()
    if entry["wire"] == "append-crlf":
        return raw + b"\r\n"
    if entry["wire"] == "rfc5118":
        return _rfc5118_wire(raw)
    return raw


def test_corpus_is_complete():
    assert len([e for c, e in ENTRIES if c == "rfc4475"]) == 49
    assert len([e for c, e in ENTRIES if c == "rfc5118"]) == 12
    for corpus, entry in ENTRIES:
        assert (DATA / corpus / entry["file"]).stat().st_size == entry["bytes"]


@pytest.mark.parametrize("name", [e["name"] for _, e in ENTRIES])
def test_strict_validity_matches_manifest(name):
    _, entry = BY_NAME[name]
    data = wire(name)
    if entry["valid"]:
        msg = parse_strict(data)
        assert isinstance(msg, Request if entry["kind"] == "request" else Response)
        if isinstance(msg, Request):
            assert msg.method == entry["method"]
            assert parse_request_strict(data) == msg
    else:
        with pytest.raises(SipParseError):
            parse_strict(data)


def _uas_outcome(data: bytes) -> tuple[int | None, Response | None]:
    """What a UAS using sip.validate sends: (status or None for silence/processing, response)."""
    try:
        msg = parse_message(data)
    except SipParseError:
        raw = response_for_unparseable(data)
        if raw is None:
            return None, None
        parsed = parse_message(raw)
        assert isinstance(parsed, Response)
        return parsed.status, parsed
    if isinstance(msg, Response):
        return None, None
    resp = check_request(msg)
    return (resp.status, resp) if resp is not None else (None, None)


def _code_ok(code: int, allowed: list[str]) -> bool:
    for pattern in allowed:
        if pattern == "any":
            return True
        if pattern.endswith("xx") and str(code)[0] == pattern[0]:
            return True
        if pattern == str(code):
            return True
    return False


@pytest.mark.parametrize("name", [e["name"] for _, e in ENTRIES])
def test_uas_response_is_acceptable(name):
    _, entry = BY_NAME[name]
    expect = entry["expect"]
    code, resp = _uas_outcome(wire(name))
    if code is None:
        # Silence, or "process normally" (the dialog layer answers: e.g. 481, 200).
        if entry["kind"] == "response":
            return
        processed = entry["valid"] or "any" in expect["ok"]
        if expect["respond"]:
            assert processed and "any" in expect["ok"], f"{name}: needs an immediate error response"
        return
    assert entry["kind"] == "request", "a response must never be answered"
    assert _code_ok(code, expect["ok"]), f"{name}: {code} not in {expect['ok']}"
    assert str(code) not in expect.get("not", [])
    assert resp is not None
    if expect.get("unsupported"):
        assert resp.headers.get_all("Unsupported") == expect["unsupported"]
    if code in (405, 501):
        assert "INVITE" in resp.headers.get_all("Allow")
    # The error response answers the request (RFC 3261 §8.2.6): same Via/Call-ID/CSeq, To tagged.
    req_headers = parse_message(wire(name)).headers if code != 400 else None
    if req_headers is not None:
        assert resp.headers.get_all("Via") == req_headers.get_all("Via")
        assert resp.call_id == req_headers.get("Call-ID")
        assert resp.to_addr.tag


def test_no_reply_for_trailing_octets_dblreq():
    msg = parse_message(wire("dblreq"))
    assert isinstance(msg, Request)
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert msg.method == "REGISTER" and msg.body == b""
    expect = BY_NAME["dblreq"][1]["expect"]
    assert msg.call_id not in expect["no_reply_call_id"]


def _req(name: str) -> Request:
    msg = parse_message(wire(name))
    assert isinstance(msg, Request)
    return msg


def test_wsinv_fields():
    m = _req("wsinv")
    assert m.to_addr.tag == "1918181833n"
    assert m.to_addr.uri.params == {"unknownparam": None} or m.to_addr.uri.host
    assert m.from_addr.display_name == 'J Rosenberg \\"'
    assert m.from_addr.tag == "98asjd8"
    assert m.headers.get("Max-Forwards") == "0068"
    assert (m.cseq.seq, m.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = m.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert m.headers.get_all("Route") == [
        "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
    ]
    assert len(m.body) == 150


def test_intmeth_fields():
    m = _req("intmeth")
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    ruri = m.request_uri
    assert ruri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert ruri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert ruri.host == "example.com"
    assert m.to_addr.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_addr.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_addr.tag == "_token~1'+`*%!-."
    assert m.from_addr.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert m.top_via.branch == "z9hG4bK-.!%66*_+`'~"


def test_escape_fields():
    m = _req("esc01")
    assert m.request_uri.user == "sips:user@example.com"
    assert m.to_addr.uri.user == "user"
    assert m.from_addr.uri.user == "I have spaces"
    (contact,) = m.contacts
    assert contact.uri.user == "caller"
    assert contact.uri.params == {"lr": None, "name": "value%41"}
    n = _req("escnull")
    assert n.to_addr.uri.user == "null-\x00-null"
    assert [c.uri.user for c in n.contacts] == ["\x00", "\x00\x00"]
    e = _req("esc02")
    assert e.method == "RE%47IST%45R" and e.cseq.method == "RE%47IST%45R"
    assert e.to_addr.display_name == "%Z%45"
    assert len(e.contacts) == 2 and e.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert e.top_via.branch == "z9hG4bK209%fzsnel234"


def test_misc_valid_fields():
    assert _req("lwsdisp").from_addr.display_name == "caller"
    long = _req("longreq")
    assert len(long.vias) == 34 and long.to_addr.uri.port == 6000
    assert long.to_addr.display_name is not None and len(long.to_addr.display_name) == 103
    semi = _req("semiuri").request_uri
    assert (semi.user, semi.host, semi.params) == ("user;par=u@example.net", "example.com", {})
    assert len(_req("semiuri").headers.get_all("Accept")) == 6
    assert [v.transport for v in _req("transports").vias] == [
        "UDP",
        "SCTP",
        "TLS",
        "UNKNOWN",
        "TCP",
    ]
    mp = _req("mpart01")
    assert len(mp.body) == 553 and b"\x00" in mp.body
    assert _req("bext01").headers.get_all("Require") == [
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    ]
    c1 = _req("cparam01").contacts[0]
    assert c1.params == {"unknownparam": None} and c1.uri.params == {}
    c2 = _req("cparam02").contacts[0]
    assert c2.params == {} and c2.uri.params == {"unknownparam": None}
    assert _req("regescrt").contacts[0].uri.headers == {"Route": "<sip:sip.example.com>"}
    old = _req("inv2543")
    assert old.top_via.branch is None and old.from_addr.tag is None and len(old.body) > 0
    assert _req("badbranch").top_via.branch == "z9hG4bK"


def test_unknown_schemes():
    u = _req("unkscm").request_uri
    assert (u.scheme, u.opaque, u.is_sip) == (
        "nobodyknowsthisscheme",
        "totallyopaquecontent",
        False,
    )
    assert _req("novelsc").request_uri.scheme == "soap.beep"
    m = _req("unksm2")
    assert m.to_addr.uri.scheme == "isbn" and m.from_addr.uri.scheme == "http"
    assert str(m.from_addr.uri) == "http://www.example.com"
    assert m.contacts[0].uri.scheme == "name"


def test_responses():
    unreason = parse_message(wire("unreason"))
    assert isinstance(unreason, Response) and unreason.status == 200
    assert unreason.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    noreason = parse_message(wire("noreason"))
    assert isinstance(noreason, Response) and (noreason.status, noreason.reason) == (100, "")
    bcast = parse_message(wire("bcast"))
    assert [v.host for v in bcast.vias] == ["192.0.2.198", "255.255.255.255"]


def test_ipv6_fields():
    assert _req("ipv6-good").request_uri.host == "2001:db8::10"
    assert _req("ipv6-good").top_via.host == "2001:db8::9:1"
    amb = _req("port-ambiguous").request_uri
    assert (amb.host, amb.port) == ("2001:db8::10:5070", None)
    unamb = _req("port-unambiguous").request_uri
    assert (unamb.host, unamb.port) == ("2001:db8::10", 5070)
    assert _req("via-received-param-with-delim").top_via.received == "2001:db8::9:255"
    assert _req("via-received-param-no-delim").top_via.received == "2001:db8::9:255"
    vias = _req("mult-ip-in-header").vias
    assert [(v.host, v.port) for v in vias] == [
        ("2001:db8::9:1", 6050),
        ("192.0.2.1", None),
        ("2001:db8::9:255", None),
    ]
    assert vias[2].received == "192.0.2.200"
    mapped = _req("ipv4-mapped-ipv6")
    assert [v.host for v in mapped.vias] == ["::ffff:192.0.2.10", "::ffff:192.0.2.2"]
    assert mapped.contacts[0].uri.hostport == "[::ffff:192.0.2.2]"
    assert _req("ipv6-correct-abnf-2-colons").request_uri.host == "2001:db8::192.0.2.1"
    # RFC 5118 §4.10: tolerated liberally, rejected strictly
    assert _req("ipv6-bug-abnf-3-colons").request_uri.host == "2001:db8:::192.0.2.1"


@pytest.mark.parametrize("name", [e["name"] for _, e in ENTRIES])
def test_round_trip(name):
    """parse -> to_bytes -> parse keeps every header value and order and the body."""
    data = wire(name)
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    again = parse_message(msg.to_bytes())
    assert again.body == msg.body
    assert again.headers.get("Content-Length") == str(len(msg.body))
    if "Content-Length" in msg.headers:
        assert again == msg
    else:  # to_bytes() always adds Content-Length (RFC 3261 §18.3 / §20.14), at the end
        assert again.headers.items()[:-1] == msg.headers.items()


def test_original_rfc5118_bytes_are_tolerated():
    """The archive's bare-LF files (some without the closing blank line) parse as they are."""
    for corpus, entry in ENTRIES:
        if corpus != "rfc5118" or not entry["valid"]:
            continue
        raw = (DATA / corpus / entry["file"]).read_bytes()
        if entry["name"] in ("ipv6-in-sdp", "mult-ip-in-sdp"):
            with pytest.raises(SipParseError):  # Content-Length larger than the body
                parse_message(raw)
            continue
        msg = parse_message(raw)
        assert isinstance(msg, Request) and msg.method == entry["method"]
        assert msg.call_id


# --- sip.validate beyond the torture corpus -------------------------------------------------------

OPTIONS = (
    b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: c1@192.0.2.1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _with(extra: bytes, data: bytes = OPTIONS, body: bytes = b"") -> Request:
    head = data.split(b"Content-Length")[0] + extra
    msg = parse_message(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert isinstance(msg, Request)
    return msg


def test_check_request_accepts_plain_request():
    assert check_request(_with(b"")) is None


def test_check_request_require_and_supported():
    req = _with(b"Require: timer, 100rel\r\n")
    resp = check_request(req, supported=["timer"])
    assert resp is not None and resp.status == 420
    assert resp.headers.get_all("Unsupported") == ["100rel"]
    assert check_request(req, supported=["TIMER", "100rel"]) is None
    cancel = _with(b"Require: 100rel\r\n", OPTIONS.replace(b"OPTIONS", b"CANCEL"))
    assert check_request(cancel) is None  # RFC 3261 §8.2.2.3: not for CANCEL


def test_check_request_methods_and_allow():
    msg = _with(b"", OPTIONS.replace(b"OPTIONS", b"SUBSCRIBE"))
    resp = check_request(msg)
    assert resp is not None and resp.status == 405
    assert resp.headers.get_all("Allow") == ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"]
    assert check_request(msg, methods=["SUBSCRIBE", "OPTIONS"]) is None
    odd = check_request(_with(b"", OPTIONS.replace(b"OPTIONS", b"FROBNICATE")))
    assert odd is not None and odd.status == 501


def test_check_request_body_types():
    sdp = b"v=0\r\n"
    invite = OPTIONS.replace(b"OPTIONS", b"INVITE")
    ok = _with(b"Content-Type: application/sdp; charset=utf-8\r\n", invite, sdp)
    assert check_request(ok) is None
    bad = check_request(_with(b"Content-Type: text/plain\r\n", invite, sdp))
    assert bad is not None and bad.status == 415 and bad.headers.get("Accept") == "application/sdp"
    untyped = check_request(_with(b"", invite, sdp))
    assert untyped is not None and untyped.status == 415
    gz = check_request(
        _with(b"Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n", invite, sdp)
    )
    assert gz is not None and gz.status == 415 and gz.headers.get("Accept-Encoding") == "identity"
    wildcard = _with(b"Accept: application/*\r\n", invite)
    assert check_request(wildcard) is None
    refused = check_request(_with(b"Accept: text/html\r\n", invite))
    assert refused is not None and refused.status == 406


def test_check_request_scheme_size_and_ack():
    tel = _with(b"", OPTIONS.replace(b"sip:bob@example.com SIP", b"tel:+15551234 SIP"))
    resp = check_request(tel)
    assert resp is not None and resp.status == 416
    assert check_request(tel, schemes=["sip", "tel"]) is None
    big = check_request(_with(b"X-Pad: " + b"x" * 2000 + b"\r\n"), max_size=1000)
    assert big is not None and big.status == 513
    ack = _with(b"", OPTIONS.replace(b"OPTIONS", b"ACK").replace(b"1 ACK", b"1 INVITE"))
    assert check_request(ack) is None  # never answered, even when wrong (CSeq mismatch)
    assert not is_acceptable_ack(ack)
    assert is_acceptable_ack(_with(b"", OPTIONS.replace(b"OPTIONS", b"ACK")))


def test_check_request_400_reasons_and_to_tag():
    resp = check_request(_with(b"", OPTIONS.replace(b"Max-Forwards: 70", b"Max-Forwards: 256")))
    assert resp is not None and resp.status == 400
    assert resp.reason == "Malformed Max-Forwards header field"
    assert resp.to_addr.tag  # RFC 3261 §8.2.6.2: the UAS adds a To tag
    dup = check_request(_with(b"Call-ID: other\r\n"))
    assert dup is not None and dup.reason == "Multiple Call-ID header fields"


def test_response_for_unparseable_salvage():
    broken = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 50")
    with pytest.raises(SipParseError):
        parse_message(broken)
    raw = response_for_unparseable(broken)
    assert raw is not None
    resp = parse_message(raw)
    assert isinstance(resp, Response) and resp.status == 400
    assert resp.top_via.branch == "z9hG4bKabc" and resp.call_id == "c1@192.0.2.1"
    assert resp.to_addr.tag and resp.from_addr.tag == "1"
    # compact forms and folding are understood
    compact = b"INFO sip:b@h SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKq\r\nf: <sip:a@h>;tag=2\r\n"
    compact += b"t:\r\n <sip:b@h>\r\ni: x\r\nCSeq: 2 INFO\r\nl: 99\r\n\r\n"
    salvaged = response_for_unparseable(compact)
    assert salvaged is not None and b"\r\nTo: <sip:b@h>;tag=" in salvaged
    # silence: a response, an ACK, or something missing
    assert response_for_unparseable(b"SIP/2.0 200 OK\r\n" + broken.split(b"\r\n", 1)[1]) is None
    ack = broken.replace(b"OPTIONS", b"ACK")
    assert response_for_unparseable(ack) is None
    assert response_for_unparseable(broken.replace(b"Call-ID", b"X-Call-ID")) is None
    assert response_for_unparseable(b"\x00\xff garbage") is None
    assert response_for_unparseable(b"") is None
