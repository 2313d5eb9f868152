"""Private torrents (BEP 27): no ut_pex, ever; peers only from the torrent's trackers.

A private torrent's handshake leaves ``ut_pex`` out, it never sends a PEX
message, and a peer that sends one anyway is dropped before its addresses
are read.  A magnet cannot know privacy before the info dict arrives: it
offers ut_pex meanwhile, then withdraws it and forgets every peer PEX gave.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.engine.client import Client
from core.engine.metadata import METADATA_PIECE_SIZE
from core.events import PeerSource
from core.formats.create import create_torrent
from core.formats.magnet import Magnet
from core.formats.metainfo import Metainfo
from core.wire import UT_METADATA, UT_PEX, ExtensionHandshake
from core.wire.extensions import (
    MetadataData,
    MetadataRequest,
    decode_extension_handshake,
    decode_metadata_message,
    encode_extension_handshake,
    encode_metadata_message,
)
from core.wire.messages import Extended, HaveNone, Reserved
from core.wire.pex import PexMessage, encode_pex
from tests.support.engine import loopback_config, tree_digest, write_files
from tests.support.rawpeer import RawListener, RawPeer, make_peer_id

pytestmark = pytest.mark.timeout(60)

PEX_INTERVAL = 0.3
FILES = {"priv/a.bin": 250_000, "priv/b.bin": 4_321}
RAW_PEX_ID = 5
RAW_METADATA_ID = 6


def _private_torrent(root: Path) -> Metainfo:
    write_files(root, FILES)
    mi = create_torrent(root / "priv", piece_length=16384, private=True)
    assert mi.info.private
    return mi


async def _read_ext_handshake(raw: RawPeer) -> ExtensionHandshake:
    while True:
        msg = await raw.read_until(Extended)
        assert isinstance(msg, Extended), "connection closed"
        if msg.ext_id == 0:
            return decode_extension_handshake(msg.payload)


async def test_private_torrent_never_sends_or_accepts_ut_pex(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = _private_torrent(src)
    async with (
        Client(loopback_config(tmp_path, "seed", pex=True, pex_interval=PEX_INTERVAL)) as seeder,
        Client(loopback_config(tmp_path, "other", download_rate_limit=20_000)) as other,
    ):
        t = await seeder.add_metainfo(mi, download_dir=src)
        # Another peer is connected, so there would be something to exchange.
        o = await other.add_metainfo(mi)  # (rate-limited below: it stays a leecher)
        o.add_peers([("127.0.0.1", seeder.listen_port)])
        raw = await RawPeer.connect(seeder.listen_port)
        await raw.send_handshake(mi.info_hash.wire, reserved=Reserved.make(extended=True))
        await raw.read_handshake()
        hs = ExtensionHandshake(m={UT_PEX: RAW_PEX_ID}, v="raw", p=40000)
        await raw.send(Extended(0, encode_extension_handshake(hs)))
        async with asyncio.timeout(5):
            theirs = await _read_ext_handshake(raw)
        assert UT_PEX not in theirs.m
        assert UT_METADATA in theirs.m
        # Several PEX intervals: not one ut_pex message arrives.
        seen: list[Extended] = []

        async def collect() -> None:
            while True:
                msg = await raw.read_message()
                if msg is None:
                    return
                if isinstance(msg, Extended):
                    seen.append(msg)

        try:
            async with asyncio.timeout(6 * PEX_INTERVAL):
                await collect()
        except TimeoutError:
            pass
        assert [m for m in seen if m.ext_id == RAW_PEX_ID] == []
        assert len(t.peers) == 2 and t._ext.pex == {}
        # Sending one anyway (on the id a public torrent would use) breaks the protocol.
        public_id = dict(theirs.m).get(UT_PEX, 1)
        offer = encode_pex(PexMessage({("127.0.0.1", 9): 0}))
        await raw.send(Extended(public_id, offer))
        assert await raw.wait_dropped(5)
        assert ("127.0.0.1", 9) not in t._swarm.known_peers
        await raw.close()


async def test_no_pex_discovery_in_a_private_swarm(tmp_path: Path) -> None:
    """A knows B, B knows C: with a private torrent A never hears of C."""
    src = tmp_path / "src"
    mi = _private_torrent(src)
    clients = [
        Client(loopback_config(tmp_path, n, pex=True, pex_interval=PEX_INTERVAL, **extra))
        for n, extra in (("c", {}), ("b", {"download_rate_limit": 30_000}), ("a", {}))
    ]
    c, b, a = clients
    for client in clients:
        await client.start()
    try:
        await c.add_metainfo(mi, download_dir=src)
        tb = await b.add_metainfo(mi)
        tb.add_peers([("127.0.0.1", c.listen_port)])
        ta = await a.add_metainfo(mi)
        async with asyncio.timeout(10):
            while not tb.peers:
                await asyncio.sleep(0.02)
        ta.add_peers([("127.0.0.1", b.listen_port)])
        await asyncio.sleep(8 * PEX_INTERVAL)
        assert [p.address for p in ta.peers] == [("127.0.0.1", b.listen_port)]
        assert set(ta._swarm.known_peers) == {("127.0.0.1", b.listen_port)}
        assert ta._ext.pex == {} and tb._ext.pex == {}
    finally:
        for client in clients:
            await client.close()


async def test_private_magnet_withdraws_pex_when_the_info_arrives(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = _private_torrent(src)
    assert len(mi.raw_info) <= METADATA_PIECE_SIZE
    handshakes: list[ExtensionHandshake] = []
    pex_sent = asyncio.Event()
    release = asyncio.Event()  # the test saw the PEX address: hand over the metadata
    dropped = asyncio.Event()

    async def serve_metadata(peer: RawPeer) -> None:
        """Offers ut_pex and ut_metadata; tells of a peer by PEX, then hands over the info."""
        await peer.read_handshake()
        reserved = Reserved.make(extended=True, fast=True)
        await peer.send_handshake(mi.info_hash.wire, make_peer_id(b"meta"), reserved)
        hs = ExtensionHandshake(
            m={UT_PEX: RAW_PEX_ID, UT_METADATA: RAW_METADATA_ID},
            metadata_size=len(mi.raw_info),
        )
        await peer.send(Extended(0, encode_extension_handshake(hs)), HaveNone())
        ids: dict[str, int] = {}
        first_pex_id = 0
        while True:
            msg = await peer.read_message()
            if msg is None:
                dropped.set()
                return
            if not isinstance(msg, Extended):
                continue
            if msg.ext_id == 0:
                theirs = decode_extension_handshake(msg.payload)
                handshakes.append(theirs)
                ids.update(theirs.m)
                if len(handshakes) == 1:
                    first_pex_id = ids.get(UT_PEX, 0)
                    assert first_pex_id, "a magnet offers ut_pex while privacy is unknown"
                    offer = encode_pex(PexMessage({("127.0.0.1", 9): 0}))
                    await peer.send(Extended(ids[UT_PEX], offer))
                    pex_sent.set()
                elif ids.get(UT_PEX) == 0:
                    # Withdrawn: sending ut_pex now breaks the protocol.
                    offer = encode_pex(PexMessage({("127.0.0.1", 10): 0}))
                    await peer.send(Extended(first_pex_id, offer))
            elif msg.ext_id == RAW_METADATA_ID:
                await release.wait()
                req = decode_metadata_message(msg.payload)
                assert isinstance(req, MetadataRequest)
                data = MetadataData(req.piece, len(mi.raw_info), mi.raw_info)
                await peer.send(Extended(ids[UT_METADATA], encode_metadata_message(data)))

    async with (
        RawListener(serve_metadata) as listener,
        Client(loopback_config(tmp_path, "seed")) as seeder,
        Client(loopback_config(tmp_path, "leech", pex=True, pex_interval=PEX_INTERVAL)) as leech,
    ):
        await seeder.add_metainfo(mi, download_dir=src)
        t = await leech.add_magnet(Magnet(mi.info_hash, peers=(f"127.0.0.1:{listener.port}",)))
        async with asyncio.timeout(10):
            await pex_sent.wait()
            while ("127.0.0.1", 9) not in t._swarm.known_peers:
                await asyncio.sleep(0.02)
            assert t._swarm.known_peers[("127.0.0.1", 9)] is PeerSource.PEX
            release.set()
            await t.wait_info()
        assert t.info.private
        assert not t._ext.pex_enabled and t._ext.pex == {}
        assert all(src_ is not PeerSource.PEX for src_ in t._swarm.known_peers.values())
        assert all(src_ is not PeerSource.PEX for src_ in t._swarm.peer_pool.values())
        async with asyncio.timeout(10):
            await dropped.wait()  # it sent ut_pex after the withdrawal
        assert handshakes[-1].m.get(UT_PEX) == 0
        assert handshakes[-1].metadata_size == len(mi.raw_info)
        # The torrent itself works: from a peer we were given directly.
        t.add_peers([("127.0.0.1", seeder.listen_port)])
        async with asyncio.timeout(20):
            await t.wait_complete()
        assert tree_digest(leech.config.download_dir) == tree_digest(src)
        assert not listener.errors, listener.errors
