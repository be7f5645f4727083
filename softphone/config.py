"""Configuration: accounts, STUN/TURN servers, codecs and audio devices from a TOML file.

The file lives at ``$XDG_CONFIG_HOME/softphone/config.toml`` (by default
``~/.config/softphone/config.toml``) unless ``--config`` names another. Every setting can also be
given on the command line (shared/DESIGN.md); command-line values override the file. Passwords come
from an environment variable named in the file or on the command line (``password_env``), or from
the file itself (``password``), never from argv.

Example::

    default_account = "office"

    [accounts.office]
    server = "pbx.example.org"          # registrar and outbound proxy, located per RFC 3263
    user = "alice@example.org"          # address of record; the domain defaults to the server host
    auth_user = "alice"                 # digest user name, if not the user part
    password_env = "OFFICE_SIP_PASSWORD"
    transport = "udp"                   # udp | tcp | tls
    stun = "stun.example.org:3478"
    turn = "turn.example.org:3478"
    turn_user = "alice"
    turn_password_env = "TURN_PASSWORD"
    codecs = ["opus", "pcmu", "pcma"]
    ice_pacing_ms = 5                   # a=ice-pacing we propose (RFC 8839 §5.5); 0: none
    candidate_pool = 1                  # candidate sets gathered ahead of calls; 0: none
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

TRANSPORTS = ("udp", "tcp", "tls")
CODECS = ("opus", "pcmu", "pcma")


class ConfigError(ValueError):
    """A configuration file or option that cannot be used; the message says what and where."""


@dataclass(frozen=True)
class HostPort:
    """A ``HOST[:PORT]`` value; IPv6 literals in brackets (``[::1]:5060``)."""

    host: str
    port: int | None = None

    @classmethod
    def parse(cls, text: str, what: str = "address") -> HostPort:
        text = text.strip()
        if not text:
            raise ConfigError(f"empty {what}")
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ConfigError(f"bad {what} {text!r}: unclosed '['")
            host, rest = text[1:end], text[end + 1 :]
            if rest and not rest.startswith(":"):
                raise ConfigError(f"bad {what} {text!r}")
            port_text = rest[1:] if rest else ""
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        else:
            host, port_text = text, ""  # a bare host, or an IPv6 literal without a port
        port: int | None = None
        if port_text:
            if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
                raise ConfigError(f"bad port in {what} {text!r}")
            port = int(port_text)
        if not host:
            raise ConfigError(f"bad {what} {text!r}: no host")
        return cls(host, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(frozen=True)
class Account:
    """One SIP account with its NAT traversal and media preferences."""

    name: str = "default"
    server: HostPort | None = None
    user: str | None = None
    domain: str | None = None
    auth_user: str | None = None
    password: str | None = field(default=None, repr=False)
    transport: str = "udp"
    bind: HostPort | None = None
    stun: HostPort | None = None
    turn: HostPort | None = None
    turn_user: str | None = None
    turn_password: str | None = field(default=None, repr=False)
    codecs: tuple[str, ...] = CODECS
    ice: bool = True
    #: The ICE pacing (Ta, ms) we propose in ``a=ice-pacing`` (RFC 8839 §5.5): each side
    #: uses the larger of the two proposals, and 50 ms when the peer proposes none (RFC 8445
    #: §14.2), so two softphones check every 5 ms and other peers see the usual 50 ms.
    #: None (0 in the file): propose nothing.
    ice_pacing_ms: int | None = 5
    #: Candidate sets gathered ahead of calls (host, srflx, TURN allocations kept alive:
    #: ``ice.pool``), so a call answers without gathering; 0: gather per call.
    candidate_pool: int = 1
    input_device: str | None = None
    output_device: str | None = None
    ca_file: str | None = None

    @property
    def aor_domain(self) -> str | None:
        """The account's domain: the ``@DOMAIN`` of the user, else the server's host."""
        if self.domain:
            return self.domain
        return self.server.host if self.server else None

    @property
    def username(self) -> str | None:
        """The user part of the address of record."""
        return self.user

    @property
    def digest_user(self) -> str | None:
        return self.auth_user or self.user


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "softphone" / "config.toml"


def _env_password(var: str, where: str) -> str:
    value = os.environ.get(var)
    if value is None:
        raise ConfigError(f"{where}: environment variable {var} is not set")
    return value


def _split_user(user: str) -> tuple[str, str | None]:
    if user.startswith(("sip:", "sips:")):
        user = user.split(":", 1)[1]
    if "@" in user:
        name, domain = user.rsplit("@", 1)
        return name, domain or None
    return user, None


_STRING_KEYS = {
    "server", "user", "auth_user", "password", "password_env", "transport", "bind", "stun",
    "turn", "turn_user", "turn_password", "turn_password_env", "input_device", "output_device",
    "ca_file",
}  # fmt: skip


def account_from_table(name: str, table: dict[str, Any]) -> Account:
    """Build an :class:`Account` from one ``[accounts.NAME]`` table, with clear errors."""
    where = f"account {name!r}"
    known = _STRING_KEYS | {"codecs", "ice", "ice_pacing_ms", "candidate_pool"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    for key in _STRING_KEYS & set(table):
        if not isinstance(table[key], str):
            raise ConfigError(f"{where}: {key} must be a string")
    return apply_overrides(Account(name=name), where=where, **table)


def apply_overrides(account: Account, where: str = "command line", **values: Any) -> Account:
    """Return ``account`` with the given settings (None means "not given") applied and checked."""
    changes: dict[str, Any] = {}
    for key in ("server", "bind", "stun", "turn"):
        if values.get(key) is not None:
            changes[key] = HostPort.parse(values[key], f"{where}: {key}")
    if values.get("user") is not None:
        user, domain = _split_user(values["user"])
        if not user:
            raise ConfigError(f"{where}: empty user")
        changes["user"], changes["domain"] = user, domain
    if values.get("transport") is not None:
        transport = values["transport"].lower()
        if transport not in TRANSPORTS:
            raise ConfigError(f"{where}: transport must be one of {', '.join(TRANSPORTS)}")
        changes["transport"] = transport
    for key in ("auth_user", "turn_user", "input_device", "output_device", "ca_file", "password"):
        if values.get(key) is not None:
            changes[key] = values[key]
    if values.get("turn_password") is not None:
        changes["turn_password"] = values["turn_password"]
    if values.get("password_env") is not None:
        changes["password"] = _env_password(values["password_env"], where)
    if values.get("turn_password_env") is not None:
        changes["turn_password"] = _env_password(values["turn_password_env"], where)
    codecs = values.get("codecs")
    if codecs is not None:
        if isinstance(codecs, str):
            codecs = [c for c in codecs.split(",") if c.strip()]
        if not isinstance(codecs, list) or not codecs:
            raise ConfigError(f"{where}: codecs must be a non-empty list such as opus,pcmu,pcma")
        names = tuple(str(c).strip().lower() for c in codecs)
        bad = [c for c in names if c not in CODECS]
        if bad:
            raise ConfigError(f"{where}: unknown codec(s) {', '.join(bad)}; known: opus,pcmu,pcma")
        changes["codecs"] = names
    if values.get("ice") is not None:
        if not isinstance(values["ice"], bool):
            raise ConfigError(f"{where}: ice must be true or false")
        changes["ice"] = values["ice"]
    for key, top in (("ice_pacing_ms", 10000), ("candidate_pool", 8)):
        value = values.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise ConfigError(f"{where}: {key} must be a whole number from 0 to {top}")
        changes[key] = value
    if changes.get("ice_pacing_ms") == 0:
        changes["ice_pacing_ms"] = None
    return replace(account, **changes)


@dataclass
class Config:
    """A loaded configuration file: its accounts by name and the default one."""

    accounts: dict[str, Account] = field(default_factory=dict)
    default_account: str | None = None

    def account(self, name: str | None) -> Account:
        """The named account, the default one, the only one, or an empty account."""
        if name is not None:
            if name not in self.accounts:
                known = ", ".join(sorted(self.accounts)) or "none"
                raise ConfigError(f"no account {name!r} in the config (known: {known})")
            return self.accounts[name]
        if self.default_account:
            return self.accounts[self.default_account]
        if len(self.accounts) == 1:
            return next(iter(self.accounts.values()))
        return Account()


def load_config(path: Path | None = None, *, required: bool = False) -> Config:
    """Load a TOML config file. A missing default file is an empty config, not an error."""
    explicit = path is not None
    path = path or default_config_path()
    if not path.exists():
        if explicit or required:
            raise ConfigError(f"config file {path} does not exist")
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    unknown = sorted(set(data) - {"accounts", "default_account"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level setting(s) {', '.join(unknown)}")
    tables = data.get("accounts", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [accounts] must be a table of tables")
    accounts: dict[str, Account] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: accounts.{name} must be a table")
        try:
            accounts[name] = account_from_table(name, table)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    default = data.get("default_account")
    if default is not None and default not in accounts:
        raise ConfigError(f"{path}: default_account {default!r} is not an account")
    return Config(accounts, default)
