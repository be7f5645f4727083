"""Adaptive jitter buffer on a virtual clock: delay/jitter/loss/reorder/skew/DTX traces."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.jitter import FrameKind, JitterBuffer, JitterBufferConfig, PlayoutFrame

RATE = 8000
FRAME_TS = 160
FRAME_S = 0.02


@dataclass
class Sent:
    index: int
    seq: int
    ts: int
    marker: bool
    send_time: float

    @property
    def payload(self) -> bytes:
        return self.index.to_bytes(4, "big")


def make_stream(
    n: int,
    *,
    seq0: int = 1000,
    ts0: int = 123456,
    skew: float = 0.0,
    gaps: dict[int, int] | None = None,
    ts_jump: dict[int, int] | None = None,
) -> list[Sent]:
    """n frames; ``gaps[k] = m``: m silent frames (not sent) before frame k (DTX);
    ``ts_jump[k] = j``: the timestamp jumps by j before frame k (sent at the normal time).
    A sender clock ``skew`` of +0.005 sends 0.5 % more frames per second than we play."""
    gaps = gaps or {}
    ts_jump = ts_jump or {}
    out = []
    slot = 0
    jump = 0
    for k in range(n):
        marker = k == 0
        if k in gaps:
            slot += gaps[k]
            marker = True
        jump += ts_jump.get(k, 0)
        send = slot * FRAME_S / (1 + skew)
        ts = (ts0 + slot * FRAME_TS + jump) & 0xFFFFFFFF
        out.append(Sent(k, (seq0 + k) & 0xFFFF, ts, marker, send))
        slot += 1
    return out


def run(
    jb: JitterBuffer,
    arrivals: Iterable[tuple[float, Sent]],
    *,
    phase: float = 0.007,
    tail: float = 1.0,
    observe: Callable[[JitterBuffer, float], None] | None = None,
) -> list[PlayoutFrame]:
    """Feed arrivals and pop every 20 ms (arrivals at or before a pop go first)."""
    pending = sorted(arrivals, key=lambda a: a[0])
    end = (pending[-1][0] if pending else 0) + tail
    frames = []
    i = 0
    k = 0
    while True:
        now = phase + k * FRAME_S
        if now > end:
            break
        while i < len(pending) and pending[i][0] <= now:
            t, p = pending[i]
            jb.push(p.payload, p.seq, p.ts, p.marker, t)
            i += 1
        frames.append(jb.pop(now))
        if observe:
            observe(jb, now)
        k += 1
    return frames


def network(
    stream: list[Sent],
    *,
    delay: float = 0.05,
    jitter: float = 0.0,
    loss: float = 0.0,
    seed: int = 1,
    extra: Callable[[Sent, random.Random], float] | None = None,
) -> tuple[list[tuple[float, Sent]], set[int]]:
    rng = random.Random(seed)
    out = []
    lost = set()
    for p in stream:
        if loss and rng.random() < loss:
            lost.add(p.index)
            continue
        d = delay + rng.uniform(0, jitter)
        if extra:
            d += extra(p, rng)
        out.append((p.send_time + d, p))
    return out, lost


def audio_indices(frames: list[PlayoutFrame]) -> list[int]:
    return [int.from_bytes(f.payload or b"", "big") for f in frames if f.kind is FrameKind.AUDIO]


def kinds(frames: list[PlayoutFrame], kind: FrameKind) -> int:
    return sum(1 for f in frames if f.kind is kind)


def lost_inside(frames: list[PlayoutFrame]) -> int:
    """LOST frames before the last AUDIO frame (the stream's end is followed by a few)."""
    last = max(i for i, f in enumerate(frames) if f.kind is FrameKind.AUDIO)
    return kinds(frames[:last], FrameKind.LOST)


def new_jb(**kw) -> JitterBuffer:
    return JitterBuffer(JitterBufferConfig(clock_rate=RATE, **kw))


def test_steady_stream_plays_everything_in_order() -> None:
    jb = new_jb()
    stream = make_stream(500)
    frames = run(jb, network(stream)[0])
    assert audio_indices(frames) == list(range(500))
    assert lost_inside(frames) == 0
    assert jb.stats.late == 0 and jb.stats.dropped == 0 and jb.stats.inserted == 0
    # silence only before the first packet and after the last
    first = next(i for i, f in enumerate(frames) if f.kind is FrameKind.AUDIO)
    assert all(f.kind is FrameKind.SILENCE for f in frames[:first])
    assert jb.target_delay_ms == 20.0
    assert frames[first].marker and frames[first].timestamp == stream[0].ts


def test_timestamps_of_slots_follow_the_stream() -> None:
    jb = new_jb()
    stream = make_stream(50)
    frames = [f for f in run(jb, network(stream)[0]) if f.kind is FrameKind.AUDIO]
    assert [f.timestamp for f in frames] == [p.ts for p in stream]
    assert [f.sequence for f in frames] == [p.seq for p in stream]


def test_jitter_trace_target_grows_and_few_late() -> None:
    jb = new_jb()
    stream = make_stream(3000)
    arrivals, _ = network(stream, delay=0.03, jitter=0.08, seed=7)
    frames = run(jb, arrivals)
    played = audio_indices(frames)
    assert played == sorted(played)  # never out of order
    assert len(set(played)) == len(played)
    assert jb.stats.late + jb.stats.lost < 0.05 * 3000
    assert 60 <= jb.target_delay_ms <= 120  # about the 97th percentile of 0-80 ms
    assert len(played) > 0.95 * 3000


def test_target_follows_jitter_down_after_spike() -> None:
    jb = new_jb(history_packets=250)

    def spiky(p: Sent, rng: random.Random) -> float:
        return rng.uniform(0, 0.15) if 200 <= p.index < 700 else 0.0

    targets: dict[int, float] = {}

    def observe(buf: JitterBuffer, now: float) -> None:
        targets[round(now / FRAME_S)] = buf.target_delay_ms

    run(jb, network(make_stream(2000), extra=spiky)[0], observe=observe)
    during = targets[round((0.05 + 650 * FRAME_S) / FRAME_S)]
    after = targets[max(targets)]
    assert during > 100
    assert after <= 30


def test_ten_percent_loss_reported_as_lost_with_fec_hint() -> None:
    jb = new_jb(lookahead_frames=1)
    stream = make_stream(2000)
    arrivals, lost = network(stream, loss=0.10, seed=3)
    frames = run(jb, arrivals)
    played = audio_indices(frames)
    assert set(played) == set(range(2000)) - lost
    assert lost_inside(frames) == len(lost)
    # known missing from the sequence numbers, unless a burst emptied the buffer
    assert 0.8 * len(lost) < jb.stats.lost <= len(lost)
    assert jb.target_delay_ms == pytest.approx(30.0)  # the margin plus one frame of look-ahead
    assert jb.stats.late == 0
    # each LOST slot sits where its packet would have been, and carries the next packet's
    # payload when that one arrived (Opus in-band FEC)
    by_ts = {p.ts: p for p in stream}
    for f in frames:
        if f.kind is FrameKind.LOST and f.timestamp in by_ts:
            p = by_ts[f.timestamp]
            assert p.index in lost
            nxt = p.index + 1
            if nxt < 2000 and nxt not in lost:
                assert f.next_present and f.next_payload == stream[nxt].payload
            else:
                assert not f.next_present


def test_reordering_is_undone() -> None:
    jb = new_jb()
    stream = make_stream(1500)

    def reorder(p: Sent, rng: random.Random) -> float:
        return 0.025 if rng.random() < 0.1 else 0.0  # jumps behind the next packet

    arrivals, _ = network(stream, extra=reorder, seed=5)
    frames = run(jb, arrivals)
    played = audio_indices(frames)
    assert played == sorted(played)
    # once the buffer adapted (first few late packets), everything plays
    assert len(played) >= 1500 - 5
    assert jb.stats.late <= 5


def test_duplicates_dropped_and_counted() -> None:
    jb = new_jb()
    stream = make_stream(400)
    arrivals, _ = network(stream)
    dups = [(t + 0.003, p) for t, p in arrivals if p.index % 4 == 0]
    dups += [(t + 0.5, p) for t, p in arrivals if p.index % 50 == 1]  # long after playout
    frames = run(jb, arrivals + dups)
    assert audio_indices(frames) == list(range(400))
    assert jb.stats.duplicates == len(dups)
    assert jb.stats.late == 0


def test_late_packet_counted_and_dropped() -> None:
    jb = new_jb()
    stream = make_stream(300)

    def one_late(p: Sent, rng: random.Random) -> float:
        return 0.3 if p.index == 150 else 0.0

    frames = run(jb, network(stream, extra=one_late)[0])
    played = audio_indices(frames)
    assert 150 not in played
    assert played == [i for i in range(300) if i != 150]
    assert jb.stats.late == 1
    assert lost_inside(frames) == 1


def _skew_run(skew: float, talkspurts: bool) -> tuple[JitterBuffer, list[PlayoutFrame], dict]:
    jb = new_jb()
    n = 30000  # 10 minutes of 20 ms frames
    gaps = {k: 25 for k in range(50, n, 50)} if talkspurts else None  # 1 s talk, 0.5 s pause
    stream = make_stream(n, skew=skew, gaps=gaps)
    arrivals, _ = network(stream, delay=0.04, jitter=0.01, seed=11)
    seen = {"max_buffered": 0, "max_delay": 0.0}

    def observe(buf: JitterBuffer, now: float) -> None:
        seen["max_buffered"] = max(seen["max_buffered"], buf.buffered)
        seen["max_delay"] = max(seen["max_delay"], buf.current_delay_ms(now))

    frames = run(jb, arrivals, observe=observe)
    return jb, frames, seen


def test_sender_clock_fast_half_percent_stays_bounded() -> None:
    jb, frames, seen = _skew_run(+0.005, talkspurts=False)
    assert seen["max_buffered"] <= 6
    assert seen["max_delay"] < 80
    # 0.5 % of 30000 frames had to go
    assert 120 <= jb.stats.dropped <= 180
    assert jb.stats.lost + jb.stats.late < 30


def test_sender_clock_slow_half_percent_stays_bounded() -> None:
    jb, frames, seen = _skew_run(-0.005, talkspurts=False)
    assert seen["max_buffered"] <= 6
    assert seen["max_delay"] < 80
    assert 120 <= jb.stats.inserted <= 180
    assert jb.stats.lost + jb.stats.late < 30


def test_skew_absorbed_in_silence_gaps() -> None:
    for skew in (0.005, -0.005):
        jb, frames, seen = _skew_run(skew, talkspurts=True)
        assert seen["max_buffered"] <= 6
        assert seen["max_delay"] < 80
        # the pauses absorb nearly all of the drift (150 frames' worth): speech is seldom
        # cut or stretched
        assert jb.stats.dropped + jb.stats.inserted <= 20
        assert jb.stats.lost + jb.stats.late < 30
        assert jb.stats.underruns <= 3 * 600  # the end of each talkspurt
        assert len(audio_indices(frames)) >= 30000 - 40


def test_dtx_gap_is_silence_not_loss() -> None:
    jb = new_jb()
    stream = make_stream(200, gaps={100: 40})
    frames = run(jb, network(stream)[0])
    assert audio_indices(frames) == list(range(200))
    assert jb.stats.lost == 0
    first = next(i for i, f in enumerate(frames) if f.kind is FrameKind.AUDIO)
    between = frames[first + 100 : first + 140]
    # the pause is only known for one once it lasts: a few concealed frames, then silence
    underrun = jb.config.max_lost_run
    assert all(f.kind is FrameKind.LOST and not f.next_present for f in between[:underrun])
    assert all(f.kind is FrameKind.SILENCE for f in between[underrun:])
    resumed = [f for f in frames if f.kind is FrameKind.AUDIO and f.marker]
    assert [int.from_bytes(f.payload or b"", "big") for f in resumed] == [0, 100]


def test_dtx_gap_with_loss_around_it() -> None:
    jb = new_jb()
    stream = make_stream(200, gaps={100: 40})
    arrivals, _ = network(stream)
    arrivals = [(t, p) for t, p in arrivals if p.index not in (99, 101)]
    frames = run(jb, arrivals)
    assert audio_indices(frames) == [i for i in range(200) if i not in (99, 101)]
    # 99 starts the pause (concealed, then silence); 101 is concealed
    assert lost_inside(frames) == jb.config.max_lost_run + 1


def test_talkspurt_start_adapts_delay() -> None:
    # jitter at first, then a calm stream: the delay comes down at the next talkspurt start
    # by shortening the pause, not by dropping speech
    jb = new_jb(history_packets=100, drop_after_frames=10**6)
    stream = make_stream(500, gaps={400: 25})

    def early(p: Sent, rng: random.Random) -> float:
        return rng.uniform(0, 0.05) if p.index < 150 else 0.0

    frames = run(jb, network(stream, extra=early, seed=2)[0])
    assert audio_indices(frames) == list(range(500))
    assert jb.stats.dropped == 0
    start = next(i for i, f in enumerate(frames) if f.payload == (399).to_bytes(4, "big"))
    end = next(i for i, f in enumerate(frames) if f.payload == (400).to_bytes(4, "big"))
    assert end - start - 1 < 25  # the 25-frame pause was shortened
    assert jb.target_delay_ms == 20.0


def test_timestamp_jump_resyncs() -> None:
    jb = new_jb()
    stream = make_stream(300, ts_jump={150: 10 * RATE})  # +10 s, sequence numbers go on
    frames = run(jb, network(stream)[0])
    played = audio_indices(frames)
    assert jb.stats.resyncs == 1
    assert played[:150] == list(range(150))
    assert played[-100:] == list(range(200, 300))
    assert len(played) >= 300 - 3
    assert jb.stats.late == 0
    assert lost_inside(frames) <= 3


def test_timestamp_jump_backwards_resyncs() -> None:
    jb = new_jb()
    stream = make_stream(300, ts_jump={150: -20 * RATE})
    frames = run(jb, network(stream)[0])
    assert jb.stats.resyncs == 1
    assert len(audio_indices(frames)) >= 300 - 3
    assert jb.stats.late == 0


def test_single_stray_timestamp_does_not_resync() -> None:
    jb = new_jb()
    stream = make_stream(300, ts_jump={150: 10 * RATE, 151: -10 * RATE})
    frames = run(jb, network(stream)[0])
    assert jb.stats.resyncs == 0
    assert audio_indices(frames) == [i for i in range(300) if i != 150]


def test_timestamp_and_sequence_wrap() -> None:
    jb = new_jb()
    stream = make_stream(400, seq0=65500, ts0=0xFFFFFFFF - 100 * FRAME_TS)
    frames = run(jb, network(stream)[0])
    assert audio_indices(frames) == list(range(400))
    assert jb.stats.resyncs == 0


def test_reset_for_new_source() -> None:
    jb = new_jb()
    a = make_stream(100, seq0=10, ts0=1000)
    run(jb, network(a)[0], tail=0.0)
    jb.reset()
    assert jb.buffered == 0 and not jb.playing
    b = make_stream(100, seq0=40000, ts0=99999999)
    b = [Sent(p.index, p.seq, p.ts, p.marker, p.send_time + 3.0) for p in b]
    frames = run(jb, network(b)[0], phase=3.007)
    assert audio_indices(frames) == list(range(100))


def test_telephone_event_sequence_numbers_are_not_losses() -> None:
    jb = new_jb()
    stream = make_stream(100, gaps={50: 8})
    arrivals, _ = network(stream)
    # the sender used 5 sequence numbers for telephone-events during the pause
    shifted = [
        (
            t,
            Sent(p.index, (p.seq + 5) & 0xFFFF, p.ts, p.marker, p.send_time)
            if p.index >= 50
            else p,
        )
        for t, p in arrivals
    ]
    pending = sorted(shifted, key=lambda a: a[0])
    frames = []
    for k in range(300):
        now = 0.007 + k * FRAME_S
        while pending and pending[0][0] <= now:
            t, p = pending.pop(0)
            jb.push(p.payload, p.seq, p.ts, p.marker, t)
            if p.index == 49:
                for s in range(5):
                    jb.note_sequence(p.seq + 1 + s)
        frames.append(jb.pop(now))
    assert audio_indices(frames) == list(range(100))
    assert jb.stats.lost == 0


def test_stream_pause_becomes_silence() -> None:
    jb = new_jb()
    frames = run(jb, network(make_stream(100))[0], tail=2.0)
    assert jb.stats.underruns == jb.config.max_lost_run and jb.stats.lost == 0
    assert frames[-1].kind is FrameKind.SILENCE


def test_overflow_discards_oldest() -> None:
    jb = new_jb(max_packets=10)
    for p in make_stream(30):
        jb.push(p.payload, p.seq, p.ts, p.marker, 0.0)
    assert jb.buffered == 10
    assert jb.stats.discarded == 20


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.booleans(),
            st.floats(0, 0.5),
        ),
        max_size=200,
    )
)
def test_any_input_is_handled(ops) -> None:
    jb = new_jb()
    now = 0.0
    for is_pop, seq, ts, marker, dt in ops:
        now += dt
        if is_pop:
            f = jb.pop(now)
            assert f.kind in FrameKind
            assert 0 <= f.timestamp <= 0xFFFFFFFF
        else:
            jb.push(b"x", seq, ts, marker, now)
    assert jb.buffered <= jb.config.max_packets


