"""The Kademlia routing table (core/dht/routing.py): buckets, states, replacements, identities."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.dht.routing import PING_INTERVAL_DIVISOR, RoutingTable
from core.dht.types import ID_LENGTH, NodeInfo, NodeState, distance
from core.errors import DhtError

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "5000"))
BITS = ID_LENGTH * 8
K = 8
STALE = 900.0
PING_INTERVAL = STALE / PING_INTERVAL_DIVISOR

OWN = bytes.fromhex("5a" * ID_LENGTH)


def shared_bits(a: bytes, b: bytes) -> int:
    return BITS - distance(a, b).bit_length()


def id_sharing(own: bytes, prefix: int, rng: random.Random) -> bytes:
    """A random id sharing exactly ``prefix`` leading bits with ``own``."""
    own_int = int.from_bytes(own, "big")
    free = BITS - prefix - 1
    value = (((own_int >> free) ^ 1) << free) | rng.getrandbits(free)
    return value.to_bytes(ID_LENGTH, "big")


class Addrs:
    """Distinct addresses, one per call."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> tuple[str, int]:
        self.n += 1
        return (f"10.{(self.n >> 16) & 255}.{(self.n >> 8) & 255}.{self.n & 255}", 6881)


def node(node_id: bytes, addrs: Addrs) -> NodeInfo:
    return NodeInfo(node_id, addrs())


def check_invariants(table: RoutingTable, k: int = K, replacements: int = 8) -> None:
    """What must hold after any sequence of calls (reads private state: tests may)."""
    own = table.own_id
    buckets = table._buckets
    assert 1 <= len(buckets) <= BITS
    members: list[bytes] = []
    addrs: list[tuple[str, int]] = []
    for index, bucket in enumerate(buckets):
        assert len(bucket.nodes) <= k
        assert len(bucket.replacements) <= replacements
        if len(bucket.nodes) < k:
            assert not bucket.replacements, "free room left while replacements wait"
        for entry in bucket.nodes + bucket.replacements:
            shared = shared_bits(own, entry.info.id)
            if index < len(buckets) - 1:
                assert shared == index
            else:
                assert shared >= index
            assert entry.info.id != own
            addrs.append(entry.info.addr)
        members.extend(e.info.id for e in bucket.nodes)
        ids = [e.info.id for e in bucket.nodes + bucket.replacements]
        assert len(set(ids)) == len(ids)
    all_ids = [e.info.id for b in buckets for e in b.nodes + b.replacements]
    assert len(set(all_ids)) == len(all_ids), "an id appears twice"
    assert len(set(addrs)) == len(addrs), "an address appears twice"
    assert len(table) == len(members) == len(table.nodes())
    assert {n.id for n in table.nodes()} == set(members)
    assert len(table) <= BITS * k


# ---------------------------------------------------------------------- construction


def test_bad_ids_and_settings_are_typed_errors() -> None:
    with pytest.raises(DhtError):
        RoutingTable(b"short", now=0.0)
    with pytest.raises(DhtError):
        RoutingTable(OWN, now=0.0, k=0)
    with pytest.raises(DhtError):
        RoutingTable(OWN, now=0.0, max_failures=0)
    with pytest.raises(DhtError):
        RoutingTable(OWN, now=0.0, replacements=-1)
    table = RoutingTable(OWN, now=0.0)
    with pytest.raises(DhtError):
        table.heard_from(NodeInfo(b"x" * 19, ("1.2.3.4", 1)), 0.0, response=True)
    with pytest.raises(DhtError):
        table.closest(b"x" * 21, now=0.0)
    with pytest.raises(DhtError):
        table.set_own_id(b"", 0.0)


def test_own_id_is_never_inserted() -> None:
    table = RoutingTable(OWN, now=0.0)
    assert table.heard_from(NodeInfo(OWN, ("1.2.3.4", 1)), 0.0, response=True) == []
    assert table.heard_from(NodeInfo(OWN, ("1.2.3.4", 1)), 0.0, response=False) == []
    assert len(table) == 0
    assert table.get(OWN) is None
    assert table.own_id == OWN


# ---------------------------------------------------------------------- splitting


