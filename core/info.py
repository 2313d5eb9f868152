"""The torrent ``info`` dict (v1, v2 and hybrid): validation and the file/piece layout.

Parsing is strict: the ``info`` dict decides what we download and where we
write it.  Malformed bencode raises :class:`~core.errors.BencodeError`;
anything else wrong raises :class:`~core.errors.MetainfoError`.  The .torrent
around the info dict is :mod:`core.metainfo`.

Conventions:

* ``Info.files`` lists every file in order, padding files included
  (``FileEntry.is_padding``).  A single-file torrent has one entry whose
  ``path`` is ``()`` and ``Info.is_single_file`` is true; the file is stored
  as ``<root>/<name>``.  In a multi-file torrent paths are relative to the
  torrent's directory ``<root>/<name>``.  Use :meth:`Info.file_path` to get
  a checked location on disk.
* ``FileEntry.offset`` is a position in the torrent's linear piece space.  For
  v1 and hybrid torrents this is the v1 concatenation (padding files
  included); for pure v2 each non-empty file starts on a piece boundary, so
  piece ``i`` always covers ``[i * piece_length, ...)``.
* Limits: piece length up to 4 GiB, at most 2**24 pieces, total length up to
  2**50 bytes; beyond that a torrent is rejected rather than letting a caller
  allocate a bitfield of absurd size.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any

from . import merkle
from .bencoding import decode
from .errors import MetainfoError
from .safepath import check_unique, resolve_under, safe_component, safe_path
from .types import InfoHash

__all__ = [
    "MAX_PIECES",
    "MAX_PIECE_LENGTH",
    "MAX_TOTAL_LENGTH",
    "MIN_PIECE_LENGTH",
    "FileEntry",
    "Info",
    "info_hash_of",
    "parse_info",
    "parse_info_dict",
]

MIN_PIECE_LENGTH = 16 * 1024
MAX_PIECE_LENGTH = 1 << 32
MAX_PIECES = 1 << 24
MAX_TOTAL_LENGTH = 1 << 50


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a torrent (see the module docstring for ``path`` and ``offset``)."""

    path: tuple[str, ...]
    length: int
    offset: int
    attr: str = ""
    pieces_root: bytes | None = None

    @property
    def is_padding(self) -> bool:
        """BEP 47 padding file: zeros that are hashed but never written."""
        return "p" in self.attr

    @property
    def is_executable(self) -> bool:
        return "x" in self.attr

    @property
    def is_hidden(self) -> bool:
        return "h" in self.attr

    @property
    def is_symlink(self) -> bool:
        return "l" in self.attr

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Info:
    """A validated ``info`` dict.  Build it with :func:`parse_info` or :class:`Metainfo`."""

    name: str
    piece_length: int
    pieces: bytes
    files: tuple[FileEntry, ...]
    private: bool
    meta_version: int
    length: int
    source: str | None = None
    is_single_file: bool = False

    # -- kind -------------------------------------------------------------

    @property
    def is_v1(self) -> bool:
        """Carries v1 SHA-1 piece hashes (v1-only or hybrid)."""
        return self.meta_version == 1 or bool(self.pieces)

    @property
    def is_v2(self) -> bool:
        """Carries a v2 file tree (v2-only or hybrid)."""
        return self.meta_version == 2

    @property
    def is_hybrid(self) -> bool:
        return self.is_v1 and self.is_v2

    # -- files --------------------------------------------------------------

    def payload_files(self) -> tuple[FileEntry, ...]:
        """The files without BEP 47 padding files."""
        return tuple(f for f in self.files if not f.is_padding)

    @property
    def total_size(self) -> int:
        """Payload bytes (padding excluded)."""
        return sum(f.length for f in self.files if not f.is_padding)

    def display_path(self, entry: FileEntry) -> str:
        """``name/dir/file`` for humans (``name`` alone for a single-file torrent)."""
        return "/".join((self.name, *entry.path))

    def file_path(self, entry: FileEntry, root: str | PathLike[str]) -> Path:
        """Where ``entry`` lives under the download directory ``root``.

        Every component was checked at parse time; this re-checks them and
        proves, on the real file system, that the result stays under
        ``root``.  Padding files are never written and have no location.
        """
        if entry.is_padding:
            raise MetainfoError(f"padding file {self.display_path(entry)!r} is never written")
        return resolve_under(Path(root), (self.name, *entry.path))

    # -- pieces -------------------------------------------------------------

    @property
    def num_pieces(self) -> int:
        if self.pieces:
            return len(self.pieces) // 20
        return -(-self.length // self.piece_length)

    @cached_property
    def _data_files(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(offsets, indices) of non-empty files, for bisecting piece -> file."""
        idx = tuple(i for i, f in enumerate(self.files) if f.length)
        return tuple(self.files[i].offset for i in idx), idx

    def _check_piece(self, index: int) -> None:
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} out of range 0..{self.num_pieces - 1}")

    def piece_offset(self, index: int) -> int:
        self._check_piece(index)
        return index * self.piece_length

    def piece_size(self, index: int) -> int:
        """Bytes in piece ``index`` of the linear space.

        v1/hybrid: ``piece_length`` except for the last piece (padding bytes
        count).  Pure v2: a piece never spans two files, so the last piece of
        every file may be short.
        """
        self._check_piece(index)
        start = index * self.piece_length
        if self.pieces:
            return min(self.piece_length, self.length - start)
        entry = self.files[self.file_at(start)]
        return min(self.piece_length, entry.end - start)

    def file_at(self, offset: int) -> int:
        """Index of the non-empty file covering byte ``offset`` (for pure v2, the
        file whose piece-aligned span covers it)."""
        offsets, idx = self._data_files
        k = bisect_right(offsets, offset) - 1
        if k < 0 or offset >= self.length:
            raise IndexError(f"offset {offset} outside the torrent")
        return idx[k]

    def files_in_piece(self, index: int) -> list[int]:
        """Indices (into ``files``) of the non-empty files overlapping piece ``index``."""
        start = self.piece_offset(index)
        end = start + self.piece_size(index)
        offsets, idx = self._data_files
        k = max(bisect_right(offsets, start) - 1, 0)
        out = []
        while k < len(idx) and offsets[k] < end:
            if self.files[idx[k]].end > start:
                out.append(idx[k])
            k += 1
        return out

    def file_pieces(self, file_index: int) -> range:
        """The pieces covering file ``file_index`` (empty range for an empty file)."""
        entry = self.files[file_index]
        first = entry.offset // self.piece_length
        if entry.length == 0:
            return range(first, first)
        return range(first, (entry.end - 1) // self.piece_length + 1)

    def piece_hash_v1(self, index: int) -> bytes:
        self._check_piece(index)
        if not self.pieces:
            raise MetainfoError("a pure v2 torrent has no v1 piece hashes")
        return self.pieces[20 * index : 20 * index + 20]


# ---------------------------------------------------------------------------
# parsing helpers


def _text(raw: bytes, utf8: object = None) -> str:
    """Decode a string, preferring the ``*.utf-8`` variant when it is a byte string."""
    if isinstance(utf8, bytes):
        raw = utf8
    return raw.decode("utf-8", "replace")


def _int(d: Mapping[bytes, Any], key: bytes, where: str, *, minimum: int = 0) -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MetainfoError(f"{where}: {key.decode()!r} missing or not an integer")
    if value < minimum:
        raise MetainfoError(f"{where}: {key.decode()!r} is {value}, below {minimum}")
    if value > MAX_TOTAL_LENGTH:
        raise MetainfoError(f"{where}: {key.decode()!r} is {value}, above {MAX_TOTAL_LENGTH}")
    return value


def _attr(d: Mapping[bytes, Any]) -> str:
    value = d.get(b"attr", b"")
    if not isinstance(value, bytes):
        raise MetainfoError("'attr' is not a string")
    return value.decode("ascii", "replace")


def _components(raw: object, where: str) -> list[str]:
    if not isinstance(raw, list) or not raw:
        raise MetainfoError(f"{where}: 'path' must be a non-empty list")
    if not all(isinstance(c, bytes) for c in raw):
        raise MetainfoError(f"{where}: 'path' holds a non-string component")
    return [c.decode("utf-8", "replace") for c in raw]


def _v1_files(info: Mapping[bytes, Any], name: str) -> tuple[list[FileEntry], bool]:
    """Parse the v1 file list (``length`` or ``files``) with v1 offsets."""
    if b"files" in info:
        if b"length" in info:
            raise MetainfoError("info has both 'length' and 'files'")
        raw = info[b"files"]
        if not isinstance(raw, list) or not raw:
            raise MetainfoError("'files' must be a non-empty list")
        out: list[FileEntry] = []
        offset = 0
        for n, item in enumerate(raw):
            where = f"files[{n}]"
            if not isinstance(item, dict):
                raise MetainfoError(f"{where} is not a dict")
            length = _int(item, b"length", where)
            utf8 = item.get(b"path.utf-8")
            parts = _components(utf8 if isinstance(utf8, list) else item.get(b"path"), where)
            out.append(FileEntry(safe_path(parts), length, offset, _attr(item)))
            offset += length
        return out, False
    length = _int(info, b"length", "info")
    return [FileEntry((), length, 0, _attr(info))], True


def _walk_tree(
    node: Any, prefix: list[str], out: list[tuple[list[str], int, str, bytes | None]]
) -> None:
    """Collect ``(raw components, length, attr, pieces_root)`` from a v2 file tree."""
    if not isinstance(node, dict) or not node:
        raise MetainfoError(f"file tree node {'/'.join(prefix)!r} is not a non-empty dict")
    for key, child in node.items():
        if not isinstance(child, dict):
            raise MetainfoError(f"file tree entry {'/'.join([*prefix, repr(key)])!r} is no dict")
        if key == b"":
            raise MetainfoError(f"file tree: empty name under {'/'.join(prefix)!r}")
        path = [*prefix, key.decode("utf-8", "replace")]
        if b"" in child:
            where = "/".join(path)
            if len(child) != 1:
                raise MetainfoError(f"file tree entry {where!r} is both a file and a directory")
            leaf = child[b""]
            if not isinstance(leaf, dict):
                raise MetainfoError(f"file tree entry {where!r} is not a dict")
            length = _int(leaf, b"length", where)
            root = leaf.get(b"pieces root")
            if length:
                if not isinstance(root, bytes) or len(root) != merkle.HASH_SIZE:
                    raise MetainfoError(f"{where!r}: 'pieces root' missing or not 32 bytes")
            else:
                root = None
            out.append((path, length, _attr(leaf), root))
        else:
            _walk_tree(child, path, out)


def _v2_files(
    info: Mapping[bytes, Any], piece_length: int
) -> tuple[list[tuple[tuple[str, ...], int, str, bytes | None]], bool]:
    tree = info.get(b"file tree")
    raw: list[tuple[list[str], int, str, bytes | None]] = []
    _walk_tree(tree, [], raw)
    single = len(raw) == 1 and len(raw[0][0]) == 1
    out = []
    for parts, length, attr, root in raw:
        path = () if single else safe_path(parts)
        out.append((path, length, attr, root))
    return out, single


def _v2_layout(
    files: list[tuple[tuple[str, ...], int, str, bytes | None]], piece_length: int
) -> list[FileEntry]:
    """Pure v2 offsets: every file starts on a piece boundary (virtual padding)."""
    out = []
    pos = 0
    for path, length, attr, root in files:
        pos = -(-pos // piece_length) * piece_length
        out.append(FileEntry(path, length, pos, attr, root))
        pos += length
    return out


def _merge_hybrid(
    v1: list[FileEntry], v2: list[tuple[tuple[str, ...], int, str, bytes | None]], pl: int
) -> list[FileEntry]:
    """Check that the v1 and v2 views describe the same files; attach pieces roots."""
    payload = [f for f in v1 if not f.is_padding]
    if [(f.path, f.length) for f in payload] != [(p, n) for p, n, _, _ in v2]:
        raise MetainfoError("hybrid torrent: v1 'files' and v2 'file tree' disagree")
    roots = iter(v2)
    out = []
    for f in v1:
        if f.is_padding:
            out.append(f)
            continue
        root = next(roots)[3]
        if f.length and f.offset % pl:
            raise MetainfoError(f"hybrid torrent: file {'/'.join(f.path)!r} is not piece-aligned")
        out.append(FileEntry(f.path, f.length, f.offset, f.attr, root))
    return out


def parse_info_dict(info: Any) -> Info:
    """Validate a decoded ``info`` dict (strings as bytes) and build :class:`Info`."""
    if not isinstance(info, dict):
        raise MetainfoError("'info' is not a dict")
    raw_name = info.get(b"name")
    if not isinstance(raw_name, bytes):
        raise MetainfoError("info: 'name' missing or not a string")
    name = safe_component(_text(raw_name, info.get(b"name.utf-8")))
    piece_length = info.get(b"piece length")
    if not isinstance(piece_length, int) or isinstance(piece_length, bool):
        raise MetainfoError("info: 'piece length' missing or not an integer")
    if (
        piece_length < MIN_PIECE_LENGTH
        or piece_length > MAX_PIECE_LENGTH
        or piece_length & (piece_length - 1)
    ):
        raise MetainfoError(
            f"piece length {piece_length} is not a power of two between "
            f"{MIN_PIECE_LENGTH} and {MAX_PIECE_LENGTH}"
        )
    version = info.get(b"meta version", 1)
    if version not in (1, 2) or isinstance(version, bool):
        raise MetainfoError(f"unsupported meta version {version!r}")
    pieces = info.get(b"pieces")
    if pieces is not None and not isinstance(pieces, bytes):
        raise MetainfoError("info: 'pieces' is not a string")
    if version == 1 and pieces is None:
        raise MetainfoError("v1 info has no 'pieces'")
    private_raw = info.get(b"private", 0)
    private = isinstance(private_raw, int) and private_raw == 1
    source_raw = info.get(b"source")
    source = _text(source_raw) if isinstance(source_raw, bytes) else None

    files: list[FileEntry]
    if version == 2:
        v2, single = _v2_files(info, piece_length)
        if pieces is None:
            files = _v2_layout(v2, piece_length)
        else:
            v1, single1 = _v1_files(info, name)
            if single1 != single:
                raise MetainfoError("hybrid torrent: v1 and v2 disagree on single-file layout")
            files = _merge_hybrid(v1, v2, piece_length)
    else:
        files, single = _v1_files(info, name)

    check_unique(f.path for f in files if not f.is_padding)
    if pieces is not None:
        length = sum(f.length for f in files)
    else:
        length = max((f.end for f in files if f.length), default=0)
    if length > MAX_TOTAL_LENGTH:
        raise MetainfoError(f"total length {length} exceeds {MAX_TOTAL_LENGTH}")
    if sum(f.length for f in files if not f.is_padding) == 0:
        raise MetainfoError("torrent has no data (every file is empty)")
    expected = -(-length // piece_length)
    if expected > MAX_PIECES:
        raise MetainfoError(f"{expected} pieces exceed the limit of {MAX_PIECES}")
    if pieces is not None:
        if len(pieces) % 20:
            raise MetainfoError(f"'pieces' is {len(pieces)} bytes, not a multiple of 20")
        if len(pieces) // 20 != expected:
            raise MetainfoError(
                f"'pieces' holds {len(pieces) // 20} hashes but {length} bytes "
                f"need {expected} pieces of {piece_length}"
            )
    return Info(
        name=name,
        piece_length=piece_length,
        pieces=pieces or b"",
        files=tuple(files),
        private=private,
        meta_version=version,
        length=length,
        source=source,
        is_single_file=single,
    )


def info_hash_of(raw_info: bytes, info: Info) -> InfoHash:
    """v1: SHA-1 of the raw bytes; v2: SHA-256 of the same bytes; hybrid: both."""
    return InfoHash(
        v1=hashlib.sha1(raw_info).digest() if info.is_v1 else None,
        v2=hashlib.sha256(raw_info).digest() if info.is_v2 else None,
    )


def parse_info(raw_info: bytes) -> tuple[Info, InfoHash]:
    """Parse a bare ``info`` dict (e.g. from ``ut_metadata``) and hash its raw bytes."""
    info = parse_info_dict(decode(raw_info))
    return info, info_hash_of(bytes(raw_info), info)