def test_packets_off_the_frame_grid_realign() -> None:
    # the sender's timestamps shift by 40 units mid-stream (less than a frame)
    jb = new_jb()
    stream = make_stream(200, ts_jump={100: 40})
    frames = run(jb, network(stream)[0])
    assert audio_indices(frames) == list(range(200))
    assert lost_inside(frames) == 0


def test_drop_when_far_too_much_is_buffered() -> None:
    # a burst arrives after a stall; once the target falls back the excess is dropped
    jb = new_jb(history_packets=100)

    def stall(p: Sent, rng: random.Random) -> float:
        return max(0.0, 0.3 - (p.index - 100) * FRAME_S) if 100 <= p.index < 115 else 0.0

    frames = run(jb, network(make_stream(1000), extra=stall)[0])
    played = audio_indices(frames)
    assert played == sorted(played)
    assert jb.stats.dropped > 0
    assert jb.current_delay_ms(0.007 + (len(frames) - 60) * FRAME_S) < 60


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    jitter=st.floats(0, 0.2),
    loss=st.floats(0, 0.3),
    dup=st.floats(0, 0.2),
    skew=st.floats(-0.01, 0.01),
    seed=st.integers(0, 2**16),
    gaps=st.dictionaries(st.integers(1, 299), st.integers(1, 100), max_size=5),
)
def test_every_packet_is_accounted_for(n, jitter, loss, dup, skew, seed, gaps) -> None:
    """Conservation: each packet pushed is played, late, dropped, discarded or a duplicate;
    audio comes out in timestamp order, each packet at most once."""
    jb = new_jb()
    stream = make_stream(n, skew=skew, gaps={k: v for k, v in gaps.items() if k < n})
    arrivals, _ = network(stream, jitter=jitter, loss=loss, seed=seed)
    rng = random.Random(seed)
    arrivals += [(t + rng.uniform(0, 0.3), p) for t, p in arrivals if rng.random() < dup]
    frames = run(jb, arrivals, tail=3.0)
    s = jb.stats
    assert jb.buffered == 0
    assert s.received == len(arrivals)
    assert s.played + s.late + s.dropped + s.discarded + s.duplicates == s.received
    played = audio_indices(frames)
    assert played == sorted(played) and len(set(played)) == len(played)
    assert s.played == len(played)


