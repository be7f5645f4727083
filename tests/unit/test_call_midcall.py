"""softphone.call during a call: ICE restart started by us, codec changes applied to the running
stream, the RFC 4733 clock policy (SIP INFO fallback), and "audio both ways" from the peer's
RTCP reports. Sans-I/O pieces directly; the rest with two in-process user agents on 127.0.0.1
(real sockets)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ice.aio import IceConnection
from media.analysis import dominant_frequency
from media.rtcp import ReceiverReport, ReportBlock, SenderReport, serialize_rtcp
from media.rtp import RtpPacket
from media.session import CodecDescription
from media.sources import load_wav
from softphone import call as call_module
from softphone.call import Call, MediaOptions, PeerReports, parse_info_dtmf
from softphone.config import Account
from softphone.sdp_glue import RemoteMedia, audio_codecs
from softphone.useragent import start_candidate_pool
from tests.helpers_call import LOOPBACK, Pair, Wire, media_options, packets_received, until

# --- sans-I/O ------------------------------------------------------------------------------


def _rtp(seq: int, ssrc: int = 0x1234) -> bytes:
    return RtpPacket(0, seq & 0xFFFF, seq * 160, ssrc, b"\xff" * 160).serialize()


def _rr(*blocks: ReportBlock, sender: int = 0x9999) -> bytes:
    return serialize_rtcp([ReceiverReport(sender, list(blocks))], compound=False)


def test_peer_reports_count_what_the_peer_received_of_our_stream() -> None:
    reports = PeerReports()
    for seq in range(65530, 65540):  # our stream wraps its sequence numbers
        reports.sent(_rtp(seq))
    assert reports.peer_received is None and reports.peer_got_audio(10)  # no report yet
    # extended highest sequence number 65539 (one cycle), 2 lost: 8 of our 10 got there
    reports.received(_rr(ReportBlock(0x1234, cumulative_lost=2, highest_seq=65539)))
    assert reports.peer_received == 8 and reports.heard_us
    assert reports.peer_got_audio(10)


def test_peer_reports_that_never_name_us_mean_our_audio_did_not_arrive() -> None:
    reports = PeerReports()
    reports.sent(_rtp(100))
    other = ReportBlock(0x5555, highest_seq=7)  # about somebody else
    sr = serialize_rtcp([SenderReport(0x9999, 0, 0, 5, 800, [other])], compound=False)
    reports.received(sr)
    assert reports.peer_got_audio(1)  # one report may have left before our RTP arrived
    reports.received(_rr())
    assert not reports.heard_us and not reports.peer_got_audio(50)
    # RTP, junk and a truncated RTCP packet are ignored
    reports.received(_rtp(5, ssrc=0x9999))
    reports.received(b"\x81\xc9\x00\x07\x00")
    assert reports.reports == 2


def test_peer_reports_follow_a_new_ssrc_after_a_codec_change() -> None:
    reports = PeerReports()
    reports.sent(_rtp(10, ssrc=1))
    reports.received(_rr(ReportBlock(1, highest_seq=10)))
    assert reports.peer_received == 1
    reports.sent(_rtp(500, ssrc=2))  # the new session's stream
    assert reports.peer_received is None and reports.heard_us  # heard once: stays true
    reports.received(_rr(ReportBlock(2, highest_seq=504)))
    assert reports.peer_received == 5


def test_info_dtmf_bodies() -> None:
    assert parse_info_dtmf(b"Signal=5\r\nDuration=160\r\n", "application/dtmf-relay") == "5"
    assert parse_info_dtmf(b"signal= #\r\n", "Application/DTMF-Relay; x=1") == "#"
    assert parse_info_dtmf(b"*", "application/dtmf") == "*"
    assert parse_info_dtmf(b"d", "application/dtmf") == "D"
    assert parse_info_dtmf(b"Duration=160\r\n", "application/dtmf-relay") is None
    assert parse_info_dtmf(b"Signal=55", "application/dtmf-relay") is None
    assert parse_info_dtmf(b"5", "text/plain") is None
    assert parse_info_dtmf(b"\xff\xfe", None) is None


def _remote(codec: CodecDescription, event: CodecDescription | None) -> RemoteMedia:
    return RemoteMedia(codec, event, [], 20, ("127.0.0.1", 1), ("127.0.0.1", 1), True, None)


def test_rfc4733_clock_policy() -> None:
    """RFC 4733 §2.1: events use the audio's clock. Opus with telephone-event/8000 (what
    baresip answers) sends no RFC 4733 events: the event is kept for receiving only."""
    opus = CodecDescription("opus", 111, 48000, 2)
    te8 = CodecDescription("telephone-event", 101, 8000)
    te48 = CodecDescription("telephone-event", 110, 48000)
    assert _remote(opus, te48).dtmf_in_band
    assert _remote(opus, te48).session_telephone_event() == te48
    mismatch = _remote(opus, te8)
    assert not mismatch.dtmf_in_band
    kept = mismatch.session_telephone_event()
    assert kept is not None and kept.payload_type == 101 and kept.clock_rate == 48000
    assert (
        not _remote(opus, None).dtmf_in_band
        and _remote(opus, None).session_telephone_event() is None
    )
    pcmu = CodecDescription("PCMU", 0, 8000)
    assert _remote(pcmu, te8).dtmf_in_band
    # our offers carry one telephone-event per audio clock, so two softphones agree
    rates = [c.clock_rate for c in audio_codecs(["opus", "pcmu"]) if c.name == "telephone-event"]
    assert rates == [48000, 8000]


def test_a_renegotiation_that_repeats_the_media_keeps_the_session() -> None:
    pcmu = CodecDescription("PCMU", 0, 8000)
    same = _remote(pcmu, None)
    assert call_module._media_key(same) == call_module._media_key(_remote(pcmu, None))
    assert call_module._media_key(same) != call_module._media_key(
        _remote(CodecDescription("opus", 111, 48000, 2), None)
    )
    assert call_module._media_key(same) != call_module._media_key(
        _remote(CodecDescription("PCMU", 0, 8000, receive_payload_type=96), None)
    )


class _Source:
    sample_rate, frame_samples = 8000, 160

    def __init__(self) -> None:
        self.started = self.closed = 0
        t = np.arange(160) / 8000
        self.frame = (8000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)

    def start(self) -> None:
        self.started += 1

    def close(self) -> None:
        self.closed += 1

    def next_frame(self) -> Any:
        return self.frame


def test_kept_source_resamples_for_a_new_session_and_is_started_and_closed_once() -> None:
    source = _Source()
    device = call_module._Device(source)
    first = call_module._KeptSource(device, 8000, 160)
    second = call_module._KeptSource(device, 48000, 960)
    for kept in (first, second):
        kept.start()
        kept.close()
    assert source.started == 1 and source.closed == 0
    assert first.next_frame() is source.frame
    frames = np.concatenate([second.next_frame() for _ in range(10)])
    assert len(frames) == 9600 and abs(dominant_frequency(frames[960:], 48000) - 500) < 10
    device.close()
    device.close()
    assert source.closed == 1


# --- two user agents -----------------------------------------------------------------------


async def _connect(
    pair: Pair,
    alice_account: Account,
    bob_account: Account | None = None,
    alice_media: MediaOptions | None = None,
    bob_media: MediaOptions | None = None,
) -> tuple[Call, Call]:
    """alice's call (a 440 Hz tone unless ``alice_media``) to bob's (880 Hz unless
    ``bob_media``; alice's account unless ``bob_account``), answered."""
    alice = Call(pair.alice, alice_account, alice_media or media_options("tone:440"))
    bob = Call(pair.bob, bob_account or alice_account, bob_media or media_options("tone:880"))
    return await pair.connected(alice, bob)


@pytest.mark.parametrize(
    ("who", "method"),
    [("caller", "INVITE"), ("callee", "INVITE"), ("caller", "UPDATE"), ("callee", "UPDATE")],
)
async def test_ice_restart_started_by_us_keeps_media_flowing(
    pair: Pair, who: str, method: str
) -> None:
    """RFC 8445 §9 / RFC 8839 §4.4.1.1.1: new ufrag/pwd in our re-offer (re-INVITE or UPDATE),
    the answer's new credentials restart the peer; media runs on the old pair until the new
    one is chosen."""
    account = Account(bind=LOOPBACK)
    alice, bob = await _connect(pair, account)
    try:
        starter, other = (alice, bob) if who == "caller" else (bob, alice)
        assert starter.ice is not None and other.ice is not None
        old = (starter.ice.local_ufrag, other.ice.local_ufrag)
        await until(lambda: packets_received(alice) > 5 and packets_received(bob) > 5)
        stream = starter.stream
        lines: list[str] = []
        starter.progress = lines.append
        assert await starter.restart_ice(method=method)
        assert f"restarting ICE ({method})" in lines
        assert starter.ice.local_ufrag != old[0] and other.ice.local_ufrag != old[1]
        assert starter.ice.agent.stats().restarts == 1 and other.ice.agent.stats().restarts == 1
        assert starter.remote is not None and starter.remote.ice is not None
        assert starter.remote.ice.ufrag == other.ice.local_ufrag
        assert other.remote is not None and other.remote.ice is not None
        assert other.remote.ice.ufrag == starter.ice.local_ufrag
        assert starter.ice.transport(1).selected is not None
        assert starter.stream is stream  # the same media session went on
        before = (packets_received(alice), packets_received(bob))
        await until(
            lambda: (
                packets_received(alice) > before[0] + 5 and packets_received(bob) > before[1] + 5
            )
        )
        # a second restart works as well (a new generation)
        assert await starter.restart_ice()
        assert starter.ice.agent.stats().restarts == 2
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)
    assert alice.succeeded and bob.succeeded


