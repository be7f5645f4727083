"""RTP receive/send statistics (RFC 3550 §6.4, Appendix A) and an E-model MOS estimate.

* :class:`ReceptionStats` keeps the per-source reception state of RFC 3550 §A.1 (probation
  with ``MIN_SEQUENTIAL`` packets, sequence-number wrap, restart after a large jump), the
  loss counters of §A.3 (expected, received, signed cumulative lost, fraction lost per report
  interval), the interarrival jitter of §A.8 and the LSR/DLSR bookkeeping of §6.4.1, and
  builds the :class:`~media.rtcp.ReportBlock` for an RR/SR.
* :class:`SenderStats` counts packets and payload octets sent (the SR sender info, §6.4.1).
* :class:`RemoteReport` is what the peer told us about our stream in its report block, with
  the round-trip time of §6.4.1 (A - LSR - DLSR).
* :func:`estimate_mos` is the simplified ITU-T G.107 E-model commonly used for VoIP
  monitoring: ``R = 93.2 - Id - Ie_eff`` with the Cole-Rosenbluth delay impairment and the
  G.107 §3.6 effective equipment impairment from random packet loss; R maps to MOS with the
  G.107 Annex B formula.
* :class:`Stats` is the readable summary a session hands the application.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from .rtcp import ReportBlock, delay_to_dlsr, ntp_middle32, round_trip_time

__all__ = [
    "CODEC_IMPAIRMENTS",
    "MAX_DROPOUT",
    "MAX_MISORDER",
    "MAX_TRANSIT_STEP_S",
    "MIN_SEQUENTIAL",
    "CodecImpairment",
    "ReceptionStats",
    "RemoteReport",
    "SenderStats",
    "Stats",
    "estimate_mos",
    "mos_from_r",
    "r_factor",
]

log = logging.getLogger("media.stats")

#: RFC 3550 §A.1: packets in sequence required before a source is declared valid.
MIN_SEQUENTIAL = 2
#: RFC 3550 §A.1: the largest forward jump still taken as the same numbering.
MAX_DROPOUT = 3000
#: RFC 3550 §A.1: the largest backward step still taken as a late/duplicate packet.
MAX_MISORDER = 100
#: A change of relative transit above this (seconds) is a timestamp jump, not jitter.
MAX_TRANSIT_STEP_S = 1.0
_SEQ_MOD = 1 << 16
_LOST_MIN = -(1 << 23)
_LOST_MAX = (1 << 23) - 1


class ReceptionStats:
    """Reception statistics for one synchronisation source (RFC 3550 Appendix A).

    Create it with the first packet's sequence number; it starts on probation (§A.1) and
    :meth:`update` returns False until ``MIN_SEQUENTIAL`` packets have arrived in sequence.
    Times (``arrival``) are seconds on the caller's clock; ``clock_rate`` converts them to RTP
    timestamp units for the jitter estimate (§A.8).
    """

    def __init__(self, ssrc: int, seq: int, clock_rate: int) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.base_seq = 0
        self.max_seq = 0
        self.bad_seq = _SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0
        self.octets = 0
        self.duplicates_or_late = 0
        self.restarts = 0
        self._jitter = 0.0  # §A.8 estimate in timestamp units, kept as a float
        self._transit: float | None = None
        self._last_sr: int = 0  # middle 32 bits of the last SR's NTP timestamp (LSR)
        self._last_sr_time: float | None = None
        self.last_arrival: float | None = None
        self._init_seq(seq)
        self.max_seq = (seq - 1) & 0xFFFF
        self.probation = MIN_SEQUENTIAL

    # --- RFC 3550 §A.1 -------------------------------------------------------------------

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _SEQ_MOD + 1  # so seq == bad_seq is false
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def update_seq(self, seq: int) -> bool:
        """The RFC 3550 §A.1 ``update_seq``: True if the packet counts as valid."""
        seq &= 0xFFFF
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD  # wrapped
            self.max_seq = seq
        elif udelta <= _SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                # two sequential packets after a big jump: the source restarted (§A.1)
                log.debug("ssrc %08x restarted its sequence numbers at %d", self.ssrc, seq)
                self.restarts += 1
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        else:
            self.duplicates_or_late += 1  # duplicate or reordered: counted as received
        self.received += 1
        return True

    def update(self, seq: int, rtp_timestamp: int, arrival: float, payload_size: int = 0) -> bool:
        """Account one RTP packet; returns True when it is valid per §A.1.

        Valid packets (reordered ones included, as in the RFC's sample code) also update the
        interarrival jitter (§A.8; a transit step above ``MAX_TRANSIT_STEP_S`` is taken as a
        timestamp jump and skipped) and the octet count.
        """
        valid = self.update_seq(seq)
        self.last_arrival = arrival
        if not valid:
            return False
        self.octets += payload_size
        transit = arrival * self.clock_rate - rtp_timestamp
        if self._transit is not None:
            d = (transit - self._transit) % (1 << 32)  # timestamps wrap at 2**32
            if d >= 1 << 31:
                d -= 1 << 32
            # a timestamp jump (the sender restarted its timeline) is not network jitter:
            # start again from the new transit rather than let one sample swamp the estimate
            if abs(d) <= MAX_TRANSIT_STEP_S * self.clock_rate:
                self._jitter += (abs(d) - self._jitter) / 16.0
        self._transit = transit
        return True

    def set_clock_rate(self, clock_rate: int) -> None:
        """The source switched to a payload format with another RTP clock: rescale the
        jitter estimate and restart the transit reference (timestamps jumped)."""
        if clock_rate != self.clock_rate and clock_rate > 0:
            self._jitter *= clock_rate / self.clock_rate
            self.clock_rate = clock_rate
            self._transit = None

    # --- RFC 3550 §A.3 -------------------------------------------------------------------

    @property
    def valid(self) -> bool:
        """True once the source has left probation."""
        return self.probation == 0

    @property
    def extended_max(self) -> int:
        """Extended highest sequence number received (cycles + max_seq)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected: extended max - base + 1 (§A.3); 0 while on probation."""
        if not self.valid:
            return 0
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost, signed (duplicates can make it negative, §6.4.1)."""
        return self.expected - self.received

    @property
    def loss_fraction(self) -> float:
        """Cumulative loss as a fraction of the expected packets (0.0-1.0)."""
        expected = self.expected
        if expected <= 0:
            return 0.0
        return max(0.0, self.lost / expected)

    def interval_fraction_lost(self) -> int:
        """The 8-bit fraction lost since the previous call (§A.3), resetting the interval."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)

    # --- RFC 3550 §A.8 -------------------------------------------------------------------

    @property
    def jitter(self) -> int:
        """Interarrival jitter in timestamp units, as carried in a report block."""
        return int(self._jitter)

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in milliseconds."""
        return self._jitter * 1000.0 / self.clock_rate

    # --- RFC 3550 §6.4.1 LSR / DLSR --------------------------------------------------------

    def record_sender_report(self, ntp_timestamp: int, arrival: float) -> None:
        """Remember an SR from this source: its NTP time (LSR) and when it arrived (DLSR)."""
        self._last_sr = ntp_middle32(ntp_timestamp)
        self._last_sr_time = arrival

    def report_block(self, now: float) -> ReportBlock:
        """The reception report block for this source (and start a new loss interval)."""
        fraction = self.interval_fraction_lost()
        lost = max(_LOST_MIN, min(_LOST_MAX, self.lost))
        dlsr = 0
        if self._last_sr_time is not None:
            dlsr = delay_to_dlsr(max(0.0, now - self._last_sr_time))
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            cumulative_lost=lost,
            highest_seq=self.extended_max & 0xFFFFFFFF,
            jitter=min(self.jitter, 0xFFFFFFFF),
            lsr=self._last_sr,
            dlsr=dlsr,
        )


