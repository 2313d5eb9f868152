"""A torrent's uploads: answering peers' requests from a cache of whole pieces.

Kept out of ``torrent.py`` because serving is its own flow with its own
state.  A request for a piece we have is answered from a small LRU cache of
whole pieces; a miss reads the whole piece in a worker thread (the event
loop never touches the disk) and parks the request, and every request for
that piece that arrives meanwhile, until the read completes.  A peer whose
socket is full, or that the client's or the torrent's upload limit holds
back, gets its requests queued on ``Peer.upload_queue``; they are sent when
the socket drains (``Peer.peer_writable``) or the bucket allows.

A piece that vanished from disk is forgotten (rechecked) rather than served;
any other storage error puts the torrent in the error state.

Seams (issue 12): the uploader knows neither ``Torrent`` nor ``Peer`` and
imports neither module.  It sees its torrent as an :class:`UploadHost` (what
it reads: ``name``, ``config``, the ``picker``'s have-set, ``storage``, the
connected ``peers``; what it may ask for: ``run_io`` for the piece reads,
``schedule`` for the read task, ``storage_failed`` and ``forget_piece``) and
each peer as an :class:`UploadPeer` (its protocol, counters and upload
queues).  The rate-limit buckets, the client's and the torrent's, are handed
over once when it is made.  Direction of calls: peers hand it requests and
drained sockets (``serve_request``, ``serve_queued``) and the torrent asks
it for ``check_stalls`` and ``clear_cache`` and reads ``read_cache``; it answers
peers on their protocols and reports to the torrent only through the host's
``schedule``, ``storage_failed`` and ``forget_piece``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

from ..config import ClientConfig
from ..errors import StorageError
from ..net.peer_io import PeerProtocol
from ..ratelimit import TokenBucket
from ..stats import ConnStats, RateMeter
from ..storage import DataMissingError, Storage
from ..wire import Reject, Request
from .picker import Picker

_T = TypeVar("_T")

#: Whole pieces kept in memory to serve uploads.
READ_CACHE_BYTES = 32 << 20
#: A peer whose requests we hold this long without sending it a block is
#: logged as stalled, with the reason (issue 11: such a stall was silent).
STALL_AFTER = 30.0

log = logging.getLogger(__name__)


class UploadPeer(Protocol):
    """A connected peer, as far as serving it goes (``Peer`` satisfies it)."""

    #: Requests waiting for the socket to drain or the rate limit (replaced when served).
    upload_queue: list[Request]
    #: Its current stall was logged (see :meth:`Uploader.check_stalls`).
    upload_stall_logged: bool

    @property
    def address(self) -> tuple[str, int]: ...
    @property
    def proto(self) -> PeerProtocol | None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def stats(self) -> ConnStats: ...
    @property
    def up_rate(self) -> RateMeter: ...
    @property
    def paid_uploads(self) -> set[Request]:
        """Queued requests whose rate-limit tokens were already taken."""
        ...


class UploadHost(Protocol):
    """What the uploader reads of its torrent and may ask of it (``Torrent`` satisfies it)."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> ClientConfig: ...
    @property
    def picker(self) -> Picker: ...
    @property
    def storage(self) -> Storage: ...
    @property
    def peers(self) -> Iterable[UploadPeer]: ...

    async def run_io(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` in the torrent's disk worker threads."""
        ...

    def schedule(self, coro: Coroutine[Any, Any, object]) -> None:
        """Run ``coro`` as a task the torrent owns."""
        ...

    def storage_failed(self, exc: StorageError) -> None:
        """A disk read failed: the torrent goes to the error state."""
        ...

    def forget_piece(self, p: int) -> None:
        """Piece ``p``'s data vanished: stop having it (it is fetched again)."""
        ...


class Uploader:
    """Serves one torrent's uploads; see the module docstring.

    ``buckets`` are the upload rate limits a block pays into (the client's
    and the torrent's); their rates may change, the objects may not.
    """

    def __init__(self, torrent: UploadHost, buckets: tuple[TokenBucket, ...]) -> None:
        self.torrent = torrent
        self._buckets = buckets
        self.read_cache: OrderedDict[int, bytes] = OrderedDict()
        self._read_cache_bytes = 0
        self.pending_reads: dict[int, list[tuple[UploadPeer, Request]]] = {}

    def stall_reason(self, peer: UploadPeer, now: float) -> str | None:
        """Why ``peer`` has had requests queued and no block for ``STALL_AFTER`` s, if it has."""
        proto = peer.proto
        if proto is None or proto.closed:
            return None
        conn = proto.conn
        oldest = conn.oldest_request_at
        if oldest is None:
            return None
        since = max(oldest, conn.last_piece_sent_at or oldest)
        if now - since < STALL_AFTER:
            return None
        queued = len(conn.their_requests)
        waited = f"{queued} requests queued, the oldest for {now - oldest:.0f} s"
        if self.torrent.config.no_upload:
            return f"{waited}: uploads are off (no_upload)"
        if proto.write_paused:
            return f"{waited}: our socket to it is full (it is not reading)"
        if peer.paid_uploads:
            return f"{waited}: held back by the upload rate limit"
        reading = [
            p for p, waiting in self.pending_reads.items() if any(q is peer for q, _ in waiting)
        ]
        if reading:
            return f"{waited}: waiting for the disk to read piece {reading[0]}"
        if peer.upload_queue:
            return f"{waited}: {len(peer.upload_queue)} blocks queued to send but nothing sent"
        return f"{waited}: none of them is being served"

    def check_stalls(self, now: float) -> None:
        """Log each peer that has stalled (once per stall; see :meth:`stall_reason`)."""
        for peer in list(self.torrent.peers):
            reason = self.stall_reason(peer, now)
            if reason is None:
                peer.upload_stall_logged = False
            elif not peer.upload_stall_logged:
                peer.upload_stall_logged = True
                host, port = peer.address
                log.warning(
                    "%s: upload to %s:%d stalled: %s", self.torrent.name, host, port, reason
                )

    def clear_cache(self) -> None:
        """Forget cached pieces (their data is about to be rechecked)."""
        self.read_cache.clear()
        self._read_cache_bytes = 0

    def serve_request(self, peer: UploadPeer, req: Request) -> None:
        t = self.torrent
        proto = peer.proto
        if proto is None or t.config.no_upload:
            return
        if not t.picker.have(req.index):
            return  # the connection already rejected or dropped what it must
        data = self.read_cache.get(req.index)
        if data is not None:
            self.read_cache.move_to_end(req.index)
            self._send_block(peer, req, data)
            return
        waiting = self.pending_reads.get(req.index)
        if waiting is not None:
            waiting.append((peer, req))
            return
        self.pending_reads[req.index] = [(peer, req)]
        t.schedule(self._read_piece(req.index))

    async def _read_piece(self, p: int) -> None:
        t = self.torrent
        try:
            data = await t.run_io(t.storage.read_piece, p)
        except StorageError as exc:
            self._refuse(self.pending_reads.pop(p, []))
            if isinstance(exc, DataMissingError):
                # Our data vanished from under us: recheck rather than serve garbage.
                t.forget_piece(p)
                return
            t.storage_failed(exc)
            return
        self.read_cache[p] = data
        self._read_cache_bytes += len(data)
        while self._read_cache_bytes > READ_CACHE_BYTES and len(self.read_cache) > 1:
            _, old = self.read_cache.popitem(last=False)
            self._read_cache_bytes -= len(old)
        for peer, req in self.pending_reads.pop(p, []):
            if not peer.closed:
                self._send_block(peer, req, data)

    @staticmethod
    def _refuse(waiting: list[tuple[UploadPeer, Request]]) -> None:
        """Tell peers we cannot serve what they asked (BEP 6 reject), so they ask elsewhere."""
        for peer, req in waiting:
            proto = peer.proto
            if proto is not None and not proto.closed and proto.conn.fast_enabled:
                proto.send(Reject(req.index, req.begin, req.length))

    def _send_block(self, peer: UploadPeer, req: Request, data: bytes) -> None:
        proto = peer.proto
        if proto is None or proto.closed:
            return
        if proto.write_paused or peer.upload_queue:
            peer.upload_queue.append(req)
            return
        delay = 0.0
        now = time.monotonic()
        for bucket in self._buckets:
            if bucket.rate is not None:
                delay = max(delay, bucket.consume(req.length, now))
        if delay > 0:
            # The tokens are taken now (the bucket goes into debt), so this block
            # is sent without paying again when its turn comes.
            peer.paid_uploads.add(req)
            peer.upload_queue.append(req)
            asyncio.get_running_loop().call_later(delay, self.serve_queued, peer)
            return
        self._write_block(peer, req, data)

    def _write_block(self, peer: UploadPeer, req: Request, data: bytes) -> None:
        proto = peer.proto
        if proto is None or proto.closed:
            return
        view = memoryview(data)[req.begin : req.begin + req.length]
        if proto.send_piece(req.index, req.begin, view):
            n = req.length
            peer.stats.bytes_written_data += n
            peer.stats.chunks_written += 1
            peer.up_rate.add(n, time.monotonic())

    def serve_queued(self, peer: UploadPeer) -> None:
        """Send queued uploads once the socket drains or the rate limit allows."""
        queue = peer.upload_queue
        peer.upload_queue = []
        for req in queue:
            proto = peer.proto
            if proto is None or proto.closed:
                return
            paid = req in peer.paid_uploads
            peer.paid_uploads.discard(req)
            data = self.read_cache.get(req.index)
            if data is None:
                self.serve_request(peer, req)
            elif paid and not proto.write_paused and not peer.upload_queue:
                self._write_block(peer, req, data)
            elif paid:
                peer.paid_uploads.add(req)
                peer.upload_queue.append(req)
            else:
                self._send_block(peer, req, data)
