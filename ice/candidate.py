"""ICE candidates (RFC 8445 §5.1): the value type, priorities and foundations.

A :class:`Candidate` carries what an ``a=candidate`` line carries (RFC 8839 §5.1); reading and
writing that line is :mod:`ice.sdp`'s job.  Transport names are kept in lower case
(``"udp"``), whatever case the peer used (Asterisk writes ``UDP``).
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass, field, replace
from enum import StrEnum

__all__ = [
    "RELAY_PREFERENCE_BEHIND_SYMMETRIC_NAT",
    "TYPE_PREFERENCES",
    "Candidate",
    "CandidateType",
    "TcpType",
    "candidate_priority",
    "compute_foundation",
    "ranked_for_role",
    "relay_type_preference",
]


class CandidateType(StrEnum):
    """Candidate types (RFC 8445 §5.1.1, RFC 8839 §5.1 ``cand-type``)."""

    HOST = "host"
    SERVER_REFLEXIVE = "srflx"
    PEER_REFLEXIVE = "prflx"
    RELAYED = "relay"


class TcpType(StrEnum):
    """ICE-TCP candidate roles (RFC 6544 §4.5)."""

    ACTIVE = "active"
    PASSIVE = "passive"
    SIMULTANEOUS_OPEN = "so"


TYPE_PREFERENCES: dict[CandidateType, int] = {
    # RFC 8445 §5.1.2.2 recommended values
    CandidateType.HOST: 126,
    CandidateType.PEER_REFLEXIVE: 110,
    CandidateType.SERVER_REFLEXIVE: 100,
    CandidateType.RELAYED: 0,
}


RELAY_PREFERENCE_BEHIND_SYMMETRIC_NAT = 105
"""The type preference of our relayed candidates when our NAT's mapping is known to depend on
the destination (RFC 4787 §4.1 address- or address-and-port-dependent, a "symmetric" NAT).

