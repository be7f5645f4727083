"""The SIP transport layer over UDP, TCP and TLS (RFC 3261 §18, RFC 3581, RFC 5626 keepalives).

:class:`TransportLayer` is the thin asyncio shell that owns the sockets:

* one UDP socket per local address, used both to listen and to send (symmetric signalling,
  RFC 3581 §1), so NATs see one flow;
* TCP and TLS listeners and outgoing connections, reused by remote address and transport, including
  connections the peer opened (RFC 3261 §18); stream framing by Content-Length
  (:class:`sip.message.StreamFramer`); bad framing or an oversized message closes the connection;
* TLS through the stdlib :mod:`ssl`, certificates verified by default (:class:`TlsConfig`);
* client side: the top Via's sent-by is filled with the local address and ``;rport`` is added
  (RFC 3261 §18.1.1, RFC 3581 §3); server side: ``;received=`` and ``;rport=`` are set on the top
  Via of incoming requests (RFC 3261 §18.2.1, RFC 3581 §4); responses are routed per
  RFC 3261 §18.2.2 and RFC 3581 §4 (back over the connection, or to received:rport from the
  socket the request arrived on);
* keepalives (RFC 5626 §4.4.1): CRLFCRLF pings with CRLF pongs on streams (a missing pong fails the
  flow); on UDP toward the proxy either CRLFCRLF (the widespread variant: keeps the NAT binding,
  no answer, so no failure detection) or, with ``stun=True``, RFC 5626 §4.4.2 STUN Binding
  requests (RFC 5389) whose responses are the pongs: none within the pong timeout (the request
  is retransmitted meanwhile), or a changed XOR-MAPPED-ADDRESS (the NAT rebound us), fails the
  flow; pings from peers answered; junk keepalives (CRLFs, four zero bytes as Kamailio's
  nathelper sends, STUN requests) are dropped silently.

Every message and keepalive on the wire is logged at DEBUG on the ``sip.trace`` logger.
The keepalive timing itself is a sans-I/O object (:class:`KeepaliveSchedule`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import ipaddress
import itertools
import logging
import random
import secrets
import socket
import ssl
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from sip.headers import Via
from sip.locate import DEFAULT_PORTS, Target, is_ip_address
from sip.message import (
    Keepalive,
    Request,
    Response,
    SipParseError,
    StreamFramer,
    new_branch,
    parse_message,
)

__all__ = [
    "PONG_TIMEOUT",
    "UDP_SIZE_NOTE",
    "Incoming",
    "KeepaliveAction",
    "KeepaliveHandle",
    "KeepaliveSchedule",
    "Source",
    "TlsConfig",
    "TransportLayer",
    "is_keepalive_datagram",
    "normalize_ip",
]

logger = logging.getLogger("sip.transport")
trace_logger = logging.getLogger("sip.trace")

Message = Request | Response
Address = tuple[str, int]

#: Above this, a UDP datagram is likely fragmented by IP (RFC 3261 §18.1.1 talks of MTU - 200).
UDP_SIZE_NOTE = 1300
#: RFC 5626 §4.4.1: a pong must arrive within 10 s of the ping.
PONG_TIMEOUT = 10.0
DEFAULT_UDP_KEEPALIVE = 25.0
DEFAULT_STREAM_KEEPALIVE = 90.0

PING = b"\r\n\r\n"
PONG = b"\r\n"
_STUN_COOKIE = b"\x21\x12\xa4\x42"
_STUN_MAGIC = 0x2112A442
STREAM_TRANSPORTS = ("TCP", "TLS")


def normalize_ip(ip: str) -> str:
    """Canonical text of an IP address (compressed IPv6, no brackets, no zone)."""
    text = ip.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text


# --------------------------------------------------------------------------------------------
# STUN keepalives (RFC 5626 §4.4.2; the minimal RFC 5389 Binding exchange they need)

_STUN_BINDING_REQUEST = 0x0001
_STUN_BINDING_SUCCESS = 0x0101
_STUN_MAPPED_ADDRESS = 0x0001
_STUN_XOR_MAPPED_ADDRESS = 0x0020
#: RFC 5389 §7.2.1: first retransmission of a Binding request over UDP (then doubling)
STUN_RTO = 0.5


def stun_binding_request(transaction_id: bytes) -> bytes:
    """A STUN Binding request without attributes (RFC 5389 §6; RFC 5626 §4.4.2)."""
    if len(transaction_id) != 12:
        raise ValueError("a STUN transaction id has 12 bytes")
    return struct.pack("!HHI", _STUN_BINDING_REQUEST, 0, _STUN_MAGIC) + transaction_id


def parse_stun_binding_response(data: bytes) -> tuple[bytes, Address | None] | None:
    """(transaction id, mapped address) of a STUN Binding success response, or None for
    anything else (never raises). XOR-MAPPED-ADDRESS is preferred to MAPPED-ADDRESS."""
    if len(data) < 20 or data[4:8] != _STUN_COOKIE:
        return None
    msg_type, length = struct.unpack_from("!HH", data, 0)
    if msg_type != _STUN_BINDING_SUCCESS or length % 4 or 20 + length > len(data):
        return None
    tid = data[8:20]
    mapped: Address | None = None
    offset, end = 20, 20 + length
    while offset + 4 <= end:
        attr, size = struct.unpack_from("!HH", data, offset)
        value = data[offset + 4 : offset + 4 + size]
        offset += 4 + size + (-size % 4)
        if len(value) < size or attr not in (_STUN_XOR_MAPPED_ADDRESS, _STUN_MAPPED_ADDRESS):
            continue
        address = _stun_address(value, tid, xor=attr == _STUN_XOR_MAPPED_ADDRESS)
        if address is not None and (mapped is None or attr == _STUN_XOR_MAPPED_ADDRESS):
            mapped = address
    return tid, mapped


def _stun_address(value: bytes, tid: bytes, *, xor: bool) -> Address | None:
    """RFC 5389 §15.1/§15.2 address attribute value."""
    if len(value) < 8 or value[1] not in (1, 2):
        return None
    size = 4 if value[1] == 1 else 16
    if len(value) < 4 + size:
        return None
    port = struct.unpack_from("!H", value, 2)[0]
    raw = value[4 : 4 + size]
    if xor:
        port ^= _STUN_MAGIC >> 16
        key = _STUN_COOKIE + tid
        raw = bytes(b ^ k for b, k in zip(raw, key, strict=False))
    return normalize_ip(str(ipaddress.ip_address(raw))), port


def is_keepalive_datagram(data: bytes) -> bool:
    """True for datagrams that are keepalives or junk rather than SIP (dropped silently).

    CRLF / CRLFCRLF (RFC 5626 §3.5.1), four zero bytes (Kamailio nathelper), anything too short
    to be a SIP message once whitespace and NULs are removed, and STUN messages (RFC 5389 magic
    cookie) that reach the SIP port.
    """
    if len(data.strip(b"\r\n\t \x00")) < 8:
        return True
    return len(data) >= 20 and data[0] < 0x04 and data[4:8] == _STUN_COOKIE


# --------------------------------------------------------------------------------------------
# Values handed to the UA


@dataclass(frozen=True)
class Source:
    """A flow: where a message came from, or which flow a message was sent on.

    ``connection_id`` identifies the TCP/TLS connection (None for UDP); pass the Source of a
    request to :meth:`TransportLayer.send_response` to answer on the same flow.
    """

    transport: str
    remote: Address
    local: Address
    connection_id: int | None = None


@dataclass(frozen=True)
class Incoming:
    message: Request | Response
    source: Source


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings. Verification is on unless ``verify=False`` is given explicitly.

    ``cafile``: trusted CAs (PEM) instead of the system store; ``certfile``/``keyfile``: our
    certificate (required to listen for TLS; also offered as a client certificate);
    ``server_hostname``: overrides the name used for SNI and certificate checks (otherwise the
    target's SIP domain, RFC 5922 §4.1).
    """

    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify: bool = True
    server_hostname: str | None = None

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.certfile:
            ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx

    def server_context(self) -> ssl.SSLContext:
        if not self.certfile:
            raise ValueError("a TLS listener needs TlsConfig.certfile")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.cafile)
        ctx.verify_mode = ssl.CERT_NONE  # client certificates are not required
        ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx


