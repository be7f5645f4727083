"""Registration robustness and target selection rules (no sockets)."""

from __future__ import annotations

import pytest

from sip.aio import BINDING_LOST_STATUSES, NAT_UDP_REGISTER_EXPIRES, order_targets, udp_expires
from sip.auth import (
    Credentials,
    DigestClient,
    make_challenge,
    next_hop,
    parse_authorization,
    verify_authorization,
)
from sip.locate import AllTargetsFailed, Target, try_targets
from sip.message import Request, Response, make_response, parse_message


def test_udp_expires_caps_the_requested_lifetime():
    assert udp_expires(3600, NAT_UDP_REGISTER_EXPIRES) == 600
    assert udp_expires(300, 600) == 300
    assert udp_expires(3600, None) == 3600
    assert udp_expires(3600, 0) == 3600


def test_binding_lost_statuses():
    assert {404, 480, 408} <= BINDING_LOST_STATUSES
    assert 200 not in BINDING_LOST_STATUSES and 486 not in BINDING_LOST_STATUSES


# ---------------------------------------------------------------- RFC 3263 §4.3 failover

A = Target("UDP", "a.test", "127.0.0.1", 5070)
B = Target("UDP", "b.test", "127.0.0.2", 5070)
C = Target("UDP", "c.test", "127.0.0.3", 5070)


def test_order_targets_puts_recently_failed_targets_last():
    assert order_targets([A, B, C], {}, 10.0) == [A, B, C]
    assert order_targets([A, B, C], {A: 20.0}, 10.0) == [B, C, A]
    assert order_targets([A, B, C], {A: 20.0, B: 30.0}, 10.0) == [C, A, B]
    # a failure that is old enough no longer counts
    assert order_targets([A, B, C], {A: 5.0}, 10.0) == [A, B, C]


async def test_try_targets_reports_each_failed_target():
    failed: list[Target] = []

    async def attempt(t: Target) -> str:
        if t is not C:
            raise ConnectionRefusedError(111, "refused")
        return t.host

    assert await try_targets([A, B, C], attempt, on_failure=failed.append) == "c.test"
    assert failed == [A, B]
    failed.clear()
    with pytest.raises(AllTargetsFailed):
        await try_targets([A, B], attempt, on_failure=failed.append)
    assert failed == [A, B]


# ---------------------------------------------------------------- digest credentials per server


def request(
    method: str, uri: str, cseq: int, *, route: str | None = None, call_id: str = "c1"
) -> Request:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{method}{cseq}",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        *([f"Route: <{route}>"] if route else []),
        "Content-Length: 0",
        "",
        "",
    ]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def challenge(req: Request, realm: str, nonce: str, status: int = 401) -> Response:
    resp = make_response(req, status, to_tag="srv")
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    resp.headers.add(name, make_challenge(realm, nonce))
    parsed = parse_message(resp.to_bytes())
    assert isinstance(parsed, Response)
    return parsed


PROXY = "sip:198.51.100.1:5060;lr"


def registered_client() -> DigestClient:
    """A client the registrar (reached through PROXY) challenged in realm example.com."""
    client = DigestClient(Credentials("alice", "pw"))
    first = request("REGISTER", "sip:example.com", 1, route=PROXY)
    assert client.handle_challenge(challenge(first, "example.com", "N1"), first)
    return client


def test_next_hop_is_the_top_route_else_the_request_uri():
    assert next_hop(request("REGISTER", "sip:example.com", 1, route=PROXY)) == (
        "198.51.100.1",
        5060,
    )
    assert next_hop(request("BYE", "sip:bob@203.0.113.9:5070", 1)) == ("203.0.113.9", 5070)
    assert next_hop(request("BYE", "sips:bob@peer.example", 1)) == ("peer.example", 5061)


def test_register_refresh_gets_preemptive_credentials_with_the_next_nc():
    client = registered_client()
    retry = request("REGISTER", "sip:example.com", 2, route=PROXY)
    client.authorize(retry)
    refresh = request("REGISTER", "sip:example.com", 3, route=PROXY)
    assert client.authorize_preemptively(refresh)
    value = refresh.headers.get("Authorization")
    assert value is not None
    parsed = parse_authorization(value)
    assert (parsed.realm, parsed.nonce, parsed.nc) == ("example.com", "N1", "00000002")
    assert verify_authorization(value, method="REGISTER", password="pw")
    # a request that already carries credentials is left alone
    assert not client.authorize_preemptively(refresh)
    assert len(refresh.headers.get_all("Authorization")) == 1


def test_credentials_never_go_to_a_host_that_did_not_challenge():
    client = registered_client()
    # peer to peer, in dialog: the Request-URI names another host, no Route
    bye = request("BYE", "sip:bob@203.0.113.9:5070", 5, call_id="dlg")
    client.authorize(bye)
    assert "Authorization" not in bye.headers and "Proxy-Authorization" not in bye.headers
    assert not client.authorize_preemptively(bye)
    assert "Authorization" not in bye.headers
    # the same server on another port is another server
    other = request("REGISTER", "sip:example.com", 6, route="sip:198.51.100.1:5080;lr")
    assert not client.authorize_preemptively(other)
    # through the proxy that challenged, the realm's credentials go along
    invite = request("INVITE", "sip:bob@example.com", 1, route=PROXY, call_id="c2")
    client.authorize(invite)
    assert invite.headers.get("Authorization") is not None


def test_peer_challenge_is_answered_only_toward_that_peer():
    client = registered_client()
    bye = request("BYE", "sip:bob@203.0.113.9:5070", 5, call_id="dlg")
    assert client.handle_challenge(challenge(bye, "bob-realm", "P1"), bye)
    retry = request("BYE", "sip:bob@203.0.113.9:5070", 6, call_id="dlg")
    client.authorize(retry)
    realms = {parse_authorization(v).realm for v in retry.headers.get_all("Authorization")}
    assert realms == {"bob-realm"}  # not the registrar's example.com
    refresh = request("REGISTER", "sip:example.com", 3, route=PROXY)
    client.authorize_preemptively(refresh)
    realms = {parse_authorization(v).realm for v in refresh.headers.get_all("Authorization")}
    assert realms == {"example.com"}


def test_rejected_preemptive_credentials_are_answered_once():
    """The registrar forgot the nonce (restart): its new challenge, even without stale=true, is
    answered; a second rejection means the password is wrong."""
    client = registered_client()
    refresh = request("REGISTER", "sip:example.com", 3, route=PROXY)
    assert client.authorize_preemptively(refresh)
    assert client.handle_challenge(challenge(refresh, "example.com", "N2"), refresh)
    retry = request("REGISTER", "sip:example.com", 4, route=PROXY)
    client.authorize(retry)
    parsed = parse_authorization(retry.headers.get("Authorization") or "")
    assert (parsed.nonce, parsed.nc) == ("N2", "00000001")
    assert not client.handle_challenge(challenge(retry, "example.com", "N3"), retry)
