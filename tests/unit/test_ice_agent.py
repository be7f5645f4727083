"""The ICE agent against a scripted peer: the wire format of checks and answers (RFC 8445 §7),
role conflicts, peer-reflexive candidates, nomination, pacing, RTO, consent, and fuzzing."""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ice.agent import (
    PACING_NOT_NEGOTIATED,
    Agent,
    AgentEvent,
    AgentState,
    Completed,
    ConsentLost,
    Failed,
    PairChecked,
    PairNominated,
    RoleChanged,
)
from ice.aio import IceConnection
from ice.candidate import Candidate, CandidateType
from ice.checklist import PairState, prflx_priority
from ice.stun import (
    ERROR_CODE,
    ICE_CONTROLLED,
    ICE_CONTROLLING,
    PRIORITY,
    SOFTWARE,
    UNKNOWN_ATTRIBUTES,
    USE_CANDIDATE,
    USERNAME,
    XOR_MAPPED_ADDRESS,
    StunClass,
    StunMessage,
    StunMethod,
    parse_message,
)

Address = tuple[str, int]
LOCAL: Address = ("10.0.0.1", 1000)
REMOTE: Address = ("192.0.2.1", 2000)
VIA = "sock1"


class Peer:
    """The other agent, scripted by hand."""

    ufrag = "peerufrag"
    pwd = "peerpasswordpeerpassword"

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def request(
        self,
        *,
        controlling: bool = False,
        tie: int = 5,
        priority: int | None = 1845501695,
        use_candidate: bool = False,
        ufrag: str | None = None,
        key: bytes | None = None,
        integrity: bool = True,
        extra: list[tuple[int, bytes]] | None = None,
    ) -> bytes:
        msg = StunMessage(StunMethod.BINDING, StunClass.REQUEST)
        msg.add(USERNAME, f"{ufrag or self.agent.local_ufrag}:{self.ufrag}")
        if priority is not None:
            msg.add(PRIORITY, priority)
        msg.add(ICE_CONTROLLING if controlling else ICE_CONTROLLED, tie)
        if use_candidate:
            msg.add(USE_CANDIDATE, True)
        for t, v in extra or []:
            msg.add_raw(t, v)
        if not integrity:
            return msg.encode(fingerprint=True)
        return msg.encode(key or self.agent.local_pwd.encode(), fingerprint=True)

    def answer(
        self,
        request: bytes,
        mapped: Address = LOCAL,
        *,
        error: int | None = None,
        key: bytes | None = None,
    ) -> bytes:
        req = parse_message(request)
        if error is not None:
            resp = req.error_response(error)
        else:
            resp = req.response().add(XOR_MAPPED_ADDRESS, mapped)
        return resp.encode(key or self.pwd.encode(), fingerprint=True)


def make_agent(
    controlling: bool = True,
    remotes: tuple[Address, ...] = (REMOTE,),
    *,
    start: bool = True,
    **kw: object,
) -> tuple[Agent, Peer]:
    kw.setdefault("ta", 0.02)
    agent = Agent(
        controlling,
        tie_breaker=100,
        rng=random.Random(1),
        **kw,  # type: ignore[arg-type]
    )
    agent.add_local_candidate(Candidate.make(CandidateType.HOST, *LOCAL), VIA)
    peer = Peer(agent)
    agent.set_remote_parameters(peer.ufrag, peer.pwd)
    for i, addr in enumerate(remotes):
        agent.add_remote_candidate(
            Candidate.make(CandidateType.HOST, *addr, local_preference=65535 - i)
        )
    agent.end_of_candidates()
    if start:
        agent.start(0.0)
    return agent, peer


def sent(agent: Agent) -> list[tuple[StunMessage, bytes, Hashable, Address]]:
    return [(parse_message(d), d, via, addr) for d, via, addr in agent.datagrams_to_send()]


def events(agent: Agent) -> list[AgentEvent]:
    out = []
    while (e := agent.next_event()) is not None:
        out.append(e)
    return out


def tick(agent: Agent, now: float) -> list[tuple[StunMessage, bytes, Hashable, Address]]:
    agent.handle_timer(now)
    return sent(agent)


# -- sending checks (§7.2.4) -----------------------------------------------------------------


def test_check_request_contents() -> None:
    agent, peer = make_agent()
    assert agent.get_timer() == 0.0
    ((msg, raw, via, addr),) = tick(agent, 0.0)
    assert (via, addr) == (VIA, REMOTE)
    assert msg.cls == StunClass.REQUEST and msg.method == StunMethod.BINDING
    assert msg.get(USERNAME) == f"{peer.ufrag}:{agent.local_ufrag}"
    local = agent.local_candidates()[0]
    assert msg.get(PRIORITY) == prflx_priority(local)
    assert msg.get(ICE_CONTROLLING) == 100
    assert ICE_CONTROLLED.type not in msg and USE_CANDIDATE.type not in msg
    assert msg.check_integrity(peer.pwd.encode())
    assert msg.has_fingerprint
    assert agent.stats().checks_sent == 1


def test_same_foundation_checked_one_at_a_time() -> None:
    remotes = tuple(("192.0.2.1", 2000 + i) for i in range(3))
    agent, peer = make_agent(remotes=remotes)
    ((_, raw, _, addr),) = tick(agent, 0.0)
    assert addr == remotes[0]
    assert tick(agent, 0.02) == [], "the other pairs of the foundation stay Frozen"
    agent.receive(peer.answer(raw), VIA, addr, 0.03)
    # §7.2.5.3.3: the success unfreezes the rest of the foundation
    states = {p.remote_address: p.state for p in agent.checklist}
    assert states[remotes[1]] is PairState.WAITING and states[remotes[2]] is PairState.WAITING


def test_checks_paced_by_ta() -> None:
    # different IPs: different foundations, so all three start Waiting (§6.1.2.6)
    remotes = tuple((f"192.0.2.{1 + i}", 2000) for i in range(3))
    agent, _ = make_agent(remotes=remotes)
    times: list[float] = []
    dests: list[Address] = []
    now = 0.0
    while len(times) < 3:
        timer = agent.get_timer()
        assert timer is not None
        now = timer
        for _, _, _, addr in tick(agent, now):
            times.append(now)
            dests.append(addr)
    assert times == pytest.approx([0.0, 0.02, 0.04])
    assert dests == list(remotes), "highest priority first"


def test_check_rto_and_failure() -> None:
    agent, _ = make_agent(check_rc=3, check_rm=2, timeout=100.0)
    sends = []
    now = 0.0
    while agent.state is AgentState.RUNNING and now < 50:
        timer = agent.get_timer()
        assert timer is not None
        now = timer
        sends += [now for _ in tick(agent, now)]
    # RTO = max(500 ms, Ta * N) (§14.3): sends at 0, 0.5, 1.5; gives up 2 RTO later
    assert sends == pytest.approx([0.0, 0.5, 1.5])
    evs = events(agent)
    assert any(isinstance(e, PairChecked) and not e.succeeded for e in evs)
    failed = [e for e in evs if isinstance(e, Failed)]
    assert failed and "failed" in failed[0].reason
    assert now == pytest.approx(2.5)


