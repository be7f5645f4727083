"""ICE candidates: priority formula (RFC 8445 §5.1.2) and foundations (§5.1.1.3)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ice.candidate import (
    Candidate,
    CandidateType,
    TcpType,
    candidate_priority,
    compute_foundation,
)
from tests.helpers_ice import laptop_host, laptop_srflx


def test_priority_formula_recommended_values() -> None:
    # the values in RFC 8839 §5.1's example: host and srflx, component 1, single-homed
    assert candidate_priority(CandidateType.HOST, 1) == 2130706431
    assert candidate_priority(CandidateType.SERVER_REFLEXIVE, 1) == 1694498815
    assert candidate_priority(CandidateType.PEER_REFLEXIVE, 1) == (110 << 24) + (65535 << 8) + 255
    assert candidate_priority(CandidateType.RELAYED, 1) == 16777215
    assert candidate_priority(CandidateType.HOST, 2) == 2130706430
    assert candidate_priority(CandidateType.HOST, 1, 0) == (126 << 24) + 255
    assert candidate_priority(CandidateType.HOST, 1, type_preference=0) == (65535 << 8) + 255


def test_priority_ordering() -> None:
    prios = [candidate_priority(t, 1) for t in CandidateType]
    host, srflx, prflx, relay = prios
    assert host > prflx > srflx > relay
    assert candidate_priority(CandidateType.RELAYED, 1, 65535) < candidate_priority(
        CandidateType.SERVER_REFLEXIVE, 256, 0
    )


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {"component": 0},
        {"component": 257},
        {"local_preference": 65536},
        {"local_preference": -1},
        {"type_preference": 127},
    ],
)
def test_priority_rejects_out_of_range(kwargs: dict[str, int]) -> None:
    args = {"component": 1, "local_preference": 65535} | kwargs
    with pytest.raises(ValueError):
        candidate_priority(CandidateType.HOST, **args)


@given(
    st.sampled_from(list(CandidateType)),
    st.integers(1, 256),
    st.integers(0, 65535),
    st.integers(0, 126),
)
def test_priority_fields_decode_back(
    ctype: CandidateType, component: int, local: int, type_pref: int
) -> None:
    prio = candidate_priority(ctype, component, local, type_preference=type_pref)
    assert 0 <= prio <= 2**31 - 1
    cand = Candidate("1", component, "udp", prio, "192.0.2.1", 1, ctype)
    assert cand.type_preference == type_pref
    assert cand.local_preference == local
    assert 256 - (prio & 0xFF) == component


def test_foundation_same_for_same_type_base_server_transport() -> None:
    f = compute_foundation(CandidateType.SERVER_REFLEXIVE, "192.168.1.5", "udp", "198.51.100.1")
    assert f == compute_foundation(
        CandidateType.SERVER_REFLEXIVE, "192.168.1.5", "UDP", "198.51.100.1"
    )
    others = {
        compute_foundation(CandidateType.HOST, "192.168.1.5", "udp", "198.51.100.1"),
        compute_foundation(CandidateType.SERVER_REFLEXIVE, "192.168.1.6", "udp", "198.51.100.1"),
        compute_foundation(CandidateType.SERVER_REFLEXIVE, "192.168.1.5", "tcp", "198.51.100.1"),
        compute_foundation(CandidateType.SERVER_REFLEXIVE, "192.168.1.5", "udp", "198.51.100.2"),
        compute_foundation(CandidateType.SERVER_REFLEXIVE, "192.168.1.5", "udp"),
    }
    assert f not in others and len(others) == 5
    # IPv6 spellings of the same address give the same foundation
    assert compute_foundation(CandidateType.HOST, "2001:db8::1") == compute_foundation(
        CandidateType.HOST, "2001:0db8:0:0::1"
    )
    assert len(f) == 8 and all(c in "0123456789abcdef" for c in f)


def test_make_local_candidates() -> None:
    host = laptop_host()
    assert host.priority == 2130706431 and host.component == 1 and host.transport == "udp"
    assert host.foundation == compute_foundation(CandidateType.HOST, "192.168.1.5")
    srflx = laptop_srflx(component=2)
    assert srflx.related_address == "192.168.1.5" and srflx.related_port == 40000
    assert srflx.priority == candidate_priority(CandidateType.SERVER_REFLEXIVE, 2)
    assert srflx.foundation == compute_foundation(
        CandidateType.SERVER_REFLEXIVE, "192.168.1.5", "udp", "198.51.100.1"
    )
    tcp = Candidate.make(CandidateType.HOST, "::1", 9, transport="TCP", tcptype=TcpType.ACTIVE)
    assert tcp.transport == "tcp" and tcp.is_ipv6 and tcp.transport_address == ("::1", 9)


def test_transport_is_normalized_and_extensions_kept() -> None:
    c = Candidate(
        "a", 1, "UDP", 1, "192.0.2.1", 9, CandidateType.HOST, extensions=(("generation", "0"),)
    )
    assert c.transport == "udp"
    assert c.extension("generation") == "0" and c.extension("missing") is None
    assert dataclasses.replace(c, transport="Tcp").transport == "tcp"
    assert not c.is_ipv6
