"""``softphone register``: register with the account's registrar (RFC 3261 §10) and stay
registered (the ``sip`` core refreshes before expiry and keeps NAT bindings open with RFC 5626
keepalives), or with ``--once`` register, report, unregister and exit.

Staying registered, it follows local address changes (``softphone.useragent.AddressFollower``):
after a move the registrar gets a REGISTER from the new address that removes the old binding
(RFC 3261 §10.2.2), so calls keep reaching this phone."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from sip.aio import RegistrationError
from sip.registration import Registered, RegistrationExpired, RegistrationFailed
from softphone.config import Account, ConfigError
from softphone.report import Reporter
from softphone.useragent import (
    follow_address_changes,
    listen_transports,
    make_user_agent,
    server_uri,
    start_address_monitor,
)

EXIT_OK, EXIT_FAILED = 0, 1


async def run_register(account: Account, once: bool, reporter: Reporter) -> int:
    """Run the command; returns the exit status (0 only if the registrar accepted us)."""
    if account.server is None:
        raise ConfigError("register needs a registrar: give --server HOST[:PORT]")
    ua = make_user_agent(account)
    report = reporter.section("register")
    report["aor"] = ua.config.aor
    report["registrar"] = server_uri(account)
    report["transport"] = account.transport
    try:
        await ua.start(transports=listen_transports(account))
        reporter.progress(
            f"registering {ua.config.aor} via {server_uri(account)} "
            f"from {ua.config.local_host}:{ua.config.local_port}"
        )
        try:
            reg = await ua.register()
        except RegistrationError as exc:
            report.update(status=exc.status, reason=exc.reason, registered=False)
            reporter.progress(f"registration failed: {exc.status} {exc.reason}")
            return EXIT_FAILED
        except TimeoutError:
            report.update(status=408, reason="no answer from the registrar", registered=False)
            reporter.progress("registration failed: no answer from the registrar")
            return EXIT_FAILED
        report.update(status=200, registered=True, expires=reg.expires, contacts=reg.contacts)
        reporter.progress(f"registered for {reg.expires} s; bindings: {', '.join(reg.contacts)}")
        if not once:
            await _stay_registered(ua, reporter, report)
        await ua.unregister()
        report["unregistered"] = True
        reporter.progress("unregistered")
        return EXIT_OK
    finally:
        await ua.close()


async def _stay_registered(ua: Any, reporter: Reporter, report: dict[str, Any]) -> None:
    """Wait for Ctrl-C or SIGTERM, reporting refreshes and failures as they happen."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    def on_event(ev: object) -> None:
        if isinstance(ev, Registered):
            report["expires"] = ev.expires
            reporter.progress(f"registration refreshed for {ev.expires} s")
        elif isinstance(ev, RegistrationFailed):
            report.update(status=ev.status, reason=ev.reason)
            reporter.progress(f"registration refresh failed: {ev.status} {ev.reason}")
        elif isinstance(ev, RegistrationExpired):
            reporter.progress("registration expired")

    ua.on_event = on_event
    monitor = start_address_monitor()
    follower = follow_address_changes(ua, monitor, reporter.progress)
    reporter.progress("staying registered; Ctrl-C to unregister and quit")
    try:
        await stop.wait()
    finally:
        if follower is not None:
            follower.close()
        if monitor is not None:
            monitor.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
