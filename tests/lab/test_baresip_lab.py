"""baresip as the far end in the ICE lab (root): our ``softphone`` CLI on one laptop, a
:class:`tests.peers.baresip.Baresip` (``medianat=ice``, STUN from the lab's coturn) on
another, each behind its own NAT router (or baresip on the public net), both registered
with Kamailio on the public net.

Both directions: we call baresip (it auto-answers) and baresip dials us (``softphone answer
--auto``). Audio is checked at both ends by dominant frequency: baresip sends its 440 Hz
sine, we send 1000 Hz; ours is recorded with ``--record``, baresip's with its ``sndfile``
dumps. Our report says whether ICE ran and which pair carried the call; it is printed
(``pytest -rP``) with what baresip's SDP offered or answered.

baresip runs only inside the lab's namespaces here, so its candidates (gathered on every
interface it sees) are lab addresses and its STUN goes to the lab's coturn only.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_media import baresip_heard
from tests.helpers_sip import traced_sdp
from tests.lab.conftest import SERVER_IP, IceLab, Laptop
from tests.lab.softphone_lab import (
    DOMAIN,
    Softphone,
    SoftphoneLab,
    heard,
    start_kamailio,
)
from tests.peers.baresip import Baresip

BARESIP_TONE = 440.0  # the Baresip peer's ausine source
OUR_TONE = 1000.0
OURS = "lan1a"  # our laptop, behind eim1 (MASQUERADE)
DIRECT = {"host", "srflx", "prflx"}
# baresip's laptop -> the pair we expect: behind eim2 (MASQUERADE) a direct srflx pair; behind
# sym1 (--random-fully) its srflx candidate is useless and only our TURN relay can carry it;
# on the public net (no NAT) a direct pair to its host candidate
THEIRS = {"eim": "eim2l", "sym": "sym1l", "pub": "pub"}  # pub: on the public net, no NAT
# baresip 1.0 retransmits its checks slowly (~2.3 s per component when the first ones are
# lost to a NAT's filtering; ICE takes ~60 ms with baresip on the public net): ICE takes
# ~4.7 s eim/eim and ~9.3 s eim/sym, and our --duration counts from the answer, so the call
# lasts long enough to carry audio after that
# (an upper bound: we hang up HOLD seconds after our side connected, see hang_up_once_connected)
DURATION = {"eim": 9, "sym": 15, "pub": 9}
HOLD = 3.0  # seconds of audio both ways once ICE connected, before we hang up
CASES = [pytest.param(nat, id=f"eim/{nat}") for nat in THEIRS]


@pytest.fixture(scope="module")
def softphone_lab(
    ice_lab: IceLab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SoftphoneLab]:
    for binary, package in (("kamailio", "kamailio"), ("baresip", "baresip")):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} not installed (Debian package {package})")
    kamailio = start_kamailio(ice_lab, tmp_path_factory.mktemp("baresip-lab") / "kamailio")
    try:
        yield SoftphoneLab(ice_lab, kamailio)
    finally:
        kamailio.stop()


def start_baresip(lab: SoftphoneLab, laptop: Laptop, workdir: Path, user: str) -> Baresip:
    phone = Baresip(
        workdir, user=user, domain=DOMAIN, password=lab.kamailio.users[user],
        registrar=f"{SERVER_IP}:{lab.kamailio.port}", host=laptop.ip, netns=laptop.ns.name,
        medianat="ice", stun_server=f"stun:{lab.ice.coturn.server()}",
        audio_codecs="opus/48000/2,PCMU/8000/1",
    )  # fmt: skip
    phone.start(timeout=20)
    return phone


_CANDIDATE = re.compile(r"^a=candidate:\S+ \d \S+ \d+ (\S+ \d+ typ \w+)", re.M)


def describe(case: str, report: dict[str, Any], sdp: str) -> str:
    ice = report["ice"]
    pair = ice and f"{ice['selected']['local']['type']}/{ice['selected']['remote']['type']}"
    return (
        f"[baresip-lab] {case}: codec {report['rtp']['codec']} setup_ms "
        f"{report['call'].get('setup_ms')} ICE {'yes' if ice else 'no'} pair {pair} "
        f"connect_ms {ice and ice.get('connect_ms')}; baresip SDP: ice "
        f"{'a=ice-ufrag' in sdp}, rtcp-mux {'a=rtcp-mux' in sdp}, candidates "
        f"{_CANDIDATE.findall(sdp)}; "
        f"rtp sent {report['rtp']['sent']} received {report['rtp']['received']}"
    )


def common(lab: SoftphoneLab, user: str) -> list[str]:
    return ["--trace", *lab.common_args(user)]


def check_ice(report: dict[str, Any], lab: SoftphoneLab, nat: str) -> None:
    """ICE ran with baresip and picked the pair this NAT pairing allows."""
    ice = report["ice"]
    assert ice is not None, report
    local, remote = ice["selected"]["local"], ice["selected"]["remote"]
    if nat in ("eim", "pub"):
        assert local["type"] in DIRECT and remote["type"] in DIRECT, ice
        assert remote["address"] == lab.ice[THEIRS[nat]].public_ip, ice
    else:
        assert "relay" in (local["type"], remote["type"]), ice


def hang_up_once_connected(ours: Softphone) -> None:
    """Once our side connected (ICE, however long baresip took), HOLD seconds of audio,
    then we hang up (SIGINT: a BYE, as at the end of ``--duration``)."""
    if ours.wait_for("connected via", 40):
        time.sleep(HOLD)
        ours.interrupt()


@dataclass
class Ended:
    """A call between our softphone and baresip, over: what each end says."""

    status: int  # our exit status
    report: dict[str, Any]  # our JSON report
    stderr: str  # ours, with --trace
    their_audio: float  # the tone baresip heard
    logs: str  # ours and baresip's, for the failure messages

    @classmethod
    def of(
        cls,
        ours: Softphone,
        result: tuple[int, dict[str, Any]],
        bob: Baresip | None,
        their_audio: float,
    ) -> Ended:
        """The end of the call ``ours`` made or answered (its ``finish()`` result)."""
        logs = ours.stderr[-6000:] + "\n--- baresip\n" + (bob.log()[-4000:] if bob else "")
        return cls(*result, ours.stderr, their_audio, logs)

    def check(self, lab: SoftphoneLab, nat: str, case: str, recording: Path) -> None:
        """We ended well, ICE picked the pair this NAT pairing allows, media went both ways
        and each end heard the other's tone."""
        assert self.status == 0, self.logs
        assert self.report["call"]["end_reason"] == "local-bye", self.logs  # baresip stayed
        print(describe(case, self.report, traced_sdp(self.stderr, "recv")))
        check_ice(self.report, lab, nat)
        assert self.report["rtp"]["received"] > 0 and self.report["rtp"]["sent"] > 0
        assert abs(heard(recording) - BARESIP_TONE) < 10, self.logs
        assert abs(self.their_audio - OUR_TONE) < 10, self.logs


