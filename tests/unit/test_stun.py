"""STUN codec: RFC 5769 and RFC 8489 test vectors, attributes, integrity, demultiplexing."""

from __future__ import annotations

import hashlib
import hmac
import zlib

import pytest

from ice import stun
from ice.credentials import long_term_key, saslprep, short_term_key, userhash
from ice.stun import (
    StunClass,
    StunMessage,
    StunMethod,
    StunParseError,
    parse_message,
)

# ------------------------------------------------------------------------------------------
# RFC 5769 test vectors (hex transcribed from the RFC's figures)
# ------------------------------------------------------------------------------------------

RFC5769_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
RFC5769_TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

# §2.1 Sample Request
SAMPLE_REQUEST = bytes.fromhex(
    "00010058"
    "2112a442"
    "b7e7a701bc34d686fa87dfae"
    "80220010" + b"STUN test client".hex() + "00240004"
    "6e0001ff"
    "80290008"
    "932ff9b151263b36"
    "00060009"
    "6576746a3a68367659202020"
    "00080014"
    "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004"
    "e57a3bcf"
)

# §2.2 Sample IPv4 Response
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c"
    "2112a442"
    "b7e7a701bc34d686fa87dfae"
    "8022000b"
    "7465737420766563746f7220"
    "00200008"
    "0001a147e112a643"
    "00080014"
    "2b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004"
    "c07d4c96"
)

# §2.3 Sample IPv6 Response
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "01010048"
    "2112a442"
    "b7e7a701bc34d686fa87dfae"
    "8022000b"
    "7465737420766563746f7220"
    "00200014"
    "0002a147"
    "0113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014"
    "a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004"
    "c8fb0b4c"
)

# §2.4 Sample Request with Long-Term Authentication
LONG_TERM_TID = bytes.fromhex("78ad3433c6ad72c029da412e")
LONG_TERM_USERNAME = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
LONG_TERM_PASSWORD = "The\u00adM\u00aatr\u2168"
SAMPLE_LONG_TERM_REQUEST = bytes.fromhex(
    "00010060"
    "2112a442"
    "78ad3433c6ad72c029da412e"
    "00060012"
    "e3839ee38388e383aae38383e382afe382b90000"
    "0015001c" + b"f//499k954d6OL34oL9FSTvy64sA".hex() + "0014000b"
    "6578616d706c652e6f726700"
    "00080014"
    "f67024656dd64a3e02b8e0712e85c9a28ca89666"
)

# RFC 8489 Appendix B.1 with the verified erratum 6268 (adds PASSWORD-ALGORITHM SHA-256)
RFC8489_B1 = bytes.fromhex(
    "00010090"
    "2112a442"
    "78ad3433c6ad72c029da412e"
    "001e0020"
    "4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704"
    "00150029" + b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA".hex() + "000000"
    "0014000b"
    "6578616d706c652e6f726700"
    "001d0004"
    "00020000"
    "001c0020"
    "b5c7bf005b6c52a21c51c5e892f81924136296cb927c43149309278cc6518e65"
)


def test_sample_request_parses_and_verifies() -> None:
    msg = parse_message(SAMPLE_REQUEST)
    assert msg.method == StunMethod.BINDING
    assert msg.cls == StunClass.REQUEST
    assert msg.transaction_id == RFC5769_TID
    assert msg.get(stun.SOFTWARE) == "STUN test client"
    assert msg.get(stun.PRIORITY) == 0x6E0001FF
    assert msg.get(stun.ICE_CONTROLLED) == 0x932FF9B151263B36
    assert msg.get(stun.USERNAME) == "evtj:h6vY"
    assert msg.get(stun.FINGERPRINT) == 0xE57A3BCF
    assert msg.has_integrity and msg.has_fingerprint
    assert msg.check_integrity(short_term_key(RFC5769_PASSWORD))
    assert not msg.check_integrity(short_term_key(RFC5769_PASSWORD + "x"))
    assert msg.unknown_comprehension_required() == []


def test_sample_request_encodes_byte_for_byte() -> None:
    msg = StunMessage(StunMethod.BINDING, StunClass.REQUEST, RFC5769_TID)
    msg.add(stun.SOFTWARE, "STUN test client")
    msg.add(stun.PRIORITY, 0x6E0001FF)
    msg.add(stun.ICE_CONTROLLED, 0x932FF9B151263B36)
    msg.add(stun.USERNAME, "evtj:h6vY")
    key = short_term_key(RFC5769_PASSWORD)
    # The RFC pads with spaces (0x20); our default of zero padding changes the HMAC.
    assert msg.encode(key, fingerprint=True, pad_byte=0x20) == SAMPLE_REQUEST
    zero_padded = msg.encode(key, fingerprint=True)
    assert zero_padded != SAMPLE_REQUEST
    assert parse_message(zero_padded).check_integrity(key)


