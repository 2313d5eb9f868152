"""The shared UDP socket (core/net/udp_mux.py), over real sockets on 127.0.0.1 and ::1."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import ConfigError
from core.net.udp_mux import BATCH, Addr, UdpMux, normalise_address

UTP_BYTES = (0x01, 0x11, 0x21, 0x31, 0x41)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")


@pytest.fixture
async def mux() -> AsyncIterator[UdpMux]:
    m = await UdpMux.open("127.0.0.1", 0)
    try:
        yield m
    finally:
        await m.aclose()


@pytest.fixture
def client() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        yield s
    finally:
        s.close()


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[bytes, Addr]] = []

    def __call__(self, data: bytes, addr: Addr) -> None:
        self.got.append((data, addr))


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.002)


# -- routing -----------------------------------------------------------------------------


async def test_routes_by_first_byte(mux: UdpMux, client: socket.socket) -> None:
    krpc, utp = Recorder(), Recorder()
    mux.set_krpc_handler(krpc)
    mux.set_utp_handler(utp)
    me = client.getsockname()
    client.sendto(b"d1:y1:qe", mux.local_address)
    for b in UTP_BYTES:
        client.sendto(bytes([b]) + b"\x00" * 19, mux.local_address)
    # Near misses: uTP version 2, type 5, other bencode values, text, nothing.
    unknown = [b"\x02" + bytes(19), b"\x51" + bytes(19), b"\x00", b"li1ee", b"hello", b""]
    for data in unknown:
        client.sendto(data, mux.local_address)
    client.sendto(b"d1:y1:re", mux.local_address)  # after the unknown ones: still routed
    await until(lambda: mux.stats().datagrams_in == 1 + 5 + len(unknown) + 1)

    assert krpc.got == [(b"d1:y1:qe", me), (b"d1:y1:re", me)]
    assert [d[0] for d, _ in utp.got] == list(UTP_BYTES)
    assert all(a == me and len(d) == 20 for d, a in utp.got)
    stats = mux.stats()
    assert (stats.krpc_in, stats.utp_in, stats.unknown_in) == (2, 5, len(unknown))
    assert stats.krpc_bytes_in == 16 and stats.utp_bytes_in == 100
    assert stats.bytes_in == 16 + 100 + sum(map(len, unknown))
    assert stats.dropped_in == len(unknown) and stats.unhandled_in == 0


async def test_route_without_handler_is_counted_and_dropped(
    mux: UdpMux, client: socket.socket
) -> None:
    krpc = Recorder()
    mux.set_krpc_handler(krpc)
    client.sendto(b"\x41" + bytes(19), mux.local_address)  # uTP SYN, no uTP handler yet
    client.sendto(b"de", mux.local_address)
    await until(lambda: len(krpc.got) == 1)
    mux.set_krpc_handler(None)
    client.sendto(b"de", mux.local_address)
    await until(lambda: mux.stats().datagrams_in == 3)
    stats = mux.stats()
    assert len(krpc.got) == 1
    assert stats.unhandled_in == 2 and stats.dropped_in == 2 and stats.unknown_in == 0


async def test_oversized_datagram_arrives_whole(mux: UdpMux, client: socket.socket) -> None:
    krpc = Recorder()
    mux.set_krpc_handler(krpc)
    big = b"d" + bytes(range(256)) * 255 + b"x" * 226  # 65,507 bytes: IPv4's largest payload
    assert len(big) == 65_507
    client.sendto(big, mux.local_address)
    client.sendto(b"de", mux.local_address)
    await until(lambda: len(krpc.got) == 2)
    assert krpc.got[0][0] == big and krpc.got[1][0] == b"de"
    assert mux.stats().krpc_bytes_in == 65_509


# -- handler failures --------------------------------------------------------------------


async def test_a_raising_handler_is_counted_and_the_reader_survives(
    mux: UdpMux, client: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    good: list[bytes] = []

    def handler(data: bytes, addr: Addr) -> None:
        if data.startswith(b"dboom"):
            raise ValueError("handler bug")
        good.append(data)

    mux.set_krpc_handler(handler)
    with caplog.at_level(logging.ERROR, logger="core.net.udp_mux"):
        for i in range(10):
            client.sendto(b"dboom%d" % i, mux.local_address)
        client.sendto(b"dfine", mux.local_address)
        await until(lambda: good == [b"dfine"])
    assert mux.stats().handler_errors == 10
    # Logged with a traceback, but not once per datagram of a flood: 1st, 2nd, 4th, 8th.
    records = [r for r in caplog.records if r.name == "core.net.udp_mux"]
    assert len(records) == 4 and all(r.exc_info for r in records)


# -- addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sockaddr", "expected"),
    [
        (("192.0.2.1", 6881), ("192.0.2.1", 6881)),
        (("::ffff:192.0.2.1", 6881, 0, 0), ("192.0.2.1", 6881)),
        (("::ffff:127.0.0.1", 1, 0, 0), ("127.0.0.1", 1)),
        (("fe80::1%eth0", 6881, 0, 2), ("fe80::1", 6881)),
        (("fe80::1%2", 6881, 0, 2), ("fe80::1", 6881)),
        (("2001:db8::5", 51413, 0, 0), ("2001:db8::5", 51413)),
        (("::1", 7, 0, 0), ("::1", 7)),
        (("::1.2.3.4", 7, 0, 0), ("::102:304", 7)),  # IPv4-compatible: not mapped, reformatted
    ],
)
def test_normalise_address(sockaddr: tuple[object, ...], expected: Addr) -> None:
    assert normalise_address(sockaddr) == expected


def _zero_hextets(value: int, mask: int) -> int:
    """``value`` with the 16-bit groups picked by ``mask``'s bits zeroed: runs of zeros."""
    return value & ~sum(0xFFFF << (16 * i) for i in range(8) if mask >> i & 1)


