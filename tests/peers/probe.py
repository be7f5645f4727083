"""Readiness probes runnable inside a network namespace: ``python -m tests.peers.probe``.

    probe tcp HOST PORT
    probe stun HOST PORT
    probe sip-options HOST PORT URI      (UDP)
    probe dns HOST PORT NAME             (any answer, even NXDOMAIN, counts)

Exit status 0 when the peer answered.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.peers.process import tcp_accepts
from tests.peers.rawsip import SipClient, options
from tests.peers.stunprobe import stun_binding

REPO_ROOT = Path(__file__).resolve().parents[2]


def probe(kind: str, host: str, port: int, *rest: str) -> bool:
    try:
        if kind == "tcp":
            return tcp_accepts(host, port)
        if kind == "stun":
            return stun_binding(host, port, timeout=0.5).is_success
        if kind == "dns":
            return _dns_answers(host, port, rest[0])
        if kind == "sip-options":
            with SipClient(host, port, "udp", timeout=0.5, bind_host="0.0.0.0") as c:
                return options(c, rest[0]).status == 200
    except (OSError, TimeoutError, ValueError):
        return False
    raise ValueError(f"unknown probe {kind}")


def _dns_answers(host: str, port: int, name: str) -> bool:
    import dns.exception
    import dns.message
    import dns.query

    query = dns.message.make_query(name, "A")
    try:
        dns.query.udp(query, host, port=port, timeout=0.5)
    except dns.exception.DNSException:
        return False
    return True


def probe_in_netns(netns: str | None, kind: str, host: str, port: int, *rest: str) -> bool:
    """Run :func:`probe` here (``netns`` None) or in namespace ``netns`` via ``ip netns exec``."""
    if netns is None:
        return probe(kind, host, port, *rest)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.peers.probe"]
    argv += [kind, host, str(port), *rest]
    try:
        res = subprocess.run(argv, env=env, capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return res.returncode == 0


def main(argv: list[str]) -> int:
    kind, host, port, *rest = argv
    return 0 if probe(kind, host, int(port), *rest) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
