"""UDP receive paths on the event loop, measured: ``python -m bench.udp_recv``.

Each row receives 1,400-byte datagrams on 127.0.0.1 through a trivial handler
(a first-byte check and a count: what the mux's routing costs):

* ``asyncio-dgram``: ``await sock.recv()`` in a loop (a ``DatagramProtocol``
  feeding an unbounded ``asyncio.Queue``, one datagram per selector wake-up);
* ``add_reader+recvfrom_into/N``: ``loop.add_reader`` and, per wake-up, up to
  N ``sock.recvfrom_into`` calls into one preallocated 64 KiB buffer, stopping
  at ``EAGAIN`` (the copy out of the buffer into ``bytes`` included);
* ``add_reader+recvfrom/N``: the same with ``sock.recvfrom(65536)`` (a fresh
  buffer per datagram);
* ``DatagramProtocol``: ``loop.create_datagram_endpoint`` and its
  ``datagram_received`` callback;
* ``UdpMux``: :class:`core.net.udp_mux.UdpMux` itself (routing, address
  normalisation, counters).

Two measurements:

* **drain** (the comparison to read): the socket's receive buffer is filled
  while the loop is not running, then the loop empties it; datagrams/s is the
  receive path's capacity and CPU us per datagram its cost.  No sender runs
  meanwhile, so the figures hold up on a busy machine.
* **live**: a sender process blasts datagrams as fast as it can for
  ``--seconds``; datagrams/s and MB/s received, the receiver's CPU seconds
  (the sender's are not counted) and CPU us per datagram, the share the
  kernel dropped, and the worst lateness of a concurrent
  ``asyncio.sleep(0.005)`` ticker (how long the loop was kept busy).  On a
  2-vCPU VM the sender (~150 k datagrams/s from Python) is the limit of the
  fast paths, and the rows swing with whatever else runs: use ``--repeat``.

Then the send path (non-blocking ``sendto`` into a socket that reads nothing:
how often ``EAGAIN`` happens) and how many datagrams the 4 MiB receive buffer
holds: the bound on what waits for the mux.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import multiprocessing.synchronize
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized

import asyncio_dgram

from core.net.udp_mux import UdpMux

BUFFER = 4 << 20
HOST = "127.0.0.1"


@dataclass
class Counter:
    datagrams: int = 0
    octets: int = 0
    #: ``done`` is resolved when ``datagrams`` reaches ``target`` (the drain measurement).
    target: int = 0
    done: asyncio.Future[None] | None = None

    def handle(self, data: bytes, _addr: object) -> None:
        if data[:1] == b"d":
            self.datagrams += 1
            self.octets += len(data)
            if self.datagrams == self.target and self.done is not None:
                self.done.set_result(None)


@dataclass
class Row:
    name: str
    received: int  # in the measured window
    octets: int
    wall: float
    cpu: float
    worst_lag: float
    sent: int  # over the sender's whole run
    received_total: int  # over the sender's whole run

    def line(self) -> str:
        rate = self.received / self.wall
        lost = max(0, self.sent - self.received_total)
        lost_pct = 100.0 * lost / self.sent if self.sent else 0.0
        us = 1e6 * self.cpu / self.received if self.received else float("inf")
        return (
            f"{self.name:<28} {rate:>12,.0f} {self.octets / self.wall / 1e6:>8.1f} "
            f"{self.cpu:>6.2f} {us:>9.2f} {lost_pct:>7.1f}% {1e3 * self.worst_lag:>7.1f}"
        )


HEADER = (
    f"{'receive path':<28} {'datagrams/s':>12} {'MB/s':>8} {'CPU s':>6} "
    f"{'CPU us/dg':>9} {'dropped':>8} {'lag ms':>7}"
)


# -- the sender ------------------------------------------------------------------------


def _blast(
    port: int,
    size: int,
    go: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    sent: Synchronized[int],
) -> None:
    """Child process: send ``size``-byte datagrams to ``port`` until ``stop``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    payload = b"d" + bytes(size - 1)
    target = (HOST, port)
    sendto = sock.sendto
    go.wait()
    n = 0
    while not stop.is_set():
        for _ in range(256):
            with contextlib.suppress(OSError):
                sendto(payload, target)
        n += 256
    sent.value = n
    sock.close()