def test_success_then_regular_nomination_completes() -> None:
    agent, peer = make_agent()
    ((_, raw, _, _),) = tick(agent, 0.0)
    assert agent.receive(peer.answer(raw), VIA, REMOTE, 0.03)
    evs = events(agent)
    assert isinstance(evs[0], PairChecked) and evs[0].succeeded
    assert evs[0].rtt == pytest.approx(0.03)
    # the only pair is the best possible: nominate at once, as a triggered check that goes
    # out with the response (no Ta wait: 30 ms > the 5 ms floor of §14.2)
    ((msg, raw2, _, _),) = sent(agent)
    assert USE_CANDIDATE.type in msg
    assert agent.selected_pair(1) is None
    agent.receive(peer.answer(raw2), VIA, REMOTE, 0.06)
    evs = events(agent)
    nominated = [e for e in evs if isinstance(e, PairNominated)]
    assert nominated and nominated[0].via == VIA and nominated[0].remote_address == REMOTE
    done = [e for e in evs if isinstance(e, Completed)]
    assert done and done[0].connect_time == pytest.approx(0.06)
    assert agent.state is AgentState.COMPLETED
    assert agent.send_target(1) == (VIA, REMOTE)
    assert agent.is_from_selected(1, REMOTE) and agent.is_from_selected(1, REMOTE, VIA)
    assert not agent.is_from_selected(1, ("192.0.2.66", 2000))
    assert not agent.is_from_selected(1, REMOTE, "other-socket")
    assert agent.component_of(VIA, REMOTE) == 1
    assert agent.component_of(VIA, ("192.0.2.66", 1)) is None
    stats = agent.stats()
    assert stats.state == "completed" and stats.selected[1]["local"]["type"] == "host"  # type: ignore[index]


def _nominations(agent: Agent, times: list[float]) -> list[tuple[float, Address]]:
    out = []
    for now in times:
        out += [(now, addr) for m, _, _, addr in tick(agent, now) if USE_CANDIDATE.type in m]
    return out


def _worse_pair_valid_first(agent: Agent, peer: Peer) -> bytes:
    """REMOTE (the better pair) checked at 0; the peer's check on the worse pair arrives at
    10 ms: its triggered check goes at once and is answered at 20 ms (RTT 10 ms).  Returns
    the check sent to REMOTE."""
    ((_, high, _, addr),) = tick(agent, 0.0)
    assert addr == REMOTE
    low_addr = ("192.0.2.2", 2001)
    agent.receive(peer.request(), VIA, low_addr, 0.01)
    (low,) = [raw for m, raw, _, a in sent(agent) if m.cls == StunClass.REQUEST]
    agent.receive(peer.answer(low), VIA, low_addr, 0.02)
    assert agent.checklist.best_valid(1) is not None
    return high


def test_nomination_waits_for_a_better_pair_that_may_still_answer() -> None:
    agent, peer = make_agent(remotes=(REMOTE, ("192.0.2.2", 2001)), nomination_delay=0.3)
    high = _worse_pair_valid_first(agent, peer)
    # REMOTE was checked 20 ms ago: it may answer for one more RTT (10 ms) plus Ta (20 ms)
    assert [m for m, *_ in sent(agent) if USE_CANDIDATE.type in m] == []
    assert _nominations(agent, [0.02, 0.025]) == []
    agent.receive(peer.answer(high), VIA, REMOTE, 0.028)  # the better pair, in time
    assert [addr for _, addr in _nominations(agent, [0.028, 0.05, 0.1])] == [REMOTE]


def test_nomination_does_not_wait_for_a_pair_that_stays_silent() -> None:
    """The better pair has been in progress for longer than one round trip of the valid one
    plus Ta: nominate without waiting for the whole ``nomination_delay``."""
    agent, peer = make_agent(remotes=(REMOTE, ("192.0.2.2", 2001)), nomination_delay=0.3)
    _worse_pair_valid_first(agent, peer)
    assert _nominations(agent, [0.02, 0.025]) == []
    timer = agent.get_timer()
    assert timer == pytest.approx(0.03), "the silent pair (sent at 0) is given up at 0.03"
    assert _nominations(agent, [0.03]) == [(0.03, ("192.0.2.2", 2001))]


def test_nomination_waits_for_untried_better_pairs() -> None:
    remotes = (REMOTE, ("192.0.2.2", 2001))
    agent, peer = make_agent(controlling=True, remotes=remotes, nomination_delay=0.3, start=False)
    # the peer's check on the worse pair arrives first: its triggered check goes first
    agent.receive(peer.request(controlling=False), VIA, remotes[1], 0.0)
    sent(agent)
    agent.start(0.0)
    ((_, raw, _, addr),) = tick(agent, 0.0)
    assert addr == remotes[1]
    agent.receive(peer.answer(raw), VIA, addr, 0.001)
    # REMOTE (better) has not been tried: no nomination before it is, and had its chance.
    # Its ordinary check is the first one: it goes 5 ms (§14.2) after the triggered one.
    assert _nominations(agent, [0.001]) == []
    assert agent.get_timer() == pytest.approx(0.005)
    ((_, _, _, addr2),) = tick(agent, 0.005)
    assert addr2 == REMOTE
    # REMOTE stays silent: given up 1 RTT (1 ms) + Ta after its check, not before
    assert _nominations(agent, [0.006, 0.02]) == []
    assert agent.get_timer() == pytest.approx(0.005 + 0.001 + 0.02)
    assert _nominations(agent, [0.026]) == [(0.026, remotes[1])]


def test_better_pair_success_is_nominated_without_waiting() -> None:
    remotes = (REMOTE, ("192.0.2.2", 2001))
    agent, peer = make_agent(remotes=remotes, nomination_delay=5.0)
    checks = tick(agent, 0.0) + tick(agent, 0.02)
    high = next(raw for msg, raw, _, addr in checks if addr == REMOTE)
    agent.receive(peer.answer(high), VIA, REMOTE, 0.05)
    out = tick(agent, 0.05)
    assert [addr for m, _, _, addr in out if USE_CANDIDATE.type in m] == [REMOTE]


def test_non_symmetric_response_fails_the_pair() -> None:
    agent, peer = make_agent()
    ((_, raw, _, _),) = tick(agent, 0.0)
    assert agent.receive(peer.answer(raw), VIA, ("192.0.2.99", 2000), 0.03)
    evs = events(agent)
    assert any(isinstance(e, PairChecked) and not e.succeeded for e in evs)
    assert any(isinstance(e, Failed) for e in evs), "the only pair failed"
    assert agent.state is AgentState.FAILED
    assert agent.selected_pair(1) is None


def test_error_response_fails_the_pair() -> None:
    agent, peer = make_agent()
    ((_, raw, _, _),) = tick(agent, 0.0)
    agent.receive(peer.answer(raw, error=400), VIA, REMOTE, 0.03)
    assert list(agent.checklist)[0].state is PairState.FAILED


def test_unauthenticated_response_is_ignored() -> None:
    agent, peer = make_agent()
    ((_, raw, _, _),) = tick(agent, 0.0)
    forged = peer.answer(raw, key=b"not the password")
    assert agent.receive(forged, VIA, REMOTE, 0.03)
    assert events(agent) == []
    assert list(agent.checklist)[0].state is PairState.IN_PROGRESS
    # and it keeps retransmitting
    assert len(tick(agent, 0.5)) == 1


