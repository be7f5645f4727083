"""Pairs from our relayed candidate to a private host address behind the peer's NAT
(``Agent._unlikely``): checked after every other pair, not waited for by the nomination,
never pruned (RFC 8445 §6.1.2.3 / §8.1.1 leave the order and the moment to the agent)."""

from __future__ import annotations

import random

import pytest

from ice.agent import Agent
from ice.candidate import Candidate, CandidateType
from ice.checklist import CandidatePair, CheckList, LocalCandidate, PairState
from ice.stun import is_stun, parse_message

RAISED = 105  # ice.candidate.RELAY_PREFERENCE_BEHIND_SYMMETRIC_NAT


def local_relay(ip: str = "198.51.100.10", port: int = 50000) -> Candidate:
    return Candidate.make(CandidateType.RELAYED, ip, port, base_address=ip, type_preference=RAISED)


def remote(kind: CandidateType, ip: str, port: int) -> Candidate:
    return Candidate.make(kind, ip, port, base_address=ip)


def agent_with(remotes: list[Candidate], *, relay: Candidate | None = None) -> Agent:
    agent = Agent(True, 1, ta=0.02, rng=random.Random(1), tie_breaker=7)
    agent.add_local_candidate(relay or local_relay(), "turn")
    agent.set_remote_parameters("ufrag", "p" * 22)
    for c in remotes:
        agent.add_remote_candidate(c)
    return agent


def unlikely_remotes(agent: Agent) -> set[str]:
    agent.start(0.0)
    return {p.remote.address for p in agent.checklist if agent._unlikely(p)}


H, S, R = CandidateType.HOST, CandidateType.SERVER_REFLEXIVE, CandidateType.RELAYED


@pytest.mark.parametrize(
    ("remotes", "expected"),
    [
        # a private host behind the NAT whose address the peer signalled as srflx
        ([(H, "10.0.2.2"), (S, "203.0.113.2"), (R, "198.51.100.20")], {"10.0.2.2"}),
        ([(H, "172.20.0.5"), (S, "203.0.113.2")], {"172.20.0.5"}),
        ([(H, "192.168.1.9"), (S, "203.0.113.2")], {"192.168.1.9"}),
        ([(H, "100.64.3.4"), (S, "203.0.113.2")], {"100.64.3.4"}),  # RFC 6598
        ([(H, "169.254.7.7"), (S, "203.0.113.2")], {"169.254.7.7"}),
        # no srflx signalled: nothing says the host is behind a NAT (same site, a VPN...)
        ([(H, "10.0.2.2"), (R, "198.51.100.20")], set()),
        # a public host address
        ([(H, "198.51.100.7"), (S, "203.0.113.2")], set()),
        # a srflx equal to the host address: no NAT in between
        ([(H, "10.0.2.2"), (S, "10.0.2.2")], set()),
    ],
)
def test_unlikely_ipv4(remotes: list[tuple[CandidateType, str]], expected: set[str]) -> None:
    agent = agent_with([remote(kind, ip, 5000 + i) for i, (kind, ip) in enumerate(remotes)])
    assert unlikely_remotes(agent) == expected


@pytest.mark.parametrize(
    ("remotes", "expected"),
    [
        ([(H, "fd00::2"), (S, "2001:db8::1")], {"fd00::2"}),
        # only an IPv4 srflx: says nothing about the IPv6 host
        ([(H, "fd00::2"), (S, "203.0.113.2")], set()),
        ([(H, "2001:db8:1::2"), (S, "2001:db8::1")], set()),
    ],
)
def test_unlikely_ipv6(remotes: list[tuple[CandidateType, str]], expected: set[str]) -> None:
    relay = local_relay("2001:db8:ff::10")
    agent = agent_with(
        [remote(kind, ip, 5000 + i) for i, (kind, ip) in enumerate(remotes)], relay=relay
    )
    assert unlikely_remotes(agent) == expected


def test_host_local_candidate_is_never_unlikely() -> None:
    agent = Agent(True, 1, ta=0.02, rng=random.Random(1), tie_breaker=7)
    agent.add_local_candidate(Candidate.make(H, "10.0.1.2", 5001), ("10.0.1.2", 5001))
    agent.set_remote_parameters("ufrag", "p" * 22)
    agent.add_remote_candidate(remote(H, "10.0.2.2", 5003))
    agent.add_remote_candidate(remote(S, "203.0.113.2", 40000))
    assert unlikely_remotes(agent) == set()


