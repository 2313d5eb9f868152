"""A full or read-only download directory: the error state, not a loop.

Engine level: the torrent stops in ``TorrentState.ERROR`` with the OS error
text, stops asking for data (the seeder's upload counter goes flat), and
``resume()`` after making space retries and completes with the right bytes.
CLI level: ``torrent download`` exits 1 with one line naming the error.

A tiny tmpfs (needs root; skipped otherwise) gives a real ENOSPC/EROFS; a
file-size limit (RLIMIT_FSIZE with SIGXFSZ ignored, giving EFBIG) is the
portable variant and runs everywhere.
"""

from __future__ import annotations

import asyncio
import resource
import signal
from pathlib import Path

import pytest

from core.engine.client import Client
from core.engine.torrent import Torrent
from core.errors import TorrentError
from core.stats import TorrentState
from tests.support.download import (
    cli_args,
    download_process,
    finish,
    remount,
    seeding,
    tmpfs,
    wait_for,
)
from tests.support.engine import loopback_config, tree_digest

MiB = 1 << 20


def _status(t: Torrent) -> tuple[TorrentState, str | None]:
    """State and error read through a call, so mypy does not keep an earlier narrowing."""
    return t.state, t.error


async def _settled(counter: object, quiet: float, timeout: float) -> int:
    """Wait until ``counter()`` has not changed for ``quiet`` seconds; its value."""
    assert callable(counter)
    async with asyncio.timeout(timeout):
        value = counter()
        since = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(0.1)
            now = asyncio.get_running_loop().time()
            new = counter()
            if new != value:
                value, since = new, now
            elif now - since >= quiet:
                return int(value)


@pytest.mark.timeout(40)
async def test_full_disk_goes_to_error_stops_requesting_and_resumes(tmp_path: Path) -> None:
    size = 6 * MiB
    with tmpfs(tmp_path / "small", "1m") as small:
        async with seeding(tmp_path, {"big.bin": size}, 65536, upload_rate_limit=4 * MiB) as seeder:
            cfg = loopback_config(tmp_path, "leech", download_dir=small)
            async with Client(cfg) as leech:
                t = await leech.add_metainfo(
                    seeder.metainfo, peers=[("127.0.0.1", seeder.client.listen_port)]
                )
                async with asyncio.timeout(15):
                    with pytest.raises(TorrentError, match="No space left on device"):
                        await t.wait_complete()
                assert t.state is TorrentState.ERROR
                assert t.error is not None and "No space left on device" in t.error
                # Requests already queued at the seeder may still arrive; after that
                # nothing: a loop would keep the counter growing until the timeout.
                sent = await _settled(seeder.uploaded, quiet=1.0, timeout=6)
                assert sent < size, "the whole torrent was sent although nothing could be written"
                await asyncio.sleep(1.0)
                assert seeder.uploaded() == sent
                assert t.state is TorrentState.ERROR
                # Make space and retry: the download completes with the right bytes.
                remount(small, "size=16m")
                seeder.client.set_rate_limits(download=None, upload=None)
                t.resume()
                assert _status(t) == (TorrentState.DOWNLOADING, None)
                async with asyncio.timeout(15):
                    await t.wait_complete()
                assert tree_digest(small) == tree_digest(seeder.src)
                assert t.stats().pieces_dirtied_bad == 0
                assert not leech.banned


@pytest.mark.timeout(30)
async def test_read_only_directory_goes_to_error(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "4m", read_only=True) as ro:
        files = {"d/a.bin": 300_000, "d/b.bin": 5}
        async with (
            seeding(tmp_path, files, 32768) as seeder,
            Client(loopback_config(tmp_path, "leech", download_dir=ro)) as leech,
        ):
            t = await leech.add_metainfo(
                seeder.metainfo, peers=[("127.0.0.1", seeder.client.listen_port)]
            )
            async with asyncio.timeout(15):
                with pytest.raises(TorrentError, match="Read-only file system"):
                    await t.wait_complete()
            assert t.state is TorrentState.ERROR
            assert t.error is not None and "Read-only file system" in t.error
            # resume() without a fix fails again, into the same state (no crash, no loop).
            t.resume()
            await wait_for(lambda: t.state is TorrentState.ERROR, 10)
            sent = await _settled(seeder.uploaded, quiet=1.0, timeout=6)
            assert sent <= seeder.metainfo.info.total_size


@pytest.mark.timeout(30)
async def test_cli_full_tmpfs_exits_1_with_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "1m") as small:
        async with seeding(tmp_path, {"big.bin": 3 * MiB}, 65536) as seeder:
            args = cli_args(seeder, small, tmp_path / "state", "-q")
            async with download_process(*args) as proc:
                rc, err = await finish(proc, 20)
    assert rc == 1, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("torrent: error: big.bin: ")
    assert "No space left on device" in lines[0]
    assert "Traceback" not in err


def _limit_file_size() -> None:
    """In the child: writes past 1 MiB fail with EFBIG instead of killing the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (MiB, MiB))


@pytest.mark.timeout(30)
async def test_cli_file_size_limit_exits_1_with_one_line(tmp_path: Path) -> None:
    async with seeding(tmp_path, {"big.bin": 3 * MiB}, 65536) as seeder:
        out = tmp_path / "out"
        args = cli_args(seeder, out, tmp_path / "state", "-q")
        async with download_process(*args, preexec_fn=_limit_file_size) as proc:
            rc, err = await finish(proc, 20)
    assert rc == 1, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("torrent: error: big.bin: ")
    assert "File too large" in lines[0]
    assert "Traceback" not in err