def test_role_conflict_response_switches_role_and_retries() -> None:
    agent, peer = make_agent()
    ((_, raw, _, _),) = tick(agent, 0.0)
    agent.receive(peer.answer(raw, error=487), VIA, REMOTE, 0.03)
    evs = events(agent)
    assert any(isinstance(e, RoleChanged) and not e.controlling for e in evs)
    assert not agent.controlling
    ((msg, _, _, _),) = tick(agent, 0.03)
    assert msg.get(ICE_CONTROLLED) == 100 and ICE_CONTROLLING.type not in msg
    assert agent.stats().role_conflicts == 1


def test_peer_reflexive_local_candidate_from_mapped_address() -> None:
    agent, peer = make_agent()
    ((msg, raw, _, _),) = tick(agent, 0.0)
    agent.receive(peer.answer(raw, mapped=("203.0.113.7", 4000)), VIA, REMOTE, 0.03)
    (checked,) = [e for e in events(agent) if isinstance(e, PairChecked)]
    assert checked.local.type is CandidateType.PEER_REFLEXIVE
    assert checked.local.transport_address == ("203.0.113.7", 4000)
    assert checked.local.priority == msg.get(PRIORITY)
    # never signalled
    assert all(c.type is not CandidateType.PEER_REFLEXIVE for c in agent.local_candidates())
    valid = agent.checklist.best_valid(1)
    assert valid is not None and valid.via == VIA and valid.remote_address == REMOTE


# -- answering checks (§7.3) -----------------------------------------------------------------


def answer_of(agent: Agent) -> StunMessage:
    out = sent(agent)
    responses = [m for m, *_ in out if m.cls != StunClass.REQUEST]
    assert len(responses) == 1, out
    return responses[0]


def test_answer_carries_mapped_address_and_integrity() -> None:
    agent, peer = make_agent(controlling=False)
    src = ("203.0.113.50", 6000)
    assert agent.receive(peer.request(controlling=True), VIA, src, 0.0)
    out = sent(agent)
    (resp, raw, via, addr) = next(x for x in out if x[0].cls == StunClass.SUCCESS)
    assert (via, addr) == (VIA, src)
    assert resp.get(XOR_MAPPED_ADDRESS) == src
    assert resp.check_integrity(agent.local_pwd.encode()) and resp.has_fingerprint
    assert agent.stats().checks_received == 1


def test_peer_reflexive_remote_and_triggered_check_first() -> None:
    remotes = (REMOTE, ("192.0.2.2", 2001))
    agent, peer = make_agent(controlling=False, remotes=remotes)
    tick(agent, 0.0)  # an ordinary check to REMOTE
    src = ("203.0.113.50", 6000)
    agent.receive(peer.request(controlling=True, priority=1234567), VIA, src, 0.005)
    out = sent(agent)
    prflx = [c for c in agent.remote_candidates() if c.type is CandidateType.PEER_REFLEXIVE]
    assert len(prflx) == 1 and prflx[0].transport_address == src
    assert prflx[0].priority == 1234567
    # the answer, and with it the triggered check (5 ms after the ordinary one: §14.2 allows
    # it), ahead of the waiting ordinary pair, which waits for Ta after the ordinary check
    assert [(m.cls, a) for m, _, _, a in out] == [
        (StunClass.SUCCESS, src),
        (StunClass.REQUEST, src),
    ]
    assert agent.get_timer() == pytest.approx(0.02)
    ((_, _, _, addr2),) = tick(agent, 0.02)
    assert addr2 == remotes[1]


def error_code(msg: StunMessage) -> int | None:
    err = msg.get(ERROR_CODE)
    return None if err is None else err.code


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"integrity": False}, 400),
        ({"ufrag": "wrongufrag"}, 401),
        ({"key": b"wrong password"}, 401),
        ({"priority": None}, 400),
        ({"extra": [(0x7FF0, b"abcd")]}, 420),
    ],
)
def test_bad_requests_are_rejected(kwargs: dict, code: int) -> None:
    agent, peer = make_agent(controlling=False)
    assert agent.receive(peer.request(**kwargs), VIA, REMOTE, 0.0)
    resp = answer_of(agent)
    assert resp.cls == StunClass.ERROR and error_code(resp) == code
    if code == 420:
        assert resp.get(UNKNOWN_ATTRIBUTES) == (0x7FF0,)
        assert resp.check_integrity(agent.local_pwd.encode())
    if code in (400, 401) and "priority" not in kwargs:
        assert not resp.has_integrity
    assert agent.remote_candidates() == list(agent.remote_candidates())
    assert agent.stats().errors_sent == 1
    assert not any(c.type is CandidateType.PEER_REFLEXIVE for c in agent.remote_candidates())


@pytest.mark.parametrize(
    ("we_control", "they_control", "their_tie", "expect_487", "we_end_controlling"),
    [
        (True, True, 50, True, True),  # ours larger: they must switch
        (True, True, 500, False, False),  # theirs larger: we switch to controlled
        (False, False, 50, False, True),  # ours larger: we switch to controlling
        (False, False, 500, True, False),  # theirs larger: they must switch
        (True, False, 50, False, True),  # no conflict
    ],
)
def test_incoming_role_conflict(
    we_control: bool, they_control: bool, their_tie: int, expect_487: bool, we_end_controlling: bool
) -> None:
    agent, peer = make_agent(controlling=we_control)
    agent.receive(peer.request(controlling=they_control, tie=their_tie), VIA, REMOTE, 0.0)
    resp = answer_of(agent)
    if expect_487:
        assert error_code(resp) == 487 and resp.check_integrity(agent.local_pwd.encode())
    else:
        assert resp.cls == StunClass.SUCCESS
    assert agent.controlling is we_end_controlling
    changed = [e for e in events(agent) if isinstance(e, RoleChanged)]
    assert bool(changed) == (we_control != we_end_controlling)


def test_aggressive_nomination_on_first_check() -> None:
    agent, peer = make_agent(controlling=False, start=False)
    agent.start(0.0)
    src = REMOTE
    agent.receive(peer.request(controlling=True, use_candidate=True), VIA, src, 0.0)
    out = sent(agent)
    assert any(m.cls == StunClass.SUCCESS for m, *_ in out)
    assert agent.selected_pair(1) is None, "not before our own check succeeded"
    trig = [x for x in out if x[0].cls == StunClass.REQUEST] or tick(agent, 0.0)
    (msg, raw, _, addr) = trig[0]
    assert addr == src and USE_CANDIDATE.type not in msg
    agent.receive(peer.answer(raw), VIA, src, 0.02)
    evs = events(agent)
    assert any(isinstance(e, PairNominated) for e in evs)
    assert any(isinstance(e, Completed) for e in evs)
    assert agent.send_target(1) == (VIA, src)