def test_bursty_playout_clock_settles() -> None:
    # an audio callback that pulls two frames at once every 40 ms (period 2 x 20 ms)
    jb = new_jb()
    stream = make_stream(3000)
    pending = sorted(network(stream, jitter=0.005, seed=21)[0], key=lambda a: a[0])
    frames = []
    i = 0
    for k in range(1550):
        now = 0.013 + k * 2 * FRAME_S
        while i < len(pending) and pending[i][0] <= now:
            t, p = pending[i]
            jb.push(p.payload, p.seq, p.ts, p.marker, t)
            i += 1
        frames += [jb.pop(now), jb.pop(now)]
    played = audio_indices(frames)
    # the first frames teach the buffer that every other frame is wanted 20 ms early
    assert played[-2900:] == list(range(100, 3000))
    assert len(played) >= 3000 - 3
    assert jb.stats.inserted + jb.stats.dropped <= 3  # settles at once, then steady:
    steady = frames[300:2900]
    assert all(f.kind is FrameKind.AUDIO for f in steady)


def test_packets_longer_than_a_frame() -> None:
    # 60 ms packets; the caller pops whenever its 20 ms frame needs more audio
    jb = new_jb()
    stream = [Sent(k, 100 + k, 5000 + 480 * k, k == 0, 0.06 * k) for k in range(200)]
    arrivals, lost = network(stream, jitter=0.01, loss=0.05, seed=3)
    pending = sorted(arrivals, key=lambda a: a[0])
    frames: list[PlayoutFrame] = []
    have = 0
    i = 0
    for k in range(650):
        now = 0.011 + k * FRAME_S
        while i < len(pending) and pending[i][0] <= now:
            t, p = pending[i]
            jb.push(p.payload, p.seq, p.ts, p.marker, t, duration=480)
            i += 1
        while have < FRAME_TS:
            f = jb.pop(now)
            frames.append(f)
            have += f.duration
        have -= FRAME_TS
    played = audio_indices(frames)
    assert set(played) == set(range(200)) - lost
    assert played == sorted(played)
    assert all(f.duration == 480 for f in frames if f.kind is not FrameKind.SILENCE)
    assert lost_inside(frames) == len(lost)
    assert jb.stats.inserted + jb.stats.dropped <= 2


