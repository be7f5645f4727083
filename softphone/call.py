"""One call: a SIP session, (optionally) an ICE agent and an RTP media session, tied together.

Caller (shared/DESIGN.md "One call, end to end")::

    gather (host/srflx/relay, RTP and RTCP components)  ->  offer (codecs, a=rtcp-mux, ICE
    with our a=ice-pacing, default candidates in c=/m= and a=rtcp)  ->  INVITE  ->  200 OK
    with the answer  ->  ICE checks as controlling agent (component 2 dropped when the
    answer accepts rtcp-mux, RFC 5761 §5.1.3; Ta the larger a=ice-pacing, RFC 8445 §14.2)
    ->  media as soon as a pair is valid (RFC 8445 §12.1), before the nomination

Callee: offer (from the INVITE)  ->  candidates (a pre-gathered set from the account's
:class:`ice.pool.CandidatePool`, else gathered: one component with rtcp-mux, else two)  ->
answer (``a=ice-mismatch`` and no ICE when the offer's c=/m= is none of its candidates,
RFC 8839 §5.1)  ->  ICE as controlled agent  ->  media. An INVITE without SDP (late offer,
RFC 3261 §13.3.1) is answered with our offer in the 200 and the answer read from the ACK;
with ``MediaOptions.late_offer`` we send one and answer the 2xx's offer in the ACK.

Without ICE (``--no-ice``, or a peer whose SDP has no ``a=ice-ufrag``) media runs over plain UDP
with symmetric RTP (RFC 4961) at the ``c=``/``m=`` address (RFC 8445 fallback). When we offered
ICE and the answer has none, the peer sends to our default candidates, so media stays on them
(:class:`_DefaultCandidatePath`: their sockets, or the TURN allocation for a relayed one).

During the call, re-offers (re-INVITE/UPDATE) are answered through the call's offer/answer
state (RFC 3264 §8): hold stops our RTP but not RTCP, a new address is followed, new ICE
credentials restart ICE (RFC 8445 §9), another codec replaces the media session on the same
paths, source and sink (:meth:`Call._switch_media`; a microphone, speaker, tone or file
source is reopened at the new codec's clock, so PCMU -> Opus becomes wideband). We can
re-offer too: hold/resume, :meth:`Call.restart_ice`, :meth:`Call.change_codecs`. A selected
pair that loses consent (RFC 7675) gets one ICE restart of ours, then the call ends; so does
a peer that sends nothing for ``media_timeout`` seconds. DTMF goes as RFC 4733 events when
telephone-event was negotiated at the audio's clock, else by SIP INFO (:meth:`Call.send_dtmf`).

Hang-up (:meth:`Call.hangup`) tears everything down in order: the media session (its RTCP
BYE, RFC 3550 §6.6), the SIP session (BYE, or CANCEL while ringing), then the ICE connection
(which releases TURN allocations, RFC 8656 §8). :meth:`Call.report` gives the ``--json``
sections ``call``, ``ice`` and ``rtp``; "audio both ways" (the exit status) also reads the
peer's RTCP reception reports (:class:`PeerReports`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ice.aio import IceConnection, IceError
from ice.candidate import Candidate, CandidateType
from ice.interfaces import local_addresses
from ice.netmonitor import AddressChange, AddressMonitor
from ice.pool import CandidatePool
from ice.sdp import RemoteCandidate, choose_default_candidate, format_remote_candidates
from media.aio import MediaStream, UdpTransport, open_udp_transport
from media.resample import Resampler
from media.rtcp import ReceiverReport, RtcpParseError, SenderReport, parse_rtcp
from media.session import CodecDescription, DtmfReceived, RtpSession, SessionEvent
from media.sources import (
    ClockedSink,
    Pacer,
    WavFileSource,
    open_sink,
    open_source,
    parse_sink,
)
from media.stats import Stats
from sip.aio import AsyncCall, AsyncUserAgent, CallError
from sip.invite import CallRinging
from sip.offer_answer import NegotiatedMedia, OfferAnswer, OfferAnswerError, OfferAnswerState
from sip.sdp import Attribute, SdpParseError
from softphone.config import Account
from softphone.sdp_glue import (
    LocalTransport,
    RemoteMedia,
    SdpGlueError,
    audio_codecs,
    inspect_offer,
    local_media,
    new_offer_answer,
    read_negotiation,
)
from softphone.useragent import gather_config

__all__ = ["Call", "CallFailed", "MediaOptions", "PeerReports", "warm_up"]

log = logging.getLogger("softphone.call")

Address = tuple[str, int]
Progress = Callable[[str], None]

DTMF_DIGITS = "0123456789*#ABCD"
#: A digit sent by SIP INFO lasts this long (the body's ``Duration``), then a pause.
INFO_DTMF_MS = 160
INFO_DTMF_GAP_MS = 90


def parse_info_dtmf(body: bytes, content_type: str | None) -> str | None:
    """The digit of an INFO body: ``application/dtmf-relay`` (``Signal=5``, the Cisco/PBX
    format) or ``application/dtmf`` (the digit alone); None for anything else."""
    kind = (content_type or "").split(";")[0].strip().lower()
    text = body.decode("utf-8", "replace").strip()
    if kind == "application/dtmf-relay":
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal":
                text = value.strip()
                break
        else:
            return None
    elif kind != "application/dtmf":
        return None
    digit = text.upper()
    return digit if len(digit) == 1 and digit in DTMF_DIGITS else None


class CallFailed(Exception):
    """The call could not be set up; ``status`` is the SIP status (0: not a SIP failure)."""

    def __init__(self, reason: str, status: int = 0, kind: str = "failed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.kind = kind
        """The report's ``end_reason``: rejected, cancelled, no-answer, bad-answer, ice-failed,
        audio-failed or failed."""


@dataclass
class MediaOptions:
    """What the call plays and records (``--play SRC`` / ``--record SINK``) and its limits."""

    play: str = "mic"
    record: str = "speaker"
    input_device: str | None = None
    output_device: str | None = None
    gather_timeout: float = 6.0  # every STUN/TURN server has its own deadline (3 s / 5 s)
    ice_timeout: float = 15.0
    answer_timeout: float = 120.0
    #: Hang up when nothing arrives from the peer for this long (not while on hold); None: never.
    media_timeout: float | None = 30.0
    #: ICE components in our offers: 2 (RTP and RTCP candidates, with a=rtcp-mux) or 1.
    offer_components: int = 2
    #: When the selected pair loses ICE consent, try one ICE restart for this long before
    #: hanging up (None: hang up at once).
    consent_restart: float | None = 5.0
    #: Send the INVITE without SDP (RFC 3261 §13.2.1 "late offer"): the peer offers in its
    #: 2xx and our answer goes in the ACK.
    late_offer: bool = False
    #: RTCP report interval (RFC 3550 §6.2; randomised 0.5-1.5x by the media session).
    rtcp_interval: float = 5.0
    #: Passed to :class:`ice.agent.Agent` (``consent_interval``, ``timeout`` ...).
    ice_agent_options: dict[str, Any] = field(default_factory=dict)
    #: After a local address change that matters to the call (see :meth:`Call.network_changed`),
    #: wait this long for more before restarting ICE (or re-INVITing without ICE); changes
    #: within it, or during the restart, lead to one more restart at most.
    network_settle: float = 0.2


class _DefaultCandidatePath:
    """Plain symmetric RTP (RFC 4961) on our default candidate, for a peer that did not answer
    with ICE (RFC 8445 §1): it sends to our ``c=``/``m=`` address, which is that candidate.

    For a host or server-reflexive default the data goes through the candidate's socket (its
    base); for a relayed one through the TURN allocation (Send indications, then a channel,
    RFC 8656 §11-12; the TURN client installs the permission). Taps the ICE gatherer's
    callbacks; STUN and anything from elsewhere is dropped.
    """

    def __init__(self, connection: IceConnection, default: Candidate, remote: Address) -> None:
        self.connection = connection
        self.relayed = default.type is CandidateType.RELAYED
        self.local = default.transport_address if self.relayed else _base(default)
        self.remote = remote
        self.on_receive: Callable[[bytes], None] | None = None
        self._latched = False
        self._next: Callable[[bytes, Address, Address], None] | None
        if self.relayed:
            self._next = connection.gatherer.on_relayed
            connection.gatherer.on_relayed = self._datagram
            connection.gatherer.bind_channel(self.local, remote)
        else:
            self._next = connection.gatherer.on_datagram
            connection.gatherer.on_datagram = self._datagram

    def _datagram(self, data: bytes, local: Address, addr: Address) -> None:
        if local != self.local or not data or data[0] < 4:  # not ours, or STUN
            if self._next is not None:  # another path's socket (RTCP), or the ICE agent
                self._next(data, local, addr)
            return
        if addr != self.remote:
            if self._latched:
                return
            log.info("RTP peer at %s:%d (signalled %s:%d)", *addr, *self.remote)
            self.remote = addr
            if self.relayed:
                self.connection.gatherer.bind_channel(self.local, addr)
        self._latched = True
        if self.on_receive is not None:
            self.on_receive(data)

    def send(self, data: bytes) -> None:
        if self.relayed:
            self.connection.gatherer.relay_send(self.local, data, self.remote)
        else:
            self.connection.gatherer.send(self.local, data, self.remote)


def _is_rtcp(data: bytes) -> bool:
    """RTCP packet types 192-223 in the second octet (RFC 5761 §4)."""
    return len(data) > 1 and 192 <= data[1] <= 223


class PeerReports:
    """What the peer's RTCP reports say about the RTP we send (RFC 3550 §6.4.1), sans-I/O:
    fed every datagram we send (:meth:`sent`) and every one we receive (:meth:`received`).

    A report block about our SSRC means the peer received our RTP (a receiver reports only
    on sources it heard, RFC 3550 §6.4); its extended highest sequence number and cumulative
    loss count the packets that got there. Reports from the peer that name other sources or
    none, while we have been sending, say it heard nothing from us.
    """

    def __init__(self) -> None:
        self.ssrc: int | None = None
        self._first_seq = 0
        self.reports = 0  #: SR/RR packets from the peer
        self.reports_without_us = 0  #: ... sent after our first RTP, without a block about us
        self.peer_received: int | None = None  #: our packets the peer got (latest report)
        self.heard_us = False

    def sent(self, data: bytes) -> None:
        if len(data) < 12 or _is_rtcp(data):
            return
        ssrc = int.from_bytes(data[8:12], "big")
        if ssrc != self.ssrc:  # the first packet, or a new stream (codec change)
            self.ssrc = ssrc
            self._first_seq = int.from_bytes(data[2:4], "big")
            self.peer_received = None

    def received(self, data: bytes) -> None:
        if not _is_rtcp(data):
            return
        try:
            packets = parse_rtcp(data)
        except RtcpParseError:
            return
        for packet in packets:
            if not isinstance(packet, SenderReport | ReceiverReport):
                continue
            self.reports += 1
            block = next((b for b in packet.reports if b.ssrc == self.ssrc), None)
            if block is None:
                if self.ssrc is not None:
                    self.reports_without_us += 1
                continue
            expected = max(0, block.highest_seq - self._first_seq + 1)
            self.peer_received = max(0, expected - max(0, block.cumulative_lost))
            if self.peer_received > 0:
                self.heard_us = True

    def peer_got_audio(self, packets_sent: int) -> bool:
        """Did our RTP reach the peer? From its reports when it sends any (two or more
        reports since we started sending that never mention us: no), else from our own
        counter (we sent some)."""
        if self.heard_us:
            return True
        if self.reports_without_us >= 2:
            return False
        return packets_sent > 0


class _SendGate:
    """The RTP path with a switch: while the peer holds the call (our direction recvonly or
    inactive) RTP is not sent, RTCP still is (RFC 3264 §5.1; told apart by the packet type
    octet, RFC 5761 §4). Everything that passes is shown to :class:`PeerReports`."""

    def __init__(self, path: Any, reports: PeerReports | None = None) -> None:
        self.path = path
        self.reports = reports or PeerReports()
        self.paused = False
        self.held_back = 0
        self.unsent = 0  #: RTP packets the path could not send
        self.first_sent = False
        self.last_received = time.monotonic()
        self._handler: Callable[[bytes], None] | None = None

    @property
    def on_receive(self) -> Callable[[bytes], None] | None:
        return self._handler

    @on_receive.setter
    def on_receive(self, handler: Callable[[bytes], None] | None) -> None:
        self._handler = handler
        self.path.on_receive = None if handler is None else self._received

    def repath(self, path: Any) -> None:
        """Send on ``path`` from now on (an ICE connection that replaced ours); the old path
        keeps delivering what still arrives on it until it is closed."""
        self.path = path
        if self._handler is not None:
            path.on_receive = self._received

    def _received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        if _is_rtcp(data):
            self.reports.received(data)
        if self._handler is not None:
            self._handler(data)

    def send(self, data: bytes) -> None:
        if self.paused and not _is_rtcp(data):
            self.held_back += 1
            return
        self.reports.sent(data)
        if self.path.send(data) is False and not _is_rtcp(data):
            self.unsent += 1  # no pair to send on yet (ICE still checking), or consent lost
        elif not self.first_sent:
            self.first_sent = True
            log.info("first packet sent (%d not sent before)", self.unsent)


class _MuteSwitch:
    """The audio source with a mute switch: while muted it yields silence of the same shape, so
    RTP keeps flowing (timestamps, NAT bindings, ICE consent and the peer's media timeout are
    undisturbed). Everything else (``pacer``, ``dropped_frames`` ...) is the source's, which
    :meth:`_Device.replace` may swap for one at another rate."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.muted = False
        self.muted_frames = 0

    @property
    def sample_rate(self) -> int:
        rate: int = self.source.sample_rate
        return rate

    @property
    def frame_samples(self) -> int:
        samples: int = self.source.frame_samples
        return samples

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def start(self) -> None:
        self.source.start()

    def close(self) -> None:
        self.source.close()

    def _switch(self, frame: Any) -> Any:
        if not self.muted:
            return frame
        self.muted_frames += 1
        return frame * 0

    async def read(self) -> Any:
        return self._switch(await self.source.read())

    def next_frame(self) -> Any:
        return self._switch(self.source.next_frame())


