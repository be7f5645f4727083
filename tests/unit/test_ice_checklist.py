"""Check lists (RFC 8445 §6.1.2): pair formation, priorities, pruning, states, next check."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ice.candidate import Candidate, CandidateType, candidate_priority
from ice.checklist import (
    CandidatePair,
    CheckList,
    LocalCandidate,
    PairState,
    make_prflx_local,
    pair_priority,
    prflx_priority,
)


def host(ip: str, port: int, component: int = 1, local_pref: int = 65535) -> LocalCandidate:
    c = Candidate.make(
        CandidateType.HOST, ip, port, component=component, local_preference=local_pref
    )
    return LocalCandidate(c, (ip, port), (ip, port))


def srflx(base: LocalCandidate, ip: str, port: int) -> LocalCandidate:
    c = Candidate.make(
        CandidateType.SERVER_REFLEXIVE,
        ip,
        port,
        component=base.component,
        base_address=base.base[0],
        server_address="198.51.100.1",
        related=base.base,
    )
    return LocalCandidate(c, base.via, base.base)


def relay(ip: str, port: int, component: int = 1) -> LocalCandidate:
    c = Candidate.make(CandidateType.RELAYED, ip, port, component=component)
    return LocalCandidate(c, ("relay", port), (ip, port))


def remote(
    kind: CandidateType, ip: str, port: int, component: int = 1, transport: str = "udp"
) -> Candidate:
    c = Candidate.make(kind, ip, port, component=component, base_address=ip)
    if transport != "udp":
        c = Candidate(c.foundation, c.component, transport, c.priority, c.address, c.port, c.type)
    return c


# -- priorities ------------------------------------------------------------------------------


def test_pair_priority_formula() -> None:
    g, d = 2130706431, 1694498815  # host and srflx priorities of component 1
    assert pair_priority(g, d) == (d << 32) + 2 * g + 1
    assert pair_priority(d, g) == (d << 32) + 2 * g
    assert pair_priority(g, g) == (g << 32) + 2 * g
    # 64-bit: the largest candidate priorities still fit
    top = (1 << 31) - 1
    assert pair_priority(top, top) < 1 << 64
    # the controlling side's preference breaks ties between mirror-image pairs
    assert pair_priority(g, d) > pair_priority(d, g)


def test_pair_priority_depends_on_role() -> None:
    local, rem = host("10.0.0.1", 1000), remote(CandidateType.SERVER_REFLEXIVE, "192.0.2.1", 2)
    pair = CandidatePair(local, rem, 0)
    controlling = pair.compute_priority(True)
    controlled = pair.compute_priority(False)
    assert controlling == pair_priority(local.candidate.priority, rem.priority)
    assert controlled == pair_priority(rem.priority, local.candidate.priority)
    assert controlling != controlled


def test_prflx_priority_uses_peer_reflexive_type_preference() -> None:
    local = host("10.0.0.1", 1000, component=2, local_pref=1234).candidate
    assert prflx_priority(local) == candidate_priority(
        CandidateType.PEER_REFLEXIVE, 2, local_preference=1234
    )


# -- forming and pruning --------------------------------------------------------------------


def test_pairs_need_same_component_family_and_udp() -> None:
    cl = CheckList(True)
    locals_ = [host("10.0.0.1", 1000, 1), host("10.0.0.1", 1001, 2), host("fd00::1", 1002)]
    remotes = [
        remote(CandidateType.HOST, "192.0.2.1", 1, 1),
        remote(CandidateType.HOST, "192.0.2.1", 2, 2),
        remote(CandidateType.HOST, "2001:db8::1", 3, 1),
        remote(CandidateType.HOST, "192.0.2.1", 4, 1, transport="tcp"),
        remote(CandidateType.HOST, "abcd.local", 5, 1),
    ]
    added = cl.add_pairs(locals_, remotes)
    got = {(p.local.address, p.remote_address) for p in added}
    assert got == {
        (("10.0.0.1", 1000), ("192.0.2.1", 1)),
        (("10.0.0.1", 1001), ("192.0.2.1", 2)),
        (("fd00::1", 1002), ("2001:db8::1", 3)),
    }
    assert all(p.local.component == p.remote.component for p in cl)


def test_server_reflexive_locals_are_replaced_by_their_base() -> None:
    cl = CheckList(True)
    base = host("10.0.0.1", 1000)
    refl = srflx(base, "203.0.113.1", 40000)
    r = remote(CandidateType.HOST, "192.0.2.1", 1)
    # even without the host candidate in the list the srflx is not paired by itself
    assert cl.add_pairs([refl], [r]) == []
    added = cl.add_pairs([base, refl], [r])
    assert len(added) == 1 and added[0].local is base
    # adding again produces nothing redundant
    assert cl.add_pairs([base, refl], [r]) == []
    assert len(cl) == 1


def test_redundant_pair_keeps_the_higher_priority() -> None:
    cl = CheckList(True)
    base = host("10.0.0.1", 1000)
    low = remote(CandidateType.RELAYED, "192.0.2.1", 1)
    (first,) = cl.add_pairs([base], [low])
    high = remote(CandidateType.HOST, "192.0.2.1", 1)  # same transport address
    (second,) = cl.add_pairs([base], [high])
    assert list(cl) == [second] and second.priority > first.priority
    assert cl.find(base.via, base.base, ("192.0.2.1", 1)) is second


def test_relayed_candidates_are_their_own_base() -> None:
    cl = CheckList(False)
    added = cl.add_pairs(
        [relay("198.51.100.10", 50000)], [remote(CandidateType.HOST, "192.0.2.1", 1)]
    )
    assert len(added) == 1 and added[0].via == ("relay", 50000)


def test_pairs_sorted_and_limited() -> None:
    cl = CheckList(True, max_pairs=10)
    locals_ = [host("10.0.0.1", 1000 + i, local_pref=65535 - i) for i in range(5)]
    remotes = [remote(CandidateType.HOST, "192.0.2.1", 1 + i) for i in range(5)]
    cl.add_pairs(locals_, remotes)
    assert len(cl) == 10
    priorities = [p.priority for p in cl]
    assert priorities == sorted(priorities, reverse=True)
    # the ten kept are the ten best of the 25
    all_prios = sorted(
        (pair_priority(lc.candidate.priority, rc.priority) for lc in locals_ for rc in remotes),
        reverse=True,
    )
    assert priorities == all_prios[:10]


# -- states ---------------------------------------------------------------------------------


def two_component_list() -> tuple[CheckList, list[LocalCandidate], list[Candidate]]:
    cl = CheckList(True)
    locals_ = [host("10.0.0.1", 1000, 1), host("10.0.0.1", 1001, 2)]
    remotes = [
        remote(CandidateType.HOST, "192.0.2.1", 1, 1),
        remote(CandidateType.HOST, "192.0.2.1", 2, 2),
        remote(CandidateType.HOST, "192.0.2.9", 1, 1),
        remote(CandidateType.HOST, "192.0.2.9", 2, 2),
    ]
    cl.add_pairs(locals_, remotes)
    return cl, locals_, remotes


def test_initial_states_one_waiting_pair_per_foundation_lowest_component() -> None:
    cl, _, _ = two_component_list()
    cl.start()
    waiting = [p for p in cl if p.state is PairState.WAITING]
    frozen = [p for p in cl if p.state is PairState.FROZEN]
    # two foundations (remote IPs differ), component 1 pair of each goes Waiting
    assert len(waiting) == 2 and all(p.component == 1 for p in waiting)
    assert len(frozen) == 2 and all(p.component == 2 for p in frozen)
    assert len({p.foundation for p in waiting}) == 2


def test_success_unfreezes_same_foundation() -> None:
    cl, _, _ = two_component_list()
    cl.start()
    first = next(p for p in cl if p.state is PairState.WAITING)
    first.state = PairState.SUCCEEDED
    cl.unfreeze_foundation(first.foundation)
    sibling = next(p for p in cl if p.foundation == first.foundation and p is not first)
    assert sibling.state is PairState.WAITING
    others = [p for p in cl if p.foundation != first.foundation and p.component == 2]
    assert all(p.state is PairState.FROZEN for p in others)


def test_next_check_triggered_first_then_waiting_then_unfrozen() -> None:
    cl, _, _ = two_component_list()
    cl.start()
    frozen = next(p for p in cl if p.state is PairState.FROZEN)
    cl.enqueue_triggered(frozen)
    assert cl.next_check() is frozen
    frozen.state = PairState.IN_PROGRESS
    # then the highest-priority waiting pairs
    w1 = cl.next_check()
    assert w1 is not None and w1.state is PairState.WAITING
    w1.state = PairState.IN_PROGRESS
    w2 = cl.next_check()
    assert w2 is not None and w2 is not w1
    w2.state = PairState.FAILED
    # no Waiting pair: a Frozen pair whose foundation has nothing Waiting/In-Progress
    w1.state = PairState.FAILED
    nxt = cl.next_check()
    assert nxt is not None and nxt.state is PairState.FROZEN
    nxt.state = PairState.FAILED
    frozen.state = PairState.FAILED
    assert cl.next_check() is None and not cl.has_check()


def test_triggered_fifo_order_and_has_check() -> None:
    cl, _, _ = two_component_list()
    a, b, c = list(cl)[:3]
    for p in (a, b, c):
        p.state = PairState.FAILED
    cl.enqueue_triggered(c)
    cl.enqueue_triggered(a)
    cl.enqueue_triggered(c)  # no duplicates
    assert cl.has_triggered()
    assert cl.next_triggered() is c
    assert cl.next_triggered() is a
    assert cl.next_triggered() is None


def test_pairs_trickled_after_start_become_waiting() -> None:
    cl = CheckList(True)
    local = host("10.0.0.1", 1000)
    cl.add_pairs([local], [remote(CandidateType.HOST, "192.0.2.1", 1)])
    cl.start()
    (late,) = cl.add_pairs([local], [remote(CandidateType.SERVER_REFLEXIVE, "203.0.113.9", 7)])
    assert late.state is PairState.WAITING


def test_set_role_recomputes_and_resorts() -> None:
    cl = CheckList(True)
    local = host("10.0.0.1", 1000)
    rems = [
        remote(CandidateType.SERVER_REFLEXIVE, "203.0.113.9", 7),
        remote(CandidateType.RELAYED, "198.51.100.10", 8),
    ]
    cl.add_pairs([local], rems)
    before = {id(p): p.priority for p in cl}
    cl.set_role(False)
    for p in cl:
        assert p.priority == pair_priority(p.remote.priority, p.local.candidate.priority)
        assert p.priority != before[id(p)]


def test_remove_pending_after_selection() -> None:
    cl, _, _ = two_component_list()
    cl.start()
    best = list(cl)[0]
    cl.remove_pending(best.component, below=best.priority)
    assert best in list(cl)
    cl.remove_pending(1)
    assert all(p.component == 2 or p.state not in (PairState.FROZEN, PairState.WAITING) for p in cl)


def test_valid_list_dedup_and_best() -> None:
    cl, locals_, remotes = two_component_list()
    pairs = [p for p in cl if p.component == 1]
    v1 = cl.add_valid(pairs[0])
    assert cl.add_valid(CandidatePair(pairs[0].local, pairs[0].remote, 1)) is v1
    cl.add_valid(pairs[1])
    assert cl.best_valid(1) is max(pairs[:2], key=lambda p: p.priority)
    assert cl.best_valid(2) is None
    prflx = make_prflx_local(locals_[0], ("203.0.113.5", 4000), 7, "f")
    assert prflx.via == locals_[0].via and prflx.base == locals_[0].base
    assert not prflx.is_base and prflx.candidate.type is CandidateType.PEER_REFLEXIVE
    assert remotes


def test_in_progress_pair_holds_its_foundation_only_until_hold_until() -> None:
    """§6.1.4.2 picks a Frozen pair only if no pair of its foundation is Waiting or
    In-Progress; an In-Progress pair past ``hold_until`` (its first request unanswered for
    an RTO) no longer counts, so the other component's pair does not starve behind it."""
    cl, _, _ = two_component_list()
    cl.start()
    for pair in cl:
        if pair.state is PairState.WAITING:
            pair.state = PairState.IN_PROGRESS
            pair.hold_until = 1.0 if pair.remote.address == "192.0.2.1" else 2.0
    assert cl.next_check() is None and not cl.has_check()
    assert cl.next_check(0.5) is None and not cl.has_check(0.5)
    assert cl.release_at() == 1.0
    released = cl.next_check(1.0)
    assert released is not None and released.component == 2
    assert released.remote.address == "192.0.2.1" and cl.has_check(1.0)
    released.state = PairState.IN_PROGRESS
    released.hold_until = 1.5  # a foundation is released when its last pair's hold ends
    assert cl.release_at() == 2.0
    assert cl.next_check(1.9) is None
    late = cl.next_check(2.0)
    assert late is not None and late.remote.address == "192.0.2.9"


