"""A torrent's swarm: which peers we connect to, what we tell them, what we ask.

Kept out of ``torrent.py`` because the connections are a concern of their
own.  :class:`Swarm` owns the addresses we know (every dialable address we
learned, so we can reconnect when we want data again: after a recheck, a
priority change, or a dropped seed), the pool waiting to be dialled and the
half-open connections, within the per-torrent and client-wide limits.  It
admits handshaken peers (one connection per peer id, decided alike at both
ends; no banned peers) and sends them our have-set, keeps our interest in
each peer in step with the picker, tops up each peer's request pipeline, and
runs the choker.  ``tick`` is the torrent's once-a-second housekeeping for
all of that.

Seams (issue 12): the swarm sees its torrent through :class:`SwarmHost` (a
:class:`~core.engine.peer.PeerHost`, since it hands the torrent to the peers
it makes), the client-wide services through :class:`SwarmClient`, and the
two collaborators made after it (they take the swarm as theirs) through
:class:`SwarmPipeline` and :class:`SwarmExtensions`, given once with
``bind``; it never imports ``torrent.py``.  Direction of calls: the torrent
calls its entry points (``add``, ``maybe_dial``, ``attach``,
``accept_incoming``, ``redial_known``, ``update_interest``,
``fill_requests``, ``have_set``, ``tick``) and tells it whether the torrent
is downloading (``downloading``, set on every state change, read on every
request top-up without a call); peers report handshakes, closes and
messages that change interest or requests; the pipeline asks for interest
and request top-ups; the extensions use its address book and dialer.  The
swarm updates the torrent's ``peers`` and the picker's availability, tells
the pipeline (``peer_joined``) and the extensions (``handshake``,
``peer_closed``) about connections, and publishes connection events on the
client's bus.  It keeps the stats of closed connections (``closed_stats``)
for the torrent's totals.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, MutableMapping
from typing import Protocol

from ..bus import EventBus
from ..config import ClientConfig
from ..events import PeerConnected, PeerDisconnected, PeerSource
from ..formats.info import Info
from ..net.dialer import PLAIN_TCP, ConsumerFactory, DialError, Link
from ..net.peer_io import PeerDriver, PeerProtocol
from ..net.stream import StreamConsumer
from ..ratelimit import TokenBucket
from ..stats import TorrentState, TorrentStats
from ..types import InfoHash
from ..wire import (
    Bitfield,
    Choke,
    ExtensionHandshake,
    HaveAll,
    HaveNone,
    Interested,
    NotInterested,
    PeerConnection,
    Request,
    Unchoke,
)
from .choker import Choker, PeerView, is_snubbed
from .peer import Peer, PeerHost

Address = tuple[str, int]

#: While downloading with few peers, known but unconnected peers are retried this often.
REDIAL_INTERVAL = 30.0

#: States in which the torrent dials and accepts peers.
_CONNECTING_STATES = (
    TorrentState.DOWNLOADING,
    TorrentState.SEEDING,
    TorrentState.FETCHING_METADATA,
)


class SwarmClient(Protocol):
    """The client-wide services the swarm uses: identity, bans, connection limits, the bus."""

    @property
    def peer_id(self) -> bytes: ...
    @property
    def bus(self) -> EventBus: ...

    def is_banned(self, ip: str, port: int | None = None, peer_id: bytes | None = None) -> bool: ...
    def may_open_connection(self) -> bool: ...
    def make_driver(self, conn: PeerConnection, peer: Peer, *, outgoing: bool) -> PeerDriver: ...
    async def dial(
        self, address: Address, info_hash: bytes, make_consumer: ConsumerFactory
    ) -> Link: ...
    def connection_closed(self) -> None: ...


class SwarmPipeline(Protocol):
    """The download pipeline, told of each admitted peer (``PiecePipeline`` satisfies it)."""

    def peer_joined(self, peer: Peer) -> None: ...


class SwarmExtensions(Protocol):
    """The BEP 10 extensions: our handshake, and closed peers (``PeerExtensions`` satisfies it)."""

    def handshake(self) -> ExtensionHandshake: ...
    def peer_closed(self, peer: Peer) -> None: ...


class SwarmHost(PeerHost, Protocol):
    """What the swarm may read of its torrent (``Torrent`` satisfies it)."""

    @property
    def client(self) -> SwarmClient: ...
    @property
    def config(self) -> ClientConfig: ...
    @property
    def info_hash(self) -> InfoHash: ...
    @property
    def info(self) -> Info: ...
    @property
    def state(self) -> TorrentState: ...
    @property
    def closed(self) -> bool: ...
    @property
    def started(self) -> bool: ...
    @property
    def peers(self) -> MutableMapping[Peer, None]: ...
    @property
    def download_bucket(self) -> TokenBucket: ...
    @property
    def choker(self) -> Choker: ...


class Swarm:
    """One torrent's peer connections; see the module docstring."""

    #: Given once by ``bind`` (they are made after the swarm, and take it as theirs).
    _pipeline: SwarmPipeline
    _ext: SwarmExtensions

    def __init__(self, torrent: SwarmHost) -> None:
        self.torrent = torrent
        #: The torrent is downloading: told by the torrent on every state change
        #: (read on every request top-up, so not asked for).
        self.downloading = False
        #: Stats of the torrent's closed connections (its totals add the live ones).
        self.closed_stats = TorrentStats()
        self.half_open: dict[Address, Peer] = {}
        self.peer_pool: OrderedDict[Address, PeerSource] = OrderedDict()
        # Every dialable address we learned, so we can reconnect when we want
        # data again (after a recheck, a priority change, or a dropped seed).
        self.known_peers: dict[Address, PeerSource] = {}
        self._last_redial = 0.0
        self.dial_tasks: set[asyncio.Task[None]] = set()
        self._rechoke_handle: asyncio.Handle | None = None

    def bind(self, pipeline: SwarmPipeline, extensions: SwarmExtensions) -> None:
        """The collaborators the swarm tells about connections (the torrent gives them once)."""
        self._pipeline = pipeline
        self._ext = extensions

    def add(self, addresses: Iterable[Address], source: PeerSource) -> None:
        """Remember addresses and queue those we are not connected to for dialing."""
        t = self.torrent
        for host, port in addresses:
            addr = (str(host), int(port))
            if not 0 < addr[1] < 65536 or t.client.is_banned(*addr):
                continue
            self.known_peers.setdefault(addr, source)
            if addr in self.half_open or any(p.address == addr for p in t.peers):
                continue
            self.peer_pool[addr] = source
        self.maybe_dial()

    def maybe_dial(self) -> None:
        t = self.torrent
        if t.closed or t.state not in _CONNECTING_STATES:
            return
        cfg = t.config
        seeding = t.state is TorrentState.SEEDING
        while self.peer_pool:
            if len(t.peers) + len(self.half_open) >= cfg.max_connections_per_torrent:
                return
            if len(self.half_open) >= cfg.max_half_open_per_torrent:
                return
            if not t.client.may_open_connection():
                return
            addr, source = self.peer_pool.popitem(last=False)
            if seeding and not cfg.seed:
                continue
            peer = Peer(t, addr, source, incoming=False)
            self.half_open[addr] = peer
            task = asyncio.create_task(self._dial(peer), name=f"dial {addr}")
            self.dial_tasks.add(task)
            task.add_done_callback(self.dial_tasks.discard)

    async def _dial(self, peer: Peer) -> None:
        """Connect to ``peer`` (the client's dialer picks uTP or TCP, MSE or plain)."""
        t = self.torrent
        wire = t.info_hash.wire

        def driver(link: Link) -> StreamConsumer | None:
            if t.closed:
                return None
            peer.link = link
            return t.client.make_driver(self.new_connection(wire), peer, outgoing=True)

        try:
            await t.client.dial(peer.address, wire, driver)
        except DialError as exc:
            self.half_open.pop(peer.address, None)
            t.client.bus.publish(
                PeerDisconnected(t.info_hash, peer.address, f"dial failed: {exc.reason}")
            )
            self.maybe_dial()

    def new_connection(self, info_hash: bytes | None) -> PeerConnection:
        t = self.torrent
        cfg = t.config
        return PeerConnection(
            t.client.peer_id,
            info_hash,
            t.info if info_hash is not None and t.has_info else None,
            max_queue=cfg.request_queue_len,
            now=time.monotonic(),
            keepalive_interval=cfg.keepalive_interval,
            idle_timeout=cfg.idle_timeout,
            handshake_timeout=cfg.handshake_timeout,
        )

    def attach(self, peer: Peer, proto: PeerProtocol) -> None:
        """The protocol for ``peer`` exists (outgoing: connected; incoming: accepted)."""
        t = self.torrent
        peer.proto = proto
        proto.owner = peer
        proto.torrent_download_bucket = t.download_bucket
        if peer.incoming:
            self.half_open[peer.address] = peer

    def accept_incoming(self, proto: PeerProtocol, link: Link = PLAIN_TCP) -> bool:
        """An incoming connection (over ``link``) asked for this torrent; False to refuse it."""
        t = self.torrent
        cfg = t.config
        if t.closed or t.state not in _CONNECTING_STATES:
            return False
        if len(t.peers) + len(self.half_open) >= cfg.max_connections_per_torrent:
            return False
        peer = Peer(t, proto.address, PeerSource.INCOMING, incoming=True)
        peer.link = link
        self.attach(peer, proto)
        proto.accept(t.info if t.has_info else None)
        return True

    def _keep_new_duplicate(self, new: Peer, old: Peer) -> bool:
        """Two connections to one peer id: must ``new`` replace ``old``?

        Both ends have to keep the same TCP connection. When two peers dial
        each other at once, each sees an incoming and an outgoing connection,
        handshaken in an order the other end cannot know; dropping "the
        newer one" on both ends can then kill both.  So, as libtorrent does:
        connections in the same direction keep the older one, and opposite
        directions keep the one initiated by the lower peer id, which both
        ends compute alike.
        """
        t = self.torrent
        if new.incoming == old.incoming or new.peer_id is None:
            return False
        we_are_lower = t.client.peer_id < new.peer_id
        return (not new.incoming) == we_are_lower

    def peer_handshaken(self, peer: Peer) -> None:
        t = self.torrent
        proto = peer.proto
        assert proto is not None
        self.half_open.pop(peer.address, None)
        for other in list(t.peers):
            if other.peer_id == peer.peer_id:
                if not self._keep_new_duplicate(peer, other):
                    peer.close("duplicate peer id")
                    return
                other.close("duplicate peer id: keeping its connection the other way")
                break
        if t.client.is_banned(*peer.address, peer_id=peer.peer_id):
            peer.close("banned")
            return
        peer.active = True
        t.peers[peer] = None
        self._pipeline.peer_joined(peer)
        conn = proto.conn
        if t.has_info and conn.lengths is None:
            conn.set_lengths(t.info)  # dialled or accepted before a magnet's info arrived
        msgs: list[object] = []
        if conn.extended_enabled:
            msgs.append(self._ext.handshake())
        if t.started:
            # Before the info dict is known and checked (a magnet), the
            # have-set waits: see core.engine.magnet_phase.
            msgs += self.have_set(peer)
        proto.send_many(msgs)  # type: ignore[arg-type]
        t.client.bus.publish(PeerConnected(t.info_hash, peer.address, peer.client, peer.source))
        self.rechoke_soon()

    def have_set(self, peer: Peer) -> list[Bitfield | HaveAll | HaveNone]:
        """Our bitfield (or BEP 6 have all/none) for a peer that has not had it yet."""
        t = self.torrent
        assert peer.proto is not None
        fast = peer.proto.conn.fast_enabled
        peer.have_set_sent = True
        have = t.picker.have_bitfield()
        if fast and have.all():
            return [HaveAll()]
        if fast and not have.any():
            return [HaveNone()]
        if have.any():
            return [Bitfield(have)]
        return []

    def peer_closed(self, peer: Peer, reason: str) -> None:
        t = self.torrent
        self.half_open.pop(peer.address, None)
        if peer.active:
            self._ext.peer_closed(peer)
            peer.active = False
            t.peers.pop(peer, None)
            peer.sync_io_counters()
            self.closed_stats.accumulate(peer.stats)
            if peer.has is not None:
                t.picker.peer_lost(peer.has)
            t.picker.on_peer_gone(peer)
            t.client.bus.publish(PeerDisconnected(t.info_hash, peer.address, reason))
            if not t.closed:
                for other in list(t.peers):
                    self.fill_requests(other)
                self.rechoke_soon()
        else:
            t.client.bus.publish(PeerDisconnected(t.info_hash, peer.address, reason))
        t.client.connection_closed()
        self.maybe_dial()

    def update_interest(self, peer: Peer) -> None:
        t = self.torrent
        proto = peer.proto
        if proto is None or proto.closed or not peer.active:
            return
        want = self.downloading and peer.has is not None and t.picker.is_interesting(peer.has)
        if want and not proto.conn.am_interested:
            proto.send(Interested())
            self.fill_requests(peer)
        elif not want and proto.conn.am_interested:
            proto.send(NotInterested())

    def fill_requests(self, peer: Peer, *, force: bool = False) -> None:
        """Top up ``peer``'s requests; ``force`` skips the batching threshold (priority changes)."""
        t = self.torrent
        proto = peer.proto
        if (
            proto is None
            or proto.closed
            or not peer.active
            or peer.has is None
            or not self.downloading
        ):
            return
        conn = proto.conn
        if not conn.am_interested:
            return
        choked = conn.peer_choking
        if choked and not conn.allowed_fast_in:
            return
        target = peer.pipeline_target(time.monotonic())
        want = target - t.picker.outstanding_count(peer)
        if want < (1 if force else max(1, target // 8)):
            return
        reqs = t.picker.pick(
            peer,
            peer.has,
            want,
            peer_choked_us=choked,
            allowed_fast=conn.allowed_fast_in if choked else None,
            exclusive=peer.on_parole,
        )
        if reqs:
            # A block handed out again after its piece started over (parole
            # isolates a suspect's pieces) may still be in flight, or its
            # cancel unanswered, on this connection: that answer settles it
            # (a block, or a reject that frees it), so it is not sent twice.
            may = conn.may_request
            proto.send_many(
                Request(r.piece, r.begin, r.length) for r in reqs if may(r.piece, r.begin, r.length)
            )

    def rechoke_soon(self) -> None:
        t = self.torrent
        if self._rechoke_handle is None and not t.closed:
            loop = asyncio.get_running_loop()
            self._rechoke_handle = loop.call_soon(self._rechoke_now)

    def _rechoke_now(self) -> None:
        self._rechoke_handle = None
        self.rechoke(time.monotonic())

    def rechoke(self, now: float) -> None:
        t = self.torrent
        if not t.has_info:
            return  # nothing to upload yet: leave everyone choked
        cfg = t.config
        seeding = t.state is TorrentState.SEEDING
        views = []
        for peer in t.peers:
            proto = peer.proto
            if proto is None or proto.closed:
                continue
            conn = proto.conn
            views.append(
                PeerView(
                    id=peer,
                    interested_in_us=conn.peer_interested
                    and not cfg.no_upload
                    and t.state in (TorrentState.DOWNLOADING, TorrentState.SEEDING),
                    download_rate=peer.down_rate.rate(now),
                    upload_rate=peer.up_rate.rate(now),
                    snubbed=is_snubbed(
                        now,
                        peer.last_block_at,
                        we_are_interested=conn.am_interested,
                        peer_chokes_us=conn.peer_choking,
                    ),
                    connected_at=peer.connected_at,
                    is_seed=peer.is_seed,
                )
            )
        decision = t.choker.update(now, views, seeding=seeding)
        for pid in decision.choke:
            p = pid if isinstance(pid, Peer) else None
            if p is not None and p.proto is not None:
                p.proto.send(Choke())
                p.upload_queue.clear()
                p.paid_uploads.clear()
        for pid in decision.unchoke:
            p = pid if isinstance(pid, Peer) else None
            if p is not None and p.proto is not None:
                p.proto.send(Unchoke())

    def redial_known(self) -> None:
        """Queue known peers we are not connected to (used when we want data again)."""
        t = self.torrent
        self._last_redial = time.monotonic()
        connected = {p.address for p in t.peers} | set(self.half_open)
        for addr, source in self.known_peers.items():
            if addr not in connected and not t.client.is_banned(addr[0]):
                self.peer_pool.setdefault(addr, source)

    def tick(self) -> None:
        t = self.torrent
        now = time.monotonic()
        if (
            self.downloading
            and not self.peer_pool
            and len(t.peers) < t.config.max_connections_per_torrent // 2
            and now - self._last_redial >= REDIAL_INTERVAL
        ):
            self.redial_known()
        self.rechoke(now)
        for peer in list(t.peers):
            self.update_interest(peer)
            if peer.proto is not None and peer.proto.conn.am_interested:
                self.fill_requests(peer)
        self.maybe_dial()
