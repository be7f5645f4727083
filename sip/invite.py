"""INVITE sessions (RFC 3261 §13–15, RFC 3311 UPDATE, RFC 6026), sans-I/O.

A :class:`Call` is one INVITE session seen by one user agent, caller (UAC) or callee (UAS): the
initial INVITE transaction, the early and confirmed dialogs it creates, the 2xx/ACK exchange
(which RFC 3261 §13.3.1.4 and RFC 6026 give to the transaction user, not the transaction), CANCEL,
BYE, re-INVITE and UPDATE, INFO, and glare handling (§14.1, RFC 3311 §5.2).

The session body is kept opaque (bytes + content type): offer/answer (RFC 3264) is the
application's business (``sip.offer_answer``).  The call talks to the network only through the
:class:`SessionHost` it is given (the ``sip.ua.UserAgent``), which owns transactions,
authentication and addressing.

Rules implemented here:
- UAC (§13.2): early dialogs from 1xx with a To tag (one per tag), CallRinging for 180/183 (with
  the early-media SDP if present), 2xx -> ACK with its own branch (§13.2.2.4), the ACK resent for
  each 2xx retransmission, a 2xx from a second dialog (forking) ACKed and then BYEd, CANCEL (§9.1)
  only once a provisional response arrived, 401/407 -> the host retries with credentials.
- UAS (§13.3): 180/183, 2xx retransmitted from T1 doubling to T2 until the ACK (over TCP/TLS
  too), giving up after 64*T1 with a BYE (§13.3.1.4); CANCEL -> 487 for the INVITE (§9.2);
  reject with any 3xx-6xx.
- In-dialog (§14, §15, RFC 3311): BYE both ways, re-INVITE and UPDATE both ways with target
  refresh, 491 on glare (a re-INVITE, with or without an offer, while our re-INVITE or our UPDATE
  with an offer is outstanding; an UPDATE while our re-INVITE or UPDATE is; RFC 3311 §5.2) and
  retry after a random delay (§14.1), 500 + Retry-After when an incoming re-INVITE overlaps one
  we are answering (§14.2), INFO (RFC 6086).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from sip.dialog import Dialog, DialogState
from sip.message import Request, Response, make_response, new_tag
from sip.timers import TimerConfig
from sip.transaction import ServerTransaction as ServerTx
from sip.transaction import State, build_cancel
from sip.uri import SipURI

log = logging.getLogger("sip.invite")

SDP = "application/sdp"

#: RFC 4028 §4: the smallest session interval a UA may accept (and our Min-SE).
MIN_SE = 90


class CallState(Enum):
    CALLING = "calling"  # UAC: INVITE sent, nothing back yet
    PROCEEDING = "proceeding"  # UAC: 100 received
    EARLY = "early"  # UAC: 1xx with a To tag / UAS: 1xx sent
    INCOMING = "incoming"  # UAS: INVITE received, not yet answered
    ANSWERED = "answered"  # UAS: 2xx sent, waiting for the ACK
    CONNECTED = "connected"  # confirmed dialog (UAC: ACK sent, UAS: ACK received)
    TERMINATING = "terminating"  # BYE or CANCEL sent
    TERMINATED = "terminated"


class Direction(Enum):
    OUTGOING = "outgoing"
    INCOMING = "incoming"


# ---------------------------------------------------------------------- events


@dataclass
class IncomingCall:
    call: Call
    offer: bytes
    content_type: str | None


@dataclass
class CallRinging:
    """A 180/183 (any 101-199) for our INVITE; ``sdp`` is early media, if any."""

    call: Call
    status: int
    reason: str
    sdp: bytes | None


@dataclass
class CallAnswered:
    """UAC: our INVITE got its 2xx (the ACK went out). ``sdp`` is the answer (or offer)."""

    call: Call
    sdp: bytes | None


@dataclass
class CallConfirmed:
    """UAS: the ACK for our 2xx arrived; ``sdp`` is the body of the ACK, if any."""

    call: Call
    sdp: bytes | None


@dataclass
class CallFailed:
    """UAC: the INVITE got a final non-2xx (or timed out: 408)."""

    call: Call
    status: int
    reason: str


@dataclass
class CallEnded:
    """The session is over. Reasons: local-bye, remote-bye, remote-cancel, rejected, no-ack,
    timeout, forked, local-cancel."""

    call: Call
    reason: str


@dataclass
class CallUpdated:
    """The remote session description changed (re-INVITE or UPDATE, in either direction).

    ``method`` "ACK": the peer's re-INVITE had no offer, ours went in the 2xx and ``sdp`` is
    the answer the ACK carried (RFC 3261 §14.2, RFC 3264 §8); ``local`` is then True."""

    call: Call
    sdp: bytes | None
    method: str
    local: bool  # True when we sent the offer


@dataclass
class CallUpdateFailed:
    call: Call
    status: int
    reason: str
    method: str


@dataclass
class InfoReceived:
    call: Call
    body: bytes
    content_type: str | None


CallEvent = (
    IncomingCall
    | CallRinging
    | CallAnswered
    | CallConfirmed
    | CallFailed
    | CallEnded
    | CallUpdated
    | CallUpdateFailed
    | InfoReceived
)


# ---------------------------------------------------------------------- host interface


ResponseHandler = Callable[[Response | None, float], None]


class SessionHost(Protocol):
    """The services a :class:`Call` uses; implemented by ``sip.ua.UserAgent``."""

    timers: TimerConfig

    def send_request(
        self,
        request: Request,
        handler: ResponseHandler,
        now: float,
        destination: SipURI | None = None,
    ) -> None:
        """Send through a new client transaction (adds Via); the handler gets every response
        (provisional and final, and 2xx retransmissions of an INVITE) and ``None`` on timeout.
        ``destination`` is the next hop (a dialog's, §12.2.1.1); by default the first loose
        Route or else the Request-URI (§8.1.2)."""

    def send_ack(self, ack: Request, now: float, destination: SipURI | None = None) -> None:
        """Send an ACK for a 2xx, outside any transaction (adds Via)."""

    def respond(self, stx: ServerTx, response: Response, now: float) -> None:
        """Send a response through a server transaction."""

    def retransmit_response(self, stx: ServerTx, response: Response, now: float) -> None:
        """Resend a 2xx (the TU's job, RFC 6026)."""

    def authorize(self, request: Request, challenge: Response) -> Request | None:
        """A copy of ``request`` carrying credentials for ``challenge`` with CSeq+1 and no Via,
        or None when we may not (or cannot) answer the challenge."""

    def emit(self, event: CallEvent) -> None: ...

    def contact(self) -> str:
        """Our Contact header value."""

    def answer_offer(self, call: Call, offer: bytes, content_type: str | None) -> bytes:
        """The answer body for a re-INVITE/UPDATE offer from the peer."""

    def make_offer(self, call: Call) -> bytes:
        """Our offer for the 2xx to a re-INVITE without one (RFC 3261 §14.2, RFC 3264 §8:
        the current description, its o= version raised only if something changed)."""

    def take_answer(self, call: Call, answer: bytes, content_type: str | None) -> None:
        """The answer (in the ACK) to the offer :meth:`make_offer` gave; ValueError when it
        cannot be used."""

    def call_terminated(self, call: Call) -> None: ...


# ---------------------------------------------------------------------- the call


class Call:
    """One INVITE session (both directions)."""

    def __init__(
        self,
        host: SessionHost,
        direction: Direction,
        call_id: str,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.direction = direction
        self.call_id = call_id
        self.state = CallState.CALLING if direction is Direction.OUTGOING else CallState.INCOMING
        self.dialog: Dialog | None = None
        self.early_dialogs: dict[str, Dialog] = {}
        self.invite: Request | None = None  # the INVITE sent (UAC) or received (UAS)
        self.local_sdp: bytes = b""
        self.local_content_type: str = SDP
        self.remote_sdp: bytes | None = None
        self.remote_content_type: str | None = None
        self.final_status: int = 0
        self.end_reason: str | None = None
        self.rng = rng or random.Random()
        self.user_data: object = None
        #: The methods the peer allows (its Allow in the INVITE or the 2xx, RFC 3261 §20.5);
        #: None when it sent no Allow.
        self.remote_allow: frozenset[str] | None = None
        # session timers (RFC 4028), on when the UA supports "timer" and the peer asks for them
        self.session_timers = False
        self.session_expires: int | None = None  # the negotiated interval, seconds
        self.we_refresh = False  # we send the refreshes (else we expect them)
        self.min_se = MIN_SE
        self._refresh_at: float | None = None
        self._expire_at: float | None = None
        self._refreshing = False
        # UAC
        self._provisional_seen = False
        self._cancel_pending = False
        self._cancelled = False
        self._ack: Request | None = None  # ACK of the current 2xx (resent on retransmission)
        self._ack_hop: SipURI | None = None
        self._ack_target = ""  # the dialog's remote target when _ack was built
        self._forks: dict[str, tuple[Request, SipURI]] = {}  # remote tag -> ACK, next hop
        # UAS
        self._stx: ServerTx | None = None
        self._local_tag = new_tag()
        self._ok: Response | None = None  # 2xx awaiting ACK
        self._ok_stx: ServerTx | None = None
        self._ok_next: float | None = None
        self._ok_interval = 0.0
        self._ok_deadline: float | None = None
        self._ok_is_reinvite = False
        # in-dialog offer/answer
        self._reinvite_out: Request | None = None  # our re-INVITE / UPDATE in progress
        self._reinvite_in: Request | None = None  # peer's re-INVITE we are answering
        self._offer_in_2xx = False  # that re-INVITE had no offer: ours is in the 2xx
        self._update_out: Request | None = None
        self._glare_retry_at: float | None = None
        self._glare_method: str = "INVITE"
        self._glare_sdp: bytes = b""
        self._bye_sent = False
        self._bye_after_ack = False
        self._cancel_deadline: float | None = None
        self._bye_request: Request | None = None

    def __repr__(self) -> str:
        return f"<Call {self.direction.value} {self.call_id} {self.state.value}>"

    # ================================================================== helpers

    @property
    def is_active(self) -> bool:
        return self.state not in (CallState.TERMINATED,)

    @property
    def remote_uri(self) -> str:
        if self.dialog is not None:
            return str(self.dialog.remote_uri.uri)
        if self.invite is not None:
            try:
                if self.direction is Direction.OUTGOING:
                    return str(self.invite.to_addr.uri)
                return str(self.invite.from_addr.uri)
            except ValueError:
                return ""
        return ""

    def _terminate(self, reason: str, *, emit_ended: bool = True) -> None:
        if self.state is CallState.TERMINATED:
            return
        self.state = CallState.TERMINATED
        self.end_reason = reason
        self._ok_next = self._ok_deadline = None
        self._glare_retry_at = None
        if self.dialog is not None:
            self.dialog.state = DialogState.TERMINATED
        if emit_ended:
            self.host.emit(CallEnded(self, reason))
        self.host.call_terminated(self)

    def _fail(self, status: int, reason: str) -> None:
        if self.state is CallState.TERMINATED:
            return
        self.final_status = status
        self.state = CallState.TERMINATED
        self.end_reason = "failed"
        self.host.emit(CallFailed(self, status, reason))
        self.host.call_terminated(self)

    def _hop(self) -> SipURI | None:
        return self.dialog.next_hop() if self.dialog is not None else None

    # ------------------------------------------------------------------ session timers (RFC 4028)

    @staticmethod
    def _session_expires(message: Request | Response) -> tuple[int, str | None] | None:
        """``Session-Expires: <delta>[;refresher=uac|uas]`` (RFC 4028 §4), None if absent or
        malformed."""
        value = message.headers.get("Session-Expires") or message.headers.get("x")
        if not value:
            return None
        parts = [p.strip() for p in value.split(";")]
        try:
            delta = int(parts[0])
        except ValueError:
            return None
        refresher = None
        for param in parts[1:]:
            name, _, v = param.partition("=")
            if name.strip().lower() == "refresher" and v.strip().lower() in ("uac", "uas"):
                refresher = v.strip().lower()
        return (delta, refresher) if delta > 0 else None

    @staticmethod
    def _min_se_of(message: Request | Response) -> int | None:
        value = message.headers.get("Min-SE")
        try:
            return int(value.split(";")[0]) if value else None
        except ValueError:
            return None

    def _start_session_timer(self, interval: int, we_refresh: bool, now: float) -> None:
        """RFC 4028 §10: the refresher refreshes at half the interval; without a refresh the
        session ends (BYE) min(32, interval/3) seconds before it expires."""
        self.session_expires = interval
        self.we_refresh = we_refresh
        self._refresh_at = now + interval / 2 if we_refresh else None
        self._expire_at = now + interval - min(32.0, interval / 3)
        log.info(
            "call %s: session timer %d s, refresher %s",
            self.call_id,
            interval,
            "us" if we_refresh else "the peer",
        )

    def _session_header(self, we_refresh: bool, uac: bool) -> tuple[str, str]:
        """Our Session-Expires for a request (``uac``) or response, naming the refresher by
        its role in this transaction."""
        assert self.session_expires is not None
        role = "uac" if we_refresh == uac else "uas"
        return ("Session-Expires", f"{self.session_expires};refresher={role}")

    def _timer_from_response(self, response: Response, now: float) -> None:
        """A 2xx to our INVITE or refresh: its Session-Expires sets the interval and refresher
        (RFC 4028 §7.2); none in the 2xx to the INVITE means no session timer."""
        if not self.session_timers:
            return
        se = self._session_expires(response)
        if se is None:
            if self.session_expires is not None:
                # a peer that asked for the timer but does not echo it in the 2xx to a refresh
                # (it lacks the extension): keep refreshing as agreed, harmless either way
                self._start_session_timer(self.session_expires, self.we_refresh, now)
            return
        self._start_session_timer(se[0], (se[1] or "uac") == "uac", now)

    def _timer_for_request(self, request: Request, response: Response, now: float) -> None:
        """A refresh (re-INVITE/UPDATE) or initial INVITE from the peer (RFC 4028 §9): our 2xx
        carries the Session-Expires in force, and the timer starts again."""
        if not self.session_timers:
            return
        se = self._session_expires(request)
        if se is None and self.session_expires is None:
            return
        if se is not None:
            interval, refresher = se
            interval = max(interval, self.min_se)
            if refresher is None:
                # §9: the UAS chooses; a peer that supports timers refreshes if it asked
                peer_supports = "timer" in (request.headers.get("Supported") or "").lower()
                refresher = "uac" if peer_supports else "uas"
            self.session_expires = interval
            we_refresh = refresher == "uas"
        else:
            we_refresh = self.we_refresh
        assert self.session_expires is not None
        name, value = self._session_header(we_refresh, uac=False)
        response.headers.add(name, value)
        if not we_refresh:
            response.headers.add("Require", "timer")  # §9: the UAC is the refresher
        self._start_session_timer(self.session_expires, we_refresh, now)

    def _send_refresh(self, now: float) -> None:
        """RFC 4028 §7.4/§9: refresh by UPDATE (no body) when the peer allows it, else by
        re-INVITE with the session description unchanged."""
        assert self.dialog is not None
        method = "UPDATE" if self.allows("UPDATE") else "INVITE"
        body = b"" if method == "UPDATE" else self.local_sdp
        self.dialog.local_contact = self.host.contact()
        req = self.dialog.create_request(method, body, self.local_content_type)
        req.headers.add(*self._session_header(True, uac=True))
        req.headers.add("Min-SE", str(self.min_se))
        self._reinvite_out = req
        self._refreshing = True
        self.host.send_request(req, self._on_offer_response, now, self._hop())

    def _note_allow(self, message: Request | Response) -> None:
        values = message.headers.get_all("Allow")
        if values:
            self.remote_allow = frozenset(
                m.strip().upper() for v in values for m in v.split(",") if m.strip()
            )

    def allows(self, method: str) -> bool:
        """Whether the peer's Allow lists ``method`` (False without an Allow)."""
        return self.remote_allow is not None and method.upper() in self.remote_allow

    @staticmethod
    def _body(message: Request | Response) -> tuple[bytes | None, str | None]:
        if not message.body:
            return None, None
        return message.body, message.headers.get("Content-Type")

    # ================================================================== UAC: initial INVITE

    def start(self, invite: Request, now: float) -> None:
        """Send the initial INVITE (built by the UA, without Via)."""
        self.invite = invite
        if invite.body:
            self.local_sdp = invite.body
            self.local_content_type = invite.headers.get("Content-Type") or SDP
        self.host.send_request(invite, self._on_invite_response, now)

    def _on_invite_response(self, response: Response | None, now: float) -> None:
        if response is None:
            if self.state in (CallState.CALLING, CallState.PROCEEDING, CallState.EARLY):
                self._fail(408, "Request Timeout")
            elif self.state is CallState.TERMINATING and self._cancelled:
                self._fail(487, "Request Terminated")
            return
        assert self.invite is not None
        if response.cseq.seq != self.invite.cseq.seq:
            return  # a response to a superseded (challenged) INVITE
        status = response.status
        if status < 200:
            self._on_provisional(response, now)
        elif status < 300:
            self._on_invite_2xx(response, now)
        else:
            self._on_invite_failure(response, now)

    def _on_provisional(self, response: Response, now: float) -> None:
        if self.state is CallState.TERMINATED:
            return
        self._provisional_seen = True
        if response.status > 100:
            self._note_allow(response)  # an early dialog may be UPDATEd (RFC 3311 §5.1)
        if self.state is CallState.CALLING:
            self.state = CallState.PROCEEDING
        tag = response.to_addr.tag
        if response.status > 100 and tag and self.invite is not None:
            early = self.early_dialogs.get(tag)
            if early is None:
                early = Dialog.from_uac_response(self.invite, response, self.host.contact())
                self.early_dialogs[tag] = early
            else:
                early.update_early(response)
            if self.dialog is None or self.dialog.state is DialogState.EARLY:
                self.dialog = early
            if self.state in (CallState.CALLING, CallState.PROCEEDING):
                self.state = CallState.EARLY
        if self._cancel_pending:
            self._cancel_pending = False
            self._send_cancel(now)
            return
        if response.status > 100 and self.state is not CallState.TERMINATING:
            sdp, ctype = self._body(response)
            if sdp is not None:
                self.remote_sdp, self.remote_content_type = sdp, ctype
            self.host.emit(CallRinging(self, response.status, response.reason, sdp))

    def _resend_ack(self, now: float) -> None:
        """The ACK again, for a retransmission of the 2xx it acknowledged (§13.2.2.4). When
        the peer refreshed its target since (an UPDATE reached us while our ACK was lost on
        the way, e.g. its proxy connection broke), the ACK is built again toward the new
        target (§12.2.1.1): the old one may no longer reach the peer at all."""
        ack, dialog = self._ack, self.dialog
        if ack is None:
            return
        if dialog is not None and dialog.remote_target != self._ack_target:
            ack = dialog.create_ack(ack.cseq.seq, ack.body, ack.headers.get("Content-Type"))
            self._remember_ack(ack, dialog)
        self.host.send_ack(ack, now, self._ack_hop)

    def _remember_ack(self, ack: Request, dialog: Dialog) -> None:
        self._ack = ack
        self._ack_hop = dialog.next_hop()
        self._ack_target = dialog.remote_target

    def _on_invite_2xx(self, response: Response, now: float) -> None:
        assert self.invite is not None
        tag = response.to_addr.tag or ""
        confirmed = None
        if self.dialog is not None and self.dialog.state is DialogState.CONFIRMED:
            confirmed = self.dialog
        if confirmed is not None and confirmed.remote_tag == tag:
            # 2xx retransmission: resend the same ACK (§13.2.2.4).
            self._resend_ack(now)
            return
        if tag in self._forks:
            fork_ack, fork_hop = self._forks[tag]
            self.host.send_ack(fork_ack, now, fork_hop)
            return
        if confirmed is not None or self.state is CallState.TERMINATED:
            # A 2xx from another branch of a forked INVITE: ACK it, then BYE it (§13.2.2.4).
            self._ack_and_bye_fork(response, now)
            return
        dialog = self.early_dialogs.get(tag)
        if dialog is None:
            dialog = Dialog.from_uac_response(self.invite, response, self.host.contact())
        else:
            dialog.confirm_with(response)
        dialog.state = DialogState.CONFIRMED
        self.dialog = dialog
        self.early_dialogs.clear()
        self.final_status = response.status
        self._note_allow(response)
        self._timer_from_response(response, now)
        sdp, ctype = self._body(response)
        ack_body = b""
        if not self.invite.body and sdp is not None:
            # Offer-less INVITE: the 2xx carries the offer, our answer goes in the ACK (§13.2.1).
            ack_body = self.host.answer_offer(self, sdp, ctype)
            self.local_sdp = ack_body
        ack = dialog.create_ack(self.invite.cseq.seq, ack_body, self.local_content_type)
        self._remember_ack(ack, dialog)
        self.host.send_ack(ack, now, self._ack_hop)
        if sdp is not None:
            self.remote_sdp, self.remote_content_type = sdp, ctype
        if self._cancelled or self._cancel_pending:
            # CANCEL lost the race against the 2xx: the call is up, hang it up (§9.1).
            self._cancel_pending = False
            self.state = CallState.CONNECTED
            self._send_bye(now, reason="local-cancel")
            return
        self.state = CallState.CONNECTED
        self.host.emit(CallAnswered(self, sdp if sdp is not None else self.remote_sdp))

    def _ack_and_bye_fork(self, response: Response, now: float) -> None:
        assert self.invite is not None
        fork = Dialog.from_uac_response(self.invite, response, self.host.contact())
        ack = fork.create_ack(self.invite.cseq.seq)
        hop = fork.next_hop()
        self._forks[fork.remote_tag] = (ack, hop)
        self.host.send_ack(ack, now, hop)
        bye = fork.create_request("BYE")
        log.info("call %s: BYE to forked 2xx from tag %s", self.call_id, fork.remote_tag)
        self.host.send_request(bye, lambda r, t: None, now, hop)

    def _on_invite_failure(self, response: Response, now: float) -> None:
        assert self.invite is not None
        min_se = self._min_se_of(response)
        if (
            response.status == 422
            and self.session_timers
            and min_se is not None
            and min_se > int(self.invite.headers.get("Min-SE") or "0")
            and not self._cancelled
            and not self._cancel_pending
        ):
            # RFC 4028 §7.4: retry with a session interval at least the Min-SE asked for.
            self.invite = self._retry_with_interval(self.invite, min_se)
            self._provisional_seen = False
            self.early_dialogs.clear()
            self.dialog = None
            self.state = CallState.CALLING
            self.host.send_request(self.invite, self._on_invite_response, now)
            return
        if response.status in (401, 407) and not self._cancelled and not self._cancel_pending:
            retry = self.host.authorize(self.invite, response)
            if retry is not None:
                self.invite = retry
                self._provisional_seen = False
                self.early_dialogs.clear()
                self.dialog = None
                self.state = CallState.CALLING
                self.host.send_request(retry, self._on_invite_response, now)
                return
        if self.state is CallState.TERMINATED:
            return
        if self._cancelled:
            self.final_status = response.status
            self._terminate("local-cancel")
            return
        self._fail(response.status, response.reason)

    @staticmethod
    def _retry_with_interval(request: Request, interval: int) -> Request:
        """A copy of ``request`` with CSeq+1, no Via, Session-Expires and Min-SE ``interval``."""
        retry = Request(method=request.method, uri=request.uri, headers=request.headers.copy())
        retry.body = request.body
        h = retry.headers
        for name in ("Via", "Session-Expires", "x", "Min-SE"):
            h.remove(name)
        h.set("CSeq", f"{request.cseq.seq + 1} {request.method}")
        h.add("Session-Expires", str(interval))
        h.add("Min-SE", str(interval))
        return retry

    # ------------------------------------------------------------------ CANCEL (§9.1)

    def cancel(self, now: float) -> None:
        """Cancel our pending INVITE; deferred until a provisional response arrived (§9.1)."""
        if self.direction is not Direction.OUTGOING:
            raise ValueError("only the caller can CANCEL")
        if self.state in (CallState.TERMINATED, CallState.TERMINATING, CallState.CONNECTED):
            return
        self._cancelled = True
        if not self._provisional_seen:
            self._cancel_pending = True
            return
        self._send_cancel(now)

    def _send_cancel(self, now: float) -> None:
        assert self.invite is not None
        self._cancelled = True
        self.state = CallState.TERMINATING
        # §9.1: same Request-URI, Call-ID, From, To, CSeq number, Route and top Via (branch).
        # Without a final response to the INVITE 64*T1 after the CANCEL, give up on it.
        self._cancel_deadline = now + self.host.timers.timeout
        cancel = build_cancel(self.invite)
        self.host.send_request(cancel, self._on_cancel_response, now)

    def _on_cancel_response(self, response: Response | None, now: float) -> None:
        # The INVITE's final response (487, or a 2xx that raced) settles the call; if it never
        # comes, Timer B ends it.
        if response is not None and response.status == 481:
            log.info("call %s: CANCEL got 481", self.call_id)

    # ================================================================== UAS: initial INVITE

    def receive_invite(self, invite: Request, stx: ServerTx, now: float) -> None:
        self.invite = invite
        self._stx = stx
        self._note_allow(invite)
        se = self._session_expires(invite) if self.session_timers else None
        if se is not None and se[0] < self.min_se:
            # RFC 4028 §8.1/§9: too small an interval; say the smallest we accept.
            resp = make_response(invite, 422, "Session Interval Too Small", to_tag=self._local_tag)
            resp.headers.add("Min-SE", str(self.min_se))
            self.final_status = 422
            self.host.respond(stx, resp, now)
            self._terminate("rejected", emit_ended=False)
            return
        self.remote_sdp, self.remote_content_type = self._body(invite)
        self.dialog = Dialog.from_uas_request(
            invite, self._local_tag, self.host.contact(), rng=self.rng
        )
        self.host.emit(IncomingCall(self, invite.body, invite.headers.get("Content-Type")))

    def _uas_response(self, status: int, reason: str | None = None) -> Response:
        assert self.invite is not None
        resp = make_response(self.invite, status, reason, to_tag=self._local_tag)
        if 100 < status < 300:
            resp.headers.add("Contact", self.host.contact())
            for rr in self.invite.headers.get_all("Record-Route"):
                resp.headers.add("Record-Route", rr)
        return resp

    def ringing(self, now: float, sdp: bytes | None = None, status: int | None = None) -> None:
        """Send 180 Ringing, or 183 Session Progress when ``sdp`` (early media) is given."""
        if self._stx is None or self.state not in (CallState.INCOMING, CallState.EARLY):
            return
        code = status or (183 if sdp else 180)
        resp = self._uas_response(code)
        if sdp:
            resp.body = sdp
            resp.headers.set("Content-Type", SDP)
        self.state = CallState.EARLY
        self.host.respond(self._stx, resp, now)

    def answer(self, sdp: bytes, now: float, content_type: str = SDP) -> None:
        """Send 200 OK with our SDP; retransmitted until the ACK (§13.3.1.4)."""
        if self._stx is None or self.state not in (CallState.INCOMING, CallState.EARLY):
            raise ValueError(f"cannot answer a call in state {self.state.value}")
        self.local_sdp = sdp
        self.local_content_type = content_type
        resp = self._uas_response(200)
        if sdp:
            resp.body = sdp
            resp.headers.set("Content-Type", content_type)
        self.final_status = 200
        self.state = CallState.ANSWERED
        assert self.invite is not None
        self._timer_for_request(self.invite, resp, now)
        self.host.respond(self._stx, resp, now)
        self._start_2xx_retransmit(resp, self._stx, now, reinvite=False)

    def reject(self, now: float, status: int = 486, reason: str | None = None) -> None:
        """Send a final non-2xx to the INVITE (486 Busy Here, 603 Decline, ...)."""
        if self._stx is None or self.state not in (CallState.INCOMING, CallState.EARLY):
            return
        self.final_status = status
        self.host.respond(self._stx, self._uas_response(status, reason), now)
        self._terminate("rejected")

    def receive_cancel(self, now: float) -> None:
        """§9.2: the INVITE was cancelled (the host already sent 200 to the CANCEL)."""
        if self._stx is None:
            return
        if self.state in (CallState.INCOMING, CallState.EARLY):
            self.final_status = 487
            self.host.respond(self._stx, self._uas_response(487), now)
            self._terminate("remote-cancel")
        elif self._stx.state is State.PROCEEDING:
            # The call ended otherwise but the INVITE never got its final response.
            self.host.respond(self._stx, self._uas_response(487), now)

    def _start_2xx_retransmit(
        self, resp: Response, stx: ServerTx, now: float, *, reinvite: bool
    ) -> None:
        self._ok = resp
        self._ok_stx = stx
        self._ok_is_reinvite = reinvite
        # §13.3.1.4: the TU passes the 2xx to the transport again and again until the ACK,
        # over every transport: the ACK crosses the proxies end to end, and a hop that lost
        # it (a UDP hop behind our TCP connection, a proxy restarting) is recovered only by
        # the caller's ACK sent again on each retransmission (§13.2.2.4).
        t = self.host.timers
        self._ok_deadline = now + t.timeout
        self._ok_interval = t.t1
        self._ok_next = now + t.t1

    def receive_ack(self, ack: Request, now: float) -> None:
        """The ACK for our 2xx (§13.3.1.4); retransmitted ACKs are ignored."""
        if self._ok is None:
            return
        if ack.cseq.seq != self._ok.cseq.seq:
            return
        self._ok = None
        self._ok_stx = None
        self._ok_next = self._ok_deadline = None
        sdp, ctype = self._body(ack)
        if sdp is not None:
            self.remote_sdp, self.remote_content_type = sdp, ctype
        if self._ok_is_reinvite:
            self._reinvite_in = None
            if self._offer_in_2xx:
                self._offer_in_2xx = False
                self._take_ack_answer(sdp, ctype, now)
            return
        if self.state is CallState.ANSWERED:
            self.state = CallState.CONNECTED
            if self.dialog is not None:
                self.dialog.state = DialogState.CONFIRMED
            self.host.emit(CallConfirmed(self, sdp))
            if self._bye_after_ack:
                self._send_bye(now)

    def _take_ack_answer(self, sdp: bytes | None, ctype: str | None, now: float) -> None:
        """The ACK to our 2xx offer (an offer-less re-INVITE) must carry the answer (RFC 3261
        §14.2); without one, or with one we cannot use, the session is over: BYE
        (§13.3.1.4)."""
        if sdp is None:
            log.warning("call %s: the ACK carried no answer to our offer; BYE", self.call_id)
            self._send_bye(now, reason="no-answer")
            return
        try:
            self.host.take_answer(self, sdp, ctype)
        except ValueError as exc:
            log.warning("call %s: unusable answer in the ACK (%s); BYE", self.call_id, exc)
            self._send_bye(now, reason="bad-answer")
            return
        self.host.emit(CallUpdated(self, sdp, "ACK", local=True))

    # ================================================================== in-dialog: BYE

    def hangup(self, now: float) -> None:
        """End the call whatever its state: CANCEL, reject (603), or BYE."""
        if self.state is CallState.TERMINATED:
            return
        if self.direction is Direction.OUTGOING and self.state in (
            CallState.CALLING,
            CallState.PROCEEDING,
            CallState.EARLY,
        ):
            self.cancel(now)
        elif self.state in (CallState.INCOMING, CallState.EARLY):
            self.reject(now, 603, "Decline")
        elif self.state is CallState.ANSWERED:
            # §15: the callee must not send BYE before the ACK for its 2xx arrived (or the
            # 2xx retransmissions gave up): the BYE could overtake the lost 2xx.
            self._bye_after_ack = True
        elif self.state is CallState.CONNECTED:
            self._send_bye(now)

    def bye(self, now: float) -> None:
        self.hangup(now)

    def _send_bye(self, now: float, reason: str = "local-bye") -> None:
        if self.dialog is None or self._bye_sent:
            return
        if self._stx is not None and self._stx.state is State.PROCEEDING:
            # A callee may not BYE a dialog whose INVITE it has not answered (§15): reject.
            self.reject(now, 480, "Temporarily Unavailable")
            return
        self._bye_sent = True
        self.state = CallState.TERMINATING
        self._ok_next = self._ok_deadline = None
        bye = self.dialog.create_request("BYE")
        self._bye_request = bye

        def on_bye(resp: Response | None, t: float) -> None:
            if resp is not None and resp.status in (401, 407) and self._bye_request is not None:
                retry = self.host.authorize(self._bye_request, resp)
                if retry is not None:
                    if self.dialog is not None:
                        self.dialog.local_seq = retry.cseq.seq
                    self._bye_request = retry
                    self.host.send_request(retry, on_bye, t, self._hop())
                    return
            if resp is not None and resp.status < 200:
                return
            self._terminate(reason)

        self.host.send_request(bye, on_bye, now, self._hop())

    def receive_bye(self, bye: Request, stx: ServerTx, now: float) -> None:
        self.host.respond(stx, make_response(bye, 200), now)
        if self._stx is not None and self.state in (CallState.INCOMING, CallState.EARLY):
            self.host.respond(self._stx, self._uas_response(487), now)
        self._terminate("remote-bye")

    # ================================================================== re-INVITE / UPDATE

    def reinvite(self, sdp: bytes | None, now: float, content_type: str = SDP) -> None:
        """Send a re-INVITE with a new offer (hold: a=sendonly/inactive; resume: a=sendrecv);
        ``sdp`` None (or empty): no offer, the peer offers in its 2xx and our answer
        (``host.answer_offer``) goes in the ACK (RFC 3261 §14.1, RFC 3264 §8)."""
        self._send_offer("INVITE", sdp or b"", now, content_type)

    def update(self, sdp: bytes, now: float, content_type: str = SDP) -> None:
        """Send an UPDATE with a new offer (RFC 3311)."""
        self._send_offer("UPDATE", sdp, now, content_type)

    def _offer_pending(self) -> bool:
        return (
            self._reinvite_out is not None or self._reinvite_in is not None or self._ok is not None
        )

    def _our_offer_outstanding(self) -> bool:
        """Whether a re-INVITE from the peer must get 491: our own re-INVITE is in progress
        (RFC 3261 §14.2), or our UPDATE carrying an offer still awaits its answer (RFC 3311
        §5.2, RFC 6337 §3.1: no new offer, nor an offer-less INVITE asking us for one, while
        an offer is outstanding in the dialog). A body-less UPDATE (target or session refresh)
        holds no offer."""
        req = self._reinvite_out
        return req is not None and (req.method == "INVITE" or bool(req.body))

    def _send_offer(self, method: str, sdp: bytes, now: float, content_type: str = SDP) -> None:
        early_update = method == "UPDATE" and self.state is CallState.EARLY
        if self.dialog is None or not (self.state is CallState.CONNECTED or early_update):
            raise ValueError(f"cannot send {method} in state {self.state.value}")
        if self._offer_pending():
            raise ValueError("an offer/answer exchange is already in progress")
        assert self.dialog is not None
        if sdp:
            self.local_sdp = sdp
            self.local_content_type = content_type
        self.dialog.local_contact = self.host.contact()  # our address may have changed (NAT)
        req = self.dialog.create_request(method, sdp, content_type if sdp else None)
        if self.session_timers and self.session_expires is not None:
            req.headers.add(*self._session_header(self.we_refresh, uac=True))  # RFC 4028 §7.4
        self._reinvite_out = req
        self._refreshing = False
        self.host.send_request(req, self._on_offer_response, now, self._hop())

    def _on_offer_response(self, response: Response | None, now: float) -> None:
        req = self._reinvite_out
        if req is None:
            # Already settled; a 2xx retransmission of a re-INVITE gets its ACK again.
            if response is not None and 200 <= response.status < 300 and self._ack is not None:
                if response.cseq.seq == self._ack.cseq.seq and response.cseq.method == "INVITE":
                    self._resend_ack(now)
            return
        method = req.method
        if response is None:
            self._reinvite_out = None
            self.host.emit(CallUpdateFailed(self, 408, "Request Timeout", method))
            # §14.1: a timeout on a re-INVITE ends the dialog.
            if self.state is CallState.CONNECTED:
                self._send_bye(now, reason="timeout")
            return
        if response.cseq.seq != req.cseq.seq:
            return
        status = response.status
        if status < 200:
            return
        assert self.dialog is not None
        if status < 300:
            self._reinvite_out = None
            self.dialog.refresh_target(response)
            sdp, ctype = self._body(response)
            bad_offer = False
            if method == "INVITE":
                ack_body = b""
                if not req.body and sdp is not None:
                    # our re-INVITE had no offer: the 2xx has one, answered in the ACK (§14.1)
                    try:
                        ack_body = self.host.answer_offer(self, sdp, ctype)
                    except ValueError as exc:
                        # §13.2.2.4: a valid answer in the ACK, then BYE at once
                        log.warning("call %s: unusable offer in the 2xx: %s", self.call_id, exc)
                        bad_offer = True
                    if not ack_body:
                        ack_body = self.local_sdp
                    self.local_sdp = ack_body
                elif not req.body:
                    log.warning("call %s: no offer in the 2xx to our re-INVITE", self.call_id)
                ack = self.dialog.create_ack(req.cseq.seq, ack_body, self.local_content_type)
                self._remember_ack(ack, self.dialog)
                self.host.send_ack(ack, now, self._ack_hop)
                if bad_offer:
                    self._send_bye(now, reason="bad-offer")
                    return
            if sdp is not None:
                self.remote_sdp, self.remote_content_type = sdp, ctype
            self._timer_from_response(response, now)
            if self._refreshing:
                self._refreshing = False  # a session refresh: nothing changed for the app
                return
            self.host.emit(CallUpdated(self, sdp, method, local=True))
            return
        if status in (401, 407):
            retry = self.host.authorize(req, response)
            if retry is not None:
                self.dialog.local_seq = retry.cseq.seq
                self._reinvite_out = retry
                self.host.send_request(retry, self._on_offer_response, now, self._hop())
                return
        self._reinvite_out = None
        refreshing, self._refreshing = self._refreshing, False
        min_se = self._min_se_of(response)
        if (
            refreshing
            and status == 422
            and min_se is not None
            and self.state is CallState.CONNECTED
        ):
            # RFC 4028 §7.4: our refresh's interval was too small; refresh again with Min-SE.
            self.session_expires = max(min_se, self.session_expires or 0)
            self.min_se = max(self.min_se, min_se)
            self._send_refresh(now)
            return
        if refreshing and status not in (408, 481):
            # a failed refresh (not a dead dialog): retry before the session expires
            log.info("call %s: session refresh got %d", self.call_id, status)
            if self._expire_at is not None:
                self._refresh_at = now + max(1.0, (self._expire_at - now) / 2)
            return
        if status == 491:
            # §14.1: the dialog's Call-ID owner (the original UAC) waits 2.1-4 s, the other 0-2 s,
            # in units of 10 ms.
            if self.direction is Direction.OUTGOING:
                delay = self.rng.randint(210, 400) / 100
            else:
                delay = self.rng.randint(0, 200) / 100
            log.info("call %s: glare (491), retrying %s in %.2fs", self.call_id, method, delay)
            self._glare_retry_at = now + delay
            self._glare_method = method
            self._glare_sdp = req.body  # b"": an offer-less re-INVITE stays one
            return
        self.host.emit(CallUpdateFailed(self, status, response.reason, method))
        if status in (408, 481):
            # §14.1 / RFC 3311 §5.1: the dialog is gone; end the call as its state allows.
            if self.state is CallState.CONNECTED:
                self._send_bye(now, reason="timeout" if status == 408 else "remote-gone")
            else:
                self.hangup(now)

    def receive_reinvite(self, req: Request, stx: ServerTx, now: float) -> None:
        """§14.2: a re-INVITE from the peer; 491 (the peer retries after a random delay,
        §14.1) while an offer of ours is outstanding, whether the re-INVITE has an offer or
        asks us for one (RFC 3311 §5.2)."""
        assert self.dialog is not None
        if self._our_offer_outstanding():
            log.info("call %s: re-INVITE while our offer is outstanding: 491", self.call_id)
            self.host.respond(stx, make_response(req, 491), now)
            return
        if self._reinvite_in is not None or self._ok is not None:
            resp = make_response(req, 500)
            resp.headers.add("Retry-After", str(self.rng.randint(0, 10)))
            self.host.respond(stx, resp, now)
            return
        offer, ctype = self._body(req)
        if offer is not None:
            try:
                body = self.host.answer_offer(self, offer, ctype)
            except ValueError as exc:
                # RFC 3261 §14.2: an offer we cannot accept; the session stays as it was.
                log.info("call %s: re-INVITE offer rejected: %s", self.call_id, exc)
                self.host.respond(stx, make_response(req, 488), now)
                return
            self.remote_sdp, self.remote_content_type = offer, ctype
        else:
            # §14.2 / RFC 3264 §8: an offer-less re-INVITE: our offer goes in the 2xx and the
            # answer comes in the ACK (receive_ack)
            body = self.host.make_offer(self)
        self.dialog.refresh_target(req)
        self._reinvite_in = req
        self._offer_in_2xx = offer is None and bool(body)
        if body:
            self.local_sdp = body
        resp = make_response(req, 200)
        resp.headers.add("Contact", self.host.contact())
        if body:
            resp.body = body
            resp.headers.set("Content-Type", self.local_content_type or SDP)
        self._timer_for_request(req, resp, now)
        self.host.respond(stx, resp, now)
        self._start_2xx_retransmit(resp, stx, now, reinvite=True)
        if offer is not None:
            self.host.emit(CallUpdated(self, offer, "INVITE", local=False))

    def receive_update(self, req: Request, stx: ServerTx, now: float) -> None:
        """RFC 3311 §5.2: an UPDATE from the peer."""
        assert self.dialog is not None
        if self._reinvite_out is not None:
            self.host.respond(stx, make_response(req, 491), now)
            return
        if self._reinvite_in is not None:
            resp = make_response(req, 500)
            resp.headers.add("Retry-After", str(self.rng.randint(0, 10)))
            self.host.respond(stx, resp, now)
            return
        offer, ctype = self._body(req)
        answer = b""
        if offer is not None:
            try:
                answer = self.host.answer_offer(self, offer, ctype)
            except ValueError as exc:
                log.info("call %s: UPDATE offer rejected: %s", self.call_id, exc)
                self.host.respond(stx, make_response(req, 488), now)
                return
        self.dialog.refresh_target(req)
        resp = make_response(req, 200)
        resp.headers.add("Contact", self.host.contact())
        if offer is not None:
            self.remote_sdp, self.remote_content_type = offer, ctype
            self.local_sdp = answer
            resp.body = answer
            resp.headers.set("Content-Type", self.local_content_type or SDP)
        self._timer_for_request(req, resp, now)
        self.host.respond(stx, resp, now)
        if offer is not None:
            self.host.emit(CallUpdated(self, offer, "UPDATE", local=False))

    # ================================================================== INFO (RFC 6086)

    def info(self, body: bytes, content_type: str, now: float) -> None:
        if self.dialog is None or self.state is not CallState.CONNECTED:
            raise ValueError("INFO needs a confirmed dialog")
        req = self.dialog.create_request("INFO", body, content_type)

        def on_info(resp: Response | None, t: float) -> None:
            if resp is not None and resp.status in (401, 407):
                retry = self.host.authorize(req, resp)
                if retry is not None and self.dialog is not None:
                    self.dialog.local_seq = retry.cseq.seq
                    self.host.send_request(retry, lambda r, t2: None, t, self._hop())

        self.host.send_request(req, on_info, now, self._hop())

    def receive_info(self, req: Request, stx: ServerTx, now: float) -> None:
        self.host.respond(stx, make_response(req, 200), now)
        self.host.emit(InfoReceived(self, req.body, req.headers.get("Content-Type")))

    # ================================================================== timers

    def get_timer(self) -> float | None:
        cancel = self._cancel_deadline if self.state is CallState.TERMINATING else None
        session: tuple[float | None, ...] = ()
        if self.state is CallState.CONNECTED:
            session = (self._refresh_at, self._expire_at)
        times = [
            t
            for t in (self._ok_next, self._ok_deadline, self._glare_retry_at, cancel, *session)
            if t
        ]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        if (
            self._cancel_deadline is not None
            and now >= self._cancel_deadline
            and self.state is CallState.TERMINATING
            and self._cancelled
            and not self._bye_sent
        ):
            # §9.1: the INVITE never got its final response after our CANCEL.
            self._cancel_deadline = None
            self.final_status = self.final_status or 487
            self._terminate("local-cancel")
        if self._ok_deadline is not None and now >= self._ok_deadline:
            # §13.3.1.4: no ACK within 64*T1 -> confirm then end the session with BYE.
            reinvite = self._ok_is_reinvite
            self._ok = None
            self._ok_stx = None
            self._ok_next = self._ok_deadline = None
            log.warning("call %s: no ACK for our 2xx, sending BYE", self.call_id)
            self._reinvite_in = None
            self._offer_in_2xx = False
            if not reinvite and self.state is CallState.ANSWERED:
                self.state = CallState.CONNECTED
            self._send_bye(now, reason="local-bye" if self._bye_after_ack else "no-ack")
        elif self._ok_next is not None and now >= self._ok_next and self._ok is not None:
            assert self._ok_stx is not None
            self.host.retransmit_response(self._ok_stx, self._ok, now)
            self._ok_interval = min(self._ok_interval * 2, self.host.timers.t2)
            self._ok_next = now + self._ok_interval
        if self.state is CallState.CONNECTED and self._expire_at and now >= self._expire_at:
            # RFC 4028 §10: no refresh came in time: the session is over.
            log.warning("call %s: session expired without a refresh; BYE", self.call_id)
            self._refresh_at = self._expire_at = None
            self._send_bye(now, reason="session-expired")
            return
        if self.state is CallState.CONNECTED and self._refresh_at and now >= self._refresh_at:
            if self._offer_pending() or self.dialog is None:
                self._refresh_at = now + 1.0  # after the exchange in progress
            else:
                self._refresh_at = None
                self._send_refresh(now)
        if self._glare_retry_at is not None and now >= self._glare_retry_at:
            self._glare_retry_at = None
            if self.state is CallState.CONNECTED and not self._offer_pending():
                self._send_offer(self._glare_method, self._glare_sdp, now, self.local_content_type)
