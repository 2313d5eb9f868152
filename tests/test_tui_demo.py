"""The offline demo swarm (``torrent-tui --demo``): it starts, serves, bans, and cleans up.

Every test starts the real swarm (four seeding clients with their own small
DHT and the tracker on 127.0.0.1, about 40 MiB of generated content) in a
temporary directory and downloads from it with a real client, as the app's
engine would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from core.config import ClientConfig
from core.engine.client import Client
from core.engine.dht_torrent import DHT_URL
from core.events import DhtPeersFound, PeerConnected, PeerSource, PieceHashFailed
from core.formats.magnet import parse_magnet
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from core.storage import Layout
from core.tracker import announce, scrape
from core.tracker.types import AnnounceEvent, AnnounceRequest
from core.types import PiecePriority
from tests.support.engine import tree_digest
from tui.demo import (
    DEMO_DOWNLOAD_LIMIT,
    CorruptingStorage,
    Demo,
    DemoEngine,
    demo_session,
    join_dht,
    start_demo,
)
from tui.demo_tracker import DemoTracker

pytestmark = pytest.mark.timeout(60)

LOOPBACK = "127.0.0.1"


def _refused(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port any more."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((LOOPBACK, port)) != 0


def _other_tasks() -> set[asyncio.Task[object]]:
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not current and not t.done()}


async def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def _tracker_free(demo: Demo, name: str) -> Metainfo:
    """A demo torrent's metainfo without its tracker, so only the peers we name are dialled."""
    return dataclasses.replace(demo.torrent(name).metainfo, announce_list=())


# --------------------------------------------------------------------------- lifecycle


async def test_demo_starts_and_stops_cleanly() -> None:
    before = _other_tasks()
    async with asyncio.timeout(30):
        async with demo_session() as demo:
            root = demo.root
            assert root.is_dir()
            ports = [port for _, port in demo.peers.values()] + [demo.tracker.port]
            assert len(set(ports)) == len(ports) == 5
            assert set(demo.seeders) == {"alice", "bob", "slow", "mallory"}
            # Every seeder finished checking: it seeds all of its torrents.
            for t in demo.torrents:
                assert t.torrent_file.is_file()
                for name in t.seeders:
                    seeded = demo.seeders[name].torrent(t.info_hash)
                    assert seeded is not None and seeded.state is TorrentState.SEEDING, name
                # ... and reached the tracker, so a newcomer finds it at once.
                swarm = demo.tracker.swarms[t.info_hash.wire]
                ports_known = {port for _, port, _ in swarm.peers.values()}
                assert ports_known == {demo.peers[n][1] for n in t.seeders}
            for port in ports:
                assert not _refused(port)
    assert not root.exists(), "the temporary directory must be removed"
    for port in ports:
        assert _refused(port), f"port {port} still listening after close"
    await asyncio.sleep(0)
    assert _other_tasks() <= before, _other_tasks() - before


async def test_content_is_varied_and_deterministic(tmp_path: Path) -> None:
    async with asyncio.timeout(30):
        demo = await start_demo(tmp_path / "a")
        try:
            names = [t.name for t in demo.torrents]
            digests = tree_digest(demo.content_dir)
            sizes = {t.name: t.metainfo.info.length for t in demo.torrents}
            files = {t.name: len(t.metainfo.info.files) for t in demo.torrents}
            hashes = [t.info_hash for t in demo.torrents]
        finally:
            await demo.close()
        # Nested folders, a single file, many small files; tens of MiB in all.
        movie = demo.torrent("Open Movie Project").metainfo.info
        assert max(len(f.path) for f in movie.files) >= 3
        assert any(n == 1 for n in files.values())
        assert max(files.values()) >= 40
        assert 20 << 20 <= sum(sizes.values()) <= 80 << 20
        # The movie's "Making Of" is the file the demo user skips.
        (skip,) = demo.torrent("Open Movie Project").skip
        assert movie.files[skip].path[-1] == "Making Of.mp4"
        # Same names, same bytes, same torrents on every run.
        again = await start_demo(tmp_path / "b")
        try:
            assert [t.name for t in again.torrents] == names
            assert [t.info_hash for t in again.torrents] == hashes
            assert tree_digest(again.content_dir) == digests
        finally:
            await again.close()


