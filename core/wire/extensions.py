"""BEP 10 extension handshake and the BEP 9 ``ut_metadata`` message codec.

Both are bencoded payloads of extended (id 20) messages.  Decoding is lenient
where BEP 10 asks for it (unknown keys are ignored, and so are optional
fields of the wrong type, as real clients send odd values) and strict where a
wrong value would mislead us (``m`` must be a dict of small integers, a
ut_metadata message must have a known type and a sane piece number).  Every
failure is a :class:`~core.errors.RemoteProtocolError`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..errors import BencodeError, RemoteProtocolError
from ..formats.bencoding import decode, decode_prefix, encode
from .lengths import BLOCK_SIZE

__all__ = [
    "UT_METADATA",
    "UT_PEX",
    "ExtensionHandshake",
    "MetadataData",
    "MetadataMessage",
    "MetadataReject",
    "MetadataRequest",
    "decode_extension_handshake",
    "decode_metadata_message",
    "encode_extension_handshake",
    "encode_metadata_message",
]

UT_METADATA = "ut_metadata"
UT_PEX = "ut_pex"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: ``metadata_size`` above this is treated as absent: a hostile peer must not
#: make us allocate gigabytes for an info dict (real ones are at most a few MiB).
MAX_METADATA_SIZE = 64 << 20
#: Nesting limit for extension payloads: they are flat dicts in practice.
_MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class ExtensionHandshake:
    """The BEP 10 handshake dict (extended id 0), typed.

    ``m`` maps extension names to the ids the *sender* wants to receive them
    on; id 0 means "disabled" (BEP 10 makes ``m`` additive across repeated
    handshakes, which the connection handles).  Optional fields are None when
    absent or malformed.
    """

    m: dict[str, int] = field(default_factory=dict)
    v: str | None = None
    p: int | None = None
    reqq: int | None = None
    yourip: IPAddress | None = None
    ipv4: ipaddress.IPv4Address | None = None
    ipv6: ipaddress.IPv6Address | None = None
    metadata_size: int | None = None


def _ip(value: Any, sizes: tuple[int, ...]) -> IPAddress | None:
    if isinstance(value, bytes) and len(value) in sizes:
        return ipaddress.ip_address(value)
    return None


def _positive_int(value: Any, upper: int) -> int | None:
    if isinstance(value, int) and 0 < value <= upper:
        return value
    return None


def decode_extension_handshake(payload: bytes) -> ExtensionHandshake:
    """Decode the payload of an extended message with id 0."""
    try:
        value = decode(payload, max_depth=_MAX_DEPTH)
    except BencodeError as exc:
        raise RemoteProtocolError(f"bad extension handshake: {exc}") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError("extension handshake is not a dict")
    raw_m = value.get(b"m", {})
    if not isinstance(raw_m, dict):
        raise RemoteProtocolError("extension handshake 'm' is not a dict")
    m: dict[str, int] = {}
    for key, ext_id in raw_m.items():
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a name we cannot spell is a name we do not support
        if not isinstance(ext_id, int) or not 0 <= ext_id <= 255:
            raise RemoteProtocolError(f"extension {name!r} has invalid id {ext_id!r}")
        m[name] = ext_id
    v = value.get(b"v")
    version = v.decode("utf-8", "replace") if isinstance(v, bytes) else None
    ipv4 = _ip(value.get(b"ipv4"), (4,))
    ipv6 = _ip(value.get(b"ipv6"), (16,))
    return ExtensionHandshake(
        m=m,
        v=version,
        p=_positive_int(value.get(b"p"), 0xFFFF),
        reqq=_positive_int(value.get(b"reqq"), 1 << 31),
        yourip=_ip(value.get(b"yourip"), (4, 16)),
        ipv4=ipv4 if isinstance(ipv4, ipaddress.IPv4Address) else None,
        ipv6=ipv6 if isinstance(ipv6, ipaddress.IPv6Address) else None,
        metadata_size=_positive_int(value.get(b"metadata_size"), MAX_METADATA_SIZE),
    )


def encode_extension_handshake(hs: ExtensionHandshake) -> bytes:
    out: dict[bytes, Any] = {b"m": {name.encode(): ext_id for name, ext_id in hs.m.items()}}
    if hs.v is not None:
        out[b"v"] = hs.v.encode()
    if hs.p is not None:
        out[b"p"] = hs.p
    if hs.reqq is not None:
        out[b"reqq"] = hs.reqq
    if hs.yourip is not None:
        out[b"yourip"] = hs.yourip.packed
    if hs.ipv4 is not None:
        out[b"ipv4"] = hs.ipv4.packed
    if hs.ipv6 is not None:
        out[b"ipv6"] = hs.ipv6.packed
    if hs.metadata_size is not None:
        out[b"metadata_size"] = hs.metadata_size
    return encode(out)


# --- ut_metadata (BEP 9) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    piece: int


@dataclass(frozen=True, slots=True)
class MetadataData:
    piece: int
    total_size: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class MetadataReject:
    piece: int


MetadataMessage = MetadataRequest | MetadataData | MetadataReject

_REQUEST, _DATA, _REJECT = 0, 1, 2
# A metadata piece number above this cannot exist under MAX_METADATA_SIZE.
_MAX_METADATA_PIECE = MAX_METADATA_SIZE // BLOCK_SIZE


def encode_metadata_message(msg: MetadataMessage) -> bytes:
    if isinstance(msg, MetadataRequest):
        return encode({b"msg_type": _REQUEST, b"piece": msg.piece})
    if isinstance(msg, MetadataReject):
        return encode({b"msg_type": _REJECT, b"piece": msg.piece})
    head = encode({b"msg_type": _DATA, b"piece": msg.piece, b"total_size": msg.total_size})
    return head + msg.data


def decode_metadata_message(payload: bytes) -> MetadataMessage:
    """Decode a ut_metadata payload: a dict, followed by raw bytes for a data message."""
    try:
        value, end = decode_prefix(payload, 0, max_depth=_MAX_DEPTH)
    except BencodeError as exc:
        raise RemoteProtocolError(f"bad ut_metadata message: {exc}") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError("ut_metadata message is not a dict")
    msg_type = value.get(b"msg_type")
    piece = value.get(b"piece")
    if not isinstance(piece, int) or not 0 <= piece <= _MAX_METADATA_PIECE:
        raise RemoteProtocolError(f"ut_metadata piece {piece!r} invalid")
    trailing = len(payload) - end
    if msg_type == _DATA:
        total = value.get(b"total_size")
        if not isinstance(total, int) or not 0 < total <= MAX_METADATA_SIZE:
            raise RemoteProtocolError(f"ut_metadata total_size {total!r} invalid")
        if trailing > BLOCK_SIZE:
            raise RemoteProtocolError(f"ut_metadata data block of {trailing} bytes")
        return MetadataData(piece, total, bytes(payload[end:]))
    if trailing:
        raise RemoteProtocolError("trailing bytes after ut_metadata request/reject")
    if msg_type == _REQUEST:
        return MetadataRequest(piece)
    if msg_type == _REJECT:
        return MetadataReject(piece)
    raise RemoteProtocolError(f"unknown ut_metadata msg_type {msg_type!r}")