def test_sample_ipv4_response() -> None:
    msg = parse_message(SAMPLE_IPV4_RESPONSE)
    assert msg.cls == StunClass.SUCCESS and msg.method == StunMethod.BINDING
    assert msg.get(stun.SOFTWARE) == "test vector"
    assert msg.get(stun.XOR_MAPPED_ADDRESS) == ("192.0.2.1", 32853)
    assert msg.check_integrity(short_term_key(RFC5769_PASSWORD))
    rebuilt = StunMessage(StunMethod.BINDING, StunClass.SUCCESS, RFC5769_TID)
    rebuilt.add(stun.SOFTWARE, "test vector").add(stun.XOR_MAPPED_ADDRESS, ("192.0.2.1", 32853))
    encoded = rebuilt.encode(short_term_key(RFC5769_PASSWORD), fingerprint=True, pad_byte=0x20)
    assert encoded == SAMPLE_IPV4_RESPONSE


def test_sample_ipv6_response() -> None:
    msg = parse_message(SAMPLE_IPV6_RESPONSE)
    assert msg.get(stun.XOR_MAPPED_ADDRESS) == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert msg.check_integrity(short_term_key(RFC5769_PASSWORD))
    rebuilt = StunMessage(StunMethod.BINDING, StunClass.SUCCESS, RFC5769_TID)
    rebuilt.add(stun.SOFTWARE, "test vector")
    rebuilt.add(stun.XOR_MAPPED_ADDRESS, ("2001:db8:1234:5678:11:2233:4455:6677", 32853))
    encoded = rebuilt.encode(short_term_key(RFC5769_PASSWORD), fingerprint=True, pad_byte=0x20)
    assert encoded == SAMPLE_IPV6_RESPONSE


def test_sample_long_term_request() -> None:
    assert saslprep(LONG_TERM_PASSWORD) == "TheMatrIX"
    msg = parse_message(SAMPLE_LONG_TERM_REQUEST)
    assert msg.transaction_id == LONG_TERM_TID
    assert msg.get(stun.USERNAME) == LONG_TERM_USERNAME
    assert msg.get(stun.NONCE) == "f//499k954d6OL34oL9FSTvy64sA"
    assert msg.get(stun.REALM) == "example.org"
    assert not msg.has_fingerprint
    key = long_term_key(LONG_TERM_USERNAME, "example.org", LONG_TERM_PASSWORD, prep=saslprep)
    assert key == hashlib.md5(f"{LONG_TERM_USERNAME}:example.org:TheMatrIX".encode()).digest()
    assert msg.check_integrity(key)
    assert not msg.check_integrity(long_term_key(LONG_TERM_USERNAME, "example.org", "TheMatrix"))
    rebuilt = StunMessage(StunMethod.BINDING, StunClass.REQUEST, LONG_TERM_TID)
    rebuilt.add(stun.USERNAME, LONG_TERM_USERNAME)
    rebuilt.add(stun.NONCE, "f//499k954d6OL34oL9FSTvy64sA")
    rebuilt.add(stun.REALM, "example.org")
    assert rebuilt.encode(key) == SAMPLE_LONG_TERM_REQUEST


def test_rfc8489_b1_sha256_with_userhash() -> None:
    uh = userhash(LONG_TERM_USERNAME, "example.org")
    msg = parse_message(RFC8489_B1)
    assert msg.get(stun.USERHASH) == uh
    assert msg.get(stun.NONCE) == "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"
    assert msg.get(stun.PASSWORD_ALGORITHM) == stun.PasswordAlgorithmParams(
        stun.PasswordAlgorithm.SHA256
    )
    # The vector's password is given as "TheMatrIX" after preparation; OpaqueString (unlike
    # SASLprep) rejects the unprepared form's soft hyphen, so the prepared form is used here.
    key = long_term_key(
        LONG_TERM_USERNAME, "example.org", "TheMatrIX", stun.PasswordAlgorithm.SHA256
    )
    assert len(key) == 32
    assert msg.check_integrity(key)
    assert msg.check_integrity_sha256(key)
    assert not msg.check_integrity_sha1(key)  # no MESSAGE-INTEGRITY in the message
    rebuilt = StunMessage(StunMethod.BINDING, StunClass.REQUEST, LONG_TERM_TID)
    rebuilt.add(stun.USERHASH, uh)
    rebuilt.add(stun.NONCE, "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA")
    rebuilt.add(stun.REALM, "example.org")
    rebuilt.add(
        stun.PASSWORD_ALGORITHM, stun.PasswordAlgorithmParams(stun.PasswordAlgorithm.SHA256)
    )
    assert rebuilt.encode(key, sha1=False, sha256=True) == RFC8489_B1


