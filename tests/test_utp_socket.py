"""uTP streams over the shared UDP socket (core/net/utp_socket.py), on 127.0.0.1.

Two ``UdpMux`` + ``UtpSocket`` pairs talk through real sockets; a raw UDP
socket plays the hostile or broken peer (SYN flood, garbage, stray packets).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import socket
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest

from core.net.stream import ByteStream
from core.net.udp_mux import UdpMux
from core.net.utp_socket import (
    RESET_BURST,
    UtpConnectTimeout,
    UtpSocket,
    UtpStream,
)
from core.utp.connection import UtpSettings
from core.utp.packet import ST_DATA, ST_RESET, ST_STATE, ST_SYN, Packet, decode, encode

SMALL = UtpSettings(send_buffer=64 << 10, recv_buffer=64 << 10, connect_timeout=2.0)


async def until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


class Sink:
    """A StreamConsumer that hashes what it gets and records every callback."""

    def __init__(self, bufsize: int = 32 << 10) -> None:
        self.stream: ByteStream | None = None
        self.buf = bytearray(bufsize)
        self.received = 0
        self.data = bytearray()
        self.keep = True
        self.sha = hashlib.sha256()
        self.closed: list[str] = []
        self.opened = 0
        self.writable = 0
        self.writable_event = asyncio.Event()

    def stream_opened(self, stream: ByteStream) -> None:
        self.opened += 1
        self.stream = stream

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buf)

    def buffer_updated(self, nbytes: int) -> None:
        chunk = self.buf[:nbytes]
        self.received += nbytes
        self.sha.update(chunk)
        if self.keep:
            self.data += chunk

    def stream_writable(self) -> None:
        self.writable += 1
        self.writable_event.set()

    def stream_closed(self, reason: str) -> None:
        self.closed.append(reason)


class Echo(Sink):
    """Writes back what it receives, holding reads while its writes are paused."""

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        assert self.stream is not None
        self.stream.write(self.buf[:nbytes])
        if self.stream.write_paused:
            self.stream.pause_reading()

    def stream_writable(self) -> None:
        super().stream_writable()
        assert self.stream is not None
        self.stream.resume_reading()


async def write_all(stream: ByteStream, sink: Sink, data: bytes, chunk: int = 64 << 10) -> None:
    """Write ``data`` as the engine does: stop while ``write_paused``, go on when writable."""
    view = memoryview(data)
    for i in range(0, len(data), chunk):
        while stream.write_paused:
            sink.writable_event.clear()
            await sink.writable_event.wait()
        stream.write(view[i : i + chunk])
        await asyncio.sleep(0)


@dataclass
class Side:
    mux: UdpMux
    sock: UtpSocket
    accepted: list[UtpStream]

    @property
    def addr(self) -> tuple[str, int]:
        return self.mux.local_address


async def make_side(
    settings: UtpSettings = UtpSettings(),  # noqa: B008
    *,
    accept: Callable[[UtpStream], None] | bool | None = True,
    **kw: int,
) -> Side:
    mux = await UdpMux.open("127.0.0.1", 0)
    accepted: list[UtpStream] = []
    on_accept: Callable[[UtpStream], None] | None
    if accept is True:
        on_accept = accepted.append
    elif accept is False or accept is None:
        on_accept = None
    else:
        on_accept = accept
    sock = UtpSocket(mux, settings=settings, on_accept=on_accept, **kw)
    return Side(mux, sock, accepted)


async def close_side(side: Side) -> None:
    await side.sock.aclose()
    await side.mux.aclose()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Side, Side]]:
    a = await make_side(accept=False)
    b = await make_side()
    try:
        yield a, b
    finally:
        await close_side(a)
        await close_side(b)


@pytest.fixture
def raw() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    try:
        yield s
    finally:
        s.close()


def packet(
    kind: int, conn_id: int, seq_nr: int = 1, ack_nr: int = 0, payload: bytes = b""
) -> bytes:
    return encode(
        Packet(
            type=kind,
            conn_id=conn_id,
            timestamp_us=1000,
            timestamp_diff_us=0,
            wnd_size=1 << 20,
            seq_nr=seq_nr,
            ack_nr=ack_nr,
            payload=payload,
        )
    )


def paused(stream: ByteStream) -> bool:
    return stream.write_paused


async def collect(s: socket.socket, into: list[Packet], count: int) -> None:
    """Receive on the raw socket until ``into`` holds ``count`` packets."""

    def enough() -> bool:
        into.extend(drain(s))
        return len(into) >= count

    await until(enough)


def arrived(side: Side) -> int:
    """uTP datagrams that reached the socket: handled, or dropped by the kernel."""
    stats = side.mux.stats()
    return stats.utp_in + (stats.kernel_drops or 0)


async def until_arrived(side: Side, count: int) -> None:
    await until(lambda: arrived(side) >= count)


def drain(s: socket.socket) -> list[Packet]:
    out: list[Packet] = []
    while True:
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return out
        out.append(decode(data))


async def accept_one(client: Side, server: Side, consumer: Sink) -> tuple[UtpStream, Sink]:
    """Connect ``client`` -> ``server``; the server's stream gets a fresh Sink."""
    stream = await client.sock.connect(server.addr, consumer, timeout=5)
    stream.write(b"\x13hi")  # the initiator speaks first, as in BitTorrent
    await until(lambda: bool(server.accepted))
    theirs = Sink()
    server.accepted.pop(0).set_consumer(theirs)
    await until(lambda: theirs.received >= 3)
    return stream, theirs


