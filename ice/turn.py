"""Sans-I/O TURN client: one allocation on one TURN server (RFC 8656).

The client never touches a socket or a clock.  It is fed what arrives from the server and the
current time, and says what to send and when to wake it up::

    client = TurnClient(("192.0.2.1", 3478), "user", "secret")
    client.allocate(now)
    for data, addr in client.datagrams_to_send(): sock.sendto(data, addr)
    ...  # on a datagram from the server: client.receive(data, addr, now)
    ...  # at client.get_timer():          client.handle_timer(now)
    while (event := client.next_event()) is not None: ...

What it does:

* Allocate (§7.1) with REQUESTED-TRANSPORT UDP and LIFETIME, answering the 401 challenge with
  long-term credentials (RFC 8489 §9.2): USERNAME, REALM, NONCE and MESSAGE-INTEGRITY; when the
  401 offers PASSWORD-ALGORITHMS (RFC 8489 §14.11/§14.12) SHA-256 is preferred, echoed with
  PASSWORD-ALGORITHM, and MESSAGE-INTEGRITY-SHA256 is added.  438 Stale Nonce retries with the
  new nonce (RFC 8489 §9.2.5) on every request; 300 with ALTERNATE-SERVER moves to that server
  (RFC 8489 §10).
* Refresh (§8) before the allocation expires (at lifetime - 60 s, or at half the lifetime when
  that is shorter than two minutes); ``close()`` deallocates with a Refresh of LIFETIME 0 (§8.1).
* CreatePermission (§10) per peer IP, refreshed every 4 minutes (permissions last 300 s, §9),
  created on demand by :meth:`TurnClient.send`, which queues the data until it is installed.
* ChannelBind (§12.1) with channel numbers 0x4000-0x4FFF, refreshed after 9 minutes (bindings
  last 10, §12); ChannelData (§12.4) to and from bound peers, padded to 4 bytes when the
  transport to the server is a stream (§12.5).
* Send and Data indications (§11) for peers without a channel.

Responses are authenticated with the session key (RFC 8489 §9.2.5); requests are retransmitted
by :class:`ice.stun_transaction.StunClientTransaction` (only once, over TCP/TLS).  Over a stream
the caller frames the bytes with :class:`ice.channeldata.StreamFramer` and feeds each frame to
:meth:`TurnClient.receive`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ice.channeldata import CHANNEL_MAX, CHANNEL_MIN
from ice.credentials import CredentialError, long_term_key
from ice.stun import (
    ADDITIONAL_ADDRESS_FAMILY,
    ADDRESS_ERROR_CODE,
    ALTERNATE_SERVER,
    CHANNEL_NUMBER,
    DATA,
    ICMP,
    LIFETIME,
    NONCE,
    PASSWORD_ALGORITHM,
    PASSWORD_ALGORITHMS,
    REALM,
    REQUESTED_ADDRESS_FAMILY,
    REQUESTED_TRANSPORT,
    SOFTWARE,
    USERNAME,
    XOR_MAPPED_ADDRESS,
    XOR_PEER_ADDRESS,
    XOR_RELAYED_ADDRESS,
    Address,
    PasswordAlgorithm,
    PasswordAlgorithmParams,
    StunClass,
    StunMessage,
    StunMethod,
    StunParseError,
    encode_channel_data,
    is_channel_data,
    parse_channel_data,
    parse_message,
)
from ice.stun_transaction import (
    DEFAULT_RTO,
    StunClientTransaction,
    StunTransactionFailed,
    StunTransactionResult,
    StunTransactionSucceeded,
)

__all__ = [
    "Allocated",
    "AllocationExpired",
    "AllocationFailed",
    "AllocationRefreshed",
    "ChannelBindFailed",
    "ChannelBound",
    "DataReceived",
    "Deallocated",
    "PermissionCreated",
    "PeerUnreachable",
    "PermissionFailed",
    "TurnClient",
    "TurnEvent",
    "TurnState",
]

logger = logging.getLogger("ice.turn")
trace = logging.getLogger("ice.trace")

UDP_PROTOCOL = 17  # REQUESTED-TRANSPORT value for UDP (RFC 8656 §18.8)
DEFAULT_LIFETIME = 600  # RFC 8656 §7.2: default allocation lifetime
PERMISSION_LIFETIME = 300.0  # RFC 8656 §9
PERMISSION_REFRESH = 240.0
CHANNEL_LIFETIME = 600.0  # RFC 8656 §12
CHANNEL_REFRESH = 540.0
MAX_AUTH_RETRIES = 3  # 438 / new-nonce retries per request
MAX_REDIRECTS = 2  # 300 Try Alternate hops
MAX_QUEUED = 64  # data packets queued per peer while a permission is being installed
DRAFT_ADDITIONAL_ADDRESS_FAMILY = 0x8032  # draft-ietf-tram-turnbis code points, used by coturn
DRAFT_ADDRESS_ERROR_CODE = 0x8033
REFRESH_RETRY = 5.0  # seconds between Refresh attempts after a failed one
MAX_PAYLOAD = 0xFFFF - 64  # fits a Send indication (header, XOR-PEER-ADDRESS, DATA) and ChannelData
MAX_PEERS_PER_PERMISSION = 32  # XOR-PEER-ADDRESS attributes in one CreatePermission (§10.1)


class TurnState(enum.Enum):
    """Where the allocation is in its life."""

    IDLE = "idle"
    ALLOCATING = "allocating"
    ALLOCATED = "allocated"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"
    EXPIRED = "expired"


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Allocated:
    """The server allocated ``relayed`` (XOR-RELAYED-ADDRESS); ``mapped`` is our server-reflexive
    address (XOR-MAPPED-ADDRESS) and ``lifetime`` the granted lifetime in seconds (§7.3)."""

    relayed: Address
    mapped: Address | None
    lifetime: int
    additional_relayed: Address | None = None
    """The IPv6 relayed address of a dual allocation (``additional_ipv6``; RFC 8656 §7.1)."""
    additional_error: str | None = None
    """Why the server refused the additional address family (ADDRESS-ERROR-CODE), if it did."""


@dataclass(frozen=True, slots=True)
class AllocationFailed:
    """The Allocate transaction failed: ``code`` is the STUN error code, None for a timeout or a
    malformed response (RFC 8656 §7.4)."""

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class AllocationRefreshed:
    """A Refresh succeeded; the allocation now lives ``lifetime`` more seconds (§8.3)."""

    lifetime: int


@dataclass(frozen=True, slots=True)
class AllocationExpired:
    """The allocation is gone: its lifetime ran out without a successful Refresh, or the server
    answered 437 Allocation Mismatch (§8.3)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Deallocated:
    """``close()`` finished: the server released the allocation, or gave no answer in time."""

    confirmed: bool


