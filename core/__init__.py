"""pytorrent core: a BitTorrent engine usable as a library.

The public API mirrors anacrolix/torrent: a :class:`Client` configured by
:class:`ClientConfig` owns :class:`Torrent` objects, whose :class:`File` and
:class:`Piece` handles carry :class:`PiecePriority` values; ``client.dht``
is the client's :class:`DhtService` (the mainline DHT), or None when off.
``core`` never imports ``textual`` or ``rich``; the UI depends on the
engine, never the other way round.
"""

from .config import ClientConfig
from .engine.client import Client
from .engine.dht_service import DhtService, DhtServiceStats
from .engine.files import File, Piece
from .engine.torrent import Torrent
from .errors import (
    BencodeError,
    ConfigError,
    DhtError,
    LocalProtocolError,
    MagnetError,
    MetainfoError,
    RemoteProtocolError,
    StorageError,
    TorrentError,
    TrackerError,
)
from .formats.magnet import Magnet, parse_magnet
from .formats.metainfo import Metainfo
from .piecestate import PieceState, PieceStateRun
from .stats import ClientStats, ConnStats, TorrentState, TorrentStats
from .types import InfoHash, PiecePriority

__all__ = [
    "BencodeError",
    "Client",
    "ClientConfig",
    "ClientStats",
    "ConfigError",
    "ConnStats",
    "DhtError",
    "DhtService",
    "DhtServiceStats",
    "File",
    "InfoHash",
    "LocalProtocolError",
    "Magnet",
    "MagnetError",
    "Metainfo",
    "MetainfoError",
    "Piece",
    "PiecePriority",
    "PieceState",
    "PieceStateRun",
    "RemoteProtocolError",
    "StorageError",
    "Torrent",
    "TorrentError",
    "TorrentState",
    "TorrentStats",
    "TrackerError",
    "parse_magnet",
]
