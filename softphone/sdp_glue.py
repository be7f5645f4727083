"""SDP for a softphone call: our media capabilities plus ICE, and what the peer's SDP says.

The ``sip`` package does RFC 3264 offer/answer (:class:`sip.offer_answer.OfferAnswer`) and
knows nothing of ICE; ``ice.sdp`` reads and writes the RFC 8839 attributes and knows nothing of
SDP documents. This module puts them together:

* :func:`audio_codecs` - the codecs we offer, in the account's order (opus/48000/2 with
  ``useinbandfec=1`` (RFC 7587 §7), PCMU, PCMA), followed by one RFC 4733 telephone-event per
  clock rate in use (an event must use its audio codec's clock, RFC 4733 §2.1);
* :class:`LocalTransport` - where our media can be reached: ICE credentials and candidates,
  with the default candidate (relay > srflx > host, RFC 8839 §4.2.1.2 / RFC 8445 §5.1.4) in
  ``c=``/``m=`` and ``a=rtcp``; or, without ICE, a plain address and port;
* :func:`local_media` / :func:`new_offer_answer` - the :class:`~sip.offer_answer.LocalMedia`
  carrying all of that, and the offer/answer machine to build the offer or the answer;
* :func:`inspect_offer` - what a remote offer needs before we answer it (ICE or not, how many
  components, whether its ``c=``/``m=`` default matches a candidate - else ``a=ice-mismatch``,
  RFC 8839 §5.1);
* :func:`read_negotiation` - from a negotiated stream, the media session's codec descriptions
  (send and receive payload types, telephone-event), the remote RTP/RTCP addresses, rtcp-mux,
  and the remote ICE parameters and candidates (None for a peer without ``a=ice-ufrag``: it is
  reached at its ``c=``/``m=`` address, RFC 8445 §1 "ICE fallback").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ice.candidate import Candidate
from ice.sdp import (
    IceAttributes,
    IceParameters,
    IceSdpError,
    choose_default_candidate,
    format_ice_attributes,
    matches_candidate,
    parse_ice_attributes,
)
from media.session import CodecDescription
from sip.offer_answer import LocalMedia, NegotiatedMedia, OfferAnswer
from sip.sdp import Attribute, Codec, MediaDescription, SessionDescription, parse_sdp

__all__ = [
    "CODECS",
    "LocalTransport",
    "OfferInfo",
    "RemoteMedia",
    "SdpGlueError",
    "audio_codecs",
    "inspect_offer",
    "local_media",
    "new_offer_answer",
    "read_negotiation",
]

Address = tuple[str, int]

#: Our codecs by the names the account uses (``--codecs opus,pcmu,pcma``).
CODECS: dict[str, Codec] = {
    "opus": Codec("opus", 48000, 2, "useinbandfec=1"),  # RFC 7587 §7: 48000/2 always
    "pcmu": Codec("PCMU", 8000),
    "pcma": Codec("PCMA", 8000),
}
TELEPHONE_EVENTS = "0-16"  # DTMF 0-9 * # A-D and flash (RFC 4733 §3.2)
#: Ta when a side proposes no a=ice-pacing (RFC 8445 §14.2).
DEFAULT_PACING_MS = 50
_AUXILIARY = frozenset({"telephone-event", "cn", "red", "ulpfec", "rtx"})


class SdpGlueError(ValueError):
    """A remote description we cannot use (no audio, bad ICE attributes ...)."""


def audio_codecs(names: Sequence[str]) -> list[Codec]:
    """The codecs to offer, in the account's order, then telephone-event per clock rate."""
    codecs: list[Codec] = []
    for name in names:
        codec = CODECS.get(name.lower())
        if codec is None:
            raise SdpGlueError(f"unknown codec {name!r}")
        if codec not in codecs:
            codecs.append(codec)
    rates: list[int] = []
    for codec in codecs:
        if codec.clock_rate not in rates:
            rates.append(codec.clock_rate)
    codecs.extend(Codec("telephone-event", rate, 1, TELEPHONE_EVENTS) for rate in rates)
    return codecs


