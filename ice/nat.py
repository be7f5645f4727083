"""NAT behaviour discovery with a STUN server that supports RFC 5780.

The server listens on two IP addresses and two ports and tells the client the other one in
OTHER-ADDRESS (RFC 5780 §7.4); it answers from the other IP and/or port when asked with
CHANGE-REQUEST (§7.2).  The client uses two UDP sockets on one local address:

Mapping (RFC 5780 §4.3)
  Test I: Binding to the primary address -> mapped address M1 and OTHER-ADDRESS (A, ap).
  M1 equal to the local address means no NAT.  Test II: Binding to (A, primary port) -> M2;
  M2 == M1 means endpoint-independent mapping.  Test III: Binding to (A, ap) -> M3;
  M3 == M2 means address-dependent mapping, else address-and-port-dependent.
Filtering (RFC 5780 §4.4), from a second local socket
  The mapping tests have sent to the server's other address, which opens the NAT's filter
  for it; so the filtering tests run on a fresh mapping: Test I from a second socket (only the
  primary address has been contacted from it), then Test II: Binding to the primary with
  CHANGE-REQUEST "change IP and port": an answer (coming from the other address) means
  endpoint-independent filtering.  Else Test III: CHANGE-REQUEST "change port" only: an
  answer means address-dependent filtering, none address-and-port-dependent.

A server without OTHER-ADDRESS (plain RFC 8489) still tells NAT from no NAT.  A missing
answer in a filtering test is an expected outcome, so those tests run on a shorter deadline.

:class:`NatDiscovery` is the sans-I/O state machine (fed datagrams and the time, it says what
to send where); :func:`discover_nat` runs it on two UDP sockets; :func:`describe` turns the
:class:`NatBehavior` into a plain-words sentence for ``softphone nat-check``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from dataclasses import dataclass
from typing import Any

from ice.stun import (
    CHANGE_REQUEST,
    MAPPED_ADDRESS,
    OTHER_ADDRESS,
    RESPONSE_ORIGIN,
    XOR_MAPPED_ADDRESS,
    Address,
    Attr,
    ChangeRequest,
    StunClass,
    StunMessage,
    StunMethod,
    StunParseError,
    is_stun,
    parse_message,
)
from ice.stun_transaction import StunClientTransaction, StunTransactionSucceeded

__all__ = [
    "PROCESS_MAPPING_CACHE",
    "FilteringBehavior",
    "MappingBehavior",
    "MappingCache",
    "NatBehavior",
    "NatDiscovery",
    "compare_mappings",
    "describe",
    "discover_nat",
]

logger = logging.getLogger("ice.nat")

# RFC 3489 CHANGED-ADDRESS, which RFC 5780 §7.4 replaced with OTHER-ADDRESS; old servers send it
_CHANGED_ADDRESS: Attr[Address] = Attr(
    0x0005, "CHANGED-ADDRESS", MAPPED_ADDRESS._decode, MAPPED_ADDRESS._encode
)


class MappingBehavior(enum.StrEnum):
    """How the NAT maps one internal address to external ones (RFC 4787 §4.1)."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    UNKNOWN = "unknown"


class FilteringBehavior(enum.StrEnum):
    """Which outside packets the NAT (or firewall) lets in (RFC 4787 §5)."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class NatBehavior:
    """What the tests found.

    ``nat`` is None when Test I got no answer; ``rfc5780`` tells whether the server offered
    OTHER-ADDRESS; ``error`` says why something is unknown.
    """

    server: Address
    local: Address
    mapped: Address | None = None
    other_address: Address | None = None
    nat: bool | None = None
    mapping: MappingBehavior = MappingBehavior.UNKNOWN
    filtering: FilteringBehavior = FilteringBehavior.UNKNOWN
    rfc5780: bool = False
    error: str | None = None

    @property
    def summary(self) -> str:
        return describe(self)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for ``--json``)."""
        return {
            "server": f"{self.server[0]}:{self.server[1]}",
            "local": f"{self.local[0]}:{self.local[1]}",
            "mapped": None if self.mapped is None else f"{self.mapped[0]}:{self.mapped[1]}",
            "nat": self.nat,
            "mapping": self.mapping.value,
            "filtering": self.filtering.value,
            "rfc5780": self.rfc5780,
            "error": self.error,
            "summary": describe(self),
        }


