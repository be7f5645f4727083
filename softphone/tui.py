"""``softphone tui``: a full-screen phone (textual).

The screen shows the account and its registration state, a dialer (a SIP URI and a Call
button), a prompt for an incoming call (Answer / Reject), and the call in progress: its state
and timer, live send/receive level meters in dBFS, the codec, the ICE pair (candidate types and
addresses), and loss, jitter, round-trip time and MOS. Keys: ``a`` answer, ``r`` reject,
``h`` hang up, ``m`` mute, ``o`` hold, ``0``-``9`` ``*`` ``#`` DTMF (RFC 4733) during a call,
``n`` the next account for outgoing calls, ``q`` quit; Enter in the URI field dials.

The UI never touches SIP, ICE or media itself: it talks to a :class:`PhoneEngine` (a small
interface of commands and read-only snapshots, :class:`AccountView` and :class:`CallView`)
and redraws when the engine says something changed (and a few times a second for the timer
and the meters). :class:`SoftphoneEngine` is the real engine (``sip.aio`` user agent +
:class:`softphone.call.Call`); tests drive :class:`PhoneApp` with a fake one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Footer, Header, Input, RichLog, Static

from softphone.config import Account
from softphone.report import Reporter

if TYPE_CHECKING:
    from ice.netmonitor import AddressMonitor
    from ice.pool import CandidatePool

__all__ = [
    "AccountView",
    "CallState",
    "CallView",
    "LevelBar",
    "PhoneApp",
    "PhoneEngine",
    "SoftphoneEngine",
    "format_level",
    "run_tui",
]

log = logging.getLogger("softphone.tui")

EXIT_OK, EXIT_FAILED = 0, 1
METER_FLOOR_DB = -60.0
POOL_READY_WAIT = 10.0
"""Seconds the engine waits (in the background) for an account's first pooled candidate set
before it says how many are ready."""
DTMF_KEYS = "0123456789*#"


# == the interface between the UI and a call engine ==========================================


class CallState(enum.StrEnum):
    IDLE = "idle"
    CALLING = "calling"  # INVITE sent, no answer yet
    RINGING = "ringing"  # the far end rings (180)
    INCOMING = "incoming"  # someone calls us; answer or reject
    CONNECTING = "connecting"  # answered; ICE checks
    ACTIVE = "active"  # media flowing
    ENDED = "ended"


@dataclass(frozen=True)
class AccountView:
    """One account as the UI shows it."""

    name: str
    aor: str
    state: str  # "registered", "registering", "not registered", "failed", "peer-to-peer"
    detail: str = ""
    active: bool = False  # outgoing calls use this account


@dataclass(frozen=True)
class CallView:
    """A snapshot of the current call (or of none: ``state`` IDLE)."""

    state: CallState = CallState.IDLE
    remote: str = ""
    outgoing: bool = True
    connected_at: float | None = None  # time.monotonic() of the answer
    ended_at: float | None = None
    codec: str = ""
    ice_pair: str = ""  # "host/srflx" (local/remote candidate types)
    local_address: str = ""
    remote_address: str = ""
    send_dbfs: float = METER_FLOOR_DB
    receive_dbfs: float = METER_FLOOR_DB
    loss_percent: float = 0.0
    jitter_ms: float = 0.0
    rtt_ms: float | None = None
    mos: float | None = None
    muted: bool = False
    held: bool = False
    held_by_peer: bool = False
    end_reason: str | None = None
    dtmf_sent: str = ""

    def elapsed(self, now: float | None = None) -> float:
        if self.connected_at is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else (now or time.monotonic())
        return max(0.0, end - self.connected_at)


class PhoneEngine(Protocol):
    """What the UI needs from a phone. ``on_change`` (set by the UI) is called, in the event
    loop, whenever the views changed; ``on_log`` with a line for the event log."""

    on_change: Callable[[], None] | None
    on_log: Callable[[str], None] | None

    def accounts(self) -> list[AccountView]: ...

    def call_view(self) -> CallView: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def dial(self, uri: str) -> None:
        """Start an outgoing call (returns once it is under way or has failed)."""
        ...

    async def answer(self) -> None: ...

    async def reject(self) -> None: ...

    async def hangup(self) -> None: ...

    async def set_hold(self, on: bool) -> None: ...

    def next_account(self) -> None:
        """Select the next account for outgoing calls."""
        ...

    def set_mute(self, on: bool) -> None: ...

    def send_dtmf(self, digits: str) -> None: ...


# == widgets =================================================================================


def format_level(dbfs: float, width: int = 30, floor: float = METER_FLOOR_DB) -> str:
    """A text meter: ``███████░░░░░  -20.0 dBFS`` (``floor`` .. 0 dBFS over ``width``)."""
    clamped = min(0.0, max(floor, dbfs))
    filled = round(width * (clamped - floor) / -floor)
    shown = f"{dbfs:6.1f} dBFS" if dbfs > floor else "  silent  "
    return "█" * filled + "░" * (width - filled) + f" {shown}"


class LevelBar(Static):
    """A labelled dBFS meter."""

    def __init__(self, label: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label = label
        self.level = METER_FLOOR_DB

    def set_level(self, dbfs: float) -> None:
        self.level = dbfs
        text = format_level(dbfs)
        filled = text.count("█")
        color = "green" if dbfs < -12 else "yellow" if dbfs < -3 else "red"
        bar = f"[{color}]{text[:filled]}[/{color}][dim]{text[filled:]}[/dim]"
        self.update(f"{self.label:<8}{bar}")


# == the app =================================================================================


_STATE_TEXT = {
    CallState.IDLE: "no call",
    CallState.CALLING: "calling",
    CallState.RINGING: "ringing",
    CallState.INCOMING: "incoming call",
    CallState.CONNECTING: "connecting (ICE)",
    CallState.ACTIVE: "in call",
    CallState.ENDED: "call ended",
}

_IN_CALL = (CallState.CONNECTING, CallState.ACTIVE)


class PhoneApp(App[int]):
    """The full-screen phone; give it a :class:`PhoneEngine`."""

    TITLE = "softphone"
    CSS = """
    Screen { layout: vertical; }
    #top { height: auto; }
    .panel { border: round $primary; padding: 0 1; height: auto; }
    #accounts { width: 1fr; }
    #dialer { width: 2fr; }
    #dialer Horizontal { height: auto; }
    #uri { width: 1fr; }
    #incoming { border: heavy $warning; padding: 0 1; height: auto; }
    #incoming Horizontal { height: auto; }
    #incoming.hidden { display: none; }
    #call { height: auto; }
    #call-state { text-style: bold; }
    #log { height: 1fr; min-height: 4; border: round $secondary; }
    Button { margin: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "answer", "Answer"),
        Binding("r", "reject", "Reject"),
        Binding("h", "hangup", "Hang up"),
        Binding("m", "mute", "Mute"),
        Binding("o", "hold", "Hold"),
        Binding("n", "next_account", "Account"),
        Binding("q", "quit_phone", "Quit"),
        *[
            Binding(key, f"dtmf('{digit}')", "DTMF", show=False)
            for key, digit in [(d, d) for d in "0123456789"]
            + [("asterisk", "*"), ("number_sign", "#")]
        ],
    ]

    def __init__(
        self, engine: PhoneEngine, *, refresh_interval: float = 0.2, clock: bool = True
    ) -> None:
        super().__init__()
        self.engine = engine
        self.show_clock = clock
        #: the wall-clock stamp of log lines (replaceable, e.g. for reproducible screenshots)
        self.timestamp: Callable[[], str] = lambda: time.strftime("%H:%M:%S")
        #: the clock of the call timer (``CallView.connected_at`` is on this clock)
        self.now: Callable[[], float] = time.monotonic
        self.refresh_interval = refresh_interval
        self.view = CallView()
        self._last_state = CallState.IDLE

    # -- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(show_clock=self.show_clock)
        with Horizontal(id="top"):
            yield Static("", id="accounts", classes="panel")
            with Vertical(id="dialer", classes="panel"):
                yield Static("Dial a SIP URI (Enter calls)")
                with Horizontal():
                    yield Input(placeholder="sip:bob@example.org", id="uri")
                    yield Button("Call", id="call-button", variant="success")
                    yield Button("Hang up", id="hangup-button", variant="error")
        with Vertical(id="incoming", classes="hidden"):
            yield Static("", id="incoming-text")
            with Horizontal():
                yield Button("Answer (a)", id="answer-button", variant="success")
                yield Button("Reject (r)", id="reject-button", variant="error")
        with Vertical(id="call", classes="panel"):
            yield Static("no call", id="call-state")
            yield LevelBar("send", id="send-meter")
            yield LevelBar("receive", id="receive-meter")
            yield Static("", id="media")
            yield Static("", id="quality")
        yield RichLog(id="log", wrap=True, markup=False)
        yield Footer()

    async def on_mount(self) -> None:
        self.engine.on_change = self.refresh_view
        self.engine.on_log = self.log_line
        self.query_one("#send-meter", LevelBar).set_level(METER_FLOOR_DB)
        self.query_one("#receive-meter", LevelBar).set_level(METER_FLOOR_DB)
        self.set_interval(self.refresh_interval, self.refresh_view)
        self.refresh_view()
        self.run_worker(self._start_engine(), group="engine")

    async def _start_engine(self) -> None:
        try:
            await self.engine.start()
        except Exception as exc:  # shown to the user, the phone stays up for peer calls
            self.log_line(f"cannot start: {exc}")
        self.refresh_view()

    # -- drawing ------------------------------------------------------------------------------

    def log_line(self, text: str) -> None:
        stamp = self.timestamp()
        self.query_one("#log", RichLog).write(f"{stamp} {text}")

    def refresh_view(self) -> None:
        """Redraw everything from the engine's snapshots."""
        if not self.is_running:
            return
        view = self.engine.call_view()
        self.view = view
        accounts = self.engine.accounts()
        lines = ["[b]Accounts[/b]" + ("  (n: next)" if len(accounts) > 1 else "")]
        for acct in accounts:
            detail = f" ({acct.detail})" if acct.detail else ""
            mark = "▶ " if acct.active and len(accounts) > 1 else ""
            lines.append(f"{mark}{acct.name}: {acct.aor}\n  {acct.state}{detail}")
        self.query_one("#accounts", Static).update("\n".join(lines))
        incoming = self.query_one("#incoming")
        if view.state is CallState.INCOMING:
            self.query_one("#incoming-text", Static).update(
                f"[b]Incoming call[/b] from {view.remote}"
            )
            incoming.remove_class("hidden")
        else:
            incoming.add_class("hidden")
        self._draw_call(view)
        if view.state is not self._last_state:
            self._state_changed(view)

    def _state_changed(self, view: CallView) -> None:
        self._last_state = view.state
        if view.state in (CallState.INCOMING, *_IN_CALL, CallState.CALLING, CallState.RINGING):
            # keys (a/r/h/m/o/digits) reach the app, not the URI field
            self.set_focus(None)

    def _draw_call(self, view: CallView) -> None:
        state = _STATE_TEXT[view.state]
        parts = [state]
        if view.remote and view.state is not CallState.IDLE:
            parts.append(("to " if view.outgoing else "from ") + view.remote)
        if view.connected_at is not None:
            secs = int(view.elapsed(self.now()))
            parts.append(f"{secs // 60:02d}:{secs % 60:02d}")
        if view.muted:
            parts.append("[reverse] MUTED [/reverse]")
        if view.held:
            parts.append("[reverse] ON HOLD [/reverse]")
        if view.held_by_peer:
            parts.append("[reverse] HELD BY PEER [/reverse]")
        if view.state is CallState.ENDED and view.end_reason:
            parts.append(f"({view.end_reason})")
        self.query_one("#call-state", Static).update("  ".join(parts))
        active = view.state in _IN_CALL
        send = view.send_dbfs if active else METER_FLOOR_DB
        receive = view.receive_dbfs if active else METER_FLOOR_DB
        self.query_one("#send-meter", LevelBar).set_level(send)
        self.query_one("#receive-meter", LevelBar).set_level(receive)
        if view.codec or view.ice_pair:
            ice = f"ICE {view.ice_pair} " if view.ice_pair else "plain RTP "
            media = (
                f"codec {view.codec or '-'}   {ice}{view.local_address} <-> {view.remote_address}"
            )
        else:
            media = "codec -   ICE -"
        self.query_one("#media", Static).update(media)
        rtt = "-" if view.rtt_ms is None else f"{view.rtt_ms:.0f} ms"
        mos = "-" if view.mos is None else f"{view.mos:.2f}"
        dtmf = f"   DTMF sent {view.dtmf_sent}" if view.dtmf_sent else ""
        self.query_one("#quality", Static).update(
            f"loss {view.loss_percent:.1f}%   jitter {view.jitter_ms:.1f} ms   "
            f"RTT {rtt}   MOS {mos}{dtmf}"
        )

    # -- input --------------------------------------------------------------------------------

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "uri":
            await self.action_dial()

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {
            "call-button": self.action_dial,
            "hangup-button": self.action_hangup,
            "answer-button": self.action_answer,
            "reject-button": self.action_reject,
        }
        handler = actions.get(event.button.id or "")
        if handler is not None:
            await handler()

    async def action_dial(self) -> None:
        uri = self.query_one("#uri", Input).value.strip()
        if not uri:
            self.log_line("enter a SIP URI to call")
            return
        if self.view.state not in (CallState.IDLE, CallState.ENDED):
            self.log_line("already in a call")
            return
        self.log_line(f"calling {uri}")
        self.run_worker(self._guard(self.engine.dial(uri)), group="call")

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except Exception as exc:
            self.log_line(f"error: {exc}")
        self.refresh_view()

    async def action_answer(self) -> None:
        if self.view.state is CallState.INCOMING:
            self.run_worker(self._guard(self.engine.answer()), group="call")

    async def action_reject(self) -> None:
        if self.view.state is CallState.INCOMING:
            await self._guard(self.engine.reject())

    async def action_hangup(self) -> None:
        if self.view.state in (CallState.CALLING, CallState.RINGING, *_IN_CALL):
            await self._guard(self.engine.hangup())
        elif self.view.state is CallState.INCOMING:
            await self._guard(self.engine.reject())

    async def action_mute(self) -> None:
        if self.view.state in _IN_CALL:
            self.engine.set_mute(not self.view.muted)
            self.refresh_view()

    async def action_hold(self) -> None:
        if self.view.state in _IN_CALL:
            await self._guard(self.engine.set_hold(not self.view.held))

    async def action_next_account(self) -> None:
        if self.view.state in (CallState.IDLE, CallState.ENDED):
            self.engine.next_account()
            self.refresh_view()

    async def action_dtmf(self, digit: str) -> None:
        if self.view.state in _IN_CALL and digit in DTMF_KEYS:
            self.engine.send_dtmf(digit)
            self.refresh_view()

    async def action_quit_phone(self) -> None:
        self.exit(EXIT_OK)

    async def on_unmount(self) -> None:
        """Hang up and close the engine however the app ends."""
        with contextlib.suppress(Exception):
            if self.view.state in (CallState.CALLING, CallState.RINGING, *_IN_CALL):
                await self.engine.hangup()
        with contextlib.suppress(Exception):
            await self.engine.close()


