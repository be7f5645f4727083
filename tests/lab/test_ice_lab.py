"""Our ICE agent across real NATs: two laptops in network namespaces, each running
:mod:`tests.lab.ice_node`, exchange candidates out of band (the test relays them), connect,
and carry data both ways; the selected pair's candidate types and addresses are checked.

The lab (``ice_lab`` in conftest.py, built once for tests/lab): coturn on the public net,
laptops behind MASQUERADE ("eim": endpoint-independent mapping) and MASQUERADE
--random-fully ("sym": symmetric) routers, two laptops on one LAN, one laptop on the public
net.  Cases: eim/eim direct, sym/sym and eim/sym relayed (and failing without TURN), public
laptop against either NAT, same LAN, 10% loss, two components, consent freshness and NAT
keepalive, ICE restart, UDP blocked (TURN over TCP).  Connect times are printed and
summarised at the end of the run (no timing assertions).

The RFC 5780 classification of these NAT types is tested in
tests/integration/test_nat_check_coturn.py (test_nat_check_behind_iptables_nat) and is not
repeated here.
"""

from __future__ import annotations

import pytest

from tests.lab.conftest import IceLab, PairResult, pair_session, run_pair

pytestmark = pytest.mark.lab

DIRECT_REMOTE = {"srflx", "prflx"}


def assert_data_both_ways(r: PairResult, want: int = 10) -> None:
    assert len(r.received_a) >= want, r.received_a
    assert len(r.received_b) >= want, r.received_b
    assert all(m.startswith("from-b ") for m in r.received_a), r.received_a
    assert all(m.startswith("from-a ") for m in r.received_b), r.received_b


def assert_mirrored(r: PairResult, ice_lab: IceLab, a: str, b: str) -> None:
    """Both ends use the same path: each end's remote address is the other's local address
    as the internet sees it (a reflexive or relayed local candidate is that address; so is a
    host candidate on the public net; a NATed host candidate is seen as its mapping)."""
    assert r.a["relayed"] == r.b["relayed"], (r.a, r.b)
    for mine, theirs, name in ((r.a, r.b, a), (r.b, r.a, b)):
        local = mine["local"]
        if local["type"] != "host" or ice_lab[name].nat == "none":
            seen = theirs["remote"]
            assert (seen["address"], seen["port"]) == (local["address"], local["port"]), (
                mine,
                theirs,
            )


def assert_usable_first(r: PairResult, case: str) -> None:
    """Both ends could send on a valid pair (RFC 8445 §12.1) no later than ICE completed."""
    for report in (r.a, r.b):
        assert report["usable_time"] is not None, report
        assert report["usable_time"] <= report["wall_time"], report
    print(
        f"[ice-lab] {case}: usable after {r.a['usable_time'] * 1000:.1f}/"
        f"{r.b['usable_time'] * 1000:.1f} ms, completed after {r.a['wall_time'] * 1000:.0f}/"
        f"{r.b['wall_time'] * 1000:.0f} ms"
    )


def assert_direct(r: PairResult, ice_lab: IceLab, a: str, b: str) -> None:
    for report, peer in ((r.a, ice_lab[b]), (r.b, ice_lab[a])):
        assert not report["relayed"], report
        assert "relay" not in (report["local"]["type"], report["remote"]["type"]), report
        # the peer as its NAT shows it to the internet (or itself, on the public net)
        assert report["remote"]["address"] == peer.public_ip, report


def test_eim_eim_direct_reflexive_pair(ice_lab: IceLab) -> None:
    """Two endpoint-independent NATs: the checks punch holes in both, the pair is direct
    (server- or peer-reflexive remote), not the relay."""
    r = run_pair(ice_lab, "eim/eim", "lan1a", "eim2l")
    assert_direct(r, ice_lab, "lan1a", "eim2l")
    assert_mirrored(r, ice_lab, "lan1a", "eim2l")
    for report in (r.a, r.b):
        assert report["remote"]["type"] in DIRECT_REMOTE, report
    assert_usable_first(r, "eim/eim")
    assert_data_both_ways(r)


def test_sym_sym_relayed_pair(ice_lab: IceLab) -> None:
    """Two symmetric NATs: every new destination gets a new port, so no reflexive
    candidate is reachable; only a TURN relay works."""
    r = run_pair(ice_lab, "sym/sym", "sym1l", "sym2l")
    assert_mirrored(r, ice_lab, "sym1l", "sym2l")
    for report in (r.a, r.b):
        assert report["relayed"], report
        assert "relay" in (report["local"]["type"], report["remote"]["type"]), report
    assert any("typ relay" in c for c in r.candidates_a)
    assert any("typ relay" in c for c in r.candidates_b)
    assert_usable_first(r, "sym/sym")
    assert_data_both_ways(r)


