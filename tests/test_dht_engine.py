"""The DHT in the engine, loopback: clients without trackers find each other through it.

The seeder's client has no bootstrap nodes; the leecher's bootstraps from
the seeder's (``dht_bootstrap_nodes=("127.0.0.1:PORT",)``).  A bootstrap node
is a router that never enters the leecher's routing table, but a lookup on
a table that thin starts from the routers too (as libtorrent's do), and the
seeder learns of the leecher when it is queried, so each side's announce
reaches the other's node.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.config import ClientConfig
from core.dht.events import LookupFinished
from core.dht.types import NodeInfo
from core.engine import dht_service
from core.engine.client import Client
from core.engine.dht_service import decode_state
from core.engine.dht_torrent import DHT_URL, TorrentDht
from core.engine.torrent import Torrent
from core.events import DhtBootstrapped, DhtPeersFound, PeerConnected, PeerSource
from core.formats.create import create_torrent
from core.formats.magnet import Magnet
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from core.tracker.types import TrackerStatus
from core.types import InfoHash
from tests.support.engine import loopback_config, make_torrent, tree_digest

pytestmark = pytest.mark.timeout(60)

FILES = {"pay/a.bin": 200_000, "pay/b.bin": 33_333}
#: How two DHT clients meet: the leecher dials a peer its lookup or an
#: announce to its node named (dht), or the seeder dials the leecher it heard
#: announce (incoming at the leecher).
DHT_SOURCES = {PeerSource.DHT, PeerSource.INCOMING}
PIECE = 16384


async def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def dht_row(t: Torrent) -> TrackerStatus | None:
    rows = [r for r in t.trackers() if r.url == DHT_URL]
    assert len(rows) <= 1
    return rows[0] if rows else None


async def _seeder(tmp: Path, mi: Metainfo, src: Path) -> tuple[Client, Torrent]:
    client = Client(loopback_config(tmp, "seed", dht=True, dht_bootstrap_nodes=()))
    await client.start()
    t = await client.add_metainfo(mi, download_dir=src)
    assert t.state is TorrentState.SEEDING
    return client, t


async def _leecher(tmp: Path, seeder: Client) -> Client:
    assert seeder.dht is not None
    cfg = loopback_config(
        tmp, "leech", dht=True, dht_bootstrap_nodes=(f"127.0.0.1:{seeder.dht.port}",)
    )
    client = Client(cfg)
    sub = client.bus.subscribe(kinds=(DhtBootstrapped,))
    await client.start()
    assert client.dht is not None and client.dht_servers() == [client.dht]
    assert client.dht.port == client.listen_port  # UDP shares the TCP port's number
    assert await client.dht.wait_bootstrapped(10)
    async with asyncio.timeout(5):
        event = await sub.get()
    assert event == DhtBootstrapped(nodes=0, ok=True)
    sub.close()
    return client


async def test_info_hash_magnet_completes_from_a_seeder_found_in_the_dht(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    seeder, st = await _seeder(tmp_path, mi, src)
    try:
        row = dht_row(st)
        assert row is not None and row.tier == -1
        leech = await _leecher(tmp_path, seeder)
        try:
            # The seeder announces now (its first round found an empty DHT).
            st.dht_announce()
            await eventually(lambda: (r := dht_row(st)) is not None and r.last_result == "ok")
            sub = leech.bus.subscribe(kinds=(DhtPeersFound, PeerConnected))
            t = await leech.add_magnet(Magnet(mi.info_hash).uri())  # nothing but the hash
            async with asyncio.timeout(30):
                await t.wait_complete()
            assert tree_digest(leech.config.download_dir) == tree_digest(src)
            events = []
            while (e := sub.get_nowait()) is not None:
                events.append(e)
            found = [e for e in events if isinstance(e, DhtPeersFound)]
            assert found and found[0].info_hash == mi.info_hash
            assert found[0].peers >= 1 and found[0].total >= found[0].peers
            # The leecher dials what its lookup found (source dht), or the
            # seeder, told of the leecher by its announce, dials first (incoming).
            connected = [e for e in events if isinstance(e, PeerConnected)]
            assert connected and {e.source for e in connected} <= DHT_SOURCES

            row = dht_row(t)
            assert row is not None
            assert (row.tier, row.last_result, row.last_error) == (-1, "ok", None)
            assert row.peers_received >= 1
            assert row.last_announce is not None and abs(row.last_announce - time.time()) < 60
            assert row.next_announce is not None and row.next_announce > time.time() + 600

            snap = leech.snapshot()
            assert snap.dht_state == "ok"
            assert snap.dht_nodes >= snap.dht_good_nodes >= 0
            seed_snap = seeder.snapshot()
            assert seed_snap.dht_state == "ok" and seed_snap.dht_nodes >= 1
        finally:
            await leech.close()
        state = decode_state((tmp_path / "leech" / "state" / "dht.dat").read_bytes())
        assert state.node_id is not None
    finally:
        await seeder.close()


async def test_an_announce_to_our_node_reaches_the_waiting_magnet(tmp_path: Path) -> None:
    """The magnet is added first; the seeder's announce to our node brings it its peer."""
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE, seed=7)
    seeder, st = await _seeder(tmp_path, mi, src)
    try:
        leech = await _leecher(tmp_path, seeder)
        try:
            sub = leech.bus.subscribe(kinds=(PeerConnected,))
            t = await leech.add_magnet(Magnet(mi.info_hash).uri())
            # The leecher's first lookup ends before the seeder has announced
            # anywhere (its own first round found an empty DHT).
            await eventually(lambda: (r := dht_row(t)) is not None and r.last_result != "")
            st.dht_announce()
            async with asyncio.timeout(30):
                await t.wait_complete()
            event = sub.get_nowait()
            assert isinstance(event, PeerConnected) and event.source in DHT_SOURCES
        finally:
            await leech.close()
    finally:
        await seeder.close()


