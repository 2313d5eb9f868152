"""``DhtService``: the sans-IO :class:`~core.dht.node.DhtNode` on real sockets.

The node decides everything (what to answer, whom to ask, when a query has
timed out); this module only moves bytes and time:

* Datagrams arrive through the KRPC handler of a
  :class:`~core.net.udp_mux.UdpMux` (one per address family, shared with uTP;
  the client owns them, or the service opens its own) and go straight into
  ``node.receive``: a plain callback, no task per datagram.  After every
  receive and every operation started, whatever the node wants sent
  (``node.outgoing()``) goes out through the mux of the address's family,
  its events are dispatched, and ONE timer (``loop.call_at``) is moved to
  ``node.next_wakeup()``.  So an idle DHT costs one timer, and a busy one
  costs no more than its datagrams.
* Operations (ping, lookups, BEP 44 get/put, BEP 51 sample) get an op number
  from the node; the service maps it to a future and resolves it with the
  event that ends it.  A caller that gives up (cancelled, timed out) cancels
  the op in the node, so abandoned lookups do not keep sending.
* Bootstrap: the saved nodes of the last run first (the node falls back to
  the routers itself when they do not answer), then the configured routers.
  Router names are resolved in a daemon thread, never on the loop and never
  in the default executor: ``asyncio.run`` joins that executor at exit, so a
  resolver stuck on an unreachable DNS server would hold up the exit of a
  program that has long closed its client.  A name that does not resolve
  within :data:`DNS_TIMEOUT` is logged and skipped.  A bootstrap that finds
  nobody is retried with growing pauses (:data:`RETRY_MIN` to
  :data:`RETRY_MAX`), re-resolving the names, so a DHT started offline
  joins once the network is back.
* State: ``{"id": node id, "nodes": compact v4, "nodes6": compact v6}``
  (bencoded) at ``state_path``, written atomically (a sibling file, then
  rename, in a thread) on close and every :data:`SAVE_INTERVAL`.  A file
  that cannot be read or decoded is logged and ignored: the DHT starts
  fresh rather than not at all.  A run that never found a node keeps the
  nodes it loaded, so one offline start does not forget the table.
* Rates (queries in and out per second) come from sampling the node's
  counters in :meth:`DhtService.stats`, at most once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import parse_endpoint
from ..dht.events import (
    Bootstrapped,
    DhtEvent,
    ExternalAddressChanged,
    LookupFinished,
    PeersFound,
    QueryFinished,
)
from ..dht.items import Item
from ..dht.krpc import Response, decode_nodes, encode_nodes
from ..dht.node import DhtNode
from ..dht.types import ID_LENGTH, Addr, DhtSettings, DhtStats, NodeInfo
from ..errors import BencodeError, ConfigError, DhtError, TorrentError
from ..formats import bencoding
from ..formats.compact import normalise_peer
from ..net.udp_mux import UdpMux

log = logging.getLogger(__name__)

__all__ = [
    "DNS_TIMEOUT",
    "SAVE_INTERVAL",
    "DhtService",
    "DhtServiceStats",
    "SavedState",
    "decode_state",
    "encode_state",
    "resolve_endpoints",
]

#: How often the node table is saved while running (and always on close).
SAVE_INTERVAL = 10 * 60.0
#: A bootstrap host name that has not resolved by then is skipped.
DNS_TIMEOUT = 10.0
#: Pauses between bootstrap attempts that found nobody: doubling from min to max.
RETRY_MIN = 10.0
RETRY_MAX = 5 * 60.0
#: A lookup the node has not ended by then is abandoned (the node ends its
#: own lookups long before; this only bounds a caller's wait on a bug).
LOOKUP_TIMEOUT = 120.0
#: The query rates are recomputed when at least this long has passed.
RATE_SAMPLE = 1.0
#: The timer never fires sooner than this after now (guards against a spin).
_MIN_TIMER = 0.0005
#: At most this many nodes go into the state file.
MAX_SAVED_NODES = 500
#: How long ``aclose`` waits for the state file to be written.
SAVE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class DhtServiceStats:
    """The node's counters plus what only the driver knows: port, state, rates."""

    dht: DhtStats
    port: int
    state: str  # "bootstrapping" | "ok" | "failed" (no node answered)
    queries_in_rate: float  # per second, over the last sampling interval
    queries_out_rate: float
    bootstrap_nodes: tuple[str, ...]


