"""baresip (Debian ``baresip``, v1.0) as a complete SIP user agent peer.

One account, registering to ``registrar`` (if given) or not, answering automatically,
sending a 440 Hz sine (``ausine``) and playing to a null device (``aubridge``); the
``sndfile`` module dumps every call's encoded and decoded audio to WAV files in the work
directory, so a test can tell that audio arrived. ``ctrl_tcp`` gives a JSON command channel
(``dial``, ``hangup``, ``accept`` ...). Media candidates are bound to ``host`` only.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.peers.ports import free_port
from tests.peers.probe import REPO_ROOT, probe_in_netns
from tests.peers.process import PeerError, ProcessPeer, in_netns

MODULES = ["g711.so", "opus.so", "ausine.so", "aufile.so", "aubridge.so", "sndfile.so"]
NAT_MODULES = ["ice.so", "stun.so", "turn.so"]
_tokens = itertools.count(1)


def baresip_binary() -> str | None:
    return shutil.which("baresip")


class Baresip(ProcessPeer):
    label = "baresip"

    def __init__(
        self,
        workdir: Path,
        *,
        user: str = "bob",
        domain: str = "example.org",
        password: str | None = None,
        registrar: str | None = None,
        transport: str = "udp",
        host: str = "127.0.0.1",
        port: int | None = None,
        answermode: str = "auto",
        audio_codecs: str = "opus/48000/2,PCMU/8000/1,PCMA/8000/1",
        medianat: str | None = None,
        stun_server: str | None = None,
        regint: int = 600,
        netns: str | None = None,
        extra_account_params: Sequence[str] = (),
    ) -> None:
        if medianat and netns is None:
            # baresip's ICE gathers on every interface of the host, not only ``host``: on
            # loopback that would leak media onto the machine's real addresses
            raise ValueError("medianat (ICE/STUN/TURN) only inside a lab namespace (netns=)")
        self.workdir = workdir
        self.confdir = workdir / "conf"
        self.user, self.domain, self.password = user, domain, password
        self.registrar = registrar
        self.transport = transport
        self.host = host
        self.netns = netns
        if netns is None:
            self.port = port or free_port(host, udp=True, tcp=True)
            self.ctrl_port = free_port(host, udp=False, tcp=True)
        else:
            self.port, self.ctrl_port = port or 5060, 4444
        self.answermode = answermode
        self.audio_codecs = audio_codecs
        self.medianat, self.stun_server = medianat, stun_server
        self.regint = regint
        self.extra_account_params = list(extra_account_params)
        self.log_path = workdir / "baresip.log"

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact_uri(self) -> str:
        """Where it can be reached directly, without a registrar."""
        return f"sip:{self.user}@{self.host}:{self.port}"

    def _write_config(self) -> None:
        self.confdir.mkdir(parents=True, exist_ok=True)
        modules = MODULES + (NAT_MODULES if self.medianat else [])
        lines = [
            "poll_method\t\tepoll",
            f"net_interface\t\t{self.host}",
            f"sip_listen\t\t{self.host}:{self.port}",
            "call_local_timeout\t120",
            "call_max_calls\t\t4",
            "audio_player\t\taubridge,nowhere",
            "audio_source\t\tausine,440",
            "audio_alert\t\taubridge,nowhere",
            # ausine makes 48 kHz stereo only; baresip resamples to the codec
            "ausrc_srate\t\t48000",
            "ausrc_channels\t\t2",
            "auplay_srate\t\t48000",
            "auplay_channels\t\t1",
            "module_path\t\t/usr/lib/baresip/modules",
            *(f"module\t\t\t{m}" for m in modules),
            f"snd_path\t\t{self.workdir}",
            "module_app\t\taccount.so",
            "module_app\t\tmenu.so",
            "module_app\t\tctrl_tcp.so",
            f"ctrl_tcp_listen\t\t{self.host}:{self.ctrl_port}",
        ]
        (self.confdir / "config").write_text("\n".join(lines) + "\n")
        params = [f"answermode={self.answermode}", f"audio_codecs={self.audio_codecs}"]
        if self.password is not None:
            params.append(f"auth_pass={self.password}")
        if self.registrar:
            params += [f'outbound="sip:{self.registrar};transport={self.transport}"',
                       f"regint={self.regint}"]  # fmt: skip
        else:
            params.append("regint=0")
        if self.medianat:
            params.append(f"medianat={self.medianat}")
        if self.stun_server:
            params.append(f'stunserver="{self.stun_server}"')
        params += self.extra_account_params
        uri = f"<sip:{self.user}@{self.domain};transport={self.transport}>"
        (self.confdir / "accounts").write_text(";".join([uri, *params]) + "\n")
        (self.confdir / "contacts").write_text("")

    def argv(self) -> list[str]:
        binary = baresip_binary()
        if binary is None:
            raise PeerError("baresip not installed")
        return in_netns(self.netns, [binary, "-f", str(self.confdir), "-v"])

    def start(self, timeout: float = 15.0) -> None:
        self._write_config()
        self._launch(
            "baresip",
            self.argv(),
            lambda: probe_in_netns(self.netns, "tcp", self.host, self.ctrl_port),
            timeout,
            "ctrl_tcp listening",
        )
        if self.registrar:
            try:
                self.wait_for_log(r"\{0/\w+/v4\} 200 OK .*binding", timeout)
            except PeerError:
                self.stop()
                raise

    # ---- control -------------------------------------------------------------------------
    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Send a ctrl_tcp command (netstring JSON); its response (``ok``, ``data``).

        Inside a namespace the command is sent from a helper process in that namespace:
        the lab's addresses must never be reached from the host's own network stack."""
        if self.netns is None:
            return ctrl_command(self.host, self.ctrl_port, command, params, timeout)
        argv = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "tests.peers.baresip"]
        argv += [self.host, str(self.ctrl_port), command, params]
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout + 10)
        if res.returncode != 0:
            raise PeerError(f"baresip {command} failed: {res.stderr.strip()}")
        return dict(json.loads(res.stdout))

    def dial(self, uri: str) -> dict[str, Any]:
        return self.command("dial", uri)

    def hangup(self) -> dict[str, Any]:
        return self.command("hangup")

    # ---- inspection ----------------------------------------------------------------------
    def received_audio_frames(self) -> int:
        """Audio frames baresip decoded from the network, over all calls (sndfile dumps)."""
        total = 0
        for path in sorted(self.workdir.glob("dump-*-dec.wav")):
            try:
                with wave.open(str(path)) as w:
                    total += w.getnframes()
            except (wave.Error, EOFError):
                total += max(0, path.stat().st_size - 44) // 2  # still being written
        return total


def ctrl_command(
    host: str, port: int, command: str, params: str = "", timeout: float = 5.0
) -> dict[str, Any]:
    """One ctrl_tcp command: send ``{"command", "params", "token"}`` as a netstring and
    return the response with that token (events on the same connection are skipped)."""
    token = f"t{next(_tokens)}"
    body = json.dumps({"command": command, "params": params, "token": token}).encode()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"%d:%s," % (len(body), body))
        buf = b""
        while True:
            while True:
                m = re.match(rb"(\d+):", buf)
                if m and len(buf) >= m.end() + int(m.group(1)) + 1:
                    break
                chunk = s.recv(65536)
                if not chunk:
                    raise PeerError(f"baresip closed the control connection ({command})")
                buf += chunk
            start, length = m.end(), int(m.group(1))
            message = json.loads(buf[start : start + length])
            buf = buf[start + length + 1 :]
            if message.get("response") and message.get("token") == token:
                return dict(message)


if __name__ == "__main__":  # python -m tests.peers.baresip HOST PORT COMMAND [PARAMS]
    _host, _port, _command, *_params = sys.argv[1:]
    print(json.dumps(ctrl_command(_host, int(_port), _command, " ".join(_params))))