def test_only_the_own_bucket_splits_and_far_buckets_stay_at_k() -> None:
    rng = random.Random(1)
    addrs = Addrs()
    table = RoutingTable(OWN, now=0.0, rng=rng)
    # Far half of the id space: one bucket's worth, however many arrive.
    for _ in range(5 * K):
        table.heard_from(node(id_sharing(OWN, 0, rng), addrs), 0.0, response=True)
    assert len(table) == K
    # Closer and closer to our own id: each depth gets its own bucket.
    depth = 24
    for prefix in range(1, depth + 1):
        for _ in range(3 * K):
            table.heard_from(node(id_sharing(OWN, prefix, rng), addrs), 1.0, response=True)
    stats = table.bucket_stats(1.0)
    assert len(stats) >= depth
    assert [s.depth for s in stats] == list(range(len(stats)))
    for s in stats[:depth]:
        assert s.good == K, s
        assert s.replacements == 8
    assert len(table) == sum(s.good for s in stats)
    assert all(shared_bits(OWN, n.id) >= 0 for n in table.nodes())
    check_invariants(table)


def test_far_bucket_never_splits_and_full_table_ignores_far_flood() -> None:
    rng = random.Random(2)
    addrs = Addrs()
    table = RoutingTable(OWN, now=0.0, rng=rng)
    table.heard_from(node(id_sharing(OWN, 10, rng), addrs), 0.0, response=True)
    for _ in range(K):
        table.heard_from(node(id_sharing(OWN, 0, rng), addrs), 0.0, response=True)
    # One split: the own bucket (depth >= 1) left the far half.
    assert len(table.bucket_stats(0.0)) == 2
    for _ in range(100):
        table.heard_from(node(id_sharing(OWN, 0, rng), addrs), 0.0, response=True)
    assert len(table.bucket_stats(0.0)) == 2
    assert table.bucket_stats(0.0)[0].good == K
    check_invariants(table)


def test_unconfirmed_nodes_take_free_room_only() -> None:
    rng = random.Random(3)
    addrs = Addrs()
    table = RoutingTable(OWN, now=0.0, rng=rng)
    for _ in range(K):
        table.heard_from(node(id_sharing(OWN, 0, rng), addrs), 0.0, response=False)
    assert len(table) == K  # free room
    assert table.counts(0.0) == (0, K)  # never answered us: questionable
    querier = node(id_sharing(OWN, 3, rng), addrs)
    table.heard_from(querier, 0.0, response=False)
    assert len(table.bucket_stats(0.0)) == 1, "a mere query split the bucket"
    assert table.get(querier.id) is None
    assert table.bucket_stats(0.0)[0].replacements == 1
    # The same node answering us is trusted: now it splits its way in.
    table.heard_from(querier, 1.0, response=True)
    assert table.get(querier.id) is not None
    assert len(table.bucket_stats(1.0)) == 2
    assert table.state(querier.id, 1.0) is NodeState.GOOD
    check_invariants(table)


# ---------------------------------------------------------------------- states


def test_good_questionable_bad_transitions() -> None:
    addrs = Addrs()
    table = RoutingTable(OWN, now=0.0, max_failures=2)
    rng = random.Random(4)
    n = node(id_sharing(OWN, 0, rng), addrs)
    table.heard_from(n, 10.0, response=True)
    assert table.state(n.id, 10.0) is NodeState.GOOD
    assert table.state(n.id, 10.0 + STALE - 1) is NodeState.GOOD
    assert table.state(n.id, 10.0 + STALE) is NodeState.QUESTIONABLE
    # BEP 5: it answered once, so a recent query from it makes it good again.
    table.heard_from(n, 10.0 + STALE + 5, response=False)
    assert table.state(n.id, 10.0 + STALE + 6) is NodeState.GOOD
    table.failed(n.id, 2000.0)
    assert table.state(n.id, 2000.0) is NodeState.QUESTIONABLE
    table.heard_from(n, 2001.0, response=False)  # a query does not clear failures
    assert table.state(n.id, 2001.0) is NodeState.QUESTIONABLE
    table.failed(n.id, 2002.0)
    assert table.state(n.id, 2002.0) is NodeState.BAD
    assert table.counts(2002.0) == (0, 0)
    assert table.closest(n.id, now=2002.0) == []
    assert table.get(n.id) is not None  # nobody to replace it: kept, bad
    table.heard_from(n, 2003.0, response=True)
    assert table.state(n.id, 2003.0) is NodeState.GOOD
    entry = table.get(n.id)
    assert entry is not None and entry.failures == 0 and entry.last_response == 2003.0
    # A node that only ever queried us is questionable however recent.
    q = node(id_sharing(OWN, 1, rng), addrs)
    table.heard_from(q, 2003.0, response=False)
    assert table.state(q.id, 2003.0) is NodeState.QUESTIONABLE
    assert table.state(b"\x00" * ID_LENGTH, 0.0) is None