# -- connecting ---------------------------------------------------------------------------


async def test_connect_accept_and_talk(pair: tuple[Side, Side]) -> None:
    a, b = pair
    mine = Sink()
    stream = await a.sock.connect(b.addr, mine, timeout=5)
    assert mine.opened == 1 and mine.stream is stream
    assert stream.remote_address == b.addr
    stream.write(b"hello ")
    stream.writelines([b"wor", memoryview(b"ld")])
    await until(lambda: bool(b.accepted))
    accepted = b.accepted[0]
    assert accepted.remote_address == a.addr
    theirs = Sink()
    accepted.set_consumer(theirs)
    assert theirs.opened == 1
    await until(lambda: theirs.received == 11)
    assert bytes(theirs.data) == b"hello world"
    accepted.write(b"back")
    await until(lambda: mine.received == 4)
    assert bytes(mine.data) == b"back"
    assert a.sock.stats().connections == 1 and b.sock.stats().connections == 1
    assert b.sock.stats().accepted == 1 and b.sock.stats().half_open == 0
    assert stream.connection_stats().bytes_out >= 11
    assert not mine.closed and not theirs.closed


async def test_echo_10_mb_both_directions(pair: tuple[Side, Side]) -> None:
    a, b = pair
    payload = os.urandom(10 << 20)
    mine = Sink()
    mine.keep = False
    stream = await a.sock.connect(b.addr, mine, timeout=5)
    echo = Echo()
    echo.keep = False
    b.sock.on_accept = lambda s: s.set_consumer(echo)
    async with asyncio.timeout(60):
        await write_all(stream, mine, payload)
        await until(lambda: mine.received >= len(payload), timeout=60)
    assert mine.received == len(payload)
    assert echo.received == len(payload)
    digest = hashlib.sha256(payload).hexdigest()
    assert echo.sha.hexdigest() == digest
    assert mine.sha.hexdigest() == digest
    assert a.sock.stats().bad_packets == 0 and b.sock.stats().bad_packets == 0


