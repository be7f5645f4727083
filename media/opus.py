"""Opus codec (RFC 6716) over libopus via ``opuslib_next``, and RFC 7587 fmtp parameters.

Always 48 kHz (RFC 7587 §4.1: the RTP clock is 48 kHz whatever the audio bandwidth), 20 ms
frames of 960 samples per channel, mono or interleaved stereo int16. The hot calls go straight
to ``opus_encode`` / ``opus_decode`` through ctypes with numpy buffers (no per-frame ctypes
array building); the ``opuslib_next`` objects own the C state and the CTL setters.

Loss handling on the receive side (RFC 6716 §4.4 / libopus API):

* :meth:`OpusDecoder.decode_fec` rebuilds a lost frame from the in-band FEC (LBRR) data carried
  by the *next* packet (``decode_fec=1``); libopus falls back to PLC when there is none;
* :meth:`OpusDecoder.conceal` is plain packet-loss concealment (``opus_decode`` with a NULL
  packet).

Decoding a corrupt packet raises :class:`OpusCodecError` (a :class:`ValueError`).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import opuslib_next
import opuslib_next.api.decoder as _opus_dec
import opuslib_next.api.encoder as _opus_enc

__all__ = [
    "FRAME_SAMPLES",
    "OPUS_SAMPLE_RATE",
    "OpusCodecError",
    "OpusDecoder",
    "OpusEncoder",
    "OpusParams",
    "format_fmtp",
    "packet_samples",
    "parse_fmtp",
]

log = logging.getLogger("media.opus")

OPUS_SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
MAX_FRAME_SAMPLES = 5760  # 120 ms, the longest Opus packet (RFC 6716 §3.2.5)
MAX_PACKET_BYTES = 1500  # RFC 6716 §3.2.1 bounds a 20 ms frame at 1275 octets

_INT16_P = ctypes.POINTER(ctypes.c_int16)
_OPUS_AUTO = -1000  # OPUS_AUTO, e.g. for force_channels

# OPUS_SET_MAX_BANDWIDTH values and the audio bandwidth (Hz of sample rate) each one covers
_BANDWIDTH_BY_RATE = (
    (8000, opuslib_next.BANDWIDTH_NARROWBAND),
    (12000, opuslib_next.BANDWIDTH_MEDIUMBAND),
    (16000, opuslib_next.BANDWIDTH_WIDEBAND),
    (24000, opuslib_next.BANDWIDTH_SUPERWIDEBAND),
)

Int16Array = npt.NDArray[np.int16]

# samples per frame at 48 kHz by TOC configuration number (RFC 6716 §3.1, Table 2): SILK-only
# 10/20/40/60 ms, hybrid 10/20 ms, CELT-only 2.5/5/10/20 ms
_SAMPLES_PER_FRAME = (480, 960, 1920, 2880) * 3 + (480, 960) * 2 + (120, 240, 480, 960) * 4


class OpusCodecError(ValueError):
    """libopus rejected a packet or a setting."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _check(result: int, what: str) -> int:
    if result < 0:
        raise OpusCodecError(f"{what}: {opuslib_next.OpusError(result)}", result)
    return result


def bandwidth_for_rate(rate: int) -> int:
    """The OPUS_BANDWIDTH_* constant for a playback sample rate (RFC 7587 §3.1.1, §7.1)."""
    for limit, bandwidth in _BANDWIDTH_BY_RATE:
        if rate <= limit:
            return bandwidth
    return int(opuslib_next.BANDWIDTH_FULLBAND)


def packet_samples(payload: bytes) -> int:
    """Samples per channel at 48 kHz that an Opus packet decodes to (RFC 6716 §3.1, §3.2).

    Read from the TOC byte and frame count without decoding; raises :class:`OpusCodecError`
    for an empty or malformed packet, or one longer than 120 ms (§3.2.5).
    """
    if not payload:
        raise OpusCodecError("empty Opus packet")
    toc = payload[0]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code < 3:
        frames = 2
    elif len(payload) < 2:  # code 3 needs the frame count byte (§3.2.5)
        raise OpusCodecError("malformed Opus packet: code 3 without a frame count", -4)
    else:
        frames = payload[1] & 0x3F
    samples = frames * _SAMPLES_PER_FRAME[toc >> 3]
    if samples > MAX_FRAME_SAMPLES:
        raise OpusCodecError(f"Opus packet of {samples} samples exceeds 120 ms")
    return samples


