"""Piece-state runs (anacrolix's compact form) and the piece-state change feeds.

Golden strings follow anacrolix/torrent's ``PieceStateRun.String``: the run
length, then a priority mark (none for NONE, ``.`` NORMAL, ``H`` HIGH, ``R``
READAHEAD, ``N`` NEXT, ``!`` NOW), then ``H`` hashing, ``Q`` queued for hash,
``M`` marking, ``P`` partial, ``C`` complete, ``?`` unknown; runs joined by
spaces.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.engine.client import Client
from core.events import Lagged, PieceStateChanged
from core.piecestate import (
    PieceState,
    expand_runs,
    piece_state_runs,
    piece_state_runs_string,
)
from core.types import PiecePriority
from tests.support.engine import loopback_config, make_torrent

KIB = 1 << 10
PL = 32 * KIB
FILES = {
    "t/a.bin": PL * 10 + 100,  # pieces 0..10
    "t/b.bin": PL * 20,  # pieces 10..30
    "t/c.bin": PL * 5 - 100,  # pieces 30..34
}

N = PiecePriority.NORMAL


def test_golden_compact_strings() -> None:
    states = (
        [PieceState(complete=True)] * 3
        + [PieceState(N, partial=True)]
        + [PieceState(N, hashing=True)]
        + [PieceState(N, queued_for_hash=True)] * 2
        + [PieceState(PiecePriority.NOW, partial=True)]
        + [PieceState(PiecePriority.NEXT)]
        + [PieceState(PiecePriority.READAHEAD)] * 4
        + [PieceState(PiecePriority.HIGH)]
        + [PieceState()] * 10
        + [PieceState(N, ok=False)]
        + [PieceState(N, marking=True, complete=True)]
    )
    runs = piece_state_runs(states)
    assert piece_state_runs_string(runs) == "3C 1.P 1.H 2.Q 1!P 1N 4R 1H 10 1.? 1.MC"
    assert list(expand_runs(runs)) == states
    assert [str(r) for r in runs][:2] == ["3C", "1.P"]
    assert PieceState(hashing=True).checking and PieceState(queued_for_hash=True).checking
    assert piece_state_runs([]) == []


@pytest.mark.timeout(20)
async def test_golden_runs_of_a_torrent_with_a_reader(tmp_path: Path) -> None:
    mi = make_torrent(tmp_path / "src", FILES, PL)
    async with Client(loopback_config(tmp_path, "c")) as client:
        t = await client.add_metainfo(mi)  # no peers: states stay put
        assert piece_state_runs_string(t.piece_state_runs()) == "35."
        t.files[1].set_priority(PiecePriority.NONE)
        assert piece_state_runs_string(t.piece_state_runs()) == "11. 19 5."
        r = t.new_reader(readahead=3 * PL)
        r.seek(2 * PL + 7)  # the window reaches 7 bytes into piece 5
        assert piece_state_runs_string(t.piece_state_runs()) == "2. 1! 1N 2R 5. 19 5."
        t.files[2].set_priority(PiecePriority.HIGH)
        t.piece(20).set_priority(PiecePriority.NEXT)
        assert piece_state_runs_string(t.piece_state_runs()) == "2. 1! 1N 2R 5. 9 1N 9 5H"
        r.close()
        assert piece_state_runs_string(t.piece_state_runs()) == "11. 9 1N 9 5H"


@pytest.mark.timeout(30)
async def test_subscription_reports_every_change(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PL)
    async with (
        Client(loopback_config(tmp_path, "seed")) as seeder,
        Client(loopback_config(tmp_path, "leech")) as leecher,
    ):
        await seeder.add_metainfo(mi, download_dir=src)
        t = await leecher.add_metainfo(mi)
        t.files[1].set_priority(PiecePriority.NONE)
        # A bus subscription that can hold a single edge: it lags and says so.
        tiny = leecher.bus.subscribe(max_edges=1, kinds=[PieceStateChanged])
        sub = t.subscribe_piece_state_changes()
        seen: dict[int, list[PieceState]] = {}

        async def watch() -> None:
            async for batch in sub:
                for p, state in batch:
                    seen.setdefault(p, []).append(state)

        watcher = asyncio.ensure_future(watch())
        t.add_peers([("127.0.0.1", seeder.listen_port)])
        async with asyncio.timeout(20):
            await t.wait_complete()
        await asyncio.sleep(0.3)  # the bus batches piece events every 0.25 s
        t.files[1].set_priority(PiecePriority.HIGH)  # and back to wanting b.bin
        async with asyncio.timeout(20):
            await t.wait_complete()
        await asyncio.sleep(0.3)
        sub.close()
        await watcher
        # Every piece was reported, and the last report is the piece's state now.
        assert set(seen) == set(range(t.num_pieces))
        for p, states in seen.items():
            assert states[-1] == t.piece(p).state()
            assert states[-1].complete
        # Pieces of b.bin were reported unwanted-and-missing, then wanted, then complete.
        assert any(s.priority == PiecePriority.HIGH and not s.complete for s in seen[20])
        # The bounded bus edge lagged; the torrent's own feed lost nothing.
        kinds = []
        while (ev := tiny.get_nowait()) is not None:
            kinds.append(type(ev))
        assert Lagged in kinds
        tiny.close()


async def test_subscription_coalesces_and_closes(tmp_path: Path) -> None:
    mi = make_torrent(tmp_path / "src", FILES, PL)
    async with Client(loopback_config(tmp_path, "c")) as client:
        t = await client.add_metainfo(mi)
        sub = t.subscribe_piece_state_changes()
        assert sub.take() == ()
        for _ in range(3):  # many changes to one piece: one entry, newest state
            t.piece(4).set_priority(PiecePriority.HIGH)
            t.piece(4).set_priority(PiecePriority.NONE)
        t.piece(5).set_priority(PiecePriority.NOW)
        async with asyncio.timeout(5):
            batch = await sub.get()
        assert dict(batch) == {4: t.piece(4).state(), 5: t.piece(5).state()}
        assert dict(batch)[5].priority == PiecePriority.NOW
        with sub:
            pass
        assert sub.closed
        assert [b async for b in sub] == []
        # Dropping the torrent ends every feed.
        sub2 = t.subscribe_piece_state_changes()
        await t.drop()
        assert sub2.closed
