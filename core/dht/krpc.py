"""KRPC, the DHT's message layer (BEP 5), with BEP 32, 42, 43, 44 and 51 fields.

Datagrams come from anyone, so :func:`decode` is strict and total: it
returns a :class:`Query`, :class:`Response` or :class:`ErrorReply`, or
raises :class:`KrpcError`, never anything else.  Every known key is checked
for its type and size (ids 20 bytes, ``nodes`` a multiple of 26, ``nodes6``
of 38, ``values`` entries of 6 or 18 bytes, ``samples`` a multiple of 20,
ports 1..65535, BEP 44 keys 32 bytes, signatures 64, salts at most 64, ...);
unknown keys are ignored so newer extensions pass through.  Queries with an
unknown method still decode (the node answers them 204, or as ``find_node``
/ ``get_peers`` when they carry a ``target`` / ``info_hash``, as libtorrent
does for forward compatibility).

:attr:`KrpcError.key` is a short name the node counts drops under:

=================  ==========================================================
``oversized``      datagram over :data:`MAX_DATAGRAM`
``malformed``      not bencode, not a dict, bytes after the dict, too deep
``missing``        a required key is absent
``bad-type``       a known key holds the wrong bencode type
``bad-tid``        transaction id empty or over :data:`MAX_TID` bytes
``bad-y``          ``y`` is none of ``q``, ``r``, ``e``
``bad-method``     ``q`` is not a short ASCII name
``bad-id``         a node id that is not 20 bytes
``bad-hash``       ``target`` / ``info_hash`` not 20 bytes
``bad-port``       ``port`` outside 1..65535
``bad-nodes``      ``nodes`` / ``nodes6`` length not a multiple of 26 / 38
``bad-values``     a ``values`` entry neither 6 nor 18 bytes
``bad-samples``    ``samples`` length not a multiple of 20
``bad-ip``         top-level ``ip`` neither 6 nor 18 bytes
``bad-number``     ``interval`` / ``num`` negative or over 64 bits
``bad-error``      ``e`` is not ``[code, message]``
``bad-item``       BEP 44 fields inconsistent, ``seq``/``cas`` out of range,
                   ``k`` not 32 bytes
``bad-signature``  ``sig`` not 64 bytes (the node answers 206)
``value-too-big``  ``v`` over 1,000 bytes (205)
``salt-too-big``   ``salt`` over 64 bytes (207)
=================  ==========================================================

Both directions are written out here rather than going through
:mod:`core.formats.bencoding`, for speed (a node answers tens of thousands
of datagrams a second) and for BEP 44, whose ``v`` must be handed on as the
exact bytes received and embedded verbatim when sent.  The reader follows
the formats decoder's rules exactly (the tests compare the two on valid,
damaged and sloppy bencode); :func:`encode` writes canonical bencode (keys
sorted as raw bytes) and refuses what :func:`decode` would refuse.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from ..errors import BencodeError, LocalProtocolError, RemoteProtocolError
from ..formats import bencoding
from ..formats.compact import MAX_PEERS, decode_peers6
from .items import KEY_SIZE, MAX_SALT, MAX_SEQ, MAX_VALUE, SIGNATURE_SIZE
from .types import ID_LENGTH, Addr, NodeInfo

__all__ = [
    "ANNOUNCE_PEER",
    "ERROR_BAD_SIGNATURE",
    "ERROR_CAS_MISMATCH",
    "ERROR_GENERIC",
    "ERROR_KEYS",
    "ERROR_METHOD_UNKNOWN",
    "ERROR_PROTOCOL",
    "ERROR_SALT_TOO_BIG",
    "ERROR_SEQ_TOO_LOW",
    "ERROR_SERVER",
    "ERROR_TOO_BIG",
    "FIND_NODE",
    "GET",
    "GET_PEERS",
    "MAX_DATAGRAM",
    "MAX_TID",
    "PING",
    "PUT",
    "SAMPLE_INFOHASHES",
    "ErrorReply",
    "KrpcError",
    "Message",
    "Query",
    "Response",
    "compact_addr",
    "decode",
    "decode_nodes",
    "encode",
    "encode_nodes",
]

PING = "ping"
FIND_NODE = "find_node"
GET_PEERS = "get_peers"
ANNOUNCE_PEER = "announce_peer"
SAMPLE_INFOHASHES = "sample_infohashes"
GET = "get"
PUT = "put"

ERROR_GENERIC = 201
ERROR_SERVER = 202
ERROR_PROTOCOL = 203
ERROR_METHOD_UNKNOWN = 204
ERROR_TOO_BIG = 205
ERROR_BAD_SIGNATURE = 206
ERROR_SALT_TOO_BIG = 207
ERROR_CAS_MISMATCH = 301
ERROR_SEQ_TOO_LOW = 302

#: Largest datagram :func:`decode` reads.  Honest messages are far smaller:
#: BEP 32 asks senders to stay under 1,024 bytes, a BEP 44 ``put`` with a
#: 1,000-byte value, key, signature, 64-byte salt and token is about 1,300,
#: and a ``get_peers`` reply with 100 IPv6 ``values`` about 2,200.  4 KiB
#: takes all of those with room to spare and still bounds what one hostile
#: datagram (thousands of ``nodes``) costs us to parse.
MAX_DATAGRAM = 4096
#: Longest transaction id accepted.  Real clients use 2 to 8 bytes; every
#: reply echoes the id, so a bound keeps a querier from inflating our answers.
MAX_TID = 32
#: Longest method name (the longest real one, ``sample_infohashes``, is 17).
MAX_METHOD = 64
#: Nesting accepted: the envelope is three levels deep, a BEP 44 value may
#: nest further, and 1,000 bytes of honest data need nowhere near this.
MAX_DEPTH = 64

#: Every :attr:`KrpcError.key` :func:`decode` uses (the table above), for
#: whoever keeps a counter per key.
ERROR_KEYS = frozenset(
    (
        "oversized",
        "malformed",
        "missing",
        "bad-type",
        "bad-tid",
        "bad-y",
        "bad-method",
        "bad-id",
        "bad-hash",
        "bad-port",
        "bad-nodes",
        "bad-values",
        "bad-samples",
        "bad-ip",
        "bad-number",
        "bad-error",
        "bad-item",
        "bad-signature",
        "value-too-big",
        "salt-too-big",
    )
)

_NODE4 = ID_LENGTH + 6
_NODE6 = ID_LENGTH + 18
_MAX_INT = (1 << 63) - 1


class KrpcError(RemoteProtocolError):
    """A datagram that is not a valid KRPC message.

    ``key`` is the short counter name (see the module docstring), ``reason``
    the human text.  ``tid`` and ``is_query`` say whether the sender can be
    answered: a query whose transaction id could be read gets an error reply
    with ``code`` (203, or a BEP 44 code for an oversized value, a bad
    signature size or an oversized salt).
    """

    def __init__(
        self,
        key: str,
        reason: str,
        *,
        tid: bytes | None = None,
        is_query: bool = False,
        code: int = ERROR_PROTOCOL,
    ) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason
        self.tid = tid
        self.is_query = is_query
        self.code = code


@dataclass(frozen=True, slots=True)
class Query:
    """A query (``"y": "q"``); which fields are set depends on ``method``."""

    tid: bytes
    sender: bytes
    method: str
    target: bytes | None = None
    info_hash: bytes | None = None
    want: frozenset[str] = frozenset()
    token: bytes | None = None
    port: int | None = None
    implied_port: bool = False
    seed: bool = False
    read_only: bool = False
    version: bytes | None = None
    value: bytes | None = None
    key: bytes | None = None
    signature: bytes | None = None
    seq: int | None = None
    salt: bytes | None = None
    cas: int | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """A response (``"y": "r"``).

    ``samples`` is written whenever it is not empty or ``interval``/``num``
    are set, so a BEP 51 reply always carries it (possibly empty), as the BEP
    asks, while other replies never do.
    """

    tid: bytes
    sender: bytes
    nodes: tuple[NodeInfo, ...] = ()
    nodes6: tuple[NodeInfo, ...] = ()
    values: tuple[Addr, ...] = ()
    token: bytes | None = None
    ip: Addr | None = None
    version: bytes | None = None
    samples: tuple[bytes, ...] = ()
    interval: int | None = None
    num: int | None = None
    value: bytes | None = None
    key: bytes | None = None
    signature: bytes | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error (``"y": "e"``): ``[code, message]``."""

    tid: bytes
    code: int
    message: str


