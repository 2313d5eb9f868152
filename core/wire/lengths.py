"""Piece and block arithmetic the wire protocol needs to validate requests.

In a v1 torrent only the last piece is short, and only the last block of that
piece; in a pure v2 torrent the last piece of every file may be short.
Getting that wrong either rejects honest peers or accepts a PIECE that
overruns the torrent.  The connection therefore asks a :class:`PieceSizes`
(anything with ``num_pieces`` and ``piece_size(i)``, such as the parsed info
dict) and :class:`Lengths` is the simple v1 implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["BLOCK_SIZE", "Lengths", "PieceSizes", "block_error"]

#: The block size every mainstream client requests and the largest request we
#: serve or accept (BEP 3 leaves it open; 16 KiB is the de facto limit).
BLOCK_SIZE = 1 << 14


class PieceSizes(Protocol):
    """What the connection needs to know about a torrent's pieces."""

    @property
    def num_pieces(self) -> int: ...

    def piece_size(self, index: int) -> int: ...


def block_error(
    sizes: PieceSizes, index: int, begin: int, length: int, max_length: int = BLOCK_SIZE
) -> str | None:
    """Why ``(index, begin, length)`` is not a valid block, or None when it is.

    Any span inside the piece of at most ``max_length`` bytes is accepted;
    BEP 3 does not require requests to be aligned to the block size.
    """
    num_pieces = sizes.num_pieces
    if not 0 <= index < num_pieces:
        return f"piece index {index} out of range (torrent has {num_pieces} pieces)"
    if length <= 0 or length > max_length:
        return f"block length {length} outside 1..{max_length}"
    size = sizes.piece_size(index)
    if begin < 0 or begin + length > size:
        return f"block {begin}+{length} overruns piece {index} of {size} bytes"
    return None


@dataclass(frozen=True, slots=True)
class Lengths:
    """A torrent's ``piece length`` and total payload length."""

    piece_length: int
    total_length: int

    def __post_init__(self) -> None:
        if self.piece_length <= 0:
            raise ValueError(f"piece length must be positive, got {self.piece_length}")
        if self.total_length <= 0:
            raise ValueError(f"total length must be positive, got {self.total_length}")

    @property
    def num_pieces(self) -> int:
        return -(-self.total_length // self.piece_length)

    def piece_size(self, index: int) -> int:
        """Size in bytes of piece ``index``; raises IndexError when out of range."""
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} out of range 0..{self.num_pieces - 1}")
        return min(self.piece_length, self.total_length - index * self.piece_length)

    def num_blocks(self, index: int, block_size: int = BLOCK_SIZE) -> int:
        return -(-self.piece_size(index) // block_size)

    def block_length(self, index: int, begin: int, block_size: int = BLOCK_SIZE) -> int:
        """Length of the block that starts at ``begin`` in piece ``index``."""
        size = self.piece_size(index)
        if not 0 <= begin < size:
            raise IndexError(f"offset {begin} outside piece {index} of {size} bytes")
        return min(block_size, size - begin)

    def block_error(
        self, index: int, begin: int, length: int, max_length: int = BLOCK_SIZE
    ) -> str | None:
        """See :func:`block_error`."""
        return block_error(self, index, begin, length, max_length)