def compare_mappings(
    local: Address, first: tuple[Address, Address], second: tuple[Address, Address]
) -> MappingBehavior:
    """The mapping behaviour shown by two answers to Binding requests sent from one socket
    ``local``, each ``(server address, mapped address)`` (RFC 5780 §4.3, RFC 4787 §4.1).

    A mapped address equal to ``local`` means no NAT (endpoint-independent).  The same mapped
    address from two different server addresses: endpoint-independent (RFC 5780 test II
    with the server's OTHER-ADDRESS, or two servers).  Different mapped addresses: the
    mapping depends on the destination; address-and-port-dependent when the two servers
    share their IP (only the port changed), else address-dependent *at least* (test III,
    which would tell the two apart, is not run: for ICE both mean the same - a
    server-reflexive candidate is useless towards any other destination).  UNKNOWN when the
    two answers came from the same server address.
    """
    (server1, mapped1), (server2, mapped2) = first, second
    if mapped1 == local or mapped2 == local:
        return MappingBehavior.ENDPOINT_INDEPENDENT
    if server1 == server2:
        return MappingBehavior.UNKNOWN
    if mapped1 == mapped2:
        return MappingBehavior.ENDPOINT_INDEPENDENT
    if server1[0] == server2[0]:
        return MappingBehavior.ADDRESS_AND_PORT_DEPENDENT
    return MappingBehavior.ADDRESS_DEPENDENT


class MappingCache:
    """Mapping behaviours already found, per (local IP, STUN/TURN server address), kept for
    ``ttl`` seconds on the caller's clock (sans-I/O: every call takes ``now``).

    The mapping behaviour is a property of the NAT in front of a local address, not of one
    socket, so the next gathering from the same local IP needs no extra transaction.  Forget
    everything (:meth:`clear`) after a network change (:meth:`ice.pool.CandidatePool.invalidate`
    does): a laptop can keep its private address on another network.
    """

    def __init__(self, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[str, Address], tuple[MappingBehavior, float]] = {}

    def get(self, local_ip: str, server: Address, now: float) -> MappingBehavior | None:
        """The behaviour found from ``local_ip`` towards ``server`` (None: not known)."""
        entry = self._entries.get((local_ip, server))
        if entry is None:
            return None
        if now >= entry[1]:
            del self._entries[(local_ip, server)]
            return None
        return entry[0]

    def put(self, local_ip: str, server: Address, behavior: MappingBehavior, now: float) -> None:
        """Remember ``behavior`` (UNKNOWN is not remembered)."""
        if behavior is not MappingBehavior.UNKNOWN:
            self._entries[(local_ip, server)] = (behavior, now + self.ttl)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


PROCESS_MAPPING_CACHE = MappingCache()
"""The cache every :class:`ice.gather.AsyncGatherer` of the process shares (unless given
another); the asyncio layer feeds it the event loop's clock."""


def describe(result: NatBehavior) -> str:
    """A plain-words account of ``result`` and what it means for calls."""
    if result.nat is None:
        return (
            f"no answer from the STUN server {result.server[0]}:{result.server[1]}: UDP may be "
            "blocked on this network; calls will need a TURN relay over TCP or TLS"
        )
    mapped = "" if result.mapped is None else f" {result.mapped[0]}"
    filtering = result.filtering
    if not result.nat:
        if filtering is FilteringBehavior.ENDPOINT_INDEPENDENT:
            return (
                f"no NAT: public address{mapped}, and packets from anywhere get in; "
                "direct calls work"
            )
        if filtering is FilteringBehavior.UNKNOWN:
            return f"no NAT: public address{mapped}; direct calls work"
        return (
            f"no NAT: public address{mapped} behind a firewall that only lets in replies "
            f"({filtering.value} filtering); direct calls work when both sides use ICE"
        )
    mapping = result.mapping
    if mapping is MappingBehavior.UNKNOWN:
        why = "" if result.rfc5780 else " (the server does not support RFC 5780)"
        return (
            f"behind a NAT (public address{mapped}); its type could not be determined{why}; "
            "a TURN relay is the safe choice for calls"
        )
    if mapping is not MappingBehavior.ENDPOINT_INDEPENDENT:
        return (
            f"symmetric NAT ({mapping.value} mapping, public address{mapped}): direct calls "
            "to other NATed peers will need a TURN relay"
        )
    if filtering is FilteringBehavior.ENDPOINT_INDEPENDENT:
        kind = "full-cone NAT"
    elif filtering is FilteringBehavior.ADDRESS_DEPENDENT:
        kind = "restricted-cone NAT"
    elif filtering is FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT:
        kind = "port-restricted-cone NAT"
    else:
        kind = "NAT with endpoint-independent mapping"
    return (
        f"{kind} (endpoint-independent mapping, {filtering.value} filtering, public "
        f"address{mapped}): direct calls work through ICE with a STUN server"
    )


