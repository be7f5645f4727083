"""What a UAS must do with a request that parses but is wrong, and a strict validity check.

``sip.message.parse_message`` is deliberately liberal (RFC 3261 §7, RFC 4475 §3.1.1): it accepts any
message it can frame and split into header fields, and the structured accessors parse values only
when asked.  This module decides what to *answer*:

``check_request(req)`` -> ``Response | None``
    The error response a UAS must send before any further processing (RFC 3261 §8.2.1-§8.2.3 and
    §21.4), or None when the request is acceptable and should be handed to the transaction/dialog
    layer.  Checks, in this order:

    ====  ==============================================================================  =========
    code  condition                                                                        RFC 3261
    ====  ==============================================================================  =========
    400   missing, repeated or malformed Via, From, To, Call-ID, CSeq; bad Max-Forwards,   §8.1.1,
          Expires or Contact; CSeq method differs from the method; Request-URI without     §8.2.2,
          a scheme or a malformed sip/sips URI. The reason phrase names the problem.       §21.4.1
    513   the message is larger than ``max_size`` octets                                   §21.5.14
    505   SIP-Version other than SIP/2.0                                                   §21.5.15
    501   method not in ``methods`` and not a method this stack knows of (with Allow)      §8.2.1
    405   a known method that is not in ``methods`` (with Allow)                           §8.2.1
    416   Request-URI scheme not in ``schemes``                                            §8.2.2.1
    420   Require lists option tags not in ``supported`` (with Unsupported); not for      §8.2.2.3
          ACK/CANCEL
    415   body with a Content-Type not in ``accept`` or a Content-Encoding not in         §8.2.3
          ``accept_encodings`` (with Accept / Accept-Encoding)
    406   INVITE whose Accept header excludes every type in ``accept``                    §21.4.7
    ====  ==============================================================================  =========

    An ACK never gets a response (RFC 3261 §17.2.3): ``check_request`` returns None for every ACK;
    drop a malformed ACK instead of processing it (``is_acceptable_ack``).  Error responses carry a
    To tag (§8.2.6.2) and are built with ``sip.message.make_response``.  Deliberately tolerated
    (RFC 4475 says a liberal element may process them): extra SP in the Request-Line, headers in
    the Request-URI, unquoted display names with odd characters, LWS inside ``<>``, non-GMT Date,
    Max-Forwards 0 at an endpoint, the ``2001:db8:::1`` IPv6 form of RFC 5118 §4.10.

``parse_strict(data)`` / ``parse_request_strict(data)``
    ``parse_message`` plus every check above that concerns syntax, plus the stricter grammar rules
    RFC 4475 §3.1.2 lists; raise ``SipParseError`` for anything RFC 4475 / RFC 5118 call invalid.
    Meant for tests and diagnostics, not for the live path (being liberal in what one accepts).

``response_for_unparseable(data)`` -> ``bytes | None``
    For input ``parse_message`` rejects: a 400 built from whatever Via, From, To, Call-ID and CSeq
    lines can be salvaged (RFC 3261 §21.4.1), or None when they are not all present, when the
    input looks like a response, or when it is an ACK - then the only right thing is silence.

Typical UAS use::

    try:
        msg = parse_message(datagram)
    except SipParseError:
        reply = response_for_unparseable(datagram)   # send it (if not None) to the source address
        return
    if isinstance(msg, Request):
        error = check_request(msg, methods=MY_METHODS, supported=MY_OPTION_TAGS)
        if error is not None:
            send(error)          # through the server transaction, like any response
            return
        ...                      # normal processing
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from sip.headers import CSeq, Via
from sip.message import (
    MAX_MESSAGE_SIZE,
    Headers,
    Request,
    Response,
    SipParseError,
    make_response,
    new_tag,
    parse_message,
    reason_phrase,
)
from sip.uri import NameAddr, is_token, read_quoted

__all__ = [
    "DEFAULT_ACCEPT",
    "DEFAULT_METHODS",
    "DEFAULT_SCHEMES",
    "KNOWN_METHODS",
    "check_request",
    "find_problem",
    "is_acceptable_ack",
    "parse_request_strict",
    "parse_strict",
    "response_for_unparseable",
]

DEFAULT_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS")
"""Methods a basic UA implements (RFC 3261 core)."""

KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER",  # RFC 3261
        "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
    }
)  # fmt: skip
"""Methods defined by RFCs: one that we do not implement gets 405, an unknown one 501."""

DEFAULT_ACCEPT = ("application/sdp",)
DEFAULT_SCHEMES = ("sip", "sips")

_SINGLE_HEADERS = ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Type", "Expires")
_MAX_DELTA = 2**32 - 1  # RFC 3261 §25.1 delta-seconds; RFC 4475 §3.1.2.4 treats larger as invalid
# RFC 3261 §25.1 rfc1123-date, GMT only (RFC 4475 §3.1.2.11)
_DATE_RE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT"
)
_REQUEST_LINE_RE = re.compile(r"[^ ]+ [^ ]+ SIP/2\.0")
_STATUS_LINE_RE = re.compile(r"SIP/2\.0 [1-6]\d\d .*", re.DOTALL)
_WARNING_RE = re.compile(r"\d{3} [^ ]+ \".*\"")


def _delta_ok(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= 10 and int(value) <= _MAX_DELTA


def _check_single(headers: Headers, problems: list[str]) -> None:
    for name in _SINGLE_HEADERS:
        if headers.count(name) > 1:
            problems.append(f"Multiple {name} header fields")


def _check_host(host: str, where: str) -> None:
    """Strict host check: an IPv6 reference must be an RFC 4291 address (RFC 5118 §4.10)."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SipParseError(f"invalid IPv6 address {host!r} in {where}") from None


