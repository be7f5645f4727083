"""Kamailio 5.6 as an in-memory registrar and proxy with digest authentication.

The config is ``tests/peers/kamailio/kamailio.cfg``; this module copies it into a work
directory together with the generated ``users.cfg`` (htable of passwords) and ``tls.cfg``,
then runs ``kamailio -DD -E`` (foreground, log to stderr) listening on UDP+TCP (same port)
and TLS on 127.0.0.1.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from tests.peers.certs import TestPki, make_pki
from tests.peers.ports import free_port
from tests.peers.probe import probe_in_netns
from tests.peers.process import (
    PeerError,
    TlsPeer,
    in_netns,
    remove_socket_dir,
    short_socket_dir,
)

CONFIG_DIR = Path(__file__).parent / "kamailio"
ALGORITHMS = ("MD5", "SHA-256")
DEFAULT_USERS: Mapping[str, str] = {
    "alice": "alice-secret-1",
    "bob": "bob-secret-2",
    "carol": "carol-secret-3",
}
_SAFE = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@%-]*$")


def kamailio_binary() -> str | None:
    return shutil.which("kamailio")


def _cfg_string(value: str, what: str) -> str:
    if not _SAFE.match(value):
        raise ValueError(f"{what} {value!r}: only URI-safe characters are allowed")
    return f'"{value}"'


class Kamailio(TlsPeer):
    """A Kamailio registrar/proxy on loopback (or in a network namespace: ``netns``).

    Users and passwords are given as a mapping (default :data:`DEFAULT_USERS`).
    REGISTER is challenged with 401 (a wrong password: 401 again), initial requests from a
    known user with 407; ``algorithm`` "MD5" or "SHA-256" (one per instance: the auth
    module's global parameter). UDP and TCP share ``port``; TLS is on ``tls_port`` with a
    certificate from a throw-away CA (``ca_file``). ``natping_interval`` makes nathelper send
    OPTIONS keepalives (UDP contacts only) to NATed contacts, or to all with ``natping_all``.
    ``stun`` loads stun.so: STUN Binding requests on the UDP port are answered (the RFC 5626
    §4.4.2 keepalive).
    """

    label = "Kamailio"

    def __init__(
        self,
        workdir: Path,
        *,
        domain: str = "example.org",
        realm: str | None = None,
        users: Mapping[str, str] | None = None,
        algorithm: str = "MD5",
        tls: bool = True,
        min_expires: int = 1,
        fr_timer_ms: int = 5000,
        fr_inv_timer_ms: int = 60000,
        natping_interval: int | None = None,
        natping_all: bool = False,
        stun: bool = False,
        host: str = "127.0.0.1",
        port: int | None = None,
        tls_port: int | None = None,
        extra_defines: Mapping[str, str] | None = None,
        netns: str | None = None,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}")
        self.workdir = workdir
        self.host = host
        self.domain = domain
        self.realm = realm or domain
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        self.algorithm = algorithm
        self.tls = tls
        self.min_expires = min_expires
        self.fr_timer_ms, self.fr_inv_timer_ms = fr_timer_ms, fr_inv_timer_ms
        self.natping_interval = natping_interval
        self.natping_all = natping_all
        self.stun = stun  # answer STUN Binding requests on the UDP port (RFC 5626 §4.4.2)
        self.extra_defines = dict(extra_defines or {})
        self.netns = netns  # run inside this network namespace (ip netns exec)
        if netns is None:
            self.port = port or free_port(host, udp=True, tcp=True)
            self.tls_port = (tls_port or free_port(host, udp=False, tcp=True)) if tls else None
        else:  # a fresh namespace has every port free
            self.port = port or 5060
            self.tls_port = (tls_port or 5061) if tls else None
        self.secret = secrets.token_hex(12)
        self.pki: TestPki | None = None
        self.cfg_path = workdir / "kamailio.cfg"
        self.ctl_socket = workdir / "ctl" / "kamailio_ctl"  # a short path is made by start()
        self.log_path = workdir / "kamailio.log"

    # ---- addresses -------------------------------------------------------------------
    @property
    def udp_port(self) -> int:
        return self.port

    @property
    def tcp_port(self) -> int:
        return self.port

    def address(self, transport: str = "udp") -> tuple[str, int]:
        """(host, port) for ``udp``, ``tcp`` or ``tls``."""
        if transport.lower() == "tls":
            if self.tls_port is None:
                raise PeerError("Kamailio started without TLS")
            return self.host, self.tls_port
        return self.host, self.port

    def server(self, transport: str = "udp") -> str:
        """``HOST:PORT`` for the CLI's ``--server``."""
        host, port = self.address(transport)
        return f"{host}:{port}"

    def uri(self, user: str | None = None) -> str:
        return f"sip:{user}@{self.domain}" if user else f"sip:{self.domain}"

    # ---- configuration ---------------------------------------------------------------
    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CONFIG_DIR / "kamailio.cfg", self.cfg_path)
        lines = [
            "# generated by tests/peers/kamailio.py: user => password",
            "event_route[htable:mod-init] {",
        ]
        for user, password in self.users.items():
            lines.append(
                f"\t$sht(users=>{_cfg_string(user, 'user')[1:-1]}) = "
                f"{_cfg_string(password, 'password')};"
            )
        lines.append("}")
        (self.workdir / "users.cfg").write_text("\n".join(lines) + "\n")
        if self.tls and self.pki is None:
            names = ["127.0.0.1", "localhost"]
            if self.host not in names:
                names.insert(0, self.host)
            if self.domain not in names:
                names.append(self.domain)
            self.pki = make_pki(self.workdir / "pki", names)
        if self.pki is not None:
            (self.workdir / "tls.cfg").write_text(
                "[server:default]\n"
                "method = TLSv1.2+\n"
                "verify_certificate = no\n"
                "require_certificate = no\n"
                f"private_key = {self.pki.key_file}\n"
                f"certificate = {self.pki.cert_file}\n"
                "\n[client:default]\n"
                "method = TLSv1.2+\n"
                "verify_certificate = no\n"
                "require_certificate = no\n"
            )

    def argv(self) -> list[str]:
        binary = kamailio_binary()
        if binary is None:
            raise PeerError("kamailio not installed")
        defines = {
            "DOMAIN": _cfg_string(self.domain, "domain"),
            "REALM": _cfg_string(self.realm, "realm"),
            "AUTH_SECRET": f'"{self.secret}"',
            "AUTH_ALGORITHM": f'"{self.algorithm}"',
            "MIN_EXPIRES": str(self.min_expires),
            "FR_TIMER": str(self.fr_timer_ms),
            "FR_INV_TIMER": str(self.fr_inv_timer_ms),
            "CTL_SOCKET": f'"unix:{self.ctl_socket}"',
            **self.extra_defines,
        }
        argv = [binary, "-DD", "-E", "-f", str(self.cfg_path), "-P", str(self.workdir / "pid")]
        argv += ["-w", str(self.workdir), "-Y", str(self.workdir), "-m", "32", "-M", "8"]
        argv += ["-l", f"udp:{self.host}:{self.port}", "-l", f"tcp:{self.host}:{self.port}"]
        if self.tls:
            argv += ["-l", f"tls:{self.host}:{self.tls_port}", "-A", "WITH_TLS"]
            defines["TLS_CONFIG"] = f'"{self.workdir / "tls.cfg"}"'
        if self.natping_interval is not None:
            argv += ["-A", "WITH_NATPING"]
            defines["NATPING_INTERVAL"] = str(self.natping_interval)
            defines["NATPING_NATED_ONLY"] = "0" if self.natping_all else "1"
        if self.stun:
            argv += ["-A", "WITH_STUN"]
        for name, value in defines.items():
            argv += ["-A", f"{name}={value}"]
        return in_netns(self.netns, argv)

    def check_config(self) -> None:
        """``kamailio -c``: raise with its output when the config does not parse."""
        self._write_config()
        res = subprocess.run([*self.argv(), "-c"], capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise PeerError(f"kamailio -c failed:\n{res.stdout}\n{res.stderr}")

    # ---- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        self._write_config()
        self.ctl_socket = short_socket_dir(self.workdir, "ctl") / "kamailio_ctl"
        what = "SIP OPTIONS answered on UDP, TCP, TLS"
        self._launch("kamailio", self.argv(), self._answers, timeout, what, cwd=self.workdir)

    def _answers(self) -> bool:
        if not probe_in_netns(self.netns, "tcp", self.host, self.port):
            return False
        if self.tls_port is not None and not probe_in_netns(
            self.netns, "tcp", self.host, self.tls_port
        ):
            return False
        return probe_in_netns(self.netns, "sip-options", self.host, self.port, self.uri())

    def stop(self) -> None:
        # Kamailio stopped right after it started sometimes ignores SIGTERM (its handlers are
        # not set up yet); it normally exits in well under a second, so escalate to SIGKILL
        # (of its whole process group) after 1.5 s instead of the default 5 s.
        if self._process is not None:
            self._process.stop(timeout=1.5)
            remove_socket_dir(self.workdir, self.ctl_socket.parent)

    def restart(self, down_time: float = 0.0) -> None:
        """Stop and start again on the same ports, with the same nonce secret and users.

        Registrations are kept in memory only, so they are lost (clients must re-register).
        """
        import time

        self.stop()
        if down_time:
            time.sleep(down_time)
        self.start()

    # ---- inspection ------------------------------------------------------------------
    def log_mark(self) -> int:
        """An offset into :meth:`log`, to look only at what is logged after it."""
        return len(self.log())

    def log_since(self, mark: int) -> str:
        return self.log()[mark:]

    def rpc(self, *args: str, timeout: float = 10.0) -> str:
        """Run a kamcmd RPC (e.g. ``rpc("ul.dump")``) and return its output."""
        kamcmd = shutil.which("kamcmd")
        if kamcmd is None:
            raise PeerError("kamcmd not installed")
        res = subprocess.run(
            [kamcmd, "-s", f"unix:{self.ctl_socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if res.returncode != 0:
            raise PeerError(f"kamcmd {' '.join(args)} failed: {res.stdout}{res.stderr}")
        return res.stdout

    def contacts(self, user: str) -> list[str]:
        """Contact URIs currently registered for ``user`` (empty when none)."""
        try:
            out = self.rpc("ul.lookup", "location", user)
        except PeerError as e:
            if "Not Found" in str(e) or "AOR not found" in str(e):
                return []
            raise
        return re.findall(r"Address:\s*(\S+)", out)

    def add_contact(self, user: str, contact: str, expires: int = 60) -> None:
        """Register ``contact`` for ``user`` directly in usrloc (no REGISTER needed)."""
        # table, AOR, contact, expires, q (a float), path ('.': none), flags, cflags, methods
        self.rpc("ul.add", "location", user, contact, str(expires), "1.0", ".", "0", "0",
                 "4294967295")  # fmt: skip

    def add_user(self, user: str, password: str) -> None:
        """Add or change a user's password at run time (htable RPC); kept across restart()."""
        _cfg_string(user, "user")
        _cfg_string(password, "password")
        self.rpc("htable.sets", "users", user, password)
        self.users[user] = password
