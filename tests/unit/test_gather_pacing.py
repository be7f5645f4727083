"""How gathering paces its transactions (RFC 8445 §5.1.1, §14, Appendix B.1) and reuses TURN
credentials, on a virtual clock: one new NAT binding per Ta (5 ms), a Binding and an Allocate
to one server address from one socket together, TURN before STUN, a pacer shared by several
gatherers, the second allocation to a server starting with the first one's realm and nonce."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ice.candidate import CandidateType
from ice.gather import (
    DEFAULT_TA,
    MIN_TA,
    CandidateGathered,
    CandidateGatherer,
    GatherConfig,
    GatheringComplete,
    ServerFailed,
    TransactionPacer,
    TurnServer,
)
from ice.stun import (
    MESSAGE_INTEGRITY,
    NONCE,
    USERNAME,
    XOR_MAPPED_ADDRESS,
    Address,
    StunClass,
    StunMessage,
    StunMethod,
    parse_message,
)
from ice.turn import TurnClient, TurnState
from tests.unit.test_ice_gather import (
    DEAD,
    HOST4,
    STUN1,
    TURN,
    FakeTurn,
    Net,
    drive,
    started,
)
from tests.unit.test_turn import SERVER, FakeTurnServer
from tests.unit.test_turn import Net as TurnNet

HOST4_RTCP: Address = (HOST4[0], HOST4[1] + 1)
HOST4B: Address = ("192.168.1.11", 40000)


@dataclass
class Recording(Net):
    """The simulated network of test_ice_gather, logging every request sent; the TURN server
    answers Binding requests as well (coturn does)."""

    log: list[tuple[float, Address, Address, str, bool]] = field(default_factory=list)
    clock: list[float] = field(default_factory=lambda: [0.0])

    def reply(self, data: bytes, local: Address, dst: Address) -> bytes | None:
        msg = parse_message(data)
        if msg.cls is StunClass.REQUEST:
            method = StunMethod(msg.method).name
            self.log.append((self.clock[0], local, dst, method, MESSAGE_INTEGRITY in msg))
        if self.turn is not None and dst == self.turn.address and msg.method == StunMethod.BINDING:
            return (
                msg.response().add(XOR_MAPPED_ADDRESS, self.public(local)).encode(fingerprint=True)
            )
        return super().reply(data, local, dst)


def run(g: CandidateGatherer, net: Recording) -> float:
    """drive() with the log's clock kept in step (the gatherer sends at the times it is
    driven, so the log records the times of each first transmission)."""
    original = g.datagrams_to_send

    def sending(now: float | None = None) -> list[tuple[bytes, Address, Address]]:
        net.clock[0] = 0.0 if now is None else now
        return original(now)

    g.datagrams_to_send = sending  # type: ignore[method-assign]
    _, end = drive(g, net)
    return end


def firsts(net: Recording) -> list[tuple[float, Address, Address, str]]:
    """The first transmission of each (socket, server, method) with its time."""
    seen: dict[tuple[Address, Address, str], float] = {}
    for t, local, dst, method, _ in net.log:
        seen.setdefault((local, dst, method), t)
    return sorted((t, *k) for k, t in seen.items())


def test_default_ta_is_the_rfc_floor() -> None:
    assert DEFAULT_TA == MIN_TA == 0.005
    assert GatherConfig().ta == 0.005


def test_stun_and_turn_on_one_address_start_together_then_the_next_socket() -> None:
    cfg = GatherConfig(stun_servers=[TURN], turn_servers=[TurnServer(TURN, "alice", "secret")])
    g = started(cfg, (HOST4, 1, 65535), (HOST4_RTCP, 2, 65535))
    net = Recording(nat=True, turn=FakeTurn())
    end = run(g, net)
    starts = firsts(net)
    assert [(t, s, m) for t, s, _, m in starts] == [
        (0.0, HOST4, "ALLOCATE"),
        (0.0, HOST4, "BINDING"),
        (pytest.approx(0.005), HOST4_RTCP, "ALLOCATE"),
        (pytest.approx(0.005), HOST4_RTCP, "BINDING"),
    ]
    # one slot for the second socket, then the 401 round trip and the allocation (10 ms each
    # in this network) - not Ta per transaction
    assert end < 0.005 + 0.03
    types = sorted(c.candidate.type.value for c in g.candidates)
    assert types == ["host", "host", "relay", "relay", "srflx", "srflx"]


def test_turn_starts_before_stun_on_each_socket_and_each_binding_gets_a_slot() -> None:
    cfg = GatherConfig(stun_servers=[STUN1], turn_servers=[TurnServer(TURN, "alice", "secret")])
    g = started(cfg, (HOST4, 1, 65535), (HOST4B, 1, 65535))
    net = Recording(nat=True, turn=FakeTurn())
    run(g, net)
    starts = [(round(t, 4), s, d) for t, s, d, m in firsts(net) if m != "ALLOCATE" or d == TURN]
    assert starts == [
        (0.0, HOST4, TURN),
        (0.005, HOST4, STUN1),
        (0.01, HOST4B, TURN),
        (0.015, HOST4B, STUN1),
    ]


def test_a_larger_ta_is_honoured() -> None:
    cfg = GatherConfig(stun_servers=[STUN1, DEAD], ta=0.05, stun_timeout=1.0)
    g = started(cfg, (HOST4, 1, 65535))
    assert [d for _, _, d in g.datagrams_to_send(0.0)] == [STUN1]
    assert g.get_timer() == pytest.approx(0.05)


def test_gatherers_sharing_a_pacer_take_turns() -> None:
    pacer = TransactionPacer(0.005)
    cfg = GatherConfig(stun_servers=[STUN1])
    a = CandidateGatherer(cfg, pacer=pacer)
    b = CandidateGatherer(cfg, pacer=pacer)
    a.add_socket(HOST4)
    b.add_socket(HOST4B)
    a.start(0.0)
    b.start(0.001)
    assert len(a.datagrams_to_send(0.0)) == 1
    assert b.datagrams_to_send(0.001) == []  # the process's next slot is a's + 5 ms
    assert b.get_timer() == pytest.approx(0.005)
    b.handle_timer(0.005)
    assert [d for _, _, d in b.datagrams_to_send(0.005)] == [STUN1]
    # the host candidates were there at once all the same
    assert [c.candidate.type for c in b.candidates] == [CandidateType.HOST]


def test_pacer_slots() -> None:
    pacer = TransactionPacer(0.005)
    assert pacer.next_slot(1.0) == 1.0
    pacer.take(1.0)
    assert pacer.next_slot(1.001) == pytest.approx(1.005)
    assert pacer.next_slot(2.0) == 2.0
    pacer.take(0.5)  # an older clock reading never moves the next slot back
    assert pacer.next_slot(1.001) == pytest.approx(1.005)


def test_pacer_forgets_a_slot_from_another_clock() -> None:
    pacer = TransactionPacer(0.005)
    pacer.take(1e9)  # e.g. a loop with a virtual clock far ahead
    assert pacer.next_slot(5.0) == 5.0  # never a wait of years
    pacer.take(5.0)
    assert pacer.next_slot(5.001) == pytest.approx(5.005)


def test_a_dead_server_still_never_stalls_gathering() -> None:
    cfg = GatherConfig(
        stun_servers=[DEAD, STUN1],
        turn_servers=[TurnServer(TURN, "alice", "secret")],
        stun_timeout=0.5,
    )
    g = started(cfg, (HOST4, 1, 65535))
    events, end = drive(g, Net(nat=True, turn=FakeTurn(), dead={DEAD}))
    relay_at = [t for t, e in events if isinstance(e, CandidateGathered) and e.local.relay]
    assert relay_at and relay_at[0] < 0.05
    assert [e.server for _, e in events if isinstance(e, ServerFailed)] == [DEAD]
    assert isinstance(events[-1][1], GatheringComplete)
    assert end == pytest.approx(0.5 + 0.005, abs=0.006)  # the dead one's own deadline


# -- TURN credentials reused ----------------------------------------------------------------------


def test_second_allocation_to_a_server_sends_credentials_at_once() -> None:
    cfg = GatherConfig(turn_servers=[TurnServer(TURN, "alice", "secret")])
    g = started(cfg, (HOST4, 1, 65535), (HOST4_RTCP, 2, 65535))
    # a round trip shorter than Ta, as in a LAN or the lab: the challenge is back by then
    net = Recording(nat=True, turn=FakeTurn(), delay={TURN: 0.001})
    run(g, net)
    allocates = [(s, signed) for _, s, _, m, signed in net.log if m == "ALLOCATE"]
    # the first: unsigned, challenged, signed; the second: signed from the start
    assert allocates == [(HOST4, False), (HOST4, True), (HOST4_RTCP, True)]
    relays = [c for c in g.candidates if c.candidate.type is CandidateType.RELAYED]
    assert {c.local for c in relays} == {HOST4, HOST4_RTCP}


def allocated_client(server: FakeTurnServer) -> TurnClient:
    client = TurnClient(SERVER, "alice", "s3cret")
    net = TurnNet(client, server)
    client.allocate(0.0)
    net.flush()
    assert client.state is TurnState.ALLOCATED
    return client


@pytest.mark.parametrize("answer", [438, 401])
def test_a_reused_nonce_the_server_does_not_know_costs_one_round_trip(answer: int) -> None:
    server = FakeTurnServer()
    first = allocated_client(server)
    second = TurnClient(SERVER, "alice", "s3cret")
    assert second.reuse_credentials(first)
    # a nonce per 5-tuple, as coturn has: the reused one is refused with 438 and a new nonce
    # (or, by another server, with a plain 401 challenge)
    server.nonce = "nonce-2"
    if answer == 401:
        normal = server._answer
        challenged: list[StunMessage] = []

        def challenge_once(msg: StunMessage) -> bytes | None:
            if not challenged:
                challenged.append(msg)
                return server._challenge(msg, 401)
            return normal(msg)

        server._answer = challenge_once  # type: ignore[method-assign]
    net = TurnNet(second, server)
    second.allocate(0.0)
    net.flush()
    assert second.state is TurnState.ALLOCATED
    first_try, second_try = server.requests(StunMethod.ALLOCATE)[-2:]
    assert first_try.get(USERNAME) == "alice" and first_try.get(NONCE) == "nonce-1"
    assert second_try.get(NONCE) == "nonce-2"


def test_reuse_needs_the_same_server_and_user_and_an_idle_client() -> None:
    server = FakeTurnServer()
    first = allocated_client(server)
    assert not TurnClient(("198.51.100.200", 3478), "alice", "s3cret").reuse_credentials(first)
    assert not TurnClient(SERVER, "bob", "s3cret").reuse_credentials(first)
    assert not TurnClient(SERVER, "alice", "other").reuse_credentials(first)
    assert not TurnClient(SERVER, "alice", "s3cret").reuse_credentials(
        TurnClient(SERVER, "alice", "s3cret")
    )  # nothing learnt yet
    started = TurnClient(SERVER, "alice", "s3cret")
    started.allocate(0.0)
    assert not started.reuse_credentials(first)


# -- properties -----------------------------------------------------------------------------------

SERVERS: list[Address] = [STUN1, TURN, ("198.51.100.4", 3478), ("198.51.100.5", 3478)]


@settings(max_examples=60, deadline=None)
@given(
    sockets=st.integers(min_value=1, max_value=4),
    components=st.integers(min_value=1, max_value=2),
    stun=st.lists(st.sampled_from(SERVERS), max_size=3, unique=True),
    turn=st.lists(st.sampled_from(SERVERS), max_size=1),  # one simulated TURN server
    ta=st.sampled_from([0.005, 0.02, 0.05]),
)
def test_new_bindings_are_at_least_ta_apart_and_each_group_leaves_together(
    sockets: int, components: int, stun: list[Address], turn: list[Address], ta: float
) -> None:
    cfg = GatherConfig(
        stun_servers=stun,
        turn_servers=[TurnServer(t, "alice", "secret") for t in turn],
        ta=ta,
        stun_timeout=1.0,
        turn_timeout=1.0,
    )
    hosts = [
        ((f"192.168.1.{10 + i}", 40000 + c), c, 65535 - i)
        for i in range(sockets)
        for c in range(1, components + 1)
    ]
    g = started(cfg, *hosts)
    # the simulated TURN server answers at its own address; the others are plain STUN
    net = Recording(nat=True, turn=FakeTurn(address=turn[0]) if turn else None)
    run(g, net)
    assert g.complete
    starts = firsts(net)
    groups: dict[tuple[Address, Address], float] = {}
    for t, local, dst, method in starts:
        if method == "ALLOCATE" and dst not in turn:
            continue
        groups.setdefault((local, dst), t)
    # a Binding and an Allocate to one address from one socket start at the same time
    for t, local, dst, _ in starts:
        assert t == pytest.approx(groups[(local, dst)])
    times = sorted(groups.values())
    assert all(b - a >= ta - 1e-9 for a, b in zip(times, times[1:], strict=False))
    assert len(groups) == len({(h[0], s) for h in hosts for s in {*stun, *turn}})
