"""Magnet links in the engine: a torrent that starts without its info dict.

Design, and why:

* The :class:`~core.engine.torrent.Torrent` exists from ``add_magnet`` on, in
  ``FETCHING_METADATA``, so the UI, the bus and ``wait_info()`` have one
  object to follow from start to finish, and the torrent's own peer
  machinery (dialling, incoming connections, bans, duplicate peer ids, peer
  events) works unchanged.  Until the info arrives it has no ``info``,
  ``files`` is empty and the picker is an empty placeholder; peers'
  bitfields and haves are kept by the wire connection (which accepts them
  before the piece count is known) instead of the picker.
* Peers come from the magnet's ``x.pe`` (source MAGNET), its ``tr``
  trackers (announced at once, with a large ``left`` since the size is
  unknown), PEX, incoming connections and ``peers=`` (DIRECT).
  :class:`~core.engine.peer_extensions.PeerExtensions` fetches the info dict over
  ``ut_metadata`` from every connected peer that offers it.
* When the verified info dict arrives (:func:`complete_metadata`), the
  torrent is completed in place and keeps its connections: storage and
  picker are built, ``so=`` (BEP 53) sets every unselected file to
  ``NONE``, each open connection learns the piece count and its earlier
  have-set is replayed into the picker, ``MetadataReceived`` is published,
  and the ordinary ``start()`` checks what is on disk.  Only then is our
  bitfield sent: a bitfield sent before the check would understate what we
  have, and the ones we would owe later cannot be expressed as haves
  without announcing every piece.  Reconnecting everyone would work too,
  but costs a round trip per peer and loses peers that do not take
  reconnects kindly.
* The torrent keeps the magnet's info-hash as its identity (the key it was
  added and announced under) even when the info dict turns out to be a
  hybrid whose other hash the magnet did not carry; its ``metainfo`` has
  both, and incoming connections may use either.
* A v2-only info dict is accepted only when no file spans more than one
  piece: the v2 piece layers are not part of the info dict, and fetching
  them (BEP 52 hash requests) is not implemented, so the torrent goes to
  the error state saying so instead of failing every piece.

Seams (issue 12): this module knows neither ``Client`` nor ``Torrent`` and
imports neither (so it is out of the engine's import circle).  It drives the
torrent, as a :class:`MagnetTorrent`, through public methods only:
``fetch_metadata`` (start the metadata phase with a callback), ``init_info``
and ``advertise_info`` (complete it), ``fail``, ``notify_state_waiters``,
``send_owed_have_sets`` and ``start``; its open connections it sees as
:class:`MagnetPeer`.  It reaches the client, as a :class:`MagnetClient`,
for its settings, its bus, and its torrents: by key, and by wire hash
through the client's public registry (``torrent_by_wire``,
``register_wire``).  The client makes the torrent (``new_torrent``, given
to :func:`add_magnet`).  The direction is one way: the client calls
:func:`add_magnet`; the torrent's extensions call back exactly once, with
the verified raw info dict, through the ``on_metadata`` callback given to
``fetch_metadata``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bitarray import bitarray

from ..bus import EventBus
from ..config import ClientConfig
from ..errors import BencodeError, MetainfoError, RemoteProtocolError, TrackerError
from ..events import MetadataReceived, PeerSource, TorrentAdded
from ..formats.info import Info, parse_info
from ..formats.magnet import Magnet, parse_magnet
from ..formats.metainfo import Metainfo
from ..net.peer_io import PeerProtocol
from ..stats import TorrentState
from ..storage import FileStorage, Layout, MemoryStorage, Storage
from ..types import InfoHash, PiecePriority
from .files import File
from .picker import Picker

log = logging.getLogger(__name__)

__all__ = [
    "MagnetClient",
    "MagnetPeer",
    "MagnetTorrent",
    "StorageFactory",
    "add_magnet",
    "complete_metadata",
]

#: Builds the storage of a magnet's torrent once its layout is known.
StorageFactory = Callable[[Layout], Storage]
Address = tuple[str, int]


class MagnetPeer(Protocol):
    """An open connection of a magnet's torrent (``Peer`` satisfies it)."""

    #: Its have-set, replayed into the picker once the piece count is known.
    has: bitarray | None
    is_seed: bool

    @property
    def proto(self) -> PeerProtocol | None: ...
    def close(self, reason: str) -> None: ...


