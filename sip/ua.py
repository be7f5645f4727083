"""The sans-I/O SIP user agent core (RFC 3261 §8, §10, §12–§15).

:class:`UserAgent` ties the transaction layer (``sip.transaction``), dialogs (``sip.dialog``),
INVITE sessions (``sip.invite``), registration (``sip.registration``) and digest authentication
(``sip.auth``) together.  Like the other protocol cores of the project it does no I/O::

    ua.receive(message_or_bytes, peer, now)     # a message from the transport
    ua.messages_to_send() -> [Outgoing]          # what to put on the wire, and where
    ua.get_timer() / ua.handle_timer(now)
    ua.next_event() -> event                     # IncomingCall, CallAnswered, Registered, ...

and the application drives it with ``ua.register(now)``, ``ua.invite(uri, sdp, now)``,
``call.answer(sdp, now)``, ``call.hangup(now)``, ``call.reinvite(sdp, now)`` ...

UAS behaviour (RFC 3261 §8.2): requests are first checked with ``sip.validate.check_request``
(400/416/420/505/513 ... as it says); then an unknown method gets 501 and a known but unsupported
one 405, both with Allow (§8.2.1); a request with a To tag that matches no dialog gets 481
(§12.2.2); an out-of-order in-dialog request 500 (§12.2.2); an INVITE with a body we cannot handle
415 with Accept (§8.2.3); OPTIONS is answered in and out of dialog with Allow, Accept and Supported
(§11.2).  Outbound requests carry Max-Forwards 70, User-Agent, Allow and Supported, a Contact with
our transport address, and, with an outbound proxy, a preloaded ``Route: <proxy;lr>`` (§8.1.2).

UAC behaviour beyond a single hop:
- RFC 5626: REGISTER carries ``+sip.instance`` (``UAConfig.instance_id``, else a random URN per
  UserAgent) and ``reg-id`` with ``Supported: outbound, path``; :meth:`UserAgent.flow_failed`
  (the I/O shell's keepalive or connection watcher) registers again at once, backing off per
  §4.5 (``UAConfig.flow_backoff``) while the registrar cannot be reached.
- RFC 3263 §4.3: a request other than REGISTER/ACK/CANCEL that times out or fails in transport
  without any response, or is answered 503, is sent again (new branch, same Call-ID and CSeq)
  while the next hop has other located targets (``UserAgent.target_count``, set by the I/O
  shell).
- A new local address (the machine moved to another network): :meth:`UserAgent.change_local_address`
  puts it in Via/Contact, forgets the NAT address learned from the old one (RFC 3581), registers
  the new Contact and removes the old binding (RFC 3261 §10.2.2), and gives ongoing dialogs the
  new Contact for their next target refresh (§12.2.1.1, §14.1, RFC 3311 §5.1).
- RFC 3261 §8.1.3.4: an initial INVITE answered 300/301/302 is sent again (next CSeq, new
  branch) to the best Contact not tried yet, at most ``MAX_REDIRECTS`` times
  (:class:`CallRedirected`).
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sip.auth import Credentials, DigestClient
from sip.dialog import request_destination
from sip.headers import Via
from sip.invite import (
    SDP,
    Call,
    CallEvent,
    CallState,
    Direction,
    IncomingCall,
    ResponseHandler,
)
from sip.message import (
    Headers,
    Request,
    Response,
    SipParseError,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)
from sip.registration import (
    FlowBackoff,
    Registration,
    RegistrationConfig,
    RegistrationEvent,
    instance_id_for,
)
from sip.timers import TimerConfig
from sip.transaction import (
    AckReceived,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    State,
    StrayResponse,
    Terminated,
    TimedOut,
    TransactionLayer,
    TransportError,
)
from sip.uri import NameAddr, SipURI
from sip.validate import check_request, response_for_unparseable

log = logging.getLogger("sip.ua")

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}

#: Methods we implement (Allow).
ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "INFO")

#: RFC 5626 §4.5 backoff used by default: the RFC's formula with shorter base and maximum
#: times (which it lets be configured): a desktop phone has a single flow and should be
#: reachable again seconds after its proxy restarts (the RFC's 30 s / 1800 s suit fleets of
#: devices re-registering at once).
DEFAULT_FLOW_BACKOFF = FlowBackoff(base_time_all_failed=1.0, base_time_some_ok=3.0, max_time=120.0)

#: RFC 3263 §4.3: how many further targets a request (other than REGISTER, which the I/O shell
#: fails over itself) is sent to when one times out or fails in transport
MAX_TARGET_FAILOVERS = 3

#: requests never sent again elsewhere: CANCEL and ACK follow their INVITE's hop (§9.1, §17.1.1.3)
_NO_FAILOVER = frozenset({"ACK", "CANCEL", "REGISTER"})

#: target refresh after a new flow: tries per call, and the wait before try n+1 (n * this, s)
TARGET_REFRESH_TRIES = 4
TARGET_REFRESH_RETRY = 2.0

#: RFC 3261 §8.1.3.4: redirections of an INVITE we follow (to a Contact of the 3xx); 305 Use
#: Proxy and 380 Alternative Service are not followed
REDIRECT_STATUSES = frozenset({300, 301, 302})
#: how many redirections one call follows at most (each new target only once: no loops)
MAX_REDIRECTS = 5

# ---------------------------------------------------------------------- addressing


@dataclass(frozen=True)
class Peer:
    """Where a message goes to or came from.

    ``transport`` is lower-case ``udp``/``tcp``/``tls``; ``host`` an IP address or a name that the
    I/O shell resolves (RFC 3263); ``flow`` is the shell's opaque handle of the flow a request
    arrived on (responses go back on it, RFC 3261 §18.2.2).
    """

    transport: str
    host: str
    port: int
    flow: Any = field(default=None, compare=False, hash=False)

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


@dataclass
class Outgoing:
    """A message to send. Requests go to ``peer`` (resolve ``peer.host`` if it is a name);
    responses go back on ``peer.flow`` (or, without one, per the top Via)."""

    message: Request | Response
    peer: Peer
    transaction: ClientTransaction | ServerTransaction | None = None


# ---------------------------------------------------------------------- events


@dataclass
class OptionsResult:
    """The final response to an OPTIONS we sent (``status`` 408 on timeout)."""

    target: str
    status: int
    response: Response | None


@dataclass
class CallRedirected:
    """UAC: the INVITE was redirected (``status`` 300-302) and is now sent to ``target``
    (RFC 3261 §8.1.3.4)."""

    call: Call
    status: int
    target: str


@dataclass
class RequestRejected:
    """We answered an incoming request with an error (for logs and tests)."""

    method: str
    status: int


Event = CallEvent | RegistrationEvent | OptionsResult | RequestRejected | CallRedirected


# ---------------------------------------------------------------------- configuration


@dataclass
class UAConfig:
    """Account and transport settings of one user agent."""

    user: str = "softphone"
    domain: str = "localhost"
    display_name: str | None = None
    local_host: str = "127.0.0.1"  # our address in Via/Contact (until NAT learning changes it)
    local_port: int = 5060
    transport: str = "udp"  # default transport for requests
    outbound_proxy: str | None = None  # "sip:proxy.example.com;lr" (preloaded Route, §8.1.2)
    registrar: str | None = None  # Request-URI of REGISTER, default "sip:<domain>"
    auth_user: str | None = None  # digest user name (default: user)
    password: str | None = None
    user_agent: str = "softphone/0.1"
    register_expires: int = 3600
    timers: TimerConfig = field(default_factory=TimerConfig)
    supported: tuple[str, ...] = ()
    accept: tuple[str, ...] = (SDP,)
    #: Bodies accepted in INFO (RFC 6086) besides ``accept``.
    info_accept: tuple[str, ...] = ("application/dtmf-relay", "application/dtmf", "text/plain")
    contact_transport_param: bool = True  # ;transport=tcp/tls in Contact for stream transports
    #: Answer body for a re-INVITE/UPDATE offer; default: our current local SDP.
    offer_handler: Callable[[Call, bytes, str | None], bytes] | None = None
    #: Our offer for the 2xx to a re-INVITE without one (RFC 3261 §14.2, RFC 3264 §8);
    #: default: our current local SDP, unchanged (same o= version).
    reoffer_handler: Callable[[Call], bytes] | None = None
    #: Takes the answer to that offer from the ACK (raise ValueError if unusable: BYE).
    answer_handler: Callable[[Call, bytes, str | None], None] | None = None
    rewrite_contact: bool = True  # NAT: adopt the received/rport the registrar reports
    #: RFC 5626 §4.1 instance-id URN for ``+sip.instance`` (see ``instance_id_for``); None: a
    #: random one per UserAgent (give a stable one so the registrar knows us after a restart)
    instance_id: str | None = None
    #: RFC 5626 §4.2: register with ``reg-id`` (and ``Supported: outbound``); the instance-id
    #: is sent either way
    outbound: bool = True
    reg_id: int = 1
    #: RFC 5626 §4.5 backoff for re-registering after a flow failure (None: fixed retry time)
    flow_backoff: FlowBackoff | None = DEFAULT_FLOW_BACKOFF

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"


# ---------------------------------------------------------------------- helpers


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def peer_for_uri(uri: SipURI, default_transport: str = "udp") -> Peer:
    """RFC 3263 §4.1/§4.2 without DNS: transport from ``;transport=`` (sips -> tls), port from
    the URI or the transport's default.  Names stay names (the I/O shell locates them)."""
    t = uri.transport
    if uri.scheme == "sips":
        t = "tls"
    transport = (t or default_transport).lower()
    if transport not in DEFAULT_PORTS:
        transport = default_transport
    host = uri.params.get("maddr") or uri.host
    port = uri.port or DEFAULT_PORTS[transport]
    return Peer(transport, host, port)


