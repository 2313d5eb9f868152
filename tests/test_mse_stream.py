"""``MseStream``: MSE/PE as a stream layer between an in-memory "socket" pair and real PeerDrivers.

Two :class:`~core.net.peer_io.PeerDriver`s swap a few MiB both ways through
``MseStream``s over the in-memory stream pair of tests/test_net_stream.py
(the same shape, plus a record of what crossed the "wire"): RC4, MSE with
plaintext selected, and a plain BitTorrent peer accepted by incoming
detection.  Then the edges, with one end played by hand from the sans-IO
handshake: the initiator's initial payload and bytes that arrive behind the
handshake reach the driver first and in order, policy refusals, unknown
torrents, timeouts and closes reach the driver as ``"mse: ..."`` reasons.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest

from core.mse import dh
from core.mse.handshake import (
    BITTORRENT_PREFIX,
    CRYPTO_PLAINTEXT,
    CRYPTO_RC4,
    VC,
    MseResponder,
    SkeyIndex,
)
from core.mse.rc4 import Rc4
from core.net.mse_stream import MseStream
from core.net.peer_io import PeerDriver
from core.net.stream import Address, ByteStream, StreamConsumer, WriteData
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
from core.wire.messages import encode

INFO_HASH = hashlib.sha1(b"mse stream torrent").digest()
TOTAL = 2 << 20
LENGTHS = Lengths(piece_length=256 << 10, total_length=TOTAL)
DATA = random.Random(14).randbytes(TOTAL)
BLOCKS = TOTAL // BLOCK_SIZE
PIPELINE = 32
BOTH = CRYPTO_PLAINTEXT | CRYPTO_RC4
PEER_A = b"-PT0001-aaaaaaaaaaaa"
PEER_B = b"-PT0001-bbbbbbbbbbbb"


class MemoryStream:
    """One end of an in-memory pipe, as in tests/test_net_stream.py, recording the wire.

    What the other end writes is delivered a loop turn later, ``read_size``
    bytes at a time, into the consumer's own buffer.
    """

    def __init__(
        self, consumer: StreamConsumer, address: Address, high_water: int, read_size: int
    ) -> None:
        self.consumer = consumer
        self.remote_address = address
        self.high_water = high_water
        self.read_size = read_size
        self.write_paused = False
        self.other: MemoryStream | None = None
        self.reading = True
        self.ended = False
        self.aborted = False
        self.wire = bytearray()  # everything this end wrote (the first MiB)
        self._inbox = bytearray()
        self._scheduled = False

    @staticmethod
    def pair(
        a: StreamConsumer,
        b: StreamConsumer,
        *,
        high_water: int = 1 << 20,
        read_size: int = 16 << 10,
    ) -> tuple[MemoryStream, MemoryStream]:
        sa = MemoryStream(a, ("10.0.0.2", 6882), high_water, read_size)
        sb = MemoryStream(b, ("10.0.0.1", 6881), high_water, read_size)
        sa.other, sb.other = sb, sa
        return sa, sb

    def open(self) -> None:
        self.consumer.stream_opened(self)

    def write(self, data: WriteData) -> None:
        assert self.other is not None
        if not self.ended:
            if len(self.wire) < 1 << 20:
                self.wire += data
            self.other.receive(bytes(data))
            if len(self.other._inbox) > self.high_water:
                self.write_paused = True

    def writelines(self, parts: Iterable[WriteData]) -> None:
        self.write(b"".join(parts))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        self._schedule()

    def close(self) -> None:
        self._end("connection closed")
        self._hang_up()

    def abort(self) -> None:
        self.ended = self.aborted = True
        self._hang_up()

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
            n = min(len(buf), len(self._inbox), self.read_size)
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


@dataclass
class Swapper:
    """A ``PeerOwner`` that both serves DATA and downloads all of it: traffic both ways."""

    events: list[Event] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    received: bytearray = field(default_factory=lambda: bytearray(TOTAL))
    blocks: int = 0
    requested: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def peer_event(self, proto: PeerDriver, event: Event) -> None:
        if not isinstance(event, (Piece, Request)):
            self.events.append(event)
        if isinstance(event, RemoteInfoHash):
            assert event.info_hash == INFO_HASH
            proto.accept(LENGTHS)
        elif isinstance(event, HandshakeReceived):
            proto.send_many([HaveAll(), Unchoke(), Interested()])
        elif isinstance(event, Unchoke):
            self._request(proto, PIPELINE)
        elif isinstance(event, Request):
            start = event.index * LENGTHS.piece_length + event.begin
            assert proto.send_piece(
                event.index, event.begin, memoryview(DATA)[start : start + event.length]
            )
        elif isinstance(event, Piece):
            start = event.index * LENGTHS.piece_length + event.begin
            self.received[start : start + len(event.data)] = event.data
            self.blocks += 1
            if self.blocks == BLOCKS:
                self.done.set()
            self._request(proto, 1)

    def _request(self, proto: PeerDriver, n: int) -> None:
        per_piece = LENGTHS.piece_length // BLOCK_SIZE
        for _ in range(n):
            if self.requested == BLOCKS:
                return
            i = self.requested
            self.requested += 1
            proto.send(Request(i // per_piece, (i % per_piece) * BLOCK_SIZE, BLOCK_SIZE))

    def peer_closed(self, proto: PeerDriver, reason: str) -> None:
        self.closed.append(reason)
        self.done.set()

    def peer_writable(self, proto: PeerDriver) -> None:
        pass


@dataclass
class Link:
    a: PeerDriver
    b: PeerDriver
    a_owner: Swapper
    b_owner: Swapper
    a_layer: MseStream | None
    b_layer: MseStream
    sa: MemoryStream
    sb: MemoryStream


def link(
    *,
    provide: int | None,
    allowed: int = BOTH,
    allow_plain: bool = True,
    find_skey: Callable[[bytes], bytes | None] | None = None,
    read_size: int = 16 << 10,
    high_water: int = 1 << 20,
) -> Link:
    """Driver A dials driver B; A talks MSE offering ``provide`` (None: plain BitTorrent)."""
    a_owner, b_owner = Swapper(), Swapper()
    a = PeerDriver(PeerConnection(PEER_A, INFO_HASH, LENGTHS), a_owner, outgoing=True)
    b = PeerDriver(PeerConnection(PEER_B, None), b_owner, outgoing=False)
    a_layer = None if provide is None else MseStream.outgoing(a, INFO_HASH, provide=provide)
    b_layer = MseStream.incoming(
        b,
        find_skey or SkeyIndex([INFO_HASH]),
        allowed=allowed,
        allow_plaintext_handshake=allow_plain,
    )
    sa, sb = MemoryStream.pair(a_layer or a, b_layer, high_water=high_water, read_size=read_size)
    sb.open()
    sa.open()
    return Link(a, b, a_owner, b_owner, a_layer, b_layer, sa, sb)


async def both_done(ln: Link) -> None:
    await asyncio.wait_for(asyncio.gather(ln.a_owner.done.wait(), ln.b_owner.done.wait()), 30)


# --- a few MiB both ways ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provide", "allowed", "encrypted"),
    [
        (CRYPTO_RC4, CRYPTO_RC4, True),
        (BOTH, BOTH, True),  # RC4 preferred
        (CRYPTO_PLAINTEXT, BOTH, False),  # MSE handshake, then plaintext
        (None, BOTH, False),  # a plain BitTorrent peer, detected and passed through
    ],
    ids=["rc4", "both-prefers-rc4", "mse-plaintext", "plain-bittorrent"],
)
async def test_two_drivers_swap_two_mib_each_way(
    provide: int | None, allowed: int, encrypted: bool
) -> None:
    ln = link(provide=provide, allowed=allowed, high_water=256 << 10)
    await both_done(ln)
    assert not ln.a_owner.closed and not ln.b_owner.closed
    assert bytes(ln.a_owner.received) == DATA and bytes(ln.b_owner.received) == DATA
    assert ln.a.conn.peer_id == PEER_B and ln.b.conn.peer_id == PEER_A
    assert isinstance(ln.a_owner.events[0], HandshakeReceived)
    assert isinstance(ln.b_owner.events[0], RemoteInfoHash)
    assert ln.b_layer.encrypted is encrypted
    if ln.a_layer is not None:
        assert ln.a_layer.encrypted is encrypted
        assert ln.a_layer.info_hash == ln.b_layer.info_hash == INFO_HASH
        assert ln.a.address == ("10.0.0.2", 6882) == ln.a_layer.remote_address
        # Whatever was selected, the stream starts with a DH key, not BitTorrent.
        assert not ln.sa.wire.startswith(BITTORRENT_PREFIX[:4])
    else:
        assert ln.sa.wire.startswith(BITTORRENT_PREFIX)
        assert ln.b_layer.info_hash is None
    wire = bytes(ln.sa.wire + ln.sb.wire)
    block = DATA[:BLOCK_SIZE]
    if encrypted:
        assert b"BitTorrent protocol" not in wire and block[:64] not in wire
    else:
        assert b"BitTorrent protocol" in wire and block[:64] in wire
    # The drivers counted plaintext: what one wrote, the other read.
    await asyncio.sleep(0)
    assert ln.a.bytes_written == ln.b.bytes_read and ln.b.bytes_written == ln.a.bytes_read
    # Closing one driver reaches the other through both layers.
    ln.a.close("done")
    for _ in range(3):
        await asyncio.sleep(0)
    assert ln.a_owner.closed == ["done"] and ln.sa.aborted
    assert ln.b_owner.closed == ["connection closed"]


async def test_small_reads_and_back_pressure() -> None:
    """1000-byte reads split every handshake step; a small pipe pauses and resumes writes."""
    ln = link(provide=CRYPTO_RC4, read_size=1000, high_water=BLOCK_SIZE)
    await both_done(ln)
    assert bytes(ln.a_owner.received) == DATA and bytes(ln.b_owner.received) == DATA
    assert ln.a_layer is not None
    assert ln.a_layer.write_paused is ln.sa.write_paused
    ln.sa.write_paused = True
    assert ln.a_layer.write_paused and ln.a.write_paused


# --- refusals -------------------------------------------------------------------------------


async def _closed(owner: Swapper) -> None:
    await asyncio.wait_for(owner.done.wait(), 5)


async def test_plain_bittorrent_refused_by_policy() -> None:
    ln = link(provide=None, allow_plain=False)
    await _closed(ln.b_owner)
    assert ln.b_owner.closed == ["mse: plaintext connection refused by policy"]
    assert not ln.b_owner.events  # the driver never saw a byte
    assert ln.sb.aborted
    await _closed(ln.a_owner)
    assert ln.a_owner.closed == ["connection closed"]


async def test_crypto_mismatch_closes_both_with_reasons() -> None:
    ln = link(provide=CRYPTO_PLAINTEXT, allowed=CRYPTO_RC4)
    await asyncio.gather(_closed(ln.a_owner), _closed(ln.b_owner))
    assert ln.b_owner.closed == ["mse: peer provides crypto 0x1, we allow 0x2"]
    assert ln.sb.aborted
    (reason,) = ln.a_owner.closed
    assert reason.startswith("mse: connection closed before the sync marker (")
    assert reason.endswith("): connection closed")
    assert not ln.a_owner.events and not ln.b_owner.events


async def test_unknown_torrent_is_refused() -> None:
    ln = link(provide=CRYPTO_RC4, find_skey=SkeyIndex([bytes(20)]))
    await _closed(ln.b_owner)
    assert ln.b_owner.closed[0].startswith("mse: unknown SKEY")


async def test_mse_offered_to_a_responder_that_allows_nothing() -> None:
    ln = link(provide=BOTH, allowed=0)
    await _closed(ln.b_owner)
    assert ln.b_owner.closed == ["mse: peer provides crypto 0x3, we allow 0x0"]


# --- one end played by hand -------------------------------------------------------------------


class RawEnd:
    """A bare ``StreamConsumer``: the test reads and writes raw bytes through it."""

    def __init__(self) -> None:
        self.stream: ByteStream | None = None
        self.data = bytearray()
        self.closed: list[str] = []
        self._buf = bytearray(1 << 16)
        self._changed = asyncio.Event()

    def stream_opened(self, stream: ByteStream) -> None:
        self.stream = stream

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buf)

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self._buf[:nbytes]
        self._changed.set()

    def stream_writable(self) -> None:
        pass

    def stream_closed(self, reason: str) -> None:
        self.closed.append(reason)
        self._changed.set()

    def write(self, data: bytes) -> None:
        assert self.stream is not None
        self.stream.write(data)

    async def wait(self, ready: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not ready():
                self._changed.clear()
                await self._changed.wait()


class Recorder:
    """An upper consumer that records what the layer hands it (and can pause on open)."""

    def __init__(self, *, pause_on_open: bool = False) -> None:
        self.stream: ByteStream | None = None
        self.data = bytearray()
        self.closed: list[str] = []
        self.pause_on_open = pause_on_open
        self._buf = bytearray(100)  # small: delivery takes several rounds

    def stream_opened(self, stream: ByteStream) -> None:
        self.stream = stream
        if self.pause_on_open:
            stream.pause_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buf)

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self._buf[:nbytes]

    def stream_writable(self) -> None:
        pass

    def stream_closed(self, reason: str) -> None:
        self.closed.append(reason)


def reading(stream: MemoryStream) -> bool:
    return stream.reading


def sha1(*parts: bytes) -> bytes:
    return hashlib.sha1(b"".join(parts)).digest()


XA = 0xA11CE5EC12E7A11CE5EC12E7A11CE5EC12E7A11C


async def handmade_initiator(raw: RawEnd, *, ia: bytes, after_ia: bytes, pad_a: int = 40) -> Rc4:
    """Steps 1 and 3 written out here, IA and more bytes in one write; returns keyB's stream."""
    raw.write(dh.public_key(XA) + bytes(pad_a))
    await raw.wait(lambda: len(raw.data) >= 96)
    s = dh.shared_secret(XA, bytes(raw.data[:96]))
    enc_a = Rc4(sha1(b"keyA", s, INFO_HASH))
    req = sha1(b"req1", s) + bytes(
        x ^ y for x, y in zip(sha1(b"req2", INFO_HASH), sha1(b"req3", s), strict=True)
    )
    body = VC + CRYPTO_RC4.to_bytes(4, "big") + b"\x00\x00" + len(ia).to_bytes(2, "big") + ia
    raw.write(req + enc_a.process(body) + enc_a.process(after_ia))
    dec_b = Rc4(sha1(b"keyB", s, INFO_HASH))
    return dec_b


