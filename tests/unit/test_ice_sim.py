"""Two ICE agents connected through a simulated network with NATs, on a virtual clock.

The network model: hosts sit on LANs behind NAT routers (or directly on the "public" net).
A NAT maps an inside (address, port) to a public port either once for every destination
(endpoint-independent mapping, RFC 4787 §4.1) or once per destination (address-and-port
dependent, "symmetric"); it lets packets in only from destinations the mapping has sent to
(port-restricted filtering) or from their IP (address-restricted), or from anyone (none).  A
TURN relay is modelled as a reachable public address that forwards both ways for its owner,
with permissions: only peers whose IP the owner has sent to get in (RFC 8656 §9).  Packets can
be lost, duplicated, delayed and reordered (jitter), all from a seeded RNG.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ice.agent import (
    Agent,
    AgentEvent,
    Completed,
    ConsentLost,
    Failed,
    PairNominated,
    RoleChanged,
)
from ice.candidate import Candidate, CandidateType
from ice.checklist import PairState
from ice.stun import (
    USE_CANDIDATE,
    USERNAME,
    XOR_MAPPED_ADDRESS,
    StunClass,
    StunMessage,
    StunMethod,
    StunParseError,
    parse_message,
)

Address = tuple[str, int]
STUN_SERVER: Address = ("198.51.100.1", 3478)
RELAY_IP = "198.51.100.10"


@dataclass
class Nat:
    public_ip: str
    mapping: str = "eim"  # "eim" | "symmetric"
    filtering: str = "port"  # "port" | "address" | "none"
    _next_port: int = 40000
    _maps: dict[object, int] = field(default_factory=dict)
    _inside: dict[int, Address] = field(default_factory=dict)
    _allowed: dict[int, set[Address]] = field(default_factory=dict)

    def outbound(self, src: Address, dst: Address) -> Address:
        key: object = src if self.mapping == "eim" else (src, dst)
        port = self._maps.get(key)
        if port is None:
            port = self._next_port
            self._next_port += 1
            self._maps[key] = port
            self._inside[port] = src
            self._allowed[port] = set()
        self._allowed[port].add(dst)
        return self.public_ip, port

    def inbound(self, dst_port: int, src: Address) -> Address | None:
        inside = self._inside.get(dst_port)
        if inside is None:
            return None
        allowed = self._allowed[dst_port]
        if self.filtering == "port" and src not in allowed:
            return None
        if self.filtering == "address" and src[0] not in {a[0] for a in allowed}:
            return None
        return inside


@dataclass
class Host:
    """One agent's machine: its sockets (one per component), NAT and relay."""

    name: str
    agent: Agent
    ip: str
    nat: Nat | None = None
    relay: bool = False
    sockets: dict[int, Address] = field(default_factory=dict)  # component -> local address
    relays: dict[int, Address] = field(default_factory=dict)  # component -> relayed address
    events: list[tuple[float, AgentEvent]] = field(default_factory=list)
    media: list[tuple[Hashable, Address, bytes]] = field(default_factory=list)


class Network:
    def __init__(
        self,
        *,
        delay: float = 0.010,
        loss: float = 0.0,
        seed: int = 1,
        jitter: float = 0.0,
        duplicate: float = 0.0,
    ) -> None:
        self.base_delay = delay
        self.jitter = jitter
        self.duplicate = duplicate
        self.loss = loss
        self.rng = random.Random(seed)
        self.now = 0.0
        self.hosts: list[Host] = []
        self._queue: list[tuple[float, int, Address, Address, bytes, Host | None]] = []
        self._seq = itertools.count()
        self._sockets: dict[Address, tuple[Host, int]] = {}
        self._socket_nat: dict[Address, Nat | None] = {}
        self._relays: dict[Address, tuple[Host, int]] = {}
        self._next_relay_port = 50000
        self._permissions: dict[Address, set[str]] = {}
        self.sent = 0
        self.dropped = 0
        self.blocked = False  # drop everything (consent tests)
        self.tap: Callable[[Host, bytes, Hashable, Address], None] | None = None

    # -- topology ------------------------------------------------------------------------

    def add_host(
        self,
        name: str,
        agent: Agent,
        ip: str,
        *,
        nat: Nat | None = None,
        relay: bool = False,
        stun: bool = True,
        ip6: str | None = None,
    ) -> Host:
        """``ip6``: also a public (un-NATed) IPv6 address, a second socket per component."""
        host = Host(name, agent, ip, nat, relay)
        self.hosts.append(host)
        for component in range(1, agent.components + 1):
            addr = (ip, 5000 + 2 * len(self._sockets) + component)
            host.sockets[component] = addr
            self._sockets[addr] = (host, component)
            self._socket_nat[addr] = nat
            agent.add_local_candidate(
                Candidate.make(CandidateType.HOST, addr[0], addr[1], component=component), addr
            )
            if ip6 is not None:
                addr6 = (ip6, addr[1])
                self._sockets[addr6] = (host, component)
                self._socket_nat[addr6] = None
                agent.add_local_candidate(
                    Candidate.make(
                        CandidateType.HOST,
                        ip6,
                        addr[1],
                        component=component,
                        local_preference=65534,  # RFC 8421: one preference per interface
                    ),
                    addr6,
                )
            if nat is not None and stun:
                mapped = nat.outbound(addr, STUN_SERVER)
                agent.add_local_candidate(
                    Candidate.make(
                        CandidateType.SERVER_REFLEXIVE,
                        mapped[0],
                        mapped[1],
                        component=component,
                        base_address=addr[0],
                        server_address=STUN_SERVER[0],
                        related=addr,
                    ),
                    addr,
                )
            if relay:
                raddr = (RELAY_IP, self._next_relay_port)
                self._next_relay_port += 1
                host.relays[component] = raddr
                self._relays[raddr] = (host, component)
                agent.add_local_candidate(
                    Candidate.make(
                        CandidateType.RELAYED,
                        raddr[0],
                        raddr[1],
                        component=component,
                        server_address=RELAY_IP,
                        related=addr,
                    ),
                    ("relay", raddr),
                )
        return host

    def permit(self, host: Host) -> None:
        """What the shell does once the remote candidates are known: a TURN permission on
        each of ``host``'s allocations for every remote candidate's IP (RFC 8656 §9)."""
        ips = {c.address for c in host.agent.remote_candidates()}
        for raddr in host.relays.values():
            self._permissions.setdefault(raddr, set()).update(ips)

    # -- packets -------------------------------------------------------------------------

    @property
    def delay(self) -> float:
        """One hop's delay: the base delay plus uniform jitter (which reorders packets)."""
        if self.jitter:
            return self.base_delay + self.rng.uniform(0, self.jitter)
        return self.base_delay

    def _lose(self) -> bool:
        return self.blocked or (self.loss > 0 and self.rng.random() < self.loss)

    def send(self, host: Host, data: bytes, via: Hashable, dst: Address) -> None:
        self.sent += 1
        if self._lose():
            self.dropped += 1
            return
        if self.duplicate and self.rng.random() < self.duplicate:
            self._send(host, data, via, dst)
        self._send(host, data, via, dst)

    def send_media(self, host: Host, component: int, payload: bytes) -> bool:
        """What the shell does with application data: send on the selected pair."""
        target = host.agent.send_target(component)
        if target is None:
            return False
        self.send(host, payload, target[0], target[1])
        return True

    def _send(self, host: Host, data: bytes, via: Hashable, dst: Address) -> None:
        if isinstance(via, tuple) and via and via[0] == "relay":
            relay_addr = via[1]
            # the TURN client installs a permission for the peer's IP on demand (RFC 8656 §9)
            self._permissions.setdefault(relay_addr, set()).add(dst[0])
            # client -> TURN server -> peer: one more hop
            self._route_public(relay_addr, dst, data, self.now + self.delay)
            return
        src = via
        assert isinstance(src, tuple) and src in self._sockets
        if (":" in src[0]) != (":" in dst[0]):
            return  # no route between address families
        nat = self._socket_nat[src]
        target = self._sockets.get(dst)
        if nat is not None:
            if target is not None and self._socket_nat[dst] is nat:
                self._push(self.now + self.delay, dst, src, data, None)  # same LAN
                return
            src = nat.outbound(src, dst)
        self._route_public(src, dst, data, self.now)

    def _route_public(self, src: Address, dst: Address, data: bytes, t: float) -> None:
        at = t + self.delay
        target = self._sockets.get(dst)
        if target is not None and self._socket_nat[dst] is None:
            self._push(at, dst, src, data, None)
            return
        if dst in self._relays:
            # the TURN server checks its permissions when the packet reaches it (run())
            self._push(at, dst, src, data, None)
            return
        if any(h.nat is not None and h.nat.public_ip == dst[0] for h in self.hosts):
            # the NAT filters when the packet reaches it (see run()), not when it was sent:
            # a pinhole its host opens meanwhile lets it in, as in a real network
            self._push(at, dst, src, data, None)

    def _through_nat(self, dst: Address, src: Address) -> Address | None:
        for host in self.hosts:
            if host.nat is not None and host.nat.public_ip == dst[0]:
                return host.nat.inbound(dst[1], src)
        return None

    def _push(
        self, at: float, dst: Address, src: Address, data: bytes, relay_owner: Host | None
    ) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), dst, src, data, relay_owner))

    # -- the event loop ------------------------------------------------------------------

    def flush(self) -> None:
        for host in self.hosts:
            for data, via, dst in host.agent.datagrams_to_send():
                if self.tap is not None:
                    self.tap(host, data, via, dst)
                self.send(host, data, via, dst)
            while (event := host.agent.next_event()) is not None:
                host.events.append((self.now, event))

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        self.flush()
        while True:
            if stop is not None and stop():
                return
            times = [t for h in self.hosts if (t := h.agent.get_timer()) is not None]
            if self._queue:
                times.append(self._queue[0][0])
            if not times:
                return
            t = max(min(times), self.now)
            if t > until:
                self.now = until
                return
            self.now = t
            while self._queue and self._queue[0][0] <= t:
                _, _, dst, src, data, relay_owner = heapq.heappop(self._queue)
                receiver: Host | None = relay_owner
                via: Hashable = ("relay", dst)
                if receiver is None and dst in self._relays:
                    if src[0] in self._permissions.get(dst, set()):  # RFC 8656 §9: else dropped
                        self._push(t + self.delay, dst, src, data, self._relays[dst][0])
                    continue
                if receiver is None:
                    if dst not in self._sockets:
                        inside = self._through_nat(dst, src)
                        if inside is None:
                            continue  # filtered by the NAT
                        dst = inside
                    owner = self._sockets.get(dst)
                    receiver, via = (owner[0], dst) if owner is not None else (None, None)
                if receiver is not None and not receiver.agent.receive(data, via, src, t):
                    receiver.media.append((via, src, data))
            for host in self.hosts:
                timer = host.agent.get_timer()
                if timer is not None and timer <= t:
                    host.agent.handle_timer(t)
            self.flush()


