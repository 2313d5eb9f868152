"""A torrent's download pipeline: received blocks -> piece buffers -> hash -> disk.

Kept out of ``torrent.py`` because it is one flow with its own state.  Blocks
arrive in protocol callbacks and are copied into a per-piece buffer (reused
from a small pool: fresh zero-filled buffers cost page faults on the event
loop).  A complete piece is hashed and written in a worker thread, a few at
a time, and only then marked as had; only good data reaches the disk.  The
picker's unverified-bytes cap bounds the buffers, so download never outruns
hashing and memory stays bounded.

Who sent bad data is judged by a :class:`core.engine.blame.BlameLedger` (trust,
parole and smart ban, keyed by ``Client.blame_key`` so reconnecting does not
reset it): every sender of a failed piece loses trust and goes on parole,
where the picker gives it only whole pieces of its own, so its next failure
is its alone and bans it; when several peers sent parts of a failed piece,
each block's digest is kept until the piece passes, and exactly the peers
whose blocks differ from the good data are banned.  Here the ledger's
verdicts are carried out: bans, and the picker isolating a new suspect's
pieces (cancelling what was in flight in the ones it shared).  When every
wanted piece is had, ``wanted_complete`` creates the remaining wanted files,
flushes, and moves the torrent to seeding.

Seams: the pipeline sees its torrent through :class:`PipelineHost`, the
swarm through :class:`PipelineSwarm` (interest and request filling), each
connection through :class:`PipelinePeer`, and readers' waiters through the
:class:`~core.engine.streaming.Streaming` it is given (``Torrent``, ``Swarm``
and ``Peer`` satisfy them); it never imports ``torrent.py`` or ``peer.py``.
Direction of calls: the peer hands it blocks (``block_received``), the
torrent tells it whether blocks are wanted at all (``accepting_blocks``, set
on every state change, read per block without a call) and asks it to drop or
clear partial pieces; it announces every piece change with
``host.piece_changed(p)``, a storage failure with ``host.storage_failed``,
and completion with ``host.set_state(SEEDING)``/``host.announce_completed``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any, Generic, Protocol, TypeVar

from ..bus import EventBus
from ..config import ClientConfig
from ..errors import StorageError
from ..events import PieceHashFailed
from ..formats.info import Info
from ..formats.metainfo import Metainfo
from ..net.peer_io import PeerProtocol
from ..stats import ConnStats, RateMeter, TorrentState
from ..storage import CompletionStore, Storage
from ..types import InfoHash, PiecePriority
from ..wire import Cancel, Have
from ..wire import Piece as PieceMsg
from .blame import BlameLedger, TrustRecord, Verdict
from .picker import Picker
from .streaming import Streaming

#: Spare piece buffers kept for reuse while downloading (see ``_recycle_buf``).
BUF_POOL_BYTES = 8 << 20
#: Block size of the blame evidence: the request size every client uses.
BLOCK = 16384

_T = TypeVar("_T")


class PipelinePeer(Protocol):
    """One connection, as the pipeline uses it (``Peer`` satisfies it)."""

    proto: PeerProtocol | None
    #: Set when it sends a block (snub detection reads it).
    last_block_at: float
    #: Set by :meth:`PiecePipeline.peer_joined` from the blame ledger.
    trust: TrustRecord | None

    @property
    def address(self) -> tuple[str, int]: ...
    @property
    def peer_id(self) -> bytes | None: ...
    @property
    def stats(self) -> ConnStats: ...
    @property
    def down_rate(self) -> RateMeter: ...
    @property
    def closed(self) -> bool: ...
    @property
    def is_seed(self) -> bool: ...
    @property
    def on_parole(self) -> bool: ...

    def close(self, reason: str) -> None: ...
    def __hash__(self) -> int: ...


P = TypeVar("P", bound=PipelinePeer)
P_co = TypeVar("P_co", bound=PipelinePeer, covariant=True)
P_contra = TypeVar("P_contra", bound=PipelinePeer, contravariant=True)


class PipelineSwarm(Protocol[P_contra]):
    """The swarm's side: re-decide interest, top up a peer's requests."""

    def update_interest(self, peer: P_contra) -> None: ...
    def fill_requests(self, peer: P_contra, *, force: bool = False) -> None: ...


class PipelineClient(Protocol):
    """The client-wide services the pipeline uses: the bus, blame keys, bans."""

    @property
    def bus(self) -> EventBus: ...

    def blame_key(self, ip: str, peer_id: bytes | None) -> str: ...
    def ban(
        self, ip: str, reason: str, *, port: int | None = None, peer_id: bytes | None = None
    ) -> None: ...


class WantedFile(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def priority(self) -> PiecePriority: ...


class PipelineHost(Protocol[P_co]):
    """What the pipeline may read of its torrent, and the operations it may ask for."""

    #: Pieces being hashed in a worker thread (the pipeline adds and removes its own).
    hashing: set[int]

    @property
    def info(self) -> Info: ...
    @property
    def metainfo(self) -> Metainfo: ...
    @property
    def storage(self) -> Storage: ...
    @property
    def completion(self) -> CompletionStore | None: ...
    @property
    def info_hash(self) -> InfoHash: ...
    @property
    def num_pieces(self) -> int: ...
    @property
    def picker(self) -> Picker: ...
    @property
    def files(self) -> Sequence[WantedFile]: ...
    @property
    def peers(self) -> Collection[P_co]: ...
    @property
    def state(self) -> TorrentState: ...
    @property
    def closed(self) -> bool: ...
    @property
    def config(self) -> ClientConfig: ...

    def piece_changed(self, p: int) -> None: ...
    def schedule(self, coro: Coroutine[Any, Any, object]) -> None: ...
    async def run_io(self, fn: Callable[..., _T], *args: Any) -> _T: ...
    def storage_failed(self, exc: StorageError) -> None: ...
    async def flush_storage(self) -> None: ...
    def set_state(self, new: TorrentState, error: str | None = None) -> None: ...
    def is_seed(self) -> bool: ...
    def announce_completed(self) -> None: ...
    def notify_state_waiters(self) -> None: ...


class PiecePipeline(Generic[P]):
    """One torrent's piece buffers, hashing and blame; see the module docstring."""

    def __init__(
        self,
        torrent: PipelineHost[P],
        swarm: PipelineSwarm[P],
        streaming: Streaming,
        client: PipelineClient,
    ) -> None:
        self.torrent = torrent
        self._swarm = swarm
        self._streaming = streaming
        self._client = client
        #: Whether received blocks are kept: the torrent sets it on every state
        #: change (downloading or seeding), so the per-block path reads a flag.
        self.accepting_blocks = False
        self.bufs: dict[int, bytearray] = {}
        self._buf_pool: list[bytearray] = []  # spare full-size piece buffers
        self._contributors: dict[int, dict[int, P]] = {}
        #: Trust, parole and block evidence per ``Client.blame_key``.
        self.blame: BlameLedger[str] = BlameLedger()
        # blame key -> the latest connection of that peer (to ban it once it is gone)
        self._last_conn: dict[str, P] = {}
        cfg = torrent.config
        self._hash_sem = asyncio.Semaphore(max(1, cfg.piece_hashers_per_torrent))

    def clear(self) -> None:
        """Forget unfinished pieces' buffers and senders (used before a full recheck)."""
        self.bufs.clear()
        self._contributors.clear()
        self.blame.forget_evidence()

    def _key(self, peer: P) -> str:
        return self._client.blame_key(peer.address[0], peer.peer_id)

    def peer_joined(self, peer: P) -> None:
        """A handshaken peer: give it its record, so a suspect that reconnects stays one."""
        key = self._key(peer)
        self._last_conn[key] = peer
        peer.trust = self.blame.record(key)

    def block_received(self, peer: P, msg: PieceMsg) -> None:
        t = self.torrent
        n = len(msg.data)
        now = time.monotonic()
        peer.stats.bytes_read_data += n
        peer.stats.chunks_read += 1
        peer.down_rate.add(n, now)
        peer.last_block_at = now
        # Requests stay outstanding in the picker until answered: a block
        # dropped here must release its request, or the chunk would never be
        # asked for again.  Nothing wanted (seeding) is a moment away from a
        # reader or a priority change wanting it: keep the data.
        if not self.accepting_blocks:
            t.picker.on_request_cancelled(peer, msg.index, msg.begin)
            return
        outcome = t.picker.on_block_received(
            peer, msg.index, msg.begin, n, exclusive=peer.on_parole
        )
        for other in outcome.cancel:
            # The picker's peers are our connections (it only sees them as hashable).
            proto = getattr(other, "proto", None)
            if proto is not None:
                proto.send(Cancel(msg.index, msg.begin, n))
        if not outcome.useful:
            peer.stats.chunks_read_wasted += 1
            self._swarm.fill_requests(peer)
            return
        peer.stats.chunks_read_useful += 1
        peer.stats.bytes_read_useful_data += n
        p = msg.index
        buf = self.bufs.get(p)
        if buf is None:
            size = t.info.piece_size(p)
            pool = self._buf_pool
            buf = pool.pop() if pool and size == t.info.piece_length else bytearray(size)
            self.bufs[p] = buf
            t.piece_changed(p)
        buf[msg.begin : msg.begin + n] = msg.data
        self._contributors.setdefault(p, {})[msg.begin] = peer
        streaming = self._streaming
        if streaming.block_waiters:
            streaming.block_arrived(p)
        if outcome.piece_complete:
            t.picker.mark_hashing(p)
            t.piece_changed(p)
            t.schedule(self._verify_and_write(p))
        self._swarm.fill_requests(peer)

    async def _verify_and_write(self, p: int) -> None:
        t = self.torrent
        buf = self.bufs.pop(p, None)
        contributors = self._contributors.pop(p, {})
        if buf is None:  # dropped meanwhile (pause / storage error)
            if t.picker.is_hashing(p):
                t.picker.on_piece_hashed(p, False)
            return
        async with self._hash_sem:
            if any(peer.trust is not None and peer.trust.banned for peer in contributors.values()):
                # A banned peer sent part of it (the ban came while it waited
                # its turn): nothing it sent is worth a hash, nor more blame.
                t.picker.on_piece_dropped(p)
                t.piece_changed(p)
                self._recycle_buf(buf)
                return
            t.hashing.add(p)
            t.piece_changed(p)
            # Per-block digests are only needed to blame senders: when an earlier
            # attempt failed (to compare) or this one may fail (as evidence).
            blame = self.blame.has_evidence(p) or len(set(contributors.values())) > 1
            try:
                ok, digests = await t.run_io(self.hash_and_write, p, buf, blame)
            except StorageError as exc:
                t.hashing.discard(p)
                t.picker.on_piece_hashed(p, False)  # re-download later, blame nobody
                t.storage_failed(exc)
                return
            finally:
                t.hashing.discard(p)
        if t.closed:
            return
        t.picker.on_piece_hashed(p, ok)
        t.piece_changed(p)
        if ok:
            self._piece_verified(p, contributors, digests)
        else:
            self._piece_failed(p, contributors, digests)
        self._recycle_buf(buf)

    def _recycle_buf(self, buf: bytearray) -> None:
        """Keep a finished piece buffer for the next piece.

        A fresh ``bytearray`` of a piece's size is zero-filled memory the
        kernel must map page by page (for 1 MiB pieces, 256 page faults per
        piece, about half of the event loop's time per block); reusing a few
        buffers avoids that.  Every byte of a reused buffer is overwritten
        before it is hashed (a piece is only hashed once all its blocks are in).
        """
        plen = self.torrent.info.piece_length
        if len(buf) == plen and len(self._buf_pool) * plen < BUF_POOL_BYTES:
            self._buf_pool.append(buf)

    def hash_and_write(
        self, p: int, buf: bytearray, block_digests: bool = False
    ) -> tuple[bool, dict[int, bytes]]:
        """Worker thread: verify then write; only good data reaches the disk.

        With ``block_digests``, also returns the SHA-1 of every 16 KiB block
        (offset -> digest), the evidence used to tell which sender lied.
        """
        t = self.torrent
        if t.info.pieces:
            ok = hashlib.sha1(buf).digest() == t.info.piece_hash_v1(p)
        else:
            ok = t.metainfo.verify_piece_v2(p, buf)
        digests = (
            {b: hashlib.sha1(buf[b : b + BLOCK]).digest() for b in range(0, len(buf), BLOCK)}
            if block_digests
            else {}
        )
        if ok:
            t.storage.write_block(p, 0, buf)
            if t.completion is not None:
                t.completion.mark(t.info_hash, p, True)
        return ok, digests

    def _piece_verified(
        self, p: int, contributors: dict[int, P], digests: dict[int, bytes]
    ) -> None:
        t = self.torrent
        for peer in set(contributors.values()):
            peer.stats.pieces_dirtied_good += 1
        senders = {begin: self._key(peer) for begin, peer in contributors.items()}
        self._carry_out(self.blame.piece_passed(p, senders, digests))
        for peer in list(t.peers):
            if peer.proto is not None:
                peer.proto.send(Have(p))
            self._swarm.update_interest(peer)
        if t.picker.is_complete():
            t.schedule(self.wanted_complete())

    def _piece_failed(self, p: int, contributors: dict[int, P], digests: dict[int, bytes]) -> None:
        t = self.torrent
        peers = set(contributors.values())
        self._client.bus.publish(
            PieceHashFailed(t.info_hash, p, tuple(peer.address for peer in peers))
        )
        for peer in peers:
            peer.stats.pieces_dirtied_bad += 1
        senders = {begin: self._key(peer) for begin, peer in contributors.items()}
        self._carry_out(self.blame.piece_failed(p, senders, digests))
        for peer in list(t.peers):
            self._swarm.fill_requests(peer)

    def _carry_out(self, verdict: Verdict[str]) -> None:
        """Ban whom the ledger says, and keep new suspects' pieces apart from others'."""
        t = self.torrent
        for ban in verdict.bans:
            conn = self._last_conn.get(ban.who)
            if conn is not None:
                self._ban(conn, ban.reason)
            for peer in list(t.peers):
                if peer.trust is not None and peer.trust.banned is not None:
                    peer.close(f"banned: {peer.trust.banned}")
        if verdict.paroled:
            suspects = set(verdict.paroled)
            for peer in list(t.peers):
                if not peer.closed and self._key(peer) in suspects:
                    self._isolate(peer)

    def _isolate(self, peer: P) -> None:
        """``peer`` is on parole: its shared pieces start over, its own are kept for it."""
        t = self.torrent
        for other, req in t.picker.isolate(peer):
            proto = getattr(other, "proto", None)
            if proto is not None:
                proto.send(Cancel(req.piece, req.begin, req.length))
        # The buffers of pieces started over hold nothing the picker counts any more.
        for p in [p for p in self.bufs if not t.picker.received_chunks(p)]:
            self._recycle_buf(self.bufs.pop(p))
            self._contributors.pop(p, None)
            t.piece_changed(p)

    def _ban(self, peer: P, reason: str) -> None:
        host, port = peer.address
        self._client.ban(host, reason, port=port, peer_id=peer.peer_id)
        peer.close(f"banned: {reason}")

    def drop_partial_pieces(self) -> None:
        """Discard the buffers of unfinished pieces, and the picker's record of their blocks.

        Dropping only the buffers would leave the picker counting those blocks
        as received: after a pause or a storage error the piece would later
        complete with zeros in their place, fail its hash and get the peer
        that sent the rest blamed (and banned).  Pieces already queued for
        hashing are left to ``_verify_and_write``, which sees the buffer gone.
        """
        t = self.torrent
        for p in self.bufs:
            if not t.picker.is_hashing(p):
                t.picker.on_piece_hashed(p, False)
                t.piece_changed(p)
        self.bufs.clear()
        self._contributors.clear()

    async def wanted_complete(self) -> None:
        t = self.torrent
        self._buf_pool.clear()  # nothing left to download: give the memory back
        if t.closed or t.state is TorrentState.ERROR:
            return
        try:
            await t.run_io(t.storage.ensure_files, self._wanted_file_indices())
        except StorageError as exc:
            t.storage_failed(exc)
            return
        await t.flush_storage()
        if not t.picker.is_complete():
            return  # something became wanted meanwhile (a priority change, a reader)
        if t.state is TorrentState.DOWNLOADING:
            t.set_state(TorrentState.SEEDING)
            if t.is_seed():
                t.announce_completed()
        t.notify_state_waiters()
        for peer in list(t.peers):
            self._swarm.update_interest(peer)
            if not t.config.seed:
                peer.close("download complete, not seeding")
            elif peer.is_seed and t.picker.num_have == t.num_pieces:
                peer.close("both complete")

    def _wanted_file_indices(self) -> list[int]:
        return [f.index for f in self.torrent.files if f.priority > PiecePriority.NONE]
