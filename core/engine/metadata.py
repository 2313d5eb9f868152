"""Fetching and serving the info dict over ``ut_metadata`` (BEP 9), sans-IO.

A magnet link gives only the info-hash; the info dict itself comes from
peers in 16 KiB pieces.  :class:`MetadataFetcher` decides which piece to ask
which peer for, assembles the answers and checks the whole against the
info-hash; :class:`MetadataServer` answers other peers' requests once we have
the info dict.  Neither touches sockets or clocks: the engine passes ``now``
and drives them from its extended-message handler and one timer.

Engine integration (keys are whatever identifies a peer for blame; use the
same key as hash-failure bans, ``Client.blame_key(ip, peer_id)``, so a liar
that reconnects stays distrusted while loopback test peers stay distinct)::

    fetcher = MetadataFetcher(info_hash, now=now)
    # extension handshake with ut_metadata and metadata_size:
    fetcher.add_peer(key, hs.metadata_size)
    # after anything below, and at fetcher.next_deadline(), "pump":
    for key in fetcher.timeouts(now) ...  # optional: count slow peers
    for each metadata-capable peer:
        for piece in fetcher.requests_for(key, now):
            conn.send(ExtendedMessage(UT_METADATA, encode_metadata_message(MetadataRequest(piece))))
    # MetadataData d:   result = fetcher.on_data(key, d.piece, d.total_size, d.data, now)
    #   COMPLETE -> raw = fetcher.result(); info, _ = parse_info(raw)  (hash already checked)
    #   INVALID  -> the peer broke BEP 9: disconnect it
    # MetadataReject r: fetcher.on_reject(key, r.piece, now)
    # disconnect:       fetcher.on_peer_gone(key)
    # MetadataRequest q: server.handle(key, q, now) once we have the info dict,
    #                    MetadataReject(q.piece) before.

Size disagreements: each peer announces ``metadata_size`` in its extension
handshake, and a liar may announce another.  Sizes above
:data:`METADATA_SIZE_LIMIT` are ignored outright (no allocation happens for
them).  Among the rest, the size announced by the most trusted, responsive
peers wins (ties: the one heard first), and only peers that announced the
winning size are asked.  A peer stops counting as a voter after
:data:`MAX_MISSES` rejects or timeouts in a row without delivering, so
liars who announce a size and then never answer cannot pin the fetch to it
(when every peer has missed that often, all of them count again).
If the winning size changes, the partial assembly is discarded.

Trust: when the assembled whole does not hash to the info-hash, every peer
that contributed a block to it is distrusted for metadata for the life of
the fetcher (we cannot tell which block was bad), and the fetch starts over
with the others.
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..types import InfoHash
from ..wire.extensions import MetadataData, MetadataReject, MetadataRequest

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "MAX_MISSES",
    "METADATA_PIECE_SIZE",
    "METADATA_SIZE_LIMIT",
    "BlockResult",
    "MetadataFetcher",
    "MetadataServer",
    "ServerStats",
]

K = TypeVar("K", bound=Hashable)

#: BEP 9 piece size: every piece but the last is exactly this long.
METADATA_PIECE_SIZE = 16 * 1024
#: Largest info dict we fetch (16 MiB, anacrolix's limit).  Real info dicts
#: are a few hundred KiB even for 100k-file torrents; a peer announcing more
#: is ignored, so a hostile ``metadata_size`` cannot make us allocate much.
METADATA_SIZE_LIMIT = 16 << 20
#: Seconds before a request is given up on and the piece asked of another peer.
DEFAULT_REQUEST_TIMEOUT = 10.0
#: Seconds a peer is left alone after it rejected or timed out.
DEFAULT_BACKOFF = 5.0
#: Most requests outstanding at one peer; it starts at 1 and grows by one per
#: piece delivered, and drops back to 1 on a reject or timeout.
DEFAULT_MAX_WINDOW = 4
#: Rejects/timeouts in a row after which a peer's announced size stops counting.
MAX_MISSES = 3


class BlockResult(enum.Enum):
    """What :meth:`MetadataFetcher.on_data` made of a data message."""

    ACCEPTED = "accepted"  # stored; more pieces needed
    COMPLETE = "complete"  # last piece; the whole verified and result() returns it
    HASH_FAILED = "hash_failed"  # last piece; the whole did not verify, contributors distrusted
    IGNORED = "ignored"  # unrequested, duplicate, late or from a distrusted peer: harmless
    INVALID = "invalid"  # impossible piece index, wrong length or total_size: BEP 9 violation


@dataclass(slots=True)
class _Peer:
    size: int | None  # announced metadata_size; None once it contradicted itself
    outstanding: dict[int, float] = field(default_factory=dict)  # piece -> deadline
    asked: set[int] = field(default_factory=set)  # pieces whose (late) answer we take
    window: int = 1
    backoff_until: float = 0.0
    misses: int = 0


class MetadataFetcher(Generic[K]):
    """Assembles the info dict for ``info_hash`` from many peers in parallel.

    See the module docstring for the calling pattern.  ``result()`` is the
    raw info dict once it has been verified (SHA-1 against ``info_hash.v1``
    and SHA-256 against ``info_hash.v2``, each when known; both must match
    for a hybrid).
    """

    def __init__(
        self,
        info_hash: InfoHash,
        *,
        now: float,
        size_limit: int = METADATA_SIZE_LIMIT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        backoff: float = DEFAULT_BACKOFF,
        max_window: int = DEFAULT_MAX_WINDOW,
    ) -> None:
        self.info_hash = info_hash
        self.started = now
        self.size_limit = size_limit
        self.request_timeout = request_timeout
        self.backoff = backoff
        self.max_window = max(1, max_window)
        self.failures = 0  # wholes that failed verification
        self._peers: dict[K, _Peer] = {}
        self._distrusted: set[K] = set()
        self._size_seen: dict[int, None] = {}  # announcement order, for tie-breaks
        self._size: int | None = None
        self._buf: bytearray | None = None  # allocated at the first stored piece
        self._have: list[bool] = []
        self._remaining = 0
        self._contributors: set[K] = set()
        self._result: bytes | None = None

    # --- state ------------------------------------------------------------

    @property
    def size(self) -> int | None:
        """The metadata size currently being fetched (the winning announcement)."""
        return self._size

    @property
    def num_pieces(self) -> int:
        return len(self._have)

    @property
    def pieces_have(self) -> int:
        return len(self._have) - self._remaining

    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def distrusted(self) -> frozenset[K]:
        """Peers that contributed to a whole that failed verification."""
        return frozenset(self._distrusted)

    @property
    def allocated(self) -> int:
        """Bytes held by the assembly buffer (0 until a piece is stored)."""
        return 0 if self._buf is None else len(self._buf)

    def result(self) -> bytes | None:
        """The verified raw info dict, or None while fetching."""
        return self._result

    # --- peers ------------------------------------------------------------

    def add_peer(self, key: K, metadata_size: int) -> bool:
        """A peer announced ``metadata_size`` (again, on a repeated handshake).

        Returns False when the peer will not be used: distrusted, or a size
        that is not a positive integer up to ``size_limit``.  A peer that
        re-announces an unusable size loses its earlier announcement too.
        """
        if key in self._distrusted:
            return False
        if (
            isinstance(metadata_size, bool)
            or not isinstance(metadata_size, int)
            or not 0 < metadata_size <= self.size_limit
        ):
            self.on_peer_gone(key)
            return False
        peer = self._peers.get(key)
        if peer is None:
            self._peers[key] = _Peer(metadata_size)
        elif peer.size != metadata_size:
            self._free(peer)
            peer.size = metadata_size
        self._size_seen.setdefault(metadata_size, None)
        self._choose_size()
        return True

    def on_peer_gone(self, key: K) -> None:
        """The peer disconnected: its requests go to others.  Distrust is kept."""
        peer = self._peers.pop(key, None)
        if peer is not None:
            self._choose_size()

    def _voters(self) -> dict[int, int]:
        """Announced sizes counted over trusted peers, responsive ones only if there are any."""
        votes: dict[int, int] = {}
        fallback: dict[int, int] = {}
        for key, peer in self._peers.items():
            if peer.size is None or key in self._distrusted:
                continue
            fallback[peer.size] = fallback.get(peer.size, 0) + 1
            if peer.misses < MAX_MISSES:
                votes[peer.size] = votes.get(peer.size, 0) + 1
        return votes or fallback

    def _choose_size(self) -> None:
        if self._result is not None:
            return
        votes = self._voters()
        if not votes:
            return  # keep what we have: new peers may yet support it
        best = max(votes.values())
        if self._size is not None and votes.get(self._size, 0) == best:
            return
        chosen = next(size for size in self._size_seen if votes.get(size, 0) == best)
        self._start(chosen)

    def _start(self, size: int) -> None:
        """(Re)start the assembly for ``size``, forgetting any partial one."""
        self._size = size
        count = -(-size // METADATA_PIECE_SIZE)
        self._have = [False] * count
        self._remaining = count
        self._buf = None
        self._contributors.clear()
        for peer in self._peers.values():
            peer.outstanding.clear()
            peer.asked.clear()

    @staticmethod
    def _free(peer: _Peer) -> None:
        peer.outstanding.clear()
        peer.asked.clear()

    def _usable(self, key: K, peer: _Peer) -> bool:
        return (
            self._result is None
            and self._size is not None
            and peer.size == self._size
            and key not in self._distrusted
        )

    # --- requests ---------------------------------------------------------

    def requests_for(self, key: K, now: float) -> list[int]:
        """Piece indices to request from ``key`` now (possibly none).

        Pieces are spread over peers: a piece outstanding at one peer is not
        asked of another until it is rejected or times out.
        """
        peer = self._peers.get(key)
        if peer is None or not self._usable(key, peer):
            return []
        if now < peer.backoff_until:
            return []
        peer.backoff_until = 0.0
        free = peer.window - len(peer.outstanding)
        if free <= 0:
            return []
        in_flight: set[int] = set()
        for other in self._peers.values():
            in_flight.update(other.outstanding)
        out: list[int] = []
        for index, have in enumerate(self._have):
            if len(out) >= free:
                break
            if not have and index not in in_flight:
                out.append(index)
                peer.outstanding[index] = now + self.request_timeout
                peer.asked.add(index)
        return out

    def _miss(self, peer: _Peer, now: float) -> None:
        peer.misses += 1
        peer.window = 1
        peer.backoff_until = now + self.backoff
        if peer.misses == MAX_MISSES:
            self._choose_size()

    def on_reject(self, key: K, piece: int, now: float) -> None:
        """The peer rejected ``piece``: another peer gets it, this one backs off."""
        peer = self._peers.get(key)
        if peer is None or piece not in peer.asked:
            return
        peer.outstanding.pop(piece, None)
        peer.asked.discard(piece)
        self._miss(peer, now)

    def timeouts(self, now: float) -> list[tuple[K, int]]:
        """Expire requests older than ``request_timeout``; returns ``(peer, piece)`` expired.

        An expired piece becomes free for other peers, but the slow peer's
        answer is still taken if it arrives first.
        """
        expired: list[tuple[K, int]] = []
        for key, peer in list(self._peers.items()):
            late = [piece for piece, deadline in peer.outstanding.items() if deadline <= now]
            for piece in late:
                del peer.outstanding[piece]
                expired.append((key, piece))
            if late:
                self._miss(peer, now)
        return expired

    def next_deadline(self) -> float | None:
        """When to call :meth:`timeouts` and pump requests next; None if nothing is pending."""
        if self._result is not None:
            return None
        times: list[float] = []
        for key, peer in self._peers.items():
            times.extend(peer.outstanding.values())
            if peer.backoff_until and self._usable(key, peer):
                times.append(peer.backoff_until)
        return min(times, default=None)

    # --- data -------------------------------------------------------------

    def on_data(self, key: K, piece: int, total_size: int, data: bytes, now: float) -> BlockResult:
        """Store one piece from ``key``; see :class:`BlockResult` for the outcomes."""
        peer = self._peers.get(key)
        if peer is None or not self._usable(key, peer):
            return BlockResult.IGNORED
        assert self._size is not None
        if total_size != self._size or not 0 <= piece < len(self._have):
            # It announced our size, so a different total_size or a piece
            # past the end is a lie or a bug: its announcement no longer counts.
            self._free(peer)
            peer.size = None
            self._choose_size()
            return BlockResult.INVALID
        if piece not in peer.asked:
            return BlockResult.IGNORED
        begin = piece * METADATA_PIECE_SIZE
        expected = min(METADATA_PIECE_SIZE, self._size - begin)
        peer.outstanding.pop(piece, None)
        peer.asked.discard(piece)
        if len(data) != expected:
            self._miss(peer, now)
            return BlockResult.INVALID
        if self._have[piece]:
            return BlockResult.IGNORED
        if self._buf is None:
            self._buf = bytearray(self._size)
        self._buf[begin : begin + expected] = data
        self._have[piece] = True
        self._remaining -= 1
        self._contributors.add(key)
        peer.misses = 0
        peer.window = min(self.max_window, peer.window + 1)
        for other in self._peers.values():
            other.outstanding.pop(piece, None)  # someone else's copy is now moot
        if self._remaining:
            return BlockResult.ACCEPTED
        return self._verify()

    def _verify(self) -> BlockResult:
        assert self._buf is not None and self._size is not None
        whole = bytes(self._buf)
        ok = (self.info_hash.v1 is None or hashlib.sha1(whole).digest() == self.info_hash.v1) and (
            self.info_hash.v2 is None or hashlib.sha256(whole).digest() == self.info_hash.v2
        )
        if ok:
            self._result = whole
            self._buf = None
            for peer in self._peers.values():
                self._free(peer)
            return BlockResult.COMPLETE
        self.failures += 1
        self._distrusted |= self._contributors
        for key in self._contributors:
            culprit = self._peers.get(key)
            if culprit is not None:
                self._free(culprit)
        self._start(self._size)  # new buffer state; size may change just below
        self._choose_size()
        return BlockResult.HASH_FAILED


# --- serving ----------------------------------------------------------------

#: Requests per second one peer may make of us, sustained, and in a burst.
#: A 1 MiB info dict (64 pieces) is served in about 5 s at these rates.
DEFAULT_SERVE_RATE = 10.0
DEFAULT_SERVE_BURST = 16
#: Peers whose request budget we remember; the least recently seen is
#: forgotten beyond this (it then starts again with a full burst).
MAX_SERVE_PEERS = 4096


@dataclass(slots=True)
class ServerStats:
    served: int = 0
    rejected_rate: int = 0
    rejected_invalid: int = 0


class MetadataServer(Generic[K]):
    """Answers ``ut_metadata`` requests from our verified info dict.

    Each peer has a token bucket of ``burst`` requests refilled at
    ``max_requests_per_second``; a request over budget or for a piece that
    does not exist is answered with a reject (BEP 9's answer for "not
    now"/"no such piece"), which costs a few bytes instead of 16 KiB.
    """

    def __init__(
        self,
        raw_info: bytes,
        *,
        max_requests_per_second: float = DEFAULT_SERVE_RATE,
        burst: int = DEFAULT_SERVE_BURST,
        max_peers: int = MAX_SERVE_PEERS,
    ) -> None:
        if not raw_info:
            raise ValueError("cannot serve empty metadata")
        self.raw_info = bytes(raw_info)
        self.rate = max_requests_per_second
        self.burst = max(1, burst)
        self.max_peers = max(1, max_peers)
        self.stats = ServerStats()
        self._buckets: OrderedDict[K, tuple[float, float]] = OrderedDict()  # tokens, last time

    @property
    def metadata_size(self) -> int:
        """For the ``metadata_size`` field of our extension handshake."""
        return len(self.raw_info)

    @property
    def num_pieces(self) -> int:
        return -(-len(self.raw_info) // METADATA_PIECE_SIZE)

    @property
    def tracked_peers(self) -> int:
        """Peers whose request budget is remembered (bounded by ``max_peers``)."""
        return len(self._buckets)

    def handle(self, key: K, request: MetadataRequest, now: float) -> MetadataData | MetadataReject:
        """The answer to send ``key`` for ``request``."""
        piece = request.piece
        if not 0 <= piece < self.num_pieces:
            self.stats.rejected_invalid += 1
            return MetadataReject(piece)
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        if tokens < 1.0:
            self._remember(key, tokens, now)
            self.stats.rejected_rate += 1
            return MetadataReject(piece)
        self._remember(key, tokens - 1.0, now)
        self.stats.served += 1
        begin = piece * METADATA_PIECE_SIZE
        return MetadataData(
            piece, len(self.raw_info), self.raw_info[begin : begin + METADATA_PIECE_SIZE]
        )

    def _remember(self, key: K, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)

    def forget(self, key: K) -> None:
        """The peer disconnected."""
        self._buckets.pop(key, None)
