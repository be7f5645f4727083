"""The 5 ms floor between checks (RFC 8445 §14.2) counted from when a check leaves, and the
nomination check encoded while it waits for that floor (sent as built, with nothing stale)."""

from __future__ import annotations

import pytest

from ice.agent import Agent, Completed, RoleChanged
from ice.stun import (
    ICE_CONTROLLED,
    ICE_CONTROLLING,
    PRIORITY,
    USE_CANDIDATE,
    USERNAME,
    StunMessage,
    parse_message,
)
from tests.unit.test_ice_agent import REMOTE, VIA, events, make_agent, sent


def _first_check(agent: Agent, decided: float, left: float) -> bytes:
    """The first check, decided at ``decided`` and handed out (sent) at ``left``."""
    agent.handle_timer(decided)
    ((data, via, addr),) = agent.datagrams_to_send(left)
    assert (via, addr) == (VIA, REMOTE)
    return data


def _nomination_time(agent: Agent, start: float) -> tuple[float, StunMessage]:
    """Step the agent's timer from ``start`` until it sends; (when, what)."""
    now = start
    for _ in range(100):
        timer = agent.get_timer()
        assert timer is not None
        now = max(now, timer)
        agent.handle_timer(now)
        out = sent(agent)
        if out:
            ((msg, _, _, _),) = out
            return now, msg
    raise AssertionError("nothing sent")


def test_floor_counts_from_the_moment_the_check_left() -> None:
    """Decided at 0, handed to the socket at 0.3 ms (encoding, a busy loop): the nomination
    may leave 5 ms after 0.3 ms, not after 0 - on the wire the two are 5 ms apart."""
    agent, peer = make_agent(ta=0.05)
    raw = _first_check(agent, 0.0, 0.0003)
    assert agent.receive(peer.answer(raw), VIA, REMOTE, 0.001)
    assert sent(agent) == [], "the floor holds the nomination back"
    assert agent.get_timer() == pytest.approx(0.0053)
    when, msg = _nomination_time(agent, 0.001)
    assert USE_CANDIDATE.type in msg
    assert when == pytest.approx(0.0053)
    agent.handle_timer(0.0052)  # a timer a hair early sends nothing
    assert sent(agent) == []


def test_floor_without_a_send_time_counts_from_the_decision() -> None:
    """``datagrams_to_send()`` without ``now`` (tests, simple shells): as before, the
    floor counts from the time the check was decided."""
    agent, peer = make_agent(ta=0.05)
    agent.handle_timer(0.0)
    ((raw, _, _),) = agent.datagrams_to_send()
    agent.receive(peer.answer(raw), VIA, REMOTE, 0.001)
    assert agent.get_timer() == pytest.approx(0.005)


def test_hand_out_time_never_moves_the_floor_back() -> None:
    """A shell that passes an older ``now`` to ``datagrams_to_send`` (a stale clock
    reading) cannot bring the next check closer than the floor after its decision."""
    agent, peer = make_agent(ta=0.05)
    raw = _first_check(agent, 0.002, 0.001)
    agent.receive(peer.answer(raw), VIA, REMOTE, 0.003)
    assert agent.get_timer() == pytest.approx(0.007)


def test_prepared_nomination_is_what_a_fresh_one_would_be() -> None:
    """While the nomination waits for the floor it is already encoded; what leaves is a
    complete, authentic USE-CANDIDATE check of its own transaction."""
    agent, peer = make_agent(ta=0.05)
    raw = _first_check(agent, 0.0, 0.0)
    agent.receive(peer.answer(raw), VIA, REMOTE, 0.001)
    prepared = agent._prepared
    assert prepared is not None and prepared.use_candidate
    when, msg = _nomination_time(agent, 0.001)
    assert when == pytest.approx(0.005)
    assert agent._prepared is None, "used once"
    assert msg.transaction_id == prepared.message.transaction_id
    assert msg.transaction_id != parse_message(raw).transaction_id
    assert USE_CANDIDATE.type in msg and ICE_CONTROLLING.type in msg
    assert msg.get(USERNAME) == f"{peer.ufrag}:{agent.local_ufrag}"
    assert msg.get(PRIORITY) == parse_message(raw).get(PRIORITY)
    assert msg.check_integrity(peer.pwd.encode()) and msg.has_fingerprint
    # and it completes like any nomination
    agent.receive(peer.answer(msg.raw or b""), VIA, REMOTE, 0.006)
    assert any(isinstance(e, Completed) for e in events(agent))