def test_heavy_tailed_delay() -> None:
    # Pareto-distributed queueing delay (median ~6 ms, rare 100 ms+ outliers)
    jb = new_jb()

    def pareto(p: Sent, rng: random.Random) -> float:
        return min(0.3, 0.005 * (rng.paretovariate(2.0) - 1) * 5)

    frames = run(jb, network(make_stream(5000), extra=pareto, seed=17)[0])
    played = audio_indices(frames)
    assert played == sorted(played)
    assert jb.stats.late + jb.stats.underruns < 0.04 * 5000
    assert jb.target_delay_ms < 200
    assert len(played) > 0.96 * 5000


def test_periodic_stalls_like_wifi_scans() -> None:
    # every 2 s the link stalls for 120 ms and then delivers the backlog at once
    jb = new_jb()

    def stall(p: Sent, rng: random.Random) -> float:
        phase = p.send_time % 2.0
        return 0.12 - phase if phase < 0.12 else 0.0

    frames = run(jb, network(make_stream(3000), extra=stall, seed=18)[0])
    played = audio_indices(frames)
    assert played == sorted(played)
    # the first stalls teach the buffer; then it rides them out
    late_frames = [f for f in frames[1000:2900] if f.kind is not FrameKind.AUDIO]
    assert len(late_frames) <= 5
    assert 100 <= jb.target_delay_ms <= 200


