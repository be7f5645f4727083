"""The real PortAudio path, headless: sounddevice streams through a private PulseAudio.

A PulseAudio daemon with a null sink (tests/peers/pulse.py) stands in for the sound card:
what we play to ``nullsink`` comes back on ``nullsink.monitor``. PortAudio reaches it through
ALSA's pulse plugin (libasound2-plugins). sounddevice loads PortAudio once per process, with
the environment of that moment, so the sounddevice part runs in a subprocess started with the
daemon's client environment. A ``parec`` reader keeps the monitor busy the whole time (and
gives an independent recording of what reached the sink).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from media.analysis import dominant_frequency, rms_dbfs
from media.sources import ToneSource, load_wav, save_wav

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("parec") is None or shutil.which("paplay") is None,
    reason="parec/paplay not installed (Debian pulseaudio-utils)",
)

# Runs in the subprocess: a speaker and a microphone on the "pulse" device; the microphone's
# clock paces the loop (one tone frame written per frame captured), as it paces sending in a
# call. Prints a JSON summary; the captured audio goes to an .npy file.
LOOP = r"""
import asyncio, json, sys, time
import numpy as np
from media.audio import Microphone, Speaker, find_device, format_devices, list_devices
from media.sources import ToneSource

device, seconds, freq, rate, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), \
    int(sys.argv[4]), sys.argv[5]

async def main():
    devices = list_devices()
    mic = Microphone(rate, device=device, latency=0.06)
    spk = Speaker(rate, device=device, latency=0.06)
    mic.start()
    spk.start()
    tone = ToneSource(freq, rate, level_dbfs=-12)
    captured = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        captured.append(await asyncio.wait_for(mic.read(), 2.0))
        spk.write(tone.next_frame())
    elapsed = time.monotonic() - t0
    mic.close()
    spk.close()
    np.save(out, np.concatenate(captured))
    print(json.dumps({
        "devices": format_devices(devices),
        "input_index": find_device(device, "input", devices),
        "elapsed": elapsed,
        "frames": len(captured),
        "mic": {"callbacks": mic.callbacks, "device_rate": mic.device_rate,
                "blocksize": mic.device_frame, "xruns": mic.xruns,
                "overruns": mic.ring.overruns, "bad_blocks": mic.bad_blocks},
        "spk": {"callbacks": spk.callbacks, "device_rate": spk.device_rate,
                "blocksize": spk.device_frame, "xruns": spk.xruns, "gaps": spk.gaps,
                "overruns": spk.ring.overruns, "bad_blocks": spk.bad_blocks},
    }))

asyncio.run(main())
"""


def run_loop(env: dict[str, str], tmp_path: Path, freq: float, rate: int, seconds: float = 3.0):
    out = tmp_path / f"captured-{rate}.npy"
    proc = subprocess.run(
        [sys.executable, "-c", LOOP, "pulse", str(seconds), str(freq), str(rate), str(out)],
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))
    return report, np.load(out)


@contextmanager
def recording(pulse, source: str, path: Path) -> Iterator[Path]:
    """``parec`` recording ``source`` (a monitor) into ``path`` from its first bytes on: a fresh
    monitor takes a while (about 2 s here) before it delivers, so wait for that, not a fixed
    time; from then on audio reaches the file every 20 ms."""
    with path.open("wb") as f:
        proc = subprocess.Popen(
            ["parec", "--raw", "--format=s16le", "--rate=48000", "--channels=1",
             "--latency-msec=20", "-d", source],
            env=pulse.env(), stdout=f, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30.0
        while path.stat().st_size == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "parec exited"
        assert path.stat().st_size > 0, "parec recorded nothing"
        yield path
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def monitor_reader(pulse, tmp_path):
    """``parec`` recording the null sink's monitor for the whole test."""
    with recording(pulse, "nullsink.monitor", tmp_path / "parec.raw") as path:
        yield path


