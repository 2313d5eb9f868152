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
see the same machine load.  ``UTP_TRACE=1`` prints the sender's window,
delays and rate every 100 ms.

``--offload`` picks the UDP paths: ``on`` (GSO sends, GRO/recvmmsg reads at
both ends), ``off`` (one system call per datagram), or ``recv`` (only the
receiver's; the sender sends one datagram per call, as libtorrent does, so
the receiver sees what it gets from libtorrent).

``--paths`` measures instead the CPU per DATA packet of each end's whole
path (mux, socket, connection, system calls; the event loop left out) with
both ends in this process taking turns, so a busy machine skews the split
less; it prints the total and the lower quartile over the turns.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import socket
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


TRACE = bool(os.environ.get("UTP_TRACE"))


async def trace(stream: UtpStream) -> None:
    """Print the sender's window and delays every 100 ms (UTP_TRACE=1)."""
    t0 = time.monotonic()
    last = 0
    while True:
        await asyncio.sleep(0.1)
        st = stream.connection_stats()
        print(
            f"  {time.monotonic() - t0:5.2f}s cwnd {st.cwnd / 1e3:7.0f} kB  flight"
            f" {st.bytes_in_flight / 1e3:7.0f} kB  peer wnd {st.peer_window / 1e3:6.0f} kB"
            f"  rtt {st.rtt * 1e3:5.1f} ms  our delay {st.our_delay * 1e3:5.1f} ms"
            f"  {(st.payload_out - last) / 0.1e6:6.1f} MB/s  rtx {st.retransmits}",
            flush=True,
        )
        last = st.payload_out


# --- the receiving process ------------------------------------------------------------


def receiver_main(
    kind: str, total: int, pipe: multiprocessing.connection.Connection, offload: bool
) -> None:
    asyncio.run(_receiver(kind, total, pipe, offload))


async def _receiver(
    kind: str, total: int, pipe: multiprocessing.connection.Connection, offload: bool
) -> None:
    loop = asyncio.get_running_loop()
    counter = Counter(total)
    cpu0 = time.process_time()
    extra: dict[str, Any] = {}
    if kind == "utp":
        mux = await UdpMux.open(HOST, 0, offload=offload)
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


# --- CPU per packet of each path, in one process ---------------------------------------


def _serve(utp: UtpSocket, mux: UdpMux) -> None:
    """What the event loop would do for ``mux``'s socket: read a batch, then flush."""
    mux._on_readable()
    handle = utp._flush_handle
    if handle is not None:
        handle.cancel()
        utp._flush()


def _pending(mux: UdpMux) -> bool:
    sock = mux._sock
    assert sock is not None
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    return True


