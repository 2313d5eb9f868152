"""Bencode: strict validation with byte offsets, decoding and encoding.

Decoding and encoding are done by bencode.py configured so that strings stay
``bytes`` and dict order is kept.  In front of it sits a small scanner of our
own, for three jobs bencode.py cannot do:

* validate strictly, with limits on nesting depth and size, and report every
  fault as :class:`~core.errors.BencodeError` carrying the byte offset (no other
  exception type ever escapes);
* return the raw byte span of a value: the v1 info-hash is SHA-1 of the
  ``info`` bytes exactly as received, so a torrent with unsorted keys keeps
  its true hash; we never re-encode to hash;
* decode a prefix and return where it ended: a ``ut_metadata`` data message
  is a bencoded dict followed by raw bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bencodepy

from ..errors import BencodeError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "BencodeError",
    "decode",
    "decode_prefix",
    "decode_with_spans",
    "dict_spans",
    "encode",
    "first_unsorted_key",
    "scan",
]

#: Deepest nesting accepted.  Real torrents nest a v2 file tree one level per
#: directory; 256 is far beyond any honest file and far below Python's
#: recursion limit, which bencode.py's recursive decoder would otherwise hit.
DEFAULT_MAX_DEPTH = 256
#: Largest input accepted by default (a .torrent for a multi-terabyte payload
#: with small pieces stays well under this).
DEFAULT_MAX_SIZE = 64 << 20

_codec = bencodepy.Bencode(encoding=None, dict_ordered=True, max_depth=DEFAULT_MAX_DEPTH + 1)

_DIGITS = frozenset(b"0123456789")
# Longest integer literal we accept: 64-bit values need at most 20 characters.
_MAX_INT_DIGITS = 32


def _scan_int(data: bytes, pos: int, end_limit: int) -> int:
    """Validate ``i<digits>e`` at ``pos`` (which holds ``i``); return the end offset."""
    start = pos + 1
    end = data.find(b"e", start, min(end_limit, start + _MAX_INT_DIGITS + 2))
    if end < 0:
        if data.find(b"e", start, end_limit) < 0:
            raise BencodeError("unterminated integer", pos)
        raise BencodeError("integer literal too long", pos)
    body = data[start:end]
    digits = body[1:] if body[:1] == b"-" else body
    if not digits or not all(c in _DIGITS for c in digits):
        raise BencodeError("invalid integer", pos)
    if digits[0] == 0x30 and (len(digits) > 1 or body[:1] == b"-"):
        raise BencodeError("integer with leading zero or negative zero", pos)
    return end + 1


def _scan_string(data: bytes, pos: int, end_limit: int) -> tuple[int, int]:
    """Validate ``<len>:<bytes>`` at ``pos``; return (payload start, end offset)."""
    colon = data.find(b":", pos, min(end_limit, pos + _MAX_INT_DIGITS))
    if colon < 0:
        raise BencodeError("invalid string length", pos)
    digits = data[pos:colon]
    if not digits or not all(c in _DIGITS for c in digits):
        raise BencodeError("invalid string length", pos)
    if digits[0] == 0x30 and len(digits) > 1:
        raise BencodeError("string length with leading zero", pos)
    length = int(digits)
    start = colon + 1
    if length > end_limit - start:
        raise BencodeError(f"string length {length} runs past the end of the data", pos)
    return start, start + length


def scan(
    data: bytes,
    pos: int = 0,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    end_limit: int | None = None,
) -> int:
    """Validate the single value starting at ``pos`` and return its end offset.

    Strict BEP 3: no leading zeros, no ``-0``, dict keys must be strings and
    unique.  Keys need not be sorted (real torrents sometimes are not; the
    raw span keeps their hash).  Iterative, so hostile nesting cannot blow
    the stack; nesting beyond ``max_depth`` is an error.
    """
    limit = len(data) if end_limit is None else end_limit
    # Stack of open containers: for dicts we remember the keys seen so far and
    # whether the next item must be a key.
    stack: list[tuple[int, set[bytes] | None]] = []
    expect_key = False
    while True:
        if pos >= limit:
            raise BencodeError("unexpected end of data", pos)
        c = data[pos]
        if stack and c == 0x65:  # 'e' closes the innermost container
            if stack[-1][1] is not None and not expect_key:
                raise BencodeError("dict key without a value", pos)
            stack.pop()
            pos += 1
            if not stack:
                return pos
            expect_key = stack[-1][1] is not None
            continue
        if expect_key:
            if c not in _DIGITS:
                raise BencodeError("dict key is not a string", pos)
            start, end = _scan_string(data, pos, limit)
            keys = stack[-1][1]
            assert keys is not None
            key = data[start:end]
            if key in keys:
                raise BencodeError(f"duplicate dict key {key!r}", pos)
            keys.add(key)
            pos = end
            expect_key = False
            continue
        if c == 0x69:  # 'i'
            pos = _scan_int(data, pos, limit)
        elif c in _DIGITS:
            pos = _scan_string(data, pos, limit)[1]
        elif c == 0x6C or c == 0x64:  # 'l' / 'd'
            if len(stack) >= max_depth:
                raise BencodeError(f"nesting deeper than {max_depth}", pos)
            stack.append((pos, set() if c == 0x64 else None))
            pos += 1
            expect_key = c == 0x64
            continue
        else:
            raise BencodeError(f"unexpected byte {bytes([c])!r}", pos)
        # A scalar value was consumed.
        if not stack:
            return pos
        expect_key = stack[-1][1] is not None


def _check_size(data: bytes, max_size: int) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BencodeError(f"expected bytes, got {type(data).__name__}", 0)
    if len(data) > max_size:
        raise BencodeError(f"input of {len(data)} bytes exceeds the {max_size}-byte limit", 0)


def decode_prefix(
    data: bytes,
    pos: int = 0,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_size: int = DEFAULT_MAX_SIZE,
) -> tuple[Any, int]:
    """Decode the value starting at ``pos``; return ``(value, end_offset)``.

    Bytes after the value are left alone (a ``ut_metadata`` data message
    carries raw piece bytes after its dict).
    """
    data = bytes(data)
    end = scan(data, pos, max_depth=max_depth, end_limit=min(len(data), pos + max_size))
    try:
        value = _codec.decode(data[pos:end])
    except Exception as exc:  # pragma: no cover - the scanner already validated
        raise BencodeError(f"undecodable value ({exc})", pos) from None
    return value, end


def decode(
    data: bytes,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_size: int = DEFAULT_MAX_SIZE,
) -> Any:
    """Decode exactly one value; trailing bytes are an error.

    Strings come back as ``bytes``; dicts keep the order they had on the wire.
    """
    _check_size(data, max_size)
    value, end = decode_prefix(data, 0, max_depth=max_depth, max_size=max_size)
    if end != len(data):
        raise BencodeError("trailing data after the value", end)
    return value


def dict_spans(
    data: bytes, pos: int = 0, *, max_depth: int = DEFAULT_MAX_DEPTH
) -> dict[bytes, tuple[int, int]]:
    """Map each key of the dict at ``pos`` to the ``(start, end)`` span of its raw value.

    ``data[start:end]`` is the value exactly as it was received, which is
    what an info-hash is computed over.
    """
    data = bytes(data)
    limit = len(data)
    if pos >= limit or data[pos] != 0x64:
        raise BencodeError("expected a dict", pos)
    spans: dict[bytes, tuple[int, int]] = {}
    cur = pos + 1
    while True:
        if cur >= limit:
            raise BencodeError("unexpected end of data", cur)
        if data[cur] == 0x65:
            return spans
        if data[cur] not in _DIGITS:
            raise BencodeError("dict key is not a string", cur)
        kstart, kend = _scan_string(data, cur, limit)
        key = data[kstart:kend]
        if key in spans:
            raise BencodeError(f"duplicate dict key {key!r}", cur)
        vend = scan(data, kend, max_depth=max_depth - 1, end_limit=limit)
        spans[key] = (kend, vend)
        cur = vend


def decode_with_spans(
    data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, max_size: int = DEFAULT_MAX_SIZE
) -> tuple[Any, dict[bytes, tuple[int, int]]]:
    """Decode a top-level dict and return it with the raw spans of its values.

    The same as :func:`decode` plus :func:`dict_spans`, with one validating
    scan instead of two: ``dict_spans`` already scans every value, so only
    the end of the dict remains to be checked before bencode.py decodes.
    """
    _check_size(data, max_size)
    data = bytes(data)
    spans = dict_spans(data, max_depth=max_depth)
    end = max((e for _, e in spans.values()), default=1) + 1 if spans else 2
    if end != len(data):
        raise BencodeError("trailing data after the value", end)
    try:
        value = _codec.decode(data)
    except Exception as exc:  # pragma: no cover - dict_spans already validated
        raise BencodeError(f"undecodable value ({exc})", 0) from None
    return value, spans


def first_unsorted_key(data: bytes, pos: int = 0) -> tuple[int, bytes] | None:
    """``(offset, key)`` of the first dict key not in strictly ascending raw-byte
    order anywhere in the (already validated) value at ``pos``, else ``None``.

    BEP 3 requires sorted keys, but v1 torrents in the wild break the rule
    and still work because their hash covers the raw bytes, so the decoders
    here accept them; this is the separate, explicit check for the places
    that must refuse them (BEP 52 info dicts, as libtorrent does).
    Iterative, like :func:`scan`.
    """
    data = bytes(data)
    limit = len(data)
    # per open container: the previous key of a dict (b"" before the first
    # key, which every key sorts after or equals only if empty), None for a list
    stack: list[bytes | None] = []
    first: list[bool] = []
    expect_key = False
    while True:
        c = data[pos]
        if stack and c == 0x65:
            stack.pop()
            first.pop()
            pos += 1
            if not stack:
                return None
            expect_key = stack[-1] is not None
            continue
        if expect_key:
            start, end = _scan_string(data, pos, limit)
            key = data[start:end]
            prev = stack[-1]
            assert prev is not None
            if not first[-1] and key <= prev:
                return pos, key
            stack[-1] = key
            first[-1] = False
            pos = end
            expect_key = False
            continue
        if c == 0x69:
            pos = _scan_int(data, pos, limit)
        elif c in _DIGITS:
            pos = _scan_string(data, pos, limit)[1]
        else:  # 'l' or 'd' (the data was validated)
            stack.append(b"" if c == 0x64 else None)
            first.append(True)
            pos += 1
            expect_key = c == 0x64
            continue
        if not stack:
            return None
        expect_key = stack[-1] is not None


def _check_encodable(value: object, depth: int) -> None:
    if depth > DEFAULT_MAX_DEPTH:
        raise BencodeError(f"nesting deeper than {DEFAULT_MAX_DEPTH}", 0)
    if isinstance(value, bool):
        raise BencodeError("bool is not bencodable (use int)", 0)
    if isinstance(value, bytes | bytearray | str | int):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_encodable(item, depth + 1)
        return
    if isinstance(value, Mapping):
        seen: set[bytes] = set()
        for key, item in value.items():
            if not isinstance(key, bytes | str):
                raise BencodeError(f"dict key {key!r} is not a string", 0)
            raw = key.encode() if isinstance(key, str) else bytes(key)
            if raw in seen:
                raise BencodeError(f"duplicate dict key {raw!r}", 0)
            seen.add(raw)
            _check_encodable(item, depth + 1)
        return
    raise BencodeError(f"{type(value).__name__} is not bencodable", 0)


def encode(value: Any) -> bytes:
    """Encode ``value`` canonically (dict keys sorted as raw bytes, ``str`` as UTF-8)."""
    _check_encodable(value, 0)
    try:
        out = _codec.encode(value)
    except Exception as exc:  # pragma: no cover - guarded by _check_encodable
        raise BencodeError(f"cannot encode ({exc})", 0) from None
    return bytes(out)