Message = Query | Response | ErrorReply

# --------------------------------------------------------------------------- compact info


#: A dotted-quad IPv4 address exactly as :mod:`ipaddress` accepts one: four
#: decimal octets 0-255, ASCII digits, no leading zeros.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


@functools.lru_cache(maxsize=4096)
def _packed_host(host: str) -> bytes:
    """Packed IP of a textual host (IPv4-mapped IPv6 packs as IPv4); cached, hosts repeat.

    Plain IPv4 skips :mod:`ipaddress` (several microseconds, and a reply
    with ``values`` or ``nodes`` may pack over a hundred hosts the cache has
    not seen); tests hold the two to the same answers.
    """
    if _IPV4.fullmatch(host):
        return bytes(map(int, host.split(".")))
    try:
        addr = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        raise LocalProtocolError(f"not an IP address: {host!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.packed


def compact_addr(addr: Addr) -> bytes:
    """``addr`` as compact IP/port info: 6 bytes for IPv4, 18 for IPv6 (``ip``, ``values``)."""
    host, port = addr
    if type(port) is int and type(host) is str and 0 <= port <= 0xFFFF:
        return _packed_host(host) + port.to_bytes(2, "big")  # the usual case, checked at once
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"bad port {port!r}")
    if not isinstance(host, str):
        raise LocalProtocolError(f"not an IP address: {host!r}")
    return _packed_host(host) + port.to_bytes(2, "big")


