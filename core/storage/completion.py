"""Which pieces are known good, remembered across restarts in SQLite.

One database under the client's data directory serves every torrent, keyed
by the info-hash hex.  Per torrent it keeps the set of complete pieces (a
big-endian bitarray blob, the BEP 3 bitfield) and, per file, the
``(size, mtime_ns)`` the file had when the record was written.

On :meth:`CompletionStore.load` a file whose size or mtime no longer match
(or which disappeared) loses every piece that touches it: someone changed it
behind our back, so those pieces must be hash-checked again rather than
trusted.  Pieces with no record at all are for the engine to hash-check if
:meth:`Layout.pieces_with_data_on_disk` says some data is there, which turns
"point at a complete copy" into an instant seed.

Writes are batched: :meth:`CompletionStore.mark` is cheap to call per piece
and commits every ``batch_size`` marks (a piece going *incomplete* commits at
once, since forgetting that would make a crash trust bad data).  A commit
restats only the files of the pieces it records; :meth:`save_all` and
:meth:`detach` restat every file, which is what pause and shutdown should
call after ``Storage.flush()`` so later partial writes do not look like
tampering on the next start.

Threading: one connection (``check_same_thread=False``) behind a lock; the
engine calls from worker threads.  The journal is WAL so readers (a UI, a
CLI) never block the engine.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from bitarray import bitarray

from ..errors import StorageError
from ..types import InfoHash
from .base import Storage
from .layout import Layout

__all__ = ["DEFAULT_BATCH_SIZE", "CompletionStore", "StatSource"]

DEFAULT_BATCH_SIZE = 64
SCHEMA_VERSION = 1

#: Where current file sizes and mtimes come from: the layout itself (stats
#: the disk) or a storage (which may be in memory).
StatSource = Layout | Storage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS torrents (
    info_hash  TEXT PRIMARY KEY,
    num_pieces INTEGER NOT NULL,
    pieces     BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    info_hash TEXT NOT NULL,
    idx       INTEGER NOT NULL,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    PRIMARY KEY (info_hash, idx)
) WITHOUT ROWID;
"""


@dataclass(slots=True)
class _Torrent:
    source: StatSource
    layout: Layout
    bits: bitarray
    dirty: set[int] = field(default_factory=set)


def _key(info_hash: str | InfoHash) -> str:
    return info_hash.hex() if isinstance(info_hash, InfoHash) else info_hash.lower()


def _layout_of(source: StatSource) -> Layout:
    return source if isinstance(source, Layout) else source.layout


