"""A torrent's BEP 10 extensions: ``ut_metadata`` (BEP 9) and ``ut_pex`` (BEP 11).

The protocol decisions live in sans-IO modules: :class:`~core.engine.metadata.MetadataFetcher`
and :class:`~core.engine.metadata.MetadataServer` (which piece to ask whom, trust,
size votes, request rates) and :class:`~core.engine.pex.PexState` (what to tell one
peer and when, how much of what it tells us to believe).  This module is the
glue that feeds them the torrent's live connections and one timer, and turns
their answers into extended messages.  ``Torrent`` calls it at four points:
the extension handshake we send, the one we receive, an extended message,
and a closed connection.

Choices, and why:

* Fetching runs only while the torrent has no info dict (a magnet).  The
  blame key of a peer is :meth:`Client.blame_key`, the same key hash-failure
  bans use: a peer that sent part of a whole that failed the info-hash stays
  distrusted when it reconnects (on loopback, where every test peer shares
  an address, the peer id tells them apart).  A peer that alone sent a whole
  that failed the check, or that broke BEP 9 (a piece index past the end, a
  wrong ``total_size``), is disconnected as well.
* Serving starts as soon as we have the verified info dict, and the
  ``metadata_size`` we advertise comes with it: when a magnet's metadata
  arrives, every connected peer is sent a fresh extension handshake (BEP 10
  allows repeats), so a peer that connected while we were still fetching can
  fetch from us.  Requests before that are rejected.
* PEX runs with a :class:`PexState` per connection that advertised
  ``ut_pex``, on ``ClientConfig.pex_interval``, and never for a private
  torrent (BEP 27) or with ``ClientConfig.pex`` off: ``ut_pex`` is then left
  out of our handshake, so a peer that sends it anyway breaks the protocol
  and is dropped by the connection before we ever read its addresses.  A
  magnet's privacy is unknown until its info arrives; if it turns out
  private, ``ut_pex`` is withdrawn (id 0 in a new handshake), and the peers
  and addresses PEX gave us are dropped, since BEP 27 allows only the
  torrent's trackers as a source.
* The peers we advertise are our connected peers at an address others can
  dial: the address we dialled, or for an incoming peer its IP with the
  listen port from its handshake (``p``); an incoming peer that did not say
  is left out, as libtorrent does.
* What a peer tells us is rate-limited by its PexState (one message honoured
  per ``min_accept_interval``, at most 50 addresses) and by the room left
  under ``ClientConfig.torrent_peers_high_water`` known addresses, so no
  number of hostile messages or connections grows the pool past that.
  ``min_accept_interval`` is 45 s, or three quarters of our own interval
  when that is shorter: a swarm configured to gossip faster (tests, small
  private swarms) is heard at its pace.

Seams: it sees the torrent through :class:`ExtensionsHost`, the swarm's
address book through :class:`ExtensionsSwarm` and each connection through
:class:`ExtPeer` (``Torrent``, ``Swarm`` and ``Peer`` satisfy them); it never
imports ``torrent.py`` or ``peer.py``.  Direction of calls: the torrent and
the swarm call its hooks (``handshake``, ``on_handshake``, ``on_message``,
``peer_closed``, ``info_known``, ``close``); it announces back only two
things: addresses learned over PEX (``host.add_peers``), and the verified
raw info dict, through the ``on_metadata`` callback (scheduled with
``host.schedule``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, MutableMapping
from typing import Any, Protocol

from ..config import ClientConfig
from ..errors import RemoteProtocolError
from ..events import PeerSource
from ..formats.info import Info
from ..formats.magnet import Magnet
from ..formats.metainfo import Metainfo
from ..net.dialer import Link
from ..net.peer_io import PeerProtocol
from ..stats import ConnStats
from ..types import InfoHash
from ..wire import (
    UT_METADATA,
    UT_PEX,
    ExtendedMessage,
    ExtensionHandshake,
    MetadataReject,
    MetadataRequest,
    decode_metadata_message,
    encode_metadata_message,
)
from ..wire.pex import decode_pex
from .metadata import BlockResult, MetadataFetcher, MetadataServer
from .pex import DEFAULT_MIN_ACCEPT_INTERVAL, PexState, local_extensions, peer_flags

log = logging.getLogger(__name__)

Address = tuple[str, int]


class ExtPeer(Protocol):
    """One connection, as far as the extensions go."""

    @property
    def proto(self) -> PeerProtocol | None: ...
    @property
    def address(self) -> Address: ...
    @property
    def peer_id(self) -> bytes | None: ...
    @property
    def incoming(self) -> bool: ...
    @property
    def is_seed(self) -> bool: ...
    @property
    def source(self) -> PeerSource: ...
    @property
    def stats(self) -> ConnStats: ...
    @property
    def link(self) -> Link: ...

    def close(self, reason: str) -> None: ...


class ExtensionsClient(Protocol):
    """The client-wide facts the extensions read."""

    @property
    def config(self) -> ClientConfig: ...
    @property
    def listen_port(self) -> int: ...

    def blame_key(self, ip: str, peer_id: bytes | None) -> str: ...


class ExtensionsHost(Protocol):
    """What the extensions may read of their torrent and ask of it."""

    @property
    def client(self) -> ExtensionsClient: ...
    @property
    def name(self) -> str: ...
    @property
    def info_hash(self) -> InfoHash: ...
    @property
    def magnet(self) -> Magnet | None: ...
    @property
    def has_info(self) -> bool: ...
    @property
    def info(self) -> Info: ...
    @property
    def metainfo(self) -> Metainfo: ...
    @property
    def peers(self) -> Collection[ExtPeer]: ...

    def add_peers(self, addresses: Iterable[Address], source: PeerSource) -> None: ...
    def schedule(self, coro: Coroutine[Any, Any, object]) -> None: ...


class ExtensionsSwarm(Protocol):
    """The swarm's address book and dialer, as the extensions use them."""

    @property
    def half_open(self) -> Mapping[Address, ExtPeer]: ...
    @property
    def peer_pool(self) -> MutableMapping[Address, PeerSource]: ...
    @property
    def known_peers(self) -> MutableMapping[Address, PeerSource]: ...

    def redial_known(self) -> None: ...
    def maybe_dial(self) -> None: ...


