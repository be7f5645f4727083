"""Two media streams talking RTP/RTCP over real UDP sockets on 127.0.0.1 (media.aio)."""

import asyncio
import random
import socket
import time
from dataclasses import dataclass

import numpy as np
import pytest

from media.aio import MediaStream, UdpTransport, open_udp_transport
from media.analysis import cross_correlate, dominant_frequency, rms_dbfs
from media.audio import Microphone
from media.rtcp import is_rtcp
from media.session import (
    ByeReceived,
    CodecDescription,
    DtmfReceived,
    RemoteSsrcChanged,
    RtpSession,
)
from media.sources import NullSink, ToneSource, WavFileSink, WavFileSource, load_wav, save_wav
from media.stats import Stats
from tests.helpers_media import FakeSoundStream, ListTransport
from tests.helpers_net import wait_until

OPUS = CodecDescription("opus", 111, 48000, 2, {"useinbandfec": "1"})
PCMU = CodecDescription("PCMU", 0, 8000)


@dataclass
class CallResult:
    stats_a: Stats
    stats_b: Stats
    rec_a: np.ndarray  # what A played out
    rec_b: np.ndarray
    events_b: list
    ssrc_a: int
    streams: tuple[MediaStream, MediaStream]


def new_session(codec: CodecDescription, seed: int) -> RtpSession:
    return RtpSession(
        codec,
        rtcp_interval=1.0,  # several reports in a short test
        rng=random.Random(seed),
        ntp_offset=time.time() - time.monotonic(),
        now=time.monotonic(),
    )


async def run_call(tmp_path, codec, seconds, source_a, source_b):
    """A and B exchange audio for ``seconds``; A learns B's address from B's packets."""
    ta = await open_udp_transport(("127.0.0.1", 0))
    tb = await open_udp_transport(("127.0.0.1", 0), remote=ta.local_address)
    sa, sb = new_session(codec, 1), new_session(codec, 2)
    rate = sa.sample_rate
    sink_a = WavFileSink(tmp_path / f"a-{codec.name}.wav", rate)
    sink_b = WavFileSink(tmp_path / f"b-{codec.name}.wav", rate)
    a = MediaStream(sa, ta, source_a(rate), sink_a)
    b = MediaStream(sb, tb, source_b(rate), sink_b)
    try:
        a.start()
        b.start()
        await asyncio.sleep(seconds)
        stats_a = await a.stop("bye from A")
        await asyncio.sleep(0.1)  # B hears the BYE
        stats_b = await b.stop()
    finally:
        ta.close()
        tb.close()
    assert ta.remote == tb.local_address  # symmetric RTP: learnt from B's packets
    events_b = []
    while not b.events.empty():
        events_b.append(b.events.get_nowait())
    rec_a, _ = load_wav(sink_a.path)
    rec_b, _ = load_wav(sink_b.path)
    return CallResult(stats_a, stats_b, rec_a, rec_b, events_b, sa.ssrc, (a, b))