async def test_ice_restart_needs_ice(pair: Pair) -> None:
    account = Account(bind=LOOPBACK, ice=False)
    alice, bob = await _connect(pair, account)
    try:
        assert not await alice.restart_ice()
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)


def _tone_at_end(path: Path, seconds: float = 0.4) -> float:
    samples, rate = load_wav(path)
    tail = samples[-int(rate * (seconds + 0.1)) : -int(rate * 0.1)]
    return dominant_frequency(tail, rate)


@pytest.mark.parametrize(("who", "method"), [("caller", "INVITE"), ("callee", "UPDATE")])
async def test_codec_change_pcmu_to_opus_mid_call(
    pair: Pair, tmp_path: Path, who: str, method: str
) -> None:
    """A re-offer (re-INVITE or UPDATE) with Opus first switches the running stream from
    PCMU to Opus on both sides (new session, same paths, source and sink): the tones still
    arrive at the right frequency, recorded into the same WAV files."""
    alice_wav, bob_wav = tmp_path / "alice.wav", tmp_path / "bob.wav"
    # the one who re-offers had only PCMU at first; the other has Opus too
    pcmu_only, both = Account(bind=LOOPBACK, codecs=("pcmu",)), Account(bind=LOOPBACK)
    alice, bob = await _connect(
        pair,
        pcmu_only if who == "caller" else both,
        both if who == "caller" else pcmu_only,
        media_options("tone:440", str(alice_wav)),
        media_options("tone:880", str(bob_wav)),
    )
    try:
        assert alice.remote is not None and alice.remote.codec_name == "PCMU/8000"
        await until(lambda: packets_received(alice) > 10 and packets_received(bob) > 10)
        first = alice.stream, bob.stream
        starter, other = (alice, bob) if who == "caller" else (bob, alice)
        assert await starter.change_codecs(["opus", "pcmu"], method=method)
        await other.media_settled()
        for call, stream in zip((alice, bob), first, strict=True):
            assert call.remote is not None and call.remote.codec_name == "opus/48000/2"
            assert call.stream is not None and call.stream is not stream
            assert call.stream.session.codec.encoding == "opus"
        opus_streams = alice.stream, bob.stream
        await until(
            lambda: all(s is not None and s.stats().packets_received > 40 for s in opus_streams),
            8,
        )
        totals = alice.stats
        assert totals is not None and first[0] is not None
        assert totals.packets_sent > first[0].stats().packets_sent  # both sessions count
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)
    assert alice.succeeded and bob.succeeded
    assert abs(_tone_at_end(bob_wav) - 440) < 15
    assert abs(_tone_at_end(alice_wav) - 880) < 15
    # the WAV files were written at the rate they were opened at, through the whole call
    assert load_wav(bob_wav)[1] == 8000


