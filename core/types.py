"""Small value types shared by every layer: info-hashes, peer ids, priorities."""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass

from .errors import TorrentError


class PiecePriority(enum.IntEnum):
    """How urgently a piece is wanted; ordering matches anacrolix/torrent.

    A piece's effective priority is the maximum of its files' priorities, its
    own priority, and the windows of any readers over it.
    """

    NONE = 0
    NORMAL = 1
    HIGH = 2
    READAHEAD = 3
    NEXT = 4
    NOW = 5


@dataclass(frozen=True, slots=True)
class InfoHash:
    """A torrent's identity: a v1 SHA-1 hash, a v2 SHA-256 hash, or both (hybrid).

    ``wire`` is the 20 bytes used in handshakes, trackers and the DHT: the v1
    hash when there is one, otherwise the v2 hash truncated to 20 bytes
    (BEP 52).
    """

    v1: bytes | None = None
    v2: bytes | None = None

    def __post_init__(self) -> None:
        if self.v1 is None and self.v2 is None:
            raise TorrentError("an info-hash needs a v1 or a v2 hash")
        if self.v1 is not None and len(self.v1) != 20:
            raise TorrentError(f"v1 info-hash must be 20 bytes, got {len(self.v1)}")
        if self.v2 is not None and len(self.v2) != 32:
            raise TorrentError(f"v2 info-hash must be 32 bytes, got {len(self.v2)}")

    @property
    def wire(self) -> bytes:
        if self.v1 is not None:
            return self.v1
        assert self.v2 is not None
        return self.v2[:20]

    @property
    def v2_truncated(self) -> bytes | None:
        return None if self.v2 is None else self.v2[:20]

    def hex(self) -> str:
        """The hex of the wire hash: the usual short name of a torrent."""
        return self.wire.hex()

    def base32(self) -> str:
        return base64.b32encode(self.wire).decode("ascii")

    def __str__(self) -> str:
        return self.hex()
