"""Seeding to aria2c: our seeder against libtorrent's, same torrent, same run.

aria2c cannot be told a peer, so each round starts opentracker, a seeder
(ours, a ``core.Client``; or libtorrent in its own process) that announces
to it, and an aria2c that fetches the torrent through it and exits when
done.  The download is SHA-256-checked against the source every round.
Rounds alternate between the two seeders so machine noise hits both; the
medians and their ratio are printed.  Issue 11: aria2c used to stall after
160 blocks from our seeder.

    python -m bench.aria2_seed --size 1G --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from core.engine.client import Client
from core.formats.create import create_torrent
from core.stats import TorrentState
from tests.support.aria2 import Aria2
from tests.support.engine import loopback_config
from tests.support.ltharness import LibtorrentPeer
from tests.support.opentracker import OpenTracker

MIB = 1 << 20


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper()
    return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _write_payload(path: Path, size: int) -> None:
    block = hashlib.sha256(b"aria2-bench").digest() * (MIB // 32)
    with path.open("wb") as f:
        left, n = size, 0
        while left > 0:
            chunk = bytes([n & 0xFF]) + block[1 : min(left, MIB)]
            f.write(chunk)
            left -= len(chunk)
            n += 1


async def _fetch(aria2: Aria2, torrent: Path, out: Path, timeout: float) -> float:
    started = time.monotonic()
    aria2.download(torrent, out)
    code = await asyncio.to_thread(aria2.wait_exit, timeout)
    elapsed = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"aria2c exited with {code}:\n{aria2.log_tail()}")
    return elapsed


async def round_ours(work: Path, torrent: Path, src: Path, timeout: float) -> float:
    from core.formats.metainfo import Metainfo

    mi = Metainfo.load(torrent)
    async with Client(loopback_config(work, "ours")) as client:
        t = await client.add_metainfo(mi, download_dir=src.parent)
        assert t.state is TorrentState.SEEDING
        async with asyncio.timeout(15):
            while not any(s.last_result == "ok" for s in t.trackers()):
                await asyncio.sleep(0.05)
        with Aria2(work / "aria2-ours") as aria2:
            return await _fetch(aria2, torrent, work / "dl-ours", timeout)


async def round_libtorrent(work: Path, torrent: Path, src: Path, timeout: float) -> float:
    with LibtorrentPeer("seed") as lt:
        await asyncio.to_thread(lt.start)
        ih = await asyncio.to_thread(lt.add_torrent, torrent, src.parent, True)
        await asyncio.sleep(2.0)  # its first announce
        del ih
        with Aria2(work / "aria2-lt") as aria2:
            return await _fetch(aria2, torrent, work / "dl-lt", timeout)


async def main_async(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="aria2-bench-"))
    try:
        src = root / "src" / "payload.bin"
        src.parent.mkdir()
        _write_payload(src, args.size)
        want = _sha256(src)
        with OpenTracker() as tracker:
            tracker.start()
            mi = create_torrent(src, piece_length=args.piece_length, trackers=[tracker.http_url])
            torrent = root / "payload.torrent"
            torrent.write_bytes(mi.to_bytes())
            tracker.allow(mi.info_hash.wire)
            times: dict[str, list[float]] = {"ours": [], "libtorrent": []}
            for r in range(args.rounds):
                for name, run in (("ours", round_ours), ("libtorrent", round_libtorrent)):
                    work = root / f"{name}-{r}"
                    work.mkdir()
                    seconds = await run(work, torrent, src, args.timeout)
                    got = _sha256(work / f"dl-{'ours' if name == 'ours' else 'lt'}" / src.name)
                    if got != want:
                        raise RuntimeError(f"{name} round {r}: SHA-256 mismatch")
                    times[name].append(seconds)
                    rate = args.size / seconds / 1e6
                    print(f"round {r} {name:>10} -> aria2c: {seconds:6.2f} s  {rate:6.1f} MB/s")
                    shutil.rmtree(work, ignore_errors=True)
        ours, ref = statistics.median(times["ours"]), statistics.median(times["libtorrent"])
        print(
            f"median: ours {args.size / ours / 1e6:.1f} MB/s, libtorrent "
            f"{args.size / ref / 1e6:.1f} MB/s, ratio {ref / ours:.2f} (sha256 checked)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--size", type=_size, default=1 << 30, help="payload size (default 1G)")
    ap.add_argument("--piece-length", type=_size, default=1 << 20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0)
    return asyncio.run(main_async(ap.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
