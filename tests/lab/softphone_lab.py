"""Helpers for the softphone lab: the real ``softphone`` CLI on laptops of the ICE lab
(:mod:`tests.lab.conftest`), registering with Kamailio on the lab's public net and calling
each other across the NAT routers with coturn for STUN and TURN.

A call is one ``softphone answer --auto --count 1`` (the callee, started first and awaited
until it says it waits for calls) and one ``softphone call`` (the caller), each run with
``ip netns exec`` in its laptop's namespace, each with a timeout and ended by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from media.analysis import dominant_frequency
from media.sources import load_wav
from tests.lab.conftest import SERVER_IP, TURN_USER, IceLab, Laptop
from tests.peers.kamailio import DEFAULT_USERS, Kamailio
from tests.peers.netns import REPO_ROOT, Namespace

DOMAIN = "example.org"
CALLER_TONE, CALLEE_TONE = 440.0, 880.0
PASSWORD_ENV = {"alice": "ALICE_SIP_PW", "bob": "BOB_SIP_PW"}
TURN_PASSWORD_ENV = "LAB_TURN_PW"


@dataclass
class SoftphoneLab:
    """The ICE lab plus Kamailio (registrar + proxy, digest auth, record-route, nathelper)
    on the public net next to its coturn."""

    ice: IceLab
    kamailio: Kamailio

    def sip_server(self, transport: str = "udp") -> str:
        return self.kamailio.server(transport)

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        for user, var in PASSWORD_ENV.items():
            env[var] = self.kamailio.users[user]
        env[TURN_PASSWORD_ENV] = self.ice.coturn.users[TURN_USER]
        return env

    def common_args(self, user: str, transport: str = "udp") -> list[str]:
        server = self.ice.coturn.server()
        return [
            "--json", "--server", self.sip_server(transport), "--transport", transport,
            "--user", f"{user}@{DOMAIN}", "--password-env", PASSWORD_ENV[user],
            "--stun", server, "--turn", server,
            "--turn-user", TURN_USER, "--turn-password-env", TURN_PASSWORD_ENV,
            *(["--ca-file", str(self.kamailio.ca_file)] if transport == "tls" else []),
        ]  # fmt: skip


def start_kamailio(ice: IceLab, workdir: Path, fr_timer_ms: int = 5000) -> Kamailio:
    """``fr_timer_ms``: how long Kamailio waits for any reply to a request it relayed
    (tm ``fr_timer``) before it answers 408 itself."""
    users = {u: DEFAULT_USERS[u] for u in ("alice", "bob")}
    kamailio = Kamailio(
        workdir, host=SERVER_IP, domain=DOMAIN, users=users, tls=True, netns=ice.public.name,
        fr_timer_ms=fr_timer_ms,
    )  # fmt: skip
    kamailio.start()
    return kamailio


def softphone_lab_module(
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    name: str,
    fr_timer_ms: int = 5000,
) -> Iterator[SoftphoneLab]:
    """The body of a test module's ``softphone_lab`` fixture: the ICE lab (or skip) with a
    Kamailio of its own in the public namespace (see :func:`start_kamailio`), stopped after
    the module; the setup/connect times table is printed at the end of the session."""
    if shutil.which("kamailio") is None:
        pytest.skip("kamailio not installed (Debian package kamailio)")
    ice_lab: IceLab = request.getfixturevalue("ice_lab")  # (root, iptables, coturn: or skip)
    if not request.config.pluginmanager.is_registered(TIMES):
        request.config.pluginmanager.register(TIMES, "softphone-lab-times")
    workdir = tmp_path_factory.mktemp(name) / "kamailio"
    kamailio = start_kamailio(ice_lab, workdir, fr_timer_ms=fr_timer_ms)
    try:
        yield SoftphoneLab(ice_lab, kamailio)
    finally:
        kamailio.stop()


class SoftphoneProcess:
    """One ``python -m softphone ARGS`` process in a namespace of the tests; stderr lines
    collected by a thread (to wait for a progress line), stdout (the JSON report) read at the
    end; with ``log``, both saved there when it ends. Ended by its PID."""

    def __init__(
        self, ns: Namespace, env: dict[str, str], *args: str, log: Path | None = None,
        name: str = "softphone",
    ) -> None:  # fmt: skip
        self.name = name
        self.log_path = log
        self.proc = subprocess.Popen(
            ns.exec_argv([sys.executable, "-m", "softphone", *args]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.stdout = ""
        assert self.proc.stderr is not None and self.proc.stdout is not None
        self._err = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self._out = threading.Thread(target=self._read_out, args=(self.proc.stdout,), daemon=True)
        self._err.start()
        self._out.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def _read_out(self, stream: IO[str]) -> None:
        self.stdout = stream.read()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    text = stderr

    def search(self, pattern: str, timeout: float = 30.0) -> re.Match[str] | None:
        """The first stderr line matching the regular expression ``pattern``, waiting up to
        ``timeout`` s for it (or until the process ends)."""
        deadline = time.monotonic() + timeout
        while True:
            ended = self.proc.poll() is not None
            if ended:
                self._err.join(2)
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            if ended or time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def wait_for(self, text: str, timeout: float = 30.0) -> bool:
        """Whether a stderr line containing ``text`` came within ``timeout`` s."""
        return self.search(re.escape(text), timeout) is not None

    def finish(self, timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
        """Exit status and JSON report; on timeout the process is killed (by PID)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"{self.name}: softphone still running after {timeout:.0f}s\n{self.stderr}"
            ) from None
        self._out.join(5)
        self._err.join(5)
        self._save_log()
        text = self.stdout.strip()
        assert text, f"{self.name}: no JSON report\n{self.stderr}"
        return self.proc.returncode, json.loads(text.splitlines()[-1])

    def interrupt(self) -> None:
        """SIGINT, as Ctrl-C: a ``call`` hangs up (BYE) and reports as at the end of
        ``--duration``."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGINT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, 15)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, 9)
                self.proc.wait(5)
        self._save_log()

    def _save_log(self) -> None:
        if self.log_path is None:
            return
        with contextlib.suppress(OSError):
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text(self.stderr + "\n---- stdout\n" + self.stdout)


class Running(contextlib.ExitStack):
    """Softphone processes started in a ``with`` block, all stopped (and their logs saved)
    when it ends, however it ends."""

    def start(self, ns: Namespace, env: dict[str, str], *args: str) -> SoftphoneProcess:
        proc = SoftphoneProcess(ns, env, *args)
        self.callback(proc.stop)
        return proc


class Softphone(SoftphoneProcess):
    """A :class:`SoftphoneProcess` on a laptop of the softphone lab."""

    def __init__(self, lab: SoftphoneLab, laptop: Laptop, args: list[str], log: Path) -> None:
        self.laptop = laptop
        super().__init__(laptop.ns, lab.env(), *args, log=log, name=laptop.name)


@dataclass
class CallResult:
    caller_status: int
    callee_status: int
    caller: dict[str, Any]  # the JSON reports
    callee: dict[str, Any]
    caller_heard: float  # dominant frequency of each side's recording
    callee_heard: float
    caller_log: str
    callee_log: str
    caller_wav: Path
    callee_wav: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def pair(self, side: str = "caller") -> tuple[str, str]:
        sel = (self.caller if side == "caller" else self.callee)["ice"]["selected"]
        return sel["local"]["type"], sel["remote"]["type"]

    def summary(self, case: str) -> str:
        return summarize(case, self.caller, self.callee)


def summarize(case: str, caller: dict[str, Any], callee: dict[str, Any]) -> str:
    """One line: setup_ms, each side's ICE connect_ms and pair, RTP loss (from the reports)."""

    def pair(report: dict[str, Any]) -> str:
        sel = (report.get("ice") or {}).get("selected") or {}
        return "/".join(str((sel.get(end) or {}).get("type")) for end in ("local", "remote"))

    ice_a, ice_b = caller.get("ice") or {}, callee.get("ice") or {}
    rtp_a, rtp_b = caller.get("rtp") or {}, callee.get("rtp") or {}
    return (
        f"{case:28} setup_ms {caller['call'].get('setup_ms')} "
        f"connect_ms caller {ice_a.get('connect_ms')} callee {ice_b.get('connect_ms')} "
        f"pair {pair(caller)} | {pair(callee)} "
        f"rtp lost {rtp_a.get('lost')}/{rtp_b.get('lost')}"
    )


