"""RFC 3264 offer/answer (sip.offer_answer)."""

from __future__ import annotations

import pytest

from sip.offer_answer import (
    DEFAULT_AUDIO_CODECS,
    LocalMedia,
    OfferAnswer,
    OfferAnswerError,
    OfferAnswerState,
    assign_payload_types,
    intersect_events,
)
from sip.sdp import (
    Attribute,
    Codec,
    Connection,
    Direction,
    SdpParseError,
    SessionDescription,
    parse_sdp,
)
from tests.helpers_sip import sdp_sample
from tests.unit.test_sdp import (
    ASTERISK_OFFER,
    BARESIP_1_0_ANSWER_TO_US,
    BARESIP_1_0_OFFER,
    BARESIP_OFFER,
    G711_ONLY_OFFER,
    IPV6_OFFER,
    OPUS_FMTP_OFFER,
    PJSUA_CANDIDATES,
    PJSUA_OFFER,
    RFC3264_ALICE_OFFER,
    crlf,
)

OPUS = Codec("opus", 48000, 2, "useinbandfec=1")
PCMU = Codec("PCMU", 8000)
PCMA = Codec("PCMA", 8000)
DTMF = Codec("telephone-event", 8000, 1, "0-16")


def local(address: str = "192.0.2.1", port: int = 40000, **kw: object) -> LocalMedia:
    return LocalMedia(address, port, **kw)  # type: ignore[arg-type]


def ua(*media: LocalMedia, **kw: object) -> OfferAnswer:
    return OfferAnswer(list(media) or [local()], session_id=1000, **kw)  # type: ignore[arg-type]


def sdp(text: str) -> SessionDescription:
    return parse_sdp(text)


def rtpmaps(description: SessionDescription, index: int = 0) -> list[str]:
    return description.media[index].get_all("rtpmap")


# -- payload types -------------------------------------------------------------------------------


def test_assign_payload_types_static_then_dynamic() -> None:
    pts = assign_payload_types(DEFAULT_AUDIO_CODECS)
    assert [(pt, c.encoding) for pt, c in pts] == [
        (96, "opus/48000/2"),
        (0, "PCMU/8000"),
        (8, "PCMA/8000"),
        (97, "telephone-event/8000"),
    ]


def test_assign_payload_types_avoids_collisions_and_duplicates() -> None:
    codecs = [
        OPUS,
        Codec("telephone-event", 48000),
        Codec("OPUS", 48000, 2),  # duplicate of the first
        DTMF,
        Codec("G722", 8000),
        Codec("speex", 16000),
    ]
    preferred = {("telephone-event", 8000, 1): 101, ("speex", 16000, 1): 96}
    pts = assign_payload_types(codecs, preferred)
    assert [(pt, c.encoding) for pt, c in pts] == [
        (97, "opus/48000/2"),  # 96 is remembered for speex
        (98, "telephone-event/48000"),
        (101, "telephone-event/8000"),
        (9, "G722/8000"),
        (96, "speex/16000"),
    ]
    numbers = [pt for pt, _ in pts]
    assert len(set(numbers)) == len(numbers)


def test_assign_payload_types_runs_out() -> None:
    many = [Codec(f"x{i}", 8000) for i in range(32 + 29)]
    pts = assign_payload_types(many)
    numbers = [pt for pt, _ in pts]
    assert numbers[:32] == list(range(96, 128))
    assert all(35 <= n < 64 for n in numbers[32:])  # never 64-95 (RTCP, RFC 5761)
    with pytest.raises(ValueError):
        assign_payload_types([*many, Codec("one-too-many", 8000)])


@pytest.mark.parametrize(
    ("ours", "theirs", "common"),
    [
        ("0-16", "0-15", "0-15"),
        ("0-15", "0-16", "0-15"),
        ("0-16", "0-15,66,70", "0-15"),
        ("0-15,66", "66,0-3", "0-3,66"),
        (None, "0-16", "0-15"),
        ("0-15", "32-40", None),
        ("0-16", "bogus", "0-16"),
        (None, "1-x", "0-15"),
        ("0-16", "16-2", "0-16"),
    ],
)
def test_intersect_events(ours: str | None, theirs: str | None, common: str | None) -> None:
    assert intersect_events(ours, theirs) == common


# -- offers --------------------------------------------------------------------------------------


def test_initial_offer_with_default_capabilities() -> None:
    offer = ua().create_offer()
    assert offer.to_str() == crlf(
        """\
v=0
o=- 1000 1000 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 40000 RTP/AVP 96 0 8 97
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:97 telephone-event/8000
a=fmtp:97 0-16
a=ptime:20
a=rtcp-mux
a=sendrecv
"""
    )


def test_offer_options_ipv6_no_mux_rtcp_port_and_extra_attributes() -> None:
    media = local(
        "2001:db8::5",
        50000,
        codecs=[PCMA],
        direction=Direction.RECVONLY,
        ptime=30,
        maxptime=60,
        rtcp_mux=False,
        rtcp_port=50003,
        attributes=[
            Attribute("candidate", "1 1 UDP 2130706431 2001:db8::5 50000 typ host"),
            Attribute("end-of-candidates"),
        ],
    )
    oa = ua(
        media, session_attributes=[Attribute("ice-ufrag", "abcd"), Attribute("ice-pwd", "p" * 22)]
    )
    offer = oa.create_offer()
    assert offer.origin.addrtype == "IP6"
    assert offer.connection == Connection("2001:db8::5", "IP6")
    assert offer.get("ice-ufrag") == "abcd"
    audio = offer.media[0]
    assert audio.formats == ["8"]
    assert [str(a) for a in audio.attributes] == [
        "rtpmap:8 PCMA/8000",
        "ptime:30",
        "maxptime:60",
        "rtcp:50003 IN IP6 2001:db8::5",
        "recvonly",
        "candidate:1 1 UDP 2130706431 2001:db8::5 50000 typ host",
        "end-of-candidates",
    ]


