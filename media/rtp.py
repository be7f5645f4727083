"""RTP packet codec (RFC 3550 §5.1) and sequence-number arithmetic.

This module sits on the 20 ms hot path: :meth:`RtpPacket.parse` and :meth:`RtpPacket.serialize`
use precompiled :class:`struct.Struct` objects and take a fast path for the common packet (no
CSRC, no extension, no padding).

Header extensions (RFC 3550 §5.3.1) are kept as the 16-bit profile value plus the raw data;
:meth:`RtpHeaderExtension.elements` decodes RFC 8285 one-byte (profile ``0xBEDE``) and
two-byte (profile ``0x100x``) elements on demand, and :meth:`RtpHeaderExtension.from_elements`
builds them.

The only exception the parsers raise is :class:`RtpParseError` (a :class:`ValueError`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "RTP_VERSION",
    "RtpHeaderExtension",
    "RtpPacket",
    "RtpParseError",
    "SequenceExtender",
    "seq_add",
    "seq_diff",
    "seq_gt",
    "seq_lt",
    "timestamp_diff",
]

RTP_VERSION = 2

_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, seq, timestamp, SSRC (RFC 3550 §5.1)
_EXT_HEADER = struct.Struct("!HH")  # defined-by-profile, length in 32-bit words (§5.3.1)
_U32 = struct.Struct("!I")
_HEADER_SIZE = _HEADER.size

#: RFC 8285 §4.2: the one-byte header form is signalled by the profile value 0xBEDE.
ONE_BYTE_PROFILE = 0xBEDE
#: RFC 8285 §4.3: the two-byte form uses 0x100 in the top 12 bits, 4 "appbits" below.
TWO_BYTE_PROFILE = 0x1000
_TWO_BYTE_MASK = 0xFFF0


class RtpParseError(ValueError):
    """A datagram is not a well-formed RTP packet (the only exception the parsers raise)."""


@dataclass(slots=True)
class RtpHeaderExtension:
    """The RTP header extension (RFC 3550 §5.3.1): profile word and raw data.

    ``data`` is the extension body; its length must be a multiple of 4 when serialized (the
    length field counts 32-bit words).
    """

    profile: int
    data: bytes = b""

    @property
    def is_one_byte(self) -> bool:
        """True for the RFC 8285 §4.2 one-byte header form."""
        return self.profile == ONE_BYTE_PROFILE

    @property
    def is_two_byte(self) -> bool:
        """True for the RFC 8285 §4.3 two-byte header form."""
        return (self.profile & _TWO_BYTE_MASK) == TWO_BYTE_PROFILE

    def elements(self) -> dict[int, bytes]:
        """Decode the RFC 8285 elements as ``{id: value}``.

        Padding octets (ID 0) between elements are skipped (§4.2, §4.3). In the one-byte form
        the ID 15 is reserved and stops parsing (§4.2). Raises :class:`RtpParseError` for a profile
        that is not an RFC 8285 form or for an element that runs past the data.
        """
        data = self.data
        n = len(data)
        out: dict[int, bytes] = {}
        i = 0
        if self.is_one_byte:
            while i < n:
                b = data[i]
                ident = b >> 4
                if ident == 0:  # a padding octet; its length bits are ignored (as libwebrtc)
                    i += 1
                    continue
                if ident == 15:
                    break
                length = (b & 0x0F) + 1
                i += 1
                if i + length > n:
                    raise RtpParseError("one-byte header extension element overruns the data")
                out[ident] = data[i : i + length]
                i += length
            return out
        if self.is_two_byte:
            while i < n:
                ident = data[i]
                if ident == 0:
                    i += 1
                    continue
                if i + 1 >= n:
                    raise RtpParseError("two-byte header extension element truncated")
                length = data[i + 1]
                i += 2
                if i + length > n:
                    raise RtpParseError("two-byte header extension element overruns the data")
                out[ident] = data[i : i + length]
                i += length
            return out
        raise RtpParseError(f"header extension profile 0x{self.profile:04x} is not RFC 8285")

    @classmethod
    def from_elements(cls, elements: Mapping[int, bytes]) -> RtpHeaderExtension:
        """Build an RFC 8285 extension, one-byte form when every element allows it.

        One-byte form: IDs 1-14, values of 1-16 bytes (§4.2); otherwise the two-byte form with
        appbits 0: IDs 1-255, values of 0-255 bytes (§4.3). The data is zero-padded to a
        multiple of 4 bytes.
        """
        items = sorted(elements.items())
        for ident, value in items:
            if not 1 <= ident <= 255:
                raise ValueError(f"extension element ID {ident} out of range 1-255")
            if len(value) > 255:
                raise ValueError("extension element longer than 255 bytes")
        one_byte = all(1 <= ident <= 14 and 1 <= len(value) <= 16 for ident, value in items)
        parts: list[bytes] = []
        if one_byte:
            for ident, value in items:
                parts.append(bytes(((ident << 4) | (len(value) - 1),)))
                parts.append(value)
            profile = ONE_BYTE_PROFILE
        else:
            for ident, value in items:
                parts.append(bytes((ident, len(value))))
                parts.append(value)
            profile = TWO_BYTE_PROFILE
        data = b"".join(parts)
        data += b"\x00" * (-len(data) % 4)
        return cls(profile, data)


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1).

    ``padding`` is the number of padding octets at the end of the packet including the final
    count octet (§5.1 "P"); 0 means no padding.
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = field(default=())
    extension: RtpHeaderExtension | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        """Parse a datagram; raises only :class:`RtpParseError`."""
        n = len(data)
        if n < _HEADER_SIZE:
            raise RtpParseError(f"RTP packet too short ({n} bytes)")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 == 0x80:  # fast path: V=2, no padding, no extension, no CSRC
            return cls(b1 & 0x7F, seq, ts, ssrc, bytes(data[_HEADER_SIZE:]), bool(b1 & 0x80))
        if b0 >> 6 != RTP_VERSION:
            raise RtpParseError(f"RTP version {b0 >> 6} is not 2")
        offset = _HEADER_SIZE
        cc = b0 & 0x0F
        csrcs: tuple[int, ...] = ()
        if cc:
            end = offset + 4 * cc
            if end > n:
                raise RtpParseError("CSRC list runs past the packet")
            csrcs = struct.unpack_from(f"!{cc}I", data, offset)
            offset = end
        extension = None
        if b0 & 0x10:
            if offset + 4 > n:
                raise RtpParseError("header extension header runs past the packet")
            profile, words = _EXT_HEADER.unpack_from(data, offset)
            offset += 4
            end = offset + 4 * words
            if end > n:
                raise RtpParseError("header extension runs past the packet")
            extension = RtpHeaderExtension(profile, bytes(data[offset:end]))
            offset = end
        end = n
        padding = 0
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0:
                raise RtpParseError("padding bit set but padding count is 0")
            end = n - padding
            if end < offset:
                raise RtpParseError("padding count exceeds the packet")
        return cls(
            b1 & 0x7F,
            seq,
            ts,
            ssrc,
            bytes(data[offset:end]),
            bool(b1 & 0x80),
            csrcs,
            extension,
            padding,
        )

    def serialize(self) -> bytes:
        """Encode the packet. Raises :class:`ValueError` for out-of-range fields."""
        csrcs = self.csrcs
        ext = self.extension
        padding = self.padding
        if len(csrcs) > 15:
            raise ValueError("at most 15 CSRCs (RFC 3550 §5.1 CC)")
        if not 0 <= padding <= 255:
            raise ValueError("padding must be 0-255 octets")
        b0 = 0x80 | len(csrcs)
        if padding:
            b0 |= 0x20
        if ext is not None:
            b0 |= 0x10
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of range 0-127")
        b1 = self.payload_type | (0x80 if self.marker else 0)
        try:
            header = _HEADER.pack(b0, b1, self.sequence_number, self.timestamp, self.ssrc)
        except struct.error as exc:
            raise ValueError(f"RTP header field out of range: {exc}") from None
        if b0 == 0x80:
            return header + self.payload
        parts = [header]
        if csrcs:
            parts.append(struct.pack(f"!{len(csrcs)}I", *csrcs))
        if ext is not None:
            if len(ext.data) % 4:
                raise ValueError("header extension data must be a multiple of 4 bytes")
            parts.append(_EXT_HEADER.pack(ext.profile, len(ext.data) // 4))
            parts.append(ext.data)
        parts.append(self.payload)
        if padding:
            parts.append(b"\x00" * (padding - 1) + bytes((padding,)))
        return b"".join(parts)


# --- sequence-number and timestamp arithmetic -------------------------------------------------

_SEQ_MOD = 1 << 16
_SEQ_HALF = 1 << 15
_TS_MOD = 1 << 32
_TS_HALF = 1 << 31


def seq_add(seq: int, n: int) -> int:
    """``seq + n`` modulo 2**16."""
    return (seq + n) & 0xFFFF


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 16-bit sequence numbers, in [-32768, 32767]."""
    return ((a - b + _SEQ_HALF) & 0xFFFF) - _SEQ_HALF


