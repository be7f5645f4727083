"""Without a default route (and without a proxy), a user agent listening on every address
still puts an address of the machine's in Via/Contact, not 127.0.0.1: none of the probe
ranges routes here, so the interface's address is taken (sip.aio ``_route_source``).

Needs root and iproute2 (skipped otherwise). Documentation/private addresses, only inside the
namespace.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.netns import Lab, netns_available

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(netns_available() is not None, reason=str(netns_available())),
]

PROBE = """
import asyncio
from sip.aio import AsyncUserAgent
from sip.ua import UAConfig

async def main():
    ua = AsyncUserAgent(UAConfig(user="bob", local_host="0.0.0.0", local_port=0))
    await ua.start(transports=("UDP",))
    print(ua.config.local_host)
    await ua.close(timeout=0.5)

asyncio.run(main())
"""


def test_no_default_route_takes_the_interface_address(tmp_path: Path) -> None:
    with Lab(tmp_path) as lab:
        host, other = lab.namespace("host"), lab.namespace("other")
        lab.link(host, other, "10.9.8.7/24", "10.9.8.1/24", "eth0", "eth0")
        assert "default" not in host.ip("route")
        found = host.python(PROBE).stdout.strip()
    assert found == "10.9.8.7"
