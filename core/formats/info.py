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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any

from ..errors import MetainfoError
from ..types import InfoHash
from . import merkle
from .bencoding import decode, first_unsorted_key
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
MAX_TOTAL_LENGTH = 1 << 50


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


@dataclass(frozen=True, slots=True)
class RenamedPath:
    """A path changed to make it safe: shown to the user, never silent.

    ``original`` is the torrent's path with undecodable bytes as ``\\xNN``;
    ``safe`` is where the file is stored; both start with the torrent's
    name (a changed name gets its own entry), as ``Info.display_path``.
    """

    original: str
    safe: str
    reason: str


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


@dataclass(slots=True)
class _Raw:
    """One file while parsing: raw and sanitized path, before offsets are known."""

    raw: tuple[bytes, ...]
    path: tuple[str, ...]
    length: int
    attr: str
    root: bytes | None = None
    symlink: tuple[str, ...] | None = None

    @property
    def is_padding(self) -> bool:
        return "p" in self.attr


def _sanitize(parts: Sequence[bytes]) -> tuple[str, ...]:
    return tuple(sanitize_component(p) for p in parts)


def _symlink_target(raw: object, where: str) -> tuple[str, ...]:
    """BEP 47 ``symlink path``: ``.`` and ``..`` dropped, the rest sanitized."""
    if not isinstance(raw, list):
        return ()
    if not all(isinstance(c, bytes) for c in raw):
        raise MetainfoError(f"{where}: 'symlink path' holds a non-string component")
    return tuple(sanitize_component(c) for c in raw if c not in (b".", b".."))


def _v1_entry(item: Mapping[bytes, Any], where: str) -> _Raw:
    attr = _attr(item)
    symlink: tuple[str, ...] | None = None
    if "l" in attr:
        # A symlink takes no room in the piece space, whatever 'length' says.
        length = 0
        symlink = _symlink_target(item.get(b"symlink path"), where)
        if not symlink:
            attr = attr.replace("l", "")
            symlink = None
    else:
        length = _int(item, b"length", where)
    utf8 = item.get(b"path.utf-8")
    raw = utf8 if isinstance(utf8, list) else item.get(b"path")
    if isinstance(raw, list) and raw:
        if not all(isinstance(c, bytes) for c in raw):
            raise MetainfoError(f"{where}: 'path' holds a non-string component")
        parts: tuple[bytes, ...] = tuple(raw)
        path = _sanitize(parts)
    elif "p" in attr:
        # BEP 47 padding needs no name: it is never written.
        path = (".pad", str(length))
        parts = tuple(c.encode() for c in path)
    else:
        raise MetainfoError(f"{where}: 'path' must be a non-empty list")
    if "p" not in attr and any("_____padding_file_" in c for c in path):
        attr += "p"  # BitComet's padding files, recognised by name as libtorrent does
    return _Raw(parts, path, length, attr, None, symlink)


def _v1_files(info: Mapping[bytes, Any]) -> tuple[list[_Raw], bool]:
    """The v1 file list (``length`` or ``files``), paths relative to the torrent dir."""
    if b"files" in info:
        if b"length" in info:
            raise MetainfoError("info has both 'length' and 'files'")
        raw = info[b"files"]
        if not isinstance(raw, list) or not raw:
            raise MetainfoError("'files' must be a non-empty list")
        out: list[_Raw] = []
        for n, item in enumerate(raw):
            if not isinstance(item, dict):
                raise MetainfoError(f"files[{n}] is not a dict")
            out.append(_v1_entry(item, f"files[{n}]"))
        return out, False
    length = _int(info, b"length", "info")
    return [_Raw((), (), length, _attr(info))], True


def _v2_leaf(leaf: Any, raw: tuple[bytes, ...], where: str) -> _Raw:
    if not isinstance(leaf, dict):
        raise MetainfoError(f"file tree entry {where!r} is not a dict")
    attr = _attr(leaf)
    if "p" in attr:
        raise MetainfoError(f"file tree entry {where!r}: a v2 file cannot be padding (attr 'p')")
    symlink: tuple[str, ...] | None = None
    if "l" in attr:
        length = 0
        symlink = _symlink_target(leaf.get(b"symlink path"), where)
        if not symlink:
            attr = attr.replace("l", "")
            symlink = None
    else:
        length = _int(leaf, b"length", where)
    root = None
    if length:
        value = leaf.get(b"pieces root")
        if not isinstance(value, bytes) or len(value) != merkle.HASH_SIZE:
            raise MetainfoError(f"{where!r}: 'pieces root' missing or not 32 bytes")
        if value == bytes(merkle.HASH_SIZE):
            raise MetainfoError(f"{where!r}: 'pieces root' is all zeros")
        root = value
    return _Raw(raw, _sanitize(raw), length, attr, root, symlink)


