"""RFC 8866 SDP model, parser and serializer (sip.sdp)."""

from __future__ import annotations

import pytest

from sip.sdp import (
    Attribute,
    Bandwidth,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    RtcpAttribute,
    SdpLine,
    SdpParseError,
    SessionDescription,
    Timing,
    parse_sdp,
)
from tests.helpers_sip import sdp_sample


def crlf(text: str) -> str:
    """Test SDPs are written with LF; the wire (and our serializer) uses CRLF."""
    return text.replace("\n", "\r\n")


# Realistic descriptions (in tests/data/sdp), written the way these user agents put them on the
# wire (canonical order, so the serializer must reproduce them exactly).

ASTERISK_OFFER = sdp_sample("asterisk-offer")

PJSUA_CANDIDATES = [
    "Hc0a83801 1 UDP 2130706431 192.168.56.1 4000 typ host",
    "Hac110001 1 UDP 2130706175 172.17.0.1 4000 typ host",
    "H0a000005 1 UDP 2130705919 10.0.0.5 4000 typ host",
    "Hc0a80164 1 UDP 2130705663 192.168.1.100 4000 typ host",
    "Sc0a80164 1 UDP 1694498815 203.0.113.5 4000 typ srflx raddr 192.168.1.100 rport 4000",
    "Rcb007105 1 UDP 16777215 198.51.100.7 49152 typ relay raddr 203.0.113.5 rport 4000",
    "Hc0a83801 2 UDP 2130706430 192.168.56.1 4001 typ host",
    "Hac110001 2 UDP 2130706174 172.17.0.1 4001 typ host",
    "H0a000005 2 UDP 2130705918 10.0.0.5 4001 typ host",
    "Hc0a80164 2 UDP 2130705662 192.168.1.100 4001 typ host",
    "Sc0a80164 2 UDP 1694498814 203.0.113.5 4001 typ srflx raddr 192.168.1.100 rport 4001",
    "Rcb007105 2 UDP 16777214 198.51.100.7 49153 typ relay raddr 203.0.113.5 rport 4001",
]

PJSUA_OFFER = (
    """\
v=0
o=- 3894520519 3894520520 IN IP4 192.168.1.100
s=pjmedia
b=AS:117
t=0 0
a=X-nat:0
m=audio 4000 RTP/AVP 96 9 8 0 101 102
c=IN IP4 192.168.1.100
b=TIAS:96000
a=rtcp:4001 IN IP4 192.168.1.100
a=sendrecv
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:9 G722/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/48000
a=fmtp:101 0-16
a=rtpmap:102 telephone-event/8000
a=fmtp:102 0-16
a=ice-ufrag:2b2c6196
a=ice-pwd:06eb7d38157a6b8d36b0ec2d
"""
    + "".join(f"a=candidate:{c}\n" for c in PJSUA_CANDIDATES)
    + "a=ssrc:1489125186 cname:5a7e3c2c1f3b4b29\n"
)

BARESIP_OFFER = sdp_sample("baresip-3.8-offer")

# Captured from baresip 1.0.0 (Debian 12) calling another baresip on this machine, and its
# answer to the offer our OfferAnswer builds with default capabilities (see test_offer_answer).
BARESIP_1_0_OFFER = sdp_sample("baresip-1.0-offer")

BARESIP_1_0_ANSWER_TO_US = sdp_sample("baresip-1.0-answer-to-us")

OPUS_FMTP_OFFER = sdp_sample("firefox-opus-fmtp-offer")

G711_ONLY_OFFER = sdp_sample("g711-only-offer")

IPV6_OFFER = sdp_sample("ipv6-offer")

# RFC 3264 §10.1, Alice's offer (s= is empty there).
RFC3264_ALICE_OFFER = sdp_sample("rfc3264-10.1-alice-offer")

# RFC 8866 §5 example (with every kind of session-level line).
RFC8866_EXAMPLE = sdp_sample("rfc8866-5-example")

MULTICAST_EXAMPLE = sdp_sample("multicast-example")

