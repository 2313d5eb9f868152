"""The event bus: the engine publishes, the UI (or anyone) subscribes.

The engine must never wait for a reader, so :meth:`EventBus.publish` is a
plain synchronous call that does O(1) work per subscriber and never awaits.
Every subscription is bounded, and what happens when it fills up depends on
the kind of event (see ``core/events.py``):

* Edges queue in publish order up to ``max_edges``. The first edge that does
  not fit is dropped, and so is every later one, until the subscriber has
  read what was queued; it then receives exactly one :class:`Lagged` marker
  (carrying the number dropped) and edges flow again. The marker means "the
  edges you mirror are incomplete: re-read state from the engine".
* Levels are coalesced: a subscription holds at most one per
  (type, :attr:`Level.key`), the newest. A slow reader therefore sees fewer
  snapshots, never stale ones, and never costs memory.

Ordering. Every queued item remembers when it was published. Edges come out
in publish order; a level comes out at the position of its *newest* publish,
i.e. after the edges that were published before it and before those
published after it. A snapshot therefore never contradicts an edge the
subscriber has already seen (a ``TorrentRemoved`` is never followed by an
older snapshot that still lists the torrent).

Threading. The bus belongs to the event loop thread: call every method from
that thread only (the engine's single-lock rule). ``publish`` does not need a
running loop when nobody is waiting, so sans-IO tests and synchronous code
can publish freely.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable
from types import TracebackType
from typing import Self

from .errors import TorrentError
from .events import Edge, Event, Lagged, Level


class SubscriptionClosed(TorrentError):
    """``get`` on a subscription that is closed and has nothing left to deliver."""


class EventBus:
    """Fan-out of engine events to any number of bounded subscriptions."""

    __slots__ = ("_closed", "_seq", "_subs")

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._seq = 0
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribe(
        self, *, max_edges: int = 1024, kinds: Iterable[type[Event]] | None = None
    ) -> Subscription:
        """A new subscription receiving events published from now on.

        ``kinds`` restricts it to instances of those classes (``Edge`` or
        ``Level`` select a whole kind); :class:`Lagged` is always delivered.
        """
        if self._closed:
            raise SubscriptionClosed("the event bus is closed")
        sub = Subscription(self, max_edges=max_edges, kinds=kinds)
        self._subs.append(sub)
        return sub

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every subscription; never blocks, never raises on a slow reader."""
        if self._closed or not self._subs:
            return
        self._seq += 1
        seq = self._seq
        if isinstance(event, Edge):
            for sub in self._subs:
                sub._push_edge(seq, event)  # noqa: SLF001 - Bus and Subscription are one unit
        elif isinstance(event, Level):
            key: Hashable = (type(event), event.key)
            for sub in self._subs:
                sub._push_level(seq, key, event)  # noqa: SLF001 - Bus and Subscription are one unit
        else:
            raise TypeError(f"only Edge and Level events can be published, not {event!r}")

    def close(self) -> None:
        """End every subscription; each still delivers what it had queued, then stops."""
        self._closed = True
        subs, self._subs = self._subs, []
        for sub in subs:
            sub._end(discard=False)  # noqa: SLF001 - Bus and Subscription are one unit

    def _unsubscribe(self, sub: Subscription) -> None:
        # A list scan: subscribers are few (the UI bridge, tests), and a
        # list keeps publish's per-subscriber loop as cheap as possible.
        try:
            self._subs.remove(sub)
        except ValueError:
            pass


class Subscription:
    """One reader's bounded queue; an async iterator of events.

    Use ``async for ev in sub``, ``await sub.get()`` or ``sub.get_nowait()``.
    As a (sync or async) context manager it closes itself on exit.
    """

    __slots__ = (
        "_bus",
        "_closed",
        "_dropped",
        "_edges",
        "_kinds",
        "_lagged_seq",
        "_levels",
        "_max_edges",
        "_ready",
    )

    def __init__(
        self, bus: EventBus, *, max_edges: int, kinds: Iterable[type[Event]] | None
    ) -> None:
        if max_edges < 1:
            raise ValueError(f"max_edges must be at least 1, got {max_edges}")
        self._bus = bus
        self._max_edges = max_edges
        self._kinds: tuple[type[Event], ...] | None = None if kinds is None else tuple(kinds)
        self._edges: deque[tuple[int, Edge]] = deque()
        # Ordered by each slot's newest publish (move_to_end on update), so
        # the first entry is always the level due next.
        self._levels: OrderedDict[Hashable, tuple[int, Level]] = OrderedDict()
        # Set while overflowing: the publish sequence of the first dropped edge.
        self._lagged_seq: int | None = None
        self._dropped = 0
        self._closed = False
        # Created lazily by asyncio on first wait, so constructing a
        # subscription (and publishing to it) needs no running loop.
        self._ready = asyncio.Event()

    # --- called by the bus ---------------------------------------------------

    def _wanted(self, event: Event) -> bool:
        return self._kinds is None or isinstance(event, self._kinds)

    def _push_edge(self, seq: int, event: Edge) -> None:
        if not self._wanted(event):
            return
        if self._lagged_seq is not None:
            self._dropped += 1
        elif len(self._edges) >= self._max_edges:
            self._lagged_seq = seq
            self._dropped = 1
        else:
            self._edges.append((seq, event))
        self._ready.set()

    def _push_level(self, seq: int, key: Hashable, event: Level) -> None:
        if not self._wanted(event):
            return
        levels = self._levels
        levels[key] = (seq, event)
        levels.move_to_end(key)
        self._ready.set()

    def _end(self, *, discard: bool) -> None:
        self._closed = True
        if discard:
            self._edges.clear()
            self._levels.clear()
            self._lagged_seq = None
        self._ready.set()

    # --- reading --------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self) -> int:
        """How many items (edges, levels, a Lagged marker) are ready to read."""
        return len(self._edges) + len(self._levels) + (self._lagged_seq is not None)

    def get_nowait(self) -> Event | None:
        """The next event, or None if none is ready.

        Raises :class:`SubscriptionClosed` once the subscription is closed and
        everything it held has been read.
        """
        edges, levels = self._edges, self._levels
        # Candidates, each tagged with its publish sequence: the head edge, the
        # Lagged marker (which only ever follows the queued edges), and the
        # level due next. The smallest sequence goes first.
        best = 0
        best_seq = 0
        if edges:
            best, best_seq = 1, edges[0][0]
        elif self._lagged_seq is not None:
            best, best_seq = 2, self._lagged_seq
        if levels:
            level_seq = next(iter(levels.values()))[0]
            if not best or level_seq < best_seq:
                best = 3
        if best == 1:
            return edges.popleft()[1]
        if best == 2:
            dropped, self._dropped, self._lagged_seq = self._dropped, 0, None
            return Lagged(dropped)
        if best == 3:
            return levels.popitem(last=False)[1][1]
        if self._closed:
            raise SubscriptionClosed("subscription closed")
        return None

    async def get(self) -> Event:
        """Wait for the next event; raises :class:`SubscriptionClosed` at the end."""
        while True:
            event = self.get_nowait()
            if event is not None:
                return event
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """Stop receiving and drop anything queued; pending ``get`` calls end."""
        if not self._closed:
            self._bus._unsubscribe(self)  # noqa: SLF001 - Bus and Subscription are one unit
        self._end(discard=True)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
