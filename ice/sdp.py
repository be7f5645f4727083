"""ICE's SDP attributes (RFC 8839): a=candidate, a=ice-ufrag, a=ice-pwd, a=ice-options,
a=ice-lite, a=ice-mismatch, a=ice-pacing, a=remote-candidates, a=end-of-candidates.

The SDP model itself lives elsewhere; here attributes are ``(name, value)`` pairs with ``value``
None for property attributes (``a=ice-lite``).  Every parser raises only :class:`IceSdpError`
(a ``ValueError``).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ice.candidate import Candidate, CandidateType, TcpType

__all__ = [
    "DEFAULT_CANDIDATE_PREFERENCE",
    "IceAttributes",
    "IceParameters",
    "IceSdpError",
    "RemoteCandidate",
    "choose_default_candidate",
    "format_candidate",
    "format_ice_attributes",
    "format_remote_candidates",
    "generate_pwd",
    "generate_ufrag",
    "matches_candidate",
    "parse_candidate",
    "parse_ice_attributes",
    "parse_ice_options",
    "parse_remote_candidates",
    "validate_pwd",
    "validate_ufrag",
]


class IceSdpError(ValueError):
    """An ICE SDP attribute is malformed."""


_ICE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_ICE_CHAR_RE = re.compile(r"[A-Za-z0-9+/]+")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 8866 token
_DIGITS_RE = re.compile(r"[0-9]+")
_HOSTNAME_RE = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?"
)
_IPV4ISH_RE = re.compile(r"[0-9.]+")
_VCHARS_RE = re.compile(r"[\x21-\x7e]*")
_TYPES = {t.value: t for t in CandidateType}
_TCPTYPES = {t.value: t for t in TcpType}


def _ice_chars(value: str, minimum: int, maximum: int, what: str) -> str:
    if not minimum <= len(value) <= maximum or not _ICE_CHAR_RE.fullmatch(value):
        raise IceSdpError(f"{what} must be {minimum}-{maximum} ice-chars: {value!r}")
    return value


def validate_ufrag(value: str) -> str:
    """``ice-ufrag``: 4-256 ice-chars (ALPHA / DIGIT / "+" / "/"; RFC 8839 §5.4)."""
    return _ice_chars(value, 4, 256, "ice-ufrag")


def validate_pwd(value: str) -> str:
    """``ice-pwd``: 22-256 ice-chars (RFC 8839 §5.4)."""
    return _ice_chars(value, 22, 256, "ice-pwd")


def generate_ufrag(length: int = 8) -> str:
    """A random ufrag (at least 24 bits of randomness; RFC 8445 §5.3)."""
    if not 4 <= length <= 256:
        raise ValueError("ufrag length must be 4..256")
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(length))


def generate_pwd(length: int = 24) -> str:
    """A random password (at least 128 bits of randomness; RFC 8445 §5.3)."""
    if not 22 <= length <= 256:
        raise ValueError("pwd length must be 22..256")
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(length))


def _uint(text: str, low: int, high: int, what: str) -> int:
    if not _DIGITS_RE.fullmatch(text) or len(text) > 10:
        raise IceSdpError(f"{what} is not a number: {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise IceSdpError(f"{what} out of range: {value}")
    return value


def _connection_address(text: str, what: str) -> str:
    """An IPv4/IPv6 literal or an FQDN (RFC 8839 §5.1 ``connection-address``)."""
    if ":" in text:
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError as exc:
            raise IceSdpError(f"bad IPv6 {what}: {text!r}") from exc
    if _IPV4ISH_RE.fullmatch(text):
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError as exc:
            raise IceSdpError(f"bad IPv4 {what}: {text!r}") from exc
    if _HOSTNAME_RE.fullmatch(text) and len(text) <= 253:
        return text
    raise IceSdpError(f"bad {what}: {text!r}")


# --------------------------------------------------------------------------------------------
# a=candidate
# --------------------------------------------------------------------------------------------


def parse_candidate(value: str) -> Candidate:
    """Parse an ``a=candidate`` value (RFC 8839 §5.1).

    Accepts the bare value, ``candidate:<value>`` or ``a=candidate:<value>``.  The transport
    is case-insensitive and returned lower case; unknown candidate types are an error (an
    agent ignores such candidates, RFC 8839 §5.1).
    """
    text = value.strip()
    if text.startswith("a="):
        text = text[2:]
    if text[:10].lower() == "candidate:":
        text = text[10:]
    fields = text.split()
    if len(fields) < 8:
        raise IceSdpError(f"candidate has too few fields: {value!r}")
    foundation = _ice_chars(fields[0], 1, 32, "foundation")
    component = _uint(fields[1], 1, 256, "component-id")
    transport = fields[2]
    if not _TOKEN_RE.fullmatch(transport):
        raise IceSdpError(f"bad transport: {transport!r}")
    priority = _uint(fields[3], 0, 2**32 - 1, "priority")
    address = _connection_address(fields[4], "connection-address")
    port = _uint(fields[5], 0, 65535, "port")
    if fields[6].lower() != "typ":
        raise IceSdpError(f"expected 'typ', got {fields[6]!r}")
    ctype = _TYPES.get(fields[7].lower())
    if ctype is None:
        raise IceSdpError(f"unknown candidate type {fields[7]!r}")
    rest = fields[8:]
    raddr: str | None = None
    rport: int | None = None
    tcptype: TcpType | None = None
    extensions: list[tuple[str, str]] = []
    i = 0
    if i + 1 < len(rest) and rest[i] == "raddr":
        raddr = _connection_address(rest[i + 1], "raddr")
        i += 2
    if i + 1 < len(rest) and rest[i] == "rport":
        rport = _uint(rest[i + 1], 0, 65535, "rport")
        i += 2
    while i < len(rest):
        name = rest[i]
        if not _TOKEN_RE.fullmatch(name):
            raise IceSdpError(f"bad extension attribute name {name!r}")
        if i + 1 >= len(rest):
            raise IceSdpError(f"extension attribute {name!r} has no value")
        ext_value = rest[i + 1]
        if not _VCHARS_RE.fullmatch(ext_value):
            raise IceSdpError(f"bad extension attribute value {ext_value!r}")
        if name == "tcptype" and tcptype is None:
            tcptype = _TCPTYPES.get(ext_value.lower())
            if tcptype is None:
                raise IceSdpError(f"unknown tcptype {ext_value!r}")
        else:
            extensions.append((name, ext_value))
        i += 2
    return Candidate(
        foundation=foundation,
        component=component,
        transport=transport.lower(),
        priority=priority,
        address=address,
        port=port,
        type=ctype,
        related_address=raddr,
        related_port=rport,
        tcptype=tcptype,
        extensions=tuple(extensions),
    )


def format_candidate(candidate: Candidate) -> str:
    """The ``a=candidate`` value (without ``candidate:``), RFC 8839 §5.1 order.

    The transport is written upper case ("UDP"), as the RFC's grammar and examples do.
    """
    c = candidate
    _ice_chars(c.foundation, 1, 32, "foundation")
    parts = [
        c.foundation,
        str(c.component),
        c.transport.upper(),
        str(c.priority),
        c.address,
        str(c.port),
        "typ",
        c.type.value,
    ]
    if c.related_address is not None:
        parts += ["raddr", c.related_address]
    if c.related_port is not None:
        parts += ["rport", str(c.related_port)]
    if c.tcptype is not None:
        parts += ["tcptype", c.tcptype.value]
    for name, value in c.extensions:
        if not _TOKEN_RE.fullmatch(name) or not value or not _VCHARS_RE.fullmatch(value):
            raise ValueError(f"bad extension attribute {name!r} {value!r}")
        parts += [name, value]
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# a=remote-candidates, a=ice-options
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteCandidate:
    """One entry of ``a=remote-candidates`` (RFC 8839 §5.2)."""

    component: int
    address: str
    port: int


def parse_remote_candidates(value: str) -> list[RemoteCandidate]:
    """``a=remote-candidates:<component> <address> <port> ...`` (RFC 8839 §5.2)."""
    fields = value.split()
    if not fields or len(fields) % 3:
        raise IceSdpError(f"remote-candidates needs component/address/port triples: {value!r}")
    out = []
    for i in range(0, len(fields), 3):
        out.append(
            RemoteCandidate(
                _uint(fields[i], 1, 256, "component-id"),
                _connection_address(fields[i + 1], "connection-address"),
                _uint(fields[i + 2], 0, 65535, "port"),
            )
        )
    return out


def format_remote_candidates(candidates: Iterable[RemoteCandidate]) -> str:
    """The ``a=remote-candidates`` value."""
    return " ".join(f"{c.component} {c.address} {c.port}" for c in candidates)


def parse_ice_options(value: str) -> list[str]:
    """``a=ice-options:<token> *(SP <token>)`` (RFC 8839 §5.6), e.g. ``trickle``, ``ice2``."""
    options = value.split()
    if not options:
        raise IceSdpError("empty ice-options")
    for option in options:
        if not _ICE_CHAR_RE.fullmatch(option) and not _TOKEN_RE.fullmatch(option):
            raise IceSdpError(f"bad ice-option {option!r}")
    return options


# --------------------------------------------------------------------------------------------
# Whole sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IceParameters:
    """ICE credentials and options of one side (RFC 8839 §5.4-§5.7)."""

    ufrag: str
    pwd: str
    options: tuple[str, ...] = ()
    lite: bool = False
    pacing_ms: int | None = None

    @classmethod
    def generate(cls, *, options: tuple[str, ...] = (), lite: bool = False) -> IceParameters:
        """Fresh random credentials."""
        return cls(generate_ufrag(), generate_pwd(), options, lite)


@dataclass
class IceAttributes:
    """Everything ICE-related read from one media section (plus session-level defaults)."""

    ufrag: str | None = None
    pwd: str | None = None
    options: list[str] = field(default_factory=list)
    lite: bool = False
    mismatch: bool = False
    pacing_ms: int | None = None
    candidates: list[Candidate] = field(default_factory=list)
    ignored_candidates: list[str] = field(default_factory=list)
    remote_candidates: list[RemoteCandidate] = field(default_factory=list)
    end_of_candidates: bool = False

    @property
    def parameters(self) -> IceParameters | None:
        """The peer's credentials, or None if it did not signal ICE (RFC 8445 fallback)."""
        if self.ufrag is None or self.pwd is None:
            return None
        return IceParameters(self.ufrag, self.pwd, tuple(self.options), self.lite, self.pacing_ms)