SAMPLES = {
    "asterisk": ASTERISK_OFFER,
    "pjsua": PJSUA_OFFER,
    "baresip": BARESIP_OFFER,
    "baresip-1.0-offer": BARESIP_1_0_OFFER,
    "baresip-1.0-answer": BARESIP_1_0_ANSWER_TO_US,
    "opus-fmtp": OPUS_FMTP_OFFER,
    "g711-only": G711_ONLY_OFFER,
    "ipv6": IPV6_OFFER,
    "rfc3264-alice": RFC3264_ALICE_OFFER,
    "rfc8866": RFC8866_EXAMPLE,
    "multicast": MULTICAST_EXAMPLE,
}
# IP_CAMERA (further down) is not in canonical order, so it is not a round-trip sample; the
# fuzz tests mutate it too.


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_canonical_samples_round_trip_exactly(name: str) -> None:
    text = crlf(SAMPLES[name])
    parsed = parse_sdp(text)
    assert parsed.to_str() == text
    assert parse_sdp(parsed.to_bytes()) == parsed


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_bare_lf_and_crlf_parse_the_same(name: str) -> None:
    assert parse_sdp(SAMPLES[name]) == parse_sdp(crlf(SAMPLES[name]))
    assert parse_sdp(SAMPLES[name].encode()) == parse_sdp(SAMPLES[name])


def test_serializer_uses_crlf_only() -> None:
    out = parse_sdp(ASTERISK_OFFER).to_bytes()
    assert out.count(b"\r\n") == ASTERISK_OFFER.count("\n")
    assert b"\n" not in out.replace(b"\r\n", b"")
    assert out.endswith(b"a=sendrecv\r\n")


def test_mixed_line_ends_and_blank_lines_are_tolerated() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\ns=-\r\rc=IN IP4 10.0.0.1\r\n\r\nt=0 0\n"
        "m=audio 5 RTP/AVP 0\n\n"
    )
    parsed = parse_sdp(text)
    assert parsed.connection == Connection("10.0.0.1")
    assert parsed.media[0].port == 5
    assert parsed.to_str() == crlf(
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 5 RTP/AVP 0\n"
    )


def test_non_utf8_bytes_survive_byte_exactly() -> None:
    raw = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=caf\xe9\r\nt=0 0\r\na=x-note:\xff\xfe\r\n"
    assert parse_sdp(raw).to_bytes() == raw


# -- structure -----------------------------------------------------------------------------------


def test_asterisk_offer_fields() -> None:
    sdp = parse_sdp(ASTERISK_OFFER)
    assert sdp.version == 0
    assert sdp.origin == Origin("-", "1766343234", 1766343234, "IN", "IP4", "192.168.1.10")
    assert sdp.session_name == "Asterisk"
    assert sdp.connection == Connection("192.168.1.10", "IP4", "IN")
    assert sdp.timing == [Timing(0, 0)]
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.port_count, audio.proto) == (
        "audio",
        14562,
        None,
        "RTP/AVP",
    )
    assert audio.formats == ["0", "8", "3", "9", "101"]
    assert audio.payload_types == [0, 8, 3, 9, 101]
    assert audio.ptime == 20
    assert audio.maxptime == 150
    assert audio.direction is Direction.SENDRECV
    assert not audio.rtcp_mux
    assert audio.rtcp is None
    assert sdp.media_connection(audio) == sdp.connection


def test_rfc8866_example_session_fields() -> None:
    sdp = parse_sdp(RFC8866_EXAMPLE)
    assert sdp.information == "SDP Offer #1"
    assert sdp.uri == "http://www.jdoe.example.com/home.html"
    assert sdp.emails == ["Jane Doe <jane@jdoe.example.com>"]
    assert sdp.phones == ["+1 617 555-6011"]
    assert [m.port for m in sdp.media] == [49170, 49180, 51372]
    video = sdp.media[2]
    assert video.connection == Connection("2001:db8::2", "IP6")
    assert sdp.media_connection(0) == Connection("198.51.100.1")
    assert video.rtpmap(99) == Codec("h263-1998", 90000)


