"""A mainline DHT node, sans-IO: answers queries, runs lookups, keeps tokens and stores.

Datagrams and ``now`` go in (:meth:`DhtNode.receive`, :meth:`DhtNode.poll`),
datagrams and events come out (:meth:`DhtNode.outgoing`,
:meth:`DhtNode.events`); the engine's ``DhtService`` moves them over the
shared UDP socket and calls :meth:`DhtNode.poll` at
:meth:`DhtNode.next_wakeup`.  Nothing here reads a clock or touches a socket.

What it does, by BEP:

- BEP 5: serves ``ping``, ``find_node``, ``get_peers`` (``values`` when the
  peer store has peers for the hash, else ``nodes``; always a token) and
  ``announce_peer`` (token checked against the querier's IP); runs iterative
  lookups (:mod:`.lookup`) for ``find_node``/``get_peers``, announces to the
  ``k`` closest nodes that gave tokens; keeps the routing table alive (pings
  questionable nodes, refreshes idle buckets).
- BEP 32: one routing table per address family we have a socket for;
  ``want`` picks ``nodes``/``nodes6`` (default: the querier's family), and
  our queries ask for both when we have both.
- BEP 42: every response carries ``ip`` (how we see the querier); the ``ip``
  in responses to us is a vote (:mod:`.external_ip`); when the votes settle
  on an address our random id does not match (or enforcement is on), the id
  is regenerated from it and the tables rebuilt.  With enforcement on, nodes
  whose id does not match their IP never enter the table.
- BEP 43: read-only (``ro=1`` in our queries, nothing answered); read-only
  nodes are answered but never enter our table.
- BEP 44 ``get``/``put`` (:mod:`.item_store`), BEP 51 ``sample_infohashes``.

Hostile input: :meth:`DhtNode.receive` never raises.  Every datagram is
counted (queries, responses, errors, or a drop by reason: the decoder's
``KrpcError.key``, ``"unknown-tid"`` for a response to nothing we asked or
from another address than the one asked, ``"rate-limited"``), answered
queries are rate limited per IP and overall (:mod:`.limits`), and every
collection is bounded: transactions, operations, the send queue, the
stores, the limiter's IP map.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import DhtError, TorrentError
from ..formats.compact import MAX_PEERS, normalise_peer
from . import krpc
from .events import (
    AnnounceReceived,
    Bootstrapped,
    DhtEvent,
    ExternalAddressChanged,
    LookupFinished,
    PeersFound,
    QueryFinished,
)
from .external_ip import ExternalIpVoter
from .item_store import ItemStore, ItemStoreError
from .items import Item
from .krpc import ErrorReply, KrpcError, Query, Response
from .limits import QueryLimiter, TokenBucket
from .lookup import MAX_QUERIES, CandidateState, Lookup
from .node_id import id_matches_ip, is_exempt, node_id_for_ip
from .peer_store import PeerStore
from .routing import RoutingTable
from .tokens import TokenManager
from .types import ID_LENGTH, Addr, DhtSettings, DhtStats, NodeInfo, distance

__all__ = ["BOOTSTRAP_GRACE", "MAX_OPERATIONS", "MAX_TRANSACTIONS", "DhtNode"]

#: Queries in flight at once, all operations together; beyond it a query fails at once.
MAX_TRANSACTIONS = 4096
#: Operations (lookups, announces, pings...) running at once; beyond it a new one fails at once.
MAX_OPERATIONS = 512
#: Queries waiting for the send-rate limit; beyond it a query fails at once (counted).
MAX_SEND_QUEUE = 4096
#: Saved nodes get this long to give ``k`` answers before bootstrap also asks the routers.
BOOTSTRAP_GRACE = 3.0
#: Table upkeep (stale pings, bucket refresh, store expiry) runs this often.
MAINTENANCE_INTERVAL = 5.0
#: With an empty table, bootstrap from the routers again this often.
REBOOTSTRAP_INTERVAL = 60.0
#: Distinct peers one get_peers lookup keeps and reports (as many as a tracker reply may carry).
MAX_PEERS_PER_LOOKUP = MAX_PEERS
#: Undrained ``AnnounceReceived`` events kept, and undrained replies: a driver
#: that stops draining must not let a flood of announces or queries grow memory.
MAX_PENDING_EVENTS = 10_000
MAX_PENDING_REPLIES = 10_000
#: Transaction ids: random, this many bytes (matched together with the address).
TID_LENGTH = 4
#: Pings per second to confirm nodes that queried us but are not (yet) in the table.
CONFIRM_RATE = 10.0
#: Buckets refreshed right after a bootstrap, at most.
MAX_BOOT_REFRESH = 24
#: Source IPs the query limiter tracks.
LIMITER_IPS = 4096

_STALL, _TIMEOUT = 0, 1


def _family(addr: Addr) -> str:
    return "n6" if ":" in addr[0] else "n4"


@dataclass(slots=True)
class _Transaction:
    """One query we sent (or queued), awaiting its answer."""

    tid: bytes
    addr: Addr
    query: Query
    #: The operation it belongs to; None for upkeep pings.
    op: int | None
    #: What the operation asked: a known node, or a bare address.
    asked: NodeInfo | Addr
    #: The id we expect to answer (None for a bare address).
    node_id: bytes | None
    phase: str  # "lookup" | "store" | "single" | "upkeep"
    #: On the wire (not waiting in the send queue): only then can an answer match it.
    sent: bool = False


@dataclass(slots=True)
class _Op:
    """An operation the driver (or the node itself) started."""

    op: int
    kind: str  # find_node | get_peers | announce | get | put | bootstrap | refresh | ping | sample
    target: bytes
    #: Internal upkeep (refresh, re-bootstrap, add_node): no events.
    internal: bool = False
    lookup: Lookup | None = None
    method: str = ""
    phase: str = "lookup"  # "lookup" | "store" | "single"
    peers: set[Addr] = field(default_factory=set)
    announce_port: int | None = None
    implied_port: bool = False
    seed: bool = False
    salt: bytes = b""
    item: Item | None = None  # put: what to store; get: the best found
    pending: set[bytes] = field(default_factory=set)
    acked: int = 0
    answered: int = 0
    routers: tuple[Addr, ...] = ()
    routers_at: float | None = None
    closest: tuple[NodeInfo, ...] = ()


class DhtNode:
    """A DHT node (see the module docstring); the driver moves its datagrams and calls ``poll``."""

    def __init__(
        self,
        settings: DhtSettings,
        *,
        now: float,
        node_id: bytes | None = None,
        families: frozenset[str] = frozenset({"n4"}),
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._rng: random.Random = rng if rng is not None else random.SystemRandom()
        if node_id is None:
            node_id = self._rng.randbytes(ID_LENGTH)
        if len(node_id) != ID_LENGTH:
            raise DhtError(f"node id must be {ID_LENGTH} bytes, not {len(node_id)}")
        families = frozenset(families) & {"n4", "n6"}
        if not families:
            raise DhtError("a DHT node needs at least one address family (n4, n6)")
        self._own_id = node_id
        self._families = families
        self._want: frozenset[str] = families if len(families) > 1 else frozenset()
        self._now = now
        self._tables: dict[str, RoutingTable] = {
            family: self._new_table(node_id, now) for family in sorted(families)
        }
        self._tokens = TokenManager(now=now, rotation=settings.token_rotation, rng=self._rng)
        self._peer_store = PeerStore(
            max_peers_per_hash=settings.max_peers_per_hash,
            max_hashes=settings.max_hashes,
            ttl=settings.peer_ttl,
        )
        self._item_store = ItemStore(max_items=settings.max_items, ttl=settings.item_ttl)
        self._limiter = QueryLimiter(
            per_ip=settings.query_rate_per_ip,
            total=settings.query_rate_total,
            now=now,
            max_ips=LIMITER_IPS,
        )
        self._send_bucket = TokenBucket(settings.send_rate, max(8.0, settings.send_rate / 4), now)
        self._confirm_bucket = TokenBucket(CONFIRM_RATE, 2 * CONFIRM_RATE, now)
        #: id(table) -> (its size, its bucket count) when last counted.
        self._bucket_counts: dict[int, tuple[int, int]] = {}
        self._voters = {family: ExternalIpVoter() for family in families}
        self._id_family = "n4" if "n4" in families else "n6"
        self._external_ip: str | None = None
        self._id_matched = False
        # In flight and queued.
        self._transactions: dict[bytes, _Transaction] = {}
        self._deadlines: list[tuple[float, int, int, _Transaction]] = []
        self._deadline_seq = 0
        self._send_queue: deque[_Transaction] = deque()
        self._upkeep_pings: set[Addr] = set()
        # Operations.
        self._ops: dict[int, _Op] = {}
        self._next_op = 1
        self._routers: tuple[Addr, ...] = ()
        self._router_set: frozenset[Addr] = frozenset()
        self._bootstrap_reported = False
        self._bootstrapped = False
        self._bootstrap_op: int | None = None
        self._next_maintenance = now + MAINTENANCE_INTERVAL
        self._next_rebootstrap = now + REBOOTSTRAP_INTERVAL
        # Output.
        self._out: list[tuple[bytes, Addr]] = []
        self._events: list[DhtEvent] = []
        # Counters.
        self._queries_in = 0
        self._queries_out = 0
        self._responses_in = 0
        self._errors_in = 0
        self._timeouts = 0
        self._rate_limited = 0
        self._dropped: dict[str, int] = {}
        self._handlers: dict[str, Callable[[Query, Addr, float], Response | ErrorReply]] = {
            krpc.PING: self._on_ping,
            krpc.FIND_NODE: self._on_find_node,
            krpc.GET_PEERS: self._on_get_peers,
            krpc.ANNOUNCE_PEER: self._on_announce_peer,
            krpc.SAMPLE_INFOHASHES: self._on_sample_infohashes,
            krpc.GET: self._on_get,
            krpc.PUT: self._on_put,
        }

    def _new_table(self, own_id: bytes, now: float) -> RoutingTable:
        return RoutingTable(
            own_id,
            now=now,
            k=self._settings.k,
            stale_after=self._settings.node_stale_after,
            rng=self._rng,
        )

    # ------------------------------------------------------------------ driver face

    @property
    def node_id(self) -> bytes:
        return self._own_id

    def outgoing(self) -> list[tuple[bytes, Addr]]:
        """Datagrams to send, in order; the list is handed over (drained)."""
        out, self._out = self._out, []
        return out

    def events(self) -> list[DhtEvent]:
        """What happened since the last call (drained)."""
        out, self._events = self._events, []
        return out

    def next_wakeup(self) -> float | None:
        """The absolute time :meth:`poll` wants calling next (never None: upkeep is periodic)."""
        times = [self._next_maintenance, self._tokens.next_rotation]
        if self._deadlines:
            times.append(self._deadlines[0][0])
        if self._send_queue:
            times.append(self._now + self._send_bucket.wait_time(self._now))
        for op in self._ops.values():
            if op.routers_at is not None:
                times.append(op.routers_at)
        return min(times)

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """Handle one datagram from ``addr``; never raises (bad input is counted and dropped)."""
        self._tick(now)
        try:
            try:
                msg = krpc.decode(data)
            except KrpcError as exc:
                self._drop(exc.key)
                if (
                    exc.is_query
                    and exc.tid is not None
                    and not self._settings.read_only
                    and self._allowed(addr, now)
                ):
                    self._reply(ErrorReply(exc.tid, exc.code, exc.reason[:200]), addr)
                return
            if isinstance(msg, Query):
                self._on_query(msg, addr, now)
            elif isinstance(msg, Response):
                self._on_response(msg, addr, now)
            else:
                self._on_error(msg, addr, now)
        except Exception:
            # A bug of ours must not take the node down on hostile input; it
            # is counted so tests (and stats) show it.
            self._drop("internal-error")

    def poll(self, now: float) -> None:
        """Timeouts, queued sends, bootstrap fallback, table upkeep, token rotation, expiry."""
        self._tick(now)
        self._expire_transactions(now)
        self._flush_send_queue(now)
        for op in list(self._ops.values()):
            if op.routers_at is not None and now >= op.routers_at:
                self._use_routers(op, now)
        self._tokens.rotate_if_due(now)
        if now >= self._next_maintenance:
            self._next_maintenance = now + MAINTENANCE_INTERVAL
            self._maintain(now)

    # ------------------------------------------------------------------ operations

    def bootstrap(self, saved: Sequence[Addr], routers: Sequence[Addr], now: float) -> int:
        """Find our own id starting from ``saved``; ask ``routers`` only if those fall short.

        The routers are asked at once when ``saved`` is empty, else when the
        saved nodes have not given ``k`` answers within
        :data:`BOOTSTRAP_GRACE` seconds (or the lookup ran dry before).
        Routers never enter the routing table (they are entry points, not
        members of the DHT's structure).  Emits ``LookupFinished(kind="bootstrap")``
        and, for the first bootstrap, ``Bootstrapped``.
        """
        self._tick(now)
        saved_addrs = self._clean_addrs(saved)
        router_addrs = self._clean_addrs(routers)
        if router_addrs:
            self._routers = tuple(router_addrs)
            self._router_set = frozenset(self._routers)
        op = self._new_op("bootstrap", self._own_id, internal=False)
        if op is None:
            return self._failed_op("bootstrap", self._own_id, "too many operations")
        lookup = self._new_lookup(self._own_id)
        op.lookup = lookup
        op.method = krpc.FIND_NODE
        lookup.add(self._closest(self._own_id))
        lookup.add_seeds(a for a in saved_addrs if a not in self._router_set)
        if not saved_addrs:
            lookup.add_seeds(router_addrs)
        else:
            op.routers = tuple(router_addrs)
            op.routers_at = now + BOOTSTRAP_GRACE if router_addrs else None
        self._bootstrap_op = op.op
        self._pump(op, now)
        return op.op

    def add_node(self, addr: Addr, now: float) -> None:
        """Ping ``addr``; it joins the table if it answers."""
        self._tick(now)
        clean = self._clean_addr(addr)
        if clean is not None and clean not in self._upkeep_pings:
            self._upkeep_pings.add(clean)
            self._send_query(krpc.PING, clean, now, op=None, phase="upkeep")

    def ping(self, addr: Addr, now: float) -> int:
        """Ping ``addr``; ``QueryFinished`` tells the answer."""
        return self._single(krpc.PING, addr, now, kind="ping")

    def sample_infohashes(self, addr: Addr, now: float, target: bytes | None = None) -> int:
        """Ask ``addr`` for a sample of the info-hashes it stores (BEP 51): ``QueryFinished``."""
        if target is None or len(target) != ID_LENGTH:
            target = self._rng.randbytes(ID_LENGTH)
        return self._single(krpc.SAMPLE_INFOHASHES, addr, now, kind="sample", target=target)

    def find_node(self, target: bytes, now: float) -> int:
        """Look up the nodes closest to ``target``; ``LookupFinished`` answers."""
        return self._start_lookup("find_node", krpc.FIND_NODE, target, now)

    def get_peers(
        self,
        info_hash: bytes,
        now: float,
        *,
        announce_port: int | None = None,
        implied_port: bool = False,
        seed: bool = False,
    ) -> int:
        """Look up peers for ``info_hash`` (``PeersFound`` as they come); announce given a port.

        With ``announce_port``, once the lookup has converged ``announce_peer``
        goes to the ``k`` closest nodes that gave a token, and
        ``LookupFinished(kind="announce", announced=acks)`` ends it.
        """
        kind = "get_peers" if announce_port is None else "announce"
        if announce_port is not None and not (
            0 < announce_port < 65536 or (announce_port == 0 and implied_port)
        ):
            return self._failed_op(kind, info_hash, f"bad port {announce_port}")
        op_id = self._start_lookup(
            kind,
            krpc.GET_PEERS,
            info_hash,
            now,
            announce_port=announce_port,
            implied_port=implied_port,
            seed=seed,
        )
        return op_id

    def get_item(self, target: bytes, now: float, *, salt: bytes = b"") -> int:
        """Look up the BEP 44 item under ``target``; ``LookupFinished.value`` is the best found."""
        return self._start_lookup("get", krpc.GET, target, now, salt=salt)

    def put_item(self, item: Item, now: float) -> int:
        """Store ``item`` at the ``k`` nodes closest to its target (``LookupFinished``)."""
        try:
            item.verify()
            target = item.target
        except DhtError as exc:
            return self._failed_op("put", b"\0" * ID_LENGTH, f"invalid item: {exc}")
        return self._start_lookup("put", krpc.GET, target, now, item=item)

    def cancel(self, op: int) -> None:
        """Forget operation ``op``: no more queries or events for it (late answers are ignored)."""
        self._ops.pop(op, None)
        if self._bootstrap_op == op:
            self._bootstrap_op = None

    def note_external_ip(self, ip: str, voter: str, now: float) -> None:
        """A vote on our external IP (``ip`` in a response, BEP 10 ``yourip``) from ``voter``."""
        self._tick(now)
        family = "n6" if ":" in ip else "n4"
        voters = self._voters.get(family)
        if voters is None:
            return
        decided = voters.vote(ip, voter, now)
        if decided is None or family != self._id_family:
            return
        self._external_ip = decided
        if (
            not is_exempt(decided)
            and not id_matches_ip(self._own_id, decided)
            and (self._settings.enforce_node_id or not self._id_matched)
        ):
            new_id = node_id_for_ip(decided, self._rng.randrange(256), self._rng.randbytes(16))
            self._set_own_id(new_id, now)
        if not is_exempt(decided):
            self._id_matched = self._id_matched or id_matches_ip(self._own_id, decided)
        self._events.append(ExternalAddressChanged(decided, self._own_id))

    @property
    def responses_received(self) -> int:
        """Answers to our queries so far (cheap: the driver checks it per datagram)."""
        return self._responses_in

    def good_nodes(self) -> list[NodeInfo]:
        """Good nodes of every table: what the driver saves for the next start."""
        out: list[NodeInfo] = []
        for table in self._tables.values():
            out.extend(table.good_nodes(self._now))
        return out

    def local_peers(self, info_hash: bytes, now: float) -> list[Addr]:
        """Peers announced to us for ``info_hash`` (tests, stats)."""
        return self._peer_store.peers(
            info_hash, now, limit=self._settings.max_peers_per_hash, rng=self._rng
        )

    def stats(self, now: float) -> DhtStats:
        good = questionable = 0
        for table in self._tables.values():
            g, q = table.counts(now)
            good += g
            questionable += q
        t4 = self._tables.get("n4")
        t6 = self._tables.get("n6")
        return DhtStats(
            node_id=self._own_id,
            external_ip=self._external_ip,
            bootstrapped=self._bootstrapped,
            nodes_good=good,
            nodes_questionable=questionable,
            buckets=t4.bucket_stats(now) if t4 is not None else (),
            buckets6=t6.bucket_stats(now) if t6 is not None else (),
            queries_in=self._queries_in,
            queries_out=self._queries_out,
            responses_in=self._responses_in,
            errors_in=self._errors_in,
            timeouts=self._timeouts,
            rate_limited_in=self._rate_limited,
            dropped=dict(self._dropped),
            tokens_issued=self._tokens.issued,
            peers_stored=self._peer_store.peer_count,
            hashes_stored=len(self._peer_store),
            items_stored=len(self._item_store),
            lookups_active=sum(1 for op in self._ops.values() if op.lookup is not None),
        )

    # ------------------------------------------------------------------ helpers

    def _tick(self, now: float) -> None:
        if now > self._now:
            self._now = now

    def _drop(self, key: str) -> None:
        self._dropped[key] = self._dropped.get(key, 0) + 1

    @staticmethod
    def _clean_addr(addr: Addr) -> Addr | None:
        try:
            host, port = addr
        except (TypeError, ValueError):
            return None
        return normalise_peer(host, port)

    def _clean_addrs(self, addrs: Iterable[Addr]) -> list[Addr]:
        out: dict[Addr, None] = {}
        for addr in addrs:
            clean = self._clean_addr(addr)
            if clean is not None and _family(clean) in self._families:
                out[clean] = None
        return list(out)

    def _closest(self, target: bytes) -> list[NodeInfo]:
        out: list[NodeInfo] = []
        for table in self._tables.values():
            out.extend(table.closest(target, self._settings.k, now=self._now))
        return out

    def _may_enter(self, node_id: bytes, addr: Addr, *, read_only: bool) -> bool:
        """Whether a node may enter our table (BEP 43 read-only, BEP 42 enforcement, routers)."""
        if read_only or node_id == self._own_id or addr in self._router_set:
            return False
        if self._settings.enforce_node_id:
            ip = addr[0]
            if not is_exempt(ip) and not id_matches_ip(node_id, ip):
                return False
        return True

    def _heard(self, node_id: bytes, addr: Addr, now: float, *, response: bool, ro: bool) -> None:
        table = self._tables.get(_family(addr))
        if table is None or not self._may_enter(node_id, addr, read_only=ro):
            return
        node = NodeInfo(node_id, addr)
        try:
            to_ping = table.heard_from(node, now, response=response)
        except DhtError:
            return
        for stale in to_ping:
            self._upkeep_ping(stale, now)
        if (
            not response
            and table.get(node_id) is None
            and self._in_own_bucket(table, node_id, now)
            and self._confirm_bucket.take(now)
        ):
            # A querier near us that the table could not take on its word
            # alone: ask it ourselves.  Its answer confirms it, which splits
            # our own bucket to make room; without this a newcomer next to us
            # only learns of us, we never of it.  Far buckets do not split,
            # so there a confirmation would only park it as a spare: no ping.
            # Budgeted, so spoofed queries cannot turn us into a ping cannon.
            self._upkeep_ping(node, now)

    def _in_own_bucket(self, table: RoutingTable, node_id: bytes, now: float) -> bool:
        """Whether ``node_id`` falls in the bucket holding our own id (the one that splits)."""
        size = len(table)
        key = id(table)  # the tables live as long as the node
        cached = self._bucket_counts.get(key)
        if cached is None or cached[0] != size:
            cached = (size, len(table.bucket_stats(now)))
            self._bucket_counts[key] = cached
        shared = ID_LENGTH * 8 - distance(node_id, self._own_id).bit_length()
        return shared >= cached[1] - 1

    def _upkeep_ping(self, node: NodeInfo, now: float) -> None:
        if node.addr in self._upkeep_pings:
            return
        self._upkeep_pings.add(node.addr)
        self._send_query(krpc.PING, node.addr, now, op=None, phase="upkeep", asked=node)

    def _allowed(self, addr: Addr, now: float) -> bool:
        if self._limiter.allow(addr[0], now):
            return True
        self._rate_limited += 1
        self._drop("rate-limited")
        return False

    def _reply(self, msg: Response | ErrorReply, addr: Addr) -> None:
        if len(self._out) >= MAX_PENDING_REPLIES:
            self._drop("replies-overflow")
            return
        try:
            data = krpc.encode(msg)
        except (TorrentError, ValueError):
            self._drop("unencodable-reply")
            return
        self._out.append((data, addr))

    def _set_own_id(self, new_id: bytes, now: float) -> None:
        self._own_id = new_id
        self._bucket_counts.clear()
        for table in self._tables.values():
            table.set_own_id(new_id, now)

    # ------------------------------------------------------------------ serving

    def _on_query(self, q: Query, addr: Addr, now: float) -> None:
        self._queries_in += 1
        if self._settings.read_only:
            return
        if not self._allowed(addr, now):
            return
        handler = self._handlers.get(q.method)
        if handler is None:
            # Forward compatibility, as libtorrent: an unknown method with a
            # target or an info-hash is answered like find_node / get_peers.
            if q.info_hash is not None:
                handler = self._on_get_peers
            elif q.target is not None:
                handler = self._on_find_node
        if handler is None:
            reply: Response | ErrorReply = ErrorReply(
                q.tid, krpc.ERROR_METHOD_UNKNOWN, f"method unknown: {q.method[:50]}"
            )
        else:
            reply = handler(q, addr, now)
        self._reply(reply, addr)
        if q.sender != self._own_id:
            self._heard(q.sender, addr, now, response=False, ro=q.read_only)

    def _response(self, q: Query, addr: Addr, **fields: Any) -> Response:
        return Response(
            q.tid,
            self._own_id,
            ip=addr,
            version=self._settings.version,
            **fields,
        )

    def _nodes_for(self, q: Query, addr: Addr, target: bytes) -> dict[str, Any]:
        want = q.want & self._families if q.want else frozenset({_family(addr)}) & self._families
        if not want:
            want = frozenset({_family(addr)}) & self._families or self._families
        out: dict[str, Any] = {}
        k = self._settings.k
        if "n4" in want:
            out["nodes"] = tuple(self._tables["n4"].closest(target, k, now=self._now))
        if "n6" in want:
            out["nodes6"] = tuple(self._tables["n6"].closest(target, k, now=self._now))
        return out

    @staticmethod
    def _protocol_error(q: Query, message: str) -> ErrorReply:
        return ErrorReply(q.tid, krpc.ERROR_PROTOCOL, message)

    def _on_ping(self, q: Query, addr: Addr, now: float) -> Response | ErrorReply:
        return self._response(q, addr)

    def _on_find_node(self, q: Query, addr: Addr, now: float) -> Response | ErrorReply:
        if q.target is None:
            return self._protocol_error(q, "find_node without target")
        return self._response(q, addr, **self._nodes_for(q, addr, q.target))

    def _on_get_peers(self, q: Query, addr: Addr, now: float) -> Response | ErrorReply:
        if q.info_hash is None:
            return self._protocol_error(q, "get_peers without info_hash")
        token = self._tokens.issue(addr[0])
        if q.info_hash in self._peer_store:
            values = self._peer_store.peers(
                q.info_hash,
                now,
                limit=self._settings.max_values_reply,
                v6=_family(addr) == "n6",
                rng=self._rng,
            )
            if values:
                return self._response(q, addr, token=token, values=tuple(values))
        return self._response(q, addr, token=token, **self._nodes_for(q, addr, q.info_hash))

    def _on_announce_peer(self, q: Query, addr: Addr, now: float) -> Response | ErrorReply:
        if q.info_hash is None:
            return self._protocol_error(q, "announce_peer without info_hash")
        if not self._tokens.check(q.token, addr[0]):
            self._drop("bad-token")
            return self._protocol_error(q, "bad token")
        port = addr[1] if q.implied_port else q.port
        if port is None or not 0 < port < 65536:
            return self._protocol_error(q, "announce_peer without a valid port")
        # The source address came from the socket (normalised by the driver).
        peer = (addr[0], port)
        self._peer_store.announce(q.info_hash, peer, now, seed=q.seed)
        if len(self._events) < MAX_PENDING_EVENTS:
            self._events.append(AnnounceReceived(q.info_hash, peer))
        else:
            self._drop("events-overflow")
        return self._response(q, addr)

    def _on_sample_infohashes(self, q: Query, addr: Addr, now: float) -> Response | ErrorReply:
        if q.target is None:
            return self._protocol_error(q, "sample_infohashes without target")
        samples = self._peer_store.sample(self._settings.samples_per_reply, self._rng)
        return self._response(
            q,
            addr,
            samples=tuple(samples),
            interval=self._settings.sample_interval,
            num=len(self._peer_store),
            **self._nodes_for(q, addr, q.target),
        )

    def _on_get(self, q: Query, addr: Addr, now: float) -> Response | ErrorReply:
        if q.target is None:
            return self._protocol_error(q, "get without target")
        token = self._tokens.issue(addr[0])
        fields = self._nodes_for(q, addr, q.target)
        item = self._item_store.get(q.target, now)
        if item is not None:
            if item.mutable:
                fields.update(key=item.key, signature=item.signature, seq=item.seq)
                # BEP 44: a requester that already has this seq (or newer) needs no value.
                if q.seq is None or item.seq is None or q.seq < item.seq:
                    fields["value"] = item.value
            else:
                fields["value"] = item.value
        return self._response(q, addr, token=token, **fields)

    def _on_put(self, q: Query, addr: Addr, now: float) -> Response | ErrorReply:
        if q.value is None:
            return self._protocol_error(q, "put without v")
        if not self._tokens.check(q.token, addr[0]):
            self._drop("bad-token")
            return self._protocol_error(q, "bad token")
        if q.key is not None and (q.signature is None or q.seq is None):
            return self._protocol_error(q, "mutable put without sig or seq")
        item = Item(
            value=q.value,
            key=q.key,
            signature=q.signature if q.key is not None else None,
            seq=q.seq if q.key is not None else None,
            salt=(q.salt or b"") if q.key is not None else b"",
        )
        try:
            self._item_store.put(item, now, cas=q.cas)
        except ItemStoreError as exc:
            return ErrorReply(q.tid, exc.code, exc.message[:200])
        return self._response(q, addr)

    # ------------------------------------------------------------------ sending

    def _new_tid(self) -> bytes:
        while True:
            tid = self._rng.randbytes(TID_LENGTH)
            if tid not in self._transactions:
                return tid

    def _send_query(
        self,
        method: str,
        addr: Addr,
        now: float,
        *,
        op: int | None,
        phase: str,
        asked: NodeInfo | Addr | None = None,
        **args: Any,
    ) -> bytes | None:
        """Send (or queue behind the send-rate limit) a query; its tid, or None if it cannot."""
        if len(self._transactions) >= MAX_TRANSACTIONS:
            self._drop("too-many-transactions")
            if phase == "upkeep":
                self._upkeep_pings.discard(addr)
            return None
        tid = self._new_tid()
        query = Query(
            tid,
            self._own_id,
            method,
            want=self._want,
            read_only=self._settings.read_only,
            version=self._settings.version,
            **args,
        )
        where = asked if asked is not None else addr
        tx = _Transaction(
            tid,
            addr,
            query,
            op,
            where,
            where.id if isinstance(where, NodeInfo) else None,
            phase,
        )
        if not self._send_queue and self._send_bucket.take(now):
            self._transactions[tid] = tx
            self._transmit(tx, now)
            return tid
        if len(self._send_queue) >= MAX_SEND_QUEUE:
            self._drop("send-queue-full")
            if phase == "upkeep":
                self._upkeep_pings.discard(addr)
            return None
        self._transactions[tid] = tx
        self._send_queue.append(tx)
        return tid

    def _transmit(self, tx: _Transaction, now: float) -> None:
        try:
            data = krpc.encode(tx.query)
        except (TorrentError, ValueError):
            # Our own query failed to encode: a bug; fail it like a timeout.
            self._drop("unencodable-query")
            self._transactions.pop(tx.tid, None)
            self._settle_failure(tx, "unencodable", now)
            return
        tx.sent = True
        self._queries_out += 1
        self._out.append((data, tx.addr))
        timeout = self._settings.query_timeout
        self._deadline_seq += 1
        heapq.heappush(self._deadlines, (now + timeout, self._deadline_seq, _TIMEOUT, tx))
        if tx.phase == "lookup":
            self._deadline_seq += 1
            heapq.heappush(self._deadlines, (now + timeout / 2, self._deadline_seq, _STALL, tx))

    def _flush_send_queue(self, now: float) -> None:
        while self._send_queue and self._send_bucket.take(now):
            tx = self._send_queue.popleft()
            if self._transactions.get(tx.tid) is tx:
                self._transmit(tx, now)

    def _expire_transactions(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, kind, tx = heapq.heappop(deadlines)
            if self._transactions.get(tx.tid) is not tx:
                continue
            if kind == _STALL:
                op = self._ops.get(tx.op) if tx.op is not None else None
                if op is not None and op.lookup is not None:
                    op.lookup.stalled(tx.asked)
                    self._pump(op, now)
                continue
            del self._transactions[tx.tid]
            self._timeouts += 1
            table = self._tables.get(_family(tx.addr))
            if table is not None:
                node_id = tx.node_id
                if node_id is None and tx.phase == "single":
                    # A ping or sample to a bare address: the table may know who lives there.
                    node_id = next((n.id for n in table.nodes() if n.addr == tx.addr), None)
                if node_id is not None:
                    table.failed(node_id, now)
            self._settle_failure(tx, "timeout", now)

    # ------------------------------------------------------------------ answers

    def _match(self, tid: bytes, addr: Addr) -> _Transaction | None:
        tx = self._transactions.get(tid)
        if tx is None or tx.addr != addr or not tx.sent:
            self._drop("unknown-tid")
            return None
        del self._transactions[tid]
        return tx

    def _on_response(self, r: Response, addr: Addr, now: float) -> None:
        tx = self._match(r.tid, addr)
        if tx is None:
            return
        self._responses_in += 1
        if r.sender != self._own_id:
            self._heard(r.sender, addr, now, response=True, ro=False)
            if tx.node_id is not None and tx.node_id != r.sender:
                table = self._tables.get(_family(addr))
                if table is not None:
                    table.failed(tx.node_id, now)
        if r.ip is not None:
            self.note_external_ip(r.ip[0], addr[0], now)
        if tx.phase == "upkeep":
            self._upkeep_pings.discard(tx.addr)
            return
        op = self._ops.get(tx.op) if tx.op is not None else None
        if op is None:
            return
        if tx.phase == "lookup":
            self._lookup_answer(op, tx, r, now)
        elif tx.phase == "store":
            op.pending.discard(tx.tid)
            op.acked += 1
            self._store_progress(op)
        else:
            self._finish_single(op, tx.addr, r, None)

    def _on_error(self, e: ErrorReply, addr: Addr, now: float) -> None:
        tx = self._match(e.tid, addr)
        if tx is None:
            return
        self._errors_in += 1
        self._settle_failure(tx, f"error {e.code}: {e.message}", now)

    def _settle_failure(self, tx: _Transaction, why: str, now: float) -> None:
        if tx.phase == "upkeep":
            self._upkeep_pings.discard(tx.addr)
            return
        op = self._ops.get(tx.op) if tx.op is not None else None
        if op is None:
            return
        if tx.phase == "lookup":
            if op.lookup is not None:
                op.lookup.failed(tx.asked)
                self._pump(op, now)
        elif tx.phase == "store":
            op.pending.discard(tx.tid)
            self._store_progress(op)
        else:
            self._finish_single(op, tx.addr, None, why)

    # ------------------------------------------------------------------ operation plumbing

    def _new_op(self, kind: str, target: bytes, *, internal: bool) -> _Op | None:
        if len(self._ops) >= MAX_OPERATIONS:
            self._drop("too-many-operations")
            return None
        op = _Op(self._next_op, kind, target, internal=internal)
        self._next_op += 1
        self._ops[op.op] = op
        return op

    def _failed_op(self, kind: str, target: bytes, error: str) -> int:
        """An operation that cannot start: its number, with its failure event already queued."""
        op_id = self._next_op
        self._next_op += 1
        self._events.append(LookupFinished(op_id, kind, target, (), 0, 0, 0, 0, error=error))
        return op_id

    def _new_lookup(self, target: bytes, max_queries: int = MAX_QUERIES) -> Lookup:
        return Lookup(
            target,
            self._own_id,
            k=self._settings.k,
            alpha=self._settings.alpha,
            max_queries=max_queries,
        )

    def _start_lookup(
        self,
        kind: str,
        method: str,
        target: bytes,
        now: float,
        *,
        internal: bool = False,
        announce_port: int | None = None,
        implied_port: bool = False,
        seed: bool = False,
        salt: bytes = b"",
        item: Item | None = None,
        max_queries: int = MAX_QUERIES,
    ) -> int:
        self._tick(now)
        if len(target) != ID_LENGTH:
            return self._failed_op(kind, target, f"target must be {ID_LENGTH} bytes")
        op = self._new_op(kind, target, internal=internal)
        if op is None:
            return self._failed_op(kind, target, "too many operations")
        op.method = method
        op.announce_port = announce_port
        op.implied_port = implied_port
        op.seed = seed
        op.salt = salt
        op.item = item if kind == "put" else None
        op.lookup = self._new_lookup(target, max_queries)
        known = self._closest(target)
        op.lookup.add(known)
        if len(known) < self._settings.k and self._routers:
            # A table this thin (a small network, or one whose members are all
            # routers) cannot carry a lookup alone: start from the routers too,
            # as libtorrent's traversals do when they have no results.
            op.lookup.add_seeds(self._routers)
        if op.lookup.finished:
            del self._ops[op.op]
            if not internal:
                self._events.append(
                    LookupFinished(op.op, kind, target, (), 0, 0, 0, 0, error="no nodes to ask")
                )
            return op.op
        self._pump(op, now)
        return op.op

    def _single(self, method: str, addr: Addr, now: float, *, kind: str, **args: Any) -> int:
        self._tick(now)
        clean = self._clean_addr(addr)
        op = self._new_op(kind, b"", internal=False)
        if op is None:
            op_id = self._next_op
            self._next_op += 1
            self._events.append(QueryFinished(op_id, addr, None, "too many operations"))
            return op_id
        op.phase = "single"
        if clean is None or _family(clean) not in self._families:
            del self._ops[op.op]
            self._events.append(QueryFinished(op.op, addr, None, "bad address"))
            return op.op
        if self._send_query(method, clean, now, op=op.op, phase="single", **args) is None:
            del self._ops[op.op]
            self._events.append(QueryFinished(op.op, clean, None, "send queue full"))
        return op.op

    def _finish_single(self, op: _Op, addr: Addr, r: Response | None, error: str | None) -> None:
        if self._ops.pop(op.op, None) is None:
            return
        self._events.append(QueryFinished(op.op, addr, r, error))

    def _lookup_args(self, op: _Op) -> dict[str, Any]:
        if op.method == krpc.GET_PEERS:
            return {"info_hash": op.target}
        return {"target": op.target}

    def _pump(self, op: _Op, now: float) -> None:
        """Send what the lookup wants sent; finish it when the closest-set rule says so."""
        lookup = op.lookup
        if lookup is None or op.phase != "lookup":
            return
        args = self._lookup_args(op)
        while True:
            batch = lookup.next_queries()
            if not batch:
                break
            for asked in batch:
                addr = asked.addr if isinstance(asked, NodeInfo) else asked
                tid = self._send_query(
                    op.method, addr, now, op=op.op, phase="lookup", asked=asked, **args
                )
                if tid is None:
                    lookup.failed(asked)
        if lookup.finished:
            self._lookup_finished(op, now)

    def _lookup_answer(self, op: _Op, tx: _Transaction, r: Response, now: float) -> None:
        lookup = op.lookup
        if lookup is None or op.phase != "lookup":
            return
        nodes: list[NodeInfo] = []
        if "n4" in self._families:
            nodes.extend(r.nodes)
        if "n6" in self._families:
            nodes.extend(r.nodes6)
        # A router that answers is a candidate like any node: in a small
        # network it may be the closest node there is, and the one to announce to.
        cand = lookup.answered(tx.asked, nodes, responder=r.sender, token=r.token)
        # A known node answering under another id is failed by the lookup and
        # nothing it says is used; a bare address (a seed) is taken at its word.
        trusted = (
            cand.state is CandidateState.ANSWERED
            if cand is not None
            else not isinstance(tx.asked, NodeInfo)
        )
        if trusted:
            op.answered += 1
            if op.method == krpc.GET_PEERS and r.values:
                self._found_peers(op, r.values)
            elif op.method == krpc.GET and r.value is not None and op.kind == "get":
                self._found_item(op, r)
        if op.kind == "bootstrap" and op.routers_at is not None and op.answered >= self._settings.k:
            op.routers_at = None  # the saved nodes did it; the routers are not needed
        self._pump(op, now)

    def _found_peers(self, op: _Op, values: Iterable[Addr]) -> None:
        fresh = []
        for peer in values:
            if peer not in op.peers and len(op.peers) < MAX_PEERS_PER_LOOKUP:
                op.peers.add(peer)
                fresh.append(peer)
        if fresh and not op.internal:
            self._events.append(PeersFound(op.op, op.target, tuple(fresh)))

    def _found_item(self, op: _Op, r: Response) -> None:
        value = r.value
        if value is None:
            return
        if r.key is not None:
            if r.signature is None or r.seq is None:
                return
            item = Item(value=value, key=r.key, signature=r.signature, seq=r.seq, salt=op.salt)
        else:
            item = Item(value=value)
        try:
            item.verify()
            if item.target != op.target:
                return
        except DhtError:
            return
        best = op.item
        if best is None or (item.seq or 0) > (best.seq or 0):
            op.item = item

    def _use_routers(self, op: _Op, now: float) -> None:
        op.routers_at = None
        if op.lookup is None or not op.routers or op.phase != "lookup":
            return
        op.lookup.add_seeds(op.routers)
        op.routers = ()
        self._pump(op, now)

    def _lookup_finished(self, op: _Op, now: float) -> None:
        lookup = op.lookup
        assert lookup is not None
        if op.kind == "bootstrap" and op.routers and op.answered < self._settings.k:
            # The saved nodes ran dry before the grace period: ask the routers now.
            self._use_routers(op, now)
            if not lookup.finished:
                return
        closest = lookup.closest()
        op.closest = tuple(c.info for c in closest)
        if op.announce_port is not None or op.kind == "put":
            op.phase = "store"
            for cand in closest:
                if cand.token is None:
                    continue
                args: dict[str, Any]
                if op.kind == "put":
                    item = op.item
                    assert item is not None
                    args = {"token": cand.token, "value": item.value}
                    if item.mutable:
                        args.update(
                            key=item.key,
                            signature=item.signature,
                            seq=item.seq,
                            salt=item.salt or None,
                        )
                    method = krpc.PUT
                else:
                    args = {
                        "info_hash": op.target,
                        "token": cand.token,
                        # BEP 5: with implied_port the port is ignored; 0 means "none".
                        "port": op.announce_port or None,
                        "implied_port": op.implied_port,
                        "seed": op.seed,
                    }
                    method = krpc.ANNOUNCE_PEER
                tid = self._send_query(
                    method, cand.info.addr, now, op=op.op, phase="store", asked=cand.info, **args
                )
                if tid is not None:
                    op.pending.add(tid)
            self._store_progress(op)
            return
        self._finish_lookup(op)

    def _store_progress(self, op: _Op) -> None:
        if op.phase == "store" and not op.pending:
            self._finish_lookup(op)

    def _finish_lookup(self, op: _Op) -> None:
        if self._ops.pop(op.op, None) is None:
            return
        lookup = op.lookup
        assert lookup is not None
        if op.kind == "bootstrap":
            self._bootstrap_done(op)
        if op.internal:
            return
        self._events.append(
            LookupFinished(
                op.op,
                op.kind,
                op.target,
                op.closest,
                len(op.peers),
                op.acked,
                lookup.rounds,
                lookup.queries,
                value=op.item,
            )
        )

    def _bootstrap_done(self, op: _Op) -> None:
        if self._bootstrap_op == op.op:
            self._bootstrap_op = None
        good = len(self.good_nodes())
        ok = op.answered > 0 and sum(len(t) for t in self._tables.values()) > 0
        if ok:
            self._bootstrapped = True
            self._refresh_far_buckets()
        if not self._bootstrap_reported and not op.internal:
            self._bootstrap_reported = True
            self._events.append(Bootstrapped(good, ok))

    def _refresh_far_buckets(self) -> None:
        """Look up a random id in every empty bucket but our own, right after a bootstrap.

        The bootstrap lookup walks towards our own id, so it fills the
        buckets near us; the far ones (half the id space for bucket 0) would
        otherwise only fill from whoever happens to query us, and a node that
        knows nobody in the other half cannot route there at all until the
        15-minute refresh.  libtorrent refreshes new buckets at once too.
        One contact per bucket is what routing needs (Kademlia's invariant),
        so only empty buckets are looked up, each lookup capped at ``k``
        queries: it only has to reach the bucket, not converge.
        """
        now = self._now
        for table in self._tables.values():
            buckets = table.bucket_stats(now)[:-1][:MAX_BOOT_REFRESH]
            for bucket in buckets:
                if bucket.good + bucket.questionable == 0:
                    target = self._random_id_at_depth(bucket.depth)
                    self._start_lookup(
                        "refresh",
                        krpc.FIND_NODE,
                        target,
                        now,
                        internal=True,
                        max_queries=self._settings.k,
                    )

    def _random_id_at_depth(self, depth: int) -> bytes:
        """A random id sharing exactly ``depth`` leading bits with ours."""
        bits = ID_LENGTH * 8
        free = bits - depth - 1
        prefix = (int.from_bytes(self._own_id, "big") >> free) ^ 1
        value = (prefix << free) | self._rng.getrandbits(free)
        return value.to_bytes(ID_LENGTH, "big")

    # ------------------------------------------------------------------ upkeep

    def _maintain(self, now: float) -> None:
        self._peer_store.expire(now)
        self._item_store.expire(now)
        for table in self._tables.values():
            for node in table.stale_nodes(now):
                self._upkeep_ping(node, now)
            for target in table.refresh_targets(now):
                self._start_lookup("refresh", krpc.FIND_NODE, target, now, internal=True)
        empty = all(len(t) == 0 for t in self._tables.values())
        if empty and self._routers and self._bootstrap_op is None and now >= self._next_rebootstrap:
            self._next_rebootstrap = now + REBOOTSTRAP_INTERVAL
            op = self._new_op("bootstrap", self._own_id, internal=True)
            if op is not None:
                op.method = krpc.FIND_NODE
                op.lookup = self._new_lookup(self._own_id)
                op.lookup.add_seeds(self._routers)
                self._bootstrap_op = op.op
                self._pump(op, now)