class Sender:
    """A sender process started before the receiver is timed, released by :meth:`go`."""

    def __init__(self, port: int, size: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self._go = ctx.Event()
        self._stop = ctx.Event()
        self._sent: Synchronized[int] = ctx.Value("q", 0)
        self._proc = ctx.Process(
            target=_blast, args=(port, size, self._go, self._stop, self._sent), daemon=True
        )
        self._proc.start()

    def go(self) -> None:
        self._go.set()

    def stop(self) -> int:
        self._stop.set()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        return int(self._sent.value)


# -- the receive paths -----------------------------------------------------------------


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


Setup = Callable[[Counter], Awaitable[tuple[int, Callable[[], Awaitable[None]]]]]


def dgram_path() -> Setup:
    async def setup(counter: Counter) -> tuple[int, Callable[[], Awaitable[None]]]:
        stream = await asyncio_dgram.from_socket(_socket())

        async def reader() -> None:
            with contextlib.suppress(asyncio_dgram.TransportClosed):
                while True:
                    data, addr = await stream.recv()
                    counter.handle(data, addr)

        task = asyncio.create_task(reader())

        async def close() -> None:
            stream.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        return int(stream.sockname[1]), close

    return setup


def reader_path(batch: int, *, into: bool) -> Setup:
    async def setup(counter: Counter) -> tuple[int, Callable[[], Awaitable[None]]]:
        loop = asyncio.get_running_loop()
        sock = _socket()
        buf = bytearray(65536)
        view = memoryview(buf)
        handle = counter.handle

        def readable_into() -> None:
            recv = sock.recvfrom_into
            for _ in range(batch):
                try:
                    n, addr = recv(buf)
                except BlockingIOError:
                    return
                handle(bytes(view[:n]), addr)

        def readable() -> None:
            recv = sock.recvfrom
            for _ in range(batch):
                try:
                    data, addr = recv(65536)
                except BlockingIOError:
                    return
                handle(data, addr)

        loop.add_reader(sock.fileno(), readable_into if into else readable)

        async def close() -> None:
            loop.remove_reader(sock.fileno())
            sock.close()

        return int(sock.getsockname()[1]), close

    return setup


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, counter: Counter) -> None:
        self.datagram_received = counter.handle  # type: ignore[method-assign,assignment]


def protocol_path() -> Setup:
    async def setup(counter: Counter) -> tuple[int, Callable[[], Awaitable[None]]]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(counter), sock=_socket())

        async def close() -> None:
            transport.close()

        return int(transport.get_extra_info("sockname")[1]), close

    return setup


def mux_path() -> Setup:
    async def setup(counter: Counter) -> tuple[int, Callable[[], Awaitable[None]]]:
        mux = await UdpMux.open(HOST, 0, recv_buffer=BUFFER, send_buffer=BUFFER)
        mux.set_krpc_handler(counter.handle)
        return mux.local_address[1], mux.aclose

    return setup


async def drain(name: str, setup: Setup, rounds: int, fill: int, size: int) -> str:
    """Queue ``fill`` datagrams in the kernel, time the loop emptying them; ``rounds`` times."""
    loop = asyncio.get_running_loop()
    counter = Counter()
    port, close = await setup(counter)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"d" + bytes(size - 1)
    wall = cpu = 0.0
    for _ in range(rounds):
        for _ in range(fill):  # the loop is not running: everything waits in the kernel
            sock.sendto(payload, (HOST, port))
        counter.target = counter.datagrams + fill
        counter.done = loop.create_future()
        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.wait_for(counter.done, 30)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - t0
    sock.close()
    await close()
    n = rounds * fill
    return f"{name:<28} {n / wall:>12,.0f} {n * size / wall / 1e6:>8.1f} {1e6 * cpu / n:>9.2f}"


