"""SIP messages: parsing, header multi-map, serialization, stream framing (RFC 3261 §7, §18.3).

The parser is tolerant in the ways RFC 3261 §7 and §25 and RFC 4475 §3.1.1 require: header names
are case-insensitive and may be compact (§7.3.3), LWS continuation lines are folded into one value
(§7.3.1), leading CRLFs before the start line are skipped (§7.5), LWS may surround the colon, the
body of a datagram is framed by Content-Length (§18.3), and bare-LF line ends are accepted.  Header
values are parsed lazily: ``parse_message`` only splits the header section into (name, value)
pairs; the structured accessors (``cseq``, ``vias``, ``from_addr`` ...) parse on demand and raise
``SipParseError`` when a value is missing or malformed.

Serialization is faithful: ``parse_message(m.to_bytes())`` gives the same header values in the same
order (names in canonical long form), with Content-Length always equal to the body length.

Text is UTF-8 (RFC 3261 §7.3); octets that are not valid UTF-8 survive a round trip as surrogate
escapes (``errors="surrogateescape"``).

Speed (this is the hot path of a proxy-facing UA; ``bench/sip_parse.py`` measures it): a header
section with CRLF line ends, token names, no folding and no trailing LWS - what real stacks send -
is split by one regex (which leaves any other line end inside a piece, where one search of the
joined pieces finds it) and mapped to lookup keys and canonical names with C-level ``map``, the
canonical ``Name: `` spellings first; the usual Request-Line is read by one regex match.  Anything
else takes the line-by-line parser and the general start-line code, which give the same result
for what both accept (tests/unit/test_parse_fastpaths.py parses whole messages both ways).  The
URI, name-addr and Via parsers likewise try one regex for the plain form before the general code.
"""

from __future__ import annotations

import enum
import re
import secrets
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import compress

from sip.headers import CSeq, Via
from sip.uri import NameAddr, SipParseError, SipURI, is_token, split_commas

__all__ = [
    "BRANCH_MAGIC_COOKIE",
    "MAX_MESSAGE_SIZE",
    "REASON_PHRASES",
    "Headers",
    "Keepalive",
    "Request",
    "Response",
    "SipParseError",
    "StreamFramer",
    "make_response",
    "new_branch",
    "reason_phrase",
    "new_call_id",
    "new_tag",
    "parse_message",
]

_new_object = object.__new__  # an instance without its __init__ (the parser's hot path)

MAX_MESSAGE_SIZE = 65535
"""Largest message (start line + headers + body) accepted from a datagram or a stream."""

BRANCH_MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7

# --- header names -------------------------------------------------------------------------------

_CANONICAL_NAMES = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Accept-Resource-Priority",
    "Alert-Info", "Allow", "Allow-Events", "Answer-Mode", "Authentication-Info", "Authorization",
    "Call-ID", "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Event",
    "Expires", "Flow-Timer", "From", "History-Info", "Identity", "In-Reply-To", "Join",
    "Max-Breadth", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE", "Organization",
    "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-Sub", "Refer-To", "Referred-By", "Reject-Contact", "Replaces",
    "Reply-To", "Request-Disposition", "Require", "Resource-Priority", "Retry-After", "Route",
    "RSeq", "Security-Client", "Security-Server", "Security-Verify", "Server", "Service-Route",
    "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State", "Supported",
    "Target-Dialog", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate",
]  # fmt: skip

# RFC 3261 §7.3.3 and the IANA SIP header registry's compact forms
_COMPACT_FORMS = {
    "i": "Call-ID", "m": "Contact", "f": "From", "t": "To", "v": "Via", "l": "Content-Length",
    "c": "Content-Type", "e": "Content-Encoding", "s": "Subject", "k": "Supported", "o": "Event",
    "r": "Refer-To", "b": "Referred-By", "u": "Allow-Events", "x": "Session-Expires",
    "a": "Accept-Contact", "j": "Reject-Contact", "d": "Request-Disposition", "y": "Identity",
}  # fmt: skip

