"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760; RFC 2069 fallback).

API summary
-----------
Parsing::

    parse_auth_header(value) -> list[tuple[scheme, params]]    # several challenges per value
    parse_challenges(value, *, proxy=False) -> list[DigestChallenge]    # Digest ones only
    challenges_from_response(response) -> list[DigestChallenge]  # WWW- and Proxy-Authenticate
    select_challenges(challenges, *, server_order=False)  # strongest supported per realm
                                                 # (server_order: first supported, RFC 8760)
    parse_authorization(value) -> DigestResponse               # an Authorization value
    parse_auth_params(value) -> dict[str, str]      # Authentication-Info style parameter list

Client side::

    Credentials(username, password, realm=None)          # realm None: any realm; repr hides
                                                          # the password
    DigestClient(credentials, *, cnonce_factory=None, use_userhash=True, prefer_auth_int=False,
                 server_order=False)
        .handle_challenge(response, request=None) -> bool   # 401/407: True -> resend the request
                                                           # (new CSeq/branch) after .authorize()
        .authorize(request)            # sets Authorization / Proxy-Authorization for every
                                       # realm in the cache (pre-emptive for later requests)
        .authorization_values(method, uri, body=b"") -> list[tuple[header_name, value]]
        .handle_authentication_info(response)   # nextnonce (RFC 7616 §3.5, RFC 7615)
        .realms() ; .forget(realm=None)
    digest_response(challenge, credentials, method, uri, *, body=b"", nc=1, cnonce=None,
                    qop=None, use_userhash=False) -> str     # one header value, no state

Server side (used by tests and a test registrar)::

    make_challenge(realm, nonce, *, algorithm="MD5", qop=("auth",), opaque=None, stale=False,
                   userhash=False) -> str
    compute_response(algorithm=..., username=..., realm=..., password=..., nonce=..., method=...,
                     uri=..., qop=None, nc=None, cnonce=None, body=b"") -> str
    verify_authorization(value_or_response, *, method, password, body=b"", realm=None,
                         username=None) -> bool

Algorithms: MD5, MD5-sess, SHA-256, SHA-256-sess, SHA-512-256, SHA-512-256-sess (RFC 7616 §3.3,
RFC 8760); qop auth and auth-int; no qop (RFC 2069). Passwords are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from sip.uri import NameAddr, SipParseError, SipURI

__all__ = [
    "ALGORITHMS",
    "AuthParseError",
    "Credentials",
    "DigestChallenge",
    "DigestClient",
    "DigestResponse",
    "challenges_from_response",
    "compute_response",
    "digest_response",
    "make_challenge",
    "parse_auth_header",
    "parse_auth_params",
    "parse_authorization",
    "parse_challenges",
    "new_cnonce",
    "select_challenges",
    "userhash_of",
    "verify_authorization",
]

logger = logging.getLogger("sip.auth")


class AuthParseError(ValueError):
    """A WWW-Authenticate / Proxy-Authenticate / Authorization value could not be parsed."""


def _sha512_256(data: bytes) -> str:
    return hashlib.new("sha512_256", data).hexdigest()


def _hash_function(name: str) -> Callable[[bytes], str] | None:
    if name == "MD5":
        return lambda data: hashlib.md5(data).hexdigest()
    if name == "SHA-256":
        return lambda data: hashlib.sha256(data).hexdigest()
    if name == "SHA-512-256":
        try:
            _sha512_256(b"")
        except ValueError:  # OpenSSL without SHA-512/256
            return None
        return _sha512_256
    return None


#: Supported algorithms, canonical spelling -> strength (higher is stronger).
ALGORITHMS: dict[str, int] = {
    name: strength
    for base, strength in (("MD5", 1), ("SHA-256", 2), ("SHA-512-256", 3))
    if _hash_function(base) is not None
    for name in (base, base + "-sess")
}
_CANONICAL = {name.upper(): name for name in ALGORITHMS}