def _strict_name_addr(value: str, where: str) -> NameAddr:
    """NameAddr.parse plus the RFC 3261 §25.1 rules RFC 4475 §3.1.2.6/.13/.14/.15 exercise."""
    na = NameAddr.parse(value)
    s = value.strip(" \t")
    if s.startswith('"'):
        lt = s.find("<", read_quoted(s, 0)[1])
    else:
        lt = s.find("<")
        semi = s.find(";")
        if 0 <= semi < lt:
            lt = -1
        display = s[:lt].strip(" \t") if lt > 0 else ""
        if display and not all(is_token(word) for word in display.split()):
            raise SipParseError(f"unquoted display name with non-token characters in {where}")
    if lt >= 0:
        inner = s[lt + 1 : s.find(">", lt)]
        if inner != inner.strip(" \t"):
            raise SipParseError(f"whitespace inside <> in {where}")
    elif na.uri.headers:
        raise SipParseError(f"a URI with headers must be in <> (name-addr form) in {where}")
    if na.uri.is_sip:
        _check_host(na.uri.host, where)
    return na


def find_problem(msg: Request | Response, *, strict: bool = False) -> str | None:
    """The first syntax problem of a parsed message, phrased as a 400 reason, or None.

    Liberal mode (``strict=False``) reports what a UAS must reject with 400 (RFC 3261 §8.2,
    §21.4.1).  ``strict=True`` adds the grammar rules a liberal element may let pass (RFC 4475
    §3.1.2).  Never raises.
    """
    try:
        return _find_problem(msg, strict)
    except SipParseError as exc:
        return str(exc)


def _find_problem(msg: Request | Response, strict: bool) -> str | None:
    headers = msg.headers
    problems: list[str] = []
    _check_single(headers, problems)
    if problems:
        return problems[0]
    for name in ("Call-ID", "CSeq", "From", "To", "Via"):
        if name not in headers:
            return f"Missing {name} header field"
    if not msg.call_id.strip():
        return "Empty Call-ID"
    try:
        cseq = msg.cseq
    except SipParseError:
        return "Malformed CSeq header field"
    try:
        vias = msg.vias
    except SipParseError:
        return "Malformed Via header field"
    if not vias:
        return "Missing Via header field"
    try:
        from_addr = (
            _strict_name_addr(headers.get("From") or "", "From") if strict else msg.from_addr
        )
    except SipParseError:
        return "Malformed From header field"
    try:
        to_addr = _strict_name_addr(headers.get("To") or "", "To") if strict else msg.to_addr
    except SipParseError:
        return "Malformed To header field"
    del from_addr, to_addr
    try:
        for value in headers.get_all("Contact"):
            if value != "*":
                if strict:
                    _strict_name_addr(value, "Contact")
                else:
                    NameAddr.parse(value)
    except SipParseError:
        return "Malformed Contact header field"
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None and not (
        max_forwards.isascii() and max_forwards.isdigit() and int(max_forwards) <= 255
    ):
        return "Malformed Max-Forwards header field"
    expires = headers.get("Expires")
    if expires is not None and not _delta_ok(expires):
        return "Malformed Expires header field"
    for contact in msg.contacts:
        contact_expires = contact.params.get("expires")
        if contact_expires is not None and not _delta_ok(contact_expires):
            return "Malformed Contact expires parameter"
    if isinstance(msg, Request):
        if cseq.method != msg.method:
            return "CSeq method does not match the Request-Line"
        try:
            ruri = msg.request_uri
        except SipParseError:
            return "Malformed Request-URI"
        if strict:
            if ruri.is_sip:
                _check_host(ruri.host, "Request-URI")
                if ruri.headers:
                    return "Request-URI with headers"
    if strict:
        return _strict_extras(msg, vias)
    return None


