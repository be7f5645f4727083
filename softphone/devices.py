"""``softphone devices``: the audio devices PortAudio sees (via :mod:`media.audio`).

One line per device: index, name, host API, input/output channels, default sample rate, and
markers for the default input (``>``) and output (``<``) device, as ``python -m sounddevice``
prints them. ``--json`` gives ``{"devices": {"inputs": [...], "outputs": [...], "all": [...],
"default_input": N, "default_output": N}}``. Exit status 0 when the list could be read (even
if empty: the message then says that PortAudio found no devices), 1 when PortAudio is
unavailable.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from media.audio import AudioDevice, AudioDeviceError, list_devices
from softphone.report import Reporter

__all__ = ["device_lines", "run_devices"]

EXIT_OK, EXIT_FAILED = 0, 1

NO_DEVICES = (
    "PortAudio found no audio devices (no sound card, or no sound server such as "
    "PulseAudio/PipeWire reachable from this session)"
)


def _line(d: AudioDevice) -> str:
    mark = (">" if d.default_input else " ") + ("<" if d.default_output else " ")
    return (
        f"{mark} {d.index:3d}  {d.name}  ({d.hostapi}; {d.max_input_channels} in, "
        f"{d.max_output_channels} out; {d.default_samplerate:g} Hz)"
    )


def device_lines(devices: list[AudioDevice]) -> list[str]:
    """The human-readable listing: inputs, then outputs, then the legend."""
    if not devices:
        return [NO_DEVICES]
    lines = ["input devices:"]
    inputs = [d for d in devices if d.is_input]
    lines += [_line(d) for d in inputs] or ["    (none)"]
    lines.append("output devices:")
    outputs = [d for d in devices if d.is_output]
    lines += [_line(d) for d in outputs] or ["    (none)"]
    lines.append("> default input, < default output")
    return lines


def _device_json(d: AudioDevice) -> dict[str, Any]:
    out = asdict(d)
    out["default_samplerate"] = round(d.default_samplerate)
    return out


def run_devices(reporter: Reporter) -> int:
    """Run the command; returns the exit status."""
    section = reporter.section("devices")
    try:
        devices = list_devices()
    except AudioDeviceError as exc:
        section.update(error=str(exc), inputs=[], outputs=[], all=[])
        reporter.progress(f"cannot list audio devices: {exc}")
        return EXIT_FAILED
    section["all"] = [_device_json(d) for d in devices]
    section["inputs"] = [_device_json(d) for d in devices if d.is_input]
    section["outputs"] = [_device_json(d) for d in devices if d.is_output]
    section["default_input"] = next((d.index for d in devices if d.default_input), None)
    section["default_output"] = next((d.index for d in devices if d.default_output), None)
    if not devices:
        section["message"] = NO_DEVICES
    out = reporter.err if reporter.json_output else reporter.out
    for line in device_lines(devices):
        print(line, file=out, flush=True)
    return EXIT_OK