def parse_ice_attributes(
    media: Iterable[tuple[str, str | None]],
    session: Iterable[tuple[str, str | None]] = (),
    *,
    strict: bool = False,
) -> IceAttributes:
    """Collect the ICE attributes of a media section (RFC 8839 §5).

    ``ice-ufrag``, ``ice-pwd``, ``ice-options`` and ``ice-pacing`` may appear at session level
    and are overridden by media-level values; ``ice-lite`` is session level only.  Candidates
    that fail to parse are skipped (their text lands in ``ignored_candidates``) unless
    ``strict``; malformed credentials always raise :class:`IceSdpError`.
    """
    result = IceAttributes()
    for level, attributes in (("session", session), ("media", media)):
        for raw_name, value in attributes:
            name = raw_name.lower()
            if name == "ice-ufrag":
                result.ufrag = validate_ufrag(_required(name, value))
            elif name == "ice-pwd":
                result.pwd = validate_pwd(_required(name, value))
            elif name == "ice-options":
                result.options = parse_ice_options(_required(name, value))
            elif name == "ice-pacing":
                result.pacing_ms = _uint(_required(name, value), 1, 2**32 - 1, "ice-pacing")
            elif name == "ice-lite" and level == "session":
                result.lite = True
            elif name == "ice-mismatch":
                result.mismatch = True
            elif level == "media" and name == "candidate":
                try:
                    result.candidates.append(parse_candidate(_required(name, value)))
                except IceSdpError:
                    if strict:
                        raise
                    result.ignored_candidates.append(value or "")
            elif level == "media" and name == "remote-candidates":
                result.remote_candidates = parse_remote_candidates(_required(name, value))
            elif name == "end-of-candidates":
                result.end_of_candidates = True
    return result


