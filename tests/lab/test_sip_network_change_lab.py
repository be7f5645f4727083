"""The SIP side follows a new local address (root, real kernel, real netlink, real Kamailio).

One LAN: a bridge in the ``srv`` namespace (Kamailio, registrar and record-routing proxy, at
198.51.100.1) and two hosts on it, alice (198.51.100.10) and bob (198.51.100.20). bob runs
``softphone answer`` registered with Kamailio; the test renumbers bob's interface to
198.51.100.21 (new address added, old one deleted, as a DHCP renumbering would) and checks:

- bob registers again from the new address, removing the old binding (Kamailio's location
  table has exactly the new contact), and says "network changed: re-registered as ...";
- a call from alice to bob's AOR through Kamailio then reaches him (audio both ways);
- mid-call: bob's ICE restart re-INVITE carries his new Contact, so alice's BYE, routed by
  Kamailio to bob's remote target, reaches him at the new address (he reports remote-bye).

Needs root, iproute2 and kamailio (skipped otherwise). Documentation addresses, only inside
the namespaces.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.softphone_lab import Running, SoftphoneProcess
from tests.peers.kamailio import DEFAULT_USERS, Kamailio
from tests.peers.netns import REPO_ROOT, Lab, netns_available

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(netns_available() is not None, reason=str(netns_available())),
    pytest.mark.skipif(shutil.which("kamailio") is None, reason="kamailio not installed"),
]

SERVER, ALICE, BOB, BOB_NEW = "198.51.100.1", "198.51.100.10", "198.51.100.20", "198.51.100.21"
DOMAIN = "example.org"
PASSWORD_ENV = {"alice": "ALICE_SIP_PW", "bob": "BOB_SIP_PW"}
WAIT = 30.0  # a generous bound for "it happens" (shared machine), never a pass/fail time


class SipLan:
    """The lab: Kamailio on a bridge with alice's and bob's namespaces."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.srv = lab.namespace("srv")
        self.alice = lab.namespace("alice")
        self.bob = lab.namespace("bob")
        lab.bridge(self.srv, "br0", [f"{SERVER}/24"])
        for ns, addr in ((self.alice, ALICE), (self.bob, BOB)):
            link = lab.link(ns, self.srv, f"{addr}/24", None, a_if="eth0", b_if=f"p-{ns.short}")
            lab.attach_to_bridge(self.srv, link.b_if, "br0")
            # a second address of the subnet must outlive the first (the renumbering)
            ns.sysctl("net.ipv4.conf.eth0.promote_secondaries", "1")
            ns.add_route("default", via=SERVER)
        users = {u: DEFAULT_USERS[u] for u in ("alice", "bob")}
        self.kamailio = Kamailio(
            workdir / "kamailio", host=SERVER, domain=DOMAIN, users=users, tls=False,
            netns=self.srv.name,
        )  # fmt: skip
        self.kamailio.start()
        self.env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        for user, var in PASSWORD_ENV.items():
            self.env[var] = users[user]

    def args(self, user: str, transport: str = "udp") -> list[str]:
        return [
            "--json", "--server", self.kamailio.server(transport), "--transport", transport,
            "--user", f"{user}@{DOMAIN}", "--password-env", PASSWORD_ENV[user],
        ]  # fmt: skip

    def renumber_bob(self) -> None:
        self.bob.ip("addr", "add", f"{BOB_NEW}/24", "dev", "eth0")
        self.bob.ip("addr", "del", f"{BOB}/24", "dev", "eth0")

    def renumber_registered_bob(self, bob: SoftphoneProcess) -> None:
        """bob, registered at his first address, is renumbered: he must say he registered
        again from the new one, and the registrar must then hold the new binding only (the old
        one removed, not left to expire)."""
        before = self.bob_contacts()
        assert hosts_of(before) == [BOB], before
        self.renumber_bob()
        moved = bob.search(r"network changed: re-registered as (\S+)")
        assert moved is not None, bob.text
        assert f"@{BOB_NEW}:" in moved.group(1), bob.text
        after = self.wait_contacts(lambda c: hosts_of(c) == [BOB_NEW])
        assert hosts_of(after) == [BOB_NEW], (after, bob.text)

    def bob_contacts(self) -> list[str]:
        return self.kamailio.contacts("bob")

    def wait_contacts(self, predicate: Any, timeout: float = WAIT) -> list[str]:
        deadline = time.monotonic() + timeout
        contacts = self.bob_contacts()
        while not predicate(contacts) and time.monotonic() < deadline:
            time.sleep(0.2)
            contacts = self.bob_contacts()
        return contacts


