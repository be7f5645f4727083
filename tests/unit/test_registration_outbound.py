"""RFC 5626 (SIP outbound) in the registration core, on a virtual clock: instance-id and reg-id
in the Contact, Supported: outbound, 439, Require: outbound, flow failure and the §4.5 backoff."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.message import Headers, Request, Response, make_response, new_tag
from sip.registration import (
    FlowBackoff,
    Registered,
    RegistrationFailed,
    RegistrationState,
    instance_id_for,
)
from sip.ua import DEFAULT_FLOW_BACKOFF
from tests.helpers_sip import REGISTRAR, FakeRegistrar, alice_and_registrar, bob_registration
from tests.unit.test_ua import FakePeer, SimNet, make_ua

INSTANCE = "urn:uuid:00000000-0000-4000-8000-000000000001"
UUID_URN = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def ok(req: Request, *, require: str | None = None, contact: str | None = None) -> Response:
    resp = make_response(req, 200, to_tag=new_tag())
    for value in req.headers.get_all("Contact") if contact is None else [contact]:
        resp.headers.add("Contact", value)
    if require is not None:
        resp.headers.add("Require", require)
    return resp


# ------------------------------------------------------------------------ instance-id URNs


def test_instance_id_is_a_uuid_urn_stable_for_a_seed():
    assert UUID_URN.match(instance_id_for())
    assert instance_id_for() != instance_id_for()
    assert instance_id_for("host-1 alice") == instance_id_for("host-1 alice")
    assert instance_id_for("host-1 alice") != instance_id_for("host-2 alice")
    assert UUID_URN.match(instance_id_for("host-1 alice"))


# ------------------------------------------------------------------------ REGISTER contents


def test_contact_carries_instance_and_reg_id_and_supported_outbound():
    reg = bob_registration(instance_id=INSTANCE, reg_id=1)
    req = reg.start(0.0)
    contact = req.contacts[0]
    assert contact.params["+sip.instance"] == f'"<{INSTANCE}>"'
    assert contact.params["reg-id"] == "1"
    assert contact.params["expires"] == "3600"
    assert req.headers.get_all("Supported") == ["outbound", "path"]
    # the header survives a round trip through the parser as the RFC 5626 §4.1 syntax
    wire = req.to_bytes().decode()
    assert f';+sip.instance="<{INSTANCE}>";reg-id=1' in wire


def test_instance_without_reg_id_is_not_outbound():
    req = bob_registration(instance_id=INSTANCE).start(0.0)
    assert req.contacts[0].params["+sip.instance"] == f'"<{INSTANCE}>"'
    assert "reg-id" not in req.contacts[0].params
    assert "Supported" not in req.headers


def test_reg_id_needs_an_instance():
    req = bob_registration(reg_id=1).start(0.0)
    assert "reg-id" not in req.contacts[0].params
    assert "+sip.instance" not in req.contacts[0].params
    assert "Supported" not in req.headers


def test_require_outbound_in_2xx_reports_outbound_in_use():
    reg = bob_registration(instance_id=INSTANCE, reg_id=1)
    assert reg.handle_response(ok(reg.start(0.0), require="outbound"), 0.1) is None
    ev = reg.next_event()
    assert isinstance(ev, Registered) and ev.outbound is True
    reg2 = bob_registration(instance_id=INSTANCE, reg_id=1)
    reg2.handle_response(ok(reg2.start(0.0)), 0.1)
    ev2 = reg2.next_event()
    assert isinstance(ev2, Registered) and ev2.outbound is False


def test_439_registers_again_without_reg_id():
    reg = bob_registration(instance_id=INSTANCE, reg_id=1)
    first = reg.start(0.0)
    retry = reg.handle_response(make_response(first, 439, to_tag=new_tag()), 0.1)
    assert retry is not None
    assert retry.call_id == first.call_id and retry.cseq.seq == first.cseq.seq + 1
    assert "reg-id" not in retry.contacts[0].params
    assert retry.contacts[0].params["+sip.instance"] == f'"<{INSTANCE}>"'
    assert reg.next_event() is None  # no failure reported: it is being retried
    # a second 439 is a failure (no loop)
    assert reg.handle_response(make_response(retry, 439, to_tag=new_tag()), 0.2) is None
    ev = reg.next_event()
    assert isinstance(ev, RegistrationFailed) and ev.status == 439


def test_binding_found_by_instance_when_the_registrar_rewrote_the_address():
    """A registrar (or edge proxy) may return our binding under another address (e.g. the
    received one); the +sip.instance still identifies it, so its expires is the granted one."""
    reg = bob_registration(instance_id=INSTANCE, reg_id=1, rewrite_contact=False)
    req = reg.start(0.0)
    other = f'<sip:bob@198.51.100.1:40000;transport=tcp>;+sip.instance="<{INSTANCE}>";expires=77'
    reg.handle_response(ok(req, contact=other), 1.0)
    ev = reg.next_event()
    assert isinstance(ev, Registered) and ev.expires == 77


# ------------------------------------------------------------------------ flow recovery


def test_flow_failure_registers_again_at_once_with_the_same_binding():
    reg = bob_registration(instance_id=INSTANCE, reg_id=1, flow_backoff=FlowBackoff())
    first = reg.start(0.0)
    reg.handle_response(ok(first), 0.1)
    assert reg.registered
    again = reg.flow_failed(50.0)
    assert again is not None
    assert reg.state is RegistrationState.REGISTERING and reg.recovering
    assert again.call_id == first.call_id
    assert again.cseq.seq == first.cseq.seq + 1
    assert again.from_addr.tag == first.from_addr.tag
    assert again.contacts[0].params["reg-id"] == "1"
    assert again.contacts[0].params["+sip.instance"] == f'"<{INSTANCE}>"'
    # the old refresh timer is gone: nothing else is sent before the answer
    assert reg.refresh_at is None and reg.retry_at is None


def test_flow_failure_supersedes_a_register_in_progress():
    reg = bob_registration(flow_backoff=FlowBackoff())
    first = reg.start(0.0)
    again = reg.flow_failed(0.5)
    assert again is not None and again.cseq.seq == first.cseq.seq + 1


def test_flow_failure_after_unregister_sends_nothing():
    reg = bob_registration(flow_backoff=FlowBackoff())
    reg.handle_response(ok(reg.start(0.0)), 0.1)
    unreg = reg.unregister(1.0)
    assert unreg is not None
    assert reg.flow_failed(2.0) is None


@pytest.mark.parametrize("all_failed", [True, False])
def test_backoff_upper_bound_follows_rfc5626_formula(all_failed):
    """§4.5: wait-time = min(max-time, base-time * 2^consecutive-failures), base-time 30 s
    when all flows failed, 90 s when some still work, max-time 1800 s."""
    backoff = FlowBackoff()
    base = 30.0 if all_failed else 90.0
    bounds = [backoff.upper_bound(n, all_failed=all_failed) for n in range(1, 9)]
    expected = [min(1800.0, base * 2**n) for n in range(1, 9)]
    assert bounds == expected
    assert bounds[-1] == 1800.0


def test_backoff_wait_is_between_half_and_all_of_the_bound():
    backoff = FlowBackoff()
    rng = random.Random(3)
    for n in range(1, 8):
        bound = backoff.upper_bound(n)
        waits = [backoff.wait_time(n, rng) for _ in range(200)]
        assert all(bound / 2 <= w <= bound for w in waits)
        assert min(waits) < bound * 0.6 and max(waits) > bound * 0.9  # spread, not fixed


def test_failed_attempts_back_off_exponentially_then_success_resets():
    backoff = FlowBackoff(base_time_all_failed=30.0, max_time=1800.0)
    reg = bob_registration(instance_id=INSTANCE, reg_id=1, flow_backoff=backoff)
    reg.handle_response(ok(reg.start(0.0)), 0.1)
    reg.next_event()
    now = 100.0
    req = reg.flow_failed(now)
    assert req is not None
    waits = []
    for n in range(1, 6):
        reg.handle_timeout(now + 0.5)  # the new flow could not be formed
        ev = reg.next_event()
        assert isinstance(ev, RegistrationFailed) and ev.status == 408
        assert reg.consecutive_failures == n
        assert reg.retry_at is not None
        wait = reg.retry_at - (now + 0.5)
        waits.append(wait)
        assert backoff.upper_bound(n) / 2 <= wait <= backoff.upper_bound(n)
        # a second flow failure report while waiting does not cut the wait short
        assert reg.flow_failed(now + 1.0) is None
        now = reg.retry_at
        assert reg.get_timer() == now
        req = reg.handle_timer(now)
        assert req is not None and req.contacts[0].params["reg-id"] == "1"
    assert waits[-1] > waits[0] * 4
    reg.handle_response(ok(req), now + 0.1)
    assert reg.registered and reg.consecutive_failures == 0
    # the next failure starts from the shortest wait again
    reg.flow_failed(now + 10)
    reg.handle_timeout(now + 11)
    assert reg.retry_at is not None and reg.retry_at - (now + 11) <= backoff.upper_bound(1)


def test_non_flow_failures_keep_the_fixed_retry_time():
    """A 403 is not a flow problem (§4.5 counts flows that could not be formed): the plain
    retry time applies and the failure count stays."""
    reg = bob_registration(flow_backoff=FlowBackoff(), retry_after_failure=60.0)
    req = reg.start(0.0)
    reg.handle_response(make_response(req, 403, to_tag=new_tag()), 1.0)
    assert reg.retry_at == 61.0 and reg.consecutive_failures == 0


def test_without_backoff_a_timeout_uses_the_fixed_retry_time():
    reg = bob_registration(retry_after_failure=60.0)
    reg.start(0.0)
    reg.handle_timeout(32.0)
    assert reg.retry_at == 92.0


# ------------------------------------------------------------------------ through the UA core


def outbound_setup(**kw: Any) -> tuple[SimNet, Any, FakeRegistrar]:
    kw.setdefault("instance_id", INSTANCE)
    return alice_and_registrar(supported=("timer",), **kw)


def test_ua_register_sends_instance_reg_id_and_merged_supported():
    net, ua, registrar = outbound_setup()
    ua.register(net.now, expires=600)
    assert net.run(lambda: bool(net.of(ua, Registered)))
    req = registrar.requests[-1]
    assert req.contacts[0].params["+sip.instance"] == f'"<{INSTANCE}>"'
    assert req.contacts[0].params["reg-id"] == "1"
    assert req.headers.get_all("Supported") == ["outbound", "path", "timer"]


def test_ua_without_outbound_sends_the_instance_only():
    net, ua, registrar = outbound_setup(outbound=False, instance_id=None)
    ua.register(net.now, expires=600)
    assert net.run(lambda: bool(net.of(ua, Registered)))
    params = registrar.requests[-1].contacts[0].params
    assert params["+sip.instance"] == f'"<{ua.instance_id}>"'
    assert UUID_URN.match(ua.instance_id)
    assert "reg-id" not in params


def test_ua_flow_failure_while_registrar_down_backs_off_then_recovers():
    """The flow fails, the registrar is down (silent): the UA sends a REGISTER at once, then
    again after waits growing per §4.5 (default backoff: base 1 s), and is registered again as
    soon as the registrar answers."""
    net, ua, registrar = outbound_setup()
    ua.register(net.now, expires=3600)
    assert net.run(lambda: bool(net.of(ua, Registered)))
    registrar.silent = True
    first_seen: dict[int, float] = {}  # CSeq -> when its first transmission arrived
    node = net.nodes[REGISTRAR]
    assert isinstance(node, FakePeer)
    handle = node.handler

    def recording(msg: Any, src: Any, n: SimNet) -> Any:
        first_seen.setdefault(msg.cseq.seq, n.now)
        return handle(msg, src, n)

    node.handler = recording
    net.now += 5.0
    failed_at = net.now
    ua.flow_failed(net.now)
    assert ua.recovering
    net.run(lambda: len(net.of(ua, RegistrationFailed)) >= 3, max_time=600)
    times = [first_seen[seq] for seq in sorted(first_seen)]
    assert times[0] == pytest.approx(failed_at + net.delay)  # at once
    timer_f = 64 * ua.timers.t1
    gaps = [b - a - timer_f for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) >= 2
    # each gap: Timer F of the failed REGISTER, then the backoff wait for failure n
    for n, gap in enumerate(gaps[:2], start=1):
        bound = DEFAULT_FLOW_BACKOFF.upper_bound(n)
        assert bound / 2 - 0.1 <= gap <= bound + 0.1, (n, gaps)
    registrar.silent = False
    before = len(net.of(ua, Registered))
    assert net.run(lambda: len(net.of(ua, Registered)) > before, max_time=600)
    assert not ua.recovering
    assert ua.registrations[0].consecutive_failures == 0
    assert len({r.call_id for r in registrar.requests}) == 1


def test_ua_instance_id_from_config_is_kept():
    ua = make_ua("10.0.0.1", "alice", instance_id=INSTANCE)
    assert ua.instance_id == INSTANCE
    assert make_ua("10.0.0.1", "bob").instance_id != make_ua("10.0.0.1", "bob").instance_id


def test_headers_supported_merge_does_not_duplicate():
    net, ua, _registrar = outbound_setup()
    req = Request("OPTIONS", "sip:bob@example.org", Headers())
    req.headers.add("Supported", "timer")
    ua._prepare(req)
    assert req.headers.get_all("Supported") == ["timer"]


@pytest.mark.parametrize(("value", "expected"), [("120", 120), (None, None), ("x", None)])
def test_flow_timer_of_the_2xx_is_reported(value, expected):
    """§4.4: the registrar's Flow-Timer tells how often the UA must send keepalives."""
    reg = bob_registration(instance_id=INSTANCE, reg_id=1)
    resp = ok(reg.start(0.0), require="outbound")
    if value is not None:
        resp.headers.add("Flow-Timer", value)
    reg.handle_response(resp, 0.1)
    ev = reg.next_event()
    assert isinstance(ev, Registered) and ev.flow_timer == expected