def encode_nodes(nodes: Iterable[NodeInfo], *, v6: bool) -> bytes:
    """Compact node info (26 bytes per IPv4 node, 38 per IPv6 node) for ``nodes``/``nodes6``.

    Nodes of the other address family are skipped, so a caller can hand over
    any list; BEP 32 keeps the two DHTs' node lists apart.
    """
    size = 16 if v6 else 4
    out = bytearray()
    for node in nodes:
        if not isinstance(node.id, bytes) or len(node.id) != ID_LENGTH:
            raise LocalProtocolError(f"node id must be {ID_LENGTH} bytes")
        raw = compact_addr(node.addr)
        if len(raw) == size + 2:
            out += node.id
            out += raw
    return bytes(out)


def _peer4(raw: bytes) -> Addr | None:
    """A 6-byte compact IPv4 peer, None when nobody could dial it.

    The rules of :func:`core.formats.compact.decode_peers4` (port 0, 0.0.0.0
    and multicast dropped) written out for the one case that is hot: a reply
    carries up to 8 nodes or 100 values, and going through ``ipaddress``
    costs several microseconds each.  The tests hold the two to the same
    answers.
    """
    port = raw[4] << 8 | raw[5]
    first = raw[0]
    if port == 0 or 224 <= first <= 239 or raw[:4] == b"\0\0\0\0":
        return None
    return (f"{first}.{raw[1]}.{raw[2]}.{raw[3]}", port)


def _decode_nodes(data: bytes, v6: bool) -> tuple[NodeInfo, ...] | str:
    """The nodes of a compact string, or the reason it is malformed."""
    size = _NODE6 if v6 else _NODE4
    if len(data) % size:
        name = "nodes6" if v6 else "nodes"
        return f"{name} length {len(data)} is not a multiple of {size}"
    out = []
    if not v6:
        # _peer4 written out (a reply carries 8 of these, a lookup reads
        # hundreds of replies); the tests hold this loop to the compact codec.
        for offset in range(0, len(data), _NODE4):
            a, b, c, d = data[offset + 20 : offset + 24]
            port = data[offset + 24] << 8 | data[offset + 25]
            if port and not 224 <= a <= 239 and (a or b or c or d):
                out.append(NodeInfo(data[offset : offset + 20], (f"{a}.{b}.{c}.{d}", port)))
        return tuple(out)
    for offset in range(0, len(data), size):
        peers = decode_peers6(data[offset + ID_LENGTH : offset + size], limit=1)
        # IPv4-mapped entries belong to the other DHT (BEP 32): dropped, as
        # are undialable ones.
        if peers and ":" in peers[0][0]:
            out.append(NodeInfo(data[offset : offset + ID_LENGTH], peers[0]))
    return tuple(out)


def decode_nodes(data: bytes, *, v6: bool) -> tuple[NodeInfo, ...]:
    """Decode compact node info; :class:`KrpcError` (``bad-nodes``) on a torn length.

    Entries nobody could reach (port 0, unspecified or multicast addresses)
    are dropped; the order is kept.
    """
    result = _decode_nodes(bytes(data), v6)
    if isinstance(result, str):
        raise KrpcError("bad-nodes", result)
    return result


# --------------------------------------------------------------------------- bencode


# The same strict rules as core.formats.bencoding (no leading zeros, no -0,
# string keys, no duplicate keys, unsorted keys accepted, the same length
# and depth limits) in a recursive reader made for small datagrams: the
# generic scanner plus bencode.py cost 40-60 us for a find_node query on the
# development machine, this reader about a third of that, and the issue asks
# for 20,000 messages a second on one core.  Recursion is safe: nesting stops
# at MAX_DEPTH.  tests/test_dht_krpc.py checks the two readers agree.
_INT = re.compile(rb"i(0|[1-9][0-9]{0,32}|-[1-9][0-9]{0,31})e")
_LEN = re.compile(rb"(0|[1-9][0-9]{0,30}):")


def _malformed(reason: str, pos: int) -> NoReturn:
    raise KrpcError("malformed", f"{reason} at byte {pos}")


# Strings are most of a datagram (every key, ids, tokens, compact info), so
# the readers below take a string whose length has one or two digits (every
# key, and all but ``nodes``/``values``/BEP 44 payloads) without the regex:
# ``N:`` or ``NN:`` with a digit 0-9 alone, or 1-9 then 0-9, is exactly what
# ``_LEN`` accepts in those widths; anything else (longer lengths, leading
# zeros, junk) goes through ``_LEN`` and its rules.  Running out of data
# there raises IndexError, which :func:`_envelope` reports as truncation.