@pytest.mark.parametrize("nat", CASES)
def test_softphone_calls_baresip_across_nats(
    softphone_lab: SoftphoneLab, tmp_path: Path, nat: str
) -> None:
    lab = softphone_lab
    bob = start_baresip(lab, lab.ice[THEIRS[nat]], tmp_path / "baresip", "bob")
    ours = tmp_path / "ours.wav"
    caller = Softphone(
        lab, lab.ice[OURS],
        [*common(lab, "alice"), "call", "bob", "--play", f"tone:{OUR_TONE:g}",
         "--record", str(ours), "--duration", str(DURATION[nat])],
        tmp_path / "caller.log",
    )  # fmt: skip
    try:
        hang_up_once_connected(caller)
        result = caller.finish(90)
        their_audio = baresip_heard(bob, timeout=15)
    finally:
        caller.stop()
        bob.stop()
    ended = Ended.of(caller, result, bob, their_audio)
    assert ended.report["call"]["sip_status"] == 200, ended.logs
    ended.check(lab, nat, f"softphone->baresip eim/{nat}", ours)


# baresip (controlling, behind the symmetric NAT) -> softphone (controlled, eim): component 1
# connects relay/prflx, and so must component 2 (baresip answers without rtcp-mux, so RTCP has
# its own component).  This used to fail: our component-2 pairs shared foundations with
# component-1 pairs that never answer, so they stayed Frozen (RFC 8445 §6.1.2.6, §6.1.4.2) for
# ~10 s, and baresip's own checks to our component-2 relay were dropped by coturn (no
# permission for its address) until it gave up.  Now a pair unanswered for an RTO stops holding
# its foundation back, a selected component unfreezes the others, and the TURN permissions for
# the peer's addresses are created as soon as its candidates arrive.
INCOMING_CASES = [pytest.param(nat, id=f"eim/{nat}") for nat in THEIRS]


@pytest.mark.parametrize("nat", INCOMING_CASES)
def test_baresip_calls_softphone_across_nats(
    softphone_lab: SoftphoneLab, tmp_path: Path, nat: str
) -> None:
    lab = softphone_lab
    ours = tmp_path / "ours.wav"
    answerer = Softphone(
        lab, lab.ice[OURS],
        [*common(lab, "alice"), "answer", "--auto", "--count", "1",
         "--duration", str(DURATION[nat]), "--play", f"tone:{OUR_TONE:g}", "--record", str(ours)],
        tmp_path / "callee.log",
    )  # fmt: skip
    bob: Baresip | None = None
    try:
        assert answerer.wait_for("waiting for calls", 40), answerer.stderr
        bob = start_baresip(lab, lab.ice[THEIRS[nat]], tmp_path / "baresip", "bob")
        assert bob.dial(f"sip:alice@{DOMAIN}")["ok"]
        hang_up_once_connected(answerer)
        result = answerer.finish(90)
        their_audio = baresip_heard(bob, timeout=15)
    finally:
        answerer.stop()
        if bob is not None:
            bob.stop()
    ended = Ended.of(answerer, result, bob, their_audio)
    ended.check(lab, nat, f"baresip->softphone eim/{nat}", ours)
