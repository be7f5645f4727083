"""RFC 3264 offer/answer on top of the :mod:`sip.sdp` model.

:class:`OfferAnswer` is the local side of one SIP session's SDP exchange. It is a plain object
with no I/O: it builds offers from :class:`LocalMedia` capabilities, answers remote offers,
processes answers to its own offers and produces :class:`Negotiation` results (one
:class:`NegotiatedMedia` per active stream). It keeps what RFC 3264 §8 requires across re-offers:
the m= line count and order, payload type numbers, and the ``o=`` version, which grows by one
whenever a new description differs from the previous one.

Callers (the softphone) add their own attributes (ICE: ``a=ice-ufrag``, ``a=candidate`` ...)
through :attr:`OfferAnswer.session_attributes` and :attr:`LocalMedia.attributes`, and read every
remote attribute through :attr:`NegotiatedMedia.remote_media` / :meth:`NegotiatedMedia.attribute`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from .sdp import (
    STATIC_PAYLOAD_TYPES,
    Attribute,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    RtcpAttribute,
    SessionDescription,
    Timing,
    parse_sdp,
)

__all__ = [
    "DEFAULT_AUDIO_CODECS",
    "LocalMedia",
    "Negotiation",
    "NegotiatedMedia",
    "OfferAnswer",
    "OfferAnswerError",
    "OfferAnswerState",
    "RejectedMedia",
    "assign_payload_types",
    "intersect_events",
]

logger = logging.getLogger("sip.offer_answer")

#: Codec names that ride along with the audio codec rather than being one (RFC 4733, 3389, 2198).
AUXILIARY_CODECS = frozenset({"telephone-event", "cn", "red", "ulpfec", "rtx"})
TELEPHONE_EVENT = "telephone-event"

DEFAULT_AUDIO_CODECS: tuple[Codec, ...] = (
    Codec("opus", 48000, 2, "useinbandfec=1"),
    Codec("PCMU", 8000),
    Codec("PCMA", 8000),
    Codec(TELEPHONE_EVENT, 8000, 1, "0-16"),
)

# Dynamic payload types (RFC 3551 §6); 64-95 are avoided, they collide with RTCP (RFC 5761 §4).
_DYNAMIC_RANGE = (*range(96, 128), *range(35, 64))


class OfferAnswerError(ValueError):
    """The exchange cannot proceed: bad state (e.g. glare) or an answer that breaks RFC 3264 §6."""


class OfferAnswerState(Enum):
    """Where the local side stands in the offer/answer exchange (RFC 3264 §4)."""

    IDLE = "idle"  # no exchange in progress (negotiated or not yet started)
    OFFER_SENT = "offer-sent"  # our offer waits for its answer


def _key(codec: Codec) -> tuple[str, int, int]:
    return (codec.name.lower(), codec.clock_rate, codec.channels)


def _is_auxiliary(codec: Codec) -> bool:
    return codec.name.lower() in AUXILIARY_CODECS


def assign_payload_types(
    codecs: Iterable[Codec], preferred: dict[tuple[str, int, int], int] | None = None
) -> list[tuple[int, Codec]]:
    """Give each codec a payload type number (RFC 3551 §6, RFC 3264 §5.1).

    A number remembered in ``preferred`` wins (kept across re-offers, §8.3.2), then the RFC 3551
    static number, then the first free dynamic number from 96 (35-63 when 96-127 run out). Duplicate
    codecs are dropped. Raises ValueError when no number is left.
    """
    preferred = preferred or {}
    unique: list[Codec] = []
    for codec in codecs:
        if all(not codec.match(other) for other in unique):
            unique.append(codec)
    chosen: dict[int, int] = {}  # index in unique -> pt
    used: set[int] = set()
    for index, codec in enumerate(unique):
        pt = preferred.get(_key(codec))
        if pt is not None and pt not in used:
            chosen[index] = pt
            used.add(pt)
    for index, codec in enumerate(unique):
        if index in chosen:
            continue
        for pt, static in STATIC_PAYLOAD_TYPES.items():
            if static.match(codec) and pt not in used:
                chosen[index] = pt
                used.add(pt)
                break
    reserved = used | set(STATIC_PAYLOAD_TYPES) | set(preferred.values())
    free = (pt for pt in _DYNAMIC_RANGE if pt not in reserved)
    result: list[tuple[int, Codec]] = []
    for index, codec in enumerate(unique):
        if index not in chosen:
            pt_or_none = next(free, None)
            if pt_or_none is None:
                raise ValueError("no free RTP payload type numbers left")
            chosen[index] = pt_or_none
        result.append((chosen[index], codec))
    return result


def _parse_events(fmtp: str | None) -> set[int] | None:
    """RFC 4733 §2.4.1 event list ("0-15,66") as a set (absent: 0-15); None if malformed."""
    if fmtp is None or not fmtp.strip():
        return set(range(16))
    events: set[int] = set()
    for item in fmtp.replace(" ", "").split(","):
        low, sep, high = item.partition("-")
        if not (low.isascii() and low.isdigit() and len(low) <= 3):
            return None
        if sep and not (high.isascii() and high.isdigit() and len(high) <= 3):
            return None
        first, last = int(low), int(high) if sep else int(low)
        if first > last or last > 255:
            return None
        events.update(range(first, last + 1))
    return events


def _format_events(events: set[int]) -> str:
    parts: list[str] = []
    ordered = sorted(events)
    start = prev = ordered[0]
    for event in [*ordered[1:], None]:
        if event is not None and event == prev + 1:
            prev = event
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if event is not None:
            start = prev = event
    return ",".join(parts)


def intersect_events(ours: str | None, theirs: str | None) -> str | None:
    """The telephone-event list both sides support (RFC 4733 §2.4.1), None if nothing in common."""
    mine = _parse_events(ours)
    other = _parse_events(theirs)
    if mine is None or other is None:  # unparsable: keep what we declared
        return ours if ours is not None else "0-15"
    common = mine & other
    return _format_events(common) if common else None


# --------------------------------------------------------------------------------------------------
# Inputs and results
# --------------------------------------------------------------------------------------------------


@dataclass
class LocalMedia:
    """What we can do for one media stream: codecs in preference order, transport address, options.

    ``attributes`` are appended to the media section of every offer and answer we build (the
    softphone puts ICE attributes here); ``address``/``port`` go to ``c=``/``m=`` (the ICE default
    candidate, RFC 8839 §4.2). ``rtcp_port``/``rtcp_address`` give an ``a=rtcp`` (RFC 3605; the
    default RTCP candidate with ICE): always in offers, in answers only when RTCP is not muxed.
    ``protos`` lists the transport protocols accepted in remote offers (defaults to ``proto``).
    """

    address: str
    port: int
    codecs: list[Codec] = field(default_factory=lambda: list(DEFAULT_AUDIO_CODECS))
    media: str = "audio"
    proto: str = "RTP/AVP"
    direction: Direction = Direction.SENDRECV
    ptime: int | None = 20
    maxptime: int | None = None
    rtcp_mux: bool = True
    rtcp_port: int | None = None
    attributes: list[Attribute] = field(default_factory=list)
    protos: tuple[str, ...] = ()
    rtcp_address: str | None = None

    def accepts_proto(self, proto: str) -> bool:
        allowed = self.protos or (self.proto,)
        return proto.upper() in (p.upper() for p in allowed)

    def find_codec(self, codec: Codec) -> Codec | None:
        return next((c for c in self.codecs if c.match(codec)), None)


@dataclass
class NegotiatedMedia:
    """One active stream after offer/answer, from the local point of view.

    ``payload_type`` is the number to send ``codec`` with (the remote's number, RFC 3264 §5.1);
    ``receive_payload_types`` are the numbers we may receive (from our own description).
    ``codec.fmtp`` / ``fmtp`` are the remote's parameters for what it wants to receive.
    """

    index: int
    media: str
    codec: Codec
    payload_type: int
    remote_rtp: tuple[str, int]
    remote_rtcp: tuple[str, int]
    direction: Direction
    rtcp_mux: bool
    local: LocalMedia = field(repr=False)
    local_codec: Codec
    remote_media: MediaDescription = field(repr=False)
    remote_session: SessionDescription = field(repr=False)
    telephone_event: int | None = None
    telephone_event_codec: Codec | None = None
    ptime: int | None = None
    maxptime: int | None = None
    fmtp: dict[str, str] = field(default_factory=dict)
    receive_payload_types: dict[int, Codec] = field(default_factory=dict)
    send_payload_types: dict[int, Codec] = field(default_factory=dict)

    @property
    def sends(self) -> bool:
        return self.direction.sends

    @property
    def packet_time(self) -> int:
        """Milliseconds of media per packet to send: the remote's a=ptime (what it wants to
        receive, RFC 8866 §6.4), else ours, else 20; never above the remote's a=maxptime."""
        ptime = self.ptime or self.local.ptime or 20
        return min(ptime, self.maxptime) if self.maxptime else ptime

    @property
    def local_rtp_port(self) -> int:
        return self.local.port

    @property
    def local_rtcp_port(self) -> int:
        """Where we receive RTCP: the RTP port with rtcp-mux, else a=rtcp or RTP port + 1."""
        if self.rtcp_mux:
            return self.local.port
        return self.local.rtcp_port if self.local.rtcp_port is not None else self.local.port + 1

    @property
    def receives(self) -> bool:
        return self.direction.receives

    @property
    def receive_telephone_event(self) -> int | None:
        """Our payload type for incoming RFC 4733 events (ours may differ from the remote's)."""
        events = [
            (pt, c)
            for pt, c in self.receive_payload_types.items()
            if c.name.lower() == TELEPHONE_EVENT
        ]
        same_rate = [pt for pt, c in events if c.clock_rate == self.codec.clock_rate]
        return same_rate[0] if same_rate else (events[0][0] if events else None)

    @property
    def remote_ice(self) -> bool:
        """The remote speaks ICE (has ``a=ice-ufrag``); else use remote_rtp as is (RFC 8445)."""
        return self.attribute("ice-ufrag") is not None

    def attribute(self, name: str) -> str | None:
        """A remote attribute, media level first then session level (e.g. ``ice-ufrag``)."""
        return self.remote_session.media_attribute(self.remote_media, name)

    def attributes(self, name: str) -> list[str]:
        """All remote values of an attribute: media level, else session level."""
        return self.remote_media.get_all(name) or self.remote_session.get_all(name)


