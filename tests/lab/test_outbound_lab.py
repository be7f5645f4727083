"""RFC 5626 flow recovery in the lab (root): the ``softphone`` CLI on laptops behind NAT routers,
signalling over TCP to Kamailio on the public net.

Kamailio restarts mid-call, losing its registrations and every TCP connection. bob, the
callee behind an endpoint-independent NAT, notices his flow died, reconnects at once -- from
the same local port, so an endpoint-independent NAT gives the new connection the public
address that Kamailio's ``;alias`` in his dialog Contact points at -- and registers again;
behind a symmetric NAT (a new public port) his target refresh (UPDATE) tells alice the new
alias. alice's BYE through the restarted proxy then reaches him (before, a TCP callee was left
in a dead call), and a new call reaches him too.

Needs root, iproute2, iptables, coturn and kamailio (skips saying which is missing).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.softphone_lab import (
    TIMES,
    SoftphoneLab,
    assert_call_ok,
    run_call,
    softphone_lab_module,
)
from tests.peers.kamailio import Kamailio

# Kamailio answers 408 to a request it relayed into a dead connection after this long (its
# fr_timer; 5 s elsewhere): all signalling here is TCP inside the lab, answered in
# milliseconds when it arrives at all, so only the requests sent toward an alias that died
# with the restart wait it out (alice's UA waits for them before it exits)
FR_TIMER_MS = 2000


@pytest.fixture(scope="module")
def softphone_lab(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[SoftphoneLab]:
    yield from softphone_lab_module(tmp_path_factory, request, "outbound-lab", FR_TIMER_MS)


def _alice_registered(kamailio: Kamailio) -> bool:
    """alice, whose flow died too, registered again with the restarted Kamailio."""
    return bool(kamailio.contacts("alice"))


def _refreshed(kamailio: Kamailio) -> bool:
    """The restarted Kamailio relayed bob's in-dialog UPDATE to alice and her 200 back (his
    new alias)."""
    log = kamailio.log()[kamailio.log().rindex("==== start") :]
    for m in re.finditer(r"\{1 (\d+) UPDATE (\S+)\} <script>: REQ UPDATE sip:alice@", log):
        cseq, call_id = m.group(1), re.escape(m.group(2))
        if re.search(rf"\{{2 {cseq} UPDATE {call_id}\}} <script>: REPLY 200 ", log):
            return True
    return False


@pytest.mark.parametrize(
    ("callee", "duration"),
    [("eim2l", 8.0), ("sym2l", 18.0)],
    ids=["eim-same-port", "sym-target-refresh"],
)
def test_tcp_callee_behind_nat_gets_the_bye_after_a_proxy_restart_mid_call(
    softphone_lab: SoftphoneLab, tmp_path: Path, callee: str, duration: float
) -> None:
    """eim: the NAT keeps the reconnected port, so the old ;alias works again at once. sym:
    the new connection gets another public port; bob's target refresh (an UPDATE once he
    registered again, repeated while alice is still recovering her own flow: each failed
    try costs Kamailio's fr_timer, FR_TIMER_MS) gives alice the new alias before her BYE.

    alice hangs up (``duration`` is only the upper bound) as soon as both registered again
    (eim: the old alias leads to bob's new connection) or, behind the symmetric NAT, once the
    restarted Kamailio relayed the 200 to bob's target refresh."""
    kamailio = softphone_lab.kamailio

    def restart(lab: SoftphoneLab) -> dict[str, object]:
        time.sleep(0.5)
        kamailio.restart()
        mark = kamailio.log().rindex("==== start")  # where the restarted Kamailio's log begins
        deadline = time.monotonic() + 30
        while not kamailio.contacts("bob") and time.monotonic() < deadline:
            time.sleep(0.2)
        bob_again = kamailio.contacts("bob")
        ready = _refreshed if callee.startswith("sym") else _alice_registered
        deadline = time.monotonic() + duration - 3
        while not ready(kamailio) and time.monotonic() < deadline:
            time.sleep(0.1)
        return {"bob_again": bob_again, "mark": mark, "hang_up": ready(kamailio)}

    r = run_call(
        softphone_lab, tmp_path / "first", ("alice", "lan1a"), ("bob", callee),
        transport="tcp", duration=duration, during=restart,
    )  # fmt: skip
    TIMES.record(f"tcp restart lan1a->{callee}", r)
    assert r.extra["bob_again"], f"bob did not register again\n{r.callee_log}"
    assert "registering again" in r.callee_log
    assert_call_ok(r)
    # the BYE went through the restarted Kamailio and reached bob over his new connection
    restarted = kamailio.log()[int(str(r.extra["mark"])) :]
    assert "REQ BYE" in restarted
    assert r.callee["call"]["end_reason"] == "remote-bye", (r.callee["call"], r.callee_log)
    again = run_call(
        softphone_lab, tmp_path / "second", ("alice", "lan1a"), ("bob", callee),
        transport="tcp", duration=2,
    )  # fmt: skip
    TIMES.record(f"tcp after-restart lan1a->{callee}", again)
    assert_call_ok(again)
