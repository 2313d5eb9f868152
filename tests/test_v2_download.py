"""Pure BitTorrent v2 torrents (BEP 52, no v1 ``pieces``) end to end.

In a pure v2 torrent every file starts on a piece boundary, so the last piece
of each file may be short, in the middle of the piece space; pieces are
verified against the files' merkle trees (SHA-256) and the handshake carries
the v2 info-hash truncated to 20 bytes.  The payload below has files of odd
sizes, an empty file, and files smaller than a piece, so short pieces sit
between full ones.

Covered: our client downloading from another of ours and from a libtorrent
seeder, libtorrent downloading from us (SHA-256 of every file compared),
torrents made by ``core.formats.create`` and by libtorrent, a corrupted piece from a
lying peer failing its merkle check and being fetched again, and a piece
corrupted on disk found by ``verify_data`` and re-downloaded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

import pytest
from aiohttp import web

from core.engine.client import Client
from core.engine.torrent import Torrent
from core.events import PieceHashFailed
from core.formats import bencoding
from core.formats.create import create_torrent
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from core.types import PiecePriority
from tests.support.engine import loopback_config
from tests.support.ltharness import (
    LibtorrentPeer,
    LibtorrentPeerFactory,
    lt_create_torrent,
    lt_peer_factory,
    make_payload,
    sha256_tree,
)
from tests.support.rawpeer import CorruptingSeeder, RawListener

__all__ = ["lt_peer_factory"]  # the fixture is used by name below

KIB = 1 << 10
PL = 32 * KIB
NAME = "v2payload"
FILES = {
    "a/first.bin": 3 * PL + 5_001,  # three full pieces and a short one
    "a/empty.txt": 0,  # no piece at all, must still be created
    "a/tiny.txt": 777,  # smaller than a chunk: a one-chunk piece
    "b/mid.bin": PL + 16 * KIB,  # a short piece of exactly one chunk
    "b/exact.bin": 2 * PL,  # ends on a piece boundary: no short piece
    "c/odd.bin": 20_001,  # smaller than a piece, several chunks
    "z/last.bin": 5 * PL + 1,  # the torrent's last piece holds one byte
}
TOTAL = sum(FILES.values())

Maker = Literal["ours", "lt"]


def build(tmp: Path, maker: Maker) -> tuple[Metainfo, Path, Path]:
    """The payload under ``tmp/seed/v2payload`` and its pure v2 torrent by ``maker``."""
    seed_dir = tmp / "seed"
    make_payload(seed_dir / NAME, FILES, seed=52)
    if maker == "lt":
        data = lt_create_torrent(seed_dir / NAME, PL, "v2")
    else:
        data = create_torrent(seed_dir / NAME, piece_length=PL, version="v2").to_bytes()
    torrent_path = tmp / f"{NAME}.torrent"
    torrent_path.write_bytes(data)
    mi = Metainfo.from_bytes(data)
    check_v2_geometry(mi)
    return mi, torrent_path, seed_dir


def check_v2_geometry(mi: Metainfo) -> None:
    """The torrent really is pure v2 with short pieces between full ones."""
    info = mi.info
    assert info.is_v2 and not info.is_v1 and not info.pieces
    assert mi.info_hash.v1 is None and mi.info_hash.v2 is not None
    assert mi.info_hash.wire == mi.info_hash.v2[:20]
    sizes = [info.piece_size(p) for p in range(info.num_pieces)]
    short = [p for p, s in enumerate(sizes) if s < PL]
    assert len(short) >= 4 and short[-1] == info.num_pieces - 1
    assert short[0] < info.num_pieces - 1  # a short piece in the middle
    assert sum(sizes) == TOTAL
    assert info.length > TOTAL  # the linear space holds virtual padding


def assert_same_tree(got_root: Path, want_root: Path) -> None:
    got = sha256_tree(got_root)
    assert sorted(got) == sorted(FILES), "missing or extra files"
    assert got == sha256_tree(want_root)
    for rel, size in FILES.items():
        assert (got_root / rel).stat().st_size == size


def assert_clean_download(t: Torrent) -> None:
    st = t.stats()
    assert t.state is TorrentState.SEEDING
    assert t.bytes_completed() == TOTAL
    assert t.bytes_missing() == 0
    assert st.pieces_complete == t.num_pieces
    assert st.pieces_dirtied_bad == 0
    assert t.picker.wanted_remaining_bytes() == 0
    assert t.picker.unverified_bytes == 0
    assert all(f.bytes_completed() == f.length for f in t.files)


async def lt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking harness call off the event loop, so our client keeps running."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def start_lt(factory: LibtorrentPeerFactory, name: str) -> LibtorrentPeer:
    peer = await lt(factory, name)
    assert isinstance(peer, LibtorrentPeer)
    return peer


# -- between our own clients -------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("maker", ["ours", "lt"])
async def test_v2_between_our_clients(tmp_path: Path, maker: Maker) -> None:
    mi, _, seed_dir = build(tmp_path, maker)
    async with (
        Client(loopback_config(tmp_path, "seed")) as seeder,
        Client(loopback_config(tmp_path, "leech")) as leecher,
    ):
        st = await seeder.add_metainfo(mi, download_dir=seed_dir)
        assert st.state is TorrentState.SEEDING  # the data checked out against v2 hashes
        assert seeder.torrent(mi.info_hash) is st
        t = await leecher.add_metainfo(mi, peers=[("127.0.0.1", seeder.listen_port)])
        async with asyncio.timeout(40):
            await t.wait_complete()
        assert_clean_download(t)
        assert_same_tree(leecher.config.download_dir / NAME, seed_dir / NAME)
        assert st.stats().bytes_written_data >= TOTAL


# -- against libtorrent ------------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.timeout(60)
@pytest.mark.parametrize("maker", ["lt", "ours"])
async def test_v2_from_libtorrent_seeder(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory, maker: Maker
) -> None:
    mi, torrent_path, seed_dir = build(tmp_path, maker)
    seeder = await start_lt(lt_peer_factory, "seeder")
    ih = await lt(seeder.add_torrent, torrent_path, seed_dir, seed=True)
    assert mi.info_hash.v2 is not None and ih == mi.info_hash.v2.hex()

    async with Client(loopback_config(tmp_path, "us")) as client:
        t = await client.add_metainfo(mi, peers=[("127.0.0.1", seeder.port)])
        async with asyncio.timeout(45):
            await t.wait_complete()
        assert_clean_download(t)
        assert_same_tree(client.config.download_dir / NAME, seed_dir / NAME)
    st = await lt(seeder.status, ih)
    assert st["total_upload"] >= TOTAL
    assert st["errors"] == []


@pytest.mark.interop
@pytest.mark.timeout(60)
@pytest.mark.parametrize(("maker", "dialer"), [("ours", "lt"), ("lt", "us")])
async def test_libtorrent_downloads_v2_from_us(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory, maker: Maker, dialer: str
) -> None:
    mi, torrent_path, seed_dir = build(tmp_path, maker)
    leech_dir = tmp_path / "lt-leech"
    leech_dir.mkdir()
    leecher = await start_lt(lt_peer_factory, "leecher")
    ih = await lt(leecher.add_torrent, torrent_path, leech_dir)

    async with Client(loopback_config(tmp_path, "us")) as client:
        t = await client.add_metainfo(mi, download_dir=seed_dir)
        assert t.state is TorrentState.SEEDING
        if dialer == "us":
            t.add_peers([("127.0.0.1", leecher.port)])
        else:
            # libtorrent dials with the truncated v2 hash; the client must route it.
            await lt(leecher.connect, ih, "127.0.0.1", client.listen_port)
        st = await lt(leecher.wait_seeding, ih, 45)
        assert st["errors"] == []
        assert st["total_wanted"] == TOTAL
        assert st["total_failed_bytes"] == 0
        assert t.stats().bytes_written_data >= TOTAL
    # Closing libtorrent's session flushes its store buffer to the files.
    assert await lt(leecher.stop) == 0
    assert_same_tree(leech_dir / NAME, seed_dir / NAME)


# -- corruption ----------------------------------------------------------------------


def linear_space(mi: Metainfo, root: Path) -> bytes:
    """The torrent's piece space: each file at its v2 offset, zeros in the gaps."""
    info = mi.info
    space = bytearray(info.length)
    for entry in info.payload_files():
        data = (root / NAME / "/".join(entry.path)).read_bytes()
        space[entry.offset : entry.offset + entry.length] = data
    return bytes(space)


