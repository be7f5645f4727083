"""SIP transactions: RFC 3261 §17 state machines, amended by RFC 6026; sans-I/O, virtual clock.

API summary
-----------
Timer values: ``TimerConfig`` (from ``sip.timers``, re-exported here): t1=0.5, t2=4, t4=5 s,
``timer_d`` (32 s), ``trying_delay`` (0.2 s; ``None`` disables the automatic 100 Trying).

Single transactions (the ``TransactionLayer`` below is the usual entry point)::

    InviteClientTransaction(request, *, reliable, now, config=None, destination=None)
    NonInviteClientTransaction(...)         # constructing a client transaction queues the request
    InviteServerTransaction(request, *, reliable, now, config=None, destination=None)
    NonInviteServerTransaction(...)
    new_client_transaction(...) / new_server_transaction(...)   # pick the class by method

    tx.state: State   (CALLING TRYING PROCEEDING COMPLETED CONFIRMED ACCEPTED TERMINATED)
    tx.request, tx.reliable, tx.config, tx.key, tx.terminated, tx.destination (opaque, owner's)
    tx.get_timer() -> float | None ; tx.handle_timer(now) ; tx.timer_deadlines() -> {"A": t, ...}
    tx.transport_error(now)         # the transport could not send one of our messages
    tx.messages_to_send() -> list[Request | Response]     (drains)
    tx.next_event() -> Event | None                       (drains)
    client: tx.receive(response, now) ; InviteClientTransaction.ack (ACK sent for a 3xx-6xx),
            InviteClientTransaction.cancellable (a 1xx arrived, no final yet: §9.1)
    server: tx.receive(request, now)  (retransmission or ACK) ; tx.send_response(response, now)
            -> bool (False: not sent in this state) ; tx.last_response

Events (frozen dataclasses; every one but StrayResponse names its transaction)::

    ResponseReceived(transaction, response)   1xx/final for the TU (2xx retransmissions too while
                                              an INVITE client is "Accepted": re-ACK them)
    TimedOut(transaction)                     Timer B / F (no final response), Timer H (no ACK)
    TransportError(transaction)               after transport_error(); not fatal in "Accepted"
    Terminated(transaction)                   always the last event of a transaction
    RequestReceived(transaction, request)     layer: a new request created a server transaction
    AckReceived(transaction | None, request)  layer: ACK for a 2xx (no transaction, or "Accepted")
    StrayResponse(response)                   layer: a response matching no client transaction

``TransactionLayer(config=None)`` matches messages to transactions (§17.1.3, §17.2.3 including
the RFC 2543 fallback) and aggregates their output and timers::

    send_request(request, now, *, reliable, destination=None) -> ClientTransaction
    receive(message, now, *, reliable, source=None)  # new server tx get destination=source
    send_response(transaction, response, now) -> bool
    send_stateless(message, destination)             # ACK for 2xx, TU-retransmitted 2xx after L
    find_cancelled(cancel) -> InviteServerTransaction | None      (§9.2)
    transport_error(transaction, now)
    messages_to_send() -> list[Outgoing(message, destination, transaction | None)]
    next_event() -> Event | None ; get_timer() -> float | None ; handle_timer(now)
    client_transactions() / server_transactions() -> list (live ones)

Helpers: ``build_ack(invite, response)`` (§17.1.1.3), ``build_cancel(request)`` (§9.1).
Events and messages are produced in order; the TU (dialogs, registration) does the rest: 2xx
ACKs and 2xx retransmissions (RFC 6026), 487 after CANCEL, Timer C, authentication retries.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sip.message import Headers, Request, Response, SipParseError, make_response
from sip.timers import TimerConfig

__all__ = [
    "MAGIC_COOKIE",
    "AckReceived",
    "ClientTransaction",
    "Event",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "Outgoing",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "State",
    "StrayResponse",
    "Terminated",
    "TimedOut",
    "TimerConfig",
    "Transaction",
    "TransactionLayer",
    "TransportError",
    "build_ack",
    "build_cancel",
    "new_client_transaction",
    "new_server_transaction",
]

logger = logging.getLogger("sip.transaction")

#: Branch prefix marking an RFC 3261 branch that is unique per transaction (§8.1.1.7).
MAGIC_COOKIE = "z9hG4bK"

Message = Request | Response


class State(Enum):
    """Transaction states (RFC 3261 Figures 5-8; ACCEPTED from RFC 6026 §7)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