def exchange(a: Agent, b: Agent, *, lite_b: bool = False) -> None:
    """Offer/answer: each side learns the other's credentials and candidates."""
    a.set_remote_parameters(b.local_ufrag, b.local_pwd, lite=lite_b)
    b.set_remote_parameters(a.local_ufrag, a.local_pwd)
    for c in b.local_candidates():
        a.add_remote_candidate(c)
    for c in a.local_candidates():
        b.add_remote_candidate(c)
    a.end_of_candidates()
    b.end_of_candidates()


def run_connected(net: Network, a: Host, b: Host, *, permit: bool) -> None:
    """Exchange candidates, with ``permit`` TURN permissions for the peer's addresses up
    front (as IceConnection asks for them), start both at 0 and run until both complete."""
    exchange(a.agent, b.agent)
    if permit:
        net.permit(a)
        net.permit(b)
    a.agent.start(0.0)
    b.agent.start(0.0)
    net.run(40.0, completed(a, b))
    assert completed(a, b)(), (a.events[-2:], b.events[-2:])


def completed(*hosts: Host) -> Callable[[], bool]:
    return lambda: all(any(isinstance(e, Completed) for _, e in h.events) for h in hosts)


def first(host: Host, kind: type) -> tuple[float, AgentEvent] | None:
    return next(((t, e) for t, e in host.events if isinstance(e, kind)), None)


def pair_types(agent: Agent, component: int = 1) -> tuple[str, str]:
    pair = agent.selected_pair(component)
    assert pair is not None
    return pair.local.candidate.type.value, pair.remote.type.value


def connect(net: Network, a: Host, b: Host, *, until: float = 40.0, lite_b: bool = False) -> float:
    exchange(a.agent, b.agent, lite_b=lite_b)
    a.agent.start(net.now)
    if not lite_b:
        b.agent.start(net.now)
    net.run(until, completed(a) if lite_b else completed(a, b))
    done = first(a, Completed)
    assert done is not None, f"{a.name} did not complete: {a.events}"
    return done[0]


def agents_agree(a: Agent, b: Agent, component: int = 1) -> None:
    """Both sides selected the same 5-tuple (seen from each end, modulo NATs)."""
    pa, pb = a.selected_pair(component), b.selected_pair(component)
    assert pa is not None and pb is not None
    # each side's remote is the other side's local (the address the peer is seen at)
    assert pa.remote_address == pb.local.address or pa.remote.type is CandidateType.PEER_REFLEXIVE
    assert pb.remote_address == pa.local.address or pb.remote.type is CandidateType.PEER_REFLEXIVE


def media_flows(net: Network, a: Host, b: Host, component: int = 1) -> None:
    """Application data sent on each side's selected pair arrives on the other side's selected
    pair (the 5-tuples match through the NATs and relays) and passes its filter."""
    tag = f"{component}:{net.now}".encode()
    for _ in range(3):  # a few packets, in case the network loses some
        assert net.send_media(a, component, b"\x80A" + tag)
        assert net.send_media(b, component, b"\x80B" + tag)
    net.run(net.now + 1.0)
    for receiver, payload in ((b, b"\x80A" + tag), (a, b"\x80B" + tag)):
        got = [(via, src) for via, src, data in receiver.media if data == payload]
        assert got, f"{receiver.name} received no media on component {component}"
        for via, src in got:
            assert receiver.agent.is_from_selected(component, src, via)
            assert receiver.agent.component_of(via, src) == component


def check_invariants(agent: Agent) -> None:
    """No pair is In-Progress without a live transaction (it would block its foundation's
    Frozen pairs for good, §6.1.4.2); Waiting pairs exist only while checks can run."""
    live = {id(c.pair) for c in agent._checks.values() if not c.cancelled}
    for pair in agent.checklist:
        if pair.state is PairState.IN_PROGRESS:
            assert id(pair) in live, f"stuck In-Progress: {pair}"