# --- the state file ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SavedState:
    """What a previous run left: its node id and the nodes it knew."""

    node_id: bytes | None
    nodes: tuple[NodeInfo, ...]


def encode_state(node_id: bytes, nodes: Sequence[NodeInfo]) -> bytes:
    """The state file's bytes: ``{"id", "nodes" (compact v4), "nodes6" (compact v6)}``."""
    v4 = [n for n in nodes if ":" not in n.addr[0]]
    v6 = [n for n in nodes if ":" in n.addr[0]]
    return bencoding.encode(
        {
            b"id": node_id,
            b"nodes": encode_nodes(v4, v6=False),
            b"nodes6": encode_nodes(v6, v6=True),
        }
    )


def decode_state(data: bytes) -> SavedState:
    """Parse a state file; :class:`DhtError` when it is not one (the caller starts fresh)."""
    try:
        value = bencoding.decode(data)
    except BencodeError as exc:
        raise DhtError(f"not bencoded: {exc}") from None
    if not isinstance(value, dict):
        raise DhtError("not a dictionary")
    node_id = value.get(b"id")
    if node_id is not None and not (isinstance(node_id, bytes) and len(node_id) == ID_LENGTH):
        raise DhtError("'id' is not a 20-byte string")
    nodes: list[NodeInfo] = []
    for key, v6 in ((b"nodes", False), (b"nodes6", True)):
        raw = value.get(key, b"")
        if not isinstance(raw, bytes):
            raise DhtError(f"{key.decode()!r} is not a string")
        try:
            nodes.extend(decode_nodes(raw, v6=v6))
        except TorrentError as exc:  # KrpcError: a length that is not a whole number of nodes
            raise DhtError(f"{key.decode()!r}: {exc}") from None
    return SavedState(node_id, tuple(nodes))


def _read_state(path: Path) -> SavedState | None:
    """The saved state, or None (missing: quietly; unreadable or corrupt: logged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("DHT state %s unreadable, starting fresh: %s", path, exc)
        return None
    try:
        return decode_state(data)
    except DhtError as exc:
        log.warning("DHT state %s is corrupt, starting fresh: %s", path, exc)
        return None


def _write_state(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --- names and addresses ----------------------------------------------------------------


def _family(addr: Addr) -> str:
    return "n6" if ":" in addr[0] else "n4"


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _getaddrinfo(host: str, port: int) -> list[Addr]:
    out: list[Addr] = []
    for family, _type, _proto, _name, sockaddr in socket.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM
    ):
        if family in (socket.AF_INET, socket.AF_INET6):
            peer = normalise_peer(str(sockaddr[0]), int(sockaddr[1]))
            if peer is not None and peer not in out:
                out.append(peer)
    return out


async def _resolve_one(host: str, port: int, timeout: float) -> list[Addr]:
    """``host``'s addresses, resolved in a daemon thread; [] (logged) on failure or timeout."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[list[Addr]] = loop.create_future()

    def deliver(result: list[Addr] | BaseException) -> None:
        if fut.done():
            return
        if isinstance(result, BaseException):
            fut.set_exception(result)
        else:
            fut.set_result(result)

    def work() -> None:
        result: list[Addr] | BaseException
        try:
            result = _getaddrinfo(host, port)
        except (OSError, UnicodeError) as exc:
            result = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(deliver, result)

    threading.Thread(target=work, name=f"dht-dns {host}", daemon=True).start()
    try:
        async with asyncio.timeout(timeout):
            return await fut
    except TimeoutError:
        log.warning("DHT: %s did not resolve within %.0f s; skipped", host, timeout)
    except (OSError, UnicodeError) as exc:
        log.warning("DHT: cannot resolve %s: %s; skipped", host, exc)
    return []