def test_use_candidate_on_succeeded_pair_selects_at_once() -> None:
    agent, peer = make_agent(controlling=False)
    ((_, raw, _, _),) = tick(agent, 0.0)
    agent.receive(peer.answer(raw), VIA, REMOTE, 0.02)
    events(agent)
    assert agent.selected_pair(1) is None
    agent.receive(peer.request(controlling=True, use_candidate=True), VIA, REMOTE, 0.03)
    assert any(isinstance(e, PairNominated) for e in events(agent))
    assert agent.state is AgentState.COMPLETED
    # no check needed: only the answer went out
    assert [m.cls for m, *_ in sent(agent)] == [StunClass.SUCCESS]


def test_indications_and_other_packets() -> None:
    agent, _ = make_agent()
    ind = StunMessage(StunMethod.BINDING, StunClass.INDICATION).encode(fingerprint=True)
    assert agent.receive(ind, VIA, REMOTE, 0.0)
    assert not agent.receive(b"\x80\x00" + bytes(170), VIA, REMOTE, 0.0)  # RTP
    stray = StunMessage(StunMethod.BINDING, StunClass.SUCCESS).encode()
    assert not agent.receive(stray, VIA, REMOTE, 0.0)  # not ours (e.g. a STUN server's)
    alloc = StunMessage(StunMethod.ALLOCATE, StunClass.SUCCESS).encode()
    assert not agent.receive(alloc, VIA, REMOTE, 0.0)
    assert sent(agent) == []


# -- lifecycle -------------------------------------------------------------------------------


def complete(agent: Agent, peer: Peer, now: float = 0.0) -> float:
    """Drive a controlling agent with one pair to completion; returns the time."""
    for _ in range(10):
        timer = agent.get_timer()
        if timer is None:
            break
        now = max(now, timer)
        for msg, raw, via, addr in tick(agent, now):
            if msg.cls == StunClass.REQUEST:
                agent.receive(peer.answer(raw), via, addr, now + 0.01)
        if agent.state is AgentState.COMPLETED:
            return now
    raise AssertionError("did not complete")


def test_consent_checks_and_loss() -> None:
    agent, peer = make_agent()
    now = complete(agent, peer)
    events(agent)
    consent_times = []
    # the peer answers consent checks for a minute
    while now < 60:
        timer = agent.get_timer()
        assert timer is not None
        now = timer
        for msg, raw, via, addr in tick(agent, now):
            consent_times.append(now)
            assert USE_CANDIDATE.type not in msg and msg.check_integrity(peer.pwd.encode())
            agent.receive(peer.answer(raw), via, addr, now + 0.01)
    gaps = [b - a for a, b in zip(consent_times, consent_times[1:], strict=False)]
    assert gaps and all(4.0 - 1e-9 <= g <= 6.0 + 1e-9 for g in gaps)
    assert events(agent) == []
    # then it goes silent
    silent_from = consent_times[-1]
    while not any(isinstance(e, ConsentLost) for e in events(agent)):
        timer = agent.get_timer()
        assert timer is not None and timer < 200
        now = timer
        tick(agent, now)
    assert now == pytest.approx(silent_from + 0.01 + 30.0), "30 s after the last answer"
    assert agent.send_target(1) is None and not agent.has_consent(1)


def test_restart_answers_old_credentials_until_new_selection() -> None:
    agent, peer = make_agent()
    now = complete(agent, peer)
    old_ufrag = agent.local_ufrag
    agent.restart(now + 1)
    assert agent.local_ufrag != old_ufrag and agent.local_pwd
    assert agent.send_target(1) == (VIA, REMOTE)
    # a peer that has not restarted yet still uses the old credentials: answered
    old_pwd_key = agent.local_pwd  # the new one
    msg = StunMessage(StunMethod.BINDING, StunClass.REQUEST)
    msg.add(USERNAME, f"{old_ufrag}:{peer.ufrag}").add(PRIORITY, 1).add(ICE_CONTROLLED, 1)
    assert old_pwd_key != ""
    agent.receive(peer.request(ufrag=old_ufrag, key=None), VIA, REMOTE, now + 1.1)
    out = sent(agent)
    assert any(m.cls == StunClass.ERROR for m, *_ in out), "signed with the new pwd: rejected"
    assert agent.stats().restarts == 1
    # new parameters, new candidates: the new check list runs and selects again
    peer.ufrag, peer.pwd = "newpeerufrag", "newpeerpasswordnewpeerpw"
    agent.set_remote_parameters(peer.ufrag, peer.pwd)
    agent.add_remote_candidate(Candidate.make(CandidateType.HOST, *REMOTE))
    agent.end_of_candidates()
    events(agent)
    complete(agent, peer, now + 2)
    evs = events(agent)
    assert any(isinstance(e, PairNominated) for e in evs)
    assert any(isinstance(e, Completed) for e in evs)
    assert agent.send_target(1) == (VIA, REMOTE)


def test_close_stops_everything() -> None:
    agent, _ = make_agent()
    tick(agent, 0.0)
    agent.close()
    assert agent.get_timer() is None and sent(agent) == []
    agent.handle_timer(1.0)
    assert sent(agent) == []


def test_reflexive_candidate_without_host_gets_a_base() -> None:
    agent = Agent(True, ta=0.02)
    srflx = Candidate.make(
        CandidateType.SERVER_REFLEXIVE,
        "203.0.113.1",
        40000,
        base_address="10.0.0.1",
        related=LOCAL,
    )
    agent.add_local_candidate(srflx, VIA)
    agent.add_remote_candidate(Candidate.make(CandidateType.HOST, *REMOTE))
    (pair,) = list(agent.checklist)
    assert pair.local.candidate.type is CandidateType.HOST and pair.local.base == LOCAL
    with pytest.raises(ValueError):
        agent.add_local_candidate(
            Candidate.make(CandidateType.SERVER_REFLEXIVE, "203.0.113.1", 1), "other"
        )
    with pytest.raises(ValueError):
        agent.add_local_candidate(Candidate.make(CandidateType.HOST, *LOCAL, component=2), VIA)


def test_signalled_candidate_replaces_peer_reflexive() -> None:
    agent, peer = make_agent(controlling=False, remotes=())
    src = ("203.0.113.50", 6000)
    agent.receive(peer.request(controlling=True), VIA, src, 0.0)
    (pair,) = list(agent.checklist)
    assert pair.remote.type is CandidateType.PEER_REFLEXIVE
    agent.add_remote_candidate(
        Candidate.make(CandidateType.SERVER_REFLEXIVE, *src, base_address="10.9.9.9")
    )
    assert pair.remote.type is CandidateType.SERVER_REFLEXIVE
    assert len(agent.remote_candidates()) == 1


def test_remote_lite_makes_us_controlling() -> None:
    agent = Agent(False, ta=0.02)
    agent.set_remote_parameters("liteufrag", "litepasswordlitepassword", lite=True)
    assert agent.controlling
    assert isinstance(agent.next_event(), RoleChanged)


# -- fuzzing: malformed STUN never raises ----------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    agent, _ = make_agent(controlling=False)
    agent.receive(data, VIA, REMOTE, 0.0)
    # with a valid STUN header in front too
    agent.receive(
        b"\x00\x01" + len(data).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + bytes(12) + data,
        VIA,
        REMOTE,
        0.0,
    )
    agent.handle_timer(0.1)
    agent.datagrams_to_send()