@pytest.mark.parametrize("require", [True, False])
def test_dialog_contact_has_ob_only_when_registered_through_outbound(require):
    """§4.3: ``;ob`` in the Contact of dialog-forming requests once outbound is in use."""
    net, ua, registrar = outbound_setup()
    answer = registrar._answer

    def with_require(req: Request) -> Response:
        resp = answer(req)
        if require and resp.status == 200:
            resp.headers.add("Require", "outbound")
        return resp

    registrar._answer = with_require  # type: ignore[method-assign]
    assert ua.contact().endswith(":5060>")
    ua.register(net.now, expires=600)
    assert net.run(lambda: bool(net.of(ua, Registered)))
    assert net.of(ua, Registered)[0].outbound is require
    call = ua.invite("sip:bob@example.org", b"", net.now)
    assert call.invite is not None
    contact = call.invite.contacts[0].uri
    assert ("ob" in contact.params) is require
    # the REGISTER's own Contact never carries ;ob
    assert all("ob" not in r.contacts[0].uri.params for r in registrar.requests)


EVENTS = st.lists(
    st.sampled_from(["flow_failed", "ok", "timeout", "503", "403", "timer", "unregister"]),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(EVENTS, st.integers(0, 2**16))
def test_any_sequence_keeps_one_binding_and_bounded_waits(events, seed):
    """Whatever happens -- flow failures, answers, timeouts, timers -- the binding keeps its
    Call-ID, instance and reg-id, CSeq only grows, the wait after a flow failure never exceeds
    the §4.5 bound for the failures so far, and nothing is registered after unregistering."""
    backoff = FlowBackoff(base_time_all_failed=1.0, max_time=120.0)
    reg = bob_registration(
        seed, instance_id=INSTANCE, reg_id=1, flow_backoff=backoff, retry_after_failure=60.0
    )
    now = 0.0
    last = reg.start(now)
    sent = [last]
    unregistered = False
    for ev in events:
        now += 1.0
        nxt: Request | None = None
        if ev == "flow_failed":
            nxt = reg.flow_failed(now)
        elif ev == "ok" and last is not None:
            nxt = reg.handle_response(ok(last), now)
        elif ev in ("503", "403") and last is not None:
            nxt = reg.handle_response(make_response(last, int(ev), to_tag=new_tag()), now)
        elif ev == "timeout":
            reg.handle_timeout(now)
        elif ev == "timer":
            t = reg.get_timer()
            if t is not None:
                now = max(now, t)
                nxt = reg.handle_timer(now)
        elif ev == "unregister":
            nxt = reg.unregister(now)
            unregistered = True
        if ev in ("timeout", "503") and reg.retry_at is not None:
            # a flow failure: the §4.5 wait, never the fixed 60 s
            assert reg.consecutive_failures >= 1
            assert reg.retry_at - now <= backoff.upper_bound(reg.consecutive_failures)
        while reg.next_event() is not None:
            pass
        if nxt is not None:
            if unregistered and nxt.headers.get("Expires") != "0":
                raise AssertionError("a binding was registered after unregistering")
            sent.append(nxt)
            last = nxt
    assert len({r.call_id for r in sent}) == 1
    seqs = [r.cseq.seq for r in sent]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for r in sent:
        params = r.contacts[-1].params
        assert params["+sip.instance"] == f'"<{INSTANCE}>"'
        assert params["reg-id"] == "1"
