"""The peer driver runs over any ``ByteStream``, not only TCP: the seam uTP and MSE plug into.

Two :class:`~core.net.peer_io.PeerDriver`s talk through an in-memory pair of
streams (no sockets): they handshake, one asks for a block and the other
serves it through the corked zero-copy path.  The same runs through an XOR
"cipher" layer stacked on each end, shaped like an MSE transform: a stream to
the driver, a consumer of the stream below, decrypting in place in the
driver's own receive buffer.  Flow control, closing and read rate limits go
through the seam too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from core.net.peer_io import PeerDriver
from core.net.stream import Address, ByteStream, StreamConsumer, WriteData
from core.ratelimit import TokenBucket
from core.wire import (
    BLOCK_SIZE,
    Event,
    HandshakeReceived,
    HaveAll,
    Interested,
    Lengths,
    PeerConnection,
    Piece,
    RemoteInfoHash,
    Request,
    Unchoke,
)

INFO_HASH = bytes(range(20))
LENGTHS = Lengths(piece_length=4 * BLOCK_SIZE, total_length=10 * BLOCK_SIZE)
BLOCK = bytes(i % 251 for i in range(BLOCK_SIZE))
#: Bytes a memory stream hands up per read: frames arrive split, as from a socket.
READ_SIZE = 1000


class MemoryStream:
    """One end of an in-memory pipe: what the other end writes arrives here.

    Delivery is a loop turn later, in ``READ_SIZE`` pieces written into the
    consumer's own buffer (``get_buffer``/``buffer_updated``), like a socket.
    ``high_water`` bytes undelivered at the other end pause our writes.
    """

    def __init__(self, consumer: StreamConsumer, address: Address, high_water: int) -> None:
        self.consumer = consumer
        self.remote_address = address
        self.high_water = high_water
        self.write_paused = False
        self.other: MemoryStream | None = None
        self.reading = True
        self.pauses = 0
        self.ended = False
        self._inbox = bytearray()
        self._scheduled = False

    @staticmethod
    def pair(
        a: StreamConsumer, b: StreamConsumer, high_water: int = 1 << 20
    ) -> tuple[MemoryStream, MemoryStream]:
        sa = MemoryStream(a, ("10.0.0.2", 6882), high_water)
        sb = MemoryStream(b, ("10.0.0.1", 6881), high_water)
        sa.other, sb.other = sb, sa
        return sa, sb

    def open(self) -> None:
        self.consumer.stream_opened(self)

    # ByteStream
    def write(self, data: WriteData) -> None:
        assert self.other is not None
        if not self.ended:
            self.other.receive(bytes(data))
            if len(self.other._inbox) > self.high_water:
                self.write_paused = True

    def writelines(self, parts: Iterable[WriteData]) -> None:
        self.write(b"".join(parts))

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True
        self._schedule()

    def close(self) -> None:
        self._end("connection closed")
        self._hang_up()

    def abort(self) -> None:
        self.ended = True
        self._hang_up()

    # the pipe
    def receive(self, data: bytes) -> None:
        self._inbox += data
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        while self._inbox and self.reading and not self.ended:
            buf = self.consumer.get_buffer(-1)
            n = min(len(buf), len(self._inbox), READ_SIZE)
            buf[:n] = self._inbox[:n]
            del buf
            del self._inbox[:n]
            self.consumer.buffer_updated(n)
        other = self.other
        if other is not None and other.write_paused and len(self._inbox) <= other.high_water // 4:
            other.write_paused = False
            if not other.ended:
                other.consumer.stream_writable()

    def _end(self, reason: str) -> None:
        if not self.ended:
            self.ended = True
            self.consumer.stream_closed(reason)

    def _hang_up(self) -> None:
        if self.other is not None:
            asyncio.get_running_loop().call_soon(self.other._end, "connection closed")


class XorLayer:
    """A stream transform shaped like MSE: XOR stands in for RC4.

    A ``ByteStream`` to the consumer above and a ``StreamConsumer`` of the
    stream below.  Received bytes land in the consumer's buffer and are
    decoded there in place: the zero-copy read path survives the layer.
    """

    def __init__(self, upper: StreamConsumer, key: int = 0x5A) -> None:
        self.upper = upper
        self.key = key
        self.lower: ByteStream | None = None
        self._view: memoryview | None = None

    def _code(self, data: WriteData) -> bytes:
        return bytes(b ^ self.key for b in bytes(data))

    # StreamConsumer of the stream below
    def stream_opened(self, stream: ByteStream) -> None:
        self.lower = stream
        self.upper.stream_opened(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        self._view = self.upper.get_buffer(sizehint)
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        view, self._view = self._view, None
        assert view is not None
        view[:nbytes] = self._code(view[:nbytes])
        view.release()
        self.upper.buffer_updated(nbytes)

    def stream_writable(self) -> None:
        self.upper.stream_writable()

    def stream_closed(self, reason: str) -> None:
        self.upper.stream_closed(reason)

    # ByteStream to the consumer above
    @property
    def remote_address(self) -> Address:
        assert self.lower is not None
        return self.lower.remote_address

    @property
    def write_paused(self) -> bool:
        return self.lower is not None and self.lower.write_paused

    def write(self, data: WriteData) -> None:
        assert self.lower is not None
        self.lower.write(self._code(data))

    def writelines(self, parts: Iterable[WriteData]) -> None:
        assert self.lower is not None
        self.lower.writelines([self._code(p) for p in parts])

    def pause_reading(self) -> None:
        assert self.lower is not None
        self.lower.pause_reading()

    def resume_reading(self) -> None:
        assert self.lower is not None
        self.lower.resume_reading()

    def close(self) -> None:
        assert self.lower is not None
        self.lower.close()

    def abort(self) -> None:
        assert self.lower is not None
        self.lower.abort()


@dataclass
class Owner:
    """A ``PeerOwner`` playing a tiny leecher or seeder, recording what it hears."""

    seeder: bool
    events: list[Event] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    writable: int = 0
    got: asyncio.Event = field(default_factory=asyncio.Event)

    def peer_event(self, proto: PeerDriver, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, RemoteInfoHash):
            assert event.info_hash == INFO_HASH
            proto.accept(LENGTHS)
        elif isinstance(event, HandshakeReceived):
            if self.seeder:
                proto.send_many([HaveAll(), Unchoke()])
            else:
                proto.send(Interested())
        elif isinstance(event, Unchoke):
            proto.send(Request(1, BLOCK_SIZE, BLOCK_SIZE))
        elif isinstance(event, Request):
            # A view, as the engine serves from piece buffers: corked, not copied.
            assert proto.send_piece(event.index, event.begin, memoryview(BLOCK))
        elif isinstance(event, Piece):
            self.got.set()

    def peer_closed(self, proto: PeerDriver, reason: str) -> None:
        self.closed.append(reason)
        self.got.set()

    def peer_writable(self, proto: PeerDriver) -> None:
        self.writable += 1


def drivers(
    *, download_bucket: TokenBucket | None = None
) -> tuple[PeerDriver, Owner, PeerDriver, Owner]:
    leech, seed = Owner(seeder=False), Owner(seeder=True)
    a = PeerDriver(
        PeerConnection(b"-LE0001-" + b"a" * 12, INFO_HASH, LENGTHS),
        leech,
        outgoing=True,
        download_bucket=download_bucket,
    )
    b = PeerDriver(PeerConnection(b"-SE0001-" + b"b" * 12, None), seed, outgoing=False)
    return a, leech, b, seed


def connect(
    a: PeerDriver, b: PeerDriver, *, layered: bool, high_water: int = 1 << 20
) -> tuple[MemoryStream, MemoryStream]:
    """Open a stream pair between the drivers (optionally through XOR layers)."""
    ua: StreamConsumer = XorLayer(a) if layered else a
    ub: StreamConsumer = XorLayer(b) if layered else b
    sa, sb = MemoryStream.pair(ua, ub, high_water)
    sb.open()
    sa.open()
    return sa, sb


@pytest.mark.parametrize("layered", [False, True], ids=["plain", "xor-layer"])
async def test_two_drivers_exchange_a_block_over_memory_streams(layered: bool) -> None:
    a, leech, b, seed = drivers()
    connect(a, b, layered=layered)
    await asyncio.wait_for(leech.got.wait(), 5)
    pieces = [e for e in leech.events if isinstance(e, Piece)]
    assert [(p.index, p.begin, bytes(p.data)) for p in pieces] == [(1, BLOCK_SIZE, BLOCK)]
    assert any(isinstance(e, RemoteInfoHash) for e in seed.events)
    assert isinstance(leech.events[0], HandshakeReceived)
    assert a.conn.peer_id == b"-SE0001-" + b"b" * 12
    assert a.address == ("10.0.0.2", 6882) and b.address == ("10.0.0.1", 6881)
    await asyncio.sleep(0)
    # Every byte one side wrote was read by the other, handshakes included.
    assert a.bytes_written == b.bytes_read > 68
    assert b.bytes_written == a.bytes_read > BLOCK_SIZE
    assert not leech.closed and not seed.closed
    a.close("done")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert leech.closed == ["done"]
    assert seed.closed == ["connection closed"]
    assert b.closed and b.close_reason == "connection closed"


async def test_write_back_pressure_reaches_the_owner() -> None:
    """``write_paused`` comes from the stream; its drain reaches ``peer_writable``."""
    a, leech, b, seed = drivers()
    _sa, sb = connect(a, b, layered=True, high_water=BLOCK_SIZE // 2)
    await asyncio.wait_for(leech.got.wait(), 5)
    # The seeder's block overflowed the pipe's high water: paused, then drained.
    assert not b.write_paused
    assert seed.writable >= 1
    sb.write_paused = True
    assert b.write_paused


async def test_read_rate_limit_pauses_the_stream() -> None:
    """The driver's download bucket throttles through ``pause_reading``, whatever the stream."""
    bucket = TokenBucket(256 << 10, burst=1024, now=time.monotonic())
    a, leech, b, _seed = drivers(download_bucket=bucket)
    sa, _sb = connect(a, b, layered=False)
    await asyncio.wait_for(leech.got.wait(), 5)
    assert sa.pauses >= 1
    deadline = time.monotonic() + 5
    while not sa.reading and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert sa.reading  # resumed once the bucket refilled
    assert not a.closed
