"""One ICE endpoint of the lab, run inside a network namespace and steered over stdin/stdout.

    ip netns exec NS python -m tests.lab.ice_node --role controlling \\
        --stun 203.0.113.1:3478 --turn 203.0.113.1:3478 --user alice --password ...

It runs one :class:`ice.aio.IceConnection` (our agent, gathering on the namespace's own
interfaces) and talks to the test in JSON lines: one object per line, commands on stdin
(``"cmd"``), reports on stdout (``"event"``).  Logs go to stderr.  The conversation:

1. node: ``candidates`` (ufrag, pwd, candidates as ``a=candidate`` values, gather_time),
   by itself once gathering is complete;
2. test: ``remote`` (the peer's ufrag, pwd, candidates) -> node: ``connected`` (local and
   remote of the selected pair: type, address, port; relayed; connect_time from the agent's
   start to Completed; wall_time; usable_time: until data could flow on a valid pair, RFC
   8445 §12.1) or ``failed`` (reason, last agent events);
3. test: ``exchange`` (tag, want) -> the node sends ``0x80 "tag i"`` every ``interval``
   seconds until ``stop`` and reports ``received`` (messages) once ``want`` distinct packets
   came in (or after ``timeout``);
4. test: ``stop`` -> node: ``stopped`` (sent and received counts);
   (ours only) test: ``restart`` -> node: ``candidates`` again, with a new ufrag and pwd
   (ICE restart: continue at 2); test: ``wait_event`` (name of an agent event class,
   timeout) -> node: ``agent_event`` or ``no_agent_event`` (with send_ok: whether data can
   still be sent);
5. test: ``close`` -> node: ``closed`` (TURN allocations released), exit status 0.

Any command the node cannot carry out is answered with ``error``: message.  End of input
closes the connection and exits, so a test that dies never leaves a node behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from ice.aio import IceConnection, IceError
from ice.candidate import Candidate
from ice.gather import GatherConfig, TurnServer
from ice.sdp import format_candidate, parse_candidate
from ice.stun import Address

logger = logging.getLogger("tests.lab.ice_node")

DATA_MARK = b"\x80"  # RFC 7983: 128-191 is RTP/RTCP, i.e. application data, never STUN
PROBE = b"\x81probe"  # data too, but not counted by an exchange


def _address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _describe(c: Candidate) -> dict[str, Any]:
    return {"type": c.type.value, "address": c.address, "port": c.port}


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Node:
    """Our agent (:class:`ice.aio.IceConnection`) with ``--components`` components.

    With one component the data is ``tag i``; with more, ``tag cN i`` sent on component N,
    and each received message is reported with `` @cK``, K the component it arrived on."""

    def __init__(self, args: argparse.Namespace) -> None:
        turn = [
            TurnServer(_address(t), args.user or "", args.password or "", args.turn_transport)
            for t in args.turn or []
        ]
        config = GatherConfig(
            stun_servers=[_address(s) for s in args.stun or []],
            turn_servers=turn,
            relay_only=args.relay_only,
            stun_timeout=args.gather_timeout,
            turn_timeout=args.gather_timeout,
        )
        options: dict[str, Any] = {"ta": args.ta, "timeout": args.ice_timeout}
        if args.nomination_delay is not None:
            options["nomination_delay"] = args.nomination_delay
        for option in args.agent_option or []:
            key, _, value = option.partition("=")
            options[key] = float(value)
        self.args = args
        self.components: int = args.components
        self.conn = IceConnection(
            args.role == "controlling",
            components=self.components,
            gather=config,
            agent_options=options,
        )
        self._sender: asyncio.Task[None] | None = None
        self._collector: asyncio.Task[None] | None = None
        self.sent = 0
        self.received: dict[int, set[bytes]] = {c: set() for c in range(1, self.components + 1)}
        self._want: int | None = None
        self._enough = asyncio.Event()
        for component in range(1, self.components + 1):
            # from the start: the peer may begin sending before our exchange command comes
            self.conn.transport(component).on_receive = self._receiver(component)

    def _receiver(self, component: int) -> Callable[[bytes], None]:
        def on_receive(data: bytes) -> None:
            if data.startswith(DATA_MARK):
                self.received[component].add(data)
                self._check_enough()

        return on_receive

    def _check_enough(self) -> None:
        want = self._want
        if want is not None and all(len(got) >= want for got in self.received.values()):
            self._enough.set()

    async def gather(self) -> None:
        started = time.monotonic()
        candidates = await self.conn.gather(timeout=self.args.gather_timeout + 5)
        emit(
            "candidates",
            ufrag=self.conn.local_ufrag,
            pwd=self.conn.local_pwd,
            candidates=[format_candidate(c) for c in candidates],
            gather_time=round(time.monotonic() - started, 3),
        )

    async def remote(self, cmd: dict[str, Any]) -> None:
        candidates = [parse_candidate(c) for c in cmd["candidates"]]
        self.conn.set_remote(cmd["ufrag"], cmd["pwd"], candidates)
        started = time.monotonic()
        try:
            self.conn.start()
            await self.conn.usable(timeout=self.args.ice_timeout + 2)
            usable = time.monotonic() - started
            await self.conn.connected(timeout=self.args.ice_timeout + 2)
        except IceError as exc:
            emit("failed", reason=str(exc), events=[repr(e) for e in self.conn.events][-20:])
            return
        pairs = []
        for component in range(1, self.components + 1):
            t = self.conn.transport(component)
            selected = t.selected
            assert selected is not None
            local, remote = selected
            pairs.append(
                {
                    "component": component,
                    "local": _describe(local),
                    "remote": _describe(remote),
                    "relayed": t.relayed,
                }
            )
        emit(
            "connected",
            local=pairs[0]["local"],
            remote=pairs[0]["remote"],
            relayed=pairs[0]["relayed"],
            pairs=pairs,
            connect_time=self.conn.connect_time,
            wall_time=round(time.monotonic() - started, 3),
            usable_time=round(usable, 3),
            nat_mapping=self.conn.nat_mapping.value,
        )

    def _text(self, tag: str, component: int, i: int) -> bytes:
        if self.components == 1:
            return DATA_MARK + f"{tag} {i}".encode()
        return DATA_MARK + f"{tag} c{component} {i}".encode()

    def _messages(self) -> list[str]:
        out = []
        for component, got in self.received.items():
            for data in got:
                text = data[1:].decode(errors="replace")
                out.append(text if self.components == 1 else f"{text} @c{component}")
        return sorted(out)

    async def exchange(self, cmd: dict[str, Any]) -> None:
        tag: str = cmd["tag"]
        want = int(cmd.get("want", 10))
        timeout = float(cmd.get("timeout", 8.0))
        interval = float(cmd.get("interval", 0.02))
        for got in self.received.values():
            got.clear()  # a new exchange (e.g. after an ICE restart) counts afresh
        self._enough.clear()
        self._want = want
        self._check_enough()

        async def send_loop() -> None:
            i = 0
            while True:
                for component in range(1, self.components + 1):
                    if self.conn.transport(component).send(self._text(tag, component, i)):
                        self.sent += 1
                i += 1
                await asyncio.sleep(interval)

        async def collect() -> None:
            try:
                await asyncio.wait_for(self._enough.wait(), timeout)
            except TimeoutError:
                pass
            emit("received", messages=self._messages())

        self._sender = asyncio.create_task(send_loop())
        self._collector = asyncio.create_task(collect())

    async def stop(self) -> None:
        for task in (self._sender, self._collector):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        transports = [self.conn.transport(c) for c in range(1, self.components + 1)]
        selected = transports[0].selected
        final = None
        if selected is not None:
            final = {"local": _describe(selected[0]), "remote": _describe(selected[1])}
        emit(
            "stopped",
            final=final,
            sent=self.sent,
            received=sum(len(got) for got in self.received.values()),
            transport_sent=sum(t.packets_sent for t in transports),
            transport_received=sum(t.packets_received for t in transports),
        )

    async def restart(self) -> None:
        """ICE restart (RFC 8445 §9): new ufrag/pwd, reported like the first gathering."""
        self.conn.restart()
        emit(
            "candidates",
            ufrag=self.conn.local_ufrag,
            pwd=self.conn.local_pwd,
            candidates=[format_candidate(c) for c in self.conn.local_candidates],
            gather_time=0.0,
        )

    async def wait_event(self, cmd: dict[str, Any]) -> None:
        """Wait up to ``timeout`` s for an agent event of class ``name`` (e.g. ConsentLost)
        that happens after this command; report whether data can still be sent then."""
        name: str = cmd["name"]
        timeout = float(cmd.get("timeout", 10.0))
        events = self.conn.events
        seen = len(events)
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            # a bounded deque: once full, positions shift, so look at all of it
            fresh = list(events)[seen:] if len(events) != events.maxlen else list(events)
            match = next((e for e in fresh if type(e).__name__ == name), None)
            if match is not None:
                emit(
                    "agent_event",
                    name=name,
                    repr=repr(match),
                    after=round(time.monotonic() - started, 3),
                    send_ok=self.conn.transport().send(PROBE),
                )
                return
            await asyncio.sleep(0.05)
        emit(
            "no_agent_event",
            name=name,
            send_ok=self.conn.transport().send(PROBE),
            stats=repr(self.conn.stats()),
        )

    async def close(self) -> None:
        await self.conn.close()


class AioiceNode:
    """The same conversation with aioice (a dev-only dependency) as the ICE agent: the
    interop peer of tests/lab/test_ice_lab_aioice.py."""

    def __init__(self, args: argparse.Namespace) -> None:
        import aioice

        self.aioice: Any = aioice
        stun = _address(args.stun[0]) if args.stun else None
        turn = _address(args.turn[0]) if args.turn else None
        self.args = args
        self.conn: Any = aioice.Connection(
            ice_controlling=args.role == "controlling",
            components=1,
            stun_server=stun,
            turn_server=turn,
            turn_username=args.user,
            turn_password=args.password,
            use_ipv6=False,
            transport_policy=(
                aioice.TransportPolicy.RELAY if args.relay_only else aioice.TransportPolicy.ALL
            ),
        )
        self._sender: asyncio.Task[None] | None = None
        self._collector: asyncio.Task[None] | None = None
        self.sent = 0
        self.received: set[bytes] = set()

    async def gather(self) -> None:
        started = time.monotonic()
        await asyncio.wait_for(self.conn.gather_candidates(), self.args.gather_timeout + 5)
        emit(
            "candidates",
            ufrag=self.conn.local_username,
            pwd=self.conn.local_password,
            candidates=[c.to_sdp() for c in self.conn.local_candidates],
            gather_time=round(time.monotonic() - started, 3),
        )

    async def remote(self, cmd: dict[str, Any]) -> None:
        self.conn.remote_username = cmd["ufrag"]
        self.conn.remote_password = cmd["pwd"]
        for c in cmd["candidates"]:
            await self.conn.add_remote_candidate(self.aioice.Candidate.from_sdp(c))
        await self.conn.add_remote_candidate(None)
        started = time.monotonic()
        try:
            await asyncio.wait_for(self.conn.connect(), self.args.ice_timeout + 2)
        except (ConnectionError, TimeoutError) as exc:
            emit("failed", reason=repr(exc), events=[])
            return
        pair = self.conn._nominated[1]  # aioice has no public accessor for the pair
        local, remote = pair.local_candidate, pair.remote_candidate
        wall = round(time.monotonic() - started, 3)
        emit(
            "connected",
            local={"type": local.type, "address": local.host, "port": local.port},
            remote={"type": remote.type, "address": remote.host, "port": remote.port},
            relayed="relay" in (local.type, remote.type),
            connect_time=wall,
            wall_time=wall,
        )

    async def exchange(self, cmd: dict[str, Any]) -> None:
        tag: str = cmd["tag"]
        want = int(cmd.get("want", 10))
        timeout = float(cmd.get("timeout", 8.0))
        interval = float(cmd.get("interval", 0.02))

        async def send_loop() -> None:
            while True:
                await self.conn.send(DATA_MARK + f"{tag} {self.sent}".encode())
                self.sent += 1
                await asyncio.sleep(interval)

        async def collect() -> None:
            deadline = time.monotonic() + timeout
            while len(self.received) < want and time.monotonic() < deadline:
                try:
                    data = await asyncio.wait_for(self.conn.recv(), deadline - time.monotonic())
                except TimeoutError:
                    break
                if data.startswith(DATA_MARK):
                    self.received.add(data)
            emit(
                "received",
                messages=sorted(d[1:].decode(errors="replace") for d in self.received),
            )

        self._sender = asyncio.create_task(send_loop())
        self._collector = asyncio.create_task(collect())

    async def stop(self) -> None:
        for task in (self._sender, self._collector):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        pair = self.conn._nominated.get(1)
        final = None
        if pair is not None:  # aioice may nominate again after completing (see the tests)
            local, remote = pair.local_candidate, pair.remote_candidate
            final = {
                "local": {"type": local.type, "address": local.host, "port": local.port},
                "remote": {"type": remote.type, "address": remote.host, "port": remote.port},
            }
        emit("stopped", sent=self.sent, received=len(self.received), final=final)

    async def close(self) -> None:
        await self.conn.close()


async def read_commands() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(args: argparse.Namespace) -> int:
    reader = await read_commands()
    node: Node | AioiceNode = AioiceNode(args) if args.impl == "aioice" else Node(args)
    pending: set[asyncio.Task[None]] = set()
    try:
        gathering = asyncio.create_task(node.gather())
        pending.add(gathering)
        gathering.add_done_callback(pending.discard)
        while True:
            line = await reader.readline()
            if not line:
                logger.info("end of input: closing")
                return 0
            try:
                cmd = json.loads(line)
                name = cmd["cmd"]
            except (ValueError, KeyError, TypeError):
                emit("error", message=f"bad command line {line!r}")
                continue
            if name == "remote":
                await gathering  # set_remote needs the agent started by gathering
                task = asyncio.create_task(node.remote(cmd))
                pending.add(task)
                task.add_done_callback(pending.discard)
            elif name == "exchange":
                await node.exchange(cmd)
            elif name == "restart" and isinstance(node, Node):
                await node.restart()
            elif name == "wait_event" and isinstance(node, Node):
                await node.wait_event(cmd)
            elif name == "stop":
                await node.stop()
            elif name == "close":
                await node.close()
                emit("closed")
                return 0
            else:
                emit("error", message=f"unknown command {name!r}")
    finally:
        for task in list(pending):
            task.cancel()
        await node.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.ice_node", description=__doc__)
    parser.add_argument("--role", choices=["controlling", "controlled"], required=True)
    parser.add_argument(
        "--impl", choices=["ours", "aioice"], default="ours", help="which ICE implementation"
    )
    parser.add_argument("--stun", action="append", help="HOST:PORT (repeatable)")
    parser.add_argument("--turn", action="append", help="HOST:PORT, TURN over UDP (repeatable)")
    parser.add_argument(
        "--turn-transport", choices=["udp", "tcp"], default="udp", help="(ours only)"
    )
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--relay-only", action="store_true")
    parser.add_argument("--components", type=int, default=1, help="(ours only)")
    parser.add_argument("--ta", type=float, default=0.02)
    parser.add_argument("--ice-timeout", type=float, default=15.0)
    parser.add_argument(
        "--nomination-delay",
        type=float,
        help="how long the controlling agent waits for a better pair (Agent option)",
    )
    parser.add_argument(
        "--agent-option",
        action="append",
        metavar="NAME=SECONDS",
        help="another float option of ice.agent.Agent, e.g. consent_timeout=2 (repeatable)",
    )
    parser.add_argument("--gather-timeout", type=float, default=4.0)
    parser.add_argument("--verbose", action="store_true", help="debug logs (ice.trace too)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
