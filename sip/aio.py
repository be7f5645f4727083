"""The asyncio shell around the sans-I/O :class:`sip.ua.UserAgent`.

:class:`AsyncUserAgent` owns a :class:`sip.transport.TransportLayer` (UDP/TCP/TLS sockets), runs
the core's timers with ``loop.call_at``, locates hostnames with ``sip.locate`` (RFC 3263) and
turns the core's events into awaitables and callbacks::

    async with AsyncUserAgent(UAConfig(user="alice", domain="example.org", password="...",
                                       outbound_proxy="sip:127.0.0.1:5060")) as ua:
        await ua.start("127.0.0.1", 0)
        await ua.register()
        call = await ua.invite("sip:bob@example.org", offer)      # raises CallError on failure
        answer = call.remote_sdp
        await call.bye()

    ua.on_incoming = handler        # called with an AsyncCall for each incoming INVITE
    ...                             # handler: await call.answer(sdp) / call.reject(486)

The core keeps every protocol rule; this layer only moves bytes and time. What it adds:

- RFC 5626 flows to the registrar: a keepalive per flow (CRLF ping/pong on TCP/TLS; on UDP
  CRLFCRLF, or STUN Binding requests with ``udp_keepalive="stun"`` or when the registrar
  requires outbound), at the registrar's Flow-Timer if it gives one; a flow whose pong does
  not come, whose connection closes, or whose STUN mapped address changes makes the core
  register again at once over a new flow (``UserAgent.flow_failed``, backing off per §4.5).
  A TCP/TLS flow is re-opened from the same local port, so a proxy without flow tokens
  (Kamailio's ``;alias``/received) reaches us over it, in new calls and in ongoing dialogs.
- RFC 3263 §4.3: targets that failed are tried last for ``dead_target_time``; the core sends a
  timed-out (or 503) request again, and the shell puts it on the next target; ACK/CANCEL follow
  their INVITE's target. A request on a connection that closed before any response fails at
  once (§18.4) instead of at Timer B/F.
- A new local address (:meth:`AsyncUserAgent.address_changed`, e.g. on an ``ice.netmonitor``
  batch, which the ``softphone`` package wires up): with a wildcard listener our address is
  found again (the route toward the proxy; without one, :data:`sip.ua.ROUTE_PROBES` and the
  host name, never loopback while something else exists); when it moved, the core takes it
  (Via, Contact, REGISTER removing the old binding, dialogs' next target refresh) and the
  TCP/TLS flows from the old address are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from sip import invite as inv
from sip.invite import SDP, Call, CallState
from sip.locate import DnsLookup, LocateError, Target, is_ip_address, locate, try_targets
from sip.message import Request, Response
from sip.registration import Registered, RegistrationExpired, RegistrationFailed, Unregistered
from sip.transaction import ClientTransaction
from sip.transaction import State as TxState
from sip.transport import KeepaliveHandle, Source, TlsConfig, TransportLayer
from sip.ua import (
    DEFAULT_PORTS,
    ROUTE_PROBES,
    ROUTE_PROBES_V6,
    OptionsResult,
    Outgoing,
    Peer,
    UAConfig,
    UserAgent,
    choose_local_host,
    peer_for_uri,
    usable_local_host,
)
from sip.uri import SipURI

log = logging.getLogger("sip.aio")

#: pjsip-like registration lifetime for (NATed) UDP: short enough that a registrar which lost
#: the binding gets it back at the next refresh (at half the lifetime, RFC 3261 §10.2.4).
NAT_UDP_REGISTER_EXPIRES = 600
#: UDP: how often the AOR is checked to still reach us (OPTIONS to ourselves via the proxy).
BINDING_CHECK_INTERVAL = 120.0
#: Final statuses of that check meaning "register again": not found / unavailable (the
#: registrar lost the binding) and timeout (the proxy is or was down).
BINDING_LOST_STATUSES = frozenset({404, 408, 410, 480, 503})
#: RFC 3263 §4.3: how long (s) a target that did not answer is tried only after the others.
DEAD_TARGET_TIME = 300.0
#: how many further targets a timed-out REGISTER is retried at
MAX_FAILOVERS = 3

__all__ = [
    "AsyncCall",
    "AsyncUserAgent",
    "CallError",
    "RegistrationError",
]


class CallError(Exception):
    """An outgoing call failed with a final response (``status`` 408 on timeout)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class RegistrationError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"registration failed: {status} {reason}")
        self.status = status
        self.reason = reason


