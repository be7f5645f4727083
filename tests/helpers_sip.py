"""Helpers shared by the SIP tests: requests written out as they would be on the wire, the SDP
and SIPp scenario files of tests/data, the SIP messages in ``softphone --trace`` output, and
the sans-I/O set-ups on a virtual clock (tests.unit.test_ua's SimNet): a digest registrar,
user agents registering through it, a call to a registered user agent, a registration core."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sip import invite as inv
from sip.auth import make_challenge, parse_authorization, verify_authorization
from sip.headers import Via
from sip.message import Headers, Request, Response, make_response, new_tag, parse_message
from sip.registration import Registered, Registration, RegistrationConfig
from sip.ua import Peer, UserAgent
from sip.uri import NameAddr
from tests.unit.test_ua import SDP_A, FakePeer, SimNet, auto_answer, make_ua


def wire_request(
    start_line: str,
    *,
    via: str,
    from_: str,
    to: str,
    call_id: str,
    cseq: str,
    extra: Iterable[str] = (),
) -> Request:
    """Parse a body-less request written header by header: Via, Max-Forwards: 70, From, To,
    Call-ID, CSeq, then the ``extra`` header lines (``"Name: value"``) and Content-Length: 0."""
    headers = {"Via": via, "Max-Forwards": "70", "From": from_, "To": to, "Call-ID": call_id}
    lines = [start_line, *(f"{name}: {value}" for name, value in headers.items()), f"CSeq: {cseq}"]
    lines += [*extra, "Content-Length: 0", "", ""]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message


SDP_SAMPLES = Path(__file__).parent / "data" / "sdp"


def sdp_sample(name: str) -> str:
    """The SDP test vector ``tests/data/sdp/NAME.sdp``, as written there (LF line ends)."""
    return (SDP_SAMPLES / f"{name}.sdp").read_text(encoding="ascii")


SIPP_SCENARIOS = Path(__file__).parent / "data" / "sipp"


def sipp_scenario(name: str) -> Path:
    """The SIPp scenario file ``tests/data/sipp/NAME.xml``."""
    return SIPP_SCENARIOS / f"{name}.xml"


_TRACE_HEADER = re.compile(r"^\S+ \S+ sip\.trace \w+ (send|recv) ")
_OTHER_LINE = re.compile(r"^(\d{4}-\d\d-\d\d |\[\s*[\d.]+s\]|\{)")


def traced_messages(stderr: str) -> list[tuple[str, str]]:
    """(direction ``send``/``recv``, text) of every SIP message in ``softphone --trace``
    output (logger ``sip.trace``); a log line, a progress line or the JSON report ends one."""
    messages: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in stderr.splitlines():
        header = _TRACE_HEADER.match(line)
        if header:
            current = []
            messages.append((header.group(1), current))
        elif _OTHER_LINE.match(line):
            current = None
        elif current is not None:
            current.append(line)
    return [(d, "\n".join(lines)) for d, lines in messages]


def traced_sdp(stderr: str, direction: str) -> str:
    """The SDP (from its ``v=0`` line) of the first SIP message in ``softphone --trace``
    output that went in ``direction`` (``send``/``recv``) with one."""
    for sent_or_received, text in traced_messages(stderr):
        if sent_or_received == direction and "\nv=0" in text:
            return text[text.index("\nv=0") + 1 :]
    raise AssertionError(f"no SDP ({direction}) in the trace")


# --- sans-I/O: a registrar and user agents on SimNet, a registration core -------------------

REGISTRAR = ("10.0.0.5", 5060)
REGISTRAR_PROXY = f"sip:{REGISTRAR[0]}:{REGISTRAR[1]}"


class FakeRegistrar:
    """A digest-authenticating registrar (RFC 3261 §10.3) for SimNet."""

    def __init__(
        self,
        *,
        password: str = "secret",
        realm: str = "example.org",
        algorithm: str = "MD5",
        min_expires: int | None = None,
        max_expires: int = 3600,
        nat: tuple[str, int] | None = None,
        stale_once: bool = False,
    ) -> None:
        self.password = password
        self.realm = realm
        self.algorithm = algorithm
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.nat = nat
        self.stale_once = stale_once
        self.silent = False
        self.nonces: list[str] = []
        self.bindings: dict[str, int] = {}
        self.requests: list[Request] = []
        self._n = itertools.count(1)

    def peer(self) -> FakePeer:
        return FakePeer(REGISTRAR[0], REGISTRAR[1], self.handle)

    def _challenge(self, req: Request, stale: bool = False) -> Response:
        nonce = f"nonce{next(self._n)}"
        self.nonces.append(nonce)
        resp = make_response(req, 401, to_tag=new_tag())
        resp.headers.add(
            "WWW-Authenticate",
            make_challenge(self.realm, nonce, algorithm=self.algorithm, stale=stale),
        )
        return resp

    def handle(self, msg: Any, src: Peer, net: SimNet) -> list[tuple[Response, Peer]]:
        if not isinstance(msg, Request) or msg.method != "REGISTER":
            return []
        self.requests.append(msg)
        if self.silent:
            return []
        return [(self._answer(msg), src)]

    def _answer(self, req: Request) -> Response:
        auth = req.headers.get("Authorization")
        if auth is None:
            return self._challenge(req)
        parsed = parse_authorization(auth)
        if parsed.nonce not in self.nonces:
            return self._challenge(req)
        if not verify_authorization(auth, method="REGISTER", password=self.password):
            return self._challenge(req)
        if self.stale_once:
            self.stale_once = False
            self.nonces.remove(parsed.nonce)
            return self._challenge(req, stale=True)
        default = int(req.headers.get("Expires") or "3600")
        for value in req.headers.get_all("Contact"):
            c = NameAddr.parse(value)
            exp = int(c.params.get("expires") or default)
            if exp and self.min_expires and exp < self.min_expires:
                resp = make_response(req, 423, to_tag=new_tag())
                resp.headers.add("Min-Expires", str(self.min_expires))
                return resp
            key = str(c.uri)
            if exp == 0:
                self.bindings.pop(key, None)
            else:
                self.bindings[key] = min(exp, self.max_expires)
        resp = make_response(req, 200, to_tag=new_tag())
        for uri, exp in self.bindings.items():
            resp.headers.add("Contact", f"<{uri}>;expires={exp}")
        if self.nat is not None:
            via = resp.top_via
            params = dict(via.params)
            params["received"], params["rport"] = self.nat[0], str(self.nat[1])
            vias = resp.headers.get_all("Via")
            h = Headers()
            for name, value in resp.headers.items():
                if name == "Via":
                    continue
                h.add(name, value)
            rebuilt = Headers()
            rebuilt.add("Via", str(Via(via.transport, via.host, via.port, params)))
            for v in vias[1:]:
                rebuilt.add("Via", v)
            for name, value in h.items():
                rebuilt.add(name, value)
            resp.headers = rebuilt
        return resp


def registering_ua(host: str, user: str, **config: Any) -> UserAgent:
    """``user`` at ``host`` (port 5060) with the password the registrar expects and the
    registrar as outbound proxy (``config``: more UAConfig fields); not on a SimNet yet."""
    return make_ua(host, user, password="secret", outbound_proxy=REGISTRAR_PROXY, **config)


def with_registrar(net: SimNet, registrar: FakeRegistrar | None = None) -> FakeRegistrar:
    """``registrar`` (a new FakeRegistrar by default) put on ``net`` at REGISTRAR."""
    registrar = FakeRegistrar() if registrar is None else registrar
    net.add_peer(registrar.peer())
    return registrar


def alice_and_registrar(
    registrar: FakeRegistrar | None = None, *, net: SimNet | None = None, **config: Any
) -> tuple[SimNet, UserAgent, FakeRegistrar]:
    """alice at 10.0.0.1 (:func:`registering_ua`, ``config``: more UAConfig fields) and
    ``registrar`` (a new FakeRegistrar by default) on ``net`` (a new SimNet by default);
    nothing sent yet."""
    net = SimNet() if net is None else net
    registrar = with_registrar(net, registrar)
    ua = registering_ua("10.0.0.1", "alice", **config)
    net.add(ua)
    return net, ua, registrar


def register(net: SimNet, ua: UserAgent, expires: int) -> None:
    """``ua`` registers for ``expires`` seconds, and is registered."""
    ua.register(net.now, expires=expires)
    assert net.run(lambda: bool(net.of(ua, Registered)))


def in_a_call(
    expires: int = 3600, **bob_config: Any
) -> tuple[SimNet, UserAgent, UserAgent, FakeRegistrar]:
    """alice (10.0.0.1) called bob (10.0.0.2, answering), who registered for ``expires``
    seconds through the registrar (``bob_config``: more of his UAConfig fields, such as
    ``transport``); the call is confirmed."""
    net = SimNet()
    registrar = with_registrar(net)
    alice = make_ua("10.0.0.1", "alice")
    bob = registering_ua("10.0.0.2", "bob", **bob_config)
    net.add(alice)
    net.add(bob, auto_answer(net, bob))
    register(net, bob, expires)
    alice.invite("sip:bob@10.0.0.2", SDP_A, net.now)
    assert net.run(lambda: bool(net.of(bob, inv.CallConfirmed)), max_time=30)
    return net, alice, bob, registrar


def bob_registration(seed: int = 7, **config: Any) -> Registration:
    """A registration core: sip:bob@example.org at the registrar sip:example.org, his Contact
    sip:bob@192.0.2.7:5070 over TCP (``config``: more RegistrationConfig fields), its random
    numbers from ``seed``."""
    cfg = RegistrationConfig(
        aor="sip:bob@example.org",
        registrar="sip:example.org",
        contact="sip:bob@192.0.2.7:5070;transport=tcp",
        **config,
    )
    return Registration(cfg, rng=random.Random(seed))
