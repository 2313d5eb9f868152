"""Event-loop CPU per received block, without sockets: ``python -m bench.engine_blocks``.

bench/throughput.py measures the whole system, where two shared cores, the
seeder and page-cache effects blur small changes.  This one isolates the
part that runs on our event loop: a real :class:`~core.engine.client.Client` and
:class:`~core.engine.torrent.Torrent` (memory storage) download from a sans-IO
:class:`~core.wire.PeerConnection` acting as a seeder, through a fake
transport.  Bytes are handed to ``PeerProtocol`` exactly as an
``asyncio.BufferedProtocol`` would get them (``get_buffer`` then
``buffer_updated``, up to ``--read-kib`` per read), and the thread CPU time
of those calls is what is reported: parsing, picking, copying into piece
buffers, requesting more.  Hashing runs in worker threads and is not
counted; the fake seeder's work is not counted either.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from core.config import ClientConfig
from core.engine.client import Client
from core.engine.peer import Peer
from core.events import PeerSource
from core.formats.create import create_torrent
from core.net.tcp import TcpStream
from core.wire import HaveAll, PeerConnection, Request, Unchoke


class FakeTransport(asyncio.Transport):
    """Collects what our side writes; never pushes back."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 6881) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.out.append(b"".join(bytes(p) for p in parts))

    def abort(self) -> None:
        self.closed = True

    close = abort

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def run(
    mib: int, piece_kib: int, read_kib: int, tmp: Path, ahead: int = 8 << 20
) -> tuple[float, int, float]:
    payload = tmp / "blocks.bin"
    rng = random.Random(1)
    with payload.open("wb") as f:
        for _ in range(mib):
            f.write(rng.randbytes(1 << 20))
    mi = create_torrent(payload, piece_length=piece_kib << 10)
    data = memoryview(payload.read_bytes())
    cfg = ClientConfig(
        listen_addresses=("127.0.0.1",),
        accept_incoming=False,
        data_dir=tmp / "state",
        download_dir=tmp / "dl",
        default_storage="memory",
        dht=False,
        utp=False,
        pex=False,
    )
    async with Client(cfg) as client:
        t = await client.add_metainfo(mi)
        peer = Peer(t, ("127.0.0.1", 6881), PeerSource.DIRECT, incoming=False)
        t._swarm.half_open[peer.address] = peer
        conn = t._swarm.new_connection(t.info_hash.wire)
        proto = TcpStream(client.make_driver(conn, peer, outgoing=True))
        transport = FakeTransport()
        proto.connection_made(transport)

        seeder = PeerConnection(b"-SEED00-" + b"s" * 12, None)
        pending = bytearray()

        def pump_seeder() -> None:
            """Feed what we wrote to the seeder; queue its answers for us."""
            for chunk in transport.out:
                seeder.receive_data(chunk)
            transport.out.clear()
            for ev in seeder.events():
                name = type(ev).__name__
                if name == "RemoteInfoHash":
                    pending.extend(seeder.accept(mi.info))
                elif name == "HandshakeReceived":
                    pending.extend(seeder.send(HaveAll()) + seeder.send(Unchoke()))
                elif isinstance(ev, Request):
                    view = data[mi.info.piece_offset(ev.index) + ev.begin :][: ev.length]
                    for part in seeder.send_piece(ev.index, ev.begin, view):
                        pending.extend(part)

        loop_cpu = 0.0
        faults = 0
        reads = 0
        read_size = read_kib << 10
        wall = time.perf_counter()
        while not t.picker.is_complete():
            pump_seeder()
            if not pending or t.picker.unverified_bytes > ahead:
                # A real seeder is not faster than our hashing for long; letting
                # this one be would measure allocation of ever more piece buffers.
                await asyncio.sleep(0.001)
                continue
            pos = 0
            while pos < len(pending):
                buf = proto.get_buffer(-1)
                n = min(len(buf), read_size, len(pending) - pos)
                buf[:n] = pending[pos : pos + n]
                del buf
                c0 = time.thread_time()
                f0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
                proto.buffer_updated(n)
                faults += resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - f0
                loop_cpu += time.thread_time() - c0
                reads += 1
                pos += n
            pending.clear()
            await asyncio.sleep(0)
        wall = time.perf_counter() - wall
        await t.wait_complete()
    print(f"{faults} page faults in buffer_updated")
    return loop_cpu, reads, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--piece-kib", type=int, default=1024)
    ap.add_argument("--read-kib", type=int, default=128, help="bytes per simulated socket read")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    blocks = (args.mib << 20) // (16 << 10)
    best = float("inf")
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-blocks-") as tmp:
            cpu, reads, wall = asyncio.run(run(args.mib, args.piece_kib, args.read_kib, Path(tmp)))
        best = min(best, cpu)
        print(
            f"receive path: {cpu * 1e6 / blocks:6.2f} us/block, {cpu * 1024 / args.mib:5.2f} "
            f"CPU s/GiB on the loop ({reads} reads, wall {wall:.2f} s incl. fake seeder)"
        )
    print(f"best: {best * 1e6 / blocks:.2f} us/block")


if __name__ == "__main__":
    main()