@dataclass(frozen=True, slots=True)
class PermissionCreated:
    """A permission for ``peer_ip`` is installed (§10.3)."""

    peer_ip: str


@dataclass(frozen=True, slots=True)
class PermissionFailed:
    """CreatePermission for ``peer_ip`` failed (``code`` None: timeout); queued data dropped."""

    peer_ip: str
    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class ChannelBound:
    """``channel`` is bound to ``peer`` (§12.3)."""

    peer: Address
    channel: int


@dataclass(frozen=True, slots=True)
class ChannelBindFailed:
    """ChannelBind failed; data to ``peer`` goes in Send indications."""

    peer: Address
    channel: int
    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class DataReceived:
    """``data`` from ``peer`` arrived through the relay, in a Data indication (``channel`` None,
    §11.4) or in ChannelData (§12.6)."""

    peer: Address
    data: bytes
    channel: int | None = None


@dataclass(frozen=True, slots=True)
class PeerUnreachable:
    """The relay reported an ICMP error (``icmp_type``/``icmp_code``, e.g. 3/3 port unreachable)
    for ``peer`` in a Data indication carrying an ICMP attribute (RFC 8656 §11.6)."""

    peer: Address
    icmp_type: int
    icmp_code: int


TurnEvent = (
    Allocated
    | AllocationFailed
    | AllocationRefreshed
    | AllocationExpired
    | Deallocated
    | PermissionCreated
    | PermissionFailed
    | ChannelBound
    | ChannelBindFailed
    | DataReceived
    | PeerUnreachable
)


# -- internal state ----------------------------------------------------------------------------


class _Kind(enum.Enum):
    ALLOCATE = "allocate"
    REFRESH = "refresh"
    PERMISSION = "permission"
    CHANNEL = "channel"


@dataclass(slots=True)
class _Request:
    kind: _Kind
    transaction: StunClientTransaction
    auth_retries: int = 0
    lifetime: int = 0  # REFRESH
    peer_ips: tuple[str, ...] = ()  # PERMISSION
    peer: Address = ("", 0)  # CHANNEL
    channel: int = 0  # CHANNEL


@dataclass(slots=True)
class _Permission:
    peer_ip: str
    installed: bool = False
    pending: bool = False
    expires_at: float = 0.0
    refresh_at: float | None = None
    queue: deque[tuple[bytes, Address]] = field(default_factory=deque)


@dataclass(slots=True)
class _Channel:
    peer: Address
    number: int
    bound: bool = False
    pending: bool = False
    refresh_at: float | None = None
    expires_at: float = 0.0


_TURN_METHODS = frozenset(
    (StunMethod.ALLOCATE, StunMethod.REFRESH, StunMethod.CREATE_PERMISSION, StunMethod.CHANNEL_BIND)
)

NONCE_COOKIE = "obMatJos2"  # RFC 8489 §9.2