def make(controlling: bool, components: int = 1, seed: int = 0, **kw: object) -> Agent:
    return Agent(
        controlling,
        components,
        ta=0.02,
        rng=random.Random(seed),
        tie_breaker=(1 << 40) + seed,
        **kw,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------------------------


def test_host_host_same_lan_picks_host_pair() -> None:
    net = Network(delay=0.001)
    lan = Nat("203.0.113.1")
    a = net.add_host("a", make(True, seed=1), "10.0.1.2", nat=lan)
    b = net.add_host("b", make(False, seed=2), "10.0.1.3", nat=lan)
    t = connect(net, a, b)
    assert completed(a, b)()
    assert pair_types(a.agent) == ("host", "host")
    assert pair_types(b.agent) == ("host", "host")
    agents_agree(a.agent, b.agent)
    media_flows(net, a, b)
    print(f"host/host connect {t * 1000:.1f} ms (RTT 2 ms, Ta 20 ms)")


def test_dual_stack_prefers_the_working_ipv6_host_pair() -> None:
    """IPv4 behind NATs, IPv6 public: pairs only within a family (§6.1.2.2), the direct IPv6
    host pair wins over the IPv4 reflexive ones."""
    net = Network(delay=0.01)
    a = net.add_host(
        "a", make(True, seed=1), "10.0.1.2", nat=Nat("203.0.113.1"), ip6="2001:db8:1::2"
    )
    b = net.add_host(
        "b", make(False, seed=2), "10.0.2.2", nat=Nat("203.0.113.2"), ip6="2001:db8:2::2"
    )
    connect(net, a, b)
    assert completed(a, b)()
    for pair in a.agent.checklist:
        assert pair.local.candidate.is_ipv6 == pair.remote.is_ipv6
    selected = a.agent.selected_pair(1)
    assert selected is not None and selected.remote.is_ipv6
    assert pair_types(a.agent) == ("host", "host")
    media_flows(net, a, b)


def test_public_hosts_connect_fast() -> None:
    net = Network(delay=0.025)
    a = net.add_host("a", make(True, seed=1), "203.0.113.5")
    b = net.add_host("b", make(False, seed=2), "198.51.100.7")
    t = connect(net, a, b)
    assert pair_types(a.agent) == ("host", "host")
    assert b.agent.selected_pair(1) is not None
    print(f"public host/host connect {t * 1000:.1f} ms (RTT 50 ms, Ta 20 ms)")
    stats = a.agent.stats()
    assert stats.connect_time is not None and stats.selected[1]["local"]


def test_eim_eim_picks_reflexive_direct_pair() -> None:
    net = Network(delay=0.02)
    a = net.add_host("a", make(True, seed=1), "10.0.1.2", nat=Nat("203.0.113.1"), relay=True)
    b = net.add_host("b", make(False, seed=2), "10.0.2.2", nat=Nat("203.0.113.2"), relay=True)
    t = connect(net, a, b)
    completed(a, b)
    for agent in (a.agent, b.agent):
        local, remote = pair_types(agent)
        assert local in ("srflx", "prflx") and remote in ("srflx", "prflx"), (local, remote)
    agents_agree(a.agent, b.agent)
    media_flows(net, a, b)
    print(f"eim/eim connect {t * 1000:.1f} ms (RTT 40 ms)")


def test_symmetric_symmetric_picks_relay_pair() -> None:
    net = Network(delay=0.02)
    nat_a = Nat("203.0.113.1", mapping="symmetric")
    nat_b = Nat("203.0.113.2", mapping="symmetric")
    a = net.add_host("a", make(True, seed=1), "10.0.1.2", nat=nat_a, relay=True)
    b = net.add_host("b", make(False, seed=2), "10.0.2.2", nat=nat_b, relay=True)
    t = connect(net, a, b)
    assert completed(a, b)()
    types_a = pair_types(a.agent)
    types_b = pair_types(b.agent)
    assert "relay" in types_a, types_a
    assert "relay" in types_b or types_b[1] == "prflx", types_b
    media_flows(net, a, b)
    print(f"sym/sym connect {t * 1000:.1f} ms via {types_a}")


def test_symmetric_without_relay_fails() -> None:
    net = Network(delay=0.02)
    a_agent = make(True, seed=1, timeout=60.0, check_rc=3, check_rm=4)
    b_agent = make(False, seed=2, timeout=60.0, check_rc=3, check_rm=4)
    a = net.add_host("a", a_agent, "10.0.1.2", nat=Nat("203.0.113.1", mapping="symmetric"))
    b = net.add_host("b", b_agent, "10.0.2.2", nat=Nat("203.0.113.2", mapping="symmetric"))
    exchange(a_agent, b_agent)
    a_agent.start(0.0)
    b_agent.start(0.0)
    net.run(60.0, lambda: first(a, Failed) is not None and first(b, Failed) is not None)
    fa, fb = first(a, Failed), first(b, Failed)
    assert fa is not None and fb is not None
    assert fa[0] < 30.0, "failed only by the overall timeout, not by every pair failing"
    assert a_agent.send_target(1) is None


def test_eim_address_restricted_vs_symmetric_uses_prflx() -> None:
    net = Network(delay=0.02)
    a = net.add_host(
        "a", make(True, seed=1), "10.0.1.2", nat=Nat("203.0.113.1", filtering="address")
    )
    b = net.add_host(
        "b", make(False, seed=2), "10.0.2.2", nat=Nat("203.0.113.2", mapping="symmetric")
    )
    connect(net, a, b)
    assert completed(a, b)()
    # a sees b at a port b never signalled: a peer-reflexive remote candidate
    assert a.agent.selected_pair(1) is not None
    types = {pair_types(a.agent)[1], pair_types(b.agent)[0]}
    assert "prflx" in types
    media_flows(net, a, b)


@pytest.mark.parametrize("both", ["controlling", "controlled"])
def test_role_conflict_resolved(both: str) -> None:
    net = Network(delay=0.01)
    is_controlling = both == "controlling"
    a = net.add_host("a", make(is_controlling, seed=1), "203.0.113.5")
    b = net.add_host("b", make(is_controlling, seed=2), "198.51.100.7")
    connect(net, a, b)
    assert completed(a, b)()
    assert a.agent.controlling != b.agent.controlling
    changed = [e for h in (a, b) for _, e in h.events if isinstance(e, RoleChanged)]
    assert changed, "someone had to change role"
    # the agent with the larger tie-breaker is controlling (§7.3.1.1)
    winner = a.agent if a.agent.tie_breaker > b.agent.tie_breaker else b.agent
    assert winner.controlling
    agents_agree(a.agent, b.agent)


class AggressiveAgent(Agent):
    """A pjnath/Asterisk-like controlling peer: USE-CANDIDATE on every check."""

    def _request(self, local: Candidate, use_candidate: bool, **kw: Any) -> tuple[StunMessage, int]:
        return super()._request(local, self.controlling, **kw)


def test_aggressive_nomination_accepted() -> None:
    net = Network(delay=0.015)
    peer = AggressiveAgent(True, ta=0.02, rng=random.Random(3), tie_breaker=9)
    a = net.add_host("pjnath", peer, "10.0.1.2", nat=Nat("203.0.113.1"))
    b = net.add_host("us", make(False, seed=2), "10.0.2.2", nat=Nat("203.0.113.2"))
    connect(net, a, b)
    net.run(net.now + 2.0)
    assert completed(b)()
    # the controlled side selects the highest-priority nominated pair, which is the pair the
    # aggressive peer ended up with too
    assert b.agent.selected_pair(1) is not None
    agents_agree(a.agent, b.agent)
    nominations = [e for _, e in b.events if isinstance(e, PairNominated)]
    assert nominations
    media_flows(net, a, b)


class LitePeer:
    """An ice-lite peer (RFC 8445 §2.5): host candidate only, answers checks, never checks."""

    components = 1

    def __init__(self, address: Address) -> None:
        self.local_ufrag = "liteufrag"
        self.local_pwd = "litepasswordlitepassword"
        self.address = address
        self.outbox: list[tuple[bytes, Hashable, Address]] = []
        self.nominated: Address | None = None
        self.requests = 0

    def local_candidates(self) -> list[Candidate]:
        return [Candidate.make(CandidateType.HOST, *self.address)]

    def add_local_candidate(self, candidate: Candidate, via: Hashable) -> None:
        pass

    def receive(self, data: bytes, via: Hashable, src: Address, now: float) -> bool:
        try:
            msg = parse_message(data)
        except StunParseError:
            return False
        if msg.cls != StunClass.REQUEST or msg.method != StunMethod.BINDING:
            return False
        username = msg.get(USERNAME)
        key = self.local_pwd.encode()
        if username is None or not username.startswith(self.local_ufrag + ":"):
            return True
        if not msg.check_integrity(key):
            return True
        self.requests += 1
        if USE_CANDIDATE.type in msg:
            self.nominated = src
        resp = msg.response().add(XOR_MAPPED_ADDRESS, src)
        self.outbox.append((resp.encode(key, fingerprint=True), via, src))
        return True

    def datagrams_to_send(self) -> list[tuple[bytes, Hashable, Address]]:
        out, self.outbox = self.outbox, []
        return out

    def next_event(self) -> None:
        return None

    def get_timer(self) -> None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def test_lite_peer() -> None:
    net = Network(delay=0.01)
    # we start as controlled but must take the controlling role towards a lite peer (§6.1.1)
    a = net.add_host("a", make(False, seed=1), "10.0.1.2", nat=Nat("203.0.113.1"))
    lite = LitePeer(("198.51.100.20", 3000))
    b = net.add_host("lite", lite, "198.51.100.20")  # type: ignore[arg-type]
    lite.address = b.sockets[1]
    a.agent.set_remote_parameters(lite.local_ufrag, lite.local_pwd, lite=True)
    a.agent.add_remote_candidate(lite.local_candidates()[0])
    a.agent.end_of_candidates()
    a.agent.start(0.0)
    net.run(10.0, completed(a))
    assert completed(a)()
    assert a.agent.controlling
    assert b.sockets[1] == a.agent.selected_pair(1).remote_address  # type: ignore[union-attr]
    assert lite.nominated is not None and lite.nominated[0] == "203.0.113.1"


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_ten_percent_loss_still_connects(seed: int) -> None:
    net = Network(delay=0.02, loss=0.10, seed=seed)
    a = net.add_host("a", make(True, seed=seed), "10.0.1.2", nat=Nat("203.0.113.1"), relay=True)
    b = net.add_host(
        "b", make(False, seed=seed + 10), "10.0.2.2", nat=Nat("203.0.113.2"), relay=True
    )
    t = connect(net, a, b)
    net.run(net.now + 3.0, completed(a, b))
    assert completed(a, b)()
    media_flows(net, a, b)
    print(f"10% loss seed {seed}: connect {t * 1000:.1f} ms, {net.dropped}/{net.sent} lost")


def test_heavy_loss_connects_within_the_timeout() -> None:
    """36% loss each way (20% at each of two lossy laptops) between a cone and a symmetric NAT
    with relays: every run connects inside a 15 s overall timeout."""
    times = []
    for seed in range(30):
        net = Network(delay=0.005, loss=0.36, seed=seed)
        a_agent = Agent(True, ta=0.02, timeout=15.0, rng=random.Random(seed))
        b_agent = Agent(False, ta=0.02, timeout=15.0, rng=random.Random(seed + 1000))
        a = net.add_host("a", a_agent, "10.0.1.2", nat=Nat("203.0.113.1"), relay=True)
        b = net.add_host(
            "b", b_agent, "10.0.2.2", nat=Nat("203.0.113.2", mapping="symmetric"), relay=True
        )
        exchange(a_agent, b_agent)
        a_agent.start(0.0)
        b_agent.start(0.0)
        net.run(20.0, completed(a, b))
        assert completed(a, b)(), f"seed {seed}: {a.events[-2:]} {b.events[-2:]}"
        done_a, done_b = first(a, Completed), first(b, Completed)
        assert done_a is not None and done_b is not None
        times.append(max(done_a[0], done_b[0]))
    times.sort()
    print(f"36% loss: median {times[15]:.2f} s, worst {times[-1]:.2f} s (virtual)")


@pytest.mark.parametrize("components", [1, 2])
def test_components(components: int) -> None:
    net = Network(delay=0.01)
    a = net.add_host(
        "a", make(True, components, seed=1), "10.0.1.2", nat=Nat("203.0.113.1"), relay=True
    )
    b = net.add_host(
        "b", make(False, components, seed=2), "10.0.2.2", nat=Nat("203.0.113.2"), relay=True
    )
    t = connect(net, a, b)
    assert completed(a, b)()
    for component in range(1, components + 1):
        for agent in (a.agent, b.agent):
            pair = agent.selected_pair(component)
            assert pair is not None and pair.component == component
            assert pair.local.candidate.component == component
        agents_agree(a.agent, b.agent, component)
        media_flows(net, a, b, component)
    # each component travels on its own socket
    vias = {a.agent.selected_pair(c).via for c in range(1, components + 1)}  # type: ignore[union-attr]
    assert len(vias) == components
    print(f"{components} component(s): connect {t * 1000:.1f} ms")


def test_consent_lost_after_30_seconds() -> None:
    net = Network(delay=0.01)
    a = net.add_host("a", make(True, seed=1), "203.0.113.5")
    b = net.add_host("b", make(False, seed=2), "198.51.100.7")
    connect(net, a, b)
    # consent keeps the pair alive for a while
    net.run(net.now + 60.0)
    assert first(a, ConsentLost) is None and a.agent.send_target(1) is not None
    assert a.agent.stats().consent_requests_sent >= 8
    cut = net.now
    net.blocked = True
    net.run(cut + 40.0, lambda: first(a, ConsentLost) is not None)
    lost = first(a, ConsentLost)
    assert lost is not None
    assert 30.0 - 6.5 <= lost[0] - cut <= 30.0 + 0.1
    assert a.agent.send_target(1) is None
    assert not a.agent.has_consent(1)
    print(f"consent lost {lost[0] - cut:.1f} s after the cut")


def test_restart_with_a_slow_answer_keeps_consent_on_the_old_pair() -> None:
    """The re-offer takes a minute to get through (signalling trouble): the old pair keeps
    consent with the old credentials, which both sides still accept, and carries media."""
    net = Network(delay=0.02)
    a = net.add_host("a", make(True, seed=1), "10.0.1.2", nat=Nat("203.0.113.1"))
    b = net.add_host("b", make(False, seed=2), "10.0.2.2", nat=Nat("203.0.113.2"))
    connect(net, a, b)
    a.agent.restart(net.now)
    net.run(net.now + 60.0)
    assert first(a, ConsentLost) is None and first(b, ConsentLost) is None
    assert first(a, Failed) is None
    media_flows(net, a, b)
    # the offer reaches b, which restarts too; the answer comes straight back
    b.agent.set_remote_parameters(a.agent.local_ufrag, a.agent.local_pwd)
    for c in a.agent.local_candidates():
        b.agent.add_remote_candidate(c)
    b.agent.end_of_candidates()
    net.run(net.now + 0.1)
    a.agent.set_remote_parameters(b.agent.local_ufrag, b.agent.local_pwd)
    for c in b.agent.local_candidates():
        a.agent.add_remote_candidate(c)
    a.agent.end_of_candidates()
    a.events.clear()
    b.events.clear()
    net.run(net.now + 10.0, completed(a, b))
    assert completed(a, b)()
    media_flows(net, a, b)


def test_consent_survives_loss() -> None:
    net = Network(delay=0.03, loss=0.15, seed=7)
    a = net.add_host("a", make(True, seed=1), "10.0.1.2", nat=Nat("203.0.113.1"))
    b = net.add_host("b", make(False, seed=2), "10.0.2.2", nat=Nat("203.0.113.2"))
    connect(net, a, b)
    net.run(net.now + 600.0)
    assert first(a, ConsentLost) is None and first(b, ConsentLost) is None
    assert a.agent.stats().consent_requests_sent > 100


def test_restart_keeps_old_pair_until_new_nomination() -> None:
    net = Network(delay=0.02)
    a = net.add_host("a", make(True, seed=1), "10.0.1.2", nat=Nat("203.0.113.1"))
    b = net.add_host("b", make(False, seed=2), "10.0.2.2", nat=Nat("203.0.113.2"))
    connect(net, a, b)
    net.run(net.now + 7.0)
    old_target = a.agent.send_target(1)
    old_ufrag = a.agent.local_ufrag
    assert old_target is not None
    a.events.clear()
    b.events.clear()
    t0 = net.now
    a.agent.restart(t0)
    assert a.agent.local_ufrag != old_ufrag
    # media keeps flowing on the old pair while the new offer/answer is on its way
    targets = []
    net.run(t0 + 0.5)
    targets.append(a.agent.send_target(1))
    b.agent.restart(net.now)
    targets.append(b.agent.send_target(1))
    media_flows(net, a, b)  # both restarted, nothing new checked yet: the old pair carries media
    exchange(a.agent, b.agent)
    net.run(t0 + 20.0, completed(a, b))
    assert all(t is not None for t in targets)
    assert completed(a, b)()
    assert first(a, PairNominated) is not None
    assert a.agent.send_target(1) is not None
    assert a.agent.stats().restarts == 1
    media_flows(net, a, b)
    # consent on the new pair works with the new credentials
    net.run(net.now + 40.0)
    assert first(a, ConsentLost) is None and first(b, ConsentLost) is None
    media_flows(net, a, b)


def test_connect_time_within_two_rtts_and_ta() -> None:
    """Measured, printed, not asserted against a bound (timings are not pass/fail)."""
    for delay in (0.005, 0.025, 0.05):
        net = Network(delay=delay)
        a = net.add_host("a", make(True, seed=1, nomination_delay=0.0), "203.0.113.5")
        b = net.add_host("b", make(False, seed=2), "198.51.100.7")
        t = connect(net, a, b)
        tb = first(b, Completed)
        assert tb is not None
        rtt = 2 * delay
        print(
            f"RTT {rtt * 1000:.0f} ms: controlling {t * 1000:.1f} ms, controlled "
            f"{tb[0] * 1000:.1f} ms (target 2 RTT + Ta = {(2 * rtt + 0.02) * 1000:.0f} ms)"
        )


def test_failure_bounded_by_timeout_without_end_of_candidates() -> None:
    net = Network(delay=0.01)
    a_agent = make(True, seed=1, timeout=5.0)
    a = net.add_host("a", a_agent, "203.0.113.5")
    a_agent.set_remote_parameters("someufrag", "somepasswordsomepassword")
    a_agent.add_remote_candidate(Candidate.make(CandidateType.HOST, "198.51.100.99", 9))
    a_agent.start(0.0)
    net.run(30.0, lambda: first(a, Failed) is not None)
    failed = first(a, Failed)
    assert failed is not None and failed[0] == pytest.approx(5.0)


def test_peer_initiated_restart_is_followed() -> None:
    """New remote credentials without a local restart() are the peer's ICE restart (§9)."""
    net = Network(delay=0.02)
    a = net.add_host("a", make(True, seed=1), "10.0.1.2", nat=Nat("203.0.113.1"))
    b = net.add_host("b", make(False, seed=2), "10.0.2.2", nat=Nat("203.0.113.2"))
    connect(net, a, b)
    b_ufrag = b.agent.local_ufrag
    a.events.clear()
    b.events.clear()
    a.agent.restart(net.now)
    # the offer reaches b: new credentials, so b restarts by itself
    b.agent.set_remote_parameters(a.agent.local_ufrag, a.agent.local_pwd)
    assert b.agent.local_ufrag != b_ufrag
    for c in a.agent.local_candidates():
        b.agent.add_remote_candidate(c)
    b.agent.end_of_candidates()
    assert b.agent.send_target(1) is not None
    net.run(net.now + 0.3)
    # the answer reaches a
    a.agent.set_remote_parameters(b.agent.local_ufrag, b.agent.local_pwd)
    for c in b.agent.local_candidates():
        a.agent.add_remote_candidate(c)
    a.agent.end_of_candidates()
    net.run(net.now + 10.0, completed(a, b))
    assert completed(a, b)()
    assert a.agent.stats().restarts == 1 and b.agent.stats().restarts == 1


_NATS = st.sampled_from(
    [
        None,
        ("eim", "none"),
        ("eim", "address"),
        ("eim", "port"),
        ("symmetric", "port"),
    ]
)


@settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    nat_a=_NATS,
    nat_b=_NATS,
    controlling=st.tuples(st.booleans(), st.booleans()),
    components=st.sampled_from([1, 2]),
    delay=st.floats(0.001, 0.15),
    jitter=st.floats(0.0, 0.05),
    loss=st.sampled_from([0.0, 0.05, 0.1, 0.2]),
    duplicate=st.sampled_from([0.0, 0.1]),
    ta=st.sampled_from([0.005, 0.02, 0.05]),
    seed=st.integers(0, 2**16),
)
def test_chaos_always_connects_with_relays(
    nat_a: tuple[str, str] | None,
    nat_b: tuple[str, str] | None,
    controlling: tuple[bool, bool],
    components: int,
    delay: float,
    jitter: float,
    loss: float,
    duplicate: float,
    ta: float,
    seed: int,
) -> None:
    """Any NATs, roles (conflicts included), delay, reordering, loss and duplication: with
    relays available both sides complete, agree on the pairs, and media flows on them."""
    net = Network(delay=delay, jitter=jitter, loss=loss, duplicate=duplicate, seed=seed)

    def host(name: str, ip: str, public: str, nat: tuple[str, str] | None, c: bool, n: int) -> Host:
        agent = Agent(c, components, ta=ta, rng=random.Random(seed + n), tie_breaker=seed + n)
        box = None if nat is None else Nat(public, nat[0], nat[1])
        return net.add_host(name, agent, ip if box else public, nat=box, relay=True)

    a = host("a", "10.0.1.2", "203.0.113.1", nat_a, controlling[0], 1)
    b = host("b", "10.0.2.2", "203.0.113.2", nat_b, controlling[1], 2)
    exchange(a.agent, b.agent)
    a.agent.start(0.0)
    b.agent.start(0.0)
    net.run(30.0, completed(a, b))
    assert completed(a, b)(), (a.events[-3:], b.events[-3:])
    assert a.agent.controlling != b.agent.controlling
    net.loss = 0.0
    net.duplicate = 0.0
    net.run(net.now + 2.0)  # let late aggressive/regular nominations settle
    for component in range(1, components + 1):
        agents_agree(a.agent, b.agent, component)
        media_flows(net, a, b, component)
    net.run(net.now + 15.0)  # every check in flight has finished by now
    check_invariants(a.agent)
    check_invariants(b.agent)


