"""sip.dialog: dialog state, route sets and in-dialog request construction (RFC 3261 §12)."""

from __future__ import annotations

import pytest

from sip.dialog import (
    Dialog,
    DialogState,
    apply_route_set,
    is_loose,
    request_destination,
)
from sip.message import Headers, Request, Response, make_response, parse_message

INVITE = (
    b"INVITE sip:bob@example.org SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKaaa;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@example.org>;tag=atag\r\n'
    b"To: <sip:bob@example.org>\r\n"
    b"Call-ID: call-1@10.0.0.1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:alice@10.0.0.1:5060>\r\n"
    b"Content-Length: 0\r\n\r\n"
)

# A proxy that record-routes twice (one entry per interface; Kamailio's enable_double_rr),
# with NAT and alias parameters that must come back untouched.
RR_TOP = "<sip:192.0.2.10:5061;transport=tcp;r2=on;lr;ftag=atag;nat=yes>"
RR_BOTTOM = "<sip:192.0.2.10;r2=on;lr;ftag=atag;nat=yes>"
RR_EDGE = "<sip:198.51.100.7;lr;alias=10.0.0.2~5060~1>"


def invite() -> Request:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    return msg


def response_2xx(req: Request, *, rr: list[str], contact: str, tag: str = "btag") -> Response:
    resp = make_response(req, 200, to_tag=tag)
    for r in rr:
        resp.headers.add("Record-Route", r)
    resp.headers.add("Contact", contact)
    return resp


def uac_dialog() -> Dialog:
    req = invite()
    resp = response_2xx(req, rr=[RR_EDGE, RR_TOP, RR_BOTTOM], contact="<sip:bob@10.0.0.2:5062>")
    return Dialog.from_uac_response(req, resp, "<sip:alice@10.0.0.1:5060>")


def test_uac_dialog_state_from_2xx():
    d = uac_dialog()
    assert d.id.call_id == "call-1@10.0.0.1"
    assert (d.local_tag, d.remote_tag) == ("atag", "btag")
    assert d.state is DialogState.CONFIRMED
    assert d.local_seq == 7 and d.remote_seq is None
    assert d.remote_target == "sip:bob@10.0.0.2:5062"
    # §12.1.2: the route set is the Record-Route list in reverse order, values verbatim
    assert d.route_set == [RR_BOTTOM, RR_TOP, RR_EDGE]
    assert d.is_uac


def test_in_dialog_request_loose_routing_keeps_route_params_verbatim():
    d = uac_dialog()
    bye = d.create_request("BYE")
    assert bye.method == "BYE"
    assert bye.uri == "sip:bob@10.0.0.2:5062"  # R-URI = remote target (loose routing)
    assert bye.headers.get_all("Route") == [RR_BOTTOM, RR_TOP, RR_EDGE]
    assert bye.cseq.seq == 8 and bye.cseq.method == "BYE"
    assert bye.from_addr.tag == "atag" and bye.to_addr.tag == "btag"
    assert bye.from_addr.display_name == "Alice"
    assert bye.call_id == "call-1@10.0.0.1"
    assert bye.headers.get("Max-Forwards") == "70"
    # the first hop is the first route (the proxy's interface toward us)
    dest = request_destination(bye)
    assert (dest.host, dest.port) == ("192.0.2.10", None)
    assert d.next_hop() == dest
    again = d.create_request("INFO")
    assert again.cseq.seq == 9


def test_reinvite_carries_contact_and_body():
    d = uac_dialog()
    req = d.create_request("INVITE", b"v=0\r\n", "application/sdp")
    assert req.headers.get("Contact") == "<sip:alice@10.0.0.1:5060>"
    assert req.headers.get("Content-Type") == "application/sdp"
    assert req.body == b"v=0\r\n"


def test_ack_for_2xx_uses_invite_cseq_and_own_branch():
    d = uac_dialog()
    ack = d.create_ack(7, via="SIP/2.0/UDP 10.0.0.1:5060")
    assert ack.method == "ACK" and ack.cseq.seq == 7 and ack.cseq.method == "ACK"
    assert ack.top_via.branch and ack.top_via.branch != "z9hG4bKaaa"
    assert ack.top_via.branch.startswith("z9hG4bK")
    assert ack.headers.get_all("Route") == [RR_BOTTOM, RR_TOP, RR_EDGE]
    assert ack.uri == "sip:bob@10.0.0.2:5062"
    assert d.local_seq == 7  # an ACK does not consume a CSeq number
    other = d.create_ack(7, via="SIP/2.0/UDP 10.0.0.1:5060")
    assert other.top_via.branch != ack.top_via.branch


