"""Engine public API on loopback: priorities, verify, pause/resume, state runs, bus events."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from core.engine.client import Client
from core.events import (
    PeerConnected,
    PieceStateChanged,
    TorrentAdded,
    TorrentStateChanged,
)
from core.piecestate import piece_state_runs_string
from core.stats import TorrentState
from core.types import PiecePriority
from tests.support.engine import loopback_config, make_torrent

PL = 32768
FILES = {
    "t/a.bin": PL * 10 + 100,  # pieces 0..10 (piece 10 shared with b)
    "t/b.bin": PL * 20,  # pieces 10..30
    "t/c.bin": PL * 5 - 100,  # pieces 30..35
}


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, object]:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PL)
    return src, mi


@pytest.mark.timeout(60)
async def test_none_priority_file_is_not_downloaded(
    tmp_path: Path, source: tuple[Path, object]
) -> None:
    src, mi = source
    async with (
        Client(loopback_config(tmp_path, "seed")) as seeder,
        Client(loopback_config(tmp_path, "leech")) as leecher,
    ):
        await seeder.add_metainfo(mi, download_dir=src)  # type: ignore[arg-type]
        t = await leecher.add_metainfo(mi)  # type: ignore[arg-type]
        b = next(f for f in t.files if f.path.endswith("b.bin"))
        b.set_priority(PiecePriority.NONE)
        t.add_peers([("127.0.0.1", seeder.listen_port)])
        async with asyncio.timeout(30):
            await t.wait_complete()
        have = t.have_bitfield()
        # Pieces 11..29 lie only in b.bin: never fetched. 10 and 30 are shared.
        assert not have[11:30].any()
        assert have[0:11].all() and have[30:].all()
        # b.bin shares piece 10 with a.bin and piece 30 with c.bin.
        assert b.bytes_completed() == (PL - 100) + 100
        for name in ("a.bin", "c.bin"):
            got = (leecher.config.download_dir / "t" / name).read_bytes()
            assert got == (src / "t" / name).read_bytes()
        assert t.state is TorrentState.SEEDING
        # Raising the file's priority later fetches the rest.
        b.set_priority(PiecePriority.NORMAL)
        assert t.state is TorrentState.DOWNLOADING
        async with asyncio.timeout(30):
            await t.wait_complete()
        got = (leecher.config.download_dir / "t" / "b.bin").read_bytes()
        assert got == (src / "t" / "b.bin").read_bytes()


@pytest.mark.timeout(60)
async def test_verify_data_finds_corruption_and_redownloads(
    tmp_path: Path, source: tuple[Path, object]
) -> None:
    src, mi = source
    async with (
        Client(loopback_config(tmp_path, "seed")) as seeder,
        Client(loopback_config(tmp_path, "leech")) as leecher,
    ):
        await seeder.add_metainfo(mi, download_dir=src)  # type: ignore[arg-type]
        t = await leecher.add_metainfo(mi)  # type: ignore[arg-type]
        t.add_peers([("127.0.0.1", seeder.listen_port)])
        async with asyncio.timeout(30):
            await t.wait_complete()
        await asyncio.sleep(0.1)
        path = leecher.config.download_dir / "t" / "b.bin"
        data = bytearray(path.read_bytes())
        data[PL * 3 + 5] ^= 0xFF  # corrupt one byte of piece 13
        path.write_bytes(data)
        await t.verify_data()
        assert not t.piece(13).complete
        assert t.piece(12).complete and t.piece(14).complete
        async with asyncio.timeout(30):
            await t.wait_complete()
        assert path.read_bytes() == (src / "t" / "b.bin").read_bytes()


@pytest.mark.timeout(60)
async def test_pause_resume_and_events(tmp_path: Path, source: tuple[Path, object]) -> None:
    src, mi = source
    async with (
        Client(loopback_config(tmp_path, "seed", upload_rate_limit=400_000)) as seeder,
        Client(loopback_config(tmp_path, "leech")) as leecher,
    ):
        sub = leecher.bus.subscribe()
        await seeder.add_metainfo(mi, download_dir=src)  # type: ignore[arg-type]
        t = await leecher.add_metainfo(mi)  # type: ignore[arg-type]
        t.add_peers([("127.0.0.1", seeder.listen_port)])
        async with asyncio.timeout(20):
            while t.picker.num_have < 3:
                await asyncio.sleep(0.05)
        t.pause()
        assert t.state is TorrentState.PAUSED
        await asyncio.sleep(0.2)
        assert not t.peers
        done = t.picker.num_have
        await asyncio.sleep(0.5)
        assert t.picker.num_have == done
        t.resume()
        t.add_peers([("127.0.0.1", seeder.listen_port)])
        async with asyncio.timeout(30):
            await t.wait_complete()
        await asyncio.sleep(0.4)  # let batched piece events flush
        seen: list[object] = []
        while (ev := sub.get_nowait()) is not None:
            seen.append(ev)
        kinds = {type(e) for e in seen}
        assert {TorrentAdded, TorrentStateChanged, PeerConnected, PieceStateChanged} <= kinds
        states = [e.new for e in seen if isinstance(e, TorrentStateChanged)]
        assert TorrentState.PAUSED in states and states[-1] is TorrentState.SEEDING
        changed = {p for e in seen if isinstance(e, PieceStateChanged) for p, _ in e.changes}
        assert changed == set(range(t.num_pieces))


@pytest.mark.timeout(60)
async def test_piece_state_runs_and_stats(tmp_path: Path, source: tuple[Path, object]) -> None:
    src, mi = source
    async with (
        Client(loopback_config(tmp_path, "seed")) as seeder,
        Client(loopback_config(tmp_path, "leech")) as leecher,
    ):
        st = await seeder.add_metainfo(mi, download_dir=src)  # type: ignore[arg-type]
        runs = st.piece_state_runs()
        assert sum(r.length for r in runs) == st.num_pieces
        assert piece_state_runs_string(runs) == f"{st.num_pieces}C"
        t = await leecher.add_metainfo(mi)  # type: ignore[arg-type]
        for f in t.files:
            if f.path.endswith("c.bin"):
                f.set_priority(PiecePriority.HIGH)
        assert piece_state_runs_string(t.piece_state_runs()) == "30. 5H"
        t.add_peers([("127.0.0.1", seeder.listen_port)])
        async with asyncio.timeout(30):
            await t.wait_complete()
        s = t.stats()
        total = sum(FILES.values())
        assert s.bytes_read_useful_data == total
        assert s.bytes_read > s.bytes_read_data  # protocol overhead is counted too
        assert s.pieces_dirtied_good == t.num_pieces
        assert s.pieces_dirtied_bad == 0
        assert s.pieces_complete == t.num_pieces
        assert seeder.stats().bytes_written_data >= total
        digest = hashlib.sha256((leecher.config.download_dir / "t" / "c.bin").read_bytes())
        assert digest.digest() == hashlib.sha256((src / "t" / "c.bin").read_bytes()).digest()


@pytest.mark.timeout(60)
async def test_restart_uses_completion_store_without_rehash(
    tmp_path: Path, source: tuple[Path, object]
) -> None:
    src, mi = source
    cfg = loopback_config(tmp_path, "seed")
    async with Client(cfg) as c1:
        t1 = await c1.add_metainfo(mi, download_dir=src)  # type: ignore[arg-type]
        assert t1.picker.is_complete()
    async with Client(cfg) as c2:
        sub = c2.bus.subscribe()
        t2 = await c2.add_metainfo(mi, download_dir=src)  # type: ignore[arg-type]
        assert t2.state is TorrentState.SEEDING
        await asyncio.sleep(0.4)
        # No piece went through hashing: the record was trusted.
        events = []
        while (ev := sub.get_nowait()) is not None:
            events.append(ev)
        hashed = [
            p for e in events if isinstance(e, PieceStateChanged) for p, s in e.changes if s.hashing
        ]
        assert hashed == []


@pytest.mark.timeout(60)
async def test_recheck_of_a_paused_torrent_stays_paused(
    tmp_path: Path, source: tuple[Path, object]
) -> None:
    src, mi = source
    async with Client(loopback_config(tmp_path, "seed")) as c:
        t = await c.add_metainfo(mi, download_dir=src)  # type: ignore[arg-type]
        t.pause()
        await t.verify_data()
        assert t.state is TorrentState.PAUSED
        assert t.picker.is_complete()
        t.resume()
        assert t.state is TorrentState.SEEDING
