"""``softphone demo``: two user agents on this machine call each other with ICE, no server needed.

Alice and Bob each get a SIP user agent and a media socket set on 127.0.0.1 (free ports). Alice
calls Bob peer to peer; Bob rings (180), answers, and both run ICE over their host candidates
(RFC 8445) before the RTP session starts on the nominated pair. Alice plays a speech-like clip
(spoken by ``espeak-ng`` when it is installed, else synthesised: a glottal-pulse-like harmonic
series with moving vowel formants and a syllable rhythm, see :func:`synthetic_speech`) and Bob
records it; Bob plays a 660 Hz tone back so audio flows both ways. Alice hangs up a second after
the clip ends.

The demo then prints:

* the SIP ladder as Alice saw it on the wire (from the ``sip.trace`` logger): INVITE, 100, 180,
  200, ACK ... BYE, 200;
* the ICE pair that was selected, the call setup time and the ICE connect time;
* the RTP statistics of both ends (packets, loss, jitter, RTT, MOS);
* the audio check: the normalised cross-correlation of Bob's recording with the clip Alice
  sent, searching the delay (lag) that fits best (:func:`media.analysis.cross_correlate`), the
  dominant frequencies of both, and the frequency of Bob's tone in Alice's recording.

Exit status 0 only when the call was answered, RTP flowed both ways, the clip arrived
(correlation at least :data:`CORRELATION_THRESHOLD`) and Bob's tone arrived. ``--json`` gives
the DESIGN.md sections ``call``/``ice``/``rtp`` of Alice's call plus ``demo`` (ladder, clip,
audio check, Bob's RTP statistics). The account options ``--codecs`` and ``--no-ice`` apply.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from media.analysis import cross_correlate, dominant_frequency, rms_dbfs
from media.sources import AudioFileError, load_wav, save_wav
from softphone.call import Call, CallFailed, MediaOptions
from softphone.config import Account, HostPort
from softphone.report import Reporter
from softphone.useragent import make_user_agent

__all__ = [
    "CORRELATION_THRESHOLD",
    "AudioCheck",
    "LadderEntry",
    "SipLadder",
    "check_audio",
    "format_ladder",
    "run_demo",
    "speech_clip",
    "synthetic_speech",
]

log = logging.getLogger("softphone.demo")

EXIT_OK, EXIT_FAILED = 0, 1

#: A clip that went through Opus or G.711 on loopback correlates at about 0.9 or more; noise
#: or another signal stays well below 0.3.
CORRELATION_THRESHOLD = 0.6
BOB_TONE_HZ = 660.0
#: How far the tone may be off (Hz) and still count as arrived.
TONE_TOLERANCE_HZ = 10.0
SPEECH_TEXT = "Hello Bob, this is Alice, calling through our own ice stack."
CLIP_RATE = 16000
HANGUP_AFTER_CLIP_S = 1.2

Int16Array = npt.NDArray[np.int16]


# -- the clip ---------------------------------------------------------------------------------


def synthetic_speech(
    sample_rate: int = CLIP_RATE, seconds: float = 3.0, seed: int = 7
) -> Int16Array:
    """A speech-like signal without a speech synthesiser: a harmonic series on a moving pitch
    (about 100-160 Hz) shaped by two vowel formants that change every syllable, syllables of
    120-280 ms with short gaps (about 4 per second), and a little noise for consonants.
    Deterministic for a given ``seed``; peaks near -6 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    vowels = [(730, 1090), (270, 2290), (300, 870), (530, 1840), (660, 1720), (490, 1350)]
    f1 = np.zeros(n)
    f2 = np.zeros(n)
    envelope = np.zeros(n)
    noise_env = np.zeros(n)
    pos = int(0.05 * sample_rate)
    while pos < n:
        length = int(rng.uniform(0.12, 0.28) * sample_rate)
        end = min(n, pos + length)
        v1, v2 = vowels[int(rng.integers(len(vowels)))]
        f1[pos:end], f2[pos:end] = v1, v2
        envelope[pos:end] = np.hanning(length)[: end - pos] * rng.uniform(0.6, 1.0)
        burst = min(end - pos, int(0.03 * sample_rate))
        noise_env[pos : pos + burst] = np.linspace(1.0, 0.0, burst) * rng.uniform(0.1, 0.3)
        pos = end + int(rng.uniform(0.03, 0.12) * sample_rate)
    # smooth the formant tracks (coarticulation)
    kernel = np.hanning(int(0.03 * sample_rate))
    kernel /= kernel.sum()
    f1 = np.convolve(np.where(f1 == 0, 500, f1), kernel, mode="same")
    f2 = np.convolve(np.where(f2 == 0, 1500, f2), kernel, mode="same")
    f0 = 130 + 25 * np.sin(2 * np.pi * 0.6 * t) + 8 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = np.zeros(n)
    nyquist = sample_rate / 2 - 300
    for k in range(1, 40):
        freq = k * f0
        gain = 1 / (1 + ((freq - f1) / 90) ** 2) + 0.6 / (1 + ((freq - f2) / 120) ** 2)
        gain = np.where(freq < nyquist, gain / np.sqrt(k), 0.0)
        voiced += gain * np.sin(k * phase)
    signal = voiced * envelope + rng.normal(0, 1, n) * noise_env
    signal *= 0.5 / max(1e-9, float(np.max(np.abs(signal))))
    return np.rint(signal * 32767).astype(np.int16)


