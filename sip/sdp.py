"""RFC 8866 Session Description Protocol: a data model, a tolerant parser and a faithful serializer.

The parser accepts CRLF, bare LF (and a lone CR) as line ends and keeps everything it does
not understand: unknown attributes stay in the attribute list in their original order, and lines
with an unknown (or misplaced / repeated single-valued) type letter are kept as :class:`SdpLine`
entries of the section they appeared in. The serializer always writes CRLF and emits the lines of a
section in the order RFC 8866 §5 prescribes (v o s i u e p c b t r z k a, then m sections with
m i c b k a); kept unknown lines follow the attributes of their section. A description that is
already in canonical order therefore serializes back to the same text.

:class:`SdpParseError` (a :class:`ValueError`) is the only exception :func:`parse_sdp` raises.

Speed: a description written the usual way (CRLF lines, no blank lines, each section's ``a=`` lines
after its other lines) is cut into sections and attribute lines by C-level splits, and the usual
v/o/s/c/t and m/c head lines are read with one regex match per section; one search per section
for a CR or LF left in its ``a=`` texts tells that the splits saw every line end.  Anything else
takes the line-by-line parser, which gives the same model (tests/unit/test_parse_fastpaths.py).
Every ``a=`` line becomes its :class:`Attribute` as the description is parsed (one C-level
partition each, the slots set on a bare instance).  :meth:`MediaDescription.codecs` computes the
codec map from the attributes on every call (nothing is kept between calls).

ICE attributes (``a=candidate``, ``a=ice-ufrag``, ``a=ice-pwd``, ``a=ice-options``,
``a=end-of-candidates``, ``a=remote-candidates``) are deliberately kept as plain attributes whose
value is preserved byte for byte; their meaning belongs to the ``ice`` package (RFC 8839).
:meth:`MediaDescription.candidates` gives the ``a=candidate`` lines in their parsed SDP form
(:class:`CandidateAttribute`, RFC 8839 §5.1), and :meth:`MediaDescription.codecs` the
rtpmap/fmtp pairs as :class:`Codec` objects, each in one pass over the attribute list.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "STATIC_PAYLOAD_TYPES",
    "Attribute",
    "Bandwidth",
    "CandidateAttribute",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "Origin",
    "RtcpAttribute",
    "SdpLine",
    "SdpParseError",
    "SessionDescription",
    "Timing",
    "parse_sdp",
]

CRLF = "\r\n"
_LINE_SPLIT = re.compile(r"\r\n|\r|\n")
_new_object = object.__new__  # an instance without its __init__ (the parser's hot paths)


class SdpParseError(ValueError):
    """A session description could not be parsed (the only exception :func:`parse_sdp` raises)."""


def _uint(text: str, what: str) -> int:
    """Parse a non-negative decimal integer (ASCII digits only, unlike :func:`int`)."""
    # str.isdigit() alone would also accept non-ASCII digits
    if not (text.isdigit() and text.isascii() and len(text) <= 30):
        raise SdpParseError(f"{what}: expected a non-negative integer, got {text[:40]!r}")
    return int(text)


def _opt_uint(text: str) -> int | None:
    return int(text) if text.isdigit() and text.isascii() and len(text) <= 30 else None


# --------------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------------


class Direction(StrEnum):
    """Media direction attributes (RFC 8866 §6.7, RFC 3264 §5.1 / §6.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, send: bool, receive: bool) -> Direction:
        if send and receive:
            return cls.SENDRECV
        if send:
            return cls.SENDONLY
        if receive:
            return cls.RECVONLY
        return cls.INACTIVE

    def reverse(self) -> Direction:
        """The same stream seen from the other end (sendonly <-> recvonly)."""
        return Direction.from_flags(send=self.receives, receive=self.sends)

    def intersect(self, other: Direction) -> Direction:
        """Directions allowed by both ``self`` and ``other`` (both from the same point of view)."""
        return Direction.from_flags(
            send=self.sends and other.sends, receive=self.receives and other.receives
        )


_DIRECTIONS = frozenset(d.value for d in Direction)


@dataclass(slots=True)
class SdpLine:
    """A line kept verbatim (``<type>=<value>``): an unknown type letter or a misplaced line."""

    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.type}={self.value}"


@dataclass(slots=True)
class Attribute:
    """``a=<name>[:<value>]`` (RFC 8866 §5.13). ``value`` is ``None`` for a property attribute."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"

    @classmethod
    def parse(cls, text: str) -> Attribute:
        name, sep, value = text.partition(":")
        return cls(name, value if sep else None)


@dataclass(slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`` (§5.2)."""

    username: str = "-"
    session_id: str = "0"
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )

    @classmethod
    def parse(cls, text: str) -> Origin:
        parts = text.split()
        if len(parts) < 6:
            raise SdpParseError(f"o= needs 6 fields: {text!r}")
        # Tolerate a username containing spaces: the last five fields are fixed.
        username = " ".join(parts[:-5])
        session_id, version, nettype, addrtype, address = parts[-5:]
        number = _uint(version, "o= sess-version")
        return cls(username, session_id, number, nettype, addrtype, address)


