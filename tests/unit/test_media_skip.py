"""Gaps in the sent stream: RtpSession.skip_frames and MediaStream's use of it.

When the sender falls behind (a stalled event loop makes the Pacer skip ticks, a microphone
ring overflows) the frames that were never sent must show as a gap in the RTP timestamps,
with the marker bit on the packet after it (RFC 3550 §5.1, RFC 3551 §4.1), and not as lost
packets: the sequence numbers stay contiguous.
"""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.aio import MediaStream, source_dropped_frames
from media.ringbuffer import FrameRingBuffer
from media.rtp import RtpPacket
from media.session import CodecDescription, RtpSession
from media.sources import Pacer, SilenceSource, ToneSource
from tests.helpers_media import ListTransport

OPUS = CodecDescription("opus", 111, 48000, 2, {"useinbandfec": "1"})
PCMU = CodecDescription("PCMU", 0, 8000)


def tone_frame(session: RtpSession, k: int, freq: float = 440.0) -> np.ndarray:
    n = session.frame_samples
    t = (k * n + np.arange(n)) / session.sample_rate
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


@pytest.mark.parametrize("codec", [PCMU, OPUS], ids=["pcmu", "opus"])
def test_skip_frames_advances_timestamp_not_sequence_and_marks(codec: CodecDescription) -> None:
    s = RtpSession(codec, rng=random.Random(1))
    packets = []
    for k in range(3):
        packets += s.send_frame(tone_frame(s, k), k * 0.02)
    s.skip_frames(5)
    for k in range(8, 10):
        packets += s.send_frame(tone_frame(s, k), k * 0.02)
    rtp = [RtpPacket.parse(p) for p in packets]
    ts = np.array([p.timestamp for p in rtp], dtype=np.int64)
    seq = np.array([p.sequence_number for p in rtp], dtype=np.int64)
    steps = np.diff(ts) % 2**32
    assert list(steps) == [s.frame_ts, s.frame_ts, 6 * s.frame_ts, s.frame_ts]
    assert list(np.diff(seq) % 2**16) == [1, 1, 1, 1]
    assert [p.marker for p in rtp] == [True, False, False, True, False]
    assert s.skipped_frames == 5


def test_skip_frames_zero_negative_and_closed() -> None:
    s = RtpSession(PCMU, rng=random.Random(2))
    first = RtpPacket.parse(s.send_frame(np.zeros(160, np.int16), 0.0)[0])
    s.skip_frames(0)
    second = RtpPacket.parse(s.send_frame(np.zeros(160, np.int16), 0.02)[0])
    assert (second.timestamp - first.timestamp) % 2**32 == 160 and not second.marker
    with pytest.raises(ValueError):
        s.skip_frames(-1)
    s.close(0.04)
    s.skip_frames(3)
    assert s.skipped_frames == 0 and s.send_frame(np.zeros(160, np.int16), 0.06) == []


def test_timestamp_wraps_across_a_skip() -> None:
    s = RtpSession(PCMU, rng=random.Random(3))
    s._timestamp = 2**32 - 200  # near the wrap
    a = RtpPacket.parse(s.send_frame(np.zeros(160, np.int16), 0.0)[0])
    s.skip_frames(2)
    b = RtpPacket.parse(s.send_frame(np.zeros(160, np.int16), 0.06)[0])
    assert a.timestamp == 2**32 - 200 and b.timestamp == (2**32 - 200 + 480) % 2**32


@pytest.mark.parametrize("codec", [PCMU, OPUS], ids=["pcmu", "opus"])
@pytest.mark.parametrize("use_skip", [True, False])
def test_receiver_plays_the_gap_and_keeps_its_delay(
    codec: CodecDescription, use_skip: bool
) -> None:
    """A sender stalls for 300 ms, then goes on with the next frame. Marked as a gap, the
    receiver sees no loss and plays the later audio at its usual delay; sent as if nothing
    happened, the audio after the stall arrives 300 ms behind its timestamps."""
    a = RtpSession(codec, rng=random.Random(4))
    b = RtpSession(codec, rng=random.Random(5))
    heard: list[np.ndarray] = []
    in_flight: list[tuple[float, bytes]] = []
    stall = range(50, 65)  # A's ticks 50-64 never happen
    k = 0
    for tick in range(150):
        now = tick * 0.02
        if tick not in stall:
            if tick == stall.stop and use_skip:
                a.skip_frames(len(stall))
            in_flight += [(now + 0.03, d) for d in a.send_frame(tone_frame(a, k), now)]
            k += 1
        while in_flight and in_flight[0][0] <= now + 0.01:
            b.receive(in_flight.pop(0)[1], now + 0.01)
        heard.append(b.playout(now + 0.01))
    stats = b.stats(150 * 0.02)
    assert stats.packets_lost == 0
    loud = [bool(np.abs(f).max() > 1000) for f in heard]
    if use_skip:
        # the gap is heard as a gap: concealment bridges the first frames (the receiver
        # cannot know yet that the sender paused), then silence ...
        assert stats.concealed_frames <= b.jitter_buffer.config.max_lost_run
        assert not any(loud[stall.start + 8 : stall.stop])
        # ... and every sent frame is played: nothing late, nothing dropped
        # ... and every sent frame is played at the usual delay: nothing late, nothing piled up
        jb = b.jitter_buffer.stats
        assert jb.late == 0 and jb.dropped <= 1
        assert jb.played >= k - 4
        assert sum(loud) >= k - 3
    else:
        # the stall's 300 ms stay in the receiver as extra delay (frames still queued at the
        # end), and the first packets after it are late for their slots
        jb = b.jitter_buffer.stats
        assert jb.played <= k - 10
        assert jb.late > 0


# --- MediaStream ------------------------------------------------------------------------------


