"""``softphone call`` and ``softphone answer`` (the command-line contract of shared/DESIGN.md).

``call URI [--play SRC] [--record SINK] [--duration S] [--dtmf DIGITS]``: a URI without a host
(``call bob``) is completed with the account's domain; with ``--server`` we register and the
server is the outbound proxy, without it the INVITE goes straight to the URI's host (peer to
peer). ``answer [--auto] [--count N] ...`` waits for calls (registering when a server is
given), answers them at once with ``--auto`` (else rings and waits for Enter), and stops after
``N`` calls. Both exit 0 only when every call was answered and audio flowed both ways.

The ``--json`` report has the DESIGN.md sections ``call``, ``ice`` (None without ICE) and
``rtp`` of the (last) call; ``answer`` adds ``answer: {calls, succeeded}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ice.pool import CandidatePool
from sip.aio import AsyncCall, AsyncUserAgent, RegistrationError
from softphone.call import Call, CallFailed, MediaOptions, warm_up
from softphone.config import Account, ConfigError
from softphone.report import Reporter
from softphone.useragent import (
    follow_address_changes,
    listen_transports,
    make_user_agent,
    start_address_monitor,
    start_candidate_pool,
)

__all__ = ["complete_uri", "peer_account", "run_answer", "run_call"]

EXIT_OK, EXIT_FAILED = 0, 1
#: How long ``answer`` waits for its first pre-gathered candidate set before it says it is
#: waiting for calls (a call before that gathers as usual).
POOL_READY_WAIT = 3.0


def complete_uri(uri: str, account: Account) -> str:
    """``bob`` -> ``sip:bob@DOMAIN``; ``bob@host`` -> ``sip:bob@host``; SIP URIs stay."""
    text = uri.strip()
    if not text:
        raise ConfigError("empty URI")
    lower = text.lower()
    if lower.startswith(("sip:", "sips:")):
        scheme, rest = text.split(":", 1)
        if "@" in rest or not account.aor_domain:
            return text
        # sip:bob -> sip:bob@domain (a URI without a host part)
        if _looks_like_host(rest):
            return text
        return f"{scheme}:{rest}@{account.aor_domain}"
    if "@" in text:
        return f"sip:{text}"
    if not account.aor_domain:
        raise ConfigError(f"{uri!r} has no host and the account has no domain: give USER@HOST")
    return f"sip:{text}@{account.aor_domain}"


def _looks_like_host(text: str) -> bool:
    host = text.split(";", 1)[0]
    return host.startswith("[") or "." in host or ":" in host or host == "localhost"


def peer_account(account: Account) -> Account:
    """The account with a user and domain to put in From/Contact even without a config:
    peer-to-peer calls need no address of record, only a name."""
    changes: dict[str, Any] = {}
    if not account.user:
        try:
            changes["user"] = getpass.getuser() or "softphone"
        except (KeyError, OSError):
            changes["user"] = "softphone"
    if not account.aor_domain:
        bind = account.bind
        changes["domain"] = (
            bind.host if bind is not None and bind.host not in ("0.0.0.0", "::") else "localhost"
        )
    return replace(account, **changes) if changes else account


def _media_options(args: argparse.Namespace, account: Account) -> MediaOptions:
    from media.sources import parse_sink, parse_source

    try:
        source = parse_source(args.play)
        parse_sink(args.record)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if source.path is not None and not source.path.is_file():
        raise ConfigError(f"--play {args.play}: no such file")
    if args.duration is not None and args.duration <= 0:
        raise ConfigError("--duration must be positive")
    return MediaOptions(
        play=args.play,
        record=args.record,
        input_device=account.input_device,
        output_device=account.output_device,
    )


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def _start_ua(account: Account, reporter: Reporter) -> AsyncUserAgent:
    """Open the SIP sockets and register when there is a server; closes what it opened and
    re-raises on failure (RegistrationError, OSError, TimeoutError)."""
    ua = make_user_agent(account)
    if "timer" not in ua.config.supported:  # session timers when the peer asks (RFC 4028)
        ua.config.supported = (*ua.config.supported, "timer")
    try:
        await ua.start(transports=listen_transports(account))
        reporter.progress(
            f"{ua.config.aor} listening on {ua.config.local_host}:{ua.config.local_port}"
        )
        if account.server is not None:
            reporter.progress(f"registering via {account.server}")
            reg = await ua.register()
            reporter.progress(f"registered for {reg.expires} s")
    except BaseException:
        await ua.close(timeout=1.0)
        raise
    return ua


async def _close_ua(ua: AsyncUserAgent, account: Account) -> None:
    if account.server is not None and ua.registered is not None:
        with contextlib.suppress(RegistrationError, TimeoutError):
            await ua.unregister(timeout=5.0)
    await ua.close()


async def _start_pool(account: Account, reporter: Reporter) -> CandidatePool | None:
    """The candidate pool of a phone waiting for calls (``candidate_pool`` in the account):
    calls are answered without gathering. Waits a little for the first set, so the phone
    says it is waiting for calls when it can answer at once. After a network change the pool
    gathers again and says so ("network changed: candidate pool re-gathered")."""
    pool = await start_candidate_pool(account, reporter.progress)
    if pool is not None:
        with contextlib.suppress(TimeoutError, RuntimeError):
            await pool.wait_ready(1, timeout=POOL_READY_WAIT)
        reporter.progress(f"candidate pool: {pool.ready} of {pool.size} sets ready")
    return pool


def _fill_report(reporter: Reporter, call: Call) -> None:
    for name, section in call.report().items():
        if section is None:
            reporter.data[name] = None
        else:
            reporter.section(name).update(section)


async def run_call(account: Account, args: argparse.Namespace, reporter: Reporter) -> int:
    """``softphone call``; returns the exit status."""
    account = peer_account(account)
    target = complete_uri(args.uri, account)
    options = _media_options(args, account)
    stop = asyncio.Event()
    with _stop_on_signals(stop):
        try:
            ua = await _start_ua(account, reporter)
        except RegistrationError as exc:
            reporter.section("call").update(sip_status=exc.status, end_reason="not-registered")
            reporter.progress(f"registration failed: {exc.status} {exc.reason}")
            return EXIT_FAILED
        except (OSError, TimeoutError) as exc:
            reporter.section("call").update(sip_status=None, end_reason="failed")
            reporter.progress(f"cannot start: {exc}")
            return EXIT_FAILED
        warm_up(account.codecs)  # not on the call path
        # local address changes: the call restarts ICE when its addresses go (softphone.call)
        monitor = start_address_monitor()
        # ... and the user agent registers from the new address first (its listener runs
        # before the call's), so the restart's re-INVITE carries the new Contact
        follower = follow_address_changes(ua, monitor, reporter.progress)
        call = Call(ua, account, options, progress=reporter.progress, monitor=monitor)
        try:
            dial = asyncio.ensure_future(call.dial(target))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({dial, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not dial.done():
                reporter.progress("interrupted")
                dial.cancel()
                with contextlib.suppress(asyncio.CancelledError, CallFailed):
                    await dial
                call.end_reason = call.end_reason or "interrupted"
            else:
                try:
                    dial.result()
                except CallFailed as exc:
                    reporter.progress(f"call failed: {exc.reason}")
                else:
                    await call.run(args.duration, args.dtmf, stop)
        finally:
            _fill_report(reporter, call)
            if follower is not None:
                follower.close()
            if monitor is not None:
                monitor.close()
            await _close_ua(ua, account)
    return EXIT_OK if call.succeeded else EXIT_FAILED


async def run_answer(account: Account, args: argparse.Namespace, reporter: Reporter) -> int:
    """``softphone answer``; returns the exit status."""
    account = peer_account(account)
    options = _media_options(args, account)
    if args.count is not None and args.count < 1:
        raise ConfigError("--count must be at least 1")
    stop = asyncio.Event()
    handled = succeeded = 0
    with _stop_on_signals(stop):
        try:
            ua = await _start_ua(account, reporter)
        except RegistrationError as exc:
            reporter.progress(f"registration failed: {exc.status} {exc.reason}")
            reporter.section("answer").update(calls=0, succeeded=0, registered=False)
            return EXIT_FAILED
        except (OSError, TimeoutError) as exc:
            reporter.progress(f"cannot start: {exc}")
            reporter.section("answer").update(calls=0, succeeded=0)
            return EXIT_FAILED
        warm_up(account.codecs)  # not on the call path
        pool = await _start_pool(account, reporter)
        # the calls follow local address changes through the pool's monitor, else this one
        monitor = start_address_monitor() if pool is None else None
        # the user agent follows them too (re-registers from a new address), ahead of calls
        follower = follow_address_changes(
            ua, pool.monitor if pool is not None else monitor, reporter.progress
        )
        reporter.progress("waiting for calls" + ("" if args.auto else "; Enter answers"))
        try:
            while args.count is None or handled < args.count:
                incoming = await _next_incoming(ua, stop)
                if incoming is None:
                    break
                reporter.progress(f"incoming call from {incoming.call.remote_uri}")
                if not args.auto and not await _wait_for_key(incoming, stop, reporter):
                    continue
                handled += 1
                call = Call(
                    ua, account, options, progress=reporter.progress, pool=pool, monitor=monitor
                )
                refuse = _refuse_others(ua, incoming)
                try:
                    await call.accept(incoming)
                    await call.run(args.duration, None, stop)
                except CallFailed as exc:
                    reporter.progress(f"call failed: {exc.reason}")
                finally:
                    refuse()
                    _fill_report(reporter, call)
                if call.succeeded:
                    succeeded += 1
                if stop.is_set():
                    break
        finally:
            reporter.section("answer").update(calls=handled, succeeded=succeeded)
            if follower is not None:
                follower.close()
            if pool is not None:
                await pool.close()  # its TURN allocations and its monitor too
            if monitor is not None:
                monitor.close()
            await _close_ua(ua, account)
    ok = handled > 0 and succeeded == handled
    if args.count is not None:
        ok = ok and handled == args.count
    return EXIT_OK if ok else EXIT_FAILED


async def _next_incoming(ua: AsyncUserAgent, stop: asyncio.Event) -> AsyncCall | None:
    """The next incoming call still waiting for an answer, or None when told to stop."""
    while not stop.is_set():
        getter = asyncio.ensure_future(ua.incoming.get())
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if getter not in done:
            getter.cancel()
            return None
        incoming = getter.result()
        if not incoming.ended.done():
            return incoming
    return None


def _refuse_others(ua: AsyncUserAgent, current: AsyncCall) -> Any:
    """While a call is up, further calls get 486 Busy Here; returns the undo function."""

    def busy(other: AsyncCall) -> None:
        if other is not current:
            other.reject(486)

    ua.on_incoming = busy
    # calls queued meanwhile are handled by _next_incoming (they see 486 already)

    def undo() -> None:
        ua.on_incoming = None

    return undo


async def _wait_for_key(incoming: AsyncCall, stop: asyncio.Event, reporter: Reporter) -> bool:
    """Ring (180) and wait for Enter on stdin; False when the caller gave up first."""
    incoming.ring()
    reporter.progress("ringing; press Enter to answer")
    key = _read_stdin()
    ended = asyncio.ensure_future(asyncio.shield(incoming.ended))
    stopper = asyncio.ensure_future(stop.wait())
    waits: set[asyncio.Future[Any]] = {key, ended, stopper}
    answer = False
    while waits and not answer:
        done, waits = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if ended in done or stopper in done:
            break
        if key in done:
            if key.result():  # a line: answer
                answer = True
            else:  # end of input: no key will ever come; ring until the caller gives up
                reporter.progress("no input to answer from (end of file); --auto answers")
    ended.cancel()
    stopper.cancel()
    key.cancel()
    if answer and not incoming.ended.done():
        return True
    if not incoming.ended.done():
        incoming.reject(480)
    reporter.progress("the caller gave up" if incoming.ended.done() else "not answered")
    return False


def _read_stdin() -> asyncio.Future[str]:
    """What the user types next on stdin ("" at end of input, or when stdin cannot be
    watched, e.g. /dev/null). No thread: nothing is left blocked in read() at exit."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        fut.set_result("")
        return fut

    def ready() -> None:
        loop.remove_reader(fd)
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not fut.done():
            fut.set_result(data.decode(errors="replace"))

    try:
        loop.add_reader(fd, ready)
    except (OSError, ValueError, NotImplementedError):
        fut.set_result("")
        return fut
    fut.add_done_callback(lambda _: loop.remove_reader(fd))
    return fut
