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

Seams: this module sits above ``Torrent`` (it creates one) and drives it
through public methods only: ``fetch_metadata`` (start the metadata phase
with a callback), ``init_info`` and ``advertise_info`` (complete it),
``fail``, ``notify_state_waiters``, ``send_owed_have_sets`` and ``start``.
The direction is one way: the torrent's extensions call back exactly once,
with the verified raw info dict, through the ``on_metadata`` callback given
to ``fetch_metadata``.  The client's by-wire-hash index is still reached
into (two lines, until ``Client`` offers registering and finding a hash).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BencodeError, MetainfoError, RemoteProtocolError, TrackerError
from ..events import MetadataReceived, PeerSource, TorrentAdded
from ..formats.info import parse_info
from ..formats.magnet import Magnet, parse_magnet
from ..formats.metainfo import Metainfo
from ..stats import TorrentState
from ..storage import FileStorage, Layout, MemoryStorage, Storage
from ..types import InfoHash, PiecePriority
from .torrent import Torrent

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger(__name__)

__all__ = ["StorageFactory", "add_magnet", "complete_metadata"]

#: Builds the storage of a magnet's torrent once its layout is known.
StorageFactory = Callable[[Layout], Storage]
Address = tuple[str, int]


def _by_wire(client: Client) -> dict[bytes, Torrent]:
    # client.py is not converted yet (its owner adds a public registry next).
    return client._torrents_by_wire  # noqa: SLF001 - Client has no public by-wire index yet


def find_torrent(client: Client, info_hash: InfoHash) -> Torrent | None:
    """The torrent already added under either of ``info_hash``'s hashes, if any."""
    found = client.torrents.get(info_hash)
    if found is not None:
        return found
    keys = [k for k in (info_hash.v1, info_hash.v2[:20] if info_hash.v2 else None) if k]
    by_wire = _by_wire(client)
    for key in keys:
        found = by_wire.get(key)
        if found is not None:
            return found
    return None


def _register(client: Client, torrent: Torrent, info_hash: InfoHash) -> None:
    by_wire = _by_wire(client)
    by_wire.setdefault(info_hash.wire, torrent)
    if info_hash.v1 is not None and info_hash.v2 is not None:
        by_wire.setdefault(info_hash.v2[:20], torrent)


async def add_magnet(
    client: Client,
    uri: str | Magnet,
    *,
    download_dir: str | Path | None = None,
    storage: StorageFactory | None = None,
    peers: Sequence[Address] = (),
) -> Torrent:
    """``Client.add_magnet``: see there."""
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
    torrent = Torrent(client, None, None, None, client.completion, magnet=magnet)

    async def on_metadata(raw: bytes) -> None:
        await complete_metadata(torrent, raw, root=root, storage=storage)

    client.torrents[magnet.info_hash] = torrent
    _register(client, torrent, magnet.info_hash)
    client.bus.publish(TorrentAdded(magnet.info_hash, torrent.name))
    torrent.fetch_metadata(on_metadata)
    torrent.add_peers(magnet.peer_addresses, PeerSource.MAGNET)
    torrent.add_peers(peers, PeerSource.DIRECT)
    return torrent


def _fail(torrent: Torrent, reason: str) -> None:
    log.warning("%s: %s", torrent.name, reason)
    torrent.fail(reason)


def _check_usable(torrent: Torrent, raw: bytes) -> Metainfo | str:
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
    torrent: Torrent, raw: bytes, *, root: Path, storage: StorageFactory | None = None
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
    _register(t.client, t, mi.info_hash)
    assert t.magnet is not None
    selected = t.magnet.selected_files(len(mi.info.files))
    if selected is not None:
        for f in t.files:
            if f.index not in selected:
                f.set_priority(PiecePriority.NONE)
    t.advertise_info()
    adopt_peers(t)
    t.client.bus.publish(
        MetadataReceived(t.info_hash, mi.info.name, mi.info.total_size, mi.info.num_pieces)
    )
    t.notify_state_waiters()
    await t.start()
    if _closed(t):  # dropped while checking
        return
    t.send_owed_have_sets()
    if paused:
        t.pause()


def _closed(torrent: Torrent) -> bool:
    return torrent.closed


def adopt_peers(torrent: Torrent) -> None:
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
