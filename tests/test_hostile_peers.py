"""Hostile peers: a scripted raw-socket peer misbehaves while an honest one seeds.

Every scenario runs our client (the "leecher") against one honest seeder
(another Client on 127.0.0.1) plus a :class:`~tests.support.rawpeer.RawPeer`
that lies, floods or breaks the protocol.  The download must complete with
the right bytes, the hostile peer must be dropped or banned with its reason
on the event bus (``PeerDisconnected``) or the ban list, and nothing the
hostile peer sends may make the client's memory grow with it.

All peers share 127.0.0.1, so these tests also pin down that a ban on
loopback covers the bad endpoint and peer id, not the honest seeder next to
it (see ``Client.ban``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import struct
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bitarray import bitarray

from core.bus import Subscription
from core.engine.client import Client
from core.engine.peer import Peer
from core.engine.torrent import Torrent
from core.errors import StorageError, TorrentError
from core.events import (
    Event,
    PeerDisconnected,
    PieceHashFailed,
    StorageFailed,
    TorrentStateChanged,
)
from core.formats import bencoding
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from core.storage import Layout, MemoryStorage, Storage
from core.storage.base import BlockData
from core.wire.connection import FLOOD_FACTOR
from core.wire.messages import (
    MAX_EXTENDED_PAYLOAD,
    AllowedFast,
    Bitfield,
    Extended,
    Have,
    HaveAll,
    Interested,
    KeepAlive,
    Message,
    Piece,
    Port,
    Request,
    Reserved,
    Suggest,
    Unchoke,
    encode,
)
from tests.support.engine import loopback_config, make_torrent, tree_digest
from tests.support.rawpeer import (
    CorruptingSeeder,
    OneBadBlockSeeder,
    RawListener,
    RawPeer,
    make_peer_id,
)

pytestmark = pytest.mark.timeout(30)

BLOCK = 16384
PIECE = 4 * BLOCK
#: 25 pieces (spare bits in a bitfield), the last one two blocks long (so a
#: corrupt block there still leaves room for another contributor).
SIZE = 24 * PIECE + BLOCK + 3616
NUM_PIECES = 25
NAME = "hostile.bin"
LOCAL = "127.0.0.1"


@dataclass
class Swarm:
    """An honest seeder, our leecher with the torrent added, and the leecher's events."""

    mi: Metainfo
    src: Path
    payload: bytes
    honest: Client
    leecher: Client
    torrent: Torrent
    sub: Subscription
    sub_events: list[Event] = field(default_factory=list)
    honest_added: bool = False

    @property
    def info_hash(self) -> bytes:
        return self.mi.info_hash.wire

    @property
    def honest_address(self) -> tuple[str, int]:
        return (LOCAL, self.honest.listen_port)

    def add_honest(self) -> None:
        self.honest_added = True
        self.torrent.add_peers([self.honest_address])

    async def complete(self, timeout: float = 20.0) -> None:
        """Let the download finish from the honest seeder; check the bytes on disk."""
        if not self.honest_added:
            self.add_honest()
        async with asyncio.timeout(timeout):
            await self.torrent.wait_complete()
        assert tree_digest(self.leecher.config.download_dir) == tree_digest(self.src)
        assert not self.leecher.is_banned(*self.honest_address)

    async def wait_event(self, pred: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        for ev in self.sub_events:
            if pred(ev):
                return ev
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.sub.get()
                self.sub_events.append(ev)
                if pred(ev):
                    return ev

    async def disconnect_reason(self, address: tuple[str, int], timeout: float = 10.0) -> str:
        ev = await self.wait_event(
            lambda e: isinstance(e, PeerDisconnected) and e.address == address, timeout
        )
        assert isinstance(ev, PeerDisconnected)
        return ev.reason

    def drain(self) -> list[Event]:
        while (ev := self.sub.get_nowait()) is not None:
            self.sub_events.append(ev)
        return self.sub_events


@asynccontextmanager
async def swarm(
    tmp_path: Path,
    make_storage: Callable[[Layout], Storage] | None = None,
    **leecher_cfg: object,
) -> AsyncIterator[Swarm]:
    """Start the honest seeder and our leecher (torrent added, no peers yet)."""
    src = tmp_path / "src"
    mi = make_torrent(src, {NAME: SIZE}, PIECE)
    payload = (src / NAME).read_bytes()
    honest = Client(loopback_config(tmp_path, "honest"))
    leecher = Client(loopback_config(tmp_path, "leecher", **leecher_cfg))
    await honest.start()
    try:
        await leecher.start()
        try:
            seeding = await honest.add_metainfo(mi, download_dir=src)
            assert seeding.state is TorrentState.SEEDING
            sub = leecher.bus.subscribe(
                kinds=[PeerDisconnected, PieceHashFailed, StorageFailed, TorrentStateChanged]
            )
            storage = None
            if make_storage is not None:
                layout = Layout.from_info(mi.info, leecher.config.download_dir)
                storage = make_storage(layout)
            torrent = await leecher.add_metainfo(mi, storage=storage)
            yield Swarm(mi, src, payload, honest, leecher, torrent, sub)
        finally:
            await leecher.close()
    finally:
        await honest.close()


async def incoming_attack(
    sw: Swarm,
    payload: bytes,
    *,
    reserved: Reserved | None = None,
    peer_id: bytes | None = None,
    timeout: float = 10.0,
) -> str:
    """Connect to the leecher, handshake, send ``payload``; return why we were dropped."""
    raw = await RawPeer.connect(sw.leecher.listen_port)
    try:
        await raw.send_handshake(sw.info_hash, peer_id or make_peer_id(b"attacker"), reserved)
        await raw.read_handshake()
        await raw.send_raw(payload)
        assert await raw.wait_dropped(timeout), "the client kept a hostile peer"
        return await sw.disconnect_reason(raw.local_address)
    finally:
        await raw.close()


def frames(*msgs: Message) -> bytes:
    return b"".join(encode(m) for m in msgs)


# --------------------------------------------------------------------------- bans


def test_loopback_ban_covers_endpoint_and_peer_id(tmp_path: Path) -> None:
    client = Client(loopback_config(tmp_path, "bans"))
    bad_id, good_id = make_peer_id(b"bad"), make_peer_id(b"good")
    client.ban(LOCAL, "corrupt data", port=5000, peer_id=bad_id)
    assert client.is_banned(LOCAL, 5000)
    assert not client.is_banned(LOCAL, 5001)
    assert not client.is_banned(LOCAL)
    # The same peer back from another (ephemeral) port is known by its peer id.
    assert client.is_banned(LOCAL, 40000, bad_id)
    assert not client.is_banned(LOCAL, 40000, good_id)
    assert client.is_banned("127.0.0.2", 40000, bad_id)  # all of 127/8 is this machine
    assert client.is_banned("::ffff:127.0.0.1", 40000, bad_id)
    # A public address is banned whole: the peer picks its port and id, not its IP.
    client.ban("203.0.113.7", "flood", port=6881, peer_id=good_id)
    assert client.is_banned("203.0.113.7", 1234, make_peer_id(b"other"))
    assert not client.is_banned(LOCAL, 40000, good_id)
    client.ban("::1", "corrupt data", port=6000)
    assert client.is_banned("::1", 6000) and not client.is_banned("::1", 6001)
    # The first reason stays: it is the one that caused the ban.
    client.ban(LOCAL, "again", port=5000)
    assert client.banned == {
        "127.0.0.1:5000": "corrupt data",
        "203.0.113.7": "flood",
        "[::1]:6000": "corrupt data",
    }
    # Without port or peer id, an explicit loopback ban still means the address.
    client.ban("127.0.0.3", "user asked")
    assert client.is_banned("127.0.0.3", 1, good_id)


# --------------------------------------------------------------------------- corrupt data


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "bep3"])
async def test_corrupt_sole_contributor_banned_after_two_pieces(tmp_path: Path, fast: bool) -> None:
    async with swarm(tmp_path) as sw:
        liar = CorruptingSeeder(sw.info_hash, sw.payload, PIECE, fast=fast)
        async with RawListener(liar) as listener:
            liar_address = (LOCAL, listener.port)
            sw.torrent.add_peers([liar_address])
            reason = await sw.disconnect_reason(liar_address)
            failed = [e for e in sw.drain() if isinstance(e, PieceHashFailed)]
            # The first puts it on parole, the second bans it; a third piece may
            # already have been in a hashing thread at the ban (and fail after it).
            assert 2 <= len(failed) <= 3
            assert all(e.peers == (liar_address,) for e in failed)
            # The reason names the evidence: both pieces, each sent by the liar alone.
            first, second = (e.piece for e in failed[:2])
            expected = (
                f"failed pieces {first} (alone), {second} (alone): "
                "the last one sent alone while on parole"
            )
            assert reason == f"banned: {expected}"
            assert sw.leecher.banned == {f"127.0.0.1:{listener.port}": expected}
            assert sw.torrent.stats().pieces_dirtied_bad >= 2
            assert not sw.torrent.have_bitfield().any()  # nothing bad was kept

            # The honest seeder shares 127.0.0.1 and is not affected by the ban.
            await sw.complete()
            assert sw.torrent.stats().pieces_dirtied_good >= NUM_PIECES

            # The liar is not dialled again, and is refused from a new port too.
            sw.torrent.add_peers([liar_address])
            reason = await incoming_attack(sw, b"", peer_id=liar.peer_id)
            assert reason == "banned"
            assert listener.connections == 1
            assert not listener.errors


