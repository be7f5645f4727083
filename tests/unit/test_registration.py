"""Registration (RFC 3261 §10) through the UA core against a scripted digest registrar."""

from __future__ import annotations

import itertools
from typing import Any

from sip.message import Request, Response, make_response
from sip.registration import (
    Registered,
    Registration,
    RegistrationConfig,
    RegistrationExpired,
    RegistrationFailed,
    RegistrationState,
    Unregistered,
)
from sip.ua import UserAgent
from sip.uri import NameAddr
from tests.helpers_sip import REGISTRAR as REGISTRAR  # (tests.unit.test_ua imports it from here)
from tests.helpers_sip import FakeRegistrar, alice_and_registrar
from tests.unit.test_ua import SimNet


def setup(**kw: Any) -> tuple[SimNet, UserAgent, FakeRegistrar]:
    """alice and a FakeRegistrar(``kw``) on a SimNet (``loss``, ``seed``); nothing sent yet."""
    net = SimNet(loss=kw.pop("loss", 0.0), seed=kw.pop("seed", 1))
    return alice_and_registrar(FakeRegistrar(**kw), net=net)


def test_register_with_digest_challenge():
    net, ua, reg = setup()
    ua.register(net.now, expires=600)
    net.run(lambda: bool(net.of(ua, Registered)))
    ev = net.of(ua, Registered)[0]
    assert ev.expires == 600
    assert ev.contacts == ["sip:alice@10.0.0.1:5060"]
    first, second = reg.requests
    assert first.call_id == second.call_id
    assert (first.cseq.seq, second.cseq.seq) == (1, 2)
    assert first.from_addr.tag == second.from_addr.tag
    assert "Authorization" not in first.headers and "Authorization" in second.headers
    assert first.uri == "sip:example.org"
    assert str(first.to_addr.uri) == "sip:alice@example.org"
    assert first.headers.get("Expires") == "600"
    assert NameAddr.parse(first.headers.get("Contact") or "").params["expires"] == "600"
    assert first.headers.get_all("Route") == ["<sip:10.0.0.5:5060;lr>"]
    assert reg.bindings == {"sip:alice@10.0.0.1:5060": 600}


def test_sha256_digest():
    net, ua, reg = setup(algorithm="SHA-256")
    ua.register(net.now, expires=600)
    net.run(lambda: bool(net.of(ua, Registered)))
    assert "algorithm=SHA-256" in (reg.requests[1].headers.get("Authorization") or "")


def test_refresh_before_expiry_keeps_call_id_and_increments_cseq():
    net, ua, reg = setup()
    ua.register(net.now, expires=100)
    net.run(lambda: len(net.of(ua, Registered)) >= 3, max_time=400)
    assert len(net.of(ua, Registered)) >= 3
    assert len({r.call_id for r in reg.requests}) == 1
    seqs = [r.cseq.seq for r in reg.requests]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # refreshes happen before expiry: at about half of the 100 s lifetime
    times = [w[0] for w in net.wire if w[3].startswith("REGISTER") and not w[4]]
    assert all(b - a < 100 for a, b in itertools.pairwise(times))
    assert not net.of(ua, RegistrationExpired)


def test_423_interval_too_brief_retries_with_min_expires():
    net, ua, reg = setup(min_expires=1800)
    ua.register(net.now, expires=60)
    net.run(lambda: bool(net.of(ua, Registered) or net.of(ua, RegistrationFailed)))
    assert [e.expires for e in net.of(ua, Registered)] == [1800]
    assert reg.requests[-1].headers.get("Expires") == "1800"


def test_wrong_password_fails_without_looping():
    net, ua, reg = setup(password="other")
    ua.register(net.now, expires=600)
    net.run(lambda: bool(net.of(ua, RegistrationFailed)), max_time=20)
    failed = net.of(ua, RegistrationFailed)
    assert [f.status for f in failed] == [401]
    assert len(reg.requests) == 2  # the challenge is answered once per nonce
    assert not net.of(ua, Registered)


def test_stale_nonce_is_answered_again():
    net, ua, reg = setup(stale_once=True)
    ua.register(net.now, expires=600)
    net.run(lambda: bool(net.of(ua, Registered) or net.of(ua, RegistrationFailed)))
    assert net.of(ua, Registered)
    assert len(reg.requests) == 3