def test_unchanged_reoffer_keeps_version_changed_one_increments() -> None:
    alice, bob = ua(), ua(local("198.51.100.2", 50000))
    offer = alice.create_offer()
    alice.process_answer(bob.process_offer(offer)[0])
    same = alice.create_offer()
    assert same.origin.session_version == offer.origin.session_version
    assert same.to_str() == offer.to_str()
    alice.process_answer(bob.process_offer(same)[0])
    alice.media[0].attributes.append(
        Attribute("candidate", "2 1 UDP 1 203.0.113.9 40000 typ srflx")
    )
    changed = alice.create_offer()
    assert changed.origin.session_version == offer.origin.session_version + 1
    assert changed.origin.session_id == offer.origin.session_id


# -- answers -------------------------------------------------------------------------------------


def test_answer_to_asterisk_uses_offerer_order_and_numbers() -> None:
    bob = ua(local("198.51.100.2", 50000, rtcp_mux=False))
    answer, result = bob.process_offer(crlf(ASTERISK_OFFER))
    audio = answer.media[0]
    assert audio.formats == ["0", "8", "101"]  # offerer's order, our opus/GSM/G722 gaps dropped
    assert rtpmaps(answer) == ["0 PCMU/8000", "8 PCMA/8000", "101 telephone-event/8000"]
    assert audio.fmtp(101) == "0-16"
    assert audio.direction is Direction.SENDRECV
    assert not audio.rtcp_mux
    stream = result.audio
    assert stream is not None
    assert (stream.codec.encoding, stream.payload_type) == ("PCMU/8000", 0)
    assert stream.telephone_event == 101
    assert stream.remote_rtp == ("192.168.1.10", 14562)
    assert stream.remote_rtcp == ("192.168.1.10", 14563)  # RFC 3550 default: port + 1
    assert not stream.remote_ice
    assert stream.ptime == 20 and stream.maxptime == 150
    assert stream.direction is Direction.SENDRECV
    assert stream.receive_payload_types == {0: PCMU, 8: PCMA, 101: DTMF}
    assert result.rejected == []


def test_answer_keeps_offerer_order_even_if_local_preference_differs() -> None:
    bob = ua(local(codecs=[PCMA, PCMU]))
    answer, result = bob.process_offer(G711_ONLY_OFFER)
    assert answer.media[0].formats == ["0", "8"]
    assert result.audio is not None and result.audio.codec == PCMU


def test_single_codec_answer_option() -> None:
    bob = ua(single_codec_answer=True)
    answer, result = bob.process_offer(PJSUA_OFFER)
    assert answer.media[0].formats == ["96", "102"]  # no te/48000 locally: te/8000 it is
    assert result.audio is not None and result.audio.telephone_event == 102
    bob = ua(local(codecs=[PCMU, Codec("telephone-event", 48000), DTMF]), single_codec_answer=True)
    answer, result = bob.process_offer(PJSUA_OFFER)
    assert answer.media[0].formats == ["0", "102"]  # te clock rate follows PCMU


def test_answer_to_pjsua_with_ice_and_separate_rtcp() -> None:
    bob = ua(local("198.51.100.2", 50000))
    answer, result = bob.process_offer(PJSUA_OFFER)
    audio = answer.media[0]
    # 9 (G722) is not ours; telephone-event/48000 is not ours; /8000 is.
    assert audio.formats == ["96", "8", "0", "102"]
    assert audio.fmtp(96) == "useinbandfec=1"
    assert not audio.rtcp_mux  # pjsua did not offer rtcp-mux
    stream = result.audio
    assert stream is not None
    assert stream.codec == Codec("opus", 48000, 2, "useinbandfec=1")
    assert stream.fmtp == {"useinbandfec": "1"}
    assert stream.payload_type == 96
    assert stream.telephone_event == 102
    assert stream.telephone_event_codec == Codec("telephone-event", 8000, 1, "0-16")
    assert stream.remote_rtp == ("192.168.1.100", 4000)
    assert stream.remote_rtcp == ("192.168.1.100", 4001)  # a=rtcp, RFC 3605
    assert not stream.rtcp_mux
    assert stream.attribute("ice-ufrag") == "2b2c6196"
    assert stream.remote_ice
    assert stream.attributes("candidate") == PJSUA_CANDIDATES
    assert stream.remote_session.get("X-nat") == "0"


def test_rtcp_attribute_with_other_address_and_without_address() -> None:
    offer = sdp(G711_ONLY_OFFER)
    offer.media[0].add("rtcp", "7001 IN IP4 203.0.113.50")
    stream = ua(local(rtcp_mux=False)).process_offer(offer)[1].audio
    assert stream is not None and stream.remote_rtcp == ("203.0.113.50", 7001)
    offer.media[0].set("rtcp", "7003")
    stream = ua(local(rtcp_mux=False)).process_offer(offer)[1].audio
    assert stream is not None and stream.remote_rtcp == ("127.0.1.1", 7003)


