"""ICE check lists (RFC 8445 §6.1.2): candidate pairs, their priorities and states.

* :func:`pair_priority` - the 64-bit pair priority of §6.1.2.3.
* :class:`LocalCandidate` - a local candidate with the base it is sent from (§5.1.1) and the
  shell's ``via`` (the socket or TURN allocation that base lives on).
* :class:`CandidatePair` - one pair, its state (§6.1.2.6) and what the checks learnt.
* :class:`CheckList` - forming and pruning pairs (§6.1.2.2, §6.1.2.4, §6.1.2.5), the initial
  states (§6.1.2.6), the triggered-check FIFO (§7.3.1.4) and the choice of the next check
  (§6.1.4.2), the valid list (§7.2.5.3.2).

Nothing here sends or times anything; :mod:`ice.agent` drives it.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field

from ice.candidate import Candidate, CandidateType, candidate_priority
from ice.stun import Address

__all__ = [
    "DEFAULT_MAX_PAIRS",
    "CandidatePair",
    "CheckList",
    "LocalCandidate",
    "PairState",
    "pair_priority",
]

DEFAULT_MAX_PAIRS = 100  # RFC 8445 §6.1.2.5: SHOULD limit; 100 recommended


def pair_priority(controlling_priority: int, controlled_priority: int) -> int:
    """``2^32*MIN(G,D) + 2*MAX(G,D) + (G>D?1:0)`` with G the controlling agent's candidate
    priority and D the controlled agent's (RFC 8445 §6.1.2.3)."""
    g, d = controlling_priority, controlled_priority
    return (min(g, d) << 32) + 2 * max(g, d) + (1 if g > d else 0)


class PairState(enum.Enum):
    """Candidate pair states (RFC 8445 §6.1.2.6)."""

    FROZEN = "frozen"
    WAITING = "waiting"
    IN_PROGRESS = "in-progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(eq=False)
class LocalCandidate:
    """A local candidate, the transport address of its base (§5.1.1) and the shell's ``via``.

    Host and relayed candidates are their own base; a server- or peer-reflexive candidate's
    base is the host (or relayed) candidate it was learnt through, and it shares that ``via``.
    """

    candidate: Candidate
    via: Hashable
    base: Address

    @property
    def component(self) -> int:
        return self.candidate.component

    @property
    def address(self) -> Address:
        return self.candidate.transport_address

    @property
    def is_base(self) -> bool:
        """True if the candidate is its own base (host, relayed)."""
        return self.candidate.transport_address == self.base


@dataclass(eq=False)
class CandidatePair:
    """A local and a remote candidate of one component (RFC 8445 §6.1.2).

    ``local`` is the local candidate as the pair sees it: for pairs in the check list it is
    always a base (host or relayed; §6.1.2.4), for valid pairs it may be the server- or
    peer-reflexive candidate the check discovered (§7.2.5.3.2).  Datagrams on the pair leave
    from ``via`` (the base) towards ``remote_address``.
    """

    local: LocalCandidate
    remote: Candidate
    priority: int
    state: PairState = PairState.FROZEN
    nominated: bool = False
    #: the valid pair the last successful check of this pair produced (may be ``self``)
    valid_pair: CandidatePair | None = None
    #: controlled agent: nominate this pair's valid pair once its check succeeds (§7.3.1.5)
    nominate_on_success: bool = False
    #: controlling agent: the next check carries USE-CANDIDATE (§8.1.1)
    use_candidate: bool = False
    #: True for pairs in the valid list (§7.2.5.3.2)
    valid: bool = False
    rtt: float | None = None
    checks_sent: int = 0
    #: while In-Progress, until when the pair holds its foundation's Frozen pairs back
    #: (§6.1.4.2); the agent sets it to the end of the check's first RTO: a pair whose first
    #: request went unanswered that long is likely hopeless, and the Frozen pairs of other
    #: components must not starve behind it (see :meth:`CheckList.next_check`)
    hold_until: float = math.inf
    in_check_list: bool = True
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def component(self) -> int:
        return self.remote.component

    @property
    def via(self) -> Hashable:
        return self.local.via

    @property
    def remote_address(self) -> Address:
        return self.remote.transport_address

    @property
    def foundation(self) -> tuple[str, str]:
        """The pair foundation: local and remote candidate foundations (§6.1.2.6)."""
        return self.local.candidate.foundation, self.remote.foundation

    @property
    def key(self) -> tuple[Hashable, Address, Address]:
        """What identifies the pair on the wire: via, local base and remote address."""
        return self.local.via, self.local.base, self.remote.transport_address

    def compute_priority(self, controlling: bool) -> int:
        """Recompute :attr:`priority` for the given role of the local agent (§6.1.2.3)."""
        lp, rp = self.local.candidate.priority, self.remote.priority
        self.priority = pair_priority(lp, rp) if controlling else pair_priority(rp, lp)
        return self.priority

    def describe(self) -> str:
        lc, rc = self.local.candidate, self.remote
        return (
            f"{lc.type.value} {lc.address}:{lc.port} -> {rc.type.value} {rc.address}:{rc.port}"
            f" (c{self.component}, {self.state.value})"
        )

    def __repr__(self) -> str:
        return f"<CandidatePair {self.describe()}>"


