"""Typed errors for the whole engine.

Every failure the engine can report derives from :class:`TorrentError`, so a
caller (the CLI, the TUI, a library user) can catch one root and still tell a
malformed torrent from a hostile peer from a full disk.
"""

from __future__ import annotations


class TorrentError(Exception):
    """Root of every error the engine raises on purpose."""


class BencodeError(TorrentError, ValueError):
    """Malformed bencoded data. ``offset`` is the byte position of the fault."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}")
        self.reason = message
        self.offset = offset


class MetainfoError(TorrentError, ValueError):
    """A .torrent (or info dict) that is structurally valid bencode but not a valid torrent."""


class MagnetError(TorrentError, ValueError):
    """A magnet URI that cannot be parsed; the message says why."""


class LocalProtocolError(TorrentError):
    """We tried to do something the protocol forbids: a bug on our side."""


class RemoteProtocolError(TorrentError):
    """The remote peer broke the protocol: disconnect it, maybe ban it."""


class TrackerError(TorrentError):
    """A tracker failed: unreachable, malformed answer, or a ``failure reason``."""


class DhtError(TorrentError):
    """A DHT operation failed: no node answered, a bad address, a refused item."""


class StorageError(TorrentError, OSError):
    """Disk I/O failed (full disk, permissions, ...)."""


class ConfigError(TorrentError, ValueError):
    """Invalid configuration."""
