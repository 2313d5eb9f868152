"""BEP 42 node ids: the first 21 bits are tied to the node's external IP address.

Choosing an id next to a target info-hash is how a Sybil attacker takes over
that hash; BEP 42 makes the id's prefix a CRC32-C of the (masked) IP, so
each address only gets a few prefixes.  The id is

    byte 0..1   top 16 bits of crc32c(masked ip | r << 29 (v4) or r << 61 (v6))
    byte 2      next 5 bits of that CRC, then 3 free bits
    byte 3..18  free
    byte 19     ``rand``, whose low 3 bits are ``r``

IPv4 is masked with ``03 0f 3f ff`` and hashed as 4 bytes; IPv6 uses its top
64 bits masked with ``01 03 07 0f 1f 3f 7f ff``, hashed as 8 bytes (what
libtorrent does and the BEP's vectors were made with).  Local addresses are
exempt: behind a NAT nobody can know their external address.

The standard library has no CRC32-C (``zlib.crc32`` is the other polynomial),
so a table-driven one lives here; it only ever hashes 4 or 8 bytes.
"""

from __future__ import annotations

import ipaddress
import os

from ..errors import DhtError

__all__ = ["crc32c", "id_matches_ip", "is_exempt", "node_id_for_ip"]

_V4_MASK = bytes((0x03, 0x0F, 0x3F, 0xFF))
_V6_MASK = bytes((0x01, 0x03, 0x07, 0x0F, 0x1F, 0x3F, 0x7F, 0xFF))
#: Castagnoli polynomial, bit-reversed (CRC-32C as iSCSI and SSE 4.2 compute it).
_POLY = 0x82F63B78


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``: ``crc32c(b"123456789") == 0xE3069283``."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(ip: str) -> _IP:
    """The address (an IPv4-mapped IPv6 address counts as the IPv4 one); DhtError if not an IP."""
    if not isinstance(ip, str):
        raise DhtError(f"not an IP address: {ip!r}")
    try:
        addr = ipaddress.ip_address(ip.strip("[]").split("%", 1)[0])
    except ValueError:
        raise DhtError(f"not an IP address: {ip!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _prefix_crc(addr: _IP, r: int) -> int:
    """BEP 42's CRC for ``addr`` and ``r`` (0..7)."""
    if isinstance(addr, ipaddress.IPv4Address):
        raw, mask = addr.packed, _V4_MASK
    else:
        raw, mask = addr.packed[:8], _V6_MASK
    masked = bytearray(a & m for a, m in zip(raw, mask, strict=True))
    masked[0] |= (r & 0x07) << 5
    return crc32c(bytes(masked))


def is_exempt(ip: str) -> bool:
    """Whether BEP 42 does not apply to ``ip``: loopback, private, link-local addresses.

    The BEP's list (10/8, 172.16/12, 192.168/16, 169.254/16, 127/8) and its
    IPv6 counterparts (``::1``, ``fe80::/10``, ``fc00::/7``): such a node
    cannot know the address the rest of the DHT sees, so its id cannot match.
    """
    return _exempt(_parse(ip))


_ULA = ipaddress.IPv6Network("fc00::/7")
# Not ``is_private``: that also covers documentation and benchmark ranges,
# which are not local networks; BEP 42 exempts exactly these three.
_RFC1918 = (
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
)


def _exempt(addr: _IP) -> bool:
    if addr.is_loopback or addr.is_link_local:
        return True
    if isinstance(addr, ipaddress.IPv4Address):
        return any(addr in net for net in _RFC1918)
    return addr in _ULA


def node_id_for_ip(ip: str, rand: int, tail: bytes | None = None) -> bytes:
    """A node id valid for ``ip`` under BEP 42.

    ``rand`` (0..255) becomes the last byte; its low 3 bits are the BEP's
    ``r``.  ``tail`` is the 16 free middle bytes (3..18), random when None;
    the 3 free bits of byte 2 are taken from ``rand``'s bits 3..5, so a
    caller that passes ``rand`` and ``tail`` gets a reproducible id whose free
    bits all come from its own randomness.
    """
    if isinstance(rand, bool) or not isinstance(rand, int) or not 0 <= rand <= 0xFF:
        raise DhtError(f"rand must be 0..255, got {rand!r}")
    if tail is None:
        tail = os.urandom(16)
    elif not isinstance(tail, bytes) or len(tail) != 16:
        raise DhtError("tail must be 16 bytes")
    crc = _prefix_crc(_parse(ip), rand)
    head = bytes(
        (
            (crc >> 24) & 0xFF,
            (crc >> 16) & 0xFF,
            ((crc >> 8) & 0xF8) | ((rand >> 3) & 0x07),
        )
    )
    return head + tail + bytes((rand,))


def id_matches_ip(node_id: bytes, ip: str) -> bool:
    """Whether ``node_id`` is a valid BEP 42 id for ``ip`` (always True for exempt addresses).

    Exempt addresses pass, as in libtorrent's check, so a caller enforcing
    BEP 42 asks one question; :func:`is_exempt` tells the two cases apart.
    An id that is not 20 bytes never matches.
    """
    addr = _parse(ip)
    if not isinstance(node_id, bytes) or len(node_id) != 20:
        return False
    if _exempt(addr):
        return True
    crc = _prefix_crc(addr, node_id[19])
    return (
        node_id[0] == (crc >> 24) & 0xFF
        and node_id[1] == (crc >> 16) & 0xFF
        and (node_id[2] ^ (crc >> 8)) & 0xF8 == 0
    )
