"""One torrent's DHT source: ``get_peers`` + ``announce_peer`` on a schedule (BEP 5).

The DHT counterpart of :class:`~core.tracker.driver.TrackerDriver`, and like
it only a driver: the lookups themselves are the client's
:class:`~core.engine.dht_service.DhtService`'s.  One task per torrent
sleeps until the next round is due, then runs a ``get_peers`` lookup for
the torrent's info-hash (and, for a hybrid, its truncated v2 hash, as
libtorrent does) that ends with ``announce_peer`` to the closest nodes that
gave tokens.  Peers go to the torrent as each reply arrives, and a
:class:`~core.events.DhtPeersFound` per reply tells the bus.

When a round runs, and why:

* at start (a .torrent after its check, a magnet at once: a magnet with
  only an info-hash has no other source);
* every :data:`ANNOUNCE_INTERVAL` (15 minutes, BEP 5's re-announce period,
  with ±10 % jitter so torrents added together do not stay in step);
* at once when asked (``Torrent.dht_announce()``);
* when the torrent knows too few peers (``wants_peers``), but no more often
  than every :data:`MIN_RELOOKUP` seconds: a lookup costs a few hundred
  datagrams, and the swarm does not change that fast;
* after a failed round (no node to ask: the DHT is still empty) after
  :data:`MIN_RELOOKUP`, not the full interval.

The announce carries the listen port; ``implied_port`` is set when our UDP
socket has the same port as our TCP listener (the client opens it so), so
nodes take the port they see, which survives a NAT that maps both alike.
Without a listener there is nothing to announce and the round is a plain
``get_peers``.

A round waits (at most :data:`BOOTSTRAP_WAIT`) for a DHT that is still
bootstrapping: a lookup over an empty table would fail at once.

Private torrents (BEP 27) never get here: the torrent calls :meth:`disable`,
which stops the source for good (a magnet learns that it is private only
when its info dict arrives).  Pausing stops it, resuming starts it, dropping
the torrent closes it; the DHT has no "stopped" message, so stopping is
just cancelling.

Seam: the source knows neither ``Torrent`` nor ``Client``.  It gets the DHT
as a :class:`DhtLookups` (``DhtService`` satisfies it) through a getter, and
the torrent as a few callables, as the tracker driver does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ..dht.events import LookupFinished
from ..dht.types import Addr
from ..errors import DhtError
from ..events import DhtPeersFound, Event
from ..tracker.types import TrackerStatus
from ..types import InfoHash

log = logging.getLogger(__name__)

__all__ = [
    "ANNOUNCE_INTERVAL",
    "DHT_URL",
    "MIN_RELOOKUP",
    "DhtLookups",
    "TorrentDht",
]

#: The "URL" of the DHT's row in a torrent's tracker list (qBittorrent's name for it).
DHT_URL = "** [DHT] **"
#: Re-announce period (BEP 5 peers expire after about 30 minutes without one).
ANNOUNCE_INTERVAL = 15 * 60.0
#: The interval varies by this fraction either way.
JITTER = 0.1
#: Fewest seconds between two lookups started because peers are short, or after a failure.
MIN_RELOOKUP = 60.0
#: While not due, the loop looks again this often whether the torrent is short of peers.
CHECK_INTERVAL = 10.0
#: Longest a round waits for a DHT that is still bootstrapping.
BOOTSTRAP_WAIT = 15.0


class DhtLookups(Protocol):
    """What a torrent uses of the client's DHT (``DhtService`` satisfies it)."""

    @property
    def port(self) -> int: ...
    @property
    def state(self) -> str: ...

    async def wait_bootstrapped(self, timeout: float) -> bool: ...
    async def get_peers(
        self,
        info_hash: bytes,
        *,
        announce_port: int | None = None,
        implied_port: bool = False,
        on_peers: Callable[[tuple[Addr, ...]], None] | None = None,
    ) -> LookupFinished: ...
    def note_external_ip(self, ip: str, voter: str) -> None: ...