# lower-case spelling -> (lookup key, canonical name)
# (one string object per key, interned, so that tables and header lists share it)
_KEY_OF = {n: sys.intern(n.lower()) for n in _CANONICAL_NAMES}
_NAME_INFO: dict[str, tuple[str, str]] = {_KEY_OF[n]: (_KEY_OF[n], n) for n in _CANONICAL_NAMES}
_NAME_INFO.update({c: (_KEY_OF[n], n) for c, n in _COMPACT_FORMS.items()})
# exact spellings seen on the wire (canonical, lower-case, compact in either case) -> key / name
_KEYS: dict[str, str] = {}
_CANONICAL: dict[str, str] = {}
for _spelling, (_key, _canonical) in list(_NAME_INFO.items()):
    for _variant in (_spelling, _spelling.upper(), _canonical):
        _KEYS[_variant] = _key
        _CANONICAL[_variant] = _canonical
# the same for the start of a header line as real stacks write it: "<spelling>: " before the value
_LINE_KEYS = {f"{spelling}: ": key for spelling, key in _KEYS.items()}
_CONTENT_LENGTH = _KEY_OF["Content-Length"]  # the key object the header lists hold
# lookup key -> canonical name of the known headers
_KEY_NAMES = {key: name for name, key in _KEY_OF.items()}
# line starts that to_bytes() writes back unchanged (canonical name, colon, one space) -> key
_CANONICAL_LINE_KEYS = {f"{name}: ": key for name, key in _KEY_OF.items()}

# Headers whose values are comma-separated lists (RFC 3261 §7.3.1, §20); get_all() splits them.
_LIST_HEADERS = frozenset(
    n.lower()
    for n in [
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language",
        "Error-Info", "History-Info", "In-Reply-To", "P-Asserted-Identity",
        "P-Preferred-Identity", "Path", "Privacy", "Proxy-Require", "Reason", "Record-Route",
        "Reject-Contact", "Request-Disposition", "Require", "Route", "Security-Client",
        "Security-Server", "Security-Verify", "Service-Route", "Supported", "Unsupported", "Via",
        "Warning",
    ]
)  # fmt: skip


def _name_info(name: str) -> tuple[str, str]:
    key = _KEYS.get(name)
    if key is not None:
        return key, _CANONICAL[name]
    lower = name.lower()
    info = _NAME_INFO.get(lower)
    if info is not None:
        return info
    return lower, name


