"""Interop: our DHT against libtorrent's (the PyPI wheel), every node on 127.0.0.1.

A DHT that only ever talked to itself can share a misreading of BEP 5 with
itself (token handling, compact node info, ``implied_port``, who stores an
announce); libtorrent's implementation is the reference most of the real DHT
runs. Each libtorrent node runs in its own process (tests/support/lt_dht.py)
with the settings a loopback DHT needs, and is introduced to the others with
``add_dht_node`` (nodes in ``dht_bootstrap_nodes`` would only be routers).

- the harness alone: three libtorrent nodes, one seeds and announces, another
  finds it with ``dht_get_peers`` and downloads the magnet (if this fails,
  blame the harness, not our DHT);
- (1) libtorrent seeds and announces; ``torrent download MAGNET
  --dht-bootstrap`` (the real command, in a subprocess) finds it and completes;
- (2) we seed and announce; libtorrent finds us through its DHT and completes
  a magnet download from us;
- (3) three libtorrent nodes plus ours: after announces, every node's
  ``get_peers`` returns the same set of announcers.

libtorrent's DHT takes a moment to settle on loopback, so everything polls
with a deadline; nothing sleeps a fixed time hoping it is enough. Downloads
are SHA-256 checked. ``LT_DHT_LOG=1`` keeps every libtorrent node's DHT
packets in ``tmp_path/NAME.dht.log`` for a failure's post-mortem.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.dht.types import DhtSettings
from core.engine.client import Client
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from tests.support.engine import loopback_config
from tests.support.lt_dht import (
    Addr,
    LibtorrentDhtFactory,
    LibtorrentDhtNode,
    info_hash_for,
    lt_dht_factory,
    mesh,
    wait_announced,
)
from tests.support.ltharness import (
    LibtorrentPeerError,
    lt_create_torrent,
    make_payload,
    sha256_tree,
)

__all__ = ["lt_dht_factory"]  # the fixture is used by name below

pytestmark = [pytest.mark.interop, pytest.mark.timeout(110)]

REPO = Path(__file__).resolve().parents[1]
NAME = "payload"
PIECE = 64 * 1024
#: Small (metadata and lookups are what is tested), multi-file, pieces across files.
FILES = {"a.bin": 700_001, "sub/b.bin": 1_300_003, "sub/c.txt": 1_000}
LOCAL = "127.0.0.1"


def build(tmp: Path, seed: int = 1) -> tuple[Path, Path, Metainfo]:
    """Payload under ``tmp/seed/payload`` and a tracker-less torrent of it made by libtorrent."""
    seed_dir = tmp / "seed"
    make_payload(seed_dir / NAME, FILES, seed=seed)
    data = lt_create_torrent(seed_dir / NAME, PIECE, "v1")
    torrent = tmp / f"{NAME}.torrent"
    torrent.write_bytes(data)
    mi = Metainfo.from_bytes(data)
    assert not mi.trackers, "the DHT must be the only way to find peers"
    return torrent, seed_dir, mi


def assert_same_payload(got_root: Path, seed_dir: Path) -> None:
    got = sha256_tree(got_root)
    assert sorted(got) == sorted(FILES), "missing or extra files"
    assert got == sha256_tree(seed_dir / NAME)


def magnet(info_hash: str) -> str:
    """A magnet with the info-hash only: no trackers, no peers, no name."""
    return f"magnet:?xt=urn:btih:{info_hash}"


async def lt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking harness call off the event loop, so our node keeps answering."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def start_nodes(factory: LibtorrentDhtFactory, *names: str) -> list[LibtorrentDhtNode]:
    return [factory(name) for name in names]


# -- the harness alone ---------------------------------------------------------------


def test_libtorrent_dht_harness_alone(tmp_path: Path, lt_dht_factory: LibtorrentDhtFactory) -> None:
    seeder, storer, leecher = start_nodes(lt_dht_factory, "seeder", "storer", "leecher")
    ports = {n.dht_port for n in (seeder, storer, leecher)}
    assert len(ports) == 3
    with pytest.raises(LibtorrentPeerError, match="non-loopback"):
        seeder.add_dht_node("192.0.2.1", 6881)

    mesh([seeder, storer, leecher])
    for node in (seeder, storer, leecher):
        st = node.dht_stats()
        assert st.nodes >= 2, st
        others = {(LOCAL, o.dht_port) for o in (seeder, storer, leecher) if o is not node}
        assert others <= {addr for _, addr in st.live_nodes}, st

    torrent, seed_dir, mi = build(tmp_path)
    ih = seeder.add_torrent(torrent, seed_dir, seed=True)
    assert ih == mi.info_hash.hex()
    wait_announced(seeder, ih, [storer, leecher])

    peers = leecher.find_peers(ih, lambda p: (LOCAL, seeder.port) in p, timeout=30)
    assert all(host == LOCAL for host, _ in peers)

    leech_dir = tmp_path / "leech"
    leech_dir.mkdir()
    assert leecher.add_magnet(magnet(ih), leech_dir) == ih
    leecher.force_dht_announce(ih)
    done = leecher.wait_seeding(ih, timeout=45)
    assert done["errors"] == []
    assert done["total_download"] >= sum(FILES.values())
    assert leecher.stop() == 0  # flushes libtorrent's store buffer to the files
    assert_same_payload(leech_dir / NAME, seed_dir)


# -- (1) libtorrent seeds, `torrent download MAGNET --dht-bootstrap` fetches ------------------


def torrent_command() -> list[str]:
    """The installed ``torrent`` next to this interpreter (the venv's), else ``-m core.cli``."""
    exe = Path(sys.executable).with_name("torrent")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "core.cli"]


