"""Tests for core.engine.choker with a scripted clock."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from core.engine.choker import SNUB_TIMEOUT, Choker, PeerView, is_snubbed


def peer(
    pid: str,
    down: float = 0.0,
    up: float = 0.0,
    *,
    interested: bool = True,
    snubbed: bool = False,
    at: float = -1000.0,
    seed: bool = False,
) -> PeerView:
    return PeerView(pid, interested, down, up, snubbed, at, seed)


def test_leeching_unchokes_the_best_uploaders_to_us_plus_one_optimistic() -> None:
    choker = Choker(slots=4, now=0.0, rng=random.Random(1))
    peers = [peer(f"p{i}", down=100.0 * i, up=1000.0 - 100 * i) for i in range(8)]
    d = choker.update(0.0, peers)
    regular = d.unchoked - {d.optimistic}
    assert regular == {"p7", "p6", "p5", "p4"}
    assert d.optimistic in {"p0", "p1", "p2", "p3"}
    assert len(d.unchoked) == 5
    assert d.unchoke == d.unchoked and not d.choke


def test_seeding_ranks_by_our_upload_rate() -> None:
    choker = Choker(slots=2, now=0.0, rng=random.Random(1))
    peers = [peer(f"p{i}", down=100.0 * i, up=1000.0 - 100 * i) for i in range(5)]
    d = choker.update(0.0, peers, seeding=True)
    assert d.unchoked - {d.optimistic} == {"p0", "p1"}


def test_rechoke_happens_every_ten_seconds() -> None:
    choker = Choker(slots=1, now=0.0, rng=random.Random(2))
    a, b = peer("a", down=10), peer("b", down=5)
    c = peer("c", interested=False)
    d = choker.update(0.0, [a, b, c])
    assert d.unchoked == {"a", "b"} and d.optimistic == "b"
    assert choker.next_deadline() == 10.0
    # b overtakes a at t=5: nothing changes before the deadline.
    a, b = peer("a", down=1), peer("b", down=50)
    d = choker.update(5.0, [a, b, c])
    assert not d.unchoke and not d.choke
    d = choker.update(10.0, [a, b, c])
    # b now holds the regular slot; a becomes the optimistic unchoke.
    assert d.unchoked == {"a", "b"}
    assert d.optimistic == "a"
    assert choker.next_deadline() == 20.0


def test_transitions_only_list_changes() -> None:
    choker = Choker(slots=1, now=0.0, rng=random.Random(3))
    peers = [peer("a", down=10), peer("b", down=5), peer("c", down=1)]
    first = choker.update(0.0, peers)
    assert first.unchoke == first.unchoked
    peers = [peer("a", down=0), peer("b", down=5), peer("c", down=100)]
    second = choker.update(10.0, peers)
    assert "c" in second.unchoked
    assert second.unchoke == second.unchoked - first.unchoked
    assert second.choke == first.unchoked - second.unchoked
    assert not second.unchoke & second.choke


def test_optimistic_rotates_every_thirty_seconds_and_reaches_everyone() -> None:
    choker = Choker(slots=1, now=0.0, rng=random.Random(4))
    peers = [peer("fast", down=100)] + [peer(f"p{i}") for i in range(5)]
    seen: list[object] = []
    t = 0.0
    while t <= 600:
        d = choker.update(t, peers)
        assert "fast" in d.unchoked
        if not seen or seen[-1] != d.optimistic:
            seen.append(d.optimistic)
        t = choker.next_deadline()
    # One rotation per 30 s, always to a different peer, and everyone got a turn.
    assert len(seen) == 600 // 30 + 1
    assert set(seen) == {f"p{i}" for i in range(5)}


def test_new_peers_are_three_times_as_likely_to_be_optimistic() -> None:
    choker = Choker(slots=0, now=0.0, rng=random.Random(5))
    counts: Counter[object] = Counter()
    t = 0.0
    for _ in range(3000):
        # "new" always connected just now; the others long ago.
        peers = [peer("new", at=t - 1), peer("old1"), peer("old2"), peer("old3")]
        d = choker.update(t, peers)
        counts[d.optimistic] += 1
        t += 30.0
    # Rotation never re-picks the holder. From an old holder "new" wins with
    # 3 / (3 + 1 + 1); from "new" an old one always wins. The stationary share
    # of "new" is then 3/8, against 1/4 if new peers were not favoured.
    share = counts["new"] / 3000
    assert 0.34 < share < 0.41
    assert min(counts["old1"], counts["old2"], counts["old3"]) > 500


def test_snubbed_peers_only_get_the_optimistic_slot() -> None:
    choker = Choker(slots=2, now=0.0, rng=random.Random(6))
    peers = [peer("s", down=1000, snubbed=True), peer("a", down=10), peer("b", down=5)]
    d = choker.update(0.0, peers)
    assert d.unchoked - {d.optimistic} == {"a", "b"}
    assert d.optimistic == "s"  # the only one left
    # While seeding snubbing is irrelevant.
    d = choker.update(10.0, peers, seeding=True)
    assert "s" in d.unchoked


def test_uninterested_and_seed_peers_get_no_slot() -> None:
    choker = Choker(slots=4, now=0.0, rng=random.Random(7))
    peers = [peer("u", down=99, interested=False), peer("seed", down=99, seed=True)]
    d = choker.update(0.0, peers)
    assert d.unchoked == frozenset() and d.optimistic is None


def test_lost_interest_frees_the_slot_for_a_waiting_peer_at_once() -> None:
    choker = Choker(slots=1, now=0.0, rng=random.Random(8))
    peers = [peer("a", down=10), peer("b", down=5), peer("c", down=1)]
    d = choker.update(0.0, peers)
    assert "a" in d.unchoked
    opt = d.optimistic
    waiting = ({"b", "c"} - {opt}).pop()
    peers = [peer("a", down=10, interested=False), peer("b", down=5), peer("c", down=1)]
    d = choker.update(1.0, peers)
    assert d.choke == {"a"}
    assert d.unchoke == {waiting}
    assert d.optimistic == opt


def test_gone_peers_are_dropped_silently_and_optimistic_is_replaced() -> None:
    choker = Choker(slots=1, now=0.0, rng=random.Random(9))
    peers = [peer("a", down=10), peer("b"), peer("c")]
    d = choker.update(0.0, peers)
    opt = d.optimistic
    assert opt in {"b", "c"}
    remaining = [p for p in peers if p.id != opt]
    d = choker.update(2.0, remaining)
    assert not d.choke  # nothing to send to a disconnected peer
    assert d.optimistic == ({"b", "c"} - {opt}).pop()
    assert d.unchoke == {d.optimistic}
    assert choker.next_deadline() == 10.0  # the rechoke; optimistic restarted at t=2 -> 32


def test_new_peer_fills_a_free_slot_before_the_deadline() -> None:
    choker = Choker(slots=2, now=0.0, rng=random.Random(10))
    d = choker.update(0.0, [peer("a")])
    assert d.unchoked == {"a"}
    d = choker.update(3.0, [peer("a"), peer("b", at=3.0)])
    assert d.unchoke == {"b"}
    d = choker.update(4.0, [peer("a"), peer("b", at=3.0), peer("c", at=4.0)])
    assert d.unchoke == {"c"} and d.optimistic == "c"


def test_set_slots_applies_on_next_update() -> None:
    choker = Choker(slots=3, now=0.0, rng=random.Random(11))
    peers = [peer(f"p{i}", down=float(i)) for i in range(6)]
    d = choker.update(0.0, peers)
    assert d.unchoked - {d.optimistic} == {"p5", "p4", "p3"}
    choker.set_slots(1)
    d = choker.update(1.0, peers)
    assert d.unchoked - {d.optimistic} == {"p5"}
    assert {"p4", "p3"} - {d.optimistic} <= d.choke
    choker.set_slots(2)
    d = choker.update(2.0, peers)
    assert "p5" in d.unchoked and len(d.unchoked) == 3
    with pytest.raises(ValueError):
        choker.set_slots(-1)


def test_is_snubbed() -> None:
    assert is_snubbed(100.0, 100.0 - SNUB_TIMEOUT, we_are_interested=True, peer_chokes_us=False)
    assert not is_snubbed(100.0, 99.0, we_are_interested=True, peer_chokes_us=False)
    assert not is_snubbed(1000.0, 0.0, we_are_interested=False, peer_chokes_us=False)
    assert not is_snubbed(1000.0, 0.0, we_are_interested=True, peer_chokes_us=True)