@dataclass
class LocalTransport:
    """Where the peer reaches our media.

    ``address``/``port`` go to ``c=``/``m=``; ``rtcp`` (if any) to ``a=rtcp`` (RFC 3605).
    With ``ice`` set, ``candidates`` are signalled too and the ``c=``/``m=`` default is one
    of them.
    """

    address: str
    port: int
    rtcp: Address | None = None
    ice: IceParameters | None = None
    candidates: list[Candidate] = field(default_factory=list)
    mismatch: bool = False
    #: Signal the ICE attributes (False: a peer that offered no ICE gets plain c=/m= at our
    #: default candidate, RFC 8445 §1 fallback).
    announce: bool = True

    @classmethod
    def from_ice(
        cls,
        ufrag: str,
        pwd: str,
        candidates: Sequence[Candidate],
        components: int = 1,
        *,
        pacing_ms: int | None = None,
    ) -> LocalTransport:
        """The default candidates (relay > srflx > host) of gathered candidates;
        ``pacing_ms`` is our ``a=ice-pacing`` proposal (RFC 8839 §5.5)."""
        rtp = choose_default_candidate(candidates, 1)
        if rtp is None:
            raise SdpGlueError("no local candidate for the RTP component")
        rtcp: Address | None = None
        if components > 1:
            default = choose_default_candidate(candidates, 2)
            if default is None:
                raise SdpGlueError("no local candidate for the RTCP component")
            rtcp = default.transport_address
        return cls(
            rtp.address,
            rtp.port,
            rtcp,
            ice=IceParameters(ufrag, pwd, pacing_ms=pacing_ms),
            candidates=list(candidates),
        )

    @property
    def default_candidate(self) -> Candidate | None:
        """The candidate in ``c=``/``m=`` (None without ICE)."""
        if self.ice is None:
            return None
        return choose_default_candidate(self.candidates, 1)


def local_media(
    codecs: Sequence[str], transport: LocalTransport, *, rtcp_mux: bool = True
) -> LocalMedia:
    """Our audio stream for :class:`~sip.offer_answer.OfferAnswer`: codecs, ``a=rtcp-mux``
    (RFC 5761 §5.1.1), ``c=``/``m=``/``a=rtcp`` and the ICE attributes (RFC 8839 §5)."""
    attributes: list[Attribute] = []
    if transport.mismatch:
        attributes.append(Attribute("ice-mismatch"))
    elif transport.ice is not None and transport.announce:
        _, media_attrs = format_ice_attributes(transport.ice, transport.candidates)
        attributes.extend(Attribute(name, value) for name, value in media_attrs)
    rtcp_address, rtcp_port = transport.rtcp if transport.rtcp else (None, None)
    return LocalMedia(
        transport.address,
        transport.port,
        codecs=audio_codecs(codecs),
        rtcp_mux=rtcp_mux,
        rtcp_port=rtcp_port,
        rtcp_address=rtcp_address,
        attributes=attributes,
    )


def new_offer_answer(media: LocalMedia, transport: LocalTransport) -> OfferAnswer:
    """An offer/answer machine for one audio stream (``a=ice-lite`` would go at session
    level, RFC 8839 §5.3; we are a full agent, so there is nothing there today)."""
    session: list[Attribute] = []
    if transport.ice is not None and transport.announce and not transport.mismatch:
        session_attrs, _ = format_ice_attributes(transport.ice)
        session = [Attribute(name, value) for name, value in session_attrs]
    return OfferAnswer([media], username="softphone", session_attributes=session)


# -- the remote side ------------------------------------------------------------------------


@dataclass
class OfferInfo:
    """What we need to know about a remote offer before gathering and answering."""

    ice: IceAttributes | None
    rtcp_mux: bool
    mismatch: bool = False

    @property
    def components(self) -> int:
        """ICE components to gather: one with rtcp-mux, else RTP and RTCP (RFC 8445 §4)."""
        return 1 if self.rtcp_mux else 2


def _audio_section(session: SessionDescription) -> MediaDescription:
    for section in session.media:
        if section.media.lower() == "audio" and not section.rejected:
            return section
    raise SdpGlueError("no audio stream in the offer")


def _ice_attributes(session: SessionDescription, section: MediaDescription) -> IceAttributes | None:
    try:
        attrs = parse_ice_attributes(
            [(a.name, a.value) for a in section.attributes],
            [(a.name, a.value) for a in session.attributes],
        )
    except IceSdpError as exc:
        raise SdpGlueError(f"bad ICE attributes: {exc}") from None
    if attrs.parameters is None or attrs.mismatch:
        return None
    return attrs


