"""Peer wire messages (BEP 3, BEP 5, BEP 6, BEP 10): values, encoders, stateless decoders.

Each message is a frozen dataclass; the same classes are what
:class:`~core.wire.connection.PeerConnection` returns as events and accepts in
``send()``, as in h11.  This module knows nothing about connection state:
which messages are allowed when, and whether a PIECE was requested, is the
connection's job.

Encoding uses precompiled :mod:`struct` formats and decoding works on a
buffer plus an offset (``unpack_from``), so a PIECE costs a handful of Python
operations whatever its size and its payload is copied exactly once.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from bitarray import bitarray

from ..errors import RemoteProtocolError
from .lengths import BLOCK_SIZE

__all__ = [
    "BLOCK_SIZE",
    "HANDSHAKE_HEADER_LENGTH",
    "HANDSHAKE_LENGTH",
    "MAX_EXTENDED_PAYLOAD",
    "MAX_UNKNOWN_BITFIELD",
    "PROTOCOL_HEADER",
    "AllowedFast",
    "Bitfield",
    "Cancel",
    "Choke",
    "Extended",
    "Have",
    "HaveAll",
    "HaveNone",
    "Interested",
    "KeepAlive",
    "Message",
    "MsgId",
    "NotInterested",
    "Piece",
    "Port",
    "Reject",
    "Request",
    "Reserved",
    "Suggest",
    "Unchoke",
    "decode_handshake",
    "decode_message",
    "encode",
    "encode_handshake",
    "encode_piece_header",
]

#: ``<pstrlen=19><pstr>`` that opens every BEP 3 handshake.
PROTOCOL_HEADER = b"\x13BitTorrent protocol"
#: Protocol header + 8 reserved bytes + 20-byte info-hash: enough for a
#: receiver to decide whether it serves the torrent.
HANDSHAKE_HEADER_LENGTH = 48
#: The full handshake, with the 20-byte peer id.
HANDSHAKE_LENGTH = 68
#: Largest payload of an extended (id 20) message we accept, after the
#: extended id byte.  ut_metadata data messages are 16 KiB plus a small dict
#: and ut_pex messages a few KiB; 1 MiB leaves room for odd extensions while
#: bounding what one peer can make us buffer.
MAX_EXTENDED_PAYLOAD = 1 << 20
#: Largest bitfield accepted before the piece count is known (magnet links):
#: 1 MiB is 8 Mi pieces, far beyond real torrents.  Checked exactly later.
MAX_UNKNOWN_BITFIELD = 1 << 20


class MsgId(enum.IntEnum):
    CHOKE = 0
    UNCHOKE = 1
    INTERESTED = 2
    NOT_INTERESTED = 3
    HAVE = 4
    BITFIELD = 5
    REQUEST = 6
    PIECE = 7
    CANCEL = 8
    PORT = 9
    SUGGEST = 13
    HAVE_ALL = 14
    HAVE_NONE = 15
    REJECT = 16
    ALLOWED_FAST = 17
    EXTENDED = 20


@dataclass(frozen=True, slots=True)
class Reserved:
    """The 8 reserved handshake bytes, with the bits we understand as properties."""

    raw: bytes = bytes(8)

    def __post_init__(self) -> None:
        if len(self.raw) != 8:
            raise ValueError("reserved bytes must be 8 long")

    @classmethod
    def make(cls, *, dht: bool = False, fast: bool = False, extended: bool = False) -> Reserved:
        raw = bytearray(8)
        if extended:
            raw[5] |= 0x10
        if fast:
            raw[7] |= 0x04
        if dht:
            raw[7] |= 0x01
        return cls(bytes(raw))

    @property
    def extended(self) -> bool:
        """BEP 10 extension protocol: reserved[5] & 0x10."""
        return bool(self.raw[5] & 0x10)

    @property
    def fast(self) -> bool:
        """BEP 6 fast extension: reserved[7] & 0x04."""
        return bool(self.raw[7] & 0x04)

    @property
    def dht(self) -> bool:
        """BEP 5 DHT: reserved[7] & 0x01."""
        return bool(self.raw[7] & 0x01)


# --- message values ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pass


@dataclass(frozen=True, slots=True)
class Choke:
    pass


@dataclass(frozen=True, slots=True)
class Unchoke:
    pass


@dataclass(frozen=True, slots=True)
class Interested:
    pass


@dataclass(frozen=True, slots=True)
class NotInterested:
    pass


@dataclass(frozen=True, slots=True)
class Have:
    index: int


@dataclass(frozen=True, slots=True)
class Bitfield:
    """A have-set: big-endian bitarray, bit i set when the sender has piece i.

    Decoded without a piece count, ``bits`` holds all ``8 * len(payload)`` bits;
    the connection trims it once it knows the count (and rejects set spare bits).
    """

    bits: bitarray


@dataclass(frozen=True, slots=True)
class Request:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Piece:
    """A block of data.

    ``unrequested_after_cancel`` is set by the connection on receipt when the
    block answers a request we had already cancelled (or that the peer's choke
    voided): it is legal, but the picker may already have it from elsewhere.
    """

    index: int
    begin: int
    data: bytes = field(repr=False)
    unrequested_after_cancel: bool = False


@dataclass(frozen=True, slots=True)
class Cancel:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Port:
    """BEP 5: the sender's DHT UDP port."""

    port: int