_ATTR_TYPES = [
    USERNAME.type,
    PRIORITY.type,
    ICE_CONTROLLING.type,
    ICE_CONTROLLED.type,
    USE_CANDIDATE.type,
    XOR_MAPPED_ADDRESS.type,
    ERROR_CODE.type,
    UNKNOWN_ATTRIBUTES.type,
    0x7FFF,
    0xC000,
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(_ATTR_TYPES), st.binary(max_size=24)), max_size=6),
    st.sampled_from([StunClass.REQUEST, StunClass.SUCCESS, StunClass.ERROR]),
    st.booleans(),
    st.booleans(),
)
def test_fuzz_authentic_messages_with_arbitrary_attributes(
    attrs: list[tuple[int, bytes]], cls: StunClass, as_response: bool, controlling: bool
) -> None:
    """Correctly signed messages whose attributes are garbage reach deep into the agent."""
    agent, peer = make_agent(controlling=controlling)
    checks = tick(agent, 0.0)
    if as_response and checks and cls != StunClass.REQUEST:
        tid = checks[0][0].transaction_id
        msg = StunMessage(StunMethod.BINDING, cls, tid)
        key = peer.pwd.encode()
    else:
        msg = StunMessage(StunMethod.BINDING, cls)
        key = agent.local_pwd.encode()
        if cls == StunClass.REQUEST:
            msg.add(USERNAME, f"{agent.local_ufrag}:{peer.ufrag}")
    for t, v in attrs:
        msg.add_raw(t, v)
    data = msg.encode(key, fingerprint=True)
    agent.receive(data, VIA, REMOTE, 0.01)
    for now in (0.02, 0.5, 1.0):
        agent.handle_timer(now)
        agent.datagrams_to_send()
        events(agent)


def test_ipv6_addresses_are_normalized() -> None:
    agent = Agent(False, ta=0.02, tie_breaker=1)
    agent.add_local_candidate(Candidate.make(CandidateType.HOST, "2001:DB8::0:1", 1000), "v6")
    peer = Peer(agent)
    agent.set_remote_parameters(peer.ufrag, peer.pwd)
    agent.add_remote_candidate(Candidate.make(CandidateType.HOST, "2001:0db8:0:0::2", 2000))
    agent.start(0.0)
    assert agent.remote_candidates()[0].address == "2001:db8::2"
    assert agent.local_candidates()[0].address == "2001:db8::1"
    # recvfrom on an IPv6 socket reports 4-tuples
    agent.receive(peer.request(controlling=True), "v6", ("2001:db8::2", 2000, 0, 0), 0.0)
    assert not any(c.type is CandidateType.PEER_REFLEXIVE for c in agent.remote_candidates())
    resp = answer_of(agent)
    assert resp.get(XOR_MAPPED_ADDRESS) == ("2001:db8::2", 2000)


def test_check_retransmissions_capped() -> None:
    """The §14.3 RTO doubles up to ``check_max_rto``: a dead pair fails in ~10 s."""
    agent, _ = make_agent(timeout=100.0)
    sends = []
    now = 0.0
    while agent.state is AgentState.RUNNING and now < 50:
        timer = agent.get_timer()
        assert timer is not None
        now = timer
        sends += [now for _ in tick(agent, now)]
    assert sends == pytest.approx([0.0, 0.5, 1.5, 3.1, 4.7, 6.3])
    assert now == pytest.approx(6.3 + 8 * 0.5)


def test_lost_nomination_answers_nominate_the_same_pair_again() -> None:
    remotes = (REMOTE, ("192.0.2.2", 2001))
    agent, peer = make_agent(remotes=remotes, check_rc=2, check_rm=2, timeout=100.0)
    checks = tick(agent, 0.0) + tick(agent, 0.02)
    for _, raw, via, addr in checks:
        agent.receive(peer.answer(raw), via, addr, 0.03)
    # the first nomination goes out at once with the answer (a triggered check)
    ((first, _, _, first_addr),) = sent(agent)
    assert USE_CANDIDATE.type in first
    nominations: list[tuple[float, Address, bytes]] = [(0.03, first_addr, first.transaction_id)]
    now = 0.03
    while agent.state is AgentState.RUNNING and now < 60:
        timer = agent.get_timer()
        assert timer is not None
        now = timer
        for msg, _, _, addr in tick(agent, now):  # the peer never answers again
            if USE_CANDIDATE.type in msg:
                nominations.append((now, addr, msg.transaction_id))
    # three nomination transactions on the best pair, each sent 10 times 0.5 s apart (no
    # backoff: the pair worked, answers are getting lost), then the other pair
    on_best = [(t, tid) for t, addr, tid in nominations if addr == REMOTE]
    assert len(on_best) == 30 and len({tid for _, tid in on_best}) == 3
    first_tx = [t for t, tid in on_best if tid == on_best[0][1]]
    gaps = [b - a for a, b in zip(first_tx, first_tx[1:], strict=False)]
    assert gaps == pytest.approx([0.5] * 9)
    assert [addr for _, addr, _ in nominations[:30]] == [REMOTE] * 30
    assert any(addr == remotes[1] for _, addr, _ in nominations[30:])


def test_consent_request_retransmitted_when_lost() -> None:
    agent, peer = make_agent()
    now = complete(agent, peer)
    timer = agent.get_timer()
    assert timer is not None and now + 4.0 <= timer <= now + 6.0
    ((msg, _, _, _),) = tick(agent, timer)
    # lost: sent again 0.5 s later with the same transaction id; its answer keeps consent
    ((again, raw, via, addr),) = tick(agent, timer + 0.5)
    assert again.transaction_id == msg.transaction_id
    agent.receive(peer.answer(raw), via, addr, timer + 0.52)
    assert tick(agent, timer + 1.5) == []
    stats = agent.stats()
    assert stats.consent_requests_sent == 1


def test_incoming_check_on_in_progress_pair_cancels_and_rechecks() -> None:
    """§7.3.1.4: the transaction in progress stops retransmitting (its answer still counts)
    and a triggered check of the pair goes out."""
    agent, peer = make_agent(controlling=False)
    ((old, old_raw, _, _),) = tick(agent, 0.0)
    agent.receive(peer.request(controlling=True), VIA, REMOTE, 0.01)
    # the answer at once; the re-check waits until Ta after our check (its answer may be on
    # the way), then goes as a triggered check
    assert [m.cls for m, *_ in sent(agent)] == [StunClass.SUCCESS]
    assert agent.get_timer() == pytest.approx(0.02)
    ((new, _, _, addr),) = tick(agent, 0.02)
    assert new.cls == StunClass.REQUEST
    assert addr == REMOTE and new.transaction_id != old.transaction_id
    # the old transaction is not retransmitted any more, the new one is
    later = tick(agent, 0.52)
    assert [m.transaction_id for m, *_ in later] == [new.transaction_id]
    # but the answer to the old one still makes the pair succeed
    agent.receive(peer.answer(old_raw), VIA, REMOTE, 0.6)
    assert any(isinstance(e, PairChecked) and e.succeeded for e in events(agent))


