"""Where each byte of a torrent's piece space lives on disk.

A torrent hashes one linear byte space cut into pieces; the files are laid
end to end in it.  :class:`Layout` is the small description storage needs of
that mapping: the files (path relative to the download root, length, offset
in the piece space, padding or not), the piece length and the total length.
It is deliberately independent of the metainfo model so tests can build any
shape by hand; :meth:`Layout.from_info` builds one from a parsed torrent.

Three kinds of byte ranges can appear in the piece space:

* file data, stored in a file on disk;
* BEP 47 padding files, which are never created: they read as zeros and
  writes to them are dropped;
* gaps that no file covers.  Pure BEP 52 (v2) torrents start every file on a
  piece boundary without explicit padding files, so the tail of a file's
  last piece is a gap.  Gaps read as zeros too, and a piece's size
  (:meth:`Layout.piece_size`) ends at the last byte of data it holds, which
  is exactly the v2 rule that a file's last piece is short.

The layout also owns the safe-path rule: :meth:`Layout.resolve` is the only
way storage turns a file into an OS path, and it proves the real path (all
symlinks followed) stays under the real root.
"""

from __future__ import annotations

import errno
import os
import stat
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bitarray import bitarray

from ..errors import StorageError
from .errors import UnsafePathError

if TYPE_CHECKING:
    from ..formats.info import Info

__all__ = ["GAP", "Layout", "LayoutFile", "Segment"]

#: File index used in a :data:`Segment` for bytes no file covers.
GAP = -1

#: ``(file_index or GAP, position inside the file, byte count)``.
Segment = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class LayoutFile:
    """One file of the piece space.

    ``path`` is relative to the layout's root and has at least one component;
    ``offset`` is where the file starts in the torrent's linear piece space.
    """

    path: tuple[str, ...]
    length: int
    offset: int
    is_padding: bool = False
    #: BEP 47 ``x``: created with the executable bits (where the read bits are).
    executable: bool = False
    #: BEP 47 ``l``: a symlink to this path (relative to the layout's root,
    #: like ``path``), created instead of a file; ``length`` is 0.
    symlink: tuple[str, ...] | None = None

    @property
    def end(self) -> int:
        return self.offset + self.length


def _check_component(part: str, path: tuple[str, ...]) -> None:
    # The metainfo parser already enforces the full rule (Windows names,
    # drive letters...); this is the cheap lexical floor for hand-built
    # layouts, so nothing reaching the OS can climb out by name alone.
    if part in ("", ".", "..") or "/" in part or "\\" in part or "\x00" in part:
        raise UnsafePathError(errno.EINVAL, "unsafe path component", "/".join(path))