class _Step(enum.Enum):
    MAP1 = "mapping test I"
    MAP2 = "mapping test II"
    MAP3 = "mapping test III"
    FILTER1 = "filtering test I"
    FILTER2 = "filtering test II"
    FILTER3 = "filtering test III"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class _Answer:
    mapped: Address
    source: Address
    other: Address | None
    origin: Address | None


class NatDiscovery:
    """The RFC 5780 tests as a sans-I/O state machine.

    ``local`` is the socket's address (a specific IP, not a wildcard) - comparing it with the
    mapped address is how "no NAT" is detected.  The machine uses two sockets on that address:
    socket 0 for the mapping tests, socket 1 (any other port) for the filtering tests - every
    datagram to send and every datagram received names its socket.  Without a NAT the mapping
    tests II and III are skipped unless ``always_map`` (useful to check a server);
    ``filtering=False`` skips the filtering tests.  Usage::

        d = NatDiscovery(("198.51.100.1", 3478), ("192.168.1.5", 40000), now)
        while not d.done:
            send d.datagrams_to_send(now) as (data, addr, socket);
            feed d.receive(data, addr, now, socket);
            call d.handle_timer(now) at d.get_timer()
        d.result  # NatBehavior
    """

    def __init__(
        self,
        server: Address,
        local: Address,
        now: float,
        *,
        rto: float = 0.25,
        timeout: float = 3.0,
        filter_timeout: float = 1.5,
        filtering: bool = True,
        always_map: bool = False,
    ) -> None:
        self.server: Address = (server[0], int(server[1]))
        self.local: Address = (local[0], int(local[1]))
        self._rto = rto
        self._timeout = timeout
        self._filter_timeout = filter_timeout
        self._test_filtering = filtering
        self._always_map = always_map
        self._step = _Step.MAP1
        self._tx: StunClientTransaction | None = None
        self._dest: Address = self.server
        self._sock = 0
        self._deadline = 0.0
        self._outbox: list[tuple[bytes, Address, int]] = []
        self._mapped: Address | None = None
        self._mapped2: Address | None = None
        self._other: Address | None = None
        self._nat: bool | None = None
        self._mapping = MappingBehavior.UNKNOWN
        self._filtering = FilteringBehavior.UNKNOWN
        self._error: str | None = None
        self._result: NatBehavior | None = None
        self._send_test(self.server, None, now, timeout)

    # -- state -----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> NatBehavior | None:
        return self._result

    @property
    def step(self) -> str:
        """The test in progress, in words (for progress logs)."""
        return self._step.value

    # -- I/O -------------------------------------------------------------------------------

    def datagrams_to_send(self, now: float | None = None) -> list[tuple[bytes, Address, int]]:
        """``(data, destination, socket)`` to send now (socket 0 or 1)."""
        if self._tx is not None:
            for data in self._tx.datagrams_to_send():
                self._outbox.append((data, self._dest, self._sock))
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        if self._tx is None or self.done:
            return None
        t = self._tx.get_timer()
        return self._deadline if t is None else min(t, self._deadline)

    def handle_timer(self, now: float) -> None:
        tx = self._tx
        if tx is None or self.done:
            return
        if now >= self._deadline:
            tx.cancel()
            self._no_answer(now)
            return
        tx.handle_timer(now)
        if tx.done:
            self._no_answer(now)

    def receive(self, data: bytes, addr: Address, now: float, socket: int = 0) -> bool:
        """Offer a datagram from ``addr`` that arrived on ``socket`` (from any address:
        filtering answers come from the server's other address).  True if it answered the
        current test."""
        tx = self._tx
        if tx is None or self.done or not is_stun(data) or data[8:20] != tx.transaction_id:
            return False
        if socket != self._sock:
            return False
        try:
            message = parse_message(data)
        except StunParseError:
            return False
        tx.receive(message, now)
        result = tx.result
        if result is None:
            return True
        if not isinstance(result, StunTransactionSucceeded):
            self._fail(f"{self._step.value}: error response {getattr(result, 'reason', '')}")
            return True
        answer = self._read(result.response, (addr[0], int(addr[1])))
        if answer is None:
            self._fail(f"{self._step.value}: response without a mapped address")
            return True
        self._answered(answer, now)
        return True

    # -- the tests -------------------------------------------------------------------------

    def _send_test(
        self,
        dest: Address,
        change: ChangeRequest | None,
        now: float,
        timeout: float,
        sock: int = 0,
    ) -> None:
        request = StunMessage(StunMethod.BINDING, StunClass.REQUEST)
        if change is not None:
            request.add(CHANGE_REQUEST, change)
        self._tx = StunClientTransaction(request.encode(fingerprint=True), now, rto=self._rto)
        self._dest = dest
        self._sock = sock
        self._deadline = now + timeout
        logger.debug("NAT check: %s to %s", self._step.value, dest)

    @staticmethod
    def _read(response: StunMessage, source: Address) -> _Answer | None:
        try:
            mapped = response.get(XOR_MAPPED_ADDRESS) or response.get(MAPPED_ADDRESS)
            other = response.get(OTHER_ADDRESS) or response.get(_CHANGED_ADDRESS)
            origin = response.get(RESPONSE_ORIGIN)
        except StunParseError:
            return None
        if mapped is None:
            return None
        return _Answer(mapped, source, other, origin)

    def _answered(self, answer: _Answer, now: float) -> None:
        step = self._step
        if step is _Step.MAP1:
            self._mapped = answer.mapped
            self._other = answer.other
            self._nat = answer.mapped != self.local
            if not self._nat:
                self._mapping = MappingBehavior.ENDPOINT_INDEPENDENT
            if self._other is None or self._other[0] == self.server[0]:
                self._other = None
                self._finish()  # not an RFC 5780 server: nothing more to learn
                return
            if self._nat or self._always_map:
                self._step = _Step.MAP2
                self._send_test((self._other[0], self.server[1]), None, now, self._timeout)
            else:
                self._start_filtering(now)
        elif step is _Step.MAP2:
            self._mapped2 = answer.mapped
            if answer.mapped == self._mapped:
                self._mapping = MappingBehavior.ENDPOINT_INDEPENDENT
                self._start_filtering(now)
            else:
                assert self._other is not None
                self._step = _Step.MAP3
                self._send_test(self._other, None, now, self._timeout)
        elif step is _Step.MAP3:
            if answer.mapped == self._mapped2:
                self._mapping = MappingBehavior.ADDRESS_DEPENDENT
            else:
                self._mapping = MappingBehavior.ADDRESS_AND_PORT_DEPENDENT
            self._start_filtering(now)
        elif step is _Step.FILTER1:
            self._step = _Step.FILTER2
            change = ChangeRequest(True, True)
            self._send_test(self.server, change, now, self._filter_timeout, 1)
        elif step is _Step.FILTER2:
            if answer.source[0] == self.server[0]:
                self._error = "the server ignored CHANGE-REQUEST (answered from the same IP)"
                self._finish()
                return
            self._filtering = FilteringBehavior.ENDPOINT_INDEPENDENT
            self._finish()
        elif step is _Step.FILTER3:
            if answer.source == self.server:
                self._error = "the server ignored CHANGE-REQUEST (answered from the same port)"
                self._finish()
                return
            self._filtering = FilteringBehavior.ADDRESS_DEPENDENT
            self._finish()

    def _no_answer(self, now: float) -> None:
        step = self._step
        if step is _Step.MAP1:
            self._fail("no answer from the STUN server")
        elif step in (_Step.MAP2, _Step.MAP3):
            self._error = f"{step.value}: no answer from the server's other address"
            self._start_filtering(now)
        elif step is _Step.FILTER1:
            self._error = "filtering test I: no answer from the second socket"
            self._finish()
        elif step is _Step.FILTER2:
            self._step = _Step.FILTER3
            change = ChangeRequest(False, True)
            self._send_test(self.server, change, now, self._filter_timeout, 1)
        elif step is _Step.FILTER3:
            self._filtering = FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT
            self._finish()

    def _start_filtering(self, now: float) -> None:
        if not self._test_filtering:
            self._finish()
            return
        self._step = _Step.FILTER1
        self._send_test(self.server, None, now, self._timeout, 1)

    def _fail(self, reason: str) -> None:
        self._error = reason
        self._finish()

    def _finish(self) -> None:
        if self._tx is not None:
            self._tx.cancel()
        self._step = _Step.DONE
        self._result = NatBehavior(
            server=self.server,
            local=self.local,
            mapped=self._mapped,
            other_address=self._other,
            nat=self._nat,
            mapping=self._mapping,
            filtering=self._filtering,
            rfc5780=self._other is not None,
            error=self._error,
        )
        logger.info("NAT check: %s", describe(self._result))