def test_offer_two_components_answer_with_rtcp_mux() -> None:
    """We offered RTP and RTCP candidates; the answer accepted rtcp-mux: one component."""
    net = Network(delay=0.01)
    a = net.add_host("a", make(True, 2, seed=1), "10.0.1.2", nat=Nat("203.0.113.1"))
    b = net.add_host("b", make(False, 1, seed=2), "10.0.2.2", nat=Nat("203.0.113.2"))
    # b only takes our component-1 candidates (an answerer ignores the RTCP ones)
    b.agent.set_remote_parameters(a.agent.local_ufrag, a.agent.local_pwd)
    for c in a.agent.local_candidates(component=1):
        b.agent.add_remote_candidate(c)
    b.agent.end_of_candidates()
    a.agent.limit_components(1)
    assert a.agent.local_candidates(component=2) == []
    assert all(p.component == 1 for p in a.agent.checklist)
    a.agent.set_remote_parameters(b.agent.local_ufrag, b.agent.local_pwd)
    for c in b.agent.local_candidates():
        a.agent.add_remote_candidate(c)
    a.agent.end_of_candidates()
    a.agent.start(net.now)
    b.agent.start(net.now)
    net.run(10.0, completed(a, b))
    assert completed(a, b)()
    media_flows(net, a, b)
    with pytest.raises(ValueError):
        a.agent.limit_components(2)