# --------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class ResponseReceived:
    """A response the client transaction passes up to the TU (§17.1.1.2, §17.1.2.2)."""

    transaction: ClientTransaction
    response: Response


@dataclass(frozen=True)
class TimedOut:
    """Timer B or F fired (no final response), or Timer H (no ACK for a 3xx-6xx)."""

    transaction: Transaction


@dataclass(frozen=True)
class TransportError:
    """The transport reported a failure sending a message of this transaction (§17.1.4)."""

    transaction: Transaction


@dataclass(frozen=True)
class Terminated:
    """The transaction reached "Terminated" and has been destroyed; always its last event."""

    transaction: Transaction


@dataclass(frozen=True)
class RequestReceived:
    """A request that created a new server transaction; the TU must answer through it."""

    transaction: ServerTransaction
    request: Request


@dataclass(frozen=True)
class AckReceived:
    """An ACK for the TU: one for a 2xx, matching no transaction (§17.2.3), or one matching an
    INVITE server transaction in the "Accepted" state (RFC 6026 §8.7)."""

    transaction: InviteServerTransaction | None
    request: Request


@dataclass(frozen=True)
class StrayResponse:
    """A response matching no client transaction (§17.1.3), e.g. a late 2xx; the TU decides."""

    response: Response


Event = (
    ResponseReceived
    | TimedOut
    | TransportError
    | Terminated
    | RequestReceived
    | AckReceived
    | StrayResponse
)


# ------------------------------------------------------------------------------ message helpers


def _top_via_value(request: Request) -> str:
    vias = request.headers.get_all("Via")
    if not vias:
        raise ValueError("request has no Via header")
    return vias[0]


def _max_forwards(request: Request) -> str:
    value = request.headers.get("Max-Forwards")
    return value if value is not None else "70"


