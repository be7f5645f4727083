"""Helpers shared by the call tests.

In process: user agents on 127.0.0.1 (alice and bob, UDP), softphone :class:`Call` set-up
(account, media options, bob answering), what a user agent put on the wire, and waiting for a
condition; sipp as the far end. As users run it: ``softphone`` CLI processes (a caller, an
answerer) and their JSON reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sip.aio import AsyncCall, AsyncUserAgent
from sip.message import Request, Response
from sip.ua import UAConfig
from softphone.call import Call, CallFailed, MediaOptions
from softphone.config import Account, HostPort
from tests.helpers_net import wait_until
from tests.peers.ports import free_port
from tests.peers.sipp import Sipp, SippResult

LOOPBACK = HostPort("127.0.0.1", 0)
CALLER_TONE, CALLEE_TONE = "tone:440", "tone:660"


# --- in process: user agents and softphone calls on 127.0.0.1 ------------------------------


def loopback_account(**changes: Any) -> Account:
    """An account bound to 127.0.0.1 (any port), with ``changes`` (``ice=False``, codecs ...)."""
    return Account(bind=LOOPBACK, **changes)


def media_options(tone: str = CALLER_TONE, record: str = "none", **changes: Any) -> MediaOptions:
    """Play ``tone``, record to ``record`` (nothing by default), ICE and the answer given 5 s;
    with ``changes``."""
    return MediaOptions(play=tone, record=record, ice_timeout=5.0, answer_timeout=5.0, **changes)


def sip_uri(ua: AsyncUserAgent) -> str:
    """The URI a user agent on 127.0.0.1 is called at (``sip:USER@127.0.0.1:PORT``)."""
    return f"sip:{ua.config.user}@127.0.0.1:{ua.config.local_port}"


@asynccontextmanager
async def started_ua(user: str, **config: Any) -> AsyncIterator[AsyncUserAgent]:
    """A user agent ``user@127.0.0.1`` on a free UDP port (``config``: more UAConfig fields),
    closed on the way out."""
    ua = AsyncUserAgent(UAConfig(user=user, domain="127.0.0.1", local_port=0, **config))
    await ua.start("127.0.0.1", 0, transports=("UDP",))
    try:
        yield ua
    finally:
        await ua.close(timeout=1.0)


@dataclass
class Pair:
    """alice's and bob's user agents."""

    alice: AsyncUserAgent
    bob: AsyncUserAgent

    @property
    def bob_uri(self) -> str:
        return sip_uri(self.bob)

    def calls(self, **account: Any) -> tuple[Call, Call]:
        """alice's call (playing 440 Hz) and bob's (660 Hz), both with ``account`` changes."""
        return (
            Call(self.alice, loopback_account(**account), media_options(CALLER_TONE)),
            Call(self.bob, loopback_account(**account), media_options(CALLEE_TONE)),
        )

    async def answered(self, alice: Call, bob: Call) -> None:
        """bob answers every call with ``bob``; alice dials him and is answered."""
        self.bob.on_incoming = bob.accept
        await alice.dial(self.bob_uri)

    async def ringing(self, alice: Call) -> tuple[asyncio.Future[None], AsyncCall]:
        """alice dials bob: her dialling (still going on) and bob's incoming call."""
        dialing = asyncio.ensure_future(alice.dial(self.bob_uri))
        incoming: AsyncCall = await asyncio.wait_for(self.bob.incoming.get(), 5)
        return dialing, incoming

    async def connected(self, alice: Call, bob: Call) -> tuple[Call, Call]:
        """alice's call dials bob, his call ``bob`` accepts the incoming call, and alice is
        answered: the two calls, up."""
        dialing, incoming = await self.ringing(alice)
        await bob.accept(incoming)
        await asyncio.wait_for(dialing, 5)
        return alice, bob


@asynccontextmanager
async def started_pair(**bob_config: Any) -> AsyncIterator[Pair]:
    """alice's and bob's user agents (``bob_config``: more of bob's UAConfig fields)."""
    async with AsyncExitStack() as stack:
        alice = await stack.enter_async_context(started_ua("alice"))
        bob = await stack.enter_async_context(started_ua("bob", **bob_config))
        yield Pair(alice, bob)


class Callee:
    """Bob's side: each incoming call on ``ua`` is accepted by a new softphone :class:`Call`
    (kept in ``calls``, its progress lines in ``lines``); ``accepted`` is set once it is
    answered or has failed (the failure in ``error``)."""

    def __init__(
        self, ua: AsyncUserAgent, account: Account, options: MediaOptions | None = None
    ) -> None:
        self.options = options or media_options(CALLEE_TONE)
        self.calls: list[Call] = []
        self.error: CallFailed | None = None
        self.accepted = asyncio.Event()
        self.lines: list[str] = []
        self._ua, self._account = ua, account
        ua.on_incoming = self._incoming

    @property
    def call(self) -> Call | None:
        """The last call accepted (or being accepted)."""
        return self.calls[-1] if self.calls else None

    async def _incoming(self, incoming: AsyncCall) -> None:
        call = Call(self._ua, self._account, self.options, progress=self.lines.append)
        self.calls.append(call)
        try:
            await call.accept(incoming)
        except CallFailed as exc:
            self.error = exc
        self.accepted.set()

    async def dialled_by(self, caller: Call) -> Call:
        """``caller`` dials bob and is answered: bob's call."""
        await caller.dial(sip_uri(self._ua))
        await asyncio.wait_for(self.accepted.wait(), 5)
        assert self.error is None, self.error
        return self.calls[0]


