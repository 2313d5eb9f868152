"""Events a :class:`~core.wire.connection.PeerConnection` returns beyond the wire messages.

The wire messages themselves (``core.wire.messages``) are events too, as in
h11; these add the handshake steps and a few facts that are not one message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..errors import RemoteProtocolError
from .extensions import ExtensionHandshake
from .messages import Message, Request, Reserved

__all__ = [
    "NEED_DATA",
    "Event",
    "ExtendedMessage",
    "HandshakeReceived",
    "PeerTimeout",
    "RemoteInfoHash",
    "RequestsDropped",
    "Sentinel",
]


class PeerTimeout(RemoteProtocolError):
    """The handshake did not finish in time, or the peer went silent."""


class Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


#: Returned by ``next_event()`` when the buffered bytes hold no complete message.
NEED_DATA = Sentinel.NEED_DATA


@dataclass(frozen=True, slots=True)
class RemoteInfoHash:
    """Receiver side: the remote named the torrent it wants.  Call ``accept()`` or close."""

    info_hash: bytes
    reserved: Reserved


@dataclass(frozen=True, slots=True)
class HandshakeReceived:
    """The remote's handshake is complete; ``fast``/``extended`` are the negotiated features."""

    info_hash: bytes
    peer_id: bytes
    reserved: Reserved
    fast: bool
    extended: bool


@dataclass(frozen=True, slots=True)
class RequestsDropped:
    """Without the fast extension, a choke voids all our outstanding requests (BEP 3)."""

    requests: tuple[Request, ...]


@dataclass(frozen=True, slots=True)
class ExtendedMessage:
    """A BEP 10 message by extension name (our name for it; the ids are per-peer)."""

    name: str
    payload: bytes = field(repr=False)
    ext_id: int = 0


Event = (
    Message
    | RemoteInfoHash
    | HandshakeReceived
    | RequestsDropped
    | ExtensionHandshake
    | ExtendedMessage
)
