"""Benchmark: CPU cost of the media path and how many calls one core carries in real time.

Run: ``.venv/bin/python -m bench.media_cpu`` (about 40 s; ``--quick`` for a shorter run,
``--baresip`` to add a side-by-side measurement of baresip, about 15 s more).

1. Per 20 ms frame, in µs of CPU (best of several repeats), for Opus (32 kbit/s mono) and
   PCMU: *send* = ``RtpSession.send_frame`` (encode + packetize) and *receive* =
   ``RtpSession.receive`` + ``playout`` (depacketize + jitter buffer + decode), on a virtual
   clock; plus the share of one core a call would use for the codec path alone.
2. Real time: pairs of :class:`media.aio.MediaStream` over UDP sockets on 127.0.0.1 in one
   asyncio loop (one core), each stream playing a looping WAV file and discarding what it
   receives. A run with 8 streams measures the CPU per stream; the next run aims at 80 % of a
   core and the count then moves up or down. A count is *sustained* when the process used
   under 90 % of a core, every stream sent at least 97 % of its frames and the receivers saw
   at most 0.5 % late packets. Each stream is one end of a full-duplex call, i.e. what one
   softphone process does per call. Other load on the machine lowers the result: when the
   process gets less than a core, streams fall behind at a low "CPU %" (the load average is
   printed for that reason).
3. Per call end: the CPU per frame of one stream (best of a few 8-stream runs), split into
   the codec path (part 1), the bare asyncio timer + socket cost a stream needs anyway, and
   the media glue in between. ``--baresip``: two baresip processes in a call on 127.0.0.1,
   the CPU per 20 ms frame of one end next to ours. Not like for like: see the printed notes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # allow ``python bench/media_cpu.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from media.aio import MediaStream, UdpTransport, open_udp_transport
from media.session import CodecDescription, RtpSession
from media.sources import NullSink, WavFileSource, save_wav

CODECS = {
    "opus": CodecDescription("opus", 111, 48000, 2, {"useinbandfec": "1"}),
    "pcmu": CodecDescription("PCMU", 0, 8000),
}
FRAME_S = 0.02
MAX_PAIRS = 200


def speech_like(rate: int, seconds: float, seed: int = 7) -> np.ndarray:
    """Harmonics of a gliding pitch, syllable-like amplitude modulation, a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12) if k * 180 < rate / 2)
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 0.5
    x = 6000 * envelope * voice + rng.normal(0, 300, len(t))
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


# --- 1. CPU per frame -----------------------------------------------------------------------


def per_frame_us(codec: CodecDescription, frames: int, repeat: int) -> tuple[float, float]:
    rate = codec.clock_rate
    n = rate // 50
    audio = speech_like(rate, frames * FRAME_S + 0.1)
    pcm = [audio[i * n : (i + 1) * n] for i in range(frames)]
    best_send = best_recv = float("inf")
    for r in range(repeat):
        tx = RtpSession(codec, rng=random.Random(r))
        rx = RtpSession(codec, rng=random.Random(r + 100))
        t0 = time.process_time()
        packets = [tx.send_frame(frame, i * FRAME_S) for i, frame in enumerate(pcm)]
        t1 = time.process_time()
        for i, datagrams in enumerate(packets):
            now = i * FRAME_S + 0.001
            for d in datagrams:
                rx.receive(d, now)
            rx.playout(now)
        t2 = time.process_time()
        best_send = min(best_send, (t1 - t0) / frames * 1e6)
        best_recv = min(best_recv, (t2 - t1) / frames * 1e6)
    return best_send, best_recv


# --- 2. real time ---------------------------------------------------------------------------


@dataclass
class RunResult:
    streams: int
    cpu_share: float  # of one core
    min_sent_ratio: float
    late_packets: int
    concealed: int
    pacer_skips: int
    received: int

    @property
    def sustained(self) -> bool:
        return (
            self.cpu_share < 0.9
            and self.min_sent_ratio >= 0.97
            and self.late_packets <= 0.005 * self.received
        )


async def real_time(codec: CodecDescription, pairs: int, seconds: float, wav: Path) -> RunResult:
    transports: list[UdpTransport] = []
    streams: list[MediaStream] = []
    for p in range(pairs):
        ta = await open_udp_transport(("127.0.0.1", 0))
        tb = await open_udp_transport(("127.0.0.1", 0), remote=ta.local_address)
        ta.remote = tb.local_address
        transports += [ta, tb]
        for k, t in enumerate((ta, tb)):
            session = RtpSession(codec, rng=random.Random(2 * p + k), now=time.monotonic())
            rate = session.sample_rate
            streams.append(
                MediaStream(session, t, WavFileSource(wav, rate, loop=True), NullSink(rate))
            )
    wall0, cpu0 = time.monotonic(), time.process_time()
    for s in streams:  # calls start at random moments: spread their 20 ms phases
        s.start()
        await asyncio.sleep(FRAME_S / len(streams))
    await asyncio.sleep(seconds - FRAME_S)
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    stats = [await s.stop() for s in streams]
    for t in transports:
        t.close()
    expected = wall / FRAME_S
    skips = sum(s.playout_pacer.skipped for s in streams)
    skips += sum(getattr(getattr(s.source, "pacer", None), "skipped", 0) for s in streams)
    return RunResult(
        streams=len(streams),
        cpu_share=cpu / wall,
        min_sent_ratio=min(s.frames_sent for s in streams) / expected,
        late_packets=sum(st.late_packets for st in stats),
        concealed=sum(st.concealed_frames for st in stats),
        pacer_skips=skips,
        received=sum(st.packets_received for st in stats),
    )