def seq_lt(a: int, b: int) -> bool:
    """True if ``a`` comes before ``b`` (serial-number arithmetic, RFC 1982 style)."""
    return seq_diff(a, b) < 0


def seq_gt(a: int, b: int) -> bool:
    """True if ``a`` comes after ``b``."""
    return seq_diff(a, b) > 0


def timestamp_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 32-bit RTP timestamps."""
    return ((a - b + _TS_HALF) & 0xFFFFFFFF) - _TS_HALF


class SequenceExtender:
    """Extend 16-bit sequence numbers to 32 bits (cycles << 16 | seq), RFC 3550 §A.1.

    Follows the spirit of ``update_seq()`` in RFC 3550 §A.1: a packet ahead of the highest seen
    by less than ``max_dropout`` advances the highest sequence number (counting a wrap as a new
    cycle); a packet behind it by at most ``max_misorder`` is a late/duplicate packet and gets
    the extended number of its own cycle; anything else is a jump. After a jump, two
    consecutive packets (``s`` then ``s + 1``) resynchronise onto the new numbering (the source
    restarted); a lone stray packet does not.
    """

    __slots__ = ("_bad_seq", "_cycles", "_max", "max_dropout", "max_misorder")

    def __init__(self, max_dropout: int = 3000, max_misorder: int = 100) -> None:
        self.max_dropout = max_dropout
        self.max_misorder = max_misorder
        self._max: int | None = None
        self._cycles = 0
        self._bad_seq: int | None = None

    @property
    def highest(self) -> int | None:
        """Highest extended sequence number seen, or None before the first packet."""
        if self._max is None:
            return None
        return self._cycles + self._max

    @property
    def cycles(self) -> int:
        """Count of sequence-number wraps, shifted left by 16 (RFC 3550 §A.1 ``cycles``)."""
        return self._cycles

    def extend(self, seq: int) -> int:
        """Return the extended sequence number for ``seq`` and update the state."""
        seq &= 0xFFFF
        if self._max is None:
            self._max = seq
            return seq
        delta = (seq - self._max) & 0xFFFF
        if delta < self.max_dropout:
            if seq < self._max:
                self._cycles += _SEQ_MOD
            self._max = seq
            self._bad_seq = None
            return self._cycles + seq
        if delta >= _SEQ_MOD - self.max_misorder:
            # late or duplicate: belongs to this cycle unless it precedes the latest wrap
            if seq > self._max:
                return max(self._cycles - _SEQ_MOD, 0) + seq
            return self._cycles + seq
        # a big jump: resync if this follows the previous stray packet
        if self._bad_seq is not None and seq == self._bad_seq:
            self._cycles += _SEQ_MOD if seq < self._max else 0
            self._max = seq
            self._bad_seq = None
            return self._cycles + seq
        self._bad_seq = (seq + 1) & 0xFFFF
        return self._cycles + seq

    def reset(self) -> None:
        """Forget everything (a new source)."""
        self._max = None
        self._cycles = 0
        self._bad_seq = None