def hosts_of(contacts: list[str]) -> list[str]:
    return [re.sub(r"^sips?:[^@]*@", "", c).split(":")[0].split(";")[0] for c in contacts]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_registered_callee_renumbered_registers_again_and_is_reached(
    tmp_path: Path, transport: str
) -> None:
    """Over TCP the connection from the old address is closed and bob registers over a new
    one from the new address (Kamailio then reaches him over it)."""
    with Lab(tmp_path) as lab, Running() as run:
        net = SipLan(lab, tmp_path)
        bob = run.start(
            net.bob, net.env, *net.args("bob", transport), "--no-ice", "answer", "--auto",
            "--count", "1", "--play", "tone:880", "--record", "none", "--duration", "1",
        )  # fmt: skip
        assert bob.wait_for("waiting for calls"), bob.text
        net.renumber_registered_bob(bob)
        # the AOR reaches bob at his new address
        alice = run.start(
            net.alice, net.env, *net.args("alice"), "--no-ice", "call", "bob",
            "--play", "tone:440", "--record", "none", "--duration", "4",
        )  # fmt: skip
        bob_status, bob_report = bob.finish()
        alice_status, alice_report = alice.finish()
    assert alice_report["call"]["sip_status"] == 200, alice.text
    assert alice_status == 0 and bob_status == 0, (alice.text, bob.text)
    assert bob_report["answer"] == {"calls": 1, "succeeded": 1}, bob.text


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_call_in_progress_follows_the_callee_and_the_bye_reaches_him(
    tmp_path: Path, transport: str
) -> None:
    with Lab(tmp_path) as lab, Running() as run:
        net = SipLan(lab, tmp_path)
        bob = run.start(
            net.bob, net.env, *net.args("bob", transport), "answer", "--auto", "--count", "1",
            "--play", "tone:880", "--record", "none",
        )  # fmt: skip
        assert bob.wait_for("waiting for calls"), bob.text
        alice = run.start(
            net.alice, net.env, *net.args("alice", transport), "call", "bob",
            "--play", "tone:440", "--record", "none", "--duration", "10",
        )  # fmt: skip
        assert bob.wait_for("connected via"), bob.text
        time.sleep(1.0)
        net.renumber_bob()
        assert bob.wait_for("network changed: re-registered as"), bob.text
        assert bob.wait_for("ICE restarted"), bob.text
        time.sleep(1.0)  # media on the new pair; then alice hangs up (--duration: a bound)
        alice.interrupt()
        alice_status, alice_report = alice.finish()
        bob_status, bob_report = bob.finish()
        contacts = net.bob_contacts()
    text = bob.text
    # the re-registration came before the restart's re-INVITE
    assert text.index("network changed: re-registered as") < text.index("ICE restarted"), text
    assert bob_report["call"]["end_reason"] == "remote-bye", text  # alice's BYE reached bob
    assert alice_report["call"]["end_reason"] == "local-bye", alice.text
    assert bob_report["ice"]["selected"]["local"]["address"] == BOB_NEW, text
    assert alice_status == 0 and bob_status == 0, (alice.text, text)
    assert hosts_of(contacts) in ([BOB_NEW], []), contacts  # (bob unregistered at exit)