# ---------------------------------------------------------------------- replacements


def full_far_bucket(rng: random.Random, addrs: Addrs, **kwargs: float) -> RoutingTable:
    """A table whose far bucket (depth 0) is full of good nodes answered at t=0."""
    table = RoutingTable(OWN, now=0.0, rng=rng, **kwargs)  # type: ignore[arg-type]
    table.heard_from(node(id_sharing(OWN, 12, rng), addrs), 0.0, response=True)
    for _ in range(K):
        table.heard_from(node(id_sharing(OWN, 0, rng), addrs), 0.0, response=True)
    assert table.bucket_stats(0.0)[0].good == K
    return table


def test_replacement_cache_is_bounded_and_promotes_the_freshest_on_failure() -> None:
    rng = random.Random(5)
    addrs = Addrs()
    table = RoutingTable(OWN, now=0.0, rng=rng, replacements=3)
    table.heard_from(node(id_sharing(OWN, 12, rng), addrs), 0.0, response=True)
    members = [node(id_sharing(OWN, 0, rng), addrs) for _ in range(K)]
    for m in members:
        table.heard_from(m, 0.0, response=True)
    spares = [node(id_sharing(OWN, 0, rng), addrs) for _ in range(10)]
    for i, s in enumerate(spares):
        assert table.heard_from(s, 1.0 + i, response=True) == []  # all members good
    assert table.bucket_stats(20.0)[0].replacements == 3
    assert len(table) == K + 1
    victim = members[3]
    table.failed(victim.id, 30.0)
    assert table.get(victim.id) is not None  # one failure: still a member
    table.failed(victim.id, 31.0)
    assert table.get(victim.id) is None
    assert table.get(spares[-1].id) is not None  # the newest replacement
    assert table.bucket_stats(31.0)[0].replacements == 2
    # The next failure promotes the next newest.
    table.failed(members[0].id, 40.0)
    table.failed(members[0].id, 41.0)
    assert table.get(spares[-2].id) is not None
    check_invariants(table, replacements=3)


def test_answered_replacements_are_preferred() -> None:
    rng = random.Random(6)
    addrs = Addrs()
    table = full_far_bucket(rng, addrs)
    answered = node(id_sharing(OWN, 0, rng), addrs)
    table.heard_from(answered, 1.0, response=True)
    querier = node(id_sharing(OWN, 0, rng), addrs)
    table.heard_from(querier, 2.0, response=False)  # newer, but never answered
    victim = table.closest(id_sharing(OWN, 0, rng), 1, now=2.0)[0]
    table.failed(victim.id, 3.0)
    table.failed(victim.id, 3.0)
    assert table.get(answered.id) is not None
    assert table.get(querier.id) is None
    check_invariants(table)


def test_unanswered_newcomers_do_not_evict_answered_replacements() -> None:
    rng = random.Random(7)
    addrs = Addrs()
    table = RoutingTable(OWN, now=0.0, rng=rng, replacements=2)
    table.heard_from(node(id_sharing(OWN, 12, rng), addrs), 0.0, response=True)
    for _ in range(K):
        table.heard_from(node(id_sharing(OWN, 0, rng), addrs), 0.0, response=True)
    kept = [node(id_sharing(OWN, 0, rng), addrs) for _ in range(2)]
    for s in kept:
        table.heard_from(s, 1.0, response=True)
    for _ in range(20):
        table.heard_from(node(id_sharing(OWN, 0, rng), addrs), 2.0, response=False)
    spare_ids = {e.info.id for e in table._buckets[0].replacements}
    assert spare_ids == {s.id for s in kept}
    check_invariants(table, replacements=2)