def test_tone_through_the_null_sink_comes_back_on_the_monitor(pulse, monitor_reader, tmp_path):
    seconds = 3.0
    report, captured = run_loop(pulse.env(), tmp_path, 1000.0, 48000, seconds)
    assert "pulse" in report["devices"]
    assert report["input_index"] is not None
    for side in ("mic", "spk"):
        info = report[side]
        assert info["device_rate"] == 48000 and info["blocksize"] == 960
        assert info["bad_blocks"] == 0
        # 20 ms blocks: about 50 callbacks a second (loose bounds: the machine is noisy)
        per_second = info["callbacks"] / report["elapsed"]
        assert 25 <= per_second <= 75, info
    assert report["frames"] >= 0.5 * 50 * seconds
    # what the speaker played came back through the monitor into the microphone
    tail = captured[len(captured) // 2 :]
    assert dominant_frequency(tail, 48000) == pytest.approx(1000, abs=3)
    assert rms_dbfs(tail) > -30
    # and parec heard the same tone at the sink
    time.sleep(0.3)
    recorded = np.frombuffer(monitor_reader.read_bytes(), dtype="<i2")
    assert len(recorded) > 48000
    assert dominant_frequency(recorded, 48000) == pytest.approx(1000, abs=3)


def test_codec_rate_frames_are_resampled_to_the_device(pulse, monitor_reader, tmp_path):
    """An 8 kHz (G.711) stream: 160-sample frames in and out, 48 kHz blocks at the device."""
    report, captured = run_loop(pulse.env(), tmp_path, 700.0, 8000, 2.5)
    assert report["mic"]["device_rate"] == 48000 and report["mic"]["blocksize"] == 960
    assert captured.dtype == np.int16 and len(captured) == 160 * report["frames"]
    tail = captured[len(captured) // 2 :]
    assert dominant_frequency(tail, 8000) == pytest.approx(700, abs=3)


def test_no_sound_server_gives_audio_device_errors(tmp_path):
    """Without a sound server or card: listing works, opening a device is an AudioDeviceError."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE")}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # no PulseAudio socket here
    env["PYTHONPATH"] = str(REPO)
    code = (
        "from media.audio import AudioDeviceError, Microphone, Speaker, list_devices\n"
        "print('devices', len(list_devices()))\n"
        "for cls in (Microphone, Speaker):\n"
        "    try:\n"
        "        cls(8000, device='no such device').start()\n"
        "        print('opened')\n"
        "    except AudioDeviceError as e:\n"
        "        print('refused', e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("devices ")
    assert [line.split()[0] for line in lines[1:]] == ["refused", "refused"]
    assert "no such device" in lines[1]


# Runs in the subprocess: a call between A (microphone and speaker on the "pulse" device)
# and B (a tone, recorded to a file) over UDP on 127.0.0.1, with Opus.
CALL = r"""
import asyncio, json, random, sys, time
from media.aio import MediaStream, open_udp_transport
from media.audio import Microphone, Speaker
from media.session import CodecDescription, RtpSession
from media.sources import ToneSource, WavFileSink

seconds, record = float(sys.argv[1]), sys.argv[2]
OPUS = CodecDescription("opus", 111, 48000, 2)

async def main():
    ta = await open_udp_transport(("127.0.0.1", 0))
    tb = await open_udp_transport(("127.0.0.1", 0), remote=ta.local_address)
    ta.remote = tb.local_address
    offset = time.time() - time.monotonic()
    sa, sb = (RtpSession(OPUS, rtcp_interval=1.0, rng=random.Random(i), ntp_offset=offset,
                         now=time.monotonic()) for i in (1, 2))
    mic = Microphone(48000, device="pulse")
    spk = Speaker(48000, device="pulse")
    a = MediaStream(sa, ta, mic, spk)
    b = MediaStream(sb, tb, ToneSource(880, 48000), WavFileSink(record, 48000))
    a.start()
    b.start()
    await asyncio.sleep(seconds)
    stats_a, stats_b = await a.stop(), await b.stop()
    print(json.dumps({
        "a": stats_a.as_dict(), "b": stats_b.as_dict(), "a_sent": a.frames_sent,
        "mic_callbacks": mic.callbacks, "spk_callbacks": spk.callbacks, "spk_gaps": spk.gaps,
    }))

asyncio.run(main())
"""


def test_call_with_microphone_and_speaker(pulse, monitor_reader, tmp_path):
    """A's microphone hears a tone played into a second null sink (440 Hz) and sends it;
    B sends 880 Hz, which A's speaker plays into ``nullsink`` where parec listens."""
    pulse.add_null_sink("micsink")
    tone = tmp_path / "440.wav"
    save_wav(tone, _tone(440), 48000)
    player = subprocess.Popen(
        ["paplay", "--device=micsink", str(tone)], env=pulse.env(), stderr=subprocess.DEVNULL
    )
    record = tmp_path / "b.wav"
    env = {**pulse.env(), "PULSE_SOURCE": "micsink.monitor", "PYTHONPATH": str(REPO)}
    try:
        # keep a reader on the fresh monitor source until it delivers, and during the call
        with recording(pulse, "micsink.monitor", tmp_path / "micsink.raw"):
            proc = subprocess.run(
                [sys.executable, "-c", CALL, "3.0", str(record)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
    finally:
        player.terminate()
        player.wait(5)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))
    # the microphone's clock paced A's sending: one frame per capture block
    assert abs(report["a_sent"] - report["mic_callbacks"]) <= 3
    assert report["mic_callbacks"] > 100  # about 150 in 3 s
    assert report["a"]["packets_received"] > 50 and report["b"]["packets_received"] > 50
    # B heard A's microphone ...
    received, _ = load_wav(record)
    tail = received[len(received) // 2 :]
    assert dominant_frequency(tail, 48000) == pytest.approx(440, abs=3)
    # ... and A's speaker played B's tone into the sink parec records
    time.sleep(0.3)
    heard = np.frombuffer(monitor_reader.read_bytes(), dtype="<i2")
    assert dominant_frequency(heard, 48000) == pytest.approx(880, abs=3)


def _tone(freq: float, seconds: float = 8.0) -> np.ndarray:
    source = ToneSource(freq, 48000, level_dbfs=-12)
    return np.concatenate([source.next_frame() for _ in range(int(seconds * 50))])
