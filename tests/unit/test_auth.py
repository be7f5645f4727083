"""Digest authentication (RFC 3261 §22, RFC 7616, RFC 2617, RFC 2069)."""

from __future__ import annotations

import hashlib
import logging
import urllib.request
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.auth import (
    ALGORITHMS,
    AuthParseError,
    Credentials,
    DigestChallenge,
    DigestClient,
    challenges_from_response,
    compute_response,
    digest_response,
    make_challenge,
    parse_auth_header,
    parse_auth_params,
    parse_authorization,
    parse_challenges,
    select_challenges,
    verify_authorization,
)
from sip.message import Request, Response, make_response, parse_message
from tests.helpers_sip import wire_request

# RFC 7616 §3.9.1
RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CHALLENGES = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS", '
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
MUFASA = Credentials("Mufasa", "Circle of Life")


def rfc7616_kwargs() -> dict[str, Any]:
    return {
        "username": "Mufasa",
        "realm": RFC7616_REALM,
        "password": "Circle of Life",
        "nonce": RFC7616_NONCE,
        "method": "GET",
        "uri": "/dir/index.html",
        "qop": "auth",
        "nc": "00000001",
        "cnonce": RFC7616_CNONCE,
    }


# ------------------------------------------------------------------------ published vectors


def test_rfc7616_md5_example():
    assert compute_response(algorithm="MD5", **rfc7616_kwargs()) == (
        "8ca523f5e9506fed4657c9700eebdbec"
    )


def test_rfc7616_sha256_example():
    assert compute_response(algorithm="SHA-256", **rfc7616_kwargs()) == (
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples_through_challenge_parsing_and_header_building(algorithm, expected):
    challenges = {c.algorithm: c for c in parse_challenges(RFC7616_CHALLENGES)}
    assert set(challenges) == {"SHA-256", "MD5"}
    challenge = challenges[algorithm]
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.opaque == RFC7616_OPAQUE
    value = digest_response(
        challenge, MUFASA, "GET", "/dir/index.html", nc=1, cnonce=RFC7616_CNONCE
    )
    parsed = parse_authorization(value)
    assert parsed.response == expected
    assert parsed.nc == "00000001" and parsed.qop == "auth"
    assert parsed.opaque == RFC7616_OPAQUE  # opaque is echoed (RFC 7616 §3.4)
    assert parsed.cnonce == RFC7616_CNONCE
    assert parsed.algorithm == algorithm
    assert f'response="{expected}"' in value
    assert verify_authorization(value, method="GET", password="Circle of Life")
    assert not verify_authorization(value, method="GET", password="Circle of life")
    assert not verify_authorization(value, method="POST", password="Circle of Life")


def test_rfc7616_select_prefers_sha256():
    [best] = select_challenges(parse_challenges(RFC7616_CHALLENGES))
    assert best.algorithm == "SHA-256"


@pytest.mark.parametrize(
    ("password", "qop", "expected"),
    [
        # RFC 2617 §3.5
        ("Circle Of Life", {"qop": "auth", "nc": "00000001", "cnonce": "0a4f113b"},
         "6629fae49393a05397450978507c4ef1"),
        # RFC 2069 §2.4 example (no qop), with the value corrected by its erratum
        ("CircleOfLife", {}, "1949323746fe6a43ef61f9606e7febea"),
    ],
    ids=["rfc2617-example", "rfc2069-no-qop-example"],
)  # fmt: skip
def test_rfc_md5_examples(password: str, qop: dict[str, Any], expected: str) -> None:
    assert (
        compute_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password=password,
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            method="GET",
            uri="/dir/index.html",
            **qop,
        )
        == expected
    )


def test_sha512_256_is_the_fips_180_4_function_not_a_truncation():
    if "SHA-512-256" not in ALGORITHMS:
        pytest.skip("OpenSSL without SHA-512/256")
    # FIPS 180-4 example value for "abc"
    assert hashlib.new("sha512_256", b"abc").hexdigest() == (
        "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
    )
    assert hashlib.sha512(b"abc").hexdigest()[:64] != hashlib.new("sha512_256", b"abc").hexdigest()


