"""sip.uri: SipURI and NameAddr (RFC 3261 §19.1, §20.10, §25.1; RFC 5118)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.headers import Via
from sip.uri import NameAddr, SipParseError, SipURI


def test_full_sip_uri():
    u = SipURI.parse(
        "sips:alice:secret@Atlanta.example.com:5061;transport=TCP;lr?subject=x&h=y%20z"
    )
    assert u.scheme == "sips"
    assert (u.user, u.password, u.host, u.port) == ("alice", "secret", "Atlanta.example.com", 5061)
    assert u.params == {"transport": "TCP", "lr": None}
    assert u.transport == "tcp"
    assert u.headers == {"subject": "x", "h": "y z"}
    assert str(u) == "sips:alice:secret@Atlanta.example.com:5061;transport=TCP;lr?subject=x&h=y%20z"


def test_ipv6_host():
    u = SipURI.parse("sip:[2001:db8::10]:5070")
    assert (u.host, u.port, u.hostport) == ("2001:db8::10", 5070, "[2001:db8::10]:5070")
    assert SipURI.parse("sip:[2001:db8::10:5070]").port is None
    with pytest.raises(SipParseError):
        SipURI.parse("sip:2001:db8::10")


def test_escapes_round_trip():
    u = SipURI.parse("sip:sips%3Auser%40example.com@example.net")
    assert u.user == "sips:user@example.com"
    assert str(u) == "sip:sips%3Auser%40example.com@example.net"
    u2 = SipURI.parse("sip:cal%6Cer@h;%6C%72;n%61me=v%61lue%25%34%31")
    assert u2.user == "caller" and u2.params == {"lr": None, "name": "value%41"}


def test_tel_and_opaque():
    t = SipURI.parse("tel:+1-201-555-0123;phone-context=example.com")
    assert (t.scheme, t.user, t.params) == (
        "tel",
        "+1-201-555-0123",
        {"phone-context": "example.com"},
    )
    assert str(t) == "tel:+1-201-555-0123;phone-context=example.com"
    o = SipURI.parse("soap.beep://192.0.2.103:3002")
    assert (o.scheme, o.opaque, o.is_sip) == ("soap.beep", "//192.0.2.103:3002", False)
    assert str(o) == "soap.beep://192.0.2.103:3002"


@pytest.mark.parametrize(
    "bad", ["", "sip:", "nocolon", "sip:@host", "sip:a@", "sip:h:99999", "1x:y"]
)
def test_bad_uris(bad):
    with pytest.raises(SipParseError):
        SipURI.parse(bad)


def test_name_addr_forms():
    na = NameAddr.parse('"J Rosenberg \\\\\\"" <sip:jdrosen@example.com> ; tag = 98asjd8')
    assert na.display_name == 'J Rosenberg \\"'
    assert na.tag == "98asjd8"
    again = NameAddr.parse(str(na))
    assert again == na
    plain = NameAddr.parse("sip:user@example.com;tag=1;unknownparam")
    assert plain.uri.params == {} and plain.params == {"tag": "1", "unknownparam": None}
    bracket = NameAddr.parse("caller<sip:caller@example.com;unknownparam>;tag=323")
    assert bracket.display_name == "caller" and bracket.uri.params == {"unknownparam": None}
    with pytest.raises(SipParseError):
        NameAddr.parse('"unterminated <sip:a@b>')


# --- the regex fast paths agree with the general parsers --------------------------------------

SCHEMES = ["sip", "sips", "SIP", "tel", "x-y"]
USERS = ["", "alice", "a%41b", "user;par=u", "a?b", "a:pw", "a:p:w", "+1-212", "al ice", "a,b/c"]
HOSTS = ["example.com", "h_x.example", "192.0.2.1", "[2001:db8::1]", "[::ffff:1.2.3.4]", "[::1", "",
         "2001:db8::1", "exa mple"]  # fmt: skip
PORTS = ["", ":5060", ":0", ":65535", ":65536", ":", ":5o60", ": 5060"]
PARAMS = [";lr", ";transport=TCP", ";;", ";", ";a=", ";A=B", ";x=%41", ';q="x"', "; y",
          ";maddr=a@b", ";a=b=c"]  # fmt: skip
URI_HEADERS = ["", "?a=b", "?", "?a=b&c=d", "?a=%3C", "?=x"]


@st.composite
def uri_texts(draw: st.DrawFn) -> str:
    user = draw(st.sampled_from(USERS))
    text = (
        draw(st.sampled_from(SCHEMES))
        + ":"
        + (user + "@" if user else "")
        + draw(st.sampled_from(HOSTS))
        + draw(st.sampled_from(PORTS))
        + "".join(draw(st.lists(st.sampled_from(PARAMS), max_size=3)))
        + draw(st.sampled_from(URI_HEADERS))
    )
    return draw(st.sampled_from(["", " "])) + text


def _outcome(parse, text):
    try:
        return parse(text)
    except SipParseError:
        return "error"


@settings(max_examples=400, deadline=None)
@given(uri_texts())
def test_uri_fast_path_matches_general(text):
    assert _outcome(SipURI.parse, text) == _outcome(SipURI._parse_general, text)


DISPLAYS = ["", '"Alice" ', '"A\\"B" ', '"Alice"', "Bob ", "Bob", "A B ", "A  B ", "A,B ", '"" ']
TAILS = ["", ";tag=1", ";tag=1;q=0.5", " ;tag=1", ';+sip.instance="<urn:x;y>"', ";;", ";a=b ",
         ";tag=a b", " "]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(DISPLAYS), uri_texts(), st.booleans(), st.sampled_from(TAILS))
def test_name_addr_fast_path_matches_general(display, uri, bracket, tail):
    text = display + (f"<{uri}>" if bracket else uri) + tail
    assert _outcome(NameAddr.parse, text) == _outcome(NameAddr._parse_general, text)


PROTOCOLS = ["SIP/2.0/UDP ", "SIP/2.0/tcp ", "SIP / 2.0 / UDP ", "SIP/2.0/UDP  ", "SIP/3.0/UDP ",
             "SIP/2.0/UDP", "SIP/2.0 UDP "]  # fmt: skip
VIA_PARAMS = [";branch=z9hG4bKx", ";rport", ";rport=5060", ";received=[2001:db8::1]",
              "; branch = x", ";;", ";", ';x="a;b"', " ;ttl=1"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(PROTOCOLS),
    st.sampled_from(HOSTS),
    st.sampled_from(PORTS),
    st.lists(st.sampled_from(VIA_PARAMS), max_size=3),
)
def test_via_fast_path_matches_general(protocol, host, port, params):
    text = protocol + host + port + "".join(params)
    assert _outcome(Via.parse, text) == _outcome(Via._parse_general, text)
