"""Sound devices through sounddevice (PortAudio): microphone source, speaker sink, listing.

Streams run at the device rate (48 kHz when the device takes it), mono int16, in blocks of
one 20 ms frame (blocksize 960 at 48 kHz). PortAudio calls the stream callback on its own
thread; the callback only copies one block into or out of a preallocated
:class:`~media.ringbuffer.FrameRingBuffer` and bumps counters: it never blocks, never waits
for the event loop and never touches asyncio (DESIGN.md, "Threads and clocks"). The event
loop side converts between the device rate and the codec rate with
:class:`~media.resample.Resampler`.

* :class:`Microphone` is an :class:`~media.sources.AudioSource` paced by the capture clock:
  ``await read()`` returns as soon as the device has delivered the next block (the event loop
  polls the ring every few milliseconds), so the sender follows the sound card's clock.
* :class:`Speaker` is a :class:`~media.sources.ClockedSink`: ``write(frame)`` queues a frame
  for the device and ``await wait_for_space()`` paces the writer by the output clock (so the
  jitter buffer is drained at the sound card's rate). The callback starts playing once
  ``prefill`` frames are queued and starts over (re-primes) after running dry, so a late
  writer causes an occasional short gap instead of continuous crackle; a writer that ignores
  ``wait_for_space`` and runs fast loses its oldest frames (ring overrun).
* :func:`list_devices`, :func:`find_device`, :func:`format_devices` serve ``softphone
  devices`` and device choice by index or by (case-insensitive) name substring.

sounddevice is imported lazily: without PortAudio the rest of ``media`` still works and
these functions raise :class:`AudioDeviceError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .resample import SUPPORTED_RATES, Resampler
from .ringbuffer import FrameRingBuffer

__all__ = [
    "DEFAULT_DEVICE_RATE",
    "DEFAULT_LATENCY",
    "AudioDevice",
    "AudioDeviceError",
    "Microphone",
    "Speaker",
    "find_device",
    "format_devices",
    "list_devices",
]

log = logging.getLogger("media.audio")

Int16Array = npt.NDArray[np.int16]
DeviceSpec = str | int | None
Direction = Literal["input", "output"]

DEFAULT_DEVICE_RATE = 48000
DEFAULT_LATENCY = 0.06
FRAME_MS = 20
_POLL_S = 0.004


class AudioDeviceError(RuntimeError):
    """No PortAudio, no such device, or a device that cannot be opened as asked."""


def _sounddevice() -> ModuleType:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: PortAudio library not found
        raise AudioDeviceError(f"sounddevice/PortAudio unavailable: {exc}") from exc
    return sounddevice


@dataclass(frozen=True)
class AudioDevice:
    """One PortAudio device."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    default_input: bool = False
    default_output: bool = False

    @property
    def is_input(self) -> bool:
        return self.max_input_channels > 0

    @property
    def is_output(self) -> bool:
        return self.max_output_channels > 0

    def has(self, direction: Direction) -> bool:
        return self.is_input if direction == "input" else self.is_output


def _default_indices(sd: ModuleType) -> tuple[int, int]:
    try:
        dev = sd.default.device
        return int(dev[0]), int(dev[1])
    except (TypeError, ValueError, IndexError):
        return -1, -1


def list_devices() -> list[AudioDevice]:
    """All PortAudio devices (``softphone devices``)."""
    sd = _sounddevice()
    try:
        raw = sd.query_devices()
        hostapis = sd.query_hostapis()
    except Exception as exc:  # sounddevice raises PortAudioError and friends
        raise AudioDeviceError(f"cannot list audio devices: {exc}") from exc
    default_in, default_out = _default_indices(sd)
    out: list[AudioDevice] = []
    for info in raw:
        index = int(info["index"])
        api = int(info["hostapi"])
        out.append(
            AudioDevice(
                index=index,
                name=str(info["name"]),
                hostapi=str(hostapis[api]["name"]) if 0 <= api < len(hostapis) else "?",
                max_input_channels=int(info["max_input_channels"]),
                max_output_channels=int(info["max_output_channels"]),
                default_samplerate=float(info["default_samplerate"]),
                default_input=index == default_in,
                default_output=index == default_out,
            )
        )
    return out