#: Where a machine without a default route may still have one (RFC 5737 documentation nets,
#: RFC 1918 private nets, RFC 6598 shared space): a UDP connect() toward each (which sends
#: nothing) tells the source address the kernel would use, see :func:`choose_local_host`.
ROUTE_PROBES = (
    "192.0.2.1",
    "198.51.100.1",
    "203.0.113.1",
    "10.255.255.254",
    "172.31.255.254",
    "192.168.255.254",
    "100.127.255.254",
)
#: The same for IPv6 (RFC 3849 documentation prefix, RFC 4193 unique local addresses), tried
#: after :data:`ROUTE_PROBES` by a user agent listening on ``::``.
ROUTE_PROBES_V6 = ("2001:db8::1", "fd00::1")


def usable_local_host(host: str | None) -> bool:
    """An address to put in Via/Contact for peers elsewhere: unicast, not loopback, not
    unspecified, not link-local (RFC 3927 / RFC 4291 §2.5.6 addresses do not route)."""
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast)


def choose_local_host(candidates: Iterable[str | None], fallback: str = "127.0.0.1") -> str:
    """Our address when nothing routes toward the proxy (no default route, or no proxy): the
    first usable one of ``candidates`` (:func:`usable_local_host`) -- in the I/O shell, the
    sources the kernel picks toward the peer, toward :data:`ROUTE_PROBES`, then the addresses
    the host name resolves to -- else ``fallback`` (a machine with loopback only)."""
    for host in candidates:
        if host is not None and usable_local_host(host):
            return host.strip("[]")
    return fallback


def _stamp_received(request: Request, peer: Peer) -> None:
    """RFC 3261 §18.2.1 / RFC 3581 §4: ``received`` and ``rport`` on the top Via (the asyncio
    transport already does it; the core does it for simulated networks, idempotently)."""
    try:
        via = request.top_via
    except SipParseError:
        return
    params = dict(via.params)
    changed = False
    if "rport" in params and params["rport"] is None:
        params["rport"] = str(peer.port)
        changed = True
    if "received" not in params and (changed or via.host != peer.host):
        params["received"] = peer.host
        changed = True
    if not changed:
        return
    vias = request.headers.get_all("Via")
    new_first = str(Via(via.transport, via.host, via.port, params, via.protocol))
    rebuilt = Headers()
    placed = False
    for name, value in request.headers.items():
        if name.lower() == "via":
            if not placed:
                rebuilt.add("Via", new_first)
                for other in vias[1:]:
                    rebuilt.add("Via", other)
                placed = True
            continue
        rebuilt.add(name, value)
    request.headers = rebuilt


# ---------------------------------------------------------------------- the user agent


