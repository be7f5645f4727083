"""sipp (Debian ``sip-tester``) as a scenario runner.

``Sipp`` runs one sipp process in the foreground (``-nostdin``) with a built-in scenario
(``-sn uac``/``uas``) or one of the XML files in ``tests/peers/sipp/``, and reads its
statistics CSV (``-trace_stat``) to count successful and failed calls.

Scenarios in ``sipp/`` (all use the keys ``user``, ``domain``, ``contact``; callee ``-s``):

- ``uac_sdp``: INVITE with SDP (answers one 401/407), ACK, hold ``-d`` ms, BYE
- ``uac_wait_bye``: like ``uac_sdp`` but waits for the callee's BYE
- ``uac_invite_retrans``: sends its INVITE twice, delays the ACK so the 2xx is retransmitted
- ``uac_cancel``: CANCEL after 180; expects 200 (CANCEL) then 487, ACKs it
- ``uas_sdp``: 100, 180, 200 with SDP; absorbs INVITE retransmissions; BYE from the caller
- ``uas_hangup``: answers, holds ``-d`` ms, sends BYE itself
- ``uas_ring_wait``: 100, 180, then waits for CANCEL: 200 + 487
- ``register_auth`` / ``register_rejected``: REGISTER, 401, credentials: 200 / 401 or 403

sipp exit codes: 0 all calls successful, 1 at least one failed, 97 exit on internal
command, 99 normal exit without calls processed, 255/254 fatal error (bind failure).
"""

from __future__ import annotations

import csv
import itertools
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.ports import free_port, free_port_range, is_free
from tests.peers.process import ManagedProcess, PeerError, tcp_accepts

SCENARIO_DIR = Path(__file__).parent / "sipp"
_run_numbers = itertools.count(1)
BUILTIN = ("uac", "uas", "regexp", "branchc", "branchs", "uac_pcap", "ooc_default")
TRANSPORTS = {"udp": "u1", "tcp": "t1"}
# options an XML scenario of ours cannot work without
SCENARIO_ARGS: dict[str, list[str]] = {"uac_invite_retrans": ["-pause_msg_ign"]}


def sipp_binary() -> str | None:
    return shutil.which("sipp")


def scenario_path(name: str) -> Path:
    """Path of an XML scenario in tests/peers/sipp/ (``name`` with or without .xml)."""
    path = SCENARIO_DIR / (name if name.endswith(".xml") else f"{name}.xml")
    if not path.exists():
        raise FileNotFoundError(path)
    return path


@dataclass
class SippResult:
    """What a finished sipp run reports."""

    returncode: int | None
    successful: int
    failed: int
    created: int
    retransmissions: int
    stats: dict[str, str] = field(default_factory=dict)
    errors: str = ""
    log_path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0

    def describe(self) -> str:
        return (
            f"sipp rc={self.returncode} created={self.created} successful={self.successful} "
            f"failed={self.failed} retrans={self.retransmissions}\n{self.errors[-3000:]}"
        )


