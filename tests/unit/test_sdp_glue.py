"""softphone.sdp_glue: offers and answers that carry codecs + ICE, and reading real peers' SDP."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ice.candidate import Candidate, CandidateType
from ice.sdp import IceAttributes, parse_ice_attributes
from media.session import CodecDescription
from sip.sdp import parse_sdp
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

UFRAG, PWD = "aB3d", "0123456789abcdefghijklmn"


def _lines(sdp: bytes) -> list[str]:
    return sdp.decode().split("\r\n")


def _candidates(components: int = 1) -> list[Candidate]:
    out = []
    for component in range(1, components + 1):
        host = Candidate.make(
            CandidateType.HOST, "192.168.1.20", 40000 + component - 1, component=component
        )
        srflx = Candidate.make(
            CandidateType.SERVER_REFLEXIVE,
            "203.0.113.7",
            50000 + component - 1,
            component=component,
            base_address="192.168.1.20",
            server_address="198.51.100.1",
            related=host.transport_address,
        )
        out += [host, srflx]
    return out


def _offer_with(transport: LocalTransport, codecs: tuple[str, ...] = ("opus", "pcmu", "pcma")):
    media = local_media(codecs, transport)
    oa = new_offer_answer(media, transport)
    return oa, oa.create_offer().to_bytes()


def _answered(answer: str) -> RemoteMedia:
    """The remote media a peer's ``answer`` to our ICE offer (host + srflx) describes."""
    oa, _ = _offer_with(LocalTransport.from_ice(UFRAG, PWD, _candidates()))
    negotiation = oa.process_answer(answer)
    assert negotiation.audio is not None
    return read_negotiation(negotiation.audio)


# --- our offer -----------------------------------------------------------------------------


def test_codecs_in_account_order_with_one_event_per_clock_rate() -> None:
    codecs = audio_codecs(["pcma", "opus"])
    assert [c.encoding for c in codecs] == [
        "PCMA/8000",
        "opus/48000/2",
        "telephone-event/8000",
        "telephone-event/48000",
    ]
    assert codecs[1].fmtp == "useinbandfec=1"
    with pytest.raises(SdpGlueError):
        audio_codecs(["g729"])


def test_offer_has_codecs_mux_ice_and_default_candidate_in_c_and_m() -> None:
    transport = LocalTransport.from_ice(UFRAG, PWD, _candidates())
    _, offer = _offer_with(transport)
    lines = _lines(offer)
    # srflx beats host as the default (RFC 8839 §4.2.1.2): c=/m= carry it
    assert "c=IN IP4 203.0.113.7" in lines
    m_line = next(line for line in lines if line.startswith("m=audio"))
    assert m_line.split()[1] == "50000"
    assert m_line.split()[3:6] == ["96", "0", "8"]  # opus dynamic, then PCMU/PCMA static
    assert "a=rtpmap:96 opus/48000/2" in lines
    assert "a=fmtp:96 useinbandfec=1" in lines
    assert any(line.startswith("a=rtpmap:") and "telephone-event/48000" in line for line in lines)
    assert "a=rtcp-mux" in lines
    assert f"a=ice-ufrag:{UFRAG}" in lines and f"a=ice-pwd:{PWD}" in lines
    assert sum(line.startswith("a=candidate:") for line in lines) == 2
    # the offer reads back as ICE with its default matching a candidate
    info = inspect_offer(offer)
    assert info.ice is not None and len(info.ice.candidates) == 2
    assert not info.mismatch and info.rtcp_mux


def test_relay_is_the_default_when_there_is_one() -> None:
    cands = _candidates() + [
        Candidate.make(
            CandidateType.RELAYED,
            "198.51.100.1",
            61000,
            base_address="198.51.100.1",
            server_address="198.51.100.1",
            related=("203.0.113.7", 50000),
        )
    ]
    transport = LocalTransport.from_ice(UFRAG, PWD, cands)
    assert (transport.address, transport.port) == ("198.51.100.1", 61000)


