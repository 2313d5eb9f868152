"""core.engine.picker: order rules, endgame, hash failures, unverified cap, a simulation."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest
from bitarray import bitarray
from bitarray.util import ones, zeros

from core.engine.picker import CHUNK_SIZE, BlockOutcome, Picker, Request
from core.types import PiecePriority

KiB = 1024


def bits(n: int, *pieces: int) -> bitarray:
    b = zeros(n)
    for p in pieces:
        b[p] = 1
    return b


def random_bits(rng: random.Random, n: int) -> bitarray:
    """A reproducible random bitfield (each piece with probability 1/2)."""
    b = bitarray(endian="big")
    b.frombytes(rng.randbytes((n + 7) // 8))
    del b[n:]
    return b


def distinct_pieces(reqs: list[Request]) -> list[int]:
    seen: list[int] = []
    for r in reqs:
        if r.piece not in seen:
            seen.append(r.piece)
    return seen


def one_chunk_picker(n: int, seed: int = 0) -> Picker:
    """Pieces of exactly one chunk, so piece order is request order."""
    return Picker(n, CHUNK_SIZE, n * CHUNK_SIZE, rng=random.Random(seed))


def set_availability(picker: Picker, avail: list[int]) -> None:
    for p, a in enumerate(avail):
        for _ in range(a):
            picker.peer_has(p)


# ---------------------------------------------------------------- geometry


def test_geometry_and_short_last_chunk() -> None:
    # 3 full pieces of 40 KiB (chunks 16+16+8) and a 20 KiB last piece (16+4).
    piece_length = 40 * KiB
    total = 3 * piece_length + 20 * KiB
    picker = Picker(4, piece_length, total, rng=random.Random(1))
    assert picker.chunks_per_piece == 3
    assert [picker.piece_size(p) for p in range(4)] == [40 * KiB] * 3 + [20 * KiB]
    assert [picker.num_chunks(p) for p in range(4)] == [3, 3, 3, 2]
    reqs = picker.pick("a", ones(4), 100)
    by_piece: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for r in reqs:
        by_piece[r.piece].append((r.begin, r.length))
    assert sorted(by_piece[0]) == [(0, 16 * KiB), (16 * KiB, 16 * KiB), (32 * KiB, 8 * KiB)]
    assert sorted(by_piece[3]) == [(0, 16 * KiB), (16 * KiB, 4 * KiB)]
    assert sum(r.length for r in reqs) == total
    assert picker.wanted_remaining_bytes() == total


def test_piece_smaller_than_a_chunk() -> None:
    picker = Picker(3, 1000, 2500, rng=random.Random(0))
    reqs = sorted(picker.pick("a", ones(3), 10))
    assert reqs == [Request(0, 0, 1000), Request(1, 0, 1000), Request(2, 0, 500)]


@pytest.mark.parametrize(
    ("num_pieces", "piece_length", "total"),
    [(2, 16 * KiB, 16 * KiB), (1, 0, 0), (1, 16 * KiB, -1), (0, 16 * KiB, 1)],
)
def test_inconsistent_geometry_is_rejected(num_pieces: int, piece_length: int, total: int) -> None:
    with pytest.raises(ValueError):
        Picker(num_pieces, piece_length, total)


def test_bitfield_of_wrong_length_is_rejected() -> None:
    picker = one_chunk_picker(10)
    with pytest.raises(ValueError):
        picker.pick("a", ones(16), 1)
    with pytest.raises(ValueError):
        picker.peer_bitfield(ones(9))


# -------------------------------------------------------------- order rules


def test_rarest_first() -> None:
    picker = one_chunk_picker(6, seed=3)
    avail = [5, 1, 4, 2, 6, 3]
    set_availability(picker, avail)
    reqs = picker.pick("a", ones(6), 6)
    assert distinct_pieces(reqs) == sorted(range(6), key=lambda p: avail[p])


def test_rarest_first_after_incremental_updates() -> None:
    # The first pick builds the buckets; later HAVEs move pieces one by one.
    n = 200
    picker = one_chunk_picker(n, seed=8)
    picker.pick("warmup", bits(n, 0), 1)
    rng = random.Random(8)
    avail = [0] * n
    for _ in range(1500):
        p = rng.randrange(1, n)
        picker.peer_has(p)
        avail[p] += 1
    order = distinct_pieces(picker.pick("a", ones(n), n - 1))
    assert 0 not in order  # in flight to "warmup"
    assert [avail[p] for p in order] == sorted(avail[1:])


def test_priority_beats_rarity() -> None:
    picker = one_chunk_picker(4, seed=5)
    set_availability(picker, [1, 2, 3, 9])
    picker.set_priority(3, PiecePriority.HIGH)
    picker.set_priority(2, PiecePriority.NOW)
    order = distinct_pieces(picker.pick("a", ones(4), 4))
    assert order == [2, 3, 0, 1]


def test_partial_beats_fresh_and_rarer() -> None:
    # Two chunks per piece. Peer "x" only has the commonest piece and starts it.
    picker = Picker(5, 2 * CHUNK_SIZE, 10 * CHUNK_SIZE, rng=random.Random(2))
    set_availability(picker, [1, 1, 1, 1, 4])
    first = picker.pick("x", bits(5, 4), 1)
    assert first == [Request(4, 0, CHUNK_SIZE)]
    reqs = picker.pick("seed", ones(5), 3)
    assert reqs[0] == Request(4, CHUNK_SIZE, CHUNK_SIZE)
    assert {r.piece for r in reqs[1:]} <= {0, 1, 2, 3}


def test_received_chunks_make_a_piece_partial_after_its_requests_are_released() -> None:
    picker = Picker(3, 2 * CHUNK_SIZE, 6 * CHUNK_SIZE, rng=random.Random(4))
    set_availability(picker, [1, 1, 3])
    picker.pick("x", bits(3, 2), 2)
    assert picker.on_block_received("x", 2, 0).useful
    assert picker.release_peer("x") == 1
    assert picker.pick("y", ones(3), 1) == [Request(2, CHUNK_SIZE, CHUNK_SIZE)]


def test_random_tiebreak_is_seeded() -> None:
    def order(seed: int) -> list[int]:
        picker = one_chunk_picker(64, seed=seed)
        return distinct_pieces(picker.pick("a", ones(64), 64))

    assert order(7) == order(7)
    assert order(7) != order(8)
    assert order(7) != list(range(64))
    assert sorted(order(7)) == list(range(64))


def test_tiebreak_spreads_pieces_across_peers_with_same_rarity() -> None:
    # Two pickers (two clients) with different seeds start on different pieces.
    firsts = {
        distinct_pieces(one_chunk_picker(1000, s).pick("a", ones(1000), 1))[0] for s in range(20)
    }
    assert len(firsts) > 10


def test_none_priority_is_never_requested() -> None:
    picker = one_chunk_picker(10)
    picker.set_priorities(range(10), PiecePriority.NONE)
    picker.set_priorities([3, 7], PiecePriority.NORMAL)
    reqs = picker.pick("a", ones(10), 100)
    assert sorted(r.piece for r in reqs) == [3, 7]
    assert picker.wanted_remaining_bytes() == 2 * CHUNK_SIZE
    assert not picker.is_interesting(bits(10, 0, 1, 2))
    assert picker.is_interesting(bits(10, 0, 7))
    # Everything wanted is in flight: endgame duplicates, still only wanted pieces.
    assert picker.in_endgame()
    assert sorted(r.piece for r in picker.pick("b", ones(10), 100)) == [3, 7]


def test_priority_change_takes_effect_on_next_pick() -> None:
    picker = one_chunk_picker(8, seed=1)
    set_availability(picker, [1, 2, 3, 4, 5, 6, 7, 8])
    assert picker.pick("a", ones(8), 1) == [Request(0, 0, CHUNK_SIZE)]
    picker.set_priority(6, PiecePriority.NOW)
    assert picker.pick("a", ones(8), 1) == [Request(6, 0, CHUNK_SIZE)]
    picker.set_priority(1, PiecePriority.NONE)
    assert picker.pick("a", ones(8), 1) == [Request(2, 0, CHUNK_SIZE)]
    picker.set_priority(1, PiecePriority.NORMAL)
    assert picker.pick("a", ones(8), 1) == [Request(1, 0, CHUNK_SIZE)]


def test_bulk_priority_change_over_most_pieces() -> None:
    # Large bulk changes take the rebuild path; order must still be exact.
    n = 400
    picker = one_chunk_picker(n, seed=9)
    set_availability(picker, [p % 7 for p in range(n)])
    picker.set_priorities(range(n), PiecePriority.NONE)
    picker.set_priorities(range(100, 300), PiecePriority.HIGH)
    order = distinct_pieces(picker.pick("a", ones(n), n))
    assert sorted(order) == list(range(100, 300))
    avails = [picker.availability(p) for p in order]
    assert avails == sorted(avails)


def test_availability_bookkeeping() -> None:
    n = 10
    picker = one_chunk_picker(n)
    dense = bits(n, *range(9))  # more than half: counted as a seed minus piece 9
    sparse = bits(n, 2, 9)
    picker.peer_bitfield(dense)
    picker.peer_bitfield(sparse)
    picker.peer_have_all()
    picker.peer_has(5)
    expected = [2 + (p in (2, 9)) - (p == 9) + (p == 5) for p in range(n)]
    assert [picker.availability(p) for p in range(n)] == expected
    # Rarest first honours the correction for piece 9 (only the seed and "sparse" have it).
    picker.peer_lost(dense)
    picker.peer_lost(sparse)
    picker.peer_lost_all()
    assert [picker.availability(p) for p in range(n)] == [int(p == 5) for p in range(n)]


def test_many_dense_bitfields_keep_exact_rarest_order() -> None:
    # Dense bitfields take the "seed minus missing" path and a bucket rebuild.
    n = 300
    rng = random.Random(11)
    picker = one_chunk_picker(n, seed=2)
    avail = [0] * n
    for _ in range(6):
        b = random_bits(rng, n) | random_bits(rng, n)
        picker.peer_bitfield(b)
        for p in b.search(1):
            avail[p] += 1
    assert [picker.availability(p) for p in range(n)] == avail
    order = distinct_pieces(picker.pick("a", ones(n), n))
    assert [avail[p] for p in order] == sorted(avail)


def test_peer_only_gets_pieces_it_has() -> None:
    picker = one_chunk_picker(50, seed=3)
    has = bits(50, 4, 17, 33)
    reqs = picker.pick("a", has, 10)
    assert sorted(r.piece for r in reqs) == [4, 17, 33]
    assert picker.pick("b", zeros(50), 10) == []


def test_sparse_peer_in_a_large_bucket_gets_rarest_first() -> None:
    # Few candidates in a big bucket: the sorted-candidates path.
    n = 5000
    picker = one_chunk_picker(n, seed=4)
    picker.peer_have_all()
    has = bits(n, 10, 20, 30, 4000)
    picker.peer_has(20)
    picker.peer_has(4000)
    picker.peer_has(4000)
    order = distinct_pieces(picker.pick("a", has, 3))
    assert set(order[:2]) == {10, 30}
    assert order[2] == 20


def test_choked_peer_only_gets_allowed_fast_pieces() -> None:
    picker = one_chunk_picker(20, seed=1)
    has = ones(20)
    assert picker.pick("a", has, 10, peer_choked_us=True) == []
    reqs = picker.pick("a", has, 10, peer_choked_us=True, allowed_fast=[3, 9, 25, -1])
    assert sorted(r.piece for r in reqs) == [3, 9]
    assert picker.pick("a", bits(20, 5), 10, peer_choked_us=True, allowed_fast={3, 5}) == [
        Request(5, 0, CHUNK_SIZE)
    ]


# ----------------------------------------------------- requests and blocks


def test_no_chunk_is_outstanding_to_two_peers_outside_endgame() -> None:
    picker = Picker(20, 4 * CHUNK_SIZE, 80 * CHUNK_SIZE, rng=random.Random(6))
    seen: set[tuple[int, int]] = set()
    for i in range(7):
        reqs = picker.pick(f"p{i}", ones(20), 9)
        assert len(reqs) == 9
        keys = {(r.piece, r.begin) for r in reqs}
        assert len(keys) == 9
        assert not keys & seen
        seen |= keys
    assert not picker.in_endgame()
    for i in range(7):
        assert {(r.piece, r.begin) for r in picker.outstanding(f"p{i}")} <= seen
        assert picker.outstanding_count(f"p{i}") == 9


def test_rejected_and_cancelled_requests_become_free() -> None:
    picker = one_chunk_picker(3, seed=0)
    reqs = picker.pick("a", ones(3), 3)
    assert picker.in_endgame()
    assert picker.on_request_rejected("a", reqs[0].piece, reqs[0].begin)
    assert not picker.on_request_rejected("a", reqs[0].piece, reqs[0].begin)
    assert not picker.on_request_cancelled("b", reqs[1].piece, reqs[1].begin)
    assert picker.on_request_cancelled("a", reqs[1].piece, reqs[1].begin)
    again = picker.pick("b", ones(3), 2)
    assert sorted(again) == sorted(reqs[:2])
    assert picker.outstanding("a") == [reqs[2]]


def test_peer_gone_releases_its_requests() -> None:
    picker = Picker(4, 2 * CHUNK_SIZE, 8 * CHUNK_SIZE, rng=random.Random(0))
    reqs = picker.pick("a", ones(4), 8)
    assert len(reqs) == 8
    assert picker.on_peer_gone("a") == 8
    assert picker.outstanding("a") == []
    assert sorted(picker.pick("b", ones(4), 8)) == sorted(reqs)


def test_block_outcomes_and_hostile_offsets() -> None:
    picker = Picker(2, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE, rng=random.Random(0))
    picker.pick("a", ones(2), 3)
    assert picker.on_block_received("a", 0, 1) == BlockOutcome(False)
    assert picker.on_block_received("a", 0, -CHUNK_SIZE) == BlockOutcome(False)
    assert picker.on_block_received("a", 2, 0) == BlockOutcome(False)
    assert picker.on_block_received("a", -1, 0) == BlockOutcome(False)
    assert picker.on_block_received("a", 1, CHUNK_SIZE) == BlockOutcome(False)  # beyond last
    assert picker.on_block_received("a", 1, 0, length=100) == BlockOutcome(False)
    assert picker.on_block_received("a", 0, 0, length=CHUNK_SIZE) == BlockOutcome(True)
    assert picker.on_block_received("a", 0, 0) == BlockOutcome(False)  # duplicate
    done = picker.on_block_received("a", 0, CHUNK_SIZE)
    assert done == BlockOutcome(True, (), True)
    assert picker.piece_complete_chunks(0) and picker.is_hashing(0)
    assert not picker.on_request_rejected("a", 0, 7)


def test_reject_beyond_a_piece_does_not_alias_the_next_piece() -> None:
    picker = Picker(2, 2 * CHUNK_SIZE, 4 * CHUNK_SIZE, rng=random.Random(0))
    picker.pick("a", ones(2), 4)
    assert not picker.on_request_rejected("a", 0, 2 * CHUNK_SIZE)  # chunk 0 of piece 1
    assert not picker.on_request_cancelled("a", 0, 3 * CHUNK_SIZE)
    assert picker.outstanding_count("a") == 4


def test_random_hostile_block_and_reject_coordinates_never_raise() -> None:
    rng = random.Random(1)
    picker = Picker(5, 3 * CHUNK_SIZE, 14 * CHUNK_SIZE + 5, rng=random.Random(1))
    picker.pick("a", ones(5), 20)
    values = [-(2**70), -1, 0, 1, CHUNK_SIZE, 3 * CHUNK_SIZE, 2**31, 2**70]
    for _ in range(2000):
        piece = rng.choice([*values, rng.randrange(-2, 7)])
        begin = rng.choice([*values, rng.randrange(-2, 6) * CHUNK_SIZE])
        length = rng.choice([None, *values])
        out = picker.on_block_received("x", piece, begin, length)
        assert isinstance(out, BlockOutcome)
        assert isinstance(picker.on_request_rejected("a", piece, begin), bool)
    assert picker.wanted_remaining_bytes() >= 0


def test_unrequested_block_is_kept_and_cancels_the_owner() -> None:
    picker = one_chunk_picker(2, seed=0)
    reqs = picker.pick("a", ones(2), 1)
    piece = reqs[0].piece
    outcome = picker.on_block_received("b", piece, 0)
    assert outcome.useful and outcome.cancel == ("a",) and outcome.piece_complete
    assert picker.outstanding("a") == []
    other = 1 - piece
    assert picker.on_block_received("b", other, 0).useful  # never requested, still wanted


def test_hash_failure_resets_the_piece() -> None:
    picker = Picker(3, 2 * CHUNK_SIZE, 5 * CHUNK_SIZE, rng=random.Random(0))
    total = 5 * CHUNK_SIZE
    picker.set_priority(1, PiecePriority.HIGH)
    reqs = picker.pick("a", ones(3), 2)
    assert {r.piece for r in reqs} == {1}
    results = [picker.on_block_received("a", r.piece, r.begin) for r in reqs]
    assert [o.piece_complete for o in results] == [False, True]
    assert picker.unverified_bytes == 2 * CHUNK_SIZE
    assert picker.wanted_remaining_bytes() == total - 2 * CHUNK_SIZE
    # While hashing, the piece is not requestable.
    assert all(r.piece != 1 for r in picker.pick("b", ones(3), 10))
    picker.on_piece_hashed(1, False)
    assert not picker.is_hashing(1)
    assert picker.received_chunks(1) == 0
    assert picker.unverified_bytes == 0
    assert picker.wanted_remaining_bytes() == total
    again = picker.pick("c", ones(3), 10)
    assert sorted(r for r in again if r.piece == 1) == sorted(reqs)
    for r in again:
        picker.on_block_received("c", r.piece, r.begin)
    picker.on_piece_hashed(1, True)
    assert picker.have(1) and picker.num_have == 1
    assert picker.unverified_bytes == 3 * CHUNK_SIZE  # pieces 0 and 2 still unhashed
    assert picker.wanted_remaining_bytes() == 0
    assert picker.on_block_received("c", 1, 0) == BlockOutcome(False)


def test_set_have_and_interest() -> None:
    picker = one_chunk_picker(4)
    for p in (0, 1, 2):
        picker.set_have(p)
    assert picker.have_bitfield() == bitarray("1110")
    assert not picker.is_interesting(bitarray("1110"))
    assert picker.is_interesting(bitarray("0001"))
    assert picker.wanted_remaining_bytes() == CHUNK_SIZE
    assert picker.pick("a", ones(4), 10) == [Request(3, 0, CHUNK_SIZE)]
    picker.set_have(3)
    assert picker.outstanding("a") == []
    assert picker.is_complete()


def test_mark_hashing_keeps_a_piece_out_until_hashed() -> None:
    picker = one_chunk_picker(2, seed=0)
    picker.mark_hashing(0)
    assert picker.pick("a", ones(2), 5) == [Request(1, 0, CHUNK_SIZE)]
    picker.on_piece_hashed(0, False)
    assert picker.pick("a", ones(2), 5) == [Request(0, 0, CHUNK_SIZE)]


# ------------------------------------------------------------------ endgame


def test_endgame_duplicates_and_cancels() -> None:
    picker = Picker(2, 2 * CHUNK_SIZE, 4 * CHUNK_SIZE, rng=random.Random(0))
    slow = picker.pick("slow", ones(2), 10)
    assert len(slow) == 4
    assert picker.in_endgame()
    fast = picker.pick("fast", bits(2, 0), 10)
    assert sorted(fast) == sorted(r for r in slow if r.piece == 0)
    # At most one duplicate per chunk: a third peer gets only piece 1's chunks.
    third = picker.pick("third", ones(2), 10)
    assert sorted(third) == sorted(r for r in slow if r.piece == 1)
    assert picker.pick("fourth", ones(2), 10) == []
    # A peer never gets a duplicate of its own request.
    assert picker.pick("slow", ones(2), 10) == []

    got = picker.on_block_received("fast", 0, 0)
    assert got == BlockOutcome(True, ("slow",), False)
    assert picker.on_block_received("slow", 0, 0) == BlockOutcome(False)  # late copy
    got = picker.on_block_received("slow", 0, CHUNK_SIZE)
    assert got == BlockOutcome(True, ("fast",), True)
    assert picker.outstanding("fast") == []
    assert len(picker.outstanding("slow")) == 2
    assert len(picker.outstanding("third")) == 2


def test_endgame_duplicate_takes_over_when_the_owner_leaves() -> None:
    picker = one_chunk_picker(1)
    picker.pick("a", ones(1), 1)
    assert picker.pick("b", ones(1), 1) == [Request(0, 0, CHUNK_SIZE)]
    picker.on_peer_gone("a")
    assert picker.in_endgame()
    assert picker.pick("c", ones(1), 1) == [Request(0, 0, CHUNK_SIZE)]  # new duplicate slot
    picker.on_peer_gone("b")
    picker.on_peer_gone("c")
    assert not picker.in_endgame()
    assert picker.pick("d", ones(1), 1) == [Request(0, 0, CHUNK_SIZE)]
    assert picker.on_block_received("d", 0, 0) == BlockOutcome(True, (), True)


def test_no_endgame_while_a_wanted_chunk_is_free() -> None:
    picker = one_chunk_picker(2, seed=0)
    picker.pick("a", bits(2, 0), 5)
    # Piece 1 is free though nobody connected has it: no duplicates yet.
    assert not picker.in_endgame()
    assert picker.pick("b", bits(2, 0), 5) == []


# ---------------------------------------------------------- unverified cap


def test_unverified_cap_stops_new_pieces_but_finishes_started_ones() -> None:
    picker = Picker(6, 2 * CHUNK_SIZE, 12 * CHUNK_SIZE, rng=random.Random(3))
    picker.set_max_unverified_bytes(2 * CHUNK_SIZE)
    a = picker.pick("a", ones(6), 3)  # one whole piece and half of another
    started = a[2].piece
    for r in a:
        picker.on_block_received("a", r.piece, r.begin)
    assert picker.unverified_bytes == 3 * CHUNK_SIZE
    # Over the cap: only the rest of the started piece is handed out.
    assert picker.pick("b", ones(6), 10) == [Request(started, CHUNK_SIZE - a[2].begin, CHUNK_SIZE)]
    assert picker.pick("c", ones(6), 10) == []
    picker.on_piece_hashed(a[0].piece, True)
    assert picker.unverified_bytes == CHUNK_SIZE
    fresh = picker.pick("c", ones(6), 8)
    assert len(fresh) == 8
    assert {(r.piece, r.begin) for r in fresh}.isdisjoint(
        {(r.piece, r.begin) for r in picker.outstanding("b")}
    )
    picker.set_max_unverified_bytes(None)


# --------------------------------------------------------------- reference


@pytest.mark.parametrize("seed", range(12))
def test_first_pick_matches_a_reference_model(seed: int) -> None:
    """Random operations, then the next pick must come from a best piece by brute force."""
    rng = random.Random(seed)
    n = rng.randrange(1, 60)
    cpp = rng.randrange(1, 4)
    total = (n - 1) * cpp * CHUNK_SIZE + rng.randrange(1, cpp * CHUNK_SIZE + 1)
    picker = Picker(n, cpp * CHUNK_SIZE, total, rng=random.Random(seed))
    avail = [0] * n
    prio = [int(PiecePriority.NORMAL)] * n
    peers: dict[str, bitarray] = {}
    for step in range(300):
        op = rng.randrange(8)
        if op == 0:
            b = random_bits(rng, n)
            name = f"peer{step}"
            peers[name] = b
            picker.peer_bitfield(b)
            for p in b.search(1):
                avail[p] += 1
        elif op == 1 and peers:
            name = rng.choice(sorted(peers))
            b = peers.pop(name)
            picker.peer_lost(b)
            picker.on_peer_gone(name)
            for p in b.search(1):
                avail[p] -= 1
        elif op == 2:
            p = rng.randrange(n)
            picker.peer_has(p)
            avail[p] += 1
        elif op == 3:
            p = rng.randrange(n)
            prio[p] = rng.choice(list(PiecePriority))
            picker.set_priority(p, PiecePriority(prio[p]))
        elif op in (4, 5) and peers:
            name = rng.choice(sorted(peers))
            for r in picker.pick(name, peers[name], rng.randrange(1, 4)):
                if rng.random() < 0.5:
                    out = picker.on_block_received(name, r.piece, r.begin)
                    if out.piece_complete:
                        picker.on_piece_hashed(r.piece, rng.random() < 0.7)
        elif op == 6 and peers:
            name = rng.choice(sorted(peers))
            for r in picker.outstanding(name)[:1]:
                picker.on_request_rejected(name, r.piece, r.begin)
        assert [picker.availability(p) for p in range(n)] == avail

    outstanding = {(r.piece, r.begin) for name in peers for r in picker.outstanding(name)}

    def key(p: int) -> tuple[int, int, int] | None:
        if picker.have(p) or picker.is_hashing(p) or prio[p] == PiecePriority.NONE:
            return None
        nchunks = picker.num_chunks(p)
        inflight = sum((p, c * CHUNK_SIZE) in outstanding for c in range(nchunks))
        claimed = inflight + picker.received_chunks(p)
        if claimed == nchunks:
            return None
        return (-prio[p], 0 if claimed else 1, avail[p])

    keys = {p: k for p in range(n) if (k := key(p)) is not None}
    got = picker.pick("probe", ones(n), 1)
    if not keys:
        assert got == [] or picker.in_endgame()
    else:
        assert len(got) == 1
        assert keys[got[0].piece] == min(keys.values())
        assert (got[0].piece, got[0].begin) not in outstanding


# --------------------------------------------------------------- simulation


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_swarm_simulation_downloads_every_chunk_once_outside_endgame(seed: int) -> None:
    rng = random.Random(seed)
    n, piece_length = 41, 4 * CHUNK_SIZE
    total = (n - 1) * piece_length + 3 * CHUNK_SIZE + 123
    picker = Picker(n, piece_length, total, rng=random.Random(seed))
    picker.set_priorities(range(0, 5), PiecePriority.NONE)
    picker.set_priority(20, PiecePriority.HIGH)
    wanted = set(range(5, n))

    peer_bits: dict[str, bitarray] = {}
    for i in range(6):
        b = ones(n) if i == 0 else random_bits(rng, n)
        peer_bits[f"p{i}"] = b
        picker.peer_bitfield(b)
    queues: dict[str, list[Request]] = {name: [] for name in peer_bits}
    useful: Counter[tuple[int, int]] = Counter()
    hashed: set[int] = set()
    duplicates_outside_endgame = endgame_duplicates = 0

    for _ in range(20000):
        if picker.is_complete():
            break
        name = rng.choice(sorted(peer_bits))
        b = peer_bits[name]
        queue = queues[name]
        if len(queue) < 6:
            others = {(r.piece, r.begin) for o, q in queues.items() if o != name for r in q}
            new = picker.pick(name, b, 6 - len(queue))
            for r in new:
                assert r.piece in wanted
                if (r.piece, r.begin) in others:
                    if picker.in_endgame():
                        endgame_duplicates += 1
                    else:
                        duplicates_outside_endgame += 1
            queue.extend(new)
        if not queue:
            continue
        roll = rng.random()
        if roll < 0.05:
            r = queue.pop(rng.randrange(len(queue)))
            assert picker.on_request_rejected(name, r.piece, r.begin)
        elif roll < 0.06:
            # Disconnect and come back with the same pieces.
            assert picker.on_peer_gone(name) == len(queue)
            picker.peer_lost(b)
            queue.clear()
            picker.peer_bitfield(b)
        else:
            r = queue.pop(0)
            out = picker.on_block_received(name, r.piece, r.begin, r.length)
            if out.useful:
                useful[(r.piece, r.begin)] += 1
            for other in out.cancel:
                assert isinstance(other, str)
                queues[other] = [q for q in queues[other] if q[:2] != r[:2]]
                # The engine sends a cancel; the picker already forgot that request.
                assert not picker.on_request_cancelled(other, r.piece, r.begin)
            if out.piece_complete:
                picker.on_piece_hashed(r.piece, True)
                hashed.add(r.piece)

    assert picker.is_complete()
    assert hashed == wanted
    assert duplicates_outside_endgame == 0
    assert endgame_duplicates > 0  # the endgame did happen
    expected = {(p, c * CHUNK_SIZE) for p in wanted for c in range(picker.num_chunks(p))}
    assert set(useful) == expected
    assert all(count == 1 for count in useful.values())
    assert picker.wanted_remaining_bytes() == 0
    assert picker.unverified_bytes == 0


def test_large_torrent_repeated_picks_complete() -> None:
    """Sanity, not a timing: 250-request picks over 100,000 pieces keep working."""
    n = 100_000
    picker = Picker(n, 256 * KiB, n * 256 * KiB, rng=random.Random(0))
    rng = random.Random(0)
    peers = [ones(n)] + [random_bits(rng, n) for _ in range(5)]
    for b in peers:
        picker.peer_bitfield(b)
    seen: set[tuple[int, int]] = set()
    for i in range(60):
        reqs = picker.pick(i % len(peers), peers[i % len(peers)], 250)
        assert len(reqs) == 250
        keys = {(r.piece, r.begin) for r in reqs}
        assert not keys & seen
        seen |= keys
        if i % 3 == 0:
            for r in reqs:
                out = picker.on_block_received(i % len(peers), r.piece, r.begin)
                if out.piece_complete:
                    picker.on_piece_hashed(r.piece, True)
    assert picker.num_have > 0
