"""ICE (RFC 8445) with STUN (RFC 8489) and TURN (RFC 8656) clients, and RFC 8839 SDP attributes.

Imports neither ``sip`` nor ``media``: usable on its own by anyone who needs ICE in Python.

The public API, by layer:

- STUN: :class:`StunMessage` / :func:`parse_stun` (codec with integrity and fingerprint),
  :class:`StunClientTransaction` (RFC 8489 §6.2.1 retransmissions);
- TURN: :class:`TurnClient` (sans-I/O allocation, permissions, channels) and
  :func:`allocate_turn` (asyncio);
- candidates and SDP: :class:`Candidate`, :func:`parse_candidate` / :func:`format_candidate`,
  :class:`IceParameters`, :func:`parse_ice_attributes` / :func:`format_ice_attributes`;
- the agent: :class:`Agent` (sans-I/O RFC 8445 full agent: check lists, nomination, consent),
  gathering (:class:`CandidateGatherer`, :class:`GatherConfig`, :class:`TurnServer`,
  :class:`CandidatePool` of sets gathered ahead of calls), and the
  asyncio shell :class:`IceConnection` whose :class:`ComponentTransport` hides whether the
  selected pair is direct or relayed;
- NAT behaviour discovery (RFC 5780): :func:`discover_nat`, :class:`NatBehavior`;
- local address changes (Linux rtnetlink): :class:`AddressMonitor` reporting
  :class:`AddressChange` batches (a :class:`CandidatePool` given one gathers again).

Parsers raise only this package's errors (``StunParseError``, ``IceSdpError``,
``NetlinkParseError``), ``ValueError`` subclasses.
"""

from ice.agent import (
    Agent,
    AgentEvent,
    AgentState,
    Completed,
    ConsentLost,
    Failed,
    PairNominated,
    RoleChanged,
)
from ice.aio import ComponentTransport, IceConnection, IceError
from ice.candidate import Candidate, CandidateType, candidate_priority
from ice.gather import (
    CandidateGatherer,
    GatherConfig,
    MappingDetected,
    TurnServer,
    gather_candidates,
)
from ice.interfaces import local_addresses
from ice.nat import FilteringBehavior, MappingBehavior, MappingCache, NatBehavior, discover_nat
from ice.netmonitor import AddressChange, AddressMonitor, NetlinkParseError
from ice.pool import CandidatePool
from ice.sdp import (
    IceAttributes,
    IceParameters,
    IceSdpError,
    choose_default_candidate,
    format_candidate,
    format_ice_attributes,
    parse_candidate,
    parse_ice_attributes,
)
from ice.stun import StunMessage, StunParseError, is_stun
from ice.stun import parse_message as parse_stun
from ice.stun_transaction import StunClientTransaction
from ice.turn import TurnClient
from ice.turn_aio import TurnAllocation, TurnError, allocate_turn

__all__ = [
    "AddressChange",
    "AddressMonitor",
    "Agent",
    "AgentEvent",
    "AgentState",
    "Candidate",
    "CandidateGatherer",
    "CandidatePool",
    "CandidateType",
    "Completed",
    "ComponentTransport",
    "ConsentLost",
    "Failed",
    "FilteringBehavior",
    "GatherConfig",
    "IceAttributes",
    "IceConnection",
    "IceError",
    "IceParameters",
    "IceSdpError",
    "MappingBehavior",
    "MappingCache",
    "MappingDetected",
    "NatBehavior",
    "NetlinkParseError",
    "PairNominated",
    "RoleChanged",
    "StunClientTransaction",
    "StunMessage",
    "StunParseError",
    "TurnAllocation",
    "TurnClient",
    "TurnError",
    "TurnServer",
    "allocate_turn",
    "candidate_priority",
    "choose_default_candidate",
    "discover_nat",
    "format_candidate",
    "format_ice_attributes",
    "gather_candidates",
    "is_stun",
    "local_addresses",
    "parse_candidate",
    "parse_ice_attributes",
    "parse_stun",
]