#: How long a speaker replaced by one at another rate keeps playing what it has queued.
_SINK_LINGER_S = 0.2


class _Device:
    """An opened audio source or sink of the call: started once, closed at the end of the
    call (not when a media session using it stops).

    ``reopen(old, rate, frame_samples)`` builds the same end at another rate (None: it keeps
    its rate, like a WAV recording, whose rate is in its header); the call uses it when a codec
    change brings another clock (:meth:`Call._reopen_ends`), so a microphone captures at the
    new codec's rate instead of being resampled from the first codec's, and :meth:`replace`
    puts the new end in place between two media sessions."""

    def __init__(self, end: Any, reopen: Callable[[Any, int, int], Any] | None = None) -> None:
        self.end = end
        self.reopen = reopen
        self.sample_rate: int = end.sample_rate
        self.frame_s: float = end.frame_samples / end.sample_rate
        self.reopened = 0  #: times the end was replaced by one at another rate
        self._started = self._closed = False
        self._retired: list[Any] = []

    @property
    def inner(self) -> Any:
        """The source or sink itself (inside the mute switch of a source)."""
        return self.end.source if isinstance(self.end, _MuteSwitch) else self.end

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.end.start()

    def replace(self, new: Any, *, linger: float = 0.0) -> None:
        """Use ``new`` (the same end at another rate, started when this one was) from now on;
        the old one is closed, after ``linger`` seconds (a speaker plays out its queue)."""
        old = self.inner
        if isinstance(self.end, _MuteSwitch):
            self.end.source = new
        else:
            self.end = new
        self.sample_rate = new.sample_rate
        self.reopened += 1
        if linger > 0:
            self._retired.append(old)
            asyncio.get_running_loop().call_later(linger, self._retire, old)
        else:
            _close_quietly(old)

    def _retire(self, old: Any) -> None:
        if old in self._retired:
            self._retired.remove(old)
            _close_quietly(old)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.end.close()
        while self._retired:
            _close_quietly(self._retired.pop())


def _close_quietly(end: Any) -> None:
    try:
        end.close()
    except Exception as exc:  # a device that fails to close must not break the call
        log.info("closing %r: %s", end, exc)


