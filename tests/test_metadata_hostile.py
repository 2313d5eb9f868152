"""Hostile ut_metadata peers against a magnet: the magnet still resolves, memory stays bounded.

Each hostile peer is a scripted raw connection (tests/support/rawpeer.py)
that answers our extension handshake and metadata requests in one wrong way:
data that does not hash to the info-hash, an enormous ``metadata_size``, a
piece index past the end, or only rejects.  It is offered first and an
honest seeder only once the lie has been told, so the engine must recover
from it rather than get lucky.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.engine.client import Client
from core.engine.metadata import METADATA_PIECE_SIZE, METADATA_SIZE_LIMIT
from core.formats.magnet import Magnet
from core.formats.metainfo import Metainfo
from core.wire import UT_METADATA, ExtensionHandshake
from core.wire.extensions import (
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_extension_handshake,
    decode_metadata_message,
    encode_extension_handshake,
    encode_metadata_message,
)
from core.wire.messages import Extended, HaveNone, Reserved
from tests.support.engine import loopback_config, make_torrent, tree_digest
from tests.support.rawpeer import RawListener, RawPeer, make_peer_id

pytestmark = pytest.mark.timeout(60)

FILES = {"hm/a.bin": 200_000, "hm/b.bin": 33_333}
PIECE = 16384
RAW_ID = 3  # the id the raw peer asks ut_metadata messages to come on


class MetadataLiar:
    """A raw peer that offers metadata and answers requests per ``mode``."""

    def __init__(self, mi: Metainfo, mode: str, *, tag: bytes = b"") -> None:
        self.mi = mi
        self.mode = mode
        self.peer_id = make_peer_id(b"liar" + mode.encode() + tag)
        self.requests: list[int] = []
        self.asked = asyncio.Event()
        self.dropped = asyncio.Event()
        size = len(mi.raw_info)
        self.size = 60 << 20 if mode == "enormous" else size

    async def __call__(self, peer: RawPeer) -> None:
        try:
            await self._run(peer)
        finally:
            self.dropped.set()

    async def _run(self, peer: RawPeer) -> None:
        await peer.read_handshake()
        reserved = Reserved.make(extended=True, fast=True)
        await peer.send_handshake(self.mi.info_hash.wire, self.peer_id, reserved)
        hs = ExtensionHandshake(m={UT_METADATA: RAW_ID}, v="liar", metadata_size=self.size)
        await peer.send(Extended(0, encode_extension_handshake(hs)), HaveNone())
        theirs = 0
        while True:
            msg = await peer.read_message()
            if msg is None:
                return
            if not isinstance(msg, Extended):
                continue
            if msg.ext_id == 0:
                theirs = decode_extension_handshake(msg.payload).m.get(UT_METADATA, 0)
                continue
            assert msg.ext_id == RAW_ID, msg
            req = decode_metadata_message(msg.payload)
            assert isinstance(req, MetadataRequest)
            self.requests.append(req.piece)
            self.asked.set()
            answer = self.answer(req.piece)
            await peer.send(Extended(theirs, encode_metadata_message(answer)))

    def answer(self, piece: int) -> MetadataData | MetadataReject:
        raw = self.mi.raw_info
        begin = piece * METADATA_PIECE_SIZE
        block = raw[begin : begin + METADATA_PIECE_SIZE]
        if self.mode == "wrong_hash":
            return MetadataData(piece, len(raw), bytes(b ^ 0x55 for b in block))
        if self.mode == "out_of_range":
            last = -(-len(raw) // METADATA_PIECE_SIZE)
            return MetadataData(last + 5, len(raw), block)
        if self.mode == "reject":
            return MetadataReject(piece)
        return MetadataData(piece, len(raw), block)  # pragma: no cover - "enormous" is never asked


async def _run_case(tmp: Path, modes: list[str]) -> dict[str, MetadataLiar]:
    src = tmp / "src"
    mi = make_torrent(src, FILES, PIECE)
    assert len(mi.raw_info) < METADATA_PIECE_SIZE  # one piece: a lie is never mixed with truth
    liars = {mode: MetadataLiar(mi, mode) for mode in modes}
    listeners = [RawListener(liar) for liar in liars.values()]
    for listener in listeners:
        await listener.__aenter__()
    honest = Client(loopback_config(tmp, "honest"))
    await honest.start()
    try:
        await honest.add_metainfo(mi, download_dir=src)
        async with Client(loopback_config(tmp, "leech")) as leech:
            peers = tuple(f"127.0.0.1:{lst.port}" for lst in listeners)
            t = await leech.add_magnet(Magnet(mi.info_hash, peers=peers))
            fetcher = t._ext.fetcher
            assert fetcher is not None
            async with asyncio.timeout(15):
                for mode, liar in liars.items():
                    if mode == "enormous":
                        while not any(p.peer_id == liar.peer_id for p in t.peers):
                            await asyncio.sleep(0.02)
                    else:
                        await liar.asked.wait()
                assert fetcher.allocated <= len(mi.raw_info)
                t.add_peers([("127.0.0.1", honest.listen_port)])
                await t.wait_info()
                assert fetcher.allocated <= len(mi.raw_info)
                await t.wait_complete()
            assert t.metainfo.raw_info == mi.raw_info
            assert tree_digest(leech.config.download_dir) == tree_digest(src)
        for listener in listeners:
            assert not listener.errors, listener.errors
        return liars
    finally:
        await honest.close()
        for listener in listeners:
            await listener.__aexit__(None, None, None)


async def test_wrong_hash_then_honest(tmp_path: Path) -> None:
    liars = await _run_case(tmp_path, ["wrong_hash"])
    liar = liars["wrong_hash"]
    assert liar.requests == [0]  # asked once, distrusted after the failed whole
    assert liar.dropped.is_set()  # and, as its only author, disconnected


async def test_enormous_metadata_size_is_ignored(tmp_path: Path) -> None:
    liars = await _run_case(tmp_path, ["enormous"])
    assert liars["enormous"].size > METADATA_SIZE_LIMIT
    assert liars["enormous"].requests == []  # never asked: nothing was allocated for it


async def test_out_of_range_piece_gets_the_peer_dropped(tmp_path: Path) -> None:
    liars = await _run_case(tmp_path, ["out_of_range"])
    assert liars["out_of_range"].requests == [0]
    assert liars["out_of_range"].dropped.is_set()


async def test_only_rejects(tmp_path: Path) -> None:
    liars = await _run_case(tmp_path, ["reject"])
    assert liars["reject"].requests[:1] == [0]


async def test_all_of_them_at_once(tmp_path: Path) -> None:
    liars = await _run_case(tmp_path, ["wrong_hash", "enormous", "out_of_range", "reject"])
    assert liars["enormous"].requests == []
    assert liars["wrong_hash"].dropped.is_set()
    assert liars["out_of_range"].dropped.is_set()


async def test_metadata_requests_are_rate_limited(tmp_path: Path) -> None:
    """A peer asking for our metadata over and over gets rejects beyond its budget."""
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    async with Client(loopback_config(tmp_path, "seed")) as seeder:
        await seeder.add_metainfo(mi, download_dir=src)
        raw = await RawPeer.connect(seeder.listen_port)
        await raw.send_handshake(mi.info_hash.wire, reserved=Reserved.make(extended=True))
        await raw.read_handshake()
        hs = ExtensionHandshake(m={UT_METADATA: RAW_ID})
        await raw.send(Extended(0, encode_extension_handshake(hs)))
        ours = 0
        async with asyncio.timeout(5):
            while not ours:
                msg = await raw.read_until(Extended)
                assert isinstance(msg, Extended)
                if msg.ext_id == 0:
                    ours = decode_extension_handshake(msg.payload).m.get(UT_METADATA, 0)
        flood = 100
        req = Extended(ours, encode_metadata_message(MetadataRequest(0)))
        await raw.send(*([req] * flood))
        answers: list[MetadataData | MetadataReject] = []
        async with asyncio.timeout(5):
            while len(answers) < flood:
                msg = await raw.read_until(Extended)
                assert isinstance(msg, Extended)
                if msg.ext_id == RAW_ID:
                    got = decode_metadata_message(msg.payload)
                    assert not isinstance(got, MetadataRequest)
                    answers.append(got)
        data = [a for a in answers if isinstance(a, MetadataData)]
        assert 1 <= len(data) <= 20  # the burst, plus what refilled meanwhile
        assert all(d.data == mi.raw_info and d.total_size == len(mi.raw_info) for d in data)
        assert len(answers) - len(data) >= flood - 20
        await raw.close()


async def test_a_magnet_rejects_requests_before_it_has_the_metadata(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    got: list[object] = []

    async def script(peer: RawPeer) -> None:
        await peer.read_handshake()
        await peer.send_handshake(mi.info_hash.wire, reserved=Reserved.make(extended=True))
        hs = ExtensionHandshake(m={UT_METADATA: RAW_ID})
        await peer.send(Extended(0, encode_extension_handshake(hs)))
        while True:
            msg = await peer.read_message()
            if msg is None:
                return
            if isinstance(msg, Extended) and msg.ext_id == 0:
                ours = decode_extension_handshake(msg.payload).m[UT_METADATA]
                await peer.send(Extended(ours, encode_metadata_message(MetadataRequest(0))))
            elif isinstance(msg, Extended) and msg.ext_id == RAW_ID:
                got.append(decode_metadata_message(msg.payload))
                return

    async with (
        RawListener(script) as listener,
        Client(loopback_config(tmp_path, "leech")) as leech,
    ):
        await leech.add_magnet(Magnet(mi.info_hash, peers=(f"127.0.0.1:{listener.port}",)))
        async with asyncio.timeout(5):
            while not got:
                await asyncio.sleep(0.02)
        assert not listener.errors
    assert got and all(g == MetadataReject(0) for g in got)