def _strict_extras(msg: Request | Response, vias: list[Via]) -> str | None:
    headers = msg.headers
    for via in vias:
        if via.protocol != "SIP/2.0":
            return f"Via with protocol {via.protocol}"
        _check_host(via.host, "Via")
    if msg.version != "SIP/2.0":
        return f"Unsupported version {msg.version}"
    date = headers.get("Date")
    if date is not None and _DATE_RE.fullmatch(date) is None:
        return "Malformed Date header field"
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        delta = retry_after.split("(", 1)[0].split(";", 1)[0].strip(" \t")
        if not _delta_ok(delta):
            return "Malformed Retry-After header field"
    for warning in headers.get_all("Warning"):
        if _WARNING_RE.fullmatch(warning) is None:
            return "Malformed Warning header field"
    for name in ("Route", "Record-Route"):
        for value in headers.get_all(name):
            try:
                _strict_name_addr(value, name)
            except SipParseError:
                return f"Malformed {name} header field"
    return None


def parse_strict(data: bytes) -> Request | Response:
    """``parse_message`` that raises SipParseError for anything RFC 4475/5118 call invalid."""
    msg = parse_message(data)
    start = data.lstrip(b"\r\n")
    first = start.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "surrogateescape")
    line_re = _REQUEST_LINE_RE if isinstance(msg, Request) else _STATUS_LINE_RE
    if line_re.fullmatch(first) is None:
        raise SipParseError(f"malformed start line {first[:80]!r}")
    problem = find_problem(msg, strict=True)
    if problem is not None:
        raise SipParseError(problem)
    return msg


def parse_request_strict(data: bytes) -> Request:
    """``parse_strict`` for requests only (a response raises SipParseError too)."""
    msg = parse_strict(data)
    if not isinstance(msg, Request):
        raise SipParseError("not a request")
    return msg


def is_acceptable_ack(req: Request) -> bool:
    """An ACK fit for processing (no response is ever sent for an ACK, RFC 3261 §17.2.3)."""
    return req.method == "ACK" and find_problem(req) is None


def _reply(req: Request, status: int, reason: str | None = None) -> Response:
    try:
        has_tag = req.to_addr.tag is not None
    except SipParseError:
        has_tag = False
    return make_response(req, status, reason, to_tag=None if has_tag else new_tag())


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip(" \t").lower()


def _accepts(accept_values: list[str], offered: Iterable[str]) -> bool:
    for value in accept_values:
        mtype = _media_type(value)
        if mtype in ("*/*", ""):
            return True
        for o in offered:
            o = o.lower()
            if mtype == o or (mtype.endswith("/*") and o.startswith(mtype[:-1])):
                return True
    return False


def _message_size(req: Request) -> int:
    size = len(req.method) + len(req.uri) + 12 + len(req.body)
    for name, value in req.headers.items():
        size += len(name) + len(value) + 4
    return size


