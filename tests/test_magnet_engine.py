"""Magnet links in the engine, loopback: our clients only.

A torrent added from a magnet starts without its info dict, fetches it over
ut_metadata from the peers it finds (x.pe, trackers, incoming), then
downloads on the same connections.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from core.config import ClientConfig
from core.engine.client import Client
from core.engine.metadata import METADATA_PIECE_SIZE
from core.errors import MagnetError, TorrentError
from core.events import MetadataReceived, PeerConnected, PeerSource
from core.formats.bencoding import decode
from core.formats.magnet import Magnet
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from core.types import InfoHash, PiecePriority
from core.wire import UT_METADATA, UT_PEX, ExtensionHandshake
from core.wire.extensions import decode_extension_handshake
from core.wire.messages import Extended, Reserved
from tests.support.engine import loopback_config, make_torrent, tree_digest
from tests.support.rawpeer import RawListener, RawPeer
from tests.test_tracker_engine import FakeTracker

pytestmark = pytest.mark.timeout(60)

FILES = {"pay/a.bin": 300_000, "pay/sub/b.bin": 70_001, "pay/c.bin": 5}
PIECE = 16384


def _x_pe(*clients: Client) -> tuple[str, ...]:
    return tuple(f"127.0.0.1:{c.listen_port}" for c in clients)


async def _seeder(tmp: Path, name: str, src: Path, mi: Metainfo, **cfg: object) -> Client:
    client = Client(loopback_config(tmp, name, **cfg))
    await client.start()
    t = await client.add_metainfo(mi, download_dir=src)
    assert t.state is TorrentState.SEEDING
    return client


async def test_magnet_with_x_pe_downloads_on_the_same_connection(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    seeder = await _seeder(tmp_path, "seed", src, mi)
    try:
        async with Client(loopback_config(tmp_path, "leech")) as leech:
            sub = leech.bus.subscribe(kinds=(MetadataReceived, PeerConnected))
            magnet = Magnet(mi.info_hash, display_name="shown name", peers=_x_pe(seeder))
            t = await leech.add_magnet(magnet.uri())
            assert t.state is TorrentState.FETCHING_METADATA
            assert not t.has_info and t.files == [] and t.length == 0
            assert t.name == "shown name"
            assert leech.torrent(mi.info_hash) is t
            async with asyncio.timeout(20):
                await t.wait_info()
                assert t.name == "pay" and len(t.files) == 3
                await t.wait_complete()
            assert tree_digest(leech.config.download_dir) == tree_digest(src)
            assert t.metainfo.raw_info == mi.raw_info
            events = []
            while (e := sub.get_nowait()) is not None:
                events.append(e)
            got = [e for e in events if isinstance(e, MetadataReceived)]
            assert got == [
                MetadataReceived(mi.info_hash, "pay", mi.info.total_size, mi.info.num_pieces)
            ]
            connected = [e for e in events if isinstance(e, PeerConnected)]
            # One connection did it all: metadata, then the pieces.
            assert [e.source for e in connected] == [PeerSource.MAGNET]
            assert t.stats().metadata_chunks_read == 1
            assert t.stats().pieces_dirtied_bad == 0
    finally:
        await seeder.close()


async def test_peer_sources_in_stats(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, {"one.bin": 200_000}, PIECE)
    seeder = await _seeder(tmp_path, "seed", src, mi, seed=True)
    try:
        async with Client(loopback_config(tmp_path, "leech", seed=False)) as leech:
            t = await leech.add_magnet(Magnet(mi.info_hash, peers=_x_pe(seeder)))
            async with asyncio.timeout(20):
                await t.wait_info()
            st = t.stats()
            assert st.peers_by_source == {PeerSource.MAGNET: 1}
            seeding_side = seeder.torrent(mi.info_hash)
            assert seeding_side is not None
            assert seeding_side.stats().peers_by_source == {PeerSource.INCOMING: 1}
    finally:
        await seeder.close()


def _many_files(n: int) -> dict[str, int]:
    # Long names make a big info dict cheaply: several 16 KiB metadata pieces.
    return {f"many/{i:04d}-{'x' * 120}.bin": 700 + i for i in range(n)}


async def test_multi_piece_metadata_from_several_peers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, _many_files(300), PIECE)
    pieces = -(-len(mi.raw_info) // METADATA_PIECE_SIZE)
    assert pieces >= 3
    seeders = [await _seeder(tmp_path, f"seed{i}", src, mi) for i in range(2)]
    try:
        async with Client(loopback_config(tmp_path, "leech")) as leech:
            t = await leech.add_magnet(Magnet(mi.info_hash, peers=_x_pe(*seeders)))
            async with asyncio.timeout(30):
                await t.wait_info()
                await t.wait_complete()
            assert t.metainfo.raw_info == mi.raw_info
            served = []
            for s in seeders:
                st = s.torrent(mi.info_hash)
                assert st is not None and st._ext.server is not None
                served.append(st._ext.server.stats.served)
            # Every piece was served once, and both peers took part.
            assert sum(served) == pieces, served
            assert all(n > 0 for n in served), served
            assert tree_digest(leech.config.download_dir) == tree_digest(src)
    finally:
        for s in seeders:
            await s.close()


async def test_select_only_leaves_other_files_unwanted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    # Piece-aligned files, so no piece is shared by a wanted and an unwanted file.
    files = {"sel/f0": 2 * PIECE, "sel/f1": 3 * PIECE, "sel/f2": PIECE, "sel/f3": 2 * PIECE}
    mi = make_torrent(src, files, PIECE)
    seeder = await _seeder(tmp_path, "seed", src, mi)
    try:
        async with Client(loopback_config(tmp_path, "leech")) as leech:
            m = Magnet(mi.info_hash, peers=_x_pe(seeder), select_only=((0, 0), (2, 2)))
            t = await leech.add_magnet(m)
            async with asyncio.timeout(20):
                await t.wait_info()
                await t.wait_complete()
            prios = {f.path: f.priority for f in t.files}
            assert prios == {
                "sel/f0": PiecePriority.NORMAL,
                "sel/f1": PiecePriority.NONE,
                "sel/f2": PiecePriority.NORMAL,
                "sel/f3": PiecePriority.NONE,
            }
            done = {f.path: f.bytes_completed() for f in t.files}
            assert done == {"sel/f0": 2 * PIECE, "sel/f1": 0, "sel/f2": PIECE, "sel/f3": 0}
            out = leech.config.download_dir / "sel"
            assert (out / "f0").read_bytes() == (src / "sel" / "f0").read_bytes()
            assert (out / "f2").read_bytes() == (src / "sel" / "f2").read_bytes()
    finally:
        await seeder.close()


async def test_duplicate_magnet_returns_the_torrent_and_merges(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    tracker = FakeTracker()
    await tracker.start()
    seeder = await _seeder(tmp_path, "seed", src, mi)
    try:
        async with Client(loopback_config(tmp_path, "leech")) as leech:
            first = await leech.add_magnet(Magnet(mi.info_hash))
            assert first.trackers() == []
            again = await leech.add_magnet(
                Magnet(mi.info_hash, trackers=(tracker.url,), peers=_x_pe(seeder))
            )
            assert again is first
            assert [s.url for s in first.trackers()] == [tracker.url]
            async with asyncio.timeout(20):
                await first.wait_complete()
            # A magnet for a torrent added from its .torrent file: the same torrent.
            assert await leech.add_magnet(Magnet(mi.info_hash)) is first
            assert len(leech.torrents) == 1
    finally:
        await seeder.close()
        await tracker.stop()


async def test_magnet_of_a_torrent_added_from_its_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    async with Client(loopback_config(tmp_path, "c")) as client:
        t = await client.add_metainfo(mi, download_dir=src)
        assert await client.add_magnet(mi.magnet()) is t
        assert await client.add_info_hash(mi.info_hash) is t


async def test_tracker_only_magnet(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    tracker = FakeTracker()
    await tracker.start()
    seeder = await _seeder(tmp_path, "seed", src, mi)
    tracker.peers = [("127.0.0.1", seeder.listen_port)]
    try:
        async with Client(loopback_config(tmp_path, "leech")) as leech:
            t = await leech.add_magnet(Magnet(mi.info_hash, trackers=(tracker.url,)))
            async with asyncio.timeout(20):
                await t.wait_complete()
            first = tracker.requests[0]
            assert first["event"] == "started"
            # The size was unknown: a large "left", so the tracker sees a leecher.
            assert int(first["left"]) > mi.info.total_size
            assert tree_digest(leech.config.download_dir) == tree_digest(src)
            assert t.stats().pieces_dirtied_good == mi.info.num_pieces
    finally:
        await seeder.close()
        await tracker.stop()


async def test_metadata_from_an_incoming_connection(tmp_path: Path) -> None:
    """The magnet knows no peer; a seeder dials us and we fetch from it."""
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    seeder = await _seeder(tmp_path, "seed", src, mi)
    try:
        async with Client(loopback_config(tmp_path, "leech")) as leech:
            t = await leech.add_magnet(Magnet(mi.info_hash))
            st = seeder.torrent(mi.info_hash)
            assert st is not None
            st.add_peers([("127.0.0.1", leech.listen_port)])
            async with asyncio.timeout(20):
                await t.wait_complete()
            assert tree_digest(leech.config.download_dir) == tree_digest(src)
    finally:
        await seeder.close()


async def test_a_magnet_peer_serves_metadata_once_it_has_it(tmp_path: Path) -> None:
    """A connects to B while B is still fetching; B offers the metadata when it arrives."""
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    async with (
        Client(loopback_config(tmp_path, "a")) as a,
        Client(loopback_config(tmp_path, "b")) as b,
    ):
        tb = await b.add_magnet(Magnet(mi.info_hash))
        ta = await a.add_magnet(Magnet(mi.info_hash, peers=_x_pe(b)))
        async with asyncio.timeout(10):
            while not ta.peers:
                await asyncio.sleep(0.05)
        (peer,) = ta.peers
        assert peer.proto is not None
        hs = peer.proto.conn.remote_ext_handshake
        assert hs is not None and hs.metadata_size is None
        assert UT_METADATA in hs.m
        seeder = await _seeder(tmp_path, "seed", src, mi)
        try:
            tb.add_peers([("127.0.0.1", seeder.listen_port)])
            async with asyncio.timeout(20):
                await tb.wait_info()
                await ta.wait_info()
                await ta.wait_complete()
            # A never knew the seeder: both metadata and data came through B.
            assert all(p.address == ("127.0.0.1", b.listen_port) for p in ta.peers)
            assert tree_digest(a.config.download_dir) == tree_digest(src)
        finally:
            await seeder.close()


@pytest.mark.parametrize("both_hashes", [True, False])
async def test_hybrid_magnets(tmp_path: Path, both_hashes: bool) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, {"hy/a.bin": 100_000, "hy/b.bin": 40_000}, PIECE, version="hybrid")
    assert mi.info_hash.v1 is not None and mi.info_hash.v2 is not None
    seeder = await _seeder(tmp_path, "seed", src, mi)
    ih = mi.info_hash if both_hashes else InfoHash(v1=mi.info_hash.v1)
    try:
        async with Client(loopback_config(tmp_path, "leech")) as leech:
            t = await leech.add_magnet(Magnet(ih, peers=_x_pe(seeder)))
            async with asyncio.timeout(20):
                await t.wait_complete()
            assert t.info_hash == ih  # the identity it was added under
            assert t.metainfo.info_hash == mi.info_hash  # both hashes once known
            assert tree_digest(leech.config.download_dir) == tree_digest(src)
    finally:
        await seeder.close()


async def test_v2_only_magnet_fails_clearly(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, {"v2/a.bin": 5 * PIECE, "v2/b.bin": 100}, PIECE, version="v2")
    seeder = await _seeder(tmp_path, "seed", src, mi)
    try:
        async with Client(loopback_config(tmp_path, "leech")) as leech:
            t = await leech.add_magnet(Magnet(mi.info_hash, peers=_x_pe(seeder)))
            with pytest.raises(TorrentError, match="piece layers"):
                async with asyncio.timeout(20):
                    await t.wait_info()
            assert t.state is TorrentState.ERROR
    finally:
        await seeder.close()


async def test_drop_while_fetching(tmp_path: Path) -> None:
    async with Client(loopback_config(tmp_path, "c")) as client:
        t = await client.add_magnet(Magnet(InfoHash(v1=bytes(range(20)))))
        waiter = asyncio.ensure_future(t.wait_info())
        await asyncio.sleep(0.05)
        await t.drop()
        with pytest.raises(TorrentError, match="dropped"):
            async with asyncio.timeout(5):
                await waiter
        assert client.torrents == {}


async def test_bad_magnet_is_a_magnet_error(tmp_path: Path) -> None:
    async with Client(loopback_config(tmp_path, "c")) as client:
        with pytest.raises(MagnetError):
            await client.add_magnet("magnet:?xt=urn:btih:nothex")
        assert client.torrents == {}


async def _ext_handshake_of(peer: RawPeer) -> ExtensionHandshake:
    """Read messages until the remote's BEP 10 handshake."""
    while True:
        msg = await peer.read_until(Extended)
        assert isinstance(msg, Extended)
        if msg.ext_id == 0:
            return decode_extension_handshake(msg.payload)


