"""One connected peer of one torrent: turns wire events into torrent actions.

A ``Peer`` owns a :class:`~core.net.peer_io.PeerProtocol` once its handshake
is done.  Everything here runs synchronously in the protocol's read callback
on the event loop; slow work (disk, hashing) is handed to the torrent, which
runs it in worker threads.

Seams (issue 12): a peer knows neither ``Torrent`` nor ``Swarm``.  It reads
its torrent through :class:`PeerHost` (``has_info``, ``num_pieces`` and the
``picker``, whose availability counts it keeps in step with the peer's
have-set), and dispatches what arrives to the handles of the torrent's
:class:`PeerRoutes`, bound once when the peer is made (a received block is
one attribute away from the pipeline): :class:`PeerSwarm` (handshake
admission, interest, request top-ups, rechoking, a closed connection),
:class:`PeerPipeline` (blocks), :class:`PeerExtensionHooks` (BEP 10
handshakes and extended messages) and :class:`PeerUploader` (requests to
serve, a drained socket).  Direction of calls: the protocol calls the peer
(``peer_event``, ``peer_closed``, ``peer_writable``); the peer tells those
handles what happened; they never call back into it but to read or set its
public state (``proto``, ``has``, ``active``, ``trust``, the upload queues),
``close`` it, or ask for its ``pipeline_target`` and ``sync_io_counters``.
The client attaches a new connection's protocol through ``PeerHost.attach``.
The swarm makes peers, so ``swarm.py`` imports this module and never the
other way round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from bitarray import bitarray

from ..events import PeerSource
from ..net.dialer import PLAIN_TCP, Link
from ..net.peer_io import PeerProtocol
from ..stats import ConnStats, RateMeter
from ..types import PiecePriority
from ..wire import (
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    Event,
    ExtendedMessage,
    ExtensionHandshake,
    HandshakeReceived,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    NotInterested,
    Piece,
    Port,
    Reject,
    Request,
    RequestsDropped,
    Suggest,
    Unchoke,
)
from .blame import TrustRecord
from .picker import CHUNK_SIZE, Picker

#: Requests kept in flight to a peer that did not say how many it queues (BEP 10 ``reqq``).
DEFAULT_REMOTE_REQQ = 128
#: Lower bound of the request pipeline, whatever the measured rate.
MIN_PIPELINE = 16
#: Seconds of transfer at the measured rate that the pipeline should cover.
PIPELINE_SECONDS = 1.0
#: How long a computed pipeline target is reused: it is asked for on every
#: received block, and the rate behind it moves slowly.
PIPELINE_REFRESH = 0.1


def client_name_from_peer_id(peer_id: bytes | None) -> str:
    """Best guess at the remote client from an Azureus-style (BEP 20) peer id."""
    if not peer_id:
        return ""
    if peer_id[:1] == b"-" and peer_id[7:8] == b"-":
        code = peer_id[1:3].decode("ascii", "replace")
        version = ".".join(chr(c) for c in peer_id[3:7] if chr(c).isalnum())
        names = {
            "LT": "libtorrent",
            "lt": "libTorrent",
            "qB": "qBittorrent",
            "TR": "Transmission",
            "DE": "Deluge",
            "UT": "\u00b5Torrent",
            "AZ": "Vuze",
            "PY": "pytorrent",
            "GT": "anacrolix/torrent",
            "AR": "aria2",
            "BI": "BiglyBT",
        }
        return f"{names.get(code, code)} {version}".strip()
    if peer_id[:5] == b"A2-1-":
        return "aria2"
    return ""


class PeerSwarm(Protocol):
    """The swarm, as a peer reports to it (``Swarm`` satisfies it)."""

    def peer_handshaken(self, peer: Peer) -> None: ...
    def peer_closed(self, peer: Peer, reason: str) -> None: ...
    def update_interest(self, peer: Peer) -> None: ...
    def fill_requests(self, peer: Peer) -> None: ...
    def rechoke_soon(self) -> None: ...


class PeerPipeline(Protocol):
    """The download pipeline, as a peer hands it blocks (``PiecePipeline`` satisfies it)."""

    def block_received(self, peer: Peer, msg: Piece) -> None: ...


class PeerExtensionHooks(Protocol):
    """The BEP 10 extensions, as a peer hands them messages (``PeerExtensions`` satisfies it)."""

    def on_handshake(self, peer: Peer, hs: ExtensionHandshake) -> None: ...
    def on_message(self, peer: Peer, msg: ExtendedMessage) -> None: ...


class PeerUploader(Protocol):
    """The uploader, as a peer hands it requests (``Uploader`` satisfies it)."""

    def serve_request(self, peer: Peer, req: Request) -> None: ...
    def serve_queued(self, peer: Peer) -> None: ...


@dataclass(frozen=True, slots=True)
class PeerRoutes:
    """Where a torrent's peers send what arrives: made once by the torrent, bound by each peer."""

    swarm: PeerSwarm
    pipeline: PeerPipeline
    extensions: PeerExtensionHooks
    uploader: PeerUploader


