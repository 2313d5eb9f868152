"""Peer exchange (ut_pex, BEP 11) in the engine.

The discovery tests use three peers where A knows only B and B knows C: A
must reach C through what B tells it, within the PEX interval (shortened by
``ClientConfig.pex_interval``).  B downloads slowly (a rate limit) so that it
is still connected to C when A arrives: two complete peers hang up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.bus import Subscription
from core.engine.client import Client
from core.engine.peer import Peer
from core.engine.torrent import Torrent
from core.events import PeerConnected, PeerSource
from core.formats.bencoding import encode as bencode
from core.formats.metainfo import Metainfo
from core.wire import UT_PEX, ExtensionHandshake
from core.wire.extensions import decode_extension_handshake, encode_extension_handshake
from core.wire.messages import Extended, HaveNone, Reserved
from core.wire.pex import PEX_REACHABLE, PEX_SEED, PexMessage, decode_pex, encode_pex
from tests.support.engine import loopback_config, make_torrent, tree_digest
from tests.support.ltharness import LibtorrentPeerFactory, lt_peer_factory  # noqa: F401
from tests.support.rawpeer import RawPeer

PEX_INTERVAL = 1.0
FILES = {"px/a.bin": 600_000, "px/b.bin": 123_457}
PIECE = 16384


def _cfg(tmp: Path, name: str, **extra: object) -> dict[str, object]:
    return {"pex": True, "pex_interval": PEX_INTERVAL, **extra}


async def _client(tmp: Path, name: str, **extra: object) -> Client:
    client = Client(loopback_config(tmp, name, **_cfg(tmp, name, **extra)))
    await client.start()
    return client


async def _wait(pred: object, timeout: float, what: str) -> None:
    assert callable(pred)
    try:
        async with asyncio.timeout(timeout):
            while not pred():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def _connected(sub: Subscription, port: int, timeout: float, what: str) -> PeerConnected:
    """The PeerConnected event for 127.0.0.1:port (a fast download may close it at once)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                event = await sub.get()
                if isinstance(event, PeerConnected) and event.address == ("127.0.0.1", port):
                    return event
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def _peer_at(t: Torrent, port: int) -> Peer | None:
    for p in t.peers:
        if p.address == ("127.0.0.1", port):
            return p
    return None


