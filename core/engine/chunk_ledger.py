"""Chunk-level download state: which chunks are received, which are in flight, to whom.

Split from the picker, which keeps the piece-level policy (priorities, the
request order, verification, the unverified cap). The ledger only records
facts about chunks, so that a peer that rejects, chokes or leaves frees
exactly its own chunks, a piece that fails its hash check starts from
scratch, and a block that arrives from one peer names the other peer to
cancel.

Endgame: once every wanted chunk is received or in flight, the picker hands
out chunks already requested from another peer
(:meth:`ChunkLedger.add_duplicates`, at most one duplicate per chunk); when
either copy arrives, :meth:`core.engine.picker.Picker.on_block_received` names the
other peer so the engine can send a cancel.

Chunks are identified by id (see :mod:`core.engine.piece_geometry`). The tables are
plain attributes because the picker's hot paths (``pick`` and
``on_block_received``, once per chunk) read and write them directly; a
method call per block there is measurable. Everything else goes through the
methods here.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from bitarray.util import zeros

from .piece_geometry import CHUNK_SIZE, PieceGeometry, Request


class ChunkLedger:
    """Per-chunk state of one torrent's pieces that are not yet verified.

    ``received``: chunks whose data arrived. ``requested``: chunks in flight
    and not yet received. ``claimed``: received or requested (not free to
    request). ``recv_count`` / ``claim_count``: the same, counted per piece.
    ``owner``: the peer each requested chunk was first asked from. ``dup``:
    the second peer of a chunk duplicated in endgame. ``by_peer``: every chunk
    outstanding to a peer, owner or duplicate.
    """

    __slots__ = (
        "_geometry",
        "by_peer",
        "claim_count",
        "claimed",
        "dup",
        "owner",
        "received",
        "recv_count",
        "requested",
    )

    def __init__(self, geometry: PieceGeometry) -> None:
        self._geometry = geometry
        n = geometry.num_pieces
        nchunks = n * geometry.chunks_per_piece
        self.received = zeros(nchunks, "big")
        self.requested = zeros(nchunks, "big")
        self.claimed = zeros(nchunks, "big")
        self.recv_count = [0] * n
        self.claim_count = [0] * n
        self.owner: dict[int, Hashable] = {}
        self.dup: dict[int, Hashable] = {}
        self.by_peer: dict[Hashable, set[int]] = {}

    def received_bytes(self, p: int) -> int:
        """Bytes of piece ``p`` received so far."""
        count = self.recv_count[p]
        if not count:
            return 0
        geometry = self._geometry
        nc = geometry.num_chunks(p)
        total = count * CHUNK_SIZE
        if self.received[p * geometry.chunks_per_piece + nc - 1]:
            total -= nc * CHUNK_SIZE - geometry.piece_size(p)
        return total

    def reset(self, p: int) -> None:
        """Forget every chunk of piece ``p``: received data and requests alike."""
        s = p * self._geometry.chunks_per_piece
        e = s + self._geometry.num_chunks(p)
        for cid in self.requested.search(1, s, e):
            for table in (self.owner, self.dup):
                q = table.pop(cid, None)
                if q is not None:
                    self.by_peer[q].discard(cid)
        self.received[s:e] = 0
        self.requested[s:e] = 0
        self.claimed[s:e] = 0
        self.recv_count[p] = 0
        self.claim_count[p] = 0

    # --------------------------------------------------------------- requests

    def outstanding(self, peer: Hashable) -> list[Request]:
        """Requests currently in flight to ``peer``, in piece order."""
        geometry = self._geometry
        cpp = geometry.chunks_per_piece
        out = []
        for cid in sorted(self.by_peer.get(peer, ())):
            p, c = divmod(cid, cpp)
            begin = c * CHUNK_SIZE
            out.append(Request(p, begin, geometry.chunk_length(p, begin)))
        return out

    def add_duplicates(
        self,
        peer: Hashable,
        reqs: set[int],
        pieces: Iterable[int],
        budget: int,
        out: list[Request],
    ) -> None:
        """Endgame: also ask ``peer`` for chunks of ``pieces`` in flight to others.

        ``pieces`` come in the order to try them; at most ``budget`` requests
        are appended to ``out`` and recorded in ``reqs`` (``peer``'s set).
        A chunk that already has a duplicate, or is ``peer``'s own, is skipped.
        """
        geometry = self._geometry
        owner, dup = self.owner, self.dup
        for p in pieces:
            s = p * geometry.chunks_per_piece
            for cid in list(self.requested.search(1, s, s + geometry.num_chunks(p))):
                if cid in dup or owner.get(cid) == peer:
                    continue
                dup[cid] = peer
                reqs.add(cid)
                begin = (cid - s) * CHUNK_SIZE
                out.append(Request(p, begin, geometry.chunk_length(p, begin)))
                budget -= 1
                if not budget:
                    return

    def release_one(self, peer: Hashable, cid: int) -> bool:
        """Drop ``peer``'s request for chunk ``cid``; return whether it was outstanding."""
        reqs = self.by_peer.get(peer)
        if reqs is None or cid not in reqs:
            return False
        reqs.discard(cid)
        self._release_chunk(peer, cid)
        return True

    def release_peer(self, peer: Hashable) -> set[int] | None:
        """Drop every request outstanding to ``peer``; return their chunk ids."""
        reqs = self.by_peer.pop(peer, None)
        if reqs:
            for cid in reqs:
                self._release_chunk(peer, cid)
        return reqs

    def _release_chunk(self, peer: Hashable, cid: int) -> None:
        if self.dup.get(cid) == peer:
            del self.dup[cid]
            return
        other = self.dup.pop(cid, None)
        if other is not None:
            self.owner[cid] = other  # the duplicate becomes the only request
            return
        del self.owner[cid]
        self.requested[cid] = 0
        self.claimed[cid] = 0
        self.claim_count[cid // self._geometry.chunks_per_piece] -= 1