class Sipp:
    """One sipp run.

    ``scenario`` is a built-in name (``uac``, ``uas`` ...) or the name/path of an XML file.
    ``remote`` is ``HOST:PORT`` for client scenarios. ``variables`` become ``-set NAME VALUE``
    (use them in XML as ``[$NAME]``); ``keys`` become ``-key NAME VALUE`` (``[NAME]``).

    The XML scenarios here use three keys, always passed: ``user`` (our user part, default
    ``sipp``), ``domain`` (host part of From/To/Request-URI, default ``remote``) and
    ``contact`` (our Contact URI, default ``sip:USER@HOST:PORT;transport=...``);
    ``expires`` is passed too for the REGISTER scenarios. The callee's user part is ``service``.
    """

    def __init__(
        self,
        workdir: Path,
        scenario: str | Path,
        remote: str | None = None,
        *,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        transport: str = "udp",
        calls: int | None = None,
        rate: float | None = None,
        rate_period_ms: int | None = None,
        limit: int | None = None,
        call_duration_ms: int | None = None,
        service: str | None = None,
        user: str = "sipp",
        domain: str | None = None,
        contact: str | None = None,
        expires: int = 3600,
        rtp_echo: bool = False,
        auth_user: str | None = None,
        auth_password: str | None = None,
        variables: Mapping[str, str] | None = None,
        keys: Mapping[str, str] | None = None,
        timeout: float | None = None,
        recv_timeout_ms: int | None = 15000,
        trace_msg: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"sipp transport must be one of {sorted(TRANSPORTS)} (no TLS build)")
        self.scenario = scenario
        self.name = name or (Path(scenario).stem if not _is_builtin(scenario) else str(scenario))
        self.workdir = workdir / f"sipp-{self.name}-{next(_run_numbers)}"
        self.remote = remote
        self.host = host
        self.transport = transport
        self.port = port or free_port(host, udp=True, tcp=True)
        self.control_port = free_port(host, udp=True, tcp=False)
        # -rtp_echo binds the media port and the next ones (video at +2)
        self.media_port = free_port_range(4, host, udp=True, tcp=False)
        self.calls, self.rate, self.rate_period_ms, self.limit = calls, rate, rate_period_ms, limit
        self.call_duration_ms = call_duration_ms
        self.service = service
        self.user = user
        self.domain = domain or remote or f"{host}:{self.port}"
        self.contact = contact or f"sip:{user}@{host}:{self.port};transport={transport}"
        self.expires = expires
        self.rtp_echo = rtp_echo
        self.auth_user, self.auth_password = auth_user, auth_password
        self.variables = dict(variables or {})
        self.keys = dict(keys or {})
        self.timeout = timeout
        self.recv_timeout_ms = recv_timeout_ms
        self.trace_msg = trace_msg
        self.extra_args = list(extra_args)
        self.stat_path = self.workdir / "stat.csv"
        self.error_path = self.workdir / "errors.log"
        self.message_path = self.workdir / "messages.log"
        self.log_path = self.workdir / "sipp.out"
        self._process: ManagedProcess | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def uri_host(self) -> str:
        """``HOST:PORT`` of this sipp's SIP socket (its Contact)."""
        return f"{self.host}:{self.port}"

    def argv(self) -> list[str]:
        binary = sipp_binary()
        if binary is None:
            raise PeerError("sipp not installed (Debian package sip-tester)")
        argv = [binary]
        if self.remote:
            argv.append(self.remote)
        if _is_builtin(self.scenario):
            argv += ["-sn", str(self.scenario)]
        else:
            path = Path(self.scenario)
            argv += ["-sf", str(path if path.is_absolute() else scenario_path(str(path)))]
            argv += SCENARIO_ARGS.get(path.stem, [])
        argv += ["-i", self.host, "-p", str(self.port), "-t", TRANSPORTS[self.transport]]
        argv += ["-cp", str(self.control_port), "-mi", self.host, "-mp", str(self.media_port)]
        argv += ["-nostdin", "-trace_stat", "-stf", str(self.stat_path), "-fd", "1"]
        argv += ["-trace_err", "-error_file", str(self.error_path)]
        if self.trace_msg:
            argv += ["-trace_msg", "-message_file", str(self.message_path)]
        if self.calls is not None:
            argv += ["-m", str(self.calls)]
        if self.rate is not None:
            argv += ["-r", f"{self.rate:g}"]
        if self.rate_period_ms is not None:
            argv += ["-rp", f"{self.rate_period_ms}ms"]
        if self.limit is not None:
            argv += ["-l", str(self.limit)]
        if self.call_duration_ms is not None:
            argv += ["-d", str(self.call_duration_ms)]
        if self.service is not None:
            argv += ["-s", self.service]
        if self.auth_user is not None or self.auth_password is not None:
            argv += ["-au", self.auth_user or self.user]
        if self.auth_password is not None:
            argv += ["-ap", self.auth_password]
        for k, v in self.variables.items():
            argv += ["-set", k, v]
        if self.rtp_echo:
            argv.append("-rtp_echo")
        keys = {"user": self.user, "domain": self.domain, "contact": self.contact}
        keys["expires"] = str(self.expires)
        for k, v in {**keys, **self.keys}.items():
            argv += ["-key", k, v]
        if self.recv_timeout_ms is not None:
            # an expected message that never comes fails the call instead of hanging it
            argv += ["-recv_timeout", str(self.recv_timeout_ms)]
        if self.timeout is not None:
            argv += ["-timeout", f"{int(self.timeout)}s", "-timeout_error"]
        return argv + self.extra_args

    def start(self, ready_timeout: float = 5.0) -> Sipp:
        """Start sipp; a server scenario (no ``remote``) is waited for until it listens."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._process = ManagedProcess(f"sipp {self.name}", self.argv(), self.log_path)
        self._process.start()
        if self.remote:
            return self  # a client sends at once; its result tells how it went
        proc = self._process
        if self.transport == "tcp":
            proc.wait_ready(lambda: tcp_accepts(self.host, self.port), ready_timeout, "TCP listen")
        else:
            proc.wait_ready(
                lambda: not is_free(self.port, self.host, udp=True, tcp=False),
                ready_timeout,
                "UDP socket bound",
            )
        return self

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def wait(self, timeout: float = 60.0) -> SippResult:
        """Wait for sipp to exit by itself (``calls`` reached or ``timeout`` option)."""
        if self._process is None or self._process.proc is None:
            raise PeerError("sipp not started")
        try:
            self._process.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise self._process.fail(f"did not exit within {timeout:.0f}s") from None
        return self.result()

    def stop(self, grace: float = 10.0) -> SippResult:
        """Soft exit (SIGUSR1: no new calls, finish running ones), then SIGTERM."""
        if self._process is not None and self._process.running():
            proc = self._process.proc
            assert proc is not None
            proc.send_signal(signal.SIGUSR1)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            self._process.stop()
        return self.result()

    def run(self, timeout: float = 60.0) -> SippResult:
        """Start, wait for exit, return the result."""
        self.start()
        return self.wait(timeout)

    def __enter__(self) -> Sipp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.running():
            self.stop(grace=2.0)

    def result(self) -> SippResult:
        stats = read_stats(self.stat_path)

        def num(key: str) -> int:
            try:
                return int(float(stats.get(key, "0") or 0))
            except ValueError:
                return 0

        errors = self.error_path.read_text(errors="replace") if self.error_path.exists() else ""
        return SippResult(
            returncode=self._process.returncode if self._process else None,
            successful=num("SuccessfulCall(C)"),
            failed=num("FailedCall(C)"),
            created=num("TotalCallCreated"),
            retransmissions=num("Retransmissions(C)"),
            stats=stats,
            errors=errors,
            log_path=self.log_path,
        )

    def messages(self) -> str:
        """The -trace_msg log: every SIP message sipp sent and received."""
        if not self.message_path.exists():
            return ""
        return self.message_path.read_text(errors="replace")

    def traced(self, direction: str | None = None) -> list[TracedMessage]:
        """Messages from the -trace_msg log, optionally only ``sent`` or ``received``."""
        msgs = parse_trace(self.messages())
        return [m for m in msgs if direction is None or m.direction == direction]


def _is_builtin(scenario: str | Path) -> bool:
    return isinstance(scenario, str) and scenario in BUILTIN


def read_stats(path: Path) -> dict[str, str]:
    """Last row of a sipp ``-trace_stat`` CSV (``;``-separated, header first) as a dict."""
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    rows = [r for r in rows if r]
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return dict(zip(header, last, strict=False))


@dataclass(frozen=True)
class TracedMessage:
    """One SIP message from sipp's -trace_msg log."""

    direction: str  # "sent" or "received"
    transport: str  # "UDP", "TCP"
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    def headers(self, name: str) -> list[str]:
        """Values of header ``name`` (each line; comma-separated values not split)."""
        head = self.text.split("\n\n", 1)[0]
        out = []
        for line in head.splitlines()[1:]:
            k, sep, v = line.partition(":")
            if sep and k.strip().lower() == name.lower():
                out.append(v.strip())
        return out


def parse_trace(text: str) -> list[TracedMessage]:
    """Split a sipp -trace_msg log into messages (sipp's "Unexpected ..." copies skipped)."""
    out = []
    for block in re.split(r"(?m)^-{20,}.*\n", text):
        first, _, rest = block.partition("\n")
        m = re.match(r"(UDP|TCP|TLS|SCTP) message (sent|received)", first.strip())
        if not m:
            continue
        body = rest.lstrip("\n").replace("\r\n", "\n").rstrip() + "\n"
        out.append(TracedMessage(m.group(2), m.group(1), body))
    return out
