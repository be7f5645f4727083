"""RFC 3261 §17 / RFC 6026 transactions on a virtual clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.message import Request, Response, make_response, parse_message
from sip.timers import TimerConfig
from sip.transaction import (
    AckReceived,
    Event,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Outgoing,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    State,
    StrayResponse,
    Terminated,
    TimedOut,
    Transaction,
    TransactionLayer,
    TransportError,
    build_ack,
    build_cancel,
    new_client_transaction,
    new_server_transaction,
)
from tests.helpers_sip import wire_request

NO_TRYING = TimerConfig(trying_delay=None)


def make_request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKabc123",
    host: str = "client.example.com",
    port: int | None = 5060,
    transport: str = "UDP",
    cseq: int = 1,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    from_tag: str = "fromtag1",
    uri: str = "sip:bob@example.com",
    call_id: str = "call-1@client.example.com",
    routes: tuple[str, ...] = (),
) -> Request:
    sent_by = host + (f":{port}" if port is not None else "")
    return wire_request(
        f"{method} {uri} SIP/2.0",
        via=f"SIP/2.0/{transport} {sent_by}" + (f";branch={branch}" if branch else ""),
        from_=f"Alice <sip:alice@example.com>;tag={from_tag}",
        to="Bob <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        call_id=call_id,
        cseq=f"{cseq} {cseq_method or method}",
        extra=[*[f"Route: {r}" for r in routes], "Contact: <sip:alice@192.0.2.1>"],
    )


def respond(request: Request, status: int, to_tag: str | None = "totag9") -> Response:
    return make_response(request, status, to_tag=None if status == 100 else to_tag)


def events(tx: Transaction | TransactionLayer) -> list[Event]:
    out: list[Event] = []
    while (event := tx.next_event()) is not None:
        out.append(event)
    return out


def request_received(
    layer: TransactionLayer, request: Request, now: float, source: object = None
) -> RequestReceived:
    """Feed a new request to ``layer`` (unreliable transport): its one event, a
    RequestReceived naming the server transaction created."""
    layer.receive(request, now, reliable=False, source=source)
    [event] = events(layer)
    assert isinstance(event, RequestReceived)
    return event


def run(tx: Transaction, until: float) -> list[tuple[float, Request | Response]]:
    """Fire timers up to ``until``; return (time, message) for everything sent."""
    sent: list[tuple[float, Request | Response]] = []
    while (deadline := tx.get_timer()) is not None and deadline <= until:
        tx.handle_timer(deadline)
        sent.extend((deadline, m) for m in tx.messages_to_send())
    return sent


def times(sent: list[tuple[float, Request | Response]]) -> list[float]:
    return [round(t, 6) for t, _ in sent]


ClientTx = TypeVar("ClientTx", InviteClientTransaction, NonInviteClientTransaction)


def started_client(kind: type[ClientTx], method: str = "INVITE") -> tuple[Request, ClientTx]:
    """A client transaction over an unreliable transport that has sent its request at 0.0."""
    request = make_request(method)
    tx = kind(request, reliable=False, now=0.0)
    assert tx.messages_to_send() == [request]
    return request, tx


def invite_server_with_final(
    status: int, now: float = 0.0, reliable: bool = False
) -> tuple[Request, InviteServerTransaction, Response]:
    """An INVITE server transaction (UDP, or TCP if ``reliable``; no automatic 100) that sent
    the final response ``status``."""
    invite = make_request(transport="TCP" if reliable else "UDP")
    tx = InviteServerTransaction(invite, reliable=reliable, now=0.0, config=NO_TRYING)
    response = respond(invite, status)
    assert tx.send_response(response, now)
    assert tx.messages_to_send() == [response]
    return invite, tx, response


# ---------------------------------------------------------------- INVITE client (§17.1.1)


def test_invite_client_timer_a_doubles_without_cap_and_timer_b_times_out():
    invite = make_request()
    tx = InviteClientTransaction(invite, reliable=False, now=0.0)
    assert tx.state is State.CALLING
    assert tx.messages_to_send() == [invite]
    sent = run(tx, 100.0)
    # Timer A: T1, 2T1, 4T1 ... with no T2 cap (RFC 3261 §17.1.1.2); B = 64*T1 = 32 s
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(m is invite for _, m in sent)
    assert [type(e) for e in events(tx)] == [TimedOut, Terminated]
    assert tx.state is State.TERMINATED
    assert tx.get_timer() is None


def test_invite_client_reliable_sends_once_and_still_times_out():
    tx = InviteClientTransaction(make_request(transport="TCP"), reliable=True, now=10.0)
    assert len(tx.messages_to_send()) == 1
    assert tx.timer_deadlines() == {"B": 42.0}
    assert run(tx, 100.0) == []
    assert [type(e) for e in events(tx)] == [TimedOut, Terminated]


def test_invite_client_custom_t1_scales_every_timer():
    tx = InviteClientTransaction(
        make_request(), reliable=False, now=0.0, config=TimerConfig(t1=0.1)
    )
    tx.messages_to_send()
    sent = run(tx, 100.0)
    assert times(sent) == [0.1, 0.3, 0.7, 1.5, 3.1, 6.3]
    assert [type(e) for e in events(tx)] == [TimedOut, Terminated]


def test_invite_client_provisional_stops_retransmissions_and_timer_b():
    invite, tx = started_client(InviteClientTransaction)
    assert times(run(tx, 0.6)) == [0.5]
    assert not tx.cancellable  # §9.1: no CANCEL before a provisional response
    ringing = respond(invite, 180)
    tx.receive(ringing, 0.7)
    assert tx.state is State.PROCEEDING
    assert tx.cancellable
    assert events(tx) == [ResponseReceived(tx, ringing)]
    assert tx.get_timer() is None  # neither A nor B: the TU owns the wait (CANCEL / Timer C)
    tx.receive(ringing, 1.0)  # further provisionals go up too
    assert events(tx) == [ResponseReceived(tx, ringing)]
    assert tx.messages_to_send() == []


@pytest.mark.parametrize("status", [300, 404, 486, 487, 500, 603, 699])
def test_invite_client_non_2xx_final_generates_ack(status):
    invite = make_request(routes=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"))
    tx = InviteClientTransaction(invite, reliable=False, now=0.0)
    tx.messages_to_send()
    tx.receive(respond(invite, 100), 0.1)
    events(tx)
    final = respond(invite, status, to_tag="xyz")
    tx.receive(final, 1.0)
    assert tx.state is State.COMPLETED
    assert events(tx) == [ResponseReceived(tx, final)]
    [ack] = tx.messages_to_send()
    assert isinstance(ack, Request)
    # RFC 3261 §17.1.1.3
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.call_id == invite.call_id
    assert ack.cseq.seq == invite.cseq.seq and ack.cseq.method == "ACK"
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.to_addr.tag == "xyz"
    assert ack.headers.get_all("Via") == invite.headers.get_all("Via")[:1]
    assert ack.top_via.branch == invite.top_via.branch
    assert ack.headers.get_all("Route") == invite.headers.get_all("Route")
    assert ack.body == b""
    reparsed = parse_message(ack.to_bytes())
    assert isinstance(reparsed, Request) and reparsed.cseq.method == "ACK"
    assert tx.ack is ack


def test_invite_client_completed_reacks_retransmitted_final_and_timer_d():
    invite, tx = started_client(InviteClientTransaction)
    busy = respond(invite, 486)
    tx.receive(busy, 0.2)
    [ack] = tx.messages_to_send()
    events(tx)
    assert tx.timer_deadlines() == {"D": pytest.approx(32.2)}
    tx.receive(busy, 1.0)
    tx.receive(busy, 3.0)
    assert tx.messages_to_send() == [ack, ack]
    assert events(tx) == []  # retransmissions are not passed to the TU
    tx.receive(respond(invite, 180), 4.0)
    assert tx.messages_to_send() == [] and events(tx) == []
    assert run(tx, 32.1) == []
    assert tx.state is State.COMPLETED
    run(tx, 32.2)
    assert tx.state is State.TERMINATED
    assert events(tx) == [Terminated(tx)]


def test_invite_client_reliable_non_2xx_terminates_at_once_after_ack():
    invite = make_request(transport="TCP")
    tx = InviteClientTransaction(invite, reliable=True, now=0.0)
    tx.messages_to_send()
    final = respond(invite, 404)
    tx.receive(final, 0.3)
    assert [m.method for m in tx.messages_to_send() if isinstance(m, Request)] == ["ACK"]
    assert events(tx) == [ResponseReceived(tx, final), Terminated(tx)]


def test_invite_client_2xx_enters_accepted_and_passes_retransmissions_rfc6026():
    invite, tx = started_client(InviteClientTransaction)
    ok = respond(invite, 200)
    tx.receive(ok, 0.3)
    assert tx.state is State.ACCEPTED
    assert events(tx) == [ResponseReceived(tx, ok)]
    assert tx.messages_to_send() == []  # the TU ACKs a 2xx, not the transaction
    assert tx.timer_deadlines() == {"M": pytest.approx(0.3 + 32)}
    tx.receive(ok, 0.8)
    forked = respond(invite, 200, to_tag="other-fork")
    tx.receive(forked, 0.9)
    assert events(tx) == [ResponseReceived(tx, ok), ResponseReceived(tx, forked)]
    tx.receive(respond(invite, 180), 1.0)
    tx.receive(respond(invite, 486), 1.1)
    assert events(tx) == [] and tx.messages_to_send() == []
    run(tx, 32.2)
    assert tx.state is State.ACCEPTED
    run(tx, 32.3)
    assert events(tx) == [Terminated(tx)]


def test_invite_client_transport_error():
    tx = InviteClientTransaction(make_request(), reliable=False, now=0.0)
    tx.transport_error(0.0)
    assert events(tx) == [TransportError(tx), Terminated(tx)]
    assert tx.get_timer() is None


def test_invite_client_lost_request_then_answer():
    """Loss: the first two INVITEs are lost; the third gets a 180 and a 200."""
    invite = make_request()
    tx = InviteClientTransaction(invite, reliable=False, now=0.0)
    delivered = []
    sent = [(0.0, m) for m in tx.messages_to_send()] + run(tx, 1.6)
    for index, (t, _) in enumerate(sent):
        if index >= 2:
            delivered.append(t)
    assert delivered == [1.5]
    tx.receive(respond(invite, 180), 1.55)
    tx.receive(respond(invite, 200), 2.0)
    assert [e.response.status for e in events(tx) if isinstance(e, ResponseReceived)] == [
        180,
        200,
    ]
    assert run(tx, 30.0) == []


def test_invite_client_rejects_other_methods():
    with pytest.raises(ValueError):
        InviteClientTransaction(make_request("OPTIONS"), reliable=False, now=0.0)


# ------------------------------------------------------------ non-INVITE client (§17.1.2)


def test_non_invite_client_timer_e_caps_at_t2_and_timer_f_times_out():
    request = make_request("REGISTER")
    tx = NonInviteClientTransaction(request, reliable=False, now=0.0)
    assert tx.state is State.TRYING
    assert tx.messages_to_send() == [request]
    sent = run(tx, 100.0)
    # E: 0.5, 1, 2, 4, 4, 4 ... (min(2E, T2)); F = 64*T1 = 32 s
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [type(e) for e in events(tx)] == [TimedOut, Terminated]


def test_non_invite_client_timer_e_with_small_t2():
    tx = NonInviteClientTransaction(
        make_request("OPTIONS"), reliable=False, now=0.0, config=TimerConfig(t1=0.5, t2=1.0)
    )
    tx.messages_to_send()
    assert times(run(tx, 5.0)) == [0.5, 1.5, 2.5, 3.5, 4.5]


def test_non_invite_client_proceeding_retransmits_every_t2():
    request = make_request("BYE", to_tag="tt")
    tx = NonInviteClientTransaction(request, reliable=False, now=0.0)
    tx.messages_to_send()
    assert times(run(tx, 1.0)) == [0.5]  # next E at 1.5
    trying = respond(request, 100)
    tx.receive(trying, 1.0)
    assert tx.state is State.PROCEEDING
    assert events(tx) == [ResponseReceived(tx, trying)]
    sent = run(tx, 100.0)
    # §17.1.2.2: in Proceeding, E fires and is reset to T2
    assert times(sent) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert [type(e) for e in events(tx)] == [TimedOut, Terminated]


def test_non_invite_client_final_response_and_timer_k():
    request, tx = started_client(NonInviteClientTransaction, "REGISTER")
    ok = respond(request, 200)
    tx.receive(ok, 0.7)
    assert tx.state is State.COMPLETED
    assert events(tx) == [ResponseReceived(tx, ok)]
    assert tx.timer_deadlines() == {"K": pytest.approx(5.7)}  # T4
    tx.receive(ok, 1.0)
    tx.receive(respond(request, 401), 1.1)
    assert events(tx) == [] and tx.messages_to_send() == []
    run(tx, 5.7)
    assert events(tx) == [Terminated(tx)]


def test_non_invite_client_reliable_no_retransmissions_and_immediate_termination():
    request = make_request("REGISTER", transport="TLS")
    tx = NonInviteClientTransaction(request, reliable=True, now=0.0)
    tx.messages_to_send()
    assert tx.timer_deadlines() == {"F": 32.0}
    challenge = respond(request, 401)
    tx.receive(challenge, 0.1)
    assert events(tx) == [ResponseReceived(tx, challenge), Terminated(tx)]


def test_non_invite_client_loss_of_request_and_response():
    """Request lost twice, first 200 lost: the third retransmission's 200 completes it."""
    request, tx = started_client(NonInviteClientTransaction, "MESSAGE")
    run(tx, 3.5)  # retransmissions at 0.5, 1.5, 3.5; server answers the 3.5 one at 3.6
    tx.receive(respond(request, 202), 3.6)
    statuses = [e.response.status for e in events(tx) if isinstance(e, ResponseReceived)]
    assert statuses == [202]
    assert tx.state is State.COMPLETED
    assert run(tx, 8.5) == []
    assert tx.state is State.COMPLETED
    run(tx, 8.6)  # Timer K = T4 after the 200 at 3.6
    assert tx.state is State.TERMINATED


