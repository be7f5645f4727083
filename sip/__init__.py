"""RFC 3261 SIP user agent: messages, transports, transactions, dialogs, registration, SDP.

Sans-I/O protocol cores with a thin asyncio shell. Imports neither ``ice`` nor ``media``.

The public API, by layer:

- messages: :func:`parse_message`, :class:`Request`, :class:`Response`, :class:`Headers`,
  :class:`SipURI`, :class:`NameAddr`, :class:`Via`, :class:`CSeq`, :func:`make_response`,
  :class:`StreamFramer` (RFC 3261 §7, §18.3); :func:`check_request` tells what a UAS must
  answer to a request that parses but is not acceptable (RFC 4475);
- SDP: :func:`parse_sdp` / :class:`SessionDescription` (RFC 8866) and :class:`OfferAnswer`
  (RFC 3264) with :class:`LocalMedia` and :class:`Negotiation`;
- protocol cores (sans-I/O, virtual-clock friendly): :class:`TransactionLayer` (RFC 3261 §17,
  RFC 6026) with :class:`TimerConfig`, :class:`DigestClient` (RFC 7616/8760), and
  :class:`UserAgent` (dialogs, INVITE sessions, registration) configured by :class:`UAConfig`;
- I/O: :class:`TransportLayer` (UDP/TCP/TLS, rport, keepalives), :func:`locate` (RFC 3263),
  and the asyncio user agent :class:`AsyncUserAgent` / :class:`AsyncCall`.

Parsers raise only this package's errors (:class:`SipParseError`, :class:`SdpParseError`,
:class:`AuthParseError`), all ``ValueError`` subclasses.
"""

from sip.aio import AsyncCall, AsyncUserAgent, CallError, RegistrationError
from sip.auth import AuthParseError, Credentials, DigestClient
from sip.headers import CSeq, Via
from sip.locate import LocateError, Target, locate
from sip.message import (
    Headers,
    Request,
    Response,
    SipParseError,
    StreamFramer,
    make_response,
    parse_message,
)
from sip.offer_answer import LocalMedia, NegotiatedMedia, Negotiation, OfferAnswer, OfferAnswerError
from sip.sdp import (
    CandidateAttribute,
    MediaDescription,
    SdpParseError,
    SessionDescription,
    parse_sdp,
)
from sip.timers import TimerConfig
from sip.transaction import TransactionLayer
from sip.transport import TlsConfig, TransportLayer
from sip.ua import UAConfig, UserAgent
from sip.uri import NameAddr, SipURI
from sip.validate import check_request

__all__ = [
    "AsyncCall",
    "AsyncUserAgent",
    "AuthParseError",
    "CSeq",
    "CallError",
    "CandidateAttribute",
    "Credentials",
    "DigestClient",
    "Headers",
    "LocalMedia",
    "LocateError",
    "MediaDescription",
    "NameAddr",
    "NegotiatedMedia",
    "Negotiation",
    "OfferAnswer",
    "OfferAnswerError",
    "RegistrationError",
    "Request",
    "Response",
    "SdpParseError",
    "SessionDescription",
    "SipParseError",
    "SipURI",
    "StreamFramer",
    "Target",
    "TimerConfig",
    "TlsConfig",
    "TransactionLayer",
    "TransportLayer",
    "UAConfig",
    "UserAgent",
    "Via",
    "check_request",
    "locate",
    "make_response",
    "parse_message",
    "parse_sdp",
]
