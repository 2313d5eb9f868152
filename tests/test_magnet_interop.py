"""Magnet links against libtorrent (its own process, 127.0.0.1), both ways.

We resolve and download a magnet whose only peer is a libtorrent seeder
(``x.pe``); libtorrent resolves a magnet from us; and the same again with a
magnet that carries only a tracker (opentracker), so the peers come from
its announces and the metadata from whoever it names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from core.engine.client import Client
from core.events import PeerSource
from core.formats.magnet import Magnet
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from core.tracker import scrape
from tests.support.engine import loopback_config
from tests.support.ltharness import (
    LibtorrentPeerFactory,
    lt_create_torrent,
    lt_peer_factory,
    make_payload,
    sha256_tree,
)
from tests.support.opentracker import OpenTracker, opentracker

__all__ = ["lt_peer_factory", "opentracker"]  # fixtures used by name

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

FILES = {"a.bin": 600_000, "sub/b.bin": 123_457, "c.txt": 17}


def _payload(tmp: Path, trackers: Sequence[str] = ()) -> tuple[Path, Path, Metainfo]:
    seed_dir = tmp / "seed"
    make_payload(seed_dir / "payload", FILES, seed=5)
    torrent = tmp / "payload.torrent"
    torrent.write_bytes(lt_create_torrent(seed_dir / "payload", 32768, "v1", trackers=trackers))
    return seed_dir, torrent, Metainfo.from_bytes(torrent.read_bytes())


async def _seeder_registered(tracker: OpenTracker, info_hash: bytes) -> None:
    async with asyncio.timeout(20):
        while True:
            figures = await scrape(tracker.http_url, [info_hash], timeout=2)
            if info_hash in figures and figures[info_hash].seeders >= 1:
                return
            await asyncio.sleep(0.1)


async def test_we_resolve_a_magnet_from_libtorrent(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    seed_dir, torrent, mi = _payload(tmp_path)
    seeder = await asyncio.to_thread(lt_peer_factory, "seeder")
    await asyncio.to_thread(seeder.add_torrent, torrent, seed_dir, True)
    magnet = Magnet(mi.info_hash, display_name="payload", peers=(f"127.0.0.1:{seeder.port}",))
    async with Client(loopback_config(tmp_path, "leech")) as client:
        t = await client.add_magnet(magnet.uri())
        async with asyncio.timeout(40):
            await t.wait_info()
            assert t.metainfo.raw_info == mi.raw_info
            await t.wait_complete()
        assert t.state is TorrentState.SEEDING
        assert t._swarm.known_peers[("127.0.0.1", seeder.port)] is PeerSource.MAGNET
        assert t.stats().metadata_chunks_read >= 1
    assert sha256_tree(client.config.download_dir / "payload") == sha256_tree(seed_dir / "payload")


async def test_libtorrent_resolves_a_magnet_from_us(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    seed_dir, _torrent, mi = _payload(tmp_path)
    async with Client(loopback_config(tmp_path, "seed")) as client:
        t = await client.add_metainfo(mi, download_dir=seed_dir)
        assert t.state is TorrentState.SEEDING
        leech = await asyncio.to_thread(lt_peer_factory, "leech")
        magnet = Magnet(mi.info_hash, peers=(f"127.0.0.1:{client.listen_port}",))
        out = tmp_path / "lt"
        ih = await asyncio.to_thread(leech.add_magnet, magnet.uri(), out)
        st = await asyncio.to_thread(leech.wait_seeding, ih, 40.0)
        assert st["has_metadata"]
        server = t._ext.server
        assert server is not None and server.stats.served >= 1
    assert sha256_tree(out / "payload") == sha256_tree(seed_dir / "payload")


@pytest.mark.parametrize("proto", ["http", "udp"])
async def test_tracker_only_magnet_from_libtorrent(
    tmp_path: Path,
    opentracker: OpenTracker,
    lt_peer_factory: LibtorrentPeerFactory,
    proto: str,
) -> None:
    url = opentracker.http_url if proto == "http" else opentracker.udp_url
    seed_dir, torrent, mi = _payload(tmp_path, [url])
    await asyncio.to_thread(opentracker.allow, mi.info_hash.wire)
    seeder = await asyncio.to_thread(lt_peer_factory, "seeder")
    await asyncio.to_thread(seeder.add_torrent, torrent, seed_dir, True)
    await _seeder_registered(opentracker, mi.info_hash.wire)
    async with Client(loopback_config(tmp_path, "leech")) as client:
        t = await client.add_magnet(Magnet(mi.info_hash, trackers=(url,)))
        async with asyncio.timeout(40):
            await t.wait_complete()
        assert t._swarm.known_peers[("127.0.0.1", seeder.port)] is PeerSource.TRACKER
        (status,) = t.trackers()
        assert status.last_result == "ok" and status.peers_received >= 1
    assert sha256_tree(client.config.download_dir / "payload") == sha256_tree(seed_dir / "payload")


async def test_libtorrent_tracker_only_magnet_from_us(
    tmp_path: Path, opentracker: OpenTracker, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    url = opentracker.http_url
    seed_dir, _torrent, mi = _payload(tmp_path, [url])
    await asyncio.to_thread(opentracker.allow, mi.info_hash.wire)
    async with Client(loopback_config(tmp_path, "seed")) as client:
        await client.add_metainfo(mi, download_dir=seed_dir)
        await _seeder_registered(opentracker, mi.info_hash.wire)
        leech = await asyncio.to_thread(lt_peer_factory, "leech")
        out = tmp_path / "lt"
        ih = await asyncio.to_thread(
            leech.add_magnet, Magnet(mi.info_hash, trackers=(url,)).uri(), out
        )
        st = await asyncio.to_thread(leech.wait_seeding, ih, 40.0)
        assert st["has_metadata"]
    assert sha256_tree(out / "payload") == sha256_tree(seed_dir / "payload")