async def resolve_endpoints(
    endpoints: Sequence[str], *, timeout: float = DNS_TIMEOUT
) -> list[Addr]:
    """``"host:port"`` strings as addresses; names resolved in parallel, off the loop.

    A malformed string raises :class:`DhtError`; a name that does not
    resolve is logged and contributes nothing.
    """
    parsed = [_parse(text) for text in endpoints]
    names = [(h, p) for h, p in parsed if not _is_literal(h)]
    resolved = await asyncio.gather(*(_resolve_one(h, p, timeout) for h, p in names))
    out: list[Addr] = []
    for host, port in parsed:
        if _is_literal(host):
            peer = normalise_peer(host, port)
            if peer is not None and peer not in out:
                out.append(peer)
    for addrs in resolved:
        out.extend(a for a in addrs if a not in out)
    return out


def _parse(text: str) -> tuple[str, int]:
    try:
        return parse_endpoint(text)
    except ConfigError as exc:
        raise DhtError(f"bad DHT node address: {exc}") from None


# --- the service ------------------------------------------------------------------------


class DhtService:
    """One DHT node on the network: see the module docstring.  Make it with :meth:`open`."""

    def __init__(
        self,
        node: DhtNode,
        muxes: Sequence[UdpMux],
        *,
        owns_muxes: bool,
        bootstrap: Sequence[str],
        state_path: Path | None,
        saved: SavedState | None,
        on_event: Callable[[DhtEvent], None] | None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._node = node
        self._muxes = {("n6" if m.family == socket.AF_INET6 else "n4"): m for m in muxes}
        self._mux_list = list(muxes)
        self._owns_muxes = owns_muxes
        self._bootstrap_nodes = tuple(bootstrap)
        self._state_path = state_path
        self._saved = saved
        self._on_event = on_event
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._peer_callbacks: dict[int, Callable[[tuple[Addr, ...]], None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_target: float | None = None
        self._pumping = False
        self._pump_again = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._state = "bootstrapping"
        self._settled = asyncio.Event()
        #: Set by the first answer to any query of ours: lookups can start then,
        #: without waiting for the bootstrap lookup to time out its silent nodes.
        self._answered = asyncio.Event()
        #: Nodes given to add_nodes(): a failed bootstrap retries through them at once.
        self._added: list[Addr] = []
        self._kick = asyncio.Event()
        self._rate_at: float | None = None
        self._rate_counts = (0, 0)
        self._rates = (0.0, 0.0)
        #: Datagrams the node addressed to a family we have no socket for, or the mux dropped.
        self.unroutable = 0
        self.send_dropped = 0

    @classmethod
    async def open(
        cls,
        settings: DhtSettings,
        *,
        muxes: Sequence[UdpMux] | None = None,
        addresses: Sequence[str] = ("0.0.0.0",),
        port: int = 0,
        bootstrap: Sequence[str] = (),
        state_path: Path | None = None,
        on_event: Callable[[DhtEvent], None] | None = None,
    ) -> DhtService:
        """Start a DHT node (see the module docstring).

        ``muxes``: the client's shared sockets (it owns and closes them);
        without them the service opens its own on ``addresses`` and ``port``
        (0: the OS picks one for the first address, the others use the same)
        and closes them itself.  Raises :class:`DhtError` for a malformed
        bootstrap address or when no socket can be opened.

        ``on_event`` hears what does not answer an operation of ours:
        ``Bootstrapped`` (judged here, once per attempt that changes the
        state: the first, and a later success), ``ExternalAddressChanged``
        and ``AnnounceReceived`` (a node announced a peer to us).
        """
        for text in bootstrap:
            _parse(text)
        owns = muxes is None
        if muxes is None:
            opened: list[UdpMux] = []
            errors: list[str] = []
            for host in sorted(addresses, key=lambda a: ":" in a):
                try:
                    mux = await UdpMux.open(host, port)
                except (OSError, TorrentError) as exc:
                    errors.append(f"{host}: {exc}")
                    continue
                opened.append(mux)
                if port == 0:
                    port = mux.local_address[1]
            if not opened:
                raise DhtError(f"cannot open a UDP socket for the DHT: {'; '.join(errors)}")
            muxes = opened
        if not muxes:
            raise DhtError("the DHT needs at least one UDP socket")
        try:
            saved = await asyncio.to_thread(_read_state, state_path) if state_path else None
            families = frozenset("n6" if m.family == socket.AF_INET6 else "n4" for m in muxes)
            node = DhtNode(
                settings,
                now=asyncio.get_running_loop().time(),
                node_id=saved.node_id if saved is not None else None,
                families=families,  # rng: the node's default, SystemRandom (tokens, ids)
            )
        except BaseException:
            if owns:
                await asyncio.gather(*(m.aclose() for m in muxes), return_exceptions=True)
            raise
        service = cls(
            node,
            muxes,
            owns_muxes=owns,
            bootstrap=bootstrap,
            state_path=state_path,
            saved=saved,
            on_event=on_event,
        )
        service._start()
        return service

    def _start(self) -> None:
        for mux in self._mux_list:
            mux.set_krpc_handler(self._on_datagram)
        self._spawn(self._bootstrap_loop(), "dht bootstrap")
        if self._state_path is not None:
            self._spawn(self._save_loop(), "dht save")
        self._reschedule()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("DHT: %s failed", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        """The UDP port the node listens on (the first socket's)."""
        return self._mux_list[0].local_address[1]

    @property
    def node_id(self) -> bytes:
        return self._node.node_id

    @property
    def state(self) -> str:
        """``"bootstrapping"``, ``"ok"`` or ``"failed"`` (no node answered; retrying)."""
        if self._state == "failed" and self._node.good_nodes():
            return "ok"  # nodes found us (or a ping answered) since
        return self._state

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ the loop's side

    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        """A KRPC datagram from the mux: into the node, then whatever it answers out."""
        if self._closed:
            return
        try:
            self._node.receive(data, addr, self._loop.time())
        except Exception:  # the node never raises on input; a bug must not kill the socket
            log.exception("DHT: node failed on a datagram from %s", addr)
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_target = None
        if self._closed:
            return
        try:
            self._node.poll(self._loop.time())
        except Exception:  # pragma: no cover - housekeeping must never stop
            log.exception("DHT: node poll failed")
        self._pump()

    def _pump(self) -> None:
        """Send what the node queued, dispatch its events, move the timer.

        Re-entrant calls (an event callback that starts another operation)
        only ask the outer call to go round once more.
        """
        if self._closed:
            return
        if self._pumping:
            self._pump_again = True
            return
        self._pumping = True
        try:
            while True:
                self._pump_again = False
                self._send(self._node.outgoing())
                if not self._answered.is_set() and self._node.responses_received:
                    self._answered.set()
                for event in self._node.events():
                    self._dispatch(event)
                if not self._pump_again:
                    break
        finally:
            self._pumping = False
        self._reschedule()

    def _send(self, datagrams: Sequence[tuple[bytes, Addr]]) -> None:
        for data, addr in datagrams:
            mux = self._muxes.get(_family(addr))
            if mux is None:
                self.unroutable += 1
            elif not mux.sendto(data, addr):
                self.send_dropped += 1

    def _reschedule(self) -> None:
        if self._closed:
            return
        wake = self._node.next_wakeup()
        if wake is not None and wake == self._timer_target and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_target = None
        if wake is None:
            return
        when = max(wake, self._loop.time() + _MIN_TIMER)
        self._timer = self._loop.call_at(when, self._on_timer)
        self._timer_target = wake

    def _dispatch(self, event: DhtEvent) -> None:
        if isinstance(event, PeersFound):
            callback = self._peer_callbacks.get(event.op)
            if callback is not None:
                try:
                    callback(event.peers)
                except Exception:
                    log.exception("DHT: a peers callback failed")
            return
        if isinstance(event, LookupFinished | QueryFinished):
            self._peer_callbacks.pop(event.op, None)
            fut = self._futures.pop(event.op, None)
            if fut is not None and not fut.done():
                fut.set_result(event)
            return
        if isinstance(event, Bootstrapped):
            return  # the node's view of its first bootstrap; _bootstrap_once judges each one
        if isinstance(event, ExternalAddressChanged):
            log.info("DHT: external address %s, node id now %s", event.ip, event.node_id.hex())
        self._tell(event)

    def _tell(self, event: DhtEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("DHT: an event callback failed")

    # ------------------------------------------------------------------ bootstrap

    def _bootstrapped(self, event: Bootstrapped) -> None:
        was = self._state
        self._state = "ok" if event.ok else "failed"
        first = not self._settled.is_set()
        self._settled.set()
        # A retry that fails again is no news: tell the outside only of changes.
        if first or self._state != was:
            log.info(
                "DHT bootstrap %s: %d good nodes", "done" if event.ok else "failed", event.nodes
            )
            self._tell(event)

    async def _bootstrap_once(self, saved: Sequence[Addr], routers: Sequence[Addr]) -> bool:
        """One bootstrap lookup; True if any node answered it.

        "Answered" and not "the table has nodes": bootstrap nodes are
        routers, which never enter the routing table (as in libtorrent), so
        a small network whose only other member is our bootstrap node works
        with an empty table (it queries us, announces to us).  The node
        reports ``Bootstrapped`` for its first bootstrap only, by the table;
        every attempt is judged here instead, the same way each time.
        """
        if not saved and not routers:
            self._bootstrapped(Bootstrapped(nodes=0, ok=False))
            return False
        if self._state != "failed":
            self._state = "bootstrapping"
        before = self._node.stats(self._loop.time()).responses_in
        with contextlib.suppress(DhtError):  # an op that never ended: judged by the counters
            await self._run(lambda now: self._node.bootstrap(saved, routers, now), LOOKUP_TIMEOUT)
        stats = self._node.stats(self._loop.time())
        ok = stats.responses_in > before or stats.nodes_good > 0
        self._bootstrapped(Bootstrapped(nodes=stats.nodes_good, ok=ok))
        return ok

    def _usable(self, addrs: Sequence[Addr]) -> list[Addr]:
        return [a for a in addrs if _family(a) in self._muxes]

    async def _bootstrap_loop(self) -> None:
        """Saved nodes first, then the routers; retried with growing pauses until one answers."""
        parsed = [_parse(text) for text in self._bootstrap_nodes]
        literal: list[Addr] = []
        names: list[str] = []
        for text, (host, port) in zip(self._bootstrap_nodes, parsed, strict=True):
            if not _is_literal(host):
                names.append(text)
            elif (peer := normalise_peer(host, port)) is not None and peer not in literal:
                literal.append(peer)
        literal = self._usable(literal)
        saved = self._usable([n.addr for n in self._saved.nodes] if self._saved else [])
        resolving: asyncio.Task[list[Addr]] | None = None
        if names:
            resolving = asyncio.create_task(resolve_endpoints(names), name="dht dns")
        try:
            if resolving is not None and not saved:
                await asyncio.wait(
                    [resolving]
                )  # nothing else to start from (bounded by DNS_TIMEOUT)
            resolved = resolving.result() if resolving is not None and resolving.done() else []
            routers = literal + [a for a in self._usable(resolved) if a not in literal]
            delay = RETRY_MIN
            while not self._closed:
                if await self._bootstrap_once(saved, routers):
                    return
                saved = []
                if resolving is not None and not resolving.done():
                    # Started from saved nodes before the names resolved: try those next.
                    await asyncio.wait([resolving])
                    fresh = [a for a in self._usable(resolving.result()) if a not in routers]
                    if fresh:
                        routers = routers + fresh
                        continue
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._kick.wait()  # add_nodes() gave us somewhere to start
                delay = min(delay * 2, RETRY_MAX)
                again = await resolve_endpoints(names) if names else []
                routers = literal + [a for a in self._usable(again) if a not in literal]
                saved = [a for a in self._added if a not in routers]  # add_nodes(): plain nodes
                resolving = None
        finally:
            if resolving is not None:
                resolving.cancel()

    async def wait_bootstrapped(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until a node has answered us or the first bootstrap ended.

        True once any node answered.  A lookup need not wait for the whole
        bootstrap: it ends only when its slowest contacts (saved nodes that
        have left, routers that are down) time out, while a lookup works as
        soon as one node answers (a thin table starts from the routers too).
        """
        if not (self._settled.is_set() or self._answered.is_set()):
            settled = asyncio.ensure_future(self._settled.wait())
            answered = asyncio.ensure_future(self._answered.wait())
            try:
                await asyncio.wait(
                    [settled, answered], timeout=timeout, return_when="FIRST_COMPLETED"
                )
            finally:
                settled.cancel()
                answered.cancel()
        return self.state == "ok" or self._answered.is_set()

    def add_nodes(self, nodes: Sequence[str]) -> None:
        """Ping ``"host:port"`` nodes (names resolved off the loop); those that answer join.

        Raises :class:`DhtError` at once for a malformed address.
        """
        self._check_open()
        parsed = [_parse(text) for text in nodes]
        now = self._loop.time()
        names = []
        for text, (host, port) in zip(nodes, parsed, strict=True):
            if _is_literal(host):
                peer = normalise_peer(host, port)
                if peer is not None and _family(peer) in self._muxes:
                    self._add(peer, now)
            else:
                names.append(text)
        self._pump()
        if names:
            self._spawn(self._add_resolved(names), "dht add nodes")

    async def _add_resolved(self, names: Sequence[str]) -> None:
        for addr in self._usable(await resolve_endpoints(names)):
            if self._closed:
                return
            self._add(addr, self._loop.time())
        self._pump()

    def _add(self, addr: Addr, now: float) -> None:
        self._node.add_node(addr, now)
        if addr not in self._added:
            self._added = [*self._added[-63:], addr]
        if self._state != "ok":
            self._kick.set()

    def note_external_ip(self, ip: str, voter: str) -> None:
        """A vote on our external address (BEP 42): a peer's BEP 10 ``yourip``, say."""
        if self._closed:
            return
        self._node.note_external_ip(ip, voter, self._loop.time())
        self._pump()

    # ------------------------------------------------------------------ operations

    def _check_open(self) -> None:
        if self._closed:
            raise DhtError("the DHT is closed")

    async def _run(self, start: Callable[[float], int], timeout: float) -> Any:
        """Start an op in the node and wait for the event that ends it."""
        self._check_open()
        op = start(self._loop.time())
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._futures[op] = fut
        return await self._wait(op, fut, timeout)

    async def _wait(self, op: int, fut: asyncio.Future[Any], timeout: float) -> Any:
        self._pump()
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise DhtError(f"no answer within {timeout:g} s") from None
        finally:
            if self._futures.pop(op, None) is not None and not self._closed:
                # Abandoned (cancelled or timed out): stop the node working on it.
                self._peer_callbacks.pop(op, None)
                self._node.cancel(op)
                self._pump()

    async def ping(self, addr: Addr, *, timeout: float = 5.0) -> bytes:
        """Ping ``addr``; its node id.  :class:`DhtError` when it does not answer or errs."""
        peer = normalise_peer(*addr)
        if peer is None or _family(peer) not in self._muxes:
            raise DhtError(f"cannot reach {addr[0]}:{addr[1]} from this DHT")
        where: Addr = peer
        ev: QueryFinished = await self._run(lambda now: self._node.ping(where, now), timeout)
        if not isinstance(ev.response, Response):
            raise DhtError(f"{where[0]}:{where[1]}: {ev.error or 'no answer'}")
        return ev.response.sender

    async def find_node(self, target: bytes) -> LookupFinished:
        """An iterative ``find_node`` lookup; its result names the closest nodes found."""
        result: LookupFinished = await self._run(
            lambda now: self._node.find_node(target, now), LOOKUP_TIMEOUT
        )
        return result

    async def get_peers(
        self,
        info_hash: bytes,
        *,
        announce_port: int | None = None,
        implied_port: bool = False,
        on_peers: Callable[[tuple[Addr, ...]], None] | None = None,
    ) -> LookupFinished:
        """A ``get_peers`` lookup, announcing ``announce_port`` (if given) to the closest nodes.

        ``on_peers`` receives peers as replies arrive; first of all, the
        peers that other nodes announced to our own node for this
        info-hash (in a small swarm the closest node may be us).
        """
        self._check_open()
        now = self._loop.time()
        op = self._node.get_peers(
            info_hash, now, announce_port=announce_port, implied_port=implied_port
        )
        fut: asyncio.Future[LookupFinished] = self._loop.create_future()
        self._futures[op] = fut
        if on_peers is not None:
            self._peer_callbacks[op] = on_peers
            local = tuple(self._node.local_peers(info_hash, now))
            if local:
                try:
                    on_peers(local)
                except Exception:
                    log.exception("DHT: a peers callback failed")
        result: LookupFinished = await self._wait(op, fut, LOOKUP_TIMEOUT)
        return result

    async def sample(self, addr: Addr, target: bytes | None = None) -> Response:
        """BEP 51 ``sample_infohashes`` to one node; its response.  :class:`DhtError` on failure."""
        peer = normalise_peer(*addr)
        if peer is None or _family(peer) not in self._muxes:
            raise DhtError(f"cannot reach {addr[0]}:{addr[1]} from this DHT")
        where: Addr = peer
        ev: QueryFinished = await self._run(
            lambda now: self._node.sample_infohashes(where, now, target), LOOKUP_TIMEOUT
        )
        if not isinstance(ev.response, Response):
            raise DhtError(f"{where[0]}:{where[1]}: {ev.error or 'no answer'}")
        return ev.response

    async def get_item(self, target: bytes, *, salt: bytes = b"") -> Item | None:
        """BEP 44 get: the item stored under ``target`` (newest ``seq`` if mutable), or None.

        :class:`DhtError` when the lookup could not run at all (no nodes).
        """
        ev: LookupFinished = await self._run(
            lambda now: self._node.get_item(target, now, salt=salt), LOOKUP_TIMEOUT
        )
        if ev.error is not None:
            raise DhtError(f"get {target.hex()}: {ev.error}")
        return ev.value if isinstance(ev.value, Item) else None

    async def put_item(self, item: Item) -> int:
        """BEP 44 put to the nodes closest to the item's target; how many stored it."""
        item.verify()
        ev: LookupFinished = await self._run(
            lambda now: self._node.put_item(item, now), LOOKUP_TIMEOUT
        )
        if ev.error is not None:
            raise DhtError(f"put {item.target.hex()}: {ev.error}")
        return ev.announced

    # ------------------------------------------------------------------ stats, state, close

    def stats(self) -> DhtServiceStats:
        """The node's counters, its state, and query rates since the previous sample."""
        now = self._loop.time()
        s = self._node.stats(now)
        counts = (s.queries_in, s.queries_out)
        if self._rate_at is None:
            self._rate_at, self._rate_counts = now, counts
        elif now - self._rate_at >= RATE_SAMPLE:
            dt = now - self._rate_at
            self._rates = (
                (counts[0] - self._rate_counts[0]) / dt,
                (counts[1] - self._rate_counts[1]) / dt,
            )
            self._rate_at, self._rate_counts = now, counts
        return DhtServiceStats(
            dht=s,
            port=self.port,
            state=self.state,
            queries_in_rate=self._rates[0],
            queries_out_rate=self._rates[1],
            bootstrap_nodes=self._bootstrap_nodes,
        )

    def _state_bytes(self) -> bytes:
        nodes = self._node.good_nodes()[:MAX_SAVED_NODES]
        if not nodes and self._saved is not None:
            nodes = list(self._saved.nodes)  # never found anyone: keep what we had
        return encode_state(self._node.node_id, nodes)

    async def save(self) -> None:
        """Write the state file now (no-op without ``state_path``); errors are logged."""
        if self._state_path is None:
            return
        data = self._state_bytes()
        try:
            await asyncio.to_thread(_write_state, self._state_path, data)
        except OSError as exc:
            log.warning("DHT: cannot save %s: %s", self._state_path, exc)

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL)
            await self.save()

    async def aclose(self) -> None:
        """Stop: cancel operations, save the state file, close the sockets we opened."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for mux in self._mux_list:
            mux.set_krpc_handler(None)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(DhtError("the DHT is closed"))
        self._futures.clear()
        self._peer_callbacks.clear()
        try:
            async with asyncio.timeout(SAVE_TIMEOUT):
                await self.save()
        except TimeoutError:
            log.warning("DHT: saving %s timed out", self._state_path)
        if self._owns_muxes:
            await asyncio.gather(*(m.aclose() for m in self._mux_list), return_exceptions=True)

    async def __aenter__(self) -> DhtService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
