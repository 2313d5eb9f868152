"""asyncio driver of one torrent's announces: runs the sans-IO :class:`Announcer`.

The :class:`Announcer` decides who to announce to and when; this class only
does the I/O.  One task sleeps until the announcer's next deadline (or until
woken by a change: completion, a tracker added, a forced re-announce), then
starts one task per due announce.  Each builds its request from the torrent
at the moment it is sent (so ``left`` / ``uploaded`` are current), awaits the
tracker through the client's shared :class:`TrackerTransports`, feeds the
answer back to the announcer, hands the peers to the torrent and publishes
``TrackerAnnounced`` / ``TrackerFailed`` on the bus.

Stopping (pause, drop, shutdown) is split in two so it can be called from
synchronous code: :meth:`TrackerDriver.stop` cancels everything at once and
starts the ``stopped`` announces in the background; awaiting the returned
task (as :meth:`aclose` does) waits for them at most ``stop_timeout``
seconds.  ``stopped`` goes only to trackers that know us (see
:meth:`Announcer.stop`), so a dead tracker never delays an exit.

A tracker is never allowed to slow the download: nothing here blocks the
torrent, and the peer hand-off is a plain call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

from ..errors import TrackerError
from ..events import Event, TrackerAnnounced, TrackerFailed
from ..types import InfoHash
from . import ANNOUNCE_TIMEOUT, TrackerTransports, tracker_scheme
from .announcer import Announcer
from .http import scrape_url
from .types import AnnounceEvent, AnnounceRequest, AnnounceResponse, TrackerStatus

log = logging.getLogger(__name__)

#: Longest a pause, drop or shutdown waits for ``stopped`` announces.
STOP_TIMEOUT = 2.0
#: Scrape a tracker after a successful announce when its figures are older than this.
SCRAPE_INTERVAL = 30 * 60.0
#: When the loop finds nothing due at a deadline that has passed (cannot
#: happen with a consistent announcer), it waits this long instead of spinning.
_SPIN_GUARD = 0.05

Address = tuple[str, int]


class TrackerDriver:
    """Announces one torrent to its trackers while started.

    ``build_request(event)`` returns the request for the torrent's current
    state (info-hash, peer id, port, counters); ``on_peers`` receives the
    peers of each answer; ``publish`` puts events on the bus.
    """

    def __init__(
        self,
        announcer: Announcer,
        *,
        info_hash: InfoHash,
        build_request: Callable[[AnnounceEvent], AnnounceRequest],
        on_peers: Callable[[Sequence[Address]], None],
        publish: Callable[[Event], None],
        transports: TrackerTransports,
        announce_timeout: float = ANNOUNCE_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.announcer = announcer
        self.info_hash = info_hash
        self._build_request = build_request
        self._on_peers = on_peers
        self._publish = publish
        self._transports = transports
        self.announce_timeout = announce_timeout
        self.stop_timeout = stop_timeout
        self._clock = clock
        self._wall = wall_clock
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping: set[asyncio.Task[None]] = set()
        self._generation = 0  # bumped by stop(): late results of older runs are dropped
        self._tracker_ids: dict[str, bytes] = {}
        self._scraped_at: dict[str, float] = {}
        self._no_scrape: set[str] = set()

    # ------------------------------------------------------------------ state

    @property
    def running(self) -> bool:
        return self._loop_task is not None

    def statuses(self) -> list[TrackerStatus]:
        return self.announcer.statuses(self._clock(), self._wall())

    # ------------------------------------------------------------------ control

    def start(self, *, complete: bool) -> None:
        """Start announcing (``started`` to every tier); no-op while running or without trackers."""
        if self._loop_task is not None or self._transports.closed:
            return
        self.announcer.start(self._clock(), complete=complete)
        if not self.announcer.urls():
            return  # nothing to do until add_tracker()
        self._loop_task = asyncio.create_task(self._run(), name=f"announce {self.info_hash}")

    def completed(self) -> None:
        """The download completed: ``completed`` goes out now."""
        self.announcer.completed(self._clock())
        self._wake.set()

    def reannounce(self) -> None:
        """Announce to every tier as soon as ``min interval`` allows."""
        self.announcer.reannounce(self._clock())
        self._wake.set()

    def add_tracker(self, url: str, tier: int | None = None) -> bool:
        """Add a tracker (http, https or udp, else :class:`TrackerError`); False if present.

        While started, a tracker in a new tier is announced to at once.
        """
        tracker_scheme(url)
        added = self.announcer.add_tracker(url.strip(), tier)
        if added and self.announcer.active:
            if self._loop_task is None and not self._transports.closed:
                # Started without trackers: the first one starts the loop.
                self._loop_task = asyncio.create_task(
                    self._run(), name=f"announce {self.info_hash}"
                )
            self._wake.set()
        return added

    def remove_tracker(self, url: str) -> bool:
        """Forget a tracker; a tracker that knows us gets a ``stopped`` (best effort)."""
        if self.announcer.was_started(url):
            self._spawn_stopped([url])
        return self.announcer.remove_tracker(url)

    def stop(self) -> asyncio.Task[None] | None:
        """Stop announcing now; returns the task sending ``stopped`` (None if nothing to send).

        Synchronous so that ``pause()`` can call it: the announcer is inactive
        as soon as this returns, and a later :meth:`start` begins afresh.
        """
        self._generation += 1
        if self._loop_task is not None:
            self._loop_task.cancel()
            self._loop_task = None
        for task in self._inflight:
            task.cancel()
        stops = self.announcer.stop(self._clock())
        if not stops or self._transports.closed:
            return None
        return self._spawn_stopped([url for url, _event in stops])

    async def aclose(self) -> None:
        """Stop and wait (at most about ``stop_timeout``) for the ``stopped`` announces."""
        self.stop()
        pending = [*self._inflight, *self._stopping]
        if pending:
            await asyncio.wait(pending, timeout=self.stop_timeout + 0.5)

    # ------------------------------------------------------------------ internals

    async def _run(self) -> None:
        announcer = self.announcer
        if self._stopping:
            # A quick pause/resume: let the "stopped" arrive before the new
            # "started", or the tracker would drop us after listing us.
            await asyncio.wait(list(self._stopping), timeout=self.stop_timeout + 0.5)
        while True:
            now = self._clock()
            due = announcer.due(now)
            for url, event in due:
                task = asyncio.create_task(
                    self._announce(url, event, self._generation), name=f"announce {url}"
                )
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            deadline = announcer.next_deadline()
            self._wake.clear()
            if deadline is None:
                await self._wake.wait()
                continue
            delay = deadline - self._clock()
            if delay <= 0:
                if due:
                    continue
                delay = _SPIN_GUARD
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _request(self, url: str, event: AnnounceEvent) -> AnnounceRequest:
        req = self._build_request(event)
        tracker_id = self._tracker_ids.get(url)
        if tracker_id is not None:
            req = dataclasses.replace(req, tracker_id=tracker_id)
        if event is AnnounceEvent.STOPPED:
            req = dataclasses.replace(req, numwant=0)
        return req

    async def _announce(self, url: str, event: AnnounceEvent, generation: int) -> None:
        error: str | None = None
        response: AnnounceResponse | None = None
        try:
            req = self._request(url, event)
            response = await self._transports.announce(url, req, timeout=self.announce_timeout)
        except TrackerError as exc:
            error = str(exc)
        except Exception as exc:  # a bug below must not kill announcing
            log.exception("%s: announce to %s failed unexpectedly", self.info_hash, url)
            error = f"internal error: {type(exc).__name__}: {exc}"
        if generation != self._generation:
            return
        now = self._clock()
        if response is None:
            message = error or "unknown error"
            self.announcer.on_failure(url, message, now)
            log.info("%s: tracker %s failed: %s", self.info_hash.hex(), url, message)
            self._publish(TrackerFailed(self.info_hash, url, message))
        else:
            self.announcer.on_success(url, response, now)
            if response.tracker_id is not None:
                self._tracker_ids[url] = response.tracker_id
            if response.peers:
                self._on_peers(response.peers)
            log.debug("%s: tracker %s: %d peers", self.info_hash.hex(), url, len(response.peers))
            self._publish(
                TrackerAnnounced(self.info_hash, url, len(response.peers), response.interval)
            )
        self._wake.set()
        if response is not None and self._scrape_due(url, now):
            await self._scrape(url, generation)

    def _scrape_due(self, url: str, now: float) -> bool:
        if url in self._no_scrape:
            return False
        if tracker_scheme(url) != "udp":
            try:
                scrape_url(url)
            except TrackerError:  # no scrape convention for this announce URL
                self._no_scrape.add(url)
                return False
        last = self._scraped_at.get(url)
        return last is None or now - last >= SCRAPE_INTERVAL

    async def _scrape(self, url: str, generation: int) -> None:
        """Best effort: fetch the ``completed`` count (announces carry only seeders/leechers)."""
        self._scraped_at[url] = self._clock()
        wire = self.info_hash.wire
        try:
            result = await self._transports.scrape(url, [wire])
        except TrackerError as exc:
            log.debug("%s: scrape of %s failed: %s", self.info_hash.hex(), url, exc)
            return
        except Exception:  # pragma: no cover - never let a scrape kill anything
            log.exception("%s: scrape of %s failed unexpectedly", self.info_hash, url)
            return
        if generation == self._generation and wire in result:
            self.announcer.on_scrape(url, result[wire])

    def _spawn_stopped(self, urls: Sequence[str]) -> asyncio.Task[None]:
        requests = [(url, self._request(url, AnnounceEvent.STOPPED)) for url in urls]
        task = asyncio.create_task(self._send_stopped(requests), name="announce stopped")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        return task

    async def _send_stopped(self, requests: Sequence[tuple[str, AnnounceRequest]]) -> None:
        async def one(url: str, req: AnnounceRequest) -> None:
            try:
                await self._transports.announce(url, req, timeout=self.stop_timeout)
            except Exception as exc:  # best effort; nobody waits for the answer
                log.debug("%s: stopped to %s failed: %s", self.info_hash.hex(), url, exc)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.stop_timeout):
                await asyncio.gather(*(one(url, req) for url, req in requests))


__all__ = ["SCRAPE_INTERVAL", "STOP_TIMEOUT", "TrackerDriver"]