def test_prepared_check_is_dropped_when_the_role_changes() -> None:
    """A triggered check waits for the floor, encoded; a role conflict then makes us
    controlling (§7.3.1.1): what goes out is built anew (ICE-CONTROLLING), never the stale
    prepared bytes."""
    other = ("192.0.2.2", 2000)
    agent, peer = make_agent(False, remotes=(REMOTE, other), ta=0.05)
    _first_check(agent, 0.0, 0.0)
    # the peer checks the other pair: a triggered check for it, held back by the floor
    assert agent.receive(peer.request(controlling=True), VIA, other, 0.001)
    assert [addr for _, _, _, addr in sent(agent)] == [other], "only the answer"
    stale = agent._prepared
    assert stale is not None and not stale.controlling and stale.pair.remote_address == other
    # a check claiming controlled too, with a smaller tie-breaker: we become controlling
    agent.receive(peer.request(tie=5), VIA, REMOTE, 0.002)
    assert any(isinstance(e, RoleChanged) for e in events(agent)) and agent.controlling
    requests = []
    now = 0.002
    for _ in range(20):
        timer = agent.get_timer()
        assert timer is not None
        now = max(now, timer)
        agent.handle_timer(now)
        requests += [(m, addr) for m, _, _, addr in sent(agent) if m.cls.name == "REQUEST"]
        if requests:
            break
    ((msg, addr),) = requests
    assert addr == other
    assert msg.transaction_id != stale.message.transaction_id
    assert ICE_CONTROLLING.type in msg and ICE_CONTROLLED.type not in msg


def test_prepared_nomination_leaves_with_the_first_datagrams_after_the_floor() -> None:
    """The shell asks for datagrams at the floor (its precise timer): the waiting nomination
    is out at once, before the rest of :meth:`Agent.handle_timer` runs; a moment before
    the floor nothing leaves."""
    agent, peer = make_agent(ta=0.05)
    raw = _first_check(agent, 0.0, 0.0)
    agent.receive(peer.answer(raw), VIA, REMOTE, 0.001)
    assert agent.datagrams_to_send(0.001) == []
    assert agent.datagrams_to_send(0.0049) == []
    ((data, via, addr),) = agent.datagrams_to_send(0.005)
    msg = parse_message(data)
    assert (via, addr) == (VIA, REMOTE) and USE_CANDIDATE.type in msg
    assert agent.stats().checks_sent == 2
    agent.handle_timer(0.005)  # nothing else was due: nothing more goes out
    assert agent.datagrams_to_send(0.005) == []
    assert agent.get_timer() is not None and agent.get_timer() > 0.01  # type: ignore[operator]
    agent.receive(peer.answer(data), VIA, REMOTE, 0.006)
    assert any(isinstance(e, Completed) for e in events(agent))


def test_prepared_check_follows_a_role_change() -> None:
    """After a role change the stale prepared bytes never leave: the check is prepared
    again for the new role (ICE-CONTROLLING) and that one goes at the floor."""
    other = ("192.0.2.2", 2000)
    agent, peer = make_agent(False, remotes=(REMOTE, other), ta=0.05)
    _first_check(agent, 0.0, 0.0)
    agent.receive(peer.request(controlling=True), VIA, other, 0.001)
    agent.datagrams_to_send(0.001)  # the answer
    stale = agent._prepared
    assert stale is not None and not stale.controlling
    agent.receive(peer.request(tie=5), VIA, REMOTE, 0.002)  # we become controlling
    assert agent.controlling
    agent.datagrams_to_send(0.002)  # the answer
    requests = [parse_message(d) for d, _, _ in agent.datagrams_to_send(0.005)]
    (msg,) = [m for m in requests if m.cls.name == "REQUEST"]
    assert msg.transaction_id != stale.message.transaction_id
    assert ICE_CONTROLLING.type in msg and ICE_CONTROLLED.type not in msg
