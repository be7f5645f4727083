"""RFC 3261 SIP user agent: messages, transports, transactions, dialogs, registration, SDP.

Sans-I/O protocol cores with a thin asyncio shell. Imports neither ``ice`` nor ``media``.
"""

__all__: list[str] = []