def test_limit_components_after_start_completes_with_the_rest() -> None:
    net = Network(delay=0.01)
    a = net.add_host("a", make(True, 2, seed=1), "203.0.113.5")
    b = net.add_host("b", make(False, 2, seed=2), "198.51.100.7")
    exchange(a.agent, b.agent)
    a.agent.start(0.0)
    b.agent.start(0.0)
    net.blocked = True  # nothing gets through yet
    net.run(0.5)
    for host in (a, b):
        host.agent.limit_components(1)
    net.blocked = False
    net.run(10.0, completed(a, b))
    assert completed(a, b)()
    assert a.agent.selected_pair(2) is None and a.agent.send_target(2) is None


def test_restart_recovers_after_consent_loss() -> None:
    net = Network(delay=0.01)
    a = net.add_host("a", make(True, seed=1), "10.0.1.2", nat=Nat("203.0.113.1"), relay=True)
    b = net.add_host("b", make(False, seed=2), "10.0.2.2", nat=Nat("203.0.113.2"), relay=True)
    connect(net, a, b)
    net.blocked = True
    net.run(net.now + 40.0, lambda: first(a, ConsentLost) is not None)
    assert first(a, ConsentLost) is not None and a.agent.send_target(1) is None
    net.blocked = False
    a.events.clear()
    b.events.clear()
    a.agent.restart(net.now)
    b.agent.restart(net.now)
    exchange(a.agent, b.agent)
    net.run(net.now + 10.0, completed(a, b))
    assert completed(a, b)()
    assert a.agent.send_target(1) is not None and a.agent.has_consent(1)
    media_flows(net, a, b)
    net.run(net.now + 60.0)
    assert first(a, ConsentLost) is None and first(b, ConsentLost) is None


