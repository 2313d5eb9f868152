"""pytorrent core: a BitTorrent engine usable as a library.

``core`` never imports ``textual`` or ``rich``; the UI depends on the engine,
never the other way round.
"""

from .errors import (
    BencodeError,
    ConfigError,
    LocalProtocolError,
    MagnetError,
    MetainfoError,
    RemoteProtocolError,
    StorageError,
    TorrentError,
    TrackerError,
)

__all__ = [
    "BencodeError",
    "ConfigError",
    "LocalProtocolError",
    "MagnetError",
    "MetainfoError",
    "RemoteProtocolError",
    "StorageError",
    "TorrentError",
    "TrackerError",
]
