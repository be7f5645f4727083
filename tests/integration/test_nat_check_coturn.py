"""RFC 5780 NAT behaviour discovery (ice.nat.discover_nat) against coturn on loopback.

The ``coturn`` fixture listens on 127.0.0.1 and 127.0.0.2 with an alternate port
(``--alt-listening-port``), which is what RFC 5780 needs: OTHER-ADDRESS and CHANGE-REQUEST.
Loopback has no NAT and no filtering, so the verdict must be "no NAT", endpoint-independent.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest

from ice.nat import FilteringBehavior, MappingBehavior, describe, discover_nat
from tests.peers.coturn import Coturn
from tests.peers.netns import Lab, build_nat_lab


async def test_loopback_is_no_nat_endpoint_independent(coturn: Coturn) -> None:
    result = await discover_nat(coturn.stun_address, local="127.0.0.1")
    assert result.error is None, result
    assert result.rfc5780
    assert result.other_address == coturn.alt_address
    assert result.nat is False
    assert result.mapped == result.local
    assert result.mapping is MappingBehavior.ENDPOINT_INDEPENDENT
    # coturn answered CHANGE-REQUEST from 127.0.0.2 and we received it
    assert result.filtering is FilteringBehavior.ENDPOINT_INDEPENDENT
    assert describe(result).startswith("no NAT")


async def test_mapping_tests_against_the_alternate_address(coturn: Coturn) -> None:
    # run tests II and III although there is no NAT: coturn's other address must report
    # the same mapping as the primary one
    result = await discover_nat(f"127.0.0.1:{coturn.port}", always_map=True)
    assert result.error is None, result
    assert result.nat is False
    assert result.mapping is MappingBehavior.ENDPOINT_INDEPENDENT
    assert result.filtering is FilteringBehavior.ENDPOINT_INDEPENDENT


async def test_server_without_rfc5780(coturn_factory: Callable[..., Coturn]) -> None:
    server = coturn_factory(alt_host=None, tls=False)
    result = await discover_nat(server.stun_address, local="127.0.0.1")
    assert not result.rfc5780
    assert result.nat is False
    assert result.mapping is MappingBehavior.ENDPOINT_INDEPENDENT
    assert result.filtering is FilteringBehavior.UNKNOWN


async def test_dead_server_reports_no_answer() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers
        result = await discover_nat(silent.getsockname(), timeout=0.6)
    assert result.nat is None
    assert result.error is not None
    assert "blocked" in describe(result)


# -- behind real NATs: network namespaces (root) ---------------------------------------------

NAT_CHECK_CODE = """
import asyncio, json, sys
from ice.nat import discover_nat
result = asyncio.run(discover_nat((sys.argv[1], int(sys.argv[2])), timeout=2.0, filter_timeout=1.0))
print(json.dumps(result.as_dict()))
"""


@pytest.mark.lab
@pytest.mark.parametrize("symmetric", [False, True], ids=["masquerade", "random-fully"])
def test_nat_check_behind_iptables_nat(
    netns_lab: Lab, coturn_factory: Callable[..., Coturn], symmetric: bool
) -> None:
    """MASQUERADE keeps one mapping per internal address and port: endpoint-independent
    mapping; ``--random-fully`` picks a new port per destination: symmetric.  The router's
    conntrack lets in only replies from the exact address and port that was contacted, so
    the filtering is address-and-port-dependent in both cases."""
    lab = build_nat_lab(netns_lab, symmetric=(symmetric,))
    server = coturn_factory(
        host=lab.server_ip, alt_host=lab.server_ip2, netns=lab.public.name, tls=False
    )
    site = lab.sites[0]
    out = site.laptop.python(NAT_CHECK_CODE, server.host, str(server.port), timeout=60)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["nat"] is True
    assert result["rfc5780"] is True
    assert result["mapped"].split(":")[0] == site.router_wan_ip
    assert result["local"].split(":")[0] == site.laptop_ip
    if symmetric:
        assert result["mapping"] == "address-and-port-dependent"
        assert result["summary"].startswith("symmetric NAT")
    else:
        assert result["mapping"] == "endpoint-independent"
        assert result["summary"].startswith("port-restricted-cone NAT")
    assert result["filtering"] == "address-and-port-dependent"
