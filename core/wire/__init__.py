"""The BitTorrent peer wire protocol, sans-IO: messages, extensions, the connection state machine.

``PeerConnection`` is what the asyncio driver (``core.net.peer_io``) feeds
bytes into; the message dataclasses are both its events and what it sends.

May import only ``core.formats``, ``core.errors`` and ``core.types``
(``tests/test_layering.py`` checks it): no asyncio, no sockets.
"""

from .connection import (
    NEED_DATA,
    Event,
    ExtendedMessage,
    HandshakeReceived,
    PeerConnection,
    PeerTimeout,
    RemoteInfoHash,
    RequestsDropped,
)
from .extensions import (
    UT_METADATA,
    UT_PEX,
    ExtensionHandshake,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_metadata_message,
    encode_metadata_message,
)
from .fast import allowed_fast_set
from .lengths import BLOCK_SIZE, Lengths, PieceSizes, block_error
from .messages import (
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    Extended,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Message,
    NotInterested,
    Piece,
    Port,
    Reject,
    Request,
    Reserved,
    Suggest,
    Unchoke,
)

__all__ = [
    "BLOCK_SIZE",
    "NEED_DATA",
    "UT_METADATA",
    "UT_PEX",
    "AllowedFast",
    "Bitfield",
    "Cancel",
    "Choke",
    "Event",
    "Extended",
    "ExtendedMessage",
    "ExtensionHandshake",
    "HandshakeReceived",
    "Have",
    "HaveAll",
    "HaveNone",
    "Interested",
    "KeepAlive",
    "Lengths",
    "Message",
    "MetadataData",
    "MetadataReject",
    "MetadataRequest",
    "NotInterested",
    "PeerConnection",
    "PeerTimeout",
    "Piece",
    "PieceSizes",
    "Port",
    "Reject",
    "RemoteInfoHash",
    "Request",
    "RequestsDropped",
    "Reserved",
    "Suggest",
    "Unchoke",
    "allowed_fast_set",
    "block_error",
    "decode_metadata_message",
    "encode_metadata_message",
]
