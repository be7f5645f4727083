"""Registration binding state (RFC 3261 §10), sans-I/O.

A :class:`Registration` builds REGISTER requests for one address-of-record and one contact and
interprets the final responses; the UA core (``sip.ua``) sends them through client transactions,
does the digest authentication round trip (§22.2) and feeds the outcome back here.

Rules implemented:
- §10.2: Request-URI = the registrar's domain, To = From = the AOR, one Call-ID for every refresh
  of the binding (§10.2.4) and a CSeq that increases by one with each REGISTER (§10.2).
- §10.2.1: Contact with an ``expires`` parameter and an Expires header.
- §10.2.8: 423 Interval Too Brief -> retry with the Min-Expires value.
- §10.2.4: refresh before the binding expires (at half the granted lifetime, at most
  ``refresh_margin`` seconds before expiry).
- §10.2.2: unregister with ``Expires: 0``.
- NAT (RFC 3581 + contact rewriting as pjsip does): when the registrar's response shows, in the
  top Via's ``received``/``rport``, a public address different from the one in our Contact, the
  binding is re-registered with a Contact holding that public address (the old one removed).
- RFC 5626 (SIP outbound) §4.2: with an ``instance_id`` the Contact carries ``+sip.instance``
  (RFC 5626 §4.1) and, with a ``reg_id``, ``reg-id``; the REGISTER then says
  ``Supported: outbound, path``. A 2xx with ``Require: outbound`` means the registrar (and edge
  proxy) use the flow (reported as ``Registered.outbound``); a 439 First Hop Lacks Outbound
  Support is retried once without ``reg-id`` (§4.2.1, §11.6).
- Address change (RFC 3261 §10.2.1, §10.2.2): :meth:`Registration.change_contact` registers
  the new contact at once (same Call-ID, the next CSeq) and removes the old binding in the same
  REGISTER (its Contact with ``expires=0``); a registrar that confirmed RFC 5626 outbound
  replaces the binding of our instance and reg-id itself (RFC 5626 §6): no old URI then.
- RFC 5626 §4.5 flow recovery: :meth:`Registration.flow_failed` registers again at once (same
  Call-ID, reg-id and instance); a REGISTER that then fails for a flow reason (timeout,
  transport error, 5xx) is retried after :meth:`FlowBackoff.wait_time`, growing with the
  number of consecutive failures; a success resets the count.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass, field
from enum import Enum

from sip.message import Headers, Request, Response, new_call_id, new_tag
from sip.uri import NameAddr, SipURI

log = logging.getLogger("sip.registration")


# ---------------------------------------------------------------------- events


@dataclass
class Registered:
    """The registrar accepted the binding for ``expires`` seconds; ``contacts`` lists every
    binding of the AOR the registrar reported (§10.2.4)."""

    expires: int
    contacts: list[str]
    aor: str = ""
    #: RFC 5626 §4.2.1: the 2xx said ``Require: outbound`` (the flow is used for our binding)
    outbound: bool = False
    #: RFC 5626 §4.4: the registrar's ``Flow-Timer`` (s): keepalives at least that often
    flow_timer: int | None = None


@dataclass
class RegistrationFailed:
    status: int
    reason: str
    aor: str = ""


@dataclass
class RegistrationExpired:
    """The binding lapsed without a successful refresh."""

    aor: str = ""


@dataclass
class Unregistered:
    aor: str = ""


RegistrationEvent = Registered | RegistrationFailed | RegistrationExpired | Unregistered


class RegistrationState(Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    UNREGISTERING = "unregistering"
    FAILED = "failed"


def instance_id_for(seed: str | None = None) -> str:
    """An RFC 5626 §4.1 instance-id URN (RFC 4122 UUID URN). With ``seed`` (something unique
    and stable for this device and account, e.g. a machine id plus the AOR) the same URN comes
    back every time (a name-based UUID), so the registrar sees the same instance after a
    restart; without, a random one."""
    if seed is None:
        return f"urn:uuid:{uuid.uuid4()}"
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'sip-instance:' + seed)}"


#: RFC 5626 §4.5 defaults: base-time when every flow failed / when some flow still works, and
#: the upper bound of the wait (s).
RFC5626_BASE_TIME_ALL_FAILED = 30.0
RFC5626_BASE_TIME_SOME_OK = 90.0
RFC5626_MAX_TIME = 1800.0

#: statuses of a REGISTER meaning "the flow could not be formed" (RFC 5626 §4.5): timeout or
#: transport error (408, as the UA core reports them) and the server errors of a next hop
FLOW_FAILURE_STATUSES = frozenset({408, 480, 500, 502, 503, 504})


@dataclass(frozen=True)
class FlowBackoff:
    """RFC 5626 §4.5: how long to wait before trying to form a flow again.

    ``wait-time = min(max-time, base-time * 2 ** consecutive-failures)``, and the wait is a
    random time between 50 % and 100 % of it. base-time is ``base_time_all_failed`` when every
    flow to the outbound proxies failed, ``base_time_some_ok`` when another one still works.
    The defaults are the RFC's (30 s / 90 s / 1800 s); the RFC lets them be configured.
    """

    base_time_all_failed: float = RFC5626_BASE_TIME_ALL_FAILED
    base_time_some_ok: float = RFC5626_BASE_TIME_SOME_OK
    max_time: float = RFC5626_MAX_TIME

    def upper_bound(self, consecutive_failures: int, *, all_failed: bool = True) -> float:
        base = self.base_time_all_failed if all_failed else self.base_time_some_ok
        return min(self.max_time, base * 2.0 ** max(0, consecutive_failures))

    def wait_time(
        self, consecutive_failures: int, rng: random.Random, *, all_failed: bool = True
    ) -> float:
        bound = self.upper_bound(consecutive_failures, all_failed=all_failed)
        return bound * rng.uniform(0.5, 1.0)


@dataclass
class RegistrationConfig:
    aor: str  # "sip:alice@example.com"
    registrar: str  # Request-URI, "sip:example.com"
    contact: str  # our contact URI, "sip:alice@192.0.2.1:5060;transport=tcp"
    expires: int = 3600
    refresh_margin: float = 30.0
    display_name: str | None = None
    contact_params: dict[str, str | None] = field(default_factory=dict)
    rewrite_contact: bool = True  # learn the public address from Via received/rport
    retry_after_failure: float = 60.0
    #: RFC 5626 §4.1 instance-id URN ("urn:uuid:..."): ``+sip.instance`` in the Contact
    instance_id: str | None = None
    #: RFC 5626 §4.2 reg-id of this flow (needs ``instance_id``); None: no outbound
    reg_id: int | None = None
    #: RFC 5626 §4.5 backoff for REGISTERs failing for a flow reason; None: such a failure
    #: is retried after ``retry_after_failure`` like any other
    flow_backoff: FlowBackoff | None = None


class Registration:
    """One AOR + contact binding (RFC 3261 §10)."""

    def __init__(self, config: RegistrationConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()
        self.call_id = new_call_id()
        self.from_tag = new_tag()
        self.cseq = 0
        self.state = RegistrationState.IDLE
        self.contact = config.contact
        self.expires_requested = config.expires
        self.expires_granted = 0
        self.expires_at: float | None = None
        self.refresh_at: float | None = None
        self.retry_at: float | None = None
        self._old_contact: str | None = None  # contact to remove after a NAT rewrite
        #: contact to remove after our address changed (RFC 3261 §10.2.2; see change_contact)
        self._gone_contact: str | None = None
        self._rewrites = 0  # consecutive rewrites (a NAT that keeps changing must not loop us)
        self._events: list[RegistrationEvent] = []
        self._want_registered = False
        self.last_status = 0
        self.reg_id = config.reg_id if config.instance_id is not None else None
        #: RFC 5626 §4.5: REGISTERs failed for a flow reason since the last success
        self.consecutive_failures = 0
        #: the last 2xx said Require: outbound (§4.2.1)
        self.outbound = False

    # ---------------------------------------------------------------- building

    def _contact_value(self, contact: str, expires: int) -> str:
        params: dict[str, str | None] = dict(self.config.contact_params)
        if self.config.instance_id is not None:
            params["+sip.instance"] = f'"<{self.config.instance_id}>"'  # RFC 5626 §4.1
            if self.reg_id is not None:
                params["reg-id"] = str(self.reg_id)  # RFC 5626 §4.2
        params["expires"] = str(expires)
        return str(NameAddr(uri=SipURI.parse(contact), params=params))

    def build_request(self, expires: int | None = None) -> Request:
        """A new REGISTER with the next CSeq (§10.2).  ``expires=0`` removes the binding."""
        exp = self.expires_requested if expires is None else expires
        self.cseq += 1
        h = Headers()
        aor = NameAddr(uri=SipURI.parse(self.config.aor), display_name=self.config.display_name)
        h.add(
            "From",
            str(
                NameAddr(uri=aor.uri, display_name=aor.display_name, params={"tag": self.from_tag})
            ),
        )
        h.add("To", str(NameAddr(uri=aor.uri, display_name=aor.display_name)))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} REGISTER")
        h.add("Max-Forwards", "70")
        if self._old_contact is not None and exp > 0:
            h.add("Contact", self._contact_value(self._old_contact, 0))
        if self._gone_contact is not None and exp > 0:
            # RFC 3261 §10.2.2 / §10.3 step 6: the old URI with expires=0 removes its binding
            # (plain URI: a registrar matching +sip.instance must not take it for the new one)
            gone = NameAddr(uri=SipURI.parse(self._gone_contact), params={"expires": "0"})
            h.add("Contact", str(gone))
        h.add("Contact", self._contact_value(self.contact, exp))
        h.add("Expires", str(exp))
        if self.reg_id is not None:
            # RFC 5626 §4.2.1 (outbound) and RFC 3327 §5 (path): an edge proxy may add Path
            h.add("Supported", "outbound, path")
        return Request(method="REGISTER", uri=self.config.registrar, headers=h)

    def start(self, now: float) -> Request:
        """Begin (or restart) registering."""
        self._want_registered = True
        self.state = RegistrationState.REGISTERING
        self.retry_at = None
        return self.build_request()

    def unregister(self, now: float) -> Request | None:
        """§10.2.2: remove our binding (Expires: 0).  None when nothing is registered."""
        self._want_registered = False
        self.refresh_at = None
        self.retry_at = None
        if self.state in (RegistrationState.IDLE, RegistrationState.FAILED):
            self.state = RegistrationState.IDLE
            return None
        self.state = RegistrationState.UNREGISTERING
        return self.build_request(0)

    # ---------------------------------------------------------------- responses

    def handle_response(self, response: Response, now: float) -> Request | None:
        """Feed a final response (after any auth retry the UA did).  Returns a REGISTER to send
        next (423 retry or NAT contact rewrite) or None."""
        status = response.status
        self.last_status = status
        if status < 200:
            return None
        if self.state is RegistrationState.IDLE:
            return None  # a late answer to a REGISTER given up on (we unregistered since)
        if self.state is RegistrationState.UNREGISTERING:
            self.state = RegistrationState.IDLE
            self.expires_at = self.refresh_at = None
            self._events.append(Unregistered(self.config.aor))
            return None
        if 200 <= status < 300:
            return self._on_success(response, now)
        if status == 439 and self.reg_id is not None:
            # RFC 5626 §11.6 / §4.2.1: the first hop does not do outbound; register without it
            log.info("439 First Hop Lacks Outbound Support: registering without reg-id")
            self.reg_id = None
            return self.build_request()
        if status == 423:
            min_exp = _int_or_none(response.headers.get("Min-Expires"))
            if min_exp is not None and min_exp > self.expires_requested:
                log.info("423 Interval Too Brief: retrying with Expires %d", min_exp)
                self.expires_requested = min_exp
                return self.build_request()
        self._fail(status, response.reason, now)
        return None

    def handle_timeout(self, now: float) -> None:
        """The REGISTER transaction timed out (Timer F) or the transport failed."""
        if self.state is RegistrationState.IDLE:
            return  # nothing was in progress (a REGISTER given up on when we unregistered)
        if self.state is RegistrationState.UNREGISTERING:
            self.state = RegistrationState.IDLE
            self._events.append(Unregistered(self.config.aor))
            return
        self._fail(408, "Request Timeout", now)

    def _fail(self, status: int, reason: str, now: float) -> None:
        self.state = RegistrationState.FAILED
        self.refresh_at = None
        self._events.append(RegistrationFailed(status, reason, self.config.aor))
        if not self._want_registered:
            return
        backoff = self.config.flow_backoff
        if backoff is not None and status in FLOW_FAILURE_STATUSES:
            # RFC 5626 §4.5: the flow could not be formed; wait longer after each failure
            self.consecutive_failures += 1
            wait = backoff.wait_time(self.consecutive_failures, self.rng)
            log.info(
                "REGISTER failed (%d, %d in a row): next attempt in %.1f s",
                status,
                self.consecutive_failures,
                wait,
            )
            self.retry_at = now + wait
        elif self.config.retry_after_failure > 0:
            self.retry_at = now + self.config.retry_after_failure

    def flow_failed(self, now: float) -> Request | None:
        """RFC 5626 §4.4.1/§4.5: the flow our binding used failed (no keepalive response, or
        the connection closed). Returns a REGISTER to send at once over a new flow (same
        Call-ID, instance and reg-id, the next CSeq), or None when we do not want to be
        registered. A REGISTER still in progress on the dead flow is superseded."""
        if not self._want_registered:
            return None
        if self.state is RegistrationState.FAILED and self.retry_at is not None:
            return None  # already waiting out a backoff: a new flow is tried then
        log.info("flow of %s failed: registering again over a new flow", self.config.aor)
        self.state = RegistrationState.REGISTERING
        self.refresh_at = None
        self.retry_at = None
        return self.build_request()

    def change_contact(self, contact: str, now: float) -> Request | None:
        """Our address changed (a new network): register ``contact`` instead of the current one.

        Returns the REGISTER to send at once (same Call-ID, next CSeq, RFC 3261 §10.2.4), or
        None when we do not want to be registered (the new contact is then used by the next
        :meth:`start`). The old binding is removed in the same request when the registrar may
        hold it: RFC 3261 §10.2.2 allows removing a binding with a Contact of ``expires=0``
        among the others of a REGISTER (named by its URI alone, without ``+sip.instance``/
        ``reg-id``); when the registrar confirmed RFC 5626 outbound (``Require: outbound``) it
        replaces the binding of our instance and reg-id by the new one (RFC 5626 §6), so the
        old URI is not named. A REGISTER still in progress is superseded (its response no
        longer matches our CSeq); a backoff in progress is cut short: a new network is a new
        chance to form a flow (RFC 5626 §4.5). The NAT rewrite count starts again, since the
        registrar is about to report the address it sees us at from the new network (RFC
        3581)."""
        if contact == self.contact:
            return None
        old, self.contact = self.contact, contact
        self._old_contact = None
        self._rewrites = 0
        if not self._want_registered:
            self._gone_contact = None
            return None
        had_binding = self.expires_at is not None or self.state in (
            RegistrationState.REGISTERED,
            RegistrationState.REGISTERING,
        )
        replaced = self.reg_id is not None and self.outbound  # RFC 5626 §6 at the registrar
        self._gone_contact = old if had_binding and not replaced else None
        log.info("address of %s changed: registering %s", self.config.aor, contact)
        self.state = RegistrationState.REGISTERING
        self.refresh_at = None
        self.retry_at = None
        self.consecutive_failures = 0
        return self.build_request()

    @property
    def recovering(self) -> bool:
        """Wanted registered, but not (yet) registered again."""
        return self._want_registered and self.state is not RegistrationState.REGISTERED

    def _on_success(self, response: Response, now: float) -> Request | None:
        ours = SipURI.parse(self.contact)
        granted: int | None = None
        contacts: list[str] = []
        try:
            bindings = list(response.contacts)
        except ValueError:
            bindings = []
        instance = self.config.instance_id
        for b in bindings:
            contacts.append(str(b.uri))
            if _same_contact(b.uri, ours) or (instance is not None and _instance_of(b) == instance):
                granted = _int_or_none(b.params.get("expires"))
        if granted is None:
            granted = _int_or_none(response.headers.get("Expires"))
        if granted is None:
            granted = self.expires_requested
        self._old_contact = None
        self._gone_contact = None
        # NAT: the registrar saw us at Via received/rport (RFC 3581) -> rewrite our contact.
        if self.config.rewrite_contact and self._rewrites < 3:
            new_contact = _public_contact(response, ours)
            if new_contact is not None:
                self._rewrites += 1
                log.info("registrar sees us at %s: re-registering contact", new_contact)
                self._old_contact = self.contact
                self.contact = new_contact
                return self.build_request()
        if granted <= 0:
            # The registrar removed our binding although we asked for one.
            self._fail(response.status, "binding not kept", now)
            return None
        self.state = RegistrationState.REGISTERED
        self._rewrites = 0
        self.consecutive_failures = 0
        self.outbound = self.reg_id is not None and "outbound" in _option_tags(response, "Require")
        self.expires_granted = granted
        self.expires_at = now + granted
        self.refresh_at = now + max(min(granted / 2, granted - self.config.refresh_margin), 1.0)
        flow_timer = _int_or_none(response.headers.get("Flow-Timer"))
        if flow_timer is not None and flow_timer <= 0:
            flow_timer = None
        self._events.append(
            Registered(granted, contacts, self.config.aor, self.outbound, flow_timer)
        )
        return None

    # ---------------------------------------------------------------- timers

    def get_timer(self) -> float | None:
        times = [t for t in (self.refresh_at, self.retry_at, self.expires_at) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> Request | None:
        """Refresh (or retry) when due; report expiry.  Returns a REGISTER to send, if any."""
        if (
            self.expires_at is not None
            and now >= self.expires_at
            and self.state is not RegistrationState.REGISTERED
        ):
            self.expires_at = None
            self._events.append(RegistrationExpired(self.config.aor))
        if self.refresh_at is not None and now >= self.refresh_at:
            self.refresh_at = None
            if self.state is RegistrationState.REGISTERED:
                # Mark as in progress; expiry still reported if the refresh never succeeds.
                self.state = RegistrationState.REGISTERING
                return self.build_request()
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            if self._want_registered:
                self.state = RegistrationState.REGISTERING
                return self.build_request()
        if self.expires_at is not None and now >= self.expires_at:
            self.expires_at = None
            self._events.append(RegistrationExpired(self.config.aor))
        return None

    def next_event(self) -> RegistrationEvent | None:
        return self._events.pop(0) if self._events else None

    @property
    def registered(self) -> bool:
        return self.state is RegistrationState.REGISTERED


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _option_tags(response: Response, header: str) -> set[str]:
    return {v.strip().lower() for v in response.headers.get_all(header)}


def _instance_of(binding: NameAddr) -> str | None:
    """The URN of a Contact's ``+sip.instance`` (RFC 5626 §4.1: ``"<urn:...>"``), or None."""
    value = binding.params.get("+sip.instance")
    if value is None:
        return None
    return value.strip().strip('"').strip("<>")