@pytest.mark.parametrize("hang_up", [False, True], ids=["stays", "hangs-up"])
async def test_corrupt_block_among_contributors_blames_only_the_liar(
    tmp_path: Path, hang_up: bool
) -> None:
    async with swarm(tmp_path) as sw:
        liar = OneBadBlockSeeder(sw.info_hash, sw.payload, PIECE, hang_up=hang_up)
        async with RawListener(liar) as listener:
            liar_address = (LOCAL, listener.port)
            sw.torrent.add_peers([liar_address])
            async with asyncio.timeout(10):
                await liar.answered.wait()
            assert liar.bad is not None
            bad_piece = liar.bad.index
            # The rest of that piece can only come from the honest seeder now.
            sw.add_honest()
            failed = await sw.wait_event(
                lambda e: isinstance(e, PieceHashFailed) and e.piece == bad_piece
            )
            assert isinstance(failed, PieceHashFailed)
            assert set(failed.peers) == {liar_address, sw.honest_address}
            # Nobody is blamed until the piece verifies and the blocks can be compared.
            await sw.complete()
            reason = await sw.disconnect_reason(liar_address)
            if hang_up:  # gone before the blame, banned all the same
                assert reason == "peer closed the connection"
            else:
                assert reason.startswith(f"banned: sent corrupt data for piece {bad_piece}: block")
            assert sw.leecher.banned == {
                f"127.0.0.1:{listener.port}": f"sent corrupt data for piece {bad_piece}: "
                f"block at {liar.bad.begin} differed from the good data"
            }
            honest_peers = [p for p in sw.torrent.peers if p.address == sw.honest_address]
            # It shared the failed piece (and went on parole), then earned its trust back.
            assert all(p.hash_failures <= 1 and not p.on_parole for p in honest_peers)
            disconnects = [e for e in sw.drain() if isinstance(e, PeerDisconnected)]
            assert all("banned" not in e.reason for e in disconnects if e.address != liar_address)
            assert not listener.errors