async def test_responder_delivers_the_initial_payload_then_the_rest_to_a_real_driver() -> None:
    """libtorrent's way: the BitTorrent handshake rides as IA, a message follows at once."""
    owner = Swapper()
    b = PeerDriver(PeerConnection(PEER_B, None), owner, outgoing=False)
    layer = MseStream.incoming(
        b, SkeyIndex([INFO_HASH]), allowed=BOTH, allow_plaintext_handshake=False
    )
    raw = RawEnd()
    sr, sl = MemoryStream.pair(raw, layer)
    sl.open()
    sr.open()
    initiator = PeerConnection(PEER_A, INFO_HASH, LENGTHS)
    ia = initiator.initiate(0.0)
    assert ia.startswith(BITTORRENT_PREFIX)
    dec_b = await handmade_initiator(raw, ia=ia, after_ia=encode(Interested()))
    # The driver saw the IA as its first bytes, then the Interested behind it.
    await raw.wait(lambda: any(isinstance(e, Interested) for e in owner.events))
    kinds = [type(e) for e in owner.events]
    assert kinds[:2] == [RemoteInfoHash, HandshakeReceived] and Interested in kinds
    assert layer.encrypted and layer.info_hash == INFO_HASH
    # Our answer: find ENCRYPT_B(VC), then the driver's handshake under RC4.
    marker = dec_b.process(VC)
    await raw.wait(lambda: marker in raw.data and len(raw.data) > raw.data.index(marker) + 80)
    at = raw.data.index(marker) + 8
    plain = dec_b.process(bytes(raw.data[at:]))
    assert plain[:6] == CRYPTO_RC4.to_bytes(4, "big") + b"\x00\x00"
    assert plain[6:].startswith(BITTORRENT_PREFIX) and INFO_HASH in plain[6:] and PEER_B in plain
    assert not owner.closed