def _required(name: str, value: str | None) -> str:
    if value is None or not value.strip():
        raise IceSdpError(f"a={name} needs a value")
    return value.strip()


def format_ice_attributes(
    parameters: IceParameters,
    candidates: Iterable[Candidate] = (),
    *,
    end_of_candidates: bool = False,
    remote_candidates: Iterable[RemoteCandidate] | None = None,
) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
    """``(session_attributes, media_attributes)`` for an offer or answer (RFC 8839 §5).

    ``a=ice-lite`` goes at session level, everything else at media level.
    """
    validate_ufrag(parameters.ufrag)
    validate_pwd(parameters.pwd)
    session: list[tuple[str, str | None]] = []
    if parameters.lite:
        session.append(("ice-lite", None))
    media: list[tuple[str, str | None]] = [
        ("ice-ufrag", parameters.ufrag),
        ("ice-pwd", parameters.pwd),
    ]
    if parameters.options:
        media.append(("ice-options", " ".join(parameters.options)))
    if parameters.pacing_ms is not None:
        media.append(("ice-pacing", str(parameters.pacing_ms)))
    media.extend(("candidate", format_candidate(c)) for c in candidates)
    if remote_candidates is not None:
        media.append(("remote-candidates", format_remote_candidates(remote_candidates)))
    if end_of_candidates:
        media.append(("end-of-candidates", None))
    return session, media


