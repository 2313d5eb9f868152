"""``Torrent``: one torrent's pieces, peers, picker, choker and storage.

All state lives on the event loop (the engine's one lock).  This module
holds the torrent's public API, its lifecycle and state machine, piece
priorities and piece-state events, and trackers; each other concern is a
small object (or set of functions) of its own module that the torrent
owns, with a back-reference to it:

* :mod:`core.engine.swarm` (``_swarm``): dialing, accepting, handshakes, interest,
  requests and choking;
* :mod:`core.engine.piece_pipeline` (``_pipeline``): blocks into piece buffers,
  hash-and-write in worker threads, hash-failure blame, wanted-complete;
* :mod:`core.engine.upload` (``_upload``): serving requests from a piece read cache;
* :mod:`core.engine.checking`: the start-up check, ``verify_data``, forgetting a piece;
* :mod:`core.engine.streaming` (``_streaming``) and :mod:`core.engine.peer_extensions`
  (``_ext``): readers' windows and feeds; ut_metadata and ut_pex;
* :mod:`core.engine.dht_torrent` (``_dht``): get_peers + announce_peer rounds over
  the client's DHT (never for a private torrent); the BEP 10 ``yourip`` a peer
  reports goes to the DHT as a vote on our external address.

Piece state that can change across an ``await`` is kept in explicit flags
(``hashing``, picker's busy set) as anacrolix does.

Seams (issue 12): a converted collaborator does not know ``Torrent``.  It
declares a small ``Protocol`` of exactly what it reads and may ask for
(``StreamingHost``, ``ReaderHost``, ``FileHost``, ``CheckHost``,
``ExtensionsHost``/``ExtensionsSwarm``, ``PipelineHost``/``PipelineSwarm``,
``UploadHost``/``UploadPeer``, ``MagnetTorrent``/``MagnetPeer``),
which this class satisfies structurally (mypy checks it where each is
built), and it does not import this module.  The calls go one way: the
torrent calls its collaborators' hooks; they announce back through a few
named methods only: ``piece_changed`` (any piece state change),
``set_state``, ``storage_failed``, ``forget_piece``, ``reprioritise``,
``notify_state_waiters`` and ``schedule`` (a task the torrent owns).  Those
methods, and the read-only views next to them (``closed``, ``config``,
``streaming``, ``cached_piece``, ``unverified_buffer``, ...), are for
collaborators, not for the UI.
The peers and the swarm are converted alike: a ``Peer`` sees the torrent as a
``PeerHost`` and sends what arrives to the handles of ``peer_routes`` (the
swarm, the pipeline, the extensions and the uploader, as ``PeerRoutes``
names them), bound when it is made; the ``Swarm`` sees it as a
``SwarmHost`` and is given the pipeline and the extensions with ``bind``.
The uploader is given the client's and the torrent's upload buckets when it
is made.  Only the ``Client``, which makes torrents, holds the whole torrent;
it reads it through public methods (``half_open_count``, ``accept_incoming``,
``stats``, ...), and the magnet phase reaches the client as a
``MagnetClient`` (its by-wire registry: ``register_wire``, ``torrent_by_wire``).

Why this module is long (~800 lines): ``Torrent`` is the public face of one
torrent (anacrolix's API: files, pieces, readers, priorities, trackers,
limits, stats, state) plus the named methods its collaborators call through
their seams; the work itself lives in those collaborators.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

from bitarray import bitarray

from ..config import ClientConfig
from ..errors import StorageError, TorrentError
from ..events import PeerRow, PeerSource, PieceStateChanged, StorageFailed, TorrentStateChanged
from ..formats.info import Info
from ..formats.magnet import Magnet
from ..formats.metainfo import Metainfo
from ..net.dialer import PLAIN_TCP, Link
from ..net.peer_io import PeerProtocol
from ..piecestate import PieceState, PieceStateRun, piece_state_runs
from ..ratelimit import TokenBucket
from ..stats import TorrentState, TorrentStats
from ..storage import CompletionStore, Layout, Storage
from ..tracker import TrackerTransports
from ..tracker.announcer import Announcer
from ..tracker.driver import TrackerDriver
from ..tracker.types import AnnounceEvent, AnnounceRequest, TrackerStatus
from ..types import InfoHash, PiecePriority
from ..wire import ExtendedMessage, ExtensionHandshake, NotInterested
from . import checking
from .choker import Choker
from .dht_torrent import DhtLookups, TorrentDht
from .files import File, Piece
from .peer import Peer, PeerRoutes
from .peer_extensions import ExtensionsClient, PeerExtensions
from .peer_rows import peer_rows
from .picker import Picker
from .piece_pipeline import PiecePipeline, PipelineClient
from .reader import ReadaheadFunc, Reader
from .streaming import PieceStateSubscription, Streaming
from .swarm import Swarm, SwarmClient
from .upload import Uploader


class TorrentClient(SwarmClient, PipelineClient, ExtensionsClient, Protocol):
    """What a torrent uses of the client that made it (``Client`` satisfies it).

    The union of its collaborators' client seams (the swarm's, the
    pipeline's, the extensions') and its own needs: the global upload bucket,
    the tracker transports and key, the I/O pool, and being removed.  Typed
    as a Protocol so ``torrent.py`` never imports ``client.py``: the client
    creates torrents, a torrent only calls back through this.
    """

    @property
    def config(self) -> ClientConfig: ...
    @property
    def upload_bucket(self) -> TokenBucket: ...
    @property
    def trackers(self) -> TrackerTransports: ...
    @property
    def tracker_key(self) -> int: ...
    @property
    def io_executor(self) -> concurrent.futures.Executor: ...
    @property
    def dht(self) -> DhtLookups | None: ...

    async def remove_torrent(self, info_hash: InfoHash) -> None: ...


log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: How often the torrent's housekeeping runs (choking, interest, dialing).
TICK_SECONDS = 1.0
#: Piece state changes are batched onto the bus at most this often.
PIECE_EVENT_INTERVAL = 0.25
#: ``left`` announced while a magnet's size is unknown: "a lot", so trackers
#: treat us as a leecher and hand out seeds (0 would say we are a seed).
UNKNOWN_LEFT = 1 << 40

Address = tuple[str, int]


class _ExtensionHooks:
    """The extensions' hooks as peers call them, plus the BEP 10 ``yourip`` vote for the DHT.

    A peer's extension handshake says which address it sees us at; the DHT
    counts those as votes on our external IP (BEP 42 ids derive from it).
    Wrapping the hooks here keeps that one line out of the extensions,
    which know nothing of the DHT.
    """

    def __init__(self, ext: PeerExtensions, on_yourip: Callable[[str, str], None]) -> None:
        self._ext = ext
        self._on_yourip = on_yourip

    def on_handshake(self, peer: Peer, hs: ExtensionHandshake) -> None:
        if hs.yourip is not None:
            self._on_yourip(str(hs.yourip), peer.address[0])
        self._ext.on_handshake(peer, hs)

    def on_message(self, peer: Peer, msg: ExtendedMessage) -> None:
        self._ext.on_message(peer, msg)


class Torrent:
    """A torrent in a :class:`~core.engine.client.Client`.

    A torrent added from a magnet link starts without its info dict: it is
    in ``FETCHING_METADATA`` with no ``info``, ``metainfo``, ``storage`` or
    ``layout`` (``has_info`` is False, ``files`` is empty and the picker is
    an empty placeholder) until :mod:`core.engine.magnet_phase` completes it with
    ``init_info``; ``wait_info()`` waits for that.
    """

    metainfo: Metainfo
    info: Info
    storage: Storage
    layout: Layout

    def __init__(
        self,
        client: TorrentClient,
        metainfo: Metainfo | None,
        storage: Storage | None,
        layout: Layout | None,
        completion: CompletionStore | None,
        *,
        magnet: Magnet | None = None,
    ) -> None:
        self.client = client
        self.magnet = magnet
        self.has_info = False
        if metainfo is not None:
            self.info_hash: InfoHash = metainfo.info_hash
            announce_list = metainfo.announce_list
        else:
            if magnet is None:
                raise TypeError("a Torrent needs a metainfo or a magnet")
            self.info_hash = magnet.info_hash
            announce_list = tuple((url,) for url in magnet.trackers)
        self.completion = completion
        cfg = client.config
        self.picker = Picker(0, 1, 0)  # replaced by init_info
        self.choker = Choker(cfg.unchoke_slots, time.monotonic())
        # Per-torrent limits, applied on top of the client's global ones.
        self.download_bucket = TokenBucket(None, now=time.monotonic())
        self.upload_bucket = TokenBucket(None, now=time.monotonic())
        self._state = (
            TorrentState.CHECKING if metainfo is not None else TorrentState.FETCHING_METADATA
        )
        self.error: str | None = None
        self.added_at = time.time()
        self.peers: dict[Peer, None] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self.hashing: set[int] = set()  # pieces being hashed in a worker thread
        self._io_jobs: set[concurrent.futures.Future[Any]] = set()
        self._state_changed = asyncio.Event()
        self._own_piece_priority: dict[int, PiecePriority] = {}
        self._piece_changes: dict[int, None] = {}
        self._piece_flush: asyncio.TimerHandle | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._started = False
        self.files: list[File] = []
        self._files_by_index: dict[int, File] = {}
        # Announces to the torrent's trackers (BEP 12), started after checking.
        self._trackers = TrackerDriver(
            Announcer(announce_list, random.Random(), now=time.monotonic()),
            info_hash=self.info_hash,
            build_request=self._announce_request,
            on_peers=lambda peers: self.add_peers(peers, PeerSource.TRACKER),
            publish=client.bus.publish,
            transports=client.trackers,
        )
        # get_peers + announce_peer rounds over the client's DHT (core/engine/dht_torrent.py).
        self._dht = TorrentDht(
            info_hash=self.info_hash,
            service=lambda: client.dht,
            announce_port=self._dht_announce_port,
            on_peers=self._add_dht_peers,
            wants_peers=self._dht_wants_peers,
            publish=client.bus.publish,
        )
        # Readers' windows, waiters and piece-state feeds (core/streaming.py).
        self._streaming = Streaming(self)
        # Dialing, accepting, interest, requests and choking (core/swarm.py).
        self._swarm = Swarm(self)
        # ut_metadata and ut_pex (core/peer_extensions.py).
        self._ext = PeerExtensions(self, self._swarm)
        # Serving requests from a piece read cache (core/upload.py).
        self._upload = Uploader(self, (client.upload_bucket, self.upload_bucket))
        # Blocks into piece buffers, hash and write, blame (core/piece_pipeline.py).
        self._pipeline: PiecePipeline[Peer] = PiecePipeline(
            self, self._swarm, self._streaming, client
        )
        # What each peer sends what arrives to, bound when it is made (core/peer.py).
        self.peer_routes = PeerRoutes(
            self._swarm, self._pipeline, _ExtensionHooks(self._ext, self._yourip), self._upload
        )
        self._swarm.bind(self._pipeline, self._ext)
        if metainfo is not None:
            assert storage is not None and layout is not None
            self.init_info(metainfo, storage, layout)

    def init_info(self, metainfo: Metainfo, storage: Storage, layout: Layout) -> None:
        """Everything that needs the info dict (at once, or when a magnet's arrives)."""
        cfg = self.client.config
        self.metainfo = metainfo
        self.info = info = metainfo.info
        self.storage = storage
        self.layout = layout
        self.picker = Picker(
            info.num_pieces,
            info.piece_length,
            info.length,
            max_unverified_bytes=cfg.max_unverified_bytes,
            # Pure v2: the last piece of every file may be short.
            piece_sizes=None if info.pieces else info.piece_size,
        )
        self.files = [
            File(self, i, entry, "/".join((info.name, *entry.path)))
            for i, entry in enumerate(info.files)
            if not entry.is_padding
        ]
        self._files_by_index = {f.index: f for f in self.files}
        self.has_info = True
        if info.private:
            self._dht.disable()  # BEP 27: peers only from the torrent's trackers
        if cfg.sequential_download:
            self.picker.set_sequential(True)
        if cfg.first_last_pieces_first:
            self.set_first_last_pieces_first(True)

    # ------------------------------------------------------------------ public API

    @property
    def name(self) -> str:
        if self.has_info:
            return self.info.name
        assert self.magnet is not None
        return self.magnet.display_name or self.info_hash.hex()

    @property
    def num_pieces(self) -> int:
        return self.info.num_pieces if self.has_info else 0

    @property
    def state(self) -> TorrentState:
        return self._state

    @property
    def length(self) -> int:
        return self.info.total_size if self.has_info else 0

    @property
    def closed(self) -> bool:
        """Dropped or shut down (``close`` has begun)."""
        return self._closed

    @property
    def started(self) -> bool:
        """The start-up check is done: our have-set may go out to peers (the swarm reads it)."""
        return self._started

    @property
    def config(self) -> ClientConfig:
        """The client's settings (the collaborators' seams read them here)."""
        return self.client.config

    @property
    def streaming(self) -> Streaming:
        """Readers' windows and waiters: the seam :class:`~core.engine.reader.Reader` uses."""
        return self._streaming

    def piece(self, index: int) -> Piece:
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} out of range 0..{self.num_pieces - 1}")
        return Piece(self, index)

    def bytes_completed(self) -> int:
        """Payload bytes inside verified pieces (padding excluded)."""
        return sum(f.bytes_completed() for f in self.files)

    def bytes_missing(self) -> int:
        return self.length - self.bytes_completed()

    def have_bitfield(self) -> bitarray:
        return self.picker.have_bitfield()

    def download_all(self) -> None:
        for f in self.files:
            f.set_priority(PiecePriority.NORMAL)

    def download_pieces(self, begin: int, end: int) -> None:
        """Raise pieces ``[begin, end)`` to at least NORMAL (as anacrolix's DownloadPieces)."""
        for i in range(begin, end):
            own = self._own_piece_priority.get(i, PiecePriority.NONE)
            self.set_own_piece_priority(i, max(own, PiecePriority.NORMAL))

    def cancel_pieces(self, begin: int, end: int) -> None:
        for i in range(begin, end):
            self.set_own_piece_priority(i, PiecePriority.NONE)

    def new_reader(
        self, *, readahead: int | ReadaheadFunc | None = None, responsive: bool = False
    ) -> Reader:
        """A seekable async reader over the whole torrent; its reads drive downloading."""
        return Reader(self, 0, self.info.length, readahead=readahead, responsive=responsive)

    @property
    def sequential(self) -> bool:
        return self.picker.sequential

    def set_sequential(self, on: bool) -> None:
        """Fetch pieces of equal priority in index order instead of rarest first."""
        self.picker.set_sequential(on)

    def set_first_last_pieces_first(self, on: bool) -> None:
        """For every file, fetch its first and last pieces before the rest (media indexes)."""
        for f in self.files:
            f.set_first_last_pieces_first(on)

    def subscribe_piece_state_changes(self) -> PieceStateSubscription:
        """A lossless, coalescing feed of piece state changes (see :mod:`core.engine.streaming`)."""
        sub = PieceStateSubscription(self._streaming)
        self._streaming.subs.add(sub)
        return sub

    async def wait_info(self) -> None:
        """Wait until the info dict is known (at once unless added from a magnet).

        Raises if the torrent fails or is dropped first.
        """
        while not self.has_info:
            if self._state is TorrentState.ERROR:
                raise TorrentError(f"{self.name}: {self.error}")
            if self._closed:
                raise TorrentError(f"{self.name}: dropped")
            self._state_changed.clear()
            await self._state_changed.wait()

    async def wait_complete(self) -> None:
        """Wait until every wanted piece is verified; raises if the torrent fails or is dropped."""
        while True:
            if self._state is TorrentState.ERROR:
                raise TorrentError(f"{self.name}: {self.error}")
            if self._closed:
                raise TorrentError(f"{self.name}: dropped")
            if self._started and self.picker.is_complete():
                return
            self._state_changed.clear()
            await self._state_changed.wait()

    def peer_rows(self) -> tuple[PeerRow, ...]:
        """Each connected peer as a peer table shows it: flags, rates, requests both ways,
        failed pieces and parole, and how long its oldest queued request has waited."""
        return peer_rows(self)

    @property
    def half_open_count(self) -> int:
        """Outgoing connection attempts not yet handshaken (the client's global limit)."""
        return len(self._swarm.half_open)

    def stats(self) -> TorrentStats:
        s = TorrentStats()
        s.accumulate(self._swarm.closed_stats)
        active = 0
        seeds = 0
        for p in self.peers:
            p.sync_io_counters()
            s.accumulate(p.stats)
            active += 1
            seeds += p.is_seed
        s.total_peers = active + len(self._swarm.half_open) + len(self._swarm.peer_pool)
        s.active_peers = active
        s.pending_peers = len(self._swarm.peer_pool)
        s.half_open_peers = len(self._swarm.half_open)
        s.connected_seeders = seeds
        s.pieces_complete = self.picker.num_have
        s.bytes_discarded = self.picker.discarded_bytes
        for p in self.peers:
            s.peers_by_source[p.source] = s.peers_by_source.get(p.source, 0) + 1
            s.peers_on_parole += p.on_parole
            s.peers_with_hash_failures += p.hash_failures > 0
        return s

    def rates(self) -> tuple[float, float]:
        now = time.monotonic()
        down = sum(p.down_rate.rate(now) for p in self.peers)
        up = sum(p.up_rate.rate(now) for p in self.peers)
        return down, up

    def set_rate_limits(self, *, download: int | None, upload: int | None) -> None:
        """This torrent's own limits in bytes/s (None: unlimited), on top of the client's."""
        now = time.monotonic()
        self.download_bucket.set_rate(download, now)
        self.upload_bucket.set_rate(upload, now)

    @property
    def rate_limits(self) -> tuple[int | None, int | None]:
        down, up = self.download_bucket.rate, self.upload_bucket.rate
        return (None if down is None else int(down), None if up is None else int(up))

    def add_peers(
        self, addresses: Iterable[Address], source: PeerSource = PeerSource.DIRECT
    ) -> None:
        """Add peer addresses to dial (e.g. from a tracker, PEX, or ``--peer``)."""
        self._swarm.add(addresses, source)

    def pause(self) -> None:
        if self._state in (TorrentState.PAUSED, TorrentState.ERROR):
            return
        self.disconnect_all("torrent paused")
        self._trackers.stop()
        self._dht.stop()
        self.set_state(TorrentState.PAUSED)
        self.schedule(self.flush_storage())

    def resume(self) -> None:
        """Leave the paused or error state; an error state retries its failed I/O."""
        if self._state not in (TorrentState.PAUSED, TorrentState.ERROR):
            return
        self.error = None
        self.set_state(self.active_state())
        self._trackers.start(complete=self.is_seed())
        self._dht.start()
        self._swarm.maybe_dial()

    async def verify_data(self) -> None:
        """Rehash every piece from disk, forgetting what was known."""
        await checking.verify_data(self)

    async def drop(self) -> None:
        await self.client.remove_torrent(self.info_hash)

    def piece_state_runs(self) -> list[PieceStateRun]:
        return piece_state_runs(self.piece_state(i) for i in range(self.num_pieces))

    # ------------------------------------------------------------------ trackers

    def trackers(self) -> list[TrackerStatus]:
        """Every tracker's status (tier, last result, next announce, peers, scrape figures).

        A torrent that uses the DHT lists it last, as qBittorrent does: url
        ``"** [DHT] **"``, tier -1, with its last lookup's result and peers.
        """
        rows = self._trackers.statuses()
        if self._dht.enabled:
            rows.append(self._dht.status())
        return rows

    def add_tracker(self, url: str, tier: int | None = None) -> bool:
        """Add a tracker (None: in a new last tier); False if already there.

        Raises :class:`~core.errors.TrackerError` for a URL that is not
        http, https or udp.
        """
        return self._trackers.add_tracker(url, tier)

    def remove_tracker(self, url: str) -> bool:
        """Stop using a tracker (it is told ``stopped``); False if unknown."""
        return self._trackers.remove_tracker(url)

    def reannounce(self) -> None:
        """Announce to every tier now, or as soon as its ``min interval`` allows."""
        self._trackers.reannounce()

    # ------------------------------------------------------------------ DHT (dht_torrent.py)

    def dht_announce(self) -> None:
        """Look the torrent up in the DHT and announce it now (no-op if paused, private or off)."""
        self._dht.announce_now()

    @property
    def uses_dht(self) -> bool:
        """The client has a DHT and the torrent may use it (not private, BEP 27)."""
        return self._dht.enabled

    def dht_peer_announced(self, peer: Address) -> None:
        """Another node announced ``peer`` for this torrent to our DHT node: a peer to dial."""
        if self._dht.enabled and self._state not in (TorrentState.PAUSED, TorrentState.ERROR):
            self._add_dht_peers([peer])

    def _add_dht_peers(self, peers: Iterable[Address]) -> None:
        """Peers from the DHT join the pool, up to ``torrent_peers_high_water`` known addresses.

        As for PEX: what strangers tell us (a lookup's replies, announces
        to our node) may not grow the address book without bound.
        """
        known = self._swarm.known_peers
        room = self.config.torrent_peers_high_water - len(known)
        fresh = [p for p in peers if p not in known][: max(room, 0)]
        if fresh:
            self.add_peers(fresh, PeerSource.DHT)

    def _dht_announce_port(self) -> tuple[int | None, bool]:
        """The port our DHT announces (None: not listening), and whether it is implied.

        Implied (BEP 5 ``implied_port``) when the DHT's UDP socket has the
        TCP listen port, as the client arranges: the receiving node then
        records the source port it sees, which is right behind a NAT too.
        """
        client = self.client
        port = client.listen_port
        if not port or not client.config.accept_incoming:
            return None, False
        dht = client.dht
        return port, dht is not None and dht.port == port

    def _dht_wants_peers(self) -> bool:
        """Too few peers known to keep the swarm going: look again sooner than the interval."""
        if self._state not in (TorrentState.DOWNLOADING, TorrentState.FETCHING_METADATA):
            return False
        swarm = self._swarm
        known = len(self.peers) + len(swarm.half_open) + len(swarm.peer_pool)
        return known < self.config.torrent_peers_low_water

    def _yourip(self, ip: str, voter: str) -> None:
        dht = self.client.dht
        if dht is not None and not self.closed:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:  # pragma: no cover - the handshake decoder checked it
                return
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            dht.note_external_ip(str(addr), voter)

    def _drop_dht_peers(self) -> None:
        """A magnet turned out private (BEP 27): forget the DHT's peers, as PEX's are forgotten."""
        swarm = self._swarm
        for addr in [a for a, src in swarm.peer_pool.items() if src is PeerSource.DHT]:
            del swarm.peer_pool[addr]
        for addr in [a for a, src in swarm.known_peers.items() if src is PeerSource.DHT]:
            del swarm.known_peers[addr]
        for peer in [*self.peers, *swarm.half_open.values()]:
            if peer.source is PeerSource.DHT:
                peer.close("private torrent: peers only from its trackers")

    def _announce_request(self, event: AnnounceEvent) -> AnnounceRequest:
        s = self.stats()
        return AnnounceRequest(
            info_hash=self.info_hash.wire,
            peer_id=self.client.peer_id,
            port=self.client.listen_port,
            uploaded=s.bytes_written_data,
            downloaded=s.bytes_read_useful_data,
            left=self.bytes_missing() if self.has_info else UNKNOWN_LEFT,
            event=event,
            key=self.client.tracker_key,
        )

    def is_seed(self) -> bool:
        return self.has_info and self.picker.num_have == self.num_pieces

    # ------------------------------------------------------------------ lifecycle

    _closed = False

    async def start(self, *, verify: bool = False) -> None:
        """Find out what is on disk, then start downloading or seeding."""
        if self.has_info and self.metainfo.missing_piece_layers and not self.info.pieces:
            # Pure v2 without piece layers: no piece can be verified until
            # the layers are fetched with BEP 52 hash requests (not yet).
            n = len(self.metainfo.missing_piece_layers)
            self.error = (
                f"the .torrent lacks the piece layers of {n} file(s) "
                f"(e.g. {self.metainfo.missing_piece_layers[0]!r}); fetching them from "
                "peers (BEP 52 hash requests) is not supported yet"
            )
            self.set_state(TorrentState.ERROR, self.error)
            return
        self.set_state(TorrentState.CHECKING)
        await checking.check_on_start(self, verify=verify)
        self._started = True
        if self._closed:
            return
        self.set_state(self.active_state())
        self._trackers.start(complete=self.is_seed())
        self._dht.start()
        if self.picker.is_complete():
            await self._pipeline.wanted_complete()
        self._tick_task = asyncio.create_task(self._tick_loop(), name=f"tick {self.name}")

    async def run_io(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run blocking disk work (hashing, reads, writes, SQLite) in a worker thread.

        Unlike a bare ``asyncio.to_thread``, the job is remembered until the
        thread really finishes, so :meth:`close` can wait for it before it
        closes the storage under it (cancelling the awaiting task does not
        stop a thread that has started).
        """
        job = self.client.io_executor.submit(fn, *args)
        self._io_jobs.add(job)
        job.add_done_callback(self._io_jobs.discard)
        return await asyncio.wrap_future(job)

    async def _wait_io_idle(self, timeout: float = 30.0) -> None:
        jobs = list(self._io_jobs)
        if jobs:
            await asyncio.to_thread(concurrent.futures.wait, jobs, timeout)

    async def close(self) -> None:
        """Disconnect everyone and persist completion (used on drop and client shutdown)."""
        if self._closed:
            return
        self._closed = True
        self._state_changed.set()
        self._ext.close()
        self._streaming.close(f"{self.name}: torrent dropped")
        self.disconnect_all("torrent closed")
        # "stopped" announces run while the rest closes, bounded by their timeout.
        announcing = asyncio.ensure_future(self._trackers.aclose())
        await self._dht.aclose()
        for task in (*self._swarm.dial_tasks, *self._tasks):
            task.cancel()
        if self._tick_task is not None:
            self._tick_task.cancel()
        await asyncio.gather(*self._swarm.dial_tasks, *self._tasks, return_exceptions=True)
        self._flush_piece_events()
        if not self.has_info:
            await announcing
            return
        try:
            await self._wait_io_idle()
            await self.flush_storage()
            if self.completion is not None:
                await asyncio.to_thread(self.completion.detach, self.info_hash)
            await asyncio.to_thread(self.storage.close)
        finally:
            await announcing

    async def flush_storage(self) -> None:
        if not self.has_info:
            return
        try:
            await asyncio.to_thread(self.storage.flush)
            if self.completion is not None:
                await asyncio.to_thread(self.completion.flush)
        except StorageError as exc:
            log.warning("%s: flush failed: %s", self.name, exc)

    def active_state(self) -> TorrentState:
        if not self.has_info:
            return TorrentState.FETCHING_METADATA
        if self.picker.is_complete():
            return TorrentState.SEEDING
        return TorrentState.DOWNLOADING

    def set_state(self, new: TorrentState, error: str | None = None) -> None:
        old = self._state
        self._state = new
        # Told, not asked: the pipeline and the swarm read these flags on every received block.
        self._pipeline.accepting_blocks = new in (TorrentState.DOWNLOADING, TorrentState.SEEDING)
        self._swarm.downloading = new is TorrentState.DOWNLOADING
        self._state_changed.set()
        if new in (TorrentState.PAUSED, TorrentState.ERROR):
            self._streaming.fail_waiters(f"{self.name}: torrent {new.name.lower()}")
        if new is TorrentState.DOWNLOADING and old is not new:
            self._swarm.redial_known()
        if old != new or error:
            self.client.bus.publish(TorrentStateChanged(self.info_hash, old, new, error))

    def schedule(self, coro: Coroutine[Any, Any, object]) -> None:
        """Run ``coro`` as a task the torrent owns (cancelled and awaited on close)."""
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def notify_state_waiters(self) -> None:
        """Wake ``wait_info``/``wait_complete`` to look again (info or completion changed)."""
        self._state_changed.set()

    async def _tick_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(TICK_SECONDS)
            try:
                self._swarm.tick()
                self._upload.check_stalls(time.monotonic())
            except Exception:  # pragma: no cover - housekeeping must never die
                log.exception("%s: tick failed", self.name)

    # ------------------------------------------------------------------ priorities

    def file_pieces(self, f: File) -> range:
        return self.info.file_pieces(f.index)

    def piece_priority(self, p: int) -> PiecePriority:
        """The max of the piece's own priority, its files' and the readers' windows."""
        prio = self._own_piece_priority.get(p, PiecePriority.NONE)
        for fi in self.info.files_in_piece(p):
            f = self._files_by_index.get(fi)
            if f is not None:
                fp = f.priority_for_piece(p)
                if fp > prio:
                    prio = fp
        rp = self._streaming.windows.priority(p)
        return rp if rp > prio else prio

    def file_priority_changed(self, f: File) -> None:
        from ..events import FilePriorityChanged

        self.reprioritise(self.file_pieces(f))
        self.client.bus.publish(FilePriorityChanged(self.info_hash, f.index, f.priority))

    def set_own_piece_priority(self, p: int, prio: PiecePriority) -> None:
        if prio == PiecePriority.NONE:
            self._own_piece_priority.pop(p, None)
        else:
            self._own_piece_priority[p] = prio
        self.reprioritise(range(p, p + 1))

    def reprioritise(self, pieces: Iterable[int]) -> None:
        changed = False
        for p in pieces:
            prio = self.piece_priority(p)
            if self.picker.priority(p) != prio:
                self.picker.set_priority(p, prio)
                self.piece_changed(p)
                changed = True
        if not changed or not self._started:
            return
        if self.picker.is_complete():
            self.schedule(self._pipeline.wanted_complete())
        elif self._state is TorrentState.SEEDING and not self.picker.is_complete():
            self.set_state(TorrentState.DOWNLOADING)
        for peer in list(self.peers):
            self._swarm.update_interest(peer)
            self._swarm.fill_requests(peer, force=True)

    def own_piece_priority(self, p: int) -> PiecePriority:
        """Piece ``p``'s own priority (``Piece.priority``), without files' and readers'."""
        return self._own_piece_priority.get(p, PiecePriority.NONE)

    def file_bytes_completed(self, f: File) -> int:
        info = self.info
        done = 0
        fstart, fend = f.offset, f.offset + f.length
        for p in self.file_pieces(f):
            if self.picker.have(p):
                pstart = info.piece_offset(p)
                pend = pstart + info.piece_size(p)
                done += max(0, min(fend, pend) - max(fstart, pstart))
        return done

    # ------------------------------------------------------------------ piece state

    def piece_state(self, p: int) -> PieceState:
        """Piece ``p``'s state (priority, complete, checking, partial), as anacrolix's
        ``Torrent.PieceState``; ``piece_state_runs`` run-length encodes them all."""
        picker = self.picker
        have = picker.have(p)
        return PieceState(
            # As in anacrolix, a piece we have is wanted by nobody any more.
            priority=PiecePriority.NONE if have else picker.priority(p),
            complete=have,
            partial=not have and (p in self._pipeline.bufs),
            hashing=p in self.hashing,
            queued_for_hash=picker.is_hashing(p) and p not in self.hashing,
        )

    def piece_changed(self, p: int) -> None:
        """Piece ``p``'s state changed: wake readers and subscriptions, batch a bus event.

        The one call every collaborator makes to announce a piece change
        (buffer started, queued for hashing, hashed, verified, forgotten).
        """
        self._streaming.piece_changed(p)
        self._piece_changes[p] = None
        if self._piece_flush is None:
            loop = asyncio.get_running_loop()
            self._piece_flush = loop.call_later(PIECE_EVENT_INTERVAL, self._flush_piece_events)

    def _flush_piece_events(self) -> None:
        self._piece_flush = None
        if not self._piece_changes:
            return
        changes = tuple((p, self.piece_state(p)) for p in self._piece_changes)
        self._piece_changes.clear()
        self.client.bus.publish(PieceStateChanged(self.info_hash, changes))

    # ------------------------------------------------------------------ reader / checking seams

    def cached_piece(self, p: int) -> bytes | None:
        """Verified piece ``p`` from the upload read cache, if it is there."""
        return self._upload.read_cache.get(p)

    def unverified_buffer(self, p: int) -> bytearray | None:
        """The pipeline's buffer of unfinished piece ``p`` (responsive readers)."""
        return self._pipeline.bufs.get(p)

    def forget_unverified(self) -> None:
        """Before a full recheck: drop piece buffers, their senders and the read cache."""
        self._pipeline.clear()
        self._upload.clear_cache()

    def forget_piece(self, p: int) -> None:
        """Piece ``p``'s data vanished from disk: stop having it (the uploader asks)."""
        checking.forget_piece(self, p)

    def maybe_dial(self) -> None:
        """Dial queued peers if there is room (after a recheck, say)."""
        self._swarm.maybe_dial()

    def announce_completed(self) -> None:
        """Tell the trackers the download completed (``event=completed``)."""
        self._trackers.completed()

    # ------------------------------------------------------------------ peers (core/swarm.py)

    def attach(self, peer: Peer, proto: PeerProtocol) -> None:
        """The protocol for ``peer`` exists (outgoing: connected; incoming: accepted)."""
        self._swarm.attach(peer, proto)

    def accept_incoming(self, proto: PeerProtocol, link: Link = PLAIN_TCP) -> bool:
        """An incoming connection (over ``link``) asked for this torrent; False to refuse it."""
        return self._swarm.accept_incoming(proto, link)

    def send_owed_have_sets(self) -> None:
        """After a magnet's first check: the bitfield every peer connected meanwhile is owed."""
        swarm = self._swarm
        for peer in list(self.peers):
            proto = peer.proto
            if proto is None or proto.closed or peer.have_set_sent:
                continue
            proto.send_many(swarm.have_set(peer))
            swarm.update_interest(peer)
        swarm.rechoke_soon()

    def disconnect_all(self, reason: str) -> None:
        for peer in list(self.peers) + list(self._swarm.half_open.values()):
            peer.close(reason)
        self._pipeline.drop_partial_pieces()

    # ------------------------------------------------------------------ storage errors

    def fail(self, reason: str) -> None:
        """Disconnect everyone and go to ERROR with ``reason`` (a magnet's unusable metadata)."""
        self.error = reason
        self.disconnect_all(reason)
        self.set_state(TorrentState.ERROR, reason)

    def storage_failed(self, exc: StorageError) -> None:
        """A disk read or write failed: drop partial pieces, stop asking, go to ERROR."""
        if self._state is TorrentState.ERROR:
            return
        self.error = str(exc)
        self._pipeline.drop_partial_pieces()
        for peer in list(self.peers):
            self.picker.release_peer(peer)
            if peer.proto is not None and peer.proto.conn.am_interested:
                peer.proto.send(NotInterested())
        self.set_state(TorrentState.ERROR, self.error)
        self.client.bus.publish(StorageFailed(self.info_hash, self.error))

    # ------------------------------------------------------------------ extensions (magnet phase)

    def fetch_metadata(self, on_metadata: Callable[[bytes], Coroutine[Any, Any, None]]) -> None:
        """A magnet's torrent: announce, and fetch the info dict over ut_metadata.

        ``on_metadata`` is called (as a task) with the verified raw info dict.
        """
        self._ext.on_metadata = on_metadata
        self._trackers.start(complete=False)
        self._dht.start()
        self._ext.start()

    def advertise_info(self) -> None:
        """The info dict was just installed: serve it and re-handshake with every peer."""
        if self.info.private:
            self._drop_dht_peers()
        self._ext.info_known()
