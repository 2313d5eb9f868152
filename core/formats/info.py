"""The torrent ``info`` dict (v1, v2 and hybrid): validation and the file/piece layout.

Parsing is strict: the ``info`` dict decides what we download and where we
write it.  Malformed bencode raises :class:`~core.errors.BencodeError`;
anything else wrong raises :class:`~core.errors.MetainfoError`.  The .torrent
around the info dict is :mod:`core.formats.metainfo`.

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
* Names are sanitized, not refused (:mod:`core.formats.safepath`, libtorrent's
  rules): ``..``, separators, invalid UTF-8, over-long names and duplicate
  paths are turned into safe, distinct names, and ``Info.renamed`` lists
  every change (original -> safe) so a user can be told.  What cannot be
  made consistent is refused: a hybrid torrent whose v1 and v2 views
  disagree, a v2 file without a usable ``pieces root``.
* BEP 47 attributes: ``p`` padding (a path is optional), ``x`` executable,
  ``h`` hidden (kept, no meaning on Linux), ``l`` symlink with its target
  in ``FileEntry.symlink_target``: relative to the torrent's directory and
  always naming a file or directory of the torrent; any other target makes
  the entry an ordinary empty file (noted in ``Info.warnings``).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any

from ..errors import MetainfoError
from ..types import InfoHash
from .bencoding import decode, first_unsorted_key
from .file_list import (
    MAX_TOTAL_LENGTH,
    RawFile,
    RenamedPath,
    merge_hybrid,
    renames,
    resolve_symlinks,
    v1_files,
    v2_files,
)
from .safepath import resolve_duplicates, resolve_under, sanitize_component, show_raw

__all__ = [
    "MAX_PIECES",
    "MAX_PIECE_LENGTH",
    "MAX_TOTAL_LENGTH",
    "MIN_PIECE_LENGTH",
    "FileEntry",
    "Info",
    "RenamedPath",
    "check_sorted_info",
    "info_hash_of",
    "parse_info",
    "parse_info_dict",
]

MIN_PIECE_LENGTH = 16 * 1024
MAX_PIECE_LENGTH = 1 << 32
MAX_PIECES = 1 << 24


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a torrent (see the module docstring for ``path`` and ``offset``)."""

    path: tuple[str, ...]
    length: int
    offset: int
    attr: str = ""
    pieces_root: bytes | None = None
    #: For a BEP 47 symlink (``is_symlink``): the target, relative to the
    #: torrent's directory, always a file or directory of this torrent.
    symlink_target: tuple[str, ...] | None = None

    @property
    def is_padding(self) -> bool:
        """BEP 47 padding file: zeros that are hashed but never written."""
        return "p" in self.attr

    @property
    def is_executable(self) -> bool:
        return "x" in self.attr

    @property
    def is_hidden(self) -> bool:
        """BEP 47 ``h``: a Windows attribute; Linux has no such thing, so it is only reported."""
        return "h" in self.attr

    @property
    def is_symlink(self) -> bool:
        return "l" in self.attr and self.symlink_target is not None

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
    #: Every path changed at parse time (sanitized or de-duplicated), in file order.
    renamed: tuple[RenamedPath, ...] = ()
    #: Other things a user should know (e.g. a symlink made an ordinary file).
    warnings: tuple[str, ...] = ()

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


