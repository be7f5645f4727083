"""Compound RTCP codec (RFC 3550 §6.4-6.7), NTP time helpers and RTP/RTCP demultiplexing.

Packets: :class:`SenderReport` (SR, §6.4.1), :class:`ReceiverReport` (RR, §6.4.2) with
:class:`ReportBlock` entries, :class:`SourceDescription` (SDES, §6.5), :class:`Goodbye`
(BYE, §6.6), :class:`ApplicationDefined` (APP, §6.7); any other packet type is kept raw as
:class:`UnknownRtcpPacket` (so RFC 4585 feedback or XR survive a round trip).

The parser is tolerant: it only insists on what it needs to walk the compound packet
(version 2, lengths that fit). ``parse_rtcp(data, strict=True)`` adds the RFC 3550 §A.2
validity checks. The builder is strict: :func:`serialize_rtcp` refuses out-of-range fields and,
for a compound packet, one that does not start with SR/RR or lacks an SDES CNAME (§6.1).

The only exception the parser raises is :class:`RtcpParseError` (a :class:`ValueError`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

__all__ = [
    "NTP_UNIX_OFFSET",
    "ApplicationDefined",
    "Goodbye",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "RtcpPacketType",
    "RtcpParseError",
    "SdesChunk",
    "SdesItemType",
    "SenderReport",
    "SourceDescription",
    "UnknownRtcpPacket",
    "delay_to_dlsr",
    "is_rtcp",
    "ntp_from_unix",
    "ntp_middle32",
    "parse_rtcp",
    "round_trip_time",
    "serialize_rtcp",
    "unix_from_ntp",
]

#: Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
NTP_UNIX_OFFSET = 2208988800

_COMMON = struct.Struct("!BBH")  # V/P/count, PT, length in words minus one (§6.4.1)
_SR_INFO = struct.Struct("!IIIIII")  # SSRC, NTP msw, NTP lsw, RTP ts, packets, octets
_U32 = struct.Struct("!I")
_BLOCK = struct.Struct("!IIIIII")  # SSRC, fraction|cumulative, ext. seq, jitter, LSR, DLSR
_APP_HEAD = struct.Struct("!I4s")


class RtcpParseError(ValueError):
    """Bytes that are not a valid (compound) RTCP packet: the only exception of the parser."""


class RtcpPacketType(IntEnum):
    """RTCP packet types (RFC 3550 §12.1)."""

    SR = 200
    RR = 201
    SDES = 202
    BYE = 203
    APP = 204


class SdesItemType(IntEnum):
    """SDES item types (RFC 3550 §6.5, §12.2)."""

    END = 0
    CNAME = 1
    NAME = 2
    EMAIL = 3
    PHONE = 4
    LOC = 5
    TOOL = 6
    NOTE = 7
    PRIV = 8


def _u32(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} {value} does not fit 32 bits")


@dataclass(slots=True)
class ReportBlock:
    """A reception report block (RFC 3550 §6.4.1).

    ``cumulative_lost`` is signed 24-bit (duplicates can make it negative);
    ``highest_seq`` is the extended highest sequence number received; ``lsr`` and ``dlsr``
    are in NTP short format (1/65536 s).
    """

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_seq: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    SIZE: ClassVar[int] = 24

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, word, seq, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        lost = word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(ssrc, word >> 24, lost, seq, jitter, lsr, dlsr)

    def serialize(self) -> bytes:
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError("fraction_lost must be 0-255")
        if not -(1 << 23) <= self.cumulative_lost < (1 << 23):
            raise ValueError("cumulative_lost does not fit a signed 24-bit field")
        for name in ("ssrc", "highest_seq", "jitter", "lsr", "dlsr"):
            _u32(name, getattr(self, name))
        word = (self.fraction_lost << 24) | (self.cumulative_lost & 0xFFFFFF)
        return _BLOCK.pack(self.ssrc, word, self.highest_seq, self.jitter, self.lsr, self.dlsr)


def _parse_blocks(body: bytes, offset: int, count: int) -> list[ReportBlock]:
    return [ReportBlock.parse(body, offset + i * ReportBlock.SIZE) for i in range(count)]


@dataclass(slots=True)
class SenderReport:
    """SR (RFC 3550 §6.4.1). ``ntp_timestamp`` is the full 64-bit NTP time."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""  # profile-specific extension (§6.4.1), kept raw

    packet_type: ClassVar[int] = RtcpPacketType.SR

    @classmethod
    def _parse(cls, count: int, body: bytes) -> SenderReport:
        need = _SR_INFO.size + count * ReportBlock.SIZE
        if len(body) < need:
            raise RtcpParseError(f"SR with {count} report blocks is truncated")
        ssrc, msw, lsw, rtp_ts, packets, octets = _SR_INFO.unpack_from(body)
        blocks = _parse_blocks(body, _SR_INFO.size, count)
        return cls(ssrc, (msw << 32) | lsw, rtp_ts, packets, octets, blocks, body[need:])

    def _body(self) -> tuple[int, bytes]:
        if not 0 <= self.ntp_timestamp < (1 << 64):
            raise ValueError("ntp_timestamp must fit 64 bits")
        for name in ("ssrc", "rtp_timestamp", "packet_count", "octet_count"):
            _u32(name, getattr(self, name))
        head = _SR_INFO.pack(
            self.ssrc,
            self.ntp_timestamp >> 32,
            self.ntp_timestamp & 0xFFFFFFFF,
            self.rtp_timestamp,
            self.packet_count,
            self.octet_count,
        )
        return len(self.reports), head + _blocks_bytes(self.reports) + self.extension