class CompletionStore:
    """Persistent piece completion for every torrent of a client."""

    def __init__(
        self, db_path: str | os.PathLike[str], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        self.path = Path(db_path)
        self.batch_size = max(1, batch_size)
        self._lock = threading.Lock()
        self._torrents: dict[str, _Torrent] = {}
        self._pending = 0
        self._is_closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=10.0
            )
        except (OSError, sqlite3.Error) as e:
            raise self._error(e, "cannot open completion database") from e
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StorageError(
                    errno.EINVAL, f"completion database has schema {version}", str(self.path)
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as e:
            self._db.close()
            raise self._error(e, "cannot initialise completion database") from e
        except StorageError:
            self._db.close()
            raise

    def _error(self, e: Exception, what: str) -> StorageError:
        code = e.errno if isinstance(e, OSError) and e.errno is not None else errno.EIO
        return StorageError(code, f"{what}: {e}", str(self.path))

    # -- public API -------------------------------------------------------------

    def load(self, info_hash: str | InfoHash, source: StatSource) -> bitarray | None:
        """Known-complete pieces of a torrent, or ``None`` if there is no usable record.

        Pieces touching a file whose size or mtime changed since the record
        (or that is missing now) come back as not complete.  The torrent is
        registered for :meth:`mark` either way.
        """
        key = _key(info_hash)
        layout = _layout_of(source)
        n = layout.num_pieces
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT num_pieces, pieces FROM torrents WHERE info_hash=?", (key,)
                ).fetchone()
                stored = {
                    idx: (size, mtime)
                    for idx, size, mtime in self._db.execute(
                        "SELECT idx, size, mtime_ns FROM files WHERE info_hash=?", (key,)
                    )
                }
            except sqlite3.Error as e:
                raise self._error(e, "cannot read completion") from e
            bits = bitarray(n, endian="big")
            bits.setall(False)
            result: bitarray | None = None
            if row is not None and row[0] == n and len(row[1]) == (n + 7) // 8:
                bits = bitarray(endian="big")
                bits.frombytes(bytes(row[1]))
                del bits[n:]
                current = source.file_sizes_and_mtimes()
                for i, f in enumerate(layout.files):
                    if f.is_padding or f.length == 0:
                        continue
                    if current[i] is None or stored.get(i) != current[i]:
                        r = layout.file_pieces(i)
                        bits[r.start : r.stop] = False
                result = bits.copy()
            self._torrents[key] = _Torrent(source, layout, bits)
            return result

    def mark(self, info_hash: str | InfoHash, piece: int, complete: bool) -> None:
        """Record one piece; commits every ``batch_size`` marks, or now if ``complete`` is False."""
        key = _key(info_hash)
        with self._lock:
            t = self._torrents.get(key)
            if t is None:
                raise KeyError(f"torrent {key} not loaded: call load() or save_all() first")
            if not 0 <= piece < len(t.bits):
                raise StorageError(errno.EINVAL, f"piece {piece} out of range", key)
            if t.bits[piece] == complete:
                return
            t.bits[piece] = complete
            t.dirty.add(piece)
            self._pending += 1
            if not complete or self._pending >= self.batch_size:
                self._commit()

    def save_all(self, info_hash: str | InfoHash, source: StatSource, pieces: bitarray) -> None:
        """Replace a torrent's record with ``pieces`` and the current stats of every file."""
        key = _key(info_hash)
        layout = _layout_of(source)
        if len(pieces) != layout.num_pieces:
            raise StorageError(
                errno.EINVAL,
                f"{len(pieces)} completion bits for {layout.num_pieces} pieces",
                key,
            )
        bits = bitarray(pieces, endian="big")
        with self._lock:
            self._torrents[key] = _Torrent(source, layout, bits)
            self._commit(full={key})

    def completed(self, info_hash: str | InfoHash) -> bitarray:
        """The in-memory view of a registered torrent's complete pieces (a copy)."""
        key = _key(info_hash)
        with self._lock:
            t = self._torrents.get(key)
            if t is None:
                raise KeyError(f"torrent {key} not loaded")
            return t.bits.copy()

    def flush(self) -> None:
        """Commit every pending mark now."""
        with self._lock:
            self._commit()

    def detach(self, info_hash: str | InfoHash) -> None:
        """Commit a torrent with a full restat and stop tracking it in memory.

        Call it when a torrent is paused or removed-but-kept, after
        ``Storage.flush()``.
        """
        key = _key(info_hash)
        with self._lock:
            if key in self._torrents:
                self._commit(full={key})
                del self._torrents[key]

    def forget(self, info_hash: str | InfoHash) -> None:
        """Delete everything known about a torrent."""
        key = _key(info_hash)
        with self._lock:
            t = self._torrents.pop(key, None)
            if t is not None:
                self._pending = max(0, self._pending - len(t.dirty))
            try:
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM torrents WHERE info_hash=?", (key,))
                self._db.execute("DELETE FROM files WHERE info_hash=?", (key,))
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                raise self._error(e, "cannot forget torrent") from e

    def known(self) -> list[str]:
        """Info-hash hex of every torrent with a record."""
        with self._lock:
            try:
                return [r[0] for r in self._db.execute("SELECT info_hash FROM torrents")]
            except sqlite3.Error as e:
                raise self._error(e, "cannot list torrents") from e

    def close(self) -> None:
        """Detach every torrent (full restat) and close the database."""
        with self._lock:
            if self._is_closed:
                return
            self._is_closed = True
            try:
                if self._torrents:
                    self._commit(full=set(self._torrents))
                self._torrents.clear()
            finally:
                self._db.close()

    def __enter__(self) -> CompletionStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals (lock held) ---------------------------------------------------

    def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _commit(self, full: Iterable[str] = ()) -> None:
        full = set(full)
        jobs: list[tuple[str, _Torrent, list[int], list[tuple[int, int] | None]]] = []
        for key, t in self._torrents.items():
            if key in full:
                indices = list(range(len(t.layout.files)))
            elif t.dirty:
                touched = {i for p in t.dirty for i in t.layout.piece_files(p)}
                indices = sorted(i for i in touched if not t.layout.files[i].is_padding)
            else:
                continue
            # Stat before taking the database transaction: syscalls only.
            jobs.append((key, t, indices, t.source.file_sizes_and_mtimes(indices)))
        if not jobs:
            self._pending = 0
            return
        try:
            self._db.execute("BEGIN")
            for key, t, indices, stats in jobs:
                self._db.execute(
                    "INSERT INTO torrents (info_hash, num_pieces, pieces) VALUES (?, ?, ?) "
                    "ON CONFLICT(info_hash) DO UPDATE SET "
                    "num_pieces=excluded.num_pieces, pieces=excluded.pieces",
                    (key, len(t.bits), t.bits.tobytes()),
                )
                if key in full:
                    self._db.execute("DELETE FROM files WHERE info_hash=?", (key,))
                else:
                    self._db.executemany(
                        "DELETE FROM files WHERE info_hash=? AND idx=?",
                        [(key, i) for i, s in zip(indices, stats, strict=True) if s is None],
                    )
                self._db.executemany(
                    "INSERT OR REPLACE INTO files (info_hash, idx, size, mtime_ns) "
                    "VALUES (?, ?, ?, ?)",
                    [
                        (key, i, s[0], s[1])
                        for i, s in zip(indices, stats, strict=True)
                        if s is not None
                    ],
                )
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise self._error(e, "cannot record completion") from e
        for _, t, _, _ in jobs:
            t.dirty.clear()
        self._pending = 0