class OpusEncoder:
    """A 48 kHz, 20 ms, VOIP-application Opus encoder.

    Settings are properties and may change between frames: feed ``packet_loss_perc`` from the
    fraction lost of incoming RTCP receiver reports so in-band FEC scales with the loss.
    """

    def __init__(
        self,
        channels: int = 1,
        *,
        bitrate: int = 32000,
        complexity: int = 5,
        fec: bool = True,
        packet_loss_perc: int = 0,
        dtx: bool = False,
        cbr: bool = False,
    ) -> None:
        if channels not in (1, 2):
            raise ValueError("Opus channels must be 1 or 2")
        self.channels = channels
        self.sample_rate = OPUS_SAMPLE_RATE
        self.frame_samples = FRAME_SAMPLES
        self._enc: Any = opuslib_next.Encoder(
            OPUS_SAMPLE_RATE, channels, opuslib_next.APPLICATION_VOIP
        )
        self._state = self._enc.encoder_state
        self._out = ctypes.create_string_buffer(MAX_PACKET_BYTES)
        # the frame is copied into this buffer, whose pointer is made once (building a
        # ctypes pointer from a numpy array costs more than the copy)
        self._in = np.zeros(FRAME_SAMPLES * channels, dtype=np.int16)
        self._in_p = self._in.ctypes.data_as(_INT16_P)
        self.bitrate = bitrate
        self.complexity = complexity
        self.fec = fec
        self.packet_loss_perc = packet_loss_perc
        self.dtx = dtx
        self.cbr = cbr

    def encode(self, frame: npt.ArrayLike) -> bytes:
        """Encode one 20 ms frame: int16, shape (960,) mono or (960, 2) / (1920,) stereo."""
        pcm = frame if type(frame) is np.ndarray else np.asarray(frame)
        if pcm.dtype != np.int16:
            raise TypeError(f"Opus encodes int16 samples, not {pcm.dtype}")
        if pcm.size != FRAME_SAMPLES * self.channels:
            raise ValueError(
                f"expected {FRAME_SAMPLES} samples x {self.channels} channels, got {pcm.shape}"
            )
        self._in[:] = pcm.reshape(-1)  # (960, 2) interleaved like (1920,)
        n = _opus_enc.libopus_encode(
            self._state, self._in_p, FRAME_SAMPLES, self._out, MAX_PACKET_BYTES
        )
        _check(n, "opus_encode")
        return ctypes.string_at(self._out, n)

    def reset(self) -> None:
        """Reset the encoder state (a new stream)."""
        self._enc.reset_state()

    @property
    def bitrate(self) -> int:
        """Target bitrate in bit/s (500-512000)."""
        return int(self._enc.bitrate)

    @bitrate.setter
    def bitrate(self, value: int) -> None:
        if not 500 <= value <= 512000:
            raise ValueError("Opus bitrate must be 500-512000 bit/s")
        self._enc.bitrate = value

    @property
    def complexity(self) -> int:
        """Computational complexity 0-10."""
        return int(self._enc.complexity)

    @complexity.setter
    def complexity(self, value: int) -> None:
        if not 0 <= value <= 10:
            raise ValueError("Opus complexity must be 0-10")
        self._enc.complexity = value

    @property
    def fec(self) -> bool:
        """In-band forward error correction (LBRR) on/off."""
        return bool(self._enc.inband_fec)

    @fec.setter
    def fec(self, value: bool) -> None:
        self._enc.inband_fec = int(bool(value))

    @property
    def packet_loss_perc(self) -> int:
        """Expected packet loss in percent (0-100); drives how much FEC the encoder spends."""
        return int(self._enc.packet_loss_perc)

    @packet_loss_perc.setter
    def packet_loss_perc(self, value: int) -> None:
        self._enc.packet_loss_perc = max(0, min(100, int(value)))

    def set_loss_from_rtcp(self, fraction_lost: int) -> None:
        """Set ``packet_loss_perc`` from an RTCP report block's 8-bit fraction lost (§6.4.1)."""
        self.packet_loss_perc = round(max(0, min(255, fraction_lost)) * 100 / 256)

    @property
    def dtx(self) -> bool:
        """Discontinuous transmission: tiny packets during silence."""
        return bool(self._enc.dtx)

    @dtx.setter
    def dtx(self, value: bool) -> None:
        self._enc.dtx = int(bool(value))

    @property
    def cbr(self) -> bool:
        """Constant bitrate (VBR off)."""
        return not self._enc.vbr

    @cbr.setter
    def cbr(self, value: bool) -> None:
        self._enc.vbr = 0 if value else 1

    @property
    def max_bandwidth(self) -> int:
        """The OPUS_BANDWIDTH_* ceiling (set from the peer's maxplaybackrate)."""
        return int(self._enc.max_bandwidth)

    @max_bandwidth.setter
    def max_bandwidth(self, value: int) -> None:
        self._enc.max_bandwidth = value

    @property
    def force_mono(self) -> bool:
        """Encode a stereo input as mono (the peer asked for stereo=0)."""
        return bool(self._enc.force_channels == 1)

    @force_mono.setter
    def force_mono(self, value: bool) -> None:
        self._enc.force_channels = 1 if value else _OPUS_AUTO

    @property
    def lookahead(self) -> int:
        """Encoder delay in samples at 48 kHz."""
        return int(self._enc.lookahead)


