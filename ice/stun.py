"""STUN message codec (RFC 8489, compatible with RFC 5389), with the ICE and TURN attributes.

A message is a header (type, length, magic cookie, 96-bit transaction id; RFC 8489 §5) followed by
TLV attributes padded to 4 bytes (§14).  Parsed messages keep every attribute as raw bytes and
decode a value only when asked (``msg.get(XOR_MAPPED_ADDRESS)``), which keeps the decoder lean.

* ``parse_message(data)`` validates the framing and the FINGERPRINT (§14.7) and raises
  :class:`StunParseError` (a ``ValueError``) and nothing else; typed getters raise the same error
  for a malformed attribute value.
* ``StunMessage.encode(key, fingerprint=True)`` appends MESSAGE-INTEGRITY (§14.5),
  MESSAGE-INTEGRITY-SHA256 (§14.6) and FINGERPRINT (§14.7) with the length adjustments the RFC
  describes; ``check_integrity(key)`` verifies a received message.
* ``unknown_comprehension_required()`` lists attributes of type 0x0000-0x7FFF this codec does not
  understand, so that a server can answer 420 with UNKNOWN-ATTRIBUTES (§6.3.1).
* ``classify_packet`` / ``is_stun`` / ``is_channel_data`` demultiplex a shared port (RFC 7983).

Keys are plain bytes; :mod:`ice.credentials` derives them from passwords.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import socket
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = [
    "ADDITIONAL_ADDRESS_FAMILY",
    "ADDRESS_ERROR_CODE",
    "ALTERNATE_DOMAIN",
    "ALTERNATE_SERVER",
    "ATTRIBUTES_BY_TYPE",
    "CHANGE_REQUEST",
    "CHANNEL_NUMBER",
    "CONNECTION_ID",
    "DATA",
    "DONT_FRAGMENT",
    "ERROR_CODE",
    "EVEN_PORT",
    "FINGERPRINT",
    "HEADER_LENGTH",
    "ICMP",
    "ICE_CONTROLLED",
    "ICE_CONTROLLING",
    "LIFETIME",
    "MAGIC_COOKIE",
    "MAPPED_ADDRESS",
    "MESSAGE_INTEGRITY",
    "MESSAGE_INTEGRITY_SHA256",
    "NONCE",
    "OTHER_ADDRESS",
    "PADDING",
    "PASSWORD_ALGORITHM",
    "PASSWORD_ALGORITHMS",
    "PRIORITY",
    "REALM",
    "REQUESTED_ADDRESS_FAMILY",
    "REQUESTED_TRANSPORT",
    "RESERVATION_TOKEN",
    "RESPONSE_ORIGIN",
    "RESPONSE_PORT",
    "SOFTWARE",
    "UNKNOWN_ATTRIBUTES",
    "USERHASH",
    "USERNAME",
    "USE_CANDIDATE",
    "XOR_MAPPED_ADDRESS",
    "XOR_PEER_ADDRESS",
    "XOR_RELAYED_ADDRESS",
    "Address",
    "AddressErrorCode",
    "Attr",
    "ChangeRequest",
    "ChannelData",
    "ErrorCode",
    "IcmpInfo",
    "PacketKind",
    "PasswordAlgorithm",
    "PasswordAlgorithmParams",
    "StunClass",
    "StunMessage",
    "StunMethod",
    "StunParseError",
    "classify_packet",
    "encode_channel_data",
    "is_channel_data",
    "is_stun",
    "parse_channel_data",
    "parse_message",
    "stun_frame_length",
    "hmac_digest",
    "new_transaction_id",
]

MAGIC_COOKIE = 0x2112A442
HEADER_LENGTH = 20
_COOKIE = b"\x21\x12\xa4\x42"
_FINGERPRINT_XOR = 0x5354554E

_HEADER = struct.Struct("!HHI")
_ATTR_HEADER = struct.Struct("!HH")

Address = tuple[str, int]
"""A transport address: ``(host, port)``, the host as a textual IPv4 or IPv6 address.

Decoded hosts are spelt as ``socket.inet_ntop`` spells them (as ``recvfrom`` reports peers).
"""

T = TypeVar("T")


class StunParseError(ValueError):
    """A datagram is not a well-formed STUN message (or an attribute value is malformed)."""


class StunClass(enum.IntEnum):
    """The two class bits C1/C0 in their positions in the message type (RFC 8489 §5)."""

    REQUEST = 0x0000
    INDICATION = 0x0010
    SUCCESS = 0x0100
    ERROR = 0x0110


class StunMethod(enum.IntEnum):
    """STUN methods (RFC 8489 §18.2, TURN: RFC 8656 §17, TURN-TCP: RFC 6062)."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    CONNECT = 0x00A
    CONNECTION_BIND = 0x00B
    CONNECTION_ATTEMPT = 0x00C


_METHODS: dict[int, int] = {m.value: m for m in StunMethod}
_CLASSES: dict[int, StunClass] = {c.value: c for c in StunClass}


class PasswordAlgorithm(enum.IntEnum):
    """PASSWORD-ALGORITHM values (RFC 8489 §18.5)."""

    MD5 = 0x0001
    SHA256 = 0x0002


def encode_message_type(method: int, cls: int) -> int:
    """Interleave the 12 method bits with the class bits (RFC 8489 §5, Figure 3)."""
    if not 0 <= method <= 0xFFF:
        raise ValueError(f"STUN method out of range: {method:#x}")
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | cls


def _split_message_type(message_type: int) -> tuple[int, int]:
    method = (
        (message_type & 0x000F) | ((message_type & 0x00E0) >> 1) | ((message_type & 0x3E00) >> 2)
    )
    return method, message_type & 0x0110