@dataclass(frozen=True, slots=True)
class Suggest:
    index: int


@dataclass(frozen=True, slots=True)
class HaveAll:
    pass


@dataclass(frozen=True, slots=True)
class HaveNone:
    pass


@dataclass(frozen=True, slots=True)
class Reject:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class AllowedFast:
    index: int


@dataclass(frozen=True, slots=True)
class Extended:
    """A raw BEP 10 message: the extended id byte and its payload.

    The connection turns these into named messages; this form is what goes on
    the wire.
    """

    ext_id: int
    payload: bytes = field(repr=False)


Message = (
    KeepAlive
    | Choke
    | Unchoke
    | Interested
    | NotInterested
    | Have
    | Bitfield
    | Request
    | Piece
    | Cancel
    | Port
    | Suggest
    | HaveAll
    | HaveNone
    | Reject
    | AllowedFast
    | Extended
)

# --- encoding ------------------------------------------------------------

_U32 = struct.Struct(">I")
_HDR = struct.Struct(">IB")
_HDR_I = struct.Struct(">IBI")
_HDR_II = struct.Struct(">IBII")
_HDR_III = struct.Struct(">IBIII")
_HDR_PORT = struct.Struct(">IBH")
_HDR_EXT = struct.Struct(">IBB")
_U32_MAX = 0xFFFFFFFF

_KEEPALIVE = b"\x00\x00\x00\x00"
_BARE = {
    Choke: _HDR.pack(1, MsgId.CHOKE),
    Unchoke: _HDR.pack(1, MsgId.UNCHOKE),
    Interested: _HDR.pack(1, MsgId.INTERESTED),
    NotInterested: _HDR.pack(1, MsgId.NOT_INTERESTED),
    HaveAll: _HDR.pack(1, MsgId.HAVE_ALL),
    HaveNone: _HDR.pack(1, MsgId.HAVE_NONE),
}


def _u32(value: int, what: str) -> int:
    if not 0 <= value <= _U32_MAX:
        raise ValueError(f"{what} {value} does not fit in 32 bits")
    return value


def encode_piece_header(index: int, begin: int, length: int) -> bytes:
    """The 13 bytes before a PIECE payload.

    A driver can ``writelines([header, data])`` and never concatenate (copy)
    the 16 KiB block.
    """
    return _HDR_II.pack(9 + length, MsgId.PIECE, _u32(index, "index"), _u32(begin, "begin"))


def _encode_triple(msg_id: int, index: int, begin: int, length: int) -> bytes:
    return _HDR_III.pack(
        13, msg_id, _u32(index, "index"), _u32(begin, "begin"), _u32(length, "length")
    )