async def test_pending_bytes_wait_while_the_upper_has_paused_reading() -> None:
    upper = Recorder(pause_on_open=True)
    layer = MseStream.incoming(
        upper, SkeyIndex([INFO_HASH]), allowed=BOTH, allow_plaintext_handshake=False
    )
    raw = RawEnd()
    sr, sl = MemoryStream.pair(raw, layer)
    sl.open()
    sr.open()
    ia, rest = b"initial payload " * 20, b"and the bytes right behind it" * 10
    await handmade_initiator(raw, ia=ia, after_ia=rest)
    await raw.wait(lambda: upper.stream is not None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert upper.data == b""
    assert reading(sl) is False
    layer.resume_reading()
    for _ in range(3):
        await asyncio.sleep(0)
    assert bytes(upper.data) == ia + rest
    assert reading(sl) is True
    assert not upper.closed


async def test_initiator_delivers_the_remainder_behind_step_4() -> None:
    """Step 4 and the responder's BitTorrent handshake in one read: the driver gets the latter."""
    owner = Swapper()
    a = PeerDriver(PeerConnection(PEER_A, INFO_HASH, LENGTHS), owner, outgoing=True)
    layer = MseStream.outgoing(a, INFO_HASH, provide=CRYPTO_RC4)
    raw = RawEnd()
    sl, sr = MemoryStream.pair(layer, raw)
    sr.open()
    sl.open()
    responder = MseResponder(SkeyIndex([INFO_HASH]), allowed=BOTH)
    await raw.wait(lambda: len(raw.data) >= 96)
    taken = len(raw.data)
    assert responder.receive(bytes(raw.data)) is None
    raw.write(responder.data_to_send())
    result = None
    while result is None:
        seen = taken
        await raw.wait(lambda: len(raw.data) > seen)  # noqa: B023 (awaited here, not kept)
        chunk, taken = bytes(raw.data[taken:]), len(raw.data)
        result = responder.receive(chunk)
    assert result.encryptor is not None and result.decryptor is not None
    remote = PeerConnection(PEER_B, INFO_HASH, LENGTHS)
    raw.write(responder.data_to_send() + result.encryptor.process(remote.initiate(0.0)))
    await raw.wait(lambda: bool(owner.events))
    assert isinstance(owner.events[0], HandshakeReceived)
    assert a.conn.peer_id == PEER_B and layer.encrypted
    # And the driver's own handshake went out under RC4.
    await raw.wait(lambda: len(raw.data) > taken + 40)
    assert result.decryptor.process(bytes(raw.data[taken:])).startswith(BITTORRENT_PREFIX)


@pytest.mark.parametrize("side", ["outgoing", "incoming"])
async def test_handshake_timeout_closes_with_a_reason_and_aborts_the_lower(side: str) -> None:
    upper = Recorder()
    if side == "outgoing":
        layer = MseStream.outgoing(upper, INFO_HASH, provide=CRYPTO_RC4, timeout=0.05)
    else:
        layer = MseStream.incoming(
            upper,
            SkeyIndex([INFO_HASH]),
            allowed=BOTH,
            allow_plaintext_handshake=True,
            timeout=0.05,
        )
    raw = RawEnd()
    sl, sr = MemoryStream.pair(layer, raw)
    sr.open()
    sl.open()
    raw.write(b"\x13BitTorr")  # incoming: not enough to decide; outgoing: a short key
    await raw.wait(lambda: bool(raw.closed))
    assert upper.closed == ["mse: handshake timeout"] and upper.stream is None
    assert sl.aborted and raw.closed == ["connection closed"]


async def test_lower_close_mid_handshake_names_the_truncated_key() -> None:
    upper = Recorder()
    layer = MseStream.outgoing(upper, INFO_HASH, provide=CRYPTO_RC4)
    raw = RawEnd()
    sl, sr = MemoryStream.pair(layer, raw)
    sr.open()
    sl.open()
    raw.write(bytes(range(50)))
    await asyncio.sleep(0)
    sr.close()
    for _ in range(3):
        await asyncio.sleep(0)
    assert upper.closed == [
        "mse: truncated DH key (connection closed after 50 of 96 bytes): connection closed"
    ]


async def test_garbage_instead_of_a_handshake_is_refused_within_the_bound() -> None:
    upper = Recorder()
    layer = MseStream.incoming(
        upper, SkeyIndex([INFO_HASH]), allowed=BOTH, allow_plaintext_handshake=True
    )
    raw = RawEnd()
    sl, sr = MemoryStream.pair(layer, raw)
    sr.open()
    sl.open()
    raw.write(dh.public_key(XA) + bytes(2000))  # a key, then no req1 marker
    await raw.wait(lambda: bool(raw.closed))
    assert upper.closed == ["mse: no sync marker within 628 bytes"] and sl.aborted