_TRANS_IPAD = bytes(x ^ 0x36 for x in range(256))
_TRANS_OPAD = bytes(x ^ 0x5C for x in range(256))
_HMAC_PADS: dict[tuple[bytes, str], tuple[Any, Any]] = {}


def hmac_digest(key: bytes, data: bytes, algorithm: str) -> bytes:
    """HMAC (RFC 2104) with SHA-1 or SHA-256, caching the keyed pad states per key.

    Equal to ``hmac.digest(key, data, algorithm)``; a STUN agent uses a handful of keys for
    many messages, so hashing the padded key once per key saves most of the cost.
    """
    if type(key) is not bytes:
        key = bytes(key)
    pads = _HMAC_PADS.get((key, algorithm))
    if pads is None:
        if algorithm == "sha1":
            ctor = hashlib.sha1
        elif algorithm == "sha256":
            ctor = hashlib.sha256
        else:
            raise ValueError(f"unsupported HMAC algorithm {algorithm}")
        k = ctor(key).digest() if len(key) > 64 else key
        k = k.ljust(64, b"\x00")
        pads = (ctor(k.translate(_TRANS_IPAD)), ctor(k.translate(_TRANS_OPAD)))
        if len(_HMAC_PADS) >= 32:
            _HMAC_PADS.clear()
        _HMAC_PADS[(key, algorithm)] = pads
    inner = pads[0].copy()
    inner.update(data)
    outer = pads[1].copy()
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest


def new_transaction_id() -> bytes:
    """A cryptographically random 96-bit transaction id (RFC 8489 §5)."""
    return os.urandom(12)


# --------------------------------------------------------------------------------------------
# Typed attribute values
# --------------------------------------------------------------------------------------------

_REASONS = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthenticated",
    403: "Forbidden",
    405: "Mobility Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    446: "Connection Already Exists",
    447: "Connection Timeout or Failure",
    486: "Allocation Quota Reached",
    487: "Role Conflict",
    500: "Server Error",
    508: "Insufficient Capacity",
}


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """ERROR-CODE value (RFC 8489 §14.8): a code 300-699 and a UTF-8 reason phrase."""

    code: int
    reason: str = ""

    @classmethod
    def of(cls, code: int, reason: str | None = None) -> ErrorCode:
        """The error with the reason phrase the RFCs register for ``code`` (if none is given)."""
        return cls(code, _REASONS.get(code, "") if reason is None else reason)


@dataclass(frozen=True, slots=True)
class PasswordAlgorithmParams:
    """One entry of PASSWORD-ALGORITHMS, or the PASSWORD-ALGORITHM value (RFC 8489 §14.11)."""

    algorithm: int
    parameters: bytes = b""


@dataclass(frozen=True, slots=True)
class AddressErrorCode:
    """ADDRESS-ERROR-CODE value (RFC 8656 §18.13): why one address family failed."""

    family: int
    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class IcmpInfo:
    """ICMP attribute value (RFC 8656 §18.12): an ICMP error the relay received."""

    type: int
    code: int
    data: int = 0


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """CHANGE-REQUEST value (RFC 5780 §7.2)."""

    change_ip: bool = False
    change_port: bool = False


class Attr(Generic[T]):
    """Descriptor of one attribute type: its code, name and value codec.

    ``decode(value, transaction_id)`` turns the raw value into a ``T`` and raises only
    :class:`StunParseError`; ``encode(value, transaction_id)`` does the reverse and raises
    ``ValueError`` for a value that cannot be encoded.
    """

    __slots__ = ("_decode", "_encode", "name", "type")

    def __init__(
        self,
        type_: int,
        name: str,
        decode: Callable[[bytes, bytes], T],
        encode: Callable[[T, bytes], bytes],
    ) -> None:
        self.type = type_
        self.name = name
        self._decode = decode
        self._encode = encode

    def decode(self, value: bytes, transaction_id: bytes) -> T:
        try:
            return self._decode(value, transaction_id)
        except StunParseError:
            raise
        except (ValueError, struct.error, OSError, IndexError) as exc:
            raise StunParseError(f"malformed {self.name}: {exc}") from exc

    def encode(self, value: T, transaction_id: bytes) -> bytes:
        try:
            return self._encode(value, transaction_id)
        except (OverflowError, struct.error) as exc:
            raise ValueError(f"cannot encode {self.name}: {exc}") from exc

    def __repr__(self) -> str:
        return f"<Attr {self.name} {self.type:#06x}>"


def _dec_address(value: bytes, _tid: bytes) -> Address:
    """MAPPED-ADDRESS family (RFC 8489 §14.1); the first byte is reserved and ignored."""
    n = len(value)
    if n == 8 and value[1] == 1:
        return socket.inet_ntop(socket.AF_INET, value[4:8]), (value[2] << 8) | value[3]
    if n == 20 and value[1] == 2:
        return socket.inet_ntop(socket.AF_INET6, value[4:20]), (value[2] << 8) | value[3]
    raise StunParseError(f"bad address attribute (length {n}, family {value[1:2].hex()})")


def _pack_host(host: str) -> tuple[int, bytes]:
    try:
        if ":" in host:
            return 2, socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        return 1, socket.inet_pton(socket.AF_INET, host)
    except OSError as exc:
        raise ValueError(f"not an IP address: {host!r}") from exc


def _enc_address(value: Address, _tid: bytes) -> bytes:
    host, port = value
    family, packed = _pack_host(host)
    return bytes((0, family)) + port.to_bytes(2, "big") + packed


def _xor_bytes(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask[:n], "big")).to_bytes(n, "big")


