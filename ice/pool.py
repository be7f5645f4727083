"""A pool of pre-gathered candidate sets, so that a call starts with its candidates ready.

Gathering costs round trips to the STUN and TURN servers (an allocation takes two, with the
401 challenge) and the pacing between new NAT bindings (RFC 8445 §5.1.1, §14).  A phone knows
its servers long before it calls or is called, so it can gather ahead of time, as pjsua
creates its media transports and TURN allocations at start-up and WebRTC has an
``iceCandidatePoolSize`` (RFC 8829 §3.5.4):

* :class:`CandidatePool` keeps ``size`` sets ready.  A set is an :class:`ice.gather.AsyncGatherer`
  that has opened its sockets and completed gathering: host, server-reflexive and relayed
  candidates, the TURN allocations kept alive by the TURN client's refreshes, the NAT bindings
  by STUN Binding indications every ``keepalive`` seconds (``GatherConfig.keepalive``).
* :meth:`CandidatePool.take` hands one set out at once (None when none is ready: gather as
  usual then) and starts gathering a replacement in the background.  The set belongs to the
  caller from then on (normally an :class:`ice.aio.IceConnection`, which closes it with the
  call), taken with ``components`` 1 it keeps only component 1 (the others' allocations are
  released: an rtcp-mux call, RFC 5761).
* A set older than ``max_age`` seconds, or whose allocation was lost (:class:`RelayLost`), or
  whose gathering failed to get every candidate type the servers should give, is closed and
  gathered again; :meth:`CandidatePool.invalidate` does that for every set, and for the sets
  being gathered (their candidates are not handed out).
* Given an :class:`ice.netmonitor.AddressMonitor` (``monitor=`` or :meth:`CandidatePool.watch`),
  the pool invalidates itself when an address it would gather on appears or goes away (the
  ``bind`` / ``include`` / ``exclude`` rules, or the fixed ``addresses``): the host candidates
  of its sets may name an address that is gone, and their server-reflexive and relayed ones
  were obtained through it (RFC 8445 §5.1.1.1).  With STUN/TURN servers, an address coming or
  going on any other interface (a VPN) counts too (:meth:`CandidatePool.matters`).
  :attr:`CandidatePool.on_regathered` is called once the first set gathered after the change
  is ready.
* :meth:`CandidatePool.close` releases everything (TURN deallocations included).

Use::

    pool = CandidatePool(GatherConfig(stun_servers=[...], turn_servers=[...], components=2))
    await pool.start()                      # returns at once; sets fill in the background
    ...
    gatherer = pool.take(1, config=cfg)     # None: nothing ready / cfg not served
    conn = IceConnection(False, components=1, gatherer=gatherer)   # see ice.aio
    ...
    await pool.close()

The candidates of a set are not used before it is taken (nobody knows them), so a set is never
shared; ICE credentials (ufrag/pwd) belong to the agent, not to the set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ice.gather import (
    PROCESS_PACER,
    AsyncGatherer,
    GatherConfig,
    GatherEvent,
    RelayLost,
    ServerFailed,
    TransactionPacer,
)
from ice.interfaces import (
    DEFAULT_EXCLUDE,
    LocalAddress,
    filter_addresses,
    forget_cached_addresses,
    local_addresses,
)
from ice.nat import PROCESS_MAPPING_CACHE, MappingBehavior, MappingCache
from ice.netmonitor import AddressChange, AddressMonitor

__all__ = ["CandidatePool", "PoolStats"]

logger = logging.getLogger("ice.pool")

DEFAULT_KEEPALIVE = 15.0
"""Seconds between keepalives to the servers while a set waits (NATs forget idle UDP
mappings after 30 s or more; RFC 4787 REQ-5 asks for at least 2 minutes, not all comply)."""
FAILED_RETRY = 5.0
"""Seconds before trying again after a gathering that raised (e.g. no usable address)."""
DEGRADED_MAX_AGE = 30.0
"""A set in which a server failed is kept (it has what could be had) but gathered again
after this many seconds at most, in case the server is back."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    """What the pool did so far (for diagnostics and tests)."""

    ready: int
    gathering: int
    taken: int
    misses: int
    expired: int
    gathered: int


@dataclass(slots=True)
class _Set:
    gatherer: AsyncGatherer
    ready_at: float = 0.0
    degraded: bool = False  # a server failed while gathering: gather again sooner
    lost: bool = False  # a TURN allocation was lost: unusable
    timer: asyncio.TimerHandle | None = None
    generation: int = 0  # the pool's generation when gathering started (see invalidate())


class CandidatePool:
    """Keeps ``size`` gathered candidate sets ready (see the module docstring).

    ``config`` is what to gather (its ``components`` is the most a set offers; ``keepalive``
    defaults to :data:`DEFAULT_KEEPALIVE` here); ``addresses`` / ``bind`` / ``include`` /
    ``exclude`` choose the local addresses as for :class:`ice.gather.AsyncGatherer` (looked up
    again for every set, off the event loop).  ``max_age``: seconds a ready set is kept
    before it is gathered again.  ``gather_timeout``: how long one gathering may take before
    the set is used with what it has.  ``refill_delay``: seconds between handing a set out and
    gathering its replacement (its traffic and CPU then stay out of the new call's own
    connectivity checks).  ``monitor``: see :meth:`watch` (``close_monitor``: :meth:`close`
    closes it too).
    """

    def __init__(
        self,
        config: GatherConfig,
        *,
        size: int = 1,
        max_age: float = 120.0,
        gather_timeout: float = 10.0,
        refill_delay: float = 1.0,
        addresses: Sequence[LocalAddress | str] | None = None,
        bind: str | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        pacer: TransactionPacer | None = None,
        mapping_cache: MappingCache | None = None,
        monitor: AddressMonitor | None = None,
        close_monitor: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError("a pool holds at least one set")
        if config.keepalive is None:
            config = dataclasses.replace(config, keepalive=DEFAULT_KEEPALIVE)
        self.config = config
        self.size = size
        self.max_age = max_age
        self.gather_timeout = gather_timeout
        self.refill_delay = refill_delay
        self._addresses = None if addresses is None else list(addresses)
        self._bind = bind
        self._include = include
        self._exclude = exclude
        self._pacer = pacer or PROCESS_PACER
        self._mapping_cache = PROCESS_MAPPING_CACHE if mapping_cache is None else mapping_cache
        self._mapping = MappingBehavior.UNKNOWN
        self._closing: set[asyncio.Task[None]] = set()
        self._refill_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: list[_Set] = []
        self._filling: dict[asyncio.Task[None], int] = {}  # task: generation it gathers for
        self._generation = 0
        self._closed = False
        self._changed: asyncio.Event | None = None
        self._taken = self._misses = self._expired = self._gathered = 0
        self._monitor: AddressMonitor | None = None
        self._unwatch: Callable[[], None] | None = None
        self._close_monitor = False
        self._network_changes: list[AddressChange] = []
        self.network_changes = 0
        """How many times a network change made the pool gather again."""
        self.on_regathered: Callable[[Sequence[AddressChange]], None] | None = None
        """Called (on the loop) with the changes once the first set gathered after a network
        change is ready."""
        if monitor is not None:
            self.watch(monitor, close_monitor=close_monitor)

    # -- queries ---------------------------------------------------------------------------------

    @property
    def ready(self) -> int:
        """How many sets can be taken now."""
        return len(self._ready)

    @property
    def monitor(self) -> AddressMonitor | None:
        """The address monitor the pool watches (:meth:`watch`), if any: a call may subscribe
        to it too (``pool.monitor.add_listener(...)``)."""
        return self._monitor

    def stats(self) -> PoolStats:
        return PoolStats(
            len(self._ready),
            len(self._filling),
            self._taken,
            self._misses,
            self._expired,
            self._gathered,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start filling the pool (returns at once; see :meth:`wait_ready`)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._refill()

    def watch(self, monitor: AddressMonitor, *, close_monitor: bool = False) -> None:
        """Gather again when ``monitor`` reports that an address the pool would gather on
        appeared or went away (``close_monitor``: :meth:`close` closes the monitor too).  The
        monitor is started by its owner (``monitor.start()``); one monitor at a time."""
        if self._unwatch is not None:
            self._unwatch()
        self._monitor = monitor
        self._close_monitor = close_monitor
        self._unwatch = monitor.add_listener(self._addresses_changed)

    def matters(self, change: AddressChange) -> bool:
        """Does ``change`` make the pool's sets stale?

        Yes when the pool's address rules (fixed ``addresses``, ``bind``, ``include`` /
        ``exclude``, no loopback or link-local) gather on that address.  Also, when the pool
        looks its addresses up and has STUN or TURN servers, for any other address that is
        neither loopback nor link-local (a VPN's ``tun0`` or ``wg0``, skipped for host
        candidates by default): the traffic to the servers may take another way now, so the
        server-reflexive and relayed candidates may be other ones (RFC 8445 §5.1.1.2).
        """
        if self._addresses is not None:
            fixed = {a.address if isinstance(a, LocalAddress) else a for a in self._addresses}
            return change.host in {a.strip("[]").split("%", 1)[0] for a in fixed}
        if self._bind is not None:
            try:
                bound = ipaddress.ip_address(self._bind.strip("[]"))
            except ValueError:
                return True
            if not bound.is_unspecified:
                return change.address == bound
            if bound.version != change.address.version:
                return False
        local = LocalAddress(change.host, change.interface, change.prefixlen, change.deprecated)
        if filter_addresses([local], include=self._include, exclude=self._exclude):
            return True
        servers = bool(self.config.stun_servers or self.config.turn_servers)
        return servers and bool(filter_addresses([local], include=None, exclude=()))

    async def wait_ready(self, count: int | None = None, timeout: float | None = None) -> None:
        """Wait until ``count`` sets (default: the pool's size) are ready."""
        assert self._changed is not None, "start() first"
        want = self.size if count is None else count
        async with asyncio.timeout(timeout):
            while len(self._ready) < want:
                if self._closed:
                    raise RuntimeError("pool closed")
                self._changed.clear()
                await self._changed.wait()

    def serves(self, config: GatherConfig) -> bool:
        """Would a set of this pool be what gathering with ``config`` gives?  The same STUN
        and TURN servers (credentials included) and the same ``relay_only``; the number of
        components may be lower than the pool's, timeouts and pacing do not matter."""
        mine = self.config
        return (
            list(config.stun_servers) == list(mine.stun_servers)
            and list(config.turn_servers) == list(mine.turn_servers)
            and config.relay_only == mine.relay_only
            and config.components <= mine.components
        )

    def take(
        self, components: int | None = None, *, config: GatherConfig | None = None
    ) -> AsyncGatherer | None:
        """A ready set, now, or None if none is ready; a replacement starts gathering.

        The gatherer returned has completed gathering and is the caller's to close.  With
        ``components`` lower than the pool's, the extra components are dropped
        (:meth:`ice.gather.AsyncGatherer.limit_components`).  None too (gather as usual)
        when ``components`` is more than the pool's or the ``config`` the caller would have
        gathered with is not one the pool :meth:`serves` (e.g. the account's servers
        changed).
        """
        if self._closed or self._loop is None:
            return None
        if (components is not None and components > self.config.components) or (
            config is not None and not self.serves(config)
        ):
            logger.warning(
                "candidate pool (%d components, %s) cannot serve %s components / %s",
                self.config.components,
                self.config,
                components,
                config,
            )
            self._misses += 1
            return None
        entry: _Set | None = None
        while self._ready:
            candidate = self._ready.pop(0)
            if candidate.timer is not None:
                candidate.timer.cancel()
            if self._usable(candidate):
                entry = candidate
                break
            self._retire(candidate, "no longer usable")
        if entry is None:
            self._misses += 1
            self._refill()
            return None
        self._taken += 1
        gatherer = entry.gatherer
        gatherer.on_event = None
        if components is not None:
            gatherer.limit_components(components)
        self._refill_later()
        return gatherer

    @property
    def mapping(self) -> MappingBehavior:
        """The NAT mapping behaviour the last completed set found (RFC 4787 §4.1); a set
        taken from the pool carries its own (:attr:`ice.gather.AsyncGatherer.mapping`)."""
        return self._mapping

    def invalidate(self) -> None:
        """Gather every ready set again (after a network change, new servers ...); the sets
        being gathered are discarded when done (never handed out) and replaced at once; the
        local addresses are looked up again; the NAT mapping behaviours cached for the sets
        are forgotten too (the NAT may be another)."""
        self._generation += 1
        forget_cached_addresses()
        self._mapping_cache.clear()
        self._mapping = MappingBehavior.UNKNOWN
        for entry in list(self._ready):
            self._ready.remove(entry)
            if entry.timer is not None:
                entry.timer.cancel()
            self._retire(entry, "invalidated")
        self._refill()

    async def close(self) -> None:
        """Stop refilling and release every set (TURN deallocations, sockets)."""
        if self._closed:
            return
        self._closed = True
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._monitor is not None and self._close_monitor:
            self._monitor.close()
        if self._refill_timer is not None:
            self._refill_timer.cancel()
            self._refill_timer = None
        for task in list(self._filling):
            task.cancel()
        if self._filling:
            await asyncio.gather(*self._filling, return_exceptions=True)
        entries, self._ready = self._ready, []
        for entry in entries:
            if entry.timer is not None:
                entry.timer.cancel()
        closing = [e.gatherer.close() for e in entries]
        if closing or self._closing:
            await asyncio.gather(*closing, *self._closing, return_exceptions=True)
        if self._changed is not None:
            self._changed.set()

    # -- filling ---------------------------------------------------------------------------------

    def _refill_later(self) -> None:
        assert self._loop is not None
        if self.refill_delay <= 0:
            self._refill()
        elif self._refill_timer is None:
            self._refill_timer = self._loop.call_later(self.refill_delay, self._refill)

    def _refill(self) -> None:
        if self._refill_timer is not None:
            self._refill_timer.cancel()
            self._refill_timer = None
        if self._closed or self._loop is None:
            return
        generation = self._generation
        while len(self._ready) + self._gathering_current() < self.size:
            task = self._loop.create_task(self._fill(generation))
            self._filling[task] = generation
            task.add_done_callback(self._filled)

    def _gathering_current(self) -> int:
        """Sets being gathered that will be handed out (not those of an older generation)."""
        return sum(1 for g in self._filling.values() if g == self._generation)

    def _filled(self, task: asyncio.Task[None]) -> None:
        generation = self._filling.pop(task, self._generation)
        if generation != self._generation and not task.cancelled():
            if task.exception() is not None:  # e.g. its address went away meanwhile
                logger.debug("stale pool set failed: %s", task.exception())
            return  # the current generation is being gathered already
        if not task.cancelled() and task.exception() is not None:
            logger.warning("gathering a pool set failed: %s", task.exception())
            # try again later rather than in a tight loop (e.g. no usable address)
            if self._loop is not None and not self._closed:
                self._loop.call_later(FAILED_RETRY, self._refill)
            return
        self._refill()

    async def _fill(self, generation: int) -> None:
        addresses = self._addresses
        if addresses is None:
            # ``ip addr`` may run here: keep it off the loop
            addresses = list(
                await asyncio.to_thread(
                    local_addresses, bind=self._bind, include=self._include, exclude=self._exclude
                )
            )
        gatherer = AsyncGatherer(
            self.config,
            addresses=addresses,
            pacer=self._pacer,
            mapping_cache=self._mapping_cache,
        )
        entry = _Set(gatherer, generation=generation)
        gatherer.on_event = lambda event: self._on_event(entry, event)
        try:
            await gatherer.start()
            try:
                await gatherer.wait_complete(self.gather_timeout)
            except TimeoutError:
                logger.info("pool set not complete after %s s; kept as it is", self.gather_timeout)
        except BaseException:
            await gatherer.close()
            raise
        if self._closed:
            await gatherer.close()
            return
        if generation != self._generation:
            logger.debug("pool set gathered before a network change: released")
            await gatherer.close()  # its TURN allocations too
            return
        assert self._loop is not None
        self._gathered += 1
        entry.ready_at = self._loop.time()
        self._mapping = gatherer.mapping
        if entry.lost:
            await gatherer.close()
            return  # _filled() starts another
        delay = self.max_age if not entry.degraded else min(self.max_age, DEGRADED_MAX_AGE)
        entry.timer = self._loop.call_later(delay, self._expire, entry)
        self._ready.append(entry)
        logger.debug(
            "pool set ready: %s",
            ", ".join(
                f"{c.candidate.type.value} {c.candidate.address}" for c in gatherer.core.candidates
            ),
        )
        if self._changed is not None:
            self._changed.set()
        if self._network_changes:
            changes, self._network_changes = self._network_changes, []
            logger.info("network changed: candidate pool gathered again")
            if self.on_regathered is not None:
                try:
                    self.on_regathered(changes)
                except Exception:
                    logger.exception("on_regathered callback failed")

    def _addresses_changed(self, changes: Sequence[AddressChange]) -> None:
        """An :class:`AddressMonitor` batch: gather again if an address that matters changed."""
        relevant = [c for c in changes if self.matters(c)]
        if not relevant or self._closed or self._loop is None:
            return  # (not started: nothing gathered yet, the first sets will see the change)
        logger.info(
            "network changed (%s): gathering the candidate pool again",
            ", ".join(f"{'+' if c.added else '-'}{c.host}" for c in relevant),
        )
        self.network_changes += 1
        self._network_changes.extend(relevant)
        self.invalidate()

    def _on_event(self, entry: _Set, event: GatherEvent) -> None:
        if isinstance(event, ServerFailed):
            logger.info("pool set without %s server %s: %s", event.kind, event.server, event.reason)
            entry.degraded = True
        elif isinstance(event, RelayLost):
            logger.info("pool set lost its allocation %s: %s", event.relayed, event.reason)
            entry.lost = True
            if entry in self._ready:
                self._ready.remove(entry)
                if entry.timer is not None:
                    entry.timer.cancel()
                self._retire(entry, "allocation lost")
                self._refill()

    def _expire(self, entry: _Set) -> None:
        entry.timer = None
        if entry in self._ready:
            self._ready.remove(entry)
            self._expired += 1
            self._retire(entry, "too old")
            self._refill()

    def _usable(self, entry: _Set) -> bool:
        g = entry.gatherer
        if entry.lost or g.closed or self._loop is None or entry.generation != self._generation:
            return False
        return self._loop.time() - entry.ready_at < self.max_age

    def _retire(self, entry: _Set, why: str) -> None:
        logger.debug("pool set retired (%s)", why)
        entry.gatherer.on_event = None
        assert self._loop is not None
        task = self._loop.create_task(entry.gatherer.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
