"""coturn (``turnserver``) as a STUN/TURN server on loopback or in a network namespace.

Runs without a config file (``-n``), in the foreground, logging to stdout. Long-term
credentials (``--lt-cred-mech``) with users given by the fixture, a private SQLite userdb in
the work directory. With ``alt_host`` (default 127.0.0.2) it listens on two addresses and
two ports, which enables RFC 5780 NAT behaviour discovery (OTHER-ADDRESS, CHANGE-REQUEST).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.peers.certs import TestPki, make_pki
from tests.peers.ports import free_port_range, is_free, release_port_range
from tests.peers.probe import probe_in_netns
from tests.peers.process import PeerError, TlsPeer, in_netns

DEFAULT_TURN_USERS: Mapping[str, str] = {"test": "test", "alice": "alice-turn-1"}


def turnserver_binary() -> str | None:
    return shutil.which("turnserver")


class Coturn(TlsPeer):
    """A coturn server. ``port`` is the STUN/TURN UDP+TCP port, ``port + 1`` the RFC 5780
    alternate port; ``tls_port`` (TURN over TLS) and ``tls_port + 1`` likewise."""

    label = "coturn"

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        alt_host: str | None = "127.0.0.2",
        relay_ip: str | None = None,
        external_ip: str | None = None,
        users: Mapping[str, str] | None = None,
        realm: str = "example.org",
        tls: bool = True,
        port: int | None = None,
        tls_port: int | None = None,
        relay_port_count: int = 200,
        min_port: int | None = None,
        netns: str | None = None,
        allow_loopback_peers: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.host = host
        self.alt_host = alt_host
        self.relay_ip = relay_ip or host
        self.external_ip = external_ip
        self.users: dict[str, str] = dict(DEFAULT_TURN_USERS if users is None else users)
        self.realm = realm
        self.tls = tls
        self.netns = netns
        self.allow_loopback_peers = allow_loopback_peers
        self.extra_args = list(extra_args)
        hosts = [h for h in (host, alt_host) if h]
        if netns is None:
            self.port = port or _free_pair(hosts, tcp=True)
            self.tls_port = (tls_port or _free_pair(hosts, tcp=True, udp=False)) if tls else None
            self.min_port = min_port or free_port_range(relay_port_count, self.relay_ip, udp=True)
            self._relay_range: tuple[int, int] | None = (
                None if min_port else (self.min_port, relay_port_count)
            )
        else:  # a fresh namespace has every port free
            self.port = port or 3478
            self.tls_port = (tls_port or 5349) if tls else None
            self.min_port = min_port or 49152
            self._relay_range = None
        self.max_port = self.min_port + relay_port_count - 1
        self.pki: TestPki | None = None
        self.log_path = workdir / "turnserver.log"

    # ---- addresses -------------------------------------------------------------------
    @property
    def stun_address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def alt_address(self) -> tuple[str, int] | None:
        """The RFC 5780 alternate address (other IP, other port)."""
        return (self.alt_host, self.port + 1) if self.alt_host else None

    def turn_address(self, transport: str = "udp") -> tuple[str, int]:
        if transport == "tls":
            if self.tls_port is None:
                raise PeerError("coturn started without TLS")
            return self.host, self.tls_port
        return self.host, self.port

    def server(self, transport: str = "udp") -> str:
        """``HOST:PORT`` for ``--stun`` / ``--turn``."""
        host, port = self.turn_address(transport)
        return f"{host}:{port}"

    @property
    def relay_range(self) -> tuple[int, int]:
        return self.min_port, self.max_port

    # ---- lifecycle -------------------------------------------------------------------
    def argv(self) -> list[str]:
        binary = turnserver_binary()
        if binary is None:
            raise PeerError("turnserver not installed (Debian package coturn)")
        argv = [binary, "-n", f"--listening-ip={self.host}"]
        if self.alt_host:
            argv.append(f"--listening-ip={self.alt_host}")
            argv.append(f"--alt-listening-port={self.port + 1}")
        else:
            argv.append("--no-rfc5780")
        argv += [f"--relay-ip={self.relay_ip}", f"--listening-port={self.port}"]
        if self.external_ip:
            argv.append(f"--external-ip={self.external_ip}")
        argv += [f"--min-port={self.min_port}", f"--max-port={self.max_port}"]
        argv += ["--lt-cred-mech", f"--realm={self.realm}", "--fingerprint"]
        for user, password in self.users.items():
            argv.append(f"--user={user}:{password}")
        if self.allow_loopback_peers:
            argv.append("--allow-loopback-peers")
        argv += ["--no-dtls", "--no-cli", "--no-multicast-peers"]
        argv += [f"--userdb={self.workdir / 'turndb'}", f"--pidfile={self.workdir / 'pid'}"]
        argv += ["--log-file=stdout", "--simple-log", "--log-binding", "-v"]
        if self.tls and self.pki is not None:
            argv += [f"--tls-listening-port={self.tls_port}"]
            if self.alt_host:
                argv.append(f"--alt-tls-listening-port={(self.tls_port or 0) + 1}")
            argv += [f"--cert={self.pki.cert_file}", f"--pkey={self.pki.key_file}"]
        else:
            argv.append("--no-tls")
        argv += self.extra_args
        return in_netns(self.netns, argv)

    def start(self, timeout: float = 15.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.tls and self.pki is None:
            names = [self.host, "localhost"] + ([self.alt_host] if self.alt_host else [])
            if self.external_ip:
                names.append(self.external_ip)
            self.pki = make_pki(self.workdir / "pki", list(dict.fromkeys(names)))
        self._launch("turnserver", self.argv(), self._ready, timeout, "STUN Binding answered")

    def _ready(self) -> bool:
        if not probe_in_netns(self.netns, "stun", self.host, self.port):
            return False
        if self.tls_port is not None:
            return probe_in_netns(self.netns, "tcp", self.host, self.tls_port)
        return True

    def stop(self, release: bool = True) -> None:
        """Stop coturn and (unless ``release`` is False) give its relay port range back."""
        super().stop()
        if release and self._relay_range is not None:
            release_port_range(*self._relay_range)
            self._relay_range = None

    def close(self) -> None:
        self.stop()

    def restart(self) -> None:
        self.stop(release=False)
        self.start()


def _free_pair(hosts: Sequence[str], tcp: bool, udp: bool = True) -> int:
    """A port P with P and P+1 free on every host (listening + RFC 5780 alternate port)."""
    for _ in range(50):
        base = free_port_range(2, hosts[0], udp=udp, tcp=tcp)
        if all(is_free(p, h, udp, tcp) for h in hosts[1:] for p in (base, base + 1)):
            return base
    raise PeerError(f"no free port pair on {hosts}")
