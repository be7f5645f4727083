"""RFC 8839 SDP attributes: candidates, credentials, options, remote-candidates."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ice.candidate import Candidate, CandidateType, TcpType
from ice.sdp import (
    IceParameters,
    IceSdpError,
    RemoteCandidate,
    choose_default_candidate,
    format_candidate,
    format_ice_attributes,
    format_remote_candidates,
    generate_pwd,
    generate_ufrag,
    matches_candidate,
    parse_candidate,
    parse_ice_attributes,
    parse_ice_options,
    parse_remote_candidates,
    validate_pwd,
    validate_ufrag,
)
from tests.helpers_ice import laptop_host, laptop_relay, laptop_srflx

# ------------------------------------------------------------------------------------------
# a=candidate
# ------------------------------------------------------------------------------------------


def test_rfc8839_examples() -> None:
    host = parse_candidate("a=candidate:1 1 UDP 2130706431 203.0.113.141 8998 typ host")
    assert host == Candidate("1", 1, "udp", 2130706431, "203.0.113.141", 8998, CandidateType.HOST)
    srflx = parse_candidate(
        "candidate:2 1 UDP 1694498815 192.0.2.3 45664 typ srflx raddr 203.0.113.141 rport 8998"
    )
    assert srflx.type is CandidateType.SERVER_REFLEXIVE
    assert (srflx.related_address, srflx.related_port) == ("203.0.113.141", 8998)
    assert format_candidate(host) == "1 1 UDP 2130706431 203.0.113.141 8998 typ host"
    assert format_candidate(srflx) == (
        "2 1 UDP 1694498815 192.0.2.3 45664 typ srflx raddr 203.0.113.141 rport 8998"
    )


@pytest.mark.parametrize(
    ("line", "checks"),
    [
        (  # Asterisk (upper-case transport, hex-ish foundation)
            "a=candidate:Hc0a80105 1 UDP 2130706431 192.168.1.5 10000 typ host",
            {"foundation": "Hc0a80105", "transport": "udp", "type": CandidateType.HOST},
        ),
        (
            "a=candidate:S cb00710 2 UDP 1694498814 203.0.113.5 10001 typ srflx raddr "
            "192.168.1.5 rport 10001".replace("S cb", "Scb"),
            {"component": 2, "related_port": 10001},
        ),
        (  # Chrome, with extensions
            "candidate:842163049 1 udp 1677729535 203.0.113.5 46154 typ srflx raddr 192.168.1.5 "
            "rport 46154 generation 0 ufrag EsAw network-cost 999",
            {
                "extensions": (("generation", "0"), ("ufrag", "EsAw"), ("network-cost", "999")),
                "priority": 1677729535,
            },
        ),
        (  # Firefox ICE-TCP
            "candidate:1 1 TCP 2105524479 192.168.1.5 9 typ host tcptype active",
            {"transport": "tcp", "tcptype": TcpType.ACTIVE, "port": 9},
        ),
        (  # mDNS host candidate (FQDN address)
            "candidate:1 1 udp 2113937151 4f1b7c8e-0b2b-4c2e-9c7a-5f2c3f1e2d3a.local 54321 "
            "typ host generation 0",
            {"address": "4f1b7c8e-0b2b-4c2e-9c7a-5f2c3f1e2d3a.local"},
        ),
        (  # IPv6 relay
            "candidate:3 1 UDP 16777215 2001:db8::5 3478 typ relay raddr 2001:db8::1 rport 5000",
            {"type": CandidateType.RELAYED, "address": "2001:db8::5"},
        ),
        (  # raddr 0.0.0.0 rport 0 as browsers send for privacy
            "candidate:4 1 udp 1 203.0.113.9 1 typ prflx raddr 0.0.0.0 rport 0",
            {"type": CandidateType.PEER_REFLEXIVE, "related_address": "0.0.0.0"},
        ),
        (  # case-insensitive type keyword and type, surrounding whitespace
            "  candidate:5 1 udp 10 192.0.2.1 1 TYP HOST  ",
            {"type": CandidateType.HOST},
        ),
    ],
)
def test_real_world_candidates(line: str, checks: dict[str, object]) -> None:
    cand = parse_candidate(line)
    for name, expected in checks.items():
        assert getattr(cand, name) == expected, name
    again = parse_candidate(format_candidate(cand))
    assert again == cand


@pytest.mark.parametrize(
    "line",
    [
        "",
        "candidate:",
        "1 1 UDP 2130706431 203.0.113.141 8998 typ",  # too few fields
        "1 1 UDP 2130706431 203.0.113.141 8998 type host",
        "1 1 UDP 2130706431 203.0.113.141 8998 typ unknown",
        "1 0 UDP 1 192.0.2.1 1 typ host",  # component 0
        "1 257 UDP 1 192.0.2.1 1 typ host",
        "1 1 UDP 1 192.0.2.1 65536 typ host",
        "1 1 UDP -1 192.0.2.1 1 typ host",
        "1 1 UDP 4294967296 192.0.2.1 1 typ host",
        "1 1 UDP 1 999.1.1.1 1 typ host",
        "1 1 UDP 1 2001:db8::zz 1 typ host",
        "1 1 UDP 1 bad_host! 1 typ host",
        "f@ 1 UDP 1 192.0.2.1 1 typ host",  # foundation not ice-chars
        "123456789012345678901234567890123 1 UDP 1 192.0.2.1 1 typ host",  # foundation > 32
        "1 1 U(P 1 192.0.2.1 1 typ host",
        "1 1 UDP 1 192.0.2.1 1 typ host generation",  # extension without value
        "1 1 UDP 1 192.0.2.1 1 typ host tcptype sideways",
        "1 1 UDP 1 192.0.2.1 1 typ srflx raddr nope! rport 1",
        "1 1 UDP 1 192.0.2.1 1 typ srflx raddr 192.0.2.2 rport x",
    ],
)
def test_malformed_candidates(line: str) -> None:
    with pytest.raises(IceSdpError):
        parse_candidate(line)


def test_format_rejects_bad_values() -> None:
    good = Candidate("1", 1, "udp", 1, "192.0.2.1", 1, CandidateType.HOST)
    with pytest.raises(ValueError):
        format_candidate(Candidate("", 1, "udp", 1, "192.0.2.1", 1, CandidateType.HOST))
    with pytest.raises(ValueError):
        format_candidate(
            Candidate("1", 1, "udp", 1, "192.0.2.1", 1, CandidateType.HOST, extensions=(("a", ""),))
        )
    assert format_candidate(good).endswith("typ host")


# strategies for round trips
ice_chars = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    min_size=1,
    max_size=32,
)
ip = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
vchars = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)

candidates = st.builds(
    Candidate,
    foundation=ice_chars,
    component=st.integers(1, 256),
    transport=st.sampled_from(["udp", "tcp"]),
    priority=st.integers(0, 2**32 - 1),
    address=ip,
    port=st.integers(0, 65535),
    type=st.sampled_from(list(CandidateType)),
    related_address=st.none() | ip,
    related_port=st.none() | st.integers(0, 65535),
    tcptype=st.none() | st.sampled_from(list(TcpType)),
    extensions=st.lists(
        st.tuples(token.filter(lambda t: t not in ("raddr", "rport", "tcptype")), vchars),
        max_size=3,
    ).map(tuple),
)


@given(candidates)
def test_candidate_round_trip(cand: Candidate) -> None:
    assert parse_candidate(format_candidate(cand)) == cand
    assert parse_candidate("a=candidate:" + format_candidate(cand)) == cand


@given(st.text(max_size=120))
def test_parse_candidate_only_raises_ice_sdp_error(text: str) -> None:
    with contextlib.suppress(IceSdpError):
        parse_candidate(text)


@given(candidates, st.lists(st.tuples(st.integers(0, 200), st.characters()), max_size=4))
def test_mutated_candidates_only_raise_ice_sdp_error(
    cand: Candidate, edits: list[tuple[int, str]]
) -> None:
    text = list(format_candidate(cand))
    for index, ch in edits:
        text[index % len(text)] = ch
    with contextlib.suppress(IceSdpError):
        parse_candidate("".join(text))


# ------------------------------------------------------------------------------------------
# credentials, options, remote-candidates
# ------------------------------------------------------------------------------------------


def test_ufrag_and_pwd_validation() -> None:
    assert validate_ufrag("8hhY") == "8hhY"
    assert validate_pwd("asd88fgpdd777uzjYhagZg") == "asd88fgpdd777uzjYhagZg"
    for bad in ("abc", "ab-d", "abc=", "a" * 257, "ab d"):
        with pytest.raises(IceSdpError):
            validate_ufrag(bad)
    for bad in ("a" * 21, "a" * 21 + "!", "a" * 257):
        with pytest.raises(IceSdpError):
            validate_pwd(bad)


def test_generated_credentials_are_valid_and_random() -> None:
    ufrags = {generate_ufrag() for _ in range(50)}
    pwds = {generate_pwd() for _ in range(50)}
    assert len(ufrags) == 50 and len(pwds) == 50
    for u in ufrags:
        validate_ufrag(u)
    for p in pwds:
        validate_pwd(p)
    assert len(generate_ufrag(4)) == 4 and len(generate_pwd(22)) == 22
    with pytest.raises(ValueError):
        generate_ufrag(3)
    with pytest.raises(ValueError):
        generate_pwd(21)
    params = IceParameters.generate(options=("trickle",))
    assert params.options == ("trickle",) and not params.lite


def test_ice_options() -> None:
    assert parse_ice_options("trickle ice2") == ["trickle", "ice2"]
    with pytest.raises(IceSdpError):
        parse_ice_options("  ")
    with pytest.raises(IceSdpError):
        parse_ice_options("tr(ckle")


def test_remote_candidates() -> None:
    value = "1 192.0.2.3 45664 2 192.0.2.3 45665"
    parsed = parse_remote_candidates(value)
    assert parsed == [
        RemoteCandidate(1, "192.0.2.3", 45664),
        RemoteCandidate(2, "192.0.2.3", 45665),
    ]
    assert format_remote_candidates(parsed) == value
    for bad in ("", "1 192.0.2.3", "0 192.0.2.3 1", "1 192.0.2.3 70000", "1 x! 1"):
        with pytest.raises(IceSdpError):
            parse_remote_candidates(bad)


# ------------------------------------------------------------------------------------------
# whole sections
# ------------------------------------------------------------------------------------------


def test_parse_section_with_session_defaults_and_media_overrides() -> None:
    session = [
        ("ice-lite", None),
        ("ice-ufrag", "sessUfrag"),
        ("ice-pwd", "sessionpassword0123456789"),
        ("ice-options", "ice2"),
    ]
    media = [
        ("rtpmap", "0 PCMU/8000"),
        ("ICE-UFRAG", "8hhY"),
        ("ice-pwd", "asd88fgpdd777uzjYhagZg"),
        ("candidate", "1 1 UDP 2130706431 203.0.113.141 8998 typ host"),
        ("candidate", "2 1 UDP 1 192.0.2.3 1 typ martian"),  # unknown type: skipped
        (
            "candidate",
            "2 1 UDP 1694498815 192.0.2.3 45664 typ srflx raddr 203.0.113.141 rport 8998",
        ),
        ("remote-candidates", "1 192.0.2.9 9"),
        ("end-of-candidates", None),
        ("ice-pacing", "50"),
    ]
    ice = parse_ice_attributes(media, session)
    assert ice.ufrag == "8hhY" and ice.pwd == "asd88fgpdd777uzjYhagZg"
    assert ice.options == ["ice2"] and ice.lite and ice.pacing_ms == 50
    assert [c.foundation for c in ice.candidates] == ["1", "2"]
    assert ice.ignored_candidates == ["2 1 UDP 1 192.0.2.3 1 typ martian"]
    assert ice.remote_candidates == [RemoteCandidate(1, "192.0.2.9", 9)]
    assert ice.end_of_candidates and not ice.mismatch
    params = ice.parameters
    assert params == IceParameters("8hhY", "asd88fgpdd777uzjYhagZg", ("ice2",), True, 50)
    with pytest.raises(IceSdpError):
        parse_ice_attributes(media, session, strict=True)


def test_no_ice_means_no_parameters() -> None:
    ice = parse_ice_attributes([("rtpmap", "0 PCMU/8000"), ("ice-lite", None)])
    assert ice.parameters is None and not ice.lite  # ice-lite is session-level only
    assert ice.candidates == []
    assert parse_ice_attributes([("ice-mismatch", None)]).mismatch


@pytest.mark.parametrize(
    "media",
    [
        [("ice-ufrag", "abc")],
        [("ice-ufrag", None)],
        [("ice-pwd", "short")],
        [("ice-options", "")],
        [("ice-pacing", "fast")],
        [("remote-candidates", "1 2")],
    ],
)
def test_bad_credentials_raise(media: list[tuple[str, str | None]]) -> None:
    with pytest.raises(IceSdpError):
        parse_ice_attributes(media)


def test_format_and_parse_back() -> None:
    params = IceParameters("8hhY", "asd88fgpdd777uzjYhagZg", ("trickle",), lite=True)
    cands = [laptop_host(), laptop_srflx()]
    session, media = format_ice_attributes(
        params,
        cands,
        end_of_candidates=True,
        remote_candidates=[RemoteCandidate(1, "192.0.2.9", 9)],
    )
    assert session == [("ice-lite", None)]
    assert media[:3] == [
        ("ice-ufrag", "8hhY"),
        ("ice-pwd", "asd88fgpdd777uzjYhagZg"),
        ("ice-options", "trickle"),
    ]
    assert media[-1] == ("end-of-candidates", None)
    ice = parse_ice_attributes(media, session)
    assert ice.parameters == params
    assert ice.candidates == cands
    assert ice.remote_candidates == [RemoteCandidate(1, "192.0.2.9", 9)]
    with pytest.raises(IceSdpError):
        format_ice_attributes(IceParameters("bad", "asd88fgpdd777uzjYhagZg"))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "candidate",
                    "ice-ufrag",
                    "ice-pwd",
                    "ice-options",
                    "ice-lite",
                    "ice-pacing",
                    "remote-candidates",
                    "end-of-candidates",
                    "ice-mismatch",
                    "other",
                ]
            ),
            st.none() | st.text(max_size=60),
        ),
        max_size=8,
    )
)
def test_parse_ice_attributes_only_raises_ice_sdp_error(
    media: list[tuple[str, str | None]],
) -> None:
    with contextlib.suppress(IceSdpError):
        parse_ice_attributes(media, media)


# ------------------------------------------------------------------------------------------
# default candidates
# ------------------------------------------------------------------------------------------


def _local_candidates() -> list[Candidate]:
    host = laptop_host()
    host2 = Candidate.make(CandidateType.HOST, "10.0.0.5", 40002, local_preference=100)
    srflx = laptop_srflx()
    relay = laptop_relay()
    rtcp_host = Candidate.make(CandidateType.HOST, "192.168.1.5", 40001, component=2)
    return [host, host2, srflx, relay, rtcp_host]


def test_choose_default_candidate_prefers_relay_then_srflx_then_host() -> None:
    host, host2, srflx, relay, rtcp_host = _local_candidates()
    everything = [host, host2, srflx, relay, rtcp_host]
    assert choose_default_candidate(everything) == relay
    assert choose_default_candidate([host, host2, srflx]) == srflx
    assert choose_default_candidate([host2, host]) == host  # highest priority host
    assert choose_default_candidate(everything, component=2) == rtcp_host
    assert choose_default_candidate(everything, component=3) is None
    assert choose_default_candidate(everything, transport="tcp") is None
    only_host = choose_default_candidate(everything, preference=(CandidateType.HOST,))
    assert only_host == host


def test_matches_candidate_for_ice_mismatch() -> None:
    cands = _local_candidates()
    assert matches_candidate(cands, "198.51.100.1", 49170)
    assert matches_candidate(cands, "192.168.1.5", 40001, component=2)
    assert not matches_candidate(cands, "192.168.1.5", 40001)  # wrong component
    assert not matches_candidate(cands, "192.0.2.99", 40000)
    assert not matches_candidate(cands, "example.org", 40000)
    assert matches_candidate([], "0.0.0.0", 9) and matches_candidate([], "::", 9)
    v6 = Candidate.make(CandidateType.HOST, "2001:db8::1", 5000)
    assert matches_candidate([v6], "2001:0db8:0::1", 5000)
