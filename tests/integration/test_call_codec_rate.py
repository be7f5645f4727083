"""softphone.call: the audio ends follow the codec's clock across a codec change.

A call that starts with PCMU (8 kHz) and switches to Opus (48 kHz) by re-INVITE or UPDATE must
become wideband: the source is reopened at 48 kHz (not captured at 8 kHz and upsampled), so a
6 kHz tone - impossible through an 8 kHz capture - arrives at the peer's speaker at 6 kHz. The
other way (Opus -> PCMU) the source is reopened at 8 kHz instead of feeding the encoder from a
48 kHz capture through a resampler; an end that cannot work at the new rate (a 6 kHz tone at
8 kHz) is kept and resampled, and the call goes on.

Two in-process user agents on 127.0.0.1 (real sockets, ICE, RTP); the sources are WAV files and
tones. The speaker is the one stand-in: a sink that keeps every frame at the rate it was opened
at (``open_sink`` for ``speaker``), so the test reads what the sound card would have been given.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media.analysis import dominant_frequency, rms_dbfs
from media.sources import ToneSource, WavFileSource, load_wav, save_wav
from softphone import call as call_module
from softphone.call import Call, MediaOptions
from softphone.config import Account
from tests.helpers_call import LOOPBACK, Pair, media_options, until
from tests.helpers_media import FakeSoundStream


class MemorySpeaker:
    """Stands in for a speaker: keeps the frames written to it, at the rate it was opened at."""

    def __init__(self, sample_rate: int, frame_samples: int | None) -> None:
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples or sample_rate // 50
        self.frames: list[Any] = []
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def write(self, frame: Any) -> None:
        assert not self.closed
        assert len(frame) == self.frame_samples
        self.frames.append(np.asarray(frame, dtype=np.int16).copy())

    def close(self) -> None:
        self.closed = True

    def audio(self, skip_s: float = 0.0) -> Any:
        """What was played, without its first ``skip_s`` seconds."""
        x = np.concatenate(self.frames) if self.frames else np.zeros(0, np.int16)
        return x[int(skip_s * self.sample_rate) :]


@pytest.fixture
def speakers(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[MemorySpeaker]]:
    """``--record speaker`` with ``output_device=NAME`` opens a MemorySpeaker, listed under
    NAME in the order opened."""
    opened: dict[str, list[MemorySpeaker]] = {}
    real = call_module.open_sink

    def open_sink(spec: Any, rate: int, samples: int | None = None, *, device: Any = None) -> Any:
        if str(spec) != "speaker":
            return real(spec, rate, samples, device=device)
        speaker = MemorySpeaker(rate, samples)
        opened.setdefault(str(device), []).append(speaker)
        return speaker

    monkeypatch.setattr(call_module, "open_sink", open_sink)
    return opened


async def _connect(
    pair: Pair, accounts: tuple[Account, Account], media: tuple[MediaOptions, MediaOptions]
) -> tuple[Call, Call]:
    """alice's call (her account and media first) to bob's, answered."""
    alice = Call(pair.alice, accounts[0], media[0])
    return await pair.connected(alice, Call(pair.bob, accounts[1], media[1]))


def _media(play: str, record: str, device: str) -> MediaOptions:
    return media_options(play, record, output_device=device)


def _tone_wav(path: Path, frequency: float, seconds: float = 20.0, rate: int = 48000) -> str:
    """A WAV file at ``rate`` holding a ``frequency`` Hz tone at -15 dBFS."""
    tone = ToneSource(frequency, rate)
    frames = [tone.next_frame() for _ in range(int(seconds * 50))]
    save_wav(path, np.concatenate(frames), rate)
    return str(path)


def _received(call: Call) -> int:
    stream = call.stream
    return 0 if stream is None else stream.stats().packets_received


def _resampled(call: Call, end: str) -> bool:
    """Does the running session's source (or sink) go through a resampler?"""
    assert call.stream is not None
    kept: Any = getattr(call.stream, end)
    return bool(kept.resampled)


def _source_rate(call: Call) -> int:
    assert call._ends is not None
    return call._ends[0].sample_rate