def test_vectors_reencode_identically_from_parsed_messages() -> None:
    # a parsed message keeps its raw attributes, integrity and fingerprint included
    for vector in (SAMPLE_LONG_TERM_REQUEST, RFC8489_B1):
        assert parse_message(vector).encode() == vector
    assert parse_message(SAMPLE_REQUEST).encode(pad_byte=0x20) == SAMPLE_REQUEST


# ------------------------------------------------------------------------------------------
# Header and framing
# ------------------------------------------------------------------------------------------


def test_message_type_interleaving() -> None:
    # RFC 8489 §5: Binding request 0x0001, success 0x0101, error 0x0111, indication 0x0011
    assert stun.encode_message_type(StunMethod.BINDING, StunClass.REQUEST) == 0x0001
    assert stun.encode_message_type(StunMethod.BINDING, StunClass.SUCCESS) == 0x0101
    assert stun.encode_message_type(StunMethod.BINDING, StunClass.ERROR) == 0x0111
    assert stun.encode_message_type(StunMethod.BINDING, StunClass.INDICATION) == 0x0011
    # TURN: Allocate error 0x0113, Send indication 0x0016, Data indication 0x0017
    assert stun.encode_message_type(StunMethod.ALLOCATE, StunClass.ERROR) == 0x0113
    assert stun.encode_message_type(StunMethod.SEND, StunClass.INDICATION) == 0x0016
    assert stun.encode_message_type(StunMethod.DATA, StunClass.INDICATION) == 0x0017
    assert stun.encode_message_type(StunMethod.CHANNEL_BIND, StunClass.SUCCESS) == 0x0109
    # methods with bits above the first nibble are spread around the class bits
    assert stun.encode_message_type(0xFFF, StunClass.REQUEST) == 0x3EEF
    assert stun.encode_message_type(0x010, StunClass.REQUEST) == 0x0020
    with pytest.raises(ValueError):
        stun.encode_message_type(0x1000, StunClass.REQUEST)


@pytest.mark.parametrize("method", [0x000, 0x001, 0x00F, 0x010, 0x07F, 0x080, 0xABC, 0xFFF])
@pytest.mark.parametrize("cls", list(StunClass))
def test_every_method_and_class_round_trips(method: int, cls: StunClass) -> None:
    msg = StunMessage(method, cls)
    parsed = parse_message(msg.encode())
    assert parsed.method == method and parsed.cls == cls
    assert parsed == msg


def test_known_methods_are_enum_members_unknown_stay_int() -> None:
    assert isinstance(parse_message(StunMessage(3, StunClass.REQUEST).encode()).method, StunMethod)
    unknown = parse_message(StunMessage(0x123, StunClass.REQUEST).encode()).method
    assert unknown == 0x123 and not isinstance(unknown, StunMethod)


def test_header_fields() -> None:
    msg = StunMessage(StunMethod.BINDING, StunClass.REQUEST, bytes(range(12)))
    data = msg.encode()
    assert data == bytes.fromhex("000100002112a442") + bytes(range(12))
    assert stun.stun_frame_length(data) == 20
    assert stun.stun_frame_length(data[:3]) is None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (bytes(19), "short"),
        (bytes.fromhex("000100002112a443") + bytes(12), "cookie"),
        (bytes.fromhex("c00100002112a442") + bytes(12), "top bits"),
        (bytes.fromhex("000100042112a442") + bytes(12), "length beyond datagram"),
        (bytes.fromhex("000100022112a442") + bytes(14), "length not multiple of 4"),
        (bytes.fromhex("000100002112a442") + bytes(16), "trailing bytes"),
        (
            bytes.fromhex("000100082112a442") + bytes(12) + bytes.fromhex("0024000800000000"),
            "overrun",
        ),
        (
            bytes.fromhex("000100082112a442") + bytes(12) + bytes.fromhex("8028000400000000"),
            "bad fp",
        ),
        (
            bytes.fromhex("000100082112a442") + bytes(12) + bytes.fromhex("0008000400000000"),
            "short MESSAGE-INTEGRITY",
        ),
        (
            bytes.fromhex("000100102112a442")
            + bytes(12)
            + bytes.fromhex("001c0008")
            + bytes(8)
            + bytes(0),
            "short MESSAGE-INTEGRITY-SHA256",
        ),
    ],
)
def test_malformed_messages_raise_parse_error(data: bytes, why: str) -> None:
    with pytest.raises(StunParseError):
        parse_message(data)


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(StunParseError, ValueError)


