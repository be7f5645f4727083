"""Example ICE candidates shared by the ICE unit tests: a laptop at 192.168.1.5 behind a NAT
whose public address 203.0.113.7 the STUN/TURN server 198.51.100.1 reflects, and a relayed
address on that server."""

from __future__ import annotations

from typing import Any

from ice.candidate import Candidate, CandidateType

SERVER = "198.51.100.1"


def laptop_host(**kw: Any) -> Candidate:
    """The host candidate 192.168.1.5:40000."""
    return Candidate.make(CandidateType.HOST, "192.168.1.5", 40000, **kw)


def laptop_srflx(**kw: Any) -> Candidate:
    """The server-reflexive candidate 203.0.113.7:50000 of ``laptop_host``."""
    related = ("192.168.1.5", 40000)
    return Candidate.make(
        CandidateType.SERVER_REFLEXIVE, "203.0.113.7", 50000, base_address=related[0],
        server_address=SERVER, related=related, **kw,
    )  # fmt: skip


def laptop_relay(**kw: Any) -> Candidate:
    """The relayed candidate 198.51.100.1:49170, allocated from ``laptop_srflx``."""
    related = ("203.0.113.7", 50000)
    return Candidate.make(
        CandidateType.RELAYED, SERVER, 49170, base_address=related[0],
        server_address=SERVER, related=related, **kw,
    )  # fmt: skip
