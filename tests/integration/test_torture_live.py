"""RFC 4475 / RFC 5118 torture messages sent over UDP to our live asyncio UAS.

Each message of tests/data/sip-torture/*/MANIFEST.json goes, as a datagram, to an
:class:`AsyncUserAgent` listening on 127.0.0.1; its answer must be what the manifest says (a
status code, a class, anything but some codes, or silence). The torture messages' Via headers
name hosts and ports that are not ours, so the responses are observed where the UA hands them
to its transport (and still sent per RFC 3261 §18.2.2 / RFC 3581). Afterwards the UA must still
answer an OPTIONS over the real socket.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from sip.aio import AsyncUserAgent
from sip.message import Response, new_branch, parse_message
from sip.ua import UAConfig

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data" / "sip-torture"
RESPOND_WAIT = 2.0  # seconds to wait for a response that must come
SILENCE_WAIT = 0.3  # seconds to watch for a response that may not come


def _load() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for corpus in ("rfc4475", "rfc5118"):
        manifest = json.loads((DATA / corpus / "MANIFEST.json").read_text())
        for m in manifest["messages"]:
            cases.append((corpus, m))
    return cases


CASES = _load()


def wire_bytes(corpus: str, message: dict[str, Any]) -> bytes:
    data = (DATA / corpus / message["file"]).read_bytes()
    wire = message.get("wire", "as-is")
    if wire == "append-crlf":
        return data + b"\r\n"
    if wire == "rfc5118":
        # every line ended with CRLF, the header section closed, Content-Length = body length
        text = data.replace(b"\r\n", b"\n")
        head, sep, body = text.partition(b"\n\n")
        head = head.rstrip(b"\n")
        body = body.replace(b"\n", b"\r\n") if sep else b""
        lines = head.split(b"\n")
        cl = re.compile(rb"^(content-length|l)\s*:", re.IGNORECASE)
        lines = [b"Content-Length: %d" % len(body) if cl.match(ln) else ln for ln in lines]
        if not any(cl.match(ln) for ln in head.split(b"\n")):
            lines.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + body
    return data


def matches(status: int, pattern: str) -> bool:
    if pattern == "any":
        return True
    if pattern.endswith("xx"):
        return str(status)[0] == pattern[0]
    return str(status) == pattern


def check(message: dict[str, Any], responses: list[Response]) -> None:
    expect = message["expect"]
    name = message["name"]
    finals = [r for r in responses if r.status >= 200]
    statuses = [r.status for r in responses]
    for cid in expect.get("no_reply_call_id", []):
        assert not [r for r in responses if r.headers.get("Call-ID") == cid], name
    if not responses:
        assert not expect["respond"], f"{name}: no response, expected {expect['ok']}"
        return
    ok = expect["ok"]
    assert ok, f"{name}: must be silent, got {statuses}"
    decisive = finals or responses
    for r in decisive:
        assert any(matches(r.status, p) for p in ok), f"{name}: {r.status} not in {ok}"
        assert str(r.status) not in expect.get("not", []), f"{name}: {r.status} forbidden"
    for tag in expect.get("unsupported", []):
        unsupported = ",".join(h for r in finals for h in r.headers.get_all("Unsupported"))
        assert tag in unsupported, f"{name}: Unsupported lacks {tag}"


class Spy:
    """Records the responses the UA hands to its transport."""

    def __init__(self, ua: AsyncUserAgent, monkeypatch: Any) -> None:
        assert ua.transport is not None
        self.responses: list[Response] = []
        original = ua.transport.send_response

        async def spy(response: Response, source: Any = None) -> Any:
            self.responses.append(response)
            try:
                return await original(response, source)
            except OSError:
                return None  # e.g. a TCP Via pointing at nobody

        monkeypatch.setattr(ua.transport, "send_response", spy)


async def start_uas() -> AsyncUserAgent:
    ua = AsyncUserAgent(UAConfig(user="uas", domain="127.0.0.1", local_port=0))
    await ua.start("127.0.0.1", 0, transports=("UDP",))
    return ua


async def send_and_collect(
    ua: AsyncUserAgent, spy: Spy, sock: socket.socket, data: bytes, message: dict[str, Any]
) -> list[Response]:
    start = len(spy.responses)
    sock.sendto(data, ("127.0.0.1", ua.config.local_port))
    wait = RESPOND_WAIT if message["expect"]["respond"] else SILENCE_WAIT
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while loop.time() < deadline:
        await asyncio.sleep(0.02)
        got = spy.responses[start:]
        if any(r.status >= 200 for r in got) or (got and message["expect"]["ok"] == ["any"]):
            await asyncio.sleep(0.05)  # let stragglers of the same message arrive
            break
    # Only responses to this message (an earlier INVITE's final response may be retransmitted
    # meanwhile, Timer G, since nobody ACKs it).
    mine = []
    for r in spy.responses[start:]:
        cid = r.headers.get("Call-ID")
        if cid is None or cid.encode("utf-8", "surrogateescape") in data:
            mine.append(r)
    return mine


async def options_answered(ua: AsyncUserAgent) -> bool:
    """Real-socket check: an OPTIONS from a fresh socket gets a 200 back on that socket."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        port = s.getsockname()[1]
        req = (
            f"OPTIONS sip:uas@127.0.0.1:{ua.config.local_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch={new_branch()}\r\n"
            "From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:uas@127.0.0.1>\r\n"
            "Call-ID: alive-probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        s.sendto(req, ("127.0.0.1", ua.config.local_port))
        data = await asyncio.wait_for(loop.sock_recv(s, 65535), 3)
    resp = parse_message(data)
    return isinstance(resp, Response) and resp.status == 200


@pytest.mark.parametrize(("corpus", "message"), CASES, ids=[f"{c}-{m['name']}" for c, m in CASES])
async def test_torture_message(corpus, message, monkeypatch):
    ua = await start_uas()
    spy = Spy(ua, monkeypatch)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            responses = await send_and_collect(ua, spy, sock, wire_bytes(corpus, message), message)
        check(message, responses)
        assert await options_answered(ua)
    finally:
        await ua.close(timeout=1)


async def test_all_torture_messages_in_a_row_then_alive(monkeypatch):
    ua = await start_uas()
    spy = Spy(ua, monkeypatch)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            for corpus, message in CASES:
                sock.sendto(wire_bytes(corpus, message), ("127.0.0.1", ua.config.local_port))
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.5)
        assert spy.responses  # it answered the ones that need answers
        assert await options_answered(ua)
    finally:
        await ua.close(timeout=1)
