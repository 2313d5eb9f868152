"""The one place where engine state becomes Textual messages.

Two feeds, matching the bus's two kinds of event:

* **Levels** (how things are): a timer at the configured refresh rate
  (2-4 Hz) reads the engine facade's cheap getters on the event loop and
  posts one :class:`Refreshed` message.  ``can_replace`` lets a newer one
  supersede an unhandled older one in the app's queue, so a busy UI skips
  stale frames instead of falling behind.
* **Edges** (what happened): the bridge is the bus's only subscriber in the
  TUI.  Each edge is posted as an :class:`EngineEvent` (never coalesced) and
  those that change the torrent list trigger an immediate refresh;
  a :class:`~core.events.Lagged` marker (edges were lost) triggers a full
  re-read, which is all the TUI mirrors anyway.

Nothing here awaits the engine's slow operations; the getters are plain
calls that return values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from textual.app import App
from textual.message import Message
from textual.timer import Timer

from core.bus import Subscription, SubscriptionClosed
from core.events import (
    DhtBootstrapped,
    Edge,
    Event,
    Lagged,
    MetadataReceived,
    TorrentAdded,
    TorrentRemoved,
    TorrentRow,
    TorrentStateChanged,
)
from core.types import InfoHash

from .engine import Engine
from .model import GlobalStatus, TorrentDetails

log = logging.getLogger(__name__)

#: Edges after which the table (or the status pane's DHT cell) should not wait for the next tick.
_PROMPT = (TorrentAdded, TorrentRemoved, TorrentStateChanged, MetadataReceived, DhtBootstrapped)


class Refreshed(Message):
    """A fresh view of the engine: every torrent row, the totals, the selected torrent."""

    def __init__(
        self,
        rows: tuple[TorrentRow, ...],
        status: GlobalStatus,
        details: TorrentDetails | None,
        seq: int,
    ) -> None:
        super().__init__()
        self.rows = rows
        self.status = status
        self.details = details
        self.seq = seq

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Refreshed)


class EngineEvent(Message):
    """Something happened in the engine (an edge from the bus), in order."""

    def __init__(self, event: Edge) -> None:
        super().__init__()
        self.event = event


class Bridge:
    """Feeds ``app`` with :class:`Refreshed` and :class:`EngineEvent` messages."""

    def __init__(self, app: App[Any], engine: Engine, *, refresh_hz: float = 4.0) -> None:
        self.app = app
        self.engine = engine
        self.refresh_hz = refresh_hz
        #: The torrent whose details each refresh includes.
        self.selected: InfoHash | None = None
        self.seq = 0
        #: Seconds spent in the getters of the last refresh (for the bench).
        self.last_read_seconds = 0.0
        self._sub: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._timer: Timer | None = None

    def start(self) -> None:
        """Subscribe to the bus and start the refresh timer (call once the engine runs)."""
        if self._sub is None:
            self._sub = self.engine.subscribe()
            self._reader = asyncio.get_running_loop().create_task(
                self._read_edges(self._sub), name="tui-bridge-edges"
            )
        self.set_rate(self.refresh_hz)
        self.refresh()

    def set_rate(self, hz: float) -> None:
        """Change the refresh rate live; 0 means only on demand (tests, snapshots)."""
        self.refresh_hz = hz
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if hz > 0:
            self._timer = self.app.set_interval(1.0 / hz, self.refresh, name="tui-refresh")

    def select(self, ih: InfoHash | None) -> None:
        """Follow another torrent in the detail tabs (refreshes at once on change)."""
        if ih != self.selected:
            self.selected = ih
            self.refresh()

    def refresh(self) -> None:
        """Read the engine now and post the result (replacing any unhandled older one)."""
        start = time.perf_counter()
        try:
            rows = self.engine.torrents()
            status = self.engine.status()
            details = self.engine.details(self.selected) if self.selected is not None else None
        except Exception:  # pragma: no cover - an engine bug must not kill the UI timer
            log.exception("refresh failed")
            return
        self.last_read_seconds = time.perf_counter() - start
        self.seq += 1
        self.app.post_message(Refreshed(rows, status, details, self.seq))

    async def _read_edges(self, sub: Subscription) -> None:
        try:
            async for event in sub:
                self._dispatch(event)
        except SubscriptionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover
            log.exception("bridge reader failed")

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Lagged):
            self.refresh()
            return
        if isinstance(event, Edge):
            self.app.post_message(EngineEvent(event))
            if isinstance(event, _PROMPT):
                self.refresh()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._sub is not None:
            self._sub.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
            self._reader = None