@pytest.mark.parametrize(
    ("a", "b"), [("sym1l", "sym2l"), ("eim2l", "sym1l")], ids=["sym-sym", "eim-sym"]
)
def test_without_turn_symmetric_nat_fails(ice_lab: IceLab, a: str, b: str) -> None:
    """The control for the two relay cases: with STUN only, a symmetric NAT against a
    symmetric or port-restricted one has no working pair, and ICE reports failure (the lab's
    NATs really are what their names say)."""
    r = run_pair(
        ice_lab,
        f"no-turn/{a}-{b}",
        a,
        b,
        turn=False,
        expect_failure=True,
        extra_args=["--ice-timeout", "3"],
        timeout=15,
    )
    for cands in (r.candidates_a, r.candidates_b):
        assert not any("typ relay" in c for c in cands)
        assert any("typ srflx" in c for c in cands)  # STUN worked: only the path is missing
    assert r.a["event"] == r.b["event"] == "failed"


def test_eim_sym_connects(ice_lab: IceLab) -> None:
    """Port-restricted cone against symmetric: the symmetric side's checks come from a
    port the cone's filter never saw, and the cone's checks go to a port the symmetric NAT
    never opened for it (test_without_turn_symmetric_nat_fails); ICE still connects,
    through a relay."""
    r = run_pair(ice_lab, "eim/sym", "eim2l", "sym1l")
    assert_mirrored(r, ice_lab, "eim2l", "sym1l")
    assert r.a["relayed"] and r.b["relayed"], r
    assert_usable_first(r, "eim/sym")
    assert_data_both_ways(r)


def _type_preferences(candidates: list[str]) -> dict[str, set[int]]:
    """Candidate type -> the type preferences (top byte of the priority) signalled."""
    out: dict[str, set[int]] = {}
    for line in candidates:
        fields = line.split()
        kind = fields[fields.index("typ") + 1]
        out.setdefault(kind, set()).add(int(fields[3]) >> 24)
    return out


@pytest.mark.parametrize(
    ("a", "b"), [("eim2l", "sym1l"), ("sym1l", "eim2l")], ids=["eim-sym", "sym-eim"]
)
def test_symmetric_side_detects_its_mapping_and_ranks_relay_first(
    ice_lab: IceLab, a: str, b: str
) -> None:
    """Gathering finds the mapping behaviour (RFC 5780 test II against coturn's
    OTHER-ADDRESS): the symmetric side ranks its relayed candidate above its
    server-reflexive one (ice.candidate.RELAY_PREFERENCE_BEHIND_SYMMETRIC_NAT) when it is the
    controlled agent, the cone side keeps the recommended preferences; they connect through
    the relay, whichever side is controlling (``a``)."""
    from ice.candidate import RELAY_PREFERENCE_BEHIND_SYMMETRIC_NAT

    r = run_pair(ice_lab, f"{a}/{b} ranking", a, b)
    reports = {a: (r.a, r.candidates_a), b: (r.b, r.candidates_b)}
    eim_report, eim_candidates = reports["eim2l"]
    sym_report, sym_candidates = reports["sym1l"]
    assert eim_report["nat_mapping"] == "endpoint-independent", eim_report
    assert sym_report["nat_mapping"] in (
        "address-dependent",
        "address-and-port-dependent",
    ), sym_report
    eim, sym = _type_preferences(eim_candidates), _type_preferences(sym_candidates)
    assert eim["relay"] == {0} and eim["srflx"] == {100}, eim
    if b == "sym1l":  # controlled: the raised relay is signalled (ice.candidate.ranked_for_role)
        assert sym["relay"] == {RELAY_PREFERENCE_BEHIND_SYMMETRIC_NAT}, sym
        assert max(sym["srflx"]) < min(sym["relay"]), sym
    else:  # controlling: the recommended preferences
        assert sym["relay"] == {0} and sym["srflx"] == {100}, sym
    assert r.a["relayed"] and r.b["relayed"], r
    print(f"[ice-lab] {a}/{b} pair {r.pair('a')} | {r.pair('b')}")
    assert_usable_first(r, f"{a}/{b} ranked")
    assert_data_both_ways(r)