def test_in_progress_pair_answered_before_the_recheck_is_not_checked_again() -> None:
    """§7.3.1.4 re-check held back: the answer to our check arrives first, so the pair
    succeeded and no second check is sent."""
    agent, peer = make_agent(controlling=False)
    ((_, raw, _, _),) = tick(agent, 0.0)
    agent.receive(peer.request(controlling=True), VIA, REMOTE, 0.005)
    assert [m.cls for m, *_ in sent(agent)] == [StunClass.SUCCESS]
    agent.receive(peer.answer(raw), VIA, REMOTE, 0.01)
    assert list(agent.checklist)[0].state is PairState.SUCCEEDED
    assert tick(agent, 0.02) == [] and tick(agent, 0.5) == []
    assert agent.stats().checks_sent == 1


def test_in_progress_pair_recheck_waits_about_one_trip_not_ta() -> None:
    """§7.3.1.4 re-check held back only about as long as the peer's check took to come (its
    answer would take as long), not Ta: when our check was lost, the pair is not Ta late."""
    agent, peer = make_agent(controlling=False, ta=0.05)
    tick(agent, 0.0)  # lost: e.g. the peer's NAT had no pinhole for it yet
    agent.receive(peer.request(controlling=True), VIA, REMOTE, 0.002)
    assert [m.cls for m, *_ in sent(agent)] == [StunClass.SUCCESS]
    # at 4 ms it could go, but two checks must be 5 ms apart (RFC 8445 §14.2)
    assert agent.get_timer() == pytest.approx(0.004)
    assert tick(agent, 0.004) == []
    assert agent.get_timer() == pytest.approx(0.005)
    ((new, raw, _, addr),) = tick(agent, 0.005)
    assert new.cls == StunClass.REQUEST and addr == REMOTE
    agent.receive(peer.answer(raw), VIA, REMOTE, 0.006)
    assert list(agent.checklist)[0].state is PairState.SUCCEEDED


def test_response_on_another_socket_is_not_symmetric() -> None:
    agent, peer = make_agent()
    ((_, raw, _, _),) = tick(agent, 0.0)
    agent.receive(peer.answer(raw), "another-socket", REMOTE, 0.03)
    assert list(agent.checklist)[0].state is PairState.FAILED


def test_pair_limit() -> None:
    agent = Agent(True, ta=0.02, max_pairs=100)
    for i in range(12):
        agent.add_local_candidate(
            Candidate.make(CandidateType.HOST, f"10.0.0.{i + 1}", 1000, local_preference=60000 - i),
            f"s{i}",
        )
    for i in range(12):
        agent.add_remote_candidate(
            Candidate.make(CandidateType.HOST, f"192.0.2.{i + 1}", 2000, local_preference=60000 - i)
        )
    pairs = list(agent.checklist)
    assert len(pairs) == 100
    # the 44 dropped are the lowest-priority ones
    worst_kept = min(p.priority for p in pairs)
    assert all(p.priority >= worst_kept for p in pairs)
    assert any(p.local.via == "s0" and p.remote.address == "192.0.2.1" for p in pairs)
    assert not any(p.local.via == "s11" and p.remote.address == "192.0.2.12" for p in pairs)


def two_component_agent(
    remote_ips: tuple[str, ...], *, controlling: bool = False
) -> tuple[Agent, Peer]:
    """Host candidates on sockets ``c1``/``c2``; remote host candidates at ``remote_ips``
    (ranked in that order), ports 2001/2002; started at 0."""
    agent = Agent(controlling, components=2, ta=0.02, tie_breaker=1)
    peer = Peer(agent)
    for component, port in ((1, 1000), (2, 1001)):
        agent.add_local_candidate(
            Candidate.make(CandidateType.HOST, "10.0.0.1", port, component=component),
            f"c{component}",
        )
        for i, ip in enumerate(remote_ips):
            agent.add_remote_candidate(
                Candidate.make(
                    CandidateType.HOST, ip, 2000 + component, component=component,
                    local_preference=65535 - i,
                )
            )  # fmt: skip
    agent.set_remote_parameters(peer.ufrag, peer.pwd)
    agent.start(0.0)
    return agent, peer


def test_two_components_unfreeze_after_component_one() -> None:
    agent, peer = two_component_agent(("192.0.2.1",), controlling=True)
    ((_, raw, via, addr),) = tick(agent, 0.0)
    assert via == "c1"
    assert tick(agent, 0.02) == [], "component 2 waits for component 1 (same foundation)"
    agent.receive(peer.answer(raw, mapped=("10.0.0.1", 1000)), via, addr, 0.03)
    # §7.2.5.3.3: the success unfroze component 2's pair of the same foundation
    (c2_pair,) = [p for p in agent.checklist if p.component == 2]
    assert c2_pair.state is PairState.WAITING
    vias = {v for _, _, v, _ in tick(agent, 0.04) + tick(agent, 0.06) + tick(agent, 0.08)}
    assert "c2" in vias


def test_failed_restart_keeps_the_old_pair() -> None:
    agent, peer = make_agent(check_rc=2, check_rm=2)
    now = complete(agent, peer)
    events(agent)
    agent.restart(now, controlling=True)
    agent.set_remote_parameters("newufrag", "newpasswordnewpassword00")
    agent.add_remote_candidate(Candidate.make(CandidateType.HOST, "192.0.2.77", 9))
    agent.end_of_candidates()
    while agent.state is AgentState.RUNNING:
        timer = agent.get_timer()
        assert timer is not None
        now = timer
        tick(agent, now)  # nobody answers at the new address
    evs = events(agent)
    failed = [e for e in evs if isinstance(e, Failed)]
    assert failed and failed[0].reason.startswith("restart:")
    assert agent.state is AgentState.COMPLETED
    assert agent.send_target(1) == (VIA, REMOTE)


def test_role_conflict_on_a_consent_check() -> None:
    agent, peer = make_agent()
    complete(agent, peer)
    events(agent)
    timer = agent.get_timer()
    assert timer is not None
    ((_, raw, via, addr),) = tick(agent, timer)
    agent.receive(peer.answer(raw, error=487), via, addr, timer + 0.01)
    assert [type(e) for e in events(agent)] == [RoleChanged]
    assert not agent.controlling
    assert agent.send_target(1) == (VIA, REMOTE)


def test_software_attribute_in_answers() -> None:
    agent, peer = make_agent(controlling=False, software="softphone test")
    agent.receive(peer.request(controlling=True), VIA, REMOTE, 0.0)
    assert answer_of(agent).get(SOFTWARE) == "softphone test"


def test_checks_arriving_before_start_are_answered_and_remembered() -> None:
    agent, peer = make_agent(controlling=False, remotes=(), start=False)
    src = ("203.0.113.50", 6000)
    agent.receive(peer.request(controlling=True, use_candidate=True), VIA, src, 0.0)
    assert answer_of(agent).cls == StunClass.SUCCESS
    assert agent.get_timer() is None  # nothing runs before start()
    agent.start(1.0)
    ((msg, raw, _, addr),) = tick(agent, 1.0)
    assert addr == src
    agent.receive(peer.answer(raw), VIA, src, 1.01)
    assert any(isinstance(e, Completed) for e in events(agent))


