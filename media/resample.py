"""Frame-by-frame resampling of int16 audio between 8, 16, 24, 32, 44.1 and 48 kHz with soxr.

Why not ``soxr.ResampleStream``: libsoxr's streaming mode hands its output back in large
bursts (measured with python-soxr: HQ 8 -> 48 kHz emits ~140 ms at a time, MQ/LQ 40-120 ms),
so turning it into a steady 20 ms frame clock would add 40-175 ms of latency. Instead
:class:`Resampler` keeps a sliding window of past input and runs soxr's one-shot (linear
phase, delay-compensated) conversion over window + new frame, keeping only the part of the
output whose filter support lies entirely inside the window. Every call returns exactly
``len(frame) * out_rate / in_rate`` samples, delayed by a constant ``lookahead_ms``; the
frames join seamlessly because each output sample is computed from the same continuous input.
"""

from __future__ import annotations

from math import ceil, gcd

import numpy as np
import numpy.typing as npt
import soxr

__all__ = ["Resampler", "resample_once"]

Int16Array = npt.NDArray[np.int16]
#: the rates :class:`Resampler` converts between: the G.711 and Opus clocks (RFC 7587 §4.1),
#: Opus's internal bandwidths, and 44.1 kHz sound cards (any pair works: 20 ms is a whole
#: number of ``in_rate / gcd`` steps for each of them)
SUPPORTED_RATES = (8000, 16000, 24000, 32000, 44100, 48000)


def _to_int16(x: npt.NDArray[np.float32]) -> Int16Array:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def resample_once(samples: npt.ArrayLike, in_rate: int, out_rate: int) -> Int16Array:
    """Resample a whole int16 signal in one go (no state; for files and tests)."""
    x = np.asarray(samples, dtype=np.int16)
    if in_rate == out_rate:
        return x.copy()
    y = soxr.resample(x.astype(np.float32), in_rate, out_rate, quality="HQ")
    return _to_int16(y)


class Resampler:
    """A stateful resampler for consecutive frames of one stream.

    ``process(frame)`` takes int16 frames of shape (n,) or (n, channels) where ``n`` is a
    multiple of ``in_rate / gcd(in_rate, out_rate)`` (any 10/20 ms frame qualifies: 441
    samples is the largest step, 44.1 <-> 8/16/32 kHz) and returns exactly
    ``n * out_rate / in_rate`` samples. Output lags input by ``delay_samples`` (at
    ``out_rate``), which is ``lookahead_ms`` rounded up to a whole step (8 ms -> 8.8 ms between
    44.1 and 48 kHz); 8 ms keeps the seam error of the HQ filter around one LSB.
    """

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        channels: int = 1,
        *,
        quality: str = "HQ",
        lookahead_ms: float = 8.0,
    ) -> None:
        for rate in (in_rate, out_rate):
            if rate not in SUPPORTED_RATES:
                raise ValueError(f"unsupported rate {rate} (one of {SUPPORTED_RATES})")
        if channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.channels = channels
        self.quality = quality
        g = gcd(in_rate, out_rate)
        self._in_step = in_rate // g
        self._out_step = out_rate // g
        # lookahead in whole input steps (so the output region is aligned to whole input
        # samples), at least lookahead_ms: 44.1 <-> 48 kHz has 300 steps a second, 3.3 ms each
        steps = max(1, ceil(lookahead_ms / 1000 * g - 1e-9))
        self._delay_in = steps * self._in_step
        self.delay_samples = 0 if in_rate == out_rate else steps * self._out_step
        # history: the lookahead region plus as much again of filter support before it
        self._history_len = 3 * self._delay_in
        self._history = np.zeros((self._history_len, channels), dtype=np.float32)

    @property
    def passthrough(self) -> bool:
        return self.in_rate == self.out_rate

    def process(self, frame: npt.ArrayLike) -> Int16Array:
        """Resample the next frame; returns int16 with the input's dimensionality."""
        x = np.asarray(frame, dtype=np.int16)
        one_d = x.ndim == 1
        if one_d:
            if self.channels != 1:
                raise ValueError("a stereo resampler needs frames of shape (n, 2)")
            x2 = x.reshape(-1, 1)
        else:
            if x.ndim != 2 or x.shape[1] != self.channels:
                raise ValueError(f"expected frames of shape (n, {self.channels})")
            x2 = x
        n = x2.shape[0]
        if n % self._in_step:
            raise ValueError(f"frame length must be a multiple of {self._in_step} samples")
        if self.passthrough:
            return x.copy()
        window = np.concatenate((self._history, x2.astype(np.float32)))
        self._history = window[-self._history_len :]
        y = soxr.resample(window, self.in_rate, self.out_rate, quality=self.quality)
        out_n = n * self._out_step // self._in_step
        end = (window.shape[0] - self._delay_in) * self._out_step // self._in_step
        out = _to_int16(y[end - out_n : end])
        return out.reshape(-1) if one_d else out

    def reset(self) -> None:
        """Forget the history (a new stream)."""
        self._history[:] = 0
