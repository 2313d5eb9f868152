"""One uTP stream over loopback next to a TCP socket pair: ``python -m bench.utp_loopback``.

Each row moves ``--mib`` MiB (default 256) from a sender in this process to
a receiver in a child process (each end gets its own core, as two clients
would), both through the engine's transports: ``UtpSocket``/``UtpStream`` on
a ``UdpMux`` (4 MiB socket buffers), and ``TcpStream`` on asyncio's
selector loop.  The sender writes 64 KiB views of one random 1 MiB block and
honours ``write_paused`` as the engine does; the receiver's consumer takes
bytes through ``get_buffer``/``buffer_updated`` into a 256 KiB buffer and
counts them.

Reported per row: MB/s (from the first write to the receiver's last byte),
CPU seconds per GiB of each end (``time.process_time``: user + system of
that process), and for uTP the sender's retransmissions and the packets
each end sent.  Rows alternate over ``--repeat`` rounds so both transports
see the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import time
from dataclasses import dataclass
from typing import Any

from core.net.stream import ByteStream
from core.net.tcp import TcpStream
from core.net.udp_mux import UdpMux
from core.net.utp_socket import UtpSocket, UtpStream

HOST = "127.0.0.1"
CHUNK = 64 << 10
BLOCK = os.urandom(1 << 20)


class Counter:
    """The receiving consumer: counts bytes, notes first/last arrival, resolves when done."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.received = 0
        self.buf = memoryview(bytearray(256 << 10))
        self.first = 0.0
        self.last = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: str | None = None

    def stream_opened(self, stream: ByteStream) -> None:
        pass

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        if not self.received:
            self.first = time.monotonic()
        self.received += nbytes
        if self.received >= self.total and not self.done.done():
            self.last = time.monotonic()
            self.done.set_result(None)

    def stream_writable(self) -> None:
        pass

    def stream_closed(self, reason: str) -> None:
        self.closed = reason
        if not self.done.done():
            self.done.set_exception(ConnectionError(reason))


class Sender:
    """The sending consumer: only needs to hear when it may write again."""

    def __init__(self) -> None:
        self.stream: ByteStream | None = None
        self.writable = asyncio.Event()
        self.opened = asyncio.Event()
        self.closed: str | None = None

    def stream_opened(self, stream: ByteStream) -> None:
        self.stream = stream
        self.opened.set()

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(bytearray(max(sizehint, 1)))

    def buffer_updated(self, nbytes: int) -> None:
        pass

    def stream_writable(self) -> None:
        self.writable.set()

    def stream_closed(self, reason: str) -> None:
        self.closed = reason
        self.writable.set()


async def send_all(stream: ByteStream, sender: Sender, total: int) -> None:
    block = memoryview(BLOCK)
    sent = 0
    while sent < total:
        while stream.write_paused and sender.closed is None:
            sender.writable.clear()
            await sender.writable.wait()
        if sender.closed is not None:
            raise ConnectionError(sender.closed)
        for off in range(0, len(block), CHUNK):
            stream.write(block[off : off + CHUNK])
        sent += len(block)
        await asyncio.sleep(0)


# --- the receiving process ------------------------------------------------------------


def receiver_main(kind: str, total: int, pipe: multiprocessing.connection.Connection) -> None:
    asyncio.run(_receiver(kind, total, pipe))


async def _receiver(kind: str, total: int, pipe: multiprocessing.connection.Connection) -> None:
    loop = asyncio.get_running_loop()
    counter = Counter(total)
    cpu0 = time.process_time()
    extra: dict[str, Any] = {}
    if kind == "utp":
        mux = await UdpMux.open(HOST, 0)
        utp = UtpSocket(mux, on_accept=lambda s: s.set_consumer(counter))
        pipe.send(mux.local_address[1])
        await counter.done
        extra = {"packets_out": utp.stats().packets_out, "packets_in": utp.stats().packets_in}
        extra["kernel_drops"] = mux.stats().kernel_drops
        await utp.aclose()
        await mux.aclose()
    else:
        server = await loop.create_server(lambda: TcpStream(counter), HOST, 0)
        pipe.send(server.sockets[0].getsockname()[1])
        await counter.done
        server.close()
    cpu = time.process_time() - cpu0
    pipe.send({"cpu": cpu, "first": counter.first, "last": counter.last, **extra})
    # Wait for the parent to read before closing the streams under it.
    await loop.run_in_executor(None, pipe.recv)


# --- one row --------------------------------------------------------------------------


@dataclass
class Row:
    kind: str
    mib: int
    wall: float
    send_cpu: float
    recv_cpu: float
    notes: str

    def line(self) -> str:
        gib = self.mib / 1024
        rate = self.mib * (1 << 20) / self.wall / 1e6
        return (
            f"{self.kind:<5} {self.mib:>5} MiB {rate:>8.1f} MB/s"
            f"   CPU s/GiB sender {self.send_cpu / gib:5.2f}  receiver {self.recv_cpu / gib:5.2f}"
            f"  {self.notes}"
        )


async def run_row(kind: str, mib: int) -> Row:
    total = mib << 20
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=receiver_main, args=(kind, total, child_end), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    try:
        port = await loop.run_in_executor(None, parent_end.recv)
        sender = Sender()
        notes = ""
        if kind == "utp":
            mux = await UdpMux.open(HOST, 0)
            utp = UtpSocket(mux)
            stream: ByteStream = await utp.connect((HOST, port), sender, timeout=10)
            cpu0 = time.process_time()
            t0 = time.monotonic()
            await send_all(stream, sender, total)
            result = await loop.run_in_executor(None, parent_end.recv)
            wall = time.monotonic() - t0
            cpu = time.process_time() - cpu0
            assert isinstance(stream, UtpStream)
            st = stream.connection_stats()
            notes = (
                f"retransmits {st.retransmits}  packets out {utp.stats().packets_out}"
                f" / receiver {result.get('packets_out')}  rtt {st.rtt * 1000:.1f} ms"
                f"  receiver kernel drops {result.get('kernel_drops')}"
            )
            parent_end.send("done")
            stream.abort()
            await utp.aclose()
            await mux.aclose()
        else:
            _transport, proto = await loop.create_connection(lambda: TcpStream(sender), HOST, port)
            await sender.opened.wait()
            cpu0 = time.process_time()
            t0 = time.monotonic()
            await send_all(proto, sender, total)
            result = await loop.run_in_executor(None, parent_end.recv)
            wall = time.monotonic() - t0
            cpu = time.process_time() - cpu0
            parent_end.send("done")
            proto.abort()
        return Row(kind, mib, wall, cpu, float(result["cpu"]), notes)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join()


async def main_async(mib: int, repeat: int, only: str | None) -> None:
    kinds = [only] if only else ["utp", "tcp"]
    print(f"{mib} MiB over 127.0.0.1, sender and receiver in separate processes")
    for _ in range(repeat):
        for kind in kinds:
            row = await run_row(kind, mib)
            print(row.line(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--only", choices=["utp", "tcp"])
    args = parser.parse_args()
    asyncio.run(main_async(args.mib, args.repeat, args.only))


if __name__ == "__main__":
    main()