def test_non_invite_client_transport_error():
    tx = NonInviteClientTransaction(make_request("OPTIONS"), reliable=True, now=0.0)
    tx.transport_error(0.1)
    assert events(tx) == [TransportError(tx), Terminated(tx)]


def test_non_invite_client_refuses_invite_and_ack():
    for method in ("INVITE", "ACK"):
        with pytest.raises(ValueError):
            NonInviteClientTransaction(make_request(method), reliable=False, now=0.0)


# ---------------------------------------------------------------- INVITE server (§17.2.1)


def test_invite_server_sends_100_trying_after_200ms_of_tu_silence():
    invite = make_request()
    tx = InviteServerTransaction(invite, reliable=False, now=0.0)
    assert tx.state is State.PROCEEDING
    sent = run(tx, 1.0)
    assert times(sent) == [0.2]
    trying = sent[0][1]
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.to_addr.tag is None
    assert trying.headers.get_all("Via") == invite.headers.get_all("Via")
    tx.receive(invite, 1.0)  # retransmission: the 100 is resent
    assert tx.messages_to_send() == [trying]


def test_invite_server_100_trying_echoes_timestamp():
    invite = make_request()
    invite.headers.add("Timestamp", "54.2")
    tx = InviteServerTransaction(invite, reliable=True, now=0.0)
    [(_, trying)] = run(tx, 1.0)
    assert isinstance(trying, Response) and trying.headers.get("Timestamp") == "54.2"