class OpusDecoder:
    """A 48 kHz Opus decoder returning int16 numpy frames ((n,) mono, (n, 2) stereo)."""

    def __init__(self, channels: int = 1) -> None:
        if channels not in (1, 2):
            raise ValueError("Opus channels must be 1 or 2")
        self.channels = channels
        self.sample_rate = OPUS_SAMPLE_RATE
        self._dec: Any = opuslib_next.Decoder(OPUS_SAMPLE_RATE, channels)
        self._state = self._dec.decoder_state
        self._pcm = np.zeros(MAX_FRAME_SAMPLES * channels, dtype=np.int16)
        self._pcm_p = self._pcm.ctypes.data_as(_INT16_P)
        self.last_frame_samples = FRAME_SAMPLES

    def _run(self, packet: bytes | None, frame_size: int, fec: int, what: str) -> Int16Array:
        if packet is not None and type(packet) is not bytes:
            packet = bytes(packet)
        length = 0 if packet is None else len(packet)
        n = _check(
            _opus_dec.libopus_decode(self._state, packet, length, self._pcm_p, frame_size, fec),
            what,
        )
        out = self._pcm[: n * self.channels].copy()
        return out.reshape(n, 2) if self.channels == 2 else out

    def decode(self, payload: bytes) -> Int16Array:
        """Decode one packet (RFC 6716); raises :class:`OpusCodecError` if it is corrupt."""
        if not payload:
            raise OpusCodecError("empty Opus packet")
        frame = self._run(payload, MAX_FRAME_SAMPLES, 0, "opus_decode")
        self.last_frame_samples = len(frame)
        return frame

    def decode_fec(self, next_payload: bytes, samples: int | None = None) -> Int16Array:
        """Recover the frame lost just before ``next_payload`` from its in-band FEC.

        Call it when packet N is missing and N+1 has arrived, *before* decoding N+1. FEC
        only carries the one frame before a packet: for a burst N..N+k, conceal N..N+k-1 and
        recover N+k from N+k+1.
        ``samples`` is the lost duration (default: the last frame's), a multiple of 2.5 ms.
        Without FEC data in ``next_payload`` libopus conceals instead.
        """
        if not next_payload:
            raise OpusCodecError("empty Opus packet")
        return self._run(next_payload, samples or self.last_frame_samples, 1, "opus_decode (FEC)")

    def conceal(self, samples: int | None = None) -> Int16Array:
        """Packet-loss concealment for one missing frame (decode with a NULL packet)."""
        return self._run(None, samples or self.last_frame_samples, 0, "opus_decode (PLC)")

    def reset(self) -> None:
        """Reset the decoder state (a new stream)."""
        self._dec.reset_state()


# --- RFC 7587 §6.1 media type parameters ------------------------------------------------------