@pytest.mark.timeout(60)
async def test_corrupt_v2_piece_fails_and_is_downloaded_again(tmp_path: Path) -> None:
    mi, _, seed_dir = build(tmp_path, "ours")
    info = mi.info
    # The short last piece of b/mid.bin, in the middle of the torrent.
    mid = next(i for i, f in enumerate(info.files) if f.path == ("b", "mid.bin"))
    bad = info.file_pieces(mid)[-1]
    assert info.piece_size(bad) == 16 * KIB and bad < info.num_pieces - 1
    liar = CorruptingSeeder(mi.info_hash.wire, linear_space(mi, seed_dir), PL, bad_pieces={bad})

    async with (
        Client(loopback_config(tmp_path, "honest")) as honest,
        Client(loopback_config(tmp_path, "leech")) as leecher,
        RawListener(liar) as listener,
    ):
        await honest.add_metainfo(mi, download_dir=seed_dir)
        sub = leecher.bus.subscribe(kinds=[PieceHashFailed])
        t = await leecher.add_metainfo(mi, peers=[("127.0.0.1", listener.port)])
        async with asyncio.timeout(20):
            ev = await sub.get()
        assert isinstance(ev, PieceHashFailed)
        assert ev.piece == bad and ev.peers == (("127.0.0.1", listener.port),)
        assert not t.piece(bad).complete
        # Every other piece was fine: the liar's good data was kept.
        async with asyncio.timeout(20):
            while t.picker.num_have < info.num_pieces - 1:
                await asyncio.sleep(0.05)
        assert t.stats().pieces_dirtied_bad >= 1
        t.add_peers([("127.0.0.1", honest.listen_port)])
        async with asyncio.timeout(20):
            await t.wait_complete()
        assert t.piece(bad).complete
        assert t.bytes_completed() == TOTAL
        assert_same_tree(leecher.config.download_dir / NAME, seed_dir / NAME)
        assert not listener.errors


