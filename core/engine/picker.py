"""Piece picking: which 16 KiB blocks to request from which peer, and when.

The picker is pure bookkeeping (no sockets, no asyncio, no clock). The engine
calls it from the event loop for every received block and every request round,
so every hot path is either O(1) or proportional to the requests it returns.

Order of preference (highest first):

1. piece priority (:class:`~core.types.PiecePriority`; ``NONE`` is never requested),
2. pieces already started (a chunk received or in flight) before fresh ones, so
   pieces complete and can be hashed and served early,
3. rarest first (fewest connected peers have it), so rare pieces spread,
4. a random tiebreak drawn from an injectable RNG (seed it in tests).

In sequential mode (:meth:`Picker.set_sequential`, for streaming a torrent
front to back) 2-4 give way to piece index order; priority still comes first.

How the order stays cheap: :class:`core.engine.piece_order.PieceOrder` keeps the
requestable pieces in buckets that are updated in O(1) per change, and
``pick`` stops walking them as soon as it has enough requests. Pieces that
cannot take a request (fully requested, complete and awaiting hash, had,
unwanted) are kept out of the buckets so the walk never wades through them.

Endgame: once every wanted chunk is received or in flight, ``pick`` hands out
chunks already requested from another peer, at most one duplicate per chunk.
Chunk-level state (received, in flight, to whom) is kept by
:class:`core.engine.chunk_ledger.ChunkLedger`; the picker holds the piece-level policy.

Unverified cap: bytes received but not yet hashed are counted; once they reach
``max_unverified_bytes``, ``pick`` only continues pieces that already hold
received data and starts no new piece. (Refusing everything would deadlock if
the budget were spent on several half-received pieces.)

Sets of pieces and chunks are big-endian ``bitarray``s (the BEP 3 bitfield
layout); chunk ids and piece sizes (v1, or pure v2 with ``piece_sizes``) come
from :class:`core.engine.piece_geometry.PieceGeometry`.
Bitfields passed in must be big-endian and exactly ``num_pieces`` long (the
wire layer strips the padding bits); anything else raises ``ValueError``.

How the engine drives it::

    picker = Picker(num_pieces, piece_length, total_length)   # v1 / hybrid
    picker = Picker(num_pieces, piece_length, total_length,
                    piece_sizes=info.piece_size)                 # pure v2
    picker.set_have(p)                          # from the completion store
    picker.set_priorities(file_pieces, prio)    # from file priorities / readers
    picker.peer_bitfield(bits) / peer_have_all() / peer_has(p)   # availability
    picker.is_interesting(peer_bits)            # -> send INTERESTED or not
    for req in picker.pick(conn, peer_bits, room, peer_choked_us=..., allowed_fast=...):
        send REQUEST(req.piece, req.begin, req.length)
    out = picker.on_block_received(conn, piece, begin, len(data))
    if out.useful: write data;  for other in out.cancel: send CANCEL to other
    if out.piece_complete: hash in a thread, then picker.on_piece_hashed(piece, ok)
    picker.on_request_rejected(conn, piece, begin)          # BEP 6 REJECT
    picker.release_peer(conn)                               # choked without fast ext.
    picker.on_peer_gone(conn); picker.peer_lost(bits) / peer_lost_all()

Why this module is long (~780 lines): its parts already live elsewhere
(``piece_order``, ``piece_geometry``, ``chunk_ledger``); what stays is one
object whose arrays (priority, have, busy, claim and receive counts) every
method reads on the per-block path, including the parole rules (``pick`` with
``exclusive``, ``isolate``), which must see the same claims as ordinary picks.
Splitting it further would put an attribute hop on every block.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

from bitarray import bitarray
from bitarray.util import any_and, zeros

from ..types import PiecePriority
from .chunk_ledger import ChunkLedger
from .piece_geometry import CHUNK_SIZE as CHUNK_SIZE
from .piece_geometry import PieceGeometry
from .piece_geometry import Request as Request
from .piece_order import OUT, REBUILD_FRACTION, PieceOrder, group_of


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    """What the engine must do after a block arrived.

    ``useful``: the data was new and should be written. ``cancel``: other peers
    that had this block outstanding (endgame duplicates): send them a cancel.
    ``piece_complete``: every chunk of the piece is now received; queue it for
    hashing, then call :meth:`Picker.on_piece_hashed`.
    """

    useful: bool
    cancel: tuple[Hashable, ...] = ()
    piece_complete: bool = False


_USELESS = BlockOutcome(False)
_USEFUL = BlockOutcome(True)


class Picker:
    """The request policy of one torrent, and its piece-level download state.

    Peers are identified by any hashable key chosen by the engine. Pieces
    start with ``priority`` (default ``NORMAL``: everything wanted); the engine
    sets per-piece priorities from file priorities and readers.

    ``num_pieces``, ``piece_length``, ``total_length`` and ``piece_sizes``
    are checked and kept by :class:`~core.engine.piece_geometry.PieceGeometry`.
    """

    def __init__(
        self,
        num_pieces: int,
        piece_length: int,
        total_length: int,
        *,
        rng: random.Random | None = None,
        priority: PiecePriority = PiecePriority.NORMAL,
        max_unverified_bytes: int | None = None,
        piece_sizes: Sequence[int] | Callable[[int], int] | None = None,
    ) -> None:
        geometry = self._geometry = PieceGeometry(
            num_pieces, piece_length, total_length, piece_sizes
        )
        # The hot paths (pick, on_block_received) read these once per chunk:
        # copies here save an attribute lookup through the geometry each time.
        n = self._n = num_pieces
        self._plen = piece_length
        self._cpp = geometry.chunks_per_piece
        self._last_size = geometry.last_size
        self._last_nchunks = geometry.last_nchunks
        self._short = geometry.short
        self._short_nc = geometry.short_nc
        payload = geometry.payload_length
        self._rng = rng if rng is not None else random.Random()

        chunks = self._chunks = ChunkLedger(geometry)
        self._received = chunks.received
        self._requested = chunks.requested  # in flight and not yet received
        self._claimed = chunks.claimed  # received | requested
        self._recv_count = chunks.recv_count
        self._claim_count = chunks.claim_count
        self._owner = chunks.owner
        self._dup = chunks.dup
        self._by_peer = chunks.by_peer

        prio = int(priority)
        self._prio = [prio] * n
        self._have = zeros(n, "big")
        self._busy = zeros(n, "big")  # complete awaiting hash, or being hashed
        self._wanted = zeros(n, "big")  # priority != NONE and not had
        if prio:
            self._wanted.setall(1)
        self._num_have = 0

        self._order = PieceOrder(n, self._rng)
        # Parole (see core.engine.blame): which peers asked for or sent chunks of each
        # unfinished piece since it was last reset, and the pieces kept whole
        # for one peer on parole.  Both stay empty-cheap: only pieces in
        # progress are in ``_touch``, and ``_reserved`` only while someone is
        # on parole.
        self._touch: dict[int, set[Hashable]] = {}
        self._reserved: dict[int, Hashable] = {}
        #: Received but unverified bytes thrown away because their piece was
        #: started over for a peer on parole (not counting failed pieces).
        self.discarded_bytes = 0
        # Wanted pieces whose every chunk is received or in flight: endgame material.
        self._saturated: dict[int, None] = {}

        self._unverified = 0
        self._max_unverified = max_unverified_bytes
        self._wanted_missing = payload if prio else 0

        if prio and n:
            self._order.fill(group_of(prio, False))

    # ------------------------------------------------------------------ geometry

    @property
    def num_pieces(self) -> int:
        return self._n

    @property
    def chunks_per_piece(self) -> int:
        """Chunks in a full-size piece (the last piece may have fewer)."""
        return self._cpp

    @property
    def uniform(self) -> bool:
        """v1 geometry: every piece is full-size except perhaps the last."""
        return self._short is None

    @property
    def payload_length(self) -> int:
        """Sum of all piece sizes (for pure v2, the piece space without its padding)."""
        return self._geometry.payload_length

    def piece_size(self, piece: int) -> int:
        return self._geometry.piece_size(piece)

    def num_chunks(self, piece: int) -> int:
        return self._geometry.num_chunks(piece)

    def chunk_length(self, piece: int, begin: int) -> int:
        return self._geometry.chunk_length(piece, begin)

    def _check_bits(self, bits: bitarray) -> None:
        if len(bits) != self._n:
            raise ValueError(f"bitfield has {len(bits)} bits, torrent has {self._n} pieces")

    def _place(self, p: int) -> None:
        """Move ``p`` to the bucket (or set) its current state calls for."""
        prio = self._prio[p]
        claimed = self._claim_count[p]
        if not claimed and self._touch:
            # Nothing received or asked for: nobody's data to keep apart.
            self._touch.pop(p, None)
            self._reserved.pop(p, None)
        saturated = False
        if self._have[p] or self._busy[p] or not prio:
            target = OUT
        elif claimed >= self._geometry.num_chunks(p):
            target = OUT
            saturated = True
        else:
            target = group_of(prio, claimed > 0)
        self._order.place(p, target)
        if saturated:
            self._saturated[p] = None
        else:
            self._saturated.pop(p, None)

    # ----------------------------------------------------------- availability

    def availability(self, piece: int) -> int:
        """How many connected peers have ``piece``."""
        return self._order.availability(piece)

    def peer_has(self, piece: int) -> None:
        """A peer announced ``piece`` (a HAVE message). O(1)."""
        self._order.add_availability(piece, 1)

    def peer_have_all(self) -> None:
        """A seed connected (HaveAll, or a full bitfield). O(1)."""
        self._order.base += 1

    def peer_lost_all(self) -> None:
        """A seed disconnected. O(1)."""
        self._order.base -= 1

    def peer_bitfield(self, bits: bitarray) -> None:
        """A peer's BITFIELD arrived (``len(bits) == num_pieces``, trimmed of padding)."""
        self._check_bits(bits)
        self._order.add_bitfield(bits, 1)

    def peer_lost(self, bits: bitarray) -> None:
        """A peer with pieces ``bits`` disconnected; undo its availability."""
        self._check_bits(bits)
        self._order.add_bitfield(bits, -1)

    # -------------------------------------------------------------- priorities

    def priority(self, piece: int) -> PiecePriority:
        return PiecePriority(self._prio[piece])

    def set_priority(self, piece: int, prio: PiecePriority) -> None:
        """Change one piece's priority; the next :meth:`pick` sees it.

        Requests already in flight for a piece set to ``NONE`` stay outstanding
        (the engine may cancel them); their blocks are still accepted.
        """
        new = int(prio)
        old = self._prio[piece]
        if old == new:
            return
        if not self._have[piece] and (old == 0) != (new == 0):
            missing = self._geometry.piece_size(piece) - self._chunks.received_bytes(piece)
            if new:
                self._wanted_missing += missing
                self._wanted[piece] = 1
            else:
                self._wanted_missing -= missing
                self._wanted[piece] = 0
        self._prio[piece] = new
        self._place(piece)

    def set_priorities(self, pieces: Iterable[int], prio: PiecePriority) -> None:
        """Bulk :meth:`set_priority` (a file's piece range, a reader window)."""
        if not isinstance(pieces, range | list | tuple):
            pieces = list(pieces)
        if len(pieces) > self._n // REBUILD_FRACTION:
            self._order.suspend()
        for p in pieces:
            self.set_priority(p, prio)

    # ------------------------------------------------------------ piece state

    def have(self, piece: int) -> bool:
        return bool(self._have[piece])

    @property
    def num_have(self) -> int:
        return self._num_have

    def have_bitfield(self) -> bitarray:
        """A copy of the verified pieces, ready to send as a BEP 3 bitfield."""
        return self._have.copy()

    def is_complete(self) -> bool:
        """Every wanted piece is verified (nothing left to download)."""
        return not self._wanted.any()

    def is_hashing(self, piece: int) -> bool:
        """Complete and waiting for (or undergoing) a hash check."""
        return bool(self._busy[piece])

    def piece_complete_chunks(self, piece: int) -> bool:
        """Every chunk of ``piece`` has been received (it is ready to hash)."""
        return self._recv_count[piece] == self._geometry.num_chunks(piece) and not self._have[piece]

    def received_chunks(self, piece: int) -> int:
        return self._recv_count[piece]

    def set_have(self, piece: int) -> None:
        """``piece`` is verified (from a hash check or the completion store).

        Any requests still outstanding for it are forgotten; blocks that arrive
        later are reported as not useful.
        """
        if self._have[piece]:
            return
        recv = self._chunks.received_bytes(piece)
        self._unverified -= recv
        if self._prio[piece]:
            self._wanted_missing -= self._geometry.piece_size(piece) - recv
        self._wanted[piece] = 0
        self._have[piece] = 1
        self._busy[piece] = 0
        self._num_have += 1
        self._chunks.reset(piece)
        self._touch.pop(piece, None)
        self._reserved.pop(piece, None)
        self._place(piece)

    def mark_hashing(self, piece: int) -> None:
        """Keep ``piece`` out of requests while the engine re-checks it."""
        if not self._have[piece]:
            self._busy[piece] = 1
            self._place(piece)

    def on_piece_hashed(self, piece: int, ok: bool) -> None:
        """The hash check of ``piece`` finished.

        On success the piece is had. On failure all its received chunks are
        discarded and it becomes requestable again from scratch.
        """
        if self._have[piece]:
            return
        self._busy[piece] = 0
        if ok:
            self.set_have(piece)
            return
        self._discard(piece, failed=True)

    def on_piece_dropped(self, piece: int) -> None:
        """A complete piece is thrown away unhashed (a banned peer sent part of it).

        Like a failed hash for the bookkeeping, but its bytes count as
        :attr:`discarded_bytes`, not as a failure.
        """
        if self._have[piece]:
            return
        self._busy[piece] = 0
        self._discard(piece)

    def _discard(self, piece: int, *, failed: bool = False) -> list[tuple[Hashable, Request]]:
        """Forget every chunk of ``piece``, received or in flight; it starts from scratch.

        Returns the requests that were in flight, so the engine can cancel them.
        """
        chunks = self._chunks
        inflight: list[tuple[Hashable, Request]] = []
        s = piece * self._cpp
        for cid in chunks.requested.search(1, s, s + self._geometry.num_chunks(piece)):
            begin = (cid - s) * CHUNK_SIZE
            req = Request(piece, begin, self._geometry.chunk_length(piece, begin))
            for table in (chunks.owner, chunks.dup):
                q = table.get(cid)
                if q is not None:
                    inflight.append((q, req))
        recv = chunks.received_bytes(piece)
        if not failed:
            self.discarded_bytes += recv
        self._unverified -= recv
        if self._prio[piece]:
            self._wanted_missing += recv
        chunks.reset(piece)
        self._touch.pop(piece, None)
        self._reserved.pop(piece, None)
        self._place(piece)
        return inflight

    # --------------------------------------------------------------- interest

    def is_interesting(self, peer_has: bitarray) -> bool:
        """The peer has a wanted piece we do not have (send INTERESTED)."""
        return any_and(peer_has, self._wanted)

    def wanted_remaining_bytes(self) -> int:
        """Bytes of wanted, unverified pieces not yet received. O(1)."""
        return self._wanted_missing

    @property
    def unverified_bytes(self) -> int:
        """Bytes received but not yet hash-checked."""
        return self._unverified

    def set_max_unverified_bytes(self, limit: int | None) -> None:
        """Cap on :attr:`unverified_bytes` (``None``: no cap); see module docs."""
        self._max_unverified = limit

    @property
    def sequential(self) -> bool:
        """Pieces of equal priority are requested in index order (streaming)."""
        return self._order.sequential

    def set_sequential(self, on: bool) -> None:
        """Switch between index order and rarest-first within each priority."""
        self._order.set_sequential(on)

    def has_block(self, piece: int, begin: int) -> bool:
        """The chunk at ``begin`` of ``piece`` was received and is awaiting its hash check.

        Responsive readers use it to return bytes before the piece is verified.
        """
        if not 0 <= piece < self._n or begin < 0 or self._have[piece]:
            return False
        c = begin // CHUNK_SIZE
        return c < self._geometry.num_chunks(piece) and bool(self._received[piece * self._cpp + c])

    def in_endgame(self) -> bool:
        """Every wanted chunk is received or in flight, and some are in flight."""
        return not self._order.count and bool(self._saturated)

    # --------------------------------------------------------------- requests

    def outstanding(self, peer: Hashable) -> list[Request]:
        """Requests currently in flight to ``peer``, in piece order."""
        return self._chunks.outstanding(peer)

    def outstanding_count(self, peer: Hashable) -> int:
        return len(self._by_peer.get(peer, ()))  # once per request round: no extra call

    def pick(
        self,
        peer: Hashable,
        peer_has: bitarray,
        max_requests: int,
        *,
        peer_choked_us: bool = False,
        allowed_fast: Iterable[int] | None = None,
        exclusive: bool = False,
    ) -> list[Request]:
        """Choose up to ``max_requests`` new requests to send to ``peer``.

        The returned requests are recorded as outstanding to ``peer``. Outside
        endgame none of them is outstanding to anyone else. If the peer chokes
        us, only pieces in its ``allowed_fast`` set (BEP 6) are considered.

        ``exclusive`` (the peer is on parole, see :mod:`core.engine.blame`): only
        pieces nobody else has asked for or sent are handed out, and they are
        kept for this peer alone (others skip them, endgame included), so a
        failure of such a piece is its own.  When nothing of that kind is
        left, a piece nobody is downloading right now is started over for it
        (its partial data dropped), so peers on parole never starve.
        """
        if max_requests <= 0:
            return []
        self._check_bits(peer_has)
        out: list[Request] = []
        reqs = self._by_peer.get(peer)
        if reqs is None:
            reqs = self._by_peer[peer] = set()
        capped = self._max_unverified is not None and self._unverified >= self._max_unverified
        fast: list[int] | None = None
        if peer_choked_us:
            if allowed_fast is None:
                return out
            fast = [p for p in allowed_fast if 0 <= p < self._n and peer_has[p]]
            if not fast:
                return out
            cands = self._order.ordered(fast)
            self._take_from(peer, reqs, cands, max_requests, capped, out, exclusive)
        elif self._order.count and any_and(peer_has, self._order.requestable):
            need = max_requests // self._cpp + 1
            walk = self._order.walk(peer_has, need, started_only=capped)
            self._take_from(peer, reqs, walk, max_requests, capped, out, exclusive)
            if exclusive and len(reqs) < self._cpp and len(out) < max_requests:
                # Less than a piece in flight: keep a suspect's pipeline full.
                self._reclaim(peer, reqs, peer_has, max_requests - len(out), out)
        if exclusive:
            return out
        if len(out) < max_requests and not self._order.count and self._saturated:
            self._pick_endgame(peer, reqs, peer_has, fast, max_requests - len(out), out)
        return out

    def _may_join(self, peer: Hashable, p: int, exclusive: bool) -> bool:
        """Whether ``peer`` may ask for (or send) chunks of ``p`` under the parole rules."""
        owner = self._reserved.get(p)
        if owner is not None:
            return owner is peer
        if not exclusive:
            return True
        touched = self._touch.get(p)
        return touched is None or all(q is peer for q in touched)

    def _reclaim(
        self, peer: Hashable, reqs: set[int], peer_has: bitarray, budget: int, out: list[Request]
    ) -> None:
        """A peer on parole found no piece of its own: start one nobody is downloading over.

        Only pieces with nothing in flight qualify (their data came from
        peers that left, choked us or are on parole elsewhere), so no
        other peer's work in progress is thrown away.
        """
        while budget > 0 and len(reqs) < self._cpp:
            walk = self._order.walk(peer_has, 1, started_only=False)
            reserved, claims, recv = self._reserved, self._claim_count, self._recv_count
            found = next((p for p in walk if p not in reserved and claims[p] == recv[p]), None)
            close = getattr(walk, "close", None)
            if close is not None:
                close()  # finish the bucket walk before its buckets change
            if found is None:
                return
            self._discard(found)
            budget -= self._take(peer, reqs, found, budget, out)
            self._reserved[found] = peer
            self._place(found)

    def _take(self, peer: Hashable, reqs: set[int], p: int, budget: int, out: list[Request]) -> int:
        """Request up to ``budget`` free chunks of ``p`` from ``peer``; return how many.

        Does not move ``p`` between buckets: callers do that once they are done
        iterating (see :meth:`_place`).
        """
        s = p * self._cpp
        short = self._short
        if short is None:
            nc = self._cpp if p < self._n - 1 else self._last_nchunks
            size = self._plen if p < self._n - 1 else self._last_size
        else:
            nc = self._short_nc.get(p, self._cpp)
            size = short.get(p, self._plen)
        owner = self._owner
        touched = self._touch.get(p)
        if touched is None:
            self._touch[p] = {peer}
        else:
            touched.add(peer)
        if not self._claim_count[p]:
            k = min(nc, budget)
            self._requested[s : s + k] = 1
            self._claimed[s : s + k] = 1
            free: Iterable[int] = range(s, s + k)
        else:
            free = list(islice(self._claimed.search(0, s, s + nc), budget))
            k = len(free)
            requested = self._requested
            claimed = self._claimed
            for cid in free:
                requested[cid] = 1
                claimed[cid] = 1
        for cid in free:
            owner[cid] = peer
            begin = (cid - s) * CHUNK_SIZE
            out.append(Request(p, begin, min(CHUNK_SIZE, size - begin)))
        reqs.update(free)
        self._claim_count[p] += k
        return k

    def _take_from(
        self,
        peer: Hashable,
        reqs: set[int],
        pieces: Iterable[int],
        budget: int,
        capped: bool,
        out: list[Request],
        exclusive: bool = False,
    ) -> int:
        """Take chunks from ``pieces`` in order until ``budget`` is spent; return what is left.

        Bucket moves are deferred until the iteration is over, so a walk over
        the live buckets is never disturbed.  Pieces kept for a peer on
        parole are skipped by everyone else; with ``exclusive``, only pieces
        this peer alone has touched are taken, and kept for it.
        """
        touched: list[int] = []
        recv_count = self._recv_count
        parole = exclusive or bool(self._reserved)
        for p in pieces:
            if capped and not recv_count[p]:
                continue
            if parole and not self._may_join(peer, p, exclusive):
                continue
            budget -= self._take(peer, reqs, p, budget, out)
            touched.append(p)
            if exclusive:
                self._reserved[p] = peer
            if not budget:
                break
        close = getattr(pieces, "close", None)
        if close is not None:
            close()  # finish a bucket walk before its buckets change
        for p in touched:
            self._place(p)
        return budget

    def _pick_endgame(
        self,
        peer: Hashable,
        reqs: set[int],
        peer_has: bitarray,
        fast: list[int] | None,
        budget: int,
        out: list[Request],
    ) -> None:
        if not self._dup and len(reqs) == len(self._owner):
            # Every request in flight is already this peer's (one peer left,
            # the usual tail of a download): nothing to duplicate.  Without
            # this check each call scans every outstanding chunk, once per
            # received block, quadratic in the pipeline depth.
            return
        allowed = None if fast is None else set(fast)
        reserved = self._reserved
        pieces = [
            p
            for p in self._saturated
            if peer_has[p] and (allowed is None or p in allowed) and p not in reserved
        ]
        prio, rank = self._prio, self._order.rank
        pieces.sort(key=lambda p: (-prio[p], rank[p]))
        first = len(out)
        self._chunks.add_duplicates(peer, reqs, pieces, budget, out)
        for req in out[first:]:
            self._touch.setdefault(req.piece, set()).add(peer)

    def on_block_received(
        self,
        peer: Hashable,
        piece: int,
        begin: int,
        length: int | None = None,
        *,
        exclusive: bool = False,
    ) -> BlockOutcome:
        """A PIECE message arrived. Returns whether to keep it and whom to cancel.

        Blocks at offsets that are not a chunk of this torrent, or of the wrong
        length, are not useful (the engine decides whether that is hostile).
        Unrequested blocks we still need are accepted, except where they would
        mix a peer on parole (``exclusive``) with others (see :meth:`pick`).
        """
        if not 0 <= piece < self._n or begin < 0 or begin % CHUNK_SIZE:
            return _USELESS
        if (exclusive or self._reserved) and not self._may_join(peer, piece, exclusive):
            return _USELESS
        short = self._short
        if short is None:
            last = piece == self._n - 1
            nc = self._last_nchunks if last else self._cpp
            size = self._last_size if last else self._plen
        else:
            nc = self._short_nc.get(piece, self._cpp)
            size = short.get(piece, self._plen)
        c = begin // CHUNK_SIZE
        if c >= nc:
            return _USELESS
        clen = min(CHUNK_SIZE, size - begin)
        if length is not None and length != clen:
            return _USELESS
        cid = piece * self._cpp + c
        cancel: tuple[Hashable, ...] = ()
        moved = False
        if self._requested[cid]:
            q = self._owner.pop(cid)
            self._by_peer[q].discard(cid)
            if q != peer:
                cancel = (q,)
            if self._dup:
                q = self._dup.pop(cid, None)
                if q is not None:
                    self._by_peer[q].discard(cid)
                    if q != peer:
                        cancel = (*cancel, q)
            self._requested[cid] = 0
        elif self._have[piece] or self._received[cid]:
            return _USELESS
        else:
            self._claimed[cid] = 1  # unrequested but wanted: keep it
            self._claim_count[piece] += 1
            self._touch.setdefault(piece, set()).add(peer)
            if exclusive:
                self._reserved[piece] = peer
            moved = True
        self._received[cid] = 1
        count = self._recv_count[piece] = self._recv_count[piece] + 1
        self._unverified += clen
        if self._prio[piece]:
            self._wanted_missing -= clen
        complete = count == nc
        if complete:
            self._busy[piece] = 1
            moved = True
        if moved:
            self._place(piece)
        if not cancel and not complete:
            return _USEFUL
        return BlockOutcome(True, cancel, complete)

    def on_request_rejected(self, peer: Hashable, piece: int, begin: int) -> bool:
        """The peer rejected a request (BEP 6); the chunk is free again."""
        return self._release_one(peer, piece, begin)

    def on_request_cancelled(self, peer: Hashable, piece: int, begin: int) -> bool:
        """We cancelled a request to ``peer``; the chunk is free again.

        Returns whether the request was outstanding to ``peer``.
        """
        return self._release_one(peer, piece, begin)

    def _release_one(self, peer: Hashable, piece: int, begin: int) -> bool:
        if not 0 <= piece < self._n or begin < 0 or begin % CHUNK_SIZE:
            return False
        c = begin // CHUNK_SIZE
        if c >= self._geometry.num_chunks(piece):
            return False  # would alias a chunk of the next piece
        if not self._chunks.release_one(peer, piece * self._cpp + c):
            return False
        self._place(piece)
        return True

    def release_peer(self, peer: Hashable) -> int:
        """Forget every request outstanding to ``peer``; return how many.

        Call it when the peer disconnects, and when it chokes us without the
        fast extension (BEP 3: a choke silently drops pending requests).
        """
        reqs = self._chunks.release_peer(peer)
        if not reqs:
            return 0
        cpp = self._cpp
        for p in {cid // cpp for cid in reqs}:
            self._place(p)
        return len(reqs)

    def on_peer_gone(self, peer: Hashable) -> int:
        """The peer disconnected: release its requests (see :meth:`release_peer`).

        Pieces kept whole for it while it was on parole lose the partial data
        it sent: nobody else may finish a suspect's piece, so it starts over.
        Its availability is undone separately with :meth:`peer_lost` or
        :meth:`peer_lost_all`, since only the engine knows its bitfield.
        """
        released = self.release_peer(peer)
        if self._reserved:
            for p in [p for p, q in self._reserved.items() if q is peer]:
                if self._busy[p] or self._have[p]:
                    continue
                self._discard(p)
        return released

    # ----------------------------------------------------------------- parole

    def isolate(self, peer: Hashable) -> list[tuple[Hashable, Request]]:
        """``peer`` went on parole: keep its unfinished pieces apart from everyone else's.

        Pieces only it has touched are kept for it (see :meth:`pick`).
        Pieces it shares with others are started over: once the peer is a
        suspect, a failure of such a piece could not be pinned on anyone, and
        an honest co-sender would lose trust with it.  Pieces complete and
        awaiting their hash are left to be judged.  Returns the requests that
        were in flight in the dropped pieces, for the engine to cancel.
        """
        cancels: list[tuple[Hashable, Request]] = []
        for p, touched in list(self._touch.items()):
            if peer not in touched or self._busy[p] or self._have[p]:
                continue
            if all(q is peer for q in touched):
                self._reserved[p] = peer
            else:
                cancels += self._discard(p)
        return cancels

    def on_parole(self, piece: int) -> Hashable | None:
        """The peer on parole that ``piece`` is kept for, if any."""
        return self._reserved.get(piece)
