"""Candidate gathering (ice.gather) on a virtual clock, and local address discovery
(ice.interfaces) from canned system output."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ice import interfaces
from ice.candidate import Candidate, CandidateType
from ice.credentials import long_term_key
from ice.gather import (
    CandidateGathered,
    CandidateGatherer,
    GatherConfig,
    GatheredCandidate,
    GatherEvent,
    GatheringComplete,
    RelayedDataReceived,
    ServerFailed,
    TurnServer,
    local_preferences,
)
from ice.interfaces import LocalAddress, filter_addresses, parse_if_inet6, parse_ip_json
from ice.stun import (
    DATA,
    LIFETIME,
    MESSAGE_INTEGRITY,
    NONCE,
    REALM,
    USERNAME,
    XOR_MAPPED_ADDRESS,
    XOR_PEER_ADDRESS,
    XOR_RELAYED_ADDRESS,
    Address,
    StunClass,
    StunMessage,
    StunMethod,
    parse_message,
)

HOST4: Address = ("192.168.1.10", 40000)
HOST6: Address = ("2001:db8::10", 40002)
STUN1: Address = ("198.51.100.1", 3478)
STUN2: Address = ("198.51.100.2", 3478)
DEAD: Address = ("198.51.100.99", 3478)
TURN: Address = ("198.51.100.3", 3478)
PUBLIC_IP = "203.0.113.7"


# -- a simulated network ----------------------------------------------------------------------


@dataclass
class FakeTurn:
    """A TURN server with long-term credentials (one realm, one nonce)."""

    address: Address = TURN
    user: str = "alice"
    password: str = "secret"
    relay_port: int = 60000
    sent: list[tuple[Address, bytes]] = field(default_factory=list)
    permissions: set[str] = field(default_factory=set)

    @property
    def key(self) -> bytes:
        return long_term_key(self.user, "example.org", self.password)

    def handle(self, data: bytes, src: Address) -> bytes | None:
        msg = parse_message(data)
        if msg.cls is StunClass.INDICATION and msg.method == StunMethod.SEND:
            peer = msg.get(XOR_PEER_ADDRESS)
            payload = msg.get(DATA)
            assert peer is not None and payload is not None
            self.sent.append((peer, payload))
            return None
        if MESSAGE_INTEGRITY not in msg:
            resp = msg.error_response(401).add(REALM, "example.org").add(NONCE, "n0nce")
            return resp.encode(fingerprint=True)
        if msg.get(USERNAME) != self.user or not msg.check_integrity(self.key):
            resp = msg.error_response(401).add(REALM, "example.org").add(NONCE, "n0nce")
            return resp.encode(fingerprint=True)
        resp = msg.response()
        if msg.method == StunMethod.ALLOCATE:
            resp.add(XOR_RELAYED_ADDRESS, (self.address[0], self.relay_port))
            resp.add(XOR_MAPPED_ADDRESS, src)
            resp.add(LIFETIME, 600)
        elif msg.method == StunMethod.REFRESH:
            resp.add(LIFETIME, msg.get(LIFETIME) or 0)
        elif msg.method == StunMethod.CREATE_PERMISSION:
            peers = msg.get_all(XOR_PEER_ADDRESS)
            assert peers
            self.permissions.update(ip for ip, _ in peers)
        return resp.encode(self.key, fingerprint=True)

    def data_indication(self, peer: Address, payload: bytes) -> bytes:
        msg = StunMessage(StunMethod.DATA, StunClass.INDICATION)
        msg.add(XOR_PEER_ADDRESS, peer).add(DATA, payload)
        return msg.encode(fingerprint=True)


@dataclass
class Net:
    """STUN servers behind an endpoint-independent NAT (``nat=False``: no NAT)."""

    nat: bool = True
    dead: set[Address] = field(default_factory=set)
    turn: FakeTurn | None = None
    delay: dict[Address, float] = field(default_factory=dict)
    loss: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def public(self, local: Address) -> Address:
        if not self.nat or ":" in local[0]:
            return local
        return PUBLIC_IP, local[1] + 10000

    def reply(self, data: bytes, local: Address, dst: Address) -> bytes | None:
        if dst in self.dead or self.rng.random() < self.loss:
            return None
        src = self.public(local)
        if self.turn is not None and dst == self.turn.address:
            return self.turn.handle(data, src)
        msg = parse_message(data)
        assert msg.method == StunMethod.BINDING and msg.cls is StunClass.REQUEST
        return msg.response().add(XOR_MAPPED_ADDRESS, src).encode(fingerprint=True)


def drive(
    g: CandidateGatherer,
    net: Net,
    now: float = 0.0,
    until_complete: bool = True,
    until: float = 60.0,
) -> tuple[list[tuple[float, GatherEvent]], float]:
    """Run the gatherer until complete; returns the timed events and the end time."""
    events: list[tuple[float, GatherEvent]] = []
    inflight: list[tuple[float, bytes, Address, Address]] = []
    for _ in range(100_000):
        for data, local, dst in g.datagrams_to_send(now):
            reply = net.reply(data, local, dst)
            if reply is not None:
                inflight.append((now + net.delay.get(dst, 0.01), reply, local, dst))
        while (event := g.next_event()) is not None:
            events.append((now, event))
        if until_complete and g.complete:
            return events, now
        times = [t for t, *_ in inflight]
        timer = g.get_timer()
        if timer is not None:
            times.append(timer)
        if not times or min(times) > until:
            return events, now
        now = max(now, min(times))
        for item in sorted(x for x in inflight if x[0] <= now):
            inflight.remove(item)
            _, reply, local, src = item
            assert g.receive(reply, local, src, now)
        g.handle_timer(now)
    raise AssertionError("gathering never finished")


def gathered(events: list[tuple[float, GatherEvent]]) -> list[GatheredCandidate]:
    return [e.local for _, e in events if isinstance(e, CandidateGathered)]


def started(config: GatherConfig, *sockets: tuple[Address, int, int]) -> CandidateGatherer:
    g = CandidateGatherer(config)
    for local, component, pref in sockets:
        g.add_socket(local, component, pref)
    g.start(0.0)
    return g


# -- gathering ----------------------------------------------------------------------------------


def test_host_candidates_are_reported_at_once() -> None:
    g = started(GatherConfig(stun_servers=[STUN1]), (HOST4, 1, 65535), (HOST6, 1, 65279))
    first = [g.next_event(), g.next_event()]
    assert all(isinstance(e, CandidateGathered) for e in first)
    hosts = [e.local.candidate for e in first if isinstance(e, CandidateGathered)]
    assert [c.type for c in hosts] == [CandidateType.HOST, CandidateType.HOST]
    assert {c.transport_address for c in hosts} == {HOST4, HOST6}
    assert not g.complete


def test_host_only_completes_immediately() -> None:
    g = started(GatherConfig(), (HOST4, 1, 65535))
    events = []
    while (e := g.next_event()) is not None:
        events.append(e)
    assert isinstance(events[-1], GatheringComplete)
    assert [c.candidate.type for c in events[-1].candidates] == [CandidateType.HOST]
    assert g.get_timer() is None


def test_srflx_from_each_server_with_priorities_and_foundations() -> None:
    cfg = GatherConfig(stun_servers=[STUN1, STUN2])
    g = started(cfg, (HOST4, 1, 65535), (HOST6, 1, 65279))
    events, _ = drive(g, Net(nat=True))
    cands = gathered(events)
    srflx = [c for c in cands if c.candidate.type is CandidateType.SERVER_REFLEXIVE]
    # the same mapping learnt from two servers is redundant (RFC 8445 §5.1.3): one srflx
    assert len(srflx) == 1
    s = srflx[0].candidate
    assert s.transport_address == (PUBLIC_IP, HOST4[1] + 10000)
    assert (s.related_address, s.related_port) == HOST4
    assert srflx[0].local == HOST4 and srflx[0].base == HOST4
    assert s.priority == (100 << 24) + (65535 << 8) + 255
    # no IPv6 STUN server: no IPv6 srflx; IPv6 host ranks with its own local preference
    host6 = next(c.candidate for c in cands if c.local == HOST6)
    assert host6.priority == (126 << 24) + (65279 << 8) + 255
    complete = events[-1][1]
    assert isinstance(complete, GatheringComplete)
    assert len(complete.candidates) == 3


def test_foundations_follow_type_base_and_server() -> None:
    cfg = GatherConfig(stun_servers=[STUN1, STUN2])
    # two components on the same address share foundations (RFC 8445 §5.1.1.3)
    g = CandidateGatherer(cfg)
    g.add_socket(HOST4, 1)
    g.add_socket((HOST4[0], 40001), 2)
    g.start(0.0)
    events, _ = drive(g, Net(nat=True))
    by_comp: dict[CandidateType, dict[int, Candidate]] = {}
    for lc in gathered(events):
        by_comp.setdefault(lc.candidate.type, {})[lc.candidate.component] = lc.candidate
    for kind in (CandidateType.HOST, CandidateType.SERVER_REFLEXIVE):
        assert by_comp[kind][1].foundation == by_comp[kind][2].foundation
        assert by_comp[kind][1].priority == by_comp[kind][2].priority + 1
    assert (
        by_comp[CandidateType.HOST][1].foundation
        != by_comp[CandidateType.SERVER_REFLEXIVE][1].foundation
    )


def test_no_nat_srflx_is_redundant_with_host() -> None:
    g = started(GatherConfig(stun_servers=[STUN1]), (HOST4, 1, 65535))
    events, _ = drive(g, Net(nat=False))
    assert [c.candidate.type for c in gathered(events)] == [CandidateType.HOST]
    assert isinstance(events[-1][1], GatheringComplete)
    assert not any(isinstance(e, ServerFailed) for _, e in events)


def test_a_dead_server_does_not_stall_the_others() -> None:
    cfg = GatherConfig(stun_servers=[DEAD, STUN1], stun_timeout=2.0, ta=0.05)
    g = started(cfg, (HOST4, 1, 65535))
    events, end = drive(g, Net(nat=True, dead={DEAD}))
    srflx_at = [
        t
        for t, e in events
        if isinstance(e, CandidateGathered)
        and e.local.candidate.type is CandidateType.SERVER_REFLEXIVE
    ]
    failed = [(t, e) for t, e in events if isinstance(e, ServerFailed)]
    # the live server's candidate arrives long before the dead one is given up
    assert srflx_at and srflx_at[0] < 0.2
    assert len(failed) == 1 and failed[0][1].server == DEAD and failed[0][1].kind == "stun"
    assert failed[0][0] == pytest.approx(2.0)  # its own deadline (started at t=0)
    assert end == pytest.approx(2.0)
    assert isinstance(events[-1][1], GatheringComplete)


def test_each_server_has_its_own_deadline_and_transactions_are_paced() -> None:
    cfg = GatherConfig(stun_servers=[DEAD, STUN1, STUN2], stun_timeout=1.0, ta=0.05)
    g = started(cfg, (HOST4, 1, 65535))
    first = g.datagrams_to_send(0.0)
    assert [d for _, _, d in first] == [DEAD]  # one new transaction per Ta (RFC 8445 §14)
    events, end = drive(g, Net(nat=True, dead={DEAD}))
    assert end == pytest.approx(1.0)


def test_slow_server_answer_after_deadline_is_ignored() -> None:
    cfg = GatherConfig(stun_servers=[STUN1], stun_timeout=0.5)
    g = started(cfg, (HOST4, 1, 65535))
    events, end = drive(g, Net(nat=True, delay={STUN1: 0.8}), until_complete=False)
    kinds = [type(e).__name__ for _, e in events]
    assert kinds == ["CandidateGathered", "ServerFailed", "GatheringComplete"]


def test_retransmissions_recover_from_loss() -> None:
    cfg = GatherConfig(stun_servers=[STUN1], stun_timeout=5.0, stun_rto=0.1)
    for seed in range(10):
        g = started(cfg, (HOST4, 1, 65535))
        net = Net(nat=True, loss=0.3, rng=random.Random(seed))
        events, _ = drive(g, net)
        got = {c.candidate.type for c in gathered(events)}
        failed = any(isinstance(e, ServerFailed) for _, e in events)
        assert failed or CandidateType.SERVER_REFLEXIVE in got
        assert isinstance(events[-1][1], GatheringComplete)


def test_turn_gives_relayed_and_srflx_candidates() -> None:
    turn = FakeTurn()
    cfg = GatherConfig(turn_servers=[TurnServer(TURN, "alice", "secret")])
    g = started(cfg, (HOST4, 1, 65535))
    events, _ = drive(g, Net(nat=True, turn=turn))
    cands = {c.candidate.type: c for c in gathered(events)}
    relay = cands[CandidateType.RELAYED]
    assert relay.candidate.transport_address == (TURN[0], turn.relay_port)
    assert relay.local == HOST4 and relay.relay == TURN
    assert relay.base == relay.candidate.transport_address
    assert (relay.candidate.related_address, relay.candidate.related_port) == (
        PUBLIC_IP,
        HOST4[1] + 10000,
    )
    assert relay.candidate.type_preference == 0
    srflx = cands[CandidateType.SERVER_REFLEXIVE]
    assert srflx.candidate.transport_address == (PUBLIC_IP, HOST4[1] + 10000)
    assert g.turn_client(relay.candidate.transport_address) is not None


def test_relay_send_and_receive_through_the_allocation() -> None:
    turn = FakeTurn()
    cfg = GatherConfig(turn_servers=[TurnServer(TURN, "alice", "secret")])
    g = started(cfg, (HOST4, 1, 65535))
    net = Net(nat=True, turn=turn)
    events, now = drive(g, net)
    relayed = next(c.candidate.transport_address for c in gathered(events) if c.relay)
    peer: Address = ("203.0.113.50", 5000)
    assert g.relay_send(relayed, b"hello", peer, now)
    drive(g, net, now, until_complete=False, until=now + 1)
    assert turn.sent == [(peer, b"hello")]
    assert g.receive(turn.data_indication(peer, b"back"), HOST4, TURN, now + 1)
    event = g.next_event()
    assert event == RelayedDataReceived(relayed, peer, b"back")
    # ICE traffic from a peer on the same socket is not the gatherer's
    assert not g.receive(b"\x80" + bytes(20), HOST4, peer, now + 1)


def test_wrong_turn_password_fails_that_server_only() -> None:
    cfg = GatherConfig(
        stun_servers=[STUN1], turn_servers=[TurnServer(TURN, "alice", "wrong")], turn_timeout=3
    )
    g = started(cfg, (HOST4, 1, 65535))
    events, _ = drive(g, Net(nat=True, turn=FakeTurn()))
    failed = [e for _, e in events if isinstance(e, ServerFailed)]
    assert len(failed) == 1 and failed[0].kind == "turn"
    assert CandidateType.SERVER_REFLEXIVE in {c.candidate.type for c in gathered(events)}


def test_relay_only_signals_only_relayed_candidates() -> None:
    cfg = GatherConfig(
        stun_servers=[STUN1], turn_servers=[TurnServer(TURN, "alice", "secret")], relay_only=True
    )
    g = started(cfg, (HOST4, 1, 65535))
    events, _ = drive(g, Net(nat=True, turn=FakeTurn()))
    assert [c.candidate.type for c in gathered(events)] == [CandidateType.RELAYED]
    complete = events[-1][1]
    assert isinstance(complete, GatheringComplete)
    assert [c.candidate.type for c in complete.candidates] == [CandidateType.RELAYED]
    assert CandidateType.HOST in {c.candidate.type for c in g.candidates}


def test_close_releases_turn_allocations() -> None:
    turn = FakeTurn()
    g = started(GatherConfig(turn_servers=[TurnServer(TURN, "alice", "secret")]), (HOST4, 1, 65535))
    _, now = drive(g, Net(nat=True, turn=turn))
    g.close(now)
    sent = g.datagrams_to_send(now)
    assert len(sent) == 1
    msg = parse_message(sent[0][0])
    assert msg.method == StunMethod.REFRESH and msg.get(LIFETIME) == 0


def test_add_socket_validation() -> None:
    g = CandidateGatherer()
    with pytest.raises(ValueError):
        g.add_socket(HOST4, 0)
    g.add_socket(HOST4, 1)
    g.start(0.0)
    with pytest.raises(RuntimeError):
        g.add_socket(HOST6, 1)
    with pytest.raises(RuntimeError):
        g.start(0.0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([STUN1, TURN, ("203.0.113.9", 1)]))
def test_garbage_never_raises(data: bytes, src: Address) -> None:
    cfg = GatherConfig(stun_servers=[STUN1], turn_servers=[TurnServer(TURN, "a", "b")])
    g = started(cfg, (HOST4, 1, 65535))
    sent = g.datagrams_to_send(0.0)
    # splice a live transaction id into the garbage to reach the parsers
    spliced = data
    if len(data) >= 20 and sent:
        spliced = data[:4] + sent[0][0][4:20] + data[20:]
    g.receive(data, HOST4, src, 0.01)
    g.receive(spliced, HOST4, src, 0.02)
    g.handle_timer(0.1)


def test_local_preferences_interleave_families_ipv6_first() -> None:
    prefs = local_preferences(["10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2"])
    order = sorted(prefs, key=lambda a: -prefs[a])
    assert order == ["2001:db8::1", "10.0.0.1", "2001:db8::2", "10.0.0.2"]
    assert len(set(prefs.values())) == 4
    assert max(prefs.values()) == 65535
    many = local_preferences([f"10.0.{i // 250}.{i % 250 + 1}" for i in range(300)])
    assert all(0 <= p <= 65535 for p in many.values())


# -- interfaces ---------------------------------------------------------------------------------

IP_JSON = json.dumps(
    [
        {
            "ifname": "lo",
            "flags": ["LOOPBACK", "UP", "LOWER_UP"],
            "addr_info": [
                {"family": "inet", "local": "127.0.0.1", "prefixlen": 8},
                {"family": "inet6", "local": "::1", "prefixlen": 128},
            ],
        },
        {
            "ifname": "eth0",
            "flags": ["BROADCAST", "UP", "LOWER_UP"],
            "addr_info": [
                {"family": "inet", "local": "192.168.1.10", "prefixlen": 24},
                {"family": "inet6", "local": "2001:db8::10", "prefixlen": 64},
                {"family": "inet6", "local": "2001:db8::99", "prefixlen": 64, "tentative": True},
                {"family": "inet6", "local": "2001:db8::50", "prefixlen": 64, "deprecated": True},
                {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"},
            ],
        },
        {
            "ifname": "docker0",
            "flags": ["UP"],
            "addr_info": [{"family": "inet", "local": "172.17.0.1", "prefixlen": 16}],
        },
        {
            "ifname": "wlan0",
            "flags": ["BROADCAST"],
            "addr_info": [{"family": "inet", "local": "10.1.1.1", "prefixlen": 24}],
        },
        {"ifname": "tun0", "flags": ["UP"], "addr_info": [{"family": "inet", "local": "10.8.0.2"}]},
        {"ifname": "odd", "flags": ["UP"], "addr_info": [{"family": "inet", "local": "nope"}, 5]},
    ]
)


def test_parse_ip_json() -> None:
    found = parse_ip_json(IP_JSON)
    addrs = [a.address for a in found]
    assert "2001:db8::99" not in addrs  # tentative
    assert "10.1.1.1" not in addrs  # interface down
    assert "nope" not in addrs
    assert next(a for a in found if a.address == "2001:db8::50").deprecated
    assert next(a for a in found if a.address == "192.168.1.10").interface == "eth0"
    assert parse_ip_json("not json") == [] and parse_ip_json('{"a": 1}') == []


def test_default_filter_drops_loopback_link_local_and_virtual_interfaces() -> None:
    kept = [a.address for a in filter_addresses(parse_ip_json(IP_JSON))]
    assert kept == ["192.168.1.10", "2001:db8::10", "2001:db8::50"]  # deprecated last


def test_filter_options() -> None:
    found = parse_ip_json(IP_JSON)
    every = filter_addresses(found, exclude=(), loopback=True, link_local=True)
    assert {"127.0.0.1", "::1", "fe80::1", "172.17.0.1", "10.8.0.2"} <= {a.address for a in every}
    only_docker = filter_addresses(found, include=["docker*"])
    assert [a.address for a in only_docker] == ["172.17.0.1"]
    v4 = filter_addresses(found, ipv6=False)
    assert [a.address for a in v4] == ["192.168.1.10"]
    v6 = filter_addresses(found, ipv4=False)
    assert all(a.is_ipv6 for a in v6)
    custom = filter_addresses(found, exclude=["eth*"])
    # a custom exclude list replaces the default one: docker0 and tun0 come back
    custom = filter_addresses(found, exclude=["eth*"])
    assert {a.address for a in custom} == {"172.17.0.1", "10.8.0.2"}  # ...unless replaced
    dup = filter_addresses([LocalAddress("10.0.0.1", "a"), LocalAddress("10.0.0.1", "b")])
    assert len(dup) == 1


def test_parse_if_inet6() -> None:
    text = (
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n"
        "20010db8000000000000000000000010 04 40 00 00     eth0\n"
        "20010db8000000000000000000000011 04 40 00 40     eth0\n"  # tentative
        "20010db8000000000000000000000012 04 40 00 20     eth0\n"  # deprecated
        "garbage line\n"
        "zz010db8000000000000000000000012 04 40 00 20     eth0\n"
    )
    found = parse_if_inet6(text)
    assert [a.address for a in found] == [
        "::1",
        "fe80::fc:ff:fe00:1",
        "2001:db8::10",
        "2001:db8::12",
    ]
    assert found[-1].deprecated and found[2].interface == "eth0" and found[2].prefixlen == 64


def test_bind_address_is_the_only_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interfaces, "_system_addresses", lambda: parse_ip_json(IP_JSON))
    assert interfaces.local_addresses(bind="127.0.0.1") == [LocalAddress("127.0.0.1", "lo", 8)]
    assert interfaces.local_addresses(bind="[2001:db8::10]")[0].interface == "eth0"
    assert interfaces.local_addresses(bind="10.9.9.9") == [LocalAddress("10.9.9.9")]
    assert [a.address for a in interfaces.local_addresses(bind="0.0.0.0")] == ["192.168.1.10"]
    assert all(a.is_ipv6 for a in interfaces.local_addresses(bind="::"))
    with pytest.raises(ValueError):
        interfaces.local_addresses(bind="not-an-ip")


def test_fallbacks_without_netlink_and_iproute2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interfaces, "_cache", None)
    monkeypatch.setattr(interfaces, "_from_netlink", lambda: None)
    monkeypatch.setattr(interfaces, "_from_iproute2", lambda: None)
    found = interfaces.local_addresses(loopback=True)
    assert "127.0.0.1" in {a.address for a in found}  # SIOCGIFCONF sees lo on any Linux


def test_real_system_has_loopback() -> None:
    found = interfaces.local_addresses(loopback=True, exclude=())
    assert "127.0.0.1" in {a.address for a in found}
    assert all(not a.is_loopback for a in interfaces.local_addresses())


def test_external_relay_holds_completion_until_reported() -> None:
    tcp = TurnServer(TURN, "alice", "secret", transport="tcp")
    cfg = GatherConfig(turn_servers=[tcp])
    g = CandidateGatherer(cfg)
    g.add_socket(HOST4, 1, 65535)
    g.external_relay_started("k")
    g.start(0.0)
    # a TCP TURN server is not the core's to contact
    assert g.datagrams_to_send(0.0) == []
    assert not g.complete
    gc = g.external_relay_done(
        "k",
        local=("192.168.1.10", 50123),
        server=tcp,
        relayed=(TURN[0], 61000),
        mapped=(PUBLIC_IP, 50123),
        preference=65535 - 128,
    )
    assert gc is not None and g.complete
    assert gc.candidate.type is CandidateType.RELAYED
    assert gc.candidate.local_preference == 65535 - 128
    assert (gc.candidate.related_address, gc.candidate.related_port) == (PUBLIC_IP, 50123)
    events = []
    while (e := g.next_event()) is not None:
        events.append(e)
    assert isinstance(events[-1], GatheringComplete)
    assert [c.candidate.type for c in events[-1].candidates] == [
        CandidateType.HOST,
        CandidateType.RELAYED,
    ]


def test_external_relay_failure_is_a_server_failure() -> None:
    tcp = TurnServer(TURN, "alice", "secret", transport="tls")
    g = CandidateGatherer(GatherConfig(turn_servers=[tcp]))
    g.add_socket(HOST4, 1, 65535)
    g.external_relay_started(1)
    g.external_relay_started(2)
    g.start(0.0)
    assert g.external_relay_done(1, local=(HOST4[0], 0), server=tcp, reason="refused") is None
    assert not g.complete  # the other one is still running
    g.external_relay_done(2, local=(HOST4[0], 0), server=tcp, reason="refused")
    assert g.complete
    kinds = []
    while (e := g.next_event()) is not None:
        kinds.append(type(e).__name__)
    assert kinds == ["CandidateGathered", "ServerFailed", "ServerFailed", "GatheringComplete"]


def test_ipv6_server_is_asked_from_ipv6_sockets_only() -> None:
    stun6: Address = ("2001:db8::53", 3478)
    g = started(GatherConfig(stun_servers=[STUN1, stun6]), (HOST4, 1, 65535), (HOST6, 1, 65279))
    sent: list[tuple[Address, Address]] = []
    for _ in range(5):
        sent += [(local, dst) for _, local, dst in g.datagrams_to_send(0.0)]
        g.handle_timer(g.get_timer() or 0.0)
    assert (HOST4, STUN1) in sent and (HOST6, stun6) in sent
    assert (HOST4, stun6) not in sent and (HOST6, STUN1) not in sent
    events, _ = drive(g, Net(nat=True))
    srflx = [c for c in g.candidates if c.candidate.type is CandidateType.SERVER_REFLEXIVE]
    # IPv4 is NATed, IPv6 is not (the simulated net maps only IPv4): one srflx, from IPv4
    assert [c.local for c in srflx] == [HOST4]


def test_two_turn_servers_give_distinct_relay_priorities() -> None:
    turn2: Address = ("198.51.100.4", 3478)
    fake1, fake2 = FakeTurn(), FakeTurn(address=turn2, relay_port=61000)

    class TwoTurns(Net):
        def reply(self, data: bytes, local: Address, dst: Address) -> bytes | None:
            if dst == turn2:
                return fake2.handle(data, self.public(local))
            return super().reply(data, local, dst)

    cfg = GatherConfig(
        turn_servers=[TurnServer(TURN, "alice", "secret"), TurnServer(turn2, "alice", "secret")]
    )
    g = started(cfg, (HOST4, 1, 65535))
    events, _ = drive(g, TwoTurns(nat=True, turn=fake1))
    relays = [c.candidate for c in gathered(events) if c.candidate.type is CandidateType.RELAYED]
    assert len(relays) == 2
    assert relays[0].priority != relays[1].priority
    assert relays[0].foundation != relays[1].foundation  # different server IPs (§5.1.1.3)
    srflx = [c for c in gathered(events) if c.candidate.type is CandidateType.SERVER_REFLEXIVE]
    assert len(srflx) == 1  # the same mapping from both allocations: redundant


def test_system_addresses_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake() -> list[LocalAddress]:
        calls.append(1)
        return parse_ip_json(IP_JSON)

    monkeypatch.setattr(interfaces, "_cache", None)
    monkeypatch.setattr(interfaces, "_from_netlink", fake)
    first = interfaces.local_addresses()
    first.clear()  # callers get copies
    assert interfaces.local_addresses() and len(calls) == 1
    monkeypatch.setattr(interfaces, "CACHE_SECONDS", 0.0)
    interfaces.local_addresses()
    assert len(calls) == 2


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.sampled_from(["UP", "inet", "inet6", "127.0.0.1", "fe80::1", "::1"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["ifname", "flags", "addr_info", "family", "local", "prefixlen", "x"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json)
@example({"ifname": "x", "flags": ["UP"], "addr_info": 5})
@example({"ifname": "x", "flags": ["UP"], "addr_info": [{"family": "inet", "local": 7}]})
def test_parse_ip_json_never_raises(value: object) -> None:
    for found in (parse_ip_json(json.dumps(value)), parse_ip_json(json.dumps([value]))):
        assert all(isinstance(a, LocalAddress) for a in found)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_if_inet6_never_raises(text: str) -> None:
    for a in parse_if_inet6(text):
        assert a.is_ipv6
