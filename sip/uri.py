"""URIs (RFC 3261 §19.1, §25.1; RFC 3966 tel; RFC 5118 IPv6) and name-addr values.

``SipURI`` is the parsed form of any absolute URI found in SIP: ``sip:``/``sips:`` URIs are split
into user, password, host, port, parameters and headers; ``tel:`` URIs into the number (``user``)
and parameters; every other scheme (``http:``, ``isbn:``, ``urn:`` ...) keeps its scheme-specific
part in ``opaque`` so it can be carried around and printed unchanged (RFC 4475 §3.3.1, §3.3.3).

Escapes (RFC 3261 §19.1.2, §25.1 ``escaped``): ``user``, ``password``, parameter names and values
and header names and values are stored *unescaped*; ``str()`` escapes exactly the characters the
grammar requires, so ``sip:%75se%72@h`` becomes ``sip:user@h`` (equivalent, RFC 3261 §19.1.4).

``NameAddr`` is the ``name-addr`` / ``addr-spec`` value of From, To, Contact, Route, Record-Route,
Reply-To, Refer-To ... (RFC 3261 §20.10, §25.1).  Header parameters (``;tag=``, ``;expires=``) are
in ``NameAddr.params``; URI parameters (inside ``<>``) are in ``NameAddr.uri.params``.

Parameter values are kept as they appear on the wire apart from URI unescaping: a quoted-string
value (``+sip.instance="<urn:uuid:...>"``) keeps its quotes.  Parameter names are lower-cased.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = ["NameAddr", "SipParseError", "SipURI"]


class SipParseError(ValueError):
    """Malformed SIP input: the only exception the SIP parsers raise (also in sip.message)."""


# --- lexical helpers shared by sip.uri, sip.headers and sip.message -----------------------------

# RFC 3261 §25.1 token
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9\-._]+")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+")

# Characters allowed unescaped (RFC 3261 §25.1): unreserved = alphanum / mark
_UNRESERVED = "A-Za-z0-9\\-_.!~*'()"
_USER_ESCAPE_RE = re.compile("[^" + _UNRESERVED + "&=+$,;?/]")  # user-unreserved
_PASSWORD_ESCAPE_RE = re.compile("[^" + _UNRESERVED + "&=+$,]")
_PARAM_ESCAPE_RE = re.compile("[^" + _UNRESERVED + "\\[\\]/:&+$]")  # param-unreserved
_HEADER_ESCAPE_RE = re.compile("[^" + _UNRESERVED + "\\[\\]/?:+$]")  # hnv-unreserved


def _pct(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode("utf-8", "surrogateescape"))


def _escape(text: str, pattern: re.Pattern[str]) -> str:
    if pattern.search(text) is None:
        return text
    return pattern.sub(_pct, text)


def _unescape(text: str) -> str:
    """%HH -> character (UTF-8; undecodable octets survive as surrogate escapes)."""
    if "%" not in text:
        return text
    return unquote(text, encoding="utf-8", errors="surrogateescape")


def is_token(text: str) -> bool:
    """RFC 3261 §25.1 ``token``."""
    return _TOKEN_RE.fullmatch(text) is not None


def _element_re(sep: str) -> re.Pattern[str]:
    # One element: quoted-strings (backslash escapes, maybe unterminated), <...> spans (maybe
    # unterminated) and any other character but ``sep``.  The alternatives start with distinct
    # characters, so matching is linear.
    return re.compile(r'(?:"(?:[^"\\]|\\.?)*"?|<[^>]*>?|[^"<' + re.escape(sep) + r"])*", re.S)


_ELEMENT_RES = {sep: _element_re(sep).match for sep in ",;&"}


def split_quoted(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside quoted-strings (with backslash escapes) and outside ``<...>``."""
    if '"' not in text and "<" not in text:
        return text.split(sep)
    if "\\" not in text:
        # Balanced quotes without escapes, no ``sep`` inside them and no ``<`` outside them: a plain
        # split gives the same elements.
        segments = text.split('"')
        if (
            len(segments) & 1
            and sep not in "".join(segments[1::2])
            and "<" not in "".join(segments[0::2])
        ):
            return text.split(sep)
    match = _ELEMENT_RES.get(sep) or _element_re(sep).match
    out: list[str] = []
    pos = 0
    n = len(text)
    while True:
        m = match(text, pos)
        end = m.end() if m is not None else n
        out.append(text[pos:end])
        if end >= n:
            return out
        pos = end + 1


