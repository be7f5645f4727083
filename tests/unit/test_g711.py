"""G.711 bit-exactness against a scalar reference written from the G.711 quantization tables.

The reference below is deliberately different from the table builder in media/g711.py: it
lists the decision levels of each law (G.711 Tables 1a/2a: segment end points and equal steps
within a segment) and searches them, instead of doing bit manipulation.

Sign convention (as in the ITU-T G.191 reference code): input is 16-bit two's complement;
on the signed axis every quantization interval is closed at its lower end, so a positive
sample on a decision level goes to the larger magnitude and a negative one to the smaller.
"""

import bisect
import warnings

import numpy as np
import pytest

from media.g711 import G711Codec, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python 3.13 removed it
        audioop = None  # type: ignore[assignment]


def ulaw_levels() -> list[int]:
    """µ-law decision levels, 16-bit scale (14-bit value * 4): 8 segments of 16 steps.

    Segment s (0-7) has step 2**(s+1) in 14-bit units; segment 0 starts with a half step
    (0..1), so the levels are 0, 1, 3, 5, ..., 31, 35, 39, ..., 8159 (G.711 Table 2a).
    """
    levels = []
    value = -1  # segment 0 starts half a step below zero, so its first interval is 0..1
    for segment in range(8):
        step = 2 ** (segment + 1)
        for _ in range(16):
            levels.append(max(value, 0) * 4)
            value += step
    assert value == 8159  # the top of the last segment is the clipping level
    return levels


def alaw_levels() -> list[int]:
    """A-law decision levels, 16-bit scale (13-bit value * 8): segments 0 and 1 step 2,
    then doubling: 0, 2, 4, ..., 64, 68, ..., 4096 in 13-bit units (G.711 Table 1a)."""
    levels = []
    value = 0
    for segment in range(8):
        step = 2 if segment < 2 else 2**segment
        for _ in range(16):
            levels.append(value * 8)
            value += step
    return levels


ULAW_LEVELS = ulaw_levels()
ALAW_LEVELS = alaw_levels()


def interval(levels: list[int], x: int) -> int:
    if x >= 0:
        return bisect.bisect_right(levels, x) - 1  # last level <= x
    return bisect.bisect_left(levels, -x) - 1  # last level < |x|


def ref_ulaw_encode(x: int) -> int:
    i = interval(ULAW_LEVELS, x)  # 0..127, magnitude order
    code = 0x7F - i  # µ-law transmits the complement of segment/step (G.711 Table 2a)
    return code | 0x80 if x >= 0 else code


def ref_alaw_encode(x: int) -> int:
    i = interval(ALAW_LEVELS, x)
    code = i | 0x80 if x >= 0 else i
    return code ^ 0x55  # even bits inverted (G.711 Table 1a note)


def ref_ulaw_decode(code: int) -> int:
    i = 0x7F - (code & 0x7F)
    if i == 0:
        value = 0
    else:
        upper = ULAW_LEVELS[i + 1] if i < 127 else 8159 * 4
        value = (ULAW_LEVELS[i] + upper) // 2  # mid-point of the interval
    return value if code & 0x80 else -value


def ref_alaw_decode(code: int) -> int:
    code ^= 0x55
    i = code & 0x7F
    upper = ALAW_LEVELS[i + 1] if i < 127 else 4096 * 8
    value = (ALAW_LEVELS[i] + upper) // 2
    return value if code & 0x80 else -value


ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_reference_tables_have_128_intervals() -> None:
    assert len(ULAW_LEVELS) == 128 and ULAW_LEVELS[-1] == 7903 * 4
    assert len(ALAW_LEVELS) == 128 and ALAW_LEVELS[-1] == 3968 * 8


def test_ulaw_encode_bit_exact_all_inputs() -> None:
    expected = bytes(ref_ulaw_encode(int(x)) for x in ALL_INT16)
    assert ulaw_encode(ALL_INT16) == expected


def test_alaw_encode_bit_exact_all_inputs() -> None:
    expected = bytes(ref_alaw_encode(int(x)) for x in ALL_INT16)
    assert alaw_encode(ALL_INT16) == expected


def test_decode_bit_exact_all_codes() -> None:
    assert ulaw_decode(ALL_CODES).tolist() == [ref_ulaw_decode(c) for c in ALL_CODES]
    assert alaw_decode(ALL_CODES).tolist() == [ref_alaw_decode(c) for c in ALL_CODES]