def _request_of_same_transaction(request: Request, method: str, to: str) -> Request:
    """A request sharing ``request``'s Request-URI, top Via (so its branch), Max-Forwards,
    Route set, From, Call-ID and CSeq number, with ``method`` and the To header ``to``."""
    headers = Headers()
    headers.add("Via", _top_via_value(request))
    headers.add("Max-Forwards", _max_forwards(request))
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("From", request.headers.get("From") or "")
    headers.add("To", to)
    headers.add("Call-ID", request.headers.get("Call-ID") or "")
    headers.add("CSeq", f"{request.cseq.seq} {method}")
    return Request(method, request.uri, headers)


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK an INVITE client transaction sends for a 3xx-6xx response (§17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE (method ACK), the To of the
    response (with its tag), one Via equal to the INVITE's top Via, and the INVITE's Route set.
    """
    to = response.headers.get("To") or invite.headers.get("To") or ""
    return _request_of_same_transaction(invite, "ACK", to)


def build_cancel(request: Request) -> Request:
    """A CANCEL for a pending request (§9.1): same Request-URI, Call-ID, To, From and CSeq number
    (method CANCEL), one Via equal to the request's top Via (so the same branch), same Route set.
    Send it with ``TransactionLayer.send_request``: it is a transaction of its own."""
    return _request_of_same_transaction(request, "CANCEL", request.headers.get("To") or "")


def _is_final(status: int) -> bool:
    return 200 <= status <= 699


# --------------------------------------------------------------------------------- base class


class Transaction:
    """Common machinery: timers keyed by letter, an outbox and an event queue.

    A concrete transaction sets ``initial_state`` and ``is_invite`` (which decides the methods
    it accepts) and starts its machine in ``_begin``; its timers fire through ``_on_timer``.
    """

    is_invite: bool = False
    is_client: bool = False
    initial_state: State = State.TERMINATED

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        now: float,
        config: TimerConfig | None = None,
        destination: Any = None,
    ) -> None:
        if self.is_invite and request.method != "INVITE":
            raise ValueError(f"not an INVITE: {request.method}")
        if not self.is_invite and request.method in ("INVITE", "ACK"):
            raise ValueError(f"not a non-INVITE transaction method: {request.method}")
        self.request = request
        self.reliable = reliable
        self.config = config if config is not None else TimerConfig()
        self.destination = destination
        self.created_at = now
        self.state = self.initial_state
        self._timers: dict[str, float] = {}
        self._intervals: dict[str, float] = {}  # current retransmission interval per timer
        self._outbox: list[Message] = []
        self._events: deque[Event] = deque()
        # Set by a TransactionLayer: called after every input so it can collect the output.
        self._sink: Callable[[Transaction], None] | None = None
        self._key = self._make_key(request)
        self._begin(now)

    # -- public -------------------------------------------------------------------------------

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    @property
    def key(self) -> tuple[str, ...]:
        return self._key

    def get_timer(self) -> float | None:
        """The earliest deadline of a running timer, or None."""
        return min(self._timers.values(), default=None)

    def timer_deadlines(self) -> dict[str, float]:
        """Running timers by name ("A".."M", "Trying") -> deadline; for tests and debugging."""
        return dict(self._timers)

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline is <= now, earliest first."""
        while self.state is not State.TERMINATED:
            due = [(deadline, name) for name, deadline in self._timers.items() if deadline <= now]
            if not due:
                break
            _, name = min(due)
            del self._timers[name]
            logger.debug("%s: timer %s fired", self, name)
            self._on_timer(name, now)
        self._flush()

    def transport_error(self, now: float) -> None:
        """The transport failed to send a message of this transaction (§17.1.1.2, §17.2.1)."""
        if self.state is State.TERMINATED:
            return
        self._events.append(TransportError(self))
        if self.state is not State.ACCEPTED:  # RFC 6026: "Accepted" only informs the TU
            self._terminate()
        self._flush()

    def messages_to_send(self) -> list[Message]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def __repr__(self) -> str:
        branch = ""
        try:
            branch = self.request.top_via.branch or ""
        except (SipParseError, ValueError):
            pass
        return f"<{type(self).__name__} {self.request.method} {branch} {self.state.value}>"

    # -- internals ----------------------------------------------------------------------------

    def _make_key(self, request: Request) -> tuple[str, ...]:
        raise NotImplementedError

    def _begin(self, now: float) -> None:
        """Start the machine: first transmission and timers."""

    def _on_timer(self, name: str, now: float) -> None:
        raise NotImplementedError

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            logger.debug("%s -> %s", self, state.value)
            self.state = state

    def _send(self, message: Message) -> None:
        self._outbox.append(message)

    def _start(self, name: str, now: float, duration: float) -> None:
        self._timers[name] = now + duration

    def _stop(self, *names: str) -> None:
        for name in names:
            self._timers.pop(name, None)

    def _start_retransmissions(self, name: str, now: float) -> None:
        """Retransmission timer ``name`` (A, E, G) starts at T1, on unreliable transports only
        (§17.1.1.2, §17.1.2.2, §17.2.1)."""
        self._intervals[name] = self.config.t1
        if not self.reliable:
            self._start(name, now, self.config.t1)

    def _retransmit(self, name: str, message: Message, now: float, interval: float) -> None:
        """Retransmission timer ``name`` fired: send ``message`` again, next time after
        ``interval``."""
        self._send(message)
        self._intervals[name] = interval
        self._start(name, now, interval)

    def _complete(self, state: State, timer: str, now: float, duration: float) -> None:
        """Enter ``state`` ("Completed" or "Confirmed") and wait there ``duration`` with
        ``timer`` (D, I, J, K) to absorb retransmissions; on a reliable transport there are
        none, so the transaction terminates at once (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2)."""
        if self.reliable:
            self._terminate()
        else:
            self._set_state(state)
            self._start(timer, now, duration)

    def _time_out(self) -> None:
        """Timer B, F or H fired: tell the TU, then terminate."""
        self._events.append(TimedOut(self))
        self._terminate()

    def _terminate(self) -> None:
        self._timers.clear()
        self._set_state(State.TERMINATED)
        self._events.append(Terminated(self))

    def _flush(self) -> None:
        if self._sink is not None:
            self._sink(self)


# ------------------------------------------------------------------------------------- client


class ClientTransaction(Transaction):
    """Base of the two client transactions; matched by (branch, CSeq method), §17.1.3."""

    is_client = True

    def receive(self, response: Response, now: float) -> None:
        raise NotImplementedError

    def _make_key(self, request: Request) -> tuple[str, ...]:
        return _client_key_for_request(request)

    def _pass_up(self, response: Response) -> None:
        self._events.append(ResponseReceived(self, response))


class InviteClientTransaction(ClientTransaction):
    """INVITE client transaction (§17.1.1, RFC 6026 §8.4).

    Calling --1xx--> Proceeding; 2xx --> Accepted (Timer M, 2xx retransmissions passed to the TU,
    which ACKs them); 3xx-6xx --> ACK sent, Completed (Timer D; Terminated at once if reliable).
    Timer A retransmits the INVITE on unreliable transports, doubling without a cap; Timer B
    (64*T1) times out the "Calling" state.
    """

    is_invite = True
    initial_state = State.CALLING
    #: The ACK sent for a 3xx-6xx response (resent for its retransmissions).
    ack: Request | None = None

    def _begin(self, now: float) -> None:
        self._send(self.request)
        self._start_retransmissions("A", now)
        self._start("B", now, self.config.timer_b)

    @property
    def cancellable(self) -> bool:
        """§9.1: a CANCEL may go out once a provisional response arrived, before a final one."""
        return self.state is State.PROCEEDING

    def receive(self, response: Response, now: float) -> None:
        status = response.status
        if self.state in (State.CALLING, State.PROCEEDING):
            if 100 <= status <= 699:
                self._stop("A", "B")
                self._pass_up(response)
            if 100 <= status < 200:
                self._set_state(State.PROCEEDING)
            elif 200 <= status < 300:
                self._set_state(State.ACCEPTED)
                self._start("M", now, self.config.timer_m)
            elif 300 <= status <= 699:
                self.ack = build_ack(self.request, response)
                self._send(self.ack)
                self._complete(State.COMPLETED, "D", now, self.config.timer_d)
        elif self.state is State.ACCEPTED:
            # RFC 6026 §8.4: 2xx retransmissions (and 2xx from other forks) go to the TU.
            if 200 <= status < 300:
                self._pass_up(response)
        elif self.state is State.COMPLETED:
            # §17.1.1.2: a retransmitted final response is answered with the same ACK.
            if 300 <= status <= 699 and self.ack is not None:
                self._send(self.ack)
        self._flush()

    def _on_timer(self, name: str, now: float) -> None:
        if name == "A" and self.state is State.CALLING:
            self._retransmit("A", self.request, now, 2 * self._intervals["A"])
        elif name == "B" and self.state is State.CALLING:
            self._time_out()
        elif name == "D" and self.state is State.COMPLETED:
            self._terminate()
        elif name == "M" and self.state is State.ACCEPTED:
            self._terminate()


class NonInviteClientTransaction(ClientTransaction):
    """Non-INVITE client transaction (§17.1.2).

    Trying --1xx--> Proceeding; 200-699 --> Completed (Timer K = T4; Terminated at once if
    reliable). Timer E retransmits on unreliable transports: T1 doubling up to T2 in "Trying",
    every T2 in "Proceeding". Timer F (64*T1) times out "Trying" and "Proceeding".
    """

    initial_state = State.TRYING

    def _begin(self, now: float) -> None:
        self._send(self.request)
        self._start_retransmissions("E", now)
        self._start("F", now, self.config.timer_f)

    def receive(self, response: Response, now: float) -> None:
        status = response.status
        if self.state in (State.TRYING, State.PROCEEDING):
            if 100 <= status < 200:
                self._set_state(State.PROCEEDING)
                self._pass_up(response)
            elif _is_final(status):
                self._stop("E", "F")
                self._pass_up(response)
                self._complete(State.COMPLETED, "K", now, self.config.timer_k)
        # Completed: response retransmissions are absorbed.
        self._flush()

    def _on_timer(self, name: str, now: float) -> None:
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            if self.state is State.TRYING:
                interval = min(2 * self._intervals["E"], self.config.t2)
            else:
                interval = self.config.t2
            self._retransmit("E", self.request, now, interval)
        elif name == "F" and self.state in (State.TRYING, State.PROCEEDING):
            self._time_out()
        elif name == "K" and self.state is State.COMPLETED:
            self._terminate()


# ------------------------------------------------------------------------------------- server


class ServerTransaction(Transaction):
    """Base of the two server transactions; matched per §17.2.3."""

    #: The last final and the last provisional response sent (resent on retransmissions).
    last_response: Response | None = None
    last_provisional: Response | None = None

    def _make_key(self, request: Request) -> tuple[str, ...]:
        return _server_key_for_request(request)

    def receive(self, request: Request, now: float) -> None:
        raise NotImplementedError

    def send_response(self, response: Response, now: float) -> bool:
        """Send a response from the TU; False (and a warning) when this state allows none."""
        sent = self._respond(response, now)
        if not sent:
            logger.warning("%s: %d response from TU not sent in this state", self, response.status)
        self._flush()
        return sent

    def _respond(self, response: Response, now: float) -> bool:
        raise NotImplementedError

    def _send_provisional(self, response: Response) -> None:
        self.last_provisional = response
        self._send(response)

    def _send_final(self, response: Response) -> None:
        self.last_response = response
        self._send(response)


class InviteServerTransaction(ServerTransaction):
    """INVITE server transaction (§17.2.1, RFC 6026 §8.5-8.7).

    Proceeding: provisional responses from the TU are sent (and resent on INVITE
    retransmissions); a 100 Trying is generated if the TU is silent for ``trying_delay``.
    2xx --> Accepted (Timer L): INVITE retransmissions absorbed, further 2xx from the TU sent,
    ACKs passed to the TU. 3xx-6xx --> Completed: Timer G retransmits (T1 doubling to T2,
    unreliable only), Timer H (64*T1) waits for the ACK; ACK --> Confirmed (Timer I = T4, or
    Terminated at once if reliable).
    """

    is_invite = True
    initial_state = State.PROCEEDING

    def _begin(self, now: float) -> None:
        if self.config.trying_delay is not None:
            self._start("Trying", now, self.config.trying_delay)

    def receive(self, request: Request, now: float) -> None:
        if request.method == "ACK":
            if self.state is State.COMPLETED:
                self._stop("G", "H")
                self._complete(State.CONFIRMED, "I", now, self.config.timer_i)
            elif self.state is State.ACCEPTED:
                self._events.append(AckReceived(self, request))
            # Confirmed: ACK retransmissions absorbed. Proceeding: an ACK makes no sense; drop.
        else:
            if self.state is State.PROCEEDING:
                if self.last_provisional is not None:
                    self._send(self.last_provisional)
                elif self.config.trying_delay is not None:
                    self._send_trying()
            elif self.state is State.COMPLETED and self.last_response is not None:
                self._send(self.last_response)
            # Accepted (RFC 6026 §8.7) and Confirmed: absorbed.
        self._flush()

    def _respond(self, response: Response, now: float) -> bool:
        status = response.status
        if self.state is State.PROCEEDING:
            self._stop("Trying")
            if 100 <= status < 200:
                self._send_provisional(response)
                return True
            if 200 <= status < 300:
                self._send_final(response)
                self._set_state(State.ACCEPTED)
                self._start("L", now, self.config.timer_l)
                return True
            if 300 <= status <= 699:
                self._send_final(response)
                self._set_state(State.COMPLETED)
                self._start_retransmissions("G", now)
                self._start("H", now, self.config.timer_h)
                return True
        elif self.state is State.ACCEPTED and 200 <= status < 300:
            # RFC 6026 §8.7: 2xx retransmissions are the TU's; the transaction just sends them.
            self._send_final(response)
            return True
        return False

    def _send_trying(self) -> None:
        self._stop("Trying")
        trying = make_response(self.request, 100, "Trying")
        timestamp = self.request.headers.get("Timestamp")
        if timestamp is not None:  # §8.2.6.1: a 100 (Trying) echoes the Timestamp
            trying.headers.add("Timestamp", timestamp)
        self._send_provisional(trying)

    def _on_timer(self, name: str, now: float) -> None:
        if name == "Trying" and self.state is State.PROCEEDING:
            if self.last_provisional is None:
                self._send_trying()
        elif name == "G" and self.state is State.COMPLETED and self.last_response is not None:
            interval = min(2 * self._intervals["G"], self.config.t2)
            self._retransmit("G", self.last_response, now, interval)
        elif name == "H" and self.state is State.COMPLETED:
            self._time_out()
        elif name == "I" and self.state is State.CONFIRMED:
            self._terminate()
        elif name == "L" and self.state is State.ACCEPTED:
            self._terminate()


class NonInviteServerTransaction(ServerTransaction):
    """Non-INVITE server transaction (§17.2.2).

    Trying --1xx from TU--> Proceeding; final from TU --> Completed (Timer J = 64*T1, or
    Terminated at once if reliable). Request retransmissions: absorbed in "Trying", answered
    with the last provisional in "Proceeding" and with the final response in "Completed".
    """

    initial_state = State.TRYING

    def receive(self, request: Request, now: float) -> None:
        if self.state is State.PROCEEDING and self.last_provisional is not None:
            self._send(self.last_provisional)
        elif self.state is State.COMPLETED and self.last_response is not None:
            self._send(self.last_response)
        self._flush()

    def _respond(self, response: Response, now: float) -> bool:
        status = response.status
        if self.state in (State.TRYING, State.PROCEEDING):
            if 100 <= status < 200:
                self._send_provisional(response)
                self._set_state(State.PROCEEDING)
                return True
            if _is_final(status):
                self._send_final(response)
                self._complete(State.COMPLETED, "J", now, self.config.timer_j)
                return True
        return False

    def _on_timer(self, name: str, now: float) -> None:
        if name == "J" and self.state is State.COMPLETED:
            self._terminate()


def new_client_transaction(
    request: Request,
    *,
    reliable: bool,
    now: float,
    config: TimerConfig | None = None,
    destination: Any = None,
) -> ClientTransaction:
    """An INVITE or non-INVITE client transaction for ``request`` (ACK has none: §17.1)."""
    cls: type[ClientTransaction] = (
        InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
    )
    return cls(request, reliable=reliable, now=now, config=config, destination=destination)


def new_server_transaction(
    request: Request,
    *,
    reliable: bool,
    now: float,
    config: TimerConfig | None = None,
    destination: Any = None,
) -> ServerTransaction:
    """An INVITE or non-INVITE server transaction for ``request`` (never for an ACK)."""
    cls: type[ServerTransaction] = (
        InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
    )
    return cls(request, reliable=reliable, now=now, config=config, destination=destination)


# ----------------------------------------------------------------------------------- matching


def _client_key_for_request(request: Request) -> tuple[str, ...]:
    branch = request.top_via.branch
    if not branch:
        raise ValueError("a client request needs a branch parameter in its top Via")
    return (branch, request.method)


def _server_key_for_request(request: Request, method: str | None = None) -> tuple[str, ...]:
    """§17.2.3: branch + sent-by + method (ACK counts as INVITE; ``method`` overrides it, as
    §9.2 does for CANCEL) when the branch carries the magic cookie; otherwise the RFC 2543
    fallback: Request-URI, From tag, Call-ID, CSeq, top Via and (last) the To tag. An ACK's To
    tag is matched against the response instead."""
    via = request.top_via
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        port = "" if via.port is None else str(via.port)
        return ("3261", branch, via.host.lower(), port, method)
    return (*_rfc2543_key(request, method), _to_tag(request) or "")


def _rfc2543_key(request: Request, method: str) -> tuple[str, ...]:
    via = request.top_via
    via_params = ";".join(
        f"{name}={value}" if value is not None else name
        for name, value in sorted(via.params.items())
    )
    via_key = f"{via.transport.upper()} {via.host.lower()}:{via.port or ''};{via_params}"
    return (
        "2543",
        request.uri,
        request.from_addr.tag or "",
        request.call_id,
        str(request.cseq.seq),
        method,
        via_key,
    )


def _to_tag(message: Message) -> str | None:
    try:
        return message.to_addr.tag
    except (SipParseError, ValueError):
        return None


# -------------------------------------------------------------------------------------- layer


@dataclass(frozen=True)
class Outgoing:
    """A message to put on the wire; ``destination`` is the transaction's (the owner's) value."""

    message: Request | Response
    destination: Any
    transaction: Transaction | None


class TransactionLayer:
    """Routes messages to transactions (§17.1.3, §17.2.3), creates server transactions for new
    requests, and merges the output, events and timers of all live transactions."""

    def __init__(self, config: TimerConfig | None = None) -> None:
        self.config = config if config is not None else TimerConfig()
        self._clients: dict[tuple[str, ...], ClientTransaction] = {}
        self._servers: dict[tuple[str, ...], ServerTransaction] = {}
        self._outbox: list[Outgoing] = []
        self._events: deque[Event] = deque()

    # -- queries ------------------------------------------------------------------------------

    def client_transactions(self) -> list[ClientTransaction]:
        return list(self._clients.values())

    def server_transactions(self) -> list[ServerTransaction]:
        return list(self._servers.values())

    def get_timer(self) -> float | None:
        deadlines = [
            t
            for tx in (*self._clients.values(), *self._servers.values())
            if (t := tx.get_timer()) is not None
        ]
        return min(deadlines, default=None)

    def messages_to_send(self) -> list[Outgoing]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- inputs -------------------------------------------------------------------------------

    def send_request(
        self, request: Request, now: float, *, reliable: bool, destination: Any = None
    ) -> ClientTransaction:
        """Start a client transaction; its first transmission is queued at once.

        Raises ValueError for ACK (send it with ``send_stateless``), for a top Via without a
        branch, or for a branch+method already in use.
        """
        if request.method == "ACK":
            raise ValueError("ACK has no client transaction; use send_stateless()")
        key = _client_key_for_request(request)
        if key in self._clients:
            raise ValueError(f"a client transaction with key {key} already exists")
        tx = new_client_transaction(
            request, reliable=reliable, now=now, config=self.config, destination=destination
        )
        self._clients[key] = tx
        tx._sink = self._collect
        self._collect(tx)
        return tx

    def send_response(self, transaction: ServerTransaction, response: Response, now: float) -> bool:
        return transaction.send_response(response, now)

    def send_stateless(self, message: Request | Response, destination: Any) -> None:
        """Queue a message outside any transaction (ACK for a 2xx, late 2xx retransmissions)."""
        self._outbox.append(Outgoing(message, destination, None))

    def transport_error(self, transaction: Transaction, now: float) -> None:
        transaction.transport_error(now)

    def handle_timer(self, now: float) -> None:
        due = [
            (deadline, index, tx)
            for index, tx in enumerate((*self._clients.values(), *self._servers.values()))
            if (deadline := tx.get_timer()) is not None and deadline <= now
        ]
        for _, _, tx in sorted(due, key=lambda item: (item[0], item[1])):
            tx.handle_timer(now)

    def receive(
        self, message: Request | Response, now: float, *, reliable: bool, source: Any = None
    ) -> None:
        """Feed a parsed message from the transport. Messages that cannot be matched because of
        a malformed Via, CSeq, From, To or Call-ID are dropped (and logged)."""
        try:
            if isinstance(message, Response):
                self._receive_response(message, now)
            else:
                self._receive_request(message, now, reliable, source)
        except (SipParseError, ValueError) as exc:
            logger.info("dropping unmatchable message: %s", exc)

    def find_cancelled(self, cancel: Request) -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (§9.2: the §17.2.3 rules with the
        method taken as INVITE), or None (the TU then answers the CANCEL with 481)."""
        try:
            found = self._servers.get(_server_key_for_request(cancel, "INVITE"))
        except (SipParseError, ValueError):
            return None
        return found if isinstance(found, InviteServerTransaction) else None

    # -- internals ----------------------------------------------------------------------------

    def _receive_response(self, response: Response, now: float) -> None:
        key = (response.top_via.branch or "", response.cseq.method)
        tx = self._clients.get(key)
        if tx is None:
            logger.debug("stray %d response for %s", response.status, key)
            self._events.append(StrayResponse(response))
            return
        tx.receive(response, now)

    def _match_server(self, request: Request) -> tuple[tuple[str, ...], ServerTransaction | None]:
        key = _server_key_for_request(request)
        if request.method == "ACK" and key[0] == "2543":
            # RFC 2543 fallback for ACK: everything but the To tag as for the INVITE; the To tag
            # must equal the one of the response the server transaction sent.
            base, ack_tag = key[:-1], key[-1]
            for other_key, tx in self._servers.items():
                if other_key[:-1] == base and tx.last_response is not None:
                    if (_to_tag(tx.last_response) or "") == ack_tag:
                        return key, tx
            return key, None
        return key, self._servers.get(key)

    def _receive_request(self, request: Request, now: float, reliable: bool, source: Any) -> None:
        key, tx = self._match_server(request)
        if request.method == "ACK":
            if tx is None:
                self._events.append(AckReceived(None, request))
            else:
                tx.receive(request, now)
            return
        if tx is not None:
            tx.receive(request, now)
            return
        tx = new_server_transaction(
            request, reliable=reliable, now=now, config=self.config, destination=source
        )
        self._servers[key] = tx
        tx._sink = self._collect
        self._events.append(RequestReceived(tx, request))
        self._collect(tx)

    def _collect(self, tx: Transaction) -> None:
        for message in tx.messages_to_send():
            self._outbox.append(Outgoing(message, tx.destination, tx))
        while (event := tx.next_event()) is not None:
            self._events.append(event)
        if tx.state is State.TERMINATED:
            table: dict[tuple[str, ...], Any] = self._clients if tx.is_client else self._servers
            if table.get(tx.key) is tx:
                del table[tx.key]
            tx._sink = None
