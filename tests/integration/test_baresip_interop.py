"""Interop with baresip (Debian ``baresip`` 1.0) on 127.0.0.1, both directions.

Our ``softphone call`` dials a :class:`tests.peers.baresip.Baresip` that auto-answers and
sends its 440 Hz sine, and a baresip dials our ``softphone answer --auto``; we send a
1000 Hz tone. Both ends record (ours with ``--record``, baresip's ``sndfile`` dumps) and
each recording must hold the other end's tone (dominant frequency). Cases: PCMU and Opus
(if baresip's opus module is installed), and our side with ICE (the default) and without
(``--no-ice``).

On loopback baresip never runs its ``ice`` module: it gathers candidates on every interface
of the machine, which would send STUN off the loopback (the Baresip class refuses it), so an
ICE offer from us meets a peer without ICE and media goes to its ``c=``/``m=`` address
(RFC 8445 §5.4 fallback). ICE with baresip is covered by ``tests/lab/test_baresip_lab.py``.

What baresip negotiated (rtcp-mux, ICE, codec) is read from its SDP in our ``--trace``
output and printed (``pytest -rP`` shows it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_call import answering, run_command, softphone
from tests.helpers_media import baresip_heard, dominant_tone
from tests.helpers_sip import traced_sdp
from tests.peers.baresip import Baresip

BARESIP_TONE = 440.0  # the Baresip peer's ``ausine,440`` source
OUR_TONE = 1000.0
MODULES = Path("/usr/lib/baresip/modules")
# our --codecs name -> (baresip audio_codecs, the codec our JSON report names)
CODECS = {
    "pcmu": ("PCMU/8000/1", "PCMU/8000"),
    "opus": ("opus/48000/2", "opus/48000/2"),
}
ICE_MODES = {"ice": [], "no-ice": ["--no-ice"]}


def _codec_available(codec: str) -> bool:
    module = {"pcmu": "g711.so", "opus": "opus.so"}[codec]
    return (MODULES / module).exists()


CODEC_PARAMS = [
    pytest.param(
        c,
        marks=pytest.mark.skipif(
            not _codec_available(c), reason=f"baresip has no {c} module in {MODULES}"
        ),
    )
    for c in CODECS
]


def each_codec_and_ice_mode(test: Callable[..., None]) -> Callable[..., None]:
    """Runs ``test`` for each codec (``codec``), our side with and without ICE (``ice``)."""
    by_codec = pytest.mark.parametrize("codec", CODEC_PARAMS)(test)
    return pytest.mark.parametrize("ice", list(ICE_MODES))(by_codec)


# ---- what the SDP said ------------------------------------------------------------------


@dataclass
class Negotiated:
    """What one SDP (baresip's) carried."""

    ice: bool
    rtcp_mux: bool
    codecs: list[str]
    rtcp: str | None

    @classmethod
    def from_sdp(cls, sdp: str) -> Negotiated:
        rtpmap = re.findall(r"^a=rtpmap:\d+ (\S+)", sdp, re.M)
        rtcp = re.search(r"^a=rtcp:(.*)$", sdp, re.M)
        return cls(
            ice="a=ice-ufrag:" in sdp,
            rtcp_mux=re.search(r"^a=rtcp-mux\s*$", sdp, re.M) is not None,
            codecs=rtpmap,
            rtcp=rtcp.group(1).strip() if rtcp else None,
        )


def baresip_sdp(stderr: str) -> Negotiated:
    """baresip's SDP: the body of a received message that carries one."""
    return Negotiated.from_sdp(traced_sdp(stderr, "recv"))


def our_sdp(stderr: str) -> Negotiated:
    return Negotiated.from_sdp(traced_sdp(stderr, "send"))


def describe(case: str, report: dict[str, Any], theirs: Negotiated, ours: Negotiated) -> str:
    return (
        f"baresip interop {case}: codec {report['rtp']['codec']}; "
        f"baresip SDP: ICE {'yes' if theirs.ice else 'no'}, "
        f"rtcp-mux {'yes' if theirs.rtcp_mux else 'no'}, a=rtcp {theirs.rtcp}, "
        f"codecs {theirs.codecs}; ours: ICE {'yes' if ours.ice else 'no'}, "
        f"rtcp-mux {'yes' if ours.rtcp_mux else 'no'}; "
        f"selected ICE pair {report['ice'] and report['ice']['selected']}; "
        f"sent {report['rtp']['sent']} received {report['rtp']['received']} "
        f"lost {report['rtp']['lost']} rtt_ms {report['rtp']['rtt_ms']}"
    )


def check_report(report: dict[str, Any], codec: str) -> None:
    """Our report of a call that went well and that we hung up."""
    assert report["call"]["sip_status"] == 200
    assert report["call"]["end_reason"] == "local-bye"
    assert report["rtp"]["codec"] == CODECS[codec][1]
    assert report["rtp"]["sent"] > 50 and report["rtp"]["received"] > 50
    # baresip runs without ICE here: we must have fallen back to its c=/m= address
    assert report["ice"] is None


# ---- the cases ----------------------------------------------------------------------------


@each_codec_and_ice_mode
def test_softphone_calls_baresip(
    baresip_factory: Callable[..., Baresip], tmp_path: Path, codec: str, ice: str
) -> None:
    bob = baresip_factory(user="bob", audio_codecs=CODECS[codec][0])
    ours = tmp_path / "ours.wav"
    result = run_command(
        softphone(
            "--trace", "--json", "--bind", "127.0.0.1:0", "--codecs", codec, *ICE_MODES[ice],
            "call", bob.contact_uri,
            "--play", f"tone:{OUR_TONE:g}", "--record", str(ours), "--duration", "3",
        )
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:] + bob.log()[-3000:]
    report = json.loads(result.stdout)
    check_report(report, codec)
    theirs, mine = baresip_sdp(result.stderr), our_sdp(result.stderr)
    assert not theirs.ice
    assert mine.ice == (ice == "ice")
    assert CODECS[codec][1].split("/")[0].lower() in theirs.codecs[0].lower()
    assert bob.wait_for_log(r"Call established: sip:", timeout=5)
    assert abs(dominant_tone(ours) - BARESIP_TONE) < 5
    assert abs(baresip_heard(bob) - OUR_TONE) < 5
    print(describe(f"softphone->baresip {codec} {ice}", report, theirs, mine))


@each_codec_and_ice_mode
def test_baresip_calls_softphone(
    baresip_factory: Callable[..., Baresip], tmp_path: Path, codec: str, ice: str
) -> None:
    alice = baresip_factory(user="alice", audio_codecs=CODECS[codec][0])
    ours = tmp_path / "ours.wav"
    with answering(
        "--trace", "--codecs", codec, *ICE_MODES[ice],
        "answer", "--auto", "--count", "1", "--duration", "3",
        "--play", f"tone:{OUR_TONE:g}", "--record", str(ours),
    ) as answerer:  # fmt: skip
        assert alice.dial(answerer.uri)["ok"]
        status, report, stderr = answerer.finish()
    assert status == 0, stderr[-5000:] + alice.log()[-3000:]
    check_report(report, codec)
    theirs, mine = baresip_sdp(stderr), our_sdp(stderr)
    assert not theirs.ice and not mine.ice  # an answer has ICE only if the offer had
    assert not mine.rtcp_mux or theirs.rtcp_mux  # RFC 5761 §5.1.1: mux only if offered
    assert abs(dominant_tone(ours) - BARESIP_TONE) < 5
    assert abs(baresip_heard(alice) - OUR_TONE) < 5
    print(describe(f"baresip->softphone {codec} {ice}", report, theirs, mine))


def test_codec_choice_both_ways(baresip_factory: Callable[..., Baresip], tmp_path: Path) -> None:
    """RFC 3264 §6.1: the answer takes the first codec of the offer both ends support. We
    offer opus, PCMU, PCMA to a baresip with PCMA only; baresip offers opus, PCMU, PCMA to
    us with --codecs pcma. PCMA both times, and the tones arrive."""
    if not (MODULES / "g711.so").exists():
        pytest.skip(f"baresip has no g711 module in {MODULES}")
    bob = baresip_factory(user="bob", audio_codecs="PCMA/8000/1")
    ours = tmp_path / "out.wav"
    result = run_command(
        softphone(
            "--json", "--bind", "127.0.0.1:0", "call", bob.contact_uri,
            "--play", f"tone:{OUR_TONE:g}", "--record", str(ours), "--duration", "2",
        )
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    assert json.loads(result.stdout)["rtp"]["codec"] == "PCMA/8000"
    assert abs(dominant_tone(ours) - BARESIP_TONE) < 5
    assert abs(baresip_heard(bob) - OUR_TONE) < 5

    alice = baresip_factory(user="alice")  # offers opus/48000/2, PCMU, PCMA
    ours_in = tmp_path / "in.wav"
    with answering(
        "--codecs", "pcma", "answer", "--auto", "--count", "1", "--duration", "2",
        "--play", f"tone:{OUR_TONE:g}", "--record", str(ours_in),
    ) as answerer:  # fmt: skip
        assert alice.dial(answerer.uri)["ok"]
        status, report, stderr = answerer.finish()
    assert status == 0, stderr[-5000:]
    assert report["rtp"]["codec"] == "PCMA/8000"
    assert abs(dominant_tone(ours_in) - BARESIP_TONE) < 5
    assert abs(baresip_heard(alice) - OUR_TONE) < 5