class Layout:
    """The file layout of one torrent, plus the download root it lives under.

    ``root`` may be ``None`` for layouts used only in memory; every method
    that touches the disk then raises :class:`StorageError`.
    """

    __slots__ = (
        "_data_index",
        "_data_starts",
        "_real_root",
        "files",
        "num_pieces",
        "piece_length",
        "root",
        "total_length",
    )

    def __init__(
        self,
        files: Sequence[LayoutFile],
        piece_length: int,
        total_length: int | None = None,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        if piece_length <= 0:
            raise StorageError(f"piece length must be positive, got {piece_length}")
        self.files: tuple[LayoutFile, ...] = tuple(files)
        self.piece_length = piece_length
        end = max((f.end for f in self.files), default=0)
        self.total_length = end if total_length is None else total_length
        if self.total_length < end:
            raise StorageError(f"files end at {end}, past the total length {self.total_length}")
        self.num_pieces = -(-self.total_length // piece_length)
        self.root: Path | None = None if root is None else Path(root)
        self._real_root: str | None = None if root is None else os.path.realpath(root)

        seen: set[tuple[str, ...]] = set()
        pos = 0
        starts: list[int] = []
        index: list[int] = []
        for i, f in enumerate(self.files):
            if not f.path:
                raise UnsafePathError(errno.EINVAL, "empty file path", f"file #{i}")
            for part in f.path:
                _check_component(part, f.path)
            for part in f.symlink or ():
                _check_component(part, f.path)
            if f.symlink is not None and (f.length or f.is_padding or not f.symlink):
                raise StorageError(f"file #{i} is a symlink with data, padding or no target")
            if f.length < 0 or f.offset < 0:
                raise StorageError(f"file #{i} has a negative length or offset")
            if f.offset < pos:
                raise StorageError(f"file #{i} overlaps the file before it")
            if not f.is_padding:
                if f.path in seen:
                    raise StorageError(f"two files map to the same path {'/'.join(f.path)!r}")
                seen.add(f.path)
            if f.length:
                pos = f.end
                starts.append(f.offset)
                index.append(i)
        # Only files holding bytes take part in offset lookups: a zero-length
        # file never intersects a byte range.
        self._data_starts = starts
        self._data_index = index

    # -- construction from the metainfo model ------------------------------

    @classmethod
    def from_info(cls, info: Info, root: str | os.PathLike[str]) -> Layout:
        """The layout of a parsed torrent downloading into ``root``.

        Paths are ``<name>/<path...>`` (``<name>`` alone for a single-file
        torrent), already sanitized by the parser, so storage writes exactly
        where the metainfo model says a file is.  The check against the
        real file system happens at each open (see :meth:`resolve`), not
        here, so a planted symlink cannot slip in between building the
        layout and writing.  BEP 47 symlinks and executables come along.
        """
        files = []
        for entry in info.files:
            target = entry.symlink_target if entry.is_symlink else None
            files.append(
                LayoutFile(
                    (info.name, *entry.path),
                    entry.length,
                    entry.offset,
                    entry.is_padding,
                    executable=entry.is_executable,
                    symlink=None if target is None else (info.name, *target),
                )
            )
        return cls(files, info.piece_length, info.length, root)

    # -- piece arithmetic ----------------------------------------------------

    def piece_size(self, piece: int) -> int:
        """Bytes in ``piece``: up to the end of the last data it holds.

        For v1 and hybrid torrents that is the piece length (the last piece
        may be shorter); for pure v2 torrents the last piece of each file
        stops at the end of the file.
        """
        if not 0 <= piece < self.num_pieces:
            raise StorageError(errno.EINVAL, f"piece {piece} out of range 0..{self.num_pieces}")
        start = piece * self.piece_length
        end = min(start + self.piece_length, self.total_length)
        i = bisect_right(self._data_starts, end - 1) - 1
        if i < 0:
            return end - start
        data_end = min(end, self.files[self._data_index[i]].end)
        return data_end - start if data_end > start else end - start

    def file_pieces(self, index: int) -> range:
        """Pieces holding bytes of file ``index`` (empty for a zero-length file)."""
        f = self.files[index]
        if f.length == 0:
            return range(0)
        return range(f.offset // self.piece_length, (f.end - 1) // self.piece_length + 1)

    def piece_files(self, piece: int) -> list[int]:
        """Indices of the files (padding included) holding bytes of ``piece``."""
        start = piece * self.piece_length
        return [s[0] for s in self.segments(start, self.piece_size(piece)) if s[0] != GAP]

    def check_range(self, piece: int, begin: int, length: int) -> int:
        """Validate a block of ``piece``; return its offset in the piece space."""
        size = self.piece_size(piece)
        if begin < 0 or length < 0 or begin + length > size:
            raise StorageError(
                errno.EINVAL, f"block {begin}+{length} outside piece {piece} of {size} bytes"
            )
        return piece * self.piece_length + begin

    def segments(self, offset: int, length: int) -> list[Segment]:
        """Split ``[offset, offset+length)`` into per-file pieces, in order.

        Bytes between files come back as :data:`GAP` segments so the caller
        can walk its buffer linearly.
        """
        out: list[Segment] = []
        end = offset + length
        starts = self._data_starts
        k = bisect_right(starts, offset) - 1
        if k < 0:
            k = 0
        pos = offset
        files = self.files
        data_index = self._data_index
        while pos < end and k < len(starts):
            f = files[data_index[k]]
            if f.end <= pos:
                k += 1
                continue
            if f.offset > pos:
                gap = min(f.offset, end) - pos
                out.append((GAP, 0, gap))
                pos += gap
                continue
            n = min(f.end, end) - pos
            out.append((data_index[k], pos - f.offset, n))
            pos += n
            k += 1
        if pos < end:
            out.append((GAP, 0, end - pos))
        return out

    # -- the disk -----------------------------------------------------------

    def resolve(self, index: int) -> str:
        """The real OS path of file ``index``, proven to be under the real root.

        Symlinks are followed for the check (``realpath`` also resolves the
        existing prefix of a path that does not exist yet), so a directory
        or file under the root that links elsewhere is refused with
        :class:`UnsafePathError` before anything is created through it.  The
        returned path is the resolved one, so later opens do not walk the
        links again.
        """
        if self._real_root is None:
            raise StorageError(errno.EINVAL, "this layout has no root directory")
        f = self.files[index]
        raw = os.path.join(self._real_root, *f.path)
        if f.symlink is not None:
            # the link itself, not where it points: resolve its directory only
            real = os.path.join(os.path.realpath(os.path.dirname(raw)), f.path[-1])
        else:
            real = os.path.realpath(raw)
        prefix = self._real_root.rstrip(os.sep) + os.sep  # root "/" stays "/"
        if not real.startswith(prefix) or real == self._real_root:
            raise UnsafePathError(errno.EXDEV, "path escapes the download directory", raw)
        return real

    def file_sizes_and_mtimes(
        self, indices: Iterable[int] | None = None
    ) -> list[tuple[int, int] | None]:
        """``(size, mtime_ns)`` per file (default all, else the listed indices, in order).

        ``None`` marks a file that is missing, padding, not a regular file
        or unsafe: none of those can hold verified data.
        """
        wanted = range(len(self.files)) if indices is None else indices
        return [
            None if self.files[i].is_padding or self.files[i].symlink else self.stat_file(i)
            for i in wanted
        ]

    def stat_file(self, index: int) -> tuple[int, int] | None:
        """``(size, mtime_ns)`` of one file, ``None`` if it is not a usable regular file."""
        try:
            st = os.stat(self.resolve(index))
        except (OSError, StorageError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return st.st_size, st.st_mtime_ns

    def pieces_with_data_on_disk(self) -> bitarray:
        """Pieces for which some file holds data on disk: the ones worth hash-checking.

        Holes in sparse files are skipped with ``SEEK_DATA``/``SEEK_HOLE``
        where the file system supports them, so a half-downloaded sparse
        file does not make every piece look present.  Pieces made only of
        padding or gaps are never reported.
        """
        have = bitarray(self.num_pieces, endian="big")
        have.setall(False)
        for i, f in enumerate(self.files):
            if f.is_padding or f.length == 0:
                continue
            for lo, hi in self._data_extents(i):
                first = (f.offset + lo) // self.piece_length
                last = (f.offset + hi - 1) // self.piece_length
                have[first : last + 1] = True
        return have

    def _data_extents(self, index: int) -> Iterator[tuple[int, int]]:
        f = self.files[index]
        try:
            path = self.resolve(index)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (OSError, StorageError):
            return
        try:
            size = min(os.fstat(fd).st_size, f.length)
            if not hasattr(os, "SEEK_DATA"):  # pragma: no cover - non-Linux
                if size:
                    yield 0, size
                return
            pos = 0
            while pos < size:
                try:
                    lo = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:  # no data after pos
                        return
                    yield pos, size  # SEEK_DATA unsupported: assume data
                    return
                if lo >= size:
                    return
                hi = min(os.lseek(fd, lo, os.SEEK_HOLE), size)
                yield lo, hi
                pos = hi
        finally:
            os.close(fd)
