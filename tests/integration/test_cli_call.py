"""``softphone call`` / ``softphone answer`` as users run them: two processes peer to peer on
127.0.0.1, with and without ICE, Opus and PCMU; audio checked by its dominant frequency."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from media.analysis import dominant_frequency, rms_dbfs
from media.sources import load_wav
from tests.helpers_call import Answerer, Process, answering, run_command, softphone
from tests.helpers_media import dominant_tone
from tests.peers.coturn import Coturn
from tests.peers.ports import free_port

CALLER_TONE, CALLEE_TONE = 440.0, 660.0


def run_call(
    tmp_path: Path,
    caller_opts: list[str],
    callee_opts: list[str],
    extra_call: list[str] | None = None,
    duration: float = 3.0,
) -> tuple[subprocess.CompletedProcess[str], tuple[int, dict[str, Any], str]]:
    callee_wav, caller_wav = tmp_path / "callee.wav", tmp_path / "caller.wav"
    with answering(
        *callee_opts, "answer", "--auto", "--count", "1",
        "--record", str(callee_wav), "--play", f"tone:{CALLEE_TONE:g}",
    ) as answerer:  # fmt: skip
        caller = run_command(
            softphone(
                "--json", "--bind", "127.0.0.1:0", *caller_opts, "call", answerer.uri,
                "--play", f"tone:{CALLER_TONE:g}", "--record", str(caller_wav),
                "--duration", f"{duration:g}", *(extra_call or []),
            )
        )  # fmt: skip
        callee = answerer.finish()
    assert caller.returncode == 0, caller.stderr
    assert callee[0] == 0, callee[2]
    assert abs(dominant_tone(callee_wav) - CALLER_TONE) < 5
    assert abs(dominant_tone(caller_wav) - CALLEE_TONE) < 5
    return caller, callee


def _check_rtp(report: dict[str, Any], codec: str) -> None:
    rtp = report["rtp"]
    assert rtp["codec"] == codec
    assert rtp["sent"] > 0 and rtp["received"] > 0
    assert rtp["lost"] >= 0 and rtp["jitter_ms"] >= 0
    assert set(rtp) == {"codec", "sent", "received", "lost", "jitter_ms", "rtt_ms"}


CODECS = {"opus": "opus/48000/2", "pcmu": "PCMU/8000"}


@pytest.mark.parametrize("codec", ["opus", "pcmu"])
def test_peer_to_peer_call_with_ice(tmp_path: Path, codec: str) -> None:
    caller, (_, callee_report, callee_err) = run_call(
        tmp_path, ["--codecs", codec], ["--codecs", "opus,pcmu,pcma"]
    )
    report = json.loads(caller.stdout)
    assert report["call"]["sip_status"] == 200
    assert report["call"]["end_reason"] == "local-bye"
    assert report["call"]["duration_s"] > 0 and report["call"]["setup_ms"] >= 0
    ice = report["ice"]
    assert ice["role"] == "controlling" and ice["connect_ms"] >= 0
    for side in ("local", "remote"):
        assert ice["selected"][side]["type"] == "host"
        assert ice["selected"][side]["protocol"] == "udp"
        assert ice["selected"][side]["address"] == "127.0.0.1"
    _check_rtp(report, CODECS[codec])
    assert "connected via host/host pair" in caller.stderr
    assert "hanging up (duration reached)" in caller.stderr
    # the callee's view of the same call
    assert callee_report["call"]["end_reason"] == "remote-bye"
    assert callee_report["ice"]["role"] == "controlled"
    assert callee_report["ice"]["selected"]["local"] == ice["selected"]["remote"]
    _check_rtp(callee_report, CODECS[codec])
    assert callee_report["answer"] == {"calls": 1, "succeeded": 1}
    assert "the peer hung up" in callee_err


@pytest.mark.parametrize("codec", ["opus", "pcmu"])
def test_peer_to_peer_call_without_ice(tmp_path: Path, codec: str) -> None:
    caller, (_, callee_report, _) = run_call(
        tmp_path, ["--no-ice", "--codecs", codec], ["--no-ice"]
    )
    report = json.loads(caller.stdout)
    assert report["ice"] is None and callee_report["ice"] is None
    _check_rtp(report, CODECS[codec])
    _check_rtp(callee_report, CODECS[codec])
    assert "plain RTP 127.0.0.1:" in caller.stderr


@pytest.mark.parametrize("side", ["caller", "callee"])
def test_ice_meets_a_peer_without_ice(tmp_path: Path, side: str) -> None:
    """RFC 8445 fallback: the ICE side reaches the other at its c=/m= address."""
    no_ice = ["--no-ice"]
    caller, (_, callee_report, _) = run_call(
        tmp_path,
        no_ice if side == "caller" else [],
        no_ice if side == "callee" else [],
        duration=2,
    )
    report = json.loads(caller.stdout)
    assert report["ice"] is None and callee_report["ice"] is None
    _check_rtp(report, "opus/48000/2")


def test_dtmf_is_sent_once_connected(tmp_path: Path) -> None:
    _, (_, _, callee_err) = run_call(tmp_path, [], [], extra_call=["--dtmf", "15#"], duration=2)
    received = [line for line in callee_err.splitlines() if "DTMF" in line and "received" in line]
    assert [line.split("DTMF ")[1][0] for line in received] == ["1", "5", "#"]


def test_call_to_nobody_fails(tmp_path: Path) -> None:
    port = free_port()
    result = run_command(
        softphone(
            "--json", "--bind", "127.0.0.1:0", "--transport", "tcp",
            "call", f"sip:bob@127.0.0.1:{port}", "--play", "tone:440", "--record", "none",
        )
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["call"]["sip_status"] not in (None, 200)
    assert report["rtp"] is None
    assert "call failed" in result.stderr


def test_turn_relay_reaches_a_peer_without_ice(
    tmp_path: Path, coturn: Coturn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a TURN server our default candidate is the relayed one (RFC 8839 §4.2): a peer
    without ICE sends there, and we answer through the allocation."""
    host, port = coturn.turn_address()
    monkeypatch.setenv("TEST_TURN_PASSWORD", coturn.users["alice"])
    caller, (_, callee_report, _) = run_call(
        tmp_path,
        ["--turn", f"{host}:{port}", "--turn-user", "alice",
         "--turn-password-env", "TEST_TURN_PASSWORD"],
        ["--no-ice"],
        duration=2,
    )  # fmt: skip
    assert "(relay) <->" in caller.stderr, caller.stderr
    assert "relay" in next(line for line in caller.stderr.splitlines() if "candidates (" in line)
    report = json.loads(caller.stdout)
    _check_rtp(report, "opus/48000/2")
    _check_rtp(callee_report, "opus/48000/2")
    assert coturn.users["alice"] not in caller.stderr + caller.stdout
    # hang-up released the allocation (RFC 8656 §8: Refresh with lifetime 0)
    assert coturn.wait_for_log(r"refreshed, realm=<example\.org>, username=<alice>, lifetime=0")


