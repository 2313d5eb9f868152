"""The byte-stream seam between the peer driver and whatever carries its bytes.

The peer driver (:mod:`core.net.peer_io`) speaks the wire protocol over a
:class:`ByteStream` and is that stream's :class:`StreamConsumer`; it never
learns what the stream is.  TCP (:mod:`core.net.tcp`) is one implementation;
uTP is meant to be another, and an MSE/PE transform is meant to sit in
between as both: a ``ByteStream`` to the driver and a ``StreamConsumer`` of
the stream below.  The stack, bottom up::

    socket -> (TCP | uTP) -> (MSE) -> PeerDriver + PeerConnection -> engine

Reading keeps ``asyncio.BufferedProtocol``'s zero-copy shape on purpose: the
stream asks its consumer for room (``get_buffer``), writes received bytes
straight into it and reports how many (``buffer_updated``).  Over TCP that
means the kernel copies into the wire parser's buffer with no ``bytes``
object in between; a cipher layer decrypts that same region in place before
passing ``buffer_updated`` up; uTP copies each packet's payload once.

Writes are fire-and-forget with flow control as a flag: ``write_paused``
says the stream holds more than it wants, ``stream_writable`` says it
drained.  The consumer decides what to hold back meanwhile (the engine stops
serving requests), so no stream needs a queue of messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["Address", "ByteStream", "StreamConsumer", "WriteData"]

#: Anything a stream accepts for writing.
WriteData = bytes | bytearray | memoryview
#: ``(host, port)`` of the remote end, as the engine keys peers.
Address = tuple[str, int]


class ByteStream(Protocol):
    """A connected, ordered, reliable byte stream: what the peer driver writes to.

    Implementations call their consumer's ``stream_opened`` once connected and
    ``stream_closed`` at most once, after which no other callback comes.
    """

    @property
    def remote_address(self) -> Address:
        """The remote end; only meaningful once the stream is open."""
        ...

    @property
    def write_paused(self) -> bool:
        """True while the stream buffers more than it wants (back-pressure)."""
        ...

    def write(self, data: WriteData) -> None:
        """Send ``data`` after everything written before.  Never blocks."""
        ...

    def writelines(self, parts: Iterable[WriteData]) -> None:
        """Send ``parts`` back to back.

        The stream is done with ``parts`` when this returns (sent or copied):
        callers hand in views of piece buffers that may be reused as soon as
        control returns to the event loop.
        """
        ...

    def pause_reading(self) -> None:
        """Stop delivering received bytes until ``resume_reading`` (rate limits)."""
        ...

    def resume_reading(self) -> None: ...

    def close(self) -> None:
        """Close after sending what is buffered; the consumer hears ``stream_closed``."""
        ...

    def abort(self) -> None:
        """Close now, dropping buffered data; the consumer hears nothing more.

        Whoever aborts already knows why the stream ended, so no
        ``stream_closed`` follows (that would report the same end twice).
        """
        ...


class StreamConsumer(Protocol):
    """The callbacks a stream delivers upward (the driver, or a transform layer)."""

    def stream_opened(self, stream: ByteStream) -> None:
        """The stream is connected: ``stream`` is what to write to from now on."""
        ...

    def get_buffer(self, sizehint: int) -> memoryview:
        """Room for at least ``sizehint`` received bytes (any non-empty room if < 1)."""
        ...

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written at the start of the last ``get_buffer`` view."""
        ...

    def stream_writable(self) -> None:
        """``write_paused`` went back to False: the stream can take more."""
        ...

    def stream_closed(self, reason: str) -> None:
        """The stream ended (remote close, error); ``reason`` is for humans."""
        ...
