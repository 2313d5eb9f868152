"""Trackers wired into the engine: events, peers, runtime edits, and dead trackers.

A tiny in-process HTTP tracker (aiohttp.web on 127.0.0.1) records every
announce, so the tests can check what the engine sends and when, without
opentracker (tests/test_tracker_opentracker.py covers the real one).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from aiohttp import web

from core.engine.client import Client
from core.engine.torrent import Torrent
from core.events import PeerSource, TrackerAnnounced, TrackerFailed
from core.formats.bencoding import encode
from core.formats.metainfo import Metainfo
from core.stats import TorrentState
from core.tracker.types import AnnounceEvent
from tests.support.engine import loopback_config, make_torrent, tree_digest

pytestmark = pytest.mark.timeout(60)

FILES = {"pay/a.bin": 300_000, "pay/b.bin": 77_777}
PIECE = 32768


class FakeTracker:
    """Answers announces with the peers it is told to; remembers every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.peers: list[tuple[str, int]] = []
        self.interval = 1800
        self.hang = False  # accept, then never answer
        self.stopped_delay = 0.0  # answer "stopped" announces this late
        self.arrived: list[float] = []
        self.stopped_answered = 0.0
        self.changed = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/announce"

    async def _announce(self, request: web.Request) -> web.Response:
        raw = parse_qs(request.query_string, keep_blank_values=True, encoding="latin-1")
        self.requests.append({k: v[0] for k, v in raw.items()})
        self.arrived.append(time.monotonic())
        self.changed.set()
        if self.hang:
            await asyncio.sleep(3600)
        if self.requests[-1].get("event") == "stopped":
            await asyncio.sleep(self.stopped_delay)
            self.stopped_answered = time.monotonic()
        body = {
            b"interval": self.interval,
            b"complete": 1,
            b"incomplete": 2,
            b"peers": b"".join(socket.inet_aton(h) + p.to_bytes(2, "big") for h, p in self.peers),
        }
        return web.Response(body=encode(body))

    async def _scrape(self, request: web.Request) -> web.Response:
        raw = parse_qs(request.query_string, encoding="latin-1")
        files = {
            h.encode("latin-1"): {b"complete": 5, b"incomplete": 6, b"downloaded": 7}
            for h in raw.get("info_hash", [])
        }
        return web.Response(body=encode({b"files": files}))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/announce", self._announce)
        app.router.add_get("/scrape", self._scrape)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def events(self) -> list[str]:
        return [r.get("event", "") for r in self.requests]

    async def wait_for(self, pred: object, timeout: float = 10.0) -> None:
        assert callable(pred)
        async with asyncio.timeout(timeout):
            while not pred():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def tracker() -> AsyncIterator[FakeTracker]:
    t = FakeTracker()
    await t.start()
    try:
        yield t
    finally:
        await t.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _settled(t: Torrent) -> None:
    """Wait until no announce of ``t`` is in flight."""
    async with asyncio.timeout(5):
        while any(s.extra.get("updating") for s in t.trackers()):
            await asyncio.sleep(0.01)


def _with_trackers(mi: Metainfo, *tiers: tuple[str, ...]) -> Metainfo:
    return dataclasses.replace(mi, announce_list=tuple(tiers))


