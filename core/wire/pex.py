"""The BEP 11 ``ut_pex`` message codec.

A ut_pex payload is a bencoded dict carried in an extended message::

    added     compact IPv4 peers (6 bytes each: address, port, big-endian)
    added.f   one flags byte per ``added`` entry
    dropped   compact IPv4 peers we are no longer connected to
    added6    compact IPv6 peers (18 bytes each)
    added6.f  one flags byte per ``added6`` entry
    dropped6  compact IPv6 peers

The codec is strict where a wrong value means the sender is broken (a peer
string whose length is not a multiple of the entry size, a field of the wrong
type) and lenient where real clients differ: unknown keys are ignored, a
flags string whose length does not match its peer list is ignored (flags
become 0) rather than misattributed, and entries nobody could dial (port 0,
unspecified or multicast addresses) are dropped.  IPv4-mapped IPv6 entries
come out as plain IPv4 so a peer is not known twice.

Addresses are ``(host, port)`` with IPv6 hosts in compressed form without
brackets, the shape ``Torrent.add_peers`` takes.  Decoding keeps at most
``limit`` entries per list (the rest are only counted in ``skipped``) so a
megabyte of PEX costs no more than a sane message; :mod:`core.engine.pex` applies
the per-peer policy on top.  Every decoding failure is a
:class:`~core.errors.RemoteProtocolError`.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BencodeError, LocalProtocolError, RemoteProtocolError
from ..formats.bencoding import decode, encode

__all__ = [
    "DECODE_LIMIT",
    "PEX_HOLEPUNCH",
    "PEX_PREFERS_ENCRYPTION",
    "PEX_REACHABLE",
    "PEX_SEED",
    "PEX_UTP",
    "PexMessage",
    "compact_address",
    "decode_pex",
    "encode_pex",
]

Address = tuple[str, int]

#: The peer prefers (or requires) an encrypted connection (MSE).
PEX_PREFERS_ENCRYPTION = 0x01
#: The peer is a seed (or upload-only).
PEX_SEED = 0x02
#: The peer supports uTP.
PEX_UTP = 0x04
#: The peer supports the ut_holepunch extension (BEP 55).
PEX_HOLEPUNCH = 0x08
#: The sender reached this peer with an outgoing connection, so the peer
#: accepts incoming connections ("reachable"/"connectable").
PEX_REACHABLE = 0x10

#: Entries decoded per list; the remainder of a (hostile) oversized list is
#: counted, not parsed.  Honest senders put at most 50 in each list.
DECODE_LIMIT = 200

_MAX_DEPTH = 4  # a flat dict of strings
_V4, _V6 = 6, 18


@dataclass(frozen=True, slots=True)
class PexMessage:
    """One ut_pex message, both address families merged.

    ``added`` maps each address to its flags byte; ``dropped`` lists
    addresses the sender disconnected from.  ``skipped`` counts entries a
    decoder did not look at because a list exceeded :data:`DECODE_LIMIT`
    (always 0 for messages we build).
    """

    added: Mapping[Address, int]
    dropped: tuple[Address, ...] = ()
    skipped: int = 0


def compact_address(host: str, port: int) -> bytes | None:
    """The 6- or 18-byte compact form of an IP literal address; None for anything else.

    IPv4-mapped IPv6 literals are packed as IPv4 (6 bytes), matching how the
    decoder normalises them.
    """
    if not 0 < port < 65536:
        return None
    try:
        addr = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.packed + struct.pack("!H", port)


def _encode_family(
    added: Mapping[Address, int], dropped: Iterable[Address], size: int
) -> tuple[bytes, bytes, bytes]:
    peers, flags, gone = bytearray(), bytearray(), bytearray()
    for (host, port), flag in added.items():
        packed = compact_address(host, port)
        if packed is None:
            raise LocalProtocolError(f"cannot put {host!r}:{port} in a PEX message")
        if len(packed) == size:
            if not 0 <= flag <= 0xFF:
                raise LocalProtocolError(f"PEX flags {flag!r} do not fit a byte")
            peers += packed
            flags.append(flag)
    for host, port in dropped:
        packed = compact_address(host, port)
        if packed is None:
            raise LocalProtocolError(f"cannot put {host!r}:{port} in a PEX message")
        if len(packed) == size:
            gone += packed
    return bytes(peers), bytes(flags), bytes(gone)


def encode_pex(msg: PexMessage) -> bytes:
    """Encode a ut_pex payload, splitting addresses by family.

    All six keys are always present (empty strings when a list is empty), as
    libtorrent sends them.  A host that is not an IP literal is our bug:
    :class:`~core.errors.LocalProtocolError`.
    """
    added4, flags4, dropped4 = _encode_family(msg.added, msg.dropped, _V4)
    added6, flags6, dropped6 = _encode_family(msg.added, msg.dropped, _V6)
    return encode(
        {
            b"added": added4,
            b"added.f": flags4,
            b"dropped": dropped4,
            b"added6": added6,
            b"added6.f": flags6,
            b"dropped6": dropped6,
        }
    )


def _field(value: Mapping[bytes, Any], key: bytes) -> bytes:
    raw = value.get(key, b"")
    if not isinstance(raw, bytes):
        raise RemoteProtocolError(f"ut_pex {key.decode()!r} is not a string")
    return raw


def _peers(raw: bytes, size: int, key: bytes) -> tuple[list[Address | None], int]:
    """Decode up to DECODE_LIMIT entries; None marks an undialable entry (keeps flag alignment)."""
    if len(raw) % size:
        raise RemoteProtocolError(
            f"ut_pex {key.decode()!r} is {len(raw)} bytes, not a multiple of {size}"
        )
    count = len(raw) // size
    out: list[Address | None] = []
    for offset in range(0, min(count, DECODE_LIMIT) * size, size):
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address
        if size == _V4:
            addr = ipaddress.IPv4Address(raw[offset : offset + 4])
        else:
            addr = ipaddress.IPv6Address(raw[offset : offset + 16])
            if addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
        (port,) = struct.unpack_from("!H", raw, offset + size - 2)
        usable = port != 0 and not (addr.is_unspecified or addr.is_multicast)
        out.append((str(addr), port) if usable else None)
    return out, count - len(out)


def decode_pex(payload: bytes) -> PexMessage:
    """Decode a ut_pex payload (see the module docstring for what is tolerated)."""
    try:
        value = decode(payload, max_depth=_MAX_DEPTH)
    except BencodeError as exc:
        raise RemoteProtocolError(f"bad ut_pex message: {exc}") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError("ut_pex message is not a dict")
    added: dict[Address, int] = {}
    dropped: dict[Address, None] = {}
    skipped = 0
    for key, flags_key, gone_key, size in (
        (b"added", b"added.f", b"dropped", _V4),
        (b"added6", b"added6.f", b"dropped6", _V6),
    ):
        peers, extra = _peers(_field(value, key), size, key)
        flags = _field(value, flags_key)
        skipped += extra
        if len(flags) != len(peers) + extra:
            flags = b""  # misaligned flags would lie about every peer: ignore them
        for i, addr in enumerate(peers):
            if addr is not None:
                added.setdefault(addr, flags[i] if flags else 0)
        gone, extra = _peers(_field(value, gone_key), size, gone_key)
        skipped += extra
        for addr in gone:
            if addr is not None:
                dropped[addr] = None
    return PexMessage(added, tuple(dropped), skipped)