# --------------------------------------------------------------------------- protocol violations


async def test_unrequested_block_drops_peer(tmp_path: Path) -> None:
    async with swarm(tmp_path) as sw:
        sw.add_honest()
        reason = await incoming_attack(sw, frames(Piece(0, 0, sw.payload[:BLOCK])))
        assert reason == "unrequested piece 0:0+16384"
        await sw.complete()
        assert sw.leecher.banned == {}


@pytest.mark.parametrize(
    ("frame", "extended", "expected"),
    [
        (struct.pack(">IB", 0x7FFFFFF0, 7) + bytes(64), False, "PIECE of length 2147483632"),
        (struct.pack(">IB", 0xFFFFFFFF, 99) + bytes(64), False, "unknown message id 99"),
        (struct.pack(">IB", 1 + 4 + 1, 5) + bytes(5), False, "BITFIELD of length 6"),
        (struct.pack(">IBB", 64 << 20, 20, 0) + bytes(64), True, "EXTENDED of length 67108864"),
        (struct.pack(">IBB", 64 << 20, 20, 0), False, "EXTENDED received but not negotiated"),
        (struct.pack(">IB", 14, 4) + bytes(13), False, "HAVE of length 14"),
    ],
    ids=["piece", "unknown-id", "bitfield", "extended", "not-negotiated", "have"],
)
async def test_bad_length_prefix_drops_peer_before_buffering(
    tmp_path: Path, frame: bytes, extended: bool, expected: str
) -> None:
    async with swarm(tmp_path) as sw:
        sw.add_honest()
        reserved = Reserved.make(fast=True, extended=extended)
        reason = await incoming_attack(sw, frame, reserved=reserved)
        assert reason.startswith(expected), reason
        await sw.complete()


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        (Have(NUM_PIECES), f"have for piece {NUM_PIECES} of a {NUM_PIECES}-piece torrent"),
        (Have(0xFFFFFFFF), f"have for piece {0xFFFFFFFF} of a {NUM_PIECES}-piece torrent"),
        (Suggest(NUM_PIECES), f"suggest for piece {NUM_PIECES}"),
        (AllowedFast(1000), "allowed fast for piece 1000"),
        (Request(NUM_PIECES, 0, BLOCK), f"bad request: piece index {NUM_PIECES} out of range"),
        (Request(NUM_PIECES - 1, BLOCK, BLOCK), "bad request: block 16384+16384 overruns piece"),
        (Request(0, PIECE - 1, 2), "bad request: block 65535+2 overruns piece 0"),
        (Request(0, 0, 2 * BLOCK), "bad request: block length 32768 outside 1..16384"),
        (Request(0, 0, 0), "bad request: block length 0 outside 1..16384"),
    ],
    ids=repr,
)
async def test_out_of_range_indices_drop_peer(tmp_path: Path, msg: Message, expected: str) -> None:
    async with swarm(tmp_path) as sw:
        sw.add_honest()
        reason = await incoming_attack(sw, frames(Interested(), msg))
        assert reason.startswith(expected), reason
        await sw.complete()