def parse_info_dict(info: Any, *, raw_info: bytes | None = None) -> Info:
    """Validate a decoded ``info`` dict (strings as bytes) and build :class:`Info`.

    Unsafe names are sanitized, never refused (see :mod:`core.formats.safepath`);
    ``Info.renamed`` lists each change.  A multi-file torrent whose ``name``
    is unusable (``.``, ``..``) is named after its info-hash in hex, as
    libtorrent does, when ``raw_info`` (the exact bytes) is given, else ``_``.
    """
    if not isinstance(info, dict):
        raise MetainfoError("'info' is not a dict")
    name_raw = info.get(b"name")
    if not isinstance(name_raw, bytes):
        raise MetainfoError("info: 'name' missing or not a string")
    if isinstance(info.get(b"name.utf-8"), bytes):
        name_raw = info[b"name.utf-8"]
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

    raws: list[RawFile]
    pure_v2_single = False
    if version == 2:
        v2, single = v2_files(info)
        if single:
            # libtorrent stores a single-file v2 torrent under its tree key
            # and names the torrent after it
            key_raw = v2[0].raw[0]
            v2 = [RawFile((), (), v2[0].length, v2[0].attr, v2[0].root, None)]
        if pieces is None:
            raws = v2
            if single:
                name_raw, pure_v2_single = key_raw, True
        else:
            v1, single1 = v1_files(info)
            if single1 != single:
                raise MetainfoError(
                    "inconsistent hybrid torrent: v1 and v2 disagree on single-file layout"
                )
            if single and sanitize_component(name_raw, force=False) != sanitize_component(key_raw):
                raise MetainfoError(
                    f"inconsistent hybrid torrent: the single file is {show_raw([name_raw])!r} "
                    f"in v1 but {show_raw([key_raw])!r} in the v2 'file tree'"
                )
            raws = merge_hybrid(v1, v2, piece_length)
    else:
        raws, single = v1_files(info)

    name = sanitize_component(name_raw, force=pure_v2_single)
    named_by_hash = not name
    if single and not name_raw:
        raise MetainfoError("info: a single-file torrent needs a non-empty 'name'")
    if not name:
        if single:
            raise MetainfoError(
                f"info: 'name' {show_raw([name_raw])!r} is not usable as a file name"
            )
        digest = hashlib.sha1 if pieces is not None else hashlib.sha256
        name = "_" if raw_info is None else digest(raw_info).hexdigest()

    warnings: list[str] = []
    if single:
        raws[0].symlink = None  # a lone symlink has nothing to point to
        raws[0].attr = raws[0].attr.replace("l", "")
        deduped: dict[int, tuple[str, ...]] = {}
    else:
        warnings = resolve_symlinks(raws)
        deduped = resolve_duplicates([f.path for f in raws], skip=[f.is_padding for f in raws])
    renamed = renames(name_raw, name, named_by_hash, raws, deduped)

    files: list[FileEntry]
    if version == 2 and pieces is None:
        files = []
        pos = 0
        for i, f in enumerate(raws):
            # pure v2: every file starts on a piece boundary (virtual padding)
            pos = -(-pos // piece_length) * piece_length
            files.append(
                FileEntry(deduped.get(i, f.path), f.length, pos, f.attr, f.root, f.symlink)
            )
            pos += f.length
    else:
        files = []
        pos = 0
        for i, f in enumerate(raws):
            files.append(
                FileEntry(deduped.get(i, f.path), f.length, pos, f.attr, f.root, f.symlink)
            )
            pos += f.length

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
        renamed=renamed,
        warnings=tuple(warnings),
    )


def check_sorted_info(raw_info: bytes, base: int = 0) -> None:
    """BEP 52 info dicts must be canonical: refuse unsorted keys, as libtorrent does.

    libtorrent checks this whenever ``meta version`` is present (v2 and
    hybrid); plain v1 torrents with unsorted keys keep loading, since their
    info-hash is taken from the raw bytes anyway.  ``base`` is the offset of
    ``raw_info`` in the file, so the message points into the .torrent.
    """
    found = first_unsorted_key(raw_info)
    if found is not None:
        offset, key = found
        raise MetainfoError(
            f"invalid bencoding in a v2 info dict: key {key!r} out of sorted order "
            f"at byte {base + offset}"
        )


def info_hash_of(raw_info: bytes, info: Info) -> InfoHash:
    """v1: SHA-1 of the raw bytes; v2: SHA-256 of the same bytes; hybrid: both."""
    return InfoHash(
        v1=hashlib.sha1(raw_info).digest() if info.is_v1 else None,
        v2=hashlib.sha256(raw_info).digest() if info.is_v2 else None,
    )


def parse_info(raw_info: bytes) -> tuple[Info, InfoHash]:
    """Parse a bare ``info`` dict (e.g. from ``ut_metadata``) and hash its raw bytes."""
    raw_info = bytes(raw_info)
    value = decode(raw_info)
    if isinstance(value, dict) and b"meta version" in value:
        check_sorted_info(raw_info)
    info = parse_info_dict(value, raw_info=raw_info)
    return info, info_hash_of(raw_info, info)
