"""A hand-built STUN Binding request (RFC 8489) for probing STUN/TURN servers.

Independent of the ``ice`` package under test: 20-byte header, optional CHANGE-REQUEST
(RFC 5780 section 7.2), and a parser for the address attributes of the response.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
MAPPED_ADDRESS = 0x0001
CHANGE_REQUEST = 0x0003
XOR_MAPPED_ADDRESS = 0x0020
SOFTWARE = 0x8022
RESPONSE_ORIGIN = 0x802B
OTHER_ADDRESS = 0x802C


@dataclass
class BindingResponse:
    message_type: int
    transaction_id: bytes
    attributes: dict[int, bytes] = field(default_factory=dict)
    source: tuple[str, int] | None = None

    @property
    def is_success(self) -> bool:
        return self.message_type == BINDING_SUCCESS

    def address(self, attr: int) -> tuple[str, int] | None:
        """Decode an address attribute (XOR-decoded for XOR-MAPPED-ADDRESS), IPv4 only."""
        value = self.attributes.get(attr)
        if value is None or len(value) < 8 or value[1] != 0x01:
            return None
        port = struct.unpack("!H", value[2:4])[0]
        raw = value[4:8]
        if attr == XOR_MAPPED_ADDRESS:
            port ^= MAGIC_COOKIE >> 16
            raw = bytes(a ^ b for a, b in zip(raw, struct.pack("!I", MAGIC_COOKIE), strict=True))
        return socket.inet_ntoa(raw), port

    @property
    def xor_mapped(self) -> tuple[str, int] | None:
        return self.address(XOR_MAPPED_ADDRESS)

    @property
    def other_address(self) -> tuple[str, int] | None:
        return self.address(OTHER_ADDRESS)


def binding_request(
    transaction_id: bytes | None = None, change_ip: bool = False, change_port: bool = False
) -> tuple[bytes, bytes]:
    """(request bytes, transaction id)."""
    tid = transaction_id or os.urandom(12)
    body = b""
    if change_ip or change_port:
        flags = (4 if change_ip else 0) | (2 if change_port else 0)
        body = struct.pack("!HHI", CHANGE_REQUEST, 4, flags)
    return struct.pack("!HHI", BINDING_REQUEST, len(body), MAGIC_COOKIE) + tid + body, tid


def parse_response(data: bytes) -> BindingResponse:
    if len(data) < 20:
        raise ValueError("short STUN message")
    mtype, length, cookie = struct.unpack("!HHI", data[:8])
    if cookie != MAGIC_COOKIE or len(data) < 20 + length:
        raise ValueError("not a STUN message")
    resp = BindingResponse(mtype, data[8:20])
    pos = 20
    while pos + 4 <= 20 + length:
        atype, alen = struct.unpack("!HH", data[pos : pos + 4])
        resp.attributes.setdefault(atype, data[pos + 4 : pos + 4 + alen])
        pos += 4 + alen + (-alen % 4)
    return resp


def stun_binding(
    host: str,
    port: int,
    timeout: float = 2.0,
    change_ip: bool = False,
    change_port: bool = False,
    sock: socket.socket | None = None,
) -> BindingResponse:
    """Send a Binding request over UDP (retransmitted every 250 ms); return the response."""
    own = sock is None
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if own:
            s.bind(("0.0.0.0", 0))
        request, tid = binding_request(change_ip=change_ip, change_port=change_port)
        tries = max(1, int(timeout / 0.25))
        s.settimeout(0.25)
        for _ in range(tries):
            s.sendto(request, (host, port))
            try:
                while True:
                    data, src = s.recvfrom(2048)
                    try:
                        resp = parse_response(data)
                    except ValueError:
                        continue
                    if resp.transaction_id == tid:
                        resp.source = src
                        return resp
            except TimeoutError:
                continue
        raise TimeoutError(f"no STUN response from {host}:{port}")
    finally:
        if own:
            s.close()