def split_commas(value: str) -> list[str]:
    """Elements of a comma-separated header value (RFC 3261 §7.3.1), empty elements dropped."""
    if "," not in value:
        value = value.strip(" \t")
        return [value] if value else []
    out = []
    for part in split_quoted(value, ","):
        part = part.strip(" \t")
        if part:
            out.append(part)
    return out


def parse_params(text: str, *, unescape: bool = False) -> dict[str, str | None]:
    """``name[=value]`` pairs separated by ``;`` (``text`` starts after the first ``;``).

    Names are lower-cased; LWS around ``=`` and ``;`` is allowed (RFC 3261 §25.1 ``EQUAL``,
    ``SEMI``); an empty parameter (``;;``) is a syntax error (RFC 4475 §3.1.2.1).
    """
    params: dict[str, str | None] = {}
    parts = text.split(";") if '"' not in text else split_quoted(text, ";")
    if " " not in text and "\t" not in text and not (unescape and "%" in text):
        # fast path (same result): nothing to strip or unescape
        for part in parts:
            name, eq, value = part.partition("=")
            if not name:
                raise SipParseError(f"empty parameter in {text!r}")
            params[name.lower()] = value if eq else None
        return params
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip(" \t")
        if not name:
            raise SipParseError(f"empty parameter in {text!r}")
        if unescape:
            name = _unescape(name)
        name = name.lower()
        if eq:
            v = value.strip(" \t")
            if unescape:
                v = _unescape(v)
            params[name] = v
        else:
            params[name] = None
    return params


def format_params(params: dict[str, str | None], pattern: re.Pattern[str] | None = None) -> str:
    out = []
    for name, value in params.items():
        if pattern is not None:
            name = _escape(name, pattern)
            if value is not None:
                value = _escape(value, pattern)
        out.append(f";{name}" if value is None else f";{name}={value}")
    return "".join(out)


_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\[^\r\n])*)"', re.S)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.S)


def read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read the quoted-string opening at ``text[start] == '"'``; return (unescaped content, end).

    ``end`` is the index just after the closing quote.  RFC 3261 §25.1 quoted-pair: ``\\`` escapes
    any octet except CR and LF.
    """
    m = _QUOTED_RE.match(text, start)
    if m is None:
        raise SipParseError(f"unterminated quoted string in {text!r}")
    content = m.group(1)
    if "\\" in content:
        content = _QUOTED_PAIR_RE.sub(r"\1", content)
    return content, m.end()


def quote(text: str) -> str:
    """A quoted-string for ``text`` (RFC 3261 §25.1)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_host(text: str, where: str) -> str:
    """Validate a host (hostname, IPv4 or [IPv6] reference); return it without brackets."""
    if text.startswith("["):
        if not text.endswith("]") or _IPV6_RE.fullmatch(text[1:-1]) is None:
            raise SipParseError(f"bad IPv6 reference in {where!r}")
        return text[1:-1]
    if _HOSTNAME_RE.fullmatch(text) is None:
        raise SipParseError(f"bad host in {where!r}")
    return text


def parse_port(text: str, where: str) -> int:
    if not (0 < len(text) <= 5 and text.isascii() and text.isdigit()):
        raise SipParseError(f"bad port in {where!r}")
    port = int(text)
    if port > 65535:
        raise SipParseError(f"port out of range in {where!r}")
    return port