def find_capacity(codec: CodecDescription, seconds: float, wav: Path, runs: int) -> list[RunResult]:
    """Calibrate with a few streams, aim at 80 % of a core, then step up or down."""
    calibration = asyncio.run(real_time(codec, 4, seconds, wav))
    results = [calibration]
    per_stream = max(calibration.cpu_share / calibration.streams, 1e-4)
    pairs = max(1, min(MAX_PAIRS, round(0.8 / per_stream / 2)))
    tried: dict[int, bool] = {4: calibration.sustained}
    for _ in range(runs - 1):
        if pairs in tried:
            break
        result = asyncio.run(real_time(codec, pairs, seconds, wav))
        results.append(result)
        tried[pairs] = result.sustained
        good = [p for p, ok in tried.items() if ok]
        bad = [p for p, ok in tried.items() if not ok]
        if result.sustained:
            upper = min((p for p in bad if p > pairs), default=None)
            pairs = (
                (pairs + upper) // 2 if upper else min(MAX_PAIRS, max(pairs + 1, pairs * 5 // 4))
            )
        else:
            lower = max((p for p in good if p < pairs), default=None)
            pairs = (pairs + lower) // 2 if lower else max(1, pairs * 3 // 4)
    return results


async def event_loop_floor(streams: int, seconds: float) -> float:
    """CPU µs per 20 ms frame and stream of the bare asyncio machinery a stream needs: one
    task per stream waking on a drift-free 20 ms grid and sending a 100-byte datagram to its
    pair, which receives it (no media code at all). What no media optimisation can remove."""
    loop = asyncio.get_running_loop()

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
            pass

    endpoints = [
        (await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0)))[0]
        for _ in range(streams)
    ]
    addresses = [t.get_extra_info("sockname") for t in endpoints]
    payload = bytes(100)

    async def tick(k: int, t0: float) -> None:
        transport, peer = endpoints[k], addresses[k ^ 1]
        n = 0
        while True:
            delay = t0 + n * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            transport.sendto(payload, peer)
            n += 1

    wall0, cpu0 = time.monotonic(), time.process_time()
    tasks = []
    for k in range(streams):
        tasks.append(asyncio.create_task(tick(k, time.monotonic())))
        await asyncio.sleep(FRAME_S / streams)
    await asyncio.sleep(seconds - FRAME_S)
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for transport in endpoints:
        transport.close()
    return cpu / wall / streams * FRAME_S * 1e6


def stream_us_per_frame(codec: CodecDescription, seconds: float, wav: Path, repeat: int) -> float:
    """CPU µs per 20 ms frame of one stream in 8-stream runs (best of ``repeat``)."""
    best = float("inf")
    for _ in range(repeat):
        result = asyncio.run(real_time(codec, 4, seconds, wav))
        best = min(best, result.cpu_share / result.streams * FRAME_S * 1e6)
    return best


