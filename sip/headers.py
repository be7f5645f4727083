"""Structured values of the Via and CSeq header fields (RFC 3261 §20.42, §20.16)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sip.uri import (
    SipParseError,
    format_host,
    format_params,
    is_token,
    parse_params,
    split_hostport,
)

__all__ = ["CSeq", "Via"]

MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31
_CSEQ_LIMIT = 2**32 - 1  # RFC 3261 §20.16 / RFC 4475 §3.1.2.4: larger values are malformed


# Fast path for the plain form; whatever it accepts, the general parser parses the same way.
# The parameters after the first ";" go to parse_params() as they are, just as in the general
# parser, so the fast path need not look into them.  Possessive quantifiers: each class excludes
# what follows it, so backtracking could not help.
_VIA_FAST_RE = re.compile(
    r"SIP/2\.0/([A-Za-z]++) ([A-Za-z0-9\-_.]++|\[[0-9A-Fa-f:.]++\])(?::([0-9]{1,5}+))?(;.*)?",
    re.S,
)


@dataclass(slots=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host[:port];branch=...`` (RFC 3261 §20.42, §25.1).

    ``transport`` is upper-case; ``host`` has no IPv6 brackets; ``params`` names are lower-case,
    flag parameters (a bare ``;rport``) map to None.  LWS is allowed around ``/``, ``:``, ``;`` and
    ``=`` (RFC 4475 §3.1.1.1).  ``protocol`` is the sent-protocol name and version, normally
    ``SIP/2.0``.
    """

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        m = _VIA_FAST_RE.fullmatch(text)
        if m is not None:
            transport, host, port, params = m.groups()
            if host[0] == "[":
                host = host[1:-1]
            port_number = None
            if port is not None:
                port_number = int(port)
                if port_number > 65535:
                    raise SipParseError(f"port out of range in {text!r}")
            return cls(
                transport.upper(),
                host,
                port_number,
                parse_params(params[1:]) if params else {},
                "SIP/2.0",
            )
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> Via:
        parts = text.split("/", 2)
        if len(parts) != 3:
            raise SipParseError(f"bad Via sent-protocol in {text!r}")
        name = parts[0].strip(" \t")
        version = parts[1].strip(" \t")
        rest = parts[2].lstrip(" \t")
        if not is_token(name) or not is_token(version):
            raise SipParseError(f"bad Via sent-protocol in {text!r}")
        end = 0
        n = len(rest)
        while end < n and rest[end] not in " \t":
            end += 1
        transport = rest[:end]
        if not is_token(transport):
            raise SipParseError(f"bad Via transport in {text!r}")
        rest = rest[end:].lstrip(" \t")
        semi = rest.find(";")
        if semi >= 0:
            sent_by = rest[:semi].rstrip(" \t")
            params = parse_params(rest[semi + 1 :])
        else:
            sent_by = rest.rstrip(" \t")
            params = {}
        if not sent_by:
            raise SipParseError(f"Via without sent-by: {text!r}")
        host, port = split_hostport(sent_by, text)
        return cls(transport.upper(), host, port, params, f"{name.upper()}/{version}")

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.hostport}{format_params(self.params)}"

    @property
    def hostport(self) -> str:
        """The sent-by as ``host[:port]`` with IPv6 addresses in brackets."""
        host = format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter without IPv6 brackets (RFC 5118 §4.5 allows either form)."""
        value = self.params.get("received")
        if value and value.startswith("[") and value.endswith("]"):
            return value[1:-1]
        return value

    @property
    def rport(self) -> int | None:
        """The ``rport`` value (RFC 3581) or None (absent, a bare flag, or not a number)."""
        value = self.params.get("rport")
        if value and value.isascii() and value.isdigit() and len(value) <= 5:
            return int(value)
        return None


@dataclass(slots=True)
class CSeq:
    """``CSeq: <seq> <METHOD>`` (RFC 3261 §20.16); ``seq`` is 0..2**32-1, the method a token."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2:
            raise SipParseError(f"bad CSeq {text!r}")
        num, method = parts
        if not (num.isascii() and num.isdigit()) or len(num) > 20:
            raise SipParseError(f"bad CSeq number in {text!r}")
        seq = int(num)
        if seq > _CSEQ_LIMIT:
            raise SipParseError(f"CSeq number out of range in {text!r}")
        if not (method.isalpha() and method.isascii()) and not is_token(method):
            raise SipParseError(f"bad CSeq method in {text!r}")
        return cls(seq, method)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