def test_consent_needs_answers_from_the_selected_address() -> None:
    """RFC 7675 §5.1: only an authenticated answer from the pair's remote address on the
    pair's socket refreshes consent."""
    agent, peer = make_agent()
    now = complete(agent, peer)
    selected_at = now + 0.01  # complete() answers 10 ms after each send
    events(agent)
    answered_from = ("192.0.2.66", 2000)
    lost_at = None
    while lost_at is None and now < 100:
        timer = agent.get_timer()
        assert timer is not None
        now = timer
        for _, raw, via, _ in tick(agent, now):
            agent.receive(peer.answer(raw), via, answered_from, now + 0.01)
        if any(isinstance(e, ConsentLost) for e in events(agent)):
            lost_at = now
    assert lost_at is not None and lost_at == pytest.approx(selected_at + 30.0)


# -- any sequence of API calls and packets keeps the agent consistent ------------------------

_SOURCES = [REMOTE, ("192.0.2.2", 2001), ("203.0.113.9", 7000)]
_TIMER = st.tuples(st.just("timer"), st.floats(0.0, 0.2) | st.floats(0.0, 40.0))
_ANSWER = st.tuples(
    st.just("answer"), st.integers(0, 2), st.sampled_from([None, None, None, 400, 487, 500])
)
_OPS = st.one_of(
    _TIMER,
    _ANSWER,
    _TIMER,
    _ANSWER,
    _TIMER,
    _ANSWER,
    st.tuples(st.just("local"), st.integers(0, 3), st.integers(1, 2)),
    st.tuples(st.just("remote"), st.integers(0, 2), st.integers(1, 2)),
    st.tuples(st.just("params"), st.booleans()),
    st.tuples(st.just("start")),
    st.tuples(
        st.just("request"), st.integers(0, 2), st.booleans(), st.booleans(), st.integers(0, 200)
    ),
    st.tuples(st.just("restart"), st.booleans()),
    st.tuples(st.just("eoc")),
    st.tuples(st.just("limit")),
    st.tuples(st.just("close")),
    st.tuples(st.just("garbage"), st.binary(max_size=40)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.booleans(), st.lists(_OPS, max_size=40))
def test_any_sequence_of_calls_keeps_the_agent_consistent(
    controlling: bool, set_up: bool, ops: list
) -> None:
    agent = Agent(controlling, components=2, ta=0.02, tie_breaker=100, rng=random.Random(1))
    peer = Peer(agent)
    if set_up:  # a working start, so that the random part also hits later states
        ops = [
            ("local", 0, 1),
            ("local", 1, 2),
            ("remote", 0, 1),
            ("remote", 0, 2),
            ("params", False),
            ("start",),
        ] + ops
    now = 0.0
    requests: list[tuple[bytes, Hashable, Address]] = []
    for op in ops:
        kind = op[0]
        if kind == "local":
            agent.add_local_candidate(
                Candidate.make(CandidateType.HOST, f"10.0.0.{op[1] + 1}", 1000, component=op[2]),
                f"s{op[1]}-{op[2]}",
            )
        elif kind == "remote":
            addr = _SOURCES[op[1]]
            agent.add_remote_candidate(Candidate.make(CandidateType.HOST, *addr, component=op[2]))
        elif kind == "params":
            if op[1]:
                peer.ufrag, peer.pwd = peer.ufrag + "x", peer.pwd + "x"
            agent.set_remote_parameters(peer.ufrag, peer.pwd, now=now)
        elif kind == "start":
            agent.start(now)
        elif kind == "timer":
            now += op[1]
            agent.handle_timer(now)
            # whatever is due now gets done: a timer in the past that does nothing would make
            # the shell spin
            for _ in range(200):
                due = agent.get_timer()
                if due is None or due > now:
                    break
                agent.handle_timer(now)
                if not agent.datagrams_to_send() and not events(agent):
                    assert agent.get_timer() != due, f"timer stuck at {due} (now {now})"
            else:
                raise AssertionError("the timer keeps firing")
        elif kind == "request":
            src = _SOURCES[op[1]]
            data = peer.request(controlling=op[2], use_candidate=op[3], tie=op[4])
            for name in ("s0-1", "s1-2", "s0-2", "unknown"):
                agent.receive(data, name, src, now)
        elif kind == "answer":
            for raw, sock, addr in requests:  # everything outstanding, in order
                host = f"10.0.0.{int(str(sock)[1]) + 1}"
                mapped = (host, 1000) if op[1] == 0 else _SOURCES[op[1]]
                agent.receive(peer.answer(raw, mapped, error=op[2]), sock, addr, now)
            requests.clear()
        elif kind == "restart":
            agent.restart(now, controlling=op[1])
        elif kind == "eoc":
            agent.end_of_candidates()
        elif kind == "limit":
            agent.limit_components(1)
        elif kind == "close":
            agent.close()
        elif kind == "garbage":
            agent.receive(op[1], "s0-1", REMOTE, now)
        for data, via, addr in agent.datagrams_to_send():
            msg = parse_message(data)
            if msg.cls == StunClass.REQUEST:
                requests.append((data, via, addr))
        events(agent)
        timer = agent.get_timer()
        assert timer is None or timer >= 0
        for component in (1, 2):
            target = agent.send_target(component)
            if target is not None:
                assert component <= agent.components
                assert agent.is_from_selected(component, target[1], target[0])
        live = {id(c.pair) for c in agent._checks.values() if not c.cancelled}
        for pair in agent.checklist:
            assert pair.component <= agent.components
            if pair.state is PairState.IN_PROGRESS and agent.state is not AgentState.CLOSED:
                assert id(pair) in live or agent.state is AgentState.FAILED, pair
    agent.stats()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=600), st.text(max_size=300))
def test_remote_credentials_never_break_the_timer(ufrag: str, pwd: str) -> None:
    agent, _ = make_agent(start=False)
    try:
        agent.set_remote_parameters(ufrag, pwd)
    except ValueError:
        return
    agent.start(0.0)
    agent.handle_timer(0.0)
    assert len(agent.datagrams_to_send()) == 1


def test_component_two_is_not_held_back_by_a_silent_component_one_pair() -> None:
    """Each component-2 pair is Frozen behind its component-1 sibling (same foundation,
    §6.1.2.6).  A sibling whose first request is unanswered for an RTO (0.5 s) stops holding
    it back, and the timer says when."""
    agent, _ = two_component_agent(("192.0.2.1",))
    ((_, _, via, _),) = tick(agent, 0.0)
    assert via == "c1"
    assert tick(agent, 0.02) == []
    assert agent.get_timer() == pytest.approx(0.5)  # the retransmission, and the release
    out = tick(agent, 0.5)
    assert sorted(str(v) for _, _, v, _ in out) == ["c1", "c2"]


