"""Parse and build magnet URIs (BEP 9, BEP 53 ``so=``, v2 ``urn:btmh:``).

A magnet link is a query string: ``magnet:?xt=urn:btih:<hash>&dn=<name>&tr=<url>...``.
:func:`parse_magnet` turns one into a :class:`Magnet`; :meth:`Magnet.uri` turns it
back, and ``parse_magnet(m.uri()) == m`` holds for every ``Magnet`` that can be
constructed (the constructor normalises and validates, so there is one canonical
value per meaning).

Decisions, and why:

* Values are decoded as ``application/x-www-form-urlencoded``: ``+`` is a space,
  ``%XX`` is a byte, and the bytes are UTF-8. libtorrent (hence qBittorrent,
  Deluge) and anacrolix (Go's ``url.ParseQuery``) both read ``+`` as a space,
  so a magnet means the same thing to us as to them. :meth:`Magnet.uri` never
  emits a bare ``+`` inside a value (a literal ``+`` becomes ``%2B``, a space
  ``%20``), so what we build reads the same under either convention.
* A ``%`` not followed by two hex digits is an error, as is a value that is not
  UTF-8 -- except ``dn`` and unknown parameters, which we only show or pass on,
  so there undecodable bytes become U+FFFD instead of rejecting a good link.
* Parameter names match case-insensitively and may carry a numeric index
  (``xt.1``, ``tr.2``), as in the original magnet spec. A repeated ``dn`` keeps
  the first value.
* ``xt`` values that are not BitTorrent (``urn:ed2k:``, ``urn:sha1:``, ...) are
  ignored: multi-network magnets are common and the BitTorrent topic in them is
  still usable. Two *different* v1 (or v2) hashes are an error, because we
  cannot know which torrent was meant. The same hash written twice (say hex and
  base32) is fine.
* Unknown parameters (``xl``, ``x.foo``, ...) are kept, in order, in
  :attr:`Magnet.extra_params` and written back by :meth:`Magnet.uri`, so a link
  passes through us without losing what other programs put in it.
* Repeated ``so`` and ``kt`` parameters add up; repeated list parameters
  (``tr``, ``ws``, ``xs``, ``as``, ``x.pe``) keep first-seen order without
  duplicates.
* Empty values of optional parameters (``&tr=``, ``&dn=``, ``&so=``) mean the
  parameter is absent; such links exist in the wild and carry no information.
* ``so=`` ranges stay ranges, merged and sorted; indices above
  :data:`MAX_FILE_INDEX` are rejected, so ``so=0-999999999999`` costs nothing.
  :meth:`Magnet.selected_files` expands them only up to the real file count.
* ``x.pe`` must be ``host:port`` with a port in 1..65535 and a host that is an
  IPv4 literal, a ``[bracketed]`` IPv6 literal (no zone id) or a DNS name. It is
  written back unescaped, because libtorrent does not percent-decode ``x.pe``.
* There is no fragment: a ``#`` is ordinary data. Whitespace around the whole
  URI (a pasted trailing newline) is ignored.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from ..errors import MagnetError
from ..types import InfoHash

__all__ = ["MAX_FILE_INDEX", "Magnet", "parse_magnet"]

#: Largest file index accepted in ``so=``. Real torrents have far fewer files;
#: the bound keeps a hostile link from asking for absurd expansions.
MAX_FILE_INDEX = 999_999

# Names this module interprets; anything else goes to ``extra_params``.
_KNOWN = frozenset({"xt", "dn", "tr", "ws", "xs", "as", "x.pe", "kt", "so"})

# Characters left unescaped when building: unreserved plus the sub-delimiters and
# ``:/@`` that RFC 3986 allows in a query, minus ``&=+;#%?`` which parsers split
# on or reinterpret. Keeps ``udp://host:80/announce`` readable.
_SAFE = "-._~:/@!$'()*,"
_SAFE_PEER = _SAFE + "[]"

_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
_HEX40 = re.compile(r"[0-9A-Fa-f]{40}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_BASE32_32 = re.compile(r"[A-Za-z2-7]{32}")
_INDEXED = re.compile(r"(.+)\.([0-9]+)")
_DIGITS = re.compile(r"[0-9]+")
_SO_TOKEN = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_KEYWORD_SEP = re.compile(r"[\s+]+")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_DOTTED_NUMERIC = re.compile(r"[0-9.]+")

# Multihash function codes we can name in an error message.
_MULTIHASH_NAMES = {
    0x11: "sha1",
    0x12: "sha2-256",
    0x13: "sha2-512",
    0x14: "sha3-512",
    0x15: "sha3-384",
    0x16: "sha3-256",
    0x17: "sha3-224",
    0x1B: "keccak-256",
    0x1E: "blake3",
    0x20: "sha2-384",
    0xB220: "blake2b-256",
}
_SHA256_CODE = 0x12

# Lower-case ASCII only: str.lower() maps some non-ASCII letters onto ASCII ones
# (KELVIN SIGN -> 'k'), which would let look-alike names pass as real ones.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@dataclass(frozen=True, slots=True)
class Magnet:
    """A parsed magnet link. Construct it directly or with :func:`parse_magnet`.

    The constructor normalises (list fields become de-duplicated tuples in first-
    seen order, an empty ``display_name`` becomes ``None``, ``select_only`` is
    sorted with overlapping and adjacent ranges merged) and raises
    :class:`MagnetError` for anything :meth:`uri` could not write faithfully.
    """

    info_hash: InfoHash
    display_name: str | None = None
    trackers: tuple[str, ...] = ()
    web_seeds: tuple[str, ...] = ()
    exact_sources: tuple[str, ...] = ()
    acceptable_sources: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()
    select_only: tuple[tuple[int, int], ...] = ()
    keywords: tuple[str, ...] = ()
    extra_params: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.info_hash, InfoHash):
            raise MagnetError("info_hash must be an InfoHash")
        name = self.display_name
        if name is not None:
            _check_text(name, "display name")
            if name == "":
                object.__setattr__(self, "display_name", None)
        for field, what in (
            ("trackers", "tracker"),
            ("web_seeds", "web seed"),
            ("exact_sources", "exact source"),
            ("acceptable_sources", "acceptable source"),
            ("peers", "peer"),
            ("keywords", "keyword"),
        ):
            values = _dedupe(getattr(self, field), what)
            object.__setattr__(self, field, values)
        for peer in self.peers:
            _parse_peer(peer)
        for keyword in self.keywords:
            if _KEYWORD_SEP.search(keyword):
                raise MagnetError(f"keyword {keyword!r} contains '+' or whitespace")
        object.__setattr__(self, "select_only", _normalise_ranges(self.select_only))
        extras = tuple(self.extra_params)
        for pair in extras:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise MagnetError(f"extra parameter {pair!r} is not a (name, value) pair")
            key, value = pair
            _check_text(key, "extra parameter name")
            _check_text(value, "extra parameter value")
            if key == "":
                raise MagnetError("extra parameter name is empty")
            if _base_name(key) in _KNOWN:
                raise MagnetError(f"extra parameter {key!r} shadows a magnet field")
        object.__setattr__(self, "extra_params", extras)

    def __str__(self) -> str:
        return self.uri()

    def uri(self) -> str:
        """The magnet URI; ``parse_magnet(m.uri()) == m``.

        The v1 hash is written as 40 lowercase hex digits (the form BEP 9
        prefers), the v2 hash as the ``1220`` sha2-256 multihash in hex.
        """
        parts: list[str] = []
        if self.info_hash.v1 is not None:
            parts.append("xt=urn:btih:" + self.info_hash.v1.hex())
        if self.info_hash.v2 is not None:
            parts.append("xt=urn:btmh:1220" + self.info_hash.v2.hex())
        if self.display_name is not None:
            parts.append("dn=" + _quote(self.display_name))
        for key, values in (
            ("tr", self.trackers),
            ("ws", self.web_seeds),
            ("xs", self.exact_sources),
            ("as", self.acceptable_sources),
        ):
            parts.extend(f"{key}={_quote(v)}" for v in values)
        parts.extend("x.pe=" + quote(p, safe=_SAFE_PEER) for p in self.peers)
        if self.keywords:
            parts.append("kt=" + "+".join(_quote(k) for k in self.keywords))
        if self.select_only:
            spans = (str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.select_only)
            parts.append("so=" + ",".join(spans))
        parts.extend(f"{_quote(k)}={_quote(v)}" for k, v in self.extra_params)
        return "magnet:?" + "&".join(parts)

    def selected_files(self, num_files: int) -> frozenset[int] | None:
        """The file indices chosen by ``so=``, clipped to ``num_files``; ``None`` without ``so=``.

        ``None`` (no preference: download everything) differs from an empty set
        (every listed index lies beyond the torrent's files).
        """
        if num_files < 0:
            raise ValueError(f"num_files must be >= 0, got {num_files}")
        if not self.select_only:
            return None
        chosen: set[int] = set()
        for lo, hi in self.select_only:
            chosen.update(range(lo, min(hi, num_files - 1) + 1))
        return frozenset(chosen)

    @property
    def peer_addresses(self) -> tuple[tuple[str, int], ...]:
        """``x.pe`` as ``(host, port)`` pairs; IPv6 hosts lose their brackets."""
        return tuple(_parse_peer(p) for p in self.peers)


def parse_magnet(uri: str) -> Magnet:
    """Parse a magnet URI. Raises :class:`MagnetError` saying why for any malformed input."""
    if not isinstance(uri, str):
        raise MagnetError(f"a magnet URI must be a str, not {type(uri).__name__}")
    try:
        uri.encode("utf-8")
    except UnicodeEncodeError:
        raise MagnetError("magnet URI contains characters that are not valid Unicode") from None
    text = uri.strip()
    if text[:7].translate(_ASCII_LOWER) != "magnet:":
        raise MagnetError("not a magnet URI: it must start with 'magnet:'")
    if text[7:8] != "?":
        raise MagnetError("magnet URI has no query: expected 'magnet:?'")

    v1: bytes | None = None
    v2: bytes | None = None
    display_name: str | None = None
    lists: dict[str, list[str]] = {k: [] for k in ("tr", "ws", "xs", "as", "x.pe", "kt")}
    ranges: list[tuple[int, int]] = []
    extras: list[tuple[str, str]] = []

    for segment in text[8:].split("&"):
        if not segment:
            continue
        raw_key, _, raw_value = segment.partition("=")
        key = _unquote(raw_key, "parameter name")
        name = _base_name(key)
        if name not in _KNOWN:
            if key:
                value = _unquote(raw_value, f"parameter {_clip(key)!r}", lenient=True)
                extras.append((key, value))
            continue
        if name == "dn":
            value = _unquote(raw_value, "dn", lenient=True)
            if display_name is None and value:
                display_name = value
            continue
        value = _unquote(raw_value, name)
        if name == "xt":
            topic_v1, topic_v2 = _parse_topic(value)
            v1 = _merge_hash(v1, topic_v1, "v1 (btih)")
            v2 = _merge_hash(v2, topic_v2, "v2 (btmh)")
        elif name == "so":
            ranges.extend(_parse_select_only(value))
        elif name == "kt":
            lists["kt"].extend(k for k in _KEYWORD_SEP.split(value) if k)
        elif value:
            if name == "x.pe":
                _parse_peer(value)
            lists[name].append(value)

    if v1 is None and v2 is None:
        raise MagnetError("magnet URI has no BitTorrent info-hash (xt=urn:btih: or xt=urn:btmh:)")
    return Magnet(
        info_hash=InfoHash(v1=v1, v2=v2),
        display_name=display_name,
        trackers=tuple(lists["tr"]),
        web_seeds=tuple(lists["ws"]),
        exact_sources=tuple(lists["xs"]),
        acceptable_sources=tuple(lists["as"]),
        peers=tuple(lists["x.pe"]),
        select_only=tuple(ranges),
        keywords=tuple(lists["kt"]),
        extra_params=tuple(extras),
    )


# --- helpers -----------------------------------------------------------------


def _quote(value: str) -> str:
    return quote(value, safe=_SAFE)


def _unquote(raw: str, what: str, *, lenient: bool = False) -> str:
    """Form-decode one key or value: ``+`` is a space, ``%XX`` a byte, bytes are UTF-8."""
    text = raw.replace("+", " ")
    if "%" not in text:
        return text
    pieces = text.split("%")
    data = bytearray(pieces[0].encode("utf-8"))
    for piece in pieces[1:]:
        if not _HEX2.match(piece):
            raise MagnetError(f"{what}: '%' must be followed by two hex digits")
        data.append(int(piece[:2], 16))
        data += piece[2:].encode("utf-8")
    try:
        return data.decode("utf-8", errors="replace" if lenient else "strict")
    except UnicodeDecodeError as exc:
        raise MagnetError(f"{what}: percent-decoded bytes are not UTF-8 ({exc.reason})") from None


def _base_name(key: str) -> str:
    """``'TR.2'`` -> ``'tr'``: the parameter a possibly indexed key stands for."""
    key = key.translate(_ASCII_LOWER)
    match = _INDEXED.fullmatch(key)
    return match.group(1) if match else key


def _parse_topic(value: str) -> tuple[bytes | None, bytes | None]:
    """One ``xt`` value -> (v1, v2); both ``None`` for a non-BitTorrent URN."""
    if value == "":
        raise MagnetError("xt is empty")
    prefix = value[:9].translate(_ASCII_LOWER)
    body = value[9:]
    if prefix == "urn:btih:":
        if _HEX40.fullmatch(body):
            return bytes.fromhex(body), None
        if _BASE32_32.fullmatch(body):
            try:
                return base64.b32decode(body.upper()), None
            except binascii.Error:  # pragma: no cover - the regex admits only valid base32
                raise MagnetError(f"xt: invalid base32 info-hash {body!r}") from None
        raise MagnetError(
            f"xt: btih info-hash must be 40 hex or 32 base32 characters, got {len(body)} "
            f"characters {_clip(body)!r}"
        )
    if prefix == "urn:btmh:":
        return None, _parse_multihash(body)
    return None, None


def _parse_multihash(body: str) -> bytes:
    """Hex multihash -> the 32-byte SHA-256 digest; other functions are refused by name."""
    if not _HEX.fullmatch(body):
        raise MagnetError(
            f"xt: btmh value must be an even number of hex digits, got {_clip(body)!r}"
        )
    data = bytes.fromhex(body)
    code, pos = _varint(data, 0)
    if code != _SHA256_CODE:
        name = _MULTIHASH_NAMES.get(code, "unknown")
        raise MagnetError(
            f"xt: unsupported multihash function 0x{code:x} ({name}); "
            "BitTorrent v2 uses sha2-256 (0x12)"
        )
    length, pos = _varint(data, pos)
    if length != 32:
        raise MagnetError(f"xt: a sha2-256 multihash must declare 32 bytes, not {length}")
    digest = data[pos:]
    if len(digest) != 32:
        raise MagnetError(f"xt: sha2-256 multihash has {len(digest)} digest bytes, expected 32")
    return digest


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 varint (multihash allows at most 9 bytes)."""
    value = 0
    for shift in range(0, 63, 7):
        if pos >= len(data):
            raise MagnetError("xt: btmh multihash is truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and shift:
                # Multihash demands minimal varints: one code, one spelling.
                raise MagnetError("xt: btmh multihash varint is not minimally encoded")
            return value, pos
    raise MagnetError("xt: btmh multihash varint is too long")


def _merge_hash(current: bytes | None, new: bytes | None, what: str) -> bytes | None:
    if new is None:
        return current
    if current is not None and current != new:
        raise MagnetError(
            f"conflicting {what} info-hashes in one magnet: {current.hex()} and {new.hex()}"
        )
    return new


def _parse_select_only(value: str) -> list[tuple[int, int]]:
    """BEP 53 ``so=0,2,4-6`` -> ``[(0, 0), (2, 2), (4, 6)]`` without expanding ranges."""
    if value == "":
        return []
    ranges = []
    for token in value.split(","):
        match = _SO_TOKEN.fullmatch(token)
        if match is None:
            if token == "":
                raise MagnetError("so: empty entry")
            if token.startswith("-"):
                raise MagnetError(f"so: negative file index in {_clip(token)!r}")
            raise MagnetError(f"so: {_clip(token)!r} is not an index or a range like 4-6")
        lo = _file_index(match.group(1))
        hi = lo if match.group(2) is None else _file_index(match.group(2))
        if hi < lo:
            raise MagnetError(f"so: reversed range {lo}-{hi}")
        ranges.append((lo, hi))
    return ranges


def _file_index(digits: str) -> int:
    # Trim leading zeros and check the length before int(): a million-digit
    # string must not reach int() (slow, and CPython raises ValueError past 4300).
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(MAX_FILE_INDEX)) or int(significant) > MAX_FILE_INDEX:
        raise MagnetError(f"so: file index {_clip(significant)} exceeds the limit {MAX_FILE_INDEX}")
    return int(significant)


def _normalise_ranges(spans: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Validate, sort and merge overlapping or adjacent inclusive ranges."""
    checked = []
    for span in spans:
        if not (isinstance(span, tuple) and len(span) == 2):
            raise MagnetError(f"select_only entry {span!r} is not a (first, last) pair")
        lo, hi = span
        for bound in (lo, hi):
            if not isinstance(bound, int) or isinstance(bound, bool):
                raise MagnetError(f"select_only bound {bound!r} is not an int")
            if not 0 <= bound <= MAX_FILE_INDEX:
                raise MagnetError(f"select_only index {bound} is outside 0..{MAX_FILE_INDEX}")
        if hi < lo:
            raise MagnetError(f"select_only range {lo}-{hi} is reversed")
        checked.append((lo, hi))
    checked.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in checked:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _parse_peer(peer: str) -> tuple[str, int]:
    """Validate ``host:port`` / ``[v6]:port`` and return ``(host, port)``."""
    host, sep, port_text = peer.rpartition(":")
    if not sep or not host:
        raise MagnetError(f"x.pe: {_clip(peer)!r} is not host:port")
    if not _DIGITS.fullmatch(port_text) or len(port_text) > 5:
        raise MagnetError(f"x.pe: invalid port {_clip(port_text)!r} in {_clip(peer)!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise MagnetError(f"x.pe: port {port} is outside 1..65535")
    if host.startswith("["):
        if not host.endswith("]"):
            raise MagnetError(f"x.pe: unterminated IPv6 literal in {_clip(peer)!r}")
        literal = host[1:-1]
        if "%" in literal:
            raise MagnetError("x.pe: IPv6 zone ids are not allowed")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise MagnetError(f"x.pe: invalid IPv6 address {_clip(literal)!r}") from None
        return literal, port
    if ":" in host:
        raise MagnetError(f"x.pe: IPv6 address must be in brackets: {_clip(peer)!r}")
    if _DOTTED_NUMERIC.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise MagnetError(f"x.pe: invalid IPv4 address {_clip(host)!r}") from None
        return host, port
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise MagnetError(f"x.pe: invalid host name {_clip(host)!r}")
    return host, port


def _check_text(value: object, what: str) -> None:
    if not isinstance(value, str):
        raise MagnetError(f"{what} must be a str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MagnetError(f"{what} is not valid Unicode (lone surrogate)") from None


def _dedupe(values: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise MagnetError(f"{what}s must be a sequence of str, not a single str")
    seen: dict[str, None] = {}
    for value in values:
        _check_text(value, what)
        if value == "":
            raise MagnetError(f"{what} is empty")
        seen.setdefault(value, None)
    return tuple(seen)


def _clip(text: str, limit: int = 60) -> str:
    """Shorten hostile input before echoing it in an error message."""
    return text if len(text) <= limit else text[:limit] + "..."