def test_rtcp_mux_accepted_when_offered_and_supported() -> None:
    answer, result = ua().process_offer(BARESIP_OFFER)
    assert answer.media[0].rtcp_mux
    stream = result.audio
    assert stream is not None and stream.rtcp_mux
    assert stream.remote_rtcp == stream.remote_rtp == ("192.168.1.20", 10002)
    assert stream.fmtp == {"stereo": "1", "sprop-stereo": "1"}
    assert stream.local_codec == OPUS


def test_rtcp_mux_declined_when_not_supported_locally() -> None:
    answer, result = ua(local(rtcp_mux=False)).process_offer(BARESIP_OFFER)
    assert not answer.media[0].rtcp_mux
    stream = result.audio
    assert stream is not None and not stream.rtcp_mux
    assert stream.remote_rtcp == ("192.168.1.20", 10003)


def test_codecs_match_by_name_rate_channels_not_payload_number() -> None:
    offer = sdp(
        "v=0\no=- 1 1 IN IP4 10.0.0.9\ns=-\nc=IN IP4 10.0.0.9\nt=0 0\n"
        "m=audio 3000 RTP/AVP 120 0 121 122\n"
        "a=rtpmap:120 OPUS/48000/2\na=rtpmap:0 pcmu/8000\n"
        "a=rtpmap:121 L16/44100/2\na=rtpmap:122 Telephone-Event/8000\n"
    )
    bob = ua(local(codecs=[PCMU, OPUS, Codec("L16", 44100), DTMF]))
    answer, result = bob.process_offer(offer)
    audio = answer.media[0]
    assert audio.formats == ["120", "0", "122"]  # L16 stereo != our mono L16
    assert rtpmaps(answer) == ["120 opus/48000/2", "0 PCMU/8000", "122 telephone-event/8000"]
    assert audio.fmtp(122) == "0-15"  # RFC 4733: no fmtp means 0-15; intersected with 0-16
    stream = result.audio
    assert stream is not None and stream.payload_type == 120 and stream.telephone_event == 122


def test_telephone_event_omitted_when_not_supported_locally() -> None:
    answer, result = ua(local(codecs=[PCMU])).process_offer(ASTERISK_OFFER)
    assert answer.media[0].formats == ["0"]
    assert result.audio is not None and result.audio.telephone_event is None


def test_telephone_event_clock_rate_follows_the_audio_codec() -> None:
    both = [OPUS, Codec("telephone-event", 48000, 1, "0-16"), DTMF]
    stream = ua(local(codecs=both)).process_offer(PJSUA_OFFER)[1].audio
    assert stream is not None and stream.telephone_event == 101  # /48000 goes with opus
    g711 = [PCMU, Codec("telephone-event", 48000, 1, "0-16"), DTMF]
    stream = ua(local(codecs=g711)).process_offer(PJSUA_OFFER)[1].audio
    assert stream is not None and stream.codec == PCMU and stream.telephone_event == 102


@pytest.mark.parametrize(
    ("offered", "local_direction", "answered"),
    [
        ("sendrecv", Direction.SENDRECV, Direction.SENDRECV),
        ("sendonly", Direction.SENDRECV, Direction.RECVONLY),
        ("recvonly", Direction.SENDRECV, Direction.SENDONLY),
        ("inactive", Direction.SENDRECV, Direction.INACTIVE),
        ("sendrecv", Direction.SENDONLY, Direction.SENDONLY),
        ("sendrecv", Direction.RECVONLY, Direction.RECVONLY),
        ("sendonly", Direction.SENDONLY, Direction.INACTIVE),
        ("recvonly", Direction.RECVONLY, Direction.INACTIVE),
    ],
)
def test_answer_direction(offered: str, local_direction: Direction, answered: Direction) -> None:
    offer = sdp(G711_ONLY_OFFER)
    offer.media[0].set_direction(Direction(offered))
    answer, result = ua(local(direction=local_direction)).process_offer(offer)
    assert answer.media[0].direction is answered
    assert result.audio is not None and result.audio.direction is answered


def test_session_level_direction_in_offer() -> None:
    answer, result = ua().process_offer(
        "v=0\no=- 1 1 IN IP4 10.0.0.9\ns=-\nc=IN IP4 10.0.0.9\nt=0 0\na=sendonly\n"
        "m=audio 3000 RTP/AVP 0\n"
    )
    assert answer.media[0].direction is Direction.RECVONLY
    assert result.audio is not None and not result.audio.sends and result.audio.receives


def test_rfc2543_hold_with_null_address() -> None:
    offer = sdp(G711_ONLY_OFFER)
    offer.connection = Connection("0.0.0.0")
    answer, result = ua().process_offer(offer)
    assert answer.media[0].direction is Direction.RECVONLY
    assert result.audio is not None and not result.audio.sends


def test_null_address_with_ice_is_not_hold() -> None:
    offer = sdp(OPUS_FMTP_OFFER)  # c=IN IP4 0.0.0.0, port 9: trickle ICE, no candidates yet
    offer.media[0].add("ice-ufrag", "Ab12")
    offer.media[0].add("ice-pwd", "x" * 24)
    bob = ua(local(protos=("UDP/TLS/RTP/SAVPF",)))
    answer, result = bob.process_offer(offer)
    assert answer.media[0].direction is Direction.SENDRECV
    assert result.audio is not None and result.audio.remote_rtp == ("0.0.0.0", 9)
    offer.media[0].remove("ice-ufrag")
    answer, _ = ua(local(protos=("UDP/TLS/RTP/SAVPF",))).process_offer(offer)
    assert answer.media[0].direction is Direction.RECVONLY