RFC 8445 §5.1.2.2 only *recommends* host 126, peer-reflexive 110, server-reflexive 100 and
relayed 0; it asks that host rank highest and that the value reflect how likely a candidate
is to work.  Behind such a NAT our server-reflexive candidate is a mapping towards the STUN
server only: a peer behind another NAT reaches it never (its packets come from another
address the NAT has no mapping for), so ranking it above the relay just costs a Ta and a
failed check before the relayed pairs are tried.  105 keeps our candidates in the order
host > peer-reflexive > relayed > server-reflexive: a direct path learnt during the checks
(a peer-reflexive candidate, e.g. towards a public or endpoint-independent peer) still wins
over the relay, host pairs (same LAN) are tried first, and the peer's own ranking is
untouched (pair priorities, §6.1.2.3, combine both sides' values).  The gatherer only uses
this value when the mapping was detected (:mod:`ice.gather`); an unknown mapping keeps 0.

It pays off when we are the *controlled* agent: the controlling peer's list then has "its host
-> our relay" right after host/host (its NAT, whatever kind, reaches the relay, whose
permission for the peer's IP exists from the start), and that check decides the nomination.
As the controlling agent it would rank "our relay -> the peer's host" pairs high too, which
a public relay never gets through to a private address, and the nomination would wait for
them: :func:`ranked_for_role` puts the recommended 0 back then (sym/sym still gains: the
controlled side's relay is raised)."""


def relay_type_preference(endpoint_dependent_mapping: bool) -> int:
    """The type preference for a relayed candidate: :data:`RELAY_PREFERENCE_BEHIND_SYMMETRIC_NAT`
    when our mapping is known to be endpoint-dependent, else the recommended 0 (§5.1.2.2)."""
    if endpoint_dependent_mapping:
        return RELAY_PREFERENCE_BEHIND_SYMMETRIC_NAT
    return TYPE_PREFERENCES[CandidateType.RELAYED]


def ranked_for_role(candidate: Candidate, controlling: bool) -> Candidate:
    """``candidate`` as the agent in that role should use and signal it: a relayed candidate
    raised to :data:`RELAY_PREFERENCE_BEHIND_SYMMETRIC_NAT` goes back to the recommended
    relayed preference when ``controlling`` (see there); anything else is unchanged."""
    if (
        not controlling
        or candidate.type is not CandidateType.RELAYED
        or candidate.type_preference != RELAY_PREFERENCE_BEHIND_SYMMETRIC_NAT
    ):
        return candidate
    priority = candidate_priority(
        CandidateType.RELAYED,
        candidate.component,
        candidate.local_preference,
        type_preference=TYPE_PREFERENCES[CandidateType.RELAYED],
    )
    return replace(candidate, priority=priority)


def candidate_priority(
    candidate_type: CandidateType,
    component: int,
    local_preference: int = 65535,
    *,
    type_preference: int | None = None,
) -> int:
    """``2^24 * type preference + 2^8 * local preference + (256 - component)`` (§5.1.2.1).

    ``local_preference`` is 65535 for a single-homed agent (§5.1.2.2); a multihomed or
    dual-stack agent gives each interface its own value (RFC 8421).
    """
    if type_preference is None:
        type_preference = TYPE_PREFERENCES[candidate_type]
    if not 0 <= type_preference <= 126:
        raise ValueError("type preference must be 0..126")
    if not 0 <= local_preference <= 65535:
        raise ValueError("local preference must be 0..65535")
    if not 1 <= component <= 256:
        raise ValueError("component ID must be 1..256")
    return (type_preference << 24) + (local_preference << 8) + (256 - component)


def compute_foundation(
    candidate_type: CandidateType,
    base_address: str,
    transport: str = "udp",
    server_address: str | None = None,
) -> str:
    """A foundation equal for, and only for, candidates that share type, base IP address,
    STUN/TURN server IP address and transport (RFC 8445 §5.1.1.3).

    The result is 8 hex digits (ice-chars, RFC 8839 §5.1), stable across runs.
    """
    parts = [candidate_type.value, _normalize_ip(base_address), transport.lower()]
    parts.append(_normalize_ip(server_address) if server_address else "")
    return f"{zlib.crc32('|'.join(parts).encode()):08x}"


def _normalize_ip(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return address.lower()


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ICE candidate as signalled in SDP (RFC 8839 §5.1).

    ``address`` is an IP address or an FQDN (e.g. an mDNS ``.local`` name);
    ``related_address``/``related_port`` are ``raddr``/``rport``; ``extensions`` keeps any
    further name/value pairs (``generation``, ``network-id`` ...) in order.
    """

    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    type: CandidateType
    related_address: str | None = None
    related_port: int | None = None
    tcptype: TcpType | None = None
    extensions: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.transport != self.transport.lower():
            object.__setattr__(self, "transport", self.transport.lower())

    @property
    def transport_address(self) -> tuple[str, int]:
        """``(address, port)``."""
        return self.address, self.port

    @property
    def is_ipv6(self) -> bool:
        """True for an IPv6 literal address."""
        return ":" in self.address

    @property
    def type_preference(self) -> int:
        """The type preference encoded in the priority (its top byte)."""
        return self.priority >> 24

    @property
    def local_preference(self) -> int:
        """The local preference encoded in the priority (its middle two bytes)."""
        return (self.priority >> 8) & 0xFFFF

    def extension(self, name: str) -> str | None:
        """The value of an extension attribute (first occurrence), or None."""
        for key, value in self.extensions:
            if key == name:
                return value
        return None

    @classmethod
    def make(
        cls,
        candidate_type: CandidateType,
        address: str,
        port: int,
        *,
        component: int = 1,
        transport: str = "udp",
        base_address: str | None = None,
        server_address: str | None = None,
        related: tuple[str, int] | None = None,
        local_preference: int = 65535,
        tcptype: TcpType | None = None,
        type_preference: int | None = None,
    ) -> Candidate:
        """A local candidate with RFC 8445 priority and foundation computed.

        ``base_address`` defaults to ``address`` (host candidates are their own base);
        ``type_preference`` defaults to the recommended one for the type (§5.1.2.2).
        """
        base = address if base_address is None else base_address
        return cls(
            foundation=compute_foundation(candidate_type, base, transport, server_address),
            component=component,
            transport=transport,
            priority=candidate_priority(
                candidate_type, component, local_preference, type_preference=type_preference
            ),
            address=address,
            port=port,
            type=candidate_type,
            related_address=None if related is None else related[0],
            related_port=None if related is None else related[1],
            tcptype=tcptype,
        )