@dataclass(slots=True)
class ReceiverReport:
    """RR (RFC 3550 §6.4.2)."""

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""

    packet_type: ClassVar[int] = RtcpPacketType.RR

    @classmethod
    def _parse(cls, count: int, body: bytes) -> ReceiverReport:
        need = 4 + count * ReportBlock.SIZE
        if len(body) < need:
            raise RtcpParseError(f"RR with {count} report blocks is truncated")
        (ssrc,) = _U32.unpack_from(body)
        return cls(ssrc, _parse_blocks(body, 4, count), body[need:])

    def _body(self) -> tuple[int, bytes]:
        _u32("ssrc", self.ssrc)
        return len(self.reports), _U32.pack(self.ssrc) + _blocks_bytes(
            self.reports
        ) + self.extension


def _blocks_bytes(blocks: Sequence[ReportBlock]) -> bytes:
    if len(blocks) > 31:
        raise ValueError("at most 31 report blocks per packet (5-bit count)")
    return b"".join(b.serialize() for b in blocks)


@dataclass(slots=True)
class SdesChunk:
    """One SDES chunk: an SSRC/CSRC and its items as ``(type, value)`` pairs (§6.5).

    A PRIV item's value is kept raw (prefix length, prefix, value: §6.5.8).
    """

    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def cname(self) -> str | None:
        """The CNAME item (§6.5.1) decoded as UTF-8, or None."""
        for kind, value in self.items:
            if kind == SdesItemType.CNAME:
                return value.decode("utf-8", "replace")
        return None

    def get(self, kind: int) -> bytes | None:
        """The first item of the given type, or None."""
        for k, value in self.items:
            if k == kind:
                return value
        return None


@dataclass(slots=True)
class SourceDescription:
    """SDES (RFC 3550 §6.5)."""

    chunks: list[SdesChunk] = field(default_factory=list)

    packet_type: ClassVar[int] = RtcpPacketType.SDES

    @classmethod
    def with_cname(cls, ssrc: int, cname: str) -> SourceDescription:
        """The usual SDES: one chunk with a CNAME."""
        return cls([SdesChunk(ssrc, [(SdesItemType.CNAME, cname.encode())])])

    @classmethod
    def _parse(cls, count: int, body: bytes) -> SourceDescription:
        chunks: list[SdesChunk] = []
        offset = 0
        n = len(body)
        for _ in range(count):
            if offset + 4 > n:
                raise RtcpParseError("SDES chunk truncated")
            (ssrc,) = _U32.unpack_from(body, offset)
            offset += 4
            items: list[tuple[int, bytes]] = []
            while True:
                if offset >= n:
                    raise RtcpParseError("SDES chunk lacks its terminating null item")
                kind = body[offset]
                if kind == SdesItemType.END:
                    offset += 1
                    offset += -offset % 4  # null octets up to the next 32-bit boundary
                    break
                if offset + 2 > n:
                    raise RtcpParseError("SDES item truncated")
                length = body[offset + 1]
                end = offset + 2 + length
                if end > n:
                    raise RtcpParseError("SDES item runs past the packet")
                items.append((kind, body[offset + 2 : end]))
                offset = end
            chunks.append(SdesChunk(ssrc, items))
        return cls(chunks)

    def _body(self) -> tuple[int, bytes]:
        if len(self.chunks) > 31:
            raise ValueError("at most 31 SDES chunks per packet")
        parts: list[bytes] = []
        for chunk in self.chunks:
            _u32("ssrc", chunk.ssrc)
            data = bytearray(_U32.pack(chunk.ssrc))
            for kind, value in chunk.items:
                if not 1 <= kind <= 255:
                    raise ValueError(f"SDES item type {kind} out of range 1-255")
                if len(value) > 255:
                    raise ValueError("SDES item longer than 255 octets")
                data += bytes((kind, len(value))) + value
            data += b"\x00" * (4 - len(data) % 4)  # at least one null octet (§6.5)
            parts.append(bytes(data))
        return len(self.chunks), b"".join(parts)