async def test_bitfield_with_spare_bits_drops_peer(tmp_path: Path) -> None:
    bits = bitarray((NUM_PIECES + 7) // 8 * 8, endian="big")
    bits.setall(0)
    bits[0] = bits[-1] = 1  # bit 31 of a 25-piece torrent is a spare bit
    async with swarm(tmp_path) as sw:
        sw.add_honest()
        reason = await incoming_attack(sw, frames(Bitfield(bits)))
        assert reason == "bitfield has spare bits set"
        await sw.complete()


async def test_second_have_set_replaces_the_first(tmp_path: Path) -> None:
    """A later bitfield (aria2 sends one mid-connection) replaces the have-set: no drop.

    The availability the first set added is taken back, so piece counts stay right.
    """
    first = bitarray(NUM_PIECES, endian="big")
    first.setall(0)
    first[0] = first[5] = 1
    second = bitarray((NUM_PIECES + 7) // 8 * 8, endian="big")
    second.setall(0)
    second[7] = 1
    async with swarm(tmp_path) as sw:
        raw = await RawPeer.connect(sw.leecher.listen_port)
        try:
            await raw.send_handshake(sw.info_hash, make_peer_id(b"again"))
            await raw.read_handshake()
            padded = first.copy()
            padded.extend([0] * (-len(padded) % 8))
            await raw.send(Bitfield(padded), Have(3), Bitfield(second))
            picker = sw.torrent.picker
            async with asyncio.timeout(5):
                while picker.availability(7) != 1:
                    await asyncio.sleep(0.02)
            assert [picker.availability(p) for p in (0, 3, 5, 7)] == [0, 0, 0, 1]
            await raw.send(HaveAll())
            async with asyncio.timeout(5):
                while picker.availability(0) != 1:
                    await asyncio.sleep(0.02)
            assert all(picker.availability(p) == 1 for p in range(NUM_PIECES))
            assert not await raw.wait_dropped(0.3)
        finally:
            await raw.close()
        await sw.complete()


# --------------------------------------------------------------------------- floods

REQQ = 64


def _all_blocks() -> list[Request]:
    out = []
    for p in range(NUM_PIECES):
        size = min(PIECE, SIZE - p * PIECE)
        out += [Request(p, b, min(BLOCK, size - b)) for b in range(0, size, BLOCK)]
    return out


async def test_request_flood_while_choked_drops_peer(tmp_path: Path) -> None:
    async with swarm(tmp_path, request_queue_len=REQQ) as sw:
        await sw.complete()
        # Never interested, so never unchoked: each request is rejected, then enough is enough.
        flood = frames(*(_all_blocks() * FLOOD_FACTOR)[: FLOOD_FACTOR * REQQ + 1])
        reason = await incoming_attack(sw, flood)
        assert reason == "request flood while choked"


async def test_request_flood_for_missing_pieces_drops_peer(tmp_path: Path) -> None:
    async with swarm(tmp_path, request_queue_len=REQQ) as sw:
        # The leecher has nothing yet: every request is refused, a few hundred is a flood.
        reason = await incoming_attack(sw, frames(*_all_blocks()) * 2)
        assert reason == "too many refused requests (request for a piece we do not have)"
        await sw.complete()


async def test_request_flood_unchoked_bounded_memory(tmp_path: Path) -> None:
    """100k requests to a seeding client that reads nothing: refused past our reqq, then dropped.

    Memory never follows the flood."""
    blocks = _all_blocks()
    assert len(blocks) > REQQ
    chunk = frames(*(blocks * 100)[:10_000])
    async with swarm(tmp_path, request_queue_len=REQQ) as sw:
        await sw.complete()
        tracemalloc.start()
        try:
            raw = await RawPeer.connect(sw.leecher.listen_port)
            try:
                await raw.send_handshake(sw.info_hash, make_peer_id(b"flood"))
                await raw.read_handshake()
                await raw.send(Interested())
                assert isinstance(await raw.read_until(Unchoke), Unchoke)
                for _ in range(10):  # 100k requests, 1.7 MB
                    if not await raw.send_raw(chunk):
                        break
                assert await raw.wait_dropped(10)
                reason = await sw.disconnect_reason(raw.local_address)
            finally:
                await raw.close()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert reason == f"request flood: more than {REQQ} queued requests"
        # Unbounded, 100k queued requests would cost well over 10 MiB of objects.
        assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"
        await asyncio.sleep(0.2)  # pending disk reads for the dropped peer finish
        assert not sw.torrent._upload.pending_reads
        assert all(not p.upload_queue for p in sw.torrent.peers)
        assert all(raw.local_address != p.address for p in sw.torrent.peers)


async def test_junk_flood_bounded_memory(tmp_path: Path) -> None:
    """50 MiB of valid-looking extension handshakes: processed, never accumulated."""
    # A BEP 10 handshake is the largest message anyone may send unasked:
    # {"m": {}, "junk": <1 MiB>}, with some chatter between them.
    body = bencoding.encode({b"m": {}, b"junk": bytes(MAX_EXTENDED_PAYLOAD - 64)})
    assert MAX_EXTENDED_PAYLOAD - 64 < len(body) <= MAX_EXTENDED_PAYLOAD
    message = encode(Extended(0, body)) + frames(KeepAlive(), Interested(), Port(6881))
    rounds = 50
    async with swarm(tmp_path) as sw:
        sw.add_honest()
        tracemalloc.start()
        try:
            raw = await RawPeer.connect(sw.leecher.listen_port)
            try:
                await raw.send_handshake(
                    sw.info_hash, make_peer_id(b"junk"), Reserved.make(fast=True, extended=True)
                )
                await raw.read_handshake()
                for _ in range(rounds):
                    assert await raw.send_raw(message), "dropped for valid messages"
                await raw.send(KeepAlive())
                # Every byte was parsed: the client is still talking to us.
                peer = await _peer_that_read(sw.torrent, raw.local_address, rounds * len(message))
                assert peer.proto is not None
                assert peer.proto.bytes_read >= rounds * len(message)
                assert peer.proto.conn.buffered < 1 << 16
                _, peak = tracemalloc.get_traced_memory()
            finally:
                await raw.close()
        finally:
            tracemalloc.stop()
        assert peak < 24 << 20, f"peak {peak / 2**20:.1f} MiB for {rounds} MiB of junk"
        reason = await sw.disconnect_reason(raw.local_address)
        assert reason in ("peer closed the connection", "connection closed")
        await sw.complete()
        assert sw.leecher.banned == {}


async def _peer_that_read(torrent: Torrent, address: tuple[str, int], nbytes: int) -> Peer:
    async with asyncio.timeout(10):
        while True:
            for p in torrent.peers:
                if p.address == address and p.proto is not None and p.proto.bytes_read >= nbytes:
                    return p
            await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- handshakes


@pytest.mark.parametrize(
    "sent",
    [b"", b"\x13BitTorrent protocol\x00\x00\x00", "header-only"],
    ids=["silent", "partial-header", "no-peer-id"],
)
async def test_unfinished_handshake_times_out(
    tmp_path: Path, sent: bytes | str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="core.engine.client")
    timeout = 0.5
    async with swarm(tmp_path, handshake_timeout=timeout) as sw:
        sw.add_honest()
        raw = await RawPeer.connect(sw.leecher.listen_port)
        try:
            start = time.monotonic()
            if sent == "header-only":
                # The info-hash is one we serve, so a Peer exists: it reports on the bus.
                full = b"\x13BitTorrent protocol" + Reserved.make(fast=True).raw + sw.info_hash
                await raw.send_raw(full)
            else:
                assert isinstance(sent, bytes)
                await raw.send_raw(sent)
            assert await raw.wait_dropped(timeout + 5)
            assert time.monotonic() - start >= timeout * 0.9
            if sent == "header-only":
                assert raw.bytes_received == 68  # our handshake, nothing more
                assert await sw.disconnect_reason(raw.local_address) == "handshake timed out"
            else:
                assert raw.bytes_received == 0
                record = f"incoming 127.0.0.1:{raw.local_address[1]} dropped before handshake"
                assert f"{record}: handshake timed out" in caplog.text
        finally:
            await raw.close()
        await sw.complete()


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (b"GET /announce HTTP/1.1\r\nHost: x\r\n\r\n", "not a BitTorrent handshake"),
        (b"\x13BitTorrent protocoX", "not a BitTorrent handshake"),
        (bytes(68), "not a BitTorrent handshake"),
        ("unknown", "unknown or unavailable info-hash"),
    ],
    ids=["http", "bad-pstr", "zeros", "unknown-info-hash"],
)
async def test_bad_handshake_dropped(
    tmp_path: Path, sent: bytes | str, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="core.engine.client")
    async with swarm(tmp_path) as sw:
        sw.add_honest()
        raw = await RawPeer.connect(sw.leecher.listen_port)
        try:
            if sent == "unknown":
                await raw.send_handshake(bytes(range(20)), make_peer_id(b"stranger"))
            else:
                assert isinstance(sent, bytes)
                await raw.send_raw(sent)
            assert await raw.wait_dropped(5)
            assert raw.bytes_received == 0  # not even our handshake
        finally:
            await raw.close()
        record = f"incoming 127.0.0.1:{raw.local_address[1]} dropped before handshake"
        assert f"{record}: {expected}" in caplog.text
        await sw.complete()
        assert sw.leecher.banned == {}


