"""Consent freshness (RFC 7675) for one selected candidate pair: when to check, when it expires.

The agent sends a Binding request on the selected pair every ``interval`` seconds randomized by
a factor in [0.8, 1.2] (RFC 7675 §5.1: 5 s by default) with a fresh transaction ID each time
(the agent retransmits it a few times within the interval), and every authenticated success
response from the pair's remote address refreshes consent.  Without
such a response for ``timeout`` seconds (30 s, §5.1) consent is lost: the agent stops sending on
the pair.  The same checks are the keepalives of RFC 8445 §11 (sent far more often than 15 s).

This object only keeps the schedule; the agent builds, sends and authenticates the requests::

    consent = ConsentFreshness(now)              # at selection: the check's success is consent
    if consent.due(now): tid = send_request(); consent.sent(tid, now)
    consent.response(tid, now)                   # authenticated success response arrived
    consent.expired(now)                         # -> True once 30 s have passed without
"""

from __future__ import annotations

import random

__all__ = [
    "CONSENT_INTERVAL",
    "CONSENT_TIMEOUT",
    "ConsentFreshness",
]

CONSENT_INTERVAL = 5.0  # RFC 7675 §5.1
CONSENT_TIMEOUT = 30.0  # RFC 7675 §5.1
_REQUEST_WINDOW = CONSENT_TIMEOUT  # responses to older requests are no longer awaited


class ConsentFreshness:
    """The consent state of one 5-tuple (RFC 7675 §5.1)."""

    def __init__(
        self,
        now: float,
        *,
        interval: float = CONSENT_INTERVAL,
        timeout: float = CONSENT_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("interval and timeout must be positive")
        self.interval = interval
        self.timeout = timeout
        self._rng = rng if rng is not None else random.Random()
        self.last_consent = now
        self.lost = False
        self.requests_sent = 0
        self.responses = 0
        self._outstanding: dict[bytes, float] = {}
        self._next = now + self._jittered()

    def _jittered(self) -> float:
        return self.interval * self._rng.uniform(0.8, 1.2)

    # -- schedule -----------------------------------------------------------------------------

    @property
    def next_check(self) -> float:
        """When the next consent request is due."""
        return self._next

    def get_timer(self) -> float | None:
        """The earlier of the next request and the expiry; None once consent is lost."""
        if self.lost:
            return None
        return min(self._next, self.last_consent + self.timeout)

    def due(self, now: float) -> bool:
        """Is a consent request due at ``now``?"""
        return not self.lost and now >= self._next

    def sent(self, transaction_id: bytes, now: float) -> None:
        """A consent request with ``transaction_id`` went out at ``now``."""
        self.requests_sent += 1
        self._outstanding[transaction_id] = now
        for tid, at in list(self._outstanding.items()):
            if now - at > _REQUEST_WINDOW:
                del self._outstanding[tid]
        self._next = now + self._jittered()

    def postpone(self, now: float) -> None:
        """No request could be sent now (e.g. no credentials yet): try one interval later."""
        self._next = now + self._jittered()

    def is_outstanding(self, transaction_id: bytes) -> bool:
        return transaction_id in self._outstanding

    def response(self, transaction_id: bytes, now: float) -> bool:
        """An authenticated success response to ``transaction_id`` arrived; True if it was
        one of ours and refreshed consent."""
        if self.lost or self._outstanding.pop(transaction_id, None) is None:
            return False
        self.responses += 1
        self.last_consent = max(self.last_consent, now)
        return True

    def refresh(self, now: float) -> None:
        """Treat ``now`` as a moment of consent (e.g. a new check on the pair succeeded)."""
        if not self.lost:
            self.last_consent = max(self.last_consent, now)

    def expired(self, now: float) -> bool:
        """True (and stays True) once ``timeout`` has passed since the last consent."""
        if not self.lost and now >= self.last_consent + self.timeout:
            self.lost = True
            self._outstanding.clear()
        return self.lost