async def test_private_torrents_never_ask_the_dht(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    (src / "priv").mkdir(parents=True)
    (src / "priv" / "x.bin").write_bytes(b"p" * 40_000)
    mi = create_torrent(src / "priv", piece_length=PIECE, private=True)
    assert mi.info.private
    async with Client(loopback_config(tmp_path, "c", dht=True, dht_bootstrap_nodes=())) as c:
        assert c.dht is not None
        asked: list[bytes] = []
        real = c.dht.get_peers

        async def spy(info_hash: bytes, **kwargs: object) -> object:
            asked.append(info_hash)
            return await real(info_hash, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(c.dht, "get_peers", spy)
        t = await c.add_metainfo(mi, download_dir=src)
        assert t.state is TorrentState.SEEDING
        assert not t.uses_dht and dht_row(t) is None
        t.dht_announce()
        t.pause()
        t.resume()
        # A public torrent next to it does ask (so the spy works).
        pub_src = tmp_path / "pub"
        pub = make_torrent(pub_src, {"pub.bin": 20_000}, PIECE)
        p = await c.add_metainfo(pub, download_dir=pub_src)
        await eventually(lambda: pub.info_hash.wire in asked)
        assert p.uses_dht
        await asyncio.sleep(0.2)
        assert mi.info_hash.wire not in asked


async def test_a_private_magnet_stops_using_the_dht_when_its_info_arrives(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    (src / "priv").mkdir(parents=True)
    (src / "priv" / "x.bin").write_bytes(b"q" * 40_000)
    mi = create_torrent(src / "priv", piece_length=PIECE, private=True)
    seeder = Client(loopback_config(tmp_path, "seed"))
    await seeder.start()
    try:
        await seeder.add_metainfo(mi, download_dir=src)
        async with Client(loopback_config(tmp_path, "leech", dht=True)) as leech:
            magnet = Magnet(mi.info_hash, peers=(f"127.0.0.1:{seeder.listen_port}",))
            t = await leech.add_magnet(magnet.uri())
            before = t.uses_dht  # privacy unknown until the info arrives
            async with asyncio.timeout(20):
                await t.wait_complete()
            after = t.uses_dht
            assert t.info.private
            assert before and not after and dht_row(t) is None
    finally:
        await seeder.close()


async def test_pause_stops_the_dht_rounds_and_resume_restarts_them(tmp_path: Path) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)
    seeder, st = await _seeder(tmp_path, mi, src)
    try:
        await eventually(lambda: (r := dht_row(st)) is not None and r.last_result == "error")
        row = dht_row(st)
        assert row is not None and row.last_error  # an empty DHT: "no nodes to ask"
        assert row.next_announce is not None
        st.pause()
        row = dht_row(st)
        assert row is not None and row.next_announce is None
        st.resume()
        row = dht_row(st)
        assert row is not None and row.next_announce is not None
    finally:
        await seeder.close()


async def test_default_config_starts_and_closes_promptly_without_dns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default bootstrap nodes are public names; here DNS hangs, and nothing waits for it."""

    def hung(host: str, port: int) -> list[tuple[str, int]]:
        time.sleep(20)
        raise OSError("timed out")

    monkeypatch.setattr(dht_service, "_getaddrinfo", hung)
    cfg = ClientConfig(
        listen_addresses=("127.0.0.1",),
        data_dir=tmp_path / "state",
        download_dir=tmp_path / "dl",
    )
    assert cfg.dht and cfg.dht_bootstrap_nodes  # the defaults
    t0 = time.monotonic()
    async with Client(cfg) as client:
        assert client.dht is not None
        assert client.snapshot().dht_state == "bootstrapping"
    assert time.monotonic() - t0 < 3.0


async def test_a_busy_udp_port_leaves_the_dht_off(tmp_path: Path) -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        cfg = loopback_config(tmp_path, "c", dht=True, listen_port=port)
        try:
            async with Client(cfg) as client:
                assert client.listen_port == port
                assert client.dht is None and client.dht_servers() == []
                client.add_dht_nodes(["127.0.0.1:1"])  # no-op when off
                assert client.snapshot().dht_state == "off"
                src = tmp_path / "src"
                t = await client.add_metainfo(make_torrent(src, FILES, PIECE), download_dir=src)
                assert not t.uses_dht and dht_row(t) is None
        except OSError:  # pragma: no cover - the TCP port happened to be taken
            pytest.skip("TCP port in use")
    finally:
        busy.close()


async def test_dht_off_in_config(tmp_path: Path) -> None:
    async with Client(loopback_config(tmp_path, "c")) as client:
        assert client.dht is None
        assert client.snapshot().dht_state == "off"
        assert not (tmp_path / "c" / "state" / "dht.dat").exists()


# --- the per-torrent source alone, over a scripted DHT ----------------------------------------


class ScriptedDht:
    """A DhtLookups whose lookups answer at once with two replies (one repeating a peer)."""

    port = 7000
    state = "ok"

    def __init__(self, error: str | None = None) -> None:
        self.error = error
        self.calls: list[tuple[bytes, int | None, bool]] = []

    async def wait_bootstrapped(self, timeout: float) -> bool:
        return True

    async def get_peers(
        self,
        info_hash: bytes,
        *,
        announce_port: int | None = None,
        implied_port: bool = False,
        on_peers: Callable[[tuple[tuple[str, int], ...]], None] | None = None,
    ) -> LookupFinished:
        self.calls.append((info_hash, announce_port, implied_port))
        if self.error is not None:
            return LookupFinished(1, "announce", info_hash, (), 0, 0, 0, 0, error=self.error)
        if on_peers is not None:
            on_peers((("10.0.0.1", 1), ("10.0.0.2", 2)))
            on_peers((("10.0.0.1", 1),))
        node = NodeInfo(b"n" * 20, ("10.0.0.9", 6881))
        return LookupFinished(1, "announce", info_hash, (node,), 2, 1, 1, 3)

    def note_external_ip(self, ip: str, voter: str) -> None:
        pass


def _source(
    dht: ScriptedDht | None, info_hash: InfoHash, *, wants: bool = False
) -> tuple[TorrentDht, list[tuple[str, int]], list[object]]:
    got: list[tuple[str, int]] = []
    events: list[object] = []
    source = TorrentDht(
        info_hash=info_hash,
        service=lambda: dht,
        announce_port=lambda: (7000, True),
        on_peers=got.extend,
        wants_peers=lambda: wants,
        publish=events.append,
        min_relookup=0.1,
    )
    return source, got, events


async def test_torrent_source_rounds_peers_events_and_status() -> None:
    hybrid = InfoHash(v1=b"\x01" * 20, v2=b"\x02" * 32)
    dht = ScriptedDht()
    source, got, events = _source(dht, hybrid)
    assert source.targets == (b"\x01" * 20, b"\x02" * 20)
    source.start()
    await eventually(lambda: source.rounds == 1, 5)
    # Both hashes of a hybrid are looked up and announced, with the implied port.
    assert dht.calls == [(b"\x01" * 20, 7000, True), (b"\x02" * 20, 7000, True)]
    assert got == [("10.0.0.1", 1), ("10.0.0.2", 2)]  # each peer once per round
    assert events == [DhtPeersFound(hybrid, 2, 2)]
    row = source.status()
    assert (row.url, row.tier, row.last_result, row.peers_received) == (DHT_URL, -1, "ok", 2)
    assert row.next_announce is not None and row.next_announce > time.time() + 0.8 * 15 * 60
    source.announce_now()
    await eventually(lambda: source.rounds == 2, 5)
    source.stop()
    assert source.status().next_announce is None
    source.announce_now()  # stopped: nothing happens
    await asyncio.sleep(0.05)
    assert source.rounds == 2
    await source.aclose()


async def test_torrent_source_relooks_when_short_of_peers_and_retries_failures() -> None:
    dht = ScriptedDht()
    source, _, _ = _source(dht, InfoHash(v1=b"\x03" * 20), wants=True)
    source.start()
    await eventually(lambda: source.rounds >= 3, 5)  # every min_relookup (0.1 s here)
    await source.aclose()

    failing = ScriptedDht(error="no nodes to ask")
    source, _, events = _source(failing, InfoHash(v1=b"\x04" * 20))
    source.start()
    await eventually(lambda: source.rounds >= 2, 5)  # retried after min_relookup
    row = source.status()
    assert (row.last_result, row.last_error) == ("error", "no nodes to ask")
    assert row.failures >= 2 and events == []
    source.disable()
    assert not source.enabled and not source.running
    source.start()
    assert not source.running
    await source.aclose()


async def test_torrent_source_without_a_dht_does_nothing() -> None:
    source, _, _ = _source(None, InfoHash(v1=b"\x05" * 20))
    assert not source.enabled
    source.start()
    assert not source.running
