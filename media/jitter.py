"""An adaptive jitter buffer for 20 ms audio frames, sans-I/O.

The buffer is fed RTP packets as they arrive (:meth:`JitterBuffer.push`) and asked for one
frame per packet time (:meth:`JitterBuffer.pop`); both take the caller's clock ``now`` in
seconds. :meth:`pop` returns a :class:`PlayoutFrame` saying what to play:

* ``AUDIO``: a payload to decode;
* ``LOST``: the frame is missing, run loss concealment. ``next_payload`` carries the packet
  that follows it when that one is already here, so an Opus decoder can rebuild the lost
  frame from in-band FEC (RFC 6716 §2.1.7); ``inserted`` marks a frame the buffer adds on
  purpose to grow its delay (time stretching), for which there is nothing to recover;
* ``SILENCE``: nothing to play (before the first packet, in a DTX / silence-suppression gap,
  after the stream paused). When the buffer runs dry the next frames are ``LOST`` (the packet
  may be late or lost: concealment bridges it) and after ``max_lost_run`` of them ``SILENCE``:
  a sender that pauses without warning is only recognised as such afterwards.

Delay adaptation. Each packet's relative transit ``D = arrival - timestamp / clock_rate``
is compared with the smallest transit of the last second; the difference is its delay
variation. The target delay is a high percentile (97 % by default) of the recent variations
plus a margin, plus ``lookahead_frames`` whole frames when the caller wants the packet after
a lost one in hand (Opus FEC), bounded by ``min_delay_ms``/``max_delay_ms``; it grows with
the first late packets and shrinks slowly (the history spans about ten seconds). Sparse,
recurring delay peaks (a stall every few seconds, as Wi-Fi scans cause) would slip past a
percentile: once two or more have been seen within ``peak_window_s`` the target covers the
highest (the idea of WebRTC NetEQ's peak detector), unless they are frequent enough to be
ordinary jitter.

The delay actually applied is ``now - slot_timestamp / clock_rate`` minus that minimum
transit. When it falls more than half a frame short of the target the buffer inserts a frame
(silence before a marked talkspurt start, concealment inside a talkspurt); when it exceeds
the target by more than 1.5 frames for ``drop_after_frames`` frames it drops one (free when
that slot's packet is missing anyway). At a talkspurt start
(after a DTX gap; RFC 3551 §4.1 marks it with the marker bit) the first packet is simply
scheduled at the target delay, which lengthens or shortens the pause instead of the speech.
This also absorbs a sender clock a few per mille fast or slow: the buffer neither grows nor
drains.

Timestamps are unwrapped to 64 bits; sequence numbers tell a lost packet (a sequence gap)
from a DTX gap (timestamps jump, sequence numbers do not). A timestamp jump larger than
``resync_threshold_s`` confirmed by a second packet resynchronises the buffer (like
RFC 3550 §A.1 does for sequence numbers); a new SSRC calls :meth:`JitterBuffer.reset`.
Packets arriving after their slot are counted as late and dropped; duplicates are dropped.

Packets may carry other durations than ``frame_ms`` (``push(..., duration=)``, e.g. a peer
sending 30 ms G.711 or 60 ms Opus): one :meth:`pop` then yields one packet, and the caller
pops whenever it needs more audio. The adaptation thresholds stay in ``frame_ms`` units.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from .rtp import seq_diff, timestamp_diff

__all__ = [
    "FrameKind",
    "JitterBuffer",
    "JitterBufferConfig",
    "JitterBufferStats",
    "PlayoutFrame",
]

log = logging.getLogger("media.jitter")


class FrameKind(Enum):
    """What :meth:`JitterBuffer.pop` asks the caller to play."""

    AUDIO = "audio"
    LOST = "lost"
    SILENCE = "silence"


@dataclass(frozen=True, slots=True)
class PlayoutFrame:
    """One frame slot of playout.

    ``timestamp`` is the RTP timestamp of the slot (32 bits). For ``AUDIO`` ``payload``,
    ``sequence`` and ``marker`` describe the packet; for ``LOST`` ``next_payload`` is the
    following packet's payload when it is present (for Opus FEC), and ``inserted`` is True for
    a frame added to stretch the delay rather than lost. ``duration`` is the audio the slot
    stands for, in timestamp units: the packet's for ``AUDIO``, the previous packet's for
    ``LOST``, one frame for ``SILENCE`` and inserted frames.
    """

    kind: FrameKind
    timestamp: int
    payload: bytes | None = None
    sequence: int | None = None
    marker: bool = False
    next_payload: bytes | None = None
    inserted: bool = False
    duration: int = 0
    payload_type: int | None = None

    @property
    def next_present(self) -> bool:
        """True when the packet after a lost frame is already buffered (FEC can recover)."""
        return self.next_payload is not None


@dataclass(slots=True)
class JitterBufferConfig:
    """Tuning of :class:`JitterBuffer` (times in milliseconds unless the name says _s)."""

    clock_rate: int = 48000
    frame_ms: int = 20
    min_delay_ms: float = 20.0
    max_delay_ms: float = 400.0
    percentile: float = 0.97
    margin_ms: float = 10.0
    history_packets: int = 500  # delay-variation samples behind the percentile (~10 s)
    transit_window_packets: int = 50  # window of the minimum transit (~1 s)
    max_packets: int = 100  # capacity; the oldest packet is discarded beyond it
    resync_threshold_s: float = 1.0
    peak_threshold_ms: float = 40.0  # a variation this far above the median is a peak
    peak_window_s: float = 20.0  # peaks are remembered this long
    min_peaks: int = 2  # recurring peaks: the target covers the highest one ...
    max_peaks: int = 15  # ... unless they are so frequent that they are just wide jitter
    drop_after_frames: int = 10  # a delay excess must last this long before a frame is dropped
    lookahead_frames: int = 0  # extra delay so the packet after a lost one is here (Opus FEC)
    max_lost_run: int = 3  # frames concealed with nothing buffered before the stream is paused


@dataclass(slots=True)
class JitterBufferStats:
    """Counters of :class:`JitterBuffer`."""

    received: int = 0
    played: int = 0
    lost: int = 0  # LOST frames for packets known missing (a later one is here)
    underruns: int = 0  # LOST frames with nothing buffered (loss, lateness or a pause)
    inserted: int = 0  # frames inserted to grow the delay
    dropped: int = 0  # packets dropped to shrink the delay
    late: int = 0
    duplicates: int = 0
    silence: int = 0
    resyncs: int = 0
    discarded: int = 0  # stray packets with a wild timestamp, overflow


@dataclass(slots=True)
class _Entry:
    seq: int
    timestamp: int  # 32-bit as received
    payload: bytes
    marker: bool
    duration: int  # timestamp units
    payload_type: int | None = None


@dataclass(slots=True)
class _Candidate:
    """A packet whose timestamp jumped: kept until the next packet confirms the jump."""

    seq: int
    transit: float
    ext: int
    entry: _Entry
    arrival: float = 0.0


@dataclass
class _Played:
    """Recently played sequence numbers, to tell duplicates from late packets."""

    order: deque[int] = field(default_factory=lambda: deque(maxlen=256))
    seqs: set[int] = field(default_factory=set)

    def add(self, seq: int) -> None:
        if len(self.order) == self.order.maxlen:
            self.seqs.discard(self.order[0])
        self.order.append(seq)
        self.seqs.add(seq)

    def clear(self) -> None:
        self.order.clear()
        self.seqs.clear()


class JitterBuffer:
    """Adaptive playout buffer for one RTP source (see the module docstring)."""

    def __init__(self, config: JitterBufferConfig | None = None) -> None:
        self.config = config or JitterBufferConfig()
        c = self.config
        if c.clock_rate <= 0 or c.frame_ms <= 0:
            raise ValueError("clock_rate and frame_ms must be positive")
        self.clock_rate = c.clock_rate
        self.frame_ts = c.clock_rate * c.frame_ms // 1000
        self.frame_s = c.frame_ms / 1000
        self.stats = JitterBufferStats()
        self._target = c.min_delay_ms / 1000
        self._played = _Played()
        self.reset()

    # --- state ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the stream (new SSRC): buffered packets, timing history, playout position."""
        self._packets: dict[int, _Entry] = {}
        self._ts_ref: tuple[int, int] | None = None  # (32-bit ts, extended ts)
        self._transits: deque[float] = deque(maxlen=self.config.transit_window_packets)
        self._variations: deque[float] = deque()
        self._sorted_variations: list[float] = []
        self._peaks: deque[tuple[float, float]] = deque()  # (arrival, height) of delay peaks
        self._dirty = True
        self._playing = False
        self._playout_ts = 0  # extended timestamp of the next slot (while playing)
        self._floor: int | None = None  # packets below this extended timestamp are late
        self._expected_seq = 0
        self._skip: set[int] = set()
        self._lost_run = 0
        self._excess_run = 0
        self._since_adjust = 0
        self._last_duration = self.frame_ts
        self._candidate: _Candidate | None = None
        self._played.clear()

    @property
    def target_delay_ms(self) -> float:
        """The delay the buffer aims at, in milliseconds."""
        return self._target_delay() * 1000

    def current_delay_ms(self, now: float) -> float:
        """The playout delay now applied, in ms (relative to the fastest recent packet)."""
        if not self._playing or not self._transits:
            return self._target_delay() * 1000 if self._transits else 0.0
        return max(0.0, (now - self._playout_ts / self.clock_rate - min(self._transits)) * 1000)

    @property
    def buffered(self) -> int:
        """Packets waiting in the buffer."""
        return len(self._packets)

    @property
    def playing(self) -> bool:
        """True inside a talkspurt, False while idle or in a silence gap."""
        return self._playing

    def note_sequence(self, seq: int) -> None:
        """Tell the buffer a sequence number was used by a non-audio packet (e.g. RFC 4733
        telephone-events on the same SSRC) so its absence is not taken for a loss."""
        seq &= 0xFFFF
        self._skip.add(seq)
        if len(self._skip) > 256:  # keep the newest few: a bound whatever the peer sends
            self._skip = {s for s in self._skip if -128 < seq_diff(s, seq) <= 0}

    # --- input ---------------------------------------------------------------------------

    def _unwrap(self, timestamp: int) -> int:
        if self._ts_ref is None:
            ext = timestamp
        else:
            ext = self._ts_ref[1] + timestamp_diff(timestamp, self._ts_ref[0])
        self._ts_ref = (timestamp, ext)
        return ext

    def push(
        self,
        payload: bytes,
        seq: int,
        timestamp: int,
        marker: bool,
        arrival_time: float,
        duration: int | None = None,
        payload_type: int | None = None,
    ) -> None:
        """Add one received packet (its payload, RTP sequence number and timestamp).

        ``duration`` is the audio it carries in timestamp units (default: one frame);
        ``payload_type`` is handed back with the frame (for a caller that decodes several).
        """
        seq &= 0xFFFF
        timestamp &= 0xFFFFFFFF
        self.stats.received += 1
        if duration is None or duration <= 0:
            duration = self.frame_ts
        entry = _Entry(seq, timestamp, bytes(payload), marker, duration, payload_type)
        previous_ref = self._ts_ref
        ext = self._unwrap(timestamp)
        transit = arrival_time - ext / self.clock_rate
        if self._transits:
            reference = min(self._transits)
            if abs(transit - reference) > self.config.resync_threshold_s:
                candidate = self._candidate
                if (
                    candidate is not None
                    and seq == candidate.seq
                    and abs(transit - candidate.transit) < self.config.resync_threshold_s / 2
                ):
                    log.info("timestamp jump confirmed at seq %d: resynchronising", seq)
                    self._resync()
                    self._accept(
                        candidate.entry,
                        self._unwrap(candidate.entry.timestamp),
                        candidate.arrival,
                    )
                    self._accept(entry, self._unwrap(timestamp), arrival_time)
                    return
                if candidate is not None:
                    self.stats.discarded += 1
                self._candidate = _Candidate((seq + 1) & 0xFFFF, transit, ext, entry, arrival_time)
                self._ts_ref = previous_ref  # keep unwrapping relative to the stream
                return
        if self._candidate is not None:
            self.stats.discarded += 1
            self._candidate = None
        self._accept(entry, ext, arrival_time)

    def _resync(self) -> None:
        self.stats.resyncs += 1
        self.stats.discarded += len(self._packets)
        self.reset()

    def _accept(self, entry: _Entry, ext: int, arrival: float) -> None:
        transit = arrival - ext / self.clock_rate
        if ext in self._packets or entry.seq in self._played.seqs:
            self.stats.duplicates += 1
            return
        self._transits.append(transit)
        variation = transit - min(self._transits)
        self._variations.append(variation)
        bisect.insort(self._sorted_variations, variation)
        if len(self._variations) > self.config.history_packets:
            old = self._variations.popleft()
            del self._sorted_variations[bisect.bisect_left(self._sorted_variations, old)]
        self._dirty = True
        self._note_peak(variation, arrival)
        if self._floor is not None and ext < self._floor:
            self.stats.late += 1
            log.debug("late packet seq %d dropped", entry.seq)
            return
        self._packets[ext] = entry
        if len(self._packets) > self.config.max_packets:
            oldest = min(self._packets)
            del self._packets[oldest]
            self.stats.discarded += 1

    # --- adaptation ----------------------------------------------------------------------

    def _percentile_variation(self) -> float:
        ordered = self._sorted_variations
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(self.config.percentile * len(ordered)))]

    def _note_peak(self, variation: float, arrival: float) -> None:
        """Delay peaks: sparse, recurring spikes well above the usual variation (a Wi-Fi scan,
        a periodic stall) that the percentile would let through as late packets."""
        c = self.config
        peaks = self._peaks
        while peaks and arrival - peaks[0][0] > c.peak_window_s:
            peaks.popleft()
            self._dirty = True
        ordered = self._sorted_variations
        if variation <= ordered[len(ordered) // 2] + c.peak_threshold_ms / 1000:
            return
        if peaks and arrival - peaks[-1][0] < 0.5:  # the same stall
            peaks[-1] = (peaks[-1][0], max(peaks[-1][1], variation))
        else:
            peaks.append((arrival, variation))
        self._dirty = True

    def _target_delay(self) -> float:
        if self._dirty:
            c = self.config
            wanted = self._percentile_variation()
            if c.min_peaks <= len(self._peaks) <= c.max_peaks:
                wanted = max(wanted, max(height for _, height in self._peaks))
            wanted += c.margin_ms / 1000 if self._sorted_variations else 0.0
            wanted += c.lookahead_frames * self.frame_s
            self._target = min(max(wanted, c.min_delay_ms / 1000), c.max_delay_ms / 1000)
            self._dirty = False
        return self._target

    # --- output --------------------------------------------------------------------------

    def pop(self, now: float) -> PlayoutFrame:
        """The frame to play now; call once per frame time."""
        self._since_adjust += 1
        if not self._transits:
            return self._silence(0)
        target = self._target_delay()
        min_transit = min(self._transits)
        rate = self.clock_rate
        if not self._playing:
            if not self._packets:
                return self._silence(self._playout_ts)
            order = sorted(self._packets)

            def delay_of(ext: int) -> float:
                return now - ext / rate - min_transit

            if delay_of(order[0]) < target:
                return self._silence(order[0])
            # start the talkspurt; skip what would be played far too late (after a stall)
            start = 0
            while start + 1 < len(order) and delay_of(order[start + 1]) >= target:
                start += 1
            for ext in order[:start]:
                del self._packets[ext]
                self.stats.dropped += 1
            first = self._packets[order[start]]
            self._playing = True
            self._playout_ts = order[start]
            self._expected_seq = first.seq
            self._excess_run = 0
            self._since_adjust = 0
        # --- in a talkspurt
        error = (now - self._playout_ts / rate - min_transit) - target
        entry = self._slot_entry()
        entry_ext = self._playout_ts
        if error < -0.5 * self.frame_s and self._since_adjust >= 3:
            self._since_adjust = 0
            self.stats.inserted += 1
            ts = self._playout_ts & 0xFFFFFFFF
            if entry is not None and entry.marker:
                self.stats.silence += 1
                return PlayoutFrame(FrameKind.SILENCE, ts, inserted=True, duration=self.frame_ts)
            return PlayoutFrame(FrameKind.LOST, ts, inserted=True, duration=self.frame_ts)
        self._excess_run = self._excess_run + 1 if error > 1.5 * self.frame_s else 0
        if (
            self._excess_run >= self.config.drop_after_frames
            or (error > 3 * self.frame_s and self._since_adjust >= 2)
        ) and (self._playout_ts + self._slot_duration(entry)) in self._packets:
            self._since_adjust = 0
            self._excess_run = 0
            self._playout_ts += self._slot_duration(entry)
            if entry is not None:
                self.stats.dropped += 1
                del self._packets[entry_ext]
                self._played.add(entry.seq)
                self._expected_seq = (entry.seq + 1) & 0xFFFF
            else:  # the slot's packet is missing anyway: skipping it costs no audio
                self._expected_seq = (self._expected_seq + 1) & 0xFFFF
            entry = self._slot_entry()
        return self._play_slot(entry)

    def _slot_entry(self) -> _Entry | None:
        """The packet for the current slot; realigns onto a packet that is off the grid."""
        entry = self._packets.get(self._playout_ts)
        if entry is not None:
            return entry
        for ext in self._packets:
            if self._playout_ts < ext < self._playout_ts + self._last_duration:
                self._playout_ts = ext
                return self._packets[ext]
        return None

    def _play_slot(self, entry: _Entry | None) -> PlayoutFrame:
        slot = self._playout_ts
        ts = slot & 0xFFFFFFFF
        if entry is not None:
            del self._packets[slot]
            self._played.add(entry.seq)
            self._expected_seq = (entry.seq + 1) & 0xFFFF
            self._last_duration = entry.duration
            self._advance(entry.duration)
            self._lost_run = 0
            self.stats.played += 1
            return PlayoutFrame(
                FrameKind.AUDIO,
                ts,
                entry.payload,
                entry.seq,
                entry.marker,
                duration=entry.duration,
                payload_type=entry.payload_type,
            )
        skipped = False
        while self._expected_seq in self._skip:
            self._skip.discard(self._expected_seq)
            self._expected_seq = (self._expected_seq + 1) & 0xFFFF
            skipped = True
        later = [ext for ext in self._packets if ext > slot]
        if skipped and not later:
            # the sender put non-audio packets (telephone-events) where audio would be
            return self._enter_gap()
        if later:
            nxt = self._packets[min(later)]
            if seq_diff(nxt.seq, self._expected_seq) <= 0:
                # no sequence number is missing: the sender paused (DTX, silence suppression)
                return self._enter_gap()
            self.stats.lost += 1  # a later packet is here and a sequence number is missing
        elif self._lost_run >= self.config.max_lost_run:
            return self._enter_gap()
        else:
            # nothing buffered: lost, late, or the sender paused; conceal for a few frames
            self.stats.underruns += 1
        duration = self._last_duration  # assume the missing packet is like the last one
        following = self._packets.get(slot + duration)
        next_payload = None
        if following is not None and following.seq == (self._expected_seq + 1) & 0xFFFF:
            next_payload = following.payload
        self._expected_seq = (self._expected_seq + 1) & 0xFFFF
        self._advance(duration)
        self._lost_run += 1
        return PlayoutFrame(FrameKind.LOST, ts, next_payload=next_payload, duration=duration)

    def _slot_duration(self, entry: _Entry | None) -> int:
        return entry.duration if entry is not None else self._last_duration

    def _advance(self, duration: int) -> None:
        self._playout_ts += duration
        self._floor = self._playout_ts

    def _enter_gap(self) -> PlayoutFrame:
        self._playing = False
        self._lost_run = 0
        self._floor = self._playout_ts
        return self._silence(self._playout_ts)

    def _silence(self, ext: int) -> PlayoutFrame:
        self.stats.silence += 1
        return PlayoutFrame(FrameKind.SILENCE, ext & 0xFFFFFFFF, duration=self.frame_ts)