PUBLIC_SERVER, PUBLIC_ALICE = "203.0.113.1", "203.0.113.50"
ROUTER_WAN = ("203.0.113.101", "203.0.113.102")
ROUTER_LAN = ("198.51.100.1", "198.51.100.65")
BOB_LAN = ("198.51.100.10", "198.51.100.74")


def test_callee_moving_to_another_nat_registers_its_new_public_contact(tmp_path: Path) -> None:
    """A laptop leaving one NATed network for another (Wi-Fi at home, then at the office):
    bob, behind router 1, learned his public address there from the registrar's
    ``received``/``rport`` (RFC 3581) and registered it; he moves behind router 2. The public
    address of router 1 must be forgotten: he registers from the new network, removing the
    old public binding, learns router 2's public address and registers that; alice's call to
    the AOR then reaches him through router 2."""
    with Lab(tmp_path) as lab, Running() as run:
        public, alice_ns, bob_ns = (lab.namespace(n) for n in ("public", "alice", "bob"))
        lab.bridge(public, "br0", [f"{PUBLIC_SERVER}/24"])
        link = lab.link(alice_ns, public, f"{PUBLIC_ALICE}/24", None, "eth0", "p-alice")
        lab.attach_to_bridge(public, link.b_if, "br0")
        alice_ns.add_route("default", via=PUBLIC_SERVER)
        for i in (0, 1):
            router = lab.namespace(f"router{i + 1}")
            wan = lab.link(router, public, f"{ROUTER_WAN[i]}/24", None, "wan0", f"p-r{i + 1}")
            lab.attach_to_bridge(public, wan.b_if, "br0")
            lan = f"{ROUTER_LAN[i].rsplit('.', 1)[0]}.{0 if i == 0 else 64}/26"
            lab.link(bob_ns, router, None, f"{ROUTER_LAN[i]}/26", f"eth{i}", "lan0")
            lab.nat_router(router, "wan0", lan_cidr=lan)
        bob_ns.add_address("eth0", f"{BOB_LAN[0]}/26")
        bob_ns.add_route("default", via=ROUTER_LAN[0])
        users = {u: DEFAULT_USERS[u] for u in ("alice", "bob")}
        kamailio = Kamailio(
            tmp_path / "kamailio", host=PUBLIC_SERVER, domain=DOMAIN, users=users, tls=False,
            netns=public.name,
        )  # fmt: skip
        kamailio.start()
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        for user, var in PASSWORD_ENV.items():
            env[var] = users[user]

        def args(user: str) -> list[str]:
            return [
                "--json", "--server", kamailio.server("udp"), "--user", f"{user}@{DOMAIN}",
                "--password-env", PASSWORD_ENV[user], "--no-ice",
            ]  # fmt: skip

        def contacts(predicate: Any) -> list[str]:
            deadline = time.monotonic() + WAIT
            found = kamailio.contacts("bob")
            while not predicate(found) and time.monotonic() < deadline:
                time.sleep(0.2)
                found = kamailio.contacts("bob")
            return found

        bob = run.start(
            bob_ns, env, *args("bob"), "answer", "--auto", "--count", "1",
            "--play", "tone:880", "--record", "none", "--duration", "1",
        )  # fmt: skip
        assert bob.wait_for("waiting for calls"), bob.text
        before = contacts(lambda c: hosts_of(c) == [ROUTER_WAN[0]])
        assert hosts_of(before) == [ROUTER_WAN[0]], (before, bob.text)  # learned via NAT 1
        bob_ns.add_address("eth1", f"{BOB_LAN[1]}/26")
        bob_ns.add_route("default", via=ROUTER_LAN[1])
        bob_ns.ip("addr", "del", f"{BOB_LAN[0]}/26", "dev", "eth0")
        moved = bob.search(r"network changed: re-registered as (\S+)")
        assert moved is not None, bob.text
        assert f"@{ROUTER_WAN[1]}:" in moved.group(1), bob.text
        after = contacts(lambda c: hosts_of(c) == [ROUTER_WAN[1]])
        assert hosts_of(after) == [ROUTER_WAN[1]], (after, bob.text)
        alice = run.start(
            alice_ns, env, *args("alice"), "call", "bob",
            "--play", "tone:440", "--record", "none", "--duration", "2",
        )  # fmt: skip
        assert bob.wait_for("incoming call from"), (bob.text, alice.text)
        _alice_status, alice_report = alice.finish()
        _bob_status, bob_report = bob.finish()
    # (no ICE and no STUN here: bob's media address is private, so the audio is not the
    # point -- the INVITE to bob's AOR reached him behind router 2 and he answered it)
    assert alice_report["call"]["sip_status"] == 200, alice.text
    assert bob_report["answer"]["calls"] == 1, bob.text