def _same_contact(a: SipURI, b: SipURI) -> bool:
    """RFC 3261 §10.3/§19.1.4-ish comparison good enough to find our own binding."""
    return (
        (a.user or "") == (b.user or "")
        and a.host.lower() == b.host.lower()
        and (a.port or 5060) == (b.port or 5060)
    )


def _public_contact(response: Response, ours: SipURI) -> str | None:
    """RFC 3581: the address the registrar saw us at, if it differs from our contact's."""
    try:
        via = response.top_via
    except ValueError:
        return None
    received = via.received
    rport = via.rport
    if via.transport.upper() in ("TCP", "TLS"):
        # Over a connection the rport is our ephemeral source port, which accepts nothing;
        # the registrar reaches us over the connection itself. Only a new address counts.
        rport = None
        if received is None or received.lower() == ours.host.lower():
            return None
    if received is None and rport is None:
        return None
    host = received or ours.host
    port = rport if rport is not None else ours.port
    if host.lower() == ours.host.lower() and (port or 5060) == (ours.port or 5060):
        return None
    if received is None and via.host.lower() != ours.host.lower():
        return None
    new = SipURI(
        scheme=ours.scheme,
        user=ours.user,
        password=ours.password,
        host=host,
        port=port,
        params=dict(ours.params),
        headers={},
    )
    return str(new)