@asynccontextmanager
async def hung_up(*calls: Call | Callee) -> AsyncIterator[None]:
    """On the way out (after a failure too), hang up every call (and callee's call) that has
    not ended."""
    try:
        yield
    finally:
        for item in calls:
            for call in item.calls if isinstance(item, Callee) else [item]:
                if not call.end_reason:
                    await call.hangup()


class Wire:
    """Every SIP message a user agent sends, recorded (what is on the wire)."""

    def __init__(self, ua: AsyncUserAgent) -> None:
        self.sent: list[Request | Response] = []
        core = ua.ua
        original = core.messages_to_send

        def tapped() -> Any:
            out = original()
            self.sent.extend(o.message for o in out)
            return out

        core.messages_to_send = tapped  # type: ignore[method-assign]

    def requests(self, method: str) -> list[Request]:
        return [m for m in self.sent if isinstance(m, Request) and m.method == method]

    def responses(self, status: int) -> list[Response]:
        return [m for m in self.sent if isinstance(m, Response) and m.status == status]


def packets_received(call: Call) -> int:
    """The RTP packets ``call`` has received so far (all its sessions; 0 before its media)."""
    stats = call.stats
    return 0 if stats is None else stats.packets_received


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait (polling) until ``predicate`` is true; assert it is after ``timeout`` seconds (a
    generous bound for "it happens", never a timing under test)."""
    await wait_until(predicate, timeout)
    assert predicate(), "condition not met in time"


# --- against sipp ---------------------------------------------------------------------------


def sipp_calling(
    sipp_factory: Callable[..., Sipp], ua: AsyncUserAgent, scenario: Path, **options: Any
) -> Sipp:
    """sipp, started, making one call with ``scenario`` to the user agent ``ua`` and echoing
    the RTP it gets (``options``: more of :class:`Sipp`'s)."""
    remote = f"127.0.0.1:{ua.config.local_port}"
    sipp = sipp_factory(scenario, remote, calls=1, service=ua.config.user, rtp_echo=True, **options)
    sipp.start()
    return sipp


async def sipp_succeeded(sipp: Sipp, timeout: float = 20.0) -> SippResult:
    """Wait (in a thread) for sipp's end: it ran its one call successfully."""
    result = await asyncio.to_thread(sipp.wait, timeout)
    assert result.ok and result.successful == 1, result.describe()
    return result


# --- as users run it: softphone processes ---------------------------------------------------


def softphone(*args: str) -> list[str]:
    """The command line of ``softphone ARGS`` (run by this interpreter)."""
    return [sys.executable, "-m", "softphone", *args]


def run_command(argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end, its stdout and stderr captured as text."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


class Process:
    """A child process whose output lines a thread collects (to wait for a line)."""

    def __init__(self, argv: list[str], *, merge_stdout: bool = False) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stdout else subprocess.PIPE,
            stdin=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        self.lines: list[str] = []
        stream = self.proc.stdout if merge_stdout else self.proc.stderr
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            if self.proc.poll() is not None:
                self._reader.join(2)
                return any(text in line for line in self.lines)
            time.sleep(0.05)
        return False

    def finish(self, timeout: float = 30.0) -> tuple[int, dict[str, Any], str]:
        """Wait for the end: exit status, the JSON report (stdout) and stderr."""
        assert self.proc.stdout is not None
        self.proc.wait(timeout)
        out = self.proc.stdout.read()
        self._reader.join(5)
        stderr = "".join(self.lines)
        assert out.strip(), stderr
        return self.proc.returncode, json.loads(out), stderr

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Answerer(Process):
    """A ``softphone ... answer`` process (progress lines on stderr, the report on stdout),
    called at ``uri`` (where known)."""

    def __init__(self, *args: str, uri: str = "") -> None:
        super().__init__(softphone(*args))
        self.uri = uri

    def wait_listening(self, timeout: float = 20.0) -> None:
        if not self.wait_for("waiting for calls", timeout):
            self.stop()
            raise AssertionError("answerer did not start:\n" + "".join(self.lines))


@contextmanager
def answering(*args: str) -> Iterator[Answerer]:
    """``softphone --json --bind 127.0.0.1:PORT ARGS`` (``ARGS``: options, then ``answer ...``)
    waiting for calls (at its ``uri``); killed on the way out if still running."""
    port = free_port()
    answerer = Answerer(
        "--json", "--bind", f"127.0.0.1:{port}", *args, uri=f"sip:bob@127.0.0.1:{port}"
    )
    try:
        answerer.wait_listening()
        yield answerer
    finally:
        answerer.stop()
