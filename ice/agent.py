"""Sans-I/O full ICE agent (RFC 8445) for one data stream with one or more components.

The agent never touches a socket or a clock.  The shell (``ice.aio``) gathers candidates, feeds
them in, moves datagrams and calls the timer; the agent runs the check list (``ice.checklist``),
nominates, and keeps consent (``ice.consent``, RFC 7675) on the selected pairs.

API summary (all times are ``now: float`` seconds on any monotonic clock)::

    agent = Agent(controlling=True, components=1, ta=0.05)   # tie_breaker, ufrag/pwd generated
    agent.local_ufrag, agent.local_pwd                        # for a=ice-ufrag / a=ice-pwd
    agent.add_local_candidate(cand, via)                      # via: the shell's socket id
    agent.add_local_candidate(srflx, via, base=(ip, port))    # same via as its host base
    agent.add_local_candidate(relay, turn_alloc_id)           # relayed: via = the allocation
    agent.local_candidates(component=None) -> list[Candidate] # for the SDP (no prflx)
    agent.set_remote_parameters(ufrag, pwd, lite=False)       # new ones later = peer restart
    agent.pacing_ms; set_remote_parameters(..., pacing_ms=n)  # a=ice-pacing both ways: Ta =
                                                              # max of both (absent = 50 ms)
    agent.add_remote_candidate(cand); agent.end_of_candidates()   # trickle-friendly
    agent.limit_components(1)                                 # the answer accepted rtcp-mux
    agent.start(now)
    agent.receive(data, via, remote_addr, now) -> bool        # True: a STUN packet ICE consumed
    agent.datagrams_to_send() -> [(data, via, remote_addr)]   # send from socket/allocation via
    agent.get_timer() -> float | None ; agent.handle_timer(now)
    agent.next_event() -> AgentEvent | None
    agent.selected_pair(component) -> CandidatePair | None    # .via .remote_address .local .remote
    agent.data_pair(component) -> CandidatePair | None        # selected, else a valid one
    agent.send_target(component) -> (via, remote_addr) | None # selected pair, before that the
                                                              # best valid one (§12.1); None if
                                                              # none or consent lost
    agent.is_from_selected(component, remote_addr, via=None) -> bool   # filter for media packets
    agent.component_of(via, remote_addr) -> int | None        # which component a datagram is for
    agent.has_consent(component) -> bool
    agent.restart(now)                                        # new ufrag/pwd; media stays on
                                                              # the old pair until the new one
    agent.close()                                             # stop everything (no more sends)
    agent.stats() -> AgentStats                               # connect time, checks, pair types

``via`` is any hashable the shell chooses to name where a datagram leaves from or arrived on: a
host socket (host and server-reflexive candidates on that socket share it) or a TURN allocation
(relayed candidates; the shell wraps the data in Send/ChannelData towards ``remote_addr`` and
passes what the allocation delivers to :meth:`Agent.receive` with that allocation's ``via`` and
the peer address).  ``receive`` returns False for anything that is not for ICE (not STUN, or a
STUN response the agent did not ask for, e.g. a TURN response): offer it elsewhere.  Remote
addresses may be given as ``recvfrom`` reports them (IPv6 4-tuples); FQDN (mDNS) remote
candidates are not paired - resolve them first.

Events (dataclasses): :class:`PairChecked`, :class:`PairNominated` (a component's selected pair,
also emitted again when it changes), :class:`Completed`, :class:`Failed`, :class:`RoleChanged`,
:class:`ConsentLost` (final: stop sending on that component; an ICE restart may recover).

Failure: ``Failed`` once every pair of a component has failed after the peer's
:meth:`Agent.end_of_candidates`, or ``timeout`` seconds after the checks could start (the
peer's parameters known).  A failed restart keeps the previous pairs (``Failed("restart: ...")``).

Choices where RFC 8445 leaves room (each documented where it is made):

* Pacing: Ta is ours (``ta``/``pacing_ms``) or, once the peer's ``a=ice-pacing`` is known,
  the larger proposal (§14.2); triggered checks wait only for the 5 ms floor.
* Frozen pairs (§6.1.2.6, §6.1.4.2): an In-Progress pair holds its foundation's Frozen pairs
  back only until its first retransmission (:attr:`CandidatePair.hold_until`), and a
  component's selection unfreezes the other components - so RTCP's component never starves
  behind RTP pairs that will never answer.
* Nomination (§8.1.1): regular, by the controlling agent, after waiting only as long as a
  better pair can still answer (:meth:`Agent._nomination_wait`).
* Unlikely pairs (§6.1.2.3, §8.1.1): our relayed candidate towards a private host address of
  a peer that also signalled a server-reflexive address is checked in the order of a relay
  at the recommended preference 0 and not waited for by the nomination, but never pruned
  (:meth:`Agent._unlikely`, :meth:`Agent._check_rank`).
* Data (§12.1): may flow on a valid pair before selection, both ways (:meth:`Agent.send_target`,
  :meth:`Agent.component_of`); after selection, only on the selected pair.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import ipaddress
import logging
import math
import random
import secrets
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

from ice.candidate import Candidate, CandidateType, candidate_priority, compute_foundation
from ice.checklist import (
    DEFAULT_MAX_PAIRS,
    CandidatePair,
    CheckList,
    LocalCandidate,
    PairState,
    make_prflx_local,
    pair_priority,
    prflx_priority,
)
from ice.consent import CONSENT_INTERVAL, CONSENT_TIMEOUT, ConsentFreshness
from ice.credentials import CredentialError, short_term_key
from ice.sdp import generate_pwd, generate_ufrag
from ice.stun import (
    ICE_CONTROLLED,
    ICE_CONTROLLING,
    PRIORITY,
    SOFTWARE,
    UNKNOWN_ATTRIBUTES,
    USE_CANDIDATE,
    USERNAME,
    XOR_MAPPED_ADDRESS,
    Address,
    StunClass,
    StunMessage,
    StunMethod,
    StunParseError,
    is_stun,
    parse_message,
)
from ice.stun_transaction import (
    StunClientTransaction,
    StunTransactionFailed,
    StunTransactionSucceeded,
    StunTransactionTimedOut,
)

__all__ = [
    "DEFAULT_PACING_MS",
    "PACING_NOT_NEGOTIATED",
    "Agent",
    "NotNegotiated",
    "AgentEvent",
    "AgentState",
    "AgentStats",
    "Completed",
    "ConsentLost",
    "Failed",
    "PairChecked",
    "PairNominated",
    "RoleChanged",
    "normalize_address",
]

logger = logging.getLogger("ice.agent")
trace = logging.getLogger("ice.trace")

Via = Hashable
NOMINATION_ATTEMPTS = 3  # USE-CANDIDATE transactions on one valid pair before trying another
NOMINATION_RC = 10  # sends per USE-CANDIDATE transaction, one RTO apart
# RFC 8445 §14.2: whatever Ta is, an implementation never starts transactions more often than
# once every 5 ms.  Triggered checks (answers to the peer's checks, nominations) wait only for
# this floor; ordinary checks are paced by Ta (§6.1.4.2).
MIN_CHECK_INTERVAL = 0.005
# RFC 8839 §5.5 / RFC 8445 §14.2: a side that signals no a=ice-pacing proposes 50 ms
DEFAULT_PACING_MS = 50
MIN_PACING = 0.005  # §14.2: never a Ta below 5 ms


class NotNegotiated(enum.Enum):
    """The type of :data:`PACING_NOT_NEGOTIATED`."""

    UNSET = "unset"


#: :meth:`Agent.set_remote_parameters` ``pacing_ms`` default: no negotiation, Ta is ours
PACING_NOT_NEGOTIATED = NotNegotiated.UNSET
SockAddr = tuple[str, int] | tuple[str, int, int, int]


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairChecked:
    """A connectivity check finished (§7.2.5): ``succeeded`` or the pair failed."""

    component: int
    local: Candidate
    remote: Candidate
    succeeded: bool
    rtt: float | None = None


@dataclass(frozen=True, slots=True)
class PairNominated:
    """``component`` has a (new) selected pair (§8.1.1, §8.2); send on ``via`` to
    ``remote_address``."""

    component: int
    local: Candidate
    remote: Candidate
    via: Via
    remote_address: Address


@dataclass(frozen=True, slots=True)
class Completed:
    """Every component has a selected pair (§8.1.2); ``connect_time`` from :meth:`Agent.start`
    (or from :meth:`Agent.restart`) in seconds."""

    connect_time: float


@dataclass(frozen=True, slots=True)
class Failed:
    """ICE failed (§8.1.2): every pair failed, or the overall timeout passed."""

    reason: str


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """The agent switched role after a role conflict (§7.2.5.1, §7.3.1.1) or because the
    peer is lite (§6.1.1)."""

    controlling: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ConsentLost:
    """No consent response on ``component``'s selected pair for 30 s (RFC 7675 §5.1): the
    shell must stop sending on it."""

    component: int


AgentEvent = PairChecked | PairNominated | Completed | Failed | RoleChanged | ConsentLost


class AgentState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass
class AgentStats:
    """Counters for reports (``--json``)."""

    role: str = "controlling"
    state: str = "new"
    connect_time: float | None = None
    checks_sent: int = 0
    check_retransmissions: int = 0
    checks_received: int = 0
    responses_received: int = 0
    errors_sent: int = 0
    role_conflicts: int = 0
    pairs: int = 0
    pairs_succeeded: int = 0
    pairs_failed: int = 0
    consent_requests_sent: int = 0
    restarts: int = 0
    selected: dict[int, dict[str, object]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Outstanding requests
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Check:
    """One connectivity-check (or consent) transaction in flight."""

    tx: StunClientTransaction
    pair: CandidatePair | None
    via: Via
    dest: Address
    controlling: bool
    priority: int
    use_candidate: bool
    consent_component: int | None = None
    cancelled: bool = False
    generation: int = 0


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A check request encoded ahead of its time (see :meth:`Agent._prepare_triggered`),
    good only for the same pair, role, nomination flag and credentials."""

    pair: CandidatePair
    use_candidate: bool
    controlling: bool
    tie_breaker: int
    remote: _Credentials
    local: _Credentials
    message: StunMessage
    data: bytes
    priority: int