def test_ipv6_offer() -> None:
    answer, result = ua(local("2001:db8::20", 40000)).process_offer(IPV6_OFFER)
    assert answer.connection == Connection("2001:db8::20", "IP6")
    assert answer.origin.addrtype == "IP6"
    assert answer.media[0].direction is Direction.RECVONLY
    stream = result.audio
    assert stream is not None
    assert stream.remote_rtp == ("2001:db8::10", 54400)
    assert stream.remote_rtcp == ("2001:db8::10", 54401)
    assert stream.ptime == 30


# -- rejection (RFC 3264 §6) ---------------------------------------------------------------------


def test_rfc3264_alice_offer_video_rejected_audio_answered() -> None:
    bob = OfferAnswer(
        [LocalMedia("host.biloxi.example.com", 49172, codecs=[PCMU], ptime=None, rtcp_mux=False)],
        username="bob",
        session_id=2808844564,
    )
    answer, result = bob.process_offer(RFC3264_ALICE_OFFER)
    assert answer.to_str() == crlf(
        """\
v=0
o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com
s=-
c=IN IP4 host.biloxi.example.com
t=0 0
m=audio 49172 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv
m=video 0 RTP/AVP 31 32
"""
    )
    assert [(r.index, r.media, r.reason) for r in result.rejected] == [
        (1, "video", "unsupported media type")
    ]
    assert result.audio is not None and result.audio.remote_rtp == (
        "host.atlanta.example.com",
        49170,
    )


def test_answer_rejects_stream_without_common_codec() -> None:
    offer = sdp(G711_ONLY_OFFER)
    offer.media[0].formats = ["18", "101"]
    offer.media[0].add("rtpmap", "101 telephone-event/8000")
    answer, result = ua().process_offer(offer)
    assert answer.media[0].port == 0
    assert answer.media[0].formats == ["18", "101"]
    assert result.streams == []
    assert result.rejected[0].reason == "no common codec"


def test_answer_keeps_port_zero_lines_and_unsupported_proto() -> None:
    offer = sdp(
        "v=0\no=- 1 1 IN IP4 10.0.0.9\ns=-\nc=IN IP4 10.0.0.9\nt=0 0\n"
        "m=audio 0 RTP/AVP 0\n"
        "m=audio 4000 RTP/SAVP 0\n"
        "m=audio 4002 RTP/AVP 8\n"
        "m=audio 4004 RTP/AVP 0\n"
        "m=application 5000 UDP/BFCP *\n"
    )
    answer, result = ua().process_offer(offer)
    assert [m.port for m in answer.media] == [0, 0, 40000, 0, 0]
    assert [m.media for m in answer.media] == ["audio"] * 4 + ["application"]
    assert [m.proto for m in answer.media] == [
        "RTP/AVP",
        "RTP/SAVP",
        "RTP/AVP",
        "RTP/AVP",
        "UDP/BFCP",
    ]
    assert [s.index for s in result.streams] == [2]
    assert [r.reason for r in result.rejected] == [
        "disabled in offer",
        "unsupported media type",
        "unsupported media type",  # our only audio stream is already in use
        "unsupported media type",
    ]


def test_answer_accepts_other_proto_when_listed() -> None:
    answer, result = ua(local(protos=("RTP/AVP", "UDP/TLS/RTP/SAVPF"))).process_offer(
        OPUS_FMTP_OFFER
    )
    assert answer.media[0].proto == "UDP/TLS/RTP/SAVPF"
    assert answer.media[0].formats == ["111", "0", "8", "126"]
    stream = result.audio
    assert stream is not None and stream.payload_type == 111
    assert stream.attribute("ice-options") == "trickle"
    assert stream.attribute("mid") == "0"


def test_two_local_streams_take_matching_lines() -> None:
    bob = ua(local(port=40000), local(port=42000, media="video", codecs=[Codec("H261", 90000)]))
    answer, result = bob.process_offer(RFC3264_ALICE_OFFER)
    assert [m.port for m in answer.media] == [40000, 42000]
    assert answer.media[1].formats == ["31"]
    assert [s.media for s in result.streams] == ["audio", "video"]
    assert result.stream("VIDEO") is result.streams[1]


def test_offer_without_any_connection_is_rejected() -> None:
    offer = "v=0\no=- 1 1 IN IP4 10.0.0.9\ns=-\nt=0 0\nm=audio 3000 RTP/AVP 0\n"
    answer, result = ua().process_offer(offer)
    assert answer.media[0].port == 0
    assert result.rejected[0].reason == "no connection address"


# -- processing answers (RFC 3264 §7) ------------------------------------------------------------