#: IPv6 addresses with runs of zeros (where spellings could differ), v4-mapped and v4-compatible.
_IPV6 = (
    st.builds(_zero_hextets, st.integers(0, 2**128 - 1), st.integers(0, 255))
    | st.integers(0, 2**32 - 1).map(lambda v: 0xFFFF << 32 | v)
    | st.integers(0, 2**32 - 1)
)


@given(_IPV6, st.integers(0, 65535))
def test_normalise_address_agrees_with_ipaddress(value: int, port: int) -> None:
    """Whatever inet_ntop writes (as recvfrom does), we give ipaddress's spelling, mapped as v4."""
    ip = ipaddress.IPv6Address(value)
    text = socket.inet_ntop(socket.AF_INET6, ip.packed)
    expected = ip.ipv4_mapped or ip
    assert normalise_address((text, port, 0, 0)) == (str(expected), port)


@needs_ipv6
async def test_ipv6_socket_routes_and_normalises() -> None:
    m = await UdpMux.open("::1", 0)
    try:
        assert m.family == socket.AF_INET6 and m.local_address[0] == "::1"
        assert m._sock is not None
        assert m._sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        krpc = Recorder()
        m.set_krpc_handler(krpc)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
            c.bind(("::1", 0))
            c.sendto(b"de", m.local_address)
            await until(lambda: len(krpc.got) == 1)
            assert krpc.got == [(b"de", ("::1", c.getsockname()[1]))]
            # and back, over the same socket
            assert m.sendto(b"d2:ok", ("::1", c.getsockname()[1]))
            c.settimeout(5)
            assert c.recvfrom(100)[0] == b"d2:ok"
        assert not m.sendto(b"de", ("127.0.0.1", 9))  # IPv4 goes through the IPv4 mux
        assert m.stats().send_errors == 1
    finally:
        await m.aclose()


# -- sending -----------------------------------------------------------------------------


async def test_sendto_delivers_and_counts(mux: UdpMux, client: socket.socket) -> None:
    client.settimeout(5)
    assert mux.sendto(b"d1:ai1ee", client.getsockname())
    assert mux.sendto(b"\x21" + bytes(19), client.getsockname())
    assert client.recvfrom(100) == (b"d1:ai1ee", mux.local_address)
    assert client.recvfrom(100)[0][0] == 0x21
    stats = mux.stats()
    assert (stats.datagrams_out, stats.bytes_out) == (2, 28)
    assert stats.dropped_out == 0 and stats.send_errors == 0