async def paths(mib: int, offload: str) -> None:
    """CPU per DATA packet of the sending and the receiving path, syscalls included.

    Both ends live in this process and take turns, so neither waits for the
    other and other load on the machine does not skew the split: the sender
    writes and flushes (its window's worth goes out), the receiver reads
    everything queued and acks it batch by batch, the sender takes the acks
    in; each turn is timed in CPU time.  What the event loop costs (epoll,
    scheduling) is left out.
    """
    a_mux = await UdpMux.open(HOST, 0, offload=offload == "on")
    b_mux = await UdpMux.open(HOST, 0, offload=offload != "off")
    total = mib << 20
    counter = Counter(total)
    a = UtpSocket(a_mux)
    b = UtpSocket(b_mux, on_accept=lambda s: s.set_consumer(counter))
    sender = Sender()
    stream = await a.connect(b_mux.local_address, sender, timeout=10)
    await asyncio.sleep(0.05)
    block = memoryview(BLOCK)
    clock = time.process_time
    send_cpu = recv_cpu = 0.0
    written = 0
    rounds = 0
    # per turn: (sender CPU, receiver CPU, DATA packets): the quartile of the
    # per-packet costs is steadier than the total when the machine is shared
    turns: list[tuple[float, float, int]] = []
    last_packets = 0
    while counter.received < total:
        rounds += 1
        t0 = clock()
        while written < total and not stream.write_paused:
            for off in range(0, len(block), CHUNK):
                stream.write(block[off : off + CHUNK])
            written += len(block)
        _serve(a, a_mux)  # the acks of the last turn, then new data
        t1 = clock()
        while _pending(b_mux):
            _serve(b, b_mux)
        t2 = clock()
        send_cpu += t1 - t0
        recv_cpu += t2 - t1
        now_packets = a.stats().packets_out
        if now_packets - last_packets >= 256:
            turns.append((t1 - t0, t2 - t1, now_packets - last_packets))
        last_packets = now_packets
        if rounds % 64 == 0:
            await asyncio.sleep(0)  # let the loop run its timers
    packets = a.stats().packets_out
    assert isinstance(stream, UtpStream)
    st = stream.connection_stats()
    print(
        f"{mib} MiB, offload {offload}: {packets} packets in {rounds} turns;"
        f" per DATA packet: sender {send_cpu / packets * 1e6:.2f} us,"
        f" receiver {recv_cpu / packets * 1e6:.2f} us"
        f" (CPU s/GiB {send_cpu / mib * 1024:.2f} / {recv_cpu / mib * 1024:.2f});"
        f" acks {b.stats().packets_out}, retransmits {st.retransmits},"
        f" gso sends {a_mux.stats().gso_sends}, gro reads {b_mux.stats().gro_reads}"
    )
    if turns:
        per_send = sorted(t[0] / t[2] * 1e6 for t in turns)
        per_recv = sorted(t[1] / t[2] * 1e6 for t in turns)
        q = len(turns) // 4
        print(
            f"  per turn ({len(turns)} turns of 256+ packets), lower quartile:"
            f" sender {per_send[q]:.2f} us, receiver {per_recv[q]:.2f} us"
        )
    stream.abort()
    await a.aclose()
    await b.aclose()
    await a_mux.aclose()
    await b_mux.aclose()


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


async def run_row(kind: str, mib: int, offload: str = "on") -> Row:
    total = mib << 20
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(
        target=receiver_main, args=(kind, total, child_end, offload != "off"), daemon=True
    )
    proc.start()
    loop = asyncio.get_running_loop()
    try:
        port = await loop.run_in_executor(None, parent_end.recv)
        sender = Sender()
        notes = ""
        if kind == "utp":
            mux = await UdpMux.open(HOST, 0, offload=offload == "on")
            utp = UtpSocket(mux)
            stream: ByteStream = await utp.connect((HOST, port), sender, timeout=10)
            cpu0 = time.process_time()
            t0 = time.monotonic()
            assert isinstance(stream, UtpStream)
            tracer = asyncio.create_task(trace(stream)) if TRACE else None
            await send_all(stream, sender, total)
            result = await loop.run_in_executor(None, parent_end.recv)
            if tracer is not None:
                tracer.cancel()
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


async def main_async(mib: int, repeat: int, only: str | None, offload: str) -> None:
    kinds = [only] if only else ["utp", "tcp"]
    print(f"{mib} MiB over 127.0.0.1, sender and receiver in separate processes")
    for _ in range(repeat):
        for kind in kinds:
            row = await run_row(kind, mib, offload)
            print(row.line(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--only", choices=["utp", "tcp"])
    parser.add_argument(
        "--offload",
        choices=["on", "off", "recv"],
        default="on",
        help="UDP GSO/GRO: on at both ends, off, or only the receiver's GRO (the sender"
        " then sends one datagram per call, as libtorrent does)",
    )
    parser.add_argument(
        "--paths",
        action="store_true",
        help="instead: CPU per packet of each end's path, both ends in this process",
    )
    args = parser.parse_args()
    if args.paths:
        asyncio.run(paths(args.mib, args.offload))
        return
    asyncio.run(main_async(args.mib, args.repeat, args.only, args.offload))


if __name__ == "__main__":
    main()