def test_sess_and_auth_int_formulas_by_hand():
    h = hashlib.sha256
    ha1 = h(b"bob:sip.example.com:pw").hexdigest()
    ha1_sess = h(f"{ha1}:N:C".encode()).hexdigest()
    body = b"v=0\r\n"
    ha2 = h(b"INVITE:sip:alice@example.com:" + h(body).hexdigest().encode()).hexdigest()
    expected = h(f"{ha1_sess}:N:0000000a:C:auth-int:{ha2}".encode()).hexdigest()
    got = compute_response(
        algorithm="sha-256-SESS",
        username="bob",
        realm="sip.example.com",
        password="pw",
        nonce="N",
        method="INVITE",
        uri="sip:alice@example.com",
        qop="auth-int",
        nc="0000000a",
        cnonce="C",
        body=body,
    )
    assert got == expected


# -------------------------------------------------------------------------- parsing


def test_parse_several_schemes_in_one_value():
    value = (
        'Newauth realm="apps", type=1, title="Login to \\"apps\\"", '
        'Basic realm="simple", Negotiate abc/DEF+123==, '
        'digest REALM="sip.example.com", NONCE="n,1", stale=TRUE, algorithm=md5-sess, '
        'qop="auth"'
    )
    parsed = parse_auth_header(value)
    assert [scheme for scheme, _ in parsed] == ["Newauth", "Basic", "Negotiate", "digest"]
    assert parsed[0][1] == {"realm": "apps", "type": "1", "title": 'Login to "apps"'}
    assert parsed[2][1] == {"": "abc/DEF+123=="}
    [challenge] = parse_challenges(value)
    assert challenge.realm == "sip.example.com"
    assert challenge.nonce == "n,1"
    assert challenge.stale is True
    assert challenge.algorithm == "MD5-sess"
    assert challenge.qop == ("auth",)


def test_parse_whitespace_and_defaults():
    [challenge] = parse_challenges('Digest  realm = "r" ,nonce= "n"  ,  opaque="" ')
    assert challenge == DigestChallenge(realm="r", nonce="n", opaque="")
    assert challenge.algorithm == "MD5"  # RFC 7616 §3.3: absent means MD5
    assert challenge.qop == () and challenge.supported
    assert challenge.header_name == "Authorization"
    [proxy] = parse_challenges('Digest realm="r", nonce="n"', proxy=True)
    assert proxy.header_name == "Proxy-Authorization"


def test_bare_schemes_are_valid_challenges():
    # RFC 7235 §2.1: the parameters of a challenge are optional
    assert parse_auth_header("Negotiate, Digest") == [("Negotiate", {}), ("Digest", {})]
    assert parse_challenges("Digest") == []


def test_parse_auth_params():
    value = 'nextnonce="47364c23432d2e131a5fb210812c", qop=auth, rspauth="abc", nc=00000001'
    assert parse_auth_params(value) == {
        "nextnonce": "47364c23432d2e131a5fb210812c",
        "qop": "auth",
        "rspauth": "abc",
        "nc": "00000001",
    }
    for bad in ("", "Digest realm=x", 'a="b" c', "a=b=c"):
        with pytest.raises(AuthParseError):
            parse_auth_params(bad)


def test_parse_skips_unusable_digest_challenges():
    assert parse_challenges('Digest realm="r"') == []  # no nonce
    assert parse_challenges('Digest nonce="n"') == []  # no realm
    [unknown] = parse_challenges('Digest realm="r", nonce="n", algorithm=SHA-1024')
    assert not unknown.supported
    assert select_challenges([unknown]) == []
    [bad_qop] = parse_challenges('Digest realm="r", nonce="n", qop="auth-conf"')
    assert not bad_qop.supported


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        ",,,",
        'Digest realm="unterminated',
        'Digest realm="a", realm="b", nonce="n"',  # duplicate parameter
        "Digest realm=;",
        'Digest realm="r" nonce="n"',  # missing comma
        "Digest =x",
        '"quoted" realm="r"',
    ],
)
def test_parse_errors_raise_auth_parse_error(value):
    with pytest.raises(AuthParseError):
        parse_auth_header(value)


def test_select_strongest_per_realm_and_keeps_proxy_and_www_apart():
    challenges = [
        *parse_challenges('Digest realm="a", nonce="1", algorithm=MD5'),
        *parse_challenges('Digest realm="a", nonce="2", algorithm=SHA-256-sess'),
        *parse_challenges('Digest realm="a", nonce="3", algorithm=SHA-256'),
        *parse_challenges('Digest realm="b", nonce="4", algorithm=MD5-sess'),
        *parse_challenges('Digest realm="a", nonce="5", algorithm=MD5', proxy=True),
    ]
    best = select_challenges(challenges)
    assert [(c.realm, c.nonce, c.proxy) for c in best] == [
        ("a", "3", False),
        ("b", "4", False),
        ("a", "5", True),
    ]