@dataclass(slots=True)
class SenderStats:
    """What we sent (the SR sender info, RFC 3550 §6.4.1): packets and payload octets."""

    packets: int = 0
    octets: int = 0
    last_timestamp: int = 0
    last_send_time: float | None = None

    def record(self, payload_size: int, rtp_timestamp: int, now: float) -> None:
        """Count one RTP packet sent."""
        self.packets = (self.packets + 1) & 0xFFFFFFFF
        self.octets = (self.octets + payload_size) & 0xFFFFFFFF
        self.last_timestamp = rtp_timestamp
        self.last_send_time = now


@dataclass(slots=True)
class RemoteReport:
    """The latest report block the peer sent about our stream, and the RTT it gives."""

    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_seq: int = 0
    jitter: int = 0
    rtt: float | None = None  # seconds, the latest sample
    srtt: float | None = None  # smoothed (1/8 gain like TCP's SRTT)
    received_at: float | None = None

    def update(self, block: ReportBlock, arrival_ntp: int, now: float) -> float | None:
        """Take a report block about our SSRC; returns the RTT sample (s) if it carries one.

        RTT = A - LSR - DLSR (RFC 3550 §6.4.1, Figure 2), with A our NTP time of arrival.
        """
        self.fraction_lost = block.fraction_lost
        self.cumulative_lost = block.cumulative_lost
        self.highest_seq = block.highest_seq
        self.jitter = block.jitter
        self.received_at = now
        rtt = round_trip_time(arrival_ntp, block.lsr, block.dlsr)
        if rtt is not None:
            self.rtt = rtt
            self.srtt = rtt if self.srtt is None else self.srtt + (rtt - self.srtt) / 8
        return rtt

    @property
    def fraction_lost_percent(self) -> float:
        """The peer's last interval loss in percent."""
        return self.fraction_lost * 100.0 / 256


# --- E-model (ITU-T G.107, simplified) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodecImpairment:
    """Codec parameters of the E-model: equipment impairment Ie, loss robustness Bpl.

    ``delay_ms`` is the algorithmic delay beyond the packet time (look-ahead).
    """

    ie: float
    bpl: float
    delay_ms: float = 0.0