def test_multicast_connection_timing_and_keys() -> None:
    sdp = parse_sdp(MULTICAST_EXAMPLE)
    assert sdp.connection == Connection("233.252.0.1", "IP4", "IN", ttl=127, count=3)
    assert sdp.timing == [Timing(3034423619, 3042462419, ["604800 3600 0 90000", "7d 1h 0 25h"])]
    assert sdp.time_zones == "2882844526 -1h 2898848070 0"
    assert sdp.encryption_key == "prompt"
    audio, video = sdp.media
    assert (audio.port, audio.port_count) == (49170, 2)
    assert audio.connection == Connection("ff1e:db8::101", "IP6", count=3)
    assert video.connection == Connection("233.252.0.2", ttl=127)
    assert video.extra_connections == [Connection("233.252.0.3", ttl=127)]
    assert video.bandwidths == [Bandwidth("AS", 256), Bandwidth("TIAS", 256000)]
    assert video.encryption_key == "clear:secret"
    assert sdp.direction is Direction.RECVONLY
    assert sdp.media_direction(audio) is Direction.RECVONLY


def test_ipv6_lines() -> None:
    sdp = parse_sdp(IPV6_OFFER)
    assert sdp.origin.addrtype == "IP6"
    assert sdp.origin.address == "2001:db8::10"
    assert sdp.connection == Connection("2001:db8::10", "IP6")
    assert str(sdp.connection) == "IN IP6 2001:db8::10"
    assert sdp.media[0].ptime == 30


def test_connection_for_address() -> None:
    assert str(Connection.for_address("192.0.2.7")) == "IN IP4 192.0.2.7"
    assert str(Connection.for_address("2001:DB8::1")) == "IN IP6 2001:db8::1"
    assert str(Connection.for_address("pbx.example.com")) == "IN IP4 pbx.example.com"
    assert Connection.for_address("0.0.0.0").is_null
    assert Connection.for_address("::").is_null
    assert not Connection.for_address("10.0.0.1").is_null


# -- codecs --------------------------------------------------------------------------------------


def test_rtpmap_and_fmtp_lookup_pjsua() -> None:
    audio = parse_sdp(PJSUA_OFFER).media[0]
    assert audio.rtpmap(96) == Codec("opus", 48000, 2, "useinbandfec=1")
    assert audio.rtpmap("96") == audio.rtpmap(96)
    assert audio.fmtp(96) == "useinbandfec=1"
    assert audio.fmtp_params(96) == {"useinbandfec": "1"}
    assert audio.rtpmap(101) == Codec("telephone-event", 48000, 1, "0-16")
    assert audio.rtpmap(102) == Codec("telephone-event", 8000, 1, "0-16")
    assert audio.fmtp(9) is None
    assert audio.rtpmap(55) is None
    codecs = audio.codecs()
    assert list(codecs) == [96, 9, 8, 0, 101, 102]
    assert [c.encoding for c in codecs.values()] == [
        "opus/48000/2",
        "G722/8000",
        "PCMA/8000",
        "PCMU/8000",
        "telephone-event/48000",
        "telephone-event/8000",
    ]


def test_static_payload_types_without_rtpmap() -> None:
    audio = parse_sdp(G711_ONLY_OFFER).media[0]
    assert audio.rtpmap(0) is None
    assert audio.codec(0) == Codec("PCMU", 8000)
    assert audio.codec(8) == Codec("PCMA", 8000)
    assert audio.codecs() == {0: Codec("PCMU", 8000), 8: Codec("PCMA", 8000)}


def test_rtpmap_overrides_static_assignment_and_unknown_dynamic_is_skipped() -> None:
    media = MediaDescription("audio", 1000, "RTP/AVP", ["8", "99", "100"])
    media.add("rtpmap", "8 L16/16000")  # odd but explicit: rtpmap wins
    media.add("rtpmap", "100 speex/16000")
    assert media.codecs() == {8: Codec("L16", 16000), 100: Codec("speex", 16000)}


def test_opus_fmtp_parameters_with_spaces() -> None:
    audio = parse_sdp(OPUS_FMTP_OFFER).media[0]
    assert audio.fmtp_params(111) == {
        "maxplaybackrate": "48000",
        "stereo": "1",
        "useinbandfec": "1",
        "minptime": "10",
    }
    opus = audio.codec(111)
    assert opus is not None and opus.params["useinbandfec"] == "1"
    assert audio.codec(126) == Codec("telephone-event", 8000, 1, "0-15")
    assert Codec("telephone-event", 8000, 1, "0-15").params == {"0-15": ""}