def _announces_password_algorithms(nonce: str) -> bool:
    """Does the nonce cookie's security feature set have "Password algorithms" set (§9.2)?"""
    if not nonce.startswith(NONCE_COOKIE) or len(nonce) < len(NONCE_COOKIE) + 4:
        return False
    try:
        features = base64.b64decode(nonce[len(NONCE_COOKIE) : len(NONCE_COOKIE) + 4], validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(features and features[0] & 0x80)


def _describe(data: bytes) -> str:
    """One line for the wire trace (integrity values are not shown; passwords never travel)."""
    try:
        if is_channel_data(data):
            cd = parse_channel_data(data)
            return f"ChannelData {cd.channel:#06x} {len(cd.data)} bytes"
        return repr(parse_message(data, check_fingerprint=False))
    except StunParseError:
        return f"{len(data)} unparsable bytes"


def _peer_key(peer: Address) -> Address:
    return (peer[0], int(peer[1]))


def _valid_ip(ip: str) -> str | None:
    """``ip`` as given (the key :meth:`TurnClient.send` uses too), None if not an IP address."""
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return None
    return ip


class TurnClient:
    """A TURN client managing one allocation (RFC 8656), sans-I/O.

    ``server`` is the TURN server's transport address; ``reliable`` says whether the transport
    to it is TCP/TLS (one transmission per request, ChannelData padded).  ``lifetime`` is the
    LIFETIME requested in Allocate and Refresh (None: let the server choose, §7.1);
    ``ipv6_relay`` asks for an IPv6 relayed address with REQUESTED-ADDRESS-FAMILY, and
    ``additional_ipv6`` for an IPv6 one besides the IPv4 one with ADDITIONAL-ADDRESS-FAMILY
    (a dual allocation, §7.1): both share lifetime, permissions and channels.
    """

    def __init__(
        self,
        server: Address,
        username: str,
        password: str,
        *,
        reliable: bool = False,
        lifetime: int | None = DEFAULT_LIFETIME,
        software: str | None = None,
        rto: float = DEFAULT_RTO,
        ipv6_relay: bool = False,
        additional_ipv6: bool = False,
    ) -> None:
        try:
            ipaddress.ip_address(server[0].split("%", 1)[0])
        except ValueError as exc:
            raise ValueError(f"TURN server must be an IP address, not {server[0]!r}") from exc
        self._server: Address = _peer_key(server)
        self.username = username
        self._password = password
        self.reliable = reliable
        self._requested_lifetime = lifetime
        self._software = software
        if ipv6_relay and additional_ipv6:
            raise ValueError("ipv6_relay and additional_ipv6 exclude each other (RFC 8656 §7.1)")
        self._ipv6_relay = ipv6_relay
        self._additional_ipv6 = additional_ipv6
        self.additional_relayed_address: Address | None = None
        self._rto = rto
        self.state = TurnState.IDLE
        self.relayed_address: Address | None = None
        self.mapped_address: Address | None = None
        self.lifetime: int = 0
        # long-term credential state (RFC 8489 §9.2)
        self._realm: str | None = None
        self._nonce: str | None = None
        self._algorithms: tuple[PasswordAlgorithmParams, ...] | None = None
        self._algorithm: PasswordAlgorithmParams | None = None
        self._key: bytes | None = None
        self._primed = False  # credentials taken from another client (reuse_credentials)
        self._redirects = 0
        # machinery
        self._requests: dict[bytes, _Request] = {}
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: deque[TurnEvent] = deque()
        self._refresh_at: float | None = None
        self._expires_at: float | None = None
        self._permissions: dict[str, _Permission] = {}
        self._channels_by_peer: dict[Address, _Channel] = {}
        self._channels_by_number: dict[int, _Channel] = {}
        self._retired_channels: set[int] = set()

    # -- public properties --------------------------------------------------------------------

    @property
    def server(self) -> Address:
        """The server in use (changes after a 300 Try Alternate)."""
        return self._server

    @property
    def realm(self) -> str | None:
        """The REALM of the long-term credentials (None before the first challenge)."""
        return self._realm

    @property
    def nonce(self) -> str | None:
        """The NONCE currently used in requests."""
        return self._nonce

    @property
    def expires_at(self) -> float | None:
        """When the allocation expires unless refreshed (None when not allocated)."""
        return self._expires_at

    def has_permission(self, peer_ip: str) -> bool:
        """True if a permission for ``peer_ip`` is installed."""
        perm = self._permissions.get(peer_ip)
        return perm is not None and perm.installed

    def channel_for(self, peer: Address) -> int | None:
        """The channel number bound to ``peer``, or None if none is bound (yet)."""
        ch = self._channels_by_peer.get(_peer_key(peer))
        return ch.number if ch is not None and ch.bound else None

    # -- commands -----------------------------------------------------------------------------

    def reuse_credentials(self, other: TurnClient) -> bool:
        """Take the realm, nonce and password algorithm ``other`` (same server, same user)
        learnt, so that :meth:`allocate` sends credentials at once instead of waiting for the
        401 challenge (RFC 8489 §9.2.3: a client may cache them for the server).  A server that
        does not know the nonce answers 438 (or 401) and the client goes on as usual.  Returns
        False (nothing taken) when ``other`` has none, or is for another server or user, or
        this client has already started."""
        if (
            self.state is not TurnState.IDLE
            or other.server != self._server
            or other.username != self.username
            or other._password != self._password
            or other._key is None
            or other._realm is None
            or other._nonce is None
        ):
            return False
        self._realm, self._nonce, self._key = other._realm, other._nonce, other._key
        self._algorithms, self._algorithm = other._algorithms, other._algorithm
        self._primed = True
        return True

    def allocate(self, now: float) -> None:
        """Start the Allocate transaction (RFC 8656 §7.1)."""
        if self.state is not TurnState.IDLE:
            raise RuntimeError(f"allocate() in state {self.state.value}")
        self.state = TurnState.ALLOCATING
        self._send_allocate(now, 0)

    def create_permission(self, peer_ip: str, now: float) -> None:
        """Install (and keep refreshing) a permission for ``peer_ip`` (RFC 8656 §10.1)."""
        self.create_permissions([peer_ip], now)

    def create_permissions(self, peer_ips: Iterable[str], now: float) -> list[str]:
        """Install (and keep refreshing) permissions for several peer IPs at once.

        One CreatePermission carries an XOR-PEER-ADDRESS per IP (RFC 8656 §10.1, up to
        :data:`MAX_PEERS_PER_PERMISSION` per request); IPs already permitted or pending are
        skipped, and so are IPs of the other address family than the relayed address (the
        server would refuse the whole request with 443, §10.2).  Returns the IPs requested.
        If the server refuses a request carrying several IPs, each is asked again on its own,
        so one forbidden address does not cost the others (§10.2: the whole request fails).
        """
        self._require_allocated("create_permissions")
        relayed = self.relayed_address
        families = {":" in relayed[0]} if relayed is not None else {False, True}
        if self.additional_relayed_address is not None:
            families.add(True)
        wanted: list[_Permission] = []
        for ip in dict.fromkeys(_valid_ip(i) for i in peer_ips):
            if ip is None or (":" in ip) not in families:
                continue
            perm = self._permissions.get(ip)
            if perm is None:
                perm = self._permissions[ip] = _Permission(ip)
            if not perm.pending and not perm.installed:
                wanted.append(perm)
        self._send_permissions(wanted, now, 0)
        return [p.peer_ip for p in wanted]

    def bind_channel(self, peer: Address, now: float) -> int:
        """Bind a channel to ``peer`` (RFC 8656 §12.1) and return its number.

        Data sent to ``peer`` goes in Send indications until the binding succeeds, then in
        ChannelData.  Binding the same peer again returns the same channel.
        """
        self._require_allocated("bind_channel")
        peer = _peer_key(peer)
        ch = self._channels_by_peer.get(peer)
        if ch is None:
            taken = self._channels_by_number.keys() | self._retired_channels
            number = next((n for n in range(CHANNEL_MIN, CHANNEL_MAX + 1) if n not in taken), None)
            if number is None:
                raise RuntimeError("all TURN channel numbers are in use")
            ch = _Channel(peer, number)
            self._channels_by_peer[peer] = ch
            self._channels_by_number[number] = ch
        if not ch.pending and not ch.bound:
            self._send_channel_bind(ch, now, 0)
        return ch.number

    def send(self, data: bytes, peer: Address, now: float) -> bool:
        """Relay ``data`` to ``peer``: ChannelData if a channel is bound, else a Send indication.

        Without a permission for the peer's IP one is requested and the data queued until it
        is installed (RFC 8656 §9: the server drops data to peers without a permission).  A
        permission or channel whose refresh is overdue past its lifetime is not used.  Raises
        ``ValueError`` for more than :data:`MAX_PAYLOAD` bytes.
        Returns False (data dropped) when there is no allocation or the queue is full.
        """
        if len(data) > MAX_PAYLOAD:
            raise ValueError(f"TURN payload of {len(data)} bytes is too long")
        if self.state is not TurnState.ALLOCATED:
            logger.debug("TURN send to %s dropped in state %s", peer, self.state.value)
            return False
        peer = _peer_key(peer)
        ch = self._channels_by_peer.get(peer)
        if ch is not None and ch.bound and now < ch.expires_at:
            self._outbox.append(
                (encode_channel_data(ch.number, data, pad=self.reliable), self._server)
            )
            return True
        perm = self._permissions.get(peer[0])
        if perm is not None and perm.installed and now < perm.expires_at:
            self._send_indication(data, peer)
            return True
        if perm is None:
            perm = self._permissions[peer[0]] = _Permission(peer[0])
        if len(perm.queue) >= MAX_QUEUED:
            return False
        perm.queue.append((bytes(data), peer))
        if not perm.pending:
            self._send_permissions([perm], now, 0)
        return True

    def refresh(self, now: float, lifetime: int | None = None) -> None:
        """Refresh the allocation now (RFC 8656 §8.1) instead of waiting for the timer.

        ``lifetime`` defaults to the lifetime requested at construction.
        """
        self._require_allocated("refresh")
        if lifetime == 0:
            raise ValueError("use close() to deallocate")
        if any(r.kind is _Kind.REFRESH for r in self._requests.values()):
            return
        self._refresh_at = None
        self._send_refresh(now, self._requested_lifetime if lifetime is None else lifetime, 0)

    def close(self, now: float) -> None:
        """Release the allocation: a Refresh with LIFETIME 0 (RFC 8656 §8.1).

        :class:`Deallocated` follows when the server answers (or the transaction times out).
        While the Allocate is still running the client just stops (no event); if it had
        already sent credentials, one unanswered Refresh with LIFETIME 0 goes out in case the
        server allocated.
        """
        if self.state in (TurnState.CLOSING, TurnState.CLOSED):
            return
        state = self.state
        authenticated_allocate = state is TurnState.ALLOCATING and self._key is not None
        self._cancel_all()
        if state is TurnState.ALLOCATED:
            self.state = TurnState.CLOSING
            self._send_refresh(now, 0, 0)
            return
        self.state = TurnState.CLOSED
        if authenticated_allocate:
            # the server may have allocated already (the answer in flight): release it,
            # without waiting for an answer
            refresh = self._new_request(StunMethod.REFRESH).add(LIFETIME, 0)
            self._outbox.append((self._sign(refresh), self._server))

    # -- I/O ------------------------------------------------------------------------------------

    def datagrams_to_send(self, now: float | None = None) -> list[tuple[bytes, Address]]:
        """What to send now, as ``(data, address)``; the address is the TURN server."""
        for req in self._requests.values():
            for data in req.transaction.datagrams_to_send():
                self._outbox.append((data, self._server))
        out, self._outbox = self._outbox, []
        if trace.isEnabledFor(logging.DEBUG):
            for data, addr in out:
                trace.debug("TURN -> %s %s", addr, _describe(data))
        return out

    def next_event(self) -> TurnEvent | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called (None: nothing scheduled)."""
        times = [t for r in self._requests.values() if (t := r.transaction.get_timer()) is not None]
        if self.state is TurnState.ALLOCATED:
            if self._refresh_at is not None:
                times.append(self._refresh_at)
            if self._expires_at is not None:
                times.append(self._expires_at)
            refreshes = [p.refresh_at for p in self._permissions.values()]
            refreshes += [c.refresh_at for c in self._channels_by_peer.values()]
            times.extend(t for t in refreshes if t is not None)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Retransmit, time out, refresh and expire as due."""
        for req in list(self._requests.values()):
            req.transaction.handle_timer(now)
        self._collect_results(now)
        if self.state is not TurnState.ALLOCATED:
            return
        if self._expires_at is not None and now >= self._expires_at:
            self._expire("allocation lifetime ran out without a successful Refresh")
            return
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            if not any(r.kind is _Kind.REFRESH for r in self._requests.values()):
                self._send_refresh(now, self._requested_lifetime, 0)
        due = [
            p
            for p in self._permissions.values()
            if p.refresh_at is not None and now >= p.refresh_at and not p.pending
        ]
        for perm in due:
            perm.refresh_at = None
        self._send_permissions(due, now, 0)  # refreshed together, as they were created
        for ch in list(self._channels_by_peer.values()):
            if ch.refresh_at is not None and now >= ch.refresh_at and not ch.pending:
                ch.refresh_at = None
                self._send_channel_bind(ch, now, 0)

    def receive(self, data: bytes, addr: Address | None, now: float) -> bool:
        """Process a datagram (or one stream frame) from the server.

        Returns True if it was for this client (from the server, and a TURN response, Data
        indication or ChannelData on a channel of ours); False otherwise (e.g. a Binding
        response to someone else's request), so a caller sharing the socket can hand it
        elsewhere.  Malformed input is dropped, never raised.
        """
        if addr is not None and _peer_key(addr) != self._server:
            return False
        if trace.isEnabledFor(logging.DEBUG):
            trace.debug("TURN <- %s %s", self._server, _describe(data))
        if is_channel_data(data):
            return self._receive_channel_data(data)
        try:
            message = parse_message(data)
        except StunParseError as exc:
            logger.debug("TURN: dropping malformed packet from the server: %s", exc)
            return False
        if message.cls is StunClass.INDICATION:
            if message.method == StunMethod.DATA:
                return self._receive_data_indication(message)
            return False
        request = self._requests.get(message.transaction_id)
        if request is None:
            # a late duplicate of a finished TURN transaction is ours (and dropped); anything
            # else from the server, e.g. a Binding response, belongs to whoever shares the port
            return message.method in _TURN_METHODS
        request.transaction.receive(message, now)
        self._collect_results(now)
        return True

    # -- receiving -------------------------------------------------------------------------------

    def _receive_channel_data(self, data: bytes) -> bool:
        try:
            cd = parse_channel_data(data)
        except StunParseError as exc:
            logger.debug("TURN: dropping malformed ChannelData: %s", exc)
            return False
        ch = self._channels_by_number.get(cd.channel)
        if ch is None or self.state is not TurnState.ALLOCATED:
            logger.debug("TURN: ChannelData on unknown channel %#06x dropped", cd.channel)
            return False
        self._events.append(DataReceived(ch.peer, cd.data, cd.channel))
        return True

    def _receive_data_indication(self, message: StunMessage) -> bool:
        if self.state is not TurnState.ALLOCATED:
            return False
        try:
            peer = message.get(XOR_PEER_ADDRESS)
            payload = message.get(DATA)
            icmp = message.get(ICMP) if payload is None else None
        except StunParseError as exc:
            logger.debug("TURN: malformed Data indication dropped: %s", exc)
            return False
        if peer is not None and icmp is not None:
            # the relay got an ICMP error from the peer (RFC 8656 §11.5, §11.6)
            self._events.append(PeerUnreachable(peer, icmp.type, icmp.code))
            return True
        if peer is None or payload is None:
            logger.debug("TURN: Data indication without XOR-PEER-ADDRESS or DATA dropped")
            return False
        self._events.append(DataReceived(peer, payload))
        return True

    # -- sending requests ------------------------------------------------------------------------

    def _require_allocated(self, what: str) -> None:
        if self.state is not TurnState.ALLOCATED:
            raise RuntimeError(f"{what}() needs an allocation (state {self.state.value})")

    def _new_request(self, method: StunMethod) -> StunMessage:
        msg = StunMessage(method, StunClass.REQUEST)
        if self._software:
            msg.add(SOFTWARE, self._software)
        return msg

    def _start(self, msg: StunMessage, kind: _Kind, now: float, auth_retries: int) -> _Request:
        """Add the credentials, encode and start the transaction for ``msg``."""
        tx = StunClientTransaction(
            self._sign(msg),
            now,
            rto=self._rto,
            reliable=self.reliable,
            integrity_key=self._key,
        )
        request = _Request(kind, tx, auth_retries)
        self._requests[tx.transaction_id] = request
        logger.debug("TURN %s request %s", kind.value, tx.transaction_id.hex())
        return request

    def _sign(self, msg: StunMessage) -> bytes:
        """Encode ``msg`` with the long-term credentials, once we have them."""
        sha256 = False
        if self._key is not None and self._realm is not None and self._nonce is not None:
            msg.add(USERNAME, self.username)
            msg.add(REALM, self._realm)
            msg.add(NONCE, self._nonce)
            if self._algorithms is not None and self._algorithm is not None:
                # RFC 8489 §9.2.3.2: echo the offered list and name the chosen algorithm
                msg.add(PASSWORD_ALGORITHMS, self._algorithms)
                msg.add(PASSWORD_ALGORITHM, self._algorithm)
                sha256 = self._algorithm.algorithm == PasswordAlgorithm.SHA256
            return msg.encode(self._key, fingerprint=True, sha256=sha256)
        return msg.encode(fingerprint=True)

    def _send_allocate(self, now: float, auth_retries: int) -> None:
        msg = self._new_request(StunMethod.ALLOCATE)
        msg.add(REQUESTED_TRANSPORT, UDP_PROTOCOL)
        if self._ipv6_relay:
            msg.add(REQUESTED_ADDRESS_FAMILY, 0x02)  # RFC 8656 §18.6 (default: IPv4)
        elif self._additional_ipv6:
            msg.add(ADDITIONAL_ADDRESS_FAMILY, 0x02)  # an IPv6 relay besides the IPv4 one
            # coturn (4.6 at least) still knows the attribute by its draft code point
            msg.add_raw(DRAFT_ADDITIONAL_ADDRESS_FAMILY, msg.attributes[-1][1])
        if self._requested_lifetime is not None:
            msg.add(LIFETIME, self._requested_lifetime)
        self._start(msg, _Kind.ALLOCATE, now, auth_retries)

    def _send_refresh(self, now: float, lifetime: int | None, auth_retries: int) -> None:
        msg = self._new_request(StunMethod.REFRESH)
        if lifetime is not None:
            msg.add(LIFETIME, lifetime)
        req = self._start(msg, _Kind.REFRESH, now, auth_retries)
        req.lifetime = DEFAULT_LIFETIME if lifetime is None else lifetime

    def _send_permissions(self, perms: list[_Permission], now: float, auth_retries: int) -> None:
        """CreatePermission for ``perms``, several XOR-PEER-ADDRESS per request (§10.1)."""
        for i in range(0, len(perms), MAX_PEERS_PER_PERMISSION):
            batch = perms[i : i + MAX_PEERS_PER_PERMISSION]
            msg = self._new_request(StunMethod.CREATE_PERMISSION)
            for perm in batch:
                msg.add(XOR_PEER_ADDRESS, (perm.peer_ip, 0))
                perm.pending = True
            req = self._start(msg, _Kind.PERMISSION, now, auth_retries)
            req.peer_ips = tuple(p.peer_ip for p in batch)

    def _send_channel_bind(self, ch: _Channel, now: float, auth_retries: int) -> None:
        msg = self._new_request(StunMethod.CHANNEL_BIND)
        msg.add(CHANNEL_NUMBER, ch.number)
        msg.add(XOR_PEER_ADDRESS, ch.peer)
        ch.pending = True
        req = self._start(msg, _Kind.CHANNEL, now, auth_retries)
        req.peer = ch.peer
        req.channel = ch.number

    def _send_indication(self, data: bytes, peer: Address) -> None:
        msg = StunMessage(StunMethod.SEND, StunClass.INDICATION)
        msg.add(XOR_PEER_ADDRESS, peer)
        msg.add(DATA, bytes(data))
        self._outbox.append((msg.encode(), self._server))

    def _resend(self, req: _Request, now: float) -> None:
        """Send ``req`` again with the current credentials (after 401/438)."""
        retries = req.auth_retries + 1
        if req.kind is _Kind.ALLOCATE:
            self._send_allocate(now, retries)
        elif req.kind is _Kind.REFRESH:
            self._send_refresh(now, req.lifetime, retries)
        elif req.kind is _Kind.PERMISSION:
            perms = [p for ip in req.peer_ips if (p := self._permissions.get(ip)) is not None]
            self._send_permissions(perms, now, retries)
        else:
            ch = self._channels_by_peer.get(req.peer)
            if ch is not None:
                self._send_channel_bind(ch, now, retries)

    # -- results ---------------------------------------------------------------------------------

    def _collect_results(self, now: float) -> None:
        for tid, req in list(self._requests.items()):
            if not req.transaction.done:
                continue
            del self._requests[tid]
            result = req.transaction.result
            if result is None:
                continue
            handler = {
                _Kind.ALLOCATE: self._on_allocate,
                _Kind.REFRESH: self._on_refresh,
                _Kind.PERMISSION: self._on_permission,
                _Kind.CHANNEL: self._on_channel,
            }[req.kind]
            handler(req, result, now)

    def _retry_auth(self, req: _Request, result: StunTransactionResult, now: float) -> bool:
        """Handle 401/438 on a request that already carried credentials: take the new nonce
        (and realm) and send again, a few times at most (RFC 8489 §9.2.5)."""
        if not isinstance(result, StunTransactionFailed) or result.error is None:
            return False
        code = result.error.code
        if code not in (401, 438) or self._key is None:
            return False
        if code == 401 and req.kind is _Kind.ALLOCATE:
            return False  # our credentials were rejected
        if req.auth_retries >= MAX_AUTH_RETRIES:
            return False
        try:
            nonce = result.response.get(NONCE)
            realm = result.response.get(REALM)
        except StunParseError:
            return False
        if nonce is None:
            return False
        if self._algorithms is not None and self._algorithm_from(result.response) not in (
            None,
            self._algorithms,
        ):
            logger.warning("TURN: PASSWORD-ALGORITHMS changed between challenges; not retrying")
            return False
        self._nonce = nonce
        if realm is not None and realm != self._realm:
            if not self._derive_key(realm, self._algorithm_from(result.response)):
                return False
        logger.debug("TURN %s: %d, retrying with a new nonce", req.kind.value, code)
        self._resend(req, now)
        return True

    def _algorithm_from(self, response: StunMessage) -> tuple[PasswordAlgorithmParams, ...] | None:
        try:
            return response.get(PASSWORD_ALGORITHMS)
        except StunParseError:
            return None

    def _derive_key(
        self, realm: str, algorithms: tuple[PasswordAlgorithmParams, ...] | None
    ) -> bool:
        """Compute the long-term key for ``realm`` (RFC 8489 §9.2.2); False if impossible."""
        chosen: PasswordAlgorithmParams | None = None
        if algorithms:
            known = [a for a in algorithms if a.algorithm in (1, 2)]
            sha = [a for a in known if a.algorithm == PasswordAlgorithm.SHA256]
            chosen = sha[0] if sha else (known[0] if known else None)
            if chosen is None:
                return False
        try:
            self._key = long_term_key(
                self.username,
                realm,
                self._password,
                chosen.algorithm if chosen else PasswordAlgorithm.MD5,
            )
        except CredentialError:
            return False
        self._realm = realm
        self._algorithms = algorithms if chosen is not None else None
        self._algorithm = chosen
        return True

    def _on_allocate(self, req: _Request, result: StunTransactionResult, now: float) -> None:
        if self.state is not TurnState.ALLOCATING:
            return
        if isinstance(result, StunTransactionSucceeded):
            self._allocated(result.response, now)
            return
        if not isinstance(result, StunTransactionFailed):
            self._fail(None, f"no answer from the TURN server after {result.attempts} attempts")
            return
        error = result.error
        if error is None:
            self._fail(None, result.reason)
            return
        response = result.response
        if error.code == 401 and self._primed and req.auth_retries == 0:
            # the server did not take the reused nonce: a plain challenge after all
            self._primed = False
            self._key = None
        if error.code == 401 and self._key is None:
            # the challenge (RFC 8489 §9.2.5): take realm and nonce, retry with credentials
            try:
                realm = response.get(REALM)
                nonce = response.get(NONCE)
            except StunParseError as exc:
                self._fail(401, f"malformed 401 challenge: {exc}")
                return
            if realm is None or nonce is None:
                self._fail(401, "401 without REALM and NONCE")
                return
            algorithms = self._algorithm_from(response)
            if algorithms is None and _announces_password_algorithms(nonce):
                # RFC 8489 §9.2.5: the list was stripped on the way (a bid-down attack)
                self._fail(401, "nonce announces PASSWORD-ALGORITHMS but the 401 has none")
                return
            if not self._derive_key(realm, algorithms):
                self._fail(401, "cannot derive a key (unsupported algorithm or bad password)")
                return
            self._nonce = nonce
            self._send_allocate(now, req.auth_retries)
            return
        if self._retry_auth(req, result, now):
            return
        if error.code == 300 and self._redirects < MAX_REDIRECTS:
            try:
                alternate = response.get(ALTERNATE_SERVER)
            except StunParseError:
                alternate = None
            if alternate is not None and _peer_key(alternate) != self._server:
                logger.info("TURN server %s redirects to %s", self._server, alternate)
                self._redirects += 1
                self._server = _peer_key(alternate)
                self._realm = self._nonce = None
                self._key = None
                self._algorithms = self._algorithm = None
                self._send_allocate(now, 0)
                return
        if error.code == 401:
            self._fail(401, f"wrong TURN credentials for {self.username!r}: {result.reason}")
        else:
            self._fail(error.code, result.reason)

    def _allocated(self, response: StunMessage, now: float) -> None:
        try:
            relayed_all = response.get_all(XOR_RELAYED_ADDRESS)
            mapped = response.get(XOR_MAPPED_ADDRESS)
            lifetime = response.get(LIFETIME)
            address_error = response.get(ADDRESS_ERROR_CODE)
            draft_error = response.get_raw(DRAFT_ADDRESS_ERROR_CODE)
            if address_error is None and draft_error is not None:
                address_error = ADDRESS_ERROR_CODE.decode(draft_error, response.transaction_id)
        except StunParseError as exc:
            self._fail(None, f"malformed Allocate response: {exc}")
            return
        if not relayed_all:
            self._fail(None, "Allocate response without XOR-RELAYED-ADDRESS")
            return
        relayed = relayed_all[0]
        additional: Address | None = None
        if self._additional_ipv6:
            v6 = [a for a in relayed_all if ":" in a[0]]
            v4 = [a for a in relayed_all if ":" not in a[0]]
            if v4:
                relayed = v4[0]
            additional = v6[0] if v6 else None
        additional_error = None
        if address_error is not None:
            additional_error = f"{address_error.code} {address_error.reason}".strip()
            logger.info("TURN server refused the additional family: %s", additional_error)
        self.relayed_address = relayed
        self.additional_relayed_address = additional
        self.mapped_address = mapped
        self.lifetime = DEFAULT_LIFETIME if lifetime is None else lifetime
        self.state = TurnState.ALLOCATED
        self._schedule_refresh(now)
        logger.info(
            "TURN allocation %s (lifetime %d s) on %s", relayed, self.lifetime, self._server
        )
        self._events.append(Allocated(relayed, mapped, self.lifetime, additional, additional_error))

    def _schedule_refresh(self, now: float) -> None:
        lifetime = self.lifetime
        self._expires_at = now + lifetime
        lead = 60.0 if lifetime >= 120 else lifetime / 2
        self._refresh_at = now + lifetime - lead

    def _on_refresh(self, req: _Request, result: StunTransactionResult, now: float) -> None:
        if self.state is TurnState.CLOSING:
            if self._retry_auth(req, result, now):
                return
            self.state = TurnState.CLOSED
            self._expires_at = self._refresh_at = None
            self._events.append(Deallocated(isinstance(result, StunTransactionSucceeded)))
            return
        if self.state is not TurnState.ALLOCATED:
            return
        if isinstance(result, StunTransactionSucceeded):
            try:
                lifetime = result.response.get(LIFETIME)
            except StunParseError:
                lifetime = None
            self.lifetime = req.lifetime if lifetime is None else lifetime
            self._schedule_refresh(now)
            self._events.append(AllocationRefreshed(self.lifetime))
            return
        if self._retry_auth(req, result, now):
            return
        if isinstance(result, StunTransactionFailed) and result.error is not None:
            if result.error.code == 437:
                self._expire(f"server no longer knows the allocation ({result.reason})")
                return
            logger.warning("TURN Refresh failed: %s", result.reason)
        else:
            logger.warning("TURN Refresh got no answer")
        self._refresh_at = now + REFRESH_RETRY  # keep trying until the allocation expires

    def _on_permission(self, req: _Request, result: StunTransactionResult, now: float) -> None:
        if self.state is not TurnState.ALLOCATED:
            return
        perms = [p for ip in req.peer_ips if (p := self._permissions.get(ip)) is not None]
        if not perms:
            return
        if isinstance(result, StunTransactionSucceeded):
            for perm in perms:
                perm.pending = False
                first = not perm.installed
                self._permission_installed(perm, now)
                if first:
                    self._events.append(PermissionCreated(perm.peer_ip))
            return
        if self._retry_auth(req, result, now):
            return
        for perm in perms:
            perm.pending = False
        if isinstance(result, StunTransactionFailed):
            code = result.error.code if result.error else None
            reason = result.reason
        else:
            code, reason = None, "no answer to CreatePermission"
        if code is not None and len(perms) > 1:
            # the server refused the whole request (§10.2): ask for each IP on its own
            logger.debug("TURN CreatePermission for %d peers refused (%s)", len(perms), reason)
            for perm in perms:
                self._send_permissions([perm], now, 0)
            return
        for perm in perms:
            if perm.installed and now < perm.expires_at and code is None:
                # a lost refresh: try again while the old permission lasts
                perm.refresh_at = now + REFRESH_RETRY
                continue
            del self._permissions[perm.peer_ip]
            self._events.append(PermissionFailed(perm.peer_ip, code, reason))

    def _permission_installed(self, perm: _Permission, now: float) -> None:
        perm.installed = True
        perm.expires_at = now + PERMISSION_LIFETIME
        perm.refresh_at = now + PERMISSION_REFRESH
        while perm.queue:
            data, peer = perm.queue.popleft()
            self.send(data, peer, now)

    def _on_channel(self, req: _Request, result: StunTransactionResult, now: float) -> None:
        ch = self._channels_by_peer.get(req.peer)
        if ch is None or ch.number != req.channel or self.state is not TurnState.ALLOCATED:
            return
        if isinstance(result, StunTransactionSucceeded):
            ch.pending = False
            first = not ch.bound
            ch.bound = True
            ch.refresh_at = now + CHANNEL_REFRESH
            ch.expires_at = now + CHANNEL_LIFETIME
            # ChannelBind installs or refreshes the permission too (RFC 8656 §12.2)
            perm = self._permissions.get(ch.peer[0])
            if perm is None:
                perm = self._permissions[ch.peer[0]] = _Permission(ch.peer[0])
            if not perm.pending:
                self._permission_installed(perm, now)
            if first:
                self._events.append(ChannelBound(ch.peer, ch.number))
            return
        if self._retry_auth(req, result, now):
            return
        ch.pending = False
        if isinstance(result, StunTransactionFailed):
            code = result.error.code if result.error else None
            reason = result.reason
        else:
            code, reason = None, "no answer to ChannelBind"
        if ch.bound and code is None and now + REFRESH_RETRY < ch.expires_at:
            # a lost refresh: try again while the binding lasts
            ch.refresh_at = now + REFRESH_RETRY
            return
        ch.bound = False
        ch.refresh_at = None
        del self._channels_by_peer[ch.peer]
        del self._channels_by_number[ch.number]
        # the server may still hold the number for the old peer (and RFC 8656 §12 keeps it
        # from rebinding it elsewhere for 5 minutes after expiry): never hand it out again
        self._retired_channels.add(ch.number)
        self._events.append(ChannelBindFailed(ch.peer, ch.number, code, reason))

    # -- endings ---------------------------------------------------------------------------------

    def _cancel_all(self) -> None:
        for req in self._requests.values():
            req.transaction.cancel()
        self._requests.clear()
        self._refresh_at = self._expires_at = None
        self._permissions.clear()
        self._channels_by_peer.clear()
        self._channels_by_number.clear()

    def _fail(self, code: int | None, reason: str) -> None:
        logger.warning("TURN allocation on %s failed: %s", self._server, reason)
        self._cancel_all()
        self.state = TurnState.FAILED
        self._events.append(AllocationFailed(code, reason))

    def _expire(self, reason: str) -> None:
        logger.warning("TURN allocation %s expired: %s", self.relayed_address, reason)
        self._cancel_all()
        self.state = TurnState.EXPIRED
        self._events.append(AllocationExpired(reason))
