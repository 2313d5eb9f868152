"""Counters, rates and the torrent lifecycle state.

The counters mirror anacrolix/torrent's ``ConnStats``/``TorrentStats``/
``ClientStats`` so numbers mean the same thing in both engines: *data* is
torrent content without protocol overhead, *useful* is data we actually
needed, *written* is what we sent and *read* what we received. They are plain
mutable integers: the event loop is the engine's only lock, so no atomics.

:class:`RateMeter` is pure (time is passed in) so the choker and snapshot
code can be tested without clocks.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Self


class TorrentState(enum.StrEnum):
    """Where a torrent is in its life; shown in the UI and sent on the bus.

    A string enum so it survives JSON and TOML and reads well in logs.
    """

    FETCHING_METADATA = "fetching_metadata"
    CHECKING = "checking"
    DOWNLOADING = "downloading"
    SEEDING = "seeding"
    PAUSED = "paused"
    ERROR = "error"


@dataclass(slots=True)
class ConnStats:
    """Connection-level counters; summed over connections at torrent/client level.

    Chunks are messages with a data payload (``piece`` messages); pieces
    *dirtied* are pieces this connection wrote data into, counted once they
    pass (good) or fail (bad) verification.
    """

    bytes_written: int = 0
    bytes_written_data: int = 0
    bytes_read: int = 0
    bytes_read_data: int = 0
    bytes_read_useful_data: int = 0
    chunks_written: int = 0
    chunks_read: int = 0
    chunks_read_useful: int = 0
    chunks_read_wasted: int = 0
    metadata_chunks_read: int = 0
    pieces_dirtied_good: int = 0
    pieces_dirtied_bad: int = 0

    def copy(self) -> Self:
        """A snapshot that later counting will not change."""
        return replace(self)

    def conn_stats(self) -> ConnStats:
        """Only the connection counters (drops the extra fields of subclasses)."""
        return ConnStats(**{name: getattr(self, name) for name in _CONN_FIELDS})

    def __add__(self, other: ConnStats) -> ConnStats:
        """Sum of the connection counters; always a plain :class:`ConnStats`."""
        if not isinstance(other, ConnStats):
            return NotImplemented
        return ConnStats(
            **{name: getattr(self, name) + getattr(other, name) for name in _CONN_FIELDS}
        )

    def accumulate(self, other: ConnStats) -> None:
        """Add ``other``'s connection counters into this one in place.

        Used when a connection closes: its counters fold into the torrent's
        lifetime totals so "past and present" connections are both counted.
        """
        for name in _CONN_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


_CONN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ConnStats))


@dataclass(slots=True)
class TorrentStats(ConnStats):
    """A torrent's connection counters (all connections, past and present) plus peer counts.

    Peer counts are ordered by expected descending size: known addresses,
    addresses waiting to be dialled, live connections, the seeders among them,
    dials in progress.
    """

    total_peers: int = 0
    pending_peers: int = 0
    active_peers: int = 0
    connected_seeders: int = 0
    half_open_peers: int = 0
    pieces_complete: int = 0
    #: Unverified bytes dropped when a piece was started over to keep a peer on
    #: parole apart from others (received, counted useful, never written).
    bytes_discarded: int = 0
    #: Connected peers on parole: suspected of sending bad data (see core.engine.blame).
    peers_on_parole: int = 0
    #: Connected peers that sent data for at least one piece that failed its hash check.
    peers_with_hash_failures: int = 0
    #: Connected peers by how we learned of them (``PeerSource`` values).
    peers_by_source: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ClientStats(ConnStats):
    """The client's connection counters summed over torrents, plus client-wide counts."""

    torrents: int = 0
    active_peers: int = 0
    active_half_open_attempts: int = 0
    dht_nodes: int = 0


class RateMeter:
    """Bytes per second over a sliding window, fed with byte counts and times.

    Time is split into buckets of ``resolution`` seconds; the rate is the sum
    of the last ``window / resolution`` buckets divided by the time they
    cover (up to now, not to the end of the current bucket), so a
    steady flow reads its true rate within one bucket of starting (no
    exponential warm-up), and a stopped flow reads zero after ``window``
    seconds. Memory is bounded by ``window / resolution`` buckets; ``add`` and
    ``rate`` are amortised O(1).

    ``now`` is any monotonic clock in seconds. A ``now`` earlier than one
    already seen is treated as the latest seen, so a misbehaving clock can
    never produce a negative span or a negative rate.
    """

    __slots__ = ("_buckets", "_first", "_latest", "_nbuckets", "_resolution", "_sum", "total")

    def __init__(self, window: float = 5.0, resolution: float = 0.25) -> None:
        if not (math.isfinite(resolution) and resolution > 0):
            raise ValueError(f"resolution must be a positive number of seconds, got {resolution}")
        if not (math.isfinite(window) and window >= resolution):
            raise ValueError(f"window must be at least the resolution, got {window}")
        self._resolution = resolution
        self._nbuckets = max(1, round(window / resolution))
        self._buckets: deque[list[int]] = deque()  # [bucket index, bytes]
        self._sum = 0
        self._first: float | None = None
        self._latest = -math.inf
        #: Every byte ever added: a lifetime counter for ratios and totals.
        self.total = 0

    @property
    def window(self) -> float:
        return self._nbuckets * self._resolution

    def add(self, nbytes: int, now: float) -> None:
        """Count ``nbytes`` transferred at time ``now``."""
        if nbytes < 0:
            raise ValueError(f"cannot count a negative number of bytes: {nbytes}")
        now = self._clamp(now)
        if self._first is None:
            self._first = now
        self.total += nbytes
        index = self._index(now)
        self._expire(index)
        if self._buckets and self._buckets[-1][0] == index:
            self._buckets[-1][1] += nbytes
        else:
            self._buckets.append([index, nbytes])
        self._sum += nbytes

    def rate(self, now: float) -> float:
        """Bytes per second over the last ``window`` seconds (0.0 before any data)."""
        now = self._clamp(now)
        if self._first is None:
            return 0.0
        index = self._index(now)
        self._expire(index)
        if not self._sum:
            return 0.0
        # The buckets kept cover from the start of the oldest one to now
        # (the newest is only partly elapsed); before a full window has
        # passed, they cover only the time since the first byte. At least
        # one bucket, so a burst at the first instant is not divided by zero.
        covered = now - (index - self._nbuckets + 1) * self._resolution
        span = max(min(covered, now - self._first), self._resolution)
        return self._sum / span

    def _clamp(self, now: float) -> float:
        if now < self._latest:
            return self._latest
        self._latest = now
        return now

    def _index(self, now: float) -> int:
        return math.floor(now / self._resolution)

    def _expire(self, index: int) -> None:
        oldest = index - self._nbuckets + 1
        buckets = self._buckets
        while buckets and buckets[0][0] < oldest:
            self._sum -= buckets.popleft()[1]