def test_selected_component_unfreezes_the_others() -> None:
    """Once component 1 is selected, component 2's Frozen pairs go Waiting at once: they
    must not wait for the component-1 pairs still In-Progress."""
    agent, peer = two_component_agent(("192.0.2.1", "192.0.2.2"))
    ((msg, raw, via, addr),) = tick(agent, 0.0)
    assert addr == ("192.0.2.1", 2001)
    ((msg2, raw2, via2, addr2),) = tick(agent, 0.02)
    assert addr2 == ("192.0.2.2", 2001)
    # the peer (controlling) nominates the second pair: its request with USE-CANDIDATE,
    # and our check of that pair is answered
    agent.receive(peer.request(controlling=True, use_candidate=True), via2, addr2, 0.03)
    sent(agent)
    agent.receive(peer.answer(raw2, mapped=("10.0.0.1", 1000)), via2, addr2, 0.04)
    assert any(isinstance(e, PairNominated) and e.component == 1 for e in events(agent))
    # the first component-1 pair is still In-Progress (higher priority than the selected)
    assert any(p.component == 1 and p.state is PairState.IN_PROGRESS for p in agent.checklist)
    # yet component 2's pairs are checked at once, Ta apart (the first with the answer)
    ((_, _, v1, a1),) = sent(agent)
    ((_, _, v2, a2),) = tick(agent, 0.06)
    assert (v1, v2) == ("c2", "c2") and {a1, a2} == {("192.0.2.1", 2002), ("192.0.2.2", 2002)}
    assert not any(p.state is PairState.FROZEN for p in agent.checklist)


# -- data before selection (RFC 8445 §12.1) ---------------------------------------------------


def test_data_may_use_any_valid_pair_before_selection_and_only_the_selected_after() -> None:
    """§12.1: before nomination an agent may send on any valid pair; the peer's data is
    taken from any valid pair's remote.  After selection: the selected pair only."""
    agent, peer = make_agent(remotes=(REMOTE, ("192.0.2.2", 2001)), nomination_delay=0.3)
    low_addr = ("192.0.2.2", 2001)
    assert agent.send_target(1) is None  # nothing valid yet
    assert not agent.is_from_selected(1, REMOTE) and agent.component_of(VIA, REMOTE) is None
    high = _worse_pair_valid_first(agent, peer)
    # the worse pair is valid, the better one still in progress (nomination waits for it)
    assert agent.selected_pair(1) is None
    assert agent.send_target(1) == (VIA, low_addr)
    early = agent.data_pair(1)
    assert early is not None and early.valid and early.remote_address == low_addr
    assert agent.is_from_selected(1, low_addr, VIA) and agent.component_of(VIA, low_addr) == 1
    assert not agent.is_from_selected(1, low_addr, "other-socket")
    assert not agent.is_from_selected(1, REMOTE) and agent.component_of(VIA, REMOTE) is None
    agent.receive(peer.answer(high), VIA, REMOTE, 0.028)
    nomination = [raw for m, raw, _, a in tick(agent, 0.028) if USE_CANDIDATE.type in m]
    assert len(nomination) == 1
    # being nominated: data goes there; both valid pairs are accepted still
    assert agent.send_target(1) == (VIA, REMOTE)
    assert agent.is_from_selected(1, REMOTE) and agent.is_from_selected(1, low_addr)
    agent.receive(peer.answer(nomination[0]), VIA, REMOTE, 0.04)
    assert agent.selected_pair(1) is not None and agent.data_pair(1) is agent.selected_pair(1)
    assert agent.send_target(1) == (VIA, REMOTE)
    assert agent.is_from_selected(1, REMOTE, VIA) and agent.component_of(VIA, REMOTE) == 1
    assert not agent.is_from_selected(1, low_addr) and agent.component_of(VIA, low_addr) is None


def test_no_data_on_a_valid_pair_once_ice_failed() -> None:
    """Controlled, our check succeeded but the peer never nominates: the valid pair carries
    data until the overall timeout fails ICE, then nothing does."""
    agent, peer = make_agent(controlling=False, timeout=1.0)
    ((_, raw, _, _),) = tick(agent, 0.0)
    agent.receive(peer.answer(raw), VIA, REMOTE, 0.01)
    assert agent.send_target(1) == (VIA, REMOTE) and agent.is_from_selected(1, REMOTE)
    agent.handle_timer(1.0)
    assert agent.state is AgentState.FAILED
    assert agent.send_target(1) is None and not agent.is_from_selected(1, REMOTE)
    assert agent.component_of(VIA, REMOTE) is None and agent.data_pair(1) is None


# -- Ta negotiation (RFC 8445 §14.2, RFC 8839 a=ice-pacing) -----------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs", "ta"),
    [
        ({}, PACING_NOT_NEGOTIATED, 0.05),  # the default, not negotiated
        ({"ta": 0.02}, PACING_NOT_NEGOTIATED, 0.02),  # as before: Ta is ours
        ({"ta": 0.02}, None, 0.05),  # the peer signalled none: 50 ms
        ({"pacing_ms": 20}, 30, 0.03),  # the larger proposal wins
        ({"pacing_ms": 40}, 10, 0.04),
        ({"pacing_ms": 2}, 3, 0.005),  # never below 5 ms
        ({"ta": 0.1, "pacing_ms": 20}, 25, 0.025),  # pacing_ms wins over ta
    ],
)
def test_ta_is_the_larger_proposal(ours: dict, theirs: object, ta: float) -> None:
    agent = Agent(True, tie_breaker=1, **ours)
    if "pacing_ms" in ours:
        assert agent.pacing_ms == ours["pacing_ms"]
    agent.set_remote_parameters("peerufrag", "peerpasswordpeerpassword", pacing_ms=theirs)  # type: ignore[arg-type]
    assert agent.ta == pytest.approx(ta)


def test_negotiated_ta_paces_the_checks() -> None:
    """We propose 20 ms, the peer 35 ms: ordinary checks go 35 ms apart."""
    agent = Agent(True, pacing_ms=20, tie_breaker=1)
    assert agent.pacing_ms == 20
    agent.add_local_candidate(Candidate.make(CandidateType.HOST, *LOCAL), VIA)
    for i in range(3):
        agent.add_remote_candidate(
            Candidate.make(CandidateType.HOST, f"192.0.2.{i + 1}", 2000, local_preference=60000 - i)
        )
    agent.set_remote_parameters(Peer.ufrag, Peer.pwd, pacing_ms=35)
    agent.start(0.0)
    times: list[float] = []
    now = 0.0
    while len(times) < 3:
        if [m for m, *_ in tick(agent, now) if m.cls == StunClass.REQUEST]:
            times.append(now)
        timer = agent.get_timer()
        assert timer is not None
        now = timer
    assert times == pytest.approx([0.0, 0.035, 0.07])


def test_pacing_ms_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Agent(True, pacing_ms=0)
    assert Agent(True, ta=0.0204).pacing_ms == 20


def test_ice_connection_negotiates_ta() -> None:
    """IceConnection passes ``pacing_ms`` from ``agent_options`` and ``set_remote``."""
    conn = IceConnection(True, bind="127.0.0.1", agent_options={"pacing_ms": 20})
    assert conn.pacing_ms == 20 and conn.ta == pytest.approx(0.02)
    conn.set_remote("peerufrag", "peerpasswordpeerpassword", [], pacing_ms=None)
    assert conn.ta == pytest.approx(0.05)
    other = IceConnection(True, bind="127.0.0.1", agent_options={"pacing_ms": 20})
    other.set_remote("peerufrag", "peerpasswordpeerpassword", [])
    assert other.ta == pytest.approx(0.02)
