"""``softphone nat-check`` as users run it, against the coturn fixture on loopback (RFC 5780:
OTHER-ADDRESS 127.0.0.2 and an alternate port) and against a port where nothing answers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest

from ice.nat import FilteringBehavior, MappingBehavior, NatBehavior
from softphone.natcheck import advice, nat_lines
from tests.peers.coturn import Coturn
from tests.peers.netns import Lab, build_nat_lab


def softphone(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "softphone", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_nat_check_on_loopback_finds_no_nat(coturn: Coturn) -> None:
    server = f"127.0.0.1:{coturn.port}"
    res = softphone("--json", "nat-check", "--stun", server)
    assert res.returncode == 0, res.stderr
    nat = json.loads(res.stdout)["nat"]
    assert nat["completed"] is True
    assert nat["nat"] is False
    assert nat["rfc5780"] is True
    assert nat["server"] == server
    assert nat["mapped"] == nat["local"]
    assert nat["mapped"].startswith("127.0.0.1:")
    assert nat["mapping"] == "endpoint-independent"
    assert nat["filtering"] == "endpoint-independent"
    assert nat["summary"].startswith("no NAT")
    assert "direct calls work" in nat["advice"]
    # the plain-words report goes to stderr with --json (stdout is the JSON object only)
    assert "mapping:         endpoint-independent" in res.stderr


def test_nat_check_plain_words_on_stdout_and_account_stun(coturn: Coturn) -> None:
    # without the command's --stun, the account's --stun is used
    res = softphone("--stun", f"127.0.0.1:{coturn.port}", "nat-check")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "behind a NAT:    no" in out
    assert "other address:   127.0.0.2:" in out
    assert "filtering:       endpoint-independent" in out
    assert "for calls:       no NAT" in out


def test_nat_check_dead_server_fails_clearly() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # nothing listens there now (the port was only reserved for a moment)
    res = softphone("--json", "nat-check", "--stun", f"127.0.0.1:{port}")
    assert res.returncode == 1
    nat = json.loads(res.stdout)["nat"]
    assert nat["completed"] is False
    assert nat["nat"] is None
    assert nat["error"]
    assert "did not answer" in res.stderr
    assert "blocked" in nat["summary"]


def test_nat_check_without_server_is_a_usage_error() -> None:
    res = softphone("nat-check")
    assert res.returncode == 2
    assert "--stun" in res.stderr


# -- the plain-words report for NATs loopback cannot show -------------------------------------

SERVER, LOCAL = ("198.51.100.1", 3478), ("192.168.1.5", 40000)


def behind_nat(mapping: MappingBehavior, filtering: FilteringBehavior) -> NatBehavior:
    return NatBehavior(
        SERVER,
        LOCAL,
        mapped=("203.0.113.101", 40112),
        other_address=("198.51.100.2", 3479),
        nat=True,
        mapping=mapping,
        filtering=filtering,
        rfc5780=True,
    )


def test_symmetric_nat_needs_a_relay() -> None:
    result = behind_nat(
        MappingBehavior.ADDRESS_AND_PORT_DEPENDENT, FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT
    )
    assert advice(result).startswith(
        "symmetric NAT: direct calls to other NATed peers will need a TURN relay"
    )
    lines = "\n".join(nat_lines(result))
    assert "public address:  203.0.113.101:40112" in lines
    assert "behind a NAT:    yes" in lines
    assert "mapping:         address-and-port-dependent" in lines
    assert "other address:   198.51.100.2:3479 (RFC 5780)" in lines
    address_dependent = behind_nat(
        MappingBehavior.ADDRESS_DEPENDENT, FilteringBehavior.ADDRESS_DEPENDENT
    )
    assert "TURN relay" in advice(address_dependent)


def test_cone_nat_works_with_stun() -> None:
    result = behind_nat(
        MappingBehavior.ENDPOINT_INDEPENDENT, FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT
    )
    assert "through ICE with STUN" in advice(result)
    assert "port-restricted-cone" in nat_lines(result)[-2]


def test_unknown_nat_and_old_server() -> None:
    result = NatBehavior(SERVER, LOCAL, mapped=("203.0.113.101", 40112), nat=True)
    assert "TURN" in advice(result)
    assert "no RFC 5780 support" in nat_lines(result)[0]


def test_firewall_without_nat() -> None:
    result = NatBehavior(
        SERVER,
        SERVER,
        mapped=SERVER,
        nat=False,
        mapping=MappingBehavior.ENDPOINT_INDEPENDENT,
        filtering=FilteringBehavior.ADDRESS_AND_PORT_DEPENDENT,
        rfc5780=True,
    )
    assert "firewall" in advice(result) and "ICE" in advice(result)


# -- behind real NATs: network namespaces (root; marked "lab" by tests/integration/conftest) --


@pytest.mark.parametrize("symmetric", [False, True], ids=["masquerade", "random-fully"])
def test_nat_check_cli_behind_iptables_nat(
    netns_lab: Lab, coturn_factory: Callable[..., Coturn], symmetric: bool
) -> None:
    """The command on a laptop behind a NAT router: MASQUERADE is a port-restricted cone
    (calls work with STUN), ``--random-fully`` a symmetric NAT (calls need a relay)."""
    lab = build_nat_lab(netns_lab, symmetric=(symmetric,))
    server = coturn_factory(
        host=lab.server_ip, alt_host=lab.server_ip2, netns=lab.public.name, tls=False
    )
    site = lab.sites[0]
    res = site.laptop.run(
        [sys.executable, "-m", "softphone", "--json", "nat-check", "--stun",
         f"{server.host}:{server.port}"],
        check=False,
        timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    nat = json.loads(res.stdout)["nat"]
    assert nat["nat"] is True
    assert nat["mapped"].split(":")[0] == site.router_wan_ip
    if symmetric:
        assert nat["advice"].startswith(
            "symmetric NAT: direct calls to other NATed peers will need a TURN relay"
        )
    else:
        assert nat["summary"].startswith("port-restricted-cone NAT")
        assert "through ICE with STUN" in nat["advice"]
