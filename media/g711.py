"""G.711 PCMU (µ-law) and PCMA (A-law) codecs (ITU-T G.711; RTP payload types 0 and 8, RFC 3551).

Bit-exact to the ITU-T G.191 reference implementation of G.711 for every int16 input: encoding
is one lookup in a 65536-entry table indexed by the sample's uint16 bit pattern, decoding one
lookup in a 256-entry table. The tables are computed once at import with the G.711 segment
rules:

* µ-law (G.711 §3): the 16-bit sample is taken as a 14-bit value (``>> 2``), its magnitude is
  biased by 33 and clipped to 13 bits; the segment is the position of the leading one, the
  4-bit step the next bits; the code is the one's complement of sign/segment/step.
* A-law (G.711 §2): 12-bit magnitude (``>> 4``); segments 0 and 1 share a step size, each
  further segment doubles it; even bits are inverted (XOR 0x55).

Negative samples use the one's-complement magnitude (``~x``) like G.191, so a negative value
exactly on a decision level falls into the interval nearer zero.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "PCMA_PAYLOAD_TYPE",
    "PCMU_PAYLOAD_TYPE",
    "G711Codec",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

PCMU_PAYLOAD_TYPE = 0
PCMA_PAYLOAD_TYPE = 8

Int16Array = npt.NDArray[np.int16]


def _leading_segment(values: npt.NDArray[np.int32], base_bits: int) -> npt.NDArray[np.int32]:
    """Number of right shifts needed to bring ``values`` below ``1 << base_bits``."""
    seg = np.zeros_like(values)
    v = values >> base_bits
    while np.any(v):
        nonzero = v != 0
        seg += nonzero
        v >>= 1
    return seg


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    x = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    magnitude = np.where(x < 0, ~x, x) >> 2
    biased = np.minimum(magnitude + 33, 0x1FFF)
    seg = _leading_segment(biased, 6) + 1  # 1..8: biased in [2**(seg+4), 2**(seg+5))
    step = (biased >> seg) & 0x0F
    code = ((8 - seg) << 4) | (0x0F - step)
    code = np.where(x >= 0, code | 0x80, code)
    return code.astype(np.uint8)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    x = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    ix = np.where(x < 0, ~x, x) >> 4  # 12-bit magnitude
    exp = _leading_segment(ix, 5)  # shifts to bring ix to at most 31
    high = exp > 0
    seg = np.where(high, exp + 1, np.where(ix > 15, 1, 0))
    mant = np.where(high, (ix >> exp) - 16, np.where(ix > 15, ix - 16, ix))
    code = (seg << 4) | mant
    code = np.where(x >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


def _build_ulaw_decode() -> Int16Array:
    code = np.arange(256, dtype=np.int32)
    inv = ~code & 0xFF
    exponent = (inv >> 4) & 0x07
    mantissa = inv & 0x0F
    step = 4 << (exponent + 1)
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - 4 * 33
    return np.where(code < 0x80, -magnitude, magnitude).astype(np.int16)


def _build_alaw_decode() -> Int16Array:
    code = np.arange(256, dtype=np.int32)
    ix = (code ^ 0x55) & 0x7F
    exponent = ix >> 4
    mant = ix & 0x0F
    mant = np.where(exponent > 0, mant + 16, mant)
    mant = (mant << 4) + 8
    mant = np.where(exponent > 1, mant << np.maximum(exponent - 1, 0), mant)
    return np.where(code > 127, mant, -mant).astype(np.int16)


_ULAW_ENCODE = _build_ulaw_encode()
_ALAW_ENCODE = _build_alaw_encode()
_ULAW_DECODE = _build_ulaw_decode()
_ALAW_DECODE = _build_alaw_decode()
for _table in (_ULAW_ENCODE, _ALAW_ENCODE, _ULAW_DECODE, _ALAW_DECODE):
    _table.flags.writeable = False


def _as_uint16(samples: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        raise TypeError(f"G.711 encodes int16 samples, not {arr.dtype}")
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint16)


def ulaw_encode(samples: npt.ArrayLike) -> bytes:
    """Encode int16 samples to µ-law octets (PCMU payload)."""
    return _ULAW_ENCODE[_as_uint16(samples)].tobytes()


def alaw_encode(samples: npt.ArrayLike) -> bytes:
    """Encode int16 samples to A-law octets (PCMA payload)."""
    return _ALAW_ENCODE[_as_uint16(samples)].tobytes()


def ulaw_decode(payload: bytes) -> Int16Array:
    """Decode µ-law octets to int16 samples (any byte string is valid)."""
    return _ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decode(payload: bytes) -> Int16Array:
    """Decode A-law octets to int16 samples (any byte string is valid)."""
    return _ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


class G711Codec:
    """PCMU or PCMA at 8 kHz mono (RFC 3551 §4.5.14): 20 ms = 160 samples = 160 octets."""

    sample_rate = 8000
    channels = 1

    def __init__(self, law: str = "pcmu") -> None:
        law = law.lower()
        if law == "pcmu":
            self.payload_type = PCMU_PAYLOAD_TYPE
            self._encode_table, self._decode_table = _ULAW_ENCODE, _ULAW_DECODE
        elif law == "pcma":
            self.payload_type = PCMA_PAYLOAD_TYPE
            self._encode_table, self._decode_table = _ALAW_ENCODE, _ALAW_DECODE
        else:
            raise ValueError(f"unknown G.711 law {law!r} (pcmu or pcma)")
        self.name = law.upper()

    def encode(self, samples: npt.ArrayLike) -> bytes:
        """int16 samples -> payload octets."""
        return self._encode_table[_as_uint16(samples)].tobytes()

    def decode(self, payload: bytes) -> Int16Array:
        """Payload octets -> int16 samples."""
        return self._decode_table[np.frombuffer(payload, dtype=np.uint8)]