async def test_handshakes_advertise_extensions(tmp_path: Path) -> None:
    """With the info: ut_metadata, ut_pex, metadata_size; from a magnet: no size yet."""
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    seeder = await _seeder(tmp_path, "seed", src, mi, pex=True)
    try:
        raw = await RawPeer.connect(seeder.listen_port)
        await raw.send_handshake(mi.info_hash.wire, reserved=Reserved.make(extended=True))
        await raw.read_handshake()
        async with asyncio.timeout(5):
            hs = await _ext_handshake_of(raw)
        await raw.close()
        assert {UT_METADATA, UT_PEX} <= set(hs.m)
        assert hs.metadata_size == len(mi.raw_info)
        assert hs.p == seeder.listen_port
    finally:
        await seeder.close()

    seen: list[ExtensionHandshake] = []

    async def script(peer: RawPeer) -> None:
        await peer.read_handshake()
        await peer.send_handshake(mi.info_hash.wire, reserved=Reserved.make(extended=True))
        seen.append(await _ext_handshake_of(peer))

    async with (
        RawListener(script) as listener,
        Client(loopback_config(tmp_path, "leech", pex=True)) as leech,
    ):
        await leech.add_magnet(Magnet(mi.info_hash, peers=(f"127.0.0.1:{listener.port}",)))
        async with asyncio.timeout(5):
            while not seen:
                await asyncio.sleep(0.02)
        assert not listener.errors
    assert {UT_METADATA, UT_PEX} <= set(seen[0].m)
    assert seen[0].metadata_size is None
    assert seen[0].p == leech.listen_port