@dataclass(slots=True)
class Goodbye:
    """BYE (RFC 3550 §6.6) with an optional reason."""

    ssrcs: list[int] = field(default_factory=list)
    reason: str | None = None

    packet_type: ClassVar[int] = RtcpPacketType.BYE

    @classmethod
    def _parse(cls, count: int, body: bytes) -> Goodbye:
        need = 4 * count
        if len(body) < need:
            raise RtcpParseError("BYE SSRC list truncated")
        ssrcs = list(struct.unpack_from(f"!{count}I", body))
        reason = None
        if len(body) > need:
            length = body[need]
            if need + 1 + length > len(body):
                raise RtcpParseError("BYE reason runs past the packet")
            reason = body[need + 1 : need + 1 + length].decode("utf-8", "replace")
        return cls(ssrcs, reason)

    def _body(self) -> tuple[int, bytes]:
        if len(self.ssrcs) > 31:
            raise ValueError("at most 31 SSRCs per BYE")
        for ssrc in self.ssrcs:
            _u32("ssrc", ssrc)
        data = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason is not None:
            text = self.reason.encode()
            if len(text) > 255:
                raise ValueError("BYE reason longer than 255 octets")
            data += bytes((len(text),)) + text
            data += b"\x00" * (-len(data) % 4)
        return len(self.ssrcs), data


@dataclass(slots=True)
class ApplicationDefined:
    """APP (RFC 3550 §6.7): 5-bit subtype, SSRC, 4-character name, data."""

    subtype: int
    ssrc: int
    name: bytes
    data: bytes = b""

    packet_type: ClassVar[int] = RtcpPacketType.APP

    @classmethod
    def _parse(cls, count: int, body: bytes) -> ApplicationDefined:
        if len(body) < _APP_HEAD.size:
            raise RtcpParseError("APP packet truncated")
        ssrc, name = _APP_HEAD.unpack_from(body)
        return cls(count, ssrc, name, body[_APP_HEAD.size :])

    def _body(self) -> tuple[int, bytes]:
        if not 0 <= self.subtype <= 31:
            raise ValueError("APP subtype must be 0-31")
        if len(self.name) != 4:
            raise ValueError("APP name must be exactly 4 octets")
        if len(self.data) % 4:
            raise ValueError("APP data must be a multiple of 4 octets")
        _u32("ssrc", self.ssrc)
        return self.subtype, _APP_HEAD.pack(self.ssrc, self.name) + self.data


@dataclass(slots=True)
class UnknownRtcpPacket:
    """A packet type this module does not decode, kept raw (body excludes the 4-byte header)."""

    packet_type: int  # an instance field here, a ClassVar on the decoded packet classes
    count: int
    body: bytes

    def _body(self) -> tuple[int, bytes]:
        if not 0 <= self.count <= 31:
            raise ValueError("count must be 0-31")
        if not 0 <= self.packet_type <= 255:
            raise ValueError("packet type must be 0-255")
        if len(self.body) % 4:
            raise ValueError("body must be a multiple of 4 octets")
        return self.count, self.body


RtcpPacket = (
    SenderReport
    | ReceiverReport
    | SourceDescription
    | Goodbye
    | ApplicationDefined
    | UnknownRtcpPacket
)

_PARSERS: dict[int, Callable[[int, bytes], RtcpPacket]] = {
    RtcpPacketType.SR: SenderReport._parse,
    RtcpPacketType.RR: ReceiverReport._parse,
    RtcpPacketType.SDES: SourceDescription._parse,
    RtcpPacketType.BYE: Goodbye._parse,
    RtcpPacketType.APP: ApplicationDefined._parse,
}


def parse_rtcp(data: bytes | bytearray | memoryview, *, strict: bool = False) -> list[RtcpPacket]:
    """Parse a (compound) RTCP packet into its packets.

    Always checked: version 2 in every packet, each length fits, a set padding bit has a
    sane padding count. With ``strict=True`` the RFC 3550 §A.2 checks are added: the first
    packet is SR or RR, only the last packet may be padded, and the lengths add up exactly to
    the datagram (they always must; trailing bytes shorter than a header are rejected too).
    """
    packets: list[RtcpPacket] = []
    n = len(data)
    if n < 4:
        raise RtcpParseError(f"RTCP packet too short ({n} bytes)")
    offset = 0
    while offset < n:
        if offset + 4 > n:
            raise RtcpParseError("trailing bytes after the last RTCP packet")
        b0, pt, words = _COMMON.unpack_from(data, offset)
        if b0 >> 6 != 2:
            raise RtcpParseError(f"RTCP version {b0 >> 6} is not 2")
        end = offset + 4 * (words + 1)
        if end > n:
            raise RtcpParseError("RTCP packet length runs past the datagram")
        body = bytes(data[offset + 4 : end])
        if b0 & 0x20:
            if strict and end != n:
                raise RtcpParseError("padding bit set on a packet that is not the last")
            pad = body[-1] if body else 0
            if pad == 0 or pad > len(body):
                raise RtcpParseError("invalid RTCP padding count")
            body = body[:-pad]
        count = b0 & 0x1F
        if strict and offset == 0 and pt not in (RtcpPacketType.SR, RtcpPacketType.RR):
            raise RtcpParseError("compound RTCP packet does not start with SR or RR")
        parser = _PARSERS.get(pt)
        try:
            if parser is None:
                packets.append(UnknownRtcpPacket(pt, count, body))
            else:
                packets.append(parser(count, body))
        except struct.error as exc:  # pragma: no cover - every read is bounds-checked
            raise RtcpParseError(str(exc)) from None
        offset = end
    return packets