# --------------------------------------------------------------------------------------------
# Keepalive timing (sans-I/O)


class KeepaliveAction(enum.Enum):
    SEND_PING = "send-ping"
    RESEND_PING = "resend-ping"  # the same ping again (a STUN request retransmission)
    FLOW_FAILED = "flow-failed"


class KeepaliveSchedule:
    """When to send a keepalive on a flow and when the flow has failed (RFC 5626 §4.4.1).

    Pings go out every ``interval`` seconds, each wait drawn between 80% and 100% of it. With a
    ``pong_timeout`` (streams, STUN over UDP), a ping not answered by a pong within that time
    fails the flow; without (UDP CRLF keepalives have no answer) the flow never fails here.
    With ``retransmit`` (STUN over UDP, RFC 5389 §7.2.1) an unanswered ping is sent again after
    ``retransmit``, then after twice that, ... until the pong timeout.
    """

    def __init__(
        self,
        interval: float,
        now: float,
        *,
        pong_timeout: float | None = None,
        retransmit: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("keepalive interval must be positive")
        self.interval = interval
        self.pong_timeout = pong_timeout
        self.retransmit = retransmit
        self._rng = rng or random.Random()
        self._next_ping = now + self._wait()
        self._pong_deadline: float | None = None
        self._resend_at: float | None = None
        self._rto = retransmit or 0.0
        self.failed = False

    def _wait(self) -> float:
        return self.interval * self._rng.uniform(0.8, 1.0)

    def get_timer(self) -> float | None:
        if self.failed:
            return None
        times = [self._next_ping]
        if self._pong_deadline is not None:
            times.append(self._pong_deadline)
        if self._resend_at is not None:
            times.append(self._resend_at)
        return min(times)

    def handle_timer(self, now: float) -> KeepaliveAction | None:
        if self.failed:
            return None
        if self._pong_deadline is not None and now >= self._pong_deadline:
            self.failed = True
            return KeepaliveAction.FLOW_FAILED
        if self._resend_at is not None and now >= self._resend_at:
            self._rto *= 2
            self._resend_at = now + self._rto
            if self._pong_deadline is not None and self._resend_at >= self._pong_deadline:
                self._resend_at = None
            return KeepaliveAction.RESEND_PING
        if now >= self._next_ping:
            self._next_ping = now + self._wait()
            if self.pong_timeout is not None and self._pong_deadline is None:
                self._pong_deadline = now + self.pong_timeout
                if self.retransmit:
                    self._rto = self.retransmit
                    self._resend_at = now + self._rto
            return KeepaliveAction.SEND_PING
        return None

    def pong_received(self, now: float) -> None:
        self._pong_deadline = None
        self._resend_at = None

    def traffic_received(self, now: float) -> None:
        """Any message on the flow proves it alive as well as a pong does."""
        self._pong_deadline = None
        self._resend_at = None


class KeepaliveHandle:
    """A running keepalive; :meth:`cancel` stops it. ``failed`` is set when the flow failed."""

    def __init__(self, schedule: KeepaliveSchedule) -> None:
        self.schedule = schedule
        self.task: asyncio.Task[None] | None = None
        self.failed = asyncio.Event()
        #: STUN keepalives: the address the proxy sees us at (the first response's), and the
        #: transaction id of the Binding request awaiting its response
        self.mapped: Address | None = None
        self.stun_transaction: bytes | None = None
        self.pongs = 0  # responses (pongs) received

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


# --------------------------------------------------------------------------------------------
# Protocols


def _trace(direction: str, transport: str, local: Address, remote: Address, data: bytes) -> None:
    if not trace_logger.isEnabledFor(logging.DEBUG):
        return
    arrow = "->" if direction == "send" else "<-"
    where = f"{_fmt(local)} {arrow} {_fmt(remote)}"
    if data in (PING, PONG) or (direction == "recv" and is_keepalive_datagram(data)):
        trace_logger.debug("%s %s %s keepalive %r", direction, transport, where, data)
        return
    text = data.decode("utf-8", "replace")
    trace_logger.debug("%s %s %s (%d bytes)\n%s", direction, transport, where, len(data), text)


def _fmt(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer) -> None:
        self.layer = layer
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)
        self.family = socket.AF_INET

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (the selector loop's datagram transport is not a DatagramTransport subclass)
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        self.family = sock.family
        name = transport.get_extra_info("sockname")
        self.local = (normalize_ip(name[0]), int(name[1]))

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        remote = (normalize_ip(str(addr[0])), int(addr[1]))
        _trace("recv", "UDP", self.local, remote, data)
        if is_keepalive_datagram(data):
            if data[:2] == b"\x01\x01":
                self.layer._stun_response(data, remote)
            return
        source = Source("UDP", remote, self.local)
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self.layer._parse_failed(data, source, exc)
            return
        except Exception:  # a malformed packet must never kill the listener
            logger.exception("parser crashed on a datagram from %s", _fmt(remote))
            return
        self.layer._deliver(message, source, data)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable ...) for an earlier sendto; not fatal for the socket.
        logger.debug("UDP %s: %s", _fmt(self.local), exc)

    def sendto(self, data: bytes, remote: Address) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("UDP socket is closed")
        _trace("send", "UDP", self.local, remote, data)
        if len(data) > UDP_SIZE_NOTE:
            # RFC 3261 §18.1.1 would switch to TCP; we send anyway and let IP fragment it.
            logger.info(
                "sending a %d-byte message over UDP to %s: IP will fragment it",
                len(data),
                _fmt(remote),
            )
        self.transport.sendto(data, remote)


