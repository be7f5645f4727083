"""Property tests for the STUN codec: only StunParseError escapes; generated messages round-trip."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ice import stun
from ice.stun import StunClass, StunMessage, StunParseError, parse_message

# ------------------------------------------------------------------------------------------
# Strategies
# ------------------------------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a)))
addresses = st.tuples(st.one_of(ipv4, ipv6), st.integers(0, 65535))
u32 = st.integers(0, 2**32 - 1)
short_text = st.text(max_size=40)

ATTRIBUTE_VALUES: list[tuple[stun.Attr[Any], st.SearchStrategy[Any]]] = [
    (stun.MAPPED_ADDRESS, addresses),
    (stun.XOR_MAPPED_ADDRESS, addresses),
    (stun.XOR_PEER_ADDRESS, addresses),
    (stun.XOR_RELAYED_ADDRESS, addresses),
    (stun.ALTERNATE_SERVER, addresses),
    (stun.RESPONSE_ORIGIN, addresses),
    (stun.OTHER_ADDRESS, addresses),
    (stun.USERNAME, short_text),
    (stun.REALM, short_text),
    (stun.NONCE, short_text),
    (stun.SOFTWARE, short_text),
    (stun.ALTERNATE_DOMAIN, short_text),
    (stun.USERHASH, st.binary(min_size=32, max_size=32)),
    (
        stun.ERROR_CODE,
        st.builds(stun.ErrorCode, st.integers(300, 699), st.text(max_size=20)),
    ),
    (stun.UNKNOWN_ATTRIBUTES, st.lists(st.integers(0, 0xFFFF), max_size=5).map(tuple)),
    (
        stun.PASSWORD_ALGORITHMS,
        st.lists(
            st.builds(stun.PasswordAlgorithmParams, st.integers(0, 0xFFFF), st.binary(max_size=7)),
            max_size=3,
        ).map(tuple),
    ),
    (
        stun.PASSWORD_ALGORITHM,
        st.builds(stun.PasswordAlgorithmParams, st.integers(0, 0xFFFF), st.binary(max_size=7)),
    ),
    (stun.PRIORITY, u32),
    (stun.USE_CANDIDATE, st.just(True)),
    (stun.DONT_FRAGMENT, st.just(True)),
    (stun.ICE_CONTROLLED, st.integers(0, 2**64 - 1)),
    (stun.ICE_CONTROLLING, st.integers(0, 2**64 - 1)),
    (stun.LIFETIME, u32),
    (stun.DATA, st.binary(max_size=64)),
    (stun.PADDING, st.binary(max_size=16)),
    (stun.CHANNEL_NUMBER, st.integers(0x4000, 0x4FFF)),
    (stun.REQUESTED_TRANSPORT, st.sampled_from([6, 17])),
    (stun.REQUESTED_ADDRESS_FAMILY, st.sampled_from([1, 2])),
    (stun.ADDITIONAL_ADDRESS_FAMILY, st.sampled_from([1, 2])),
    (stun.EVEN_PORT, st.booleans()),
    (stun.RESERVATION_TOKEN, st.binary(min_size=8, max_size=8)),
    (stun.CHANGE_REQUEST, st.builds(stun.ChangeRequest, st.booleans(), st.booleans())),
    (stun.RESPONSE_PORT, st.integers(0, 65535)),
    (stun.CONNECTION_ID, u32),
    (
        stun.ADDRESS_ERROR_CODE,
        st.builds(
            stun.AddressErrorCode,
            st.sampled_from([1, 2]),
            st.integers(300, 699),
            st.text(max_size=20),
        ),
    ),
    (
        stun.ICMP,
        st.builds(stun.IcmpInfo, st.integers(0, 255), st.integers(0, 255), u32),
    ),
]

typed_attribute = st.sampled_from(ATTRIBUTE_VALUES).flatmap(
    lambda pair: st.tuples(st.just(pair[0]), pair[1])
)
# unknown attributes: any type code outside the integrity/fingerprint ones
raw_attribute = st.tuples(
    st.integers(0, 0xFFFF).filter(lambda t: t not in (0x0008, 0x001C, 0x8028)),
    st.binary(max_size=24),
)


@st.composite
def messages(draw: st.DrawFn) -> StunMessage:
    msg = StunMessage(
        draw(st.integers(0, 0xFFF)),
        draw(st.sampled_from(list(StunClass))),
        draw(st.binary(min_size=12, max_size=12)),
    )
    for item in draw(st.lists(st.one_of(typed_attribute, raw_attribute), max_size=8)):
        if isinstance(item[0], stun.Attr):
            msg.add(item[0], item[1])
        else:
            msg.add_raw(item[0], item[1])
    return msg


def _exercise(msg: StunMessage) -> None:
    """Touch everything a consumer might call on a parsed message."""
    for attr in stun.ATTRIBUTES_BY_TYPE.values():
        with contextlib.suppress(StunParseError):
            msg.get(attr)
    msg.unknown_comprehension_required()
    msg.check_integrity(b"key")
    msg.check_integrity_sha1(b"key")
    msg.check_integrity_sha256(b"key")
    repr(msg)
    _ = msg.error_code


# ------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------


@given(messages())
def test_generated_messages_round_trip(msg: StunMessage) -> None:
    data = msg.encode()
    parsed = parse_message(data)
    assert parsed == msg
    assert parsed.encode() == data
    for attr_type, _ in msg.attributes:
        attr = stun.ATTRIBUTES_BY_TYPE.get(attr_type)
        if attr is None:
            continue
        try:
            expected = msg.get_all(attr)
        except StunParseError:  # a raw attribute with a known type and a nonsense value
            continue
        assert parsed.get_all(attr) == expected


@given(messages(), st.binary(min_size=1, max_size=40), st.booleans(), st.booleans())
def test_integrity_and_fingerprint_round_trip(
    msg: StunMessage, key: bytes, sha256: bool, fingerprint: bool
) -> None:
    data = msg.encode(key, sha256=sha256, fingerprint=fingerprint)
    parsed = parse_message(data)
    assert parsed.check_integrity(key)
    assert parsed.check_integrity_sha1(key)
    assert parsed.check_integrity_sha256(key) == sha256
    assert not parsed.check_integrity(key + b"x")
    assert parsed.has_fingerprint == fingerprint
    assert [a for a in parsed.attributes if a[0] not in (0x0008, 0x001C, 0x8028)] == (
        msg.attributes
    )


def _parse_exercise_and_reencode(data: bytes) -> None:
    """Parse with and without the FINGERPRINT check: only StunParseError may escape, and
    whatever parsed re-encodes into something that parses to the same attributes."""
    for check in (True, False):
        try:
            msg = parse_message(data, check_fingerprint=check)
        except StunParseError:
            continue
        _exercise(msg)
        assert parse_message(msg.encode(), check_fingerprint=False) == msg


@given(st.binary(max_size=200))
def test_random_bytes_only_raise_parse_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except StunParseError:
        return
    _exercise(msg)


@st.composite
def stun_like_bytes(draw: st.DrawFn) -> bytes:
    """A plausible header plus random TLVs, with a consistent length field most of the time."""
    body = b"".join(
        t.to_bytes(2, "big") + len(v).to_bytes(2, "big") + v + bytes(-len(v) & 3)
        for t, v in draw(
            st.lists(
                st.tuples(
                    st.one_of(
                        st.sampled_from(sorted(stun.ATTRIBUTES_BY_TYPE)), st.integers(0, 0xFFFF)
                    ),
                    st.binary(max_size=36),
                ),
                max_size=6,
            )
        )
    )
    mtype = draw(st.integers(0, 0x3FFF))
    head = mtype.to_bytes(2, "big") + len(body).to_bytes(2, "big") + b"\x21\x12\xa4\x42"
    return head + draw(st.binary(min_size=12, max_size=12)) + body


@given(stun_like_bytes())
def test_structured_garbage_only_raises_parse_error(data: bytes) -> None:
    _parse_exercise_and_reencode(data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    messages(),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 8),
    st.booleans(),
)
def test_mutated_valid_messages_only_raise_parse_error(
    msg: StunMessage, flips: list[tuple[int, int]], truncate: int, keep_length: bool
) -> None:
    data = bytearray(msg.encode(b"key", fingerprint=True))
    for index, value in flips:
        data[index % len(data)] = value
    if truncate:
        del data[-truncate:]
        if keep_length and len(data) >= 4:
            data[2:4] = max(0, len(data) - 20).to_bytes(2, "big")
    _parse_exercise_and_reencode(bytes(data))


@given(st.binary(max_size=64))
def test_channel_data_and_demux_never_crash(data: bytes) -> None:
    kind = stun.classify_packet(data)
    assert (kind is stun.PacketKind.STUN) == stun.is_stun(data)
    assert (kind is stun.PacketKind.CHANNEL_DATA) == stun.is_channel_data(data)
    try:
        cd = stun.parse_channel_data(data)
    except StunParseError:
        return
    assert 0x4000 <= cd.channel <= 0x4FFF and len(cd.data) <= len(data) - 4
    assert stun.parse_channel_data(stun.encode_channel_data(cd.channel, cd.data)) == cd


@given(st.integers(0x4000, 0x4FFF), st.binary(max_size=300), st.booleans())
def test_channel_data_round_trip(channel: int, payload: bytes, pad: bool) -> None:
    wire = stun.encode_channel_data(channel, payload, pad=pad)
    assert stun.is_channel_data(wire)
    assert stun.parse_channel_data(wire) == stun.ChannelData(channel, payload)
    assert not pad or len(wire) % 4 == 0


@given(st.binary(max_size=100), st.binary(max_size=300), st.sampled_from(["sha1", "sha256"]))
def test_cached_hmac_equals_stdlib(key: bytes, data: bytes, algorithm: str) -> None:
    assert stun.hmac_digest(key, data, algorithm) == hmac.digest(key, data, algorithm)
    assert stun.hmac_digest(key, data, algorithm) == hmac.digest(key, data, algorithm)  # cached