@dataclass
class RejectedMedia:
    """An m= line that ended with port 0 (RFC 3264 §6), with why."""

    index: int
    media: str
    reason: str


@dataclass
class Negotiation:
    """The outcome of one offer/answer exchange."""

    local: SessionDescription
    remote: SessionDescription
    streams: list[NegotiatedMedia] = field(default_factory=list)
    rejected: list[RejectedMedia] = field(default_factory=list)

    @property
    def audio(self) -> NegotiatedMedia | None:
        return next((s for s in self.streams if s.media.lower() == "audio"), None)

    def stream(self, media: str) -> NegotiatedMedia | None:
        return next((s for s in self.streams if s.media.lower() == media.lower()), None)


# --------------------------------------------------------------------------------------------------
# The offer/answer machine
# --------------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One m= line of the session (RFC 3264 §8: lines are never removed, only disabled)."""

    media: str
    proto: str
    formats: list[str]
    local: int | None  # index into OfferAnswer.media, None when rejected / unsupported
    pt_memory: dict[tuple[str, int, int], int] = field(default_factory=dict)


@dataclass
class _Saved:
    """State before an answer, to undo it when the offer is rejected at the SIP level."""

    slots: list[_Slot]
    last_sent: SessionDescription | None
    version: int
    negotiation: Negotiation | None
    local_description: SessionDescription | None
    remote_description: SessionDescription | None