@dataclass(frozen=True, slots=True)
class _Credentials:
    ufrag: str
    pwd: str
    key: bytes


def _credentials(ufrag: str, pwd: str) -> _Credentials:
    try:
        key = short_term_key(pwd)
    except CredentialError:
        key = pwd.encode("utf-8", "replace")
    return _Credentials(ufrag, pwd, key)


# --------------------------------------------------------------------------------------------
# The agent
# --------------------------------------------------------------------------------------------


class Agent:
    """A full ICE agent (RFC 8445) for one data stream; see the module docstring.

    Tunables: ``ta`` (pacing of ordinary checks, §6.1.4.2, §14.2; the first goes at once;
    ``pacing_ms`` is the same in whole milliseconds and wins if both are given).  ``ta`` is
    also our Ta proposal for the SDP (:attr:`pacing_ms`, RFC 8839 ``a=ice-pacing``): once the
    peer's proposal is given to :meth:`set_remote_parameters` (its ``pacing_ms``, None when
    its SDP had none, counting as 50 ms), both sides use the larger of the two proposals
    (RFC 8445 §14.2), never below 5 ms; without it Ta is ``ta`` as given.  Other tunables:
    ``min_check_interval`` (the floor between any two checks, 5 ms per §14.2: triggered
    checks - answers to the peer's checks, nominations - wait only for it, not for Ta; 0 is
    for measurements only), ``min_rto`` with ``check_rc``/``check_rm`` and
    ``check_max_rto`` (check retransmissions: the RTO of §14.3 doubles up to that cap, so a
    dead pair fails after about 10 s by default), ``nomination_delay`` (how long the
    controlling agent waits at most for a higher-priority pair after the first valid one;
    none when no better pair can still succeed, see :meth:`_nomination_wait`), ``timeout``
    (overall failure bound), ``max_pairs`` (§6.1.2.5), ``consent_interval`` /
    ``consent_timeout`` (RFC 7675).
    """

    def __init__(
        self,
        controlling: bool,
        components: int = 1,
        *,
        ta: float = 0.05,
        pacing_ms: int | None = None,
        tie_breaker: int | None = None,
        ufrag: str | None = None,
        pwd: str | None = None,
        nomination_delay: float = 0.1,
        min_check_interval: float = MIN_CHECK_INTERVAL,
        timeout: float = 30.0,
        min_rto: float = 0.5,
        check_rc: int = 6,
        check_rm: int = 8,
        check_max_rto: float = 1.6,
        max_pairs: int = DEFAULT_MAX_PAIRS,
        consent_interval: float = CONSENT_INTERVAL,
        consent_timeout: float = CONSENT_TIMEOUT,
        rng: random.Random | None = None,
        software: str | None = None,
    ) -> None:
        if components < 1 or components > 256:
            raise ValueError("components must be 1..256")
        if pacing_ms is not None:
            if pacing_ms < 1:
                raise ValueError("pacing_ms must be positive")
            ta = pacing_ms / 1000
        if ta <= 0:
            raise ValueError("Ta must be positive")
        if min_check_interval < 0:
            raise ValueError("min_check_interval must not be negative")
        self.controlling = controlling
        self.components = components
        self._created_components = components
        self.local_ta = ta
        self.remote_ta: float | None = None
        self.ta = ta
        self.tie_breaker = (
            tie_breaker if tie_breaker is not None else secrets.randbits(64)
        ) & 0xFFFFFFFFFFFFFFFF
        self.nomination_delay = nomination_delay
        self._min_check_interval = min_check_interval
        self.min_check_interval = min(min_check_interval, ta)
        self.timeout = timeout
        self.min_rto = min_rto
        self.check_rc = check_rc
        self.check_rm = check_rm
        self.check_max_rto = check_max_rto
        self.max_pairs = max_pairs
        self.consent_interval = consent_interval
        self.consent_timeout = consent_timeout
        self.software = software
        self._rng = rng if rng is not None else random.Random()
        self._local = _credentials(ufrag or generate_ufrag(), pwd or generate_pwd())
        self._previous_local: _Credentials | None = None
        self._previous_remote: _Credentials | None = None
        self._remote: _Credentials | None = None
        self.remote_lite = False
        self._remote_eoc = False
        self._locals: list[LocalCandidate] = []
        self._remotes: list[Candidate] = []
        self._checklist = CheckList(controlling, max_pairs=max_pairs)
        self._checks: dict[bytes, _Check] = {}
        self._outbox: list[tuple[bytes, Via, Address]] = []
        self._prepared: _Prepared | None = None
        self._events: deque[AgentEvent] = deque()
        self.state = AgentState.NEW
        self._started_at: float | None = None
        self._generation_started: float | None = None
        self._last_check_at: float | None = None  # any check (ordinary or triggered)
        self._last_ordinary_at: float | None = None
        self._first_valid_at: dict[int, float] = {}
        self._nominating: dict[int, CandidatePair] = {}
        self._selected: dict[int, CandidatePair] = {}
        self._consent: dict[int, ConsentFreshness] = {}
        self._consent_lost: set[int] = set()
        self._prflx_counter = 0
        # evidence that a pair may work though its first check went unanswered (see
        # _promising): addresses the peer's checks came from, and our sockets whose checks
        # came back with a mapping we signalled (no NAT, or one mapping for every peer)
        self._check_sources: set[Address] = set()
        self._stable_vias: set[Via] = set()
        # §7.3.1.4 re-checks of In-Progress pairs, held back until this time (see _recheck):
        # pair -> (when, the sent_at of the check it would replace)
        self._rechecks: dict[CandidatePair, tuple[float, object]] = {}
        self._generation = 0
        self._restarting = False
        self._completed_generation = -1
        self._stats = AgentStats()
        self._now = 0.0

    # -- configuration ------------------------------------------------------------------------

    @property
    def local_ufrag(self) -> str:
        return self._local.ufrag

    @property
    def local_pwd(self) -> str:
        return self._local.pwd

    @property
    def pacing_ms(self) -> int:
        """Our Ta proposal in whole milliseconds, for ``a=ice-pacing`` (RFC 8839 §5.5)."""
        return max(1, round(self.local_ta * 1000))

    def _negotiate_ta(self, remote_pacing_ms: int | None) -> None:
        """Ta = the larger of the two proposals, a missing one counting as 50 ms, never
        below 5 ms (RFC 8445 §14.2, RFC 8839 §5.5)."""
        remote = (DEFAULT_PACING_MS if remote_pacing_ms is None else remote_pacing_ms) / 1000
        self.remote_ta = remote
        self.ta = max(self.local_ta, remote, MIN_PACING)
        self.min_check_interval = min(self._min_check_interval, self.ta)
        logger.debug("Ta %.1f ms (ours %.1f ms, theirs %.1f ms)", self.ta * 1000,
                     self.local_ta * 1000, remote * 1000)  # fmt: skip

    @property
    def remote_ufrag(self) -> str | None:
        return None if self._remote is None else self._remote.ufrag

    @property
    def checklist(self) -> CheckList:
        """The check list (read it; do not modify)."""
        return self._checklist

    def local_candidates(self, component: int | None = None) -> list[Candidate]:
        """The local candidates to signal (peer-reflexive ones are never signalled)."""
        return [
            lc.candidate
            for lc in self._locals
            if lc.candidate.type is not CandidateType.PEER_REFLEXIVE
            and (component is None or lc.component == component)
        ]

    def remote_candidates(self) -> list[Candidate]:
        return list(self._remotes)

    def add_local_candidate(
        self, candidate: Candidate, via: Via, *, base: Address | None = None
    ) -> None:
        """Add a gathered local candidate sent from ``via`` (§5.1.1).

        Host and relayed candidates are their own base.  A server-reflexive candidate's base
        defaults to ``related_address:related_port``, else to the host candidate on ``via``.
        """
        if not 1 <= candidate.component <= self.components:
            if 1 <= candidate.component <= self._created_components:
                return  # a component dropped by limit_components(): gathered too late
            raise ValueError(f"component {candidate.component} out of range")
        candidate = _normalized(candidate)
        if base is not None:
            base = normalize_address(base)
        if base is None:
            if candidate.type in (CandidateType.HOST, CandidateType.RELAYED):
                base = candidate.transport_address
            elif candidate.related_address is not None and candidate.related_port is not None:
                base = (candidate.related_address, candidate.related_port)
            else:
                host = next((lc for lc in self._locals if lc.via == via and lc.is_base), None)
                if host is None:
                    raise ValueError("a reflexive candidate needs its base")
                base = host.base
        for lc in self._locals:
            if lc.via == via and lc.address == candidate.transport_address:
                return  # duplicate
        local = LocalCandidate(candidate, via, base)
        self._locals.append(local)
        if not local.is_base and not any(
            lc.via == via and lc.is_base and lc.base == base for lc in self._locals
        ):
            # §6.1.2.4: the pair uses the base; make one up if the shell did not signal it
            made = Candidate.make(
                CandidateType.HOST, base[0], base[1], component=candidate.component
            )
            self._locals.append(LocalCandidate(made, via, base))
        self._form_pairs()

    def set_remote_parameters(
        self,
        ufrag: str,
        pwd: str,
        lite: bool = False,
        *,
        now: float | None = None,
        pacing_ms: int | None | NotNegotiated = PACING_NOT_NEGOTIATED,
    ) -> None:
        """The peer's ``a=ice-ufrag``/``a=ice-pwd`` and whether it is ``a=ice-lite``.

        ``pacing_ms``: the peer's ``a=ice-pacing`` (None: its SDP had none, which counts as
        50 ms); Ta becomes the larger of both proposals (RFC 8445 §14.2).  Left out, Ta
        stays ours (no negotiation; e.g. two agents wired together by a test).

        A full agent facing a lite peer takes the controlling role (§6.1.1).  New credentials
        after the agent has started, without a :meth:`restart` in between, are the peer's ICE
        restart (§9): the agent restarts too (read :attr:`local_ufrag`/:attr:`local_pwd`
        again for the answer) and the peer's candidates must be added again.
        """
        if not ufrag or not pwd or len(f"{ufrag}:{self._local.ufrag}".encode()) > 509:
            # USERNAME holds at most 513 bytes (RFC 8489 §14.3); our ufrag is 8 characters
            raise ValueError("the remote ufrag or pwd is empty or too long")
        if (
            self._remote is not None
            and self.state is not AgentState.NEW
            and (ufrag, pwd) != (self._remote.ufrag, self._remote.pwd)
        ):
            logger.info("the peer restarted ICE")
            self.restart(self._now if now is None else now)
        if self._remote is None and self.state is AgentState.RUNNING:
            # started (or restarted) before the peer's parameters were known: the checks, the
            # overall timeout and the connect time start now
            self._generation_started = self._now if now is None else now
        self._remote = _credentials(ufrag, pwd)
        self.remote_lite = lite
        if not isinstance(pacing_ms, NotNegotiated):
            self._negotiate_ta(pacing_ms)
        if lite and not self.controlling:
            self._set_role(True, "the peer is ice-lite")

    def add_remote_candidate(self, candidate: Candidate) -> None:
        """Add a remote candidate (from the SDP or trickled, RFC 8838)."""
        if not 1 <= candidate.component <= self.components:
            return
        candidate = _normalized(candidate)
        for i, rc in enumerate(self._remotes):
            if rc.transport_address == candidate.transport_address and (
                rc.component == candidate.component and rc.transport == candidate.transport
            ):
                if rc.type is CandidateType.PEER_REFLEXIVE:
                    # §7.3.1.3: the signalled candidate replaces the peer-reflexive one
                    self._remotes[i] = candidate
                    self._checklist.replace_remote(rc, candidate)
                return
        self._remotes.append(candidate)
        self._form_pairs()

    def end_of_candidates(self) -> None:
        """The peer has signalled all its candidates (RFC 8838 §13): ICE may now fail."""
        self._remote_eoc = True

    def limit_components(self, count: int) -> None:
        """Keep only components ``1..count`` - e.g. the answer accepted ``a=rtcp-mux``
        (RFC 5761) after we offered RTCP candidates: component 2's candidates, pairs, checks
        and consent are dropped.  The shell may close the sockets only it used."""
        if not 1 <= count <= self.components:
            raise ValueError(f"count must be 1..{self.components}")
        if count == self.components:
            return
        self.components = count
        self._locals = [lc for lc in self._locals if lc.component <= count]
        self._remotes = [rc for rc in self._remotes if rc.component <= count]
        cl = self._checklist
        cl.pairs = [p for p in cl.pairs if p.component <= count]
        cl.valid = [p for p in cl.valid if p.component <= count]
        cl.triggered = deque(p for p in cl.triggered if p.component <= count)
        cl.reindex()
        for tid, check in list(self._checks.items()):
            component = (
                check.consent_component
                if check.consent_component is not None
                else (check.pair.component if check.pair is not None else 1)
            )
            if component > count:
                del self._checks[tid]
        for table in (self._first_valid_at, self._nominating, self._selected, self._consent):
            for component in [c for c in table if c > count]:
                del table[component]
        self._consent_lost = {c for c in self._consent_lost if c <= count}
        if self.state is AgentState.RUNNING:
            self._check_completed(self._now)

    def _form_pairs(self) -> None:
        added = self._checklist.add_pairs(self._locals, self._remotes)
        if added and self.state is AgentState.COMPLETED:
            # pairs for components already selected are of no use
            for pair in added:
                if pair.component in self._selected and pair.state is PairState.WAITING:
                    pair.state = PairState.FROZEN
            for component in self._selected:
                self._checklist.remove_pending(component)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Start the checks (§6.1.2.6 initial states)."""
        if self.state is not AgentState.NEW:
            return
        self._now = now
        self.state = AgentState.RUNNING
        self._started_at = now
        self._generation_started = now
        self._checklist.start()
        logger.debug(
            "ICE start: %s, %d pairs",
            "controlling" if self.controlling else "controlled",
            len(self._checklist),
        )

    def restart(self, now: float, *, controlling: bool | None = None) -> None:
        """ICE restart (§9): new local ufrag/pwd, a new check list; the selected pairs keep
        carrying media (and consent) until the new checks nominate new ones.

        Call :meth:`set_remote_parameters` and add the peer's candidates again afterwards.
        """
        self._now = now
        self._stats.restarts += 1
        self._generation += 1
        self._previous_local = self._local
        if self._remote is not None:
            self._previous_remote = self._remote
        self._local = _credentials(generate_ufrag(), generate_pwd())
        self._remote = None
        self._remote_eoc = False
        self._remotes = []
        self._locals = [
            lc for lc in self._locals if lc.candidate.type is not CandidateType.PEER_REFLEXIVE
        ]
        for check in self._checks.values():
            if check.consent_component is None:
                check.cancelled = True
        if controlling is not None:
            self.controlling = controlling
        self._checklist = CheckList(self.controlling, max_pairs=self.max_pairs)
        self._checklist.add_pairs(self._locals, self._remotes)
        self._first_valid_at.clear()
        self._rechecks.clear()
        self._nominating.clear()
        self._check_sources.clear()  # the peer may have moved (our own mappings stay)
        self._restarting = bool(self._selected)
        self.state = AgentState.RUNNING
        self._generation_started = now
        self._last_check_at = None
        self._last_ordinary_at = None
        for consent in self._consent.values():
            consent.refresh(now)
        self._checklist.start()

    def close(self) -> None:
        """Stop: no more checks, consent or responses."""
        self.state = AgentState.CLOSED
        self._checks.clear()
        self._outbox.clear()
        self._consent.clear()

    # -- output -------------------------------------------------------------------------------

    def datagrams_to_send(self, now: float | None = None) -> list[tuple[bytes, Via, Address]]:
        """What to send: ``(data, via, remote_addr)``.  ``now``: when they leave (the shell
        sends them at once) - the floor between checks (§14.2) then counts from the moment
        the last one left rather than from when :meth:`handle_timer` decided on it.  A
        triggered check encoded while it waited for that floor (:meth:`_prepare_triggered`)
        leaves with the first call whose ``now`` is past the floor - what
        :meth:`handle_timer` would send first at that moment, without running the rest of
        it before the datagram is out."""
        if now is not None and self._prepared is not None:
            self._send_prepared(now)
        out = self._outbox
        self._outbox = []
        for check in self._checks.values():
            data = check.tx.datagrams_to_send()
            if data and not check.cancelled:
                if check.consent_component is None:
                    if check.tx.attempts > 1:
                        self._stats.check_retransmissions += len(data)
                    elif now is not None and (
                        self._last_check_at is None or now > self._last_check_at
                    ):
                        # a new check leaves now: the 5 ms floor (§14.2) counts from here,
                        # not from when it was decided and encoded a moment before
                        self._last_check_at = now
                for d in data:
                    out.append((d, check.via, check.dest))
        return out

    def next_event(self) -> AgentEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (None: nothing scheduled)."""
        state = self.state
        if state is AgentState.NEW or state is AgentState.CLOSED:
            return None
        # the earliest of everything below (no list: this runs after every event)
        best: float | None = None
        for check in self._checks.values():
            t = check.tx.get_timer()
            if t is not None and (best is None or t < best):
                best = t
        for pair, (at, sent) in self._rechecks.items():
            if pair.state is PairState.IN_PROGRESS and pair.extra.get("sent_at") == sent:
                if best is None or at < best:
                    best = at
        running = state is AgentState.RUNNING
        if self._remote is not None and (running or state is AgentState.COMPLETED):
            t = None
            if self._checklist.has_triggered():
                t = self._triggered_at()
            elif running:
                if self._checklist.has_check(self._now):
                    t = self._ordinary_at()
                elif (release := self._checklist.release_at()) is not None:
                    # a Frozen pair is held back by a pair whose first request is unanswered
                    t = max(release, self._ordinary_at())
            if t is not None and (best is None or t < best):
                best = t
        if running:
            if self.controlling:
                for component, first in self._first_valid_at.items():
                    if (
                        component not in self._nominating
                        and self._selected_generation(component) != self._generation
                    ):
                        valid = self._checklist.best_valid(component)
                        if valid is not None:
                            wait = self._nomination_wait(component, valid, first)
                            t = self._now if wait is None else wait
                            if best is None or t < best:
                                best = t
            if self._generation_started is not None and self.timeout > 0 and self._remote:
                t = self._generation_started + self.timeout
                if best is None or t < best:
                    best = t
        for consent in self._consent.values():
            t = consent.get_timer()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def _triggered_at(self) -> float:
        """When a triggered check may go: at once, but never closer than
        ``min_check_interval`` to the previous check (§14.2)."""
        if self._last_check_at is None:
            return self._now
        return self._last_check_at + self.min_check_interval

    def _ordinary_at(self) -> float:
        """When the next ordinary check may go: the first one at once when the checks can
        start, the following ones Ta apart (§6.1.4.2)."""
        if self._last_ordinary_at is None:
            return self._triggered_at()
        return max(self._last_ordinary_at + self.ta, self._triggered_at())

    def _send_due(self, now: float) -> None:
        """Send the checks that are due: the triggered FIFO without waiting for Ta (only for
        ``min_check_interval``), then one ordinary check if Ta has passed (§6.1.4.2).  After
        completion only triggered checks (§8.3: a late nomination may need one)."""
        if self._remote is None or self.state not in (AgentState.RUNNING, AgentState.COMPLETED):
            return
        while True:
            if self._checklist.has_triggered():
                if now < self._triggered_at():
                    self._prepare_triggered()
                    return
                pair = self._checklist.next_triggered()
                if pair is None:
                    return
                self._send_check(pair, now)
                if self.min_check_interval > 0:
                    return
                continue
            if self.state is AgentState.RUNNING and now >= self._ordinary_at():
                pair = self._checklist.next_check(now, rank=self._check_rank)
                if pair is not None:
                    self._send_check(pair, now)
                    self._last_ordinary_at = now
            return

    def _prepare_triggered(self) -> None:
        """Encode the next triggered check while it waits for the 5 ms floor (§14.2) - e.g.
        the nomination, a round trip after the first check - so that when the floor has
        passed, :meth:`_send_check` only hands it out: what it sends is the same, only built
        earlier (with its own fresh transaction id)."""
        pair = self._checklist.peek_triggered()
        if pair is None or self._remote is None:
            return
        use_candidate = self.controlling and pair.use_candidate
        if self._prepared_for(pair, use_candidate) is not None:
            return
        msg, priority = self._request(pair.local.candidate, use_candidate)
        data = msg.encode(self._remote.key, fingerprint=True)
        self._prepared = _Prepared(
            pair,
            use_candidate,
            self.controlling,
            self.tie_breaker,
            self._remote,
            self._local,
            msg,
            data,
            priority,
        )

    def _send_prepared(self, now: float) -> None:
        """Start the prepared check's transaction if its pair is still the next triggered
        check and the floor has passed (see :meth:`datagrams_to_send`)."""
        prepared = self._prepared
        if (
            prepared is None
            or self._remote is None
            or self.state not in (AgentState.RUNNING, AgentState.COMPLETED)
            or now < self._triggered_at()
        ):
            return
        pair = prepared.pair
        if self._checklist.peek_triggered() is not pair:
            return
        if self._prepared_for(pair, self.controlling and pair.use_candidate) is None:
            return
        self._checklist.next_triggered()
        self._now = max(self._now, now)
        self._send_check(pair, now)

    def _prepared_for(self, pair: CandidatePair, use_candidate: bool) -> _Prepared | None:
        """The request prepared for ``pair``, if it is still what a check now would send."""
        p = self._prepared
        if (
            p is None
            or p.pair is not pair
            or p.use_candidate != use_candidate
            or p.controlling != self.controlling
            or p.tie_breaker != self.tie_breaker
            or p.remote is not self._remote
            or p.local is not self._local
        ):
            return None
        return p

    def handle_timer(self, now: float) -> None:
        """Run whatever is due at ``now``: a paced check, retransmissions, nomination,
        consent, failure."""
        self._now = now
        if self.state in (AgentState.NEW, AgentState.CLOSED):
            return
        for tid, check in list(self._checks.items()):
            t = check.tx.get_timer()
            if t is not None and now >= t:
                check.tx.handle_timer(now)
                result = check.tx.next_event()
                if result is not None:
                    del self._checks[tid]
                    self._on_result(check, result, None, None, now)
        self._run_rechecks(now)
        if self.state is AgentState.RUNNING:
            self._nominate_due(now)
        self._send_due(now)
        self._check_failure(now)
        self._run_consent(now)

    # -- sending checks (§7.2.4) --------------------------------------------------------------

    def _request(
        self,
        local: Candidate,
        use_candidate: bool,
        *,
        remote: _Credentials | None = None,
        ours: _Credentials | None = None,
    ) -> tuple[StunMessage, int]:
        remote = remote or self._remote
        assert remote is not None
        msg = StunMessage(StunMethod.BINDING, StunClass.REQUEST)
        msg.add(USERNAME, f"{remote.ufrag}:{(ours or self._local).ufrag}")
        priority = prflx_priority(local)
        msg.add(PRIORITY, priority)
        if self.controlling:
            msg.add(ICE_CONTROLLING, self.tie_breaker)
            if use_candidate:
                msg.add(USE_CANDIDATE, True)
        else:
            msg.add(ICE_CONTROLLED, self.tie_breaker)
        return msg, priority

    def _send_check(self, pair: CandidatePair, now: float) -> None:
        assert self._remote is not None
        use_candidate = self.controlling and pair.use_candidate
        prepared = self._prepared_for(pair, use_candidate)
        self._prepared = None
        if prepared is not None:
            msg, data, priority = prepared.message, prepared.data, prepared.priority
        else:
            msg, priority = self._request(pair.local.candidate, use_candidate)
            data = msg.encode(self._remote.key, fingerprint=True)
        active = self._checklist.count(PairState.WAITING, PairState.IN_PROGRESS)
        rto = max(self.min_rto, self.ta * max(1, active))  # §14.3
        rc, rm, max_rto = self.check_rc, self.check_rm, max(rto, self.check_max_rto)
        if (use_candidate and pair.valid_pair is not None) or (
            pair.nominate_on_success and not self.controlling
        ):
            # the pair is known to work (our check succeeded, or the peer's nominated it):
            # lost datagrams are the likely trouble, so repeat at a steady RTO (no backoff)
            # for about as long as an ordinary check lasts
            rc, rm, max_rto = NOMINATION_RC, 2, rto
        tx = StunClientTransaction(
            data,
            now,
            message=msg,
            rto=rto,
            rc=rc,
            rm=rm,
            max_rto=max_rto,
            integrity_key=self._remote.key,
            unauthenticated_errors=(),
        )
        self._checks[tx.transaction_id] = _Check(
            tx,
            pair,
            pair.via,
            pair.remote_address,
            self.controlling,
            priority,
            use_candidate,
            generation=self._generation,
        )
        pair.state = PairState.IN_PROGRESS
        # the Frozen pairs of its foundation wait for the answer to this request, but not
        # past its first retransmission (the pair is then likely hopeless, §6.1.4.2)
        pair.hold_until = now + rto
        pair.extra["sent_at"] = float(now)
        pair.checks_sent += 1
        self._last_check_at = now
        self._stats.checks_sent += 1
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug("check %s%s", pair.describe(), " USE-CANDIDATE" if use_candidate else "")

    # -- receiving ----------------------------------------------------------------------------

    def receive(self, data: bytes, via: Via, remote_addr: SockAddr, now: float) -> bool:
        """Feed a datagram that arrived on ``via`` from ``remote_addr`` (as ``recvfrom``
        reports it; IPv6 4-tuples are fine).

        Returns True if it was a STUN message for ICE (consumed), False otherwise.  Never
        raises on malformed input.
        """
        self._now = now
        if self.state is AgentState.CLOSED or not is_stun(data):
            return False
        addr = normalize_address(remote_addr)
        try:
            msg = parse_message(data)
        except StunParseError:
            return False
        if msg.method != StunMethod.BINDING:
            return False
        try:
            if msg.cls == StunClass.REQUEST:
                self._on_request(msg, via, addr, now)
                self._send_due(now)  # the triggered check goes out with the response
                return True
            if msg.cls == StunClass.INDICATION:
                return True  # keepalive (RFC 8445 §11)
            check = self._checks.get(msg.transaction_id)
            if check is None:
                return False
            if not check.tx.receive(msg, now):
                return False
            result = check.tx.next_event()
            if result is not None:
                del self._checks[msg.transaction_id]
                self._on_result(check, result, via, addr, now)
                self._send_due(now)  # e.g. the nomination check, at once
            return True
        except StunParseError as exc:
            logger.debug("malformed STUN from %s: %s", remote_addr, exc)
            return True

    def _respond(self, msg: StunMessage, via: Via, addr: Address) -> None:
        data = msg.encode(self._local.key, fingerprint=True)
        self._outbox.append((data, via, addr))

    def _respond_error(
        self,
        request: StunMessage,
        code: int,
        via: Via,
        addr: Address,
        key: bytes | None,
        unknown: list[int] | None = None,
    ) -> None:
        response = request.error_response(code)
        if unknown:
            response.add(UNKNOWN_ATTRIBUTES, tuple(unknown))
        self._outbox.append((response.encode(key, fingerprint=True), via, addr))
        self._stats.errors_sent += 1

    def _on_request(self, msg: StunMessage, via: Via, addr: Address, now: float) -> None:
        """A Binding request: authenticate, resolve role conflicts, answer, learn, trigger
        (§7.3, RFC 8489 §9.1.3)."""
        self._stats.checks_received += 1
        username = msg.get(USERNAME)
        if username is None or not msg.has_integrity:
            self._respond_error(msg, 400, via, addr, None)
            return
        lfrag = username.split(":", 1)[0]
        creds: _Credentials | None = None
        old_generation = False
        if lfrag == self._local.ufrag:
            creds = self._local
        elif self._previous_local is not None and lfrag == self._previous_local.ufrag:
            creds = self._previous_local
            old_generation = True
        if creds is None or not msg.check_integrity(creds.key):
            self._respond_error(msg, 401, via, addr, None)
            return
        unknown = msg.unknown_comprehension_required()
        if unknown:
            self._respond_error(msg, 420, via, addr, creds.key, unknown)
            return
        priority = msg.get(PRIORITY)
        if priority is None:
            self._respond_error(msg, 400, via, addr, creds.key)
            return
        # §7.3.1.1 role conflicts
        their_controlling = msg.get(ICE_CONTROLLING)
        their_controlled = msg.get(ICE_CONTROLLED)
        if self.controlling and their_controlling is not None:
            self._stats.role_conflicts += 1
            if self.tie_breaker >= their_controlling:
                self._respond_error(msg, 487, via, addr, creds.key)
                return
            self._set_role(False, "role conflict (incoming check, their tie-breaker wins)")
        elif not self.controlling and their_controlled is not None:
            self._stats.role_conflicts += 1
            if self.tie_breaker >= their_controlled:
                self._set_role(True, "role conflict (incoming check, our tie-breaker wins)")
            else:
                self._respond_error(msg, 487, via, addr, creds.key)
                return
        self._check_sources.add(addr)
        response = msg.response()
        response.add(XOR_MAPPED_ADDRESS, addr)
        if self.software:
            response.add(SOFTWARE, self.software)
        self._outbox.append((response.encode(creds.key, fingerprint=True), via, addr))
        trace.debug("answered check from %s via %r", addr, via)
        if old_generation or self.state is AgentState.FAILED:
            return
        self._learn_from_request(msg, via, addr, priority, now)

    def _learn_from_request(
        self, msg: StunMessage, via: Via, addr: Address, priority: int, now: float
    ) -> None:
        base = None
        for lc in self._locals:  # plain loops: this runs for every check received
            if lc.via == via and lc.is_base:
                base = lc
                break
        if base is None:
            return
        component = base.component
        # §7.3.1.3 peer-reflexive remote candidates
        remote = None
        for rc in self._remotes:
            if rc.port == addr[1] and rc.address == addr[0] and rc.component == component:
                remote = rc
                break
        if remote is None:
            self._prflx_counter += 1
            remote = Candidate(
                foundation=f"prflx{self._prflx_counter}",
                component=component,
                transport="udp",
                priority=priority,
                address=addr[0],
                port=addr[1],
                type=CandidateType.PEER_REFLEXIVE,
            )
            self._remotes.append(remote)
            logger.debug("peer-reflexive remote candidate %s:%d", addr[0], addr[1])
        use_candidate = USE_CANDIDATE.type in msg and not self.controlling
        selected = self._selected.get(component)
        pair = self._checklist.find(via, base.base, addr)
        if pair is None:
            # after selection, checks on new pairs are only of use when they nominate
            if selected is not None and not use_candidate and not self._restarting:
                return
            pair = self._checklist.add_pair(base, remote)
            self._checklist.enqueue_triggered(pair)
        elif pair.state is PairState.SUCCEEDED or pair.valid_pair is not None:
            pass  # §7.3.1.4: succeeded (In-Progress again only for its nomination check)
        elif pair.state is PairState.IN_PROGRESS:
            # §7.3.1.4: cancel the transaction in progress and check again.  Both sides
            # check a pair at about the same time: the peer's check took ``now - sent`` to
            # reach us, and the answer to ours should take about as long again.  The
            # re-check waits that long (never beyond Ta after our check, as an ordinary
            # check would) so that it does not take the nomination's place under the 5 ms
            # floor; if the answer comes first it is not needed at all, and if our check
            # was lost (e.g. to the peer's NAT, not open yet) it goes soon
            sent = pair.extra.get("sent_at")
            at = min(2 * now - sent, sent + self.ta) if isinstance(sent, float) else now
            if now >= at:
                self._recheck(pair)
            else:
                self._rechecks.setdefault(pair, (at, sent))
        elif pair.state is PairState.FROZEN or pair.state is PairState.WAITING:
            self._checklist.enqueue_triggered(pair)
        elif pair.state is PairState.FAILED:
            self._checklist.enqueue_triggered(pair)
        if use_candidate:
            # §7.3.1.5 (also aggressive nomination: USE-CANDIDATE on the first check)
            if pair.state is PairState.SUCCEEDED and pair.valid_pair is not None:
                self._nominate_valid(pair.valid_pair, now)
            else:
                pair.nominate_on_success = True

    # -- check results (§7.2.5) ---------------------------------------------------------------

    def _on_result(
        self,
        check: _Check,
        result: StunTransactionSucceeded | StunTransactionFailed | StunTransactionTimedOut,
        via: Via | None,
        source: Address | None,
        now: float,
    ) -> None:
        if check.consent_component is not None:
            self._on_consent_result(check, result, via, source, now)
            return
        pair = check.pair
        if pair is None or check.generation != self._generation:
            return
        if self.state not in (AgentState.RUNNING, AgentState.COMPLETED):
            return
        if isinstance(result, StunTransactionTimedOut):
            if check.cancelled:
                # a cancelled transaction (§7.3.1.4, §8.3) fails its pair only if nothing
                # else is checking it: a pair must not stay In-Progress forever (it would
                # keep its foundation's Frozen pairs frozen, §6.1.4.2)
                if pair.state is PairState.IN_PROGRESS and not any(
                    c.pair is pair and not c.cancelled for c in self._checks.values()
                ):
                    self._fail_pair(pair, "cancelled check timed out", now)
                return
            if check.use_candidate and pair.valid_pair is not None and self.controlling:
                # the pair worked a moment ago and the peer may well have seen the
                # nomination (only the answers got lost): nominate it again rather than
                # another pair, which the peer might not prefer (§8.1.1)
                tries = pair.extra.get("nominations", 0)
                assert isinstance(tries, int)
                if tries + 1 < NOMINATION_ATTEMPTS:
                    pair.extra["nominations"] = tries + 1
                    self._checklist.enqueue_triggered(pair)
                    return
            self._fail_pair(pair, "timeout", now)
            return
        self._stats.responses_received += 1
        if isinstance(result, StunTransactionFailed):
            error = result.error
            if error is not None and error.code == 487:
                # §7.2.5.1: switch role if it is still the one the request claimed, and retry
                if check.controlling == self.controlling:
                    self._stats.role_conflicts += 1
                    self._set_role(not self.controlling, "487 Role Conflict")
                self._checklist.enqueue_triggered(pair)
                return
            self._fail_pair(pair, result.reason, now)
            return
        # success: §7.2.5.2.1 the addresses must be symmetric
        if source != check.dest or via != check.via:
            self._fail_pair(pair, "non-symmetric response", now)
            return
        try:
            mapped = result.response.get(XOR_MAPPED_ADDRESS)
        except StunParseError:
            mapped = None
        if mapped is None:
            self._fail_pair(pair, "no XOR-MAPPED-ADDRESS", now)
            return
        self._on_success(pair, check, mapped, result.rtt, now)

    def _recheck(self, pair: CandidatePair) -> None:
        """§7.3.1.4 for an In-Progress pair: its transaction is cancelled (no more
        retransmissions, an answer still counts) and a triggered check queued."""
        self._rechecks.pop(pair, None)
        if pair.state is not PairState.IN_PROGRESS:
            return  # answered (or failed) meanwhile
        for check in self._checks.values():
            if check.pair is pair and not check.cancelled:
                check.cancelled = True
                check.tx.datagrams_to_send()
        self._checklist.enqueue_triggered(pair)

    def _run_rechecks(self, now: float) -> None:
        for pair, (at, sent) in list(self._rechecks.items()):
            if pair.state is not PairState.IN_PROGRESS or pair.extra.get("sent_at") != sent:
                # answered, failed, or checked again meanwhile (e.g. the nomination)
                del self._rechecks[pair]
            elif now >= at:
                self._recheck(pair)

    def _fail_pair(self, pair: CandidatePair, reason: str, now: float) -> None:
        pair.state = PairState.FAILED
        self._stats.pairs_failed += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("pair failed (%s): %s", reason, pair.describe())
        self._events.append(PairChecked(pair.component, pair.local.candidate, pair.remote, False))
        nominating = self._nominating.get(pair.component)
        if nominating is not None and (
            nominating is pair or nominating.valid_pair is pair or pair.valid_pair is nominating
        ):
            del self._nominating[pair.component]
            pair.use_candidate = False
            if pair.valid_pair is not None:
                pair.valid_pair.state = PairState.FAILED
        self._check_failure(now)

    def _on_success(
        self, pair: CandidatePair, check: _Check, mapped: Address, rtt: float | None, now: float
    ) -> None:
        # §7.2.5.3.1 the local candidate that the mapped address names
        local = None
        via = pair.via
        for lc in self._locals:
            if lc.via == via and lc.address == mapped:
                local = lc
                break
        if local is None:
            self._prflx_counter += 1
            local = make_prflx_local(
                pair.local,
                mapped,
                check.priority,
                compute_foundation(CandidateType.PEER_REFLEXIVE, pair.local.base[0]),
            )
            self._locals.append(local)
            logger.debug("peer-reflexive local candidate %s:%d", mapped[0], mapped[1])
        if local.candidate.type is not CandidateType.PEER_REFLEXIVE:
            self._stable_vias.add(pair.via)
        # §7.2.5.3.2 the valid pair
        if local is pair.local or local.address == pair.local.address:
            valid = pair
        else:
            # a server- or peer-reflexive local candidate: never in the check list (it was
            # replaced by its base, §6.1.2.4), so the valid pair is a new one
            valid = CandidatePair(local, pair.remote, 0, PairState.SUCCEEDED)
            valid.in_check_list = False
            valid.compute_priority(self.controlling)
        valid = self._checklist.add_valid(valid)
        if valid.state is not PairState.FAILED:
            valid.state = PairState.SUCCEEDED
        was_succeeded = pair.state is PairState.SUCCEEDED
        pair.state = PairState.SUCCEEDED
        self._rechecks.pop(pair, None)  # answered: no re-check needed (§7.3.1.4)
        pair.valid_pair = valid
        pair.rtt = rtt if rtt is not None else pair.rtt
        valid.rtt = pair.rtt
        if not was_succeeded:
            self._stats.pairs_succeeded += 1
        self._events.append(
            PairChecked(pair.component, valid.local.candidate, valid.remote, True, rtt)
        )
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug("check succeeded: %s (valid %s)", pair.describe(), valid.describe())
        # §7.2.5.3.3 unfreeze the pairs of the same foundation
        self._checklist.unfreeze_foundation(pair.foundation)
        component = pair.component
        consent = self._consent.get(component)
        if consent is not None and self._selected.get(component) is valid:
            consent.refresh(now)
        if (
            pair.use_candidate
            and self.controlling
            and not check.use_candidate
            and not any(
                c.pair is pair and c.use_candidate and not c.cancelled
                for c in self._checks.values()
            )
        ):
            # an older check answered while the nomination check waits in the triggered
            # queue: the nomination check must still go out (unless it is already out)
            self._checklist.enqueue_triggered(pair)
        # §7.2.5.3.4 nomination
        if check.use_candidate and check.controlling:
            pair.use_candidate = False
            self._nominate_valid(valid, now)
        elif pair.nominate_on_success and not self.controlling:
            pair.nominate_on_success = False
            self._nominate_valid(valid, now)
        elif self.controlling and (component not in self._selected or self._restarting):
            self._first_valid_at.setdefault(component, now)
            self._nominate_due(now)

    # -- nomination (§8.1) --------------------------------------------------------------------

    def _nominate_due(self, now: float) -> None:
        """Controlling agent: pick a valid pair per component and check it with USE-CANDIDATE
        (regular nomination, §8.1.1) once no better pair is pending or the wait is over."""
        if not self.controlling or self.state is not AgentState.RUNNING:
            return
        for component in range(1, self.components + 1):
            if component in self._nominating:
                continue
            if component in self._selected and not self._restarting:
                continue
            if self._restarting and self._selected_generation(component) == self._generation:
                continue
            best = self._checklist.best_valid(component)
            if best is None:
                continue
            first = self._first_valid_at.setdefault(component, now)
            wait_until = self._nomination_wait(component, best, first)
            if wait_until is not None and now < wait_until - 1e-9:  # float sums of times
                continue
            # the check-list pair whose checks produced ``best``
            generator = next((p for p in self._checklist if p.valid_pair is best), None)
            if generator is None:
                best.state = PairState.FAILED  # nothing to nominate it with; try the next
                continue
            generator.use_candidate = True
            self._nominating[component] = best
            self._checklist.enqueue_triggered(generator)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("nominating %s", best.describe())

    def _nomination_wait(
        self, component: int, best: CandidatePair, first_valid: float
    ) -> float | None:
        """Until when to wait for a pair better than ``best`` (None: nominate now).

        "Better" means ranked above the check-list pair whose check produced ``best`` (its
        valid pair may rank lower, with a peer-reflexive local candidate).  None at once
        when ``best`` is the best pair that can still succeed: no better pair
        is Frozen, Waiting or In-Progress (§8.1.1 leaves the choice of the moment to
        the controlling agent).  Else at most ``nomination_delay`` after the first valid pair;
        less when every better pair has been In-Progress for longer than one of ``best``'s
        round trips plus Ta (the peer may check that pair up to one pacing interval after
        us, and a working one would have answered by then - e.g. host pairs between two
        private networks never do).  A better In-Progress pair that is
        :meth:`_promising` is waited for until its first retransmission could have been
        answered, beyond ``nomination_delay``: under packet loss, two endpoint-independent
        NATs otherwise settle on a relay when both first checks of the direct pair are lost.
        A better pair that is :meth:`_unlikely` is not waited for at all.
        """
        deadline = first_valid + self.nomination_delay
        patience = (best.rtt if best.rtt is not None else self.min_rto) + self.ta
        # the pairs to wait for rank above the check-list pair that produced ``best``: a
        # valid pair with a peer-reflexive local candidate (a symmetric NAT's mapping) ranks
        # below the pair checked, and must not wait for the pairs between the two (e.g. our
        # relay towards the peer's private address, which never answers)
        ranked = max(
            [best.priority]
            + [p.priority for p in self._checklist if p.valid_pair is best and p is not best]
        )
        until: float | None = None
        retransmission: float | None = None  # not capped by the deadline
        # Waiting pairs go out in _check_rank order (the priority but for unlikely pairs),
        # one per Ta (§6.1.4.2)
        waiting = 0
        reranked = [
            self._check_rank(p)
            for p in self._checklist
            if p.state is PairState.WAITING and self._unlikely(p)
        ]
        for p in self._checklist:  # highest priority first
            unlikely = self._unlikely(p)
            if p.state is PairState.WAITING and not unlikely:
                waiting += 1
            if p.component != component or p.priority <= ranked or unlikely:
                continue
            if p.state is PairState.FROZEN:
                t = deadline  # not tried yet, and no telling when it will be
            elif p.state is PairState.WAITING:
                # not tried yet: give it the same chance once its turn has come
                ahead = waiting - 1 + sum(1 for r in reranked if r > p.priority)
                t = self._ordinary_at() + ahead * self.ta + patience
            elif p.state is PairState.IN_PROGRESS:
                sent = p.extra.get("sent_at")
                t = sent + patience if isinstance(sent, float) else deadline
                if self._promising(p) and p.hold_until != math.inf:
                    # lost on the way, most likely: wait for its first retransmission
                    r = p.hold_until + patience
                    retransmission = r if retransmission is None else max(retransmission, r)
            else:
                continue
            until = t if until is None else max(until, t)
        if until is None:
            return retransmission
        until = min(until, deadline)
        return until if retransmission is None else max(until, retransmission)

    def _unlikely(self, pair: CandidatePair) -> bool:
        """Is ``pair`` our relayed candidate towards a private address behind the peer's NAT?

        True when the local candidate is relayed, the remote one a host candidate with a
        private or link-local address (RFC 1918, RFC 6598 shared space, 169.254/16, fc00::/7,
        fe80::/10), and the peer also signalled a server-reflexive candidate of the same
        address family with another address - so that host sits behind the peer's NAT, and
        a TURN server on the public side never gets a packet to it.  Such a pair is checked
        in the order it would have with our relay at the recommended preference
        (:meth:`_check_rank`) and the nomination does not wait for it
        (:meth:`_nomination_wait`); it is never pruned, since a TURN server inside the
        peer's private network can reach it.  RFC 8445 leaves room for both: the controlling
        agent nominates by its own criteria (§8.1.1), and the ranking of checks rests on
        priorities that should reflect how likely a candidate is to work (§5.1.2.1,
        §6.1.2.3); only the order changes, no pair is left out.
        """
        if pair.local.candidate.type is not CandidateType.RELAYED:
            return False
        remote = pair.remote
        if remote.type is not CandidateType.HOST:
            return False
        address = _ip(remote.address)
        if address is None or not any(address in net for net in _BEHIND_NAT_NETWORKS):
            return False
        for rc in self._remotes:
            if rc.type is CandidateType.SERVER_REFLEXIVE and rc.address != remote.address:
                other = _ip(rc.address)
                if other is not None and other.version == address.version:
                    return True
        return False

    def _check_rank(self, pair: CandidatePair) -> int:
        """The order of ordinary checks: the pair priority, except for an :meth:`_unlikely`
        pair, ranked as if our relayed candidate had the recommended type preference 0
        (RFC 8445 §5.1.2.2) - a relay raised above our server-reflexive candidates (behind a
        symmetric NAT, :mod:`ice.candidate`) is meant for the peer's public addresses."""
        if not self._unlikely(pair):
            return pair.priority
        local = pair.local.candidate
        ours = candidate_priority(CandidateType.RELAYED, local.component, local.local_preference)
        theirs = pair.remote.priority
        return pair_priority(ours, theirs) if self.controlling else pair_priority(theirs, ours)

    def _promising(self, pair: CandidatePair) -> bool:
        """Is an unanswered pair likely to work, its first check or answer lost?  Yes when
        both ends showed a stable mapping: a check from our socket came back with a
        mapped address we signalled (no NAT, or an endpoint-independent one), and a check
        of the peer's came from the pair's remote address (the peer's mapping towards us
        is the one it signalled).  E.g. two endpoint-independent NATs under packet loss;
        never with a symmetric NAT on either side."""
        return pair.via in self._stable_vias and pair.remote_address in self._check_sources

    def _selected_generation(self, component: int) -> int:
        pair = self._selected.get(component)
        if pair is None:
            return -1
        gen = pair.extra.get("generation")
        return gen if isinstance(gen, int) else -1

    def _nominate_valid(self, valid: CandidatePair, now: float) -> None:
        """``valid`` is nominated (§8.1.1 controlling, §7.3.1.5 controlled): select it if it is
        the best nominated pair of its component (§8.1.1)."""
        valid.nominated = True
        component = valid.component
        self._nominating.pop(component, None)
        current = self._selected.get(component)
        new_generation = self._selected_generation(component) != self._generation
        if (
            current is not None
            and not new_generation
            and (current is valid or current.priority >= valid.priority)
        ):
            return
        valid.extra["generation"] = self._generation
        self._selected[component] = valid
        self._consent_lost.discard(component)
        self._consent[component] = ConsentFreshness(
            now, interval=self.consent_interval, timeout=self.consent_timeout, rng=self._rng
        )
        lc = valid.local.candidate
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "component %d selected: %s %s:%d -> %s %s:%d",
                component,
                lc.type.value,
                lc.address,
                lc.port,
                valid.remote.type.value,
                valid.remote.address,
                valid.remote.port,
            )
        self._events.append(
            PairNominated(component, lc, valid.remote, valid.via, valid.remote_address)
        )
        # §8.3: no more checks of lower priority for this component
        self._checklist.remove_pending(
            component, below=None if self.controlling else valid.priority
        )
        # the peer is reachable: the other components' pairs must not wait for foundations
        # that are still In-Progress here (perhaps for good) - check them all now
        for other in range(1, self.components + 1):
            if other != component and self._selected_generation(other) != self._generation:
                self._checklist.unfreeze_component(other)
        superseded = []
        for check in self._checks.values():
            p = check.pair
            if (
                p is not None
                and check.consent_component is None
                and p.component == component
                and p.priority < valid.priority
                and p.valid_pair is not valid
                and p.state is PairState.IN_PROGRESS
            ):
                check.cancelled = True
                superseded.append(p)
        for p in superseded:
            # failed at once rather than In-Progress until the transaction would time out: so
            # the Frozen pairs of its foundation (other components) get their turn (§6.1.4.2)
            if p.state is PairState.IN_PROGRESS:
                self._fail_pair(p, "superseded by the selected pair", now)
        self._check_completed(now)

    def _check_completed(self, now: float) -> None:
        if self._completed_generation == self._generation:
            return
        generation = self._generation
        for c in range(1, self.components + 1):
            if self._selected_generation(c) != generation:
                return
        self._completed_generation = self._generation
        self.state = AgentState.COMPLETED
        self._restarting = False
        self._previous_local = None
        self._previous_remote = None
        start = self._generation_started if self._generation_started is not None else now
        connect = now - start
        if self._stats.connect_time is None:
            self._stats.connect_time = connect
        logger.info("ICE completed in %.1f ms", connect * 1000)
        self._events.append(Completed(connect))

    def _check_failure(self, now: float) -> None:
        if self.state is not AgentState.RUNNING or self._remote is None:
            return  # waiting for the peer's parameters is the signalling's business
        start = self._generation_started if self._generation_started is not None else now
        missing = [
            c
            for c in range(1, self.components + 1)
            if self._selected_generation(c) != self._generation
        ]
        if not missing:
            return
        reason = None
        if self.timeout > 0 and now >= start + self.timeout:
            reason = "timeout"
        elif self._remote_eoc and self._remote is not None:
            for c in missing:
                pairs = [p for p in self._checklist if p.component == c]
                alive = any(p.state is not PairState.FAILED for p in pairs)
                valid = self._checklist.best_valid(c) is not None
                if not alive and not valid and not self._nominating.get(c):
                    reason = f"every candidate pair of component {c} failed"
                    break
        if reason is None:
            return
        if self._restarting:
            # the old selected pairs keep working; the restart failed
            self._restarting = False
            self.state = AgentState.COMPLETED
            self._completed_generation = self._generation
            logger.info("ICE restart failed (%s); keeping the previous pairs", reason)
            self._events.append(Failed(f"restart: {reason}"))
            return
        self.state = AgentState.FAILED
        for check in self._checks.values():
            if check.consent_component is None:
                check.cancelled = True
        logger.info("ICE failed: %s", reason)
        self._events.append(Failed(reason))

    # -- roles --------------------------------------------------------------------------------

    def _set_role(self, controlling: bool, reason: str) -> None:
        if controlling == self.controlling:
            return
        self.controlling = controlling
        self._checklist.set_role(controlling)
        self._nominating.clear()
        for pair in self._checklist:
            pair.use_candidate = False
        if controlling and self._now is not None:
            for component in range(1, self.components + 1):
                if self._checklist.best_valid(component) is not None:
                    self._first_valid_at.setdefault(component, self._now)
        logger.info("role -> %s: %s", "controlling" if controlling else "controlled", reason)
        self._events.append(RoleChanged(controlling, reason))

    # -- consent (RFC 7675) -------------------------------------------------------------------

    def _run_consent(self, now: float) -> None:
        for component, consent in list(self._consent.items()):
            if consent.expired(now):
                if component not in self._consent_lost:
                    self._consent_lost.add(component)
                    logger.info("consent lost on component %d", component)
                    self._events.append(ConsentLost(component))
                    for tid, check in list(self._checks.items()):
                        if check.consent_component == component:
                            del self._checks[tid]
                continue
            if not consent.due(now):
                continue
            pair = self._selected.get(component)
            # during a restart, until the peer's new credentials arrive, the old ones (which
            # the peer keeps accepting until the new pairs are selected) refresh the old pair
            remote, ours = self._remote, self._local
            if remote is None and self._previous_remote is not None:
                remote, ours = self._previous_remote, self._previous_local or self._local
            if pair is None or remote is None:
                consent.postpone(now)  # nothing to send with; try at the next interval
                continue
            msg, priority = self._request(pair.local.candidate, False, remote=remote, ours=ours)
            data = msg.encode(remote.key, fingerprint=True)
            tx = StunClientTransaction(
                data,
                now,
                # a few retransmissions within the interval (0, 0.5, 1.5, 3.5 s by default)
                # so that one lost datagram does not cost a whole consent interval
                rto=min(self.min_rto, self.consent_interval / 10),
                rc=4,
                rm=1,
                integrity_key=remote.key,
                unauthenticated_errors=(),
            )
            self._checks[tx.transaction_id] = _Check(
                tx,
                pair,
                pair.via,
                pair.remote_address,
                self.controlling,
                priority,
                False,
                consent_component=component,
                generation=self._generation,
            )
            consent.sent(tx.transaction_id, now)
            self._stats.consent_requests_sent += 1

    def _on_consent_result(
        self,
        check: _Check,
        result: StunTransactionSucceeded | StunTransactionFailed | StunTransactionTimedOut,
        via: Via | None,
        source: Address | None,
        now: float,
    ) -> None:
        component = check.consent_component
        assert component is not None
        consent = self._consent.get(component)
        if consent is None:
            return
        if isinstance(result, StunTransactionSucceeded):
            if source == check.dest and via == check.via:
                consent.response(check.tx.transaction_id, now)
        elif isinstance(result, StunTransactionFailed):
            error = result.error
            if error is not None and error.code == 487 and check.controlling == self.controlling:
                self._set_role(not self.controlling, "487 Role Conflict (consent check)")

    # -- the data path ------------------------------------------------------------------------

    def selected_pair(self, component: int = 1) -> CandidatePair | None:
        """The selected (nominated) pair of ``component``, if any."""
        return self._selected.get(component)

    def has_consent(self, component: int = 1) -> bool:
        return component in self._selected and component not in self._consent_lost

    def send_target(self, component: int = 1) -> tuple[Via, Address] | None:
        """Where to send ``component``'s data: ``(via, remote_addr)``, or None.

        The selected pair once there is one.  Before that, RFC 8445 §12.1 lets an agent send
        on any valid pair: the pair being nominated (controlling), else the best valid pair
        of the component - so media can start one round trip after the first successful
        check instead of after the nomination.  None when no pair is valid yet, when ICE
        failed or was closed, or after consent was lost (RFC 7675 §5.1: stop sending).
        """
        pair = self.data_pair(component)
        if pair is None:
            return None
        return pair.via, pair.remote_address

    def data_pair(self, component: int = 1) -> CandidatePair | None:
        """The pair ``component``'s data goes on now (see :meth:`send_target`): the
        selected pair, before selection a valid one, else None."""
        if component in self._consent_lost or self.state is AgentState.CLOSED:
            return None
        return self._selected.get(component) or self._early_pair(component)

    def _early_pair(self, component: int) -> CandidatePair | None:
        """The valid pair to send on before ``component`` has a selected pair (§12.1)."""
        if self.state is not AgentState.RUNNING:
            return None
        nominating = self._nominating.get(component)
        if nominating is not None and nominating.state is not PairState.FAILED:
            return nominating
        return self._checklist.best_valid(component)

    def is_from_selected(
        self, component: int, remote_addr: SockAddr, via: Via | None = None
    ) -> bool:
        """May a datagram from ``remote_addr`` (on ``via``) be taken as ``component``'s data?

        Once the component has a selected pair, only that pair's remote (on its ``via``)
        is accepted; anything else is dropped.  Before selection, the remote of any valid
        pair of the component is (§12.1: the peer may send on any valid pair until it
        has selected one).
        """
        addr = normalize_address(remote_addr)
        pair = self._selected.get(component)
        if pair is not None:
            return (via is None or via == pair.via) and pair.remote_address == addr
        if self.state is not AgentState.RUNNING:
            return False
        return any(
            p.component == component
            and p.state is not PairState.FAILED
            and (via is None or via == p.via)
            and p.remote_address == addr
            for p in self._checklist.valid
        )

    def component_of(self, via: Via, remote_addr: SockAddr) -> int | None:
        """The component whose data may come from ``remote_addr`` on ``via``: its selected
        pair's, or before selection one of its valid pairs' (see :meth:`is_from_selected`),
        else None."""
        addr = normalize_address(remote_addr)
        for component, pair in self._selected.items():
            if pair.via == via and pair.remote_address == addr:
                return component
        if len(self._selected) < self.components and self.state is AgentState.RUNNING:
            for p in self._checklist.valid:
                if (
                    p.component not in self._selected
                    and p.state is not PairState.FAILED
                    and p.via == via
                    and p.remote_address == addr
                ):
                    return p.component
        return None

    # -- stats --------------------------------------------------------------------------------

    def stats(self) -> AgentStats:
        s = self._stats
        s.role = "controlling" if self.controlling else "controlled"
        s.state = self.state.value
        s.pairs = len(self._checklist)
        s.selected = {}
        for component, pair in self._selected.items():
            s.selected[component] = {
                "local": _describe(pair.local.candidate),
                "remote": _describe(pair.remote),
                "rtt_ms": None if pair.rtt is None else round(pair.rtt * 1000, 1),
            }
        return s


_BEHIND_NAT_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "10.0.0.0/8",  # RFC 1918
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # RFC 6598 shared address space (carrier-grade NAT)
        "169.254.0.0/16",  # RFC 3927 link-local
        "fc00::/7",  # RFC 4193 unique local
        "fe80::/10",  # RFC 4291 link-local
    )
)


@functools.lru_cache(maxsize=256)
def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``address`` as an IP address (zone index dropped), None for a name."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None


def normalize_address(addr: SockAddr) -> Address:
    """``(host, port)`` with an IPv6 host in ``inet_ntop`` spelling (a scope id kept), whatever
    ``recvfrom`` or the SDP gave (4-tuples, upper case, leading zeros)."""
    host, port = addr[0], addr[1]
    if ":" in host:
        ip, sep, scope = host.partition("%")
        try:
            host = ipaddress.IPv6Address(ip).compressed + sep + scope
        except ValueError:
            pass
    return host, port


def _normalized(c: Candidate) -> Candidate:
    addr = normalize_address(c.transport_address)
    if addr[0] == c.address:
        return c
    return dataclasses.replace(c, address=addr[0])


def _describe(c: Candidate) -> dict[str, object]:
    return {"type": c.type.value, "protocol": c.transport, "address": c.address, "port": c.port}