def test_codec_match_ignores_case_pt_and_fmtp_but_not_rate_or_channels() -> None:
    assert Codec("OPUS", 48000, 2).match(Codec("opus", 48000, 2, "stereo=1"))
    assert Codec("pcmu", 8000).match(Codec("PCMU", 8000, 1))
    assert not Codec("opus", 48000, 2).match(Codec("opus", 48000, 1))
    assert not Codec("telephone-event", 8000).match(Codec("telephone-event", 48000))
    assert Codec("PCMU", 8000).encoding == "PCMU/8000"
    assert Codec("opus", 48000, 2).encoding == "opus/48000/2"


@pytest.mark.parametrize("bad", ["96 opus", "96 opus/x", "96 /8000", "96 opus/48000/2/1", "96"])
def test_malformed_rtpmap_is_ignored_not_fatal(bad: str) -> None:
    media = MediaDescription("audio", 1000, "RTP/AVP", ["96"])
    media.add("rtpmap", bad)
    assert media.rtpmap(96) is None
    assert media.codecs() == {}


def test_add_codec_and_remove_format() -> None:
    media = MediaDescription("audio", 1000, "RTP/AVP")
    media.add_codec(96, Codec("opus", 48000, 2, "useinbandfec=1"))
    media.add_codec(0, Codec("PCMU", 8000))
    media.add("rtcp-fb", "96 nack")
    media.add("ptime", "20")
    assert media.formats == ["96", "0"]
    media.remove_format(96)
    assert media.formats == ["0"]
    assert [str(a) for a in media.attributes] == ["rtpmap:0 PCMU/8000", "ptime:20"]


# -- attributes ----------------------------------------------------------------------------------


def test_unknown_attributes_and_lines_are_kept_in_order() -> None:
    text = crlf(
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nt=0 0\na=x-first:1\na=weird\na=x-first:2\n"
        "x=unknown session line\nm=audio 5000 RTP/AVP 0\na=zzz:1\na=sendonly\na=aaa\n"
        "y=0100000001\nf=v/2/3/4\n"
    )
    sdp = parse_sdp(text)
    assert [str(a) for a in sdp.attributes] == ["x-first:1", "weird", "x-first:2"]
    assert sdp.other_lines == [SdpLine("x", "unknown session line")]
    audio = sdp.media[0]
    assert [a.name for a in audio.attributes] == ["zzz", "sendonly", "aaa"]
    assert audio.other_lines == [SdpLine("y", "0100000001"), SdpLine("f", "v/2/3/4")]
    assert sdp.to_str() == text


def test_repeated_single_valued_lines_are_kept_not_dropped() -> None:
    text = crlf("v=0\no=- 1 1 IN IP4 10.0.0.1\no=- 2 2 IN IP4 10.0.0.2\ns=a\ns=b\nt=0 0\n")
    sdp = parse_sdp(text)
    assert sdp.origin.session_id == "1"
    assert sdp.session_name == "a"
    assert sdp.other_lines == [SdpLine("o", "- 2 2 IN IP4 10.0.0.2"), SdpLine("s", "b")]
    assert parse_sdp(sdp.to_str()) == sdp


def test_out_of_order_lines_are_tolerated_and_canonicalised() -> None:
    text = (
        "v=0\ns=-\nt=0 0\no=- 1 1 IN IP4 10.0.0.1\na=foo\nc=IN IP4 10.0.0.1\nm=audio 1 RTP/AVP 0\n"
    )
    sdp = parse_sdp(text)
    assert sdp.connection == Connection("10.0.0.1")
    assert sdp.to_str() == crlf(
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\na=foo\nm=audio 1 RTP/AVP 0\n"
    )


