"""One connected peer of one torrent: turns wire events into torrent actions.

A ``Peer`` owns a :class:`~core.net.peer_io.PeerProtocol` once its handshake
is done.  Everything here runs synchronously in the protocol's read callback
on the event loop; slow work (disk, hashing) is handed to the torrent, which
runs it in worker threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bitarray import bitarray

from ..events import PeerSource
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
from .picker import CHUNK_SIZE

if TYPE_CHECKING:
    from .torrent import Torrent

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


class Peer:
    """Per-connection state of one peer in one torrent."""

    def __init__(
        self,
        torrent: Torrent,
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
            self.torrent._swarm.peer_closed(self, reason)

    def peer_writable(self, proto: PeerProtocol) -> None:
        self.torrent._upload.serve_queued(self)

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
            self.torrent._swarm.peer_closed(self, reason)

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
        self.torrent._swarm.peer_handshaken(self)

    def _on_ext_handshake(self, ev: ExtensionHandshake) -> None:
        if ev.v:
            self.client = ev.v[:64]
        if ev.reqq:
            self.remote_reqq = max(1, min(ev.reqq, 2000))
            self._pipeline_until = -1.0
        self.torrent._ext.on_handshake(self, ev)

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
        t._swarm.update_interest(self)

    def _on_have_all(self, ev: HaveAll) -> None:
        t = self.torrent
        if not t.has_info:
            return
        self._forget_have_set()
        self.has = bitarray(t.num_pieces, endian="big")
        self.has.setall(1)
        self.is_seed = True
        t.picker.peer_have_all()
        t._swarm.update_interest(self)

    def _on_have_none(self, ev: HaveNone) -> None:
        t = self.torrent
        if not t.has_info:
            return
        self._forget_have_set()
        self.has = bitarray(t.num_pieces, endian="big")
        self.has.setall(0)
        self.is_seed = False
        t._swarm.update_interest(self)

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
            t._swarm.update_interest(self)
        elif proto is not None and proto.conn.am_interested:
            t._swarm.fill_requests(self)

    def _on_choke(self, ev: Choke) -> None:
        # With the fast extension requests stay valid until rejected; without
        # it the connection reports RequestsDropped.
        pass

    def _on_requests_dropped(self, ev: RequestsDropped) -> None:
        self.torrent.picker.release_peer(self)

    def _on_unchoke(self, ev: Unchoke) -> None:
        self.last_block_at = time.monotonic()
        self.torrent._swarm.fill_requests(self)

    def _on_interested(self, ev: Interested) -> None:
        self.torrent._swarm.rechoke_soon()

    def _on_not_interested(self, ev: NotInterested) -> None:
        self.torrent._swarm.rechoke_soon()

    def _on_piece(self, ev: Piece) -> None:
        self.torrent._pipeline.block_received(self, ev)

    def _on_request(self, ev: Request) -> None:
        self.torrent._upload.serve_request(self, ev)

    def _on_cancel(self, ev: Cancel) -> None:
        # The connection forgets the request; a queued upload is skipped when
        # send_piece reports it moot.
        pass

    def _on_reject(self, ev: Reject) -> None:
        self.torrent.picker.on_request_rejected(self, ev.index, ev.begin)
        self.torrent._swarm.fill_requests(self)

    def _on_allowed_fast(self, ev: AllowedFast) -> None:
        t = self.torrent
        if self.proto is not None and self.proto.conn.peer_choking:
            t._swarm.fill_requests(self)

    def _on_ignored(self, ev: object) -> None:
        pass

    def _on_extended(self, ev: ExtendedMessage) -> None:
        self.torrent._extended_message(self, ev)


_HANDLERS: dict[type, Callable[[Peer, Any], None]] = {
    HandshakeReceived: Peer._on_handshake,
    ExtensionHandshake: Peer._on_ext_handshake,
    Bitfield: Peer._on_bitfield,
    HaveAll: Peer._on_have_all,
    HaveNone: Peer._on_have_none,
    Have: Peer._on_have,
    Choke: Peer._on_choke,
    RequestsDropped: Peer._on_requests_dropped,
    Unchoke: Peer._on_unchoke,
    Interested: Peer._on_interested,
    NotInterested: Peer._on_not_interested,
    Piece: Peer._on_piece,
    Request: Peer._on_request,
    Cancel: Peer._on_cancel,
    Reject: Peer._on_reject,
    AllowedFast: Peer._on_allowed_fast,
    Suggest: Peer._on_ignored,
    Port: Peer._on_ignored,
    KeepAlive: Peer._on_ignored,
    ExtendedMessage: Peer._on_extended,
}