@pytest.mark.timeout(60)
async def test_v2_piece_corrupted_on_disk_is_found_and_fetched_again(tmp_path: Path) -> None:
    mi, _, seed_dir = build(tmp_path, "ours")
    info = mi.info
    odd = next(i for i, f in enumerate(info.files) if f.path == ("c", "odd.bin"))
    (piece,) = info.file_pieces(odd)  # one short piece, several chunks
    async with (
        Client(loopback_config(tmp_path, "seed")) as seeder,
        Client(loopback_config(tmp_path, "leech")) as leecher,
    ):
        await seeder.add_metainfo(mi, download_dir=seed_dir)
        t = await leecher.add_metainfo(mi, peers=[("127.0.0.1", seeder.listen_port)])
        async with asyncio.timeout(30):
            await t.wait_complete()
        path = leecher.config.download_dir / NAME / "c" / "odd.bin"
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF  # the last byte of the file, in the piece's last chunk
        path.write_bytes(data)
        await t.verify_data()
        assert not t.piece(piece).complete
        assert t.piece(piece - 1).complete and t.piece(piece + 1).complete
        odd_file = next(f for f in t.files if f.index == odd)
        assert odd_file.bytes_completed() == 0
        async with asyncio.timeout(30):
            await t.wait_complete()
        assert_same_tree(leecher.config.download_dir / NAME, seed_dir / NAME)