def test_attribute_values_keep_colons_and_spaces() -> None:
    sdp = parse_sdp(OPUS_FMTP_OFFER)
    assert sdp.get("msid-semantic") == "WMS *"
    ssrc = parse_sdp(BARESIP_OFFER).media[0].get("ssrc")
    assert ssrc == "3023512337 cname:b3b4aa1e-8f4c-4d4e-9e0a-3b1f0a9e6c21"
    assert Attribute.parse("fingerprint:sha-256 AB:CD") == Attribute("fingerprint", "sha-256 AB:CD")
    assert Attribute.parse("flag") == Attribute("flag", None)
    assert Attribute.parse("empty:") == Attribute("empty", "")
    assert str(Attribute("empty", "")) == "empty:"


def test_get_get_all_has() -> None:
    audio = parse_sdp(PJSUA_OFFER).media[0]
    assert audio.get("ice-ufrag") == "2b2c6196"
    assert audio.get("ICE-UFRAG") == "2b2c6196"  # names compare case-insensitively
    assert audio.get("sendrecv") == ""  # property attribute
    assert audio.get("nope") is None
    assert len(audio.get_all("rtpmap")) == 6
    assert audio.has("rtcp") and not audio.has("rtcp-mux")


def test_set_replaces_in_place_and_remove_keeps_others_in_order() -> None:
    media = MediaDescription("audio", 1, "RTP/AVP", ["0"])
    for name, value in [("a", "1"), ("b", "1"), ("a", "2"), ("c", None), ("b", "2")]:
        media.add(name, value)
    media.set("a", "X")
    assert [str(x) for x in media.attributes] == ["a:X", "b:1", "c", "b:2"]
    media.set("new", "v")
    assert [str(x) for x in media.attributes][-1] == "new:v"
    assert media.remove("b") == 2
    assert [str(x) for x in media.attributes] == ["a:X", "c", "new:v"]
    assert media.remove("missing") == 0


def test_direction_media_level_overrides_session_level() -> None:
    text = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nt=0 0\na=sendonly\nm=audio 1 RTP/AVP 0\n"
    text += "m=audio 2 RTP/AVP 0\na=inactive\n"
    sdp = parse_sdp(text)
    assert sdp.direction is Direction.SENDONLY
    assert sdp.media[0].direction is None
    assert sdp.media_direction(0) is Direction.SENDONLY
    assert sdp.media_direction(1) is Direction.INACTIVE
    sdp.set_direction(None)
    assert sdp.media_direction(0) is Direction.SENDRECV


def test_set_direction_replaces_in_place() -> None:
    audio = parse_sdp(PJSUA_OFFER).media[0]
    names = [a.name for a in audio.attributes]
    audio.set_direction(Direction.INACTIVE)
    assert [a.name for a in audio.attributes] == [
        "inactive" if n == "sendrecv" else n for n in names
    ]
    audio.set_direction(None)
    assert audio.direction is None
    audio.set_direction(Direction.RECVONLY)
    assert audio.attributes[-1] == Attribute("recvonly")


def test_direction_algebra() -> None:
    assert Direction.SENDONLY.reverse() is Direction.RECVONLY
    assert Direction.RECVONLY.reverse() is Direction.SENDONLY
    assert Direction.SENDRECV.reverse() is Direction.SENDRECV
    assert Direction.INACTIVE.reverse() is Direction.INACTIVE
    assert Direction.SENDRECV.intersect(Direction.SENDONLY) is Direction.SENDONLY
    assert Direction.RECVONLY.intersect(Direction.SENDONLY) is Direction.INACTIVE
    assert Direction.from_flags(send=True, receive=True) is Direction.SENDRECV


def test_rtcp_attribute_rfc3605() -> None:
    pjsua = parse_sdp(PJSUA_OFFER).media[0]
    assert pjsua.rtcp == RtcpAttribute(4001, "192.168.1.100", "IP4", "IN")
    assert str(pjsua.rtcp) == "4001 IN IP4 192.168.1.100"
    media = MediaDescription(
        "audio", 5000, "RTP/AVP", ["0"], attributes=[Attribute("rtcp", "53020")]
    )
    assert media.rtcp == RtcpAttribute(53020)
    media.set("rtcp", "53020 IN IP6 2001:db8::1")
    assert media.rtcp == RtcpAttribute(53020, "2001:db8::1", "IP6")
    for bad in ["x", "70000", "1 IN IP4", ""]:
        media.set("rtcp", bad)
        assert media.rtcp is None


