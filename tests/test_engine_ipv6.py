"""IPv6: our client listens on both families with one port and talks over [::1].

A client configured with ``("127.0.0.1", "::1")`` must accept on both
addresses with the same port (peers learn one port per client, e.g. from
the BEP 10 ``p`` key or a tracker), dial IPv6 peers, and mix peers of both
families in one torrent. Checked between two of our clients and against
libtorrent, with the SHA-256 of every file compared.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from core.bus import Subscription
from core.config import ClientConfig
from core.engine.client import Client
from core.events import PeerConnected
from core.formats.create import create_torrent
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from tests.support.engine import loopback_config
from tests.support.ltharness import (
    LibtorrentPeer,
    LibtorrentPeerFactory,
    lt_peer_factory,
    make_payload,
    sha256_tree,
)

__all__ = ["lt_peer_factory"]  # the fixture is used by name below

MIB = 1 << 20
NAME = "payload"
BOTH = ("127.0.0.1", "::1")


def _can_bind_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        not _can_bind_ipv6_loopback(), reason="this machine cannot bind a TCP socket to [::1]"
    ),
]

FILES = {
    "a/small.txt": 777,
    "a/empty": 0,
    "a/b/data.bin": 1_300_001,
    "c.bin": 700_000,
}
PIECE = 32 * 1024


def config(tmp: Path, name: str, addresses: tuple[str, ...] = BOTH, **kw: Any) -> ClientConfig:
    return loopback_config(tmp, name, listen_addresses=addresses, **kw)


def build(tmp: Path, files: dict[str, int] = FILES) -> tuple[Metainfo, Path, Path]:
    """Payload under ``tmp/seed/payload``; returns (torrent, .torrent path, seed dir)."""
    seed_dir = tmp / "seed"
    make_payload(seed_dir / NAME, files, seed=6)
    mi = create_torrent(seed_dir / NAME, piece_length=PIECE)
    path = tmp / f"{NAME}.torrent"
    path.write_bytes(mi.to_bytes())
    return mi, path, seed_dir


def assert_same_tree(got_root: Path, want_root: Path) -> None:
    got = sha256_tree(got_root)
    assert sorted(got) == sorted(FILES)
    assert got == sha256_tree(want_root)


def report(what: str, seconds: float) -> None:
    total = sum(FILES.values())
    print(f"\n{what}: {total / MIB:.1f} MiB in {seconds:.2f} s = {total / seconds / MIB:.1f} MiB/s")


def connected(sub: Subscription) -> list[tuple[str, int]]:
    """Addresses of the PeerConnected events queued so far."""
    out = []
    while (ev := sub.get_nowait()) is not None:
        if isinstance(ev, PeerConnected):
            out.append(ev.address)
    return out


async def lt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking harness call off the event loop, so our client keeps running."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def start_lt(factory: LibtorrentPeerFactory, name: str, **kw: Any) -> LibtorrentPeer:
    peer = await lt(factory, name, ipv6=True, **kw)
    assert isinstance(peer, LibtorrentPeer)
    assert peer.port6 is not None
    return peer


def v6_port(peer: LibtorrentPeer) -> int:
    assert peer.port6 is not None
    return peer.port6


async def _tcp_connects(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(5):
            _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


# -- listening -------------------------------------------------------------------------


async def test_listens_on_both_families_with_one_port(tmp_path: Path) -> None:
    async with asyncio.timeout(20), Client(config(tmp_path, "dual")) as client:
        port = client.listen_port
        assert port > 0
        assert await _tcp_connects("127.0.0.1", port)
        assert await _tcp_connects("::1", port)


@pytest.mark.parametrize("addresses", [("::1",), ("::1", "127.0.0.1")])
async def test_fixed_port_and_ipv6_first_in_the_list(
    tmp_path: Path, addresses: tuple[str, ...]
) -> None:
    # A port free on both families; the order of listen_addresses must not matter.
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        free = probe.getsockname()[1]
    async with asyncio.timeout(20):
        async with Client(config(tmp_path, "fixed", addresses, listen_port=free)) as client:
            assert client.listen_port == free
            for host in addresses:
                assert await _tcp_connects(host, free), host
        # Closed: nothing listens any more.
        assert not await _tcp_connects("::1", free)


# -- ours to ours ------------------------------------------------------------------------


@pytest.mark.parametrize("dialer", ["leecher", "seeder"])
async def test_ours_to_ours_over_ipv6(tmp_path: Path, dialer: Literal["leecher", "seeder"]) -> None:
    mi, _, seed_dir = build(tmp_path)
    # The leecher listens on [::1] only: nothing can reach it over IPv4.
    seeder = Client(config(tmp_path, "seed"))
    leecher = Client(config(tmp_path, "leech", ("::1",)))
    try:
        async with asyncio.timeout(45):
            await seeder.start()
            await leecher.start()
            seen_by_seeder = seeder.bus.subscribe(kinds=[PeerConnected])
            seen_by_leecher = leecher.bus.subscribe(kinds=[PeerConnected])
            ts = await seeder.add_metainfo(mi, download_dir=seed_dir)
            assert ts.state is TorrentState.SEEDING
            started = time.monotonic()
            tl = await leecher.add_metainfo(mi)
            if dialer == "leecher":
                tl.add_peers([("::1", seeder.listen_port)])
            else:
                ts.add_peers([("::1", leecher.listen_port)])
            await tl.wait_complete()
            report(f"ours -> ours over [::1], {dialer} dials", time.monotonic() - started)
        assert tl.stats().pieces_dirtied_bad == 0
        assert ts.stats().bytes_written_data >= sum(FILES.values())
        assert_same_tree(leecher.config.download_dir / NAME, seed_dir / NAME)
        by_seeder = connected(seen_by_seeder)
        by_leecher = connected(seen_by_leecher)
        assert len(by_seeder) == len(by_leecher) == 1
        assert by_seeder[0][0] == by_leecher[0][0] == "::1"
        if dialer == "leecher":
            assert by_leecher == [("::1", seeder.listen_port)]
        else:
            assert by_seeder == [("::1", leecher.listen_port)]
    finally:
        await leecher.close()
        await seeder.close()


# -- libtorrent over [::1] -------------------------------------------------------------


async def test_we_download_from_libtorrent_over_ipv6(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    mi, torrent_path, seed_dir = build(tmp_path)
    seeder = await start_lt(lt_peer_factory, "seeder6")
    await lt(seeder.add_torrent, torrent_path, seed_dir, seed=True)
    port6 = v6_port(seeder)
    async with Client(config(tmp_path, "us")) as client:
        sub = client.bus.subscribe(kinds=[PeerConnected])
        started = time.monotonic()
        t = await client.add_metainfo(mi, peers=[("::1", port6)])
        async with asyncio.timeout(45):
            await t.wait_complete()
        report("libtorrent -> us over [::1]", time.monotonic() - started)
        assert t.stats().pieces_dirtied_bad == 0
        assert_same_tree(client.config.download_dir / NAME, seed_dir / NAME)
        assert connected(sub) == [("::1", port6)]
    events = await lt(seeder.events, "peer_connect")
    assert events and all(e["peer"][0] == "::1" for e in events)


async def test_libtorrent_downloads_from_us_over_ipv6(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    mi, torrent_path, seed_dir = build(tmp_path)
    leech_dir = tmp_path / "lt-leech"
    leech_dir.mkdir()
    leecher = await start_lt(lt_peer_factory, "leecher6")
    ih = await lt(leecher.add_torrent, torrent_path, leech_dir)
    async with Client(config(tmp_path, "us")) as client:
        sub = client.bus.subscribe(kinds=[PeerConnected])
        t = await client.add_metainfo(mi, download_dir=seed_dir)
        started = time.monotonic()
        await lt(leecher.connect, ih, "::1", client.listen_port)
        st = await lt(leecher.wait_seeding, ih, 45)
        report("us -> libtorrent over [::1]", time.monotonic() - started)
        assert st["errors"] == [] and st["total_failed_bytes"] == 0
        assert t.stats().bytes_written_data >= sum(FILES.values())
        peers = connected(sub)
        assert len(peers) == 1 and peers[0][0] == "::1"
    events = leecher.events("peer_connect")
    assert events and all(e["peer"] == ["::1", client.listen_port] for e in events)
    # libtorrent may report a torrent finished before its last blocks reach
    # the files; stopping it flushes them.
    assert await lt(leecher.stop) == 0
    assert_same_tree(leech_dir / NAME, seed_dir / NAME)


async def test_peer_pool_with_both_families(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    # Two throttled seeders, libtorrent reached over [::1] and one of ours
    # over 127.0.0.1: the download needs both, so both must send data.
    rate = 1 * MIB
    mi, torrent_path, seed_dir = build(tmp_path)
    lt_seeder = await start_lt(lt_peer_factory, "seeder6", upload_rate=rate)
    ih = await lt(lt_seeder.add_torrent, torrent_path, seed_dir, seed=True)
    our_seeder = Client(config(tmp_path, "seed", upload_rate_limit=rate))
    leecher = Client(config(tmp_path, "leech"))
    try:
        async with asyncio.timeout(45):
            await our_seeder.start()
            await leecher.start()
            ts = await our_seeder.add_metainfo(mi, download_dir=seed_dir)
            sub = leecher.bus.subscribe(kinds=[PeerConnected])
            started = time.monotonic()
            pool = [("::1", v6_port(lt_seeder)), ("127.0.0.1", our_seeder.listen_port)]
            tl = await leecher.add_metainfo(mi, peers=pool)
            await tl.wait_complete()
            report("two throttled seeders, [::1] and 127.0.0.1", time.monotonic() - started)
        assert tl.stats().pieces_dirtied_bad == 0
        assert_same_tree(leecher.config.download_dir / NAME, seed_dir / NAME)
        assert sorted(connected(sub)) == sorted(pool)
        from_lt = (await lt(lt_seeder.status, ih))["total_upload"]
        from_ours = ts.stats().bytes_written_data
        print(f"from libtorrent over [::1]: {from_lt} B, from ours over IPv4: {from_ours} B")
        assert from_lt > 0 and from_ours > 0
        assert from_lt + from_ours >= sum(FILES.values())
    finally:
        await leecher.close()
        await our_seeder.close()


async def test_same_libtorrent_peer_on_both_families(
    tmp_path: Path, lt_peer_factory: LibtorrentPeerFactory
) -> None:
    # One peer reachable at two addresses: whichever connection the two ends
    # keep (libtorrent drops one of them as a duplicate), the download
    # completes.
    mi, torrent_path, seed_dir = build(tmp_path)
    seeder = await start_lt(lt_peer_factory, "seeder46")
    await lt(seeder.add_torrent, torrent_path, seed_dir, seed=True)
    async with Client(config(tmp_path, "us")) as client:
        sub = client.bus.subscribe(kinds=[PeerConnected])
        pool = [("127.0.0.1", seeder.port), ("::1", v6_port(seeder))]
        started = time.monotonic()
        t = await client.add_metainfo(mi, peers=pool)
        async with asyncio.timeout(45):
            await t.wait_complete()
        report("one libtorrent peer at 127.0.0.1 and [::1]", time.monotonic() - started)
        assert t.stats().pieces_dirtied_bad == 0
        assert_same_tree(client.config.download_dir / NAME, seed_dir / NAME)
        seen = connected(sub)
        assert seen and set(seen) <= set(pool)