def _walk_tree(node: dict[bytes, Any], prefix: tuple[bytes, ...], out: list[_Raw]) -> None:
    """Collect the files of a v2 file tree, in tree order.

    A node is a file when its only key is ``""``; any other dict is a
    directory (an empty one holds no files and is skipped, as libtorrent
    does).  Empty names elsewhere are refused: in a v2 tree the empty key
    means "this is a file", so a file named "" cannot be told apart.
    """
    for key, child in node.items():
        raw = (*prefix, key)
        where = show_raw(raw)
        if not isinstance(child, dict):
            raise MetainfoError(f"file tree entry {where!r} is not a dict")
        if key == b"":
            shown = show_raw(prefix)
            raise MetainfoError(
                f"file tree: empty name under {shown!r}: both a file and a directory"
            )
        if len(child) == 1 and b"" in child:
            out.append(_v2_leaf(child[b""], raw, where))
        else:
            _walk_tree(child, raw, out)


def _v2_files(info: Mapping[bytes, Any]) -> tuple[list[_Raw], bool]:
    tree = info.get(b"file tree")
    if not isinstance(tree, dict) or not tree:
        raise MetainfoError("v2 info: 'file tree' missing or not a non-empty dict")
    out: list[_Raw] = []
    _walk_tree(tree, (), out)
    if not out:
        raise MetainfoError("v2 info: the 'file tree' holds no files")
    # One file at the top and no v1 'files' list: a single-file torrent,
    # stored under its file-tree key (libtorrent names the torrent after it).
    single = b"files" not in info and len(tree) == 1 and len(out[0].raw) == 1
    return out, single


def _v2_as_v1(v2: list[_Raw], piece_length: int) -> list[_Raw]:
    """The v1 file list a hybrid torrent must have: each file padded to a piece boundary."""
    out: list[_Raw] = []
    total = 0
    for f in v2:
        out.append(f)
        total += f.length
        if total % piece_length:
            pad = piece_length - total % piece_length
            out.append(_Raw((b".pad", str(pad).encode()), (".pad", str(pad)), pad, "p"))
            total += pad
    return out


def _describe(f: _Raw, offset: int) -> str:
    kind = "padding" if f.is_padding else "file"
    return f"{kind} {'/'.join(f.path) or '(single file)'!r} ({f.length} bytes at offset {offset})"


def _merge_hybrid(v1: list[_Raw], v2: list[_Raw], piece_length: int) -> list[_Raw]:
    """Check that the v1 and v2 views describe the same files; attach pieces roots.

    The rule is libtorrent's ``files_compatible``: the v1 list must be the
    v2 file tree with every file padded to a piece boundary (the padding
    after the last file may be left out); at every position the non-empty
    files must agree on path, size and offset.
    """
    want = _v2_as_v1(v2, piece_length)
    if len(v1) == len(want) - 1 and want[-1].is_padding:
        want = want[:-1]
    off1 = off2 = 0
    for i, (a, b) in enumerate(zip(v1, want, strict=False)):
        rel_a = not a.is_padding and a.length > 0
        rel_b = not b.is_padding and b.length > 0
        if rel_a != rel_b or (rel_a and (a.path, a.length, off1) != (b.path, b.length, off2)):
            raise MetainfoError(
                f"inconsistent hybrid torrent: entry {i} is {_describe(a, off1)} in the v1 "
                f"'files' but {_describe(b, off2)} in the v2 'file tree'"
            )
        off1 += a.length
        off2 += b.length
    if len(v1) != len(want):
        raise MetainfoError(
            f"inconsistent hybrid torrent: the v1 'files' has {len(v1)} entries, the v2 "
            f"'file tree' with its alignment padding {len(want)}"
        )
    if sum(f.length for f in v1) != sum(f.length for f in want):
        raise MetainfoError("inconsistent hybrid torrent: the v1 and v2 total sizes differ")
    out = []
    for a, b in zip(v1, want, strict=True):
        out.append(_Raw(a.raw, a.path, a.length, a.attr, b.root, a.symlink))
    return out