class AsyncCall:
    """An awaitable view of a :class:`sip.invite.Call`."""

    def __init__(self, ua: AsyncUserAgent, call: Call) -> None:
        self.ua = ua
        self.call = call
        call.user_data = self
        loop = asyncio.get_running_loop()
        self.answered: asyncio.Future[bytes | None] = loop.create_future()
        self.confirmed: asyncio.Future[bytes | None] = loop.create_future()
        self.ended: asyncio.Future[str] = loop.create_future()
        self.ringing = asyncio.Event()
        self.events: list[Any] = []
        self._updates: asyncio.Queue[Any] = asyncio.Queue()
        self.info_received: asyncio.Queue[inv.InfoReceived] = asyncio.Queue()
        for fut in (self.answered, self.confirmed, self.ended):
            fut.add_done_callback(_consume)

    def __repr__(self) -> str:
        return f"<AsyncCall {self.call!r}>"

    # ---- properties
    @property
    def call_id(self) -> str:
        return self.call.call_id

    @property
    def state(self) -> CallState:
        return self.call.state

    @property
    def remote_sdp(self) -> bytes | None:
        return self.call.remote_sdp

    @property
    def offer(self) -> bytes | None:
        """UAS: the INVITE's body."""
        return self.call.invite.body if self.call.invite is not None else None

    # ---- actions
    def ring(self, sdp: bytes | None = None) -> None:
        self.call.ringing(self.ua.now(), sdp)
        self.ua._flush()

    async def answer(self, sdp: bytes, *, wait_ack: bool = False, timeout: float = 40.0) -> None:
        """Send 200 OK; with ``wait_ack`` wait until the ACK arrives.

        Raises :class:`CallError` when the call is already over (e.g. the caller cancelled).
        """
        if self.call.state not in (CallState.INCOMING, CallState.EARLY):
            raise CallError(self.call.final_status or 487, f"call is {self.call.state.value}")
        self.call.answer(sdp, self.ua.now())
        self.ua._flush()
        if wait_ack:
            await asyncio.wait_for(asyncio.shield(self.confirmed), timeout)

    def reject(self, status: int = 486, reason: str | None = None) -> None:
        self.call.reject(self.ua.now(), status, reason)
        self.ua._flush()

    async def bye(self, timeout: float = 40.0) -> str:
        """Hang up (BYE, CANCEL or 603 as the state requires) and wait for the end."""
        self.call.hangup(self.ua.now())
        self.ua._flush()
        return await self.wait_ended(timeout)

    hangup = bye

    async def cancel(self, timeout: float = 40.0) -> str:
        self.call.cancel(self.ua.now())
        self.ua._flush()
        return await self.wait_ended(timeout)

    async def reinvite(self, sdp: bytes | None, timeout: float = 40.0) -> bytes | None:
        """Send a re-INVITE; returns the answer (raises CallError on failure). ``sdp`` None:
        no offer; returns the peer's offer from the 2xx, answered in the ACK through
        ``UAConfig.offer_handler`` (RFC 3261 §14.1)."""
        self.call.reinvite(sdp, self.ua.now())
        self.ua._flush()
        return await self._wait_update(timeout)

    async def update(self, sdp: bytes, timeout: float = 40.0) -> bytes | None:
        """Send an UPDATE (RFC 3311); returns the answer."""
        self.call.update(sdp, self.ua.now())
        self.ua._flush()
        return await self._wait_update(timeout)

    def info(self, body: bytes, content_type: str) -> None:
        self.call.info(body, content_type, self.ua.now())
        self.ua._flush()

    async def _wait_update(self, timeout: float) -> bytes | None:
        async def wait() -> bytes | None:
            while True:
                ev = await self._updates.get()
                if isinstance(ev, inv.CallUpdated) and ev.local and ev.method != "ACK":
                    return ev.sdp
                if isinstance(ev, inv.CallUpdateFailed):
                    raise CallError(ev.status, ev.reason)
                if isinstance(ev, inv.CallEnded):
                    raise CallError(481, "call ended")

        return await asyncio.wait_for(wait(), timeout)

    async def wait_answered(self, timeout: float | None = None) -> bytes | None:
        return await asyncio.wait_for(asyncio.shield(self.answered), timeout)

    async def wait_confirmed(self, timeout: float | None = None) -> bytes | None:
        return await asyncio.wait_for(asyncio.shield(self.confirmed), timeout)

    async def wait_ended(self, timeout: float | None = None) -> str:
        return await asyncio.wait_for(asyncio.shield(self.ended), timeout)

    # ---- from the core
    def _event(self, ev: Any) -> None:
        self.events.append(ev)
        if isinstance(ev, inv.CallRinging):
            self.ringing.set()
        elif isinstance(ev, inv.CallAnswered):
            _set(self.answered, ev.sdp)
            _set(self.confirmed, ev.sdp)
        elif isinstance(ev, inv.CallConfirmed):
            _set(self.confirmed, ev.sdp)
        elif isinstance(ev, inv.CallFailed):
            _fail(self.answered, CallError(ev.status, ev.reason))
            _fail(self.confirmed, CallError(ev.status, ev.reason))
            _set(self.ended, "failed")
        elif isinstance(ev, inv.CallEnded):
            status = self.call.final_status or 487
            _fail(self.answered, CallError(status, ev.reason))
            _fail(self.confirmed, CallError(status, ev.reason))
            _set(self.ended, ev.reason)
            self._updates.put_nowait(ev)
        elif isinstance(ev, (inv.CallUpdated, inv.CallUpdateFailed)):
            self._updates.put_nowait(ev)
        elif isinstance(ev, inv.InfoReceived):
            self.info_received.put_nowait(ev)


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _set(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


IncomingHandler = Callable[[AsyncCall], Awaitable[None] | None]


class AsyncUserAgent:
    """A :class:`UserAgent` on real sockets."""

    def __init__(
        self,
        config: UAConfig,
        *,
        tls: TlsConfig | None = None,
        lookup: DnsLookup | None = None,
        keepalive_interval: float | None = None,
        udp_register_expires: int | None = NAT_UDP_REGISTER_EXPIRES,
        binding_check_interval: float | None = BINDING_CHECK_INTERVAL,
        udp_keepalive: str = "auto",
    ) -> None:
        if udp_keepalive not in ("auto", "crlf", "stun"):
            raise ValueError("udp_keepalive must be 'auto', 'crlf' or 'stun'")
        self.config = config
        self.ua = UserAgent(config)
        self.tls = tls
        self.lookup = lookup
        self.keepalive_interval = keepalive_interval
        #: UDP keepalives toward the registrar: "crlf" (CRLFCRLF, no answer: keeps the NAT
        #: binding only), "stun" (RFC 5626 §4.4.2 Binding requests: a missing response or a
        #: new mapped address fails the flow -> register again), "auto" (STUN when the
        #: registrar requires outbound, else CRLF)
        self.udp_keepalive = udp_keepalive
        #: the running keepalive of the flow to the registrar (None before registering)
        self.keepalive: KeepaliveHandle | None = None
        #: UDP (usually NATed): ask for at most this registration lifetime, so a registrar
        #: that lost our binding gets it back by the next refresh (None: no cap).
        self.udp_register_expires = udp_register_expires
        #: UDP: every this many seconds check through the proxy that our AOR still reaches us
        #: (None: never). See :meth:`_check_binding`.
        self.binding_check_interval = binding_check_interval
        self._binding_checker: asyncio.Task[None] | None = None
        self._probes: dict[str, asyncio.Event] = {}  # Call-ID of AOR checks -> came back
        self.transport: TransportLayer | None = None
        #: Called with each incoming call (sync or async); see also :attr:`incoming`.
        self.on_incoming: IncomingHandler | None = None
        self.on_event: Callable[[Any], None] | None = None
        self.incoming: asyncio.Queue[AsyncCall] = asyncio.Queue()
        self.events: list[Any] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reg_waiters: list[asyncio.Future[Any]] = []
        self._options_waiters: list[asyncio.Future[OptionsResult]] = []
        #: RFC 3263 targets per (transport, host, port) of a next hop, in preference order.
        self._targets: dict[tuple[str, str, int], list[Target]] = {}
        #: targets that did not answer (§4.3), skipped until the loop time stored here
        self._dead: dict[Target, float] = {}
        #: branch -> (transaction, target) of requests sent where another target exists
        self._awaiting: dict[str, tuple[Any, Target]] = {}
        #: branch -> (transaction, target) of INVITEs sent: their ACK (3xx-6xx) and CANCEL
        #: go to the same target
        self._invite_hops: dict[str, tuple[ClientTransaction, Target]] = {}
        self._hops_ended: dict[str, float] = {}  # branch -> when its transaction was over
        #: TCP/TLS connection id -> client transactions whose request went out on it
        self._sent_on: dict[int, set[ClientTransaction]] = {}
        #: how long a target that failed is skipped in favour of the next one
        self.dead_target_time = DEAD_TARGET_TIME
        self._failovers = 0  # targets given up on so far
        self.ua.target_count = self._target_count  # RFC 3263 §4.3 failover in the core
        self._keepalive_started = False
        self._keepalive_starting = False
        self._closed = False
        self._wildcard = False  # listening on every address (see start / address_changed)
        self._ipv6 = False  # listening on :: (IPv6, dual-stack)
        self.registered: Registered | None = None

    # ================================================================== lifecycle

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def start(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        transports: tuple[str, ...] | None = None,
        tls_port: int | None = None,
    ) -> None:
        """Open the sockets and adopt their address as ours (Via/Contact)."""
        host = host or self.config.local_host
        port = self.config.local_port if port is None else port
        t = self.config.transport.upper()
        can_serve_tls = self.tls is not None and self.tls.certfile is not None
        if transports is not None:
            wanted = transports
        elif t == "TLS" and can_serve_tls:
            wanted = ("UDP", "TCP", "TLS")
        else:
            # Without a certificate we are a TLS client only: the proxy reaches us over the
            # connection we opened (Kamailio treats TLS flows as NATed and reuses them).
            wanted = ("UDP", "TCP")
        self.transport = TransportLayer(
            on_message=self._on_message,
            on_parse_error=self._on_parse_error,
            on_connection_lost=self._on_connection_lost,
            tls=self.tls,
        )
        await self.transport.start(host, port, wanted, tls_port=tls_port)
        try:
            local_host, local_port = self.transport.local_address(t)
        except LookupError:  # a TLS client without a certificate of its own: no TLS listener,
            # the registrar reaches us over our outgoing connection (RFC 3261 §18, RFC 5923)
            local_host, local_port = self.transport.local_address("TCP")
        #: listening on every address: ours is the one routed toward the proxy, and follows
        #: address changes (:meth:`address_changed`); a specific bind stays as it is
        self._wildcard = local_host in ("0.0.0.0", "::")
        #: ``::`` listens on IPv6 and (dual-stack, the Linux default) IPv4 too
        self._ipv6 = local_host == "::"
        if self._wildcard:
            local_host = await self._local_host_toward_proxy() or await self._route_source()
        self.config.local_host = local_host
        self.config.local_port = local_port
        log.info("user agent %s listening at %s:%d", self.config.aor, local_host, local_port)

    async def _local_host_toward_proxy(self) -> str | None:
        """With a wildcard bind, the address the kernel routes toward our proxy/registrar."""
        assert self.transport is not None
        proxy = self.config.outbound_proxy or self.config.registrar
        if not proxy:
            return None
        try:
            target = await self._target(peer_for_uri(SipURI.parse(proxy), self.config.transport))
            listening = "UDP" if target.transport == "TLS" else target.transport
            self.transport.local_address_for(  # LookupError: not listening on it
                Target(listening, target.host, target.ip, target.port, target.domain)
            )
        except (OSError, LocateError, LookupError, ValueError) as exc:
            log.info("no local address toward %s: %r", proxy, exc)
            return None
        host = source_address_toward(target.ip)
        if host is None or (not usable_local_host(host) and usable_local_host(target.ip)):
            log.info("no route toward %s (%s)", proxy, target.ip)
            return None  # (a loopback source toward a proxy elsewhere: no route at all)
        return host

    async def _route_source(self) -> str:
        """Our address without a route toward a proxy (none configured, or no route to it):
        a usable source the kernel picks toward one of :data:`sip.ua.ROUTE_PROBES` (a UDP
        connect() sends nothing), else an interface's IPv4 address
        (:func:`interface_addresses`), else an address of ours the host name resolves to,
        else 127.0.0.1 (see :func:`sip.ua.choose_local_host`). Listening on ``::``, IPv6
        sources (:data:`sip.ua.ROUTE_PROBES_V6`, global IPv6 addresses of the interfaces)
        follow the IPv4 ones, so an IPv6-only machine advertises its IPv6 address."""
        ipv6 = self._ipv6
        probes = [*ROUTE_PROBES, *(ROUTE_PROBES_V6 if ipv6 else ())]
        interfaces = interface_addresses() + (interface_addresses(socket.AF_INET6) if ipv6 else [])
        hosts = [h for h in await _host_addresses() if ipv6 or ":" not in h]
        return choose_local_host(
            [*(source_address_toward(ip) for ip in probes), *interfaces, *hosts]
        )

    async def _current_local_host(self) -> str | None:
        """Where our address is now: the source toward the proxy/registrar when one is
        configured (None while there is no route to it), else :meth:`_route_source` (None
        when it finds nothing but loopback)."""
        if self.config.outbound_proxy or self.config.registrar:
            return await self._local_host_toward_proxy()
        host = await self._route_source()
        return host if usable_local_host(host) else None

    async def address_changed(
        self, *, refresh_dialogs: bool = False, timeout: float | None = 10.0
    ) -> bool:
        """The machine's addresses changed (e.g. an ``ice.netmonitor`` batch): find our
        address again and, when it is not the one in our Via/Contact any more, move there.

        True when it moved: the core has taken the new address (Via, Contact, registrations
        re-sent with the old binding removed, dialogs' Contact for their next target refresh:
        :meth:`sip.ua.UserAgent.change_local_address`); TCP/TLS connections from the old
        address are closed (RFC 5626 §4.4.1: a flow that cannot work, its keepalive stopped
        without the flow-failure re-registration, which the move already does) and
        targets marked dead while there was no network are forgiven (RFC 3263 §4.3). With
        registrations, waits up to ``timeout`` seconds for their outcome (the new Contact,
        maybe rewritten to the public address the registrar saw, is then :attr:`contact`).
        False when the address is the same, when we listen on a specific address (it is
        not ours to change), or while there is no route at all (a later change decides).
        ``refresh_dialogs``: also send confirmed calls an UPDATE target refresh (RFC 3311
        §5.1) once registered again -- not needed when the application re-INVITEs anyway."""
        if self.transport is None or self._closed or not self._wildcard:
            return False
        host = await self._current_local_host()
        old = self.config.local_host
        if host is None or host == old or self._closed:
            return False
        log.info("local address changed: %s -> %s", old, host)
        keepalive, self.keepalive = self.keepalive, None
        if keepalive is not None:
            keepalive.cancel()  # its watcher sees it replaced (see _watch_flow)
        self._keepalive_started = False
        self._dead.clear()
        self.transport.forget_local_host(old)
        waiter: asyncio.Future[Any] | None = None
        if self.ua.registrations and timeout:
            waiter = asyncio.get_running_loop().create_future()
            self._reg_waiters.append(waiter)
        self.ua.change_local_address(host, self.now(), refresh_dialogs=refresh_dialogs)
        self._flush()
        if waiter is not None:
            if not any(reg.recovering for reg in self.ua.registrations):
                self._reg_waiters.remove(waiter)  # nothing was sent (none wanted)
            else:
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), timeout)
                except TimeoutError:
                    log.info("no answer to the REGISTER from %s yet", host)
                finally:
                    if waiter in self._reg_waiters:
                        self._reg_waiters.remove(waiter)
                if not self._keepalive_started and self.registered is not None:
                    await self._start_keepalive()
        return True

    @property
    def contact(self) -> str:
        """Our Contact URI now (after NAT learning, the public address the registrar saw)."""
        return self.ua.contact_uri()

    async def close(self, timeout: float = 5.0) -> None:
        """Hang up, unregister, wait (briefly) for the transactions, close sockets."""
        if self._closed:
            return
        if self.transport is not None:
            self.ua.close(self.now())
            self._flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._until_idle(), timeout)
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self.transport is not None:
            await self.transport.close()

    async def _until_idle(self) -> None:
        while not self.ua.idle:
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> AsyncUserAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ================================================================== API

    async def register(self, expires: int | None = None, timeout: float = 40.0) -> Registered:
        """Register (digest auth, 423 and NAT contact rewriting handled by the core).

        RFC 3263 §4.3: a REGISTER that timed out at a target that never answered is sent again
        to the next target of the registrar (once per target).
        """
        if expires is None and self.config.transport.lower() == "udp":
            expires = udp_expires(self.config.register_expires, self.udp_register_expires)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _ in range(MAX_FAILOVERS + 1):
            fut: asyncio.Future[Any] = loop.create_future()
            self._reg_waiters.append(fut)
            failovers = self._failovers
            self.ua.register(self.now(), expires=expires)
            self._flush()
            result = await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            if not (
                isinstance(result, RegistrationFailed)
                and result.status == 408
                and self._failovers > failovers
            ):
                break
            log.info("REGISTER timed out at a target; trying the next one")
        if isinstance(result, RegistrationFailed):
            raise RegistrationError(result.status, result.reason)
        if not isinstance(result, Registered):  # unregistered meanwhile (closing)
            raise RegistrationError(487, "unregistered while registering")
        await self._start_keepalive()
        return result

    async def unregister(self, timeout: float = 40.0) -> None:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._reg_waiters.append(fut)
        self.ua.unregister(self.now())
        self._flush()
        if not any(r.state.value == "unregistering" for r in self.ua.registrations):
            self._reg_waiters.remove(fut)
            return
        await asyncio.wait_for(fut, timeout)

    async def invite(
        self,
        target: str,
        sdp: bytes,
        *,
        content_type: str = SDP,
        timeout: float | None = 120.0,
        headers: list[tuple[str, str]] | None = None,
    ) -> AsyncCall:
        """Call ``target`` and wait for the answer; raises :class:`CallError` on failure."""
        call = self.start_call(target, sdp, content_type=content_type, headers=headers)
        try:
            await asyncio.wait_for(asyncio.shield(call.answered), timeout)
        except TimeoutError:
            call.call.hangup(self.now())
            self._flush()
            raise
        return call

    def start_call(
        self,
        target: str,
        sdp: bytes,
        *,
        content_type: str = SDP,
        headers: list[tuple[str, str]] | None = None,
    ) -> AsyncCall:
        """Start a call without waiting (use ``call.wait_answered()``)."""
        core = self.ua.invite(target, sdp, self.now(), content_type=content_type, headers=headers)
        call = AsyncCall(self, core)
        self._flush()
        return call

    async def options(self, target: str, timeout: float = 40.0) -> OptionsResult:
        fut: asyncio.Future[OptionsResult] = asyncio.get_running_loop().create_future()
        self._options_waiters.append(fut)
        self.ua.options(target, self.now())
        self._flush()
        return await asyncio.wait_for(fut, timeout)

    @property
    def calls(self) -> list[AsyncCall]:
        out = []
        for c in self.ua.calls:
            if isinstance(c.user_data, AsyncCall):
                out.append(c.user_data)
        return out

    # ================================================================== plumbing

    def _on_message(self, message: Request | Response, source: Source) -> None:
        if self._closed:
            return
        if isinstance(message, Response) and self._awaiting and message.status >= 200:
            with contextlib.suppress(ValueError):
                entry = self._awaiting.pop(message.top_via.branch or "", None)
                if entry is not None and message.status == 503:
                    self._target_failed(entry[1])  # RFC 3263 §4.3: unavailable, next one
        elif isinstance(message, Request) and message.method == "OPTIONS" and self._probes:
            with contextlib.suppress(ValueError):
                probe = self._probes.get(message.call_id)
                if probe is not None:
                    probe.set()  # our AOR check came back to us: the binding is there
        peer = Peer(source.transport.lower(), source.remote[0], source.remote[1], flow=source)
        self.ua.receive(message, peer, self.now())
        self._flush()

    def _on_connection_lost(self, source: Source) -> None:
        """RFC 3261 §17.1.4/§18.4: a request sent on a connection that closed before any
        response came (e.g. the proxy went down) failed in transport: its transaction learns
        it now, rather than at Timer B/F. A request that got a provisional response may still
        be answered over a new connection (§18.2.2) and is left alone."""
        if source.connection_id is None:
            return
        txs = self._sent_on.pop(source.connection_id, set())
        failed = [tx for tx in txs if tx.state in (TxState.CALLING, TxState.TRYING)]
        if not failed or self._closed:
            return
        for tx in failed:
            log.info(
                "%s %s: its connection closed before any response",
                tx.request.method,
                tx.request.uri,
            )
            self.ua.transport_error(tx, self.now())
        self._flush()

    def _on_parse_error(self, data: bytes, source: Source, exc: Exception) -> None:
        if self._closed:
            return
        peer = Peer(source.transport.lower(), source.remote[0], source.remote[1], flow=source)
        self.ua.receive_unparseable(data, peer, self.now())
        self._flush()

    async def _watch_flow(self, handle: KeepaliveHandle) -> None:
        """RFC 5626 §4.4.1: when the flow to the registrar dies (no pong, or the connection
        closed), register again at once over a new flow so incoming calls still reach us."""
        await handle.failed.wait()
        if self._closed or self.keepalive is not handle:
            return  # dropped on purpose (address_changed registers from the new address)
        log.warning("flow to the registrar failed; registering again")
        self._keepalive_started = False
        await self._register_again()

    async def _register_again(self) -> None:
        """Register every binding again now (RFC 5626 §4.5, in the core): a REGISTER goes out
        at once over a new flow; if it fails, the core retries after a backoff growing with
        each consecutive failure (``UAConfig.flow_backoff``), and the keepalive starts again
        on the new flow when the registrar accepts (see :meth:`_deliver`)."""
        if self._closed or not self.ua.registrations:
            return
        self.ua.flow_failed(self.now())
        self._flush()

    async def _watch_binding(self, interval: float) -> None:
        """UDP has no pong (RFC 5626 §4.4.1 CRLF keepalives go unanswered, and Kamailio drops
        them), so a registrar that restarted and lost its bindings goes unnoticed until the
        next refresh. Every ``interval`` seconds send an OPTIONS to our own AOR through the
        proxy: while the binding exists the proxy forwards it back to us; a 404/480 means the
        registrar no longer knows us, a timeout that the proxy is (or was) down. Either way:
        register again at once."""
        while not self._closed:
            await asyncio.sleep(interval)
            if self._closed or self.registered is None or self.ua.recovering:
                continue
            status = await self._check_binding()
            if status in BINDING_LOST_STATUSES and not self._closed and self.ua.registrations:
                log.warning("our AOR no longer reaches us (%d); registering again", status)
                await self._register_again()

    def _maybe_binding_lost(self, target: str, status: int) -> None:
        """A request to our own AOR through the proxy answered 404/480 while we believe we are
        registered: the registrar lost our binding; register again."""
        if status not in (404, 480) or self.registered is None or self._closed:
            return
        try:
            ours = SipURI.parse(self.config.aor)
            uri = SipURI.parse(target)
        except ValueError:
            return
        if (uri.user, uri.host.lower()) != (ours.user, ours.host.lower()):
            return
        log.warning("a request to our own AOR got %d; registering again", status)
        self._spawn(self._register_again())

    async def _check_binding(self, timeout: float = 40.0, grace: float = 1.0) -> int:
        """One OPTIONS to our own AOR through the outbound proxy (auth as challenged);
        returns the final status (408 on timeout or transport failure). A 2xx that another
        device of the AOR gave (the proxy forked; our own copy did not arrive within ``grace``
        seconds) counts as 404: our binding is gone."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        req = self.ua._new_request("OPTIONS", self.config.aor)
        came_back = asyncio.Event()
        self._probes[req.call_id] = came_back
        try:
            status = await self._options_status(req, fut, timeout)
            if 200 <= status < 300 and not came_back.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(came_back.wait(), grace)
                if not came_back.is_set():
                    log.info("AOR check answered %d by another device, not by us", status)
                    return 404
            return status
        finally:
            self._probes.pop(req.call_id, None)

    async def _options_status(self, req: Request, fut: asyncio.Future[int], timeout: float) -> int:
        """Send the OPTIONS ``req`` (answering one challenge); its final status."""

        def final(resp: Response | None, _t: float) -> None:
            if resp is None:
                _set(fut, 408)
            elif resp.status >= 200:
                _set(fut, resp.status)

        def first(resp: Response | None, t: float) -> None:
            if resp is not None and resp.status in (401, 407):
                retry = self.ua.authorize(req, resp)
                if retry is not None:
                    self.ua.send_request(retry, final, t)
                    return
            final(resp, t)

        self.ua.send_request(req, first, self.now())
        self._flush()
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return 408

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        self.ua.handle_timer(self.now())
        self._flush()

    def _flush(self) -> None:
        """Send what the core queued, deliver its events, re-arm its timer."""
        if self._awaiting or self._invite_hops:
            self._check_unanswered()
        for out in self.ua.messages_to_send():
            self._spawn(self._send(out))
        while (ev := self.ua.next_event()) is not None:
            self._deliver(ev)
        if self._closed:
            return
        t = self.ua.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if t is not None:
            self._timer = asyncio.get_running_loop().call_at(t, self._on_timer)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _target(self, peer: Peer) -> Target:
        """The target to use now for ``peer``: the first one not known to have failed."""
        return (await self._ordered_targets(peer))[0]

    async def _ordered_targets(self, peer: Peer) -> list[Target]:
        """RFC 3263 §4.3: the located targets in order, those that recently failed last."""
        key = (peer.transport, peer.host, peer.port)
        targets = self._targets.get(key)
        if targets is None:
            transport = peer.transport.upper()
            if is_ip_address(peer.host):
                targets = [Target(transport, peer.host, peer.host.strip("[]"), peer.port)]
            else:
                # Peer always carries a port (the transport's default when the URI had none),
                # so the default port is taken as "no port": SRV is looked up (RFC 3263 §4.2).
                port = None if peer.port == DEFAULT_PORTS.get(peer.transport) else peer.port
                uri = SipURI(host=peer.host, port=port, params={"transport": peer.transport})
                targets = await locate(uri, lookup=self.lookup)
                if not targets:
                    raise LocateError(f"cannot locate {peer.host}")
            self._targets[key] = targets
        return order_targets(targets, self._dead, self.now())

    def _target_failed(self, target: Target) -> None:
        log.info(
            "target %s %s:%d failed; using the next one", target.transport, target.ip, target.port
        )
        self._dead[target] = self.now() + self.dead_target_time
        self._failovers += 1

    def _target_count(self, peer: Peer) -> int:
        """How many located targets ``peer`` has (the core fails over among them)."""
        return len(self._targets.get((peer.transport, peer.host, peer.port)) or ()) or 1

    def _check_unanswered(self) -> None:
        """A request that timed out without any response (RFC 3263 §4.3: the target did not
        answer) sends the next requests to the next target. (Also forgets the hops of
        INVITE transactions that are over.)"""
        now = self.now()
        for branch, (itx, _t) in list(self._invite_hops.items()):
            if itx.state is TxState.TERMINATED:
                # kept a little longer: its last ACK may still be waiting to be sent
                ended = self._hops_ended.setdefault(branch, now)
                if now - ended > 5.0:
                    del self._invite_hops[branch]
                    del self._hops_ended[branch]
        for branch, (tx, target) in list(self._awaiting.items()):
            if tx.state is TxState.TERMINATED:
                del self._awaiting[branch]
                self._target_failed(target)

    def _preauthorize(self, request: Request) -> None:
        """A REGISTER refresh carries the credentials its registrar asked for last time (RFC
        3261 §22.3), with the next nonce count: no 401 round trip on each refresh. The digest
        client only answers realms that challenged the same next hop (registrar or proxy)."""
        auth = self.ua._auth
        if request.method == "REGISTER" and auth is not None:
            auth.authorize_preemptively(request)

    async def _send_request(self, out: Outgoing) -> None:
        """Send a request to the first target that takes it (a refused or failed connection,
        or a send error, moves on to the next target at once). The ACK of a 3xx-6xx and a
        CANCEL go where their INVITE went (RFC 3261 §17.1.1.3, §9.1), whatever failed since."""
        assert self.transport is not None
        transport = self.transport
        msg = out.message
        assert isinstance(msg, Request)
        branch = ""
        with contextlib.suppress(ValueError):
            branch = msg.top_via.branch or ""
        if msg.method in ("ACK", "CANCEL") and branch in self._invite_hops:
            self._note_flow(out, await transport.send(msg, self._invite_hops[branch][1]))
            return
        targets = await self._ordered_targets(out.peer)
        if len(targets) == 1:
            used = targets[0]
            self._note_flow(out, await transport.send(msg, used))
        else:

            async def attempt(target: Target) -> Target:
                self._note_flow(out, await transport.send(msg, target))
                return target

            def on_error(target: Target) -> None:
                self._target_failed(target)

            used = await try_targets(targets, attempt, on_failure=on_error)
            if out.transaction is not None and msg.method not in ("ACK", "CANCEL"):
                self._awaiting[branch] = (out.transaction, used)
        if msg.method == "INVITE" and isinstance(out.transaction, ClientTransaction):
            self._invite_hops[branch] = (out.transaction, used)

    def _note_flow(self, out: Outgoing, flow: Source) -> None:
        """Remember the connection a client transaction's request went out on."""
        tx = out.transaction
        if flow.connection_id is None or not isinstance(tx, ClientTransaction):
            return
        pending = self._sent_on.setdefault(flow.connection_id, set())
        pending -= {t for t in pending if t.state is TxState.TERMINATED}
        pending.add(tx)

    async def _send(self, out: Outgoing) -> None:
        assert self.transport is not None
        msg = out.message
        try:
            if isinstance(msg, Response):
                flow = out.peer.flow if isinstance(out.peer.flow, Source) else None
                await self.transport.send_response(msg, flow)
            else:
                self._preauthorize(msg)
                await self._send_request(out)
        except (OSError, LocateError, ValueError) as exc:
            log.info("send of %s to %s failed: %r", _first_line(msg), out.peer, exc)
            if out.transaction is not None and not self._closed:
                self.ua.transport_error(out.transaction, self.now())
                self._flush()

    def _keepalive_interval_for(self, target: Target) -> float | None:
        """Our keepalive interval, shortened to the registrar's Flow-Timer if it gave one
        (RFC 5626 §4.4: keepalives at least that often; the schedule draws each wait between
        80 % and 100 % of the interval, as §4.4 asks)."""
        flow_timer = self.registered.flow_timer if self.registered is not None else None
        if flow_timer is None:
            return self.keepalive_interval
        assert self.transport is not None
        default = (
            self.transport.udp_keepalive_interval
            if target.transport == "UDP"
            else self.transport.stream_keepalive_interval
        )
        return min(self.keepalive_interval or default, float(flow_timer))

    def _use_stun_keepalive(self) -> bool:
        """RFC 5626 §4.4.2: STUN keepalives over UDP when asked to, or ("auto") when the
        registrar's 2xx said ``Require: outbound`` (the edge proxy then answers STUN)."""
        if self.udp_keepalive == "stun":
            return True
        return (
            self.udp_keepalive == "auto"
            and self.registered is not None
            and self.registered.outbound
        )

    async def _start_keepalive(self) -> None:
        """Keep the NAT binding / connection to the registrar alive (RFC 5626 §4.4.1)."""
        if self._keepalive_started or self._keepalive_starting or self.transport is None:
            return
        proxy = self.config.outbound_proxy or self.config.registrar
        if not proxy:
            return
        self._keepalive_starting = True
        try:
            target = await self._target(peer_for_uri(SipURI.parse(proxy), self.config.transport))
            stun = target.transport == "UDP" and self._use_stun_keepalive()
            if self.keepalive is not None:
                self.keepalive.cancel()
            handle = await self.transport.start_keepalive(
                target, self._keepalive_interval_for(target), stun=stun
            )
            self.keepalive = handle
            self._keepalive_started = True
            if target.transport != "UDP" or stun:
                self._spawn(self._watch_flow(handle))
            if (
                target.transport == "UDP"
                and self.binding_check_interval
                and self._binding_checker is None
            ):
                self._binding_checker = asyncio.ensure_future(
                    self._watch_binding(self.binding_check_interval)
                )
                self._tasks.add(self._binding_checker)
                self._binding_checker.add_done_callback(self._tasks.discard)
        except (OSError, LocateError, ValueError) as exc:
            log.info("keepalive not started: %r", exc)
        finally:
            self._keepalive_starting = False

    def _deliver(self, ev: Any) -> None:
        self.events.append(ev)
        call = getattr(ev, "call", None)
        if isinstance(ev, inv.IncomingCall):
            acall = AsyncCall(self, ev.call)
            acall._event(ev)
            if self.on_incoming is not None:
                result = self.on_incoming(acall)
                if result is not None:
                    self._spawn(result)
            # Every incoming call is queued too, unless a synchronous handler already ended
            # it (e.g. rejected it as busy): nobody should pick that one up later.
            if ev.call.state is not CallState.TERMINATED:
                self.incoming.put_nowait(acall)
        elif isinstance(call, Call) and isinstance(call.user_data, AsyncCall):
            call.user_data._event(ev)
        elif isinstance(ev, (Registered, RegistrationFailed, Unregistered)):
            if isinstance(ev, Registered):
                self.registered = ev
                if not self._keepalive_started and not self._reg_waiters:
                    # registered again after a flow failure (or by a retry): keep the new
                    # flow alive and watch it (register() starts it itself otherwise)
                    self._spawn(self._start_keepalive())
            elif isinstance(ev, Unregistered):
                self.registered = None
            waiters, self._reg_waiters = self._reg_waiters, []
            for fut in waiters:
                _set(fut, ev)
        elif isinstance(ev, RegistrationExpired):
            self.registered = None
        elif isinstance(ev, OptionsResult):
            if self._options_waiters:
                _set(self._options_waiters.pop(0), ev)
            self._maybe_binding_lost(ev.target, ev.status)
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:
                log.exception("on_event callback failed")