def split_hostport(text: str, where: str) -> tuple[str, int | None]:
    """``host[:port]`` with RFC 5118 IPv6 references (``[2001:db8::1]:5060``)."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise SipParseError(f"unterminated IPv6 reference in {where!r}")
        host = parse_host(text[: close + 1], where)
        rest = text[close + 1 :].strip(" \t")
        if not rest:
            return host, None
        if rest[0] != ":":
            raise SipParseError(f"junk after IPv6 reference in {where!r}")
        return host, parse_port(rest[1:].strip(" \t"), where)
    host, colon, port = text.partition(":")
    host = parse_host(host.rstrip(" \t"), where)
    if not colon:
        return host, None
    return host, parse_port(port.strip(" \t"), where)


def format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# Fast paths for the common, plain forms (no escapes, quotes, LWS or URI headers).  Whatever they
# accept, the general parser below accepts with the same result (tests/unit/test_sip_uri.py and
# tests/unit/test_parse_fastpaths.py check this); everything else takes the general path.  The
# quantifiers are possessive (``++``, ``*+``): each character class excludes the character that
# follows it in the pattern, so giving up characters could never lead to a match, and possessive
# matching just skips the useless backtracking (e.g. a host-only URI first read as a user part).
_SIP_FAST = (
    r"(sips?):"
    r"(?:([A-Za-z0-9\-_.!~*'()&=+$,/]++)(?::([A-Za-z0-9\-_.!~*'()&=+$,]*+))?@)?"
    r"([A-Za-z0-9\-_.]++|\[[0-9A-Fa-f:.]++\])"
    r"(?::([0-9]{1,5}+))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$=]*+)*+)"
)
_DISPLAY_FAST = (
    r'(?:"([^"\\\r\n]*+)" *+'
    r"|([A-Za-z0-9\-.!%*_+`'~]++(?: [A-Za-z0-9\-.!%*_+`'~]++)*+) *+)?"
)
_SIP_FAST_RE = re.compile(_SIP_FAST)
# A name-addr around a plain SIP URI, in one match: a lone ``;tag=`` parameter (From/To) is
# captured by itself, any other header parameters as one tail.  Then a name-addr around any URI.
_NAME_ADDR_SIP_FAST_RE = re.compile(
    _DISPLAY_FAST + "<" + _SIP_FAST + r'>(?:;tag=([^;\s"]*+)|((?:;.*)?))', re.S
)
_NAME_ADDR_FAST_RE = re.compile(_DISPLAY_FAST + r"<([^<>\"\s]++)>((?:;.*)?)", re.S)


# --- SipURI ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class SipURI:
    """An absolute URI; fully decomposed for ``sip``/``sips`` (RFC 3261 §19.1.1) and ``tel``.

    ``host`` holds IPv6 addresses without brackets; ``host`` is ``""`` for tel and opaque URIs.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    opaque: str | None = None  # scheme-specific part of a URI that is neither sip, sips nor tel

    @classmethod
    def parse(cls, text: str) -> SipURI:
        """Parse a URI (RFC 3261 §19.1.1, §25.1; RFC 5118 §4 IPv6 references)."""
        m = _SIP_FAST_RE.fullmatch(text)
        if m is not None:
            scheme, user, password, host, port, params = m.groups()
            if host[0] == "[":
                host = host[1:-1]
            if port is None:
                return cls(
                    scheme,
                    user,
                    password,
                    host,
                    None,
                    parse_params(params[1:]) if params else {},
                    {},
                )
            port_number = int(port)
            if port_number > 65535:
                raise SipParseError(f"port {port_number} out of range")
            return cls(
                scheme,
                user,
                password,
                host,
                port_number,
                parse_params(params[1:]) if params else {},
                {},
            )
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> SipURI:
        text = text.strip(" \t")
        colon = text.find(":")
        if colon <= 0:
            raise SipParseError(f"URI without scheme: {text!r}")
        scheme = text[:colon]
        if _SCHEME_RE.fullmatch(scheme) is None:
            raise SipParseError(f"bad URI scheme in {text!r}")
        scheme = scheme.lower()
        rest = text[colon + 1 :]
        if not rest or " " in rest or "\t" in rest:
            raise SipParseError(f"bad URI {text!r}")
        if scheme == "sip" or scheme == "sips":
            return cls._parse_sip(scheme, rest, text)
        if scheme == "tel":
            number, semi, params = rest.partition(";")
            if not number:
                raise SipParseError(f"empty tel number in {text!r}")
            return cls(
                scheme="tel",
                user=_unescape(number),
                params=parse_params(params, unescape=True) if semi else {},
            )
        return cls(scheme=scheme, opaque=rest)

    @classmethod
    def _parse_sip(cls, scheme: str, rest: str, text: str) -> SipURI:
        user: str | None = None
        password: str | None = None
        at = rest.find("@")
        if at >= 0:
            userinfo = rest[:at]
            rest = rest[at + 1 :]
            u, colon, pw = userinfo.partition(":")
            if not u:
                raise SipParseError(f"empty user in {text!r}")
            user = _unescape(u)
            if colon:
                password = _unescape(pw)
        headers: dict[str, str] = {}
        q = rest.find("?")
        if q >= 0:
            for hdr in rest[q + 1 :].split("&"):
                if not hdr:
                    continue
                hname, _, hvalue = hdr.partition("=")
                if not hname:
                    raise SipParseError(f"empty URI header name in {text!r}")
                headers[_unescape(hname)] = _unescape(hvalue)
            rest = rest[:q]
        semi = rest.find(";")
        if semi >= 0:
            params = parse_params(rest[semi + 1 :], unescape=True)
            rest = rest[:semi]
        else:
            params = {}
        if not rest:
            raise SipParseError(f"URI without host: {text!r}")
        host, port = split_hostport(rest, text)
        return cls(scheme, user, password, host, port, params, headers)

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        parts = [self.scheme, ":"]
        if self.scheme == "tel":
            parts.append(_escape(self.user or "", _USER_ESCAPE_RE))
        else:
            if self.user is not None:
                parts.append(_escape(self.user, _USER_ESCAPE_RE))
                if self.password is not None:
                    parts.append(":")
                    parts.append(_escape(self.password, _PASSWORD_ESCAPE_RE))
                parts.append("@")
            parts.append(self.hostport)
        if self.params:
            parts.append(format_params(self.params, _PARAM_ESCAPE_RE))
        if self.headers:
            parts.append("?")
            parts.append(
                "&".join(
                    f"{_escape(k, _HEADER_ESCAPE_RE)}={_escape(v, _HEADER_ESCAPE_RE)}"
                    for k, v in self.headers.items()
                )
            )
        return "".join(parts)

    @property
    def hostport(self) -> str:
        """``host[:port]`` with IPv6 addresses in brackets."""
        host = format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def transport(self) -> str | None:
        """The lower-case ``transport`` URI parameter, or None."""
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def is_sip(self) -> bool:
        """True for ``sip:`` and ``sips:`` URIs."""
        return self.scheme == "sip" or self.scheme == "sips"

    def equivalent(self, other: SipURI) -> bool:
        """URI comparison of RFC 3261 §19.1.4 (not ``==``, which compares the fields as stored).

        sip and sips never match; user and password compare case-sensitively, everything else
        case-insensitively; escapes do not matter (values are stored unescaped); a component
        present in only one URI (user, password, port - even the default 5060) never matches;
        a ``user``, ``ttl``, ``method``, ``maddr`` or ``transport`` parameter must be in both
        or neither (``transport`` per the section's examples: "can resolve to different
        transports"), other parameters in only one URI are ignored, those in both must match;
        URI headers must be the same set (names case-insensitive, values exact).  IPv6 hosts
        compare as addresses (``[::1]`` is ``[0:0::1]``).  tel URIs compare the number without
        visual separators and every parameter; other schemes compare their text exactly.  The
        relation is not transitive (§19.1.4's ``;security=on`` / ``;security=off`` example).
        """
        if self.scheme.lower() != other.scheme.lower():
            return False
        scheme = self.scheme.lower()
        if self.opaque is not None or other.opaque is not None:
            return self.opaque == other.opaque
        if scheme == "tel":
            return _tel_number(self.user) == _tel_number(other.user) and _lower_params(
                self.params
            ) == _lower_params(other.params)
        if (
            self.user != other.user
            or self.password != other.password
            or self.port != other.port
            or not _same_host(self.host, other.host)
        ):
            return False
        mine = _lower_params(self.params)
        theirs = _lower_params(other.params)
        for name, value in mine.items():
            if name in theirs:
                if theirs[name] != value:
                    return False
            elif name in _PARAMS_IN_BOTH:
                return False
        if any(name in _PARAMS_IN_BOTH and name not in mine for name in theirs):
            return False
        return _lower_names(self.headers) == _lower_names(other.headers)


