"""Stand-ins shared by the media tests: a sound-card stream and a datagram transport."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar


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