#: G.711 with packet-loss concealment: ITU-T G.113 Appendix I (Ie 0, Bpl 25.1). Opus is not
#: in G.113; these are working values on the narrowband R scale (transparent at VoIP rates,
#: robust thanks to its PLC), good enough to rank calls, not to certify them.
CODEC_IMPAIRMENTS: dict[str, CodecImpairment] = {
    "pcmu": CodecImpairment(ie=0.0, bpl=25.1, delay_ms=0.0),
    "pcma": CodecImpairment(ie=0.0, bpl=25.1, delay_ms=0.0),
    "opus": CodecImpairment(ie=0.0, bpl=30.0, delay_ms=6.5),
}
_DEFAULT_IMPAIRMENT = CodecImpairment(ie=10.0, bpl=20.0)


def r_factor(
    loss_percent: float,
    one_way_delay_ms: float,
    codec: CodecImpairment | str = "pcmu",
    burst_ratio: float = 1.0,
) -> float:
    """The simplified E-model rating R = 93.2 - Id - Ie_eff (ITU-T G.107).

    Id, the delay impairment, is the common linear approximation (Cole and Rosenbluth 2001)
    of the G.107 curve: 0.024 d + 0.11 (d - 177.3) for d above 177.3 ms. Ie_eff follows
    G.107 §3.6: Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl).
    """
    if isinstance(codec, str):
        codec = CODEC_IMPAIRMENTS.get(codec.lower(), _DEFAULT_IMPAIRMENT)
    d = max(0.0, one_way_delay_ms)
    idd = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    ppl = max(0.0, min(100.0, loss_percent))
    ie_eff = codec.ie + (95.0 - codec.ie) * ppl / (ppl / max(burst_ratio, 1e-6) + codec.bpl)
    return 93.2 - idd - ie_eff


def mos_from_r(r: float) -> float:
    """MOS-CQE from R (ITU-T G.107 Annex B): 1 below R=0, 4.5 above 100.

    The polynomial dips slightly below 1 for R under about 6.5; it is clamped at 1.
    """
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return max(1.0, 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6)


def estimate_mos(
    loss_percent: float,
    jitter_buffer_ms: float,
    rtt_ms: float | None,
    codec: CodecImpairment | str = "pcmu",
    packet_time_ms: float = 20.0,
) -> float:
    """MOS estimate for one direction from loss, jitter-buffer delay and round-trip time.

    The one-way mouth-to-ear delay is taken as half the RTT (0 when unknown) plus the
    jitter-buffer delay, the packet time and the codec look-ahead.
    """
    impairment = (
        CODEC_IMPAIRMENTS.get(codec.lower(), _DEFAULT_IMPAIRMENT)
        if isinstance(codec, str)
        else codec
    )
    one_way = (rtt_ms or 0.0) / 2 + jitter_buffer_ms + packet_time_ms + impairment.delay_ms
    return mos_from_r(r_factor(loss_percent, one_way, impairment))


# --- the summary --------------------------------------------------------------------------


@dataclass(slots=True)
class Stats:
    """A readable summary of one RTP session (both directions).

    ``packets_lost`` and ``loss_percent`` describe what we received (RFC 3550 cumulative
    lost; signed); ``remote_*`` what the peer reported about our stream. ``rtt_ms`` is
    None until an RTCP report carried LSR/DLSR. ``concealed_frames`` are frames rebuilt by
    packet-loss concealment, ``fec_frames`` frames recovered from Opus in-band FEC.
    """

    codec: str = ""
    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    packets_lost: int = 0
    loss_percent: float = 0.0
    jitter_ms: float = 0.0
    rtt_ms: float | None = None
    concealed_frames: int = 0
    fec_frames: int = 0
    late_packets: int = 0
    duplicate_packets: int = 0
    jitter_buffer_ms: float = 0.0
    parse_errors: int = 0
    remote_loss_percent: float = 0.0
    remote_jitter_ms: float = 0.0
    mos: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (for ``--json`` output), floats rounded to 0.1."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 1) if key != "mos" else round(value, 2)
        return out

    def rtp_json(self) -> dict[str, Any]:
        """The ``"rtp"`` object of the CLI's ``--json`` output (DESIGN.md): ``codec``,
        ``sent``, ``received``, ``lost``, ``jitter_ms``, ``rtt_ms``, then a few extras."""
        return {
            "codec": self.codec,
            "sent": self.packets_sent,
            "received": self.packets_received,
            "lost": self.packets_lost,
            "jitter_ms": round(self.jitter_ms, 1),
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 1),
            "loss_percent": round(self.loss_percent, 1),
            "concealed_frames": self.concealed_frames,
            "fec_frames": self.fec_frames,
            "mos": None if self.mos is None else round(self.mos, 2),
        }

    def __str__(self) -> str:
        rtt = "-" if self.rtt_ms is None else f"{self.rtt_ms:.0f} ms"
        mos = "-" if self.mos is None else f"{self.mos:.2f}"
        return (
            f"{self.codec}: sent {self.packets_sent} pkts/{self.bytes_sent} B, "
            f"received {self.packets_received} pkts/{self.bytes_received} B, "
            f"lost {self.packets_lost} ({self.loss_percent:.1f}%), "
            f"jitter {self.jitter_ms:.1f} ms, RTT {rtt}, "
            f"concealed {self.concealed_frames}, MOS {mos}"
        )
