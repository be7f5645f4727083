"""Helpers shared by the SIP tests: requests written out as they would be on the wire, the SDP
and SIPp scenario files of tests/data."""

from __future__ import annotations

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
