"""Cross-check the STUN codec against aioice's (an independent implementation)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ice import stun
from ice.stun import StunClass, StunMessage, StunMethod, parse_message

astun = pytest.importorskip("aioice.stun", reason="aioice (a dev dependency) is not installed")

KEY = b"9uB6tLdWpMBW0AbUj3e1Vzj6"


def same(a: tuple[str, int] | None, b: tuple[str, int]) -> bool:
    """Equal transport addresses (IPv4-mapped IPv6 may be spelt either way)."""
    return a is not None and (ipaddress.ip_address(a[0]), a[1]) == (
        ipaddress.ip_address(b[0]),
        b[1],
    )


addresses = st.tuples(
    st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str)),
    st.integers(0, 65535),
)


@given(
    st.binary(min_size=12, max_size=12),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:+/", min_size=1, max_size=40),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.booleans(),
)
def test_aioice_accepts_our_checks(
    tid: bytes, username: str, priority: int, tiebreaker: int, use_candidate: bool
) -> None:
    msg = StunMessage(StunMethod.BINDING, StunClass.REQUEST, tid)
    msg.add(stun.USERNAME, username).add(stun.PRIORITY, priority)
    msg.add(stun.ICE_CONTROLLING, tiebreaker)
    if use_candidate:
        msg.add(stun.USE_CANDIDATE, True)
    theirs = astun.parse_message(msg.encode(KEY, fingerprint=True))
    assert theirs.transaction_id == tid
    assert theirs.attributes["USERNAME"] == username
    assert theirs.attributes["PRIORITY"] == priority
    assert theirs.attributes["ICE-CONTROLLING"] == tiebreaker
    assert ("USE-CANDIDATE" in theirs.attributes) == use_candidate
    assert theirs.check_message_integrity(KEY)


@given(st.binary(min_size=12, max_size=12), addresses)
def test_we_accept_aioice_responses(tid: bytes, address: tuple[str, int]) -> None:
    theirs = astun.Message(astun.Method.BINDING, astun.Class.RESPONSE, tid)
    theirs.attributes["XOR-MAPPED-ADDRESS"] = address
    theirs.attributes["MAPPED-ADDRESS"] = address
    theirs.add_message_integrity(KEY)
    ours = parse_message(bytes(theirs))
    assert ours.cls == StunClass.SUCCESS and ours.method == StunMethod.BINDING
    assert ours.transaction_id == tid
    assert same(ours.get(stun.XOR_MAPPED_ADDRESS), address)
    assert same(ours.get(stun.MAPPED_ADDRESS), address)
    assert ours.has_fingerprint and ours.check_integrity(KEY)


@given(st.binary(min_size=12, max_size=12), addresses, st.integers(300, 699))
def test_turn_messages_both_ways(tid: bytes, peer: tuple[str, int], code: int) -> None:
    ours = StunMessage(StunMethod.ALLOCATE, StunClass.ERROR, tid)
    ours.add(stun.ERROR_CODE, stun.ErrorCode(code, "Reason")).add(stun.REALM, "example.org")
    ours.add(stun.NONCE, "abc").add(stun.XOR_PEER_ADDRESS, peer)
    theirs = astun.parse_message(ours.encode(fingerprint=True))
    assert theirs.attributes["ERROR-CODE"] == (code, "Reason")
    assert same(theirs.attributes["XOR-PEER-ADDRESS"], peer)
    back = parse_message(bytes(theirs))
    assert back.error_code == stun.ErrorCode(code, "Reason")
    assert same(back.get(stun.XOR_PEER_ADDRESS), peer)
    assert back.get(stun.REALM) == "example.org"