def test_invite_server_no_automatic_100_when_tu_answers_quickly():
    invite = make_request()
    tx = InviteServerTransaction(invite, reliable=False, now=0.0)
    ringing = respond(invite, 180)
    assert tx.send_response(ringing, 0.05)
    assert tx.messages_to_send() == [ringing]
    assert run(tx, 5.0) == []
    tx.receive(invite, 0.5)
    tx.receive(invite, 1.5)
    assert tx.messages_to_send() == [ringing, ringing]
    assert events(tx) == []


def test_invite_server_retransmission_before_any_response_triggers_100():
    invite = make_request()
    tx = InviteServerTransaction(invite, reliable=False, now=0.0)
    tx.receive(invite, 0.1)
    [trying] = tx.messages_to_send()
    assert isinstance(trying, Response) and trying.status == 100
    assert run(tx, 1.0) == []


def test_invite_server_without_trying_config_stays_silent():
    invite = make_request()
    tx = InviteServerTransaction(invite, reliable=False, now=0.0, config=NO_TRYING)
    tx.receive(invite, 0.5)
    assert run(tx, 5.0) == [] and tx.messages_to_send() == []


def test_invite_server_non_2xx_timer_g_until_timer_h():
    invite, tx, busy = invite_server_with_final(486)
    assert tx.state is State.COMPLETED
    sent = run(tx, 100.0)
    # G: T1 doubling, capped at T2 (§17.2.1); H = 64*T1 ends it without an ACK
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(m is busy for _, m in sent)
    assert [type(e) for e in events(tx)] == [TimedOut, Terminated]


def test_invite_server_request_retransmission_in_completed_resends_final():
    invite, tx, decline = invite_server_with_final(603)
    tx.receive(invite, 0.2)
    assert tx.messages_to_send() == [decline]
    assert events(tx) == []


def test_invite_server_ack_confirms_and_timer_i():
    invite, tx, busy = invite_server_with_final(486)
    assert times(run(tx, 1.0)) == [0.5]
    ack = build_ack(invite, busy)
    tx.receive(ack, 1.2)
    assert tx.state is State.CONFIRMED
    assert tx.timer_deadlines() == {"I": pytest.approx(6.2)}  # T4; G and H stopped
    tx.receive(ack, 2.0)  # absorbed
    tx.receive(invite, 2.1)  # absorbed
    assert tx.messages_to_send() == [] and events(tx) == []
    assert run(tx, 6.2) == []
    assert events(tx) == [Terminated(tx)]


