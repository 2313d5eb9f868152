"""Seeding to a peer that behaves like aria2: the cause of issue 11's "stall".

aria2c 1.36 downloading from our seeder sends ``have none``, a few hundred
requests spread over many pieces without waiting for our ``reqq``, and then,
mid-connection, a ``bitfield`` of what it has so far.  Our connection used to
fail on both (a have-set after the have-set, more requests than ``reqq``);
aria2 kept the dead connection open, so from its side the upload "stalled
after 160 blocks".  These tests play that peer on a raw socket against a
real seeding :class:`~core.engine.client.Client`: its socket is left unread while
the requests pile up (so our writes pause and the upload queue fills), then
drained, and every block must arrive, correct, on the one connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from bitarray import bitarray

from core.engine import upload
from core.engine.client import Client
from core.engine.torrent import Torrent
from core.formats.metainfo import Metainfo
from core.net import tcp
from core.stats import TorrentState
from core.wire.messages import (
    Bitfield,
    Have,
    HaveNone,
    Interested,
    Piece,
    Reject,
    Request,
    Reserved,
    Unchoke,
)
from tests.support.engine import loopback_config, make_torrent
from tests.support.rawpeer import RawPeer, make_peer_id

pytestmark = pytest.mark.timeout(60)

BLOCK = 16384
PIECE = 4 * BLOCK
#: Files that share pieces: 60 pieces, none of the files piece-aligned.
FILES = {f"multi/f{i:02d}.bin": 200_000 + 7_777 * i for i in range(19)}
LOCAL = "127.0.0.1"


@asynccontextmanager
async def seeder(tmp_path: Path) -> AsyncIterator[tuple[Metainfo, Path, Torrent, Client]]:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    client = Client(loopback_config(tmp_path, "seeder"))
    await client.start()
    try:
        t = await client.add_metainfo(mi, download_dir=src)
        assert t.state is TorrentState.SEEDING
        yield mi, src, t, client
    finally:
        await client.close()


def all_requests(mi: Metainfo) -> list[Request]:
    out = []
    for p in range(mi.info.num_pieces):
        size = mi.info.piece_size(p)
        out += [Request(p, b, min(BLOCK, size - b)) for b in range(0, size, BLOCK)]
    return out


def expected_block(mi: Metainfo, src: Path, req: Request) -> bytes:
    payload = b"".join((src / rel).read_bytes() for rel in sorted(FILES))
    start = req.index * mi.info.piece_length + req.begin
    return payload[start : start + req.length]


async def aria2_like_download(port: int, mi: Metainfo, *, in_flight: int) -> dict[Request, bytes]:
    """Fetch every block the way aria2 does; returns what arrived per request.

    Keeps ``in_flight`` requests outstanding (more than the seeder's reqq),
    spread over many pieces (every 7th piece first), sends its have-set a
    second time as a bitfield, and re-asks for what was rejected.
    """
    peer = await RawPeer.connect(port)
    try:
        await peer.send_handshake(
            mi.info_hash.wire, make_peer_id(b"aria2-like"), Reserved.make(fast=True, extended=True)
        )
        await peer.read_handshake()
        await peer.send(HaveNone(), Interested())
        assert isinstance(await peer.read_until(Unchoke, timeout=10), Unchoke)
        todo = all_requests(mi)
        todo.sort(key=lambda r: (r.index % 7, r.index, r.begin))
        pending: set[Request] = set()
        got: dict[Request, bytes] = {}
        have = bitarray(mi.info.num_pieces, endian="big")
        have.setall(0)
        late_bitfield_sent = False

        async def top_up() -> None:
            batch = []
            while todo and len(pending) < in_flight:
                req = todo.pop(0)
                pending.add(req)
                batch.append(req)
            if batch:
                assert await peer.send(*batch), "the seeder dropped us"

        await top_up()
        # Leave the socket unread while a few hundred requests pile up: the
        # seeder's writes pause and its upload queue fills.
        await asyncio.sleep(0.5)
        async with asyncio.timeout(40):
            while pending or todo:
                msg = await peer.read_message()
                assert msg is not None, "the seeder dropped us"
                if isinstance(msg, Piece):
                    req = Request(msg.index, msg.begin, len(msg.data))
                    assert req in pending, f"unrequested {req}"
                    pending.discard(req)
                    got[req] = bytes(msg.data)
                    if all(
                        Request(msg.index, b, min(BLOCK, mi.info.piece_size(msg.index) - b)) in got
                        for b in range(0, mi.info.piece_size(msg.index), BLOCK)
                    ):
                        have[msg.index] = 1
                        await peer.send(Have(msg.index))
                    if len(got) == 160 and not late_bitfield_sent:
                        # What aria2 does after ~160 blocks: its whole have-set again.
                        late_bitfield_sent = True
                        padded = have.copy()
                        padded.extend([0] * (-len(padded) % 8))
                        await peer.send(Bitfield(padded))
                elif isinstance(msg, Reject):
                    req = Request(msg.index, msg.begin, msg.length)
                    if req in pending:
                        pending.discard(req)
                        todo.append(req)
                await top_up()
        assert late_bitfield_sent
        return got
    finally:
        await peer.close()


@pytest.mark.parametrize("cache_bytes", [upload.READ_CACHE_BYTES, 2 * PIECE])
async def test_pipelined_requests_beyond_reqq_with_a_late_bitfield_all_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_bytes: int
) -> None:
    """Hundreds of requests over many pieces, socket filling and draining: every block.

    With a read cache of two pieces, queued requests also outlive their
    piece's stay in the cache and must be read again, not forgotten.
    """
    monkeypatch.setattr(upload, "READ_CACHE_BYTES", cache_bytes)
    async with seeder(tmp_path) as (mi, src, t, client):
        in_flight = 2 * client.config.request_queue_len
        started = time.monotonic()
        got = await aria2_like_download(client.listen_port, mi, in_flight=in_flight)
        elapsed = time.monotonic() - started
        reqs = all_requests(mi)
        assert set(got) == set(reqs)
        for req in reqs:
            assert got[req] == expected_block(mi, src, req), req
        assert elapsed < 30
        stats = t.stats()
        assert stats.bytes_written_data >= mi.info.total_size


async def test_a_stalled_upload_is_visible_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that asks and stops reading: its row shows the queue and its age; a log says why."""
    monkeypatch.setattr(upload, "STALL_AFTER", 1.0)
    # Our transport pauses at 64 KiB instead of 4 MiB: a few MiB fill it.
    monkeypatch.setattr(tcp, "WRITE_HIGH_WATER", 64 << 10)
    async with seeder(tmp_path) as (mi, _src, t, client):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (LOCAL, client.listen_port))
        reader, writer = await asyncio.open_connection(sock=sock)
        peer = RawPeer(reader, writer)
        try:
            await peer.send_handshake(mi.info_hash.wire, make_peer_id(b"sleepy"))
            await peer.read_handshake()
            await peer.send(HaveNone(), Interested())
            assert isinstance(await peer.read_until(Unchoke, timeout=10), Unchoke)
            # Read nothing more.  The first batch is written at once (into our
            # transport's buffer, which then pauses writing); the second queues.
            reqs = all_requests(mi)
            first, second = reqs[:150], reqs[150:300]
            await peer.send(*first)
            async with asyncio.timeout(10):
                while not t.peer_rows() or t.peer_rows()[0].up_rate == 0:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            await peer.send(*second)
            with caplog.at_level(logging.WARNING, logger="core.engine.upload"):
                async with asyncio.timeout(15):
                    while not any("stalled" in r.getMessage() for r in caplog.records):
                        await asyncio.sleep(0.1)
            (row,) = t.peer_rows()
            assert 0 < row.requests_queued <= len(second)
            assert row.oldest_request_wait is not None and row.oldest_request_wait >= 1.0
            (message,) = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
            assert "requests queued, the oldest for" in message
            assert "our socket to it is full (it is not reading)" in message
            # Reading again drains the queue; the stall is over.
            async with asyncio.timeout(15):
                while t.peer_rows()[0].requests_queued:
                    await peer.read_message()
            assert t.peer_rows()[0].oldest_request_wait is None
        finally:
            await peer.close()