# --------------------------------------------------------------------------- storage errors


class FlakyStorage(MemoryStorage):
    """Memory storage whose writes fail with EIO while ``broken`` is set."""

    broken = True
    failed_writes = 0

    def write_block(self, piece: int, begin: int, data: BlockData) -> None:
        if self.broken:
            self.failed_writes += 1
            raise StorageError(errno.EIO, "injected write failure")
        super().write_block(piece, begin, data)


async def test_io_error_never_bans_and_resume_retries(tmp_path: Path) -> None:
    made: list[FlakyStorage] = []

    def make_storage(layout: Layout) -> Storage:
        made.append(FlakyStorage(layout))
        return made[-1]

    async with swarm(tmp_path, make_storage) as sw:
        (storage,) = made
        sw.add_honest()
        with pytest.raises(TorrentError, match="injected write failure"):
            async with asyncio.timeout(10):
                await sw.torrent.wait_complete()
        assert sw.torrent.state is TorrentState.ERROR
        assert sw.torrent.error is not None and "injected write failure" in sw.torrent.error
        failed = await sw.wait_event(lambda e: isinstance(e, StorageFailed))
        assert isinstance(failed, StorageFailed) and "injected" in failed.error
        assert storage.failed_writes >= 1
        # Our disk failed, not the peer: nobody is banned or blamed.
        assert sw.leecher.banned == {}
        assert sw.torrent.stats().pieces_dirtied_bad == 0
        await asyncio.sleep(0.3)
        events = sw.drain()
        assert not [e for e in events if isinstance(e, PeerDisconnected)]
        assert [p.address for p in sw.torrent.peers] == [sw.honest_address]
        assert not sw.torrent.have_bitfield().any()

        storage.broken = False
        sw.torrent.resume()
        state: TorrentState = sw.torrent.state
        assert state is TorrentState.DOWNLOADING
        async with asyncio.timeout(15):
            await sw.torrent.wait_complete()
        got = b"".join(storage.read_piece(p) for p in range(NUM_PIECES))
        assert got == sw.payload
        assert sw.leecher.banned == {}


