"""Against a real tracker: Debian's opentracker on 127.0.0.1, over HTTP and UDP.

Announce and scrape through both protocols (the same swarm seen through
either), the tracker's refusal of an unlisted info-hash, and end-to-end
downloads in which a libtorrent seeder can be found only through the tracker.

opentracker answers with peers at the *source address* of their announce
(127.0.0.1 here) and the port they announced; it also lists the asking peer
itself.  Skips when opentracker is not installed, except in CI (CI=true),
where it fails: see tests/support/opentracker.py.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from core.engine.client import Client
from core.errors import TrackerError
from core.events import PeerSource, TrackerAnnounced
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from core.tracker import TrackerTransports, announce, scrape
from core.tracker.types import AnnounceEvent, AnnounceRequest
from tests.support.engine import loopback_config
from tests.support.ltharness import (
    LibtorrentPeerFactory,
    lt_create_torrent,
    lt_peer_factory,
    make_payload,
    sha256_tree,
)
from tests.support.opentracker import OpenTracker, opentracker

__all__ = ["lt_peer_factory", "opentracker"]  # fixtures used by name

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

IH = bytes.fromhex("0123456789abcdef0123456789abcdef01234567")
OTHER = bytes.fromhex("89abcdef0123456789abcdef0123456789abcdef")


def _req(peer: int, port: int, *, left: int, event: AnnounceEvent) -> AnnounceRequest:
    return AnnounceRequest(
        info_hash=IH,
        peer_id=b"-TS0001-" + f"{peer:012d}".encode(),
        port=port,
        left=left,
        event=event,
        key=peer,
    )


def _url(tracker: OpenTracker, proto: str) -> str:
    return tracker.http_url if proto == "http" else tracker.udp_url


@pytest.mark.parametrize("proto", ["http", "udp"])
async def test_announce_and_scrape(opentracker: OpenTracker, proto: str) -> None:
    await asyncio.to_thread(opentracker.allow, IH)
    url = _url(opentracker, proto)
    async with asyncio.timeout(20):
        async with TrackerTransports(udp_base_timeout=1.0) as transports:
            seed = await transports.announce(
                url, _req(1, 40001, left=0, event=AnnounceEvent.STARTED)
            )
            assert seed.interval > 0
            leech = await transports.announce(
                url, _req(2, 40002, left=1000, event=AnnounceEvent.STARTED)
            )
            assert ("127.0.0.1", 40001) in leech.peers
            assert (leech.seeders, leech.leechers) == (1, 1)
            figures = await transports.scrape(url, [IH, OTHER])
            assert set(figures) <= {IH, OTHER}
            assert (figures[IH].seeders, figures[IH].leechers) == (1, 1)
            assert OTHER not in figures or figures[OTHER].seeders == 0

            # The leecher completes: one more seeder, one download counted.
            await transports.announce(url, _req(2, 40002, left=0, event=AnnounceEvent.COMPLETED))
            figures = await transports.scrape(url, [IH])
            assert (figures[IH].seeders, figures[IH].leechers) == (2, 0)
            assert figures[IH].completed == 1

            # stopped takes a peer out of the swarm.
            await transports.announce(url, _req(1, 40001, left=0, event=AnnounceEvent.STOPPED))
            again = await transports.announce(url, _req(2, 40002, left=0, event=AnnounceEvent.NONE))
            assert ("127.0.0.1", 40001) not in again.peers
            assert again.seeders == 1


async def test_one_swarm_through_both_protocols(opentracker: OpenTracker) -> None:
    await asyncio.to_thread(opentracker.allow, IH)
    async with asyncio.timeout(20):
        # No shared transports: each call opens (and closes) its own.
        await announce(opentracker.http_url, _req(1, 41001, left=0, event=AnnounceEvent.STARTED))
        over_udp = await announce(
            opentracker.udp_url, _req(2, 41002, left=5, event=AnnounceEvent.STARTED)
        )
        assert ("127.0.0.1", 41001) in over_udp.peers
        over_http = await scrape(opentracker.scrape_url.replace("scrape", "announce"), [IH])
        assert (over_http[IH].seeders, over_http[IH].leechers) == (1, 1)
        over_udp_scrape = await scrape(opentracker.udp_url, [IH])
        assert over_udp_scrape == over_http


@pytest.mark.parametrize("proto", ["http", "udp"])
async def test_unlisted_info_hash_is_refused(opentracker: OpenTracker, proto: str) -> None:
    async with asyncio.timeout(20):
        async with TrackerTransports(udp_base_timeout=1.0) as transports:
            with pytest.raises(TrackerError, match=r"not authorized|refused"):
                await transports.announce(
                    _url(opentracker, proto), _req(1, 42001, left=0, event=AnnounceEvent.STARTED)
                )


async def test_stopped_tracker_is_a_tracker_error(opentracker: OpenTracker) -> None:
    await asyncio.to_thread(opentracker.allow, IH)
    await asyncio.to_thread(opentracker.stop)
    async with asyncio.timeout(20):
        with pytest.raises(TrackerError):
            await announce(
                opentracker.http_url, _req(1, 1, left=0, event=AnnounceEvent.STARTED), timeout=5
            )
        with pytest.raises(TrackerError):
            await announce(
                opentracker.udp_url, _req(1, 1, left=0, event=AnnounceEvent.STARTED), timeout=1
            )


# --------------------------------------------------------------------- end to end


async def _seeder_registered(tracker: OpenTracker, info_hash: bytes) -> None:
    """Wait until the tracker lists one seeder for ``info_hash``."""
    async with asyncio.timeout(20):
        while True:
            figures = await scrape(tracker.http_url, [info_hash], timeout=2)
            if info_hash in figures and figures[info_hash].seeders >= 1:
                return
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("proto", ["http", "udp"])
async def test_download_from_seeder_found_through_opentracker(
    tmp_path: Path,
    opentracker: OpenTracker,
    lt_peer_factory: LibtorrentPeerFactory,
    proto: str,
) -> None:
    url = _url(opentracker, proto)
    seed_dir = tmp_path / "seed"
    files = {"a.bin": 700_000, "sub/b.bin": 123_457}
    make_payload(seed_dir / "payload", files, seed=3)
    torrent = tmp_path / "payload.torrent"
    torrent.write_bytes(lt_create_torrent(seed_dir / "payload", 65536, "v1", trackers=[url]))
    mi = Metainfo.from_bytes(torrent.read_bytes())
    assert mi.announce_list == ((url,),)
    await asyncio.to_thread(opentracker.allow, mi.info_hash.wire)

    seeder = await asyncio.to_thread(lt_peer_factory, "seeder")
    await asyncio.to_thread(seeder.add_torrent, torrent, seed_dir, True)
    await _seeder_registered(opentracker, mi.info_hash.wire)

    client = Client(loopback_config(tmp_path, "leech"))
    try:
        await client.start()
        sub = client.bus.subscribe(kinds=(TrackerAnnounced,))
        # No peers given: the only way to the seeder is the tracker.
        t = await client.add_metainfo(mi)
        async with asyncio.timeout(40):
            await t.wait_complete()
        assert t.state is TorrentState.SEEDING
        assert ("127.0.0.1", seeder.port) in t._swarm.known_peers
        assert t._swarm.known_peers[("127.0.0.1", seeder.port)] is PeerSource.TRACKER
        # "started" found the seeder; "completed" followed the download.
        events = [await asyncio.wait_for(sub.get(), 10) for _ in range(2)]
        assert all(isinstance(e, TrackerAnnounced) and e.url == url for e in events)
        assert isinstance(events[0], TrackerAnnounced) and events[0].peers >= 1
        (status,) = t.trackers()
        assert status.url == url and status.last_result == "ok" and status.last_error is None
        assert status.peers_received >= 1
    finally:
        await client.close()
    got = sha256_tree(client.config.download_dir / "payload")
    assert got == sha256_tree(seed_dir / "payload")
    # Our "completed" (before close) made it to the tracker's download count.
    figures = await scrape(opentracker.http_url, [mi.info_hash.wire], timeout=5)
    assert figures[mi.info_hash.wire].completed >= 1


def test_harness_reports_missing_binary_as_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import opentracker as harness

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(harness, "OPENTRACKER", "opentracker-does-not-exist")
    monkeypatch.setattr(os, "access", lambda *_a: False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        harness.opentracker_binary()


def test_harness_fails_in_ci_without_the_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import opentracker as harness

    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(harness, "OPENTRACKER", "opentracker-does-not-exist")
    monkeypatch.setattr(os, "access", lambda *_a: False)
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        harness.opentracker_binary()