def sealed_env(tmp: Path) -> dict[str, str]:
    """The environment without the user's state or config: everything under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTORRENT_STATE_DIR"}
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        env[var] = str(tmp / "xdg" / var.lower())
    return env


@contextlib.contextmanager
def cli_download(tmp: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``torrent download ARGS`` in its own session; killed by its pid if still running."""
    proc = subprocess.Popen(
        [*torrent_command(), "download", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        cwd=REPO,
        env=sealed_env(tmp),
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    """Wait for the command; its exit status and stderr (the tail so far on a timeout)."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tail = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"torrent download did not finish within {timeout:.0f}s:\n{tail[-3000:]}")
    return proc.returncode, err


@pytest.mark.parametrize("given", ["magnet", "torrent file"])
def test_cli_downloads_magnet_found_through_libtorrent_dht(
    tmp_path: Path, lt_dht_factory: LibtorrentDhtFactory, given: str
) -> None:
    """An info-hash-only magnet, or a ``.torrent`` without trackers: the DHT is the only source."""
    seeder, storer = start_nodes(lt_dht_factory, "seeder", "storer")
    mesh([seeder, storer])
    torrent, seed_dir, _ = build(tmp_path)
    ih = seeder.add_torrent(torrent, seed_dir, seed=True)
    # The seeder announced to the storer: the only place its address is kept
    # (a node never returns itself for get_peers).
    wait_announced(seeder, ih, [storer])

    out = tmp_path / "out"
    started = time.monotonic()
    with cli_download(
        tmp_path,
        magnet(ih) if given == "magnet" else str(torrent),
        "-o",
        str(out),
        "--state-dir",
        str(tmp_path / "state"),
        "--listen",
        LOCAL,
        "--dht-bootstrap",
        f"{LOCAL}:{seeder.dht_port}",
        "--connect-timeout",
        "60",
    ) as proc:
        code, err = finish(proc, timeout=90)
    elapsed = time.monotonic() - started
    assert code == 0, err
    print(f"\ntorrent download ({given}) via libtorrent's DHT: {elapsed:.2f} s")
    assert_same_payload(out / NAME, seed_dir)
    st = seeder.status(ih)
    assert st["total_upload"] >= sum(FILES.values()), "the bytes came from elsewhere"

    # Our download announced itself: libtorrent accepted our announce_peer,
    # so our token handling and port are right. Not the seeder's own address.
    ours = [
        a
        for node in (seeder, storer)
        for a in node.announces_received(ih)
        if a.peer[1] not in (seeder.port, storer.port)
    ]
    assert ours, "no libtorrent node accepted an announce_peer from our client"
    assert all(a.peer[0] == LOCAL for a in ours)
    # The state dir now holds the routing table for the next start.
    assert (tmp_path / "state" / "dht.dat").is_file()


# -- (2) we seed and announce, libtorrent finds us and downloads --------------------------------


async def test_libtorrent_finds_our_seed_through_dht(
    tmp_path: Path, lt_dht_factory: LibtorrentDhtFactory
) -> None:
    router, leecher = await lt(start_nodes, lt_dht_factory, "router", "leecher")
    await lt(mesh, [router, leecher])
    _, seed_dir, mi = build(tmp_path, seed=2)
    ih = mi.info_hash.hex()
    total = sum(FILES.values())
    config = loopback_config(
        tmp_path, "us", dht=True, dht_bootstrap_nodes=(f"{LOCAL}:{router.dht_port}",)
    )

    async with Client(config) as client:
        dht = client.dht
        assert dht is not None, "Client(dht=True) has no DHT"
        assert await dht.wait_bootstrapped(30), dht.stats()
        t = await client.add_metainfo(mi, download_dir=seed_dir)
        assert t.state is TorrentState.SEEDING
        us: Addr = (LOCAL, client.listen_port)

        async def keep_announcing() -> None:
            while True:
                t.dht_announce()
                await asyncio.sleep(5)

        announcer = asyncio.create_task(keep_announcing())
        try:
            found = await lt(leecher.find_peers, ih, lambda p: us in p, 45)
        finally:
            announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcer
        assert us in found
        # The router stored us too (it was asked, not the leecher only).
        stored = await lt(router.announces_received, ih)
        assert any(a.peer == us for a in stored), stored

        leech_dir = tmp_path / "leech"
        leech_dir.mkdir()
        await lt(leecher.add_magnet, magnet(ih), leech_dir)
        await lt(leecher.force_dht_announce, ih)
        st = await lt(leecher.wait_seeding, ih, 60)
        assert st["errors"] == []
        assert st["total_download"] >= total
        # The router has no copy: every byte came from us.
        assert t.stats().bytes_written_data >= total
        rows = [r for r in t.trackers() if r.url == "** [DHT] **"]
        assert rows, "no DHT row in Torrent.trackers()"
    assert await lt(leecher.stop) == 0
    assert_same_payload(leech_dir / NAME, seed_dir)


# -- (3) three libtorrent nodes and ours agree on the announcers -------------------------------


async def test_mixed_dht_agrees_on_announcers(
    tmp_path: Path, lt_dht_factory: LibtorrentDhtFactory
) -> None:
    from core.engine.dht_service import DhtService

    nodes: list[LibtorrentDhtNode] = await lt(start_nodes, lt_dht_factory, "a", "b", "c")
    a, b, _ = nodes
    await lt(mesh, nodes)
    svc = await DhtService.open(
        DhtSettings(),
        addresses=(LOCAL,),
        port=0,
        bootstrap=[f"{LOCAL}:{a.dht_port}"],
        state_path=tmp_path / "dht.dat",
    )
    try:
        assert await svc.wait_bootstrapped(30), svc.stats()
        for node in nodes:
            await lt(node.add_dht_node, LOCAL, svc.port)
        for node in nodes:
            await lt(node.wait_knows, [svc.node_id], 30)
        ours: Addr = (LOCAL, svc.port)
        ih = info_hash_for("test_mixed_dht_agrees_on_announcers")
        expected = {(LOCAL, a.port), (LOCAL, b.port), ours}
        assert len(expected) == 3

        async def announce_all() -> int:
            await lt(a.dht_announce, ih, a.port)
            await lt(b.dht_announce, ih, b.port)
            done = await svc.get_peers(ih, announce_port=svc.port)
            return done.announced

        announced = await announce_all()
        # Every libtorrent node gave us a token and accepted our announce_peer.
        assert announced >= 3, announced

        views: dict[str, set[Addr]] = {n.name: set() for n in nodes}
        views["ours"] = set()
        deadline = time.monotonic() + 60
        last_announce = time.monotonic()
        while True:
            for node in nodes:
                await lt(node.dht_get_peers, ih)
            await svc.get_peers(ih, on_peers=views["ours"].update)
            await asyncio.sleep(0.5)
            for node in nodes:
                views[node.name] = await lt(node.dht_peers, ih)
            if all(v == expected for v in views.values()):
                break
            now = time.monotonic()
            if now > deadline:
                pytest.fail(f"views never agreed on {sorted(expected)}: {views}")
            if now - last_announce > 10:  # an announce may have gone out too early
                await announce_all()
                last_announce = now

        for node in nodes:
            got = await lt(node.announces_received, ih)
            assert ours in {x.peer for x in got}, f"{node.name} did not store our announce"
        # Both libtorrent announcers stored their peer with us.
        assert svc.stats().dht.peers_stored >= 2, svc.stats()
        # b and c are in our table; a is our bootstrap router, which (as in
        # libtorrent) never enters the routing table.
        assert svc.stats().dht.nodes_good >= 2, svc.stats()
    finally:
        await svc.aclose()