async def test_codec_change_that_the_peer_refuses_keeps_the_call(
    pair: Pair,
) -> None:
    alice, bob = await _connect(
        pair,
        Account(bind=LOOPBACK, codecs=("pcmu",)),
        Account(bind=LOOPBACK, codecs=("pcmu",)),
    )
    try:
        stream = alice.stream
        assert not await alice.change_codecs(["pcma"])  # bob has only PCMU: 488
        assert alice.stream is stream and alice.remote is not None
        assert alice.remote.codec_name == "PCMU/8000"
        assert await alice.hold()  # the offer/answer state is still usable
        assert await alice.resume()
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)


async def test_dtmf_by_sip_info_when_telephone_event_has_another_clock(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opus with telephone-event/8000 only (as baresip answers): no RFC 4733 events with a
    wrong clock; the digits go by SIP INFO (application/dtmf-relay) and arrive."""
    real = call_module.local_media

    def baresip_like(codecs: Any, transport: Any, **kw: Any) -> Any:
        media = real(codecs, transport, **kw)
        media.codecs = [c for c in media.codecs if c.name != "telephone-event"]
        media.codecs.append(audio_codecs(["pcmu"])[-1])  # telephone-event/8000
        return media

    monkeypatch.setattr(call_module, "local_media", baresip_like)
    account = Account(bind=LOOPBACK, codecs=("opus",))
    alice, bob = await _connect(pair, account)
    wire = Wire(pair.alice)
    try:
        assert alice.remote is not None and alice.remote.telephone_event is not None
        assert alice.remote.telephone_event.clock_rate == 8000
        assert not alice.remote.dtmf_in_band
        assert alice.send_dtmf("4#")
        await until(lambda: len(bob.dtmf_received) >= 2)
        assert bob.dtmf_received == ["4", "#"]
        infos = wire.requests("INFO")
        assert [m.body for m in infos] == [
            b"Signal=4\r\nDuration=160\r\n",
            b"Signal=#\r\nDuration=160\r\n",
        ]
        assert infos[0].headers.get("Content-Type") == "application/dtmf-relay"
        assert alice.stream is not None and not alice.stream.session.dtmf_pending
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)


async def test_audio_both_ways_confirmed_by_the_peer_reports(
    pair: Pair,
) -> None:
    """After the first RTCP interval each side knows from the other's reception report that
    its RTP arrived, and how many of its packets."""
    account = Account(bind=LOOPBACK, ice=False)
    fast: dict[str, Any] = {"rtcp_interval": 1.0}
    alice, bob = await _connect(
        pair,
        account,
        alice_media=media_options("tone:440", **fast),
        bob_media=media_options("tone:880", **fast),
    )
    try:
        await until(lambda: alice.peer_reports.heard_us and bob.peer_reports.heard_us, 8)
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)
    assert alice.succeeded and bob.succeeded
    received = alice.peer_reports.peer_received
    assert received is not None and 0 < received <= alice.report()["rtp"]["sent"]


async def test_audio_that_never_reaches_the_peer_is_not_both_ways(
    pair: Pair,
) -> None:
    """alice's RTP is dropped on the way out (RTCP still passes): bob's reports never name
    her stream, so her call did not succeed although she sent and received packets."""
    account = Account(bind=LOOPBACK, ice=False)
    fast: dict[str, Any] = {"rtcp_interval": 1.0}
    alice, bob = await _connect(
        pair,
        account,
        alice_media=media_options("tone:440", **fast),
        bob_media=media_options("tone:880", **fast),
    )
    assert alice._gate is not None
    path = alice._gate.path
    real_send = path.send
    path.send = lambda data: real_send(data) if 192 <= data[1] <= 223 else None
    try:
        await until(lambda: alice.peer_reports.reports_without_us >= 2, 8)
        stats = alice.stats
        assert stats is not None and stats.packets_sent > 0 and stats.packets_received > 0
        assert not alice.audio_both_ways
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)
    assert not alice.succeeded


async def test_lost_consent_is_recovered_by_an_ice_restart(
    pair: Pair,
) -> None:
    """bob's network drops everything for a moment: alice's selected pair loses consent
    (RFC 7675), she restarts ICE by re-offer instead of hanging up, and media resumes."""
    account = Account(bind=LOOPBACK)
    quick = media_options("tone:440", consent_restart=4.0)
    quick.ice_agent_options = {"consent_interval": 0.1, "consent_timeout": 0.8}
    alice, bob = await _connect(pair, account, alice_media=quick)
    running = asyncio.ensure_future(alice.run())
    try:
        assert alice.ice is not None and bob.ice is not None
        await until(lambda: packets_received(alice) > 5)
        gatherer = bob.ice.gatherer
        real_send = gatherer.send
        gatherer.send = lambda *args: None  # type: ignore[method-assign]
        agent = alice.ice.agent
        await until(lambda: not agent.has_consent(1))
        gatherer.send = real_send  # type: ignore[method-assign]
        await until(lambda: agent.stats().restarts == 1 and agent.has_consent(1), 8)
        before = packets_received(alice)
        await until(lambda: packets_received(alice) > before + 5)
        assert not running.done() and alice.end_reason is None
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)
    assert await asyncio.wait_for(running, 5) == "local-bye"


@pytest.mark.parametrize("alice_pacing", [5, None])
async def test_ice_pacing_negotiated(pair: Pair, alice_pacing: int | None) -> None:
    """Two softphones propose a=ice-pacing:5 and check every 5 ms; when one proposes nothing
    both use 50 ms (RFC 8445 §14.2)."""
    alice, bob = await _connect(
        pair,
        Account(bind=LOOPBACK, ice_pacing_ms=alice_pacing),
        Account(bind=LOOPBACK),
    )
    try:
        assert alice.ice is not None and bob.ice is not None
        expected = 0.005 if alice_pacing == 5 else 0.05
        assert alice.ice.agent.ta == expected and bob.ice.agent.ta == expected
        assert alice.remote is not None and alice.remote.ice is not None
        assert alice.remote.ice.pacing_ms == 5
        await until(lambda: packets_received(alice) > 5 and packets_received(bob) > 5)
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)
    assert alice.succeeded and bob.succeeded


async def test_media_starts_on_a_valid_pair_before_ice_completes(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 8445 §12.1: media flows as soon as a pair is valid, not after the nomination: with
    ICE completion held back by 0.4 s, both sides already send and receive RTP."""
    real = IceConnection.connected
    completed: list[float] = []

    async def slow(self: IceConnection, timeout: float | None = None) -> None:
        await asyncio.sleep(0.4)
        await real(self, timeout)
        completed.append(time.monotonic())

    monkeypatch.setattr(IceConnection, "connected", slow)
    account = Account(bind=LOOPBACK)
    alice, bob = await _connect(pair, account)
    try:
        for call in (alice, bob):
            assert call.stream is not None and call.stream.started_at is not None
            assert call.stream.started_at < min(completed) - 0.2
            assert call.stats is not None and call.stats.packets_sent > 3
            assert call.stats.packets_received > 3
    finally:
        await alice.hangup()
        await asyncio.wait_for(bob.run(), 5)
    assert alice.succeeded and bob.succeeded


# --- candidate pool ------------------------------------------------------------------------


async def test_candidate_pool_of_an_account() -> None:
    assert await start_candidate_pool(Account(bind=LOOPBACK, ice=False)) is None
    assert await start_candidate_pool(Account(bind=LOOPBACK, candidate_pool=0)) is None
    pool = await start_candidate_pool(Account(bind=LOOPBACK))
    assert pool is not None
    try:
        await pool.wait_ready(1, timeout=5)
        assert pool.ready == 1 and pool.config.components == 2
    finally:
        await pool.close()


async def test_callee_answers_with_candidates_from_the_pool(
    pair: Pair,
) -> None:
    """The callee takes a pre-gathered set (no gathering on the call path); the call works
    as with gathered candidates, and the pool refills."""
    account = Account(bind=LOOPBACK)
    pool = await start_candidate_pool(account)
    assert pool is not None
    lines: list[str] = []
    try:
        await pool.wait_ready(1, timeout=5)
        alice, bob = await pair.connected(
            Call(pair.alice, account, media_options("tone:440")),
            Call(pair.bob, account, media_options("tone:880"), pool=pool, progress=lines.append),
        )
        try:
            assert "candidates from the pool" in lines and "gathering candidates" not in lines
            assert pool.stats().taken == 1
            assert bob.ice is not None and bob.ice.agent.components == 1  # rtcp-mux
            await until(lambda: packets_received(alice) > 5 and packets_received(bob) > 5)
        finally:
            await alice.hangup()
            await asyncio.wait_for(bob.run(), 5)
        assert alice.succeeded and bob.succeeded
        await pool.wait_ready(1, timeout=5)  # refilled for the next call
    finally:
        await pool.close()


def test_warm_up_runs_the_call_path_once() -> None:
    """warm_up() (at start-up, off the call path) builds an offer and answer with ICE and
    a media session per codec, and leaves nothing behind."""
    call_module.warm_up()
    call_module.warm_up(("pcma",))
    with pytest.raises(ValueError):
        call_module.warm_up(("g729",))  # an unknown codec is the account's error