def test_strict_router_first_hop():
    """§12.2.1.1: a first route without ;lr becomes the Request-URI; the remote target is
    appended to the Route set."""
    req = invite()
    strict = "<sip:192.0.2.20;transport=udp;maddr=192.0.2.21>"
    resp = response_2xx(req, rr=["<sip:192.0.2.30;lr>", strict], contact="<sip:bob@10.0.0.2>")
    d = Dialog.from_uac_response(req, resp)
    assert d.route_set == [strict, "<sip:192.0.2.30;lr>"]
    assert not is_loose(strict)
    bye = d.create_request("BYE")
    assert bye.uri == "sip:192.0.2.20;transport=udp;maddr=192.0.2.21"
    assert bye.headers.get_all("Route") == ["<sip:192.0.2.30;lr>", "<sip:bob@10.0.0.2>"]
    # the next hop is the strict router, although the next Route value is a loose one
    hop = d.next_hop()
    assert (hop.host, hop.params.get("maddr")) == ("192.0.2.20", "192.0.2.21")


def test_apply_route_set_empty():
    h = Headers()
    h.add("Route", "<sip:stale;lr>")
    ruri, routes = apply_route_set(h, [], "sip:bob@10.0.0.2")
    assert ruri == "sip:bob@10.0.0.2" and routes == [] and "Route" not in h


def test_uas_dialog_from_request():
    req = invite()
    req.headers.add("Record-Route", RR_TOP)
    req.headers.add("Record-Route", RR_BOTTOM)
    d = Dialog.from_uas_request(req, "btag", "<sip:bob@10.0.0.2>")
    assert d.id.local_tag == "btag" and d.id.remote_tag == "atag"
    assert d.route_set == [RR_TOP, RR_BOTTOM]  # §12.1.1: in order
    assert d.remote_target == "sip:alice@10.0.0.1:5060"
    assert d.remote_seq == 7
    assert not d.is_uac and d.state is DialogState.EARLY
    bye = d.create_request("BYE")
    assert bye.uri == "sip:alice@10.0.0.1:5060"
    assert bye.headers.get_all("Route") == [RR_TOP, RR_BOTTOM]
    assert bye.from_addr.tag == "btag" and bye.to_addr.tag == "atag"
    assert str(bye.from_addr.uri) == "sip:bob@example.org"
    assert bye.cseq.seq == d.local_seq and bye.cseq.seq < 2**31


def test_remote_cseq_ordering():
    req = invite()
    d = Dialog.from_uas_request(req, "btag")
    h = Headers(
        [
            ("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx"),
            ("From", "<sip:alice@example.org>;tag=atag"),
            ("To", "<sip:bob@example.org>;tag=btag"),
            ("Call-ID", "call-1@10.0.0.1"),
            ("CSeq", "6 BYE"),
        ]
    )
    old = Request("BYE", "sip:bob@10.0.0.2", h)
    assert not d.check_remote_cseq(old)  # lower than 7: 500
    newer = Request("BYE", "sip:bob@10.0.0.2", h.copy())
    newer.headers.set("CSeq", "8 BYE")
    assert d.check_remote_cseq(newer) and d.remote_seq == 8
    ack = Request("ACK", "sip:bob@10.0.0.2", h.copy())
    ack.headers.set("CSeq", "7 ACK")
    assert d.check_remote_cseq(ack)  # ACK carries the INVITE's number


def test_target_refresh_from_reinvite_and_2xx():
    d = uac_dialog()
    h = Headers([("Contact", "<sip:bob@203.0.113.9:6000;transport=tcp>")])
    d.refresh_target(Request("INVITE", "sip:x", h))
    assert d.remote_target == "sip:bob@203.0.113.9:6000;transport=tcp"
    # no Contact: unchanged
    d.refresh_target(Request("UPDATE", "sip:x", Headers()))
    assert d.remote_target == "sip:bob@203.0.113.9:6000;transport=tcp"


def test_early_dialog_confirmed_by_2xx_recomputes_route_set():
    req = invite()
    ringing = make_response(req, 180, to_tag="btag")
    ringing.headers.add("Record-Route", "<sip:192.0.2.99;lr>")
    ringing.headers.add("Contact", "<sip:bob@10.0.0.2:1111>")
    d = Dialog.from_uac_response(req, ringing)
    assert d.state is DialogState.EARLY and d.route_set == ["<sip:192.0.2.99;lr>"]
    ok = response_2xx(req, rr=[RR_TOP], contact="<sip:bob@10.0.0.2:2222>")
    d.confirm_with(ok)
    assert d.state is DialogState.CONFIRMED
    assert d.route_set == [RR_TOP]
    assert d.remote_target == "sip:bob@10.0.0.2:2222"


@pytest.mark.parametrize(
    ("route", "loose"),
    [
        ("<sip:p.example.com;lr>", True),
        ("<sip:p.example.com;lr=on>", True),
        ("<sip:p.example.com;r2=on;lr;nat=yes>", True),
        ("<sip:p.example.com>", False),
        ("<sip:p.example.com;transport=tcp>;lr", False),  # header param, not a URI param
    ],
)
def test_is_loose(route, loose):
    assert is_loose(route) is loose


def test_request_roundtrip_through_parser():
    d = uac_dialog()
    bye = d.create_request("BYE")
    bye.headers.add("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKbye")
    again = parse_message(bye.to_bytes())
    assert isinstance(again, Request)
    assert again.headers.get_all("Route") == [RR_BOTTOM, RR_TOP, RR_EDGE]