class _StreamProtocol(asyncio.Protocol):
    """One TCP or TLS connection, opened by us or by the peer."""

    _ids = itertools.count(1)

    def __init__(self, layer: TransportLayer, transport_name: str, outgoing: bool) -> None:
        self.layer = layer
        self.name = transport_name
        self.outgoing = outgoing
        self.id = next(self._ids)
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.local: Address = ("", 0)
        self.remote: Address = ("", 0)
        self.keys: set[tuple[str, str, int]] = set()
        self.keepalive: KeepaliveHandle | None = None
        self.closed = asyncio.get_running_loop().create_future()

    @property
    def source(self) -> Source:
        return Source(self.name, self.remote, self.local, self.id)

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        name = transport.get_extra_info("sockname")
        self.remote = (normalize_ip(peer[0]), int(peer[1]))
        self.local = (normalize_ip(name[0]), int(name[1]))
        self.layer._register(self)
        logger.debug(
            "%s connection %d %s %s %s",
            self.name,
            self.id,
            _fmt(self.local),
            "->" if self.outgoing else "<-",
            _fmt(self.remote),
        )

    def data_received(self, data: bytes) -> None:
        _trace("recv", self.name, self.local, self.remote, data)
        try:
            items = self.framer.feed(data)
        except SipParseError as exc:
            logger.warning(
                "%s %s: bad framing (%s); closing connection", self.name, _fmt(self.remote), exc
            )
            self.close()
            return
        except Exception:
            logger.exception("stream framer crashed; closing connection")
            self.close()
            return
        now = asyncio.get_running_loop().time()
        for item in items:
            if not self.is_open:
                return
            if item is Keepalive.PING:
                self.write(PONG)  # RFC 5626 §3.5.1: answer a ping with a pong
                continue
            if item is Keepalive.PONG:
                if self.keepalive is not None:
                    self.keepalive.schedule.pong_received(now)
                continue
            if not isinstance(item, bytes):
                continue
            if self.keepalive is not None:
                self.keepalive.schedule.traffic_received(now)
            try:
                message = parse_message(item)
            except SipParseError as exc:
                self.layer._parse_failed(item, self.source, exc)
                continue
            except Exception:
                logger.exception("parser crashed on a message from %s", _fmt(self.remote))
                continue
            self.layer._deliver(message, self.source, item)

    def connection_lost(self, exc: Exception | None) -> None:
        logger.debug(
            "%s connection %d to %s closed (%s)", self.name, self.id, _fmt(self.remote), exc
        )
        self.layer._unregister(self)
        if self.keepalive is not None:
            self.keepalive.cancel()
            self.keepalive.failed.set()
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError(f"{self.name} connection to {_fmt(self.remote)} is closed")
        _trace("send", self.name, self.local, self.remote, data)
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# --------------------------------------------------------------------------------------------
# The layer


MessageCallback = Callable[[Message, Source], None]
ParseErrorCallback = Callable[[bytes, Source, SipParseError], None]
FlowCallback = Callable[[Source], None]