def test_parse_accepts_bytearray_and_memoryview() -> None:
    assert parse_message(bytearray(SAMPLE_REQUEST)).get(stun.USERNAME) == "evtj:h6vY"
    assert parse_message(memoryview(SAMPLE_REQUEST)).check_integrity(
        short_term_key(RFC5769_PASSWORD)
    )


def test_not_bytes_raises_parse_error() -> None:
    with pytest.raises(StunParseError):
        parse_message(12345)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Fingerprint and integrity placement rules
# ------------------------------------------------------------------------------------------


def _binding(*attrs: tuple[stun.Attr, object]) -> StunMessage:
    msg = StunMessage(StunMethod.BINDING, StunClass.REQUEST, bytes(12))
    for attr, value in attrs:
        msg.add(attr, value)
    return msg


def test_fingerprint_value_is_crc32_xor_stun() -> None:
    data = _binding((stun.SOFTWARE, "x")).encode(fingerprint=True)
    crc = int.from_bytes(data[-4:], "big")
    assert crc == zlib.crc32(data[:-8]) ^ 0x5354554E
    assert data[-8:-4] == b"\x80\x28\x00\x04"


def test_fingerprint_mismatch_rejected_unless_disabled() -> None:
    data = bytearray(_binding((stun.SOFTWARE, "abcd")).encode(fingerprint=True))
    data[24] ^= 1  # flip a bit in SOFTWARE
    with pytest.raises(StunParseError):
        parse_message(bytes(data))
    msg = parse_message(bytes(data), check_fingerprint=False)
    assert msg.get(stun.SOFTWARE) == "`bcd"


def test_attribute_after_fingerprint_rejected() -> None:
    good = _binding().encode(fingerprint=True)
    bad = StunMessage(StunMethod.BINDING, StunClass.REQUEST, bytes(12))
    bad.add_raw(0x8028, good[-4:]).add(stun.PRIORITY, 1)
    with pytest.raises(StunParseError):
        parse_message(bad.encode(), check_fingerprint=False)


def test_attributes_after_integrity_are_ignored_except_fingerprint() -> None:
    key = b"secret"
    msg = _binding((stun.PRIORITY, 7))
    signed = msg.encode(key)
    # splice a PRIORITY after MESSAGE-INTEGRITY, fix the length, then add a FINGERPRINT
    extra = bytes.fromhex("0024000400000009")
    body = signed[20:] + extra
    head = signed[:2] + (len(body) + 8).to_bytes(2, "big") + signed[4:20]
    crc = (zlib.crc32(head + body) ^ 0x5354554E).to_bytes(4, "big")
    data = head + body + b"\x80\x28\x00\x04" + crc
    parsed = parse_message(data)
    assert parsed.get_all(stun.PRIORITY) == [7]
    assert parsed.check_integrity(key)
    assert parsed.has_fingerprint


def test_sha1_and_sha256_together_and_truncated_sha256() -> None:
    key = b"k" * 16
    msg = _binding((stun.USERNAME, "a:b"))
    data = msg.encode(key, sha256=True, sha256_length=16, fingerprint=True)
    parsed = parse_message(data)
    types = [t for t, _ in parsed.attributes]
    assert types == [stun.USERNAME.type, 0x0008, 0x001C, 0x8028]
    mac = parsed.get(stun.MESSAGE_INTEGRITY_SHA256)
    assert mac is not None and len(mac) == 16
    assert parsed.check_integrity_sha1(key)
    assert parsed.check_integrity_sha256(key)
    assert parsed.check_integrity(key)
    assert not parsed.check_integrity(b"other")
    # the SHA-256 MAC covers the SHA-1 one: verify by hand (RFC 8489 §14.6)
    pos = data.index(b"\x00\x1c\x00\x10")
    covered = data[:2] + (pos - 20 + 20).to_bytes(2, "big") + data[4:pos]
    assert hmac.digest(key, covered, "sha256")[:16] == data[pos + 4 : pos + 20]
    with pytest.raises(ValueError):
        msg.encode(key, sha256=True, sha256_length=18)


def test_integrity_by_hand_matches_rfc_rule() -> None:
    key = b"password"
    data = _binding((stun.SOFTWARE, "hello"), (stun.PRIORITY, 1)).encode(key)
    pos = len(data) - 24
    adjusted = data[:2] + (pos - 20 + 24).to_bytes(2, "big") + data[4:pos]
    assert hmac.digest(key, adjusted, "sha1") == data[-20:]


def test_encode_with_key_replaces_existing_integrity() -> None:
    key1, key2 = b"one", b"two"
    parsed = parse_message(_binding((stun.PRIORITY, 3)).encode(key1, fingerprint=True))
    again = parse_message(parsed.encode(key2, fingerprint=True))
    assert [t for t, _ in again.attributes].count(0x0008) == 1
    assert again.check_integrity(key2) and not again.check_integrity(key1)


