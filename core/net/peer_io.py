"""Drive a sans-IO :class:`~core.wire.PeerConnection` over a TCP transport.

``PeerProtocol`` is an ``asyncio.BufferedProtocol``: the socket writes
straight into the connection's receive buffer (no per-read ``bytes``
objects), and every complete message is turned into an event and handed to
the owner synchronously, inside the read callback.  That keeps the hot path
free of task switches; anything slow (disk, hashing) the owner schedules on
a worker thread itself.

The protocol knows nothing about torrents.  Its owner implements
:class:`PeerOwner`: the client while the handshake is in progress (to route
an incoming connection to its torrent), then the torrent's ``Peer``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Protocol

from ..errors import LocalProtocolError, RemoteProtocolError
from ..ratelimit import TokenBucket
from ..wire import NEED_DATA, Event, PeerConnection
from ..wire.sending import Outgoing

#: Pause sending when this much is queued in the transport; resume below a quarter.
WRITE_HIGH_WATER = 4 << 20
#: Blocks sent in one event-loop turn are joined into one write up to this size.
CORK_LIMIT = 256 << 10


class PeerOwner(Protocol):
    def peer_event(self, proto: PeerProtocol, event: Event) -> None: ...

    def peer_closed(self, proto: PeerProtocol, reason: str) -> None: ...

    def peer_writable(self, proto: PeerProtocol) -> None: ...


class PeerProtocol(asyncio.BufferedProtocol):
    """One TCP peer connection: bytes in and out, events to the owner, a timer."""

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
        self.transport: asyncio.Transport | None = None
        self.address: tuple[str, int] = ("?", 0)
        self.closed = False
        self.close_reason = ""
        self.write_paused = False
        self.bytes_read = 0
        self.bytes_written = 0
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._read_resume: asyncio.TimerHandle | None = None
        self._corked: list[bytes | memoryview] = []
        self._corked_bytes = 0
        self._uncork: asyncio.Handle | None = None
        self.connected = asyncio.Event()

    # --- asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.address = (str(peer[0]), int(peer[1]))
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_HIGH_WATER // 4)
        if self.outgoing:
            self.write(self.conn.initiate(self._now()))
        self._schedule_timer()
        self.connected.set()

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
        if delay > 0 and self.transport is not None and not self.closed:
            self.transport.pause_reading()
            self._read_resume = self._loop.call_later(delay, self._resume_reading)

    def _resume_reading(self) -> None:
        self._read_resume = None
        if not self.closed and self.transport is not None:
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        self.close("peer closed the connection")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = self.close_reason or (
                f"connection lost: {exc}" if exc else "connection closed"
            )
            self._cancel_timers()
            self.owner.peer_closed(self, self.close_reason)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.closed:
            self.owner.peer_writable(self)

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
        if self.closed or self.transport is None:
            return False
        try:
            parts = self.conn.send_piece(index, begin, data, self._now())
        except LocalProtocolError:
            return False
        if not parts:
            return False
        # Cork: a read full of requests is answered with one socket write at
        # the end of this loop turn instead of a send() per 16 KiB block
        # (writelines joins its parts anyway, so this costs no extra copy).
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
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(corked))

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            if self._corked:
                self._flush_corked()  # keep the wire order
            self.transport.write(data)
            self.bytes_written += len(data)

    def accept(self, lengths: object) -> None:
        """Receiver: serve the info-hash the remote asked for (see ``RemoteInfoHash``)."""
        self.write(self.conn.accept(lengths, self._now()))  # type: ignore[arg-type]

    def close(self, reason: str) -> None:
        """Drop the connection, recording why; the owner hears it once via ``peer_closed``."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._cancel_timers()
        self._corked.clear()
        if self.transport is not None:
            self.transport.abort()
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
