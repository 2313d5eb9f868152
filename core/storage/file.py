"""Plain files on disk, the default storage.

Design points, each for a reason:

* Files are created on first write, never before, so deselected files do not
  appear; they are sized with ``ftruncate`` to their final length and never
  filled with zeros, so they stay sparse until data arrives.
* I/O goes through ``os.pread``/``os.pwrite`` on raw descriptors: there is
  no shared file position, so threads writing different pieces of one file
  never race on a seek.
* Descriptors live in a small LRU (``max_open``, default 64) so a 10,000-file
  torrent does not exhaust the process's descriptor limit.  A handle in use
  by another thread is never closed under it: eviction only unlinks it from
  the cache and the last user closes it, so a descriptor number can never be
  recycled while someone is still writing through it.
* Every path comes from :meth:`Layout.resolve`, which refuses anything whose
  real location (symlinks followed) is outside the download root, and the
  final open uses ``O_NOFOLLOW`` so a symlink swapped in afterwards is not
  followed either.
* An existing file longer than the torrent says is left alone (it may be the
  user's); only the bytes the torrent covers are read or written.
* BEP 47 attributes: an ``x`` file gets execute bits wherever it has read
  bits (so the umask still rules) when it is created; an ``l`` entry
  becomes a relative symlink when the files are ensured (the parser has
  already proven its target is a file or directory of the torrent, so the
  link can only point inside the torrent's directory), or an empty file
  where the file system refuses symlinks.  ``h`` (hidden) is a Windows
  attribute with no meaning on Linux and is ignored.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable

from bitarray import bitarray

from ..errors import StorageError
from .base import DataMissingError, SegmentedStorage, os_error
from .layout import Layout

__all__ = ["DEFAULT_MAX_OPEN", "FileStorage"]

DEFAULT_MAX_OPEN = 64

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class _Handle:
    """An open descriptor plus the bookkeeping that makes eviction safe."""

    __slots__ = ("evicted", "fd", "path", "users", "writable")

    def __init__(self, fd: int, path: str, writable: bool) -> None:
        self.fd = fd
        self.path = path
        self.writable = writable
        self.users = 0
        self.evicted = False


class FileStorage(SegmentedStorage):
    """Store a torrent's files under ``layout.root``; see the module docstring."""

    def __init__(self, layout: Layout, *, max_open: int = DEFAULT_MAX_OPEN) -> None:
        if layout.root is None:
            raise StorageError(errno.EINVAL, "file storage needs a layout with a root")
        if max_open < 1:
            raise StorageError(errno.EINVAL, f"max_open must be at least 1, got {max_open}")
        self.layout = layout
        self.max_open = max_open
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, _Handle] = OrderedDict()
        self._dirty: set[int] = set()
        self._closed = False
        self._orphans = 0  # evicted handles some thread is still using

    # -- descriptor cache ----------------------------------------------------

    def open_count(self) -> int:
        """Descriptors currently open (cached or still in use after eviction)."""
        with self._lock:
            return len(self._cache) + self._orphans

    def _acquire(self, index: int, write: bool) -> _Handle:
        with self._lock:
            if self._closed:
                raise StorageError(errno.EBADF, "storage is closed", str(self.layout.root))
            h = self._cache.get(index)
            if h is not None:
                if h.writable or not write:
                    self._cache.move_to_end(index)
                    h.users += 1
                    return h
                # Upgrade a read-only handle: drop it, open read-write below.
                del self._cache[index]
                self._retire(h)
            h = self._open(index, write)
            h.users = 1
            self._cache[index] = h
            while len(self._cache) > self.max_open:
                _, old = self._cache.popitem(last=False)
                self._retire(old)
            if write:
                self._dirty.add(index)
            return h

    def _release(self, h: _Handle) -> None:
        with self._lock:
            h.users -= 1
            if h.evicted and h.users == 0:
                self._orphans -= 1
                self._close_fd(h)

    def _retire(self, h: _Handle) -> None:
        # Called with the lock held, after removing h from the cache.
        if h.users == 0:
            self._close_fd(h)
        else:
            h.evicted = True
            self._orphans += 1

    @staticmethod
    def _close_fd(h: _Handle) -> None:
        try:
            os.close(h.fd)
        except OSError:  # pragma: no cover - close errors carry no data loss info here
            pass

    def _open(self, index: int, write: bool) -> _Handle:
        path = self.layout.resolve(index)
        try:
            if not write:
                fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | _O_NOFOLLOW)
                return _Handle(fd, path, False)
            parent = os.path.dirname(path)
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as e:
                raise os_error(e, "cannot create directory", e.filename or parent) from e
            # Re-check now the directories exist: one could have been swapped
            # for a symlink between resolve() and makedirs().
            if self.layout.resolve(index) != path:
                raise StorageError(errno.EXDEV, "path changed while being created", path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _O_CLOEXEC | _O_NOFOLLOW, 0o666)
        except StorageError:
            raise
        except OSError as e:
            raise os_error(e, "open failed", path) from e
        try:
            f = self.layout.files[index]
            st = os.fstat(fd)
            if st.st_size < f.length:
                os.ftruncate(fd, f.length)
            if f.executable and (st.st_mode & 0o444) >> 2 & ~st.st_mode:
                os.fchmod(fd, (st.st_mode | (st.st_mode & 0o444) >> 2) & 0o7777)
        except OSError as e:
            os.close(fd)
            raise os_error(e, "resize failed", path) from e
        return _Handle(fd, path, True)

    def _make_symlink(self, index: int) -> None:
        """Create the BEP 47 symlink ``index`` (relative), or an empty file if the
        file system refuses; anything already at its path is left alone."""
        f = self.layout.files[index]
        assert f.symlink is not None and self.layout.root is not None
        path = self.layout.resolve(index)
        if os.path.lexists(path):
            return
        parent = os.path.dirname(path)
        root = os.path.realpath(self.layout.root)
        target = os.path.relpath(os.path.join(root, *f.symlink), parent)
        try:
            os.makedirs(parent, exist_ok=True)
            if self.layout.resolve(index) != path:
                raise StorageError(errno.EXDEV, "path changed while being created", path)
            try:
                os.symlink(target, path)
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | _O_CLOEXEC | _O_NOFOLLOW, 0o666)
                os.close(fd)
        except StorageError:
            raise
        except OSError as e:
            raise os_error(e, "cannot create symlink", path) from e

    # -- per-file I/O (SegmentedStorage) ---------------------------------------

    def _write_file(self, index: int, pos: int, data: memoryview) -> None:
        h = self._acquire(index, True)
        try:
            while data:
                n = os.pwrite(h.fd, data, pos)
                data = data[n:]
                pos += n
        except OSError as e:
            raise os_error(e, "write failed", h.path) from e
        finally:
            self._release(h)

    def _read_file(self, index: int, pos: int, length: int) -> bytes:
        h = self._acquire(index, False)
        try:
            data = os.pread(h.fd, length, pos)
            if len(data) < length:
                parts = [data]
                got = len(data)
                while got < length:
                    more = os.pread(h.fd, length - got, pos + got)
                    if not more:
                        raise DataMissingError(
                            errno.ENODATA, f"file ends before byte {pos + length}", h.path
                        )
                    parts.append(more)
                    got += len(more)
                data = b"".join(parts)
            return data
        except OSError as e:
            if isinstance(e, StorageError):
                raise
            raise os_error(e, "read failed", h.path) from e
        finally:
            self._release(h)

    # -- whole-torrent operations ----------------------------------------------

    def ensure_files(self, indices: Iterable[int] | None = None) -> None:
        """Create the listed files (default: all non-padding files) at full, sparse size.

        The engine calls this when a torrent completes so zero-length files,
        which no piece ever writes, exist too.
        """
        wanted = range(len(self.layout.files)) if indices is None else indices
        for i in wanted:
            f = self.layout.files[i]
            if f.is_padding:
                continue
            if f.symlink is not None:
                self._make_symlink(i)
                continue
            self._release(self._acquire(i, True))

    def flush(self) -> None:
        """fsync every file written since the last flush."""
        with self._lock:
            dirty = sorted(self._dirty)
            self._dirty.clear()
        for i in dirty:
            h = self._acquire(i, False)
            try:
                os.fsync(h.fd)
            except OSError as e:
                with self._lock:
                    self._dirty.add(i)
                raise os_error(e, "fsync failed", h.path) from e
            finally:
                self._release(h)

    def close(self) -> None:
        """Close every cached descriptor; handles still in use close on release."""
        with self._lock:
            self._closed = True
            handles = list(self._cache.values())
            self._cache.clear()
            for h in handles:
                self._retire(h)

    def file_sizes_and_mtimes(
        self, indices: Iterable[int] | None = None
    ) -> list[tuple[int, int] | None]:
        return self.layout.file_sizes_and_mtimes(indices)

    def pieces_with_data(self) -> bitarray:
        return self.layout.pieces_with_data_on_disk()

    def delete_data(self) -> None:
        """Close, delete every file of the torrent, then prune emptied directories.

        Only directories that lay on the way to one of our files are removed,
        and only when empty; the root itself is kept.
        """
        self.close()
        layout = self.layout
        assert layout.root is not None
        root = os.path.realpath(layout.root)
        prefix = root.rstrip(os.sep) + os.sep
        dirs: set[str] = set()
        for i, f in enumerate(layout.files):
            if f.is_padding:
                continue
            path = layout.resolve(i)
            parent = os.path.dirname(path)
            while len(parent) > len(root) and parent.startswith(prefix):
                dirs.add(parent)
                parent = os.path.dirname(parent)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise os_error(e, "delete failed", path) from e
        for d in sorted(dirs, key=len, reverse=True):
            try:
                os.rmdir(d)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    raise os_error(e, "rmdir failed", d) from e