def encode(msg: Message) -> bytes:
    """Encode one message with its length prefix.  Raises ValueError on unencodable fields."""
    bare = _BARE.get(type(msg))
    if bare is not None:
        return bare
    if isinstance(msg, KeepAlive):
        return _KEEPALIVE
    if isinstance(msg, Have):
        return _HDR_I.pack(5, MsgId.HAVE, _u32(msg.index, "index"))
    if isinstance(msg, Request):
        return _encode_triple(MsgId.REQUEST, msg.index, msg.begin, msg.length)
    if isinstance(msg, Piece):
        return encode_piece_header(msg.index, msg.begin, len(msg.data)) + msg.data
    if isinstance(msg, Cancel):
        return _encode_triple(MsgId.CANCEL, msg.index, msg.begin, msg.length)
    if isinstance(msg, Reject):
        return _encode_triple(MsgId.REJECT, msg.index, msg.begin, msg.length)
    if isinstance(msg, Suggest):
        return _HDR_I.pack(5, MsgId.SUGGEST, _u32(msg.index, "index"))
    if isinstance(msg, AllowedFast):
        return _HDR_I.pack(5, MsgId.ALLOWED_FAST, _u32(msg.index, "index"))
    if isinstance(msg, Port):
        if not 0 <= msg.port <= 0xFFFF:
            raise ValueError(f"port {msg.port} out of range")
        return _HDR_PORT.pack(3, MsgId.PORT, msg.port)
    if isinstance(msg, Bitfield):
        payload = msg.bits.tobytes()  # big-endian, spare bits zero-padded
        return _HDR.pack(1 + len(payload), MsgId.BITFIELD) + payload
    if isinstance(msg, Extended):
        if not 0 <= msg.ext_id <= 0xFF:
            raise ValueError(f"extended id {msg.ext_id} out of range")
        return _HDR_EXT.pack(2 + len(msg.payload), MsgId.EXTENDED, msg.ext_id) + msg.payload
    raise TypeError(f"not a wire message: {msg!r}")


def encode_handshake(info_hash: bytes, peer_id: bytes, reserved: Reserved) -> bytes:
    if len(info_hash) != 20 or len(peer_id) != 20:
        raise ValueError("info-hash and peer id must be 20 bytes each")
    return PROTOCOL_HEADER + reserved.raw + info_hash + peer_id


def decode_handshake(data: bytes | bytearray | memoryview) -> tuple[Reserved, bytes, bytes | None]:
    """Parse a handshake header (48 bytes) or a full handshake (68 bytes).

    Returns ``(reserved, info_hash, peer_id or None)``.
    """
    if len(data) < HANDSHAKE_HEADER_LENGTH:
        raise RemoteProtocolError("handshake too short")
    view = memoryview(data)
    if view[:20] != PROTOCOL_HEADER:
        raise RemoteProtocolError("not a BitTorrent handshake")
    reserved = Reserved(bytes(view[20:28]))
    info_hash = bytes(view[28:48])
    peer_id = bytes(view[48:68]) if len(view) >= HANDSHAKE_LENGTH else None
    return reserved, info_hash, peer_id


# --- decoding ------------------------------------------------------------
#
# A parser takes (buffer, offset of the first payload byte after the id,
# payload length) and trusts that the frame length was already checked
# against FIXED_PAYLOAD / the caller's limits.

Buffer = bytes | bytearray | memoryview
Parser = Callable[[Buffer, int, int], Message]

_I = struct.Struct(">I")
_II = struct.Struct(">II")
_III = struct.Struct(">III")
_H = struct.Struct(">H")

_CHOKE, _UNCHOKE, _INTERESTED, _NOT_INTERESTED = Choke(), Unchoke(), Interested(), NotInterested()
_HAVE_ALL, _HAVE_NONE = HaveAll(), HaveNone()


def _bitfield(buf: Buffer, pos: int, n: int) -> Bitfield:
    bits = bitarray(endian="big")
    bits.frombytes(bytes(buf[pos : pos + n]))
    return Bitfield(bits)