def parse_fmtp(text: str) -> dict[str, str]:
    """Split an ``a=fmtp`` parameter string (``"k=v; k2=v2"``) into a dict (keys lower-case)."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        out[key.strip().lower()] = value.strip() if sep else ""
    return out


def format_fmtp(params: Mapping[str, str]) -> str:
    """Join parameters into an ``a=fmtp`` string (``"k=v;k2=v2"``)."""
    return ";".join(f"{k}={v}" if v != "" else k for k, v in params.items())


_BOOL_KEYS = {
    "stereo": "stereo",
    "sprop-stereo": "sprop_stereo",
    "cbr": "cbr",
    "useinbandfec": "useinbandfec",
    "usedtx": "usedtx",
}
# key -> (attribute, minimum, maximum)
_INT_KEYS = {
    "maxplaybackrate": ("maxplaybackrate", 8000, 48000),
    "sprop-maxcapturerate": ("sprop_maxcapturerate", 8000, 48000),
    "maxaveragebitrate": ("maxaveragebitrate", 6000, 510000),
    "ptime": ("ptime", 3, 120),
    "minptime": ("minptime", 3, 120),
    "maxptime": ("maxptime", 3, 120),
}


@dataclass(slots=True)
class OpusParams:
    """The RFC 7587 §6.1 ``a=fmtp`` parameters of one side, with the RFC defaults.

    They describe what the side that *sends the SDP* can receive (``maxplaybackrate``,
    ``stereo``, ``maxaveragebitrate``, ``cbr``, ``useinbandfec``, ``usedtx``) and what it will
    send (``sprop-*``). ``ptime``/``maxptime`` are normally SDP attributes (RFC 4566) and only
    written when set. Unknown parameters are kept in ``extra``.
    """

    maxplaybackrate: int = 48000
    sprop_maxcapturerate: int = 48000
    maxaveragebitrate: int | None = None
    stereo: bool = False
    sprop_stereo: bool = False
    cbr: bool = False
    useinbandfec: bool = False
    usedtx: bool = False
    ptime: int | None = None
    minptime: int | None = None
    maxptime: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_fmtp(cls, fmtp: Mapping[str, str] | str) -> OpusParams:
        """Read parameters from a dict or an fmtp string; malformed values keep the default."""
        items = parse_fmtp(fmtp) if isinstance(fmtp, str) else fmtp
        params = cls()
        for raw_key, value in items.items():
            key = raw_key.strip().lower()
            value = value.strip()
            if key in _BOOL_KEYS:
                if value in ("0", "1"):
                    setattr(params, _BOOL_KEYS[key], value == "1")
                else:
                    log.debug("ignoring Opus fmtp %s=%r (not 0/1)", key, value)
            elif key in _INT_KEYS:
                attr, low, high = _INT_KEYS[key]
                if value.isascii() and value.isdigit() and low <= int(value) <= high:
                    setattr(params, attr, int(value))
                else:
                    log.debug("ignoring Opus fmtp %s=%r (out of range)", key, value)
            else:
                params.extra[key] = value
        return params

    def to_fmtp(self) -> dict[str, str]:
        """The parameters that differ from the RFC 7587 defaults, plus ``extra``."""
        out: dict[str, str] = {}
        if self.maxplaybackrate != 48000:
            out["maxplaybackrate"] = str(self.maxplaybackrate)
        if self.sprop_maxcapturerate != 48000:
            out["sprop-maxcapturerate"] = str(self.sprop_maxcapturerate)
        for key in ("maxaveragebitrate", "ptime", "minptime", "maxptime"):
            value = getattr(self, key)
            if value is not None:
                out[key] = str(value)
        for key, attr in _BOOL_KEYS.items():
            if getattr(self, attr):
                out[key] = "1"
        out.update(self.extra)
        return out

    def apply_to_encoder(self, encoder: OpusEncoder) -> None:
        """Honour the *remote* side's receive preferences in our encoder (RFC 7587 §7.1).

        Audio bandwidth is capped by its ``maxplaybackrate``, bitrate by
        ``maxaveragebitrate``; ``stereo=0`` makes a stereo encoder send mono; ``cbr``,
        ``useinbandfec`` and ``usedtx`` switch CBR, FEC and DTX.
        """
        encoder.max_bandwidth = bandwidth_for_rate(self.maxplaybackrate)
        if self.maxaveragebitrate is not None:
            encoder.bitrate = min(encoder.bitrate, self.maxaveragebitrate)
        if encoder.channels == 2:
            encoder.force_mono = not self.stereo
        encoder.cbr = self.cbr
        encoder.fec = self.useinbandfec
        encoder.dtx = self.usedtx
