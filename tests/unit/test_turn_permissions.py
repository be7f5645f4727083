"""Several TURN permissions in one CreatePermission (RFC 8656 §10.1): TurnClient.create_permissions
and CandidateGatherer.permit, on a virtual clock against the fake servers of the other tests."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from ice import stun
from ice.gather import CandidateGatherer, GatherConfig, TurnServer
from ice.stun import Address, StunMethod
from ice.turn import (
    MAX_PEERS_PER_PERMISSION,
    PermissionCreated,
    PermissionFailed,
    TurnClient,
)
from tests.unit.test_ice_gather import HOST4, TURN, FakeTurn, Net, drive
from tests.unit.test_turn import PASSWORD, PEER, PEER2, SERVER, USER, FakeTurnServer, allocated
from tests.unit.test_turn import Net as TurnNet

PEER3: Address = ("203.0.113.9", 5000)


def permitted_ips(server: FakeTurnServer) -> list[list[str]]:
    """The XOR-PEER-ADDRESS IPs of each CreatePermission the server got, in order."""
    return [
        [ip for ip, _ in m.get_all(stun.XOR_PEER_ADDRESS)]
        for m in server.requests(StunMethod.CREATE_PERMISSION)
    ]


def test_one_request_carries_every_peer() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    asked = client.create_permissions([PEER[0], PEER2[0], PEER3[0]], 1.0)
    net.now = 1.0
    net.flush()
    assert asked == [PEER[0], PEER2[0], PEER3[0]]
    assert permitted_ips(server) == [[PEER[0], PEER2[0], PEER3[0]]]
    assert net.take() == [PermissionCreated(ip) for ip in asked]
    assert all(client.has_permission(ip) for ip in asked)
    # the ports in XOR-PEER-ADDRESS are ignored by the server; we send 0
    (request,) = server.requests(StunMethod.CREATE_PERMISSION)
    assert {port for _, port in request.get_all(stun.XOR_PEER_ADDRESS)} == {0}


def test_permitted_pending_duplicate_and_invalid_ips_are_skipped() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    client.create_permission(PEER[0], 0.0)
    net.flush()
    client.send(b"x", PEER2, 0.0)  # pending now, not installed: no second request for it
    asked = client.create_permissions(
        [PEER[0], PEER2[0], PEER3[0], PEER3[0], "not-an-ip", "2001:db8::5"], 0.0
    )
    assert asked == [PEER3[0]]  # IPv6 peers cannot use an IPv4 relay (§10.2: 443)
    net.flush()
    assert permitted_ips(server) == [[PEER[0]], [PEER2[0]], [PEER3[0]]]
    assert client.create_permissions([PEER[0], PEER2[0], PEER3[0]], 1.0) == []


def test_a_batch_is_refreshed_together_every_four_minutes() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    client.create_permissions([PEER[0], PEER2[0]], 0.0)
    net.flush()
    net.run_until(500.0)
    times = [t for t, _ in net.sent_requests(StunMethod.CREATE_PERMISSION)]
    assert times == [0.0, 240.0, 480.0]
    assert permitted_ips(server) == [[PEER[0], PEER2[0]]] * 3
    assert server.violations == []
    assert client.has_permission(PEER[0]) and client.has_permission(PEER2[0])


def test_a_refused_batch_is_retried_one_ip_at_a_time() -> None:
    def refuse_the_forbidden(m: stun.StunMessage) -> stun.StunMessage:
        ips = [ip for ip, _ in m.get_all(stun.XOR_PEER_ADDRESS)]
        return m.error_response(403) if PEER2[0] in ips else m.response()

    server = FakeTurnServer(override={StunMethod.CREATE_PERMISSION: refuse_the_forbidden})
    client, net = allocated(server)
    client.create_permissions([PEER[0], PEER2[0], PEER3[0]], 0.0)
    net.flush()
    assert permitted_ips(server) == [
        [PEER[0], PEER2[0], PEER3[0]],
        [PEER[0]],
        [PEER2[0]],
        [PEER3[0]],
    ]
    events = net.take()
    assert PermissionFailed(PEER2[0], 403, "403 Forbidden") in events
    assert {e.peer_ip for e in events if isinstance(e, PermissionCreated)} == {PEER[0], PEER3[0]}
    assert client.has_permission(PEER[0]) and client.has_permission(PEER3[0])
    assert not client.has_permission(PEER2[0])


def test_a_batch_answered_with_a_stale_nonce_is_resent_whole() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    server.nonce = "nonce-2"
    client.create_permissions([PEER[0], PEER2[0]], 0.0)
    net.flush()
    assert permitted_ips(server) == [[PEER[0], PEER2[0]], [PEER[0], PEER2[0]]]
    assert server.permissions == {PEER[0]: 1, PEER2[0]: 1}


def test_a_lost_batch_times_out_for_each_ip() -> None:
    server = FakeTurnServer(override={StunMethod.CREATE_PERMISSION: lambda m: None})
    client, net = allocated(server)
    client.create_permissions([PEER[0], PEER2[0]], 0.0)
    net.run_until(60.0)
    failed = [e for e in net.take() if isinstance(e, PermissionFailed)]
    assert sorted(e.peer_ip for e in failed) == sorted([PEER[0], PEER2[0]])
    assert all(e.code is None for e in failed)
    # and they can be asked for again
    assert client.create_permissions([PEER[0]], 60.0) == [PEER[0]]


def test_many_peers_are_split_into_several_requests() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    ips = [f"198.18.{i // 250}.{i % 250 + 1}" for i in range(MAX_PEERS_PER_PERMISSION + 5)]
    assert client.create_permissions(ips, 0.0) == ips
    net.flush()
    assert [len(b) for b in permitted_ips(server)] == [MAX_PEERS_PER_PERMISSION, 5]
    assert all(client.has_permission(ip) for ip in ips)


def test_create_permissions_needs_an_allocation() -> None:
    client = TurnClient(("198.51.100.1", 3478), "u", "p")
    try:
        client.create_permissions([PEER[0]], 0.0)
    except RuntimeError:
        pass
    else:
        raise AssertionError("create_permissions without an allocation must raise")


# -- CandidateGatherer.permit ---------------------------------------------------------------------


def gathered_with_turn() -> tuple[CandidateGatherer, Net, Address]:
    cfg = GatherConfig(turn_servers=[TurnServer(TURN, "alice", "secret")])
    g = CandidateGatherer(cfg)
    g.add_socket(HOST4)
    g.start(0.0)
    net = Net(nat=True, turn=FakeTurn())
    drive(g, net)
    relayed = next(c.candidate.transport_address for c in g.candidates if c.relay is not None)
    return g, net, relayed


def test_gatherer_permit_sends_one_create_permission_from_the_relay_socket() -> None:
    g, net, relayed = gathered_with_turn()
    assert net.turn is not None
    asked = g.permit(relayed, [PEER[0], PEER2[0], PEER[0]], 1.0)
    assert asked == [PEER[0], PEER2[0]]
    out = g.datagrams_to_send(1.0)
    assert len(out) == 1
    data, local, dst = out[0]
    assert (local, dst) == (HOST4, TURN)
    msg = stun.parse_message(data)
    assert msg.method == StunMethod.CREATE_PERMISSION
    assert [ip for ip, _ in msg.get_all(stun.XOR_PEER_ADDRESS)] == [PEER[0], PEER2[0]]
    reply = net.reply(data, local, dst)
    assert reply is not None and g.receive(reply, local, dst, 1.0)
    assert net.turn.permissions == {PEER[0], PEER2[0]}
    client = g.turn_client(relayed)
    assert client is not None and client.has_permission(PEER2[0])
    assert g.permit(relayed, [PEER[0], PEER2[0]], 2.0) == []  # already permitted


def test_gatherer_permit_on_an_unknown_relay_does_nothing() -> None:
    g, _, _ = gathered_with_turn()
    assert g.permit(("192.0.2.77", 1234), [PEER[0]], 1.0) == []
    assert g.datagrams_to_send(1.0) == []
    g.close(2.0)
    relayed = ("198.51.100.3", 60000)
    assert g.permit(relayed, [PEER[0]], 3.0) == []  # closed: no allocation any more


# -- address families and odd input ---------------------------------------------------------------


def allocated_at(
    *relayed: Address, ipv6_relay: bool = False, additional_ipv6: bool = False
) -> tuple[TurnClient, TurnNet, FakeTurnServer]:
    """A client holding an allocation with these relayed addresses (an IPv6 relay, or an IPv4
    and an IPv6 one: a dual allocation, RFC 8656 §7.1)."""

    def allocate(msg: stun.StunMessage) -> stun.StunMessage:
        response = msg.response()
        for address in relayed:
            response.add(stun.XOR_RELAYED_ADDRESS, address)
        return response.add(stun.LIFETIME, 600)

    server = FakeTurnServer(override={StunMethod.ALLOCATE: allocate})
    client = TurnClient(
        SERVER, USER, PASSWORD, ipv6_relay=ipv6_relay, additional_ipv6=additional_ipv6
    )
    net = TurnNet(client, server)
    client.allocate(0.0)
    net.flush()
    server.allocated = True
    server.override.clear()
    return client, net, server


def test_a_dual_allocation_permits_both_families_in_one_request() -> None:
    client, net, server = allocated_at(
        ("198.51.100.1", 49152), ("2001:db8::1", 50002), additional_ipv6=True
    )
    assert client.create_permissions([PEER[0], "2001:db8::99"], 1.0) == [PEER[0], "2001:db8::99"]
    net.flush()
    assert permitted_ips(server)[-1] == [PEER[0], "2001:db8::99"]
    assert client.has_permission("2001:db8::99")


def test_an_ipv6_relay_skips_ipv4_peers() -> None:
    client, _, _ = allocated_at(("2001:db8::1", 50000), ipv6_relay=True)
    assert client.create_permissions([PEER[0], "2001:db8::5"], 1.0) == ["2001:db8::5"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=45) | st.ip_addresses().map(str), max_size=40))
def test_any_list_of_strings_is_taken_without_an_exception(ips: list[str]) -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    asked = client.create_permissions(ips, 1.0)
    net.flush()
    valid_v4 = {ip for ip in ips if ip.count(".") == 3 and _is_ipv4(ip)}
    assert set(asked) == valid_v4
    assert all(client.has_permission(ip) for ip in asked)


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False