class PeerHost(Protocol):
    """The torrent, as a peer sees it (``Torrent`` satisfies it)."""

    @property
    def has_info(self) -> bool: ...
    @property
    def num_pieces(self) -> int: ...
    @property
    def picker(self) -> Picker: ...
    @property
    def peer_routes(self) -> PeerRoutes: ...

    def attach(self, peer: Peer, proto: PeerProtocol) -> None: ...


class Peer:
    """Per-connection state of one peer in one torrent."""

    def __init__(
        self,
        torrent: PeerHost,
        address: tuple[str, int],
        source: PeerSource,
        *,
        incoming: bool,
    ) -> None:
        self.torrent = torrent
        self.address = address
        self.source = source
        self.incoming = incoming
        self.proto: PeerProtocol | None = None
        #: What carries the connection (TCP or uTP, encrypted or not): set by
        #: whoever made it (the dialer's result, or the listener's layers).
        self.link: Link = PLAIN_TCP
        self.peer_id: bytes | None = None
        self.client = ""
        self.remote_reqq = DEFAULT_REMOTE_REQQ
        self._pipeline = MIN_PIPELINE
        self._pipeline_until = -1.0
        self.has: bitarray | None = None
        self.is_seed = False
        self.active = False  # handshake done, counted in the torrent's peers
        self.closed = False
        self.stats = ConnStats()
        self.down_rate = RateMeter()
        self.up_rate = RateMeter()
        self.connected_at = time.monotonic()
        self.last_block_at = self.connected_at
        self.upload_queue: list[Request] = []
        # Queued uploads whose rate-limit tokens were already taken.
        self.paid_uploads: set[Request] = set()
        #: Its current upload stall was logged (core.engine.upload.check_stalls).
        self.upload_stall_logged = False
        #: Its standing in this torrent (core.engine.blame), shared with its other
        #: and later connections; set once the handshake names it.
        self.trust: TrustRecord | None = None
        #: Our bitfield went out; before a magnet's info is known and checked it waits.
        self.have_set_sent = False
        # Where messages go, bound once (see PeerRoutes); blocks skip even the lookup.
        routes = torrent.peer_routes
        self._swarm = routes.swarm
        self._ext = routes.extensions
        self._uploader = routes.uploader
        self._block_received = routes.pipeline.block_received

    def __repr__(self) -> str:
        return f"<Peer {self.address[0]}:{self.address[1]} {self.client or '?'}>"

    # --- PeerOwner ----------------------------------------------------------

    def peer_event(self, proto: PeerProtocol, event: Event) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def peer_closed(self, proto: PeerProtocol, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self._swarm.peer_closed(self, reason)

    def peer_writable(self, proto: PeerProtocol) -> None:
        self._uploader.serve_queued(self)

    # --- state helpers ------------------------------------------------------

    @property
    def hash_failures(self) -> int:
        """Failed pieces this peer sent data for (alone or with others), across reconnects."""
        return self.trust.failed if self.trust is not None else 0

    @property
    def on_parole(self) -> bool:
        """Suspected of sending bad data: it only gets whole pieces of its own (see blame)."""
        return self.trust is not None and self.trust.on_parole

    @property
    def conn_ok(self) -> bool:
        return self.proto is not None and not self.proto.closed

    def close(self, reason: str) -> None:
        if self.proto is not None:
            self.proto.close(reason)
        elif not self.closed:
            self.closed = True
            self._swarm.peer_closed(self, reason)

    def sync_io_counters(self) -> None:
        """Copy the transport's byte counters (protocol overhead included) into stats."""
        if self.proto is not None:
            self.stats.bytes_read = self.proto.bytes_read
            self.stats.bytes_written = self.proto.bytes_written

    def pipeline_target(self, now: float) -> int:
        """Requests to keep in flight: about a second of data at the measured rate."""
        if now < self._pipeline_until:
            return self._pipeline
        by_rate = int(self.down_rate.rate(now) * PIPELINE_SECONDS / CHUNK_SIZE)
        # Never more than the peer said it queues (BEP 10 reqq), even below our minimum.
        self._pipeline = min(self.remote_reqq, by_rate + MIN_PIPELINE)
        self._pipeline_until = now + PIPELINE_REFRESH
        return self._pipeline

    # --- handlers -----------------------------------------------------------

    def _on_handshake(self, ev: HandshakeReceived) -> None:
        self.peer_id = ev.peer_id
        self.client = client_name_from_peer_id(ev.peer_id)
        self._swarm.peer_handshaken(self)

    def _on_ext_handshake(self, ev: ExtensionHandshake) -> None:
        if ev.v:
            self.client = ev.v[:64]
        if ev.reqq:
            self.remote_reqq = max(1, min(ev.reqq, 2000))
            self._pipeline_until = -1.0
        self._ext.on_handshake(self, ev)

    # Before a magnet's info dict is known, the connection keeps the have-set
    # (it cannot be checked yet) and core.engine.magnet_phase replays it.

    # A have-set message may come again later (aria2 sends a bitfield after
    # have none): the connection then reports the new whole set, and the
    # availability the old one added is taken back first.

    def _forget_have_set(self) -> None:
        if self.has is not None:
            self.torrent.picker.peer_lost(self.has)
            self.has = None

    def _on_bitfield(self, ev: Bitfield) -> None:
        t = self.torrent
        if not t.has_info:
            return
        self._forget_have_set()
        self.has = ev.bits
        t.picker.peer_bitfield(ev.bits)
        self.is_seed = ev.bits.all()
        self._swarm.update_interest(self)

    def _on_have_all(self, ev: HaveAll) -> None:
        t = self.torrent
        if not t.has_info:
            return
        self._forget_have_set()
        self.has = bitarray(t.num_pieces, endian="big")
        self.has.setall(1)
        self.is_seed = True
        t.picker.peer_have_all()
        self._swarm.update_interest(self)

    def _on_have_none(self, ev: HaveNone) -> None:
        t = self.torrent
        if not t.has_info:
            return
        self._forget_have_set()
        self.has = bitarray(t.num_pieces, endian="big")
        self.has.setall(0)
        self.is_seed = False
        self._swarm.update_interest(self)

    def _on_have(self, ev: Have) -> None:
        t = self.torrent
        if not t.has_info:
            return
        if self.has is None:
            self.has = bitarray(t.num_pieces, endian="big")
            self.has.setall(0)
        if self.has[ev.index]:
            return
        self.has[ev.index] = 1
        t.picker.peer_has(ev.index)
        if self.has.all():
            self.is_seed = True
        proto = self.proto
        if (
            proto is not None
            and not proto.conn.am_interested
            and not t.picker.have(ev.index)
            and t.picker.priority(ev.index) > PiecePriority.NONE
        ):
            self._swarm.update_interest(self)
        elif proto is not None and proto.conn.am_interested:
            self._swarm.fill_requests(self)

    def _on_choke(self, ev: Choke) -> None:
        # With the fast extension requests stay valid until rejected; without
        # it the connection reports RequestsDropped.
        pass

    def _on_requests_dropped(self, ev: RequestsDropped) -> None:
        self.torrent.picker.release_peer(self)

    def _on_unchoke(self, ev: Unchoke) -> None:
        self.last_block_at = time.monotonic()
        self._swarm.fill_requests(self)

    def _on_interested(self, ev: Interested) -> None:
        self._swarm.rechoke_soon()

    def _on_not_interested(self, ev: NotInterested) -> None:
        self._swarm.rechoke_soon()

    def _on_piece(self, ev: Piece) -> None:
        self._block_received(self, ev)

    def _on_request(self, ev: Request) -> None:
        self._uploader.serve_request(self, ev)

    def _on_cancel(self, ev: Cancel) -> None:
        # The connection forgets the request; a queued upload is skipped when
        # send_piece reports it moot.
        pass

    def _on_reject(self, ev: Reject) -> None:
        self.torrent.picker.on_request_rejected(self, ev.index, ev.begin)
        self._swarm.fill_requests(self)

    def _on_allowed_fast(self, ev: AllowedFast) -> None:
        if self.proto is not None and self.proto.conn.peer_choking:
            self._swarm.fill_requests(self)

    def _on_ignored(self, ev: object) -> None:
        pass

    def _on_extended(self, ev: ExtendedMessage) -> None:
        self._ext.on_message(self, ev)

    #: The handler of each wire event (``peer_event`` dispatches on the exact type).
    HANDLERS: ClassVar[dict[type, Callable[[Peer, Any], None]]] = {
        HandshakeReceived: _on_handshake,
        ExtensionHandshake: _on_ext_handshake,
        Bitfield: _on_bitfield,
        HaveAll: _on_have_all,
        HaveNone: _on_have_none,
        Have: _on_have,
        Choke: _on_choke,
        RequestsDropped: _on_requests_dropped,
        Unchoke: _on_unchoke,
        Interested: _on_interested,
        NotInterested: _on_not_interested,
        Piece: _on_piece,
        Request: _on_request,
        Cancel: _on_cancel,
        Reject: _on_reject,
        AllowedFast: _on_allowed_fast,
        Suggest: _on_ignored,
        Port: _on_ignored,
        KeepAlive: _on_ignored,
        ExtendedMessage: _on_extended,
    }


#: ``Peer.HANDLERS``, read as a global on every event.
_HANDLERS = Peer.HANDLERS
