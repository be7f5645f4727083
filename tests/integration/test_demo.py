"""``softphone demo``: two user agents on 127.0.0.1 call each other with ICE; the clip Alice
plays must arrive at Bob (cross-correlation) and Bob's tone at Alice."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from media.sources import load_wav
from softphone import demo
from softphone.config import Account
from softphone.demo import (
    CORRELATION_THRESHOLD,
    LadderEntry,
    check_audio,
    format_ladder,
    run_demo,
    synthetic_speech,
)
from softphone.report import Reporter

LADDER = [
    ("alice", "INVITE"),
    ("bob", "180 Ringing (INVITE)"),
    ("bob", "200 OK (INVITE)"),
    ("alice", "ACK"),
    ("alice", "BYE"),
    ("bob", "200 OK (BYE)"),
]


def in_order(ladder: list[dict[str, object]], wanted: list[tuple[str, str]]) -> bool:
    it = iter(ladder)
    return all(
        any(e["from"] == who and str(e["message"]).startswith(what) for e in it)
        for who, what in wanted
    )


def test_demo_json_reports_audio_arrived() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "softphone", "--json", "demo"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    audio = report["demo"]["audio"]
    assert audio["arrived"] is True
    assert audio["correlation"] > CORRELATION_THRESHOLD
    assert 0 <= audio["lag_ms"] < 1000
    assert report["demo"]["return_tone"]["arrived"] is True
    assert report["demo"]["ok"] is True
    assert in_order(report["demo"]["sip_ladder"], LADDER), report["demo"]["sip_ladder"]
    assert report["call"]["sip_status"] == 200
    assert report["call"]["end_reason"] == "local-bye"
    selected = report["ice"]["selected"]
    assert report["ice"]["role"] == "controlling"
    assert selected["local"]["type"] == "host" and selected["remote"]["type"] == "host"
    assert selected["local"]["address"] == "127.0.0.1"
    assert selected["local"]["port"] != selected["remote"]["port"]
    assert report["rtp"]["sent"] > 50 and report["rtp"]["received"] > 50
    assert report["demo"]["bob_rtp"]["received"] > 50
    # the people's version went to stderr: the ladder and the verdict
    assert "SIP ladder" in res.stderr
    assert "demo passed" in res.stderr


async def test_demo_synthetic_clip_pcmu_no_ice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without espeak-ng the clip is synthesised; with G.711 and plain RTP it still arrives."""
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    out, err = io.StringIO(), io.StringIO()
    reporter = Reporter(json_output=True, out=out, err=err)
    status = await run_demo(
        Account(codecs=("pcmu",), ice=False),
        argparse.Namespace(trace=False),
        reporter,
        workdir=tmp_path,
        ring_s=0.0,
    )
    data = reporter.data
    assert status == 0, err.getvalue()
    assert data["demo"]["clip"]["source"] == "synthetic"
    assert data["demo"]["audio"]["correlation"] > CORRELATION_THRESHOLD
    assert data["rtp"]["codec"].upper().startswith("PCMU")
    assert data["ice"] is None
    assert "ICE:      not used" in err.getvalue()
    # Bob's recording really holds the clip: check it independently of the demo's verdict
    received, rate = load_wav(tmp_path / "bob.wav")
    sent, _ = load_wav(tmp_path / "clip.wav", rate)
    assert check_audio(sent, received, rate).correlation > 0.8


def test_check_audio_finds_the_delay_and_rejects_other_signals() -> None:
    rate = 8000
    clip = synthetic_speech(rate, seconds=1.5)
    delay = 1234
    received = np.concatenate([np.zeros(delay), clip * 0.5, np.zeros(2000)]).astype(np.int16)
    good = check_audio(clip, received, rate)
    assert good.arrived and good.correlation > 0.99
    assert good.lag_ms == pytest.approx(delay / rate * 1000)
    noise = np.random.default_rng(1).normal(0, 3000, len(received)).astype(np.int16)
    bad = check_audio(clip, noise, rate)
    assert not bad.arrived
    assert not check_audio(clip, np.zeros(len(received), dtype=np.int16), rate).arrived
    tone = np.rint(8000 * np.sin(2 * np.pi * 440 * np.arange(len(received)) / rate))
    assert not check_audio(clip, tone.astype(np.int16), rate).arrived


def test_synthetic_speech_is_speech_like() -> None:
    rate = 16000
    x = synthetic_speech(rate, seconds=2.0)
    assert len(x) == 2 * rate and x.dtype == np.int16
    assert np.array_equal(x, synthetic_speech(rate, seconds=2.0))  # deterministic
    frames = x[: len(x) // 320 * 320].reshape(-1, 320).astype(float)
    loud = np.sqrt((frames**2).mean(axis=1)) > 300
    # syllables and pauses: neither all sound nor all silence
    assert 0.4 < loud.mean() < 0.95
    power = np.abs(np.fft.rfft(x.astype(float))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    speech_band = power[(freqs > 80) & (freqs < 4000)].sum()
    assert speech_band > 0.9 * power[freqs > 0].sum()  # energy where speech has it


def test_format_ladder_draws_arrows_both_ways() -> None:
    lines = format_ladder(
        [
            LadderEntry(0.0, True, "INVITE sip:bob@127.0.0.1"),
            LadderEntry(0.01, False, "180 Ringing"),
        ]
    )
    assert "alice" in lines[0] and "bob" in lines[0]
    assert lines[1].rstrip().endswith(">|") and "INVITE sip:bob@127.0.0.1" in lines[1]
    assert "|<" in lines[2] and "180 Ringing" in lines[2]
    assert len(lines[1]) == len(lines[2])