async def test_tracker_peers_found_events_sent_in_order(
    tmp_path: Path, tracker: FakeTracker
) -> None:
    src = tmp_path / "src"
    mi = _with_trackers(make_torrent(src, FILES, PIECE), (tracker.url,))
    async with (
        Client(loopback_config(tmp_path, "seed")) as seeder,
        Client(loopback_config(tmp_path, "leech")) as leecher,
    ):
        await seeder.add_metainfo(mi, download_dir=src)
        await tracker.wait_for(lambda: len(tracker.requests) == 1)
        first = tracker.requests[0]
        assert first["event"] == "started"
        assert first["left"] == "0"
        assert first["port"] == str(seeder.listen_port)
        assert first["info_hash"].encode("latin-1") == mi.info_hash.wire
        assert first["peer_id"].encode("latin-1") == seeder.peer_id
        tracker.peers = [("127.0.0.1", seeder.listen_port)]

        sub = leecher.bus.subscribe(kinds=(TrackerAnnounced,))
        t = await leecher.add_metainfo(mi)
        async with asyncio.timeout(30):
            await t.wait_complete()
        assert tree_digest(leecher.config.download_dir) == tree_digest(src)
        assert all(src_ == PeerSource.TRACKER for src_ in t._swarm.known_peers.values())
        announced = await asyncio.wait_for(sub.get(), 5)
        assert isinstance(announced, TrackerAnnounced)
        assert (announced.url, announced.peers, announced.interval) == (tracker.url, 1, 1800)

        # started (left = everything), then completed (left = 0) once done.
        await tracker.wait_for(lambda: tracker.events().count("completed") == 1)
        leech_reqs = [r for r in tracker.requests if r["port"] == str(leecher.listen_port)]
        assert [r["event"] for r in leech_reqs] == ["started", "completed"]
        assert int(leech_reqs[0]["left"]) == t.length
        assert leech_reqs[1]["left"] == "0"
        assert int(leech_reqs[1]["downloaded"]) >= t.length
        await _settled(t)
        (status,) = t.trackers()
        assert status.url == tracker.url and status.tier == 0
        assert status.last_result == "ok" and status.peers_received == 1
        assert status.next_announce is not None
        assert status.next_announce > time.time() + 1000
        # The scrape after the first announce filled in the "completed" figure.
        async with asyncio.timeout(5):
            while t.trackers()[0].completed is None:
                await asyncio.sleep(0.02)
        assert t.trackers()[0].completed == 7

        # Pause: stopped; resume: started again.
        before = len(tracker.requests)
        t.pause()
        await tracker.wait_for(lambda: len(tracker.requests) > before)
        assert tracker.requests[-1]["event"] == "stopped"
        assert tracker.requests[-1]["numwant"] == "0"
        t.resume()
        await tracker.wait_for(lambda: len(tracker.requests) > before + 1)
        assert tracker.requests[-1]["event"] == "started"
        assert tracker.requests[-1]["left"] == "0"
        # A quick pause/resume: "started" waits for the slow "stopped" to be answered.
        await _settled(t)
        tracker.stopped_delay = 0.3
        tracker.stopped_answered = 0.0
        before = len(tracker.requests)
        t.pause()
        t.resume()
        await tracker.wait_for(lambda: len(tracker.requests) >= before + 2)
        assert tracker.events()[before:] == ["stopped", "started"]
        assert tracker.stopped_answered > 0
        assert tracker.arrived[before + 1] >= tracker.stopped_answered
        tracker.stopped_delay = 0.0
        n = len(tracker.requests)
    # Shutdown sent stopped from both clients.
    stops = [r for r in tracker.requests[n:] if r["event"] == "stopped"]
    assert sorted(r["port"] for r in stops) == sorted(
        [str(seeder.listen_port), str(leecher.listen_port)]
    )


async def test_dead_trackers_never_slow_download_or_shutdown(tmp_path: Path) -> None:
    src = tmp_path / "src"
    dead_http = f"http://127.0.0.1:{_closed_port()}/announce"
    dead_udp = f"udp://127.0.0.1:{_closed_port()}"
    mi = _with_trackers(make_torrent(src, FILES, PIECE), (dead_http,), (dead_udp,))
    seeder = Client(loopback_config(tmp_path, "seed"))
    leecher = Client(loopback_config(tmp_path, "leech"))
    try:
        await seeder.start()
        await leecher.start()
        await seeder.add_metainfo(mi, download_dir=src)
        sub = leecher.bus.subscribe(kinds=(TrackerFailed,))
        t = await leecher.add_metainfo(mi, peers=[("127.0.0.1", seeder.listen_port)])
        async with asyncio.timeout(20):
            await t.wait_complete()
        failed = await asyncio.wait_for(sub.get(), 5)
        assert isinstance(failed, TrackerFailed) and failed.url == dead_http
        st = {s.url: s for s in t.trackers()}
        assert st[dead_http].last_result == "error" and st[dead_http].failures >= 1
        assert st[dead_http].last_error
        assert st[dead_http].next_announce is not None
        assert st[dead_udp].tier == 1
    finally:
        started = time.monotonic()
        await leecher.close()
        await seeder.close()
        elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"shutdown took {elapsed:.2f}s"


