"""Smoke tests of the real peers the integration tests use (tests/peers/).

Each test proves one peer fixture works on loopback: it starts, answers, and stops.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.peers.baresip import Baresip
from tests.peers.coturn import Coturn
from tests.peers.dnsmasq import Dnsmasq, DnsRecords
from tests.peers.kamailio import Kamailio
from tests.peers.lab_services import LabServices
from tests.peers.netns import Lab, Namespace, NatLab, build_nat_lab
from tests.peers.pulse import PulseAudio
from tests.peers.rawsip import SipClient, options, parse_challenge, register
from tests.peers.sipp import Sipp, SippResult

SippFactory = Callable[..., Sipp]


# ---- Kamailio --------------------------------------------------------------------------------


def _sipp_register(
    sipp_factory: SippFactory, kamailio: Kamailio, scenario: str, user: str, password: str, **kw
) -> Sipp:
    """A sipp REGISTER client (one call, over UDP) for ``user`` at the Kamailio, not started."""
    return sipp_factory(
        scenario,
        kamailio.server("udp"),
        user=user,
        domain=kamailio.domain,
        auth_password=password,
        calls=1,
        **kw,
    )


def _register_ok(kamailio: Kamailio, user: str, password: str) -> None:
    """Register ``user`` with a raw SIP client over UDP; the digest retry must get a 200."""
    with SipClient(*kamailio.address("udp")) as client:
        _, ok = register(client, kamailio.domain, user, password)
    assert ok is not None and ok.status == 200


def _run_call(uac: Sipp, uas: Sipp) -> tuple[SippResult, SippResult]:
    """Run the sipp client to its end against a started sipp server; both results."""
    result = uac.run(timeout=60)
    assert result.ok, result.describe()
    server = uas.wait(timeout=30)
    return result, server


def test_kamailio_sipp_register_with_digest_gets_200(
    kamailio: Kamailio, sipp_factory: SippFactory
) -> None:
    reg = _sipp_register(sipp_factory, kamailio, "register_auth", "bob", kamailio.users["bob"])
    result = reg.run(timeout=30)
    assert result.ok and result.successful == 1, result.describe()
    assert reg.contact in kamailio.contacts("bob")
    # the 401 came first, then the 200
    statuses = [m.first_line[8:11] for m in reg.traced("received")]
    assert statuses == ["401", "200"]


def test_kamailio_unauthenticated_register_gets_401(kamailio: Kamailio) -> None:
    with SipClient(*kamailio.address("udp")) as client:
        first, retry = register(client, kamailio.domain, "alice", None)
    assert retry is None
    assert first.status == 401
    challenge = parse_challenge(first.header("WWW-Authenticate") or "")
    assert challenge["realm"] == kamailio.realm
    assert challenge["algorithm"] == "MD5"
    assert "auth" in challenge["qop"]
    assert kamailio.contacts("alice") == []


def test_kamailio_wrong_password_is_rejected(kamailio: Kamailio, sipp_factory: SippFactory) -> None:
    scenarios = {
        scenario: _sipp_register(sipp_factory, kamailio, scenario, "alice", "not-the-password")
        for scenario in ("register_rejected", "register_auth")
    }
    rejected = scenarios["register_rejected"].run(timeout=30)
    assert rejected.ok, rejected.describe()
    accepted = scenarios["register_auth"].run(timeout=30)
    assert accepted.failed == 1 and accepted.successful == 0
    assert kamailio.contacts("alice") == []
    # an unknown user fails the same way
    with SipClient(*kamailio.address("udp")) as client:
        _, retry = register(client, kamailio.domain, "mallory", "whatever")
    assert retry is not None and retry.status in (401, 403)


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_kamailio_register_over_stream_transports(kamailio: Kamailio, transport: str) -> None:
    ctx = kamailio.ssl_context() if transport == "tls" else None
    host, port = kamailio.address(transport)
    with SipClient(host, port, transport, ssl_context=ctx) as client:
        first, retry = register(client, kamailio.domain, "carol", kamailio.users["carol"])
        local_port = client.local[1]
    assert first.status == 401
    assert retry is not None and retry.status == 200
    # nathelper stored the connection's source address as "received"
    contact = " ".join(retry.all("Contact"))
    assert f'received="sip:127.0.0.1:{local_port};transport={transport}"' in contact


def test_kamailio_tls_certificate_verifies_against_ca(kamailio: Kamailio) -> None:
    import ssl

    host, port = kamailio.address("tls")
    with SipClient(host, port, "tls", ssl_context=kamailio.ssl_context()) as client:
        assert options(client, kamailio.uri()).status == 200
    # without the test CA the handshake fails: the CA really is what makes it trusted
    with pytest.raises(ssl.SSLCertVerificationError):
        SipClient(host, port, "tls", ssl_context=ssl.create_default_context())


def test_kamailio_sha256_digest(kamailio_factory: Callable[..., Kamailio]) -> None:
    k = kamailio_factory(algorithm="SHA-256", realm="sha.example.org", tls=False)
    with SipClient(*k.address("udp")) as client:
        first, retry = register(client, k.domain, "bob", k.users["bob"])
        _, bad = register(client, k.domain, "bob", "wrong")
    challenge = parse_challenge(first.header("WWW-Authenticate") or "")
    assert challenge["algorithm"] == "SHA-256"
    assert challenge["realm"] == "sha.example.org"
    assert retry is not None and retry.status == 200
    assert bad is not None and bad.status == 401


def _registered_uas(kamailio: Kamailio, sipp_factory: SippFactory, user: str) -> Sipp:
    """A started sipp UAS (one call, UDP) that a sipp REGISTER put in the location table."""
    uas = sipp_factory("uas_sdp", calls=1).start()
    reg = _sipp_register(
        sipp_factory, kamailio, "register_auth", user, kamailio.users[user],
        contact=f"sip:{user}@{uas.uri_host}",
    ).run(timeout=30)  # fmt: skip
    assert reg.ok, reg.describe()
    return uas


def _uac_via(
    kamailio: Kamailio, sipp_factory: SippFactory, service: str, transport: str = "udp", **kw
) -> Sipp:
    """A sipp UAC (one call with SDP) to ``service`` through the Kamailio, not started."""
    return sipp_factory(
        "uac_sdp",
        kamailio.server(transport),
        transport=transport,
        domain=kamailio.domain,
        service=service,
        calls=1,
        **kw,
    )


def test_kamailio_routes_call_with_407_and_record_route(
    kamailio: Kamailio, sipp_factory: SippFactory
) -> None:
    uas = _registered_uas(kamailio, sipp_factory, "bob")
    uac = _uac_via(
        kamailio, sipp_factory, "bob", user="alice", auth_password=kamailio.users["alice"],
        call_duration_ms=100,
    )  # fmt: skip
    result, server = _run_call(uac, uas)
    assert result.successful == 1 and server.successful == 1, result.describe()
    received = [m.first_line for m in uac.traced("received")]
    assert received[0] == "SIP/2.0 407 Proxy Authentication Required"
    assert "SIP/2.0 200 OK" in received
    # ACK and BYE follow the recorded route through the proxy (loose routing)
    bye = next(m for m in uac.traced("sent") if m.first_line.startswith("BYE "))
    assert f"sip:127.0.0.1:{kamailio.port};" in " ".join(bye.headers("Route"))
    assert any(m.first_line.startswith("BYE ") for m in uas.traced("received"))


def test_kamailio_double_record_route_when_transport_changes(
    kamailio: Kamailio, sipp_factory: SippFactory
) -> None:
    uas = _registered_uas(kamailio, sipp_factory, "carol")  # UDP callee
    uac = _uac_via(kamailio, sipp_factory, "carol", transport="tcp", call_duration_ms=100)
    assert _run_call(uac, uas)[1].ok
    invite = next(m for m in uas.traced("received") if m.first_line.startswith("INVITE "))
    rr = [v for line in invite.headers("Record-Route") for v in line.split(",")]
    assert len(rr) == 2, invite.text
    assert any("transport=tcp" in v for v in rr)


def test_kamailio_restart_keeps_ports_and_forgets_registrations(
    kamailio: Kamailio,
) -> None:
    _register_ok(kamailio, "alice", kamailio.users["alice"])
    assert kamailio.contacts("alice")
    old_pid, port = kamailio.pid, kamailio.port
    kamailio.restart()
    assert kamailio.pid != old_pid and kamailio.port == port
    assert kamailio.contacts("alice") == []
    _register_ok(kamailio, "alice", kamailio.users["alice"])
    assert "==== start" in kamailio.log()


def test_kamailio_add_user_at_run_time(kamailio: Kamailio) -> None:
    kamailio.add_user("dave", "dave-secret-4")
    _register_ok(kamailio, "dave", "dave-secret-4")


# ---- sipp ------------------------------------------------------------------------------------


def test_sipp_uac_against_uas_20_calls(sipp_factory: SippFactory) -> None:
    uas = sipp_factory("uas_sdp", calls=20).start()
    uac = sipp_factory(
        "uac_sdp", uas.uri_host, service="bob", calls=20, rate=20, limit=20, call_duration_ms=50
    )
    result, server = _run_call(uac, uas)
    assert (result.successful, result.failed, result.created) == (20, 0, 20)
    assert (server.successful, server.failed) == (20, 0), server.describe()


def test_sipp_over_tcp(sipp_factory: SippFactory) -> None:
    uas = sipp_factory("uas_sdp", transport="tcp", calls=3).start()
    uac = sipp_factory("uac_sdp", uas.uri_host, transport="tcp", service="bob", calls=3, rate=10)
    result, server = _run_call(uac, uas)
    assert result.successful == 3 and server.successful == 3, result.describe()
    assert {m.transport for m in uac.traced()} == {"TCP"}


def test_sipp_cancel_after_ringing(sipp_factory: SippFactory) -> None:
    uas = sipp_factory("uas_ring_wait", calls=2).start()
    uac = sipp_factory("uac_cancel", uas.uri_host, service="bob", calls=2, rate=10)
    result, server = _run_call(uac, uas)
    assert result.successful == 2 and server.successful == 2, result.describe()
    firsts = [m.first_line for m in uac.traced("received")]
    assert firsts.count("SIP/2.0 487 Request Terminated") == 2
    assert firsts.count("SIP/2.0 200 OK") == 2  # the CANCELs' 200s, no call was answered


def test_sipp_uac_retransmits_invite(sipp_factory: SippFactory) -> None:
    uas = sipp_factory("uas_sdp", calls=1).start()
    uac = sipp_factory("uac_invite_retrans", uas.uri_host, service="bob", calls=1)
    _, server = _run_call(uac, uas)
    assert server.successful == 1, server.describe()
    invites = [m.text for m in uas.traced("received") if m.first_line.startswith("INVITE ")]
    assert len(invites) == 2 and invites[0] == invites[1]  # a true retransmission
    # the UAS had to retransmit its 200 while the UAC held back the ACK
    assert server.retransmissions >= 1


def test_sipp_reports_failed_calls(sipp_factory: SippFactory) -> None:
    from tests.peers.ports import free_port

    nobody = f"127.0.0.1:{free_port()}"
    uac = sipp_factory("uac_sdp", nobody, service="bob", calls=1, recv_timeout_ms=1000)
    result = uac.run(timeout=60)
    assert not result.ok
    assert result.failed == 1 and result.successful == 0
    assert result.returncode == 1


# ---- coturn ----------------------------------------------------------------------------------


def _binding_request() -> tuple[bytes, bytes]:
    """A STUN Binding request built by hand: type 0x0001, length 0, magic cookie, 96-bit id."""
    import os
    import struct

    tid = os.urandom(12)
    return struct.pack("!HHI", 0x0001, 0, 0x2112A442) + tid, tid


def _xor_mapped_address(response: bytes) -> tuple[str, int]:
    import socket
    import struct

    mtype, length, cookie = struct.unpack("!HHI", response[:8])
    assert (mtype, cookie) == (0x0101, 0x2112A442)  # Binding success response
    pos = 20
    while pos < 20 + length:
        atype, alen = struct.unpack("!HH", response[pos : pos + 4])
        value = response[pos + 4 : pos + 4 + alen]
        if atype == 0x0020:  # XOR-MAPPED-ADDRESS, IPv4
            port = struct.unpack("!H", value[2:4])[0] ^ 0x2112
            addr = struct.unpack("!I", value[4:8])[0] ^ 0x2112A442
            return socket.inet_ntoa(struct.pack("!I", addr)), port
        pos += 4 + alen + (-alen % 4)
    raise AssertionError("no XOR-MAPPED-ADDRESS")


def test_coturn_stun_binding_reflects_our_address(coturn: Coturn) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        request, tid = _binding_request()
        sock.sendto(request, coturn.stun_address)
        data, source = sock.recvfrom(2048)
        assert source == coturn.stun_address
        assert data[8:20] == tid
        assert _xor_mapped_address(data) == sock.getsockname()


def test_coturn_rfc5780_other_address_and_change_request(coturn: Coturn) -> None:
    from tests.peers.stunprobe import stun_binding

    plain = stun_binding(*coturn.stun_address)
    assert plain.other_address == coturn.alt_address
    changed = stun_binding(*coturn.stun_address, change_ip=True, change_port=True)
    assert changed.is_success and changed.source == coturn.alt_address


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_coturn_turn_allocation_relays_to_loopback_peer(
    coturn: Coturn, transport: str
) -> None:
    import asyncio
    import socket

    from aioice.turn import create_turn_endpoint

    class Receiver(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.received.put_nowait((data, addr))

    ssl_ctx = coturn.ssl_context() if transport == "tls" else None
    turn, client = await create_turn_endpoint(
        Receiver,
        server_addr=coturn.turn_address(transport),
        username="alice",
        password=coturn.users["alice"],
        ssl=ssl_ctx,
        transport="tcp" if transport == "tls" else transport,
    )
    try:
        relayed = turn.get_extra_info("sockname")
        assert relayed[0] == coturn.relay_ip
        assert coturn.min_port <= relayed[1] <= coturn.max_port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            peer.settimeout(5.0)
            turn.sendto(b"via relay", peer.getsockname())
            data, source = await asyncio.to_thread(peer.recvfrom, 2048)
            assert (data, source) == (b"via relay", tuple(relayed))
            peer.sendto(b"back", source)
            back, origin = await asyncio.wait_for(client.received.get(), 5.0)
            assert (back, origin) == (b"back", peer.getsockname())
    finally:
        turn.close()


async def test_coturn_rejects_wrong_turn_password(coturn: Coturn) -> None:
    import asyncio

    from aioice.stun import TransactionFailed
    from aioice.turn import create_turn_endpoint

    with pytest.raises(TransactionFailed):
        await create_turn_endpoint(
            asyncio.DatagramProtocol,
            server_addr=coturn.turn_address("udp"),
            username="alice",
            password="wrong",
        )


# ---- network namespaces ----------------------------------------------------------------------

UDP_RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
try:
    while True:
        data, src = s.recvfrom(2048)
        print("got", src[0], src[1], data.decode(), flush=True)
except TimeoutError:
    print("done", flush=True)
"""