def test_check_integrity_false_without_integrity_or_for_built_messages() -> None:
    msg = _binding((stun.PRIORITY, 3))
    assert not msg.check_integrity(b"k")
    assert not parse_message(msg.encode(fingerprint=True)).check_integrity(b"k")
    assert not parse_message(msg.encode(fingerprint=True)).has_integrity


def test_hmac_digest_matches_stdlib() -> None:
    for key in (b"", b"k", b"x" * 64, b"y" * 65, b"z" * 200):
        for algo in ("sha1", "sha256"):
            for data in (b"", b"abc", bytes(1000)):
                assert stun.hmac_digest(key, data, algo) == hmac.digest(key, data, algo)
    with pytest.raises(ValueError):
        stun.hmac_digest(b"k", b"", "md5")


# ------------------------------------------------------------------------------------------
# Attributes
# ------------------------------------------------------------------------------------------

TID = bytes(range(1, 13))


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        (stun.MAPPED_ADDRESS, ("192.0.2.1", 3478)),
        (stun.MAPPED_ADDRESS, ("2001:db8::1", 65535)),
        (stun.XOR_MAPPED_ADDRESS, ("203.0.113.7", 0)),
        (stun.XOR_MAPPED_ADDRESS, ("2001:db8::dead:beef", 40000)),
        (stun.XOR_PEER_ADDRESS, ("198.51.100.9", 9)),
        (stun.XOR_PEER_ADDRESS, ("::1", 9)),
        (stun.XOR_RELAYED_ADDRESS, ("203.0.113.200", 50000)),
        (stun.XOR_RELAYED_ADDRESS, ("2001:db8:1::2", 50001)),
        (stun.ALTERNATE_SERVER, ("192.0.2.2", 3479)),
        (stun.RESPONSE_ORIGIN, ("192.0.2.3", 3478)),
        (stun.OTHER_ADDRESS, ("192.0.2.4", 3479)),
        (stun.USERNAME, "alice:bob"),
        (stun.USERNAME, "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"),
        (stun.REALM, "example.org"),
        (stun.NONCE, "obMatJos2AAAB1234"),
        (stun.SOFTWARE, "softphone 0.1"),
        (stun.ALTERNATE_DOMAIN, "turn.example.org"),
        (stun.USERHASH, bytes(range(32))),
        (stun.MESSAGE_INTEGRITY, bytes(20)),
        (stun.MESSAGE_INTEGRITY_SHA256, bytes(24)),
        (stun.FINGERPRINT, 0xDEADBEEF),
        (stun.ERROR_CODE, stun.ErrorCode(420, "Unknown Attribute")),
        (stun.ERROR_CODE, stun.ErrorCode(699, "")),
        (stun.UNKNOWN_ATTRIBUTES, (0x0031, 0x0032, 0x7FFF)),
        (stun.UNKNOWN_ATTRIBUTES, (0x0031, 0x0032)),
        (
            stun.PASSWORD_ALGORITHMS,
            (
                stun.PasswordAlgorithmParams(stun.PasswordAlgorithm.MD5),
                stun.PasswordAlgorithmParams(stun.PasswordAlgorithm.SHA256),
                stun.PasswordAlgorithmParams(0x1234, b"abc"),
            ),
        ),
        (stun.PASSWORD_ALGORITHM, stun.PasswordAlgorithmParams(stun.PasswordAlgorithm.SHA256)),
        (stun.PRIORITY, 0x7E0001FF),
        (stun.USE_CANDIDATE, True),
        (stun.ICE_CONTROLLED, 2**64 - 1),
        (stun.ICE_CONTROLLING, 1),
        (stun.LIFETIME, 600),
        (stun.DATA, b"\x80\x00payload"),
        (stun.DATA, b""),
        (stun.CHANNEL_NUMBER, 0x4001),
        (stun.REQUESTED_TRANSPORT, 17),
        (stun.EVEN_PORT, True),
        (stun.EVEN_PORT, False),
        (stun.DONT_FRAGMENT, True),
        (stun.RESERVATION_TOKEN, b"12345678"),
        (stun.REQUESTED_ADDRESS_FAMILY, 2),
        (stun.ADDITIONAL_ADDRESS_FAMILY, 2),
        (stun.CHANGE_REQUEST, stun.ChangeRequest(change_ip=True, change_port=False)),
        (stun.CHANGE_REQUEST, stun.ChangeRequest(change_ip=False, change_port=True)),
        (stun.RESPONSE_PORT, 5000),
        (stun.PADDING, bytes(13)),
        (stun.CONNECTION_ID, 0xCAFEBABE),
        (stun.ADDRESS_ERROR_CODE, stun.AddressErrorCode(2, 440, "Address Family not Supported")),
        (stun.ICMP, stun.IcmpInfo(3, 1, 0x01020304)),
    ],
)
def test_attribute_round_trip(attr: stun.Attr, value: object) -> None:
    msg = StunMessage(StunMethod.ALLOCATE, StunClass.SUCCESS, TID).add(attr, value)
    data = msg.encode()
    assert len(data) % 4 == 0
    parsed = parse_message(data, check_fingerprint=False)
    assert parsed.get(attr) == value
    assert parsed.encode() == data
    assert attr.type in parsed and attr in parsed
    assert stun.ATTRIBUTES_BY_TYPE[attr.type] is attr


