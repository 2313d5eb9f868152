"""In-memory storage for tests and loopback swarms.

It keeps one ``bytearray`` per file, created on first write, so it behaves
like :class:`~core.storage.file.FileStorage` where the engine can tell:
unwritten files raise :class:`~core.storage.base.DataMissingError`, padding
reads as zeros and is never stored, zero-length files appear only through
:meth:`MemoryStorage.ensure_files`.  "mtime" is a per-file write counter, so
completion-store logic that compares sizes and mtimes can be exercised too.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterable

from bitarray import bitarray

from ..errors import StorageError
from .base import DataMissingError, SegmentedStorage
from .layout import Layout

__all__ = ["MemoryStorage"]


class MemoryStorage(SegmentedStorage):
    """A whole torrent held in RAM.  Thread-safe through one lock."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._lock = threading.Lock()
        self._files: dict[int, bytearray] = {}
        self._writes: dict[int, int] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(errno.EBADF, "storage is closed")

    def _buffer(self, index: int) -> bytearray:
        buf = self._files.get(index)
        if buf is None:
            buf = self._files[index] = bytearray(self.layout.files[index].length)
            self._writes[index] = 0
        return buf

    def _write_file(self, index: int, pos: int, data: memoryview) -> None:
        with self._lock:
            self._check_open()
            self._buffer(index)[pos : pos + len(data)] = data
            self._writes[index] += 1

    def _read_file(self, index: int, pos: int, length: int) -> bytes:
        with self._lock:
            self._check_open()
            buf = self._files.get(index)
            if buf is None:
                raise DataMissingError(
                    errno.ENOENT, "file not written yet", "/".join(self.layout.files[index].path)
                )
            return bytes(buf[pos : pos + length])

    def ensure_files(self, indices: Iterable[int] | None = None) -> None:
        wanted = range(len(self.layout.files)) if indices is None else indices
        with self._lock:
            self._check_open()
            for i in wanted:
                if not self.layout.files[i].is_padding:
                    self._buffer(i)

    def flush(self) -> None:
        with self._lock:
            self._check_open()

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def file_sizes_and_mtimes(
        self, indices: Iterable[int] | None = None
    ) -> list[tuple[int, int] | None]:
        wanted = range(len(self.layout.files)) if indices is None else indices
        with self._lock:
            return [
                (len(self._files[i]), self._writes[i]) if i in self._files else None for i in wanted
            ]

    def pieces_with_data(self) -> bitarray:
        layout = self.layout
        have = bitarray(layout.num_pieces, endian="big")
        have.setall(False)
        with self._lock:
            for i in self._files:
                r = layout.file_pieces(i)
                if r:
                    have[r.start : r.stop] = True
        return have

    def delete_data(self) -> None:
        with self._lock:
            self._closed = True
            self._files.clear()
            self._writes.clear()