def test_two_components_put_the_rtcp_default_in_a_rtcp() -> None:
    transport = LocalTransport.from_ice(UFRAG, PWD, _candidates(2), components=2)
    _, offer = _offer_with(transport)
    assert "a=rtcp:50001 IN IP4 203.0.113.7" in _lines(offer)


def test_offer_without_ice_is_plain_rtp() -> None:
    transport = LocalTransport("127.0.0.1", 41000, rtcp=("127.0.0.1", 41001))
    _, offer = _offer_with(transport, ("pcmu",))
    lines = _lines(offer)
    assert not any(line.startswith("a=ice-") or line.startswith("a=candidate") for line in lines)
    assert "m=audio 41000 RTP/AVP 0 96" in lines
    assert "a=rtpmap:96 telephone-event/8000" in lines
    assert "a=rtcp:41001 IN IP4 127.0.0.1" in lines
    assert inspect_offer(offer).ice is None


# --- real peers' SDP ---------------------------------------------------------------------

ASTERISK_ANSWER = (
    "v=0\r\no=- 1681 1683 IN IP4 10.0.0.5\r\ns=Asterisk\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n"
    "m=audio 17170 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\na=ptime:20\r\na=maxptime:150\r\na=sendrecv\r\n"
)


def test_asterisk_answer_without_ice_is_reached_at_c_and_m() -> None:
    remote = _answered(ASTERISK_ANSWER)
    assert remote.ice is None  # RFC 8445 fallback
    assert remote.rtp == ("10.0.0.5", 17170)
    assert not remote.rtcp_mux and remote.rtcp == ("10.0.0.5", 17171)
    assert remote.codec_name == "PCMU/8000" and remote.codec.payload_type == 0
    assert remote.telephone_event is not None
    assert remote.telephone_event.payload_type == 101
    assert remote.telephone_event.clock_rate == 8000
    assert remote.ptime_ms == 20


PJSUA_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 3915468224 3915468224 IN IP4 192.168.1.33",
        "s=pjmedia",
        "b=AS:84",
        "t=0 0",
        "a=X-nat:0",
        "m=audio 4000 RTP/AVP 96 9 8 0 101",
        "c=IN IP4 192.168.1.33",
        "b=TIAS:64000",
        "a=rtcp:4001 IN IP4 192.168.1.33",
        "a=sendrecv",
        "a=rtpmap:96 opus/48000/2",
        "a=fmtp:96 useinbandfec=1",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ice-ufrag:5b1f7c0d",
        "a=ice-pwd:2c8e45a97e5b2e3a1c4d67f8",
    ]
    + [
        f"a=candidate:{f} {comp} UDP {prio - comp} {addr} {port + comp - 1} typ {typ}{rel}"
        for f, prio, addr, port, typ, rel in [
            ("H1", 2130706431, "192.168.1.33", 4000, "host", ""),
            ("H2", 2130706175, "10.8.0.6", 4000, "host", ""),
            ("H3", 2130705919, "172.17.0.1", 4000, "host", ""),
            ("S1", 1694498815, "203.0.113.9", 31000, "srflx", " raddr 192.168.1.33 rport 4000"),
            ("S2", 1694498559, "203.0.113.9", 31010, "srflx", " raddr 10.8.0.6 rport 4000"),
            ("R1", 16777215, "198.51.100.3", 49200, "relay", " raddr 203.0.113.9 rport 31000"),
        ]
        for comp in (1, 2)
    ]
    + [""]
)


