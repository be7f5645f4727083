"""media.sources, media.analysis and media.audio (with a fake PortAudio stream)."""

import asyncio
import math
import random
import threading
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.analysis import (
    LevelMeter,
    cross_correlate,
    dominant_frequency,
    peak_dbfs,
    rms,
    rms_dbfs,
)
from media.audio import (
    AudioDevice,
    AudioDeviceError,
    Microphone,
    Speaker,
    find_device,
    format_devices,
)
from media.sources import (
    AudioFileError,
    AudioSink,
    AudioSource,
    ClockedSink,
    NullSink,
    Pacer,
    SilenceSource,
    SinkSpec,
    SourceSpec,
    ToneSource,
    WavFileSink,
    WavFileSource,
    load_wav,
    open_sink,
    open_source,
    parse_sink,
    parse_source,
    save_wav,
)
from tests.helpers_media import FakeSoundStream


def sine(freq: float, rate: int, seconds: float, amp: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


# --- analysis -------------------------------------------------------------------------------


@pytest.mark.parametrize("freq", [300.0, 440.0, 1000.0, 3150.5])
@pytest.mark.parametrize("rate", [8000, 48000])
def test_dominant_frequency(freq, rate):
    x = sine(freq, rate, 0.5)
    assert dominant_frequency(x, rate) == pytest.approx(freq, abs=2.0)


def test_dominant_frequency_picks_the_strongest_and_ignores_dc():
    x = sine(440, 48000, 0.5, 3000) + sine(1200, 48000, 0.5, 9000) + 5000
    assert dominant_frequency(x, 48000) == pytest.approx(1200, abs=2)
    assert dominant_frequency(x, 48000, max_hz=800) == pytest.approx(440, abs=2)
    assert dominant_frequency(np.zeros(960, dtype=np.int16), 48000) == 0.0
    assert dominant_frequency(np.zeros(2, dtype=np.int16), 48000) == 0.0


def test_levels():
    full = sine(1000, 48000, 1.0, 32767)
    assert rms_dbfs(full) == pytest.approx(-3.01, abs=0.05)
    assert peak_dbfs(full) == pytest.approx(0.0, abs=0.01)
    assert rms_dbfs(sine(1000, 48000, 1.0, 3277)) == pytest.approx(-23.01, abs=0.05)
    assert rms_dbfs(np.zeros(100, dtype=np.int16)) == -120.0
    assert rms_dbfs(np.zeros(100, dtype=np.int16), floor=-90) == -90.0
    assert rms(np.array([3, -3, 3, -3], dtype=np.int16)) == pytest.approx(3.0)
    assert rms(np.array([], dtype=np.int16)) == 0.0
    stereo = np.stack([full, full], axis=1)
    assert rms_dbfs(stereo) == pytest.approx(-3.01, abs=0.05)


def test_cross_correlation_finds_the_delay():
    rng = np.random.default_rng(1)
    sent = rng.normal(0, 3000, 8000)
    delay = 1234
    received = np.concatenate([np.zeros(delay), sent * 0.5, np.zeros(500)])
    received += rng.normal(0, 100, len(received))
    c = cross_correlate(sent, received, max_lag=4000)
    assert c.lag == delay
    assert c.coefficient > 0.95
    assert c.lag_seconds(8000) == pytest.approx(delay / 8000)
    # an inverted copy correlates negatively: the best match is then weak
    inverted = cross_correlate(sent, -received, max_lag=4000)
    assert inverted.coefficient < 0.2


def test_cross_correlation_of_unrelated_signals_is_low():
    rng = np.random.default_rng(2)
    c = cross_correlate(rng.normal(size=4000), rng.normal(size=6000), max_lag=1000)
    assert c.coefficient < 0.15


def test_cross_correlation_edge_cases():
    assert cross_correlate([], [1, 2, 3], max_lag=2).coefficient == 0.0
    assert cross_correlate([1, 2, 3], np.zeros(10), max_lag=5).coefficient == 0.0
    with pytest.raises(ValueError):
        cross_correlate([1, 2], [1, 2], max_lag=-1)
    # the lag window is clipped to what the received signal can hold
    x = np.sin(np.arange(100) / 3)
    c = cross_correlate(x[:50], x, max_lag=10_000)
    assert c.lag == 0 and c.coefficient == pytest.approx(1.0)


@settings(max_examples=50, deadline=None)
@given(
    delay=st.integers(min_value=0, max_value=300),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_cross_correlation_lag_property(delay, seed):
    rng = np.random.default_rng(seed)
    sent = rng.normal(size=600)
    received = np.concatenate([rng.normal(size=delay) * 0.1, sent, rng.normal(size=50) * 0.1])
    c = cross_correlate(sent, received, max_lag=400)
    assert c.lag == delay
    assert c.coefficient == pytest.approx(1.0, abs=1e-6)


# --- tone, silence --------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_tone_frames_join_seamlessly(rate):
    tone = ToneSource(440, rate, level_dbfs=-10)
    n = tone.frame_samples
    assert n == rate // 50
    frames = [tone.next_frame() for _ in range(100)]
    assert all(f.dtype == np.int16 and f.shape == (n,) for f in frames)
    joined = np.concatenate(frames)
    t = np.arange(len(joined)) / rate
    ideal = tone.amplitude * np.sin(2 * np.pi * 440 * t)
    assert np.max(np.abs(joined - ideal)) <= 1.0  # continuous phase, only rounding error
    assert dominant_frequency(joined, rate) == pytest.approx(440, abs=1)
    assert rms_dbfs(joined) == pytest.approx(-10, abs=0.1)
    assert tone.frames_read == 100


def test_tone_rejects_bad_frequency():
    with pytest.raises(ValueError):
        ToneSource(5000, 8000)
    with pytest.raises(ValueError):
        ToneSource(0, 8000)


def test_silence():
    s = SilenceSource(8000)
    f = s.next_frame()
    assert f.shape == (160,) and not f.any()


# --- WAV files ------------------------------------------------------------------------------


def write_wav(path: Path, data: bytes, rate: int, channels: int, width: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)


def encode(x: np.ndarray, width: int) -> bytes:
    """int16 samples (n, channels) in the given sample width, like sox would write them."""
    if width == 1:
        return ((x.astype(np.int32) >> 8) + 128).astype(np.uint8).tobytes()
    if width == 2:
        return x.astype("<i2").tobytes()
    wide = x.astype(np.int32) << 16
    if width == 4:
        return wide.astype("<i4").tobytes()
    b = wide.astype("<i4").view(np.uint8).reshape(-1, 4)
    return b[:, 1:].tobytes()


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("rate,channels", [(44100, 2), (8000, 1), (16000, 2), (48000, 1)])
def test_load_wav_any_format(tmp_path, width, rate, channels):
    x = sine(600, rate, 0.5)
    if channels == 2:
        x2 = np.stack([x, x // 2], axis=1)  # different channels: mixed down by averaging
    else:
        x2 = x.reshape(-1, 1)
    path = tmp_path / "in.wav"
    write_wav(path, encode(x2, width), rate, channels, width)
    mono, got_rate = load_wav(path)
    assert got_rate == rate and len(mono) == len(x)
    expected = x2.astype(np.float64).mean(axis=1)
    tolerance = 300 if width == 1 else 2
    assert np.max(np.abs(mono - expected)) <= tolerance
    for target in (8000, 48000):
        resampled, r = load_wav(path, target)
        assert r == target
        assert len(resampled) == pytest.approx(len(x) * target / rate, abs=2)
        assert dominant_frequency(resampled, target) == pytest.approx(600, abs=2)


def test_load_wav_errors(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioFileError):
        load_wav(bad)
    text = tmp_path / "text.wav"
    text.write_text("hello")
    with pytest.raises(AudioFileError):
        load_wav(text)
    with pytest.raises(FileNotFoundError):
        load_wav(tmp_path / "missing.wav")


def test_wav_source_plays_then_silence_or_loops(tmp_path):
    path = tmp_path / "tone.wav"
    x = sine(1000, 16000, 0.05)  # 800 samples at 16 kHz = 2.5 frames of 20 ms at 8 kHz
    save_wav(path, x, 16000)
    src = WavFileSource(path, 8000)
    assert src.duration == pytest.approx(0.05)
    frames = [src.next_frame() for _ in range(2)]
    assert not src.finished
    frames += [src.next_frame() for _ in range(2)]
    assert [f.shape for f in frames] == [(160,)] * 4
    assert not frames[2][80:].any() and frames[2][:80].any()  # the file ends mid-frame
    assert not frames[3].any()
    assert src.finished
    looping = WavFileSource(path, 8000, loop=True)
    frames = [looping.next_frame() for _ in range(5)]
    assert not looping.finished
    joined = np.concatenate(frames)
    assert np.array_equal(joined[:400], joined[400:800])  # wraps straight round


def test_wav_source_of_an_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    save_wav(path, np.zeros(0, dtype=np.int16), 8000)
    src = WavFileSource(path, 8000, loop=True)
    assert not src.next_frame().any()


def test_wav_sink_records_what_is_played(tmp_path):
    path = tmp_path / "out.wav"
    sink = WavFileSink(path, 8000)
    sink.start()
    tone = ToneSource(440, 8000)
    frames = [tone.next_frame() for _ in range(25)]
    for f in frames:
        sink.write(f)
    sink.write(np.stack([frames[0], frames[0]], axis=1))  # a stereo frame is mixed down
    sink.close()
    sink.write(frames[0])  # after close: ignored
    data, rate = load_wav(path)
    assert rate == 8000
    assert np.array_equal(data, np.concatenate([*frames, frames[0]]))
    assert sink.frames_written == 26


def test_wav_sink_closed_without_audio_is_a_valid_empty_file(tmp_path):
    path = tmp_path / "none.wav"
    WavFileSink(path, 48000).close()
    data, rate = load_wav(path)
    assert rate == 48000 and len(data) == 0


def test_null_sink():
    sink = NullSink(48000)
    sink.start()
    sink.write(np.zeros(960, dtype=np.int16))
    sink.close()
    assert sink.frames_written == 1 and sink.frame_samples == 960


def test_sources_and_sinks_satisfy_the_protocols(tmp_path):
    save_wav(tmp_path / "a.wav", sine(300, 8000, 0.1), 8000)
    for source in (
        ToneSource(300, 8000),
        SilenceSource(8000),
        WavFileSource(tmp_path / "a.wav", 8000),
        Microphone(8000, stream_factory=FakeSoundStream),
    ):
        assert isinstance(source, AudioSource)
    for sink in (
        NullSink(8000),
        WavFileSink(tmp_path / "b.wav", 8000),
        Speaker(8000, stream_factory=FakeSoundStream),
    ):
        assert isinstance(sink, AudioSink)


# --- CLI strings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,spec",
    [
        ("mic", SourceSpec("mic")),
        ("MIC", SourceSpec("mic")),
        ("", SourceSpec("mic")),
        ("tone:440", SourceSpec("tone", frequency=440.0)),
        ("tone:1000.5", SourceSpec("tone", frequency=1000.5)),
        ("silence", SourceSpec("silence")),
        ("/tmp/x y/Hello.WAV", SourceSpec("wav", path=Path("/tmp/x y/Hello.WAV"))),
        ("rel.wav", SourceSpec("wav", path=Path("rel.wav"))),
    ],
)
def test_parse_source(text, spec):
    assert parse_source(text) == spec
    assert parse_source(str(spec)) == spec


@pytest.mark.parametrize(
    "text", ["tone:", "tone:abc", "tone:-5", "tone:nan", "tone:inf", "speaker", "x.mp3", "none"]
)
def test_parse_source_rejects(text):
    with pytest.raises(ValueError):
        parse_source(text)


@pytest.mark.parametrize(
    "text,spec",
    [
        ("speaker", SinkSpec("speaker")),
        ("", SinkSpec("speaker")),
        ("none", SinkSpec("none")),
        ("NONE", SinkSpec("none")),
        ("out.wav", SinkSpec("wav", path=Path("out.wav"))),
    ],
)
def test_parse_sink(text, spec):
    assert parse_sink(text) == spec
    assert parse_sink(str(spec)) == spec


@pytest.mark.parametrize("text", ["mic", "tone:440", "out.mp3", "spk"])
def test_parse_sink_rejects(text):
    with pytest.raises(ValueError):
        parse_sink(text)


def test_open_source_and_sink(tmp_path):
    save_wav(tmp_path / "a.wav", sine(300, 8000, 0.1), 8000)
    tone = open_source("tone:700", 16000)
    assert isinstance(tone, ToneSource) and tone.frame_samples == 320
    wav = open_source(str(tmp_path / "a.wav"), 48000)
    assert isinstance(wav, WavFileSource) and wav.sample_rate == 48000
    assert isinstance(open_source("silence", 8000), SilenceSource)
    mic = open_source("mic", 48000, device="no such device anywhere")
    assert isinstance(mic, Microphone)  # devices are opened by start(), not here
    assert isinstance(open_sink("none", 8000), NullSink)
    assert isinstance(open_sink(str(tmp_path / "o.wav"), 8000), WavFileSink)
    assert isinstance(open_sink("speaker", 8000), Speaker)


# --- pacer on a virtual clock ---------------------------------------------------------------


class VirtualClock:
    """A clock whose sleep advances time by the request plus a random oversleep."""

    def __init__(self, oversleep: float = 0.0, seed: int = 0) -> None:
        self.t = 1000.0
        self.oversleep = oversleep
        self.rng = random.Random(seed)
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.t += delay + self.rng.uniform(0, self.oversleep)


async def test_pacer_deadlines_do_not_drift():
    clock = VirtualClock(oversleep=0.008, seed=3)
    pacer = Pacer(0.02, clock=clock, sleep=clock.sleep)
    deadlines = [await pacer.wait() for _ in range(3000)]  # a minute of 20 ms ticks
    assert deadlines[0] == 1000.0
    for n, d in enumerate(deadlines):
        assert d == pytest.approx(1000.0 + n * 0.02, abs=1e-9)
    # each tick is at most one oversleep late: lateness never accumulates
    assert pacer.max_late <= 0.008 + 1e-9
    assert clock.t - deadlines[-1] <= 0.008 + 1e-9
    assert pacer.skipped == 0


async def test_pacer_late_caller_catches_up_without_sleeping():
    clock = VirtualClock()
    pacer = Pacer(0.02, clock=clock, sleep=clock.sleep)
    await pacer.wait()
    clock.t += 0.05  # the caller spent 50 ms on something
    d1 = await pacer.wait()
    d2 = await pacer.wait()
    assert (d1, d2) == (pytest.approx(1000.02), pytest.approx(1000.04))
    assert clock.sleeps == []  # both ticks were overdue
    d3 = await pacer.wait()
    assert d3 == pytest.approx(1000.06)
    assert clock.t == pytest.approx(1000.06)


async def test_pacer_skips_ticks_after_a_stall():
    clock = VirtualClock()
    pacer = Pacer(0.02, clock=clock, sleep=clock.sleep, max_lag=0.1)
    await pacer.wait()
    clock.t += 1.005  # the loop stalled for a second
    d = await pacer.wait()
    assert pacer.skipped == 49  # ticks 1..49; tick 50 (at 1001.0) fires
    assert d == pytest.approx(1001.0)  # still on the grid
    assert await pacer.wait() == pytest.approx(1001.02)


async def test_pacer_with_the_real_loop_ticks_in_order():
    pacer = Pacer(0.005)
    ticks = [await pacer.wait() for _ in range(5)]
    assert ticks == sorted(ticks)
    assert ticks[-1] - ticks[0] == pytest.approx(0.02)


def test_pacer_rejects_bad_interval():
    with pytest.raises(ValueError):
        Pacer(0)


async def test_paced_source_reads_on_the_pacer():
    clock = VirtualClock()
    tone = ToneSource(440, 8000, pacer=Pacer(0.02, clock=clock, sleep=clock.sleep))
    tone.start()
    frames = [await tone.read() for _ in range(10)]
    assert clock.t == pytest.approx(1000.18)
    assert len(np.concatenate(frames)) == 1600


# --- devices with a fake PortAudio stream ---------------------------------------------------


class Flags:
    def __init__(self, bad: bool = False) -> None:
        self.bad = bad

    def __bool__(self) -> bool:
        return self.bad


async def test_microphone_resamples_device_blocks_to_the_codec_rate():
    mic = Microphone(8000, stream_factory=FakeSoundStream, ring_frames=64)
    mic.start()
    stream = FakeSoundStream.instances[-1]
    assert stream.started
    assert stream.kwargs["samplerate"] == 48000
    assert stream.kwargs["blocksize"] == 960
    assert stream.kwargs["channels"] == 1 and stream.kwargs["dtype"] == "int16"
    block = sine(500, 48000, 1.0).reshape(-1, 1)

    def device_thread():
        for k in range(50):
            stream.callback(block[k * 960 : (k + 1) * 960], 960, None, Flags(k == 3))

    t = threading.Thread(target=device_thread)
    t.start()
    frames = [await asyncio.wait_for(mic.read(), 5) for _ in range(50)]
    t.join()
    assert mic.callbacks == 50 and mic.xruns == 1
    assert all(f.shape == (160,) for f in frames)
    joined = np.concatenate(frames)
    assert dominant_frequency(joined, 8000) == pytest.approx(500, abs=2)
    assert mic.read_nowait() is None
    mic.close()
    assert stream.closed and not mic.running
    with pytest.raises(AudioDeviceError):
        await mic.read()


async def test_microphone_ring_overrun_when_the_loop_falls_behind():
    mic = Microphone(48000, stream_factory=FakeSoundStream, ring_frames=4)
    mic.start()
    stream = FakeSoundStream.instances[-1]
    for k in range(10):
        stream.callback(np.full((960, 1), k, dtype=np.int16), 960, None, Flags())
    got = [int((await mic.read())[0]) for _ in range(4)]
    assert got == [6, 7, 8, 9]  # the oldest were dropped
    assert mic.ring is not None and mic.ring.overruns == 6
    mic.close()


def test_speaker_prefills_then_plays_and_reprimes_after_running_dry():
    spk = Speaker(48000, stream_factory=FakeSoundStream, prefill=2, ring_frames=5)
    spk.start()
    stream = FakeSoundStream.instances[-1]
    out = np.full((960, 1), 99, dtype=np.int16)

    def pull() -> int:
        stream.callback(out, 960, None, Flags())
        return int(out[0, 0])

    spk.write(np.full(960, 1, dtype=np.int16))
    assert pull() == 0  # only one frame queued: still priming
    spk.write(np.full(960, 2, dtype=np.int16))
    assert [pull(), pull()] == [1, 2]
    assert pull() == 0  # ran dry: a gap, then it primes again
    assert spk.gaps == 1
    spk.write(np.full(960, 3, dtype=np.int16))
    assert pull() == 0
    spk.write(np.full(960, 4, dtype=np.int16))
    assert [pull(), pull()] == [3, 4]
    stream.callback(out, 480, None, Flags())  # a block of the wrong size plays silence
    assert spk.bad_blocks == 1 and not out.any()
    spk.close()
    assert stream.closed


def test_speaker_resamples_codec_frames_to_the_device_rate():
    spk = Speaker(8000, stream_factory=FakeSoundStream, prefill=1, ring_frames=60)
    spk.start()
    stream = FakeSoundStream.instances[-1]
    tone = ToneSource(700, 8000)
    for _ in range(50):
        spk.write(tone.next_frame())
    blocks = []
    for _ in range(50):
        out = np.zeros((960, 1), dtype=np.int16)
        stream.callback(out, 960, None, Flags())
        blocks.append(out[:, 0].copy())
    played = np.concatenate(blocks)
    assert dominant_frequency(played[4800:], 48000) == pytest.approx(700, abs=2)
    assert spk.callbacks == 50 and spk.gaps == 0


def test_speaker_write_before_start_is_dropped():
    spk = Speaker(8000, stream_factory=FakeSoundStream)
    spk.write(np.zeros(160, dtype=np.int16))  # no ring yet: nothing happens
    assert spk.ring is None


def test_device_stream_open_failure_is_an_audio_device_error():
    def broken(**kwargs):
        raise RuntimeError("Error opening InputStream: Invalid device")

    with pytest.raises(AudioDeviceError, match="Invalid device"):
        Microphone(8000, stream_factory=broken).start()


DEVICES = [
    AudioDevice(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "ALSA", 2, 2, 44100.0),
    AudioDevice(1, "HDA Intel PCH: HDMI 0 (hw:0,3)", "ALSA", 0, 8, 44100.0),
    AudioDevice(2, "pulse", "ALSA", 32, 32, 44100.0),
    AudioDevice(3, "default", "ALSA", 32, 32, 44100.0, default_input=True, default_output=True),
    AudioDevice(4, "USB Headset Mic", "ALSA", 1, 0, 48000.0),
]


def test_find_device():
    assert find_device(None, "input", DEVICES) is None
    assert find_device("default", "output", DEVICES) is None
    assert find_device(2, "input", DEVICES) == 2
    assert find_device("4", "input", DEVICES) == 4
    assert find_device("usb", "input", DEVICES) == 4
    assert find_device("HDMI", "output", DEVICES) == 1
    assert find_device("pulse", "output", DEVICES) == 2
    assert find_device("hda intel", "input", DEVICES) == 0  # first of the matches
    with pytest.raises(AudioDeviceError, match="no input device"):
        find_device("HDMI", "input", DEVICES)  # output only
    with pytest.raises(AudioDeviceError):
        find_device(4, "output", DEVICES)
    with pytest.raises(AudioDeviceError):
        find_device(17, "input", DEVICES)


def test_format_devices():
    text = format_devices(DEVICES)
    lines = text.splitlines()
    assert len(lines) == 5
    assert lines[3].startswith("><") and "default" in lines[3]
    assert "USB Headset Mic" in lines[4] and "1 in, 0 out" in lines[4]
    assert format_devices([]) == "no audio devices"


def test_tone_level_is_in_dbfs():
    tone = ToneSource(1000, 48000, level_dbfs=-20)
    x = np.concatenate([tone.next_frame() for _ in range(50)])
    assert rms_dbfs(x) == pytest.approx(-20, abs=0.05)
    assert peak_dbfs(x) == pytest.approx(-20 + 20 * math.log10(math.sqrt(2)), abs=0.05)


async def test_speaker_paces_its_writer_by_the_device_clock():
    spk = Speaker(48000, stream_factory=FakeSoundStream, prefill=2, ring_frames=5)
    spk.start()
    stream = FakeSoundStream.instances[-1]
    assert isinstance(spk, ClockedSink)
    assert not isinstance(NullSink(8000), ClockedSink)
    frame = np.zeros(960, dtype=np.int16)
    for _ in range(4):
        await asyncio.wait_for(spk.wait_for_space(), 1)  # room: returns at once
        spk.write(frame)
    assert spk.ring is not None and len(spk.ring) == 4
    waiter = asyncio.ensure_future(spk.wait_for_space())
    await asyncio.sleep(0.01)
    assert not waiter.done()  # the queue is full until the device takes a frame
    stream.callback(np.zeros((960, 1), dtype=np.int16), 960, None, Flags())
    await asyncio.wait_for(waiter, 1)
    assert spk.stalls == 0


async def test_speaker_wait_gives_up_on_a_dead_device():
    spk = Speaker(48000, stream_factory=FakeSoundStream, prefill=1, ring_frames=5)
    spk.start()
    for _ in range(3):
        spk.write(np.zeros(960, dtype=np.int16))
    await asyncio.wait_for(spk.wait_for_space(), 1)  # no callbacks at all: returns anyway
    assert spk.stalls == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parsers_raise_only_value_error(text):
    for parse in (parse_source, parse_sink):
        try:
            spec = parse(text)
        except ValueError:
            continue
        assert parse(str(spec)) == spec


def test_level_meter_attack_release_and_activity():
    meter = LevelMeter(release_db_per_s=20, floor=-60, active_dbfs=-50)
    assert meter.level == -60
    loud = ToneSource(1000, 8000, level_dbfs=-10)
    assert meter.update(loud.next_frame()) == pytest.approx(-10, abs=0.2)  # instant attack
    silence = np.zeros(160, dtype=np.int16)
    levels = [meter.update(silence) for _ in range(10)]  # 200 ms: falls 4 dB, not to -60
    assert levels[-1] == pytest.approx(-14, abs=0.3)
    assert all(b < a for a, b in zip(levels, levels[1:], strict=False))
    for _ in range(200):
        meter.update(silence)
    assert meter.level == -60 and meter.last == -60
    assert (meter.frames, meter.active_frames) == (211, 1)
    quiet = ToneSource(1000, 8000, level_dbfs=-55)
    meter.update(quiet.next_frame())
    assert meter.active_frames == 1  # below the activity threshold


def _riff(fmt: bytes, data: bytes) -> bytes:
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
    body += b"data" + len(data).to_bytes(4, "little") + data
    return b"RIFF" + len(body).to_bytes(4, "little") + body


@settings(max_examples=300, deadline=None)
@given(
    fmt=st.one_of(
        st.binary(max_size=24),
        st.builds(
            lambda tag, ch, rate, width: (
                tag.to_bytes(2, "little")
                + ch.to_bytes(2, "little")
                + rate.to_bytes(4, "little")
                + (rate * ch * width).to_bytes(4, "little")
                + (ch * width).to_bytes(2, "little")
                + (8 * width).to_bytes(2, "little")
            ),
            st.sampled_from([1, 3, 0xFFFE, 0]),
            st.integers(min_value=0, max_value=9),
            st.integers(min_value=0, max_value=200000),
            st.integers(min_value=0, max_value=8),
        ),
    ),
    data=st.binary(max_size=64),
    raw=st.booleans(),
)
def test_load_wav_of_junk_raises_only_audio_file_error(tmp_path_factory, fmt, data, raw):
    path = tmp_path_factory.mktemp("fuzz") / "x.wav"
    path.write_bytes(fmt + data if raw else _riff(fmt, data))
    try:
        samples, rate = load_wav(path, 8000)
    except AudioFileError:
        return
    assert samples.dtype == np.int16 and rate == 8000


@settings(max_examples=100, deadline=None)
@given(
    oversleeps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=300),
    interval=st.sampled_from([0.01, 0.02, 0.03]),
)
def test_pacer_stays_on_its_grid_whatever_the_oversleep(oversleeps, interval):
    clock = VirtualClock()
    it = iter(oversleeps)

    async def sleep(delay: float) -> None:
        clock.t += delay + next(it, 0.0)

    pacer = Pacer(interval, clock=clock, sleep=sleep, max_lag=0.1)

    async def run() -> list[float]:
        return [await pacer.wait() for _ in range(len(oversleeps))]

    deadlines = asyncio.run(run())
    ticks = [round((d - 1000.0) / interval, 6) for d in deadlines]
    assert all(t == int(t) for t in ticks)  # every tick on the grid t0 + n * interval
    assert ticks == sorted(set(ticks))  # strictly increasing, never repeated
    assert int(ticks[-1]) + 1 == pacer.ticks == len(deadlines) + pacer.skipped
    assert pacer.max_late <= 0.1 + interval  # never further behind than the skip threshold