# -- readers -------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_readers_over_a_v2_torrent(tmp_path: Path) -> None:
    """A torrent-wide reader reads the gaps between files as zeros (like BEP 47
    padding); file readers read exactly their file.  Reads drive the download."""
    mi, _, seed_dir = build(tmp_path, "ours")
    async with (
        Client(loopback_config(tmp_path, "seed")) as seeder,
        Client(loopback_config(tmp_path, "leech")) as leecher,
    ):
        await seeder.add_metainfo(mi, download_dir=seed_dir)
        t = await leecher.add_metainfo(mi, peers=[("127.0.0.1", seeder.listen_port)])
        for f in t.files:
            f.set_priority(PiecePriority.NONE)  # only the readers ask for data
        async with asyncio.timeout(30):
            for f in t.files:
                async with f.new_reader() as fr:
                    got = await fr.read()
                assert got == (seed_dir / NAME / "/".join(f.path.split("/")[1:])).read_bytes()
            async with t.new_reader() as r:
                r.seek(PL // 2)
                whole = await r.read()
        assert whole == linear_space(mi, seed_dir)[PL // 2 :]
        assert len(whole) == mi.info.length - PL // 2


# -- the TUI's priority preview ----------------------------------------------------------


@pytest.mark.timeout(30)
async def test_tui_priority_preview_counts_short_v2_pieces(tmp_path: Path) -> None:
    from tui.engine import RealEngine

    mi, torrent_path, _ = build(tmp_path, "ours")
    engine = RealEngine(loopback_config(tmp_path, "tui"), session=None)
    try:
        async with asyncio.timeout(20):
            await engine.start()
            ih = await engine.add(str(torrent_path))
        details = engine.details(ih)
        assert details is not None
        by_path = {f.path: f.index for f in details.files}
        # One short piece of 20,001 bytes, not a full 32 KiB one.
        assert engine.preview_priorities(ih, [by_path["c/odd.bin"]], PiecePriority.NONE) == (
            1,
            20_001,
        )
        # A full piece and a short one of 16 KiB, in the middle of the torrent.
        assert engine.preview_priorities(ih, [by_path["b/mid.bin"]], PiecePriority.NONE) == (
            2,
            PL + 16 * KIB,
        )
        everything = [by_path[p] for p in by_path]
        assert engine.preview_priorities(ih, everything, PiecePriority.NONE) == (
            mi.info.num_pieces,
            TOTAL,
        )
    finally:
        await engine.close()


# -- magnets -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_v2_magnet_whose_files_fit_in_one_piece_each(tmp_path: Path) -> None:
    """Without piece layers (not in the info dict) a v2 magnet works only when every
    file is one piece, whose hash is the file's pieces root; those pieces are short
    and sit in the middle of the piece space.  Bigger files get a clear error
    (tests/test_magnet_engine.py): BEP 52 hash requests are not implemented."""
    from core.formats.magnet import Magnet

    files = {"small/a.bin": PL - 1, "small/b.bin": 777, "small/c": 0, "small/d.bin": PL}
    seed_dir = tmp_path / "seed"
    make_payload(seed_dir, files, seed=7)
    mi = create_torrent(seed_dir / "small", piece_length=PL, version="v2")
    assert not mi.info.pieces and mi.info.num_pieces == 3
    assert [mi.info.piece_size(p) for p in range(3)] == [PL - 1, 777, PL]
    async with (
        Client(loopback_config(tmp_path, "seed")) as seeder,
        Client(loopback_config(tmp_path, "leech")) as leecher,
    ):
        await seeder.add_metainfo(mi, download_dir=seed_dir)
        magnet = Magnet(mi.info_hash, peers=(f"127.0.0.1:{seeder.listen_port}",))
        t = await leecher.add_magnet(magnet)
        async with asyncio.timeout(30):
            await t.wait_info()
            await t.wait_complete()
        assert t.picker.wanted_remaining_bytes() == 0
        assert t.bytes_completed() == sum(files.values())
        got = sha256_tree(leecher.config.download_dir / "small")
        assert got == sha256_tree(seed_dir / "small")
        assert sorted(got) == sorted(rel.removeprefix("small/") for rel in files)


# -- trackers --------------------------------------------------------------------------


class MiniTracker:
    """An HTTP tracker that keeps each announce's parameters as raw bytes."""

    def __init__(self) -> None:
        self.requests: list[dict[str, bytes]] = []
        self.peers: list[tuple[str, int]] = []
        self.changed = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/announce"

    async def _announce(self, request: web.Request) -> web.Response:
        query = request.raw_path.partition("?")[2]
        raw = parse_qs(query, keep_blank_values=True, encoding="latin-1")
        self.requests.append({k: v[0].encode("latin-1") for k, v in raw.items()})
        self.changed.set()
        peers = b"".join(socket.inet_aton(h) + p.to_bytes(2, "big") for h, p in self.peers)
        return web.Response(body=bencoding.encode({b"interval": 1800, b"peers": peers}))

    async def __aenter__(self) -> MiniTracker:
        app = web.Application()
        app.router.add_get("/announce", self._announce)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def wait_for(self, pred: Callable[[], bool]) -> None:
        async with asyncio.timeout(20):
            while not pred():
                self.changed.clear()
                await self.changed.wait()


@pytest.mark.timeout(60)
async def test_v2_found_through_a_tracker_announces_the_truncated_sha256(
    tmp_path: Path,
) -> None:
    """BEP 52: trackers and the handshake see the v2 info-hash cut to 20 bytes."""
    mi, _, seed_dir = build(tmp_path, "ours")
    async with MiniTracker() as tracker:
        mi = dataclasses.replace(mi, announce_list=((tracker.url,),))
        assert mi.info_hash.v2 is not None
        wire = mi.info_hash.v2[:20]
        async with (
            Client(loopback_config(tmp_path, "seed")) as seeder,
            Client(loopback_config(tmp_path, "leech")) as leecher,
        ):
            await seeder.add_metainfo(mi, download_dir=seed_dir)
            await tracker.wait_for(lambda: len(tracker.requests) == 1)
            tracker.peers = [("127.0.0.1", seeder.listen_port)]
            t = await leecher.add_metainfo(mi)  # no peers: only the tracker knows the seeder
            async with asyncio.timeout(30):
                await t.wait_complete()
            assert_same_tree(leecher.config.download_dir / NAME, seed_dir / NAME)
            port = str(leecher.listen_port).encode()
            await tracker.wait_for(
                lambda: any(
                    r["port"] == port and r.get("event") == b"completed" for r in tracker.requests
                )
            )
        assert {r["info_hash"] for r in tracker.requests} == {wire}
        leech = [r for r in tracker.requests if r["port"] == port]
        assert leech[0]["event"] == b"started"
        assert int(leech[0]["left"]) == TOTAL  # the payload, not the padded piece space


# -- restart -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_v2_download_survives_a_restart(tmp_path: Path) -> None:
    """The completion store and the on-disk check agree with v2 geometry after a restart."""
    mi, _, seed_dir = build(tmp_path, "ours")
    async with Client(loopback_config(tmp_path, "seed")) as seeder:
        await seeder.add_metainfo(mi, download_dir=seed_dir)
        async with Client(loopback_config(tmp_path, "leech")) as leecher:
            t = await leecher.add_metainfo(mi, peers=[("127.0.0.1", seeder.listen_port)])
            async with asyncio.timeout(30):
                await t.wait_complete()
    for verify in (False, True):
        async with Client(loopback_config(tmp_path, "leech")) as again:
            t = await again.add_metainfo(mi, verify=verify)  # no peers at all
            assert t.state is TorrentState.SEEDING
            assert t.bytes_completed() == TOTAL
            assert t.picker.num_have == mi.info.num_pieces