async def test_everything_stays_on_loopback(tmp_path: Path) -> None:
    async with asyncio.timeout(30):
        demo = await start_demo(tmp_path)
        try:
            for name, client in demo.seeders.items():
                cfg = client.config
                assert cfg.listen_addresses == (LOOPBACK,), name
                assert not cfg.pex, name
                # A DHT of the demo's own: no public router, a socket on
                # loopback; the bad peer keeps out of it (tracker only).
                assert cfg.dht_bootstrap_nodes == (), name
                assert cfg.dht == (name != "mallory"), name
                assert client.dht is None or client.dht.state == "ok", name
                bound = [s.getsockname()[0] for srv in client._servers for s in srv.sockets]
                assert bound == [LOOPBACK], name
                assert [m.local_address[0] for m in client._udp] in ([LOOPBACK], []), name
                assert cfg.data_dir.is_relative_to(tmp_path)
                assert cfg.download_dir.is_relative_to(tmp_path)
            assert urlsplit(demo.tracker.url).hostname == LOOPBACK
            for t in demo.torrents:
                for url in t.metainfo.trackers:
                    assert urlsplit(url).hostname == LOOPBACK
                if t.magnet is not None:
                    m = parse_magnet(t.magnet)
                    assert m.peer_addresses == () and m.trackers == ()  # the DHT finds it
            for swarm in demo.tracker.swarms.values():
                assert {host for host, _, _ in swarm.peers.values()} == {LOOPBACK}
            assert len(demo.dht_nodes) == len(demo.seeders) - 1
            assert all(urlsplit(f"//{n}").hostname == LOOPBACK for n in demo.dht_nodes)
            user = demo.user_config()
            assert user.listen_addresses == (LOOPBACK,)
            assert not user.pex
            assert user.dht and user.dht_bootstrap_nodes == ()  # join_dht() adds the seeders
            assert user.data_dir.is_relative_to(tmp_path)
            assert user.download_dir.is_relative_to(tmp_path)
            assert user.download_rate_limit == DEMO_DOWNLOAD_LIMIT
        finally:
            await demo.close()
    with pytest.raises(ValueError, match="loopback"):
        DemoTracker("0.0.0.0")


# --------------------------------------------------------------------------- the swarm at work


async def test_bad_peer_is_banned_and_honest_peers_complete(tmp_path: Path) -> None:
    async with asyncio.timeout(40):
        demo = await start_demo(tmp_path)
        client = Client(demo.user_config(download_rate_limit=None))
        try:
            await client.start()
            sub = client.bus.subscribe(kinds=[PieceHashFailed])
            name = "Open Movie Project"
            # Only the bad peer first: every piece it sends alone is its own.
            t = await client.add_metainfo(_tracker_free(demo, name), peers=[demo.bad_peer])
            bad_ip, bad_port = demo.bad_peer
            await _until(lambda: client.is_banned(bad_ip, bad_port), 20, "the bad peer's ban")
            reason = client.banned[f"{bad_ip}:{bad_port}"]
            assert "failed pieces" in reason
            failed = []
            while (event := sub.get_nowait()) is not None:
                assert isinstance(event, PieceHashFailed)
                failed.append(event)
            assert len(failed) >= 2
            assert all(e.peers == (demo.bad_peer,) for e in failed)
            storage = demo.storages[("mallory", t.info_hash)]
            assert storage.pieces_corrupted >= 2
            assert not any(p.address == demo.bad_peer for p in t.peers)
            # Now the honest seeders: the download completes and matches the source.
            t.add_peers([demo.peers["alice"], demo.peers["bob"], demo.bad_peer])
            await asyncio.wait_for(t.wait_complete(), 20)
            assert t.state is TorrentState.SEEDING
            got = tree_digest(client.config.download_dir / name)
            assert got == tree_digest(demo.content_dir / name)
            assert not any(p.address == demo.bad_peer for p in t.peers)
        finally:
            await client.close()
            await demo.close()