async def _serve_one_corrupt_piece(sw: Swarm, peer_id: bytes) -> tuple[str, int] | None:
    """Connect as a seeder, answer the first requested piece with junk, hang up.

    Returns our address, or None if the client refused us at the handshake.
    """
    raw = await RawPeer.connect(sw.leecher.listen_port)
    try:
        await raw.send_handshake(sw.info_hash, peer_id)
        await raw.read_handshake()
        await raw.send(HaveAll(), Unchoke())
        piece = None
        served = 0
        async with asyncio.timeout(10):
            while True:
                msg = await raw.read_message()
                if msg is None:
                    return None
                if not isinstance(msg, Request) or piece not in (None, msg.index):
                    continue
                piece = msg.index
                await raw.send(Piece(msg.index, msg.begin, bytes(msg.length)))
                served += msg.length
                if served == min(PIECE, SIZE - piece * PIECE):
                    return raw.local_address
    finally:
        await raw.close()


def _failed_by(address: tuple[str, int]) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, PieceHashFailed) and e.peers == (address,)


async def test_corrupt_peer_reconnecting_is_still_banned(tmp_path: Path) -> None:
    """Hash failures count against the peer, not one connection of it."""
    liar_id = make_peer_id(b"reconnecting liar")
    async with swarm(tmp_path) as sw:
        addresses = []
        pieces = []
        for _ in range(2):
            address = await _serve_one_corrupt_piece(sw, liar_id)
            assert address is not None
            addresses.append(address)
            failed = await sw.wait_event(_failed_by(address))
            assert isinstance(failed, PieceHashFailed)
            pieces.append(failed.piece)
        # The second connection inherited the first one's parole.
        assert sw.leecher.banned == {
            f"127.0.0.1:{addresses[1][1]}": f"failed pieces {pieces[0]} (alone), "
            f"{pieces[1]} (alone): the last one sent alone while on parole"
        }
        assert await _serve_one_corrupt_piece(sw, liar_id) is None
        await sw.complete()