class Headers:
    """Ordered multi-map of header fields (RFC 3261 §7.3).

    Names are case-insensitive and compact forms are expanded (``i`` is ``Call-ID``); names are kept
    in canonical capitalization (unknown names as first seen).  ``items()`` lists header lines in
    order; ``get_all()`` additionally splits list-valued headers (Via, Contact, Route, Allow ...) at
    top-level commas, i.e. not inside quoted strings or ``<>``.

    The lines are kept in three parallel lists (lookup key, name, value): the parser fills them
    with C-level ``map``/slicing, and a lookup is a C-level ``list.index`` over the keys (a SIP
    message has a few dozen lines at most, so no index dict is worth building).

    ``_as_sent`` is True only for the headers of a parsed message whose header lines were already
    in the form ``to_bytes()`` writes, and stays so until the first change (``add``, ``set``,
    ``remove``): a message can then serialize as the octets it was parsed from.
    """

    __slots__ = ("_keys", "_names", "_values", "_as_sent")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._keys: list[str] = []  # lookup key per line (lower-case long form)
        self._names: list[str] = []  # canonical name per line
        self._values: list[str] = []
        self._as_sent = False
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_parsed(cls, keys: list[str], names: list[str], values: list[str]) -> Headers:
        headers = cls.__new__(cls)
        headers._keys = keys
        headers._names = names
        headers._values = values
        headers._as_sent = False  # parse_message() sets it once it has checked the whole message
        return headers

    def _first(self, key: str) -> str | None:
        """The value of the first line with lookup key ``key`` (unsplit), or None."""
        keys = self._keys
        if key in keys:
            return self._values[keys.index(key)]
        return None

    def _lines_of(self, key: str) -> list[str]:
        keys = self._keys
        if keys.count(key) == 1:
            return [self._values[keys.index(key)]]
        return list(compress(self._values, map(key.__eq__, keys)))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (the first list element for list-valued headers)."""
        key = _KEYS.get(name) or _name_info(name)[0]
        keys = self._keys
        if key not in keys:
            return default
        value = self._values[keys.index(key)]
        if key in _LIST_HEADERS and ("," in value or not value):
            for line in self._lines_of(key):
                elements = split_commas(line)
                if elements:
                    return elements[0]
            return default
        return value

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order; list-valued lines are split at top-level commas."""
        key = _KEYS.get(name) or _name_info(name)[0]
        if key not in self._keys:
            return []
        values = self._lines_of(key)
        if key in _LIST_HEADERS:
            out: list[str] = []
            for value in values:
                if "," in value:
                    out.extend(split_commas(value))
                else:
                    value = value.strip(" \t")
                    if value:
                        out.append(value)
            return out
        return values

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        key, canonical = _name_info(name)
        self._as_sent = False
        self._keys.append(key)
        self._names.append(canonical)
        self._values.append(value)

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` line by one line (at the position of the first, else appended)."""
        key, canonical = _name_info(name)
        self._as_sent = False
        keys = self._keys
        if key not in keys:
            self.add(name, value)
            return
        first = keys.index(key)
        self._names[first] = canonical
        self._values[first] = value
        if key in keys[first + 1 :]:
            self._keep([i == first or k != key for i, k in enumerate(keys)])

    def remove(self, name: str) -> None:
        """Remove every ``name`` line (no error if there is none)."""
        key = _name_info(name)[0]
        if key in self._keys:
            self._as_sent = False
            self._keep([k != key for k in self._keys])

    def _keep(self, keep: list[bool]) -> None:
        self._keys = list(compress(self._keys, keep))
        self._names = list(compress(self._names, keep))
        self._values = list(compress(self._values, keep))

    def count(self, name: str) -> int:
        """Number of header *lines* named ``name``."""
        return self._keys.count(_name_info(name)[0])

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return _name_info(name)[0] in self._keys

    def items(self) -> list[tuple[str, str]]:
        """(name, value) per header line, in order."""
        return list(zip(self._names, self._values, strict=True))

    def copy(self) -> Headers:
        return Headers._from_parsed(self._keys[:], self._names[:], self._values[:])

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def __len__(self) -> int:
        return len(self._keys)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._keys == other._keys and self._values == other._values

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    def _section(self, body_length: int) -> str:
        """The header lines for the wire, CRLF-joined, with one Content-Length equal to
        ``body_length`` (§18.3) in place of the first one (or appended)."""
        names = self._names
        values = self._values
        keys = self._keys
        cl = str(body_length)
        count = keys.count("content-length")
        if count != 1 or values[keys.index("content-length")] != cl:
            names = names[:]
            values = values[:]
            if count == 0:
                names.append("Content-Length")
                values.append(cl)
            else:
                first = keys.index("content-length")
                names[first] = "Content-Length"
                values[first] = cl
                if count > 1:
                    keep = [i <= first or k != "content-length" for i, k in enumerate(keys)]
                    names = list(compress(names, keep))
                    values = list(compress(values, keep))
        return "\r\n".join(map(": ".join, zip(names, values, strict=False)))


# --- messages -----------------------------------------------------------------------------------


class _MessageFields:
    """Serialization and the structured accessors (parsed on demand) of Request and Response."""

    headers: Headers
    body: bytes
    # (octets, headers, _fields()) of a message parse_message() made from octets already in the
    # form to_bytes() writes; None otherwise (set on the instance by the parser)
    _wire: tuple[bytes, Headers, tuple[object, ...]] | None = None

    def _start_line(self) -> str:
        raise NotImplementedError

    def _fields(self) -> tuple[object, ...]:
        """The fields other than ``headers`` that to_bytes() writes."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Start line, headers, ``Content-Length: len(body)`` (RFC 3261 §18.3), CRLF, body.

        A message that parse_message() made from octets already in exactly this form, and that is
        unchanged since (the same field values, its headers neither added to, set nor removed
        from), returns those octets: they are what the serializer would write.
        """
        wire = self._wire
        headers = self.headers
        if (
            wire is not None
            and wire[1] is headers
            and headers._as_sent
            and wire[2] == self._fields()
        ):
            return wire[0]
        return _encode(self._start_line(), headers, self.body)

    def _single(self, key: str, name: str) -> str:
        """The first value of a header (``key`` is its lookup key); SipParseError if missing."""
        headers = self.headers
        value = headers._first(key)
        if value is None or (key in _LIST_HEADERS and ("," in value or not value)):
            value = headers.get(name)
            if value is None:
                raise SipParseError(f"missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        value = self._single("call-id", "Call-ID")
        if not value:
            raise SipParseError("empty Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self._single("cseq", "CSeq"))

    @property
    def vias(self) -> list[Via]:
        return list(map(Via.parse, self.headers.get_all("Via")))

    @property
    def top_via(self) -> Via:
        return Via.parse(self._single("via", "Via"))

    @property
    def from_addr(self) -> NameAddr:
        return NameAddr.parse(self._single("from", "From"))

    @property
    def to_addr(self) -> NameAddr:
        return NameAddr.parse(self._single("to", "To"))

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values; a ``Contact: *`` (REGISTER, RFC 3261 §10.2.2) yields no entries."""
        values = self.headers.get_all("Contact")
        if "*" in values:
            return [NameAddr.parse(v) for v in values if v != "*"]
        return list(map(NameAddr.parse, values))


def _encode(start_line: str, headers: Headers, body: bytes) -> bytes:
    text = f"{start_line}\r\n{headers._section(len(body))}\r\n\r\n"
    return text.encode("utf-8", "surrogateescape") + body


@dataclass
class Request(_MessageFields):
    """A SIP request (RFC 3261 §7.1).  ``uri`` is the raw Request-URI text."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def _fields(self) -> tuple[object, ...]:
        return (self.method, self.uri, self.version, self.body)

    @property
    def request_uri(self) -> SipURI:
        return SipURI.parse(self.uri)


@dataclass
class Response(_MessageFields):
    """A SIP response (RFC 3261 §7.2)."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"

    def _start_line(self) -> str:
        return f"{self.version} {self.status:03d} {self.reason}"

    def _fields(self) -> tuple[object, ...]:
        return (self.status, self.reason, self.version, self.body)


# --- parsing ------------------------------------------------------------------------------------

_VERSION_RE = re.compile(r"SIP/\d+\.\d+", re.IGNORECASE)
# The usual Request-Line in one match: an alphabetic method, a visible-ASCII Request-URI, SIP/2.0,
# single spaces.  The general code below parses what it accepts the same way, and it is exactly
# the line _start_line() writes.
_REQUEST_LINE_RE = re.compile(r"([A-Za-z]++) ([!-~]++) SIP/2\.0")


def _parse_content_length(values: list[str]) -> int:
    if len(values) == 1:  # the usual case, same checks
        value = values[0]
        if value.isdigit() and value.isascii() and len(value) <= 10:
            return int(value)
    lengths = set()
    for value in values:
        if not (value.isascii() and value.isdigit()) or len(value) > 10:
            raise SipParseError(f"bad Content-Length {value!r}")
        lengths.add(int(value))
    if len(lengths) != 1:
        raise SipParseError("conflicting Content-Length values")
    return lengths.pop()


def _split_head(data: bytes) -> tuple[int, int, int]:
    """(start of the start line, end of the header section, start of the body)."""
    n = len(data)
    start = n - len(data.lstrip(b"\r\n"))  # RFC 3261 §7.5
    end = data.find(b"\r\n\r\n", start)
    lf = data.find(b"\n\n", start, end if end >= 0 else n)
    if lf >= 0:
        return start, lf, lf + 2
    if end >= 0:
        return start, end, end + 4
    return start, n, n  # no empty line: a body-less message missing its final CRLF


_HEAD_END_RE = re.compile(rb"\r\n\r\n")  # the empty line that ends the header section

# Cuts before each "<token>:<LWS>" (kept with its colon and LWS; possessive: the name class excludes
# ":" and nothing can follow the LWS, so backtracking never helps).  The lookbehind refuses a cut
# after a line that ends in LWS (a space or TAB before the CRLF, trimmed only by the general
# parser).  A CRLF not cut at - that one, or one before a name that is not a bare token (LWS
# before the colon, a folded continuation, a bad name) - stays inside a piece, which the LF
# check of _parse_header_section() sends to the general parser.
_HEADER_SPLIT_RE = re.compile(r"\r\n(?<![ \t]\r\n)([!#$%&'*+\-.0-9A-Z^_`a-z|~]++:[ \t]*+)")