def test_confirmed_newcomer_replaces_a_bad_member_and_unconfirmed_waits() -> None:
    rng = random.Random(8)
    addrs = Addrs()
    table = full_far_bucket(rng, addrs, replacements=0)
    victim = table.nodes()[1] if shared_bits(OWN, table.nodes()[1].id) == 0 else None
    assert victim is not None
    table.failed(victim.id, 1.0)
    table.failed(victim.id, 1.0)
    assert table.state(victim.id, 1.0) is NodeState.BAD  # no replacement: stays, bad
    querier = node(id_sharing(OWN, 0, rng), addrs)
    table.heard_from(querier, 2.0, response=False)
    assert table.get(querier.id) is None
    assert table.state(victim.id, 2.0) is NodeState.BAD
    answerer = node(id_sharing(OWN, 0, rng), addrs)
    table.heard_from(answerer, 3.0, response=True)
    assert table.get(answerer.id) is not None
    assert table.get(victim.id) is None
    check_invariants(table, replacements=0)


def test_remove_promotes_a_replacement() -> None:
    rng = random.Random(9)
    addrs = Addrs()
    table = full_far_bucket(rng, addrs)
    spare = node(id_sharing(OWN, 0, rng), addrs)
    table.heard_from(spare, 1.0, response=True)
    assert table.get(spare.id) is None
    gone = next(n for n in table.nodes() if shared_bits(OWN, n.id) == 0)
    table.remove(gone.id)
    assert table.get(gone.id) is None
    assert table.get(spare.id) is not None
    table.remove(b"\x01" * ID_LENGTH)  # unknown: nothing happens
    check_invariants(table)


# ---------------------------------------------------------------------- pings


def test_full_bucket_offers_its_questionable_members_for_pinging() -> None:
    rng = random.Random(10)
    addrs = Addrs()
    table = full_far_bucket(rng, addrs)
    fresh = node(id_sharing(OWN, 0, rng), addrs)
    assert table.heard_from(fresh, 10.0, response=True) == []  # all good: nothing to ping
    later = STALE + 100.0
    # Stagger last_seen so the order is checkable: oldest silence first.
    far = [n for n in table.nodes() if shared_bits(OWN, n.id) == 0]
    for i, n in enumerate(far[:3]):
        table.heard_from(n, 50.0 - i, response=True)
    newcomer = node(id_sharing(OWN, 0, rng), addrs)
    pings = table.heard_from(newcomer, later, response=True)
    assert {p.id for p in pings} == {n.id for n in far}
    seen = [e.last_seen for e in (table.get(p.id) for p in pings) if e is not None]
    assert seen == sorted(seen)
    # Marked pinged: the next newcomer does not get them again at once...
    again = node(id_sharing(OWN, 0, rng), addrs)
    assert table.heard_from(again, later + 1, response=True) == []
    # ...but does once the ping interval has passed.
    third = node(id_sharing(OWN, 0, rng), addrs)
    assert len(table.heard_from(third, later + PING_INTERVAL, response=True)) == K
    # Those that answer stay; one that fails twice gives way to the freshest spare.
    for p in pings[1:]:
        table.heard_from(p, later + PING_INTERVAL + 1, response=True)
    table.failed(pings[0].id, later + PING_INTERVAL + 2)
    table.failed(pings[0].id, later + PING_INTERVAL + 3)
    assert table.get(pings[0].id) is None
    assert table.get(third.id) is not None
    check_invariants(table)


def test_stale_nodes_lists_questionable_members_and_marks_them() -> None:
    rng = random.Random(11)
    addrs = Addrs()
    table = RoutingTable(OWN, now=0.0, rng=rng)
    nodes = [node(id_sharing(OWN, i % 4, rng), addrs) for i in range(6)]
    for i, n in enumerate(nodes):
        table.heard_from(n, float(i), response=True)
    assert table.stale_nodes(100.0) == []
    t = STALE + 10.0
    first = table.stale_nodes(t, limit=4)
    assert [n.id for n in first] == [n.id for n in nodes[:4]]  # longest silent first
    rest = table.stale_nodes(t, limit=4)
    assert [n.id for n in rest] == [n.id for n in nodes[4:]]
    assert table.stale_nodes(t + 1) == []
    # Bad ones are not offered; the others come back after the interval.
    table.failed(nodes[0].id, t)
    table.failed(nodes[0].id, t)
    again = table.stale_nodes(t + PING_INTERVAL, limit=100)
    assert {n.id for n in again} == {n.id for n in nodes[1:]}
    assert table.stale_nodes(t, limit=0) == []


# ---------------------------------------------------------------------- refresh


