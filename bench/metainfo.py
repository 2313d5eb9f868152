"""Benchmark metainfo parsing and torrent creation (run on demand, not a test).

    /work/venv/bin/python bench/metainfo.py [--size-mib 1024] [--threads 2]

1. Parse a 100,000-piece, 10,000-file torrent (best of a few runs, in ms).
2. Create a torrent over ``--size-mib`` of generated files (written to a
   temporary directory that is removed afterwards) and compare the rate with
   the 2-thread SHA-1 ceiling measured in the same run (two threads hashing an
   in-memory buffer) and with libtorrent's create_torrent + set_piece_hashes
   on the same files.  The files are freshly written, so they are read from
   the page cache: this measures hashing and reading, not the disk.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.formats.bencoding import encode
from core.formats.create import Version, create_torrent
from core.formats.metainfo import Metainfo

MIB = 1 << 20


def big_torrent(num_pieces: int = 100_000, num_files: int = 10_000) -> bytes:
    piece_length = 16384
    total = num_pieces * piece_length
    base = total // num_files
    files = []
    for i in range(num_files):
        length = base if i < num_files - 1 else total - base * (num_files - 1)
        files.append({b"length": length, b"path": [b"dir%03d" % (i // 100), b"file%05d.bin" % i]})
    info = {
        b"name": b"bench",
        b"piece length": piece_length,
        b"pieces": os.urandom(20 * num_pieces),
        b"files": files,
    }
    return encode({b"announce": b"http://tracker.example/announce", b"info": info})


def bench_parse() -> None:
    data = big_torrent()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        m = Metainfo.from_bytes(data)
        times.append(time.perf_counter() - t0)
    assert m.info.num_pieces == 100_000 and len(m.info.files) == 10_000
    line = f"parse 100,000 pieces / 10,000 files ({len(data) / MIB:.1f} MiB): "
    line += f"{min(times) * 1000:.0f} ms (best of 3)"
    try:
        import libtorrent as lt

        t0 = time.perf_counter()
        lt.torrent_info(data)
        line += f"; libtorrent torrent_info: {(time.perf_counter() - t0) * 1000:.0f} ms"
    except ImportError:
        pass
    print(line)


def sha1_ceiling(threads: int, piece_length: int, seconds: float = 2.0) -> float:
    """Aggregate MB/s of ``threads`` threads SHA-1 hashing pieces of an in-memory buffer."""
    buf = memoryview(os.urandom(64 * MIB))
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def work(k: int) -> None:
        n = 0
        while time.perf_counter() < stop:
            for i in range(0, len(buf), piece_length):
                hashlib.sha1(buf[i : i + piece_length]).digest()
            n += len(buf)
        done[k] = n

    t0 = time.perf_counter()
    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - t0) / 1e6


def write_files(root: Path, total: int) -> None:
    """A directory of files of mixed sizes (a few large, some small, one empty)."""
    chunk = os.urandom(4 * MIB)
    sizes = [total // 2, total // 4, total // 8]
    sizes += [(total - sum(sizes)) // 16] * 15
    sizes.append(total - sum(sizes))
    sizes.append(0)
    for i, size in enumerate(sizes):
        path = root / f"d{i % 3}" / f"f{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            left = size
            while left:
                n = min(left, len(chunk))
                fh.write(chunk[:n])
                left -= n


def bench_create(size: int, threads: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-metainfo-"))
    try:
        root = tmp / "payload"
        write_files(root, size)
        ours = create_torrent(root, version="v1", threads=threads)
        pl = ours.info.piece_length
        ceiling = sha1_ceiling(threads, pl)
        print(f"payload {size / MIB:.0f} MiB, piece length {pl // 1024} KiB, threads {threads}")
        print(f"{threads}-thread SHA-1 ceiling (in memory): {ceiling:.0f} MB/s")
        versions: tuple[Version, ...] = ("v1", "hybrid", "v2")
        for version in versions:
            t0 = time.perf_counter()
            m = create_torrent(root, version=version, threads=threads, piece_length=pl)
            rate = size / (time.perf_counter() - t0) / 1e6
            ratio = f" = {rate / ceiling:.2f}x ceiling" if version == "v1" else ""
            print(f"ours {version:6s}: {rate:7.0f} MB/s{ratio}")
            if version == "v1":
                assert m.info_hash == ours.info_hash
        try:
            import libtorrent as lt
        except ImportError:
            return
        for version, flags in (
            ("v1", lt.create_torrent.v1_only),
            ("hybrid", 0),
            ("v2", lt.create_torrent.v2_only),
        ):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                fs = lt.file_storage()
                for f in ours.info.payload_files():
                    fs.add_file("/".join(("payload", *f.path)), f.length)
                t0 = time.perf_counter()
                ct = lt.create_torrent(fs, pl, flags=flags)
                lt.set_piece_hashes(ct, str(tmp))
                raw = lt.bencode(ct.generate())
                rate = size / (time.perf_counter() - t0) / 1e6
            same = ""
            if version == "v1":
                same = (
                    " (same info-hash)"
                    if Metainfo.from_bytes(raw).info_hash == ours.info_hash
                    else " (DIFFERENT info-hash)"
                )
            print(f"libtorrent {version:6s}: {rate:7.0f} MB/s{same}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="payload size for creation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-parse", action="store_true")
    args = ap.parse_args()
    if not args.skip_parse:
        bench_parse()
    bench_create(args.size_mib * MIB, args.threads)


if __name__ == "__main__":
    main()