@pytest.mark.parametrize(("who", "method"), [("caller", "INVITE"), ("callee", "UPDATE")])
async def test_pcmu_to_opus_reopens_the_source_at_48_khz_and_a_6_khz_tone_gets_through(
    pair: Pair,
    speakers: dict[str, list[MemorySpeaker]],
    tmp_path: Path,
    who: str,
    method: str,
) -> None:
    """PCMU first: the 6 kHz and 5 kHz tones of the two 48 kHz WAV files cannot pass an
    8 kHz capture (nearly silence arrives). After the switch to Opus both sources play the
    files at 48 kHz and both speakers are reopened at 48 kHz: each tone arrives at its
    frequency and level."""
    alice_wav, bob_wav = _tone_wav(tmp_path / "a.wav", 6000), _tone_wav(tmp_path / "b.wav", 5000)
    pcmu_only, both = Account(bind=LOOPBACK, codecs=("pcmu",)), Account(bind=LOOPBACK)
    accounts = (pcmu_only, both) if who == "caller" else (both, pcmu_only)
    alice, bob = await _connect(
        pair, accounts, (_media(alice_wav, "speaker", "alice"), _media(bob_wav, "speaker", "bob"))
    )
    try:
        assert alice.remote is not None and alice.remote.codec_name == "PCMU/8000"
        assert _source_rate(alice) == 8000 and _source_rate(bob) == 8000
        await until(lambda: _received(alice) > 25 and _received(bob) > 25)
        narrow = {name: speakers[name][0].audio(skip_s=0.1) for name in ("alice", "bob")}
        first_stream = alice.stream
        assert alice._ends is not None and first_stream is not None
        first_file = alice._ends[0].inner
        starter, other = (alice, bob) if who == "caller" else (bob, alice)
        lines: list[str] = []
        starter.progress = lines.append
        assert await starter.change_codecs(["opus", "pcmu"], method=method)
        await other.media_settled()
        assert "codec changed: PCMU/8000 -> opus/48000/2" in lines
        for call in (alice, bob):
            assert call.remote is not None and call.remote.codec_name == "opus/48000/2"
            assert call._ends is not None
            source, sink = call._ends
            # captured at the codec's rate: no resampler between the source and the encoder
            assert source.sample_rate == 48000 and source.reopened == 1
            assert sink.sample_rate == 48000 and sink.reopened == 1
            assert not _resampled(call, "source") and not _resampled(call, "sink")
        await until(lambda: _received(alice) > 50 and _received(bob) > 50)
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)
    assert alice.succeeded and bob.succeeded
    # alice's file went on where it was, on the same clock: every frame read was sent once
    assert alice.stream is not None and alice._ends is None  # closed at the hang-up
    file = alice.stream.source.source.source  # kept source -> mute switch -> file
    assert isinstance(file, WavFileSource) and file is not first_file
    assert file.pacer is first_file.pacer and file.sample_rate == 48000
    assert file.frames_read == first_stream.frames_sent + alice.stream.frames_sent
    # bob heard alice's 6 kHz tone, alice bob's 5 kHz one; before the switch neither got through
    for name, frequency in (("bob", 6000), ("alice", 5000)):
        first, wide = speakers[name]
        assert first.sample_rate == 8000 and first.closed
        assert wide.sample_rate == 48000 and wide.closed
        assert rms_dbfs(narrow[name]) < -45  # an 8 kHz capture cannot carry it
        heard = wide.audio(skip_s=0.3)  # after the decoder's and jitter buffer's start
        assert len(heard) > 48000 * 0.5
        assert abs(dominant_frequency(heard, 48000) - frequency) < 30
        assert rms_dbfs(heard) > -25  # the tone is at -15 dBFS