@pytest.mark.parametrize("codec", [OPUS, PCMU], ids=["opus", "pcmu"])
async def test_tones_both_ways(tmp_path, codec):
    call = await run_call(
        tmp_path,
        codec,
        3.0,
        lambda r: ToneSource(440, r),
        lambda r: ToneSource(880, r),
    )
    stats_a, stats_b, rec_a, rec_b = call.stats_a, call.stats_b, call.rec_a, call.rec_b
    events_b, ssrc_a = call.events_b, call.ssrc_a
    rate = codec.clock_rate
    # each side recorded the other's tone
    assert dominant_frequency(rec_b, rate) == pytest.approx(440, abs=3)
    assert dominant_frequency(rec_a, rate) == pytest.approx(880, abs=3)
    for rec in (rec_a, rec_b):
        audible = rec[len(rec) // 3 :]  # past the start-up of the jitter buffer
        assert rms_dbfs(audible) == pytest.approx(-15, abs=2)  # the tone's level
    for stats in (stats_a, stats_b):
        assert stats.codec == str(codec)
        assert stats.packets_sent > 100 and stats.packets_received > 100
        # RTCP: round-trip time from SR/RR exchange, loss as seen by both ends
        assert stats.rtt_ms is not None and stats.rtt_ms >= 0
        assert stats.packets_lost == 0 and stats.loss_percent == 0
        assert stats.remote_loss_percent == 0
        assert stats.parse_errors == 0
    for stream in call.streams:  # audio flowed both ways, as the meters saw it
        assert stream.sent_level.active_frames > 0.9 * stream.frames_sent
        assert stream.played_level.active_frames > 0.5 * stream.frames_played
    assert RemoteSsrcChanged(None, ssrc_a) in events_b
    assert events_b[-1] == ByeReceived(ssrc_a, "bye from A")


@pytest.mark.parametrize("codec", [PCMU, OPUS], ids=["pcmu", "opus"])
async def test_chirp_correlates_with_what_was_sent(tmp_path, codec):
    """A chirp (a WAV file at 16 kHz, resampled by the source) comes back in shape: high
    correlation with what was sent (about 0.99 for both codecs), at a sane delay."""
    t = np.arange(int(2.0 * 16000)) / 16000
    chirp = np.rint(8000 * np.sin(2 * np.pi * (200 * t + 400 * t * t))).astype(np.int16)
    path = tmp_path / "chirp.wav"
    save_wav(path, chirp, 16000)
    call = await run_call(
        tmp_path,
        codec,
        2.5,
        lambda r: WavFileSource(path, r),
        lambda r: ToneSource(1000, r),
    )
    rate = codec.clock_rate
    sent, _ = load_wav(path, rate)
    c = cross_correlate(sent, call.rec_b, max_lag=rate)
    assert c.coefficient > 0.9
    assert 0 <= c.lag_seconds(rate) < 1.0
    assert call.stats_a.packets_sent > 100


async def test_udp_transport_latches_once_then_drops_foreign_packets():
    got: list[bytes] = []
    t = await open_udp_transport(("127.0.0.1", 0), remote=("127.0.0.1", 9))  # "SDP" address
    t.on_receive = got.append
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    stranger.bind(("127.0.0.1", 0))
    try:
        peer.sendto(b"\x80hello", t.local_address)
        await wait_until(lambda: got)
        assert got == [b"\x80hello"]
        assert t.remote == peer.getsockname()  # latched onto the real source (a NAT)
        stranger.sendto(b"\x80spoof", t.local_address)
        peer.sendto(b"\x80again", t.local_address)
        await wait_until(lambda: len(got) == 2)
        assert got == [b"\x80hello", b"\x80again"]
        assert t.foreign == 1
        t.send(b"\x80reply")
        peer.settimeout(5)
        assert peer.recvfrom(100)[0] == b"\x80reply"
    finally:
        t.close()
        peer.close()
        stranger.close()


async def test_unconnected_transport_sends_nothing_and_survives_a_bad_handler():
    t = UdpTransport()
    t.send(b"x")  # no socket, no remote
    assert t.unsent == 1

    def broken(data: bytes) -> None:
        raise RuntimeError("boom")

    t.on_receive = broken
    t.datagram_received(b"\x80", ("127.0.0.1", 5004))  # logged, not raised
    assert t.received == 1 and t.remote == ("127.0.0.1", 5004)


async def test_rate_mismatch_is_refused():
    s = new_session(PCMU, 3)
    t = UdpTransport()
    with pytest.raises(ValueError, match="8000 Hz"):
        MediaStream(s, t, ToneSource(440, 48000), NullSink(8000))


async def test_dtmf_and_rtcp_on_its_own_port(tmp_path):
    """PCMU without rtcp-mux (RTCP on a second socket pair) and RFC 4733 digits A -> B."""
    te = CodecDescription("telephone-event", 101, 8000)
    ports = [await open_udp_transport(("127.0.0.1", 0)) for _ in range(4)]
    a_rtp, a_rtcp, b_rtp, b_rtcp = ports
    a_rtp.remote, b_rtp.remote = b_rtp.local_address, a_rtp.local_address
    a_rtcp.remote, b_rtcp.remote = b_rtcp.local_address, a_rtcp.local_address
    sessions = [
        RtpSession(
            PCMU,
            telephone_event=te,
            rtcp_mux=False,
            rtcp_interval=0.6,
            rng=random.Random(seed),
            ntp_offset=time.time() - time.monotonic(),
            now=time.monotonic(),
        )
        for seed in (5, 6)
    ]
    digits: list[str | None] = []

    def stream(side: int, tone: int, **kw) -> MediaStream:
        """Side 0 (A) or 1 (B): a tone out, a WAV file in, RTP and RTCP on their own ports."""
        rtp, rtcp = ports[2 * side : 2 * side + 2]
        sink = WavFileSink(tmp_path / f"{'ab'[side]}.wav", 8000)
        return MediaStream(
            sessions[side], rtp, ToneSource(tone, 8000), sink, rtcp_transport=rtcp, **kw
        )

    a = stream(0, 440)
    b = stream(
        1, 880, on_event=lambda e: digits.append(e.digit) if isinstance(e, DtmfReceived) else None
    )
    try:
        a.start()
        b.start()
        await asyncio.sleep(0.3)
        a.send_dtmf("1#9")
        await asyncio.sleep(2.2)
        stats_a = await a.stop()
        stats_b = await b.stop()
    finally:
        for t in ports:
            t.close()
    assert digits == ["1", "#", "9"]
    assert not sessions[0].dtmf_pending
    # RTCP went over the RTCP sockets only, and gave both sides a round-trip time
    assert a_rtcp.sent >= 2 and b_rtcp.received >= 2 and a_rtcp.received >= 2
    assert stats_a.rtt_ms is not None and stats_b.rtt_ms is not None
    assert stats_a.parse_errors == stats_b.parse_errors == 0
    rec_b, _ = load_wav(tmp_path / "b.wav")
    assert dominant_frequency(rec_b, 8000) == pytest.approx(440, abs=3)


async def test_garbage_from_the_peer_does_not_stop_the_stream(tmp_path):
    ta = await open_udp_transport(("127.0.0.1", 0))
    tb = await open_udp_transport(("127.0.0.1", 0), remote=ta.local_address)
    ta.remote = tb.local_address
    sink = WavFileSink(tmp_path / "a.wav", 8000)
    a = MediaStream(new_session(PCMU, 7), ta, ToneSource(300, 8000), sink)
    b = MediaStream(new_session(PCMU, 8), tb, ToneSource(1200, 8000), NullSink(8000))
    try:
        a.start()
        b.start()
        await wait_until(lambda: a.stats().packets_received > 0)  # media flows
        for junk in (b"", b"\x80", b"\x80\x00" + bytes(10), b"\xc9" * 3, bytes(range(256))):
            tb.send(junk)  # from the peer's own address: it reaches the session
        # until the junk was counted and more than a second of media (50 packets) arrived
        await wait_until(
            lambda: a.stats().parse_errors >= 3 and a.stats().packets_received > 50, timeout=10
        )
        stats = await a.stop()
        await b.stop()
    finally:
        ta.close()
        tb.close()
    assert stats.parse_errors >= 3
    assert stats.packets_received > 50
    rec, _ = load_wav(sink.path)
    assert dominant_frequency(rec, 8000) == pytest.approx(1200, abs=3)


async def test_the_capture_clock_paces_sending():
    """One RTP packet per block the (fake) sound card delivers, whatever the wall clock."""
    streams: list[FakeSoundStream] = []

    def factory(**kwargs):
        streams.append(FakeSoundStream(**kwargs))
        return streams[-1]

    mic = Microphone(8000, stream_factory=factory, ring_frames=50)
    transport = ListTransport()
    stream = MediaStream(new_session(PCMU, 9), transport, mic, NullSink(8000))
    stream.start()
    block = np.zeros((960, 1), dtype=np.int16)
    for burst in (7, 0, 13):  # the device delivers in bursts, with a pause
        for _ in range(burst):
            streams[0].callback(block, 960, None, None)
        await asyncio.sleep(0.1)
    await stream.stop()
    rtp = [d for d in transport.sent if not is_rtcp(d)]
    assert len(rtp) == stream.frames_sent == 20
    assert mic.callbacks == 20
