"""TURN over a stream: splitting a byte stream into STUN messages and ChannelData frames.

Over TCP or TLS to the TURN server (RFC 8656 §3.1, RFC 6062) the client and server exchange a
stream of STUN messages and ChannelData messages.  There is no outer framing: a frame is
recognised by its first byte (0-3: STUN, 64-79: ChannelData; RFC 7983 §7) and delimited by the
length in its header (RFC 8489 §6.2.2: 20 + message length; RFC 8656 §12.5: 4 + data length,
padded to a multiple of 4 bytes over stream transports).

:class:`StreamFramer` is sans-I/O: ``feed(data)`` returns the complete frames so far (ChannelData
without its padding) and keeps the rest buffered.  A first byte that is neither STUN nor
ChannelData means the stream has lost framing; :class:`StunParseError` is raised and the
connection should be closed.

The ChannelData codec itself lives in :mod:`ice.stun` (``encode_channel_data``,
``parse_channel_data``); this module re-exports it with the channel number range.
"""

from __future__ import annotations

from ice.stun import (
    ChannelData,
    StunParseError,
    encode_channel_data,
    parse_channel_data,
)

__all__ = [
    "CHANNEL_MAX",
    "CHANNEL_MIN",
    "ChannelData",
    "StreamFramer",
    "encode_channel_data",
    "parse_channel_data",
]

CHANNEL_MIN = 0x4000
"""Lowest channel number (RFC 8656 §12)."""
CHANNEL_MAX = 0x4FFF
"""Highest channel number of RFC 8656 §12 (RFC 5766 allowed up to 0x7FFF; RFC 7983 took
0x5000-0x7FFF back for demultiplexing, so a client only ever binds 0x4000-0x4FFF)."""

_MAX_BUFFER = 0x10000 + 20


class StreamFramer:
    """Reassemble STUN and ChannelData frames from a TCP/TLS byte stream (RFC 8656 §12.5).

    >>> f = StreamFramer()
    >>> f.feed(encode_channel_data(0x4000, b"abc", pad=True)[:5])
    []
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet forming a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data`` and return every complete frame, in order.

        STUN frames are returned whole; ChannelData frames without their stream padding (so
        :func:`parse_channel_data` accepts them).  Raises :class:`StunParseError` if the stream
        does not start with a STUN or ChannelData header; the framer is then unusable.
        """
        buf = self._buffer
        buf += data
        frames: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            first = buf[pos]
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            if first < 4:
                if length & 3:
                    raise StunParseError("STUN message length on the stream is not a multiple of 4")
                total = 20 + length
                keep = total
            elif 64 <= first <= 79:
                keep = 4 + length
                total = keep + (-length & 3)
            else:
                raise StunParseError(f"stream lost framing (first byte {first:#04x})")
            if n - pos < total:
                break
            frames.append(bytes(buf[pos : pos + keep]))
            pos += total
        if pos:
            del buf[:pos]
        if len(buf) > _MAX_BUFFER:
            raise StunParseError("oversized frame on the stream")
        return frames
