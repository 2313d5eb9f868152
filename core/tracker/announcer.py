"""BEP 12 announce scheduling, sans-IO: which tracker to announce to, with which event, when.

No sockets, no asyncio: the caller passes ``now`` (``time.monotonic()``
seconds) into every method and asks :meth:`Announcer.next_deadline` when to
call :meth:`Announcer.due` again, in the style of aioquic's timers.  The
asyncio side (:mod:`core.tracker.driver`) sends the requests and feeds the
answers back through :meth:`on_success` / :meth:`on_failure`.

The rules (BEP 12, BEP 3 and what libtorrent does where the BEPs are silent):

* Each tier is shuffled once, when the torrent is loaded.  Within a tier
  trackers are tried in order; the one that answers moves to the front, so
  later announces go straight to it.
* Every tier is announced to, each through its first working tracker (the
  model of libtorrent with ``announce_to_all_tiers``).  Strict BEP 12 stops
  at the first tier that works, but real torrents put unrelated public
  trackers in separate tiers, so using only one would hide most of the swarm;
  within a tier the other URLs remain fallbacks, as BEP 12 intends.
* Events: ``started`` is the first announce a tracker gets after
  :meth:`start`; ``completed`` is sent once to each tracker that was told
  ``started`` while the download was incomplete (BEP 3: never when the data
  was complete at start); ``stopped`` goes to every tracker told ``started``
  when :meth:`stop` is called.
* Regular re-announces wait the tracker's ``interval``; a forced
  :meth:`reannounce` still honours ``min interval``.  A ``completed`` event
  is sent at once: the tracker wants to know, and it happens once.
* A failure backs the tracker off exponentially (15 s, 30 s, ... capped at
  30 min, never below its ``min interval``) and the tier immediately tries
  its next tracker that is not backing off; when all of a tier's trackers are
  backing off, the tier waits for the first to become usable again.

Times in :class:`~core.tracker.types.TrackerStatus` are wall-clock;
:meth:`statuses` converts with the ``wall`` time the caller passes for
``now``, so this module never reads a clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from .types import AnnounceEvent, AnnounceResponse, ScrapeResult, TrackerStatus

#: First retry delay after a failure; doubles with each consecutive failure ...
BACKOFF_BASE = 15.0
#: ... up to this.
BACKOFF_MAX = 30 * 60.0
#: A tracker asking for re-announces more often than this is not obeyed
#: (an ``interval`` of 0 from a broken tracker must not become a busy loop).
MIN_INTERVAL_FLOOR = 60.0
#: And one asking for less often than this is asked anyway (lost state, typos).
MAX_INTERVAL = 24 * 3600.0


@dataclass(slots=True)
class _Tracker:
    url: str
    started_sent: bool = False  # told "started" (and not "stopped" since)
    completed_sent: bool = False  # told "completed", or "started" when already complete
    in_flight: AnnounceEvent | None = None
    failures: int = 0
    retry_at: float = -math.inf  # backing off until then
    min_interval: float = 0.0
    last_announce: float | None = None
    last_result: str = ""
    last_error: str | None = None
    warning: str | None = None
    peers_received: int = 0
    seeders: int | None = None
    leechers: int | None = None
    completed: int | None = None


@dataclass(slots=True)
class _Tier:
    number: int
    trackers: list[_Tracker] = field(default_factory=list)
    next_at: float = -math.inf  # regular schedule: the tier's next announce
    last_success: float | None = None  # when its current tracker last answered

    @property
    def in_flight(self) -> bool:
        return any(t.in_flight is not None for t in self.trackers)


class Announcer:
    """The announce schedule of one torrent over all its tiers.

    Starts inactive: nothing is due until :meth:`start`.
    """

    def __init__(self, tiers: Sequence[Sequence[str]], rng: random.Random, *, now: float) -> None:
        self._rng = rng
        self._tiers: list[_Tier] = []
        self._active = False
        self._complete = False
        self._last_now = now
        seen: set[str] = set()
        for number, urls in enumerate(tiers):
            tier = _Tier(number)
            for url in urls:
                if url not in seen:
                    seen.add(url)
                    tier.trackers.append(_Tracker(url))
            rng.shuffle(tier.trackers)
            if tier.trackers:
                self._tiers.append(tier)

    # ------------------------------------------------------------------ queries

    @property
    def active(self) -> bool:
        return self._active

    def urls(self) -> list[str]:
        """Every tracker URL, tier by tier, in the order they are tried."""
        return [t.url for tier in self._tiers for t in tier.trackers]

    def tiers(self) -> list[list[str]]:
        """The current tiers (announce-list shape), in trying order."""
        return [[t.url for t in tier.trackers] for tier in self._tiers]

    def was_started(self, url: str) -> bool:
        """Whether ``url`` may list us now, i.e. would be sent ``stopped`` by :meth:`stop`."""
        found = self._find(url)
        return found is not None and _knows_us(found[1])

    def next_deadline(self) -> float | None:
        """When :meth:`due` will next have something (``-inf``/past: now), or None."""
        if not self._active:
            return None
        best: float | None = None
        for tier in self._tiers:
            if tier.in_flight:
                continue
            at = self._tier_deadline(tier)
            if best is None or at < best:
                best = at
        return best

    def due(self, now: float) -> list[tuple[str, AnnounceEvent]]:
        """The announces to send now, one per ready tier; each is then in flight.

        Every returned ``(url, event)`` must be answered with exactly one
        :meth:`on_success` or :meth:`on_failure`.
        """
        self._last_now = now
        if not self._active:
            return []
        out = []
        for tier in self._tiers:
            if tier.in_flight or self._tier_deadline(tier) > now:
                continue
            tracker = self._pick(tier, now)
            if tracker is None:  # pragma: no cover - the deadline says one is usable
                continue
            event = self._event_for(tracker)
            tracker.in_flight = event
            if event is AnnounceEvent.STARTED:
                # Started while complete: BEP 3 sends no "completed" later.
                tracker.completed_sent = self._complete
            out.append((tracker.url, event))
        return out

    def statuses(self, now: float, wall: float) -> list[TrackerStatus]:
        """Per-tracker status for users; ``wall`` is the wall-clock time at ``now``."""

        def to_wall(t: float | None) -> float | None:
            return None if t is None else wall + (t - now)

        out = []
        for tier in self._tiers:
            current = self._pick(tier, self._tier_deadline(tier)) if self._active else None
            for tr in tier.trackers:
                nxt: float | None = None
                if self._active and tr.in_flight is None:
                    if tr is current and not tier.in_flight:
                        nxt = max(self._tier_deadline(tier), now)
                    elif tr.retry_at > now:
                        nxt = tr.retry_at
                extra = {"updating": "1"} if tr.in_flight is not None else {}
                out.append(
                    TrackerStatus(
                        url=tr.url,
                        tier=tier.number,
                        last_announce=to_wall(tr.last_announce),
                        last_result=tr.last_result,
                        next_announce=to_wall(nxt),
                        peers_received=tr.peers_received,
                        seeders=tr.seeders,
                        leechers=tr.leechers,
                        completed=tr.completed,
                        last_error=tr.last_error,
                        warning=tr.warning,
                        failures=tr.failures,
                        extra=extra,
                    )
                )
        return out

    # ------------------------------------------------------------------ lifecycle

    def start(self, now: float, *, complete: bool) -> None:
        """Begin (or resume) announcing: every tier is due at once with ``started``.

        ``complete`` says whether the data is already complete, so that no
        ``completed`` event follows.
        """
        self._last_now = now
        self._active = True
        self._complete = complete
        for tier in self._tiers:
            tier.next_at = now
            for tr in tier.trackers:
                tr.started_sent = False
                tr.completed_sent = False

    def completed(self, now: float) -> None:
        """The download just completed: trackers told ``started`` get ``completed`` now."""
        self._last_now = now
        if self._complete:
            return
        self._complete = True
        if not self._active:
            return
        for tier in self._tiers:
            if any(tr.started_sent and not tr.completed_sent for tr in tier.trackers):
                tier.next_at = min(tier.next_at, now)

    def stop(self, now: float) -> list[tuple[str, AnnounceEvent]]:
        """Stop announcing; returns the ``stopped`` announces to send (best effort).

        They go to every tracker told ``started``, or with an announce in
        flight that may have reached it (see :func:`_knows_us`).  Their answers need not be
        reported; late answers to announces that were in flight are ignored.
        """
        self._last_now = now
        if not self._active:
            return []
        self._active = False
        out = []
        for tier in self._tiers:
            for tr in tier.trackers:
                if _knows_us(tr):
                    out.append((tr.url, AnnounceEvent.STOPPED))
                tr.started_sent = False
                tr.in_flight = None
        return out

    def reannounce(self, now: float) -> None:
        """Announce to every tier as soon as its tracker's ``min interval`` allows."""
        self._last_now = now
        for tier in self._tiers:
            cur = self._pick(tier, now)
            earliest = now
            if cur is not None and tier.last_success is not None:
                earliest = max(now, tier.last_success + cur.min_interval)
            tier.next_at = min(tier.next_at, earliest)

    # ------------------------------------------------------------------ results

    def on_success(self, url: str, response: AnnounceResponse, now: float) -> None:
        """A tracker answered: it moves to the front of its tier; schedule its next announce."""
        self._last_now = now
        found = self._find(url)
        if found is None:
            return  # removed meanwhile
        tier, tr = found
        event = tr.in_flight
        if event is None:
            return  # a late answer from before stop()
        tr.in_flight = None
        if event is AnnounceEvent.STARTED:
            tr.started_sent = True
        elif event is AnnounceEvent.COMPLETED:
            tr.completed_sent = True
        tr.failures = 0
        tr.retry_at = -math.inf
        tr.last_announce = now
        tr.last_result = "ok"
        tr.last_error = None
        tr.warning = response.warning
        tr.peers_received = len(response.peers)
        if response.seeders is not None:
            tr.seeders = response.seeders
        if response.leechers is not None:
            tr.leechers = response.leechers
        interval = _sane(response.interval)
        min_interval = _sane(response.min_interval) if response.min_interval is not None else 0.0
        tr.min_interval = min(min_interval, interval)
        tier.trackers.remove(tr)
        tier.trackers.insert(0, tr)
        tier.last_success = now
        if self._complete and not tr.completed_sent and tr.started_sent:
            tier.next_at = now  # completed while "started" was in flight
        else:
            tier.next_at = now + max(interval, tr.min_interval)

    def on_failure(self, url: str, error: str, now: float) -> None:
        """A tracker failed: back it off; its tier moves on to its next tracker."""
        self._last_now = now
        found = self._find(url)
        if found is None:
            return
        tr = found[1]
        if tr.in_flight is None:
            return
        tr.in_flight = None
        tr.failures += 1
        tr.last_announce = now
        tr.last_result = "error"
        tr.last_error = error
        tr.retry_at = now + max(backoff_delay(tr.failures), tr.min_interval)
        # tier.next_at is left alone: the tier is still due, so its next
        # usable tracker is tried at once.

    def on_scrape(self, url: str, result: ScrapeResult) -> None:
        """Record scrape figures (BEP 48) for a tracker."""
        found = self._find(url)
        if found is None:
            return
        tr = found[1]
        tr.seeders = result.seeders
        tr.leechers = result.leechers
        tr.completed = result.completed

    # ------------------------------------------------------------------ editing

    def add_tracker(self, url: str, tier: int | None = None) -> bool:
        """Add ``url`` at the end of tier ``tier`` (None: a new last tier); False if present.

        A tracker added while active is announced to as soon as its tier
        is due (a new tier: at once).
        """
        if self._find(url) is not None:
            return False
        if tier is None:
            tier = self._tiers[-1].number + 1 if self._tiers else 0
        if tier < 0:
            raise ValueError(f"tier must not be negative, got {tier}")
        for t in self._tiers:
            if t.number == tier:
                t.trackers.append(_Tracker(url))
                return True
        new = _Tier(tier, [_Tracker(url)], next_at=self._last_now)
        self._tiers.append(new)
        self._tiers.sort(key=lambda t: t.number)
        return True

    def remove_tracker(self, url: str) -> bool:
        """Forget ``url`` (an announce in flight to it is ignored); False if unknown."""
        found = self._find(url)
        if found is None:
            return False
        tier, tr = found
        tier.trackers.remove(tr)
        if not tier.trackers:
            self._tiers.remove(tier)
        return True

    # ------------------------------------------------------------------ internals

    def _find(self, url: str) -> tuple[_Tier, _Tracker] | None:
        for tier in self._tiers:
            for tr in tier.trackers:
                if tr.url == url:
                    return tier, tr
        return None

    def _pick(self, tier: _Tier, now: float) -> _Tracker | None:
        """The first tracker of ``tier`` not backing off at ``now``."""
        for tr in tier.trackers:
            if tr.retry_at <= now:
                return tr
        return None

    def _tier_deadline(self, tier: _Tier) -> float:
        usable = min(tr.retry_at for tr in tier.trackers)
        return max(tier.next_at, usable)

    def _event_for(self, tr: _Tracker) -> AnnounceEvent:
        if not tr.started_sent:
            return AnnounceEvent.STARTED
        if self._complete and not tr.completed_sent:
            return AnnounceEvent.COMPLETED
        return AnnounceEvent.NONE


def backoff_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failures (1 -> 15 s, doubling, capped)."""
    if failures <= 0:
        return 0.0
    return min(BACKOFF_BASE * 2.0 ** min(failures - 1, 30), BACKOFF_MAX)


def _sane(interval: float) -> float:
    if not math.isfinite(interval):
        return MAX_INTERVAL
    return min(max(float(interval), MIN_INTERVAL_FLOOR), MAX_INTERVAL)


def _knows_us(tr: _Tracker) -> bool:
    """Whether the tracker may list us: told "started", or asked now and answering before.

    An announce in flight to a tracker that never answered is most likely
    lost (tracker down): a ``stopped`` to it would only slow the shutdown.
    """
    return tr.started_sent or (tr.in_flight is not None and tr.last_result == "ok")


__all__ = ["Announcer", "backoff_delay"]
