"""The DHT node's small parts, each on its own: tokens, the peer and item stores, rate limits,
and the external-IP vote (core/dht/tokens.py, peer_store.py, item_store.py, limits.py,
external_ip.py)."""

from __future__ import annotations

import hashlib
import random
import tracemalloc

import pytest

from core.dht.external_ip import MIN_VOTES, ExternalIpVoter, canonical_ip
from core.dht.item_store import (
    ERROR_BAD_SIGNATURE,
    ERROR_CAS_MISMATCH,
    ERROR_SALT_TOO_BIG,
    ERROR_SEQ_TOO_LOW,
    ERROR_TOO_BIG,
    ItemStore,
    ItemStoreError,
)
from core.dht.items import Item
from core.dht.limits import QueryLimiter, TokenBucket
from core.dht.peer_store import EVICTION_WINDOW, PeerStore
from core.dht.tokens import TOKEN_LENGTH, TokenManager, packed_ip
from core.errors import DhtError

SEED = bytes(range(32))

# --------------------------------------------------------------------------- tokens


def test_token_is_sha1_of_secret_and_packed_ip() -> None:
    rng = random.Random(1)
    tokens = TokenManager(now=0.0, rotation=300.0, rng=rng)
    secret = random.Random(1).randbytes(16)
    token = tokens.issue("1.2.3.4")
    assert token == hashlib.sha1(secret + bytes([1, 2, 3, 4])).digest()[:TOKEN_LENGTH]
    assert tokens.issued == 1
    assert packed_ip("::ffff:1.2.3.4") == bytes([1, 2, 3, 4])
    assert packed_ip("not an ip") == b""


def test_token_is_tied_to_the_ip() -> None:
    tokens = TokenManager(now=0.0, rng=random.Random(2))
    token = tokens.issue("1.2.3.4")
    assert tokens.check(token, "1.2.3.4")
    assert not tokens.check(token, "1.2.3.5")
    assert not tokens.check(token[:-1], "1.2.3.4")
    assert not tokens.check(None, "1.2.3.4")
    assert not tokens.check(token, "garbage")
    v6 = tokens.issue("2001:db8::1")
    assert tokens.check(v6, "2001:db8::1") and not tokens.check(v6, "2001:db8::2")


def test_token_survives_one_rotation_not_two() -> None:
    tokens = TokenManager(now=0.0, rotation=300.0, rng=random.Random(3))
    token = tokens.issue("1.2.3.4")
    assert not tokens.rotate_if_due(299.0)
    assert tokens.rotate_if_due(300.0)
    assert tokens.check(token, "1.2.3.4")  # the previous secret still counts
    assert tokens.next_rotation == 600.0
    assert tokens.rotate_if_due(600.0)
    assert not tokens.check(token, "1.2.3.4")


def test_a_long_pause_invalidates_every_token() -> None:
    tokens = TokenManager(now=0.0, rotation=300.0, rng=random.Random(4))
    token = tokens.issue("1.2.3.4")
    assert tokens.rotate_if_due(5000.0)
    assert not tokens.check(token, "1.2.3.4")


# --------------------------------------------------------------------------- peer store


def _peer(i: int) -> tuple[str, int]:
    return (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1000 + i % 60000)


def test_peer_store_stores_refreshes_and_expires() -> None:
    store = PeerStore(max_peers_per_hash=10, max_hashes=10, ttl=100.0)
    h = b"h" * 20
    store.announce(h, ("1.1.1.1", 1), 0.0)
    store.announce(h, ("2.2.2.2", 2), 50.0, seed=True)
    store.announce(h, ("1.1.1.1", 1), 60.0)  # refresh, not a second entry
    assert store.peer_count == 2 and len(store) == 1 and h in store
    assert store.counts(h) == (1, 1)
    assert sorted(store.peers(h, 60.0, limit=10)) == [("1.1.1.1", 1), ("2.2.2.2", 2)]
    assert store.peers(h, 60.0, limit=10, exclude_seeds=True) == [("1.1.1.1", 1)]
    assert store.expire(155.0) == 1  # 2.2.2.2 announced at 50
    assert store.peers(h, 155.0, limit=10) == [("1.1.1.1", 1)]
    assert store.expire(161.0) == 1
    assert len(store) == 0 and store.peer_count == 0 and h not in store


def test_peer_store_filters_by_family_and_samples_values() -> None:
    store = PeerStore(max_peers_per_hash=500)
    h = b"h" * 20
    for i in range(300):
        store.announce(h, _peer(i), 0.0)
    store.announce(h, ("2001:db8::1", 6881), 0.0)
    assert store.peers(h, 1.0, limit=500, v6=True) == [("2001:db8::1", 6881)]
    got = store.peers(h, 1.0, limit=100, v6=False, rng=random.Random(5))
    assert len(got) == 100 and len(set(got)) == 100
    assert all(":" not in host for host, _ in got)
    assert store.peers(b"x" * 20, 1.0, limit=10) == []


