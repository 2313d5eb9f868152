"""Drive a sans-IO :class:`~core.wire.PeerConnection` over any byte stream.

``PeerDriver`` is the :class:`~core.net.stream.StreamConsumer` of one
connection's stream (TCP today; uTP or an MSE layer later, unchanged here).
Received bytes land straight in the connection's receive buffer (the
stream's ``get_buffer``/``buffer_updated`` path, no per-read ``bytes``
objects), and every complete message is turned into an event and handed to
the owner synchronously, inside the read callback.  That keeps the hot path
free of task switches; anything slow (disk, hashing) the owner schedules on
a worker thread itself.

The driver knows nothing about torrents or sockets.  Its owner implements
:class:`PeerOwner`: the client while the handshake is in progress (to route
an incoming connection to its torrent), then the torrent's ``Peer``.  What
it adds to the wire state machine is what needs a clock or a loop: timers,
read rate limits, and corking the blocks of one loop turn into one write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Protocol

from ..errors import LocalProtocolError, RemoteProtocolError
from ..ratelimit import TokenBucket
from ..wire import NEED_DATA, Event, PeerConnection, PieceSizes
from ..wire.sending import Outgoing
from .stream import Address, ByteStream

__all__ = ["CORK_LIMIT", "PeerDriver", "PeerOwner", "PeerProtocol"]

#: Blocks sent in one event-loop turn are joined into one write up to this size.
CORK_LIMIT = 256 << 10


class PeerOwner(Protocol):
    def peer_event(self, proto: PeerDriver, event: Event) -> None: ...

    def peer_closed(self, proto: PeerDriver, reason: str) -> None: ...

    def peer_writable(self, proto: PeerDriver) -> None: ...


class PeerDriver:
    """One peer connection: bytes in and out through a stream, events to the owner, a timer."""

    def __init__(
        self,
        conn: PeerConnection,
        owner: PeerOwner,
        *,
        outgoing: bool,
        download_bucket: TokenBucket | None = None,
        upload_bucket: TokenBucket | None = None,
    ) -> None:
        self.conn = conn
        self.owner = owner
        self.outgoing = outgoing
        self.download_bucket = download_bucket
        self.upload_bucket = upload_bucket
        # The torrent's own limit, set once the connection is attached to a torrent.
        self.torrent_download_bucket: TokenBucket | None = None
        self.stream: ByteStream | None = None
        self.address: Address = ("?", 0)
        self.closed = False
        self.close_reason = ""
        # Wire bytes (after any decryption layer), protocol overhead included.
        self.bytes_read = 0
        self.bytes_written = 0
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._read_resume: asyncio.TimerHandle | None = None
        self._corked: list[bytes | memoryview] = []
        self._corked_bytes = 0
        self._uncork: asyncio.Handle | None = None

    @property
    def write_paused(self) -> bool:
        """The stream is full: hold back uploads until ``peer_writable``."""
        stream = self.stream
        return stream is not None and stream.write_paused

    # --- StreamConsumer ----------------------------------------------------------

    def stream_opened(self, stream: ByteStream) -> None:
        self.stream = stream
        self.address = stream.remote_address
        if self.outgoing:
            self.write(self.conn.initiate(self._now()))
        self._schedule_timer()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        self.bytes_read += nbytes
        try:
            self.conn.buffer_updated(nbytes, self._now())
            self._dispatch()
        except RemoteProtocolError as exc:
            self.close(str(exc))
            return
        except LocalProtocolError as exc:  # our bug: still never crash the loop
            self.close(f"internal error: {exc}")
            return
        delay = 0.0
        now = self._now()
        for bucket in (self.download_bucket, self.torrent_download_bucket):
            if bucket is not None and bucket.rate is not None:
                delay = max(delay, bucket.consume(nbytes, now))
        if delay > 0 and self.stream is not None and not self.closed:
            self.stream.pause_reading()
            self._read_resume = self._loop.call_later(delay, self._resume_reading)

    def _resume_reading(self) -> None:
        self._read_resume = None
        if not self.closed and self.stream is not None:
            self.stream.resume_reading()

    def stream_writable(self) -> None:
        if not self.closed:
            self.owner.peer_writable(self)

    def stream_closed(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = self.close_reason or reason
            self._cancel_timers()
            self._corked.clear()
            self.owner.peer_closed(self, self.close_reason)

    # --- driving the connection ----------------------------------------------

    def _dispatch(self) -> None:
        conn = self.conn
        while not self.closed:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            # Re-read the owner each time: the handshake router hands over to a Peer.
            self.owner.peer_event(self, event)
        if not self.closed:
            auto = conn.data_to_send()
            if auto:
                self.write(auto)

    def send(self, msg: Outgoing) -> None:
        """Encode and write one message (a no-op once closed or when moot)."""
        if self.closed:
            return
        try:
            data = self.conn.send(msg, self._now())
        except LocalProtocolError as exc:
            self.close(f"internal error: {exc}")
            return
        if data:
            self.write(data)

    def send_many(self, msgs: Iterable[Outgoing]) -> None:
        if self.closed:
            return
        now = self._now()
        parts = []
        try:
            for msg in msgs:
                data = self.conn.send(msg, now)
                if data:
                    parts.append(data)
        except LocalProtocolError as exc:
            self.close(f"internal error: {exc}")
            return
        if parts:
            self.write(b"".join(parts))

    def send_piece(self, index: int, begin: int, data: bytes | memoryview) -> bool:
        """Queue a block for this loop turn's write; False when the request was cancelled.

        ``data`` is joined with the other blocks of the turn when they are
        written, so it must not change before control returns to the loop.
        """
        if self.closed or self.stream is None:
            return False
        try:
            parts = self.conn.send_piece(index, begin, data, self._now())
        except LocalProtocolError:
            return False
        if not parts:
            return False
        # Cork: a read full of requests is answered with one stream write at
        # the end of this loop turn instead of a send() per 16 KiB block
        # (the header and block views go down as they are: no copy here).
        n = sum(len(p) for p in parts)
        self._corked.extend(parts)
        self._corked_bytes += n
        self.bytes_written += n
        if self._corked_bytes >= CORK_LIMIT:
            self._flush_corked()
        elif self._uncork is None:
            self._uncork = self._loop.call_soon(self._flush_corked)
        return True

    def _flush_corked(self) -> None:
        if self._uncork is not None:
            self._uncork.cancel()
            self._uncork = None
        corked = self._corked
        if not corked:
            return
        self._corked = []
        self._corked_bytes = 0
        if self.stream is not None and not self.closed:
            self.stream.writelines(corked)

    def write(self, data: bytes) -> None:
        if self.stream is not None and not self.closed:
            if self._corked:
                self._flush_corked()  # keep the wire order
            self.stream.write(data)
            self.bytes_written += len(data)

    def accept(self, lengths: PieceSizes | None) -> None:
        """Receiver: serve the info-hash the remote asked for (see ``RemoteInfoHash``)."""
        self.write(self.conn.accept(lengths, self._now()))

    def close(self, reason: str) -> None:
        """Drop the connection, recording why; the owner hears it once via ``peer_closed``."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._cancel_timers()
        self._corked.clear()
        if self.stream is not None:
            self.stream.abort()
        self.owner.peer_closed(self, reason)

    # --- timers ----------------------------------------------------------------

    @staticmethod
    def _now() -> float:
        return time.monotonic()

    def _schedule_timer(self) -> None:
        deadline = self.conn.next_deadline()
        if deadline is None or self.closed:
            return
        delay = max(0.0, deadline - self._now())
        self._timer = self._loop.call_later(delay + 0.01, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        try:
            data = self.conn.handle_timeout(self._now())
        except RemoteProtocolError as exc:
            self.close(str(exc))
            return
        if data:
            self.write(data)
        self._schedule_timer()

    def _cancel_timers(self) -> None:
        for handle in (self._timer, self._read_resume, self._uncork):
            if handle is not None:
                handle.cancel()
        self._timer = self._read_resume = self._uncork = None


#: The name the engine knows the driver by (it was the asyncio protocol itself).
PeerProtocol = PeerDriver
