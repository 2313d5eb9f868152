"""core.engine.picker with per-piece sizes: pure BitTorrent v2 (BEP 52) geometry.

In a v2 torrent each file starts on a piece boundary, so the last piece of
every file may be short, in the middle of the piece space.  The layouts here
are computed by hand from the BEP 52 rule and cross-checked against
:class:`core.formats.info.Info` for a torrent built by :func:`core.formats.create.create_torrent`.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from bitarray import bitarray
from bitarray.util import ones, zeros

from core.engine.picker import CHUNK_SIZE, Picker, Request
from core.formats.create import create_torrent
from core.types import PiecePriority

KiB = 1024
PL = 64 * KiB  # four chunks per full piece

# A v2 layout with piece length 64 KiB:
#   a: 150 KiB -> pieces 0, 1 (full) and 2 (22 KiB)
#   b:  10 KiB -> piece 3 (10 KiB, smaller than a chunk)
#   c:   empty -> no piece
#   d: 128 KiB -> pieces 4, 5 (full: no short piece)
#   e:  40 KiB + 1 -> piece 6 (40 KiB + 1: three chunks, the last of one byte)
#   f:   1 byte -> piece 7
FILES = [150 * KiB, 10 * KiB, 0, 128 * KiB, 40 * KiB + 1, 1]
SIZES = [PL, PL, 22 * KiB, 10 * KiB, PL, PL, 40 * KiB + 1, 1]


def bits(n: int, *pieces: int) -> bitarray:
    b = zeros(n)
    for p in pieces:
        b[p] = 1
    return b


def v2_sizes(file_lengths: list[int], piece_length: int) -> tuple[list[int], int]:
    """Per-piece sizes and the linear length of a v2 layout (BEP 52: files piece-aligned)."""
    sizes: list[int] = []
    end = 0
    for length in file_lengths:
        if not length:
            continue
        end = len(sizes) * piece_length + length
        full, rest = divmod(length, piece_length)
        sizes += [piece_length] * full + ([rest] if rest else [])
    return sizes, end


def v2_picker(seed: int = 0, **kwargs: object) -> Picker:
    sizes, total = v2_sizes(FILES, PL)
    return Picker(len(sizes), PL, total, rng=random.Random(seed), piece_sizes=sizes, **kwargs)  # type: ignore[arg-type]


def test_layout_helper_matches_the_hand_written_sizes() -> None:
    sizes, total = v2_sizes(FILES, PL)
    assert sizes == SIZES
    assert total == 7 * PL + 1  # the last file's only byte starts piece 7


def test_sizes_match_info_of_a_real_v2_torrent(tmp_path: Path) -> None:
    root = tmp_path / "album"
    root.mkdir()
    rng = random.Random(3)
    for name, length in zip("abcdef", FILES, strict=True):
        (root / name).write_bytes(rng.randbytes(length))
    info = create_torrent(root, version="v2", piece_length=PL).info
    assert not info.pieces
    picker = Picker(info.num_pieces, PL, info.length, piece_sizes=info.piece_size)
    assert [picker.piece_size(p) for p in range(picker.num_pieces)] == SIZES
    assert picker.wanted_remaining_bytes() == info.total_size == sum(FILES)
    assert picker.payload_length == info.total_size
    assert not picker.uniform


def test_geometry_of_short_middle_pieces() -> None:
    picker = v2_picker()
    assert picker.num_pieces == 8
    assert picker.chunks_per_piece == 4
    assert [picker.piece_size(p) for p in range(8)] == SIZES
    assert [picker.num_chunks(p) for p in range(8)] == [4, 4, 2, 1, 4, 4, 3, 1]
    assert picker.chunk_length(2, 16 * KiB) == 6 * KiB
    assert picker.chunk_length(3, 0) == 10 * KiB
    assert picker.chunk_length(6, 32 * KiB) == 8 * KiB + 1
    assert picker.wanted_remaining_bytes() == sum(SIZES)


def test_pick_everything_requests_each_piece_exactly() -> None:
    picker = v2_picker(seed=5)
    reqs = picker.pick("a", ones(8), 1000)
    covered: dict[int, list[tuple[int, int]]] = {}
    for r in reqs:
        covered.setdefault(r.piece, []).append((r.begin, r.length))
    for p, size in enumerate(SIZES):
        spans = sorted(covered[p])
        # Contiguous from 0 to the piece's size, in chunks of at most 16 KiB.
        pos = 0
        for begin, length in spans:
            assert begin == pos and 0 < length <= CHUNK_SIZE
            pos += length
        assert pos == size
    assert sum(r.length for r in reqs) == sum(FILES)
    assert sorted(picker.outstanding("a")) == sorted(reqs)


def test_short_middle_piece_completes_on_its_last_chunk() -> None:
    picker = v2_picker()
    reqs = [r for r in picker.pick("a", bits(8, 2), 10)]
    assert reqs == [Request(2, 0, CHUNK_SIZE), Request(2, CHUNK_SIZE, 6 * KiB)]
    assert not picker.on_block_received("a", 2, 0, CHUNK_SIZE).piece_complete
    assert picker.unverified_bytes == CHUNK_SIZE
    out = picker.on_block_received("a", 2, CHUNK_SIZE, 6 * KiB)
    assert out.useful and out.piece_complete
    assert picker.unverified_bytes == 22 * KiB
    assert picker.is_hashing(2)
    picker.on_piece_hashed(2, True)
    assert picker.have(2)
    assert picker.unverified_bytes == 0
    assert picker.wanted_remaining_bytes() == sum(SIZES) - 22 * KiB


def test_blocks_outside_a_short_piece_are_useless() -> None:
    picker = v2_picker()
    # Piece 2 has two chunks; a third would alias a chunk id of the next piece's
    # row in the bitsets if it were accepted.
    assert not picker.on_block_received("a", 2, 2 * CHUNK_SIZE, CHUNK_SIZE).useful
    # Right offset, full-chunk length where the piece only has 6 KiB left.
    assert not picker.on_block_received("a", 2, CHUNK_SIZE, CHUNK_SIZE).useful
    assert not picker.on_block_received("a", 3, 0, CHUNK_SIZE).useful
    assert picker.on_block_received("a", 3, 0, 10 * KiB).piece_complete
    assert not picker.on_request_rejected("a", 2, 3 * CHUNK_SIZE)
    assert picker.unverified_bytes == 10 * KiB


def test_failed_hash_of_a_short_piece_restores_the_accounting() -> None:
    picker = v2_picker()
    before = picker.wanted_remaining_bytes()
    for r in picker.pick("a", bits(8, 6), 10):
        picker.on_block_received("a", r.piece, r.begin, r.length)
    assert picker.unverified_bytes == 40 * KiB + 1
    assert picker.wanted_remaining_bytes() == before - (40 * KiB + 1)
    picker.on_piece_hashed(6, False)
    assert picker.unverified_bytes == 0
    assert picker.wanted_remaining_bytes() == before
    again = picker.pick("a", bits(8, 6), 10)
    assert [r.length for r in again] == [CHUNK_SIZE, CHUNK_SIZE, 8 * KiB + 1]


def test_priorities_and_have_count_short_sizes() -> None:
    picker = v2_picker()
    total = sum(SIZES)
    picker.set_priority(3, PiecePriority.NONE)
    assert picker.wanted_remaining_bytes() == total - 10 * KiB
    picker.set_priority(3, PiecePriority.HIGH)
    assert picker.wanted_remaining_bytes() == total
    picker.on_block_received("a", 2, 0, CHUNK_SIZE)  # partial, then had
    picker.set_have(2)
    assert picker.wanted_remaining_bytes() == total - 22 * KiB
    assert picker.unverified_bytes == 0
    picker.set_priorities(range(8), PiecePriority.NONE)
    assert picker.wanted_remaining_bytes() == 0
    assert picker.is_complete()


def test_has_block_respects_the_short_piece() -> None:
    picker = v2_picker()
    picker.on_block_received("a", 6, 32 * KiB, 8 * KiB + 1)
    assert picker.has_block(6, 32 * KiB)
    assert picker.has_block(6, 40 * KiB)  # inside the same (last) chunk
    assert not picker.has_block(6, 48 * KiB)
    assert not picker.has_block(2, 2 * CHUNK_SIZE)


def test_endgame_duplicates_short_chunks_with_their_length() -> None:
    picker = v2_picker()
    picker.set_priorities([0, 1, 4, 5, 6, 7], PiecePriority.NONE)
    only = bits(8, 2, 3)
    first = picker.pick("a", only, 10)
    assert sum(r.length for r in first) == 32 * KiB
    dup = picker.pick("b", only, 10)
    assert picker.in_endgame()
    assert sorted(dup) == sorted(first)
    out = picker.on_block_received("b", 3, 0, 10 * KiB)
    assert out.cancel == ("a",) and out.piece_complete


def test_callable_and_sequence_give_the_same_picker() -> None:
    sizes, total = v2_sizes(FILES, PL)
    a = Picker(len(sizes), PL, total, rng=random.Random(1), piece_sizes=sizes)
    b = Picker(len(sizes), PL, total, rng=random.Random(1), piece_sizes=sizes.__getitem__)
    assert a.pick("x", ones(8), 100) == b.pick("x", ones(8), 100)


def test_v1_sizes_keep_the_uniform_path() -> None:
    total = 3 * PL + 5
    sizes = [PL, PL, PL, 5]
    picker = Picker(4, PL, total, piece_sizes=sizes)
    assert picker.uniform
    assert [picker.piece_size(p) for p in range(4)] == sizes
    assert Picker(2, PL, 2 * PL, piece_sizes=[PL, PL]).uniform
    # One short piece in the middle is not v1 geometry.
    assert not Picker(3, PL, 3 * PL, piece_sizes=[PL, 1, PL]).uniform


@pytest.mark.parametrize(
    ("n", "total", "sizes", "message"),
    [
        (2, 2 * PL, [PL], "entries"),
        (2, 2 * PL, [PL, 0], "outside"),
        (2, 2 * PL, [PL + 1, PL], "outside"),
        (2, PL + 10, [PL, 11], "last piece"),
        (2, PL + 10, [5, PL], "last piece"),
    ],
)
def test_bad_piece_sizes_are_refused(n: int, total: int, sizes: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Picker(n, PL, total, piece_sizes=sizes)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_swarm_simulation_over_a_random_v2_layout(seed: int) -> None:
    """Random files, peers, rejections, disconnects and hash failures: every byte once."""
    rng = random.Random(seed)
    pl = 2 * CHUNK_SIZE if seed % 2 else 4 * CHUNK_SIZE
    files = [rng.choice([0, 1, 700, CHUNK_SIZE, pl, pl + 1, 3 * pl - 5]) for _ in range(15)]
    files.append(pl // 2 + 3)  # never end on a full piece, never all empty
    sizes, total = v2_sizes(files, pl)
    n = len(sizes)
    picker = Picker(n, pl, total, rng=random.Random(seed), piece_sizes=sizes)
    picker.set_sequential(seed > 2)
    assert picker.wanted_remaining_bytes() == sum(files)

    peer_bits = {
        f"p{i}": ones(n) if i == 0 else ones(n) & bits(n, *rng.sample(range(n), n // 2))
        for i in range(4)
    }
    for b in peer_bits.values():
        picker.peer_bitfield(b)
    queues: dict[str, list[Request]] = {name: [] for name in peer_bits}
    got: Counter[int] = Counter()  # useful bytes per piece, in the attempt that verified
    failed_once: set[int] = set()
    for _ in range(20000):
        if picker.is_complete():
            break
        name = rng.choice(sorted(peer_bits))
        queue = queues[name]
        if len(queue) < 5:
            new = picker.pick(name, peer_bits[name], 5 - len(queue))
            for r in new:
                assert 0 < r.length <= CHUNK_SIZE
                assert r.begin + r.length <= sizes[r.piece]
            queue.extend(new)
        if not queue:
            continue
        roll = rng.random()
        if roll < 0.05:
            r = queue.pop(rng.randrange(len(queue)))
            assert picker.on_request_rejected(name, r.piece, r.begin)
        elif roll < 0.07:
            picker.on_peer_gone(name)
            queue.clear()
        else:
            r = queue.pop(0)
            out = picker.on_block_received(name, r.piece, r.begin, r.length)
            if out.useful:
                got[r.piece] += r.length
            for other in out.cancel:
                assert isinstance(other, str)
                queues[other] = [q for q in queues[other] if q[:2] != r[:2]]
            if out.piece_complete:
                assert got[r.piece] == sizes[r.piece]
                ok = r.piece in failed_once or rng.random() > 0.1
                if not ok:
                    failed_once.add(r.piece)
                    got[r.piece] = 0
                picker.on_piece_hashed(r.piece, ok)
    assert picker.is_complete()
    assert picker.num_have == n
    assert [got[p] for p in range(n)] == sizes
    assert picker.wanted_remaining_bytes() == 0
    assert picker.unverified_bytes == 0