def speech_clip(directory: Path, sample_rate: int = CLIP_RATE) -> tuple[Path, str]:
    """Write the clip Alice plays to ``directory/clip.wav``; returns the path and how it was
    made (``"espeak-ng"`` or ``"synthetic"``)."""
    path = directory / "clip.wav"
    espeak = shutil.which("espeak-ng")
    if espeak is not None:
        spoken = directory / "espeak.wav"
        try:
            subprocess.run(
                [espeak, "-s", "165", "-w", str(spoken), SPEECH_TEXT],
                check=True,
                capture_output=True,
                timeout=20,
            )
            samples, _ = load_wav(spoken, sample_rate)
            if len(samples) > sample_rate and rms_dbfs(samples) > -40:
                save_wav(path, samples, sample_rate)
                return path, "espeak-ng"
        except (OSError, subprocess.SubprocessError, AudioFileError) as exc:
            log.info("espeak-ng failed (%s); using a synthetic clip", exc)
    save_wav(path, synthetic_speech(sample_rate), sample_rate)
    return path, "synthetic"


# -- the audio check --------------------------------------------------------------------------


@dataclass
class AudioCheck:
    """Did the clip arrive? The best normalised cross-correlation of the recording with what
    was sent (over delays from 0 to the recording's length), and the spectra's peaks."""

    correlation: float
    lag_ms: float
    sent_hz: float
    received_hz: float
    received_dbfs: float
    threshold: float = CORRELATION_THRESHOLD

    @property
    def arrived(self) -> bool:
        return self.correlation >= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "correlation": round(self.correlation, 3),
            "lag_ms": round(self.lag_ms, 1),
            "sent_dominant_hz": round(self.sent_hz, 1),
            "received_dominant_hz": round(self.received_hz, 1),
            "received_dbfs": round(self.received_dbfs, 1),
            "threshold": self.threshold,
            "arrived": self.arrived,
        }


def check_audio(
    sent: npt.ArrayLike,
    received: npt.ArrayLike,
    sample_rate: int,
    threshold: float = CORRELATION_THRESHOLD,
) -> AudioCheck:
    """Compare a recording with what was sent (both at ``sample_rate``)."""
    s = np.asarray(sent)
    r = np.asarray(received)
    max_lag = max(0, len(r) - len(s))
    c = cross_correlate(s, r, max_lag=max_lag)
    window = r[c.lag : c.lag + len(s)] if len(r) else r
    return AudioCheck(
        correlation=c.coefficient,
        lag_ms=c.lag_seconds(sample_rate) * 1000,
        sent_hz=dominant_frequency(s, sample_rate, min_hz=60),
        received_hz=dominant_frequency(window, sample_rate, min_hz=60),
        received_dbfs=rms_dbfs(window) if len(window) else -120.0,
        threshold=threshold,
    )


