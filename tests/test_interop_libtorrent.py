"""Interop: our engine against a real libtorrent (the PyPI wheel) on 127.0.0.1.

Loopback tests between our own clients cannot catch a misreading of the
protocol that both ends share; libtorrent is the reference. Each test runs
libtorrent in its own process (tests/support/ltharness.py) and checks the
SHA-256 of every downloaded file, so a transfer that "finishes" with wrong
or missing bytes (the empty file included) fails.

Payloads are multi-file on purpose: nested directories, an empty file, a
file smaller than any piece, and pieces spanning several files, because file
boundaries are where offset arithmetic goes wrong. Torrents are made both by
libtorrent and by ``core.formats.create`` so neither side's metainfo is trusted
alone; piece sizes 16 KiB, 256 KiB and 4 MiB cover the one-block piece, the
common size, and a piece larger than the read cache's usual entry.

Transfer rates are printed (run with ``-s``) but never asserted: the machine
is shared.

Pure v2 torrents (each file's last piece short, merkle verification) are
tested in tests/test_v2_download.py; here v1 and hybrid, where hybrids are
fetched over the v1 handshake and verified with SHA-1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from core.engine.client import Client
from core.engine.torrent import Torrent
from core.events import PeerConnected
from core.formats.create import create_torrent
from core.formats.info import Info
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from tests.support.engine import loopback_config
from tests.support.ltharness import (
    Encryption,
    LibtorrentPeer,
    LibtorrentPeerFactory,
    Status,
    TorrentVersion,
    lt_create_torrent,
    lt_peer_factory,
    make_payload,
    sha256_tree,
)

__all__ = ["lt_peer_factory"]  # the fixture is used by name below

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

KIB = 1 << 10
MIB = 1 << 20
NAME = "payload"
Maker = Literal["lt", "ours"]
Dialer = Literal["lt", "us"]


def payload(big: int) -> dict[str, int]:
    """A multi-file payload named ``payload/``; ``big`` sets its bulk.

    Sizes are odd so that files start and end inside pieces of every tested
    piece length; the tiny and empty files sit between large ones.
    """
    return {
        "docs/readme.txt": 1_000,  # smaller than any piece
        "docs/empty.txt": 0,  # must still appear, with zero bytes
        "media/season 1/e01.bin": big // 2 + 12_345,
        "media/season 1/deep/er/e02.bin": big // 4 + 77,
        "media/poster.jpg": 70_001,
        "tail.bin": big // 4 + 3,
    }


def check_geometry(info: Info, files: dict[str, int]) -> None:
    """The payload really has what the test claims to cover."""
    assert sorted("/".join(f.path) for f in info.payload_files()) == sorted(files)
    assert any(0 < f.length < info.piece_length for f in info.payload_files())
    assert any(f.length == 0 for f in info.payload_files())
    crossing = [p for p in range(info.num_pieces) if len(info.files_in_piece(p)) > 1]
    assert crossing, "no piece spans a file boundary"


def build(
    tmp: Path, files: dict[str, int], piece_length: int, maker: Maker, version: TorrentVersion
) -> tuple[Metainfo, Path, Path]:
    """Payload under ``tmp/seed/payload`` and its torrent by ``maker``.

    Returns the parsed torrent, the .torrent path, and the seed directory
    (the parent of ``payload/``, i.e. the save path for both clients).
    """
    seed_dir = tmp / "seed"
    make_payload(seed_dir / NAME, files, seed=piece_length)
    if maker == "lt":
        data = lt_create_torrent(seed_dir / NAME, piece_length, version)
    else:
        data = create_torrent(
            seed_dir / NAME, piece_length=piece_length, version=version
        ).to_bytes()
    torrent_path = tmp / f"{NAME}.torrent"
    torrent_path.write_bytes(data)
    mi = Metainfo.from_bytes(data)
    assert mi.info.piece_length == piece_length
    check_geometry(mi.info, files)
    return mi, torrent_path, seed_dir


def assert_same_tree(got_root: Path, want_root: Path, files: dict[str, int]) -> None:
    got = sha256_tree(got_root)
    assert sorted(got) == sorted(files), "missing or extra files"
    assert got == sha256_tree(want_root)
    for rel, size in files.items():
        assert (got_root / rel).stat().st_size == size


def report(what: str, nbytes: int, seconds: float) -> None:
    rate = nbytes / seconds / MIB if seconds > 0 else float("inf")
    print(f"\n{what}: {nbytes / MIB:.1f} MiB in {seconds:.2f} s = {rate:.1f} MiB/s")


async def lt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking harness call off the event loop, so our client keeps running."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def start_lt(factory: LibtorrentPeerFactory, name: str, **kwargs: Any) -> LibtorrentPeer:
    peer = await lt(factory, name, **kwargs)
    assert isinstance(peer, LibtorrentPeer)
    return peer


async def stop_lt(peer: LibtorrentPeer) -> None:
    """Stop libtorrent before reading its files.

    libtorrent 2 hashes blocks from its store buffer and may report a torrent
    finished before every block reached the file; closing the session
    flushes them.
    """
    assert await lt(peer.stop) == 0


def assert_clean_download(t: Torrent, total: int) -> None:
    st = t.stats()
    assert t.state is TorrentState.SEEDING
    assert t.bytes_completed() == total
    assert st.pieces_complete == t.num_pieces
    assert st.pieces_dirtied_bad == 0
    assert st.bytes_read_useful_data >= total
    runs = t.piece_state_runs()
    assert sum(r.length for r in runs) == t.num_pieces
    assert all(r.state.complete for r in runs)


def assert_lt_complete(st: Status, total: int) -> None:
    assert st["is_seeding"], st
    assert st["errors"] == []
    assert st["total_wanted"] == total
    assert st["total_failed_bytes"] == 0
    assert st["total_download"] >= total


# -- (a) we download from a libtorrent seeder ------------------------------------------


@pytest.mark.parametrize(
    ("maker", "piece_length", "big", "encryption", "dialer"),
    [
        # libtorrent's own torrent, one block per piece; libtorrent dials us
        # with MSE first ("enabled" is its default) and must fall back.
        ("lt", 16 * KIB, 3 * MIB, "enabled", "lt"),
        # our torrent, pieces larger than most files; we dial.
        ("ours", 4 * MIB, 24 * MIB, "plaintext", "us"),
    ],
)
async def test_we_download_from_libtorrent(
    tmp_path: Path,
    lt_peer_factory: LibtorrentPeerFactory,
    maker: Maker,
    piece_length: int,
    big: int,
    encryption: Encryption,
    dialer: Dialer,
) -> None:
    files = payload(big)
    total = sum(files.values())
    mi, torrent_path, seed_dir = build(tmp_path, files, piece_length, maker, "v1")
    seeder = await start_lt(lt_peer_factory, "seeder", encryption=encryption)
    ih = await lt(seeder.add_torrent, torrent_path, seed_dir, seed=True)
    assert ih == mi.info_hash.hex()

    async with Client(loopback_config(tmp_path, "us")) as client:
        started = time.monotonic()
        t = await client.add_metainfo(mi)
        if dialer == "us":
            t.add_peers([("127.0.0.1", seeder.port)])
        else:
            await lt(seeder.connect, ih, "127.0.0.1", client.listen_port)
        async with asyncio.timeout(45):
            await t.wait_complete()
        report(
            f"libtorrent -> us ({maker} torrent, {piece_length // KIB} KiB pieces)",
            total,
            time.monotonic() - started,
        )
        assert_clean_download(t, total)
        assert_same_tree(client.config.download_dir / NAME, seed_dir / NAME, files)

    st = await lt(seeder.status, ih)
    assert st["total_upload"] >= total
    assert st["errors"] == []


async def test_hybrid_torrent_from_libtorrent(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    # A libtorrent hybrid carries BEP 47 padding files; we speak the v1
    # handshake, verify with SHA-1, and never create the padding files.
    files = payload(4 * MIB)
    total = sum(files.values())
    mi, torrent_path, seed_dir = build(tmp_path, files, 256 * KIB, "lt", "hybrid")
    assert mi.info.is_hybrid
    assert mi.info_hash.v1 is not None and mi.info_hash.v2 is not None
    assert any(f.is_padding for f in mi.info.files)
    seeder = await start_lt(lt_peer_factory, "seeder")
    ih = await lt(seeder.add_torrent, torrent_path, seed_dir, seed=True)
    assert ih == mi.info_hash.v1.hex()

    async with Client(loopback_config(tmp_path, "us")) as client:
        sub = client.bus.subscribe(kinds=[PeerConnected])
        started = time.monotonic()
        t = await client.add_metainfo(mi, peers=[("127.0.0.1", seeder.port)])
        async with asyncio.timeout(45):
            await t.wait_complete()
        report("libtorrent -> us (hybrid torrent)", total, time.monotonic() - started)
        assert_clean_download(t, total)
        download = client.config.download_dir
        assert_same_tree(download / NAME, seed_dir / NAME, files)
        assert not (download / NAME / ".pad").exists()
        ev = sub.get_nowait()
        assert isinstance(ev, PeerConnected)
        assert ev.info_hash == mi.info_hash
        assert ev.address == ("127.0.0.1", seeder.port)
        assert "libtorrent" in ev.client.lower()


# -- (b) libtorrent downloads from us --------------------------------------------------


@pytest.mark.parametrize(
    ("maker", "piece_length", "big", "encryption", "dialer", "version"),
    [
        # our torrent; libtorrent in its default encryption mode dials us.
        ("ours", 256 * KIB, 8 * MIB, "enabled", "lt", "v1"),
        # libtorrent's torrent with 16 KiB pieces; we dial.
        ("lt", 16 * KIB, 3 * MIB, "plaintext", "us", "v1"),
        # our hybrid (with padding files) served over the v1 handshake.
        ("ours", 256 * KIB, 4 * MIB, "plaintext", "lt", "hybrid"),
    ],
)
async def test_libtorrent_downloads_from_us(
    tmp_path: Path,
    lt_peer_factory: LibtorrentPeerFactory,
    maker: Maker,
    piece_length: int,
    big: int,
    encryption: Encryption,
    dialer: Dialer,
    version: TorrentVersion,
) -> None:
    files = payload(big)
    total = sum(files.values())
    mi, torrent_path, seed_dir = build(tmp_path, files, piece_length, maker, version)
    leech_dir = tmp_path / "lt-leech"
    leech_dir.mkdir()
    leecher = await start_lt(lt_peer_factory, "leecher", encryption=encryption)
    ih = await lt(leecher.add_torrent, torrent_path, leech_dir)

    async with Client(loopback_config(tmp_path, "us")) as client:
        t = await client.add_metainfo(mi, download_dir=seed_dir)
        assert t.state is TorrentState.SEEDING
        started = time.monotonic()
        if dialer == "us":
            t.add_peers([("127.0.0.1", leecher.port)])
        else:
            await lt(leecher.connect, ih, "127.0.0.1", client.listen_port)
        st = await lt(leecher.wait_seeding, ih, 45)
        report(
            f"us -> libtorrent ({maker} {version}, {piece_length // KIB} KiB pieces, "
            f"lt encryption {encryption})",
            total,
            time.monotonic() - started,
        )
        assert_lt_complete(st, total)
        assert t.stats().bytes_written_data >= total
    await stop_lt(leecher)
    assert_same_tree(leech_dir / NAME, seed_dir / NAME, files)

    if dialer == "lt" and encryption == "enabled":
        # libtorrent tried MSE first; we answer only plaintext, so it retried.
        attempts = leecher.events("peer_connect")
        print(f"libtorrent connection attempts with encryption enabled: {len(attempts)}")
        assert attempts


# -- (c) mixed swarms -------------------------------------------------------------------


async def test_swarm_slow_libtorrent_seeder_and_two_of_ours(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    # The libtorrent seeder is throttled, so our two leechers finish sooner by
    # trading pieces with each other than by waiting for it: both must upload.
    files = payload(6 * MIB)
    total = sum(files.values())
    lt_rate = 3 * MIB
    mi, torrent_path, seed_dir = build(tmp_path, files, 64 * KIB, "ours", "v1")
    seeder = await start_lt(lt_peer_factory, "seeder", upload_rate=lt_rate)
    ih = await lt(seeder.add_torrent, torrent_path, seed_dir, seed=True)

    clients = [Client(loopback_config(tmp_path, f"us{i}")) for i in range(2)]
    try:
        for c in clients:
            await c.start()
        started = time.monotonic()
        torrents = [await c.add_metainfo(mi) for c in clients]
        for t, other in zip(torrents, reversed(clients), strict=True):
            t.add_peers([("127.0.0.1", seeder.port), ("127.0.0.1", other.listen_port)])
        async with asyncio.timeout(45):
            await asyncio.gather(*(t.wait_complete() for t in torrents))
        elapsed = time.monotonic() - started
        lt_sent = (await lt(seeder.status, ih))["total_upload"]
        report("slow libtorrent + two of ours, both leechers", 2 * total, elapsed)
        uploaded = [t.stats().bytes_written_data for t in torrents]
        print(
            f"libtorrent sent {lt_sent / MIB:.1f} MiB; ours sent each other "
            f"{[round(u / MIB, 1) for u in uploaded]} MiB"
        )
        for c, t in zip(clients, torrents, strict=True):
            assert_clean_download(t, total)
            assert_same_tree(c.config.download_dir / NAME, seed_dir / NAME, files)
        # Our uploads can only have gone to the other one of ours.
        assert all(u > 0 for u in uploaded), uploaded
        assert sum(uploaded) + lt_sent >= 2 * total
        assert lt_sent < 2 * total
    finally:
        for c in clients:
            await c.close()


async def test_swarm_our_seeder_libtorrent_and_our_leecher(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    # Our seeder is throttled; libtorrent and our leecher are both connected to
    # it and to each other, so pieces flow both ways between them.
    files = payload(6 * MIB)
    total = sum(files.values())
    mi, torrent_path, seed_dir = build(tmp_path, files, 256 * KIB, "lt", "v1")
    lt_dir = tmp_path / "lt-leech"
    lt_dir.mkdir()
    lt_leecher = await start_lt(lt_peer_factory, "leecher")
    ih = await lt(lt_leecher.add_torrent, torrent_path, lt_dir)

    seeder = Client(loopback_config(tmp_path, "seed", upload_rate_limit=3 * MIB))
    leecher = Client(loopback_config(tmp_path, "leech"))
    try:
        await seeder.start()
        await leecher.start()
        ts = await seeder.add_metainfo(mi, download_dir=seed_dir)
        assert ts.state is TorrentState.SEEDING
        started = time.monotonic()
        tl = await leecher.add_metainfo(
            mi, peers=[("127.0.0.1", seeder.listen_port), ("127.0.0.1", lt_leecher.port)]
        )
        await lt(lt_leecher.connect, ih, "127.0.0.1", seeder.listen_port)
        async with asyncio.timeout(45):
            _, st = await asyncio.gather(tl.wait_complete(), lt(lt_leecher.wait_seeding, ih, 45))
        report(
            "our throttled seeder + libtorrent + our leecher, both leechers",
            2 * total,
            time.monotonic() - started,
        )
        assert_clean_download(tl, total)
        assert_lt_complete(st, total)
        assert_same_tree(leecher.config.download_dir / NAME, seed_dir / NAME, files)
        seeder_sent = ts.stats().bytes_written_data
        ours_to_lt = tl.stats().bytes_written_data
        lt_to_ours = st["total_upload"]
        print(
            f"seeder sent {seeder_sent / MIB:.1f} MiB, our leecher -> libtorrent "
            f"{ours_to_lt / MIB:.1f} MiB, libtorrent -> our leecher {lt_to_ours / MIB:.1f} MiB"
        )
        assert ours_to_lt > 0
        assert lt_to_ours > 0
        assert seeder_sent < 2 * total
    finally:
        await leecher.close()
        await seeder.close()
    await stop_lt(lt_leecher)
    assert_same_tree(lt_dir / NAME, seed_dir / NAME, files)
