"""RFC 3263 server location against a fake DNS (no network)."""

import asyncio
import random
from collections import Counter

import pytest

from sip.locate import (
    AllTargetsFailed,
    LocateError,
    NaptrRecord,
    SrvRecord,
    SystemLookup,
    Target,
    TargetFailed,
    locate,
    order_srv,
    try_targets,
)


class FakeLookup:
    def __init__(self, naptr=None, srv=None, hosts=None):
        self.naptr_records: dict[str, list[NaptrRecord]] = naptr or {}
        self.srv_records: dict[str, list[SrvRecord]] = srv or {}
        self.hosts: dict[str, list[str]] = hosts or {}
        self.queries: list[tuple[str, str]] = []

    async def naptr(self, name):
        self.queries.append(("NAPTR", name))
        return list(self.naptr_records.get(name, []))

    async def srv(self, name):
        self.queries.append(("SRV", name))
        return list(self.srv_records.get(name, []))

    async def addresses(self, host):
        self.queries.append(("A", host))
        return list(self.hosts.get(host, []))


def run(coro):
    return asyncio.run(coro)


def naptr(order, pref, service, replacement, flags="s"):
    return NaptrRecord(order, pref, flags, service, "", replacement)


def targets_of(result):
    return [(t.transport, t.host, t.ip, t.port) for t in result]


# --- numeric addresses and explicit ports: no NAPTR/SRV (RFC 3263 §4.1, §4.2) -------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:alice@192.0.2.1", ("UDP", "192.0.2.1", 5060)),
        ("sip:alice@192.0.2.1:5070", ("UDP", "192.0.2.1", 5070)),
        ("sip:alice@192.0.2.1;transport=tcp", ("TCP", "192.0.2.1", 5060)),
        ("sips:alice@192.0.2.1", ("TLS", "192.0.2.1", 5061)),
        ("sips:alice@192.0.2.1;transport=tcp", ("TLS", "192.0.2.1", 5061)),
        ("sip:alice@[2001:db8::1]", ("UDP", "2001:db8::1", 5060)),
        ("sip:alice@[2001:db8::1]:5080;transport=TCP", ("TCP", "2001:db8::1", 5080)),
    ],
)
def test_numeric_host_needs_no_dns(uri, expected):
    fake = FakeLookup()
    result = run(locate(uri, lookup=fake))
    assert [(t.transport, t.ip, t.port) for t in result] == [expected]
    assert fake.queries == []


def test_explicit_port_uses_only_address_records():
    fake = FakeLookup(
        naptr={"example.com": [naptr(10, 10, "SIP+D2T", "_sip._tcp.example.com")]},
        srv={"_sip._tcp.example.com": [SrvRecord(0, 0, 5099, "other.example.com")]},
        hosts={"example.com": ["192.0.2.7", "2001:db8::7"]},
    )
    result = run(locate("sip:bob@example.com:5080", lookup=fake))
    assert targets_of(result) == [
        ("UDP", "example.com", "192.0.2.7", 5080),
        ("UDP", "example.com", "2001:db8::7", 5080),
    ]
    assert fake.queries == [("A", "example.com")]


def test_maddr_overrides_host():
    fake = FakeLookup()
    result = run(locate("sip:bob@example.com;maddr=192.0.2.9", lookup=fake))
    assert targets_of(result) == [("UDP", "192.0.2.9", "192.0.2.9", 5060)]


# --- NAPTR -> SRV -> A ----------------------------------------------------------------------


def full_dns():
    return FakeLookup(
        naptr={
            "example.com": [
                naptr(20, 10, "SIP+D2U", "_sip._udp.example.com"),
                naptr(10, 20, "SIP+D2T", "_sip._tcp.example.com"),
                naptr(10, 10, "SIPS+D2T", "_sips._tcp.example.com"),
                naptr(5, 10, "SIP+D2S", "_sip._sctp.example.com"),  # unsupported: skipped
                naptr(1, 1, "E2U+sip", "!^.*$!sip:x@y!", flags="u"),  # not an SRV pointer
            ]
        },
        srv={
            "_sips._tcp.example.com": [SrvRecord(10, 0, 5061, "tls.example.com")],
            "_sip._tcp.example.com": [SrvRecord(10, 0, 5060, "tcp.example.com")],
            "_sip._udp.example.com": [
                SrvRecord(20, 0, 5062, "udp2.example.com"),
                SrvRecord(10, 0, 5060, "udp1.example.com"),
            ],
        },
        hosts={
            "tls.example.com": ["192.0.2.10"],
            "tcp.example.com": ["192.0.2.11"],
            "udp1.example.com": ["192.0.2.12"],
            "udp2.example.com": ["192.0.2.13", "2001:db8::13"],
        },
    )