def test_rtcp_mux_property() -> None:
    media = parse_sdp(BARESIP_OFFER).media[0]
    assert media.rtcp_mux
    media.rtcp_mux = False
    assert not media.has("rtcp-mux")
    media.rtcp_mux = True
    media.rtcp_mux = True
    assert media.get_all("rtcp-mux") == [""]


@pytest.mark.parametrize(
    ("value", "expected"), [("20", 20), ("20.0", 20), (" 30 ", 30), ("abc", None), ("-5", None)]
)
def test_ptime_values(value: str, expected: int | None) -> None:
    media = MediaDescription("audio", 1, "RTP/AVP", ["0"], attributes=[Attribute("ptime", value)])
    assert media.ptime == expected


# -- ICE attributes survive untouched ------------------------------------------------------------


def test_pjsua_twelve_candidates_survive_exactly() -> None:
    sdp = parse_sdp(PJSUA_OFFER)
    audio = sdp.media[0]
    assert audio.get_all("candidate") == PJSUA_CANDIDATES
    assert audio.get("ice-pwd") == "06eb7d38157a6b8d36b0ec2d"
    out = sdp.to_str()
    for candidate in PJSUA_CANDIDATES:
        assert f"\r\na=candidate:{candidate}\r\n" in out
    assert parse_sdp(out).media[0].get_all("candidate") == PJSUA_CANDIDATES


def test_ice_attributes_are_plain_attributes_at_both_levels() -> None:
    text = crlf(
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nt=0 0\na=ice-ufrag:F7gI\n"
        "a=ice-pwd:x9cml/YzichV2+XlhiMu8g\n"
        "a=ice-options:trickle ice2\nm=audio 5000 RTP/AVP 0\nc=IN IP4 10.0.0.1\n"
        "a=candidate:1 1 UDP 2130706431 10.0.0.1 5000 typ host\n"
        "a=candidate:2 1 TCP 1518280447 10.0.0.1 9 typ host tcptype active\n"
        "a=remote-candidates:1 192.0.2.3 45664\na=end-of-candidates\n"
    )
    sdp = parse_sdp(text)
    assert sdp.media_attribute(0, "ice-ufrag") == "F7gI"
    assert sdp.media_attribute(0, "remote-candidates") == "1 192.0.2.3 45664"
    assert sdp.media[0].has("end-of-candidates")
    assert sdp.to_str() == text


# -- building descriptions -----------------------------------------------------------------------


def test_model_built_from_scratch_serializes_to_valid_sdp() -> None:
    audio = MediaDescription("audio", 40000, "RTP/AVP", connection=Connection.for_address("::1"))
    audio.add_codec(96, Codec("opus", 48000, 2, "useinbandfec=1"))
    audio.add_codec(0, Codec("PCMU", 8000))
    audio.set_direction(Direction.SENDRECV)
    sdp = SessionDescription(origin=Origin("alice", "42", 1, "IN", "IP6", "::1"), media=[audio])
    assert sdp.to_str() == crlf(
        "v=0\no=alice 42 1 IN IP6 ::1\ns=-\nt=0 0\nm=audio 40000 RTP/AVP 96 0\nc=IN IP6 ::1\n"
        "a=rtpmap:96 opus/48000/2\na=fmtp:96 useinbandfec=1\na=rtpmap:0 PCMU/8000\na=sendrecv\n"
    )
    assert parse_sdp(sdp.to_str()) == sdp


