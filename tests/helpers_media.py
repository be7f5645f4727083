"""Shared by the media tests: stand-ins for a sound-card stream and a datagram transport, and
the tone a recording holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from media.analysis import dominant_frequency
from media.sources import load_wav

if TYPE_CHECKING:
    from tests.peers.baresip import Baresip


class FakeSoundStream:
    """Stands in for sounddevice.InputStream/OutputStream: keeps the callback (and the other
    keyword arguments) for the test to call; every instance is kept in ``instances``."""

    instances: ClassVar[list[FakeSoundStream]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.callback = kwargs["callback"]
        self.started = False
        self.closed = False
        FakeSoundStream.instances.append(self)

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


class ListTransport:
    """A datagram transport that keeps what is sent (``on_receive`` is set by the stream)."""

    def __init__(self) -> None:
        self.on_receive: Callable[[bytes], None] | None = None
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def dominant_tone(path: Path) -> float:
    """The dominant frequency of a WAV recording longer than half a second, its first 200 ms
    (jitter-buffer fill, codec start-up) skipped."""
    samples, rate = load_wav(path)
    assert len(samples) > rate // 2, f"{path} holds only {len(samples)} samples"
    return dominant_frequency(samples[rate // 5 :], rate)


def baresip_heard(phone: Baresip, timeout: float = 10.0) -> float:
    """The dominant tone of what a :class:`~tests.peers.baresip.Baresip` peer decoded in its
    (last) call: its ``sndfile`` dump, once closed."""
    phone.wait_for_log(r"audio: destroyed", timeout=timeout)
    dumps = sorted(phone.workdir.glob("dump-*-dec.wav"))
    assert dumps, "baresip dumped no received audio:\n" + phone.log()[-3000:]
    return dominant_tone(dumps[-1])