def test_release_at_ignores_foundations_with_a_waiting_pair() -> None:
    cl, _, _ = two_component_list()
    cl.start()
    assert cl.release_at() is None  # Waiting pairs hold for as long as they wait
    checked = next(p for p in cl if p.state is PairState.WAITING)
    checked.state = PairState.IN_PROGRESS
    assert cl.release_at() is None  # hold_until defaults to "for ever" (RFC behaviour)
    checked.hold_until = 3.0
    assert cl.release_at() == 3.0


def test_unfreeze_component() -> None:
    cl, _, _ = two_component_list()
    cl.start()
    assert cl.unfreeze_component(2) == 2
    assert all(p.state is PairState.WAITING for p in cl)
    assert cl.unfreeze_component(2) == 0


_STATES = st.sampled_from(list(PairState))
_HOLDS = st.one_of(st.just(math.inf), st.floats(0.0, 10.0))


@settings(max_examples=300, deadline=None)
@given(
    remotes=st.integers(1, 3),
    states=st.lists(st.tuples(_STATES, _HOLDS), min_size=12, max_size=12),
    now=st.floats(0.0, 12.0),
)
def test_release_time_and_next_check_agree(
    remotes: int, states: list[tuple[PairState, float]], now: float
) -> None:
    """Whatever the states and holds: a check is available exactly when next_check finds
    one, and when none is, release_at() is in the future and a check is available then (so
    a timer set for it neither spins nor sleeps for ever)."""
    cl = CheckList(True)
    # two sockets per component on one address: four pairs per foundation (remote IP)
    locals_ = [host("10.0.0.1", 1000 + i, 1 + i % 2) for i in range(4)]
    cl.add_pairs(
        locals_,
        [
            remote(CandidateType.HOST, f"192.0.2.{i + 1}", 5, c)
            for i in range(remotes)
            for c in (1, 2)
        ],
    )
    cl.start()
    for pair, (state, hold) in zip(cl, states, strict=False):
        pair.state = state
        pair.hold_until = hold
    available = cl.has_check(now)
    assert (cl.next_check(now) is not None) == available
    release = cl.release_at()
    if not available and release is not None:
        assert release > now
        assert cl.has_check(release)
