"""The storage contract the engine codes against, and the errors it raises.

Every method is blocking: the engine calls them from worker threads
(``asyncio.to_thread``), several at once for different pieces, so every
implementation must be thread-safe.  Blocks are addressed the way the wire
addresses them, ``(piece, begin, length)``; the storage maps them onto files
through a :class:`~core.storage.layout.Layout`.

Missing data is an exception, not a sentinel: reading bytes that were never
written (the file does not exist, or is shorter than the block) raises
:class:`DataMissingError`, a :class:`~core.errors.StorageError` subclass, so
the engine can treat it as "not there" (hash check fails, piece not had)
while a real I/O fault (EIO, EACCES, ENOSPC) stays a plain ``StorageError``
that should stop the torrent.  Every ``OSError`` leaves storage as a
``StorageError`` carrying ``errno``, the OS message and the path.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bitarray import bitarray

from .errors import DataMissingError, UnsafePathError, os_error

if TYPE_CHECKING:
    from .layout import Layout

__all__ = [
    "BlockData",
    "DataMissingError",
    "SegmentedStorage",
    "Storage",
    "UnsafePathError",
    "os_error",
]

#: What a block write accepts (``collections.abc.Buffer`` needs Python 3.12).
BlockData = bytes | bytearray | memoryview

#: Hashing reads at most this much at a time, so a 16 MiB piece never sits
#: in memory whole.
HASH_CHUNK = 1 << 20

_ZEROS = bytes(HASH_CHUNK)


@runtime_checkable
class Storage(Protocol):
    """Where one torrent's data lives.  All methods block; all are thread-safe."""

    layout: Layout

    def write_block(self, piece: int, begin: int, data: BlockData) -> None:
        """Store ``data`` at ``begin`` in ``piece``; bytes falling on padding are dropped."""

    def read_block(self, piece: int, begin: int, length: int) -> bytes:
        """Read a block; raises :class:`DataMissingError` if it was never written."""

    def read_piece(self, piece: int) -> bytes:
        """Read a whole piece (prefer :meth:`hash_piece` for verification)."""

    def hash_piece(self, piece: int, algo: str = "sha1") -> bytes:
        """Digest of the piece's bytes, streamed in bounded chunks."""

    def hash_blocks(self, piece: int, block_size: int = 16384, algo: str = "sha256") -> list[bytes]:
        """Digest of each block of the piece: the v2 merkle leaves."""

    def flush(self) -> None:
        """Make written data durable (fsync) before completion is recorded."""

    def close(self) -> None:
        """Release every OS resource; later calls raise ``StorageError``."""

    def ensure_files(self, indices: Iterable[int] | None = None) -> None:
        """Create the listed files (default all, zero-length included) at full size."""

    def file_sizes_and_mtimes(
        self, indices: Iterable[int] | None = None
    ) -> list[tuple[int, int] | None]:
        """``(size, mtime_ns)`` per file (all, or the listed ones in order); ``None`` if absent.

        Padding files are always ``None``.  The completion store compares
        these with the values recorded when pieces were marked complete.
        """

    def pieces_with_data(self) -> bitarray:
        """Pieces that have any stored data: the candidates for a hash check."""

    def delete_data(self) -> None:
        """Close and delete every stored file of the torrent."""


class SegmentedStorage(ABC):
    """Block and piece I/O written once over per-file reads and writes.

    Subclasses provide :meth:`_read_file` and :meth:`_write_file` for one
    file at a time; this class splits blocks across files, skips padding and
    gaps, and streams hashes.  The per-block cost is one bisect plus one
    call per file touched.
    """

    layout: Layout

    @abstractmethod
    def _read_file(self, index: int, pos: int, length: int) -> bytes:
        """Exactly ``length`` bytes of file ``index`` at ``pos``, or DataMissingError."""

    @abstractmethod
    def _write_file(self, index: int, pos: int, data: memoryview) -> None:
        """Write all of ``data`` to file ``index`` at ``pos``, creating the file if needed."""

    def write_block(self, piece: int, begin: int, data: BlockData) -> None:
        view = memoryview(data).cast("B")
        layout = self.layout
        offset = layout.check_range(piece, begin, len(view))
        files = layout.files
        done = 0
        for index, pos, n in layout.segments(offset, len(view)):
            if index >= 0 and not files[index].is_padding:
                self._write_file(index, pos, view[done : done + n])
            done += n

    def read_block(self, piece: int, begin: int, length: int) -> bytes:
        layout = self.layout
        offset = layout.check_range(piece, begin, length)
        segs = layout.segments(offset, length)
        if len(segs) == 1:
            return self._read_segment(*segs[0])
        return b"".join(self._read_segment(*s) for s in segs)

    def read_piece(self, piece: int) -> bytes:
        return self.read_block(piece, 0, self.layout.piece_size(piece))

    def hash_piece(self, piece: int, algo: str = "sha1") -> bytes:
        layout = self.layout
        h = hashlib.new(algo)
        for index, pos, n in layout.segments(piece * layout.piece_length, layout.piece_size(piece)):
            for at in range(0, n, HASH_CHUNK):
                step = min(HASH_CHUNK, n - at)
                h.update(self._read_segment(index, pos + at, step))
        return h.digest()

    def hash_blocks(self, piece: int, block_size: int = 16384, algo: str = "sha256") -> list[bytes]:
        """Digest of each ``block_size`` block of the piece (the last may be short).

        These are the BEP 52 merkle leaves of a v2 piece; the engine folds
        them with :mod:`core.formats.merkle`.  Reads are bounded like
        :meth:`hash_piece`, so huge v2 pieces never sit in memory whole.
        """
        layout = self.layout
        size = layout.piece_size(piece)
        step = max(block_size, HASH_CHUNK // block_size * block_size)
        out: list[bytes] = []
        for at in range(0, size, step):
            chunk = self.read_block(piece, at, min(step, size - at))
            view = memoryview(chunk)
            out.extend(
                hashlib.new(algo, view[i : i + block_size]).digest()
                for i in range(0, len(view), block_size)
            )
        return out

    def _read_segment(self, index: int, pos: int, n: int) -> bytes:
        if index < 0 or self.layout.files[index].is_padding:
            return _ZEROS[:n] if n <= HASH_CHUNK else bytes(n)
        return self._read_file(index, pos, n)