# -- asyncio ---------------------------------------------------------------------------------


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[tuple[bytes, Address, int]], index: int) -> None:
        self._queue = queue
        self._index = index

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._queue.put_nowait((data, (str(addr[0]), int(addr[1])), self._index))

    def error_received(self, exc: Exception) -> None:
        logger.debug("NAT check socket error: %s", exc)


def _source_address_towards(server: Address, family: int) -> str:
    """The local IP the kernel would use towards ``server`` (connect() sends nothing)."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(server)
        return str(probe.getsockname()[0])


async def discover_nat(
    server: Address | str,
    *,
    local: str | None = None,
    port: int = 3478,
    rto: float = 0.25,
    timeout: float = 3.0,
    filter_timeout: float = 1.5,
    filtering: bool = True,
    always_map: bool = False,
) -> NatBehavior:
    """Run the RFC 5780 tests against ``server`` (``(host, port)`` or ``"host[:port]"``; a
    name is resolved) from one UDP socket bound on ``local`` (default: the address the route
    to the server uses)."""
    loop = asyncio.get_running_loop()
    if isinstance(server, str):
        server = _split_host_port(server, port)
    infos = await loop.getaddrinfo(server[0], server[1], type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {server[0]}")
    family, _, _, _, sockaddr = infos[0]
    resolved: Address = (str(sockaddr[0]), int(sockaddr[1]))
    if local is None:
        local = _source_address_towards(resolved, family)
    queue: asyncio.Queue[tuple[bytes, Address, int]] = asyncio.Queue()
    transports: list[asyncio.DatagramTransport] = []
    try:
        for index in (0, 1):
            transport, _ = await loop.create_datagram_endpoint(
                lambda index=index: _Protocol(queue, index),  # type: ignore[misc]
                local_addr=(local, 0),
                family=family,
            )
            transports.append(transport)
        sockname = transports[0].get_extra_info("sockname")
        bound: Address = (str(sockname[0]), int(sockname[1]))
        machine = NatDiscovery(
            resolved,
            bound,
            loop.time(),
            rto=rto,
            timeout=timeout,
            filter_timeout=filter_timeout,
            filtering=filtering,
            always_map=always_map,
        )
        while True:
            for data, addr, index in machine.datagrams_to_send():
                transports[index].sendto(data, addr)
            if machine.done:
                break
            when = machine.get_timer()
            wait = None if when is None else max(0.0, when - loop.time())
            try:
                data, addr, index = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                machine.handle_timer(loop.time())
                continue
            machine.receive(data, addr, loop.time(), index)
        assert machine.result is not None
        return machine.result
    finally:
        for transport in transports:
            transport.close()


def _split_host_port(text: str, default_port: int) -> Address:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, _, p = text.partition(":")
        return host, int(p)
    return text, default_port