def test_select_in_server_order():
    challenges = parse_challenges(
        'Digest realm="a", nonce="1", algorithm=UNKNOWN, '
        'Digest realm="a", nonce="2", algorithm=MD5, '
        'Digest realm="a", nonce="3", algorithm=SHA-256'
    )
    assert [c.nonce for c in select_challenges(challenges, server_order=True)] == ["2"]
    assert [c.nonce for c in select_challenges(challenges)] == ["3"]


def test_select_prefers_sha512_256_when_available():
    if "SHA-512-256" not in ALGORITHMS:
        pytest.skip("OpenSSL without SHA-512/256")
    challenges = parse_challenges(
        'Digest realm="a", nonce="1", algorithm=SHA-256, '
        'Digest realm="a", nonce="2", algorithm=SHA-512-256'
    )
    assert [c.algorithm for c in select_challenges(challenges)] == ["SHA-512-256"]


def test_make_challenge_round_trip():
    value = make_challenge(
        "sip.example.com",
        'n"o\\nce',
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
        opaque="op",
        stale=True,
        userhash=True,
    )
    [challenge] = parse_challenges(value)
    assert challenge == DigestChallenge(
        realm="sip.example.com",
        nonce='n"o\\nce',
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
        opaque="op",
        stale=True,
        userhash=True,
    )


# --------------------------------------------------------------- header building / verify


def test_no_qop_rfc2069_header_has_no_nc_or_cnonce():
    [challenge] = parse_challenges(make_challenge("r", "n", qop=()))
    value = digest_response(challenge, Credentials("u", "p"), "REGISTER", "sip:example.com")
    parsed = parse_authorization(value)
    assert parsed.qop is None and parsed.nc is None and parsed.cnonce is None
    assert "nc=" not in value and "cnonce" not in value
    assert verify_authorization(value, method="REGISTER", password="p")


def test_auth_int_covers_the_body():
    [challenge] = parse_challenges(make_challenge("r", "n", qop=("auth-int",)))
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    value = digest_response(challenge, Credentials("u", "p"), "INVITE", "sip:b@x", body=body)
    assert parse_authorization(value).qop == "auth-int"
    assert verify_authorization(value, method="INVITE", password="p", body=body)
    assert not verify_authorization(value, method="INVITE", password="p", body=b"v=1\r\n")


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_round_trips(algorithm):
    [challenge] = parse_challenges(make_challenge("r", "nonce", algorithm=algorithm))
    assert challenge.algorithm == algorithm
    value = digest_response(challenge, Credentials("u", "p"), "OPTIONS", "sip:x@y", nc=7)
    assert parse_authorization(value).nc == "00000007"
    assert verify_authorization(value, method="OPTIONS", password="p", realm="r", username="u")
    assert not verify_authorization(value, method="OPTIONS", password="q")
    assert not verify_authorization(value, method="OPTIONS", password="p", realm="other")


def test_quoting_in_username_and_uri():
    [challenge] = parse_challenges(make_challenge('a "quoted" realm', "n"))
    creds = Credentials('we\\ird"user', "p")
    value = digest_response(challenge, creds, "MESSAGE", "sip:x@y;transport=tcp")
    parsed = parse_authorization(value)
    assert parsed.username == 'we\\ird"user'
    assert parsed.realm == 'a "quoted" realm'
    assert verify_authorization(value, method="MESSAGE", password="p")


def test_userhash():
    [challenge] = parse_challenges(
        make_challenge("api@example.org", "n", algorithm="SHA-256", userhash=True)
    )
    creds = Credentials("J\u00e4s\u00f8n Doe", "Secret, or not?")
    value = digest_response(challenge, creds, "GET", "/doe.json", use_userhash=True)
    parsed = parse_authorization(value)
    assert parsed.userhash
    expected_hash = hashlib.sha256("J\u00e4s\u00f8n Doe:api@example.org".encode()).hexdigest()
    assert parsed.username == expected_hash
    assert "J\u00e4s" not in value
    assert verify_authorization(
        value, method="GET", password=creds.password, username=creds.username
    )
    assert not verify_authorization(value, method="GET", password=creds.password)
    assert not verify_authorization(
        value, method="GET", password=creds.password, username="Jason Doe"
    )
    # not offered by the server: plain user name even when asked for
    [plain] = parse_challenges(make_challenge("r", "n"))
    assert not parse_authorization(
        digest_response(plain, creds, "GET", "/", use_userhash=True)
    ).userhash