def test_serializer_refuses_line_breaks_in_fields() -> None:
    sdp = parse_sdp(ASTERISK_OFFER)
    sdp.media[0].add("x-evil", "1\r\nm=video 1 RTP/AVP 0")
    with pytest.raises(ValueError, match="line break"):
        sdp.to_str()


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\r\n\r\n",
        "o=- 1 1 IN IP4 10.0.0.1\nv=0\n",  # v= must come first
        "v=x\no=- 1 1 IN IP4 1.2.3.4\n",
        "v=0\ns=-\nt=0 0\n",  # no o=
        "v=0\no=- 1 1 IN IP4\n",  # o= too short
        "v=0\no=- 1 one IN IP4 1.2.3.4\n",  # version not a number
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nthis is not sdp\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio x RTP/AVP 0\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio 70000 RTP/AVP 0\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nm=audio 5/x RTP/AVP 0\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nc=IN IP4\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nc=IN IP4 224.2.1.1/127/3/4\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nc=IN IP6 ff15::1/3/4\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nc=IN IP4 224.2.1.1/ttl\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nb=AS\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nb=AS:lots\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nt=0\n",
        "v=0\no=- 1 1 IN IP4 1.2.3.4\nt=now later\n",
        "v=0\no=- 1 \u00b2 IN IP4 1.2.3.4\n",  # superscript two is a digit to str.isdigit
        "v=0\no=- 1 " + "9" * 5000 + " IN IP4 1.2.3.4\n",
    ],
)
def test_malformed_descriptions_raise_sdp_parse_error(text: str) -> None:
    with pytest.raises(SdpParseError):
        parse_sdp(text)


def test_sdp_parse_error_is_a_value_error() -> None:
    assert issubclass(SdpParseError, ValueError)


def test_parse_rejects_non_text_input() -> None:
    with pytest.raises(SdpParseError):
        parse_sdp(12345)  # type: ignore[arg-type]


def test_origin_username_with_spaces_is_tolerated() -> None:
    sdp = parse_sdp("v=0\no=Jane Doe 1 2 IN IP4 10.0.0.1\ns=-\nt=0 0\n")
    assert sdp.origin.username == "Jane Doe"
    assert sdp.origin.session_version == 2


def test_r_line_before_t_line_is_kept() -> None:
    sdp = parse_sdp("v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nr=7d 1h 0 25h\nt=1 2\nr=1d 1h 0\n")
    assert sdp.timing == [Timing(1, 2, ["7d 1h 0 25h", "1d 1h 0"])]
    assert parse_sdp(sdp.to_str()) == sdp


# An IP camera's description (seen in the wild): a= and e= lines out of their RFC order, an
# attribute value with spaces after the colon, a=control everywhere.
IP_CAMERA = """\
v=0
o=- 1109162014219182 1109162014219192 IN IP4 192.0.2.77
s=RTSP/RTP stream from ipcamera
e=NONE
c=IN IP4 0.0.0.0
a=tool:LIVE555 Streaming Media v2011.05.25
t=0 0
a=range:npt=0-
a=control:*
m=video 0 RTP/AVP 96
a=rtpmap:96 H264/90000
a=control:trackID=1
a=fmtp:96 packetization-mode=0;sprop-parameter-sets=Z01AH5WgLASabAQ=,aO48gA==
a=x-dimensions: 704, 576
m=audio 0 RTP/AVP 0
a=rtpmap:0 MPEG4-GENERIC/16000/2
a=fmtp:0 config=1408
a=control:trackID=2
"""


def test_ip_camera_out_of_order_lines() -> None:
    sdp = parse_sdp(IP_CAMERA)
    assert sdp.emails == ["NONE"]
    assert [a.name for a in sdp.attributes] == ["tool", "range", "control"]
    video, audio = sdp.media
    assert video.get("x-dimensions") == " 704, 576"
    assert video.fmtp_params(96)["sprop-parameter-sets"] == "Z01AH5WgLASabAQ=,aO48gA=="
    assert audio.codec(0) == Codec("MPEG4-GENERIC", 16000, 2, "config=1408")  # rtpmap beats static
    out = sdp.to_str()
    assert out.index("t=0 0") < out.index("a=tool:")  # canonical order on output
    assert parse_sdp(out) == sdp


def test_stray_whitespace_around_attribute_names_and_values() -> None:
    text = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n"
    text += "m=audio  5000   RTP/AVP 0  101 \na=rtpmap:101 telephone-event/8000 \n"
    text += "a=fmtp:101  0-16 \na=sendonly \na=rtcp-mux\t\na=ptime:20 \n"
    sdp = parse_sdp(text)
    audio = sdp.media[0]
    assert audio.formats == ["0", "101"]
    assert audio.codec(101) == Codec("telephone-event", 8000, 1, "0-16")
    assert audio.direction is Direction.SENDONLY
    assert audio.rtcp_mux
    assert audio.ptime == 20
    assert parse_sdp(sdp.to_str()) == sdp
