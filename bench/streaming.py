"""Streaming latency on 127.0.0.1: readers on a torrent seeded by libtorrent.

Run on demand::

    python -m bench.streaming [--mib 1024] [--piece-kib 1024] [--trials 15] [--seconds 20]

A ``--mib`` MiB two-file torrent of random bytes is seeded by libtorrent in
its own process (tests/support/lt_peer.py, sealed to loopback).  Our engine
runs in this process with file storage (sparse files in a temporary
directory).  Memory storage is no good here: it allocates each file whole on
the first write, and zero-filling ~900 MiB costs the first read seconds.

1. First byte, reader-driven: every file at priority NONE; for each trial a
   new reader at a random offset (in a region not fetched yet) reads 16 KiB.
   Reported: median / p90 / max seconds from ``seek`` to the bytes.
2. First byte with a busy pipeline: the same, but the whole torrent is
   downloading in the background at priority NORMAL (a fresh client).
3. Steady consumer: a fresh client, a reader from the start of the big file
   read at ``--rate`` MB/s (64 KiB every 64 KiB / rate seconds) for
   ``--seconds``.  Reported: the longest wait for a read after the warm-up
   (``--warmup`` seconds), and how many reads waited more than 100 ms.

Goals (issue 6): median first byte <= 0.3 s; no wait over 100 ms once warm.
The machine is shared: run it twice and read the range.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from core.config import ClientConfig
from core.engine.client import Client
from core.formats.create import create_torrent
from core.formats.metainfo import Metainfo
from core.types import PiecePriority
from tests.support.ltharness import LibtorrentPeer, make_payload

MIB = 1 << 20


def config(tmp: Path, name: str) -> ClientConfig:
    return ClientConfig(
        listen_addresses=("127.0.0.1",),
        listen_port=0,
        data_dir=tmp / name / "state",
        download_dir=tmp / name / "dl",
        default_storage="file",
        dht=False,
        utp=False,
        encryption="disable",
        pex=False,
    )


async def first_bytes(
    tmp: Path, mi: Metainfo, port: int, trials: int, background: bool, rng: random.Random
) -> list[float]:
    name = "bg" if background else "fb"
    times = []
    async with Client(config(tmp, name)) as client:
        t = await client.add_metainfo(mi)
        if not background:
            for f in t.files:
                f.set_priority(PiecePriority.NONE)
        t.add_peers([("127.0.0.1", port)])
        while not t.peers:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5 if background else 0.1)  # background: let the pipeline fill
        plen = t.info.piece_length
        for _ in range(trials):
            for _ in range(1000):
                off = rng.randrange(t.info.length - 16384)
                p = off // plen
                if not any(t.picker.have(q) for q in range(p, min(p + 3, t.num_pieces))):
                    break
            else:
                print("  (the background download finished: fewer trials)")
                break
            r = t.new_reader()
            start = time.perf_counter()
            r.seek(off)
            got = await r.read(16384)
            times.append(time.perf_counter() - start)
            assert got
            r.close()
        if background:
            print(f"  (background download had {t.picker.num_have} pieces by the end)")
    return times


async def consumer(
    tmp: Path, mi: Metainfo, port: int, rate: float, seconds: float, warmup: float
) -> tuple[float, int, int, float]:
    async with Client(config(tmp, "consumer")) as client:
        t = await client.add_metainfo(mi)
        for f in t.files:
            f.set_priority(PiecePriority.NONE)
        t.add_peers([("127.0.0.1", port)])
        big = max(t.files, key=lambda f: f.length)
        t_add = time.perf_counter()
        step = 64 * 1024
        interval = step / rate
        waits: list[tuple[float, float]] = []
        async with big.new_reader() as r:
            start = time.perf_counter()
            due = start
            while time.perf_counter() - start < seconds:
                now = time.perf_counter()
                if now < due:
                    await asyncio.sleep(due - now)
                t0 = time.perf_counter()
                if not waits:

                    async def connected() -> float:
                        while not t.peers:
                            await asyncio.sleep(0.001)
                        return time.perf_counter()

                    watch = asyncio.ensure_future(connected())
                data = await r.read(step)
                if not waits:
                    connected_at = await watch
                waits.append((t0 - start, time.perf_counter() - t0))
                if not data:
                    break
                due += interval
                # A consumer that fell behind does not try to catch up in a burst.
                due = max(due, time.perf_counter() - interval)
        print(f"  (connected after {connected_at - t_add:.3f} s)")
        warm = [w for at, w in waits if at >= warmup]
        first = waits[0][1] if waits else float("nan")
        return max(warm, default=0.0), sum(w > 0.1 for w in warm), len(warm), first


def summary(label: str, times: list[float]) -> None:
    q = sorted(times)
    p90 = q[min(len(q) - 1, int(len(q) * 0.9))]
    print(
        f"{label}: median {statistics.median(q):.3f} s, p90 {p90:.3f} s, "
        f"max {q[-1]:.3f} s over {len(q)} readers"
    )


def build_torrent(tmp: Path, mib: int, piece_kib: int) -> tuple[Metainfo, Path, Path]:
    seed_dir = tmp / "seed"
    big = mib * MIB * 7 // 8
    files = {"movie.mkv": big + 12345, "extras/bonus.mkv": mib * MIB - big - 12345}
    t0 = time.perf_counter()
    make_payload(seed_dir / "payload", files, seed=1)
    mi = create_torrent(seed_dir / "payload", piece_length=piece_kib * 1024)
    path = tmp / "payload.torrent"
    path.write_bytes(mi.to_bytes())
    print(
        f"payload {mib} MiB, {mi.info.num_pieces} pieces, built in {time.perf_counter() - t0:.1f} s"
    )
    return mi, path, seed_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--piece-kib", type=int, default=1024)
    ap.add_argument("--trials", type=int, default=15)
    ap.add_argument("--rate", type=float, default=10.0, help="consumer MB/s (10^6)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as d:
        tmp = Path(d)
        mi, path, seed_dir = build_torrent(tmp, args.mib, args.piece_kib)
        with LibtorrentPeer("seeder") as seeder:
            port = seeder.start()
            seeder.add_torrent(path, seed_dir, seed=True)

            async def run() -> None:
                summary(
                    "first byte, reader-driven",
                    await first_bytes(tmp, mi, port, args.trials, False, rng),
                )
                summary(
                    "first byte, busy background download",
                    await first_bytes(tmp, mi, port, args.trials, True, rng),
                )
                worst, slow, n, first = await consumer(
                    tmp, mi, port, args.rate * 1e6, args.seconds, args.warmup
                )
                print(
                    f"consumer at {args.rate:g} MB/s for {args.seconds:g} s: first read "
                    f"{first:.3f} s; after {args.warmup:g} s warm-up the longest wait was "
                    f"{worst * 1000:.1f} ms, {slow} of {n} reads waited > 100 ms"
                )

            asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