#: Longest sleep of the extension timer (it also wakes on its deadlines).
MAX_TICK = 1.0
#: While fetching metadata with nobody connected, known peers are redialled this often.
METADATA_REDIAL_INTERVAL = 5.0


class PeerExtensions:
    """ut_metadata and ut_pex for one torrent; see the module docstring."""

    def __init__(self, torrent: ExtensionsHost, swarm: ExtensionsSwarm) -> None:
        self.torrent = torrent
        self.swarm = swarm
        self.fetcher: MetadataFetcher[str] | None = None
        self.server: MetadataServer[str] | None = None
        self.pex: dict[ExtPeer, PexState] = {}
        self._metadata_complete: bool = False
        #: Called with the verified raw info dict (set by core.engine.magnet_phase).
        self.on_metadata: Callable[[bytes], Coroutine[Any, Any, None]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_redial = 0.0
        self._closed = False
        if torrent.magnet is not None:
            self.fetcher = MetadataFetcher(torrent.info_hash, now=time.monotonic())

    # ------------------------------------------------------------------ policy

    @property
    def pex_enabled(self) -> bool:
        t = self.torrent
        return t.client.config.pex and not (t.has_info and t.info.private)

    def _server(self) -> MetadataServer[str] | None:
        """The metadata server, made on first use once the info dict is known."""
        if self.server is None and self.torrent.has_info:
            self.server = MetadataServer(self.torrent.metainfo.raw_info)
        return self.server

    def handshake(self) -> ExtensionHandshake:
        """Our BEP 10 handshake: extensions, client name, queue depth, listen port, size."""
        cfg = self.torrent.client.config
        server = self._server()
        m = local_extensions(private=not self.pex_enabled)
        if UT_PEX not in m and cfg.pex and self.torrent.magnet is not None:
            m[UT_PEX] = 0  # a private magnet: withdraw what the first handshake offered
        return ExtensionHandshake(
            m=m,
            v=cfg.client_name,
            reqq=cfg.request_queue_len,
            p=self.torrent.client.listen_port or None,
            metadata_size=server.metadata_size if server is not None else None,
        )

    def _key(self, peer: ExtPeer) -> str:
        return self.torrent.client.blame_key(peer.address[0], peer.peer_id)

    # ------------------------------------------------------------------ hooks

    def on_handshake(self, peer: ExtPeer, hs: ExtensionHandshake) -> None:
        """The peer's extension handshake (possibly a repeated one)."""
        proto = peer.proto
        if proto is None or proto.closed or self._closed:
            return
        remote = proto.conn.remote_extensions
        now = time.monotonic()
        fetcher = self.fetcher
        if (
            fetcher is not None
            and UT_METADATA in remote
            and hs.metadata_size is not None
            and fetcher.add_peer(self._key(peer), hs.metadata_size)
        ):
            self._pump(now)
        if self.pex_enabled and UT_PEX in remote and peer not in self.pex:
            interval = self.torrent.client.config.pex_interval
            self.pex[peer] = PexState(
                now=now,
                remote=self._pex_address(peer),
                interval=interval,
                min_accept_interval=min(DEFAULT_MIN_ACCEPT_INTERVAL, 0.75 * interval),
            )
        elif UT_PEX not in remote:
            self.pex.pop(peer, None)
        self._ensure_timer()

    def on_message(self, peer: ExtPeer, msg: ExtendedMessage) -> None:
        try:
            if msg.name == UT_METADATA:
                self._on_metadata(peer, msg.payload)
            elif msg.name == UT_PEX:
                self._on_pex(peer, msg.payload)
        except RemoteProtocolError as exc:
            peer.close(str(exc))

    def peer_closed(self, peer: ExtPeer) -> None:
        self.pex.pop(peer, None)
        key = self._key(peer)
        # Another connection of the same peer may still be open (duplicates
        # are sorted out after the handshake): keep it counted then.
        if self.fetcher is not None and not any(
            self._key(p) == key for p in self.torrent.peers if p is not peer
        ):
            self.fetcher.on_peer_gone(key)
            self._pump(time.monotonic())
        if self.server is not None:
            self.server.forget(key)

    def close(self) -> None:
        self._closed = True
        self.pex.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    # ------------------------------------------------------------------ ut_metadata

    def _on_metadata(self, peer: ExtPeer, payload: bytes) -> None:
        msg = decode_metadata_message(payload)
        proto = peer.proto
        if proto is None or proto.closed:
            return
        now = time.monotonic()
        key = self._key(peer)
        if isinstance(msg, MetadataRequest):
            if UT_METADATA not in proto.conn.remote_extensions:
                return  # nowhere to send an answer
            server = self._server()
            answer = MetadataReject(msg.piece) if server is None else server.handle(key, msg, now)
            proto.send(ExtendedMessage(UT_METADATA, encode_metadata_message(answer)))
            return
        fetcher = self.fetcher
        if fetcher is None or self._metadata_complete:
            return  # late answers after we have the info: harmless
        if isinstance(msg, MetadataReject):
            fetcher.on_reject(key, msg.piece, now)
            self._pump(now)
            return
        peer.stats.metadata_chunks_read += 1
        result = fetcher.on_data(key, msg.piece, msg.total_size, msg.data, now)
        if result is BlockResult.INVALID:
            peer.close("broke BEP 9: metadata piece out of range or of the wrong size")
        elif result is BlockResult.HASH_FAILED:
            log.info("%s: metadata from %s failed the info-hash", self.torrent.name, key)
            culprits = [p for p in self.torrent.peers if self._key(p) in fetcher.distrusted]
            if len(culprits) == 1:
                culprits[0].close("sent metadata that does not match the info-hash")
        elif result is BlockResult.COMPLETE:
            raw = fetcher.result()
            assert raw is not None
            self._metadata_complete = True
            if self.on_metadata is not None:
                self.torrent.schedule(self.on_metadata(raw))
            return
        self._pump(now)

    def _pump(self, now: float) -> None:
        """Send every metadata request the fetcher wants sent now."""
        fetcher = self.fetcher
        if fetcher is None or self._metadata_complete:
            return
        for peer in list(self.torrent.peers):
            proto = peer.proto
            if proto is None or proto.closed or UT_METADATA not in proto.conn.remote_extensions:
                continue
            pieces = fetcher.requests_for(self._key(peer), now)
            if pieces:
                proto.send_many(
                    ExtendedMessage(UT_METADATA, encode_metadata_message(MetadataRequest(i)))
                    for i in pieces
                )
        self._wake.set()

    def info_known(self) -> None:
        """The info dict is known and verified (a magnet's arrived): serve it, advertise it."""
        t = self.torrent
        self.fetcher = None
        self._server()
        if t.info.private:
            self._drop_pex_peers()
        hs = self.handshake()
        for peer in list(t.peers):
            proto = peer.proto
            if proto is not None and not proto.closed and proto.conn.extended_enabled:
                proto.send(hs)

    def _drop_pex_peers(self) -> None:
        """A private torrent (BEP 27): forget PEX, and every peer it brought."""
        t, swarm = self.torrent, self.swarm
        self.pex.clear()
        for addr in [a for a, src in swarm.peer_pool.items() if src is PeerSource.PEX]:
            del swarm.peer_pool[addr]
        for addr in [a for a, src in swarm.known_peers.items() if src is PeerSource.PEX]:
            del swarm.known_peers[addr]
        for peer in [*t.peers, *swarm.half_open.values()]:
            if peer.source is PeerSource.PEX:
                peer.close("private torrent: peers only from its trackers")

    # ------------------------------------------------------------------ ut_pex

    def _pex_address(self, peer: ExtPeer) -> Address | None:
        """Where other peers can dial ``peer`` (None if we do not know)."""
        if not peer.incoming:
            return peer.address
        proto = peer.proto
        hs = proto.conn.remote_ext_handshake if proto is not None else None
        if hs is None or hs.p is None:
            return None
        return (peer.address[0], hs.p)

    def _current_peers(self) -> dict[Address, int]:
        out: dict[Address, int] = {}
        for peer in self.torrent.peers:
            addr = self._pex_address(peer)
            if addr is not None:
                # BEP 11 hints from what the connection runs on: uTP, and
                # encryption (it spoke MSE with RC4, so it accepts it).
                link = peer.link
                out[addr] = peer_flags(
                    outgoing=not peer.incoming,
                    seed=peer.is_seed,
                    utp=link.transport == "utp",
                    prefers_encryption=link.encrypted,
                )
        return out

    def _on_pex(self, peer: ExtPeer, payload: bytes) -> None:
        state = self.pex.get(peer)
        if state is None or not self.pex_enabled:
            return  # a message racing our withdrawal of ut_pex: ignore it
        msg = decode_pex(payload)
        t = self.torrent
        room = t.client.config.torrent_peers_high_water - len(self.swarm.known_peers)
        addrs = state.accept(msg, time.monotonic(), room=room)
        own = t.client.listen_port
        addrs = [a for a in addrs if not (a[1] == own and _is_local(a[0], t))]
        if addrs:
            t.add_peers(addrs, PeerSource.PEX)

    def _send_pex(self, now: float) -> None:
        if not self.pex or not self.pex_enabled:
            return
        current: dict[Address, int] | None = None
        for peer, state in list(self.pex.items()):
            if not state.message_due(now):
                continue
            proto = peer.proto
            if proto is None or proto.closed:
                continue
            if current is None:
                current = self._current_peers()
            payload = state.build_message(current, now)
            if payload is not None:
                proto.send(ExtendedMessage(UT_PEX, payload))

    # ------------------------------------------------------------------ timer

    def _ensure_timer(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name=f"extensions {self.torrent.name}")

    def start(self) -> None:
        """Start the timer now (a magnet: redial while fetching, even before any handshake)."""
        self._ensure_timer()

    async def _run(self) -> None:
        while not self._closed:
            now = time.monotonic()
            try:
                self._tick(now)
            except Exception:  # pragma: no cover - housekeeping must never die
                log.exception("%s: extension timer failed", self.torrent.name)
            self._wake.clear()
            delay = self._next_deadline(now) - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            else:
                await asyncio.sleep(0.01)

    def _next_deadline(self, now: float) -> float:
        deadline = now + MAX_TICK
        if self.fetcher is not None and not self._metadata_complete:
            fd = self.fetcher.next_deadline()
            if fd is not None:
                deadline = min(deadline, fd)
        for state in self.pex.values():
            deadline = min(deadline, state.next_deadline())
        return max(deadline, now + 0.05)

    def _tick(self, now: float) -> None:
        t, swarm = self.torrent, self.swarm
        fetcher = self.fetcher
        if fetcher is not None and not self._metadata_complete:
            fetcher.timeouts(now)
            self._pump(now)
            if (
                not t.peers
                and not swarm.half_open
                and not swarm.peer_pool
                and now - self._last_redial >= METADATA_REDIAL_INTERVAL
            ):
                self._last_redial = now
                swarm.redial_known()
                swarm.maybe_dial()
        self._send_pex(now)


def _is_local(host: str, torrent: ExtensionsHost) -> bool:
    """Is ``host`` one of our listen addresses (or loopback, which always is)?"""
    if host in torrent.client.config.listen_addresses:
        return True
    return host in ("127.0.0.1", "::1")