def test_attribute_wire_formats() -> None:
    msg = StunMessage(StunMethod.BINDING, StunClass.REQUEST, TID)
    msg.add(stun.CHANGE_REQUEST, stun.ChangeRequest(True, True))
    msg.add(stun.REQUESTED_TRANSPORT, 17)
    msg.add(stun.CHANNEL_NUMBER, 0x4000)
    msg.add(stun.ERROR_CODE, stun.ErrorCode(438, "Stale Nonce"))
    msg.add(stun.EVEN_PORT, True)
    msg.add(stun.MAPPED_ADDRESS, ("192.0.2.1", 0x1234))
    body = msg.encode()[20:]
    assert body[0:8] == bytes.fromhex("0003000400000006")
    assert body[8:16] == bytes.fromhex("0019000411000000")
    assert body[16:24] == bytes.fromhex("000c000440000000")
    assert body[24:32] == bytes.fromhex("0009000f00000426")  # class 4, number 38
    assert body[32:43] == b"Stale Nonce" and body[43:44] == b"\x00"
    assert body[44:52] == bytes.fromhex("0018000180000000")
    assert body[52:64] == bytes.fromhex("000100080001 1234 c0000201".replace(" ", ""))
    turn = StunMessage(StunMethod.ALLOCATE, StunClass.SUCCESS, TID)
    turn.add(stun.ADDRESS_ERROR_CODE, stun.AddressErrorCode(2, 440, "x"))
    turn.add(stun.ICMP, stun.IcmpInfo(3, 13, 7))
    body = turn.encode()[20:]
    assert body[:12] == bytes.fromhex("80010005 02000428 78000000".replace(" ", ""))
    assert body[12:] == bytes.fromhex("80040008 0000030d 00000007".replace(" ", ""))


def test_xor_address_uses_transaction_id_for_ipv6() -> None:
    a = StunMessage(1, StunClass.SUCCESS, bytes(12)).add(stun.XOR_MAPPED_ADDRESS, ("::1", 1))
    b = StunMessage(1, StunClass.SUCCESS, TID).add(stun.XOR_MAPPED_ADDRESS, ("::1", 1))
    assert a.attributes[0][1] != b.attributes[0][1]
    assert parse_message(b.encode()).get(stun.XOR_MAPPED_ADDRESS) == ("::1", 1)


@pytest.mark.parametrize(
    ("attr", "raw"),
    [
        (stun.XOR_MAPPED_ADDRESS, b"\x00\x01\x00"),
        (stun.XOR_MAPPED_ADDRESS, b"\x00\x03" + bytes(6)),
        (stun.XOR_MAPPED_ADDRESS, b"\x00\x02" + bytes(6)),
        (stun.MAPPED_ADDRESS, b"\x00\x01" + bytes(18)),
        (stun.USERNAME, b"\xff\xfe"),
        (stun.PRIORITY, b"\x00\x00\x01"),
        (stun.ICE_CONTROLLING, bytes(4)),
        (stun.ERROR_CODE, b"\x00\x00\x04"),
        (stun.ERROR_CODE, b"\x00\x00\x02\x00"),
        (stun.ERROR_CODE, b"\x00\x00\x04\x64"),
        (stun.UNKNOWN_ATTRIBUTES, b"\x00\x01\x00"),
        (stun.USE_CANDIDATE, b"\x01"),
        (stun.PASSWORD_ALGORITHMS, b"\x00\x01\x00"),
        (stun.PASSWORD_ALGORITHMS, b"\x00\x01\x00\x08\x00"),
        (stun.PASSWORD_ALGORITHM, b""),
        (stun.EVEN_PORT, b""),
        (stun.USERHASH, bytes(31)),
        (stun.CHANGE_REQUEST, bytes(3)),
        (stun.ADDRESS_ERROR_CODE, b"\x02\x00\x04"),
        (stun.ADDRESS_ERROR_CODE, b"\x02\x00\x01\x00"),
        (stun.ICMP, bytes(7)),
    ],
)
def test_malformed_attribute_values_raise_parse_error(attr: stun.Attr, raw: bytes) -> None:
    msg = StunMessage(1, StunClass.REQUEST, TID).add_raw(attr.type, raw)
    parsed = parse_message(msg.encode())  # framing is fine; decoding is lazy
    with pytest.raises(StunParseError):
        parsed.get(attr)