def test_answer_without_auto_rings_until_enter() -> None:
    with answering("answer", "--count", "1", "--record", "none", "--play", "tone:660") as answerer:
        caller = subprocess.Popen(
            softphone(
                "--json", "--bind", "127.0.0.1:0", "call", answerer.uri,
                "--play", "tone:440", "--record", "none", "--duration", "1",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert answerer.wait_for("press Enter to answer"), "".join(answerer.lines)
        assert answerer.proc.stdin is not None
        answerer.proc.stdin.write("\n")
        answerer.proc.stdin.flush()
        out, err = caller.communicate(timeout=60)
        status, report, callee_err = answerer.finish()
    assert caller.returncode == 0, err
    assert status == 0, callee_err
    assert "ringing (180)" in err
    assert json.loads(out)["call"]["sip_status"] == 200
    assert report["answer"] == {"calls": 1, "succeeded": 1}


def test_answer_keeps_answering_until_count() -> None:
    with answering(
        "--codecs", "pcmu",
        "answer", "--auto", "--count", "2", "--record", "none", "--play", "tone:660",
    ) as answerer:  # fmt: skip
        for _ in range(2):
            caller = run_command(
                softphone(
                    "--bind", "127.0.0.1:0", "call", answerer.uri,
                    "--play", "tone:440", "--record", "none", "--duration", "1",
                )
            )  # fmt: skip
            assert caller.returncode == 0, caller.stderr
            assert caller.stdout == ""  # no --json: no report
        status, report, err = answerer.finish()
    assert status == 0, err
    assert report["answer"] == {"calls": 2, "succeeded": 2}
    assert err.count("incoming call from") == 2


def test_answer_without_count_stops_on_sigterm() -> None:
    answerer = Answerer("--json", "--bind", "127.0.0.1:0", "answer", "--auto", "--record", "none")
    try:
        answerer.wait_listening()
        answerer.proc.terminate()
        status, report, _ = answerer.finish()
    finally:
        answerer.stop()
    assert status == 1  # no call answered: it did not do what it says
    assert report["answer"] == {"calls": 0, "succeeded": 0}


# --- interop with baresip (plain RTP: its ICE module gathers on every interface, not only
# on loopback, so ICE interop is left to the lab tests) ------------------------------------


def baresip_config(directory: Path, sip_port: int, tone: float, codecs: str = "opus") -> Path:
    """A baresip 1.0 config: auto-answer, a sine source, received audio dumped to WAV."""
    modules = {"opus": ["opus.so", "g711.so"], "pcmu": ["g711.so", "opus.so"]}[codecs]
    (directory / "snd").mkdir(parents=True, exist_ok=True)
    lines = [
        "poll_method epoll",
        f"sip_listen 127.0.0.1:{sip_port}",
        "net_interface 127.0.0.1",
        "audio_player alsa,null",
        "audio_alert alsa,null",
        f"audio_source ausine,{tone:g}",
        "ausrc_srate 48000",  # ausine: 48 kHz stereo only
        "ausrc_channels 2",
        "module_path /usr/lib/baresip/modules",
        *(f"module {m}" for m in [*modules, "ausine.so", "alsa.so", "sndfile.so"]),
        "module_app account.so",
        "module_app menu.so",
        f"snd_path {directory / 'snd'}",
    ]
    (directory / "config").write_text("\n".join(lines) + "\n")
    (directory / "accounts").write_text("<sip:carol@127.0.0.1>;regint=0;answermode=auto\n")
    (directory / "contacts").write_text("")
    return directory


def baresip_heard(directory: Path) -> float:
    dumps = sorted((directory / "snd").glob("dump-*-dec.wav"))
    assert dumps, "baresip dumped no received audio"
    return dominant_tone(dumps[-1])


needs_baresip = pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip not installed")


@needs_baresip
@pytest.mark.parametrize("codec", ["opus", "pcmu"])
def test_softphone_calls_baresip(tmp_path: Path, codec: str) -> None:
    port = free_port()
    conf = baresip_config(tmp_path / "baresip", port, 550.0)
    baresip = Process(["baresip", "-f", str(conf)], merge_stdout=True)
    try:
        assert baresip.wait_for("baresip is ready"), "".join(baresip.lines)
        ours = tmp_path / "ours.wav"
        result = run_command(
            softphone(
                "--json", "--bind", "127.0.0.1:0", "--codecs", codec,
                "call", f"sip:carol@127.0.0.1:{port}",
                "--play", "tone:440", "--record", str(ours), "--duration", "3",
            )
        )  # fmt: skip
    finally:
        baresip.proc.terminate()
        baresip.proc.wait(10)
        baresip.stop()
    assert result.returncode == 0, result.stderr + "".join(baresip.lines)
    report = json.loads(result.stdout)
    assert report["ice"] is None  # baresip without ICE: RFC 8445 fallback to c=/m=
    _check_rtp(report, CODECS[codec])
    assert "peer without ICE" in result.stderr
    assert abs(dominant_tone(ours) - 550) < 5
    assert abs(baresip_heard(tmp_path / "baresip") - 440) < 5


@needs_baresip
def test_baresip_calls_softphone(tmp_path: Path) -> None:
    conf = baresip_config(tmp_path / "baresip", free_port(), 550.0, codecs="pcmu")
    ours = tmp_path / "ours.wav"
    with answering(
        "answer", "--auto", "--count", "1", "--duration", "3",
        "--record", str(ours), "--play", "tone:660",
    ) as answerer:  # fmt: skip
        baresip = subprocess.run(
            ["baresip", "-f", str(conf), "-e", f"/dial {answerer.uri}", "-t", "8"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        status, report, err = answerer.finish()
    assert status == 0, err + baresip.stdout + baresip.stderr
    assert report["call"]["end_reason"] == "local-bye"
    assert report["ice"] is None
    _check_rtp(report, "PCMU/8000")  # the offerer's first codec
    assert abs(dominant_tone(ours) - 550) < 5
    assert abs(baresip_heard(tmp_path / "baresip") - 660) < 5


def test_a_second_call_gets_busy_here() -> None:
    with answering(
        "answer", "--auto", "--count", "1", "--record", "none", "--play", "tone:660"
    ) as answerer:
        call = [
            "--json", "--bind", "127.0.0.1:0", "call", answerer.uri,
            "--play", "tone:440", "--record", "none",
        ]  # fmt: skip
        first = Process(softphone(*call, "--duration", "4"))
        try:
            assert answerer.wait_for("media:"), "".join(answerer.lines)
            second = run_command(softphone(*call, "--duration", "1"))
            first.proc.wait(30)
        finally:
            first.stop()
        status, report, err = answerer.finish()
    assert second.returncode == 1
    busy = json.loads(second.stdout)["call"]
    assert busy["sip_status"] == 486 and busy["end_reason"] == "rejected"
    assert first.proc.returncode == 0, "".join(first.lines)
    assert status == 0 and report["answer"] == {"calls": 1, "succeeded": 1}, err


def test_microphone_and_speaker_in_a_call(pulse: Any, tmp_path: Path) -> None:
    """The sound-card path through a private PulseAudio: the caller's speaker plays the
    callee's tone into the null sink, and its microphone (the sink's monitor) sends it back."""
    config = tmp_path / "config.toml"
    config.write_text('[accounts.sound]\ninput_device = "pulse"\noutput_device = "pulse"\n')
    callee_wav = tmp_path / "callee.wav"
    with answering(
        "--codecs", "pcmu",
        "answer", "--auto", "--count", "1", "--record", str(callee_wav), "--play", "tone:660",
    ) as answerer:  # fmt: skip
        caller = run_command(
            softphone(
                "--config", str(config), "--json", "--bind", "127.0.0.1:0", "call", answerer.uri,
                "--play", "mic", "--record", "speaker", "--duration", "4",
            )
        )  # fmt: skip
        status, _, err = answerer.finish()
    assert caller.returncode == 0, caller.stderr
    assert status == 0, err
    samples, rate = load_wav(callee_wav)
    # the callee hears its own tone, back through the caller's speaker and microphone
    tail = samples[len(samples) // 2 :]
    assert abs(dominant_frequency(tail, rate) - 660) < 5
    assert rms_dbfs(tail) > -40  # a real signal, not noise


def test_answer_without_input_keeps_ringing_until_the_caller_gives_up(tmp_path: Path) -> None:
    port = free_port()
    answerer = Answerer("--bind", f"127.0.0.1:{port}", "answer", "--count", "1")
    assert answerer.proc.stdin is not None
    answerer.proc.stdin.close()  # end of input: nobody will ever press Enter
    try:
        answerer.wait_listening()
        caller = Process(
            softphone(
                "--json", "--bind", "127.0.0.1:0", "call", f"sip:bob@127.0.0.1:{port}",
                "--play", "tone:440", "--record", "none",
            )
        )  # fmt: skip
        try:
            assert answerer.wait_for("end of file"), "".join(answerer.lines)
            assert caller.wait_for("ringing (180)"), "".join(caller.lines)
            caller.proc.send_signal(signal.SIGINT)
            assert caller.proc.wait(20) == 1
            assert caller.proc.stdout is not None
            report = json.loads(caller.proc.stdout.read())
        finally:
            caller.stop()
        assert answerer.wait_for("the caller gave up"), "".join(answerer.lines)
        answerer.proc.terminate()
        assert answerer.proc.wait(20) == 1  # nothing answered
    finally:
        answerer.stop()
    assert report["call"]["end_reason"] == "interrupted"
    assert report["call"]["sip_status"] == 487


def test_answer_on_a_port_in_use_fails_cleanly(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_command(
            softphone("--json", "--bind", f"127.0.0.1:{port}", "answer", "--auto"), timeout=30
        )
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["answer"] == {"calls": 0, "succeeded": 0}
