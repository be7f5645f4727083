"""STUN client transactions on a virtual clock (RFC 8489 §6.2.1, §6.2.2, §6.3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ice import stun
from ice.stun import StunClass, StunMessage, StunMethod, parse_message
from ice.stun_transaction import (
    RtoEstimator,
    StunClientTransaction,
    StunTransactionFailed,
    StunTransactionSucceeded,
    StunTransactionTimedOut,
)

KEY = b"shared-secret"


def _request(method: int = StunMethod.BINDING) -> StunMessage:
    return StunMessage(method, StunClass.REQUEST).add(stun.PRIORITY, 1)


def _run_until_done(tx: StunClientTransaction, *, limit: int = 100) -> list[float]:
    """Fire every timer exactly when due; return the times at which datagrams went out."""
    sends: list[float] = []
    now = 0.0
    if tx.datagrams_to_send():
        sends.append(now)
    for _ in range(limit):
        timer = tx.get_timer()
        if timer is None:
            break
        now = timer
        tx.handle_timer(now)
        if tx.datagrams_to_send():
            sends.append(now)
    return sends


def test_default_schedule_over_udp() -> None:
    tx = StunClientTransaction(_request(), 0.0)
    sends = _run_until_done(tx)
    assert sends == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tx.done
    assert isinstance(tx.result, StunTransactionTimedOut)
    assert tx.result.attempts == 7


def test_timeout_fires_at_39_5_seconds_and_not_before() -> None:
    tx = StunClientTransaction(_request(), 0.0)
    _ = tx.datagrams_to_send()
    for t in (0.5, 1.5, 3.5, 7.5, 15.5, 31.5):
        tx.handle_timer(t)
        assert len(tx.datagrams_to_send()) == 1
    assert tx.get_timer() == pytest.approx(39.5)
    tx.handle_timer(39.49)
    assert not tx.done and tx.result is None and tx.next_event() is None
    tx.handle_timer(39.5)
    assert tx.done and tx.get_timer() is None
    event = tx.next_event()
    assert isinstance(event, StunTransactionTimedOut)
    assert tx.next_event() is None  # reported once


def test_early_timer_calls_do_nothing() -> None:
    tx = StunClientTransaction(_request(), 10.0)
    assert len(tx.datagrams_to_send()) == 1
    tx.handle_timer(10.2)
    assert tx.datagrams_to_send() == [] and tx.get_timer() == pytest.approx(10.5)


def test_custom_rto_rc_rm() -> None:
    # ICE-style: RTO computed from Ta (RFC 8445 §14.3), here 100 ms, Rc 3, Rm 4
    tx2 = StunClientTransaction(_request(), 100.0, rto=0.1, rc=3, rm=4)
    times = [100.0]
    _ = tx2.datagrams_to_send()
    while (timer := tx2.get_timer()) is not None:
        tx2.handle_timer(timer)
        if tx2.datagrams_to_send():
            times.append(timer)
        last = timer
    assert times == pytest.approx([100.0, 100.1, 100.3])
    assert last == pytest.approx(100.3 + 0.4)
    assert isinstance(tx2.result, StunTransactionTimedOut) and tx2.result.attempts == 3


def test_max_rto_caps_the_interval() -> None:
    tx = StunClientTransaction(_request(), 0.0, max_rto=2.0)
    sends = _run_until_done(tx)
    assert sends == [0.0, 0.5, 1.5, 3.5, 5.5, 7.5, 9.5]


def test_rc_one_sends_once_then_waits_rm_rto() -> None:
    tx = StunClientTransaction(_request(), 0.0, rc=1)
    assert _run_until_done(tx) == [0.0]
    assert tx.get_timer() is None


def test_late_timer_does_not_burst() -> None:
    tx = StunClientTransaction(_request(), 0.0)
    _ = tx.datagrams_to_send()
    tx.handle_timer(5.0)  # event loop stalled: due at 0.5, handled at 5.0
    assert len(tx.datagrams_to_send()) == 1
    assert tx.get_timer() == pytest.approx(6.0)  # next interval counted from now


def test_reliable_transport_sends_once_and_times_out_after_ti() -> None:
    tx = StunClientTransaction(_request(), 2.0, reliable=True)
    assert len(tx.datagrams_to_send()) == 1
    assert tx.get_timer() == pytest.approx(41.5)
    tx.handle_timer(41.0)
    assert tx.datagrams_to_send() == [] and not tx.done
    tx.handle_timer(41.5)
    assert isinstance(tx.result, StunTransactionTimedOut) and tx.result.attempts == 1
    custom = StunClientTransaction(_request(), 0.0, reliable=True, ti=5.0)
    assert custom.get_timer() == pytest.approx(5.0)


def test_success_response_completes_with_rtt() -> None:
    req = _request()
    tx = StunClientTransaction(req.encode(fingerprint=True), 1.0)
    assert tx.datagrams_to_send() == [req.encode(fingerprint=True)]
    response = req.response().add(stun.XOR_MAPPED_ADDRESS, ("203.0.113.5", 4000))
    assert tx.receive(parse_message(response.encode()), 1.25)
    assert tx.done and tx.get_timer() is None
    result = tx.next_event()
    assert isinstance(result, StunTransactionSucceeded)
    assert result.rtt == pytest.approx(0.25)
    assert result.response.get(stun.XOR_MAPPED_ADDRESS) == ("203.0.113.5", 4000)
    # late duplicates are absorbed and change nothing
    assert tx.receive(parse_message(response.encode()), 2.0)
    assert tx.result is result and tx.next_event() is None
    tx.handle_timer(100.0)
    assert tx.datagrams_to_send() == []


def test_rtt_unknown_after_retransmission_karn() -> None:
    req = _request()
    tx = StunClientTransaction(req, 0.0)
    tx.handle_timer(0.5)
    assert tx.attempts == 2
    tx.receive(req.response(), 0.6)
    assert isinstance(tx.result, StunTransactionSucceeded) and tx.result.rtt is None


def test_response_after_retransmissions_stops_the_schedule() -> None:
    req = _request()
    tx = StunClientTransaction(req, 0.0)
    tx.handle_timer(0.5)
    tx.handle_timer(1.5)
    assert len(tx.datagrams_to_send()) == 3
    tx.receive(req.response(), 2.0)
    assert tx.get_timer() is None
    tx.handle_timer(3.5)
    assert tx.datagrams_to_send() == []


def test_non_matching_messages_are_not_consumed() -> None:
    req = _request()
    tx = StunClientTransaction(req, 0.0)
    other = StunMessage(StunMethod.BINDING, StunClass.SUCCESS)  # other transaction id
    assert not tx.receive(other, 0.1)
    # same id but a request/indication, or another method
    assert not tx.receive(StunMessage(req.method, StunClass.REQUEST, req.transaction_id), 0.1)
    assert not tx.receive(StunMessage(req.method, StunClass.INDICATION, req.transaction_id), 0.1)
    assert not tx.receive(
        StunMessage(StunMethod.ALLOCATE, StunClass.SUCCESS, req.transaction_id), 0.1
    )
    assert not tx.done and tx.matches(req.response())


def test_error_response() -> None:
    req = _request(StunMethod.ALLOCATE)
    tx = StunClientTransaction(req, 0.0)
    err = req.error_response(401).add(stun.REALM, "example.org").add(stun.NONCE, "n")
    assert tx.receive(parse_message(err.encode()), 0.1)
    result = tx.result
    assert isinstance(result, StunTransactionFailed)
    assert result.error == stun.ErrorCode(401, "Unauthenticated")
    assert result.response.get(stun.NONCE) == "n"
    assert "401" in result.reason


def test_error_response_without_error_code_is_failure() -> None:
    req = _request()
    tx = StunClientTransaction(req, 0.0)
    tx.receive(req.response(StunClass.ERROR), 0.1)
    assert isinstance(tx.result, StunTransactionFailed) and tx.result.error is None
    tx2 = StunClientTransaction(req, 0.0)
    malformed = req.response(StunClass.ERROR).add_raw(stun.ERROR_CODE.type, b"\x00")
    tx2.receive(malformed, 0.1)
    assert isinstance(tx2.result, StunTransactionFailed) and tx2.result.error is None


def test_unknown_comprehension_required_attributes_fail_the_transaction() -> None:
    req = _request()
    tx = StunClientTransaction(req, 0.0)
    tx.receive(req.response().add_raw(0x7ABC, b""), 0.1)
    assert isinstance(tx.result, StunTransactionFailed)
    assert tx.result.error is None and "0x7abc" in tx.result.reason
    tx2 = StunClientTransaction(req, 0.0)
    tx2.receive(req.response().add_raw(0xFABC, b""), 0.1)  # optional: fine
    assert isinstance(tx2.result, StunTransactionSucceeded)
    tx3 = StunClientTransaction(req, 0.0)
    tx3.receive(req.error_response(400).add_raw(0x7ABC, b""), 0.1)
    assert isinstance(tx3.result, StunTransactionFailed) and tx3.result.error is not None


def test_integrity_key_discards_unauthenticated_responses() -> None:
    req = _request()
    tx = StunClientTransaction(req.encode(KEY, fingerprint=True), 0.0, integrity_key=KEY)
    forged = parse_message(req.response().encode(b"wrong key", fingerprint=True))
    assert tx.receive(forged, 0.1)  # belongs to us, but dropped as if never received
    unsigned = parse_message(req.response().encode(fingerprint=True))
    assert tx.receive(unsigned, 0.1)
    assert not tx.done and tx.get_timer() == pytest.approx(0.5)
    genuine = parse_message(req.response().encode(KEY, fingerprint=True))
    assert tx.receive(genuine, 0.2)
    assert isinstance(tx.result, StunTransactionSucceeded)


def test_integrity_key_and_unauthenticated_challenges() -> None:
    req = _request(StunMethod.REFRESH)
    # a 401/438 challenge without integrity is accepted (long-term mechanism)
    tx = StunClientTransaction(req, 0.0, integrity_key=KEY)
    tx.receive(parse_message(req.error_response(438).encode()), 0.1)
    assert isinstance(tx.result, StunTransactionFailed) and tx.result.error is not None
    assert tx.result.error.code == 438
    # other unauthenticated errors are dropped
    tx2 = StunClientTransaction(req, 0.0, integrity_key=KEY)
    tx2.receive(parse_message(req.error_response(400).encode()), 0.1)
    assert not tx2.done
    # ICE short-term: no unauthenticated errors at all, but a signed 487 counts
    tx3 = StunClientTransaction(req, 0.0, integrity_key=KEY, unauthenticated_errors=())
    tx3.receive(parse_message(req.error_response(401).encode()), 0.1)
    assert not tx3.done
    tx3.receive(parse_message(req.error_response(487).encode(KEY)), 0.2)
    assert isinstance(tx3.result, StunTransactionFailed) and tx3.result.error is not None
    assert tx3.result.error.code == 487


def test_cancel() -> None:
    tx = StunClientTransaction(_request(), 0.0)
    tx.cancel()
    assert tx.done and tx.result is None and tx.datagrams_to_send() == []
    assert tx.get_timer() is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        StunClientTransaction(_request().response(), 0.0)
    with pytest.raises(ValueError):
        StunClientTransaction(b"not stun at all, really not", 0.0)
    with pytest.raises(ValueError):
        StunClientTransaction(_request(), 0.0, rto=0)
    with pytest.raises(ValueError):
        StunClientTransaction(_request(), 0.0, rc=0)


def test_lossy_exchange_simulation() -> None:
    """Two losses, then the third transmission gets through with a 30 ms one-way delay."""
    req = _request()
    tx = StunClientTransaction(req.encode(fingerprint=True), 0.0)
    delivered_at: float | None = None
    now = 0.0
    sent = 0
    while delivered_at is None:
        for _datagram in tx.datagrams_to_send():
            sent += 1
            if sent == 3:
                delivered_at = now + 0.030
        timer = tx.get_timer()
        assert timer is not None
        if delivered_at is not None and delivered_at < timer:
            break
        now = timer
        tx.handle_timer(now)
    assert now == pytest.approx(1.5)
    tx.receive(req.response(), delivered_at + 0.030)
    assert isinstance(tx.result, StunTransactionSucceeded)
    assert tx.result.rtt is None and tx.attempts == 3


def test_rto_estimator_learns_caches_and_expires() -> None:
    est = RtoEstimator()
    assert est.rto(0.0) == 0.5  # nothing learnt yet
    est.add_sample(0.05, 1.0)  # SRTT 50 ms, RTTVAR 25 ms -> 150 ms, clamped to the minimum
    assert est.rto(1.0) == pytest.approx(0.2)
    est.add_sample(0.4, 2.0)
    # RTTVAR = .75*.025 + .25*.35 = .10625 ; SRTT = .875*.05 + .125*.4 = .09375
    assert est.rto(2.0) == pytest.approx(0.09375 + 4 * 0.10625)
    assert est.rto(2.0 + 601) == 0.5  # stale after ten idle minutes
    assert est.rto(2.0) == 0.5  # and forgotten
    est.add_sample(10.0, 3.0)
    assert est.rto(3.0) == 3.0  # capped at the maximum
    with pytest.raises(ValueError):
        est.add_sample(-1.0, 3.0)
    with pytest.raises(ValueError):
        RtoEstimator(minimum=0)


def test_rto_estimator_observes_transactions() -> None:
    est = RtoEstimator(minimum=0.01)
    req = _request()
    tx = StunClientTransaction(req, 0.0, rto=est.rto(0.0))
    tx.receive(req.response(), 0.1)
    assert tx.result is not None
    est.observe(tx.result, 0.1)
    assert est.rto(0.2) == pytest.approx(0.1 + 4 * 0.05)
    # a retransmitted exchange gives no sample (Karn) but keeps the estimate fresh
    tx2 = StunClientTransaction(req, 500.0, rto=est.rto(500.0))
    tx2.handle_timer(tx2.get_timer() or 0.0)
    tx2.receive(req.response(), 501.0)
    assert tx2.result is not None
    est.observe(tx2.result, 501.0)
    assert est.rto(1000.0) == pytest.approx(0.3)
    # a timeout drops the estimate
    timed_out = StunClientTransaction(req, 0.0, rc=1, rm=1)
    timed_out.handle_timer(1.0)
    assert timed_out.result is not None
    est.observe(timed_out.result, 1001.0)
    assert est.rto(1001.0) == 0.5


def test_datagrams_to_send_accepts_now() -> None:
    tx = StunClientTransaction(_request(), 0.0)
    assert len(tx.datagrams_to_send(0.0)) == 1
    assert tx.datagrams_to_send(0.1) == []


SCHEDULE = [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]


@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans(), st.floats(0.0, 20.0, allow_nan=False)),
        min_size=7,
        max_size=7,
    )
)
def test_random_loss_and_delay_on_a_virtual_clock(fates: list[tuple[bool, bool, float]]) -> None:
    """Each transmission's request and response may be lost; responses take ``rtt`` seconds.

    The outcome must be: success at the first response to arrive before the 39.5 s timeout,
    else a timeout at exactly 39.5 s after exactly 7 sends.
    """
    req = _request()
    tx = StunClientTransaction(req.encode(fingerprint=True), 0.0)
    pending: list[float] = []  # arrival times of responses in flight
    send_times: list[float] = []
    now = 0.0
    while True:
        for _ in tx.datagrams_to_send():
            k = len(send_times)
            send_times.append(now)
            request_ok, response_ok, rtt = fates[k]
            if request_ok and response_ok:
                pending.append(now + rtt)
        timer = tx.get_timer()
        if timer is None:
            break
        pending.sort()
        if pending and pending[0] <= timer:
            now = pending.pop(0)
            tx.receive(parse_message(req.response().encode()), now)
        else:
            now = timer
            tx.handle_timer(now)

    arrivals_by_send = [
        s + rtt if req_ok and resp_ok else float("inf")
        for s, (req_ok, resp_ok, rtt) in zip(SCHEDULE, fates, strict=True)
    ]
    arrivals = [
        s + rtt
        for s, (req_ok, resp_ok, rtt) in zip(SCHEDULE, fates, strict=True)
        if req_ok and resp_ok
    ]
    first = min(arrivals, default=float("inf"))
    assert send_times == SCHEDULE[: len(send_times)]
    if first <= 39.5:
        assert isinstance(tx.result, StunTransactionSucceeded)
        assert now == pytest.approx(first)
        # A response arriving exactly when a retransmission is due is handled first, so a
        # send at time ``first`` happens only if no earlier send's response lands then.
        earlier_arrival_at = {
            k: any(a == first for a in arrivals_by_send[:k]) for k in range(len(SCHEDULE))
        }
        expected = [
            s
            for k, s in enumerate(SCHEDULE)
            if s < first or (s == first and not earlier_arrival_at[k])
        ]
        assert send_times == expected
        if len(send_times) == 1:
            assert tx.result.rtt == pytest.approx(fates[0][2])
        else:
            assert tx.result.rtt is None
    else:
        assert isinstance(tx.result, StunTransactionTimedOut)
        assert now == pytest.approx(39.5)
        assert send_times == SCHEDULE
    assert tx.datagrams_to_send() == []


def test_encoded_request_with_its_message_is_not_parsed_back() -> None:
    """``message=``: the request as built goes with its encoding (the ICE agent's checks);
    the transaction matches answers by its id and sends exactly those bytes."""
    msg = _request()
    data = msg.encode(KEY, fingerprint=True)
    tx = StunClientTransaction(data, 0.0, message=msg, integrity_key=KEY)
    assert tx.request is msg and tx.transaction_id == msg.transaction_id
    assert tx.datagrams_to_send() == [data]
    answer = parse_message(msg.response().encode(KEY, fingerprint=True))
    assert tx.receive(answer, 0.01)
    assert isinstance(tx.next_event(), StunTransactionSucceeded)


def test_encoded_request_with_another_message_is_refused() -> None:
    data = _request().encode(KEY)
    with pytest.raises(ValueError, match="not the one"):
        StunClientTransaction(data, 0.0, message=_request())
    answer = _request().response()
    with pytest.raises(ValueError, match="carries a request"):
        StunClientTransaction(answer.encode(), 0.0, message=answer)