def _serialize_one(packet: RtcpPacket, padding: int = 0) -> bytes:
    count, body = packet._body()
    if padding:
        if not 4 <= padding <= 255 or padding % 4:
            raise ValueError("padding must be a multiple of 4 in 4-252")
        body += b"\x00" * (padding - 1) + bytes((padding,))
    if len(body) % 4:
        raise ValueError("RTCP packet body is not a multiple of 4 octets")
    words = len(body) // 4
    if words > 0xFFFF:
        raise ValueError("RTCP packet too long")
    b0 = 0x80 | (0x20 if padding else 0) | count
    return _COMMON.pack(b0, packet.packet_type, words) + body


def serialize_rtcp(
    packets: Sequence[RtcpPacket], *, compound: bool = True, padding: int = 0
) -> bytes:
    """Build a compound RTCP packet.

    With ``compound=True`` (the default) it must start with an SR or RR and contain an SDES
    with a CNAME item (RFC 3550 §6.1); ``compound=False`` skips those checks (for RFC 5506
    reduced-size RTCP or a lone packet). ``padding`` octets are appended to the last packet.
    Raises :class:`ValueError` for anything that cannot be encoded faithfully.
    """
    if not packets:
        raise ValueError("no RTCP packets to serialize")
    if compound:
        if not isinstance(packets[0], SenderReport | ReceiverReport):
            raise ValueError("a compound RTCP packet must start with SR or RR (RFC 3550 §6.1)")
        if not any(
            isinstance(p, SourceDescription) and any(c.cname is not None for c in p.chunks)
            for p in packets
        ):
            raise ValueError("a compound RTCP packet must carry an SDES CNAME (RFC 3550 §6.1)")
    last = len(packets) - 1
    return b"".join(_serialize_one(p, padding if i == last else 0) for i, p in enumerate(packets))


# --- RFC 5761 demultiplexing ------------------------------------------------------------------


def is_rtcp(packet: bytes | bytearray | memoryview) -> bool:
    """True if a datagram on a muxed RTP/RTCP port is RTCP (RFC 5761 §4).

    RTCP packet types 192-223 occupy the second octet where RTP has marker + payload type
    64-95, a range RFC 5761 keeps free of RTP payload types.
    """
    return len(packet) >= 2 and (packet[0] >> 6) == 2 and 192 <= packet[1] <= 223


# --- NTP time (RFC 3550 §4) -------------------------------------------------------------------


def ntp_from_unix(seconds: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) for a Unix time in seconds."""
    value = round((seconds + NTP_UNIX_OFFSET) * (1 << 32))
    return value & 0xFFFFFFFFFFFFFFFF


def unix_from_ntp(ntp: int) -> float:
    """Unix time in seconds for a 64-bit NTP timestamp."""
    return ntp / (1 << 32) - NTP_UNIX_OFFSET


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (the LSR / "NTP short" format, §6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def delay_to_dlsr(seconds: float) -> int:
    """A delay in seconds as DLSR units of 1/65536 s (§6.4.1), clamped to 32 bits."""
    return max(0, min(int(seconds * 65536), 0xFFFFFFFF))


def round_trip_time(arrival_ntp: int, lsr: int, dlsr: int) -> float | None:
    """Round-trip time in seconds from a report block (RFC 3550 §6.4.1, Figure 2).

    ``arrival_ntp`` is the full 64-bit NTP time at which the report block arrived; RTT =
    A - LSR - DLSR in 1/65536 s. Returns None when LSR is 0 (no SR received yet); a slightly
    negative result (clock granularity) is reported as 0.0.
    """
    if lsr == 0:
        return None
    delta = (ntp_middle32(arrival_ntp) - lsr - dlsr) & 0xFFFFFFFF
    if delta >= 1 << 31:
        return 0.0
    return delta / 65536
