"""Real peers for the integration and lab tests, started by the tests on loopback.

Each peer is a small class that writes its configuration into a temporary directory, picks
free loopback ports, runs the Debian binary in the foreground as a child process (ended by
its PID), waits until it answers, and exposes its addresses:

- :mod:`tests.peers.kamailio`: Kamailio registrar/proxy with digest auth (UDP, TCP, TLS)
- :mod:`tests.peers.sipp`: sipp scenario runner and the XML scenarios in ``sipp/``
- :mod:`tests.peers.coturn`: coturn STUN/TURN server
- :mod:`tests.peers.netns`: network namespaces, veth links, NAT routers, packet loss
- :mod:`tests.peers.pulse`: a private PulseAudio daemon with a null sink

Fixtures live in ``tests/integration/conftest.py`` (and ``tests/conftest.py`` for shared ones).
"""