@pytest.mark.parametrize("nat", ["eim", "sym"])
def test_public_laptop_and_natted_laptop(ice_lab: IceLab, nat: str) -> None:
    """A laptop with a public address (no NAT) and one behind a NAT of either kind: the
    NATed side's checks reach the public host candidate directly, the public side learns the
    NATed peer's mapping (server- or peer-reflexive): no relay needed."""
    natted = "eim2l" if nat == "eim" else "sym2l"
    r = run_pair(ice_lab, f"pub/{nat}", "pub", natted)
    assert_direct(r, ice_lab, "pub", natted)
    assert_mirrored(r, ice_lab, "pub", natted)
    assert r.b["remote"]["type"] == "host", r.b
    assert r.a["remote"]["type"] in DIRECT_REMOTE, r.a
    assert_data_both_ways(r)


def test_same_lan_host_pair(ice_lab: IceLab) -> None:
    """Two laptops on one LAN behind the same router: host candidates, straight over the
    LAN (no hairpin through the NAT, no relay)."""
    r = run_pair(ice_lab, "same-lan", "lan1a", "lan1b")
    assert r.pair("a") == ("host", "host"), r.a
    assert r.pair("b") == ("host", "host"), r.b
    assert r.a["remote"]["address"] == ice_lab["lan1b"].ip
    assert r.b["remote"]["address"] == ice_lab["lan1a"].ip
    assert not r.a["relayed"] and not r.b["relayed"]
    assert_mirrored(r, ice_lab, "lan1a", "lan1b")
    assert_data_both_ways(r)


@pytest.mark.parametrize(
    ("a", "b", "routers"),
    [("lan1a", "eim2l", ("eim1", "eim2")), ("sym1l", "sym2l", ("sym1", "sym2"))],
    ids=["eim-eim", "sym-sym"],
)
def test_connects_with_ten_percent_loss(
    ice_lab: IceLab, a: str, b: str, routers: tuple[str, str]
) -> None:
    """10% random loss on both routers (iptables statistic, in and out and forwarded):
    STUN retransmissions and repeated checks still get a pair, and data flows."""
    for name in routers:
        ice_lab.routers[name].set_loss(0.10)
    try:
        r = run_pair(ice_lab, f"loss10/{a}-{b}", a, b)
        dropped = {name: ice_lab.routers[name].dropped_packets() for name in routers}
    finally:
        for name in routers:
            ice_lab.routers[name].set_loss(0)
    print(f"[ice-lab] dropped by the loss rules: {dropped}")
    # the loss was really there (one router alone may, rarely, drop none of ~50 packets)
    assert sum(dropped.values()) > 0, dropped
    if a.startswith("sym"):
        assert r.a["relayed"] and r.b["relayed"]
    # eim/eim may settle for the relay here (a third of the runs): the controlling agent
    # stops waiting for a better pair 2 RTT + Ta after its first check was sent, and a lost
    # check is not retransmitted before the 0.5 s RTO; --nomination-delay does not change it
    assert_mirrored(r, ice_lab, a, b)
    assert_data_both_ways(r)


@pytest.mark.parametrize(
    ("a", "b", "relayed"),
    [("lan1a", "eim2l", False), ("sym1l", "sym2l", True)],
    ids=["eim-eim", "sym-sym"],
)
def test_two_components_through_nats(ice_lab: IceLab, a: str, b: str, relayed: bool) -> None:
    """RTP and RTCP on separate components (no rtcp-mux): each component has its own socket,
    NAT mapping (and allocation), and gets its own pair; data never crosses components."""
    r = run_pair(ice_lab, f"2comp/{a}-{b}", a, b, extra_args=["--components", "2"])
    for report in (r.a, r.b):
        pairs = report["pairs"]
        assert [p["component"] for p in pairs] == [1, 2], report
        assert all(p["relayed"] is relayed for p in pairs), report
        remote = [(p["remote"]["address"], p["remote"]["port"]) for p in pairs]
        local = [(p["local"]["address"], p["local"]["port"]) for p in pairs]
        assert remote[0] != remote[1] and local[0] != local[1], report
    if not relayed:
        for report, peer in ((r.a, ice_lab[b]), (r.b, ice_lab[a])):
            assert {p["remote"]["address"] for p in report["pairs"]} == {peer.public_ip}
    for got, sender in ((r.received_a, "from-b"), (r.received_b, "from-a")):
        per_component = {1: 0, 2: 0}
        for message in got:
            tag, sent_on, _, received_on = message.split()
            assert tag == sender, message
            assert received_on == "@" + sent_on, message  # arrived on the component it was sent on
            per_component[int(sent_on[1:])] += 1
        assert min(per_component.values()) >= 10, per_component


