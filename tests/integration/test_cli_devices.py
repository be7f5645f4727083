"""``softphone devices`` against a private PulseAudio (tests/peers/pulse.py) with a null sink.

sounddevice loads PortAudio once per process with the environment of that moment, so the
command runs as a subprocess with the daemon's client environment (the ``pulse`` fixture sets
it in ``os.environ`` for the test). PortAudio reaches PulseAudio through ALSA's pulse plugin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from media.audio import AudioDevice
from softphone.devices import NO_DEVICES, device_lines
from tests.peers.pulse import PulseAudio


def softphone(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softphone", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else dict(os.environ),
    )


def test_devices_json_lists_pulse(pulse: PulseAudio) -> None:
    res = softphone("--json", "devices", env=pulse.env())
    assert res.returncode == 0, res.stderr
    devices = json.loads(res.stdout)["devices"]
    names = [d["name"] for d in devices["all"]]
    assert any("pulse" in n.lower() for n in names), names
    pulse_dev = next(d for d in devices["all"] if d["name"].lower() == "pulse")
    assert pulse_dev["max_input_channels"] > 0
    assert pulse_dev["max_output_channels"] > 0
    assert pulse_dev["default_samplerate"] > 0
    assert pulse_dev in devices["inputs"] and pulse_dev in devices["outputs"]
    assert devices["default_input"] is not None
    assert devices["default_output"] is not None
    assert any(d["default_input"] for d in devices["inputs"])


def test_devices_human_listing(pulse: PulseAudio) -> None:
    res = softphone("devices", env=pulse.env())
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "input devices:"
    assert "output devices:" in lines
    assert any(" pulse " in f" {line} " and "Hz" in line for line in lines), res.stdout
    assert any(line.startswith(">") for line in lines)  # default input marked
    assert any(line[1:2] == "<" for line in lines)  # default output marked


def test_devices_none_found_message(tmp_path: Path) -> None:
    # no sound server reachable (a runtime directory without a pulse socket) and, on a
    # headless machine, no sound card: PortAudio finds nothing
    env = dict(os.environ)
    for key in ("PULSE_SERVER", "PULSE_SINK", "PULSE_SOURCE"):
        env.pop(key, None)
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    res = softphone("--json", "devices", env=env)
    devices = json.loads(res.stdout)["devices"]
    if devices["all"]:
        pytest.skip("this machine has audio devices of its own")
    assert res.returncode == 0
    assert "PortAudio found no audio devices" in devices["message"]
    assert "PortAudio found no audio devices" in res.stderr


def test_device_lines_mark_defaults_and_split_directions() -> None:
    devices = [
        AudioDevice(0, "USB headset", "ALSA", 1, 2, 48000.0, default_input=True),
        AudioDevice(1, "HDMI", "ALSA", 0, 8, 44100.0, default_output=True),
    ]
    lines = device_lines(devices)
    inputs = lines[1 : lines.index("output devices:")]
    outputs = lines[lines.index("output devices:") + 1 : -1]
    assert inputs == [">    0  USB headset  (ALSA; 1 in, 2 out; 48000 Hz)"]
    assert outputs[0] == inputs[0]  # a device with both directions is listed twice
    assert outputs[1] == " <   1  HDMI  (ALSA; 0 in, 8 out; 44100 Hz)"
    assert device_lines([]) == [NO_DEVICES]