def test_full_exchange_between_two_instances() -> None:
    alice = ua()
    bob = OfferAnswer(
        [LocalMedia("198.51.100.2", 50000, codecs=[PCMA, Codec("telephone-event", 8000)])],
        session_id=77,
    )
    offer = alice.create_offer()
    assert alice.state is OfferAnswerState.OFFER_SENT
    answer, bob_result = bob.process_offer(offer.to_bytes())
    result = alice.process_answer(answer.to_str())
    assert alice.state is OfferAnswerState.IDLE
    ours, theirs = result.audio, bob_result.audio
    assert ours is not None and theirs is not None
    assert ours.codec.encoding == theirs.codec.encoding == "PCMA/8000"
    assert ours.payload_type == theirs.payload_type == 8
    assert ours.telephone_event == theirs.telephone_event == 97
    assert ours.remote_rtp == ("198.51.100.2", 50000)
    assert theirs.remote_rtp == ("192.0.2.1", 40000)
    assert ours.rtcp_mux is theirs.rtcp_mux is True
    assert ours.remote_rtcp == ours.remote_rtp
    assert alice.negotiation is result and alice.remote_description == answer


def test_answer_with_different_payload_numbers() -> None:
    alice = ua()
    alice.create_offer()
    answer = (
        "v=0\no=- 5 5 IN IP4 10.0.0.7\ns=-\nc=IN IP4 10.0.0.7\nt=0 0\n"
        "m=audio 6000 RTP/AVP 111 100\na=rtpmap:111 opus/48000/2\na=fmtp:111 stereo=1\n"
        "a=rtpmap:100 telephone-event/8000\na=rtcp-mux\n"
    )
    stream = alice.process_answer(answer).audio
    assert stream is not None
    assert stream.payload_type == 111  # we send with the answerer's number (§5.1)
    assert stream.receive_payload_types == {96: OPUS, 97: DTMF}  # and receive with ours
    assert stream.telephone_event == 100
    assert stream.receive_telephone_event == 97
    assert stream.fmtp == {"stereo": "1"}
    assert stream.rtcp_mux and stream.remote_rtcp == ("10.0.0.7", 6000)


def test_answer_codec_order_decides_the_codec() -> None:
    alice = ua()
    alice.create_offer()
    answer = (
        "v=0\no=- 5 5 IN IP4 10.0.0.7\ns=-\nc=IN IP4 10.0.0.7\nt=0 0\nm=audio 6000 RTP/AVP 8 0\n"
    )
    stream = alice.process_answer(answer).audio
    assert stream is not None and stream.codec == PCMA and stream.payload_type == 8
    assert stream.remote_rtcp == ("10.0.0.7", 6001)  # no rtcp-mux in the answer


def test_answer_rejecting_the_stream() -> None:
    alice = ua()
    alice.create_offer()
    result = alice.process_answer(
        "v=0\no=- 5 5 IN IP4 10.0.0.7\ns=-\nc=IN IP4 10.0.0.7\nt=0 0\nm=audio 0 RTP/AVP 0\n"
    )
    assert result.streams == [] and result.audio is None
    assert result.rejected[0].reason == "rejected by answerer"


def test_answer_with_only_foreign_codecs_is_a_failed_stream() -> None:
    alice = ua()
    alice.create_offer()
    result = alice.process_answer(
        "v=0\no=- 5 5 IN IP4 10.0.0.7\ns=-\nc=IN IP4 10.0.0.7\nt=0 0\nm=audio 6000 RTP/AVP 18\n"
    )
    assert result.streams == []
    assert result.rejected[0].reason == "no common codec"


def test_answer_direction_processing() -> None:
    alice = ua()
    alice.create_offer()
    answer = "v=0\no=- 5 5 IN IP4 10.0.0.7\ns=-\nc=IN IP4 10.0.0.7\nt=0 0\n"
    answer += "m=audio 6000 RTP/AVP 0\na=recvonly\n"
    stream = alice.process_answer(answer).audio
    assert stream is not None and stream.direction is Direction.SENDONLY


def test_answer_with_wrong_line_count_is_an_error() -> None:
    alice = ua()
    alice.create_offer()
    with pytest.raises(OfferAnswerError):
        alice.process_answer(crlf(RFC3264_ALICE_OFFER))
    assert alice.state is OfferAnswerState.OFFER_SENT  # still waiting for a usable answer


def test_unparsable_answer_raises_sdp_parse_error() -> None:
    alice = ua()
    alice.create_offer()
    with pytest.raises(SdpParseError):
        alice.process_answer("garbage")


def test_state_errors_glare_and_cancel() -> None:
    alice = ua()
    with pytest.raises(OfferAnswerError):
        alice.process_answer(G711_ONLY_OFFER)
    alice.create_offer()
    with pytest.raises(OfferAnswerError):
        alice.create_offer()
    with pytest.raises(OfferAnswerError, match="glare"):
        alice.process_offer(G711_ONLY_OFFER)
    alice.cancel_offer()
    assert alice.state is OfferAnswerState.IDLE
    answer, result = alice.process_offer(G711_ONLY_OFFER)
    assert result.audio is not None


def test_local_media_required() -> None:
    with pytest.raises(ValueError):
        OfferAnswer([])


# -- re-offers, hold and resume (RFC 3264 §8, RFC 6337) ------------------------------------------


def exchange(offerer: OfferAnswer, answerer: OfferAnswer, offer: SessionDescription):
    answer, answer_result = answerer.process_offer(offer.to_str())
    return offerer.process_answer(answer.to_str()), answer_result, answer