def test_too_long_messages_are_refused_by_the_encoder() -> None:
    msg = StunMessage(1, StunClass.INDICATION, TID).add(stun.DATA, bytes(0xFFF8))
    assert len(msg.encode()) == 20 + 0xFFFC  # the longest body that is a multiple of 4
    with pytest.raises(ValueError):
        msg.encode(fingerprint=True)
    with pytest.raises(ValueError):
        msg.encode(b"key")
    with pytest.raises(ValueError):
        msg.add(stun.DATA, b"x").encode()


def test_error_reason_trailing_nuls_dropped() -> None:
    # coturn sends "Unknown Attribute" with its NUL padding counted in the length
    raw = bytes((0, 0, 4, 20)) + b"Unknown Attribute\x00\x00\x00"
    msg = StunMessage(1, StunClass.ERROR, TID).add_raw(stun.ERROR_CODE.type, raw)
    assert parse_message(msg.encode()).error_code == stun.ErrorCode(420, "Unknown Attribute")


def test_encoder_rejects_bad_values() -> None:
    msg = StunMessage(1, StunClass.REQUEST, TID)
    with pytest.raises(ValueError):
        msg.add(stun.USERNAME, "x" * 513)
    with pytest.raises(ValueError):
        msg.add(stun.ERROR_CODE, stun.ErrorCode(200, "OK"))
    with pytest.raises(ValueError):
        msg.add(stun.XOR_MAPPED_ADDRESS, ("not-an-ip", 1))
    with pytest.raises(ValueError):
        msg.add(stun.USERHASH, b"short")
    with pytest.raises(ValueError):
        msg.add(stun.XOR_PEER_ADDRESS, ("192.0.2.1", 65536))
    with pytest.raises(ValueError):
        msg.add(stun.PRIORITY, 2**32)
    with pytest.raises(ValueError):
        msg.add(stun.LIFETIME, -1)
    with pytest.raises(ValueError):
        msg.add(stun.UNKNOWN_ATTRIBUTES, (0x10000,))
    with pytest.raises(ValueError):
        msg.add(stun.USE_CANDIDATE, False)
    with pytest.raises(ValueError):
        StunMessage(1, StunClass.REQUEST, b"short")


def test_get_all_get_raw_remove_and_duplicates() -> None:
    msg = StunMessage(1, StunClass.REQUEST, TID)
    msg.add(stun.SOFTWARE, "a").add(stun.SOFTWARE, "b").add_raw(0xC001, b"\x01\x02")
    assert msg.get(stun.SOFTWARE) == "a"
    assert msg.get_all(stun.SOFTWARE) == ["a", "b"]
    assert msg.get_raw(0xC001) == b"\x01\x02"
    assert msg.get_raw(0xC002) is None
    assert msg.get(stun.PRIORITY) is None
    msg.remove(stun.SOFTWARE)
    assert stun.SOFTWARE not in msg
    assert 0xC001 in msg
    msg.remove(0xC001)
    assert msg.attributes == []


def test_unknown_attributes_kept_raw_and_comprehension_required_reported() -> None:
    msg = StunMessage(1, StunClass.REQUEST, TID)
    msg.add_raw(0x7F00, b"abc").add_raw(0xC057, b"\x00\x01\x00\x02").add_raw(0x0031, b"")
    msg.add_raw(0x7F00, b"again")
    parsed = parse_message(msg.encode(fingerprint=True))
    assert parsed.get_raw(0x7F00) == b"abc"
    assert parsed.get_raw(0xC057) == b"\x00\x01\x00\x02"
    assert parsed.unknown_comprehension_required() == [0x7F00, 0x0031]
    # the 420 answer a server builds from it
    answer = parsed.error_response(420).add(
        stun.UNKNOWN_ATTRIBUTES, tuple(parsed.unknown_comprehension_required())
    )
    reply = parse_message(answer.encode())
    assert reply.cls == StunClass.ERROR and reply.transaction_id == TID
    assert reply.error_code == stun.ErrorCode(420, "Unknown Attribute")
    assert reply.get(stun.UNKNOWN_ATTRIBUTES) == (0x7F00, 0x0031)
    assert reply.unknown_comprehension_required() == []


