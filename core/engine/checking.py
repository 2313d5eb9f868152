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
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bitarray import bitarray
from bitarray.util import zeros

from ..stats import TorrentState
from ..storage import DataMissingError
from .picker import Picker

if TYPE_CHECKING:
    from .torrent import Torrent


async def check_on_start(t: Torrent, *, verify: bool) -> None:
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


async def verify_data(t: Torrent) -> None:
    """Rehash every piece from disk, forgetting what was known."""
    if not t.has_info:
        return  # nothing on disk can be known yet
    was_paused = t.state is TorrentState.PAUSED
    t._set_state(TorrentState.CHECKING)
    t._pipeline.clear()
    t._upload.clear_cache()
    rebuild_picker(t, zeros(t.num_pieces, "big"))
    if t.completion is not None:
        empty = t.picker.have_bitfield()
        await asyncio.to_thread(t.completion.save_all, t.info_hash, t.layout, empty)
    for p in range(t.num_pieces):
        t._piece_changed(p)
    await check_pieces(t, range(t.num_pieces))
    if was_paused:  # a recheck of a paused torrent leaves it paused
        t._set_state(TorrentState.PAUSED)
        return
    t._set_state(t._active_state())
    t._swarm.maybe_dial()


async def check_pieces(t: Torrent, pieces: Sequence[int]) -> None:
    """Hash pieces already on disk, a few at a time in worker threads."""
    sem = asyncio.Semaphore(max(1, t.client.config.piece_hashers_per_torrent))

    async def check(p: int) -> None:
        async with sem:
            if t._closed:
                return
            t._hashing.add(p)
            try:
                ok = await t.run_io(hash_on_disk, t, p)
            finally:
                t._hashing.discard(p)
            if ok:
                t.picker.set_have(p)
                if t.completion is not None:
                    await t.run_io(t.completion.mark, t.info_hash, p, True)
            t._piece_changed(p)

    await asyncio.gather(*(check(p) for p in pieces))


def forget_piece(t: Torrent, p: int) -> None:
    # The picker has no "un-have"; rebuild it without this piece.
    have = t.picker.have_bitfield()
    have[p] = 0
    rebuild_picker(t, have)
    t._piece_changed(p)
    if t.completion is not None:
        # A SQLite write: never on the event loop.
        t._schedule(t.run_io(t.completion.mark, t.info_hash, p, False))


def rebuild_picker(t: Torrent, have: bitarray) -> None:
    cfg = t.client.config
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
        picker.set_priority(i, t._piece_priority(i))
    for p in have.search(1):
        picker.set_have(p)
    for peer in t.peers:
        if peer.has is not None:
            picker.peer_bitfield(peer.has)
    t.picker = picker


def hash_on_disk(t: Torrent, p: int) -> bool:
    """Worker thread: does the piece on disk match its hash?"""
    try:
        if t.info.pieces:
            return t.storage.hash_piece(p, "sha1") == t.info.piece_hash_v1(p)
        return t.metainfo.verify_piece_v2(p, t.storage.read_piece(p))
    except DataMissingError:
        return False