async def test_sendto_a_closed_port_does_not_raise(mux: UdpMux, client: socket.socket) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
        gone.bind(("127.0.0.1", 0))
        closed = gone.getsockname()
    krpc = Recorder()
    mux.set_krpc_handler(krpc)
    for _ in range(20):  # the ICMP port-unreachables come back to our socket
        mux.sendto(b"d4:ping", closed)
        await asyncio.sleep(0)
    client.sendto(b"dstill-reading", mux.local_address)
    await until(lambda: len(krpc.got) == 1)
    assert mux.sendto(b"dx", client.getsockname())
    assert mux.stats().datagrams_out + mux.stats().send_errors == 21


@pytest.mark.parametrize(
    "addr",
    [
        ("localhost", 6881),  # a name would be a blocking DNS lookup on the loop
        ("::1", 6881),  # the other family
        ("127.0.0.1", 70_000),
        ("127.0.0.1", -1),
        ("127.0.0.1", 0),
        ("300.1.1.1", 6881),
        (None, 6881),
        ("127.0.0.1",),
    ],
)
async def test_sendto_refuses_unusable_addresses(mux: UdpMux, addr: object) -> None:
    assert mux.sendto(b"de", addr) is False  # type: ignore[arg-type]
    assert mux.stats().send_errors == 1 and mux.stats().datagrams_out == 0


# -- lifecycle ---------------------------------------------------------------------------


async def test_aclose_is_idempotent_and_frees_the_port(client: socket.socket) -> None:
    m = await UdpMux.open("127.0.0.1", 0)
    krpc = Recorder()
    m.set_krpc_handler(krpc)
    port = m.local_address[1]
    client.sendto(b"dqueued", ("127.0.0.1", port))  # waits in the kernel: the loop is not running
    await m.aclose()
    await m.aclose()
    assert m.closed
    assert m.sendto(b"de", client.getsockname()) is False
    assert m.stats().dropped_out == 1
    again = await UdpMux.open("127.0.0.1", port)  # re-bind works
    try:
        assert again.local_address == ("127.0.0.1", port)
        again.set_krpc_handler(krpc)
        client.sendto(b"de", ("127.0.0.1", port))
        await until(lambda: len(krpc.got) == 1)
        assert krpc.got == [(b"de", client.getsockname())]  # never b"dqueued"
        assert again.stats().krpc_in == 1 and m.stats().datagrams_in == 0
    finally:
        await again.aclose()


async def test_open_errors_are_typed(mux: UdpMux) -> None:
    for host in ("localhost", "not an address", "1.2.3"):
        with pytest.raises(ConfigError):
            await UdpMux.open(host, 0)
    for port in (-1, 65_536):
        with pytest.raises(ConfigError):
            await UdpMux.open("127.0.0.1", port)
    with pytest.raises(OSError):  # in use: no SO_REUSEADDR, two muxes never share a port
        await UdpMux.open("127.0.0.1", mux.local_address[1])


async def test_buffer_sizes_are_what_the_kernel_granted() -> None:
    small = await UdpMux.open("127.0.0.1", 0, recv_buffer=64 << 10, send_buffer=64 << 10)
    try:
        stats = small.stats()
        # Linux doubles what it grants (bookkeeping); others report it as asked.
        assert stats.recv_buffer in (64 << 10, 128 << 10)
        assert stats.send_buffer in (64 << 10, 128 << 10)
    finally:
        await small.aclose()


# -- load --------------------------------------------------------------------------------


async def test_a_wake_up_handles_at_most_a_batch(mux: UdpMux, client: socket.socket) -> None:
    """With 5 batches queued, the loop turns between batches (other callbacks run)."""
    turns = 0
    per_turn: dict[int, int] = {}

    def handler(data: bytes, addr: Addr) -> None:
        per_turn[turns] = per_turn.get(turns, 0) + 1

    mux.set_krpc_handler(handler)
    total = 5 * BATCH
    for _ in range(total):  # the loop is not running: all of them wait in the kernel
        client.sendto(b"de", mux.local_address)

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    try:
        await until(lambda: sum(per_turn.values()) == total)
    finally:
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter
    assert max(per_turn.values()) == BATCH
    assert len(per_turn) >= 5
    assert mux.stats().full_batches >= 5