# --------------------------------------------------------------------- CLI


async def test_cli_metainfo_from_magnet(tmp_path: Path) -> None:
    from core.cli.main import main

    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    seeder = await _seeder(tmp_path, "seed", src, mi)
    out = tmp_path / "out.torrent"
    tracker = "http://127.0.0.1:1/announce"
    magnet = Magnet(mi.info_hash, trackers=(tracker,), peers=_x_pe(seeder)).uri()
    try:
        code = await asyncio.to_thread(
            main,
            [
                "metainfo-from-magnet",
                "--no-dht",
                magnet,
                "-o",
                str(out),
                "--timeout",
                "20",
                "--listen",
                "127.0.0.1",
            ],
        )
        assert code == 0
        saved = Metainfo.from_bytes(out.read_bytes())
        assert saved.info_hash == mi.info_hash
        assert saved.raw_info == mi.raw_info
        assert saved.trackers == [tracker]
        top = decode(out.read_bytes())
        assert isinstance(top, dict) and top[b"announce"] == tracker.encode()
    finally:
        await seeder.close()


async def test_cli_metainfo_from_magnet_times_out(tmp_path: Path) -> None:
    from core.cli.main import main

    out = tmp_path / "never.torrent"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    magnet = Magnet(InfoHash(v1=bytes(20))).uri()
    argv = [
        "metainfo-from-magnet",
        "--no-dht",
        magnet,
        "-o",
        str(out),
        "--timeout",
        "0.5",
        "--listen",
        "127.0.0.1",
    ]
    code = await asyncio.to_thread(main, [*argv, "--peer", f"127.0.0.1:{closed}"])
    assert code != 0
    assert not out.exists()


