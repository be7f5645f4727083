"""RFC 5780 NAT behaviour discovery (ice.nat) against a simulated server and NAT, virtual clock."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ice.nat import FilteringBehavior, MappingBehavior, NatBehavior, NatDiscovery, describe
from ice.stun import (
    CHANGE_REQUEST,
    OTHER_ADDRESS,
    RESPONSE_ORIGIN,
    XOR_MAPPED_ADDRESS,
    Address,
    StunClass,
    StunMethod,
    parse_message,
)

EI, AD, APD = "ei", "ad", "apd"
PRIMARY: Address = ("198.51.100.1", 3478)
ALT_IP = "198.51.100.2"
LOCAL: Address = ("192.168.1.10", 40000)
PUBLIC_IP = "203.0.113.7"


@dataclass
class SimServer:
    """An RFC 5780 STUN server on two IPs x two ports."""

    primary: Address = PRIMARY
    alt_ip: str | None = ALT_IP
    honours_change: bool = True
    dead: bool = False
    alt_dead: bool = False

    @property
    def alt_port(self) -> int:
        return self.primary[1] + 1

    def addresses(self) -> list[Address]:
        out = [self.primary]
        if self.alt_ip:
            out += [
                (self.primary[0], self.alt_port),
                (self.alt_ip, self.primary[1]),
                (self.alt_ip, self.alt_port),
            ]
        return out

    def handle(self, data: bytes, src: Address, dst: Address) -> tuple[bytes, Address] | None:
        if self.dead or (self.alt_dead and dst[0] == self.alt_ip):
            return None
        req = parse_message(data)
        assert req.method == StunMethod.BINDING and req.cls == StunClass.REQUEST
        change = req.get(CHANGE_REQUEST)
        ip, port = dst
        if change is not None and self.honours_change and self.alt_ip:
            if change.change_ip:
                ip = self.alt_ip if ip == self.primary[0] else self.primary[0]
            if change.change_port:
                port = self.alt_port if port == self.primary[1] else self.primary[1]
        origin = (ip, port)
        resp = req.response().add(XOR_MAPPED_ADDRESS, src).add(RESPONSE_ORIGIN, origin)
        if self.alt_ip:
            resp.add(OTHER_ADDRESS, (self.alt_ip, self.alt_port))
        return resp.encode(fingerprint=True), origin


@dataclass
class SimNat:
    """A NAT with RFC 4787 mapping and filtering behaviours (None: no NAT, open)."""

    mapping: str | None = EI
    filtering: str | None = EI
    public_ip: str = PUBLIC_IP
    next_port: int = 50000
    table: dict[tuple[Address, tuple[object, ...]], int] = field(default_factory=dict)
    contacted: dict[int, set[Address]] = field(default_factory=dict)

    def outbound(self, src: Address, dst: Address) -> Address:
        if self.mapping is None:
            return src
        key: tuple[object, ...] = {EI: (), AD: (dst[0],), APD: dst}[self.mapping]
        port = self.table.get((src, key))
        if port is None:
            port = self.table[(src, key)] = self.next_port
            self.next_port += 7
        self.contacted.setdefault(port, set()).add(dst)
        return self.public_ip, port

    def inbound(self, src: Address, dst: Address) -> bool:
        if self.mapping is None or self.filtering is None:
            return True
        seen = self.contacted.get(dst[1], set())
        if self.filtering == EI:
            return bool(seen)
        if self.filtering == AD:
            return any(s[0] == src[0] for s in seen)
        return src in seen


def run(
    nat: SimNat,
    server: SimServer,
    *,
    loss: float = 0.0,
    seed: int = 1,
    local: Address = LOCAL,
    **kwargs: object,
) -> tuple[NatBehavior, float]:
    rng = random.Random(seed)
    now = 100.0
    d = NatDiscovery(server.primary, local, now, **kwargs)  # type: ignore[arg-type]
    server_addresses = server.addresses()
    sockets = [local, (local[0], local[1] + 1)]
    for _ in range(10_000):
        for data, dst, index in d.datagrams_to_send(now):
            assert dst in server_addresses
            if rng.random() < loss:
                continue
            public = nat.outbound(sockets[index], dst)
            reply = server.handle(data, public, dst)
            if reply is None or rng.random() < loss:
                continue
            rdata, rsrc = reply
            if nat.inbound(rsrc, public):
                d.receive(rdata, rsrc, now, index)
        if d.done:
            assert d.result is not None
            return d.result, now
        timer = d.get_timer()
        assert timer is not None and timer >= now
        now = timer
        d.handle_timer(now)
    raise AssertionError("discovery never finished")


@pytest.mark.parametrize("mapping", [EI, AD, APD])
@pytest.mark.parametrize("filtering", [EI, AD, APD])
def test_every_nat_type_is_recognised(mapping: str, filtering: str) -> None:
    result, _ = run(SimNat(mapping, filtering), SimServer())
    assert result.nat is True
    assert result.rfc5780
    assert result.mapped is not None and result.mapped[0] == PUBLIC_IP
    assert (
        result.mapping
        == {
            EI: MappingBehavior.ENDPOINT_INDEPENDENT,
            AD: MappingBehavior.ADDRESS_DEPENDENT,
            APD: MappingBehavior.ADDRESS_AND_PORT_DEPENDENT,
        }[mapping]
    )
    assert (
        result.filtering
        == {
            EI: FilteringBehavior.ENDPOINT_INDEPENDENT,
            AD: FilteringBehavior.ADDRESS_DEPENDENT,
            APD: FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT,
        }[filtering]
    )
    assert result.error is None


def test_no_nat_open_internet() -> None:
    result, _ = run(SimNat(None, None), SimServer())
    assert result.nat is False
    assert result.mapped == LOCAL
    assert result.mapping is MappingBehavior.ENDPOINT_INDEPENDENT
    assert result.filtering is FilteringBehavior.ENDPOINT_INDEPENDENT
    assert describe(result).startswith("no NAT: public address")


def test_no_nat_always_map_runs_test_ii() -> None:
    result, _ = run(SimNat(None, None), SimServer(), always_map=True)
    assert result.nat is False
    assert result.mapping is MappingBehavior.ENDPOINT_INDEPENDENT


def test_no_nat_behind_a_firewall() -> None:
    # a stateful firewall: no translation, but address-and-port-dependent filtering
    class Firewall(SimNat):
        def outbound(self, src: Address, dst: Address) -> Address:
            self.contacted.setdefault(src[1], set()).add(dst)
            return src

        def inbound(self, src: Address, dst: Address) -> bool:
            return src in self.contacted.get(dst[1], set())

    result, _ = run(Firewall(), SimServer())
    assert result.nat is False
    assert result.filtering is FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT
    assert "firewall" in describe(result)


def test_filtering_can_be_skipped() -> None:
    result, _ = run(SimNat(APD, APD), SimServer(), filtering=False)
    assert result.mapping is MappingBehavior.ADDRESS_AND_PORT_DEPENDENT
    assert result.filtering is FilteringBehavior.UNKNOWN


def test_server_without_rfc5780_tells_only_nat_or_not() -> None:
    result, _ = run(SimNat(EI, EI), SimServer(alt_ip=None))
    assert result.nat is True
    assert not result.rfc5780
    assert result.mapping is MappingBehavior.UNKNOWN
    assert "RFC 5780" in describe(result)
    result, _ = run(SimNat(None, None), SimServer(alt_ip=None))
    assert result.nat is False and result.mapping is MappingBehavior.ENDPOINT_INDEPENDENT


def test_dead_server_times_out_at_the_deadline() -> None:
    result, end = run(SimNat(EI, EI), SimServer(dead=True), timeout=3.0)
    assert result.nat is None
    assert result.error is not None and "no answer" in result.error
    assert end == pytest.approx(103.0)
    assert "blocked" in describe(result)


def test_unreachable_alternate_address_leaves_mapping_unknown() -> None:
    result, _ = run(SimNat(APD, EI), SimServer(alt_dead=True))
    assert result.nat is True
    assert result.mapping is MappingBehavior.UNKNOWN
    # filtering tests go to the primary address, and its answers from the alternate get lost
    assert result.error is not None


def test_server_ignoring_change_request_is_not_taken_for_open_filtering() -> None:
    result, _ = run(SimNat(EI, APD), SimServer(honours_change=False))
    assert result.mapping is MappingBehavior.ENDPOINT_INDEPENDENT
    assert result.filtering is FilteringBehavior.UNKNOWN
    assert result.error is not None and "CHANGE-REQUEST" in result.error


@pytest.mark.parametrize("seed", range(8))
def test_results_survive_packet_loss(seed: int) -> None:
    # 20 % loss each way; retransmissions recover within the deadlines most of the time; the
    # answer must never be wrong, only possibly unknown (filtering: possibly more restrictive)
    result, _ = run(SimNat(AD, EI), SimServer(), loss=0.2, seed=seed, timeout=6.0)
    assert result.nat in (True, None)
    assert result.mapping in (MappingBehavior.ADDRESS_DEPENDENT, MappingBehavior.UNKNOWN)


def test_symmetric_nat_summary_mentions_turn() -> None:
    result, _ = run(SimNat(APD, APD), SimServer())
    text = describe(result)
    assert text.startswith("symmetric NAT")
    assert "TURN relay" in text
    assert result.as_dict()["mapping"] == "address-and-port-dependent"


def test_cone_summaries() -> None:
    assert describe(run(SimNat(EI, EI), SimServer())[0]).startswith("full-cone NAT")
    assert describe(run(SimNat(EI, AD), SimServer())[0]).startswith("restricted-cone NAT")
    assert describe(run(SimNat(EI, APD), SimServer())[0]).startswith("port-restricted-cone")


def test_stray_packets_are_ignored() -> None:
    d = NatDiscovery(PRIMARY, LOCAL, 0.0)
    assert not d.receive(b"\x80" + bytes(40), PRIMARY, 0.0)
    assert not d.receive(b"", PRIMARY, 0.0)
    assert not d.done


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_receive_never_raises(data: bytes) -> None:
    d = NatDiscovery(PRIMARY, LOCAL, 0.0)
    [(request, _, _)] = d.datagrams_to_send(0.0)
    # also try the bytes with the right transaction id spliced in
    spliced = data[:8] + request[8:20] + data[20:] if len(data) >= 20 else data
    for candidate in (data, b"\x01\x01" + spliced[2:4] + request[4:8] + spliced[8:]):
        d.receive(candidate, PRIMARY, 0.0)


def test_ipv6_without_nat() -> None:
    local6: Address = ("2001:db8::10", 40000)
    server = SimServer(primary=("2001:db8:1::1", 3478), alt_ip="2001:db8:1::2")
    result, _ = run(SimNat(None, None), server, local=local6)
    assert result.nat is False
    assert result.mapped == local6
    assert result.filtering is FilteringBehavior.ENDPOINT_INDEPENDENT


_MAPPING = {
    EI: MappingBehavior.ENDPOINT_INDEPENDENT,
    AD: MappingBehavior.ADDRESS_DEPENDENT,
    APD: MappingBehavior.ADDRESS_AND_PORT_DEPENDENT,
}
_FILTERING_ORDER = [EI, AD, APD]  # from most open to most restrictive
_FILTERING = {
    EI: FilteringBehavior.ENDPOINT_INDEPENDENT,
    AD: FilteringBehavior.ADDRESS_DEPENDENT,
    APD: FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT,
}


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([EI, AD, APD]),
    st.sampled_from([EI, AD, APD]),
    st.integers(0, 10_000),
    st.sampled_from([0.0, 0.1, 0.3]),
)
def test_loss_can_hide_but_never_invent_behaviour(
    mapping: str, filtering: str, seed: int, loss: float
) -> None:
    """Lost packets may leave the mapping unknown or make the filtering look stricter than
    it is (a lost answer looks like a filtered one), never anything else."""
    result, _ = run(SimNat(mapping, filtering), SimServer(), loss=loss, seed=seed)
    assert result.nat in (True, None)
    if result.nat is None:
        return
    assert result.mapping in (_MAPPING[mapping], MappingBehavior.UNKNOWN)
    allowed = {FilteringBehavior.UNKNOWN}
    allowed |= {_FILTERING[f] for f in _FILTERING_ORDER[_FILTERING_ORDER.index(filtering) :]}
    assert result.filtering in allowed
    if loss == 0.0:
        assert result.mapping is _MAPPING[mapping]
        assert result.filtering is _FILTERING[filtering]