# --------------------------------------------------------------------------------------------
# Default candidates (RFC 8839 §4.2.1.2, §5.1; RFC 8445 §5.1.4)
# --------------------------------------------------------------------------------------------

DEFAULT_CANDIDATE_PREFERENCE: tuple[CandidateType, ...] = (
    CandidateType.RELAYED,
    CandidateType.SERVER_REFLEXIVE,
    CandidateType.HOST,
)
"""Most likely to work first: relayed, then server-reflexive, then host (RFC 8445 §5.1.4)."""


def choose_default_candidate(
    candidates: Iterable[Candidate],
    component: int = 1,
    *,
    preference: Sequence[CandidateType] = DEFAULT_CANDIDATE_PREFERENCE,
    transport: str = "udp",
) -> Candidate | None:
    """The candidate to put in ``c=``/``m=`` (and ``a=rtcp``) for ``component``.

    The first type in ``preference`` that has a candidate wins; among those, the highest
    priority.  None if the component has no candidate of an acceptable type.
    """
    pool = [c for c in candidates if c.component == component and c.transport == transport]
    for ctype in preference:
        of_type = [c for c in pool if c.type is ctype]
        if of_type:
            return max(of_type, key=lambda c: c.priority)
    return None


def matches_candidate(
    candidates: Iterable[Candidate], address: str, port: int, component: int = 1
) -> bool:
    """Does the ``c=``/``m=`` default destination match one of the candidates?

    An answerer that finds no match answers with ``a=ice-mismatch`` (RFC 8839 §5.1, §4.3.1.1).
    The ``c=`` address ``0.0.0.0``/``::`` with port 9 (trickle ICE, RFC 8840) always matches.
    """
    try:
        wanted = ipaddress.ip_address(address)
    except ValueError:
        wanted = None
    if wanted is not None and wanted.is_unspecified and port == 9:
        return True
    for c in candidates:
        if c.component != component or c.port != port:
            continue
        if c.address == address:
            return True
        try:
            if wanted is not None and ipaddress.ip_address(c.address) == wanted:
                return True
        except ValueError:
            continue
    return False
