"""Build a SIP user agent (``sip.aio.AsyncUserAgent``) for an :class:`~softphone.config.Account`.

The account's ``server`` is the registrar and outbound proxy (a preloaded ``Route`` with ``;lr``,
RFC 3261 §8.1.2), located per RFC 3263 by the ``sip`` package; the account's domain is the
``@DOMAIN`` of its user, else the server's host (shared/DESIGN.md).
"""

from __future__ import annotations

from sip.aio import AsyncUserAgent
from sip.transport import TlsConfig
from sip.ua import UAConfig
from softphone.config import Account, ConfigError

DEFAULT_BIND = "0.0.0.0"


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
    return UAConfig(
        user=account.user,
        domain=domain if ":" not in domain else f"[{domain}]",
        local_host=bind.host if bind else DEFAULT_BIND,
        local_port=bind.port if bind and bind.port is not None else 0,
        transport=account.transport,
        outbound_proxy=server_uri(account),
        auth_user=account.auth_user,
        password=account.password,
    )


def make_user_agent(account: Account) -> AsyncUserAgent:
    """An unstarted user agent for the account; ``await ua.start()`` opens its sockets."""
    tls = TlsConfig(cafile=account.ca_file) if account.transport == "tls" else None
    return AsyncUserAgent(ua_config(account), tls=tls)


def listen_transports(account: Account) -> tuple[str, ...]:
    """Where we listen: UDP and TCP always; a TLS client needs no TLS listener (it reuses its
    outgoing connection for incoming requests, RFC 3261 §18)."""
    return ("UDP", "TCP")
