"""TURN client (RFC 8656) against a scripted fake server on a virtual clock."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ice import stun
from ice.channeldata import StreamFramer
from ice.credentials import long_term_key
from ice.stun import (
    Address,
    ErrorCode,
    PasswordAlgorithm,
    PasswordAlgorithmParams,
    StunClass,
    StunMessage,
    StunMethod,
    StunParseError,
    encode_channel_data,
    parse_channel_data,
    parse_message,
)
from ice.turn import (
    Allocated,
    AllocationExpired,
    AllocationFailed,
    AllocationRefreshed,
    ChannelBindFailed,
    ChannelBound,
    DataReceived,
    Deallocated,
    PeerUnreachable,
    PermissionCreated,
    PermissionFailed,
    TurnClient,
    TurnEvent,
    TurnState,
)

SERVER: Address = ("192.0.2.1", 3478)
ALT_SERVER: Address = ("192.0.2.2", 3478)
CLIENT: Address = ("198.51.100.7", 40000)
RELAYED: Address = ("192.0.2.1", 50000)
PEER: Address = ("203.0.113.5", 6000)
PEER2: Address = ("203.0.113.6", 7000)
REALM = "example.org"
USER, PASSWORD = "alice", "s3cret"

Reply = Callable[[StunMessage], StunMessage | None]


@dataclass
class FakeTurnServer:
    """A minimal TURN server with long-term credentials, scripted by the tests.

    ``override[method]`` (a function of the authenticated request) replaces the normal answer;
    returning None drops the request.  ``drop`` is how many incoming datagrams to lose.
    """

    address: Address = SERVER
    nonce: str = "nonce-1"
    password: str = PASSWORD
    algorithms: tuple[PasswordAlgorithmParams, ...] | None = None
    lifetime: int | None = None  # granted lifetime (None: what was asked, max 3600)
    drop: int = 0
    override: dict[int, Reply] = field(default_factory=dict)
    received: list[StunMessage] = field(default_factory=list)
    indications: list[tuple[Address, bytes]] = field(default_factory=list)
    channel_data: list[tuple[int, bytes]] = field(default_factory=list)
    permissions: dict[str, int] = field(default_factory=dict)  # ip -> times installed
    channels: dict[int, Address] = field(default_factory=dict)
    allocated: bool = False
    algorithm_used: int | None = None
    now: float = 0.0  # set by the Net before each datagram
    permission_expiry: dict[str, float] = field(default_factory=dict)
    channel_expiry: dict[int, float] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def key(self, algorithm: int = PasswordAlgorithm.MD5) -> bytes:
        return long_term_key(USER, REALM, self.password, algorithm)

    def requests(self, method: int) -> list[StunMessage]:
        return [m for m in self.received if m.method == method and m.cls == StunClass.REQUEST]

    def handle(self, data: bytes) -> list[bytes]:
        if self.drop > 0:
            self.drop -= 1
            return []
        if stun.is_channel_data(data):
            cd = parse_channel_data(data)
            self.channel_data.append((cd.channel, cd.data))
            if self.channel_expiry.get(cd.channel, -1.0) <= self.now:
                self.violations.append(f"ChannelData on unbound {cd.channel:#x} at {self.now}")
            return []
        msg = parse_message(data)
        self.received.append(msg)
        if msg.cls == StunClass.INDICATION:
            assert msg.method == StunMethod.SEND
            peer = msg.get(stun.XOR_PEER_ADDRESS)
            payload = msg.get(stun.DATA)
            assert peer is not None and payload is not None
            self.indications.append((peer, payload))
            if self.permission_expiry.get(peer[0], -1.0) <= self.now:
                self.violations.append(f"Send to {peer} without permission at {self.now}")
            return []
        answer = self._answer(msg)
        return [] if answer is None else [answer]

    def _challenge(self, msg: StunMessage, code: int) -> bytes:
        resp = msg.error_response(code).add(stun.REALM, REALM).add(stun.NONCE, self.nonce)
        if self.algorithms is not None:
            resp.add(stun.PASSWORD_ALGORITHMS, self.algorithms)
        return resp.encode(fingerprint=True)

    def _answer(self, msg: StunMessage) -> bytes | None:
        if msg.get(stun.USERNAME) is None:
            return self._challenge(msg, 401)
        if msg.get(stun.NONCE) != self.nonce:
            return self._challenge(msg, 438)
        algorithm = PasswordAlgorithm.MD5
        chosen = msg.get(stun.PASSWORD_ALGORITHM)
        if self.algorithms is not None:
            assert msg.get(stun.PASSWORD_ALGORITHMS) == self.algorithms
            assert chosen is not None
            algorithm = PasswordAlgorithm(chosen.algorithm)
        self.algorithm_used = algorithm
        key = self.key(algorithm)
        if msg.get(stun.USERNAME) != USER or not msg.check_integrity(key):
            return self._challenge(msg, 401)
        reply = self.override.get(msg.method)
        if reply is not None:
            resp = reply(msg)
            return None if resp is None else resp.encode(key, fingerprint=True)
        return self._default(msg).encode(key, fingerprint=True)

    def _default(self, msg: StunMessage) -> StunMessage:
        method = msg.method
        if method == StunMethod.ALLOCATE:
            assert msg.get(stun.REQUESTED_TRANSPORT) == 17
            self.allocated = True
            return (
                msg.response()
                .add(stun.XOR_RELAYED_ADDRESS, RELAYED)
                .add(stun.XOR_MAPPED_ADDRESS, CLIENT)
                .add(stun.LIFETIME, self._granted(msg))
            )
        if not self.allocated:
            return msg.error_response(437)
        if method == StunMethod.REFRESH:
            lifetime = self._granted(msg)
            if lifetime == 0:
                self.allocated = False
            return msg.response().add(stun.LIFETIME, lifetime)
        if method == StunMethod.CREATE_PERMISSION:
            for host, _ in msg.get_all(stun.XOR_PEER_ADDRESS):
                self.permissions[host] = self.permissions.get(host, 0) + 1
                self.permission_expiry[host] = self.now + 300
            return msg.response()
        if method == StunMethod.CHANNEL_BIND:
            number = msg.get(stun.CHANNEL_NUMBER)
            peer = msg.get(stun.XOR_PEER_ADDRESS)
            assert number is not None and peer is not None
            if self.channels.get(number, peer) != peer:
                return msg.error_response(400)  # bound to another peer (RFC 8656 §12.2)
            self.channels[number] = peer
            self.channel_expiry[number] = self.now + 600
            self.permissions[peer[0]] = self.permissions.get(peer[0], 0) + 1
            self.permission_expiry[peer[0]] = self.now + 300
            return msg.response()
        return msg.error_response(400)

    def _granted(self, msg: StunMessage) -> int:
        asked = msg.get(stun.LIFETIME)
        if asked == 0:
            return 0
        if self.lifetime is not None:
            return self.lifetime
        return min(asked if asked is not None else 600, 3600)

    def data_indication(self, peer: Address, payload: bytes) -> bytes:
        msg = StunMessage(StunMethod.DATA, StunClass.INDICATION)
        return msg.add(stun.XOR_PEER_ADDRESS, peer).add(stun.DATA, payload).encode()


class Net:
    """Moves datagrams between the client and fake servers on a virtual clock."""

    def __init__(self, client: TurnClient, *servers: FakeTurnServer) -> None:
        self.client = client
        self.servers = {s.address: s for s in servers}
        self.now = 0.0
        self.events: list[TurnEvent] = []
        self.sent: list[tuple[float, StunMessage | bytes]] = []

    def flush(self) -> None:
        for _ in range(100):
            out = self.client.datagrams_to_send(self.now)
            if not out:
                break
            for data, addr in out:
                self.deliver(data, addr)
        while (event := self.client.next_event()) is not None:
            self.events.append(event)

    def deliver(self, data: bytes, addr: Address) -> None:
        """One datagram from the client: recorded, then answered by the server at ``addr``."""
        try:
            self.sent.append((self.now, parse_message(data)))
        except StunParseError:
            self.sent.append((self.now, data))
        server = self.servers.get(addr)
        if server is None:
            return
        server.now = self.now
        for reply in server.handle(data):
            self.client.receive(reply, addr, self.now)

    def run_until(self, t: float) -> None:
        """Fire timers until virtual time ``t``."""
        self.flush()
        for _ in range(10_000):
            timer = self.client.get_timer()
            if timer is None or timer > t:
                break
            self.now = max(self.now, timer)
            self.client.handle_timer(self.now)
            self.flush()
        self.now = max(self.now, t)

    def take(self) -> list[TurnEvent]:
        out, self.events = self.events, []
        return out

    def sent_requests(self, method: int) -> list[tuple[float, StunMessage]]:
        return [
            (t, m)
            for t, m in self.sent
            if isinstance(m, StunMessage) and m.method == method and m.cls == StunClass.REQUEST
        ]


def start_allocating(*servers: FakeTurnServer, **kwargs: object) -> tuple[TurnClient, Net]:
    """A client of SERVER that has just asked to allocate (nothing delivered yet)."""
    client = TurnClient(SERVER, USER, PASSWORD, **kwargs)  # type: ignore[arg-type]
    net = Net(client, *servers)
    client.allocate(0.0)
    return client, net


def allocated(server: FakeTurnServer | None = None, **kwargs: object) -> tuple[TurnClient, Net]:
    client, net = start_allocating(server or FakeTurnServer(), **kwargs)
    net.flush()
    events = net.take()
    assert events and isinstance(events[0], Allocated), events
    return client, net


def allocated_with_channel(server: FakeTurnServer | None = None) -> tuple[TurnClient, Net]:
    """Allocated, with channel 0x4000 bound to PEER at time 0."""
    client, net = allocated(server)
    assert client.bind_channel(PEER, 0.0) == 0x4000
    net.flush()
    return client, net


def failed_allocation(server: FakeTurnServer) -> tuple[TurnClient, AllocationFailed]:
    """Allocate against ``server``; the one event must be AllocationFailed."""
    client, net = start_allocating(server)
    net.flush()
    (event,) = net.take()
    assert isinstance(event, AllocationFailed)
    return client, event


def allocate_by_hand(client: TurnClient, server: FakeTurnServer) -> tuple[bytes, bytes]:
    """Walk ``client`` (already allocating) through the 401 challenge to the authenticated
    request by hand; returns the challenge the client took and the server's success answer,
    which is not delivered."""
    ((first, _),) = client.datagrams_to_send()
    (challenge,) = server.handle(first)
    assert client.receive(challenge, SERVER, 0.0)
    ((second, _),) = client.datagrams_to_send()
    (success,) = server.handle(second)
    return challenge, success


BOTH_ALGORITHMS = (
    PasswordAlgorithmParams(PasswordAlgorithm.MD5),
    PasswordAlgorithmParams(PasswordAlgorithm.SHA256),
)


def server_of(net: Net) -> FakeTurnServer:
    return net.servers[SERVER]


# -- allocation ------------------------------------------------------------------------------


def test_allocate_answers_the_401_challenge_with_long_term_credentials() -> None:
    server = FakeTurnServer()
    client, net = start_allocating(server)
    net.flush()
    assert net.take() == [Allocated(RELAYED, CLIENT, 600)]
    assert client.state is TurnState.ALLOCATED
    assert client.relayed_address == RELAYED and client.mapped_address == CLIENT
    first, second = server.requests(StunMethod.ALLOCATE)
    assert first.get(stun.USERNAME) is None and not first.has_integrity
    assert first.get(stun.REQUESTED_TRANSPORT) == 17 and first.get(stun.LIFETIME) == 600
    assert second.get(stun.USERNAME) == USER
    assert second.get(stun.REALM) == REALM and second.get(stun.NONCE) == "nonce-1"
    assert second.check_integrity(server.key())
    assert second.transaction_id != first.transaction_id
    assert client.expires_at == 600.0


def test_lifetime_none_lets_the_server_choose() -> None:
    server = FakeTurnServer()
    client, net = allocated(server, lifetime=None)
    assert all(m.get(stun.LIFETIME) is None for m in server.requests(StunMethod.ALLOCATE))
    assert client.lifetime == 600


def test_sha256_password_algorithm_when_the_server_offers_it() -> None:
    server = FakeTurnServer(algorithms=BOTH_ALGORITHMS)
    client, net = allocated(server)
    assert server.algorithm_used == PasswordAlgorithm.SHA256
    request = server.requests(StunMethod.ALLOCATE)[-1]
    chosen = request.get(stun.PASSWORD_ALGORITHM)
    assert chosen is not None and chosen.algorithm == PasswordAlgorithm.SHA256
    assert stun.MESSAGE_INTEGRITY_SHA256 in request
    assert request.check_integrity_sha256(server.key(PasswordAlgorithm.SHA256))
    sha_key = hashlib.sha256(f"{USER}:{REALM}:{PASSWORD}".encode()).digest()
    assert request.check_integrity_sha1(sha_key)
    # later requests keep the algorithm
    client.create_permission(PEER[0], net.now)
    net.flush()
    assert net.take() == [PermissionCreated(PEER[0])]


def test_md5_only_server_gets_plain_message_integrity() -> None:
    server = FakeTurnServer()
    allocated(server)
    request = server.requests(StunMethod.ALLOCATE)[-1]
    assert stun.PASSWORD_ALGORITHM not in request
    assert stun.MESSAGE_INTEGRITY_SHA256 not in request


def test_wrong_password_fails_with_401() -> None:
    server = FakeTurnServer(password="other")
    client, event = failed_allocation(server)
    assert event.code == 401
    assert "credentials" in event.reason
    assert client.state is TurnState.FAILED
    assert len(server.requests(StunMethod.ALLOCATE)) == 2  # no endless loop
    assert client.get_timer() is None


@pytest.mark.parametrize("code", [403, 437, 440, 442, 486, 508])
def test_allocate_error_is_reported_with_its_code(code: int) -> None:
    server = FakeTurnServer(override={StunMethod.ALLOCATE: lambda m: m.error_response(code)})
    _, event = failed_allocation(server)
    assert event.code == code


def test_stale_nonce_on_allocate_retries_with_the_new_nonce() -> None:
    server = FakeTurnServer()
    client, net = start_allocating(server)
    # the first answer gave nonce-1; rotate before the authenticated request arrives
    out = client.datagrams_to_send()
    for reply in server.handle(out[0][0]):
        client.receive(reply, SERVER, 0.0)
    server.nonce = "nonce-2"
    net.flush()
    assert net.take() == [Allocated(RELAYED, CLIENT, 600)]
    nonces = [m.get(stun.NONCE) for m in server.requests(StunMethod.ALLOCATE)]
    assert nonces == [None, "nonce-1", "nonce-2"]


def test_endless_stale_nonce_gives_up() -> None:
    server = FakeTurnServer()
    counter = iter(range(100))

    def rotate(msg: StunMessage) -> StunMessage:
        server.nonce = f"n{next(counter)}"
        return msg.error_response(438).add(stun.NONCE, server.nonce).add(stun.REALM, REALM)

    server.override[StunMethod.ALLOCATE] = rotate
    _, event = failed_allocation(server)
    assert event.code == 438
    assert len(server.requests(StunMethod.ALLOCATE)) <= 6


def test_300_alternate_server_moves_the_allocation() -> None:
    first = FakeTurnServer(
        override={
            StunMethod.ALLOCATE: lambda m: m.error_response(300).add(
                stun.ALTERNATE_SERVER, ALT_SERVER
            )
        }
    )
    second = FakeTurnServer(address=ALT_SERVER, nonce="other-nonce")
    client, net = start_allocating(first, second)
    net.flush()
    assert net.take() == [Allocated(RELAYED, CLIENT, 600)]
    assert client.server == ALT_SERVER
    assert second.requests(StunMethod.ALLOCATE)[-1].get(stun.NONCE) == "other-nonce"


def test_retransmits_over_udp_until_answered() -> None:
    client, net = start_allocating(FakeTurnServer(drop=3))
    net.run_until(10.0)
    assert net.take() == [Allocated(RELAYED, CLIENT, 600)]
    times = [t for t, _ in net.sent_requests(StunMethod.ALLOCATE)]
    assert times[:4] == [0.0, 0.5, 1.5, 3.5]  # RFC 8489 §6.2.1 schedule
    assert len(times) == 5  # four sends of the first request, then the authenticated one


def test_allocate_times_out_without_answer() -> None:
    client, net = start_allocating(FakeTurnServer(drop=10**6))
    net.run_until(39.0)
    assert net.take() == []
    net.run_until(40.0)
    (event,) = net.take()
    assert isinstance(event, AllocationFailed) and event.code is None
    assert len(net.sent_requests(StunMethod.ALLOCATE)) == 7


def test_reliable_transport_sends_once_and_times_out() -> None:
    client, net = start_allocating(FakeTurnServer(drop=10**6), reliable=True)
    net.run_until(39.0)
    assert len(net.sent_requests(StunMethod.ALLOCATE)) == 1
    net.run_until(40.0)
    (event,) = net.take()
    assert isinstance(event, AllocationFailed) and event.code is None


def test_forged_success_without_integrity_is_ignored() -> None:
    server = FakeTurnServer()
    client, net = start_allocating(server)
    (challenge_request, _), *_ = client.datagrams_to_send()
    for reply in server.handle(challenge_request):
        client.receive(reply, SERVER, 0.0)
    (request, _), *_ = client.datagrams_to_send()
    req = parse_message(request)
    forged = req.response().add(stun.XOR_RELAYED_ADDRESS, ("6.6.6.6", 1)).encode()
    assert client.receive(forged, SERVER, 0.1)
    wrong_key = req.response().add(stun.XOR_RELAYED_ADDRESS, ("6.6.6.6", 1))
    client.receive(wrong_key.encode(b"wrong-key"), SERVER, 0.2)
    assert client.next_event() is None and client.state is TurnState.ALLOCATING
    net.run_until(1.0)  # the retransmission reaches the real server
    assert net.take() == [Allocated(RELAYED, CLIENT, 600)]


def test_packets_from_elsewhere_are_not_ours() -> None:
    client, net = allocated()
    indication = server_of(net).data_indication(PEER, b"x")
    assert not client.receive(indication, ("192.0.2.99", 3478), net.now)
    assert client.next_event() is None


# -- refresh ------------------------------------------------------------------------------------


def test_refresh_one_minute_before_expiry() -> None:
    client, net = allocated()
    net.run_until(539.9)
    assert net.sent_requests(StunMethod.REFRESH) == []
    net.run_until(540.0)
    ((t, refresh),) = net.sent_requests(StunMethod.REFRESH)
    assert t == 540.0 and refresh.get(stun.LIFETIME) == 600
    assert net.take() == [AllocationRefreshed(600)]
    assert client.expires_at == 1140.0
    net.run_until(3000.0)
    times = [t for t, _ in net.sent_requests(StunMethod.REFRESH)]
    assert times == [540.0, 1080.0, 1620.0, 2160.0, 2700.0]
    assert client.state is TurnState.ALLOCATED


def test_short_lifetime_refreshes_at_half() -> None:
    server = FakeTurnServer(lifetime=100)
    client, net = allocated(server)
    net.run_until(49.9)
    assert net.sent_requests(StunMethod.REFRESH) == []
    net.run_until(50.0)
    assert [t for t, _ in net.sent_requests(StunMethod.REFRESH)] == [50.0]


def test_refresh_with_stale_nonce_retries() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    server.nonce = "nonce-2"
    net.run_until(541.0)
    assert net.take() == [AllocationRefreshed(600)]
    nonces = [m.get(stun.NONCE) for _, m in net.sent_requests(StunMethod.REFRESH)]
    assert nonces == ["nonce-1", "nonce-2"]


def test_refresh_437_means_the_allocation_is_gone() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    server.allocated = False
    net.run_until(541.0)
    (event,) = net.take()
    assert isinstance(event, AllocationExpired)
    assert client.state is TurnState.EXPIRED and client.get_timer() is None


def test_unanswered_refreshes_end_in_expiry() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    server.drop = 10**6
    net.run_until(599.0)
    assert net.take() == [] and client.state is TurnState.ALLOCATED
    net.run_until(601.0)
    (event,) = net.take()
    assert isinstance(event, AllocationExpired)


def test_lost_refresh_is_retried_before_expiry() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)

    def lose_first(msg: StunMessage) -> StunMessage | None:
        del server.override[StunMethod.REFRESH]
        return None

    server.override[StunMethod.REFRESH] = lose_first
    net.run_until(600.0)
    assert net.take() == [AllocationRefreshed(600)]
    assert client.state is TurnState.ALLOCATED


def test_explicit_refresh() -> None:
    client, net = allocated()
    client.refresh(10.0, 300)
    net.now = 10.0
    net.flush()
    assert net.take() == [AllocationRefreshed(300)]
    assert client.expires_at == 310.0
    with pytest.raises(ValueError):
        client.refresh(11.0, 0)


# -- permissions and data ----------------------------------------------------------------------


def test_send_creates_a_permission_and_queues_until_installed() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    assert client.send(b"one", PEER, 1.0)
    assert client.send(b"two", PEER, 1.0)
    assert server.indications == []
    net.now = 1.0
    net.flush()
    assert server.permissions == {PEER[0]: 1}
    assert server.indications == [(PEER, b"one"), (PEER, b"two")]
    assert net.take() == [PermissionCreated(PEER[0])]
    assert client.has_permission(PEER[0])
    (request,) = server.requests(StunMethod.CREATE_PERMISSION)
    assert request.get(stun.XOR_PEER_ADDRESS) == (PEER[0], 0)
    # another port on the same IP needs no new permission
    client.send(b"three", (PEER[0], 9999), 2.0)
    net.flush()
    assert server.indications[-1] == ((PEER[0], 9999), b"three")
    assert len(server.requests(StunMethod.CREATE_PERMISSION)) == 1


def test_permissions_are_refreshed_every_four_minutes() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    client.create_permission(PEER[0], 0.0)
    net.flush()
    net.run_until(1000.0)
    times = [t for t, _ in net.sent_requests(StunMethod.CREATE_PERMISSION)]
    assert times == [0.0, 240.0, 480.0, 720.0, 960.0]
    assert client.has_permission(PEER[0])


def test_permission_refused() -> None:
    server = FakeTurnServer(
        override={StunMethod.CREATE_PERMISSION: lambda m: m.error_response(403)}
    )
    client, net = allocated(server)
    client.send(b"dropped", PEER, 0.0)
    net.flush()
    assert net.take() == [PermissionFailed(PEER[0], 403, "403 Forbidden")]
    assert server.indications == [] and not client.has_permission(PEER[0])


def test_permission_refresh_with_stale_nonce() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    client.create_permission(PEER[0], 0.0)
    net.flush()
    server.nonce = "nonce-9"
    net.run_until(250.0)
    assert client.has_permission(PEER[0])
    assert server.permissions[PEER[0]] == 2
    assert [e for e in net.take() if isinstance(e, PermissionFailed)] == []


def test_send_queue_is_bounded() -> None:
    server = FakeTurnServer(drop=0)
    client, net = allocated(server)
    server.drop = 10**6
    accepted = [client.send(b"x", PEER, 1.0) for _ in range(100)]
    assert accepted.count(True) == 64 and accepted[-1] is False


def test_data_indication_is_delivered() -> None:
    client, net = allocated()
    assert client.receive(server_of(net).data_indication(PEER, b"hello"), SERVER, 1.0)
    assert client.next_event() == DataReceived(PEER, b"hello")


def test_malformed_data_indication_is_dropped() -> None:
    client, net = allocated()
    no_data = StunMessage(StunMethod.DATA, StunClass.INDICATION).add(stun.XOR_PEER_ADDRESS, PEER)
    assert not client.receive(no_data.encode(), SERVER, 1.0)
    bad_peer = StunMessage(StunMethod.DATA, StunClass.INDICATION).add_raw(0x0012, b"\x00\x07")
    assert not client.receive(bad_peer.add(stun.DATA, b"x").encode(), SERVER, 1.0)
    assert client.next_event() is None


def test_send_before_allocation_is_dropped() -> None:
    client = TurnClient(SERVER, USER, PASSWORD)
    assert client.send(b"x", PEER, 0.0) is False
    with pytest.raises(RuntimeError):
        client.bind_channel(PEER, 0.0)


# -- channels -------------------------------------------------------------------------------------


def test_channel_bind_then_channel_data_both_ways() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    number = client.bind_channel(PEER, 1.0)
    assert number == 0x4000
    assert client.send(b"early", PEER, 1.0)  # before the binding: queued for a permission
    net.now = 1.0
    net.flush()
    assert ChannelBound(PEER, 0x4000) in net.take()
    assert server.channels == {0x4000: PEER}
    assert client.channel_for(PEER) == 0x4000 and client.has_permission(PEER[0])
    client.send(b"via channel", PEER, 2.0)
    net.flush()
    assert (PEER, b"early") in server.indications or (0x4000, b"early") in server.channel_data
    assert server.channel_data[-1] == (0x4000, b"via channel")
    assert client.receive(encode_channel_data(0x4000, b"back"), SERVER, 3.0)
    assert client.next_event() == DataReceived(PEER, b"back", 0x4000)
    # unknown channel: not ours
    assert not client.receive(encode_channel_data(0x4001, b"stray"), SERVER, 3.0)
    assert client.next_event() is None
    # a second peer gets the next channel; the same peer keeps its number
    assert client.bind_channel(PEER2, 4.0) == 0x4001
    assert client.bind_channel(PEER, 4.0) == 0x4000


def test_channel_binding_is_refreshed_before_ten_minutes() -> None:
    server = FakeTurnServer()
    client, net = allocated_with_channel(server)
    net.run_until(1200.0)
    times = [t for t, _ in net.sent_requests(StunMethod.CHANNEL_BIND)]
    assert times == [0.0, 540.0, 1080.0]
    # the permission of a channel peer is refreshed too (it lasts only 5 minutes)
    # (a ChannelBind refreshes the permission as well, RFC 8656 §12.2)
    refreshed = sorted(
        t
        for m in (StunMethod.CREATE_PERMISSION, StunMethod.CHANNEL_BIND)
        for t, _ in net.sent_requests(m)
    )
    assert len(refreshed) > 3
    assert all(b - a < 300 for a, b in zip(refreshed, [*refreshed[1:], 1200.0], strict=True))
    assert client.channel_for(PEER) == 0x4000
    assert not [e for e in net.take() if isinstance(e, ChannelBindFailed | PermissionFailed)]


def test_channel_bind_failure_falls_back_to_send_indications() -> None:
    server = FakeTurnServer(override={StunMethod.CHANNEL_BIND: lambda m: m.error_response(400)})
    client, net = allocated_with_channel(server)
    events = net.take()
    assert ChannelBindFailed(PEER, 0x4000, 400, "400 Bad Request") in events
    assert client.channel_for(PEER) is None
    client.create_permission(PEER[0], 0.0)
    net.flush()
    client.send(b"plain", PEER, 1.0)
    net.flush()
    assert server.indications == [(PEER, b"plain")] and server.channel_data == []


def test_channel_data_is_padded_over_tcp() -> None:
    server = FakeTurnServer()
    client, net = allocated(server, reliable=True)
    client.bind_channel(PEER, 0.0)
    net.flush()
    client.send(b"abcde", PEER, 1.0)
    ((data, _),) = client.datagrams_to_send()
    assert data == b"\x40\x00\x00\x05abcde\x00\x00\x00"
    udp_client, udp_net = allocated(FakeTurnServer())
    udp_client.bind_channel(PEER, 0.0)
    udp_net.flush()
    udp_client.send(b"abcde", PEER, 1.0)
    ((data, _),) = udp_client.datagrams_to_send()
    assert data == b"\x40\x00\x00\x05abcde"


# -- close ---------------------------------------------------------------------------------------


def test_close_deallocates_with_lifetime_zero() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    client.create_permission(PEER[0], 0.0)
    net.flush()
    net.take()
    client.close(5.0)
    net.now = 5.0
    net.flush()
    assert net.take() == [Deallocated(True)]
    assert client.state is TurnState.CLOSED and not server.allocated
    assert server.requests(StunMethod.REFRESH)[-1].get(stun.LIFETIME) == 0
    assert client.get_timer() is None
    assert client.send(b"late", PEER, 6.0) is False
    client.close(7.0)  # idempotent
    assert client.datagrams_to_send() == []


def test_close_without_answer_still_finishes() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    server.drop = 10**6
    client.close(1.0)
    net.now = 1.0
    net.run_until(100.0)
    assert net.take() == [Deallocated(False)]
    assert client.state is TurnState.CLOSED


def test_close_while_allocating() -> None:
    client = TurnClient(SERVER, USER, PASSWORD)
    client.allocate(0.0)
    client.close(0.1)
    assert client.state is TurnState.CLOSED and client.get_timer() is None


# -- fuzzing ------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_arbitrary_datagrams_never_raise(datagrams: list[bytes]) -> None:
    client, net = allocated_with_channel()
    for data in datagrams:
        client.receive(data, SERVER, 1.0)
    for data in datagrams:  # also as ChannelData and as STUN-looking headers
        client.receive(b"\x40\x00" + data, SERVER, 1.0)
        client.receive(b"\x01\x17" + len(data).to_bytes(2, "big") + data, SERVER, 1.0)
    while (event := client.next_event()) is not None:
        assert isinstance(event, DataReceived | PeerUnreachable)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.integers(0x4000, 0x4FFF), st.binary(max_size=70)),
            st.binary(max_size=40).map(
                lambda d: (
                    StunMessage(StunMethod.DATA, StunClass.INDICATION).add(stun.DATA, d).encode()
                )
            ),
        ),
        max_size=10,
    ),
    st.lists(st.integers(1, 50), min_size=1, max_size=10),
)
def test_stream_framer_reassembles_any_split(
    frames: list[tuple[int, bytes] | bytes], cuts: list[int]
) -> None:
    wire = b""
    expected: list[bytes] = []
    for frame in frames:
        if isinstance(frame, tuple):
            channel, payload = frame
            wire += encode_channel_data(channel, payload, pad=True)
            expected.append(encode_channel_data(channel, payload))
        else:
            wire += frame
            expected.append(frame)
    framer = StreamFramer()
    got: list[bytes] = []
    pos, i = 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        got += framer.feed(wire[pos : pos + step])
        pos += step
        i += 1
    assert got == expected
    assert framer.buffered == 0
    for data in got:
        if stun.is_channel_data(data):
            parse_channel_data(data)
        else:
            parse_message(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_stream_framer_raises_only_parse_errors(data: bytes) -> None:
    framer = StreamFramer()
    try:
        for frame in framer.feed(data):
            assert frame[0] < 4 or 64 <= frame[0] <= 79
    except StunParseError:
        pass


def test_stream_framer_rejects_lost_framing() -> None:
    with pytest.raises(StunParseError):
        StreamFramer().feed(b"\x80\x00\x00\x00")


# (the ChannelData codec itself: test_stun_fuzz)


def test_error_code_reason_in_permission_failed_event() -> None:
    server = FakeTurnServer(
        override={
            StunMethod.CREATE_PERMISSION: lambda m: m.response(StunClass.ERROR).add(
                stun.ERROR_CODE, ErrorCode(508, "Full")
            )
        }
    )
    client, net = allocated(server)
    client.create_permission(PEER[0], 0.0)
    net.flush()
    assert net.take() == [PermissionFailed(PEER[0], 508, "508 Full")]


# -- RFC 8489 §9.2 details and IPv6 ---------------------------------------------------------------


def test_bid_down_is_refused() -> None:
    # "obMatJos2" + base64 of the feature set with "Password algorithms" (the first bit) set
    server = FakeTurnServer(nonce="obMatJos2gAAAabcdef")
    _, event = failed_allocation(server)
    assert event.code == 401
    assert "PASSWORD-ALGORITHMS" in event.reason
    assert len(server.requests(StunMethod.ALLOCATE)) == 1


def test_nonce_cookie_with_algorithms_present_is_fine() -> None:
    offered = (PasswordAlgorithmParams(PasswordAlgorithm.SHA256),)
    server = FakeTurnServer(nonce="obMatJos2gAAAabcdef", algorithms=offered)
    allocated(server)
    assert server.algorithm_used == PasswordAlgorithm.SHA256


def test_nonce_cookie_without_the_bit_needs_no_algorithms() -> None:
    server = FakeTurnServer(nonce="obMatJos2AAAAabcdef")
    allocated(server)
    assert server.algorithm_used == PasswordAlgorithm.MD5


def test_changed_password_algorithms_on_stale_nonce_are_not_followed() -> None:
    server = FakeTurnServer(algorithms=BOTH_ALGORITHMS)
    client, net = allocated(server)
    server.nonce = "nonce-2"
    server.algorithms = (PasswordAlgorithmParams(PasswordAlgorithm.MD5),)
    client.create_permission(PEER[0], 1.0)
    net.flush()
    (event,) = net.take()
    assert isinstance(event, PermissionFailed) and event.code == 438


def test_ipv6_relay_is_requested_and_ipv6_addresses_decode() -> None:
    relayed6: Address = ("2001:db8::1", 50000)
    peer6: Address = ("2001:db8::99", 5004)
    server = FakeTurnServer(
        override={
            StunMethod.ALLOCATE: lambda m: (
                m.response()
                .add(stun.XOR_RELAYED_ADDRESS, relayed6)
                .add(stun.XOR_MAPPED_ADDRESS, ("2001:db8::7", 40000))
                .add(stun.LIFETIME, 600)
            )
        }
    )
    client = TurnClient(SERVER, USER, PASSWORD, ipv6_relay=True)
    net = Net(client, server)
    client.allocate(0.0)
    net.flush()
    server.allocated = True
    assert net.take() == [Allocated(relayed6, ("2001:db8::7", 40000), 600)]
    assert all(m.get(stun.REQUESTED_ADDRESS_FAMILY) == 2 for m in server.requests(3))
    client.send(b"six", peer6, 1.0)
    net.flush()
    assert server.permissions == {peer6[0]: 1}
    assert server.indications == [(peer6, b"six")]
    assert client.receive(server.data_indication(peer6, b"back"), SERVER, 2.0)
    assert client.next_event() == DataReceived(peer6, b"back")


def test_default_allocation_asks_for_no_address_family() -> None:
    server = FakeTurnServer()
    allocated(server)
    assert all(stun.REQUESTED_ADDRESS_FAMILY not in m for m in server.requests(StunMethod.ALLOCATE))


def test_lost_channel_refresh_is_retried_and_the_channel_kept() -> None:
    server = FakeTurnServer()
    client, net = allocated_with_channel(server)

    def lose_refreshes(msg: StunMessage) -> StunMessage | None:
        return None

    server.override[StunMethod.CHANNEL_BIND] = lose_refreshes
    net.run_until(590.0)  # the refresh at 540 s times out at 579.5 s; retries follow
    assert client.channel_for(PEER) == 0x4000
    del server.override[StunMethod.CHANNEL_BIND]
    net.run_until(599.0)
    assert client.channel_for(PEER) == 0x4000
    assert not [e for e in net.take() if isinstance(e, ChannelBindFailed)]
    times = [t for t, _ in net.sent_requests(StunMethod.CHANNEL_BIND)]
    assert times[0] == 0.0 and times[1] == 540.0 and max(times) < 600.0


def test_channel_refresh_that_never_succeeds_ends_the_binding() -> None:
    server = FakeTurnServer()
    client, net = allocated_with_channel(server)
    server.override[StunMethod.CHANNEL_BIND] = lambda m: None
    net.run_until(700.0)
    failed = [e for e in net.take() if isinstance(e, ChannelBindFailed)]
    assert failed == [ChannelBindFailed(PEER, 0x4000, None, "no answer to ChannelBind")]
    assert client.channel_for(PEER) is None
    # the number is not reused: the server may still hold it for the old peer
    del server.override[StunMethod.CHANNEL_BIND]
    assert client.bind_channel(PEER, net.now) == 0x4001
    net.flush()
    assert client.channel_for(PEER) == 0x4001


# -- chaos: random loss, duplication, nonce rotation and operations -----------------------------


class LossyNet(Net):
    """Net that loses and duplicates datagrams in both directions, deterministically."""

    def __init__(self, client: TurnClient, server: FakeTurnServer, seed: int, loss: float) -> None:
        super().__init__(client, server)
        import random

        self.rng = random.Random(seed)
        self.loss = loss

    def deliver(self, data: bytes, addr: Address) -> None:
        server = self.servers.get(addr)
        if server is None or self.rng.random() < self.loss:
            return
        server.now = self.now
        copies = 2 if self.rng.random() < 0.1 else 1
        for _ in range(copies):
            for reply in server.handle(data):
                if self.rng.random() >= self.loss:
                    self.client.receive(reply, addr, self.now)


PEERS = [PEER, PEER2, ("203.0.113.7", 8000)]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0.0, 400.0)),
        st.tuples(st.just("send"), st.integers(0, len(PEERS) - 1)),
        st.tuples(st.just("bind"), st.integers(0, len(PEERS) - 1)),
        st.tuples(st.just("rotate"), st.just(0)),
        st.tuples(st.just("close"), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([0.0, 0.1, 0.3, 0.5]), operations)
def test_random_loss_and_operations_keep_the_client_consistent(
    seed: int, loss: float, ops: list[tuple[str, float]]
) -> None:
    server = FakeTurnServer()
    client = TurnClient(SERVER, USER, PASSWORD)
    net = LossyNet(client, server, seed, loss)
    client.allocate(0.0)
    net.run_until(60.0)
    nonces = iter(range(1000))
    for op, arg in ops:
        if op == "advance":
            net.run_until(net.now + arg)
        elif op == "send":
            accepted = client.send(b"payload", PEERS[int(arg)], net.now)
            if client.state is not TurnState.ALLOCATED:
                assert not accepted
        elif op == "bind" and client.state is TurnState.ALLOCATED:
            assert 0x4000 <= client.bind_channel(PEERS[int(arg)], net.now) <= 0x4FFF
        elif op == "rotate":
            server.nonce = f"rotated-{next(nonces)}"
        elif op == "close":
            client.close(net.now)
        net.flush()
        # invariants
        state = client.state
        if state is TurnState.ALLOCATED:
            assert client.expires_at is not None and client.expires_at > net.now
            assert server.allocated  # the server never lost an allocation we think we hold
        timer = client.get_timer()
        if state in (TurnState.CLOSED, TurnState.FAILED, TurnState.EXPIRED):
            assert timer is None
            assert client.send(b"x", PEER, net.now) is False
        for peer in PEERS:
            bound = client.channel_for(peer)
            if bound is not None:
                assert server.channels.get(bound) == peer
    # the event stream tells one consistent story
    kinds = [type(e) for e in net.events]
    assert kinds.count(Allocated) <= 1
    terminal = (AllocationFailed, AllocationExpired, Deallocated)
    ends = [i for i, k in enumerate(kinds) if k in terminal]
    assert len(ends) <= 1
    if ends:
        assert all(k not in (ChannelBound, PermissionCreated) for k in kinds[ends[0] + 1 :])
    if Allocated in kinds:
        assert AllocationFailed not in kinds
    # nothing reached the server for a peer without a live permission or channel
    assert server.violations == []
    for peer, payload in server.indications:
        assert peer in PEERS and payload == b"payload"
    for number, payload in server.channel_data:
        assert number in server.channels and payload == b"payload"


def test_overdue_permission_is_not_used() -> None:
    server = FakeTurnServer()
    client, net = allocated(server)
    client.create_permission(PEER[0], 0.0)
    net.flush()
    server.override[StunMethod.CREATE_PERMISSION] = lambda m: None  # refreshes get lost
    net.run_until(310.0)  # refresh at 240 s timed out at 279.5 s; the retry is still running
    assert client.send(b"late", PEER, net.now)
    net.flush()
    assert server.indications == [] and server.violations == []
    net.run_until(400.0)
    assert PermissionFailed(PEER[0], None, "no answer to CreatePermission") in net.take()
    assert server.indications == []


def test_overdue_channel_is_not_used() -> None:
    server = FakeTurnServer()
    client, net = allocated_with_channel(server)
    server.override[StunMethod.CHANNEL_BIND] = lambda m: None
    net.run_until(610.0)
    assert client.send(b"late", PEER, net.now)  # the permission (via CreatePermission) lives
    net.flush()
    assert server.channel_data == [] and server.indications == [(PEER, b"late")]
    assert server.violations == []


def test_oversized_payload_is_refused_up_front() -> None:
    from ice.turn import MAX_PAYLOAD

    client, net = allocated()
    with pytest.raises(ValueError):
        client.send(bytes(MAX_PAYLOAD + 1), PEER, 1.0)
    assert client.send(bytes(MAX_PAYLOAD), PEER, 1.0)
    net.flush()  # the largest payload goes out in a Send indication once permitted
    assert len(server_of(net).indications[0][1]) == MAX_PAYLOAD
    client.bind_channel(PEER, 2.0)
    net.flush()
    assert client.send(bytes(MAX_PAYLOAD), PEER, 3.0)
    net.flush()
    assert len(server_of(net).channel_data[-1][1]) == MAX_PAYLOAD


attribute_soup = st.lists(
    st.tuples(
        st.sampled_from(
            [
                stun.XOR_RELAYED_ADDRESS.type,
                stun.XOR_MAPPED_ADDRESS.type,
                stun.LIFETIME.type,
                stun.ERROR_CODE.type,
                stun.REALM.type,
                stun.NONCE.type,
                stun.PASSWORD_ALGORITHMS.type,
                stun.ALTERNATE_SERVER.type,
                stun.XOR_PEER_ADDRESS.type,
                stun.DATA.type,
                0x8055,
            ]
        ),
        st.binary(max_size=24),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(attribute_soup, attribute_soup, st.booleans(), st.booleans())
def test_authentic_responses_with_arbitrary_attributes_never_raise(
    challenge_attrs: list[tuple[int, bytes]],
    answer_attrs: list[tuple[int, bytes]],
    challenge_is_error: bool,
    answer_is_error: bool,
) -> None:
    server = FakeTurnServer()
    client = TurnClient(SERVER, USER, PASSWORD)
    client.allocate(0.0)
    ((first, _),) = client.datagrams_to_send()
    request = parse_message(first)
    challenge = request.error_response(401) if challenge_is_error else request.response()
    challenge.attributes.extend(challenge_attrs)
    challenge.add(stun.REALM, REALM).add(stun.NONCE, "n")
    client.receive(challenge.encode(), SERVER, 0.1)
    out = client.datagrams_to_send()
    for data, _ in out:
        second = parse_message(data)
        answer = second.response(StunClass.ERROR if answer_is_error else StunClass.SUCCESS)
        answer.attributes.extend(answer_attrs)
        client.receive(answer.encode(server.key()), SERVER, 0.2)
    while (event := client.next_event()) is not None:
        assert isinstance(event, Allocated | AllocationFailed)
    assert client.state in (TurnState.ALLOCATING, TurnState.ALLOCATED, TurnState.FAILED)
    client.handle_timer(100.0)
    if client.state is TurnState.ALLOCATED:
        client.send(b"x", PEER, 100.0)
        client.close(101.0)


def test_late_duplicate_responses_are_absorbed() -> None:
    server = FakeTurnServer()
    client = TurnClient(SERVER, USER, PASSWORD)
    client.allocate(0.0)
    challenge, success = allocate_by_hand(client, server)
    assert client.receive(success, SERVER, 0.1)
    assert isinstance(client.next_event(), Allocated)
    # the same answers again (a retransmission answered twice): ours, and without effect
    assert client.receive(success, SERVER, 0.2)
    assert client.receive(challenge, SERVER, 0.2)
    assert client.next_event() is None and client.state is TurnState.ALLOCATED
    # a Binding response from the same server is somebody else's business (shared socket)
    binding = StunMessage(StunMethod.BINDING, StunClass.SUCCESS)
    binding.add(stun.XOR_MAPPED_ADDRESS, CLIENT)
    assert not client.receive(binding.encode(fingerprint=True), SERVER, 0.3)


# -- dual allocation (ADDITIONAL-ADDRESS-FAMILY) -------------------------------------------------


@pytest.mark.parametrize("draft", [False, True])
def test_dual_allocation_reports_both_relayed_addresses(draft: bool) -> None:
    relayed6: Address = ("2001:db8::1", 50002)

    def dual(msg: StunMessage) -> StunMessage:
        asked = msg.get(stun.ADDITIONAL_ADDRESS_FAMILY)
        assert asked == 2 and msg.get_raw(0x8032) == b"\x02\x00\x00\x00"
        assert stun.REQUESTED_ADDRESS_FAMILY not in msg
        return (
            msg.response()
            .add(stun.XOR_RELAYED_ADDRESS, relayed6)  # order is not significant
            .add(stun.XOR_RELAYED_ADDRESS, RELAYED)
            .add(stun.XOR_MAPPED_ADDRESS, CLIENT)
            .add(stun.LIFETIME, 600)
        )

    server = FakeTurnServer(override={StunMethod.ALLOCATE: dual})
    client = TurnClient(SERVER, USER, PASSWORD, additional_ipv6=True)
    net = Net(client, server)
    client.allocate(0.0)
    net.flush()
    assert net.take() == [Allocated(RELAYED, CLIENT, 600, relayed6, None)]
    assert client.relayed_address == RELAYED and client.additional_relayed_address == relayed6


@pytest.mark.parametrize("code_point", [0x8001, 0x8033])
def test_refused_additional_family_is_reported(code_point: int) -> None:
    def refuse_v6(msg: StunMessage) -> StunMessage:
        resp = msg.response().add(stun.XOR_RELAYED_ADDRESS, RELAYED).add(stun.LIFETIME, 600)
        return resp.add_raw(code_point, b"\x02\x00\x04\x28" + b"Address Family not Supported")

    server = FakeTurnServer(override={StunMethod.ALLOCATE: refuse_v6})
    client = TurnClient(SERVER, USER, PASSWORD, additional_ipv6=True)
    net = Net(client, server)
    client.allocate(0.0)
    net.flush()
    (event,) = net.take()
    assert isinstance(event, Allocated)
    assert event.relayed == RELAYED and event.additional_relayed is None
    assert event.additional_error == "440 Address Family not Supported"


def test_ipv6_relay_and_dual_allocation_exclude_each_other() -> None:
    with pytest.raises(ValueError):
        TurnClient(SERVER, USER, PASSWORD, ipv6_relay=True, additional_ipv6=True)


def test_icmp_in_a_data_indication_reports_the_peer_unreachable() -> None:
    from ice.stun import IcmpInfo

    client, net = allocated()
    msg = StunMessage(StunMethod.DATA, StunClass.INDICATION).add(stun.XOR_PEER_ADDRESS, PEER)
    msg.add(stun.ICMP, IcmpInfo(3, 3))
    assert client.receive(msg.encode(), SERVER, 1.0)
    assert client.next_event() == PeerUnreachable(PEER, 3, 3)
    bad = StunMessage(StunMethod.DATA, StunClass.INDICATION).add(stun.XOR_PEER_ADDRESS, PEER)
    bad.add_raw(stun.ICMP.type, b"\x00\x00\x03")
    assert not client.receive(bad.encode(), SERVER, 1.0)
    assert client.next_event() is None


def test_close_during_an_authenticated_allocate_releases_blindly() -> None:
    server = FakeTurnServer()
    client = TurnClient(SERVER, USER, PASSWORD)
    client.allocate(0.0)
    _, success = allocate_by_hand(client, server)  # the server allocated; answer in flight
    client.close(0.1)
    assert client.state is TurnState.CLOSED and client.get_timer() is None
    ((release, addr),) = client.datagrams_to_send()
    assert addr == SERVER
    server.handle(release)
    assert not server.allocated
    assert server.requests(StunMethod.REFRESH)[-1].get(stun.LIFETIME) == 0
    assert client.receive(success, SERVER, 0.2)  # the late answer is absorbed
    assert client.next_event() is None


def test_close_before_any_credentials_sends_nothing() -> None:
    client = TurnClient(SERVER, USER, PASSWORD)
    client.allocate(0.0)
    client.datagrams_to_send()
    client.close(0.1)
    assert client.datagrams_to_send() == [] and client.next_event() is None


def test_wire_trace_never_shows_the_password(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.DEBUG, logger="ice.trace"):
        client, net = allocated()
        client.bind_channel(PEER, 1.0)
        net.flush()
        client.send(b"hello", PEER, 2.0)
        net.flush()
        client.receive(b"\x40\x00\x00", SERVER, 3.0)  # unparsable
    trace = [r.getMessage() for r in caplog.records if r.name == "ice.trace"]
    assert any("ALLOCATE REQUEST" in line for line in trace)
    assert any("ChannelData 0x4000 5 bytes" in line for line in trace)
    assert all(PASSWORD not in line for line in caplog.text.splitlines())