@dataclass
class _Listener:
    transport: str
    local: Address
    server: asyncio.Server | None = None
    udp: _UdpProtocol | None = None
    family: int = socket.AF_INET


@dataclass
class _Pending:
    future: asyncio.Future[_StreamProtocol]
    waiters: int = 0


class TransportLayer:
    """Sockets for SIP: listeners, connections, sending, receiving, keepalives.

    Incoming messages go to ``on_message(message, source)`` if given, else to a queue read with
    :meth:`receive`. Datagrams or framed messages that do not parse go to
    ``on_parse_error(data, source, error)`` (the UA may answer a request with 400) and are
    otherwise logged and dropped. ``on_flow_failed(source)`` reports a stream flow whose keepalive
    pong did not come (RFC 5626 §4.4.1); ``on_connection_lost(source)`` every TCP/TLS connection
    that closed.
    """

    def __init__(
        self,
        *,
        on_message: MessageCallback | None = None,
        on_parse_error: ParseErrorCallback | None = None,
        on_flow_failed: FlowCallback | None = None,
        on_connection_lost: FlowCallback | None = None,
        tls: TlsConfig | None = None,
        connect_timeout: float = 10.0,
        udp_keepalive_interval: float = DEFAULT_UDP_KEEPALIVE,
        stream_keepalive_interval: float = DEFAULT_STREAM_KEEPALIVE,
        pong_timeout: float = PONG_TIMEOUT,
    ) -> None:
        self.on_message = on_message
        self.on_parse_error = on_parse_error
        self.on_flow_failed = on_flow_failed
        #: called with the flow of every TCP/TLS connection that closed (either side)
        self.on_connection_lost = on_connection_lost
        self.tls = tls or TlsConfig()
        self.connect_timeout = connect_timeout
        self.udp_keepalive_interval = udp_keepalive_interval
        self.stream_keepalive_interval = stream_keepalive_interval
        self.pong_timeout = pong_timeout
        self._listeners: list[_Listener] = []
        self._connections: dict[int, _StreamProtocol] = {}
        self._by_remote: dict[tuple[str, str, int], _StreamProtocol] = {}
        self._pending: dict[tuple[str, str, int], _Pending] = {}
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue()
        self._keepalives: set[KeepaliveHandle] = set()
        self._stun_waiters: dict[bytes, KeepaliveHandle] = {}  # STUN keepalive transactions
        self._client_ctx: ssl.SSLContext | None = None
        self._closed = False
        #: the local address of our last outgoing connection to each (transport, ip, port):
        #: a new connection there starts from the same port when it can (see :meth:`_open`)
        self._last_local: dict[tuple[str, str, int], Address] = {}
        #: reconnect from the previous connection's local port (see :meth:`_open`)
        self.reuse_local_port = True

    # ---- listening -------------------------------------------------------------------------

    async def start(
        self,
        host: str = "0.0.0.0",
        port: int = 0,
        transports: Iterable[str] = ("UDP", "TCP"),
        *,
        tls_port: int | None = None,
    ) -> None:
        """Listen on ``host``: UDP and TCP share one port number; TLS gets ``tls_port``.

        Port 0 picks a free port (the same for UDP and TCP when possible). ``tls_port`` defaults
        to the UDP/TCP port + 1 when a fixed port is given, else to any free port.
        """
        wanted = [t.upper() for t in transports]
        base = port
        for attempt in range(20):
            opened: list[_Listener] = []
            try:
                for transport in ("UDP", "TCP"):
                    if transport in wanted:
                        local = await self._listen(transport, host, base)
                        base = local[1]
                        opened.append(self._listeners[-1])
                break
            except OSError:
                for listener in opened:
                    await self._close_listener(listener)
                if port != 0 or attempt == 19:
                    raise
                base = 0
        if "TLS" in wanted:
            if tls_port is None:
                tls_port = base + 1 if port else 0
            await self.listen_tls(host, tls_port)

    async def listen_udp(self, host: str, port: int = 0) -> Address:
        return await self._listen("UDP", host, port)

    async def listen_tcp(self, host: str, port: int = 0) -> Address:
        return await self._listen("TCP", host, port)

    async def listen_tls(self, host: str, port: int = 0) -> Address:
        return await self._listen("TLS", host, port)

    async def _listen(self, transport: str, host: str, port: int) -> Address:
        loop = asyncio.get_running_loop()
        host = host.strip("[]")
        if transport == "UDP":
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            _t, proto = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, port), family=family
            )
            listener = _Listener("UDP", proto.local, udp=proto, family=proto.family)
        else:
            ctx = self.tls.server_context() if transport == "TLS" else None
            server = await loop.create_server(
                lambda: _StreamProtocol(self, transport, outgoing=False),
                host=host,
                port=port,
                ssl=ctx,
                reuse_address=True,
            )
            sock = server.sockets[0]
            name = sock.getsockname()
            local = (normalize_ip(name[0]), int(name[1]))
            listener = _Listener(transport, local, server=server, family=sock.family)
        self._listeners.append(listener)
        logger.info("listening on %s %s", transport, _fmt(listener.local))
        return listener.local

    def local_address(self, transport: str = "UDP", family: int | None = None) -> Address:
        """(host, port) of the first listener of ``transport`` (and address ``family``)."""
        listener = self._listener(transport.upper(), family)
        if listener is None:
            raise LookupError(f"not listening on {transport}")
        return listener.local

    def local_address_for(self, target: Target) -> Address:
        """The address and port a peer at ``target`` should use to reach us (Via/Contact).

        A wildcard listener is resolved to the local IP the kernel routes toward the target.
        """
        family = _family(target.ip)
        listener = self._listener(target.transport, family)
        if listener is None:
            listener = self._listener(target.transport, None)
        if listener is None:
            raise LookupError(f"not listening on {target.transport}")
        host, port = listener.local
        if ipaddress.ip_address(host).is_unspecified:
            host = _route_source(target.ip)
        return host, port

    def _listener(self, transport: str, family: int | None) -> _Listener | None:
        for listener in self._listeners:
            if listener.transport == transport and (family is None or listener.family == family):
                return listener
        return None

    def _families(self, transport: str) -> set[int]:
        return {lst.family for lst in self._listeners if lst.transport == transport}

    def _udp_for(self, ip: str, local: Address | None = None) -> _UdpProtocol:
        family = _family(ip)
        candidates = [
            lst.udp for lst in self._listeners if lst.udp is not None and lst.family == family
        ]
        if local is not None:
            for proto in candidates:
                if proto.local == local:
                    return proto
        if not candidates:
            raise ConnectionError(f"no UDP socket for {ip}")
        return candidates[0]

    # ---- connections ----------------------------------------------------------------------

    def _register(self, conn: _StreamProtocol) -> None:
        self._connections[conn.id] = conn
        key = (conn.name, conn.remote[0], conn.remote[1])
        conn.keys.add(key)
        self._by_remote[key] = conn

    def _unregister(self, conn: _StreamProtocol) -> None:
        self._connections.pop(conn.id, None)
        for key in conn.keys:
            if self._by_remote.get(key) is conn:
                del self._by_remote[key]
        if self.on_connection_lost is not None and not self._closed:
            try:
                self.on_connection_lost(conn.source)
            except Exception:
                logger.exception("on_connection_lost callback failed")

    def forget_local_host(self, host: str) -> int:
        """Our address ``host`` went away: close the TCP/TLS connections whose local end is on
        it (no packet can leave or reach it any more; RFC 5626 §4.4.1 counts such a flow as
        failed) and no longer reconnect from it (:meth:`_open` re-binds the previous local
        port). Returns how many connections were closed. Their transactions learn it through
        ``on_connection_lost`` like any other closed connection."""
        ip = normalize_ip(host)
        for key, local in list(self._last_local.items()):
            if local[0] == ip:
                del self._last_local[key]
        gone = [conn for conn in self._connections.values() if conn.local[0] == ip]
        for conn in gone:
            logger.info("closing connection %d from %s: address gone", conn.id, _fmt(conn.local))
            conn.close()
        return len(gone)

    def connection_count(self) -> int:
        return len(self._connections)

    def find_connection(self, transport: str, ip: str, port: int) -> Source | None:
        conn = self._by_remote.get((transport.upper(), normalize_ip(ip), port))
        return conn.source if conn is not None and conn.is_open else None

    async def _connection(self, target: Target) -> _StreamProtocol:
        if self._closed:
            raise ConnectionError("transport layer is closed")
        if target.transport != target.transport.upper():
            target = Target(
                target.transport.upper(), target.host, target.ip, target.port, target.domain
            )
        key = (target.transport, normalize_ip(target.ip), target.port)
        conn = self._by_remote.get(key)
        if conn is not None and conn.is_open:
            return conn
        pending = self._pending.get(key)
        if pending is None:
            future = asyncio.ensure_future(self._open(target))
            pending = self._pending[key] = _Pending(future)

            def _done(_f: asyncio.Future[_StreamProtocol]) -> None:
                if self._pending.get(key) is pending:
                    del self._pending[key]
                if not _f.cancelled():
                    _f.exception()  # mark retrieved

            future.add_done_callback(_done)
        return await asyncio.shield(pending.future)

    async def _open(self, target: Target) -> _StreamProtocol:
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        server_hostname: str | None = None
        if target.transport == "TLS":
            if self._client_ctx is None:
                self._client_ctx = self.tls.client_context()
            ctx = self._client_ctx
            server_hostname = self.tls.server_hostname or target.tls_name
        # Originate from the address we listen on (``--bind``), if it is a specific one.
        local_addr: Address | None = None
        family = _family(target.ip)
        listeners = [lst for lst in self._listeners if lst.family == family]
        listeners.sort(key=lambda lst: lst.transport != target.transport)
        for listener in listeners:
            if not ipaddress.ip_address(listener.local[0]).is_unspecified:
                local_addr = (listener.local[0], 0)
                break
        key = (target.transport, normalize_ip(target.ip), target.port)
        previous = self._last_local.get(key) if self.reuse_local_port else None
        sock = None
        if previous is not None:
            # our side of the old connection may still wait for the ACK of its FIN (LAST_ACK,
            # one round trip): give it a moment before taking any port
            for _ in range(REBIND_ATTEMPTS):
                sock = _bound_socket(previous)
                if sock is not None:
                    break
                await asyncio.sleep(REBIND_WAIT)

        def factory() -> _StreamProtocol:
            return _StreamProtocol(self, target.transport, outgoing=True)

        if sock is not None:
            # A new flow to a proxy we had a connection with starts from the same local port:
            # a proxy without RFC 5626 flow tokens (Kamailio's ;alias / received) keeps routing
            # requests for our binding and our dialogs to that address, so it reaches us over
            # the new connection as soon as we reconnect.
            try:
                await asyncio.wait_for(
                    loop.sock_connect(sock, (target.ip, target.port)), self.connect_timeout
                )
            except OSError as exc:
                sock.close()
                sock = None
                if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    raise
                logger.debug("cannot reconnect from %s (%s): any port", previous, exc)
            except BaseException:
                sock.close()
                raise
        if sock is not None:
            _t, proto = await asyncio.wait_for(
                loop.create_connection(
                    factory, sock=sock, ssl=ctx, server_hostname=server_hostname
                ),
                self.connect_timeout,
            )
        else:
            _t, proto = await asyncio.wait_for(
                loop.create_connection(
                    factory,
                    host=target.ip,
                    port=target.port,
                    ssl=ctx,
                    server_hostname=server_hostname,
                    local_addr=local_addr,
                ),
                self.connect_timeout,
            )
        # Register under the address we dialled too (it equals the peer name unless mapped).
        proto.keys.add(key)
        self._by_remote[key] = proto
        self._last_local[key] = proto.local
        return proto

    # ---- sending --------------------------------------------------------------------------

    async def send(self, message: Message, target: Target) -> Source:
        """Send ``message`` to ``target``; returns the flow used.

        For a request, the top Via gets the transport, our address and port as sent-by, and
        ``;rport`` (RFC 3261 §18.1.1, RFC 3581 §3); a Via with a fresh branch is added if there is
        none. Raises OSError/ConnectionError/TimeoutError (and ssl errors) on transport failure.
        """
        if self._closed:
            raise ConnectionError("transport layer is closed")
        transport = target.transport.upper()
        if transport == "UDP":
            proto = self._udp_for(target.ip)
            host, port = proto.local
            if ipaddress.ip_address(host).is_unspecified:
                host = _route_source(target.ip)
            if isinstance(message, Request):
                _set_sent_by(message, "UDP", host, port)
            remote = (normalize_ip(target.ip), target.port)
            proto.sendto(message.to_bytes(), remote)
            return Source("UDP", remote, proto.local)
        if transport not in STREAM_TRANSPORTS:
            raise ValueError(f"unsupported transport {target.transport!r}")
        conn = await self._connection(target)
        if isinstance(message, Request):
            listener = self._listener(transport, _family(target.ip))
            port = listener.local[1] if listener is not None else conn.local[1]
            _set_sent_by(message, transport, conn.local[0], port)
        conn.write(message.to_bytes())
        return conn.source

    async def send_on(self, message: Message, flow: Source) -> Source:
        """Send on an existing flow (the connection itself for TCP/TLS, the same socket for UDP).

        Raises ConnectionError if a stream flow has closed.
        """
        if self._closed:
            raise ConnectionError("transport layer is closed")
        if flow.connection_id is not None:
            conn = self._connections.get(flow.connection_id)
            if conn is None or not conn.is_open:
                raise ConnectionError(f"{flow.transport} flow to {_fmt(flow.remote)} is closed")
            if isinstance(message, Request):
                listener = self._listener(flow.transport, _family(conn.local[0]))
                port = listener.local[1] if listener is not None else conn.local[1]
                _set_sent_by(message, flow.transport, conn.local[0], port)
            conn.write(message.to_bytes())
            return conn.source
        proto = self._udp_for(flow.remote[0], flow.local)
        if isinstance(message, Request):
            host, port = proto.local
            if ipaddress.ip_address(host).is_unspecified:
                host = _route_source(flow.remote[0])
            _set_sent_by(message, "UDP", host, port)
        proto.sendto(message.to_bytes(), flow.remote)
        return Source("UDP", flow.remote, proto.local)

    async def send_response(self, response: Response, source: Source | None = None) -> Source:
        """Route a response per RFC 3261 §18.2.2 and RFC 3581 §4.

        ``source`` is the flow the request arrived on: a TCP/TLS response goes back over that
        connection while it is open; otherwise a connection is opened to the Via's received
        address (or sent-by host) and sent-by port. A UDP response goes to received:rport (or
        received:sent-by port, or the sent-by host), from the socket the request arrived on.
        """
        if self._closed:
            raise ConnectionError("transport layer is closed")
        via = response.top_via
        transport = via.transport.upper()
        if source is not None and source.connection_id is not None:
            conn = self._connections.get(source.connection_id)
            if conn is not None and conn.is_open:
                conn.write(response.to_bytes())
                return conn.source
        if transport in STREAM_TRANSPORTS:
            host = via.received or via.host
            port = via.port or DEFAULT_PORTS[transport]
            ip = await _resolve(host, self._families(transport))
            conn = await self._connection(Target(transport, via.host, ip, port))
            conn.write(response.to_bytes())
            return conn.source
        if transport != "UDP":
            raise ValueError(f"cannot route a response over {via.transport}")
        maddr = via.params.get("maddr")
        if maddr:
            ip, port = await _resolve(maddr, self._families("UDP")), via.port or 5060
        elif via.received:
            rport = via.rport
            ip, port = via.received, rport if isinstance(rport, int) else (via.port or 5060)
        else:
            ip, port = await _resolve(via.host, self._families("UDP")), via.port or 5060
        proto = self._udp_for(ip, source.local if source is not None else None)
        data = response.to_bytes()
        remote = (normalize_ip(ip), port)
        proto.sendto(data, remote)
        return Source("UDP", remote, proto.local)

    # ---- receiving ------------------------------------------------------------------------

    async def receive(self) -> Incoming:
        """The next incoming message (when no ``on_message`` callback is set)."""
        return await self._queue.get()

    def _deliver(self, message: Message, source: Source, data: bytes) -> None:
        try:
            _check_essentials(message)
            if isinstance(message, Request):
                _stamp_received(message, source)
        except SipParseError as exc:
            self._parse_failed(data, source, exc)
            return
        except Exception:  # the lazy header parsers must not take the transport down
            logger.exception("header parsing crashed on a message from %s", _fmt(source.remote))
            return
        if isinstance(message, Request):
            alias_conn = self._connections.get(source.connection_id or -1)
            if alias_conn is not None:
                self._maybe_alias(message, alias_conn)
        if self.on_message is None:
            self._queue.put_nowait(Incoming(message, source))
            return
        try:
            self.on_message(message, source)
        except Exception:
            logger.exception("on_message callback failed")

    def _maybe_alias(self, request: Request, conn: _StreamProtocol) -> None:
        """RFC 5923: a Via with ``;alias`` lets us reuse this connection toward its sent-by."""
        via = request.top_via
        if "alias" not in via.params or via.port is None:
            return
        key = (conn.name, conn.remote[0], via.port)
        if key not in self._by_remote:
            conn.keys.add(key)
            self._by_remote[key] = conn

    def _parse_failed(self, data: bytes, source: Source, exc: SipParseError) -> None:
        logger.warning(
            "dropping unparsable %s message from %s: %s", source.transport, _fmt(source.remote), exc
        )
        if self.on_parse_error is not None:
            try:
                self.on_parse_error(data, source, exc)
            except Exception:
                logger.exception("on_parse_error callback failed")

    # ---- keepalives -----------------------------------------------------------------------

    async def start_keepalive(
        self, target: Target, interval: float | None = None, *, stun: bool = False
    ) -> KeepaliveHandle:
        """Keep the flow toward ``target`` (our proxy / registrar) alive (RFC 5626 §4.4.1).

        UDP: CRLFCRLF from our listening socket every ``interval`` (default 25 s), or with
        ``stun`` a STUN Binding request (RFC 5626 §4.4.2; only toward a proxy that answers
        STUN on its SIP port). TCP/TLS: CRLFCRLF ping on the connection (opened if needed). A
        pong (STUN: the Binding response) must come within the pong timeout or the flow
        fails: the connection is closed, ``on_flow_failed`` called and ``handle.failed`` set.
        STUN: a response with another mapped address than the first also fails the flow
        (the NAT gave us a new public address, §4.4.2).
        """
        loop = asyncio.get_running_loop()
        transport = target.transport.upper()
        if transport == "UDP":
            proto = self._udp_for(target.ip)
            remote = (normalize_ip(target.ip), target.port)
            schedule = KeepaliveSchedule(
                interval or self.udp_keepalive_interval,
                loop.time(),
                pong_timeout=self.pong_timeout if stun else None,
                retransmit=STUN_RTO if stun else None,
            )
            handle = KeepaliveHandle(schedule)

            def ping_udp() -> None:
                proto.sendto(self._stun_ping(handle) if stun else PING, remote)

            def resend_udp() -> None:
                proto.sendto(self._stun_ping(handle, again=True), remote)

            handle.task = asyncio.create_task(
                self._run_keepalive(handle, ping_udp, None, resend_udp)
            )
        else:
            conn = await self._connection(target)
            schedule = KeepaliveSchedule(
                interval or self.stream_keepalive_interval,
                loop.time(),
                pong_timeout=self.pong_timeout,
            )
            handle = KeepaliveHandle(schedule)
            if conn.keepalive is not None:
                conn.keepalive.cancel()
            conn.keepalive = handle

            def ping_stream() -> None:
                conn.write(PING)

            handle.task = asyncio.create_task(self._run_keepalive(handle, ping_stream, conn))
        self._keepalives.add(handle)
        handle.task.add_done_callback(lambda _t: self._keepalives.discard(handle))
        return handle

    def _stun_ping(self, handle: KeepaliveHandle, *, again: bool = False) -> bytes:
        """The Binding request of ``handle``: a new transaction, or ``again`` the pending one."""
        if not again or handle.stun_transaction is None:
            if handle.stun_transaction is not None:
                self._stun_waiters.pop(handle.stun_transaction, None)
            handle.stun_transaction = secrets.token_bytes(12)
            self._stun_waiters[handle.stun_transaction] = handle
        return stun_binding_request(handle.stun_transaction)

    def _stun_response(self, data: bytes, remote: Address) -> None:
        """A STUN Binding response on a UDP socket: the pong of a STUN keepalive."""
        parsed = parse_stun_binding_response(data)
        if parsed is None:
            return
        tid, mapped = parsed
        handle = self._stun_waiters.pop(tid, None)
        if handle is None or handle.schedule.failed:
            return
        handle.stun_transaction = None
        handle.pongs += 1
        handle.schedule.pong_received(asyncio.get_running_loop().time())
        if mapped is None:
            return
        if handle.mapped is None:
            handle.mapped = mapped
        elif mapped != handle.mapped:
            logger.warning(
                "keepalive: %s now sees us at %s, not %s; flow failed",
                _fmt(remote),
                _fmt(mapped),
                _fmt(handle.mapped),
            )
            handle.schedule.failed = True
            handle.cancel()
            self._flow_failed(handle, None)

    async def _run_keepalive(
        self,
        handle: KeepaliveHandle,
        ping: Callable[[], None],
        conn: _StreamProtocol | None,
        resend: Callable[[], None] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        schedule = handle.schedule
        while True:
            deadline = schedule.get_timer()
            if deadline is None:
                return
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            action = schedule.handle_timer(loop.time())
            if action is KeepaliveAction.RESEND_PING and resend is not None:
                with contextlib.suppress(ConnectionError, OSError):
                    resend()
            elif action is KeepaliveAction.SEND_PING:
                try:
                    ping()
                except (ConnectionError, OSError) as exc:
                    logger.info("keepalive: flow closed (%s)", exc)
                    self._flow_failed(handle, conn)
                    return
            elif action is KeepaliveAction.FLOW_FAILED:
                logger.warning(
                    "keepalive: no pong within %.0f s on %s; flow failed",
                    schedule.pong_timeout or 0.0,
                    _fmt(conn.remote) if conn is not None else "?",
                )
                self._flow_failed(handle, conn)
                return

    def _flow_failed(self, handle: KeepaliveHandle, conn: _StreamProtocol | None) -> None:
        handle.failed.set()
        if handle.stun_transaction is not None:
            self._stun_waiters.pop(handle.stun_transaction, None)
        if conn is not None:
            source = conn.source
            conn.keepalive = None
            conn.close()
            if self.on_flow_failed is not None:
                try:
                    self.on_flow_failed(source)
                except Exception:
                    logger.exception("on_flow_failed callback failed")

    # ---- shutdown -------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop keepalives, close connections, listeners and sockets."""
        self._closed = True
        for handle in list(self._keepalives):
            handle.cancel()
        for pending in list(self._pending.values()):
            pending.future.cancel()
        conns = list(self._connections.values())
        for conn in conns:
            conn.close()
        for listener in list(self._listeners):
            await self._close_listener(listener)
        if conns:
            await asyncio.wait([c.closed for c in conns], timeout=2.0)

    async def _close_listener(self, listener: _Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
        if listener.udp is not None and listener.udp.transport is not None:
            listener.udp.transport.close()
        if listener.server is not None:
            listener.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.server.wait_closed(), 2.0)

    async def __aenter__(self) -> TransportLayer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --------------------------------------------------------------------------------------------
# Via handling


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


#: how often, and how far apart (s), binding the previous local port is tried on a reconnect
REBIND_ATTEMPTS = 5
REBIND_WAIT = 0.2


def _bound_socket(local: Address) -> socket.socket | None:
    """A non-blocking TCP socket bound to ``local`` (SO_REUSEADDR), or None if that address
    is taken (e.g. our side of the old connection still waits in TIME_WAIT)."""
    sock = socket.socket(_family(local[0]), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setblocking(False)
        sock.bind(local)
    except OSError as exc:
        logger.debug("cannot bind %s again: %s", _fmt(local), exc)
        sock.close()
        return None
    return sock


def _route_source(ip: str) -> str:
    """The local address the kernel would use toward ``ip`` (a UDP connect sends nothing)."""
    family = _family(ip)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((ip, 9))
            return normalize_ip(sock.getsockname()[0])
        except OSError:
            return "::1" if family == socket.AF_INET6 else "127.0.0.1"


async def _resolve(host: str, families: set[int] | None = None) -> str:
    """An address for a Via host (RFC 3263 §5, simplified to A/AAAA through the system resolver),
    preferring the address ``families`` we have sockets for."""
    if is_ip_address(host):
        return host.strip("[]")
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    addresses = [
        (family, normalize_ip(str(sockaddr[0])))
        for family, _t, _p, _n, sockaddr in infos
        if family in (socket.AF_INET, socket.AF_INET6)
    ]
    if not addresses:
        raise OSError(f"cannot resolve {host}")
    for family, ip in addresses:
        if families is None or family in families:
            return ip
    return addresses[0][1]


def _replace_top_via(message: Message, via: Via) -> None:
    """Put ``via`` in place of the top Via value, keeping header order.

    The message's Headers object is changed in place, so whoever holds the request (the
    transaction building a CANCEL or ACK from it) sees the Via that went on the wire.
    """
    headers = message.headers
    rest = headers.get_all("Via")[1:]
    rebuilt: list[tuple[str, str]] = []
    placed = False
    for name, value in headers.items():
        if name.lower() == "via":
            if not placed:
                rebuilt.append(("Via", str(via)))
                rebuilt.extend(("Via", other) for other in rest)
                placed = True
            continue
        rebuilt.append((name, value))
    if not placed:
        rebuilt.insert(0, ("Via", str(via)))
    for name in {name for name, _ in headers.items()}:
        headers.remove(name)
    for name, value in rebuilt:
        headers.add(name, value)


def _set_sent_by(request: Request, transport: str, host: str, port: int) -> None:
    """RFC 3261 §18.1.1 sent-by and RFC 3581 §3 ``;rport`` on the top Via of a request."""
    protocol = "SIP/2.0"
    if "Via" in request.headers:
        via = request.top_via
        params = dict(via.params)
        protocol = via.protocol
    else:
        params = {"branch": new_branch()}
    params.setdefault("rport", None)
    _replace_top_via(request, Via(transport, host, port, params, protocol))


def _check_essentials(message: Message) -> None:
    """Parse the headers every layer above relies on; SipParseError if one is malformed/missing.

    RFC 3261 §8.1.1 / §8.2: Via, CSeq, Call-ID, From and To. A response whose CSeq or top Via is
    unusable cannot be matched to a transaction and is dropped (RFC 3261 §18.1.2).
    """
    message.top_via  # noqa: B018
    message.cseq  # noqa: B018
    message.call_id  # noqa: B018
    message.from_addr  # noqa: B018
    message.to_addr  # noqa: B018


def _stamp_received(request: Request, source: Source) -> None:
    """RFC 3261 §18.2.1 ``;received`` and RFC 3581 §4 ``;rport=`` on an incoming request."""
    via = request.top_via
    ip = source.remote[0]
    params = dict(via.params)
    has_rport = "rport" in params
    if has_rport:
        params["rport"] = str(source.remote[1])
    if not (has_rport or not is_ip_address(via.host) or normalize_ip(via.host) != ip):
        return
    params["received"] = ip
    _replace_top_via(request, Via(via.transport, via.host, via.port, params, via.protocol))
