from pathlib import Path

import pytest

from softphone.config import Account, ConfigError, HostPort, apply_overrides, load_config

GOOD = """
default_account = "office"

[accounts.office]
server = "pbx.example.org:5080"
user = "alice@example.org"
auth_user = "a1"
password_env = "TEST_SIP_PW"
transport = "TLS"
codecs = ["pcmu", "opus"]

[accounts.home]
server = "[::1]:5060"
user = "bob"
password = "in-file"
ice = false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_accounts_load_with_defaults_and_env_password(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TEST_SIP_PW", "s3cret")
    config = load_config(write(tmp_path, GOOD))
    office = config.account(None)
    assert office.name == "office"
    assert office.server == HostPort("pbx.example.org", 5080)
    assert (office.user, office.domain, office.digest_user) == ("alice", "example.org", "a1")
    assert office.password == "s3cret"
    assert office.transport == "tls"
    assert office.codecs == ("pcmu", "opus")
    home = config.account("home")
    assert home.server == HostPort("::1", 5060)
    assert home.aor_domain == "::1"
    assert home.password == "in-file"
    assert home.ice is False


def test_password_never_in_repr(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TEST_SIP_PW", "s3cret")
    office = load_config(write(tmp_path, GOOD)).account("office")
    assert "s3cret" not in repr(office)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[accounts.x]\nserver = 5060\n", "server must be a string"),
        ("[accounts.x]\ntransport = 'sctp'\n", "transport must be one of"),
        ("[accounts.x]\ncodecs = ['g729']\n", "unknown codec"),
        ("[accounts.x]\nsever = 'a'\n", "unknown setting(s) sever"),
        ("[accounts.x]\npassword_env = 'NOPE_NOT_SET_123'\n", "NOPE_NOT_SET_123 is not set"),
        ("[accounts.x]\nserver = 'host:99999'\n", "bad port"),
        ("default_account = 'y'\n[accounts.x]\n", "default_account 'y' is not an account"),
        ("[accounts\n", "not valid TOML"),
        ("colour = 1\n", "unknown top-level setting"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, text, message) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    assert message in str(exc.value)
    assert str(tmp_path) in str(exc.value)


def test_missing_explicit_file_is_an_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_missing_default_file_is_an_empty_config(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert load_config().account(None) == Account()


def test_command_line_overrides(monkeypatch) -> None:
    monkeypatch.setenv("PW", "pw")
    account = apply_overrides(
        Account(codecs=("opus",)),
        server="127.0.0.1:5060",
        user="bob",
        password_env="PW",
        codecs="pcma,pcmu",
        bind="127.0.0.1:0",
    )
    assert account.server == HostPort("127.0.0.1", 5060)
    assert account.aor_domain == "127.0.0.1"
    assert account.bind == HostPort("127.0.0.1", 0)
    assert account.codecs == ("pcma", "pcmu")
    assert account.password == "pw"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.org", HostPort("example.org")),
        ("10.0.0.1:5061", HostPort("10.0.0.1", 5061)),
        ("[2001:db8::1]:5060", HostPort("2001:db8::1", 5060)),
        ("2001:db8::1", HostPort("2001:db8::1")),
    ],
)
def test_hostport(text, expected) -> None:
    parsed = HostPort.parse(text)
    assert parsed == expected
    assert HostPort.parse(str(parsed)) == parsed


def test_ice_pacing_and_candidate_pool_settings(tmp_path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[accounts.a]\nuser = 'a@x'\n"
        "[accounts.b]\nuser = 'b@x'\nice_pacing_ms = 20\ncandidate_pool = 2\n"
        "[accounts.c]\nuser = 'c@x'\nice_pacing_ms = 0\ncandidate_pool = 0\n"
    )
    config = load_config(path)
    a, b, c = (config.account(name) for name in "abc")
    assert (a.ice_pacing_ms, a.candidate_pool) == (5, 1)  # the defaults
    assert (b.ice_pacing_ms, b.candidate_pool) == (20, 2)
    assert (c.ice_pacing_ms, c.candidate_pool) == (None, 0)  # 0: propose no a=ice-pacing
    for bad in ("ice_pacing_ms = -1", "ice_pacing_ms = true", "candidate_pool = 'x'"):
        path.write_text(f"[accounts.a]\nuser = 'a@x'\n{bad}\n")
        with pytest.raises(ConfigError, match=bad.split()[0]):
            load_config(path)
