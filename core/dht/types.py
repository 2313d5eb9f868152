"""Values every part of the DHT shares: addresses, node identities, settings, stats, events.

The DHT package is sans-IO (no asyncio, no sockets): :mod:`.krpc` turns
datagrams into typed messages, :mod:`.routing` keeps the Kademlia table,
:mod:`.node` answers queries and runs lookups, and the engine's
``DhtService`` (``core/engine/dht_service.py``) moves its datagrams over the
shared UDP socket (``core/net/udp_mux.py``).  Time is always passed in as
``now`` (``time.monotonic()`` seconds); nothing here reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

#: A UDP endpoint: ``(ip, port)``.  IPv6 literals without brackets, in their
#: compressed form; IPv4-mapped IPv6 addresses are normalised to plain IPv4
#: (``core.formats.compact.normalise_peer`` does both), so one node is never
#: known under two spellings.
Addr = tuple[str, int]

#: Node ids and info-hashes are 20 bytes; Kademlia distance is their XOR.
ID_LENGTH = 20


def distance(a: bytes, b: bytes) -> int:
    """The XOR metric between two 20-byte ids, as an integer (smaller is closer)."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A DHT node as compact node info carries it: its id and where it listens."""

    id: bytes
    addr: Addr


@dataclass(frozen=True, slots=True)
class DhtSettings:
    """What a :class:`~core.dht.node.DhtNode` needs to know; defaults follow libtorrent/BEP 5.

    Built by the engine from :class:`~core.config.ClientConfig`; times are
    seconds, rates per second.
    """

    #: Kademlia bucket size.
    k: int = 8
    #: Queries in flight per lookup.
    alpha: int = 3
    #: A query unanswered this long counts as a timeout.
    query_timeout: float = 2.0
    #: BEP 43: we put ``ro=1`` in our queries and answer nothing.
    read_only: bool = False
    #: BEP 42: keep nodes whose id does not match their IP out of the table
    #: (local and loopback addresses are exempt, as the BEP says).
    enforce_node_id: bool = False
    #: Secrets of the announce tokens rotate this often; a token is good for
    #: the current and the previous secret.
    token_rotation: float = 300.0
    #: A node silent this long is questionable; a bucket untouched this long is refreshed.
    node_stale_after: float = 15 * 60.0
    bucket_refresh: float = 15 * 60.0
    #: Announced peers are forgotten after this long (BEP 5 peers re-announce every 15 min).
    peer_ttl: float = 30 * 60.0
    #: The peer store's caps: per info-hash and overall (info-hashes).
    max_peers_per_hash: int = 200
    max_hashes: int = 2000
    #: Peers in one ``values`` reply (keeps a reply in one unfragmented datagram).
    max_values_reply: int = 100
    #: BEP 44 items stored, and for how long.
    max_items: int = 700
    item_ttl: float = 2 * 3600.0
    #: Queries answered per second per source IP (burst twice that), and overall.
    query_rate_per_ip: float = 20.0
    query_rate_total: float = 2000.0
    #: Queries we send per second overall (lookups wait their turn beyond it).
    send_rate: float = 500.0
    #: BEP 51: how many info-hashes one ``sample_infohashes`` reply carries, and its interval.
    samples_per_reply: int = 20
    sample_interval: int = 6 * 3600
    #: ``v`` in our messages: client code and version (BEP 20 style, 4 bytes).
    version: bytes = b"PY\x01\x00"


class NodeState(enum.StrEnum):
    """BEP 5's node states, as the routing table judges them."""

    GOOD = "good"  # answered us within ``node_stale_after``
    QUESTIONABLE = "questionable"  # silent for longer, or never answered a query of ours
    BAD = "bad"  # failed to answer several queries in a row


@dataclass(frozen=True, slots=True)
class BucketStats:
    """One routing-table bucket: its prefix depth and how its nodes stand."""

    depth: int
    good: int
    questionable: int
    replacements: int


@dataclass(frozen=True, slots=True)
class DhtStats:
    """A DHT node's counters and table, as typed values (totals since start).

    Rates per second are computed by whoever samples the counters twice
    (the engine's ``DhtService``); this is one sample.
    """

    node_id: bytes
    external_ip: str | None
    bootstrapped: bool
    nodes_good: int
    nodes_questionable: int
    buckets: tuple[BucketStats, ...]
    buckets6: tuple[BucketStats, ...]
    queries_in: int
    queries_out: int
    responses_in: int
    errors_in: int
    timeouts: int
    #: Queries we refused to answer because a source (or everyone) asked too fast.
    rate_limited_in: int
    #: Datagrams we dropped, by short reason key (a ``nodes`` string of 25 bytes is counted
    #: under ``"bad-nodes"``; :data:`.krpc.ERROR_KEYS` lists the decoder's keys).
    dropped: dict[str, int] = field(default_factory=dict)
    tokens_issued: int = 0
    peers_stored: int = 0
    hashes_stored: int = 0
    items_stored: int = 0
    lookups_active: int = 0

    @property
    def nodes_total(self) -> int:
        return self.nodes_good + self.nodes_questionable
