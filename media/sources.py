"""Audio sources and sinks: WAV files, tones, silence, and the CLI's SRC/SINK strings.

Every source and sink works in frames of ``frame_samples`` mono int16 samples at
``sample_rate`` (the codec's rate; 20 ms frames by default) and has the interface of the
sound devices in :mod:`media.audio`:

* :class:`AudioSource`: ``start()``, ``await read()`` (the next frame, once it is due),
  ``close()``. A microphone is paced by its capture clock; the sources here by a
  :class:`Pacer`, a monotonic clock with absolute deadlines (``start + n·interval``), so a
  late wake-up never pushes the following frames back and no drift accumulates. They also
  have ``next_frame()``, which returns the next frame at once (tests, benchmarks).
* :class:`AudioSink`: ``start()``, ``write(frame)`` (never blocks), ``close()``. A sink with
  a clock of its own (a speaker) is a :class:`ClockedSink`: ``await wait_for_space()`` tells
  when it wants the next frame, so playout follows the sound card rather than a timer.

The CLI contract (DESIGN.md): ``SRC: mic | PATH.wav | tone:FREQ`` and
``SINK: speaker | PATH.wav | none``; :func:`parse_source` / :func:`parse_sink` read them and
:func:`open_source` / :func:`open_sink` build the objects.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .resample import resample_once

__all__ = [
    "AudioFileError",
    "AudioSink",
    "AudioSource",
    "ClockedSink",
    "NullSink",
    "Pacer",
    "SilenceSource",
    "SinkSpec",
    "SourceSpec",
    "ToneSource",
    "WavFileSink",
    "WavFileSource",
    "load_wav",
    "open_sink",
    "open_source",
    "parse_sink",
    "parse_source",
    "save_wav",
]

log = logging.getLogger("media.sources")

Int16Array = npt.NDArray[np.int16]
FRAME_MS = 20


class AudioFileError(ValueError):
    """A WAV file that cannot be read (not RIFF/WAVE PCM, unsupported sample width)."""


@runtime_checkable
class AudioSource(Protocol):
    """Where the audio to send comes from (see the module docstring)."""

    sample_rate: int
    frame_samples: int

    def start(self) -> None: ...

    async def read(self) -> Int16Array: ...

    def close(self) -> None: ...


@runtime_checkable
class AudioSink(Protocol):
    """Where received audio goes (see the module docstring)."""

    sample_rate: int
    frame_samples: int

    def start(self) -> None: ...

    def write(self, frame: Int16Array) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ClockedSink(AudioSink, Protocol):
    """A sink with its own clock (a sound card): playout follows it instead of a timer."""

    async def wait_for_space(self) -> None:
        """Return when the sink is ready for the next frame."""
        ...


def frame_samples_for(sample_rate: int, frame_ms: int = FRAME_MS) -> int:
    return sample_rate * frame_ms // 1000


# --- pacing ---------------------------------------------------------------------------------


class Pacer:
    """Ticks every ``interval`` seconds on absolute deadlines ``t0 + n·interval``.

    The first :meth:`wait` returns at once (tick 0 at ``t0``, the time of :meth:`start` or
    of that first call); later calls sleep until their deadline. Oversleeping delays one tick
    only: the next deadline stays on the grid, so there is no cumulative drift. When the
    caller falls more than ``max_lag`` behind (a stalled loop), the missed ticks are skipped
    (counted in :attr:`skipped`) instead of being fired in a burst. ``clock`` and ``sleep``
    can be replaced by a virtual clock in tests.
    """

    def __init__(
        self,
        interval: float = FRAME_MS / 1000,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        max_lag: float = 0.2,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.clock = clock
        self._sleep = sleep
        self.max_lag = max_lag
        self.t0: float | None = None
        self.ticks = 0  # ticks returned so far
        self.skipped = 0
        #: the largest lateness of a tick seen, in seconds
        self.max_late = 0.0

    def start(self, now: float | None = None) -> None:
        self.t0 = self.clock() if now is None else now
        self.ticks = 0

    def deadline(self, tick: int) -> float:
        assert self.t0 is not None
        return self.t0 + tick * self.interval

    async def wait(self) -> float:
        """Wait for the next tick; returns its deadline (on the pacer's clock)."""
        if self.t0 is None:
            self.start()
        due = self.deadline(self.ticks)
        now = self.clock()
        while now < due:
            await self._sleep(due - now)
            now = self.clock()
        late = now - due
        if late > self.max_lag:
            behind = int(late // self.interval)
            self.skipped += behind
            self.ticks += behind
            due = self.deadline(self.ticks)
            late = now - due
            log.debug("pacer fell behind: skipped %d ticks", behind)
        self.max_late = max(self.max_late, late)
        self.ticks += 1
        return due


# --- WAV files ------------------------------------------------------------------------------


def _decode_pcm(raw: bytes, width: int, channels: int) -> Int16Array:
    if width == 1:  # unsigned 8 bit
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8
    elif width == 2:
        x = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        x = (((b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)) >> 16).astype(np.int16)
    elif width == 4:
        x = (np.frombuffer(raw, dtype="<i4") >> 16).astype(np.int16)
    else:
        raise AudioFileError(f"unsupported sample width {width} bytes")
    return x.reshape(-1, channels)


def load_wav(path: str | Path, sample_rate: int | None = None) -> tuple[Int16Array, int]:
    """Read a PCM WAV file as mono int16 (channels averaged); resampled to ``sample_rate``
    when given. Returns ``(samples, rate)``. Raises :class:`AudioFileError`."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioFileError(f"{path}: {exc}") from exc
    if channels < 1 or rate <= 0:
        raise AudioFileError(f"{path}: bad format ({channels} channels, {rate} Hz)")
    raw = raw[: len(raw) - len(raw) % (width * channels)]
    frames = _decode_pcm(raw, width, channels)
    if channels == 1:
        mono = frames[:, 0].copy()
    else:
        mono = np.rint(frames.astype(np.float64).mean(axis=1)).astype(np.int16)
    if sample_rate is not None and sample_rate != rate:
        mono = resample_once(mono, rate, sample_rate)
        rate = sample_rate
    return mono, rate


def save_wav(path: str | Path, samples: npt.ArrayLike, sample_rate: int) -> None:
    """Write mono int16 samples to a WAV file."""
    x = np.asarray(samples, dtype=np.int16).reshape(-1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(x.astype("<i2").tobytes())


# --- generated sources ----------------------------------------------------------------------


class _PacedSource:
    """A source that can produce any frame at once; :meth:`read` paces it with a Pacer."""

    def __init__(self, sample_rate: int, frame_samples: int | None, pacer: Pacer | None) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples or frame_samples_for(sample_rate)
        self.pacer = pacer or Pacer(self.frame_samples / sample_rate)
        self.frames_read = 0

    def start(self) -> None:
        if self.pacer.t0 is None:
            self.pacer.start()

    @property
    def dropped_frames(self) -> int:
        """Frame times the pacer skipped after a stall (the frames themselves are not lost:
        the next read continues the signal, but a gap of this many frames fell in its timing;
        :class:`~media.aio.MediaStream` marks it in the RTP timestamps)."""
        return self.pacer.skipped

    async def read(self) -> Int16Array:
        await self.pacer.wait()
        return self.next_frame()

    def next_frame(self) -> Int16Array:
        self.frames_read += 1
        return self._generate()

    def _generate(self) -> Int16Array:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SilenceSource(_PacedSource):
    """Digital silence."""

    def __init__(
        self, sample_rate: int, frame_samples: int | None = None, *, pacer: Pacer | None = None
    ) -> None:
        super().__init__(sample_rate, frame_samples, pacer)

    def _generate(self) -> Int16Array:
        return np.zeros(self.frame_samples, dtype=np.int16)


class ToneSource(_PacedSource):
    """A sine tone of ``frequency`` Hz at ``level_dbfs`` (RMS, see :mod:`media.analysis`);
    the phase carries over from frame to frame, so frames join without clicks."""

    def __init__(
        self,
        frequency: float,
        sample_rate: int,
        frame_samples: int | None = None,
        *,
        level_dbfs: float = -15.0,
        pacer: Pacer | None = None,
    ) -> None:
        super().__init__(sample_rate, frame_samples, pacer)
        if not 0 < frequency < sample_rate / 2:
            raise ValueError(f"tone frequency {frequency} Hz out of range for {sample_rate} Hz")
        self.frequency = frequency
        self.amplitude = min(32767.0, 32768.0 * math.sqrt(2) * 10 ** (level_dbfs / 20))
        self._phase = 0.0  # in cycles, kept in [0, 1)
        self._step = frequency / sample_rate
        self._ramp = np.arange(self.frame_samples, dtype=np.float64) * self._step

    def _generate(self) -> Int16Array:
        y = self.amplitude * np.sin(2 * np.pi * (self._phase + self._ramp))
        self._phase = (self._phase + self._step * self.frame_samples) % 1.0
        return np.rint(y).astype(np.int16)


class WavFileSource(_PacedSource):
    """Plays a WAV file (any rate and channel count: mixed down to mono and resampled to
    ``sample_rate``), then silence (:attr:`finished` turns True) or again from the start
    when ``loop``."""

    def __init__(
        self,
        path: str | Path,
        sample_rate: int,
        frame_samples: int | None = None,
        *,
        loop: bool = False,
        pacer: Pacer | None = None,
    ) -> None:
        super().__init__(sample_rate, frame_samples, pacer)
        self.path = Path(path)
        self.loop = loop
        self.samples, _ = load_wav(self.path, sample_rate)
        self._pos = 0

    @property
    def finished(self) -> bool:
        return not self.loop and self._pos >= len(self.samples)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def _generate(self) -> Int16Array:
        n = self.frame_samples
        pos = self._pos
        if pos + n <= len(self.samples):  # the common case: a whole frame of the file
            self._pos = pos + n
            return self.samples[pos : pos + n].copy()
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        total = len(self.samples)
        while filled < n and total:
            if self._pos >= total:
                if not self.loop:
                    break
                self._pos = 0
            take = min(n - filled, total - self._pos)
            out[filled : filled + take] = self.samples[self._pos : self._pos + take]
            filled += take
            self._pos += take
        return out


# --- sinks ----------------------------------------------------------------------------------


class NullSink:
    """Discards the audio (counts the frames)."""

    def __init__(self, sample_rate: int, frame_samples: int | None = None) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples or frame_samples_for(sample_rate)
        self.frames_written = 0

    def start(self) -> None:
        pass

    def write(self, frame: Int16Array) -> None:
        self.frames_written += 1

    def close(self) -> None:
        pass


class WavFileSink:
    """Records what is played out to a mono 16-bit WAV file at ``sample_rate``.

    The file is written frame by frame and its header finalised by :meth:`close`."""

    def __init__(
        self, path: str | Path, sample_rate: int, frame_samples: int | None = None
    ) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples or frame_samples_for(sample_rate)
        self.frames_written = 0
        self._wave: wave.Wave_write | None = None
        self._closed = False

    def start(self) -> None:
        if self._wave is None and not self._closed:
            w = wave.open(str(self.path), "wb")
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.sample_rate)
            self._wave = w

    def write(self, frame: Int16Array) -> None:
        if self._closed:
            return
        if self._wave is None:
            self.start()
        assert self._wave is not None
        x = np.asarray(frame, dtype=np.int16)
        if x.ndim == 2:
            x = np.rint(x.astype(np.float64).mean(axis=1)).astype(np.int16)
        self._wave.writeframes(x.astype("<i2").tobytes())
        self.frames_written += 1

    def close(self) -> None:
        if self._wave is None and not self._closed:
            self.start()  # an empty recording is still a valid file
        self._closed = True
        if self._wave is not None:
            self._wave.close()
            self._wave = None


# --- CLI strings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceSpec:
    """A parsed SRC: ``mic``, ``tone`` (with ``frequency``), ``wav`` (with ``path``) or
    ``silence``."""

    kind: Literal["mic", "tone", "wav", "silence"]
    path: Path | None = None
    frequency: float | None = None

    def __str__(self) -> str:
        if self.kind == "tone":
            return f"tone:{self.frequency:g}"
        return str(self.path) if self.kind == "wav" else self.kind


@dataclass(frozen=True)
class SinkSpec:
    """A parsed SINK: ``speaker``, ``wav`` (with ``path``) or ``none``."""

    kind: Literal["speaker", "wav", "none"]
    path: Path | None = None

    def __str__(self) -> str:
        return str(self.path) if self.kind == "wav" else self.kind


def parse_source(text: str) -> SourceSpec:
    """``mic`` | ``PATH.wav`` | ``tone:FREQ`` (also ``silence``); raises ValueError."""
    value = text.strip()
    lower = value.lower()
    if lower in ("mic", ""):
        return SourceSpec("mic")
    if lower == "silence":
        return SourceSpec("silence")
    if lower.startswith("tone:"):
        try:
            freq = float(value[5:])
        except ValueError:
            raise ValueError(f"bad tone frequency in {text!r} (expected tone:FREQ)") from None
        if not math.isfinite(freq) or freq <= 0:
            raise ValueError(f"bad tone frequency in {text!r}")
        return SourceSpec("tone", frequency=freq)
    if lower.endswith(".wav"):
        return SourceSpec("wav", path=Path(value))
    raise ValueError(f"unknown audio source {text!r} (mic | PATH.wav | tone:FREQ)")


def parse_sink(text: str) -> SinkSpec:
    """``speaker`` | ``PATH.wav`` | ``none``; raises ValueError."""
    value = text.strip()
    lower = value.lower()
    if lower in ("speaker", ""):
        return SinkSpec("speaker")
    if lower in ("none", "null"):
        return SinkSpec("none")
    if lower.endswith(".wav"):
        return SinkSpec("wav", path=Path(value))
    raise ValueError(f"unknown audio sink {text!r} (speaker | PATH.wav | none)")


def open_source(
    spec: SourceSpec | str,
    sample_rate: int,
    frame_samples: int | None = None,
    *,
    device: str | int | None = None,
    pacer: Pacer | None = None,
) -> AudioSource:
    """Build the source for ``spec`` producing ``sample_rate`` frames (``device``: the input
    device for ``mic``, by index or name substring; ``pacer``: the send clock of a tone, file
    or silence source, e.g. the one of the source it replaces; a microphone has the card's)."""
    if isinstance(spec, str):
        spec = parse_source(spec)
    if spec.kind == "tone":
        assert spec.frequency is not None
        return ToneSource(spec.frequency, sample_rate, frame_samples, pacer=pacer)
    if spec.kind == "wav":
        assert spec.path is not None
        return WavFileSource(spec.path, sample_rate, frame_samples, pacer=pacer)
    if spec.kind == "silence":
        return SilenceSource(sample_rate, frame_samples, pacer=pacer)
    from .audio import Microphone

    return Microphone(sample_rate, frame_samples, device=device)


def open_sink(
    spec: SinkSpec | str,
    sample_rate: int,
    frame_samples: int | None = None,
    *,
    device: str | int | None = None,
) -> AudioSink:
    """Build the sink for ``spec`` taking ``sample_rate`` frames (``device``: the output
    device for ``speaker``)."""
    if isinstance(spec, str):
        spec = parse_sink(spec)
    if spec.kind == "wav":
        assert spec.path is not None
        return WavFileSink(spec.path, sample_rate, frame_samples)
    if spec.kind == "none":
        return NullSink(sample_rate, frame_samples)
    from .audio import Speaker

    return Speaker(sample_rate, frame_samples, device=device)