async def test_many_concurrent_connections(pair: tuple[Side, Side]) -> None:
    a, b = pair
    echoes: list[Echo] = []

    def accept(s: UtpStream) -> None:
        e = Echo()
        echoes.append(e)
        s.set_consumer(e)

    b.sock.on_accept = accept
    n = 40
    sinks = [Sink() for _ in range(n)]
    streams = await asyncio.gather(*(a.sock.connect(b.addr, s, timeout=5) for s in sinks))
    # every outgoing connection got its own receive id
    assert len({s.key for s in streams}) == n
    payloads = [os.urandom(20_000 + i) for i in range(n)]
    for stream, data in zip(streams, payloads, strict=True):
        stream.write(data)
    await until(lambda: all(s.received == len(p) for s, p in zip(sinks, payloads, strict=True)))
    for sink, data in zip(sinks, payloads, strict=True):
        assert bytes(sink.data) == data
    assert len(echoes) == n
    assert a.sock.stats().connections == n and b.sock.stats().connections == n


async def test_connect_to_a_closed_port_times_out(raw: socket.socket) -> None:
    a = await make_side(UtpSettings(connect_timeout=30.0), accept=False)
    port = raw.getsockname()[1]
    raw.close()  # nobody listens there any more
    try:
        with pytest.raises(UtpConnectTimeout, match="utp: connect timeout") as info:
            await a.sock.connect(("127.0.0.1", port), Sink(), timeout=0.5)
        assert isinstance(info.value, ConnectionError) and isinstance(info.value, TimeoutError)
        await until(lambda: a.sock.stats().connections == 0)
        assert a.sock.stats().connecting == 0
    finally:
        await close_side(a)


async def test_connect_to_silent_peer_times_out(raw: socket.socket) -> None:
    a = await make_side(accept=False)
    try:
        sink = Sink()
        with pytest.raises(TimeoutError, match="utp: connect timeout"):
            await a.sock.connect(raw.getsockname(), sink, timeout=0.3)
        assert sink.opened == 0 and not sink.closed
        # the SYN arrived; nothing follows an attempt that was never answered
        kinds = [p.type for p in drain(raw)]
        assert kinds and set(kinds) == {ST_SYN}
        assert a.sock.stats().connections == 0 and a.sock.stats().connecting == 0
    finally:
        await close_side(a)


async def test_connect_refused_without_acceptor(pair: tuple[Side, Side]) -> None:
    a, b = pair
    with pytest.raises(ConnectionError, match="reset"):
        await b.sock.connect(a.addr, Sink(), timeout=5)  # a has no on_accept
    assert a.sock.stats().syn_dropped == 1 and a.sock.stats().connections == 0
    assert b.sock.stats().connections == 0


# -- closing ------------------------------------------------------------------------------


async def test_close_sends_fin_after_buffered_data(pair: tuple[Side, Side]) -> None:
    a, b = pair
    mine = Sink()
    stream, theirs = await accept_one(a, b, mine)
    tail = os.urandom(3 << 20)
    stream.write(tail)
    stream.close()
    stream.write(b"ignored after close")
    await until(lambda: bool(theirs.closed) and bool(mine.closed))
    assert bytes(theirs.data) == b"\x13hi" + tail
    assert theirs.closed == ["utp: closed by peer"]
    assert len(mine.closed) == 1
    await until(lambda: a.sock.stats().connections == 0 and b.sock.stats().connections == 0)
    await asyncio.sleep(0.05)
    assert len(mine.closed) == 1 and len(theirs.closed) == 1


async def test_abort_sends_reset_and_no_callback(pair: tuple[Side, Side]) -> None:
    a, b = pair
    mine = Sink()
    stream, theirs = await accept_one(a, b, mine)
    stream.write(b"x" * 100_000)
    stream.abort()
    await until(lambda: bool(theirs.closed))
    assert theirs.closed == ["utp: reset by peer"]
    assert mine.closed == []
    assert a.sock.stats().connections == 0
    stream.write(b"nothing happens")
    stream.close()
    await asyncio.sleep(0.05)
    assert mine.closed == [] and len(theirs.closed) == 1


