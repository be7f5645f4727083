"""A sans-I/O RTP/RTCP session for one audio stream (RFC 3550, RFC 5761, RFC 4733, RFC 7587).

The session owns the codec, the packetizer, the jitter buffer and the RTCP machinery of one
bidirectional audio stream; it never touches a socket or a clock. The application drives it:

* every packet time: ``send_frame(pcm, now)`` returns the RTP datagrams to send (audio, or
  RFC 4733 telephone-events while a queued DTMF digit is being sent), and ``playout(now)``
  returns the next frame of decoded audio (jitter buffer, then decode, Opus in-band FEC or
  packet-loss concealment);
* for every datagram from the peer: ``receive(data, now)``. With rtcp-mux RTP and RTCP are
  told apart by the packet type octet (RFC 5761 §4); malformed packets are counted, logged
  and dropped, never raised;
* ``get_timer()`` / ``handle_timer(now)`` schedule the RTCP reports, ``datagrams_to_send()``
  collects them as ``(data, component)`` pairs (component 1 RTP, 2 RTCP: without rtcp-mux the
  reports go to the RTCP port), ``next_event()`` returns :class:`DtmfReceived`,
  :class:`RemoteSsrcChanged`, :class:`LocalSsrcChanged` and :class:`ByeReceived`;
* ``close(now)`` queues an RTCP BYE (RFC 3550 §6.6); ``stats(now)`` summarises the call.

The SSRC, first sequence number and first timestamp are random (RFC 3550 §5.1, §8.1). RTCP
reports go out on the RFC 3550 §6.3 schedule simplified for a two-party call: a fixed
``rtcp_interval`` (5 s) randomised by a factor of 0.5-1.5, the first one after half of that.
A report carries an SR when we sent RTP since the report before last, else an RR, with a
reception report block for the peer's source and an SDES CNAME (§6.1). A report block about
our source gives the round-trip time (§6.4.1) and sets the Opus encoder's expected packet
loss from its fraction lost (rising at once, halving per loss-free report), so in-band FEC
follows the loss the peer sees.

Receiving: the peer may send any of the negotiated formats (``receive_codecs``, RFC 3264
§5.1), in packets of any duration (30 ms G.711, 60 ms Opus ...); each packet is decoded
whole, converted to our channel count and sample rate (``media.resample``), and handed out
in frames of ``ptime_ms``. A switch to a format with another RTP clock restarts the jitter
buffer's timeline.

Source handling (RFC 3550 §8): the first source heard is locked onto; another SSRC replaces
it once it has passed the §A.1 probation and the current source has said BYE or fallen
silent (its first packets are kept and played). A packet carrying our own SSRC is a
collision (§8.2): we send a BYE for the old SSRC and pick a new one; if it happens again at
once it is our own traffic looping back and is dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .g711 import G711Codec
from .jitter import FrameKind, JitterBuffer, JitterBufferConfig
from .opus import OpusCodecError, OpusDecoder, OpusEncoder, OpusParams, packet_samples
from .resample import Resampler
from .rtcp import (
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    SenderReport,
    SourceDescription,
    is_rtcp,
    ntp_from_unix,
    parse_rtcp,
    serialize_rtcp,
)
from .rtp import RtpPacket, RtpParseError, timestamp_diff
from .stats import ReceptionStats, RemoteReport, SenderStats, Stats, estimate_mos
from .telephone_event import TelephoneEventReceiver, TelephoneEventSender

__all__ = [
    "CN_PAYLOAD_TYPE",
    "RTCP_COMPONENT",
    "RTP_COMPONENT",
    "ByeReceived",
    "CodecDescription",
    "DtmfReceived",
    "LocalSsrcChanged",
    "RemoteSsrcChanged",
    "RtpSession",
    "SessionEvent",
]

log = logging.getLogger("media.session")

#: Component IDs (as in ICE, RFC 8445 §4): RTP, and RTCP when it is not multiplexed.
RTP_COMPONENT = 1
RTCP_COMPONENT = 2

Int16Array = npt.NDArray[np.int16]

_MAX_PENDING = 16  # packets kept from a new source while it is on probation
#: RFC 3551 static payload type of RFC 3389 comfort noise.
CN_PAYLOAD_TYPE = 13
_DECODABLE = {"pcmu": 8000, "pcma": 8000, "opus": 48000}  # encoding -> RTP clock rate
_COLLISION_LOOP_S = 10.0
#: Opus with in-band FEC under loss: the bitrate grows up to this factor of the configured one
_FEC_MAX_BOOST = 2.0
#: ... reached at this reported loss (percent), in proportion below it
_FEC_FULL_BOOST_LOSS = 10


def _opus_has_fec(payload: bytes) -> bool:
    """Whether an Opus packet carries in-band FEC (SILK LBRR data) for the frame before it.

    The SILK layer (SILK-only and hybrid modes; CELT-only packets have none) starts right
    after the TOC byte of a one- or two-frame packet (codes 0 and 1) with one VAD flag per
    20 ms SILK frame and then the LBRR flag (RFC 6716 §4.2.3), each coded with probability
    1/2, so they are the leading bits of the first range-coded byte (§4.1.1, §4.1.3.1).
    Packets with code 2 or 3 are not looked into (True: libopus finds out).
    """
    if len(payload) < 2:
        return False
    config, code = payload[0] >> 3, payload[0] & 3
    if config >= 16:
        return False
    if code > 1:
        return True
    frame_ms = (10, 20, 40, 60)[config % 4] if config < 12 else (10, 20)[config % 2]
    vad_flags = max(1, frame_ms // 20)
    return bool(payload[1] >> (7 - vad_flags) & 1)


@dataclass(frozen=True)
class CodecDescription:
    """A negotiated RTP payload format: ``opus/48000/2``, ``PCMU/8000``, ``telephone-event``.

    ``payload_type`` is the number we send with (the peer's number for the format);
    ``receive_payload_type`` the number the peer sends with, i.e. ours from our own SDP, when
    it differs (RFC 3264 §5.1: each side receives with the numbers of its own description).
    ``fmtp`` holds the *peer's* format parameters (what it wants to receive, e.g. RFC 7587
    ``useinbandfec=1``), as negotiated in SDP.
    """

    name: str
    payload_type: int
    clock_rate: int
    channels: int = 1
    fmtp: Mapping[str, str] = field(default_factory=dict)
    receive_payload_type: int | None = None

    @property
    def incoming_payload_type(self) -> int:
        """The payload type of this format in the packets we receive."""
        if self.receive_payload_type is None:
            return self.payload_type
        return self.receive_payload_type

    @property
    def encoding(self) -> str:
        """The encoding name in lower case (``opus``, ``pcmu``, ``pcma``)."""
        return self.name.lower()

    def __str__(self) -> str:
        text = f"{self.name}/{self.clock_rate}"
        return f"{text}/{self.channels}" if self.channels != 1 else text


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """An RFC 4733 telephone-event, reported once (``digit`` None for non-DTMF events)."""

    digit: str | None
    event: int
    timestamp: int
    time: float


@dataclass(frozen=True, slots=True)
class RemoteSsrcChanged:
    """The peer's stream now comes from another SSRC (restart, re-INVITE, B2BUA switch)."""

    old: int | None
    new: int