def test_unregister_sends_expires_zero():
    net, ua, reg = setup()
    ua.register(net.now, expires=600)
    net.run(lambda: bool(net.of(ua, Registered)))
    ua.unregister(net.now)
    net.run(lambda: bool(net.of(ua, Unregistered)))
    last = reg.requests[-1]
    assert last.headers.get("Expires") == "0"
    assert NameAddr.parse(last.headers.get("Contact") or "").params["expires"] == "0"
    assert reg.bindings == {}
    assert ua.registrations[0].state is RegistrationState.IDLE
    net.run(max_time=100)
    assert len(net.of(ua, Registered)) == 1  # no refresh after unregistering


def test_nat_rewrites_contact_from_via_received_rport():
    net, ua, reg = setup(nat=("203.0.113.7", 40000))
    ua.register(net.now, expires=600)
    net.run(lambda: bool(net.of(ua, Registered)))
    ev = net.of(ua, Registered)[0]
    assert ev.contacts == ["sip:alice@203.0.113.7:40000"]
    assert reg.bindings == {"sip:alice@203.0.113.7:40000": 600}
    # the re-REGISTER removed the private contact and added the public one
    rewrite = reg.requests[-1]
    contacts = [NameAddr.parse(c) for c in rewrite.headers.get_all("Contact")]
    assert [(str(c.uri), c.params["expires"]) for c in contacts] == [
        ("sip:alice@10.0.0.1:5060", "0"),
        ("sip:alice@203.0.113.7:40000", "600"),
    ]
    # later requests use the public address in Contact
    assert ua.contact_uri() == "sip:alice@203.0.113.7:40000"
    call = ua.invite("sip:bob@example.org", b"", net.now)
    assert call.invite is not None
    assert "203.0.113.7:40000" in (call.invite.headers.get("Contact") or "")


def test_timeout_reports_failure_and_retries_later():
    net, ua, reg = setup()
    reg.silent = True
    ua.register(net.now, expires=600)
    net.run(lambda: bool(net.of(ua, RegistrationFailed)), max_time=60)
    assert [f.status for f in net.of(ua, RegistrationFailed)] == [408]
    reg.silent = False
    net.run(lambda: bool(net.of(ua, Registered)), max_time=200)
    assert net.of(ua, Registered)


def test_binding_expires_when_refresh_fails():
    net, ua, reg = setup()
    ua.register(net.now, expires=120)
    net.run(lambda: bool(net.of(ua, Registered)))
    reg.silent = True
    net.run(lambda: bool(net.of(ua, RegistrationExpired)), max_time=300)
    assert net.of(ua, RegistrationFailed)
    assert net.of(ua, RegistrationExpired)


def test_registration_under_30_percent_loss():
    ok = 0
    for seed in range(10):
        net, ua, reg = setup(loss=0.3, seed=seed)
        ua.register(net.now, expires=600)

        def settled(net: SimNet = net, ua: UserAgent = ua) -> bool:
            return bool(net.of(ua, Registered) or net.of(ua, RegistrationFailed))

        net.run(settled)
        if net.of(ua, Registered):
            ok += 1
    assert ok >= 9


# ---------------------------------------------------------------------------- Registration alone


def config(**kw: Any) -> RegistrationConfig:
    return RegistrationConfig(
        aor="sip:alice@example.org",
        registrar="sip:example.org",
        contact="sip:alice@192.0.2.1:5060",
        **kw,
    )


def ok_response(req: Request, contact_expires: str | None, header: str | None) -> Response:
    resp = make_response(req, 200, to_tag="r")
    c = "<sip:alice@192.0.2.1:5060>" + (f";expires={contact_expires}" if contact_expires else "")
    resp.headers.add("Contact", c)
    resp.headers.add("Contact", "<sip:alice@198.51.100.9>;expires=99")
    if header:
        resp.headers.add("Expires", header)
    resp.headers.set("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx")
    return resp