class BlockedSink:
    """A clocked sink that never wants a frame (keeps the playout task idle)."""

    def __init__(self, rate: int) -> None:
        self.sample_rate = rate
        self.frame_samples = rate // 50

    def start(self) -> None:
        pass

    def write(self, frame: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass

    async def wait_for_space(self) -> None:
        await asyncio.Event().wait()


class VirtualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.now += delay
        await asyncio.sleep(0)


def rtp_of(datagrams: list[bytes]) -> list[RtpPacket]:
    return [RtpPacket.parse(d) for d in datagrams if not 192 <= d[1] <= 223]


async def _send_with_stall(frames: int, stall_at: int, stall_s: float) -> tuple:
    clock = VirtualClock()
    pacer = Pacer(0.02, clock=clock, sleep=clock.sleep)
    source = ToneSource(440, 8000, pacer=pacer)
    session = RtpSession(PCMU, rng=random.Random(6), now=clock.now)
    transport = ListTransport()
    stream = MediaStream(session, transport, source, BlockedSink(8000), clock=clock)
    stream.start()
    while source.frames_read < frames:
        if source.frames_read == stall_at:
            clock.now += stall_s  # the event loop was stuck
            await asyncio.sleep(0)
            while source.frames_read == stall_at:
                await asyncio.sleep(0)
        await asyncio.sleep(0)
    await stream.stop()
    return stream, source, rtp_of(transport.sent)


def test_media_stream_marks_pacer_skips_as_a_gap() -> None:
    stream, source, rtp = asyncio.run(_send_with_stall(30, 10, 0.5))
    skipped = source.pacer.skipped
    assert skipped >= 10  # 0.5 s late: the pacer skips ~25 ticks instead of a burst
    assert source_dropped_frames(source) == skipped == stream.frames_skipped
    assert stream.session.skipped_frames == skipped
    steps = [(b.timestamp - a.timestamp) % 2**32 for a, b in zip(rtp, rtp[1:], strict=False)]
    gaps = [i for i, step in enumerate(steps) if step != 160]
    assert len(gaps) == 1 and steps[gaps[0]] == 160 * (skipped + 1)
    assert [i for i, p in enumerate(rtp) if p.marker] == [0, gaps[0] + 1]
    seqs = [p.sequence_number for p in rtp]
    assert all((b - a) % 2**16 == 1 for a, b in zip(seqs, seqs[1:], strict=False))


def test_media_stream_without_stall_sends_a_continuous_stream() -> None:
    stream, source, rtp = asyncio.run(_send_with_stall(30, -1, 0.0))
    assert source.pacer.skipped == 0 and stream.frames_skipped == 0
    steps = {(b.timestamp - a.timestamp) % 2**32 for a, b in zip(rtp, rtp[1:], strict=False)}
    assert steps == {160} and sum(p.marker for p in rtp) == 1


class RingSource:
    """Like media.audio.Microphone: frames come from a capture ring that may overrun."""

    def __init__(self, rate: int) -> None:
        self.sample_rate = rate
        self.frame_samples = rate // 50
        self.ring = FrameRingBuffer(self.frame_samples, 4)
        self.blocks = 0

    def capture(self, blocks: int) -> None:  # the audio callback
        for _ in range(blocks):
            self.blocks += 1
            self.ring.write(np.full(self.frame_samples, self.blocks, np.int16))

    def start(self) -> None:
        pass

    async def read(self) -> np.ndarray:
        while True:
            frame = self.ring.read()
            if frame is not None:
                return frame
            await asyncio.sleep(0)

    def close(self) -> None:
        pass


async def _ring_overrun() -> tuple:
    source = RingSource(8000)
    session = RtpSession(PCMU, rng=random.Random(7))
    transport = ListTransport()
    stream = MediaStream(session, transport, source, BlockedSink(8000))
    stream.start()
    for blocks in (1, 1, 1, 10, 1, 1):  # the loop misses 10 blocks once: 6 are overwritten
        source.capture(blocks)
        for _ in range(20):
            await asyncio.sleep(0)
    await stream.stop()
    return stream, source, rtp_of(transport.sent)


def test_media_stream_marks_microphone_ring_overruns_as_a_gap() -> None:
    stream, source, rtp = asyncio.run(_ring_overrun())
    assert source.ring.overruns == 6 == source_dropped_frames(source) == stream.frames_skipped
    assert len(rtp) == 15 - 6
    steps = [(b.timestamp - a.timestamp) % 2**32 for a, b in zip(rtp, rtp[1:], strict=False)]
    assert steps.count(160 * 7) == 1 and steps.count(160) == len(steps) - 1
    assert sum(p.marker for p in rtp) == 2


def test_source_dropped_frames_of_plain_sources() -> None:
    assert source_dropped_frames(SilenceSource(8000)) == 0
    assert source_dropped_frames(ToneSource(440, 8000)) == 0

    class Odd:
        ring = "not a ring"

    assert source_dropped_frames(Odd()) == 0  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=12),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_any_sequence_of_skips_keeps_the_timeline(skips: list[int], start: int) -> None:
    s = RtpSession(PCMU, rng=random.Random(8))
    s._timestamp = start
    packets = [RtpPacket.parse(s.send_frame(np.zeros(160, np.int16), 0.0)[0])]
    for n in skips:
        s.skip_frames(n)
        packets.append(RtpPacket.parse(s.send_frame(np.zeros(160, np.int16), 0.0)[0]))
    for i, packet in enumerate(packets):
        assert packet.timestamp == (start + 160 * (i + sum(skips[:i]))) % 2**32
        assert (packet.sequence_number - packets[0].sequence_number) % 2**16 == i
    assert [p.marker for p in packets] == [True] + [n > 0 for n in skips]
    assert s.skipped_frames == sum(skips)