async def test_opus_to_pcmu_reopens_at_8_khz_and_keeps_what_cannot_change(
    pair: Pair,
    speakers: dict[str, list[MemorySpeaker]],
    tmp_path: Path,
) -> None:
    """Opus first, then PCMU: alice's 1 kHz tone source is reopened at 8 kHz (the encoder is
    fed without resampling) and so is her speaker; bob's 6 kHz tone cannot be made at 8 kHz,
    so his source stays at 48 kHz (resampled, the tone filtered out: silence reaches alice),
    and his WAV recording keeps its 48 kHz. The call goes on, audio both ways."""
    bob_wav = tmp_path / "bob.wav"
    account = Account(bind=LOOPBACK)
    alice, bob = await _connect(
        pair,
        (account, account),
        (_media("tone:1000", "speaker", "alice"), _media("tone:6000", str(bob_wav), "bob")),
    )
    try:
        assert alice.remote is not None and alice.remote.codec_name == "opus/48000/2"
        await until(lambda: _received(alice) > 25 and _received(bob) > 25)
        assert await alice.change_codecs(["pcmu"])
        await bob.media_settled()
        assert alice.stream is not None and bob.stream is not None
        assert alice.stream.session.codec.encoding.upper() == "PCMU"
        assert _source_rate(alice) == 8000 and not _resampled(alice, "source")
        sink: Any = alice.stream.sink
        assert sink.sink is speakers["alice"][1]
        # bob: the tone cannot be reopened at 8 kHz, the WAV recording keeps its rate
        assert bob._ends is not None
        assert bob._ends[0].sample_rate == 48000 and bob._ends[0].reopened == 0
        assert bob._ends[1].sample_rate == 48000 and bob._ends[1].reopened == 0
        assert _resampled(bob, "source") and _resampled(bob, "sink")
        await until(lambda: _received(alice) > 50 and _received(bob) > 50)
        assert not alice._closed and not bob._closed
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)
    assert alice.succeeded and bob.succeeded
    wide, narrow = speakers["alice"]
    assert wide.sample_rate == 48000 and narrow.sample_rate == 8000
    assert abs(dominant_frequency(wide.audio(skip_s=0.2), 48000) - 6000) < 30
    assert rms_dbfs(narrow.audio(skip_s=0.2)) < -45  # 6 kHz does not fit in PCMU
    recorded, rate = load_wav(bob_wav)
    assert rate == 48000
    tail = recorded[-int(rate * 0.5) : -int(rate * 0.1)]
    assert abs(dominant_frequency(tail, rate) - 1000) < 15


def test_a_reopened_wav_source_goes_on_where_the_old_one_was(tmp_path: Path) -> None:
    """A file source reopened at another rate skips what the old one played (to within a
    frame): the frames that follow are the file's next 20 ms, at the new rate."""
    rate = 48000
    t = np.arange(rate * 2) / rate
    sweep = (8000 * np.sin(2 * np.pi * (300 + 400 * t) * t)).astype(np.int16)  # rising pitch
    path = tmp_path / "sweep.wav"
    save_wav(path, sweep, rate)
    old = WavFileSource(path, 8000, 160)
    for _ in range(50):  # one second
        old.next_frame()
    new = WavFileSource(path, 48000, 960, pacer=old.pacer)
    call_module._catch_up(new, old)
    assert new.frames_read == 50 and new.pacer is old.pacer
    frame = new.next_frame()
    assert np.array_equal(frame, sweep[48000 : 48000 + 960])