async def test_peers_are_found_through_the_tracker(tmp_path: Path) -> None:
    async with asyncio.timeout(40):
        demo = await start_demo(tmp_path)
        client = Client(demo.user_config(download_rate_limit=None, dht=False))
        try:
            await client.start()
            sub = client.bus.subscribe(kinds=[PeerConnected])
            album = demo.torrent("Photo Album 2023")
            t = await client.add_torrent_file(album.torrent_file)  # no peers given
            await asyncio.wait_for(t.wait_complete(), 20)
            assert tree_digest(client.config.download_dir / album.name) == tree_digest(
                demo.content_dir / album.name
            )
            (status,) = t.trackers()
            assert status.last_result == "ok"
            assert status.seeders == len(album.seeders)
            assert status.peers_received == len(album.seeders)
            connected = []
            while (event := sub.get_nowait()) is not None:
                assert isinstance(event, PeerConnected)
                connected.append(event)
            # Every seeder of the album was found through the tracker.
            assert {e.source for e in connected} == {PeerSource.TRACKER}
            by_port = {port: name for name, (_, port) in demo.peers.items()}
            assert {by_port[e.address[1]] for e in connected} == set(album.seeders)
            # The tracker learnt of us too (as a leecher, then completed).
            swarm = demo.tracker.swarms[album.info_hash.wire]
            assert client.peer_id in swarm.peers
        finally:
            await client.close()
            await demo.close()


async def test_a_bare_magnet_is_found_through_the_demo_dht(tmp_path: Path) -> None:
    """The soundtrack's magnet has only its info-hash: the DHT gives peers, they the metadata."""
    if not hasattr(Client, "add_magnet"):
        pytest.skip("the engine cannot add magnet links")
    async with asyncio.timeout(40):
        demo = await start_demo(tmp_path)
        client = Client(demo.user_config(download_rate_limit=None))
        try:
            await client.start()
            assert await join_dht(client, demo.dht_nodes)
            assert client.dht is not None and client.dht.state == "ok"
            sub = client.bus.subscribe(kinds=[DhtPeersFound])
            (offered,) = [t for t in demo.torrents if t.magnet is not None]
            t = await client.add_magnet(offered.source)
            await asyncio.wait_for(t.wait_complete(), 20)
            assert tree_digest(client.config.download_dir / offered.name) == tree_digest(
                demo.content_dir / offered.name
            )
            (row,) = t.trackers()  # no tracker: the DHT row alone
            assert (row.url, row.tier, row.last_result) == (DHT_URL, -1, "ok")
            assert row.peers_received == len(offered.seeders)
            # Found through the DHT (whichever end then dialled: our announce
            # also makes the seeders dial us).
            found = []
            while (event := sub.get_nowait()) is not None:
                assert isinstance(event, DhtPeersFound)
                found.append(event)
            assert found and {e.info_hash for e in found} == {t.info_hash}
            assert max(e.total for e in found) == len(offered.seeders)
        finally:
            await client.close()
            await demo.close()


async def test_tracker_speaks_bep3_and_bep48() -> None:
    tracker = DemoTracker()
    await tracker.start()
    try:
        ih = bytes(range(20))  # not valid text in any encoding: must survive as bytes
        seed_id, leech_id = b"-PY0100-seed00000001", b"-PY0100-\xff\xfe\x00leech0000"

        async def ann(peer_id: bytes, port: int, left: int, event: AnnounceEvent) -> object:
            req = AnnounceRequest(ih, peer_id, port, left=left, event=event)
            return await announce(tracker.url, req)

        first = await ann(seed_id, 6001, 0, AnnounceEvent.STARTED)
        assert first.peers == ()  # type: ignore[attr-defined]
        second = await ann(leech_id, 6002, 100, AnnounceEvent.STARTED)
        assert second.peers == ((LOOPBACK, 6001),)  # type: ignore[attr-defined]
        assert (second.seeders, second.leechers) == (1, 1)  # type: ignore[attr-defined]
        await ann(leech_id, 6002, 0, AnnounceEvent.COMPLETED)
        figures = await scrape(tracker.url, [ih])
        assert (figures[ih].seeders, figures[ih].leechers, figures[ih].completed) == (2, 0, 1)
        await ann(seed_id, 6001, 0, AnnounceEvent.STOPPED)
        third = await ann(leech_id, 6002, 0, AnnounceEvent.NONE)
        assert third.peers == ()  # type: ignore[attr-defined]
        assert list(tracker.swarms[ih].peers) == [leech_id]
    finally:
        await tracker.close()
    assert _refused(tracker.port)


