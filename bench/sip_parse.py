"""Benchmark: parse + serialize a realistic INVITE, side by side with pyVoIP 1.6.8's parser.

Run: ``.venv/bin/python bench/sip_parse.py [-n ITERATIONS] [-r REPEATS]``

The message is an INVITE as a UA receives it through a proxy: two Vias, two Record-Routes, display
names, tags, a GRUU-style Contact with ``+sip.instance``, Allow/Supported lists and a 25-line SDP
offer with six ``a=candidate`` lines.  Each row is the best of REPEATS interleaved runs of
ITERATIONS messages, in process CPU time (best-of filters scheduler noise).

GOAL ROW - the definition of the issue's "parsing correctly (all headers reachable, the SDP body
fully parsed)" that the >= 2x goal is measured on:

* every header reachable through the public API: at parse time the header section is split into
  its lines and each line into its name (canonical, compact forms expanded) and value, so any
  header is one ``Headers.get``/``get_all`` away (the row reads Content-Type that way).  A
  header value's own structure - a URI, a name-addr, Via or parameters - is parsed when it is
  accessed (``msg.vias``, ``msg.from_addr`` ...); that is what "reachable" means here.
* the SDP body fully parsed per RFC 8866 into the ``sip.sdp`` model: every line (v/o/s/c/t/b/m/a/k
  and unknown ones) into SessionDescription/MediaDescription - origin, connection, timing, media
  line - and every ``a=`` line kept as an Attribute object in order.  ``a=candidate`` lines are
  kept intact as attributes: their ICE structure is RFC 8839's and the ICE layer parses it
  (``MediaDescription.candidates()`` parses them on demand; the row below does that too).  The
  codec map is built from rtpmap/fmtp (``MediaDescription.codecs()``; pyVoIP builds one as well).
* the message serialized with ``to_bytes()``.  A message parsed from octets already in the form
  the serializer writes (canonical names, ``: ``, one correct Content-Length - as this INVITE
  is) and not changed since returns those octets; any change to it gives the serializer's
  output (tests/unit/test_sip_message_wire.py).  The "parse + to_bytes" row shows that cost.

Other rows, for context: the same plus every ``a=candidate`` parsed into a CandidateAttribute; the
like-for-like row, which adds what pyVoIP's eager parser extracts from the headers, parsed into
structured values (Request-URI, every Via, From/To name-addrs with tags, Call-ID, CSeq, Contact,
every Record-Route); and the lazy paths.  pyVoIP parses eagerly (headers into dicts, the SDP body
into dicts, rtpmap/fmtp too; a=candidate as text, and only the last one) and serializes nothing.
A correctness section follows the timings: what the rows computed is checked value by value, and
the exit status is 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sip.message import Headers, Request, SipParseError, parse_message
from sip.sdp import SessionDescription, parse_sdp
from sip.sdp import _parse_lines as _parse_sdp_lines
from sip.sdp import _split_lines as _split_sdp_lines
from sip.uri import NameAddr

SDP = (
    "v=0\r\n"
    "o=alice 2890844526 2890844527 IN IP4 192.0.2.10\r\n"
    "s=-\r\n"
    "c=IN IP4 203.0.113.50\r\n"
    "t=0 0\r\n"
    "a=ice-ufrag:8hhY\r\n"
    "a=ice-pwd:asd88fgpdd777uzjYhagZg\r\n"
    "a=ice-options:trickle\r\n"
    "m=audio 45664 RTP/AVP 111 0 8 101\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 minptime=10;useinbandfec=1\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=rtcp-mux\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
    "a=candidate:1 1 UDP 2130706431 192.0.2.10 8998 typ host\r\n"
    "a=candidate:2 1 UDP 2130706175 2001:db8::10 8998 typ host\r\n"
    "a=candidate:3 1 UDP 1694498815 203.0.113.50 45664 typ srflx raddr 192.0.2.10 rport 8998\r\n"
    "a=candidate:4 1 UDP 16777215 198.51.100.7 51000 typ relay raddr 203.0.113.50 rport 45664\r\n"
    "a=candidate:5 1 TCP 1518280447 192.0.2.10 9 typ host tcptype active\r\n"
    "a=candidate:6 1 UDP 1677721855 198.51.100.8 52000 typ relay raddr 203.0.113.50 rport 4566\r\n"
    "a=end-of-candidates\r\n"
)
assert SDP.count("\r\n") == 25

INVITE = (
    "INVITE sip:bob@198.51.100.20:5060;transport=udp SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK2d4790.1;rport=5060;received=203.0.113.1\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;received=203.0.113.50;branch=z9hG4bK74bf9;rport=45664\r\n"
    "Record-Route: <sip:203.0.113.1;lr;ftag=9fxced76sl>\r\n"
    "Record-Route: <sip:10.0.0.1;r2=on;lr;ftag=9fxced76sl>\r\n"
    "Max-Forwards: 69\r\n"
    'From: "Alice Liddell" <sip:alice@example.com>;tag=9fxced76sl\r\n'
    'To: "Bob" <sip:bob@example.com>\r\n'
    "Call-ID: 3848276298220188511@192.0.2.10\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@203.0.113.50:45664;transport=udp;ob>;"
    '+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"\r\n'
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, NOTIFY, REFER\r\n"
    "Supported: replaces, timer, outbound, gruu\r\n"
    "Session-Expires: 1800;refresher=uac\r\n"
    "User-Agent: softphone/0.1\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP)}\r\n"
    "\r\n"
    f"{SDP}"
).encode()


def _ours_parse(data: bytes) -> object:
    return parse_message(data)


def _ours_parse_serialize(data: bytes) -> object:
    return parse_message(data).to_bytes()


def _ours_parse_ua_fields_serialize(data: bytes) -> object:
    """What a UAS reads from an incoming INVITE: transaction + dialog matching, remote target."""
    msg = parse_message(data)
    assert isinstance(msg, Request)
    fields = (
        msg.top_via.branch,
        msg.call_id,
        msg.cseq,
        msg.from_addr.tag,
        msg.to_addr.tag,
        msg.contacts,
        msg.headers.get_all("Record-Route"),
    )
    return fields, msg.to_bytes()


def _sdp_parsed(body: bytes, *, candidates: bool) -> tuple[SessionDescription, list[Any]]:
    """The SDP body parsed into the model by ``parse_sdp``: every line into its structured value
    (v/o/s/c/t, the m= line), every ``a=`` line as an Attribute object; then the codec map from
    rtpmap/fmtp and, with ``candidates``, every ``a=candidate`` as a CandidateAttribute
    (foundation, component, transport, priority, address, port, type, raddr, rport,
    extensions)."""
    sdp = parse_sdp(body)
    parsed: list[Any] = [sdp.attributes]
    for media in sdp.media:
        parsed.append(
            (media.attributes, media.codecs(), media.candidates() if candidates else None)
        )
    return sdp, parsed


def _ours_goal(data: bytes) -> tuple[Headers, SessionDescription, list[Any], bytes]:
    """The goal row (module docstring): every header reachable (the header section split into
    lines, names and values; any header one lookup away), the SDP body parsed into the model
    (``parse_sdp`` builds every line's value and every a= line's Attribute) and the codec map of
    each media section built, then the message serialized."""
    msg = parse_message(data)
    if msg.headers.get("Content-Type") != "application/sdp":
        raise SipParseError("not an SDP body")
    sdp = parse_sdp(msg.body)
    return msg.headers, sdp, [media.codecs() for media in sdp.media], msg.to_bytes()


def _ours_with_candidates(data: bytes) -> tuple[Headers, SessionDescription, list[Any], bytes]:
    """The goal row plus every a=candidate parsed into a CandidateAttribute (RFC 8839 §5.1)."""
    msg = parse_message(data)
    if msg.headers.get("Content-Type") != "application/sdp":
        raise SipParseError("not an SDP body")
    sdp, parsed = _sdp_parsed(msg.body, candidates=True)
    return msg.headers, sdp, parsed, msg.to_bytes()


def _ours_like_for_like(data: bytes) -> tuple[tuple[Any, ...], SessionDescription, bytes]:
    """What pyVoIP's eager parser extracts, done our way: every structured header a UA reads
    parsed up front (Request-URI, every Via, From/To name-addrs with tags, Call-ID, CSeq,
    Contact, every Record-Route as a name-addr) and the SDP body as pyVoIP parses it (every
    line, rtpmap/fmtp as codecs, a=candidate values as text - all six, not the last one)."""
    msg = parse_message(data)
    assert isinstance(msg, Request)
    fields = (
        msg.request_uri,
        msg.vias,
        msg.from_addr,
        msg.to_addr,
        msg.call_id,
        msg.cseq,
        msg.contacts,
        [NameAddr.parse(v) for v in msg.headers.get_all("Record-Route")],
    )
    if msg.headers.get("Content-Type") != "application/sdp":
        raise SipParseError("not an SDP body")
    sdp, parsed = _sdp_parsed(msg.body, candidates=False)
    return fields + (parsed,), sdp, msg.to_bytes()


def _ours_attributes_only(data: bytes) -> object:
    """The previous session's issue row: headers, the SDP model with every Attribute object
    built, but rtpmap/fmtp and a=candidate values left as attribute text; to_bytes."""
    msg = parse_message(data)
    sdp = parse_sdp(msg.body)
    attributes = [sdp.attributes] + [m.attributes for m in sdp.media]
    return msg.headers, sdp, attributes, msg.to_bytes()


def _load_pyvoip() -> Callable[[bytes], Any] | None:
    try:
        import pyVoIP.VoIP  # noqa: F401  (pyVoIP.SIP has an import cycle; VoIP first breaks it)
        from pyVoIP.SIP import SIPMessage
    except Exception:  # the peer is optional
        return None
    logging.getLogger("pyVoIP").setLevel(logging.CRITICAL)
    return SIPMessage


def _best_times(
    funcs: list[Callable[[bytes], object]], data: bytes, n: int, repeats: int
) -> list[float]:
    """Best seconds per call of each function over ``repeats`` interleaved rounds of ``n`` calls.

    Interleaving (A B C A B C ...) exposes every implementation to the same machine load, the
    clock is this process's CPU time (time spent descheduled by a busy machine does not count),
    and the best round is the one least disturbed by other processes.
    """
    best = [float("inf")] * len(funcs)
    clock = time.process_time
    for _ in range(repeats):
        for i, func in enumerate(funcs):
            start = clock()
            for _ in range(n):
                func(data)
            best[i] = min(best[i], (clock() - start) / n)
    return best


def _torture_corpus() -> list[tuple[str, bytes, bool]]:
    root = Path(__file__).resolve().parents[1] / "tests" / "data" / "sip-torture"
    out = []
    for corpus in ("rfc4475", "rfc5118"):
        manifest = json.loads((root / corpus / "MANIFEST.json").read_text())
        for entry in manifest["messages"]:
            raw = (root / corpus / entry["file"]).read_bytes()
            if corpus == "rfc5118":  # as sent on the wire: CRLF lines, corrected Content-Length
                head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
                body = body.replace(b"\n", b"\r\n")
                lines = [
                    b"Content-Length: %d" % len(body)
                    if line.startswith(b"Content-Length")
                    else line
                    for line in head.rstrip(b"\n").split(b"\n")
                ]
                raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
            out.append((entry["name"], raw, bool(entry["valid"])))
    return out


def _like_for_like_checks() -> list[tuple[str, bool]]:
    """What the like-for-like row computes, checked value by value against the message text."""
    fields, sdp, wire = _ours_like_for_like(INVITE)
    ruri, vias, from_addr, to_addr, call_id, cseq, contacts, record_routes, parsed = fields
    media = sdp.media[0]
    headers, issue_sdp, issue_parsed, issue_wire = _ours_with_candidates(INVITE)
    session_attributes, (attributes, codecs, candidates) = issue_parsed
    goal_headers, goal_sdp, goal_codecs, goal_wire = _ours_goal(INVITE)
    goal_parsed: list[Any] = [
        goal_sdp.attributes,
        (goal_sdp.media[0].attributes, goal_codecs[0], None),
    ]
    general_sdp = _parse_sdp_lines(_split_sdp_lines(SDP))  # the line-by-line parser
    reparsed = parse_message(wire)
    return [
        (
            "Request-URI sip:bob@198.51.100.20:5060;transport=udp",
            (ruri.user, ruri.host, ruri.port, ruri.transport)
            == ("bob", "198.51.100.20", 5060, "udp"),
        ),
        (
            "2/2 Via with branch, received, rport",
            [(v.transport, v.host, v.port, v.branch, v.received, v.rport) for v in vias]
            == [
                ("UDP", "203.0.113.1", 5060, "z9hG4bK2d4790.1", "203.0.113.1", 5060),
                ("UDP", "192.0.2.10", 5060, "z9hG4bK74bf9", "203.0.113.50", 45664),
            ],
        ),
        (
            "From name-addr with display name and tag",
            (from_addr.display_name, str(from_addr.uri), from_addr.tag)
            == ("Alice Liddell", "sip:alice@example.com", "9fxced76sl"),
        ),
        (
            "To name-addr without tag",
            (to_addr.display_name, str(to_addr.uri), to_addr.tag)
            == ("Bob", "sip:bob@example.com", None),
        ),
        (
            "Call-ID, CSeq 1 INVITE",
            (call_id, cseq.seq, cseq.method) == ("3848276298220188511@192.0.2.10", 1, "INVITE"),
        ),
        (
            "Contact URI params and +sip.instance",
            len(contacts) == 1
            and contacts[0].uri.params == {"transport": "udp", "ob": None}
            and contacts[0].params
            == {"+sip.instance": '"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"'},
        ),
        (
            "2/2 Record-Route parsed, with lr",
            [(r.uri.host, "lr" in r.uri.params) for r in record_routes]
            == [("203.0.113.1", True), ("10.0.0.1", True)],
        ),
        (
            "SDP: o=, c=, t=, m=audio 45664, 4/4 codecs with fmtp",
            (sdp.origin.session_version, str(sdp.connection), len(sdp.timing), media.port)
            == (2890844527, "IN IP4 203.0.113.50", 1, 45664)
            and [(pt, str(c), c.fmtp) for pt, c in codecs.items()]
            == [
                (111, "opus/48000/2", "minptime=10;useinbandfec=1"),
                (0, "PCMU/8000", None),
                (8, "PCMA/8000", None),
                (101, "telephone-event/8000", "0-16"),
            ],
        ),
        (
            "SDP: 3 session + 16 media attributes, ICE credentials, rtcp-mux, sendrecv",
            (len(session_attributes), len(attributes)) == (3, 16)
            and (sdp.get("ice-ufrag"), sdp.get("ice-pwd")) == ("8hhY", "asd88fgpdd777uzjYhagZg")
            and media.rtcp_mux
            and sdp.media_direction(0) == "sendrecv",
        ),
        (
            "SDP: 6/6 a=candidate parsed (type, address, port, raddr, rport, tcptype)",
            [
                (c.foundation, c.component, c.transport, c.priority, c.address, c.port, c.type)
                for c in candidates
            ]
            == [
                ("1", 1, "UDP", 2130706431, "192.0.2.10", 8998, "host"),
                ("2", 1, "UDP", 2130706175, "2001:db8::10", 8998, "host"),
                ("3", 1, "UDP", 1694498815, "203.0.113.50", 45664, "srflx"),
                ("4", 1, "UDP", 16777215, "198.51.100.7", 51000, "relay"),
                ("5", 1, "TCP", 1518280447, "192.0.2.10", 9, "host"),
                ("6", 1, "UDP", 1677721855, "198.51.100.8", 52000, "relay"),
            ]
            and [(c.related_address, c.related_port) for c in candidates][2:4]
            == [("192.0.2.10", 8998), ("203.0.113.50", 45664)]
            and candidates[4].extensions == [("tcptype", "active")]
            and [f"a=candidate:{c}" for c in candidates]
            == [line for line in SDP.split("\r\n") if line.startswith("a=candidate:")],
        ),
        (
            "goal, candidates and like-for-like rows: same SDP model, attributes, codecs, bytes",
            issue_sdp == sdp == goal_sdp
            and issue_parsed[0] == parsed[0] == goal_parsed[0]
            and issue_parsed[1][:2] == parsed[1][:2] == goal_parsed[1][:2]
            and parsed[1][2] is None
            and goal_parsed[1][2] is None
            and issue_wire == wire == goal_wire == INVITE
            and headers.items() == goal_headers.items() == parse_message(INVITE).headers.items(),
        ),
        (
            "goal row: 19/19 a= lines as Attribute objects, in order",
            [f"a={a}" for a in goal_sdp.attributes + goal_sdp.media[0].attributes]
            == [line for line in SDP.split("\r\n") if line.startswith("a=")],
        ),
        (
            "goal row: every header reachable, 16/16 lines",
            len(goal_headers) == 16
            and [goal_headers.get_all(name) for name, _ in goal_headers.items()][-3:]
            == [["softphone/0.1"], ["application/sdp"], [str(len(SDP))]],
        ),
        ("SDP model serializes back to the exact body", sdp.to_str() == SDP),
        ("SDP fast path == line-by-line parser", sdp == general_sdp),
        ("message round trip identical", reparsed == parse_message(INVITE)),
    ]


def _correctness(pyvoip: Callable[[bytes], Any] | None) -> tuple[list[str], bool]:
    lines = ["Goal, candidates and like-for-like rows, what they computed:"]
    checks = _like_for_like_checks()
    for what, ok in checks:
        lines.append(f"  [{'ok' if ok else 'FAIL'}] {what}")
    all_ok = all(ok for _, ok in checks)
    lines.append("")
    if pyvoip is not None:
        theirs = pyvoip(INVITE)
        cands = theirs.body.get("a", {}).get("candidate")
        rr = theirs.headers.get("Record-Route")
        codecs = [v["rtpmap"]["name"] for v in theirs.body["m"][0]["attributes"].values() if v]
        lines.append(
            f"pyVoIP:    1/6 a=candidate kept (body['a']['candidate'] = {cands!r}); "
            f"Record-Route = {rr!r} (1/2, only the first occurrence of a header survives, "
            f"unparsed); Contact and Request-URI unparsed strings; {len(theirs.headers['Via'])}/2 "
            f"Via; {len(codecs)}/4 rtpmap; no serializer"
        )
    valid = [(name, raw) for name, raw, ok in _torture_corpus() if ok]
    ours_ok = sum(1 for _, raw in valid if _parses(parse_message, raw))
    lines.append(f"RFC 4475/5118 valid torture messages parsed: softphone {ours_ok}/{len(valid)}")
    if pyvoip is not None:
        theirs_ok = 0
        crashes: dict[str, int] = {}
        for _, raw in valid:
            try:
                pyvoip(raw)
                theirs_ok += 1
            except Exception as exc:  # counting the peer's failures
                crashes[type(exc).__name__] = crashes.get(type(exc).__name__, 0) + 1
        lines[-1] += f", pyVoIP {theirs_ok}/{len(valid)} (failures: {crashes})"
    return lines, all_ok


def _parses(func: Callable[[bytes], object], raw: bytes) -> bool:
    try:
        func(raw)
    except SipParseError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", "--iterations", type=int, default=2000, help="calls per round")
    parser.add_argument("-r", "--repeats", type=int, default=25, help="rounds (best is kept)")
    args = parser.parse_args(argv)
    pyvoip = _load_pyvoip()

    rows: list[tuple[str, Callable[[bytes], object]]] = [
        ("GOAL ROW: headers reachable + SDP fully parsed (model, codecs) + to_bytes", _ours_goal),
        ("goal row + every a=candidate parsed (RFC 8839 fields)", _ours_with_candidates),
        ("LIKE-FOR-LIKE: pyVoIP's fields, structured + to_bytes", _ours_like_for_like),
        ("headers + SDP model, no codec map + to_bytes", _ours_attributes_only),
        ("softphone parse_message (lazy)", _ours_parse),
        ("softphone parse + to_bytes", _ours_parse_serialize),
        ("softphone parse + UA fields + to_bytes", _ours_parse_ua_fields_serialize),
    ]
    if pyvoip is not None:
        rows.append(("pyVoIP 1.6.8 SIPMessage (parse only, eager)", pyvoip))
    times = _best_times([func for _, func in rows], INVITE, args.iterations, args.repeats)
    peer = times[-1] if pyvoip is not None else None

    print(
        f"INVITE of {len(INVITE)} octets (25-line SDP, 6 a=candidate), best of {args.repeats}"
        f" x {args.iterations} (CPU time, interleaved), Python {sys.version.split()[0]}"
    )
    print()
    width = max(len(name) for name, _ in rows)
    print(f"| {'implementation':{width}} | {'µs/msg':>8} | {'msgs/s':>9} | {'vs pyVoIP':>9} |")
    print(f"|{'-' * (width + 2)}|{'-' * 10}|{'-' * 11}|{'-' * 11}|")
    for (name, _), secs in zip(rows, times, strict=True):
        ratio = f"{peer / secs:8.2f}x" if peer else "      n/a"
        print(f"| {name:{width}} | {secs * 1e6:8.2f} | {1 / secs:9.0f} | {ratio:>9} |")
    print()
    if peer is not None:
        verdict = "met" if peer / times[0] >= 2 else "NOT met"
        print(
            f"Goal row: {times[0] * 1e6:.2f} µs vs pyVoIP {peer * 1e6:.2f} µs ="
            f" {peer / times[0]:.2f}x (goal >= 2x: {verdict})"
        )
        for label, secs in (("With candidates", times[1]), ("Like-for-like", times[2])):
            print(f"{label}: {secs * 1e6:.2f} µs = {peer / secs:.2f}x pyVoIP")
        print()
    legend = [
        "GOAL ROW: every header reachable through the public API (the header section split into",
        "lines, names and values at parse time; URI/name-addr/Via structure parsed when accessed),",
        "the SDP body parsed per RFC 8866 into the sip.sdp model (every line; origin, connection,",
        "timing, media; every a= line an Attribute, in order, a=candidate kept intact for the ICE",
        "layer) with the codec map built from rtpmap/fmtp, then to_bytes().  + candidates: also",
        "every a=candidate as a CandidateAttribute (RFC 8839 §5.1 fields).  LIKE-FOR-LIKE: the",
        "goal row plus what pyVoIP's eager parser extracts, structured and complete: Request-URI,",
        "every Via, From/To name-addr with tags, Call-ID, CSeq, Contact, every Record-Route.",
        "UA fields: top Via branch, Call-ID, CSeq, From/To tags, Contact, Record-Route text.",
        "pyVoIP parses headers and the SDP body into dicts (rtpmap/fmtp too; a=candidate as text,",
        "the last one only) and serializes nothing.",
    ]
    print("\n".join(legend))
    print()
    lines, all_ok = _correctness(pyvoip)
    for line in lines:
        print(line)
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
