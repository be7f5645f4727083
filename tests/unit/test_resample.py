"""media.resample: frame-by-frame resampling between the codec clocks and sound-card rates.

The frame-by-frame output must be the one-shot (whole-signal) resampling delayed by a constant
``delay_samples``, for every pair of supported rates, including 44.1 kHz sound cards whose
20 ms frames (882 samples) are not a whole number of 48 kHz-friendly steps.
"""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from media.analysis import dominant_frequency, rms
from media.audio import Microphone, Speaker
from media.g711 import G711Codec
from media.resample import SUPPORTED_RATES, Resampler, resample_once
from tests.helpers_media import FakeSoundStream

PAIRS = [(a, b) for a, b in itertools.permutations(SUPPORTED_RATES, 2)]


def sine(freq: float, rate: int, seconds: float, amplitude: float = 10000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def run_frames(resampler: Resampler, signal: np.ndarray, n: int) -> list[np.ndarray]:
    return [resampler.process(signal[i : i + n]) for i in range(0, len(signal), n)]


def test_supported_rates_include_sound_card_and_opus_rates() -> None:
    assert {8000, 16000, 24000, 32000, 44100, 48000} <= set(SUPPORTED_RATES)


@pytest.mark.parametrize("in_rate,out_rate", PAIRS)
def test_resampler_frames_join_seamlessly(in_rate: int, out_rate: int) -> None:
    signal = sine(440, in_rate, 0.5)
    resampler = Resampler(in_rate, out_rate)
    n = in_rate // 50  # 20 ms
    chunks = run_frames(resampler, signal, n)
    assert all(c.dtype == np.int16 and len(c) == n * out_rate // in_rate for c in chunks)
    out = np.concatenate(chunks)
    whole = resample_once(signal, in_rate, out_rate)
    delay = resampler.delay_samples
    # at least the 8 ms asked for, at most one 20 ms frame
    assert out_rate * 0.008 <= delay <= out_rate * 0.02
    settled = out_rate // 20  # skip the first 50 ms (start-up from silence)
    diff = out[delay + settled :].astype(int) - whole[settled : len(out) - delay].astype(int)
    assert np.abs(diff).max() <= 4  # the frame-by-frame output is the one-shot output
    assert abs(dominant_frequency(out, out_rate) - 440) <= 3


@pytest.mark.parametrize("in_rate,out_rate", [(44100, 48000), (48000, 44100), (44100, 8000)])
def test_resampler_44100_takes_10_ms_frames(in_rate: int, out_rate: int) -> None:
    signal = sine(1000, in_rate, 0.4)
    resampler = Resampler(in_rate, out_rate)
    n = in_rate // 100  # 10 ms: 441 samples at 44.1 kHz
    chunks = run_frames(resampler, signal, n)
    assert all(len(c) == out_rate // 100 for c in chunks)
    out = np.concatenate(chunks)
    assert abs(dominant_frequency(out[out_rate // 20 :], out_rate) - 1000) <= 2
    # the level survives: a 10000-amplitude sine has an RMS of 10000/sqrt(2)
    assert rms(out[out_rate // 10 :]) == pytest.approx(10000 / np.sqrt(2), rel=0.02)


@pytest.mark.parametrize(
    ("in_rate", "frame"), [(8000, 160), (44100, 882)], ids=["8000-to-48000", "44100-to-48000"]
)
def test_resampler_no_clicks_at_frame_edges(in_rate: int, frame: int) -> None:
    signal = sine(1000, in_rate, 0.4)
    resampler = Resampler(in_rate, 48000)
    out = np.concatenate(run_frames(resampler, signal, frame))
    settled = out[4800:].astype(float)
    # the second difference of a sine A*sin(wt) is bounded by A*w**2; a discontinuity at a
    # frame edge (e.g. resampling each frame on its own) roughly doubles it
    bound = 10000 * (2 * np.pi * 1000 / 48000) ** 2
    assert np.abs(np.diff(settled, 2)).max() < bound * 1.1


@pytest.mark.parametrize("in_rate", [48000, 44100])
def test_resampler_downsampling_rejects_aliases(in_rate: int) -> None:
    # a 6 kHz tone cannot exist at 8 kHz: it must be filtered, not folded to 2 kHz
    signal = sine(6000, in_rate, 0.3)
    resampler = Resampler(in_rate, 8000)
    n = in_rate // 50
    out = np.concatenate(run_frames(resampler, signal, n))
    assert np.sqrt(np.mean(out[400:].astype(float) ** 2)) < 30


def test_resampler_stereo_and_passthrough() -> None:
    left, right = sine(440, 16000, 0.2), sine(700, 16000, 0.2)
    resampler = Resampler(16000, 48000, channels=2)
    stereo = np.stack([left, right], 1)
    out = np.concatenate(run_frames(resampler, stereo, 320))
    assert out.shape == (9600, 2)
    assert abs(dominant_frequency(out[:, 0], 48000) - 440) <= 5
    assert abs(dominant_frequency(out[:, 1], 48000) - 700) <= 5
    same = Resampler(48000, 48000)
    frame = sine(440, 48000, 0.02)
    assert np.array_equal(same.process(frame), frame) and same.delay_samples == 0


def test_resampler_stereo_44100() -> None:
    left, right = sine(440, 44100, 0.2), sine(700, 44100, 0.2)
    resampler = Resampler(44100, 48000, channels=2)
    out = np.concatenate(run_frames(resampler, np.stack([left, right], 1), 882))
    assert out.shape == (9600, 2)
    assert abs(dominant_frequency(out[:, 0], 48000) - 440) <= 5
    assert abs(dominant_frequency(out[:, 1], 48000) - 700) <= 5


def test_resampler_rejects_bad_input() -> None:
    for rate in (22050, 11025, 96000, 0):
        with pytest.raises(ValueError):
            Resampler(rate, 48000)
        with pytest.raises(ValueError):
            Resampler(48000, rate)
    with pytest.raises(ValueError):
        Resampler(8000, 48000, channels=3)
    with pytest.raises(ValueError):
        Resampler(48000, 8000).process(np.zeros(961, np.int16))  # not a multiple of 6
    with pytest.raises(ValueError):
        Resampler(44100, 48000).process(np.zeros(880, np.int16))  # not a multiple of 147
    with pytest.raises(ValueError):
        Resampler(8000, 48000, channels=2).process(np.zeros(160, np.int16))
    with pytest.raises(ValueError):
        Resampler(8000, 48000).process(np.zeros((160, 2), np.int16))


def test_resampler_reset_returns_to_silence() -> None:
    for in_rate, out_rate in [(8000, 48000), (44100, 48000)]:
        resampler = Resampler(in_rate, out_rate)
        resampler.process(sine(440, in_rate, 0.02))
        resampler.reset()
        assert not resampler.process(np.zeros(in_rate // 50, np.int16)).any()


def test_resample_once_any_rate() -> None:
    signal = sine(440, 44100, 0.5)
    out = resample_once(signal, 44100, 16000)
    assert out.dtype == np.int16 and len(out) == 8000
    assert abs(dominant_frequency(out, 16000) - 440) <= 2
    assert np.array_equal(resample_once(signal, 44100, 44100), signal)


@pytest.mark.parametrize("card_rate", [48000, 44100])
def test_g711_over_the_sound_card_path(card_rate: int) -> None:
    down, up = Resampler(card_rate, 8000), Resampler(8000, card_rate)
    codec = G711Codec("pcmu")
    signal = sine(440, card_rate, 1.0, amplitude=8000)
    n = card_rate // 50
    out = np.concatenate(
        [
            up.process(codec.decode(codec.encode(down.process(signal[i : i + n]))))
            for i in range(0, card_rate, n)
        ]
    )
    assert len(out) == card_rate
    assert abs(dominant_frequency(out[card_rate // 10 :], card_rate) - 440) <= 2


# --- a 44.1 kHz sound card behind the 48 kHz Opus clock (media.audio) -------------------------


async def _capture_at_44100() -> np.ndarray:
    mic = Microphone(48000, device_rate=44100, stream_factory=FakeSoundStream)
    mic.start()
    stream = FakeSoundStream.instances[-1]
    assert stream.kwargs["samplerate"] == 44100 and stream.kwargs["blocksize"] == 882
    block = sine(500, 44100, 1.0).reshape(-1, 1)
    frames = []
    for k in range(50):
        stream.callback(block[k * 882 : (k + 1) * 882], 882, None, 0)
        frames.append(await mic.read())
    mic.close()
    return np.concatenate(frames)


def test_microphone_at_44100_gives_48000_frames() -> None:

    captured = asyncio.run(_capture_at_44100())
    assert len(captured) == 48000
    assert abs(dominant_frequency(captured[4800:], 48000) - 500) <= 2


def test_speaker_at_44100_plays_48000_frames() -> None:
    spk = Speaker(
        48000, device_rate=44100, stream_factory=FakeSoundStream, prefill=1, ring_frames=60
    )
    spk.start()
    stream = FakeSoundStream.instances[-1]
    assert stream.kwargs["samplerate"] == 44100 and stream.kwargs["blocksize"] == 882
    tone = sine(700, 48000, 1.0)
    for k in range(50):
        spk.write(tone[k * 960 : (k + 1) * 960])
    blocks = []
    for _ in range(50):
        out = np.zeros((882, 1), dtype=np.int16)
        stream.callback(out, 882, None, 0)
        blocks.append(out[:, 0].copy())
    spk.close()
    played = np.concatenate(blocks)
    assert spk.gaps == 0
    assert abs(dominant_frequency(played[4410:], 44100) - 700) <= 2
