"""Readers: exact bytes at any offset while downloading, seek/tell, waits, failures.

The interop tests read from a torrent seeded by a real libtorrent (its own
process on 127.0.0.1) with every file at priority NONE, so only the readers'
windows decide what is fetched; the expected bytes are the seeder's files
laid end to end (padding as zeros), so any offset arithmetic slip across a
piece or file boundary shows.  The rest uses one of our own clients as the
seeder, which is faster and lets a test hold a piece in its hash check.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.engine.client import Client
from core.engine.reader import (
    MAX_READAHEAD,
    MIN_READAHEAD,
    ReadaheadContext,
    Reader,
    default_readahead,
)
from core.engine.streaming import ReaderWindows, Window
from core.engine.torrent import Torrent
from core.errors import TorrentError
from core.formats.create import create_torrent
from core.formats.metainfo import Metainfo
from core.types import PiecePriority
from tests.support.engine import loopback_config, make_torrent
from tests.support.ltharness import (
    LibtorrentPeer,
    LibtorrentPeerFactory,
    lt_peer_factory,
    make_payload,
)

__all__ = ["lt_peer_factory"]

KIB = 1 << 10
MIB = 1 << 20
NAME = "payload"


def linear_bytes(mi: Metainfo, root: Path) -> bytes:
    """The torrent's piece space: every file's bytes in order, padding as zeros."""
    parts = []
    for entry in mi.info.files:
        if entry.is_padding:
            parts.append(bytes(entry.length))
        else:
            parts.append((root / mi.info.name / Path(*entry.path)).read_bytes())
    return b"".join(parts)


async def read_exactly(r: Reader, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = await r.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def lt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


def nothing_wanted(t: Torrent) -> None:
    for f in t.files:
        f.set_priority(PiecePriority.NONE)


# -- against libtorrent ---------------------------------------------------------


LT_FILES = {
    "a.bin": 300_001,
    "dir/b.bin": 17,  # a file inside one piece
    "dir/c.bin": 700_003,
    "d.bin": 450_000,
}
LT_PIECE = 32 * KIB


async def lt_seeder(
    tmp: Path, factory: LibtorrentPeerFactory, **kwargs: Any
) -> tuple[Metainfo, Path, LibtorrentPeer]:
    seed_dir = tmp / "seed"
    make_payload(seed_dir / NAME, LT_FILES, seed=7)
    mi = create_torrent(seed_dir / NAME, piece_length=LT_PIECE)
    torrent_path = tmp / "p.torrent"
    torrent_path.write_bytes(mi.to_bytes())
    seeder = await lt(factory, "seeder", **kwargs)
    await lt(seeder.add_torrent, torrent_path, seed_dir, seed=True)
    return mi, seed_dir, seeder


@pytest.mark.interop
@pytest.mark.timeout(60)
async def test_random_offsets_match_libtorrent_seed(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    mi, seed_dir, seeder = await lt_seeder(tmp_path, lt_peer_factory)
    blob = linear_bytes(mi, seed_dir)
    info = mi.info
    # Ranges that straddle piece boundaries and file boundaries on purpose.
    edges = [(k * LT_PIECE - 5, 10) for k in (1, 7, 20)]
    edges += [(e.offset - 3, 40) for e in info.files if e.offset > 3]
    edges += [(0, 1), (len(blob) - 1, 1), (len(blob) - 100, 1000)]
    rng = random.Random(5)
    ranges = edges + [(rng.randrange(len(blob)), rng.randrange(1, 3 * LT_PIECE)) for _ in range(25)]
    async with Client(loopback_config(tmp_path, "us")) as client:
        t = await client.add_metainfo(mi)
        nothing_wanted(t)
        t.add_peers([("127.0.0.1", seeder.port)])
        async with asyncio.timeout(40):
            async with t.new_reader(readahead=64 * KIB) as r:
                for off, n in ranges:
                    assert r.seek(off) == off
                    got = await read_exactly(r, n)
                    assert got == blob[off : off + n], (off, n)
                    assert r.tell() == off + len(got)
            # File readers see file-relative offsets and stop at the file's end.
            for f in t.files:
                entry = info.files[f.index]
                async with f.new_reader(responsive=True) as fr:
                    for _ in range(4):
                        off = rng.randrange(f.length)
                        fr.seek(off)
                        got = await read_exactly(fr, 70_000)
                        want = blob[entry.offset + off : entry.offset + min(f.length, off + 70_000)]
                        assert got == want
                    fr.seek(-1, os.SEEK_END)
                    assert len(await fr.read(10)) == 1  # never beyond the file's end
                    assert await fr.read(10) == b""
        # Reading drove the download: with everything at NONE, only windows were fetched.
        assert t.stats().pieces_dirtied_bad == 0


@pytest.mark.interop
@pytest.mark.timeout(60)
async def test_two_readers_in_different_files_both_progress(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    # A slow seeder, so the two readers must share it rather than run one after the other.
    mi, seed_dir, seeder = await lt_seeder(tmp_path, lt_peer_factory, upload_rate=600 * KIB)
    blob = linear_bytes(mi, seed_dir)
    async with Client(loopback_config(tmp_path, "us")) as client:
        t = await client.add_metainfo(mi)
        nothing_wanted(t)
        t.add_peers([("127.0.0.1", seeder.port)])
        a = next(f for f in t.files if f.path.endswith("a.bin"))
        c = next(f for f in t.files if f.path.endswith("c.bin"))
        progress = {a.path: 0, c.path: 0}
        finished: dict[str, dict[str, int]] = {}

        async def consume(f: Any) -> bytes:
            out = bytearray()
            async with f.new_reader(readahead=LT_PIECE) as r:
                while chunk := await r.read(16 * KIB):
                    out += chunk
                    progress[f.path] = len(out)
            finished[f.path] = dict(progress)
            return bytes(out)

        async with asyncio.timeout(40):
            got_a, got_c = await asyncio.gather(consume(a), consume(c))
        assert got_a == blob[a.offset : a.offset + a.length]
        assert got_c == blob[c.offset : c.offset + c.length]
        # When the smaller file was done, the other had made real progress too.
        first_done = finished[a.path]
        assert first_done[c.path] >= a.length // 3, first_done


# -- loopback: semantics --------------------------------------------------------

PL = 32 * KIB
FILES = {"t/x.bin": PL * 6 + 1000, "t/y.bin": PL * 4 - 1000}


async def seeded_pair(
    tmp: Path, stack: Any, *, upload_rate: int | None = None
) -> tuple[Torrent, Torrent, bytes]:
    """Our seeder and a leecher with nothing wanted (not yet connected)."""
    src = tmp / "src"
    mi = make_torrent(src, FILES, PL)
    blob = linear_bytes(mi, src)
    seeder = await stack.enter_async_context(
        Client(loopback_config(tmp, "seed", upload_rate_limit=upload_rate))
    )
    leecher = await stack.enter_async_context(Client(loopback_config(tmp, "leech")))
    st = await seeder.add_metainfo(mi, download_dir=src)
    t = await leecher.add_metainfo(mi)
    nothing_wanted(t)
    return st, t, blob


@pytest.mark.timeout(30)
async def test_seek_tell_whence_and_end(tmp_path: Path) -> None:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack, asyncio.timeout(20):
        st, t, blob = await seeded_pair(tmp_path, stack)
        t.add_peers([("127.0.0.1", st.client.listen_port)])
        y = t.files[1]
        r = y.new_reader()
        assert r.tell() == 0 and r.length == y.length
        assert r.seek(-10, os.SEEK_END) == y.length - 10
        assert await read_exactly(r, 100) == blob[y.offset + y.length - 10 :]
        assert await r.read(5) == b""  # end of file
        assert r.seek(-20, os.SEEK_CUR) == y.length - 20
        buf = bytearray(8)
        assert await r.readinto(buf) == 8
        assert bytes(buf) == blob[y.offset + y.length - 20 : y.offset + y.length - 12]
        assert r.seek(y.length + 50) == y.length + 50  # past the end: allowed, reads nothing
        assert await r.read(1) == b""
        assert r.window() is None
        with pytest.raises(ValueError):
            r.seek(-1)
        with pytest.raises(ValueError):
            r.seek(0, 7)
        r.seek(0)
        assert await r.read() == blob[y.offset : y.offset + y.length]
        r.close()
        r.close()  # idempotent
        with pytest.raises(ValueError):
            await r.read(1)
        with pytest.raises(ValueError):
            Reader(t, 0, t.info.length + 1)


@pytest.mark.timeout(30)
async def test_window_priorities_follow_the_reader(tmp_path: Path) -> None:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack, asyncio.timeout(20):
        _, t, _ = await seeded_pair(tmp_path, stack)  # not connected: nothing arrives
        r = t.new_reader(readahead=3 * PL)
        prio = t.picker.priority
        assert [prio(p) for p in range(5)] == [
            PiecePriority.NOW,
            PiecePriority.NEXT,
            PiecePriority.READAHEAD,
            PiecePriority.NONE,
            PiecePriority.NONE,
        ]
        r.seek(4 * PL + 5)
        assert prio(0) == PiecePriority.NONE
        assert [prio(p) for p in (4, 5, 6, 7)] == [
            PiecePriority.NOW,
            PiecePriority.NEXT,
            PiecePriority.READAHEAD,
            PiecePriority.READAHEAD,  # the window ends inside piece 7
        ]
        # A second reader raises, never lowers: max of the windows.
        r2 = t.new_reader(readahead=1)
        r2.seek(5 * PL)
        assert prio(5) == PiecePriority.NOW
        r2.close()
        assert prio(5) == PiecePriority.NEXT
        # A file's own priority still counts where no window reaches.
        t.files[0].set_priority(PiecePriority.HIGH)
        assert prio(0) == PiecePriority.HIGH and prio(4) == PiecePriority.NOW
        r.close()
        assert prio(4) == PiecePriority.HIGH
        assert prio(8) == PiecePriority.NONE


def test_default_readahead_grows_with_contiguous_reads() -> None:
    assert default_readahead(ReadaheadContext(0, 0)) == MIN_READAHEAD
    assert default_readahead(ReadaheadContext(100, 100 + 5 * MIN_READAHEAD)) == 5 * MIN_READAHEAD
    assert default_readahead(ReadaheadContext(0, 10 * MAX_READAHEAD)) == MAX_READAHEAD


@pytest.mark.timeout(30)
async def test_readahead_function_sees_contiguous_run(tmp_path: Path) -> None:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack, asyncio.timeout(20):
        st, t, _ = await seeded_pair(tmp_path, stack)
        t.add_peers([("127.0.0.1", st.client.listen_port)])
        seen: list[ReadaheadContext] = []

        def ra(ctx: ReadaheadContext) -> int:
            seen.append(ctx)
            return PL

        r = t.new_reader(readahead=ra)
        await read_exactly(r, 1000)
        assert seen[-1] == ReadaheadContext(0, 1000)
        r.seek(5000)
        assert seen[-1] == ReadaheadContext(5000, 5000)
        await read_exactly(r, 10)
        assert seen[-1] == ReadaheadContext(5000, 5010)
        r.set_readahead(0)
        assert r.readahead() == 0
        assert r.window() == Window(0, 1)  # the NOW piece alone
        with pytest.raises(ValueError):
            r.set_readahead(-1)
        r.close()


def test_reader_windows_touch_only_what_moves() -> None:
    w = ReaderWindows()
    changed = w.set("a", Window(10, 1000))
    assert len(changed) == 990
    # Moving one piece forward changes a handful of pieces, not the window.
    assert sorted(w.set("a", Window(11, 1001))) == [10, 11, 12, 1000]
    assert w.priority(10) == PiecePriority.NONE
    assert w.priority(11) == PiecePriority.NOW
    assert w.priority(12) == PiecePriority.NEXT
    assert w.priority(1000) == PiecePriority.READAHEAD
    # Overlapping readers: each piece takes the highest.
    assert sorted(w.set("b", Window(12, 13))) == [12]
    assert w.priority(12) == PiecePriority.NOW
    assert sorted(w.set("b", None)) == [12]
    assert w.priority(12) == PiecePriority.NEXT
    assert len(w.set("a", None)) == 990
    assert len(w) == 0 and w.priority(500) == PiecePriority.NONE
    assert w.set("a", None) == []


@pytest.mark.timeout(30)
async def test_responsive_reader_returns_bytes_before_the_hash_check(tmp_path: Path) -> None:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack, asyncio.timeout(20):
        st, t, blob = await seeded_pair(tmp_path, stack)
        release = threading.Event()
        real = t._pipeline.hash_and_write

        def slow_hash(
            p: int, buf: bytearray, block_digests: bool = False
        ) -> tuple[bool, dict[int, bytes]]:
            release.wait(10)
            return real(p, buf, block_digests)

        t._pipeline.hash_and_write = slow_hash  # type: ignore[method-assign]
        t.add_peers([("127.0.0.1", st.client.listen_port)])
        try:
            fast = t.new_reader(readahead=1, responsive=True)
            slow = t.new_reader(readahead=1)
            fast.seek(PL + 100)
            slow.seek(PL + 100)
            slow_read = asyncio.ensure_future(read_exactly(slow, 50))
            got = await read_exactly(fast, 50)
            assert got == blob[PL + 100 : PL + 150]
            assert not t.picker.have(1)  # returned while piece 1 was unverified
            await asyncio.sleep(0.2)
            assert not slow_read.done()  # a normal reader waits for the hash
        finally:
            release.set()
        assert await slow_read == blob[PL + 100 : PL + 150]
        assert t.picker.have(1)
        fast.close()
        slow.close()


@pytest.mark.timeout(30)
async def test_reads_fail_when_paused_or_dropped(tmp_path: Path) -> None:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack, asyncio.timeout(20):
        _, t, _ = await seeded_pair(tmp_path, stack)  # no peers: reads must wait
        r = t.new_reader()
        waiting = asyncio.ensure_future(r.read(10))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        t.pause()
        with pytest.raises(TorrentError, match="paused"):
            await waiting
        with pytest.raises(TorrentError, match="paused"):
            await r.read(10)  # fails at once while paused
        t.resume()
        r2 = t.files[1].new_reader(responsive=True)
        waiting = asyncio.ensure_future(r2.read(10))
        waiting_too = asyncio.ensure_future(r.read(10))
        await asyncio.sleep(0.05)
        await t.drop()
        for fut in (waiting, waiting_too):
            with pytest.raises(TorrentError, match="dropped"):
                await fut
        r.close()
        r2.close()


@pytest.mark.timeout(30)
async def test_as_file_from_another_thread(tmp_path: Path) -> None:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack, asyncio.timeout(20):
        st, t, blob = await seeded_pair(tmp_path, stack)
        t.add_peers([("127.0.0.1", st.client.listen_port)])
        x = t.files[0]
        raw = x.new_reader().as_file()
        assert raw.readable() and raw.seekable()
        with pytest.raises(RuntimeError):
            raw.read(1)  # on the loop's own thread it would deadlock

        def consume() -> tuple[bytes, bytes, int]:
            f = io.BufferedReader(raw, buffer_size=8 * KIB)
            whole = f.read()
            f.seek(PL - 7)
            part = f.read(20)
            pos = f.tell()
            f.close()
            return whole, part, pos

        whole, part, pos = await asyncio.to_thread(consume)
        assert whole == blob[x.offset : x.offset + x.length]
        assert part == blob[x.offset + PL - 7 : x.offset + PL + 13]
        assert pos == PL + 13
        assert raw.closed


@pytest.mark.timeout(30)
async def test_first_byte_is_prompt_with_a_busy_pipeline(tmp_path: Path) -> None:
    # Everything is wanted and a slow seeder keeps our pipeline full; a reader's
    # NOW piece still goes out in the next request round, ahead of the backlog.
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack, asyncio.timeout(20):
        st, t, blob = await seeded_pair(tmp_path, stack, upload_rate=256 * KIB)
        t.download_all()
        t.add_peers([("127.0.0.1", st.client.listen_port)])
        while t.picker.num_have < 1:
            await asyncio.sleep(0.02)
        r = t.new_reader(readahead=1)
        r.seek(t.info.length - 10)
        start = time.monotonic()
        assert await read_exactly(r, 10) == blob[-10:]
        assert time.monotonic() - start < 3.0
        r.close()
