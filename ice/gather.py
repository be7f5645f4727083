"""Candidate gathering (RFC 8445 §5.1.1): host, server-reflexive and relayed candidates.

Two layers, as everywhere in ``ice``:

* :class:`CandidateGatherer` - sans-I/O.  It is told which local sockets exist
  (:meth:`~CandidateGatherer.add_socket`, one per local address and component), and then sends
  STUN Binding requests to every STUN server and TURN Allocate requests to every TURN server
  from each socket of the server's address family.  Host candidates come at once; the server
  transactions are paced (RFC 8445 §5.1.1.2, §14): one (socket, server address) group every
  Ta = 5 ms, the RFC's floor, so a Binding and an Allocate to one server (a coturn serving
  both) leave together, TURN first (its 401 round trip makes it the longest); all gatherers
  of a process share one :class:`TransactionPacer` (§14.2: 5 ms between the transactions of
  all agents).  A second allocation on a server starts with the realm and nonce the first got
  (:meth:`ice.turn.TurnClient.reuse_credentials`).  Every server has its own deadline, so a
  dead server never stalls gathering: when it passes the server is reported as
  :class:`ServerFailed` and the rest carry on.  Candidates are reported one by one as they
  appear (:class:`CandidateGathered`, trickle-friendly, RFC 8838) and
  :class:`GatheringComplete` follows once every server has answered or timed out.
* :class:`AsyncGatherer` - the asyncio shell: it opens the UDP sockets on the addresses of
  :mod:`ice.interfaces`, drives the core with the loop's clock, and keeps the sockets (and the
  TURN allocations) for the ICE agent: datagrams the gatherer does not consume are handed to
  ``on_datagram`` and :meth:`AsyncGatherer.send` / :meth:`AsyncGatherer.relay_send` send from
  a given local candidate.  :meth:`AsyncGatherer.permit` creates TURN permissions for the
  peer's addresses at once (one CreatePermission, RFC 8656 §10.1) when its candidates arrive.
  A gatherer can also be started ahead of a call (:class:`ice.pool.CandidatePool`): its
  ``keepalive`` keeps the NAT bindings alive meanwhile, :meth:`AsyncGatherer.attach` hands it
  to its user (replaying what was gathered) and :meth:`AsyncGatherer.limit_components` drops
  the components a call does not need (rtcp-mux).

Rules implemented:

* priorities (§5.1.2.1) with the recommended type preferences (§5.1.2.2) and a distinct local
  preference per local address, interleaving IPv6 and IPv4 (RFC 8421 §4):
  :func:`local_preferences`;
* foundations (§5.1.1.3): equal for the same type, base IP, server IP and transport
  (:func:`ice.candidate.compute_foundation`; relayed candidates use the host base they were
  allocated from);
* redundant candidates are dropped (§5.1.3): same transport address and same base as a
  candidate of higher or equal priority - e.g. a server-reflexive candidate equal to its host
  candidate when there is no NAT, or the same mapping learnt from two servers;
* a TURN allocation also yields a server-reflexive candidate from its XOR-MAPPED-ADDRESS
  (§5.1.1.2).  TURN over UDP runs on the host candidate's own socket, so a relayed
  candidate's traffic leaves through that socket (the TURN client is
  :class:`ice.turn.TurnClient`, driven by the core).  TURN over TCP or TLS (for networks that
  block UDP) runs on a connection of its own (:func:`ice.turn_aio.allocate_turn`, opened by
  :class:`AsyncGatherer`) and reports to the core through
  :meth:`CandidateGatherer.external_relay_done`; both kinds are used through
  ``relay_send`` / ``on_relayed`` alike.
* the NAT's mapping behaviour (RFC 4787 §4.1) is detected on the way, per socket: two server
  addresses reporting different mapped addresses for one socket (a STUN server and a TURN
  server's Allocate, or two STUN servers) show a mapping that depends on the destination;
  with one server, its Binding response's OTHER-ADDRESS (RFC 5780 §7.4) gets one more
  Binding from the same socket (RFC 5780 §4.3 test II), paced like the others and bounded by
  ``GatherConfig.mapping_timeout`` (it never produces a candidate or a :class:`ServerFailed`).
  Behind such a "symmetric" NAT the relayed candidates rank above the server-reflexive ones
  (:data:`ice.candidate.RELAY_PREFERENCE_BEHIND_SYMMETRIC_NAT`): a relayed candidate whose
  socket's test is still running is held back until it ends (at most ``mapping_timeout``),
  so its priority is right when it is signalled.  An agent keeps that priority only as the
  controlled agent (:func:`ice.candidate.ranked_for_role`, applied by
  :class:`ice.aio.IceConnection`; values and reasoning at the constant).  Results are
  reported (:class:`MappingDetected`, :attr:`CandidateGatherer.mapping`) and cached per
  (local IP, server) in a :class:`ice.nat.MappingCache` (the process's, for
  :class:`AsyncGatherer`), so the next gathering from the same address sends no extra
  transaction.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ice.candidate import Candidate, CandidateType, relay_type_preference
from ice.interfaces import DEFAULT_EXCLUDE, LocalAddress, local_addresses
from ice.nat import PROCESS_MAPPING_CACHE, MappingBehavior, MappingCache, compare_mappings
from ice.stun import (
    OTHER_ADDRESS,
    XOR_MAPPED_ADDRESS,
    Address,
    StunClass,
    StunMessage,
    StunMethod,
    StunParseError,
    is_stun,
    parse_message,
)
from ice.stun_transaction import StunClientTransaction, StunTransactionSucceeded
from ice.turn import (
    Allocated,
    AllocationExpired,
    AllocationFailed,
    DataReceived,
    TurnClient,
    TurnState,
)
from ice.turn_aio import TurnAllocation, TurnError, allocate_turn

__all__ = [
    "AsyncGatherer",
    "CandidateGathered",
    "CandidateGatherer",
    "GatherConfig",
    "GatherEvent",
    "GatheringComplete",
    "GatheredCandidate",
    "MappingDetected",
    "PROCESS_PACER",
    "RelayLost",
    "RelayedDataReceived",
    "ServerFailed",
    "TransactionPacer",
    "TurnServer",
    "gather_candidates",
    "local_preferences",
]

logger = logging.getLogger("ice.gather")
trace = logging.getLogger("ice.trace")

MIN_TA = 0.005
"""RFC 8445 §14.2: the floor for every ICE transaction of the process (Appendix B.1: NATs
create a new binding every 5 ms without trouble)."""
DEFAULT_TA = MIN_TA
"""Pacing of gathering (RFC 8445 §5.1.1, §14): one new NAT binding per Ta.  Gathering happens
before any peer is known, so the check-list Ta negotiated with the peer (§14.2, RFC 8839
``a=ice-pacing``) does not apply; the process-wide 5 ms floor does (:class:`TransactionPacer`).
"""


class TransactionPacer:
    """One stream of transaction slots at least ``interval`` apart, shared by every gatherer
    (and whoever else opts in) of a process: RFC 8445 §14.2 wants all transactions of all
    agents together no more often than once every 5 ms.  Sans-I/O: the owner passes ``now``
    of one clock (the asyncio shells use the loop's, i.e. ``time.monotonic``)."""

    def __init__(self, interval: float = MIN_TA) -> None:
        self.interval = interval
        self._next = float("-inf")

    def next_slot(self, now: float) -> float:
        """The earliest time a new transaction may start (``now`` or later).  A slot more
        than one interval ahead cannot come from the same clock (another event loop's, a
        virtual one): it is forgotten rather than waited for."""
        if self._next > now + self.interval:
            self._next = now
        return max(now, self._next)

    def take(self, now: float) -> None:
        """A transaction starts at ``now``: the next one waits ``interval``."""
        self._next = max(self._next, now + self.interval)


PROCESS_PACER = TransactionPacer()
"""The pacer every :class:`AsyncGatherer` of this process shares (unless given another)."""


@dataclass(frozen=True, slots=True)
class TurnServer:
    """A TURN server and the long-term credentials for it.

    ``transport`` is how we reach the server (RFC 8656 §3.1): ``"udp"`` (from the host
    candidate's own socket, driven by the sans-I/O core), ``"tcp"`` or ``"tls"`` (a
    connection of its own, :func:`ice.turn_aio.allocate_turn`, opened by
    :class:`AsyncGatherer`).  The relayed address is UDP in every case.  ``ssl_context`` and
    ``server_hostname`` are for TLS (default: the system trust store, the server's host).
    """

    address: Address
    username: str
    password: str = field(repr=False)
    transport: str = "udp"
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    server_hostname: str | None = None


@dataclass(frozen=True, slots=True)
class GatherConfig:
    """What to gather.

    ``stun_timeout`` / ``turn_timeout``: how long one server may take before it is given up
    (its own deadline; gathering completes regardless).  ``ta`` paces new NAT bindings: one
    (local socket, server address) pair starts every ``ta`` seconds; the transactions to one
    server address from one socket (a Binding and an Allocate to a coturn serving both) share
    one binding and start together (RFC 8445 Appendix B.1 is about binding creation).
    ``keepalive``: see the field.  ``relay_only`` signals relayed
    candidates only (host and server-reflexive ones are kept private: a "force relay" policy,
    RFC 8445 §5.1.1 lets an agent choose which candidates to gather).
    """

    stun_servers: Sequence[Address] = ()
    turn_servers: Sequence[TurnServer] = ()
    components: int = 1
    stun_timeout: float = 3.0
    turn_timeout: float = 5.0
    stun_rto: float = 0.25
    ta: float = DEFAULT_TA
    relay_only: bool = False
    software: str | None = None
    detect_mapping: bool = True
    """Detect an endpoint-dependent NAT mapping (see the module docstring) and rank relayed
    candidates above server-reflexive ones behind one."""
    mapping_timeout: float = 0.25
    """How long the extra RFC 5780 test II Binding may take (one retransmission at half of
    it), and so how long a relayed candidate may be held back waiting for the result."""
    keepalive: float | None = None
    """Seconds between STUN Binding indications from each socket to each UDP server that
    answered it (RFC 8489 §3: indications need no answer), keeping the NAT bindings behind
    the server-reflexive candidates and the TURN 5-tuples alive while the candidates wait
    for a call (a pre-gathered pool); None: none sent."""


@dataclass(frozen=True, slots=True)
class GatheredCandidate:
    """A gathered candidate and where its packets come and go: ``local`` is the address of the
    UDP socket (the host base), ``relay`` the TURN server for a relayed candidate."""

    candidate: Candidate
    local: Address
    relay: Address | None = None

    @property
    def base(self) -> Address:
        """The candidate's base (RFC 8445 §5.1.1): itself for relayed, else the socket."""
        if self.candidate.type is CandidateType.RELAYED:
            return self.candidate.transport_address
        return self.local


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CandidateGathered:
    """A new, non-redundant local candidate."""

    local: GatheredCandidate


@dataclass(frozen=True, slots=True)
class ServerFailed:
    """A STUN or TURN server gave no usable answer from ``local`` (``kind``: "stun"/"turn")."""

    kind: str
    server: Address
    local: Address
    reason: str


@dataclass(frozen=True, slots=True)
class GatheringComplete:
    """Every server has answered or timed out; ``candidates`` is the final local list."""

    candidates: tuple[GatheredCandidate, ...]


@dataclass(frozen=True, slots=True)
class RelayedDataReceived:
    """``data`` from ``peer`` arrived through the allocation ``relayed``."""

    relayed: Address
    peer: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class RelayLost:
    """The allocation ``relayed`` is gone (expired, or refused on refresh)."""

    relayed: Address
    reason: str


@dataclass(frozen=True, slots=True)
class MappingDetected:
    """The NAT mapping behaviour in front of socket ``local`` (RFC 4787 §4.1), found with the
    answers from ``servers`` (one entry: taken from the cache, or no NAT)."""

    local: Address
    mapping: MappingBehavior
    servers: tuple[Address, ...]

    @property
    def endpoint_dependent(self) -> bool:
        """A "symmetric" NAT: the mapping changes with the destination."""
        return _dependent(self.mapping)


GatherEvent = (
    CandidateGathered
    | ServerFailed
    | GatheringComplete
    | RelayedDataReceived
    | RelayLost
    | MappingDetected
)


def _dependent(mapping: MappingBehavior | None) -> bool:
    return mapping in (
        MappingBehavior.ADDRESS_DEPENDENT,
        MappingBehavior.ADDRESS_AND_PORT_DEPENDENT,
    )


def local_preferences(addresses: Sequence[str]) -> dict[str, int]:
    """A distinct local preference per address (RFC 8445 §5.1.2.1), IPv6 and IPv4 interleaved
    with IPv6 first (RFC 8421 §4); earlier addresses of a family rank higher."""
    v6 = [a for a in addresses if ":" in a]
    v4 = [a for a in addresses if ":" not in a]
    order: list[str] = []
    for i in range(max(len(v6), len(v4))):
        order += [lst[i] for lst in (v6, v4) if i < len(lst)]
    return {a: max(0, 65535 - 256 * i) for i, a in enumerate(dict.fromkeys(order))}


def _same_family(a: str, b: str) -> bool:
    return (":" in a) == (":" in b)


@dataclass(slots=True)
class _Socket:
    local: Address
    component: int
    preference: int


@dataclass(slots=True)
class _Binding:
    sock: _Socket
    server: Address
    transaction: StunClientTransaction | None = None
    deadline: float = 0.0
    done: bool = False
    probe: bool = False  # the RFC 5780 test II Binding of the mapping detection


@dataclass(slots=True)
class _Turn:
    sock: _Socket
    server: TurnServer
    index: int
    client: TurnClient
    deadline: float = 0.0
    done: bool = False
    relayed: Address | None = None


@dataclass(slots=True)
class _MappingState:
    answers: list[tuple[Address, Address]] = field(default_factory=list)  # (server, mapped)
    behavior: MappingBehavior | None = None
    probe: _Binding | None = None


@dataclass(slots=True)
class _HeldRelay:
    turn: _Turn
    relayed: Address
    related: Address
    until: float


class CandidateGatherer:
    """Gathers the candidates of one ICE session, sans-I/O (see the module docstring).

    Usage::

        g = CandidateGatherer(config)
        g.add_socket(("192.0.2.2", 40000), component=1)
        g.start(now)
        # loop: send g.datagrams_to_send(now) as (data, from_local, to_addr);
        #       g.receive(data, local, addr, now) -> False: not for the gatherer
        #       g.handle_timer(now) at g.get_timer(); drain g.next_event()
    """

    def __init__(
        self,
        config: GatherConfig | None = None,
        *,
        pacer: TransactionPacer | None = None,
        mapping_cache: MappingCache | None = None,
    ) -> None:
        self.config = config or GatherConfig()
        self.pacer = pacer
        self.mapping_cache = mapping_cache
        self._mapping: dict[Address, _MappingState] = {}
        self._held: list[_HeldRelay] = []
        self._sockets: dict[Address, _Socket] = {}
        self._bindings: list[_Binding] = []
        self._turns: list[_Turn] = []
        self._pending_starts: deque[list[_Binding | _Turn]] = deque()
        self._next_start = 0.0
        self._candidates: list[GatheredCandidate] = []
        self._events: deque[GatherEvent] = deque()
        self._outbox: list[tuple[bytes, Address, Address]] = []
        self._started = False
        self._complete = False
        self._external_pending: set[object] = set()
        self._keepalive_at: float | None = None
        self._last_start = 0.0

    # -- setup -----------------------------------------------------------------------------

    def add_socket(self, local: Address, component: int = 1, preference: int = 65535) -> None:
        """Declare a bound UDP socket (its host candidate is reported at :meth:`start`)."""
        if self._started:
            raise RuntimeError("add sockets before start()")
        if not 1 <= component <= 256:
            raise ValueError("component ID must be 1..256")
        self._sockets[(local[0], int(local[1]))] = _Socket(
            (local[0], int(local[1])), component, preference
        )

    def start(self, now: float) -> None:
        """Report the host candidates and start the server transactions.

        Host candidates are reported at once.  Then one (socket, server address) group starts
        per Ta (RFC 8445 §5.1.1.2, §14): every socket's TURN servers before its STUN servers
        (an allocation takes two round trips with the 401 challenge, a Binding one), the
        Binding and the Allocate to one address together.
        """
        if self._started:
            raise RuntimeError("start() called twice")
        self._started = True
        cfg = self.config
        for sock in self._sockets.values():
            host = Candidate.make(
                CandidateType.HOST,
                sock.local[0],
                sock.local[1],
                component=sock.component,
                local_preference=sock.preference,
            )
            self._add_candidate(GatheredCandidate(host, sock.local), signal=not cfg.relay_only)
        self._mapping_from_cache(now)
        groups: dict[tuple[Address, Address], list[_Binding | _Turn]] = {}
        for sock in sorted(self._sockets.values(), key=lambda k: k.component):
            for index, turn in enumerate(cfg.turn_servers):
                if turn.transport == "udp" and _same_family(turn.address[0], sock.local[0]):
                    client = TurnClient(
                        turn.address, turn.username, turn.password, software=cfg.software
                    )
                    t = _Turn(sock, turn, index, client)
                    self._turns.append(t)
                    groups.setdefault((sock.local, client.server), []).append(t)
            if not cfg.relay_only:
                for server in cfg.stun_servers:
                    if _same_family(server[0], sock.local[0]):
                        b = _Binding(sock, (server[0], int(server[1])))
                        self._bindings.append(b)
                        groups.setdefault((sock.local, b.server), []).append(b)
        self._pending_starts.extend(groups.values())
        self._next_start = now
        self._start_due(now)
        self._check_complete()

    # -- queries ---------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def mappings(self) -> dict[Address, MappingBehavior]:
        """The mapping behaviour found so far for each socket (absent: not known yet)."""
        return {a: st.behavior for a, st in self._mapping.items() if st.behavior is not None}

    @property
    def mapping(self) -> MappingBehavior:
        """The mapping behaviour of the NAT in front of us: endpoint-dependent if any socket
        showed it, else endpoint-independent if any socket showed that, else UNKNOWN."""
        found = self.mappings.values()
        for behavior in (
            MappingBehavior.ADDRESS_AND_PORT_DEPENDENT,
            MappingBehavior.ADDRESS_DEPENDENT,
            MappingBehavior.ENDPOINT_INDEPENDENT,
        ):
            if behavior in found:
                return behavior
        return MappingBehavior.UNKNOWN

    @property
    def candidates(self) -> list[GatheredCandidate]:
        """Every non-redundant local candidate so far, signalled or not (see ``relay_only``)."""
        return list(self._candidates)

    @property
    def signalled_candidates(self) -> list[GatheredCandidate]:
        """The candidates to put in SDP (all of them unless ``relay_only``)."""
        if not self.config.relay_only:
            return list(self._candidates)
        return [c for c in self._candidates if c.candidate.type is CandidateType.RELAYED]

    def turn_client(self, relayed: Address) -> TurnClient | None:
        """The TURN client holding the allocation ``relayed``."""
        for t in self._turns:
            if t.relayed == relayed:
                return t.client
        return None

    # -- I/O -------------------------------------------------------------------------------

    def datagrams_to_send(self, now: float | None = None) -> list[tuple[bytes, Address, Address]]:
        """``(data, local socket address, destination)`` to send now."""
        for b in self._bindings:
            if b.transaction is not None and not b.done:
                for data in b.transaction.datagrams_to_send():
                    self._outbox.append((data, b.sock.local, b.server))
        for t in self._turns:
            for data, addr in t.client.datagrams_to_send():
                self._outbox.append((data, t.sock.local, addr))
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> GatherEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times: list[float] = []
        if self._keepalive_at is not None:
            times.append(self._keepalive_at)
        if self._pending_starts:
            times.append(self._slot(self._next_start))
        for b in self._bindings:
            if b.transaction is not None and not b.done:
                times.append(b.deadline)
                t = b.transaction.get_timer()
                if t is not None:
                    times.append(t)
        times.extend(h.until for h in self._held)
        for tu in self._turns:
            if tu.client.state is TurnState.ALLOCATING and not tu.done:
                times.append(tu.deadline)
            t = tu.client.get_timer()
            if t is not None:
                times.append(t)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self._start_due(now)
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self._send_keepalives(now)
        for b in self._bindings:
            if b.transaction is None or b.done:
                continue
            if now >= b.deadline:
                b.transaction.cancel()
                self._binding_failed(b, "no answer before the deadline")
                continue
            b.transaction.handle_timer(now)
            self._binding_result(b, now)
        for tu in self._turns:
            if tu.client.state is TurnState.IDLE:
                continue
            if not tu.done and now >= tu.deadline and tu.client.state is TurnState.ALLOCATING:
                tu.client.close(now)
                self._turn_failed(tu, "no allocation before the deadline")
                continue
            tu.client.handle_timer(now)
            self._turn_events(tu, now)
        self._release_held(now)
        self._check_complete()

    def receive(self, data: bytes, local: Address, addr: Address, now: float) -> bool:
        """Offer a datagram that arrived on socket ``local`` from ``addr``.

        Returns True if it was a response to a gathering transaction or TURN traffic from a
        TURN server on that socket; False if it is someone else's (ICE checks, media).
        """
        local = (local[0], int(local[1]))
        addr = (addr[0], int(addr[1]))
        for tu in self._turns:
            if tu.sock.local == local and tu.client.server == addr:
                if tu.client.receive(data, addr, now):
                    self._turn_events(tu, now)
                    self._release_held(now)
                    self._check_complete()
                    return True
        if not is_stun(data):
            return False
        for b in self._bindings:
            if b.sock.local == local and b.transaction is not None:
                if data[8:20] != b.transaction.transaction_id:
                    continue
                if b.done:
                    return True  # a late or duplicate answer: absorbed
                try:
                    message = parse_message(data)
                except StunParseError:
                    return True
                b.transaction.receive(message, now)
                self._binding_result(b, now)
                self._release_held(now)
                self._check_complete()
                return True
        return False

    def relay_send(self, relayed: Address, data: bytes, peer: Address, now: float) -> bool:
        """Send ``data`` to ``peer`` through the allocation ``relayed`` (False: dropped)."""
        client = self.turn_client(relayed)
        if client is None:
            return False
        return client.send(data, peer, now)

    def permit(self, relayed: Address, peer_ips: Sequence[str], now: float) -> list[str]:
        """Create TURN permissions for ``peer_ips`` on the allocation ``relayed`` at once.

        One CreatePermission carries an XOR-PEER-ADDRESS per IP (RFC 8656 §10.1); they are
        refreshed like every other permission (§9), IPs already permitted or pending are
        skipped, as are IPs of the other address family.  Call it when the peer's candidates
        arrive, so the first checks sent through the relay (and the peer's checks arriving at
        it) pass the relay's permission filter.  Returns the IPs asked for (empty when
        ``relayed`` is not one of our allocations or not allocated).
        """
        client = self.turn_client(relayed)
        if client is None or client.state is not TurnState.ALLOCATED:
            return []
        return client.create_permissions(peer_ips, now)

    def bind_channel(self, relayed: Address, peer: Address, now: float) -> None:
        """Bind a TURN channel to ``peer`` on ``relayed`` (e.g. for the selected pair)."""
        client = self.turn_client(relayed)
        if client is not None and client.state is TurnState.ALLOCATED:
            client.bind_channel(peer, now)

    def drop_components(self, keep: int, now: float) -> list[Address]:
        """Give up every component above ``keep`` (e.g. a set gathered for RTP and RTCP used
        for an rtcp-mux call, RFC 5761): their candidates are forgotten, their transactions
        cancelled and their TURN allocations released (RFC 8656 §8.1; the Refresh goes out
        from their sockets, so keep those open a moment).  Returns those sockets."""
        if keep < 1:
            raise ValueError("keep at least component 1")
        gone = [a for a, sock in self._sockets.items() if sock.component > keep]
        if not gone:
            return []
        for local in gone:
            del self._sockets[local]
        for b in self._bindings:
            if b.sock.local in gone and not b.done:
                if b.transaction is not None:
                    b.transaction.cancel()
                b.done = True
        for tu in self._turns:
            if tu.sock.local in gone:
                tu.done = True
                tu.client.close(now)
        for group in self._pending_starts:
            group[:] = [item for item in group if item.sock.local not in gone]
        self._pending_starts = deque(g for g in self._pending_starts if g)
        self._held = [h for h in self._held if h.turn.sock.local not in gone]
        self._candidates = [c for c in self._candidates if c.candidate.component <= keep]
        self.config = replace(self.config, components=keep)
        self._check_complete()
        return gone

    def close(self, now: float) -> None:
        """Cancel what is running and release every TURN allocation (RFC 8656 §8.1)."""
        self._keepalive_at = None
        self._held.clear()
        for b in self._bindings:
            if b.transaction is not None:
                b.transaction.cancel()
            b.done = True
        self._pending_starts.clear()
        for tu in self._turns:
            tu.done = True
            tu.client.close(now)

    # -- relays run by the shell (TURN over TCP/TLS) -----------------------------------------

    def external_relay_started(self, key: object) -> None:
        """The shell started an allocation it runs itself (``key`` names it): gathering is
        not complete until :meth:`external_relay_done` is called with the same key."""
        self._external_pending.add(key)

    def external_relay_done(
        self,
        key: object,
        *,
        local: Address,
        server: TurnServer,
        component: int = 1,
        relayed: Address | None = None,
        mapped: Address | None = None,
        reason: str = "",
        preference: int = 65535,
    ) -> GatheredCandidate | None:
        """Report how an external allocation ended: a relayed candidate at ``relayed``
        (``local`` is the shell's end of the connection, ``mapped`` the server-reflexive
        address the server saw) or, with ``relayed`` None, a :class:`ServerFailed`."""
        self._external_pending.discard(key)
        result = None
        if relayed is None:
            logger.info("TURN server %s (%s) failed: %s", server.address, server.transport, reason)
            self._events.append(ServerFailed("turn", server.address, local, reason))
        else:
            index = list(self.config.turn_servers).index(server)
            cand = Candidate.make(
                CandidateType.RELAYED,
                relayed[0],
                relayed[1],
                component=component,
                transport="udp",
                base_address=local[0],
                server_address=server.address[0],
                related=mapped or local,
                local_preference=max(0, preference - index),
            )
            result = GatheredCandidate(cand, local, server.address)
            self._add_candidate(result)
        self._check_complete()
        return result

    # -- internals -------------------------------------------------------------------------

    def _slot(self, at: float) -> float:
        return at if self.pacer is None else self.pacer.next_slot(at)

    def _start_due(self, now: float) -> None:
        cfg = self.config
        while self._pending_starts and now >= self._slot(self._next_start):
            for item in self._pending_starts.popleft():
                if isinstance(item, _Binding):
                    if item.done:
                        continue  # a mapping test no longer needed
                    request = StunMessage(StunMethod.BINDING, StunClass.REQUEST)
                    timeout = cfg.mapping_timeout if item.probe else cfg.stun_timeout
                    rto = cfg.mapping_timeout / 2 if item.probe else cfg.stun_rto
                    item.transaction = StunClientTransaction(
                        request.encode(fingerprint=True), now, rto=rto
                    )
                    item.deadline = now + timeout
                    logger.debug(
                        "STUN Binding %s -> %s%s",
                        item.sock.local,
                        item.server,
                        " (mapping test II)" if item.probe else "",
                    )
                else:
                    self._reuse_turn_credentials(item)
                    item.deadline = now + cfg.turn_timeout
                    item.client.allocate(now)
                    logger.debug("TURN Allocate %s -> %s", item.sock.local, item.server.address)
            self._last_start = now
            self._next_start = max(self._next_start + cfg.ta, now + cfg.ta)
            if self.pacer is not None:
                self.pacer.take(now)

    def _reuse_turn_credentials(self, tu: _Turn) -> None:
        """Start an allocation with the realm and nonce another allocation on the same
        server already got (RFC 8489 §9.2.3: a client may cache them): a server whose nonces
        are not bound to the 5-tuple saves the 401 round trip; one whose nonces are (coturn)
        answers 438 with a fresh nonce instead of 401, which costs the same trip."""
        for other in self._turns:
            if other is not tu and other.server == tu.server and other.client.realm is not None:
                if tu.client.reuse_credentials(other.client):
                    return

    def _binding_result(self, b: _Binding, now: float) -> None:
        tx = b.transaction
        if tx is None or not tx.done or b.done:
            return
        result = tx.result
        if b.probe:
            self._probe_result(b, result, now)
            return
        if not isinstance(result, StunTransactionSucceeded):
            reason = "timed out" if result is None else type(result).__name__
            if result is not None and hasattr(result, "reason"):
                reason = str(result.reason)
            self._binding_failed(b, reason)
            return
        try:
            mapped = result.response.get(XOR_MAPPED_ADDRESS)
        except StunParseError as exc:
            self._binding_failed(b, f"malformed XOR-MAPPED-ADDRESS: {exc}")
            return
        if mapped is None:
            self._binding_failed(b, "no XOR-MAPPED-ADDRESS in the response")
            return
        b.done = True
        self._add_srflx(b.sock, mapped, b.server[0])
        try:
            other = result.response.get(OTHER_ADDRESS)
        except StunParseError:
            other = None
        self._observe_mapping(b.sock, b.server, mapped, other, now)

    def _binding_failed(self, b: _Binding, reason: str) -> None:
        b.done = True
        if b.probe:
            logger.debug("mapping test II %s -> %s: %s", b.sock.local, b.server, reason)
            return
        logger.info("STUN server %s failed from %s: %s", b.server, b.sock.local, reason)
        self._events.append(ServerFailed("stun", b.server, b.sock.local, reason))

    def _add_srflx(self, sock: _Socket, mapped: Address, server_ip: str) -> None:
        cand = Candidate.make(
            CandidateType.SERVER_REFLEXIVE,
            mapped[0],
            mapped[1],
            component=sock.component,
            base_address=sock.local[0],
            server_address=server_ip,
            related=sock.local,
            local_preference=sock.preference,
        )
        self._add_candidate(GatheredCandidate(cand, sock.local), signal=not self.config.relay_only)

    def _turn_events(self, tu: _Turn, now: float) -> None:
        client = tu.client
        while (event := client.next_event()) is not None:
            if isinstance(event, Allocated):
                if tu.done:
                    continue
                tu.done = True
                tu.relayed = event.relayed
                related = event.mapped or tu.sock.local
                if event.mapped is not None:
                    self._observe_mapping(tu.sock, client.server, event.mapped, None, now)
                if self._mapping_pending(tu.sock):
                    until = now + self.config.mapping_timeout
                    self._held.append(_HeldRelay(tu, event.relayed, related, until))
                    logger.debug("relayed %s held until the mapping is known", event.relayed)
                else:
                    self._add_relayed(tu, event.relayed, related)
                if event.mapped is not None and not self.config.relay_only:
                    self._add_srflx(tu.sock, event.mapped, tu.server.address[0])
            elif isinstance(event, AllocationFailed):
                if not tu.done:
                    self._turn_failed(tu, event.reason)
            elif isinstance(event, DataReceived):
                if tu.relayed is not None:
                    self._events.append(RelayedDataReceived(tu.relayed, event.peer, event.data))
            elif isinstance(event, AllocationExpired):
                if tu.relayed is not None:
                    self._events.append(RelayLost(tu.relayed, event.reason))
            else:
                logger.debug("TURN %s: %s", tu.server.address, event)

    def _add_relayed(self, tu: _Turn, relayed: Address, related: Address) -> None:
        state = self._mapping.get(tu.sock.local)
        dependent = state is not None and _dependent(state.behavior)
        cand = Candidate.make(
            CandidateType.RELAYED,
            relayed[0],
            relayed[1],
            component=tu.sock.component,
            base_address=tu.sock.local[0],
            server_address=tu.server.address[0],
            related=related,
            local_preference=max(0, tu.sock.preference - tu.index),
            type_preference=relay_type_preference(dependent),
        )
        self._add_candidate(GatheredCandidate(cand, tu.sock.local, tu.client.server))

    # -- mapping behaviour (RFC 4787 §4.1, RFC 5780 §4.3) --------------------------------------

    def _mapping_from_cache(self, now: float) -> None:
        cache, cfg = self.mapping_cache, self.config
        if cache is None or not cfg.detect_mapping:
            return
        servers = [t.address for t in cfg.turn_servers if t.transport == "udp"]
        servers += [(a[0], int(a[1])) for a in cfg.stun_servers]
        for sock in self._sockets.values():
            for server in servers:
                behavior = cache.get(sock.local[0], server, now)
                if behavior is not None:
                    self._decide_mapping(sock, behavior, (server,), now, cached=True)
                    break

    def _observe_mapping(
        self, sock: _Socket, server: Address, mapped: Address, other: Address | None, now: float
    ) -> None:
        """A mapped address seen by ``server`` (with its OTHER-ADDRESS, if any) for ``sock``."""
        cfg = self.config
        if not cfg.detect_mapping:
            return
        state = self._mapping.setdefault(sock.local, _MappingState())
        if state.behavior is not None:
            return
        if mapped == sock.local:  # no NAT on this path
            self._decide_mapping(sock, MappingBehavior.ENDPOINT_INDEPENDENT, (server,), now)
            return
        for seen in state.answers:
            if seen[0] != server:
                behavior = compare_mappings(sock.local, seen, (server, mapped))
                self._decide_mapping(sock, behavior, (seen[0], server), now)
                return
        state.answers.append((server, mapped))
        if (
            other is not None
            and state.probe is None
            and other != server
            and _same_family(other[0], sock.local[0])
        ):
            # RFC 5780 §4.3 test II: the same request to the alternate IP and port
            probe = _Binding(sock, (other[0], int(other[1])), probe=True)
            state.probe = probe
            self._bindings.append(probe)
            self._pending_starts.appendleft([probe])
            self._start_due(now)

    def _probe_result(self, b: _Binding, result: object, now: float) -> None:
        mapped: Address | None = None
        if isinstance(result, StunTransactionSucceeded):
            try:
                mapped = result.response.get(XOR_MAPPED_ADDRESS)
            except StunParseError:
                mapped = None
        if mapped is None:
            self._binding_failed(b, "no usable answer")
            return
        b.done = True
        self._observe_mapping(b.sock, b.server, mapped, None, now)

    def _decide_mapping(
        self,
        sock: _Socket,
        behavior: MappingBehavior,
        servers: tuple[Address, ...],
        now: float,
        *,
        cached: bool = False,
    ) -> None:
        state = self._mapping.setdefault(sock.local, _MappingState())
        state.behavior = behavior
        probe = state.probe
        if probe is not None and not probe.done:
            if probe.transaction is not None:
                probe.transaction.cancel()
            probe.done = True
        if (
            self.mapping_cache is not None
            and not cached
            and behavior is not MappingBehavior.UNKNOWN
        ):
            for server in servers:
                self.mapping_cache.put(sock.local[0], server, behavior, now)
        logger.info(
            "NAT mapping from %s: %s (%s)%s",
            sock.local,
            behavior.value,
            ", ".join(f"{a[0]}:{a[1]}" for a in servers),
            " - relayed candidates ranked above server-reflexive" if _dependent(behavior) else "",
        )
        self._events.append(MappingDetected(sock.local, behavior, servers))
        self._release_held(now)

    def _mapping_pending(self, sock: _Socket) -> bool:
        """Could an answer still arriving tell this socket's mapping behaviour?"""
        if not self.config.detect_mapping:
            return False
        state = self._mapping.get(sock.local)
        if state is not None and state.behavior is not None:
            return False
        if any(b.sock is sock and not b.done for b in self._bindings):
            return True
        return any(t.sock is sock and not t.done for t in self._turns)

    def _release_held(self, now: float) -> None:
        if not self._held:
            return
        keep: list[_HeldRelay] = []
        for h in self._held:
            if now >= h.until or not self._mapping_pending(h.turn.sock):
                self._add_relayed(h.turn, h.relayed, h.related)
            else:
                keep.append(h)
        self._held = keep

    def _turn_failed(self, tu: _Turn, reason: str) -> None:
        tu.done = True
        logger.info("TURN server %s failed from %s: %s", tu.server.address, tu.sock.local, reason)
        self._events.append(ServerFailed("turn", tu.server.address, tu.sock.local, reason))

    def _add_candidate(self, lc: GatheredCandidate, signal: bool = True) -> None:
        """Keep ``lc`` unless redundant (RFC 8445 §5.1.3)."""
        new = lc.candidate
        for i, old in enumerate(self._candidates):
            o = old.candidate
            if (
                o.transport_address == new.transport_address
                and o.component == new.component
                and old.base == lc.base
            ):
                if o.priority >= new.priority:
                    logger.debug("redundant candidate %s dropped", new)
                    return
                del self._candidates[i]
                break
        self._candidates.append(lc)
        logger.debug("candidate %s %s:%d", new.type.value, new.address, new.port)
        if signal:
            self._events.append(CandidateGathered(lc))

    def _check_complete(self) -> None:
        if self._complete or not self._started or self._pending_starts:
            return
        if self._external_pending or self._held:
            return
        if all(b.done for b in self._bindings) and all(t.done for t in self._turns):
            self._complete = True
            if self.config.keepalive is not None and self._keepalive_at is None:
                self._keepalive_at = self._last_start + self.config.keepalive
            self._events.append(GatheringComplete(tuple(self.signalled_candidates)))

    def _keepalive_targets(self) -> list[tuple[Address, Address]]:
        """(socket, server) of every UDP server that answered a socket, once each."""
        targets: dict[tuple[Address, Address], None] = {}
        for b in self._bindings:
            tx = b.transaction
            alive = b.sock.local in self._sockets and not b.probe
            if alive and tx is not None and isinstance(tx.result, StunTransactionSucceeded):
                targets[(b.sock.local, b.server)] = None
        for tu in self._turns:
            if tu.client.state is TurnState.ALLOCATED:
                targets[(tu.sock.local, tu.client.server)] = None
        return list(targets)

    def _send_keepalives(self, now: float) -> None:
        interval = self.config.keepalive
        targets = self._keepalive_targets()
        if interval is None or not targets:
            self._keepalive_at = None
            return
        for local, server in targets:
            indication = StunMessage(StunMethod.BINDING, StunClass.INDICATION)
            self._outbox.append((indication.encode(fingerprint=True), local, server))
        self._keepalive_at = now + interval


# -- asyncio ---------------------------------------------------------------------------------

DatagramHandler = Callable[[bytes, Address, Address], None]
"""``(data, local socket address, remote address)`` - a datagram the gatherer did not use."""


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: AsyncGatherer, local: Address) -> None:
        self._owner = owner
        self._local = local

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._owner._input(data, self._local, (str(addr[0]).split("%", 1)[0], int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        logger.debug("UDP socket %s error: %s", self._local, exc)


class AsyncGatherer:
    """Opens one UDP socket per local address and component and drives a
    :class:`CandidateGatherer` on the running loop.

    ``addresses`` defaults to :func:`ice.interfaces.local_addresses` (with ``bind``,
    ``include``, ``exclude``); ``port`` binds component 1's sockets to that port, component
    ``c`` to ``port + c - 1`` (0: any free port).
    ``on_event`` sees every :class:`GatherEvent`; ``on_datagram`` gets what the gatherer does
    not consume; ``on_relayed`` gets data that came through a TURN allocation as
    ``(data, relayed address, peer)``.  ``pacer`` (default: the one of the process,
    :data:`PROCESS_PACER`) spaces the transactions of all gatherers (RFC 8445 §14.2);
    ``mapping_cache`` (default: :data:`ice.nat.PROCESS_MAPPING_CACHE`) keeps the NAT mapping
    behaviours found (:attr:`mapping`), so later gatherings need no extra transaction.
    """

    def __init__(
        self,
        config: GatherConfig | None = None,
        *,
        addresses: Sequence[LocalAddress | str] | None = None,
        bind: str | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        port: int = 0,
        on_event: Callable[[GatherEvent], None] | None = None,
        on_datagram: DatagramHandler | None = None,
        on_relayed: DatagramHandler | None = None,
        pacer: TransactionPacer | None = PROCESS_PACER,
        mapping_cache: MappingCache | None = PROCESS_MAPPING_CACHE,
    ) -> None:
        self.config = config or GatherConfig()
        self.core = CandidateGatherer(self.config, pacer=pacer, mapping_cache=mapping_cache)
        self.on_event = on_event
        self.on_datagram = on_datagram
        self.on_relayed = on_relayed
        if addresses is None:
            addresses = local_addresses(bind=bind, include=include, exclude=exclude)
        self._addresses = [a if isinstance(a, LocalAddress) else LocalAddress(a) for a in addresses]
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transports: dict[Address, asyncio.DatagramTransport] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._complete: asyncio.Event | None = None
        self._closed = False
        self._stream_allocs: dict[Address, TurnAllocation] = {}
        self._stream_components: dict[Address, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task of ours (cancelled by :meth:`close`)."""
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def local_addresses(self) -> list[Address]:
        """The bound socket addresses."""
        return list(self._transports)

    @property
    def started(self) -> bool:
        return self._loop is not None

    @property
    def complete(self) -> bool:
        """Gathering is complete (every server answered or timed out)."""
        return self.core.complete

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def mapping(self) -> MappingBehavior:
        """The NAT mapping behaviour found while gathering (RFC 4787 §4.1; UNKNOWN until
        found or when it could not be): see :attr:`CandidateGatherer.mapping`."""
        return self.core.mapping

    def attach(
        self,
        *,
        on_event: Callable[[GatherEvent], None] | None,
        on_datagram: DatagramHandler | None,
        on_relayed: DatagramHandler | None,
    ) -> None:
        """Hand a started gatherer (e.g. one from :class:`ice.pool.CandidatePool`) to a new
        owner: its handlers replace the old ones, and ``on_event`` is given at once what
        happened so far - a :class:`CandidateGathered` per signalled candidate, in gathering
        order, then :class:`GatheringComplete` if gathering is complete - as if it had been
        there from the start."""
        self.on_event = on_event
        self.on_datagram = on_datagram
        self.on_relayed = on_relayed
        if on_event is None:
            return
        candidates = self.core.signalled_candidates
        for gc in candidates:
            on_event(CandidateGathered(gc))
        if self.core.complete:
            on_event(GatheringComplete(tuple(candidates)))

    def limit_components(self, components: int) -> None:
        """Keep components 1..``components`` only (:meth:`CandidateGatherer.drop_components`):
        the others' TURN allocations are released and their sockets closed once the server
        confirmed (or after a few seconds)."""
        if components >= self.config.components:
            return
        assert self._loop is not None, "start() first"
        gone = self.core.drop_components(components, self._loop.time())
        self.config = self.core.config
        self._pump()
        for relayed, component in list(self._stream_components.items()):
            if component > components:
                del self._stream_components[relayed]
                alloc = self._stream_allocs.pop(relayed)
                self._spawn(alloc.close())
        if not gone:
            return
        self._spawn(self._close_sockets_later(gone))

    async def _close_sockets_later(self, sockets: list[Address], timeout: float = 2.0) -> None:
        """Close ``sockets`` once none of their TURN allocations is being released."""
        assert self._loop is not None
        deadline = self._loop.time() + timeout
        try:
            while self._loop.time() < deadline and any(
                t.client.state is TurnState.CLOSING and t.sock.local in sockets
                for t in self.core._turns
            ):
                await asyncio.sleep(0.02)
        finally:
            for local in sockets:
                transport = self._transports.pop(local, None)
                if transport is not None:
                    transport.close()

    async def start(self) -> None:
        """Open the sockets, report host candidates, start the server transactions."""
        self._loop = asyncio.get_running_loop()
        self._complete = asyncio.Event()
        prefs = local_preferences([a.address for a in self._addresses])
        for a in self._addresses:
            for component in range(1, self.config.components + 1):
                try:
                    local = await self._open(a, component)
                except OSError as exc:
                    logger.warning("cannot bind UDP on %s: %s", a.address, exc)
                    continue
                self.core.add_socket(local, component, prefs[a.address])
        if not self._transports:
            raise OSError("no usable local address to gather candidates on")
        streams = []
        for server in self.config.turn_servers:
            if server.transport == "udp":
                continue
            family = [
                a.address for a in self._addresses if _same_family(a.address, server.address[0])
            ]
            if not family:
                continue
            for component in range(1, self.config.components + 1):
                key = (server, component)
                self.core.external_relay_started(key)
                # below the UDP relays of the same address (RFC 8445 §5.1.2.1 leaves it to us)
                pref = max(0, prefs[family[0]] - 128)
                streams.append((key, server, component, family[0], pref))
        self.core.start(self._loop.time())
        for stream in streams:
            self._spawn(self._stream_turn(*stream))
        self._pump()

    async def _stream_turn(
        self, key: object, server: TurnServer, component: int, local_ip: str, pref: int
    ) -> None:
        """Allocate over TCP/TLS (RFC 8656 §3.1) and report the relayed candidate."""
        try:
            alloc = await allocate_turn(
                server.address,
                server.username,
                server.password,
                transport="tls" if server.transport == "tls" else "tcp",
                ssl_context=server.ssl_context,
                server_hostname=server.server_hostname,
                local_addr=(local_ip, 0),
                software=self.config.software,
                timeout=self.config.turn_timeout,
            )
        except (TurnError, OSError, ssl.SSLError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            self.core.external_relay_done(key, local=(local_ip, 0), server=server, reason=reason)
            self._pump()
            return
        if self._closed:
            await alloc.close()
            return
        relayed = alloc.relayed_address
        self._stream_allocs[relayed] = alloc
        self._stream_components[relayed] = component
        alloc.on_data = lambda data, peer: self._stream_data(data, relayed, peer)
        alloc.on_event = lambda event: self._stream_event(event, relayed)
        assert alloc.local_address is not None
        self.core.external_relay_done(
            key,
            local=alloc.local_address,
            server=server,
            component=component,
            relayed=relayed,
            mapped=alloc.mapped_address,
            preference=pref,
        )
        self._pump()

    def _stream_data(self, data: bytes, relayed: Address, peer: Address) -> None:
        if not self._closed and self.on_relayed is not None:
            self.on_relayed(data, relayed, peer)

    def _stream_event(self, event: object, relayed: Address) -> None:
        if isinstance(event, AllocationExpired) and self.on_event is not None:
            self.on_event(RelayLost(relayed, event.reason))

    async def _open(self, a: LocalAddress, component: int = 1) -> Address:
        assert self._loop is not None
        host: Any = a.address
        family = a.family
        port = self._port + component - 1 if self._port else 0
        local_addr: tuple[Any, ...] = (host, port)
        if a.is_ipv6 and a.is_link_local and a.interface:
            local_addr = (host, port, 0, socket.if_nametoindex(a.interface))
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(local_addr)
        except OSError:
            sock.close()
            raise
        bound = sock.getsockname()
        local: Address = (str(bound[0]).split("%", 1)[0], int(bound[1]))
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Protocol(self, local), sock=sock
        )
        self._transports[local] = transport
        return local

    async def wait_complete(self, timeout: float | None = None) -> list[GatheredCandidate]:
        """Wait for :class:`GatheringComplete` (or :meth:`close`); returns the signalled
        candidates."""
        assert self._complete is not None, "start() first"
        await asyncio.wait_for(self._complete.wait(), timeout)
        return self.core.signalled_candidates

    def send(self, local: Address, data: bytes, addr: Address) -> None:
        """Send ``data`` to ``addr`` from the socket bound to ``local``."""
        transport = self._transports.get(local)
        if transport is None or transport.is_closing():
            logger.debug("no socket %s; datagram to %s dropped", local, addr)
            return
        transport.sendto(data, addr)

    def relay_send(self, relayed: Address, data: bytes, peer: Address) -> bool:
        """Send ``data`` to ``peer`` through the TURN allocation ``relayed``."""
        assert self._loop is not None
        stream = self._stream_allocs.get(relayed)
        if stream is not None:
            return stream.sendto(data, peer)
        ok = self.core.relay_send(relayed, data, peer, self._loop.time())
        self._pump()
        return ok

    def permit(self, relayed: Address, peer_ips: Sequence[str]) -> list[str]:
        """Create TURN permissions for ``peer_ips`` on the allocation ``relayed`` at once,
        without waiting for the answer (:meth:`CandidateGatherer.permit`; over TCP/TLS as
        well).  Returns the IPs asked for."""
        if self._loop is None or self._closed:
            return []
        stream = self._stream_allocs.get(relayed)
        if stream is not None:
            return stream.permit(peer_ips)
        asked = self.core.permit(relayed, peer_ips, self._loop.time())
        self._pump()
        return asked

    def permit_all(self, peer_ips: Sequence[str]) -> dict[Address, list[str]]:
        """:meth:`permit` on every relayed candidate we hold; returns what each asked for."""
        out: dict[Address, list[str]] = {}
        for gc in self.core.candidates:
            if gc.candidate.type is CandidateType.RELAYED:
                relayed = gc.candidate.transport_address
                out[relayed] = self.permit(relayed, peer_ips)
        return out

    def bind_channel(self, relayed: Address, peer: Address) -> None:
        """Bind a TURN channel to ``peer`` on ``relayed`` (ChannelData from then on)."""
        assert self._loop is not None
        stream = self._stream_allocs.get(relayed)
        if stream is not None:
            self._spawn(self._bind_stream_channel(stream, peer))
            return
        self.core.bind_channel(relayed, peer, self._loop.time())
        self._pump()

    @staticmethod
    async def _bind_stream_channel(alloc: TurnAllocation, peer: Address) -> None:
        try:
            await alloc.bind_channel(peer, timeout=10.0)
        except (TurnError, TimeoutError) as exc:
            logger.debug("ChannelBind to %s failed: %s", peer, exc)

    async def close(self, timeout: float = 2.0) -> None:
        """Release TURN allocations (waiting up to ``timeout``) and close the sockets."""
        if self._closed or self._loop is None:
            self._closed = True
            return
        self.core.close(self._loop.time())
        self._pump()
        deadline = self._loop.time() + timeout
        while self._loop.time() < deadline and any(
            t.client.state is TurnState.CLOSING for t in self.core._turns
        ):
            await asyncio.sleep(0.02)
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._stream_allocs:
            await asyncio.gather(
                *(a.close(timeout) for a in self._stream_allocs.values()), return_exceptions=True
            )
        for transport in self._transports.values():
            transport.close()
        if self._complete is not None:
            self._complete.set()  # wake wait_complete(): it returns what was gathered
        await asyncio.sleep(0)

    # -- driving the core -------------------------------------------------------------------

    def _input(self, data: bytes, local: Address, addr: Address) -> None:
        if self._closed or self._loop is None:
            return
        trace.debug("%s <- %s %d bytes", local, addr, len(data))
        if self.core.receive(data, local, addr, self._loop.time()):
            self._pump()
        elif self.on_datagram is not None:
            self.on_datagram(data, local, addr)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed or self._loop is None:
            return
        self.core.handle_timer(self._loop.time())
        self._pump()

    def _pump(self) -> None:
        assert self._loop is not None
        for data, local, addr in self.core.datagrams_to_send(self._loop.time()):
            self.send(local, data, addr)
        while (event := self.core.next_event()) is not None:
            if isinstance(event, GatheringComplete) and self._complete is not None:
                self._complete.set()
            if isinstance(event, RelayedDataReceived) and self.on_relayed is not None:
                self.on_relayed(event.data, event.relayed, event.peer)
            if self.on_event is not None:
                self.on_event(event)
        if self._closed:
            return
        when = self.core.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if when is None else self._loop.call_at(when, self._on_timer)
            self._timer_at = when


async def gather_candidates(
    config: GatherConfig | None = None,
    *,
    addresses: Iterable[LocalAddress | str] | None = None,
    bind: str | None = None,
    timeout: float | None = None,
) -> tuple[AsyncGatherer, list[GatheredCandidate]]:
    """Open sockets, gather until complete; returns the (still open) gatherer and the
    candidates.  Close the gatherer when done with it."""
    g = AsyncGatherer(config, addresses=None if addresses is None else list(addresses), bind=bind)
    await g.start()
    try:
        candidates = await g.wait_complete(timeout)
    except BaseException:
        await g.close()
        raise
    return g, candidates