async def test_dialled_peer_that_never_handshakes_times_out(tmp_path: Path) -> None:
    async def mute(peer: RawPeer) -> None:
        await peer.wait_dropped(30)

    async with swarm(tmp_path, handshake_timeout=0.5) as sw, RawListener(mute) as listener:
        address = (LOCAL, listener.port)
        sw.torrent.add_peers([address])
        assert await sw.disconnect_reason(address) == "handshake timed out"
        assert sw.torrent.stats().half_open_peers == 0
        assert listener.connections == 1
        await sw.complete()
        assert sw.leecher.banned == {}


async def test_rejected_connections_release_their_slots(tmp_path: Path) -> None:
    """Forty bad connections in a row: every one is closed and its slot given back."""
    async with swarm(tmp_path, max_connections=8, max_connections_per_torrent=8) as sw:
        for i in range(40):
            raw = await RawPeer.connect(sw.leecher.listen_port)
            try:
                if i % 2:
                    await raw.send_raw(b"garbage" * 10)
                else:
                    await raw.send_handshake(sw.info_hash, make_peer_id(b"%d" % i))
                    await raw.read_handshake()
                    await raw.send(Have(NUM_PIECES + i))
                assert await raw.wait_dropped(5)
            finally:
                await raw.close()
        await asyncio.sleep(0.1)
        assert not sw.torrent.peers
        assert sw.leecher.may_open_connection()
        await sw.complete()
