"""Our engine in its own process, for bench/throughput.py.

The benchmark measures CPU time and peak RSS per process, so our client must
not share a process with the harness (or with libtorrent).  This script runs
one :class:`~core.engine.client.Client` sealed to 127.0.0.1 in one of two roles and
prints JSON lines on stdout (monotonic timestamps are system-wide on Linux,
so the parent can compare them with its own clock):

- ``download TORRENT DIR --peer 127.0.0.1:PORT``: fetch the torrent from that
  peer; prints ``added``, then ``complete`` when every piece is verified,
  then ``closed`` (after the final fsync) with this process's CPU seconds and
  peak RSS, and exits.
- ``seed TORRENT DIR``: check the data in DIR, print ``ready`` with the
  listen port once seeding, serve until stdin closes or says ``quit``, then
  print ``closed`` with upload totals, CPU seconds and peak RSS.

``BENCH_PROFILE=FILE`` runs the role under cProfile and dumps stats to FILE.
Experiment knobs: ``BENCH_COUNT_READS=1`` reports socket reads and bytes per
read; ``BENCH_BUFFER_KIB`` sets the wire receive buffer; ``BENCH_POOL_MIB``
the spare piece buffers kept (``core.engine.piece_pipeline.BUF_POOL_BYTES``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from core.config import ClientConfig
from core.engine.client import Client
from core.formats.metainfo import Metainfo
from core.stats import TorrentState


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


def usage_now() -> dict[str, float]:
    """CPU seconds so far and peak RSS (VmHWM, bytes) of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    hwm = 0
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return {
        "cpu": ru.ru_utime + ru.ru_stime,
        "user": ru.ru_utime,
        "sys": ru.ru_stime,
        "loop_cpu": time.thread_time(),  # called on the event loop's thread
        "minflt": ru.ru_minflt,
        "vcsw": ru.ru_nvcsw,
        "ivcsw": ru.ru_nivcsw,
        "rss": hwm,
    }


def make_config(state: Path, downloads: Path, overrides: dict[str, Any]) -> ClientConfig:
    values: dict[str, Any] = {
        "listen_addresses": ("127.0.0.1",),
        "listen_port": 0,
        "data_dir": state,
        "download_dir": downloads,
        "dht": False,
        "utp": False,
        "encryption": "disable",  # plain TCP, comparable with earlier runs
        "pex": False,
    }
    values.update(overrides)
    return ClientConfig(**values)


READS = [0, 0]  # socket reads, bytes (counted when BENCH_COUNT_READS is set)


def count_reads() -> None:
    from core.net.peer_io import PeerProtocol

    orig = PeerProtocol.buffer_updated

    def counted(self: PeerProtocol, nbytes: int) -> None:
        READS[0] += 1
        READS[1] += nbytes
        orig(self, nbytes)

    PeerProtocol.buffer_updated = counted  # type: ignore[method-assign]


async def download(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    mi = Metainfo.from_bytes(Path(args.torrent).read_bytes())
    host, _, port = args.peer.rpartition(":")
    out = Path(args.dir)
    async with Client(make_config(Path(args.state), out, overrides)) as client:
        t = await client.add_metainfo(mi, download_dir=out, peers=[(host, int(port))])
        emit("added", **usage_now())
        await t.wait_complete()
        emit("complete", **usage_now())
        s = t.stats()
        stats = {
            "bytes_read_data": s.bytes_read_data,
            "chunks_read_wasted": s.chunks_read_wasted,
            "socket_reads": READS[0],
            "bytes_per_read": READS[1] // max(1, READS[0]),
            "gc_collections": [g["collections"] for g in gc.get_stats()],
            "gc_objects": len(gc.get_objects()),
        }
    emit("closed", stats=stats, **usage_now())


async def seed(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    mi = Metainfo.from_bytes(Path(args.torrent).read_bytes())
    data = Path(args.dir)
    async with Client(make_config(Path(args.state), data, overrides)) as client:
        t = await client.add_metainfo(mi, download_dir=data)
        if t.state is not TorrentState.SEEDING:
            raise SystemExit(f"engine_runner: not seeding after the check: {t.state}")
        emit("ready", port=client.listen_port, **usage_now())
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "quit":
                break
            if line.strip() == "usage":
                emit("usage", **usage_now())
        s = t.stats()
        stats = {"bytes_written_data": s.bytes_written_data, "chunks_written": s.chunks_written}
    emit("closed", stats=stats, **usage_now())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("role", choices=("download", "seed"))
    ap.add_argument("torrent")
    ap.add_argument("dir", help="download directory (download) or data directory (seed)")
    ap.add_argument("--state", required=True, help="directory for the completion database")
    ap.add_argument("--peer", help="127.0.0.1:PORT to download from")
    ap.add_argument("--config", default="{}", help="JSON object of ClientConfig overrides")
    args = ap.parse_args(argv)
    overrides = json.loads(args.config)
    if os.environ.get("BENCH_COUNT_READS"):
        count_reads()
    if os.environ.get("BENCH_POOL_MIB"):  # experiment: spare piece buffers kept
        import core.engine.piece_pipeline

        core.engine.piece_pipeline.BUF_POOL_BYTES = int(os.environ["BENCH_POOL_MIB"]) << 20
    if os.environ.get("BENCH_BUFFER_KIB"):  # experiment: receive buffer size
        from core.wire import PeerConnection

        kw = PeerConnection.__init__.__kwdefaults__
        assert kw is not None
        kw["buffer_size"] = int(os.environ["BENCH_BUFFER_KIB"]) << 10
    if args.role == "download":
        if not args.peer or not args.peer.startswith(("127.", "[::1]")):
            ap.error("download needs --peer with a loopback address")
        coro = download(args, overrides)
    else:
        coro = seed(args, overrides)
    profile = os.environ.get("BENCH_PROFILE")
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            asyncio.run(coro)
        finally:
            prof.disable()
            prof.dump_stats(profile)
    else:
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