class MagnetTorrent(Protocol):
    """What the magnet phase reads of a torrent and may ask of it (``Torrent`` satisfies it)."""

    @property
    def name(self) -> str: ...
    @property
    def info_hash(self) -> InfoHash: ...
    @property
    def magnet(self) -> Magnet | None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def has_info(self) -> bool: ...
    @property
    def config(self) -> ClientConfig: ...
    @property
    def state(self) -> TorrentState: ...
    @property
    def info(self) -> Info: ...
    @property
    def picker(self) -> Picker: ...
    @property
    def files(self) -> Sequence[File]: ...
    @property
    def peers(self) -> Iterable[MagnetPeer]: ...

    def add_tracker(self, url: str, tier: int | None = None) -> bool: ...
    def add_peers(self, addresses: Iterable[Address], source: PeerSource = ...) -> None: ...
    def fetch_metadata(self, on_metadata: Callable[[bytes], Coroutine[Any, Any, None]]) -> None: ...
    def init_info(self, metainfo: Metainfo, storage: Storage, layout: Layout) -> None: ...
    def advertise_info(self) -> None: ...
    def notify_state_waiters(self) -> None: ...
    async def start(self) -> None: ...
    def send_owed_have_sets(self) -> None: ...
    def fail(self, reason: str) -> None: ...
    def pause(self) -> None: ...


_Tor = TypeVar("_Tor", bound=MagnetTorrent)


class MagnetClient(Protocol[_Tor]):
    """The client, as far as adding a magnet's torrent goes (``Client`` satisfies it)."""

    @property
    def config(self) -> ClientConfig: ...
    @property
    def bus(self) -> EventBus: ...
    @property
    def torrents(self) -> dict[InfoHash, _Tor]: ...

    def torrent_by_wire(self, wire_hash: bytes) -> _Tor | None: ...
    def register_wire(self, info_hash: InfoHash, torrent: _Tor) -> None: ...


def find_torrent(client: MagnetClient[_Tor], info_hash: InfoHash) -> _Tor | None:
    """The torrent already added under either of ``info_hash``'s hashes, if any."""
    found = client.torrents.get(info_hash)
    if found is not None:
        return found
    keys = [k for k in (info_hash.v1, info_hash.v2[:20] if info_hash.v2 else None) if k]
    for key in keys:
        found = client.torrent_by_wire(key)
        if found is not None:
            return found
    return None


async def add_magnet(
    client: MagnetClient[_Tor],
    uri: str | Magnet,
    *,
    new_torrent: Callable[[Magnet], _Tor],
    download_dir: str | Path | None = None,
    storage: StorageFactory | None = None,
    peers: Sequence[Address] = (),
) -> _Tor:
    """``Client.add_magnet``: see there.  ``new_torrent`` makes the magnet's torrent."""
    magnet = uri if isinstance(uri, Magnet) else parse_magnet(uri)
    existing = find_torrent(client, magnet.info_hash)
    if existing is not None:
        for url in magnet.trackers:
            try:
                existing.add_tracker(url)
            except TrackerError as exc:
                log.info("%s: magnet tracker %s ignored: %s", existing.name, url, exc)
        existing.add_peers(magnet.peer_addresses, PeerSource.MAGNET)
        existing.add_peers(peers, PeerSource.DIRECT)
        return existing
    root = Path(download_dir) if download_dir is not None else client.config.download_dir
    torrent = new_torrent(magnet)

    async def on_metadata(raw: bytes) -> None:
        await complete_metadata(client, torrent, raw, root=root, storage=storage)

    client.torrents[magnet.info_hash] = torrent
    client.register_wire(magnet.info_hash, torrent)
    client.bus.publish(TorrentAdded(magnet.info_hash, torrent.name))
    torrent.fetch_metadata(on_metadata)
    torrent.add_peers(magnet.peer_addresses, PeerSource.MAGNET)
    torrent.add_peers(peers, PeerSource.DIRECT)
    return torrent