def _resolve_symlinks(files: list[_Raw]) -> list[str]:
    """Keep a symlink only if its target is a file or directory of this torrent.

    Targets are relative to the torrent's directory (BEP 47), or, as
    libtorrent also accepts for old torrents, to the link's own directory.
    A target that is another symlink is followed.  Anything else (outside
    the torrent, missing, a loop, a chain through a bad link) turns the
    entry into an ordinary empty file; the returned warnings say which.
    Components are sanitized and ``..`` is dropped, so even a kept target
    can only name a place inside the torrent's directory.
    """
    links = {f.path: f.symlink for f in files if f.symlink is not None}
    if not links:
        return []
    real = [f.path for f in files if not f.is_padding]
    exists = set(real) | {p[:k] for p in real for k in range(1, len(p))}

    def ok(target: tuple[str, ...]) -> bool:
        seen: set[tuple[str, ...]] = set()
        while target in links:
            if target in seen:
                return False
            seen.add(target)
            nxt = links[target]
            assert nxt is not None
            target = nxt
        return target in exists

    warnings = []
    chosen: dict[tuple[str, ...], tuple[str, ...] | None] = {}
    for path, target in links.items():
        assert target is not None
        rel = (*path[:-1], *target)
        chosen[path] = target if ok(target) else rel if ok(rel) else None
    for f in files:
        if f.symlink is None:
            continue
        new = chosen[f.path]
        if new is None:
            warnings.append(
                f"symlink {'/'.join(f.path)!r} points to {'/'.join(f.symlink)!r}, which is "
                f"not in the torrent: it will be an empty file"
            )
            f.attr = f.attr.replace("l", "")
        f.symlink = new
    return warnings


def _why(raw: bytes) -> str:
    """A short reason for the change made to one component ("" if none)."""
    if show_raw([raw]) == sanitize_component(raw):
        return ""
    if len(raw) > 240:
        return "name too long"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid UTF-8"
    if raw in (b"", b".", b".."):
        return f"{show_raw([raw])!r} is not a file name"
    return "unsafe characters"


def _renames(
    name_raw: bytes,
    name: str,
    named_by_hash: bool,
    files: list[_Raw],
    deduped: dict[int, tuple[str, ...]],
) -> tuple[RenamedPath, ...]:
    out: list[RenamedPath] = []
    if show_raw([name_raw]) != name:
        why = "unusable name: named after the info-hash" if named_by_hash else _why(name_raw)
        out.append(RenamedPath(show_raw([name_raw]), name, why or "unsafe characters"))
    for i, f in enumerate(files):
        if f.is_padding or not f.raw:
            continue
        original = "/".join((name, show_raw(f.raw)))
        safe = "/".join((name, *deduped.get(i, f.path)))
        if i in deduped:
            out.append(RenamedPath(original, safe, "same path as another file or directory"))
        elif original != safe:
            why = next((w for w in map(_why, f.raw) if w), "unsafe characters")
            out.append(RenamedPath(original, safe, why))
    return tuple(out)


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

    raws: list[_Raw]
    pure_v2_single = False
    if version == 2:
        v2, single = _v2_files(info)
        if single:
            # libtorrent stores a single-file v2 torrent under its tree key
            # and names the torrent after it
            key_raw = v2[0].raw[0]
            v2 = [_Raw((), (), v2[0].length, v2[0].attr, v2[0].root, None)]
        if pieces is None:
            raws = v2
            if single:
                name_raw, pure_v2_single = key_raw, True
        else:
            v1, single1 = _v1_files(info)
            if single1 != single:
                raise MetainfoError(
                    "inconsistent hybrid torrent: v1 and v2 disagree on single-file layout"
                )
            if single and sanitize_component(name_raw, force=False) != sanitize_component(key_raw):
                raise MetainfoError(
                    f"inconsistent hybrid torrent: the single file is {show_raw([name_raw])!r} "
                    f"in v1 but {show_raw([key_raw])!r} in the v2 'file tree'"
                )
            raws = _merge_hybrid(v1, v2, piece_length)
    else:
        raws, single = _v1_files(info)

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
        warnings = _resolve_symlinks(raws)
        deduped = resolve_duplicates([f.path for f in raws], skip=[f.is_padding for f in raws])
    renamed = _renames(name_raw, name, named_by_hash, raws, deduped)

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