_XOR_V4 = struct.Struct("!HH4B")


def _dec_xor_address(value: bytes, tid: bytes) -> Address:
    """XOR-MAPPED-ADDRESS family (RFC 8489 §14.2): port xor 0x2112, address xor cookie[+tid]."""
    n = len(value)
    if n == 8 and value[1] == 1:
        _, port, b0, b1, b2, b3 = _XOR_V4.unpack(value)
        return f"{b0 ^ 0x21}.{b1 ^ 0x12}.{b2 ^ 0xA4}.{b3 ^ 0x42}", port ^ 0x2112
    if n == 20 and value[1] == 2:
        host = socket.inet_ntop(socket.AF_INET6, _xor_bytes(value[4:20], _COOKIE + tid))
    else:
        raise StunParseError(f"bad XOR address attribute (length {n})")
    return host, ((value[2] << 8) | value[3]) ^ 0x2112


def _enc_xor_address(value: Address, tid: bytes) -> bytes:
    host, port = value
    family, packed = _pack_host(host)
    return (
        bytes((0, family)) + (port ^ 0x2112).to_bytes(2, "big") + _xor_bytes(packed, _COOKIE + tid)
    )


def _dec_str(value: bytes, _tid: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunParseError(f"invalid UTF-8: {exc}") from exc


def _enc_str_limited(limit: int) -> Callable[[str, bytes], bytes]:
    def encode(value: str, _tid: bytes) -> bytes:
        raw = value.encode("utf-8")
        if len(raw) > limit:
            raise ValueError(f"string attribute longer than {limit} bytes")
        return raw

    return encode


def _dec_bytes(value: bytes, _tid: bytes) -> bytes:
    return value


def _enc_bytes(value: bytes, _tid: bytes) -> bytes:
    return bytes(value)


def _fixed_bytes(
    *lengths: int,
) -> tuple[Callable[[bytes, bytes], bytes], Callable[[bytes, bytes], bytes]]:
    def decode(value: bytes, _tid: bytes) -> bytes:
        if len(value) not in lengths:
            raise StunParseError(f"expected {lengths} bytes, got {len(value)}")
        return value

    def encode(value: bytes, _tid: bytes) -> bytes:
        if len(value) not in lengths:
            raise ValueError(f"expected {lengths} bytes, got {len(value)}")
        return bytes(value)

    return decode, encode


def _uint(
    size: int, value_bytes: int | None = None
) -> tuple[Callable[[bytes, bytes], int], Callable[[int, bytes], bytes]]:
    """An unsigned integer of ``value_bytes`` bytes at the start of a ``size``-byte value."""
    nbytes = size if value_bytes is None else value_bytes

    def decode(value: bytes, _tid: bytes) -> int:
        if len(value) != size:
            raise StunParseError(f"expected {size} bytes, got {len(value)}")
        return int.from_bytes(value[:nbytes], "big")

    def encode(value: int, _tid: bytes) -> bytes:
        return value.to_bytes(nbytes, "big") + bytes(size - nbytes)

    return decode, encode


def _dec_flag(value: bytes, _tid: bytes) -> bool:
    if value:
        raise StunParseError("flag attribute must be empty")
    return True


def _enc_flag(value: bool, _tid: bytes) -> bytes:
    if value is not True:
        raise ValueError("flag attributes are added with the value True")
    return b""


def _dec_error_code(value: bytes, _tid: bytes) -> ErrorCode:
    if len(value) < 4:
        raise StunParseError("ERROR-CODE shorter than 4 bytes")
    code = (value[2] & 0x07) * 100 + value[3]
    if not 300 <= code <= 699 or value[3] > 99:
        raise StunParseError(f"ERROR-CODE out of range: {value[2] & 7}/{value[3]}")
    # some servers (coturn) count NUL padding in the reason phrase; drop it
    return ErrorCode(code, value[4:].rstrip(b"\x00").decode("utf-8", errors="replace"))


def _enc_error_code(value: ErrorCode, _tid: bytes) -> bytes:
    if not 300 <= value.code <= 699:
        raise ValueError(f"error code out of range: {value.code}")
    reason = value.reason.encode("utf-8")
    if len(value.reason) > 127 or len(reason) > 763:
        raise ValueError("error reason too long")
    return bytes((0, 0, value.code // 100, value.code % 100)) + reason


def _dec_address_error_code(value: bytes, tid: bytes) -> AddressErrorCode:
    if len(value) < 4:
        raise StunParseError("ADDRESS-ERROR-CODE shorter than 4 bytes")
    error = _dec_error_code(b"\x00\x00" + value[2:], tid)
    return AddressErrorCode(value[0], error.code, error.reason)


def _enc_address_error_code(value: AddressErrorCode, tid: bytes) -> bytes:
    raw = _enc_error_code(ErrorCode(value.code, value.reason), tid)
    return bytes((value.family, 0)) + raw[2:]


def _dec_icmp(value: bytes, _tid: bytes) -> IcmpInfo:
    if len(value) != 8:
        raise StunParseError("ICMP must be 8 bytes")
    return IcmpInfo(value[2], value[3], int.from_bytes(value[4:8], "big"))


def _enc_icmp(value: IcmpInfo, _tid: bytes) -> bytes:
    return bytes((0, 0, value.type, value.code)) + value.data.to_bytes(4, "big")


def _dec_unknown_attributes(value: bytes, _tid: bytes) -> tuple[int, ...]:
    if len(value) % 2:
        raise StunParseError("UNKNOWN-ATTRIBUTES length is odd")
    return struct.unpack(f"!{len(value) // 2}H", value)


def _enc_unknown_attributes(value: tuple[int, ...], _tid: bytes) -> bytes:
    return struct.pack(f"!{len(value)}H", *value)


def _dec_algorithms(value: bytes, _tid: bytes) -> tuple[PasswordAlgorithmParams, ...]:
    out = []
    pos, n = 0, len(value)
    while pos < n:
        if pos + 4 > n:
            raise StunParseError("truncated password algorithm")
        algorithm, length = _ATTR_HEADER.unpack_from(value, pos)
        end = pos + 4 + length
        if end > n:
            raise StunParseError("truncated password algorithm parameters")
        out.append(PasswordAlgorithmParams(algorithm, value[pos + 4 : end]))
        pos = end + (-length & 3)
    return tuple(out)


def _enc_algorithms(value: tuple[PasswordAlgorithmParams, ...], _tid: bytes) -> bytes:
    parts = []
    for entry in value:
        params = bytes(entry.parameters)
        parts.append(_ATTR_HEADER.pack(entry.algorithm, len(params)))
        parts.append(params + bytes(-len(params) & 3))
    return b"".join(parts)


def _dec_algorithm(value: bytes, tid: bytes) -> PasswordAlgorithmParams:
    entries = _dec_algorithms(value, tid)
    if len(entries) != 1:
        raise StunParseError("PASSWORD-ALGORITHM must hold exactly one algorithm")
    return entries[0]


def _enc_algorithm(value: PasswordAlgorithmParams, tid: bytes) -> bytes:
    return _enc_algorithms((value,), tid)


def _dec_even_port(value: bytes, _tid: bytes) -> bool:
    if len(value) != 1:
        raise StunParseError("EVEN-PORT must be 1 byte")
    return bool(value[0] & 0x80)


def _enc_even_port(value: bool, _tid: bytes) -> bytes:
    return b"\x80" if value else b"\x00"


def _dec_change_request(value: bytes, _tid: bytes) -> ChangeRequest:
    if len(value) != 4:
        raise StunParseError("CHANGE-REQUEST must be 4 bytes")
    return ChangeRequest(bool(value[3] & 0x04), bool(value[3] & 0x02))


def _enc_change_request(value: ChangeRequest, _tid: bytes) -> bytes:
    return bytes((0, 0, 0, (0x04 if value.change_ip else 0) | (0x02 if value.change_port else 0)))


def _dec_mi_sha256(value: bytes, _tid: bytes) -> bytes:
    if not 16 <= len(value) <= 32 or len(value) % 4:
        raise StunParseError("MESSAGE-INTEGRITY-SHA256 must be 16-32 bytes, a multiple of 4")
    return value


_u16_pad = _uint(4, 2)
_u8_pad = _uint(4, 1)
_u32 = _uint(4)
_u64 = _uint(8)

# RFC 8489 §14 / §18.3
MAPPED_ADDRESS: Attr[Address] = Attr(0x0001, "MAPPED-ADDRESS", _dec_address, _enc_address)
CHANGE_REQUEST: Attr[ChangeRequest] = Attr(
    0x0003, "CHANGE-REQUEST", _dec_change_request, _enc_change_request
)
USERNAME: Attr[str] = Attr(0x0006, "USERNAME", _dec_str, _enc_str_limited(512))
MESSAGE_INTEGRITY: Attr[bytes] = Attr(0x0008, "MESSAGE-INTEGRITY", *_fixed_bytes(20))
ERROR_CODE: Attr[ErrorCode] = Attr(0x0009, "ERROR-CODE", _dec_error_code, _enc_error_code)
UNKNOWN_ATTRIBUTES: Attr[tuple[int, ...]] = Attr(
    0x000A, "UNKNOWN-ATTRIBUTES", _dec_unknown_attributes, _enc_unknown_attributes
)
# TURN, RFC 8656 §18
CHANNEL_NUMBER: Attr[int] = Attr(0x000C, "CHANNEL-NUMBER", *_u16_pad)
LIFETIME: Attr[int] = Attr(0x000D, "LIFETIME", *_u32)
XOR_PEER_ADDRESS: Attr[Address] = Attr(
    0x0012, "XOR-PEER-ADDRESS", _dec_xor_address, _enc_xor_address
)
DATA: Attr[bytes] = Attr(0x0013, "DATA", _dec_bytes, _enc_bytes)
REALM: Attr[str] = Attr(0x0014, "REALM", _dec_str, _enc_str_limited(762))
NONCE: Attr[str] = Attr(0x0015, "NONCE", _dec_str, _enc_str_limited(762))
XOR_RELAYED_ADDRESS: Attr[Address] = Attr(
    0x0016, "XOR-RELAYED-ADDRESS", _dec_xor_address, _enc_xor_address
)
REQUESTED_ADDRESS_FAMILY: Attr[int] = Attr(0x0017, "REQUESTED-ADDRESS-FAMILY", *_u8_pad)
EVEN_PORT: Attr[bool] = Attr(0x0018, "EVEN-PORT", _dec_even_port, _enc_even_port)
REQUESTED_TRANSPORT: Attr[int] = Attr(0x0019, "REQUESTED-TRANSPORT", *_u8_pad)
DONT_FRAGMENT: Attr[bool] = Attr(0x001A, "DONT-FRAGMENT", _dec_flag, _enc_flag)
MESSAGE_INTEGRITY_SHA256: Attr[bytes] = Attr(
    0x001C, "MESSAGE-INTEGRITY-SHA256", _dec_mi_sha256, _fixed_bytes(16, 20, 24, 28, 32)[1]
)
PASSWORD_ALGORITHM: Attr[PasswordAlgorithmParams] = Attr(
    0x001D, "PASSWORD-ALGORITHM", _dec_algorithm, _enc_algorithm
)
USERHASH: Attr[bytes] = Attr(0x001E, "USERHASH", *_fixed_bytes(32))
XOR_MAPPED_ADDRESS: Attr[Address] = Attr(
    0x0020, "XOR-MAPPED-ADDRESS", _dec_xor_address, _enc_xor_address
)
RESERVATION_TOKEN: Attr[bytes] = Attr(0x0022, "RESERVATION-TOKEN", *_fixed_bytes(8))
# ICE, RFC 8445 §16.1
PRIORITY: Attr[int] = Attr(0x0024, "PRIORITY", *_u32)
USE_CANDIDATE: Attr[bool] = Attr(0x0025, "USE-CANDIDATE", _dec_flag, _enc_flag)
# RFC 5780 §7
PADDING: Attr[bytes] = Attr(0x0026, "PADDING", _dec_bytes, _enc_bytes)
RESPONSE_PORT: Attr[int] = Attr(0x0027, "RESPONSE-PORT", *_u16_pad)
# RFC 6062 §6.2
CONNECTION_ID: Attr[int] = Attr(0x002A, "CONNECTION-ID", *_u32)
# comprehension-optional range
ADDITIONAL_ADDRESS_FAMILY: Attr[int] = Attr(0x8000, "ADDITIONAL-ADDRESS-FAMILY", *_u8_pad)
ADDRESS_ERROR_CODE: Attr[AddressErrorCode] = Attr(
    0x8001, "ADDRESS-ERROR-CODE", _dec_address_error_code, _enc_address_error_code
)
ICMP: Attr[IcmpInfo] = Attr(0x8004, "ICMP", _dec_icmp, _enc_icmp)
PASSWORD_ALGORITHMS: Attr[tuple[PasswordAlgorithmParams, ...]] = Attr(
    0x8002, "PASSWORD-ALGORITHMS", _dec_algorithms, _enc_algorithms
)
ALTERNATE_DOMAIN: Attr[str] = Attr(0x8003, "ALTERNATE-DOMAIN", _dec_str, _enc_str_limited(255))
SOFTWARE: Attr[str] = Attr(0x8022, "SOFTWARE", _dec_str, _enc_str_limited(763))
ALTERNATE_SERVER: Attr[Address] = Attr(0x8023, "ALTERNATE-SERVER", _dec_address, _enc_address)
FINGERPRINT: Attr[int] = Attr(0x8028, "FINGERPRINT", *_u32)
ICE_CONTROLLED: Attr[int] = Attr(0x8029, "ICE-CONTROLLED", *_u64)
ICE_CONTROLLING: Attr[int] = Attr(0x802A, "ICE-CONTROLLING", *_u64)
RESPONSE_ORIGIN: Attr[Address] = Attr(0x802B, "RESPONSE-ORIGIN", _dec_address, _enc_address)
OTHER_ADDRESS: Attr[Address] = Attr(0x802C, "OTHER-ADDRESS", _dec_address, _enc_address)

ATTRIBUTES_BY_TYPE: dict[int, Attr[Any]] = {
    a.type: a
    for a in (
        MAPPED_ADDRESS,
        CHANGE_REQUEST,
        USERNAME,
        MESSAGE_INTEGRITY,
        ERROR_CODE,
        UNKNOWN_ATTRIBUTES,
        CHANNEL_NUMBER,
        LIFETIME,
        XOR_PEER_ADDRESS,
        DATA,
        REALM,
        NONCE,
        XOR_RELAYED_ADDRESS,
        REQUESTED_ADDRESS_FAMILY,
        EVEN_PORT,
        REQUESTED_TRANSPORT,
        DONT_FRAGMENT,
        MESSAGE_INTEGRITY_SHA256,
        PASSWORD_ALGORITHM,
        USERHASH,
        XOR_MAPPED_ADDRESS,
        RESERVATION_TOKEN,
        PRIORITY,
        USE_CANDIDATE,
        PADDING,
        RESPONSE_PORT,
        CONNECTION_ID,
        ADDITIONAL_ADDRESS_FAMILY,
        ADDRESS_ERROR_CODE,
        ICMP,
        PASSWORD_ALGORITHMS,
        ALTERNATE_DOMAIN,
        SOFTWARE,
        ALTERNATE_SERVER,
        FINGERPRINT,
        ICE_CONTROLLED,
        ICE_CONTROLLING,
        RESPONSE_ORIGIN,
        OTHER_ADDRESS,
    )
}
"""Every attribute this codec understands, by type code."""

_MESSAGE_TYPES: dict[int, tuple[int, StunClass]] = {
    encode_message_type(m, c): (m, c) for m in StunMethod for c in StunClass
}

_T_MI = MESSAGE_INTEGRITY.type
_T_MI256 = MESSAGE_INTEGRITY_SHA256.type
_T_FP = FINGERPRINT.type
_INTEGRITY_TYPES = frozenset((_T_MI, _T_MI256, _T_FP))


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


class StunMessage:
    """A STUN message: method, class, transaction id and an ordered list of raw attributes.

    ``attributes`` holds ``(type, value)`` pairs with the value bytes unpadded; use ``add`` /
    ``get`` with an :class:`Attr` descriptor for typed values.  Duplicates are kept; ``get``
    returns the first (RFC 8489 §14: only the first occurrence needs processing).
    """

    __slots__ = (
        "_fp_pos",
        "_mi256_pos",
        "_mi_pos",
        "_raw",
        "attributes",
        "cls",
        "method",
        "transaction_id",
    )

    def __init__(
        self,
        method: int,
        cls: StunClass,
        transaction_id: bytes | None = None,
        attributes: list[tuple[int, bytes]] | None = None,
    ) -> None:
        if transaction_id is None:
            transaction_id = os.urandom(12)
        elif len(transaction_id) != 12:
            raise ValueError("a STUN transaction id is 12 bytes")
        self.method = method
        self.cls = cls
        self.transaction_id = transaction_id
        self.attributes: list[tuple[int, bytes]] = [] if attributes is None else attributes
        self._raw: bytes | None = None
        self._mi_pos = -1
        self._mi256_pos = -1
        self._fp_pos = -1

    # -- building ---------------------------------------------------------------------------

    def add(self, attr: Attr[T], value: T) -> StunMessage:
        """Append a typed attribute; returns ``self`` so calls can be chained."""
        self.attributes.append((attr.type, attr.encode(value, self.transaction_id)))
        return self

    def add_raw(self, attr_type: int, value: bytes) -> StunMessage:
        """Append an attribute given as raw (unpadded) value bytes."""
        if not 0 <= attr_type <= 0xFFFF or len(value) > 0xFFFF:
            raise ValueError("attribute type or length out of range")
        self.attributes.append((attr_type, bytes(value)))
        return self

    def remove(self, attr: Attr[T] | int) -> None:
        """Drop every attribute of that type."""
        t = attr if isinstance(attr, int) else attr.type
        self.attributes = [a for a in self.attributes if a[0] != t]

    def response(self, cls: StunClass = StunClass.SUCCESS) -> StunMessage:
        """A new response to this request: same method and transaction id (RFC 8489 §6.3)."""
        return StunMessage(self.method, cls, self.transaction_id)

    def error_response(self, code: int, reason: str | None = None) -> StunMessage:
        """A new error response carrying ERROR-CODE (RFC 8489 §6.3.4)."""
        return self.response(StunClass.ERROR).add(ERROR_CODE, ErrorCode.of(code, reason))

    # -- reading ----------------------------------------------------------------------------

    def get(self, attr: Attr[T]) -> T | None:
        """The decoded value of the first attribute of that type, or None if absent.

        Raises :class:`StunParseError` if the value is malformed.
        """
        t = attr.type
        for at, value in self.attributes:
            if at == t:
                return attr.decode(value, self.transaction_id)
        return None

    def get_all(self, attr: Attr[T]) -> list[T]:
        """Every value of that type, decoded, in message order."""
        t = attr.type
        return [attr.decode(v, self.transaction_id) for at, v in self.attributes if at == t]

    def get_raw(self, attr_type: int) -> bytes | None:
        """The raw value of the first attribute with that type code."""
        for at, value in self.attributes:
            if at == attr_type:
                return value
        return None

    def __contains__(self, attr: object) -> bool:
        t = attr.type if isinstance(attr, Attr) else attr
        for at, _ in self.attributes:  # a plain loop: twice as fast as any() on the hot path
            if at == t:
                return True
        return False

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return iter(self.attributes)

    @property
    def error_code(self) -> ErrorCode | None:
        """The ERROR-CODE, if any (malformed counts as absent here)."""
        try:
            return self.get(ERROR_CODE)
        except StunParseError:
            return None

    def unknown_comprehension_required(self) -> list[int]:
        """Types in 0x0000-0x7FFF this codec does not know (answer 420; RFC 8489 §6.3.1)."""
        seen: list[int] = []
        for t, _ in self.attributes:
            if t < 0x8000 and t not in ATTRIBUTES_BY_TYPE and t not in seen:
                seen.append(t)
        return seen

    # -- integrity --------------------------------------------------------------------------

    @property
    def has_integrity(self) -> bool:
        """True if the parsed message carried MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256."""
        return self._mi_pos >= 0 or self._mi256_pos >= 0

    @property
    def has_fingerprint(self) -> bool:
        """True if the parsed message ended in a (valid, if checked) FINGERPRINT."""
        return self._fp_pos >= 0

    @property
    def raw(self) -> bytes | None:
        """The bytes this message was parsed from (None for a message built locally)."""
        return self._raw

    def check_integrity(self, key: bytes) -> bool:
        """Verify a parsed message's integrity with ``key`` (RFC 8489 §9.1.3 / §9.2.4).

        MESSAGE-INTEGRITY-SHA256 is checked if present, else MESSAGE-INTEGRITY; a message with
        neither fails.
        """
        if self._mi256_pos >= 0:
            return self.check_integrity_sha256(key)
        pos = self._mi_pos
        data = self._raw
        if pos < 0 or data is None:
            return False
        covered = data[:2] + (pos + 4).to_bytes(2, "big") + data[4:pos]
        return hmac.compare_digest(hmac_digest(key, covered, "sha1"), data[pos + 4 : pos + 24])

    def check_integrity_sha1(self, key: bytes) -> bool:
        """Verify MESSAGE-INTEGRITY (HMAC-SHA1 with the length adjusted, RFC 8489 §14.5)."""
        pos = self._mi_pos
        data = self._raw
        if pos < 0 or data is None:
            return False
        covered = data[:2] + (pos + 4).to_bytes(2, "big") + data[4:pos]
        # pos - 20 (header) + 24 (the MESSAGE-INTEGRITY attribute) == pos + 4
        return hmac.compare_digest(hmac_digest(key, covered, "sha1"), data[pos + 4 : pos + 24])

    def check_integrity_sha256(self, key: bytes) -> bool:
        """Verify MESSAGE-INTEGRITY-SHA256, possibly truncated (RFC 8489 §14.6)."""
        pos = self._mi256_pos
        data = self._raw
        if pos < 0 or data is None:
            return False
        length = (data[pos + 2] << 8) | data[pos + 3]
        covered = data[:2] + (pos - 16 + length).to_bytes(2, "big") + data[4:pos]
        mac = hmac_digest(key, covered, "sha256")[:length]
        return hmac.compare_digest(mac, data[pos + 4 : pos + 4 + length])

    # -- encoding ---------------------------------------------------------------------------

    def encode(
        self,
        integrity_key: bytes | None = None,
        *,
        fingerprint: bool = False,
        sha1: bool = True,
        sha256: bool = False,
        sha256_length: int = 32,
        pad_byte: int = 0,
    ) -> bytes:
        """Serialize, optionally appending integrity and fingerprint (RFC 8489 §14.5-§14.7).

        With ``integrity_key`` any MESSAGE-INTEGRITY(-SHA256)/FINGERPRINT already in
        ``attributes`` is replaced by freshly computed ones: MESSAGE-INTEGRITY if ``sha1``,
        then MESSAGE-INTEGRITY-SHA256 (truncated to ``sha256_length``) if ``sha256``.  With
        ``fingerprint`` a FINGERPRINT is appended last.  Padding bytes are ``pad_byte`` (zero
        per RFC 8489 §14; the RFC 5769 vectors pad with 0x20).
        """
        skip: frozenset[int] | tuple[int, ...] = ()
        if integrity_key is not None:
            skip = _INTEGRITY_TYPES
        elif fingerprint:
            skip = (_T_FP,)
        parts = []
        pads = bytes((pad_byte, pad_byte, pad_byte))
        for t, v in self.attributes:
            if t in skip:
                continue
            n = len(v)
            parts.append(_ATTR_HEADER.pack(t, n))
            parts.append(v)
            if n & 3:
                parts.append(pads[: -n & 3])
        body = b"".join(parts)
        mtype = encode_message_type(self.method, self.cls)
        tid = self.transaction_id
        total = len(body) + (8 if fingerprint else 0)
        if integrity_key is not None:
            if sha256 and sha256_length not in (16, 20, 24, 28, 32):
                raise ValueError("MESSAGE-INTEGRITY-SHA256 length must be 16..32, step 4")
            total += (24 if sha1 else 0) + (4 + sha256_length if sha256 else 0)
        if total > 0xFFFF:
            raise ValueError("STUN message too long")
        if integrity_key is not None:
            if sha1:
                head = _HEADER.pack(mtype, len(body) + 24, MAGIC_COOKIE) + tid
                body += b"\x00\x08\x00\x14" + hmac_digest(integrity_key, head + body, "sha1")
            if sha256:
                head = _HEADER.pack(mtype, len(body) + 4 + sha256_length, MAGIC_COOKIE) + tid
                mac = hmac_digest(integrity_key, head + body, "sha256")[:sha256_length]
                body += _ATTR_HEADER.pack(_T_MI256, sha256_length) + mac
        if fingerprint:
            head = _HEADER.pack(mtype, len(body) + 8, MAGIC_COOKIE) + tid
            crc = zlib.crc32(body, zlib.crc32(head)) ^ _FINGERPRINT_XOR
            return head + body + b"\x80\x28\x00\x04" + crc.to_bytes(4, "big")
        return _HEADER.pack(mtype, len(body), MAGIC_COOKIE) + tid + body

    def __bytes__(self) -> bytes:
        return self.encode()

    # -- misc -------------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StunMessage):
            return NotImplemented
        return (
            self.method == other.method
            and self.cls == other.cls
            and self.transaction_id == other.transaction_id
            and self.attributes == other.attributes
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        method = _METHODS.get(self.method, self.method)
        names = []
        for t, v in self.attributes:
            attr = ATTRIBUTES_BY_TYPE.get(t)
            if attr is None:
                names.append(f"{t:#06x}={v.hex()}")
            elif attr in (MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256, USERHASH):
                names.append(attr.name)
            else:
                try:
                    names.append(f"{attr.name}={attr.decode(v, self.transaction_id)!r}")
                except StunParseError:
                    names.append(f"{attr.name}=<malformed>")
        name = method.name if isinstance(method, StunMethod) else f"{method:#05x}"
        return (
            f"StunMessage({name} {self.cls.name} tid={self.transaction_id.hex()} "
            f"[{', '.join(names)}])"
        )


def parse_message(
    datagram: bytes | bytearray | memoryview, *, check_fingerprint: bool = True
) -> StunMessage:
    """Parse one STUN message (a whole UDP datagram or one framed TCP message).

    Validates the header (top two bits zero, magic cookie, length = datagram length, multiple of
    4; RFC 8489 §6.3), every attribute's bounds, the FINGERPRINT if present (must be last, must
    match unless ``check_fingerprint`` is False) and the MESSAGE-INTEGRITY(-SHA256) lengths.
    Attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, and
    after MESSAGE-INTEGRITY-SHA256 other than FINGERPRINT, are dropped (RFC 8489 §14.5, §14.6).
    Raises only :class:`StunParseError`.
    """
    if type(datagram) is bytes:
        data = datagram
    else:
        try:
            data = bytes(datagram)
        except (TypeError, ValueError) as exc:
            raise StunParseError("not a bytes-like object") from exc
    n = len(data)
    if n < 20:
        raise StunParseError("shorter than a STUN header")
    message_type, length, cookie = _HEADER.unpack_from(data)
    if message_type & 0xC000:
        raise StunParseError("first two bits of a STUN message must be zero")
    if cookie != MAGIC_COOKIE:
        raise StunParseError("bad magic cookie")
    if length + 20 != n or length & 3:
        raise StunParseError("STUN length does not match the datagram")
    attributes: list[tuple[int, bytes]] = []
    append = attributes.append
    unpack = _ATTR_HEADER.unpack_from
    special = _INTEGRITY_TYPES
    mi_pos = mi256_pos = fp_pos = -1
    after_integrity = False
    pos = 20
    while pos < n:
        t, alen = unpack(data, pos)
        end = pos + 4 + alen
        if end > n:
            raise StunParseError("attribute overruns the message")
        if t in special:
            if t == _T_FP:
                if alen != 4:
                    raise StunParseError("FINGERPRINT must be 4 bytes")
                if end != n:
                    raise StunParseError("attribute after FINGERPRINT")
                if check_fingerprint and (zlib.crc32(data[:pos]) ^ _FINGERPRINT_XOR) != (
                    int.from_bytes(data[pos + 4 : end], "big")
                ):
                    raise StunParseError("FINGERPRINT mismatch")
                fp_pos = pos
                append((t, data[pos + 4 : end]))
            elif t == _T_MI:
                if not after_integrity:
                    if alen != 20:
                        raise StunParseError("MESSAGE-INTEGRITY must be 20 bytes")
                    mi_pos = pos
                    after_integrity = True
                    append((t, data[pos + 4 : end]))
            elif mi256_pos < 0:
                # MESSAGE-INTEGRITY-SHA256 may follow MESSAGE-INTEGRITY (RFC 8489 §14.5)
                if not 16 <= alen <= 32 or alen & 3:
                    raise StunParseError("bad MESSAGE-INTEGRITY-SHA256 length")
                mi256_pos = pos
                after_integrity = True
                append((t, data[pos + 4 : end]))
        elif not after_integrity:
            append((t, data[pos + 4 : end]))
        pos = end + (-alen & 3)
    mc = _MESSAGE_TYPES.get(message_type)
    if mc is None:
        method, cls = _split_message_type(message_type)
        mc = (_METHODS.get(method, method), _CLASSES[cls])
    msg = StunMessage.__new__(StunMessage)
    msg.method, msg.cls = mc
    msg.transaction_id = data[8:20]
    msg.attributes = attributes
    msg._raw = data
    msg._mi_pos = mi_pos
    msg._mi256_pos = mi256_pos
    msg._fp_pos = fp_pos
    return msg


def stun_frame_length(data: bytes) -> int | None:
    """Total length of the STUN message starting ``data`` (stream framing, RFC 8489 §6.2.2).

    None if fewer than 4 bytes are available yet.
    """
    if len(data) < 4:
        return None
    return 20 + ((data[2] << 8) | data[3])


# --------------------------------------------------------------------------------------------
# Demultiplexing (RFC 7983) and TURN ChannelData (RFC 8656 §12.4)
# --------------------------------------------------------------------------------------------


class PacketKind(enum.Enum):
    """What a datagram on a shared port is, by its first byte (RFC 7983 §7)."""

    STUN = "stun"
    ZRTP = "zrtp"
    DTLS = "dtls"
    CHANNEL_DATA = "channel-data"
    RTP = "rtp"  # RTP or RTCP
    UNKNOWN = "unknown"


def is_stun(data: bytes) -> bool:
    """First byte 0-3, at least a header, and the magic cookie (RFC 7983 §7, RFC 8489 §6.3)."""
    return len(data) >= 20 and data[0] < 4 and data[4:8] == _COOKIE


def is_channel_data(data: bytes) -> bool:
    """First byte 64-79: a TURN ChannelData message (RFC 7983 §7, RFC 8656 §12.4)."""
    return len(data) >= 4 and 64 <= data[0] <= 79


def classify_packet(data: bytes) -> PacketKind:
    """Demultiplex by the first byte as RFC 7983 §7 describes."""
    if not data:
        return PacketKind.UNKNOWN
    b = data[0]
    if b < 4:
        return PacketKind.STUN if is_stun(data) else PacketKind.UNKNOWN
    if 16 <= b <= 19:
        return PacketKind.ZRTP
    if 20 <= b <= 63:
        return PacketKind.DTLS
    if 64 <= b <= 79:
        return PacketKind.CHANNEL_DATA if len(data) >= 4 else PacketKind.UNKNOWN
    if 128 <= b <= 191:
        return PacketKind.RTP
    return PacketKind.UNKNOWN


@dataclass(frozen=True, slots=True)
class ChannelData:
    """A TURN ChannelData message: channel number 0x4000-0x4FFF and application data."""

    channel: int
    data: bytes


def parse_channel_data(data: bytes) -> ChannelData:
    """Parse ChannelData (RFC 8656 §12.4); trailing padding is allowed, truncation is not."""
    if len(data) < 4:
        raise StunParseError("ChannelData shorter than 4 bytes")
    channel = (data[0] << 8) | data[1]
    if not 0x4000 <= channel <= 0x4FFF:
        raise StunParseError(f"channel number out of range: {channel:#06x}")
    length = (data[2] << 8) | data[3]
    if 4 + length > len(data):
        raise StunParseError("ChannelData length exceeds the datagram")
    return ChannelData(channel, bytes(data[4 : 4 + length]))


def encode_channel_data(channel: int, payload: bytes, *, pad: bool = False) -> bytes:
    """Build ChannelData; ``pad`` to 4 bytes as required over stream transports (§12.5)."""
    if not 0x4000 <= channel <= 0x4FFF:
        raise ValueError(f"channel number out of range: {channel:#06x}")
    if len(payload) > 0xFFFF:
        raise ValueError("ChannelData payload too long")
    out = _ATTR_HEADER.pack(channel, len(payload)) + payload
    if pad and len(payload) & 3:
        out += bytes(-len(payload) & 3)
    return out
