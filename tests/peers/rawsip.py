"""A few hand-built SIP requests for probing peers (readiness, smoke tests).

Deliberately tiny and independent of the ``sip`` package under test: one request, one
final response, over UDP, TCP or TLS. Digest per RFC 2617 / RFC 7616 (MD5 or SHA-256, qop=auth).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import ssl
import time
from dataclasses import dataclass, field


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    raw: str = ""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def parse_response(text: str) -> Response:
    head = text.split("\r\n\r\n", 1)[0]
    lines = head.split("\r\n")
    m = re.match(r"SIP/2\.0 (\d{3}) ?(.*)", lines[0])
    if not m:
        raise ValueError(f"not a SIP response: {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return Response(int(m.group(1)), m.group(2), headers, text)


def _read_stream_message(sock: socket.socket | ssl.SSLSocket, buf: bytearray) -> str:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65535)
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    head, rest = bytes(buf).split(b"\r\n\r\n", 1)
    m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
    length = int(m.group(1)) if m else 0
    while len(rest) < length:
        chunk = sock.recv(65535)
        if not chunk:
            raise ConnectionError("connection closed")
        rest += chunk
    del buf[:]
    buf += rest[length:]
    return (head + b"\r\n\r\n" + rest[:length]).decode(errors="replace")


class SipClient:
    """One socket to one server; :meth:`request` sends and returns the final response."""

    def __init__(
        self,
        host: str,
        port: int,
        transport: str = "udp",
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = 3.0,
        bind_host: str = "127.0.0.1",
    ) -> None:
        self.host, self.port, self.transport, self.timeout = host, port, transport.lower(), timeout
        self._buf = bytearray()
        self.sock: socket.socket | ssl.SSLSocket
        if self.transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((bind_host, 0))
            self.sock.connect((host, port))
        else:
            raw = socket.create_connection((host, port), timeout=timeout)
            if self.transport == "tls":
                ctx = ssl_context or ssl.create_default_context()
                self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname or host)
            else:
                self.sock = raw
        self.sock.settimeout(timeout)
        self.local = self.sock.getsockname()[:2]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def via(self, branch: str) -> str:
        proto = self.transport.upper()
        return f"SIP/2.0/{proto} {self.local[0]}:{self.local[1]};rport;branch=z9hG4bK{branch}"

    def request(self, message: str) -> Response:
        """Send ``message`` (retransmitted every 0.5 s on UDP); return the first final response."""
        data = message.encode()
        deadline = time.monotonic() + self.timeout
        self.sock.sendall(data) if self.transport != "udp" else self.sock.send(data)
        next_resend = time.monotonic() + 0.5
        while True:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"no final response from {self.host}:{self.port}")
            if self.transport == "udp":
                self.sock.settimeout(max(0.01, min(next_resend, deadline) - now))
                try:
                    text = self.sock.recv(65535).decode(errors="replace")
                except TimeoutError:
                    if time.monotonic() >= next_resend:
                        self.sock.send(data)
                        next_resend = time.monotonic() + 0.5
                    continue
            else:
                text = _read_stream_message(self.sock, self._buf)
            if not text.startswith("SIP/2.0 "):
                continue  # a request from the server (e.g. OPTIONS ping): ignore
            resp = parse_response(text)
            if resp.status >= 200:
                return resp


def read_request(client: SipClient) -> str:
    """The next message the server sends on ``client``'s socket (e.g. a request to us)."""
    if client.transport == "udp":
        return client.sock.recv(65535).decode(errors="replace")
    return _read_stream_message(client.sock, client._buf)


def response_to(request: str, status: int, reason: str, to_tag: str | None = None) -> str:
    """A response to ``request`` (RFC 3261 8.2.6: Via, From, To (+tag), Call-ID, CSeq copied)."""
    head = request.replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")
    lines = [f"SIP/2.0 {status} {reason}"]
    for line in head[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq", "record-route"):
            lines.append(line)
        elif name in ("to", "t"):
            tag = "" if ";tag=" in line or status == 100 else f";tag={to_tag or new_token()}"
            lines.append(line + tag)
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines)


