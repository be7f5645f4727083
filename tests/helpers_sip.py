"""Helpers shared by the SIP tests: requests written out as they would be on the wire, the SDP
and SIPp scenario files of tests/data, and the SIP messages in ``softphone --trace`` output."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from sip.message import Request, parse_message


def wire_request(
    start_line: str,
    *,
    via: str,
    from_: str,
    to: str,
    call_id: str,
    cseq: str,
    extra: Iterable[str] = (),
) -> Request:
    """Parse a body-less request written header by header: Via, Max-Forwards: 70, From, To,
    Call-ID, CSeq, then the ``extra`` header lines (``"Name: value"``) and Content-Length: 0."""
    headers = {"Via": via, "Max-Forwards": "70", "From": from_, "To": to, "Call-ID": call_id}
    lines = [start_line, *(f"{name}: {value}" for name, value in headers.items()), f"CSeq: {cseq}"]
    lines += [*extra, "Content-Length: 0", "", ""]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message


SDP_SAMPLES = Path(__file__).parent / "data" / "sdp"


def sdp_sample(name: str) -> str:
    """The SDP test vector ``tests/data/sdp/NAME.sdp``, as written there (LF line ends)."""
    return (SDP_SAMPLES / f"{name}.sdp").read_text(encoding="ascii")


SIPP_SCENARIOS = Path(__file__).parent / "data" / "sipp"


def sipp_scenario(name: str) -> Path:
    """The SIPp scenario file ``tests/data/sipp/NAME.xml``."""
    return SIPP_SCENARIOS / f"{name}.xml"


_TRACE_HEADER = re.compile(r"^\S+ \S+ sip\.trace \w+ (send|recv) ")
_OTHER_LINE = re.compile(r"^(\d{4}-\d\d-\d\d |\[\s*[\d.]+s\]|\{)")


def traced_messages(stderr: str) -> list[tuple[str, str]]:
    """(direction ``send``/``recv``, text) of every SIP message in ``softphone --trace``
    output (logger ``sip.trace``); a log line, a progress line or the JSON report ends one."""
    messages: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in stderr.splitlines():
        header = _TRACE_HEADER.match(line)
        if header:
            current = []
            messages.append((header.group(1), current))
        elif _OTHER_LINE.match(line):
            current = None
        elif current is not None:
            current.append(line)
    return [(d, "\n".join(lines)) for d, lines in messages]


def traced_sdp(stderr: str, direction: str) -> str:
    """The SDP (from its ``v=0`` line) of the first SIP message in ``softphone --trace``
    output that went in ``direction`` (``send``/``recv``) with one."""
    for sent_or_received, text in traced_messages(stderr):
        if sent_or_received == direction and "\nv=0" in text:
            return text[text.index("\nv=0") + 1 :]
    raise AssertionError(f"no SDP ({direction}) in the trace")