UDP_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40000))
for dest in sys.argv[1:]:
    host, port = dest.split(":")
    s.sendto(b"hello", (host, int(port)))
"""


def _received(
    lab_ns: Namespace,
    senders: list[tuple[Namespace, list[str]]],
    accounted: Callable[[list[tuple]], bool],
) -> list[tuple]:
    """Run a receiver on port 9999 in ``lab_ns``, the senders, and return what arrived once
    ``accounted(arrived so far)`` says every datagram sent arrived or was dropped."""
    import time

    receiver = lab_ns.popen_python(UDP_RECEIVER, "9999", "30", name="receiver")
    receiver.wait_for_log(r"(?m)^ready$")
    for ns, destinations in senders:
        ns.python(UDP_SENDER, *destinations)

    def arrived() -> list[tuple]:
        lines = receiver.log().splitlines()
        return [tuple(line.split()[1:]) for line in lines if line.startswith("got ")]

    deadline = time.monotonic() + 10.0  # datagrams over veth take microseconds
    while not accounted(arrived()) and time.monotonic() < deadline:
        time.sleep(0.02)
    receiver.stop()
    return arrived()


def test_netns_masquerade_source_is_router_public_address(nat_lab: NatLab) -> None:
    site = nat_lab.sites[0]
    destinations = [f"{nat_lab.server_ip}:9999"] * 2
    got = _received(nat_lab.public, [(site.laptop, destinations)], lambda got: len(got) >= 2)
    # endpoint-independent mapping: MASQUERADE keeps the source port
    assert got == [(site.router_wan_ip, "40000", "hello")] * 2
    assert site.laptop_ip.startswith("198.51.100.")


def test_netns_random_fully_is_symmetric_nat(netns_lab: Lab) -> None:
    lab = build_nat_lab(netns_lab, symmetric=(False, True))
    destinations = [f"{lab.server_ip}:9999", f"{lab.server_ip2}:9999"]
    senders = [(site.laptop, destinations) for site in lab.sites]
    got = _received(lab.public, senders, lambda got: len(got) >= 4)
    by_router = {ip: {port for ip2, port, _ in got if ip2 == ip} for ip, _, _ in got}
    eim, symmetric = lab.sites
    assert by_router[eim.router_wan_ip] == {"40000"}  # same mapping for both destinations
    assert len(by_router[symmetric.router_wan_ip]) == 2  # one mapping per destination
    assert len(got) == 4


def test_netns_total_loss_then_none(nat_lab: NatLab) -> None:
    site = nat_lab.sites[0]
    one = [(site.laptop, [f"{nat_lab.server_ip}:9999"])]
    site.router.set_loss(1.0)
    dropped = site.router.dropped_packets
    assert _received(nat_lab.public, one, lambda got: len(got) + dropped() >= 1) == []
    assert site.router.dropped_packets() >= 1
    site.router.set_loss(0.0)
    got = _received(nat_lab.public, one, lambda got: len(got) >= 1)
    assert got == [(site.router_wan_ip, "40000", "hello")]


def test_netns_unroutable_destination_vanishes_silently(nat_lab: NatLab) -> None:
    # the public net has no route to the private LANs: sending there must not fail
    out = nat_lab.public.python(
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(3):\n"
        "    s.sendto(b'x', ('198.51.100.10', 5000))\n"
        "print('ok')\n"
    )
    assert out.stdout.strip() == "ok"


def test_netns_hosts_file_and_cleanup(netns_lab: Lab) -> None:
    import subprocess
    from pathlib import Path

    ns = netns_lab.namespace("solo")
    ns.set_hosts({"sip.example.org": "203.0.113.1"})
    out = ns.python("import socket; print(socket.gethostbyname('sip.example.org'))")
    assert out.stdout.strip() == "203.0.113.1"
    name = ns.name
    netns_lab.cleanup()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in listed
    assert not Path("/etc/netns", name).exists()


def test_netns_coturn_and_kamailio_in_public_namespace(nat_lab: NatLab, peer_dir) -> None:
    site = nat_lab.sites[0]
    turn = Coturn(
        peer_dir / "coturn-ns",
        host=nat_lab.server_ip,
        alt_host=nat_lab.server_ip2,
        netns=nat_lab.public.name,
        allow_loopback_peers=False,
    )
    kam = Kamailio(peer_dir / "kamailio-ns", host=nat_lab.server_ip, netns=nat_lab.public.name)
    turn.start()
    kam.start()
    try:
        probe = (
            "from tests.peers.stunprobe import stun_binding\n"
            f"r = stun_binding('{nat_lab.server_ip}', {turn.port})\n"
            "print(*r.xor_mapped, *r.other_address)\n"
        )
        mapped = site.laptop.python(probe).stdout.split()
        assert mapped[0] == site.router_wan_ip
        assert mapped[2:] == [nat_lab.server_ip2, str(turn.port + 1)]
        register = (
            "from tests.peers.rawsip import SipClient, register\n"
            f"with SipClient('{nat_lab.server_ip}', {kam.port}, bind_host='0.0.0.0') as c:\n"
            f"    _, ok = register(c, 'example.org', 'alice', '{kam.users['alice']}')\n"
            "print(ok.status)\n"
        )
        assert site.laptop.python(register).stdout.strip() == "200"
        # nathelper saw the NAT: the contact is reached at the router's public address
        assert kam.contacts("alice")
        assert site.router_wan_ip in kam.rpc("ul.lookup", "location", "alice")
    finally:
        kam.stop()
        turn.stop()


# ---- PulseAudio ------------------------------------------------------------------------------


def test_pulse_pactl_info_and_null_sink_loop(pulse: PulseAudio) -> None:
    import os
    import subprocess

    info = pulse.info()
    assert info["Default Sink"] == "nullsink"
    assert info["Default Source"] == "nullsink.monitor"
    assert os.environ["PULSE_SERVER"] == f"unix:{pulse.socket}"
    # a client in a subprocess (inheriting the environment) reaches the same daemon
    out = subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True)
    assert out.returncode == 0 and "nullsink" in out.stdout
    pulse.add_null_sink("second")
    assert "second" in pulse.pactl("list", "short", "sinks")


PLAYREC = """
import numpy as np
import sounddevice as sd
fs = 48000
tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(fs // 2) / fs)).astype("float32")
rec = sd.playrec(tone, samplerate=fs, channels=1, device="pulse", blocking=True)
print(float(np.sqrt(np.mean(rec[fs // 4 :, 0] ** 2))))
"""


def test_pulse_sounddevice_plays_into_null_sink_and_records_its_monitor(
    pulse: PulseAudio,
) -> None:
    import subprocess
    import sys

    pytest.importorskip("sounddevice")
    out = subprocess.run(
        [sys.executable, "-c", PLAYREC], env=pulse.env(), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rms = float(out.stdout.strip().splitlines()[-1])
    # a 0.3-amplitude sine has an RMS of 0.21; silence would be ~0
    assert 0.1 < rms < 0.3


def test_kamailio_restart_mid_call_keeps_the_dialog_routable(
    kamailio: Kamailio, sipp_factory: SippFactory
) -> None:
    """In-dialog requests are loose-routed without state: a call outlives a restart."""
    uas = _registered_uas(kamailio, sipp_factory, "bob")
    mark = kamailio.log_mark()
    uac = _uac_via(kamailio, sipp_factory, "bob", call_duration_ms=3000).start()
    kamailio.wait_for_log(r"REPLY 200 OK", timeout=10, start=mark)
    kamailio.wait_for_log(r"REQ ACK ", timeout=10, start=mark)  # the ACK got to the proxy
    kamailio.restart()
    result = uac.wait(timeout=30)
    assert result.ok, result.describe()
    assert uas.wait(timeout=15).ok
    restarted_log = kamailio.log().rsplit("==== start", 1)[1]
    assert "in-dialog BYE" in restarted_log


def test_sipp_rtp_echo_returns_media(sipp_factory: SippFactory) -> None:
    import socket

    uas = sipp_factory("uas_sdp", calls=1, rtp_echo=True).start()
    packet = bytes([0x80, 0, 0, 1, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78]) + bytes(160)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        for _ in range(10):  # the echo thread may start a moment after the SIP socket
            sock.sendto(packet, (uas.host, uas.media_port))
            try:
                data, source = sock.recvfrom(2048)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("no RTP echo")
    assert (data, source) == (packet, (uas.host, uas.media_port))


def test_kamailio_nat_keepalive_options_reach_udp_contact(
    kamailio_factory: Callable[..., Kamailio],
) -> None:
    k = kamailio_factory(natping_interval=1, natping_all=True, tls=False)
    with SipClient(*k.address("udp")) as client:
        _, ok = register(client, k.domain, "alice", k.users["alice"])
        assert ok is not None and ok.status == 200
        client.sock.settimeout(5.0)
        ping = client.sock.recv(4096).decode()
    assert ping.startswith(f"OPTIONS sip:alice@127.0.0.1:{client.local[1]} SIP/2.0")


# ---- dnsmasq ---------------------------------------------------------------------------------


def test_dnsmasq_serves_rfc3263_chain(dns_factory: Callable[..., Dnsmasq]) -> None:
    records = DnsRecords()
    records.add_sip_domain("example.org", "127.0.0.1", udp_port=5070, tls_port=5071)
    dns = dns_factory(records)
    resolver = dns.resolver()
    naptr = sorted((r.order, r.service.decode(), r.replacement.to_text())
                   for r in resolver.resolve("example.org", "NAPTR"))  # fmt: skip
    assert naptr == [
        (10, "SIP+D2U", "_sip._udp.example.org."),
        (20, "SIP+D2T", "_sip._tcp.example.org."),
        (30, "SIPS+D2T", "_sips._tcp.example.org."),
    ]
    srv = resolver.resolve("_sips._tcp.example.org", "SRV")[0]
    assert (srv.port, srv.target.to_text()) == (5071, "sip.example.org.")
    assert [a.to_text() for a in resolver.resolve("sip.example.org", "A")] == ["127.0.0.1"]


def test_dnsmasq_in_namespace_is_the_laptops_system_resolver(nat_lab: NatLab, peer_dir) -> None:
    records = DnsRecords()
    records.add_sip_domain("example.org", nat_lab.server_ip)
    dns = Dnsmasq(peer_dir / "dns-ns", records, host=nat_lab.server_ip, netns=nat_lab.public.name)
    dns.start()
    try:
        laptop = nat_lab.sites[0].laptop
        laptop.set_resolv([nat_lab.server_ip])
        code = (
            "import socket, dns.resolver\n"
            "print(socket.gethostbyname('sip.example.org'))\n"
            "print(dns.resolver.resolve('_sip._udp.example.org', 'SRV')[0].port)\n"
        )
        assert laptop.python(code).stdout.split() == [nat_lab.server_ip, "5060"]
    finally:
        dns.stop()


def test_sipp_tcp_client_started_in_background(sipp_factory: SippFactory) -> None:
    uas = sipp_factory("uas_sdp", transport="tcp", calls=1).start()
    uac = sipp_factory("uac_sdp", uas.uri_host, transport="tcp", service="bob", calls=1)
    uac.start()  # returns at once for a client, whatever its transport
    assert uac.wait(timeout=30).ok
    assert uas.wait(timeout=30).ok


def test_lab_services_reachable_by_name_from_a_natted_laptop(lab_services: LabServices) -> None:
    site = lab_services.lab.sites[1]
    kam = lab_services.kamailio
    code = (
        "import socket\n"
        "from tests.peers.rawsip import SipClient, register\n"
        "from tests.peers.stunprobe import stun_binding\n"
        f"host = socket.gethostbyname('{lab_services.sip_server}')\n"
        f"with SipClient(host, {kam.port}, bind_host='0.0.0.0') as c:\n"
        f"    _, ok = register(c, '{lab_services.domain}', 'bob', '{kam.users['bob']}')\n"
        f"stun = stun_binding(socket.gethostbyname('stun.{lab_services.domain}'), "
        f"{lab_services.coturn.port})\n"
        "print(host, ok.status, stun.xor_mapped[0])\n"
    )
    out = site.laptop.python(code).stdout.split()
    assert out == [lab_services.lab.server_ip, "200", site.router_wan_ip]


def test_kamailio_answers_options_keepalive_from_a_local_user(kamailio: Kamailio) -> None:
    from tests.peers.rawsip import build_request

    with SipClient(*kamailio.address("udp")) as client:
        alice = kamailio.uri("alice")
        request = build_request(client, "OPTIONS", kamailio.uri(), alice, kamailio.uri())
        assert client.request(request).status == 200  # no 407 for a ping to the proxy
        to_bob = build_request(client, "OPTIONS", kamailio.uri("bob"), alice, kamailio.uri("bob"))
        assert client.request(to_bob).status == 407  # but a request to a user is challenged


def test_netns_partial_loss_drops_some_not_all(nat_lab: NatLab) -> None:
    site = nat_lab.sites[0]
    site.router.set_loss(0.5)
    senders = [(site.laptop, [f"{nat_lab.server_ip}:9999"] * 200)]
    dropped = site.router.dropped_packets
    got = _received(nat_lab.public, senders, lambda got: len(got) + dropped() >= 200)
    # binomial(200, 0.5): outside [40, 160] has a probability below 1e-17
    assert 40 <= len(got) <= 160
    assert site.router.dropped_packets() == 200 - len(got)


def test_kamailio_unregistered_and_unreachable_callees(
    kamailio_factory: Callable[..., Kamailio],
) -> None:
    from tests.peers.ports import free_port
    from tests.peers.rawsip import build_request

    k = kamailio_factory(fr_timer_ms=1000, tls=False)
    with SipClient(*k.address("udp"), timeout=10.0) as client:
        # nobody registered as carol: 404 (no authentication needed from a non-local caller)
        req = build_request(client, "OPTIONS", k.uri("carol"), "sip:x@example.net", k.uri("carol"))
        assert client.request(req).status == 404
        # carol registered at a dead address: tm gives up after fr_timer with 408
        dead = f"sip:carol@127.0.0.1:{free_port()}"
        k.add_contact("carol", dead)
        assert k.contacts("carol") == [dead]
        req = build_request(client, "OPTIONS", k.uri("carol"), "sip:x@example.net", k.uri("carol"))
        assert client.request(req).status == 408


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_kamailio_reaches_a_stream_registered_user_over_its_connection(
    kamailio: Kamailio, transport: str
) -> None:
    """Requests to a UA registered over TCP/TLS reuse the UA's own connection (nathelper)."""
    import threading

    from tests.peers.rawsip import build_request, read_request, response_to, send

    ctx = kamailio.ssl_context() if transport == "tls" else None
    bob = SipClient(*kamailio.address(transport), transport, ssl_context=ctx, timeout=10.0)
    seen: list[str] = []
    try:
        _, ok = register(bob, kamailio.domain, "bob", kamailio.users["bob"])
        assert ok is not None and ok.status == 200

        def answer() -> None:
            request = read_request(bob)
            seen.append(request)
            send(bob, response_to(request, 200, "OK"))

        responder = threading.Thread(target=answer, daemon=True)
        responder.start()
        with SipClient(*kamailio.address("udp"), timeout=10.0) as caller:
            req = build_request(
                caller, "MESSAGE", kamailio.uri("bob"), "sip:x@example.net", kamailio.uri("bob")
            )
            assert caller.request(req).status == 200
        responder.join(5.0)
    finally:
        bob.close()
    assert seen and seen[0].startswith("MESSAGE sip:bob@127.0.0.1:")
    assert f"SIP/2.0/{transport.upper()} 127.0.0.1:{kamailio.address(transport)[1]}" in seen[0]


@pytest.mark.parametrize("via_proxy", [False, True])
def test_sipp_callee_hangs_up(
    sipp_factory: SippFactory, kamailio_factory: Callable[..., Kamailio], via_proxy: bool
) -> None:
    uas = sipp_factory("uas_hangup", calls=1, call_duration_ms=200).start()
    if via_proxy:
        k = kamailio_factory(tls=False)
        k.add_contact("bob", f"sip:bob@{uas.uri_host}")
        uac = sipp_factory("uac_wait_bye", k.server(), domain=k.domain, service="bob", calls=1)
    else:
        uac = sipp_factory("uac_wait_bye", uas.uri_host, service="bob", calls=1)
    assert _run_call(uac, uas)[1].ok
    bye = next(m for m in uac.traced("received") if m.first_line.startswith("BYE "))
    assert bye.first_line == f"BYE {uac.contact} SIP/2.0"
    assert bye.headers("From")[0].startswith("<sip:bob@")  # the callee's identity
    assert bye.headers("To")[0].startswith("<sip:sipp@")
    assert not bye.headers("Record-Route")  # a request, not a dialog-forming one
    if via_proxy:
        assert f"127.0.0.1:{k.port}" in " ".join(bye.headers("Via"))


TURN_CLIENT = """
import asyncio, sys
from aioice.turn import create_turn_endpoint

async def main(server, port, password, unreachable, target, target_port):
    turn, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol, server_addr=(server, int(port)), username="alice",
        password=password)
    print("relayed", *turn.get_extra_info("sockname"), flush=True)
    turn.sendto(b"lost", (unreachable, 5000))  # a private address: no route from the public net
    await asyncio.sleep(0.5)
    turn.sendto(b"after", (target, int(target_port)))  # the allocation must still work
    await asyncio.sleep(0.5)
    turn.close()

asyncio.run(main(*sys.argv[1:]))
"""


def test_lab_turn_allocation_survives_relaying_to_an_unroutable_address(
    lab_services: LabServices,
) -> None:
    import time

    lab = lab_services.lab
    receiver = lab.public.popen_python(UDP_RECEIVER, "9999", "30", name="receiver")
    receiver.wait_for_log(r"(?m)^ready$")
    out = lab.sites[0].laptop.python(
        TURN_CLIENT, lab.server_ip, str(lab_services.coturn.port),
        lab_services.coturn.users["alice"], lab.sites[1].laptop_ip, lab.server_ip, "9999",
    )  # fmt: skip
    deadline = time.monotonic() + 10.0  # until "after" came (the lost one never will)
    while " after" not in receiver.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    receiver.stop()
    relayed = out.stdout.split()[1:3]
    got = [line.split()[1:] for line in receiver.log().splitlines() if line.startswith("got ")]
    assert got == [[*relayed, "after"]]


def test_netns_labs_of_dead_runs_are_removed(netns_lab: Lab) -> None:
    import os
    import subprocess
    from pathlib import Path

    from tests.peers.netns import remove_stale_labs

    dead_pid = next(p for p in range(4_000_000, 4_100_000) if not Path(f"/proc/{p}").exists())
    name = f"spt{dead_pid}x0a0b-leftover"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in remove_stale_labs()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in listed
    assert netns_lab.prefix.startswith(f"spt{os.getpid()}x")  # ours is alive: kept


# ---- the helpers themselves (no peer needed) -------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rawsip_digest_matches_rfc7616_vectors(algorithm: str, expected: str) -> None:
    from tests.peers.rawsip import digest_authorization

    challenge = {
        "realm": "http-auth@example.org",
        "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "qop": "auth",
        "algorithm": algorithm,
    }
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    value = digest_authorization(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life", cnonce=cnonce
    )
    assert f'response="{expected}"' in value


def test_stunprobe_parses_rfc5769_ipv4_response() -> None:
    from tests.peers.stunprobe import SOFTWARE, parse_response

    vector = bytes.fromhex(
        "0101003c2112a442b7e7a701bc34d686fa87dfae"
        "8022000b7465737420766563746f7220"
        "002000080001a147e112a643"
        "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
        "80280004c07d4c96"
    )
    resp = parse_response(vector)
    assert resp.is_success
    assert resp.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert resp.xor_mapped == ("192.0.2.1", 32853)
    assert resp.attributes[SOFTWARE] == b"test vector"


def test_sipp_stats_and_trace_parsing(tmp_path) -> None:
    from tests.peers.sipp import parse_trace, read_stats

    stat = tmp_path / "stat.csv"
    stat.write_text("StartTime;SuccessfulCall(C);FailedCall(C);\nt0;0;0;\nt1;19;1;\n")
    assert read_stats(stat)["SuccessfulCall(C)"] == "19"
    assert read_stats(stat)["FailedCall(C)"] == "1"
    assert read_stats(tmp_path / "missing.csv") == {}
    trace = (
        "----------------------------------------------- 2026-01-01 00:00:00.000000\n"
        "UDP message sent (10 bytes):\n\n"
        "INVITE sip:bob@example.org SIP/2.0\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\n"
        "Record-Route: <sip:p1;lr>, <sip:p2;lr>\n\nv=0\n\n"
        "----------------------------------------------- 2026-01-01 00:00:00.000001\n"
        "UDP message received [10] bytes :\n\n"
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\n\n"
        "-----------------------------------------------\n"
        "Unexpected UDP message received:\n\nSIP/2.0 200 OK\n\n"
    )
    msgs = parse_trace(trace)
    assert [(m.direction, m.first_line) for m in msgs] == [
        ("sent", "INVITE sip:bob@example.org SIP/2.0"),
        ("received", "SIP/2.0 200 OK"),
    ]
    assert msgs[0].headers("Record-Route") == ["<sip:p1;lr>, <sip:p2;lr>"]


def test_ports_are_free_and_never_handed_out_twice() -> None:
    import socket

    from tests.peers.ports import HIGH, LOW, free_port, free_port_range

    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20 and all(LOW <= p < HIGH for p in ports)
    base = free_port_range(10)
    assert not ports & set(range(base, base + 10))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", base + 9))  # really free


# ---- baresip ---------------------------------------------------------------------------------


def test_baresip_registers_and_answers_through_kamailio(
    kamailio: Kamailio,
    baresip_factory: Callable[..., Baresip],
    sipp_factory: SippFactory,
) -> None:
    bob = baresip_factory(user="bob", password=kamailio.users["bob"], registrar=kamailio.server())
    assert any(c.startswith("sip:bob") for c in kamailio.contacts("bob"))
    uac = _uac_via(kamailio, sipp_factory, "bob", call_duration_ms=1000, rtp_echo=True)
    result = uac.run(timeout=30)
    assert result.ok, result.describe()
    answer = next(m for m in uac.traced("received") if "v=0" in m.text)
    assert "c=IN IP4 127.0.0.1" in answer.text  # media bound to loopback only
    # baresip's sine went to sipp, whose RTP echo sent it back: baresip decoded audio
    bob.wait_for_log(r"audio: destroyed", timeout=10)
    assert bob.received_audio_frames() > 1000


def test_baresip_dials_and_hangs_up(
    baresip_factory: Callable[..., Baresip], sipp_factory: SippFactory
) -> None:
    import time

    uas = sipp_factory("uas_sdp", calls=1, rtp_echo=True).start()
    alice = baresip_factory(user="alice")
    assert alice.dial(f"sip:bob@{uas.uri_host}")["ok"]
    alice.wait_for_log(r"Call established: sip:bob@", timeout=10)
    time.sleep(0.5)
    assert alice.hangup()["ok"]
    assert uas.wait(timeout=15).ok


def test_lab_baresips_call_each_other_across_nats(lab_services: LabServices, peer_dir) -> None:
    lab, kam = lab_services.lab, lab_services.kamailio
    phones = []
    try:
        for site, user in zip(lab.sites, ("alice", "bob"), strict=True):
            phone = Baresip(
                peer_dir / f"baresip-{user}", user=user, password=kam.users[user],
                registrar=f"{lab.server_ip}:{kam.port}", host=site.laptop_ip,
                netns=site.laptop.name, medianat="ice",
                stun_server=f"stun:{lab.server_ip}:{lab_services.coturn.port}",
            )  # fmt: skip
            phones.append(phone)
            phone.start()
        alice, bob = phones
        assert alice.dial(f"sip:bob@{lab_services.domain}")["ok"]
        alice.wait_for_log(r"Call established: sip:bob@", timeout=15)
        bob.wait_for_log(r"Call established: sip:alice@", timeout=15)
        # STUN through coturn found each laptop's public (router) address
        for phone, site in zip(phones, lab.sites, strict=True):
            assert f"Default local candidates: {site.router_wan_ip}:" in phone.log()
        assert alice.hangup()["ok"]
    finally:
        for phone in phones:
            phone.stop()


def test_baresip_refuses_ice_on_loopback(peer_dir) -> None:
    with pytest.raises(ValueError, match="namespace"):
        Baresip(peer_dir / "b", medianat="ice")