@dataclass(frozen=True, slots=True)
class LocalSsrcChanged:
    """We picked a new SSRC (a collision, RFC 3550 §8.2)."""

    old: int
    new: int
    reason: str


@dataclass(frozen=True, slots=True)
class ByeReceived:
    """The peer's source left (RTCP BYE, RFC 3550 §6.6)."""

    ssrc: int
    reason: str | None


SessionEvent = DtmfReceived | RemoteSsrcChanged | LocalSsrcChanged | ByeReceived


@dataclass
class _Source:
    ssrc: int
    stats: ReceptionStats
    bye: bool = False
    cname: str | None = None
    pending: list[tuple[RtpPacket, float]] = field(default_factory=list)


class RtpSession:
    """One RTP audio stream, both directions (see the module docstring).

    ``codec`` is the format we send (and expect back); ``receive_codecs`` are further formats
    the peer may send. ``channels`` is the number of audio channels of the PCM frames handed
    in and out, at :attr:`sample_rate` (the sending codec's rate) in frames of
    :attr:`frame_samples` (Opus may carry stereo; a mono decoder downmixes a stereo stream).
    ``rng`` makes SSRC, sequence/timestamp origins and the RTCP schedule reproducible in
    tests. ``ntp_offset`` is added to ``now`` to get wall-clock Unix time for the SR NTP
    timestamps (``time.time() - time.monotonic()`` when ``now`` is monotonic time; 0 on a
    virtual clock).
    """

    def __init__(
        self,
        codec: CodecDescription,
        *,
        telephone_event: CodecDescription | None = None,
        rtcp_mux: bool = True,
        cname: str | None = None,
        channels: int = 1,
        ptime_ms: int = 20,
        rtcp_interval: float = 5.0,
        jitter: JitterBufferConfig | None = None,
        receive_codecs: Sequence[CodecDescription] = (),
        opus_bitrate: int = 32000,
        rng: random.Random | None = None,
        ntp_offset: float = 0.0,
        now: float = 0.0,
    ) -> None:
        self.codec = codec
        self.telephone_event = telephone_event
        self.rtcp_mux = rtcp_mux
        self.channels = channels
        self.ptime_ms = ptime_ms
        self.rtcp_interval = rtcp_interval
        self.ntp_offset = ntp_offset
        self._rng = rng or random.Random()
        encoding = codec.encoding
        self._opus_encoder: OpusEncoder | None = None
        self._g711: G711Codec | None = None
        if not 10 <= ptime_ms <= 120 or ptime_ms % 10:
            raise ValueError("ptime_ms must be a multiple of 10 ms up to 120")
        if encoding in ("pcmu", "pcma"):
            if codec.clock_rate != 8000 or channels != 1:
                raise ValueError("G.711 is 8000 Hz mono")
            self._g711 = G711Codec(encoding)
            self.clock_rate = 8000
        elif encoding == "opus":
            if ptime_ms != 20:
                # a=ptime is a recommendation (RFC 8866 §6.4); our Opus frames are 20 ms
                log.info("sending 20 ms Opus packets, not the %d ms asked for", ptime_ms)
                ptime_ms = self.ptime_ms = 20
            self.clock_rate = 48000  # RFC 7587 §4.1, whatever the SDP says
            self._opus_encoder = OpusEncoder(channels, bitrate=opus_bitrate)
            params = OpusParams.from_fmtp(dict(codec.fmtp))
            params.apply_to_encoder(self._opus_encoder)
            # the bitrate of the primary stream; loss with FEC raises the total, see
            # _adapt_opus_to_loss, never above what the peer accepts (RFC 7587 §6.1)
            self._opus_bitrate = self._opus_encoder.bitrate
            self._opus_max_bitrate = min(
                params.maxaveragebitrate or 510000, round(self._opus_bitrate * _FEC_MAX_BOOST)
            )
        else:
            raise ValueError(f"unsupported codec {codec}")
        self.sample_rate = self.clock_rate
        self.frame_samples = self.clock_rate * ptime_ms // 1000
        self.frame_ts = self.frame_samples  # audio codecs here: one tick per sample
        if jitter is None:
            # Opus: one frame of look-ahead so the packet after a lost one is here for FEC
            jitter = JitterBufferConfig(lookahead_frames=1 if encoding == "opus" else 0)
        self._jitter_config = dataclasses.replace(
            jitter, clock_rate=self.clock_rate, frame_ms=ptime_ms
        )
        self._jitter = JitterBuffer(self._jitter_config)

        # receive side: the formats the peer may send (RFC 3264 §5.1 lets it pick any of the
        # negotiated ones), their decoders, and resamplers to our rate
        self._rx_formats: dict[int, CodecDescription] = {}
        for fmt in (codec, *receive_codecs):
            if fmt.encoding not in _DECODABLE:
                log.warning("cannot decode %s; its packets will be dropped", fmt)
                continue
            self._rx_formats.setdefault(fmt.incoming_payload_type, fmt)
        self._decoders: dict[str, G711Codec | OpusDecoder] = {}
        self._resamplers: dict[int, Resampler] = {}
        self._rx_encoding = encoding
        self._rx_rate = self.clock_rate

        self._te_sender: TelephoneEventSender | None = None
        if telephone_event is not None:
            if telephone_event.clock_rate != self.clock_rate:
                log.warning(
                    "telephone-event clock %d differs from the audio clock %d; using the latter",
                    telephone_event.clock_rate,
                    self.clock_rate,
                )
            self._te_sender = TelephoneEventSender(self.clock_rate, packet_interval_ms=ptime_ms)
        self._te_receiver = TelephoneEventReceiver()
        self._te_pt = telephone_event.incoming_payload_type if telephone_event else None

        self.ssrc = 0
        self._remote: _Source | None = None
        self.ssrc = self._new_ssrc()
        self.cname = cname or f"{self._rng.getrandbits(64):016x}@softphone"
        if len(self.cname.encode()) > 255:
            raise ValueError("CNAME longer than 255 octets (RFC 3550 §6.5)")
        self._seq = self._rng.getrandbits(16)
        self._timestamp = self._rng.getrandbits(32)
        self._sender = SenderStats()
        self._start_of_talkspurt = True
        self._closed = False

        self._candidates: dict[int, _Source] = {}
        self._early_sr: dict[int, tuple[int, float]] = {}
        self._remote_report = RemoteReport()
        self._last_collision: float | None = None

        self._queue: list[tuple[bytes, int]] = []
        self._events: deque[SessionEvent] = deque(maxlen=1000)  # bounded if never drained
        self._next_rtcp: float | None = now + self._interval(initial=True)
        self._reports_sent = 0
        self._sent_since: list[bool] = [False, False]  # sent RTP in the current/previous interval

        self._rx_packets = 0
        self._rx_bytes = 0
        self.parse_errors = 0
        self.unknown_payload_types = 0
        self.decode_errors = 0
        self.looped_packets = 0
        self.concealed_frames = 0
        self.fec_frames = 0
        #: packet times left out of the sent stream by :meth:`skip_frames`
        self.skipped_frames = 0
        self._last_frame: Int16Array | None = None
        self._concealed_samples = 0
        self._fifo: deque[Int16Array] = deque()
        self._pending_samples = 0
        self._comfort: tuple[int, int] | None = None  # (timestamp, -dBov) of the last CN
        self._noise = np.random.default_rng(self._rng.getrandbits(32))

    # --- properties ------------------------------------------------------------------------

    @property
    def remote_ssrc(self) -> int | None:
        """The SSRC of the peer's stream we play, or None before its first packet."""
        return self._remote.ssrc if self._remote else None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def jitter_buffer(self) -> JitterBuffer:
        return self._jitter

    @property
    def opus_encoder(self) -> OpusEncoder | None:
        """The Opus encoder (to tune bitrate etc.), None for G.711."""
        return self._opus_encoder

    # --- sending ---------------------------------------------------------------------------

    def send_dtmf(self, digits: str) -> None:
        """Queue DTMF digits to send as RFC 4733 telephone-events."""
        if self._te_sender is None:
            raise ValueError("telephone-event was not negotiated")
        self._te_sender.queue(digits)

    @property
    def dtmf_pending(self) -> bool:
        """True while queued digits have not all been sent."""
        return self._te_sender is not None and (self._te_sender.busy or self._te_sender.pending > 0)

    def skip_frames(self, frames: int) -> None:
        """Leave a gap of ``frames`` packet times in the sent stream (a stalled sender, a
        capture ring that overflowed).

        The RTP timestamp advances as if the frames had been sent, since it follows the
        sampling instant (RFC 3550 §5.1), so the receiver plays the gap as a gap (concealment)
        and stays in step with our clock instead of piling the late audio up in its jitter
        buffer; the sequence number does not advance, as no packet was lost (§5.1). The next
        audio packet carries the marker bit like the first packet after a silence (RFC 3551
        §4.1), telling the receiver it may re-synchronise its playout there.
        """
        if frames < 0:
            raise ValueError("frames must be >= 0")
        if frames == 0 or self._closed:
            return
        self._timestamp = (self._timestamp + frames * self.frame_ts) & 0xFFFFFFFF
        self._start_of_talkspurt = True
        self.skipped_frames += frames
        log.debug("skipping %d frames in the sent stream", frames)

    def send_frame(self, pcm: npt.ArrayLike, now: float) -> list[bytes]:
        """Encode one frame of int16 PCM at :attr:`sample_rate` and return the RTP datagrams.

        While a telephone-event is being sent the audio is held back (the event stands in for
        the audio, RFC 4733 §2.5); the RTP timestamp keeps running either way.
        """
        if self._closed:
            return []
        out: list[bytes] = []
        ts = self._timestamp
        self._timestamp = (self._timestamp + self.frame_ts) & 0xFFFFFFFF
        te = self._te_sender
        if te is not None and self.telephone_event is not None and (te.busy or te.pending):
            packets = te.poll(ts)
            for packet in packets:
                out.append(
                    self._rtp(
                        self.telephone_event.payload_type,
                        packet.payload,
                        packet.timestamp,
                        packet.marker,
                        now,
                    )
                )
            if packets or te.busy:
                self._start_of_talkspurt = True
                return out
        payload = self._encode(pcm)
        # (the length first: reading the DTX setting is a libopus CTL call through ctypes)
        if len(payload) <= 2 and self._opus_encoder is not None and self._opus_encoder.dtx:
            self._start_of_talkspurt = True  # DTX: nothing worth sending (RFC 7587 §3.1.3)
            return out
        marker = self._start_of_talkspurt  # RFC 3551 §4.1: first packet of a talkspurt
        self._start_of_talkspurt = False
        out.append(self._rtp(self.codec.payload_type, payload, ts, marker, now))
        return out

    def _encode(self, pcm: npt.ArrayLike) -> bytes:
        if self._g711 is not None:
            return self._g711.encode(pcm)
        assert self._opus_encoder is not None
        return self._opus_encoder.encode(pcm)

    def _rtp(self, pt: int, payload: bytes, ts: int, marker: bool, now: float) -> bytes:
        packet = RtpPacket(pt, self._seq, ts, self.ssrc, payload, marker)
        self._seq = (self._seq + 1) & 0xFFFF
        self._sender.record(len(payload), ts, now)
        self._sent_since[0] = True
        return packet.serialize()

    # --- receiving -------------------------------------------------------------------------

    def receive(self, data: bytes, now: float, component: int = RTP_COMPONENT) -> None:
        """Handle one datagram from the peer (RTP, or RTCP on the RTCP component / muxed)."""
        if component == RTCP_COMPONENT or is_rtcp(data):
            self._receive_rtcp(data, now)
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError as exc:
            self.parse_errors += 1
            log.debug("dropping malformed RTP packet: %s", exc)
            return
        if packet.payload_type not in self._rx_formats and packet.payload_type != self._te_pt:
            self._other_payload(packet, now)
            return
        if packet.ssrc == self.ssrc:
            self._collision(now)
            return
        source = self._remote
        if source is None:
            source = self._adopt(packet.ssrc, packet.sequence_number, None)
        elif packet.ssrc != source.ssrc:
            self._from_candidate(packet, now)
            return
        self._accept(source, packet, now)

    def _other_payload(self, packet: RtpPacket, now: float) -> None:
        """A packet we do not play. From the current source it still used a sequence number,
        so its gap is not a loss; RFC 3389 comfort noise (static type 13) sets the level of
        the noise played until speech resumes."""
        source = self._remote
        if source is not None and packet.ssrc == source.ssrc:
            source.stats.update(packet.sequence_number, packet.timestamp, now, 0)
            self._jitter.note_sequence(packet.sequence_number)
            if packet.payload_type == CN_PAYLOAD_TYPE and packet.payload:
                # -dBov (RFC 3389 §3), for the pause that starts at this timestamp
                self._comfort = (packet.timestamp, packet.payload[0] & 0x7F)
                return
        self.unknown_payload_types += 1
        log.debug("dropping RTP packet with payload type %d", packet.payload_type)

    def _adopt(self, ssrc: int, seq: int, old: int | None) -> _Source:
        source = _Source(ssrc, ReceptionStats(ssrc, seq, self._rx_rate))
        early = self._early_sr.pop(ssrc, None)
        if early is not None:
            source.stats.record_sender_report(*early)
        self._remote = source
        self._events.append(RemoteSsrcChanged(old, ssrc))
        log.info("receiving from SSRC %08x", ssrc)
        return source

    def _accept(self, source: _Source, packet: RtpPacket, now: float) -> None:
        fmt = self._rx_formats.get(packet.payload_type)
        if fmt is not None and _DECODABLE[fmt.encoding] != self._rx_rate:
            self._switch_rx_clock(_DECODABLE[fmt.encoding], source)
        source.stats.update(packet.sequence_number, packet.timestamp, now, len(packet.payload))
        self._rx_packets += 1
        self._rx_bytes += len(packet.payload)
        if fmt is not None:
            self._jitter.push(
                packet.payload,
                packet.sequence_number,
                packet.timestamp,
                packet.marker,
                now,
                self._duration(fmt, packet.payload),
                packet.payload_type,
            )
            return
        self._jitter.note_sequence(packet.sequence_number)
        for event in self._te_receiver.receive(packet.payload, packet.timestamp, packet.marker):
            log.info("DTMF %s received", event.digit)
            self._events.append(DtmfReceived(event.digit, event.event, event.timestamp, now))

    def _switch_rx_clock(self, rate: int, source: _Source) -> None:
        """The peer switched to a format with another RTP clock: a new timeline."""
        log.info("incoming audio switched to a %d Hz RTP clock", rate)
        stats = self._jitter.stats
        self._rx_rate = rate
        self._jitter = JitterBuffer(dataclasses.replace(self._jitter_config, clock_rate=rate))
        self._jitter.stats = stats
        source.stats.set_clock_rate(rate)

    def _duration(self, fmt: CodecDescription, payload: bytes) -> int | None:
        """Samples (= timestamp units) a packet carries: G.711 one per octet, Opus per TOC."""
        if fmt.encoding != "opus":
            return len(payload) or None
        try:
            return packet_samples(payload)
        except OpusCodecError:
            return None

    def _from_candidate(self, packet: RtpPacket, now: float) -> None:
        current = self._remote
        assert current is not None
        candidate = self._candidates.get(packet.ssrc)
        if candidate is None:
            if len(self._candidates) >= 4:
                self._candidates.pop(next(iter(self._candidates)))
            candidate = _Source(
                packet.ssrc, ReceptionStats(packet.ssrc, packet.sequence_number, self._rx_rate)
            )
            self._candidates[packet.ssrc] = candidate
        candidate.stats.update(packet.sequence_number, packet.timestamp, now, 0)
        candidate.pending.append((packet, now))
        del candidate.pending[:-_MAX_PENDING]
        last = current.stats.last_arrival
        quiet = last is None or now - last >= 2.5 * self.ptime_ms / 1000
        if candidate.stats.valid and not candidate.bye and (current.bye or quiet):
            self._switch_to(candidate)

    def _switch_to(self, candidate: _Source) -> None:
        old = self._remote.ssrc if self._remote else None
        log.info(
            "remote SSRC changed from %s to %08x", f"{old:08x}" if old else None, candidate.ssrc
        )
        self._candidates.clear()
        self._jitter.reset()
        self._te_receiver = TelephoneEventReceiver()
        for decoder in self._decoders.values():
            if isinstance(decoder, OpusDecoder):
                decoder.reset()
        first_seq = candidate.pending[0][0].sequence_number
        source = self._adopt(candidate.ssrc, first_seq, old)
        for packet, arrival in candidate.pending:
            self._accept(source, packet, arrival)

    def _collision(self, now: float) -> None:
        if self._last_collision is not None and now - self._last_collision < _COLLISION_LOOP_S:
            self.looped_packets += 1
            if self.looped_packets == 1:
                log.warning("our own RTP is looping back; dropping it")
            return
        self._last_collision = now
        old = self.ssrc
        log.warning("SSRC collision on %08x: sending BYE and choosing a new SSRC", old)
        self._queue_rtcp(self._compound(now, bye=(old, "SSRC collision")))
        self.ssrc = self._new_ssrc()
        self._sender = SenderStats()  # SR counts are per SSRC (RFC 3550 §6.4.1)
        self._remote_report = RemoteReport()
        self._events.append(LocalSsrcChanged(old, self.ssrc, "collision"))

    def _new_ssrc(self) -> int:
        while True:
            ssrc = self._rng.getrandbits(32)
            if ssrc not in (0, self.ssrc) and ssrc != self.remote_ssrc:
                return ssrc

    # --- RTCP in -------------------------------------------------------------------------

    def _receive_rtcp(self, data: bytes, now: float) -> None:
        try:
            packets = parse_rtcp(data)
        except RtcpParseError as exc:
            self.parse_errors += 1
            log.debug("dropping malformed RTCP packet: %s", exc)
            return
        arrival_ntp = ntp_from_unix(now + self.ntp_offset)
        for packet in packets:
            if isinstance(packet, SenderReport | ReceiverReport):
                if isinstance(packet, SenderReport):
                    source = self._source(packet.ssrc)
                    if source is not None:
                        source.stats.record_sender_report(packet.ntp_timestamp, now)
                    elif len(self._early_sr) < 8:
                        self._early_sr[packet.ssrc] = (packet.ntp_timestamp, now)
                for block in packet.reports:
                    if block.ssrc == self.ssrc:
                        self._on_report_block(block, arrival_ntp, now)
            elif isinstance(packet, SourceDescription):
                for chunk in packet.chunks:
                    source = self._source(chunk.ssrc)
                    if source is not None and chunk.cname is not None:
                        source.cname = chunk.cname
            elif isinstance(packet, Goodbye):
                for ssrc in packet.ssrcs:
                    self._on_bye(ssrc, packet.reason)

    def _source(self, ssrc: int) -> _Source | None:
        if self._remote is not None and self._remote.ssrc == ssrc:
            return self._remote
        return self._candidates.get(ssrc)

    def _on_report_block(self, block: ReportBlock, arrival_ntp: int, now: float) -> None:
        rtt = self._remote_report.update(block, arrival_ntp, now)
        if rtt is not None:
            log.debug("RTT %.1f ms, peer sees %d/256 lost", rtt * 1000, block.fraction_lost)
        encoder = self._opus_encoder
        if encoder is not None:
            # follow a rise at once; while the loss goes on average it with the estimate
            # (one interval's fraction of ~250 packets is noisy both ways); halve it per
            # loss-free report
            percent = round(block.fraction_lost * 100 / 256)
            previous = encoder.packet_loss_perc
            estimate = max(percent, (previous + percent + 1) // 2) if percent else previous // 2
            self._adapt_opus_to_loss(encoder, estimate)

    def expect_loss(self, percent: int) -> None:
        """Set the packet loss the peer sees, as an RTCP report block would (Opus: FEC
        strength and bitrate, see :meth:`_adapt_opus_to_loss`); no-op for G.711."""
        if self._opus_encoder is not None:
            self._adapt_opus_to_loss(self._opus_encoder, max(0, min(100, percent)))

    def _adapt_opus_to_loss(self, encoder: OpusEncoder, loss_percent: int) -> None:
        """Tell the encoder the loss the peer sees and budget bits for the in-band FEC.

        With ``packet_loss_perc`` set, libopus codes an LBRR copy of every active SILK frame
        into the next packet (RFC 6716 §4.2.4) and codes more robustly, and takes the bits
        from the same budget: at 10 % the primary stream loses about a third of it (libopus
        1.3.1 at 32 kbit/s: lossless wideband PESQ 3.39 -> 2.86; 1.5x the bitrate restores
        it). So while FEC is on the target grows with the loss, up to ``_FEC_MAX_BOOST``
        times the configured bitrate at ``_FEC_FULL_BOOST_LOSS`` % (the primary stream keeps
        its rate and the LBRR copy gets enough to be worth decoding), never above the
        peer's ``maxaveragebitrate``; it falls back as the reported loss decays.
        """
        encoder.packet_loss_perc = loss_percent
        boost = 1.0
        if encoder.fec and loss_percent > 0:
            share = min(loss_percent, _FEC_FULL_BOOST_LOSS) / _FEC_FULL_BOOST_LOSS
            boost += (_FEC_MAX_BOOST - 1.0) * share
        target = min(self._opus_max_bitrate, round(self._opus_bitrate * boost))
        target = max(target, self._opus_bitrate)
        if target != encoder.bitrate:
            encoder.bitrate = target

    def _on_bye(self, ssrc: int, reason: str | None) -> None:
        if self._remote is not None and self._remote.ssrc == ssrc:
            if not self._remote.bye:
                self._remote.bye = True
                log.info("BYE from SSRC %08x (%s)", ssrc, reason or "no reason")
                self._events.append(ByeReceived(ssrc, reason))
        elif ssrc in self._candidates:
            self._candidates[ssrc].bye = True

    # --- RTCP out ------------------------------------------------------------------------

    def _interval(self, initial: bool = False) -> float:
        """RFC 3550 §6.3 simplified for two members: T * U(0.5, 1.5), halved at first."""
        base = self.rtcp_interval / 2 if initial else self.rtcp_interval
        return base * self._rng.uniform(0.5, 1.5)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` wants to run next (the next RTCP report)."""
        return None if self._closed else self._next_rtcp

    def handle_timer(self, now: float) -> None:
        """Send the RTCP report when it is due."""
        if self._closed or self._next_rtcp is None or now < self._next_rtcp:
            return
        self._queue_rtcp(self._compound(now))
        self._reports_sent += 1
        self._sent_since = [False, self._sent_since[0]]
        self._next_rtcp = now + self._interval()

    def _compound(self, now: float, bye: tuple[int, str | None] | None = None) -> bytes:
        ssrc = bye[0] if bye else self.ssrc
        blocks: list[ReportBlock] = []
        if self._remote is not None and self._remote.stats.valid:
            blocks.append(self._remote.stats.report_block(now))
        packets: list[RtcpPacket] = []
        we_sent = (self._sent_since[0] or self._sent_since[1]) and self._sender.packets > 0
        if we_sent:
            last_time = self._sender.last_send_time or now
            rtp_ts = self._sender.last_timestamp + round((now - last_time) * self.clock_rate)
            packets.append(
                SenderReport(
                    ssrc,
                    ntp_from_unix(now + self.ntp_offset),
                    rtp_ts & 0xFFFFFFFF,
                    self._sender.packets,
                    self._sender.octets,
                    blocks,
                )
            )
        else:
            packets.append(ReceiverReport(ssrc, blocks))
        packets.append(SourceDescription.with_cname(ssrc, self.cname))
        if bye is not None:
            reason = bye[1]
            if reason is not None:  # at most 255 octets (§6.6), whole characters
                reason = reason.encode()[:255].decode("utf-8", "ignore")
            packets.append(Goodbye([ssrc], reason))
        return serialize_rtcp(packets)

    def _queue_rtcp(self, data: bytes) -> None:
        self._queue.append((data, RTP_COMPONENT if self.rtcp_mux else RTCP_COMPONENT))

    def close(self, now: float, reason: str | None = None) -> None:
        """Leave the session: queue an RTCP BYE (RFC 3550 §6.6) and stop sending."""
        if self._closed:
            return
        self._queue_rtcp(self._compound(now, bye=(self.ssrc, reason)))
        self._closed = True
        self._next_rtcp = None

    def datagrams_to_send(self) -> list[tuple[bytes, int]]:
        """Queued RTCP datagrams as ``(data, component)`` (RTP comes from send_frame)."""
        out, self._queue = self._queue, []
        return out

    def next_event(self) -> SessionEvent | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    # --- playout -------------------------------------------------------------------------

    def playout(self, now: float) -> Int16Array:
        """The next frame of decoded audio: int16, ``(frame_samples,)`` or ``(n, 2)``.

        Packets of another duration than ours (a peer sending 30 ms G.711 or 60 ms Opus) are
        decoded whole and handed out in frames.
        """
        for _ in range(64):
            if self._pending_samples >= self.frame_samples:
                break
            self._fill(now)
        else:  # pragma: no cover - every pop yields at least one sample
            self._append(self._zeros(self.frame_samples - self._pending_samples))
        return self._take(self.frame_samples)

    def _fill(self, now: float) -> None:
        frame = self._jitter.pop(now)
        rate = self._rx_rate
        samples = frame.duration or rate * self.ptime_ms // 1000
        if frame.kind is FrameKind.AUDIO:
            assert frame.payload is not None
            pt = frame.payload_type
            fmt = self._rx_formats.get(pt, self.codec) if pt is not None else self.codec
            pcm = self._decode(fmt.encoding, frame.payload)
            if pcm is None or len(pcm) == 0:
                pcm = self._conceal(None, samples, count=True)
            else:
                self._rx_encoding = fmt.encoding
                self._last_frame = pcm
                self._concealed_samples = 0
                if self._comfort and timestamp_diff(frame.timestamp, self._comfort[0]) > 0:
                    self._comfort = None  # speech after the pause
        elif frame.kind is FrameKind.LOST:
            pcm = self._conceal(frame.next_payload, samples, count=not frame.inserted)
        else:
            self._concealed_samples = 0
            self._last_frame = None
            pcm = self._comfort_noise(samples)
        self._append(self._to_output(pcm, rate))

    def _comfort_noise(self, samples: int) -> Int16Array:
        """Silence, or white noise at the level of the last RFC 3389 CN packet."""
        if self._comfort is None:
            return np.zeros(samples, dtype=np.int16)
        level = self._comfort[1]
        rms = 32768 * 10 ** (-level / 20)
        noise = self._noise.normal(0.0, rms, samples)
        return np.clip(noise, -32768, 32767).astype(np.int16)

    def _to_output(self, pcm: Int16Array, rate: int) -> Int16Array:
        """Match our channel count and sample rate."""
        if self.channels == 2 and pcm.ndim == 1:
            pcm = np.repeat(pcm[:, None], 2, axis=1)
        elif self.channels == 1 and pcm.ndim == 2:  # pragma: no cover - decoders match
            pcm = pcm.mean(axis=1).astype(np.int16)
        if rate == self.sample_rate:
            return pcm
        resampler = self._resamplers.get(rate)
        if resampler is None:
            resampler = Resampler(rate, self.sample_rate, self.channels)
            self._resamplers[rate] = resampler
        return resampler.process(pcm)

    def _append(self, pcm: Int16Array) -> None:
        self._fifo.append(pcm)
        self._pending_samples += len(pcm)

    def _take(self, n: int) -> Int16Array:
        parts: list[Int16Array] = []
        need = n
        while need:
            head = self._fifo[0]
            if len(head) <= need:
                parts.append(self._fifo.popleft())
                need -= len(head)
            else:
                parts.append(head[:need])
                self._fifo[0] = head[need:]
                need = 0
        self._pending_samples -= n
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _zeros(self, samples: int) -> Int16Array:
        shape: tuple[int, ...] = (samples,) if self.channels == 1 else (samples, 2)
        return np.zeros(shape, dtype=np.int16)

    def _decoder(self, encoding: str) -> G711Codec | OpusDecoder:
        decoder = self._decoders.get(encoding)
        if decoder is None:
            decoder = OpusDecoder(self.channels) if encoding == "opus" else G711Codec(encoding)
            self._decoders[encoding] = decoder
        return decoder

    def _decode(self, encoding: str, payload: bytes) -> Int16Array | None:
        try:
            return self._decoder(encoding).decode(payload)
        except (OpusCodecError, ValueError) as exc:
            self.decode_errors += 1
            log.debug("undecodable payload: %s", exc)
            return None

    def _conceal(self, next_payload: bytes | None, samples: int, *, count: bool) -> Int16Array:
        decoder = self._decoder(self._rx_encoding)
        if isinstance(decoder, OpusDecoder):
            samples = max(120, samples - samples % 120)  # Opus: multiples of 2.5 ms
            try:
                if next_payload is not None and count and _opus_has_fec(next_payload):
                    self.fec_frames += 1
                    return decoder.decode_fec(next_payload, samples)
                # no next packet, or one without LBRR data (libopus would conceal anyway)
                if count:
                    self.concealed_frames += 1
                return decoder.conceal(samples)
            except OpusCodecError as exc:
                self.decode_errors += 1
                log.debug("Opus concealment failed: %s", exc)
                return self._zeros(samples)
        if count:
            self.concealed_frames += 1
        return self._repeat_with_fade(samples)

    def _repeat_with_fade(self, samples: int) -> Int16Array:
        """G.711 concealment: repeat the last good packet, fading out over 100 ms."""
        last = self._last_frame
        if last is None:
            return self._zeros(samples)
        fade = 0.1 * self._rx_rate
        start = self._concealed_samples
        self._concealed_samples += samples
        gain = np.clip(1 - (start + np.arange(samples)) / fade, 0.0, 1.0)
        source = np.resize(last, (samples, *last.shape[1:]))
        if last.ndim == 2:
            gain = gain[:, None]
        return (source.astype(np.float32) * gain).astype(np.int16)

    # --- statistics ----------------------------------------------------------------------

    def stats(self, now: float | None = None) -> Stats:
        """A summary of the session so far."""
        jb = self._jitter.stats
        out = Stats(
            codec=str(self.codec),
            packets_sent=self._sender.packets,
            bytes_sent=self._sender.octets,
            packets_received=self._rx_packets,
            bytes_received=self._rx_bytes,
            concealed_frames=self.concealed_frames,
            fec_frames=self.fec_frames,
            late_packets=jb.late,
            duplicate_packets=jb.duplicates,
            parse_errors=self.parse_errors,
        )
        report = self._remote_report
        if report.srtt is not None:
            out.rtt_ms = report.srtt * 1000
        if report.received_at is not None:
            out.remote_loss_percent = (
                100.0 * max(0, report.cumulative_lost) / max(1, self._sender.packets)
            )
            out.remote_jitter_ms = report.jitter * 1000 / self.clock_rate
        out.jitter_buffer_ms = (
            self._jitter.current_delay_ms(now) if now is not None else self._jitter.target_delay_ms
        )
        if self._remote is not None:
            rx = self._remote.stats
            out.packets_lost = rx.lost
            out.loss_percent = rx.loss_fraction * 100
            out.jitter_ms = rx.jitter_ms
            expected = max(1, rx.expected)
            effective_loss = 100.0 * max(0, rx.lost + jb.late) / expected
            out.mos = estimate_mos(
                effective_loss,
                out.jitter_buffer_ms,
                out.rtt_ms,
                self._rx_encoding,  # the quality of what we hear
                float(self.ptime_ms),
            )
        return out
