"""What readers need from a torrent: priority windows, waits for data, state feeds.

A :class:`~core.engine.reader.Reader` drives downloading by moving a window over the
piece space: the piece under its position is ``NOW``, the one after it
``NEXT``, the rest of its readahead ``READAHEAD`` (anacrolix's
``reader.go``).  :class:`ReaderWindows` combines the windows of every open
reader into one per-piece priority, the third input of a piece's priority
next to its own and its files'.  It is pure bookkeeping: moving a window
returns only the pieces whose combined priority changed, so a reader that
advances by one piece re-prioritises a handful of pieces, whatever its
readahead.

:class:`Streaming` is the torrent-side glue kept out of ``torrent.py``: it
owns the windows, the futures readers sleep on until a piece is verified
(or, for responsive readers, until a block arrives), and the per-consumer
piece-state subscriptions.

Direction of calls: the torrent (and the pipeline) announce to it at a few
hook points (``piece_changed``, ``block_arrived``, ``fail_waiters``,
``close``); it asks back through :class:`StreamingHost` only, for exactly two
things: a piece's state (for subscriptions) and re-prioritising the pieces a
reader's window moved over.  It never imports ``torrent.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable, Iterator
from typing import NamedTuple, Protocol

from ..errors import TorrentError
from ..piecestate import PieceState
from ..types import PiecePriority

_NONE = PiecePriority.NONE


class StreamingHost(Protocol):
    """What :class:`Streaming` may ask of its torrent (``Torrent`` satisfies it)."""

    def piece_state(self, p: int) -> PieceState: ...

    def reprioritise(self, pieces: Iterable[int]) -> None:
        """Recompute the priority of ``pieces`` (a reader's window moved over them)."""
        ...


class Window(NamedTuple):
    """Pieces a reader wants: ``now`` is under its position, ``end`` is exclusive."""

    now: int
    end: int

    def priority(self, p: int) -> PiecePriority:
        if p == self.now:
            return PiecePriority.NOW
        if p == self.now + 1 and p < self.end:
            return PiecePriority.NEXT
        if self.now + 1 < p < self.end:
            return PiecePriority.READAHEAD
        return _NONE


def _readahead_range(w: Window | None) -> range:
    return range(0) if w is None else range(w.now + 2, max(w.now + 2, w.end))


def _minus(a: range, b: range) -> Iterator[int]:
    """Elements of range ``a`` not in range ``b`` (both step 1)."""
    if not b:
        yield from a
        return
    yield from range(a.start, min(a.stop, b.start))
    yield from range(max(a.start, b.stop), a.stop)


class ReaderWindows:
    """The combined priority of every reader's window, per piece."""

    def __init__(self) -> None:
        self._windows: dict[Hashable, Window] = {}
        self._prio: dict[int, PiecePriority] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def priority(self, p: int) -> PiecePriority:
        """The highest priority any reader's window gives piece ``p``."""
        return self._prio.get(p, _NONE)

    def window(self, key: Hashable) -> Window | None:
        return self._windows.get(key)

    def set(self, key: Hashable, window: Window | None) -> list[int]:
        """Move (or with ``None`` remove) one reader's window.

        Returns the pieces whose combined priority changed, in no order.
        Work is proportional to the pieces entering or leaving the window
        times the number of readers, never to the window's size.
        """
        old = self._windows.get(key)
        if old == window:
            return []
        if window is None:
            del self._windows[key]
        else:
            self._windows[key] = window
        touched: set[int] = set()
        for w in (old, window):
            if w is not None:
                touched.update((w.now, w.now + 1))
        ra_old, ra_new = _readahead_range(old), _readahead_range(window)
        touched.update(_minus(ra_old, ra_new))
        touched.update(_minus(ra_new, ra_old))
        changed = []
        windows = self._windows.values()
        for p in touched:
            if p < 0:
                continue
            best = max((w.priority(p) for w in windows), default=_NONE)
            if best != self._prio.get(p, _NONE):
                if best is _NONE:
                    del self._prio[p]
                else:
                    self._prio[p] = best
                changed.append(p)
        return changed


class PieceStateSubscription:
    """Changes of piece state for one consumer, from :meth:`Torrent.subscribe_piece_state_changes`.

    An async iterator of batches: each batch is a tuple of ``(piece, state)``
    with the piece's state at the moment the batch is taken.  Nothing is
    ever lost and memory stays bounded: pending changes are kept as a set of
    piece indices (at most one entry per piece), so a slow consumer gets
    larger batches instead of a backlog.  The price of coalescing is that a
    piece that changed several times between two batches is reported once,
    with its newest state (possibly equal to the one reported before, if it
    changed and changed back).  Unlike the bus, this feed never lags.
    """

    def __init__(self, streaming: Streaming) -> None:
        self._streaming = streaming
        self._pending: dict[int, None] = {}
        self._ready = asyncio.Event()
        self._closed = False

    def changed(self, p: int) -> None:
        """Piece ``p`` changed (called by :meth:`Streaming.piece_changed`)."""
        self._pending[p] = None
        self._ready.set()

    def take(self) -> tuple[tuple[int, PieceState], ...]:
        """The pending changes now (possibly empty), without waiting."""
        piece_state = self._streaming.host.piece_state
        batch = tuple((p, piece_state(p)) for p in self._pending)
        self._pending.clear()
        self._ready.clear()
        return batch

    async def get(self) -> tuple[tuple[int, PieceState], ...]:
        """Wait for the next non-empty batch; raises :class:`TorrentError` once closed."""
        while not self._pending:
            if self._closed:
                raise TorrentError("piece state subscription closed")
            await self._ready.wait()
            self._ready.clear()
        return self.take()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._ready.set()
            self._streaming.subs.discard(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> PieceStateSubscription:
        return self

    async def __anext__(self) -> tuple[tuple[int, PieceState], ...]:
        try:
            return await self.get()
        except TorrentError:
            raise StopAsyncIteration from None

    def __enter__(self) -> PieceStateSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Streaming:
    """A torrent's readers' state: windows, waiters and state subscriptions."""

    def __init__(self, host: StreamingHost) -> None:
        self.host = host
        self.windows = ReaderWindows()
        #: piece -> future set when the piece's state changes (verified among others).
        self.piece_waiters: dict[int, asyncio.Future[None]] = {}
        #: piece -> future set when a block of it arrives (responsive readers).
        self.block_waiters: dict[int, asyncio.Future[None]] = {}
        self.subs: set[PieceStateSubscription] = set()
        self.readers: set[Hashable] = set()

    def move(self, key: Hashable, window: Window | None) -> None:
        """A reader's window moved: re-prioritise exactly the pieces that changed."""
        changed = self.windows.set(key, window)
        if changed:
            self.host.reprioritise(changed)

    def waiter(self, p: int, *, block: bool) -> asyncio.Future[None]:
        table = self.block_waiters if block else self.piece_waiters
        fut = table.get(p)
        if fut is None or fut.done():
            fut = table[p] = asyncio.get_running_loop().create_future()
        return fut

    # --- torrent hooks --------------------------------------------------------

    def piece_changed(self, p: int) -> None:
        fut = self.piece_waiters.pop(p, None)
        if fut is not None and not fut.done():
            fut.set_result(None)
        fut = self.block_waiters.pop(p, None)
        if fut is not None and not fut.done():
            fut.set_result(None)
        for sub in self.subs:
            sub.changed(p)

    def block_arrived(self, p: int) -> None:
        fut = self.block_waiters.pop(p, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def fail_waiters(self, why: str) -> None:
        """Wake every waiting reader with an error (torrent dropped, paused or failed)."""
        for table in (self.piece_waiters, self.block_waiters):
            futs = list(table.values())
            table.clear()
            for fut in futs:
                if not fut.done():
                    fut.set_exception(TorrentError(why))
                    # A waiter cancelled meanwhile must not log "never retrieved".
                    fut.exception()

    def close(self, why: str) -> None:
        self.fail_waiters(why)
        for sub in list(self.subs):
            sub.close()
