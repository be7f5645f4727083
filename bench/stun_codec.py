"""Benchmark: STUN encode / parse / parse + integrity + fingerprint, ours vs aioice.

Run: ``.venv/bin/python -m bench.stun_codec`` (or ``python bench/stun_codec.py``).
Messages are a typical ICE connectivity check (USERNAME, PRIORITY, ICE-CONTROLLING,
USE-CANDIDATE, MESSAGE-INTEGRITY, FINGERPRINT) and its success response (XOR-MAPPED-ADDRESS,
MESSAGE-INTEGRITY, FINGERPRINT).  Times are the best of several repeats, in µs per message.
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from collections.abc import Callable

if __package__ in (None, ""):  # allow ``python bench/stun_codec.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ice import stun

KEY = b"9uB6tLdWpMBW0AbUj3e1Vzj6"
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
USERNAME = "a9Qd:Kb3x"
ADDR = ("203.0.113.101", 40112)


def _time(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def _ours() -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    def build_request() -> bytes:
        m = stun.StunMessage(stun.StunMethod.BINDING, stun.StunClass.REQUEST, TID)
        m.add(stun.USERNAME, USERNAME)
        m.add(stun.PRIORITY, 1853817087)
        m.add(stun.ICE_CONTROLLING, 0x1234567890ABCDEF)
        m.add(stun.USE_CANDIDATE, True)
        return m.encode(KEY, fingerprint=True)

    def build_response() -> bytes:
        m = stun.StunMessage(stun.StunMethod.BINDING, stun.StunClass.SUCCESS, TID)
        m.add(stun.XOR_MAPPED_ADDRESS, ADDR)
        return m.encode(KEY, fingerprint=True)

    req, resp = build_request(), build_response()

    def parse_req() -> object:
        return stun.parse_message(req)

    def parse_resp() -> object:
        return stun.parse_message(resp)

    def verify_req() -> object:
        m = stun.parse_message(req)
        assert m.check_integrity(KEY)
        return m.get(stun.USERNAME)

    def verify_resp() -> object:
        m = stun.parse_message(resp)
        assert m.check_integrity(KEY)
        return m.get(stun.XOR_MAPPED_ADDRESS)

    return {
        "encode": (build_request, build_response),
        "parse": (parse_req, parse_resp),
        "parse+integrity+fingerprint": (verify_req, verify_resp),
    }


def _aioice() -> dict[str, tuple[Callable[[], object], Callable[[], object]]] | None:
    try:
        from aioice import stun as astun
    except ImportError:
        return None

    def build_request() -> bytes:
        m = astun.Message(astun.Method.BINDING, astun.Class.REQUEST, TID)
        m.attributes["USERNAME"] = USERNAME
        m.attributes["PRIORITY"] = 1853817087
        m.attributes["ICE-CONTROLLING"] = 0x1234567890ABCDEF
        m.attributes["USE-CANDIDATE"] = None
        m.add_message_integrity(KEY)
        return bytes(m)

    def build_response() -> bytes:
        m = astun.Message(astun.Method.BINDING, astun.Class.RESPONSE, TID)
        m.attributes["XOR-MAPPED-ADDRESS"] = ADDR
        m.add_message_integrity(KEY)
        return bytes(m)

    req, resp = build_request(), build_response()

    def parse_req() -> object:
        return astun.parse_message(req)

    def parse_resp() -> object:
        return astun.parse_message(resp)

    def verify_req() -> object:
        m = astun.parse_message(req)  # checks FINGERPRINT while parsing
        assert m.check_message_integrity(KEY)
        return m.attributes["USERNAME"]

    def verify_resp() -> object:
        m = astun.parse_message(resp)
        assert m.check_message_integrity(KEY)
        return m.attributes["XOR-MAPPED-ADDRESS"]

    return {
        "encode": (build_request, build_response),
        "parse": (parse_req, parse_resp),
        "parse+integrity+fingerprint": (verify_req, verify_resp),
    }


def _check_interop() -> None:
    """Each library must accept the other's messages (integrity and fingerprint included)."""
    try:
        from aioice import stun as astun
    except ImportError:
        return
    ours = _ours()
    for build in ours["encode"]:
        data = build()
        assert isinstance(data, bytes)
        assert astun.parse_message(data).check_message_integrity(KEY)
    theirs = _aioice()
    assert theirs is not None
    for build in theirs["encode"]:
        data = build()
        assert isinstance(data, bytes)
        assert stun.parse_message(data).check_integrity(KEY)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--number", type=int, default=20000, help="calls per repeat")
    parser.add_argument("-r", "--repeat", type=int, default=7, help="repeats (best is kept)")
    args = parser.parse_args(argv)

    _check_interop()
    ours = _ours()
    theirs = _aioice()
    print(
        f"STUN codec, µs per message (best of {args.repeat} x {args.number}), Python "
        f"{sys.version.split()[0]}"
    )
    header = f"{'operation':<30} {'message':<9} {'ours':>8} {'aioice':>8} {'speedup':>8}"
    print(header)
    print("-" * len(header))
    for op, (fn_req, fn_resp) in ours.items():
        for label, fn, index in (("request", fn_req, 0), ("response", fn_resp, 1)):
            # interleave the two libraries so load spikes hit both alike; keep the best
            t_ours = t_theirs = float("inf")
            for _ in range(args.repeat):
                t_ours = min(t_ours, _time(fn, args.number, 1))
                if theirs is not None:
                    t_theirs = min(t_theirs, _time(theirs[op][index], args.number, 1))
            if theirs is not None:
                print(
                    f"{op:<30} {label:<9} {t_ours:>8.2f} {t_theirs:>8.2f} "
                    f"{t_theirs / t_ours:>7.1f}x"
                )
            else:
                print(f"{op:<30} {label:<9} {t_ours:>8.2f} {'n/a':>8} {'':>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
