"""Free loopback ports for the peers the tests start.

Ports are drawn at random below the kernel's ephemeral range (32768-60999 on Linux), so a
client socket bound to port 0 can never steal a port between our probe and the peer's bind.
Ports already handed out in this process are never handed out again.
"""

from __future__ import annotations

import random
import socket
import threading

LOW = 20000
HIGH = 32000  # exclusive; the ephemeral range starts at 32768
# Single ports and short runs (a SIP port, coturn's listening pair, sipp's media ports) come from
# [LOW, RANGES_LOW), long ranges (coturn's relay ports ...) from [RANGES_LOW, HIGH): short
# runs handed out at random would otherwise fragment the space until no long range is left
# (seen: "no 200 free consecutive ports" late in a full run).
RANGES_LOW = 26000
SHORT_RUN = 8  # at most this many ports: from the single-port area

_lock = threading.Lock()
_handed_out: set[int] = set()


def _can_bind(host: str, port: int, kind: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def is_free(port: int, host: str = "127.0.0.1", udp: bool = True, tcp: bool = True) -> bool:
    """True when ``port`` can be bound on ``host`` for every requested protocol."""
    if udp and not _can_bind(host, port, socket.SOCK_DGRAM):
        return False
    return not (tcp and not _can_bind(host, port, socket.SOCK_STREAM))


def free_port(host: str = "127.0.0.1", udp: bool = True, tcp: bool = True) -> int:
    """A port free for UDP and/or TCP on ``host`` (SIP wants the same number for both)."""
    return free_port_range(1, host=host, udp=udp, tcp=tcp)


def free_port_range(
    count: int, host: str = "127.0.0.1", udp: bool = True, tcp: bool = False, step: int = 1
) -> int:
    """First port of ``count`` consecutive free ports (every ``step``-th port is checked)."""
    rng = random.Random()
    low, high = (LOW, RANGES_LOW) if count * step <= SHORT_RUN else (RANGES_LOW, HIGH)
    with _lock:
        for _ in range(500):
            base = rng.randrange(low, high - count * step)
            ports = [base + i * step for i in range(count)]
            if any(p in _handed_out for p in range(base, base + count * step)):
                continue
            if all(is_free(p, host, udp, tcp) for p in ports):
                _handed_out.update(range(base, base + count * step))
                return base
    raise RuntimeError(f"no {count} free consecutive ports on {host}")


def release_port_range(base: int, count: int, step: int = 1) -> None:
    """Give back a range from :func:`free_port_range` once its peer has stopped, so that a long
    run starting many peers with large ranges (coturn's relay ports) does not run out."""
    with _lock:
        _handed_out.difference_update(range(base, base + count * step))
