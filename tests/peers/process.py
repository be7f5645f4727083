"""A peer's foreground process: start, wait until ready, read its log, stop by PID."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self

from tests.peers.certs import TestPki

_running: set[ManagedProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    """A test run that dies half-way (Ctrl-C, an error in a fixture) leaves no peer behind."""
    for proc in list(_running):
        with contextlib.suppress(Exception):
            proc.stop(timeout=2.0)


class PeerError(RuntimeError):
    """A peer failed to start or to become ready; the message carries its log tail."""


class ManagedProcess:
    """One child process in its own session, with stdout and stderr in a log file.

    The child is started with ``start_new_session=True`` so that it and anything it forks
    share one process group whose id is the child's PID; :meth:`stop` signals that PID
    (and, if something survives, that group) and nothing else.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise PeerError(f"{self.name} is not started")
        return self.proc.pid

    def start(self) -> None:
        if self.running():
            raise PeerError(f"{self.name} already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            shown = " ".join(a.replace("\n", "\\n")[:300] for a in self.argv)
            log.write(f"==== start {shown}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        _running.add(self)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def fail(self, why: str) -> PeerError:
        return PeerError(
            f"{self.name}: {why}\n--- log tail ({self.log_path}) ---\n{self.log_tail()}"
        )

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until true; raise with the log tail on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if ready():
                return
            if not self.running():
                raise self.fail(f"exited with status {self.returncode} while waiting for {what}")
            if time.monotonic() > deadline:
                raise self.fail(f"not ready after {timeout:.0f}s: {what}")
            time.sleep(0.05)

    def wait_ready(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """:meth:`wait_until` for a peer's start: a peer that never gets ready is stopped."""
        try:
            self.wait_until(ready, timeout, what)
        except BaseException:
            self.stop(timeout=2.0)
            raise

    def wait_for_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match[str]:
        """Wait until the log (from character offset ``start``) matches the regex ``pattern``."""
        found: list[re.Match[str]] = []

        def check() -> bool:
            m = re.search(pattern, self.log()[start:])
            if m:
                found.append(m)
            return m is not None

        self.wait_until(check, timeout, f"log line /{pattern}/")
        return found[0]

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; its exit status."""
        if self.proc is None:
            raise PeerError(f"{self.name} is not started")
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self.fail(f"still running after {timeout:.0f}s") from None

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal our child, wait, escalate to SIGKILL on its own process group; return status."""
        proc = self.proc
        if proc is None:
            return None
        _running.discard(self)
        pgid = proc.pid  # session leader: its process group id is its PID
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                proc.wait(timeout)
        # workers forked by the child (same process group) must not outlive it
        deadline = time.monotonic() + timeout
        while _group_alive(pgid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                break
            time.sleep(0.05)
        return proc.returncode


class ProcessPeer:
    """What every peer running one :class:`ManagedProcess` shares: start it and wait until it
    is ready (:meth:`_launch`), stop it, ask whether it runs, read and wait for its log, and
    use it as a context manager. A subclass sets ``label`` (its name in error messages) and
    ``log_path``, and implements :meth:`start` with :meth:`_launch`."""

    label = "peer"
    log_path: Path
    _process: ManagedProcess | None = None

    def start(self) -> None:
        raise NotImplementedError

    def _launch(
        self,
        name: str,
        argv: Sequence[str],
        ready: Callable[[], bool],
        timeout: float,
        what: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        """Start ``argv`` as process ``name``; wait up to ``timeout`` until ``ready`` (stopped
        and raised with its log tail if it never is: :meth:`ManagedProcess.wait_ready`)."""
        self._process = ManagedProcess(name, argv, self.log_path, env=env, cwd=cwd)
        self._process.start()
        self._process.wait_ready(ready, timeout, what)

    def _started(self) -> ManagedProcess:
        if self._process is None:
            raise PeerError(f"{self.label} not started")
        return self._process

    @property
    def pid(self) -> int:
        return self._started().pid

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def log(self) -> str:
        """Everything the peer logged so far (all runs, separated by '==== start' lines)."""
        return self._process.log() if self._process else ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> str:
        """Wait until the log (from offset ``start``) matches ``pattern``; the matched text."""
        return self._started().wait_for_log(pattern, timeout, start).group(0)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TlsPeer(ProcessPeer):
    """A :class:`ProcessPeer` with a TLS listener whose certificate comes from a throw-away CA
    (``pki``, made at start when TLS is on)."""

    pki: TestPki | None = None

    @property
    def ca_file(self) -> Path:
        if self.pki is None:
            raise PeerError(f"{self.label} has no TLS certificate (tls=False or not started)")
        return self.pki.ca_file

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this peer's test CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    """``argv`` run inside network namespace ``netns`` (``ip netns exec``), or as it is."""
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in process group ``pgid``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # fields after the parenthesised command: state ppid pgrp ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def short_socket_dir(workdir: Path, name: str) -> Path:
    """A directory for unix sockets: ``workdir/name`` if its paths stay well under the
    108-byte sun_path limit, else a symlinked short directory under /tmp."""
    target = workdir / name
    if len(str(target)) <= 60:
        target.mkdir(parents=True, exist_ok=True)
        return target
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="spt-", dir="/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    if not target.exists():
        target.symlink_to(short)  # so it can be found from the work directory
    return short


def remove_socket_dir(workdir: Path, directory: Path) -> None:
    """Remove a directory made by :func:`short_socket_dir` if it lives outside ``workdir``."""
    import shutil

    if not directory.is_relative_to(workdir):
        shutil.rmtree(directory, ignore_errors=True)


def tcp_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
