"""The DHT node (core/dht/node.py) through its sans-IO face: datagrams in and out, no sockets.

Small networks are wired by hand (each node's ``outgoing()`` into the
others' ``receive()``); hostile datagrams go straight into ``receive()``.
"""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable
from dataclasses import replace

import pytest

from core.dht import krpc
from core.dht import node as node_module
from core.dht.events import (
    AnnounceReceived,
    Bootstrapped,
    DhtEvent,
    ExternalAddressChanged,
    LookupFinished,
    PeersFound,
    QueryFinished,
)
from core.dht.items import Item
from core.dht.krpc import ErrorReply, Query, Response
from core.dht.node import DhtNode
from core.dht.node_id import id_matches_ip, node_id_for_ip
from core.dht.types import Addr, DhtSettings, NodeInfo, distance

SETTINGS = DhtSettings()
INFO_HASH = bytes.fromhex("aa" * 20)


class Net:
    """A lossless in-memory network of nodes; ``pump`` delivers until everyone is quiet."""

    def __init__(self) -> None:
        self.nodes: dict[Addr, DhtNode] = {}
        self.events: dict[Addr, list[DhtEvent]] = {}
        self.now = 0.0
        self.sent: list[tuple[Addr, Addr, bytes]] = []
        self.drop: Callable[[Addr, Addr, bytes], bool] = lambda src, dst, data: False
        self.rng = random.Random(7)

    def add(
        self, addr: Addr, settings: DhtSettings = SETTINGS, node_id: bytes | None = None
    ) -> DhtNode:
        node = DhtNode(
            settings,
            now=self.now,
            node_id=node_id,
            families=frozenset({"n6" if ":" in addr[0] else "n4"}),
            rng=random.Random(hash(addr) & 0xFFFF),
        )
        self.nodes[addr] = node
        self.events[addr] = []
        return node

    def pump(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            moved = False
            for src, node in list(self.nodes.items()):
                for data, dst in node.outgoing():
                    moved = True
                    self.sent.append((src, dst, data))
                    self.now += 0.0001
                    target = self.nodes.get(dst)
                    if target is not None and not self.drop(src, dst, data):
                        target.receive(data, src, self.now)
                self.events[src].extend(node.events())
            if not moved:
                return
        raise AssertionError("the network never went quiet")

    def advance(self, seconds: float, step: float = 0.25) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for node in self.nodes.values():
                node.poll(self.now)
            self.pump()

    def of(self, addr: Addr, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events[addr] if isinstance(e, kind)]


def _addr(i: int) -> Addr:
    return (f"10.0.{i >> 8}.{i & 255}", 6881)


def _mesh(count: int) -> Net:
    """``count`` nodes where everyone has pinged everyone (full tables where they fit)."""
    net = Net()
    for i in range(1, count + 1):
        net.add(_addr(i))
    for a, node in net.nodes.items():
        for b in net.nodes:
            if a != b:
                node.add_node(b, net.now)
        net.pump()
    return net


def _query(sender: bytes, method: str, tid: bytes = b"tt", **fields: object) -> bytes:
    return krpc.encode(Query(tid, sender, method, **fields))  # type: ignore[arg-type]


def _replies(node: DhtNode) -> list[krpc.Message]:
    """What ``node`` answered (its own queries, e.g. pings to confirm a querier, left out)."""
    out = [krpc.decode(data) for data, _ in node.outgoing()]
    return [m for m in out if not isinstance(m, Query)]


# --------------------------------------------------------------------------- two nodes


def test_ping_between_two_nodes() -> None:
    net = Net()
    a, b = net.add(_addr(1)), net.add(_addr(2))
    op = a.ping(_addr(2), net.now)
    net.pump()
    (done,) = net.of(_addr(1), QueryFinished)
    assert done.op == op and done.error is None
    assert isinstance(done.response, Response)
    assert done.response.sender == b.node_id
    assert done.response.ip == _addr(1)  # BEP 42: how b saw us
    assert done.response.version == SETTINGS.version
    assert [n.id for n in a.good_nodes()] == [b.node_id]  # it answered: good
    stats_b = b.stats(net.now)
    assert stats_b.queries_in == 1 and stats_b.nodes_questionable == 1  # only queried us
    stats_a = a.stats(net.now)
    assert stats_a.queries_out == 1 and stats_a.responses_in == 1


def test_ping_timeout_fails_the_node() -> None:
    net = Net()
    a = net.add(_addr(1))
    b = net.add(_addr(2))
    a.ping(_addr(2), net.now)
    net.pump()
    net.nodes.pop(_addr(2))  # b goes silent
    net.events[_addr(1)].clear()
    op = a.ping(_addr(2), net.now)
    assert a.next_wakeup() is not None
    net.advance(SETTINGS.query_timeout + 0.5)
    (done,) = net.of(_addr(1), QueryFinished)
    assert done.op == op and done.error == "timeout" and done.response is None
    assert a.stats(net.now).timeouts == 1
    assert b.node_id not in {n.id for n in a.good_nodes()}


def test_error_reply_finishes_a_query() -> None:
    net = Net()
    a = net.add(_addr(1))
    op = a.ping(_addr(2), 0.0)
    ((data, _),) = a.outgoing()
    tid = krpc.decode(data).tid
    a.receive(krpc.encode(ErrorReply(tid, 202, "server error")), _addr(2), 0.1)
    (done,) = a.events()
    assert isinstance(done, QueryFinished) and done.op == op
    assert done.error == "error 202: server error"
    assert a.stats(0.1).errors_in == 1


# --------------------------------------------------------------------------- serving


def test_find_node_answers_nodes_for_the_querier_family_and_want() -> None:
    net = _mesh(12)
    node = net.nodes[_addr(1)]
    target = bytes(20)
    node.receive(_query(b"q" * 20, "find_node", target=target), ("10.9.9.9", 1), net.now)
    (reply,) = _replies(node)
    assert isinstance(reply, Response)
    assert len(reply.nodes) == 8 and reply.nodes6 == ()
    ids = [n.id for n in reply.nodes]
    assert ids == sorted(ids, key=lambda i: distance(i, target))
    # asks only for n6, which this node has no table for: falls back to its own family
    node.receive(
        _query(b"q" * 20, "find_node", target=target, want=frozenset({"n6"})),
        ("10.9.9.9", 1),
        net.now,
    )
    (reply6,) = _replies(node)
    assert isinstance(reply6, Response) and reply6.nodes6 == () and len(reply6.nodes) == 8


def test_dual_stack_node_serves_nodes6_on_want() -> None:
    node = DhtNode(SETTINGS, now=0.0, families=frozenset({"n4", "n6"}), rng=random.Random(1))
    for i in range(1, 4):
        node.receive(_query(bytes([i]) * 20, "ping"), (f"2001:db8::{i}", 6881), 0.0)
        node.receive(_query(bytes([i + 10]) * 20, "ping"), (f"198.51.100.{i}", 6881), 0.0)
    node.outgoing()
    node.receive(
        _query(b"q" * 20, "find_node", target=bytes(20), want=frozenset({"n4", "n6"})),
        ("198.51.100.77", 1),
        0.1,
    )
    (reply,) = _replies(node)
    assert isinstance(reply, Response) and len(reply.nodes) == 3 and len(reply.nodes6) == 3
    node.receive(_query(b"q" * 20, "find_node", target=bytes(20)), ("2001:db8::99", 1), 0.2)
    (reply6,) = _replies(node)
    assert isinstance(reply6, Response) and reply6.nodes == () and len(reply6.nodes6) == 3
    # our own queries ask for both families
    node.ping(("198.51.100.1", 6881), 0.3)
    ((data, _),) = node.outgoing()
    query = krpc.decode(data)
    assert isinstance(query, Query) and query.want == frozenset({"n4", "n6"})
    assert len(node.stats(0.3).buckets6) >= 1


def test_get_peers_gives_token_and_nodes_then_values_after_announce() -> None:
    net = _mesh(10)
    node = net.nodes[_addr(1)]
    querier = ("10.7.7.7", 5000)
    node.receive(_query(b"q" * 20, "get_peers", info_hash=INFO_HASH), querier, net.now)
    (reply,) = _replies(node)
    assert isinstance(reply, Response) and reply.token is not None
    assert reply.values == () and len(reply.nodes) == 8
    node.receive(
        _query(
            b"q" * 20,
            "announce_peer",
            info_hash=INFO_HASH,
            token=reply.token,
            port=9999,
            implied_port=True,
        ),
        querier,
        net.now,
    )
    (ack,) = _replies(node)
    assert isinstance(ack, Response)
    # implied_port: the source port, not the port argument
    assert node.local_peers(INFO_HASH, net.now) == [("10.7.7.7", 5000)]
    assert AnnounceReceived(INFO_HASH, ("10.7.7.7", 5000)) in node.events()
    node.receive(_query(b"r" * 20, "get_peers", info_hash=INFO_HASH), ("10.8.8.8", 1), net.now)
    (with_values,) = _replies(node)
    assert isinstance(with_values, Response)
    assert with_values.values == (("10.7.7.7", 5000),) and with_values.nodes == ()
    assert with_values.token is not None
    stats = node.stats(net.now)
    assert stats.tokens_issued == 2 and stats.peers_stored == 1 and stats.hashes_stored == 1


def test_announce_with_a_bad_token_is_refused() -> None:
    node = DhtNode(SETTINGS, now=0.0, rng=random.Random(2))
    node.receive(_query(b"q" * 20, "get_peers", info_hash=INFO_HASH), ("10.1.1.1", 1), 0.0)
    (reply,) = _replies(node)
    assert isinstance(reply, Response) and reply.token is not None
    # the token was issued to another IP
    node.receive(
        _query(b"q" * 20, "announce_peer", info_hash=INFO_HASH, token=reply.token, port=80),
        ("10.1.1.2", 1),
        0.0,
    )
    (error,) = _replies(node)
    assert isinstance(error, ErrorReply) and error.code == krpc.ERROR_PROTOCOL
    assert node.local_peers(INFO_HASH, 0.0) == []
    assert node.stats(0.0).dropped["bad-token"] == 1
    # tokens survive one rotation, not two
    node.receive(
        _query(b"q" * 20, "announce_peer", info_hash=INFO_HASH, token=reply.token, port=80),
        ("10.1.1.1", 1),
        SETTINGS.token_rotation + 1,
    )
    node.poll(SETTINGS.token_rotation + 1)
    assert node.local_peers(INFO_HASH, SETTINGS.token_rotation + 1) == [("10.1.1.1", 80)]


def test_unknown_and_malformed_queries_get_errors() -> None:
    node = DhtNode(SETTINGS, now=0.0, rng=random.Random(3))
    node.receive(_query(b"q" * 20, "frobnicate"), ("10.1.1.1", 1), 0.0)
    (unknown,) = _replies(node)
    assert isinstance(unknown, ErrorReply) and unknown.code == krpc.ERROR_METHOD_UNKNOWN
    # an unknown method with a target is answered like find_node (forward compatible)
    node.receive(_query(b"q" * 20, "find_node2", target=bytes(20)), ("10.1.1.1", 1), 0.0)
    (compat,) = _replies(node)
    assert isinstance(compat, Response)
    # a query missing its target: 203 with the transaction id echoed
    node.receive(b"d1:ad2:id20:" + b"q" * 20 + b"e1:q9:find_node1:t2:xy1:y1:qe", ("10.1.1.1", 1), 0)
    (bad,) = _replies(node)
    assert isinstance(bad, ErrorReply) and bad.code == krpc.ERROR_PROTOCOL and bad.tid == b"xy"
    stats = node.stats(0.0)
    assert stats.dropped == {"missing": 1}
    assert stats.queries_in == 2


def test_sample_infohashes_and_its_answer() -> None:
    net = Net()
    a = net.add(_addr(1))
    b = net.add(_addr(2), replace(SETTINGS, query_rate_per_ip=1000.0))
    for i in range(30):
        info_hash = i.to_bytes(20, "big")
        b.receive(_query(b"q" * 20, "get_peers", info_hash=info_hash), ("10.5.5.5", 1), 0.0)
        (reply,) = _replies(b)
        assert isinstance(reply, Response)
        b.receive(
            _query(b"q" * 20, "announce_peer", info_hash=info_hash, token=reply.token, port=1),
            ("10.5.5.5", 1),
            0.0,
        )
        b.outgoing()
    op = a.sample_infohashes(_addr(2), net.now)
    net.pump()
    (done,) = net.of(_addr(1), QueryFinished)
    assert done.op == op
    response = done.response
    assert isinstance(response, Response)
    assert len(response.samples) == SETTINGS.samples_per_reply
    assert response.num == 30 and response.interval == SETTINGS.sample_interval


def test_read_only_node_asks_with_ro_and_answers_nothing() -> None:
    net = Net()
    ro = net.add(_addr(1), replace(SETTINGS, read_only=True))
    other = net.add(_addr(2))
    ro.ping(_addr(2), net.now)
    net.pump()
    query = krpc.decode(net.sent[0][2])
    assert isinstance(query, Query) and query.read_only
    # BEP 43: the read-only node was answered but is not in the other's table
    assert net.of(_addr(1), QueryFinished)[0].response is not None
    assert other.stats(net.now).nodes_total == 0
    # and queries to the read-only node go unanswered
    ro.receive(_query(b"q" * 20, "ping"), _addr(2), net.now)
    assert ro.outgoing() == []
    assert ro.stats(net.now).queries_in == 1


def test_enforcement_keeps_mismatched_ids_out_of_the_table() -> None:
    node = DhtNode(replace(SETTINGS, enforce_node_id=True), now=0.0, rng=random.Random(4))
    good_ip, bad_ip = "203.0.113.10", "203.0.113.11"
    good_id = node_id_for_ip(good_ip, 5, bytes(16))
    assert id_matches_ip(good_id, good_ip) and not id_matches_ip(good_id, bad_ip)
    node.receive(_query(good_id, "ping"), (good_ip, 1), 0.0)
    node.receive(_query(good_id, "ping", tid=b"t2"), (bad_ip, 1), 0.0)  # same id, wrong IP
    node.receive(_query(b"\x01" * 20, "ping", tid=b"t3"), ("10.0.0.5", 1), 0.0)  # exempt
    assert len(_replies(node)) == 3  # everyone is answered
    stats = node.stats(0.0)
    assert stats.nodes_total == 2
    # without enforcement the mismatched node would have entered
    lax = DhtNode(SETTINGS, now=0.0, rng=random.Random(4))
    lax.receive(_query(b"\x02" * 20, "ping"), (bad_ip, 1), 0.0)
    assert lax.stats(0.0).nodes_total == 1


# --------------------------------------------------------------------------- external IP


def _answer_pings(node: DhtNode, voters: list[Addr], ip: Addr, now: float) -> None:
    for voter in voters:
        node.ping(voter, now)
    for data, dst in node.outgoing():
        query = krpc.decode(data)
        sender = random.Random(dst[0]).randbytes(20)
        node.receive(krpc.encode(Response(query.tid, sender, ip=ip)), dst, now)


def test_external_ip_votes_regenerate_a_random_id() -> None:
    node = DhtNode(SETTINGS, now=0.0, rng=random.Random(5))
    old_id = node.node_id
    me: Addr = ("203.0.113.7", 6881)
    _answer_pings(node, [(f"198.51.100.{i}", 1) for i in range(9)], me, 0.0)
    assert node.node_id == old_id  # 9 votes are not enough
    assert not [e for e in node.events() if isinstance(e, ExternalAddressChanged)]
    _answer_pings(node, [("198.51.100.200", 1)], me, 0.0)
    changed = [e for e in node.events() if isinstance(e, ExternalAddressChanged)]
    assert changed == [ExternalAddressChanged("203.0.113.7", node.node_id)]
    assert node.node_id != old_id and id_matches_ip(node.node_id, "203.0.113.7")
    assert node.stats(0.0).external_ip == "203.0.113.7"
    # the table was rebuilt around the new id and kept its nodes
    assert node.stats(0.0).nodes_total == 10
    # BEP 10 yourip votes go the same way
    node.note_external_ip("203.0.113.7", "192.0.2.1", 1.0)
    assert not node.events()


def test_external_ip_on_a_private_network_keeps_the_id() -> None:
    node = DhtNode(SETTINGS, now=0.0, rng=random.Random(6))
    old_id = node.node_id
    _answer_pings(node, [(f"10.1.1.{i}", 1) for i in range(12)], ("10.0.0.1", 6881), 0.0)
    assert node.node_id == old_id
    assert [e for e in node.events() if isinstance(e, ExternalAddressChanged)] == [
        ExternalAddressChanged("10.0.0.1", old_id)
    ]


# --------------------------------------------------------------------------- lookups


def test_find_node_in_a_small_net() -> None:
    net = Net()
    count = 40
    entry = net.add(_addr(1))
    # each newcomer bootstraps through node 1 (a router: it never enters
    # tables, so nobody names it; a lookup that asks it directly, as one on a
    # thin table does, may find it among the closest)
    for i in range(2, count + 1):
        net.add(_addr(i)).bootstrap([], [_addr(1)], net.now)
        net.advance(0.5)
    asker = net.nodes[_addr(count)]
    target = net.nodes[_addr(20)].node_id
    op = asker.find_node(target, net.now)
    net.pump()
    (done,) = [e for e in net.of(_addr(count), LookupFinished) if e.op == op]
    assert done.kind == "find_node" and done.error is None
    assert done.closest[0].id == target

    def nearest(nodes: list[DhtNode]) -> list[bytes]:
        return sorted((n.node_id for n in nodes), key=lambda i: distance(i, target))[:8]

    others = [n for n in net.nodes.values() if n is not asker]
    got = [n.id for n in done.closest]
    assert got in (nearest(others), nearest([n for n in others if n is not entry]))
    assert done.rounds >= 1 and done.queries >= len(done.closest)


def test_get_peers_announce_and_find_in_a_small_net() -> None:
    net = _mesh(30)
    announcer = net.nodes[_addr(3)]
    op = announcer.get_peers(INFO_HASH, net.now, announce_port=7000)
    net.pump()
    (done,) = [e for e in net.of(_addr(3), LookupFinished) if e.op == op]
    assert done.kind == "announce" and done.announced == 8
    stored = [a for a, n in net.nodes.items() if n.local_peers(INFO_HASH, net.now)]
    assert len(stored) == 8
    closest = sorted(
        (a for a in net.nodes if a != _addr(3)),
        key=lambda a: distance(net.nodes[a].node_id, INFO_HASH),
    )[:8]
    assert sorted(stored) == sorted(closest)
    getter = net.nodes[_addr(20)]
    op2 = getter.get_peers(INFO_HASH, net.now)
    net.pump()
    found = [e for e in net.of(_addr(20), PeersFound) if e.op == op2]
    assert found and all(e.info_hash == INFO_HASH for e in found)
    assert {p for e in found for p in e.peers} == {(_addr(3)[0], 7000)}
    (done2,) = [e for e in net.of(_addr(20), LookupFinished) if e.op == op2]
    assert done2.kind == "get_peers" and done2.peers == 1 and done2.announced == 0


def test_lookup_with_no_nodes_fails_at_once() -> None:
    node = DhtNode(SETTINGS, now=0.0, rng=random.Random(8))
    op = node.get_peers(INFO_HASH, 0.0)
    (done,) = node.events()
    assert isinstance(done, LookupFinished) and done.op == op
    assert done.error == "no nodes to ask"
    op = node.find_node(b"short", 0.0)
    (bad,) = node.events()
    assert isinstance(bad, LookupFinished) and bad.op == op and bad.error


def test_cancelled_lookup_sends_no_events() -> None:
    net = _mesh(10)
    node = net.nodes[_addr(1)]
    op = node.find_node(bytes(20), net.now)
    node.cancel(op)
    net.pump()
    assert not [e for e in net.events[_addr(1)] if isinstance(e, LookupFinished)]
    assert node.stats(net.now).lookups_active == 0
    assert "unknown-tid" not in node.stats(net.now).dropped


def test_put_and_get_items() -> None:
    net = _mesh(20)
    putter, getter = net.nodes[_addr(1)], net.nodes[_addr(15)]
    item = Item.immutable(b"12:Hello World!")
    op = putter.put_item(item, net.now)
    net.pump()
    (done,) = [e for e in net.of(_addr(1), LookupFinished) if e.op == op]
    assert done.kind == "put" and done.announced == 8
    op = getter.get_item(item.target, net.now)
    net.pump()
    (got,) = [e for e in net.of(_addr(15), LookupFinished) if e.op == op]
    assert got.value == item
    seed = bytes(range(32))
    m1, m2 = Item.signed(seed, b"1:a", 1, b"salt"), Item.signed(seed, b"1:b", 2, b"salt")
    for it in (m1, m2):
        op = putter.put_item(it, net.now)
        net.pump()
    op = getter.get_item(m1.target, net.now, salt=b"salt")
    net.pump()
    (got2,) = [e for e in net.of(_addr(15), LookupFinished) if e.op == op]
    assert got2.value == m2  # the highest seq
    # an older seq is refused by the storers (302)
    op = putter.put_item(m1, net.now)
    net.pump()
    (late,) = [e for e in net.of(_addr(1), LookupFinished) if e.op == op]
    assert late.announced == 0


def test_put_with_a_forged_signature_is_refused() -> None:
    node = DhtNode(SETTINGS, now=0.0, rng=random.Random(9))
    good = Item.signed(bytes(range(32)), b"1:a", 1)
    node.receive(_query(b"q" * 20, "get", target=good.target), ("10.1.1.1", 1), 0.0)
    (reply,) = _replies(node)
    assert isinstance(reply, Response) and reply.token
    node.receive(
        _query(
            b"q" * 20,
            "put",
            token=reply.token,
            value=good.value,
            key=good.key,
            signature=bytes(64),
            seq=1,
        ),
        ("10.1.1.1", 1),
        0.0,
    )
    (error,) = _replies(node)
    assert isinstance(error, ErrorReply) and error.code == krpc.ERROR_BAD_SIGNATURE
    assert node.stats(0.0).items_stored == 0
    # a bad item cannot even be put from our side
    op = node.put_item(Item(good.value, good.key, bytes(64), 1), 0.0)
    (failed,) = node.events()
    assert isinstance(failed, LookupFinished) and failed.op == op and failed.error


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_uses_saved_nodes_before_routers() -> None:
    net = _mesh(12)
    router = _addr(200)
    net.add(router)
    newcomer_addr = _addr(100)
    newcomer = net.add(newcomer_addr)
    saved = [_addr(i) for i in range(1, 13)]
    op = newcomer.bootstrap(saved, [router], net.now)
    first = [dst for _, dst in newcomer.outgoing()]
    assert first and all(dst in saved for dst in first)  # saved first, routers not yet
    # re-deliver by hand: the queued datagrams were taken; ask again through the net
    net.events[newcomer_addr].clear()
    net.nodes.pop(newcomer_addr)
    net2 = net
    newcomer = net2.add(newcomer_addr)
    op = newcomer.bootstrap(saved, [router], net2.now)
    net2.advance(5.0)
    dsts = [dst for src, dst, _ in net2.sent if src == newcomer_addr]
    assert router not in dsts  # 12 saved nodes answered: no router needed
    (done,) = [e for e in net2.of(newcomer_addr, LookupFinished) if e.op == op]
    assert done.kind == "bootstrap" and len(done.closest) == 8
    (boot,) = net2.of(newcomer_addr, Bootstrapped)
    assert boot.ok and boot.nodes >= 8
    assert newcomer.stats(net2.now).bootstrapped


def test_bootstrap_falls_back_to_routers_and_keeps_them_out_of_the_table() -> None:
    net = _mesh(12)
    router = _addr(5)  # one of the mesh acts as router
    newcomer = net.add(_addr(100))
    dead_saved = [("10.99.0.1", 1), ("10.99.0.2", 1)]
    op = newcomer.bootstrap(dead_saved, [router], net.now)
    net.pump()
    assert not [d for s, d, _ in net.sent if s == _addr(100) and d == router]
    net.advance(6.0)
    sent_to = [d for s, d, _ in net.sent if s == _addr(100)]
    assert router in sent_to
    assert sent_to.index(router) > sent_to.index(dead_saved[0])
    (done,) = [e for e in net.of(_addr(100), LookupFinished) if e.op == op]
    assert done.kind == "bootstrap" and done.closest
    # A router that answers takes part in the lookup (it may be among the
    # closest: announces go to it too) but never enters the routing table.
    assert router not in {n.addr for n in newcomer.good_nodes()}
    (boot,) = net.of(_addr(100), Bootstrapped)
    assert boot.ok
    # a second bootstrap does not report Bootstrapped again
    newcomer.bootstrap([], [router], net.now)
    net.advance(3.0)
    assert len(net.of(_addr(100), Bootstrapped)) == 1


def test_bootstrap_with_nobody_answering_reports_failure() -> None:
    net = Net()
    node = net.add(_addr(1))
    node.bootstrap([], [("10.99.0.1", 1)], net.now)
    net.advance(5.0)
    (boot,) = net.of(_addr(1), Bootstrapped)
    assert not boot.ok and boot.nodes == 0
    assert not node.stats(net.now).bootstrapped


# --------------------------------------------------------------------------- hostile input


def test_hostile_datagrams_are_counted_never_raised() -> None:
    node = DhtNode(SETTINGS, now=0.0, rng=random.Random(10))
    src = ("10.6.6.6", 1)
    ping = _query(b"q" * 20, "ping")
    hostile = [
        b"",
        b"d",
        ping[:-1],  # truncated
        ping + b"x",  # trailing bytes
        b"d" + b"1:a" * 3000 + b"e",  # oversized
        b"i42e",
        b"d1:t2:aa1:y1:q1:q4:ping1:a3:abce",  # "a" is not a dict
        b"d1:t2:aa1:y1:q1:q4:ping1:ad2:id3:abcee",  # short id
        b"d1:ti1e1:y1:q1:q4:ping1:ad2:id20:" + b"q" * 20 + b"ee",  # int tid
        b"l1:ae",
        b"\x00" * 100,
    ]
    for data in hostile:
        node.receive(data, src, 0.0)
    stats = node.stats(0.0)
    assert sum(stats.dropped.values()) == len(hostile)
    assert "internal-error" not in stats.dropped
    assert stats.dropped["oversized"] == 1 and stats.dropped["malformed"] >= 5
    assert stats.queries_in == 0 and stats.nodes_total == 0


def test_odd_length_nodes_and_tid_mismatch() -> None:
    node = DhtNode(SETTINGS, now=0.0, rng=random.Random(11))
    peer = ("10.2.2.2", 2)
    node.receive(_query(b"p" * 20, "ping"), peer, 0.0)
    node.outgoing()
    op = node.find_node(bytes(20), 0.0)
    ((data, _),) = node.outgoing()
    tid = krpc.decode(data).tid
    # a response with a nodes string of odd length
    bad = (
        b"d1:rd2:id20:"
        + b"p" * 20
        + b"5:nodes25:"
        + b"x" * 25
        + b"e1:t"
        + str(len(tid)).encode()
        + b":"
        + tid
        + b"1:y1:re"
    )
    node.receive(bad, peer, 0.1)
    # a well-formed response from another address, and one with an unknown tid
    good = krpc.encode(Response(tid, b"p" * 20))
    node.receive(good, ("10.3.3.3", 3), 0.2)
    node.receive(krpc.encode(Response(b"zzzz", b"p" * 20)), peer, 0.2)
    stats = node.stats(0.2)
    assert stats.dropped["bad-nodes"] == 1 and stats.dropped["unknown-tid"] == 2
    assert stats.responses_in == 0
    # the right answer from the right address still counts
    node.receive(good, peer, 0.3)
    assert node.stats(0.3).responses_in == 1
    (done,) = node.events()
    assert isinstance(done, LookupFinished) and done.op == op
    # and a replay of it is an unknown tid now
    node.receive(good, peer, 0.4)
    assert node.stats(0.4).dropped["unknown-tid"] == 3


def test_a_node_that_answers_with_itself_does_not_stall_lookups() -> None:
    net = _mesh(20)
    liar_addr = _addr(7)
    liar = net.nodes[liar_addr]
    real_receive = liar.receive

    def selfish(data: bytes, addr: Addr, now: float) -> None:
        msg = krpc.decode(data)
        if isinstance(msg, Query) and msg.method in ("find_node", "get_peers"):
            me = NodeInfo(liar.node_id, liar_addr)
            net.nodes[addr].receive(
                krpc.encode(Response(msg.tid, liar.node_id, nodes=(me,) * 8, token=b"x")),
                liar_addr,
                now,
            )
            return
        real_receive(data, addr, now)

    liar.receive = selfish  # type: ignore[method-assign]
    for i in (1, 12, 19):
        node = net.nodes[_addr(i)]
        op = node.get_peers(liar.node_id, net.now)  # the liar is the closest node
        net.pump()
        (done,) = [e for e in net.of(_addr(i), LookupFinished) if e.op == op]
        assert done.queries < 20
        assert len(done.closest) == 8


def test_peer_store_flood_stays_within_caps_and_memory() -> None:
    settings = replace(SETTINGS, max_hashes=300, query_rate_per_ip=1e9, query_rate_total=1e9)
    node = DhtNode(settings, now=0.0, rng=random.Random(12))
    src = ("10.4.4.4", 4444)
    node.receive(_query(b"q" * 20, "get_peers", info_hash=INFO_HASH), src, 0.0)
    (reply,) = _replies(node)
    assert isinstance(reply, Response) and reply.token
    token = reply.token

    def flood(start: int, stop: int) -> None:
        for i in range(start, stop):
            node.receive(
                _query(
                    b"q" * 20,
                    "announce_peer",
                    info_hash=i.to_bytes(20, "big"),
                    token=token,
                    port=1 + i % 60000,
                ),
                src,
                0.0,
            )
            node.outgoing()
            node.events()

    flood(0, 7000)
    tracemalloc.start()
    try:
        flood(7000, 8000)
        before, _ = tracemalloc.get_traced_memory()
        flood(8000, 10_000)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stats = node.stats(0.0)
    assert stats.hashes_stored == 300 and stats.peers_stored == 300
    assert after - before < 50_000  # 2,000 more announces, no growth
    assert sum(stats.dropped.values()) == 0


def test_query_flood_from_one_ip_is_rate_limited() -> None:
    node = DhtNode(SETTINGS, now=0.0, rng=random.Random(13))
    flooder = ("10.66.66.66", 1)
    answered = 0
    for i in range(1000):
        node.receive(_query(b"f" * 20, "ping", tid=i.to_bytes(2, "big")), flooder, i * 0.001)
        answered += len(node.outgoing())
    burst = 2 * SETTINGS.query_rate_per_ip
    assert answered <= burst + SETTINGS.query_rate_per_ip * 1.0 + 1
    stats = node.stats(1.0)
    assert stats.rate_limited_in == 1000 - answered
    assert stats.dropped["rate-limited"] == 1000 - answered
    assert stats.queries_in == 1000
    # someone else is still answered
    node.receive(_query(b"g" * 20, "ping"), ("10.1.2.3", 1), 1.0)
    assert len(node.outgoing()) == 1


def test_send_rate_limit_queues_and_never_drops_silently() -> None:
    settings = replace(SETTINGS, send_rate=10.0)
    node = DhtNode(settings, now=0.0, rng=random.Random(14))
    ops = [node.ping((f"10.5.0.{i}", 1), 0.0) for i in range(1, 41)]
    first = node.outgoing()
    assert len(first) == 8  # the burst
    wake = node.next_wakeup()
    assert wake is not None and 0.0 < wake <= 0.2
    node.poll(0.5)
    assert len(node.outgoing()) == 5  # 10 a second
    node.poll(2.0)
    assert len(node.outgoing()) == 8  # never more than the burst at once
    for second in range(3, 40):
        node.poll(float(second))
        node.outgoing()
    finished = {e.op for e in node.events() if isinstance(e, QueryFinished)}
    assert finished == set(ops)  # every ping timed out: none vanished
    assert node.stats(40.0).queries_out == 40


def test_operations_and_transactions_are_bounded() -> None:
    net = _mesh(10)
    node = net.nodes[_addr(1)]
    ops = [node.find_node(random.Random(i).randbytes(20), net.now) for i in range(1000)]
    events = node.events()
    refused = [e for e in events if isinstance(e, LookupFinished) and e.error]
    assert refused and len(refused) < 1000
    assert node.stats(net.now).lookups_active <= 512
    net.advance(30.0)
    done = {e.op for e in net.events[_addr(1)] if isinstance(e, LookupFinished)}
    assert done | {e.op for e in refused} == set(ops)


def test_fuzz_receive_never_raises() -> None:
    """Thousands of mutated messages (bytes changed, cut, spliced) and pure junk.

    A seeded loop rather than hypothesis: the decoder has its own property
    tests (tests/test_dht_krpc.py); this one is about the node swallowing
    whatever the decoder lets through or refuses, and stays cheap at CI's
    example counts.
    """
    rng = random.Random(16)
    node = _FUZZ_NODE
    src = ("10.0.0.9", 9)
    for i in range(4000):
        data = bytearray(rng.choice(_TEMPLATES))
        action = i % 4
        if action == 0:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif action == 1:
            data = data[: rng.randrange(len(data))]
        elif action == 2:
            other = rng.choice(_TEMPLATES)
            cut = rng.randrange(len(data))
            data = data[:cut] + other[rng.randrange(len(other)) :]
        else:
            data = bytearray(rng.randbytes(rng.randrange(200)))
        node.receive(bytes(data), src, i * 0.001)
        node.outgoing()
        node.events()
    stats = node.stats(4.0)
    assert "internal-error" not in stats.dropped
    assert sum(stats.dropped.values()) > 1000  # most of it was refused, and counted


_FUZZ_NODE = DhtNode(
    replace(SETTINGS, query_rate_per_ip=1e9, query_rate_total=1e9),
    now=0.0,
    rng=random.Random(15),
)
_TEMPLATES = [
    _query(b"q" * 20, "ping"),
    _query(b"q" * 20, "find_node", target=bytes(20), want=frozenset({"n4", "n6"})),
    _query(b"q" * 20, "get_peers", info_hash=INFO_HASH),
    _query(b"q" * 20, "announce_peer", info_hash=INFO_HASH, token=b"12345678", port=1),
    _query(b"q" * 20, "get", target=bytes(20), seq=3),
    _query(b"q" * 20, "put", token=b"x", value=b"1:a"),
    krpc.encode(
        Response(
            b"tt",
            b"r" * 20,
            nodes=(NodeInfo(b"n" * 20, ("10.1.1.1", 1)),),
            token=b"t",
            values=(("10.1.1.2", 2),),
            ip=("10.0.0.1", 1),
        )
    ),
    krpc.encode(ErrorReply(b"tt", 201, "generic")),
]


def test_undrained_announce_events_and_replies_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "MAX_PENDING_EVENTS", 5)
    monkeypatch.setattr(node_module, "MAX_PENDING_REPLIES", 20)
    settings = replace(SETTINGS, query_rate_per_ip=1e9, query_rate_total=1e9)
    node = DhtNode(settings, now=0.0, rng=random.Random(17))
    src = ("10.4.4.4", 4444)
    node.receive(_query(b"q" * 20, "get_peers", info_hash=INFO_HASH), src, 0.0)
    (reply,) = _replies(node)
    assert isinstance(reply, Response)
    for i in range(30):  # nobody drains events or datagrams
        node.receive(
            _query(b"q" * 20, "announce_peer", info_hash=INFO_HASH, token=reply.token, port=i + 1),
            src,
            0.0,
        )
    assert len(node.events()) == 5
    assert len(node.outgoing()) == 20
    dropped = node.stats(0.0).dropped
    assert dropped["events-overflow"] == 25 and dropped["replies-overflow"] == 10
    assert len(node.local_peers(INFO_HASH, 0.0)) == 30  # the announces themselves were kept
