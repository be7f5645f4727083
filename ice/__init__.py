"""ICE (RFC 8445) with STUN (RFC 8489) and TURN (RFC 8656) clients, and RFC 8839 SDP attributes.

Sans-I/O protocol cores with a thin asyncio shell. Imports neither ``sip`` nor ``media``.
"""

__all__: list[str] = []
