"""IPv6 local addresses: the ``sip`` shell's IPv6 interface addresses (/proc/net/if_inet6
format) and an account domain written as a bracketed IPv6 reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from sip.aio import _ipv6_interface_addresses
from softphone.config import Account
from softphone.useragent import ua_config

# /proc/net/if_inet6: address, ifindex, prefix length, scope, flags, name (all hex)
IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000000000000000002 02 40 20 80     eth0
20010db8000000000000000000000005 02 40 00 80     eth0
20010db8000000010000000000000005 02 40 00 c0     eth0
20010db8000000020000000000000005 02 40 00 a0     eth0
20010db8000000030000000000000005 02 40 00 88     eth0
fd000000000000000000000000000007 03 40 00 80     eth1
not-an-address 03 40 00 80 eth1
"""


def test_only_global_usable_ipv6_addresses_are_taken(tmp_path: Path) -> None:
    path = tmp_path / "if_inet6"
    path.write_text(IF_INET6)
    # loopback (scope host), link-local, tentative (0x40), deprecated (0x20) and failed-DAD
    # (0x08) addresses left out, a malformed line skipped
    assert _ipv6_interface_addresses(str(path)) == ["2001:db8::5", "fd00::7"]


def test_a_missing_file_gives_no_address(tmp_path: Path) -> None:
    assert _ipv6_interface_addresses(str(tmp_path / "missing")) == []


@pytest.mark.parametrize("domain", ["2001:db8::2", "[2001:db8::2]"])
def test_an_ipv6_domain_is_bracketed_once(domain: str) -> None:
    config = ua_config(Account(user="bob", domain=domain))
    assert config.domain == "[2001:db8::2]"
    assert config.aor == "sip:bob@[2001:db8::2]"