async def test_a_burst_does_not_block_the_loop(mux: UdpMux) -> None:
    """10,000 datagrams as fast as a thread can send: a 10 ms sleep elsewhere still wakes in time.

    Every datagram is either received or counted as dropped by the kernel
    (the receive buffer is the bound on what waits).
    """
    received = 0

    def handler(data: bytes, addr: Addr) -> None:
        nonlocal received
        received += 1
        sum(data[:64])  # a little work per datagram

    mux.set_krpc_handler(handler)
    worst = 0.0
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.01)
            worst = max(worst, loop.time() - t)

    def blast() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            payload = b"d" + bytes(1399)
            for _ in range(10_000):
                s.sendto(payload, mux.local_address)
        return 10_000

    tick = asyncio.create_task(ticker())
    sent = await asyncio.to_thread(blast)
    previous = -1
    while received != previous:  # until the socket has been quiet for a moment
        previous = received
        await asyncio.sleep(0.1)
    stop.set()
    await tick
    assert worst < 0.2, f"the loop was blocked for {worst:.3f} s"
    stats = mux.stats()
    assert stats.krpc_in == received > 0
    if stats.kernel_drops is not None:
        assert received + stats.kernel_drops == sent


async def test_what_overflows_the_receive_buffer_is_counted(client: socket.socket) -> None:
    """The kernel's receive buffer is the queue: past it, datagrams are dropped and counted."""
    m = await UdpMux.open("127.0.0.1", 0, recv_buffer=64 << 10)
    try:
        if m.stats().kernel_drops is None:
            pytest.skip("the platform does not report socket drops")
        received = Recorder()
        m.set_krpc_handler(received)
        for _ in range(1000):  # the loop is not running: nothing is read meanwhile
            client.sendto(b"d" + bytes(1399), m.local_address)
        await until(lambda: m.stats().datagrams_in + (m.stats().kernel_drops or 0) == 1000)
        await asyncio.sleep(0.05)
        stats = m.stats()
        assert 0 < len(received.got) < 1000
        assert stats.kernel_drops == 1000 - len(received.got)
    finally:
        await m.aclose()
    assert m.stats().kernel_drops == stats.kernel_drops  # still known once closed


async def test_constructor_takes_a_bound_socket() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    m = UdpMux(s)
    try:
        assert m.local_address == s.getsockname() and m.family == socket.AF_INET
    finally:
        await m.aclose()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, pytest.raises(ConfigError):
        UdpMux(tcp)


# -- batches: GSO sends, GRO reads, the uTP batch route ----------------------------------


class BatchRecorder:
    def __init__(self) -> None:
        self.got: list[tuple[bytes, Addr]] = []
        self.calls = 0

    def __call__(self, datagrams: list[memoryview], addrs: list[Addr]) -> None:
        self.calls += 1  # the views are only valid now: copies are kept
        self.got.extend((bytes(d), a) for d, a in zip(datagrams, addrs, strict=True))


def _utp_datagrams(sizes: list[int]) -> list[bytes]:
    """Distinct uTP-looking datagrams (first byte 0x21) of the given sizes."""
    return [bytes([0x21]) + bytes([i % 256]) * (size - 1) for i, size in enumerate(sizes)]


@pytest.mark.parametrize("offload", [True, False])
@pytest.mark.parametrize(
    "sizes",
    [
        [1420] * 100,  # two full GSO runs (64 segments each at most) and a rest
        [1420] * 10 + [700] + [1420] * 5,  # a shorter one ends a run
        [20, 1420, 1420, 20, 20, 30, 1420],  # acks between data: runs of one
        [1420] * 3 + [1500] + [1420],  # a longer one cannot join a run
    ],
)
async def test_sendmany_arrives_as_the_same_datagrams_in_order(
    offload: bool, sizes: list[int]
) -> None:
    """GSO or not, GRO or not: the receiver's handler sees exactly what was sent."""
    a = await UdpMux.open("127.0.0.1", 0, offload=offload)
    b = await UdpMux.open("127.0.0.1", 0, offload=offload)
    try:
        got = BatchRecorder()
        b.set_utp_batch_handler(got)
        datagrams = _utp_datagrams(sizes)
        assert a.sendmany(datagrams, b.local_address) == len(datagrams)
        await until(lambda: len(got.got) == len(datagrams))
        assert [d for d, _ in got.got] == datagrams
        assert {addr for _, addr in got.got} == {a.local_address}
        sa, sb = a.stats(), b.stats()
        assert sa.datagrams_out == len(datagrams) and sa.bytes_out == sum(sizes)
        assert sb.utp_in == len(datagrams) and sb.utp_bytes_in == sum(sizes)
        if offload and sa.gso:
            assert sa.gso_sends >= 1
            if sb.gro:  # on loopback a GSO send reaches a GRO socket whole
                assert sb.gro_reads >= 1
        else:
            assert sa.gso_sends == 0 and sb.gro_reads == 0
    finally:
        await a.aclose()
        await b.aclose()


