"""sip.uri: SipURI and NameAddr (RFC 3261 §19.1, §20.10, §25.1; RFC 5118)."""

from __future__ import annotations

import pytest

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