class CallTimes:
    """A pytest plugin object (registered by the lab fixture) that lists every call's
    setup_ms and ICE connect_ms in the terminal summary; no test asserts on them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def record(self, case: str, r: CallResult, note: str = "") -> None:
        self.record_reports(case, r.caller, r.callee, note)

    def record_reports(
        self, case: str, caller: dict[str, Any], callee: dict[str, Any], note: str = ""
    ) -> None:
        line = summarize(case, caller, callee) + (f" {note}" if note else "")
        print(line)
        self.lines.append(line)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.section("softphone lab: setup and ICE connect times")
            for line in self.lines:
                terminalreporter.write_line(line)


TIMES = CallTimes()


def heard(path: Path) -> float:
    """Dominant frequency of a recording, skipping its first 200 ms (jitter buffer fill)."""
    samples, rate = load_wav(path)
    assert len(samples) > rate // 2, f"{path} holds only {len(samples)} samples"
    return dominant_frequency(samples[rate // 5 :], rate)


def heard_windows(path: Path, window: float = 0.5) -> list[float]:
    """Dominant frequency of each ``window`` seconds of a recording, from 0.5 s after its
    start to 0.3 s before its end (a gap or a wrong tone anywhere in between shows)."""
    samples, rate = load_wav(path)
    step = int(window * rate)
    body = samples[rate // 2 : len(samples) - int(0.3 * rate)]
    return [
        dominant_frequency(body[i : i + step], rate) for i in range(0, len(body) - step + 1, step)
    ]


def run_call(
    lab: SoftphoneLab,
    workdir: Path,
    caller: tuple[str, str],
    callee: tuple[str, str],
    transport: str = "udp",
    duration: float = 2.0,
    during: Any = None,
) -> CallResult:
    """``caller`` = (user, laptop name) calls ``callee`` (registered first, answering
    once).  ``during(lab)`` runs once the call is up (the callee printed 'connected'); its
    dict goes into ``extra``, and when it holds ``hang_up: True`` the caller hangs up then
    (SIGINT) instead of waiting out ``duration`` (which stays the upper bound)."""
    workdir.mkdir(parents=True, exist_ok=True)
    caller_user, caller_laptop = caller
    callee_user, callee_laptop = callee
    caller_wav, callee_wav = workdir / "caller.wav", workdir / "callee.wav"
    answerer = Softphone(
        lab,
        lab.ice[callee_laptop],
        [
            *lab.common_args(callee_user, transport),
            "answer", "--auto", "--count", "1",
            "--play", f"tone:{CALLEE_TONE:g}", "--record", str(callee_wav),
        ],
        workdir / "callee.log",
    )  # fmt: skip
    calling: Softphone | None = None
    extra: dict[str, Any] = {}
    mark = lab.kamailio.log_mark()
    try:
        assert answerer.wait_for("waiting for calls", 40), (
            f"callee did not register:\n{answerer.stderr}"
        )
        extra["callee_contacts"] = lab.kamailio.contacts(callee_user)
        calling = Softphone(
            lab,
            lab.ice[caller_laptop],
            [
                *lab.common_args(caller_user, transport),
                "call", callee_user,
                "--play", f"tone:{CALLER_TONE:g}", "--record", str(caller_wav),
                "--duration", f"{duration:g}",
            ],
            workdir / "caller.log",
        )  # fmt: skip
        if during is not None:
            assert answerer.wait_for("connected via", 40), answerer.stderr + calling.stderr
            extra.update(during(lab) or {})
            if extra.get("hang_up"):
                calling.interrupt()
        caller_status, caller_report = calling.finish(90)
        callee_status, callee_report = answerer.finish(30)
    finally:
        if calling is not None:
            calling.stop()
        answerer.stop()
    extra["kamailio_log"] = lab.kamailio.log()[mark:]
    result = CallResult(
        caller_status,
        callee_status,
        caller_report,
        callee_report,
        heard(caller_wav) if caller_wav.exists() else 0.0,
        heard(callee_wav) if callee_wav.exists() else 0.0,
        calling.stderr,
        answerer.stderr,
        caller_wav,
        callee_wav,
        extra,
    )
    return result


def assert_call_ok(r: CallResult) -> None:
    """SIP 200, both exits 0, and each side heard the other's tone."""
    logs = f"\n--- caller\n{r.caller_log}\n--- callee\n{r.callee_log}"
    assert r.caller["call"]["sip_status"] == 200, r.caller["call"]
    assert r.caller_status == 0, f"caller exit {r.caller_status}{logs}"
    assert r.callee_status == 0, f"callee exit {r.callee_status}{logs}"
    assert r.caller["ice"]["role"] == "controlling" and r.callee["ice"]["role"] == "controlled"
    assert r.caller["rtp"]["received"] > 0 and r.callee["rtp"]["received"] > 0
    assert abs(r.callee_heard - CALLER_TONE) < 10, (r.callee_heard, logs)
    assert abs(r.caller_heard - CALLEE_TONE) < 10, (r.caller_heard, logs)


