"""Media engine: RTP/RTCP (RFC 3550), Opus and G.711 codecs, jitter buffer, audio devices.

Imports neither ``sip`` nor ``ice``: it is handed a datagram transport (anything with
``send(data)`` and an ``on_receive`` callback: an ICE component, or :class:`UdpTransport`).

The public API, by layer:

- packets: :class:`RtpPacket`, :func:`parse_rtcp` / :func:`serialize_rtcp` and the RTCP packet
  classes, :class:`TelephoneEvent` (RFC 4733);
- codecs: :class:`OpusEncoder` / :class:`OpusDecoder` / :class:`OpusParams` (RFC 7587),
  :class:`G711Codec`, :class:`Resampler`;
- sans-I/O session: :class:`RtpSession` with :class:`CodecDescription`, :class:`JitterBuffer`,
  :class:`Stats` (loss, jitter, RTT, E-model MOS);
- asyncio shell and audio: :class:`MediaStream`, :class:`UdpTransport`, sources and sinks
  (:func:`open_source` / :func:`open_sink` for ``mic | PATH.wav | tone:FREQ`` and
  ``speaker | PATH.wav | none``), :class:`Microphone` / :class:`Speaker` (sounddevice, loaded
  lazily), analysis helpers (:func:`dominant_frequency`, :func:`cross_correlate`).

Parsers raise only this package's errors, all ``ValueError`` subclasses.
"""

from media.aio import DatagramTransport, MediaStream, UdpTransport, open_udp_transport
from media.analysis import LevelMeter, cross_correlate, dominant_frequency, rms_dbfs
from media.audio import AudioDeviceError, Microphone, Speaker, list_devices
from media.g711 import G711Codec
from media.jitter import JitterBuffer, JitterBufferConfig
from media.opus import OpusCodecError, OpusDecoder, OpusEncoder, OpusParams
from media.resample import Resampler
from media.rtcp import (
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RtcpParseError,
    SenderReport,
    SourceDescription,
    parse_rtcp,
    serialize_rtcp,
)
from media.rtp import RtpPacket, RtpParseError
from media.session import (
    ByeReceived,
    CodecDescription,
    DtmfReceived,
    RemoteSsrcChanged,
    RtpSession,
    SessionEvent,
)
from media.sources import AudioFileError, AudioSink, AudioSource, open_sink, open_source
from media.stats import Stats, estimate_mos
from media.telephone_event import TelephoneEvent, TelephoneEventError

__all__ = [
    "AudioDeviceError",
    "AudioFileError",
    "AudioSink",
    "AudioSource",
    "ByeReceived",
    "CodecDescription",
    "DatagramTransport",
    "DtmfReceived",
    "G711Codec",
    "Goodbye",
    "JitterBuffer",
    "JitterBufferConfig",
    "LevelMeter",
    "MediaStream",
    "Microphone",
    "OpusCodecError",
    "OpusDecoder",
    "OpusEncoder",
    "OpusParams",
    "ReceiverReport",
    "RemoteSsrcChanged",
    "ReportBlock",
    "Resampler",
    "RtcpParseError",
    "RtpPacket",
    "RtpParseError",
    "RtpSession",
    "SenderReport",
    "SessionEvent",
    "SourceDescription",
    "Speaker",
    "Stats",
    "TelephoneEvent",
    "TelephoneEventError",
    "UdpTransport",
    "cross_correlate",
    "dominant_frequency",
    "estimate_mos",
    "list_devices",
    "open_sink",
    "open_source",
    "open_udp_transport",
    "parse_rtcp",
    "rms_dbfs",
    "serialize_rtcp",
]