def test_hold_and_resume_cycle() -> None:
    alice, bob = ua(), ua(local("198.51.100.2", 50000))
    offer = alice.create_offer()
    exchange(alice, bob, offer)
    v0 = offer.origin.session_version

    hold = alice.hold()
    assert hold.media[0].direction is Direction.SENDONLY
    assert hold.origin.session_version == v0 + 1
    ours, theirs, bob_answer = exchange(alice, bob, hold)
    assert bob_answer.media[0].direction is Direction.RECVONLY
    assert ours.audio is not None and ours.audio.direction is Direction.SENDONLY
    assert theirs.audio is not None and theirs.audio.direction is Direction.RECVONLY

    again = alice.create_offer()  # e.g. a session refresh while on hold: nothing changes
    assert again.media[0].direction is Direction.SENDONLY
    assert again.origin.session_version == v0 + 1
    exchange(alice, bob, again)

    resume = alice.resume()
    assert resume.media[0].direction is Direction.SENDRECV
    assert resume.origin.session_version == v0 + 2
    ours, theirs, _ = exchange(alice, bob, resume)
    assert ours.audio is not None and ours.audio.direction is Direction.SENDRECV
    assert theirs.audio is not None and theirs.audio.direction is Direction.SENDRECV


def test_hold_when_already_held_offers_inactive() -> None:
    alice, bob = ua(), ua(local("198.51.100.2", 50000))
    exchange(alice, bob, alice.create_offer())
    exchange(bob, alice, bob.hold())  # bob holds alice: alice answers recvonly
    assert alice.negotiation is not None and alice.negotiation.audio is not None
    assert alice.negotiation.audio.direction is Direction.RECVONLY
    hold = alice.hold()
    assert hold.media[0].direction is Direction.INACTIVE
    ours, theirs, _ = exchange(alice, bob, hold)
    assert ours.audio is not None and ours.audio.direction is Direction.INACTIVE
    # bob resumes while alice still holds: alice answers sendonly
    bob_resume = bob.resume()
    answer, result = alice.process_offer(bob_resume)
    assert answer.media[0].direction is Direction.SENDONLY
    bob.process_answer(answer)
    assert alice.create_offer().media[0].direction is Direction.SENDONLY


def test_answerer_version_increments_only_on_change() -> None:
    alice, bob = ua(), ua(local("198.51.100.2", 50000), session_version=7)
    _, _, first = exchange(alice, bob, alice.create_offer())
    assert first.origin.session_version == 7
    _, _, second = exchange(alice, bob, alice.create_offer())
    assert second.origin.session_version == 7
    _, _, third = exchange(alice, bob, alice.hold())
    assert third.origin.session_version == 8
    assert third.origin.session_id == first.origin.session_id


def test_failed_hold_reoffer_restores_state() -> None:
    alice = ua()
    alice.create_offer()
    with pytest.raises(OfferAnswerError):
        alice.hold()
    assert not alice.on_hold


def test_reoffer_after_answering_keeps_lines_and_payload_numbers() -> None:
    bob = ua(local("198.51.100.2", 50000))
    bob.process_offer(RFC3264_ALICE_OFFER)  # video is rejected, audio takes 0 and 8
    reoffer = bob.create_offer()
    assert [(m.media, m.port) for m in reoffer.media] == [("audio", 50000), ("video", 0)]
    assert reoffer.media[1].formats == ["31", "32"]
    assert reoffer.media[0].formats == ["96", "0", "8", "97"]

    bob2 = ua(local("198.51.100.2", 50000))
    bob2.process_offer(PJSUA_OFFER)  # learns opus=96, PCMA=8, PCMU=0, telephone-event=102
    again = bob2.create_offer()
    assert again.media[0].formats == ["96", "0", "8", "102"]
    assert again.media[0].rtpmap(102) == DTMF


def test_remote_reoffer_must_not_drop_lines() -> None:
    bob = ua()
    bob.process_offer(RFC3264_ALICE_OFFER)
    with pytest.raises(OfferAnswerError):
        bob.process_offer(G711_ONLY_OFFER)


def test_remote_reoffer_disabling_a_stream() -> None:
    bob = ua()
    bob.process_offer(ASTERISK_OFFER)
    disabled = sdp(ASTERISK_OFFER)
    disabled.media[0].port = 0
    answer, result = bob.process_offer(disabled)
    assert answer.media[0].port == 0
    assert result.streams == []


def test_added_local_stream_goes_after_existing_lines() -> None:
    alice, bob = ua(), ua(local("198.51.100.2", 50000))
    exchange(alice, bob, alice.create_offer())
    alice.media.append(local(port=42000, media="video", codecs=[Codec("H261", 90000)]))
    reoffer = alice.create_offer()
    assert [(m.media, m.port) for m in reoffer.media] == [("audio", 40000), ("video", 42000)]
    ours, theirs, answer = exchange(alice, bob, reoffer)
    assert [m.port for m in answer.media] == [50000, 0]
    assert [r.reason for r in ours.rejected] == ["rejected by answerer"]


def test_ice_attributes_injected_and_read_back() -> None:
    alice = ua(session_attributes=[Attribute("ice-options", "trickle")])
    alice.session_attributes.append(Attribute("ice-ufrag", "8hhY"))
    alice.session_attributes.append(Attribute("ice-pwd", "asd88fgpdd777uzjYhagZg"))
    alice.media[0].attributes.extend(Attribute("candidate", c) for c in PJSUA_CANDIDATES)
    bob = ua(local("198.51.100.2", 50000))
    offer = alice.create_offer()
    _, bob_result, _ = exchange(alice, bob, offer)
    stream = bob_result.audio
    assert stream is not None
    assert stream.attribute("ice-ufrag") == "8hhY"
    assert stream.attribute("ice-options") == "trickle"
    assert stream.attributes("candidate") == PJSUA_CANDIDATES


