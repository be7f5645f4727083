"""Sans-I/O STUN client transactions (RFC 8489 §6.2.1, §6.2.2, §6.3.3, §6.3.4).

Over an unreliable transport the request is sent at 0, RTO, 3 RTO, 7 RTO ... (the interval doubles
after every retransmission), ``rc`` times in all; after the last send the client waits ``rm``
times the initial RTO and then times out.  With the defaults (RTO 500 ms, Rc 7, Rm 16) the
sends happen at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s and the timeout at 39.5 s.  Over a
reliable transport the request is sent once and the transaction times out after Ti (39.5 s).

ICE computes its own RTO from Ta and the number of pairs (RFC 8445 §14.3) and passes it in.

The transaction never touches a socket or a clock::

    tx = StunClientTransaction(request_bytes, now)
    send(tx.datagrams_to_send())
    ...  # on timer: tx.handle_timer(now); on datagram: tx.receive(parse_message(data), now)
    if tx.done: tx.result  # StunTransactionSucceeded | StunTransactionFailed | ..TimedOut
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from ice.stun import ERROR_CODE, ErrorCode, StunClass, StunMessage, StunParseError, parse_message

__all__ = [
    "DEFAULT_RC",
    "DEFAULT_RM",
    "DEFAULT_RTO",
    "DEFAULT_TI",
    "RtoEstimator",
    "StunClientTransaction",
    "StunTransactionFailed",
    "StunTransactionResult",
    "StunTransactionSucceeded",
    "StunTransactionTimedOut",
]

logger = logging.getLogger("ice.stun")

DEFAULT_RTO = 0.5  # RFC 8489 §6.2.1: SHOULD be greater than or equal to 500 ms
DEFAULT_RC = 7
DEFAULT_RM = 16
DEFAULT_TI = 39.5  # RFC 8489 §6.2.2


@dataclass(frozen=True, slots=True)
class StunTransactionSucceeded:
    """A success response arrived.

    ``rtt`` is the round-trip time, measured only when the request was not retransmitted
    (Karn's algorithm); otherwise None.
    """

    response: StunMessage
    rtt: float | None


@dataclass(frozen=True, slots=True)
class StunTransactionFailed:
    """An error response arrived, or a response the client must treat as failure.

    ``error`` is the ERROR-CODE (None when the response had none or was unusable, e.g. a
    success response with unknown comprehension-required attributes; RFC 8489 §6.3.3).
    """

    response: StunMessage
    error: ErrorCode | None
    reason: str


@dataclass(frozen=True, slots=True)
class StunTransactionTimedOut:
    """No response within the retransmission schedule (``attempts`` sends were made)."""

    attempts: int


StunTransactionResult = StunTransactionSucceeded | StunTransactionFailed | StunTransactionTimedOut


class StunClientTransaction:
    """One STUN request and its retransmissions, matched to its response by transaction id.

    ``request`` is an already-encoded request (with integrity and fingerprint as required) or a
    :class:`StunMessage`, which is encoded as is.  ``integrity_key`` makes the transaction
    discard responses whose MESSAGE-INTEGRITY(-SHA256) is absent or wrong, as if they never
    arrived (RFC 8489 §9.1.4, §9.2.5), except error responses whose code is in
    ``unauthenticated_errors`` and that carry no integrity at all (401 and 438 challenges of
    the long-term mechanism; pass ``()`` for ICE's short-term checks).  ``message``: the
    :class:`StunMessage` the encoded ``request`` was made from (it is then not parsed back;
    its transaction id must be the encoding's).
    """

    def __init__(
        self,
        request: StunMessage | bytes,
        now: float,
        *,
        rto: float = DEFAULT_RTO,
        rc: int = DEFAULT_RC,
        rm: int = DEFAULT_RM,
        reliable: bool = False,
        ti: float = DEFAULT_TI,
        max_rto: float | None = None,
        integrity_key: bytes | None = None,
        unauthenticated_errors: Collection[int] = (401, 438),
        message: StunMessage | None = None,
    ) -> None:
        if rto <= 0 or rc < 1 or rm < 0 or ti <= 0:
            raise ValueError("rto and ti must be positive, rc >= 1, rm >= 0")
        if isinstance(request, StunMessage):
            message = request
            data = request.encode()
        elif message is not None:
            # the caller built ``request`` from ``message``: no need to parse it back
            if message.transaction_id != bytes(request[8:20]):
                raise ValueError("the message is not the one the request was encoded from")
            data = bytes(request)
        else:
            data = bytes(request)
            try:
                message = parse_message(data, check_fingerprint=False)
            except StunParseError as exc:
                raise ValueError(f"not a STUN request: {exc}") from exc
        if message.cls != StunClass.REQUEST:
            raise ValueError("a client transaction carries a request")
        self.request = message
        self.transaction_id = message.transaction_id
        self.reliable = reliable
        self._data = data
        self._rto = rto
        self._interval = rto
        self._rc = 1 if reliable else rc
        self._rm = rm
        self._max_rto = max_rto
        self._integrity_key = integrity_key
        self._unauthenticated_errors = frozenset(unauthenticated_errors)
        self._started = now
        self._attempts = 0
        self._outbox: list[bytes] = []
        self._timer: float | None = None
        self._result: StunTransactionResult | None = None
        self._event_pending = False
        self._send(now)
        if reliable:
            self._timer = now + ti
        else:
            self._schedule_after_send(now)

    # -- state ------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the transaction has a result or was cancelled."""
        return self._timer is None

    @property
    def result(self) -> StunTransactionResult | None:
        """The outcome, or None while the transaction is running (or after cancel())."""
        return self._result

    @property
    def attempts(self) -> int:
        """How many times the request has been sent."""
        return self._attempts

    def next_event(self) -> StunTransactionResult | None:
        """The result, returned once when it becomes available, else None."""
        if self._event_pending:
            self._event_pending = False
            return self._result
        return None

    def cancel(self) -> None:
        """Stop retransmitting; no result will be produced."""
        self._timer = None
        self._outbox.clear()

    # -- I/O --------------------------------------------------------------------------------

    def datagrams_to_send(self, now: float | None = None) -> list[bytes]:
        """Datagrams (the request, or a retransmission of it) to send now.

        ``now`` is accepted for symmetry with the other sans-I/O machines and not needed.
        """
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called; None when done."""
        return self._timer

    def handle_timer(self, now: float) -> None:
        """Retransmit or time out if the timer has expired."""
        timer = self._timer
        if timer is None or now < timer:
            return
        if self._attempts < self._rc:
            self._send(now)
            # schedule from the later of the due time and now: no drift, no bursts when late
            self._schedule_after_send(max(timer, now))
        else:
            logger.debug(
                "STUN transaction %s timed out after %d attempts",
                self.transaction_id.hex(),
                self._attempts,
            )
            self._finish(StunTransactionTimedOut(self._attempts))

    def matches(self, message: StunMessage) -> bool:
        """Is ``message`` a response to this request (same transaction id, RFC 8489 §6.3)?"""
        return (
            message.transaction_id == self.transaction_id
            and message.cls in (StunClass.SUCCESS, StunClass.ERROR)
            and message.method == self.request.method
        )

    def receive(self, message: StunMessage, now: float) -> bool:
        """Offer a received message; True if it belongs to this transaction.

        A matching response completes the transaction unless it fails authentication, in
        which case it is dropped as if never received.  Late duplicates are absorbed.
        """
        if not self.matches(message):
            return False
        if self.done:
            return True
        if self._integrity_key is not None and not self._authentic(message):
            logger.debug("STUN response %s failed integrity; ignored", message.transaction_id.hex())
            return True
        unknown = message.unknown_comprehension_required()
        if message.cls == StunClass.SUCCESS:
            if unknown:
                # RFC 8489 §6.3.3: the transaction is considered to have failed
                self._finish(StunTransactionFailed(message, None, _unknown_reason(unknown)))
            else:
                rtt = now - self._started if self._attempts == 1 else None
                self._finish(StunTransactionSucceeded(message, rtt))
            return True
        # error response (RFC 8489 §6.3.4)
        try:
            error = message.get(ERROR_CODE)
        except StunParseError:
            error = None
        if error is None:
            self._finish(StunTransactionFailed(message, None, "error response without ERROR-CODE"))
        elif unknown:
            self._finish(StunTransactionFailed(message, error, _unknown_reason(unknown)))
        else:
            self._finish(StunTransactionFailed(message, error, f"{error.code} {error.reason}"))
        return True

    # -- internals --------------------------------------------------------------------------

    def _authentic(self, message: StunMessage) -> bool:
        key = self._integrity_key
        assert key is not None
        if message.has_integrity:
            return message.check_integrity(key)
        if message.cls == StunClass.ERROR:
            error = message.error_code
            return error is not None and error.code in self._unauthenticated_errors
        return False

    def _send(self, now: float) -> None:
        self._attempts += 1
        self._outbox.append(self._data)
        if self._attempts > 1:
            logger.debug(
                "STUN retransmission #%d of %s", self._attempts - 1, self.transaction_id.hex()
            )

    def _schedule_after_send(self, sent_at: float) -> None:
        if self._attempts < self._rc:
            self._timer = sent_at + self._interval
            self._interval *= 2
            if self._max_rto is not None:
                self._interval = min(self._interval, self._max_rto)
        else:
            self._timer = sent_at + self._rm * self._rto

    def _finish(self, result: StunTransactionResult) -> None:
        self._result = result
        self._event_pending = True
        self._timer = None
        self._outbox.clear()


def _unknown_reason(types: list[int]) -> str:
    return "unknown comprehension-required attributes " + ", ".join(f"{t:#06x}" for t in types)


class RtoEstimator:
    """The RTO cached per server between transactions (RFC 8489 §6.2.1, RFC 6298 §2).

    Feed it every finished transaction with :meth:`observe`; ask :meth:`rto` for the value to
    start the next transaction to the same server with.  Only unambiguous samples count (Karn:
    ``rtt`` is None after a retransmission); a timeout or ten idle minutes drop the estimate.
    """

    STALE_AFTER = 600.0  # RFC 8489 §6.2.1: stale if no transaction for 10 minutes

    def __init__(
        self, initial: float = DEFAULT_RTO, *, minimum: float = 0.2, maximum: float = 3.0
    ) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError("need 0 < minimum <= maximum")
        self.initial = initial
        self.minimum = minimum
        self.maximum = maximum
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._last_used: float | None = None

    def rto(self, now: float) -> float:
        """The RTO for a new transaction started at ``now``."""
        if (
            self._srtt is None
            or self._last_used is None
            or now - self._last_used > self.STALE_AFTER
        ):
            self._srtt = None
            return self.initial
        value = self._srtt + max(0.01, 4 * self._rttvar)
        return min(self.maximum, max(self.minimum, value))

    def add_sample(self, rtt: float, now: float) -> None:
        """Update SRTT/RTTVAR with one round-trip measurement (RFC 6298 §2.2, §2.3)."""
        if rtt < 0:
            raise ValueError("negative RTT")
        if self._srtt is None:
            self._srtt = rtt
            self._rttvar = rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self._last_used = now

    def observe(self, result: StunTransactionResult, now: float) -> None:
        """Learn from a finished transaction (any response proves the path round trip)."""
        if isinstance(result, StunTransactionTimedOut):
            self._srtt = None
            self._last_used = now
        elif isinstance(result, StunTransactionSucceeded) and result.rtt is not None:
            self.add_sample(result.rtt, now)
        else:
            self._last_used = now