def _tone_in(path: Path) -> tuple[float, float]:
    """Dominant frequency and level of a recording, past its first 200 ms (jitter-buffer
    fill and codec start-up)."""
    try:
        samples, rate = load_wav(path)
    except (OSError, AudioFileError):
        return 0.0, -120.0
    body = samples[rate // 5 :]
    if len(body) < rate // 10:
        return 0.0, -120.0
    return dominant_frequency(body, rate), rms_dbfs(body)


# -- the SIP ladder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LadderEntry:
    """One SIP message on Alice's wire: ``sent`` (Alice -> Bob) or not (Bob -> Alice)."""

    t: float
    sent: bool
    label: str

    def as_dict(self) -> dict[str, Any]:
        return {"t_ms": round(self.t * 1000, 1), "from": "alice" if self.sent else "bob",
                "message": self.label}  # fmt: skip


_CSEQ = re.compile(r"^CSeq:\s*\d+\s+([A-Za-z]+)", re.MULTILINE | re.IGNORECASE)


class SipLadder(logging.Handler):
    """Collects the SIP messages one user agent sent and received, from ``sip.trace`` records
    (``send|recv TRANSPORT LOCAL ->|<- REMOTE (N bytes)\\nMESSAGE``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.local: str | None = None
        self.entries: list[LadderEntry] = []
        self._t0 = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if self.local is None or not isinstance(args, tuple) or len(args) != 5:
            return
        direction, _transport, where, _size, text = args
        if not str(where).startswith(self.local + " "):
            return
        first, _, rest = str(text).partition("\r\n")
        if first.startswith("SIP/2.0 "):
            label = first[len("SIP/2.0 ") :]
            method = _CSEQ.search(rest)
            if method:
                label += f" ({method.group(1).upper()})"
        else:
            label = first.removesuffix(" SIP/2.0")
        if not self.entries:
            self._t0 = time.monotonic()
        self.entries.append(LadderEntry(time.monotonic() - self._t0, direction == "send", label))


def format_ladder(entries: list[LadderEntry], left: str = "alice", right: str = "bob") -> list[str]:
    """The ladder as text, one arrow per message."""
    width = max([len(e.label) for e in entries] + [20]) + 10
    lines = [f"{'':9}{left:<{width // 2 + 4}}{right:>{width // 2 + 2}}"]
    for e in entries:
        body = f" {e.label} "
        if e.sent:
            arrow = "  |--" + body + "-" * (width - len(body) - 4) + ">|"
        else:
            arrow = "  |<" + "-" * (width - len(body) - 4) + body + "--|"
        lines.append(f"{e.t * 1000:7.1f}ms{arrow}")
    return lines


@contextlib.contextmanager
def _capture_sip(ladder: SipLadder, show_trace: bool) -> Iterator[None]:
    """Route ``sip.trace`` DEBUG records to ``ladder`` (and to stderr only with --trace)."""
    trace = logging.getLogger("sip.trace")
    level, propagate = trace.level, trace.propagate
    trace.setLevel(logging.DEBUG)
    trace.propagate = show_trace
    trace.addHandler(ladder)
    try:
        yield
    finally:
        trace.removeHandler(ladder)
        trace.setLevel(level)
        trace.propagate = propagate


# -- the demo ---------------------------------------------------------------------------------


@dataclass
class _Side:
    name: str
    account: Account
    options: MediaOptions
    call: Call | None = None
    error: str | None = None
    lines: list[str] = field(default_factory=list)


def _demo_account(name: str, account: Account) -> Account:
    return Account(
        name=name,
        user=name,
        domain="127.0.0.1",
        bind=HostPort("127.0.0.1", 0),
        codecs=account.codecs,
        ice=account.ice,
    )


def _pair_text(selected: dict[str, Any] | None) -> str:
    if not selected:
        return "-"

    def one(c: dict[str, Any]) -> str:
        return f"{c.get('type')} {c.get('protocol', 'udp')} {c.get('address')}:{c.get('port')}"

    return f"{one(selected['local'])}  <->  {one(selected['remote'])}"


async def _bob(side: _Side, ua: Any, progress: Any, ring_s: float) -> None:
    incoming = await ua.incoming.get()
    progress(f"bob: incoming call from {incoming.call.remote_uri}; ringing")
    incoming.ring()
    await asyncio.sleep(ring_s)
    call = Call(ua, side.account, side.options, progress=lambda s: progress(f"bob: {s}"))
    side.call = call
    try:
        await call.accept(incoming)
        await call.run(None)
    except CallFailed as exc:
        side.error = exc.reason


async def run_demo(
    account: Account,
    args: argparse.Namespace,
    reporter: Reporter,
    *,
    workdir: Path | None = None,
    ring_s: float = 0.3,
) -> int:
    """Run the demo; returns the exit status (see the module docstring)."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sp-demo-")))
        return await _run(account, args, reporter, workdir, ring_s)