def test_verify_rejects_garbage():
    assert not verify_authorization("Basic dXNlcjpwYXNz", method="GET", password="p")
    assert not verify_authorization('Digest username="u"', method="GET", password="p")
    assert not verify_authorization("%%%", method="GET", password="p")
    [challenge] = parse_challenges(make_challenge("r", "n", algorithm="MD5-sess", qop=()))
    value = digest_response(challenge, Credentials("u", "p"), "GET", "/")
    assert verify_authorization(value, method="GET", password="p")
    stripped = value.replace(", cnonce=", ", xcnonce=")
    assert not verify_authorization(stripped, method="GET", password="p")


def test_credentials_repr_hides_password():
    assert "hunter2" not in repr(Credentials("alice", "hunter2", realm="r"))


# ------------------------------------------------------------- client with SIP messages


def register(cseq: int = 1, authorization: tuple[tuple[str, str], ...] = ()) -> Request:
    return wire_request(
        "REGISTER sip:example.com SIP/2.0",
        via=f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKreg{cseq}",
        from_="<sip:alice@example.com>;tag=a1",
        to="<sip:alice@example.com>",
        call_id="reg-call",
        cseq=f"{cseq} REGISTER",
        extra=["Contact: <sip:alice@192.0.2.1>", *[f"{n}: {v}" for n, v in authorization]],
    )


def authorized_register(client: DigestClient, cseq: int) -> tuple[Request, str]:
    """A REGISTER (CSeq ``cseq``) that ``client`` authorized: it and its one Authorization."""
    request = register(cseq)
    client.authorize(request)
    assert len(request.headers.get_all("Authorization")) == 1
    value = request.headers.get("Authorization")
    assert value is not None
    return request, value


def challenge_response(request: Request, *challenges: str, status: int = 401) -> Response:
    response = make_response(request, status, to_tag="srv")
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    for value in challenges:
        response.headers.add(name, value)
    # what arrives from the wire
    parsed = parse_message(response.to_bytes())
    assert isinstance(parsed, Response)
    return parsed


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"cnonce{self.n}"


def test_client_register_flow_with_nonce_counting_and_stale():
    client = DigestClient(Credentials("alice", "s3cret"), cnonce_factory=Counter())
    first = register(1)
    client.authorize(first)  # nothing cached yet: no header
    assert "Authorization" not in first.headers
    assert client.handle_challenge(
        challenge_response(first, make_challenge("example.com", "N1", opaque="OP")), first
    )
    second, value = authorized_register(client, 2)
    creds = parse_authorization(value)
    assert (creds.nonce, creds.nc, creds.cnonce, creds.opaque) == (
        "N1",
        "00000001",
        "cnonce1",
        "OP",
    )
    assert creds.uri == "sip:example.com"
    assert verify_authorization(value, method="REGISTER", password="s3cret", username="alice")
    # a later request in the same registration authenticates pre-emptively, nc counts up
    third, value3 = authorized_register(client, 3)
    assert parse_authorization(value3).nc == "00000002"
    assert parse_authorization(value3).cnonce == "cnonce2"
    assert len(third.headers.get_all("Authorization")) == 1
    # nonce expired: stale=true -> retry with the new nonce, no new credentials needed
    stale = challenge_response(third, make_challenge("example.com", "N2", stale=True))
    assert client.handle_challenge(stale, third)
    fourth, value4 = authorized_register(client, 4)
    assert (parse_authorization(value4).nonce, parse_authorization(value4).nc) == (
        "N2",
        "00000001",
    )
    assert verify_authorization(value4, method="REGISTER", password="s3cret")
    # re-authorizing the same request replaces the header instead of adding one
    client.authorize(fourth)
    assert len(fourth.headers.get_all("Authorization")) == 1