class TorrentDht:
    """A torrent's DHT rounds while started; see the module docstring.

    ``service()`` is the client's DHT (None: off or failed to start);
    ``announce_port()`` the port to announce and whether it is implied
    (port None: get_peers only); ``on_peers`` hands addresses to the
    torrent; ``wants_peers()`` says the torrent knows too few.
    """

    def __init__(
        self,
        *,
        info_hash: InfoHash,
        service: Callable[[], DhtLookups | None],
        announce_port: Callable[[], tuple[int | None, bool]],
        on_peers: Callable[[Sequence[Addr]], None],
        wants_peers: Callable[[], bool],
        publish: Callable[[Event], None],
        interval: float = ANNOUNCE_INTERVAL,
        min_relookup: float = MIN_RELOOKUP,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.info_hash = info_hash
        self._service = service
        self._announce_port = announce_port
        self._on_peers = on_peers
        self._wants_peers = wants_peers
        self._publish = publish
        self.interval = interval
        self.min_relookup = min_relookup
        self._clock = clock
        self._wall = wall_clock
        self._rng = rng or random.Random()
        self._enabled = True
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._forced = False
        self._next_at = 0.0
        self._last_start: float | None = None
        self._last_done: float | None = None
        self._in_flight = False
        self._last_result = ""
        self._last_error: str | None = None
        self._peers_received = 0
        self._failures = 0
        self.rounds = 0

    # ------------------------------------------------------------------ state

    @property
    def enabled(self) -> bool:
        """The torrent may use the DHT: the client has one and the torrent is not private."""
        return self._enabled and self._service() is not None

    @property
    def running(self) -> bool:
        return self._task is not None

    @property
    def targets(self) -> tuple[bytes, ...]:
        """The 20-byte keys looked up: the wire hash, and a hybrid's truncated v2 hash too."""
        ih = self.info_hash
        extra = ih.v2_truncated if ih.v1 is not None else None
        return (ih.wire,) if extra is None or extra == ih.wire else (ih.wire, extra)

    def status(self) -> TrackerStatus:
        """The DHT as a row of the torrent's tracker list (wall-clock times, as trackers')."""
        now, wall = self._clock(), self._wall()

        def to_wall(t: float | None) -> float | None:
            return None if t is None else wall + (t - now)

        nxt = None
        if self.running and not self._in_flight:
            nxt = to_wall(max(self._next_at, now))
        return TrackerStatus(
            url=DHT_URL,
            tier=-1,
            last_announce=to_wall(self._last_done),
            last_result=self._last_result,
            next_announce=nxt,
            peers_received=self._peers_received,
            last_error=self._last_error,
            failures=self._failures,
            extra={"updating": "1"} if self._in_flight else {},
        )

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Start the rounds (the first at once); no-op while running, disabled or without a DHT."""
        if self._task is not None or not self.enabled:
            return
        self._next_at = self._clock()
        self._task = asyncio.create_task(self._run(), name=f"dht {self.info_hash}")

    def announce_now(self) -> None:
        """Run a round now (after the one in flight, if any); no-op while stopped."""
        if self._task is not None:
            self._forced = True
            self._wake.set()

    def stop(self) -> None:
        """Stop now (pause); a lookup in flight is cancelled in the DHT as well."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self._in_flight = False

    def disable(self) -> None:
        """Never use the DHT again (the torrent turned out to be private, BEP 27)."""
        self._enabled = False
        self.stop()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._in_flight = False

    # ------------------------------------------------------------------ internals

    def _due(self, now: float) -> bool:
        if self._forced or now >= self._next_at:
            return True
        if self._last_start is not None and now - self._last_start < self.min_relookup:
            return False
        try:
            return self._wants_peers()
        except Exception:  # pragma: no cover - a question must not kill the loop
            log.exception("%s: wants_peers failed", self.info_hash)
            return False

    async def _run(self) -> None:
        while True:
            now = self._clock()
            if self._due(now):
                self._forced = False
                await self._round()
                continue
            wait = self._next_at - now
            if self._last_start is None or now - self._last_start >= self.min_relookup:
                wait = min(wait, CHECK_INTERVAL)  # short of peers later? look again soon
            else:
                wait = min(wait, self._last_start + self.min_relookup - now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    await self._wake.wait()

    async def _round(self) -> None:
        self._last_start = self._clock()
        svc = self._service()
        if svc is None or not self._enabled:
            self._next_at = self._last_start + self.interval
            return
        self._in_flight = True
        seen: set[Addr] = set()
        errors: list[str] = []

        def got(peers: tuple[Addr, ...]) -> None:
            new = [p for p in peers if p not in seen]
            if not new:
                return
            seen.update(new)
            self._on_peers(new)
            self._publish(DhtPeersFound(self.info_hash, len(new), len(seen)))

        try:
            if svc.state == "bootstrapping":
                await svc.wait_bootstrapped(BOOTSTRAP_WAIT)
            port, implied = self._announce_port()
            for target in self.targets:
                try:
                    result = await svc.get_peers(
                        target, announce_port=port, implied_port=implied, on_peers=got
                    )
                except DhtError as exc:
                    errors.append(str(exc))
                    continue
                if result.error is not None:
                    errors.append(result.error)
                elif not result.closest and not seen:
                    errors.append("no DHT node answered")
        finally:
            self._in_flight = False
        self.rounds += 1
        now = self._clock()
        self._last_done = now
        self._peers_received = len(seen)
        if errors and not seen:
            self._last_result, self._last_error = "error", errors[0]
            self._failures += 1
            self._next_at = now + self.min_relookup
            log.info("%s: DHT lookup failed: %s", self.info_hash.hex(), errors[0])
        else:
            self._last_result, self._last_error = "ok", None
            self._failures = 0
            spread = self.interval * JITTER
            self._next_at = now + self.interval + self._rng.uniform(-spread, spread)
            log.debug("%s: DHT lookup: %d peers", self.info_hash.hex(), len(seen))
