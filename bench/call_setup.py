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

``--lab [PAIRS]`` (root; about 4 minutes for the three pairs with the default 5 runs, most
of it waiting for baresip calls that never get RTP) adds the ICE lab of
``tests/lab/conftest.py`` with Kamailio on its public net (``tests/lab/softphone_lab.py``):
for each NAT pairing (``eim/eim``, ``sym/sym``, ``eim/sym``) our ``softphone call`` ->
``softphone answer`` registered there, with STUN and TURN from the lab's coturn, then
baresip -> baresip (``medianat=ice``, STUN only: baresip's ICE module takes no TURN server,
so a symmetric NAT leaves it without a working pair). The wire times come from a packet
socket in each laptop's namespace (``--capture``, an internal mode of this script): the
INVITE leaving the caller's laptop, the 200 coming back, and the first RTP reaching each
laptop (unwrapped from TURN ChannelData or Data indications when relayed). A baresip call
counts when both ends logged incoming RTP within 15 s. ``ICE`` for ours is the caller's
``connect_ms``; baresip logs no times, so its ICE time shows in its first-RTP columns only.
"""

from __future__ import annotations

import argparse
import contextlib
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
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
ETH_P_ALL, ETH_P_IP = 0x0003, 0x0800
PACKET_OUTGOING = 4


# ---- capture ---------------------------------------------------------------------------------


@dataclass
class Datagram:
    t: float  # time.time() when captured
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


class LoopbackCapture:
    """Every UDP/IPv4 datagram on ``lo`` (or ``interface``) while running (a packet socket;
    needs root). ``sink``: also called with each datagram, from the capture thread."""

    def __init__(
        self, interface: str = "lo", sink: Callable[[Datagram], None] | None = None
    ) -> None:
        self.packets: list[Datagram] = []
        self._sink = sink
        # on lo every datagram passes twice (out and in): keep one; elsewhere keep both ways
        self._skip_outgoing = interface == "lo"
        # ETH_P_ALL: only such sockets see outgoing packets too
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        self._sock.bind((interface, ETH_P_ALL))
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
            if (
                (self._skip_outgoing and addr[2] == PACKET_OUTGOING)
                or len(data) < 28
                or data[9] != 17
            ):  # UDP only
                continue
            ihl = (data[0] & 0x0F) * 4
            udp = data[ihl : ihl + 8]
            if len(udp) < 8:
                continue
            src = (socket.inet_ntoa(data[12:16]), int.from_bytes(udp[0:2], "big"))
            dst = (socket.inet_ntoa(data[16:20]), int.from_bytes(udp[2:4], "big"))
            datagram = Datagram(now, src, dst, data[ihl + 8 :])
            if self._sink is not None:
                self._sink(datagram)
                continue
            with self._lock:
                self.packets.append(datagram)

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


# ---- the lab (--lab) ---------------------------------------------------------------------------

LAB_PAIRS = {
    "eim/eim": ("lan1a", "eim2l"),
    "sym/sym": ("sym1l", "sym2l"),
    "eim/sym": ("lan1a", "sym1l"),
}


def capture_to_file(interface: str, path: str) -> None:
    """``--capture IFACE --capture-file PATH``: run inside a lab namespace; one JSON line per
    UDP datagram (time, addresses, the first bytes, SIP start lines) until killed."""
    out = open(path, "a", buffering=1)  # lives until the process is killed

    def write(d: Datagram) -> None:
        text = d.payload[:1500].decode("latin-1")
        sip = text if text.startswith(("INVITE ", "SIP/2.0 ")) else ""
        out.write(json.dumps({"t": d.t, "src": d.src, "dst": d.dst, "head": d.payload[:64].hex(),
                              "n": len(d.payload), "sip": sip}) + "\n")  # fmt: skip

    LoopbackCapture(interface, sink=write).start()
    while True:
        time.sleep(3600)


def turn_data(message: bytes) -> bytes:
    """The DATA attribute (0x0013) of a STUN message (a TURN Data indication: what the relay
    received from the peer, RFC 8656 §11.6), as far as the captured bytes go; b"" if absent."""
    offset = 20
    while offset + 4 <= len(message):
        kind = int.from_bytes(message[offset : offset + 2], "big")
        length = int.from_bytes(message[offset + 2 : offset + 4], "big")
        if kind == 0x0013:
            return message[offset + 4 : offset + 4 + length]
        offset += 4 + (length + 3) // 4 * 4
    return b""


def read_capture(path: Path, since: float, until: float) -> list[Datagram]:
    packets = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if since <= r["t"] <= until:
            payload = r["sip"].encode("latin-1") if r["sip"] else bytes.fromhex(r["head"])
            if not r["sip"] and payload and 0x40 <= payload[0] <= 0x7F:
                payload = payload[4:]  # TURN ChannelData (RFC 8656 §12.4): what it carries
            elif not r["sip"] and payload[:2] == b"\x00\x17":
                payload = turn_data(payload)  # a TURN Data indication (RFC 8656 §11.6)
            payload += b"\0" * max(0, 12 - len(payload))  # is_rtp looks at 2 bytes and length
            packets.append(Datagram(r["t"], tuple(r["src"]), tuple(r["dst"]), payload))
    return packets


def lab_wire_times(
    caller: list[Datagram], callee: list[Datagram], caller_ip: str, callee_ip: str
) -> WireTimes:
    """Setup (first INVITE out of the caller's laptop to the 200 for it) and first RTP into
    each laptop (after NAT, addressed to the laptop itself), from the first INVITE."""
    invite = next((p for p in caller if p.payload.startswith(b"INVITE ")), None)
    if invite is None:
        return WireTimes()
    t0 = invite.t
    ok = next(
        (
            p for p in caller
            if p.t >= t0 and p.payload.startswith(b"SIP/2.0 200")
            and re.search(rb"^CSeq:\s*\d+ INVITE", p.payload, re.M | re.I)
        ),
        None,
    )  # fmt: skip

    def first_rtp(packets: list[Datagram], ip: str) -> float | None:
        for p in packets:
            if p.t >= t0 and p.dst[0] == ip and not p.payload[:1].isalpha() and is_rtp(p.payload):
                return (p.t - t0) * 1000
        return None

    return WireTimes(
        (ok.t - t0) * 1000 if ok else None,
        first_rtp(callee, callee_ip),
        first_rtp(caller, caller_ip),
    )


def run_lab_baresip(
    case: Case, runs: int, sl: Any, a: Any, b: Any, files: dict[str, Path], workdir: Path
) -> None:
    """baresip (``medianat=ice``, STUN from coturn) on laptop ``a`` dials baresip on ``b``
    through Kamailio; the call is hung up once RTP came in at both ends (or 15 s passed)."""
    from tests.peers.baresip import Baresip

    phones = []
    try:
        for laptop, user in ((a, "alice"), (b, "bob")):
            phone = Baresip(
                workdir / user, user=user, password=sl.kamailio.users[user],
                registrar=f"{sl.ice.coturn.host}:{sl.kamailio.port}", host=laptop.ip,
                netns=laptop.ns.name, medianat="ice", audio_codecs="PCMU/8000/1",
                stun_server=f"stun:{sl.ice.coturn.server()}",
            )  # fmt: skip
            phones.append(phone)
            phone.start(timeout=20)
        alice, bob = phones
        for _ in range(runs):
            marks = len(alice.log()), len(bob.log())
            since = time.time()
            alice.dial("sip:bob@example.org")
            try:
                alice.wait_for_log(r"Call established", timeout=15, start=marks[0])
                for phone, mark in zip(phones, marks, strict=True):
                    phone.wait_for_log(r"incoming rtp for 'audio' established", 15, mark)
                got_rtp = True
            except Exception:
                got_rtp = False
            alice.hangup()
            with contextlib.suppress(Exception):
                alice.wait_for_log(r"audio: destroyed", timeout=10, start=marks[0])
            time.sleep(0.3)
            wire = lab_wire_times(
                read_capture(files[a.name], since, time.time()),
                read_capture(files[b.name], since, time.time()),
                a.ip,
                b.ip,
            )
            if wire.setup_ms is None or not got_rtp:
                case.failures += 1
                continue
            case.samples.append(Sample(wire.setup_ms, None, wire.rtp_callee_ms, wire.rtp_caller_ms))
    finally:
        for phone in phones:
            phone.stop()


def run_lab(runs: int, pairs: Sequence[str], with_baresip: bool = True) -> list[Case]:
    """Our softphones (and baresips) through Kamailio + coturn across the lab's NAT routers."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.lab.conftest import build_ice_lab
    from tests.lab.softphone_lab import Softphone, SoftphoneLab, start_kamailio
    from tests.peers.netns import Lab, netns_available

    reason = netns_available()
    if reason:
        print(f"--lab: {reason}", file=sys.stderr)
        return []
    cases = []
    with tempfile.TemporaryDirectory(prefix="bench-call-setup-lab-") as tmp:
        workdir = Path(tmp)
        lab = Lab(workdir / "lab")
        try:
            ice = build_ice_lab(lab, workdir)
            kamailio = start_kamailio(ice, workdir / "kamailio")
            sl = SoftphoneLab(ice, kamailio)
            for name in pairs:
                a, b = LAB_PAIRS[name]
                case = Case(f"lab {name}: softphone ICE")
                cases.append(case)
                files = {}
                for laptop in (a, b):
                    files[laptop] = workdir / f"capture-{name.replace('/', '-')}-{laptop}.jsonl"
                    ice[laptop].ns.popen(
                        [sys.executable, "-u", "-m", "bench.call_setup", "--capture", "eth0",
                         "--capture-file", str(files[laptop])],
                        name="capture",
                    )  # fmt: skip
                time.sleep(0.5)
                answerer = Softphone(
                    sl, ice[b],
                    [*sl.common_args("bob"), "--codecs", "pcmu",
                     "answer", "--auto", "--count", str(runs), "--play", "tone:660",
                     "--record", "none"],
                    workdir / f"callee-{name.replace('/', '-')}.log",
                )  # fmt: skip
                try:
                    if not answerer.wait_for("waiting for calls", 40):
                        raise RuntimeError(f"callee did not register:\n{answerer.stderr}")
                    for i in range(runs):
                        since = time.time()
                        caller = Softphone(
                            sl, ice[a],
                            [*sl.common_args("alice"), "--codecs", "pcmu",
                             "call", "bob", "--play", "tone:440", "--record", "none",
                             "--duration", "1"],
                            workdir / f"caller-{name.replace('/', '-')}-{i}.log",
                        )  # fmt: skip
                        try:
                            status, report = caller.finish(60)
                        except AssertionError:
                            case.failures += 1
                            continue
                        finally:
                            caller.stop()
                        if status != 0:
                            case.failures += 1
                            continue
                        time.sleep(0.3)  # the capture files catch up
                        until = time.time()
                        wire = lab_wire_times(
                            read_capture(files[a], since, until),
                            read_capture(files[b], since, until),
                            ice[a].ip,
                            ice[b].ip,
                        )
                        ice_report = report.get("ice") or {}
                        case.samples.append(
                            Sample(wire.setup_ms, ice_report.get("connect_ms"),
                                   wire.rtp_callee_ms, wire.rtp_caller_ms)
                        )  # fmt: skip
                finally:
                    answerer.stop()
                try:
                    if with_baresip:
                        bcase = Case(f"lab {name}: baresip ICE")
                        cases.append(bcase)
                        run_lab_baresip(bcase, runs, sl, ice[a], ice[b], files, workdir / name)
                finally:
                    for laptop in (a, b):
                        ice[laptop].ns.stop_processes()
            kamailio.stop()
            ice.coturn.stop()
        finally:
            lab.cleanup()
    return cases


# ---- report ----------------------------------------------------------------------------------


def _stat(values: Sequence[float | None]) -> str:
    real = [v for v in values if v is not None]
    if not real:
        return "-"
    return f"{statistics.median(real):.0f} ({min(real):.0f}-{max(real):.0f})"


def print_table(cases: Sequence[Case], runs: int, wire: bool, where: str = "on 127.0.0.1") -> None:
    columns: list[tuple[str, Callable[[Sample], float | None]]] = [
        ("setup ms", lambda s: s.setup_ms),
        ("ICE ms", lambda s: s.ice_ms),
        ("RTP@callee ms", lambda s: s.rtp_callee_ms),
        ("RTP@caller ms", lambda s: s.rtp_caller_ms),
    ]
    print(f"call setup {where}, PCMU, median (min-max) of {runs} calls per case")
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
    parser.add_argument(
        "--lab",
        nargs="?",
        const=",".join(LAB_PAIRS),
        help="also run our calls in the NAT lab (root; about 20 s per pair with 5 runs): "
        f"comma-separated pairs out of {', '.join(LAB_PAIRS)} (default all)",
    )
    parser.add_argument("--lab-runs", type=int, default=5, help="calls per lab pair (default 5)")
    parser.add_argument("--capture", help=argparse.SUPPRESS)  # internal: lab capture process
    parser.add_argument("--capture-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.capture:
        capture_to_file(args.capture, args.capture_file)
        return 0
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
    if args.lab:
        lab_cases = run_lab(
            args.lab_runs, [p.strip() for p in args.lab.split(",")], not args.no_baresip
        )
        print()
        print_table(lab_cases, args.lab_runs, True, where="in the NAT lab (Kamailio + coturn)")
        cases += lab_cases
    # baresip is measured, not tested: only our own cases decide the exit status
    return 0 if all(c.samples for c in cases if "softphone" in c.name) else 1


if __name__ == "__main__":
    sys.exit(main())
