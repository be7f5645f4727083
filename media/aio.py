"""The asyncio shell around :class:`~media.session.RtpSession`: sockets, clocks, tasks.

:class:`MediaStream` drives one sans-I/O session over a datagram transport:

* the send task awaits the source's next frame (a microphone's capture clock, or the
  :class:`~media.sources.Pacer` of a file or tone), hands it to ``send_frame`` and sends the
  RTP datagrams. Frames the source dropped meanwhile (the pacer skipped ticks after a stall,
  the microphone's ring overflowed: :func:`source_dropped_frames`) become a gap in the RTP
  timestamps with the marker bit on the next packet (``skip_frames``, RFC 3550 §5.1), so
  the receiver conceals the gap instead of falling behind;
* the playout task takes ``playout(now)`` from the jitter buffer and writes it to the sink
  whenever a sound card sink (:class:`~media.sources.ClockedSink`) wants a frame, or else
  on its own drift-free 20 ms pacer (files, null sink);
* the RTCP task sleeps until ``get_timer()`` and runs ``handle_timer``; queued RTCP goes out
  at once (component 1 with rtcp-mux, else the RTCP transport, RFC 5761);
* received datagrams go straight to ``receive``; session events (DTMF, SSRC changes, BYE)
  are put on :attr:`MediaStream.events` and passed to ``on_event``;
* :attr:`MediaStream.sent_level` / :attr:`~MediaStream.played_level` meter both directions
  (:class:`~media.analysis.LevelMeter`; ``active_frames`` tells that sound flowed);
* :meth:`MediaStream.stop` sends the RTCP BYE (RFC 3550 §6.6) and closes source and sink.

A transport is anything with ``send(data)`` and a settable ``on_receive`` callback (the
:class:`DatagramTransport` protocol): an ICE component hands one over, and
:class:`UdpTransport` is the plain-UDP one for peers without ICE, with symmetric RTP
(RFC 4961): it answers to where the peer's packets come from, learning the remote address
from the first packet when it was not known (or latching once onto the real source when
the SDP address was behind a NAT).

The session's ``now`` is ``time.monotonic()``; build the session with
``ntp_offset=time.time() - time.monotonic()`` so its sender reports carry wall-clock time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from .analysis import LevelMeter
from .session import RTCP_COMPONENT, RtpSession, SessionEvent
from .sources import AudioSink, AudioSource, ClockedSink, Pacer
from .stats import Stats

__all__ = [
    "Address",
    "DatagramTransport",
    "MediaStream",
    "UdpTransport",
    "open_udp_transport",
    "source_dropped_frames",
]

log = logging.getLogger("media.aio")

Address = tuple[str, int]


class DatagramTransport(Protocol):
    """A connected datagram path to the peer (an ICE component, :class:`UdpTransport`)."""

    on_receive: Callable[[bytes], None] | None

    def send(self, data: bytes) -> None: ...


class UdpTransport(asyncio.DatagramProtocol):
    """Plain RTP over one UDP socket with symmetric RTP (RFC 4961).

    With ``remote`` None nothing is sent until the first packet arrives; its source becomes
    the remote address. With ``latch`` (the default) the remote address also follows the
    first packet when it comes from elsewhere than the signalled address (a peer behind a
    NAT), once; after that, packets from other addresses are dropped (:attr:`foreign`).
    """

    def __init__(self, remote: Address | None = None, *, latch: bool = True) -> None:
        self.remote = remote
        self.latch = latch
        self.on_receive: Callable[[bytes], None] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._latched = False
        self.sent = 0
        self.received = 0
        self.foreign = 0
        self.unsent = 0

    # asyncio.DatagramProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        source = (str(addr[0]), int(addr[1]))
        if source != self.remote:
            if self.remote is None or (self.latch and not self._latched):
                log.info("RTP peer at %s:%d (was %s)", source[0], source[1], self.remote)
                self.remote = source
                self._latched = True
            else:
                self.foreign += 1
                return
        else:
            self._latched = True
        self.received += 1
        callback = self.on_receive
        if callback is not None:
            try:
                callback(data)
            except Exception:  # a malformed packet must never kill the socket
                log.exception("RTP receive handler failed")

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)

    # DatagramTransport

    def send(self, data: bytes) -> None:
        if self._transport is None or self.remote is None or self._transport.is_closing():
            self.unsent += 1
            return
        self._transport.sendto(data, self.remote)
        self.sent += 1

    @property
    def local_address(self) -> Address:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_udp_transport(
    local: Address = ("127.0.0.1", 0), remote: Address | None = None, *, latch: bool = True
) -> UdpTransport:
    """Bind a UDP socket at ``local`` and return its :class:`UdpTransport`."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: UdpTransport(remote, latch=latch), local_addr=local
    )
    return protocol


