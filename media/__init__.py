"""Media engine: RTP/RTCP (RFC 3550), Opus and G.711 codecs, jitter buffer, audio devices.

Imports neither ``sip`` nor ``ice``: it is handed a datagram transport.
"""

__all__: list[str] = []