def test_peer_store_caps_peers_per_hash_dropping_the_stalest() -> None:
    store = PeerStore(max_peers_per_hash=5)
    h = b"h" * 20
    for i in range(5):
        store.announce(h, _peer(i), float(i))
    store.announce(h, _peer(0), 10.0)  # peer 0 re-announces: now the freshest
    store.announce(h, _peer(99), 11.0)  # evicts peer 1, the stalest
    kept = set(store.peers(h, 11.0, limit=10))
    assert len(kept) == 5 and _peer(1) not in kept and _peer(0) in kept and _peer(99) in kept
    assert store.peer_count == 5


def test_peer_store_caps_hashes_evicting_small_stale_swarms() -> None:
    store = PeerStore(max_hashes=EVICTION_WINDOW * 2, max_peers_per_hash=50)
    busy = b"B" * 20
    for i in range(20):
        store.announce(busy, _peer(i), 0.0)  # the oldest hash, but a busy one
    for i in range(EVICTION_WINDOW * 2 - 1):
        store.announce(i.to_bytes(20, "big"), _peer(i), 1.0)
    assert len(store) == EVICTION_WINDOW * 2
    for i in range(1000, 1100):  # a flood of one-peer hashes
        store.announce(i.to_bytes(20, "big"), _peer(i), 2.0)
    assert len(store) == EVICTION_WINDOW * 2
    assert busy in store  # the flood evicted its own kind
    assert store.peer_count == 20 + EVICTION_WINDOW * 2 - 1


def test_peer_store_samples_info_hashes() -> None:
    store = PeerStore()
    hashes = [i.to_bytes(20, "big") for i in range(50)]
    for h in hashes:
        store.announce(h, ("1.1.1.1", 1), 0.0)
    sample = store.sample(20, random.Random(6))
    assert len(sample) == 20 and len(set(sample)) == 20 and set(sample) <= set(hashes)
    assert sorted(store.sample(100)) == sorted(hashes)
    assert store.sample(0) == []


def test_peer_store_flood_stays_bounded_in_memory() -> None:
    store = PeerStore(max_peers_per_hash=20, max_hashes=500)
    tracemalloc.start()
    try:
        for i in range(5000):
            store.announce(i.to_bytes(20, "big"), _peer(i), float(i))
        first, _ = tracemalloc.get_traced_memory()
        for i in range(5000, 20000):
            store.announce(i.to_bytes(20, "big"), _peer(i), float(i))
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(store) == 500
    assert second - first < 64 * 1024  # 3x more announces, no growth


# --------------------------------------------------------------------------- item store


def test_item_store_keeps_immutable_items() -> None:
    store = ItemStore()
    item = Item.immutable(b"12:Hello World!")
    store.put(item, 0.0)
    assert store.get(item.target, 1.0) == item
    assert store.get(b"x" * 20, 1.0) is None
    assert len(store) == 1


def test_item_store_mutable_rules() -> None:
    store = ItemStore()
    v1 = Item.signed(SEED, b"1:a", 1)
    store.put(v1, 0.0)
    v2 = Item.signed(SEED, b"1:b", 2)
    store.put(v2, 1.0)
    assert store.get(v2.target, 1.0) == v2
    with pytest.raises(ItemStoreError) as low:
        store.put(v1, 2.0)
    assert low.value.code == ERROR_SEQ_TOO_LOW
    with pytest.raises(ItemStoreError) as same_seq:
        store.put(Item.signed(SEED, b"1:c", 2), 2.0)
    assert same_seq.value.code == ERROR_SEQ_TOO_LOW
    store.put(v2, 3.0)  # the same seq and value: a refresh
    v3 = Item.signed(SEED, b"1:c", 3)
    with pytest.raises(ItemStoreError) as cas:
        store.put(v3, 3.0, cas=1)
    assert cas.value.code == ERROR_CAS_MISMATCH
    store.put(v3, 3.0, cas=2)
    assert store.get(v3.target, 3.0) == v3
    salted = Item.signed(SEED, b"1:a", 1, salt=b"salt")
    store.put(salted, 3.0)  # another target
    assert len(store) == 2