def _canonical_algorithm(value: str | None) -> str:
    """RFC 7616 §3.3: absent means MD5; tokens compare case-insensitively."""
    if value is None:
        return "MD5"
    return _CANONICAL.get(value.upper(), value)


def _base_algorithm(algorithm: str) -> str:
    return algorithm[: -len("-sess")] if algorithm.endswith("-sess") else algorithm


# ------------------------------------------------------------------------------------ parsing

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_TOKEN68_CHARS = _TOKEN_CHARS | frozenset("/=")
_WS = " \t\r\n"


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1

    def skip_ws_and_commas(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS + ",":
            self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TOKEN_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        if self.peek() != '"':
            raise AuthParseError("expected a quoted string")
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                if self.pos + 1 >= len(self.text):
                    break
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif char == '"':
                self.pos += 1
                return "".join(out)
            else:
                out.append(char)
                self.pos += 1
        raise AuthParseError("unterminated quoted string")


def _parse_params(scanner: _Scanner, *, scheme_may_follow: bool) -> dict[str, str]:
    """``#auth-param`` (RFC 7235 §2.1): name=token or name="quoted", comma separated. With
    ``scheme_may_follow`` a token not followed by "=" ends the list (the next challenge)."""
    params: dict[str, str] = {}
    while True:
        scanner.skip_ws_and_commas()
        if scanner.at_end():
            break
        mark = scanner.pos
        name = scanner.token()
        if not name:
            raise AuthParseError(f"expected a parameter name at offset {scanner.pos}")
        scanner.skip_ws()
        if scanner.peek() != "=":
            if not scheme_may_follow:
                raise AuthParseError(f"expected '=' after {name!r}")
            scanner.pos = mark  # the next challenge's scheme starts here
            break
        scanner.pos += 1
        scanner.skip_ws()
        if scanner.peek() == '"':
            param_value = scanner.quoted()
        else:
            param_value = scanner.token()
            if not param_value:
                raise AuthParseError(f"empty value for parameter {name!r}")
        key = name.lower()
        if key in params:
            raise AuthParseError(f"duplicate parameter {name!r}")
        params[key] = param_value
        scanner.skip_ws()
        if not scanner.at_end() and scanner.peek() != ",":
            raise AuthParseError(f"expected a comma at offset {scanner.pos}")
    return params


def parse_auth_header(value: str) -> list[tuple[str, dict[str, str]]]:
    """Split a challenge or credentials header value into (scheme, params) pairs.

    Several challenges may share one value, separated by commas (RFC 7235 §4.1); parameter
    names are lower-cased, quoted values unescaped. A token68 (``Basic QWxh...``) is returned as
    the single parameter ``""``; a bare scheme has no parameters. Raises AuthParseError on
    malformed input.
    """
    scanner = _Scanner(value)
    result: list[tuple[str, dict[str, str]]] = []
    scanner.skip_ws_and_commas()
    while not scanner.at_end():
        scheme = scanner.token()
        if not scheme:
            raise AuthParseError(f"expected an auth scheme at offset {scanner.pos}")
        if scanner.peek() and scanner.peek() not in _WS + ",":
            raise AuthParseError(f"unexpected character after scheme {scheme!r}")
        scanner.skip_ws()
        # token68 form: "Scheme abc/def==" followed by the end or a comma.
        start = scanner.pos
        while scanner.peek() and scanner.peek() in _TOKEN68_CHARS:
            scanner.pos += 1
        candidate = scanner.text[start : scanner.pos]
        scanner.skip_ws()
        if (
            candidate
            and (scanner.at_end() or scanner.peek() == ",")
            and "=" not in candidate.rstrip("=")
        ):
            result.append((scheme, {"": candidate}))
            scanner.skip_ws_and_commas()
            continue
        scanner.pos = start
        result.append((scheme, _parse_params(scanner, scheme_may_follow=True)))
    if not result:
        raise AuthParseError("empty authentication header")
    return result


def parse_auth_params(value: str) -> dict[str, str]:
    """A bare ``#auth-param`` list, as in Authentication-Info (RFC 7615 §3, RFC 7616 §3.5)."""
    params = _parse_params(_Scanner(value), scheme_may_follow=False)
    if not params:
        raise AuthParseError("empty parameter list")
    return params


@dataclass(frozen=True)
class DigestChallenge:
    """One Digest challenge (RFC 7616 §3.3); ``proxy`` when it came in Proxy-Authenticate."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    userhash: bool = False
    charset: str | None = None
    proxy: bool = False

    @classmethod
    def from_params(cls, params: dict[str, str], *, proxy: bool = False) -> DigestChallenge:
        if "realm" not in params or "nonce" not in params:
            raise AuthParseError("Digest challenge without realm or nonce")
        qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=_canonical_algorithm(params.get("algorithm")),
            qop=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
            domain=params.get("domain"),
            userhash=params.get("userhash", "").lower() == "true",
            charset=params.get("charset"),
            proxy=proxy,
        )

    @property
    def supported(self) -> bool:
        """Known algorithm, and either no qop (RFC 2069) or one of auth / auth-int offered."""
        if self.algorithm not in ALGORITHMS:
            return False
        return not self.qop or "auth" in self.qop or "auth-int" in self.qop

    @property
    def header_name(self) -> str:
        """The header the answer goes in (RFC 3261 §22.2 / §22.3)."""
        return "Proxy-Authorization" if self.proxy else "Authorization"


def parse_challenges(value: str, *, proxy: bool = False) -> list[DigestChallenge]:
    """The Digest challenges in one header value; other schemes and Digest challenges without
    realm or nonce are skipped. Raises AuthParseError if the value does not parse at all."""
    out: list[DigestChallenge] = []
    for scheme, params in parse_auth_header(value):
        if scheme.lower() != "digest":
            continue
        try:
            out.append(DigestChallenge.from_params(params, proxy=proxy))
        except AuthParseError as exc:
            logger.info("ignoring Digest challenge: %s", exc)
    return out


def challenges_from_response(response: Any) -> list[DigestChallenge]:
    """Digest challenges of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) response.

    Header values that do not parse are skipped. The values of each header name are re-joined
    with commas first, so the result does not depend on how the message layer split them.
    """
    out: list[DigestChallenge] = []
    for name, proxy in (("WWW-Authenticate", False), ("Proxy-Authenticate", True)):
        for value in response.headers.get_all(name):
            try:
                out.extend(parse_challenges(value, proxy=proxy))
            except AuthParseError as exc:
                logger.info("ignoring malformed %s: %s", name, exc)
    return _dedupe(out)


def _dedupe(challenges: list[DigestChallenge]) -> list[DigestChallenge]:
    seen: set[DigestChallenge] = set()
    out = []
    for challenge in challenges:
        if challenge not in seen:
            seen.add(challenge)
            out.append(challenge)
    return out


def _strength(challenge: DigestChallenge) -> tuple[int, int]:
    # Prefer the stronger hash; between X and X-sess prefer the plain one (wider support).
    return (ALGORITHMS[challenge.algorithm], 0 if challenge.algorithm.endswith("-sess") else 1)


def select_challenges(
    challenges: Iterable[DigestChallenge], *, server_order: bool = False
) -> list[DigestChallenge]:
    """One supported challenge for each (proxy, realm), in first-seen order.

    RFC 3261 §22.3: a UAC answers every realm it was challenged for. Of several challenges for
    one realm the strongest algorithm is used; with ``server_order`` the first supported one
    instead (RFC 8760 §2.4: servers list their preferred algorithm first).
    """
    best: dict[tuple[bool, str], DigestChallenge] = {}
    for challenge in challenges:
        if not challenge.supported:
            continue
        key = (challenge.proxy, challenge.realm)
        current = best.get(key)
        if current is None or (not server_order and _strength(challenge) > _strength(current)):
            best[key] = challenge
    return list(best.values())


# --------------------------------------------------------------------------------- computation


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _hasher(algorithm: str) -> Callable[[bytes], str]:
    function = _hash_function(_base_algorithm(_canonical_algorithm(algorithm)))
    if function is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return function


def compute_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest (RFC 7616 §3.4.1; RFC 2617 §3.2.2; RFC 2069 when ``qop`` is None).

    A1 = username:realm:password (for -sess: H(A1):nonce:cnonce); A2 = method:uri (auth-int:
    method:uri:H(body)); response = KD(H(A1), nonce:nc:cnonce:qop:H(A2)), or without qop
    KD(H(A1), nonce:H(A2)). ``username`` is the real user name even when userhash is used.
    """
    algorithm = _canonical_algorithm(algorithm)
    h = _hasher(algorithm)
    ha1 = h(f"{username}:{realm}:{password}".encode())
    if algorithm.endswith("-sess"):
        if cnonce is None:
            raise ValueError("-sess algorithms need a cnonce")
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    if qop == "auth-int":
        a2 = f"{method}:{uri}:{h(body)}"
    else:
        a2 = f"{method}:{uri}"
    ha2 = h(a2.encode())
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}".encode())
    if nc is None or cnonce is None:
        raise ValueError("qop needs nc and cnonce")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


