"""Interop with baresip (Debian ``baresip`` 1.0) on 127.0.0.1, both directions.

Our ``softphone call`` dials a :class:`tests.peers.baresip.Baresip` that auto-answers and
sends its 440 Hz sine, and a baresip dials our ``softphone answer --auto``; we send a
1000 Hz tone. Both ends record (ours with ``--record``, baresip's ``sndfile`` dumps) and
each recording must hold the other end's tone (dominant frequency). Cases: PCMU and Opus
(if baresip's opus module is installed), and our side with ICE (the default) and without
(``--no-ice``).

On loopback baresip never runs its ``ice`` module: it gathers candidates on every interface
of the machine, which would send STUN off the loopback (the Baresip class refuses it), so an
ICE offer from us meets a peer without ICE and media goes to its ``c=``/``m=`` address
(RFC 8445 §5.4 fallback). ICE with baresip is covered by ``tests/lab/test_baresip_lab.py``.

What baresip negotiated (rtcp-mux, ICE, codec) is read from its SDP in our ``--trace``
output and printed (``pytest -rP`` shows it).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from media.analysis import dominant_frequency
from media.sources import load_wav
from tests.peers.baresip import Baresip
from tests.peers.ports import free_port

BARESIP_TONE = 440.0  # the Baresip peer's ``ausine,440`` source
OUR_TONE = 1000.0
MODULES = Path("/usr/lib/baresip/modules")
# our --codecs name -> (baresip audio_codecs, the codec our JSON report names)
CODECS = {
    "pcmu": ("PCMU/8000/1", "PCMU/8000"),
    "opus": ("opus/48000/2", "opus/48000/2"),
}
ICE_MODES = {"ice": [], "no-ice": ["--no-ice"]}


def _codec_available(codec: str) -> bool:
    module = {"pcmu": "g711.so", "opus": "opus.so"}[codec]
    return (MODULES / module).exists()


CODEC_PARAMS = [
    pytest.param(
        c,
        marks=pytest.mark.skipif(
            not _codec_available(c), reason=f"baresip has no {c} module in {MODULES}"
        ),
    )
    for c in CODECS
]


def softphone(*args: str) -> list[str]:
    return [sys.executable, "-m", "softphone", *args]


def dominant(path: Path) -> float:
    samples, rate = load_wav(path)
    assert len(samples) > rate // 2, f"{path} holds only {len(samples)} samples"
    return dominant_frequency(samples[rate // 5 :], rate)  # skip start-up (200 ms)


def baresip_heard(phone: Baresip) -> float:
    """Dominant frequency of what baresip decoded in its (last) call."""
    phone.wait_for_log(r"audio: destroyed", timeout=10)  # the dump file is closed
    dumps = sorted(phone.workdir.glob("dump-*-dec.wav"))
    assert dumps, "baresip dumped no received audio:\n" + phone.log()[-3000:]
    return dominant(dumps[-1])


# ---- what the SDP said ------------------------------------------------------------------

_TRACE_HEADER = re.compile(r"^\S+ \S+ sip\.trace \w+ (send|recv) ")
_OTHER_LINE = re.compile(r"^(\d{4}-\d\d-\d\d |\[\s*[\d.]+s\]|\{)")


def traced_messages(stderr: str) -> list[tuple[str, str]]:
    """(direction, text) of every SIP message in ``--trace`` output (logger ``sip.trace``)."""
    messages: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in stderr.splitlines():
        header = _TRACE_HEADER.match(line)
        if header:
            current = []
            messages.append((header.group(1), current))
        elif _OTHER_LINE.match(line):
            current = None
        elif current is not None:
            current.append(line)
    return [(d, "\n".join(lines)) for d, lines in messages]


@dataclass
class Negotiated:
    """What one SDP (baresip's) carried."""

    ice: bool
    rtcp_mux: bool
    codecs: list[str]
    rtcp: str | None

    @classmethod
    def from_sdp(cls, sdp: str) -> Negotiated:
        rtpmap = re.findall(r"^a=rtpmap:\d+ (\S+)", sdp, re.M)
        rtcp = re.search(r"^a=rtcp:(.*)$", sdp, re.M)
        return cls(
            ice="a=ice-ufrag:" in sdp,
            rtcp_mux=re.search(r"^a=rtcp-mux\s*$", sdp, re.M) is not None,
            codecs=rtpmap,
            rtcp=rtcp.group(1).strip() if rtcp else None,
        )


def baresip_sdp(stderr: str) -> Negotiated:
    """baresip's SDP: the body of a received message that carries one."""
    for direction, text in traced_messages(stderr):
        if direction == "recv" and "\nv=0" in text:
            return Negotiated.from_sdp(text[text.index("\nv=0") :])
    raise AssertionError("no SDP from baresip in the trace")


def our_sdp(stderr: str) -> Negotiated:
    for direction, text in traced_messages(stderr):
        if direction == "send" and "\nv=0" in text:
            return Negotiated.from_sdp(text[text.index("\nv=0") :])
    raise AssertionError("no SDP of ours in the trace")


def describe(case: str, report: dict[str, Any], theirs: Negotiated, ours: Negotiated) -> str:
    return (
        f"baresip interop {case}: codec {report['rtp']['codec']}; "
        f"baresip SDP: ICE {'yes' if theirs.ice else 'no'}, "
        f"rtcp-mux {'yes' if theirs.rtcp_mux else 'no'}, a=rtcp {theirs.rtcp}, "
        f"codecs {theirs.codecs}; ours: ICE {'yes' if ours.ice else 'no'}, "
        f"rtcp-mux {'yes' if ours.rtcp_mux else 'no'}; "
        f"selected ICE pair {report['ice'] and report['ice']['selected']}; "
        f"sent {report['rtp']['sent']} received {report['rtp']['received']} "
        f"lost {report['rtp']['lost']} rtt_ms {report['rtp']['rtt_ms']}"
    )


def check_report(report: dict[str, Any], codec: str) -> None:
    assert report["call"]["sip_status"] == 200
    assert report["rtp"]["codec"] == CODECS[codec][1]
    assert report["rtp"]["sent"] > 50 and report["rtp"]["received"] > 50
    # baresip runs without ICE here: we must have fallen back to its c=/m= address
    assert report["ice"] is None


# ---- the cases ----------------------------------------------------------------------------


@pytest.mark.parametrize("ice", list(ICE_MODES))
@pytest.mark.parametrize("codec", CODEC_PARAMS)
def test_softphone_calls_baresip(
    baresip_factory: Callable[..., Baresip], tmp_path: Path, codec: str, ice: str
) -> None:
    bob = baresip_factory(user="bob", audio_codecs=CODECS[codec][0])
    ours = tmp_path / "ours.wav"
    result = subprocess.run(
        softphone(
            "--trace", "--json", "--bind", "127.0.0.1:0", "--codecs", codec, *ICE_MODES[ice],
            "call", bob.contact_uri,
            "--play", f"tone:{OUR_TONE:g}", "--record", str(ours), "--duration", "3",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:] + bob.log()[-3000:]
    report = json.loads(result.stdout)
    check_report(report, codec)
    assert report["call"]["end_reason"] == "local-bye"
    theirs, mine = baresip_sdp(result.stderr), our_sdp(result.stderr)
    assert not theirs.ice
    assert mine.ice == (ice == "ice")
    assert CODECS[codec][1].split("/")[0].lower() in theirs.codecs[0].lower()
    assert bob.wait_for_log(r"Call established: sip:", timeout=5)
    assert abs(dominant(ours) - BARESIP_TONE) < 5
    assert abs(baresip_heard(bob) - OUR_TONE) < 5
    print(describe(f"softphone->baresip {codec} {ice}", report, theirs, mine))


class Answerer:
    """A ``softphone answer`` process; its stderr is collected by a thread."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            if self.proc.poll() is not None:
                self._reader.join(2)
                return any(text in line for line in self.lines)
            time.sleep(0.05)
        return False

    def finish(self, timeout: float = 30.0) -> tuple[int, dict[str, Any], str]:
        assert self.proc.stdout is not None
        self.proc.wait(timeout)
        out = self.proc.stdout.read()
        self._reader.join(5)
        stderr = "".join(self.lines)
        assert out.strip(), stderr[-5000:]
        return self.proc.returncode, json.loads(out), stderr

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.parametrize("ice", list(ICE_MODES))
@pytest.mark.parametrize("codec", CODEC_PARAMS)
def test_baresip_calls_softphone(
    baresip_factory: Callable[..., Baresip], tmp_path: Path, codec: str, ice: str
) -> None:
    alice = baresip_factory(user="alice", audio_codecs=CODECS[codec][0])
    port = free_port()
    ours = tmp_path / "ours.wav"
    answerer = Answerer(
        softphone(
            "--trace", "--json", "--bind", f"127.0.0.1:{port}", "--codecs", codec,
            *ICE_MODES[ice], "answer", "--auto", "--count", "1", "--duration", "3",
            "--play", f"tone:{OUR_TONE:g}", "--record", str(ours),
        )
    )  # fmt: skip
    try:
        assert answerer.wait_for("waiting for calls"), "".join(answerer.lines)[-3000:]
        assert alice.dial(f"sip:bob@127.0.0.1:{port}")["ok"]
        status, report, stderr = answerer.finish()
    finally:
        answerer.stop()
    assert status == 0, stderr[-5000:] + alice.log()[-3000:]
    check_report(report, codec)
    assert report["call"]["end_reason"] == "local-bye"
    theirs, mine = baresip_sdp(stderr), our_sdp(stderr)
    assert not theirs.ice and not mine.ice  # an answer has ICE only if the offer had
    assert not mine.rtcp_mux or theirs.rtcp_mux  # RFC 5761 §5.1.1: mux only if offered
    assert abs(dominant(ours) - BARESIP_TONE) < 5
    assert abs(baresip_heard(alice) - OUR_TONE) < 5
    print(describe(f"baresip->softphone {codec} {ice}", report, theirs, mine))


def test_codec_choice_both_ways(baresip_factory: Callable[..., Baresip], tmp_path: Path) -> None:
    """RFC 3264 §6.1: the answer takes the first codec of the offer both ends support. We
    offer opus, PCMU, PCMA to a baresip with PCMA only; baresip offers opus, PCMU, PCMA to
    us with --codecs pcma. PCMA both times, and the tones arrive."""
    if not (MODULES / "g711.so").exists():
        pytest.skip(f"baresip has no g711 module in {MODULES}")
    bob = baresip_factory(user="bob", audio_codecs="PCMA/8000/1")
    ours = tmp_path / "out.wav"
    result = subprocess.run(
        softphone(
            "--json", "--bind", "127.0.0.1:0", "call", bob.contact_uri,
            "--play", f"tone:{OUR_TONE:g}", "--record", str(ours), "--duration", "2",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    assert json.loads(result.stdout)["rtp"]["codec"] == "PCMA/8000"
    assert abs(dominant(ours) - BARESIP_TONE) < 5
    assert abs(baresip_heard(bob) - OUR_TONE) < 5

    alice = baresip_factory(user="alice")  # offers opus/48000/2, PCMU, PCMA
    port = free_port()
    ours_in = tmp_path / "in.wav"
    answerer = Answerer(
        softphone(
            "--json", "--bind", f"127.0.0.1:{port}", "--codecs", "pcma",
            "answer", "--auto", "--count", "1", "--duration", "2",
            "--play", f"tone:{OUR_TONE:g}", "--record", str(ours_in),
        )
    )  # fmt: skip
    try:
        assert answerer.wait_for("waiting for calls"), "".join(answerer.lines)[-3000:]
        assert alice.dial(f"sip:bob@127.0.0.1:{port}")["ok"]
        status, report, stderr = answerer.finish()
    finally:
        answerer.stop()
    assert status == 0, stderr[-5000:]
    assert report["rtp"]["codec"] == "PCMA/8000"
    assert abs(dominant(ours_in) - BARESIP_TONE) < 5
    assert abs(baresip_heard(alice) - OUR_TONE) < 5
