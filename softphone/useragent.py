"""Build a SIP user agent (``sip.aio.AsyncUserAgent``) for an :class:`~softphone.config.Account`,
and what ICE needs from the account.

The account's ``server`` is the registrar and outbound proxy (a preloaded ``Route`` with ``;lr``,
RFC 3261 §8.1.2), located per RFC 3263 by the ``sip`` package; the account's domain is the
``@DOMAIN`` of its user, else the server's host (shared/DESIGN.md). :func:`gather_config`
resolves its STUN/TURN servers; :func:`start_candidate_pool` keeps candidate sets gathered
ahead of incoming calls (``ice.pool``), gathered again when the machine's addresses change
(``ice.netmonitor``: Wi-Fi to Ethernet, a VPN, a new DHCP lease); the pool's ``monitor`` is
there for a call to follow the same changes, and for the user agent
(:func:`follow_address_changes`): it registers again from its new address before the calls
restart ICE, so their re-INVITEs carry the new Contact.

The user agent registers with a stable RFC 5626 §4.1 instance-id (:func:`instance_id`): a
name-based UUID of this device (``/etc/machine-id``, else a random id kept in
``$XDG_STATE_HOME/softphone/device-id``, created once) and the account's AOR, so the
registrar sees the same instance after a restart and replaces its old binding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from ipaddress import ip_address
from pathlib import Path

from ice.gather import GatherConfig, TurnServer
from ice.netmonitor import AddressChange, AddressMonitor
from ice.pool import CandidatePool
from sip.aio import AsyncUserAgent
from sip.registration import instance_id_for
from sip.transport import TlsConfig
from sip.ua import UAConfig, usable_local_host
from softphone.config import Account, ConfigError, HostPort

DEFAULT_BIND = "0.0.0.0"
STUN_PORT = 3478
#: ICE components of a pooled candidate set: RTP and RTCP (an rtcp-mux call drops the second).
POOL_COMPONENTS = 2

log = logging.getLogger("softphone.useragent")

#: Where the machine id is read (systemd's machine-id(5); D-Bus's older copy).
MACHINE_ID_PATHS = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
DEVICE_ID_FILE = "device-id"


def state_dir() -> Path:
    """``$XDG_STATE_HOME/softphone`` (default ``~/.local/state/softphone``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "softphone"


def _read_id(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return text or None


def device_id(
    machine_id_paths: Sequence[Path] | None = None, directory: Path | None = None
) -> str | None:
    """A stable id of this device: the machine id if readable (``machine_id_paths``, default
    :data:`MACHINE_ID_PATHS`), else a per-user random id in ``directory`` (default
    :func:`state_dir`), created once (exclusive create, so two processes starting together
    agree). None when neither can be had."""
    paths = MACHINE_ID_PATHS if machine_id_paths is None else machine_id_paths
    for path in paths:
        found = _read_id(path)
        if found is not None:
            return found
    folder = directory if directory is not None else state_dir()
    path = folder / DEVICE_ID_FILE
    found = _read_id(path)
    if found is not None:
        return found
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_id(path)  # another process created it just now
    except OSError as exc:
        log.warning("no device id (%s): a random instance-id this time", exc)
        return None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(uuid.uuid4().hex + "\n")
    return _read_id(path)


def instance_id(aor: str, device: str | None = None) -> str:
    """The RFC 5626 §4.1 ``+sip.instance`` URN for ``aor`` on this device (``device``:
    :func:`device_id` by default): the same URN at every start; random without a device id."""
    device = device if device is not None else device_id()
    if device is None:
        return instance_id_for()
    return instance_id_for(f"{device} {aor}")


def server_uri(account: Account) -> str | None:
    """The outbound proxy URI of the account's server: ``sip:127.0.0.1:5060;transport=tcp;lr``."""
    if account.server is None:
        return None
    scheme = "sips" if account.transport == "tls" else "sip"
    transport = "" if account.transport == "udp" else f";transport={account.transport}"
    return f"{scheme}:{account.server}{transport};lr"


def ua_config(account: Account) -> UAConfig:
    """The ``sip`` core's settings for this account."""
    if not account.user:
        raise ConfigError("no user: give --user USER[@DOMAIN] or set user in the config file")
    domain = account.aor_domain
    if not domain:
        raise ConfigError("no domain: give --user USER@DOMAIN or --server HOST")
    bind = account.bind
    # an IPv6 reference in brackets (RFC 3261 §25.1), whether the user wrote them or not
    host = f"[{domain}]" if ":" in domain and not domain.startswith("[") else domain
    return UAConfig(
        user=account.user,
        domain=host,
        local_host=bind.host if bind else DEFAULT_BIND,
        local_port=bind.port if bind and bind.port is not None else 0,
        transport=account.transport,
        outbound_proxy=server_uri(account),
        auth_user=account.auth_user,
        password=account.password,
        instance_id=instance_id(f"sip:{account.user}@{host}"),
    )


def make_user_agent(account: Account) -> AsyncUserAgent:
    """An unstarted user agent for the account; ``await ua.start()`` opens its sockets."""
    tls = TlsConfig(cafile=account.ca_file) if account.transport == "tls" else None
    return AsyncUserAgent(ua_config(account), tls=tls)


def listen_transports(account: Account) -> tuple[str, ...]:
    """Where we listen: UDP and TCP always; a TLS client needs no TLS listener (it reuses its
    outgoing connection for incoming requests, RFC 3261 §18)."""
    return ("UDP", "TCP")


async def resolve_server(server: HostPort) -> tuple[str, int]:
    """A STUN/TURN server's IP address and port (default 3478, RFC 8489 §18.9), by the
    system resolver off the event loop; OSError when the name does not resolve."""
    port = server.port or STUN_PORT
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(server.host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {server.host}")
    host, resolved_port = infos[0][4][:2]
    return str(host), int(resolved_port)


async def gather_config(account: Account, components: int = 1) -> GatherConfig:
    """What ICE gathers for the account: its STUN and TURN servers (resolved)."""
    stun: list[tuple[str, int]] = []
    turn: list[TurnServer] = []
    if account.stun is not None:
        stun.append(await resolve_server(account.stun))
    if account.turn is not None:
        server = await resolve_server(account.turn)
        turn.append(TurnServer(server, account.turn_user or "", account.turn_password or ""))
    return GatherConfig(stun_servers=stun, turn_servers=turn, components=components)


#: The progress line once a network change made the candidate pool gather again.
NETWORK_CHANGED = "network changed: candidate pool re-gathered"


def describe_changes(changes: Sequence[AddressChange]) -> str:
    """``+198.51.100.7 -198.51.100.5``: the addresses that came and went."""
    return " ".join(f"{'+' if c.added else '-'}{c.host}" for c in changes)


#: The progress line once the user agent moved to a new address (followed by its Contact).
REREGISTERED = "network changed: re-registered as"


#: After a change that took our SIP address away without giving a route from another one
#: (a DHCP client may add the route a moment after the address; routes are not reported),
#: look again after these waits (s), sooner on the next change.
RETRY_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


class AddressFollower:
    """Makes ``ua`` follow the local address changes ``monitor`` reports: on each batch,
    ``await ua.address_changed()`` (``sip.aio``: new Via/Contact, a REGISTER from the new
    address removing the old binding, TCP/TLS flows from the old address closed, dialogs'
    Contact for their next re-INVITE), then ``progress`` gets
    ``"network changed: re-registered as <contact>"`` (or what happened instead).

    Subscribe before the calls do (:func:`follow_address_changes` right after the monitor
    starts): the monitor calls its listeners in order, the user agent takes its new address
    at once while a call's ICE restart waits ``MediaOptions.network_settle``, so the
    restart's re-INVITE already carries the new Contact. Batches arriving while one is
    being handled are handled once more afterwards. While our address is gone and nothing
    routes toward the proxy yet, it looks again after :data:`RETRY_WAITS`. :meth:`close`
    unsubscribes."""

    def __init__(
        self,
        ua: AsyncUserAgent,
        monitor: AddressMonitor,
        progress: Callable[[str], None] | None = None,
        retry_waits: Sequence[float] = RETRY_WAITS,
    ) -> None:
        self.ua = ua
        self.monitor = monitor
        self.progress = progress
        self.retry_waits = tuple(retry_waits)
        #: how many times the user agent moved to a new address
        self.moves = 0
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._wake = asyncio.Event()
        self._remove: Callable[[], None] | None = monitor.add_listener(self._changed)

    def _changed(self, changes: Sequence[AddressChange]) -> None:
        if self._remove is None:
            return
        if self._task is not None and not self._task.done():
            self._again = True
            self._wake.set()
            return
        self._task = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        retries = 0
        while self._remove is not None:
            self._again = False
            self._wake.clear()
            try:
                moved = await self.ua.address_changed()
            except Exception:  # never let a listener die: the next change tries again
                log.exception("following a local address change")
                moved = False
            if moved:
                self.moves += 1
                self._report()
            if self._again:
                continue
            if moved or not self._stranded() or retries >= len(self.retry_waits):
                return
            with contextlib.suppress(TimeoutError):  # a new batch wakes us sooner
                await asyncio.wait_for(self._wake.wait(), self.retry_waits[retries])
            retries += 1

    def _stranded(self) -> bool:
        """Our SIP address is not one of the machine's any more (and we did not move)."""
        host = self.ua.config.local_host
        if not usable_local_host(host):
            return False
        try:
            ours = ip_address(host.strip("[]"))
        except ValueError:
            return False
        return all(change.address != ours for change in self.monitor.addresses())

    def _report(self) -> None:
        contact = self.ua.contact
        core = self.ua.ua
        if not core.registrations:
            line = f"network changed: SIP now at {contact}"
        elif self.ua.registered is not None and not core.recovering:
            line = f"{REREGISTERED} {contact}"
        else:
            line = f"network changed: registering as {contact} (no answer yet)"
        log.info("%s: %s", self.ua.config.aor, line)
        if self.progress is not None:
            self.progress(line)

    def close(self) -> None:
        remove, self._remove = self._remove, None
        if remove is not None:
            remove()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()


def follow_address_changes(
    ua: AsyncUserAgent,
    monitor: AddressMonitor | None,
    progress: Callable[[str], None] | None = None,
) -> AddressFollower | None:
    """``ua`` follows ``monitor`` (see :class:`AddressFollower`); None without a monitor
    (no rtnetlink: changes go unnoticed). Close it before the user agent."""
    if monitor is None:
        return None
    return AddressFollower(ua, monitor, progress)


def start_address_monitor() -> AddressMonitor | None:
    """A started :class:`ice.netmonitor.AddressMonitor`, or None where the system has no
    rtnetlink (not Linux) or refuses the socket (then network changes go unnoticed)."""
    monitor = AddressMonitor()
    try:
        monitor.start()
    except OSError as exc:
        log.warning("network changes will not be noticed: %s", exc)
        return None
    return monitor


async def start_candidate_pool(
    account: Account, progress: Callable[[str], None] | None = None
) -> CandidatePool | None:
    """The account's pool of pre-gathered candidate sets (``candidate_pool`` sets, RTP and
    RTCP components, TURN allocations kept alive), filling in the background, so that an
    incoming call is answered without gathering on the call path (as pjsua does at start-up,
    or WebRTC's ``iceCandidatePoolSize``). None without ICE or with ``candidate_pool = 0``.

    The pool watches the local addresses (``pool.monitor``, an
    :class:`ice.netmonitor.AddressMonitor`, None where there is no rtnetlink): when one it
    gathers on comes or goes, its sets are gathered again and, once the first is ready,
    ``progress`` gets :data:`NETWORK_CHANGED` with the addresses. A call may subscribe to
    ``pool.monitor`` too. Close the pool with ``await pool.close()`` (TURN deallocations; the
    monitor is closed with it)."""
    if not account.ice or account.candidate_pool < 1:
        return None
    try:
        config = await gather_config(account, POOL_COMPONENTS)
    except OSError as exc:
        log.warning("no candidate pool: %s", exc)
        return None
    bind = account.bind.host if account.bind else None
    monitor = start_address_monitor()
    pool = CandidatePool(
        config, size=account.candidate_pool, bind=bind, monitor=monitor, close_monitor=True
    )

    def regathered(changes: Sequence[AddressChange]) -> None:
        line = f"{NETWORK_CHANGED} ({describe_changes(changes)})"
        log.info("%s: %s", account.name, line)
        if progress is not None:
            progress(line)

    pool.on_regathered = regathered
    try:
        await pool.start()
    except BaseException:
        await pool.close()
        raise
    return pool
