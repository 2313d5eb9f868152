"""Readers: read any byte of a torrent (or one file) while it downloads.

As in anacrolix/torrent, reads drive what is fetched.  A reader's position
and readahead form a window (see :mod:`core.engine.streaming`): the piece under the
position is ``NOW``, the next ``NEXT``, the rest of the readahead
``READAHEAD``; those priorities outrank every file priority, so the picker
asks for them first.  Several readers combine (each piece takes the highest
priority any window gives it).

Reads wait for their data.  A normal reader waits until the piece under it
is verified, then reads from storage in a worker thread (never on the event
loop).  A *responsive* reader also returns bytes that arrived but are not
yet hash-checked (from the torrent's piece buffers): lower latency, at the
price of possibly handing out bad data from a lying peer.

``read(n)`` returns between 1 and ``n`` bytes (``b""`` only at the end): it
waits for the first byte, then carries on through the following pieces only
while they are already available, so a streaming consumer gets data as soon
as it exists.  Reads fail with :class:`~core.errors.TorrentError` when the
torrent is dropped, paused or in error.

Readahead is a byte count or a function of :class:`ReadaheadContext`; the
default grows with the bytes read contiguously since the last seek (a
consumer that keeps reading is a stream worth fetching ahead for; one that
seeks around is not), from :data:`MIN_READAHEAD` to :data:`MAX_READAHEAD`.

``as_file()`` wraps a reader as a blocking :class:`io.RawIOBase` for other
threads (FUSE, HTTP servers, ``shutil.copyfileobj``).

A reader sees its torrent through :class:`ReaderHost` only (``Torrent``
satisfies it): the info dict, the picker's have-set, the torrent's state,
disk reads, and two views of piece data (the read cache, the pipeline's
unverified buffers).  Calls go one way, reader to torrent; it announces its
window moves to the torrent's :class:`~core.engine.streaming.Streaming`
(``host.streaming.move``), which re-prioritises.  It never imports
``torrent.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

from ..errors import TorrentError
from ..formats.info import Info
from ..stats import TorrentState
from ..storage import Storage
from .picker import CHUNK_SIZE, Picker
from .streaming import Streaming, Window

T = TypeVar("T")

#: Readahead right after a seek.
MIN_READAHEAD = 1 << 20
#: The default readahead stops growing here.
MAX_READAHEAD = 64 << 20


@dataclass(frozen=True, slots=True)
class ReadaheadContext:
    """What a readahead function sees (offsets relative to the reader's start)."""

    contiguous_read_start_pos: int
    current_pos: int


ReadaheadFunc = Callable[[ReadaheadContext], int]


class ReaderHost(Protocol):
    """What a :class:`Reader` may read of its torrent and ask of it."""

    @property
    def name(self) -> str: ...
    @property
    def info(self) -> Info: ...
    @property
    def picker(self) -> Picker: ...
    @property
    def storage(self) -> Storage: ...
    @property
    def state(self) -> TorrentState: ...
    @property
    def error(self) -> str | None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def streaming(self) -> Streaming: ...

    def cached_piece(self, p: int) -> bytes | None: ...
    def unverified_buffer(self, p: int) -> bytearray | None: ...
    async def run_io(self, fn: Callable[..., T], *args: Any) -> T: ...


def default_readahead(ctx: ReadaheadContext) -> int:
    """The bytes read since the last seek, between the floor and the cap."""
    run = ctx.current_pos - ctx.contiguous_read_start_pos
    return max(MIN_READAHEAD, min(MAX_READAHEAD, run))


class Reader:
    """An async, seekable view of ``length`` bytes at ``offset`` in a torrent's piece space.

    Not safe for concurrent use by several tasks (make one reader each).
    Use as ``async with t.new_reader() as r:`` or call :meth:`close`.
    """

    def __init__(
        self,
        torrent: ReaderHost,
        offset: int,
        length: int,
        *,
        readahead: int | ReadaheadFunc | None = None,
        responsive: bool = False,
    ) -> None:
        if offset < 0 or length < 0 or offset + length > torrent.info.length:
            raise ValueError(f"range {offset}+{length} outside the torrent")
        self._torrent = torrent
        self._offset = offset
        self._length = length
        self._pos = 0
        self._run_start = 0
        self._readahead: int | ReadaheadFunc = default_readahead if readahead is None else readahead
        self.responsive = responsive
        self._closed = False
        torrent.streaming.readers.add(self)
        self._update_window()

    def __repr__(self) -> str:
        return f"<Reader {self._torrent.name!r} {self._offset}+{self._length} at {self._pos}>"

    # --- configuration ----------------------------------------------------------

    @property
    def length(self) -> int:
        return self._length

    @property
    def closed(self) -> bool:
        return self._closed

    def set_readahead(self, readahead: int | ReadaheadFunc) -> None:
        """Bytes to fetch ahead of the position, or a function deciding it."""
        if isinstance(readahead, int) and readahead < 0:
            raise ValueError(f"readahead must not be negative, got {readahead}")
        self._readahead = readahead
        self._update_window()

    def set_responsive(self, on: bool = True) -> None:
        """Return received bytes before their piece is verified (see module docs)."""
        self.responsive = on

    def readahead(self) -> int:
        """The readahead in bytes right now."""
        ra = self._readahead
        if callable(ra):
            return max(0, int(ra(ReadaheadContext(self._run_start, self._pos))))
        return ra

    def window(self) -> Window | None:
        """The pieces this reader makes urgent; ``None`` at the end or once closed."""
        if self._closed or self._pos >= self._length:
            return None
        plen = self._torrent.info.piece_length
        start = self._offset + self._pos
        stop = self._offset + min(self._length, self._pos + max(1, self.readahead()))
        now = start // plen
        return Window(now, max(now + 1, (stop - 1) // plen + 1))

    def _update_window(self) -> None:
        self._torrent.streaming.move(self, self.window())

    # --- position -----------------------------------------------------------------

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the position (``SEEK_SET``/``SEEK_CUR``/``SEEK_END``); returns it.

        Seeking past the end is allowed (reads there return ``b""``); before
        the start is a :class:`ValueError`.  A seek restarts the default
        readahead's growth, unless it lands where the reader already was.
        """
        self._check_open()
        if whence == os.SEEK_SET:
            new = offset
        elif whence == os.SEEK_CUR:
            new = self._pos + offset
        elif whence == os.SEEK_END:
            new = self._length + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if new < 0:
            raise ValueError(f"negative seek position {new}")
        if new != self._pos:
            self._pos = new
            self._run_start = new
            self._update_window()
        return new

    # --- reading ---------------------------------------------------------------

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all the rest if ``n < 0``); ``b""`` only at the end."""
        self._check_open()
        if n < 0:
            parts = []
            while chunk := await self.read(16 << 20):
                parts.append(chunk)
            return b"".join(parts)
        buf = bytearray(min(n, max(0, self._length - self._pos)))
        got = await self.readinto(buf)
        del buf[got:]
        return bytes(buf)

    async def readinto(self, buf: bytearray | memoryview) -> int:
        """Fill the start of ``buf``; returns the byte count (0 only at the end)."""
        self._check_open()
        view = memoryview(buf).cast("B")
        want = min(len(view), self._length - self._pos)
        if want <= 0:
            return 0
        info = self._torrent.info
        plen = info.piece_length
        done = 0
        while done < want:
            absolute = self._offset + self._pos
            p = absolute // plen
            begin = absolute - p * plen
            size = info.piece_size(p)
            if begin >= size:
                # Pure v2: the tail of a file's last piece is virtual padding
                # that no piece holds; like a BEP 47 padding file it reads as zeros.
                k = min(plen - begin, want - done)
                view[done : done + k] = bytes(k)
                done += k
                self._pos += k
                self._update_window()
                continue
            end = min(size, begin + want - done)
            data = await self._piece_bytes(p, begin, end, wait=done == 0)
            if not data:
                break
            k = len(data)
            view[done : done + k] = data
            done += k
            self._pos += k
            self._update_window()
        return done

    async def _piece_bytes(self, p: int, begin: int, end: int, *, wait: bool) -> bytes:
        """Bytes ``[begin, end)`` of piece ``p`` or a prefix; ``wait=False``: none if not ready."""
        t = self._torrent
        while True:
            self._check_open()
            self._check_torrent()
            if t.picker.have(p):
                return await self._read_verified(p, begin, end)
            if self.responsive:
                data = self._read_unverified(p, begin, end)
                if data:
                    return data
            if not wait:
                return b""
            await t.streaming.waiter(p, block=self.responsive)

    async def _read_verified(self, p: int, begin: int, end: int) -> bytes:
        t = self._torrent
        cached = t.cached_piece(p)
        if cached is not None:
            return cached[begin:end]
        data = await t.run_io(t.storage.read_block, p, begin, end - begin)
        self._check_torrent()
        return data

    def _read_unverified(self, p: int, begin: int, end: int) -> bytes:
        """The received prefix of ``[begin, end)`` from the piece's buffer, if any."""
        t = self._torrent
        buf = t.unverified_buffer(p)
        if buf is None:
            return b""
        picker = t.picker
        stop = begin
        while stop < end and picker.has_block(p, stop):
            stop = min(end, (stop // CHUNK_SIZE + 1) * CHUNK_SIZE)
        return bytes(buf[begin:stop])

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on a closed reader")

    def _check_torrent(self) -> None:
        t = self._torrent
        if t.closed:
            raise TorrentError(f"{t.name}: torrent dropped")
        if t.state is TorrentState.PAUSED:
            raise TorrentError(f"{t.name}: torrent paused")
        if t.state is TorrentState.ERROR:
            raise TorrentError(f"{t.name}: {t.error}")

    # --- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        """Stop prioritising this reader's window; idempotent."""
        if self._closed:
            return
        self._closed = True
        streaming = self._torrent.streaming
        streaming.readers.discard(self)
        if not self._torrent.closed:
            streaming.move(self, None)
        else:
            streaming.windows.set(self, None)

    async def __aenter__(self) -> Reader:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def as_file(self) -> ReaderFile:
        """A blocking file object over this reader, for use from other threads."""
        return ReaderFile(self, asyncio.get_running_loop())


class ReaderFile(io.RawIOBase):
    """A :class:`Reader` as a blocking, seekable :class:`io.RawIOBase`.

    Every call hops onto the engine's event loop and waits for the answer, so
    it must be used from another thread (calling it on the loop's own thread
    would deadlock, and raises :class:`RuntimeError` instead).  Wrap it in
    :class:`io.BufferedReader` for small reads.  Closing it closes the reader.
    """

    def __init__(self, reader: Reader, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._reader = reader
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise RuntimeError("ReaderFile used on the event loop thread: use the Reader there")
        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        self._checkClosed()
        return self._call(self._reader.readinto(memoryview(b)))

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._checkClosed()

        async def seek() -> int:
            return self._reader.seek(offset, whence)

        return self._call(seek())

    def tell(self) -> int:
        self._checkClosed()
        return self._reader.tell()

    def close(self) -> None:
        if not self.closed:
            reader = self._reader

            async def close() -> None:
                reader.close()

            try:
                if not self._loop.is_closed():
                    self._call(close())
            except RuntimeError:
                reader.close()  # on the loop thread itself: closing does not block
            finally:
                super().close()
