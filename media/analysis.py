"""Audio analysis for tests, level meters and the softphone's end-of-call checks.

* :func:`dominant_frequency`: the strongest spectral peak (Hann-windowed FFT with parabolic
  interpolation between bins, so a 1 s signal resolves well below 1 Hz);
* :func:`rms`, :func:`rms_dbfs`, :func:`peak_dbfs`: levels; dBFS here is relative to a
  full-scale square wave (``20·log10(rms / 32768)``), so a full-scale sine reads -3 dBFS;
* :class:`LevelMeter`: a level display (fast attack, slow release) that also counts the
  frames carrying sound, e.g. to tell that audio flowed in a call;
* :func:`cross_correlate`: normalised cross-correlation between what was sent and what came
  back, searching the lag (delay) that matches best, e.g. to check that audio went through a
  call and how long it took.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "FULL_SCALE",
    "Correlation",
    "LevelMeter",
    "cross_correlate",
    "dominant_frequency",
    "peak_dbfs",
    "rms",
    "rms_dbfs",
]

FULL_SCALE = 32768.0
_FLOOR_DB = -120.0


def _mono(samples: npt.ArrayLike) -> npt.NDArray[np.float64]:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise ValueError("expected samples of shape (n,) or (n, channels)")
    return x


def dominant_frequency(
    samples: npt.ArrayLike, sample_rate: int, *, min_hz: float = 20.0, max_hz: float | None = None
) -> float:
    """The frequency in Hz of the strongest component between ``min_hz`` and ``max_hz``.

    Returns 0.0 for silence or a signal shorter than 4 samples."""
    x = _mono(samples)
    if len(x) < 4 or not np.any(x):
        return 0.0
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    upper = sample_rate / 2 if max_hz is None else max_hz
    band = (freqs >= min_hz) & (freqs <= upper)
    if not np.any(band) or not np.any(spectrum[band]):
        return 0.0
    indices = np.flatnonzero(band)
    k = int(indices[np.argmax(spectrum[band])])
    offset = 0.0
    if 0 < k < len(spectrum) - 1:
        # parabolic interpolation on the log magnitude (a Gaussian fit for a Hann window)
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
        denom = a - 2 * b + c
        if denom != 0:
            offset = float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))
    return float((k + offset) * sample_rate / len(x))


def rms(samples: npt.ArrayLike) -> float:
    """Root mean square in sample units (0 for an empty signal)."""
    x = _mono(samples)
    n = len(x)
    return math.sqrt(float(np.dot(x, x)) / n) if n else 0.0


def _db(value: float, floor: float) -> float:
    if value <= 0:
        return floor
    return max(floor, 20 * math.log10(value / FULL_SCALE))


def rms_dbfs(samples: npt.ArrayLike, floor: float = _FLOOR_DB) -> float:
    """RMS level in dBFS (full-scale square wave = 0 dBFS), at least ``floor``."""
    return _db(rms(samples), floor)


def peak_dbfs(samples: npt.ArrayLike, floor: float = _FLOOR_DB) -> float:
    """Peak level in dBFS, at least ``floor``."""
    x = _mono(samples)
    return _db(float(np.max(np.abs(x))) if len(x) else 0.0, floor)


class LevelMeter:
    """Level of a stream of frames for a meter: rises at once to a louder frame and falls
    by at most ``release_db_per_s``; :attr:`active_frames` counts frames louder than
    ``active_dbfs`` (sound, not silence or comfort noise)."""

    def __init__(
        self,
        *,
        release_db_per_s: float = 24.0,
        floor: float = -60.0,
        active_dbfs: float = -50.0,
    ) -> None:
        self.release_db_per_s = release_db_per_s
        self.floor = floor
        self.active_dbfs = active_dbfs
        self.level = floor
        self.last = floor
        self.frames = 0
        self.active_frames = 0

    def update(self, frame: npt.ArrayLike, seconds: float = 0.02) -> float:
        """Feed one frame lasting ``seconds``; returns the displayed level in dBFS."""
        db = rms_dbfs(frame, self.floor)
        self.last = db
        self.frames += 1
        if db > self.active_dbfs:
            self.active_frames += 1
        self.level = max(db, self.level - self.release_db_per_s * seconds, self.floor)
        return self.level


@dataclass(frozen=True)
class Correlation:
    """The best match: ``received[lag:]`` resembles ``sent`` with this coefficient (-1..1)."""

    lag: int
    coefficient: float

    def lag_seconds(self, sample_rate: int) -> float:
        return self.lag / sample_rate


def cross_correlate(
    sent: npt.ArrayLike, received: npt.ArrayLike, max_lag: int, *, min_lag: int = 0
) -> Correlation:
    """Normalised cross-correlation of ``sent`` against ``received`` delayed by a lag in
    ``[min_lag, max_lag]`` samples; returns the lag with the highest coefficient.

    For each lag the coefficient is ``Σ s[i]·r[i+lag] / (‖s‖·‖r[lag:lag+L]‖)`` over a common
    length ``L`` (the length of ``sent``, shortened when ``received`` is too short); the
    lag range is clipped to what ``received`` holds. Each window's mean is removed (Pearson
    correlation); windows without variation score 0.
    """
    s = _mono(sent)
    r = _mono(received)
    if min_lag < 0 or max_lag < min_lag:
        raise ValueError("need 0 <= min_lag <= max_lag")
    length = min(len(s), len(r) - min_lag)
    if length <= 1:
        return Correlation(min_lag, 0.0)
    max_lag = min(max_lag, len(r) - length)
    s = s[:length] - s[:length].mean()
    r = r[: length + max_lag]
    # Pearson per window: s has zero mean, so Σ s·(r - mean_r) = Σ s·r
    n_fft = 1 << (len(r) + length - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(r, n_fft) * np.conj(np.fft.rfft(s, n_fft)), n_fft)
    lags = np.arange(min_lag, max_lag + 1)
    numerators = corr[lags]
    sums = np.concatenate(([0.0], np.cumsum(r)))
    squares = np.concatenate(([0.0], np.cumsum(r * r)))
    window_sum = sums[lags + length] - sums[lags]
    window_var = squares[lags + length] - squares[lags] - window_sum * window_sum / length
    s_norm = math.sqrt(float(np.dot(s, s)))
    denom = np.sqrt(np.maximum(window_var, 0.0)) * s_norm
    scale = max(1.0, s_norm * math.sqrt(float(squares[-1])))  # below this: no variation
    with np.errstate(divide="ignore", invalid="ignore"):
        coeffs = np.where(denom > 1e-9 * scale, numerators / denom, 0.0)
    best = int(np.argmax(coeffs))
    return Correlation(int(lags[best]), float(np.clip(coeffs[best], -1.0, 1.0)))
