"""Interop across real NATs: our agent on one laptop, aioice (a dev-only peer) on the other,
each in its own namespace behind its own router (the lab of conftest.py); candidates cross as
``a=candidate`` values through the test, data flows both ways, in both roles."""

from __future__ import annotations

import pytest

from tests.lab.conftest import IceLab, PairResult, run_pair

pytest.importorskip("aioice")

pytestmark = pytest.mark.lab

AIOICE = ["--impl", "aioice"]


def pair(ice_lab: IceLab, case: str, a: str, b: str, ours_control: bool) -> PairResult:
    """Run ``a`` (controlling) and ``b``: ours on the controlling side or aioice."""
    ours: list[str] = []
    if ours_control:
        return run_pair(ice_lab, f"aioice {case} we", a, b, extra_args=ours, extra_args_b=AIOICE)
    return run_pair(ice_lab, f"aioice {case} they", a, b, extra_args=AIOICE, extra_args_b=ours)


def xfail_if_aioice_renominated(r: PairResult, ours_control: bool) -> None:
    """Known interop gap, seen between two symmetric NATs when aioice controls (about one
    run in five): after completing, aioice nominates a second pair (against RFC 8445 §8.1.1,
    "MUST NOT nominate another pair") and sends on it; our side stays on the first and drops
    data from any other pair (ice.aio), although RFC 8445 §12.2 says an agent SHOULD be
    prepared to receive on any candidate signalled.  Only that exact situation is excused."""
    theirs_connected, theirs_stopped = (
        (r.a, r.stopped[0]) if not ours_control else (r.b, r.stopped[1])
    )
    final = theirs_stopped.get("final")
    moved = final is not None and (final["local"], final["remote"]) != (
        theirs_connected["local"],
        theirs_connected["remote"],
    )
    ours_got = r.received_b if not ours_control else r.received_a
    if moved and len(ours_got) < 10:
        pytest.xfail(
            f"aioice moved to {final} after nominating {theirs_connected['local']} -> "
            f"{theirs_connected['remote']}; ours got {len(ours_got)} packets"
        )


def assert_data_both_ways(r: PairResult, want: int = 10) -> None:
    assert len(r.received_a) >= want and len(r.received_b) >= want, r
    assert all(m.startswith("from-b ") for m in r.received_a)
    assert all(m.startswith("from-a ") for m in r.received_b)


@pytest.mark.parametrize("ours_control", [True, False], ids=["we-control", "aioice-controls"])
def test_eim_eim_with_aioice(ice_lab: IceLab, ours_control: bool) -> None:
    """Two endpoint-independent NATs.  When we control, we nominate the direct pair (as
    between two of ours); aioice, controlling, may nominate the relayed pair if it is valid
    first, so then only the connection and the data are checked."""
    r = pair(ice_lab, "eim/eim", "lan1a", "eim2l", ours_control)
    assert r.a["relayed"] == r.b["relayed"], r
    if ours_control:
        for report, peer in ((r.a, ice_lab["eim2l"]), (r.b, ice_lab["lan1a"])):
            assert not report["relayed"], report
            assert report["remote"]["type"] in ("srflx", "prflx"), report
            assert report["remote"]["address"] == peer.public_ip, report
    xfail_if_aioice_renominated(r, ours_control)
    assert_data_both_ways(r)


@pytest.mark.parametrize("ours_control", [True, False], ids=["we-control", "aioice-controls"])
def test_sym_sym_relay_with_aioice(ice_lab: IceLab, ours_control: bool) -> None:
    r = pair(ice_lab, "sym/sym", "sym1l", "sym2l", ours_control)
    for report in (r.a, r.b):
        assert report["relayed"], report
    xfail_if_aioice_renominated(r, ours_control)
    assert_data_both_ways(r)


@pytest.mark.parametrize("ours_control", [True, False], ids=["we-control", "aioice-controls"])
def test_public_and_symmetric_with_aioice(ice_lab: IceLab, ours_control: bool) -> None:
    r = pair(ice_lab, "pub/sym", "pub", "sym2l", ours_control)
    assert not r.a["relayed"] and not r.b["relayed"], r
    assert r.b["remote"] == {
        "type": "host",
        "address": "203.0.113.50",
        "port": r.a["local"]["port"],
    }
    assert r.a["remote"]["address"] == ice_lab["sym2l"].public_ip
    xfail_if_aioice_renominated(r, ours_control)
    assert_data_both_ways(r)