async def test_peer_close_is_reported_after_paused_data(pair: tuple[Side, Side]) -> None:
    a, b = pair
    mine = Sink()
    stream, theirs = await accept_one(a, b, mine)
    assert theirs.stream is not None
    theirs.stream.pause_reading()
    stream.write(b"last words")
    stream.close()
    await until(lambda: b.sock.stats().connections == 0)
    await asyncio.sleep(0.05)
    assert theirs.closed == [] and theirs.received == 3  # held while paused
    theirs.stream.resume_reading()
    await until(lambda: bool(theirs.closed))
    assert bytes(theirs.data) == b"\x13hilast words"


async def test_reset_for_a_forgotten_connection_reaches_the_other_side(
    pair: tuple[Side, Side],
) -> None:
    a, b = pair
    mine = Sink()
    stream, _theirs = await accept_one(a, b, mine)
    # b loses the connection without a word (a crash, a restart on the same port)
    b.sock._streams.clear()
    stream.write(b"anyone there?")
    await until(lambda: bool(mine.closed))
    assert mine.closed == ["utp: reset by peer"]
    assert b.sock.stats().resets_sent == 1 and a.sock.stats().connections == 0


async def test_connect_respects_max_connections() -> None:
    a = await make_side(accept=False, max_connections=1)
    b = await make_side()
    try:
        await a.sock.connect(b.addr, Sink(), timeout=5)
        with pytest.raises(ConnectionError, match="limit"):
            await a.sock.connect(b.addr, Sink(), timeout=5)
    finally:
        await close_side(a)
        await close_side(b)


async def test_socket_aclose_ends_every_stream(pair: tuple[Side, Side]) -> None:
    a, b = pair
    mine = Sink()
    _stream, theirs = await accept_one(a, b, mine)
    await a.sock.aclose()
    assert mine.closed == ["utp: socket closed"]
    await until(lambda: bool(theirs.closed))
    assert theirs.closed == ["utp: reset by peer"]
    with pytest.raises(ConnectionError):
        await a.sock.connect(b.addr, Sink())


# -- flow control ---------------------------------------------------------------------------