def run_checks(agent: Agent, until: float) -> list[tuple[str, int]]:
    """Drive ``agent`` alone (nobody answers) on a virtual clock; the destinations of its
    Binding requests in the order first sent."""
    sent: list[tuple[str, int]] = []
    agent.start(0.0)
    now = 0.0
    while now <= until:
        agent.handle_timer(now)
        for data, _via, dst in agent.datagrams_to_send(now):
            if is_stun(data) and dst not in sent:
                parse_message(data)
                sent.append(dst)
        t = agent.get_timer()
        if t is None:
            break
        now = max(t, now + 1e-6)
    return sent


def test_relay_to_private_host_ranked_as_a_recommended_relay_but_checked() -> None:
    """By priority, "our raised relay -> the peer's private host" would be the first check;
    it is ranked as if our relay had preference 0 (after the pair towards the peer's srflx,
    still before the one towards its relay) and is sent: a TURN server inside the peer's
    network may reach it."""
    agent = agent_with(
        [
            remote(H, "10.0.2.2", 5003),
            remote(S, "203.0.113.2", 40000),
            remote(R, "198.51.100.20", 50001),
        ]
    )
    agent.start(0.0)
    by_priority = [p.remote_address for p in agent.checklist]
    assert by_priority[0] == ("10.0.2.2", 5003)
    sent = run_checks(agent, 1.0)
    assert sent == [("203.0.113.2", 40000), ("10.0.2.2", 5003), ("198.51.100.20", 50001)]


def test_private_host_without_peer_srflx_keeps_its_turn() -> None:
    agent = agent_with([remote(H, "10.0.2.2", 5003), remote(R, "198.51.100.20", 50001)])
    sent = run_checks(agent, 1.0)
    assert sent == [("10.0.2.2", 5003), ("198.51.100.20", 50001)]


# -- CheckList.next_check(rank=...) ----------------------------------------------------------


def checklist_with_pairs() -> CheckList:
    relay = Candidate.make(R, "198.51.100.10", 50000, type_preference=RAISED)
    host = Candidate.make(H, "10.0.1.2", 5001)
    cl = CheckList(True)
    cl.add_pairs(
        [
            LocalCandidate(relay, "turn", relay.transport_address),
            LocalCandidate(host, host.transport_address, host.transport_address),
        ],
        [remote(H, "10.0.2.2", 5003), remote(S, "203.0.113.2", 40000)],
    )
    cl.start()
    return cl


def is_later(pair: CandidatePair) -> bool:
    return pair.remote.address == "10.0.2.2" and pair.local.candidate.type is R


def last_rank(pair: CandidatePair) -> int:
    return -1 if is_later(pair) else pair.priority


@pytest.mark.parametrize("state", [PairState.WAITING, PairState.FROZEN])
def test_next_check_follows_rank_and_never_skips(state: PairState) -> None:
    cl = checklist_with_pairs()
    for p in cl:
        p.state = state
    assert is_later(next(iter(cl))) is False  # host/host first by priority...
    assert is_later(list(cl)[1])  # ...then our raised relay -> the private host
    order = []
    while (pair := cl.next_check(0.0, rank=last_rank)) is not None:
        order.append(pair)
        pair.state = PairState.FAILED
    assert len(order) == len(cl)
    assert [is_later(p) for p in order] == [False] * (len(cl) - 1) + [True]
    others = order[:-1]
    assert [p.priority for p in others] == sorted((p.priority for p in others), reverse=True)


def test_next_check_triggered_pairs_are_not_reranked() -> None:
    cl = checklist_with_pairs()
    deferred = next(p for p in cl if is_later(p))
    deferred.state = PairState.WAITING
    cl.enqueue_triggered(deferred)
    assert cl.next_check(0.0, rank=last_rank) is deferred


def test_next_check_without_rank_is_priority_order() -> None:
    cl = checklist_with_pairs()
    for p in cl:
        p.state = PairState.WAITING
    order = []
    while (pair := cl.next_check(0.0)) is not None:
        order.append(pair)
        pair.state = PairState.FAILED
    assert order == list(cl)
    assert is_later(order[1])
