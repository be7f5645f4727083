"""SIP transaction timer values (RFC 3261 §17 and Table 4 of Appendix A, RFC 6026 §8).

``TimerConfig`` holds the three base values T1, T2 and T4 and derives every transaction timer
from them. Transactions and transaction users (dialog 2xx retransmission, Timer C) share it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TimerConfig"]


@dataclass(frozen=True)
class TimerConfig:
    """Base timer values; derived timers follow RFC 3261 Table 4 and RFC 6026 §8.

    ``t1`` is the RTT estimate (default 500 ms, §17.1.1.1), ``t2`` the maximum retransmit interval
    for non-INVITE requests and INVITE responses (4 s), ``t4`` the maximum time a message stays in
    the network (5 s). ``timer_d`` is the INVITE client's wait for response retransmissions on an
    unreliable transport, "at least 32 seconds" (§17.1.1.2). ``trying_delay`` is how long an
    INVITE server transaction waits for the TU before sending 100 Trying itself (§17.2.1, 200 ms);
    ``None`` disables the automatic 100.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    trying_delay: float | None = 0.2

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 > 0 and self.t4 > 0):
            raise ValueError("T1, T2 and T4 must be positive")
        if self.t2 < self.t1:
            raise ValueError("T2 must not be smaller than T1")
        if self.timer_d < 0:
            raise ValueError("Timer D must not be negative")
        if self.trying_delay is not None and self.trying_delay < 0:
            raise ValueError("trying_delay must not be negative")

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J (unreliable), L and M."""
        return 64 * self.t1

    @property
    def timer_b(self) -> float:
        """INVITE transaction timeout (§17.1.1.2)."""
        return self.timeout

    @property
    def timer_f(self) -> float:
        """Non-INVITE transaction timeout (§17.1.2.2)."""
        return self.timeout

    @property
    def timer_h(self) -> float:
        """Wait time for ACK receipt (§17.2.1)."""
        return self.timeout

    @property
    def timer_j(self) -> float:
        """Non-INVITE server wait for request retransmissions, unreliable transports (§17.2.2)."""
        return self.timeout

    @property
    def timer_l(self) -> float:
        """INVITE server wait in "Accepted" for INVITE retransmissions (RFC 6026 §8.7)."""
        return self.timeout

    @property
    def timer_m(self) -> float:
        """INVITE client wait in "Accepted" for 2xx retransmissions (RFC 6026 §8.4)."""
        return self.timeout

    @property
    def timer_i(self) -> float:
        """INVITE server wait for ACK retransmissions, unreliable transports (§17.2.1)."""
        return self.t4

    @property
    def timer_k(self) -> float:
        """Non-INVITE client wait for response retransmissions, unreliable transports."""
        return self.t4
