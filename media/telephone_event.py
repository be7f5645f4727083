"""RFC 4733 telephone-events (DTMF over RTP): payload codec, sender and receiver, sans-I/O.

The payload (RFC 4733 §2.3) is 4 octets: event (8 bits), E (end) bit, R bit, volume (6 bits,
-dBm0), duration (16 bits, in RTP timestamp units since the event's start timestamp).

:class:`TelephoneEventSender` is clocked by the RTP session: call :meth:`poll` once per packet
interval with the RTP timestamp of that tick and send what it returns on the audio stream's
SSRC (with the session's own sequence numbers). For each digit it produces a first packet with
the marker bit (§2.5.1.2), updates while the tone lasts (every ``update_interval_ms``,
§2.5.1.2), then the final packet with the E bit three times, one per packet interval, all with
the event's start timestamp (§2.5.1.4). A pause separates digits.

:class:`TelephoneEventReceiver` reports each event once, on the first packet seen for its
timestamp: redundant updates and end packets are dropped, and a lost start packet does not
lose the digit (§2.5.2).
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from dataclasses import dataclass

from .rtp import timestamp_diff

__all__ = [
    "EVENT_FLASH",
    "EventPacket",
    "TelephoneEvent",
    "TelephoneEventError",
    "TelephoneEventReceived",
    "TelephoneEventReceiver",
    "TelephoneEventSender",
    "digit_for_event",
    "event_for_digit",
]

log = logging.getLogger("media.telephone_event")

_PAYLOAD = struct.Struct("!BBH")
_DIGITS = "0123456789*#ABCD"
#: Event code of a hook flash (RFC 4733 §3.2, Table 3).
EVENT_FLASH = 16
_MAX_DURATION = 0xFFFF


class TelephoneEventError(ValueError):
    """A malformed telephone-event payload or an unknown digit."""


def event_for_digit(digit: str) -> int:
    """Event code for ``0-9 * # A-D`` (case-insensitive) or ``"flash"``/``"!"`` (§3.2)."""
    if digit.lower() in ("flash", "!"):
        return EVENT_FLASH
    index = _DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise TelephoneEventError(f"not a DTMF digit: {digit!r}")
    return index


def digit_for_event(event: int) -> str | None:
    """The digit for a DTMF event code (0-15), ``"flash"`` for 16, else None."""
    if 0 <= event < 16:
        return _DIGITS[event]
    if event == EVENT_FLASH:
        return "flash"
    return None


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 §2.3 payload block."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Parse the first 4-octet block of a payload (more blocks are ignored)."""
        if len(payload) < 4:
            raise TelephoneEventError(f"telephone-event payload too short ({len(payload)})")
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        if not 0 <= self.event <= 255:
            raise ValueError("event must be 0-255")
        if not 0 <= self.volume <= 63:
            raise ValueError("volume must be 0-63 (-dBm0)")
        if not 0 <= self.duration <= _MAX_DURATION:
            raise ValueError("duration must fit 16 bits")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    @property
    def digit(self) -> str | None:
        return digit_for_event(self.event)


@dataclass(frozen=True, slots=True)
class EventPacket:
    """A packet the sender wants sent: payload, RTP timestamp (event start) and marker."""

    payload: bytes
    timestamp: int
    marker: bool
    event: TelephoneEvent