def test_naptr_order_then_preference_then_srv_priority():
    fake = full_dns()
    result = run(locate("sip:bob@example.com", lookup=fake))
    assert targets_of(result) == [
        ("TLS", "tls.example.com", "192.0.2.10", 5061),
        ("TCP", "tcp.example.com", "192.0.2.11", 5060),
        ("UDP", "udp1.example.com", "192.0.2.12", 5060),
        ("UDP", "udp2.example.com", "192.0.2.13", 5062),
        ("UDP", "udp2.example.com", "2001:db8::13", 5062),
    ]
    assert all(t.domain == "example.com" and t.tls_name == "example.com" for t in result)
    assert fake.queries[0] == ("NAPTR", "example.com")
    assert ("SRV", "_sip._sctp.example.com") not in fake.queries


def test_naptr_filtered_by_supported_transports():
    result = run(locate("sip:bob@example.com", transports=("UDP",), lookup=full_dns()))
    assert [t.transport for t in result] == ["UDP", "UDP", "UDP"]


def test_sips_uses_only_sips_service():
    result = run(locate("sips:bob@example.com", lookup=full_dns()))
    assert targets_of(result) == [("TLS", "tls.example.com", "192.0.2.10", 5061)]


def test_sips_without_tls_support_fails():
    with pytest.raises(LocateError):
        run(locate("sips:bob@example.com", transports=("UDP", "TCP"), lookup=full_dns()))


def test_transport_param_skips_naptr_and_queries_that_srv():
    fake = full_dns()
    result = run(locate("sip:bob@example.com;transport=tcp", lookup=fake))
    assert targets_of(result) == [("TCP", "tcp.example.com", "192.0.2.11", 5060)]
    assert ("NAPTR", "example.com") not in fake.queries


def test_transport_param_not_supported():
    with pytest.raises(LocateError):
        run(locate("sip:bob@example.com;transport=tcp", transports=("UDP",), lookup=full_dns()))
    with pytest.raises(LocateError):
        run(locate("sip:bob@example.com;transport=sctp", lookup=full_dns()))
    with pytest.raises(LocateError):
        run(locate("sips:bob@example.com;transport=udp", lookup=full_dns()))


def test_no_naptr_queries_srv_in_preference_order():
    fake = full_dns()
    fake.naptr_records.clear()
    result = run(locate("sip:bob@example.com", transports=("TCP", "UDP"), lookup=fake))
    assert [t.transport for t in result] == ["TCP", "UDP", "UDP", "UDP"]
    srv_queries = [q for kind, q in fake.queries if kind == "SRV"]
    assert srv_queries == ["_sip._tcp.example.com", "_sip._udp.example.com"]


def test_naptr_without_usable_services_falls_back_to_srv():
    fake = full_dns()
    fake.naptr_records["example.com"] = [naptr(10, 10, "SIP+D2S", "_sip._sctp.example.com")]
    result = run(locate("sip:bob@example.com", transports=("UDP",), lookup=fake))
    assert result[0].host == "udp1.example.com"


def test_no_srv_falls_back_to_address_records_on_default_port():
    fake = FakeLookup(hosts={"example.net": ["198.51.100.5"]})
    assert targets_of(run(locate("sip:example.net", lookup=fake))) == [
        ("UDP", "example.net", "198.51.100.5", 5060)
    ]
    assert targets_of(run(locate("sips:example.net", lookup=fake))) == [
        ("TLS", "example.net", "198.51.100.5", 5061)
    ]
    assert targets_of(run(locate("sip:example.net", transports=("TCP",), lookup=fake))) == [
        ("TCP", "example.net", "198.51.100.5", 5060)
    ]
    assert targets_of(run(locate("sip:example.net;transport=tcp", lookup=fake))) == [
        ("TCP", "example.net", "198.51.100.5", 5060)
    ]


def test_unresolvable_name_raises():
    with pytest.raises(LocateError):
        run(locate("sip:nowhere.invalid", lookup=FakeLookup()))