# == the real engine: sip.aio + softphone.call ===============================================


@dataclass
class _Line:
    """One account with its user agent, registration state and candidate pool."""

    account: Account
    ua: Any = None
    registration: str = "not registered"
    detail: str = ""
    #: pre-gathered ICE candidate sets for this account's calls (None: gather per call)
    pool: CandidatePool | None = None


@dataclass
class _EngineState:
    view: CallView = field(default_factory=CallView)


class SoftphoneEngine:
    """The phone on real SIP user agents, one per account (``account`` first, then
    ``more_accounts``): each registers when it has a server; calls go out from the selected
    account (:meth:`next_account`) with :class:`softphone.call.Call`; one incoming call at a
    time is offered on any account (others get 486 Busy Here); hold re-offers sendonly
    (RFC 3264 §8.4). Each account with ICE keeps a :class:`ice.pool.CandidatePool`
    (``candidate_pool`` sets, started in the background while it registers) from which its
    calls, incoming and outgoing, take their candidates instead of gathering; :meth:`close`
    releases it (TURN allocations included)."""

    def __init__(
        self,
        account: Account,
        *,
        more_accounts: tuple[Account, ...] = (),
        play: str | None = None,
        record: str | None = None,
    ) -> None:
        from softphone.commands import peer_account

        self.lines = [_Line(peer_account(a)) for a in (account, *more_accounts)]
        for line in self.lines:
            line.registration = "registering" if line.account.server else "peer-to-peer"
        self.active = 0
        self.play = play
        self.record = record
        self.on_change: Callable[[], None] | None = None
        self.on_log: Callable[[str], None] | None = None
        self.call: Any = None
        self._incoming: Any = None
        self._incoming_line: _Line | None = None
        self._task: asyncio.Task[None] | None = None
        self._watchers: set[asyncio.Future[None]] = set()
        self._pool_starts: set[asyncio.Task[None]] = set()
        self._monitor: AddressMonitor | None = None  # for calls of lines without a pool
        self._monitor_tried = False
        self._followers: list[Any] = []  # user agents following address changes
        self._closed = False
        self._state = _EngineState()

    @property
    def account(self) -> Account:
        """The selected account (outgoing calls)."""
        return self.lines[self.active].account

    @property
    def ua(self) -> Any:
        """The selected account's user agent (None until it listens, and after close)."""
        return self.lines[self.active].ua

    # -- plumbing -----------------------------------------------------------------------------

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _call_monitor(self, pool: CandidatePool | None) -> AddressMonitor | None:
        """The address monitor a call follows network changes with: its pool's, else one the
        engine starts on first need (closed with the engine); None where there is none."""
        if pool is not None and pool.monitor is not None:
            return None  # the call takes the pool's
        if not self._monitor_tried and not self._closed:
            from softphone.useragent import start_address_monitor

            self._monitor_tried = True
            self._monitor = start_address_monitor()
        return self._monitor

    def _log(self, text: str) -> None:
        log.info("%s", text)
        if self.on_log is not None:
            self.on_log(text)

    def _set(self, **changes: Any) -> None:
        self._state.view = replace(self._state.view, **changes)
        self._changed()

    def _media_options(self, account: Account) -> Any:
        from softphone.call import MediaOptions

        play, record = self.play, self.record
        if play is None or record is None:
            try:
                from media.audio import list_devices

                devices = list_devices()
            except Exception:
                devices = []
            has_in = any(d.is_input for d in devices)
            has_out = any(d.is_output for d in devices)
            if play is None:
                play = "mic" if has_in else "tone:440"
            if record is None:
                record = "speaker" if has_out else "none"
            if not has_in or not has_out:
                self._log(
                    f"no audio device for some directions: playing {play}, recording {record}"
                )
        return MediaOptions(
            play=play,
            record=record,
            input_device=account.input_device,
            output_device=account.output_device,
        )

    # -- PhoneEngine --------------------------------------------------------------------------

    def accounts(self) -> list[AccountView]:
        out = []
        for i, line in enumerate(self.lines):
            acct = line.account
            aor = (
                line.ua.config.aor if line.ua is not None else f"sip:{acct.user}@{acct.aor_domain}"
            )
            out.append(
                AccountView(acct.name, aor, line.registration, line.detail, i == self.active)
            )
        return out

    def next_account(self) -> None:
        self.active = (self.active + 1) % len(self.lines)
        self._log(f"calls go out from {self.account.name}")
        self._changed()

    def call_view(self) -> CallView:
        view = self._state.view
        call = self.call
        if call is None or view.state not in (CallState.CONNECTING, CallState.ACTIVE):
            return view
        stream = call.stream
        changes: dict[str, Any] = {"held_by_peer": bool(call.on_hold)}
        if stream is not None:
            changes["send_dbfs"] = stream.sent_level.level
            changes["receive_dbfs"] = stream.played_level.level
            stats = stream.stats()
            changes.update(
                codec=call.remote.codec_name if call.remote else stats.codec,
                loss_percent=stats.loss_percent,
                jitter_ms=stats.jitter_ms,
                rtt_ms=stats.rtt_ms,
                mos=stats.mos,
            )
        if call.ice is not None and call.ice.components:
            with contextlib.suppress(Exception):
                selected = call.ice.transport(1).selected
                if selected is not None:
                    lc, rc = selected
                    changes["ice_pair"] = f"{lc.type.value}/{rc.type.value}"
                    changes["local_address"] = _fmt(lc.transport_address)
                    changes["remote_address"] = _fmt(rc.transport_address)
        return replace(view, **changes)

    async def start(self) -> None:
        started = 0
        errors = []
        for line in self.lines:
            try:
                await self._start_line(line)
                started += 1
            except OSError as exc:
                line.registration, line.detail = "failed", f"cannot listen: {exc}"
                errors.append(f"{line.account.name}: {exc}")
                self._log(f"{line.account.name}: cannot listen: {exc}")
                self._changed()
        if not started:
            raise OSError("; ".join(errors))

    async def _start_line(self, line: _Line) -> None:
        from sip.aio import RegistrationError
        from sip.registration import Registered, RegistrationExpired, RegistrationFailed
        from softphone.useragent import listen_transports, make_user_agent

        account = line.account
        ua = make_user_agent(account)
        await ua.start(transports=listen_transports(account))
        line.ua = ua  # set once listening: ua.config then holds the real port
        self._log(f"{account.name}: listening on {ua.config.local_host}:{ua.config.local_port}")
        ua.on_incoming = lambda incoming: self._on_incoming(line, incoming)

        def on_event(ev: object) -> None:
            if isinstance(ev, Registered):
                line.registration, line.detail = "registered", f"{ev.expires} s"
            elif isinstance(ev, RegistrationFailed):
                line.registration, line.detail = "failed", f"{ev.status} {ev.reason}"
            elif isinstance(ev, RegistrationExpired):
                line.registration, line.detail = "not registered", "expired"
            else:
                return
            self._changed()

        ua.on_event = on_event
        self._changed()
        # alongside the registration, never in its way (nor in the UI's)
        task = asyncio.create_task(self._start_pool(line))
        self._pool_starts.add(task)
        task.add_done_callback(self._pool_starts.discard)
        if account.server is not None:
            try:
                reg = await ua.register()
                self._log(f"{account.name}: registered for {reg.expires} s")
            except (RegistrationError, TimeoutError) as exc:
                line.registration, line.detail = "failed", str(exc) or "timeout"
                self._log(f"{account.name}: registration failed: {exc}")
            self._changed()

    async def _start_pool(self, line: _Line) -> None:
        """The account's candidate pool (none without ICE or with ``candidate_pool = 0``),
        then a log line once its first set is ready."""
        from softphone.useragent import start_candidate_pool

        name = line.account.name
        try:  # a network change makes it gather again, and say so in the log
            pool = await start_candidate_pool(
                line.account, lambda text: self._log(f"{name}: {text}")
            )
        except Exception as exc:  # calls gather as usual then
            self._log(f"{name}: no candidate pool: {exc}")
            self._follow(line, None)
            return
        if pool is None:
            self._follow(line, None)
            return
        if self._closed:
            await pool.close()
            return
        line.pool = pool
        self._follow(line, pool)
        with contextlib.suppress(TimeoutError, RuntimeError):  # RuntimeError: closed meanwhile
            await pool.wait_ready(1, timeout=POOL_READY_WAIT)
        self._log(f"{name}: candidate pool: {pool.ready} of {pool.size} sets ready")

    def _follow(self, line: _Line, pool: CandidatePool | None) -> None:
        """The line's user agent follows local address changes (re-registers from a new
        address, ``softphone.useragent.AddressFollower``) through the pool's monitor, else
        the engine's; subscribed before any call of the line, so it moves first."""
        from softphone.useragent import follow_address_changes

        if self._closed or line.ua is None:
            return
        monitor = pool.monitor if pool is not None else None
        if monitor is None:
            monitor = self._call_monitor(None)
        name = line.account.name
        follower = follow_address_changes(
            line.ua, monitor, lambda text: self._log(f"{name}: {text}")
        )
        if follower is not None:
            self._followers.append(follower)

    async def close(self) -> None:
        self._closed = True
        followers, self._followers = self._followers, []
        for follower in followers:
            follower.close()
        if self.call is not None:
            with contextlib.suppress(Exception):
                await self.call.hangup()
        starts = list(self._pool_starts)
        for task in starts:
            task.cancel()
        await asyncio.gather(*starts, return_exceptions=True)
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.close()
        for line in self.lines:
            pool, line.pool = line.pool, None
            if pool is not None:
                with contextlib.suppress(Exception):  # the user agents still get closed
                    await pool.close()  # its TURN allocations too
            ua, line.ua = line.ua, None
            if ua is None:
                continue
            if ua.registered is not None:
                with contextlib.suppress(Exception):
                    await ua.unregister(timeout=3.0)
            # a short wait for transactions to finish: quitting should not hang for seconds
            await ua.close(timeout=1.0)

    def _progress(self, text: str) -> None:
        self._log(text)
        if text.startswith("ringing"):
            self._set(state=CallState.RINGING)
        elif text.startswith("answered"):
            self._set(state=CallState.CONNECTING, connected_at=time.monotonic())
        elif text.startswith("media:"):
            self._set(state=CallState.ACTIVE)
        elif text.startswith(("on hold by the peer", "resumed by the peer")):
            self._changed()

    async def dial(self, uri: str) -> None:
        from softphone.call import Call, CallFailed
        from softphone.commands import complete_uri

        if self.ua is None:
            raise RuntimeError("the user agent is not running")
        account = self.account
        target = complete_uri(uri, account)
        options = self._media_options(account)
        pool = self.lines[self.active].pool
        monitor = self._call_monitor(pool)
        self.call = Call(
            self.ua, account, options, progress=self._progress, pool=pool, monitor=monitor
        )
        self._state.view = CallView(state=CallState.CALLING, remote=target, outgoing=True)
        self._changed()
        try:
            await self.call.dial(target)
        except CallFailed as exc:
            self._ended(exc.kind if exc.kind != "failed" else exc.reason)
            self._log(f"call failed: {exc.reason}")
            return
        except Exception as exc:  # e.g. an audio device that cannot be opened
            self._ended("failed")
            self._log(f"call failed: {exc}")
            with contextlib.suppress(Exception):
                await self.call.hangup("failed")
            return
        self._task = asyncio.create_task(self._run_call())

    async def _run_call(self) -> None:
        call = self.call
        try:
            reason = await call.run(None)
        except Exception as exc:  # keep the phone up
            reason = f"error: {exc}"
        if self.call is call:
            self._ended(reason)

    def _ended(self, reason: str | None) -> None:
        self._set(state=CallState.ENDED, end_reason=reason, ended_at=time.monotonic())

    def _on_incoming(self, line: _Line, incoming: Any) -> None:
        busy = self._state.view.state in (
            CallState.CALLING,
            CallState.RINGING,
            CallState.INCOMING,
            CallState.CONNECTING,
            CallState.ACTIVE,
        )
        if busy:
            incoming.reject(486)
            self._log(f"busy: rejected a call from {incoming.call.remote_uri}")
            return
        self._incoming, self._incoming_line = incoming, line
        incoming.ring()
        remote = str(incoming.call.remote_uri)
        self._state.view = CallView(state=CallState.INCOMING, remote=remote, outgoing=False)
        self._log(f"incoming call from {remote} on {line.account.name}")
        self._changed()
        task = asyncio.ensure_future(self._watch_incoming(incoming))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch_incoming(self, incoming: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(incoming.ended)
        if self._incoming is incoming and self._state.view.state is CallState.INCOMING:
            self._incoming = None
            self._log("the caller gave up")
            self._ended("cancelled")

    async def answer(self) -> None:
        from softphone.call import Call, CallFailed

        incoming, self._incoming = self._incoming, None
        line = self._incoming_line
        if incoming is None or line is None:
            return
        options = self._media_options(line.account)
        monitor = self._call_monitor(line.pool)
        self.call = Call(
            line.ua, line.account, options, progress=self._progress, pool=line.pool, monitor=monitor
        )
        try:
            await self.call.accept(incoming)
        except CallFailed as exc:
            self._ended(exc.kind)
            self._log(f"call failed: {exc.reason}")
            return
        except Exception as exc:  # e.g. an audio device that cannot be opened
            self._ended("failed")
            self._log(f"call failed: {exc}")
            with contextlib.suppress(Exception):
                await self.call.hangup("failed")
            return
        self._task = asyncio.create_task(self._run_call())

    async def reject(self) -> None:
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            incoming.reject(603)
            self._log("rejected (603 Decline)")
            self._ended("rejected")

    async def hangup(self) -> None:
        call = self.call
        if call is None:
            return
        self._log("hanging up")
        await call.hangup()
        self._ended(call.end_reason or "local-bye")

    async def set_hold(self, on: bool) -> None:
        """Hold or resume by re-INVITE (the Call sends silence while holding)."""
        call = self.call
        if call is None:
            return
        if await (call.hold() if on else call.resume()):
            self._set(held=on)

    def set_mute(self, on: bool) -> None:
        """Silence in place of our audio; RTP goes on (the Call's mute switch)."""
        if self.call is not None:
            self.call.mute(on)
        self._set(muted=on)

    def send_dtmf(self, digits: str) -> None:
        if self.call is not None and self.call.send_dtmf(digits):
            self._set(dtmf_sent=self._state.view.dtmf_sent + digits)


def _fmt(addr: tuple[str, int]) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def _other_accounts(account: Account, args: argparse.Namespace) -> tuple[Account, ...]:
    """The config file's other accounts with a registrar (shown and registered too)."""
    from pathlib import Path

    from softphone.config import ConfigError, load_config

    config_path = getattr(args, "config", None)
    try:
        config = load_config(Path(config_path) if config_path else None)
    except ConfigError:
        return ()
    return tuple(
        a for name, a in config.accounts.items() if name != account.name and a.server is not None
    )


def run_tui(account: Account, args: argparse.Namespace, reporter: Reporter) -> int:
    """``softphone tui``: run the full-screen phone until the user quits."""
    if account.server is None and not account.user:
        reporter.progress("no account configured: peer-to-peer calls only (give --server/--user)")
    engine = SoftphoneEngine(account, more_accounts=_other_accounts(account, args))
    app = PhoneApp(engine)
    # log lines on stderr would scribble over the screen: the app's log panel shows progress
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [
        h
        for h in saved
        if not (isinstance(h, logging.StreamHandler) and h.stream in (sys.stderr, sys.stdout))
    ]
    try:
        result = app.run()
    finally:
        root.handlers = saved
    return EXIT_OK if result in (None, EXIT_OK) else EXIT_FAILED
