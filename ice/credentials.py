"""STUN credentials: string preparation and the HMAC keys of RFC 8489 §9.

* :func:`opaque_string` - the PRECIS OpaqueString profile (RFC 8265 §4.2) that RFC 8489 applies
  to passwords, realms and usernames.
* :func:`saslprep` - SASLprep (RFC 4013 / stringprep RFC 3454), what RFC 5389 used; the
  RFC 5769 long-term vector needs it ("The\\u00adM\\u00aatr\\u2168" -> "TheMatrIX").
* :func:`short_term_key`, :func:`long_term_key`, :func:`userhash`.

Only the standard library is used (``unicodedata`` for PRECIS, ``stringprep`` for SASLprep).
PRECIS derived properties are approximated from Unicode general categories, which is exact for
the code points that matter here (controls, unassigned, ignorables, spaces, letters, symbols).
"""

from __future__ import annotations

import hashlib
import stringprep
import unicodedata
from collections.abc import Callable

from ice.stun import PasswordAlgorithm

__all__ = [
    "CredentialError",
    "long_term_key",
    "opaque_string",
    "saslprep",
    "short_term_key",
    "userhash",
]


class CredentialError(ValueError):
    """A string is not allowed by the preparation profile (or an algorithm is unsupported)."""


# --------------------------------------------------------------------------------------------
# PRECIS OpaqueString (RFC 8265 §4.2, FreeformClass of RFC 8264 §4.3)
# --------------------------------------------------------------------------------------------

# General categories valid in the FreeformClass (RFC 8264 §9.1-§9.11: LetterDigits,
# OtherLetterDigits, Spaces, Symbols, Punctuation; HasCompat is also valid for Freeform).
_FREEFORM_CATEGORIES = frozenset(
    "Ll Lu Lo Nd Lm Mn Mc Lt Nl No Me Zs Sm Sc Sk So Pc Pd Ps Pe Pi Pf Po".split()
)


def _default_ignorable(cp: int) -> bool:
    """Default_Ignorable_Code_Point outside category Cf (plus noncharacters; RFC 8264 §9.13)."""
    return (
        cp in (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0)
        or 0x180B <= cp <= 0x180F
        or 0xFE00 <= cp <= 0xFE0F
        or 0xE0000 <= cp <= 0xE0FFF
        or 0xFDD0 <= cp <= 0xFDEF
        or (cp & 0xFFFE) == 0xFFFE
    )


def _old_hangul_jamo(cp: int) -> bool:
    """Conjoining jamo are DISALLOWED (RFC 8264 §9.9)."""
    return 0x1100 <= cp <= 0x11FF or 0xA960 <= cp <= 0xA97F or 0xD7B0 <= cp <= 0xD7FF


def opaque_string(value: str) -> str:
    """Apply the OpaqueString profile (RFC 8265 §4.2) and enforce its rules.

    Non-ASCII spaces become U+0020, the string is normalized to NFC, and it must be non-empty
    and contain only FreeformClass code points (no controls, unassigned, default-ignorable,
    surrogates, private use or old Hangul jamo; ZWJ/ZWNJ only after a virama).
    Raises :class:`CredentialError`.
    """
    if value.isascii():
        # fast path: printable ASCII is PVALID; controls are not
        if not value or any(not 0x20 <= ord(c) <= 0x7E for c in value):
            raise CredentialError("empty string or ASCII control character")
        return value
    mapped = "".join(" " if unicodedata.category(c) == "Zs" else c for c in value)
    result = unicodedata.normalize("NFC", mapped)
    if not result:
        raise CredentialError("empty string")
    prev = ""
    for ch in result:
        cp = ord(ch)
        if cp in (0x200C, 0x200D):  # JoinControl: CONTEXTJ (RFC 5892 Appendix A.1/A.2)
            if not prev or unicodedata.combining(prev) != 9:
                raise CredentialError(f"join control U+{cp:04X} not after a virama")
        elif (
            unicodedata.category(ch) not in _FREEFORM_CATEGORIES
            or _default_ignorable(cp)
            or _old_hangul_jamo(cp)
        ):
            raise CredentialError(f"code point U+{cp:04X} not allowed by OpaqueString")
        prev = ch
    return result


