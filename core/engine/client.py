"""``Client``: owns the torrents, the listeners, the DHT, the bus, the rate limits and the bans.

Use it as an async context manager::

    async with Client(ClientConfig(listen_port=0)) as client:
        t = await client.add_torrent_file("x.torrent")
        t.add_peers([("127.0.0.1", 6881)])
        await t.wait_complete()

The DHT (``ClientConfig.dht``, on by default) and uTP (``ClientConfig.utp``,
on by default) share one UDP socket per listen address with the TCP listen
port's number, so peers reach both transports at one port number and
announces can use ``implied_port``.  The client owns those sockets
(:class:`~core.net.udp_mux.UdpMux`), the
:class:`~core.engine.dht_service.DhtService` and the
:class:`~core.net.utp_socket.UtpSocket` on each.  A DHT that cannot start
(the UDP port is taken) is logged and left off: ``client.dht`` is None and
everything else works.  Its node table is kept in ``data_dir / "dht.dat"``
when the client keeps state on disk (``default_storage == "file"``; a
"memory" client leaves no files behind).

Peer connections go out through a :class:`~core.net.dialer.Dialer` (uTP
first, then TCP; MSE per ``ClientConfig.encryption``) and come in through
the TCP listener and the uTP sockets, each behind the encryption policy's
layer (:class:`~core.net.listener.Accepted`), to the handshake router.  The
transport settings (``tcp``, ``utp``, ``encryption``, ``allowed_crypto``) are
read at each dial and accept, so :meth:`Client.set_connection_policy` applies
to new connections at once.  Turning on a transport whose sockets were not
opened at start needs a restart: TCP off at start (no listener), or uTP
with neither uTP nor the DHT on at start (no UDP socket).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import ipaddress
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ..bus import EventBus
from ..config import ClientConfig, generate_peer_id
from ..dht.events import AnnounceReceived, Bootstrapped, DhtEvent
from ..dht.types import DhtSettings
from ..errors import DhtError, RemoteProtocolError, TorrentError
from ..events import ClientSnapshot, DhtBootstrapped, TorrentAdded, TorrentRemoved, TorrentRow
from ..formats.magnet import Magnet
from ..formats.metainfo import Metainfo
from ..mse.handshake import SkeyIndex
from ..net.dialer import ConsumerFactory, Dialer, Link, TransportPolicy
from ..net.listener import Accepted
from ..net.peer_io import PeerDriver, PeerProtocol
from ..net.stream import StreamConsumer
from ..net.tcp import TcpStream
from ..net.udp_mux import UdpMux
from ..net.utp_socket import UtpSocket, UtpStream
from ..ratelimit import TokenBucket
from ..stats import ClientStats, RateMeter, TorrentState
from ..storage import CompletionStore, FileStorage, Layout, MemoryStorage, Storage
from ..tracker import TrackerTransports
from ..types import InfoHash
from ..wire import Event, HandshakeReceived, PeerConnection, RemoteInfoHash
from .dht_service import DhtService
from .magnet_phase import StorageFactory, add_magnet
from .peer import Peer
from .torrent import Torrent

log = logging.getLogger(__name__)

#: How often a ClientSnapshot is published while someone listens.
SNAPSHOT_INTERVAL = 0.5
#: Longest ``close`` waits for the DHT to save its table and close.
DHT_CLOSE_TIMEOUT = 5.0


def _is_loopback(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _bind_address(listen: Sequence[str], *, v6: bool) -> str:
    """The local address for UDP tracker sockets: the first listen address of the family."""
    for host in listen:
        if (":" in host) == v6:
            return host
    return "::" if v6 else "0.0.0.0"


class _HandshakeRouter:
    """Owner of an incoming connection until it names a torrent we serve.

    ``accepted`` (set right after the router is made) is the connection's
    layers under the driver: what it says about the transport and the
    encryption goes to the torrent with the connection.
    """

    accepted: Accepted

    def __init__(self, client: Client) -> None:
        self.client = client

    def peer_event(self, proto: PeerProtocol, event: Event) -> None:
        if isinstance(event, RemoteInfoHash):
            client = self.client
            torrent = client.torrent_by_wire(event.info_hash)
            link = self.accepted.link
            if client.connections > client.config.max_connections:
                proto.close("too many connections")
            elif not getattr(client.config, link.transport):
                # Turned off since the listener opened (the settings apply live).
                proto.close(f"{link.transport} is turned off")
            elif torrent is None or not torrent.accept_incoming(proto, link):
                proto.close("unknown or unavailable info-hash")
        elif isinstance(event, HandshakeReceived):  # pragma: no cover - accept() hands over
            proto.close("handshake without a torrent")

    def peer_closed(self, proto: PeerProtocol, reason: str) -> None:
        # No torrent, so no PeerDisconnected event: the log is the record.
        log.debug("incoming %s:%d dropped before handshake: %s", *proto.address, reason)
        self.client.connection_closed()

    def peer_writable(self, proto: PeerProtocol) -> None:
        pass


class Client:
    """A BitTorrent client: torrents, listeners, limits, the event bus."""

    def __init__(self, config: ClientConfig | None = None) -> None:
        self.config = config or ClientConfig()
        self.peer_id = generate_peer_id(self.config.peer_id_prefix)
        self.bus = EventBus()
        self.torrents: dict[InfoHash, Torrent] = {}
        self._torrents_by_wire: dict[bytes, Torrent] = {}
        self._servers: list[asyncio.Server] = []
        self.listen_port = 0
        # The UDP sockets (one per listen address), the DHT and the uTP sockets on them.
        self._udp: list[UdpMux] = []
        self._dht: DhtService | None = None
        self._utp: dict[socket.AddressFamily, UtpSocket] = {}
        #: Opens outgoing connections (and remembers which fallbacks each peer needed).
        self.dialer = Dialer(self._utp_for)
        # MSE responders name the torrent by HASH('req2', info_hash): every wire hash's.
        self._skeys = SkeyIndex()
        self._connections = 0
        self._banned: dict[str, str] = {}
        self._banned_ids: dict[bytes, str] = {}  # loopback peers only, see ban()
        now = time.monotonic()
        self.download_bucket = TokenBucket(self.config.download_rate_limit, now=now)
        self.upload_bucket = TokenBucket(self.config.upload_rate_limit, now=now)
        self.completion: CompletionStore | None = None
        # Disk work of every torrent (hashing, reads, writes, SQLite): a pool of
        # our own so shutdown can wait for it, sized for a few disks' worth of
        # parallel hashing on top of the default executor's small jobs.
        self.io_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(4, min(16, (os.cpu_count() or 2) * 2)),
            thread_name_prefix="pytorrent-io",
        )
        self._snapshot_task: asyncio.Task[None] | None = None
        self._down_meter = RateMeter()
        self._up_meter = RateMeter()
        self._closed = False
        # Shared by every torrent's announces: one HTTP session, one UDP
        # tracker client (both opened on first use), and the BEP 7 "key"
        # that lets trackers recognise this session across address changes.
        self.tracker_key = secrets.randbits(32)
        self.trackers = TrackerTransports(
            user_agent=self.config.client_name,
            bind_v4=_bind_address(self.config.listen_addresses, v6=False),
            bind_v6=_bind_address(self.config.listen_addresses, v6=True),
        )

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        cfg = self.config
        if cfg.default_storage == "file":
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            self.completion = await asyncio.to_thread(
                CompletionStore, cfg.data_dir / "completion.sqlite"
            )
        if cfg.accept_incoming and cfg.tcp:
            await self._listen()
        if cfg.dht or cfg.utp:
            self._udp = await self._open_udp()
            if not self.listen_port and self._udp and cfg.utp and cfg.accept_incoming:
                # No TCP listener: uTP's port is the one peers and trackers hear of.
                self.listen_port = self._udp[0].local_address[1]
        # A uTP socket even when uTP is off, so turning it on later needs no
        # restart: with ``utp`` off nothing is dialled and every SYN is refused.
        self._start_utp()
        if cfg.dht:
            await self._start_dht()
        self._snapshot_task = asyncio.create_task(self._snapshot_loop(), name="snapshots")

    async def _listen(self) -> None:
        """Listen on every configured address with one port (IPv4 first picks it)."""
        loop = asyncio.get_running_loop()
        port = self.config.listen_port
        addresses = sorted(self.config.listen_addresses, key=lambda a: ":" in a)
        errors = []
        for host in addresses:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, port))
                sock.listen(128)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                errors.append(f"{host}: {exc.strerror or exc}")
                continue
            server = await loop.create_server(self._incoming_protocol, sock=sock)
            self._servers.append(server)
            if port == 0:
                port = sock.getsockname()[1]
        if not self._servers:
            raise TorrentError(f"cannot listen on port {self.config.listen_port}: {errors}")
        self.listen_port = port

    async def _open_udp(self) -> list[UdpMux]:
        """One UDP socket per listen address, on the TCP listen port's number when there is one.

        The first socket picks the port when neither TCP nor the config
        fixed one; an address whose socket cannot be opened is skipped.
        """
        port = self.listen_port or self.config.listen_port
        muxes: list[UdpMux] = []
        for host in sorted(self.config.listen_addresses, key=lambda a: ":" in a):
            try:
                mux = await UdpMux.open(host, port)
            except (OSError, TorrentError) as exc:
                log.warning("no UDP socket on %s: %s", _endpoint(host, port), exc)
                continue
            muxes.append(mux)
            if port == 0:
                port = mux.local_address[1]
        return muxes

    def _start_utp(self) -> None:
        """A uTP socket on each UDP socket (incoming streams accepted when ``accept_incoming``)."""
        on_accept = self._accept_utp if self.config.accept_incoming else None
        for mux in self._udp:
            self._utp[mux.family] = UtpSocket(
                mux, on_accept=on_accept, max_half_open=self.config.max_half_open
            )
        if not self._utp and self.config.utp:
            log.warning("uTP off: no UDP socket could be opened")

    def _utp_for(self, ip: str) -> UtpSocket | None:
        """The uTP socket for ``ip``'s address family (the dialer's lookup)."""
        return self._utp.get(socket.AF_INET6 if ":" in ip else socket.AF_INET)

    async def _start_dht(self) -> None:
        """Start the DHT; on failure log it and go on without (``self.dht`` stays None)."""
        cfg = self.config
        muxes = self._udp
        if not muxes:
            log.warning("DHT off: no UDP socket could be opened")
            return
        state = cfg.data_dir / "dht.dat" if cfg.default_storage == "file" else None
        settings = DhtSettings(read_only=cfg.dht_read_only, enforce_node_id=cfg.dht_enforce_node_id)
        try:
            self._dht = await DhtService.open(
                settings,
                muxes=muxes,
                bootstrap=cfg.dht_bootstrap_nodes,
                state_path=state,
                on_event=self._dht_event,
            )
        except (DhtError, OSError) as exc:
            log.warning("DHT off: %s", exc)
            if not self._utp:  # nobody else uses the sockets: free the port
                await asyncio.gather(*(m.aclose() for m in muxes), return_exceptions=True)
                self._udp = []
            return
        log.info("DHT on UDP port %d, node id %s", self._dht.port, self._dht.node_id.hex())

    def _dht_event(self, event: DhtEvent) -> None:
        """What the DHT node tells us besides answers to our own lookups."""
        if isinstance(event, Bootstrapped):
            self.bus.publish(DhtBootstrapped(event.nodes, event.ok))
        elif isinstance(event, AnnounceReceived):
            # Someone announced a torrent we have to our node: a peer for it.
            torrent = self.torrent_by_wire(event.info_hash)
            if torrent is not None:
                torrent.dht_peer_announced(event.peer)

    @property
    def dht(self) -> DhtService | None:
        """The DHT, or None when it is off (``ClientConfig.dht``) or could not start."""
        return self._dht

    def dht_servers(self) -> list[DhtService]:
        """Every DHT this client runs (one, serving both address families; or none)."""
        return [] if self._dht is None else [self._dht]

    def add_dht_nodes(self, nodes: Sequence[str]) -> None:
        """Ping DHT nodes (``"host:port"``); those that answer join the routing table.

        No-op when the DHT is off; :class:`~core.errors.DhtError` for a
        malformed address.
        """
        if self._dht is not None:
            self._dht.add_nodes(nodes)

    def _incoming_protocol(self) -> TcpStream:
        """A new TCP connection on the listener: its stream, through the policy's layers."""
        return TcpStream(self._incoming_consumer("tcp"))

    def _accept_utp(self, stream: UtpStream) -> None:
        """A new uTP connection on a UDP socket: the same layers as TCP's (unless uTP is off)."""
        if self.config.utp:
            stream.set_consumer(self._incoming_consumer("utp"))
        else:
            stream.abort()

    def _incoming_consumer(self, transport: str) -> StreamConsumer:
        """An incoming connection's driver (routed by its handshake) and the layers under it."""
        self._connections += 1
        conn = PeerConnection(
            self.peer_id,
            None,
            max_queue=self.config.request_queue_len,
            now=time.monotonic(),
            keepalive_interval=self.config.keepalive_interval,
            idle_timeout=self.config.idle_timeout,
            handshake_timeout=self.config.handshake_timeout,
        )
        router = _HandshakeRouter(self)
        proto = PeerProtocol(
            conn,
            router,
            outgoing=False,
            download_bucket=self.download_bucket,
        )
        router.accepted = Accepted(
            proto, transport=transport, policy=self.transport_policy(), find_skey=self._skeys
        )
        return router.accepted.consumer

    def make_driver(self, conn: PeerConnection, peer: Peer, *, outgoing: bool) -> PeerDriver:
        """The driver of a connection to ``peer``, attached to its torrent (not yet opened)."""
        self._connections += 1
        proto = PeerProtocol(
            conn,
            peer,
            outgoing=outgoing,
            download_bucket=self.download_bucket,
        )
        peer.torrent.attach(peer, proto)
        return proto

    def transport_policy(self) -> TransportPolicy:
        """The connection settings now (read at each dial and accept)."""
        cfg = self.config
        return TransportPolicy(
            tcp=cfg.tcp,
            utp=cfg.utp,
            encryption=cfg.encryption,
            allowed_crypto=cfg.allowed_crypto,
            tcp_timeout=cfg.dial_timeout,
            utp_timeout=cfg.utp_connect_timeout,
            handshake_timeout=cfg.handshake_timeout,
        )

    async def dial(
        self, address: tuple[str, int], info_hash: bytes, make_consumer: ConsumerFactory
    ) -> Link:
        """Connect to a peer by the current policy; see :meth:`core.net.dialer.Dialer.dial`."""
        return await self.dialer.dial(address, info_hash, self.transport_policy(), make_consumer)

    def set_connection_policy(
        self,
        *,
        tcp: bool | None = None,
        utp: bool | None = None,
        encryption: str | None = None,
        allowed_crypto: str | None = None,
    ) -> None:
        """Change the transport and encryption settings for new connections (live).

        Open connections keep what they have.  Raises
        :class:`~core.errors.ConfigError` for a bad value (both transports
        off, an unknown policy), leaving the settings as they were.
        """
        changes: dict[str, object] = {
            name: value
            for name, value in (
                ("tcp", tcp),
                ("utp", utp),
                ("encryption", encryption),
                ("allowed_crypto", allowed_crypto),
            )
            if value is not None
        }
        self.config = dataclasses.replace(self.config, **changes)  # type: ignore[arg-type]

    def may_open_connection(self) -> bool:
        """Room for one more outgoing attempt under the global connection limits?"""
        if self._connections >= self.config.max_connections:
            return False
        half_open = sum(t.half_open_count for t in self.torrents.values())
        return half_open < self.config.max_half_open

    def connection_closed(self) -> None:
        self._connections = max(0, self._connections - 1)

    @property
    def connections(self) -> int:
        """Open peer connections, incoming ones still before their handshake included."""
        return self._connections

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()
        for server in self._servers:
            server.close()
        await asyncio.gather(*(t.close() for t in self.torrents.values()), return_exceptions=True)
        await asyncio.gather(*(u.aclose() for u in self._utp.values()), return_exceptions=True)
        await self.trackers.aclose()
        if self._dht is not None:
            try:
                async with asyncio.timeout(DHT_CLOSE_TIMEOUT):
                    await self._dht.aclose()
            except TimeoutError:  # pragma: no cover - the table is saved in a thread
                log.warning("DHT close timed out")
        await asyncio.gather(*(m.aclose() for m in self._udp), return_exceptions=True)
        for server in self._servers:
            try:
                async with asyncio.timeout(2):
                    await server.wait_closed()
            except TimeoutError:  # pragma: no cover
                pass
        if self.completion is not None:
            await asyncio.to_thread(self.completion.close)
        await asyncio.to_thread(self.io_executor.shutdown, wait=True, cancel_futures=True)
        self.bus.close()

    # ------------------------------------------------------------------ torrents

    async def add_torrent_file(self, path: str | Path, **kwargs: object) -> Torrent:
        data = await asyncio.to_thread(Path(path).read_bytes)
        return await self.add_metainfo(Metainfo.from_bytes(data), **kwargs)  # type: ignore[arg-type]

    async def add_metainfo(
        self,
        mi: Metainfo,
        *,
        download_dir: str | Path | None = None,
        storage: Storage | None = None,
        verify: bool = False,
        peers: Sequence[tuple[str, int]] = (),
    ) -> Torrent:
        """Add a torrent; returns the existing one if its info-hash is already here."""
        existing = self.torrents.get(mi.info_hash)
        if existing is not None:
            existing.add_peers(peers)
            return existing
        root = Path(download_dir) if download_dir is not None else self.config.download_dir
        layout = Layout.from_info(mi.info, root)
        if storage is None:
            if self.config.default_storage == "memory":
                storage = MemoryStorage(layout)
            else:
                storage = FileStorage(layout)
        torrent = Torrent(self, mi, storage, layout, self.completion)
        self.torrents[mi.info_hash] = torrent
        self._register(mi.info_hash.wire, torrent, replace=True)
        if mi.info_hash.v2 is not None and mi.info_hash.v1 is not None:
            self._register(mi.info_hash.v2[:20], torrent, replace=True)
        self.bus.publish(TorrentAdded(mi.info_hash, mi.info.name))
        try:
            await torrent.start(verify=verify)
        except BaseException:
            await self.remove_torrent(mi.info_hash)
            raise
        torrent.add_peers(peers)
        return torrent

    async def add_magnet(
        self,
        uri: str | Magnet,
        *,
        download_dir: str | Path | None = None,
        storage: StorageFactory | None = None,
        peers: Sequence[tuple[str, int]] = (),
    ) -> Torrent:
        """Add a torrent from a magnet link; its info dict is fetched from peers.

        The torrent is returned at once, in ``FETCHING_METADATA``;
        ``await t.wait_info()`` waits for the info dict.  Peers come from
        ``x.pe``, the ``tr`` trackers, PEX and ``peers``.  ``storage`` builds
        the storage once the layout is known (default: the config's).  A
        torrent already here (by either hash) is returned with the magnet's
        trackers and peers added.  Raises :class:`~core.errors.MagnetError`
        for a malformed link.  See :mod:`core.engine.magnet_phase`.
        """
        return await add_magnet(
            self,
            uri,
            new_torrent=self._magnet_torrent,
            download_dir=download_dir,
            storage=storage,
            peers=peers,
        )

    def _magnet_torrent(self, magnet: Magnet) -> Torrent:
        """A new torrent for ``magnet``, without its info dict (``add_magnet`` registers it)."""
        return Torrent(self, None, None, None, self.completion, magnet=magnet)

    async def add_info_hash(
        self, info_hash: InfoHash, *, download_dir: str | Path | None = None
    ) -> Torrent:
        """Add a torrent by info-hash alone (a magnet without trackers or peers)."""
        return await self.add_magnet(Magnet(info_hash), download_dir=download_dir)

    async def remove_torrent(self, info_hash: InfoHash) -> None:
        torrent = self.torrents.pop(info_hash, None)
        if torrent is None:
            return
        for key in [k for k, v in self._torrents_by_wire.items() if v is torrent]:
            del self._torrents_by_wire[key]
            self._skeys.discard(key)
        await torrent.close()
        self.bus.publish(TorrentRemoved(info_hash))

    def torrent(self, info_hash: InfoHash) -> Torrent | None:
        return self.torrents.get(info_hash)

    # The by-wire registry: which torrent an incoming handshake is for.  Peers
    # name a torrent by a 20-byte hash: a v1 info-hash, or a v2 one truncated
    # (BEP 52); a hybrid torrent answers to both.

    def register_wire(self, info_hash: InfoHash, torrent: Torrent) -> None:
        """Route incoming handshakes naming ``info_hash`` to ``torrent``.

        Registers ``info_hash.wire`` and, for a hybrid, the truncated v2 hash
        too (a magnet's torrent registers again once its info dict shows the
        other hash).  A wire hash already registered keeps its torrent;
        :meth:`remove_torrent` unregisters every hash of a torrent.
        """
        self._register(info_hash.wire, torrent)
        if info_hash.v1 is not None and info_hash.v2 is not None:
            self._register(info_hash.v2[:20], torrent)

    def _register(self, wire_hash: bytes, torrent: Torrent, *, replace: bool = False) -> None:
        """``wire_hash`` names ``torrent`` in plain and MSE handshakes (``replace``: overwrite)."""
        if replace:
            self._torrents_by_wire[wire_hash] = torrent
        else:
            self._torrents_by_wire.setdefault(wire_hash, torrent)
        self._skeys.add(wire_hash)

    def torrent_by_wire(self, wire_hash: bytes) -> Torrent | None:
        """The torrent registered under the 20-byte ``wire_hash`` (see :meth:`register_wire`)."""
        return self._torrents_by_wire.get(wire_hash)

    # ------------------------------------------------------------------ limits, bans, stats

    def set_rate_limits(self, *, download: int | None, upload: int | None) -> None:
        now = time.monotonic()
        self.download_bucket.set_rate(download, now)
        self.upload_bucket.set_rate(upload, now)

    def ban(
        self, ip: str, reason: str, *, port: int | None = None, peer_id: bytes | None = None
    ) -> None:
        """Refuse a peer from now on, remembering why.

        A ban normally covers the whole IP address, as libtorrent's does: a
        peer chooses its port and peer id and changes both on reconnect, its
        address it cannot.  Loopback is the exception.  Every peer on this
        machine (a local seeder, a test swarm, a hostile process next to an
        honest one) shares 127.0.0.1 or ::1, so banning the address would
        ban the honest peers with the bad one.  There the ban covers the
        endpoint ``ip:port`` and, when known, the peer id, so the same peer
        coming back from a fresh ephemeral port is refused at its handshake
        too.  A loopback ban given neither port nor peer id (a user's
        explicit request) still covers the whole address.
        """
        if _is_loopback(ip) and (port is not None or peer_id is not None):
            # setdefault: the first reason is the one that caused the ban.
            if port is not None:
                self._banned.setdefault(_endpoint(ip, port), reason)
            if peer_id is not None:
                self._banned_ids.setdefault(peer_id, reason)
            log.info("banned %s (peer id %r): %s", _endpoint(ip, port or 0), peer_id, reason)
        else:
            self._banned.setdefault(ip, reason)
            log.info("banned %s: %s", ip, reason)
        # A liar found out in one torrent stops sending to the others too.
        for t in self.torrents.values():
            for peer in list(t.peers):
                if self.is_banned(peer.address[0], peer.address[1], peer.peer_id):
                    peer.close(f"banned: {reason}")

    def blame_key(self, ip: str, peer_id: bytes | None) -> str:
        """Whom a fault counts against across reconnects (hash failures before a ban).

        A connection is not a peer: one that sends a bad piece, hangs up and
        comes back must not start from a clean slate.  As with :meth:`ban`,
        the key is the IP address, except on loopback, shared by every local
        peer, where it is the address and peer id.
        """
        if peer_id is not None and _is_loopback(ip):
            return f"{ip} {peer_id.hex()}"
        return ip

    def is_banned(self, ip: str, port: int | None = None, peer_id: bytes | None = None) -> bool:
        """Whether ``ip`` (or, on loopback, that endpoint or peer id) is banned; see :meth:`ban`."""
        if ip in self._banned:
            return True
        if not _is_loopback(ip):
            return False
        if port is not None and _endpoint(ip, port) in self._banned:
            return True
        return peer_id is not None and peer_id in self._banned_ids

    @property
    def banned(self) -> dict[str, str]:
        """Ban list: IP address (or ``ip:port`` on loopback) -> reason."""
        return dict(self._banned)

    def stats(self) -> ClientStats:
        s = ClientStats()
        for t in self.torrents.values():
            ts = t.stats()
            s.accumulate(ts)
            s.active_peers += ts.active_peers
            s.active_half_open_attempts += ts.half_open_peers
        s.torrents = len(self.torrents)
        return s

    def snapshot(self) -> ClientSnapshot:
        rows = []
        total_down = total_up = 0.0
        for t in self.torrents.values():
            down, up = t.rates()
            total_down += down
            total_up += up
            ts = t.stats()
            done = t.bytes_completed()
            remaining = t.picker.wanted_remaining_bytes()
            eta = remaining / down if down > 0 else None
            uploaded = ts.bytes_written_data
            rows.append(
                TorrentRow(
                    info_hash=t.info_hash,
                    name=t.name,
                    state=t.state,
                    progress=done / t.length if t.length else float(t.has_info),
                    size=t.length,
                    bytes_done=done,
                    down_rate=down,
                    up_rate=up,
                    peers=ts.active_peers,
                    seeds=ts.connected_seeders,
                    eta=eta,
                    ratio=uploaded / done if done else 0.0,
                    added_time=t.added_at,
                    error=t.error,
                )
            )
        cs = self.stats()
        dht_nodes = dht_good = 0
        dht_state = "off"
        if self._dht is not None:
            ds = self._dht.stats()
            dht_nodes, dht_good, dht_state = ds.dht.nodes_total, ds.dht.nodes_good, ds.state
        return ClientSnapshot(
            torrents=tuple(rows),
            down_rate=total_down,
            up_rate=total_up,
            bytes_downloaded=cs.bytes_read_data,
            bytes_uploaded=cs.bytes_written_data,
            peers=cs.active_peers,
            dht_nodes=dht_nodes,
            dht_good_nodes=dht_good,
            dht_state=dht_state,
        )

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            if self.bus.subscriber_count:
                try:
                    self.bus.publish(self.snapshot())
                except Exception:  # pragma: no cover - never kill the loop
                    log.exception("snapshot failed")


__all__ = ["Client", "RemoteProtocolError", "TorrentState"]