def test_pjsua_offer_with_12_candidates_and_no_mux_gets_two_components() -> None:
    info = inspect_offer(PJSUA_OFFER)
    assert info.ice is not None and len(info.ice.candidates) == 12
    assert not info.rtcp_mux and info.components == 2
    assert not info.mismatch  # c=/m= 192.168.1.33:4000 is host H1
    # we answer with two components and a=rtcp
    cands = _candidates(2)
    transport = LocalTransport.from_ice(UFRAG, PWD, cands, components=2)
    oa = new_offer_answer(local_media(["opus", "pcmu"], transport), transport)
    answer, negotiation = oa.process_offer(PJSUA_OFFER)
    lines = _lines(answer.to_bytes())
    assert "a=rtcp-mux" not in lines  # not offered: not answered (RFC 5761 §5.1.1)
    assert "a=rtcp:50001 IN IP4 203.0.113.7" in lines
    answered = parse_ice_attributes([(a.name, a.value) for a in answer.media[0].attributes])
    assert {c.component for c in answered.candidates} == {1, 2}
    assert negotiation.audio is not None
    remote = read_negotiation(negotiation.audio)
    assert remote.codec_name == "opus/48000/2" and remote.codec.payload_type == 96
    assert remote.codec.fmtp == {"useinbandfec": "1"}
    assert remote.rtcp == ("192.168.1.33", 4001) and remote.components == 2
    assert remote.ice is not None and remote.ice.ufrag == "5b1f7c0d"
    assert len(remote.ice.candidates) == 12
    # PCMU is offered too: we may receive it
    assert any(c.name == "PCMU" for c in remote.receive_codecs)
    # telephone-event/8000 is the only event offered: sent with 101
    assert remote.telephone_event is not None and remote.telephone_event.payload_type == 101


def test_offer_whose_default_matches_no_candidate_gets_ice_mismatch() -> None:
    rewritten = PJSUA_OFFER.replace("c=IN IP4 192.168.1.33", "c=IN IP4 192.0.2.200")
    info = inspect_offer(rewritten)
    assert info.mismatch and info.ice is None
    transport = LocalTransport("127.0.0.1", 42000, mismatch=True)
    oa = new_offer_answer(local_media(["pcmu"], transport), transport)
    answer, _ = oa.process_offer(rewritten)
    lines = _lines(answer.to_bytes())
    assert "a=ice-mismatch" in lines
    assert not any(line.startswith("a=ice-ufrag") for line in lines)


BARESIP_ANSWER = (
    "v=0\r\no=- 2103925424 1129417413 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\na=tool:baresip 1.0.0\r\na=ice-ufrag:QxpW\r\na=ice-pwd:Fg8VHcrZUtS4Cw0DBunwQm\r\n"
    "m=audio 10346 RTP/AVP 111 101\r\nb=AS:104\r\na=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 stereo=1;sprop-stereo=1;useinbandfec=1\r\na=rtpmap:101 telephone-event/48000\r\n"
    "a=fmtp:101 0-15\r\na=rtcp-mux\r\na=sendrecv\r\na=label:1\r\na=ssrc:1830417380 cname:x\r\n"
    "a=rtcp:10346\r\na=ptime:20\r\n"
    "a=candidate:1 1 UDP 2113932031 127.0.0.1 10346 typ host\r\n"
)


def test_baresip_answer_with_session_level_credentials() -> None:
    remote = _answered(BARESIP_ANSWER)
    assert remote.rtcp_mux and remote.components == 1
    assert remote.rtcp == remote.rtp == ("127.0.0.1", 10346)
    assert remote.ice is not None and remote.ice.pwd == "Fg8VHcrZUtS4Cw0DBunwQm"
    assert [c.address for c in remote.ice.candidates] == ["127.0.0.1"]
    # sent with baresip's number 111, received with ours (96)
    assert remote.codec.payload_type == 111 and remote.codec.incoming_payload_type == 96
    assert remote.telephone_event is not None
    assert remote.telephone_event.clock_rate == 48000
    assert remote.telephone_event.payload_type == 101


def test_inspect_offer_rejects_what_we_cannot_use() -> None:
    no_audio = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
    with pytest.raises(SdpGlueError):
        inspect_offer(no_audio + "m=video 5000 RTP/AVP 96\r\n")
    bad_pwd = ASTERISK_ANSWER + "a=ice-ufrag:abcd\r\na=ice-pwd:short\r\n"
    with pytest.raises(SdpGlueError):
        inspect_offer(bad_pwd)
    # an SDP parse error is a ValueError too
    with pytest.raises(ValueError):
        inspect_offer("garbage")
    assert parse_sdp(ASTERISK_ANSWER).media[0].port == 17170