def test_invite_server_reliable_no_timer_g_and_ack_terminates():
    invite, tx, _ = invite_server_with_final(404, reliable=True)
    assert tx.timer_deadlines() == {"H": 32.0}
    tx.receive(build_ack(invite, respond(invite, 404)), 0.1)
    assert events(tx) == [Terminated(tx)]


def test_invite_server_reliable_timer_h_without_ack():
    invite, tx, _ = invite_server_with_final(404, reliable=True)
    assert run(tx, 40.0) == []
    assert [type(e) for e in events(tx)] == [TimedOut, Terminated]


def test_invite_server_2xx_accepted_state_rfc6026():
    invite, tx, ok = invite_server_with_final(200, now=0.1)
    assert tx.state is State.ACCEPTED
    assert tx.timer_deadlines() == {"L": pytest.approx(32.1)}
    # The transaction never retransmits the 2xx itself ...
    assert run(tx, 10.0) == []
    # ... it absorbs INVITE retransmissions ...
    tx.receive(invite, 0.6)
    assert tx.messages_to_send() == [] and events(tx) == []
    # ... sends the TU's retransmissions ...
    assert tx.send_response(ok, 0.6)
    assert tx.messages_to_send() == [ok]
    # ... refuses non-2xx ...
    assert not tx.send_response(respond(invite, 500), 0.7)
    assert tx.messages_to_send() == []
    # ... and passes ACKs to the TU.
    ack = make_request("ACK", branch="z9hG4bKnewbranch", to_tag="totag9")
    tx.receive(ack, 1.0)
    assert events(tx) == [AckReceived(tx, ack)]
    # Transport errors are reported but do not end "Accepted".
    tx.transport_error(1.1)
    assert events(tx) == [TransportError(tx)]
    assert tx.state is State.ACCEPTED
    run(tx, 32.1)
    assert events(tx) == [Terminated(tx)]


def test_invite_server_cancel_then_487():
    """CANCEL handling: the TU answers 487 through the INVITE transaction, which then waits
    for the ACK like for any non-2xx final response."""
    invite = make_request()
    tx = InviteServerTransaction(invite, reliable=False, now=0.0)
    tx.send_response(respond(invite, 180), 0.0)
    tx.messages_to_send()
    terminated = respond(invite, 487)
    assert tx.send_response(terminated, 2.0)
    assert tx.state is State.COMPLETED
    assert tx.messages_to_send() == [terminated]
    tx.receive(build_ack(invite, terminated), 2.1)
    assert tx.state is State.CONFIRMED


def test_invite_server_transport_error_in_proceeding_terminates():
    tx = InviteServerTransaction(make_request(), reliable=False, now=0.0)
    tx.transport_error(0.0)
    assert events(tx) == [TransportError(tx), Terminated(tx)]


def test_invite_server_ignores_responses_after_final():
    invite = make_request()
    tx = InviteServerTransaction(invite, reliable=False, now=0.0, config=NO_TRYING)
    tx.send_response(respond(invite, 486), 0.0)
    assert not tx.send_response(respond(invite, 200), 0.1)
    assert not tx.send_response(respond(invite, 180), 0.1)
    assert [m.status for m in tx.messages_to_send() if isinstance(m, Response)] == [486]


# ------------------------------------------------------------ non-INVITE server (§17.2.2)


def test_non_invite_server_trying_absorbs_retransmissions():
    request = make_request("OPTIONS")
    tx = NonInviteServerTransaction(request, reliable=False, now=0.0)
    assert tx.state is State.TRYING
    tx.receive(request, 0.5)
    assert tx.messages_to_send() == []
    assert tx.get_timer() is None


def test_non_invite_server_provisional_and_final_retransmission():
    request = make_request("REGISTER")
    tx = NonInviteServerTransaction(request, reliable=False, now=0.0)
    trying = respond(request, 100)
    assert tx.send_response(trying, 0.1)
    assert tx.state is State.PROCEEDING
    tx.receive(request, 0.5)
    assert tx.messages_to_send() == [trying, trying]
    ok = respond(request, 200)
    assert tx.send_response(ok, 0.6)
    assert tx.state is State.COMPLETED
    assert tx.timer_deadlines() == {"J": pytest.approx(32.6)}
    tx.receive(request, 1.5)
    tx.receive(request, 3.5)
    assert tx.messages_to_send() == [ok, ok, ok]
    assert not tx.send_response(respond(request, 500), 4.0)
    assert tx.messages_to_send() == []
    assert run(tx, 32.5) == []
    run(tx, 32.6)
    assert events(tx) == [Terminated(tx)]


def test_non_invite_server_reliable_terminates_on_final():
    request = make_request("BYE", transport="TCP", to_tag="x")
    tx = NonInviteServerTransaction(request, reliable=True, now=0.0)
    ok = respond(request, 200)
    tx.send_response(ok, 0.0)
    assert tx.messages_to_send() == [ok]
    assert events(tx) == [Terminated(tx)]


def test_non_invite_server_transport_error():
    request = make_request("OPTIONS")
    tx = NonInviteServerTransaction(request, reliable=False, now=0.0)
    tx.send_response(respond(request, 200), 0.0)
    tx.transport_error(0.0)
    assert events(tx) == [TransportError(tx), Terminated(tx)]


# ------------------------------------------------------------------------------- helpers


def test_build_cancel_matches_invite_per_section_9_1():
    invite = make_request(routes=("<sip:p1.example.com;lr>",))
    cancel = build_cancel(invite)
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    assert cancel.headers.get_all("Via") == invite.headers.get_all("Via")[:1]
    assert cancel.cseq.seq == invite.cseq.seq and cancel.cseq.method == "CANCEL"
    for name in ("From", "To", "Call-ID"):
        assert cancel.headers.get(name) == invite.headers.get(name)
    assert cancel.headers.get_all("Route") == invite.headers.get_all("Route")


