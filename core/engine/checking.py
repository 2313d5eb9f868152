"""What a torrent has on disk: the start-up check, full rechecks, forgetting a piece.

Kept out of ``torrent.py`` because checking is its own phase with its own
rules, and needs no state of its own: these are plain functions of the
torrent.  At start the completion store says which pieces were verified
before (``verify=True`` forgets that record); every other piece with data on
disk is hashed, a few at a time in worker threads.  ``verify_data`` rehashes
everything from scratch.

The picker has no "un-have": forgetting a piece (its data vanished, or a
recheck) builds a new picker from the have-set, the pieces' priorities and
the connected peers' bitfields.

The functions see the torrent through :class:`CheckHost` only (``Torrent``
satisfies it; so may a test double).  Calls go one way, checking to
torrent: a piece whose state changed is announced with
``host.piece_changed(p)``, a phase change with ``host.set_state``; checking
never imports ``torrent.py``.  Pieces being hashed are kept in
``host.hashing`` (read by ``Torrent.piece_state``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from bitarray import bitarray
from bitarray.util import zeros

from ..config import ClientConfig
from ..formats.info import Info
from ..formats.metainfo import Metainfo
from ..stats import TorrentState
from ..storage import CompletionStore, DataMissingError, Layout, Storage
from ..types import InfoHash, PiecePriority
from .picker import Picker

_T = TypeVar("_T")


class HasBitfield(Protocol):
    """A connected peer, as far as rebuilding the picker goes."""

    @property
    def has(self) -> bitarray | None: ...


class CheckHost(Protocol):
    """What checking may read of a torrent, and the operations it may ask for."""

    picker: Picker  # replaced by :func:`rebuild_picker`
    #: Pieces being hashed right now (checking adds and removes its own).
    hashing: set[int]

    @property
    def info(self) -> Info: ...
    @property
    def metainfo(self) -> Metainfo: ...
    @property
    def storage(self) -> Storage: ...
    @property
    def layout(self) -> Layout: ...
    @property
    def completion(self) -> CompletionStore | None: ...
    @property
    def info_hash(self) -> InfoHash: ...
    @property
    def num_pieces(self) -> int: ...
    @property
    def has_info(self) -> bool: ...
    @property
    def state(self) -> TorrentState: ...
    @property
    def closed(self) -> bool: ...
    @property
    def config(self) -> ClientConfig: ...
    @property
    def peers(self) -> Iterable[HasBitfield]: ...

    def piece_priority(self, p: int) -> PiecePriority: ...
    def piece_changed(self, p: int) -> None: ...
    def set_state(self, new: TorrentState, error: str | None = None) -> None: ...
    def active_state(self) -> TorrentState: ...
    def forget_unverified(self) -> None: ...
    def maybe_dial(self) -> None: ...
    def schedule(self, coro: Coroutine[Any, Any, object]) -> None: ...
    async def run_io(self, fn: Callable[..., _T], *args: Any) -> _T: ...


async def check_on_start(t: CheckHost, *, verify: bool) -> None:
    """Mark what the completion store knows, and hash the other pieces found on disk."""
    known = None
    if t.completion is not None and verify:
        # Forget the old record, but register the torrent: marks need it.
        empty = zeros(t.num_pieces, "big")
        await asyncio.to_thread(t.completion.save_all, t.info_hash, t.layout, empty)
    elif t.completion is not None:
        known = await asyncio.to_thread(t.completion.load, t.info_hash, t.layout)
    if known is not None:
        for p in known.search(1):
            t.picker.set_have(p)
    on_disk = await asyncio.to_thread(t.layout.pieces_with_data_on_disk)
    if known is not None:
        on_disk &= ~known
    to_check = list(on_disk.search(1))
    if to_check:
        await check_pieces(t, to_check)


async def verify_data(t: CheckHost) -> None:
    """Rehash every piece from disk, forgetting what was known."""
    if not t.has_info:
        return  # nothing on disk can be known yet
    was_paused = t.state is TorrentState.PAUSED
    t.set_state(TorrentState.CHECKING)
    t.forget_unverified()
    rebuild_picker(t, zeros(t.num_pieces, "big"))
    if t.completion is not None:
        empty = t.picker.have_bitfield()
        await asyncio.to_thread(t.completion.save_all, t.info_hash, t.layout, empty)
    for p in range(t.num_pieces):
        t.piece_changed(p)
    await check_pieces(t, range(t.num_pieces))
    if was_paused:  # a recheck of a paused torrent leaves it paused
        t.set_state(TorrentState.PAUSED)
        return
    t.set_state(t.active_state())
    t.maybe_dial()


async def check_pieces(t: CheckHost, pieces: Sequence[int]) -> None:
    """Hash pieces already on disk, a few at a time in worker threads."""
    sem = asyncio.Semaphore(max(1, t.config.piece_hashers_per_torrent))

    async def check(p: int) -> None:
        async with sem:
            if t.closed:
                return
            t.hashing.add(p)
            try:
                ok = await t.run_io(hash_on_disk, t, p)
            finally:
                t.hashing.discard(p)
            if ok:
                t.picker.set_have(p)
                if t.completion is not None:
                    await t.run_io(t.completion.mark, t.info_hash, p, True)
            t.piece_changed(p)

    await asyncio.gather(*(check(p) for p in pieces))


def forget_piece(t: CheckHost, p: int) -> None:
    # The picker has no "un-have"; rebuild it without this piece.
    have = t.picker.have_bitfield()
    have[p] = 0
    rebuild_picker(t, have)
    t.piece_changed(p)
    if t.completion is not None:
        # A SQLite write: never on the event loop.
        t.schedule(t.run_io(t.completion.mark, t.info_hash, p, False))


def rebuild_picker(t: CheckHost, have: bitarray) -> None:
    cfg = t.config
    info = t.info
    picker = Picker(
        info.num_pieces,
        info.piece_length,
        info.length,
        max_unverified_bytes=cfg.max_unverified_bytes,
        piece_sizes=None if info.pieces else info.piece_size,
    )
    picker.set_sequential(t.picker.sequential)
    for i in range(info.num_pieces):
        picker.set_priority(i, t.piece_priority(i))
    for p in have.search(1):
        picker.set_have(p)
    for peer in t.peers:
        if peer.has is not None:
            picker.peer_bitfield(peer.has)
    t.picker = picker


def hash_on_disk(t: CheckHost, p: int) -> bool:
    """Worker thread: does the piece on disk match its hash?"""
    try:
        if t.info.pieces:
            return t.storage.hash_piece(p, "sha1") == t.info.piece_hash_v1(p)
        return t.metainfo.verify_piece_v2(p, t.storage.read_piece(p))
    except DataMissingError:
        return False
