"""The asyncio shell of the ICE agent: sockets, TURN allocations, timers and one datagram
transport per component.

:class:`IceConnection` ties together

* an :class:`ice.gather.AsyncGatherer`, which owns the UDP sockets (one per local address and
  component) and the TURN allocations made from them;
* an :class:`ice.agent.Agent` (sans-I/O, RFC 8445), fed every STUN packet that the gatherer
  does not consume, whose datagrams go out of the right socket - or through the right TURN
  allocation, wrapped in Send indications / ChannelData by :class:`ice.turn.TurnClient` - and
  whose timer runs with ``loop.call_at`` (a timer already due runs at once; while the checks
  run, a :class:`PreciseWake` - a timerfd the loop watches, then a few turns of polling -
  wakes the loop on time, since the selector sleeps in whole milliseconds and a sleeping CPU
  wakes slowly: see :data:`PRECISE_TIMERS`);
* a :class:`ComponentTransport` per component: ``send(data)`` and ``on_receive`` / ``recv()``
  hide whether the selected pair is direct or relayed.

Demultiplexing on the shared port follows RFC 7983 §7: first byte 0-3 is STUN (to the
gatherer, then the agent; dropped if neither wants it), 64-79 from a TURN server is TURN
ChannelData (the gatherer), 128-191 RTP/RTCP, and anything else is application data too
(DTLS/ZRTP would be, in a later version).  Application data is delivered only if it comes
from the selected pair's remote address on the selected pair's socket or allocation, or -
before the component has a selected pair - from a valid pair's (RFC 8445 §12.1: data may
flow on any valid pair before nomination); anything else is dropped (it keeps strangers who
learnt the port out).

Typical use (the signalling in between is the caller's - SDP offer/answer via ``ice.sdp``)::

    conn = IceConnection(controlling=True, gather=GatherConfig(stun_servers=[...]))
    candidates = await conn.gather()                  # or trickle with on_candidate=...
    ...send conn.local_ufrag, conn.local_pwd, candidates; receive the peer's...
    conn.set_remote(ufrag, pwd, remote_candidates)
    conn.start(); await conn.usable()                  # a valid pair: data may flow
    await conn.connect(timeout=10)                    # the nominated pair is usable
    t = conn.transport(1); t.on_receive = handle; t.send(b"...")
    await conn.close()                                # releases TURN allocations

:func:`connect` does gather + set_remote + connect for two ends that already exchanged
parameters by other means (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import ipaddress
import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ice.agent import (
    PACING_NOT_NEGOTIATED,
    Agent,
    AgentEvent,
    AgentState,
    AgentStats,
    Completed,
    ConsentLost,
    Failed,
    NotNegotiated,
    PairNominated,
)
from ice.candidate import Candidate, CandidateType, ranked_for_role
from ice.gather import (
    AsyncGatherer,
    CandidateGathered,
    GatherConfig,
    GatheredCandidate,
    GatherEvent,
    RelayLost,
)
from ice.interfaces import DEFAULT_EXCLUDE, LocalAddress
from ice.nat import MappingBehavior
from ice.stun import Address

PRECISE_TIMERS = True
"""epoll (and so the asyncio loop) sleeps in whole milliseconds, rounded up: a ``call_at`` runs
up to about 1 ms late.  While the connectivity checks run (their pacing and the nomination
are what the connect time is made of), the agent's timer is a Linux ``timerfd`` watched by
the loop (:class:`PreciseWake`), armed :data:`PRECISE_LEAD` early, after which the loop polls
for the rest: it runs to a few microseconds.  False (or no timerfd: not Linux) uses
``call_at``."""


PRECISE_LEAD = 0.0003
"""A :class:`PreciseWake` wakes the loop this many seconds early and polls for the rest
(about one loop turn - an ``epoll_wait`` without a timeout - every few microseconds), because
waking a sleeping CPU is slower than the precision wanted: 40-200 us on a virtual machine,
when the 5 ms floor between checks (RFC 8445 §14.2) is all the nomination waits for.  It
costs this much CPU time per paced check, only while the checks run."""


PRECISE_SPIN = 0.00002
"""The last few microseconds before a :class:`PreciseWake` time are waited out in place
(shorter than one turn of the loop, which would otherwise make it that much late)."""


PRECISE_HORIZON = 0.1
"""Only timers due within this many seconds get a :class:`PreciseWake` (pacing, the 5 ms
floor, nomination); retransmissions and consent checks, 0.5 s and more away, do not need
sub-millisecond precision and stay on ``call_at`` (arming costs a system call)."""


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1  # what time.monotonic() and so loop.time() read (Linux)
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


class PreciseWake:
    """Calls ``callback`` on the loop at an absolute ``loop.time()``, to a few microseconds.

    A ``timerfd`` (Linux, ``CLOCK_MONOTONIC`` - the clock of ``time.monotonic()``, which the
    asyncio loop reads) is armed and registered with ``add_reader``: the kernel makes it
    readable when the time comes, which wakes the loop's selector at once (epoll's own
    timeout is in whole milliseconds, rounded up).  Waking a sleeping CPU still takes time -
    40-200 us on a virtual machine - so the timerfd goes off ``lead`` seconds early
    (:data:`PRECISE_LEAD`) and the loop then polls for the rest: the last stretch is spent
    running the loop's turns (epoll without a timeout: other callbacks and sockets are served
    meanwhile) until the time has come.  Never early; no thread.  :meth:`create` returns None
    where a timerfd is not available; use ``call_at`` then.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        callback: Callable[[], None],
        lead: float = 0.0,
    ):
        self._loop = loop
        self._fd = fd
        self._callback = callback
        self.lead = lead
        self.armed = False
        self._when = 0.0
        self._fd_armed = False  # the timerfd is set (and not read since it went off)
        self._polling: asyncio.Handle | None = None
        self._spec = _Itimerspec()  # reused: no allocation per call
        self._spec_ref = ctypes.byref(self._spec)
        self._settime = _LIBC.timerfd_settime

    @classmethod
    def create(
        cls,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[], None],
        lead: float | None = None,
    ) -> PreciseWake | None:
        """``lead``: how long before the time the loop starts polling (default
        :data:`PRECISE_LEAD`; 0: the timerfd alone)."""
        if _LIBC is None or not PRECISE_TIMERS:
            return None
        fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            return None
        wake = cls(loop, fd, callback, PRECISE_LEAD if lead is None else max(0.0, lead))
        try:
            loop.add_reader(fd, wake._fired)
        except (NotImplementedError, RuntimeError, ValueError):
            os.close(fd)
            return None
        return wake

    def set(self, when: float) -> bool:
        """Arm for ``when`` (``loop.time()`` seconds), replacing any earlier time; False if
        the kernel refused."""
        if self._polling is not None:
            self._polling.cancel()
            self._polling = None
        at = when - self.lead
        if self.lead > 0 and at <= self._loop.time():
            # within the lead already: poll from the next turn on (arming a timerfd for a
            # time gone by costs ~20 us on a VM: it expires inside the system call)
            if self._fd_armed:
                self._disarm()
            self._when = when
            self.armed = True
            self._polling = self._loop.call_soon(self._poll)
            return True
        sec = int(at)
        value = self._spec.it_value
        value.tv_sec = sec
        value.tv_nsec = min(999_999_999, max(1, int((at - sec) * 1e9)))  # 0 would disarm
        if self._settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) < 0:
            self.armed = self._fd_armed = False
            return False
        self._when = when
        self.armed = self._fd_armed = True
        return True

    def cancel(self) -> None:
        if self._polling is not None:
            self._polling.cancel()
            self._polling = None
        if self._fd_armed:
            self._disarm()
        self.armed = False

    def _disarm(self) -> None:
        value = self._spec.it_value
        value.tv_sec = value.tv_nsec = 0
        self._settime(self._fd, 0, self._spec_ref, None)  # also drops an unread expiry
        self._fd_armed = False

    def close(self) -> None:
        self.cancel()
        self._loop.remove_reader(self._fd)
        os.close(self._fd)

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return  # disarmed or re-armed meanwhile
        self._fd_armed = False
        if self.armed and self._polling is None:
            self._poll()

    def _poll(self) -> None:
        """Run the callback if its time has come, else look again at the loop's next turn."""
        self._polling = None
        if not self.armed:
            return
        left = self._when - self._loop.time()
        if left > PRECISE_SPIN:
            self._polling = self._loop.call_soon(self._poll)
            return
        if left > 0:
            # less than a loop turn to go: wait it out here rather than a turn too long
            end = self._when
            clock = self._loop.time
            while clock() < end:
                pass
        self.armed = False
        self._callback()


