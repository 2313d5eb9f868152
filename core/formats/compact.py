"""Peer lists as trackers and PEX send them: compact strings and dictionaries.

Three shapes reach us:

* BEP 23 compact IPv4: 6 bytes per peer, 4-byte address then 2-byte port,
  both big-endian (HTTP ``peers``, UDP announce replies, PEX ``added``);
* BEP 7 compact IPv6: 18 bytes per peer (HTTP ``peers6``, PEX ``added6``);
* BEP 3 dictionaries: ``{"ip": ..., "port": ..., "peer id": ...}``.

All of them come from parties we do not trust, so the decoders are lenient
per entry and strict overall: a malformed entry is skipped rather than
failing the whole list (one bad peer must not cost us the other forty-nine),
entries that cannot be dialled (port 0, unspecified or multicast addresses)
are dropped, duplicates collapse, and at most ``limit`` peers are kept so a
hostile tracker cannot make us hold millions of addresses.

Addresses come out as ``(host, port)`` with IPv6 hosts in their compressed
form without brackets, the same shape tracker announce responses, DHT ``values``
and ``Torrent.add_peers`` use.  IPv4-mapped IPv6 addresses are returned as
plain IPv4 so the same peer is not known twice.

Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable

__all__ = [
    "MAX_PEERS",
    "Peer",
    "PeerList",
    "decode_peer_dicts",
    "decode_peers4",
    "decode_peers6",
    "encode_peers",
    "encode_peers4",
    "encode_peers6",
    "normalise_peer",
]

#: Most peers kept from one list.  Trackers send at most a few hundred; PEX
#: caps itself at 50 per message.  2,000 leaves room for generous trackers
#: while bounding memory against hostile ones.
MAX_PEERS = 2000

Peer = tuple[str, int]


class PeerList:
    """An ordered, de-duplicated, size-capped accumulator of peers.

    Used to merge ``peers`` and ``peers6`` (or several PEX fields) while
    keeping the overall cap and dropping duplicates across them.
    """

    __slots__ = ("_limit", "_peers")

    def __init__(self, limit: int = MAX_PEERS) -> None:
        self._limit = max(0, limit)
        self._peers: dict[Peer, None] = {}

    def add(self, peer: Peer | None) -> bool:
        """Add one peer (None is ignored); return False once the list is full."""
        if len(self._peers) >= self._limit:
            return False
        if peer is not None:
            self._peers.setdefault(peer, None)
        return len(self._peers) < self._limit

    @property
    def full(self) -> bool:
        return len(self._peers) >= self._limit

    def __len__(self) -> int:
        return len(self._peers)

    def to_list(self) -> list[Peer]:
        return list(self._peers)


def _usable(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether we could ever dial this address (loopback stays: tests and local swarms)."""
    return not (addr.is_unspecified or addr.is_multicast)


def _from_ip(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> Peer | None:
    if not 0 < port < 65536:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if not _usable(addr):
        return None
    return (str(addr), port)


def normalise_peer(host: str, port: int) -> Peer | None:
    """Validate a textual ``(host, port)``; None if it is not a dialable IP peer.

    Host names are refused: a tracker naming hosts would have us resolve
    arbitrary names on its behalf, and no current tracker does that.
    Accepts bracketed IPv6 (``[::1]``) and strips an IPv6 zone.
    """
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        return None
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    return _from_ip(addr, port)


def _decode_fixed(data: bytes, size: int, into: PeerList) -> None:
    view = memoryview(data)
    whole = len(view) - len(view) % size  # a torn trailing entry is ignored
    for offset in range(0, whole, size):
        if into.full:
            break
        raw = bytes(view[offset : offset + size - 2])
        (port,) = struct.unpack_from("!H", view, offset + size - 2)
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address
        addr = ipaddress.IPv4Address(raw) if size == 6 else ipaddress.IPv6Address(raw)
        into.add(_from_ip(addr, port))


def decode_peers4(
    data: bytes, *, limit: int = MAX_PEERS, into: PeerList | None = None
) -> list[Peer]:
    """Decode a BEP 23 compact IPv4 peer string (6 bytes per peer).

    A trailing partial entry is ignored.  With ``into`` the peers are added to
    that accumulator and its whole content is returned.
    """
    acc = into if into is not None else PeerList(limit)
    if isinstance(data, bytes | bytearray | memoryview):
        _decode_fixed(bytes(data), 6, acc)
    return acc.to_list()


def decode_peers6(
    data: bytes, *, limit: int = MAX_PEERS, into: PeerList | None = None
) -> list[Peer]:
    """Decode a BEP 7 compact IPv6 peer string (18 bytes per peer)."""
    acc = into if into is not None else PeerList(limit)
    if isinstance(data, bytes | bytearray | memoryview):
        _decode_fixed(bytes(data), 18, acc)
    return acc.to_list()


def _dict_peer(entry: object) -> Peer | None:
    if not isinstance(entry, dict):
        return None
    ip = entry.get(b"ip")
    port = entry.get(b"port")
    if isinstance(port, bool) or not isinstance(port, int):
        return None
    if not isinstance(ip, bytes):
        return None
    peer = None
    try:
        peer = normalise_peer(ip.decode("ascii"), port)
    except UnicodeDecodeError:
        pass
    if peer is None and len(ip) in (4, 16):
        # Some trackers put the packed address in "ip" instead of text.
        peer = _from_ip(ipaddress.ip_address(ip), port)
    return peer


def decode_peer_dicts(
    entries: object, *, limit: int = MAX_PEERS, into: PeerList | None = None
) -> list[Peer]:
    """Decode a BEP 3 list of peer dictionaries (``ip``, ``port``, optional ``peer id``).

    ``entries`` is whatever the bencode decoder produced; anything that is not
    a list of well-formed dicts contributes nothing.  The peer id is not kept:
    the handshake tells us the real one.
    """
    acc = into if into is not None else PeerList(limit)
    if isinstance(entries, list):
        for entry in entries:
            if acc.full:
                break
            acc.add(_dict_peer(entry))
    return acc.to_list()


def _packed(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def encode_peers4(peers: Iterable[Peer]) -> bytes:
    """Encode the IPv4 peers of ``peers`` compactly (6 bytes each); others are skipped."""
    out = bytearray()
    for host, port in peers:
        addr = _packed(host)
        if isinstance(addr, ipaddress.IPv4Address) and 0 < port < 65536:
            out += addr.packed + struct.pack("!H", port)
    return bytes(out)


def encode_peers6(peers: Iterable[Peer]) -> bytes:
    """Encode the IPv6 peers of ``peers`` compactly (18 bytes each); others are skipped."""
    out = bytearray()
    for host, port in peers:
        addr = _packed(host)
        if isinstance(addr, ipaddress.IPv6Address) and 0 < port < 65536:
            out += addr.packed + struct.pack("!H", port)
    return bytes(out)


def encode_peers(peers: Iterable[Peer]) -> tuple[bytes, bytes]:
    """Split ``peers`` into ``(compact IPv4, compact IPv6)`` strings (PEX ``added``/``added6``)."""
    items = list(peers)
    return encode_peers4(items), encode_peers6(items)