def test_timer_config_validation():
    with pytest.raises(ValueError):
        TimerConfig(t1=0)
    with pytest.raises(ValueError):
        TimerConfig(t1=5, t2=4)
    config = TimerConfig(t1=0.25, t4=2.0)
    assert (config.timer_b, config.timer_f, config.timer_h, config.timer_j) == (16, 16, 16, 16)
    assert (config.timer_l, config.timer_m, config.timer_i, config.timer_k) == (16, 16, 2.0, 2.0)


# --------------------------------------------------------------------------------- layer


def test_layer_routes_responses_by_branch_and_cseq_method():
    layer = TransactionLayer(NO_TRYING)
    invite = make_request()
    invite_tx = layer.send_request(invite, 0.0, reliable=False, destination=("192.0.2.9", 5060))
    cancel = build_cancel(invite)
    cancel_tx = layer.send_request(cancel, 1.0, reliable=False, destination=("192.0.2.9", 5060))
    out = layer.messages_to_send()
    assert out == [
        Outgoing(invite, ("192.0.2.9", 5060), invite_tx),
        Outgoing(cancel, ("192.0.2.9", 5060), cancel_tx),
    ]
    cancel_ok = respond(cancel, 200)
    layer.receive(cancel_ok, 1.1, reliable=False)
    terminated = respond(invite, 487)
    layer.receive(terminated, 1.2, reliable=False)
    got = events(layer)
    assert got[:2] == [
        ResponseReceived(cancel_tx, cancel_ok),
        ResponseReceived(invite_tx, terminated),
    ]
    assert cancel_tx.state is State.COMPLETED and invite_tx.state is State.COMPLETED
    [ack] = layer.messages_to_send()
    assert ack.transaction is invite_tx and ack.destination == ("192.0.2.9", 5060)
    assert isinstance(ack.message, Request) and ack.message.method == "ACK"


def test_layer_stray_responses():
    layer = TransactionLayer()
    invite = make_request()
    layer.send_request(invite, 0.0, reliable=False)
    layer.messages_to_send()
    other_branch = respond(make_request(branch="z9hG4bKother"), 200)
    layer.receive(other_branch, 0.1, reliable=False)
    # Same branch, but the CSeq method is CANCEL: not this transaction (§17.1.3)
    wrong_method = respond(build_cancel(invite), 200)
    layer.receive(wrong_method, 0.2, reliable=False)
    assert events(layer) == [StrayResponse(other_branch), StrayResponse(wrong_method)]


def test_layer_rejects_ack_and_duplicate_keys():
    layer = TransactionLayer()
    with pytest.raises(ValueError):
        layer.send_request(make_request("ACK"), 0.0, reliable=False)
    layer.send_request(make_request("OPTIONS"), 0.0, reliable=False)
    with pytest.raises(ValueError):
        layer.send_request(make_request("OPTIONS"), 0.0, reliable=False)
    with pytest.raises(ValueError):
        layer.send_request(make_request("OPTIONS", branch=None), 0.0, reliable=False)


def test_layer_server_creates_transaction_and_absorbs_retransmissions():
    layer = TransactionLayer(NO_TRYING)
    request = make_request("OPTIONS")
    event = request_received(layer, request, 0.0, source=("198.51.100.7", 5060))
    assert event.request is request
    tx = event.transaction
    assert isinstance(tx, NonInviteServerTransaction) and tx.destination == ("198.51.100.7", 5060)
    layer.receive(make_request("OPTIONS"), 0.4, reliable=False)  # retransmission (equal copy)
    assert events(layer) == []
    ok = respond(request, 200)
    assert layer.send_response(tx, ok, 0.5)
    layer.receive(make_request("OPTIONS"), 0.9, reliable=False)
    assert layer.messages_to_send() == [Outgoing(ok, ("198.51.100.7", 5060), tx)] * 2


def test_layer_server_matching_uses_sent_by_and_method():
    layer = TransactionLayer(NO_TRYING)
    layer.receive(make_request("OPTIONS"), 0.0, reliable=False)
    # same branch, different sent-by -> a different transaction (§17.2.3)
    layer.receive(make_request("OPTIONS", port=5070), 0.0, reliable=False)
    layer.receive(make_request("OPTIONS", host="other.example.com"), 0.0, reliable=False)
    # same branch and sent-by, method CANCEL -> its own transaction
    layer.receive(make_request("INVITE"), 0.0, reliable=False)
    layer.receive(make_request("CANCEL"), 0.0, reliable=False)
    created = [e for e in events(layer) if isinstance(e, RequestReceived)]
    assert len(created) == 5
    assert len(layer.server_transactions()) == 5


def test_layer_ack_for_non_2xx_matches_invite_server_transaction():
    layer = TransactionLayer(NO_TRYING)
    invite = make_request()
    tx = request_received(layer, invite, 0.0).transaction
    busy = respond(invite, 486)
    layer.send_response(tx, busy, 0.0)
    # The ACK for a non-2xx reuses the INVITE's branch (§17.1.1.3)
    layer.receive(build_ack(invite, busy), 0.3, reliable=False)
    assert tx.state is State.CONFIRMED
    assert events(layer) == []


def test_layer_ack_for_2xx_goes_to_tu():
    layer = TransactionLayer(NO_TRYING)
    invite = make_request()
    tx = request_received(layer, invite, 0.0).transaction
    layer.send_response(tx, respond(invite, 200), 0.0)
    ack = make_request("ACK", branch="z9hG4bKack2xx", to_tag="totag9")
    layer.receive(ack, 0.2, reliable=False)
    assert events(layer) == [AckReceived(None, ack)]
    assert tx.state is State.ACCEPTED