def _fail(torrent: MagnetTorrent, reason: str) -> None:
    log.warning("%s: %s", torrent.name, reason)
    torrent.fail(reason)


def _check_usable(torrent: MagnetTorrent, raw: bytes) -> Metainfo | str:
    """The torrent's Metainfo from a verified raw info dict, or why it cannot be used."""
    try:
        info, computed = parse_info(raw)
    except (MetainfoError, BencodeError) as exc:
        return f"the metadata matches the info-hash but is not a valid info dict: {exc}"
    expected = torrent.info_hash
    if (expected.v1 is not None and computed.v1 != expected.v1) or (
        expected.v2 is not None and computed.v2 != expected.v2
    ):
        return "the metadata is not of the kind (v1/v2) its info-hash names"
    if not info.pieces and any(
        f.length > info.piece_length for f in info.files if not f.is_padding
    ):
        return (
            "a v2-only torrent from a magnet needs its piece layers (BEP 52 hash "
            "requests), which are not supported; add the .torrent file instead"
        )
    magnet = torrent.magnet
    assert magnet is not None
    return Metainfo(
        info=info,
        info_hash=computed,
        raw_info=bytes(raw),
        announce_list=tuple((url,) for url in magnet.trackers),
        url_list=magnet.web_seeds,
    )


async def complete_metadata(
    client: MagnetClient[_Tor],
    torrent: _Tor,
    raw: bytes,
    *,
    root: Path,
    storage: StorageFactory | None = None,
) -> None:
    """The verified info dict of a magnet's torrent arrived: complete the torrent in place."""
    t = torrent
    if t.closed or t.has_info:
        return
    mi = _check_usable(t, raw)
    if isinstance(mi, str):
        _fail(t, mi)
        return
    try:
        layout = Layout.from_info(mi.info, root)
    except MetainfoError as exc:
        _fail(t, f"cannot lay out the torrent's files: {exc}")
        return
    cfg = t.config
    if storage is not None:
        store = storage(layout)
    elif cfg.default_storage == "memory":
        store = MemoryStorage(layout)
    else:
        store = FileStorage(layout)
    paused = t.state is TorrentState.PAUSED
    t.init_info(mi, store, layout)
    client.register_wire(mi.info_hash, t)
    assert t.magnet is not None
    selected = t.magnet.selected_files(len(mi.info.files))
    if selected is not None:
        for f in t.files:
            if f.index not in selected:
                f.set_priority(PiecePriority.NONE)
    t.advertise_info()
    adopt_peers(t)
    client.bus.publish(
        MetadataReceived(t.info_hash, mi.info.name, mi.info.total_size, mi.info.num_pieces)
    )
    t.notify_state_waiters()
    await t.start()
    if _closed(t):  # dropped while checking
        return
    t.send_owed_have_sets()
    if paused:
        t.pause()


def _closed(torrent: MagnetTorrent) -> bool:
    return torrent.closed


def adopt_peers(torrent: MagnetTorrent) -> None:
    """Give every open connection the piece count and replay its have-set into the picker."""
    t = torrent
    for peer in list(t.peers):
        proto = peer.proto
        if proto is None or proto.closed:
            continue
        try:
            proto.conn.set_lengths(t.info)
        except RemoteProtocolError as exc:
            peer.close(str(exc))
            continue
        has = proto.conn.remote_have
        if has is None:  # pragma: no cover - open connections always have one now
            continue
        peer.has = has.copy()
        t.picker.peer_bitfield(peer.has)
        peer.is_seed = bool(peer.has.all())
