"""The data the TUI shows, as plain frozen values (no engine objects, no Textual).

The engine facade (``tui.engine``) turns engine state into these; widgets
only ever receive them.  Keeping the shapes here, in one small module, lets
the real engine and the scripted fake engine feed identical data, which is
what makes snapshot tests and screenshots deterministic.

Torrent and peer rows reuse the engine's own bus types
(:class:`core.events.TorrentRow`, :class:`core.events.PeerRow`); tracker rows
are :class:`core.tracker.types.TrackerStatus`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from core.events import PeerRow, TorrentRow
from core.tracker.types import TrackerStatus
from core.types import InfoHash, PiecePriority

__all__ = [
    "DHT_STATES",
    "DHT_URL",
    "FileRow",
    "GlobalStatus",
    "PeerRow",
    "PieceCell",
    "PieceMap",
    "TorrentDetails",
    "TorrentInfoView",
    "TorrentRow",
    "TrackerStatus",
]


@dataclass(frozen=True, slots=True)
class FileRow:
    """One payload file of the selected torrent.

    ``path`` is relative to the torrent root, '/'-separated, without the
    torrent name.  ``first_piece``/``last_piece`` are inclusive and let the UI
    preview which pieces a priority change touches (shared boundary pieces
    included).
    """

    index: int
    path: str
    size: int
    bytes_done: int
    priority: PiecePriority
    first_piece: int
    last_piece: int
    #: The path the torrent gave (``name/dir/file``) when it had to be made
    #: safe (core.formats.safepath), so the add dialog can say where a file really goes.
    renamed_from: str | None = None

    @property
    def progress(self) -> float:
        return 1.0 if self.size == 0 else self.bytes_done / self.size


class PieceCell(enum.IntEnum):
    """What one piece (or group of pieces) looks like on the piece map."""

    MISSING = 0  # wanted, not started
    PARTIAL = 1  # some blocks received
    CHECKING = 2  # hashing or queued for hash
    HAVE = 3  # verified
    HIGH = 4  # wanted at HIGH or above (readers, streaming)
    SKIPPED = 5  # priority NONE, not had


@dataclass(frozen=True, slots=True)
class PieceMap:
    """Per-piece states and swarm availability of one torrent.

    ``cells[i]`` is the state of piece ``i``; ``availability[i]`` how many
    connected peers have it (0-255, saturating); ``file_starts`` the first
    piece of each payload file, to mark file boundaries.
    """

    cells: bytes
    availability: bytes
    file_starts: tuple[int, ...]

    @property
    def num_pieces(self) -> int:
        return len(self.cells)


@dataclass(frozen=True, slots=True)
class TorrentInfoView:
    """The Info tab: facts about a torrent, and its progress over the wanted files and the whole."""

    name: str
    info_hash_v1: str | None
    info_hash_v2: str | None
    size: int
    piece_length: int
    num_pieces: int
    save_path: str
    comment: str | None
    created_by: str | None
    creation_date: int | None
    private: bool
    magnet: str
    #: Payload bytes verified, of ``size`` (the whole torrent).
    bytes_done: int = 0
    #: Size and verified bytes of the files not skipped: the figures the
    #: torrent list shows (equal to the whole torrent's when nothing is skipped).
    wanted_size: int = 0
    wanted_done: int = 0
    #: Payload files, and how many of them are not skipped.
    files: int = 0
    wanted_files: int = 0

    @property
    def progress(self) -> float:
        """Whole-torrent progress, 0.0-1.0."""
        return self.bytes_done / self.size if self.size else 1.0

    @property
    def wanted_progress(self) -> float:
        """Progress of the wanted files, 0.0-1.0 (1.0 when nothing is wanted, as libtorrent)."""
        return self.wanted_done / self.wanted_size if self.wanted_size else 1.0


@dataclass(frozen=True, slots=True)
class TorrentDetails:
    """Everything the detail tabs show for the selected torrent, refreshed together."""

    info_hash: InfoHash
    files: tuple[FileRow, ...]
    peers: tuple[PeerRow, ...]
    trackers: tuple[TrackerStatus, ...]
    pieces: PieceMap | None
    info: TorrentInfoView | None
    sequential: bool = False
    first_last: bool = False
    download_limit: int | None = None
    upload_limit: int | None = None


#: What :attr:`GlobalStatus.dht_state` can say (``core.events.ClientSnapshot.dht_state``).
DHT_STATES = ("off", "bootstrapping", "ok", "failed")

#: The URL of the DHT's row in a torrent's trackers (``Torrent.trackers()``, tier -1),
#: qBittorrent's name for it.
DHT_URL = "** [DHT] **"


@dataclass(frozen=True, slots=True)
class GlobalStatus:
    """The status pane: totals for the whole client."""

    down_rate: float
    up_rate: float
    download_limit: int | None
    upload_limit: int | None
    peers: int
    listen_port: int
    free_disk: int | None
    session_downloaded: int
    session_uploaded: int
    errors: int
    #: Nodes in the DHT's routing tables, and of those the good ones (they
    #: answered us recently, BEP 5): the "143/210" the status pane shows.
    dht_nodes: int = 0
    dht_good_nodes: int = 0
    #: One of :data:`DHT_STATES`: "off" (disabled, or it could not start),
    #: "bootstrapping" (joining), "ok" (some node answered), "failed" (none did).
    dht_state: str = "off"

    @property
    def ratio(self) -> float:
        return self.session_uploaded / self.session_downloaded if self.session_downloaded else 0.0
