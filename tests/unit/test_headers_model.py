"""sip.message.Headers against a plain reference model, operation by operation.

The multi-map keeps its lines in parallel lists (key, name, value) for speed; this checks every
public operation - add, set, remove, get, get_all, count, contains, items, copy, equality and the
wire form - against the obvious list-of-pairs implementation of RFC 3261 §7.3 semantics.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sip.message import Headers, Request, parse_message
from sip.uri import split_commas

COMPACT = {"v": "via", "f": "from", "t": "to", "m": "contact", "l": "content-length"}
LISTS = {"via", "contact", "allow", "route"}
NAMES = st.sampled_from(
    ["Via", "v", "VIA", "From", "f", "To", "Contact", "m", "Allow", "Route", "Subject",
     "X-Custom", "x-custom", "Content-Length", "l", "CSeq"]
)  # fmt: skip
VALUES = st.sampled_from(["a", "b, c", "", "d", '"x, y" <sip:z>', "1", "e,", "12"])
OPS = st.lists(
    st.tuples(st.sampled_from(["add", "set", "remove"]), NAMES, VALUES), min_size=0, max_size=12
)


def key(name: str) -> str:
    lower = name.lower()
    return COMPACT.get(lower, lower)


class Model:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []  # (key, value)

    def add(self, name: str, value: str) -> None:
        self.lines.append((key(name), value))

    def set(self, name: str, value: str) -> None:
        k = key(name)
        if not any(lk == k for lk, _ in self.lines):
            self.add(name, value)
            return
        first = next(i for i, (lk, _) in enumerate(self.lines) if lk == k)
        self.lines = [
            (lk, value) if i == first else (lk, v)
            for i, (lk, v) in enumerate(self.lines)
            if i == first or lk != k
        ]

    def remove(self, name: str) -> None:
        self.lines = [(lk, v) for lk, v in self.lines if lk != key(name)]

    def get_all(self, name: str) -> list[str]:
        values = [v for lk, v in self.lines if lk == key(name)]
        if key(name) in LISTS:
            return [e for v in values for e in split_commas(v)]
        return values


@settings(max_examples=300, deadline=None)
@given(OPS, NAMES)
def test_headers_follow_the_reference_model(ops: list[tuple[str, str, str]], probe: str) -> None:
    headers = Headers()
    model = Model()
    for op, name, value in ops:
        if op == "remove":
            headers.remove(name)
            model.remove(name)
        else:
            getattr(headers, op)(name, value)
            getattr(model, op)(name, value)
        assert [key(n) for n, _ in headers.items()] == [k for k, _ in model.lines]
        assert [v for _, v in headers.items()] == [v for _, v in model.lines]
    assert headers.get_all(probe) == model.get_all(probe)
    expected_first = model.get_all(probe)[0] if model.get_all(probe) else None
    assert headers.get(probe) == expected_first
    assert headers.get(probe, "dflt") == (expected_first if expected_first is not None else "dflt")
    assert headers.count(probe) == sum(1 for k, _ in model.lines if k == key(probe))
    assert (probe in headers) == any(k == key(probe) for k, _ in model.lines)
    assert len(headers) == len(model.lines)
    copy = headers.copy()
    assert copy == headers
    copy.add("X-More", "1")
    assert copy != headers and len(headers) == len(model.lines)  # the copy is independent
    # the wire form: one Content-Length equal to the body, in place of the first one
    wire = Request("OPTIONS", "sip:a@b", headers, b"xyz").to_bytes()
    again = parse_message(wire).headers
    lengths = [v for n, v in again.items() if n == "Content-Length"]
    assert lengths == ["3"]
    others = [(key(n), v.strip(" \t")) for n, v in headers.items() if key(n) != "content-length"]
    assert [(key(n), v) for n, v in again.items() if n != "Content-Length"] == others


def test_canonical_names_on_output() -> None:
    headers = Headers([("v", "SIP/2.0/UDP h"), ("x-custom", "1"), ("l", "99"), ("L", "5")])
    assert headers.items() == [
        ("Via", "SIP/2.0/UDP h"),
        ("x-custom", "1"),
        ("Content-Length", "99"),
        ("Content-Length", "5"),
    ]
    wire = Request("OPTIONS", "sip:a@b", headers).to_bytes()
    assert wire == (
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nx-custom: 1\r\nContent-Length: 0\r\n\r\n"
    )
    headers.set("X-CUSTOM", "2")
    assert headers.items()[1] == ("X-CUSTOM", "2")
