"""STUN credentials: OpaqueString (RFC 8265), SASLprep (RFC 4013) and key derivation."""

from __future__ import annotations

import contextlib
import hashlib
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ice.credentials import (
    CredentialError,
    long_term_key,
    opaque_string,
    saslprep,
    short_term_key,
    userhash,
)
from ice.stun import PasswordAlgorithm

# ------------------------------------------------------------------------------------------
# SASLprep: RFC 4013 §3 examples
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        ("I\u00adX", "IX"),  # SOFT HYPHEN mapped to nothing
        ("user", "user"),  # no transformation
        ("USER", "USER"),  # case preserved
        ("\u00aa", "a"),  # output is NFKC, input in ISO 8859-1
        ("\u2168", "IX"),  # output is NFKC, will match 2nd example
        ("a\u00a0b", "a b"),  # non-ASCII space mapped to SPACE
        ("a\u1680b", "a b"),  # OGHAM SPACE MARK: no compatibility mapping, table C.1.2 only
        ("The\u00adM\u00aatr\u2168", "TheMatrIX"),  # RFC 5769 §2.4
        ("", ""),
    ],
)
def test_saslprep_examples(given_: str, expected: str) -> None:
    assert saslprep(given_) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "\u0007",  # RFC 4013 §3: prohibited character (control)
        "\u0627\u0031",  # RFC 4013 §3: bidi check - must start and end with RandALCat
        "\u0627a\u0627",  # mixes RandALCat and LCat
        "a\ue000",  # private use
        "a\ufffd",  # C.6 inappropriate for plain text
    ],
)
def test_saslprep_rejects(bad: str) -> None:
    with pytest.raises(CredentialError):
        saslprep(bad)


def test_saslprep_bidi_ok_and_unassigned() -> None:
    assert saslprep("\u0627\u0031\u0628") == "\u0627\u0031\u0628"
    unassigned = "\U000e0080"  # unassigned in Unicode 3.2 (stringprep's table A.1)
    with pytest.raises(CredentialError):
        saslprep("a" + unassigned)
    assert saslprep("a" + unassigned, allow_unassigned=True) == "a" + unassigned
    with pytest.raises(CredentialError):  # tagging characters (table C.9) stay prohibited
        saslprep("a\U000e0041", allow_unassigned=True)
    assert saslprep("a\u0221", allow_unassigned=True) == "a\u0221"
    with pytest.raises(CredentialError):
        saslprep("a\u0221")  # U+0221 is unassigned in Unicode 3.2


# ------------------------------------------------------------------------------------------
# OpaqueString
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        ("correct horse battery staple", "correct horse battery staple"),
        ("Correct Horse Battery Staple", "Correct Horse Battery Staple"),  # no case mapping
        ("\u03c0\u00df\u00e5", "\u03c0\u00df\u00e5"),
        ("Jack of \u2666s", "Jack of \u2666s"),  # symbols are fine
        ("foo\u1680bar", "foo bar"),  # OGHAM SPACE MARK -> SPACE
        ("e\u0301", "\u00e9"),  # NFC
        ("\u2168", "\u2168"),  # compatibility characters are NOT mapped (no NFKC)
        ("\u30de\u30c8\u30ea\u30c3\u30af\u30b9", "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"),
        ("\u0915\u094d\u200d\u0937", "\u0915\u094d\u200d\u0937"),  # ZWJ after a virama
    ],
)
def test_opaque_string_examples(given_: str, expected: str) -> None:
    assert opaque_string(given_) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",  # empty
        "my cat is a \u0009by",  # RFC 8265 §4.3 example: HORIZONTAL TAB is a control
        "a\u0000b",
        "The\u00adMatrix",  # SOFT HYPHEN is default-ignorable
        "a\u200db",  # ZWJ not after a virama
        "a\ue000",  # private use
        "a\ufdd0",  # noncharacter
        "a\U0001ffff",  # noncharacter
        "a\u1100",  # conjoining jamo
        "a\u2028",  # LINE SEPARATOR
        "a\ufe0f",  # variation selector
        "a\u0378",  # unassigned
        "\ud800",  # surrogate
    ],
)
def test_opaque_string_rejects(bad: str) -> None:
    with pytest.raises(CredentialError):
        opaque_string(bad)


@given(st.text(min_size=1, max_size=30))
def test_opaque_string_is_idempotent_or_rejects(text: str) -> None:
    try:
        once = opaque_string(text)
    except CredentialError:
        return
    assert opaque_string(once) == once
    assert unicodedata.is_normalized("NFC", once)


@given(st.text(max_size=30))
def test_saslprep_raises_only_credential_error(text: str) -> None:
    with contextlib.suppress(CredentialError):
        saslprep(text)


# ------------------------------------------------------------------------------------------
# Keys
# ------------------------------------------------------------------------------------------


def test_short_term_key() -> None:
    assert short_term_key("VOkJxbRl1RmTxUk/WvJxBt") == b"VOkJxbRl1RmTxUk/WvJxBt"
    assert short_term_key("p\u00e4ss") == "p\u00e4ss".encode()
    assert short_term_key("pa\u0308ss") == "p\u00e4ss".encode()
    with pytest.raises(CredentialError):
        short_term_key("")


def test_long_term_key_md5_and_sha256() -> None:
    md5 = long_term_key("user", "realm", "pass")
    assert md5 == hashlib.md5(b"user:realm:pass").digest()
    sha = long_term_key("user", "realm", "pass", PasswordAlgorithm.SHA256)
    assert sha == hashlib.sha256(b"user:realm:pass").digest()
    with pytest.raises(CredentialError):
        long_term_key("user", "realm", "pass", 0x99)
    # realm and password go through OpaqueString (NFC here)
    assert long_term_key("u", "r\u0301", "p") == hashlib.md5("u:\u0155:p".encode()).digest()


def test_long_term_key_strips_quotes_and_trailing_nulls() -> None:
    expected = hashlib.md5(b"user:realm:pass").digest()
    assert long_term_key("user\x00", '"realm"', "pass\x00\x00") == expected
    assert long_term_key('"user"', "realm\x00", "pass") == expected


def test_userhash_vector() -> None:
    # RFC 8489 Appendix B.1
    expected = bytes.fromhex("4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704")
    assert userhash("\u30de\u30c8\u30ea\u30c3\u30af\u30b9", "example.org") == expected
