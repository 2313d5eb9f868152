"""What the engine tells the outside world, as values on the event bus.

Two kinds of event, with different delivery guarantees (see ``core/bus.py``):

* :class:`Edge` events are things that *happened* (a torrent was added, a
  peer left). Each one matters, so they are delivered in publish order; a
  subscriber that falls too far behind gets one :class:`Lagged` marker instead
  of silently missing some, and must then re-read state from the engine.
* :class:`Level` events are periodic snapshots (~2-4 Hz) of how things *are*.
  Only the newest matters, so a subscriber's queue holds at most one per
  (type, :attr:`Level.key`); an unread snapshot is replaced, never queued.

All events are frozen, slotted and keyed by :class:`~core.types.InfoHash`
(hashable, and unlike the 20 wire bytes it keeps a hybrid torrent's v2 hash).
Fields hold only immutable values (tuples, enums, strings, numbers) so one
event object can be shared by every subscriber. Per-chunk activity never goes
on the bus: it would be thousands of events a second for no reader.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass

from .piecestate import PieceState, PieceStateRun
from .stats import TorrentState
from .types import InfoHash, PiecePriority

#: A peer's transport address: (host, port), host as text (IPv4 or IPv6).
Address = tuple[str, int]


class PeerSource(enum.StrEnum):
    """How we learned of a peer; shown in the peer table, useful in debugging."""

    TRACKER = "tracker"
    DHT = "dht"
    PEX = "pex"
    INCOMING = "incoming"
    MAGNET = "magnet"  # x.pe in a magnet link
    DIRECT = "direct"  # added by the user or a test


@dataclass(frozen=True, slots=True)
class Event:
    """Root of everything published on the bus."""


@dataclass(frozen=True, slots=True)
class Edge(Event):
    """Something happened: delivered in order, never coalesced."""


@dataclass(frozen=True, slots=True)
class Level(Event):
    """A snapshot of current state: only the newest per (type, key) is kept."""

    @property
    def key(self) -> Hashable:
        """Which snapshot slot this fills; newer events with the same key replace it."""
        return None


@dataclass(frozen=True, slots=True)
class Lagged(Event):
    """The subscriber fell behind: ``dropped`` edges were lost after the ones before this.

    Sent once per overflow, after the edges that did fit. Whoever receives it
    must re-read the state it mirrors (``client.torrents()``, ...), because
    the dropped edges will never arrive.
    """

    dropped: int


# --- edges --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TorrentAdded(Edge):
    info_hash: InfoHash
    name: str


@dataclass(frozen=True, slots=True)
class TorrentRemoved(Edge):
    info_hash: InfoHash


@dataclass(frozen=True, slots=True)
class TorrentStateChanged(Edge):
    """``error`` says why when ``new`` is :attr:`TorrentState.ERROR`."""

    info_hash: InfoHash
    old: TorrentState
    new: TorrentState
    error: str | None = None


@dataclass(frozen=True, slots=True)
class MetadataReceived(Edge):
    """The info dictionary is known (at once for a .torrent, later for a magnet)."""

    info_hash: InfoHash
    name: str
    total_length: int
    piece_count: int


@dataclass(frozen=True, slots=True)
class FilePriorityChanged(Edge):
    info_hash: InfoHash
    file_index: int
    priority: PiecePriority


@dataclass(frozen=True, slots=True)
class PieceStateChanged(Edge):
    """Pieces whose :class:`PieceState` changed, batched per engine tick.

    Batching keeps a fast download (hundreds of pieces a second) from
    flooding subscribers; each (index, state) is the piece's newest state.
    """

    info_hash: InfoHash
    changes: tuple[tuple[int, PieceState], ...]


@dataclass(frozen=True, slots=True)
class TrackerAnnounced(Edge):
    """A successful announce: ``peers`` addresses received, next in ``interval`` s."""

    info_hash: InfoHash
    url: str
    peers: int
    interval: float


@dataclass(frozen=True, slots=True)
class TrackerFailed(Edge):
    info_hash: InfoHash
    url: str
    error: str


@dataclass(frozen=True, slots=True)
class DhtBootstrapped(Edge):
    """A DHT bootstrap ended: ``nodes`` good nodes known, ``ok`` if any node answered.

    Published for the first attempt and again when a later retry succeeds
    (a failed bootstrap is retried with growing pauses), so a UI can show
    whether the DHT works without polling.
    """

    nodes: int
    ok: bool


@dataclass(frozen=True, slots=True)
class DhtPeersFound(Edge):
    """A torrent's DHT lookup got a reply with peers.

    ``peers`` is how many addresses in this reply the current lookup had not
    seen yet, ``total`` how many distinct ones it has found so far.
    """

    info_hash: InfoHash
    peers: int
    total: int


@dataclass(frozen=True, slots=True)
class PeerConnected(Edge):
    """A peer finished the handshake; ``client`` is its self-reported name, if any."""

    info_hash: InfoHash
    address: Address
    client: str
    source: PeerSource


@dataclass(frozen=True, slots=True)
class PeerDisconnected(Edge):
    info_hash: InfoHash
    address: Address
    reason: str


@dataclass(frozen=True, slots=True)
class PieceHashFailed(Edge):
    """Piece ``piece`` failed verification; ``peers`` contributed data to it."""

    info_hash: InfoHash
    piece: int
    peers: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class StorageFailed(Edge):
    info_hash: InfoHash
    error: str


# --- levels -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TorrentRow:
    """One torrent's line in the main table.

    ``progress`` is 0.0-1.0 of the *wanted* bytes; ``eta`` is seconds or None
    when unknown (no rate, or nothing left to fetch); rates are bytes/s;
    ``added_time`` is wall-clock seconds since the epoch.
    """

    info_hash: InfoHash
    name: str
    state: TorrentState
    progress: float
    size: int
    bytes_done: int
    down_rate: float
    up_rate: float
    peers: int
    seeds: int
    eta: float | None
    ratio: float
    added_time: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ClientSnapshot(Level):
    """Every torrent's row plus client-wide totals; one slot for the whole client."""

    torrents: tuple[TorrentRow, ...]
    down_rate: float
    up_rate: float
    bytes_downloaded: int
    bytes_uploaded: int
    peers: int
    #: Nodes in the DHT's routing tables (good and questionable, both families).
    dht_nodes: int
    #: Of those, the nodes that answered us recently (BEP 5 "good").
    dht_good_nodes: int = 0
    #: "off" (disabled or could not start), "bootstrapping", "ok" or "failed" (no node answered).
    dht_state: str = "off"