async def test_cli_download_magnet(tmp_path: Path) -> None:
    from core.cli.main import main

    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    seeder = await _seeder(tmp_path, "seed", src, mi)
    out = tmp_path / "dl"
    try:
        code = await asyncio.to_thread(
            main,
            [
                "download",
                "--no-dht",
                Magnet(mi.info_hash).uri(),
                "-o",
                str(out),
                "--peer",
                f"127.0.0.1:{seeder.listen_port}",
                "--state-dir",
                str(tmp_path / "state"),
                "--listen",
                "127.0.0.1",
                "--quiet",
            ],
        )
        assert code == 0
        assert tree_digest(out) == tree_digest(src)
    finally:
        await seeder.close()


async def test_cli_cat_magnet(tmp_path: Path) -> None:
    from core.cli import cat_cmd
    from core.cli.main import build_parser

    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    seeder = await _seeder(tmp_path, "seed", src, mi)
    out = tmp_path / "cat.out"
    try:
        args = build_parser().parse_args(
            [
                "cat",
                "--no-dht",
                Magnet(mi.info_hash, peers=_x_pe(seeder)).uri(),
                "sub/b.bin",
                "--listen",
                "127.0.0.1",
                "--offset",
                "1000",
            ]
        )

        def run() -> int:
            with out.open("wb") as f:
                cat_mi, extra = cat_cmd._from_magnet(args, [])
                assert cat_mi.info_hash == mi.info_hash
                assert extra == [("127.0.0.1", seeder.listen_port)]
                config = ClientConfig(
                    listen_addresses=("127.0.0.1",),
                    default_storage="memory",
                    seed=False,
                )
                (index,) = [
                    i for i, e in enumerate(cat_mi.info.files) if e.path == ("sub", "b.bin")
                ]
                cat = cat_cmd.Cat(config, cat_mi, index, extra, offset=1000)
                return asyncio.run(cat.run(f))

        assert await asyncio.to_thread(run) == 0
        assert out.read_bytes() == (src / "pay" / "sub" / "b.bin").read_bytes()[1000:]
    finally:
        await seeder.close()
