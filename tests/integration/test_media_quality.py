"""Speech quality through two RTP sessions over a lossy link, scored with PESQ.

A clip of speech made with espeak-ng goes from session A to session B (media.session, the
sans-I/O cores) over a simulated network on a virtual clock: 30 ms delay, 0-10 ms uniform
jitter, and random loss of RTP packets drawn from a seeded RNG per packet index, so every
codec sees the very same losses (RTCP is never dropped: the loss feedback it carries is what
turns Opus in-band FEC up, RFC 7587 §3.3). The clip is sent twice: the first pass lets RTCP
report the loss and the jitter buffer settle, the second pass is recorded at B and scored
against the original with wideband PESQ (ITU-T P.862.2, the ``pesq`` package) at 16 kHz.

Checked: Opus with in-band FEC at 10 % loss stays within 0.5 MOS-LQO of the lossless run (for 3
of 5 loss patterns and in the median: the sender raises its bitrate with the reported loss) and
does at least as well as Opus with packet-loss concealment only; the E-model MOS of
``stats()`` drops with loss; ``Stats.rtp_json()`` has the DESIGN.md ``"rtp"`` shape. One
real-socket run (MediaStream over UdpTransport on 127.0.0.1 with loss injected in the
transport) checks that the asyncio path gives the same quality. The scores are printed.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media.aio import MediaStream, UdpTransport, open_udp_transport
from media.analysis import cross_correlate, dominant_frequency, rms_dbfs
from media.opus import OpusDecoder, OpusEncoder
from media.resample import resample_once
from media.rtp import RtpPacket
from media.session import CodecDescription, RtpSession
from media.sources import (
    NullSink,
    SilenceSource,
    ToneSource,
    WavFileSink,
    WavFileSource,
    load_wav,
    save_wav,
)
from media.stats import Stats

pesq_module = pytest.importorskip("pesq", reason="the pesq package is not installed")

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"
)

# Harvard sentences (IEEE 1969 "Recommended practice for speech quality measurements")
SENTENCES = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well. These days a chicken leg is a rare dish."
)
OPUS_FEC = CodecDescription("opus", 111, 48000, 2, {"useinbandfec": "1"})
OPUS_PLC = CodecDescription("opus", 111, 48000, 2, {})
PCMU = CodecDescription("PCMU", 0, 8000)
LOSS = 0.10
PESQ_RATE = 16000
TICK = 0.001


@dataclass(frozen=True)
class Clip:
    samples: np.ndarray  # as espeak-ng wrote it
    rate: int
    path: Path

    def at(self, rate: int) -> np.ndarray:
        return resample_once(self.samples, self.rate, rate)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    path = tmp_path_factory.mktemp("speech") / "harvard.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SENTENCES], check=True, timeout=60)
    samples, rate = load_wav(path)
    assert len(samples) > 5 * rate  # several seconds of speech
    return Clip(samples, rate, path)


def score(clip: Clip, recorded: np.ndarray, rate: int) -> float:
    """Wideband PESQ of ``recorded`` (at ``rate``, aligned with the clip) against the clip."""
    ref = clip.at(PESQ_RATE).astype(np.float32)
    deg = resample_once(recorded, rate, PESQ_RATE).astype(np.float32)
    n = min(len(ref), len(deg))
    return float(pesq_module.pesq(PESQ_RATE, ref[:n], deg[:n], "wb"))


def align(sent: np.ndarray, received: np.ndarray, rate: int) -> np.ndarray:
    """The part of ``received`` that carries ``sent`` (found by cross-correlation)."""
    match = cross_correlate(sent, received, int(0.5 * rate))
    assert match.coefficient > 0.3, f"the clip is not in the recording ({match})"
    out = received[match.lag : match.lag + len(sent)]
    return np.concatenate([out, np.zeros(len(sent) - len(out), np.int16)])


# --- the sans-I/O run on a virtual clock ----------------------------------------------------


def carries_fec(payload: bytes) -> bool:
    """Whether a one-frame 20 ms SILK/hybrid Opus packet has the LBRR flag set: after the TOC
    the range coder starts with the VAD flag and then the LBRR flag, each of probability 1/2,
    i.e. the two leading bits of the next byte (RFC 6716 §4.1, §4.2.3). For the test only:
    whether in-band FEC data was really sent (libopus decides per frame)."""
    config, code = payload[0] >> 3, payload[0] & 3
    assert code == 0 and config in (1, 5, 9, 13, 15), "a 20 ms SILK or hybrid packet"
    return bool(payload[1] & 0x40)


@dataclass
class Run:
    label: str
    loss: float
    pesq: float
    receiver: Stats
    sender: Stats
    dropped: int  # RTP packets of the recorded pass the link dropped
    packets: int  # RTP packets of the recorded pass
    loss_perc_setting: int | None  # Opus encoder's expected loss when the pass began
    fec_packets: int = 0  # Opus packets of the recorded pass that carry LBRR (FEC) data


def simulate(
    codec: CodecDescription,
    clip: Clip,
    loss: float,
    *,
    seed: int = 7,
    scored: bool = True,
    **options: Any,
) -> Run:
    a = RtpSession(codec, rng=random.Random(seed), cname="a@quality", **options)
    b = RtpSession(codec, rng=random.Random(seed + 1), cname="b@quality", **options)
    rate, n = a.sample_rate, a.frame_samples
    speech = clip.at(rate)
    speech = np.concatenate([speech, np.zeros(-len(speech) % n, np.int16)])
    tail = np.zeros(25 * n, np.int16)  # 0.5 s to drain the jitter buffer
    frames = np.concatenate([speech, speech, tail]).reshape(-1, n)
    first = len(speech) // n  # the recorded pass starts with this frame
    drop = np.random.default_rng(seed).random(len(frames)) < loss
    net = random.Random(seed + 2)
    ab: list[tuple[float, int, bytes]] = []  # (arrival, order, datagram)
    ba: list[tuple[float, int, bytes]] = []
    order = 0
    heard: list[np.ndarray] = []
    loss_setting: int | None = None
    fec_packets = 0
    for step in range(len(frames) * 20 + 8):
        now = step * TICK
        for queue, session in ((ab, b), (ba, a)):
            while queue and queue[0][0] <= now:
                session.receive(heapq.heappop(queue)[2], now)
        for session, queue in ((a, ab), (b, ba)):
            timer = session.get_timer()
            if timer is not None and timer <= now:
                session.handle_timer(now)
            for data, _ in session.datagrams_to_send():  # RTCP: 30 ms, never lost
                order += 1
                heapq.heappush(queue, (now + 0.03, order, data))
        k, phase = divmod(step, 20)
        if phase == 0 and k < len(frames):
            if k == first and a.opus_encoder is not None:
                loss_setting = a.opus_encoder.packet_loss_perc
            for data in a.send_frame(frames[k], now):
                if codec.encoding == "opus" and first <= k < 2 * first:
                    fec_packets += carries_fec(RtpPacket.parse(data).payload)
                if not drop[k]:
                    order += 1
                    heapq.heappush(ab, (now + 0.03 + net.uniform(0, 0.01), order, data))
        if phase == 7:  # B's playout clock, another phase than A's
            heard.append(b.playout(now))
    received = np.concatenate(heard)
    recorded = align(speech, received[first * n :], rate)
    passed = drop[first : 2 * first]
    return Run(
        label="",
        loss=loss,
        pesq=score(clip, recorded, rate) if scored else float("nan"),
        receiver=b.stats(now),
        sender=a.stats(now),
        dropped=int(passed.sum()),
        packets=len(passed),
        loss_perc_setting=loss_setting,
        fec_packets=fec_packets,
    )


CASES = {
    "opus+fec lossless": (OPUS_FEC, 0.0),
    "opus+fec 10% loss": (OPUS_FEC, LOSS),
    "opus plc-only 10% loss": (OPUS_PLC, LOSS),
    "pcmu lossless": (PCMU, 0.0),
    "pcmu 10% loss": (PCMU, LOSS),
}


@pytest.fixture(scope="module")
def runs(clip: Clip) -> dict[str, Run]:
    out = {}
    for label, (codec, loss) in CASES.items():
        run = simulate(codec, clip, loss)
        run.label = label
        out[label] = run
    return out


def test_print_pesq_table(runs: dict[str, Run], capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print("\nwideband PESQ (P.862.2) of an espeak-ng clip, sans-I/O sessions, seeded loss")
        for run in runs.values():
            rx = run.receiver
            print(
                f"  {run.label:24s} PESQ {run.pesq:.2f}  lost {run.dropped}/{run.packets}, "
                f"{run.fec_packets} sent with FEC; both passes: lost {rx.packets_lost}, "
                f"decoded via FEC {rx.fec_frames}, concealed {rx.concealed_frames};  "
                f"E-model MOS {rx.mos:.2f}"
            )
    assert all(1.0 <= run.pesq <= 4.7 for run in runs.values())


def test_the_link_lost_what_it_should(runs: dict[str, Run]) -> None:
    for run in runs.values():
        if run.loss:
            assert 0.06 < run.dropped / run.packets < 0.14
            assert run.receiver.packets_lost > 0
        else:
            assert run.dropped == 0 and run.receiver.packets_lost == 0
            assert run.receiver.concealed_frames == 0 and run.receiver.fec_frames == 0
    # the same packets are lost whatever the codec
    lossy = [run.dropped for run in runs.values() if run.loss]
    assert len(set(lossy)) == 1


def test_lossless_session_adds_nothing_to_the_codec(clip: Clip, runs: dict[str, Run]) -> None:
    """Without loss the sessions (packetization, jitter buffer, playout) sound like a plain
    Opus encode/decode at the same bitrate: the codec alone sets the score (~3.4 at 32 kbit/s
    for this synthetic voice, PESQ's band being 50-7000 Hz)."""
    speech = clip.at(48000)
    speech = np.concatenate([speech, np.zeros(-len(speech) % 960, np.int16)])
    encoder, decoder = OpusEncoder(1, bitrate=32000), OpusDecoder(1)
    direct = np.concatenate([decoder.decode(encoder.encode(f)) for f in speech.reshape(-1, 960)])
    direct = np.concatenate([direct, np.zeros(960, np.int16)])
    codec_only = score(clip, align(speech, direct, 48000), 48000)
    session = runs["opus+fec lossless"].pesq
    assert session > 3.0
    assert session >= codec_only - 0.15, (session, codec_only)


def test_opus_fec_recovers_most_of_the_loss(runs: dict[str, Run]) -> None:
    lossless, lossy = runs["opus+fec lossless"], runs["opus+fec 10% loss"]
    # RTCP told the sender about the loss before the recorded pass began
    assert lossy.loss_perc_setting is not None and lossy.loss_perc_setting >= 5
    assert lossless.loss_perc_setting == 0
    # the encoder really sent FEC data (not in silent frames: SILK codes LBRR for active
    # speech only) ...
    assert lossy.fec_packets > 0.6 * lossy.packets
    assert lossless.fec_packets == 0  # no loss reported: no FEC spent
    # ... and the receiver used the next packet for most lost frames
    assert lossy.receiver.fec_frames > 0.5 * lossy.dropped
    assert lossy.pesq >= lossless.pesq - 1.0


SEEDS = (1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def seed_runs(clip: Clip) -> dict[int, tuple[Run, Run]]:
    """(lossless, 10 % loss) Opus+FEC runs for several loss patterns."""
    return {
        seed: (simulate(OPUS_FEC, clip, 0.0, seed=seed), simulate(OPUS_FEC, clip, LOSS, seed=seed))
        for seed in SEEDS
    }


def test_opus_fec_keeps_pesq_within_half_a_point_at_10_percent_loss(
    runs: dict[str, Run],
    seed_runs: dict[int, tuple[Run, Run]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The issue's target, over several loss patterns: with 10 % random loss Opus+FEC stays
    within 0.5 of the lossless run for most seeds and in the median. What makes it: the
    sender raises its bitrate with the reported loss (RtpSession._adapt_opus_to_loss) so
    the LBRR copy does not starve the primary stream (measured with libopus 1.3.1: at
    32 kbit/s and packet_loss_perc 10 a lossless stream drops from 3.39 to 2.86)."""
    drops = {
        seed: round(lossless.pesq - lossy.pesq, 2) for seed, (lossless, lossy) in seed_runs.items()
    }
    with capsys.disabled():
        print(f"\n  opus+fec: PESQ drop at 10 % loss per seed {drops}")
    assert sum(drop <= 0.5 for drop in drops.values()) >= 3, drops
    assert float(np.median(list(drops.values()))) <= 0.5, drops
    assert runs["opus+fec 10% loss"].pesq >= runs["opus+fec lossless"].pesq - 0.5
    for lossless, lossy in seed_runs.values():
        assert lossless.sender.packets_sent == lossy.sender.packets_sent


def test_the_fec_bitrate_follows_the_reported_loss() -> None:
    session = RtpSession(OPUS_FEC, rng=random.Random(1))
    encoder = session.opus_encoder
    assert encoder is not None and encoder.bitrate == 32000
    session.expect_loss(5)
    assert encoder.packet_loss_perc == 5 and encoder.bitrate == 48000
    session.expect_loss(20)
    assert encoder.bitrate == 64000  # at most twice the configured rate
    session.expect_loss(0)
    assert encoder.bitrate == 32000
    # never above the peer's maxaveragebitrate (RFC 7587 §6.1), nor boosted without FEC
    capped = CodecDescription(
        "opus", 111, 48000, 2, {"useinbandfec": "1", "maxaveragebitrate": "40000"}
    )
    for codec, expected in ((capped, 40000), (OPUS_PLC, 32000)):
        session = RtpSession(codec, rng=random.Random(1))
        session.expect_loss(10)
        assert session.opus_encoder is not None
        assert session.opus_encoder.bitrate == expected
        assert session.opus_encoder.packet_loss_perc == 10


def test_fec_does_better_than_concealment_alone(runs: dict[str, Run]) -> None:
    fec, plc = runs["opus+fec 10% loss"], runs["opus plc-only 10% loss"]
    assert plc.fec_packets == 0  # useinbandfec=0: the encoder sends none
    assert fec.pesq >= plc.pesq - 0.05  # never worse ...
    assert fec.pesq >= plc.pesq + 0.3  # ... and clearly better (0.47-0.81 with other seeds)


def test_pcmu_loss_costs_quality(runs: dict[str, Run]) -> None:
    lossless, lossy = runs["pcmu lossless"], runs["pcmu 10% loss"]
    assert lossless.pesq > 2.5  # narrowband speech scored on the wideband scale
    assert lossy.pesq < lossless.pesq
    # the wideband codec beats the narrowband one
    assert runs["opus+fec lossless"].pesq > lossless.pesq


def test_emodel_mos_decreases_with_loss(runs: dict[str, Run]) -> None:
    for codec in ("opus+fec", "pcmu"):
        clean = runs[f"{codec} lossless"].receiver.mos
        lossy = runs[f"{codec} 10% loss"].receiver.mos
        assert clean is not None and lossy is not None
        assert lossy < clean - 0.3, (codec, clean, lossy)
    # Opus (with FEC) is hurt less by loss than G.711 (G.113 Bpl)
    opus_mos = runs["opus+fec 10% loss"].receiver.mos
    pcmu_mos = runs["pcmu 10% loss"].receiver.mos
    assert opus_mos is not None and pcmu_mos is not None and opus_mos > pcmu_mos


@pytest.mark.parametrize("codec", [OPUS_FEC, PCMU], ids=["opus", "pcmu"])
def test_emodel_mos_falls_step_by_step_with_loss(clip: Clip, codec: CodecDescription) -> None:
    short = Clip(clip.samples[: 3 * clip.rate], clip.rate, clip.path)
    mos = []
    for loss in (0.0, 0.03, 0.10, 0.20):
        stats = simulate(codec, short, loss, seed=5, scored=False).receiver
        assert stats.mos is not None
        mos.append(stats.mos)
    assert all(b < a for a, b in zip(mos, mos[1:], strict=False)), mos
    assert mos[0] > 4.0 and mos[-1] < 3.5, mos


def test_rtp_json_has_the_design_shape(runs: dict[str, Run]) -> None:
    # DESIGN.md: "rtp": {"codec": "opus/48000/2", "sent": 250, "received": 249, "lost": 1,
    #                    "jitter_ms": 2.1, "rtt_ms": 18.0}
    design = ["codec", "sent", "received", "lost", "jitter_ms", "rtt_ms"]
    for label, codec_text in (
        ("opus+fec 10% loss", "opus/48000/2"),
        ("pcmu lossless", "PCMU/8000"),
    ):
        run = runs[label]
        for stats, role in ((run.sender, "sender"), (run.receiver, "receiver")):
            obj = json.loads(json.dumps(stats.rtp_json()))
            assert list(obj)[: len(design)] == design, role
            assert obj["codec"] == codec_text
            for key in ("sent", "received", "lost"):
                assert type(obj[key]) is int
            assert type(obj["jitter_ms"]) is float
            assert obj["rtt_ms"] is None or type(obj["rtt_ms"]) is float
        sender, receiver = run.sender.rtp_json(), run.receiver.rtp_json()
        assert sender["sent"] == run.sender.packets_sent > 0
        assert receiver["received"] + receiver["lost"] == pytest.approx(sender["sent"], abs=3)
        assert receiver["lost"] == run.receiver.packets_lost
        # A hears B's reports, which carry A's sender-report times: the RTT (2 x 30 ms)
        assert sender["rtt_ms"] == pytest.approx(60, abs=15)
        assert receiver["jitter_ms"] > 0  # the link has 0-10 ms of jitter


# --- one real-socket run ----------------------------------------------------------------------


class LossyTransport:
    """Wraps a transport and drops sent RTP datagrams at random (seeded)."""

    def __init__(self, inner: UdpTransport, loss: float, seed: int) -> None:
        self.inner = inner
        self.loss = loss
        self.rng = random.Random(seed)
        self.sent = 0
        self.dropped = 0
        self.passed: list[bytes] = []  # the RTP datagrams that went out

    @property
    def on_receive(self) -> Callable[[bytes], None] | None:
        return self.inner.on_receive

    @on_receive.setter
    def on_receive(self, callback: Callable[[bytes], None] | None) -> None:
        self.inner.on_receive = callback

    def send(self, data: bytes) -> None:
        is_rtp = len(data) > 1 and not 192 <= data[1] <= 223  # RFC 5761 §4
        if is_rtp:
            self.sent += 1
            if self.rng.random() < self.loss:
                self.dropped += 1
                return
            self.passed.append(data)
        self.inner.send(data)


async def _real_socket_call(
    clip_path: Path, record: Path, loss: float
) -> tuple[LossyTransport, Stats]:
    ta = await open_udp_transport()
    tb = await open_udp_transport()
    ta.remote, tb.remote = tb.local_address, ta.local_address
    lossy = LossyTransport(ta, loss, seed=11)
    now, offset = time.monotonic(), time.time() - time.monotonic()
    a = RtpSession(OPUS_FEC, rng=random.Random(1), cname="a@", now=now, ntp_offset=offset)
    b = RtpSession(OPUS_FEC, rng=random.Random(2), cname="b@", now=now, ntp_offset=offset)
    a.expect_loss(round(loss * 100))  # as the first RTCP report would
    source = WavFileSource(clip_path, 48000)
    silence = SilenceSource(48000)  # B sends too (RTP and sender reports)
    sink_a = WavFileSink(record.with_suffix(".a.wav"), 48000)
    sink_b = WavFileSink(record, 48000)
    sa = MediaStream(a, lossy, source, sink_a)
    sb = MediaStream(b, tb, silence, sink_b)
    sb.start()
    sa.start()
    try:
        await asyncio.sleep(source.duration + 0.4)
    finally:
        await sa.stop()
        await sb.stop()
        ta.close()
        tb.close()
    return lossy, b.stats()


def test_real_sockets_with_loss_in_the_transport(
    clip: Clip, runs: dict[str, Run], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the first two sentences: about 4.5 s of real time
    short = clip.samples[: int(4.6 * clip.rate)]
    short_clip = Clip(short, clip.rate, tmp_path / "short.wav")
    save_wav(short_clip.path, short, clip.rate)
    record = tmp_path / "b.wav"
    lossy, received = asyncio.run(_real_socket_call(short_clip.path, record, LOSS))
    recorded, _ = load_wav(record)
    aligned = align(short_clip.at(48000), recorded, 48000)
    quality = score(short_clip, aligned, 48000)
    with capsys.disabled():
        print(
            f"\n  real sockets, opus+fec 10% loss: lost {lossy.dropped}/{lossy.sent}, "
            f"fec {received.fec_frames}, concealed {received.concealed_frames}: "
            f"PESQ {quality:.2f}"
        )
    assert lossy.dropped > 0
    assert received.packets_lost >= lossy.dropped - 2  # the last ones may look in flight
    assert received.fec_frames > 0.5 * lossy.dropped
    # the same quality as the virtual-clock run with the same loss (another loss pattern and
    # a shorter clip, real-time scheduling on a loaded machine: a wide margin), and better
    # than concealment alone there
    assert quality >= runs["opus+fec 10% loss"].pesq - 0.8
    assert quality > runs["opus plc-only 10% loss"].pesq


# --- a stalled event loop on real sockets ---------------------------------------------------


async def _stalled_call(record: Path) -> tuple[MediaStream, MediaStream, LossyTransport]:
    ta = await open_udp_transport()
    tb = await open_udp_transport()
    ta.remote, tb.remote = tb.local_address, ta.local_address
    spy = LossyTransport(ta, 0.0, seed=1)
    now, offset = time.monotonic(), time.time() - time.monotonic()
    a = RtpSession(PCMU, rng=random.Random(3), cname="a@", now=now, ntp_offset=offset)
    b = RtpSession(PCMU, rng=random.Random(4), cname="b@", now=now, ntp_offset=offset)
    sa = MediaStream(a, spy, ToneSource(440, 8000), NullSink(8000))
    sb = MediaStream(b, tb, SilenceSource(8000), WavFileSink(record, 8000))
    sb.start()
    sa.start()
    try:
        await asyncio.sleep(1.0)
        time.sleep(0.6)  # a blocking call stalls the event loop: no frame is sent meanwhile
        await asyncio.sleep(1.2)
    finally:
        await sa.stop()
        await sb.stop()
        ta.close()
        tb.close()
    return sa, sb, spy


def test_a_stalled_sender_leaves_a_marked_gap(tmp_path: Path) -> None:
    record = tmp_path / "b.wav"
    sa, sb, spy = asyncio.run(_stalled_call(record))
    skipped = sa.frames_skipped
    assert skipped >= 15  # 0.6 s stall, the pacer gives up on ticks more than 0.2 s late
    assert sa.session.skipped_frames == skipped
    rtp = [RtpPacket.parse(d) for d in spy.passed]
    pairs = list(zip(rtp, rtp[1:], strict=False))
    assert {(b.sequence_number - a.sequence_number) % 2**16 for a, b in pairs} == {1}
    ts_steps = [(b.timestamp - a.timestamp) % 2**32 for a, b in pairs]
    gaps = [i for i, step in enumerate(ts_steps) if step != 160]
    # every skipped frame is in the timestamps, each gap ends with a marked packet
    assert sum(ts_steps[i] // 160 - 1 for i in gaps) == skipped
    assert [i for i, p in enumerate(rtp) if p.marker] == [0] + [i + 1 for i in gaps]
    stats = sb.session.stats()
    assert stats.packets_lost == 0 and stats.loss_percent == 0
    # the tone plays on after the stall
    recorded, _ = load_wav(record)
    after = recorded[-6400:-800]  # the last second but the final 100 ms
    assert abs(dominant_frequency(after, 8000) - 440) <= 3
    assert rms_dbfs(after) > -20
