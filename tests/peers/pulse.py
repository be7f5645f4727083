"""A private PulseAudio daemon with a null sink, for audio tests without sound hardware.

``pulseaudio --daemonize=no -n`` (no default.pa) in the foreground, its runtime directory
(XDG_RUNTIME_DIR, mode 0700) and HOME in the work directory, a native-protocol socket with
anonymous auth, and ``nullsink`` (48 kHz mono) as default sink with ``nullsink.monitor`` as
default source: what a client plays to the default sink can be recorded from the default
source. Clients find it through :meth:`PulseAudio.client_env` (PULSE_SERVER ...); ALSA's
pulse plugin (libasound2-plugins) makes it PortAudio's/sounddevice's "pulse" device.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.peers.process import PeerError, ProcessPeer, remove_socket_dir, short_socket_dir

SINK = "nullsink"
SOURCE = "nullsink.monitor"


def pulseaudio_binary() -> str | None:
    return shutil.which("pulseaudio")


class PulseAudio(ProcessPeer):
    label = "pulseaudio"

    def __init__(self, workdir: Path, rate: int = 48000, channels: int = 1) -> None:
        self.workdir = workdir
        self.rate, self.channels = rate, channels
        self.runtime_dir = short_socket_dir(workdir, "xdg-runtime")  # (unix socket path limit)
        self.home = workdir / "home"
        self.log_path = workdir / "pulseaudio.log"

    @property
    def socket(self) -> Path:
        return self.runtime_dir / "pulse" / "native"

    def client_env(self) -> dict[str, str]:
        """Environment variables that point a client (pactl, PortAudio via ALSA) here."""
        return {
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_LATENCY_MSEC": "20",
            "PULSE_SINK": SINK,
            "PULSE_SOURCE": SOURCE,
        }

    def env(self) -> dict[str, str]:
        """The whole environment of this process plus :meth:`client_env`."""
        return {**os.environ, **self.client_env()}

    def argv(self) -> list[str]:
        binary = pulseaudio_binary()
        if binary is None:
            raise PeerError("pulseaudio not installed")
        return [
            binary,
            "--daemonize=no",
            "--system=no",
            "--exit-idle-time=-1",
            "--disallow-exit=no",
            "--use-pid-file=no",
            "--log-target=stderr",
            "-n",
            f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
            f"--load=module-null-sink sink_name={SINK} rate={self.rate} channels={self.channels}",
        ]

    def start(self, timeout: float = 15.0) -> None:
        if not self.runtime_dir.exists():  # removed by stop()
            self.runtime_dir = short_socket_dir(self.workdir, "xdg-runtime")
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.chmod(0o700)
        (self.runtime_dir / "pulse").mkdir(exist_ok=True)
        (self.runtime_dir / "pulse").chmod(0o700)
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HOME": str(self.home), **self.client_env()}
        env.pop("PULSE_SERVER")  # the daemon itself must not try to connect anywhere
        self._launch("pulseaudio", self.argv(), self._answers, timeout, "pactl info", env=env)
        self.pactl("set-default-sink", SINK)
        self.pactl("set-default-source", SOURCE)

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            self.pactl("info", timeout=2.0)
        except (PeerError, subprocess.TimeoutExpired):
            return False
        return True

    def pactl(self, *args: str, timeout: float = 10.0) -> str:
        pactl = shutil.which("pactl")
        if pactl is None:
            raise PeerError("pactl not installed (Debian package pulseaudio-utils)")
        res = subprocess.run(
            [pactl, *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if res.returncode != 0:
            raise PeerError(f"pactl {' '.join(args)} failed: {res.stderr.strip()}")
        return res.stdout

    def info(self) -> dict[str, str]:
        """``pactl info`` as a dict (e.g. ``info()["Default Sink"]``)."""
        out = {}
        for line in self.pactl("info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out

    def add_null_sink(self, name: str) -> int:
        """Another null sink (its monitor is ``NAME.monitor``); the module index."""
        args = f"sink_name={name} rate={self.rate} channels={self.channels}"
        return int(self.pactl("load-module", "module-null-sink", *args.split()).strip())

    def stop(self) -> None:
        if self._process is not None:
            super().stop()
            remove_socket_dir(self.workdir, self.runtime_dir)
