"""The interop matrix: every peer kind we can run here, both directions, one torrent.

Each case moves the same multi-file torrent (files of odd sizes, so most
pieces span two or more files; a directory tree; an empty file) between our
:class:`~core.engine.client.Client` and one real client on 127.0.0.1, and compares
SHA-256 of every file.  Each case has a timeout and stops every process it
started, by pid.  Rates go to the terminal summary (one line per case) and
are wall time from the start of the transfer to the completed, verified
download, so process start-up and tracker rounds are in them: they are for
spotting a regression, not for benchmarks (``bench/`` is for those).

- aria2c (Debian ``aria2``): it cannot be given a peer, so it finds us
  through opentracker; when it seeds we dial it.
- qBittorrent-nox (Debian ``qbittorrent-nox``), driven through its Web API
  with a throw-away profile; it dials us when it downloads, we dial it when
  it seeds.
- libtorrent (PyPI), through ``tests.support.ltharness``.
- Transmission (Debian ``transmission-daemon``), through its RPC; it will not
  dial a loopback peer, so we dial it in both directions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from core.engine.client import Client
from core.engine.torrent import Torrent
from core.formats.create import create_torrent
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from tests.support.aria2 import Aria2, aria2c_binary
from tests.support.engine import loopback_config
from tests.support.interop_report import record
from tests.support.ltharness import (
    LibtorrentPeerFactory,
    lt_peer_factory,
    make_payload,
    sha256_tree,
)
from tests.support.opentracker import OpenTracker, opentracker_binary
from tests.support.qbittorrent import QBittorrent, qbittorrent_binary
from tests.support.transmission import Transmission, transmission_binary

__all__ = ["lt_peer_factory"]

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

KIB = 1 << 10
MIB = 1 << 20
NAME = "matrix"
#: Odd sizes: almost every 256 KiB piece holds the end of one file and the
#: start of the next; the small files share single pieces.
FILES = {
    "a.bin": 5_000_003,
    "sub/b.bin": 3_333_333,
    "sub/deep/c.bin": 7_777_777,
    "d.txt": 12_345,
    "empty.txt": 0,
    "e.bin": 6_000_001,
    **{f"small/s{i:02d}.dat": 10_000 + 3_331 * i for i in range(12)},
}
PIECE = 256 * KIB
TIMEOUT = 150.0


async def off_loop(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking harness call in a thread, so our client keeps running."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def build(tmp: Path, tracker: str | None) -> tuple[Metainfo, Path, Path]:
    """Payload under ``tmp/seed/matrix`` and its .torrent; returns (metainfo, path, seed dir)."""
    seed_dir = tmp / "seed"
    make_payload(seed_dir / NAME, FILES, seed=7)
    mi = create_torrent(seed_dir / NAME, piece_length=PIECE, trackers=[tracker] if tracker else ())
    path = tmp / f"{NAME}.torrent"
    path.write_bytes(mi.to_bytes())
    return mi, path, seed_dir


def assert_same_tree(got_root: Path, want_root: Path, *, empty_files: bool = True) -> None:
    """Same files, same bytes; ``empty_files=False`` for a client that never creates them."""
    got = sha256_tree(got_root)
    want = sha256_tree(want_root)
    if not empty_files:
        want = {k: v for k, v in want.items() if FILES[k]}
    assert sorted(got) == sorted(want), "missing or extra files"
    assert got == want


def total_size() -> int:
    return sum(FILES.values())


@asynccontextmanager
async def our_client(tmp: Path, name: str = "us") -> AsyncIterator[Client]:
    async with Client(loopback_config(tmp, name)) as client:
        yield client


async def wait_announced(t: Torrent, timeout: float = 15.0) -> None:
    """Until a tracker has answered our announce (so the next peer to ask finds us)."""
    async with asyncio.timeout(timeout):
        while not any(s.last_result == "ok" for s in t.trackers()):
            await asyncio.sleep(0.05)


async def wait_complete(t: Torrent) -> None:
    async with asyncio.timeout(TIMEOUT):
        await t.wait_complete()
    assert t.state is TorrentState.SEEDING
    assert t.bytes_completed() == total_size()
    assert t.stats().pieces_dirtied_bad == 0


# -- aria2c ---------------------------------------------------------------------------


@pytest.fixture
def tracker() -> Any:
    opentracker_binary()
    with OpenTracker() as ot:
        yield ot.start()


async def test_us_to_aria2c(tmp_path: Path, tracker: OpenTracker) -> None:
    aria2c_binary()
    mi, torrent_path, seed_dir = build(tmp_path, tracker.http_url)
    tracker.allow(mi.info_hash.wire)
    async with our_client(tmp_path) as client:
        t = await client.add_metainfo(mi, download_dir=seed_dir)
        assert t.state is TorrentState.SEEDING
        await wait_announced(t)
        got = tmp_path / "aria2-dl"
        with Aria2(tmp_path / "aria2") as aria2:
            started = time.monotonic()
            aria2.download(torrent_path, got)
            code = await off_loop(aria2.wait_exit, TIMEOUT)
            elapsed = time.monotonic() - started
            assert code == 0, aria2.log_tail()
        record("us -> aria2c", total_size(), elapsed)
        assert t.stats().bytes_written_data >= total_size()
    assert_same_tree(got / NAME, seed_dir / NAME)


async def test_aria2c_to_us(tmp_path: Path, tracker: OpenTracker) -> None:
    aria2c_binary()
    mi, torrent_path, seed_dir = build(tmp_path, tracker.http_url)
    tracker.allow(mi.info_hash.wire)
    with Aria2(tmp_path / "aria2") as aria2:
        aria2.seed(torrent_path, seed_dir)
        await off_loop(aria2.wait_seeding, 60.0)
        async with our_client(tmp_path) as client:
            started = time.monotonic()
            t = await client.add_metainfo(mi, peers=[("127.0.0.1", aria2.port)])
            await wait_complete(t)
            record("aria2c -> us", total_size(), time.monotonic() - started)
            download = client.config.download_dir
        assert_same_tree(download / NAME, seed_dir / NAME)


# -- qBittorrent-nox --------------------------------------------------------------------


async def test_us_to_qbittorrent(tmp_path: Path) -> None:
    qbittorrent_binary()
    mi, torrent_path, seed_dir = build(tmp_path, None)
    ih = mi.info_hash.hex()
    with QBittorrent(tmp_path / "qbt") as qbt:
        await off_loop(qbt.start)
        got = tmp_path / "qbt-dl"
        got.mkdir()
        async with our_client(tmp_path) as client:
            t = await client.add_metainfo(mi, download_dir=seed_dir)
            assert t.state is TorrentState.SEEDING
            await off_loop(qbt.add_torrent, torrent_path, got)
            # qBittorrent dials a peer given through the Web API only on its next
            # connection round (~5 s): wait until it is ready, then dial it.
            await off_loop(qbt.wait_state, ih, {"stalledDL", "downloading"}, 60.0, "downloading")
            started = time.monotonic()
            t.add_peers([("127.0.0.1", qbt.port)])
            row = await off_loop(qbt.wait_complete, ih, TIMEOUT)
            record(f"us -> qBittorrent {qbt.version}", total_size(), time.monotonic() - started)
            assert row["progress"] == 1
            assert t.stats().bytes_written_data >= total_size()
        qbt.stop()  # flushes its files
    assert_same_tree(got / NAME, seed_dir / NAME)


async def test_qbittorrent_to_us(tmp_path: Path) -> None:
    qbittorrent_binary()
    mi, torrent_path, seed_dir = build(tmp_path, None)
    ih = mi.info_hash.hex()
    with QBittorrent(tmp_path / "qbt") as qbt:
        await off_loop(qbt.start)
        await off_loop(qbt.add_torrent, torrent_path, seed_dir)  # checked, then seeding
        await off_loop(qbt.wait_complete, ih, 60.0)
        async with our_client(tmp_path) as client:
            started = time.monotonic()
            t = await client.add_metainfo(mi, peers=[("127.0.0.1", qbt.port)])
            # Both sides know each other, as in a swarm: right after its check
            # qBittorrent sometimes resets the first connection, and then our
            # redial would wait 30 s while its own dial comes within seconds.
            await off_loop(qbt.add_peer, ih, "127.0.0.1", client.listen_port)
            await wait_complete(t)
            record(f"qBittorrent {qbt.version} -> us", total_size(), time.monotonic() - started)
            download = client.config.download_dir
    assert_same_tree(download / NAME, seed_dir / NAME)


# -- libtorrent ---------------------------------------------------------------------------


async def test_us_to_libtorrent(tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory) -> None:
    mi, torrent_path, seed_dir = build(tmp_path, None)
    got = tmp_path / "lt-dl"
    got.mkdir()
    leecher = await off_loop(lt_peer_factory, "leecher")
    ih = await off_loop(leecher.add_torrent, torrent_path, got)
    async with our_client(tmp_path) as client:
        t = await client.add_metainfo(mi, download_dir=seed_dir)
        assert t.state is TorrentState.SEEDING
        started = time.monotonic()
        await off_loop(leecher.connect, ih, "127.0.0.1", client.listen_port)
        st = await off_loop(leecher.wait_seeding, ih, TIMEOUT)
        record("us -> libtorrent", total_size(), time.monotonic() - started)
        assert st["total_failed_bytes"] == 0 and st["errors"] == []
    assert await off_loop(leecher.stop) == 0  # flushes its store buffer
    assert_same_tree(got / NAME, seed_dir / NAME)


async def test_libtorrent_to_us(tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory) -> None:
    mi, torrent_path, seed_dir = build(tmp_path, None)
    seeder = await off_loop(lt_peer_factory, "seeder")
    await off_loop(seeder.add_torrent, torrent_path, seed_dir, True)
    async with our_client(tmp_path) as client:
        started = time.monotonic()
        t = await client.add_metainfo(mi, peers=[("127.0.0.1", seeder.port)])
        await wait_complete(t)
        record("libtorrent -> us", total_size(), time.monotonic() - started)
        download = client.config.download_dir
    assert_same_tree(download / NAME, seed_dir / NAME)


# -- Transmission ---------------------------------------------------------------------------
#
# Transmission 3.00 does not dial peers on 127.0.0.0/8 (it takes them for
# its own address), so in both directions we dial it; it accepts loopback
# connections and downloads over ours.


async def test_us_to_transmission(tmp_path: Path) -> None:
    transmission_binary()
    mi, torrent_path, seed_dir = build(tmp_path, None)
    got = tmp_path / "tr-dl"
    got.mkdir()
    with Transmission(tmp_path / "tr") as tr:
        await off_loop(tr.start)
        async with our_client(tmp_path) as client:
            t = await client.add_metainfo(mi, download_dir=seed_dir)
            assert t.state is TorrentState.SEEDING
            tid = await off_loop(tr.add_torrent, torrent_path, got)
            await off_loop(tr.wait, tid, False, 60.0, "end of its check")
            started = time.monotonic()
            t.add_peers([("127.0.0.1", tr.port)])
            row = await off_loop(tr.wait, tid, True, TIMEOUT, "completed download")
            record(f"us -> Transmission {tr.version}", total_size(), time.monotonic() - started)
            assert row["percentDone"] == 1
            assert t.stats().bytes_written_data >= total_size()
        tr.stop()  # flushes its files
    # Transmission 3.00 does not create zero-length files.
    assert_same_tree(got / NAME, seed_dir / NAME, empty_files=False)


async def test_transmission_to_us(tmp_path: Path) -> None:
    transmission_binary()
    mi, torrent_path, seed_dir = build(tmp_path, None)
    with Transmission(tmp_path / "tr") as tr:
        await off_loop(tr.start)
        tid = await off_loop(tr.add_torrent, torrent_path, seed_dir)  # verified, then seeding
        await off_loop(tr.wait, tid, True, 60.0, "verified seed")
        async with our_client(tmp_path) as client:
            started = time.monotonic()
            t = await client.add_metainfo(mi, peers=[("127.0.0.1", tr.port)])
            await wait_complete(t)
            record(f"Transmission {tr.version} -> us", total_size(), time.monotonic() - started)
            download = client.config.download_dir
    assert_same_tree(download / NAME, seed_dir / NAME)