class SoundCard:
    """Stands in for sounddevice.InputStream / OutputStream: a thread (like PortAudio's) calls
    the stream's callback every block time, with the next block of a tone (``frequency``: an
    input) or with a buffer to fill, kept in :attr:`played` (an output)."""

    opened: list[SoundCard] = []

    def __init__(self, frequency: float | None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.rate = int(kwargs["samplerate"])
        self.block = int(kwargs["blocksize"])
        self.tone = None if frequency is None else ToneSource(frequency, self.rate, self.block)
        self.played: list[Any] = []
        self.closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        SoundCard.opened.append(self)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        interval = self.block / self.rate
        deadline = time.monotonic()
        callback = self.kwargs["callback"]
        while not self._stop.is_set():
            if self.tone is not None:
                callback(self.tone.next_frame().reshape(-1, 1), self.block, None, None)
            else:
                out = np.zeros((self.block, 1), dtype=np.int16)
                callback(out, self.block, None, None)
                self.played.append(out[:, 0])
            deadline += interval
            self._stop.wait(max(0.0, deadline - time.monotonic()))

    def audio(self, skip_s: float = 0.0) -> Any:
        x = np.concatenate(self.played) if self.played else np.zeros(0, np.int16)
        return x[int(skip_s * self.rate) :]

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self.closed = True


async def test_pcmu_to_opus_reopens_the_microphone_and_speaker_at_the_codec_rate(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sound-card path (media.audio.Microphone and Speaker on stand-in 48 kHz cards):
    alice's microphone hears a 6 kHz tone. With PCMU both ends work at 8 kHz (the cards at
    48 kHz, converted inside): nothing of the tone reaches bob's card. After the switch to
    Opus new capture and playback streams work at 48 kHz, the first ones are closed, and
    bob's card plays the 6 kHz tone."""
    from media.audio import Microphone, Speaker

    SoundCard.opened = []
    mics: list[SoundCard] = []
    speakers: list[SoundCard] = []
    real_source, real_sink = call_module.open_source, call_module.open_sink

    def card(frequency: float | None, into: list[SoundCard]) -> Any:
        def factory(**kwargs: Any) -> SoundCard:
            opened = SoundCard(frequency, **kwargs)
            into.append(opened)
            return opened

        return factory

    def open_source(
        spec: Any, rate: int, samples: int | None = None, *, device: Any = None, pacer: Any = None
    ) -> Any:
        if str(spec) != "mic":
            return real_source(spec, rate, samples, device=device, pacer=pacer)
        return Microphone(rate, samples, device_rate=48000, stream_factory=card(6000, mics))

    def open_sink(spec: Any, rate: int, samples: int | None = None, *, device: Any = None) -> Any:
        if str(spec) != "speaker":
            return real_sink(spec, rate, samples, device=device)
        return Speaker(rate, samples, device_rate=48000, stream_factory=card(None, speakers))

    monkeypatch.setattr(call_module, "open_source", open_source)
    monkeypatch.setattr(call_module, "open_sink", open_sink)
    pcmu_only, both = Account(bind=LOOPBACK, codecs=("pcmu",)), Account(bind=LOOPBACK)
    alice, bob = await _connect(
        pair,
        (pcmu_only, both),
        (_media("mic", "none", "alice"), _media("tone:440", "speaker", "bob")),
    )
    try:
        await until(lambda: _received(bob) > 25)
        assert await alice.change_codecs(["opus", "pcmu"])
        await bob.media_settled()
        assert alice._ends is not None and bob._ends is not None
        mic, speaker = alice._ends[0].inner, bob._ends[1].inner
        assert isinstance(mic, Microphone) and mic.sample_rate == 48000
        assert isinstance(speaker, Speaker) and speaker.sample_rate == 48000
        assert not _resampled(alice, "source") and not _resampled(bob, "sink")
        assert len(mics) == 2 and mics[0].closed and not mics[1].closed
        assert len(speakers) == 2 and not speakers[1].closed
        await until(lambda: speakers[0].closed)  # after playing out its queue
        await until(lambda: _received(bob) > 60)
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)
    assert alice.succeeded and bob.succeeded
    assert all(opened.closed for opened in SoundCard.opened)
    narrow, wide = speakers[0].audio(skip_s=0.2), speakers[1].audio(skip_s=0.3)
    assert len(narrow) > 48000 * 0.3 and len(wide) > 48000 * 0.5
    assert rms_dbfs(narrow) < -45  # an 8 kHz capture cannot carry it
    assert abs(dominant_frequency(wide, 48000) - 6000) < 30
    assert rms_dbfs(wide) > -30  # the tone is at -15 dBFS (gaps while priming: a few dB)


def test_a_reopened_microphone_drops_what_it_captured_while_the_old_one_was_in_use() -> None:
    """The new capture stream runs while the old session still sends from the old one: the
    frames it queued meanwhile cover the same time, so they are dropped (else they would go
    out late, after the old stream's); the next frame is the next block of the card."""
    from media.audio import Microphone

    old = Microphone(8000, 160, device_rate=48000, stream_factory=FakeSoundStream)
    new = Microphone(48000, 960, device_rate=48000, stream_factory=FakeSoundStream)
    new.start()
    card = FakeSoundStream.instances[-1]
    assert new.ring is not None and card.started
    for _ in range(4):
        card.callback(np.zeros((960, 1), dtype=np.int16), 960, None, None)
    assert new.read_nowait() is not None and len(new.ring) == 3
    call_module._catch_up(new, old)
    assert len(new.ring) == 0 and new.read_nowait() is None
    card.callback(np.full((960, 1), 1000, dtype=np.int16), 960, None, None)
    frame = new.read_nowait()
    assert frame is not None and len(frame) == 960
    new.close()