def test_refresh_targets_fall_inside_idle_buckets() -> None:
    rng = random.Random(12)
    addrs = Addrs()
    table = RoutingTable(OWN, now=0.0, rng=random.Random(99))
    for prefix in range(0, 12):
        for _ in range(K + 2):
            table.heard_from(node(id_sharing(OWN, prefix, rng), addrs), 0.0, response=True)
    depth = len(table.bucket_stats(0.0))
    assert depth >= 12
    assert table.refresh_targets(STALE - 1) == []
    for round_ in range(20):
        now = (round_ + 1) * STALE
        targets = table.refresh_targets(now)
        assert len(targets) == depth
        for index, target in enumerate(targets):
            shared = shared_bits(OWN, target)
            if index < depth - 1:
                assert shared == index
            else:
                assert shared >= index
        assert table.refresh_targets(now) == []  # marked refreshed
    # A bucket whose member answers is not idle.
    now = 21 * STALE + 1
    member = next(n for n in table.nodes() if shared_bits(OWN, n.id) == 3)
    table.heard_from(member, now - 1, response=True)
    assert len(table.refresh_targets(now)) == depth - 1


# ---------------------------------------------------------------------- new own id


def test_set_own_id_keeps_nodes() -> None:
    rng = random.Random(13)
    addrs = Addrs()
    table = RoutingTable(OWN, now=0.0, rng=rng)
    few = [node(rng.randbytes(ID_LENGTH), addrs) for _ in range(6)]
    for n in few:
        table.heard_from(n, 1.0, response=True)
    new_own = rng.randbytes(ID_LENGTH)
    table.set_own_id(new_own, 2.0)
    assert table.own_id == new_own
    assert {n.id for n in table.nodes()} == {n.id for n in few}
    assert all(table.state(n.id, 2.0) is NodeState.GOOD for n in few)
    check_invariants(table)
    # A bigger table: nodes are kept up to what the new layout can hold.
    for _ in range(400):
        table.heard_from(node(rng.randbytes(ID_LENGTH), addrs), 3.0, response=True)
    before = {n.id for n in table.nodes()}
    kept_spares = {e.info.id for b in table._buckets for e in b.replacements}
    newer = table.nodes()[5].id  # our new id is a member's: it leaves the table
    table.set_own_id(newer, 4.0)
    after = {n.id for n in table.nodes()}
    assert newer not in after
    assert after <= (before | kept_spares) - {newer}
    assert len(after) >= min(len(before) - 1, K)
    check_invariants(table)


# ---------------------------------------------------------------------- identity


def test_known_id_from_another_address_is_ignored_unless_bad() -> None:
    rng = random.Random(14)
    table = RoutingTable(OWN, now=0.0, rng=rng)
    nid = id_sharing(OWN, 0, rng)
    table.heard_from(NodeInfo(nid, ("1.1.1.1", 1)), 0.0, response=True)
    table.heard_from(NodeInfo(nid, ("6.6.6.6", 6)), 1.0, response=True)
    entry = table.get(nid)
    assert entry is not None and entry.info.addr == ("1.1.1.1", 1)
    assert len(table) == 1
    table.failed(nid, 2.0)
    table.heard_from(NodeInfo(nid, ("6.6.6.6", 6)), 3.0, response=True)
    entry = table.get(nid)
    assert entry is not None and entry.info.addr == ("1.1.1.1", 1)  # questionable is not bad
    table.failed(nid, 4.0)
    table.heard_from(NodeInfo(nid, ("6.6.6.6", 6)), 5.0, response=False)
    entry = table.get(nid)
    assert entry is not None and entry.info.addr == ("6.6.6.6", 6)
    assert entry.failures == 0 and entry.last_response is None
    assert len(table) == 1
    check_invariants(table)


def test_known_address_with_a_new_id_waits_for_the_old_one_to_fail() -> None:
    rng = random.Random(15)
    table = RoutingTable(OWN, now=0.0, rng=rng)
    old = NodeInfo(id_sharing(OWN, 0, rng), ("1.1.1.1", 1))
    new = NodeInfo(id_sharing(OWN, 1, rng), ("1.1.1.1", 1))
    table.heard_from(old, 0.0, response=True)
    assert table.heard_from(new, 1.0, response=True) == []
    assert table.get(new.id) is None and table.get(old.id) is not None
    table.failed(old.id, 2.0)
    table.heard_from(new, 3.0, response=True)
    assert table.get(old.id) is None
    assert table.get(new.id) is not None
    assert table.nodes() == [new]
    check_invariants(table)