def find_device(
    spec: DeviceSpec, direction: Direction, devices: list[AudioDevice] | None = None
) -> int | None:
    """The index of the device ``spec`` names for ``direction``: an index (int or digits),
    an exact name, or a unique case-insensitive name substring (the first match in device
    order when several devices match). None/"" means the default device (returns None)."""
    if spec is None or (isinstance(spec, str) and spec.strip() in ("", "default")):
        return None
    devices = list_devices() if devices is None else devices
    usable = [d for d in devices if d.has(direction)]
    if isinstance(spec, int) or spec.strip().isdigit():
        index = int(spec)
        for d in usable:
            if d.index == index:
                return index
        raise AudioDeviceError(f"no {direction} device with index {index}")
    wanted = spec.strip().lower()
    exact = [d for d in usable if d.name.lower() == wanted]
    if exact:
        return exact[0].index
    matches = [d for d in usable if wanted in d.name.lower()]
    if not matches:
        names = ", ".join(repr(d.name) for d in usable) or "none"
        raise AudioDeviceError(f"no {direction} device matching {spec!r} (have: {names})")
    if len(matches) > 1:
        log.info("%d %s devices match %r; using %r", len(matches), direction, spec, matches[0].name)
    return matches[0].index


def format_devices(devices: list[AudioDevice]) -> str:
    """A table of devices like ``python -m sounddevice`` prints (``>``/``<`` mark defaults)."""
    lines = []
    for d in devices:
        mark = (">" if d.default_input else " ") + ("<" if d.default_output else " ")
        lines.append(
            f"{mark} {d.index:3d} {d.name} ({d.hostapi}, "
            f"{d.max_input_channels} in, {d.max_output_channels} out, "
            f"{d.default_samplerate:g} Hz)"
        )
    return "\n".join(lines) if lines else "no audio devices"


def _choose_rate(
    sd: ModuleType, device: int | None, direction: Direction, codec_rate: int, wanted: int | None
) -> int:
    """The device rate: ``wanted`` if given, else 48 kHz, the codec rate, or the device's
    default, whichever the device accepts first (and Resampler supports)."""
    check = sd.check_input_settings if direction == "input" else sd.check_output_settings
    candidates = [wanted] if wanted else [DEFAULT_DEVICE_RATE, codec_rate]
    errors = []
    for rate in candidates:
        try:
            check(device=device, samplerate=rate, channels=1, dtype="int16")
            return int(rate)
        except Exception as exc:  # PortAudioError / ValueError from sounddevice
            errors.append(f"{rate} Hz: {exc}")
    try:
        info = sd.query_devices(device, kind=direction)
        default = int(info["default_samplerate"])
    except Exception as exc:
        raise AudioDeviceError(f"cannot query the {direction} device: {exc}") from exc
    if default in SUPPORTED_RATES:
        return default
    raise AudioDeviceError(f"no usable sample rate for the {direction} device: {errors}")