def test_corrupting_storage_fools_downloaders_not_itself(tmp_path: Path) -> None:
    from core.formats.create import create_torrent

    data = bytes(range(256)) * 1024  # 256 KiB, 4 pieces of 64 KiB
    (tmp_path / "f.bin").write_bytes(data)
    mi = create_torrent(tmp_path / "f.bin", piece_length=1 << 16)
    storage = CorruptingStorage(Layout.from_info(mi.info, tmp_path), lambda p: p == 1)
    try:
        for p in range(4):
            # Its own check passes: it believes it has every piece.
            assert storage.hash_piece(p) == mi.info.piece_hash_v1(p)
        assert storage.read_piece(0) == data[: 1 << 16]
        sent = storage.read_piece(1)
        assert len(sent) == 1 << 16 and sent != data[1 << 16 : 2 << 16]
        assert hashlib.sha1(sent).digest() != mi.info.piece_hash_v1(1)
        # Every 16 KiB block is damaged, so each one a downloader takes is wrong.
        for begin in range(0, 1 << 16, 1 << 14):
            assert storage.read_block(1, begin, 1 << 14) != data[(1 << 16) + begin :][: 1 << 14]
    finally:
        storage.close()


# --------------------------------------------------------------------------- the demo engine


async def test_demo_engine_adds_every_torrent_with_the_skip(tmp_path: Path) -> None:
    engine = DemoEngine(tmp_path, download_rate_limit=None)
    async with asyncio.timeout(40):
        try:
            await engine.start()
            demo = engine.demo
            assert demo is not None
            rows = {r.info_hash: r for r in engine.torrents()}
            assert set(rows) == {t.info_hash for t in demo.torrents}
            movie = demo.torrent("Open Movie Project")
            details = engine.details(movie.info_hash)
            assert details is not None
            prios = {f.index: f.priority for f in details.files}
            assert [i for i, p in prios.items() if p == PiecePriority.NONE] == list(movie.skip)
            # The user's client is the engine's, configured inside the demo root.
            cfg: ClientConfig = engine.client.config
            assert cfg.data_dir.is_relative_to(tmp_path)
            assert cfg.download_dir.is_relative_to(tmp_path)
            # Its DHT joined the seeders' before the torrents were added.
            status = engine.status()
            assert status.dht_state == "ok"
            assert status.dht_good_nodes == status.dht_nodes == len(demo.dht_nodes)
            album = demo.torrent("Photo Album 2023")
            t = engine.client.torrent(album.info_hash)
            assert t is not None
            await asyncio.wait_for(t.wait_complete(), 20)
            # The leecher takes the movie from the user only: the user uploads.
            (carol,) = demo.leechers.values()
            theirs = carol.torrent(movie.info_hash)
            assert theirs is not None and not theirs.metainfo.trackers
            await _until(lambda: theirs.bytes_completed() > 0, 20, "the leecher's first piece")
            assert engine.client.stats().bytes_written_data > 0
            assert engine.status().session_uploaded > 0
        finally:
            await engine.close()
    assert demo is not None
    for port in [p for _, p in demo.peers.values()] + [demo.tracker.port]:
        assert _refused(port)


async def test_the_demo_bans_its_liar_within_seconds_and_nobody_else(tmp_path: Path) -> None:
    """What the module docstring promises, in the demo as the user runs it (rate limit included).

    The bad peer shares the movie with two fast honest seeders and the ISO
    with the slow one, so most of its first pieces are mixed with honest
    data: the first failure puts it on parole, its next piece is its own.
    """
    engine = DemoEngine(tmp_path)
    sub = engine.client.bus.subscribe(kinds=[PieceHashFailed])
    async with asyncio.timeout(50):
        try:
            await engine.start()
            started = asyncio.get_running_loop().time()
            demo = engine.demo
            assert demo is not None
            bad_ip, bad_port = demo.bad_peer
            client = engine.client
            await _until(lambda: client.is_banned(bad_ip, bad_port), 15, "the bad peer's ban")
            took = asyncio.get_running_loop().time() - started
            assert took < 12  # about 10 s; a loaded test machine gets some slack
            failed: dict[object, int] = {}
            while (event := sub.get_nowait()) is not None:
                assert isinstance(event, PieceHashFailed)
                assert demo.bad_peer in event.peers  # only its data ever fails
                failed[event.info_hash] = failed.get(event.info_hash, 0) + 1
            # At most three failed pieces per torrent it seeds (usually two in all).
            assert failed and all(n <= 3 for n in failed.values())
            reason = client.banned[f"{bad_ip}:{bad_port}"]
            assert "failed pieces" in reason or "differed from the good data" in reason
            assert list(client.banned) == [f"{bad_ip}:{bad_port}"]
            per_torrent = list(failed.values())
            print(f"\nbanned after {took:.1f} s, failed pieces per torrent {per_torrent}: {reason}")
        finally:
            await engine.close()


