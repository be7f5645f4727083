"""The SDP parser's hot-path constructors and codecs() agree with the plain code they replace.

``_attribute_list`` builds Attribute objects without the dataclass __init__ and ``_new_codec``
fills a Codec's dict directly; each must give exactly what ``Attribute.parse`` and the Codec
constructor give (test_sdp_structured.py checks ``codecs()`` against the per-type ``codec()``).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from sip.sdp import (
    Attribute,
    Codec,
    MediaDescription,
    _attribute_list,
    _new_codec,
    parse_sdp,
)

ATTRIBUTE_TEXTS = st.text(alphabet="ab:rtpmap 0-/\u00e9\t", max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(ATTRIBUTE_TEXTS, max_size=6))
def test_attribute_list_is_attribute_parse(texts):
    built = _attribute_list(texts)
    assert built == [Attribute.parse(text) for text in texts]
    assert all(type(a) is Attribute for a in built)
    assert [str(a) for a in built] == texts


def test_attribute_list_objects_are_ordinary_attributes() -> None:
    (attr,) = _attribute_list(["rtpmap:0 PCMU/8000"])
    assert (attr.name, attr.value) == ("rtpmap", "0 PCMU/8000")
    assert dataclasses.asdict(attr) == {"name": "rtpmap", "value": "0 PCMU/8000"}
    assert copy.deepcopy(attr) == attr == pickle.loads(pickle.dumps(attr))
    attr.value = "8 PCMA/8000"  # still a mutable dataclass
    assert str(attr) == "rtpmap:8 PCMA/8000"
    (flag,) = _attribute_list(["sendrecv"])
    assert flag.value is None and flag == Attribute("sendrecv")


def test_new_codec_is_the_constructor() -> None:
    fast = _new_codec("opus", 48000, 2, "minptime=10")
    slow = Codec("opus", 48000, 2, "minptime=10")
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert pickle.loads(pickle.dumps(fast)) == slow


def test_parsed_description_attributes_are_built_as_parsed() -> None:
    text = (
        "v=0\r\no=- 1 2 IN IP4 h\r\ns=-\r\nt=0 0\r\na=ice-ufrag:u\r\n"
        "m=audio 9 RTP/AVP 0 8\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
    )
    parsed = parse_sdp(text)
    assert parsed.attributes == [Attribute("ice-ufrag", "u")]
    media = parsed.media[0]
    assert media.attributes == [Attribute("rtpmap", "8 PCMA/8000"), Attribute("sendrecv")]
    assert media.codecs() == {0: Codec("PCMU", 8000), 8: Codec("PCMA", 8000)}
    # a plain dataclass field (a slot), no property over deferred texts
    assert not isinstance(inspect.getattr_static(MediaDescription, "attributes"), property)
    assert not hasattr(media, "__dict__")


def test_bench_goal_row_computes_what_it_claims() -> None:
    """bench/sip_parse.py's goal row: the value checks it prints all hold (no timing here)."""
    from bench.sip_parse import INVITE, SDP, _like_for_like_checks, _ours_goal

    failed = [what for what, ok in _like_for_like_checks() if not ok]
    assert failed == []
    headers, sdp, codecs, wire = _ours_goal(INVITE)
    assert wire == INVITE
    assert headers.get("Content-Type") == "application/sdp"
    assert sdp.to_str() == SDP
    assert [list(c) for c in codecs] == [[111, 0, 8, 101]]
    lines = [f"a={a}" for a in sdp.attributes + sdp.media[0].attributes]
    assert lines == [line for line in SDP.split("\r\n") if line.startswith("a=")]