def _piece(buf: Buffer, pos: int, n: int) -> Piece:
    index, begin = _II.unpack_from(buf, pos)
    return Piece(index, begin, bytes(memoryview(buf)[pos + 8 : pos + n]))


def _extended(buf: Buffer, pos: int, n: int) -> Extended:
    return Extended(buf[pos], bytes(memoryview(buf)[pos + 1 : pos + n]))


PARSERS: dict[int, Parser] = {
    MsgId.CHOKE: lambda b, p, n: _CHOKE,
    MsgId.UNCHOKE: lambda b, p, n: _UNCHOKE,
    MsgId.INTERESTED: lambda b, p, n: _INTERESTED,
    MsgId.NOT_INTERESTED: lambda b, p, n: _NOT_INTERESTED,
    MsgId.HAVE: lambda b, p, n: Have(*_I.unpack_from(b, p)),
    MsgId.BITFIELD: _bitfield,
    MsgId.REQUEST: lambda b, p, n: Request(*_III.unpack_from(b, p)),
    MsgId.PIECE: _piece,
    MsgId.CANCEL: lambda b, p, n: Cancel(*_III.unpack_from(b, p)),
    MsgId.PORT: lambda b, p, n: Port(*_H.unpack_from(b, p)),
    MsgId.SUGGEST: lambda b, p, n: Suggest(*_I.unpack_from(b, p)),
    MsgId.HAVE_ALL: lambda b, p, n: _HAVE_ALL,
    MsgId.HAVE_NONE: lambda b, p, n: _HAVE_NONE,
    MsgId.REJECT: lambda b, p, n: Reject(*_III.unpack_from(b, p)),
    MsgId.ALLOWED_FAST: lambda b, p, n: AllowedFast(*_I.unpack_from(b, p)),
    MsgId.EXTENDED: _extended,
}

#: Payload length (after the id byte) of every fixed-size message.
FIXED_PAYLOAD: dict[int, int] = {
    MsgId.CHOKE: 0,
    MsgId.UNCHOKE: 0,
    MsgId.INTERESTED: 0,
    MsgId.NOT_INTERESTED: 0,
    MsgId.HAVE: 4,
    MsgId.REQUEST: 12,
    MsgId.CANCEL: 12,
    MsgId.PORT: 2,
    MsgId.SUGGEST: 4,
    MsgId.HAVE_ALL: 0,
    MsgId.HAVE_NONE: 0,
    MsgId.REJECT: 12,
    MsgId.ALLOWED_FAST: 4,
}
#: (min, max) payload length of the variable-size messages.
VARIABLE_PAYLOAD: dict[int, tuple[int, int]] = {
    MsgId.BITFIELD: (0, MAX_UNKNOWN_BITFIELD),
    MsgId.PIECE: (9, 8 + BLOCK_SIZE),
    MsgId.EXTENDED: (1, 1 + MAX_EXTENDED_PAYLOAD),
}


def payload_bounds(msg_id: int) -> tuple[int, int] | None:
    """Allowed (min, max) payload length for ``msg_id``, None for an unknown id."""
    fixed = FIXED_PAYLOAD.get(msg_id)
    if fixed is not None:
        return fixed, fixed
    return VARIABLE_PAYLOAD.get(msg_id)


def decode_message(frame: Buffer) -> Message:
    """Decode one complete length-prefixed frame, without any connection state.

    Useful for tools and tests; the connection uses the same parsers on its
    receive buffer directly.
    """
    if len(frame) < 4:
        raise RemoteProtocolError("truncated length prefix")
    (length,) = _U32.unpack_from(frame, 0)
    if length != len(frame) - 4:
        raise RemoteProtocolError(f"frame length {length} but {len(frame) - 4} bytes follow")
    if length == 0:
        return KeepAlive()
    msg_id = frame[4]
    bounds = payload_bounds(msg_id)
    if bounds is None:
        raise RemoteProtocolError(f"unknown message id {msg_id}")
    if not bounds[0] <= length - 1 <= bounds[1]:
        raise RemoteProtocolError(f"message id {msg_id} with bad length {length}")
    return PARSERS[msg_id](frame, 5, length - 1)
