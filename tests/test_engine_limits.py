"""Engine limits: self-connections, runtime rate limits, snapshots on the bus."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from core.engine.client import Client
from core.events import ClientSnapshot, PeerDisconnected
from tests.support.engine import loopback_config, make_torrent


@pytest.mark.timeout(30)
async def test_connecting_to_ourselves_is_detected(tmp_path: Path) -> None:
    mi = make_torrent(tmp_path / "src", {"x.bin": 100_000}, 16384)
    async with Client(loopback_config(tmp_path, "me")) as c:
        sub = c.bus.subscribe(kinds=[PeerDisconnected])
        t = await c.add_metainfo(mi)
        t.add_peers([("127.0.0.1", c.listen_port)])
        async with asyncio.timeout(10):
            reasons = []
            while not any("ourselves" in r for r in reasons):
                ev = await sub.get()
                assert isinstance(ev, PeerDisconnected)
                reasons.append(ev.reason)
        assert not t.peers


@pytest.mark.timeout(60)
async def test_download_rate_limit_applies_and_changes_at_runtime(tmp_path: Path) -> None:
    size = 3_000_000
    src = tmp_path / "src"
    mi = make_torrent(src, {"x.bin": size}, 32768)
    limit = 1_000_000
    async with (
        Client(loopback_config(tmp_path, "seed")) as seeder,
        Client(loopback_config(tmp_path, "leech", download_rate_limit=limit)) as leecher,
    ):
        await seeder.add_metainfo(mi, download_dir=src)
        t = await leecher.add_metainfo(mi)
        start = time.monotonic()
        t.add_peers([("127.0.0.1", seeder.listen_port)])
        async with asyncio.timeout(30):
            while t.stats().bytes_read_data < 1_500_000:
                await asyncio.sleep(0.05)
        elapsed = time.monotonic() - start
        # 1.5 MB at 1 MB/s with a 0.5 s burst takes at least ~0.9 s; unlimited is ~0.05 s.
        assert elapsed > 0.8, elapsed
        leecher.set_rate_limits(download=None, upload=None)
        async with asyncio.timeout(30):
            await t.wait_complete()
        assert (leecher.config.download_dir / "x.bin").read_bytes() == (src / "x.bin").read_bytes()


@pytest.mark.timeout(30)
async def test_client_snapshots_are_published(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, {"x.bin": 200_000}, 16384)
    async with Client(loopback_config(tmp_path, "seed")) as c:
        sub = c.bus.subscribe(kinds=[ClientSnapshot])
        await c.add_metainfo(mi, download_dir=src)
        async with asyncio.timeout(5):
            ev = await sub.get()
        assert isinstance(ev, ClientSnapshot)
        (row,) = ev.torrents
        assert row.name == "x.bin" and row.progress == 1.0 and row.size == 200_000


@pytest.mark.timeout(60)
async def test_per_torrent_upload_limit(tmp_path: Path) -> None:
    size = 2_000_000
    src = tmp_path / "src"
    mi = make_torrent(src, {"y.bin": size}, 32768)
    async with (
        Client(loopback_config(tmp_path, "seed")) as seeder,
        Client(loopback_config(tmp_path, "leech")) as leecher,
    ):
        st = await seeder.add_metainfo(mi, download_dir=src)
        st.set_rate_limits(download=None, upload=500_000)
        assert st.rate_limits == (None, 500_000)
        t = await leecher.add_metainfo(mi)
        start = time.monotonic()
        t.add_peers([("127.0.0.1", seeder.listen_port)])
        async with asyncio.timeout(30):
            while t.stats().bytes_read_data < 1_000_000:
                await asyncio.sleep(0.05)
        # 1 MB at 0.5 MB/s with a 0.25 s burst takes well over a second; unlimited ~0.05 s.
        assert time.monotonic() - start > 1.0
        st.set_rate_limits(download=None, upload=None)
        async with asyncio.timeout(30):
            await t.wait_complete()