def test_replacement_identities_prefer_answers() -> None:
    rng = random.Random(16)
    addrs = Addrs()
    table = full_far_bucket(rng, addrs)
    spare = NodeInfo(id_sharing(OWN, 0, rng), ("2.2.2.2", 2))
    table.heard_from(spare, 1.0, response=True)
    # A query claiming the answered spare's address under another id: ignored.
    table.heard_from(NodeInfo(id_sharing(OWN, 0, rng), ("2.2.2.2", 2)), 2.0, response=False)
    # A query claiming its id from another address: ignored.
    table.heard_from(NodeInfo(spare.id, ("3.3.3.3", 3)), 2.0, response=False)
    caches = table._buckets[0].replacements
    assert [e.info for e in caches] == [spare]
    # An answer from the address under a new id: the node changed its id.
    moved = NodeInfo(id_sharing(OWN, 0, rng), ("2.2.2.2", 2))
    table.heard_from(moved, 3.0, response=True)
    assert [e.info for e in table._buckets[0].replacements] == [moved]
    check_invariants(table)


def test_a_replacement_that_answers_again_moves_to_the_front() -> None:
    rng = random.Random(17)
    addrs = Addrs()
    table = full_far_bucket(rng, addrs)
    a, b = node(id_sharing(OWN, 0, rng), addrs), node(id_sharing(OWN, 0, rng), addrs)
    table.heard_from(a, 1.0, response=False)
    table.heard_from(b, 2.0, response=True)
    table.heard_from(a, 3.0, response=True)
    assert [e.info for e in table._buckets[0].replacements] == [a, b]
    table.failed(a.id, 4.0)  # a replacement that fails is forgotten
    assert [e.info for e in table._buckets[0].replacements] == [b]
    check_invariants(table)


# ---------------------------------------------------------------------- properties


@settings(max_examples=max(50, EXAMPLES // 5), deadline=None)
@given(
    own=st.binary(min_size=ID_LENGTH, max_size=ID_LENGTH),
    ids=st.lists(st.binary(min_size=ID_LENGTH, max_size=ID_LENGTH), max_size=40),
    fails=st.lists(st.integers(0, 3), max_size=40),
    answered=st.lists(st.booleans(), max_size=40),
    target=st.binary(min_size=ID_LENGTH, max_size=ID_LENGTH),
    count=st.integers(0, 20),
    good_only=st.booleans(),
)
def test_closest_equals_brute_force(
    own: bytes,
    ids: list[bytes],
    fails: list[int],
    answered: list[bool],
    target: bytes,
    count: int,
    good_only: bool,
) -> None:
    table = RoutingTable(own, now=0.0, k=4, rng=random.Random(0))
    for i, nid in enumerate(ids):
        resp = answered[i] if i < len(answered) else True
        table.heard_from(NodeInfo(nid, ("10.0.0.1", 1000 + i)), 1.0, response=resp)
    for i, nid in enumerate(ids):
        for _ in range(fails[i] if i < len(fails) else 0):
            table.failed(nid, 2.0)
    now = 3.0
    wanted = {NodeState.GOOD} if good_only else {NodeState.GOOD, NodeState.QUESTIONABLE}
    pool = [n for n in table.nodes() if table.state(n.id, now) in wanted]
    expected = sorted(pool, key=lambda n: distance(n.id, target))[:count]
    got = table.closest(target, count, now=now, good_only=good_only)
    assert [distance(n.id, target) for n in got] == [distance(n.id, target) for n in expected]
    assert all(table.state(n.id, now) is not NodeState.BAD for n in got)
    check_invariants(table, k=4)


@settings(max_examples=max(50, EXAMPLES // 5), deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    depths=st.lists(st.integers(0, 24), min_size=1, max_size=90),
    fails=st.lists(st.integers(0, 2), max_size=90),
    answered=st.lists(st.booleans(), max_size=90),
    target_depth=st.integers(0, BITS),
    count=st.integers(1, 40),
    good_only=st.booleans(),
)
def test_closest_in_a_deep_table_equals_a_full_sort(
    seed: int,
    depths: list[int],
    fails: list[int],
    answered: list[bool],
    target_depth: int,
    count: int,
    good_only: bool,
) -> None:
    # closest() reads only the target's bucket and its neighbours: a table
    # split many levels deep (ids near ours), targets at every depth
    # (``BITS``: our own id), members good, questionable (silent or never
    # answered) and bad, and counts beyond one bucket, against a sort of all.
    rng = random.Random(seed)
    own = rng.randbytes(ID_LENGTH)
    table = RoutingTable(own, now=0.0, k=K, rng=rng)
    addrs = Addrs()
    ids = [id_sharing(own, d, rng) for d in depths]
    for i, nid in enumerate(ids):
        resp = answered[i] if i < len(answered) else True
        table.heard_from(node(nid, addrs), rng.uniform(0.0, 2 * STALE), response=resp)
    now = 2 * STALE + 1.0
    for i, nid in enumerate(ids):
        for _ in range(fails[i] if i < len(fails) else 0):
            table.failed(nid, now)
    target = own if target_depth == BITS else id_sharing(own, target_depth, rng)
    wanted = {NodeState.GOOD} if good_only else {NodeState.GOOD, NodeState.QUESTIONABLE}
    pool = [n for n in table.nodes() if table.state(n.id, now) in wanted]
    expected = sorted(pool, key=lambda n: distance(n.id, target))[:count]
    assert table.closest(target, count, now=now, good_only=good_only) == expected
    check_invariants(table)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["query", "answer", "fail", "remove", "reid", "stale", "tick"]),
        st.integers(0, 23),  # id from a small pool: collisions on purpose
        st.integers(0, 11),  # address from a small pool
        st.integers(0, 40),  # shared prefix with our id
    ),
    max_size=60,
)