@dataclass(slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (RFC 8866 §5.7).

    For multicast, IP4 addresses carry ``/<ttl>[/<number of addresses>]`` and IP6 addresses
    ``/<number of addresses>``; those suffixes are split into :attr:`ttl` and :attr:`count`.
    """

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"
    ttl: int | None = None
    count: int | None = None

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """``IN IP4`` or ``IN IP6`` chosen from the address; a host name is taken as IP4."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return cls(address)
        return cls(str(ip), "IP6" if ip.version == 6 else "IP4")

    @property
    def is_null(self) -> bool:
        """True for ``0.0.0.0`` / ``::`` (the RFC 2543 hold convention, RFC 3264 §8.4)."""
        return self.address in ("0.0.0.0", "::")

    def __str__(self) -> str:
        address = self.address
        if self.addrtype.upper() == "IP4":
            if self.ttl is not None:
                address += f"/{self.ttl}"
                if self.count is not None:
                    address += f"/{self.count}"
        elif self.count is not None:
            address += f"/{self.count}"
        return f"{self.nettype} {self.addrtype} {address}"

    @classmethod
    def parse(cls, text: str) -> Connection:
        parts = text.split()
        if len(parts) != 3:
            raise SdpParseError(f"c= needs 3 fields: {text!r}")
        nettype, addrtype, address = parts
        ttl = count = None
        kind = addrtype.upper()
        if kind in ("IP4", "IP6") and "/" in address:
            pieces = address.split("/")
            address = pieces[0]
            numbers = [_uint(p, "c= multicast suffix") for p in pieces[1:]]
            if kind == "IP4" and len(numbers) <= 2:
                ttl = numbers[0]
                count = numbers[1] if len(numbers) == 2 else None
            elif kind == "IP6" and len(numbers) == 1:
                count = numbers[0]
            else:
                raise SdpParseError(f"c= too many '/' suffixes: {text!r}")
        return cls(address, addrtype, nettype, ttl, count)


@dataclass(slots=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (RFC 8866 §5.8), e.g. ``AS`` in kbit/s or ``TIAS`` in bit/s."""

    bwtype: str
    bandwidth: int

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"

    @classmethod
    def parse(cls, text: str) -> Bandwidth:
        bwtype, sep, value = text.partition(":")
        if not sep:
            raise SdpParseError(f"b= needs <bwtype>:<bandwidth>: {text!r}")
        return cls(bwtype, _uint(value, "b= bandwidth"))


@dataclass(slots=True)
class Timing:
    """``t=<start-time> <stop-time>`` with its ``r=`` repeat lines kept as text (§5.9, §5.10)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Timing:
        parts = text.split()
        if len(parts) != 2:
            raise SdpParseError(f"t= needs 2 fields: {text!r}")
        return cls(_uint(parts[0], "t= start"), _uint(parts[1], "t= stop"))


@dataclass(frozen=True)
class Codec:
    """An RTP payload format: ``a=rtpmap`` encoding name, clock rate, channels, plus ``a=fmtp``.

    Two codecs :meth:`match` when name (case-insensitive), clock rate and channel count agree; the
    payload type number and fmtp parameters are not part of the identity (RFC 3264 §6.1).
    """

    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    @property
    def encoding(self) -> str:
        """The rtpmap encoding, e.g. ``opus/48000/2`` or ``PCMU/8000``."""
        base = f"{self.name}/{self.clock_rate}"
        return f"{base}/{self.channels}" if self.channels != 1 else base

    @property
    def params(self) -> dict[str, str]:
        """fmtp parameters as ``{name: value}`` (``"0-16"`` gives ``{"0-16": ""}``)."""
        return parse_fmtp_params(self.fmtp)

    def match(self, other: Codec) -> bool:
        return (
            self.name.lower() == other.name.lower()
            and self.clock_rate == other.clock_rate
            and self.channels == other.channels
        )

    def with_fmtp(self, fmtp: str | None) -> Codec:
        return _new_codec(self.name, self.clock_rate, self.channels, fmtp)

    def __str__(self) -> str:
        return self.encoding

    @classmethod
    def parse_encoding(cls, text: str, fmtp: str | None = None) -> Codec | None:
        """Parse ``<name>/<clock rate>[/<channels>]``; None when malformed."""
        parts = text.strip().split("/")
        n = len(parts)
        if n == 2:
            name, rate = parts
            channels = 1
        elif n == 3:
            name, rate, count = parts
            if not (count.isdigit() and count.isascii() and len(count) <= 30):  # as _opt_uint
                return None
            channels = int(count)
        else:
            return None
        if not (name and rate.isdigit() and rate.isascii() and len(rate) <= 30):
            return None
        codec = _new_object(Codec)  # _new_codec(name, int(rate), channels, fmtp), inlined
        state = codec.__dict__
        state["name"] = name
        state["clock_rate"] = int(rate)
        state["channels"] = channels
        state["fmtp"] = fmtp
        return codec


def _new_codec(name: str, clock_rate: int, channels: int, fmtp: str | None) -> Codec:
    """``Codec(name, clock_rate, channels, fmtp)`` without the frozen dataclass's per-field
    ``object.__setattr__`` calls: the fields go straight into the new instance's ``__dict__``
    (the codecs() hot path; a test checks the result is equal)."""
    codec = _new_object(Codec)
    state = codec.__dict__
    state["name"] = name
    state["clock_rate"] = clock_rate
    state["channels"] = channels
    state["fmtp"] = fmtp
    return codec


def parse_fmtp_params(fmtp: str | None) -> dict[str, str]:
    """Split ``a=fmtp`` parameters ``k1=v1; k2=v2`` into a dict (a bare token maps to ``""``)."""
    params: dict[str, str] = {}
    if not fmtp:
        return params
    for item in fmtp.split(";"):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        params[key.strip()] = value.strip()
    return params


def format_fmtp_params(params: dict[str, str]) -> str:
    """Inverse of :func:`parse_fmtp_params`."""
    return ";".join(f"{k}={v}" if v else k for k, v in params.items())


# "0" ... "127": the RTP payload type numbers as an m= line writes them (RFC 3551 §3)
_PAYLOAD_TYPE_NUMBERS = {str(number): number for number in range(128)}

#: RFC 3551 §6 static payload types (used when an m= line lists one without a=rtpmap).
STATIC_PAYLOAD_TYPES: dict[int, Codec] = {
    0: Codec("PCMU", 8000),
    3: Codec("GSM", 8000),
    4: Codec("G723", 8000),
    5: Codec("DVI4", 8000),
    6: Codec("DVI4", 16000),
    7: Codec("LPC", 8000),
    8: Codec("PCMA", 8000),
    9: Codec("G722", 8000),
    10: Codec("L16", 44100, 2),
    11: Codec("L16", 44100),
    12: Codec("QCELP", 8000),
    13: Codec("CN", 8000),
    14: Codec("MPA", 90000),
    15: Codec("G728", 8000),
    16: Codec("DVI4", 11025),
    17: Codec("DVI4", 22050),
    18: Codec("G729", 8000),
    25: Codec("CelB", 90000),
    26: Codec("JPEG", 90000),
    28: Codec("nv", 90000),
    31: Codec("H261", 90000),
    32: Codec("MPV", 90000),
    33: Codec("MP2T", 90000),
    34: Codec("H263", 90000),
}


@dataclass
class RtcpAttribute:
    """``a=rtcp:<port> [<nettype> <addrtype> <connection-address>]`` (RFC 3605 §2.1)."""

    port: int
    address: str | None = None
    addrtype: str = "IP4"
    nettype: str = "IN"

    def __str__(self) -> str:
        if self.address is None:
            return str(self.port)
        return f"{self.port} {self.nettype} {self.addrtype} {self.address}"

    @classmethod
    def parse(cls, text: str) -> RtcpAttribute | None:
        parts = text.split()
        if len(parts) not in (1, 4):
            return None
        port = _opt_uint(parts[0])
        if port is None or port > 65535:
            return None
        if len(parts) == 1:
            return cls(port)
        return cls(port, parts[3], parts[2], parts[1])


_ICE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


_MAX_PRIORITY = 2**31 - 1  # RFC 8445 §5.1.2.1


@dataclass(slots=True)
class CandidateAttribute:
    """``a=candidate`` (RFC 8839 §5.1): one ICE candidate as the SDP grammar spells it.

    ``foundation component transport priority address port typ <type> [raddr <address>]
    [rport <port>] *(<extension name> <extension value>)``.  ``transport`` and ``type`` are kept
    as written (RFC 8839 compares them case-insensitively); ``address`` may be an IP address or
    a host name (an mDNS ``.local`` name, RFC 8839 §5.1).  Extensions (``generation 0``,
    ``tcptype active`` of RFC 6544 ...) are kept in order.  What the candidate means belongs to
    the ``ice`` package; this is only its parsed SDP form.
    """

    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    type: str
    related_address: str | None = None
    related_port: int | None = None
    extensions: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [
            self.foundation,
            str(self.component),
            self.transport,
            str(self.priority),
            self.address,
            str(self.port),
            "typ",
            self.type,
        ]
        if self.related_address is not None:
            parts += ("raddr", self.related_address)
        if self.related_port is not None:
            parts += ("rport", str(self.related_port))
        for name, value in self.extensions:
            parts += (name, value)
        return " ".join(parts)

    @classmethod
    def parse(cls, text: str) -> CandidateAttribute:
        """Parse the value of an ``a=candidate`` line; SdpParseError when malformed.

        Fields are separated by whitespace (the grammar says one SP; other runs are tolerated).
        """
        parts = text.split()
        n = len(parts)
        # 8 fields up to the type, then name/value pairs; an ASCII line has ASCII digits only
        if n < 8 or n & 1 or parts[6] != "typ" or not text.isascii():
            raise SdpParseError(f"a=candidate: bad fields in {text[:80]!r}")
        foundation, component, transport, priority, address, port = parts[:6]
        if not (
            component.isdigit()
            and priority.isdigit()
            and port.isdigit()
            and len(component) <= 3
            and len(priority) <= 10
            and len(port) <= 5
            and 0 < len(foundation) <= 32
            and _ICE_CHARS.issuperset(foundation)
        ):
            raise SdpParseError(f"a=candidate: malformed field in {text[:80]!r}")
        component_id = int(component)
        priority_value = int(priority)
        port_number = int(port)
        if not (0 < component_id <= 256 and 0 < priority_value <= _MAX_PRIORITY) or (
            port_number > 65535
        ):
            raise SdpParseError(f"a=candidate: value out of range in {text[:80]!r}")
        if n == 8:
            return cls(
                foundation, component_id, transport, priority_value, address, port_number, parts[7]
            )
        related_address: str | None = None
        related_port: int | None = None
        i = 8
        if parts[8] == "raddr":
            related_address = parts[9]
            i = 10
        if i < n and parts[i] == "rport":
            value = parts[i + 1]
            if not (value.isdigit() and len(value) <= 5 and int(value) <= 65535):
                raise SdpParseError(f"a=candidate: bad rport in {text[:80]!r}")
            related_port = int(value)
            i += 2
        rest = parts[i:]
        return cls(
            foundation,
            component_id,
            transport,
            priority_value,
            address,
            port_number,
            parts[7],
            related_address,
            related_port,
            list(zip(rest[0::2], rest[1::2], strict=True)) if rest else [],
        )


# --------------------------------------------------------------------------------------------------
# Attribute-list behaviour shared by session and media level
# --------------------------------------------------------------------------------------------------


def _attr_key(name: str) -> str:
    """Attribute names compare case-insensitively and ignore stray surrounding whitespace."""
    return name.strip().lower()


# Names that are their own _attr_key: a loop looking for one name skips these without a call.
_PLAIN_NAMES = frozenset(
    "rtpmap fmtp ptime maxptime rtcp rtcp-mux rtcp-fb rtcp-rsize sendrecv sendonly recvonly"
    " inactive candidate end-of-candidates remote-candidates ice-ufrag ice-pwd ice-options"
    " ice-lite ice-mismatch mid group msid ssrc ssrc-group extmap setup connection fingerprint"
    " crypto label silenceSupp tcp-setup".lower().split()
)


class _AttributeList:
    """Ordered attribute access; names compare case-insensitively, others keep their order."""

    __slots__ = ()
    attributes: list[Attribute]

    def find(self, name: str) -> Attribute | None:
        key = _attr_key(name)
        return next((a for a in self.attributes if _attr_key(a.name) == key), None)

    def find_all(self, name: str) -> list[Attribute]:
        key = _attr_key(name)
        return [a for a in self.attributes if _attr_key(a.name) == key]

    def _named(self, *keys: str) -> list[Attribute]:
        """The attributes whose name is one of ``keys`` (lower-case), in order.

        A name that is its own key (the usual spellings) is compared as it is, with no call.
        """
        return [
            attr
            for attr in self.attributes
            if attr.name in keys or (attr.name not in _PLAIN_NAMES and _attr_key(attr.name) in keys)
        ]

    def has(self, name: str) -> bool:
        return self.find(name) is not None

    def get(self, name: str) -> str | None:
        """Value of the first ``a=name``: ``""`` for a property attribute, None when absent."""
        attr = self.find(name)
        if attr is None:
            return None
        return "" if attr.value is None else attr.value

    def get_all(self, name: str) -> list[str]:
        return ["" if a.value is None else a.value for a in self.find_all(name)]

    def add(self, name: str, value: str | None = None) -> Attribute:
        attr = Attribute(name, value)
        self.attributes.append(attr)
        return attr

    def set(self, name: str, value: str | None = None) -> Attribute:
        """Replace the first ``a=name`` in place (dropping later duplicates) or append one."""
        key = _attr_key(name)
        kept: list[Attribute] = []
        replaced: Attribute | None = None
        for attr in self.attributes:
            if _attr_key(attr.name) == key:
                if replaced is None:
                    replaced = Attribute(name, value)
                    kept.append(replaced)
                continue
            kept.append(attr)
        if replaced is None:
            replaced = Attribute(name, value)
            kept.append(replaced)
        self.attributes[:] = kept
        return replaced

    def remove(self, name: str) -> int:
        """Remove every ``a=name``; returns how many were removed."""
        key = _attr_key(name)
        before = len(self.attributes)
        self.attributes[:] = [a for a in self.attributes if _attr_key(a.name) != key]
        return before - len(self.attributes)

    @property
    def direction(self) -> Direction | None:
        """The direction attribute at this level (the last one wins), None when absent."""
        found: Direction | None = None
        for attr in self.attributes:
            name = _attr_key(attr.name)
            if name in _DIRECTIONS and attr.value is None:
                found = Direction(name)
        return found

    def set_direction(self, direction: Direction | None) -> None:
        """Replace the direction attribute in place (or append it); None removes it."""
        kept: list[Attribute] = []
        placed = direction is None
        for attr in self.attributes:
            if _attr_key(attr.name) in _DIRECTIONS and attr.value is None:
                if not placed and direction is not None:
                    kept.append(Attribute(direction.value))
                    placed = True
                continue
            kept.append(attr)
        if not placed and direction is not None:
            kept.append(Attribute(direction.value))
        self.attributes[:] = kept


# --------------------------------------------------------------------------------------------------
# Media and session descriptions
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class MediaDescription(_AttributeList):
    """One media section: ``m=<media> <port>[/<count>] <proto> <fmt> ...`` and its lines (§5.14)."""

    media: str = "audio"
    port: int = 0
    proto: str = "RTP/AVP"
    formats: list[str] = field(default_factory=list)
    port_count: int | None = None
    information: str | None = None
    connection: Connection | None = None
    extra_connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    encryption_key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    other_lines: list[SdpLine] = field(default_factory=list)

    # -- m= line -------------------------------------------------------------------------------

    @property
    def rejected(self) -> bool:
        """Port zero: the stream is rejected or disabled (RFC 3264 §5.1, §6)."""
        return self.port == 0

    @property
    def payload_types(self) -> list[int]:
        """The m= formats that are RTP payload type numbers, in m= order."""
        return [
            int(f)
            for f in self.formats
            if len(f) <= 3 and f.isdigit() and f.isascii() and int(f) < 128
        ]

    def m_line(self) -> str:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        return " ".join([self.media, port, self.proto, *self.formats])

    # -- rtpmap / fmtp (RFC 8866 §6.6, §6.15) -------------------------------------------------

    def _format_attribute(self, name: str, pt: int | str) -> str | None:
        key = str(pt)
        for value in self.get_all(name):
            fmt, _, rest = value.strip().partition(" ")
            if fmt == key:
                return rest.strip()
        return None

    def fmtp(self, pt: int | str) -> str | None:
        """The ``a=fmtp`` parameter string of a format, None when absent."""
        return self._format_attribute("fmtp", pt)

    def fmtp_params(self, pt: int | str) -> dict[str, str]:
        return parse_fmtp_params(self.fmtp(pt))

    def rtpmap(self, pt: int | str) -> Codec | None:
        """The codec declared by ``a=rtpmap`` for a payload type (with its fmtp), None if absent."""
        encoding = self._format_attribute("rtpmap", pt)
        if encoding is None:
            return None
        return Codec.parse_encoding(encoding, self.fmtp(pt))

    def codec(self, pt: int | str) -> Codec | None:
        """The codec of a payload type: its rtpmap, else the RFC 3551 static assignment."""
        found = self.rtpmap(pt)
        if found is not None:
            return found
        number = _opt_uint(str(pt))
        static = STATIC_PAYLOAD_TYPES.get(number) if number is not None else None
        return static.with_fmtp(self.fmtp(pt)) if static is not None else None

    def codecs(self) -> dict[int, Codec]:
        """Every payload type of the m= line whose codec is known, in m= (preference) order.

        The same codecs as :meth:`codec` gives for each payload type, computed from the current
        attributes on every call: one pass over the attributes builds the rtpmap and fmtp tables
        (the first ``a=rtpmap`` / ``a=fmtp`` of a format wins, as there), one over the m= formats
        (the payload types of :attr:`payload_types`, each once: a repeated one computes the same
        codec again, and a dict keeps its first position) reads them.  The encoding is
        split as :meth:`Codec.parse_encoding` splits it and each Codec is built on a bare
        instance (see :func:`_new_codec`); tests/unit/test_sdp_structured.py checks the result
        against :meth:`codec` and test_parse_fastpaths.py that edits to the attributes show.
        """
        encodings: dict[str, str] = {}
        parameters: dict[str, str] = {}
        for attr in self.attributes:
            name = attr.name
            if name == "candidate":
                continue  # the commonest line of an ICE offer, first
            if name == "rtpmap":
                table = encodings
            elif name == "fmtp":
                table = parameters
            elif name in _PLAIN_NAMES:
                continue  # another usual spelling: no call
            else:
                key = _attr_key(name)
                if key == "rtpmap":
                    table = encodings
                elif key == "fmtp":
                    table = parameters
                else:
                    continue
            value = attr.value
            if value is None:
                continue  # no format: matches no payload type
            fmt, _, rest = value.strip().partition(" ")
            if fmt not in table:
                table[fmt] = rest.strip()
        result: dict[int, Codec] = {}
        for fmt in self.formats:
            pt = _PAYLOAD_TYPE_NUMBERS.get(fmt)
            if pt is None:
                if len(fmt) <= 3 and fmt.isdigit() and fmt.isascii() and int(fmt) < 128:
                    pt = int(fmt)  # written with leading zeros
                    fmt = str(pt)
                else:
                    continue  # not an RTP payload type (see payload_types)
            fmtp = parameters.get(fmt)
            encoding = encodings.get(fmt)
            if encoding is not None:
                # Codec.parse_encoding(encoding, fmtp) inlined (``encoding`` is stripped already):
                # <name>/<rate>[/<channels>], ASCII digits, a non-empty name
                name, _, rate = encoding.partition("/")
                channels = 1
                if "/" in rate:
                    rate, _, count = rate.partition("/")
                    channels = -1  # malformed unless ...
                    if count.isdigit() and count.isascii() and len(count) <= 30:
                        channels = int(count)
                if channels >= 0 and name and rate.isdigit() and rate.isascii() and len(rate) <= 30:
                    codec = _new_object(Codec)  # _new_codec(...), inlined
                    state = codec.__dict__
                    state["name"] = name
                    state["clock_rate"] = int(rate)
                    state["channels"] = channels
                    state["fmtp"] = fmtp
                    result[pt] = codec
                    continue
            static = STATIC_PAYLOAD_TYPES.get(pt)
            if static is not None:
                result[pt] = static.with_fmtp(fmtp)
        return result

    def candidates(self) -> list[CandidateAttribute]:
        """The section's ``a=candidate`` lines parsed (RFC 8839 §5.1), in order.

        A malformed candidate line is skipped (RFC 8839 §5.1: an agent ignores candidates it does
        not understand); the attribute itself stays in :attr:`attributes` unchanged.
        """
        out: list[CandidateAttribute] = []
        parse = CandidateAttribute.parse
        for attr in self._named("candidate"):
            try:
                out.append(parse(attr.value or ""))
            except SdpParseError:
                continue
        return out

    def add_codec(self, pt: int, codec: Codec, *, rtpmap: bool = True) -> None:
        """Append a payload type to the m= line with its ``a=rtpmap`` (and ``a=fmtp``)."""
        self.formats.append(str(pt))
        if rtpmap:
            self.add("rtpmap", f"{pt} {codec.encoding}")
        if codec.fmtp:
            self.add("fmtp", f"{pt} {codec.fmtp}")

    def remove_format(self, fmt: int | str) -> None:
        """Drop a format from the m= line with its rtpmap, fmtp and rtcp-fb attributes."""
        key = str(fmt)
        self.formats[:] = [f for f in self.formats if f != key]
        per_format = {"rtpmap", "fmtp", "rtcp-fb"}
        self.attributes[:] = [
            a
            for a in self.attributes
            if not (
                _attr_key(a.name) in per_format
                and a.value is not None
                and a.value.strip().partition(" ")[0] == key
            )
        ]

    # -- other media attributes --------------------------------------------------------------

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds (RFC 8866 §6.4), None when absent or malformed."""
        return _ms_value(self.get("ptime"))

    @property
    def maxptime(self) -> int | None:
        """``a=maxptime`` in milliseconds (RFC 8866 §6.5), None when absent or malformed."""
        return _ms_value(self.get("maxptime"))

    @property
    def rtcp_mux(self) -> bool:
        """``a=rtcp-mux`` present (RFC 5761 §5.1.1)."""
        return self.has("rtcp-mux")

    @rtcp_mux.setter
    def rtcp_mux(self, enabled: bool) -> None:
        if enabled:
            if not self.rtcp_mux:
                self.add("rtcp-mux")
        else:
            self.remove("rtcp-mux")

    @property
    def rtcp(self) -> RtcpAttribute | None:
        """``a=rtcp`` (RFC 3605), None when absent or malformed."""
        value = self.get("rtcp")
        return RtcpAttribute.parse(value) if value is not None else None

    @property
    def mid(self) -> str | None:
        return self.get("mid")


def _ms_value(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not 0 < number < 1e6:
        return None
    return max(1, round(number))


@dataclass(slots=True)
class SessionDescription(_AttributeList):
    """A whole session description (RFC 8866 §5)."""

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    extra_connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timing: list[Timing] = field(default_factory=lambda: [Timing()])
    time_zones: str | None = None
    encryption_key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other_lines: list[SdpLine] = field(default_factory=list)

    # -- helpers ------------------------------------------------------------------------------

    def media_direction(self, media: MediaDescription | int) -> Direction:
        """Effective direction: media level overrides session level, default sendrecv (§6.7)."""
        section = self.media[media] if isinstance(media, int) else media
        return section.direction or self.direction or Direction.SENDRECV

    def media_connection(self, media: MediaDescription | int) -> Connection | None:
        """The c= that applies to a media section: its own, else the session-level one (§5.7)."""
        section = self.media[media] if isinstance(media, int) else media
        return section.connection or self.connection

    def media_attribute(self, media: MediaDescription | int, name: str) -> str | None:
        """An attribute looked up at media level first, then at session level (e.g. ice-ufrag)."""
        section = self.media[media] if isinstance(media, int) else media
        value = section.get(name)
        return value if value is not None else self.get(name)

    # -- text ---------------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: str | bytes) -> SessionDescription:
        return parse_sdp(data)

    def lines(self) -> Iterator[str]:
        """The lines of the description in RFC 8866 §5 order, without line ends."""
        yield f"v={self.version}"
        yield f"o={self.origin}"
        yield f"s={self.session_name}"
        if self.information is not None:
            yield f"i={self.information}"
        if self.uri is not None:
            yield f"u={self.uri}"
        yield from (f"e={e}" for e in self.emails)
        yield from (f"p={p}" for p in self.phones)
        yield from _connection_lines(self)
        for timing in self.timing:
            yield f"t={timing.start} {timing.stop}"
            yield from (f"r={r}" for r in timing.repeats)
        if self.time_zones is not None:
            yield f"z={self.time_zones}"
        yield from _key_and_attribute_lines(self)
        for media in self.media:
            yield f"m={media.m_line()}"
            if media.information is not None:
                yield f"i={media.information}"
            yield from _connection_lines(media)
            yield from _key_and_attribute_lines(media)

    def to_str(self) -> str:
        """Serialize with CRLF line ends; ValueError if a field holds a CR or LF."""
        out: list[str] = []
        for line in self.lines():
            if "\r" in line or "\n" in line:
                raise ValueError(f"SDP field contains a line break: {line!r}")
            out.append(line)
            out.append(CRLF)
        return "".join(out)

    def to_bytes(self) -> bytes:
        return self.to_str().encode("utf-8", "surrogateescape")

    def __str__(self) -> str:
        return self.to_str()


def _connection_lines(section: MediaDescription | SessionDescription) -> Iterator[str]:
    """The c= and b= lines of a section (RFC 8866 §5: c before b at both levels)."""
    if section.connection is not None:
        yield f"c={section.connection}"
    yield from (f"c={c}" for c in section.extra_connections)
    yield from (f"b={b}" for b in section.bandwidths)


def _key_and_attribute_lines(section: MediaDescription | SessionDescription) -> Iterator[str]:
    """The k= line, the a= lines, then the kept unknown lines of a section."""
    if section.encryption_key is not None:
        yield f"k={section.encryption_key}"
    yield from (f"a={a}" for a in section.attributes)
    yield from (str(line) for line in section.other_lines)


def _attribute_list(texts: list[str]) -> list[Attribute]:
    """The Attribute of each ``name[:value]`` text (a line after its ``a=``), as Attribute.parse
    makes it: one C-level partition per text, the two slots set on a bare instance (cheaper
    than the dataclass __init__ call; a test checks the objects are equal).  A plain loop with
    ``text.partition`` (a specialized method call) beats ``map(str.partition, ...)`` here."""
    attributes: list[Attribute] = []
    append = attributes.append
    for text in texts:
        name, sep, value = text.partition(":")
        attribute = _new_object(Attribute)
        attribute.name = name
        attribute.value = value if sep else None
        append(attribute)
    return attributes


_NO_ORIGIN = Origin()  # placeholder while parsing; a description without o= is rejected


def _new_media(
    media: str, port: int, proto: str, formats: list[str], attributes: list[Attribute]
) -> MediaDescription:
    """What ``MediaDescription(media, port, proto, formats, attributes=attributes)`` makes.

    The dataclass __init__ costs a call per default factory; this is the parser's hot path.
    test_parse_fastpaths.py checks the fields match.
    """
    obj = _new_object(MediaDescription)
    # the fields in declaration order, each list a new one
    obj.media = media
    obj.port = port
    obj.proto = proto
    obj.formats = formats
    obj.port_count = obj.information = obj.connection = None
    obj.extra_connections = []
    obj.bandwidths = []
    obj.encryption_key = None
    obj.attributes = attributes
    obj.other_lines = []
    return obj


def _new_session(
    origin: Origin,
    name: str,
    version: int,
    connection: Connection | None,
    timing: list[Timing],
    attributes: list[Attribute],
) -> SessionDescription:
    """What the SessionDescription constructor makes (see _new_media)."""
    obj = _new_object(SessionDescription)
    # the fields in declaration order, each list a new one
    obj.origin = origin
    obj.session_name = name
    obj.version = version
    obj.information = obj.uri = None
    obj.emails = []
    obj.phones = []
    obj.connection = connection
    obj.extra_connections = []
    obj.bandwidths = []
    obj.timing = timing
    obj.time_zones = obj.encryption_key = None
    obj.attributes = attributes
    obj.media = []
    obj.other_lines = []
    return obj


# --------------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------------


def _decode(data: str | bytes) -> str:
    if type(data) is bytes:
        return data.decode("utf-8", "surrogateescape")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data).decode("utf-8", "surrogateescape")
    if isinstance(data, str):
        return data
    raise SdpParseError(f"SDP must be str or bytes, not {type(data).__name__}")


def _split_lines(data: str | bytes) -> list[tuple[str, str]]:
    text = _decode(data)
    result: list[tuple[str, str]] = []
    for number, line in enumerate(_LINE_SPLIT.split(text), start=1):
        if not line.strip():
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpParseError(f"line {number} is not <type>=<value>: {line[:40]!r}")
        result.append((line[0], line[2:]))
    return result


def _parse_media_line(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpParseError(f"m= needs <media> <port> <proto>: {value!r}")
    media, port_text, proto = parts[:3]
    port_part, sep, count_part = port_text.partition("/")
    port = _uint(port_part, "m= port")
    if port > 65535:
        raise SdpParseError(f"m= port out of range: {port}")
    count = _uint(count_part, "m= port count") if sep else None
    del parts[:3]
    return MediaDescription(media, port, proto, parts, count)


def parse_sdp(data: str | bytes) -> SessionDescription:
    """Parse a session description (RFC 8866 §5), tolerantly.

    CRLF, LF or CR end lines; blank lines are skipped. Unknown attributes are kept in order;
    lines with an unknown type letter, and repeated or misplaced single-valued lines, are kept as
    :class:`SdpLine` in the section where they appeared. Raises only :class:`SdpParseError`.
    """
    text = data.decode("utf-8", "surrogateescape") if type(data) is bytes else _decode(data)
    if text[:2] == "v=":
        try:
            session = _parse_plain(text)
        except SdpParseError:
            session = None  # let the general parser report the error it meets first
        if session is not None:
            return session
    return _parse_lines(_split_lines(text))


# The usual head lines of a section in one match each (ASCII fields separated by single spaces, a
# unicast c= address).  Whatever they match, the line-by-line code parses to the same values.
_F = r"([!-~]++)"  # a field: visible ASCII, so str.split() would cut the line at the same places
_N = r"([0-9]{1,30}+)"  # what _uint accepts
_C = r"c=" + _F + " " + _F + r" ([!-.0-~]++)"  # address without "/": no TTL or count
_SESSION_HEAD_RE = re.compile(
    rf"v={_N}\r\no={_F} {_F} {_N} {_F} {_F} {_F}\r\ns=([^\r\n]*+)\r\n(?:{_C}\r\n)?t={_N} {_N}"
)
_MEDIA_HEAD_RE = re.compile(rf"{_F} ([0-9]{{1,5}}+) {_F}((?: [!-~]++)*+)(?:\r\n{_C})?")


def _head_lines(head: str) -> list[str] | None:
    """The CRLF-separated lines of a section head, or None if a line holds a bare CR or LF."""
    lines = head.split("\r\n")
    breaks = len(lines) - 1
    if head.count("\r") != breaks or head.count("\n") != breaks:
        return None
    return lines


def _parse_plain(text: str) -> SessionDescription | None:
    """Fast path for CRLF lines, no blank lines, each section's ``a=`` lines after its others.

    That is how user agents write SDP.  Whole sections are cut with C-level splits (at
    ``CRLF m=`` and then ``CRLF a=``); the usual session head (v o s [c] t) and media head
    (m [c]) are read by one regex match each, other head lines one by one.  Returns None for
    anything else; the general parser then gives what this one would have
    (tests/unit/test_parse_fastpaths.py checks that they agree).

    The text has that form exactly when every piece the splits leave is clean: a head either
    matches its regex (whose fields exclude CR and LF) or is CRLF-separated lines without a
    bare CR or LF (:func:`_head_lines`), and the ``a=`` texts of a section hold no CR or LF at
    all - a bare line end, a blank line or a non-``a=`` line after an ``a=`` line would leave
    one inside them.  That last check is one C-level search per section of its joined texts.
    """
    if text[-2:] == "\r\n":
        text = text[:-2]
    sections = text.split("\r\nm=")
    texts = sections[0].split("\r\na=")
    m = _SESSION_HEAD_RE.fullmatch(texts[0])
    if m is not None:
        del texts[0]
        joined = "".join(texts)
        if "\n" in joined or "\r" in joined:
            return None  # a bare line end, a blank or misplaced line among the a= lines
        v, user, sid, sver, net, addrtype, addr, name, cnet, ctype, caddr, start, stop = m.groups()
        # the values on bare instances, as for the descriptions (_new_session): Origin(user,
        # sid, int(sver), net, addrtype, addr), Connection(caddr, ctype, cnet), Timing(start, stop)
        origin = _new_object(Origin)
        origin.username, origin.session_id, origin.session_version = user, sid, int(sver)
        origin.nettype, origin.addrtype, origin.address = net, addrtype, addr
        connection = None
        if cnet is not None:
            connection = _new_object(Connection)
            connection.address, connection.addrtype, connection.nettype = caddr, ctype, cnet
            connection.ttl = connection.count = None
        timing = _new_object(Timing)
        timing.start, timing.stop, timing.repeats = int(start), int(stop), []
        session = _new_session(origin, name, int(v), connection, [timing], _attribute_list(texts))
        seen_origin = True
    else:
        head = _head_lines(texts[0])
        if head is None:
            return None
        session = SessionDescription(_NO_ORIGIN, version=_uint(head[0][2:], "v="), timing=[])
        seen_origin = seen_name = False
        for line in head[1:]:
            if line[1:2] != "=":
                return None  # a blank line, or not <type>=<value>
            kind = line[0]
            if kind == "o" and not seen_origin:
                session.origin = Origin.parse(line[2:])
                seen_origin = True
            elif kind == "s" and not seen_name:
                session.session_name = line[2:]
                seen_name = True
            else:
                _session_line(session, kind, line[2:])
        del texts[0]
        joined = "".join(texts)
        if "\n" in joined or "\r" in joined:
            return None
        session.attributes = _attribute_list(texts)
    for section in sections[1:]:
        texts = section.split("\r\na=")
        m = _MEDIA_HEAD_RE.fullmatch(texts[0])
        if m is not None:
            del texts[0]
            joined = "".join(texts)
            if "\n" in joined or "\r" in joined:
                return None
            kind, port, proto, formats, cnet, ctype, caddr = m.groups()
            number = int(port)
            if number > 65535:
                return None
            media = _new_media(kind, number, proto, formats.split(), _attribute_list(texts))
            if cnet is not None:
                media.connection = Connection(caddr, ctype, cnet, None, None)
        else:
            head = _head_lines(texts[0])
            if head is None:
                return None
            media = _parse_media_line(head[0])
            for line in head[1:]:
                if line[1:2] != "=":
                    return None
                _section_line(media, line[0], line[2:])
            del texts[0]
            joined = "".join(texts)
            if "\n" in joined or "\r" in joined:
                return None
            media.attributes = _attribute_list(texts)
        session.media.append(media)
    return _finish(session, seen_origin)


def _parse_lines(lines: list[tuple[str, str]]) -> SessionDescription:
    """The general parser, over (type letter, value) pairs."""
    if not lines:
        raise SdpParseError("empty session description")
    kind, value = lines[0]
    if kind != "v":
        raise SdpParseError("a session description must start with v=")
    session = SessionDescription(_NO_ORIGIN, version=_uint(value, "v="), timing=[])
    seen_origin = seen_name = False
    current: MediaDescription | None = None
    for kind, value in lines[1:]:
        if kind == "m":
            current = _parse_media_line(value)
            session.media.append(current)
        elif current is not None:
            _section_line(current, kind, value)
        elif kind == "o" and not seen_origin:
            session.origin = Origin.parse(value)
            seen_origin = True
        elif kind == "s" and not seen_name:
            session.session_name = value
            seen_name = True
        else:
            _session_line(session, kind, value)
    return _finish(session, seen_origin)


def _finish(session: SessionDescription, seen_origin: bool) -> SessionDescription:
    if not seen_origin:
        raise SdpParseError("missing o= line")
    if session.timing and session.other_lines:
        # r= lines seen before any t= belong to the first timing (keeps re-parsing stable).
        stray = [line.value for line in session.other_lines if line.type == "r"]
        session.timing[0].repeats[:0] = stray
        session.other_lines[:] = [line for line in session.other_lines if line.type != "r"]
    return session


def _session_line(session: SessionDescription, kind: str, value: str) -> None:
    if kind == "t":
        session.timing.append(Timing.parse(value))
    elif kind == "r" and session.timing:
        session.timing[-1].repeats.append(value)
    elif kind == "u" and session.uri is None:
        session.uri = value
    elif kind == "e":
        session.emails.append(value)
    elif kind == "p":
        session.phones.append(value)
    elif kind == "z" and session.time_zones is None:
        session.time_zones = value
    else:
        _section_line(session, kind, value)


def _section_line(section: MediaDescription | SessionDescription, kind: str, value: str) -> None:
    """A line either level may have (a c b i k); anything else is kept as an SdpLine."""
    if kind == "a":
        section.attributes.append(Attribute.parse(value))
    elif kind == "c" and section.connection is None:
        section.connection = Connection.parse(value)
    elif kind == "c":
        section.extra_connections.append(Connection.parse(value))
    elif kind == "b":
        section.bandwidths.append(Bandwidth.parse(value))
    elif kind == "i" and section.information is None:
        section.information = value
    elif kind == "k" and section.encryption_key is None:
        section.encryption_key = value
    else:
        section.other_lines.append(SdpLine(kind, value))