def test_granted_expiry_prefers_our_contact_param():
    r = Registration(config(expires=3600))
    req = r.start(0.0)
    req.headers.add("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx")
    assert r.handle_response(ok_response(req, "300", "900"), 0.0) is None
    ev = r.next_event()
    assert isinstance(ev, Registered) and ev.expires == 300
    assert ev.contacts == ["sip:alice@192.0.2.1:5060", "sip:alice@198.51.100.9"]
    assert r.refresh_at is not None and 0 < r.refresh_at <= 150


def test_granted_expiry_from_header_then_request():
    r = Registration(config(expires=3600))
    req = r.start(0.0)
    r.handle_response(ok_response(req, None, "900"), 0.0)
    ev = r.next_event()
    assert isinstance(ev, Registered) and ev.expires == 900
    req = r.build_request()
    r.handle_response(ok_response(req, None, None), 10.0)
    ev = r.next_event()
    assert isinstance(ev, Registered) and ev.expires == 3600


def test_423_without_min_expires_fails():
    r = Registration(config(expires=10))
    req = r.start(0.0)
    resp = make_response(req, 423, to_tag="r")
    assert r.handle_response(resp, 0.0) is None
    ev = r.next_event()
    assert isinstance(ev, RegistrationFailed) and ev.status == 423


def test_request_fields():
    r = Registration(config(expires=77, display_name="Alice"))
    a = r.start(0.0)
    b = r.build_request()
    assert a.method == "REGISTER" and a.uri == "sip:example.org"
    assert a.call_id == b.call_id and b.cseq.seq == a.cseq.seq + 1
    assert a.from_addr.display_name == "Alice" and a.from_addr.tag
    assert a.to_addr.tag is None
    assert a.headers.get("Expires") == "77"
    assert r.unregister(1.0) is not None


def test_nat_rewrite_does_not_loop_when_the_mapping_keeps_changing():
    net, ua, reg = setup(nat=("203.0.113.7", 40000))
    original = reg._answer

    def changing(req: Request) -> Response:
        resp = original(req)
        assert reg.nat is not None
        reg.nat = (reg.nat[0], reg.nat[1] + 1)  # a new mapping for every request
        return resp

    reg._answer = changing  # type: ignore[method-assign]
    ua.register(net.now, expires=600)
    net.run(lambda: bool(net.of(ua, Registered) or net.of(ua, RegistrationFailed)), max_time=60)
    assert net.of(ua, Registered)
    assert len(reg.requests) <= 2 * (1 + 3)  # (challenge + answer) x (first + 3 rewrites)


def test_no_contact_rewrite_from_the_rport_of_a_connection():
    """Over TCP/TLS the rport is an ephemeral source port: only a new address counts."""
    r = Registration(config(expires=300))
    req = r.start(0.0)
    resp = ok_response(req, "300", None)
    resp.headers.set("Via", "SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKx;rport=49153")
    assert r.handle_response(resp, 0.0) is None
    assert isinstance(r.next_event(), Registered)
    req = r.build_request()
    resp = ok_response(req, "300", None)
    resp.headers.set(
        "Via", "SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKx;rport=49153;received=203.0.113.9"
    )
    again = r.handle_response(resp, 1.0)
    assert again is not None  # a NAT: the public address, with our listening port
    assert r.contact == "sip:alice@203.0.113.9:5060"


def test_udp_contact_rewrite_uses_received_and_rport():
    r = Registration(config(expires=300))
    req = r.start(0.0)
    resp = ok_response(req, "300", None)
    resp.headers.set(
        "Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;rport=40001;received=203.0.113.9"
    )
    assert r.handle_response(resp, 0.0) is not None
    assert r.contact == "sip:alice@203.0.113.9:40001"


def test_challenged_retry_has_one_route_and_stale_timeouts_are_ignored():
    net, ua, reg = setup()
    ua.register(net.now, expires=600)
    net.run(lambda: bool(net.of(ua, Registered)))
    assert [len(r.headers.get_all("Route")) for r in reg.requests] == [1, 1]
    # a REGISTER that times out after a newer one succeeded does not undo the registration
    reg.silent = True
    ua.register(net.now)  # first refresh: will time out
    net.run(max_time=1)
    reg.silent = False
    ua.register(net.now)  # newer refresh: succeeds
    net.run(max_time=60)
    assert ua.registrations[0].registered
    assert not net.of(ua, RegistrationFailed)