@pytest.mark.parametrize(
    ("records", "hosts", "expected"),
    [
        (
            [
                SrvRecord(1, 0, 0, "."),
                SrvRecord(5, 0, 5060, "a.example.org"),
                SrvRecord(6, 0, 5060, "alias.example.org"),
            ],
            {"a.example.org": ["192.0.2.1"], "alias.example.org": ["192.0.2.1"]},
            [("UDP", "a.example.org", "192.0.2.1", 5060)],
        ),
        (
            [
                SrvRecord(1, 0, 5060, "gone.example.org"),
                SrvRecord(2, 0, 5060, "b.example.org"),
            ],
            {"b.example.org": ["192.0.2.2"]},
            [("UDP", "b.example.org", "192.0.2.2", 5060)],
        ),
    ],
    ids=[
        "dot-target-means-no-service-and-duplicates-are-dropped",
        "target-without-address-skipped",
    ],
)
def test_unusable_srv_records_are_passed_over(records, hosts, expected):
    fake = FakeLookup(srv={"_sip._udp.example.org": records}, hosts=hosts)
    result = run(locate("sip:example.org", transports=("UDP",), lookup=fake))
    assert targets_of(result) == expected


# --- RFC 2782 weighted selection --------------------------------------------------------------


class ScriptedRandom(random.Random):
    def __init__(self, values):
        super().__init__(0)
        self.values = list(values)
        self.calls = []

    def randint(self, a, b):
        self.calls.append((a, b))
        return self.values.pop(0)


def test_order_srv_follows_running_sum():
    a, b, c = SrvRecord(10, 0, 1, "a"), SrvRecord(10, 10, 2, "b"), SrvRecord(10, 30, 3, "c")
    # zero-weight first in the running list: a(0) b(10) c(40). Draw 25 -> c; then a(0) b(10):
    # draw 0 -> a; then b alone (0..10).
    rng = ScriptedRandom([25, 0, 0])
    assert order_srv([c, b, a], rng) == [c, a, b]
    assert rng.calls == [(0, 40), (0, 10), (0, 10)]


def test_order_srv_priority_dominates_weight():
    records = [SrvRecord(20, 1000, 1, "late"), SrvRecord(10, 1, 2, "early")]
    for seed in range(20):
        assert [r.target for r in order_srv(records, random.Random(seed))] == ["early", "late"]


def test_order_srv_weights_shape_the_distribution():
    heavy, light = SrvRecord(1, 90, 1, "heavy"), SrvRecord(1, 10, 2, "light")
    rng = random.Random(1234)  # seeded: deterministic
    firsts = Counter(order_srv([light, heavy], rng)[0].target for _ in range(2000))
    assert firsts["heavy"] > 3 * firsts["light"] > 0


def test_order_srv_all_zero_weights_still_returns_everything():
    records = [SrvRecord(1, 0, p, f"h{p}") for p in range(5)]
    out = order_srv(records, random.Random(3))
    assert sorted(r.port for r in out) == [0, 1, 2, 3, 4]


# --- failover (RFC 3263 §4.3) ------------------------------------------------------------------

T1 = Target("UDP", "a", "192.0.2.1", 5060)
T2 = Target("UDP", "b", "192.0.2.2", 5060)
T3 = Target("TCP", "c", "192.0.2.3", 5060)


def test_try_targets_moves_on_after_failures():
    tried = []

    async def attempt(target):
        tried.append(target)
        if target is T1:
            raise ConnectionRefusedError("refused")
        if target is T2:
            raise TargetFailed("503")
        return "ok"

    assert run(try_targets([T1, T2, T3], attempt)) == "ok"
    assert tried == [T1, T2, T3]


def test_try_targets_timeout_moves_on():
    async def attempt(target):
        if target is T1:
            await asyncio.sleep(3600)
        return target.host

    assert run(try_targets([T1, T2], attempt, timeout=0.05)) == "b"


def test_try_targets_all_fail():
    async def attempt(target):
        raise TimeoutError

    with pytest.raises(AllTargetsFailed) as info:
        run(try_targets([T1, T2], attempt))
    assert [t for t, _ in info.value.errors] == [T1, T2]
    with pytest.raises(AllTargetsFailed):
        run(try_targets([], attempt))


def test_try_targets_other_errors_propagate():
    async def attempt(target):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run(try_targets([T1, T2], attempt))


# --- the system resolver honours /etc/hosts ---------------------------------------------------


def test_system_lookup_uses_hosts_file(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    lookup = SystemLookup(hosts_file=str(hosts))

    async def go():
        assert await lookup.naptr("localhost") == []  # hosts-file names skip DNS
        assert await lookup.srv("_sip._udp.localhost") == []
        return await locate("sip:bob@localhost", lookup=lookup)

    result = run(go())
    assert ("UDP", "127.0.0.1", 5060) in [(t.transport, t.ip, t.port) for t in result]


def test_system_lookup_numeric_address():
    lookup = SystemLookup(nameservers=["127.0.0.1"], port=9)
    assert run(lookup.addresses("[::1]")) == ["::1"]


def test_uri_without_host_cannot_be_located():
    with pytest.raises(LocateError):
        run(locate("tel:+15551234567", lookup=FakeLookup()))
