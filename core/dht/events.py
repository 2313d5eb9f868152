"""What a :class:`~core.dht.node.DhtNode` tells its driver, drained with ``node.events()``.

Every operation the driver starts (a lookup, an announce, a ping, a BEP 44
get or put, a BEP 51 sample) gets an ``op`` number back; the events that
answer it carry that number.  Nothing here holds a socket or a future: the
driver maps ``op`` to whatever it awaits.
"""

from __future__ import annotations

from dataclasses import dataclass

from .types import Addr, NodeInfo


@dataclass(frozen=True, slots=True)
class PeersFound:
    """Peers a ``get_peers`` lookup received, as they arrive (one event per reply with values)."""

    op: int
    info_hash: bytes
    peers: tuple[Addr, ...]


@dataclass(frozen=True, slots=True)
class LookupFinished:
    """An iterative lookup (find_node, get_peers, get, put, announce, bootstrap) has ended.

    ``closest`` are the nodes nearest the target that answered;
    ``announced`` how many of them accepted our ``announce_peer``/``put``;
    ``peers`` the distinct peers found in all; ``rounds`` the depth of the
    deepest reply chain; ``queries`` the queries sent.  ``value`` is the
    BEP 44 item a ``get`` found (the one with the highest ``seq`` for a
    mutable item), or None.  ``error`` says why a lookup could not run
    (``"no nodes to ask"``), else None.
    """

    op: int
    kind: str  # "find_node" | "get_peers" | "announce" | "get" | "put" | "bootstrap"
    target: bytes
    closest: tuple[NodeInfo, ...]
    peers: int
    announced: int
    rounds: int
    queries: int
    value: object | None = None  # core.dht.items.Item for get/put
    error: str | None = None


@dataclass(frozen=True, slots=True)
class QueryFinished:
    """A single query to one address (ping, sample_infohashes) has been answered or has failed.

    ``response`` is the decoded :class:`~core.dht.krpc.Response`, or None
    with ``error`` saying why (``"timeout"``, ``"error 203: ..."``).
    """

    op: int
    addr: Addr
    response: object | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Bootstrapped:
    """The first bootstrap lookup finished: how many good nodes the tables hold now."""

    nodes: int
    ok: bool


@dataclass(frozen=True, slots=True)
class ExternalAddressChanged:
    """Votes settled on a new external IP (BEP 42); ``node_id`` is ours now."""

    ip: str
    node_id: bytes


@dataclass(frozen=True, slots=True)
class AnnounceReceived:
    """A remote node announced a peer for an info-hash (BEP 5 ``announce_peer``)."""

    info_hash: bytes
    peer: Addr


DhtEvent = (
    PeersFound
    | LookupFinished
    | QueryFinished
    | Bootstrapped
    | ExternalAddressChanged
    | AnnounceReceived
)