def _parse_value(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    """The value at ``pos`` and its end offset (an IndexError means the data ran out)."""
    c = data[pos]
    if 0x30 <= c <= 0x39:
        d = data[pos + 1]
        if d == 0x3A:
            start = pos + 2
            end = start + c - 0x30
        elif 0x30 <= d <= 0x39 and c != 0x30 and data[pos + 2] == 0x3A:
            start = pos + 3
            end = start + (c - 0x30) * 10 + d - 0x30
        else:
            m = _LEN.match(data, pos)
            if m is None:
                _malformed("invalid string length", pos)
            start = m.end()
            end = start + int(m.group(1))
        if end > len(data):
            _malformed("string runs past the end of the data", pos)
        return data[start:end], end
    if c == 0x64:  # 'd'
        return _parse_dict(data, pos, depth, None)
    if c == 0x6C:  # 'l'
        if depth >= MAX_DEPTH:
            _malformed(f"nesting deeper than {MAX_DEPTH}", pos)
        pos += 1
        items = []
        size = len(data)
        c = data[pos]
        while c != 0x65:
            # One-digit string lengths inline: ``values`` is a list of 6-byte strings.
            if 0x30 <= c <= 0x39 and data[pos + 1] == 0x3A:
                start = pos + 2
                end = start + c - 0x30
                if end > size:
                    _malformed("string runs past the end of the data", pos)
                items.append(data[start:end])
                pos = end
            else:
                item, pos = _parse_value(data, pos, depth + 1)
                items.append(item)
            c = data[pos]
        return items, pos + 1
    if c == 0x69:  # 'i'
        m = _INT.match(data, pos)
        if m is None:
            _malformed("invalid integer", pos)
        return int(m.group(1)), m.end()
    _malformed(f"unexpected byte {c:#x}", pos)


def _parse_dict(
    data: bytes, pos: int, depth: int, spans: dict[bytes, tuple[int, int]] | None
) -> tuple[dict[bytes, Any], int]:
    """The dict at ``pos`` and its end; records each value's raw span in ``spans`` if given.

    String keys and string values are read inline (see above): a ping is
    nine strings and two dicts, and a call per string was most of its cost.
    """
    if depth >= MAX_DEPTH:
        _malformed(f"nesting deeper than {MAX_DEPTH}", pos)
    pos += 1
    out: dict[bytes, Any] = {}
    size = len(data)
    c = data[pos]
    while c != 0x65:
        if 0x30 <= c <= 0x39 and (d := data[pos + 1]) == 0x3A:
            start = pos + 2
            end = start + c - 0x30
        elif 0x31 <= c <= 0x39 and 0x30 <= d <= 0x39 and data[pos + 2] == 0x3A:
            start = pos + 3
            end = start + (c - 0x30) * 10 + d - 0x30
        else:
            m = _LEN.match(data, pos)
            if m is None:
                _malformed("dict key is not a string", pos)
            start = m.end()
            end = start + int(m.group(1))
        if end > size:
            _malformed("string runs past the end of the data", pos)
        key = data[start:end]
        if key in out:
            _malformed(f"duplicate dict key {key[:32]!r}", pos)
        c = data[end]
        if 0x30 <= c <= 0x39 and (d := data[end + 1]) == 0x3A:
            start = end + 2
            pos = start + c - 0x30
            if pos > size:
                _malformed("string runs past the end of the data", end)
            out[key] = data[start:pos]
        elif 0x31 <= c <= 0x39 and 0x30 <= d <= 0x39 and data[end + 2] == 0x3A:
            start = end + 3
            pos = start + (c - 0x30) * 10 + d - 0x30
            if pos > size:
                _malformed("string runs past the end of the data", end)
            out[key] = data[start:pos]
        else:
            out[key], pos = _parse_value(data, end, depth + 1)
        if spans is not None:
            spans[key] = (end, pos)
        c = data[pos]
    return out, pos + 1


def _envelope(data: bytes) -> tuple[dict[bytes, Any], dict[bytes, bytes]]:
    """The top-level dict, and the raw ``v`` (BEP 44) of its ``a`` and ``r`` dicts by key."""
    if not data or data[0] != 0x64:
        raise KrpcError("malformed", "not a bencoded dict")
    top: dict[bytes, tuple[int, int]] = {}
    try:
        msg, end = _parse_dict(data, 0, 0, top)
    except IndexError:
        raise KrpcError("malformed", "unexpected end of data") from None
    if end != len(data):
        raise KrpcError("malformed", f"trailing data after the dict at byte {end}")
    raw_v: dict[bytes, bytes] = {}
    for name in (b"a", b"r"):
        inner = msg.get(name)
        if isinstance(inner, dict) and b"v" in inner:
            # Only BEP 44 messages get here: walk the dict once more for the span.
            spans: dict[bytes, tuple[int, int]] = {}
            _parse_dict(data, top[name][0], 1, spans)
            start, stop = spans[b"v"]
            raw_v[name] = data[start:stop]
    return msg, raw_v


# --------------------------------------------------------------------------- decoding


class _Invalid(Exception):
    """A field failed its check; :func:`decode` adds the message's tid and type."""

    def __init__(self, key: str, reason: str, code: int = ERROR_PROTOCOL) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason
        self.code = code


#: A field check: ``(key name, raw value) -> field value``, raising :class:`_Invalid`.
_Check = Callable[[str, Any], Any]


def _string(name: str, value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise _Invalid("bad-type", f"{name!r} is not a string")
    return value


def _sized(size: int, key: str, code: int = ERROR_PROTOCOL) -> _Check:
    def check(name: str, value: Any) -> bytes:
        if not isinstance(value, bytes):
            raise _Invalid("bad-type", f"{name!r} is not a string")
        if len(value) != size:
            raise _Invalid(key, f"{name!r} is {len(value)} bytes, not {size}", code)
        return value

    return check


def _integer(name: str, value: Any) -> int:
    if not isinstance(value, int):
        raise _Invalid("bad-type", f"{name!r} is not an integer")
    return value


def _ranged(key: str, high: int = _MAX_INT) -> _Check:
    def check(name: str, value: Any) -> int:
        if not 0 <= _integer(name, value) <= high:
            raise _Invalid(key, f"{name!r} {value} is outside 0..{high}")
        return int(value)

    return check


def _flag(name: str, value: Any) -> bool:
    return bool(_integer(name, value))


def _want(name: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(w, bytes) for w in value):
        raise _Invalid("bad-type", "'want' is not a list of strings")
    # BEP 32: other strings "must be silently ignored".
    return frozenset(w.decode() for w in value if w in (b"n4", b"n6"))


def _salt(name: str, value: Any) -> bytes:
    if len(_string(name, value)) > MAX_SALT:
        raise _Invalid(
            "salt-too-big", f"'salt' is {len(value)} bytes, over {MAX_SALT}", ERROR_SALT_TOO_BIG
        )
    return bytes(value)


def _nodes_of(v6: bool) -> _Check:
    def check(name: str, value: Any) -> tuple[NodeInfo, ...]:
        result = _decode_nodes(_string(name, value), v6)
        if isinstance(result, str):
            raise _Invalid("bad-nodes", result)
        return result

    return check


def _values(name: str, value: Any) -> tuple[Addr, ...]:
    if not isinstance(value, list):
        raise _Invalid("bad-type", "'values' is not a list")
    # What a PeerList of MAX_PEERS does (first come first kept, duplicates and
    # undialable peers dropped), with a plain dict: a call per entry adds up
    # over 100 values.  Entries past the cap are still checked.
    acc: dict[Addr, None] = {}
    for entry in value:
        if not isinstance(entry, bytes):
            raise _Invalid("bad-type", "a 'values' entry is not a string")
        size = len(entry)
        if size == 6:
            peer = _peer4(entry)
        elif size == 18:
            peers = decode_peers6(entry, limit=1)
            peer = peers[0] if peers else None
        else:
            raise _Invalid("bad-values", f"a 'values' entry is {size} bytes, not 6 or 18")
        if peer is not None and len(acc) < MAX_PEERS:
            acc[peer] = None
    return tuple(acc)


def _samples(name: str, value: Any) -> tuple[bytes, ...]:
    raw = _string(name, value)
    if len(raw) % ID_LENGTH:
        raise _Invalid("bad-samples", f"samples length {len(raw)} is not a multiple of 20")
    return tuple(raw[i : i + ID_LENGTH] for i in range(0, len(raw), ID_LENGTH))


def _ip(name: str, value: Any) -> Addr:
    raw = _string(name, value)
    if len(raw) not in (6, 18):
        raise _Invalid("bad-ip", f"'ip' is {len(raw)} bytes, not 6 or 18")
    if len(raw) == 6:  # what str(IPv4Address) writes, without building one
        return (f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}", raw[4] << 8 | raw[5])
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(raw[:-2])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    # Kept even with port 0: BEP 42 only needs the address.
    return (str(addr), int.from_bytes(raw[-2:], "big"))


_ID = _sized(ID_LENGTH, "bad-id")
_HASH = _sized(ID_LENGTH, "bad-hash")
_KEY = _sized(KEY_SIZE, "bad-item")
_SIG = _sized(SIGNATURE_SIZE, "bad-signature", ERROR_BAD_SIGNATURE)
_SEQ = _ranged("bad-item", MAX_SEQ)

# Known keys, each with its dataclass field, its check and its name as text
# (for the check's messages).  Only the keys present are looked at, so a ping
# costs one check; unknown keys are never touched.
_QUERY_ARGS: dict[bytes, tuple[str, _Check, str]] = {
    b"id": ("sender", _ID, "id"),
    b"target": ("target", _HASH, "target"),
    b"info_hash": ("info_hash", _HASH, "info_hash"),
    b"want": ("want", _want, "want"),
    b"token": ("token", _string, "token"),
    b"port": ("port", _integer, "port"),
    b"implied_port": ("implied_port", _flag, "implied_port"),
    b"seed": ("seed", _flag, "seed"),
    b"k": ("key", _KEY, "k"),
    b"sig": ("signature", _SIG, "sig"),
    b"seq": ("seq", _SEQ, "seq"),
    b"salt": ("salt", _salt, "salt"),
    b"cas": ("cas", _SEQ, "cas"),
}
_QUERY_TOP: dict[bytes, tuple[str, _Check, str]] = {
    b"ro": ("read_only", _flag, "ro"),
    b"v": ("version", _string, "v"),
}
_RESPONSE_FIELDS: dict[bytes, tuple[str, _Check, str]] = {
    b"id": ("sender", _ID, "id"),
    b"nodes": ("nodes", _nodes_of(False), "nodes"),
    b"nodes6": ("nodes6", _nodes_of(True), "nodes6"),
    b"values": ("values", _values, "values"),
    b"token": ("token", _string, "token"),
    b"samples": ("samples", _samples, "samples"),
    b"interval": ("interval", _ranged("bad-number"), "interval"),
    b"num": ("num", _ranged("bad-number"), "num"),
    b"k": ("key", _KEY, "k"),
    b"sig": ("signature", _SIG, "sig"),
    b"seq": ("seq", _SEQ, "seq"),
}
_RESPONSE_TOP: dict[bytes, tuple[str, _Check, str]] = {
    b"ip": ("ip", _ip, "ip"),
    b"v": ("version", _string, "v"),
}


def _fields(d: Mapping[bytes, Any], table: dict[bytes, tuple[str, _Check, str]]) -> dict[str, Any]:
    out = {}
    for name, value in d.items():
        spec = table.get(name)
        if spec is not None:
            field_name, check, text = spec
            out[field_name] = check(text, value)
    return out


def _body(msg: Mapping[bytes, Any], name: bytes) -> Mapping[bytes, Any]:
    body = msg.get(name)
    if body is None:
        raise _Invalid("missing", f"no {name.decode()!r} dict")
    if not isinstance(body, dict):
        raise _Invalid("bad-type", f"{name.decode()!r} is not a dict")
    return body


def _raw_value(raw: bytes | None, fields: dict[str, Any]) -> None:
    """Put the raw bencoded BEP 44 ``v`` (exactly as received) in ``fields``, size checked."""
    if raw is None:
        return
    if len(raw) > MAX_VALUE:
        raise _Invalid("value-too-big", f"'v' is {len(raw)} bytes, over {MAX_VALUE}", ERROR_TOO_BIG)
    fields["value"] = raw


#: The methods we know, by their wire name (saves a decode per query).
_METHOD_NAMES = {
    m.encode(): m for m in (PING, FIND_NODE, GET_PEERS, ANNOUNCE_PEER, SAMPLE_INFOHASHES, GET, PUT)
}


def _query(msg: Mapping[bytes, Any], raw_v: dict[bytes, bytes], tid: bytes) -> Query:
    method = _string("q", msg[b"q"]) if b"q" in msg else None
    if method is None:
        raise _Invalid("missing", "query without a method 'q'")
    if not method or len(method) > MAX_METHOD or not method.isascii():
        raise _Invalid("bad-method", f"method name {method[:MAX_METHOD]!r} is not a short name")
    f = _fields(_body(msg, b"a"), _QUERY_ARGS)
    if "sender" not in f:
        raise _Invalid("missing", "no 'id'")
    port = f.get("port")
    if port is not None and not 0 < port <= 0xFFFF:
        if not f.get("implied_port"):
            raise _Invalid("bad-port", f"port {port} is outside 1..65535")
        del f["port"]  # BEP 5: with implied_port the port "should be ignored"
    _raw_value(raw_v.get(b"a"), f)
    f.update(_fields(msg, _QUERY_TOP))

    name = _METHOD_NAMES.get(method) or method.decode("ascii")
    if name in (FIND_NODE, GET, SAMPLE_INFOHASHES) and "target" not in f:
        raise _Invalid("missing", f"{name} without 'target'")
    if name in (GET_PEERS, ANNOUNCE_PEER) and "info_hash" not in f:
        raise _Invalid("missing", f"{name} without 'info_hash'")
    if name == ANNOUNCE_PEER:
        if "token" not in f:
            raise _Invalid("missing", "announce_peer without 'token'")
        if "port" not in f and not f.get("implied_port"):
            raise _Invalid("missing", "announce_peer without 'port'")
    elif name == PUT:
        if "token" not in f:
            raise _Invalid("missing", "put without 'token'")
        if "value" not in f:
            raise _Invalid("missing", "put without 'v'")
        mutable = {"key", "signature", "seq"} & f.keys()
        if mutable and len(mutable) != 3:
            raise _Invalid("bad-item", "a mutable put needs 'k', 'sig' and 'seq' together")
    return Query(tid=tid, method=name, **f)


def _response(msg: Mapping[bytes, Any], raw_v: dict[bytes, bytes], tid: bytes) -> Response:
    f = _fields(_body(msg, b"r"), _RESPONSE_FIELDS)
    if "sender" not in f:
        raise _Invalid("missing", "no 'id'")
    _raw_value(raw_v.get(b"r"), f)
    if ("key" in f or "signature" in f) and len(
        {"key", "signature", "seq", "value"} & f.keys()
    ) != 4:
        # BEP 44: a mutable get reply may carry ``seq`` alone (the asker is up
        # to date), but a key or signature only with the whole item.
        raise _Invalid("bad-item", "a mutable item needs 'k', 'sig', 'seq' and 'v' together")
    f.update(_fields(msg, _RESPONSE_TOP))
    return Response(tid=tid, **f)


def _error(msg: Mapping[bytes, Any], tid: bytes) -> ErrorReply:
    e = msg.get(b"e")
    if e is None:
        raise _Invalid("missing", "no 'e' list")
    if not isinstance(e, list):
        raise _Invalid("bad-type", "'e' is not a list")
    if not e or not isinstance(e[0], int) or not -_MAX_INT <= e[0] <= _MAX_INT:
        raise _Invalid("bad-error", "'e' does not start with a 64-bit integer code")
    if len(e) > 1 and not isinstance(e[1], bytes):
        raise _Invalid("bad-error", "the error message is not a string")
    # Some nodes send the code alone; the message is only for humans anyway.
    message = e[1].decode("utf-8", "replace") if len(e) > 1 else ""
    return ErrorReply(tid=tid, code=e[0], message=message)


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode one KRPC datagram; :class:`KrpcError` is the only exception it raises."""
    try:
        return _decode(data)
    except KrpcError:
        raise
    except Exception as exc:  # pragma: no cover - a bug here must not take the node down
        raise KrpcError("malformed", f"undecodable ({type(exc).__name__}: {exc})") from None


def _decode(datagram: bytes | bytearray | memoryview) -> Message:
    if not isinstance(datagram, bytes | bytearray | memoryview):
        raise KrpcError("malformed", f"expected bytes, got {type(datagram).__name__}")
    data = bytes(datagram)
    if len(data) > MAX_DATAGRAM:
        raise KrpcError("oversized", f"datagram of {len(data)} bytes is over {MAX_DATAGRAM}")
    msg, raw_v = _envelope(data)
    t = msg.get(b"t")
    y = msg.get(b"y")
    is_query = y == b"q"
    tid = t if isinstance(t, bytes) and 0 < len(t) <= MAX_TID else None
    try:
        if t is None:
            raise _Invalid("missing", "no transaction id 't'")
        if tid is None:
            raise _Invalid("bad-tid", f"transaction id is not 1..{MAX_TID} bytes")
        if y is None:
            raise _Invalid("missing", "no message type 'y'")
        if is_query:
            return _query(msg, raw_v, tid)
        if y == b"r":
            return _response(msg, raw_v, tid)
        if y == b"e":
            return _error(msg, tid)
        raise _Invalid("bad-y", f"unknown message type {_string('y', y)[:8]!r}")
    except _Invalid as exc:
        raise KrpcError(exc.key, exc.reason, tid=tid, is_query=is_query, code=exc.code) from None


# --------------------------------------------------------------------------- encoding


def _s(value: bytes) -> bytes:
    return b"%d:%s" % (len(value), value)


def _i(value: int) -> bytes:
    return b"i%de" % value


def _check_len(value: bytes, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise LocalProtocolError(f"{what} must be {size} bytes")
    return value


def _check_tid(tid: bytes) -> None:
    if not isinstance(tid, bytes) or not 0 < len(tid) <= MAX_TID:
        raise LocalProtocolError(f"transaction id must be 1..{MAX_TID} bytes")


def _check_raw_value(value: bytes) -> bytes:
    try:
        end = bencoding.scan(value, max_depth=MAX_DEPTH - 2) if value else -1
    except BencodeError as exc:
        raise LocalProtocolError(f"'v' is not bencoded: {exc}") from None
    if end != len(value):
        raise LocalProtocolError("'v' must be exactly one bencoded value")
    return value


def _check_int(value: int, what: str, low: int = 0, high: int = _MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LocalProtocolError(f"{what} must be an integer in {low}..{high}")
    return value


def _item_fields(
    value: bytes | None, key: bytes | None, sig: bytes | None, seq: int | None
) -> tuple[bytes | None, bytes | None, bytes | None, bytes | None]:
    """The encoded BEP 44 ``v``, ``k``, ``sig``, ``seq`` (None where absent), checked."""
    return (
        None if value is None else _check_raw_value(value),
        None if key is None else _s(_check_len(key, KEY_SIZE, "'k'")),
        None if sig is None else _s(_check_len(sig, SIGNATURE_SIZE, "'sig'")),
        None if seq is None else _i(_check_int(seq, "'seq'", 0, MAX_SEQ)),
    )


def _encode_query(q: Query) -> bytes:
    # Checked in the order fields are listed, written in sorted key order
    # (``cas id implied_port info_hash k port salt seed seq sig target token
    # v want``; top level ``a q ro t v y``) without building pairs to sort.
    method = q.method.encode("ascii") if q.method.isascii() else b""
    if not 0 < len(method) <= MAX_METHOD:
        raise LocalProtocolError(f"bad method name {q.method!r}")
    sender = _check_len(q.sender, ID_LENGTH, "sender id")
    target = None if q.target is None else _check_len(q.target, ID_LENGTH, "'target'")
    info_hash = None if q.info_hash is None else _check_len(q.info_hash, ID_LENGTH, "'info_hash'")
    want = b"l" + b"".join(_s(w.encode()) for w in sorted(q.want)) + b"e" if q.want else None
    token = None if q.token is None else _s(q.token)
    port = None if q.port is None else _i(_check_int(q.port, "port", 1, 0xFFFF))
    value, key, sig, seq = _item_fields(q.value, q.key, q.signature, q.seq)
    salt = None
    if q.salt is not None:
        if len(q.salt) > MAX_SALT:
            raise LocalProtocolError(f"'salt' is over {MAX_SALT} bytes")
        salt = _s(q.salt)
    cas = None if q.cas is None else _i(_check_int(q.cas, "'cas'", 0, MAX_SEQ))
    out = [b"d1:ad"]
    if cas is not None:
        out += (b"3:cas", cas)
    out += (b"2:id20:", sender)
    if q.implied_port:
        out.append(b"12:implied_porti1e")
    if info_hash is not None:
        out += (b"9:info_hash20:", info_hash)
    if key is not None:
        out += (b"1:k", key)
    if port is not None:
        out += (b"4:port", port)
    if salt is not None:
        out += (b"4:salt", salt)
    if q.seed:
        out.append(b"4:seedi1e")
    if seq is not None:
        out += (b"3:seq", seq)
    if sig is not None:
        out += (b"3:sig", sig)
    if target is not None:
        out += (b"6:target20:", target)
    if token is not None:
        out += (b"5:token", token)
    if value is not None:
        out += (b"1:v", value)
    if want is not None:
        out += (b"4:want", want)
    out += (b"e1:q", _s(method))
    if q.read_only:
        out.append(b"2:roi1e")
    out += (b"1:t", _s(q.tid))
    if q.version is not None:
        out += (b"1:v", _s(q.version))
    out.append(b"1:y1:qe")
    return b"".join(out)


def _encode_response(r: Response) -> bytes:
    # As _encode_query: checks in field order, output in sorted key order
    # (``id interval k nodes nodes6 num samples seq sig token v values``;
    # top level ``ip r t v y``).
    sender = _check_len(r.sender, ID_LENGTH, "sender id")
    nodes = _s(encode_nodes(r.nodes, v6=False)) if r.nodes else None
    nodes6 = _s(encode_nodes(r.nodes6, v6=True)) if r.nodes6 else None
    values = None
    if r.values:
        parts = [b"l"]
        for addr in r.values:
            raw = compact_addr(addr)
            parts += (b"6:" if len(raw) == 6 else b"18:", raw)
        parts.append(b"e")
        values = b"".join(parts)
    token = None if r.token is None else _s(r.token)
    samples = None
    if r.samples or r.interval is not None or r.num is not None:
        samples = _s(b"".join(_check_len(s, ID_LENGTH, "a sample") for s in r.samples))
    interval = None if r.interval is None else _i(_check_int(r.interval, "'interval'"))
    num = None if r.num is None else _i(_check_int(r.num, "'num'"))
    value, key, sig, seq = _item_fields(r.value, r.key, r.signature, r.seq)
    ip = None if r.ip is None else _s(compact_addr(r.ip))
    out = [b"d"]
    if ip is not None:
        out += (b"2:ip", ip)
    out += (b"1:rd2:id20:", sender)
    if interval is not None:
        out += (b"8:interval", interval)
    if key is not None:
        out += (b"1:k", key)
    if nodes is not None:
        out += (b"5:nodes", nodes)
    if nodes6 is not None:
        out += (b"6:nodes6", nodes6)
    if num is not None:
        out += (b"3:num", num)
    if samples is not None:
        out += (b"7:samples", samples)
    if seq is not None:
        out += (b"3:seq", seq)
    if sig is not None:
        out += (b"3:sig", sig)
    if token is not None:
        out += (b"5:token", token)
    if value is not None:
        out += (b"1:v", value)
    if values is not None:
        out += (b"6:values", values)
    out += (b"e1:t", _s(r.tid))
    if r.version is not None:
        out += (b"1:v", _s(r.version))
    out.append(b"1:y1:re")
    return b"".join(out)


def encode(msg: Message) -> bytes:
    """Canonical bencode of ``msg``; BEP 44 ``v`` is embedded byte for byte.

    Fields our own decoder would refuse (wrong sizes, ports, ...) raise
    :class:`~core.errors.LocalProtocolError`: sending them would be our bug.
    """
    _check_tid(msg.tid)
    if isinstance(msg, Query):
        return _encode_query(msg)
    if isinstance(msg, Response):
        return _encode_response(msg)
    code = _check_int(msg.code, "error code", -_MAX_INT, _MAX_INT)
    text = _s(msg.message.encode("utf-8", "replace"))
    return b"d1:eli%de%se1:t%s1:y1:ee" % (code, text, _s(msg.tid))