def test_item_store_refuses_bad_items_with_their_codes() -> None:
    store = ItemStore()
    good = Item.signed(SEED, b"1:a", 1)
    forged = Item(good.value, good.key, bytes(64), 1)
    with pytest.raises(ItemStoreError) as bad_sig:
        store.put(forged, 0.0)
    assert bad_sig.value.code == ERROR_BAD_SIGNATURE
    with pytest.raises(ItemStoreError) as big:
        store.put(Item(b"1001:" + b"x" * 1001), 0.0)
    assert big.value.code == ERROR_TOO_BIG
    with pytest.raises(ItemStoreError) as salt:
        store.put(Item(good.value, good.key, good.signature, 1, b"s" * 65), 0.0)
    assert salt.value.code == ERROR_SALT_TOO_BIG
    assert isinstance(bad_sig.value, DhtError)
    assert len(store) == 0


def test_item_store_caps_and_expires() -> None:
    store = ItemStore(max_items=3, ttl=100.0)
    items = [Item.immutable(b"i%de" % i) for i in range(5)]
    for i, item in enumerate(items):
        store.put(item, float(i))
    assert len(store) == 3
    assert store.get(items[0].target, 5.0) is None
    assert store.get(items[4].target, 5.0) == items[4]
    assert store.get(items[2].target, 103.0) is None  # past its ttl
    assert store.expire(103.5) == 2
    assert len(store) == 1


# --------------------------------------------------------------------------- limits


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=10.0, burst=5.0, now=0.0)
    assert all(bucket.take(0.0) for _ in range(5))
    assert not bucket.take(0.0)
    assert bucket.wait_time(0.0) == pytest.approx(0.1)
    assert bucket.take(0.1)
    assert bucket.available(100.0) == 5.0
    assert TokenBucket(0.0, 1.0, 0.0).wait_time(0.0, 2.0) == float("inf")


def test_query_limiter_per_ip_and_total() -> None:
    limiter = QueryLimiter(per_ip=5.0, total=1000.0, now=0.0)
    allowed = sum(limiter.allow("1.1.1.1", 0.0) for _ in range(100))
    assert allowed == 10  # burst = 2 x rate
    assert limiter.allow("2.2.2.2", 0.0)  # others unaffected
    assert sum(limiter.allow("1.1.1.1", 1.0) for _ in range(100)) == 5
    total = QueryLimiter(per_ip=100.0, total=10.0, now=0.0)
    assert sum(total.allow(f"10.0.0.{i}", 0.0) for i in range(100)) == 20


def test_query_limiter_tracks_a_bounded_number_of_ips() -> None:
    limiter = QueryLimiter(per_ip=1.0, total=1e9, now=0.0, max_ips=100)
    for i in range(10_000):
        limiter.allow(f"10.{i >> 8 & 255}.{i & 255}.1", 0.0)
    assert limiter.tracked() == 100


# --------------------------------------------------------------------------- external IP votes


def test_external_ip_needs_min_votes_from_distinct_voters() -> None:
    voter = ExternalIpVoter()
    for _ in range(50):
        assert voter.vote("203.0.113.5", "198.51.100.1", 0.0) is None  # one voter, many votes
    assert voter.votes() == 1
    decided = None
    for i in range(2, MIN_VOTES + 1):
        decided = voter.vote("203.0.113.5", f"198.51.100.{i}", float(i)) or decided
    assert decided == "203.0.113.5" and voter.decided == "203.0.113.5"


def test_external_ip_needs_a_clear_margin() -> None:
    voter = ExternalIpVoter()
    for i in range(6):
        voter.vote("203.0.113.5", f"198.51.100.{i}", 0.0)
    for i in range(6, 10):
        voter.vote("203.0.113.9", f"198.51.100.{i}", 0.0)
    assert voter.decided is None  # 6 to 4 is no clear lead
    for i in range(10, 14):
        voter.vote("203.0.113.5", f"198.51.100.{i}", 0.0)
    assert voter.decided == "203.0.113.5"  # 10 to 4


def test_external_ip_change_wins_once_old_votes_expire() -> None:
    voter = ExternalIpVoter(vote_ttl=100.0)
    for i in range(10):
        voter.vote("203.0.113.5", f"198.51.100.{i}", 0.0)
    assert voter.decided == "203.0.113.5"
    changed = None
    for i in range(10, 20):
        changed = voter.vote("203.0.113.77", f"198.51.100.{i}", 200.0) or changed
    assert changed == "203.0.113.77"


def test_external_ip_ignores_garbage_and_bounds_voters() -> None:
    voter = ExternalIpVoter(max_voters=20)
    assert voter.vote("nonsense", "198.51.100.1", 0.0) is None
    assert voter.vote("203.0.113.5", "nonsense", 0.0) is None
    assert voter.vote("0.0.0.0", "198.51.100.1", 0.0) is None
    for i in range(1000):
        voter.vote("203.0.113.5", f"10.0.{i >> 8}.{i & 255}", 0.0)
    assert voter.votes() == 20
    assert canonical_ip("::ffff:1.2.3.4") == "1.2.3.4"