def test_layer_find_cancelled():
    layer = TransactionLayer()
    invite = make_request()
    invite_tx = request_received(layer, invite, 0.0).transaction
    cancel = build_cancel(invite)
    assert isinstance(request_received(layer, cancel, 1.0).transaction, NonInviteServerTransaction)
    assert layer.find_cancelled(cancel) is invite_tx
    assert layer.find_cancelled(build_cancel(make_request(branch="z9hG4bKnone"))) is None


def test_layer_find_cancelled_rfc2543_fallback():
    """§9.2 with the §17.2.3 RFC 2543 rules: no branch, so the CANCEL is matched on Request-URI,
    From tag, Call-ID, CSeq number, top Via and To tag, with the method taken as INVITE."""
    layer = TransactionLayer()
    invite = make_request(branch=None)
    invite_tx = request_received(layer, invite, 0.0).transaction
    cancel = build_cancel(invite)
    assert isinstance(request_received(layer, cancel, 1.0).transaction, NonInviteServerTransaction)
    assert layer.find_cancelled(cancel) is invite_tx
    other_call = build_cancel(make_request(branch=None, call_id="other@client.example.com"))
    assert layer.find_cancelled(other_call) is None
    assert layer.find_cancelled(build_cancel(make_request(branch=None, cseq=2))) is None


def test_layer_rfc2543_fallback_matching():
    layer = TransactionLayer(NO_TRYING)
    invite = make_request(branch=None)  # RFC 2543 peer: no branch at all
    tx = request_received(layer, invite, 0.0).transaction
    # A retransmission matches on Request-URI, tags, Call-ID, CSeq and top Via
    layer.receive(make_request(branch=None), 0.5, reliable=False)
    assert events(layer) == []
    # A different CSeq is a new request
    layer.receive(make_request(branch=None, cseq=2), 0.5, reliable=False)
    assert [type(e) for e in events(layer)] == [RequestReceived]
    # ACK: To tag must equal the one of the response sent
    busy = respond(invite, 486, to_tag="srvtag")
    layer.send_response(tx, busy, 1.0)
    layer.receive(make_request("ACK", branch=None, to_tag="wrong"), 1.1, reliable=False)
    [stray_ack] = events(layer)
    assert isinstance(stray_ack, AckReceived) and stray_ack.transaction is None
    assert tx.state is State.COMPLETED
    layer.receive(make_request("ACK", branch=None, to_tag="srvtag"), 1.2, reliable=False)
    assert tx.state is State.CONFIRMED
    assert events(layer) == []


def test_layer_rfc2543_branch_without_magic_cookie():
    layer = TransactionLayer(NO_TRYING)
    layer.receive(make_request("OPTIONS", branch="oldstyle1"), 0.0, reliable=False)
    # Same non-cookie branch but other Call-ID: RFC 2543 rules say it is another transaction
    layer.receive(
        make_request("OPTIONS", branch="oldstyle1", call_id="another"), 0.0, reliable=False
    )
    # a different branch is part of the top Via, so it is another transaction too
    layer.receive(make_request("OPTIONS", branch="oldstyle2"), 0.0, reliable=False)
    layer.receive(make_request("OPTIONS", branch="oldstyle1"), 0.3, reliable=False)
    assert [type(e) for e in events(layer)] == [RequestReceived] * 3


def test_layer_timers_are_aggregated_and_terminated_transactions_dropped():
    layer = TransactionLayer()
    register = make_request("REGISTER", branch="z9hG4bKreg")
    options = make_request("OPTIONS", branch="z9hG4bKopt")
    reg_tx = layer.send_request(register, 0.0, reliable=False)
    opt_tx = layer.send_request(options, 0.2, reliable=True)
    layer.messages_to_send()
    assert layer.get_timer() == 0.5  # E of the REGISTER
    layer.handle_timer(0.5)
    assert [o.message for o in layer.messages_to_send()] == [register]
    assert layer.get_timer() == 1.5
    layer.receive(respond(options, 200), 0.6, reliable=True)
    assert opt_tx.state is State.TERMINATED
    assert layer.client_transactions() == [reg_tx]
    clock = 0.6
    while (deadline := layer.get_timer()) is not None:
        clock = deadline
        layer.handle_timer(clock)
    assert clock == 32.0
    assert layer.client_transactions() == []
    kinds = [type(e) for e in events(layer)]
    assert kinds == [ResponseReceived, Terminated, TimedOut, Terminated]


def test_layer_drops_malformed_messages():
    layer = TransactionLayer()
    broken = parse_message(
        b"OPTIONS sip:x@example.com SIP/2.0\r\nCall-ID: a\r\nCSeq: 1 OPTIONS\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@example.com>\r\nContent-Length: 0\r\n\r\n"
    )
    layer.receive(broken, 0.0, reliable=False)  # no Via
    assert events(layer) == [] and layer.server_transactions() == []
    broken_response = parse_message(b"SIP/2.0 200 OK\r\nCall-ID: a\r\nContent-Length: 0\r\n\r\n")
    layer.receive(broken_response, 0.0, reliable=False)
    assert events(layer) == []


def test_layer_stateless_messages_keep_order():
    layer = TransactionLayer()
    invite = make_request()
    ack = make_request("ACK", branch="z9hG4bKack", to_tag="t")
    layer.send_stateless(ack, "dest")
    layer.send_request(invite, 0.0, reliable=False, destination="dest")
    assert [o.message for o in layer.messages_to_send()] == [ack, invite]


# ---------------------------------------------------- end to end over a lossy virtual network