def _parse_header_section(
    head: str,
) -> tuple[str, list[str], list[str], list[str], list[str], bool] | None:
    """Fast path for a CRLF header section without folding or trailing LWS.

    Returns (start line, keys, names, values, Content-Length values, as sent), or None when the
    section needs the general line-by-line parser.  "As sent" is True when every line reads
    ``<canonical name>: <value>``, i.e. the lines are what ``Headers`` writes back.

    The split cuts at every CRLF that starts a ``name:`` line and does not end a line with
    trailing LWS; every other LF (a bare LF line end, a folded continuation, a line without a
    colon, trailing LWS) is left inside a piece, so one C-level search of the joined pieces for
    an LF tells whether the split accounted for every line end.
    """
    if head[-1] in " \t\r\n":
        return None  # trailing LWS (or a line end) at the end of the last line
    parts = _HEADER_SPLIT_RE.split(head)
    if "\n" in "".join(parts):
        return None  # a line without a colon, bare LF line ends, trailing LWS, folding
    # Now every LF of ``head`` ends a CRLF line followed by "name:"; so no bare LF, no empty line.
    starts = parts[1::2]  # "<name>:<LWS>" per line
    # The canonical spellings first: a line written so is known and as to_bytes() writes it.
    keys = list(map(_CANONICAL_LINE_KEYS.get, starts))
    as_sent = True
    unknown: list[tuple[int, str]] = []
    if not all(keys):  # a None: a line not in the canonical spelling (all() beats "None in")
        for i, key in enumerate(keys):
            if key is not None:
                continue
            start = starts[i]
            key = _LINE_KEYS.get(start)
            if key is not None:  # a known name spelled otherwise (compact, case, LWS)
                keys[i] = key
                as_sent = False
                continue
            if start[0] == " " or start[0] == "\t":
                return None  # a folded continuation line
            name = start[: start.index(":")].rstrip(" \t")
            key, canonical_name = _name_info(name)
            if canonical_name is name and not is_token(name):
                raise SipParseError(f"bad header name {name!r}")
            keys[i] = key
            unknown.append((i, canonical_name))
            if start != f"{canonical_name}: ":
                as_sent = False
    canonical = list(map(_KEY_NAMES.get, keys))  # type: ignore[arg-type]  # no None left
    for i, canonical_name in unknown:
        canonical[i] = canonical_name
    values = parts[2::2]
    cl_count = keys.count(_CONTENT_LENGTH)
    if cl_count == 0:
        cl_values = []
    elif cl_count == 1:
        cl_values = [values[keys.index(_CONTENT_LENGTH)]]
    else:
        cl_values = [
            value for key, value in zip(keys, values, strict=True) if key == "content-length"
        ]
    return parts[0], keys, canonical, values, cl_values, as_sent  # type: ignore[return-value]


