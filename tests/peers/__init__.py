"""Real peers for the integration and lab tests, started by the tests themselves.

Each peer is a small class that writes its configuration into a work directory, picks free
loopback ports (below the ephemeral range), runs the Debian binary in the foreground as a
child process in its own session (ended by its PID), waits until it answers, exposes its
addresses, and stops it. Any of them can also run inside a lab namespace (``netns=``).

Modules:
- ``kamailio``: :class:`Kamailio` registrar/proxy, digest auth (MD5 or SHA-256), UDP+TCP+TLS
- ``sipp``: :class:`Sipp` scenario runner; XML scenarios in ``sipp/``
- ``coturn``: :class:`Coturn` STUN/TURN (RFC 5780 alternate address, TLS)
- ``dnsmasq``: :class:`Dnsmasq` with :class:`DnsRecords` (NAPTR/SRV/A, RFC 3263)
- ``netns``: :class:`Lab` of namespaces, veth links, NAT routers, packet loss;
  :func:`build_nat_lab` for the public net + NATed laptops topology
- ``pulse``: :class:`PulseAudio` private daemon with a null sink
- ``baresip``: :class:`Baresip` user agent (auto-answer, sine source, sndfile dumps, ctrl_tcp)
- ``lab_services``: Kamailio + coturn + dnsmasq in the lab's public namespace
- ``rawsip`` / ``stunprobe``: hand-built SIP requests (digest) and STUN Binding probes
- ``certs``: throw-away CA + server certificate (openssl); ``ports``: free ports

Fixtures (``tests/peers/fixtures.py``, visible to every test through ``tests/conftest.py``):
``kamailio``, ``kamailio_factory(**opts)``, ``sipp_factory(scenario, remote, **opts)``,
``coturn``, ``coturn_factory(**opts)``, ``dns_factory(records, **opts)``, ``netns_lab``,
``nat_lab``, ``lab_services``, ``pulse``, ``baresip_factory(**opts)``, ``peer_dir``.
They skip with the reason when a binary or root is missing, and stop everything they
started at teardown.
"""
