"""``sip.transport``: a new TCP connection to a peer we were connected to starts from the same
local port (so a proxy without RFC 5626 flow tokens, which knows us by that address, reaches us
over it), and falls back to any port when that one cannot be had; a request whose connection is
reset before any response fails at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sip.aio import AsyncUserAgent, CallError
from sip.locate import Target
from sip.message import Headers, Request, new_branch
from sip.transport import Source, TransportLayer
from sip.ua import UAConfig
from tests.integration.test_sip_robustness import offer


def options() -> Request:
    h = Headers()
    h.add("Via", f"SIP/2.0/TCP 127.0.0.1:5060;branch={new_branch()}")
    h.add("From", "<sip:a@example.org>;tag=1")
    h.add("To", "<sip:b@example.org>")
    h.add("Call-ID", new_branch())
    h.add("CSeq", "1 OPTIONS")
    return Request("OPTIONS", "sip:b@example.org", h)


class Server:
    """A TCP server that records each connection's peer address and can drop them all."""

    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.append(writer.get_extra_info("peername")[:2])
        self.writers.append(writer)
        while await reader.read(65536):
            pass

    async def drop_all(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def wait_peers(self, n: int) -> None:
        for _ in range(100):
            if len(self.peers) >= n:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{len(self.peers)} connections, expected {n}")


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Server, TransportLayer, Target]]:
    """A TCP server, and our transport layer with a first connection to it."""
    server = Server()
    await server.start()
    layer = TransportLayer()
    await layer.listen_tcp("127.0.0.1", 0)
    target = Target("TCP", "127.0.0.1", "127.0.0.1", server.port)
    try:
        yield server, layer, target
    finally:
        await layer.close()
        if server.server is not None:
            server.server.close()


async def connect_then_drop(server: Server, layer: TransportLayer, target: Target) -> Source:
    """Open a connection, then let the server close it; returns the first flow."""
    first = await layer.send(options(), target)
    await server.wait_peers(1)
    await server.drop_all()  # the proxy goes away: it closes first
    for _ in range(100):
        if layer.find_connection("TCP", "127.0.0.1", server.port) is None:
            break
        await asyncio.sleep(0.05)
    return first


async def test_reconnect_after_the_peer_closed_uses_the_same_local_port(peer):
    server, layer, target = peer
    first = await connect_then_drop(server, layer, target)
    second = await layer.send(options(), target)
    await server.wait_peers(2)
    assert second.connection_id != first.connection_id
    assert second.local == first.local
    assert server.peers[1] == server.peers[0]


async def test_reconnect_after_we_closed_falls_back_to_another_port(peer):
    """Our side of a connection we closed waits in TIME_WAIT: that port cannot reach the same
    peer again for a while, so the new connection takes another one (and still works)."""
    server, layer, target = peer
    first = await layer.send(options(), target)
    await server.wait_peers(1)
    conn = layer._connections[first.connection_id or 0]
    conn.close()  # we close first
    await asyncio.wait_for(conn.closed, 5)
    second = await layer.send(options(), target)
    await server.wait_peers(2)
    assert second.local != first.local


async def test_without_reuse_any_port_is_taken(peer):
    server, layer, target = peer
    layer.reuse_local_port = False
    first = await connect_then_drop(server, layer, target)
    second = await layer.send(options(), target)
    await server.wait_peers(2)
    assert second.local != first.local


async def test_invite_on_a_connection_reset_before_any_response_fails_at_once():
    """RFC 3261 §18.4 in the asyncio UA: the server resets the connection carrying our
    INVITE; the call fails (408, a transport error) now rather than at Timer B (32 s)."""

    async def reset_on_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.transport.abort()

    server = await asyncio.start_server(reset_on_data, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ua = AsyncUserAgent(
        UAConfig(user="alice", domain="example.org", transport="tcp", local_port=0),
        binding_check_interval=None,
    )
    await ua.start("127.0.0.1", 0)
    try:
        with pytest.raises(CallError) as failed:
            await ua.invite(f"sip:bob@127.0.0.1:{port};transport=tcp", offer(30060), timeout=10)
        assert failed.value.status == 408
    finally:
        await ua.close()
        server.close()