async def test_pause_reading_pushes_back_to_the_writer() -> None:
    a = await make_side(SMALL, accept=False)
    b = await make_side(SMALL)
    try:
        mine = Sink()
        stream, theirs = await accept_one(a, b, mine)
        assert theirs.stream is not None
        theirs.stream.pause_reading()
        block = os.urandom(16 << 10)
        sent = 0
        # Write like the engine until the stream says stop; the receiver's
        # window (64 KiB) plus our send buffer (64 KiB) must fill well before 8 MiB.
        async with asyncio.timeout(20):
            while not stream.write_paused:
                stream.write(block)
                sent += len(block)
                assert sent < 8 << 20, "write_paused never came"
                await asyncio.sleep(0.001)
        got_while_paused = theirs.received
        assert got_while_paused == 3  # nothing delivered while paused
        assert stream.connection_stats().bytes_in_flight <= 200 << 10
        assert mine.writable == 0
        theirs.stream.resume_reading()
        await until(lambda: theirs.received == 3 + sent)
        await until(lambda: mine.writable >= 1)
        assert mine.writable >= 1 and not paused(stream)
        assert bytes(theirs.data[3:]) == block * (sent // len(block))
    finally:
        await close_side(a)
        await close_side(b)


async def test_writer_ignoring_write_paused_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.net.utp_socket as mod

    monkeypatch.setattr(mod, "OVERFLOW_LIMIT", 256 << 10)
    a = await make_side(SMALL, accept=False)
    b = await make_side(SMALL)
    try:
        mine = Sink()
        stream, theirs = await accept_one(a, b, mine)
        assert theirs.stream is not None
        theirs.stream.pause_reading()
        for _ in range(100):  # 1.6 MB at once, never looking at write_paused
            stream.write(b"y" * (16 << 10))
        await until(lambda: bool(mine.closed))
        assert "overflow" in mine.closed[0]
        await until(lambda: bool(theirs.closed))
    finally:
        await close_side(a)
        await close_side(b)


# -- hostile and broken input -----------------------------------------------------------------


async def test_syn_flood_is_bounded(raw: socket.socket) -> None:
    max_half_open = 50
    b = await make_side(max_half_open=max_half_open, max_connections=200)
    try:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.take_snapshot()
        total = 10_000
        peak_half_open = 0
        for start in range(0, total, 500):
            for conn_id in range(start, start + 500):
                raw.sendto(packet(ST_SYN, conn_id, seq_nr=conn_id), b.addr)
            await until_arrived(b, start)
            peak_half_open = max(peak_half_open, b.sock.stats().half_open)
            drain(raw)
        await until_arrived(b, total)
        stats = b.sock.stats()
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
        tracemalloc.stop()
        assert peak_half_open <= max_half_open and stats.half_open <= max_half_open
        assert stats.connections <= max_half_open
        assert stats.syn_dropped >= b.mux.stats().utp_in - max_half_open
        assert stats.timers <= 4 * stats.connections + 64
        assert b.accepted == []  # half-open SYNs never reach the acceptor
        # 10,000 SYNs leave at most max_half_open connections' worth of memory
        assert grown < 2 << 20, f"{grown} bytes kept after the flood"
        # refusals are answered, but rate-limited
        assert stats.resets_sent <= RESET_BURST + 100 * 60
        assert stats.resets_suppressed > 0
    finally:
        tracemalloc.stop()
        await close_side(b)


async def test_duplicate_syn_goes_to_its_connection(raw: socket.socket) -> None:
    b = await make_side()
    try:
        raw.sendto(packet(ST_SYN, 777, seq_nr=5), b.addr)
        await until(lambda: b.sock.stats().connections == 1)
        raw.sendto(packet(ST_SYN, 777, seq_nr=5), b.addr)
        answers: list[Packet] = []
        await collect(raw, answers, 2)
        assert {p.type for p in answers} == {ST_STATE}
        assert all(p.conn_id == 777 and p.ack_nr == 5 for p in answers)
        stats = b.sock.stats()
        assert stats.connections == 1 and stats.half_open == 1 and stats.syn_dropped == 0
    finally:
        await close_side(b)


async def test_unknown_packets_get_a_reset_but_resets_do_not(raw: socket.socket) -> None:
    b = await make_side()
    try:
        raw.sendto(packet(ST_DATA, 4242, seq_nr=9, payload=b"stray"), b.addr)
        answers: list[Packet] = []
        await collect(raw, answers, 1)
        assert answers[0].type == ST_RESET
        assert answers[0].conn_id == 4242 and answers[0].ack_nr == 9
        raw.sendto(packet(ST_RESET, 4243), b.addr)
        raw.sendto(packet(ST_STATE, 4244), b.addr)
        await until(lambda: b.sock.stats().unknown_packets == 3)
        await collect(raw, answers, 2)
        assert b.sock.stats().resets_sent == 2  # none for the RESET
    finally:
        await close_side(b)


async def test_reset_flood_answers_are_rate_limited(raw: socket.socket) -> None:
    b = await make_side()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(1000):
            raw.sendto(packet(ST_STATE, i), b.addr)
        await until_arrived(b, 1000)
        elapsed = loop.time() - start
        stats = b.sock.stats()
        assert stats.resets_sent <= RESET_BURST + 100 * elapsed + 1
        assert stats.resets_sent + stats.resets_suppressed == stats.unknown_packets
    finally:
        await close_side(b)


GARBAGE = [
    b"\x01",
    b"\x41" + bytes(5),
    b"\x11" + bytes(18),
    b"\x21\x07" + bytes(18),  # unknown extension with no room for it
    b"\x01\x01" + bytes(18) + b"\x00\x05",  # SACK extension truncated
    b"\x41\x00" + bytes(18) + os.urandom(10),
]


async def test_garbage_datagrams_are_counted_not_raised(
    pair: tuple[Side, Side], raw: socket.socket
) -> None:
    a, b = pair
    mine = Sink()
    stream, theirs = await accept_one(a, b, mine)
    for data in GARBAGE:
        raw.sendto(data, b.addr)
    for _ in range(200):
        raw.sendto(bytes([0x01 | (os.urandom(1)[0] % 5) << 4]) + os.urandom(30), b.addr)
    await until(lambda: b.mux.stats().utp_in >= 1 + len(GARBAGE) + 200)
    stats = b.sock.stats()
    assert stats.bad_packets + stats.unknown_packets + stats.syn_dropped + stats.accepted > 0
    assert stats.bad_packets >= 4
    assert b.mux.stats().handler_errors == 0
    # the real connection is unharmed
    stream.write(b"still here")
    await until(lambda: theirs.received == 13)
    assert theirs.closed == []


# -- the fast paths: GSO/GRO, recvmmsg, batches -----------------------------------------


@pytest.mark.parametrize(
    ("sender_offload", "receiver_mode"),
    [(True, "coalescing"), (False, "coalescing"), (False, "multi"), (True, "single")],
)
async def test_bulk_transfer_over_every_send_and_read_path(
    sender_offload: bool, receiver_mode: str
) -> None:
    """4 MiB each way through GSO or plain sends, and GRO, recvmmsg or plain reads: intact."""
    from tests.test_udp_mux import force_read_mode

    a_mux = await UdpMux.open("127.0.0.1", 0, offload=sender_offload)
    b_mux = await UdpMux.open("127.0.0.1", 0)
    force_read_mode(b_mux, receiver_mode)
    a = UtpSocket(a_mux)
    echo = Echo()
    echo.keep = False
    b = UtpSocket(b_mux, on_accept=lambda s: s.set_consumer(echo))
    try:
        payload = os.urandom(4 << 20)
        mine = Sink()
        mine.keep = False
        stream = await a.connect(b_mux.local_address, mine, timeout=5)
        async with asyncio.timeout(60):
            await write_all(stream, mine, payload)
            await until(lambda: mine.received >= len(payload), timeout=60)
        digest = hashlib.sha256(payload).hexdigest()
        assert echo.sha.hexdigest() == digest and mine.sha.hexdigest() == digest
        assert a.stats().bad_packets == 0 and b.stats().bad_packets == 0
        if sender_offload and a_mux.stats().gso:
            assert a_mux.stats().gso_sends > 0  # the bulk went out in GSO sends
        st = stream.connection_stats()
        # every DATA datagram is counted once by the connection and once by the mux
        assert a.stats().packets_out == st.packets_out + a.stats().resets_sent
    finally:
        await a.aclose()
        await b.aclose()
        await a_mux.aclose()
        await b_mux.aclose()


async def test_a_batch_mixing_connections_strays_and_garbage(
    pair: tuple[Side, Side], raw: socket.socket
) -> None:
    """One wake-up's batch holding two connections' packets, garbage and a stray: each handled."""
    a, b = pair
    sinks = [Sink(), Sink()]
    streams: list[UtpStream] = []
    for k, sink in enumerate(sinks):
        stream = await a.sock.connect(b.addr, sink, timeout=5)
        stream.write(bytes([65 + k]))  # the initiator speaks first: the acceptor hears of it
        streams.append(stream)
        await until(lambda: len(b.accepted) == len(streams))
    theirs = [Sink(), Sink()]
    for stream, sink in zip(b.accepted, theirs, strict=True):
        stream.set_consumer(sink)
    # Interleave writes so the receiver's batches alternate between the connections.
    for i in range(50):
        for k, stream in enumerate(streams):
            stream.write(bytes([65 + k]) * (700 + i))
        raw.sendto(b"\x01" + bytes(10), b.addr)  # too short for a header
        raw.sendto(packet(ST_STATE, 31337), b.addr)  # no such connection
    total = 1 + sum(700 + i for i in range(50))
    await until(lambda: all(s.received == total for s in theirs))
    for k, sink in enumerate(theirs):
        assert bytes(sink.data) == bytes([65 + k]) * total
    stats = b.sock.stats()
    assert stats.bad_packets == 50 and stats.unknown_packets == 50