async def measure(name: str, setup: Setup, seconds: float, size: int) -> Row:
    """Receive from a blasting sender process for ``seconds`` (after a short warm-up)."""
    loop = asyncio.get_running_loop()
    counter = Counter()
    port, close = await setup(counter)
    sender = Sender(port, size)
    worst = 0.0
    ticking = True

    async def ticker() -> None:
        nonlocal worst
        while ticking:
            t = loop.time()
            await asyncio.sleep(0.005)
            worst = max(worst, loop.time() - t - 0.005)

    sender.go()
    await asyncio.sleep(0.3)  # warm-up: the sender is running, buffers are full
    tick = asyncio.create_task(ticker())
    n0, b0 = counter.datagrams, counter.octets
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    n1, b1 = counter.datagrams, counter.octets
    c1, t1 = time.process_time(), time.perf_counter()
    ticking = False
    await tick
    sent = sender.stop()
    await asyncio.sleep(0.05)  # let the tail in flight arrive
    total = counter.datagrams
    await close()
    return Row(name, n1 - n0, b1 - b0, t1 - t0, c1 - c0, worst, sent, total)


def _send_path(seconds: float, size: int) -> str:
    """Non-blocking sendto as fast as one loop-less thread can, to a socket that reads nothing."""
    sink = _socket()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    sock.setblocking(False)
    payload = b"d" + bytes(size - 1)
    target = sink.getsockname()
    sent = again = 0
    c0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        for _ in range(256):
            try:
                sock.sendto(payload, target)
                sent += 1
            except BlockingIOError:
                again += 1
    c1, t1 = time.process_time(), time.perf_counter()
    sock.close()
    sink.close()
    return (
        f"{'sendto (non-blocking)':<28} {sent / (t1 - t0):>12,.0f} "
        f"{sent * size / (t1 - t0) / 1e6:>8.1f} {c1 - c0:>6.2f} "
        f"{1e6 * (c1 - c0) / max(1, sent):>8.2f}   EAGAIN: {again}"
    )


def _capacity(size: int) -> tuple[int, int]:
    """``(bytes granted, datagrams held unread)`` for a socket asking for a 4 MiB SO_RCVBUF."""
    sink = _socket()
    granted = sink.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = bytes(size)
    for _ in range(20_000):
        sock.sendto(payload, sink.getsockname())
    held = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            sink.recv(65536)
            held += 1
    sock.close()
    sink.close()
    return granted, held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="live window per row")
    parser.add_argument("--rounds", type=int, default=40, help="buffer fills per drain row")
    parser.add_argument("--size", type=int, default=1400, help="datagram size in bytes")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--batch", type=int, nargs="*", default=[1, 16, 64, 256], help="add_reader batch sizes"
    )
    parser.add_argument("--no-live", action="store_true", help="only the drain measurement")
    args = parser.parse_args()
    paths: list[tuple[str, Setup]] = [("asyncio-dgram recv()", dgram_path())]
    for b in args.batch:
        paths.append((f"add_reader+recvfrom_into/{b}", reader_path(b, into=True)))
    paths.append(("add_reader+recvfrom/64", reader_path(64, into=False)))
    paths.append(("DatagramProtocol", protocol_path()))
    paths.append(("UdpMux", mux_path()))
    granted, held = _capacity(args.size)
    fill = max(1, held * 3 // 4)

    print(f"drain: {args.rounds} x {fill:,} datagrams queued, then received")
    print(f"{'receive path':<28} {'datagrams/s':>12} {'MB/s':>8} {'CPU us/dg':>9}")
    for _ in range(args.repeat):
        for name, setup in paths:
            print(asyncio.run(drain(name, setup, args.rounds, fill, args.size)), flush=True)
    if not args.no_live:
        print()
        print(f"live: a sender process blasting for {args.seconds:g} s")
        print(HEADER)
        for _ in range(args.repeat):
            for name, setup in paths:
                row = asyncio.run(measure(name, setup, args.seconds, args.size))
                print(row.line(), flush=True)
    print()
    print(f"{'send path':<28} {'datagrams/s':>12} {'MB/s':>8} {'CPU s':>6} {'CPU us/dg':>8}")
    print(_send_path(min(args.seconds, 2.0), args.size))
    print()
    print(
        f"receive buffer: {BUFFER >> 20} MiB asked, {granted:,} bytes granted, "
        f"holds {held:,} unread datagrams of {args.size:,} bytes"
    )


if __name__ == "__main__":
    main()