class UserAgent:
    """Sans-I/O SIP user agent: registration, calls, and the UAS rules of RFC 3261 §8.2."""

    def __init__(self, config: UAConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.timers = config.timers
        self.rng = rng or random.Random()
        self.transactions = TransactionLayer(config.timers)
        self.calls: list[Call] = []
        self.registrations: list[Registration] = []
        self.public_host: str | None = None  # learned from the registrar (NAT)
        self.public_port: int | None = None
        self._handlers: dict[int, ResponseHandler] = {}
        self._finals: set[int] = set()  # client transactions whose final response was handled
        self._events: deque[Event] = deque()
        self._out: list[Outgoing] = []
        self._auth = _make_auth(config)
        self._reg_of: dict[int, Registration] = {}
        self._stray_handlers: dict[str, Call] = {}
        #: RFC 5626 §4.1: this UA instance's URN (stable when the config gives one)
        self.instance_id = config.instance_id or instance_id_for()
        #: RFC 3263 §4.3 failover: the I/O shell tells how many located targets a next hop has
        #: (None or 1: no other target to try)
        self.target_count: Callable[[Peer], int] | None = None
        #: client transaction -> (request, destination, failovers so far) of failover-able
        #: requests; ``_answered``: those that got any response (no failover then)
        self._attempts: dict[int, tuple[Request, SipURI | None, int]] = {}
        self._answered: set[int] = set()
        #: a flow failed: refresh the targets of ongoing dialogs once registered again
        self._refresh_targets_after_recovery = False
        #: Call-ID -> failed target refreshes so far; when to try those calls again
        self._refresh_failures: dict[str, int] = {}
        self._refresh_at: float | None = None
        #: Call-ID -> Request-URIs an outgoing call was sent to (redirections, §8.1.3.4)
        self._redirected: dict[str, list[str]] = {}

    # ================================================================== addressing

    @property
    def contact_host(self) -> str:
        return self.public_host or self.config.local_host

    @property
    def contact_port(self) -> int:
        return self.public_port or self.config.local_port

    def contact_uri(self) -> str:
        uri = SipURI(
            scheme="sip",
            user=self.config.user,
            host=self.contact_host,
            port=self.contact_port,
        )
        t = self.config.transport.lower()
        if t != "udp" and self.config.contact_transport_param:
            uri.params["transport"] = t
        return str(uri)

    def contact(self) -> str:
        """Our Contact header value for dialogs (SessionHost). RFC 5626 §4.3: with a binding
        registered through outbound, the URI carries ``;ob`` so the edge proxy routes the
        dialog's requests over our flow."""
        if any(reg.outbound and reg.registered for reg in self.registrations):
            return f"<{self.contact_uri()};ob>"
        return f"<{self.contact_uri()}>"

    def _via(self, transport: str) -> str:
        host = self.config.local_host
        if ":" in host:
            host = f"[{host}]"
        port = self.config.local_port
        return f"SIP/2.0/{transport.upper()} {host}:{port};rport;branch={new_branch()}"

    def _destination(self, request: Request) -> Peer:
        return peer_for_uri(request_destination(request), self.config.transport)

    # ================================================================== SessionHost

    def _prepare(self, request: Request, destination: SipURI | None = None) -> Peer:
        h = request.headers
        if destination is not None:
            peer = peer_for_uri(destination, self.config.transport)
        else:
            peer = self._destination(request)
        if "Via" not in h:
            rebuilt = Headers()
            rebuilt.add("Via", self._via(peer.transport))
            for name, value in h.items():
                rebuilt.add(name, value)
            request.headers = h = rebuilt
        if "Max-Forwards" not in h:
            h.add("Max-Forwards", "70")
        if "User-Agent" not in h and self.config.user_agent:
            h.add("User-Agent", self.config.user_agent)
        if request.method in ("INVITE", "UPDATE", "OPTIONS") and "Allow" not in h:
            h.add("Allow", ", ".join(ALLOW))
        if request.method in ("INVITE", "UPDATE", "OPTIONS", "REGISTER") and self.config.supported:
            tags = h.get_all("Supported")  # e.g. "outbound, path" of an RFC 5626 REGISTER
            merged = tags + [t for t in self.config.supported if t not in tags]
            if merged != tags:
                h.set("Supported", ", ".join(merged))
        return peer

    def send_request(
        self,
        request: Request,
        handler: ResponseHandler,
        now: float,
        destination: SipURI | None = None,
        *,
        _attempt: int = 0,
    ) -> None:
        peer = self._prepare(request, destination)
        if request.method == "INVITE" and _attempt == 0 and request.to_addr.tag is None:
            handler = self._following_redirects(request, handler)
        try:
            tx = self.transactions.send_request(
                request, now, reliable=peer.reliable, destination=peer
            )
        except ValueError as exc:
            log.warning("cannot send %s: %s", request.method, exc)
            handler(None, now)
            return
        self._handlers[id(tx)] = handler
        if request.method not in _NO_FAILOVER:
            self._attempts[id(tx)] = (request, destination, _attempt)
        self._pump(now)

    def _fail_over(
        self,
        tx: ClientTransaction,
        handler: ResponseHandler,
        now: float,
        *,
        unavailable: bool = False,
    ) -> bool:
        """RFC 3263 §4.3: a request that timed out or failed in transport without any response,
        or was answered 503 Service Unavailable (``unavailable``), is sent again -- the same
        request with a new Via branch, so a new transaction, same Call-ID and CSeq -- to the
        next target of its next hop (the I/O shell orders targets that failed last). True
        when it was sent again."""
        attempt = self._attempts.pop(id(tx), None)
        answered = id(tx) in self._answered and not unavailable
        self._answered.discard(id(tx))
        if attempt is None or answered or self.target_count is None:
            return False
        request, destination, failovers = attempt
        targets = self.target_count(tx.destination) if isinstance(tx.destination, Peer) else 1
        if failovers + 1 >= min(targets, MAX_TARGET_FAILOVERS + 1):
            return False
        log.info(
            "%s to %s got no response: sending it to the next target", request.method, request.uri
        )
        request.headers.remove("Via")  # our own Via only: _prepare adds one with a new branch
        self.send_request(request, handler, now, destination, _attempt=failovers + 1)
        return True

    def _following_redirects(self, request: Request, handler: ResponseHandler) -> ResponseHandler:
        """Wrap the handler of an initial INVITE so a 3xx is followed (§8.1.3.4) rather than
        ending the call; every other response goes to ``handler``."""

        def on_response(response: Response | None, now: float) -> None:
            if (
                response is not None
                and response.status in REDIRECT_STATUSES
                and self._redirect(request, response, now)
            ):
                return
            handler(response, now)

        return on_response

    def _redirect(self, request: Request, response: Response, now: float) -> bool:
        """RFC 3261 §8.1.3.4: send the INVITE again -- same Call-ID, From (tag), To and body,
        the next CSeq, a new branch -- with the best Contact of the 3xx (highest q, first
        among equals) that this call has not been sent to yet, as Request-URI. False (the
        3xx then ends the call) when there is none, the limit is reached, or the call was
        cancelled meanwhile. The transaction layer ACKs the 3xx itself (§17.1.1.3)."""
        call = next((c for c in self.calls if c.invite is request), None)
        if call is None or call.state not in (
            CallState.CALLING,
            CallState.PROCEEDING,
            CallState.EARLY,
        ):
            return False
        if getattr(call, "_cancelled", False) or getattr(call, "_cancel_pending", False):
            return False
        visited = self._redirected.setdefault(call.call_id, [request.uri])
        if len(visited) > MAX_REDIRECTS:
            log.info(
                "call %s: not following more than %d redirections", call.call_id, MAX_REDIRECTS
            )
            return False
        try:
            contacts = response.contacts
        except SipParseError:
            return False
        target = _best_redirect_target(contacts, visited)
        if target is None:
            return False
        visited.append(target)
        headers = Headers()
        for name, value in request.headers.items():
            if name.lower() == "via":
                continue
            if name.lower() == "cseq":
                value = f"{request.cseq.seq + 1} INVITE"
            headers.add(name, value)
        new = Request(method="INVITE", uri=target, headers=headers, body=request.body)
        log.info("call %s: %d redirects to %s", call.call_id, response.status, target)
        # the call starts over toward the new target (as after a challenge, §22.2)
        call.invite = new
        call.early_dialogs.clear()
        call.dialog = None
        call.state = CallState.CALLING
        if hasattr(call, "_provisional_seen"):
            call._provisional_seen = False
        self.emit(CallRedirected(call, response.status, target))
        self.send_request(new, call._on_invite_response, now)
        return True

    def send_ack(self, ack: Request, now: float, destination: SipURI | None = None) -> None:
        peer = self._prepare(ack, destination)
        self.transactions.send_stateless(ack, peer)
        self._pump(now)

    def respond(self, stx: ServerTransaction, response: Response, now: float) -> None:
        if "User-Agent" not in response.headers and self.config.user_agent:
            response.headers.add("User-Agent", self.config.user_agent)
        if response.status in (405, 501) or (
            stx.request.method in ("INVITE", "OPTIONS") and 100 < response.status < 300
        ):
            if "Allow" not in response.headers:
                response.headers.add("Allow", ", ".join(ALLOW))
        self.transactions.send_response(stx, response, now)
        self._pump(now)

    def retransmit_response(self, stx: ServerTransaction, response: Response, now: float) -> None:
        if stx.terminated:
            self.transactions.send_stateless(response, stx.destination)
        else:
            self.transactions.send_response(stx, response, now)
        self._pump(now)

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def answer_offer(self, call: Call, offer: bytes, content_type: str | None) -> bytes:
        if self.config.offer_handler is not None:
            return self.config.offer_handler(call, offer, content_type)
        return call.local_sdp

    def make_offer(self, call: Call) -> bytes:
        if self.config.reoffer_handler is not None:
            return self.config.reoffer_handler(call)
        return call.local_sdp

    def take_answer(self, call: Call, answer: bytes, content_type: str | None) -> None:
        if self.config.answer_handler is not None:
            self.config.answer_handler(call, answer, content_type)

    def call_terminated(self, call: Call) -> None:
        # Keep the call around for late retransmissions until its timers are done.
        pass

    def authorize(self, request: Request, challenge: Response) -> Request | None:
        """RFC 3261 §22.2: a copy of ``request`` with credentials, CSeq+1, no Via."""
        if self._auth is None:
            return None
        if not self._auth.handle_challenge(challenge, request):
            return None
        h = Headers()
        for hname, hvalue in request.headers.items():
            low = hname.lower()
            if low == "via":
                continue
            if low == "cseq":
                hvalue = f"{request.cseq.seq + 1} {request.method}"
            h.add(hname, hvalue)
        retry = Request(method=request.method, uri=request.uri, headers=h, body=request.body)
        self._auth.authorize(retry)
        return retry

    # ================================================================== output / timers / events

    def _pump(self, now: float) -> None:
        """Move transaction-layer output into our queue and dispatch its events."""
        while True:
            for out in self.transactions.messages_to_send():
                peer = out.destination if isinstance(out.destination, Peer) else None
                if peer is None:
                    continue
                self._out.append(Outgoing(out.message, peer, out.transaction))  # type: ignore[arg-type]
            event = self.transactions.next_event()
            if event is None:
                break
            self._dispatch(event, now)

    def messages_to_send(self) -> list[Outgoing]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = [self.transactions.get_timer(), self._refresh_at]
        times += [r.get_timer() for r in self.registrations]
        times += [c.get_timer() for c in self.calls]
        valid = [t for t in times if t is not None]
        return min(valid) if valid else None

    def handle_timer(self, now: float) -> None:
        self.transactions.handle_timer(now)
        self._pump(now)
        for reg in list(self.registrations):
            t = reg.get_timer()
            if t is not None and t <= now:
                req = reg.handle_timer(now)
                if req is not None:
                    self._send_register(reg, req, now)
                self._drain_registration(reg)
        for call in list(self.calls):
            t = call.get_timer()
            if t is not None and t <= now:
                call.handle_timer(now)
        if self._refresh_at is not None and self._refresh_at <= now:
            self._refresh_at = None
            self.refresh_dialog_targets(now, only=set(self._refresh_failures))
        self._gc_calls()
        self._pump(now)

    def transport_error(
        self, transaction: ClientTransaction | ServerTransaction, now: float
    ) -> None:
        """The I/O shell could not send a message of ``transaction`` (§17.1.4)."""
        self.transactions.transport_error(transaction, now)
        self._pump(now)

    def _gc_calls(self) -> None:
        live = {c.call_id for c in self.calls if c.state is not CallState.TERMINATED}
        for call_id in list(self._redirected):
            if not any(c.call_id == call_id for c in self.calls):
                del self._redirected[call_id]
        for call_id in list(self._refresh_failures):
            if call_id not in live:
                del self._refresh_failures[call_id]
        self.calls = [
            c
            for c in self.calls
            if c.state is not CallState.TERMINATED
            or c.get_timer() is not None
            or self._call_has_transactions(c)
        ]

    def _call_has_transactions(self, call: Call) -> bool:
        return any(
            tx.request.headers.get("Call-ID") == call.call_id
            for tx in (
                *self.transactions.client_transactions(),
                *self.transactions.server_transactions(),
            )
        )

    # ================================================================== receiving

    def receive(self, data: bytes | Request | Response, peer: Peer, now: float) -> None:
        """A message (or raw datagram) from ``peer``."""
        if isinstance(data, bytes):
            try:
                message = parse_message(data)
            except SipParseError as exc:
                log.info("unparseable message from %s: %s", peer, exc)
                self._answer_unparseable(data, peer)
                return
        else:
            message = data
        if isinstance(message, Request):
            self._receive_request(message, peer, now)
        else:
            self.transactions.receive(message, now, reliable=peer.reliable, source=peer)
        self._pump(now)

    def receive_unparseable(self, data: bytes, peer: Peer, now: float) -> None:
        """The I/O shell could not parse ``data``: answer 400 if a response can be built."""
        self._answer_unparseable(data, peer)

    def _answer_unparseable(self, data: bytes, peer: Peer) -> None:
        resp_bytes = response_for_unparseable(data)
        if resp_bytes is None:
            return
        try:
            resp = parse_message(resp_bytes)
        except SipParseError:
            return
        if isinstance(resp, Response):
            self._out.append(Outgoing(resp, peer))

    def _receive_request(self, request: Request, peer: Peer, now: float) -> None:
        _stamp_received(request, peer)
        bad = check_request(
            request,
            methods=ALLOW,
            supported=self.config.supported,
            accept=self.config.accept + self.config.info_accept
            if request.method == "INFO"
            else self.config.accept,
        )
        if bad is not None:
            if request.method != "ACK":
                log.info("rejecting %s with %d", request.method, bad.status)
                if "User-Agent" not in bad.headers and self.config.user_agent:
                    bad.headers.add("User-Agent", self.config.user_agent)
                self._out.append(Outgoing(bad, peer))
                self.emit(RequestRejected(request.method, bad.status))
            return
        self.transactions.receive(request, now, reliable=peer.reliable, source=peer)

    def _dispatch(self, event: Any, now: float) -> None:
        try:
            self._dispatch_event(event, now)
        except (SipParseError, ValueError) as exc:
            # A malformed header in a message that matched a transaction or dialog: drop it.
            log.info("dropping %s: %s", type(event).__name__, exc)

    def _dispatch_event(self, event: Any, now: float) -> None:
        if isinstance(event, RequestReceived):
            try:
                self._on_request(event.transaction, event.request, now)
            except (SipParseError, ValueError) as exc:
                log.info("bad %s request: %s", event.request.method, exc)
                if event.request.method != "ACK":
                    self._reply(event.transaction, event.request, 400, now, reason="Bad Request")
        elif isinstance(event, AckReceived):
            self._on_ack(event.request, now)
        elif isinstance(event, ResponseReceived):
            ctx = event.transaction
            if id(ctx) in self._attempts:
                if event.response.status == 503:
                    # RFC 3263 §4.3: the element is unavailable; try the next one
                    handler = self._handlers.get(id(ctx))
                    if handler is not None and self._fail_over(ctx, handler, now, unavailable=True):
                        self._handlers.pop(id(ctx), None)
                        return
                self._answered.add(id(ctx))
            handler = self._handlers.get(id(event.transaction))
            if handler is not None:
                # Marked first: the handler may send requests, which pumps the later events
                # (this transaction's Terminated among them) before it returns.
                final = event.response.status >= 200
                if final:
                    self._finals.add(id(event.transaction))
                try:
                    handler(event.response, now)
                except (SipParseError, ValueError):
                    if final:
                        self._finals.discard(id(event.transaction))
                    raise
        elif isinstance(event, (TimedOut, TransportError)):
            tx = event.transaction
            if tx.is_client:
                handler = self._handlers.pop(id(tx), None)
                if handler is not None:
                    assert isinstance(tx, ClientTransaction)
                    if not self._fail_over(tx, handler, now):
                        handler(None, now)
        elif isinstance(event, Terminated):
            key = id(event.transaction)
            self._attempts.pop(key, None)
            self._answered.discard(key)
            handler = self._handlers.pop(key, None)
            if key in self._finals:
                self._finals.discard(key)
            elif handler is not None and event.transaction.is_client:
                # Ended without a final response its owner could use (e.g. a malformed 2xx):
                # report it like a timeout so no call or registration hangs.
                handler(None, now)
        elif isinstance(event, StrayResponse):
            self._on_stray(event.response, now)

    # ------------------------------------------------------------------ requests

    def _reply(
        self,
        stx: ServerTransaction,
        request: Request,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        resp = make_response(request, status, reason, to_tag=new_tag() if status > 100 else None)
        for name, value in headers or []:
            resp.headers.add(name, value)
        if status >= 300:
            self.emit(RequestRejected(request.method, status))
        self.respond(stx, resp, now)

    def _find_call(
        self, call_id: str, local_tag: str | None, remote_tag: str | None
    ) -> Call | None:
        for call in self.calls:
            if call.call_id != call_id:
                continue
            d = call.dialog
            if (
                d is not None
                and d.local_tag == local_tag
                and (not d.remote_tag or d.remote_tag == remote_tag)
            ):
                return call
            if d is not None and d.local_tag == local_tag and remote_tag in call.early_dialogs:
                call.dialog = call.early_dialogs[remote_tag]
                return call
        return None

    def _on_request(self, stx: ServerTransaction, request: Request, now: float) -> None:
        method = request.method
        to_tag = request.to_addr.tag
        from_tag = request.from_addr.tag
        if method == "CANCEL":
            self._on_cancel(stx, request, now)
            return
        if to_tag:
            call = self._find_call(request.call_id, to_tag, from_tag)
            if call is None:
                self._reply(stx, request, 481, now)
                return
            assert call.dialog is not None
            if not call.dialog.check_remote_cseq(request):
                self._reply(stx, request, 500, now, reason="Out Of Order")
                return
            if method == "BYE":
                call.receive_bye(request, stx, now)
            elif method == "INVITE":
                call.receive_reinvite(request, stx, now)
            elif method == "UPDATE":
                call.receive_update(request, stx, now)
            elif method == "INFO":
                call.receive_info(request, stx, now)
            elif method == "OPTIONS":
                self._answer_options(stx, request, now)
            else:
                self._reply(stx, request, 405, now)
            return
        # ---- out of dialog
        if method == "INVITE":
            self._on_invite(stx, request, now)
        elif method == "OPTIONS":
            self._answer_options(stx, request, now)
        elif method in ("BYE", "UPDATE", "INFO", "PRACK"):
            self._reply(stx, request, 481, now)
        else:
            self._reply(stx, request, 405, now)

    def _answer_options(self, stx: ServerTransaction, request: Request, now: float) -> None:
        """§11.2: 200 with Allow, Accept, Supported (and Accept-Encoding/Language)."""
        resp = make_response(request, 200, to_tag=None if request.to_addr.tag else new_tag())
        resp.headers.add("Allow", ", ".join(ALLOW))
        resp.headers.add("Accept", ", ".join(self.config.accept))
        resp.headers.add("Accept-Encoding", "identity")
        resp.headers.add("Accept-Language", "en")
        # Always present: an empty Supported says we need no extension (§20.37).
        resp.headers.add("Supported", ", ".join(self.config.supported))
        resp.headers.add("Contact", self.contact())
        self.respond(stx, resp, now)

    def _on_invite(self, stx: ServerTransaction, request: Request, now: float) -> None:
        ctype = request.headers.get("Content-Type")
        if request.body:
            base = (ctype or "").split(";", 1)[0].strip().lower()
            if base not in [a.lower() for a in self.config.accept]:
                self._reply(
                    stx, request, 415, now, headers=[("Accept", ", ".join(self.config.accept))]
                )
                return
            enc = request.headers.get("Content-Encoding")
            if enc and enc.strip().lower() != "identity":
                self._reply(stx, request, 415, now, headers=[("Accept-Encoding", "identity")])
                return
        accepts = request.headers.get_all("Accept")
        if accepts:
            types = [a.split(";", 1)[0].strip().lower() for a in accepts]
            ok = any(t in ("*/*", "application/*", SDP) for t in types)
            if not ok:
                self._reply(stx, request, 406, now, headers=[("Accept", SDP)])
                return
        if self._is_merged(request):
            # §8.2.2.2: the same request reached us over two paths of a forking proxy.
            self._reply(stx, request, 482, now)
            return
        # 100 Trying at once (§8.2.6.1): the call may ring for a long time.
        self.respond(stx, make_response(request, 100), now)
        call = Call(self, Direction.INCOMING, request.call_id, rng=self.rng)
        call.session_timers = "timer" in self.config.supported  # RFC 4028
        self.calls.append(call)
        call.receive_invite(request, stx, now)

    def _is_merged(self, request: Request) -> bool:
        """§8.2.2.2: no To tag, and From tag, Call-ID and CSeq equal to those of a request
        in progress that arrived on another transaction."""
        tag = request.from_addr.tag
        seq = request.cseq.seq
        for call in self.calls:
            inv = call.invite
            if call.direction is not Direction.INCOMING or inv is None:
                continue
            if call.call_id == request.call_id and inv.cseq.seq == seq:
                if inv.from_addr.tag == tag and call.state is not CallState.TERMINATED:
                    return True
        return False

    def _on_cancel(self, stx: ServerTransaction, request: Request, now: float) -> None:
        """§9.2: 200 to the CANCEL, then 487 to the INVITE if it is still pending."""
        invite_tx = self.transactions.find_cancelled(request)
        if invite_tx is None:
            self._reply(stx, request, 481, now)
            return
        self.respond(stx, make_response(request, 200), now)
        for call in self.calls:
            if call._stx is invite_tx:
                call.receive_cancel(now)
                return
        # An INVITE we never turned into a call (should not happen): end its transaction.
        if invite_tx.state.value == "Proceeding":
            self.respond(invite_tx, make_response(invite_tx.request, 487, to_tag=new_tag()), now)

    def _on_ack(self, ack: Request, now: float) -> None:
        try:
            call = self._find_call(ack.call_id, ack.to_addr.tag, ack.from_addr.tag)
        except SipParseError:
            return
        if call is not None:
            call.receive_ack(ack, now)

    def _on_stray(self, response: Response, now: float) -> None:
        """A response for a finished transaction: a 2xx to an INVITE still needs its ACK."""
        try:
            if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
                return
            call_id = response.call_id
            from_tag = response.from_addr.tag
        except SipParseError:
            return
        for call in self.calls:
            if call.call_id == call_id and call.direction is Direction.OUTGOING:
                if call.dialog is not None and call.dialog.local_tag == from_tag:
                    call._on_invite_response(response, now)
                    return

    # ================================================================== outgoing requests

    def _add_outbound_route(self, request: Request) -> None:
        """§8.1.2: a preloaded Route to the outbound proxy (made loose with ;lr)."""
        proxy = self.config.outbound_proxy
        if not proxy:
            return
        uri = SipURI.parse(proxy)
        if "lr" not in uri.params:
            uri.params["lr"] = None
        request.headers.add("Route", f"<{uri}>")

    def _new_request(
        self, method: str, target: str, *, to: str | None = None, call_id: str | None = None
    ) -> Request:
        h = Headers()
        local = NameAddr(
            uri=SipURI.parse(self.config.aor),
            display_name=self.config.display_name,
            params={"tag": new_tag()},
        )
        h.add("From", str(local))
        h.add("To", to or f"<{target}>")
        h.add("Call-ID", call_id or new_call_id())
        h.add("CSeq", f"1 {method}")
        h.add("Max-Forwards", "70")
        req = Request(method=method, uri=target, headers=h)
        self._add_outbound_route(req)
        return req

    def complete_uri(self, target: str) -> str:
        """``bob`` -> ``sip:bob@<domain>``; ``bob@host`` -> ``sip:bob@host``."""
        if ":" in target.split("@", 1)[0] and target.split(":", 1)[0].lower() in (
            "sip",
            "sips",
            "tel",
        ):
            return target
        if "@" not in target:
            return f"sip:{target}@{self.config.domain}"
        return f"sip:{target}"

    def invite(
        self,
        target: str,
        sdp: bytes,
        now: float,
        *,
        content_type: str = SDP,
        headers: list[tuple[str, str]] | None = None,
    ) -> Call:
        """Start an outgoing call (§13.2.1); events follow on :meth:`next_event`."""
        uri = self.complete_uri(target)
        SipURI.parse(uri)  # raises SipParseError on a bad target
        req = self._new_request("INVITE", uri)
        req.headers.add("Contact", self.contact())
        for name, value in headers or []:
            req.headers.add(name, value)
        if sdp:
            req.body = sdp
            req.headers.add("Content-Type", content_type)
        call = Call(self, Direction.OUTGOING, req.call_id, rng=self.rng)
        call.session_timers = "timer" in self.config.supported  # RFC 4028
        self.calls.append(call)
        call.start(req, now)
        return call

    def options(self, target: str, now: float) -> None:
        """Send an out-of-dialog OPTIONS (§11.1); the outcome is an :class:`OptionsResult`."""
        uri = self.complete_uri(target)
        req = self._new_request("OPTIONS", uri)
        req.headers.add("Accept", SDP)

        def on_response(resp: Response | None, t: float) -> None:
            if resp is None:
                self.emit(OptionsResult(uri, 408, None))
            elif resp.status in (401, 407):
                retry = self.authorize(req, resp)
                if retry is not None:
                    self.send_request(retry, on_final, t)
                else:
                    self.emit(OptionsResult(uri, resp.status, resp))
            elif resp.status >= 200:
                self.emit(OptionsResult(uri, resp.status, resp))

        def on_final(resp: Response | None, t: float) -> None:
            if resp is None:
                self.emit(OptionsResult(uri, 408, None))
            elif resp.status >= 200:
                self.emit(OptionsResult(uri, resp.status, resp))

        self.send_request(req, on_response, now)

    # ================================================================== registration

    def register(
        self, now: float, *, expires: int | None = None, registrar: str | None = None
    ) -> Registration:
        """Register our contact for the account's AOR (§10); refreshes run on the timer."""
        reg_uri = registrar or self.config.registrar or f"sip:{self.config.domain}"
        for reg in self.registrations:
            if reg.config.registrar == reg_uri:
                self._send_register(reg, reg.start(now), now)
                return reg
        cfg = RegistrationConfig(
            aor=self.config.aor,
            registrar=reg_uri,
            contact=self.contact_uri(),
            expires=expires if expires is not None else self.config.register_expires,
            display_name=self.config.display_name,
            rewrite_contact=self.config.rewrite_contact,
            instance_id=self.instance_id,
            reg_id=self.config.reg_id if self.config.outbound else None,
            flow_backoff=self.config.flow_backoff,
        )
        reg = Registration(cfg, rng=self.rng)
        self.registrations.append(reg)
        self._send_register(reg, reg.start(now), now)
        return reg

    def unregister(self, now: float) -> None:
        """§10.2.2: remove our bindings (Expires: 0)."""
        for reg in self.registrations:
            req = reg.unregister(now)
            if req is not None:
                self._send_register(reg, req, now)

    def flow_failed(self, now: float) -> None:
        """RFC 5626 §4.4.1/§4.5: the flow to the registrar failed (the I/O shell saw no
        keepalive response, or the connection closed): register every binding again at once
        over a new flow; failures back off per ``UAConfig.flow_backoff``. Once registered
        again over TCP/TLS, ongoing calls get a target refresh (:meth:`refresh_dialog_targets`)."""
        if self.config.transport.lower() in ("tcp", "tls"):
            self._refresh_targets_after_recovery = True
        for reg in self.registrations:
            req = reg.flow_failed(now)
            if req is not None:
                self._send_register(reg, req, now)
            self._drain_registration(reg)

    def refresh_dialog_targets(self, now: float, only: set[str] | None = None) -> int:
        """RFC 3261 §12.2.1.2 / RFC 3311 §5.1: send every confirmed call (or those whose
        Call-ID is in ``only``) an UPDATE without a body carrying our Contact (a target
        refresh). After our flow to the proxy was replaced (a new connection, maybe a new NAT
        mapping), a proxy without RFC 5626 flow tokens that learns our address from the
        requests we send (Kamailio's ``;alias``) gives the peer a remote target that reaches
        us over the new flow. An UPDATE that fails (the peer may be recovering its own flow
        at the same moment) is sent again up to ``TARGET_REFRESH_TRIES`` times, a little
        later each time. Calls whose peer does not allow UPDATE are left alone (a re-INVITE
        would involve the offer/answer). A call we answered whose ACK has not come yet is
        refreshed too: its dialog is confirmed (RFC 3261 §12.1.1), the UPDATE carries no
        offer (RFC 3311 §5.1), and the caller's ACK (sent again on each 2xx retransmission,
        §13.3.1.4) needs the new target to reach us at all. Returns how many UPDATEs were
        sent."""
        sent = 0
        for call in self.calls:
            dialog = call.dialog
            if call.state not in (CallState.CONNECTED, CallState.ANSWERED) or dialog is None:
                continue
            if only is not None and call.call_id not in only:
                continue
            if not call.allows("UPDATE"):
                log.info("call %s: peer does not allow UPDATE; no target refresh", call.call_id)
                continue
            dialog.local_contact = self.contact()
            req = dialog.create_request("UPDATE")

            def on_response(resp: Response | None, t: float, call: Call = call) -> None:
                if resp is not None and resp.status < 200:
                    return
                if resp is not None and resp.status < 300:
                    self._refresh_failures.pop(call.call_id, None)
                    if call.dialog is not None:
                        call.dialog.refresh_target(resp)
                    return
                status = resp.status if resp is not None else 408
                tries = self._refresh_failures.get(call.call_id, 0) + 1
                if status in (405, 481, 501) or tries >= TARGET_REFRESH_TRIES:
                    log.info("call %s: target refresh failed (%d)", call.call_id, status)
                    self._refresh_failures.pop(call.call_id, None)
                    return
                self._refresh_failures[call.call_id] = tries
                at = t + TARGET_REFRESH_RETRY * tries
                self._refresh_at = at if self._refresh_at is None else min(self._refresh_at, at)
                log.info("call %s: target refresh got %d; again in %.0f s", call.call_id,
                         status, at - t)  # fmt: skip

            log.info("call %s: target refresh (UPDATE) after a new flow", call.call_id)
            self.send_request(req, on_response, now, dialog.next_hop())
            sent += 1
        return sent

    def change_local_address(self, host: str, now: float, *, refresh_dialogs: bool = False) -> bool:
        """Our local address is now ``host`` (the old one went away, or the route toward the
        proxy leaves from another one). False, and nothing done, when it is the same.

        - Via sent-by and Contact use ``host`` from now on (RFC 3261 §18.1.1, §8.1.1.8).
        - The public address learned from the registrar's ``received``/``rport`` (RFC 3581
          §4, :attr:`public_host`) belonged to the old network and is dropped; the next
          REGISTER's response teaches the new one (contact rewriting, ``sip.registration``).
        - Every registration sends a REGISTER at once with the new Contact, removing the old
          binding (RFC 3261 §10.2.2; RFC 5626 §6 replacement with outbound), see
          :meth:`sip.registration.Registration.change_contact`.
        - Ongoing dialogs take the new Contact as their local target: their next target
          refresh -- a re-INVITE (§14.1) or UPDATE (RFC 3311 §5.1), e.g. the ICE restart's
          re-INVITE of the application -- and our 2xx to the peer's carry it (§12.2.1.1),
          so the peer's later in-dialog requests (BYE, re-INVITE) reach the new address.
          With ``refresh_dialogs`` every confirmed call is sent an UPDATE without a body
          (:meth:`refresh_dialog_targets`) -- once registered again, when registering --
          for applications that send nothing else.
        """
        if host == self.config.local_host:
            return False
        log.info("local address %s -> %s", self.config.local_host, host)
        self.config.local_host = host
        self.public_host = self.public_port = None
        contact = self.contact()  # (;ob kept while the outbound binding is being moved)
        for call in self.calls:
            if call.dialog is not None and call.state is not CallState.TERMINATED:
                call.dialog.local_contact = contact
        uri = self.contact_uri()
        for reg in self.registrations:
            request = reg.change_contact(uri, now)
            if request is not None:
                self._send_register(reg, request, now)
            self._drain_registration(reg)
        self._refresh_failures.clear()
        if refresh_dialogs:
            if self.recovering:  # once registered at the new address (as after a new flow)
                self._refresh_targets_after_recovery = True
            else:
                self.refresh_dialog_targets(now)
        return True

    @property
    def recovering(self) -> bool:
        """Some binding we want is not registered (being registered again, or backing off)."""
        return any(reg.recovering for reg in self.registrations)

    def _send_register(self, reg: Registration, request: Request, now: float) -> None:
        if "Route" not in request.headers:  # a challenged retry keeps the copied Route
            self._add_outbound_route(request)
        seq = request.cseq.seq

        def on_response(resp: Response | None, t: float) -> None:
            if resp is None:
                if seq == reg.cseq:  # not a REGISTER superseded by a newer one
                    reg.handle_timeout(t)
                    self._drain_registration(reg)
                return
            if resp.status < 200:
                return
            if resp.cseq.seq != reg.cseq:
                return
            if resp.status in (401, 407):
                retry = self.authorize(request, resp)
                if retry is not None:
                    reg.cseq = retry.cseq.seq
                    self._send_register(reg, retry, t)
                    return
            nxt = reg.handle_response(resp, t)
            self._adopt_public_address(reg)
            if nxt is not None:
                self._send_register(reg, nxt, t)
            elif reg.registered and self._refresh_targets_after_recovery:
                self._refresh_targets_after_recovery = False
                self.refresh_dialog_targets(t)
            self._drain_registration(reg)

        self.send_request(request, on_response, now)

    def _adopt_public_address(self, reg: Registration) -> None:
        """NAT: use the public address the registrar saw in our Contact from now on."""
        try:
            uri = SipURI.parse(reg.contact)
        except SipParseError:
            return
        if uri.host != self.contact_host or (uri.port or 5060) != self.contact_port:
            log.info("contact address now %s:%s", uri.host, uri.port)
            self.public_host = uri.host
            self.public_port = uri.port

    def _drain_registration(self, reg: Registration) -> None:
        while (ev := reg.next_event()) is not None:
            self.emit(ev)

    # ================================================================== shutdown

    def close(self, now: float) -> None:
        """Hang up every call and unregister."""
        for call in list(self.calls):
            if call.state is not CallState.TERMINATED:
                call.hangup(now)
        self.unregister(now)

    @property
    def idle(self) -> bool:
        """True when no request waits for its final response and every call has ended."""
        waiting = (State.CALLING, State.TRYING, State.PROCEEDING)
        return not any(
            tx.state in waiting for tx in self.transactions.client_transactions()
        ) and all(c.state is CallState.TERMINATED for c in self.calls)

    def incoming_calls(self) -> list[Call]:
        return [c for c in self.calls if c.direction is Direction.INCOMING]


# ---------------------------------------------------------------------- collaborators


def _best_redirect_target(contacts: list[NameAddr], visited: list[str]) -> str | None:
    """§8.1.3.4: the Contact of a 3xx to try: a sip/sips URI not tried yet, highest ``q``
    first (a missing q counts as 1.0), URI headers dropped."""

    def q(contact: NameAddr) -> float:
        try:
            return float(contact.params.get("q") or 1.0)
        except ValueError:
            return 0.0

    for contact in sorted(contacts, key=q, reverse=True):
        uri = contact.uri
        if uri.scheme not in ("sip", "sips"):
            continue
        target = str(
            SipURI(
                scheme=uri.scheme,
                user=uri.user,
                password=uri.password,
                host=uri.host,
                port=uri.port,
                params=dict(uri.params),
            )
        )
        if target not in visited:
            return target
    return None


def _make_auth(config: UAConfig) -> DigestClient | None:
    if config.password is None:
        return None
    return DigestClient(Credentials(config.auth_user or config.user, config.password))


__all__ = [
    "ALLOW",
    "DEFAULT_FLOW_BACKOFF",
    "Call",
    "CallRedirected",
    "Event",
    "IncomingCall",
    "OptionsResult",
    "Outgoing",
    "Peer",
    "RequestRejected",
    "UAConfig",
    "ROUTE_PROBES",
    "ROUTE_PROBES_V6",
    "UserAgent",
    "choose_local_host",
    "peer_for_uri",
    "usable_local_host",
]