def send(client: SipClient, message: str) -> None:
    data = message.encode()
    if client.transport == "udp":
        client.sock.send(data)
    else:
        client.sock.sendall(data)


def new_token() -> str:
    return secrets.token_hex(8)


def build_request(
    client: SipClient,
    method: str,
    ruri: str,
    from_uri: str,
    to_uri: str,
    cseq: int = 1,
    call_id: str | None = None,
    extra: list[str] | None = None,
    body: str = "",
    from_tag: str | None = None,
) -> str:
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: {client.via(new_token())}",
        "Max-Forwards: 70",
        f"From: <{from_uri}>;tag={from_tag or new_token()}",
        f"To: <{to_uri}>",
        f"Call-ID: {call_id or new_token()}@test",
        f"CSeq: {cseq} {method}",
        *(extra or []),
        f"Content-Length: {len(body.encode())}",
        "",
        body,
    ]
    return "\r\n".join(lines)


def parse_challenge(value: str) -> dict[str, str]:
    """Parameters of a ``Digest ...`` challenge (WWW-/Proxy-Authenticate value)."""
    if not value.lower().startswith("digest"):
        raise ValueError(f"not a digest challenge: {value!r}")
    params = {}
    for m in re.finditer(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', value[6:]):
        params[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    return params


_HASHES = {"md5": hashlib.md5, "sha-256": hashlib.sha256}


def digest_authorization(
    challenge: dict[str, str],
    method: str,
    uri: str,
    user: str,
    password: str,
    cnonce: str | None = None,
) -> str:
    """The credentials (header value) answering ``challenge`` (RFC 7616 section 3.4)."""
    algorithm = challenge.get("algorithm", "MD5")
    hfun = _HASHES[algorithm.lower()]

    def h(s: str) -> str:
        return hfun(s.encode()).hexdigest()

    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = h(f"{user}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    parts = [
        f'username="{user}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        f"algorithm={algorithm}",
    ]
    if "auth" in qops:
        cnonce, nc = cnonce or new_token(), "00000001"
        response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        parts += [f'response="{response}"', "qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        parts.append(f'response="{h(f"{ha1}:{nonce}:{ha2}")}"')
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)


def register(
    client: SipClient,
    domain: str,
    user: str,
    password: str | None,
    expires: int = 60,
    auth_user: str | None = None,
) -> tuple[Response, Response | None]:
    """REGISTER ``user@domain``; answer one challenge if ``password`` is given.

    Returns (first response, response to the authenticated retry or None).
    """
    aor = f"sip:{user}@{domain}"
    ruri = f"sip:{domain}"
    call_id, tag = new_token(), new_token()
    transport = "" if client.transport == "udp" else f";transport={client.transport}"
    contact = [
        f"Contact: <sip:{user}@{client.local[0]}:{client.local[1]}{transport}>",
        f"Expires: {expires}",
    ]
    msg = build_request(client, "REGISTER", ruri, aor, aor, 1, call_id, contact, from_tag=tag)
    first = client.request(msg)
    if first.status not in (401, 407) or password is None:
        return first, None
    hname = "WWW-Authenticate" if first.status == 401 else "Proxy-Authenticate"
    cname = "Authorization" if first.status == 401 else "Proxy-Authorization"
    value = first.header(hname)
    if value is None:
        raise ValueError(f"{first.status} without {hname}")
    cred = digest_authorization(
        parse_challenge(value), "REGISTER", ruri, auth_user or user, password
    )
    msg = build_request(
        client, "REGISTER", ruri, aor, aor, 2, call_id, [*contact, f"{cname}: {cred}"], from_tag=tag
    )
    return first, client.request(msg)


def options(client: SipClient, target: str) -> Response:
    """An OPTIONS to ``target`` (a URI); the final response."""
    me = f"sip:probe@{client.local[0]}:{client.local[1]}"
    return client.request(build_request(client, "OPTIONS", target, me, target))