async def test_sendmany_counts_what_it_could_not_send(mux: UdpMux) -> None:
    assert mux.sendmany(_utp_datagrams([100, 100]), ("localhost", 1)) == 0
    assert mux.stats().send_errors == 2
    await mux.aclose()
    assert mux.sendmany(_utp_datagrams([100, 100, 100]), ("127.0.0.1", 1)) == 0
    assert mux.stats().dropped_out == 3


async def test_a_refused_gso_send_goes_one_by_one_and_gso_is_switched_off(
    client: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path without checksum offload refuses GSO with EIO: the datagrams still go."""
    m = await UdpMux.open("127.0.0.1", 0)
    try:
        if not m.stats().gso:
            pytest.skip("no UDP GSO here")
        sock = m._sock
        assert sock is not None

        class NoGso:
            def __getattr__(self, name: str) -> object:
                return getattr(sock, name)

            def sendmsg(self, *args: object) -> int:
                raise OSError(errno.EIO, "no checksum offload")

        monkeypatch.setattr(m, "_sock", NoGso())
        datagrams = _utp_datagrams([1000] * 5)
        assert m.sendmany(datagrams, client.getsockname()) == 5
        client.settimeout(5)
        assert [client.recv(2000) for _ in range(5)] == datagrams
        assert not m.stats().gso and m.stats().datagrams_out == 5
    finally:
        monkeypatch.undo()
        await m.aclose()


async def test_the_utp_batch_route_gets_a_wake_up_at_a_time(
    mux: UdpMux, client: socket.socket
) -> None:
    """uTP datagrams of one wake-up come in one call, in order; KRPC ones as before."""
    got = BatchRecorder()
    krpc = Recorder()
    mux.set_utp_batch_handler(got)
    mux.set_krpc_handler(krpc)
    datagrams = _utp_datagrams([30] * 10)
    for i, datagram in enumerate(datagrams):
        client.sendto(datagram, mux.local_address)
        if i == 4:
            client.sendto(b"de", mux.local_address)
    await until(lambda: len(got.got) == 10 and len(krpc.got) == 1)
    assert [d for d, _ in got.got] == datagrams
    assert got.calls == 1  # all were waiting: one wake-up
    # set_utp_handler replaces the batch route and vice versa
    single = Recorder()
    mux.set_utp_handler(single)
    client.sendto(datagrams[0], mux.local_address)
    await until(lambda: len(single.got) == 1)
    assert got.calls == 1
    mux.set_utp_batch_handler(None)
    client.sendto(datagrams[0], mux.local_address)
    await until(lambda: mux.stats().unhandled_in == 1)
    assert len(single.got) == 1


async def test_a_raising_batch_handler_is_counted_and_the_reader_survives(
    mux: UdpMux, client: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def boom(datagrams: list[memoryview], addrs: list[Addr]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("bug")

    mux.set_utp_batch_handler(boom)
    with caplog.at_level(logging.ERROR):
        client.sendto(_utp_datagrams([30])[0], mux.local_address)
        await until(lambda: calls == 1)
        client.sendto(_utp_datagrams([30])[0], mux.local_address)
        await until(lambda: calls == 2)
    assert mux.stats().handler_errors == 2


async def test_gro_is_switched_off_when_nothing_coalesces_and_back_on_later(
    client: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain senders only: reads go back to recvfrom_into, every datagram still arrives whole."""
    import core.net.udp_mux as udp_mux

    monkeypatch.setattr(udp_mux, "GRO_PROBE", 8)
    monkeypatch.setattr(udp_mux, "GRO_RETRY", 0.2)
    m = await UdpMux.open("127.0.0.1", 0)
    try:
        if not m.stats().gro:
            pytest.skip("no UDP GRO here")
        got = BatchRecorder()
        m.set_utp_batch_handler(got)
        datagrams = _utp_datagrams([200] * 20)
        for datagram in datagrams:
            client.sendto(datagram, m.local_address)
        await until(lambda: len(got.got) == 20)
        assert not m.stats().gro  # 8 plain reads in a row
        await asyncio.sleep(0.25)
        client.sendto(datagrams[0], m.local_address)  # the first read after the pause...
        await until(lambda: len(got.got) == 21)
        assert m.stats().gro  # ...switched it back on for the next ones
        sender = await UdpMux.open("127.0.0.1", 0)
        try:
            burst = _utp_datagrams([1000] * 30)
            assert sender.sendmany(burst, m.local_address) == 30
            await until(lambda: len(got.got) == 51)
            assert [d for d, _ in got.got[21:]] == burst
        finally:
            await sender.aclose()
    finally:
        await m.aclose()


READ_MODES = ["coalescing", "multi", "single"]


def force_read_mode(m: UdpMux, mode: str) -> None:
    """Make ``m`` read with recvmsg_into and GRO, recvmmsg, or recvfrom_into (skips if absent)."""
    if mode == "coalescing":
        if not m.stats().gro:
            pytest.skip("no UDP GRO here")
        return
    if m._gro:
        m._set_gro(False)
    m._gro_reading = False  # nothing queued yet: nothing coalesced to drain
    m._gro_capable = False  # and no switching back on during the test
    if mode == "single":
        m._mmsg = None
    elif m._mmsg is None:
        pytest.skip("no recvmmsg here")


@pytest.mark.parametrize("mode", READ_MODES)
@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
async def test_every_read_path_routes_and_names_senders_alike(mode: str, host: str) -> None:
    """Each way of reading gives the same datagrams, routes and (normalised) senders."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    m = await UdpMux.open(host, 0)
    try:
        force_read_mode(m, mode)
        utp, krpc = BatchRecorder(), Recorder()
        m.set_utp_batch_handler(utp)
        m.set_krpc_handler(krpc)
        senders = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(3)]
        try:
            for s in senders:
                s.bind((host, 0))
            expected_utp: list[tuple[bytes, Addr]] = []
            for round_ in range(30):  # more than a batch: several wake-ups
                for k, s in enumerate(senders):
                    me = s.getsockname()
                    data = _utp_datagrams([50 + round_ + k])[0]
                    s.sendto(data, m.local_address)
                    expected_utp.append((data, (me[0], me[1])))
            big = b"d" + bytes(60_000)  # larger than any slot a read could truncate to
            senders[0].sendto(big, m.local_address)
            senders[1].sendto(b"\x02" + bytes(30), m.local_address)  # unknown route
            await until(lambda: len(utp.got) == 90 and len(krpc.got) == 1)
            await until(lambda: m.stats().unknown_in == 1)
            assert utp.got == expected_utp  # in order per sender, and all senders interleaved
            assert krpc.got == [(big, (host, senders[0].getsockname()[1]))]
            stats = m.stats()
            assert stats.utp_in == 90 and stats.krpc_in == 1 and stats.datagrams_in == 92
        finally:
            for s in senders:
                s.close()
    finally:
        await m.aclose()


@pytest.mark.parametrize("mode", READ_MODES)
async def test_every_read_path_bounds_a_wake_up(mode: str, client: socket.socket) -> None:
    m = await UdpMux.open("127.0.0.1", 0)
    try:
        force_read_mode(m, mode)
        turns = 0
        per_turn: dict[int, int] = {}

        def handler(data: bytes, addr: Addr) -> None:
            per_turn[turns] = per_turn.get(turns, 0) + 1

        m.set_krpc_handler(handler)
        for _ in range(3 * BATCH):
            client.sendto(b"de", m.local_address)

        async def count_turns() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        counter = asyncio.create_task(count_turns())
        try:
            await until(lambda: sum(per_turn.values()) == 3 * BATCH)
        finally:
            counter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await counter
        assert max(per_turn.values()) == BATCH
    finally:
        await m.aclose()