class TelephoneEventSender:
    """Produces the RFC 4733 packets for queued digits, clocked by RTP timestamps.

    ``clock_rate`` is the telephone-event clock (8000, or 48000 alongside Opus);
    ``packet_interval_ms`` the media packet interval at which :meth:`poll` is called.
    """

    def __init__(
        self,
        clock_rate: int = 8000,
        *,
        packet_interval_ms: int = 20,
        update_interval_ms: int | None = None,
        tone_ms: int = 100,
        pause_ms: int = 50,
        volume: int = 10,
        end_repeats: int = 3,
    ) -> None:
        if not 0 <= volume <= 63:
            raise ValueError("volume must be 0-63")
        per_ms = clock_rate / 1000
        self.clock_rate = clock_rate
        self.volume = volume
        self.end_repeats = end_repeats
        self._interval = round(packet_interval_ms * per_ms)
        self._update = round((update_interval_ms or packet_interval_ms) * per_ms)
        self._tone = min(round(tone_ms * per_ms), _MAX_DURATION)
        self._pause = round(pause_ms * per_ms)
        if self._interval <= 0 or self._tone <= 0:
            raise ValueError("packet interval and tone length must be positive")
        self._queue: deque[int] = deque()
        self._event: int | None = None
        self._start = 0
        self._last_update = 0
        self._ends_sent = 0
        self._idle_since: int | None = None

    def queue(self, digits: str) -> None:
        """Queue digits to send (``0-9 * # A-D``; ``!`` is a hook flash)."""
        codes = [event_for_digit(d) for d in digits if not d.isspace()]
        self._queue.extend(codes)

    def queue_event(self, event: int) -> None:
        """Queue a raw event code (0-255)."""
        if not 0 <= event <= 255:
            raise ValueError("event must be 0-255")
        self._queue.append(event)

    @property
    def busy(self) -> bool:
        """True while an event is being sent (the session should hold back audio packets)."""
        return self._event is not None

    @property
    def pending(self) -> int:
        """Events queued and not yet started."""
        return len(self._queue)

    def poll(self, timestamp: int) -> list[EventPacket]:
        """Packets to send at the media tick with RTP timestamp ``timestamp``."""
        timestamp &= 0xFFFFFFFF
        if self._event is None:
            if not self._queue:
                return []
            if (
                self._idle_since is not None
                and timestamp_diff(timestamp, self._idle_since) < self._pause
            ):
                return []
            self._event = self._queue.popleft()
            self._start = timestamp
            self._last_update = 0
            self._ends_sent = 0
            duration = min(self._interval, self._tone)
            return [self._packet(duration, end=False, marker=True)]
        if self._ends_sent:
            return [self._end_packet(timestamp)]
        elapsed = timestamp_diff(timestamp, self._start)
        duration = elapsed + self._interval
        if duration >= self._tone:
            return [self._end_packet(timestamp)]
        if elapsed - self._last_update >= self._update:
            self._last_update = elapsed
            return [self._packet(min(duration, _MAX_DURATION), end=False, marker=False)]
        return []

    def _end_packet(self, timestamp: int) -> EventPacket:
        packet = self._packet(self._tone, end=True, marker=False)
        self._ends_sent += 1
        if self._ends_sent >= self.end_repeats:
            self._event = None
            self._idle_since = timestamp
        return packet

    def _packet(self, duration: int, *, end: bool, marker: bool) -> EventPacket:
        assert self._event is not None
        info = TelephoneEvent(self._event, end, self.volume, duration)
        return EventPacket(info.serialize(), self._start, marker, info)


@dataclass(frozen=True, slots=True)
class TelephoneEventReceived:
    """A telephone event seen for the first time (reported once per event)."""

    event: int
    timestamp: int
    volume: int

    @property
    def digit(self) -> str | None:
        return digit_for_event(self.event)


class TelephoneEventReceiver:
    """Turns received telephone-event RTP payloads into one report per event (RFC 4733 §2.5.2).

    An event is identified by its RTP timestamp. The first packet of a new timestamp reports
    it, whether or not it is the marked start packet (the start may be lost); later updates and
    the redundant end packets are ignored, as are stale packets of older events. A packet for
    the same event with a new timestamp and no marker while the previous one has not ended is
    a long-event segment (§2.5.1.3), not a new key press.
    """

    def __init__(self, history: int = 16) -> None:
        self._seen: deque[int] = deque(maxlen=history)
        self._last: tuple[int, int] | None = None  # (timestamp, event) of the newest event
        self._last_ended = True

    def receive(
        self, payload: bytes, timestamp: int, marker: bool = False
    ) -> list[TelephoneEventReceived]:
        """Feed one RTP payload; malformed payloads are dropped (logged)."""
        try:
            info = TelephoneEvent.parse(payload)
        except TelephoneEventError as exc:
            log.debug("dropping telephone-event payload: %s", exc)
            return []
        timestamp &= 0xFFFFFFFF
        if timestamp in self._seen:
            if self._last is not None and self._last[0] == timestamp and info.end:
                self._last_ended = True
            return []
        if self._last is not None:
            last_ts, last_event = self._last
            if timestamp_diff(timestamp, last_ts) < 0:
                return []  # a late packet of an older event
            if not marker and not self._last_ended and info.event == last_event:
                self._remember(timestamp, info)  # a segment of a long event
                return []
        self._remember(timestamp, info)
        return [TelephoneEventReceived(info.event, timestamp, info.volume)]

    def _remember(self, timestamp: int, info: TelephoneEvent) -> None:
        self._seen.append(timestamp)
        self._last = (timestamp, info.event)
        self._last_ended = info.end