async def _run(
    account: Account, args: argparse.Namespace, reporter: Reporter, workdir: Path, ring_s: float
) -> int:
    progress = reporter.progress
    demo = reporter.section("demo")
    clip_path, clip_kind = speech_clip(workdir)
    clip, clip_rate = load_wav(clip_path)
    clip_s = len(clip) / clip_rate
    demo["clip"] = {"source": clip_kind, "seconds": round(clip_s, 2)}
    progress(f"clip: {clip_s:.1f} s of speech ({clip_kind})")
    alice = _Side(
        "alice",
        _demo_account("alice", account),
        MediaOptions(play=str(clip_path), record=str(workdir / "alice.wav")),
    )
    bob = _Side(
        "bob",
        _demo_account("bob", account),
        MediaOptions(play=f"tone:{BOB_TONE_HZ:g}", record=str(workdir / "bob.wav")),
    )
    ladder = SipLadder()
    ua_a = make_user_agent(alice.account)
    ua_b = make_user_agent(bob.account)
    with _capture_sip(ladder, bool(getattr(args, "trace", False))):
        await ua_a.start(transports=("UDP",))
        await ua_b.start(transports=("UDP",))
        ladder.local = f"{ua_a.config.local_host}:{ua_a.config.local_port}"
        bob_uri = f"sip:bob@{ua_b.config.local_host}:{ua_b.config.local_port}"
        progress(f"alice at {ladder.local}, bob at {bob_uri}")
        bob_task = asyncio.create_task(_bob(bob, ua_b, progress, ring_s))
        call = Call(ua_a, alice.account, alice.options, progress=lambda s: progress(f"alice: {s}"))
        alice.call = call
        try:
            try:
                await call.dial(bob_uri)
            except CallFailed as exc:
                alice.error = exc.reason
                progress(f"alice: call failed: {exc.reason}")
            else:
                await call.run(clip_s + HANGUP_AFTER_CLIP_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(bob_task), 10.0)
        finally:
            if not bob_task.done():
                bob_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await bob_task
            if bob.call is not None and not bob.call.end_reason:
                await bob.call.hangup()
            await asyncio.sleep(0.1)  # the last responses (200 to BYE) onto the ladder
            await ua_a.close()
            await ua_b.close()
    return _report(reporter, alice, bob, ladder, clip_path, workdir, ring_s)


def _report(
    reporter: Reporter,
    alice: _Side,
    bob: _Side,
    ladder: SipLadder,
    clip_path: Path,
    workdir: Path,
    ring_s: float,
) -> int:
    out = reporter.err if reporter.json_output else reporter.out
    demo = reporter.section("demo")
    call = alice.call
    assert call is not None
    report = call.report()
    for name, section in report.items():
        reporter.data[name] = section
    demo["sip_ladder"] = [e.as_dict() for e in ladder.entries]
    lines = ["", "SIP ladder (as alice saw it on the wire):"]
    lines += format_ladder(ladder.entries)
    ice = report.get("ice")
    lines.append("")
    if ice:
        lines.append(
            f"ICE:      {ice['role']} (alice), selected pair {_pair_text(ice['selected'])}"
        )
        lines.append(f"          connected in {ice['connect_ms']} ms after the answer")
    else:
        lines.append("ICE:      not used (plain RTP)")
    lines.append(
        f"setup:    {report['call']['setup_ms']} ms from INVITE to 200 OK "
        f"(bob let it ring for {ring_s * 1000:.0f} ms)"
    )
    stats_a = call.stats
    stats_b = bob.call.stats if bob.call is not None else None
    if stats_a is not None:
        lines.append(f"RTP alice: {stats_a}")
    if stats_b is not None:
        lines.append(f"RTP bob:   {stats_b}")
        demo["bob_rtp"] = stats_b.rtp_json()
    audio: AudioCheck | None = None
    bob_wav = workdir / "bob.wav"
    if bob_wav.exists():
        try:
            received, rate = load_wav(bob_wav)
            sent, _ = load_wav(clip_path, rate)
            audio = check_audio(sent, received, rate)
        except AudioFileError as exc:
            lines.append(f"audio:    cannot read bob's recording: {exc}")
    tone_hz, tone_db = _tone_in(workdir / "alice.wav")
    tone_ok = abs(tone_hz - BOB_TONE_HZ) <= TONE_TOLERANCE_HZ
    demo["return_tone"] = {
        "sent_hz": BOB_TONE_HZ,
        "received_dominant_hz": round(tone_hz, 1),
        "received_dbfs": round(tone_db, 1),
        "arrived": tone_ok,
    }
    if audio is not None:
        demo["audio"] = audio.as_dict()
        verdict = "ARRIVED" if audio.arrived else "DID NOT ARRIVE"
        lines.append(
            f"audio:    clip at bob: correlation {audio.correlation:.3f} "
            f"(threshold {audio.threshold}) at a delay of {audio.lag_ms:.0f} ms; "
            f"dominant {audio.sent_hz:.0f} Hz sent, {audio.received_hz:.0f} Hz received, "
            f"{audio.received_dbfs:.1f} dBFS: {verdict}"
        )
    else:
        demo["audio"] = None
        lines.append("audio:    no recording at bob: DID NOT ARRIVE")
    lines.append(
        f"          bob's {BOB_TONE_HZ:g} Hz tone at alice: {tone_hz:.1f} Hz, {tone_db:.1f} dBFS: "
        + ("arrived" if tone_ok else "DID NOT ARRIVE")
    )
    for side in (alice, bob):
        if side.error:
            lines.append(f"{side.name}: {side.error}")
    ok = bool(call.succeeded and audio is not None and audio.arrived and tone_ok)
    demo["ok"] = ok
    lines.append("demo " + ("passed: audio went both ways" if ok else "FAILED"))
    for line in lines:
        print(line, file=out, flush=True)
    return EXIT_OK if ok else EXIT_FAILED
