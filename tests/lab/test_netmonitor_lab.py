"""ice.netmonitor and ice.pool against the real kernel: a network namespace of its own (unique
name, removed at teardown) with a veth pair, in which a python process runs an AddressMonitor
and a CandidatePool watching it; the test adds and removes addresses with ``ip`` and checks
the changes reported and the host candidates the pool hands out next.

Needs root and iproute2 (skipped otherwise).  Addresses: documentation ranges only, and only
inside the namespace."""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.peers.netns import REPO_ROOT

pytestmark = pytest.mark.lab

WAIT = 20.0  # a generous bound for "it happens" (the machine is shared), never a pass/fail time

# The process inside the namespace: prints one JSON object per line; reads commands on stdin.
CHILD = r"""
import asyncio, json, logging, sys
from ice.gather import GatherConfig
from ice.netmonitor import AddressMonitor
from ice.pool import CandidatePool

logging.basicConfig(level=logging.INFO, stream=sys.stderr)

def say(**event):
    print(json.dumps(event), flush=True)

def changes(batch):
    say(event="changes", changes=[
        {"added": c.added, "address": c.host, "interface": c.interface,
         "tentative": c.tentative} for c in batch])

async def main():
    loop = asyncio.get_running_loop()
    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    async with AddressMonitor(debounce=0.3) as monitor:
        monitor.add_listener(changes)
        pool = CandidatePool(
            GatherConfig(), refill_delay=0, monitor=monitor, include=options.get("include"))
        pool.on_regathered = lambda batch: say(
            event="regathered", addresses=[c.host for c in batch])
        await pool.start()
        await pool.wait_ready(1, timeout=10)
        say(event="ready", addresses=sorted(c.host for c in monitor.addresses()))
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            command, _, wait = line.strip().partition(" ")
            if command == "take":
                try:
                    await pool.wait_ready(1, timeout=float(wait or 10))
                except TimeoutError:
                    pass
                gatherer = pool.take()
                hosts = None
                if gatherer is not None:
                    hosts = sorted(
                        c.candidate.address for c in gatherer.core.candidates
                        if c.candidate.type.value == "host")
                    await gatherer.close()
                say(event="take", hosts=hosts, network_changes=pool.network_changes)
            else:
                break
        await pool.close()
        say(event="closed", monitor_running=monitor.running)

asyncio.run(main())
"""


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "ip not installed (Debian package iproute2)"
    return None


def ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"ip {' '.join(args)}: {res.stderr.strip()}"


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace of its own with a veth pair nma/nmb (both up) and 198.51.100.5/24 on nma."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    # the lab's naming (tests/peers/netns.py): a killed run's namespace is removed by the next lab
    name = f"spt{os.getpid()}x{secrets.token_hex(2)}-netmon"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "link", "add", "nma", "type", "veth", "peer", "name", "nmb")
        ip("-n", name, "link", "set", "nmb", "up")
        ip("-n", name, "link", "set", "nma", "up")
        ip("-n", name, "addr", "add", "198.51.100.5/24", "dev", "nma")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