class LossyLink:
    """Two layers joined by a virtual UDP link with a fixed delay and a drop schedule."""

    def __init__(self, drop: set[int], delay: float = 0.05) -> None:
        self.client = TransactionLayer(NO_TRYING)
        self.server = TransactionLayer(NO_TRYING)
        self.drop = drop
        self.delay = delay
        self.count = 0
        self.in_flight: list[tuple[float, TransactionLayer, Request | Response]] = []
        self.now = 0.0

    def pump(self) -> None:
        for source, target in ((self.client, self.server), (self.server, self.client)):
            for out in source.messages_to_send():
                self.count += 1
                if self.count not in self.drop:
                    # reparse: what the wire delivers
                    copy = parse_message(out.message.to_bytes())
                    self.in_flight.append((self.now + self.delay, target, copy))

    def next_deadline(self) -> float | None:
        candidates = [t for t, _, _ in self.in_flight]
        for layer in (self.client, self.server):
            if (t := layer.get_timer()) is not None:
                candidates.append(t)
        return min(candidates, default=None)

    def step(self) -> bool:
        self.pump()
        deadline = self.next_deadline()
        if deadline is None:
            return False
        self.now = deadline
        due = [item for item in self.in_flight if item[0] <= self.now]
        self.in_flight = [item for item in self.in_flight if item[0] > self.now]
        for _, target, message in due:
            target.receive(message, self.now, reliable=False, source="peer")
        self.client.handle_timer(self.now)
        self.server.handle_timer(self.now)
        self.pump()
        return True

    def exchange(self, status: int, done: Callable[[Exchange], bool]) -> Exchange:
        """Step until the link is idle or ``done(seen so far)``; the server's TU answers every new
        request with ``status``; what the client's TU saw."""
        seen = Exchange()
        while self.step():
            for event in events(self.server):
                if isinstance(event, RequestReceived):
                    seen.server_transactions.append(event.transaction)
                    response = respond(event.request, status)
                    self.server.send_response(event.transaction, response, self.now)
            for event in events(self.client):
                if isinstance(event, ResponseReceived):
                    seen.finals.append(event.response.status)
                elif isinstance(event, TimedOut):
                    seen.timed_out = True
            if done(seen):
                break
        return seen


@dataclass
class Exchange:
    """What happened over a :class:`LossyLink`: server transactions created, final (and 1xx)
    statuses the client's TU received, whether the client transaction timed out."""

    server_transactions: list[ServerTransaction] = field(default_factory=list)
    finals: list[int] = field(default_factory=list)
    timed_out: bool = False

    @property
    def server_tx(self) -> ServerTransaction | None:
        """The last server transaction created."""
        return self.server_transactions[-1] if self.server_transactions else None


def test_end_to_end_non_invite_with_losses():
    link = LossyLink(drop={1, 2, 4})  # request, first retransmission, first 200
    request = make_request("MESSAGE")
    tx = link.client.send_request(request, 0.0, reliable=False)
    finals = link.exchange(200, done=lambda _: link.now > 100).finals
    assert finals == [200]  # exactly once despite the 200 retransmissions
    assert tx.state is State.TERMINATED
    assert link.client.client_transactions() == [] and link.server.server_transactions() == []


def test_end_to_end_invite_rejected_with_losses():
    # drop: INVITE (1), first 486 (3), first ACK (5)
    link = LossyLink(drop={1, 3, 5})
    invite = make_request()
    tx = link.client.send_request(invite, 0.0, reliable=False)
    seen = link.exchange(
        486, done=lambda s: s.server_tx is not None and s.server_tx.state is State.CONFIRMED
    )
    server_tx, finals = seen.server_tx, seen.finals
    assert finals == [486]
    assert tx.state is State.COMPLETED
    assert server_tx is not None and server_tx.state is State.CONFIRMED


# ------------------------------------------------------------- property tests (hypothesis)

CLIENT_ACTIONS = st.one_of(
    st.tuples(st.just("recv"), st.sampled_from([100, 180, 200, 202, 302, 401, 486, 503, 699])),
    st.tuples(st.just("tick"), st.floats(min_value=0.0, max_value=20.0)),
    st.tuples(st.just("terr"), st.just(0)),
)
SERVER_ACTIONS = st.one_of(
    st.tuples(st.just("send"), st.sampled_from([100, 180, 183, 200, 404, 487, 603])),
    st.tuples(st.just("retransmit"), st.just(0)),
    st.tuples(st.just("ack"), st.just(0)),
    st.tuples(st.just("tick"), st.floats(min_value=0.0, max_value=20.0)),
    st.tuples(st.just("terr"), st.just(0)),
)


def check_common_invariants(tx: Transaction, log: list[Event], now: float) -> None:
    terminated = [i for i, e in enumerate(log) if isinstance(e, Terminated)]
    assert len(terminated) <= 1
    if terminated:
        assert terminated[0] == len(log) - 1  # Terminated is the last event
        assert tx.state is State.TERMINATED and tx.get_timer() is None
    else:
        assert tx.state is not State.TERMINATED
    deadline = tx.get_timer()
    assert deadline is None or deadline > now or tx.state is State.TERMINATED


def drive(
    tx: Transaction,
    actions: list[tuple[str, float]],
    apply: Callable[[str, float, float], None],
) -> tuple[list[Event], list[Request | Response]]:
    """Feed ``actions`` to ``tx`` on a virtual clock: "tick" advances it and fires the timers,
    "terr" reports a transport error, any other kind goes to ``apply(kind, value, now)``.
    After every step: nothing more comes out of a terminated transaction, and the common
    invariants hold. Returns all events and all messages sent (the first transmission too)."""
    now = 0.0
    log: list[Event] = []
    sent: list[Request | Response] = list(tx.messages_to_send())
    for kind, value in actions:
        done = tx.state is State.TERMINATED
        if kind == "tick":
            now += float(value)
            tx.handle_timer(now)
        elif kind == "terr":
            tx.transport_error(now)
        else:
            apply(kind, value, now)
        new_events = events(tx)
        new_messages = tx.messages_to_send()
        if done:
            assert new_events == [] and new_messages == []
        log += new_events
        sent += new_messages
        check_common_invariants(tx, log, now)
    return log, sent


def transaction_property(methods: list[str], actions: st.SearchStrategy) -> Callable:
    """300 random runs: one of ``methods``, either transport, up to 25 ``actions``."""
    return lambda test: settings(max_examples=300, deadline=None)(
        given(
            method=st.sampled_from(methods),
            reliable=st.booleans(),
            actions=st.lists(actions, max_size=25),
        )(test)
    )


