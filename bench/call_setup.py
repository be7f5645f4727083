"""Benchmark: how fast a call gets going, ours vs baresip, on 127.0.0.1.

Run: ``.venv/bin/python -m bench.call_setup [--runs 10]`` (about a minute with the default
10 runs per case; root gives the wire timings, see below).

Per call, measured on the wire where possible:

* ``setup``: from the first INVITE to its 200 OK (SIP only: the callee answers at once);
* ``ICE``: the caller's ICE connect time as our ``--json`` report gives it (``connect_ms``,
  from the start of the checks to the nominated pair; baresip never runs ICE on loopback,
  its ``ice`` module gathers on every interface of the machine);
* ``RTP@callee`` / ``RTP@caller``: from the first INVITE to the first RTP packet that
  reaches each end's media ports (the ports of its SDP: ``m=`` and candidates).

Wire timings come from a packet socket on ``lo`` (``AF_PACKET``, root only) that sees every
UDP datagram on the loopback: INVITE and 200 are found by their Call-ID, media ports in their
SDP, RTP by its first bytes (version 2 and not an RTCP packet type, RFC 5761 §4). Other
traffic on ``lo`` (other programs) is ignored by those ports. Without root only ``setup``
(our ``setup_ms``) and ``ICE`` are shown, for our calls.

Cases: our ``softphone call`` -> ``softphone answer --auto`` with ICE (the default) and with
``--no-ice``; baresip -> baresip (the test peer of ``tests/peers/baresip.py``, plain RTP).
Both use PCMU so that codec start-up is the same; each call lasts about 1 s. Median (and
min-max) of ``--runs`` calls per case.

The lab (NAT routers in namespaces) is not measured here: see ``tests/lab`` (its terminal
summary prints ICE connect times per NAT pairing) and ``tests/lab/test_baresip_lab.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4


# ---- capture ---------------------------------------------------------------------------------


@dataclass
class Datagram:
    t: float  # time.time() when captured
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


class LoopbackCapture:
    """Every UDP/IPv4 datagram on ``lo`` while running (a packet socket; needs root)."""

    def __init__(self) -> None:
        self.packets: list[Datagram] = []
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self._sock.bind(("lo", ETH_P_IP))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        return hasattr(socket, "AF_PACKET") and os.geteuid() == 0

    def start(self) -> LoopbackCapture:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.time()
            if addr[2] == PACKET_OUTGOING or len(data) < 28 or data[9] != 17:  # UDP only
                continue
            ihl = (data[0] & 0x0F) * 4
            udp = data[ihl : ihl + 8]
            if len(udp) < 8:
                continue
            src = (socket.inet_ntoa(data[12:16]), int.from_bytes(udp[0:2], "big"))
            dst = (socket.inet_ntoa(data[16:20]), int.from_bytes(udp[2:4], "big"))
            with self._lock:
                self.packets.append(Datagram(now, src, dst, data[ihl + 8 :]))

    def take(self) -> list[Datagram]:
        """The packets captured so far (and forget them)."""
        with self._lock:
            packets, self.packets = self.packets, []
        return packets


def is_rtp(payload: bytes) -> bool:
    """RTP, not RTCP/STUN (RFC 7983 first byte 128-191; RFC 5761 §4 RTCP types 192-223)."""
    return len(payload) >= 12 and payload[0] >> 6 == 2 and not 192 <= payload[1] <= 223


def _sdp_ports(message: str) -> set[int]:
    ports = {int(p) for p in re.findall(r"^m=audio (\d+)", message, re.M)}
    ports |= {int(p) for p in re.findall(r"^a=candidate:\S+ \d \S+ \d+ \S+ (\d+) ", message, re.M)}
    rtcp = re.search(r"^a=rtcp:(\d+)", message, re.M)
    if rtcp:
        ports.add(int(rtcp.group(1)))
    return ports


@dataclass
class WireTimes:
    setup_ms: float | None = None
    rtp_callee_ms: float | None = None
    rtp_caller_ms: float | None = None


def wire_times(packets: Sequence[Datagram], callee_sip_port: int) -> WireTimes:
    """Setup and first-RTP times of the call to ``callee_sip_port`` in ``packets``."""
    invite: Datagram | None = None
    ok: Datagram | None = None
    for p in packets:
        text = p.payload[:4000].decode("latin-1")
        if invite is None:
            if p.dst[1] == callee_sip_port and text.startswith("INVITE "):
                invite = p
            continue
        call_id = re.search(r"^Call-ID:\s*(\S+)", invite.payload.decode("latin-1"), re.M | re.I)
        if (
            p.src[1] == callee_sip_port
            and text.startswith("SIP/2.0 200")
            and re.search(r"^CSeq:\s*\d+ INVITE", text, re.M | re.I)
            and call_id is not None
            and call_id.group(1) in text
        ):
            ok = p
            break
    if invite is None:
        return WireTimes()
    t0 = invite.t
    result = WireTimes()
    if ok is None:
        return result
    result.setup_ms = (ok.t - t0) * 1000
    caller_ports = _sdp_ports(invite.payload.decode("latin-1"))
    callee_ports = _sdp_ports(ok.payload.decode("latin-1"))
    for p in packets:
        if p.t < t0 or not is_rtp(p.payload) or p.dst[0] != "127.0.0.1":
            continue
        if result.rtp_callee_ms is None and p.dst[1] in callee_ports:
            result.rtp_callee_ms = (p.t - t0) * 1000
        if result.rtp_caller_ms is None and p.dst[1] in caller_ports:
            result.rtp_caller_ms = (p.t - t0) * 1000
    return result


# ---- the cases -------------------------------------------------------------------------------


@dataclass
class Sample:
    setup_ms: float | None
    ice_ms: float | None
    rtp_callee_ms: float | None
    rtp_caller_ms: float | None


@dataclass
class Case:
    name: str
    samples: list[Sample] = field(default_factory=list)
    failures: int = 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def softphone_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "softphone", *args]


def run_softphone(
    case: Case, runs: int, extra: Sequence[str], capture: LoopbackCapture | None
) -> None:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    answerer = subprocess.Popen(
        softphone_argv(
            "--bind", f"127.0.0.1:{port}", "--codecs", "pcmu", *extra,
            "answer", "--auto", "--count", str(runs), "--play", "tone:660", "--record", "none",
        ),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=env, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        _wait_for_line(answerer, "waiting for calls", 30)
        for _ in range(runs):
            if capture is not None:
                capture.take()
            res = subprocess.run(
                softphone_argv(
                    "--json", "--bind", "127.0.0.1:0", "--codecs", "pcmu", *extra,
                    "call", f"sip:bob@127.0.0.1:{port}",
                    "--play", "tone:440", "--record", "none", "--duration", "1",
                ),
                capture_output=True, text=True, timeout=60, env=env, cwd=REPO_ROOT,
            )  # fmt: skip
            if res.returncode != 0 or not res.stdout.strip():
                case.failures += 1
                continue
            report = json.loads(res.stdout)
            ice = report.get("ice") or {}
            wire = wire_times(capture.take(), port) if capture is not None else WireTimes()
            setup = wire.setup_ms if wire.setup_ms is not None else report["call"]["setup_ms"]
            case.samples.append(
                Sample(setup, ice.get("connect_ms"), wire.rtp_callee_ms, wire.rtp_caller_ms)
            )
    finally:
        if answerer.poll() is None:
            answerer.terminate()
            try:
                answerer.wait(10)
            except subprocess.TimeoutExpired:
                answerer.kill()
                answerer.wait()


def _wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float) -> None:
    assert proc.stderr is not None
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if text in line:
                found.set()
        found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout) or proc.poll() is not None:
        raise RuntimeError(f"softphone answer did not start:\n{''.join(lines)}")


def run_baresip(case: Case, runs: int, capture: LoopbackCapture | None) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from tests.peers.baresip import Baresip, baresip_binary

    if baresip_binary() is None:
        print("baresip not installed: its case is skipped", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory(prefix="bench-call-setup-") as tmp:
        codecs = "PCMU/8000/1"
        alice = Baresip(Path(tmp) / "alice", user="alice", audio_codecs=codecs)
        bob = Baresip(Path(tmp) / "bob", user="bob", audio_codecs=codecs)
        with alice, bob:
            for _ in range(runs):
                if capture is not None:
                    capture.take()
                mark = len(alice.log())
                alice.dial(bob.contact_uri)
                try:
                    alice.wait_for_log(r"Call established", timeout=10, start=mark)
                    time.sleep(1.0)
                    alice.hangup()
                    alice.wait_for_log(r"audio: destroyed", timeout=10, start=mark)
                except Exception:
                    case.failures += 1
                    continue
                wire = wire_times(capture.take(), bob.port) if capture is not None else WireTimes()
                # without root there is no wire view of baresip: the call counts, no times
                case.samples.append(
                    Sample(wire.setup_ms, None, wire.rtp_callee_ms, wire.rtp_caller_ms)
                )


# ---- report ----------------------------------------------------------------------------------


def _stat(values: Sequence[float | None]) -> str:
    real = [v for v in values if v is not None]
    if not real:
        return "-"
    return f"{statistics.median(real):.0f} ({min(real):.0f}-{max(real):.0f})"


def print_table(cases: Sequence[Case], runs: int, wire: bool) -> None:
    columns: list[tuple[str, Callable[[Sample], float | None]]] = [
        ("setup ms", lambda s: s.setup_ms),
        ("ICE ms", lambda s: s.ice_ms),
        ("RTP@callee ms", lambda s: s.rtp_callee_ms),
        ("RTP@caller ms", lambda s: s.rtp_caller_ms),
    ]
    print(f"call setup on 127.0.0.1, PCMU, median (min-max) of {runs} calls per case")
    head = f"{'case':<30}" + "".join(f"{name:>18}" for name, _ in columns) + f"{'ok':>7}"
    print(head)
    print("-" * len(head))
    for case in cases:
        cells = "".join(f"{_stat([get(s) for s in case.samples]):>18}" for _, get in columns)
        ok = f"{len(case.samples)}/{len(case.samples) + case.failures}"
        print(f"{case.name:<30}{cells}{ok:>7}")
    if not wire:
        print("(not root: no packet capture; setup is our setup_ms, RTP columns empty)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="calls per case (default 10)")
    parser.add_argument("--no-baresip", action="store_true", help="skip baresip -> baresip")
    args = parser.parse_args(argv)
    capture = LoopbackCapture().start() if LoopbackCapture.available() else None
    cases = [Case("softphone -> softphone, ICE"), Case("softphone -> softphone, no ICE")]
    try:
        run_softphone(cases[0], args.runs, [], capture)
        run_softphone(cases[1], args.runs, ["--no-ice"], capture)
        if not args.no_baresip:
            cases.append(Case("baresip -> baresip, no ICE"))
            run_baresip(cases[-1], args.runs, capture)
    finally:
        if capture is not None:
            capture.stop()
    print_table(cases, args.runs, capture is not None)
    return 0 if all(c.samples for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
