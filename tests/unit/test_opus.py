import numpy as np
import opuslib_next
import pytest

from media.opus import (
    FRAME_SAMPLES,
    OpusCodecError,
    OpusDecoder,
    OpusEncoder,
    OpusParams,
    format_fmtp,
    packet_samples,
    parse_fmtp,
)

RATE = 48000


def tone(freq: float, seconds: float, amplitude: float = 8000) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def voiced(seconds: float) -> np.ndarray:
    """A speech-like signal: a harmonic series with a gliding pitch and a syllable envelope."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 150 + 30 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
    return (x * envelope * 6000).astype(np.int16)


def frames_of(signal: np.ndarray) -> list[np.ndarray]:
    return [signal[i : i + FRAME_SAMPLES] for i in range(0, len(signal), FRAME_SAMPLES)]


def dominant_frequency(signal: np.ndarray) -> float:
    windowed = signal.astype(np.float64) * np.hanning(len(signal))
    spectrum = np.abs(np.fft.rfft(windowed))
    return float(np.fft.rfftfreq(len(signal), 1 / RATE)[np.argmax(spectrum)])


def test_mono_tone_round_trip() -> None:
    enc, dec = OpusEncoder(1), OpusDecoder(1)
    packets = [enc.encode(f) for f in frames_of(tone(440, 1.0))]
    assert all(0 < len(p) < 200 for p in packets)
    out = np.concatenate([dec.decode(p) for p in packets])
    assert out.dtype == np.int16 and out.shape == (RATE,)
    assert abs(dominant_frequency(out[RATE // 5 :]) - 440) < 3
    assert np.sqrt(np.mean(out[RATE // 5 :].astype(float) ** 2)) > 3000  # not attenuated away


def test_stereo_channels_stay_apart() -> None:
    left, right = tone(440, 0.6), tone(1000, 0.6)
    stereo = np.stack([left, right], axis=1)
    enc, dec = OpusEncoder(2, bitrate=64000), OpusDecoder(2)
    out = np.concatenate([dec.decode(enc.encode(f)) for f in frames_of(stereo)])
    assert out.shape == (len(left), 2)
    assert abs(dominant_frequency(out[9600:, 0]) - 440) < 3
    assert abs(dominant_frequency(out[9600:, 1]) - 1000) < 3
    last = enc.encode(stereo[:FRAME_SAMPLES])
    assert dec.conceal().shape == dec.decode_fec(last).shape == (FRAME_SAMPLES, 2)


def test_force_mono_collapses_stereo() -> None:
    stereo = np.stack([tone(440, 0.4), tone(1000, 0.4)], axis=1)
    enc, dec = OpusEncoder(2, bitrate=64000), OpusDecoder(2)
    enc.force_mono = True
    assert enc.force_mono
    out = np.concatenate([dec.decode(enc.encode(f)) for f in frames_of(stereo)])
    assert np.array_equal(out[:, 0], out[:, 1])
    enc.force_mono = False
    assert not enc.force_mono


def test_interleaved_stereo_input_accepted() -> None:
    enc = OpusEncoder(2)
    assert enc.encode(np.zeros(2 * FRAME_SAMPLES, dtype=np.int16))


def test_wrong_frame_size_rejected() -> None:
    enc = OpusEncoder(1)
    with pytest.raises(ValueError):
        enc.encode(np.zeros(480, dtype=np.int16))
    with pytest.raises(TypeError):
        enc.encode(np.zeros(960, dtype=np.float32))
    with pytest.raises(ValueError):
        OpusEncoder(3)
    with pytest.raises(ValueError):
        OpusDecoder(0)


def test_corrupt_and_empty_packets_raise_codec_error() -> None:
    dec = OpusDecoder(1)
    for bad in (b"\xff\xff\xff", b"\x03", b"\x0b\xff"):
        with pytest.raises(OpusCodecError) as info:
            dec.decode(bad)
        assert info.value.code == opuslib_next.INVALID_PACKET
    with pytest.raises(OpusCodecError):
        dec.decode(b"")
    with pytest.raises(OpusCodecError):
        dec.decode_fec(b"")
    assert issubclass(OpusCodecError, ValueError)
    # the decoder still works afterwards
    assert dec.decode(OpusEncoder(1).encode(np.zeros(960, np.int16))).shape == (960,)


def test_decoder_reports_longer_frames() -> None:
    # a 40 ms packet from a differently configured sender decodes to 1920 samples
    raw = opuslib_next.Encoder(RATE, 1, opuslib_next.APPLICATION_VOIP)
    packet = raw.encode(np.zeros(1920, np.int16).tobytes(), 1920)
    dec = OpusDecoder(1)
    assert dec.decode(packet).shape == (1920,)
    assert dec.last_frame_samples == 1920
    assert dec.conceal().shape == (1920,)


def test_settings_read_back() -> None:
    enc = OpusEncoder(1, bitrate=24000, complexity=3, fec=False, packet_loss_perc=7, dtx=True)
    assert (enc.bitrate, enc.complexity, enc.fec, enc.packet_loss_perc, enc.dtx) == (
        24000,
        3,
        False,
        7,
        True,
    )
    enc.fec = True
    enc.packet_loss_perc = 250  # clamped
    enc.dtx = False
    enc.cbr = True
    assert enc.fec and enc.packet_loss_perc == 100 and not enc.dtx and enc.cbr
    enc.packet_loss_perc = -5
    assert enc.packet_loss_perc == 0
    enc.set_loss_from_rtcp(64)  # RTCP fraction lost 64/256
    assert enc.packet_loss_perc == 25
    enc.set_loss_from_rtcp(255)
    assert enc.packet_loss_perc == 100
    assert enc.lookahead > 0
    for bad in ({"bitrate": 100}, {"complexity": 11}):
        with pytest.raises(ValueError):
            OpusEncoder(1, **bad)  # type: ignore[arg-type]


def test_cbr_gives_constant_packet_sizes() -> None:
    enc = OpusEncoder(1, bitrate=32000, cbr=True, fec=False)
    sizes = {len(enc.encode(f)) for f in frames_of(voiced(0.5))}
    assert sizes == {80}  # 32 kbit/s * 20 ms = 80 octets


def test_dtx_sends_tiny_packets_in_silence() -> None:
    silence = np.zeros(FRAME_SAMPLES, np.int16)
    with_dtx, without = OpusEncoder(1, dtx=True), OpusEncoder(1, dtx=False)
    dtx_sizes = [len(with_dtx.encode(silence)) for _ in range(40)]
    plain_sizes = [len(without.encode(silence)) for _ in range(40)]
    # DTX: 1-octet packets, with a comfort-noise refresh every 400 ms (RFC 6716 / libopus)
    assert sum(size <= 2 for size in dtx_sizes[-20:]) >= 18
    assert min(plain_sizes[-10:]) > 2


def test_conceal_produces_frames_and_fades() -> None:
    enc, dec = OpusEncoder(1), OpusDecoder(1)
    for frame in frames_of(voiced(0.3)):
        dec.decode(enc.encode(frame))
    concealed = [dec.conceal() for _ in range(30)]
    assert all(c.shape == (FRAME_SAMPLES,) and c.dtype == np.int16 for c in concealed)
    first = np.abs(concealed[0].astype(float)).mean()
    last = np.abs(concealed[-1].astype(float)).mean()
    assert first > 100 and last < first / 10


def _loss_errors(
    packets: list[bytes], reference: list[np.ndarray], lost: int
) -> tuple[float, float]:
    with_fec, with_plc = OpusDecoder(1), OpusDecoder(1)
    for packet in packets[:lost]:
        with_fec.decode(packet)
        with_plc.decode(packet)
    recovered = with_fec.decode_fec(packets[lost + 1])
    concealed = with_plc.conceal()
    assert recovered.shape == concealed.shape == (FRAME_SAMPLES,)
    target = reference[lost].astype(float)
    return (
        float(np.sum((recovered - target) ** 2)),
        float(np.sum((concealed - target) ** 2)),
    )


def test_fec_recovers_a_lost_frame_better_than_plc() -> None:
    signal = voiced(1.6)
    enc = OpusEncoder(1, bitrate=32000, fec=True, packet_loss_perc=20)
    packets = [enc.encode(f) for f in frames_of(signal)]
    clean = OpusDecoder(1)
    reference = [clean.decode(p) for p in packets]
    errors = [_loss_errors(packets, reference, k) for k in range(10, len(packets) - 1, 6)]
    fec_error = sum(e[0] for e in errors)
    plc_error = sum(e[1] for e in errors)
    assert fec_error < 0.5 * plc_error
    # also closer to the original input (decoder output lags it by the encoder lookahead)
    delay = enc.lookahead
    fec_vs_input = plc_vs_input = 0.0
    for k in range(10, len(packets) - 1, 6):
        original = signal[k * FRAME_SAMPLES - delay : (k + 1) * FRAME_SAMPLES - delay]
        with_fec, with_plc = OpusDecoder(1), OpusDecoder(1)
        for packet in packets[:k]:
            with_fec.decode(packet)
            with_plc.decode(packet)
        fec_vs_input += float(np.sum((with_fec.decode_fec(packets[k + 1]) - original) ** 2))
        plc_vs_input += float(np.sum((with_plc.conceal() - original.astype(float)) ** 2))
    assert fec_vs_input < plc_vs_input


def test_decode_fec_without_fec_data_is_plc() -> None:
    enc = OpusEncoder(1, fec=False)
    packets = [enc.encode(f) for f in frames_of(voiced(0.4))]
    a, b = OpusDecoder(1), OpusDecoder(1)
    for packet in packets[:10]:
        a.decode(packet)
        b.decode(packet)
    assert np.array_equal(a.decode_fec(packets[11]), b.conceal())


# --- RFC 7587 parameters ----------------------------------------------------------------------


def test_parse_and_format_fmtp() -> None:
    assert parse_fmtp("minptime=10; useinbandfec=1;STEREO=0;flag") == {
        "minptime": "10",
        "useinbandfec": "1",
        "stereo": "0",
        "flag": "",
    }
    assert format_fmtp({"minptime": "10", "useinbandfec": "1"}) == "minptime=10;useinbandfec=1"


def test_params_defaults_match_rfc7587() -> None:
    p = OpusParams()
    assert p.maxplaybackrate == 48000 and p.sprop_maxcapturerate == 48000
    assert not (p.stereo or p.sprop_stereo or p.cbr or p.useinbandfec or p.usedtx)
    assert p.maxaveragebitrate is None
    assert p.to_fmtp() == {}
    assert OpusParams.from_fmtp({}) == p


def test_params_from_fmtp_string_and_dict() -> None:
    text = (
        "maxplaybackrate=16000;sprop-maxcapturerate=16000;maxaveragebitrate=20000;stereo=1;"
        "sprop-stereo=1;cbr=1;useinbandfec=1;usedtx=1;minptime=10;ptime=20;maxptime=40;x-foo=bar"
    )
    p = OpusParams.from_fmtp(text)
    assert p == OpusParams(
        maxplaybackrate=16000,
        sprop_maxcapturerate=16000,
        maxaveragebitrate=20000,
        stereo=True,
        sprop_stereo=True,
        cbr=True,
        useinbandfec=True,
        usedtx=True,
        ptime=20,
        minptime=10,
        maxptime=40,
        extra={"x-foo": "bar"},
    )
    assert OpusParams.from_fmtp(p.to_fmtp()) == p
    assert OpusParams.from_fmtp(parse_fmtp(text)) == p


def test_params_ignore_malformed_values() -> None:
    p = OpusParams.from_fmtp(
        {"useinbandfec": "yes", "maxplaybackrate": "100", "maxaveragebitrate": "-5", "cbr": ""}
    )
    assert p == OpusParams()


def test_to_fmtp_writes_what_we_offer() -> None:
    ours = OpusParams(useinbandfec=True, minptime=10)
    assert ours.to_fmtp() == {"minptime": "10", "useinbandfec": "1"}


def test_apply_remote_params_to_encoder() -> None:
    enc = OpusEncoder(2, bitrate=64000, fec=False, dtx=False)
    remote = OpusParams.from_fmtp(
        "maxplaybackrate=8000;maxaveragebitrate=12000;useinbandfec=1;usedtx=1;cbr=1"
    )
    remote.apply_to_encoder(enc)
    assert enc.max_bandwidth == opuslib_next.BANDWIDTH_NARROWBAND
    assert enc.bitrate == 12000
    assert enc.fec and enc.dtx and enc.cbr
    assert enc.force_mono  # stereo=0 (default): the remote wants mono
    OpusParams(stereo=True, maxplaybackrate=16000).apply_to_encoder(enc)
    assert not enc.force_mono
    assert enc.max_bandwidth == opuslib_next.BANDWIDTH_WIDEBAND
    assert enc.bitrate == 12000  # never raised above what we had


def test_maxplaybackrate_limits_encoded_bandwidth() -> None:
    enc, dec = OpusEncoder(1, bitrate=32000), OpusDecoder(1)
    OpusParams(maxplaybackrate=8000).apply_to_encoder(enc)
    signal = (tone(300, 0.5) // 2 + tone(6000, 0.5) // 2).astype(np.int16)
    out = np.concatenate([dec.decode(enc.encode(f)) for f in frames_of(signal)])[9600:]
    spectrum = np.abs(np.fft.rfft(out.astype(float) * np.hanning(len(out))))
    freqs = np.fft.rfftfreq(len(out), 1 / RATE)
    low = spectrum[(freqs > 250) & (freqs < 350)].max()
    high = spectrum[(freqs > 5900) & (freqs < 6100)].max()
    assert high < low / 100  # narrowband: nothing above 4 kHz survives


def test_packet_samples_from_toc() -> None:
    enc = OpusEncoder(1)
    assert packet_samples(enc.encode(np.zeros(960, np.int16))) == 960
    raw = opuslib_next.Encoder(RATE, 1, opuslib_next.APPLICATION_VOIP)
    assert packet_samples(raw.encode(np.zeros(2880, np.int16).tobytes(), 2880)) == 2880
    assert packet_samples(b"\x08") == 960  # TOC config 1: SILK NB 20 ms, code 0
    assert packet_samples(b"\x03\x05") == 5 * 480  # code 3, five 10 ms frames
    for bad in (b"", b"\x03", b"\x03\x3f"):  # empty, code 3 without count, 63 x 10 ms
        with pytest.raises(OpusCodecError):
            packet_samples(bad)


def test_packet_samples_agrees_with_libopus() -> None:
    """The pure-Python TOC reading gives what libopus's packet_get_* functions give, for every
    TOC byte and code-3 frame count (the receive path reads it for every packet)."""
    import opuslib_next.api.decoder as api

    for toc in range(256):
        for second in (0x00, 0x01, 0x02, 0x05, 0x30, 0xFF):
            data = bytes([toc, second])
            expected = int(api.packet_get_nb_frames(data, 2)) * int(
                api.packet_get_samples_per_frame(data, RATE)
            )
            if expected > 5760:
                with pytest.raises(OpusCodecError):
                    packet_samples(data)
            else:
                assert packet_samples(data) == expected, data.hex()


def test_encoder_accepts_stereo_shapes_and_views() -> None:
    stereo = OpusEncoder(2)
    frame = np.zeros((960, 2), np.int16)
    frame[:, 0] = tone(440, 0.02)[:960]
    assert stereo.encode(frame) and stereo.encode(frame.reshape(-1))
    mono = OpusEncoder(1)
    wide = np.zeros((960, 2), np.int16)
    assert mono.encode(wide[:, 0])  # a strided view is copied in
    with pytest.raises(TypeError):
        mono.encode(np.zeros(960, np.float32))
    with pytest.raises(ValueError):
        mono.encode(np.zeros(480, np.int16))


def test_maxaveragebitrate_shrinks_packets() -> None:
    frames = frames_of(voiced(1.0))
    enc = OpusEncoder(1, bitrate=64000, fec=False)
    big = np.mean([len(enc.encode(f)) for f in frames])
    enc = OpusEncoder(1, bitrate=64000, fec=False)
    OpusParams(maxaveragebitrate=12000).apply_to_encoder(enc)
    small = np.mean([len(enc.encode(f)) for f in frames[10:]])
    assert small * 8 * 50 < 12000 * 1.2  # average bitrate honoured (VBR: +-20 %)
    assert big > 2 * small