def _parse_header_lines(lines: list[str]) -> list[tuple[str, str, str]]:
    items: list[tuple[str, str, str]] = []
    info_table = _NAME_INFO
    for line in lines:
        if line[-1:] == "\r":
            line = line[:-1]
        if not line:
            raise SipParseError("empty line inside the header section")
        c = line[0]
        if c == " " or c == "\t":  # LWS continuation (RFC 3261 §7.3.1)
            if not items:
                raise SipParseError("continuation line before the first header")
            key, name, value = items[-1]
            cont = line.strip(" \t")
            if cont:
                items[-1] = (key, name, f"{value} {cont}" if value else cont)
            continue
        colon = line.find(":")
        if colon <= 0:
            raise SipParseError(f"header line without a name and colon: {line[:80]!r}")
        name = line[:colon]
        value = line[colon + 1 :].strip(" \t")
        lower = name.lower()
        info = info_table.get(lower)
        if info is None:
            name = name.rstrip(" \t")
            lower = name.lower()
            info = info_table.get(lower)
            if info is None:
                if not is_token(name):
                    raise SipParseError(f"bad header name {name!r}")
                items.append((lower, name, value))
                continue
        items.append((info[0], info[1], value))
    return items


def parse_message(data: bytes) -> Request | Response:
    """Parse one SIP message from a datagram (RFC 3261 §7, §18.3).

    With a Content-Length the body is exactly that many octets (trailing octets are ignored; fewer
    raise SipParseError); without one the body is the rest of the datagram.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise SipParseError(f"message larger than {MAX_MESSAGE_SIZE} octets")
    if type(data) is not bytes:
        data = bytes(data)
    start = 0
    if data[:1] in (b"\r", b"\n"):
        start = len(data) - len(data.lstrip(b"\r\n"))  # RFC 3261 §7.5
    end = _HEAD_END_RE.search(data, start)  # (sre's literal search beats bytes.find here)
    head_end = -1 if end is None else end.start()
    parsed = None
    as_sent = False
    if head_end > start:
        # Fast path; it accepts only a section without bare LFs, so the CRLFCRLF found is the end.
        parsed = _parse_header_section(data[start:head_end].decode("utf-8", "surrogateescape"))
    if parsed is not None:
        first, keys, names, values, cl_values, as_sent = parsed
        headers = _new_object(Headers)  # Headers._from_parsed(keys, names, values), inlined
        headers._keys = keys
        headers._names = names
        headers._values = values
        headers._as_sent = False
        body_start = head_end + 4
    else:
        start, head_end, body_start = _split_head(data)
        if start == head_end:
            raise SipParseError("empty message")
        head = data[start:head_end].decode("utf-8", "surrogateescape")
        lines = head.split("\n")
        while len(lines) > 1 and (lines[-1] == "" or lines[-1] == "\r"):
            lines.pop()  # a header section that ends in a line end but no empty line
        first = lines[0]
        if first[-1:] == "\r":
            first = first[:-1]
        items = _parse_header_lines(lines[1:])
        headers = Headers._from_parsed(
            [item[0] for item in items], [item[1] for item in items], [item[2] for item in items]
        )
        cl_values = [value for key, _, value in items if key == "content-length"]
    if cl_values:
        value = cl_values[0]
        if len(cl_values) == 1 and value.isdigit() and value.isascii() and len(value) <= 10:
            length = int(value)  # _parse_content_length(cl_values), the usual case inline
        else:
            length = _parse_content_length(cl_values)
        received = len(data) - body_start
        if length > received:
            raise SipParseError(f"Content-Length {length} exceeds the {received} octets received")
        body = data[body_start : body_start + length]
        # the one Content-Length that to_bytes() writes (no leading zeros)
        as_sent = as_sent and len(cl_values) == 1 and (value[0] != "0" or value == "0")
    else:
        body = data[body_start:]
        as_sent = False  # to_bytes() adds a Content-Length
    request_line = _REQUEST_LINE_RE.fullmatch(first)
    if request_line is not None:
        method, uri = request_line.groups()
        version = "SIP/2.0"
    elif first[:4].upper() == "SIP/":
        parts = first.split(" ", 2)
        if len(parts) < 2:
            raise SipParseError(f"bad status line {first[:80]!r}")
        version, code = parts[0], parts[1]
        if version != "SIP/2.0" and _VERSION_RE.fullmatch(version) is None:
            raise SipParseError(f"bad SIP version in {first[:80]!r}")
        if len(code) != 3 or not (code.isascii() and code.isdigit()) or code[0] == "0":
            raise SipParseError(f"bad status code in {first[:80]!r}")
        reason = parts[2] if len(parts) == 3 else ""
        response = Response(int(code), reason, headers, body, version.upper())
        if as_sent and first == response._start_line():
            headers._as_sent = True
            response._wire = (data[start : body_start + len(body)], headers, response._fields())
        return response
    else:
        parts = first.split()
        if len(parts) != 3:
            raise SipParseError(f"bad request line {first[:80]!r}")
        method, uri, version = parts
        if not (method.isalpha() and method.isascii()) and not is_token(method):
            raise SipParseError(f"bad method in {first[:80]!r}")
        if version != "SIP/2.0":
            if _VERSION_RE.fullmatch(version) is None:
                raise SipParseError(f"bad SIP version in {first[:80]!r}")
            version = version.upper()
        as_sent = as_sent and first == f"{method} {uri} {version}"  # as _start_line() writes it
    message = _new_object(Request)  # Request(method, uri, headers, body, version)
    message.method = method
    message.uri = uri
    message.headers = headers
    message.body = body
    message.version = version
    if as_sent:
        # Parsed from the very octets to_bytes() writes: it returns them for as long as the
        # message is unchanged (the same field values, its headers not modified since).
        headers._as_sent = True
        message._wire = (
            data[start : body_start + len(body)],
            headers,
            (method, uri, version, body),  # message._fields()
        )
    return message


# --- stream framing -----------------------------------------------------------------------------


class Keepalive(enum.Enum):
    """RFC 5626 §3.5.1 CRLF keep-alives on a stream: PING is CRLFCRLF, PONG is CRLF."""

    PING = "ping"
    PONG = "pong"


_STREAM_CL_RE = re.compile(rb"\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


class StreamFramer:
    """Cut a TCP/TLS byte stream into whole messages by Content-Length (RFC 3261 §18.3).

    ``feed()`` returns complete message byte strings (ready for ``parse_message``) and Keepalive
    markers.  CRLFCRLF between messages is a PING, a lone CRLF a PONG (RFC 5626 §3.5.1).  A
    missing Content-Length on a stream is taken as 0.  Bad framing (unparseable or conflicting
    Content-Length) or a message larger than ``max_size`` raises SipParseError; the connection
    should then be closed, the framer is not usable afterwards.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self._need: int | None = None  # total length of the message in progress, once known
        self._max = max_size
        self._broken = False

    def feed(self, data: bytes) -> list[bytes | Keepalive]:
        if self._broken:
            raise SipParseError("stream framing already failed")
        self._buf += data
        out: list[bytes | Keepalive] = []
        buf = self._buf
        try:
            while buf:
                if self._need is None:
                    first = buf[0]
                    if first == 10:  # stray LFs before a start line (RFC 3261 §7.5)
                        del buf[: len(buf) - len(buf.lstrip(b"\n"))]
                        continue
                    if first == 13:
                        if buf[:4] == b"\r\n\r\n":
                            out.append(Keepalive.PING)
                            del buf[:4]
                            continue
                        if buf[:2] == b"\r\n":
                            if len(buf) == 3 and buf[2] == 13:
                                break  # maybe the start of a PING split across segments
                            out.append(Keepalive.PONG)
                            del buf[:2]
                            continue
                        if len(buf) == 1:
                            break  # a lone CR: wait for what follows
                        run = len(buf) - len(buf.lstrip(b"\r"))
                        if run == len(buf) or buf[run] == 10:
                            run -= 1  # keep the CR of a (maybe incomplete) CRLF
                        del buf[:run]  # stray CRs
                        continue
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > self._max:
                            raise SipParseError("header section larger than the size limit")
                        break
                    head = bytes(buf[:end])
                    values = [
                        v.strip(b" \t").decode("latin-1") for v in _STREAM_CL_RE.findall(head)
                    ]
                    length = _parse_content_length(values) if values else 0
                    total = end + 4 + length
                    if total > self._max:
                        raise SipParseError("message larger than the size limit")
                    self._need = total
                if len(buf) < self._need:
                    break
                out.append(bytes(buf[: self._need]))
                del buf[: self._need]
                self._need = None
        except SipParseError:
            self._broken = True
            raise
        return out