__all__ = [
    "PRECISE_HORIZON",
    "PRECISE_LEAD",
    "PRECISE_SPIN",
    "PRECISE_TIMERS",
    "ComponentTransport",
    "IceConnection",
    "IceError",
    "PreciseWake",
    "RelayVia",
    "connect",
]

logger = logging.getLogger("ice.aio")
trace = logging.getLogger("ice.trace")


class IceError(Exception):
    """ICE failed (no working pair, timeout) or the connection was closed."""


@dataclass(frozen=True, slots=True)
class RelayVia:
    """The agent's ``via`` for a relayed candidate: the allocation's relayed address.
    (Host and server-reflexive candidates use the socket's local address as ``via``.)"""

    relayed: Address


ReceiveHandler = Callable[[bytes], None]


class ComponentTransport:
    """A datagram transport for one component of the selected pair.

    Before selection it uses the best valid pair (RFC 8445 §12.1, see
    :meth:`ice.agent.Agent.send_target`).  ``send`` returns False (data dropped) while no
    pair is valid, after ICE failed, or after consent was lost (RFC 7675 §5.1).  Received
    data goes to ``on_receive`` if set, else to a queue read by :meth:`recv` (bounded: the
    oldest data is dropped when it is full).
    """

    def __init__(self, connection: IceConnection, component: int, queue_size: int = 256) -> None:
        self._connection = connection
        self.component = component
        self.on_receive: ReceiveHandler | None = None
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_size)
        self.packets_sent = 0
        self.packets_received = 0
        self.packets_dropped = 0

    def send(self, data: bytes) -> bool:
        """Send one datagram to the peer on the selected pair."""
        ok = self._connection._send_data(self.component, data)
        if ok:
            self.packets_sent += 1
        return ok

    async def recv(self) -> bytes:
        """The next datagram from the peer (when no ``on_receive`` is set)."""
        return await self._queue.get()

    @property
    def selected(self) -> tuple[Candidate, Candidate] | None:
        """``(local, remote)`` candidates of the selected pair."""
        pair = self._connection.agent.selected_pair(self.component)
        if pair is None:
            return None
        return pair.local.candidate, pair.remote

    @property
    def in_use(self) -> tuple[Candidate, Candidate] | None:
        """``(local, remote)`` candidates of the pair data goes on now: the selected pair,
        or before selection the valid pair :meth:`send` uses (RFC 8445 §12.1)."""
        pair = self._connection.agent.data_pair(self.component)
        if pair is None:
            return None
        return pair.local.candidate, pair.remote

    @property
    def relayed(self) -> bool:
        """True when the selected pair goes through a TURN relay (ours or the peer's)."""
        sel = self.selected
        return sel is not None and CandidateType.RELAYED in (sel[0].type, sel[1].type)

    def _deliver(self, data: bytes) -> None:
        self.packets_received += 1
        if self.on_receive is not None:
            self.on_receive(data)
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.packets_dropped += 1
        self._queue.put_nowait(data)