CONSENT = ["--agent-option", "consent_interval=0.3", "--agent-option", "consent_timeout=2"]


@pytest.mark.parametrize(
    ("a", "b", "router"),
    [("lan1a", "eim2l", "eim2"), ("sym1l", "sym2l", "sym2")],
    ids=["eim-eim", "sym-sym"],
)
def test_consent_through_nats(ice_lab: IceLab, a: str, b: str, router: str) -> None:
    """Consent freshness (RFC 7675) on the selected pair through the NATs (and the relay):
    with a 2 s consent timeout nothing is lost over 3 quiet seconds - the refreshes and their
    responses get through; once one router drops everything both ends lose consent and stop
    sending (§5.1)."""
    with pair_session(ice_lab, f"consent/{a}-{b}", a, b, extra_args=CONSENT) as s:
        assert_data_both_ways(s.result)
        for node in (s.a, s.b):
            node.send(cmd="wait_event", name="ConsentLost", timeout=3)
        for node in (s.a, s.b):
            quiet = node.expect("agent_event", "no_agent_event", timeout=10)
            assert quiet["event"] == "no_agent_event", quiet
            assert quiet["send_ok"], quiet
        ice_lab.routers[router].set_loss(1.0)
        try:
            for node in (s.a, s.b):
                node.send(cmd="wait_event", name="ConsentLost", timeout=8)
            lost = [node.expect("agent_event", "no_agent_event", timeout=15) for node in (s.a, s.b)]
        finally:
            ice_lab.routers[router].set_loss(0)
    print(f"[ice-lab] consent lost after {[x.get('after') for x in lost]} s")
    for report in lost:
        assert report["event"] == "agent_event", report
        assert not report["send_ok"], report  # no more data on a pair without consent


@pytest.mark.parametrize(
    ("a", "b"), [("lan1a", "eim2l"), ("eim2l", "sym1l")], ids=["eim-eim", "eim-sym"]
)
def test_ice_restart_through_nats(ice_lab: IceLab, a: str, b: str) -> None:
    """ICE restart (RFC 8445 §9) after connecting: new credentials both ways, new checks
    through the same NATs, a new selected pair of the same kind, data both ways again."""
    with pair_session(ice_lab, f"restart/{a}-{b}", a, b) as s:
        first = s.result
        s.a.send(cmd="restart")
        offer = s.a.expect("candidates")
        s.b.send(cmd="restart")
        answer = s.b.expect("candidates")
        assert offer["ufrag"] != first.ufrags[0] and answer["ufrag"] != first.ufrags[1]
        s.b.send(
            cmd="remote", ufrag=offer["ufrag"], pwd=offer["pwd"], candidates=offer["candidates"]
        )
        s.a.send(
            cmd="remote", ufrag=answer["ufrag"], pwd=answer["pwd"], candidates=answer["candidates"]
        )
        again = [node.expect("connected", "failed", timeout=20) for node in (s.a, s.b)]
        assert [r["event"] for r in again] == ["connected", "connected"], again
        for before, after in ((first.a, again[0]), (first.b, again[1])):
            assert after["relayed"] == before["relayed"], (before, after)
            if not before["relayed"]:  # (a relayed path may come back via the other relay)
                assert after["remote"]["address"] == before["remote"]["address"], (before, after)
        s.a.send(cmd="exchange", tag="again-a", want=10)
        s.b.send(cmd="exchange", tag="again-b", want=10)
        got_a = s.a.expect("received", timeout=15)["messages"]
        got_b = s.b.expect("received", timeout=15)["messages"]
        print(f"[ice-lab] restart/{a}-{b}: connect after restart {again[0].get('connect_time')}")
    assert len(got_a) >= 10 and all(m.startswith("again-b ") for m in got_a), got_a
    assert len(got_b) >= 10 and all(m.startswith("again-a ") for m in got_b), got_b