def check_request(
    req: Request,
    *,
    methods: Iterable[str] = DEFAULT_METHODS,
    supported: Iterable[str] = (),
    accept: Iterable[str] = DEFAULT_ACCEPT,
    accept_encodings: Iterable[str] = ("identity",),
    schemes: Iterable[str] = DEFAULT_SCHEMES,
    max_size: int = MAX_MESSAGE_SIZE,
) -> Response | None:
    """The response a UAS must send at once for ``req``, or None if it may be processed.

    See the module docstring for the checks and their order.  ``methods`` are the methods the UA
    implements (listed in Allow of 405/501), ``supported`` its option tags, ``accept`` the body
    types it understands, ``schemes`` the Request-URI schemes it serves.  Returns None for ACK.
    """
    if req.method == "ACK":
        return None
    problem = find_problem(req)
    if problem is not None:
        return _reply(req, 400, problem)
    if _message_size(req) > max_size:
        return _reply(req, 513)
    if req.version.upper() != "SIP/2.0":
        return _reply(req, 505)
    method_list = list(methods)
    if req.method not in method_list:
        status = 405 if req.method in KNOWN_METHODS else 501
        resp = _reply(req, status)
        resp.headers.add("Allow", ", ".join(method_list))
        return resp
    ruri = req.request_uri
    if ruri.scheme not in set(schemes):
        return _reply(req, 416)
    if req.method != "CANCEL":
        supported_tags = {t.lower() for t in supported}
        unknown = [t for t in req.headers.get_all("Require") if t.lower() not in supported_tags]
        if unknown:
            resp = _reply(req, 420)
            resp.headers.add("Unsupported", ", ".join(unknown))
            return resp
    accept_list = [a.lower() for a in accept]
    if req.body and req.method != "CANCEL":
        ctype = req.headers.get("Content-Type")
        if ctype is None or _media_type(ctype) not in accept_list:
            resp = _reply(req, 415)
            resp.headers.add("Accept", ", ".join(accept_list))
            return resp
        encodings = {e.lower() for e in accept_encodings}
        for enc in req.headers.get_all("Content-Encoding"):
            if enc.lower() not in encodings:
                resp = _reply(req, 415)
                resp.headers.add("Accept-Encoding", ", ".join(sorted(encodings)))
                return resp
    if req.method == "INVITE" and "Accept" in req.headers:
        if not _accepts(req.headers.get_all("Accept"), accept_list):
            resp = _reply(req, 406)
            resp.headers.add("Accept", ", ".join(accept_list))
            return resp
    return None


# --- salvage for unparseable input ----------------------------------------------------------------

_SALVAGE_NAMES = {
    "via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
    "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq",
}  # fmt: skip


def response_for_unparseable(data: bytes) -> bytes | None:
    """A best-effort ``400 Bad Request`` for a request ``parse_message`` cannot parse.

    The Via, From, To, Call-ID and CSeq lines are salvaged line by line (compact forms and folding
    understood) and copied into the response (RFC 3261 §8.2.6.2, §21.4.1).  Returns None - send
    nothing - when any of them is missing, the top Via or the CSeq does not parse, the start line
    is a status line, or the request is an ACK.  Never raises.
    """
    try:
        return _salvage(data)
    except (SipParseError, UnicodeError):
        return None


def _salvage(data: bytes) -> bytes | None:
    text = data[:MAX_MESSAGE_SIZE].lstrip(b"\r\n").decode("utf-8", "surrogateescape")
    end = text.find("\r\n\r\n")
    if end >= 0:
        text = text[:end]
    lines = text.replace("\r\n", "\n").split("\n")
    start = lines[0].split()
    if not start or start[0].upper().startswith("SIP/") or not is_token(start[0]):
        return None
    method = start[0]
    if method == "ACK":
        return None
    found: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            break
        if line[0] in " \t":
            if found:
                name, value = found[-1]
                cont = line.strip(" \t")
                found[-1] = (name, f"{value} {cont}" if value else cont)
            continue
        name, colon, value = line.partition(":")
        canonical = _SALVAGE_NAMES.get(name.strip(" \t").lower())
        if colon and canonical is not None:
            found.append((canonical, value.strip(" \t")))
    got = {name for name, _ in found}
    if got != {"Via", "From", "To", "Call-ID", "CSeq"}:
        return None
    headers = Headers(found)
    cseq_values = headers.get_all("CSeq")
    if len(cseq_values) != 1 or not headers.get("Call-ID"):
        return None
    cseq = CSeq.parse(cseq_values[0])
    if cseq.method == "ACK":
        return None
    Via.parse(headers.get("Via") or "")
    stub = Request(method, start[1] if len(start) > 1 else "", headers)
    try:
        has_tag = NameAddr.parse(headers.get("To") or "").tag is not None
    except SipParseError:
        has_tag = True  # do not append a tag to a To we cannot read
    resp = make_response(stub, 400, reason_phrase(400), to_tag=None if has_tag else new_tag())
    return resp.to_bytes()