class IceConnection:
    """One ICE session (one data stream, ``components`` components) on the running loop.

    ``gather`` configures STUN/TURN servers; ``bind`` / ``addresses`` / ``include`` /
    ``exclude`` choose the local addresses (see :mod:`ice.interfaces`; ``bind="127.0.0.1"``
    gathers on loopback only); ``agent_options`` are passed to :class:`ice.agent.Agent`
    (``ta``, ``nomination_delay``, ``timeout`` ...).  ``on_candidate`` is called for every
    local candidate as it is gathered (trickle ICE, RFC 8838).

    ``gatherer``: a started :class:`ice.gather.AsyncGatherer` to use instead of gathering -
    a set from :class:`ice.pool.CandidatePool` (``pool.take(components)``): its sockets,
    candidates and TURN allocations become this connection's (:meth:`gather` returns its
    candidates at once) and are closed with it; ``gather``/``bind``/``addresses``/
    ``include``/``exclude``/``port`` are then not used.  It must serve at least
    ``components`` components (extra ones are dropped).
    """

    def __init__(
        self,
        controlling: bool,
        *,
        components: int = 1,
        gather: GatherConfig | None = None,
        bind: str | None = None,
        addresses: Sequence[LocalAddress | str] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        port: int = 0,
        agent_options: dict[str, Any] | None = None,
        on_candidate: Callable[[Candidate], None] | None = None,
        gatherer: AsyncGatherer | None = None,
    ) -> None:
        self.agent = Agent(controlling, components, **(agent_options or {}))
        self._adopted = gatherer is not None
        if gatherer is not None:
            if not gatherer.started or gatherer.closed:
                raise ValueError("the gatherer must be started and not closed")
            if gatherer.config.components < components:
                raise ValueError(
                    f"the gatherer serves {gatherer.config.components} components, not {components}"
                )
            self.gatherer = gatherer  # attached in start_gathering(), on the loop
        else:
            config = gather or GatherConfig()
            if config.components != components:
                config = dataclasses.replace(config, components=components)
            self.gatherer = AsyncGatherer(
                config,
                addresses=addresses,
                bind=bind,
                include=include,
                exclude=exclude,
                port=port,
                on_event=self._on_gather_event,
                on_datagram=self._on_socket_datagram,
                on_relayed=self._on_relayed_datagram,
            )
        self.on_candidate = on_candidate
        self._transports = {c: ComponentTransport(self, c) for c in range(1, components + 1)}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_at: float | None = None
        self._precise: PreciseWake | None = None
        self._connected: asyncio.Future[None] | None = None
        self._connect_waiters: list[asyncio.Future[None]] = []
        self._usable: asyncio.Future[None] | None = None
        self._usable_component: dict[int, asyncio.Future[None]] = {}
        self._gathering_started = False
        self._started_at: float | None = None
        self.connect_time: float | None = None
        self._closed = False
        self.events: deque[AgentEvent] = deque(maxlen=256)
        """The latest agent events (for diagnostics and tests)."""

    # -- parameters ---------------------------------------------------------------------------

    @property
    def local_ufrag(self) -> str:
        return self.agent.local_ufrag

    @property
    def local_pwd(self) -> str:
        return self.agent.local_pwd

    @property
    def pacing_ms(self) -> int:
        """Our Ta proposal in milliseconds, for ``a=ice-pacing`` (RFC 8839 §5.5); set it
        with ``agent_options={"pacing_ms": n}`` (or ``"ta"`` in seconds)."""
        return self.agent.pacing_ms

    @property
    def ta(self) -> float:
        """The Ta in use (seconds): after negotiation the larger of both proposals."""
        return self.agent.ta

    @property
    def controlling(self) -> bool:
        return self.agent.controlling

    @property
    def components(self) -> int:
        """The components in use: as created, fewer after :meth:`limit_components` (or
        ``agent.limit_components``).  Every wait (:meth:`usable`, :meth:`connected`) counts
        only these; :meth:`transport` of a dropped one stays valid but sends nothing."""
        return self.agent.components

    def limit_components(self, count: int) -> None:
        """Keep only components ``1..count`` - the answer accepted ``a=rtcp-mux`` (RFC 5761
        §5.1.3) after we offered RTCP candidates: the agent drops the others' candidates,
        pairs and checks (:meth:`ice.agent.Agent.limit_components`) and the gatherer their
        sockets and TURN allocations (:meth:`ice.gather.AsyncGatherer.limit_components`)."""
        self.agent.limit_components(count)
        if self._gathering_started and self.gatherer.started and not self.gatherer.closed:
            self.gatherer.limit_components(count)
        self._pump()

    @property
    def local_candidates(self) -> list[Candidate]:
        """The candidates to signal (in gathering order)."""
        return self.agent.local_candidates()

    # -- lifecycle ----------------------------------------------------------------------------

    async def gather(self, timeout: float | None = None) -> list[Candidate]:
        """Open the sockets and gather until complete (every server answered or timed out).

        Host candidates are available (and passed to ``on_candidate``) at once; returns every
        candidate to signal.  After ``timeout`` seconds the candidates gathered so far are
        returned (servers still answering later add theirs, trickle-style, via
        ``on_candidate``).
        """
        await self.start_gathering()
        try:
            await self.gatherer.wait_complete(timeout)
        except TimeoutError:
            logger.info("gathering not complete after %s s; going on with what we have", timeout)
        return self.local_candidates

    async def start_gathering(self) -> None:
        """Open the sockets and start gathering without waiting (trickle ICE)."""
        if self._gathering_started:
            return
        self._gathering_started = True
        self._loop = asyncio.get_running_loop()
        self._connected = self._loop.create_future()
        self._usable = self._loop.create_future()
        # made now, not when the checks need it: its setup (a timerfd and an epoll
        # registration) is then not part of the connect time
        self._precise = PreciseWake.create(self._loop, self._on_timer)
        if self._adopted:
            if self.gatherer.config.components > self.components:
                self.gatherer.limit_components(self.components)
            # its candidates so far are replayed as CandidateGathered events (to the agent,
            # on_candidate), then GatheringComplete if it is
            self.gatherer.attach(
                on_event=self._on_gather_event,
                on_datagram=self._on_socket_datagram,
                on_relayed=self._on_relayed_datagram,
            )
            return
        await self.gatherer.start()

    def set_remote(
        self,
        ufrag: str,
        pwd: str,
        candidates: Iterable[Candidate] = (),
        *,
        lite: bool = False,
        end_of_candidates: bool = True,
        pacing_ms: int | None | NotNegotiated = PACING_NOT_NEGOTIATED,
    ) -> None:
        """The peer's ``a=ice-ufrag`` / ``a=ice-pwd`` / candidates (``end_of_candidates``:
        they are all there; pass False and use :meth:`add_remote_candidate` to trickle).

        ``pacing_ms``: the peer's ``a=ice-pacing`` (None when its SDP has none); Ta becomes
        the larger of it (50 ms if None) and ours, :attr:`pacing_ms` (RFC 8445 §14.2).
        Leave it out to keep our own Ta (no negotiation)."""
        self.agent.set_remote_parameters(ufrag, pwd, lite, pacing_ms=pacing_ms)
        for c in candidates:
            self.agent.add_remote_candidate(c)
        if end_of_candidates:
            self.agent.end_of_candidates()
        self._permit_remotes()
        self._pump()

    def add_remote_candidate(self, candidate: Candidate) -> None:
        self.agent.add_remote_candidate(candidate)
        self._permit_remotes()
        self._pump()

    def _permit_remotes(self) -> None:
        """TURN permissions (RFC 8656 §9) on each of our relayed candidates for the IP of
        every remote candidate of its component, asked for as soon as both are known: the
        first check from our relay and the peer's first checks to it then pass the relay's
        filter, instead of the peer's being dropped until our own check towards its address
        installs the permission (the allocation skips IPs already permitted)."""
        remotes = self.agent.remote_candidates()
        if not remotes:
            return
        for local in self.agent.local_candidates():
            if local.type is not CandidateType.RELAYED:
                continue
            ips = sorted(
                {r.address for r in remotes if r.component == local.component and _is_ip(r.address)}
            )
            if ips:
                self.gatherer.permit(local.transport_address, ips)

    def end_of_candidates(self) -> None:
        self.agent.end_of_candidates()
        self._pump()

    def start(self) -> None:
        """Start the connectivity checks (gathering must have started)."""
        if self._loop is None:
            raise RuntimeError("gather() or start_gathering() first")
        if self._started_at is None:
            self._started_at = now = self._loop.time()
            self.agent.start(now)
            self.agent.handle_timer(now)  # the first check is due at once
        self._pump()

    def connect(self, timeout: float | None = None) -> asyncio.Future[None]:
        """Start the checks (if not yet) - right away, not when awaited - and return a future
        that is done when every component has a selected pair (``await conn.connect()``).

        Its exception is :class:`IceError` if ICE fails, the connection is closed or
        ``timeout`` passes.
        """
        self.start()
        return self._wait_connected(timeout)

    async def connected(self, timeout: float | None = None) -> None:
        """Wait for ICE to complete (see :meth:`connect`)."""
        await self._wait_connected(timeout)

    def _wait_connected(self, timeout: float | None) -> asyncio.Future[None]:
        """A future of its own for one waiter, settled right where the agent completes or
        fails (no extra loop turns, nothing shared to cancel), and on its ``timeout``."""
        if self._connected is None or self._loop is None:
            raise RuntimeError("gather() first")
        self._pump()  # an agent event not yet taken (agent.limit_components can complete it)
        waiter: asyncio.Future[None] = self._loop.create_future()
        done = self._connected
        if done.done():
            exc = done.exception()
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(IceError(str(exc)))
            return waiter
        self._connect_waiters.append(waiter)
        if timeout is not None:
            expiry = self._loop.call_later(timeout, _expire, waiter)
            waiter.add_done_callback(lambda _: expiry.cancel())
        return waiter

    def _settle_connected(self, error: str | None) -> None:
        """ICE completed (``error`` None) or failed: the shared future and every waiter."""
        waiters, self._connect_waiters = self._connect_waiters, []
        for future in (self._connected, *waiters):
            if future is None or future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(IceError(error))
                future.exception()  # retrieved here; awaiting it still raises

    async def usable(self, timeout: float | None = None, *, component: int | None = None) -> None:
        """Wait until every component in use (:attr:`components`) - or only ``component`` -
        can carry data both ways: it has a valid pair (RFC 8445 §12.1: data may flow on
        any valid pair before nomination) or its selected pair.  That is about one round
        trip after the first successful check, a round trip or more before
        :meth:`connected`; :meth:`transport` sends on that pair meanwhile and takes the
        peer's data from any valid pair until one is selected.  (``component=1``: RTP may
        start before the RTCP component of a session without rtcp-mux has a pair.)

        Raises :class:`IceError` if ICE fails first, ``timeout`` passes or ``component``
        is dropped meanwhile (:meth:`limit_components`); ValueError for a component not in
        use.
        """
        if self._usable is None or self._loop is None:
            raise RuntimeError("gather() first")
        future = self._usable
        if component is not None and not future.done():
            if not 1 <= component <= self.components:
                raise ValueError(f"component must be 1..{self.components}")
            future = self._usable_component.get(component) or self._loop.create_future()
            self._usable_component[component] = future
        self._pump()  # takes the agent's pending events and checks usability
        self._check_usable()
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError as exc:
            raise IceError("ICE not usable in time") from exc

    def _check_usable(self) -> None:
        """Resolves :meth:`usable` when each component still in use (a dropped one,
        :meth:`limit_components`, never gets a pair) has somewhere to send."""
        if not self._usable_component and (self._usable is None or self._usable.done()):
            return
        for component, future in list(self._usable_component.items()):
            if future.done():
                del self._usable_component[component]
            elif component > self.components:
                del self._usable_component[component]
                future.set_exception(IceError(f"component {component} was dropped"))
                future.exception()  # retrieved here; awaiting it still raises
            elif self.agent.send_target(component) is not None:
                del self._usable_component[component]
                future.set_result(None)
        if self._usable is None or self._usable.done():
            return
        if all(self.agent.send_target(c) is not None for c in range(1, self.components + 1)):
            self._usable.set_result(None)

    def restart(self, *, controlling: bool | None = None) -> None:
        """ICE restart (RFC 8445 §9): new local ufrag/pwd (signal them again with the
        candidates, then :meth:`set_remote` with the peer's new ones and :meth:`connect`).
        Data keeps flowing on the current selected pairs until the new checks nominate."""
        if self._loop is None:
            raise RuntimeError("restart() before gathering")
        self.agent.restart(self._loop.time(), controlling=controlling)
        self._connected = self._loop.create_future()
        self._started_at = self._loop.time()
        self._pump()

    def transport(self, component: int = 1) -> ComponentTransport:
        return self._transports[component]

    def stats(self) -> AgentStats:
        return self.agent.stats()

    @property
    def nat_mapping(self) -> MappingBehavior:
        """Our NAT's mapping behaviour as found while gathering (RFC 4787 §4.1): behind an
        endpoint-dependent ("symmetric") one our relayed candidates rank above the
        server-reflexive ones (:mod:`ice.gather`); UNKNOWN before or without a finding."""
        return self.gatherer.mapping

    async def close(self) -> None:
        """Stop ICE, release TURN allocations, close the sockets."""
        if self._closed:
            return
        self._closed = True
        self.agent.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._precise is not None:
            self._precise.close()
            self._precise = None
        self._settle_connected("closed")
        for future in (self._usable, *self._usable_component.values()):
            if future is not None and not future.done():
                future.set_exception(IceError("closed"))
                future.exception()  # mark retrieved
        await self.gatherer.close()

    # -- gathering events -----------------------------------------------------------------------

    def _on_gather_event(self, event: GatherEvent) -> None:
        if isinstance(event, CandidateGathered):
            self._add_local(event.local)
        elif isinstance(event, RelayLost):
            logger.warning("TURN allocation %s lost: %s", event.relayed, event.reason)

    def _add_local(self, gc: GatheredCandidate) -> None:
        # a relay raised behind a symmetric NAT helps only a controlled agent (ice.candidate)
        cand = ranked_for_role(gc.candidate, self.agent.controlling)
        via: Any = RelayVia(cand.transport_address) if gc.relay is not None else gc.local
        # a server-reflexive candidate's base is its socket; host and relayed are their own
        base = gc.local if cand.type is CandidateType.SERVER_REFLEXIVE else None
        self.agent.add_local_candidate(cand, via, base=base)
        if cand.type is CandidateType.RELAYED:
            self._permit_remotes()
        if self.on_candidate is not None:
            self.on_candidate(cand)
        self._pump()

    # -- data path ------------------------------------------------------------------------------

    def _on_socket_datagram(self, data: bytes, local: Address, addr: Address) -> None:
        self._input(data, local, addr)

    def _on_relayed_datagram(self, data: bytes, relayed: Address, peer: Address) -> None:
        self._input(data, RelayVia(relayed), peer)

    def _input(self, data: bytes, via: Any, addr: Address) -> None:
        if self._closed or self._loop is None:
            return
        if data and data[0] < 4:
            # STUN (RFC 7983): connectivity checks and consent; never application data
            if self.agent.receive(data, via, addr, self._loop.time()):
                self._pump()
            else:
                trace.debug("dropped a STUN packet from %s that is not for ICE", addr)
            return
        component = self.agent.component_of(via, addr)
        if component is None:
            trace.debug(
                "dropping %d bytes from %s via %r: not the selected pair", len(data), addr, via
            )
            return
        self._transports[component]._deliver(data)

    def _send_data(self, component: int, data: bytes) -> bool:
        if self._closed:
            return False
        target = self.agent.send_target(component)
        if target is None:
            return False
        via, addr = target
        return self._transmit(data, via, addr)

    def _transmit(self, data: bytes, via: Any, addr: Address) -> bool:
        if isinstance(via, RelayVia):
            return self.gatherer.relay_send(via.relayed, data, addr)
        self.gatherer.send(via, data, addr)
        return True

    # -- driving the agent ----------------------------------------------------------------------

    def _pump(self) -> None:
        loop = self._loop
        if loop is None or self._closed:
            return
        now = loop.time()
        when: float | None = None
        for i in range(8):  # bounded: a timer that stays due is left to the loop
            # the time they leave (the 5 ms floor between checks counts from it)
            for data, via, addr in self.agent.datagrams_to_send(loop.time()):
                self._transmit(data, via, addr)
            while (event := self.agent.next_event()) is not None:
                self._on_agent_event(event)
            if self._closed:
                return
            self._check_usable()
            when = self.agent.get_timer()
            if when is None or when > now or i == 7:
                break
            # due already (e.g. the first check right after start()): run it now rather
            # than one event-loop iteration later
            self.agent.handle_timer(now)
        if when != self._timer_at:
            if (
                when is not None
                and self._timer is not None
                and self._timer_at is not None
                and self._timer_at < when
                and when - now > PRECISE_HORIZON
            ):
                # later than the loop timer already set, and far: keep that one (it finds
                # the time not yet come and waits for the rest, see _on_timer) rather than
                # cancel and make another on the way of every answer
                self._timer_at = when
                return
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            if when is None or not self._wake_precisely(when, now):  # re-arming replaces
                if self._precise is not None:
                    self._precise.cancel()
                if when is not None:
                    self._timer = loop.call_at(when, self._on_timer)
            self._timer_at = when

    def _wake_precisely(self, when: float, now: float) -> bool:
        """While the checks run, arm the :class:`PreciseWake` for ``when`` (a check paced at
        5 ms then leaves at 5 ms, not at 5-6 ms); False: use ``call_at``."""
        if self.agent.state is not AgentState.RUNNING or not now < when < now + PRECISE_HORIZON:
            return False
        if self._precise is None:
            return False
        return self._precise.set(when)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        # _pump runs handle_timer for whatever is due - after a check whose datagram is
        # ready (the nomination, encoded while it waited for the floor) is out - and arms
        # the timer again; nothing may be due yet (a timer kept for a later time, see
        # _pump, or one a hair early)
        self._pump()

    def _on_agent_event(self, event: AgentEvent) -> None:
        self.events.append(event)
        logger.debug("ICE event %s", event)
        if isinstance(event, PairNominated):
            if isinstance(event.via, RelayVia):
                # ChannelData from now on: 4 bytes of overhead instead of 36 (RFC 8656 §12)
                self.gatherer.bind_channel(event.via.relayed, event.remote_address)
        elif isinstance(event, Completed):
            if self._loop is not None and self._started_at is not None:
                self.connect_time = self._loop.time() - self._started_at
            self._settle_connected(None)
        elif isinstance(event, Failed):
            self._settle_connected(event.reason)
            for future in (self._usable, *self._usable_component.values()):
                if future is not None and not future.done():
                    future.set_exception(IceError(event.reason))
                    future.exception()  # retrieved here; awaiting it still raises
        elif isinstance(event, ConsentLost):
            logger.warning("ICE consent lost on component %d", event.component)


async def connect(a: IceConnection, b: IceConnection, timeout: float | None = 10.0) -> None:
    """Connect two local :class:`IceConnection` objects to each other (tests, benchmarks):
    gather both, exchange parameters and candidates directly, wait until both complete."""
    await asyncio.gather(a.gather(timeout), b.gather(timeout))
    a.set_remote(b.local_ufrag, b.local_pwd, b.local_candidates)
    b.set_remote(a.local_ufrag, a.local_pwd, a.local_candidates)
    await asyncio.gather(a.connect(timeout), b.connect(timeout))


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(IceError("ICE did not complete in time"))


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    return True
