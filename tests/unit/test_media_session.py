"""Two RTP sessions back to back over a simulated link on a virtual clock."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.jitter import JitterBufferConfig
from media.rtcp import (
    Goodbye,
    ReceiverReport,
    SenderReport,
    SourceDescription,
    parse_rtcp,
    serialize_rtcp,
)
from media.rtp import RtpPacket
from media.session import (
    RTCP_COMPONENT,
    RTP_COMPONENT,
    ByeReceived,
    CodecDescription,
    DtmfReceived,
    LocalSsrcChanged,
    RemoteSsrcChanged,
    RtpSession,
)

OPUS = CodecDescription("opus", 111, 48000, 2, {"useinbandfec": "1"})
OPUS_NO_FEC = CodecDescription("opus", 111, 48000, 2, {})
PCMU = CodecDescription("PCMU", 0, 8000)
PCMA = CodecDescription("PCMA", 8, 8000)
TE48 = CodecDescription("telephone-event", 101, 48000)
TE8 = CodecDescription("telephone-event", 101, 8000)
TICK = 0.001


@dataclass(order=True)
class _Datagram:
    arrival: float
    order: int
    data: bytes = field(compare=False)
    component: int = field(compare=False)


class Link:
    """One direction of the network: delay + uniform jitter, random loss (seeded)."""

    def __init__(
        self, delay: float = 0.02, jitter: float = 0.0, loss: float = 0.0, seed: int = 1
    ) -> None:
        self.delay, self.jitter, self.loss = delay, jitter, loss
        self.rng = random.Random(seed)
        self.queue: list[_Datagram] = []
        self.count = 0
        self.sent = 0
        self.dropped = 0
        self.drop_filter: Callable[[bytes], bool] | None = None
        self.components: set[int] = set()

    def send(self, data: bytes, now: float, component: int = RTP_COMPONENT) -> None:
        self.sent += 1
        self.components.add(component)
        if (self.drop_filter and self.drop_filter(data)) or (
            self.loss and self.rng.random() < self.loss
        ):
            self.dropped += 1
            return
        self.count += 1
        arrival = now + self.delay + self.rng.uniform(0, self.jitter)
        heapq.heappush(self.queue, _Datagram(arrival, self.count, data, component))

    def deliver(self, now: float, session: RtpSession) -> None:
        while self.queue and self.queue[0].arrival <= now:
            d = heapq.heappop(self.queue)
            session.receive(d.data, now, d.component)


def tone(freq: float, rate: int, n: int, start: int, amplitude: float = 8000) -> np.ndarray:
    t = (start + np.arange(n)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


@dataclass
class Call:
    a: RtpSession
    b: RtpSession
    ab: Link
    ba: Link
    heard_by_a: list[np.ndarray] = field(default_factory=list)
    heard_by_b: list[np.ndarray] = field(default_factory=list)
    events_a: list = field(default_factory=list)
    events_b: list = field(default_factory=list)
    now: float = 0.0
    freq_a: float = 440.0
    freq_b: float = 1000.0
    samples_a: int = 0
    samples_b: int = 0
    silent_a: bool = False
    speech_a: bool = False  # A sends the ``_speech_at`` signal instead of its tone

    def run(self, seconds: float) -> None:
        a, b = self.a, self.b
        end = self.now + seconds
        step = round(self.now / TICK)
        while self.now < end:
            step += 1
            now = self.now = step * TICK
            self.ab.deliver(now, b)
            self.ba.deliver(now, a)
            for s, link in ((a, self.ab), (b, self.ba)):
                timer = s.get_timer()
                if timer is not None and timer <= now:
                    s.handle_timer(now)
                for data, component in s.datagrams_to_send():
                    link.send(data, now, component)
            if step % 20 == 0:  # A's 20 ms tick
                if self.speech_a:
                    frame = _speech_at(self.samples_a, a.frame_samples)
                else:
                    frame = tone(self.freq_a, a.sample_rate, a.frame_samples, self.samples_a)
                if a.channels == 2:
                    frame = np.repeat(frame[:, None], 2, axis=1)
                if self.silent_a:
                    frame = np.zeros_like(frame)
                self.samples_a += a.frame_samples
                for data in a.send_frame(frame, now):
                    self.ab.send(data, now)
                self.heard_by_a.append(a.playout(now))
            if step % 20 == 7:  # B's tick, another phase
                frame = tone(self.freq_b, b.sample_rate, b.frame_samples, self.samples_b)
                if b.channels == 2:
                    frame = np.repeat(frame[:, None], 2, axis=1)
                self.samples_b += b.frame_samples
                for data in b.send_frame(frame, now):
                    self.ba.send(data, now)
                self.heard_by_b.append(b.playout(now))
            while (event := a.next_event()) is not None:
                self.events_a.append(event)
            while (event := b.next_event()) is not None:
                self.events_b.append(event)


def make_call(
    codec_a: CodecDescription,
    codec_b: CodecDescription | None = None,
    *,
    ab: Link | None = None,
    ba: Link | None = None,
    te: CodecDescription | None = None,
    seed: int = 0,
    **kw,
) -> Call:
    a = RtpSession(codec_a, telephone_event=te, rng=random.Random(seed), cname="a@test", **kw)
    b = RtpSession(
        codec_b or codec_a, telephone_event=te, rng=random.Random(seed + 1), cname="b@test", **kw
    )
    return Call(a, b, ab or Link(seed=seed + 10), ba or Link(seed=seed + 20))


def dominant_frequency(frames: list[np.ndarray], rate: int, seconds: float = 2.0) -> float:
    x = np.concatenate(frames).astype(np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    x = x[-int(seconds * rate) :]
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("codec", [OPUS, PCMU, PCMA], ids=["opus", "pcmu", "pcma"])
def test_tone_arrives_with_its_frequency(codec: CodecDescription) -> None:
    call = make_call(codec, ab=Link(0.03, 0.02, 0.02, seed=3), ba=Link(0.03, 0.02, 0.02, seed=4))
    call.run(4.0)
    rate = call.a.sample_rate
    assert dominant_frequency(call.heard_by_b, rate) == pytest.approx(440, abs=3)
    assert dominant_frequency(call.heard_by_a, rate) == pytest.approx(1000, abs=3)
    level = np.sqrt(np.mean(np.concatenate(call.heard_by_b[-100:]).astype(float) ** 2))
    assert level > 3000  # 8000 peak -> ~5657 RMS; concealment keeps it up
    assert call.heard_by_b[-1].shape == ((960,) if codec is OPUS else (160,))
    first = [e for e in call.events_b if isinstance(e, RemoteSsrcChanged)]
    assert first == [RemoteSsrcChanged(None, call.a.ssrc)]


def test_stereo_opus_frames() -> None:
    call = make_call(OPUS, channels=2)
    call.run(1.0)
    assert call.heard_by_b[-1].shape == (960, 2)
    assert dominant_frequency(call.heard_by_b, 48000, 0.5) == pytest.approx(440, abs=5)


def test_rtcp_reports_loss_jitter_and_rtt() -> None:
    call = make_call(PCMU, ab=Link(0.040, 0.010, 0.05, seed=5), ba=Link(0.030, 0.010, 0.05, seed=6))
    call.run(40.0)
    sa, sb = call.a.stats(call.now), call.b.stats(call.now)
    # RTT = 40 + 30 ms plus the mean jitter of both ways (5 + 5 ms)
    assert sa.rtt_ms == pytest.approx(80, abs=10)
    assert sb.rtt_ms == pytest.approx(80, abs=10)
    # loss measured by B and reported back to A
    measured = 100 * call.ab.dropped / call.ab.sent
    assert sb.loss_percent == pytest.approx(measured, abs=1.5)
    assert sa.remote_loss_percent == pytest.approx(measured, abs=1.5)
    assert 3 < sb.loss_percent < 7
    # uniform 0-10 ms jitter: mean |D| = 10/3 ms
    assert 1.5 < sb.jitter_ms < 6
    assert 1.5 < sa.remote_jitter_ms < 6
    assert sb.packets_received + sb.packets_lost == pytest.approx(sa.packets_sent, abs=5)
    assert sa.bytes_sent == 160 * sa.packets_sent
    assert sa.mos is not None and 3.0 < sa.mos < 4.3
    assert "PCMU/8000" in str(sa)


def test_lossless_call_mos_and_counts() -> None:
    call = make_call(PCMA)
    call.run(10.0)
    sa, sb = call.a.stats(call.now), call.b.stats(call.now)
    assert sb.packets_lost == 0 and sb.concealed_frames == 0
    assert sb.packets_received == sa.packets_sent - 1  # the last one is in flight
    assert sb.mos is not None and sb.mos > 4.3
    assert sb.rtt_ms == pytest.approx(40, abs=3)


def test_rtcp_schedule_and_report_types() -> None:
    a = RtpSession(PCMU, rng=random.Random(1))
    first = a.get_timer()
    assert first is not None and 1.25 <= first <= 3.75
    times = []
    now = 0.0
    packets = []
    for _ in range(20):
        timer = a.get_timer()
        assert timer is not None
        now = timer
        a.handle_timer(now)
        times.append(now)
        packets += [d for d, _ in a.datagrams_to_send()]
    gaps = np.diff(times)
    assert all(2.5 <= g <= 7.5 for g in gaps)
    assert 4 < float(np.mean(gaps)) < 6
    # nothing sent: receiver reports with a CNAME, no report block yet
    parsed = parse_rtcp(packets[0], strict=True)
    assert isinstance(parsed[0], ReceiverReport) and parsed[0].reports == []
    assert isinstance(parsed[1], SourceDescription) and parsed[1].chunks[0].cname


def test_sender_report_content() -> None:
    a = RtpSession(PCMU, rng=random.Random(2), ntp_offset=1_700_000_000.0)
    for k in range(500):
        a.send_frame(np.zeros(160, np.int16), k * 0.02)
    a.handle_timer(10.0)
    (data, component) = a.datagrams_to_send()[0]
    assert component == RTP_COMPONENT
    sr = parse_rtcp(data, strict=True)[0]
    assert isinstance(sr, SenderReport)
    assert (sr.ssrc, sr.packet_count, sr.octet_count) == (a.ssrc, 500, 80000)
    assert abs(sr.ntp_timestamp / 2**32 - 2208988800 - 1_700_000_010.0) < 1e-6
    # the RTP timestamp is extrapolated to the report time
    first_ts = RtpPacket.parse(a.send_frame(np.zeros(160, np.int16), 10.0)[0]).timestamp
    assert sr.rtp_timestamp == first_ts


def test_receiver_feeds_opus_loss_back_to_sender() -> None:
    call = make_call(OPUS, ab=Link(0.02, 0.0, 0.10, seed=8))
    assert call.a.opus_encoder is not None and call.a.opus_encoder.fec
    assert call.a.opus_encoder.packet_loss_perc == 0
    call.run(12.0)
    assert 4 <= call.a.opus_encoder.packet_loss_perc <= 20


def test_opus_fec_recovers_single_losses() -> None:
    # speech, not a pure tone: SILK codes LBRR only for frames it finds active, and a steady
    # 440 Hz tone is near-silence to it (almost no packet would carry FEC data)
    call = make_call(OPUS, ab=Link(0.02, 0.005, 0.08, seed=9))
    call.speech_a = True
    call.run(20.0)
    sb = call.b.stats(call.now)
    assert sb.packets_lost > 50
    assert sb.fec_frames > 0.5 * sb.packets_lost
    assert sb.concealed_frames < sb.packets_lost
    # every lost frame is counted once: recovered from FEC or concealed
    assert sb.fec_frames + sb.concealed_frames <= sb.packets_lost + 3
    heard = np.concatenate(call.heard_by_b).astype(np.float64)
    assert np.sqrt(np.mean(heard[-48000:] ** 2)) > 1000  # the speech plays on


def test_opus_fec_is_not_counted_for_packets_without_lbrr() -> None:
    # a tone that SILK treats as inactive: the next packets carry no LBRR data, so the lost
    # frames are concealed (and counted as such), not "recovered"
    call = make_call(OPUS, ab=Link(0.02, 0.005, 0.08, seed=9))
    call.run(10.0)
    sb = call.b.stats(call.now)
    assert sb.packets_lost > 20
    assert sb.fec_frames < 0.2 * sb.packets_lost
    assert sb.concealed_frames > 0.5 * sb.packets_lost
    assert dominant_frequency(call.heard_by_b, 48000) == pytest.approx(440, abs=3)


def _speech_at(start: int, n: int, rate: int = 48000) -> np.ndarray:
    """``n`` samples of a voiced, syllable-modulated signal from sample ``start`` on."""
    t = (start + np.arange(n)) / rate
    # the phase of the gliding pitch 150 + 30 sin(2 pi 1.3 t) in closed form, so frames join up
    phase = 2 * np.pi * (150 * t - 30 / (2 * np.pi * 1.3) * np.cos(2 * np.pi * 1.3 * t))
    x = sum(np.sin(k * phase) / k for k in range(1, 20))
    x = 6000 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) / 2
    return x.astype(np.int16)


def _speech(n_frames: int) -> list[np.ndarray]:
    rate = 48000
    t = np.arange(n_frames * 960) / rate
    f0 = 150 + 30 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 20))
    x = 6000 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) / 2
    pcm = x.astype(np.int16)
    return [pcm[i * 960 : (i + 1) * 960] for i in range(n_frames)]


def _play_through(codec: CodecDescription, frames: list[np.ndarray], lost: set[int]) -> np.ndarray:
    """A sends ``frames`` to B over a fixed-delay link dropping the given packets."""
    a = RtpSession(codec, rng=random.Random(1), jitter=JitterBufferConfig(lookahead_frames=1))
    b = RtpSession(codec, rng=random.Random(2), jitter=JitterBufferConfig(lookahead_frames=1))
    assert a.opus_encoder is not None
    a.opus_encoder.packet_loss_perc = 10  # as RTCP would have set it
    out = []
    in_flight: list[tuple[float, bytes]] = []
    for k, frame in enumerate(frames):
        now = k * 0.02
        for data in a.send_frame(frame, now):
            if k not in lost:
                in_flight.append((now + 0.03, data))
        while in_flight and in_flight[0][0] <= now + 0.005:
            b.receive(in_flight.pop(0)[1], now + 0.005)
        out.append(b.playout(now + 0.005))
    return np.concatenate(out).astype(np.float64)


def test_opus_fec_sounds_better_than_concealment() -> None:
    frames = _speech(300)
    lost = set(range(20, 290, 9))
    clean = _play_through(OPUS, frames, set())
    with_fec = _play_through(OPUS, frames, lost)
    without = _play_through(OPUS_NO_FEC, frames, lost)
    fec_error = float(np.sum((with_fec - clean) ** 2))
    plc_error = float(np.sum((without - clean) ** 2))
    assert fec_error < 0.5 * plc_error


def test_dtmf_digits_arrive_once_each() -> None:
    call = make_call(OPUS, te=TE48, ab=Link(0.03, 0.02, 0.0, seed=11))
    call.run(0.5)
    call.a.send_dtmf("123#*9")
    assert call.a.dtmf_pending
    call.run(3.0)
    assert not call.a.dtmf_pending
    digits = [e.digit for e in call.events_b if isinstance(e, DtmfReceived)]
    assert digits == list("123#*9")
    # the telephone-event packets did not count as lost audio
    sb = call.b.stats(call.now)
    assert sb.packets_lost == 0 and sb.concealed_frames == 0
    assert dominant_frequency(call.heard_by_b, 48000, 0.5) == pytest.approx(440, abs=5)


def test_dtmf_survives_loss() -> None:
    call = make_call(PCMU, te=TE8, ab=Link(0.03, 0.01, 0.10, seed=12))
    call.run(0.5)
    call.a.send_dtmf("0123456789")
    call.run(5.0)
    digits = [e.digit for e in call.events_b if isinstance(e, DtmfReceived)]
    assert digits == list("0123456789")


def test_dtmf_needs_negotiation() -> None:
    with pytest.raises(ValueError):
        RtpSession(PCMU).send_dtmf("1")


def test_bye_on_close() -> None:
    call = make_call(PCMU)
    call.run(1.0)
    call.a.close(call.now, "hangup")
    assert call.a.closed and call.a.get_timer() is None
    assert call.a.send_frame(np.zeros(160, np.int16), call.now) == []
    call.run(0.2)
    byes = [e for e in call.events_b if isinstance(e, ByeReceived)]
    assert byes == [ByeReceived(call.a.ssrc, "hangup")]


def test_bye_packet_is_last_in_compound() -> None:
    a = RtpSession(PCMU, rng=random.Random(3))
    a.close(1.0)
    (data, _), *rest = a.datagrams_to_send()
    assert rest == []
    parsed = parse_rtcp(data, strict=True)
    assert isinstance(parsed[-1], Goodbye) and parsed[-1].ssrcs == [a.ssrc]


@pytest.mark.parametrize("codec", [PCMU, OPUS], ids=["pcmu", "opus"])
def test_remote_ssrc_change_switches_stream(codec: CodecDescription) -> None:
    call = make_call(codec, ab=Link(0.03, 0.005, 0.0, seed=13))
    call.run(2.0)
    old = call.a.ssrc
    # the peer restarts its stream (e.g. after a re-INVITE): new SSRC, seq and timestamps
    call.a = RtpSession(codec, rng=random.Random(99), cname="a2@test")
    call.freq_a = 880.0
    call.run(2.0)
    changes = [e for e in call.events_b if isinstance(e, RemoteSsrcChanged)]
    assert changes == [RemoteSsrcChanged(None, old), RemoteSsrcChanged(old, call.a.ssrc)]
    assert call.b.remote_ssrc == call.a.ssrc
    rate = call.b.sample_rate
    assert dominant_frequency(call.heard_by_b, rate, 1.0) == pytest.approx(880, abs=5)
    assert call.b.stats(call.now).packets_lost == 0
    assert call.b.stats(call.now).concealed_frames <= 3  # the old stream's end


def test_stray_ssrc_does_not_take_over() -> None:
    call = make_call(PCMU)
    call.run(1.0)
    stray = RtpPacket(0, 5, 5, 0xDEADBEEF, b"\xff" * 160).serialize()
    for _ in range(5):
        call.b.receive(stray, call.now)  # same seq: never passes probation
        call.run(0.02)
    assert call.b.remote_ssrc == call.a.ssrc


def test_new_ssrc_after_bye_switches_at_once() -> None:
    call = make_call(PCMU)
    call.run(1.0)
    call.b.receive(
        serialize_rtcp([Goodbye([call.a.ssrc])], compound=False),
        call.now,
    )
    # the old source still sends (its BYE came early), the new one takes over once valid
    for k in range(3):
        pkt = RtpPacket(0, 100 + k, 1000 + 160 * k, 0x1234, b"\xff" * 160).serialize()
        call.b.receive(pkt, call.now + 0.001 * k)
    assert call.b.remote_ssrc == 0x1234


def test_ssrc_collision_changes_our_ssrc_then_detects_loop() -> None:
    b = RtpSession(PCMU, rng=random.Random(4))
    old = b.ssrc
    own = RtpPacket(0, 1, 1, old, b"\xff" * 160).serialize()
    b.receive(own, 1.0)
    event = b.next_event()
    assert isinstance(event, LocalSsrcChanged) and event.old == old and event.new != old
    assert b.ssrc == event.new
    ((data, _),) = b.datagrams_to_send()
    parsed = parse_rtcp(data, strict=True)
    assert isinstance(parsed[-1], Goodbye) and parsed[-1].ssrcs == [old]
    assert parsed[-1].reason == "SSRC collision"
    # our packets come back again at once: a loop, not another collision
    b.receive(RtpPacket(0, 2, 2, b.ssrc, b"\xff" * 160).serialize(), 1.5)
    assert b.next_event() is None and b.looped_packets == 1
    assert b.ssrc == event.new


def test_rtcp_without_mux_uses_component_2() -> None:
    call = make_call(PCMU, rtcp_mux=False)
    call.run(8.0)
    assert call.ab.components == {RTP_COMPONENT, RTCP_COMPONENT}
    call.a.close(call.now)
    assert {c for _, c in call.a.datagrams_to_send()} == {RTCP_COMPONENT}
    assert call.a.stats(call.now).rtt_ms == pytest.approx(40, abs=3)


def test_malformed_datagrams_are_counted_not_raised() -> None:
    b = RtpSession(PCMU, rng=random.Random(5))
    b.receive(b"", 0.0)
    b.receive(b"\x80", 0.0)
    b.receive(b"\x40" + b"\x00" * 20, 0.0)  # RTP version 1
    b.receive(b"\x80\xc8\x00\x10" + b"\x00" * 8, 0.0)  # SR running past the datagram
    b.receive(b"\xa0\x00\x00\x01" + b"\x00" * 8 + b"\x00", 0.0)  # zero padding count
    assert b.parse_errors == 5
    b.receive(RtpPacket(96, 1, 1, 7, b"x").serialize(), 0.0)  # not negotiated
    assert b.unknown_payload_types == 1
    assert b.stats().parse_errors == 5


def test_undecodable_opus_payload_is_concealed() -> None:
    b = RtpSession(OPUS, rng=random.Random(6))
    for k in range(10):
        b.receive(RtpPacket(111, k, 960 * k, 7, b"\xff\xff\xff").serialize(), 0.02 * k)
    frames = [b.playout(0.02 * k + 0.005) for k in range(20)]
    assert all(f.shape == (960,) for f in frames)
    assert b.decode_errors > 0


def test_g711_concealment_repeats_last_frame_fading() -> None:
    b = RtpSession(PCMU, rng=random.Random(7))
    payload = RtpSession(PCMU, rng=random.Random(8))._encode(tone(400, 8000, 160, 0))
    for k in range(12):
        if k != 3:  # lost
            b.receive(RtpPacket(0, k, 160 * k, 7, payload).serialize(), 0.02 * k)
    out = [b.playout(0.001 + 0.02 * k) for k in range(12)]
    assert b.concealed_frames == 1
    audible = [f for f in out if np.any(f)]
    decoded = audible[0]
    odd = [f for f in audible if not np.array_equal(f, decoded)]
    assert len(odd) == 1
    # a copy of the last good frame with a gain ramp from 1 down to 0.8
    ratio = odd[0][decoded != 0] / decoded[decoded != 0]
    assert 0.75 < float(ratio.min()) and float(ratio.max()) <= 1.0
    assert float(ratio[:10].mean()) > float(ratio[-10:].mean())


def test_opus_dtx_sends_little_in_silence_and_receiver_hears_silence() -> None:
    codec = CodecDescription("opus", 111, 48000, 2, {"usedtx": "1", "useinbandfec": "1"})
    call = make_call(codec)
    call.silent_a = True
    call.run(5.0)
    sa, sb = call.a.stats(call.now), call.b.stats(call.now)
    assert sa.packets_sent < 0.5 * 250  # DTX sends a packet every 400 ms or so
    assert sb.packets_lost == 0
    assert max(float(np.abs(f).max()) for f in call.heard_by_b[-100:]) < 500


def test_opus_sends_20_ms_whatever_ptime_asks() -> None:
    a = RtpSession(OPUS, ptime_ms=40)
    assert a.frame_samples == 960 and a.ptime_ms == 20
    with pytest.raises(ValueError):
        RtpSession(PCMU, ptime_ms=25)


def test_unsupported_codec() -> None:
    with pytest.raises(ValueError):
        RtpSession(CodecDescription("G722", 9, 8000))
    with pytest.raises(ValueError):
        RtpSession(CodecDescription("PCMU", 0, 16000))


def test_codec_description_text() -> None:
    assert str(OPUS) == "opus/48000/2" and str(PCMU) == "PCMU/8000"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_any_datagram_is_handled(data: bytes) -> None:
    b = RtpSession(PCMU, telephone_event=TE8, rng=random.Random(9))
    b.receive(data, 0.0)
    b.receive(data, 0.01, RTCP_COMPONENT)
    b.playout(0.05)
    b.handle_timer(100.0)
    b.stats(0.1)


def test_sender_report_before_first_rtp_is_kept() -> None:
    a = RtpSession(PCMU, rng=random.Random(20))
    b = RtpSession(PCMU, rng=random.Random(21))
    for k in range(5):
        a.send_frame(tone(440, 8000, 160, 160 * k), 0.02 * k)
    a.handle_timer(10.0)
    ((sr_data, _),) = a.datagrams_to_send()
    sr = parse_rtcp(sr_data)[0]
    assert isinstance(sr, SenderReport)
    b.receive(sr_data, 10.01)  # the SR overtakes the first RTP packets
    for k in range(5):
        b.receive(a.send_frame(tone(440, 8000, 160, 0), 10.0 + 0.02 * k)[0], 10.03 + 0.02 * k)
    b.handle_timer(20.0)
    ((rr_data, _),) = b.datagrams_to_send()
    report = parse_rtcp(rr_data)[0]
    assert isinstance(report, SenderReport | ReceiverReport)
    (block,) = report.reports
    assert block.ssrc == a.ssrc
    assert block.lsr == (sr.ntp_timestamp >> 16) & 0xFFFFFFFF
    assert block.dlsr == pytest.approx((20.0 - 10.01) * 65536, abs=2)


def test_sender_clock_skew_stays_bounded_end_to_end() -> None:
    # A's sound card runs 0.5 % fast: it sends 201 frames while B plays 200
    a = RtpSession(PCMU, rng=random.Random(30))
    b = RtpSession(PCMU, rng=random.Random(31))
    link = Link(0.03, 0.01, 0.0, seed=32)
    send_period = 0.02 / 1.005
    next_send = 0.0
    delays = []
    out = []
    k = 0
    for step in range(60 * 1000):  # one minute, 1 ms steps
        now = step * TICK
        link.deliver(now, b)
        if now >= next_send:
            for data in a.send_frame(tone(440, 8000, 160, 160 * k), now):
                link.send(data, now)
            k += 1
            next_send += send_period
        if step % 20 == 5:
            out.append(b.playout(now))
            delays.append(b.jitter_buffer.current_delay_ms(now))
    assert max(delays[100:]) < 80
    assert b.jitter_buffer.buffered <= 5
    assert b.jitter_buffer.stats.dropped >= 10  # ~15 frames of drift went
    assert dominant_frequency(out, 8000) == pytest.approx(440 * 1.005, abs=4)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([111, 101, 0]),
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.sampled_from([7, 8, 0x11111111]),
            st.binary(max_size=60),
            st.booleans(),
        ),
        max_size=60,
    )
)
def test_any_rtp_stream_is_handled(packets) -> None:
    """Well-formed RTP with wild fields and payloads (corrupt Opus, short events) never
    raises and playout always yields a full frame."""
    b = RtpSession(OPUS, telephone_event=TE48, rng=random.Random(10))
    now = 0.0
    for pt, seq, ts, ssrc, payload, marker in packets:
        now += 0.01
        b.receive(RtpPacket(pt, seq, ts, ssrc, payload, marker).serialize(), now)
        assert b.playout(now).shape == (960,)
        b.handle_timer(now)
    for _ in range(10):
        now += 0.02
        assert b.playout(now).shape == (960,)
    b.stats(now)


def test_each_side_receives_with_its_own_payload_numbers() -> None:
    # we offered opus as 111 and telephone-event as 101; the peer's answer used 96 and 97
    ours = CodecDescription("opus", 96, 48000, 2, {"useinbandfec": "1"}, receive_payload_type=111)
    te_ours = CodecDescription("telephone-event", 97, 48000, receive_payload_type=101)
    theirs = CodecDescription("opus", 111, 48000, 2, {}, receive_payload_type=96)
    te_theirs = CodecDescription("telephone-event", 101, 48000, receive_payload_type=97)
    a = RtpSession(ours, telephone_event=te_ours, rng=random.Random(40))
    b = RtpSession(theirs, telephone_event=te_theirs, rng=random.Random(41))
    call = Call(a, b, Link(seed=42), Link(seed=43))
    call.run(0.5)
    a.send_dtmf("5")
    call.run(2.0)
    assert RtpPacket.parse(a.send_frame(np.zeros(960, np.int16), call.now)[0]).payload_type == 96
    assert a.unknown_payload_types == b.unknown_payload_types == 0
    assert [e.digit for e in call.events_b if isinstance(e, DtmfReceived)] == ["5"]
    assert dominant_frequency(call.heard_by_b, 48000, 1.0) == pytest.approx(440, abs=3)
    assert dominant_frequency(call.heard_by_a, 48000, 1.0) == pytest.approx(1000, abs=3)


@pytest.mark.parametrize("ptime", [10, 30, 60])
def test_peer_packet_time_differs_from_ours(ptime: int) -> None:
    # the peer sends G.711 in 10/30/60 ms packets, we play 20 ms frames
    a = RtpSession(PCMU, ptime_ms=ptime, rng=random.Random(50))
    b = RtpSession(PCMU, rng=random.Random(51))
    call = Call(a, b, Link(0.03, 0.005, 0.03, seed=52), Link(seed=53))
    out = []
    samples = 0
    for step in range(1, 6001):  # 6 s in 1 ms steps
        now = step * TICK
        call.ab.deliver(now, b)
        if step % ptime == 0:
            for data in a.send_frame(tone(440, 8000, a.frame_samples, samples), now):
                call.ab.send(data, now)
            samples += a.frame_samples
        if step % 20 == 3:
            frame = b.playout(now)
            assert frame.shape == (160,)
            out.append(frame)
    assert dominant_frequency(out, 8000, 4.0) == pytest.approx(440, abs=3)
    jb = b.jitter_buffer.stats
    assert jb.inserted + jb.dropped <= 3  # no drift between packet and frame clocks
    lost = b.stats(6.0).packets_lost
    assert lost > 0 and b.concealed_frames <= lost + 3
    level = np.sqrt(np.mean(np.concatenate(out[-150:]).astype(float) ** 2))
    assert level > 4000


@pytest.mark.parametrize(
    ("sent", "ours"),
    [(PCMA, PCMU), (OPUS, PCMU), (PCMU, OPUS), (PCMA, OPUS)],
    ids=["pcma-to-pcmu", "opus-to-pcmu", "pcmu-to-opus", "pcma-to-opus"],
)
def test_peer_may_send_another_negotiated_codec(
    sent: CodecDescription, ours: CodecDescription
) -> None:
    # RFC 3264 §5.1: the peer may send any format of the answer, not the one we send
    a = RtpSession(sent, rng=random.Random(60))
    b = RtpSession(ours, receive_codecs=[PCMU, PCMA, OPUS], rng=random.Random(61))
    call = Call(a, b, Link(0.03, 0.01, 0.02, seed=62), Link(seed=63))
    call.run(4.0)
    assert b.unknown_payload_types == 0
    assert call.heard_by_b[-1].shape == (b.frame_samples,)
    assert dominant_frequency(call.heard_by_b, b.sample_rate) == pytest.approx(440, abs=3)
    level = np.sqrt(np.mean(np.concatenate(call.heard_by_b[-100:]).astype(float) ** 2))
    assert level > 3000
    sb = call.b.stats(call.now)
    assert 0 < sb.jitter_ms < 10  # the interarrival jitter in the sender's clock, in ms


def test_codec_switch_mid_stream() -> None:
    # the same source changes from PCMU (8 kHz clock) to Opus (48 kHz) mid-call
    b = RtpSession(OPUS, receive_codecs=[PCMU], rng=random.Random(70))
    a1 = RtpSession(PCMU, rng=random.Random(71))
    call = Call(a1, b, Link(0.03, 0.005, 0.0, seed=72), Link(seed=73))
    call.run(2.0)
    a2 = RtpSession(OPUS, rng=random.Random(74))
    a2.ssrc, a2._seq = a1.ssrc, a1._seq  # same SSRC, sequence numbers go on
    call.a, call.freq_a, call.samples_a = a2, 880.0, 0
    call.run(2.0)
    assert [e for e in call.events_b if isinstance(e, RemoteSsrcChanged)] == [
        RemoteSsrcChanged(None, a1.ssrc)
    ]
    assert dominant_frequency(call.heard_by_b, 48000, 1.0) == pytest.approx(880, abs=3)
    sb = b.stats(call.now)
    assert sb.packets_lost == 0
    assert sb.jitter_ms < 10  # the clock change is not taken for jitter
    assert b.jitter_buffer.clock_rate == 48000


def test_undecodable_receive_codec_is_ignored() -> None:
    b = RtpSession(PCMU, receive_codecs=[CodecDescription("G722", 9, 8000)])
    b.receive(RtpPacket(9, 1, 1, 7, b"x" * 160).serialize(), 0.0)
    assert b.unknown_payload_types == 1


def test_long_bye_reason_is_truncated_and_long_cname_refused() -> None:
    a = RtpSession(PCMU, rng=random.Random(80))
    a.close(1.0, "é" * 300)
    ((data, _),) = a.datagrams_to_send()
    bye = parse_rtcp(data)[-1]
    assert isinstance(bye, Goodbye) and bye.reason == "é" * 127
    with pytest.raises(ValueError):
        RtpSession(PCMU, cname="x" * 256)


def test_collision_restarts_sender_counts() -> None:
    b = RtpSession(PCMU, rng=random.Random(81))
    for k in range(10):
        b.send_frame(np.zeros(160, np.int16), 0.02 * k)
    b.receive(RtpPacket(0, 1, 1, b.ssrc, b"\xff" * 160).serialize(), 0.3)
    b.datagrams_to_send()
    b.send_frame(np.zeros(160, np.int16), 0.32)
    b.handle_timer(10.0)
    ((data, _),) = b.datagrams_to_send()
    sr = parse_rtcp(data)[0]
    assert isinstance(sr, SenderReport)
    assert sr.ssrc == b.ssrc and sr.packet_count == 1


def test_comfort_noise_fills_the_pause_and_is_not_a_loss() -> None:
    # a G.711 sender with VAD: speech, one CN packet (RFC 3389, -60 dBov), a 1 s pause, speech
    a = RtpSession(PCMU, rng=random.Random(90))
    b = RtpSession(PCMU, rng=random.Random(91))
    packets: list[tuple[float, bytes]] = []
    seq, ts = 100, 5000
    for k in range(150):
        now = k * 0.02
        if 50 <= k < 100:
            if k == 50:
                cn = RtpPacket(13, seq, ts, 0xCAFE, bytes([60])).serialize()
                packets.append((now + 0.03, cn))
                seq += 1
        else:
            payload = a._encode(tone(440, 8000, 160, 160 * k))
            packet = RtpPacket(0, seq, ts, 0xCAFE, payload, marker=k in (0, 100))
            packets.append((now + 0.03, packet.serialize()))
            seq += 1
        ts += 160
    out = []
    for k in range(170):
        now = k * 0.02 + 0.011
        while packets and packets[0][0] <= now:
            b.receive(packets.pop(0)[1], now)
        out.append(b.playout(now))
    sb = b.stats(3.4)
    assert sb.packets_lost == 0 and b.unknown_payload_types == 0
    assert b.concealed_frames <= 3  # the start of the pause is not known at once
    pause = np.concatenate(out[60:95]).astype(float)
    rms = float(np.sqrt(np.mean(pause**2)))
    assert 20 < rms < 50  # -60 dBov is an RMS of about 33
    assert dominant_frequency(out[110:150], 8000, 0.8) == pytest.approx(440, abs=3)


def test_unknown_payload_from_the_current_source_keeps_its_sequence_number() -> None:
    b = RtpSession(PCMU, rng=random.Random(92))
    payload = b"\xff" * 160
    for k in range(60):
        pt = 96 if k == 30 else 0  # something we do not play, in the middle
        b.receive(RtpPacket(pt, k, 160 * k, 7, payload).serialize(), 0.02 * k)
        b.playout(0.02 * k + 0.01)
    assert b.unknown_payload_types == 1
    assert b.stats(1.3).packets_lost == 0


class _DupLink(Link):
    """A link that also duplicates packets."""

    def __init__(self, *args, dup: float = 0.0, **kw) -> None:
        super().__init__(*args, **kw)
        self.dup = dup

    def send(self, data: bytes, now: float, component: int = RTP_COMPONENT) -> None:
        super().send(data, now, component)
        if self.dup and self.rng.random() < self.dup:
            super().send(data, now + self.rng.uniform(0, 0.05), component)


@settings(max_examples=15, deadline=None)
@given(
    codec=st.sampled_from([PCMU, OPUS]),
    delay=st.floats(0.0, 0.2),
    jitter=st.floats(0.0, 0.1),
    loss=st.floats(0.0, 0.3),
    dup=st.floats(0.0, 0.2),
    digits=st.text("0123456789*#", max_size=4),
    seed=st.integers(0, 1000),
)
def test_random_network_conditions(codec, delay, jitter, loss, dup, digits, seed) -> None:
    """Whatever the network does: frames keep coming, digits arrive at most once and in
    order, the counters add up."""
    te = TE48 if codec is OPUS else TE8
    call = make_call(
        codec,
        te=te,
        ab=_DupLink(delay, jitter, loss, seed=seed, dup=dup),
        ba=_DupLink(delay, jitter, loss, seed=seed + 1, dup=dup),
        seed=seed,
    )
    call.run(0.3)
    if digits:
        call.a.send_dtmf(digits)
    call.run(2.5)
    assert all(f.shape == (call.b.frame_samples,) for f in call.heard_by_b)
    got = "".join(e.digit or "?" for e in call.events_b if isinstance(e, DtmfReceived))
    it = iter(digits)
    assert all(d in it for d in got)  # a subsequence: in order, none twice
    sb, sa = call.b.stats(call.now), call.a.stats(call.now)
    assert sb.packets_received <= call.ab.sent * 2
    assert sb.packets_received + sb.packets_lost <= sa.packets_sent + sb.duplicate_packets + 1
    assert sb.parse_errors == 0 and call.b.unknown_payload_types == 0
    if sb.mos is not None:
        assert 1.0 <= sb.mos <= 4.5


def test_opus_loss_feedback_decays_when_the_loss_stops() -> None:
    call = make_call(OPUS, ab=Link(0.02, 0.0, 0.15, seed=95))
    call.run(12.0)
    assert call.a.opus_encoder is not None
    assert call.a.opus_encoder.packet_loss_perc >= 5
    call.ab.loss = 0.0
    call.run(25.0)
    assert call.a.opus_encoder.packet_loss_perc <= 1