# --- 3. baresip side by side ----------------------------------------------------------------


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def baresip_us_per_frame(name: str, seconds: float) -> float | None:
    """CPU µs per 20 ms frame of one baresip endpoint in a call with another (or None).

    Two baresip processes (the test peer of tests/peers/baresip.py: ausine source, aubridge
    null player, sndfile WAV dumps, verbose log) call each other on 127.0.0.1."""
    try:
        from tests.peers.baresip import Baresip, baresip_binary
    except ImportError:
        return None
    if baresip_binary() is None:
        return None
    codecs = {"opus": "opus/48000/2", "pcmu": "PCMU/8000/1"}[name]
    with tempfile.TemporaryDirectory() as tmp:
        bob = Baresip(Path(tmp) / "bob", user="bob", audio_codecs=codecs)
        alice = Baresip(Path(tmp) / "alice", user="alice", audio_codecs=codecs)
        bob.start()
        try:
            alice.start()
            try:
                alice.dial(f"sip:bob@127.0.0.1:{bob.port}")
                alice.wait_for_log(r"call established|Call established", timeout=10)
                time.sleep(1.0)
                pids = [p._process.pid for p in (alice, bob) if p._process is not None]
                cpu0, t0 = [_process_cpu(pid) for pid in pids], time.monotonic()
                time.sleep(seconds)
                cpu1, wall = [_process_cpu(pid) for pid in pids], time.monotonic() - t0
                alice.hangup()
            finally:
                alice.stop()
        finally:
            bob.stop()
    per_endpoint = sum(b - a for a, b in zip(cpu0, cpu1, strict=True)) / len(pids)
    return per_endpoint / (wall / FRAME_S) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames, shorter runs")
    parser.add_argument("--codecs", default="opus,pcmu")
    parser.add_argument(
        "--baresip", action="store_true", help="also measure two baresip processes in a call"
    )
    args = parser.parse_args(argv)
    frames, repeat = (250, 2) if args.quick else (1000, 3)
    seconds, runs = (2.0, 2) if args.quick else (3.0, 4)

    print(f"CPU per 20 ms frame (best of {repeat} x {frames} frames, process time)")
    print(f"{'codec':<8}{'send µs':>10}{'receive µs':>12}{'call % core':>13}{'calls/core':>12}")
    estimates: dict[str, float] = {}
    for name in args.codecs.split(","):
        send_us, recv_us = per_frame_us(CODECS[name], frames, repeat)
        per_call = send_us + recv_us
        estimates[name] = 20000 / per_call
        print(
            f"{name:<8}{send_us:>10.1f}{recv_us:>12.1f}{100 * per_call / 20000:>12.2f}%"
            f"{estimates[name]:>12.0f}"
        )
    print("(codec path only: the upper bound for the calls one core could carry)\n")

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"Real time: stream pairs over UDP on 127.0.0.1, one asyncio loop, {seconds:g} s each")
    print(f"(load average {load} on {os.cpu_count()} CPUs)")
    print(
        f"{'codec':<8}{'streams':>8}{'CPU %':>8}{'sent %':>8}{'late':>6}{'PLC':>6}"
        f"{'skips':>7}  verdict"
    )
    per_stream: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        best: dict[str, int] = {}
        for name in args.codecs.split(","):
            codec = CODECS[name]
            wav = Path(tmp) / f"{name}.wav"
            save_wav(wav, speech_like(codec.clock_rate, 5.0), codec.clock_rate)
            runs_of = find_capacity(codec, seconds, wav, runs)
            for r in runs_of:
                verdict = "sustained" if r.sustained else "overloaded"
                print(
                    f"{name:<8}{r.streams:>8}{100 * r.cpu_share:>8.0f}"
                    f"{100 * r.min_sent_ratio:>8.1f}{r.late_packets:>6}{r.concealed:>6}"
                    f"{r.pacer_skips:>7}  {verdict}"
                )
                if r.sustained:
                    best[name] = max(best.get(name, 0), r.streams)
            # the per-stream cost, best of a few 8-stream runs (a single run is noisy)
            per_stream[name] = min(
                runs_of[0].cpu_share / runs_of[0].streams * FRAME_S * 1e6,
                stream_us_per_frame(codec, seconds, wav, repeat),
            )
    print()
    for name in args.codecs.split(","):
        n = best.get(name)
        text = f"{n} concurrent full-duplex calls" if n else "not even the smallest run"
        print(f"{name}: one core sustained {text} (one stream = one end of a call)")

    floor = min(asyncio.run(event_loop_floor(8, seconds)) for _ in range(repeat))
    print(
        "\nOne call end: CPU µs per 20 ms frame (best of 8-stream runs) and where it goes"
        + (", next to baresip" if args.baresip else "")
    )
    print(
        f"{'codec':<8}{'softphone':>11}{'% core':>8}{'codec':>8}{'loop+socket':>13}"
        f"{'media glue':>12}" + (f"{'baresip':>10}" if args.baresip else "")
    )
    for name in args.codecs.split(","):
        ours = per_stream[name]
        codec_us = 20000 / estimates[name]
        glue = ours - codec_us - floor
        line = (
            f"{name:<8}{ours:>11.0f}{100 * ours / 20000:>7.2f}%{codec_us:>8.0f}{floor:>13.0f}"
            f"{glue:>12.0f}"
        )
        if args.baresip:
            theirs = baresip_us_per_frame(name, seconds)
            line += "-".rjust(10) if theirs is None else f"{theirs:>10.0f}"
        print(line)
    print("(softphone: one stream of 8 in one asyncio loop, WAV source, null sink; codec: the")
    print(" RtpSession send + receive path of part 1; loop+socket: a bare asyncio task per stream")
    print(" with one timer, one sendto and one receive per frame; media glue: the rest, i.e.")
    print(" MediaStream/pacer/meters/sources and the codec running slower with 8 streams' state")
    print(" competing for the CPU caches than in the single-stream loop of part 1)")
    if args.baresip:
        print("(baresip: one process per end, sine source, null player, WAV dumps, -v log)")


if __name__ == "__main__":
    main()