def test_response_helpers_and_error_reasons() -> None:
    req = StunMessage(StunMethod.ALLOCATE, StunClass.REQUEST)
    ok = req.response()
    assert (ok.method, ok.cls, ok.transaction_id) == (
        req.method,
        StunClass.SUCCESS,
        req.transaction_id,
    )
    err = req.error_response(438)
    assert err.error_code == stun.ErrorCode(438, "Stale Nonce")
    assert req.error_response(499).error_code == stun.ErrorCode(499, "")
    assert req.error_response(401, "Who?").error_code == stun.ErrorCode(401, "Who?")
    malformed = StunMessage(1, StunClass.ERROR).add_raw(stun.ERROR_CODE.type, b"\x00")
    assert malformed.error_code is None


def test_new_transaction_ids_are_random_and_sized() -> None:
    ids = {stun.new_transaction_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 12 for i in ids)
    assert (
        StunMessage(1, StunClass.REQUEST).transaction_id
        != StunMessage(1, StunClass.REQUEST).transaction_id
    )


def test_repr_names_attributes_and_hides_secrets() -> None:
    msg = StunMessage(StunMethod.BINDING, StunClass.REQUEST, TID).add(stun.USERNAME, "u:v")
    msg.add_raw(0x7F00, b"\x01").add_raw(stun.PRIORITY.type, b"\x01")
    text = repr(parse_message(msg.encode(b"secret")))
    assert "BINDING REQUEST" in text and "USERNAME='u:v'" in text
    assert "0x7f00=01" in text and "PRIORITY=<malformed>" in text
    assert "MESSAGE-INTEGRITY" in text and "secret" not in text
    assert "0x123" in repr(StunMessage(0x123, StunClass.INDICATION))


def test_equality() -> None:
    a = StunMessage(1, StunClass.REQUEST, TID).add(stun.PRIORITY, 1)
    b = StunMessage(1, StunClass.REQUEST, TID).add(stun.PRIORITY, 1)
    assert a == b and a != b.response()
    assert a != "x"


# ------------------------------------------------------------------------------------------
# Demultiplexing and ChannelData
# ------------------------------------------------------------------------------------------


def test_is_stun_and_classify() -> None:
    assert stun.is_stun(SAMPLE_REQUEST)
    assert not stun.is_stun(SAMPLE_REQUEST[:19])
    assert not stun.is_stun(b"\x04" + SAMPLE_REQUEST[1:])
    assert not stun.is_stun(SAMPLE_REQUEST[:4] + b"\x00\x00\x00\x00" + SAMPLE_REQUEST[8:])
    rtp = bytes.fromhex("80e0000100000000deadbeef") + bytes(160)
    cases = {
        SAMPLE_REQUEST: stun.PacketKind.STUN,
        bytes([0x01]) + bytes(30): stun.PacketKind.UNKNOWN,  # first byte 0-3 but no cookie
        bytes([16]) + bytes(20): stun.PacketKind.ZRTP,
        bytes([22, 0xFE, 0xFD]) + bytes(20): stun.PacketKind.DTLS,
        bytes([0x40, 0x00, 0x00, 0x00]): stun.PacketKind.CHANNEL_DATA,
        bytes([0x4F, 0xFF, 0x00, 0x00]): stun.PacketKind.CHANNEL_DATA,
        bytes([0x40, 0x00]): stun.PacketKind.UNKNOWN,
        bytes([0x50, 0x00, 0x00, 0x00]): stun.PacketKind.UNKNOWN,
        rtp: stun.PacketKind.RTP,
        bytes([0xC0]) + bytes(10): stun.PacketKind.UNKNOWN,
        b"": stun.PacketKind.UNKNOWN,
    }
    for data, kind in cases.items():
        assert stun.classify_packet(data) is kind, data[:4].hex()
    assert stun.is_channel_data(bytes([0x40, 0x01, 0, 0]))
    assert not stun.is_channel_data(rtp)
    assert not stun.is_channel_data(bytes([0x40, 0x01, 0]))


def test_channel_data_round_trip_and_padding() -> None:
    data = stun.encode_channel_data(0x4001, b"hello")
    assert data == bytes.fromhex("40010005") + b"hello"
    padded = stun.encode_channel_data(0x4001, b"hello", pad=True)
    assert padded == data + bytes(3)
    for wire in (data, padded):
        cd = stun.parse_channel_data(wire)
        assert cd == stun.ChannelData(0x4001, b"hello")
    assert stun.parse_channel_data(stun.encode_channel_data(0x4FFF, b"")).data == b""
    for bad in (b"\x40\x01\x00", bytes.fromhex("40010006") + b"hello", bytes.fromhex("50000000")):
        with pytest.raises(StunParseError):
            stun.parse_channel_data(bad)
    with pytest.raises(ValueError):
        stun.encode_channel_data(0x3FFF, b"")
    with pytest.raises(ValueError):
        stun.encode_channel_data(0x4000, bytes(70000))
