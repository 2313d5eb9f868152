"""Crash and restart: ``torrent download`` stopped half-way resumes without re-downloading.

The downloader is the real CLI in a subprocess; the seeder is one of our
Clients in the test process, throttled so the first run is still going when
we stop it, and its upload counter tells exactly how much the second run
fetched.  The proof of "no verified piece is downloaded again" is that the
second run costs the seeder no more than the bytes of the pieces that were
not verified on disk when the first run died.
"""

from __future__ import annotations

import hashlib
import re
import signal
from pathlib import Path

import pytest
from bitarray import bitarray

from core.formats.metainfo import Metainfo
from core.storage import CompletionStore, Layout
from tests.support.download import (
    Seeder,
    cli_args,
    download_process,
    finish,
    seeding,
    wait_for,
)
from tests.support.engine import tree_digest

MiB = 1 << 20
SIZE = 4 * MiB
PIECE = 64 << 10
FILES = {"r/a.bin": SIZE - 100_000, "r/b.bin": 100_000}


def verified_on_disk(mi: Metainfo, out: Path) -> bitarray:
    """Which pieces the download directory holds intact, by hashing them ourselves."""
    info = mi.info
    data = bytearray()
    for f in info.files:
        path = out.joinpath(info.name, *f.path)
        chunk = path.read_bytes() if path.exists() else b""
        data += chunk[: f.length].ljust(f.length, b"\0")
    bits = bitarray(info.num_pieces, endian="big")
    bits.setall(0)
    for p in range(info.num_pieces):
        start = p * info.piece_length
        piece = bytes(data[start : start + info.piece_size(p)])
        bits[p] = hashlib.sha1(piece).digest() == info.piece_hash_v1(p)
    return bits


def verified_bytes(mi: Metainfo, bits: bitarray) -> int:
    return sum(mi.info.piece_size(p) for p in bits.search(1))


def downloaded_this_run(stderr: str) -> int:
    m = re.search(r"(\d+) bytes downloaded", stderr)
    assert m, stderr
    return int(m.group(1))


async def _first_run_stopped(
    seeder: Seeder, out: Path, state: Path, how: signal.Signals
) -> tuple[int, str]:
    """Start a download, stop it with ``how`` once the seeder sent ~40%, return its exit."""
    async with download_process(*cli_args(seeder, out, state)) as proc:
        await wait_for(lambda: seeder.uploaded() >= SIZE * 2 // 5, 20)
        proc.send_signal(how)
        rc, err = await finish(proc, 10)
    # The seeder must have noticed the disconnect before we count the second run.
    await wait_for(lambda: seeder.torrent.stats().active_peers == 0, 5)
    return rc, err


async def _second_run(seeder: Seeder, out: Path, state: Path, missing: int) -> None:
    """Resume unthrottled; it completes, fetches at most ``missing`` bytes, bytes identical."""
    seeder.client.set_rate_limits(download=None, upload=None)
    before = seeder.uploaded()
    async with download_process(*cli_args(seeder, out, state)) as proc:
        rc, err = await finish(proc, 20)
    assert rc == 0, err
    fetched = seeder.uploaded() - before
    assert 0 < fetched <= missing, (fetched, missing)
    assert 0 < downloaded_this_run(err) <= missing
    assert tree_digest(out) == tree_digest(seeder.src)


@pytest.mark.timeout(40)
async def test_sigkill_half_way_then_resume(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    async with seeding(tmp_path, FILES, PIECE, upload_rate_limit=MiB) as seeder:
        rc, err = await _first_run_stopped(seeder, out, state, signal.SIGKILL)
        assert rc == -signal.SIGKILL, err
        have = verified_on_disk(seeder.metainfo, out)
        assert 0 < have.count() < seeder.metainfo.info.num_pieces, have.count()
        missing = SIZE - verified_bytes(seeder.metainfo, have)
        await _second_run(seeder, out, state, missing)


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    ("how", "status"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
    ids=["SIGINT", "SIGTERM"],
)
async def test_clean_stop_persists_completion(
    tmp_path: Path, how: signal.Signals, status: int
) -> None:
    out, state = tmp_path / "out", tmp_path / "state"
    async with seeding(tmp_path, FILES, PIECE, upload_rate_limit=MiB) as seeder:
        rc, err = await _first_run_stopped(seeder, out, state, how)
        assert rc == status, err
        last = err.splitlines()[-1]
        assert last.startswith("torrent: interrupted" if how == signal.SIGINT else "torrent: term")
        assert "Traceback" not in err
        mi = seeder.metainfo
        have = verified_on_disk(mi, out)
        assert 0 < have.count() < mi.info.num_pieces
        # Every verified piece is recorded, and nothing else: the next start
        # trusts the store and has no piece left to rehash.
        with CompletionStore(state / "completion.sqlite") as store:
            known = store.load(mi.info_hash, Layout.from_info(mi.info, out))
        assert known is not None
        assert known == have
        assert f"{have.count()}/{mi.info.num_pieces} pieces verified and saved" in last
        missing = SIZE - verified_bytes(mi, have)
        await _second_run(seeder, out, state, missing)
