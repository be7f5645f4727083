"""The ``softphone`` CLI end to end in the ICE lab (root): alice and bob on laptops behind
NAT routers register with Kamailio (digest auth, record-route, nathelper) on the public net
and call each other with STUN/TURN from coturn.  Each case checks the SIP status, the ICE
pair type from the ``--json`` reports and the audio at both ends (440 Hz one way, 880 Hz the
other, by the dominant frequency of each recording).

Cases: eim/eim direct (both directions), sym/sym and eim/sym relayed (both directions),
eim/public direct (both directions), two laptops on one LAN (host pair); eim/eim over TCP and
TLS signalling; a Kamailio restart mid-call (UDP) and a TCP callee re-registering after a
restart; 10% loss on both routers (eim/eim, sym/sym).  Timings (setup_ms, ICE connect_ms)
are listed in the terminal summary, never asserted.

Needs root, iproute2, iptables, coturn and kamailio (skips saying which is missing).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.softphone_lab import (
    CALLEE_TONE,
    CALLER_TONE,
    TIMES,
    CallResult,
    Softphone,
    SoftphoneLab,
    assert_call_ok,
    assert_no_secrets,
    assert_proxied,
    heard,
    heard_windows,
    relayed,
    run_call,
    softphone_lab_module,
)

DIRECT = {"host", "srflx", "prflx"}


@pytest.fixture(scope="module")
def softphone_lab(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[SoftphoneLab]:
    yield from softphone_lab_module(tmp_path_factory, request, "softphone-lab")


def _direct(r: CallResult, lab: SoftphoneLab, caller: str, callee: str) -> None:
    """A direct pair on both sides, whose remote end is the other laptop as the internet
    sees it (its NAT's public address; a host candidate only for the public laptop)."""
    for side, peer in (("caller", callee), ("callee", caller)):
        local, remote = r.pair(side)
        assert local in DIRECT and remote in DIRECT, (side, r.pair(side))
        selected = (r.caller if side == "caller" else r.callee)["ice"]["selected"]
        laptop = lab.ice[peer]
        assert selected["remote"]["address"] == laptop.public_ip, (side, selected)
        if laptop.nat != "none":
            assert remote != "host", (side, r.pair(side))  # a LAN out of reach


@pytest.mark.parametrize(
    ("caller", "callee", "expect"),
    [
        (("alice", "lan1a"), ("bob", "eim2l"), "direct"),
        (("alice", "sym1l"), ("bob", "sym2l"), "relay"),
        (("alice", "lan1a"), ("bob", "sym1l"), "relay"),
        (("alice", "lan1a"), ("bob", "pub"), "direct"),
        (("bob", "eim2l"), ("alice", "lan1a"), "direct"),
        (("bob", "sym1l"), ("alice", "lan1a"), "relay"),
        (("bob", "pub"), ("alice", "lan1a"), "direct"),
        (("alice", "lan1a"), ("bob", "lan1b"), "same-lan"),
    ],
    ids=[
        "eim-eim",
        "sym-sym",
        "eim-sym",
        "eim-none",
        "eim-eim-reverse",
        "sym-eim-reverse",
        "none-eim-reverse",
        "same-lan",
    ],
)
def test_call_across_nats(
    softphone_lab: SoftphoneLab,
    tmp_path: Path,
    caller: tuple[str, str],
    callee: tuple[str, str],
    expect: str,
) -> None:
    r = run_call(softphone_lab, tmp_path, caller, callee)
    TIMES.record(f"{caller[1]}->{callee[1]}", r)
    assert_call_ok(r)
    assert r.extra["callee_contacts"], "the callee was not registered with Kamailio"
    assert_proxied(r, callee[0], softphone_lab.ice[callee[1]].public_ip)
    assert_no_secrets(softphone_lab, r)
    if expect == "direct":
        _direct(r, softphone_lab, caller[1], callee[1])
    elif expect == "same-lan":  # behind one NAT: straight across the LAN, no hairpin
        for side, peer in (("caller", callee[1]), ("callee", caller[1])):
            assert r.pair(side) == ("host", "host"), (side, r.pair(side))
            selected = (r.caller if side == "caller" else r.callee)["ice"]["selected"]
            assert selected["remote"]["address"] == softphone_lab.ice[peer].ip, selected
    else:
        assert relayed(r, "caller") and relayed(r, "callee"), (r.pair(), r.pair("callee"))


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_call_with_stream_signalling(
    softphone_lab: SoftphoneLab, tmp_path: Path, transport: str
) -> None:
    """eim/eim with SIP over TCP or TLS (RFC 3261 §18, §26.2; the proxy's certificate from
    a test CA given by --ca-file): registration, INVITE and BYE on the connections each UA
    opened through its NAT; media still a direct UDP pair."""
    r = run_call(softphone_lab, tmp_path, ("alice", "lan1a"), ("bob", "eim2l"), transport=transport)
    TIMES.record(f"{transport} lan1a->eim2l", r)
    assert_call_ok(r)
    contacts = r.extra["callee_contacts"]
    assert contacts and all(f"transport={transport}" in c.lower() for c in contacts), contacts
    assert_proxied(r, "bob", softphone_lab.ice["eim2l"].public_ip)
    assert_no_secrets(softphone_lab, r)
    _direct(r, softphone_lab, "lan1a", "eim2l")


def test_call_survives_a_kamailio_restart(softphone_lab: SoftphoneLab, tmp_path: Path) -> None:
    """Kamailio restarts mid-call (its registrations, in memory, are lost): the call's media,
    a direct path between the NATs, goes on without a gap, the BYE still finds its way
    (record-route and the contact alias carry all the proxy needs), and once the UAs
    register again a new call works."""
    kamailio = softphone_lab.kamailio

    def restart(lab: SoftphoneLab) -> dict[str, object]:
        time.sleep(1.0)  # media flowing for a second
        kamailio.restart()
        contacts, mark = kamailio.contacts("bob"), kamailio.log_mark()
        time.sleep(3.0)  # media flowing on through the restarted proxy; then alice hangs up
        return {"contacts_after_restart": contacts, "mark": mark, "hang_up": True}

    r = run_call(
        softphone_lab, tmp_path / "first", ("alice", "lan1a"), ("bob", "eim2l"),
        duration=30, during=restart,
    )  # fmt: skip
    TIMES.record("restart lan1a->eim2l", r)
    assert r.extra["contacts_after_restart"] == [], "registrations survived the restart?"
    assert_call_ok(r)
    _direct(r, softphone_lab, "lan1a", "eim2l")
    assert r.caller["call"]["end_reason"] == "local-bye", r.caller["call"]  # alice hung up
    assert r.callee["call"]["end_reason"] == "remote-bye", r.callee["call"]
    # the BYE went through the restarted Kamailio: the restart was mid-call
    assert "REQ BYE" in kamailio.log_since(r.extra["mark"])
    # the call lasted from before the restart (1 s in) to well after it, without a gap
    assert r.caller["call"]["duration_s"] >= 3.5, r.caller["call"]
    for path, tone in ((r.callee_wav, CALLER_TONE), (r.caller_wav, CALLEE_TONE)):
        windows = heard_windows(path)
        assert len(windows) >= 5, (path, windows)
        assert all(abs(f - tone) < 10 for f in windows), (path, windows)
    # both register again (new processes) and call through the restarted proxy
    again = run_call(
        softphone_lab, tmp_path / "second", ("alice", "lan1a"), ("bob", "eim2l"), duration=2
    )
    TIMES.record("after-restart lan1a->eim2l", again)
    assert again.extra["callee_contacts"], "bob did not register with the restarted Kamailio"
    assert_call_ok(again)


@pytest.mark.parametrize(
    ("caller", "callee", "routers"),
    [("lan1a", "eim2l", ("eim1", "eim2")), ("sym1l", "sym2l", ("sym1", "sym2"))],
    ids=["eim-eim", "sym-sym"],
)
def test_call_with_ten_percent_loss_on_both_routers(
    softphone_lab: SoftphoneLab,
    tmp_path: Path,
    caller: str,
    callee: str,
    routers: tuple[str, str],
) -> None:
    """Each router drops 10% of the UDP packets it forwards (iptables statistic), both ways:
    SIP retransmissions (RFC 3261 §17), STUN/TURN retransmissions and ICE checks (RFC 8445
    §14) get the call up, and the tones still come through (with loss concealed)."""
    ice = softphone_lab.ice
    try:
        for name in routers:
            ice.routers[name].set_loss(0.10)  # a fresh rule: its counter starts at 0
        # 3 s: lost checks may hold ICE (and so the audio) back for a second or two
        r = run_call(softphone_lab, tmp_path, ("alice", caller), ("bob", callee), duration=3)
        dropped = {name: ice.routers[name].dropped_packets() for name in routers}
    finally:
        for name in routers:
            ice.routers[name].set_loss(0)
    TIMES.record(f"loss10 {caller}->{callee}", r, f"dropped {dropped}")
    assert all(n > 0 for n in dropped.values()), dropped  # the loss was real
    assert_call_ok(r)
    assert_proxied(r, "bob", ice[callee].public_ip, lossy=True)
    for side in ("caller", "callee"):
        assert set(r.pair(side)) <= DIRECT | {"relay"}, r.pair(side)
    if callee.startswith("sym"):
        assert relayed(r, "caller") and relayed(r, "callee"), (r.pair(), r.pair("callee"))
    # (eim/eim may end on the relay here when checks of the direct pair were lost)


def test_tcp_callee_re_registers_after_a_kamailio_restart(
    softphone_lab: SoftphoneLab, tmp_path: Path
) -> None:
    """bob waits for calls over TCP when Kamailio restarts (losing its registrations): the
    restart closes bob's connection, which his flow watcher (RFC 5626 §4.4.1) takes as a
    failed flow, and he registers again at once over a new one; alice's call then reaches
    the same bob process through the restarted proxy."""
    lab, kamailio = softphone_lab, softphone_lab.kamailio
    bob_wav, alice_wav = tmp_path / "bob.wav", tmp_path / "alice.wav"
    bob = Softphone(
        lab, lab.ice["eim2l"],
        [*lab.common_args("bob", "tcp"), "answer", "--auto", "--count", "1",
         "--play", f"tone:{CALLEE_TONE:g}", "--record", str(bob_wav)],
        tmp_path / "bob.log",
    )  # fmt: skip
    alice: Softphone | None = None
    try:
        assert bob.wait_for("waiting for calls", 40), bob.stderr
        assert kamailio.contacts("bob"), "bob is not registered"
        kamailio.restart()
        mark = kamailio.log().rindex("==== start")  # where the restarted Kamailio's log begins
        # bob's new binding: a REGISTER the restarted registrar accepted
        deadline = time.monotonic() + 30
        while not kamailio.contacts("bob") and time.monotonic() < deadline:
            time.sleep(0.2)
        contacts = kamailio.contacts("bob")
        assert contacts, f"bob did not register again\n{bob.stderr}"
        assert "REGISTER sip:bob@example.org contact=" in kamailio.log_since(mark)
        alice = Softphone(
            lab, lab.ice["lan1a"],
            [*lab.common_args("alice", "tcp"), "call", "bob",
             "--play", f"tone:{CALLER_TONE:g}", "--record", str(alice_wav),
             "--duration", "2"],
            tmp_path / "alice.log",
        )  # fmt: skip
        status, report = alice.finish(60)
        bob_status, bob_report = bob.finish(30)
    finally:
        if alice is not None:
            alice.stop()
        bob.stop()
    TIMES.record_reports("tcp re-registered", report, bob_report)
    assert "registering again" in bob.stderr, bob.stderr
    assert report["call"]["sip_status"] == 200 and status == 0, alice.stderr + bob.stderr
    assert bob_status == 0, bob.stderr
    for r in (report, bob_report):
        sel = r["ice"]["selected"]
        assert {sel["local"]["type"], sel["remote"]["type"]} <= DIRECT - {"host"}, sel
    assert abs(heard(alice_wav) - CALLEE_TONE) < 10
    assert abs(heard(bob_wav) - CALLER_TONE) < 10
