"""``File`` and ``Piece``: user-facing handles onto parts of a torrent (anacrolix-style).

They hold no state of their own beyond a priority; everything else is read
from the torrent so the handles never go stale.  They see the torrent
through :class:`FileHost` only (``Torrent`` satisfies it); a changed
priority is announced to it with one call (``file_priority_changed``,
``set_own_piece_priority`` or ``reprioritise``), never by writing its state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from ..formats.info import FileEntry
from ..piecestate import PieceState
from ..types import PiecePriority
from .reader import ReaderHost

if TYPE_CHECKING:
    from .reader import ReadaheadFunc, Reader

#: First/last-pieces-first mode raises a wanted file's end pieces to this.
FIRST_LAST_PRIORITY = PiecePriority.HIGH


class FileHost(ReaderHost, Protocol):
    """What ``File`` and ``Piece`` handles may read of their torrent and ask of it
    (a reader's needs, as ``File.new_reader`` makes one, and the priority calls)."""

    def piece_state(self, p: int) -> PieceState: ...
    def file_pieces(self, f: File) -> range: ...
    def file_bytes_completed(self, f: File) -> int: ...
    def file_priority_changed(self, f: File) -> None: ...
    def own_piece_priority(self, p: int) -> PiecePriority: ...
    def set_own_piece_priority(self, p: int, prio: PiecePriority) -> None: ...
    def reprioritise(self, pieces: Iterable[int]) -> None: ...


class File:
    """One payload file of a torrent."""

    def __init__(self, torrent: FileHost, index: int, entry: FileEntry, path: str) -> None:
        self._torrent = torrent
        self.index = index  # position in Info.files (padding files included)
        self.entry = entry
        self.path = path  # display path, '/'-separated, including the torrent name
        self._priority = PiecePriority.NORMAL
        self._first_last = False

    def __repr__(self) -> str:
        return f"<File {self.path!r} {self.length} bytes {self._priority.name}>"

    @property
    def length(self) -> int:
        return self.entry.length

    @property
    def offset(self) -> int:
        """Offset of the file's first byte in the torrent's piece space."""
        return self.entry.offset

    @property
    def priority(self) -> PiecePriority:
        return self._priority

    def set_priority(self, priority: PiecePriority) -> None:
        """Change how much this file is wanted; takes effect on the next request round."""
        priority = PiecePriority(priority)
        if priority != self._priority:
            self._priority = priority
            self._torrent.file_priority_changed(self)

    @property
    def first_last_pieces_first(self) -> bool:
        return self._first_last

    def set_first_last_pieces_first(self, on: bool) -> None:
        """Fetch this file's first and last pieces before its middle.

        Media players read a container's index, often at the end of the file,
        before playing; having both ends early lets playback start sooner.
        The end pieces of a wanted file are raised to ``HIGH`` (a ``HIGH``
        file therefore gains nothing; an unwanted file stays unwanted).
        """
        if on != self._first_last:
            self._first_last = on
            pieces = self._torrent.file_pieces(self)
            if pieces:
                self._torrent.reprioritise({pieces[0], pieces[-1]})

    def priority_for_piece(self, p: int) -> PiecePriority:
        """This file's say in piece ``p``'s priority."""
        prio = self._priority
        if self._first_last and prio and prio < FIRST_LAST_PRIORITY:
            pieces = self._torrent.file_pieces(self)
            if p == pieces.start or p == pieces.stop - 1:
                return FIRST_LAST_PRIORITY
        return prio

    def new_reader(
        self, *, readahead: int | ReadaheadFunc | None = None, responsive: bool = False
    ) -> Reader:
        """A seekable async reader over this file's bytes; its reads drive downloading."""
        from .reader import Reader

        return Reader(
            self._torrent, self.offset, self.length, readahead=readahead, responsive=responsive
        )

    def download(self) -> None:
        self.set_priority(PiecePriority.NORMAL)

    def cancel(self) -> None:
        self.set_priority(PiecePriority.NONE)

    @property
    def begin_piece(self) -> int:
        return self._torrent.file_pieces(self).start

    @property
    def end_piece(self) -> int:
        return self._torrent.file_pieces(self).stop

    def bytes_completed(self) -> int:
        """Bytes of this file inside verified pieces."""
        return self._torrent.file_bytes_completed(self)


class Piece:
    """One piece of a torrent."""

    def __init__(self, torrent: FileHost, index: int) -> None:
        self._torrent = torrent
        self.index = index

    def __repr__(self) -> str:
        return f"<Piece {self.index}>"

    @property
    def length(self) -> int:
        return self._torrent.info.piece_size(self.index)

    @property
    def complete(self) -> bool:
        return self._torrent.picker.have(self.index)

    def state(self) -> PieceState:
        return self._torrent.piece_state(self.index)

    @property
    def priority(self) -> PiecePriority:
        return self._torrent.own_piece_priority(self.index)

    def set_priority(self, priority: PiecePriority) -> None:
        self._torrent.set_own_piece_priority(self.index, PiecePriority(priority))