class Child:
    """The python process inside the namespace, its JSON lines read by a thread."""

    def __init__(self, netns: str, **options: object) -> None:
        argv = ["ip", "netns", "exec", netns, "env", f"PYTHONPATH={REPO_ROOT}"]
        self.proc = subprocess.Popen(
            [*argv, sys.executable, "-u", "-c", CHILD, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def expect(self, kind: str) -> dict[str, Any]:
        """The next event of ``kind`` (earlier events of other kinds are skipped)."""
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            try:
                event = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"no {kind!r} event; child log:\n{''.join(self.stderr)}"
                ) from None
            if event["event"] == kind:
                return event

    def changes_until(self, done: Callable[[set[tuple[bool, str]]], bool]) -> list[dict[str, Any]]:
        """Change batches until ``done`` ({(added, address)} so far) is true."""
        seen: list[dict[str, Any]] = []
        while not done({(c["added"], c["address"]) for c in seen}):
            seen += self.expect("changes")["changes"]
        return seen

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def take(self, wait: float = 10.0) -> list[str] | None:
        """Host candidates of the set the pool hands out (waiting up to ``wait`` s for one)."""
        hosts: list[str] | None = self.take_event(wait)["hosts"]
        return hosts

    def take_event(self, wait: float = 10.0) -> dict[str, Any]:
        self.send(f"take {wait}")
        return self.expect("take")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()  # by its own handle: this test's process only
                self.proc.wait(timeout=5)


@pytest.fixture
def child(netns: str) -> Iterator[Child]:
    proc = Child(netns)
    try:
        yield proc
    finally:
        proc.stop()


def test_address_changes_are_reported_and_the_pool_gathers_again(netns: str, child: Child) -> None:
    ready = child.expect("ready")
    assert "198.51.100.5" in ready["addresses"]
    assert not [a for a in ready["addresses"] if a.startswith(("127.", "::1", "fe80"))]
    assert set(child.take() or ()) == {"198.51.100.5"}

    # on another network (another subnet: deleting the primary address of a subnet deletes
    # its secondaries too, unless promote_secondaries): the new address comes, the old one goes
    ip("-n", netns, "addr", "add", "203.0.113.7/24", "dev", "nma")
    ip("-n", netns, "addr", "del", "198.51.100.5/24", "dev", "nma")
    seen = child.changes_until(lambda s: {(True, "203.0.113.7"), (False, "198.51.100.5")} <= s)
    assert {(c["added"], c["address"], c["interface"]) for c in seen} == {
        (True, "203.0.113.7", "nma"),
        (False, "198.51.100.5", "nma"),
    }
    regathered = child.expect("regathered")
    assert set(regathered["addresses"]) <= {"203.0.113.7", "198.51.100.5"}
    assert set(child.take() or ()) == {"203.0.113.7"}

    # a lease renewed to the same address says nothing; the next change is reported alone
    lifetimes = ("valid_lft", "600", "preferred_lft", "600")
    ip("-n", netns, "addr", "replace", "203.0.113.7/24", "dev", "nma", *lifetimes)
    ip("-n", netns, "addr", "add", "203.0.113.8/24", "dev", "nma")
    seen = child.changes_until(lambda s: (True, "203.0.113.8") in s)
    assert [(c["added"], c["address"]) for c in seen] == [(True, "203.0.113.8")]
    child.expect("regathered")
    assert set(child.take() or ()) == {"203.0.113.7", "203.0.113.8"}

    # an IPv6 address is reported once duplicate address detection is over (never tentative)
    ip("-n", netns, "addr", "add", "2001:db8::7/64", "dev", "nma")
    seen = child.changes_until(lambda s: (True, "2001:db8::7") in s)
    assert [(c["added"], c["address"], c["tentative"]) for c in seen] == [
        (True, "2001:db8::7", False)
    ]
    child.expect("regathered")
    assert set(child.take() or ()) == {"203.0.113.7", "203.0.113.8", "2001:db8::7"}

    # the interface goes down: every address on it goes (link-local ones are never reported)
    ip("-n", netns, "link", "set", "nma", "down")
    gone = {(False, "203.0.113.7"), (False, "203.0.113.8"), (False, "2001:db8::7")}
    seen = child.changes_until(lambda s: gone <= s)
    assert {(c["added"], c["address"]) for c in seen} == gone
    hosts = child.take(wait=1.0)
    assert not hosts  # no address left to gather on: no set, none with the old addresses

    # and comes back up: the IPv4 addresses with it (IPv6 ones were flushed by the kernel)
    ip("-n", netns, "link", "set", "nma", "up")
    back = {(True, "203.0.113.7"), (True, "203.0.113.8")}
    seen = child.changes_until(lambda s: back <= s)
    assert not [c for c in seen if c["address"].startswith("fe80")]
    child.expect("regathered")
    assert set(child.take() or ()) == {"203.0.113.7", "203.0.113.8"}

    child.send("quit")
    assert child.expect("closed") == {"event": "closed", "monitor_running": True}


def test_answer_says_when_a_network_change_made_it_gather_again(netns: str) -> None:
    """``softphone answer`` (waiting for calls, with its candidate pool) in the namespace: its
    address changes, and a progress line says the pool was gathered again."""
    argv = ["ip", "netns", "exec", netns, "env", f"PYTHONPATH={REPO_ROOT}", "HOME=/nonexistent"]
    argv += [sys.executable, "-m", "softphone", "--user", "bob", "--bind", "0.0.0.0:0"]
    proc = subprocess.Popen(
        [*argv, "answer", "--auto"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()

    def expect(text: str) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                continue
            log.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} line; stderr so far:\n{''.join(log)}")

    try:
        expect("waiting for calls")
        ip("-n", netns, "addr", "add", "203.0.113.7/24", "dev", "nma")
        ip("-n", netns, "addr", "del", "198.51.100.5/24", "dev", "nma")
        line = expect("network changed: candidate pool re-gathered")
        assert "+203.0.113.7" in line or "-198.51.100.5" in line
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # our own child, by its handle
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def test_only_the_pools_interfaces_matter_and_a_failed_dad_is_never_reported(netns: str) -> None:
    """A pool gathering on ``nmc`` only (``include``): a change on ``nma`` is reported by the
    monitor but leaves the pool alone; an IPv6 address whose duplicate address detection fails
    (the peer ``nmd`` has it) is never reported; an address on ``nmc`` makes it gather again."""
    ip("-n", netns, "link", "add", "nmc", "type", "veth", "peer", "name", "nmd")
    ip("-n", netns, "link", "set", "nmd", "up")
    ip("-n", netns, "link", "set", "nmc", "up")
    ip("-n", netns, "addr", "add", "203.0.113.5/24", "dev", "nmc")
    ip("-n", netns, "addr", "add", "2001:db8::9/64", "dev", "nmd", "nodad")
    child = Child(netns, include=["nmc"])
    try:
        child.expect("ready")
        first = child.take_event()
        assert set(first["hosts"]) == {"203.0.113.5"} and first["network_changes"] == 0

        ip("-n", netns, "addr", "add", "198.51.100.6/24", "dev", "nma")
        seen = child.changes_until(lambda s: (True, "198.51.100.6") in s)
        assert [(c["added"], c["address"]) for c in seen] == [(True, "198.51.100.6")]
        after = child.take_event()
        assert set(after["hosts"]) == {"203.0.113.5"} and after["network_changes"] == 0

        ip("-n", netns, "addr", "add", "2001:db8::9/64", "dev", "nmc")  # a duplicate
        show = ["ip", "-n", netns, "-6", "addr", "show", "dev", "nmc"]
        deadline, shown = time.monotonic() + WAIT, ""
        while time.monotonic() < deadline and "dadfailed" not in shown:
            time.sleep(0.1)
            shown = subprocess.run(show, capture_output=True, text=True, timeout=30).stdout
        assert "dadfailed" in shown, shown
        ip("-n", netns, "addr", "add", "203.0.113.6/24", "dev", "nmc")
        seen = child.changes_until(lambda s: (True, "203.0.113.6") in s)
        assert [(c["added"], c["address"]) for c in seen] == [(True, "203.0.113.6")]
        child.expect("regathered")
        last = child.take_event()
        assert set(last["hosts"]) == {"203.0.113.5", "203.0.113.6"}
        assert last["network_changes"] == 1
    finally:
        child.stop()