@transaction_property(["INVITE", "OPTIONS"], CLIENT_ACTIONS)
def test_property_client_transactions(method, reliable, actions):
    request = make_request(method)
    tx = new_client_transaction(request, reliable=reliable, now=0.0)

    def apply(kind: str, value: float, now: float) -> None:  # "recv"
        tx.receive(respond(request, int(value)), now)

    log, sent = drive(tx, actions, apply)
    finals = [
        e.response.status
        for e in log
        if isinstance(e, ResponseReceived) and e.response.status >= 200
    ]
    if method == "INVITE":
        # at most one non-2xx final; 2xx (possibly repeated) never mixed with a non-2xx
        non2xx = [s for s in finals if s >= 300]
        assert len(non2xx) <= 1
        assert not (non2xx and len(non2xx) != len(finals))
        acks = [m for m in sent if isinstance(m, Request) and m.method == "ACK"]
        assert bool(acks) == bool(non2xx)
        assert all(m is request for m in sent if isinstance(m, Request) and m.method != "ACK")
        if reliable:
            assert sum(1 for m in sent if m is request) == 1
    else:
        assert len(finals) <= 1  # a non-INVITE final response reaches the TU once
        assert all(m is request for m in sent)
        if reliable:
            assert len(sent) == 1
    if any(isinstance(e, TimedOut) for e in log):
        assert not finals


@transaction_property(["INVITE", "REGISTER"], SERVER_ACTIONS)
def test_property_server_transactions(method, reliable, actions):
    request = make_request(method)
    tx = new_server_transaction(request, reliable=reliable, now=0.0)
    given_responses: list[Response] = []
    accepted_finals: list[int] = []

    def apply(kind: str, value: float, now: float) -> None:
        if kind == "send":
            response = respond(request, int(value))
            given_responses.append(response)
            if tx.send_response(response, now) and response.status >= 200:
                accepted_finals.append(response.status)
        elif kind == "retransmit":
            tx.receive(request, now)
        else:  # "ack"
            tx.receive(build_ack(request, respond(request, 486)), now)

    log, sent = drive(tx, actions, apply)
    # only the TU's responses (or our own 100 Trying) go out
    for message in sent:
        assert isinstance(message, Response)
        assert any(message is r for r in given_responses) or message.status == 100
    # one final response, except that an INVITE's 2xx may be repeated by the TU
    if accepted_finals:
        assert len(set(accepted_finals)) == 1
        if accepted_finals[0] >= 300 or method != "INVITE":
            assert len(accepted_finals) == 1
    if reliable:
        finals_sent = [m for m in sent if isinstance(m, Response) and m.status >= 200]
        assert len(finals_sent) <= len(accepted_finals) + sum(
            1 for kind, _ in actions if kind == "retransmit"
        )


@settings(max_examples=60, deadline=None)
@given(
    drops=st.sets(st.integers(min_value=1, max_value=30), max_size=8),
    status=st.sampled_from([200, 486]),
    method=st.sampled_from(["INVITE", "OPTIONS"]),
)
def test_property_end_to_end_over_lossy_link(drops, status, method):
    link = LossyLink(drop=drops)
    request = make_request(method)
    tx = link.client.send_request(request, 0.0, reliable=False)
    seen = link.exchange(status, done=lambda _: link.now >= 200)
    server_txs, finals, timed_out = seen.server_transactions, seen.finals, seen.timed_out
    # Everything finishes on its own timers; the server never sees two transactions.
    assert tx.state is State.TERMINATED
    assert link.client.client_transactions() == [] and link.server.server_transactions() == []
    assert link.client.get_timer() is None and link.server.get_timer() is None
    assert len(server_txs) <= 1
    if timed_out:
        assert finals == []
    else:
        assert finals and set(finals) == {status}
        if method == "OPTIONS" or status >= 300:
            assert len(finals) == 1


def test_late_timer_handling_does_not_burst():
    """If the owner wakes up late (a busy loop, a suspended laptop), each due timer fires once
    and is re-armed from the actual time: no burst of back-to-back retransmissions."""
    request, tx = started_client(NonInviteClientTransaction, "OPTIONS")
    tx.handle_timer(10.0)  # E was due at 0.5
    assert tx.messages_to_send() == [request]
    assert tx.timer_deadlines() == {"E": pytest.approx(11.0), "F": 32.0}
    tx.handle_timer(40.0)  # E and F overdue: one retransmission, then the timeout
    assert tx.messages_to_send() == [request]
    assert [type(e) for e in events(tx)] == [TimedOut, Terminated]


def test_handle_timer_before_deadline_is_a_no_op():
    tx = InviteClientTransaction(make_request(), reliable=False, now=0.0)
    tx.messages_to_send()
    tx.handle_timer(0.49)
    assert tx.messages_to_send() == [] and events(tx) == []
    assert tx.get_timer() == 0.5


REQUEST_SPACE = st.tuples(
    st.sampled_from(["INVITE", "OPTIONS", "CANCEL"]),
    st.sampled_from(["z9hG4bK1", "z9hG4bK2", None, "old1"]),
    st.sampled_from([5060, 5070]),
    st.sampled_from([1, 2]),
    st.sampled_from(["call-a", "call-b"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(REQUEST_SPACE, max_size=20))
def test_property_server_matching(specs):
    """Every distinct transaction identity (§17.2.3, with the RFC 2543 fallback) creates exactly
    one server transaction; repeats of it are retransmissions."""
    layer = TransactionLayer(NO_TRYING)
    identities: set[tuple[object, ...]] = set()
    for method, branch, port, cseq, call_id in specs:
        request = make_request(method, branch=branch, port=port, cseq=cseq, call_id=call_id)
        layer.receive(request, 0.0, reliable=True)
        if branch is not None and branch.startswith("z9hG4bK"):
            identities.add(("3261", branch, port, method))
        else:
            identities.add(("2543", branch, port, method, cseq, call_id))
    created = [e for e in events(layer) if isinstance(e, RequestReceived)]
    assert len(created) == len(identities) == len(layer.server_transactions())
