"""RFC 3550 reception statistics (Appendix A), RTT from report blocks, E-model MOS."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.rtcp import ReportBlock, ntp_from_unix, ntp_middle32
from media.stats import (
    MAX_DROPOUT,
    ReceptionStats,
    RemoteReport,
    SenderStats,
    Stats,
    estimate_mos,
    mos_from_r,
    r_factor,
)

RATE = 8000
FRAME = 160


def feed(stats: ReceptionStats, seqs, t0: float = 0.0, transit=None) -> list[bool]:
    out = []
    for i, seq in enumerate(seqs):
        extra = transit[i] if transit else 0.0
        out.append(stats.update(seq & 0xFFFF, (i * FRAME) & 0xFFFFFFFF, t0 + i * 0.02 + extra, 160))
    return out


def test_probation_first_packet_not_valid_second_is() -> None:
    s = ReceptionStats(0x1234, 100, RATE)
    assert not s.valid
    assert s.update(100, 0, 0.0) is False
    assert s.expected == 0
    assert s.update(101, FRAME, 0.02) is True
    assert s.valid
    assert (s.expected, s.received, s.lost) == (1, 1, 0)


def test_probation_restarts_on_out_of_sequence_packet() -> None:
    s = ReceptionStats(1, 100, RATE)
    assert s.update(100, 0, 0.0) is False
    assert s.update(500, 0, 0.02) is False  # not 101: probation starts again
    assert s.update(501, 0, 0.04) is True
    assert s.base_seq == 501


def test_steady_stream_no_loss() -> None:
    s = ReceptionStats(1, 1000, RATE)
    feed(s, range(1000, 1100))
    assert s.received == 99 and s.expected == 99 and s.lost == 0
    assert s.extended_max == 1099
    assert s.jitter == 0


def test_sequence_wrap_extends_highest_seq() -> None:
    s = ReceptionStats(1, 65530, RATE)
    feed(s, range(65530, 65530 + 20))
    assert s.cycles == 1 << 16
    assert s.extended_max == 65530 + 19
    assert s.lost == 0


def test_loss_counts_and_interval_fraction() -> None:
    s = ReceptionStats(1, 0, RATE)
    seqs = [q for q in range(0, 201) if q % 10 != 5]  # 1 in 10 lost
    feed(s, seqs)
    assert s.lost == 20
    s2 = ReceptionStats(1, 0, RATE)
    feed(s2, range(0, 2))  # probation done, base 1
    s2.interval_fraction_lost()
    # next interval: 100 expected, 10 lost -> 10% = 25/256
    for q in range(2, 102):
        if q % 10 != 3:
            s2.update(q, q * FRAME, q * 0.02)
    assert s2.interval_fraction_lost() == (10 << 8) // 100
    # an interval without loss reports 0, an empty interval too
    for q in range(102, 150):
        s2.update(q, q * FRAME, q * 0.02)
    assert s2.interval_fraction_lost() == 0
    assert s2.interval_fraction_lost() == 0


def test_duplicates_make_cumulative_lost_negative() -> None:
    s = ReceptionStats(1, 0, RATE)
    feed(s, [0, 1, 2, 3, 3, 3, 4])
    assert s.lost == -2
    block = s.report_block(1.0)
    assert block.cumulative_lost == -2
    assert block.serialize()  # a signed 24-bit value encodes
    assert ReportBlock.parse(block.serialize(), 0).cumulative_lost == -2


def test_reordered_packets_are_not_lost() -> None:
    s = ReceptionStats(1, 0, RATE)
    feed(s, [0, 1, 2, 4, 3, 5, 7, 6, 8])
    assert s.lost == 0 and s.extended_max == 8


def test_single_stray_jump_ignored_two_sequential_restart() -> None:
    s = ReceptionStats(1, 0, RATE)
    feed(s, range(0, 10))
    assert s.update(30000, 0, 1.0) is False  # a stray
    assert s.update(10, 0, 1.02) is True
    assert s.extended_max == 10
    assert s.update(40000, 0, 1.04) is False
    assert s.update(40001, 0, 1.06) is True  # the source restarted (§A.1)
    assert s.restarts == 1
    assert s.base_seq == 40001 and s.lost == 0


def test_forward_jump_below_max_dropout_counts_as_loss() -> None:
    s = ReceptionStats(1, 0, RATE)
    feed(s, range(0, 5))
    assert s.update(4 + MAX_DROPOUT - 1, 0, 1.0)
    assert s.lost == MAX_DROPOUT - 2


def test_interarrival_jitter_a8() -> None:
    s = ReceptionStats(1, 0, RATE)
    # every other packet 10 ms late: |D| = 10 ms each step, J converges to 10 ms
    transit = [0.010 if i % 2 else 0.0 for i in range(400)]
    feed(s, range(400), transit=transit)
    assert s.jitter_ms == pytest.approx(10.0, rel=0.02)
    assert s.jitter == pytest.approx(80, abs=2)  # timestamp units at 8 kHz


def test_jitter_survives_timestamp_wrap() -> None:
    s = ReceptionStats(1, 0, RATE)
    base = 0xFFFFFFFF - 5 * FRAME
    for i in range(20):
        s.update(i, (base + i * FRAME) & 0xFFFFFFFF, i * 0.02)
    assert s.jitter == 0


def test_report_block_lsr_dlsr_and_rtt_round_trip() -> None:
    # A sends an SR at t=10.0 (A's clock); B receives it at 10.05, reports at 12.05
    ntp_sr = ntp_from_unix(10.0)
    s = ReceptionStats(0xAAAA, 0, RATE)
    feed(s, range(0, 10), t0=9.8)
    s.record_sender_report(ntp_sr, arrival=10.05)
    block = s.report_block(12.05)
    assert block.lsr == ntp_middle32(ntp_sr)
    assert block.dlsr == pytest.approx(2.0 * 65536, abs=1)
    # the report arrives back at A at 12.10: RTT = 0.1 s
    remote = RemoteReport()
    rtt = remote.update(block, ntp_from_unix(12.10), now=12.10)
    assert rtt == pytest.approx(0.1, abs=1e-3)
    assert remote.srtt == rtt


def test_report_block_without_sr_has_no_rtt() -> None:
    s = ReceptionStats(1, 0, RATE)
    feed(s, range(10))
    block = s.report_block(1.0)
    assert block.lsr == 0 and block.dlsr == 0
    assert RemoteReport().update(block, ntp_from_unix(1.0), 1.0) is None


def test_remote_report_fraction_percent() -> None:
    r = RemoteReport()
    r.update(ReportBlock(1, fraction_lost=64), ntp_from_unix(0.0), 0.0)
    assert r.fraction_lost_percent == 25.0


def test_sender_stats() -> None:
    s = SenderStats()
    for i in range(50):
        s.record(160, i * FRAME, i * 0.02)
    assert (s.packets, s.octets, s.last_timestamp) == (50, 8000, 49 * FRAME)


def test_mos_perfect_and_degraded() -> None:
    perfect = estimate_mos(0.0, 40.0, 20.0, "pcmu")
    assert 4.2 < perfect <= 4.5
    lossy = estimate_mos(5.0, 40.0, 20.0, "pcmu")
    very_lossy = estimate_mos(20.0, 40.0, 20.0, "pcmu")
    slow = estimate_mos(0.0, 40.0, 600.0, "pcmu")
    assert perfect > lossy > very_lossy
    assert perfect > slow
    assert 3.0 < lossy < 4.2
    assert very_lossy < 3.0


def test_r_factor_and_mos_mapping() -> None:
    assert r_factor(0.0, 0.0, "pcmu") == pytest.approx(93.2)
    # above 177.3 ms the delay impairment steepens
    step_low = r_factor(0, 100, "pcmu") - r_factor(0, 110, "pcmu")
    step_high = r_factor(0, 300, "pcmu") - r_factor(0, 310, "pcmu")
    assert step_high > step_low
    assert mos_from_r(-5) == 1.0 and mos_from_r(120) == 4.5
    assert mos_from_r(93.2) == pytest.approx(4.41, abs=0.01)
    assert all(mos_from_r(r / 10) >= 1.0 for r in range(0, 100))  # the polynomial's dip


@given(st.floats(0, 100), st.floats(0, 2000), st.sampled_from(["pcmu", "pcma", "opus", "x"]))
def test_mos_in_range(loss: float, delay: float, codec: str) -> None:
    assert 1.0 <= estimate_mos(loss, delay, delay, codec) <= 4.5


def test_stats_readable() -> None:
    s = Stats(codec="PCMU/8000", packets_sent=10, rtt_ms=12.345, mos=4.3912, jitter_ms=1.26)
    d = s.as_dict()
    assert d["rtt_ms"] == 12.3 and d["mos"] == 4.39 and d["jitter_ms"] == 1.3
    assert "PCMU/8000" in str(s) and "RTT 12 ms" in str(s)
    assert "RTT -" in str(Stats())


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=300))
def test_arbitrary_sequences_never_raise(seqs: list[int]) -> None:
    s = ReceptionStats(1, seqs[0], RATE)
    for i, q in enumerate(seqs):
        s.update(q, random.Random(i).getrandbits(32), i * 0.02, 10)
    block = s.report_block(10.0)
    block.serialize()
    assert 0 <= block.fraction_lost <= 255


def test_timestamp_jump_does_not_swamp_jitter() -> None:
    s = ReceptionStats(1, 0, RATE)
    transit = [0.010 if i % 2 else 0.0 for i in range(200)]
    feed(s, range(200), transit=transit)
    before = s.jitter_ms
    # the sender jumps its timestamps by an hour and goes on
    for i in range(200, 220):
        s.update(i, (i * FRAME + 3600 * RATE) & 0xFFFFFFFF, i * 0.02 + (0.01 if i % 2 else 0))
    assert s.jitter_ms == pytest.approx(before, rel=0.05)


def test_rtp_json_matches_the_cli_contract() -> None:
    s = Stats("opus/48000/2", packets_sent=250, packets_received=249, packets_lost=1)
    s.jitter_ms, s.rtt_ms = 2.14, 18.04
    out = s.rtp_json()
    assert list(out)[:6] == ["codec", "sent", "received", "lost", "jitter_ms", "rtt_ms"]
    assert out["codec"] == "opus/48000/2" and out["sent"] == 250 and out["lost"] == 1
    assert out["jitter_ms"] == 2.1 and out["rtt_ms"] == 18.0
    assert Stats().rtp_json()["rtt_ms"] is None