def test_caller_renumbered_mid_call_gets_the_callees_bye(tmp_path: Path) -> None:
    """The other way round: alice, the caller (``softphone call``), moves; bob hangs up and
    his BYE, routed by Kamailio to alice's remote target, reaches her new address."""
    alice_new = "198.51.100.11"
    with Lab(tmp_path) as lab, Running() as run:
        net = SipLan(lab, tmp_path)
        bob = run.start(
            net.bob, net.env, *net.args("bob"), "answer", "--auto", "--count", "1",
            "--play", "tone:880", "--record", "none", "--duration", "8",
        )  # fmt: skip
        assert bob.wait_for("waiting for calls"), bob.text
        alice = run.start(
            net.alice, net.env, *net.args("alice"), "call", "bob",
            "--play", "tone:440", "--record", "none", "--duration", "30",
        )  # fmt: skip
        assert alice.wait_for("connected via"), alice.text
        time.sleep(1.0)
        net.alice.ip("addr", "add", f"{alice_new}/24", "dev", "eth0")
        net.alice.ip("addr", "del", f"{ALICE}/24", "dev", "eth0")
        moved = alice.search(r"network changed: re-registered as (\S+)")
        assert moved is not None, alice.text
        assert f"@{alice_new}:" in moved.group(1), alice.text
        assert alice.wait_for("ICE restarted"), alice.text
        time.sleep(1.0)  # media on the new pair; then bob hangs up (--duration: a bound)
        bob.interrupt()
        bob_status, bob_report = bob.finish()
        alice_status, alice_report = alice.finish()
    assert alice_report["call"]["end_reason"] == "remote-bye", alice.text  # bob's BYE reached
    assert bob_report["call"]["end_reason"] == "local-bye", bob.text
    assert alice_report["ice"]["selected"]["local"]["address"] == alice_new, alice.text
    assert alice_status == 0 and bob_status == 0, (alice.text, bob.text)


def test_route_arriving_after_the_address_is_waited_for(tmp_path: Path) -> None:
    """As a DHCP client may do it: the old address goes, the new one comes without a route,
    and the route toward the registrar comes a moment later (routes are not reported by the
    address monitor): bob, stranded, looks again until he can register from the new one."""
    with Lab(tmp_path) as lab, Running() as run:
        net = SipLan(lab, tmp_path)
        bob = run.start(
            net.bob, net.env, *net.args("bob"), "--no-ice", "answer", "--auto", "--count", "1",
        )  # fmt: skip
        assert bob.wait_for("waiting for calls"), bob.text
        net.bob.ip("addr", "del", f"{BOB}/24", "dev", "eth0")
        net.bob.ip("addr", "add", f"{BOB_NEW}/32", "dev", "eth0")  # no subnet route
        time.sleep(1.5)  # the monitor reported both; nothing routes toward Kamailio yet
        assert "re-registered" not in bob.text, bob.text
        net.bob.ip("route", "add", "198.51.100.0/24", "dev", "eth0", "src", BOB_NEW)
        moved = bob.search(r"network changed: re-registered as (\S+)")
        assert moved is not None, bob.text
        assert f"@{BOB_NEW}:" in moved.group(1), bob.text
        after = net.wait_contacts(lambda c: hosts_of(c) == [BOB_NEW])
        assert hosts_of(after) == [BOB_NEW], (after, bob.text)