# --------------------------------------------------------------------------------------------
# connect time: the order of events and the number of round trips (virtual time, exact)
# --------------------------------------------------------------------------------------------


@dataclass
class Wire:
    """Every STUN datagram the agents sent: (time, host, class, USE-CANDIDATE?)."""

    log: list[tuple[float, str, StunClass, bool]] = field(default_factory=list)

    def tap(self, net: Network) -> None:
        def record(host: Host, data: bytes, via: Hashable, dst: Address) -> None:
            msg = parse_message(data)
            self.log.append((round(net.now, 9), host.name, msg.cls, USE_CANDIDATE.type in msg))

        net.tap = record

    def requests(self, name: str) -> list[tuple[float, bool]]:
        return [(t, uc) for t, n, cls, uc in self.log if n == name and cls is StunClass.REQUEST]


def _timed_agent(controlling: bool, seed: int, ta: float) -> Agent:
    return Agent(controlling, ta=ta, rng=random.Random(seed), tie_breaker=(1 << 40) + seed)


def _completed_at(host: Host) -> float:
    done = first(host, Completed)
    assert done is not None, host.events
    return round(done[0], 9)


@pytest.mark.parametrize("ta", [0.05, 0.02])
def test_one_host_pair_each_completes_in_two_round_trips(ta: float) -> None:
    """One host pair each, 10 ms one way: the first check goes at once (§6.1.4.2), the
    nomination (USE-CANDIDATE) as a triggered check the moment the answer arrives, and the
    controlled side is done when that request arrives on its valid pair.  Controlling: 2 RTT
    (<= 2 RTT + Ta); controlled: 1.5 RTT.  Ta plays no part."""
    net = Network(delay=0.01)
    wire = Wire()
    wire.tap(net)
    a = net.add_host("a", _timed_agent(True, 1, ta), "203.0.113.5")
    b = net.add_host("b", _timed_agent(False, 2, ta), "198.51.100.7")
    connect(net, a, b)
    assert wire.requests("a") == [(0.0, False), (0.02, True)]
    # b's §7.3.1.4 re-check (a's check came while b's was in progress) was held back and
    # never needed: b's own check was answered first
    assert wire.requests("b") == [(0.0, False)]
    assert _completed_at(a) == pytest.approx(0.04)
    assert _completed_at(b) == pytest.approx(0.03)
    assert _completed_at(a) <= 2 * 0.02 + ta
    agents_agree(a.agent, b.agent)
    media_flows(net, a, b)


def test_nomination_waits_only_for_the_five_ms_floor_on_a_short_path() -> None:
    """RTT 2 ms: the answer comes before 5 ms have passed since the first check, and
    RFC 8445 §14.2 allows no two transactions closer than that: the nomination goes at 5 ms
    exactly (not at Ta), and completes one RTT later."""
    net = Network(delay=0.001)
    wire = Wire()
    wire.tap(net)
    a = net.add_host("a", _timed_agent(True, 1, 0.05), "203.0.113.5")
    b = net.add_host("b", _timed_agent(False, 2, 0.05), "198.51.100.7")
    connect(net, a, b)
    assert wire.requests("a") == [(0.0, False), (0.005, True)]
    assert _completed_at(b) == pytest.approx(0.006)
    assert _completed_at(a) == pytest.approx(0.007)