# --- fuzzing: a remote description never raises anything but a ValueError ------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_REAL = [PJSUA_OFFER, ASTERISK_ANSWER, BARESIP_ANSWER]
_JUNK_LINES = [
    "a=candidate:x 1 UDP notanumber 1.2.3.4 5 typ host",
    "a=candidate:1 1 UDP 1 ::zz 5 typ host",
    "a=ice-ufrag:",
    "a=ice-pwd:short",
    "a=rtcp:99999",
    "a=rtcp:abc IN IP4",
    "a=rtpmap:96 opus",
    "a=fmtp:101 0-99999",
    "a=ptime:0",
    "a=ptime:7",
    "a=maxptime:x",
    "c=IN IP4 ",
    "c=IN IP6 ::1",
    "m=audio 0 RTP/AVP 0",
    "m=audio 70000 RTP/AVP 0",
    "a=rtcp-mux",
    "a=ice-mismatch",
    "a=ice-lite",
    "a=sendonly",
    "a=inactive",
    "\x00\xff",
]


@st.composite
def mutated_sdp(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(_REAL)).split("\r\n")
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(["drop", "dup", "junk", "swap"]))
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "junk":
            junk = draw(st.one_of(st.sampled_from(_JUNK_LINES), st.text(max_size=40)))
            lines.insert(i, junk)
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "\r\n".join(lines)


@FUZZ
@given(mutated_sdp())
def test_fuzzed_offers_raise_only_value_errors(sdp: str) -> None:
    try:
        info = inspect_offer(sdp)
    except ValueError:
        return
    assert info.components in (1, 2)
    transport = LocalTransport.from_ice(UFRAG, PWD, _candidates(info.components), info.components)
    oa = new_offer_answer(local_media(["opus", "pcmu", "pcma"], transport), transport)
    try:
        _, negotiation = oa.process_offer(sdp)
        if negotiation.audio is not None:
            remote = read_negotiation(negotiation.audio)
            assert 10 <= remote.ptime_ms <= 120
    except ValueError:
        pass


@FUZZ
@given(mutated_sdp())
def test_fuzzed_answers_raise_only_value_errors(sdp: str) -> None:
    transport = LocalTransport.from_ice(UFRAG, PWD, _candidates(2), components=2)
    oa, _ = _offer_with(transport)
    try:
        negotiation = oa.process_answer(sdp)
        if negotiation.audio is not None:
            read_negotiation(negotiation.audio)
    except ValueError:
        pass


def test_ice_pacing_proposal_and_the_pacing_used() -> None:
    """RFC 8839 §5.5 / RFC 8445 §14.2: we propose a=ice-pacing; each side uses the larger
    of both proposals, 50 ms for a side that proposes none."""
    transport = LocalTransport.from_ice(UFRAG, PWD, _candidates(), pacing_ms=5)
    offer = new_offer_answer(local_media(["pcmu"], transport), transport).create_offer()
    assert "a=ice-pacing:5" in _lines(offer.to_bytes())
    info = inspect_offer(offer)
    assert info.ice is not None and info.ice.pacing_ms == 5
    plain = LocalTransport.from_ice(UFRAG, PWD, _candidates())
    offer = new_offer_answer(local_media(["pcmu"], plain), plain).create_offer()
    assert not any(line.startswith("a=ice-pacing") for line in _lines(offer.to_bytes()))
    codec = CodecDescription("PCMU", 0, 8000)

    def remote(pacing: int | None) -> RemoteMedia:
        ice = IceAttributes(ufrag=UFRAG, pwd=PWD, pacing_ms=pacing)
        return RemoteMedia(codec, None, [], 20, ("h", 1), ("h", 1), True, ice)

    assert remote(5).pacing_s(5) == 0.005  # two softphones
    assert remote(None).pacing_s(5) == 0.05  # a peer that proposes nothing: 50 ms
    assert remote(20).pacing_s(5) == 0.02 and remote(5).pacing_s(None) == 0.05
    assert remote(5).pacing_s(30) == 0.03