def userhash_of(algorithm: str, username: str, realm: str) -> str:
    """RFC 7616 §3.4.4: H(unq(username) ":" unq(realm))."""
    return _hasher(algorithm)(f"{username}:{realm}".encode())


@dataclass(frozen=True)
class Credentials:
    """A user name and password, for one realm (or any realm when ``realm`` is None)."""

    username: str
    password: str = field(repr=False)
    realm: str | None = None


def _choose_qop(challenge: DigestChallenge, prefer_auth_int: bool) -> str | None:
    if not challenge.qop:
        return None
    if prefer_auth_int and "auth-int" in challenge.qop:
        return "auth-int"
    if "auth" in challenge.qop:
        return "auth"
    if "auth-int" in challenge.qop:
        return "auth-int"
    raise ValueError(f"no supported qop in {challenge.qop}")


def new_cnonce() -> str:
    return secrets.token_hex(16)


def digest_response(
    challenge: DigestChallenge,
    credentials: Credentials,
    method: str,
    uri: str,
    *,
    body: bytes = b"",
    nc: int = 1,
    cnonce: str | None = None,
    qop: str | None = None,
    use_userhash: bool = False,
) -> str:
    """An Authorization / Proxy-Authorization value answering ``challenge`` (RFC 7616 §3.4).

    ``qop`` defaults to "auth" when offered (else "auth-int"); without qop in the challenge the
    RFC 2069 form is produced (no cnonce / nc unless -sess needs a cnonce). ``uri`` is the
    Request-URI exactly as it appears in the request line.
    """
    if not challenge.supported:
        raise ValueError(f"unsupported challenge algorithm {challenge.algorithm!r}")
    if qop is None:
        qop = _choose_qop(challenge, prefer_auth_int=False)
    needs_cnonce = qop is not None or challenge.algorithm.endswith("-sess")
    if needs_cnonce and cnonce is None:
        cnonce = new_cnonce()
    nc_text = f"{nc:08x}"
    response = compute_response(
        algorithm=challenge.algorithm,
        username=credentials.username,
        realm=challenge.realm,
        password=credentials.password,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc_text if qop is not None else None,
        cnonce=cnonce if needs_cnonce else None,
        body=body,
    )
    hashed = use_userhash and challenge.userhash
    username = (
        userhash_of(challenge.algorithm, credentials.username, challenge.realm)
        if hashed
        else credentials.username
    )
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={challenge.algorithm}",
    ]
    if needs_cnonce and cnonce is not None:
        parts.append(f"cnonce={_quote(cnonce)}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    if qop is not None:
        parts.append(f"qop={qop}")
        parts.append(f"nc={nc_text}")
    if hashed:
        parts.append("userhash=true")
    return "Digest " + ", ".join(parts)


# ----------------------------------------------------------------------------------- client


@dataclass
class _RealmState:
    challenge: DigestChallenge
    credentials: Credentials
    nc: int = 0
    session_cnonce: str | None = None
    #: the next hops (host, port) that challenged for this realm: its credentials go there only
    hops: set[Hop | None] = field(default_factory=set)


#: (host, port) of the next hop a request goes to (its top Route, else its Request-URI)
Hop = tuple[str, int]


def next_hop(request: Any) -> Hop | None:
    """Where ``request`` goes first: the top Route URI (loose routing, RFC 3261 §16.12 / §8.1.2)
    or else the Request-URI, as (lower-case host, port with the scheme's default filled in).
    None when neither parses. The server that challenges a request is that hop (its registrar or
    proxy) or, peer to peer, the UAS the Request-URI names."""
    try:
        routes = request.headers.get_all("Route")
        uri = NameAddr.parse(routes[0]).uri if routes else SipURI.parse(str(request.uri))
    except (SipParseError, AttributeError, IndexError, TypeError):
        return None
    default = 5061 if uri.scheme == "sips" or (uri.transport or "").lower() == "tls" else 5060
    return (uri.host.lower().strip("[]"), uri.port or default)


class DigestClient:
    """Per-realm digest state for one UA or account: the last challenge of each realm, nonce
    counts, and the credentials; answers 401/407 and authenticates later requests
    pre-emptively (RFC 3261 §22.3: "cache the credentials for a given realm")."""

    def __init__(
        self,
        credentials: Credentials | Iterable[Credentials],
        *,
        cnonce_factory: Callable[[], str] | None = None,
        use_userhash: bool = True,
        prefer_auth_int: bool = False,
        server_order: bool = False,
    ) -> None:
        if isinstance(credentials, Credentials):
            credentials = [credentials]
        self._credentials: list[Credentials] = list(credentials)
        self._cnonce = cnonce_factory if cnonce_factory is not None else new_cnonce
        self._use_userhash = use_userhash
        self._prefer_auth_int = prefer_auth_int
        self._server_order = server_order
        self._realms: dict[tuple[bool, str], _RealmState] = {}
        #: (Call-ID, CSeq) of requests that carried credentials nobody had challenged them for
        self._preemptive: set[tuple[str, int]] = set()

    def add_credentials(self, credentials: Credentials) -> None:
        self._credentials.insert(0, credentials)

    def credentials_for(self, realm: str) -> Credentials | None:
        for creds in self._credentials:
            if creds.realm == realm:
                return creds
        for creds in self._credentials:
            if creds.realm is None:
                return creds
        return None

    def realms(self) -> list[str]:
        return [realm for _, realm in self._realms]

    def forget(self, realm: str | None = None) -> None:
        """Drop the cached challenge of ``realm`` (of every realm when None)."""
        if realm is None:
            self._realms.clear()
        else:
            for key in [k for k in self._realms if k[1] == realm]:
                del self._realms[key]

    def handle_challenge(self, response: Any, request: Any = None) -> bool:
        """Take the challenges of a 401/407. True: resend the request (new CSeq and branch)
        after ``authorize``. False: no usable challenge, no credentials for a realm, or the
        credentials were rejected (the challenged request answered that realm, and the new
        challenge is not ``stale=true``: RFC 7616 §3.3)."""
        challenges = select_challenges(
            challenges_from_response(response), server_order=self._server_order
        )
        if not challenges:
            logger.info("no supported Digest challenge in %s response", response.status)
            return False
        sent = _sent_nonces(request) if request is not None else None
        if request is not None and _request_key(request) in self._preemptive:
            # pre-emptive credentials (a cached nonce the server may have forgotten) were not
            # an answer to this challenge: answer it once
            self._preemptive.discard(_request_key(request))
            sent = {}
        hop = next_hop(request) if request is not None else None
        for challenge in challenges:
            key = (challenge.proxy, challenge.realm)
            creds = self.credentials_for(challenge.realm)
            if creds is None:
                logger.info("no credentials for realm %r", challenge.realm)
                return False
            if sent is not None:
                answered = key in sent
            else:
                state = self._realms.get(key)
                answered = state is not None and state.challenge.nonce == challenge.nonce
            if answered and not challenge.stale:
                logger.info(
                    "credentials for %r rejected in realm %r", creds.username, challenge.realm
                )
                return False
        for challenge in challenges:
            key = (challenge.proxy, challenge.realm)
            creds = self.credentials_for(challenge.realm)
            assert creds is not None
            previous = self._realms.get(key)
            if previous is not None and previous.challenge.nonce == challenge.nonce:
                previous.challenge = challenge
                previous.credentials = creds
            else:
                hops = previous.hops if previous is not None else set()
                self._realms[key] = _RealmState(challenge, creds, hops=hops)
            self._realms[key].hops.add(hop)
        return True

    def handle_authentication_info(self, response: Any) -> None:
        """Take a ``nextnonce`` from Authentication-Info (RFC 7616 §3.5) for the one WWW realm,
        or from Proxy-Authentication-Info (RFC 7615 §4) for the one proxy realm; a new nonce
        restarts the nonce count. Ambiguous (several realms) or malformed values are ignored."""
        for name, proxy in (("Authentication-Info", False), ("Proxy-Authentication-Info", True)):
            value = response.headers.get(name)
            if value is None:
                continue
            try:
                nextnonce = parse_auth_params(value).get("nextnonce")
            except AuthParseError:
                logger.info("ignoring malformed %s", name)
                continue
            states = [state for (is_proxy, _), state in self._realms.items() if is_proxy == proxy]
            if not nextnonce or len(states) != 1:
                continue
            state = states[0]
            if state.challenge.nonce != nextnonce:
                state.challenge = replace(state.challenge, nonce=nextnonce, stale=False)
                state.nc = 0
                state.session_cnonce = None

    def authorization_values(
        self, method: str, uri: str, body: bytes = b"", *, hop: Hop | None | object = ...
    ) -> list[tuple[str, str]]:
        """(header name, value) for each cached realm; increments each nonce count used.

        With ``hop``, only realms whose challenge came for requests to that next hop (see
        :func:`next_hop`): credentials never go to a server that did not ask for them.
        """
        out = []
        for state in self._realms.values():
            # (a challenge taken without its request, hop None, cannot be tied to a server)
            if hop is not ... and hop not in state.hops and None not in state.hops:
                continue
            challenge = state.challenge
            state.nc += 1
            if challenge.algorithm.endswith("-sess"):
                # The session key H(A1) is fixed for the life of the nonce (RFC 7616 §3.4.2):
                # keep one cnonce per nonce so both readings of the RFC agree.
                if state.session_cnonce is None:
                    state.session_cnonce = self._cnonce()
                cnonce = state.session_cnonce
            else:
                cnonce = self._cnonce()
            value = digest_response(
                challenge,
                state.credentials,
                method,
                uri,
                body=body,
                nc=state.nc,
                cnonce=cnonce,
                qop=_choose_qop(challenge, self._prefer_auth_int),
                use_userhash=self._use_userhash,
            )
            out.append((challenge.header_name, value))
        return out

    def authorize(self, request: Any) -> None:
        """Replace the request's Authorization / Proxy-Authorization headers with answers for
        the cached realms that challenged requests to the same next hop (a no-op when none)."""
        values = self.authorization_values(
            request.method, str(request.uri), request.body, hop=next_hop(request)
        )
        if not values:
            return
        request.headers.remove("Authorization")
        request.headers.remove("Proxy-Authorization")
        for name, value in values:
            request.headers.add(name, value)

    def authorize_preemptively(self, request: Any) -> bool:
        """RFC 3261 §22.3: add credentials from the cache to a request nobody challenged yet
        (a REGISTER refresh), with the next nonce count, so the 401 round trip is saved. Only
        realms that challenged the same next hop; a request that already carries credentials is
        left alone. True when credentials were added. If the server rejects them (a forgotten
        nonce), :meth:`handle_challenge` still answers the new challenge once."""
        if "Authorization" in request.headers or "Proxy-Authorization" in request.headers:
            return False
        values = self.authorization_values(
            request.method, str(request.uri), request.body, hop=next_hop(request)
        )
        if not values:
            return False
        for name, value in values:
            request.headers.add(name, value)
        self._preemptive.add(_request_key(request))
        if len(self._preemptive) > 64:  # answered ones are dropped; bound the rest
            self._preemptive.pop()
        return True


def _request_key(request: Any) -> tuple[str, int]:
    try:
        return (str(request.call_id), int(request.cseq.seq))
    except (ValueError, AttributeError):
        return ("", -1)


def _sent_nonces(request: Any) -> dict[tuple[bool, str], str]:
    """(proxy, realm) -> nonce of the Digest credentials the request carried."""
    out: dict[tuple[bool, str], str] = {}
    for name, proxy in (("Authorization", False), ("Proxy-Authorization", True)):
        for value in request.headers.get_all(name):
            try:
                parsed = parse_auth_header(value)
            except AuthParseError:
                continue
            for scheme, params in parsed:
                if scheme.lower() == "digest" and "realm" in params:
                    out[(proxy, params["realm"])] = params.get("nonce", "")
    return out


# ----------------------------------------------------------------------------------- server


@dataclass(frozen=True)
class DigestResponse:
    """The parameters of a Digest Authorization / Proxy-Authorization value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    userhash: bool = False


def parse_authorization(value: str) -> DigestResponse:
    """Parse a Digest credentials value (RFC 7616 §3.4). Raises AuthParseError."""
    for scheme, params in parse_auth_header(value):
        if scheme.lower() != "digest":
            continue
        missing = [p for p in ("username", "realm", "nonce", "uri", "response") if p not in params]
        if missing:
            raise AuthParseError(f"Digest credentials without {', '.join(missing)}")
        return DigestResponse(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"],
            algorithm=_canonical_algorithm(params.get("algorithm")),
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
            qop=params.get("qop"),
            nc=params.get("nc"),
            userhash=params.get("userhash", "").lower() == "true",
        )
    raise AuthParseError("no Digest credentials")


def make_challenge(
    realm: str,
    nonce: str,
    *,
    algorithm: str = "MD5",
    qop: Iterable[str] = ("auth",),
    opaque: str | None = None,
    stale: bool = False,
    userhash: bool = False,
) -> str:
    """A WWW-Authenticate / Proxy-Authenticate value (RFC 7616 §3.3)."""
    parts = [f"realm={_quote(realm)}", f"nonce={_quote(nonce)}", f"algorithm={algorithm}"]
    qop_list = ",".join(qop)
    if qop_list:
        parts.append(f"qop={_quote(qop_list)}")
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    if stale:
        parts.append("stale=true")
    if userhash:
        parts.append("userhash=true")
    return "Digest " + ", ".join(parts)


def verify_authorization(
    value: str | DigestResponse,
    *,
    method: str,
    password: str,
    body: bytes = b"",
    realm: str | None = None,
    username: str | None = None,
) -> bool:
    """Whether credentials carry the right response for ``password`` (RFC 7616 §3.5 server
    side). ``username`` is the expected real user name: required to check a userhash; when
    given it must match. Nonce freshness and nc replay are the caller's policy."""
    try:
        creds = parse_authorization(value) if isinstance(value, str) else value
        if realm is not None and creds.realm != realm:
            return False
        if creds.algorithm not in ALGORITHMS:
            return False
        real_user = creds.username
        if creds.userhash:
            if username is None:
                return False
            expected = userhash_of(creds.algorithm, username, creds.realm)
            if not hmac.compare_digest(expected, creds.username.lower()):
                return False
            real_user = username
        elif username is not None and creds.username != username:
            return False
        expected_response = compute_response(
            algorithm=creds.algorithm,
            username=real_user,
            realm=creds.realm,
            password=password,
            nonce=creds.nonce,
            method=method,
            uri=creds.uri,
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
            body=body,
        )
    except (AuthParseError, ValueError):
        return False
    return hmac.compare_digest(expected_response, creds.response.lower())