def test_client_follows_nextnonce():
    client = DigestClient(Credentials("alice", "pw"), cnonce_factory=Counter())
    first = register(1)
    assert client.handle_challenge(challenge_response(first, make_challenge("r", "N1")), first)
    second = register(2)
    client.authorize(second)
    ok = make_response(second, 200, to_tag="srv")
    ok.headers.add("Authentication-Info", 'nextnonce="N2", qop=auth, rspauth="00", nc=00000001')
    client.handle_authentication_info(ok)
    third, value = authorized_register(client, 3)
    assert (parse_authorization(value).nonce, parse_authorization(value).nc) == ("N2", "00000001")
    assert verify_authorization(value, method="REGISTER", password="pw")
    # malformed or nonce-less values change nothing
    for info in ("garbage garbage", 'qop=auth, rspauth="00"'):
        bad = make_response(third, 200, to_tag="srv")
        bad.headers.add("Authentication-Info", info)
        client.handle_authentication_info(bad)
    fourth, value4 = authorized_register(client, 4)
    assert (parse_authorization(value4).nonce, parse_authorization(value4).nc) == ("N2", "00000002")


def test_client_gives_up_when_credentials_are_rejected():
    client = DigestClient(Credentials("alice", "wrong"))
    first = register(1)
    assert client.handle_challenge(challenge_response(first, make_challenge("example.com", "N")))
    second = register(2)
    client.authorize(second)
    # the server re-challenges without stale=true: the password is wrong (RFC 7616 §3.3)
    again = challenge_response(second, make_challenge("example.com", "N-fresh"))
    assert not client.handle_challenge(again, second)
    # without the request at hand, a re-challenge with the same nonce means the same
    assert not client.handle_challenge(
        challenge_response(second, make_challenge("example.com", "N"))
    )


def test_client_proxy_challenge_uses_proxy_authorization():
    client = DigestClient(Credentials("alice", "pw"))
    invite = register(1)
    response = challenge_response(
        invite, make_challenge("proxy.example.com", "PN", algorithm="SHA-256"), status=407
    )
    assert client.handle_challenge(response, invite)
    retry = register(2)
    client.authorize(retry)
    assert "Authorization" not in retry.headers
    value = retry.headers.get("Proxy-Authorization")
    assert value is not None and parse_authorization(value).algorithm == "SHA-256"


def test_client_answers_every_realm_with_the_right_credentials():
    client = DigestClient(
        [Credentials("alice-a", "pa", realm="a.example"), Credentials("alice", "pdefault")]
    )
    request = register(1)
    response = challenge_response(
        request,
        make_challenge("a.example", "NA", algorithm="MD5"),
        make_challenge("a.example", "NA2", algorithm="SHA-256"),
        make_challenge("b.example", "NB"),
    )
    assert client.handle_challenge(response, request)
    assert sorted(client.realms()) == ["a.example", "b.example"]
    retry = register(2)
    client.authorize(retry)
    values = {parse_authorization(v).realm: v for v in retry.headers.get_all("Authorization")}
    assert set(values) == {"a.example", "b.example"}
    assert parse_authorization(values["a.example"]).algorithm == "SHA-256"
    assert verify_authorization(values["a.example"], method="REGISTER", password="pa")
    assert verify_authorization(values["b.example"], method="REGISTER", password="pdefault")
    client.forget("a.example")
    assert client.realms() == ["b.example"]
    client.forget()
    assert client.realms() == []


def test_client_without_credentials_for_realm_or_without_challenge():
    client = DigestClient([Credentials("alice", "pw", realm="mine")])
    request = register(1)
    assert not client.handle_challenge(
        challenge_response(request, make_challenge("theirs", "N")), request
    )
    assert not client.handle_challenge(challenge_response(request, 'Basic realm="x"'), request)
    assert not client.handle_challenge(challenge_response(request), request)
    unsupported = make_challenge("mine", "N", algorithm="SHA-1024")
    assert not client.handle_challenge(challenge_response(request, unsupported), request)


def test_client_sess_keeps_cnonce_for_the_nonce_and_auth_int_preference():
    client = DigestClient(Credentials("u", "p"), cnonce_factory=Counter(), prefer_auth_int=True)
    request = register(1)
    challenge = make_challenge("r", "N", algorithm="MD5-sess", qop=("auth", "auth-int"))
    assert client.handle_challenge(challenge_response(request, challenge), request)
    values = []
    for cseq in (2, 3):
        retry = register(cseq)
        client.authorize(retry)
        value = retry.headers.get("Authorization")
        assert value is not None
        values.append(parse_authorization(value))
        assert verify_authorization(value, method="REGISTER", password="p")
    assert [v.cnonce for v in values] == ["cnonce1", "cnonce1"]
    assert [v.nc for v in values] == ["00000001", "00000002"]
    assert values[0].qop == "auth-int"