def source_dropped_frames(source: AudioSource) -> int:
    """How many frames ``source`` has dropped so far: its ``dropped_frames`` (paced file and
    tone sources: ticks their :class:`~media.sources.Pacer` skipped after a stall), else the
    overruns of its capture ring (:class:`~media.audio.Microphone`: frames overwritten
    because the event loop did not read them in time), else 0."""
    dropped = getattr(source, "dropped_frames", None)
    if isinstance(dropped, int):
        return dropped
    overruns = getattr(getattr(source, "ring", None), "overruns", None)
    return overruns if isinstance(overruns, int) else 0


class MediaStream:
    """Runs an :class:`RtpSession` between a source, a sink and a transport (see module).

    The source and sink must work at the session's ``sample_rate`` and ``frame_samples``.
    ``rtcp_transport`` is needed only without rtcp-mux.
    """

    def __init__(
        self,
        session: RtpSession,
        transport: DatagramTransport,
        source: AudioSource,
        sink: AudioSink,
        *,
        rtcp_transport: DatagramTransport | None = None,
        on_event: Callable[[SessionEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for what, end in (("source", source), ("sink", sink)):
            if end.sample_rate != session.sample_rate or end.frame_samples != session.frame_samples:
                raise ValueError(
                    f"the {what} works at {end.sample_rate} Hz x {end.frame_samples} samples, "
                    f"the session at {session.sample_rate} Hz x {session.frame_samples}"
                )
        self.session = session
        self.transport = transport
        self.rtcp_transport = rtcp_transport
        self.source = source
        self.sink = sink
        self.on_event = on_event
        self.clock = clock
        self.events: asyncio.Queue[SessionEvent] = asyncio.Queue()
        self.playout_pacer = Pacer(session.frame_samples / session.sample_rate, clock=clock)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self.frames_sent = 0
        self.frames_played = 0
        #: frames the source dropped, sent as gaps in the RTP timestamps (``skip_frames``)
        self.frames_skipped = 0
        self._source_dropped = 0
        #: levels of what is sent and what is played (meters, "did audio flow" checks)
        self.sent_level = LevelMeter()
        self.played_level = LevelMeter()
        self._frame_s = session.frame_samples / session.sample_rate
        self.started_at: float | None = None

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not self._stopped

    def start(self) -> None:
        """Open the source and sink and start the send, playout and RTCP tasks."""
        if self._tasks or self._stopped:
            return
        self.started_at = self.clock()
        self.source.start()
        self.sink.start()
        self._source_dropped = source_dropped_frames(self.source)
        self.transport.on_receive = self._on_rtp
        if self.rtcp_transport is not None:
            self.rtcp_transport.on_receive = self._on_rtcp
        loops: tuple[tuple[Coroutine[Any, Any, None], str], ...]
        if self._paced_source() is not None and not isinstance(self.sink, ClockedSink):
            # one timer for both directions: a file or tone source and a file or null sink
            # tick on the same 20 ms grid, so a single task wakes up once per frame
            loops = ((self._paced_loop(), "send+playout"), (self._rtcp_loop(), "rtcp"))
        else:
            loops = (
                (self._send_loop(), "send"),
                (self._playout_loop(), "playout"),
                (self._rtcp_loop(), "rtcp"),
            )
        for coro, name in loops:
            task = asyncio.create_task(coro, name=f"media-{name}")
            task.add_done_callback(self._task_done)
            self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("media task %s failed", task.get_name(), exc_info=task.exception())

    # --- loops ---------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            frame = await self.source.read()
            dropped = source_dropped_frames(self.source)
            if dropped > self._source_dropped:
                gap = dropped - self._source_dropped
                log.info("the audio source dropped %d frames; leaving a gap in the stream", gap)
                self.session.skip_frames(gap)
                self.frames_skipped += gap
            self._source_dropped = dropped
            for datagram in self.session.send_frame(frame, self.clock()):
                self.transport.send(datagram)
            self.frames_sent += 1
            self.sent_level.update(frame, self._frame_s)

    def _paced_source(self) -> Pacer | None:
        """The pacer of a source that makes its frames on demand (files, tones, silence)."""
        pacer = getattr(self.source, "pacer", None)
        if isinstance(pacer, Pacer) and callable(getattr(self.source, "next_frame", None)):
            return pacer
        return None

    async def _paced_loop(self) -> None:
        """Send and play out on the source's pacer (see :meth:`start`)."""
        source = self.source
        pacer = self._paced_source()
        assert pacer is not None
        next_frame = source.next_frame  # type: ignore[attr-defined]
        session, transport, sink, clock = self.session, self.transport, self.sink, self.clock
        frame_s = self._frame_s
        while True:
            await pacer.wait()
            frame = next_frame()
            dropped = pacer.skipped
            if dropped > self._source_dropped:
                gap = dropped - self._source_dropped
                log.info("the audio source dropped %d frames; leaving a gap in the stream", gap)
                session.skip_frames(gap)
                self.frames_skipped += gap
                self._source_dropped = dropped
            now = clock()
            for datagram in session.send_frame(frame, now):
                transport.send(datagram)
            self.frames_sent += 1
            self.sent_level.update(frame, frame_s)
            played = session.playout(now)
            sink.write(played)
            self.frames_played += 1
            self.played_level.update(played, frame_s)

    async def _playout_loop(self) -> None:
        pacer = self.playout_pacer
        sink = self.sink
        clocked = sink if isinstance(sink, ClockedSink) else None
        while True:
            if clocked is not None:
                await clocked.wait_for_space()
            else:
                await pacer.wait()
            frame = self.session.playout(self.clock())
            self.sink.write(frame)
            self.frames_played += 1
            self.played_level.update(frame, self._frame_s)

    async def _rtcp_loop(self) -> None:
        while True:
            due = self.session.get_timer()
            if due is None:
                return
            delay = due - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self.session.handle_timer(self.clock())
            self._flush()

    # --- receiving -----------------------------------------------------------------------

    def _on_rtp(self, data: bytes) -> None:
        self._receive(data, 1)

    def _on_rtcp(self, data: bytes) -> None:
        self._receive(data, RTCP_COMPONENT)

    def _receive(self, data: bytes, component: int) -> None:
        if self._stopped:
            return
        self.session.receive(data, self.clock(), component)
        self._flush()
        while (event := self.session.next_event()) is not None:
            self.events.put_nowait(event)
            if self.on_event is not None:
                self.on_event(event)

    def _flush(self) -> None:
        for data, component in self.session.datagrams_to_send():
            if component == RTCP_COMPONENT and self.rtcp_transport is not None:
                self.rtcp_transport.send(data)
            else:
                self.transport.send(data)

    # --- control -------------------------------------------------------------------------

    def send_dtmf(self, digits: str) -> None:
        """Queue RFC 4733 telephone-events (sent in place of audio)."""
        self.session.send_dtmf(digits)

    def stats(self) -> Stats:
        return self.session.stats(self.clock())

    async def stop(self, reason: str | None = None) -> Stats:
        """Stop the tasks, send the RTCP BYE, close the source and sink; the final stats."""
        if not self._stopped:
            self._stopped = True
            tasks, self._tasks = self._tasks, []
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            now = self.clock()
            self.session.close(now, reason)
            self._flush()
            self.transport.on_receive = None
            if self.rtcp_transport is not None:
                self.rtcp_transport.on_receive = None
            self.source.close()
            self.sink.close()
        return self.session.stats(self.clock())
