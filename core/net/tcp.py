"""The TCP :class:`~core.net.stream.ByteStream`: an ``asyncio.BufferedProtocol``.

``TcpStream`` is what ``loop.create_connection``/``create_server`` get as
the protocol: asyncio's callbacks become :class:`StreamConsumer` callbacks
and the consumer's writes go to the transport.  Reads stay zero-copy: the
selector loop ``recv_into``s the consumer's own buffer through
``get_buffer``/``buffer_updated``.  Everything TCP-specific lives here: the
transport's write-buffer limits (back-pressure for the upload path), EOF,
the peer's socket address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from .stream import Address, StreamConsumer, WriteData

__all__ = ["WRITE_HIGH_WATER", "TcpStream"]

#: Pause writing when this much is queued in the transport; resume below a quarter.
WRITE_HIGH_WATER = 4 << 20


class TcpStream(asyncio.BufferedProtocol):
    """One TCP connection as a byte stream for ``consumer``."""

    def __init__(self, consumer: StreamConsumer) -> None:
        self.consumer = consumer
        self.transport: asyncio.Transport | None = None
        self.remote_address: Address = ("?", 0)
        self.write_paused = False
        self._ended = False  # stream_closed sent or abort()ed: no more upward callbacks

    # --- asyncio callbacks -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.remote_address = (str(peer[0]), int(peer[1]))
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_HIGH_WATER // 4)
        self.consumer.stream_opened(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.consumer.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.consumer.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        # A peer that half-closes is gone for BitTorrent's purposes: nothing
        # it could still read from us matters, so drop our queue as well.
        self._end("peer closed the connection")
        self.abort()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(f"connection lost: {exc}" if exc else "connection closed")

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self._ended:
            self.consumer.stream_writable()

    def _end(self, reason: str) -> None:
        if not self._ended:
            self._ended = True
            self.consumer.stream_closed(reason)

    # --- ByteStream ------------------------------------------------------------

    def write(self, data: WriteData) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def writelines(self, parts: Iterable[WriteData]) -> None:
        # One join and one write, not transport.writelines: from Python 3.12
        # that keeps views of the parts queued, and ours point into piece
        # buffers the engine may reuse once the loop turn ends (see ByteStream).
        if self.transport is not None:
            self.transport.write(b"".join(parts))

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._ended = True
        if self.transport is not None:
            self.transport.abort()
