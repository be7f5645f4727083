"""asyncio shell for :class:`ice.turn.TurnClient`: sockets, timers and awaitable operations.

One :class:`TurnAllocation` owns one connection to a TURN server and one allocation on it::

    alloc = await allocate_turn(("192.0.2.1", 3478), "user", "secret")       # UDP
    alloc = await allocate_turn(server, "user", "secret", transport="tls",
                                ssl_context=ctx)                              # TLS (RFC 8656 §3.1)
    await alloc.bind_channel(peer)          # optional: ChannelData instead of Send indications
    alloc.sendto(b"payload", peer)          # permission created on demand
    data, peer = await alloc.recv()         # or pass on_data=callback
    await alloc.close()                     # Refresh with LIFETIME 0

Over TCP and TLS the byte stream is split into STUN messages and ChannelData frames by
:class:`ice.channeldata.StreamFramer` (RFC 8656 §12.5, RFC 6062 framing by length).  The protocol
logic, retransmissions and refresh timers all live in the sans-I/O core; this module only moves
bytes and calls ``handle_timer`` at ``get_timer()`` on the loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any, Literal

from ice.channeldata import StreamFramer
from ice.stun import Address, StunParseError
from ice.turn import (
    DEFAULT_LIFETIME,
    Allocated,
    AllocationExpired,
    AllocationFailed,
    AllocationRefreshed,
    ChannelBindFailed,
    ChannelBound,
    DataReceived,
    Deallocated,
    PermissionCreated,
    PermissionFailed,
    TurnClient,
    TurnEvent,
    TurnState,
)

__all__ = ["TurnAllocation", "TurnError", "allocate_turn"]

logger = logging.getLogger("ice.turn")

Transport = Literal["udp", "tcp", "tls"]
DataHandler = Callable[[bytes, Address], None]


class TurnError(Exception):
    """A TURN operation failed; ``code`` is the STUN error code (None: timeout/connection)."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: TurnAllocation) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._owner._input(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        logger.debug("TURN UDP socket error: %s", exc)