def test_challenges_from_response_reads_both_headers_and_skips_garbage():
    request = register(1)
    response = challenge_response(request, 'Digest realm="a", nonce="1"', 'Digest realm="b"')
    response.headers.add("Proxy-Authenticate", 'Digest realm="p", nonce="2"')
    response.headers.add("WWW-Authenticate", 'Digest realm="unterminated')
    got = challenges_from_response(response)
    assert [(c.realm, c.proxy) for c in got] == [("a", False), ("p", True)]


def test_password_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    client = DigestClient(Credentials("alice", "TopSecretPw"))
    request = register(1)
    client.handle_challenge(challenge_response(request, make_challenge("r", "N")), request)
    retry = register(2)
    client.authorize(retry)
    client.handle_challenge(challenge_response(retry, make_challenge("r", "N2")), retry)
    client.handle_challenge(challenge_response(retry, make_challenge("x", "N")), retry)
    assert caplog.records  # the rejection and the missing realm were logged ...
    assert "TopSecretPw" not in caplog.text  # ... without the password
    authorization = retry.headers.get("Authorization")
    assert authorization is not None and "TopSecretPw" not in authorization


# ------------------------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('Digst rea=lm,"\\\t/+=nocq-ABC12')), max_size=80))
def test_fuzz_parse_auth_header_only_raises_auth_parse_error(value):
    try:
        parsed = parse_auth_header(value)
    except AuthParseError:
        return
    assert parsed and all(scheme for scheme, _ in parsed)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_fuzz_challenges_and_verify_never_raise(value):
    try:
        parse_challenges(value)
    except AuthParseError:
        pass
    assert verify_authorization(value, method="GET", password="p") in (True, False)


# ------------------------------------------------------ cross-checks with other code / texts


@pytest.mark.parametrize("qop", [None, "auth", "auth,auth-int"])
def test_verifier_accepts_stdlib_urllib_digest_client(qop):
    """An independent digest implementation (urllib's HTTP client) against our verifier."""
    passwords = urllib.request.HTTPPasswordMgr()
    passwords.add_password("sip.example.com", "http://sip.example.com/", "alice", "pw 1")
    handler = urllib.request.HTTPDigestAuthHandler(passwords)
    request = urllib.request.Request("http://sip.example.com/reg")
    challenge = {"realm": "sip.example.com", "nonce": "abc123", "opaque": "xyz"}
    if qop is not None:
        challenge["qop"] = qop
    value = handler.get_authorization(request, challenge)
    assert value is not None
    header = "Digest " + value
    assert verify_authorization(header, method="GET", password="pw 1", username="alice")
    assert not verify_authorization(header, method="GET", password="pw 2")
    parsed = parse_authorization(header)
    assert parsed.opaque == "xyz" and parsed.uri == "/reg"
    # and our client computes the same response for the same inputs
    [ours] = parse_challenges(
        make_challenge(
            "sip.example.com", "abc123", qop=() if qop is None else ("auth",), opaque="xyz"
        )
    )
    mine = digest_response(
        ours,
        Credentials("alice", "pw 1"),
        "GET",
        "/reg",
        nc=int(parsed.nc or "1", 16),
        cnonce=parsed.cnonce,
    )
    assert parse_authorization(mine).response == parsed.response


def test_rfc3261_style_challenge():
    # the shape of RFC 3261 §25.1 / §22.4 examples: empty opaque, stale=FALSE, domain list
    value = (
        'Digest realm="atlanta.com",\r\n domain="sip:ss1.carrier.com", qop="auth",\r\n'
        ' nonce="f84f1cec41e6cbe5aea9c8e88d359",\r\n opaque="", stale=FALSE, algorithm=MD5'
    )
    [challenge] = parse_challenges(value)
    assert challenge.realm == "atlanta.com"
    assert challenge.domain == "sip:ss1.carrier.com"
    assert challenge.opaque == "" and challenge.stale is False
    value = digest_response(
        challenge, Credentials("bob", "zanzibar"), "REGISTER", "sip:atlanta.com"
    )
    assert 'opaque=""' in value  # an empty opaque is still echoed