async def test_demo_engine_is_rate_limited_by_default(tmp_path: Path) -> None:
    engine = DemoEngine(tmp_path, add_torrents=False)
    try:
        assert engine.client.config.download_rate_limit == DEMO_DOWNLOAD_LIMIT
        assert engine.client.download_bucket.rate == DEMO_DOWNLOAD_LIMIT
    finally:
        await engine.client.close()


async def test_the_magnet_torrent_fetches_metadata_and_completes(tmp_path: Path) -> None:
    if not hasattr(Client, "add_magnet"):
        pytest.skip("the engine cannot add magnet links")
    engine = DemoEngine(tmp_path, download_rate_limit=None)
    async with asyncio.timeout(40):
        try:
            await engine.start()
            demo = engine.demo
            assert demo is not None
            (offered,) = [t for t in demo.torrents if t.magnet is not None]
            assert offered.source == offered.magnet
            m = parse_magnet(offered.source)
            assert m.info_hash == offered.info_hash
            assert m.peer_addresses == () and m.trackers == ()
            t = engine.client.torrent(offered.info_hash)
            assert t is not None
            await asyncio.wait_for(t.wait_complete(), 20)
            got = tree_digest(engine.config.download_dir / offered.name)
            assert got == tree_digest(demo.content_dir / offered.name)
        finally:
            await engine.close()


# --------------------------------------------------------------------------- torrent-tui --demo


@pytest.mark.timeout(40)
def test_torrent_tui_demo_runs_in_a_temp_dir_and_leaves_the_user_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``torrent-tui --demo`` headless: the swarm feeds the app; nothing outlives it."""
    from textual.pilot import Pilot

    import tui.__main__ as cli
    from tui.app import TorrentApp

    home = tmp_path / "home"
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("HOME", str(home))
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    seen: dict[str, object] = {}
    original = TorrentApp.run

    def headless_run(self: TorrentApp, *args: object, **kwargs: object) -> None:
        async def drive(pilot: Pilot[object]) -> None:
            async with asyncio.timeout(30):
                while not self.engine_ready:
                    assert self.engine_error is None, self.engine_error
                    await pilot.pause(0.05)
            engine = self.engine
            assert isinstance(engine, DemoEngine) and engine.demo is not None
            seen["root"] = engine.root
            seen["torrents"] = len(engine.torrents())
            seen["offered"] = len(engine.demo.torrents)
            seen["config"] = engine.config
            seen["settings_path"] = self.settings.path
            seen["persist"] = self.persist_settings
            seen["ports"] = [p for _, p in engine.demo.peers.values()]
            await pilot.press("q")

        original(self, headless=True, auto_pilot=drive)

    monkeypatch.setattr(TorrentApp, "run", headless_run)
    assert cli.main(["--demo"]) == 0
    root = seen["root"]
    assert isinstance(root, Path) and root.is_relative_to(temp)
    assert seen["torrents"] == seen["offered"] == 4
    cfg = seen["config"]
    assert isinstance(cfg, ClientConfig)
    assert cfg.data_dir.is_relative_to(root) and cfg.download_dir.is_relative_to(root)
    assert cfg.listen_addresses == (LOOPBACK,)
    settings_path = seen["settings_path"]
    assert isinstance(settings_path, Path) and settings_path.is_relative_to(root)
    assert seen["persist"] is False
    # Everything is gone: the temporary directory, the sockets; nothing was
    # written to the user's config or data directories.
    assert not root.exists()
    assert list(temp.iterdir()) == []
    assert not home.exists() or not any(p.is_file() for p in home.rglob("*"))
    ports = seen["ports"]
    assert isinstance(ports, list)
    assert all(_refused(p) for p in ports)
