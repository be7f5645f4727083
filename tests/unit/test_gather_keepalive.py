"""What a gathered set needs while it waits in a pool (ice.pool), on a virtual clock: keepalives
to the servers that answered (CandidateGatherer with ``keepalive``) and dropping the components
a call does not use (CandidateGatherer.drop_components)."""

from __future__ import annotations

import pytest

from ice.candidate import CandidateType
from ice.gather import GatherConfig, GatheringComplete, TurnServer
from ice.stun import LIFETIME, Address, StunClass, StunMethod, parse_message
from tests.unit.test_ice_gather import DEAD, HOST4, STUN1, TURN, FakeTurn, Net, drive, started

HOST4_RTCP: Address = (HOST4[0], HOST4[1] + 1)


def keepalives(out: list[tuple[bytes, Address, Address]]) -> list[tuple[Address, Address]]:
    """(socket, server) of the Binding indications in ``out``."""
    found = []
    for data, local, dst in out:
        msg = parse_message(data)
        if msg.method == StunMethod.BINDING and msg.cls is StunClass.INDICATION:
            found.append((local, dst))
    return sorted(found)


def test_keepalives_go_to_every_server_that_answered() -> None:
    cfg = GatherConfig(
        stun_servers=[STUN1, DEAD],
        turn_servers=[TurnServer(TURN, "alice", "secret")],
        stun_timeout=1.0,
        keepalive=15.0,
    )
    g = started(cfg, (HOST4, 1, 65535), (HOST4_RTCP, 2, 65535))
    net = Net(nat=True, turn=FakeTurn(), dead={DEAD})
    _, end = drive(g, net)
    assert g.complete and end < 1.1
    timer = g.get_timer()
    assert timer is not None and timer <= 15.1
    assert g.datagrams_to_send(timer - 0.001) == []
    g.handle_timer(timer)
    expected = sorted((s, server) for s in (HOST4, HOST4_RTCP) for server in (STUN1, TURN))
    assert keepalives(g.datagrams_to_send(timer)) == expected  # not the dead one
    nxt = g.get_timer()
    assert nxt is not None and nxt == pytest.approx(timer + 15.0)
    g.handle_timer(nxt)
    assert keepalives(g.datagrams_to_send(nxt)) == expected
    # they stop with close() (which releases the allocations instead)
    g.close(nxt + 1)
    g.datagrams_to_send(nxt + 1)
    g.handle_timer(nxt + 15.0)
    sent = [parse_message(d) for d, _, _ in g.datagrams_to_send(nxt + 15.0)]
    assert not [m for m in sent if m.cls is StunClass.INDICATION]


def test_no_keepalives_unless_asked() -> None:
    cfg = GatherConfig(stun_servers=[STUN1])
    g = started(cfg, (HOST4, 1, 65535))
    drive(g, Net(nat=True))
    assert g.get_timer() is None


def test_host_only_set_has_no_keepalive_timer_left_running() -> None:
    g = started(GatherConfig(keepalive=15.0), (HOST4, 1, 65535))
    assert g.complete
    timer = g.get_timer()
    if timer is not None:
        g.handle_timer(timer)
        assert g.datagrams_to_send(timer) == []
        assert g.get_timer() is None


def test_drop_components_releases_the_extra_allocation() -> None:
    cfg = GatherConfig(
        stun_servers=[STUN1], turn_servers=[TurnServer(TURN, "alice", "secret")], keepalive=15.0
    )
    g = started(cfg, (HOST4, 1, 65535), (HOST4_RTCP, 2, 65535))
    turn = FakeTurn()
    _, now = drive(g, Net(nat=True, turn=turn))
    assert {c.candidate.component for c in g.candidates} == {1, 2}
    assert g.drop_components(1, now) == [HOST4_RTCP]
    assert {c.candidate.component for c in g.candidates} == {1}
    assert {c.candidate.component for c in g.signalled_candidates} == {1}
    assert g.config.components == 1
    out = g.datagrams_to_send(now)
    assert len(out) == 1
    data, local, dst = out[0]
    msg = parse_message(data)
    assert (local, dst) == (HOST4_RTCP, TURN)
    assert msg.method == StunMethod.REFRESH and msg.get(LIFETIME) == 0
    # component 1's allocation is untouched
    relayed = next(c for c in g.candidates if c.candidate.type is CandidateType.RELAYED)
    client = g.turn_client(relayed.candidate.transport_address)
    assert client is not None and client.state.value == "allocated"
    assert g.drop_components(1, now) == []
    # keepalives from component 1's socket only
    g.handle_timer(now + 15.0)
    assert keepalives(g.datagrams_to_send(now + 15.0)) == [(HOST4, STUN1), (HOST4, TURN)]
    with pytest.raises(ValueError):
        g.drop_components(0, now)


def test_drop_components_while_gathering_completes_without_them() -> None:
    cfg = GatherConfig(stun_servers=[STUN1, DEAD], stun_timeout=2.0, ta=0.05)
    g = started(cfg, (HOST4, 1, 65535), (HOST4_RTCP, 2, 65535))
    g.datagrams_to_send(0.0)
    assert g.drop_components(1, 0.0) == [HOST4_RTCP]
    events, end = drive(g, Net(nat=True, dead={DEAD}))
    complete = events[-1][1]
    assert isinstance(complete, GatheringComplete)
    assert {c.candidate.component for c in complete.candidates} == {1}
    assert end == pytest.approx(2.05)  # only component 1's dead server was ever asked