@dataclass(frozen=True, slots=True)
class PeerRow:
    """One connected peer, as the peer table shows it.

    The four choke/interest flags are from our side (``am_``) and theirs
    (``peer_``), as in BEP 3.
    """

    address: Address
    client: str
    source: PeerSource
    transport: str  # "tcp" or "utp"
    encrypted: bool
    progress: float
    down_rate: float
    up_rate: float
    am_choking: bool
    am_interested: bool
    peer_choking: bool
    peer_interested: bool
    requests_outstanding: int
    #: The peer connected to us (we did not dial it), whatever its source.
    incoming: bool = False
    #: We want blocks from it but it has sent none for a while (see core.engine.choker).
    snubbed: bool = False
    #: Failed pieces it sent data for, alone or with others, across reconnects.
    hash_failures: int = 0
    #: Suspected of sending bad data: it only gets whole pieces of its own (see core.engine.blame).
    on_parole: bool = False
    #: Its requests we have queued and not yet served (uploads to it).
    requests_queued: int = 0
    #: How long the oldest of those has waited, in seconds (None: nothing queued).
    oldest_request_wait: float | None = None


@dataclass(frozen=True, slots=True)
class PeerSnapshot(Level):
    """The peers of one torrent someone is watching; one slot per torrent."""

    info_hash: InfoHash
    peers: tuple[PeerRow, ...]

    @property
    def key(self) -> Hashable:
        return self.info_hash


@dataclass(frozen=True, slots=True)
class PieceSnapshot(Level):
    """The piece map of one torrent someone is watching, run-length encoded."""

    info_hash: InfoHash
    piece_count: int
    runs: tuple[PieceStateRun, ...]

    @property
    def key(self) -> Hashable:
        return self.info_hash


__all__ = [
    "Address",
    "ClientSnapshot",
    "DhtBootstrapped",
    "DhtPeersFound",
    "Edge",
    "Event",
    "FilePriorityChanged",
    "Lagged",
    "Level",
    "MetadataReceived",
    "PeerConnected",
    "PeerDisconnected",
    "PeerRow",
    "PeerSnapshot",
    "PeerSource",
    "PieceHashFailed",
    "PieceSnapshot",
    "PieceState",
    "PieceStateChanged",
    "PieceStateRun",
    "StorageFailed",
    "TorrentAdded",
    "TorrentRemoved",
    "TorrentRow",
    "TorrentState",
    "TorrentStateChanged",
    "TrackerAnnounced",
    "TrackerFailed",
]