# --------------------------------------------------------------------------------------------
# SASLprep (RFC 4013)
# --------------------------------------------------------------------------------------------

_PROHIBITED: tuple[Callable[[str], bool], ...] = (
    stringprep.in_table_c12,
    stringprep.in_table_c21,
    stringprep.in_table_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def saslprep(value: str, *, allow_unassigned: bool = False) -> str:
    """SASLprep (RFC 4013 §2): map, NFKC, prohibit, bidi check, unassigned check.

    ``allow_unassigned`` selects "queries" rather than "stored strings" (RFC 3454 §7).
    Raises :class:`CredentialError`.
    """
    # §2.1 mapping: non-ASCII space -> SPACE, "commonly mapped to nothing" -> removed
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in value if not stringprep.in_table_b1(c)
    )
    # §2.2 normalization
    result = unicodedata.normalize("NFKC", mapped)
    if not result:
        return result
    for ch in result:
        # §2.3 prohibited output
        if any(table(ch) for table in _PROHIBITED):
            raise CredentialError(f"prohibited code point U+{ord(ch):04X}")
        # RFC 3454 §7 unassigned code points
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise CredentialError(f"unassigned code point U+{ord(ch):04X}")
    # §2.4 bidirectional characters (RFC 3454 §6)
    if any(stringprep.in_table_d1(c) for c in result):
        if any(stringprep.in_table_d2(c) for c in result):
            raise CredentialError("string mixes RandALCat and LCat characters")
        if not (stringprep.in_table_d1(result[0]) and stringprep.in_table_d1(result[-1])):
            raise CredentialError("RandALCat string must start and end with RandALCat")
    return result


# --------------------------------------------------------------------------------------------
# Keys (RFC 8489 §9.1.1, §9.2.2, §14.4)
# --------------------------------------------------------------------------------------------

Prep = Callable[[str], str]


def short_term_key(password: str, *, prep: Prep = opaque_string) -> bytes:
    """Short-term credential key: ``OpaqueString(password)`` as UTF-8 (RFC 8489 §9.1.1).

    ICE uses the peer's ``a=ice-pwd`` (RFC 8445 §7.2.2).
    """
    return prep(password).encode("utf-8")


def long_term_key(
    username: str,
    realm: str,
    password: str,
    algorithm: int = PasswordAlgorithm.MD5,
    *,
    prep: Prep = opaque_string,
) -> bytes:
    """Long-term credential key (RFC 8489 §9.2.2).

    ``H(username ":" prep(realm) ":" prep(password))`` with H = MD5 (16 bytes) or SHA-256
    (32 bytes) according to PASSWORD-ALGORITHM.  ``username`` is used as sent in USERNAME
    (already prepared by the caller); ``prep`` defaults to OpaqueString (RFC 8489), pass
    :func:`saslprep` for RFC 5389 peers.
    """
    # "with any quotes and trailing nulls removed" (RFC 8489 §9.2.2)
    username = _unquote(username)
    realm = _unquote(realm)
    password = password.rstrip("\x00")
    material = f"{username}:{prep(realm)}:{prep(password)}".encode()
    if algorithm == PasswordAlgorithm.MD5:
        return hashlib.md5(material).digest()
    if algorithm == PasswordAlgorithm.SHA256:
        return hashlib.sha256(material).digest()
    raise CredentialError(f"unsupported password algorithm {algorithm}")


def _unquote(value: str) -> str:
    value = value.rstrip("\x00")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def userhash(username: str, realm: str, *, prep: Prep = opaque_string) -> bytes:
    """USERHASH value: ``SHA-256(OpaqueString(username) ":" OpaqueString(realm))`` (§14.4)."""
    return hashlib.sha256(f"{prep(username)}:{prep(realm)}".encode()).digest()