def _pairable(local: Candidate, remote: Candidate) -> bool:
    """Same component, UDP, same address family, remote spelt as an IP (§6.1.2.2)."""
    if local.component != remote.component:
        return False
    if local.transport != "udp" or remote.transport != "udp":
        return False
    if not _is_ip(remote.address):
        return False  # FQDN / mDNS names are resolved by the shell, not here
    return local.is_ipv6 == remote.is_ipv6


def _is_ip(address: str) -> bool:
    if ":" in address:
        return True
    parts = address.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


class CheckList:
    """The check list of one data stream, holding the pairs of every component (§6.1.2).

    ``controlling`` selects which side's candidate priority is G in the pair priority; call
    :meth:`set_role` when the role changes (§7.2.5.1, §7.3.1.1).
    """

    def __init__(self, controlling: bool, *, max_pairs: int = DEFAULT_MAX_PAIRS) -> None:
        self.controlling = controlling
        self.max_pairs = max_pairs
        self.pairs: list[CandidatePair] = []
        self.valid: list[CandidatePair] = []
        self.triggered: deque[CandidatePair] = deque()
        self._by_key: dict[tuple[Hashable, Address, Address], CandidatePair] = {}
        self._started = False

    # -- forming ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[CandidatePair]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def reindex(self) -> None:
        """Rebuild the lookup table after :attr:`pairs` was edited in place."""
        self._by_key = {p.key: p for p in self.pairs}

    def find(self, via: Hashable, base: Address, remote: Address) -> CandidatePair | None:
        """The check-list pair sent from ``base`` on ``via`` to ``remote``."""
        return self._by_key.get((via, base, remote))

    def add_pairs(
        self, locals_: Iterable[LocalCandidate], remotes: Iterable[Candidate]
    ) -> list[CandidatePair]:
        """Pair every local with every remote candidate and add the new pairs (§6.1.2.2).

        Server-reflexive locals are replaced by their base (§6.1.2.4), so a pair is added only
        if no pair with the same base and remote address exists (pruning keeps the one with
        the higher priority).  New pairs start Frozen, or Waiting when :meth:`start` has run
        and no pair of their foundation is Waiting or In-Progress (so trickled candidates get
        checked, RFC 8838 §11).  Returns the pairs added.
        """
        added: list[CandidatePair] = []
        remotes = list(remotes)
        for local in locals_:
            if not local.is_base:
                continue  # §6.1.2.4: srflx/prflx replaced by the base, which is paired itself
            for remote in remotes:
                if not _pairable(local.candidate, remote):
                    continue
                pair = self._add(local, remote)
                if pair is not None:
                    added.append(pair)
        if added:
            self._sort_and_limit()
            if self._started:
                active = self._active_foundations()
                for pair in added:
                    if pair in self._by_key.values() and pair.foundation not in active:
                        pair.state = PairState.WAITING
                        active.add(pair.foundation)
        return [p for p in added if p in self._by_key.values()]

    def add_pair(self, local: LocalCandidate, remote: Candidate) -> CandidatePair:
        """The pair of ``local`` (a base) and ``remote``, created if needed (for triggered
        checks, §7.3.1.4).  A new pair starts Waiting and may exceed the pair limit."""
        existing = self.find(local.via, local.base, remote.transport_address)
        if existing is not None:
            return existing
        pair = CandidatePair(local, remote, 0, PairState.WAITING)
        pair.compute_priority(self.controlling)
        self.pairs.append(pair)
        self._by_key[pair.key] = pair
        self._sort()
        return pair

    def _add(self, local: LocalCandidate, remote: Candidate) -> CandidatePair | None:
        key = (local.via, local.base, remote.transport_address)
        pair = CandidatePair(local, remote, 0)
        pair.compute_priority(self.controlling)
        existing = self._by_key.get(key)
        if existing is not None:
            # §6.1.2.4 redundant: same base and remote; keep the higher priority one.  A pair
            # that has been checked already is kept whatever its priority.
            if existing.state is not PairState.FROZEN or existing.priority >= pair.priority:
                return None
            self.pairs.remove(existing)
        self.pairs.append(pair)
        self._by_key[key] = pair
        return pair

    def _sort(self) -> None:
        self.pairs.sort(key=lambda p: p.priority, reverse=True)

    def _sort_and_limit(self) -> None:
        self._sort()
        if len(self.pairs) > self.max_pairs:
            # §6.1.2.5: drop the lowest-priority pairs (never one already being checked)
            keep: list[CandidatePair] = []
            for pair in self.pairs:
                if len(keep) < self.max_pairs or pair.state is not PairState.FROZEN:
                    keep.append(pair)
                else:
                    del self._by_key[pair.key]
            self.pairs = keep

    # -- roles --------------------------------------------------------------------------------

    def set_role(self, controlling: bool) -> None:
        """Recompute every pair priority for the new role (§7.2.5.1, §7.3.1.1)."""
        self.controlling = controlling
        for pair in self.pairs:
            pair.compute_priority(controlling)
        for pair in self.valid:
            if not pair.in_check_list:
                pair.compute_priority(controlling)
        self._sort()

    # -- states -------------------------------------------------------------------------------

    def start(self) -> None:
        """Set the initial states (§6.1.2.6): for every foundation, the pair with the lowest
        component ID (then the highest priority) goes Waiting, the others stay Frozen."""
        self._started = True
        best: dict[tuple[str, str], CandidatePair] = {}
        for pair in self.pairs:  # sorted by priority, highest first
            if pair.state is not PairState.FROZEN:
                best.pop(pair.foundation, None)
                continue
            current = best.get(pair.foundation)
            if current is None or pair.component < current.component:
                best[pair.foundation] = pair
        active = self._active_foundations()
        for foundation, pair in best.items():
            if foundation not in active:
                pair.state = PairState.WAITING

    @property
    def started(self) -> bool:
        return self._started

    def _active_foundations(self, now: float | None = None) -> set[tuple[str, str]]:
        """The foundations with a Waiting or In-Progress pair (§6.1.4.2).  Given ``now``, an
        In-Progress pair past its :attr:`~CandidatePair.hold_until` no longer counts."""
        return {
            p.foundation
            for p in self.pairs
            if p.state is PairState.WAITING
            or (p.state is PairState.IN_PROGRESS and (now is None or now < p.hold_until))
        }

    def unfreeze_foundation(self, foundation: tuple[str, str]) -> None:
        """Frozen pairs of ``foundation`` go Waiting (§7.2.5.3.3)."""
        for pair in self.pairs:
            if pair.foundation == foundation and pair.state is PairState.FROZEN:
                pair.state = PairState.WAITING

    def unfreeze_component(self, component: int) -> int:
        """Every Frozen pair of ``component`` goes Waiting; returns how many.

        For when another component has been selected: the peer is reachable, and the
        remaining components must not wait for the foundations still In-Progress in the
        first one (RFC 8445 §6.1.2.6 freezes by foundation so that one check predicts the
        others; RFC 5245 §7.1.3.2.3 unfroze the other components on success likewise).
        """
        count = 0
        for pair in self.pairs:
            if pair.component == component and pair.state is PairState.FROZEN:
                pair.state = PairState.WAITING
                count += 1
        return count

    def release_at(self) -> float | None:
        """The earliest time a Frozen pair's foundation stops being held back by its
        In-Progress pairs (the latest of their :attr:`~CandidatePair.hold_until`), or None."""
        frozen = {p.foundation for p in self.pairs if p.state is PairState.FROZEN}
        if not frozen:
            return None
        holds: dict[tuple[str, str], float] = {}
        for p in self.pairs:
            if p.foundation not in frozen:
                continue
            if p.state is PairState.WAITING:
                holds[p.foundation] = math.inf
            elif p.state is PairState.IN_PROGRESS:
                holds[p.foundation] = max(holds.get(p.foundation, -math.inf), p.hold_until)
        times = [t for t in holds.values() if t != math.inf]
        return min(times) if times else None

    def enqueue_triggered(self, pair: CandidatePair) -> None:
        """Put ``pair`` Waiting at the back of the triggered-check FIFO (§7.3.1.4)."""
        pair.state = PairState.WAITING
        if pair not in self.triggered:
            self.triggered.append(pair)

    def next_check(
        self,
        now: float | None = None,
        *,
        rank: Callable[[CandidatePair], int] | None = None,
    ) -> CandidatePair | None:
        """The pair to check at this Ta tick (§6.1.4.2), or None if there is none.

        The triggered FIFO first; then the highest-priority Waiting pair; then, if none is
        Waiting, the highest-priority Frozen pair whose foundation has no Waiting or
        In-Progress pair is unfrozen and chosen.  Given ``now``, In-Progress pairs past
        their :attr:`~CandidatePair.hold_until` do not count: a Frozen pair of another
        component never waits for a pair that is probably hopeless.

        ``rank`` (default: the pair priority) orders the Waiting and Frozen pairs instead,
        ties in priority order: the agent ranks a pair it finds unlikely to work lower than
        its priority says (``Agent._check_rank``); no pair is ever skipped.
        """
        while self.triggered:
            pair = self.triggered.popleft()
            if pair.state is PairState.WAITING and pair.key in self._by_key:
                return pair
        waiting = [p for p in self.pairs if p.state is PairState.WAITING]
        if waiting:
            return waiting[0] if rank is None else max(waiting, key=rank)
        active = self._active_foundations(now)
        frozen = [
            p for p in self.pairs if p.state is PairState.FROZEN and p.foundation not in active
        ]
        if frozen:
            return frozen[0] if rank is None else max(frozen, key=rank)
        return None

    def next_triggered(self) -> CandidatePair | None:
        """The next pair of the triggered FIFO only (after completion, §8.3)."""
        while self.triggered:
            pair = self.triggered.popleft()
            if pair.state is PairState.WAITING and pair.key in self._by_key:
                return pair
        return None

    def has_triggered(self) -> bool:
        for p in self.triggered:  # plain loops here and below: the timer path runs them often
            if p.state is PairState.WAITING:
                return True
        return False

    def peek_triggered(self) -> CandidatePair | None:
        """The pair :meth:`next_triggered` (and :meth:`next_check`) would take next, left in
        the FIFO."""
        for pair in self.triggered:
            if pair.state is PairState.WAITING and pair.key in self._by_key:
                return pair
        return None

    def replace_remote(self, old: Candidate, new: Candidate) -> None:
        """A signalled candidate replaces a peer-reflexive one learnt earlier (§7.3.1.3)."""
        for pair in self.pairs + self.valid:
            if pair.remote is old:
                pair.remote = new
                pair.compute_priority(self.controlling)
        self._sort()
        self.valid.sort(key=lambda p: p.priority, reverse=True)

    def has_check(self, now: float | None = None) -> bool:
        """Would :meth:`next_check` find something (without consuming the FIFO)?"""
        if self.has_triggered():
            return True
        frozen = False
        for p in self.pairs:
            if p.state is PairState.WAITING:
                return True
            if p.state is PairState.FROZEN:
                frozen = True
        if not frozen:
            return False
        active = self._active_foundations(now)
        return any(p.state is PairState.FROZEN and p.foundation not in active for p in self.pairs)

    def count(self, *states: PairState) -> int:
        n = 0
        for p in self.pairs:
            if p.state in states:
                n += 1
        return n

    def remove_pending(self, component: int, below: int | None = None) -> None:
        """Drop Frozen/Waiting pairs of ``component`` (those with priority below ``below`` if
        given) once the component has a selected pair (§8.1.2, §8.3)."""
        keep = []
        for pair in self.pairs:
            if (
                pair.component == component
                and pair.state in (PairState.FROZEN, PairState.WAITING)
                and (below is None or pair.priority < below)
            ):
                del self._by_key[pair.key]
                continue
            keep.append(pair)
        if len(keep) == len(self.pairs):
            return  # nothing dropped
        self.pairs = keep
        self.triggered = deque(p for p in self.triggered if p.key in self._by_key)

    # -- valid list ---------------------------------------------------------------------------

    def add_valid(self, pair: CandidatePair) -> CandidatePair:
        """Add ``pair`` to the valid list (§7.2.5.3.2) unless an equal pair is there; returns
        the pair kept in the list."""
        for existing in self.valid:
            if (
                existing.local.via == pair.local.via
                and existing.local.address == pair.local.address
                and existing.remote_address == pair.remote_address
            ):
                return existing
        pair.valid = True
        self.valid.append(pair)
        self.valid.sort(key=lambda p: p.priority, reverse=True)
        return pair

    def best_valid(self, component: int) -> CandidatePair | None:
        """The highest-priority valid pair of ``component`` (not failed)."""
        best: CandidatePair | None = None
        for pair in self.valid:
            if pair.component == component and pair.state is not PairState.FAILED:
                if best is None or pair.priority > best.priority:
                    best = pair
        return best


def make_prflx_local(
    base: LocalCandidate, address: Address, priority: int, foundation: str
) -> LocalCandidate:
    """A peer-reflexive local candidate learnt from a check (§7.2.5.3.1)."""
    cand = Candidate(
        foundation=foundation,
        component=base.component,
        transport="udp",
        priority=priority,
        address=address[0],
        port=address[1],
        type=CandidateType.PEER_REFLEXIVE,
        related_address=base.base[0],
        related_port=base.base[1],
    )
    return LocalCandidate(cand, base.via, base.base)


def prflx_priority(local: Candidate) -> int:
    """The PRIORITY a check from ``local`` carries: its priority with the peer-reflexive type
    preference (§7.2.2)."""
    return candidate_priority(CandidateType.PEER_REFLEXIVE, local.component, local.local_preference)
