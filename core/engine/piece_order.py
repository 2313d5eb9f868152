"""The order in which requestable pieces are tried, kept up to date in O(1).

Used by :mod:`core.engine.picker`, which owns the chunk bookkeeping; this module only
answers "in which order should a peer's pieces be tried".

Every requestable piece sits in exactly one bucket keyed by ``(group,
availability)``. The group encodes priority and started/fresh (see
:func:`group_of`); lower groups come first, then lower availability (rarest
first). A bucket is an unordered list with an index per piece, kept in a random
order, so moving a piece when its availability or state changes is a
swap-and-pop plus an append: O(1), never a re-sort. Each bucket also holds its
pieces as a bitset, so whether (and how many of) a bucket's pieces a peer has
is answered at C speed, and a sparse peer does not make the walk wade through
pieces it lacks.

Availability is ``base + delta[piece]``: a seed only bumps ``base``, which
leaves the order unchanged. When a bulk change would move a large share of the
pieces (a dense bitfield, a file's priority), bucket upkeep is suspended and
the buckets are rebuilt in one pass before the next walk.

Sequential mode (streaming a whole torrent in order) replaces "rarest, then
random" by "lowest index" inside each priority: the walk then reads one
bitset per group (kept only while the mode is on, so the default order pays
nothing for it) and yields the peer's pieces in index order. Priorities still
come first, so readers and first/last pieces keep their precedence.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Iterator

from bitarray import bitarray
from bitarray.util import any_and, count_and, zeros

from ..types import PiecePriority

_TOP = int(PiecePriority.NOW)
NUM_GROUPS = _TOP * 2
OUT = -1
"""Group of a piece that is in no bucket (not requestable)."""

REBUILD_FRACTION = 8
"""A bulk change touching more than n / REBUILD_FRACTION pieces rebuilds instead."""

_Bucket = tuple[list[int], bitarray]


def group_of(priority: int, started: bool) -> int:
    """Bucket group of a requestable piece: priority first, then started before fresh."""
    return (_TOP - priority) * 2 + (0 if started else 1)


def is_fresh_group(group: int) -> bool:
    return bool(group & 1)


class PieceOrder:
    """Requestable pieces ordered by (group, availability, random rank)."""

    def __init__(self, num_pieces: int, rng: random.Random) -> None:
        n = num_pieces
        self._n = n
        perm = list(range(n))
        rng.shuffle(perm)
        rank = [0] * n
        for i, p in enumerate(perm):
            rank[p] = i
        self._perm = perm
        self.rank = rank
        """Fixed random rank per piece: the tiebreak."""
        self.base = 0
        self.delta = [0] * n
        self.group = [OUT] * n
        self._slot = [0] * n
        self._buckets: list[dict[int, _Bucket]] = [{} for _ in range(NUM_GROUPS)]
        self._keys: list[list[int]] = [[] for _ in range(NUM_GROUPS)]
        self.requestable = zeros(n, "big")
        """Bitset of the pieces in some bucket (do not modify)."""
        self.count = 0
        self._dirty = False
        # Sequential mode: one bitset per group, or None when the mode is off.
        self._gbits: list[bitarray] | None = None

    @property
    def sequential(self) -> bool:
        return self._gbits is not None

    def set_sequential(self, on: bool) -> None:
        """Order pieces of equal priority by index instead of rarity (O(n) to switch)."""
        if on == self.sequential:
            return
        if not on:
            self._gbits = None
            return
        gbits = [zeros(self._n, "big") for _ in range(NUM_GROUPS)]
        for p, g in enumerate(self.group):
            if g >= 0:
                gbits[g][p] = 1
        self._gbits = gbits

    def fill(self, group: int) -> None:
        """Put every piece in ``group`` (a fresh torrent), in O(n) without bucket moves."""
        self.group = [group] * self._n
        self.requestable.setall(1)
        if self._gbits is not None:
            for bits in self._gbits:
                bits.setall(0)
            self._gbits[group].setall(1)
        self.count = self._n
        self._dirty = True

    def suspend(self) -> None:
        """Stop bucket upkeep until the next walk, which rebuilds the buckets."""
        self._dirty = True

    # ---------------------------------------------------------------- moves

    def place(self, p: int, g: int) -> None:
        """Move piece ``p`` to group ``g`` (:data:`OUT`: not requestable)."""
        cur = self.group[p]
        if cur == g:
            return
        gbits = self._gbits
        if gbits is not None:
            if cur >= 0:
                gbits[cur][p] = 0
            if g >= 0:
                gbits[g][p] = 1
        if cur >= 0:
            if not self._dirty:
                self._remove(p, cur)
            self.requestable[p] = 0
            self.count -= 1
        if g >= 0:
            if self._dirty:
                self.group[p] = g
            else:
                self._insert(p, g)
            self.requestable[p] = 1
            self.count += 1
        else:
            self.group[p] = OUT

    def add_availability(self, p: int, k: int) -> None:
        g = self.group[p]
        if g >= 0 and not self._dirty:
            self._remove(p, g)
            self.delta[p] += k
            self._insert(p, g)
        else:
            self.delta[p] += k

    def add_bitfield(self, bits: bitarray, k: int) -> None:
        """Add ``k`` to the availability of every piece set in ``bits`` (length n)."""
        count = bits.count()
        lacking = 2 * count > self._n
        moves = self._n - count if lacking else count
        if moves > self._n // REBUILD_FRACTION:
            self.suspend()  # one O(n) rebuild beats this many bucket moves
        if lacking:
            # Cheaper to count the peer as a seed and correct the pieces it lacks.
            self.base += k
            for p in bits.search(0):
                self.add_availability(p, -k)
        else:
            for p in bits.search(1):
                self.add_availability(p, k)

    def availability(self, p: int) -> int:
        return self.base + self.delta[p]

    def _insert(self, p: int, g: int) -> None:
        d = self.delta[p]
        bucket = self._buckets[g].get(d)
        if bucket is None:
            bucket = self._buckets[g][d] = ([], zeros(self._n, "big"))
            bisect.insort(self._keys[g], d)
        lst, bits = bucket
        bits[p] = 1
        i = len(lst)
        lst.append(p)
        # Land at a pseudo-random position so arrival order does not become
        # download order (which would make every client fetch the same pieces).
        j = self.rank[p] % (i + 1)
        if j != i:
            q = lst[j]
            lst[j] = p
            lst[i] = q
            self._slot[q] = i
        self._slot[p] = j
        self.group[p] = g

    def _remove(self, p: int, g: int) -> None:
        d = self.delta[p]
        lst, bits = self._buckets[g][d]
        bits[p] = 0
        i = self._slot[p]
        last = lst.pop()
        if last != p:
            lst[i] = last
            self._slot[last] = i
        elif not lst:
            del self._buckets[g][d]
            self._keys[g].remove(d)

    def _rebuild(self) -> None:
        """Refill every bucket from ``group`` and ``delta`` in one O(n) pass."""
        n = self._n
        buckets: list[dict[int, _Bucket]] = [{} for _ in range(NUM_GROUPS)]
        group, delta, slot = self.group, self.delta, self._slot
        for p in self._perm:  # random order: the tiebreak
            g = group[p]
            if g < 0:
                continue
            d = delta[p]
            bucket = buckets[g].get(d)
            if bucket is None:
                bucket = buckets[g][d] = ([], zeros(n, "big"))
            lst = bucket[0]
            slot[p] = len(lst)
            lst.append(p)
        for table in buckets:
            for lst, bits in table.values():
                for p in lst:
                    bits[p] = 1
        self._buckets = buckets
        self._keys = [sorted(table) for table in buckets]
        self._dirty = False

    # ---------------------------------------------------------------- order

    def walk(self, peer_has: bitarray, need: int, *, started_only: bool) -> Iterator[int]:
        """Yield the requestable pieces in ``peer_has``, best first.

        ``need`` estimates how many pieces the caller will take; it only picks
        the cheaper way through each bucket. ``started_only`` skips the fresh
        groups. The caller must not move pieces until it is done iterating.

        A bucket where the peer's pieces are dense is walked in its random
        order (about need * size / count steps); one where they are sparse is
        cut down to the peer's pieces and sorted by random rank (a few steps per
        candidate). Both give a random tiebreak.
        """
        if self._gbits is not None:
            yield from self._walk_sequential(peer_has, started_only)
            return
        if self._dirty:
            self._rebuild()
        rank = self.rank
        for g in range(NUM_GROUPS):
            if started_only and g & 1:
                continue
            table = self._buckets[g]
            if not table:
                continue
            for d in self._keys[g]:
                lst, bits = table[d]
                if not any_and(peer_has, bits):
                    continue
                size = len(lst)
                if size > 64:
                    count = count_and(peer_has, bits)
                    if need * size > 4 * count * count:
                        yield from sorted((peer_has & bits).search(1), key=rank.__getitem__)
                        continue
                for p in lst:
                    if peer_has[p]:
                        yield p

    def _walk_sequential(self, peer_has: bitarray, started_only: bool) -> Iterator[int]:
        """Sequential mode: per priority, the peer's pieces in index order.

        Started and fresh pieces of one priority are merged: in-order
        delivery matters more than finishing started pieces first (which are
        nearly always the lowest-indexed anyway).  Each step copies the group
        bitsets, so moves made after the walk cannot disturb it.
        """
        gbits = self._gbits
        assert gbits is not None
        for g in range(0, NUM_GROUPS, 2):
            cand = gbits[g] & peer_has
            if not started_only:
                cand |= gbits[g + 1] & peer_has
            if cand.any():
                yield from cand.search(1)

    def ordered(self, pieces: Iterable[int]) -> list[int]:
        """The requestable ones among ``pieces``, best first (for small sets)."""
        group, delta, rank = self.group, self.delta, self.rank
        if self._gbits is not None:
            return sorted({p for p in pieces if group[p] >= 0}, key=lambda p: (group[p] >> 1, p))
        return sorted(
            {p for p in pieces if group[p] >= 0},
            key=lambda p: (group[p], delta[p], rank[p]),
        )
