"""RFC 3261 §19.1.4 URI comparison (``SipURI.equivalent``), with the section's own examples."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.uri import SipURI

# RFC 3261 §19.1.4: "The URIs within each of the following sets are equivalent"
EQUIVALENT = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
]

# "The URIs within each of the following sets are not equivalent"
NOT_EQUIVALENT = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # user
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # can resolve to different ports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),  # ... different transports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),  # ... both
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),  # header
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),  # even if that is what it resolves to
]

# The rules stated in the section's list, one by one
MORE_EQUIVALENT = [
    ("SIPS:a@h", "sips:a@H"),
    ("sip:a@h;lr", "sip:a@h;LR"),
    ("sip:a@h;maddr=239.1.1.1", "sip:a@h;MADDR=239.1.1.1"),
    ("sip:a@h?Subject=x", "sip:a@h?subject=x"),  # header names are case-insensitive
    ("sip:a@[2001:db8::1]:5060", "sip:a@[2001:DB8:0:0::1]:5060"),
    ("sip:%41@h", "sip:A@h"),  # escaped or not, the same character
    ("tel:+1-201-555-0123", "tel:+12015550123"),
    ("tel:+1201;Phone-Context=X", "tel:+1201;phone-context=x"),
    ("urn:service:sos", "urn:service:sos"),
]
MORE_NOT_EQUIVALENT = [
    ("sip:a@h", "sips:a@h"),  # sip and sips never match
    ("sip:h", "sip:a@h"),  # user present in one only
    ("sip:a@h", "sip:a:pw@h"),  # password present in one only
    ("sip:a:pw@h", "sip:a:PW@h"),  # passwords are case-sensitive
    ("sip:a@h;user=phone", "sip:a@h"),  # user= in one only, even with ...
    ("sip:a@h;user=ip", "sip:a@h"),  # ... its default value
    ("sip:a@h;ttl=1", "sip:a@h"),
    ("sip:a@h;method=INVITE", "sip:a@h"),
    ("sip:a@h", "sip:a@h;method=INVITE"),
    ("sip:a@h;maddr=239.1.1.1", "sip:a@h"),
    ("sip:a@h;x=1", "sip:a@h;x=2"),  # a parameter in both must match
    ("sip:a@h?subject=x", "sip:a@h?subject=X"),  # header values are compared exactly
    ("sip:a@h?subject=x", "sip:a@h?subject=x&priority=urgent"),
    ("sip:a@h:5060", "sip:a@h:5061"),
    ("sip:a@[2001:db8::1]", "sip:a@[2001:db8::2]"),
    ("tel:+1201", "tel:+1201;ext=1"),
    ("tel:+1201", "sip:+1201@h"),
    ("urn:service:sos", "urn:service:SOS.police"),
]


@pytest.mark.parametrize(("a", "b"), EQUIVALENT + MORE_EQUIVALENT)
def test_equivalent(a: str, b: str) -> None:
    x, y = SipURI.parse(a), SipURI.parse(b)
    assert x.equivalent(y) and y.equivalent(x)


@pytest.mark.parametrize(("a", "b"), NOT_EQUIVALENT + MORE_NOT_EQUIVALENT)
def test_not_equivalent(a: str, b: str) -> None:
    x, y = SipURI.parse(a), SipURI.parse(b)
    assert not x.equivalent(y) and not y.equivalent(x)


def test_not_transitive() -> None:
    """§19.1.4: both match the plain URI, but not each other."""
    plain = SipURI.parse("sip:carol@chicago.com")
    on = SipURI.parse("sip:carol@chicago.com;security=on")
    off = SipURI.parse("sip:carol@chicago.com;security=off")
    assert plain.equivalent(on) and plain.equivalent(off)
    assert not on.equivalent(off)


HOSTS = st.sampled_from(["h", "H", "example.com", "192.0.2.1", "[2001:db8::1]"])
USERS = st.sampled_from(["", "a@", "A@", "%61@", "a:b@"])
PARAMS = st.lists(
    st.sampled_from([";lr", ";transport=tcp", ";TRANSPORT=TCP", ";x=1", ";user=phone", ";ttl=1"]),
    max_size=3,
    unique=True,
)


@settings(max_examples=200, deadline=None)
@given(USERS, HOSTS, st.sampled_from(["", ":5060", ":5061"]), PARAMS)
def test_reflexive_symmetric_and_escape_blind(user: str, host: str, port: str, params: list[str]):
    a = SipURI.parse(f"sip:{user}{host}{port}{''.join(params)}")
    assert a.equivalent(a)
    b = SipURI.parse(str(a))  # escaped differently, same URI
    assert a.equivalent(b) and b.equivalent(a)
    c = SipURI.parse(f"sip:{user}{host}{port}{''.join(reversed(params))}")  # order is no matter
    assert a.equivalent(c)