@pytest.mark.timeout(60)
async def test_pex_discovery_between_our_clients(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    c = await _client(tmp_path, "c", pex=False)  # C must not learn of A and dial it first
    b = await _client(tmp_path, "b", download_rate_limit=40_000)
    a = await _client(tmp_path, "a")
    try:
        tc = await c.add_metainfo(mi, download_dir=src)
        tb = await b.add_metainfo(mi)
        tb.add_peers([("127.0.0.1", c.listen_port)])
        await _wait(lambda: _peer_at(tb, c.listen_port), 10, "B to connect to C")
        sub = a.bus.subscribe(kinds=(PeerConnected,))
        ta = await a.add_metainfo(mi)
        ta.add_peers([("127.0.0.1", b.listen_port)])
        # Within the interval (plus a timer tick and the dial), A knows C from B.
        event = await _connected(sub, c.listen_port, 3 * PEX_INTERVAL + 2, "A to reach C")
        assert event.source is PeerSource.PEX
        # B's message listed C as a reachable seed, and never A itself.
        (state,) = [s for p, s in ta._ext.pex.items() if p.address[1] == b.listen_port]
        assert state.stats.addresses_accepted >= 1
        assert ("127.0.0.1", a.listen_port) not in ta._swarm.known_peers
        async with asyncio.timeout(30):
            await ta.wait_complete()
        assert tree_digest(a.config.download_dir) == tree_digest(src)
        assert tc.stats().bytes_written_data > 0
    finally:
        for client in (a, b, c):
            await client.close()


@pytest.mark.timeout(90)
async def test_pex_discovery_through_libtorrent(
    tmp_path: Path,
    lt_peer_factory: LibtorrentPeerFactory,  # noqa: F811
) -> None:
    """B is libtorrent: its ut_pex (sent about once a minute, first soon after connecting)."""
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    torrent_file = tmp_path / "px.torrent"
    torrent_file.write_bytes(mi.to_bytes())
    c = await _client(tmp_path, "c", pex=False)  # C must not learn of A and dial it first
    a = await _client(tmp_path, "a")
    lt_b = await asyncio.to_thread(lt_peer_factory, "b", download_rate=40_000)
    try:
        await c.add_metainfo(mi, download_dir=src)
        ih = await asyncio.to_thread(lt_b.add_torrent, torrent_file, tmp_path / "lt_b")
        await asyncio.to_thread(lt_b.connect, ih, "127.0.0.1", c.listen_port)

        def b_has_c() -> bool:
            st = lt_b.status(ih)
            return any(int(p["port"]) == c.listen_port for p in st["peers"])

        async with asyncio.timeout(15):
            while not await asyncio.to_thread(b_has_c):
                await asyncio.sleep(0.1)
        sub = a.bus.subscribe(kinds=(PeerConnected,))
        ta = await a.add_metainfo(mi)
        ta.add_peers([("127.0.0.1", lt_b.port)])
        event = await _connected(sub, c.listen_port, 15, "A to reach C through libtorrent")
        assert event.source is PeerSource.PEX
        async with asyncio.timeout(30):
            await ta.wait_complete()
        assert tree_digest(a.config.download_dir) == tree_digest(src)
    finally:
        await a.close()
        await c.close()


# --------------------------------------------------------------------- raw peers


async def _raw_with_pex(port: int, mi: Metainfo, *, pex_id: int = 7) -> tuple[RawPeer, int]:
    """A raw peer that completed both handshakes offering ut_pex; returns our ut_pex id."""
    raw = await RawPeer.connect(port)
    await raw.send_handshake(mi.info_hash.wire, reserved=Reserved.make(extended=True, fast=True))
    await raw.read_handshake()
    hs = ExtensionHandshake(m={UT_PEX: pex_id}, v="raw")
    await raw.send(Extended(0, encode_extension_handshake(hs)), HaveNone())
    while True:
        msg = await raw.read_until(Extended)
        assert isinstance(msg, Extended)
        if msg.ext_id == 0:
            theirs = decode_extension_handshake(msg.payload)
            return raw, theirs.m.get(UT_PEX, 0)


async def _read_pex(raw: RawPeer, pex_id: int, timeout: float) -> PexMessage:
    async with asyncio.timeout(timeout):
        while True:
            msg = await raw.read_until(Extended, timeout=timeout)
            assert isinstance(msg, Extended), "connection closed"
            if msg.ext_id == pex_id:
                return decode_pex(msg.payload)


@pytest.mark.timeout(30)
async def test_pex_message_lists_connected_peers_with_flags(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    # The seeder's upload limit keeps the hub downloading for the whole test.
    # (A download limit on the hub would not do: while the limit pauses its
    # reading, the hub cannot see the seeder hang up, and no drop is sent.)
    seeder = await _client(tmp_path, "seed", upload_rate_limit=20_000)
    hub = await _client(tmp_path, "hub")
    try:
        await seeder.add_metainfo(mi, download_dir=src)
        th = await hub.add_metainfo(mi)
        th.add_peers([("127.0.0.1", seeder.listen_port)])
        await _wait(lambda: _peer_at(th, seeder.listen_port), 10, "hub to connect")
        await _wait(lambda: all(p.is_seed for p in th.peers), 5, "the seeder's bitfield")
        raw, ours = await _raw_with_pex(hub.listen_port, mi)
        assert ours != 0
        msg = await _read_pex(raw, 7, 3 * PEX_INTERVAL + 2)
        assert msg.added == {("127.0.0.1", seeder.listen_port): PEX_REACHABLE | PEX_SEED}
        assert msg.dropped == ()
        # The seeder goes: the next message drops it.
        await seeder.close()
        msg = await _read_pex(raw, 7, 3 * PEX_INTERVAL + 2)
        assert msg.dropped == (("127.0.0.1", seeder.listen_port),)
        assert not msg.added
        await raw.close()
    finally:
        await hub.close()
        await seeder.close()


@pytest.mark.timeout(30)
async def test_pex_flood_is_rate_limited(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    # Long interval: the flooder's second message falls inside min_accept_interval.
    client = await _client(tmp_path, "c", pex_interval=60.0, max_half_open_per_torrent=2)
    try:
        t = await client.add_metainfo(mi)
        raw, ours = await _raw_with_pex(client.listen_port, mi)
        assert ours != 0

        def flood(base: int) -> bytes:
            hosts = [f"127.0.{(base + i) // 250}.{(base + i) % 250 + 1}" for i in range(200)]
            return encode_pex(PexMessage({(h, 9): 0 for h in hosts}))

        for k in range(5):
            await raw.send(Extended(ours, flood(1000 * k)))
        await asyncio.sleep(0.5)
        pex_known = [a for a, s in t._swarm.known_peers.items() if s is PeerSource.PEX]
        assert len(pex_known) == 50  # one message honoured, capped at 50 addresses
        (state,) = t._ext.pex.values()
        assert state.stats.messages_received == 5
        assert state.stats.messages_ignored == 4
        # Garbage in ut_pex is a protocol violation: the peer is dropped.
        await raw.send(Extended(ours, bencode({b"added": b"12345"})))
        assert await raw.wait_dropped(5)
    finally:
        await client.close()
