"""Sequential mode and first/last-pieces-first: in the picker and end to end.

End to end, completion order can differ from request order only by what is
in flight at once (the request pipeline, plus pieces being hashed), so the
tests measure the peak number of pieces in flight and allow exactly that
much disorder; a rarest/random order would blow through it.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from bitarray.util import ones

from core.engine.client import Client
from core.engine.picker import CHUNK_SIZE, Picker
from core.engine.torrent import Torrent
from core.types import PiecePriority
from tests.support.engine import loopback_config, make_torrent

KIB = 1 << 10


def one_chunk_picker(n: int, seed: int = 0) -> Picker:
    return Picker(n, CHUNK_SIZE, n * CHUNK_SIZE, rng=random.Random(seed))


def is_sequential(picker: Picker) -> bool:
    return picker.sequential


def test_sequential_picks_in_index_order_within_priority() -> None:
    n = 200
    picker = one_chunk_picker(n)
    for _ in range(3):
        picker.peer_have_all()
    for p in range(0, n, 3):
        picker.peer_has(p)  # rarity must not matter any more
    picker.set_sequential(True)
    assert picker.sequential
    picker.set_priority(150, PiecePriority.HIGH)
    picker.set_priority(7, PiecePriority.NONE)
    everything = ones(n)
    got = [r.piece for r in picker.pick("a", everything, 6)]
    assert got == [150, 0, 1, 2, 3, 4]
    got = [r.piece for r in picker.pick("b", everything, 4)]
    assert got == [5, 6, 8, 9]
    # A sparse peer: its own pieces, in order.
    sparse = ones(n)
    sparse[:100] = 0
    assert [r.piece for r in picker.pick("c", sparse, 3)] == [100, 101, 102]
    # Pieces that complete and verify leave the order; it stays index order.
    for r in picker.outstanding("a"):
        picker.on_block_received("a", r.piece, r.begin, r.length)
        picker.on_piece_hashed(r.piece, True)
    assert [r.piece for r in picker.pick("a", everything, 2)] == [10, 11]
    # Allowed-fast picks while choked follow the same order.
    got = [
        r.piece
        for r in picker.pick("d", everything, 3, peer_choked_us=True, allowed_fast=[90, 30, 60])
    ]
    assert got == [30, 60, 90]
    # Switching back restores rarest-first: the rare pieces (not multiples of 3) lead.
    picker.set_sequential(False)
    assert not is_sequential(picker)
    got = [r.piece for r in picker.pick("e", everything, 20)]
    assert all(p % 3 for p in got)


def test_sequential_mode_survives_bulk_changes() -> None:
    n = 64
    picker = one_chunk_picker(n, seed=3)
    picker.peer_have_all()
    picker.set_sequential(True)
    picker.set_priorities(range(n), PiecePriority.NONE)  # bulk: buckets rebuilt lazily
    picker.set_priorities(range(40, 50), PiecePriority.NORMAL)
    got = [r.piece for r in picker.pick("a", ones(n), 100)]
    assert got == list(range(40, 50))


# -- end to end -------------------------------------------------------------------

PL = 16 * KIB
#: Seeder's advertised request queue (our pipeline's cap) + hashers + margin.
REQQ = 16
WINDOW = REQQ + 2 + 2


async def run_download(
    tmp: Path, files: dict[str, int], setup: Any, **config: Any
) -> tuple[Torrent, list[int], int]:
    """Download ``files`` from a slow seeder; returns completion order and peak in flight."""
    async with AsyncExitStack() as stack:
        src = tmp / "src"
        mi = make_torrent(src, files, PL)
        seeder = await stack.enter_async_context(
            # A small advertised queue keeps our pipeline (the in-flight window) short.
            Client(loopback_config(tmp, "seed", request_queue_len=REQQ))
        )
        leecher = await stack.enter_async_context(Client(loopback_config(tmp, "leech", **config)))
        await seeder.add_metainfo(mi, download_dir=src)
        t = await leecher.add_metainfo(mi)
        setup(t)
        order: list[int] = []
        peak = 0
        sub = t.subscribe_piece_state_changes()

        async def watch() -> None:
            nonlocal peak
            async for batch in sub:
                for p, state in batch:
                    if state.complete and p not in order:
                        order.append(p)
                busy = {r.piece for peer in t.peers for r in t.picker.outstanding(peer)}
                peak = max(peak, len(busy))
                assert len(busy) <= REQQ

        watcher = asyncio.ensure_future(watch())
        t.add_peers([("127.0.0.1", seeder.listen_port)])
        async with asyncio.timeout(30):
            await t.wait_complete()
        await asyncio.sleep(0)
        sub.close()
        await watcher
        return t, order, peak


@pytest.mark.timeout(60)
async def test_sequential_download_completes_in_order(tmp_path: Path) -> None:
    files = {"s/one.bin": 40 * PL + 5, "s/two.bin": 60 * PL - 5}
    t, order, peak = await run_download(tmp_path, files, lambda t: None, sequential_download=True)
    assert t.sequential
    assert sorted(order) == list(range(t.num_pieces))
    assert peak >= 1
    slack = WINDOW
    assert slack < t.num_pieces // 3
    for k, p in enumerate(order):
        # The k-th piece to complete lies within the in-flight window of position k.
        assert p < k + slack, (k, p, order)


@pytest.mark.timeout(60)
async def test_first_and_last_pieces_come_before_the_middle(tmp_path: Path) -> None:
    files = {"m/a.mkv": 40 * PL, "m/b.mkv": 45 * PL}

    def setup(t: Torrent) -> None:
        assert all(f.first_last_pieces_first for f in t.files)

    t, order, _ = await run_download(tmp_path, files, setup, first_last_pieces_first=True)
    ends = set()
    for f in t.files:
        pieces = range(f.begin_piece, f.end_piece)
        ends |= {pieces[0], pieces[-1]}
    assert len(ends) == 4
    position = {p: k for k, p in enumerate(order)}
    slack = WINDOW
    # Every end piece completes before more than the in-flight window of middle pieces.
    middle_before = [sum(1 for q in order[: position[e]] if q not in ends) for e in sorted(ends)]
    assert max(middle_before) <= slack, (middle_before, order[:20])


@pytest.mark.timeout(20)
async def test_first_last_api_raises_file_ends(tmp_path: Path) -> None:
    mi = make_torrent(tmp_path / "src", {"m/a.bin": 10 * PL + 1, "m/b.bin": 10 * PL}, PL)
    async with Client(loopback_config(tmp_path, "c")) as client:
        t = await client.add_metainfo(mi)
        prio = t.picker.priority
        a, b = t.files
        assert not a.first_last_pieces_first
        a.set_first_last_pieces_first(True)
        assert [prio(p) for p in (0, 1, 9, 10)] == [
            PiecePriority.HIGH,
            PiecePriority.NORMAL,
            PiecePriority.NORMAL,
            PiecePriority.HIGH,  # a's last piece (shared with b)
        ]
        b.set_priority(PiecePriority.NONE)
        b.set_first_last_pieces_first(True)
        assert prio(20) == PiecePriority.NONE  # an unwanted file stays unwanted
        t.set_first_last_pieces_first(False)
        assert prio(0) == PiecePriority.NORMAL and prio(10) == PiecePriority.NORMAL
        t.set_sequential(True)
        assert t.sequential and t.picker.sequential
