"""Loopback integration: several Clients in one process seeding to each other."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.engine.client import Client
from core.stats import TorrentState
from tests.support.engine import loopback_config, make_torrent, tree_digest


async def _swarm(tmp_path: Path, files: dict[str, int], piece_length: int, leechers: int) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, files, piece_length)
    expected = tree_digest(src)
    async with Client(loopback_config(tmp_path, "seed")) as seeder:
        st = await seeder.add_metainfo(mi, download_dir=src)
        assert st.state is TorrentState.SEEDING, st.state
        clients = [Client(loopback_config(tmp_path, f"leech{i}")) for i in range(leechers)]
        for c in clients:
            await c.start()
        try:
            torrents = []
            for c in clients:
                t = await c.add_metainfo(mi)
                t.add_peers([("127.0.0.1", seeder.listen_port)])
                torrents.append(t)
            # Leechers also know each other, so pieces flow between them too.
            for i, t in enumerate(torrents):
                t.add_peers([("127.0.0.1", c.listen_port) for j, c in enumerate(clients) if j != i])
            async with asyncio.timeout(60):
                await asyncio.gather(*(t.wait_complete() for t in torrents))
            for c, t in zip(clients, torrents, strict=True):
                assert t.state is TorrentState.SEEDING
                got = tree_digest(c.config.download_dir)
                assert got == expected
                assert t.stats().pieces_dirtied_bad == 0
        finally:
            for c in clients:
                await c.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("piece_length", "files"),
    [
        (16384, {"one.bin": 16384 * 37 + 123}),
        (65536, {"d/a.bin": 100_000, "d/empty": 0, "d/sub/b.bin": 5_000, "d/c.bin": 300_001}),
        (4 << 20, {"big.bin": (4 << 20) * 2 + 77}),
    ],
)
async def test_two_clients(tmp_path: Path, piece_length: int, files: dict[str, int]) -> None:
    await _swarm(tmp_path, files, piece_length, leechers=1)


@pytest.mark.timeout(90)
async def test_three_clients(tmp_path: Path) -> None:
    files = {"m/x.bin": 1_000_000, "m/y/z.bin": 12_345, "m/e": 0, "m/w.bin": 262_144}
    await _swarm(tmp_path, files, 32768, leechers=2)