def assert_no_secrets(lab: SoftphoneLab, r: CallResult) -> None:
    """Passwords (given only by environment variable) appear in no output (README)."""
    shown = r.caller_log + r.callee_log + json.dumps(r.caller) + json.dumps(r.callee)
    for secret in [*lab.kamailio.users.values(), lab.ice.coturn.users[TURN_USER]]:
        assert secret not in shown, "a password leaked into the output"


def assert_proxied(
    r: CallResult, callee_user: str, callee_public_ip: str, *, lossy: bool = False
) -> None:
    """What Kamailio logged of the call: the INVITE challenged and sent again with
    credentials (digest auth), forked to the callee's NAT address (nathelper learnt it from
    the REGISTER), and the ACK and BYE through the proxy too (record-route, the contact
    alias). ``lossy``: the path drops packets; the BYE is retransmitted until answered
    (RFC 3261 §17.1.2) so it must get through, but an ACK for a 2xx is sent again only
    when a retransmitted 2xx arrives (§13.2.2.4), so a short call may end before one of
    those ACKs survives the loss: then the ACK is not required in the log."""
    log = r.extra["kamailio_log"]
    assert log.count(f"REQ INVITE sip:{callee_user}@{DOMAIN}") >= 2, log
    assert f"BRANCH INVITE to sip:{callee_user}@{callee_public_ip}:" in log, log
    assert "in-dialog BYE" in log, log
    if not lossy:
        assert "REQ ACK " in log, log


def relayed(r: CallResult, side: str = "caller") -> bool:
    return "relay" in r.pair(side)