def test_no_floor_nominates_on_the_answer() -> None:
    """``min_check_interval=0`` (not RFC 8445 compliant; for measurements): the nomination
    leaves with the answer's arrival, 2 RTT in all."""
    net = Network(delay=0.001)
    wire = Wire()
    wire.tap(net)
    agent_a = Agent(True, ta=0.05, min_check_interval=0.0, tie_breaker=1 << 41)
    a = net.add_host("a", agent_a, "203.0.113.5")
    b = net.add_host("b", _timed_agent(False, 2, 0.05), "198.51.100.7")
    connect(net, a, b)
    assert wire.requests("a") == [(0.0, False), (0.002, True)]
    assert _completed_at(a) == pytest.approx(0.004)


@pytest.mark.parametrize(("ta", "expected"), [(0.05, 0.13), (0.02, 0.10)])
def test_eim_eim_completes_within_two_round_trips_and_ta(ta: float, expected: float) -> None:
    """Two endpoint-independent NATs, 20 ms one way (RTT 40 ms): the host pair (private
    addresses, never answers) goes first, the reflexive pair Ta later; it is answered one RTT
    after that and nominated at once (the host pair had its RTT + Ta), so the controlling
    side completes at Ta + 2 RTT."""
    net = Network(delay=0.02)
    wire = Wire()
    wire.tap(net)
    nat_a, nat_b = Nat("203.0.113.1"), Nat("203.0.113.2")
    a = net.add_host("a", _timed_agent(True, 1, ta), "10.0.1.2", nat=nat_a, relay=True)
    b = net.add_host("b", _timed_agent(False, 2, ta), "10.0.2.2", nat=nat_b, relay=True)
    connect(net, a, b)
    assert pair_types(a.agent) == ("srflx", "srflx")
    nominations = [t for t, uc in wire.requests("a") if uc]
    assert nominations == [pytest.approx(ta + 0.04)]
    assert _completed_at(a) == pytest.approx(expected)
    assert _completed_at(a) <= ta + 2 * 0.04 + 1e-9
    assert _completed_at(b) == pytest.approx(expected - 0.02)
    media_flows(net, a, b)


def _natted_with_relays(
    ta: float, mapping_a: str, mapping_b: str, *, permit: bool
) -> tuple[Network, Wire, Host, Host]:
    """Two laptops behind NATs with these mappings and TURN relays, 20 ms a hop, connected;
    with ``permit`` the relays hold permissions for the peer's addresses from the start."""
    net = Network(delay=0.02)
    wire = Wire()
    wire.tap(net)
    nat_a = Nat("203.0.113.1", mapping=mapping_a)
    nat_b = Nat("203.0.113.2", mapping=mapping_b)
    a = net.add_host("a", _timed_agent(True, 1, ta), "10.0.1.2", nat=nat_a, relay=True)
    b = net.add_host("b", _timed_agent(False, 2, ta), "10.0.2.2", nat=nat_b, relay=True)
    run_connected(net, a, b, permit=permit)
    return net, wire, a, b


def test_sym_sym_relay_pair_completes_two_round_trips_after_its_first_check() -> None:
    """Two symmetric NATs: only the relay/relay pair (the lowest, checked 5th at 5 Ta)
    works; through two relays one way is 60 ms (RTT 120 ms).  It is answered one RTT after
    its first check and nominated at once: done 2 RTT after that check."""
    ta = 0.02
    net, wire, a, b = _natted_with_relays(ta, "symmetric", "symmetric", permit=False)
    assert pair_types(a.agent) == ("relay", "relay")
    ordinary = [t for t, uc in wire.requests("a") if not uc]
    assert ordinary[:6] == pytest.approx([i * ta for i in range(6)])
    nominations = [t for t, uc in wire.requests("a") if uc]
    assert nominations == [pytest.approx(5 * ta + 0.12)]
    assert _completed_at(a) == pytest.approx(5 * ta + 0.24)
    media_flows(net, a, b)


def test_black_holes_ranked_first_are_given_rtt_plus_ta_each() -> None:
    """The many-candidates case: three remote candidates ranked above the real one lead
    nowhere (a firewalled path).  The peer's check makes the real pair valid early (a
    triggered check at once); the controlling side nominates it as soon as every better pair
    has had one RTT plus Ta since its check (the ones not yet sent: since their turn), well
    before ``nomination_delay`` (100 ms after the first valid pair)."""
    ta = 0.02
    net = Network(delay=0.01)
    wire = Wire()
    wire.tap(net)
    a = net.add_host("a", _timed_agent(True, 1, ta), "203.0.113.5")
    b = net.add_host("b", _timed_agent(False, 2, ta), "198.51.100.7")
    exchange(a.agent, b.agent)
    for i in range(3):
        decoy = Candidate.make(CandidateType.HOST, f"192.0.2.{i + 1}", 9, local_preference=65535)
        a.agent.add_remote_candidate(dataclasses.replace(decoy, priority=decoy.priority + 1000))
    a.agent.start(0.0)
    b.agent.start(0.0)
    net.run(5.0, completed(a, b))
    assert pair_types(a.agent) == ("host", "host")
    # ordinary checks Ta apart (black holes at 0, 20, 40 ms); b's check of the real pair came
    # at 10 ms and a's triggered check went at once: valid at 30 ms
    assert wire.requests("a") == [
        (0.0, False),
        (0.01, False),
        (0.02, False),
        (0.04, False),
        (pytest.approx(0.04 + 0.02 + ta), True),  # last black hole + RTT + Ta
    ]
    assert _completed_at(a) == pytest.approx(0.1)
    assert _completed_at(b) == pytest.approx(0.09)
    assert _completed_at(a) < 0.03 + a.agent.nomination_delay


# --------------------------------------------------------------------------------------------
# component starvation: a controlling peer behind a symmetric NAT, two components
# --------------------------------------------------------------------------------------------


def _baresip_like(permit: bool) -> tuple[Network, Host, Host]:
    """The lab's baresip -> softphone case: the controlling peer (no TURN, behind a
    symmetric NAT, one foundation for all its candidates, giving up on its checks after
    about 1.5 s) offers RTP and RTCP components; we (controlled) sit behind an
    endpoint-independent NAT with a TURN relay.  Only our relay can carry the call."""
    net = Network(delay=0.01)
    peer = make(True, 2, seed=1, check_rc=2, check_rm=2)
    a = net.add_host("a", peer, "10.0.1.2", nat=Nat("203.0.113.1", mapping="symmetric"))
    b = net.add_host("b", make(False, 2, seed=2), "10.0.2.2", nat=Nat("203.0.113.2"), relay=True)
    a.agent.set_remote_parameters(b.agent.local_ufrag, b.agent.local_pwd)
    b.agent.set_remote_parameters(a.agent.local_ufrag, a.agent.local_pwd)
    for c in b.agent.local_candidates():
        a.agent.add_remote_candidate(c)
    for c in a.agent.local_candidates():
        b.agent.add_remote_candidate(dataclasses.replace(c, foundation="1"))
    a.agent.end_of_candidates()
    b.agent.end_of_candidates()
    if permit:
        net.permit(b)
    a.agent.start(0.0)
    b.agent.start(0.0)
    net.run(30.0, completed(a, b))
    return net, a, b


