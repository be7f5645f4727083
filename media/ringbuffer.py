"""A single-producer/single-consumer ring buffer of int16 audio frames.

It sits between a PortAudio callback thread and the asyncio event loop (one side writes,
the other reads) and is built so that neither side ever blocks or allocates audio memory:
the frames live in one preallocated numpy array and both operations copy in place.

Synchronisation without locks. The producer owns ``_written`` (frames ever written), the
consumer owns ``_read`` (frames ever consumed); each only reads the other's counter, and a
Python int assignment is atomic under the GIL. The producer never waits: when the buffer is
full it simply writes on, over the oldest frame. The consumer notices that it fell more than
``capacity`` frames behind and skips the frames that were overwritten (an *overrun*: oldest
dropped, counted). The array has ``capacity + _MARGIN`` slots, so the slot being read is not
the one being written unless the producer writes ``_MARGIN`` frames during one copy; the
consumer checks the producer's counter again after copying and discards a frame that may have
been torn (a seqlock-style validation).

Reading from an empty buffer returns silence and counts an *underrun* (only once the stream
has started, i.e. after the first frame was ever read, so the startup period is not an error).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["FrameRingBuffer"]

Int16Array = npt.NDArray[np.int16]

_MARGIN = 2


class FrameRingBuffer:
    """Fixed-size frames of ``frame_samples`` int16 samples (mono) or ``(frame_samples,
    channels)``; holds up to ``capacity`` frames."""

    def __init__(self, frame_samples: int, capacity: int, channels: int = 1) -> None:
        if frame_samples <= 0 or capacity <= 0 or channels <= 0:
            raise ValueError("frame_samples, capacity and channels must be positive")
        self.frame_samples = frame_samples
        self.capacity = capacity
        self.channels = channels
        self._slots = capacity + _MARGIN
        shape: tuple[int, ...] = (
            (self._slots, frame_samples)
            if channels == 1
            else (self._slots, frame_samples, channels)
        )
        self._buf: Int16Array = np.zeros(shape, dtype=np.int16)
        self._written = 0  # producer-owned
        self._read = 0  # consumer-owned
        self._started = False  # consumer-owned
        #: frames the consumer found missing (silence was returned instead)
        self.underruns = 0
        #: frames dropped because the consumer fell more than ``capacity`` frames behind
        self.overruns = 0
        #: frames written with the wrong shape (zero-filled or truncated to fit)
        self.bad_frames = 0

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self._buf.shape[1:])

    def __len__(self) -> int:
        """Frames ready to read (may be briefly stale while the other side runs)."""
        return min(self._written - self._read, self.capacity)

    @property
    def written(self) -> int:
        """Frames written so far (producer count)."""
        return self._written

    @property
    def consumed(self) -> int:
        """Frames read so far, including skipped ones (consumer count)."""
        return self._read

    # --- producer side ------------------------------------------------------------------

    def write(self, frame: npt.NDArray[np.int16]) -> None:
        """Copy one frame in (producer side). Never blocks; a full buffer loses its oldest."""
        slot = self._buf[self._written % self._slots]
        if frame.shape == slot.shape:
            np.copyto(slot, frame, casting="unsafe")
        else:
            self._copy_mismatched(slot, frame)
        self._written += 1  # publish after the copy

    def _copy_mismatched(self, slot: Int16Array, frame: npt.NDArray[np.int16]) -> None:
        self.bad_frames += 1
        flat = frame.reshape(frame.shape[0], -1)[:, 0] if frame.ndim > 1 else frame
        n = min(len(flat), slot.shape[0])
        if slot.ndim == 1:
            slot[:n] = flat[:n]
        else:
            slot[:n] = flat[:n, None]
        slot[n:] = 0

    # --- consumer side ------------------------------------------------------------------

    def read_into(self, out: npt.NDArray[np.int16]) -> bool:
        """Copy the oldest frame into ``out`` (consumer side), or silence when there is none.

        Returns True when a frame was read. ``out`` must have the frame's shape.
        """
        while True:
            written = self._written
            available = written - self._read
            if available <= 0:
                out.fill(0)
                if self._started:
                    self.underruns += 1
                return False
            if available > self.capacity:
                skipped = available - self.capacity
                self.overruns += skipped
                self._read += skipped
            index = self._read
            np.copyto(out, self._buf[index % self._slots], casting="unsafe")
            # validate: the producer must not have come round to this slot meanwhile
            if self._written - index < self._slots:
                self._read = index + 1
                self._started = True
                return True
            # torn read: the frame was overwritten while copying; it counts as dropped

    def read(self) -> Int16Array | None:
        """The oldest frame as a new array, or None when empty (no underrun counted).

        For the event-loop side, where allocating is fine."""
        if self._written - self._read <= 0:
            return None
        out: Int16Array = np.empty(self.frame_shape, dtype=np.int16)
        return out if self.read_into(out) else None

    def discard(self, frames: int | None = None) -> int:
        """Drop up to ``frames`` of the oldest frames (all by default), consumer side."""
        available = max(0, min(self._written - self._read, self.capacity))
        n = available if frames is None else max(0, min(frames, available))
        self._read = self._written - available + n
        return n