class TurnAllocation:
    """Drives a :class:`TurnClient` over a UDP socket or a TCP/TLS stream."""

    def __init__(
        self,
        client: TurnClient,
        *,
        on_data: DataHandler | None = None,
        on_event: Callable[[TurnEvent], None] | None = None,
    ) -> None:
        self.client = client
        self.on_data = on_data
        self.on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._udp: asyncio.DatagramTransport | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._redirect_task: asyncio.Task[None] | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._stream_server: Address | None = None
        self._stream_pending: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._waiters: list[tuple[Callable[[TurnEvent], bool], asyncio.Future[TurnEvent]]] = []
        self._received: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue(maxsize=1024)
        self._closed = False
        self.local_address: Address | None = None

    # -- properties -------------------------------------------------------------------------------

    @property
    def relayed_address(self) -> Address:
        address = self.client.relayed_address
        if address is None:
            raise TurnError("no allocation")
        return address

    @property
    def mapped_address(self) -> Address | None:
        return self.client.mapped_address

    # -- connecting --------------------------------------------------------------------------------

    async def _open_udp(self, local_addr: Address | None) -> None:
        server = self.client.server
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _DatagramProtocol(self),
            local_addr=local_addr or (("::", 0) if ":" in server[0] else ("0.0.0.0", 0)),
        )
        self._udp = transport
        sockname = transport.get_extra_info("sockname")
        self.local_address = (str(sockname[0]), int(sockname[1]))

    async def _open_stream(
        self,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        local_addr: Address | None,
    ) -> None:
        self._ssl_context = ssl_context
        self._stream_server = server = self.client.server
        reader, writer = await asyncio.open_connection(
            server[0],
            server[1],
            ssl=ssl_context,
            server_hostname=server_hostname if ssl_context is not None else None,
            local_addr=local_addr,
        )
        self._writer = writer
        sockname = writer.get_extra_info("sockname")
        self.local_address = (str(sockname[0]), int(sockname[1]))
        self._reader_task = self._loop.create_task(self._read_stream(reader, server))

    async def _redirect_stream(self) -> None:
        """Follow a 300 Try Alternate on a stream: connect to the new server (RFC 8489 §10).

        The certificate of a TLS alternate is checked against its IP address (ALTERNATE-DOMAIN
        is not used).
        """
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        try:
            await self._open_stream(self._ssl_context, self.client.server[0], None)
        except (OSError, ssl.SSLError) as exc:
            logger.warning("TURN: cannot reach alternate server %s: %s", self.client.server, exc)
            self._connection_lost()
            return
        pending, self._stream_pending = self._stream_pending, []
        for data in pending:
            self._transmit(data, self.client.server)
        self._redirect_task = None

    async def _read_stream(self, reader: asyncio.StreamReader, server: Address) -> None:
        framer = StreamFramer()
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                for frame in framer.feed(chunk):
                    self._input(frame, server)
        except StunParseError as exc:
            logger.warning("TURN stream from %s lost framing: %s", server, exc)
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            logger.debug("TURN stream to %s failed: %s", server, exc)
        if not self._closed:
            logger.info("TURN connection to %s closed by the server", server)
            self._connection_lost()

    def _connection_lost(self) -> None:
        if self.client.state is TurnState.ALLOCATED and self.on_event is not None:
            # the allocation lives and dies with its TCP/TLS connection (RFC 8656 §3.1)
            self.on_event(AllocationExpired("connection to the TURN server lost"))
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(TurnError("connection to the TURN server lost"))
        self._waiters.clear()
        self._shutdown()

    # -- driving the core --------------------------------------------------------------------------

    def _input(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        self.client.receive(data, addr, self._loop.time())
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        self.client.handle_timer(self._loop.time())
        self._pump()

    def _pump(self) -> None:
        """Send what the core wants sent, dispatch its events, re-arm its timer."""
        for data, addr in self.client.datagrams_to_send(self._loop.time()):
            self._transmit(data, addr)
        while (event := self.client.next_event()) is not None:
            self._dispatch(event)
        if self._closed:
            return
        when = self.client.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if when is None else self._loop.call_at(when, self._on_timer)
            self._timer_at = when

    def _transmit(self, data: bytes, addr: Address) -> None:
        if self._udp is not None:
            self._udp.sendto(data, addr)
        elif addr != self._stream_server:  # redirected by the server
            self._stream_pending.append(data)
            if self._redirect_task is None:
                self._redirect_task = self._loop.create_task(self._redirect_stream())
        elif self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    def _dispatch(self, event: TurnEvent) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                logger.exception("TURN on_event handler failed")
        if isinstance(event, DataReceived):
            if self.on_data is not None:
                try:
                    self.on_data(event.data, event.peer)
                except Exception:
                    logger.exception("TURN on_data handler failed")
            elif self._received.full():
                logger.debug("TURN receive queue full; dropping data from %s", event.peer)
            else:
                self._received.put_nowait((event.data, event.peer))
            return
        logger.debug("TURN event %s", event)
        for item in list(self._waiters):
            predicate, fut = item
            if predicate(event):
                self._waiters.remove(item)
                if not fut.done():
                    fut.set_result(event)
        if isinstance(event, AllocationExpired | AllocationFailed):
            for _, fut in self._waiters:
                if not fut.done():
                    fut.set_exception(TurnError(event.reason, getattr(event, "code", None)))
            self._waiters.clear()

    async def _wait_for(
        self, predicate: Callable[[TurnEvent], bool], timeout: float | None
    ) -> TurnEvent:
        fut: asyncio.Future[TurnEvent] = self._loop.create_future()
        self._waiters.append((predicate, fut))
        self._pump()
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters = [w for w in self._waiters if w[1] is not fut]

    # -- operations --------------------------------------------------------------------------------

    async def allocate(self, timeout: float | None = None) -> Allocated:
        """Run the Allocate transaction; raises :class:`TurnError` on failure."""
        self.client.allocate(self._loop.time())
        try:
            event = await self._wait_for(
                lambda e: isinstance(e, Allocated | AllocationFailed), timeout
            )
        except TimeoutError as exc:
            raise TurnError("TURN allocation timed out") from exc
        if isinstance(event, AllocationFailed):
            raise TurnError(event.reason, event.code)
        assert isinstance(event, Allocated)
        return event

    def sendto(self, data: bytes, peer: Address) -> bool:
        """Relay ``data`` to ``peer`` (queued while a permission is being created)."""
        ok = self.client.send(data, peer, self._loop.time())
        self._pump()
        return ok

    async def create_permission(self, peer_ip: str, timeout: float | None = None) -> None:
        """Install a permission for ``peer_ip`` and wait for the server to confirm it."""
        if self.client.has_permission(peer_ip):
            return
        self.client.create_permission(peer_ip, self._loop.time())
        event = await self._wait_for(
            lambda e: isinstance(e, PermissionCreated | PermissionFailed) and e.peer_ip == peer_ip,
            timeout,
        )
        if isinstance(event, PermissionFailed):
            raise TurnError(event.reason, event.code)

    def permit(self, peer_ips: Iterable[str]) -> list[str]:
        """Start installing permissions for ``peer_ips`` in one CreatePermission without
        waiting (see :meth:`ice.turn.TurnClient.create_permissions`); returns the IPs asked
        for (those not permitted or pending yet).  No-op without an allocation."""
        if self.client.state is not TurnState.ALLOCATED:
            return []
        asked = self.client.create_permissions(peer_ips, self._loop.time())
        self._pump()
        return asked

    async def bind_channel(self, peer: Address, timeout: float | None = None) -> int:
        """Bind a channel to ``peer`` and return its number once the server confirms it."""
        existing = self.client.channel_for(peer)
        if existing is not None:
            return existing
        number = self.client.bind_channel(peer, self._loop.time())
        event = await self._wait_for(
            lambda e: isinstance(e, ChannelBound | ChannelBindFailed) and e.channel == number,
            timeout,
        )
        if isinstance(event, ChannelBindFailed):
            raise TurnError(event.reason, event.code)
        return number

    async def refresh(self, lifetime: int | None = None, timeout: float | None = None) -> int:
        """Refresh the allocation now; returns the granted lifetime."""
        self.client.refresh(self._loop.time(), lifetime)
        event = await self._wait_for(lambda e: isinstance(e, AllocationRefreshed), timeout)
        assert isinstance(event, AllocationRefreshed)
        return event.lifetime

    async def recv(self) -> tuple[bytes, Address]:
        """The next ``(data, peer)`` relayed to us (when no ``on_data`` handler is set)."""
        return await self._received.get()

    async def close(self, timeout: float | None = 5.0) -> bool:
        """Deallocate (RFC 8656 §8.1) and close the socket; True if the server confirmed."""
        if self._closed:
            return False
        confirmed = False
        if self.client.state is TurnState.ALLOCATED:
            self.client.close(self._loop.time())
            try:
                event = await self._wait_for(lambda e: isinstance(e, Deallocated), timeout)
                assert isinstance(event, Deallocated)
                confirmed = event.confirmed
            except (TimeoutError, TurnError):
                confirmed = False
        else:
            self.client.close(self._loop.time())
            self._pump()  # a blind release of an allocation that may exist already
        self._shutdown()
        if self._redirect_task is not None:
            self._redirect_task.cancel()
        if self._reader_task is not None:
            self._reader_task.cancel()
            try:
                await self._reader_task
            except asyncio.CancelledError:
                pass
        await asyncio.sleep(0)  # let the transport release its socket
        return confirmed

    def _shutdown(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()


async def allocate_turn(
    server: Address,
    username: str,
    password: str,
    *,
    transport: Transport = "udp",
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    local_addr: Address | None = None,
    lifetime: int | None = DEFAULT_LIFETIME,
    software: str | None = None,
    ipv6_relay: bool = False,
    additional_ipv6: bool = False,
    on_data: DataHandler | None = None,
    on_event: Callable[[TurnEvent], None] | None = None,
    timeout: float | None = 45.0,
) -> TurnAllocation:
    """Connect to ``server`` over ``transport`` and allocate a relayed UDP address.

    ``server`` may name the host; it is resolved here (in the family of ``local_addr`` if
    given) and, for TLS, the name is what the certificate is checked against.  For ``"tls"``
    an ``ssl_context`` is created with the system defaults unless given.
    Raises :class:`TurnError` (allocation refused or timed out) or ``OSError`` (cannot resolve
    or connect).
    """
    host, port = server
    if not _is_ip_literal(host):
        server_hostname = server_hostname or host
        server = await _resolve(host, port, transport, local_addr)
    client = TurnClient(
        server,
        username,
        password,
        reliable=transport != "udp",
        lifetime=lifetime,
        software=software,
        ipv6_relay=ipv6_relay,
        additional_ipv6=additional_ipv6,
    )
    allocation = TurnAllocation(client, on_data=on_data, on_event=on_event)
    if transport == "udp":
        await allocation._open_udp(local_addr)
    else:
        ctx = None
        if transport == "tls":
            ctx = ssl_context or ssl.create_default_context()
        await allocation._open_stream(ctx, server_hostname or host, local_addr)
    try:
        await allocation.allocate(timeout)
    except BaseException:
        await allocation.close()
        raise
    return allocation


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


async def _resolve(host: str, port: int, transport: str, local_addr: Address | None) -> Address:
    """The first address of ``host`` (through the system resolver, so /etc/hosts works)."""
    family = socket.AF_UNSPEC
    if local_addr is not None:
        family = socket.AF_INET6 if ":" in local_addr[0] else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, family=family, type=kind)
    if not infos:
        raise OSError(f"cannot resolve TURN server {host!r}")
    sockaddr = infos[0][4]
    return str(sockaddr[0]), int(sockaddr[1])