class OfferAnswer:
    """Local side of the RFC 3264 exchanges of one session (sans-I/O, no timers).

    Typical caller flow::

        oa = OfferAnswer([LocalMedia("192.0.2.1", 40000)])
        offer = oa.create_offer()            # send in INVITE
        result = oa.process_answer(answer)   # from the 200 OK
        hold = oa.hold()                     # re-INVITE body; then process_answer() again

    and on the answering side ``answer, result = oa.process_offer(offer)``.
    """

    def __init__(
        self,
        media: Sequence[LocalMedia],
        *,
        address: str | None = None,
        username: str = "-",
        session_id: int | None = None,
        session_version: int | None = None,
        session_name: str = "-",
        session_attributes: Sequence[Attribute] = (),
        single_codec_answer: bool = False,
    ) -> None:
        if not media:
            raise ValueError("OfferAnswer needs at least one LocalMedia")
        self.media: list[LocalMedia] = list(media)
        self.address = address or self.media[0].address
        self.username = username
        self.session_id = session_id if session_id is not None else secrets.randbits(62)
        self.session_name = session_name
        #: Extra session-level attributes for every description we build (e.g. ice-options).
        self.session_attributes: list[Attribute] = list(session_attributes)
        #: Answer with only the first common codec (plus telephone-event) instead of all of them.
        self.single_codec_answer = single_codec_answer
        self.state = OfferAnswerState.IDLE
        self.on_hold = False
        self.negotiation: Negotiation | None = None
        self.local_description: SessionDescription | None = None
        self.remote_description: SessionDescription | None = None
        self._version = session_version if session_version is not None else self.session_id
        self._last_sent: SessionDescription | None = None
        self._pending_offer: SessionDescription | None = None
        self._pending_slots: list[_Slot] | None = None
        self._slots: list[_Slot] = []
        self._before_answer: _Saved | None = None

    # -- public operations -------------------------------------------------------------------

    def create_offer(self) -> SessionDescription:
        """Build an offer (initial or re-offer, RFC 3264 §5 and §8) and wait for its answer."""
        if self.state is OfferAnswerState.OFFER_SENT:
            raise OfferAnswerError("an offer is already outstanding")
        self._before_answer = None
        slots = [
            _Slot(s.media, s.proto, list(s.formats), s.local, dict(s.pt_memory))
            for s in self._slots
        ]
        mapped = {s.local for s in slots if s.local is not None}
        for index, local in enumerate(self.media):
            # A new stream goes after the existing m= lines (§8.1); one without codecs has
            # nothing to offer.
            if index not in mapped and local.codecs:
                slots.append(_Slot(local.media, local.proto, [], index))
        session = self._new_session()
        for slot in slots:
            if slot.local is not None and not (
                slot.local < len(self.media) and self.media[slot.local].codecs
            ):
                slot.local = None  # the stream is gone: keep its m= line, disabled (§8.2)
            if slot.local is None:
                session.media.append(_disabled(slot.media, slot.proto, slot.formats))
                continue
            local = self.media[slot.local]
            # Keep the transport an m= line already uses (e.g. one accepted from a remote offer).
            proto = slot.proto if local.accepts_proto(slot.proto) else local.proto
            section = self._media_section(local, proto, self._offer_direction(slot.local))
            pts = assign_payload_types(local.codecs, slot.pt_memory)
            for pt, codec in pts:
                section.add_codec(pt, codec)
                slot.pt_memory[_key(codec)] = pt
            slot.formats = list(section.formats)
            slot.proto = proto
            self._finish_section(section, local, rtcp_mux=local.rtcp_mux, offering=True)
            session.media.append(section)
        self._add_session_connection(session)
        offer = self._stamp(session)
        self._pending_offer = offer
        self._pending_slots = slots
        self.state = OfferAnswerState.OFFER_SENT
        logger.debug("offer created, o= version %d", offer.origin.session_version)
        return offer

    def cancel_offer(self) -> None:
        """Forget the outstanding offer (rejected with 488/491 ...); the old negotiation stays."""
        self._pending_offer = None
        self._pending_slots = None
        self.state = OfferAnswerState.IDLE

    def process_answer(self, answer: SessionDescription | str | bytes) -> Negotiation:
        """Apply the answer to our outstanding offer (RFC 3264 §7)."""
        if self.state is not OfferAnswerState.OFFER_SENT or self._pending_offer is None:
            raise OfferAnswerError("no offer is waiting for an answer")
        remote = _as_session(answer)
        offer = self._pending_offer
        slots = self._pending_slots or []
        if len(remote.media) != len(offer.media):
            raise OfferAnswerError(
                f"answer has {len(remote.media)} m= lines, offer had {len(offer.media)} (§6)"
            )
        result = Negotiation(local=offer, remote=remote)
        for index, (ours, theirs) in enumerate(zip(offer.media, remote.media, strict=True)):
            slot = slots[index]
            if slot.local is None or ours.rejected:
                result.rejected.append(RejectedMedia(index, ours.media, "disabled in offer"))
                continue
            if theirs.rejected:
                result.rejected.append(RejectedMedia(index, ours.media, "rejected by answerer"))
                continue
            stream, reason = self._negotiate(
                index,
                self.media[slot.local],
                local_section=ours,
                local_session=offer,
                remote_section=theirs,
                remote_session=remote,
                answering=False,
            )
            if stream is None:
                result.rejected.append(RejectedMedia(index, ours.media, reason))
            else:
                result.streams.append(stream)
        self._slots = slots
        self._pending_offer = None
        self._pending_slots = None
        self.state = OfferAnswerState.IDLE
        self.remote_description = remote
        self.negotiation = result
        return result

    def process_offer(
        self, offer: SessionDescription | str | bytes
    ) -> tuple[SessionDescription, Negotiation]:
        """Answer a remote offer (RFC 3264 §6); returns our answer and the negotiated streams."""
        if self.state is OfferAnswerState.OFFER_SENT:
            raise OfferAnswerError("glare: an offer of ours is outstanding (RFC 3261 §14.1: 491)")
        remote = _as_session(offer)
        if len(remote.media) < len(self._slots):
            raise OfferAnswerError(
                f"re-offer has {len(remote.media)} m= lines, session has {len(self._slots)} (§8)"
            )
        self._before_answer = _Saved(
            self._slots,
            self._last_sent,
            self._version,
            self.negotiation,
            self.local_description,
            self.remote_description,
        )
        session = self._new_session()
        if remote.timing:  # §6: "The t= line in the answer MUST equal that of the offer."
            session.timing = [Timing(t.start, t.stop) for t in remote.timing]
        negotiation = Negotiation(local=session, remote=remote)
        slots: list[_Slot] = []
        used: set[int] = set()
        for index, theirs in enumerate(remote.media):
            previous = self._slots[index] if index < len(self._slots) else None
            candidates = self._candidates_for(theirs, previous, used)
            accepted: tuple[MediaDescription, NegotiatedMedia, int] | None = None
            reason = "unsupported media type" if not candidates else "no common codec"
            if theirs.rejected:
                reason = "disabled in offer"
                candidates = []
            elif remote.media_connection(theirs) is None:
                reason = "no connection address"
                candidates = []
            for local_index in candidates:
                local = self.media[local_index]
                section = self._answer_section(local, theirs, remote)
                if section is None:
                    continue
                stream, why = self._negotiate(
                    index,
                    local,
                    local_section=section,
                    local_session=session,
                    remote_section=theirs,
                    remote_session=remote,
                    answering=True,
                )
                if stream is not None:
                    accepted = (section, stream, local_index)
                    break
                reason = why
            if accepted is None:
                session.media.append(_disabled(theirs.media, theirs.proto, theirs.formats))
                negotiation.rejected.append(RejectedMedia(index, theirs.media, reason))
                slots.append(_Slot(theirs.media, theirs.proto, list(theirs.formats), None))
                continue
            section, stream, local_index = accepted
            used.add(local_index)
            session.media.append(section)
            negotiation.streams.append(stream)
            memory = dict(previous.pt_memory) if previous is not None else {}
            memory.update({_key(c): pt for pt, c in section.codecs().items()})
            slots.append(
                _Slot(theirs.media, theirs.proto, list(section.formats), local_index, memory)
            )
        self._add_session_connection(session)
        answer = self._stamp(session)
        negotiation.local = answer
        self._slots = slots
        self.remote_description = remote
        self.negotiation = negotiation
        return answer, negotiation

    def reject_offer(self) -> None:
        """Undo the last :meth:`process_offer`: the SIP layer refused it (488, or a re-INVITE
        that failed), so the session keeps its previous state (RFC 3261 §14.2)."""
        saved = self._before_answer
        if saved is None:
            raise OfferAnswerError("no answered offer to undo")
        self._slots = saved.slots
        self._last_sent = saved.last_sent
        self._version = saved.version
        self.negotiation = saved.negotiation
        self.local_description = saved.local_description
        self.remote_description = saved.remote_description
        self._before_answer = None

    def hold(self) -> SessionDescription:
        """Re-offer putting the remote on hold: sendonly, or inactive if it holds us (RFC 6337)."""
        return self._reoffer(hold=True)

    def resume(self) -> SessionDescription:
        """Re-offer taking the remote off hold: back to each stream's configured direction."""
        return self._reoffer(hold=False)

    def _reoffer(self, hold: bool) -> SessionDescription:
        previous, self.on_hold = self.on_hold, hold
        try:
            return self.create_offer()
        except Exception:
            self.on_hold = previous
            raise

    # -- building blocks -------------------------------------------------------------------------

    def _new_session(self) -> SessionDescription:
        connection = Connection.for_address(self.address)
        origin = Origin(
            self.username,
            str(self.session_id),
            self._version,
            "IN",
            connection.addrtype,
            connection.address,
        )
        return SessionDescription(
            origin=origin,
            session_name=self.session_name,
            timing=[Timing(0, 0)],
            attributes=[Attribute(a.name, a.value) for a in self.session_attributes],
        )

    def _add_session_connection(self, session: SessionDescription) -> None:
        """Put the first active stream's address in a session-level c= (§5.7); others get theirs."""
        active = [m for m in session.media if m.connection is not None]
        default = active[0].connection if active else Connection.for_address(self.address)
        session.connection = default
        for section in session.media:
            if section.connection == default:
                section.connection = None

    def _stamp(self, session: SessionDescription) -> SessionDescription:
        """Set the o= version: unchanged description keeps it, any change adds one (§8)."""
        if self._last_sent is not None:
            session.origin.session_version = self._last_sent.origin.session_version
            if session.to_str() != self._last_sent.to_str():
                session.origin.session_version += 1
        self._version = session.origin.session_version
        self._last_sent = session
        self.local_description = session
        return session

    def _want(self, local: LocalMedia) -> Direction:
        return local.direction.intersect(Direction.SENDONLY) if self.on_hold else local.direction

    def _offer_direction(self, local_index: int) -> Direction:
        want = self._want(self.media[local_index])
        if self.on_hold and self.negotiation is not None:
            # RFC 6337 §5.3: if the remote already stopped receiving from us, offer inactive.
            for stream in self.negotiation.streams:
                if stream.local is self.media[local_index] and not stream.direction.sends:
                    return Direction.INACTIVE
        return want

    def _media_section(
        self, local: LocalMedia, proto: str, direction: Direction
    ) -> MediaDescription:
        section = MediaDescription(local.media, local.port, proto)
        section.connection = Connection.for_address(local.address)
        section.set_direction(direction)
        return section

    def _finish_section(
        self, section: MediaDescription, local: LocalMedia, *, rtcp_mux: bool, offering: bool
    ) -> None:
        """Append ptime, a=rtcp / rtcp-mux, the direction, then the caller's attributes."""
        direction = section.direction
        section.set_direction(None)
        if local.ptime is not None:
            section.add("ptime", str(local.ptime))
        if local.maxptime is not None:
            section.add("maxptime", str(local.maxptime))
        if local.rtcp_port is not None and (offering or not rtcp_mux):
            connection = Connection.for_address(local.rtcp_address or local.address)
            rtcp = RtcpAttribute(local.rtcp_port, connection.address, connection.addrtype)
            section.add("rtcp", str(rtcp))
        if rtcp_mux:
            section.add("rtcp-mux")  # RFC 5761 §5.1.1
        section.set_direction(direction)
        section.attributes.extend(Attribute(a.name, a.value) for a in local.attributes)

    def _candidates_for(
        self, theirs: MediaDescription, previous: _Slot | None, used: set[int]
    ) -> list[int]:
        """Local streams that could take an offered m= line, the one it had before first."""
        found = [
            i
            for i, local in enumerate(self.media)
            if i not in used
            and local.media.lower() == theirs.media.lower()
            and local.accepts_proto(theirs.proto)
        ]
        if previous is not None and previous.local in found:
            found.remove(previous.local)
            found.insert(0, previous.local)
        return found

    def _answer_section(
        self, local: LocalMedia, theirs: MediaDescription, remote: SessionDescription
    ) -> MediaDescription | None:
        """Our m= section answering ``theirs``, or None when no codec is common (§6.1)."""
        offered = theirs.codecs()
        common: list[tuple[int, Codec]] = []
        for pt, codec in offered.items():  # the offerer's order and numbers
            mine = local.find_codec(codec)
            if mine is None:
                continue
            if codec.name.lower() == TELEPHONE_EVENT:
                events = intersect_events(mine.fmtp, codec.fmtp)
                if events is None:
                    continue
                mine = mine.with_fmtp(events)
            common.append((pt, mine))
        main = [(pt, c) for pt, c in common if not _is_auxiliary(c)]
        if not main:
            return None
        if self.single_codec_answer:
            first_pt, first = main[0]
            dtmf = [(pt, c) for pt, c in common if c.name.lower() == TELEPHONE_EVENT]
            event = next(
                (e for e in dtmf if e[1].clock_rate == first.clock_rate),
                dtmf[0] if dtmf else None,
            )
            common = [(first_pt, first)] + ([event] if event else [])
        remote_direction = _remote_direction(remote, theirs)
        direction = self._want(local).intersect(remote_direction.reverse())
        section = self._media_section(local, theirs.proto, direction)
        for pt, codec in common:
            section.add_codec(pt, codec)
        mux = theirs.rtcp_mux and local.rtcp_mux
        self._finish_section(section, local, rtcp_mux=mux, offering=False)
        return section

    def _negotiate(
        self,
        index: int,
        local: LocalMedia,
        *,
        local_section: MediaDescription,
        local_session: SessionDescription,
        remote_section: MediaDescription,
        remote_session: SessionDescription,
        answering: bool,
    ) -> tuple[NegotiatedMedia | None, str]:
        """Pair our section with the remote one into a NegotiatedMedia (RFC 3264 §6.1, §7)."""
        connection = remote_session.media_connection(remote_section)
        if connection is None:
            return None, "no connection address"
        ours = local_section.codecs()
        theirs = remote_section.codecs()
        # Sending: the remote's numbers for codecs we also listed, in the answer's order (§7).
        send: dict[int, Codec] = {}
        for pt, codec in theirs.items():
            if any(codec.match(c) for c in ours.values()):
                send[pt] = codec
        receive = {pt: c for pt, c in ours.items() if any(c.match(o) for o in theirs.values())}
        order = ours if answering else theirs
        sendable = [c for c in order.values() if any(c.match(s) for s in send.values())]
        main = next((c for c in sendable if not _is_auxiliary(c)), None)
        if main is None:
            return None, "no common codec"
        send_pt, send_codec = next((pt, c) for pt, c in send.items() if c.match(main))
        local_codec = next(c for c in ours.values() if c.match(main))
        events = [(pt, c) for pt, c in send.items() if c.name.lower() == TELEPHONE_EVENT]
        event = next(
            ((pt, c) for pt, c in events if c.clock_rate == send_codec.clock_rate),
            events[0] if events else None,
        )
        mux = local_section.rtcp_mux and remote_section.rtcp_mux
        address, port = connection.address, remote_section.port
        rtcp_attr = remote_section.rtcp
        if mux:
            rtcp = (address, port)
        elif rtcp_attr is not None:
            rtcp = (rtcp_attr.address or address, rtcp_attr.port)
        else:
            rtcp = (address, min(port + 1, 65535))  # RFC 3550 §11
        remote_direction = _remote_direction(remote_session, remote_section)
        local_direction = local_session.media_direction(local_section)
        direction = local_direction.intersect(remote_direction.reverse())
        stream = NegotiatedMedia(
            index=index,
            media=remote_section.media,
            codec=send_codec,
            payload_type=send_pt,
            remote_rtp=(address, port),
            remote_rtcp=rtcp,
            direction=direction,
            rtcp_mux=mux,
            local=local,
            local_codec=local_codec,
            remote_media=remote_section,
            remote_session=remote_session,
            telephone_event=event[0] if event else None,
            telephone_event_codec=event[1] if event else None,
            ptime=remote_section.ptime,
            maxptime=remote_section.maxptime,
            fmtp=send_codec.params,
            receive_payload_types=receive,
            send_payload_types=send,
        )
        return stream, ""


def _remote_direction(remote: SessionDescription, section: MediaDescription) -> Direction:
    """The remote's direction, with c=0.0.0.0 meaning "send nothing to me" (RFC 3264 §8.4).

    With ICE (an ``ice-ufrag`` present) a null address only says that no candidate is known yet
    (RFC 8840 §4.1.4, trickle ICE): ICE picks the address, so it does not imply hold.
    """
    direction = remote.media_direction(section)
    connection = remote.media_connection(section)
    ice = remote.media_attribute(section, "ice-ufrag") is not None
    if connection is not None and connection.is_null and not ice:
        direction = direction.intersect(Direction.SENDONLY)
    return direction


def _disabled(media: str, proto: str, formats: Sequence[str]) -> MediaDescription:
    """A port-zero m= line keeping the media type, proto and formats (RFC 3264 §6, §8.2)."""
    return MediaDescription(media, 0, proto, list(formats) or ["0"])


def _as_session(description: SessionDescription | str | bytes) -> SessionDescription:
    if isinstance(description, SessionDescription):
        return description
    return parse_sdp(description)