# -- RFC 3264 §10 examples -----------------------------------------------------------------------

RFC3264_BOB_ANSWER = sdp_sample("rfc3264-10.1-bob-answer")

RFC3264_BOB_REOFFER = sdp_sample("rfc3264-10.1-bob-reoffer")


def test_rfc3264_10_1_basic_exchange_as_alice() -> None:
    alice = OfferAnswer(
        [
            LocalMedia(
                "host.atlanta.example.com",
                49170,
                codecs=[PCMU, PCMA, Codec("iLBC", 8000)],
                ptime=None,
                rtcp_mux=False,
            ),
            LocalMedia(
                "host.atlanta.example.com",
                51372,
                media="video",
                codecs=[Codec("H261", 90000), Codec("MPV", 90000)],
                ptime=None,
                rtcp_mux=False,
            ),
            LocalMedia(
                "host.atlanta.example.com",
                53122,
                codecs=[Codec("telephone-events", 8000)],
                ptime=None,
                rtcp_mux=False,
            ),
        ],
        username="alice",
        session_id=2890844526,
    )
    # Alice only offers what she wants now: the events stream is added later by Bob.
    events = alice.media.pop()
    offer = alice.create_offer()
    # The RFC's offer, except: s=- (not empty), iLBC gets the first dynamic number (96, not
    # 97) and the direction is explicit.
    assert offer.to_str() == crlf(
        """\
v=0
o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
s=-
c=IN IP4 host.atlanta.example.com
t=0 0
m=audio 49170 RTP/AVP 0 8 96
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:96 iLBC/8000
a=sendrecv
m=video 51372 RTP/AVP 31 32
a=rtpmap:31 H261/90000
a=rtpmap:32 MPV/90000
a=sendrecv
"""
    )
    result = alice.process_answer(RFC3264_BOB_ANSWER)
    audio, video = result.streams
    assert (audio.codec, audio.remote_rtp) == (PCMU, ("host.biloxi.example.com", 49174))
    assert (video.codec, video.payload_type) == (Codec("MPV", 90000), 32)
    assert video.remote_rtcp == ("host.biloxi.example.com", 49171)

    alice.media.append(events)
    answer, result = alice.process_offer(RFC3264_BOB_REOFFER)
    assert [(m.media, m.port, m.formats) for m in answer.media] == [
        ("audio", 49170, ["0"]),
        ("video", 0, ["32"]),
        ("audio", 53122, ["110"]),
    ]
    assert answer.media[2].direction is Direction.SENDONLY
    assert answer.origin.session_version == offer.origin.session_version + 1
    assert [(s.index, s.remote_rtp[1], s.direction) for s in result.streams] == [
        (0, 65422, Direction.SENDRECV),
        (2, 51434, Direction.SENDONLY),
    ]
    assert result.rejected[0].index == 1


def test_rfc3264_10_2_one_of_n_codec_selection_as_bob() -> None:
    g723, g729 = Codec("G723", 8000), Codec("G729", 8000)
    bob = OfferAnswer(
        [LocalMedia("host.biloxi.example.com", 54520, codecs=[PCMU, g723, g729], ptime=None)],
        username="bob",
        session_id=2808844564,
    )
    offer = crlf(
        "v=0\no=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\ns=\n"
        "c=IN IP4 host.atlanta.example.com\nt=0 0\nm=audio 62986 RTP/AVP 0 4 18\n"
        "a=rtpmap:0 PCMU/8000\na=rtpmap:4 G723/8000\na=rtpmap:18 G729/8000\na=inactive\n"
    )
    answer, result = bob.process_offer(offer)
    assert answer.media[0].formats == ["0", "4", "18"]
    assert answer.media[0].direction is Direction.INACTIVE
    assert result.audio is not None and result.audio.direction is Direction.INACTIVE
    # Alice picks G.723 and activates the stream.
    reoffer = offer.replace("0 4 18", "4").replace("inactive", "sendrecv")
    reoffer = reoffer.replace("2890844526 IN", "2890844527 IN")
    answer2, result2 = bob.process_offer(reoffer)
    assert answer2.media[0].formats == ["4"]
    assert answer2.media[0].direction is Direction.SENDRECV
    assert answer2.origin.session_version == answer.origin.session_version + 1
    assert result2.audio is not None and result2.audio.codec == g723


def test_answer_copies_the_offer_timing() -> None:
    offer = sdp(G711_ONLY_OFFER)
    offer.timing[0].start, offer.timing[0].stop = 3034423619, 3042462419
    answer, _ = ua().process_offer(offer)
    assert [(t.start, t.stop) for t in answer.timing] == [(3034423619, 3042462419)]


def test_reoffer_keeps_the_transport_accepted_from_the_remote() -> None:
    bob = ua(local(protos=("RTP/AVP", "UDP/TLS/RTP/SAVPF")))
    bob.process_offer(OPUS_FMTP_OFFER)
    assert bob.create_offer().media[0].proto == "UDP/TLS/RTP/SAVPF"


def test_local_rtcp_port() -> None:
    stream = ua(local(port=40000)).process_offer(BARESIP_OFFER)[1].audio
    assert stream is not None and stream.local_rtcp_port == 40000  # muxed
    stream = ua(local(port=40000)).process_offer(ASTERISK_OFFER)[1].audio
    assert stream is not None and stream.local_rtcp_port == 40001
    stream = ua(local(port=40000, rtcp_port=40005)).process_offer(ASTERISK_OFFER)[1].audio
    assert stream is not None and stream.local_rtcp_port == 40005
    assert stream.local_rtp_port == 40000