async def test_hanging_tracker_bounds_shutdown(tmp_path: Path, tracker: FakeTracker) -> None:
    """A tracker that answered once and then hangs delays exit by the stop timeout only."""
    src = tmp_path / "src"
    mi = _with_trackers(make_torrent(src, FILES, PIECE), (tracker.url,))
    client = Client(loopback_config(tmp_path, "seed"))
    try:
        await client.start()
        t = await client.add_metainfo(mi, download_dir=src)
        await tracker.wait_for(lambda: len(tracker.requests) == 1)
        async with asyncio.timeout(5):
            while t.trackers()[0].last_result != "ok":
                await asyncio.sleep(0.01)
        tracker.hang = True
    finally:
        started = time.monotonic()
        await client.close()
        elapsed = time.monotonic() - started
    assert tracker.events()[-1] == "stopped"  # it was asked ...
    assert elapsed < 3.0, f"shutdown took {elapsed:.2f}s"  # ... but not waited for long


async def test_hanging_first_announce_is_not_waited_for(
    tmp_path: Path, tracker: FakeTracker
) -> None:
    tracker.hang = True
    src = tmp_path / "src"
    mi = _with_trackers(make_torrent(src, FILES, PIECE), (tracker.url,))
    client = Client(loopback_config(tmp_path, "seed"))
    try:
        await client.start()
        await client.add_metainfo(mi, download_dir=src)
        await tracker.wait_for(lambda: len(tracker.requests) == 1)
    finally:
        started = time.monotonic()
        await client.close()
        elapsed = time.monotonic() - started
    assert tracker.events() == ["started"]  # no stopped to a tracker that never answered
    assert elapsed < 1.0, f"shutdown took {elapsed:.2f}s"


async def test_add_and_remove_trackers_at_runtime(tmp_path: Path, tracker: FakeTracker) -> None:
    src = tmp_path / "src"
    mi = make_torrent(src, FILES, PIECE)  # no trackers at all
    async with Client(loopback_config(tmp_path, "seed")) as client:
        t = await client.add_metainfo(mi, download_dir=src)
        assert t.trackers() == []
        assert t.add_tracker(tracker.url)
        assert not t.add_tracker(tracker.url)
        await tracker.wait_for(lambda: tracker.events() == ["started"])
        dead = f"udp://127.0.0.1:{_closed_port()}"
        assert t.add_tracker(dead, 0)
        assert [(s.url, s.tier) for s in t.trackers()] == [(tracker.url, 0), (dead, 0)]
        with pytest.raises(Exception, match="unsupported tracker URL"):
            t.add_tracker("wss://tracker.example/announce")
        async with asyncio.timeout(5):
            while t.trackers()[0].last_result != "ok":
                await asyncio.sleep(0.01)
        assert t.remove_tracker(tracker.url)
        assert not t.remove_tracker(tracker.url)
        await tracker.wait_for(lambda: tracker.events() == ["started", "stopped"])
        assert [s.url for s in t.trackers()] == [dead]
        # The dead one, now first in its tier, is tried; it fails without harm.
        t.reannounce()
        assert t.state is TorrentState.SEEDING


async def test_announce_request_fields(tmp_path: Path, tracker: FakeTracker) -> None:
    src = tmp_path / "src"
    mi = _with_trackers(make_torrent(src, FILES, PIECE), (tracker.url,))
    async with Client(loopback_config(tmp_path, "seed")) as client:
        await client.add_metainfo(mi)  # nothing on disk here: a leecher
        await tracker.wait_for(lambda: len(tracker.requests) == 1)
        req = tracker.requests[0]
        assert req["compact"] == "1"
        assert int(req["left"]) == sum(FILES.values())
        assert req["uploaded"] == req["downloaded"] == "0"
        assert int(req["key"], 16) == client.tracker_key or req["key"] == str(client.tracker_key)
        assert AnnounceEvent(req["event"]) is AnnounceEvent.STARTED