def test_noted_sequence_numbers_stay_bounded() -> None:
    jb = new_jb()
    for seq in range(100000):
        jb.note_sequence(seq)
    assert len(jb._skip) <= 257


def test_delay_growth_inserts_silence_before_a_talkspurt_start() -> None:
    jb = new_jb()
    stream = make_stream(120)
    stream[60].marker = True  # a talkspurt starts here without a pause (VAD, no CN)
    pending = sorted(network(stream)[0], key=lambda a: a[0])
    frames: list[PlayoutFrame] = []
    for k in range(200):
        now = 0.007 + k * FRAME_S
        while pending and pending[0][0] <= now:
            t, p = pending.pop(0)
            jb.push(p.payload, p.seq, p.ts, p.marker, t)
        if frames and frames[-1].payload == (59).to_bytes(4, "big"):
            jb.config.min_delay_ms = 120.0  # more delay wanted, just before the talkspurt
            jb._dirty = True
        frames.append(jb.pop(now))
    inserted = [f for f in frames if f.inserted]
    assert 1 <= len(inserted) <= 6
    before_marker = [
        frames[i] for i in range(1, len(frames)) if frames[i].marker and frames[i - 1].inserted
    ]
    silence_inserts = [f for f in inserted if f.kind is FrameKind.SILENCE]
    assert len(silence_inserts) == 1  # the pause before the talkspurt is stretched ...
    assert silence_inserts[0].timestamp == stream[60].ts
    assert before_marker
    # ... and the rest of the growth is concealment inserted inside the talkspurt
    assert all(f.kind is FrameKind.LOST for f in inserted if f is not silence_inserts[0])
    assert audio_indices(frames) == list(range(120))