def test_two_components_with_a_symmetric_controlling_peer_connect() -> None:
    """Our component-2 pairs share foundations with component-1 pairs that never answer
    (private addresses, the symmetric NAT's filtering).  They used to stay Frozen until those
    failed (~10 s), long after the peer gave up: now a pair whose first request went
    unanswered for an RTO stops holding its foundation back, and a selected component
    unfreezes the others."""
    net, a, b = _baresip_like(permit=False)
    assert completed(a, b)(), (a.events[-2:], b.events[-2:])
    for component in (1, 2):
        assert "relay" in pair_types(b.agent, component)
        agents_agree(a.agent, b.agent, component)
        media_flows(net, a, b, component)
    # within one RTO (0.5 s) of retransmission of the first checks, not after ~10 s
    assert _completed_at(b) < 1.5


def test_turn_permissions_up_front_let_the_peers_first_checks_through() -> None:
    """With permissions for every remote IP installed when the candidates arrive (the
    shell's job), the peer's first check to our relay gets through: both components are
    done within a few round trips, no retransmission needed."""
    net, a, b = _baresip_like(permit=True)
    assert completed(a, b)()
    for component in (1, 2):
        assert "relay" in pair_types(b.agent, component)
        media_flows(net, a, b, component)
    assert _completed_at(a) < 0.5 and _completed_at(b) < 0.5


def test_media_flows_on_a_valid_pair_before_nomination_completes() -> None:
    """RFC 8445 §12.1: data may go on any valid pair before selection.  Two public hosts,
    RTT 40 ms: each side can send one round trip after the first check, and what it sends
    passes the other side's filter, before either side has completed."""
    net = Network(delay=0.02)
    a = net.add_host("a", make(True, seed=1), "203.0.113.5")
    b = net.add_host("b", make(False, seed=2), "198.51.100.7")
    exchange(a.agent, b.agent)
    a.agent.start(0.0)
    b.agent.start(0.0)
    both = lambda: all(h.agent.send_target(1) is not None for h in (a, b))  # noqa: E731
    net.run(5.0, both)
    assert both() and not completed(a)() and not completed(b)()
    usable_at = net.now
    assert usable_at == pytest.approx(0.04)  # one RTT after the first checks
    for sender in (a, b):
        assert net.send_media(sender, 1, b"\x80early-" + sender.name.encode())
    net.run(net.now + 0.021)  # one hop, before the nomination is done
    for sender, receiver in ((a, b), (b, a)):
        got = [
            (via, src)
            for via, src, d in receiver.media
            if d == b"\x80early-" + sender.name.encode()
        ]
        assert got and all(receiver.agent.component_of(via, src) == 1 for via, src in got)
    net.run(5.0, completed(a, b))
    assert _completed_at(a) > usable_at
    media_flows(net, a, b)


@pytest.mark.parametrize("ta", [0.02, 0.05])
@pytest.mark.parametrize(
    ("mapping_a", "mapping_b", "types_a"),
    [
        ("symmetric", "symmetric", ("prflx", "relay")),
        ("symmetric", "eim", ("prflx", "relay")),
        ("eim", "symmetric", ("srflx", "relay")),
    ],
)
def test_symmetric_nat_with_permissions_up_front_completes_at_two_ta_and_two_rtt(
    ta: float, mapping_a: str, mapping_b: str, types_a: tuple[str, str]
) -> None:
    """A symmetric NAT on either side (or both), TURN permissions for the peer's addresses
    made when its candidates arrive (as IceConnection does): our host's check to the peer's
    relay (the 3rd pair, sent at 2 Ta) gets through at once, through one relay (RTT 80 ms).
    It is nominated on its answer - the better pairs had their RTT + Ta, and the pairs
    ranked between the valid pair (peer-reflexive local, lower) and the pair checked are not
    waited for - so the controlling side completes at 2 Ta + 2 RTT (sym/sym was 5 Ta +
    2 RTT through both relays; the issue's 2 RTT + Ta would need that pair checked 2nd)."""
    net, wire, a, b = _natted_with_relays(ta, mapping_a, mapping_b, permit=True)
    assert pair_types(a.agent) == types_a
    nominations = [t for t, uc in wire.requests("a") if uc]
    assert nominations == [pytest.approx(2 * ta + 0.08)]
    assert _completed_at(a) == pytest.approx(2 * ta + 2 * 0.08)
    agents_agree(a.agent, b.agent)
    media_flows(net, a, b)


class _LosesFirstSrflxChecks(Network):
    """Loses the first check each side sends to the other's server-reflexive address."""

    def __init__(self, srflx: set[Address], **kw: Any) -> None:
        super().__init__(**kw)
        self.srflx = srflx
        self.lost: list[tuple[float, str, Address]] = []

    def send(self, host: Host, data: bytes, via: Hashable, dst: Address) -> None:
        if dst in self.srflx and data[0] < 4 and parse_message(data).cls is StunClass.REQUEST:
            if not any(name == host.name for _, name, _ in self.lost):
                self.lost.append((self.now, host.name, dst))
                return
        super().send(host, data, via, dst)


def _first_srflx_checks_lost(mapping_a: str) -> tuple[_LosesFirstSrflxChecks, Host, Host]:
    """a (controlling, NAT with ``mapping_a``) and b (endpoint-independent NAT), both with
    TURN relays holding permissions for the peer; both first checks to a srflx are lost."""
    srflx = {("203.0.113.1", 40000), ("203.0.113.2", 40000)}
    net = _LosesFirstSrflxChecks(srflx, delay=0.01)
    nat_a = Nat("203.0.113.1", mapping=mapping_a)
    a = net.add_host("a", make(True, seed=1), "10.0.1.2", nat=nat_a, relay=True)
    b = net.add_host("b", make(False, seed=2), "10.0.2.2", nat=Nat("203.0.113.2"), relay=True)
    run_connected(net, a, b, permit=True)
    return net, a, b


def test_eim_eim_waits_for_the_retransmission_of_a_lost_direct_check() -> None:
    """Two endpoint-independent NATs with TURN relays: both first checks of the direct
    srflx pair are lost, the relay pairs work.  Both ends showed stable mappings (our check
    through the peer's relay came back with our srflx address; the peer's check came from
    its srflx address), so the controlling side waits for the direct pair's retransmission
    (RTO 0.5 s) instead of settling on the relay after ``nomination_delay``."""
    net, a, b = _first_srflx_checks_lost("eim")
    assert [name for _, name, _ in net.lost] == ["a", "b"]
    assert pair_types(a.agent) == ("srflx", "srflx"), pair_types(a.agent)
    assert 0.5 < _completed_at(a) < 0.7  # the retransmission's round trip, then nomination
    agents_agree(a.agent, b.agent)
    media_flows(net, a, b)


def test_sym_nat_does_not_wait_for_retransmissions() -> None:
    """The same losses with the controlling side behind a symmetric NAT: its check through
    the peer's relay comes back with a mapping it never signalled, so the direct pair is not
    promising and the relay is nominated without waiting for the retransmission."""
    net, a, b = _first_srflx_checks_lost("symmetric")
    assert "relay" in pair_types(a.agent)
    assert _completed_at(a) < 0.5
    media_flows(net, a, b)
