"""``File`` and ``Piece``: user-facing handles onto parts of a torrent (anacrolix-style).

They hold no state of their own beyond a priority; everything else is read
from the torrent so the handles never go stale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .info import FileEntry
from .piecestate import PieceState
from .types import PiecePriority

if TYPE_CHECKING:
    from .torrent import Torrent


class File:
    """One payload file of a torrent."""

    def __init__(self, torrent: Torrent, index: int, entry: FileEntry, path: str) -> None:
        self._torrent = torrent
        self.index = index  # position in Info.files (padding files included)
        self.entry = entry
        self.path = path  # display path, '/'-separated, including the torrent name
        self._priority = PiecePriority.NORMAL

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
            self._torrent._file_priority_changed(self)

    def download(self) -> None:
        self.set_priority(PiecePriority.NORMAL)

    def cancel(self) -> None:
        self.set_priority(PiecePriority.NONE)

    @property
    def begin_piece(self) -> int:
        return self._torrent._file_pieces(self).start

    @property
    def end_piece(self) -> int:
        return self._torrent._file_pieces(self).stop

    def bytes_completed(self) -> int:
        """Bytes of this file inside verified pieces."""
        return self._torrent._file_bytes_completed(self)


class Piece:
    """One piece of a torrent."""

    def __init__(self, torrent: Torrent, index: int) -> None:
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
        return self._torrent._piece_state(self.index)

    @property
    def priority(self) -> PiecePriority:
        return self._torrent._own_piece_priority.get(self.index, PiecePriority.NONE)

    def set_priority(self, priority: PiecePriority) -> None:
        self._torrent._set_own_piece_priority(self.index, PiecePriority(priority))
