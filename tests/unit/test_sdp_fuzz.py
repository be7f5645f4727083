"""Hypothesis fuzzing of sip.sdp and sip.offer_answer.

Properties:
- any text or bytes: parse_sdp either returns a model or raises SdpParseError, nothing else;
- whatever parses re-parses to the same model after serialization (the serializer is faithful);
- mutated real-world SDPs behave the same, and answering them never raises anything but
  SdpParseError / OfferAnswerError, with an answer that keeps the m= line count (RFC 3264 §6);
- generated models round-trip exactly through text.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.offer_answer import LocalMedia, OfferAnswer, OfferAnswerError
from sip.sdp import (
    Attribute,
    Bandwidth,
    Codec,
    Connection,
    MediaDescription,
    Origin,
    SdpLine,
    SdpParseError,
    SessionDescription,
    Timing,
    parse_sdp,
)
from tests.unit.test_sdp import IP_CAMERA, SAMPLES

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
MODELS = settings(FUZZ, max_examples=100)  # generated models are costlier to draw


def parse_or_none(data: str | bytes) -> SessionDescription | None:
    try:
        return parse_sdp(data)
    except SdpParseError:
        return None


def assert_stable(parsed: SessionDescription) -> None:
    """A parsed description survives serialize -> parse unchanged, and serializes identically."""
    text = parsed.to_str()
    again = parse_sdp(text)
    assert again == parsed
    assert again.to_str() == text
    assert parse_sdp(parsed.to_bytes()) == parsed


# -- random input --------------------------------------------------------------------------------

SDP_ALPHABET = st.sampled_from(list("vosicbtmakrzuep=:/ \r\n0123456789.-IPN4AVTUDxyz*\t"))


@FUZZ
@given(st.text())
def test_random_text_only_raises_sdp_parse_error(text: str) -> None:
    parsed = parse_or_none(text)
    if parsed is not None:
        assert_stable(parsed)


@FUZZ
@given(st.binary())
def test_random_bytes_only_raise_sdp_parse_error(data: bytes) -> None:
    parsed = parse_or_none(data)
    if parsed is not None:
        assert_stable(parsed)


@FUZZ
@given(st.text(alphabet=SDP_ALPHABET, max_size=300))
def test_sdp_shaped_noise(text: str) -> None:
    parsed = parse_or_none("v=0\no=- 1 1 IN IP4 10.0.0.1\n" + text)
    if parsed is not None:
        assert_stable(parsed)


# -- mutated real-world descriptions -------------------------------------------------------------

SEEDS = {**SAMPLES, "ip-camera": IP_CAMERA}
LINE_FRAGMENTS = st.sampled_from(
    [
        "m=audio 0 RTP/AVP",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "c=IN IP6 ::",
        "c=IN IP4 224.2.1.1/127/3",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=rtpmap:96",
        "a=fmtp:101 0-16",
        "a=fmtp:101 99-2",
        "a=sendonly",
        "a=recvonly",
        "a=inactive",
        "a=rtcp-mux",
        "a=rtcp:9 IN IP4 1.2.3.4",
        "a=rtcp:x",
        "a=ptime:nan",
        "a=ptime:1e400",
        "a=candidate:1 1 UDP 2130706431 10.0.0.1 5000 typ host",
        "b=AS:64",
        "t=0 0",
        "r=7d 1h",
        "o=- 1 2 IN IP4 10.0.0.1",
        "v=0",
        "x=unknown",
        "",
    ]
)


@st.composite
def mutated_sample(draw: st.DrawFn) -> str:
    lines = SEEDS[draw(st.sampled_from(sorted(SEEDS)))].splitlines()
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "edit", "truncate"]))
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "insert":
            lines.insert(i, draw(LINE_FRAGMENTS | st.text(max_size=20)))
        elif kind == "edit":
            line = lines[i]
            pos = draw(st.integers(0, len(line)))
            cut = draw(st.integers(0, 3))
            lines[i] = line[:pos] + draw(st.text(max_size=4)) + line[pos + cut :]
        else:
            lines = lines[:i]
    sep = draw(st.sampled_from(["\r\n", "\n"]))
    return sep.join(lines) + sep


@FUZZ
@given(mutated_sample())
def test_mutated_samples_only_raise_sdp_parse_error(text: str) -> None:
    parsed = parse_or_none(text)
    if parsed is None:
        return
    assert_stable(parsed)
    for media in parsed.media:  # the helpers never raise either
        media.codecs()
        _ = (media.ptime, media.maxptime, media.rtcp, media.rtcp_mux, media.direction)
        parsed.media_direction(media)


@FUZZ
@given(mutated_sample())
def test_answering_mutated_offers_never_crashes(text: str) -> None:
    answerer = OfferAnswer(
        [
            LocalMedia("192.0.2.1", 40000),
            LocalMedia("192.0.2.1", 42000, media="video", codecs=[]),
        ],
        session_id=1,
    )
    try:
        answer, result = answerer.process_offer(text)
    except (SdpParseError, OfferAnswerError):
        return
    offer = parse_sdp(text)
    assert len(answer.media) == len(offer.media)  # RFC 3264 §6
    assert len(result.streams) + len(result.rejected) == len(offer.media)
    for index, (ours, theirs) in enumerate(zip(answer.media, offer.media, strict=True)):
        assert ours.media == theirs.media
        accepted = any(s.index == index for s in result.streams)
        assert (ours.port != 0) == accepted
    assert parse_sdp(answer.to_str()) == answer
    # The offerer side processing that answer must not crash either.
    offerer = OfferAnswer([LocalMedia("192.0.2.9", 30000)], session_id=2)
    offerer.create_offer()
    try:
        offerer.process_answer(answer)
    except OfferAnswerError:
        pass


@FUZZ
@given(mutated_sample())
def test_processing_mutated_answers_never_crashes(text: str) -> None:
    offerer = OfferAnswer([LocalMedia("192.0.2.9", 30000)], session_id=2)
    offerer.create_offer()
    try:
        result = offerer.process_answer(text)
    except (SdpParseError, OfferAnswerError):
        return
    for stream in result.streams:
        assert 0 <= stream.payload_type <= 127
        assert stream.remote_rtp[1] == result.remote.media[stream.index].port


# -- generated models round-trip -----------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(codec="utf-8", blacklist_characters="\r\n"), max_size=30)
TOKEN = st.text(
    alphabet=st.characters(codec="utf-8", blacklist_characters="\r\n"),
    min_size=1,
    max_size=12,
).filter(lambda t: not any(c.isspace() for c in t))
ADDRESS = TOKEN.filter(lambda t: "/" not in t)
NUMBER = st.integers(0, 10**12)


@st.composite
def connections(draw: st.DrawFn) -> Connection:
    addrtype = draw(st.sampled_from(["IP4", "IP6", "X-OTHER"]))
    ttl = count = None
    if addrtype == "IP4":
        ttl = draw(st.none() | st.integers(0, 255))
        if ttl is not None:
            count = draw(st.none() | st.integers(1, 10))
    elif addrtype == "IP6":
        count = draw(st.none() | st.integers(1, 10))
    return Connection(draw(ADDRESS), addrtype, draw(st.sampled_from(["IN", "XX"])), ttl, count)


ATTRIBUTES = st.lists(
    st.builds(
        Attribute,
        TEXT.filter(lambda t: ":" not in t),
        st.none() | TEXT,
    ),
    max_size=6,
)
BANDWIDTHS = st.lists(
    st.builds(Bandwidth, TOKEN.filter(lambda t: ":" not in t), NUMBER), max_size=2
)
OTHER_LINES = st.lists(st.builds(SdpLine, st.sampled_from(list("xyfgh")), TEXT), max_size=2)


@st.composite
def media_descriptions(draw: st.DrawFn) -> MediaDescription:
    connection = draw(st.none() | connections())
    return MediaDescription(
        media=draw(TOKEN),
        port=draw(st.integers(0, 65535)),
        proto=draw(TOKEN),
        formats=draw(st.lists(TOKEN, max_size=5)),
        port_count=draw(st.none() | st.integers(0, 9)),
        information=draw(st.none() | TEXT),
        connection=connection,
        extra_connections=draw(st.lists(connections(), max_size=2)) if connection else [],
        bandwidths=draw(BANDWIDTHS),
        encryption_key=draw(st.none() | TEXT),
        attributes=draw(ATTRIBUTES),
        other_lines=draw(OTHER_LINES),
    )


@st.composite
def session_descriptions(draw: st.DrawFn) -> SessionDescription:
    connection = draw(st.none() | connections())
    timing = draw(
        st.lists(
            st.builds(Timing, NUMBER, NUMBER, st.lists(TEXT, max_size=2)),
            max_size=2,
        )
    )
    return SessionDescription(
        origin=Origin(
            draw(TOKEN), draw(TOKEN), draw(NUMBER), draw(TOKEN), draw(TOKEN), draw(TOKEN)
        ),
        session_name=draw(TEXT),
        version=draw(st.integers(0, 9)),
        information=draw(st.none() | TEXT),
        uri=draw(st.none() | TEXT),
        emails=draw(st.lists(TEXT, max_size=2)),
        phones=draw(st.lists(TEXT, max_size=2)),
        connection=connection,
        extra_connections=draw(st.lists(connections(), max_size=1)) if connection else [],
        bandwidths=draw(BANDWIDTHS),
        timing=timing,
        time_zones=draw(st.none() | TEXT),
        encryption_key=draw(st.none() | TEXT),
        attributes=draw(ATTRIBUTES),
        media=draw(st.lists(media_descriptions(), max_size=3)),
        other_lines=draw(OTHER_LINES),
    )


@MODELS
@given(session_descriptions())
def test_generated_models_round_trip(model: SessionDescription) -> None:
    text = model.to_str()
    assert parse_sdp(text) == model
    assert parse_sdp(model.to_bytes()) == model
    assert parse_sdp(text.replace("\r\n", "\n")) == model


@MODELS
@given(session_descriptions(), st.data())
def test_attribute_edits_keep_the_order_of_others(
    model: SessionDescription, data: st.DataObject
) -> None:
    if not model.attributes:
        return

    def key(name: str) -> str:  # names match case-insensitively, ignoring stray whitespace
        return name.strip().lower()

    target = data.draw(st.sampled_from(sorted({a.name for a in model.attributes})))
    others = [a for a in model.attributes if key(a.name) != key(target)]
    model.set(target, "new")
    assert [a for a in model.attributes if key(a.name) != key(target)] == others
    assert model.get(target) == "new"
    model.remove(target)
    assert model.attributes == others
    assert parse_sdp(model.to_str()) == model


# -- offer/answer sequences between two of our own user agents -----------------------------------

CODEC_POOL = [
    Codec("opus", 48000, 2, "useinbandfec=1"),
    Codec("PCMU", 8000),
    Codec("PCMA", 8000),
    Codec("G722", 8000),
    Codec("telephone-event", 8000, 1, "0-16"),
    Codec("telephone-event", 48000, 1, "0-15"),
]
OPERATIONS = st.sampled_from(
    ["alice-offers", "bob-offers", "alice-holds", "alice-resumes", "bob-holds", "bob-resumes"]
)


@st.composite
def capabilities(draw: st.DrawFn) -> list[Codec]:
    """A non-empty subset of the pool in a random preference order."""
    pool = draw(st.permutations(CODEC_POOL))
    return pool[: draw(st.integers(1, len(pool)))]


@settings(FUZZ, max_examples=150)
@given(capabilities(), capabilities(), st.booleans(), st.lists(OPERATIONS, max_size=10))
def test_offer_answer_sequences_stay_consistent(
    alice_codecs: list[Codec], bob_codecs: list[Codec], bob_mux: bool, operations: list[str]
) -> None:
    alice = OfferAnswer([LocalMedia("192.0.2.1", 40000, codecs=alice_codecs)], session_id=1)
    bob = OfferAnswer(
        [LocalMedia("198.51.100.2", 50000, codecs=bob_codecs, rtcp_mux=bob_mux)], session_id=2
    )
    parties = {"alice": alice, "bob": bob}
    versions: dict[str, list[int]] = {"alice": [], "bob": []}
    lines = 0
    for operation in ["alice-offers", *operations]:
        who, action = operation.split("-")
        offerer = parties[who]
        answerer = bob if offerer is alice else alice
        other = "bob" if who == "alice" else "alice"
        make = {"offers": offerer.create_offer, "holds": offerer.hold, "resumes": offerer.resume}
        offer = make[action]()
        answer, answer_result = answerer.process_offer(offer.to_bytes())
        offer_result = offerer.process_answer(answer.to_bytes())
        versions[who].append(offer.origin.session_version)
        versions[other].append(answer.origin.session_version)
        # §8: m= lines are never removed; versions grow by 0 or 1 per description sent.
        assert len(offer.media) == len(answer.media) >= lines
        lines = len(offer.media)
        for history in versions.values():
            assert all(b - a in (0, 1) for a, b in zip(history, history[1:], strict=False))
        # Both ends agree on the stream, mirrored.
        assert len(offer_result.streams) == len(answer_result.streams)
        for ours, theirs in zip(offer_result.streams, answer_result.streams, strict=True):
            assert ours.codec.match(theirs.codec)
            assert ours.payload_type == theirs.payload_type
            assert ours.direction is theirs.direction.reverse()
            assert ours.rtcp_mux == theirs.rtcp_mux == bob_mux
            assert (ours.telephone_event is None) == (theirs.telephone_event is None)
            for party, stream in ((offerer, ours), (answerer, theirs)):
                if party.on_hold:  # whoever holds does not receive (RFC 3264 §8.4)
                    assert not stream.receives
        common = [c for c in alice_codecs if any(c.match(b) for b in bob_codecs)]
        has_main = any(c.name.lower() != "telephone-event" for c in common)
        assert bool(offer_result.streams) == has_main