def source_address_toward(ip: str) -> str | None:
    """The local address the kernel would send from toward ``ip`` (a UDP connect() sends
    nothing), or None when there is no route."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((ip.strip("[]"), 9))
            return str(sock.getsockname()[0]).split("%", 1)[0]
        except OSError:
            return None


#: Linux ioctl reading an interface's (primary) IPv4 address (netdevice(7))
_SIOCGIFADDR = 0x8915


#: /proc/net/if_inet6 flags of addresses not to advertise (if_addr.h: IFA_F_DADFAILED,
#: IFA_F_DEPRECATED, IFA_F_TENTATIVE)
_IPV6_UNUSABLE_FLAGS = 0x08 | 0x20 | 0x40
_PROC_IF_INET6 = "/proc/net/if_inet6"


def interface_addresses(family: int = socket.AF_INET) -> list[str]:
    """The primary IPv4 address of each interface, in interface order (Linux: SIOCGIFADDR;
    elsewhere, or without any, an empty list); with ``family=AF_INET6`` the global-scope
    IPv6 addresses (Linux: /proc/net/if_inet6; not tentative, deprecated or failed DAD,
    RFC 4862 §5.5.4). The ``sip`` package does not enumerate addresses otherwise (rtnetlink
    lives in ``ice``, which ``sip`` does not import)."""
    if family == socket.AF_INET6:
        return _ipv6_interface_addresses()
    try:
        import fcntl
        import struct

        names = [name for _index, name in socket.if_nameindex()]
    except (ImportError, OSError):
        return []
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            try:
                packed = fcntl.ioctl(
                    sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15])
                )
            except OSError:  # no IPv4 address there
                continue
            found.append(socket.inet_ntoa(packed[20:24]))
    return found


def _ipv6_interface_addresses(path: str = _PROC_IF_INET6) -> list[str]:
    """Global IPv6 addresses from ``path`` (lines: address in 32 hex digits, interface index,
    prefix length, scope, flags, name; all hex), usable ones only."""
    try:
        with open(path, encoding="ascii") as lines:
            rows = [line.split() for line in lines]
    except (OSError, UnicodeDecodeError):
        return []
    found = []
    for row in rows:
        try:
            address = ipaddress.IPv6Address(bytes.fromhex(row[0]))
            scope, flags = int(row[3], 16), int(row[4], 16)
        except (IndexError, ValueError):
            continue
        if scope == 0 and not flags & _IPV6_UNUSABLE_FLAGS and usable_local_host(str(address)):
            found.append(str(address))
    return found


async def _host_addresses() -> list[str]:
    """The addresses of this machine its host name resolves to (/etc/hosts, DNS), IPv4
    first."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_DGRAM), 2.0
        )
    except (OSError, TimeoutError, UnicodeError):
        return []
    found = [str(info[4][0]).split("%", 1)[0] for info in infos]
    ours = [a for a in dict.fromkeys(found) if _is_local(a)]
    return sorted(ours, key=lambda a: ":" in a)


def _is_local(ip: str) -> bool:
    """``ip`` is an address of this machine (of this network namespace): a socket binds to
    it (the host name may resolve to an address the machine no longer has)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((ip, 0))
        except OSError:
            return False
    return True


def order_targets(targets: list[Target], dead: dict[Target, float], now: float) -> list[Target]:
    """``targets`` in their RFC 3263 order, except that those marked dead until a time still
    to come go last (they are still tried when every other one fails)."""
    alive = [t for t in targets if dead.get(t, 0.0) <= now]
    return alive + [t for t in targets if dead.get(t, 0.0) > now]


def udp_expires(requested: int, cap: int | None) -> int:
    """The lifetime to ask for over UDP: ``requested`` capped at ``cap`` (None: no cap)."""
    if cap is None or cap <= 0:
        return requested
    return min(requested, cap)


def _first_line(msg: Request | Response) -> str:
    if isinstance(msg, Request):
        return f"{msg.method} {msg.uri}"
    return f"{msg.status} {msg.reason}"
