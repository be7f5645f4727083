"""Shared fixtures: the real peers of tests/peers (Kamailio, sipp, coturn, namespaces, audio)."""

from tests.peers.fixtures import (  # noqa: F401  (fixtures are found by name)
    baresip_factory,
    coturn,
    coturn_factory,
    dns_factory,
    kamailio,
    kamailio_factory,
    lab_services,
    nat_lab,
    netns_lab,
    peer_dir,
    pulse,
    sipp_factory,
)