# --- building responses -------------------------------------------------------------------------

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 428: "Use Identity Header",
    429: "Provide Referrer Identity", 430: "Flow Failed", 433: "Anonymity Disallowed",
    436: "Bad Identity-Info", 437: "Unsupported Certificate", 438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support", 440: "Max-Breadth Exceeded",
    469: "Bad Info Package", 470: "Consent Needed",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable", 607: "Unwanted", 608: "Rejected",
}  # fmt: skip

_CLASS_REASONS = {1: "Trying", 2: "OK", 3: "Redirect", 4: "Client Error", 5: "Server Error"}


def reason_phrase(status: int) -> str:
    """The RFC reason phrase for ``status`` (a generic one for unknown codes)."""
    phrase = REASON_PHRASES.get(status)
    if phrase is not None:
        return phrase
    return _CLASS_REASONS.get(status // 100, "Global Failure")


def make_response(
    request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None
) -> Response:
    """Build a response to ``request`` (RFC 3261 §8.2.6.2).

    Copies every Via (in order), From, To, Call-ID and CSeq verbatim; adds ``;tag=to_tag`` to To
    when given and To has no tag yet.  Other headers (Contact, Record-Route for dialog-creating
    responses per §12.1.1, Allow, Supported ...) are the caller's business.
    """
    headers = Headers()
    source = request.headers
    for key, name, value in zip(source._keys, source._names, source._values, strict=True):
        if key not in ("via", "from", "to", "call-id", "cseq"):
            continue
        if key == "to" and to_tag is not None:
            try:
                has_tag = NameAddr.parse(value).tag is not None
            except SipParseError:
                has_tag = ";tag=" in value.replace(" ", "").lower()
            if not has_tag:
                value = f"{value};tag={to_tag}"
        headers._keys.append(key)
        headers._names.append(name)
        headers._values.append(value)
    return Response(status, reason if reason is not None else reason_phrase(status), headers)


def new_branch() -> str:
    """A fresh RFC 3261 §8.1.1.7 branch: the magic cookie plus 64 random bits."""
    return BRANCH_MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    """A fresh From/To tag with 48 random bits (RFC 3261 §19.3 requires 32)."""
    return secrets.token_hex(6)


def new_call_id() -> str:
    """A globally unique Call-ID: 128 random bits (RFC 3261 §8.1.1.4)."""
    return secrets.token_hex(16)
