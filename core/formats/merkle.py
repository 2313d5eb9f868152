"""BEP 52 merkle trees: SHA-256 over 16 KiB blocks, padded to a power of two.

A v2 file is cut into 16 KiB blocks; each block's SHA-256 is a leaf (the
last block may be short and is hashed as it is).  The leaves are padded to a
power of two with zero hashes (32 zero bytes) and combined pairwise up to
the file's ``pieces root``.  The layer whose nodes each cover one piece is the
file's *piece layer*, carried in the ``piece layers`` dict of a .torrent for
files longer than one piece.

Padding is never hashed block by block: the root of an all-zero subtree of
height ``h`` is computed once (:func:`zero_root`), so padding a one-piece
layer to a million leaves costs twenty hashes, not a million.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

__all__ = [
    "BLOCK_SIZE",
    "HASH_SIZE",
    "ZERO_HASH",
    "block_hashes",
    "blocks_per_piece",
    "file_root_and_layer",
    "merkle_root",
    "next_power_of_two",
    "piece_hash",
    "root_from_piece_layer",
    "split_hashes",
    "verify_piece",
    "zero_root",
]

#: Size of a merkle leaf block (BEP 52).
BLOCK_SIZE = 16 * 1024
#: Size of a SHA-256 digest.
HASH_SIZE = 32
#: The padding leaf: 32 zero bytes (not the hash of anything).
ZERO_HASH = bytes(HASH_SIZE)

_sha256 = hashlib.sha256


def next_power_of_two(n: int) -> int:
    """Smallest power of two >= ``n`` (1 for ``n <= 1``)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@lru_cache(maxsize=128)
def zero_root(height: int) -> bytes:
    """Root of a perfect subtree of ``2**height`` zero leaves (height 0 is the leaf)."""
    node = ZERO_HASH
    for _ in range(height):
        node = _sha256(node + node).digest()
    return node


def blocks_per_piece(piece_length: int) -> int:
    """Number of 16 KiB leaves under one piece (``piece_length`` is a power of two >= 16 KiB)."""
    if piece_length < BLOCK_SIZE or piece_length & (piece_length - 1):
        raise ValueError(f"piece length {piece_length} is not a power of two >= {BLOCK_SIZE}")
    return piece_length // BLOCK_SIZE


def split_hashes(layer: bytes) -> list[bytes]:
    """Cut concatenated 32-byte hashes into a list."""
    if len(layer) % HASH_SIZE:
        raise ValueError(f"hash layer of {len(layer)} bytes is not a multiple of {HASH_SIZE}")
    return [layer[i : i + HASH_SIZE] for i in range(0, len(layer), HASH_SIZE)]


def merkle_root(hashes: Sequence[bytes], *, width: int | None = None, pad_height: int = 0) -> bytes:
    """Root over ``hashes`` padded on the right to ``width`` nodes.

    ``width`` defaults to the next power of two of ``len(hashes)`` and must be
    a power of two no smaller than it.  Missing nodes are roots of zero
    subtrees of height ``pad_height`` (0 when ``hashes`` are leaves; when they
    are piece hashes, the height of a piece's subtree).
    """
    count = len(hashes)
    if width is None:
        width = next_power_of_two(count)
    if width < count or width & (width - 1):
        raise ValueError(f"width {width} is not a power of two >= {count}")
    height = pad_height
    if count == 0:
        return zero_root(height + width.bit_length() - 1)
    layer = list(hashes)
    while width > 1:
        if len(layer) & 1:
            layer.append(zero_root(height))
        layer = [_sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
        width >>= 1
        height += 1
    return layer[0]


def block_hashes(data: bytes | bytearray | memoryview) -> list[bytes]:
    """SHA-256 of each 16 KiB block of ``data`` (the last may be short)."""
    view = memoryview(data)
    return [_sha256(view[i : i + BLOCK_SIZE]).digest() for i in range(0, len(view), BLOCK_SIZE)]


def piece_hash(
    data: bytes | bytearray | memoryview, piece_length: int, *, file_length: int
) -> bytes:
    """The v2 hash of one piece of a file with ``file_length`` bytes.

    For a file longer than a piece this is the piece's node in the piece
    layer: the root of ``piece_length / 16 KiB`` leaves, zero-padded.  For a
    file of at most one piece it is the file's pieces root, whose tree only
    has the next power of two of the file's block count as leaves.
    """
    leaves = block_hashes(data)
    if file_length <= piece_length:
        return merkle_root(leaves)
    return merkle_root(leaves, width=blocks_per_piece(piece_length))


def verify_piece(
    data: bytes | bytearray | memoryview, expected: bytes, piece_length: int, *, file_length: int
) -> bool:
    """True when ``data`` (one whole piece of the file) hashes to ``expected``."""
    return piece_hash(data, piece_length, file_length=file_length) == expected


def root_from_piece_layer(layer: bytes, piece_length: int) -> bytes:
    """The pieces root implied by a piece layer (concatenated piece hashes)."""
    hashes = split_hashes(layer)
    height = blocks_per_piece(piece_length).bit_length() - 1
    return merkle_root(hashes, pad_height=height)


def file_root_and_layer(leaves: Sequence[bytes], piece_length: int) -> tuple[bytes, bytes]:
    """From a non-empty file's block hashes, return ``(pieces_root, piece_layer)``.

    ``piece_layer`` is ``b""`` for files of at most one piece: BEP 52 omits
    their layer because the root already is the piece hash.
    """
    if not leaves:
        raise ValueError("an empty file has no merkle tree")
    per_piece = blocks_per_piece(piece_length)
    if len(leaves) <= per_piece:
        return merkle_root(leaves), b""
    layer = b"".join(
        merkle_root(leaves[i : i + per_piece], width=per_piece)
        for i in range(0, len(leaves), per_piece)
    )
    return root_from_piece_layer(layer, piece_length), layer
