"""The servers of the lab's public net: Kamailio, coturn and dnsmasq in one namespace."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from tests.peers.coturn import Coturn
from tests.peers.dnsmasq import Dnsmasq, DnsRecords
from tests.peers.kamailio import Kamailio
from tests.peers.netns import NatLab

DOMAIN = "example.org"


@dataclass
class LabServices:
    lab: NatLab
    kamailio: Kamailio
    coturn: Coturn
    dns: Dnsmasq
    domain: str = DOMAIN

    @property
    def sip_server(self) -> str:
        """What a laptop passes to ``--server`` (resolved through the lab's DNS)."""
        return f"sip.{self.domain}"

    @property
    def stun_server(self) -> str:
        return f"stun.{self.domain}:{self.coturn.port}"

    @property
    def turn_server(self) -> str:
        return f"turn.{self.domain}:{self.coturn.port}"

    def stop(self) -> None:
        for peer in (self.kamailio, self.coturn, self.dns):
            with contextlib.suppress(Exception):
                peer.stop()


def start_lab_services(lab: NatLab, workdir: Path) -> LabServices:
    public = lab.public.name
    kamailio = Kamailio(workdir / "kamailio", host=lab.server_ip, domain=DOMAIN, netns=public)
    coturn = Coturn(
        workdir / "coturn",
        host=lab.server_ip,
        alt_host=lab.server_ip2,
        realm=DOMAIN,
        netns=public,
        allow_loopback_peers=False,
    )
    records = DnsRecords()
    records.add_sip_domain(DOMAIN, lab.server_ip, kamailio.port, kamailio.port, kamailio.tls_port)
    for name in ("stun", "turn"):
        records.hosts[f"{name}.{DOMAIN}"] = [lab.server_ip]
    dns = Dnsmasq(workdir / "dnsmasq", records, host=lab.server_ip, netns=public)
    services = LabServices(lab, kamailio, coturn, dns)
    try:
        dns.start()
        kamailio.start()
        coturn.start()
    except BaseException:
        services.stop()
        raise
    for site in lab.sites:
        site.laptop.set_resolv([lab.server_ip])
        site.laptop.set_hosts({})
    lab.public.set_resolv([lab.server_ip])
    return services