# -- real peer: baresip 1.0.0 --------------------------------------------------------------------


def test_real_baresip_answer_to_our_default_offer() -> None:
    alice = OfferAnswer([LocalMedia("127.0.0.1", 41000)], session_id=123456)
    alice.create_offer()  # the exact offer baresip was sent when the answer was captured
    result = alice.process_answer(BARESIP_1_0_ANSWER_TO_US)
    stream = result.audio
    assert stream is not None
    assert (stream.codec.encoding, stream.payload_type) == ("opus/48000/2", 96)
    assert stream.fmtp == {"stereo": "1", "sprop-stereo": "1"}
    assert stream.telephone_event == 97
    assert stream.remote_rtp == stream.remote_rtcp == ("192.0.2.2", 1348)  # media-level c=
    assert stream.rtcp_mux and stream.direction is Direction.SENDRECV
    assert stream.ptime == 20
    assert stream.attribute("ice-ufrag") == "phkXHe4"
    assert stream.attribute("ice-mismatch") == ""
    assert len(stream.attributes("candidate")) == 2


def test_answer_to_real_baresip_offer() -> None:
    bob = ua(local("127.0.0.1", 41000))
    answer, result = bob.process_offer(BARESIP_1_0_OFFER)
    audio = answer.media[0]
    assert audio.formats == ["0", "8", "96", "101"]
    assert audio.fmtp(96) == "useinbandfec=1"  # our receive preferences, not theirs
    assert audio.fmtp(101) == "0-15"
    assert audio.rtcp_mux
    stream = result.audio
    assert stream is not None
    assert (stream.codec, stream.payload_type, stream.telephone_event) == (PCMU, 0, 101)
    assert stream.remote_rtp == ("192.0.2.2", 37776)
    assert stream.attribute("ice-pwd") == "q9MDTN6oX90ZtWRPWA5e62xtrGuq4ef"


def test_reject_offer_restores_the_previous_session() -> None:
    alice, bob = ua(), ua(local("198.51.100.2", 50000))
    _, _, answer = exchange(alice, bob, alice.create_offer())
    before = bob.negotiation
    # A re-offer bob cannot take (only G.729): the SIP layer answers 488 and undoes it.
    reoffer = sdp(ASTERISK_OFFER)
    reoffer.media[0].formats = ["18"]
    bad_answer, result = bob.process_offer(reoffer)
    assert (
        result.streams == []
        and bad_answer.origin.session_version == answer.origin.session_version + 1
    )
    bob.reject_offer()
    assert bob.negotiation is before
    assert bob.local_description is not None
    assert bob.local_description.to_str() == answer.to_str()
    exchange(bob, alice, bob.create_offer())
    # Same content as the answer it had sent before the undone one: same version (§8).
    assert bob.local_description.origin.session_version == answer.origin.session_version
    with pytest.raises(OfferAnswerError):
        bob.reject_offer()  # nothing left to undo


def test_local_streams_without_codecs_or_removed_are_not_offered() -> None:
    alice = ua(local(), local(port=42000, media="video", codecs=[]))
    offer = alice.create_offer()
    assert [m.media for m in offer.media] == ["audio"]
    alice.cancel_offer()
    alice.media[1].codecs = [Codec("H261", 90000)]
    bob = ua(local("198.51.100.2", 50000))
    exchange(alice, bob, alice.create_offer())
    del alice.media[1]
    reoffer = alice.create_offer()
    assert [(m.media, m.port) for m in reoffer.media] == [("audio", 40000), ("video", 0)]


def test_packet_time() -> None:
    stream = ua(local(ptime=20)).process_offer(IPV6_OFFER)[1].audio
    assert stream is not None and stream.packet_time == 30  # the remote's a=ptime
    stream = ua(local(ptime=40)).process_offer(G711_ONLY_OFFER)[1].audio
    assert stream is not None and stream.packet_time == 40  # no remote ptime: ours
    stream = ua(local(ptime=None)).process_offer(G711_ONLY_OFFER)[1].audio
    assert stream is not None and stream.packet_time == 20
    offer = sdp(ASTERISK_OFFER)
    offer.media[0].set("ptime", "60")
    offer.media[0].set("maxptime", "40")
    stream = ua().process_offer(offer)[1].audio
    assert stream is not None and stream.packet_time == 40


def test_rtcp_attribute_in_offers_and_answers() -> None:
    media = local(port=40000, rtcp_port=40001, rtcp_address="203.0.113.7")
    offer = ua(media).create_offer()
    assert offer.media[0].rtcp is not None and offer.media[0].rtcp_mux
    assert str(offer.media[0].rtcp) == "40001 IN IP4 203.0.113.7"
    answer, _ = ua(media).process_offer(BARESIP_OFFER)  # rtcp-mux accepted: no a=rtcp
    assert answer.media[0].rtcp_mux and answer.media[0].rtcp is None
    answer, result = ua(media).process_offer(ASTERISK_OFFER)  # no mux offered
    assert not answer.media[0].rtcp_mux
    assert str(answer.media[0].rtcp) == "40001 IN IP4 203.0.113.7"
    assert result.audio is not None and result.audio.local_rtcp_port == 40001
