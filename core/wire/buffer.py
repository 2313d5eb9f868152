"""The receive buffer a peer connection parses from.

It is shaped for ``asyncio.BufferedProtocol``: ``get_buffer`` hands the
socket a view of free space, so received bytes land in our buffer without an
intermediate ``bytes`` object, and each PIECE payload is then copied exactly
once, into the event.  ``receive_data`` serves callers that already hold bytes.
"""

from __future__ import annotations

from ..errors import LocalProtocolError

__all__ = ["DEFAULT_BUFFER_SIZE", "MIN_READ_SIZE", "ReceiveBuffer"]

#: Initial size; grows for big frames, shrinks back once drained.
DEFAULT_BUFFER_SIZE = 128 << 10
#: ``get_buffer`` always offers at least this much room.
MIN_READ_SIZE = 32 << 10


class ReceiveBuffer:
    """A bytearray with a consumed-prefix offset: ``_buf[_start:_end]`` is unparsed."""

    def __init__(self, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        self._buffer_size = buffer_size
        self._buf = bytearray(buffer_size)
        self._mv = memoryview(self._buf)
        self._start = 0
        self._end = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed."""
        return self._end - self._start

    def receive_data(self, data: bytes | bytearray | memoryview, now: float | None = None) -> None:
        """Append received bytes (copied once into our buffer)."""
        n = len(data)
        if n:
            self._reserve(n)
            self._mv[self._end : self._end + n] = data
            self._end += n
            self._touch(now)

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """``asyncio.BufferedProtocol.get_buffer``: room the socket writes into directly."""
        self._reserve(max(sizehint, MIN_READ_SIZE))
        return self._mv[self._end :]

    def buffer_updated(self, nbytes: int, now: float | None = None) -> None:
        """``BufferedProtocol.buffer_updated``: ``nbytes`` were written into get_buffer()."""
        if not 0 <= nbytes <= len(self._buf) - self._end:
            raise LocalProtocolError(f"buffer_updated({nbytes}) exceeds the buffer handed out")
        if nbytes:
            self._end += nbytes
            self._touch(now)

    def _touch(self, now: float | None) -> None:
        """Called when bytes arrive (the connection tracks idleness here)."""

    def _reserve(self, n: int) -> None:
        """Make room for ``n`` more bytes at the end, compacting or growing.

        The buffer is never resized in place (a view handed out by
        get_buffer may still be alive): compaction moves bytes within it and
        growth allocates a new one.
        """
        start, end = self._start, self._end
        cap = len(self._buf)
        if start == end:
            self._start = self._end = start = end = 0
            if cap > 2 * self._buffer_size and n <= self._buffer_size:
                self._buf = bytearray(self._buffer_size)
                self._mv = memoryview(self._buf)
                return
        if cap - end >= n:
            return
        used = end - start
        if used + n <= cap and start:
            self._mv[0:used] = self._mv[start:end]
        else:
            new = bytearray(max(used + n, 2 * cap))
            new[0:used] = self._mv[start:end]
            self._buf = new
            self._mv = memoryview(new)
        self._start, self._end = 0, used
