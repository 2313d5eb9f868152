"""Piece and chunk geometry of one torrent: how long each piece is, in how many chunks.

Split from the picker because it is fixed at construction and answers a
question of its own: the picker decides which chunks to request, this only
knows where chunks are and how long they are.

In a v1 (or hybrid) torrent every piece is ``piece_length`` long except the
last. In a pure v2 torrent (BEP 52) every file starts on a piece boundary, so
the last piece of each file may be short, anywhere in the piece space; pass
``piece_sizes`` for those. Only the short pieces are kept (a dict, one entry
per file), and a torrent whose sizes turn out to be v1 geometry keeps the v1
path, where a piece's size is one comparison.

Chunk ``c`` of piece ``p`` has id ``p * chunks_per_piece + c`` (a short piece
leaves the ids of its missing chunks unused). The attributes are read-only
after construction; the picker copies the ones its hot paths need into its
own attributes, so a split here costs no lookups per block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

CHUNK_SIZE = 16 * 1024
"""Request size used by every client in practice (BEP 3 recommends 2^14)."""


class Request(NamedTuple):
    """One block request: ``length`` bytes at ``begin`` within ``piece``."""

    piece: int
    begin: int
    length: int


class PieceGeometry:
    """Sizes and chunk counts of ``num_pieces`` pieces covering ``total_length`` bytes.

    ``total_length`` is the length of the linear piece space (for pure v2,
    up to the end of the last file, virtual padding included). ``piece_sizes``
    gives each piece's size when pieces other than the last may be short (a
    sequence of ``num_pieces`` sizes or a function of the index); every size
    must be in ``1..piece_length`` and the last piece no longer than the
    space left for it. Without it, v1 geometry. Bad geometry raises ``ValueError``.
    """

    __slots__ = (
        "chunks_per_piece",
        "last_nchunks",
        "last_size",
        "num_pieces",
        "payload_length",
        "piece_length",
        "short",
        "short_nc",
        "total_length",
    )

    def __init__(
        self,
        num_pieces: int,
        piece_length: int,
        total_length: int,
        piece_sizes: Sequence[int] | Callable[[int], int] | None = None,
    ) -> None:
        if piece_length <= 0:
            raise ValueError(f"piece_length must be positive, got {piece_length}")
        if total_length < 0:
            raise ValueError(f"total_length must not be negative, got {total_length}")
        if num_pieces != -(-total_length // piece_length):
            raise ValueError(
                f"{num_pieces} pieces do not cover {total_length} bytes in pieces of {piece_length}"
            )
        n = num_pieces
        self.num_pieces = n
        self.piece_length = piece_length
        self.total_length = total_length
        # Chunks in a full-size piece (the last piece may have fewer).
        self.chunks_per_piece = -(-piece_length // CHUNK_SIZE)
        self.last_size = total_length - (n - 1) * piece_length if n else 0
        self.last_nchunks = -(-self.last_size // CHUNK_SIZE)
        # Pure v2 geometry: size and chunk count of every short piece (None: v1).
        self.short: dict[int, int] | None = None
        self.short_nc: dict[int, int] = {}
        payload = total_length
        if piece_sizes is not None and n:
            short = _short_pieces(n, piece_length, self.last_size, piece_sizes)
            v1_like = {n - 1: self.last_size} if self.last_size < piece_length else {}
            if short != v1_like:
                self.short = short
                self.short_nc = {p: -(-size // CHUNK_SIZE) for p, size in short.items()}
                self.last_size = short.get(n - 1, piece_length)
                self.last_nchunks = -(-self.last_size // CHUNK_SIZE)
                payload = n * piece_length - sum(piece_length - size for size in short.values())
        # Sum of all piece sizes (for pure v2, the piece space without its padding).
        self.payload_length = payload

    @property
    def uniform(self) -> bool:
        """v1 geometry: every piece is full-size except perhaps the last."""
        return self.short is None

    def piece_size(self, piece: int) -> int:
        short = self.short
        if short is None:
            return self.piece_length if piece < self.num_pieces - 1 else self.last_size
        return short.get(piece, self.piece_length)

    def num_chunks(self, piece: int) -> int:
        if self.short is None:
            return self.chunks_per_piece if piece < self.num_pieces - 1 else self.last_nchunks
        return self.short_nc.get(piece, self.chunks_per_piece)

    def chunk_length(self, piece: int, begin: int) -> int:
        return min(CHUNK_SIZE, self.piece_size(piece) - begin)


def _short_pieces(
    n: int, piece_length: int, last_room: int, sizes: Sequence[int] | Callable[[int], int]
) -> dict[int, int]:
    """``{piece: size}`` of the pieces shorter than ``piece_length``, sizes checked."""
    if callable(sizes):
        get = sizes
    else:
        if len(sizes) != n:
            raise ValueError(f"piece_sizes has {len(sizes)} entries, torrent has {n} pieces")
        get = sizes.__getitem__
    short: dict[int, int] = {}
    for p in range(n):
        size = get(p)
        if not 0 < size <= piece_length:
            raise ValueError(f"piece {p} has size {size}, outside 1..{piece_length}")
        if size != piece_length:
            short[p] = size
    if short.get(n - 1, piece_length) > last_room:
        raise ValueError(f"the last piece cannot hold {short.get(n - 1, piece_length)} bytes")
    return short
