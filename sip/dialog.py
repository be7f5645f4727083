"""SIP dialogs (RFC 3261 §12).

A :class:`Dialog` holds the state that RFC 3261 §12 defines for a peer-to-peer relationship between
two user agents: the dialog id (Call-ID, local tag, remote tag), the local and remote CSeq numbers,
the local and remote URIs, the remote target and the route set.  It builds in-dialog requests
(§12.2.1.1: loose routing, with the strict-routing fallback of §12.2.1.1 for a first route without
``;lr``), the ACK for a 2xx (§13.2.2.4, with its own branch), checks the CSeq of incoming in-dialog
requests (§12.2.2) and refreshes the remote target (§12.2.1.2, §12.2.2, RFC 3311 §5).

Route-set entries are kept verbatim as the Record-Route values the proxies wrote, parameters and all
(``;lr;r2=on``, ``;nat=yes``, ``;alias=...``), so a proxy that double-record-routes (one entry per
transport side) sees both of its entries come back unchanged.

Pure data manipulation: no I/O, no clock.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, replace
from enum import Enum

from sip.message import Headers, Request, Response, new_branch
from sip.uri import NameAddr, SipURI

log = logging.getLogger("sip.dialog")

# RFC 3261 §19.1.1: parameters/headers that may not appear in a Request-URI.
_NOT_IN_REQUEST_URI = ("method",)


@dataclass(frozen=True)
class DialogId:
    """RFC 3261 §12: a dialog is identified by Call-ID, local tag and remote tag."""

    call_id: str
    local_tag: str
    remote_tag: str


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def _with_tag(addr: NameAddr, tag: str | None) -> str:
    params = {k: v for k, v in addr.params.items() if k != "tag"}
    if tag:
        params["tag"] = tag
    return str(NameAddr(uri=addr.uri, display_name=addr.display_name, params=params))


def _strip_for_request_uri(uri: SipURI) -> SipURI:
    """RFC 3261 §12.2.1.1 / §19.1.1 table 1: a Request-URI has no headers and no ``method``."""
    params = {k: v for k, v in uri.params.items() if k not in _NOT_IN_REQUEST_URI}
    return replace(uri, params=params, headers={})


def route_uri(route: str) -> SipURI:
    """The URI of one Route/Record-Route value (``<sip:p1;lr>;foo`` -> ``sip:p1;lr``)."""
    return NameAddr.parse(route).uri


def is_loose(route: str) -> bool:
    """RFC 3261 §19.1.1: the ``lr`` URI parameter marks a loose router."""
    return "lr" in route_uri(route).params


def request_destination(request: Request) -> SipURI:
    """RFC 3261 §8.1.2 / §12.2.1.1: the URI whose address the request is sent to.

    The first Route value when it is a loose router; otherwise the Request-URI (which, for a
    strict router, has been set to the router's URI by :meth:`Dialog.create_request`).  For
    in-dialog requests prefer :meth:`Dialog.next_hop`, which also knows a strict first hop
    followed by loose ones.
    """
    routes = request.headers.get_all("Route")
    if routes and is_loose(routes[0]):
        return route_uri(routes[0])
    return request.request_uri


def apply_route_set(
    headers: Headers, route_set: list[str], remote_target: str
) -> tuple[str, list[str]]:
    """RFC 3261 §12.2.1.1: Request-URI and Route values for a route set and remote target.

    Empty route set: R-URI = remote target, no Route.  Loose first hop: R-URI = remote target,
    Route = route set.  Strict first hop: R-URI = the first route's URI (stripped), Route = the rest
    of the route set followed by the remote target.  Sets the Route headers; returns the R-URI.
    """
    headers.remove("Route")
    if not route_set:
        return remote_target, []
    if is_loose(route_set[0]):
        routes = list(route_set)
        ruri = remote_target
    else:
        ruri = str(_strip_for_request_uri(route_uri(route_set[0])))
        routes = list(route_set[1:]) + [f"<{remote_target}>"]
    for r in routes:
        headers.add("Route", r)
    return ruri, routes


@dataclass
class Dialog:
    """RFC 3261 §12.1 dialog state."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr
    remote_uri: NameAddr
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    secure: bool = False
    is_uac: bool = True
    state: DialogState = DialogState.EARLY
    local_contact: str = ""

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    # ------------------------------------------------------------------ creation (§12.1)

    @classmethod
    def from_uac_response(
        cls, request: Request, response: Response, local_contact: str = ""
    ) -> Dialog:
        """RFC 3261 §12.1.2: the UAC side, from a 1xx-with-To-tag or 2xx response to ``request``.

        Route set = Record-Route of the response in reverse order; remote target = its Contact.
        """
        to = response.to_addr
        frm = request.from_addr
        contacts = _safe_contacts(response)
        target = str(contacts[0].uri) if contacts else str(request.request_uri)
        rr = list(reversed(response.headers.get_all("Record-Route")))
        state = DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY
        secure = request.request_uri.scheme == "sips"
        return cls(
            call_id=request.call_id,
            local_tag=frm.tag or "",
            remote_tag=to.tag or "",
            local_uri=frm,
            remote_uri=to,
            remote_target=target,
            route_set=rr,
            local_seq=request.cseq.seq,
            remote_seq=None,
            secure=secure,
            is_uac=True,
            state=state,
            local_contact=local_contact,
        )

    @classmethod
    def from_uas_request(
        cls,
        request: Request,
        local_tag: str,
        local_contact: str = "",
        *,
        confirmed: bool = False,
        rng: random.Random | None = None,
    ) -> Dialog:
        """RFC 3261 §12.1.1: the UAS side, from the dialog-creating request.

        Route set = Record-Route of the request in order; remote target = its Contact; remote
        CSeq = the request's; the local CSeq is chosen at random below 2**31 (§8.1.1.5).
        """
        contacts = _safe_contacts(request)
        frm = request.from_addr
        target = str(contacts[0].uri) if contacts else str(frm.uri)
        local_seq = (rng or random).randint(1, 2**16)
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=frm.tag or "",
            local_uri=request.to_addr,
            remote_uri=frm,
            remote_target=target,
            route_set=list(request.headers.get_all("Record-Route")),
            local_seq=local_seq,
            remote_seq=request.cseq.seq,
            secure=request.request_uri.scheme == "sips",
            is_uac=False,
            state=DialogState.CONFIRMED if confirmed else DialogState.EARLY,
            local_contact=local_contact,
        )

    # ------------------------------------------------------------------ updates

    def confirm_with(self, response: Response) -> None:
        """RFC 3261 §13.2.2.4 / §12.1.2: a 2xx confirms an early dialog (UAC side).

        The route set and remote target are recomputed from the 2xx.
        """
        if self.is_uac and self.state is DialogState.EARLY:
            self.route_set = list(reversed(response.headers.get_all("Record-Route")))
        self.refresh_target(response)
        self.state = DialogState.CONFIRMED

    def update_early(self, response: Response) -> None:
        """A further 1xx on an early dialog may carry a new Contact / Record-Route (§12.1.2)."""
        if self.state is DialogState.EARLY:
            rr = response.headers.get_all("Record-Route")
            if rr:
                self.route_set = list(reversed(rr)) if self.is_uac else list(rr)
            self.refresh_target(response)

    def refresh_target(self, message: Request | Response) -> None:
        """RFC 3261 §12.2.1.2 / §12.2.2 / RFC 3311 §5: take the remote target from Contact."""
        contacts = _safe_contacts(message)
        if contacts:
            new = str(contacts[0].uri)
            if new != self.remote_target:
                log.debug("dialog %s: remote target -> %s", self.call_id, new)
                self.remote_target = new

    def check_remote_cseq(self, request: Request) -> bool:
        """RFC 3261 §12.2.2: False when the request is out of order (answer 500).

        ACK and CANCEL carry the INVITE's number and are never out of order by this rule.
        """
        seq = request.cseq.seq
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and seq < self.remote_seq:
            return False
        self.remote_seq = seq
        return True

    # ------------------------------------------------------------------ building requests

    def next_hop(self) -> SipURI:
        """RFC 3261 §8.1.2/§12.2.1.1: where in-dialog requests go: the first route-set entry
        (a loose router, or a strict router that becomes the Request-URI), else the remote
        target."""
        if self.route_set:
            return route_uri(self.route_set[0])
        return SipURI.parse(self.remote_target)

    def _base_headers(self, method: str, seq: int) -> Headers:
        h = Headers()
        h.add("From", _with_tag(self.local_uri, self.local_tag))
        h.add("To", _with_tag(self.remote_uri, self.remote_tag))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{seq} {method}")
        h.add("Max-Forwards", "70")
        return h

    def create_request(
        self,
        method: str,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: list[tuple[str, str]] | None = None,
        *,
        seq: int | None = None,
    ) -> Request:
        """RFC 3261 §12.2.1.1: a new in-dialog request (not ACK; see :meth:`create_ack`).

        The local CSeq is incremented by one unless ``seq`` is given.  No Via is added: the
        transaction layer / UA core adds the Via with a fresh branch.
        """
        if seq is None:
            self.local_seq += 1
            seq = self.local_seq
        h = self._base_headers(method, seq)
        ruri, _ = apply_route_set(h, self.route_set, self.remote_target)
        if self.local_contact and method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
            h.add("Contact", self.local_contact)
        for name, value in extra_headers or []:
            h.add(name, value)
        if body:
            h.add("Content-Type", content_type or "application/sdp")
        return Request(method=method, uri=ruri, headers=h, body=body)

    def create_ack(
        self,
        invite_seq: int,
        body: bytes = b"",
        content_type: str | None = None,
        via: str | None = None,
    ) -> Request:
        """RFC 3261 §13.2.2.4: the ACK for a 2xx, a new request with the INVITE's CSeq number.

        Built from the dialog like any in-dialog request (same route set and Request-URI rules),
        with its own Via branch (``via`` is the sent-by part, e.g. ``SIP/2.0/UDP 1.2.3.4:5060``;
        the branch is added here).
        """
        h = self._base_headers("ACK", invite_seq)
        ruri, _ = apply_route_set(h, self.route_set, self.remote_target)
        if via is not None:
            h.add("Via", f"{via};branch={new_branch()}")
            # Put Via first in header order for readability.
            h = _via_first(h)
        if body:
            h.add("Content-Type", content_type or "application/sdp")
        return Request(method="ACK", uri=ruri, headers=h, body=body)


def _via_first(h: Headers) -> Headers:
    out = Headers()
    for name, value in h.items():
        if name.lower() == "via":
            out.add(name, value)
    for name, value in h.items():
        if name.lower() != "via":
            out.add(name, value)
    return out


def _safe_contacts(message: Request | Response) -> list[NameAddr]:
    try:
        return list(message.contacts)
    except ValueError:
        return []