# RFC 3261 §19.1.4: present in one URI only, these parameters make the URIs differ
_PARAMS_IN_BOTH = frozenset({"user", "ttl", "method", "maddr", "transport"})
_TEL_SEPARATORS = str.maketrans("", "", "-.()")  # RFC 3966 §5.1.1 visual-separator


def _lower_params(params: dict[str, str | None]) -> dict[str, str | None]:
    return {name.lower(): None if v is None else v.lower() for name, v in params.items()}


def _lower_names(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _tel_number(number: str | None) -> str:
    return (number or "").translate(_TEL_SEPARATORS).lower()


def _same_host(a: str, b: str) -> bool:
    if a.lower() == b.lower():
        return True
    if ":" in a and ":" in b:
        try:
            return ipaddress.IPv6Address(a) == ipaddress.IPv6Address(b)
        except ValueError:
            return False
    return False


# --- NameAddr -------------------------------------------------------------------------------------


@dataclass(slots=True)
class NameAddr:
    """``[display-name] <URI> *(;param)`` or ``addr-spec *(;param)`` (RFC 3261 §20.10, §25.1).

    In the addr-spec form (no ``<>``) every ``;param`` after the URI is a header parameter
    (RFC 3261 §20.10, RFC 4475 §3.3.12).  ``display_name`` is unquoted/unescaped.
    """

    uri: SipURI
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        m = _NAME_ADDR_SIP_FAST_RE.fullmatch(text)
        if m is not None:
            quoted, plain, scheme, user, password, host, port, uri_params, tag, tail = m.groups()
            if host[0] == "[":
                host = host[1:-1]
            port_number = None
            if port is not None:
                port_number = int(port)
                if port_number > 65535:
                    raise SipParseError(f"port {port_number} out of range")
            return cls(
                SipURI(
                    scheme,
                    user,
                    password,
                    host,
                    port_number,
                    parse_params(uri_params[1:]) if uri_params else {},
                    {},
                ),
                quoted if quoted is not None else plain,
                {"tag": tag} if tag is not None else parse_params(tail[1:]) if tail else {},
            )
        m = _NAME_ADDR_FAST_RE.fullmatch(text)
        if m is not None:
            quoted, plain, uri_text, tail = m.groups()
            return cls(
                SipURI.parse(uri_text),
                quoted if quoted is not None else plain,
                parse_params(tail[1:]) if tail else {},
            )
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> NameAddr:
        s = text.strip(" \t")
        if not s:
            raise SipParseError("empty name-addr")
        display: str | None
        if s[0] == '"':
            display, end = read_quoted(s, 0)
            lt = s.find("<", end)
            if lt < 0 or s[end:lt].strip(" \t"):
                raise SipParseError(f"expected '<' after display name in {text!r}")
        else:
            lt = s.find("<")
            if lt >= 0:
                semi = s.find(";")
                if 0 <= semi < lt:
                    lt = -1  # '<' belongs to a parameter of an addr-spec
            display = s[:lt].strip(" \t") if lt > 0 else None
            if display == "":
                display = None
        if lt >= 0:
            gt = s.find(">", lt)
            if gt < 0:
                raise SipParseError(f"missing '>' in {text!r}")
            uri = SipURI.parse(s[lt + 1 : gt])
            tail = s[gt + 1 :].strip(" \t")
        else:
            semi = s.find(";")
            if semi >= 0:
                uri = SipURI.parse(s[:semi])
                tail = s[semi:]
            else:
                uri = SipURI.parse(s)
                tail = ""
        if tail:
            if tail[0] != ";":
                raise SipParseError(f"junk after address in {text!r}")
            params = parse_params(tail[1:])
        else:
            params = {}
        return cls(uri, display, params)

    def __str__(self) -> str:
        head = f"{quote(self.display_name)} " if self.display_name else ""
        return f"{head}<{self.uri}>{format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        """The ``tag`` header parameter (RFC 3261 §19.3), or None."""
        return self.params.get("tag")