def inspect_offer(offer: bytes | str | SessionDescription) -> OfferInfo:
    """ICE or not, rtcp-mux or not, and RFC 8839 §5.1's default-candidate check.

    If the offer's ``c=``/``m=`` matches none of its candidates (a middlebox rewrote it), we
    answer with ``a=ice-mismatch`` and no ICE, and send to the ``c=``/``m=`` address.
    """
    session = offer if isinstance(offer, SessionDescription) else parse_sdp(offer)
    section = _audio_section(session)
    ice = _ice_attributes(session, section)
    mismatch = False
    if ice is not None:
        connection = session.media_connection(section)
        if connection is not None and not matches_candidate(
            ice.candidates, connection.address, section.port
        ):
            ice, mismatch = None, True
    return OfferInfo(ice, section.rtcp_mux, mismatch)


@dataclass
class RemoteMedia:
    """Everything the media session and the ICE agent need from a negotiated stream."""

    codec: CodecDescription
    telephone_event: CodecDescription | None
    receive_codecs: list[CodecDescription]
    ptime_ms: int
    rtp: Address
    rtcp: Address
    rtcp_mux: bool
    ice: IceAttributes | None

    @property
    def components(self) -> int:
        return 1 if self.rtcp_mux else 2

    def pacing_s(self, ours_ms: int | None) -> float:
        """The ICE pacing (Ta) to use with this peer: the larger of both proposals, 50 ms for
        a side that proposes none (RFC 8445 §14.2, RFC 8839 §4.2.3 / §5.5)."""
        theirs = self.ice.pacing_ms if self.ice is not None else None
        return max(ours_ms or DEFAULT_PACING_MS, theirs or DEFAULT_PACING_MS) / 1000

    @property
    def codec_name(self) -> str:
        """``opus/48000/2``, ``PCMU/8000`` (the report's ``rtp.codec``)."""
        return str(self.codec)

    @property
    def dtmf_in_band(self) -> bool:
        """Whether we send DTMF as RFC 4733 events: only when telephone-event was negotiated
        at the audio codec's clock rate. The events share the audio's SSRC and timestamps, so
        they must use its clock (RFC 4733 §2.1, "the same clock rate as the audio codec");
        baresip answers opus/48000 with telephone-event/8000 alone, and events with 48 kHz
        timestamps under an 8000 Hz payload type are wrong either way. Our offers list one
        telephone-event per audio clock (:func:`audio_codecs`), so two softphones always
        agree; otherwise the call falls back to SIP INFO (RFC 6086, ``dtmf-relay``)."""
        event = self.telephone_event
        return event is not None and event.clock_rate == self.codec.clock_rate

    def session_telephone_event(self) -> CodecDescription | None:
        """The telephone-event for the media session: as negotiated; at another clock than
        the audio it is kept for receiving only (the peer's events are recognised by their
        payload type; we send none, see :attr:`dtmf_in_band`), described at the audio's
        clock."""
        event = self.telephone_event
        if event is None or self.dtmf_in_band:
            return event
        return replace(event, clock_rate=self.codec.clock_rate)


def _description(codec: Codec, send_pt: int, receive_pt: int | None) -> CodecDescription:
    return CodecDescription(
        codec.name,
        send_pt,
        codec.clock_rate,
        codec.channels,
        codec.params,
        receive_payload_type=receive_pt if receive_pt != send_pt else None,
    )


def _receive_pt(stream: NegotiatedMedia, codec: Codec) -> int | None:
    return next((pt for pt, c in stream.receive_payload_types.items() if c.match(codec)), None)


def read_negotiation(stream: NegotiatedMedia) -> RemoteMedia:
    """The media parameters of a negotiated audio stream (see module docstring)."""
    codec = _description(stream.codec, stream.payload_type, _receive_pt(stream, stream.codec))
    event: CodecDescription | None = None
    if stream.telephone_event is not None and stream.telephone_event_codec is not None:
        event = CodecDescription(
            "telephone-event",
            stream.telephone_event,
            stream.telephone_event_codec.clock_rate,
            receive_payload_type=stream.receive_telephone_event,
        )
    receive: list[CodecDescription] = []
    for pt, rx in stream.receive_payload_types.items():
        if rx.name.lower() in _AUXILIARY or rx.match(stream.codec):
            continue
        send_pt = next((p for p, c in stream.send_payload_types.items() if c.match(rx)), pt)
        receive.append(_description(rx, send_pt, pt))
    ice = _ice_attributes(stream.remote_session, stream.remote_media)
    ptime = stream.packet_time
    if ptime % 10 or not 10 <= ptime <= 120:
        ptime = 20
    return RemoteMedia(
        codec=codec,
        telephone_event=event,
        receive_codecs=receive,
        ptime_ms=ptime,
        rtp=stream.remote_rtp,
        rtcp=stream.remote_rtcp,
        rtcp_mux=stream.rtcp_mux,
        ice=ice,
    )