@settings(max_examples=max(50, EXAMPLES // 5), deadline=None)
@given(ops=OPS, seed=st.integers(0, 2**32 - 1))
def test_invariants_hold_under_any_sequence(
    ops: list[tuple[str, int, int, int]], seed: int
) -> None:
    rng = random.Random(seed)
    own = rng.randbytes(ID_LENGTH)
    pool = [id_sharing(own, rng.randrange(0, 6), rng) for _ in range(24)]
    table = RoutingTable(own, now=0.0, k=3, replacements=2, rng=rng)
    now = 0.0
    for op, i, a, prefix in ops:
        addr = (f"10.0.0.{a}", 6881)
        nid = pool[i] if prefix % 5 else id_sharing(own, min(prefix, BITS - 1), rng)
        if op == "query":
            table.heard_from(NodeInfo(nid, addr), now, response=False)
        elif op == "answer":
            table.heard_from(NodeInfo(nid, addr), now, response=True)
        elif op == "fail":
            table.failed(nid, now)
        elif op == "remove":
            table.remove(nid)
        elif op == "reid":
            own = pool[i] if prefix % 2 else rng.randbytes(ID_LENGTH)
            table.set_own_id(own, now)
        elif op == "stale":
            table.stale_nodes(now, limit=prefix % 5)
            table.refresh_targets(now)
        else:
            now += prefix * 60.0
        check_invariants(table, k=3, replacements=2)
        good, questionable = table.counts(now)
        assert good + questionable <= len(table)
        assert len(table.good_nodes(now)) == good
        stats = table.bucket_stats(now)
        assert sum(s.good for s in stats) == good
        assert sum(s.questionable for s in stats) == questionable


def test_table_size_is_bounded_under_a_flood() -> None:
    rng = random.Random(18)
    table = RoutingTable(OWN, now=0.0, rng=rng)
    own_int = int.from_bytes(OWN, "big")
    for i in range(100_000):
        if i % 2:
            nid = rng.randbytes(ID_LENGTH)
        else:  # ids close to ours, to drive the splits as deep as they go
            prefix = rng.randrange(0, BITS)
            mask = (1 << (BITS - prefix)) - 1
            nid = ((own_int & ~mask) | (rng.getrandbits(BITS) & mask)).to_bytes(ID_LENGTH, "big")
        addr = (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 1 + i % 60000)
        table.heard_from(NodeInfo(nid, addr), float(i), response=bool(i % 3))
        if i % 7 == 0:
            table.failed(nid, float(i))
    assert len(table) <= BITS * K
    assert len(table.bucket_stats(100_000.0)) <= BITS
    check_invariants(table)
    assert len(table._by_addr) == len(table._members) + len(table._spares)