def test_udp_blocked_turn_over_tcp(ice_lab: IceLab) -> None:
    """A network that lets no UDP out (the router drops it): STUN and TURN over UDP give
    nothing, TURN over TCP (RFC 8656 §3.1) still allocates a (UDP) relayed address, and the
    call connects through it, data both ways."""
    router = ice_lab.routers["sym1"]
    block = ["FORWARD", "-o", "wan0", "-p", "udp", "-j", "DROP"]
    router.iptables("-I", *block)
    try:
        r = run_pair(
            ice_lab,
            "udp-blocked/tcp-turn",
            "eim2l",
            "sym1l",
            extra_args=[],
            extra_args_b=["--turn-transport", "tcp", "--gather-timeout", "1.5"],
        )
        listing = router.iptables("-L", "FORWARD", "-n", "-v", "-x")
    finally:
        router.iptables("-D", *block)
    rule = next(
        line
        for line in listing.splitlines()
        if line.split()[2:4] in (["DROP", "udp"], ["DROP", "17"]) and "wan0" in line.split()
    )
    assert int(rule.split()[0]) > 0, listing  # UDP really tried to get out, and was dropped
    types_b = {c.split(" typ ")[1].split()[0] for c in r.candidates_b}
    assert types_b == {"host", "relay"}, r.candidates_b  # no srflx: STUN got no answer
    assert r.b["local"]["type"] == "relay" and r.b["relayed"], r.b
    assert r.a["relayed"], r.a
    assert_mirrored(r, ice_lab, "eim2l", "sym1l")
    assert_data_both_ways(r)


UDP_TIMEOUTS = (
    "net.netfilter.nf_conntrack_udp_timeout",
    "net.netfilter.nf_conntrack_udp_timeout_stream",
)


@pytest.mark.parametrize(
    ("interval", "nat_timeout", "kept"),
    # The control case "checks every 3 s with a 1 s NAT timeout lose the mapping" was dropped:
    # whether conntrack forgets the mapping in time is the kernel's timing, not ours, and it
    # failed about one run in four on a loaded machine.
    [(0.3, "1", True), (3.0, None, True)],
    ids=["frequent-checks-keep-mapping", "rare-checks-default-nat"],
)
def test_consent_keeps_nat_mappings_alive(
    ice_lab: IceLab, interval: float, nat_timeout: str | None, kept: bool
) -> None:
    """RFC 8445 §11 / RFC 7675: the consent checks are the keepalives that hold the NAT
    mappings open.  With ``nat_timeout`` the symmetric routers forget an idle UDP mapping
    after 1 s; the relayed pair depends on each laptop's mapping towards coturn (a new one
    gets a new port, which coturn does not know: RFC 8656 §2.2 5-tuple).  Checks every 0.3 s
    keep the path through idle seconds; checks every 3 s (consent timeout 5 s, which they
    would satisfy - as the default-NAT case shows) let the mappings die: consent is lost.
    (Either side's checks and their responses refresh a mapping; with two streams every
    2.4-3.6 s at least one gap per period is well over 1 s.)"""
    routers = [ice_lab.routers["sym1"], ice_lab.routers["sym2"]]
    saved = [[r.run(["sysctl", "-n", k]).stdout.strip() for k in UDP_TIMEOUTS] for r in routers]
    options = ["--agent-option", f"consent_interval={interval}"]
    options += ["--agent-option", f"consent_timeout={5.0 if interval > 1 else 3.0}"]
    case = f"keepalive/{interval}/{nat_timeout}"
    try:
        if nat_timeout is not None:
            for router in routers:
                for key in UDP_TIMEOUTS:
                    router.sysctl(key, nat_timeout)
        with pair_session(ice_lab, case, "sym1l", "sym2l", extra_args=options) as s:
            assert s.result.a["relayed"]
            idle = 7.0 if interval > 1 else 4.0  # > consent timeout (+ one interval)
            for node in (s.a, s.b):
                node.send(cmd="wait_event", name="ConsentLost", timeout=idle)
            reports = [
                node.expect("agent_event", "no_agent_event", timeout=idle + 5)
                for node in (s.a, s.b)
            ]
            if kept:
                s.a.send(cmd="exchange", tag="later-a", want=10)
                s.b.send(cmd="exchange", tag="later-b", want=10)
                later = [node.expect("received", timeout=10)["messages"] for node in (s.a, s.b)]
    finally:
        for router, values in zip(routers, saved, strict=True):
            for key, value in zip(UDP_TIMEOUTS, values, strict=True):
                router.sysctl(key, value)
    events = [(r["event"], r.get("after")) for r in reports]
    print(f"[ice-lab] {case}: {events}")
    if kept:
        assert [r["event"] for r in reports] == ["no_agent_event"] * 2, reports
        assert len(later[0]) >= 10 and all(m.startswith("later-b ") for m in later[0])
        assert len(later[1]) >= 10 and all(m.startswith("later-a ") for m in later[1])
    else:
        assert any(r["event"] == "agent_event" for r in reports), reports