class _DeviceStream:
    """What Microphone and Speaker share: rates, the ring, the PortAudio stream, counters."""

    direction: Direction

    def __init__(
        self,
        sample_rate: int,
        frame_samples: int | None,
        device: DeviceSpec,
        device_rate: int | None,
        latency: float | str,
        ring_frames: int,
        stream_factory: Callable[..., Any] | None,
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples or sample_rate * FRAME_MS // 1000
        self.frame_ms = 1000 * self.frame_samples / sample_rate
        self.device_spec = device
        self.latency = latency
        self._device_rate = device_rate
        self._ring_frames = ring_frames
        self._stream_factory = stream_factory
        self._stream: Any = None
        self.device: int | None = None
        self.device_rate = device_rate or DEFAULT_DEVICE_RATE
        self.device_frame = 0
        self.ring: FrameRingBuffer | None = None
        self._resampler: Resampler | None = None
        #: callbacks PortAudio made (about 50 per second with 20 ms blocks)
        self.callbacks = 0
        #: blocks PortAudio flagged (input overflow / output underflow)
        self.xruns = 0
        #: callbacks whose block size was not one frame (zeros were used)
        self.bad_blocks = 0

    @property
    def running(self) -> bool:
        return self._stream is not None

    def _prepare(self) -> None:
        factory = self._stream_factory
        if factory is None:
            sd = _sounddevice()
            self.device = find_device(self.device_spec, self.direction)
            self.device_rate = _choose_rate(
                sd, self.device, self.direction, self.sample_rate, self._device_rate
            )
        else:
            self.device = None if self.device_spec is None else int(self.device_spec)
            self.device_rate = self._device_rate or DEFAULT_DEVICE_RATE
        self.device_frame = round(self.device_rate * self.frame_samples / self.sample_rate)
        self.ring = FrameRingBuffer(self.device_frame, self._ring_frames)

    def _open(self, callback: Callable[..., None]) -> None:
        factory = self._stream_factory
        if factory is None:
            sd = _sounddevice()
            factory = sd.InputStream if self.direction == "input" else sd.OutputStream
        try:
            stream = factory(
                samplerate=self.device_rate,
                blocksize=self.device_frame,
                device=self.device,
                channels=1,
                dtype="int16",
                latency=self.latency,
                callback=callback,
            )
            stream.start()
        except AudioDeviceError:
            raise
        except Exception as exc:
            raise AudioDeviceError(f"cannot open the {self.direction} device: {exc}") from exc
        self._stream = stream
        log.info(
            "%s device %s open: %d Hz, blocks of %d, latency %s",
            self.direction,
            self.device if self.device is not None else "default",
            self.device_rate,
            self.device_frame,
            getattr(stream, "latency", self.latency),
        )

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception as exc:
                log.warning("closing the %s stream: %s", self.direction, exc)


class Microphone(_DeviceStream):
    """Captures mono audio from an input device; ``await read()`` yields codec-rate frames
    paced by the device clock (see the module docstring)."""

    direction: Direction = "input"

    def __init__(
        self,
        sample_rate: int,
        frame_samples: int | None = None,
        *,
        device: DeviceSpec = None,
        device_rate: int | None = None,
        latency: float | str = DEFAULT_LATENCY,
        ring_frames: int = 10,
        stream_factory: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(
            sample_rate, frame_samples, device, device_rate, latency, ring_frames, stream_factory
        )

    def start(self) -> None:
        if self._stream is not None:
            return
        self._prepare()
        self._resampler = Resampler(self.device_rate, self.sample_rate)
        self._open(self._callback)

    def _callback(self, indata: npt.NDArray[np.int16], frames: int, time: Any, status: Any) -> None:
        # PortAudio's thread: copy and count, nothing else
        self.callbacks += 1
        if status:
            self.xruns += 1
        ring = self.ring
        if ring is None:
            return
        if frames != ring.frame_samples:
            self.bad_blocks += 1
        ring.write(indata[:, 0])

    def read_nowait(self) -> Int16Array | None:
        """The next captured frame at the codec rate, or None if none is ready."""
        ring = self.ring
        if ring is None:
            return None
        frame = ring.read()
        if frame is None:
            return None
        assert self._resampler is not None
        return self._resampler.process(frame)

    async def read(self) -> Int16Array:
        """Wait for the device's next block and return it as a codec-rate frame."""
        while True:
            frame = self.read_nowait()
            if frame is not None:
                return frame
            if self._stream is None:
                raise AudioDeviceError("the microphone is not open (start() it first)")
            await asyncio.sleep(_POLL_S)


class Speaker(_DeviceStream):
    """Plays codec-rate frames on an output device (see the module docstring)."""

    direction: Direction = "output"

    def __init__(
        self,
        sample_rate: int,
        frame_samples: int | None = None,
        *,
        device: DeviceSpec = None,
        device_rate: int | None = None,
        latency: float | str = DEFAULT_LATENCY,
        ring_frames: int = 5,
        prefill: int = 2,
        stream_factory: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(
            sample_rate, frame_samples, device, device_rate, latency, ring_frames, stream_factory
        )
        self.prefill = max(1, min(prefill, ring_frames))
        self._playing = False
        #: times the speaker ran dry mid-stream and re-primed
        self.gaps = 0
        #: times wait_for_space gave up on a device that took no frames
        self.stalls = 0

    def start(self) -> None:
        if self._stream is not None:
            return
        self._prepare()
        self._resampler = Resampler(self.sample_rate, self.device_rate)
        self._open(self._callback)

    def _callback(
        self, outdata: npt.NDArray[np.int16], frames: int, time: Any, status: Any
    ) -> None:
        # PortAudio's thread: copy and count, nothing else
        self.callbacks += 1
        if status:
            self.xruns += 1
        out = outdata[:, 0]
        ring = self.ring
        if ring is None or frames != ring.frame_samples:
            if ring is not None:
                self.bad_blocks += 1
            outdata.fill(0)
            return
        if not self._playing:
            if len(ring) < self.prefill:
                outdata.fill(0)
                return
            self._playing = True
        if not ring.read_into(out):
            self._playing = False
            self.gaps += 1

    async def wait_for_space(self) -> None:
        """Wait until the device has played its queue down to ``prefill + 1`` frames.

        Paces playout by the output device's clock: the queue stays ``prefill + 1`` to
        ``prefill + 2`` frames deep, one frame more than the priming level because PortAudio
        sometimes pulls two blocks back to back. If the device stops taking frames, this
        returns after about three frame times anyway (the ring then drops its oldest)."""
        ring = self.ring
        if ring is None:
            return
        give_up = 3 * self.frame_ms / 1000
        waited = 0.0
        while len(ring) > self.prefill + 1 and waited < give_up:
            await asyncio.sleep(_POLL_S)
            waited += _POLL_S
        if waited >= give_up:
            self.stalls += 1

    def write(self, frame: Int16Array) -> None:
        """Queue one codec-rate frame for playing (never blocks)."""
        if self.ring is None or self._resampler is None:
            return
        x = np.asarray(frame, dtype=np.int16)
        if x.ndim == 2:
            x = np.rint(x.astype(np.float64).mean(axis=1)).astype(np.int16)
        self.ring.write(self._resampler.process(x))