def test_known_values() -> None:
    assert ulaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16)) == b"\xff\x7f\x80\x00"
    assert alaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16)) == b"\xd5\x55\xaa\x2a"
    assert ulaw_decode(b"\xff\x7f\x80\x00").tolist() == [0, 0, 32124, -32124]
    assert alaw_decode(b"\xd5\x55\xaa\x2a").tolist() == [8, -8, 32256, -32256]


def test_decode_encode_is_identity_on_codes() -> None:
    # every code decodes to a value inside its own interval (except µ-law's two zeros)
    for codec in (G711Codec("pcmu"), G711Codec("pcma")):
        decoded = codec.decode(ALL_CODES)
        again = codec.encode(decoded)
        mismatched = [c for c, d in zip(ALL_CODES, again, strict=True) if c != d]
        assert mismatched == ([0x7F] if codec.name == "PCMU" else [])


@pytest.mark.skipif(audioop is None, reason="audioop was removed in Python 3.13")
def test_against_audioop() -> None:
    assert audioop is not None
    raw = ALL_INT16.tobytes()
    assert alaw_encode(ALL_INT16) == audioop.lin2alaw(raw, 2)
    assert ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)
    # audioop's µ-law encoder takes the magnitude of x >> 2 (rounding negative values away
    # from zero) where G.191 uses the one's complement: they differ only for negative
    # samples whose magnitude is within 4 LSB below a decision level, by one interval.
    ours = np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8).astype(int)
    theirs = np.frombuffer(audioop.lin2ulaw(raw, 2), dtype=np.uint8).astype(int)
    differ = np.nonzero(ours != theirs)[0]
    assert len(differ) == 127 * 4
    assert np.all(ALL_INT16[differ] < 0)
    assert np.all(np.abs(ours[differ] - theirs[differ]) == 1)
    levels = np.array(ULAW_LEVELS[1:])
    magnitudes = -ALL_INT16[differ].astype(int)
    assert np.all(np.isin((magnitudes + 3) // 4 * 4, levels))


def test_codec_objects() -> None:
    pcmu, pcma = G711Codec("PCMU"), G711Codec("pcma")
    assert (pcmu.payload_type, pcma.payload_type) == (0, 8)
    assert pcmu.sample_rate == 8000 and pcmu.channels == 1
    frame = (np.sin(np.arange(160) / 5) * 10000).astype(np.int16)
    assert len(pcmu.encode(frame)) == 160
    assert pcmu.decode(pcmu.encode(frame)).dtype == np.int16
    with pytest.raises(ValueError):
        G711Codec("g722")


def test_encode_rejects_non_int16() -> None:
    with pytest.raises(TypeError):
        ulaw_encode(np.zeros(160, dtype=np.float32))


def test_encode_accepts_2d_and_non_contiguous() -> None:
    frame = (np.arange(320) * 100 - 16000).astype(np.int16)
    assert ulaw_encode(frame[::2]) == ulaw_encode(frame[::2].copy())
    assert alaw_encode(frame.reshape(160, 2)) == alaw_encode(frame)


def test_quantization_error_bounded() -> None:
    # G.711 is ~8 bit log PCM: relative error within half a step (6.25 % of the magnitude)
    for enc, dec in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        y = dec(enc(ALL_INT16)).astype(int)
        x = ALL_INT16.astype(int)
        big = (np.abs(x) > 1024) & (np.abs(x) < 31000)
        rel = np.abs(y[big] - x[big]) / np.abs(x[big])
        assert rel.max() < 0.07
        assert np.all(np.sign(y[big]) == np.sign(x[big]))


def dominant_frequency(signal: np.ndarray, rate: int) -> float:
    windowed = signal.astype(np.float64) * np.hanning(len(signal))
    spectrum = np.abs(np.fft.rfft(windowed))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_tone_round_trip(law: str) -> None:
    codec = G711Codec(law)
    t = np.arange(8000) / 8000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    out = np.concatenate(
        [codec.decode(codec.encode(tone[i : i + 160])) for i in range(0, 8000, 160)]
    )
    assert len(out) == 8000
    assert abs(dominant_frequency(out, 8000) - 440) <= 2
    noise = out.astype(float) - tone
    snr = 10 * np.log10(np.sum(tone.astype(float) ** 2) / np.sum(noise**2))
    assert snr > 30  # G.711 gives ~38 dB SNR at this level