def _catch_up(new: Any, old: Any) -> None:
    """Make a freshly opened end (at another rate) continue where ``old`` is: a file source
    skips the frames ``old`` has read (frames last the same whatever the rate; media.sources
    has no seek, so this reads them, to within one frame of the position), and a microphone
    drops what it captured while the old one was still in use (else those frames would go
    out twice, late)."""
    if isinstance(new, WavFileSource) and isinstance(old, WavFileSource):
        skip = old.frames_read - new.frames_read
        if not new.loop:  # past the end it plays silence anyway
            skip = min(skip, len(new.samples) // max(1, new.frame_samples) + 1)
        for _ in range(max(0, skip)):
            new.next_frame()
        return
    drain = getattr(new, "read_nowait", None)
    if callable(drain):
        for _ in range(64):  # a microphone's ring holds a few frames
            if drain() is None:
                break


class _KeptEnd:
    """A call's audio device as one media session sees it (see :meth:`Call._audio_ends`):
    frames resampled (media.resample) between the session's rate and the rate the device was
    opened at (no resampler when they agree: the device was reopened at the session's rate),
    started once, never closed by the session (the call closes the device)."""

    def __init__(
        self, device: _Device, sample_rate: int, frame_samples: int, *, to_device: bool
    ) -> None:
        self.device = device
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        rates = (
            (sample_rate, device.sample_rate) if to_device else (device.sample_rate, sample_rate)
        )
        self._resampler = None if rates[0] == rates[1] else Resampler(*rates)

    @property
    def resampled(self) -> bool:
        """Frames go through a resampler (the device works at another rate)."""
        return self._resampler is not None

    def __getattr__(self, name: str) -> Any:  # pacer, dropped_frames, ring ...
        return getattr(self.device.end, name)

    def start(self) -> None:
        self.device.start()

    def close(self) -> None:
        pass  # the call closes the device

    def _convert(self, frame: Any) -> Any:
        return frame if self._resampler is None else self._resampler.process(frame)


class _KeptSource(_KeptEnd):
    """A call's audio source, frames resampled to the session's rate."""

    def __init__(self, device: _Device, sample_rate: int, frame_samples: int) -> None:
        super().__init__(device, sample_rate, frame_samples, to_device=False)

    @property
    def source(self) -> Any:
        return self.device.end

    async def read(self) -> Any:
        return self._convert(await self.source.read())

    def next_frame(self) -> Any:
        return self._convert(self.source.next_frame())


class _KeptSink(_KeptEnd):
    """A call's audio sink, frames resampled to the device's rate."""

    def __init__(self, device: _Device, sample_rate: int, frame_samples: int) -> None:
        super().__init__(device, sample_rate, frame_samples, to_device=True)

    @property
    def sink(self) -> Any:
        return self.device.end

    def write(self, frame: Any) -> None:
        self.sink.write(self._convert(frame))


class _KeptClockedSink(_KeptSink):
    """... of a sink with its own clock (a sound card): playout follows it."""

    async def wait_for_space(self) -> None:
        await self.sink.wait_for_space()


def _kept_sink(device: _Device, sample_rate: int, frame_samples: int) -> _KeptSink:
    kind = _KeptClockedSink if isinstance(device.end, ClockedSink) else _KeptSink
    return kind(device, sample_rate, frame_samples)


def _combined(earlier: list[Stats], current: Stats) -> Stats:
    """The call's media statistics over every session it had (a codec change starts a new
    one): packet and byte counters add up; the rest is the current session's."""
    if not earlier:
        return current
    total = dataclasses.replace(current)
    for s in earlier:
        total.packets_sent += s.packets_sent
        total.bytes_sent += s.bytes_sent
        total.packets_received += s.packets_received
        total.bytes_received += s.bytes_received
        total.packets_lost += s.packets_lost
        total.concealed_frames += s.concealed_frames
        total.fec_frames += s.fec_frames
    return total


def _media_key(remote: RemoteMedia) -> tuple[Any, ...]:
    """What a media session is built from: a re-negotiation that changes it needs a new one
    (:meth:`Call._switch_media`); one that repeats it (hold, an ICE update) does not."""
    event = remote.telephone_event
    return (
        str(remote.codec),
        remote.codec.payload_type,
        remote.codec.incoming_payload_type,
        remote.ptime_ms,
        remote.rtcp_mux,
        None if event is None else (event.payload_type, event.incoming_payload_type),
        tuple((str(c), c.payload_type, c.incoming_payload_type) for c in remote.receive_codecs),
    )


class Call:
    """A call being set up, in progress or over (see the module docstring).

    ``progress`` receives one line per step (ringing, ICE checking, connected via ..., hang-up
    reason). Use :meth:`dial` (outgoing) or :meth:`accept` (incoming), then :meth:`run`.
    """

    def __init__(
        self,
        ua: AsyncUserAgent,
        account: Account,
        media: MediaOptions | None = None,
        *,
        progress: Progress | None = None,
        media_host: str | None = None,
        pool: CandidatePool | None = None,
        monitor: AddressMonitor | None = None,
    ) -> None:
        self.ua = ua
        #: Local address changes (``ice.netmonitor``): while the call is up it listens, and
        #: restarts ICE when the addresses it uses go away (:meth:`network_changed`). None:
        #: the pool's monitor (``pool.monitor``), if any.
        self.monitor = monitor
        #: Pre-gathered candidate sets (``ice.pool``): a call takes one instead of gathering.
        self.pool = pool
        self.account = account
        self.options = media or MediaOptions()
        self.progress: Progress = progress or (lambda text: None)
        self.media_host = media_host
        self.sip: AsyncCall | None = None
        self.ice: IceConnection | None = None
        self.stream: MediaStream | None = None
        self.remote: RemoteMedia | None = None
        self.oa: OfferAnswer | None = None
        self.role = "caller"
        self.sip_status: int | None = None
        self.setup_ms: float | None = None
        self.end_reason: str | None = None
        self.final_stats: Stats | None = None
        self.dtmf_received: list[str] = []
        self._dtmf_warned = False
        self._info_digits: list[str] = []
        self._info_sender: asyncio.Future[None] | None = None
        self._info_receiver: asyncio.Future[None] | None = None
        self._plain: list[UdpTransport] = []
        self._paths: tuple[Any, Any] = (None, None)
        self._gate: _SendGate | None = None
        self._rtcp_gate: _SendGate | None = None
        self._ends: tuple[_Device, _Device] | None = None  # the audio source and sink
        self._media_key: tuple[Any, ...] | None = None
        self._switch_lock = asyncio.Lock()
        self._switching: asyncio.Future[None] | None = None
        self._earlier_stats: list[Stats] = []  # media sessions before a codec change
        self._reports = PeerReports()
        self._restore_offer_handler: Callable[[], None] | None = None
        self._early: asyncio.Future[None] | None = None  # media on a 183's answer (caller)
        self._early_sdp: bytes | None = None
        self._prepared: tuple[LocalTransport, bytes] | None = None  # callee: our answer
        #: Late offer (an INVITE without SDP): the callee offers in its 2xx and the answer
        #: comes in the ACK; a late-offer caller answers the 2xx's offer in its ACK.
        self.late_offer = False
        self._late_transport: LocalTransport | None = None
        self._late_error: str | None = None
        #: The updated offer with the selected candidates (controlling agent, RFC 8839 §4.4.1.2).
        self.selected_offer: asyncio.Future[str | None] | None = None
        self.on_hold = False
        #: We hold the call (our re-INVITE with a=sendonly, or a=inactive when both hold).
        self.held = False
        #: Our microphone (or --play source) is muted: silence is sent instead.
        self.muted = False
        self._mute: _MuteSwitch | None = None
        self._sends = self._receives = True  # the negotiated direction, from our side
        self._started = time.monotonic()
        self._answered_at: float | None = None
        self._ended_at: float | None = None
        self._closed = False
        self._unwatch: Callable[[], None] | None = None
        self._network_task: asyncio.Future[None] | None = None
        self._network_due = 0.0
        self._network_again = False
        self._retired_ice: list[IceConnection] = []
        self._new_addresses: list[str] = []  # addresses that appeared during the call
        self._gone_addresses: set[str] = set()  # ... and went away (and did not come back)
        #: ICE restarts (or re-INVITEs without ICE) made for a local address change.
        self.network_restarts = 0

    # -- properties ---------------------------------------------------------------------------

    @property
    def answered(self) -> bool:
        return self._answered_at is not None

    @property
    def duration_s(self) -> float:
        if self._answered_at is None:
            return 0.0
        end = self._ended_at if self._ended_at is not None else time.monotonic()
        return end - self._answered_at

    @property
    def stats(self) -> Stats | None:
        """The media statistics (final after hang-up)."""
        if self.final_stats is not None:
            return self.final_stats
        if self.stream is None:
            return None
        return self._on_the_wire(_combined(self._earlier_stats, self.stream.stats()))

    def _on_the_wire(self, stats: Stats) -> Stats:
        """``packets_sent`` counts what left: media starts before ICE has a pair to send on
        (RFC 8445 §12.1), and the packets made meanwhile went nowhere."""
        unsent = self._gate.unsent if self._gate is not None else 0
        if unsent:
            stats = dataclasses.replace(stats, packets_sent=max(0, stats.packets_sent - unsent))
        return stats

    @property
    def peer_reports(self) -> PeerReports:
        """What the peer's RTCP reports said about our RTP."""
        return self._reports

    @property
    def audio_both_ways(self) -> bool:
        """RTP from the peer reached us (our counter), and ours reached the peer: by the
        peer's RTCP reception reports when it sends any (RFC 3550 §6.4), else by our own
        counter of packets sent (:meth:`PeerReports.peer_got_audio`)."""
        s = self.stats
        if s is None or s.packets_received <= 0:
            return False
        return self._reports.peer_got_audio(s.packets_sent)

    @property
    def succeeded(self) -> bool:
        """Answered, and audio flowed both ways (the exit status of ``call`` / ``answer``)."""
        return self.answered and self.audio_both_ways

    # -- outgoing -------------------------------------------------------------------------------

    async def dial(self, target: str) -> None:
        """Gather, offer, INVITE, wait for the answer, connect ICE, start the media.

        Raises :class:`CallFailed` (everything is torn down by then)."""
        self.role = "caller"
        self._started = time.monotonic()
        await self._guarded(self._dial(target))
        self._watch_network()

    async def _dial(self, target: str) -> None:
        # RTP and RTCP candidates with a=rtcp-mux: an answerer without rtcp-mux still finds
        # an RTCP candidate (RFC 5761 §5.1.3); one that accepts it drops component 2.
        self.late_offer = self.options.late_offer
        # the initial offerer is the controlling agent (RFC 8445 §6.1.1, RFC 8839 §3):
        # with a late offer that is the callee
        transport = await self._local_transport(
            controlling=not self.late_offer, components=self.options.offer_components
        )
        offer = b""
        if self.late_offer:
            self._late_transport = transport
        else:
            self.oa = new_offer_answer(local_media(self.account.codecs, transport), transport)
            offer = self.oa.create_offer().to_bytes()
        self.sip = self.ua.start_call(target, offer)
        self._handle_reoffers()
        self.progress(f"calling {target}" + (" (INVITE without SDP)" if not offer else ""))
        answer = await self._wait_answer(self.sip, transport)
        self._answered_at = time.monotonic()
        self.setup_ms = (self._answered_at - self._started) * 1000
        self.sip_status = 200
        self.progress(f"answered (200) after {self.setup_ms:.0f} ms")
        if self.late_offer:
            # the 2xx carried the offer, answered in our ACK (_answer_late_offer)
            if self._late_error is not None or self.remote is None:
                why = self._late_error or "the 2xx carried no offer"
                raise CallFailed(f"unusable offer in the 2xx: {why}", 488, "bad-answer")
            assert self._late_transport is not None
            await self._connect_media(self._late_transport)
        elif self._early is not None:
            # RFC 3261 §13.2.1: the 183's SDP was the answer; the 2xx repeats it (or has
            # none). The media started on the early dialog goes on, no restart (RFC 3960).
            await self._early
            if answer is not None and answer != self._early_sdp:
                log.warning("the 2xx SDP differs from the early answer; keeping that")
        else:
            self._take_answer(answer)
            await self._connect_media(transport)

    def _take_answer(self, answer: bytes | None) -> None:
        """Apply the answer to our offer (from the 2xx, or a 183 with early media)."""
        assert self.oa is not None
        try:
            negotiation = self.oa.process_answer(answer or b"")
            audio = negotiation.audio
            if audio is None:
                raise SdpGlueError("the answer accepted no audio stream")
            self.remote = read_negotiation(audio)
            self._sends, self._receives = audio.direction.sends, audio.direction.receives
        except (OfferAnswerError, SdpGlueError, SdpParseError) as exc:
            raise CallFailed(f"unusable answer: {exc}", 488, "bad-answer") from exc

    async def _early_media(self, sdp: bytes, transport: LocalTransport) -> None:
        """RFC 3261 §13.2.1 / RFC 3960: a 183 with SDP carries the answer; ICE and media start
        on the early dialog, so the callee's announcements or ringback are heard."""
        self._take_answer(sdp)
        self.progress("early media (183 with SDP)")
        await self._connect_media(transport)

    async def _wait_answer(self, call: AsyncCall, transport: LocalTransport) -> bytes | None:
        answered: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(call.answered))
        deadline = time.monotonic() + self.options.answer_timeout
        seen = 0
        rang = False
        ringing: asyncio.Future[Any] | None = None
        try:
            while not answered.done():
                ringing = asyncio.ensure_future(call.ringing.wait())
                waits: set[asyncio.Future[Any]] = {ringing, answered}
                if self._early is not None and not self._early.done():
                    waits.add(self._early)
                limit = deadline - time.monotonic()
                if limit <= 0:
                    break
                await asyncio.wait(waits, timeout=limit, return_when=FIRST_COMPLETED)
                ringing.cancel()
                if self._early is not None and self._early.done() and not answered.done():
                    self._early.result()  # an unusable early answer or ICE failure: fail
                call.ringing.clear()
                for ev in call.events[seen:]:
                    if not isinstance(ev, CallRinging):
                        continue
                    if not rang:
                        rang = True
                        self.progress(f"ringing ({ev.status})")
                    if ev.sdp is not None and self._early is None and not self.late_offer:
                        self._early_sdp = ev.sdp
                        self._early = asyncio.ensure_future(self._early_media(ev.sdp, transport))
                seen = len(call.events)
            if not answered.done():
                raise CallFailed("no answer", 408, "no-answer")
            try:
                result: bytes | None = answered.result()
                return result
            except CallError as exc:
                self.sip_status = exc.status
                raise CallFailed(f"{exc.status} {exc.reason}", exc.status, "rejected") from exc
        finally:
            if ringing is not None:
                ringing.cancel()
            answered.cancel()

    # -- incoming -------------------------------------------------------------------------------

    async def accept(self, incoming: AsyncCall) -> None:
        """Answer an incoming call: read its offer, gather, answer, connect ICE, start media.

        After :meth:`early_media` the 200 repeats the 183's answer and the media already
        running goes on (RFC 3261 §13.3.1). Rejects the call (488) when its offer is unusable
        and raises :class:`CallFailed`."""
        await self._guarded(self._accept(incoming))
        self._watch_network()

    async def early_media(self, incoming: AsyncCall) -> None:
        """Send 183 Session Progress with our answer and start ICE and media on the early
        dialog (RFC 3261 §13.3.1.1, RFC 3960); :meth:`accept` later sends the 200."""
        await self._guarded(self._early_answer(incoming))

    async def _guarded(self, setup: Any) -> None:
        try:
            await setup
        except BaseException as exc:
            reason = _end_reason(exc)
            await self._teardown(reason, send_bye=True)
            if isinstance(exc, (CallFailed, asyncio.CancelledError, KeyboardInterrupt)):
                raise
            if isinstance(exc, IceError):
                raise CallFailed(f"ICE failed: {exc}", kind="ice-failed") from exc
            if isinstance(exc, (OSError, ValueError)):
                raise CallFailed(str(exc)) from exc
            raise

    async def _early_answer(self, incoming: AsyncCall) -> None:
        transport, answer = await self._prepare(incoming)
        if incoming.ended.done():
            raise CallFailed("the caller gave up", 487, "cancelled")
        if self.late_offer:
            # an offer in an unreliable 183 is not allowed (RFC 3261 §13.3.1.1, RFC 3262):
            # ring without SDP; the offer goes in the 2xx
            incoming.ring()
            self.progress("ringing (no early media: the INVITE had no offer)")
            return
        incoming.ring(answer)  # 183 with SDP
        self.progress("early media (183 with SDP)")
        self._early = asyncio.ensure_future(self._connect_media(transport))
        await self._early

    async def _accept(self, incoming: AsyncCall) -> None:
        transport, answer = await self._prepare(incoming)
        if incoming.ended.done():
            raise CallFailed("the caller gave up", 487, "cancelled")
        await incoming.answer(answer)
        self.sip_status = 200
        self._answered_at = time.monotonic()
        self.setup_ms = (self._answered_at - self._started) * 1000
        self.progress(
            "answered" + (" with an offer (the INVITE had none)" if self.late_offer else "")
        )
        if self.late_offer:
            try:
                ack_sdp = await incoming.wait_confirmed(self.options.answer_timeout)
            except (CallError, TimeoutError) as exc:
                raise CallFailed(f"no ACK with the answer: {exc!r}", 408, "bad-answer") from exc
            if not ack_sdp:
                raise CallFailed("the ACK carried no answer to our offer", 488, "bad-answer")
            self._take_answer(ack_sdp)
            await self._connect_media(transport)
        elif self._early is not None:
            await self._early  # the media started on the early dialog goes on
        else:
            await self._connect_media(transport)

    async def _prepare(self, incoming: AsyncCall) -> tuple[LocalTransport, bytes]:
        """Read the offer, gather, and build our answer (once per call)."""
        if self._prepared is not None:
            return self._prepared
        self.role = "callee"
        self.sip = incoming
        self._handle_reoffers()
        self._started = time.monotonic()
        offer = incoming.offer or b""
        if not offer.strip():
            return await self._prepare_offer_in_2xx()
        try:
            info = inspect_offer(offer)
        except (SdpGlueError, SdpParseError) as exc:
            with contextlib.suppress(ValueError):  # the caller may have given up already
                incoming.reject(488)
            self.sip_status = 488
            self._ended("rejected")
            raise CallFailed(f"unusable offer: {exc}", 488, "rejected") from exc
        use_ice = self.account.ice and info.ice is not None
        transport = await self._local_transport(
            controlling=False, components=info.components, ice=use_ice
        )
        transport.mismatch = info.mismatch
        self.oa = new_offer_answer(local_media(self.account.codecs, transport), transport)
        try:
            answer, negotiation = self.oa.process_offer(offer)
            audio = negotiation.audio
            if audio is None:
                raise SdpGlueError("no common codec")
            self.remote = read_negotiation(audio)
            self._sends, self._receives = audio.direction.sends, audio.direction.receives
        except (OfferAnswerError, SdpGlueError, SdpParseError) as exc:
            with contextlib.suppress(ValueError):
                incoming.reject(488)
            self.sip_status = 488
            raise CallFailed(f"cannot answer the offer: {exc}", 488, "rejected") from exc
        self._prepared = (transport, answer.to_bytes())
        return self._prepared

    async def _prepare_offer_in_2xx(self) -> tuple[LocalTransport, bytes]:
        """An INVITE without SDP (late offer, RFC 3261 §13.3.1): we make the offer, sent in
        the 2xx, and the answer comes in the ACK. As the initial offerer we are the
        controlling ICE agent (RFC 8445 §6.1.1)."""
        self.late_offer = True
        transport = await self._local_transport(
            controlling=True, components=self.options.offer_components
        )
        self.oa = new_offer_answer(local_media(self.account.codecs, transport), transport)
        self._prepared = (transport, self.oa.create_offer().to_bytes())
        return self._prepared

    # -- transports -----------------------------------------------------------------------------

    def _host(self) -> str:
        if self.media_host:
            return self.media_host
        bind = self.account.bind
        if bind is not None and bind.host not in ("0.0.0.0", "::"):
            return bind.host
        return self.ua.config.local_host

    async def _local_transport(
        self, *, controlling: bool, components: int, ice: bool | None = None
    ) -> LocalTransport:
        """Gather ICE candidates, or open plain RTP (and RTCP) sockets."""
        use_ice = self.account.ice if ice is None else ice
        host = self._host()
        if not use_ice:
            bind_host = self.account.bind.host if self.account.bind else "0.0.0.0"
            rtp = await open_udp_transport((bind_host, 0))
            rtcp = await open_udp_transport((bind_host, 0))
            self._plain = [rtp, rtcp]
            return LocalTransport(host, rtp.local_address[1], rtcp=(host, rtcp.local_address[1]))
        self.ice, pooled = await self._new_ice(controlling, components)
        self.progress("candidates from the pool" if pooled else "gathering candidates")
        # after gather_timeout, whatever was gathered so far (a slow server adds nothing)
        candidates = await self.ice.gather(self.options.gather_timeout)
        kinds = sorted({c.type.value for c in candidates})
        self.progress(f"{len(candidates)} candidates ({', '.join(kinds) or 'none'})")
        return self._ice_transport(candidates, components)

    async def _new_ice(self, controlling: bool, components: int) -> tuple[IceConnection, bool]:
        """A new ICE connection (not gathered yet), with a pre-gathered candidate set from the
        pool when it has one (then True)."""
        bind = self.account.bind.host if self.account.bind else None
        pool = self.pool
        # the pool's servers are resolved already (no name lookup on the call path)
        gather = pool.config if pool is not None else await gather_config(self.account)
        gather = dataclasses.replace(gather, components=components)
        gatherer = None if pool is None else pool.take(components, config=gather)
        connection = IceConnection(
            controlling,
            components=components,
            gather=gather,
            bind=bind,
            agent_options=self._agent_options(),
            gatherer=gatherer,  # a pooled set: nothing to gather
        )
        return connection, gatherer is not None

    def _agent_options(self) -> dict[str, Any] | None:
        """The ICE agent's options: ours (tests) plus the account's ``a=ice-pacing``
        proposal (RFC 8839 §5.5) as its Ta, unless they set one."""
        options = dict(self.options.ice_agent_options)
        pacing = self.account.ice_pacing_ms
        if pacing is not None and "ta" not in options and "pacing_ms" not in options:
            options["pacing_ms"] = pacing
        return options or None

    def _ice_transport(self, candidates: Sequence[Candidate], components: int) -> LocalTransport:
        """Our ICE description: the connection's current credentials, ``candidates`` and our
        ``a=ice-pacing`` proposal (the account's ``ice_pacing_ms``)."""
        assert self.ice is not None
        return LocalTransport.from_ice(
            self.ice.local_ufrag,
            self.ice.local_pwd,
            candidates,
            components,
            pacing_ms=self.account.ice_pacing_ms,
        )

    async def _connect_media(self, local: LocalTransport) -> None:
        """ICE checks (or none), then the RTP session on the resulting transport."""
        remote = self.remote
        assert remote is not None
        rtp_path: Any
        rtcp_path: Any = None
        if self.ice is not None and remote.ice is not None:
            await self._connect_ice(remote)
            return
        elif self.ice is not None:
            default = local.default_candidate
            if default is None:
                raise CallFailed("no default candidate")
            path = _DefaultCandidatePath(self.ice, default, remote.rtp)
            rtp_path = path
            rtcp_default = choose_default_candidate(local.candidates, 2)
            if not remote.rtcp_mux and rtcp_default is not None:
                rtcp_path = _DefaultCandidatePath(self.ice, rtcp_default, remote.rtcp)
            self.progress(
                f"peer without ICE: plain RTP {_addr2(path.local)} "
                f"({default.type.value}) <-> {_addr2(remote.rtp)}"
            )
        else:
            rtp, rtcp = self._plain
            rtp.remote = remote.rtp
            rtp_path = rtp
            if remote.rtcp_mux:
                rtcp.close()
            else:
                rtcp.remote = remote.rtcp
                rtcp_path = rtcp
            self.progress(f"plain RTP {_addr2(rtp.local_address)} <-> {_addr2(remote.rtp)}")
        self._paths = (rtp_path, rtcp_path)
        self._start_media(rtp_path, rtcp_path)

    async def _connect_ice(self, remote: RemoteMedia) -> None:
        """Start the checks and, at once, the media on the components' transports: they
        carry RTP as soon as a pair is valid (RFC 8445 §12.1: media may flow before
        nomination), without waiting for the RTCP component or the nomination; then wait
        for ICE to complete (failure or timeout fails the call)."""
        ice = self.ice
        assert ice is not None and remote.ice is not None
        params = remote.ice.parameters
        assert params is not None
        if remote.rtcp_mux and ice.agent.components > 1:
            ice.agent.limit_components(1)  # RFC 5761: RTCP rides on component 1
        # Ta: the larger of both a=ice-pacing proposals, 50 ms for a side without one
        ice.set_remote(
            params.ufrag,
            params.pwd,
            remote.ice.candidates,
            lite=params.lite,
            pacing_ms=params.pacing_ms,
        )
        self.progress(
            f"ICE checking ({ice.stats().role}, {len(remote.ice.candidates)} remote candidates)"
        )
        ice.start()
        rtcp_path = None
        if not remote.rtcp_mux and ice.agent.components > 1:
            rtcp_path = ice.transport(2)
        self._paths = (ice.transport(1), rtcp_path)
        # the first frame goes out when the media starts: start it when a pair can carry it
        # (else it waits for the next 20 ms tick of the source's clock)
        await self._until_ice_connected(usable=True)
        self._start_media(*self._paths)
        await self._until_ice_connected()
        selected = ice.transport(1).selected
        if selected is not None:
            lc, rc = selected
            self.progress(
                f"connected via {lc.type.value}/{rc.type.value} pair "
                f"{_addr(lc)} -> {_addr(rc)} in {self._connect_ms():.0f} ms"
            )
        if ice.agent.controlling:
            self.selected_offer = asyncio.ensure_future(self._offer_selected_candidates())

    async def _until_ice_connected(self, *, usable: bool = False) -> None:
        """Wait for ICE to complete, or with ``usable`` only until the RTP component can
        send (a valid pair, RFC 8445 §12.1); a peer that hangs up meanwhile ends the wait
        (its reason becomes ours: remote-bye, remote-cancel ...)."""
        assert self.ice is not None and self.sip is not None
        timeout = self.options.ice_timeout
        # the RTP component only: RTCP (component 2 without rtcp-mux) is not waited for
        wait = self.ice.usable(timeout, component=1) if usable else self.ice.connected(timeout)
        connected: asyncio.Future[Any] = asyncio.ensure_future(wait)
        ended: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(self.sip.ended))
        try:
            await asyncio.wait({connected, ended}, return_when=FIRST_COMPLETED)
        finally:
            ended.cancel()
            if not connected.done():
                connected.cancel()
        if connected.done():
            connected.result()  # IceError: failed or timed out
            return
        reason = self.sip.ended.result() if not self.sip.ended.cancelled() else "ended"
        raise CallFailed(f"the peer ended the call during ICE ({reason})", kind=reason)

    def _connect_ms(self) -> float:
        if self.ice is None or self.ice.connect_time is None:
            return 0.0
        return self.ice.connect_time * 1000

    def _new_session(self, remote: RemoteMedia) -> RtpSession:
        """A media session (RTP/RTCP state, codec) for the negotiated ``remote`` media."""
        return RtpSession(
            remote.codec,
            telephone_event=remote.session_telephone_event(),
            rtcp_mux=remote.rtcp_mux,
            channels=1,
            ptime_ms=remote.ptime_ms,
            receive_codecs=remote.receive_codecs,
            rtcp_interval=self.options.rtcp_interval,
            ntp_offset=time.time() - time.monotonic(),
            now=time.monotonic(),
        )

    def _start_media(
        self,
        rtp_path: Any,
        rtcp_path: Any,
        session: RtpSession | None = None,
        remote: RemoteMedia | None = None,
    ) -> None:
        """A media session for the negotiated codec on the given paths (or ``session``, made
        for ``remote`` already); the audio source and sink are opened by the first one and
        kept across codec changes."""
        remote = remote or self.remote
        assert remote is not None
        if session is None:
            session = self._new_session(remote)
        try:
            source, sink = self._audio_ends(session)
            if self._gate is None:
                self._gate = _SendGate(rtp_path, self._reports)
                self._gate.paused = not self._sends  # e.g. answered recvonly
                if rtcp_path is not None:
                    self._rtcp_gate = _SendGate(rtcp_path, self._reports)
            self.stream = MediaStream(
                session,
                self._gate,
                source,
                sink,
                rtcp_transport=self._rtcp_gate,
                on_event=self._on_media,
            )
            self.stream.start()
        except (RuntimeError, OSError, ValueError) as exc:  # media.audio.AudioDeviceError ...
            raise CallFailed(f"audio: {exc}", kind="audio-failed") from exc
        self._media_key = _media_key(remote)
        self.progress(f"media: {remote.codec_name}, {remote.ptime_ms} ms packets")

    def _audio_ends(self, session: RtpSession) -> tuple[Any, Any]:
        """The source and sink for ``session``: opened at its rate and frame size the first
        time; later sessions (a codec change) reuse them through resampling adapters, so a
        WAV file being played or recorded goes on where it was. A new frame duration (ptime)
        reopens them."""
        rate, samples = session.sample_rate, session.frame_samples
        if self._ends is not None and self._ends[0].frame_s != samples / rate:
            self._close_audio_ends()
        if self._ends is None:
            source = _MuteSwitch(
                open_source(self.options.play, rate, samples, device=self.options.input_device)
            )
            try:
                sink = open_sink(
                    self.options.record, rate, samples, device=self.options.output_device
                )
            except BaseException:
                source.close()
                raise
            self._mute = source
            self._ends = (_Device(source, self._reopen_source), _Device(sink, self._reopen_sink))
        assert self._mute is not None
        self._mute.muted = self.muted or self.held
        source_dev, sink_dev = self._ends
        return _KeptSource(source_dev, rate, samples), _kept_sink(sink_dev, rate, samples)

    def _close_audio_ends(self) -> None:
        if self._ends is not None:
            for end in self._ends:
                with contextlib.suppress(Exception):
                    end.close()
            self._ends = None

    def _reopen_source(self, old: Any, rate: int, samples: int) -> Any:
        """The call's source (``--play``) at another rate: a file or tone source goes on with
        the same pacer (the send clock does not jump; :func:`_catch_up` moves a file to where
        the old one was), a microphone opens a new capture stream (media.audio captures at
        the device's rate and converts to ours)."""
        pacer = getattr(old, "pacer", None)
        return open_source(
            self.options.play, rate, samples, device=self.options.input_device,
            pacer=pacer if isinstance(pacer, Pacer) else None,
        )  # fmt: skip

    def _reopen_sink(self, old: Any, rate: int, samples: int) -> Any:
        """The call's sink (``--record``) at another rate; None for a WAV recording (its
        rate is in the file's header: it stays at the rate it was opened at)."""
        spec = parse_sink(self.options.record)
        if spec.kind == "wav":
            return None
        return open_sink(spec, rate, samples, device=self.options.output_device)

    async def _reopen_ends(self, session: RtpSession) -> list[tuple[_Device, Any]]:
        """The audio ends at the rate of the coming ``session``, for the devices that work at
        another rate and can be reopened: opened (and started, in a worker thread: opening a
        sound device blocks) while the running session still uses the old ones, so the
        switch leaves no gap. A device that cannot work at the new rate (a tone above its
        Nyquist frequency, a sound card that refuses it) is kept and resampled."""
        ends = self._ends
        rate, samples = session.sample_rate, session.frame_samples
        if ends is None or ends[0].frame_s != samples / rate:
            return []  # a new frame duration: _audio_ends opens everything anew
        todo = [d for d in ends if d.reopen is not None and d.sample_rate != rate]
        if not todo:
            return []

        def open_all() -> list[tuple[_Device, Any]]:
            opened = []
            for device in todo:
                assert device.reopen is not None
                try:
                    new = device.reopen(device.inner, rate, samples)
                    if new is not None and device.started:
                        new.start()
                except (RuntimeError, OSError, ValueError) as exc:  # AudioDeviceError ...
                    log.info("keeping %r at %d Hz (resampled): %s", device.inner, rate, exc)
                    continue
                if new is not None:
                    opened.append((device, new))
            return opened

        return await asyncio.to_thread(open_all)

    async def _switch_media(self) -> None:
        """A new negotiation changed the codec (or its payload types or packet time): stop
        the running session (RTCP BYE for its SSRC, RFC 3550 §6.6: the new session has its
        own SSRC and clock, as RFC 7160 §4.1 advises for another clock rate) and start one
        for the new codec on the same paths, source and sink. The call goes on.

        When the new codec has another clock (PCMU 8 kHz <-> Opus 48 kHz) the microphone and
        speaker (and a tone or file source) are reopened at the new rate beforehand
        (:meth:`_reopen_ends`), so Opus after PCMU is wideband from the capture on and PCMU
        after Opus does not capture at 48 kHz to throw most of it away; a WAV recording
        keeps its rate (resampled into it)."""
        async with self._switch_lock:
            old = self.stream
            remote = self.remote
            if old is None or remote is None or self._closed:
                return
            if _media_key(remote) == self._media_key:
                return
            was = old.session.codec
            while True:
                session = self._new_session(remote)
                prepared = await self._reopen_ends(session)
                latest = self.remote
                if self._closed or latest is None or _media_key(latest) == _media_key(remote):
                    break
                for _, new in prepared:  # renegotiated meanwhile: for that codec instead
                    _close_quietly(new)
                remote = latest
            if self._closed:
                for _, new in prepared:
                    _close_quietly(new)
                return
            stats = await old.stop("codec change")
            self._earlier_stats.append(stats)
            if self._closed or self._ends is None:
                for _, new in prepared:
                    _close_quietly(new)
                return
            sink_device = self._ends[1]
            for device, new in prepared:
                _catch_up(new, device.inner)
                device.replace(new, linger=_SINK_LINGER_S if device is sink_device else 0.0)
                log.info("audio %s reopened at %d Hz", new, new.sample_rate)
            try:
                self._start_media(*self._paths, session, remote)
            except CallFailed as exc:  # the audio ends cannot work at the new rate
                self.progress(f"cannot switch to {remote.codec_name}: {exc.reason}")
                await self._teardown(exc.kind, send_bye=True)
                return
            self.progress(f"codec changed: {was} -> {remote.codec_name}")

    def _on_media(self, event: SessionEvent) -> None:
        if isinstance(event, DtmfReceived) and event.digit is not None:
            self.dtmf_received.append(event.digit)
            self.progress(f"DTMF {event.digit} received")

    # -- offers during the call (re-INVITE / UPDATE) -------------------------------------------

    def _handle_reoffers(self) -> None:
        """Answer the peer's re-offers (hold, a new address) through our offer/answer state,
        RFC 3264 §8; other calls on the user agent keep the previous handler."""
        assert self.sip is not None
        core = self.sip.call
        config = self.ua.config
        previous = config.offer_handler

        def handler(call: Any, offer: bytes, content_type: str | None) -> bytes:
            if call is core and not self._closed:
                answer = self._answer_reoffer(offer)
                if answer is not None:
                    return answer
            if previous is not None:
                return previous(call, offer, content_type)
            local: bytes = call.local_sdp
            return local

        config.offer_handler = handler
        previous_reoffer = config.reoffer_handler
        previous_answer = config.answer_handler

        def reoffer(call: Any) -> bytes:
            if call is core and not self._closed:
                offer = self._offer_in_2xx()
                if offer is not None:
                    return offer
            if previous_reoffer is not None:
                return previous_reoffer(call)
            local: bytes = call.local_sdp
            return local

        def take_answer(call: Any, answer: bytes, content_type: str | None) -> None:
            if call is core:
                if not self._closed:
                    self._take_ack_answer(answer)
            elif previous_answer is not None:
                previous_answer(call, answer, content_type)

        config.reoffer_handler = reoffer
        config.answer_handler = take_answer

        def restore() -> None:
            if config.offer_handler is handler:
                config.offer_handler = previous
            if config.reoffer_handler is reoffer:
                config.reoffer_handler = previous_reoffer
            if config.answer_handler is take_answer:
                config.answer_handler = previous_answer

        self._restore_offer_handler = restore
        if self._info_receiver is None:
            self._info_receiver = asyncio.ensure_future(self._receive_info_digits())

    def _answer_reoffer(self, offer: bytes) -> bytes | None:
        """Our answer to a re-offer, with its effect applied to the media (None: keep the
        previous description, e.g. when the offer cannot be used)."""
        if self.oa is None:
            if self.late_offer and self._late_transport is not None:
                return self._answer_late_offer(offer)
            return None
        try:
            if not self._follow_ice_restart(offer):
                # RFC 8839 §4.4.3.2 (same ufrag/pwd: no restart, RFC 8445 §9): once ICE has
                # completed our answer's default destination is the selected pair's local
                # candidate, and the checks go on untouched.
                self._default_to_selected(remote_candidates=False)
            answer, negotiation = self.oa.process_offer(offer)
            audio = negotiation.audio
            remote = read_negotiation(audio) if audio is not None else None
        except ValueError as exc:  # OfferAnswerError, SdpGlueError, SdpParseError, IceSdpError
            log.warning("cannot answer the re-offer: %s", exc)
            with contextlib.suppress(OfferAnswerError):
                self.oa.reject_offer()
            return None
        if remote is not None and audio is not None:
            self._apply_negotiation(remote, audio.direction.receives, audio.direction.sends)
        return answer.to_bytes()

    def _offer_in_2xx(self) -> bytes | None:
        """Our offer for the 2xx to the peer's re-INVITE without SDP (RFC 3261 §14.2, RFC 3264
        §8): the current description, ``o=`` version unchanged unless something changed (the
        selected pair's candidate as the default, RFC 8839 §4.4.3.2). None: keep the SIP
        layer's previous description (no offer/answer state yet, or an offer outstanding)."""
        oa = self.oa
        if oa is None:
            return None
        self._default_to_selected(remote_candidates=False)
        try:
            return oa.create_offer().to_bytes()
        except ValueError as exc:  # an offer of ours is outstanding (UPDATE)
            log.warning("cannot offer in the 2xx to the re-INVITE: %s", exc)
            return None

    def _take_ack_answer(self, answer: bytes) -> None:
        """The ACK's answer to our offer in the 2xx: hold, a new address, a codec change or
        new ICE credentials apply as for any answer. ValueError (the SIP layer then ends the
        call with BYE, RFC 3261 §13.3.1.4) when unusable."""
        oa = self.oa
        if oa is None or oa.state is not OfferAnswerState.OFFER_SENT:
            return  # the SIP layer's previous description was offered: nothing to apply
        try:
            negotiation = oa.process_answer(answer)
            audio = negotiation.audio
            if audio is None:
                raise SdpGlueError("the answer accepted no audio stream")
            remote = read_negotiation(audio)
        except ValueError as exc:  # OfferAnswerError, SdpGlueError, SdpParseError ...
            log.warning("unusable answer in the ACK: %s", exc)
            with contextlib.suppress(OfferAnswerError):
                oa.cancel_offer()
            self.progress(f"unusable answer in the ACK: {exc}")
            raise
        self._follow_answer_ice(remote)
        self._apply_negotiation(remote, audio.direction.receives, audio.direction.sends)

    def _follow_answer_ice(self, new: RemoteMedia) -> None:
        """New ICE credentials in an answer: the peer restarted its side (RFC 8445 §9); the
        agent checks against its new candidates."""
        ice, old = self.ice, self.remote
        if ice is None or old is None or old.ice is None or new.ice is None:
            return
        params = new.ice.parameters
        if params is None or (params.ufrag, params.pwd) == (old.ice.ufrag, old.ice.pwd):
            return
        components = 1 if new.rtcp_mux else ice.agent.components
        ice.set_remote(
            params.ufrag,
            params.pwd,
            [c for c in new.ice.candidates if c.component <= components],
            lite=params.lite,
            pacing_ms=params.pacing_ms,
        )
        self.progress("the peer restarted ICE")

    def _answer_late_offer(self, offer: bytes) -> bytes:
        """Our INVITE had no SDP: the 2xx carries the offer, answered in the ACK (RFC 3261
        §13.2.1, RFC 3264 §6). The candidates were gathered before the INVITE (the answer is
        built synchronously here); with rtcp-mux offered only the RTP component's are
        signalled. A peer without ICE is reached from our default candidate. A failure
        leaves the ACK without a body; :meth:`dial` then hangs up."""
        local = self._late_transport
        assert local is not None
        try:
            info = inspect_offer(offer)
            if self.ice is not None and local.ice is not None:
                components = 1 if info.rtcp_mux else self.ice.agent.components
                candidates = [c for c in local.candidates if c.component <= components]
                local = self._ice_transport(candidates, components)
                local.mismatch = info.mismatch
                local.announce = info.ice is not None
            self.oa = new_offer_answer(local_media(self.account.codecs, local), local)
            answer, negotiation = self.oa.process_offer(offer)
            audio = negotiation.audio
            if audio is None:
                raise SdpGlueError("no common codec")
            remote = read_negotiation(audio)
        except ValueError as exc:  # OfferAnswerError, SdpGlueError, SdpParseError ...
            log.warning("cannot answer the offer in the 2xx: %s", exc)
            self._late_error = str(exc)
            return b""
        if info.mismatch:  # answered with a=ice-mismatch: no ICE (RFC 8839 §5.1)
            remote = dataclasses.replace(remote, ice=None)
        self.remote = remote
        self._sends, self._receives = audio.direction.sends, audio.direction.receives
        self._late_transport = local
        return answer.to_bytes()

    def _follow_ice_restart(self, offer: bytes) -> bool:
        """New ICE credentials in a re-offer are the peer's ICE restart (RFC 8445 §9): the
        agent restarts with the peer's new candidates, and our answer carries our new
        credentials (RFC 8839 §4.4.1.1.1). Media stays on the old pair until a new one is
        nominated."""
        ice, old = self.ice, self.remote
        if ice is None or old is None or old.ice is None or self.oa is None:
            return False
        info = inspect_offer(offer)
        if info.ice is None or (info.ice.ufrag, info.ice.pwd) == (old.ice.ufrag, old.ice.pwd):
            return False
        params = info.ice.parameters
        assert params is not None
        components = ice.agent.components
        candidates = [c for c in info.ice.candidates if c.component <= components]
        ice.set_remote(
            params.ufrag, params.pwd, candidates, lite=params.lite, pacing_ms=params.pacing_ms
        )
        ours = self._ice_transport(ice.local_candidates, components)
        media = self.oa.media[0]
        media.attributes = local_media(self.account.codecs, ours).attributes
        media.address, media.port = ours.address, ours.port
        if ours.rtcp is not None:
            media.rtcp_address, media.rtcp_port = ours.rtcp
        self.progress("the peer restarted ICE")
        return True

    def _default_to_selected(self, *, remote_candidates: bool) -> bool:
        """Put the selected pairs' local candidates in ``c=``/``m=`` (and ``a=rtcp``) of our
        descriptions; with ``remote_candidates`` (the controlling agent's offer) add
        ``a=remote-candidates`` naming the selected remote candidates (RFC 8839 §4.4.1.2.2,
        §5.2). True when the default moved (the peer may send media to the default, so it
        needs to be told, RFC 8839 §4.4.1.2)."""
        ice, remote = self.ice, self.remote
        if ice is None or remote is None or remote.ice is None or self.oa is None:
            return False
        components = 1 if remote.rtcp_mux else ice.agent.components
        pairs = [ice.transport(c).selected for c in range(1, components + 1)]
        if any(p is None for p in pairs):
            return False
        media = self.oa.media[0]
        rtp_local = pairs[0][0].transport_address  # type: ignore[index]
        moved = (media.address, media.port) != rtp_local
        media.address, media.port = rtp_local
        if components > 1:
            rtcp_local = pairs[1][0].transport_address  # type: ignore[index]
            moved = moved or (media.rtcp_address, media.rtcp_port) != rtcp_local
            media.rtcp_address, media.rtcp_port = rtcp_local
        media.attributes = [a for a in media.attributes if a.name != "remote-candidates"]
        if remote_candidates:
            named = [
                RemoteCandidate(c + 1, *p[1].transport_address)  # type: ignore[index]
                for c, p in enumerate(pairs)
            ]
            media.attributes.append(Attribute("remote-candidates", format_remote_candidates(named)))
        return moved

    async def _offer_selected_candidates(self) -> str | None:
        """As the controlling agent, once ICE completed: when the selected pair is not the
        default we signalled, send the updated offer (same credentials, the selected local
        candidate in c=/m=, ``a=remote-candidates``; RFC 8839 §4.4.1.2) so a peer that sends
        to the default (pjsua, Asterisk) follows. By UPDATE when the peer allows it, else by
        re-INVITE once the dialog is confirmed. Returns the method used (None: not needed or
        not possible)."""
        if not self._default_to_selected(remote_candidates=True):
            self._drop_remote_candidates()
            return None
        sip, oa = self.sip, self.oa
        assert sip is not None and oa is not None
        method = "UPDATE" if sip.call.allows("UPDATE") else "INVITE"
        try:
            if method == "INVITE":
                await asyncio.wait_for(asyncio.shield(sip.confirmed), 40.0)
            offer = oa.create_offer().to_bytes()
            send = sip.update if method == "UPDATE" else sip.reinvite
            answer = await send(offer, timeout=32.0)
            if answer is not None:
                oa.process_answer(answer)
            else:
                oa.cancel_offer()
        except (CallError, TimeoutError, ValueError) as exc:
            log.info("updated offer with the selected candidates: %r", exc)
            with contextlib.suppress(OfferAnswerError):
                oa.cancel_offer()
            return None
        self.progress(f"sent the selected candidates to the peer ({method})")
        return method

    def _drop_remote_candidates(self) -> None:
        if self.oa is not None:
            media = self.oa.media[0]
            media.attributes = [a for a in media.attributes if a.name != "remote-candidates"]

    def _apply_negotiation(self, remote: RemoteMedia, receives: bool, sends: bool) -> None:
        """A new negotiation during the call (a re-offer from the peer, or the answer to
        ours): follow holds, a new address and a codec change."""
        old = self.remote
        self.remote = remote
        self._sends, self._receives = sends, receives
        hold = not sends  # the peer does not want our media (sendonly/inactive, RFC 3264 §8.4)
        if hold != self.on_hold:
            self.on_hold = hold
            if self._gate is not None:
                self._gate.paused = hold
            self.progress("on hold by the peer" if hold else "resumed by the peer")
        if old is None:
            return
        if self.stream is not None and _media_key(remote) != self._media_key:
            # RFC 3264 §8.3.2: a new codec list or order in a re-offer/answer applies to the
            # running stream; the session is replaced without ending the call
            if self._switching is None or self._switching.done():
                self._switching = asyncio.ensure_future(self._switch_media())
            else:  # one in progress re-checks the key when done
                self._switching.add_done_callback(
                    lambda _: None if self._closed else self._schedule_switch()
                )
        rtp_path, rtcp_path = self._paths
        if remote.rtp != old.rtp and isinstance(rtp_path, (UdpTransport, _DefaultCandidatePath)):
            self.progress(f"the peer moved its media to {_addr2(remote.rtp)}")
            rtp_path.remote = remote.rtp
            if isinstance(rtcp_path, UdpTransport):
                rtcp_path.remote = remote.rtcp

    def _schedule_switch(self) -> None:
        if self._switching is None or self._switching.done():
            self._switching = asyncio.ensure_future(self._switch_media())

    # -- during the call ----------------------------------------------------------------------

    def mute(self, on: bool = True) -> None:
        """Mute (or unmute) what we send: silence goes out in place of the source, RTP does
        not stop."""
        self.muted = on
        if self._mute is not None:
            self._mute.muted = on or self.held
        self.progress("muted" if on else "unmuted")

    async def hold(self) -> bool:
        """Put the peer on hold by re-INVITE (``a=sendonly``, or ``a=inactive`` when it holds
        us too; RFC 3264 §8.4, RFC 6337): we send silence (nothing when inactive) and expect
        nothing. False when the re-INVITE failed (the call stays as it was)."""
        return await self._hold(True)

    async def resume(self) -> bool:
        """Take the peer off hold by re-INVITE (back to ``a=sendrecv``)."""
        return await self._hold(False)

    async def _hold(self, hold: bool) -> bool:
        sip, oa = self.sip, self.oa
        if sip is None or oa is None or self._closed or not self.answered:
            return False
        try:
            offer = (oa.hold() if hold else oa.resume()).to_bytes()
        except ValueError as exc:  # an offer of ours is outstanding
            log.info("cannot %s now: %s", "hold" if hold else "resume", exc)
            return False
        try:
            answer = await sip.reinvite(offer, timeout=32.0)
            negotiation = oa.process_answer(answer or b"")
        except (CallError, TimeoutError, ValueError) as exc:
            log.info("%s re-INVITE failed: %r", "hold" if hold else "resume", exc)
            with contextlib.suppress(OfferAnswerError):
                oa.cancel_offer()
            oa.on_hold = not hold
            return False
        audio = negotiation.audio
        if audio is not None:
            self._sends, self._receives = audio.direction.sends, audio.direction.receives
        self.held = hold
        if self._gate is not None:
            self._gate.paused = not self._sends
        if self._mute is not None:
            self._mute.muted = self.muted or hold
        self.progress("holding the peer" if hold else "resumed the call")
        return True

    async def change_codecs(self, codecs: Sequence[str], *, method: str = "INVITE") -> bool:
        """Re-offer with another codec list or order (re-INVITE, or ``method="UPDATE"``,
        RFC 3311; RFC 3264 §8.3.2: a new list in a re-offer changes the media format) and
        switch the running stream to the codec the answer picks, without ending the call
        (:meth:`_switch_media`). False when the re-offer failed (the call stays as it
        was)."""
        sip, oa = self.sip, self.oa
        if sip is None or oa is None or self._closed or not self.answered:
            return False
        media = oa.media[0]
        previous = media.codecs
        media.codecs = audio_codecs(codecs)  # SdpGlueError for an unknown name
        try:
            offer = oa.create_offer().to_bytes()
        except ValueError as exc:  # an offer of ours is outstanding
            media.codecs = previous
            log.info("cannot change codecs now: %s", exc)
            return False
        self.progress(f"offering {', '.join(codecs)} ({method})")
        try:
            remote, audio = await self._reoffer(offer, method)
        except (CallError, TimeoutError, ValueError) as exc:
            log.info("codec change re-INVITE failed: %r", exc)
            media.codecs = previous
            return False
        self._apply_negotiation(remote, audio.direction.receives, audio.direction.sends)
        await self.media_settled()
        return True

    async def media_settled(self) -> None:
        """Wait until a media change in progress (a codec switch) is done."""
        while self._switching is not None and not self._switching.done():
            await asyncio.shield(self._switching)

    async def _reoffer(self, offer: bytes, method: str) -> tuple[RemoteMedia, NegotiatedMedia]:
        """Send our re-offer in an UPDATE or a re-INVITE (RFC 3311, RFC 3261 §14.1) and read the
        answer's audio stream. On failure (CallError, TimeoutError, ValueError: no answer, an
        unusable answer, no audio accepted) the offer is withdrawn and the error raised."""
        sip, oa = self.sip, self.oa
        assert sip is not None and oa is not None
        try:
            send = sip.update if method == "UPDATE" else sip.reinvite
            answer = await send(offer, timeout=32.0)
            audio = oa.process_answer(answer or b"").audio
            if audio is None:
                raise SdpGlueError("the answer accepted no audio stream")
            return read_negotiation(audio), audio
        except (CallError, TimeoutError, ValueError):
            with contextlib.suppress(OfferAnswerError):
                oa.cancel_offer()
            raise

    async def restart_ice(
        self, timeout: float | None = None, method: str = "INVITE", *, regather: bool = False
    ) -> bool:
        """Restart ICE ourselves (RFC 8445 §9, RFC 8839 §4.4.1.1.1): new ufrag/pwd and our
        candidates in a re-offer, by re-INVITE (the default, which every peer takes) or, with
        ``method="UPDATE"``, by UPDATE when the peer allows it (else re-INVITE); the answer's
        new credentials and candidates restart the peer's side, and new checks run. Media
        stays on the current pair until the new checks nominate one (the agent keeps the
        selected pairs through a restart). True when the new checks completed in time.

        ``regather``: candidates are gathered anew on the addresses there are now (a new ICE
        connection, which replaces the old one once a pair of its is valid), for a restart
        after a local address change (:meth:`network_changed`)."""
        if method not in ("INVITE", "UPDATE"):
            raise ValueError(f"an ICE restart goes by INVITE or UPDATE, not {method!r}")
        sip, oa, ice, remote = self.sip, self.oa, self.ice, self.remote
        if (
            sip is None
            or oa is None
            or ice is None
            or remote is None
            or remote.ice is None
            or self._closed
            or not self.answered
        ):
            return False
        if oa.state is OfferAnswerState.OFFER_SENT:
            log.info("cannot restart ICE now: an offer of ours is outstanding")
            return False
        components = 1 if remote.rtcp_mux else ice.agent.components
        timeout = self.options.ice_timeout if timeout is None else timeout
        if regather:
            return await self._restart_regathered(ice, components, timeout, method)
        ice.restart()
        self._signal_local_ice(components)
        offer = oa.create_offer().to_bytes()
        if method == "UPDATE" and not sip.call.allows("UPDATE"):
            method = "INVITE"
        self.progress(f"restarting ICE ({method})")
        try:
            new, audio = await self._reoffer(offer, method)
            if new.ice is None or new.ice.parameters is None:
                raise SdpGlueError("the answer to our ICE restart has no ICE")
        except (CallError, TimeoutError, ValueError) as exc:
            log.info("ICE restart: %r", exc)
            self.progress(f"ICE restart failed: {exc}")
            return False
        self._set_remote_ice(ice, new, components)
        self._apply_negotiation(new, audio.direction.receives, audio.direction.sends)
        try:
            await ice.connect(timeout)
        except IceError as exc:
            self.progress(f"ICE restart did not complete: {exc}")
            return False
        self._restarted_progress(ice)
        return True

    def _set_remote_ice(self, ice: IceConnection, new: RemoteMedia, components: int) -> None:
        assert new.ice is not None and new.ice.parameters is not None
        params = new.ice.parameters
        ice.set_remote(
            params.ufrag,
            params.pwd,
            [c for c in new.ice.candidates if c.component <= components],
            lite=params.lite,
            pacing_ms=params.pacing_ms,
        )

    def _restarted_progress(self, ice: IceConnection) -> None:
        selected = ice.transport(1).selected
        if selected is not None:
            lc, rc = selected
            self.progress(
                f"ICE restarted: {lc.type.value}/{rc.type.value} pair {_addr(lc)} -> {_addr(rc)}"
            )

    async def _restart_regathered(
        self, old: IceConnection, components: int, timeout: float, method: str
    ) -> bool:
        """:meth:`restart_ice` with candidates gathered anew: a new connection (same role,
        RFC 8445 §9 keeps it) gathers on today's addresses, its credentials and candidates go
        in the re-offer, and the media moves to it as soon as one of its pairs is valid
        (RFC 8445 §12.1); until then, and until the old connection is closed, whatever still
        arrives on the old pairs is played too."""
        sip, oa = self.sip, self.oa
        assert sip is not None and oa is not None
        try:
            new, _ = await self._new_ice(old.agent.controlling, components)
        except (OSError, ValueError) as exc:
            self.progress(f"ICE restart failed: {exc}")
            return False
        self._retired_ice.append(old)
        self.ice = new
        try:
            candidates = await new.gather(self.options.gather_timeout)
            if not candidates:
                raise IceError("no candidates on the addresses there are now")
            if self._closed:
                return False
            self._signal_local_ice(components)
            offer = oa.create_offer().to_bytes()
            if method == "UPDATE" and not sip.call.allows("UPDATE"):
                method = "INVITE"
            self.progress(f"restarting ICE ({method}, {len(candidates)} new candidates)")
            answer, audio = await self._reoffer(offer, method)
            if answer.ice is None or answer.ice.parameters is None:
                raise SdpGlueError("the answer to our ICE restart has no ICE")
        except (CallError, TimeoutError, ValueError, OSError, IceError) as exc:
            log.info("ICE restart with new candidates: %r", exc)
            if not self._closed:
                self.progress(f"ICE restart failed: {exc}")
                self.ice = old  # the old connection goes on as it was
                self._retired_ice.remove(old)
                self._signal_local_ice(components)  # its credentials in our next offers
            with contextlib.suppress(Exception):
                await new.close()
            return False
        self._set_remote_ice(new, answer, components)
        self._apply_negotiation(answer, audio.direction.receives, audio.direction.sends)
        new.start()
        try:
            await new.usable(timeout, component=1)
        except IceError as exc:
            # media stays on the old pairs while they last (closed at the hang-up)
            self.progress(f"ICE restart did not complete: {exc}")
            return False
        self._move_media(new, answer)
        try:
            await new.connected(timeout)
        except IceError as exc:
            self.progress(f"ICE restart did not complete: {exc}")
            return False
        # nominated: the peer sends on the new pairs now (RFC 8445 §8.1.2)
        if old in self._retired_ice:
            self._retired_ice.remove(old)
            with contextlib.suppress(Exception):
                await old.close()
        self._restarted_progress(new)
        return True

    def _move_media(self, new: IceConnection, remote: RemoteMedia) -> None:
        """Send the media on ``new``'s pairs (a connection that replaced ours): the gates
        keep their switches and counters, only their paths change."""
        rtcp = None
        if not remote.rtcp_mux and new.agent.components > 1:
            rtcp = new.transport(2)
        self._paths = (new.transport(1), rtcp)
        if self._gate is not None:
            self._gate.repath(new.transport(1))
        if self._rtcp_gate is not None and rtcp is not None:
            self._rtcp_gate.repath(rtcp)

    # -- network changes ----------------------------------------------------------------------

    def _watch_network(self) -> None:
        """Listen to local address changes while the call is up (from the answer on; the
        listener is removed at the hang-up)."""
        monitor = self.monitor
        if monitor is None and self.pool is not None:
            monitor = getattr(self.pool, "monitor", None)
        if monitor is None or self._unwatch is not None or self._closed:
            return
        self._unwatch = monitor.add_listener(self.network_changed)

    def _unwatch_network(self) -> None:
        unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
        task = self._network_task
        if task is not None and not task.done():
            task.cancel()

    def network_changed(self, changes: Sequence[AddressChange]) -> None:
        """The local addresses changed (an :class:`ice.netmonitor.AddressMonitor` listener).

        With ICE the call restarts it (RFC 8445 §9, candidates gathered anew) when the
        address media goes from (the base of the selected pair's local candidate; for a
        relayed one, any address we gathered on) went away, or when an address appeared
        while media goes through a relay or no pair works (a direct path may exist now).
        With a peer without ICE, when our default candidate's address went away, a
        re-INVITE carries a new one (gathered anew); without ICE at all, when the address in
        our ``c=`` went away, a re-INVITE moves it to one there is now. Debounced
        (``MediaOptions.network_settle``): one restart for a burst, and changes during a
        restart lead to one more at most."""
        if self._closed or not self.answered:
            return
        for change in changes:  # newest first: where a media address may move to
            host = _normal_ip(change.host)
            if host in self._new_addresses:
                self._new_addresses.remove(host)
            if change.added and not change.deprecated:
                self._new_addresses.insert(0, host)
            if change.added:
                self._gone_addresses.discard(host)
            else:
                self._gone_addresses.add(host)
        why = self._network_reason(changes)
        if why is None:
            return
        log.info("network changed: %s", why)
        loop = asyncio.get_running_loop()
        self._network_due = loop.time() + self.options.network_settle
        task = self._network_task
        if task is None or task.done():
            self._network_task = asyncio.ensure_future(self._follow_network())
        else:
            self._network_again = True

    def _network_reason(self, changes: Sequence[AddressChange]) -> str | None:
        """Why ``changes`` need a restart (see :meth:`network_changed`), or None. An address
        that went away in an earlier batch counts as gone too (a restart then may have found
        no address to gather on: the next change, a new address, tries again)."""
        gone = {_normal_ip(c.host) for c in changes if not c.added} | self._gone_addresses
        new = [c.host for c in changes if c.added and not c.deprecated]
        ice, remote = self.ice, self.remote
        if ice is not None and remote is not None and remote.ice is not None:
            pair = ice.agent.data_pair(1)
            dead = ice.agent.selected_pair(1) is not None and not ice.agent.has_consent(1)
            gathered = {_normal_ip(a[0]) for a in ice.gatherer.local_addresses} & gone
            if pair is None or dead:  # (also while a restart's new checks run)
                if gathered:
                    return f"address {min(gathered)} went away (no working pair)"
                return f"no working pair, new address {new[0]}" if new else None
            if pair.local.candidate.type is CandidateType.RELAYED:
                if gathered:
                    return f"address {min(gathered)} went away (relayed pair)"
                return f"relayed pair, new address {new[0]}" if new else None
            local = _normal_ip(pair.local.base[0])
            return f"address {local} of the selected pair went away" if local in gone else None
        path = self._paths[0]
        if ice is not None and isinstance(path, _DefaultCandidatePath):
            # our ICE, a peer without: media runs on our default candidate
            used = {_normal_ip(path.local[0])}
            if path.relayed:
                used = {_normal_ip(a[0]) for a in ice.gatherer.local_addresses}
            if used & gone:
                return f"address {min(used & gone)} of our default candidate went away"
            return None
        if self.ice is None and self._plain and self.oa is not None:
            ours = _normal_ip(self.oa.media[0].address)
            return f"our media address {ours} went away" if ours in gone else None
        return None

    async def _follow_network(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            while (wait := self._network_due - loop.time()) > 0:
                await asyncio.sleep(wait)
            self._network_again = False
            self.network_restarts += 1
            try:
                if isinstance(self._paths[0], _DefaultCandidatePath):
                    await self._new_default_candidate()
                elif self.ice is not None:
                    self.progress("network changed: restarting ICE")
                    await self.restart_ice(regather=True)
                else:
                    await self._readdress()
            except Exception:  # never let it end the call; the consent/media checks decide
                log.exception("following a network change")
            if not self._network_again:
                return
            self._network_due = max(self._network_due, loop.time() + self.options.network_settle)

    async def _new_default_candidate(self) -> bool:
        """Our ICE, a peer without (:class:`_DefaultCandidatePath`): candidates gathered anew
        on the addresses there are now, and a re-INVITE with the new default candidate in
        ``c=``/``m=`` (RFC 8839 §4.2.1.1: the peer sends there); the media moves to it once
        the peer has the offer."""
        old, remote, oa = self.ice, self.remote, self.oa
        if old is None or remote is None or oa is None or self.sip is None:
            return False
        components = 1 if remote.rtcp_mux else old.agent.components
        self.progress("network changed: new candidates for the peer without ICE")
        try:
            new, _ = await self._new_ice(old.agent.controlling, components)
        except (OSError, ValueError) as exc:
            self.progress(f"no new candidates: {exc}")
            return False
        try:
            candidates = await new.gather(self.options.gather_timeout)
            local = self._ice_transport(candidates, components)
            default = local.default_candidate
            if default is None or self._closed:
                raise IceError("no candidates on the addresses there are now")
            media = oa.media[0]
            previous = media.address, media.port, media.attributes
            media.attributes = local_media(self.account.codecs, local).attributes
            media.address, media.port = default.transport_address
            self.progress(f"network changed: re-INVITE with c={default.address}")
            try:
                answer, audio = await self._reoffer(oa.create_offer().to_bytes(), "INVITE")
            except (CallError, TimeoutError, ValueError):
                media.address, media.port, media.attributes = previous
                raise
        except (CallError, TimeoutError, ValueError, OSError, IceError) as exc:
            log.info("new default candidate: %r", exc)
            self.progress(f"re-INVITE with a new address failed: {exc}")
            with contextlib.suppress(Exception):
                await new.close()
            return False
        rtp: Any = _DefaultCandidatePath(new, default, answer.rtp)
        rtcp: Any = None
        rtcp_default = choose_default_candidate(local.candidates, 2)
        if not answer.rtcp_mux and rtcp_default is not None:
            rtcp = _DefaultCandidatePath(new, rtcp_default, answer.rtcp)
        self.ice = new
        self._paths = (rtp, rtcp)
        if self._gate is not None:
            self._gate.repath(rtp)
        if self._rtcp_gate is not None and rtcp is not None:
            self._rtcp_gate.repath(rtcp)
        self._apply_negotiation(answer, audio.direction.receives, audio.direction.sends)
        with contextlib.suppress(Exception):
            await old.close()
        self.progress(
            f"plain RTP {_addr2(rtp.local)} ({default.type.value}) <-> {_addr2(answer.rtp)}"
        )
        return True

    async def _readdress(self) -> bool:
        """Without ICE: a re-INVITE with an address we have now in ``c=`` (our sockets are
        bound to the wildcard address; one bound to the address that went away cannot
        move). False when there is none, or the peer refused."""
        oa, bind = self.oa, self.account.bind
        if oa is None or self.sip is None:
            return False
        if bind is not None and not ipaddress.ip_address(bind.host).is_unspecified:
            self.progress(f"network changed: media is bound to {bind.host}; cannot move it")
            return False
        media = oa.media[0]
        host = self._new_media_host(media.address)
        if host is None:
            self.progress("network changed: no address to move the media to")
            return False
        previous = media.address, media.rtcp_address
        media.address = host
        if media.rtcp_address is not None:
            media.rtcp_address = host
        self.progress(f"network changed: re-INVITE with c={host}")
        try:
            offer = oa.create_offer().to_bytes()
            remote, audio = await self._reoffer(offer, "INVITE")
        except (CallError, TimeoutError, ValueError) as exc:
            log.info("re-INVITE with a new address: %r", exc)
            media.address, media.rtcp_address = previous
            self.progress(f"re-INVITE with the new address failed: {exc}")
            return False
        self._apply_negotiation(remote, audio.direction.receives, audio.direction.sends)
        return True

    def _new_media_host(self, current: str) -> str | None:
        """An address of ours of ``current``'s family other than it: the latest that
        appeared during the call, else one of the interface table as it is now (a loopback
        one only when ``current`` was one)."""
        family6 = ":" in current
        loopback = ipaddress.ip_address(current).is_loopback
        try:
            table = [a.address for a in local_addresses(loopback=loopback)]
        except (OSError, ValueError) as exc:
            log.info("local addresses: %s", exc)
            table = []
        for address in (*self._new_addresses, *table):
            if (":" in address) == family6 and _normal_ip(address) != _normal_ip(current):
                return address
        return None

    def _signal_local_ice(self, components: int) -> None:
        """Our current ICE credentials and candidates into our next description (after a
        restart); ``c=``/``m=`` stay on a candidate we list (RFC 8839 §5.1), preferably the
        one media flows from."""
        ice, oa = self.ice, self.oa
        assert ice is not None and oa is not None
        candidates = [c for c in ice.local_candidates if c.component <= components]
        ours = self._ice_transport(candidates, components)
        media = oa.media[0]
        media.attributes = local_media(self.account.codecs, ours).attributes
        listed = {(c.component, c.transport_address) for c in candidates}
        if (1, (media.address, media.port)) not in listed:
            media.address, media.port = ours.address, ours.port
        if components > 1 and ours.rtcp is not None:
            if (2, (media.rtcp_address, media.rtcp_port)) not in listed:
                media.rtcp_address, media.rtcp_port = ours.rtcp

    def send_dtmf(self, digits: str) -> bool:
        """Send DTMF digits: RFC 4733 events in the RTP stream when telephone-event was
        negotiated at the audio's clock rate (:attr:`RemoteMedia.dtmf_in_band`), else SIP
        INFO with ``application/dtmf-relay`` (RFC 6086; what PBXs accept) unless the peer's
        Allow leaves INFO out. False when the digits cannot be sent."""
        remote = self.remote
        if self.stream is None or remote is None or self._closed:
            self.progress("cannot send DTMF: no media yet")
            return False
        digits = "".join(d for d in digits.upper() if d in DTMF_DIGITS)
        if not digits:
            return False
        if remote.dtmf_in_band:
            self.stream.send_dtmf(digits)
            self.progress(f"sending DTMF {digits}")
            return True
        sip = self.sip
        allow = None if sip is None else sip.call.remote_allow
        if sip is None or (allow is not None and "INFO" not in allow):
            if not self._dtmf_warned:
                self._dtmf_warned = True
                why = (
                    f"telephone-event only at {remote.telephone_event.clock_rate} Hz"
                    if remote.telephone_event is not None
                    else "no telephone-event"
                )
                log.warning("cannot send DTMF: %s and the peer takes no INFO", why)
                self.progress(f"cannot send DTMF: {why} and the peer takes no INFO")
            return False
        if remote.telephone_event is not None and not self._dtmf_warned:
            self._dtmf_warned = True
            log.info(
                "telephone-event at %d Hz, audio at %d Hz (RFC 4733 §2.1): DTMF by SIP INFO",
                remote.telephone_event.clock_rate,
                remote.codec.clock_rate,
            )
        self._info_digits.extend(digits)
        if self._info_sender is None or self._info_sender.done():
            self._info_sender = asyncio.ensure_future(self._send_info_digits())
        self.progress(f"sending DTMF {digits} (SIP INFO)")
        return True

    async def _send_info_digits(self) -> None:
        """One INFO per digit, spaced by its duration (RFC 6086; the ``dtmf-relay`` body
        PBXs understand: ``Signal=`` and ``Duration=`` in ms)."""
        sip = self.sip
        assert sip is not None
        while self._info_digits and not self._closed:
            digit = self._info_digits.pop(0)
            body = f"Signal={digit}\r\nDuration={INFO_DTMF_MS}\r\n".encode()
            try:
                sip.info(body, "application/dtmf-relay")
            except ValueError as exc:  # the dialog is not confirmed (yet), or over
                log.info("DTMF by INFO: %s", exc)
                self._info_digits.clear()
                return
            await asyncio.sleep((INFO_DTMF_MS + INFO_DTMF_GAP_MS) / 1000)

    async def _receive_info_digits(self) -> None:
        """DTMF from the peer's INFO requests (``application/dtmf-relay``: ``Signal=5``;
        ``application/dtmf``: ``5``), reported like RFC 4733 events."""
        sip = self.sip
        assert sip is not None
        while True:
            info = await sip.info_received.get()
            digit = parse_info_dtmf(info.body, info.content_type)
            if digit is not None:
                self.dtmf_received.append(digit)
                self.progress(f"DTMF {digit} received (SIP INFO)")

    async def run(
        self,
        duration: float | None = None,
        dtmf: str | None = None,
        stop: asyncio.Event | None = None,
    ) -> str:
        """Wait until the peer hangs up, ``duration`` seconds after the answer pass, or ``stop``
        is set; hang up (if we end it) and return the end reason."""
        assert self.sip is not None and self._answered_at is not None
        if dtmf:
            self.send_dtmf(dtmf)
        waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(asyncio.shield(self.sip.ended))}
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        if stopper is not None:
            waits.add(stopper)
        consent = asyncio.ensure_future(self._consent_lost())
        silence = asyncio.ensure_future(self._media_silent())
        waits |= {consent, silence}
        timeout = None
        if duration is not None:
            timeout = max(0.0, self._answered_at + duration - time.monotonic())
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in waits:
                fut.cancel()
        if self._closed:
            pass
        elif silence.done() and not silence.cancelled() and not self.sip.ended.done():
            self.progress(f"nothing received for {self.options.media_timeout:g} s; hanging up")
            await self._teardown("media-timeout", send_bye=True)
        elif consent.done() and not consent.cancelled() and not self.sip.ended.done():
            self.progress("ICE consent lost (RFC 7675): the peer is gone; hanging up")
            await self._teardown("ice-consent-lost", send_bye=True)
        elif self.sip.ended.done():
            reason = self.sip.ended.result() if not self.sip.ended.cancelled() else "ended"
            if reason == "session-expired":  # our BYE: no refresh came (RFC 4028 §10)
                self.progress("the session expired without a refresh; hung up")
            elif reason in ("no-answer", "bad-answer", "bad-offer"):
                # our BYE: a re-INVITE's offer/answer failed (RFC 3261 §13.3.1.4, §14)
                self.progress(f"re-INVITE offer/answer failed ({reason}); hung up")
            else:
                self.progress(f"the peer hung up ({reason})")
            await self._teardown(reason, send_bye=False)
        else:
            why = "duration reached" if stopper is None or not stopper.done() else "interrupted"
            self.progress(f"hanging up ({why})")
            await self._teardown("local-bye", send_bye=True)
        return self.end_reason or "local-bye"

    async def _consent_lost(self) -> None:
        """Returns when the selected pair lost consent (no answer to consent checks for
        ``consent_timeout``, RFC 7675 §5.1); never without ICE."""
        if self.ice is None or self.remote is None or self.remote.ice is None:
            await asyncio.Event().wait()
            return
        while True:
            ice = self.ice  # a restart for a network change replaces the connection
            while ice is self.ice and (
                ice.agent.has_consent(1) or ice.agent.selected_pair(1) is None
            ):
                await asyncio.sleep(0.25)
            if ice is not self.ice:
                continue
            network = self._network_task
            if network is not None and not network.done():
                await asyncio.wait({network})  # that restart is the one to wait for
                continue
            if not await self._restart_after_consent_loss():
                return

    async def _restart_after_consent_loss(self) -> bool:
        """Consent lost: before hanging up, one ICE restart of ours (:meth:`restart_ice`)
        within ``consent_restart`` seconds, in case only the path changed (a new address, a
        NAT binding gone) while signalling still works. True when a new pair has consent."""
        budget = self.options.consent_restart
        ice = self.ice
        if budget is None or ice is None or self._closed:
            return False
        self.progress("ICE consent lost (RFC 7675): trying an ICE restart")
        try:
            restarted = await asyncio.wait_for(self.restart_ice(timeout=budget), budget)
        except TimeoutError:
            restarted = False
        return restarted and ice.agent.has_consent(1)

    async def _media_silent(self) -> None:
        """Returns when the peer sent nothing (RTP or muxed RTCP) for ``media_timeout`` while
        not holding the call; never without a timeout."""
        timeout = self.options.media_timeout
        gate = self._gate
        if timeout is None or gate is None:
            await asyncio.Event().wait()
            return
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            if self.on_hold or not self._receives:  # the peer is not meant to send
                gate.last_received = time.monotonic()
            elif time.monotonic() - gate.last_received > timeout:
                return

    async def hangup(self, reason: str = "local-bye") -> None:
        """Hang up now (BYE, or CANCEL while ringing) and release everything."""
        await self._teardown(reason, send_bye=True)

    async def _teardown(self, reason: str, *, send_bye: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._unwatch_network()
        if self._early is not None and not self._early.done():
            self._early.cancel()
        if self.selected_offer is not None and not self.selected_offer.done():
            self.selected_offer.cancel()
        for task in (self._info_sender, self._info_receiver):
            if task is not None and not task.done():
                task.cancel()
        if self.stream is not None:
            with contextlib.suppress(Exception):
                last = await self.stream.stop("bye" if reason == "local-bye" else reason)
                self.final_stats = self._on_the_wire(_combined(self._earlier_stats, last))
        self._close_audio_ends()
        if send_bye and self.sip is not None and not self.sip.ended.done():
            try:
                ended = await self.sip.bye(timeout=10.0)
                log.debug("SIP session ended: %s", ended)
            except (TimeoutError, CallError) as exc:
                log.info("BYE: %r", exc)
        if self.sip_status is None and self.sip is not None and self.sip.call.final_status:
            self.sip_status = self.sip.call.final_status  # e.g. 487 after our CANCEL
        for connection in (*self._retired_ice, self.ice):
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()
        self._retired_ice.clear()
        for t in self._plain:
            t.close()
        if self._restore_offer_handler is not None:
            self._restore_offer_handler()
            self._restore_offer_handler = None
        self._ended(reason)
        if self.final_stats is not None:
            self.progress(f"call ended ({self.end_reason}); {self.final_stats}")
        else:
            self.progress(f"call ended ({self.end_reason})")

    def _ended(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        if self._ended_at is None:
            self._ended_at = time.monotonic()

    # -- report -------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """The ``call``, ``ice`` and ``rtp`` sections of the ``--json`` report (DESIGN.md)."""
        out: dict[str, Any] = {
            "call": {
                "sip_status": self.sip_status,
                "setup_ms": None if self.setup_ms is None else round(self.setup_ms),
                "duration_s": round(self.duration_s, 1),
                "end_reason": self.end_reason,
            }
        }
        if self.ice is not None and (self.remote is None or self.remote.ice is not None):
            stats = self.ice.stats()
            selected = stats.selected.get(1)
            out["ice"] = {
                "role": stats.role,
                "connect_ms": (
                    None if self.ice.connect_time is None else round(self.ice.connect_time * 1000)
                ),
                "selected": (
                    None
                    if selected is None
                    else {"local": selected["local"], "remote": selected["remote"]}
                ),
            }
        else:
            out["ice"] = None
        s = self.stats
        if s is not None:
            out["rtp"] = {
                "codec": self.remote.codec_name if self.remote else s.codec,
                "sent": s.packets_sent,
                "received": s.packets_received,
                "lost": s.packets_lost,
                "jitter_ms": round(s.jitter_ms, 1),
                "rtt_ms": None if s.rtt_ms is None else round(s.rtt_ms, 1),
            }
        else:
            out["rtp"] = None
        return out


def warm_up(codecs: Sequence[str] = ("opus", "pcmu")) -> None:
    """Do once, at start-up, what the first call would otherwise pay for on its call path:
    the lazy imports, compiled patterns and tables of the SDP offer/answer and of a media
    session (numpy's random generators, the G.711 tables, libopus) - several milliseconds
    of the first call's setup and of the time to its first RTP."""
    # an offer/answer round with ICE attributes (SDP and candidate parsers and writers)
    host = Candidate.make(CandidateType.HOST, "192.0.2.1", 9)
    ours = LocalTransport.from_ice("warmupAA", "warmupwarmupwarmupwarmup", [host])
    theirs = LocalTransport.from_ice("warmupBB", "warmupwarmupwarmupwarmup", [host])
    offer = new_offer_answer(local_media(codecs, ours), ours).create_offer().to_bytes()
    inspect_offer(offer)
    _, negotiation = new_offer_answer(local_media(codecs, theirs), theirs).process_offer(offer)
    if negotiation.audio is not None:
        read_negotiation(negotiation.audio)
    for codec in audio_codecs(codecs):
        if codec.name.lower() == "telephone-event":
            continue
        description = CodecDescription(codec.name, 0, codec.clock_rate, codec.channels)
        session = RtpSession(description, now=time.monotonic())
        session.send_frame(np.zeros(session.frame_samples, dtype=np.int16), time.monotonic())


def _base(candidate: Candidate) -> Address:
    """A host or server-reflexive candidate's socket (its base, RFC 8445 §5.1.1)."""
    if candidate.type is CandidateType.SERVER_REFLEXIVE and candidate.related_address:
        return candidate.related_address, candidate.related_port or 0
    return candidate.transport_address


def _normal_ip(text: str) -> str:
    """An address as :mod:`ipaddress` writes it (IPv6 zero runs, case), for comparisons."""
    try:
        return str(ipaddress.ip_address(text.strip("[]").split("%")[0]))
    except ValueError:
        return text


def _addr(c: Candidate) -> str:
    return _addr2(c.transport_address)


def _addr2(a: Address) -> str:
    return f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"


def _end_reason(exc: BaseException) -> str:
    """The report's ``end_reason`` for a call that could not be set up."""
    if isinstance(exc, CallFailed):
        return exc.kind
    if isinstance(exc, IceError):
        return "ice-failed"
    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
        return "interrupted"
    return "failed"
